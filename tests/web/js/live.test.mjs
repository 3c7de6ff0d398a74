// web/js/live.js: the connection indicator, retry timing and the web client's socket
// (Socket.IO's `io` faked: no network here).
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';

import {
  FIRST_RETRY_MS, MAX_RETRY_MS, connIndicator, disconnectedStatus, nextRetryDelay, socketFactory, startLive,
} from '../../../web/js/live.js';

test('retry delays double up to a ceiling', () => {
  const delays = [FIRST_RETRY_MS];
  for (let i = 0; i < 6; i += 1) delays.push(nextRetryDelay(delays.at(-1)));
  assert.deepEqual(delays, [2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(MAX_RETRY_MS, 30000);
});

test('disconnectedStatus: offline device, then repeated failures, else reconnecting', () => {
  assert.deepEqual(disconnectedStatus(false, 0), ['offline', 'Offline', 'Your device is offline.']);
  assert.equal(disconnectedStatus(true, 3)[0], 'offline');
  assert.deepEqual(disconnectedStatus(true, 2), ['reconnecting', 'Reconnecting…', 'Trying to reach the server…']);
});

function fakeIndicator() {
  const label = { textContent: 'Connecting…' };
  const el = { title: '', dataset: { state: 'connecting' }, querySelector: (sel) => (sel === '.conn-label' ? label : null) };
  return { el, label };
}

test('connIndicator sets state, label and detail', () => {
  const { el, label } = fakeIndicator();
  const conn = connIndicator(el);
  conn.set('connected', 'Connected', 'Live updates are on.');
  assert.deepEqual([el.dataset.state, label.textContent, el.title], ['connected', 'Connected', 'Live updates are on.']);
  conn.set('connected', 'Connected');
  assert.equal(el.title, '', 'the detail is always replaced');
});

describe('the web client\'s socket', () => {
  let sockets;
  let conn;
  const realIo = globalThis.io;

  beforeEach(() => {
    sockets = [];
    const { el } = fakeIndicator();
    conn = connIndicator(el);
    conn.el = el;
    globalThis.io = (options) => {
      const handlers = new Map();
      const socket = {
        options, connected: false, active: true, connects: 0,
        on: (name, fn) => handlers.set(name, fn),
        emit: (name, ...args) => handlers.get(name)?.(...args),
        connect() { this.connects += 1; },
        disconnect() { this.connected = false; this.active = false; },
        io: { on: (name, fn) => handlers.set(`io:${name}`, fn) },
      };
      sockets.push(socket);
      return socket;
    };
  });
  afterEach(() => { globalThis.io = realIo; });

  const session = (token = 'tok') => ({
    renewed: [],
    getToken: async () => token,
    async renewSession(stale) { this.renewed.push(stale); return 'fresh'; },
  });

  test('without the Socket.IO script the page says so', () => {
    globalThis.io = undefined;
    assert.equal(socketFactory(), null);
    const live = startLive({ conn, session: session(), onSnapshot() {}, onJobEvent() {} });
    assert.equal(conn.el.dataset.state, 'offline');
    assert.equal(conn.el.title, 'The live-update library failed to load.');
    live.reconnect(0); // nothing to reconnect: no error
  });

  test('every attempt authenticates with the current token', async () => {
    startLive({ conn, session: session('abc'), onSnapshot() {}, onJobEvent() {} });
    const [socket] = sockets;
    assert.deepEqual(socket.options.transports, ['websocket', 'polling']);
    const auth = await new Promise((resolve) => socket.options.auth(resolve));
    assert.deepEqual(auth, { token: 'abc' });
  });

  test('connect shows Connected; snapshots and job events are handed on', () => {
    const seen = [];
    startLive({
      conn, session: session(),
      onSnapshot: (payload) => seen.push(['snapshot', payload]),
      onJobEvent: (name, payload) => seen.push([name, payload]),
    });
    const [socket] = sockets;
    socket.emit('connect');
    assert.equal(conn.el.dataset.state, 'connected');
    socket.emit('jobs:snapshot', { jobs: [] });
    socket.emit('job:completed', { job: { id: 'j' }, seq: 2 });
    socket.emit('job:progress', { job: { id: 'j' }, seq: 1 });
    assert.deepEqual(seen, [
      ['snapshot', { jobs: [] }], ['job:completed', { job: { id: 'j' }, seq: 2 }], ['job:progress', { job: { id: 'j' }, seq: 1 }],
    ]);
  });

  test('a refused token renews the session with the token that was sent', async () => {
    const s = session('old');
    startLive({ conn, session: s, onSnapshot() {}, onJobEvent() {} });
    const [socket] = sockets;
    await new Promise((resolve) => socket.options.auth(resolve));
    socket.emit('connect_error', new Error('Unauthorized: unknown token'));
    assert.equal(conn.el.dataset.state, 'reconnecting');
    assert.equal(conn.el.title, 'Refreshing your session…');
    assert.deepEqual(s.renewed, ['old']);
  });

  test('a server-ended session shows Reconnecting; a deliberate disconnect shows nothing new', () => {
    startLive({ conn, session: session(), onSnapshot() {}, onJobEvent() {} });
    const [socket] = sockets;
    socket.emit('connect');
    socket.emit('disconnect', 'io client disconnect');
    assert.equal(conn.el.dataset.state, 'connected');
    socket.emit('disconnect', 'io server disconnect');
    assert.equal(conn.el.dataset.state, 'reconnecting');
  });
});
