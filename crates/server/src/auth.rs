//! Who is calling: bearer tokens. A token is 32 random bytes, shown once and
//! stored only as its SHA-256; a request's token is looked up by that hash
//! and must be live (not revoked, not expired). What the caller may then do
//! is decided in `crate::app::access`, and nowhere else.

use rand::RngCore;
use sha2::{Digest, Sha256};

use allot_domain::access::{Principal, Role};
use allot_domain::{Code, Error};
use allot_store::{tokens, Store};

use crate::app::cache::CachedToken;
use crate::app::App;

/// A new API token: 32 random bytes, shown once, stored only as its SHA-256.
/// (A random 256-bit secret needs no slow hash: there is nothing to guess.)
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("allot_{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token for a role bound to its tenant and returns the secret
/// (for the command line and tests, which hold the database).
pub async fn create_token(
    store: &Store,
    role: Role,
    partner: Option<&str>,
    org: Option<&str>,
    label: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, Error> {
    crate::app::tokens::create_token_as_operator(store, role, partner, org, label, now).await
}

/// The principal of a request that was already authenticated (by the
/// idempotency layer, which must know the caller before it touches a key).
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub Principal);

/// How long a token's `last_used_at` may lag: it is written at most once
/// per token in this interval, off the request's path.
const LAST_USED_GRANULARITY: chrono::Duration = chrono::Duration::minutes(5);

/// The bearer token of these headers, or why there is none.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, Error> {
    let unauthenticated = |why: &str| Error::new(Code::Unauthenticated, why.to_string());
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("Send an API token as Authorization: Bearer <token>."))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 200)
        .ok_or_else(|| unauthenticated("The Authorization header must be Bearer <token>."))
}

/// Who sent these headers: a live token's principal, or 401. Reads only;
/// never writes on the request's path.
pub(crate) async fn authenticate(app: &App, headers: &axum::http::HeaderMap) -> Result<Principal, Error> {
    let token = bearer(headers)?;
    let hash = hash_token(token);
    let now = app.clock.now();
    let cached = match app.caches.token(&hash, now) {
        Some(c) => c,
        None => {
            let generation = app.caches.tokens_generation();
            let mut tx = app.store.read_conn().await?;
            let found = tokens::principal_by_hash(&mut tx, &hash, now).await?;
            drop(tx);
            let live = found.ok_or_else(|| Error::new(Code::Unauthenticated, "The API token is unknown, expired or revoked."))?;
            let cached = CachedToken {
                principal: live.principal,
                // A stored time that does not parse would make the token
                // never expire in the cache: refuse it instead.
                expires_at: match &live.expires_at {
                    None => None,
                    Some(t) => Some(
                        chrono::DateTime::parse_from_rfc3339(t)
                            .map_err(|e| Error::internal(format!("a token's stored expiry {t:?} is unreadable: {e}")))?
                            .with_timezone(&chrono::Utc),
                    ),
                },
                last_used_at: live.last_used_at,
            };
            app.caches.remember_token(hash.clone(), cached.clone(), generation);
            cached
        }
    };
    let (principal, last_used) = (cached.principal, cached.last_used_at);
    if let Err(wait) = app.rate.take(&principal.token_id) {
        return Err(Error::new(
            Code::RateLimited,
            format!(
                "This token sent more requests than its rate of {} a second allows; send the next in {} ms.",
                app.config.rate_limit.per_second,
                wait.as_millis().max(1)
            ),
        ));
    }
    let stale = last_used.is_none_or(|t| t < allot_store::ts(now - LAST_USED_GRANULARITY));
    if stale {
        // Noted in the cache at once, so that the requests that follow do
        // not write it again.
        app.caches.note_token_use(&hash, allot_store::ts(now));
        // Off the request's path: a slow or failed note must not delay or
        // fail the request.
        let store = app.store.clone();
        let id = principal.token_id.clone();
        tokio::spawn(async move {
            if let Err(e) = allot_store::in_transaction!(store, |tx| tokens::touch(&mut tx, &id, now).await) {
                tracing::warn!(error = %e, "could not note a token's last use");
            }
        });
    }
    Ok(principal)
}

/// The request id a caller may choose: 1 to 100 letters, digits, `.`, `_`
/// or `-`, and not of Allot's own shape (`req_…`), so that nobody can make
/// an audit event look like it came from a job (`job:…`) or from Allot.
pub fn sane_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 100
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !v.starts_with("req_")
}
