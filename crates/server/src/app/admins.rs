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

use serde::{Deserialize, Serialize};

use allot_domain::access::{Action, Role, ScopeKind};
use allot_domain::{Code, Error};
use allot_store::admins::{self, Admin, AdminEntry, AdminFilter, NewAdmin};
use allot_store::{audit, in_transaction, Store, StoreError};

use super::paging::Paged;
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
    /// The session's key (the hash of its cookie's secret): what the
    /// session's own state (its selection of users) is kept under.
    pub key: String,
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
        key: hash,
    }))
}

/// Ends the session with this secret (signing out).
pub async fn sign_out(app: &App, secret: &str) -> Result<(), Error> {
    let hash = crate::auth::hash_token(secret);
    in_transaction!(app.store, |tx| admins::end_session(&mut tx, &hash).await)?;
    Ok(())
}

/// Deletes the sessions idle longer than `Config::session_idle` and the
/// invitations past their 7 days (neither signs anybody in any more; this
/// only keeps the tables small). Returns how many sessions went.
pub async fn end_idle_sessions(app: &App) -> Result<u64, Error> {
    let idle = chrono::Duration::from_std(app.config.session_idle).unwrap_or(chrono::Duration::hours(2));
    let now = app.clock.now();
    let since = now - idle;
    Ok(in_transaction!(app.store, |tx| {
        admins::end_expired_invitations(&mut tx, now).await?;
        admins::end_idle_sessions(&mut tx, since).await
    })?)
}

/// How long an invitation link works.
pub const INVITATION_VALID_DAYS: i64 = 7;

/// An admin account as shown (never its password hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub created_at: String,
    pub last_sign_in_at: Option<String>,
    /// True until the admin has used their invitation link (they cannot
    /// sign in before).
    pub invitation_pending: bool,
}

impl From<AdminEntry> for AdminView {
    fn from(e: AdminEntry) -> Self {
        let a = e.admin;
        AdminView {
            id: a.id,
            email: a.email,
            display_name: a.display_name,
            role: a.role,
            partner: a.partner,
            org: a.org,
            created_at: a.created_at,
            last_sign_in_at: a.last_sign_in_at,
            invitation_pending: e.invitation_pending,
        }
    }
}

/// `GET /api/v1/admins`: a page, narrowed to one partner's or one org's
/// accounts if asked.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminListQuery {
    /// Items per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub cursor: Option<String>,
    /// Only the admins bound to this partner (not those of its orgs).
    pub partner: Option<String>,
    /// Only the admins bound to this org.
    pub org: Option<String>,
}

/// An invitation: who, with which role, bound to which tenant.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminInvite {
    /// The address the invitation is for; it is the account's sign-in name.
    pub email: allot_domain::types::Email,
    /// How the console names them (their email, if left out).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub display_name: Option<String>,
    /// Never above the inviter's own role.
    pub role: Role,
    /// The partner a `partner_*` admin is bound to.
    #[serde(default)]
    pub partner: Option<String>,
    /// The org an `org_*` admin is bound to.
    #[serde(default)]
    pub org: Option<String>,
}

/// The link that lets an invited admin set their password: shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvitationLink {
    /// The console path to send to the invited person; append it to this
    /// server's address. It works once, until `expires_at`.
    pub path: String,
    pub expires_at: String,
}

/// An invited admin and, this once, their invitation link.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvitedAdmin {
    #[serde(flatten)]
    pub admin: AdminView,
    pub invitation: InvitationLink,
}

/// `PATCH /api/v1/admins/{admin}`: a new role (within the same kind of
/// tenant: the binding never changes) or display name.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdate {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub display_name: Option<String>,
}

/// Whether an account lies in the caller's scope: everyone for the
/// provider; a partner's own admins and its customers'; an org's own.
fn in_scope(caller: &Caller, e: &AdminEntry) -> bool {
    let p = &caller.principal;
    match p.scope_kind() {
        ScopeKind::Provider => true,
        ScopeKind::Partner => {
            p.partner.is_some() && (e.admin.partner == p.partner || (e.admin.org.is_some() && e.org_partner == p.partner))
        }
        ScopeKind::Org => e.admin.org.is_some() && e.admin.org == p.org,
    }
}

