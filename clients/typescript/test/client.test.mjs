// The client against a real stack (test/stack.mjs): every REST route through the typed calls,
// retries that keep their Idempotency-Key, the realtime connection across an api crash in the
// middle of a burst (no event missed, none twice), a failed resume surfaced, presence and a
// token refresh that keeps the subscriptions.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ShowrunnerClient, Realtime, ProblemError, NetworkError } from '../dist/index.js';
import { Stack, token, waitUntil } from './stack.mjs';

let stack;
// Every answer the tests got through the client, checked at the end against the statuses
// api/openapi.json documents for its operation.
const answers = [];
const recording = async (url, init) => {
  const response = await fetch(url, init);
  answers.push({ method: (init?.method ?? 'GET').toLowerCase(), path: new URL(url).pathname, status: response.status });
  return response;
};
const alice = { sub: randomUUID(), name: 'Alice', role: 'admin' };
const bob = { sub: randomUUID(), name: 'Bob', role: 'member' };
const clientOf = (who, extra = {}) =>
  new ShowrunnerClient({ baseUrl: stack.origin, token: token(who), retryBaseMs: 50, fetch: recording, ...extra });
const realtimes = [];
const realtimeOf = (who, extra = {}) => {
  const rt = new Realtime({ baseUrl: stack.origin, token: token(who), initialDelayMs: 50, maxDelayMs: 500, ...extra });
  realtimes.push(rt);
  return rt;
};

before(async () => {
  stack = await new Stack().start();
});

after(async () => {
  for (const rt of realtimes) rt.close();
  await stack?.stop();
});

test('every route, through the typed calls', async () => {
  const api = clientOf(alice);
  assert.equal((await api.health()).status, 'ok');
  assert.ok((await api.ready()).database !== undefined);
  assert.equal((await api.openapi()).openapi, '3.1.0');
  assert.equal((await api.asyncapi()).asyncapi, '3.1.0');
  assert.match(await api.metrics(), /showrunner_/);

  // Episodes.
  const created = await api.episodes.create({ title: 'Pilot', categories: ['tech'] }, { wait: 10 });
  assert.equal(created.status, 201);
  assert.ok(created.applied && created.commandId);
  const id = created.data.id;
  const got = await api.episodes.get(id);
  assert.equal(got.data.title, 'Pilot');
  assert.ok((await api.episodes.list({ category: 'tech' })).data.some((e) => e.id === id));
  const updated = await api.episodes.update(id, { status: 'in_production' }, { wait: 10 });
  assert.equal(updated.data.status, 'in_production');
  assert.ok(Array.isArray((await api.episodes.viewers(id)).data));
  const accepted = await api.episodes.update(id, { description: 'later' });
  assert.equal(accepted.status, 202);
  assert.equal(accepted.applied, false);
  await waitUntil('the command to apply', async () => {
    return (await api.commands.get(accepted.commandId)).status === 'applied';
  });

  // Compositions.
  const comp = await api.compositions.create(id, { name: 'Rough cut' }, { wait: 10 });
  assert.equal(comp.status, 201);
  const cid = comp.data.id;
  assert.equal((await api.compositions.get(id, cid)).data.name, 'Rough cut');
  assert.ok((await api.compositions.list(id)).data.some((c) => c.id === cid));
  const renamed = await api.compositions.update(id, cid, { name: 'Fine cut' }, { wait: 10, ifVersion: 1 });
  assert.equal(renamed.data.name, 'Fine cut');
  await assert.rejects(
    api.compositions.update(id, cid, { name: 'Stale' }, { wait: 10, ifVersion: 1 }),
    (e) => e instanceof ProblemError && e.status === 412,
  );

  // Files.
  const bytes = new TextEncoder().encode('hello, showrunner');
  const file = await api.files.upload(id, bytes, { name: 'notes.txt', contentType: 'text/plain', wait: 10 });
  assert.equal(file.status, 201);
  const fid = file.data.id;
  assert.equal((await api.files.get(id, fid)).data.size, bytes.length);
  assert.ok((await api.files.list(id)).data.some((f) => f.id === fid));
  const part = await api.files.content(id, fid, { range: 'bytes=0-4' });
  assert.equal(part.status, 206);
  assert.equal(new TextDecoder().decode(part.bytes), 'hello');
  assert.equal((await api.files.delete(id, fid, { wait: 10 })).applied, true);
  assert.equal((await api.compositions.delete(id, cid, { wait: 10 })).applied, true);

  // Jobs.
  const job = await api.jobs.create({ type: 'composition.export', payload: { episodeId: id, compositionId: cid } });
  assert.equal(job.status, 202);
  assert.equal((await api.jobs.get(job.data.id)).data.id, job.data.id);
  assert.ok((await api.jobs.list({ type: 'composition.export' })).data.some((j) => j.id === job.data.id));
  await waitUntil('the job to end', async () =>
    ['succeeded', 'failed'].includes((await api.jobs.get(job.data.id)).data.status),
  );
  const { status } = (await api.jobs.get(job.data.id)).data;
  if (status === 'failed') {
    // Sent to run again (its composition is gone, so it fails again at once), then cancelled:
    // a cancel that reaches it queued or running is taken (a running attempt that fails before
    // its worker hears the cancel still ends failed), one that comes after it failed again is
    // refused with 409.
    assert.equal((await api.jobs.retry(job.data.id)).data.id, job.data.id);
    try {
      assert.equal((await api.jobs.cancel(job.data.id)).data.id, job.data.id);
      await waitUntil('the job to end again', async () =>
        ['cancelled', 'failed'].includes((await api.jobs.get(job.data.id)).data.status),
      );
    } catch (e) {
      if (!(e instanceof ProblemError && e.status === 409)) throw e;
      assert.equal((await api.jobs.get(job.data.id)).data.status, 'failed');
    }
  } else {
    await assert.rejects(api.jobs.retry(job.data.id), (e) => e instanceof ProblemError && e.status === 409);
    await assert.rejects(api.jobs.cancel(job.data.id), (e) => e instanceof ProblemError && e.status === 409);
  }

  // Activity and notifications.
  await waitUntil('the episode history', async () =>
    (await api.activity.list({ resourceType: 'episode', resourceId: id })).data.length >= 3,
  );
  await waitUntil('a notification', async () => (await api.notifications.unreadCount()) >= 1);
  const notes = await api.notifications.list({ unread: true });
  await api.notifications.read(notes.data[0].id);
  const read = (await api.notifications.list()).data.find((n) => n.id === notes.data[0].id);
  assert.ok(read.readAt, 'read');
  await api.notifications.readAll();
  // Everything there before read-all is read (a later one, e.g. the job's, may be unread).
  const after = new Map((await api.notifications.list()).data.map((n) => [n.id, n]));
  assert.ok(notes.data.every((n) => after.get(n.id)?.readAt), 'all read');

  assert.equal((await api.episodes.delete(id, { wait: 10 })).applied, true);
  await assert.rejects(api.episodes.get(id), (e) => e instanceof ProblemError && e.status === 404);
});

