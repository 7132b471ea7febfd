//! secret-broker: a secrets broker sidecar. Platform components write
//! secrets they can never read back; task pods read only their own scope.
//!
//! Layers, outermost first: `server` (socket, limits, shutdown) → `api`
//! (HTTP; the only place errors become status codes) → `identity` (who) →
//! `broker` + `authz` (Cedar: may they; the store is reachable only with a
//! `Permitted` proof) → `store` (where values live). `audit` records every
//! request; `secret` owns the byte and path types every layer shares.

pub mod alloc;
pub mod api;
pub mod audit;
pub mod authz;
pub mod broker;
pub mod cli;
pub mod config;
pub mod hardening;
pub mod identity;
pub mod inject;
pub(crate) mod json;
pub mod metrics;
pub mod run;
pub mod secret;
pub mod server;
pub(crate) mod shard;
pub mod store;
pub mod upload;
pub mod webhook;
