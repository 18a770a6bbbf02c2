// Typed REST calls for every route of api/openapi.json. Writes carry an `Idempotency-Key` made
// per call and are retried, with that same key, on 503/429 (after `Retry-After`) and on network
// errors, so a retry never applies a write twice. Errors are thrown as `ProblemError`.

import type { components, paths } from './generated/openapi.js';
import { NetworkError, ProblemError } from './errors.js';

type Schemas = components['schemas'];
type Query<P extends keyof paths, M extends 'get' | 'post' | 'patch' | 'delete'> =
  paths[P][M] extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;

export type Episode = Schemas['Episode'];
export type EpisodeCreate = Schemas['EpisodeCreate'];
export type EpisodeChanges = Schemas['EpisodeChanges'];
export type EpisodePage = Schemas['EpisodePage'];
export type EpisodeWithViewers = Schemas['EpisodeWithViewers'];
export type Viewer = Schemas['Viewer'];
export type Composition = Schemas['Composition'];
export type CompositionCreate = Schemas['CompositionCreate'];
export type CompositionChanges = Schemas['CompositionUpdate'];
export type CompositionPage = Schemas['CompositionPage'];
export type FileInfo = Schemas['File'];
export type FilePage = Schemas['FilePage'];
export type CommandState = Schemas['Command'];
export type Job = Schemas['Job'];
export type JobCreate = Schemas['JobCreate'];
export type JobPage = Schemas['JobPage'];
export type Activity = Schemas['Activity'];
export type ActivityPage = Schemas['ActivityPage'];
export type Notification = Schemas['Notification'];
export type NotificationPage = Schemas['NotificationPage'];

export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** The api's origin, e.g. `http://127.0.0.1:8080`; `''` in a page the api served. */
  baseUrl?: string;
  /** A bearer token, or a function giving the current one (called before every request). */
  token?: TokenSource;
  /** `fetch` to use (default: the platform's). */
  fetch?: typeof fetch;
  /** Retries of a request that met 503, 429 or a network error (default 6). */
  maxRetries?: number;
  /** First backoff when no `Retry-After` says otherwise, doubled each time (default 200 ms). */
  retryBaseMs?: number;
  /** Longest wait between two attempts (default 10 s). */
  maxRetryDelayMs?: number;
}

export interface WriteOptions {
  /** `Prefer: wait=N`: hold the answer up to N seconds (at most 30) until the write applied. */
  wait?: number;
  /** Reuse a key to make a retry of your own idempotent too (default: a new UUID per call). */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

/** What a write answered: `applied` when a worker applied it within `wait` (201/200/204). */
export interface WriteResult<T> {
  status: number;
  applied: boolean;
  data: T;
  commandId: string | undefined;
  /** The command's state, `/api/v1/commands/{id}`. */
  location: string | null;
}

interface RequestSpec {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  path: string;
  query?: Record<string, string | number | boolean | null | undefined> | undefined;
  body?: unknown;
  rawBody?: BodyInit;
  headers?: Record<string, string>;
  /** A write that takes an `Idempotency-Key` (sent, and kept across retries). */
  idempotent?: boolean;
  write?: WriteOptions | undefined;
  signal?: AbortSignal | undefined;
  /** Give the Response back unread (file content). */
  raw?: boolean;
}

export function newId(): string {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === 'function') return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });

