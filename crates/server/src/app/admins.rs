//! Admin accounts and console sessions: creating an account, signing in and
//! out, and finding the signed-in admin of a session.
//!
//! Passwords are hashed with argon2id (at least 12 characters); the hashing
//! runs on the blocking pool, since it is meant to be slow. Repeated failed
//! sign-ins are slowed per account and per address (see [`SignInThrottle`]).
//! A session's secret is 32 random bytes, handed to the browser once as a
//! cookie and kept in the database only as its SHA-256; each session has
//! its own CSRF token that its forms carry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use allot_domain::access::Role;
use allot_domain::{Code, Error};
use allot_store::admins::{self, Admin, NewAdmin};
use allot_store::{in_transaction, Store, StoreError};

use super::{App, Caller};

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest: hashing is slow by design, and a megabyte of "password"
/// would make every attempt a denial of service.
const MAX_PASSWORD_CHARS: usize = 1024;

fn check_password(password: &str) -> Result<(), Error> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(Error::validation(
            "password",
            format!("The password must have at least {MIN_PASSWORD_CHARS} characters; it has {n}."),
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(Error::validation(
            "password",
            format!("The password may have at most {MAX_PASSWORD_CHARS} characters."),
        ));
    }
    Ok(())
}

/// An argon2id hash (PHC string) of a password that passed [`check_password`].
async fn hash_password(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::new(Code::Internal, format!("the password could not be hashed: {e}")))
    })
    .await
    .map_err(|e| Error::new(Code::Internal, format!("the password hashing task stopped: {e}")))?
}

/// Whether `password` matches `hash`. Without a hash (an unknown email, or
/// an invitation not accepted yet) a fixed hash is checked instead, so that
/// the answer takes as long either way and tells nobody which emails exist.
async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        // Verified whether the account exists or not (no short cut).
        let matches = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        known && matches
    })
    .await
    .unwrap_or(false)
}

/// The argon2id hash of a random string nobody knows, checked when there is
/// no account (see [`verify_password`]); made with the default parameters.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$jP1Z6pV3xq0tZ4k3mH6c5m0b0H1vU9jz3rDq3m6sP3Y";

/// An account to create.
#[derive(Debug, Clone, Copy)]
pub struct AdminSpec<'a> {
    pub email: &'a str,
    pub display_name: Option<&'a str>,
    pub role: Role,
    pub partner: Option<&'a str>,
    pub org: Option<&'a str>,
}

fn check_spec(spec: &AdminSpec<'_>) -> Result<(), Error> {
    allot_domain::types::Email::parse(spec.email)?;
    if let Some(name) = spec.display_name {
        allot_domain::types::check_text("display_name", name, 200)?;
    }
    super::access::check_binding(spec.role, spec.partner, spec.org, "admins")
}

