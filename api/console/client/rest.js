// Typed REST calls for every route of api/openapi.json. Writes carry an `Idempotency-Key` made
// per call and are retried, with that same key, on 503/429 (after `Retry-After`) and on network
// errors, so a retry never applies a write twice. Errors are thrown as `ProblemError`.
import { NetworkError, ProblemError } from './errors.js';
export function newId() {
    const c = globalThis.crypto;
    if (typeof c?.randomUUID === 'function')
        return c.randomUUID();
    const b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
const sleep = (ms, signal) => new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
        clearTimeout(t);
        reject(signal.reason);
    });
});
/** `Retry-After` in milliseconds (seconds or an HTTP date), if present. */
function retryAfterMs(headers) {
    const v = headers.get('retry-after');
    if (v === null)
        return undefined;
    const secs = Number(v);
    if (Number.isFinite(secs))
        return Math.max(0, secs * 1000);
    const at = Date.parse(v);
    return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
export class ShowrunnerClient {
    baseUrl;
    tokenSource;
    fetchImpl;
    maxRetries;
    retryBaseMs;
    maxRetryDelayMs;
    constructor(options = {}) {
        this.baseUrl = (options.baseUrl ?? '').replace(/\/$/, '');
        this.tokenSource = options.token;
        this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
        this.maxRetries = options.maxRetries ?? 6;
        this.retryBaseMs = options.retryBaseMs ?? 200;
        this.maxRetryDelayMs = options.maxRetryDelayMs ?? 10_000;
    }
    /** Replaces the token (or its source); the next request uses it. */
    setToken(token) {
        this.tokenSource = token;
    }
    async token() {
        const t = this.tokenSource;
        return typeof t === 'function' ? await t() : t;
    }
    /** One request, retried as the module's comment says; the parsed body, or the Response. */
    async request(spec) {
        const url = new URL(this.baseUrl + '/api/v1' + spec.path, this.originForRelative());
        for (const [k, v] of Object.entries(spec.query ?? {})) {
            if (v !== undefined && v !== null)
                url.searchParams.set(k, String(v));
        }
        const headers = { accept: 'application/json', ...spec.headers };
        if (spec.idempotent)
            headers['idempotency-key'] = spec.write?.idempotencyKey ?? newId();
        if (spec.write?.wait !== undefined)
            headers['prefer'] = `wait=${spec.write.wait}`;
        let body = spec.rawBody;
        if (spec.body !== undefined) {
            headers['content-type'] = 'application/json';
            body = JSON.stringify(spec.body);
        }
        const signal = spec.signal ?? spec.write?.signal;
        let lastError;
        for (let attempt = 0;; attempt++) {
            const token = await this.token();
            if (token)
                headers['authorization'] = `Bearer ${token}`;
            let response;
            try {
                response = await this.fetchImpl(url, { method: spec.method, headers, body, signal: signal ?? null });
            }
            catch (error) {
                if (signal?.aborted)
                    throw error;
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
                await response.body?.cancel().catch(() => { });
                await sleep(Math.min(wait ?? this.backoff(attempt), this.maxRetryDelayMs), signal);
                continue;
            }
            if (!response.ok && response.status !== 304) {
                const text = await response.text().catch(() => '');
                let problem = {};
                try {
                    problem = JSON.parse(text);
                }
                catch {
                    problem = { title: response.statusText, detail: text || undefined };
                }
                throw new ProblemError(response.status, problem, response.headers);
            }
            if (spec.raw)
                return { status: response.status, headers: response.headers, body: response };
            const type = response.headers.get('content-type') ?? '';
            const parsed = type.includes('json') ? await response.json() : await response.text();
            void lastError;
            return { status: response.status, headers: response.headers, body: (parsed === '' ? undefined : parsed) };
        }
    }
    originForRelative() {
        if (this.baseUrl)
            return undefined;
        return globalThis.location?.origin;
    }
    /** Full jitter: a random wait up to the doubled base, capped. */
    backoff(attempt) {
        return Math.random() * Math.min(this.maxRetryDelayMs, this.retryBaseMs * 2 ** attempt);
    }
    async write(spec) {
        const r = await this.request({ ...spec, idempotent: true });
        return {
            status: r.status,
            applied: r.status !== 202,
            data: r.body?.data,
            commandId: r.body?.commandId ?? undefined,
            location: r.headers.get('location'),
        };
    }
    async get(path, query) {
        return (await this.request({ method: 'GET', path, query })).body;
    }
    episodes = {
        list: (query = {}) => this.get('/episodes', query),
        /** The episode and its viewers; records the caller as a viewer. */
        get: (id) => this.get(`/episodes/${id}`),
        create: (body, options) => this.write({ method: 'POST', path: '/episodes', body, write: options }),
        update: (id, changes, options) => this.write({ method: 'PATCH', path: `/episodes/${id}`, body: changes, write: options }),
        delete: (id, options = {}) => this.write({
            method: 'DELETE',
            path: `/episodes/${id}`,
            query: { permanent: options.permanent },
            write: options,
        }),
        viewers: (id) => this.get(`/episodes/${id}/viewers`),
    };
    compositions = {
        list: (episodeId, query = {}) => this.get(`/episodes/${episodeId}/compositions`, query),
        get: (episodeId, id) => this.get(`/episodes/${episodeId}/compositions/${id}`),
        create: (episodeId, body, options) => this.write({ method: 'POST', path: `/episodes/${episodeId}/compositions`, body, write: options }),
        /** `ifVersion`: applied only if the composition is still at that version (412 otherwise). */
        update: (episodeId, id, changes, options = {}) => this.write({
            method: 'PATCH',
            path: `/episodes/${episodeId}/compositions/${id}`,
            body: changes,
            headers: options.ifVersion !== undefined ? { 'if-match': `"${options.ifVersion}"` } : {},
            write: options,
        }),
        delete: (episodeId, id, options = {}) => this.write({
            method: 'DELETE',
            path: `/episodes/${episodeId}/compositions/${id}`,
            query: { permanent: options.permanent },
            write: options,
        }),
    };
    files = {
        list: (episodeId, query = {}) => this.get(`/episodes/${episodeId}/files`, query),
        get: (episodeId, id) => this.get(`/episodes/${episodeId}/files/${id}`),
        /** Uploads `content` as a file named `name` (its media type: `contentType`). */
        upload: (episodeId, content, options) => this.write({
            method: 'POST',
            path: `/episodes/${episodeId}/files`,
            query: { name: options.name },
            rawBody: content,
            headers: { 'content-type': options.contentType },
            write: options,
        }),
        delete: (episodeId, id, options = {}) => this.write({
            method: 'DELETE',
            path: `/episodes/${episodeId}/files/${id}`,
            query: { permanent: options.permanent },
            write: options,
        }),
        /** The bytes (a `Range` such as `bytes=0-99` answers 206 with that part). */
        content: async (episodeId, id, options = {}) => {
            const r = await this.request({
                method: 'GET',
                path: `/episodes/${episodeId}/files/${id}/content`,
                headers: options.range ? { range: options.range } : {},
                raw: true,
            });
            return { status: r.status, headers: r.headers, bytes: new Uint8Array(await r.body.arrayBuffer()) };
        },
    };
    commands = {
        /** A write's command: `pending`, `applied` or `rejected` (with `error`). */
        get: (id) => this.get(`/commands/${id}`),
    };
    jobs = {
        list: (query = {}) => this.get('/jobs', query),
        get: (id) => this.get(`/jobs/${id}`),
        create: (body, options) => this.write({ method: 'POST', path: '/jobs', body, write: options }),
        /** A failed job runs again from attempt 1 (admin). */
        retry: async (id) => (await this.request({ method: 'POST', path: `/jobs/${id}/retry` })).body,
        cancel: async (id) => (await this.request({ method: 'POST', path: `/jobs/${id}/cancel` })).body,
    };
    activity = {
        list: (query = {}) => this.get('/activity', query),
    };
    notifications = {
        list: (query = {}) => this.get('/notifications', query),
        unreadCount: async () => (await this.get('/notifications/unread-count')).count,
        read: async (id) => {
            await this.request({ method: 'POST', path: `/notifications/${id}/read` });
        },
        readAll: async () => (await this.request({ method: 'POST', path: '/notifications/read-all' })).body,
    };
    health = () => this.get('/health');
    ready = () => this.get('/ready');
    metrics = () => this.get('/metrics');
    openapi = () => this.get('/openapi.json');
    asyncapi = () => this.get('/asyncapi.json');
}
