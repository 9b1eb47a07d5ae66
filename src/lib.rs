//! shardcast: a WebSocket fan-out service on Redis Cluster sharded pub/sub.
//!
//! Module map (data flows one way: socket -> session -> node/broker -> hub -> sessions):
//!
//! * [`config`]   command-line flags and their `SHARDCAST_*` environment equivalents.
//! * [`channel`]  the validated [`channel::Channel`] and [`channel::UserId`] newtypes.
//! * [`protocol`] client protocol v1: every frame a client may send or receive.
//! * [`outbox`]   a connection's bounded outbound queue (the slow-consumer guard).
//! * [`hub`]      this node's local subscribers per channel; serializes each message once.
//! * [`history`]  offsets, epochs and retention per namespace; the in-memory store.
//! * [`broker`]   the interface to the rest of the deployment, with the in-process
//!   [`broker::memory`] broker and the Redis Cluster [`broker::cluster`] broker.
//! * [`slot`], [`topology`] Redis Cluster hash slots and the slot map.
//! * [`node`]     ties hub and broker together: subscribe/unsubscribe/publish for sessions.
//! * [`session`]  one WebSocket connection: reader, writer, keepalive.
//! * [`http`]     the warp routes: `/ws`, `/api/*`, `/healthz`, `/readyz`, `/metrics`.
//! * [`server`]   `server::run(listener, config, shutdown)`, the one entry point.
//! * [`shutdown`] the shutdown signal every long-lived task listens to.
//! * [`metrics`]  Prometheus metrics, created once and shared.

pub mod broker;
pub mod channel;
pub mod config;
pub mod history;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod protocol;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod slot;
pub mod topology;
