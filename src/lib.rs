//! secret-broker: a secrets broker sidecar. Platform components write
//! secrets they can never read back; task pods read only their own scope.
//!
//! Layers, outermost first: `server` (socket, limits, shutdown) → `api`
//! (HTTP, the only place errors become status codes) → `identity` (who) →
//! `authz` (Cedar: may they) → `store` (where values live).

pub mod authz;
pub mod identity;
pub mod secret;
pub mod store;
