//! The keys that sign offline entitlement tokens, and the signing itself:
//! Ed25519 (`alg: EdDSA`) JWTs with a `kid`, verified by anyone from the
//! JWKS at `/.well-known/jwks.json`.
//!
//! Where a private key lives is the deployment's choice
//! ([`KeyCustody`]): sealed in the database with ChaCha20-Poly1305 under a
//! key derived from a configured secret (the kid is the associated data,
//! so a sealed key cannot be passed off as another), or in a key file. The
//! public keys are always rows of the database, so every server publishes
//! the same JWKS. Private keys and the secret are never logged; errors name
//! the kid and the setting, nothing more.
//!
//! Use cases: [`publish_jwks`], [`rotate_signing_key`] (the command line),
//! and [`Signer::current`], which the token use case signs with.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::Signer as _;
use rand::RngCore;
use serde::Serialize;

use allot_domain::{Code, Error};
use allot_store::signing_keys::{self, SigningKeyRow};
use allot_store::{in_transaction, Store, StoreError};

use super::App;
use crate::config::{KeyCustody, SealingSecret};

/// One public key as a JWK (RFC 8037: `OKP`, `Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub kid: String,
    /// Always `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The keys that verify offline tokens (RFC 7517 JWK Set).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

fn jwk(row: &SigningKeyRow) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: row.public_key.clone(),
        kid: row.kid.clone(),
        alg: "EdDSA".into(),
        use_: "sig".into(),
    }
}

/// `GET /.well-known/jwks.json`: the signing key and every retired key
/// whose last token has not expired yet.
pub async fn publish_jwks(app: &App) -> Result<JwkSet, Error> {
    let mut rd = app.store.read_conn().await?;
    let rows = signing_keys::published(&mut rd, app.clock.now()).await?;
    Ok(JwkSet {
        keys: rows.iter().map(jwk).collect(),
    })
}

fn unavailable(detail: impl Into<String>) -> Error {
    Error::new(Code::Unavailable, detail)
}

fn not_configured() -> Error {
    unavailable(
        "Offline tokens are not configured on this server: set ALLOT_SIGNING_KEY_SECRET \
         (keys sealed in the database) or ALLOT_SIGNING_KEY_FILE (keys in a file).",
    )
}

/// What the signing keys are sealed for (see `super::sealing`); the kid is the row.
const SEALED_FOR: &str = "allot signing-key sealing v1";

fn seal(secret: &SealingSecret, kid: &str, seed: &[u8; 32]) -> Result<String, Error> {
    super::sealing::seal(secret, SEALED_FOR, kid, seed).ok_or_else(|| Error::internal("sealing a signing key failed"))
}

fn unseal(secret: &SealingSecret, kid: &str, sealed: &str) -> Result<[u8; 32], Error> {
    let wrong = || {
        unavailable(format!(
            "The signing key {kid} cannot be unsealed with the configured ALLOT_SIGNING_KEY_SECRET \
             (it was sealed with another secret, or the row was altered)."
        ))
    };
    let seed = super::sealing::unseal(secret, SEALED_FOR, kid, sealed).ok_or_else(wrong)?;
    seed.try_into().map_err(|_| wrong())
}

/// The private keys in a key file: `kid base64url-seed` per line; blank
/// lines and `#` comments are skipped.
fn read_key_file(path: &Path) -> Result<Vec<(String, [u8; 32])>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unavailable(format!("The signing key file {} cannot be read: {e}.", path.display()))),
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            unavailable(format!(
                "Line {} of the signing key file {} is not `kid key`.",
                n + 1,
                path.display()
            ))
        };
        let (kid, key) = line.split_once(' ').ok_or_else(bad)?;
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        keys.push((kid.to_string(), seed));
    }
    Ok(keys)
}

/// Appends a key to the key file (created with mode 0600 when missing).
fn append_key_file(path: &Path, kid: &str, seed: &[u8; 32]) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = |path: &Path| -> std::io::Result<()> {
        let mut f = options.open(path)?;
        writeln!(f, "{kid} {}", URL_SAFE_NO_PAD.encode(seed))?;
        f.sync_all()
    };
    write(path).map_err(|e| unavailable(format!("The signing key file {} cannot be written: {e}.", path.display())))
}

