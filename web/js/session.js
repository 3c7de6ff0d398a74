// The web client's anonymous session: a bearer token from `POST /api/session`, kept in
// this browser, replaced (once, shared by every caller) when the server refuses it.
import { ApiError, createTokenStore, errorMessage, parseJson, send } from './api.js';

export const TOKEN_KEY = 'darkroom.token';

/**
 * `onIdentityChanged()` runs when a token the page had was replaced by a new session
 * (a new, empty user). Returns `{ getToken, renewSession, api }`.
 */
export function createSession({ onIdentityChanged }) {
  const store = createTokenStore(TOKEN_KEY);
  let token = store.get();
  let pending = null;

  async function createNew() {
    const res = await fetch('/api/session', { method: 'POST', headers: { Accept: 'application/json' } });
    const text = await res.text();
    if (!res.ok) throw new Error(errorMessage(res.status, text));
    const body = parseJson(text);
    if (!body || typeof body.token !== 'string' || !body.token) throw new Error('The server returned no session token.');
    store.set(body.token);
    token = body.token;
    return token;
  }

  /**
   * Drop `staleToken` and create a new session (deduplicated: concurrent
   * callers share one request; if the token was already replaced, reuse it).
   */
  function renewSession(staleToken) {
    if (token && token !== staleToken) return Promise.resolve(token);
    if (!pending) {
      const hadIdentity = staleToken != null;
      token = null;
      store.clear();
      pending = createNew()
        .then((fresh) => {
          if (hadIdentity) onIdentityChanged();
          return fresh;
        })
        .finally(() => { pending = null; });
    }
    return pending;
  }

  function getToken() {
    return token ? Promise.resolve(token) : renewSession(null);
  }

  /**
   * JSON API call with the bearer token; `json` is sent as a JSON body. On 401 the
   * token is replaced once and the call retried. Resolves to the parsed body (null
   * for none), rejects with ApiError.
   */
  async function api(path, { method = 'GET', body = undefined, json = undefined, retried = false } = {}) {
    const used = await getToken();
    const res = await send(path, { method, token: used, json, body });
    if (res.status === 401 && !retried) {
      await renewSession(used);
      return api(path, { method, body, json, retried: true });
    }
    if (!res.ok) throw new ApiError(res.status, errorMessage(res.status, res.text));
    return parseJson(res.text);
  }

  return { getToken, renewSession, api };
}
