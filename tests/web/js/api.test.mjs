// web/js/api.js: requests, their errors, where a token is kept (fetch and storage faked).
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';

import { ApiError, createTokenStore, errorMessage, MESSAGES, NETWORK_ERROR, parseJson, send } from '../../../web/js/api.js';

test('parseJson: a value, or null for nothing or junk', () => {
  assert.deepEqual(parseJson('{"a":1}'), { a: 1 });
  assert.equal(parseJson(''), null);
  assert.equal(parseJson('nope'), null);
  assert.equal(parseJson(undefined), null);
});

describe('errorMessage', () => {
  test('the server\'s own message first', () => {
    assert.equal(errorMessage(422, '{"error":{"code":"x","message":"The image is damaged."}}'), 'The image is damaged.');
    assert.equal(errorMessage(400, { error: 'plain' }), 'plain');
  });
  test('else the page\'s message for the status', () => {
    assert.equal(errorMessage(413, ''), MESSAGES[413]);
    assert.equal(errorMessage(0), NETWORK_ERROR);
    assert.equal(errorMessage(429, 'not json'), 'Too many requests. Please wait a moment and try again.');
    assert.equal(errorMessage(401, '{}', { 401: 'Sign in again.' }), 'Sign in again.');
  });
  test('else the status itself', () => {
    assert.equal(errorMessage(418, '{"error":{}}'), 'Request failed (HTTP 418).');
  });
});

test('ApiError carries its status and whether to stay quiet', () => {
  const err = new ApiError(404, 'Not found.');
  assert.ok(err instanceof Error);
  assert.equal(err.status, 404);
  assert.equal(err.message, 'Not found.');
  assert.equal(err.quiet, false);
  assert.equal(new ApiError(0, 'x', true).quiet, true);
});

describe('send', () => {
  const realFetch = globalThis.fetch;
  afterEach(() => { globalThis.fetch = realFetch; });

  test('sends the token and JSON, answers with status and text', async () => {
    const calls = [];
    globalThis.fetch = async (path, init) => {
      calls.push([path, init]);
      return { status: 201, ok: true, text: async () => '{"ok":true}' };
    };
    const res = await send('/api/tasks', { method: 'POST', token: 't0k', json: { a: 1 } });
    assert.deepEqual(res, { status: 201, ok: true, text: '{"ok":true}' });
    const [path, init] = calls[0];
    assert.equal(path, '/api/tasks');
    assert.equal(init.method, 'POST');
    assert.equal(init.body, '{"a":1}');
    assert.deepEqual(init.headers, { Accept: 'application/json', Authorization: 'Bearer t0k', 'Content-Type': 'application/json' });
  });

  test('no token, no Authorization header; a failed status still resolves', async () => {
    let seen = null;
    globalThis.fetch = async (_path, init) => { seen = init; return { status: 503, ok: false, text: async () => '' }; };
    assert.deepEqual(await send('/healthz'), { status: 503, ok: false, text: '' });
    assert.equal(seen.method, 'GET');
    assert.deepEqual(seen.headers, { Accept: 'application/json' });
  });

  test('an unreachable server is ApiError(0)', async () => {
    globalThis.fetch = async () => { throw new TypeError('Failed to fetch'); };
    await assert.rejects(send('/api/images'), (err) => err instanceof ApiError && err.status === 0 && err.message === NETWORK_ERROR);
  });
});

describe('createTokenStore', () => {
  const memoryStorage = () => {
    const data = new Map();
    return { getItem: (k) => data.get(k) ?? null, setItem: (k, v) => data.set(k, v), removeItem: (k) => data.delete(k), data };
  };

  test('keeps the token in storage under its key', () => {
    const storage = memoryStorage();
    const store = createTokenStore('darkroom.token', () => storage);
    assert.equal(store.get(), null);
    store.set('abc');
    assert.equal(storage.data.get('darkroom.token'), 'abc');
    assert.equal(store.get(), 'abc');
    store.clear();
    assert.equal(store.get(), null);
    assert.equal(storage.data.size, 0);
  });

  test('falls back to memory where storage throws', () => {
    const store = createTokenStore('k', () => { throw new Error('SecurityError'); });
    assert.equal(store.get(), null);
    store.set('abc');
    assert.equal(store.get(), 'abc');
    store.clear();
    assert.equal(store.get(), null);
  });
});
