// The live console: a page on the TypeScript client (./client/, compiled from
// clients/typescript and embedded in the api binary). Everything it shows stays current from
// the realtime connection; nothing here polls.
import { ShowrunnerClient, Realtime, ProblemError } from './client/index.js';

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

let api;
let rt;
let me;
const episodes = new Map();
let selected;

// --- tokens -----------------------------------------------------------------------------

const b64url = (bytes) =>
  btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const text = (s) => new TextEncoder().encode(s);

/** The user id `showrunner token --user NAME` gives NAME (a UUID as it is, else UUIDv5 of
 * `showrunner-user:NAME` in the OID namespace), so the console and the CLI agree on who is who. */
async function userId(name) {
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(name)) return name.toLowerCase();
  const namespace = '6ba7b8129dad11d180b400c04fd430c8'.match(/../g).map((h) => parseInt(h, 16));
  const input = new Uint8Array([...namespace, ...text(`showrunner-user:${name}`)]);
  const b = new Uint8Array(await crypto.subtle.digest('SHA-1', input)).slice(0, 16);
  b[6] = (b[6] & 0x0f) | 0x50;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function mint(secret, name, role) {
  const header = b64url(text(JSON.stringify({ alg: 'HS256', typ: 'JWT' })));
  const display = name.charAt(0).toUpperCase() + name.slice(1);
  const claims = { sub: await userId(name), name: display, email: `${name}@localhost`, role, exp: Math.floor(Date.now() / 1000) + 8 * 3600 };
  const body = `${header}.${b64url(text(JSON.stringify(claims)))}`;
  const key = await crypto.subtle.importKey('raw', text(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return `${body}.${b64url(await crypto.subtle.sign('HMAC', key, text(body)))}`;
}

function claimsOf(token) {
  const part = token.split('.')[1] ?? '';
  return JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/')));
}

async function signIn(token) {
  me = claimsOf(token);
  api = new ShowrunnerClient({ baseUrl: '', token });
  await api.notifications.unreadCount(); // fails fast on a bad token
  sessionStorage.setItem('showrunner.token', token);
  $('who').textContent = `${me.name} (${me.role})`;
  $('signin').hidden = true;
  $('app').hidden = false;
  rt?.close();
  rt = new Realtime({ baseUrl: '', token, topics: ['episode.*.created', 'episode.*.updated', 'episode.*.deleted', 'job.*.*'] });
  rt.onState((s) => {
    $('state').textContent = s;
    $('state').className = `pill ${s}`;
  });
  rt.onRecovery((r) => {
    // Events were lost while away: read everything again.
    if (!r.recovered) void loadAll();
  });
  rt.on('*', (frame) => onEvent(frame));
  rt.onViewers((episodeId, viewers) => {
    if (episodeId === selected) showViewers(viewers);
  });
  rt.connect();
  await loadAll();
}

// --- loading ----------------------------------------------------------------------------

async function loadAll() {
  const page = await api.episodes.list({ limit: 100 });
  episodes.clear();
  for (const e of page.data) episodes.set(e.id, e);
  renderEpisodes();
  const activity = await api.activity.list({ limit: 30 });
  $('activity').replaceChildren(...activity.data.map((a) => activityItem(`${a.actorName ?? 'system'}: ${a.event}`, a.occurredAt)));
  await loadNotifications();
  const jobs = await api.jobs.list({ limit: 30 });
  $('jobs').replaceChildren(...jobs.data.map((j) => jobItem(j.id, j.type, j.status)));
  if (selected) await select(selected);
}

async function loadNotifications() {
  const [page, count] = await Promise.all([api.notifications.list({ limit: 20 }), api.notifications.unreadCount()]);
  setUnread(count);
  $('notifications').replaceChildren(
    ...page.data.map((n) => el('li', { className: n.readAt ? '' : 'unread', textContent: n.message || n.title })),
  );
}

function setUnread(count) {
  $('unread').textContent = String(count);
  $('unread').className = count > 0 ? 'badge' : 'badge zero';
}

// --- rendering --------------------------------------------------------------------------

function renderEpisodes() {
  const list = [...episodes.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
  $('episodes').replaceChildren(
    ...list.map((e) => {
      const li = el('li', { className: e.id === selected ? 'selected' : '' }, e.title, el('span', { className: 'status', textContent: e.status }));
      li.dataset.id = e.id;
      li.onclick = () => void select(e.id);
      return li;
    }),
  );
}

function activityItem(label, at) {
  return el('li', { textContent: `${new Date(at).toLocaleTimeString()} ${label}` });
}

function jobItem(id, type, status) {
  const li = el('li', { textContent: `${type ?? 'job'} ${id.slice(0, 8)}: ${status}` });
  li.dataset.id = id;
  return li;
}

function showViewers(viewers) {
  $('viewers').textContent = viewers.map((v) => v.userName).join(', ') || 'nobody';
}

function showEpisode(e) {
  $('edit-title').value = e.title;
  $('edit-status').value = e.status;
  $('edit-description').value = e.description;
}

async function select(id) {
  if (selected && selected !== id) rt.unwatch(selected);
  selected = id;
  renderEpisodes();
  $('no-episode').hidden = true;
  $('detail').hidden = false;
  $('detail-error').textContent = '';
  const { data, viewers } = await api.episodes.get(id);
  episodes.set(id, data);
  showEpisode(data);
  rt.watch(id, viewers);
  showViewers(rt.viewers(id));
  const [comps, files] = await Promise.all([api.compositions.list(id), api.files.list(id)]);
  renderCompositions(comps.data);
  renderFiles(files.data);
}

function renderCompositions(list) {
  $('compositions').replaceChildren(
    ...list.map((c) => {
      const name = el('input', { value: c.name, className: 'rename', required: true, maxLength: 200 });
      name.setAttribute('aria-label', `New name of ${c.name}`);
      const rename = el('button', { textContent: 'rename', className: 'rename' });
      // Conditional on the version shown: a rename made elsewhere meanwhile is refused (412),
      // not silently overwritten.
      rename.onclick = () =>
        guard(() => api.compositions.update(c.episodeId, c.id, { name: name.value }, { wait: 5, ifVersion: c.version }));
      const del = el('button', { textContent: 'delete', className: 'danger' });
      del.onclick = () => guard(() => api.compositions.delete(c.episodeId, c.id, { wait: 5 }));
      const li = el('li', {}, el('span', { className: 'label', textContent: `${c.name} (v${c.version})` }), ' ', name, rename, del);
      li.dataset.id = c.id;
      return li;
    }),
  );
}

function renderFiles(list) {
  $('files').replaceChildren(
    ...list.map((f) => {
      const del = el('button', { textContent: 'delete', className: 'danger' });
      del.onclick = () => guard(() => api.files.delete(f.episodeId, f.id, { wait: 5 }));
      const li = el('li', {}, `${f.name} (${f.size} bytes) `, del);
      li.dataset.id = f.id;
      return li;
    }),
  );
}

// --- events -----------------------------------------------------------------------------

function onEvent(frame) {
  const { event, data } = frame;
  $('activity').prepend(activityItem(`${event} ${subjectOf(frame)}`, new Date()));
  switch (event) {
    case 'episode_created':
    case 'episode_updated':
      episodes.set(data.episode.id, data.episode);
      renderEpisodes();
      if (data.episode.id === selected && event === 'episode_updated') showEpisode(data.episode);
      break;
    case 'episode_deleted':
      episodes.delete(data.episodeId);
      renderEpisodes();
      if (data.episodeId === selected) {
        selected = undefined;
        $('detail').hidden = true;
        $('no-episode').hidden = false;
      }
      break;
    case 'composition_created':
    case 'composition_updated':
    case 'composition_deleted':
    case 'file_uploaded':
    case 'file_deleted':
      if (selected) void select(selected);
      break;
    case 'notification_created':
      void loadNotifications();
      break;
    case 'command_rejected':
      $('detail-error').textContent = `A change was refused: ${data.reason}`;
      break;
    default:
      if (event.startsWith('job_') && data.jobId) {
        const status = { job_queued: 'queued', job_started: 'running', job_progress: `running ${data.percent}%`, job_completed: 'succeeded', job_retry: 'retrying', job_failed: 'failed', job_cancelled: 'cancelled', job_requeued: 'queued' }[event];
        const existing = [...$('jobs').children].find((li) => li.dataset.id === data.jobId);
        const item = jobItem(data.jobId, data.type ?? existing?.textContent.split(' ')[0], status ?? event);
        if (existing) existing.replaceWith(item);
        else $('jobs').prepend(item);
      }
  }
}

/** What an event is about, in a few words (frames carry no actor; the activity log does). */
function subjectOf({ data }) {
  return data.episode?.title ?? data.composition?.name ?? data.file?.name ?? data.userName ?? data.title ?? data.name ?? data.jobId?.slice(0, 8) ?? '';
}

// --- actions ----------------------------------------------------------------------------

async function guard(action) {
  $('detail-error').textContent = '';
  try {
    await action();
  } catch (error) {
    const detail = error instanceof ProblemError
      ? `${error.title}: ${error.detail ?? ''} ${error.errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`
      : String(error);
    $('detail-error').textContent = detail;
  }
}

$('paste').onsubmit = (ev) => {
  ev.preventDefault();
  signIn($('token').value.trim()).catch((e) => ($('signin-error').textContent = String(e.message ?? e)));
};
$('mint').onsubmit = (ev) => {
  ev.preventDefault();
  mint($('secret').value, $('user').value.trim(), $('role').value)
    .then(signIn)
    .catch((e) => ($('signin-error').textContent = String(e.message ?? e)));
};
$('create-episode').onsubmit = (ev) => {
  ev.preventDefault();
  const title = $('new-title').value;
  void guard(async () => {
    const { data } = await api.episodes.create({ title }, { wait: 5 });
    $('new-title').value = '';
    await select(data.id);
  });
};
$('edit-episode').onsubmit = (ev) => {
  ev.preventDefault();
  const changes = { title: $('edit-title').value, status: $('edit-status').value, description: $('edit-description').value };
  void guard(() => api.episodes.update(selected, changes, { wait: 5 }));
};
$('delete-episode').onclick = () => void guard(() => api.episodes.delete(selected, { wait: 5 }));
$('export-episode').onclick = () =>
  void guard(() => api.jobs.create({ type: 'episode.export', payload: { episodeId: selected }, episodeId: selected }));
$('create-composition').onsubmit = (ev) => {
  ev.preventDefault();
  void guard(async () => {
    await api.compositions.create(selected, { name: $('new-composition').value }, { wait: 5 });
    $('new-composition').value = '';
  });
};
$('upload-file').onsubmit = (ev) => {
  ev.preventDefault();
  const file = $('file').files[0];
  if (!file) return;
  void guard(() => api.files.upload(selected, file, { name: file.name, contentType: file.type || 'application/octet-stream', wait: 10 }));
};
$('read-all').onclick = () => void guard(async () => {
  await api.notifications.readAll();
  await loadNotifications();
});
$('bell').onclick = () => $('notifications').scrollIntoView();

const saved = sessionStorage.getItem('showrunner.token');
if (saved) signIn(saved).catch(() => sessionStorage.removeItem('showrunner.token'));
