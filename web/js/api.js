// Talking to the REST API: one request, its error as a message for people, and where a
// page keeps its token. Each page adds its own policy on top (the client renews its
// session on a 401, the dashboard signs out).

export const NETWORK_ERROR = 'Network error: could not reach the server.';

/** What a failed request means to the person using the web client, by HTTP status. */
export const MESSAGES = Object.freeze({
  0: NETWORK_ERROR,
  400: 'The server rejected this request.',
  401: 'Your session has expired.',
  403: 'Not allowed.',
  404: 'Not found.',
  413: 'This file is too large.',
  415: 'This file type is not supported.',
  422: 'This file could not be processed.',
  429: 'Too many requests. Please wait a moment and try again.',
  503: 'The service is temporarily unavailable.',
});

/** A request that failed: `status` 0 when the server could not be reached; `quiet` when nobody needs to be told. */
export class ApiError extends Error {
  constructor(status, message, quiet = false) {
    super(message);
    this.status = status;
    this.quiet = quiet;
  }
}

/** JSON text as a value, or null when it is empty or not JSON. */
export function parseJson(text) {
  if (typeof text !== 'string' || !text) return null;
  try { return JSON.parse(text); } catch { return null; }
}

/**
 * Best human message for a failed HTTP response body (`{"error": {"code", "message"}}`,
 * as text or already parsed): the server's own message, else `messages[status]`.
 */
export function errorMessage(status, body, messages = MESSAGES) {
  const parsed = typeof body === 'string' ? parseJson(body) : body;
  const err = parsed && typeof parsed === 'object' ? parsed.error : null;
  if (err && typeof err === 'object' && typeof err.message === 'string' && err.message) return err.message;
  if (typeof err === 'string' && err) return err;
  return messages[status] || `Request failed (HTTP ${status}).`;
}

/**
 * One request to the API, with the bearer `token` (if any) and `json` sent as a JSON body;
 * resolves to `{status, ok, text}` whatever the status, rejects with ApiError(0) when the
 * server could not be reached.
 */
export async function send(path, { method = 'GET', token = null, json = undefined, body = undefined } = {}) {
  const headers = { Accept: 'application/json' };
  if (token != null) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  try {
    const res = await fetch(path, { method, headers, body: json !== undefined ? JSON.stringify(json) : body });
    return { status: res.status, ok: res.ok, text: await res.text() };
  } catch {
    throw new ApiError(0, NETWORK_ERROR);
  }
}

/**
 * Where a page keeps its token: localStorage under `key`, or only in memory where
 * storage is unavailable (private windows, blocked cookies). `storage` is asked for
 * lazily, since merely touching localStorage may throw.
 */
export function createTokenStore(key, storage = () => globalThis.localStorage) {
  let memory = null;
  return {
    get() {
      try { return storage().getItem(key) || memory; } catch { return memory; }
    },
    set(value) {
      memory = value;
      try { storage().setItem(key, value); } catch { /* storage unavailable: keep in memory */ }
    },
    clear() {
      memory = null;
      try { storage().removeItem(key); } catch { /* ignore */ }
    },
  };
}
