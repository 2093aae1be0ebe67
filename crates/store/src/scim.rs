//! What SCIM reads and writes beside a user's own row: the provider's
//! `externalId`, the name's parts and the emails as sent (`scim_users`,
//! one row per user that SCIM has touched), and the user's times for
//! `meta`. The user itself is written by `users.rs`, as on every path.

use crate::db::{Row, StoreError, Tx};
use crate::users::{self, User};
use crate::{args, ts};

/// A user's SCIM-only attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScimIdentity {
    pub external_id: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The emails as served (a JSON list), when the provider sent some.
    pub emails: Option<String>,
}

/// A user as SCIM serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimUserRow {
    pub user: User,
    pub identity: ScimIdentity,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT u.id, u.email, u.display_name, u.kind, u.status, u.usage_location, u.created_at, u.updated_at, \
     s.external_id, s.given_name, s.family_name, s.emails \
     FROM users u LEFT JOIN scim_users s ON s.org_id = u.org_id AND s.user_id = u.id";

fn row_of(r: &Row) -> Result<ScimUserRow, StoreError> {
    Ok(ScimUserRow {
        user: users::user_from(r)?,
        identity: ScimIdentity {
            external_id: r.opt_text("external_id")?,
            given_name: r.opt_text("given_name")?,
            family_name: r.opt_text("family_name")?,
            emails: r.opt_text("emails")?,
        },
        created_at: r.text("created_at")?,
        updated_at: r.text("updated_at")?,
    })
}

pub async fn get(tx: &mut Tx, org: &str, id: &str) -> Result<Option<ScimUserRow>, StoreError> {
    tx.opt_row(&format!("{SELECT} WHERE u.org_id = $1 AND u.id = $2"), args![org, id])
        .await?
        .as_ref()
        .map(row_of)
        .transpose()
}

/// The user of this email (compared as the unique index does: lower case).
pub async fn by_email(tx: &mut Tx, org: &str, email: &str) -> Result<Option<ScimUserRow>, StoreError> {
    tx.opt_row(
        &format!("{SELECT} WHERE u.org_id = $1 AND u.email_normalized = $2"),
        args![org, email.to_lowercase()],
    )
    .await?
    .as_ref()
    .map(row_of)
    .transpose()
}

/// The users of this `externalId` (exact: it is case-exact, and not unique).
pub async fn by_external_id(tx: &mut Tx, org: &str, external_id: &str) -> Result<Vec<ScimUserRow>, StoreError> {
    tx.rows(
        &format!("{SELECT} WHERE u.org_id = $1 AND s.external_id = $2 ORDER BY u.id"),
        args![org, external_id],
    )
    .await?
    .iter()
    .map(row_of)
    .collect()
}

/// A page of the org's users in id order, after `after`.
pub async fn page(tx: &mut Tx, org: &str, after: &str, limit: i64) -> Result<Vec<ScimUserRow>, StoreError> {
    tx.rows(
        &format!("{SELECT} WHERE u.org_id = $1 AND u.id > $2 ORDER BY u.id LIMIT $3"),
        args![org, after, limit],
    )
    .await?
    .iter()
    .map(row_of)
    .collect()
}

/// Writes a user's SCIM-only attributes (after the user's own row).
pub async fn put_identity(tx: &mut Tx, org: &str, user: &str, i: &ScimIdentity) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO scim_users (org_id, user_id, external_id, given_name, family_name, emails) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (org_id, user_id) DO UPDATE SET external_id = excluded.external_id, given_name = excluded.given_name, \
         family_name = excluded.family_name, emails = excluded.emails",
        args![
            org,
            user,
            i.external_id.as_deref(),
            i.given_name.as_deref(),
            i.family_name.as_deref(),
            i.emails.as_deref()
        ],
    )
    .await?;
    Ok(())
}

/// Marks a user changed now (a change of its SCIM-only attributes alone
/// moves `meta.lastModified` too).
pub async fn touch(tx: &mut Tx, org: &str, user: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE users SET updated_at = $3 WHERE org_id = $1 AND id = $2",
        args![org, user, ts(now)],
    )
    .await?;
    Ok(())
}
