import { backoff, jwtExp } from "./backoff.js";
import type { Shardcast } from "./client.js";
import { toPublication } from "./client.js";
import { Emitter } from "./emitter.js";
import { ShardcastError } from "./errors.js";
import type {
  HistoryPage,
  Member,
  Position,
  PresenceStats,
  PublishResult,
  SubscribeOptions,
  SubscriptionEvents,
  SubscriptionState,
  UnrecoveredEvent,
} from "./types.js";

/** Subscribe errors retried with backoff (the position is kept, so the retry resumes). */
const RETRIED = ["unavailable", "limit", "internal"];

/**
 * One channel. Created by `client.subscribe(channel)` (or by the server: see
 * `server`); subscribed whenever the client is connected.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  state: SubscriptionState = "unsubscribed";
  /**
   * History channels: the offset and epoch of the last publication delivered to the
   * app (before the first one: the position of the subscribe `ok`). Resubscribes
   * resume from here.
   */
  position: Position | null = null;
  /** Subscribed by the server (token `channels` claim or `POST /api/subscribe`), not by this client. */
  readonly server: boolean;

  private readonly c: Shardcast;
  private readonly recover: boolean;
  private since: Position | null;
  private token: string | undefined;
  private tokenExp: number | undefined;
  private tokenRetried = false;
  private attempts = 0;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private refresh: ReturnType<typeof setTimeout> | undefined;
  /** Incremented per subscribe attempt and on every end: stale answers compare it. */
  private gen = 0;
  /** Server-side subscriptions: announced again since the last reconnect. */
  private restored = true;
  /** Live messages held back while missed ones are read from the history. */
  private held: any[] | null = null;

  /** Use `client.subscribe()` rather than this. */
  constructor(client: Shardcast, channel: string, options: SubscribeOptions, server: boolean) {
    super();
    this.c = client;
    this.channel = channel;
    this.recover = options.recover !== false;
    this.since = options.since || null;
    this.server = server;
  }

  /** Subscribes (again, after `unsubscribe()`); a no-op while subscribing or subscribed. */
  subscribe(): void {
    if (this.state !== "unsubscribed") return;
    const other = this.c._subs.get(this.channel);
    if (other && other !== this) throw new Error(`shardcast: another subscription to ${this.channel} exists`);
    this.c._subs.set(this.channel, this);
    this.setSubscribing();
    if (this.c.state === "connected") this._resubscribe();
  }

  /** Leaves the channel and forgets the subscription (no more events). */
  unsubscribe(): void {
    if (this.state === "unsubscribed") return;
    this.end({ channel: this.channel, reason: "unsubscribe() called" });
    // Also while a subscribe is in flight: the server handles frames in order.
    this.c._call({ op: "unsubscribe", channel: this.channel }).catch(() => {});
  }

  /** Publishes into the channel; resolves on the server's `ok` (with offset/epoch on history channels). */
  async publish(data: unknown, options: { idempotencyKey?: string } = {}): Promise<PublishResult> {
    await this.ready("publish");
    return this.c.publish(this.channel, data, options);
  }

  /** Who is in the channel (namespaces with presence). */
  async presence(): Promise<Member[]> {
    await this.ready("presence");
    return (await this.c._call({ op: "presence", channel: this.channel })).clients;
  }

  /** How many clients and distinct users are in the channel. */
  async presenceStats(): Promise<PresenceStats> {
    await this.ready("presence_stats");
    const f = await this.c._call({ op: "presence_stats", channel: this.channel });
    return { clients: f.clients, users: f.users };
  }

  /** Stored publications after offset `since` (default 0), at most `limit` (1-1000, default 100). */
  async history(options: { since?: number; limit?: number } = {}): Promise<HistoryPage> {
    await this.ready("history");
    return this.c._history(this.channel, options);
  }

  /** Waits until subscribed (or ended, then the server decides). */
  private ready(what: string): Promise<void> {
    return this.c._wait(
      () => this.state === "subscribed" || (this.state === "unsubscribed" && this.c.state === "connected"),
      what,
    );
  }

  private setSubscribing(code?: string, reason?: string): void {
    if (this.state === "subscribing") return;
    this.state = "subscribing";
    const e: SubscriptionEvents["subscribing"] = { channel: this.channel };
    if (code) e.code = code;
    if (reason) e.reason = reason;
    this._emit("subscribing", e);
    this.c._poke();
  }

  private end(e: { channel: string; code?: string; reason: string }): void {
    this.gen++;
    clearTimeout(this.retry);
    clearTimeout(this.refresh);
    this.held = null;
    this.state = "unsubscribed";
    if (this.c._subs.get(this.channel) === this) this.c._subs.delete(this.channel);
    this._emit("unsubscribed", e);
    this.c._poke();
  }

  // ---- driven by the client ----

  /** @internal The connection closed. */
  _onDisconnect(): void {
    this.gen++;
    clearTimeout(this.retry);
    clearTimeout(this.refresh);
    this.held = null;
    this.restored = false;
    this.setSubscribing(undefined, "disconnected");
  }

  /** @internal The client is connected: send the subscribe (resuming from the position). */
  async _resubscribe(): Promise<void> {
    clearTimeout(this.retry);
    const gen = ++this.gen;
    const conn = this.c._conn;
    const getToken = this.c._o.getSubscriptionToken;
    if (getToken && (!this.token || (this.tokenExp !== undefined && this.tokenExp * 1000 <= Date.now()))) {
      try {
        this.token = (await getToken(this.channel)) || undefined;
        this.tokenExp = this.token ? jwtExp(this.token) : undefined;
      } catch (e: any) {
        if (gen === this.gen && conn === this.c._conn) this.failed(new ShardcastError("token", String(e && e.message)), true);
        return;
      }
      if (gen !== this.gen || conn !== this.c._conn) return;
    }
    const since = (this.recover && this.position) || this.since;
    const f: any = { op: "subscribe", channel: this.channel };
    if (since) f.since = since;
    if (this.token) f.token = this.token;
    this.c._request(f, (e, ok) => {
      if (gen !== this.gen || conn !== this.c._conn) return;
      if (e) {
        if (e.code === "timeout") {
          // The server did not answer in time: the connection is not healthy.
          this.c.drop(4009, `no answer to the subscribe of ${this.channel}`);
        } else if (e.code === "token_expired" && getToken && !this.tokenRetried) {
          this.tokenRetried = true;
          this.token = undefined;
          this._resubscribe();
        } else {
          this.failed(e, RETRIED.includes(e.code));
        }
        return;
      }
      this.attempts = 0;
      this.tokenRetried = false;
      this.since = null;
      if (ok.offset !== undefined) {
        const pos = { offset: ok.offset, epoch: ok.epoch };
        if (since && ok.recovered) {
          this.position = since;
        } else {
          if (since) this.unrecovered("not_recovered", since, pos);
          this.position = pos;
        }
      }
      this.scheduleRefresh(conn);
      this.subscribed(ok.offset, ok.epoch, ok.recovered);
    });
  }

  private subscribed(offset?: number, epoch?: string, recovered?: boolean): void {
    this.state = "subscribed";
    const e: SubscriptionEvents["subscribed"] = { channel: this.channel, server: this.server };
    if (offset !== undefined) {
      e.offset = offset;
      e.epoch = epoch;
    }
    if (recovered !== undefined) e.recovered = recovered;
    this._emit("subscribed", e);
    this.c._poke();
  }

  private failed(e: ShardcastError, retry: boolean): void {
    this.c.debug("subscribe failed", this.channel, e.code, retry);
    this._emit("error", e);
    if (!retry) {
      this.end({ channel: this.channel, code: e.code, reason: e.message });
      return;
    }
    const delay = backoff(++this.attempts, this.c._o.minReconnectDelay, this.c._o.maxReconnectDelay);
    const conn = this.c._conn;
    this.retry = setTimeout(() => {
      if (conn === this.c._conn && this.state === "subscribing") this._resubscribe();
    }, delay);
  }

  /** Refreshes the subscription token at 80% of its remaining lifetime. */
  private scheduleRefresh(conn: number): void {
    const getToken = this.c._o.getSubscriptionToken;
    if (!getToken || !this.token || this.tokenExp === undefined) return;
    const gen = this.gen;
    const left = Math.max(0, this.tokenExp * 1000 - Date.now() - 1000);
    this.refresh = setTimeout(async () => {
      try {
        const token = await getToken(this.channel);
        if (!token || gen !== this.gen || conn !== this.c._conn) return;
        await this.c._call({ op: "sub_refresh", channel: this.channel, token });
        if (gen !== this.gen || conn !== this.c._conn) return;
        this.token = token;
        this.tokenExp = jwtExp(token);
        this.scheduleRefresh(conn);
      } catch (e: any) {
        // The server will end the subscription with token_expired; we then resubscribe.
        this.c.debug("sub_refresh failed", this.channel, e);
      }
    }, left * 0.8);
  }

  private unrecovered(reason: UnrecoveredEvent["reason"], since: Position | null, now: Position): void {
    this._emit("unrecovered", { channel: this.channel, reason, since, offset: now.offset, epoch: now.epoch });
  }

  /** @internal */
  _onMessage(f: any): void {
    if (this.state === "unsubscribed") return;
    if (this.held) {
      this.held.push(f);
      return;
    }
    this.deliver(f);
  }

  private deliver(f: any): void {
    if (f.offset !== undefined) {
      const p = this.position;
      const now = { offset: f.offset, epoch: f.epoch };
      if (p && (p.epoch === f.epoch || (p.epoch === "" && p.offset === 0))) {
        if (f.offset <= p.offset) {
          this.c.debug("repeat dropped", this.channel, f.offset);
          return;
        }
        if (f.offset > p.offset + 1 && p.epoch === f.epoch) this.unrecovered("gap", p, { offset: f.offset - 1, epoch: f.epoch });
      } else if (p) {
        this.unrecovered("epoch_changed", p, { offset: f.offset - 1, epoch: f.epoch });
      }
      this.position = now;
    }
    this._emit("publication", toPublication(f));
  }

  /** @internal */
  _onJoinLeave(f: any): void {
    if (this.state === "unsubscribed") return;
    const e: any = { channel: f.channel, client: f.client, user: f.user };
    if (f.info !== undefined) e.info = f.info;
    this._emit(f.op === "join" ? "join" : "leave", e);
  }

  /** @internal The server ended the subscription. */
  _onUnsubscribed(f: any): void {
    if (f.code === "token_expired" && this.c._o.getSubscriptionToken && !this.server && !this.tokenRetried) {
      // Fetch a new token once and resume from the position.
      this.tokenRetried = true;
      this.token = undefined;
      this.gen++;
      clearTimeout(this.refresh);
      this.setSubscribing(f.code, f.reason);
      this._resubscribe();
      return;
    }
    this.end({ channel: this.channel, code: f.code, reason: f.reason || "unsubscribed by the server" });
  }

  /** @internal A `subscribed` frame: the server (re)made this subscription. */
  _onServerSubscribed(f: any): void {
    this.restored = true;
    this.gen++;
    const pos: Position | null = f.offset !== undefined ? { offset: f.offset, epoch: f.epoch } : null;
    const prev = this.position;
    if (!pos) {
      this.subscribed();
      return;
    }
    if (!prev || prev.offset >= pos.offset && prev.epoch === pos.epoch) {
      if (!prev) this.position = pos;
      this.subscribed(pos.offset, pos.epoch);
      return;
    }
    if (prev.epoch !== pos.epoch && !(prev.epoch === "" && prev.offset === 0)) {
      this.unrecovered("not_recovered", prev, pos);
      this.position = pos;
      this.subscribed(pos.offset, pos.epoch, false);
      return;
    }
    // Read what was missed (prev, pos] from the history; live messages wait meanwhile.
    this.held = [];
    this.subscribed(pos.offset, pos.epoch, true);
    this.fill(prev, pos, this.gen, this.c._conn);
  }

  private async fill(prev: Position, pos: Position, gen: number, conn: number): Promise<void> {
    let cursor = prev.offset;
    let ok = true;
    try {
      while (cursor < pos.offset) {
        const page = await this.c._history(this.channel, { since: cursor, limit: 1000 });
        if (gen !== this.gen || conn !== this.c._conn) return;
        if (!page.complete || page.epoch !== pos.epoch || !page.publications.length) {
          ok = false;
          break;
        }
        const before = cursor;
        for (const p of page.publications) {
          if (p.offset! > pos.offset) break;
          this.deliver({ ...p, channel: this.channel, epoch: pos.epoch });
          cursor = p.offset!;
        }
        if (cursor === before) {
          ok = false;
          break;
        }
      }
    } catch (e: any) {
      if (gen !== this.gen || conn !== this.c._conn) return;
      this._emit("error", e);
      ok = false;
    }
    if (!ok) {
      this.unrecovered("not_recovered", this.position, pos);
      this.position = pos;
    }
    const held = this.held || [];
    this.held = null;
    for (const f of held) this.deliver(f);
  }

  /** @internal After a reconnect: a server-side subscription the server did not make again has ended. */
  _checkRestored(): void {
    if (!this.restored && this.state !== "unsubscribed") {
      this.end({ channel: this.channel, reason: "the server did not restore this subscription after the reconnect" });
    }
  }
}