/// Creates an admin account with a password, as the operator at the command
/// line (who holds the database): `allot admin create-admin`, and the demo.
pub async fn create_admin_as_operator(
    store: &Store,
    spec: &AdminSpec<'_>,
    password: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Admin, Error> {
    check_spec(spec)?;
    check_password(password)?;
    let hash = hash_password(password.to_string()).await?;
    let id = allot_store::new_id("adm");
    let who = Caller::operator("create-admin").actor();
    let display_name = spec.display_name.unwrap_or_else(|| spec.email.trim());
    in_transaction!(store, |tx| {
        super::access::check_tenants_exist(&mut tx, spec.partner, spec.org).await?;
        admins::insert(
            &mut tx,
            &NewAdmin {
                id: &id,
                email: spec.email,
                display_name,
                role: spec.role,
                partner: spec.partner,
                org: spec.org,
                password_hash: Some(&hash),
            },
            now,
        )
        .await?;
        let after = serde_json::json!({ "email": spec.email.trim(), "role": spec.role.as_str(), "partner": spec.partner, "org": spec.org });
        allot_store::audit::record(
            &mut tx,
            spec.org,
            &who,
            "admin.create",
            &format!("admin:{id}"),
            None,
            Some(&after),
            now,
        )
        .await?;
        admins::get(&mut tx, &id)
            .await?
            .ok_or_else(|| StoreError::Db("the admin just created is gone".into()))
    })
}

/// Gives an existing admin a new password, as the operator (the demo
/// prints fresh passwords on every start). Every session of the admin ends.
pub async fn set_password_as_operator(
    store: &Store,
    email: &str,
    password: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Admin, Error> {
    check_password(password)?;
    let hash = hash_password(password.to_string()).await?;
    let who = Caller::operator("set-password").actor();
    in_transaction!(store, |tx| {
        let Some((admin, _)) = admins::for_sign_in(&mut tx, email).await? else {
            return Err::<Admin, StoreError>(Error::not_found(format!("Admin {}", allot_domain::types::excerpt(email))).into());
        };
        admins::set_password(&mut tx, &admin.id, &hash).await?;
        admins::end_sessions_of(&mut tx, &admin.id).await?;
        allot_store::audit::record(
            &mut tx,
            admin.org.as_deref(),
            &who,
            "admin.password_set",
            &format!("admin:{}", admin.id),
            None,
            None,
            now,
        )
        .await?;
        Ok(admin)
    })
}

/// Failed sign-ins, counted per account and per address in this process:
/// after [`FREE_FAILURES`] within [`FAILURE_WINDOW`], each further attempt
/// (right or wrong) waits twice as long as the one before, up to
/// [`MAX_DELAY`]. The wait is spent before the password is even checked,
/// so guessing costs time, and a success clears the account's count.
#[derive(Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const FREE_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_DELAY: Duration = Duration::from_secs(30);

impl SignInThrottle {
    /// How long an attempt for these keys must wait first.
    fn delay(&self, keys: &[String]) -> Duration {
        let Ok(mut f) = self.failures.lock() else {
            return MAX_DELAY;
        };
        f.retain(|_, (_, last)| last.elapsed() < FAILURE_WINDOW);
        let worst = keys.iter().filter_map(|k| f.get(k)).map(|(n, _)| *n).max().unwrap_or(0);
        if worst < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (worst - FREE_FAILURES).min(5);
        (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_DELAY)
    }

    fn failed(&self, keys: &[String]) {
        if let Ok(mut f) = self.failures.lock() {
            for k in keys {
                let e = f.entry(k.clone()).or_insert((0, Instant::now()));
                e.0 += 1;
                e.1 = Instant::now();
            }
        }
    }

    fn succeeded(&self, account_key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(account_key);
        }
    }
}

/// A session just begun: the secret for the browser's cookie (shown once,
/// never stored) and who signed in.
pub struct NewSession {
    pub secret: String,
    pub admin: Admin,
}

/// The one answer to a wrong email or a wrong password.
pub const SIGN_IN_REFUSED: &str = "That email and password do not match an admin account.";

/// Signs in with email and password from `address` (the peer's IP, for the
/// throttle).
pub async fn sign_in(app: &App, email: &str, password: &str, address: &str) -> Result<NewSession, Error> {
    let account_key = format!("account:{}", admins::normalize_email(email));
    let keys = [account_key.clone(), format!("address:{address}")];
    let wait = app.sign_ins.delay(&keys);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let refused = || Error::new(Code::Unauthenticated, SIGN_IN_REFUSED);
    if email.len() > 254 || password.chars().count() > MAX_PASSWORD_CHARS {
        app.sign_ins.failed(&keys);
        return Err(refused());
    }
    let found = {
        let mut rd = app.store.read_conn().await?;
        admins::for_sign_in(&mut rd, email).await?
    };
    let (admin, hash) = match found {
        Some((admin, hash)) => (Some(admin), hash),
        None => (None, None),
    };
    if !verify_password(password.to_string(), hash).await {
        app.sign_ins.failed(&keys);
        return Err(refused());
    }
    let admin = admin.ok_or_else(refused)?;
    app.sign_ins.succeeded(&account_key);
    let secret = crate::auth::generate_token();
    let csrf = crate::auth::generate_token();
    let hash = crate::auth::hash_token(&secret);
    let now = app.clock.now();
    let id = admin.id.clone();
    in_transaction!(app.store, |tx| {
        admins::insert_session(&mut tx, &hash, &id, &csrf, now).await?;
        admins::note_sign_in(&mut tx, &id, now).await
    })?;
    Ok(NewSession { secret, admin })
}

/// A signed-in admin as the console sees them: the caller every use case
/// takes, the account, and the CSRF token the session's forms carry.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub caller: Caller,
    pub admin: Admin,
    pub csrf_token: String,
}