/// A new key pair's row: the private half sealed, or written to the key
/// file and left out of the row.
fn new_key(custody: &KeyCustody, now: DateTime<Utc>) -> Result<SigningKeyRow, Error> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let kid = allot_store::new_id("key");
    let private_key = match custody {
        KeyCustody::Unset => return Err(not_configured()),
        KeyCustody::Sealed(secret) => Some(seal(secret, &kid, &seed)?),
        KeyCustody::File(path) => {
            append_key_file(path, &kid, &seed)?;
            None
        }
    };
    Ok(SigningKeyRow {
        public_key: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
        kid,
        private_key,
        created_at: allot_store::ts(now),
        retired_at: None,
        last_token_expires_at: None,
    })
}

/// The signing key of a row, from where the custody keeps it; checked
/// against the row's public key.
fn open_key(custody: &KeyCustody, row: &SigningKeyRow) -> Result<ed25519_dalek::SigningKey, Error> {
    let seed = match (custody, &row.private_key) {
        (KeyCustody::Unset, _) => return Err(not_configured()),
        (KeyCustody::Sealed(secret), Some(sealed)) => unseal(secret, &row.kid, sealed)?,
        (KeyCustody::Sealed(_), None) => {
            return Err(unavailable(format!(
                "The signing key {} is kept in a key file, but this server is configured with ALLOT_SIGNING_KEY_SECRET.",
                row.kid
            )))
        }
        (KeyCustody::File(path), _) => read_key_file(path)?
            .into_iter()
            .find(|(kid, _)| *kid == row.kid)
            .map(|(_, seed)| seed)
            .ok_or_else(|| unavailable(format!("The signing key {} is not in the key file {}.", row.kid, path.display())))?,
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    if URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()) != row.public_key {
        return Err(unavailable(format!(
            "The private key kept for {} does not match its public key.",
            row.kid
        )));
    }
    Ok(key)
}

/// What rotating did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub new_kid: String,
    pub old_kid: Option<String>,
    /// Until when the old key stays published (its last token's expiry).
    pub old_published_until: Option<String>,
}

/// `allot admin rotate-signing-key`: a new key signs from now on; the old
/// one stays in the JWKS until the last token it signed has expired.
pub async fn rotate_signing_key(store: &Store, custody: &KeyCustody, now: DateTime<Utc>) -> Result<Rotated, Error> {
    let row = new_key(custody, now)?;
    let old = in_transaction!(store, |tx| signing_keys::rotate(&mut tx, &row, now).await)?;
    Ok(Rotated {
        new_kid: row.kid,
        old_kid: old.as_ref().map(|o| o.kid.clone()),
        old_published_until: old.and_then(|o| o.last_token_expires_at),
    })
}

/// The key this server signs with, opened once and kept while it is the
/// database's signing key; and the latest token expiry it has recorded.
#[derive(Default)]
pub struct Signer {
    current: Mutex<Option<(String, ed25519_dalek::SigningKey)>>,
    /// (kid, expiry) last written to `last_token_expires_at`.
    noted: Mutex<Option<(String, DateTime<Utc>)>>,
}

