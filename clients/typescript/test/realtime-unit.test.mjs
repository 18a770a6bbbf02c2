// The realtime connection's own rules, against a scripted WebSocket (no server): the resume
// after a reconnect, dedupe by id, jittered backoff within its bounds, the browser's `online`
// and `visibilitychange` waking a waiting reconnect, and a refused resume surfaced.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Realtime } from '../dist/index.js';

/** A WebSocket whose server side the test plays. */
function fakeSockets() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close() {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code: 1006 });
    }
    // The server's side:
    open() {
      this.readyState = 1;
      this.onopen?.();
    }
    frame(value) {
      this.onmessage?.({ data: JSON.stringify(value) });
    }
    drop() {
      this.readyState = 3;
      this.onclose?.({ code: 1006 });
    }
  }
  return { sockets, FakeSocket };
}

const event = (id, title) => ({
  op: 'event',
  id,
  topic: `episode.e1.updated`,
  event: 'episode_updated',
  data: { episode: { id: 'e1', title }, changedFields: ['title'] },
  traceId: null,
});

const realSetTimeout = globalThis.setTimeout;
const until = async (check, ms = 2000) => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => realSetTimeout(r, 5));
  }
};

test('after a drop: one resume with the last id and every topic; duplicates dropped', async () => {
  const { sockets, FakeSocket } = fakeSockets();
  const rt = new Realtime({ baseUrl: 'http://api', token: 't', WebSocket: FakeSocket, topics: ['episode.*.updated'], initialDelayMs: 1, maxDelayMs: 5 });
  const seen = [];
  rt.on('episode_updated', (f) => seen.push(f.data.episode.title));
  rt.connect();
  await until(() => sockets.length === 1);
  assert.equal(sockets[0].url, 'ws://api/api/v1/ws?token=t');
  sockets[0].open();
  assert.deepEqual(sockets[0].sent, [{ op: 'subscribe', topics: ['episode.*.updated'] }]);
  rt.subscribe('episode.e2.#');
  sockets[0].frame(event('id-1', 'one'));
  sockets[0].frame(event('id-2', 'two'));
  sockets[0].drop();
  await until(() => sockets.length === 2);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [
    { op: 'resume', lastEventId: 'id-2', topics: ['episode.*.updated', 'episode.e2.#'] },
  ]);
  const recoveries = [];
  rt.onRecovery((r) => recoveries.push(r));
  // The replay overlaps what was already delivered: each event once.
  sockets[1].frame(event('id-2', 'two'));
  sockets[1].frame(event('id-3', 'three'));
  sockets[1].frame({ op: 'resumed', lastEventId: 'id-2' });
  sockets[1].frame(event('id-3', 'three'));
  assert.deepEqual(seen, ['one', 'two', 'three']);
  assert.deepEqual(recoveries, [{ recovered: true, lastEventId: 'id-2' }]);
  assert.equal(rt.state, 'open');
  rt.close();
});

test('resume_too_far and a refused topic are surfaced as recovered: false', async () => {
  const { sockets, FakeSocket } = fakeSockets();
  const rt = new Realtime({ baseUrl: 'http://api', WebSocket: FakeSocket, initialDelayMs: 1, maxDelayMs: 5 });
  const recoveries = [];
  const errors = [];
  rt.onRecovery((r) => recoveries.push(r));
  rt.onError((e) => errors.push(e.code));
  rt.connect();
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].frame(event('id-1', 'one'));
  sockets[0].drop();
  await until(() => sockets.length === 2);
  sockets[1].open();
  sockets[1].frame({ op: 'error', code: 'resume_too_far', message: 'reload' });
  assert.deepEqual(recoveries, [{ recovered: false, reason: 'resume_too_far', lastEventId: 'id-1' }]);
  assert.equal(rt.state, 'open');
  sockets[1].frame(event('id-2', 'two'));
  sockets[1].drop();
  await until(() => sockets.length === 3);
  sockets[2].open();
  sockets[2].frame({ op: 'error', code: 'forbidden', message: 'another user' });
  assert.deepEqual(recoveries.at(-1), { recovered: false, reason: 'forbidden', lastEventId: 'id-2' });
  assert.deepEqual(errors, ['forbidden']);
  rt.close();
});

test('backoff: full jitter under a doubling cap; online and visibilitychange wake it', async () => {
  const listeners = {};
  const doc = { visibilityState: 'hidden', addEventListener: (n, f) => (listeners[`doc:${n}`] = f), removeEventListener() {} };
  globalThis.document = doc;
  globalThis.addEventListener = (n, f) => (listeners[n] = f);
  globalThis.removeEventListener = () => {};
  try {
    const { sockets, FakeSocket } = fakeSockets();
    const delays = [];
    // Long waits, recorded: only a wake can end them within the test.
    const rt = new Realtime({ baseUrl: 'http://api', WebSocket: FakeSocket, initialDelayMs: 60_000, maxDelayMs: 600_000 });
    globalThis.setTimeout = (f, ms, ...rest) => {
      // The idle timer (45 s) is not a backoff.
      if (ms !== 45_000) delays.push(ms);
      return realSetTimeout(f, ms, ...rest);
    };
    try {
      rt.connect();
      await until(() => sockets.length === 1);
      sockets[0].drop();
      assert.equal(rt.state, 'reconnecting');
      listeners.online();
      await until(() => sockets.length === 2);
      sockets[1].drop();
      doc.visibilityState = 'visible';
      listeners['doc:visibilitychange']();
      await until(() => sockets.length === 3);
      sockets[2].drop();
    } finally {
      globalThis.setTimeout = realSetTimeout;
      rt.close();
    }
    // The waits drawn: within [0, 60 s * 2^n), n the failures so far.
    assert.equal(delays.length, 3, String(delays));
    delays.forEach((ms, n) => assert.ok(ms >= 0 && ms < 60_000 * 2 ** n, `${ms} after ${n} failures`));
  } finally {
    delete globalThis.document;
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

test('a new token reconnects and resumes with the same subscriptions', async () => {
  const { sockets, FakeSocket } = fakeSockets();
  let token = 'old';
  const rt = new Realtime({ baseUrl: 'https://api', token: () => token, WebSocket: FakeSocket });
  rt.connect();
  await until(() => sockets.length === 1);
  sockets[0].open();
  rt.watch('e1', [{ userId: 'u1', userName: 'Ann' }]);
  assert.deepEqual(rt.viewers('e1'), [{ userId: 'u1', userName: 'Ann' }]);
  sockets[0].frame({
    op: 'event', id: 'p1', topic: 'episode.e1.presence', event: 'viewer_joined', traceId: null,
    data: { episodeId: 'e1', userId: 'u2', userName: 'Bo', viewers: [{ userId: 'u1', userName: 'Ann' }, { userId: 'u2', userName: 'Bo' }] },
  });
  assert.deepEqual(rt.viewers('e1').map((v) => v.userName), ['Ann', 'Bo']);
  token = 'new';
  rt.setToken(() => token);
  await until(() => sockets.length === 2);
  assert.equal(sockets[1].url, 'wss://api/api/v1/ws?token=new');
  assert.equal(sockets[0].readyState, 3);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [{ op: 'resume', lastEventId: 'p1', topics: ['episode.e1.#'] }]);
  rt.close();
});
