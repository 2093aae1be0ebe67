//! API tokens (stored as hashes only) and idempotency keys.
//!
//! A token's secret is never stored: only its SHA-256 (a random 256-bit
//! secret needs no slow hash). A token may expire and may be revoked; either
//! takes effect on its next use. Idempotency keys belong to one token; a
//! reservation that its request abandoned is taken over after a lease, and
//! a stored answer is forgotten (and purged) after a time to live.

use allot_domain::access::{Principal, Role};

use crate::db::{StoreError, Tx};
use crate::{args, ts};

/// A token to store: only the hash of its secret is kept.
pub struct NewToken<'a> {
    pub id: &'a str,
    pub token_hash: &'a str,
    pub role: Role,
    pub partner: Option<&'a str>,
    pub org: Option<&'a str>,
    pub label: Option<&'a str>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn insert(tx: &mut Tx, t: &NewToken<'_>, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO api_tokens (id, token_hash, role, partner_id, org_id, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![t.id, t.token_hash, t.role.as_str(), t.partner, t.org, t.label, ts(now), t.expires_at.map(ts)],
    )
    .await?;
    Ok(())
}

/// A token as listed (never its secret, which is not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub name: Option<String>,
    pub role: Role,
    pub partner: Option<String>,
    pub org: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The partner of the token's org, if it is bound to an org that has one
    /// (for scope checks: a partner admin manages its customers' tokens).
    pub org_partner: Option<String>,
}

const TOKEN_COLUMNS: &str =
    "t.id, t.label, t.role, t.partner_id, t.org_id, t.created_at, t.last_used_at, t.expires_at, t.revoked_at, o.partner_id AS org_partner_id";
const TOKEN_FROM: &str = "api_tokens t LEFT JOIN orgs o ON o.id = t.org_id";

fn token_info(r: &crate::Row) -> Result<TokenInfo, StoreError> {
    let role = r.text("role")?;
    Ok(TokenInfo {
        id: r.text("id")?,
        name: r.opt_text("label")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Db(format!("unknown role {role:?} stored on a token")))?,
        partner: r.opt_text("partner_id")?,
        org: r.opt_text("org_id")?,
        created_at: r.text("created_at")?,
        last_used_at: r.opt_text("last_used_at")?,
        expires_at: r.opt_text("expires_at")?,
        revoked_at: r.opt_text("revoked_at")?,
        org_partner: r.opt_text("org_partner_id")?,
    })
}

/// The token with `id`, revoked or not.
pub async fn get(tx: &mut Tx, id: &str) -> Result<Option<TokenInfo>, StoreError> {
    tx.opt_row(&format!("SELECT {TOKEN_COLUMNS} FROM {TOKEN_FROM} WHERE t.id = $1"), args![id])
        .await?
        .map(|r| token_info(&r))
        .transpose()
}

/// Tokens not revoked, oldest first, after `cursor` (an id). The caller
/// filters by scope: a deployment has few tokens, read in pages.
pub async fn list_live(tx: &mut Tx, after: Option<&str>, limit: i64) -> Result<Vec<TokenInfo>, StoreError> {
    tx.rows(
        &format!("SELECT {TOKEN_COLUMNS} FROM {TOKEN_FROM} WHERE t.revoked_at IS NULL AND ($1 = '' OR t.id > $1) ORDER BY t.id LIMIT $2"),
        args![after.unwrap_or(""), limit],
    )
    .await?
    .iter()
    .map(token_info)
    .collect()
}

/// The live tokens bound to one org with one role, oldest first.
pub async fn live_of_org(tx: &mut Tx, org: &str, role: Role) -> Result<Vec<TokenInfo>, StoreError> {
    tx.rows(
        &format!("SELECT {TOKEN_COLUMNS} FROM {TOKEN_FROM} WHERE t.revoked_at IS NULL AND t.org_id = $1 AND t.role = $2 ORDER BY t.created_at, t.id"),
        args![org, role.as_str()],
    )
    .await?
    .iter()
    .map(token_info)
    .collect()
}

/// Revokes a token now; false if it was already revoked or does not exist.
pub async fn revoke(tx: &mut Tx, id: &str, now: chrono::DateTime<chrono::Utc>) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            args![id, ts(now)],
        )
        .await?;
    if n == 1 {
        // Servers that cached the token drop it.
        crate::cache_versions::bump(tx, crate::cache_versions::Cached::Tokens).await?;
    }
    Ok(n == 1)
}

/// Notes that a token was used (the caller does it at most once in a while).
pub async fn touch(tx: &mut Tx, id: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1", args![id, ts(now)])
        .await?;
    Ok(())
}

