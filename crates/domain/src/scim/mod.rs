//! SCIM 2.0 (RFC 7643 / 7644) rules that need no database: the filter
//! grammar. The wire shapes and the mapping to Allot's users and groups
//! live with the server's SCIM surface; what a change does to licences is
//! the planner's, as on every other path.

pub mod eval;
pub mod filter;
pub mod group;
pub mod user;