test('problem+json becomes a typed error with the field errors', async () => {
  const api = clientOf(bob);
  await assert.rejects(api.episodes.create({ title: '' }), (e) => {
    assert.ok(e instanceof ProblemError);
    assert.equal(e.status, 422);
    assert.ok(e.fieldError('title'), JSON.stringify(e.errors));
    return true;
  });
  await assert.rejects(
    api.episodes.delete(randomUUID(), { permanent: true }),
    (e) => e instanceof ProblemError && e.status === 403,
  );
  const nobody = new ShowrunnerClient({ baseUrl: stack.origin, fetch: recording });
  await assert.rejects(nobody.episodes.list(), (e) => e instanceof ProblemError && e.status === 401);
});

test('a write retried on 503 and on a network error keeps its Idempotency-Key', async () => {
  const keys = [];
  let calls = 0;
  const flaky = async (url, init) => {
    calls += 1;
    keys.push(init.headers['idempotency-key']);
    if (calls === 1) return new Response('{}', { status: 503, headers: { 'retry-after': '0' } });
    if (calls === 2) throw new TypeError('fetch failed');
    if (calls === 3) {
      // The api got it, but the answer was lost: the retry must not create a second episode.
      await fetch(url, init);
      throw new TypeError('connection reset');
    }
    return fetch(url, init);
  };
  const api = clientOf(bob, { fetch: flaky });
  const title = `Once ${randomUUID()}`;
  const result = await api.episodes.create({ title }, { wait: 10 });
  assert.equal(calls, 4);
  assert.equal(new Set(keys).size, 1, `one key for every attempt: ${keys}`);
  const plain = clientOf(bob);
  await waitUntil('the episode', async () => (await plain.episodes.list({ q: title })).data.length === 1);
  assert.equal((await plain.episodes.list({ q: title })).data.length, 1);
  assert.ok(result.data.id);

  const down = new ShowrunnerClient({ baseUrl: 'http://127.0.0.1:9', token: 'x', maxRetries: 2, retryBaseMs: 1 });
  await assert.rejects(down.episodes.list(), (e) => e instanceof NetworkError && e.attempts === 3);
});

