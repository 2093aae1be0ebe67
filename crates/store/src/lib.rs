//! The only place in Allot that speaks SQL.
//!
//! One code base serves SQLite (embedded default) and PostgreSQL: every query
//! is one SQL text with `$n` placeholders that both accept; values cross the
//! boundary as [`Val`] and come back as [`Row`]s. Where the two engines truly
//! differ (row locks, transaction start, bulk loading) [`Tx::backend`] says
//! which one is speaking.
//!
//! Every write happens inside [`in_transaction!`], which retries the whole
//! unit of work on serialization failures, deadlocks and busy errors.

pub mod admins;
pub mod audit;
pub mod cache_versions;
pub mod catalogue;
pub mod changes;
pub mod customers;
mod db;
pub mod entitlements;
mod error;
mod filtered;
pub mod grants;
pub mod jobs;
pub mod license_epochs;
pub mod licenses;
mod migrations;
pub mod presence;
pub mod purchases;
pub mod queues;
mod retry;
pub mod scim;
pub mod selections;
pub mod service_data;
mod shelf;
pub mod signing_keys;
pub mod subscriptions;
pub mod templates;
pub mod tenants;
pub mod tokens;
mod tx;
pub mod usage;
pub mod users;
mod values;
pub mod webhooks;
mod writer;

pub use db::{backoff, finish, new_id, Backend, Outcome, PreparedRows, Row, Store, StoreError, StoreOptions, Tx, Val};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `s` as a `LIKE … ESCAPE '\'` pattern that matches it literally: its
/// `%` and `_` are no wildcards.
pub fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Timestamps are stored as fixed-width RFC 3339 UTC text so that both engines
/// compare and sort them as strings.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}
