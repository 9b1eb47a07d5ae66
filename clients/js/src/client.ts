import { backoff } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ShardcastError } from "./errors.js";
import { Subscription } from "./subscription.js";
import type {
  ClientEvents,
  ConnectionState,
  HistoryPage,
  Publication,
  PublishResult,
  ShardcastOptions,
  StateEvent,
  SubscribeOptions,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";

interface Pending {
  cb: (e: ShardcastError | null, f?: any) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Jitter window of the reconnect after 1012 (server restart) or 4011 (token expired), ms. */
const QUICK_JITTER = 500;
/** A connection that lived this long resets the backoff (shorter ones count as failed attempts). */
const STABLE_MS = 10000;

const noop = () => {};

/** @internal Turns a `message` frame into a Publication. */
export function toPublication(f: any): Publication {
  const p: Publication = { channel: f.channel, data: f.data };
  if (f.from !== undefined) p.from = f.from;
  if (f.info !== undefined) p.info = f.info;
  if (f.offset !== undefined) p.offset = f.offset;
  if (f.epoch !== undefined) p.epoch = f.epoch;
  return p;
}

/**
 * A connection to a shardcast server that reconnects by itself and keeps its
 * subscriptions (and their positions in history channels) across reconnects.
 */
export class Shardcast extends Emitter<ClientEvents> {
  /** The connection state (see the `state` event). */
  state: ConnectionState = "disconnected";
  /** The server's id of the current connection (from `connected`). */
  clientId?: string;
  /** The user the server authenticated. */
  user?: string;

  /** @internal */ readonly _o: Required<Omit<ShardcastOptions, "getToken" | "getSubscriptionToken" | "WebSocket" | "debug">> &
    ShardcastOptions;
  /** @internal */ readonly _subs = new Map<string, Subscription>();
  /** @internal Incremented for every new socket: stale callbacks compare it. */
  _conn = 0;

  private readonly url: string;
  private ws: WebSocketLike | null = null;
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private wanted = false;
  private attempts = 0;
  private connectedAt = 0;
  private expiredRetries = 0;
  private token: string | undefined;
  private tokenUntil = 0;
  private connectId = 0;
  private connectError: any = null;
  private timers: { [k: string]: ReturnType<typeof setTimeout> | undefined } = {};
  private pongDeadline: ReturnType<typeof setTimeout> | undefined;
  /** Subscribes in flight on this connection. */
  private subscribing = 0;
  private checks = new Set<() => void>();
  private log: (...args: unknown[]) => void;
  private onOnline = () => {
    if (this.wanted && !this.ws) {
      this.debug("online: reconnecting now");
      this.attempts = 0;
      this.open();
    }
  };
  private onOffline = () => {
    if (this.ws) this.drop(1006, "the browser went offline");
  };

  constructor(url: string, options: ShardcastOptions = {}) {
    super();
    this.url = url;
    this._o = { minReconnectDelay: 500, maxReconnectDelay: 20000, timeout: 10000, ...options };
    const d = options.debug;
    this.log = typeof d === "function" ? d : d ? (...a) => console.debug("[shardcast]", ...a) : noop;
  }

  private WS(): WebSocketConstructor | undefined {
    return this._o.WebSocket || (globalThis as any).WebSocket;
  }

  /** @internal */
  debug(...args: unknown[]): void {
    this.log(...args);
  }

  /** Connects (and keeps reconnecting until `disconnect()` or a close code that says not to). */
  connect(): void {
    if (!this.WS()) throw new Error("shardcast: no WebSocket here: pass the `WebSocket` option (e.g. from the `ws` package)");
    if (this.wanted) return;
    this.wanted = true;
    this.attempts = 0;
    this.expiredRetries = 0;
    const g: any = globalThis;
    if (typeof g.addEventListener === "function") {
      g.addEventListener("online", this.onOnline);
      g.addEventListener("offline", this.onOffline);
    }
    this.open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions stay registered for the next `connect()`. */
  disconnect(): void {
    if (!this.wanted) return;
    this.wanted = false;
    const g: any = globalThis;
    if (typeof g.removeEventListener === "function") {
      g.removeEventListener("online", this.onOnline);
      g.removeEventListener("offline", this.onOffline);
    }
    clearTimeout(this.timers.reconnect);
    this._conn++;
    if (this.ws) this.drop(1000, "disconnect() called");
    else this.setState({ state: "disconnected", code: 1000, reason: "disconnect() called", reconnect: false });
  }

  /**
   * The subscription to `channel`, created (and subscribed, now or at the next
   * connect) if there is none yet.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    let sub = this._subs.get(channel);
    if (!sub) {
      sub = new Subscription(this, channel, options, false);
      this._subs.set(channel, sub);
    }
    sub.subscribe();
    return sub;
  }

  /** The subscription to `channel`, client- or server-side, if any. */
  getSubscription(channel: string): Subscription | undefined {
    return this._subs.get(channel);
  }

  /** Every current subscription. */
  subscriptions(): Subscription[] {
    return [...this._subs.values()];
  }

  /** Publishes without being subscribed (where the namespace allows it). */
  async publish(channel: string, data: unknown, options: { idempotencyKey?: string } = {}): Promise<PublishResult> {
    await this._wait(() => this.state === "connected", "publish");
    const f: any = { op: "publish", channel, data };
    if (options.idempotencyKey) f.idempotency_key = options.idempotencyKey;
    const ok = await this._call(f);
    return ok.offset !== undefined ? { offset: ok.offset, epoch: ok.epoch } : {};
  }

  /** Reads a history channel's stored publications after `since` (default 0: from the start). */
  async history(channel: string, options: { since?: number; limit?: number } = {}): Promise<HistoryPage> {
    await this._wait(() => this.state === "connected", "history");
    return this._history(channel, options);
  }

  /** @internal */
  async _history(channel: string, options: { since?: number; limit?: number }): Promise<HistoryPage> {
    const f = await this._call({ op: "history", channel, since: options.since || 0, limit: options.limit || 100 });
    return {
      channel,
      epoch: f.epoch,
      offset: f.offset,
      complete: f.complete,
      publications: (f.publications || []).map((p: any) => toPublication({ ...p, channel, epoch: f.epoch })),
    };
  }

  // ---- requests ----

  /** @internal Sends a request and resolves with its answer (rejects on `error`, timeout, close). */
  _call(frame: any): Promise<any> {
    return new Promise((resolve, reject) => this._request(frame, (e, f) => (e ? reject(e) : resolve(f))));
  }

  /**
   * @internal Sends a request; `cb` runs synchronously when the answer is read, before
   * the frames that follow it (a subscribe's replay) are handled.
   */
  _request(frame: any, cb: (e: ShardcastError | null, f?: any) => void): void {
    if (!this.ws || this.ws.readyState !== 1) {
      cb(new ShardcastError("disconnected", "not connected"));
      return;
    }
    const id = this.nextId++;
    const sub = frame.op === "subscribe";
    const conn = this._conn;
    if (sub) this.subscribing++;
    const done = (e: ShardcastError | null, f?: any) => {
      if (sub && conn === this._conn) this.subscribing--;
      cb(e, f);
    };
    const timer = setTimeout(() => {
      this.pending.delete(id);
      done(new ShardcastError("timeout", `no answer to ${frame.op} within ${this._o.timeout} ms`));
    }, this._o.timeout);
    this.pending.set(id, { cb: done, timer });
    this.send({ ...frame, id });
  }

  /** @internal Waits (up to the timeout) until `ready()` holds; re-checked on every state change. */
  _wait(ready: () => boolean, what: string): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (ready()) {
          done();
          resolve();
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new ShardcastError("timeout", `${what}: not connected/subscribed within ${this._o.timeout} ms`));
      }, this._o.timeout);
      const done = () => {
        clearTimeout(timer);
        this.checks.delete(check);
      };
      this.checks.add(check);
    });
  }

  /** @internal Re-evaluates the waiters of `_wait`. */
  _poke(): void {
    for (const check of [...this.checks]) check();
  }

  /** @internal */
  send(frame: unknown): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return;
    const text = JSON.stringify(frame);
    this.debug("send", text);
    ws.send(text);
  }

  // ---- the connection ----

  private setState(e: StateEvent): void {
    this.state = e.state;
    this.debug("state", e);
    this._emit("state", e);
    this._poke();
  }

  private async open(): Promise<void> {
    clearTimeout(this.timers.reconnect);
    const conn = ++this._conn;
    this.connectError = null;
    this.setState({ state: "connecting", attempt: this.attempts });
    let token: string | undefined;
    if (this._o.getToken) {
      if (!this.token || Date.now() >= this.tokenUntil) {
        this.token = undefined;
        try {
          this.token = await this._o.getToken();
          this.tokenUntil = Infinity;
        } catch (e: any) {
          if (conn !== this._conn || !this.wanted) return;
          const stop = e instanceof ShardcastError && e.code === "unauthorized";
          this.closed(0, `getToken failed: ${e && e.message}`, stop ? "unauthorized" : "token");
          return;
        }
        if (conn !== this._conn || !this.wanted) return;
      }
      token = this.token;
    }
    const WS = this.WS();
    let ws: WebSocketLike;
    try {
      ws = new WS!(this.url);
    } catch (e: any) {
      this.closed(0, `cannot open a WebSocket: ${e && e.message}`);
      return;
    }
    this.ws = ws;
    this.timers.connect = setTimeout(() => this.drop(4010, "connect timeout"), this._o.timeout);
    ws.onopen = () => {
      this.debug("open");
      if (token) {
        this.connectId = this.nextId++;
        this.send({ op: "connect", token, id: this.connectId });
      }
    };
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = (ev) => {
      if (this.ws === ws) {
        this.detach();
        this.closed(ev.code, ev.reason);
      }
    };
    ws.onerror = noop;
  }

  /** Stops listening to the current socket and closes it. */
  private detach(): WebSocketLike | null {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      // Not null: `ws` (Node) throws on an `error` event nobody listens to.
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = noop;
    }
    return ws;
  }

  /** @internal Closes the connection from this side, as if the server had closed it with `code`. */
  drop(code: number, reason: string): void {
    const ws = this.detach();
    if (!ws) return;
    this.debug("drop", code, reason);
    try {
      const t = (ws as any).terminate;
      if (code !== 1000 && typeof t === "function") t.call(ws);
      // No reason text: browsers throw on one over 123 bytes, which would leave the socket open.
      else ws.close(code === 1000 || (code >= 3000 && code < 5000) ? code : 4000);
    } catch {
      // already closed
    }
    this.closed(code, reason);
  }

  /** After the socket closed (or never opened): clean up, tell, and maybe reconnect. */
  private closed(code: number, reason: string, error?: string): void {
    for (const k of ["connect", "ping", "refresh"]) clearTimeout(this.timers[k]);
    clearInterval(this.timers.ping);
    clearTimeout(this.pongDeadline);
    this.pongDeadline = undefined;
    this._conn++;
    this.subscribing = 0;
    const pending = this.pending;
    this.pending = new Map();
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.cb(new ShardcastError("disconnected", "the connection closed before the answer"));
    }
    const ce = this.connectError;
    if (ce) {
      error = ce.code;
      reason = ce.message || reason;
    }
    for (const sub of this._subs.values()) sub._onDisconnect();

    let reconnect = this.wanted;
    let delay = 0;
    let quick = code === 1012;
    if (this.connectedAt && Date.now() - this.connectedAt >= STABLE_MS) this.attempts = 0;
    this.connectedAt = 0;
    if (code >= 4500 && code <= 4999) reconnect = false;
    if (error === "unauthorized") reconnect = false;
    if (code === 4011 || error === "token_expired") {
      this.token = undefined;
      if (this.expiredRetries++ >= 1) {
        reconnect = false;
        reason = `${reason || "token expired"} (a fresh token was refused as expired too)`;
      } else {
        quick = true;
      }
    }
    if (reconnect) {
      delay = quick
        ? Math.round(Math.random() * QUICK_JITTER)
        : backoff(this.attempts + 1, this._o.minReconnectDelay, this._o.maxReconnectDelay);
      this.attempts++;
      this.timers.reconnect = setTimeout(() => this.open(), delay);
    } else {
      this.wanted = false;
    }
    const e: StateEvent = { state: "disconnected", code, reason, reconnect };
    if (error) e.error = error;
    if (reconnect) e.delay = delay;
    this.setState(e);
  }

  private onFrame(text: any): void {
    // Any frame proves the connection alive.
    clearTimeout(this.pongDeadline);
    this.pongDeadline = undefined;
    this.debug("recv", text);
    let f: any;
    try {
      f = JSON.parse(String(text));
    } catch {
      return;
    }
    const sub = f.channel !== undefined ? this._subs.get(f.channel) : undefined;
    switch (f.op) {
      case "message":
        if (sub) sub._onMessage(f);
        else this._emit("publication", toPublication(f));
        return;
      case "join":
      case "leave":
        if (sub) sub._onJoinLeave(f);
        return;
      case "connected":
        this.onConnected(f);
        return;
      case "subscribed":
        this.onServerSubscribed(f);
        return;
      case "unsubscribed":
        if (sub) sub._onUnsubscribed(f);
        return;
    }
    if (f.id === undefined) {
      if (f.op === "error") this._emit("error", new ShardcastError(f.code, f.message));
      return;
    }
    if (f.id === this.connectId && f.op === "error") {
      this.connectError = f;
      return;
    }
    const p = this.pending.get(f.id);
    if (!p) return;
    this.pending.delete(f.id);
    clearTimeout(p.timer);
    p.cb(f.op === "error" ? new ShardcastError(f.code, f.message) : null, f);
  }

  private onConnected(f: any): void {
    clearTimeout(this.timers.connect);
    this.connectedAt = Date.now();
    this.expiredRetries = 0;
    this.clientId = f.client;
    this.user = f.user;
    if (f.expires_in !== undefined && this._o.getToken) this.scheduleRefresh(f.expires_in);
    const interval = (f.ping_interval || 25) * 1000;
    const pongTimeout = (f.pong_timeout || 10) * 1000;
    const dead = () => {
      // The server answers a ping only after a subscribe it is busy with (up to 5 s on
      // Redis trouble): while one is pending, its own timeout judges the connection.
      if (this.subscribing > 0) this.pongDeadline = setTimeout(dead, pongTimeout);
      else this.drop(4009, `keepalive timeout: nothing from the server within ${pongTimeout} ms of a ping`);
    };
    this.timers.ping = setInterval(() => {
      this.send({ op: "ping" });
      if (!this.pongDeadline) this.pongDeadline = setTimeout(dead, pongTimeout);
    }, interval);
    // Before the event: a subscription the app creates in its listener subscribes once.
    this.state = "connected";
    for (const sub of this._subs.values()) if (!sub.server) sub._resubscribe();
    this.setState({ state: "connected", client: f.client, user: f.user });
    if (this.state !== "connected") return;
    // The server announces the token's subscriptions right after `connected`, before
    // it reads any frame: the answer to this ping comes after all of them.
    const conn = this._conn;
    this._call({ op: "ping" }).then(
      () => {
        if (conn !== this._conn) return;
        for (const sub of [...this._subs.values()]) if (sub.server) sub._checkRestored();
      },
      noop,
    );
  }

  /** Refreshes the connection token at 80% of its remaining lifetime. */
  private scheduleRefresh(expiresIn: number): void {
    // expires_in is whole seconds rounded down from the server's clock: up to 1 s less is left.
    const left = Math.max(0, expiresIn - 1) * 1000;
    this.tokenUntil = Date.now() + left;
    clearTimeout(this.timers.refresh);
    const conn = this._conn;
    const refresh = async () => {
      try {
        const token = await this._o.getToken!();
        if (conn !== this._conn) return;
        const ok = await this._call({ op: "refresh", token });
        if (conn !== this._conn) return;
        this.token = token;
        this.scheduleRefresh(ok.expires_in);
      } catch (e: any) {
        if (conn !== this._conn) return;
        this.debug("refresh failed", e);
        this._emit("error", e instanceof ShardcastError ? e : new ShardcastError("token", String(e && e.message)));
        // Try again; if the token runs out the server closes with 4011 and we reconnect.
        this.timers.refresh = setTimeout(refresh, Math.max(1000, this._o.minReconnectDelay));
      }
    };
    this.timers.refresh = setTimeout(refresh, left * 0.8);
  }

  private onServerSubscribed(f: any): void {
    let sub = this._subs.get(f.channel);
    const created = !sub;
    if (!sub) {
      sub = new Subscription(this, f.channel, {}, true);
      this._subs.set(f.channel, sub);
    }
    sub._onServerSubscribed(f);
    if (created) this._emit("subscribed", sub);
  }
}