test('the api killed mid-burst: no event missed, none twice', async () => {
  const writer = clientOf(alice, { maxRetries: 120, maxRetryDelayMs: 500 });
  const rt = realtimeOf(bob, { topics: ['episode.*.created'] });
  const seen = [];
  rt.on('episode_created', (frame) => seen.push(frame.data.episode.title));
  const states = [];
  rt.onState((s) => states.push(s));
  const recoveries = [];
  rt.onRecovery((r) => recoveries.push(r));
  rt.connect();
  await waitUntil('the connection', () => rt.state === 'open');
  // A first event, so the connection has an id to resume from.
  await writer.episodes.create({ title: 'burst warm-up' });
  await waitUntil('the warm-up event', () => seen.length === 1);

  const total = 60;
  const titles = Array.from({ length: total }, (_, i) => `burst ${i}`);
  let restarted;
  const burst = (async () => {
    for (const [i, title] of titles.entries()) {
      if (i === total / 3) {
        await stack.killApi();
        // Writes go on (the client retries them, key kept) while the api is away.
        restarted = new Promise((r) => setTimeout(r, 1500)).then(() => stack.startApi());
      }
      await writer.episodes.create({ title });
    }
  })();
  await burst;
  await restarted;
  await waitUntil('every event of the burst', () => seen.length === total + 1, 60_000).catch((e) => {
    const missing = titles.filter((t) => !seen.includes(t));
    throw new Error(`${e.message}: ${seen.length - 1} of ${total} seen, missing ${missing}; states ${states}; recoveries ${JSON.stringify(recoveries)}`);
  });
  // Anything still in flight would show up now as a duplicate.
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(seen.slice(1).sort(), [...titles].sort());
  assert.equal(new Set(seen).size, seen.length, 'no event twice');
  assert.ok(states.includes('reconnecting'), `states: ${states}`);
  assert.ok(recoveries.length >= 1 && recoveries.every((r) => r.recovered), JSON.stringify(recoveries));
});

test('a resume the server cannot serve is surfaced as recovered: false', async () => {
  const rt = realtimeOf(bob, { topics: ['episode.*.created'] });
  const recoveries = [];
  rt.onRecovery((r) => recoveries.push(r));
  rt.connect();
  await waitUntil('the connection', () => rt.state === 'open');
  // An id the event log never had: as after a long absence, when the log was pruned.
  rt.lastEventId = randomUUID();
  rt.setToken(token(bob));
  await waitUntil('the recovery report', () => recoveries.length === 1);
  assert.equal(recoveries[0].recovered, false);
  assert.equal(recoveries[0].reason, 'resume_unavailable');
  // And it lives on: new events arrive.
  const titles = [];
  rt.on('episode_created', (f) => titles.push(f.data.episode.title));
  await clientOf(alice).episodes.create({ title: 'after the reload' });
  await waitUntil('an event after the failed resume', () => titles.includes('after the reload'));
});

test('presence, and a token refresh that keeps the subscriptions', async () => {
  const api = clientOf(alice);
  const { data: episode } = await api.episodes.create({ title: 'Watched' }, { wait: 10 });
  const a = realtimeOf(alice).connect();
  const b = realtimeOf(bob).connect();
  await waitUntil('both connections', () => a.state === 'open' && b.state === 'open');
  a.watch(episode.id);
  b.watch(episode.id);
  const names = (rt) => rt.viewers(episode.id).map((v) => v.userName).sort().join(',');
  await waitUntil('both viewers, seen by each', () => names(a) === 'Alice,Bob' && names(b) === 'Alice,Bob');

  const changes = [];
  b.on('episode_updated', (f) => changes.push(f.data.episode.title));
  b.setToken(token(bob));
  await waitUntil('the new connection', () => b.state === 'open');
  await api.episodes.update(episode.id, { title: 'Watched, renamed' });
  await waitUntil('the update after the refresh', () => changes.includes('Watched, renamed'));
  assert.deepEqual(b.subscriptions(), [`episode.${episode.id}.#`]);

  b.unwatch(episode.id);
  await waitUntil('Bob gone from the viewers', () => names(a) === 'Alice');
});

test('every status the tests met is documented for its operation', async () => {
  const doc = JSON.parse(await readFile(new URL('../../../api/openapi.json', import.meta.url), 'utf8'));
  const templates = Object.keys(doc.paths).map((template) => ({
    template,
    pattern: new RegExp(`^/api/v1${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
  }));
  const undocumented = new Set();
  for (const { method, path, status } of answers) {
    // Described by itself, not by the OpenAPI document.
    if (path === '/api/v1/asyncapi.json') continue;
    const found = templates.find((t) => t.pattern.test(path));
    assert.ok(found, `no documented path for ${path}`);
    const operation = doc.paths[found.template][method];
    assert.ok(operation, `${method} ${found.template} is not documented`);
    if (!(String(status) in operation.responses)) undocumented.add(`${method} ${found.template} ${status}`);
  }
  assert.ok(answers.length > 50, `only ${answers.length} answers recorded`);
  assert.deepEqual([...undocumented], []);
});
