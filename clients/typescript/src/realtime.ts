// The realtime connection: one WebSocket that survives everything a browser or a network does
// to it. It reconnects with jittered backoff (at once when the browser comes back online or the
// tab becomes visible), and after every reconnect sends one `resume` with the last event id it
// delivered and the topics it holds, so nothing is missed; events are deduplicated by id, so
// nothing is delivered twice. When the server cannot resume (`resume_unavailable`,
// `resume_too_far`) the app is told `{recovered: false}`: it should reload its state.

import type { AnyEvent, EventFrame, EventName, ServerFrame, Viewer } from './generated/messages.js';
import type { TokenSource } from './rest.js';

/** The frame of the event named `N`. */
export type FrameOf<N extends EventName> = Extract<EventFrame, { event: N }>;
export type DataOf<N extends EventName> = FrameOf<N>['data'];
export type { AnyEvent, EventFrame, EventName };

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Recovery {
  /** false: events may have been missed (the server no longer has them); reload state. */
  recovered: boolean;
  /** `resume_unavailable` or `resume_too_far` when not recovered. */
  reason?: string;
  /** The event the resume started after. */
  lastEventId?: string;
}

export interface RealtimeOptions {
  /** The api's origin (`http://...` or `ws://...`); `''` in a page the api served. */
  baseUrl?: string;
  token?: TokenSource;
  /** Topics to hold from the start (AMQP patterns). */
  topics?: string[];
  /** The WebSocket class (default: the platform's `WebSocket`). */
  WebSocket?: typeof WebSocket;
  /** First reconnect delay's cap, doubled per failure up to `maxDelayMs` (defaults 250 / 10000). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** How long without any frame before the connection is taken for dead (default 45 s). */
  idleTimeoutMs?: number;
  /** Ids remembered to drop duplicates (default 10000). */
  dedupeWindow?: number;
}

type Handler<T> = (value: T) => void;

export class Realtime {
  private readonly options: RealtimeOptions;
  private token: TokenSource | undefined;
  private ws: WebSocket | undefined;
  private readonly topics = new Set<string>();
  private readonly handlers = new Map<string, Set<Handler<EventFrame>>>();
  private readonly stateHandlers = new Set<Handler<ConnectionState>>();
  private readonly recoveryHandlers = new Set<Handler<Recovery>>();
  private readonly errorHandlers = new Set<Handler<{ code: string; message: string }>>();
  private readonly viewerHandlers = new Set<(episodeId: string, viewers: Viewer[]) => void>();
  private readonly presence = new Map<string, Viewer[]>();
  private readonly seen = new Set<string>();
  private failures = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private wanted = false;
  private resuming: string | undefined;
  private _state: ConnectionState = 'idle';
  /** The id of the last event delivered: where the next resume starts. */
  lastEventId: string | undefined;
  private readonly detach: (() => void)[] = [];

