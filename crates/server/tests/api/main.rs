//! The conformance story of the HTTP API, run against SQLite and PostgreSQL.
//! Every test below exists twice: `<name>::sqlite` and `<name>::postgres`.

mod kit;
mod ui_kit;

mod admins;
mod browser;
mod browser_bulk;
mod browser_provisioning;
mod browser_webhooks;
mod bulk;
mod catalogue;
mod concurrency;
mod connections;
mod console;
mod console_bulk;
mod console_hub;
mod conventions;
mod customers;
mod entitlements;
mod fields;
mod fuzz;
mod hangup;
mod hub;
mod idempotency;
mod licenses;
mod lows;
mod matrix;
mod moves;
mod queues;
mod resources;
mod rules;
mod scim;
mod search;
mod sheet;
mod store;
mod templates;
mod tenancy;
mod tokens;
mod validation;
mod webhooks;
