//! The Ed25519 keys that sign offline entitlement tokens, as rows: the
//! public half (published in the JWKS), the private half sealed by the
//! server (or `NULL` when the private keys live in a key file), and when a
//! key stopped signing and when the last token it signed expires. What the
//! bytes mean and how they are sealed is the server's business
//! (`allot_server::app::signing`); this module only stores them.
//!
//! Exactly one key signs (`active = 1`); rotating retires it and inserts the
//! next one in one transaction. A retired key is published until the last
//! token it signed has expired, so verifiers that fetch the JWKS can check
//! every token still alive.

use chrono::{DateTime, Utc};

use crate::db::{StoreError, Tx};
use crate::{args, ts};

/// A signing key's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    /// The public key, base64url without padding (as the JWKS gives it).
    pub public_key: String,
    /// The sealed private key; `None` when it is kept in the key file.
    pub private_key: Option<String>,
    pub created_at: String,
    pub retired_at: Option<String>,
    pub last_token_expires_at: Option<String>,
}

const COLUMNS: &str = "kid, public_key, private_key, created_at, retired_at, last_token_expires_at";

fn key_row(r: &crate::Row) -> Result<SigningKeyRow, StoreError> {
    Ok(SigningKeyRow {
        kid: r.text("kid")?,
        public_key: r.text("public_key")?,
        private_key: r.opt_text("private_key")?,
        created_at: r.text("created_at")?,
        retired_at: r.opt_text("retired_at")?,
        last_token_expires_at: r.opt_text("last_token_expires_at")?,
    })
}

/// The key that signs now, if there is one.
pub async fn active(tx: &mut Tx) -> Result<Option<SigningKeyRow>, StoreError> {
    tx.opt_row(&format!("SELECT {COLUMNS} FROM signing_keys WHERE active = 1"), args![])
        .await?
        .map(|r| key_row(&r))
        .transpose()
}

/// The keys a verifier may need at `now`: the signing one, and every
/// retired one whose last token has not expired. Newest first.
pub async fn published(tx: &mut Tx, now: DateTime<Utc>) -> Result<Vec<SigningKeyRow>, StoreError> {
    tx.rows(
        &format!("SELECT {COLUMNS} FROM signing_keys WHERE active = 1 OR last_token_expires_at > $1 ORDER BY created_at DESC, kid DESC"),
        args![ts(now)],
    )
    .await?
    .iter()
    .map(key_row)
    .collect()
}

/// Inserts `key` as the signing key unless another already signs (a
/// server that raced this one): answers whether this one was inserted.
pub async fn insert_if_none_active(tx: &mut Tx, key: &SigningKeyRow) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "INSERT INTO signing_keys (kid, public_key, private_key, created_at, active) VALUES ($1, $2, $3, $4, 1) ON CONFLICT DO NOTHING",
            args![
                key.kid.as_str(),
                key.public_key.as_str(),
                key.private_key.as_deref(),
                key.created_at.as_str()
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Retires the signing key (if any) and makes `next` the signing key, in
/// the caller's transaction. Answers the retired key's row.
pub async fn rotate(tx: &mut Tx, next: &SigningKeyRow, now: DateTime<Utc>) -> Result<Option<SigningKeyRow>, StoreError> {
    let old = active(tx).await?;
    tx.exec(
        "UPDATE signing_keys SET active = NULL, retired_at = $1 WHERE active = 1",
        args![ts(now)],
    )
    .await?;
    if !insert_if_none_active(tx, next).await? {
        return Err(StoreError::Db(format!("signing key {} could not be inserted", next.kid)));
    }
    Ok(old)
}

/// Records that key `kid` signed a token that expires at `expires_at`,
/// so that the key stays published until then.
pub async fn note_token_expiry(tx: &mut Tx, kid: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
    let at = ts(expires_at);
    tx.exec(
        "UPDATE signing_keys SET last_token_expires_at = $1 WHERE kid = $2 AND (last_token_expires_at IS NULL OR last_token_expires_at < $3)",
        args![at.as_str(), kid, at.as_str()],
    )
    .await?;
    Ok(())
}