impl Signer {
    /// The database's signing key (created when there is none yet), opened.
    pub async fn current(&self, app: &App) -> Result<(String, ed25519_dalek::SigningKey), Error> {
        let custody = &app.config.offline_tokens.keys;
        if matches!(custody, KeyCustody::Unset) {
            return Err(not_configured());
        }
        let mut rd = app.store.read_conn().await?;
        let mut row = signing_keys::active(&mut rd).await?;
        drop(rd);
        if row.is_none() {
            let fresh = new_key(custody, app.clock.now())?;
            // Another server may have inserted one meanwhile: then that
            // one signs and this one is never used.
            in_transaction!(app.store, |tx| signing_keys::insert_if_none_active(&mut tx, &fresh).await)?;
            let mut rd = app.store.read_conn().await?;
            row = signing_keys::active(&mut rd).await?;
        }
        let row = row.ok_or_else(|| Error::internal("no signing key after inserting one"))?;
        if let Some((kid, key)) = self.lock_current().as_ref() {
            if *kid == row.kid {
                return Ok((kid.clone(), key.clone()));
            }
        }
        let key = open_key(custody, &row)?;
        *self.lock_current() = Some((row.kid.clone(), key.clone()));
        Ok((row.kid, key))
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<(String, ed25519_dalek::SigningKey)>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps key `kid` published until `expires_at` at least. Written in
    /// steps of an hour, so that most tokens cost no write.
    pub async fn note_expiry(&self, app: &App, kid: &str, expires_at: DateTime<Utc>) -> Result<(), Error> {
        {
            let noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, until)) = noted.as_ref() {
                if k == kid && *until >= expires_at {
                    return Ok(());
                }
            }
        }
        let until = expires_at + chrono::Duration::hours(1);
        in_transaction!(app.store, |tx| {
            signing_keys::note_token_expiry(&mut tx, kid, until).await?;
            Ok::<_, StoreError>(())
        })?;
        *self.noted.lock().unwrap_or_else(|p| p.into_inner()) = Some((kid.to_string(), until));
        Ok(())
    }
}

/// A compact JWS: `header.claims.signature`, each base64url.
pub fn sign_jwt<C: Serialize>(kid: &str, key: &ed25519_dalek::SigningKey, claims: &C) -> Result<String, Error> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'a str,
        typ: &'a str,
        kid: &'a str,
    }
    let header = serde_json::to_vec(&Header {
        alg: "EdDSA",
        typ: "JWT",
        kid,
    })
    .map_err(|e| Error::internal(format!("token header: {e}")))?;
    let body = serde_json::to_vec(claims).map_err(|e| Error::internal(format!("token claims: {e}")))?;
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(body));
    let signature = key.sign(signing_input.as_bytes());
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SealingSecret {
        SealingSecret::new(s.repeat(40)).unwrap() // 40 copies: long enough
    }

    #[test]
    fn a_sealed_key_opens_with_its_secret_and_kid_only() {
        let seed = [7u8; 32];
        let sealed = seal(&secret("a"), "key_1", &seed).unwrap();
        assert_eq!(unseal(&secret("a"), "key_1", &sealed).unwrap(), seed);
        assert_eq!(unseal(&secret("b"), "key_1", &sealed).unwrap_err().code, Code::Unavailable);
        // The kid is bound in: the same bytes under another kid do not open.
        assert!(unseal(&secret("a"), "key_2", &sealed).is_err());
        assert!(unseal(&secret("a"), "key_1", "not base64!").is_err());
        assert!(!sealed.contains(&URL_SAFE_NO_PAD.encode(seed)));
    }

    #[test]
    fn a_key_file_round_trips_and_refuses_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        assert!(read_key_file(&path).unwrap().is_empty());
        append_key_file(&path, "key_a", &[1u8; 32]).unwrap();
        append_key_file(&path, "key_b", &[2u8; 32]).unwrap();
        let keys = read_key_file(&path).unwrap();
        assert_eq!(keys, vec![("key_a".to_string(), [1u8; 32]), ("key_b".to_string(), [2u8; 32])]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "key_a nonsense\n").unwrap();
        assert!(read_key_file(&path).unwrap_err().detail.contains("Line 1"));
    }

    #[test]
    fn a_signed_token_verifies_with_the_public_key_and_not_when_changed() {
        use ed25519_dalek::Verifier;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let token = sign_jwt("key_x", &key, &serde_json::json!({"sub": "usr_1"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "key_x"}));
        let sig = ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(key.verifying_key().verify(input.as_bytes(), &sig).is_ok());
        let forged = format!("{}.{}", parts[0], URL_SAFE_NO_PAD.encode(br#"{"sub":"usr_2"}"#));
        assert!(key.verifying_key().verify(forged.as_bytes(), &sig).is_err());
    }
}