/// 403 unless the caller may give (or `verb`) an account of `role`; 422
/// for a role that no person holds (a service's, for tokens only).
fn may_invite(caller: &Caller, role: Role, verb: &str) -> Result<(), Error> {
    if !role.is_for_people() {
        return Err(Error::validation(
            "role",
            format!("{} is a role for API tokens, not for admin accounts.", role.as_str()),
        ));
    }
    if caller.principal.may_invite(role) {
        return Ok(());
    }
    Err(Error::new(
        Code::Forbidden,
        format!(
            "A {} may not {verb} a {} account: no role above one's own.",
            caller.principal.role.as_str(),
            role.as_str()
        ),
    ))
}

fn admin_not_found(id: &str) -> Error {
    Error::not_found(format!("Admin {}", allot_domain::types::excerpt(id)))
}

/// The admin with this id if the caller may see it (else 404, whether or
/// not it exists) and may manage admin accounts (else 403).
async fn admin_in_scope(tx: &mut allot_store::Tx, caller: &Caller, id: &str) -> Result<AdminEntry, StoreError> {
    let e = admins::get_entry(tx, id)
        .await?
        .filter(|e| in_scope(caller, e))
        .ok_or_else(|| admin_not_found(id))?;
    caller.require(Action::ManageAdmins)?;
    Ok(e)
}

/// Whose admin accounts a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminsOf {
    /// Every account in the caller's scope.
    Scope,
    /// The accounts bound to no tenant (provider admins).
    Provider,
    /// The accounts bound to this partner (not those of its orgs).
    Partner(String),
    /// The accounts bound to this org.
    Org(String),
}

impl AdminListQuery {
    pub fn of(&self) -> AdminsOf {
        match (&self.partner, &self.org) {
            (Some(p), _) => AdminsOf::Partner(p.clone()),
            (None, Some(o)) => AdminsOf::Org(o.clone()),
            (None, None) => AdminsOf::Scope,
        }
    }
}

/// A page of admin accounts. A partner or org outside the caller's scope
/// is 404; the role must be one that manages admins (403).
pub async fn list_admins(app: &App, caller: &Caller, of: &AdminsOf, page: &super::paging::Page) -> Result<Paged<AdminView>, Error> {
    let mut rd = app.store.read_conn().await?;
    match of {
        AdminsOf::Partner(partner) => caller.partner(partner, Action::ManageAdmins)?,
        AdminsOf::Org(org) => {
            caller.org(&mut rd, org, Action::ManageAdmins).await?;
        }
        AdminsOf::Provider if caller.scope_kind() != ScopeKind::Provider => {
            return Err(Error::not_found("The provider's admins"));
        }
        _ => {}
    }
    caller.require(Action::ManageAdmins)?;
    let p = &caller.principal;
    let filter = AdminFilter {
        within_partner: match p.scope_kind() {
            ScopeKind::Partner => Some(p.partner.as_deref().unwrap_or("")),
            _ => None,
        },
        within_org: match p.scope_kind() {
            ScopeKind::Org => Some(p.org.as_deref().unwrap_or("")),
            _ => None,
        },
        partner: match of {
            AdminsOf::Partner(p) => Some(p.as_str()),
            _ => None,
        },
        org: match of {
            AdminsOf::Org(o) => Some(o.as_str()),
            _ => None,
        },
        provider_only: *of == AdminsOf::Provider,
    };
    let rows = admins::list(&mut rd, &filter, page.after.as_deref(), page.limit).await?;
    Ok(Paged::from_rows(rows, page.limit, |e| e.admin.id.clone()).map(AdminView::from))
}

pub async fn get_admin(app: &App, caller: &Caller, id: &str) -> Result<AdminView, Error> {
    let mut rd = app.store.read_conn().await?;
    Ok(admin_in_scope(&mut rd, caller, id).await?.into())
}

