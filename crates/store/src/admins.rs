//! Admin accounts (the people who sign in to the console) and their sessions.
//!
//! An admin has exactly the role and scope an API token can have. Its
//! password is kept only as an argon2id hash (made by the caller: hashing
//! is CPU work that does not belong in a transaction). A session's secret
//! lives only in the browser's cookie; the database keeps its SHA-256, so
//! that a copy of the database signs nobody in, and deleting the row ends
//! the session at once (signing out, removing the account).

use allot_domain::access::{Principal, Role};

use crate::db::{StoreError, Tx};
use crate::{args, ts};

/// An admin account as listed and signed in (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub partner: Option<String>,
    pub org: Option<String>,
    pub created_at: String,
    pub last_sign_in_at: Option<String>,
}

impl Admin {
    /// What the admin may do: the same principal a token of the same role
    /// and scope has. Its id is prefixed so that the audit log and the
    /// rate limiter tell it from a token's.
    pub fn principal(&self) -> Principal {
        Principal {
            token_id: format!("admin:{}", self.id),
            role: self.role,
            partner: self.partner.clone(),
            org: self.org.clone(),
        }
    }
}

const COLUMNS: &str = "id, email, display_name, role, partner_id, org_id, created_at, last_sign_in_at";

fn admin_from(r: &crate::Row) -> Result<Admin, StoreError> {
    let role = r.text("role")?;
    Ok(Admin {
        id: r.text("id")?,
        email: r.text("email")?,
        display_name: r.text("display_name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Db(format!("an admin has the unknown role {role:?}")))?,
        partner: r.opt_text("partner_id")?,
        org: r.opt_text("org_id")?,
        created_at: r.text("created_at")?,
        last_sign_in_at: r.opt_text("last_sign_in_at")?,
    })
}

/// An account to create; `password_hash` is an argon2id PHC string.
pub struct NewAdmin<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub display_name: &'a str,
    pub role: Role,
    pub partner: Option<&'a str>,
    pub org: Option<&'a str>,
    pub password_hash: Option<&'a str>,
}

/// Emails compare without case: `Ada@Example.com` and `ada@example.com`
/// are one account.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub async fn insert(tx: &mut Tx, a: &NewAdmin<'_>, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO admins (id, email, email_normalized, display_name, role, partner_id, org_id, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        args![
            a.id,
            a.email.trim(),
            normalize_email(a.email),
            a.display_name,
            a.role.as_str(),
            a.partner,
            a.org,
            a.password_hash,
            ts(now)
        ],
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique(_) => allot_domain::Error::new(
            allot_domain::Code::Conflict,
            format!("An admin with email {} already exists.", a.email.trim()),
        )
        .into(),
        other => other,
    })?;
    Ok(())
}

pub async fn get(tx: &mut Tx, id: &str) -> Result<Option<Admin>, StoreError> {
    tx.opt_row(&format!("SELECT {COLUMNS} FROM admins WHERE id = $1"), args![id])
        .await?
        .map(|r| admin_from(&r))
        .transpose()
}

/// The account with this email and its password hash, for signing in.
pub async fn for_sign_in(tx: &mut Tx, email: &str) -> Result<Option<(Admin, Option<String>)>, StoreError> {
    let Some(r) = tx
        .opt_row(
            &format!("SELECT {COLUMNS}, password_hash FROM admins WHERE email_normalized = $1"),
            args![normalize_email(email)],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((admin_from(&r)?, r.opt_text("password_hash")?)))
}

pub async fn note_sign_in(tx: &mut Tx, id: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec("UPDATE admins SET last_sign_in_at = $2 WHERE id = $1", args![id, ts(now)])
        .await?;
    Ok(())
}

/// A session to store: the hash of its secret and the CSRF token its forms carry.
pub async fn insert_session(
    tx: &mut Tx,
    id_hash: &str,
    admin: &str,
    csrf_token: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO admin_sessions (id_hash, admin_id, csrf_token, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $4)",
        args![id_hash, admin, csrf_token, ts(now)],
    )
    .await?;
    Ok(())
}

/// A live session: its admin, its CSRF token, and when it was last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub admin: Admin,
    pub csrf_token: String,
    pub last_seen_at: String,
}