  constructor(options: RealtimeOptions = {}) {
    this.options = options;
    this.token = options.token;
    for (const t of options.topics ?? []) this.topics.add(t);
    const g = globalThis as unknown as {
      addEventListener?: (n: string, f: () => void) => void;
      removeEventListener?: (n: string, f: () => void) => void;
      document?: { visibilityState?: string; addEventListener?: (n: string, f: () => void) => void; removeEventListener?: (n: string, f: () => void) => void };
    };
    // Browsers: come back at once when the network or the tab does.
    const wake = () => this.wake();
    if (typeof g.addEventListener === 'function' && g.document) {
      g.addEventListener('online', wake);
      this.detach.push(() => g.removeEventListener?.('online', wake));
      const visible = () => {
        if (g.document?.visibilityState === 'visible') this.wake();
      };
      g.document.addEventListener?.('visibilitychange', visible);
      this.detach.push(() => g.document?.removeEventListener?.('visibilitychange', visible));
    }
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** Opens the connection (and keeps it open until `close`). */
  connect(): this {
    this.wanted = true;
    if (!this.ws) void this.open();
    return this;
  }

  /** Closes for good: no reconnect. */
  close(): void {
    this.wanted = false;
    this.clearTimers();
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close(1000, 'closed by the client');
    this.ws = undefined;
    for (const d of this.detach.splice(0)) d();
    this.setState('closed');
  }

  /**
   * Handles every event named `name` (or `'*'` for all); returns the function that stops it.
   * Each event reaches a handler once, in order, across reconnects.
   */
  on<N extends EventName>(name: N, handler: Handler<FrameOf<N>>): () => void;
  on(name: '*', handler: Handler<EventFrame>): () => void;
  on(name: string, handler: Handler<EventFrame>): () => void {
    let set = this.handlers.get(name);
    if (!set) this.handlers.set(name, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  onState(handler: Handler<ConnectionState>): () => void {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  /** After every reconnect that resumed: `{recovered: true}` or, if events were lost, false. */
  onRecovery(handler: Handler<Recovery>): () => void {
    this.recoveryHandlers.add(handler);
    return () => this.recoveryHandlers.delete(handler);
  }

  /** Error frames other than a failed resume (`forbidden`, `invalid_topic`, ...). */
  onError(handler: Handler<{ code: string; message: string }>): () => void {
    this.errorHandlers.add(handler);
    return () => this.errorHandlers.delete(handler);
  }

  /** Holds `topics` (AMQP patterns) across reconnects. */
  subscribe(...topics: string[]): void {
    const fresh = topics.filter((t) => !this.topics.has(t));
    for (const t of fresh) this.topics.add(t);
    if (fresh.length > 0) this.send({ op: 'subscribe', topics: fresh });
  }

  unsubscribe(...topics: string[]): void {
    const held = topics.filter((t) => this.topics.delete(t));
    if (held.length > 0) this.send({ op: 'unsubscribe', topics: held });
  }

  subscriptions(): string[] {
    return [...this.topics];
  }

  /** Watches an episode (its events, and makes this user one of its viewers). */
  watch(episodeId: string, initialViewers?: Viewer[]): void {
    if (initialViewers) this.setViewers(episodeId, initialViewers);
    this.subscribe(`episode.${episodeId}.#`);
  }

  unwatch(episodeId: string): void {
    this.unsubscribe(`episode.${episodeId}.#`);
    this.presence.delete(episodeId);
  }

  /** Who views the episode now, as the last presence event (or `watch`'s list) said. */
  viewers(episodeId: string): Viewer[] {
    return this.presence.get(episodeId) ?? [];
  }

  onViewers(handler: (episodeId: string, viewers: Viewer[]) => void): () => void {
    this.viewerHandlers.add(handler);
    return () => this.viewerHandlers.delete(handler);
  }

  /**
   * Uses a new token: reconnects with it and resumes where the old connection was, with every
   * subscription, so nothing is lost or repeated.
   */
  setToken(token: TokenSource): void {
    this.token = token;
    if (this.ws) {
      const old = this.ws;
      this.ws = undefined;
      this.detachSocket(old);
      old.close(1000, 'token refreshed');
      this.clearTimers();
      if (this.wanted) void this.open();
    }
  }

  private wake(): void {
    if (!this.wanted || (this.ws && this.ws.readyState <= 1)) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    void this.open();
  }

  private setState(state: ConnectionState): void {
    if (state === this._state) return;
    this._state = state;
    for (const h of this.stateHandlers) h(state);
  }

  private async url(): Promise<string> {
    const base =
      this.options.baseUrl || (globalThis as { location?: { origin: string } }).location?.origin || '';
    const url = new URL(base.replace(/\/$/, '') + '/api/v1/ws');
    url.protocol = url.protocol === 'https:' || url.protocol === 'wss:' ? 'wss:' : 'ws:';
    const t = this.token;
    const token = typeof t === 'function' ? await t() : t;
    // Browsers cannot set headers on a WebSocket: the token goes in the query.
    if (token) url.searchParams.set('token', token);
    return url.toString();
  }

  private async open(): Promise<void> {
    this.setState(this.lastEventId || this.failures > 0 ? 'reconnecting' : 'connecting');
    let url: string;
    try {
      url = await this.url();
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (!this.wanted) return;
    const Impl = this.options.WebSocket ?? globalThis.WebSocket;
    let ws: WebSocket;
    try {
      ws = new Impl(url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    // Also bounds the handshake: a connection that never opens is dropped like a silent one.
    this.bumpIdle();
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.bumpIdle();
      const topics = [...this.topics];
      if (this.lastEventId) {
        this.resuming = this.lastEventId;
        this.send({ op: 'resume', lastEventId: this.lastEventId, topics });
      } else {
        if (topics.length > 0) this.send({ op: 'subscribe', topics });
        this.opened();
      }
      this.pingTimer = setInterval(() => this.send({ op: 'ping' }), 20_000);
    };
    ws.onmessage = (message) => {
      if (this.ws !== ws) return;
      this.bumpIdle();
      let frame: ServerFrame;
      try {
        frame = JSON.parse(String(message.data));
      } catch {
        return;
      }
      this.handle(frame);
    };
    // Browsers follow an error with a close; Node 20's WebSocket does not when the connection
    // could not be made (it stays CONNECTING): either event ends this socket.
    const lost = () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.detachSocket(ws);
      try {
        if (ws.readyState < 2) ws.close();
      } catch {
        // Closing a socket that never opened may throw; it is dropped either way.
      }
      this.clearTimers();
      this.scheduleReconnect();
    };
    ws.onclose = lost;
    ws.onerror = lost;
  }

  private opened(): void {
    this.failures = 0;
    this.setState('open');
  }

  private handle(frame: ServerFrame): void {
    switch (frame.op) {
      case 'event':
        this.deliver(frame);
        break;
      case 'resumed':
        this.resuming = undefined;
        this.opened();
        for (const h of this.recoveryHandlers) h({ recovered: true, lastEventId: frame.lastEventId });
        break;
      case 'error':
        if (this.resuming && (frame.code === 'resume_unavailable' || frame.code === 'resume_too_far')) {
          const lastEventId = this.resuming;
          this.resuming = undefined;
          // Live from here: the next gap is counted from the next event.
          this.lastEventId = undefined;
          this.opened();
          for (const h of this.recoveryHandlers) h({ recovered: false, reason: frame.code, lastEventId });
        } else if (this.resuming && frame.code !== 'unavailable') {
          // A held topic was refused (the resume subscribes them first), so nothing was
          // resumed: say so, and what was refused.
          const lastEventId = this.resuming;
          this.resuming = undefined;
          this.lastEventId = undefined;
          this.opened();
          for (const h of this.errorHandlers) h({ code: frame.code, message: frame.message });
          for (const h of this.recoveryHandlers) h({ recovered: false, reason: frame.code, lastEventId });
        } else if (this.resuming && frame.code === 'unavailable') {
          // The event log could not be read just now: try again on a new connection.
          this.ws?.close(4000, 'resume unavailable, retrying');
        } else {
          for (const h of this.errorHandlers) h({ code: frame.code, message: frame.message });
        }
        break;
      default:
        break;
    }
  }

  private deliver(frame: EventFrame): void {
    if (this.seen.has(frame.id)) return;
    this.seen.add(frame.id);
    const window = this.options.dedupeWindow ?? 10_000;
    if (this.seen.size > window) {
      // Sets iterate in insertion order: drop the oldest.
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    this.lastEventId = frame.id;
    if (frame.event === 'viewer_joined' || frame.event === 'viewer_left') {
      this.setViewers(frame.data.episodeId, frame.data.viewers);
    }
    for (const h of this.handlers.get(frame.event) ?? []) h(frame);
    for (const h of this.handlers.get('*') ?? []) h(frame);
  }

  private setViewers(episodeId: string, viewers: Viewer[]): void {
    this.presence.set(episodeId, viewers);
    for (const h of this.viewerHandlers) h(episodeId, viewers);
  }

  private send(frame: object): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  private scheduleReconnect(): void {
    if (!this.wanted) return;
    this.setState('reconnecting');
    const base = this.options.initialDelayMs ?? 250;
    const max = this.options.maxDelayMs ?? 10_000;
    // Full jitter: clients that lost the same server do not all come back at once.
    const delay = Math.random() * Math.min(max, base * 2 ** this.failures);
    this.failures += 1;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.open();
    }, delay);
  }

  private bumpIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    const ws = this.ws;
    this.idleTimer = setTimeout(() => {
      if (this.ws === ws) ws?.close(4001, 'no frame for too long');
    }, this.options.idleTimeoutMs ?? 45_000);
  }

  private clearTimers(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.idleTimer = undefined;
    this.pingTimer = undefined;
  }

  private detachSocket(ws: WebSocket): void {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }
}
