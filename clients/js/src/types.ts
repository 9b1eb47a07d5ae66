import type { ShardcastError } from "./errors.js";

/** What the client needs from a WebSocket: the browser's, or `ws`'s in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ShardcastOptions {
  /**
   * Returns a connection token (JWT). Called for the first connect, when the
   * token is about to expire (a `refresh` at 80% of its lifetime) and after the
   * server refused it as expired. Without it the client connects without a token
   * (a development server started with `--insecure`, user from `?user=` in the
   * URL). Throw a `ShardcastError` with code `unauthorized` to stop reconnecting.
   */
  getToken?: () => Promise<string>;
  /**
   * Returns a subscription token for `channel`, or null/undefined/"" to subscribe
   * without one. Called before each subscribe that has no valid token yet, before
   * a token expires (`sub_refresh`), and once after the server ended the
   * subscription with `token_expired`.
   */
  getSubscriptionToken?: (channel: string) => Promise<string | null | undefined>;
  /** WebSocket constructor; default: the global `WebSocket` (pass `ws`'s in Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Floor and first window of the reconnect backoff, ms (default 500). */
  minReconnectDelay?: number;
  /** Cap of the reconnect backoff window, ms (default 20000). */
  maxReconnectDelay?: number;
  /** How long a request (and a connect) may wait for its answer, ms (default 10000). */
  timeout?: number;
  /** Log frames and decisions: `true` for console.debug, or your own logger. */
  debug?: boolean | ((...args: unknown[]) => void);
}

export type ConnectionState = "disconnected" | "connecting" | "connected";

/** The `state` event of the client. */
export interface StateEvent {
  state: ConnectionState;
  /** WebSocket close code (disconnected); 0 when no socket was opened. */
  code?: number;
  /** Why (close reason, server error message, or the client's own reason). */
  reason?: string;
  /** Server error code that preceded the close (e.g. `token_expired`, `unauthorized`). */
  error?: string;
  /** disconnected: whether the client will reconnect by itself. */
  reconnect?: boolean;
  /** disconnected: ms until the next attempt (when reconnect is true). */
  delay?: number;
  /** connecting: reconnect attempts since the last stable connection (0 for the first connect). */
  attempt?: number;
  /** connected: the server's id of this connection and the user it authenticated. */
  client?: string;
  user?: string;
}

/** A resume position in a history channel. */
export interface Position {
  offset: number;
  epoch: string;
}

export interface Publication<T = unknown> {
  channel: string;
  data: T;
  /** The publishing user; absent for publications by the backend's HTTP API. */
  from?: string;
  info?: unknown;
  /** History channels only. */
  offset?: number;
  epoch?: string;
}

export interface Member {
  client: string;
  user: string;
  info?: unknown;
}

export interface JoinLeave extends Member {
  channel: string;
}

export interface PresenceStats {
  clients: number;
  users: number;
}

export interface HistoryPage<T = unknown> {
  channel: string;
  epoch: string;
  /** The channel's last offset. */
  offset: number;
  /** false when publications after `since` were already trimmed. */
  complete: boolean;
  publications: Publication<T>[];
}

export interface PublishResult {
  /** History channels: the publication's offset and epoch. */
  offset?: number;
  epoch?: string;
}

export interface SubscribeOptions {
  /**
   * History channels: resubscribe with `since` (the last delivered position) after
   * every reconnect, so `publication` events have no gap and no repeat. Default true.
   */
  recover?: boolean;
  /** Start from this position (e.g. one the app stored); `{offset: 0, epoch: ""}` = from the beginning. */
  since?: Position;
}

export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";

export interface SubscribedEvent {
  channel: string;
  /** History channels: the position the subscription started at (the server's last offset). */
  offset?: number;
  epoch?: string;
  /** When resumed with `since`: whether the missed publications follow. */
  recovered?: boolean;
  /** A server-side subscription (token `channels` claim, `POST /api/subscribe`). */
  server: boolean;
}

/** The missed publications cannot be delivered: reload the state from elsewhere. */
export interface UnrecoveredEvent {
  channel: string;
  /**
   * `not_recovered`: the server answered the resume with `recovered: false` (history
   * trimmed, expired, too much missed, or another epoch); `epoch_changed`: a
   * publication of a new epoch arrived (the history was reset); `gap`: a
   * publication skipped offsets the server could not find any more.
   */
  reason: "not_recovered" | "epoch_changed" | "gap";
  /** The last position delivered before. */
  since: Position | null;
  /** The new position: publications continue after it. */
  offset: number;
  epoch: string;
}

export interface UnsubscribedEvent {
  channel: string;
  code?: string;
  reason: string;
}

export interface ClientEvents {
  state: StateEvent;
  /** A server-side subscription appeared (also findable with `getSubscription`). */
  subscribed: import("./subscription.js").Subscription;
  /** Publications on channels without a Subscription object (the personal channel `user:<id>`). */
  publication: Publication;
  error: ShardcastError;
}

export interface SubscriptionEvents {
  publication: Publication;
  join: JoinLeave;
  leave: JoinLeave;
  subscribing: { channel: string; code?: string; reason?: string };
  subscribed: SubscribedEvent;
  unsubscribed: UnsubscribedEvent;
  unrecovered: UnrecoveredEvent;
  /** A subscribe attempt failed (retried when the code is `unavailable`, `limit` or `internal`). */
  error: ShardcastError;
}