/// How often a session's last use is written (it expires after
/// `Config::session_idle` without one).
const TOUCH_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// The live session with this secret, or `None` (unknown, signed out,
/// idle too long, or its admin removed).
pub async fn session(app: &App, secret: &str, request_id: &str) -> Result<Option<ConsoleSession>, Error> {
    if secret.is_empty() || secret.len() > 200 {
        return Ok(None);
    }
    let hash = crate::auth::hash_token(secret);
    let now = app.clock.now();
    let idle = chrono::Duration::from_std(app.config.session_idle).unwrap_or(chrono::Duration::hours(2));
    let found = {
        let mut rd = app.store.read_conn().await?;
        admins::session(&mut rd, &hash, now - idle).await?
    };
    let Some(live) = found else {
        return Ok(None);
    };
    if live.last_seen_at < allot_store::ts(now - TOUCH_EVERY) {
        in_transaction!(app.store, |tx| admins::touch_session(&mut tx, &hash, now).await)?;
    }
    Ok(Some(ConsoleSession {
        caller: Caller {
            principal: live.admin.principal(),
            request_id: request_id.to_string(),
        },
        admin: live.admin,
        csrf_token: live.csrf_token,
    }))
}

/// Ends the session with this secret (signing out).
pub async fn sign_out(app: &App, secret: &str) -> Result<(), Error> {
    let hash = crate::auth::hash_token(secret);
    in_transaction!(app.store, |tx| admins::end_session(&mut tx, &hash).await)?;
    Ok(())
}

/// Deletes the sessions idle longer than `Config::session_idle` (they no
/// longer sign anybody in; this only keeps the table small). Returns how
/// many went.
pub async fn end_idle_sessions(app: &App) -> Result<u64, Error> {
    let idle = chrono::Duration::from_std(app.config.session_idle).unwrap_or(chrono::Duration::hours(2));
    let since = app.clock.now() - idle;
    Ok(in_transaction!(app.store, |tx| admins::end_idle_sessions(&mut tx, since).await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_valid_argon2id_hash() {
        // Else an unknown email would answer faster than a wrong password.
        let parsed = PasswordHash::new(DUMMY_HASH).expect("parses");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
    }

    #[test]
    fn failures_beyond_the_free_ones_slow_every_attempt_down() {
        let t = SignInThrottle::default();
        let keys = ["account:a@example.com".to_string(), "address:10.0.0.1".to_string()];
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.delay(&keys), Duration::ZERO);
            t.failed(&keys);
        }
        assert_eq!(t.delay(&keys), Duration::from_secs(1));
        t.failed(&keys);
        assert_eq!(t.delay(&keys), Duration::from_secs(2));
        // Another account from the same address waits too.
        assert_eq!(
            t.delay(&["account:b@example.com".into(), "address:10.0.0.1".into()]),
            Duration::from_secs(2)
        );
        for _ in 0..20 {
            t.failed(&keys);
        }
        assert_eq!(t.delay(&keys), MAX_DELAY);
        t.succeeded("account:a@example.com");
        assert_eq!(t.delay(&["account:a@example.com".into()]), Duration::ZERO);
    }

    #[test]
    fn short_and_huge_passwords_are_refused_with_a_sentence() {
        let e = check_password("short").unwrap_err();
        assert!(e.detail.contains("at least 12 characters"), "{}", e.detail);
        assert!(check_password(&"x".repeat(2000)).is_err());
        assert!(check_password("twelve chars").is_ok());
    }
}
