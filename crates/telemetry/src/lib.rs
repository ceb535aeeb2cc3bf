//! What tlsgate tells its operators while it runs.
//!
//! - [`metrics`]: Prometheus families, one process-wide set;
//! - [`conns`]: the table of live connections behind the status page;
//! - [`status`]: the status page's model and its HTML;
//! - [`inline`]: the inline engine's tables and counters, for the pages and `/metrics`;
//! - [`fleet`]: the fleet's shared session state (Redis reachable, ticket keys held);
//! - [`admin`]: the admin listener serving `/healthz`, `/metrics` and `/status`.

pub mod admin;
pub mod conns;
pub mod fleet;
pub mod inline;
pub mod metrics;
pub mod status;