/// The session with this hash if it was seen after `idle_since` (an
/// older one has expired; it is purged by [`end_idle_sessions`]).
pub async fn session(tx: &mut Tx, id_hash: &str, idle_since: chrono::DateTime<chrono::Utc>) -> Result<Option<LiveSession>, StoreError> {
    let columns = COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
    let Some(r) = tx
        .opt_row(
            &format!(
                "SELECT {columns}, s.csrf_token, s.last_seen_at FROM admin_sessions s JOIN admins a ON a.id = s.admin_id \
                 WHERE s.id_hash = $1 AND s.last_seen_at > $2"
            ),
            args![id_hash, ts(idle_since)],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(LiveSession {
        admin: admin_from(&r)?,
        csrf_token: r.text("csrf_token")?,
        last_seen_at: r.text("last_seen_at")?,
    }))
}

/// Notes that a session was used (the caller does it at most once a minute).
pub async fn touch_session(tx: &mut Tx, id_hash: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE admin_sessions SET last_seen_at = $2 WHERE id_hash = $1",
        args![id_hash, ts(now)],
    )
    .await?;
    Ok(())
}

pub async fn end_session(tx: &mut Tx, id_hash: &str) -> Result<(), StoreError> {
    tx.exec("DELETE FROM console_selections WHERE session_hash = $1", args![id_hash])
        .await?;
    tx.exec("DELETE FROM admin_sessions WHERE id_hash = $1", args![id_hash]).await?;
    Ok(())
}

/// Ends every session of an admin (removed, or its password changed).
pub async fn end_sessions_of(tx: &mut Tx, admin: &str) -> Result<u64, StoreError> {
    tx.exec(
        "DELETE FROM console_selections WHERE session_hash IN (SELECT id_hash FROM admin_sessions WHERE admin_id = $1)",
        args![admin],
    )
    .await?;
    tx.exec("DELETE FROM admin_sessions WHERE admin_id = $1", args![admin]).await
}

/// Deletes sessions idle since before `idle_since`; returns how many went.
pub async fn end_idle_sessions(tx: &mut Tx, idle_since: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
    tx.exec(
        "DELETE FROM console_selections WHERE session_hash IN (SELECT id_hash FROM admin_sessions WHERE last_seen_at <= $1)",
        args![ts(idle_since)],
    )
    .await?;
    tx.exec("DELETE FROM admin_sessions WHERE last_seen_at <= $1", args![ts(idle_since)])
        .await
}

/// Sets an admin's password hash; false if there is no such admin.
pub async fn set_password(tx: &mut Tx, id: &str, password_hash: &str) -> Result<bool, StoreError> {
    Ok(tx
        .exec("UPDATE admins SET password_hash = $2 WHERE id = $1", args![id, password_hash])
        .await?
        == 1)
}

/// An admin as the admin pages list it: the account, the partner of its
/// org (for a partner's scope) and whether it still waits for its
/// invitation to be accepted (no password yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEntry {
    pub admin: Admin,
    pub org_partner: Option<String>,
    pub invitation_pending: bool,
}

fn entry_columns() -> String {
    let columns = COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
    format!("{columns}, o.partner_id AS org_partner, CASE WHEN a.password_hash IS NULL THEN 1 ELSE 0 END AS pending")
}

fn entry_from(r: &crate::Row) -> Result<AdminEntry, StoreError> {
    Ok(AdminEntry {
        admin: admin_from(r)?,
        org_partner: r.opt_text("org_partner")?,
        invitation_pending: r.int("pending")? == 1,
    })
}

/// Which admins a list holds: those of one tenant's scope (everyone for
/// the provider, a partner's own and its customers' admins, an org's
/// own), narrowed to one partner's or one org's accounts if asked.
#[derive(Debug, Clone, Default)]
pub struct AdminFilter<'a> {
    /// Only admins bound to this partner or to one of its orgs.
    pub within_partner: Option<&'a str>,
    /// Only admins bound to this org.
    pub within_org: Option<&'a str>,
    /// Only admins bound to exactly this partner (not its orgs).
    pub partner: Option<&'a str>,
    /// Only admins bound to exactly this org.
    pub org: Option<&'a str>,
    /// Only admins bound to no tenant (provider admins).
    pub provider_only: bool,
}

