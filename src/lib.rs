//! Folio keeps the workbooks and data sources of a cluster of servers identical.
//!
//! The house, one room a line, from the leaves up (a module imports only those above it in
//! this list, never one below; only `api` and `server` read the application state):
//! - [`store`]: the `folio-store` crate (`crates/store`), re-exported: sled trees of items,
//!   bounded revision history, change log, outbox and meta; write-ahead log and group commit; it
//!   applies the conflict rules it is handed.
//! - [`ids`], [`metrics`], [`error`]: the safe id alphabet; the Prometheus registry; the one
//!   table of error codes and statuses, rendered as `{"error":{code,message}}`.
//! - [`config`]: properties file + environment + command line → typed, validated
//!   [`config::Config`].
//! - [`wire`]: the cluster protocol: headers, the server-token proof, the shapes between servers.
//! - [`cluster`]: leadership views per mode (NONE, FIXED, BULLY's pure engine and runtime,
//!   KUBERNETES), terms (fencing), and `remote`, the client of other servers.
//! - [`sync`]: [`sync::Replication`]: save batching, push, change-feed following,
//!   reconciliation, and the conflict rules (I1–I4) as pure functions the store applies.
//! - [`auth`]: argon2id passwords, sessions, user and server tokens, login limiting, role
//!   extractors, session expiry and which collections keep no history.
//! - [`admin`]: the admin web page's files, embedded in the binary.
//! - [`app`]: the application state handlers share, and the server's lifecycle.
//! - [`api`]: HTTP handlers (content, conflicts, sessions, users, backup, operations, the
//!   server-to-server API, BULLY's heartbeat), the route table and [`api::create_app`].
//! - [`server`]: builds the state ([`server::prepare`]), binds HTTP/HTTPS, runs the app and its
//!   workers, stops gracefully.
//! - [`certs`], [`client`]: a local CA for trying HTTPS; the operator CLI's HTTP client.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod server;
pub use folio_store as store;
pub mod sync;
pub mod wire;

/// Locks a mutex, carrying on with its data when a holder panicked: every mutex here guards state
/// that is whole between statements, so a panic elsewhere is no reason to stop serving.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