/// A live token as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveToken {
    pub principal: Principal,
    pub last_used_at: Option<String>,
    /// When it stops working, if ever (RFC 3339 as stored).
    pub expires_at: Option<String>,
}

/// The holder of a live token (not revoked, not expired at `now`).
pub async fn principal_by_hash(tx: &mut Tx, token_hash: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Option<LiveToken>, StoreError> {
    let Some(r) = tx
        .opt_row(
            "SELECT id, role, partner_id, org_id, last_used_at, expires_at FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            args![token_hash, ts(now)],
        )
        .await?
    else {
        return Ok(None);
    };
    let role = Role::parse(&r.text("role")?).ok_or_else(|| StoreError::Db("unknown role stored on a token".into()))?;
    Ok(Some(LiveToken {
        principal: Principal {
            token_id: r.text("id")?,
            role,
            partner: r.opt_text("partner_id")?,
            org: r.opt_text("org_id")?,
        },
        last_used_at: r.opt_text("last_used_at")?,
        expires_at: r.opt_text("expires_at")?,
    }))
}

/// The state of an idempotency key for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyState {
    /// First use: the key is now reserved for this request.
    Reserved,
    /// The same key with another request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
    /// The first request finished with this status and body.
    Done { status: u16, body: String },
}

/// How long stored keys last: a reservation whose request neither finished
/// nor released it (the server died) is taken over after `lease`; a stored
/// answer is replayed for `ttl`, then forgotten.
#[derive(Debug, Clone, Copy)]
pub struct KeyTimes {
    pub lease: chrono::Duration,
    pub ttl: chrono::Duration,
}

/// Reserves `key` for this request, or says why not. A key whose answer
/// outlived `ttl`, or whose reservation outlived `lease`, counts as unused.
pub async fn reserve_key(
    tx: &mut Tx,
    token: &str,
    key: &str,
    request_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
    times: KeyTimes,
) -> Result<IdempotencyState, StoreError> {
    let existing = tx
        .opt_row(
            "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE token_id = $1 AND idem_key = $2",
            args![token, key],
        )
        .await?;
    let stale = |r: &crate::Row| -> Result<bool, StoreError> {
        let created = r.text("created_at")?;
        let done = !r.cell_is_null("status");
        let limit = if done { times.ttl } else { times.lease };
        Ok(created < ts(now - limit))
    };
    match existing {
        None => {
            tx.exec(
                "INSERT INTO idempotency_keys (token_id, idem_key, request_hash, status, body, created_at) VALUES ($1, $2, $3, NULL, NULL, $4)",
                args![token, key, request_hash, ts(now)],
            )
            .await?;
            Ok(IdempotencyState::Reserved)
        }
        Some(r) if !stale(&r)? => {
            if r.text("request_hash")? != request_hash {
                return Ok(IdempotencyState::Mismatch);
            }
            match (r.opt_text("body")?, r.cell_is_null("status")) {
                (Some(body), false) => Ok(IdempotencyState::Done {
                    status: u16::try_from(r.int("status")?).unwrap_or(500),
                    body,
                }),
                _ => Ok(IdempotencyState::InProgress),
            }
        }
        // Past its time: the key is taken over for this request.
        Some(_) => {
            tx.exec(
                "UPDATE idempotency_keys SET request_hash = $3, status = NULL, body = NULL, created_at = $4 WHERE token_id = $1 AND idem_key = $2",
                args![token, key, request_hash, ts(now)],
            )
            .await?;
            Ok(IdempotencyState::Reserved)
        }
    }
}

/// Deletes up to `batch` keys created before `before` (answers past their
/// time to live, reservations long abandoned); returns how many went.
pub async fn purge_keys(tx: &mut Tx, before: chrono::DateTime<chrono::Utc>, batch: i64) -> Result<u64, StoreError> {
    tx.exec(
        "DELETE FROM idempotency_keys WHERE (token_id, idem_key) IN
           (SELECT token_id, idem_key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
        args![ts(before), batch],
    )
    .await
}

pub async fn complete_key(tx: &mut Tx, token: &str, key: &str, status: u16, body: &str) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE idempotency_keys SET status = $3, body = $4 WHERE token_id = $1 AND idem_key = $2",
        args![token, key, i64::from(status), body],
    )
    .await?;
    Ok(())
}

/// Frees a key whose request failed before producing an answer worth replaying.
pub async fn release_key(tx: &mut Tx, token: &str, key: &str) -> Result<(), StoreError> {
    tx.exec(
        "DELETE FROM idempotency_keys WHERE token_id = $1 AND idem_key = $2 AND status IS NULL",
        args![token, key],
    )
    .await?;
    Ok(())
}
