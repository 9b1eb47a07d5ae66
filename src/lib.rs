//! shardcast: a WebSocket fan-out service on Redis sharded pub/sub (a Redis Cluster,
//! one Redis server, or a Sentinel-watched primary; or in-process for one instance).
//!
//! Data flows one way: socket → [`session`] → [`node`] → [`broker`] → Redis →
//! broker events → [`hub`] → each session's [`outbox`] → socket. The import graph
//! follows it: every module imports only modules listed before it here, and
//! `tests/module_graph.rs` fails when one does not.
//!
//! Foundations (no shardcast imports above them):
//! * [`channel`]     the validated [`channel::Channel`] and [`channel::UserId`] names.
//! * [`slot`]        Redis Cluster hash slots and per-slot key tags.
//! * [`shutdown`]    the shutdown signal every long-lived task listens to.
//! * [`codes`]       the catalogue of error codes and WebSocket close codes.
//! * [`publication`] the domain types: a publication, a publish acknowledgement.
//! * [`history`]     offsets, epochs and retention; a history page.
//! * [`namespace`]   namespaces and their options (history, who may subscribe/publish, presence).
//! * [`config`]      flags, their `SHARDCAST_*` environment equivalents, the TOML file.
//! * [`metrics`]     Prometheus metrics, created once and shared.
//! * [`identity`]    who a connection is: user, client id, public info.
//! * [`presence`]    presence entries and the local members table (pure bookkeeping).
//! * [`auth`]        connection and subscription tokens, API keys, origins.
//! * [`policy`]      who may subscribe or publish where: pure decisions.
//! * [`limits`]      token buckets and connection counters.
//! * [`protocol`]    client protocol v1: parsing client frames, encoding server frames.
//! * [`outbox`]      a connection's bounded outbound queue (the slow-consumer guard).
//!
//! Roles:
//! * [`broker`]      the rest of the deployment: [`broker::memory`] (embedded) and
//!   [`broker::redis`] (Redis Cluster, one server or Sentinel: one implementation);
//!   talks back through [`broker::BrokerEventHandler`] only.
//! * [`hub`]         this instance's local fan-out table; serializes each message once.
//! * [`node`]        ties hub and broker: the per-channel gate, subscribe, publish,
//!   the gap filler; implements the broker's event handler.
//! * [`session`]     one WebSocket connection: reader, writer, publish pipeline.
//! * [`http`]        the warp routes: `/ws` (the upgrade), `/api/*`, health, metrics.
//! * [`server`]      `server::run(listener, config, shutdown)`, the one entry point.

pub mod auth;
pub mod broker;
pub mod channel;
pub mod codes;
pub mod config;
pub mod history;
pub mod http;
pub mod hub;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod namespace;
pub mod node;
pub mod outbox;
pub mod policy;
pub mod presence;
pub mod protocol;
pub mod publication;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod slot;
