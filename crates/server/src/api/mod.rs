//! JSON API handlers: each parses its input, calls one use case, presents the result.

pub mod audit;
pub mod catalogue;
pub mod customers;
pub mod jobs;
pub mod licenses;
pub mod provisioning;
pub mod purchases;
pub mod queues;
pub mod service_data;
pub mod sheet_export;
pub mod sheet_import;
pub mod subscription_cancel;
pub mod subscriptions;
pub mod templates;
pub mod tenants;
pub mod tokens;
pub mod users;