/// Invites a new admin: the account is made without a password, with a
/// link (valid [`INVITATION_VALID_DAYS`] days, single use) that sets it.
/// The tenant first (404 outside the caller's scope), then the role (403:
/// never above the inviter's own).
pub async fn invite_admin(app: &App, caller: &Caller, input: AdminInvite) -> Result<InvitedAdmin, Error> {
    if let Some(partner) = &input.partner {
        caller.partner(partner, Action::ManageAdmins)?;
    }
    if let Some(org) = &input.org {
        let mut rd = app.store.read_conn().await?;
        caller.org(&mut rd, org, Action::ManageAdmins).await?;
    }
    caller.require(Action::ManageAdmins)?;
    may_invite(caller, input.role, "invite")?;
    let spec = AdminSpec {
        email: input.email.as_str(),
        display_name: input.display_name.as_deref(),
        role: input.role,
        partner: input.partner.as_deref(),
        org: input.org.as_deref(),
    };
    check_spec(&spec)?;
    let now = app.clock.now();
    let id = allot_store::new_id("adm");
    let secret = crate::auth::generate_token();
    let hash = crate::auth::hash_token(&secret);
    let expires_at = now + chrono::Duration::days(INVITATION_VALID_DAYS);
    let who = caller.actor();
    let display_name = spec.display_name.map(str::trim).unwrap_or_else(|| spec.email.trim());
    let entry = in_transaction!(app.store, |tx| {
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
                password_hash: None,
            },
            now,
        )
        .await?;
        admins::insert_invitation(&mut tx, &hash, &id, &who.actor, now, expires_at).await?;
        let after = serde_json::json!({ "email": spec.email.trim(), "role": spec.role.as_str(), "partner": spec.partner, "org": spec.org });
        audit::record(
            &mut tx,
            spec.org,
            &who,
            "admin.invite",
            &format!("admin:{id}"),
            None,
            Some(&after),
            now,
        )
        .await?;
        admins::get_entry(&mut tx, &id)
            .await?
            .ok_or_else(|| StoreError::Db("the admin just invited is gone".into()))
    })?;
    Ok(InvitedAdmin {
        admin: entry.into(),
        invitation: InvitationLink {
            path: invitation_path(&secret),
            expires_at: allot_store::ts(expires_at),
        },
    })
}

/// Where an invitation's secret is used: the console page that sets the
/// password.
pub fn invitation_path(secret: &str) -> String {
    format!("/ui/invitations/{secret}")
}

