/**
 * The error every failed request rejects with, and what `error` events carry.
 *
 * `code` is the server's error code (`forbidden`, `too_large`, `limit`,
 * `unavailable`, `no_history`, `no_presence`, `too_many_members`, `not_subscribed`,
 * `bad_request`, `unauthorized`, `token_expired`, ...) or one of the client's own:
 * `timeout` (no answer in time), `disconnected` (the connection closed before the
 * answer: the outcome is unknown), `unsubscribed` (the subscription ended),
 * `token` (getToken / getSubscriptionToken failed).
 */
export class ShardcastError extends Error {
  readonly code: string;
  constructor(code: string, message?: string) {
    super(message || code);
    this.name = "ShardcastError";
    this.code = code;
  }
}
