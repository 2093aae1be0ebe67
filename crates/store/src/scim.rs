//! What SCIM reads and writes beside a user's own row: the `userName`
//! as sent when it is not the email, the provider's `externalId`, the name's parts and the emails as sent (`scim_users`,
//! one row per user that SCIM has touched), and the user's times for
//! `meta`. The user itself is written by `users.rs`, as on every path.

use crate::db::{Row, StoreError, Tx, Val};
use crate::users::{self, User};
use crate::{args, ts};

/// A user's SCIM-only attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScimIdentity {
    /// The `userName` as sent, when it is not the user's email.
    pub user_name: Option<String>,
    pub external_id: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// `name.formatted` as sent.
    pub formatted_name: Option<String>,
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
     s.user_name, s.external_id, s.given_name, s.family_name, s.formatted_name, s.emails \
     FROM users u LEFT JOIN scim_users s ON s.org_id = u.org_id AND s.user_id = u.id";

fn row_of(r: &Row) -> Result<ScimUserRow, StoreError> {
    Ok(ScimUserRow {
        user: users::user_from(r)?,
        identity: ScimIdentity {
            user_name: r.opt_text("user_name")?,
            external_id: r.opt_text("external_id")?,
            given_name: r.opt_text("given_name")?,
            family_name: r.opt_text("family_name")?,
            formatted_name: r.opt_text("formatted_name")?,
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

/// The user of this `userName` (without regard to case): one whose
/// userName was kept as sent, or else one whose email it is.
pub async fn by_user_name(tx: &mut Tx, org: &str, user_name: &str) -> Result<Option<ScimUserRow>, StoreError> {
    if let Some(id) = kept_user_name(tx, org, user_name).await? {
        return get(tx, org, &id).await;
    }
    Ok(tx
        .opt_row(
            &format!("{SELECT} WHERE u.org_id = $1 AND u.email_normalized = $2"),
            args![org, user_name.to_lowercase()],
        )
        .await?
        .as_ref()
        .map(row_of)
        .transpose()?
        .filter(|row| row.identity.user_name.is_none()))
}

/// The user whose `userName` was kept as sent and equals this one
/// (without regard to case): one indexed read of `scim_users` alone.
pub async fn kept_user_name(tx: &mut Tx, org: &str, user_name: &str) -> Result<Option<String>, StoreError> {
    tx.opt_row(
        "SELECT user_id FROM scim_users WHERE org_id = $1 AND user_name_normalized = $2",
        args![org, user_name.to_lowercase()],
    )
    .await?
    .map(|r| r.text("user_id"))
    .transpose()
}

/// Whether another user of the org than `except` has this `userName`.
pub async fn user_name_taken(tx: &mut Tx, org: &str, user_name: &str, except: &str) -> Result<bool, StoreError> {
    Ok(by_user_name(tx, org, user_name).await?.is_some_and(|row| row.user.id != except))
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
        "INSERT INTO scim_users (org_id, user_id, external_id, given_name, family_name, emails, user_name, user_name_normalized, formatted_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (org_id, user_id) DO UPDATE SET external_id = excluded.external_id, given_name = excluded.given_name, \
         family_name = excluded.family_name, emails = excluded.emails, user_name = excluded.user_name, \
         user_name_normalized = excluded.user_name_normalized, formatted_name = excluded.formatted_name",
        args![
            org,
            user,
            i.external_id.as_deref(),
            i.given_name.as_deref(),
            i.family_name.as_deref(),
            i.emails.as_deref(),
            i.user_name.as_deref(),
            i.user_name.as_ref().map(|n| n.to_lowercase()),
            i.formatted_name.as_deref()
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

/// A group as SCIM serves it: an Allot group and its members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScimGroupRow {
    pub id: String,
    pub name: String,
    pub external_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Member user ids, in id order.
    pub members: Vec<String>,
}

const GROUP_SELECT: &str =
    "SELECT g.id, g.name, g.external_id, g.created_at, COALESCE(g.updated_at, g.created_at) AS updated_at FROM org_groups g";

fn group_of(r: &Row) -> Result<ScimGroupRow, StoreError> {
    Ok(ScimGroupRow {
        id: r.text("id")?,
        name: r.text("name")?,
        external_id: r.opt_text("external_id")?,
        created_at: r.text("created_at")?,
        updated_at: r.text("updated_at")?,
        members: Vec::new(),
    })
}

/// Fills in the members of these groups (one query).
async fn with_members(tx: &mut Tx, org: &str, mut groups: Vec<ScimGroupRow>) -> Result<Vec<ScimGroupRow>, StoreError> {
    if groups.is_empty() {
        return Ok(groups);
    }
    let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
    let list = tx.any_of("m.group_id", 2);
    let rows = tx
        .rows(
            &format!("SELECT m.group_id, m.user_id FROM group_members m WHERE m.org_id = $1 AND {list} ORDER BY m.group_id, m.user_id"),
            &[Val::from(org), Val::texts(&ids)],
        )
        .await?;
    for r in &rows {
        let g = r.text("group_id")?;
        if let Some(group) = groups.iter_mut().find(|x| x.id == g) {
            group.members.push(r.text("user_id")?);
        }
    }
    Ok(groups)
}

pub async fn get_group(tx: &mut Tx, org: &str, id: &str) -> Result<Option<ScimGroupRow>, StoreError> {
    let Some(r) = tx
        .opt_row(&format!("{GROUP_SELECT} WHERE g.org_id = $1 AND g.id = $2"), args![org, id])
        .await?
    else {
        return Ok(None);
    };
    Ok(with_members(tx, org, vec![group_of(&r)?]).await?.pop())
}

/// A page of the org's groups in id order, after `after`, with members.
pub async fn groups_page(tx: &mut Tx, org: &str, after: &str, limit: i64) -> Result<Vec<ScimGroupRow>, StoreError> {
    let rows = tx
        .rows(
            &format!("{GROUP_SELECT} WHERE g.org_id = $1 AND g.id > $2 ORDER BY g.id LIMIT $3"),
            args![org, after, limit],
        )
        .await?;
    let groups = rows.iter().map(group_of).collect::<Result<Vec<_>, _>>()?;
    with_members(tx, org, groups).await
}

/// Writes a new group (its members apart, see [`set_members`]). A name
/// taken is `StoreError::Unique`.
pub async fn insert_group(
    tx: &mut Tx,
    org: &str,
    id: &str,
    name: &str,
    external_id: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO org_groups (org_id, id, name, external_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        args![org, id, name, external_id, ts(now)],
    )
    .await?;
    Ok(())
}

pub async fn update_group(
    tx: &mut Tx,
    org: &str,
    id: &str,
    name: &str,
    external_id: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE org_groups SET name = $3, external_id = $4, updated_at = $5 WHERE org_id = $1 AND id = $2",
        args![org, id, name, external_id, ts(now)],
    )
    .await?;
    Ok(())
}

/// Adds and removes members (users of the org; the caller checked them).
pub async fn set_members(tx: &mut Tx, org: &str, group: &str, add: &[String], remove: &[String]) -> Result<(), StoreError> {
    // One statement each way, whatever the number of members (`WHERE TRUE`:
    // SQLite reads `ON CONFLICT` after a bare `SELECT ... FROM` as a join's).
    if !add.is_empty() {
        let source = match tx.backend() {
            crate::Backend::Postgres => "unnest($3::text[]) AS m(user_id)",
            crate::Backend::Sqlite => "(SELECT value AS user_id FROM json_each($3)) AS m",
        };
        tx.exec(
            &format!("INSERT INTO group_members (org_id, group_id, user_id) SELECT $1, $2, m.user_id FROM {source} WHERE TRUE ON CONFLICT DO NOTHING"),
            &[Val::from(org), Val::from(group), Val::texts(add)],
        )
        .await?;
    }
    if !remove.is_empty() {
        let list = tx.any_of("user_id", 3);
        tx.exec(
            &format!("DELETE FROM group_members WHERE org_id = $1 AND group_id = $2 AND {list}"),
            &[Val::from(org), Val::from(group), Val::texts(remove)],
        )
        .await?;
    }
    for u in add.iter().chain(remove) {
        tx.note(|c| c.user(org, u));
    }
    Ok(())
}

// ---- What the identity provisioning page shows ------------------------

/// One SCIM request that failed, or one licence change a SCIM change could
/// not make (the identity change itself went through).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScimErrorRow {
    pub at: String,
    /// The token that sent it.
    pub actor: String,
    /// Method and path, e.g. `PATCH /Users/usr_...`.
    pub request: String,
    /// The HTTP status answered.
    pub status: i64,
    pub scim_type: Option<String>,
    pub detail: String,
}

/// How many of an org's last errors are kept.
pub const ERRORS_KEPT: i64 = 50;

/// Records one error and keeps only the org's newest [`ERRORS_KEPT`].
pub async fn record_error(tx: &mut Tx, org: &str, e: &ScimErrorRow) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO scim_errors (org_id, id, at, actor, request, status, scim_type, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![
            org,
            crate::new_id("scimerr"),
            &e.at,
            &e.actor,
            &e.request,
            e.status,
            e.scim_type.as_deref(),
            &e.detail
        ],
    )
    .await?;
    tx.exec(
        "DELETE FROM scim_errors WHERE org_id = $1 AND id NOT IN \
         (SELECT id FROM scim_errors WHERE org_id = $1 ORDER BY at DESC, id DESC LIMIT $2)",
        args![org, ERRORS_KEPT],
    )
    .await?;
    Ok(())
}

/// The org's newest errors, newest first.
pub async fn recent_errors(tx: &mut Tx, org: &str, limit: i64) -> Result<Vec<ScimErrorRow>, StoreError> {
    let rows = tx
        .rows(
            "SELECT at, actor, request, status, scim_type, detail FROM scim_errors WHERE org_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
            args![org, limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ScimErrorRow {
                at: r.text("at")?,
                actor: r.text("actor")?,
                request: r.text("request")?,
                status: r.int("status")?,
                scim_type: r.opt_text("scim_type")?,
                detail: r.text("detail")?,
            })
        })
        .collect()
}

/// When any SCIM token of the org (revoked ones too) was last used.
pub async fn last_sync(tx: &mut Tx, org: &str) -> Result<Option<String>, StoreError> {
    let r = tx
        .opt_row(
            "SELECT MAX(last_used_at) AS at FROM api_tokens WHERE org_id = $1 AND role = 'scim'",
            args![org],
        )
        .await?;
    match r {
        Some(r) => r.opt_text("at"),
        None => Ok(None),
    }
}