/// A new invitation link for an admin who has not accepted theirs yet
/// (it expired, or got lost); earlier links stop working.
pub async fn reinvite_admin(app: &App, caller: &Caller, id: &str) -> Result<InvitedAdmin, Error> {
    let now = app.clock.now();
    let secret = crate::auth::generate_token();
    let hash = crate::auth::hash_token(&secret);
    let expires_at = now + chrono::Duration::days(INVITATION_VALID_DAYS);
    let who = caller.actor();
    let entry = in_transaction!(app.store, |tx| {
        let e = admin_in_scope(&mut tx, caller, id).await?;
        may_invite(caller, e.admin.role, "invite")?;
        if !e.invitation_pending {
            return Err(Error::new(
                Code::Conflict,
                format!(
                    "{} has already accepted their invitation and signs in with their own password.",
                    e.admin.email
                ),
            )
            .into());
        }
        admins::take_invitation(&mut tx, "", &e.admin.id).await?;
        admins::insert_invitation(&mut tx, &hash, &e.admin.id, &who.actor, now, expires_at).await?;
        audit::record(
            &mut tx,
            e.admin.org.as_deref(),
            &who,
            "admin.reinvite",
            &format!("admin:{id}"),
            None,
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(e)
    })?;
    Ok(InvitedAdmin {
        admin: entry.into(),
        invitation: InvitationLink {
            path: invitation_path(&secret),
            expires_at: allot_store::ts(expires_at),
        },
    })
}

/// Changes an admin's role or display name. The new role must be of the
/// same kind of tenant as the old (the binding never changes), and both
/// within the caller's reach; nobody changes their own role.
pub async fn update_admin(app: &App, caller: &Caller, id: &str, input: AdminUpdate) -> Result<AdminView, Error> {
    if let Some(name) = &input.display_name {
        allot_domain::types::check_text("display_name", name, 200)?;
    }
    let now = app.clock.now();
    let who = caller.actor();
    let entry = in_transaction!(app.store, |tx| {
        let e = admin_in_scope(&mut tx, caller, id).await?;
        may_invite(caller, e.admin.role, "change")?;
        let role = input.role.unwrap_or(e.admin.role);
        if role != e.admin.role {
            may_invite(caller, role, "make anyone")?;
            if role.scope_kind() != e.admin.role.scope_kind() {
                return Err(Error::validation(
                    "role",
                    format!(
                        "{} is bound to {}; its role can only change to another role of that kind, not to {}.",
                        e.admin.email,
                        binding_of(&e.admin),
                        role.as_str()
                    ),
                )
                .into());
            }
            if caller.principal.token_id == format!("admin:{}", e.admin.id) {
                return Err(Error::new(Code::Conflict, "Nobody changes their own role: ask another admin.").into());
            }
        }
        let name = input
            .display_name
            .as_deref()
            .map(str::trim)
            .unwrap_or(&e.admin.display_name)
            .to_string();
        admins::update(&mut tx, &e.admin.id, role, &name).await?;
        let before = serde_json::json!({ "role": e.admin.role.as_str(), "display_name": e.admin.display_name });
        let after = serde_json::json!({ "role": role.as_str(), "display_name": name });
        audit::record(
            &mut tx,
            e.admin.org.as_deref(),
            &who,
            "admin.update",
            &format!("admin:{id}"),
            Some(&before),
            Some(&after),
            now,
        )
        .await?;
        admins::get_entry(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::from(admin_not_found(id)))
    })?;
    Ok(entry.into())
}

fn binding_of(a: &Admin) -> String {
    match (&a.partner, &a.org) {
        (Some(p), _) => format!("partner {p}"),
        (_, Some(o)) => format!("org {o}"),
        _ => "the provider".to_string(),
    }
}

/// Removes an admin account: its sessions end at once (whoever is signed
/// in as them is signed out on their next click) and its invitation link
/// stops working. Nobody removes their own account.
pub async fn remove_admin(app: &App, caller: &Caller, id: &str) -> Result<(), Error> {
    let now = app.clock.now();
    let who = caller.actor();
    in_transaction!(app.store, |tx| {
        let e = admin_in_scope(&mut tx, caller, id).await?;
        may_invite(caller, e.admin.role, "remove")?;
        if caller.principal.token_id == format!("admin:{}", e.admin.id) {
            return Err(Error::new(Code::Conflict, "Nobody removes their own account: ask another admin.").into());
        }
        if !admins::delete(&mut tx, &e.admin.id).await? {
            return Err(admin_not_found(id).into());
        }
        let before =
            serde_json::json!({ "email": e.admin.email, "role": e.admin.role.as_str(), "partner": e.admin.partner, "org": e.admin.org });
        audit::record(
            &mut tx,
            e.admin.org.as_deref(),
            &who,
            "admin.remove",
            &format!("admin:{id}"),
            Some(&before),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(())
}

/// The sentence for an invitation link that does not work.
pub const INVITATION_NOT_VALID: &str =
    "This invitation link does not work: it was used already, has expired, or was replaced by a newer one. Ask the admin who invited you for a new link.";

/// The admin an invitation link is for and when it expires, if it still works.
pub async fn invitation(app: &App, secret: &str) -> Result<Option<(Admin, String)>, Error> {
    if secret.is_empty() || secret.len() > 200 {
        return Ok(None);
    }
    let hash = crate::auth::hash_token(secret);
    let mut rd = app.store.read_conn().await?;
    Ok(admins::invitation(&mut rd, &hash, app.clock.now()).await?)
}

/// Uses an invitation link: sets the password and signs the admin in. The
/// link works once; a second use (or a concurrent one) is refused.
pub async fn accept_invitation(app: &App, secret: &str, password: &str) -> Result<NewSession, Error> {
    check_password(password)?;
    let not_valid = || Error::new(Code::NotFound, INVITATION_NOT_VALID);
    if invitation(app, secret).await?.is_none() {
        return Err(not_valid());
    }
    let pw_hash = hash_password(password.to_string()).await?;
    let hash = crate::auth::hash_token(secret);
    let session = crate::auth::generate_token();
    let session_hash = crate::auth::hash_token(&session);
    let csrf = crate::auth::generate_token();
    let now = app.clock.now();
    let admin = in_transaction!(app.store, |tx| {
        let Some((admin, _)) = admins::invitation(&mut tx, &hash, now).await? else {
            return Err(not_valid().into());
        };
        if !admins::take_invitation(&mut tx, &hash, &admin.id).await? {
            return Err(not_valid().into());
        }
        admins::set_password(&mut tx, &admin.id, &pw_hash).await?;
        admins::insert_session(&mut tx, &session_hash, &admin.id, &csrf, now).await?;
        admins::note_sign_in(&mut tx, &admin.id, now).await?;
        let who = allot_store::audit::Actor {
            actor: format!("admin:{}", admin.id),
            request_id: None,
        };
        audit::record(
            &mut tx,
            admin.org.as_deref(),
            &who,
            "admin.invitation_accepted",
            &format!("admin:{}", admin.id),
            None,
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(admin)
    })?;
    Ok(NewSession { secret: session, admin })
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
