//! Allot's domain: plain Rust with no I/O, no clock and no async.
//!
//! Everything that decides something lives here so that it can be read, tested
//! and property-tested alone: the types that parse (`Email`, `ProductCode`,
//! `CountryCode`), the catalogue and its rules, subscription status derivation
//! (which takes `today` as an argument), the access table (role × action), the
//! licence-change planner and the one error type every layer presents.

pub mod access;
pub mod bulk;
pub mod catalogue;
pub mod entitlements;
pub mod error;
pub mod planner;
pub mod scim;
pub mod sheet;
pub mod status;
pub mod templates;
pub mod types;
pub mod webhooks;

pub use error::{Code, Error, Violation};
