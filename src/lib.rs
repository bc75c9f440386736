//! Folio keeps the workbooks and data sources of a cluster of servers identical.
//!
//! The house, one room a line:
//! - [`config`]: properties file + environment + command line → typed, validated [`config::Config`].
//! - [`store`]: the `folio-store` crate (`crates/store`), re-exported: sled trees of items,
//!   bounded revision history, change log, outbox and meta; write-ahead log and group commit.
//! - [`auth`]: argon2id passwords, sessions, user tokens, login limiting, role extractors.
//! - [`cluster`]: leadership views per mode and terms (fencing).
//! - [`sync`]: save batching, push, change-feed following, reconciliation and the conflict
//!   rules (I1–I4), pure functions the store applies atomically.
//! - [`api`]: HTTP handlers (content, conflicts, sessions, users, backup, operations, the
//!   server-to-server API) and the route table.
//! - [`admin`]: the admin web page, embedded in the binary.
//! - [`app`]: state shared by handlers: lifecycle and metrics.
//! - [`server`]: binds HTTP/HTTPS, runs the app and its lifecycle, stops gracefully.
//! - [`certs`]: a local CA and server certificates so HTTPS can be tried in a minute.
//! - [`client`]: the operator CLI's HTTP client (backup, restore, drain).
//! - [`error`]: the one error table mapping failures to status + `{"error":{code,message}}`.
//! - [`ids`]: the safe id alphabet.

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
