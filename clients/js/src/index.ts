export { Shardcast } from "./client.js";
export { Subscription } from "./subscription.js";
export { ShardcastError } from "./errors.js";
export { backoff } from "./backoff.js";
export type {
  ClientEvents,
  ConnectionState,
  HistoryPage,
  JoinLeave,
  Member,
  Position,
  PresenceStats,
  Publication,
  PublishResult,
  ShardcastOptions,
  StateEvent,
  SubscribedEvent,
  SubscribeOptions,
  SubscriptionEvents,
  SubscriptionState,
  UnrecoveredEvent,
  UnsubscribedEvent,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";
