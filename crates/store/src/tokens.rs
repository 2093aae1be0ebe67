//! API tokens (stored as hashes only) and idempotency keys.

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
}

pub async fn insert(tx: &mut Tx, t: &NewToken<'_>, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO api_tokens (id, token_hash, role, partner_id, org_id, label, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![t.id, t.token_hash, t.role.as_str(), t.partner, t.org, t.label, ts(now)],
    )
    .await?;
    Ok(())
}

pub async fn principal_by_hash(tx: &mut Tx, token_hash: &str) -> Result<Option<Principal>, StoreError> {
    let Some(r) = tx
        .opt_row(
            "SELECT id, role, partner_id, org_id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            args![token_hash],
        )
        .await?
    else {
        return Ok(None);
    };
    let role = Role::parse(&r.text(1)?).ok_or_else(|| StoreError::Db("unknown role stored on a token".into()))?;
    Ok(Some(Principal {
        token_id: r.text(0)?,
        role,
        partner: r.opt_text(2)?,
        org: r.opt_text(3)?,
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

pub async fn reserve_key(
    tx: &mut Tx,
    token: &str,
    key: &str,
    request_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IdempotencyState, StoreError> {
    let existing = tx
        .opt_row(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE token_id = $1 AND idem_key = $2",
            args![token, key],
        )
        .await?;
    match existing {
        None => {
            tx.exec(
                "INSERT INTO idempotency_keys (token_id, idem_key, request_hash, status, body, created_at) VALUES ($1, $2, $3, NULL, NULL, $4)",
                args![token, key, request_hash, ts(now)],
            )
            .await?;
            Ok(IdempotencyState::Reserved)
        }
        Some(r) if r.text(0)? != request_hash => Ok(IdempotencyState::Mismatch),
        Some(r) => match (r.opt_text(2)?, r.cell_is_null(1)) {
            (Some(body), false) => Ok(IdempotencyState::Done {
                status: u16::try_from(r.int(1)?).unwrap_or(500),
                body,
            }),
            _ => Ok(IdempotencyState::InProgress),
        },
    }
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