/** `Retry-After` in milliseconds (seconds or an HTTP date), if present. */
function retryAfterMs(headers: Headers): number | undefined {
  const v = headers.get('retry-after');
  if (v === null) return undefined;
  const secs = Number(v);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

export class ShowrunnerClient {
  readonly baseUrl: string;
  private tokenSource: TokenSource | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly maxRetries: number;
  private readonly retryBaseMs: number;
  private readonly maxRetryDelayMs: number;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? '').replace(/\/$/, '');
    this.tokenSource = options.token;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.maxRetries = options.maxRetries ?? 6;
    this.retryBaseMs = options.retryBaseMs ?? 200;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 10_000;
  }

  /** Replaces the token (or its source); the next request uses it. */
  setToken(token: TokenSource | undefined): void {
    this.tokenSource = token;
  }

  async token(): Promise<string | undefined> {
    const t = this.tokenSource;
    return typeof t === 'function' ? await t() : t;
  }

  /** One request, retried as the module's comment says; the parsed body, or the Response. */
  async request<T>(spec: RequestSpec): Promise<{ status: number; headers: Headers; body: T }> {
    const url = new URL(this.baseUrl + '/api/v1' + spec.path, this.originForRelative());
    for (const [k, v] of Object.entries(spec.query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = { accept: 'application/json', ...spec.headers };
    if (spec.idempotent) headers['idempotency-key'] = spec.write?.idempotencyKey ?? newId();
    if (spec.write?.wait !== undefined) headers['prefer'] = `wait=${spec.write.wait}`;
    let body: BodyInit | undefined = spec.rawBody;
    if (spec.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(spec.body);
    }
    const signal = spec.signal ?? spec.write?.signal;
    let lastError: unknown;
    for (let attempt = 0; ; attempt++) {
      const token = await this.token();
      if (token) headers['authorization'] = `Bearer ${token}`;
      let response: Response;
      try {
        response = await this.fetchImpl(url, { method: spec.method, headers, body, signal: signal ?? null });
      } catch (error) {
        if (signal?.aborted) throw error;
        lastError = error;
        // Only a request that may be sent again: reads, and writes with their key.
        if ((spec.method === 'GET' || spec.idempotent) && attempt < this.maxRetries) {
          await sleep(this.backoff(attempt), signal);
          continue;
        }
        throw new NetworkError(`${spec.method} ${spec.path}: ${String(error)}`, attempt + 1, error);
      }
      const retryable = response.status === 503 || response.status === 429;
      const wait = retryAfterMs(response.headers);
      // A 429 without Retry-After is the WebSocket connection cap: waiting does not help.
      if (retryable && (response.status === 503 || wait !== undefined) && attempt < this.maxRetries) {
        await response.body?.cancel().catch(() => {});
        await sleep(Math.min(wait ?? this.backoff(attempt), this.maxRetryDelayMs), signal);
        continue;
      }
      if (!response.ok && response.status !== 304) {
        const text = await response.text().catch(() => '');
        let problem: Record<string, unknown> = {};
        try {
          problem = JSON.parse(text);
        } catch {
          problem = { title: response.statusText, detail: text || undefined };
        }
        throw new ProblemError(response.status, problem, response.headers);
      }
      if (spec.raw) return { status: response.status, headers: response.headers, body: response as T };
      const type = response.headers.get('content-type') ?? '';
      const parsed = type.includes('json') ? await response.json() : await response.text();
      void lastError;
      return { status: response.status, headers: response.headers, body: (parsed === '' ? undefined : parsed) as T };
    }
  }

  private originForRelative(): string | undefined {
    if (this.baseUrl) return undefined;
    return (globalThis as { location?: { origin: string } }).location?.origin;
  }

  /** Full jitter: a random wait up to the doubled base, capped. */
  private backoff(attempt: number): number {
    return Math.random() * Math.min(this.maxRetryDelayMs, this.retryBaseMs * 2 ** attempt);
  }

  private async write<T>(spec: RequestSpec): Promise<WriteResult<T>> {
    const r = await this.request<{ data: T; commandId?: string } | undefined>({ ...spec, idempotent: true });
    return {
      status: r.status,
      applied: r.status !== 202,
      data: r.body?.data as T,
      commandId: r.body?.commandId ?? undefined,
      location: r.headers.get('location'),
    };
  }

  private async get<T>(path: string, query?: RequestSpec['query']): Promise<T> {
    return (await this.request<T>({ method: 'GET', path, query })).body;
  }

  readonly episodes = {
    list: (query: Query<'/episodes', 'get'> = {}) => this.get<EpisodePage>('/episodes', query),
    /** The episode and its viewers; records the caller as a viewer. */
    get: (id: string) => this.get<EpisodeWithViewers>(`/episodes/${id}`),
    create: (body: EpisodeCreate, options?: WriteOptions) =>
      this.write<Episode>({ method: 'POST', path: '/episodes', body, write: options }),
    update: (id: string, changes: EpisodeChanges, options?: WriteOptions) =>
      this.write<Episode>({ method: 'PATCH', path: `/episodes/${id}`, body: changes, write: options }),
    delete: (id: string, options: WriteOptions & { permanent?: boolean } = {}) =>
      this.write<unknown>({
        method: 'DELETE',
        path: `/episodes/${id}`,
        query: { permanent: options.permanent },
        write: options,
      }),
    viewers: (id: string) => this.get<Schemas['ViewerList']>(`/episodes/${id}/viewers`),
  };

  readonly compositions = {
    list: (episodeId: string, query: Query<'/episodes/{id}/compositions', 'get'> = {}) =>
      this.get<CompositionPage>(`/episodes/${episodeId}/compositions`, query),
    get: (episodeId: string, id: string) =>
      this.get<Schemas['CompositionEnvelope']>(`/episodes/${episodeId}/compositions/${id}`),
    create: (episodeId: string, body: CompositionCreate, options?: WriteOptions) =>
      this.write<Composition>({ method: 'POST', path: `/episodes/${episodeId}/compositions`, body, write: options }),
    /** `ifVersion`: applied only if the composition is still at that version (412 otherwise). */
    update: (
      episodeId: string,
      id: string,
      changes: CompositionChanges,
      options: WriteOptions & { ifVersion?: number } = {},
    ) =>
      this.write<Composition>({
        method: 'PATCH',
        path: `/episodes/${episodeId}/compositions/${id}`,
        body: changes,
        headers: options.ifVersion !== undefined ? { 'if-match': `"${options.ifVersion}"` } : {},
        write: options,
      }),
    delete: (episodeId: string, id: string, options: WriteOptions & { permanent?: boolean } = {}) =>
      this.write<unknown>({
        method: 'DELETE',
        path: `/episodes/${episodeId}/compositions/${id}`,
        query: { permanent: options.permanent },
        write: options,
      }),
  };

  readonly files = {
    list: (episodeId: string, query: Query<'/episodes/{id}/files', 'get'> = {}) =>
      this.get<FilePage>(`/episodes/${episodeId}/files`, query),
    get: (episodeId: string, id: string) =>
      this.get<Schemas['FileEnvelope']>(`/episodes/${episodeId}/files/${id}`),
    /** Uploads `content` as a file named `name` (its media type: `contentType`). */
    upload: (
      episodeId: string,
      content: BodyInit,
      options: WriteOptions & { name: string; contentType: string },
    ) =>
      this.write<FileInfo>({
        method: 'POST',
        path: `/episodes/${episodeId}/files`,
        query: { name: options.name },
        rawBody: content,
        headers: { 'content-type': options.contentType },
        write: options,
      }),
    delete: (episodeId: string, id: string, options: WriteOptions & { permanent?: boolean } = {}) =>
      this.write<unknown>({
        method: 'DELETE',
        path: `/episodes/${episodeId}/files/${id}`,
        query: { permanent: options.permanent },
        write: options,
      }),
    /** The bytes (a `Range` such as `bytes=0-99` answers 206 with that part). */
    content: async (episodeId: string, id: string, options: { range?: string } = {}) => {
      const r = await this.request<Response>({
        method: 'GET',
        path: `/episodes/${episodeId}/files/${id}/content`,
        headers: options.range ? { range: options.range } : {},
        raw: true,
      });
      return { status: r.status, headers: r.headers, bytes: new Uint8Array(await r.body.arrayBuffer()) };
    },
  };

  readonly commands = {
    /** A write's command: `pending`, `applied` or `rejected` (with `error`). */
    get: (id: string) => this.get<CommandState>(`/commands/${id}`),
  };

  readonly jobs = {
    list: (query: Query<'/jobs', 'get'> = {}) => this.get<JobPage>('/jobs', query),
    get: (id: string) => this.get<Schemas['JobEnvelope']>(`/jobs/${id}`),
    create: (body: JobCreate, options?: WriteOptions) =>
      this.write<Job>({ method: 'POST', path: '/jobs', body, write: options }),
    /** A failed job runs again from attempt 1 (admin). */
    retry: async (id: string) => (await this.request<Schemas['JobEnvelope']>({ method: 'POST', path: `/jobs/${id}/retry` })).body,
    cancel: async (id: string) => (await this.request<Schemas['JobEnvelope']>({ method: 'POST', path: `/jobs/${id}/cancel` })).body,
  };

  readonly activity = {
    list: (query: Query<'/activity', 'get'> = {}) => this.get<ActivityPage>('/activity', query),
  };

  readonly notifications = {
    list: (query: Query<'/notifications', 'get'> = {}) => this.get<NotificationPage>('/notifications', query),
    unreadCount: async () => (await this.get<Schemas['Count']>('/notifications/unread-count')).count,
    read: async (id: string) => {
      await this.request<unknown>({ method: 'POST', path: `/notifications/${id}/read` });
    },
    readAll: async () =>
      (await this.request<Schemas['Count']>({ method: 'POST', path: '/notifications/read-all' })).body,
  };

  health = () => this.get<Schemas['Health']>('/health');
  ready = () => this.get<Schemas['Readiness']>('/ready');
  metrics = () => this.get<string>('/metrics');
  openapi = () => this.get<Record<string, unknown>>('/openapi.json');
  asyncapi = () => this.get<Record<string, unknown>>('/asyncapi.json');
}