/// A page of admins by id after `after`, `limit` of them (plus one, which
/// says there are more).
pub async fn list(tx: &mut Tx, f: &AdminFilter<'_>, after: Option<&str>, limit: i64) -> Result<Vec<AdminEntry>, StoreError> {
    let mut conditions = Vec::new();
    let mut values: Vec<crate::Val> = Vec::new();
    let bind = |sql: &str, v: &str, values: &mut Vec<crate::Val>, conditions: &mut Vec<String>| {
        values.push(crate::Val::from(v));
        conditions.push(sql.replace('?', &format!("${}", values.len())));
    };
    if let Some(p) = f.within_partner {
        bind("(a.partner_id = ? OR o.partner_id = ?)", p, &mut values, &mut conditions);
    }
    if let Some(o) = f.within_org {
        bind("a.org_id = ?", o, &mut values, &mut conditions);
    }
    if let Some(p) = f.partner {
        bind("a.partner_id = ?", p, &mut values, &mut conditions);
    }
    if let Some(o) = f.org {
        bind("a.org_id = ?", o, &mut values, &mut conditions);
    }
    if f.provider_only {
        conditions.push("a.partner_id IS NULL AND a.org_id IS NULL".to_string());
    }
    if let Some(a) = after {
        bind("a.id > ?", a, &mut values, &mut conditions);
    }
    values.push(crate::Val::from(limit + 1));
    let where_ = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let rows = tx
        .rows(
            &format!(
                "SELECT {} FROM admins a LEFT JOIN orgs o ON o.id = a.org_id {where_} ORDER BY a.id LIMIT ${}",
                entry_columns(),
                values.len()
            ),
            &values,
        )
        .await?;
    rows.iter().map(entry_from).collect()
}

pub async fn get_entry(tx: &mut Tx, id: &str) -> Result<Option<AdminEntry>, StoreError> {
    tx.opt_row(
        &format!(
            "SELECT {} FROM admins a LEFT JOIN orgs o ON o.id = a.org_id WHERE a.id = $1",
            entry_columns()
        ),
        args![id],
    )
    .await?
    .map(|r| entry_from(&r))
    .transpose()
}

/// Changes an admin's role and display name (the binding to its tenant
/// never changes); false if there is no such admin.
pub async fn update(tx: &mut Tx, id: &str, role: Role, display_name: &str) -> Result<bool, StoreError> {
    Ok(tx
        .exec(
            "UPDATE admins SET role = $2, display_name = $3 WHERE id = $1",
            args![id, role.as_str(), display_name],
        )
        .await?
        == 1)
}

/// Removes an admin with its sessions and invitations: whoever was signed
/// in as them is signed out at once. False if there was no such admin.
pub async fn delete(tx: &mut Tx, id: &str) -> Result<bool, StoreError> {
    end_sessions_of(tx, id).await?;
    tx.exec("DELETE FROM admin_invitations WHERE admin_id = $1", args![id]).await?;
    Ok(tx.exec("DELETE FROM admins WHERE id = $1", args![id]).await? == 1)
}

/// Stores an invitation link's hash for an admin.
pub async fn insert_invitation(
    tx: &mut Tx,
    id_hash: &str,
    admin: &str,
    created_by: &str,
    now: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO admin_invitations (id_hash, admin_id, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        args![id_hash, admin, created_by, ts(now), ts(expires_at)],
    )
    .await?;
    Ok(())
}

/// The admin an unexpired invitation with this hash is for, and when it
/// expires.
pub async fn invitation(tx: &mut Tx, id_hash: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Option<(Admin, String)>, StoreError> {
    let columns = COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
    let Some(r) = tx
        .opt_row(
            &format!(
                "SELECT {columns}, i.expires_at AS invitation_expires_at FROM admin_invitations i JOIN admins a ON a.id = i.admin_id \
                 WHERE i.id_hash = $1 AND i.expires_at > $2"
            ),
            args![id_hash, ts(now)],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((admin_from(&r)?, r.text("invitation_expires_at")?)))
}

/// Uses up an invitation: deletes it (and any other of the same admin);
/// false if it was gone already (used by a concurrent request, or expired
/// and purged), so that a link works exactly once.
pub async fn take_invitation(tx: &mut Tx, id_hash: &str, admin: &str) -> Result<bool, StoreError> {
    let taken = tx.exec("DELETE FROM admin_invitations WHERE id_hash = $1", args![id_hash]).await? == 1;
    tx.exec("DELETE FROM admin_invitations WHERE admin_id = $1", args![admin]).await?;
    Ok(taken)
}

/// Deletes invitations that expired before `now`; returns how many went.
pub async fn end_expired_invitations(tx: &mut Tx, now: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM admin_invitations WHERE expires_at <= $1", args![ts(now)])
        .await
}
