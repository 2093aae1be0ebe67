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
    tx.exec("DELETE FROM admin_sessions WHERE id_hash = $1", args![id_hash]).await?;
    Ok(())
}

/// Ends every session of an admin (removed, or its password changed).
pub async fn end_sessions_of(tx: &mut Tx, admin: &str) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM admin_sessions WHERE admin_id = $1", args![admin]).await
}

/// Deletes sessions idle since before `idle_since`; returns how many went.
pub async fn end_idle_sessions(tx: &mut Tx, idle_since: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
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
