//! Who is calling, and whether they may: bearer tokens, tenant scope and the
//! role table, checked here and nowhere else.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use allot_domain::access::{Action, Principal, Role};
use allot_domain::{Code, Error};
use allot_store::audit::Actor;
use allot_store::tenants::{self, Org};
use allot_store::{tokens, Store, StoreError, Tx};

use crate::problem::ApiError;
use crate::AppState;

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

/// Creates a token for a role bound to its tenant and returns the secret.
pub async fn create_token(
    store: &Store,
    role: Role,
    partner: Option<&str>,
    org: Option<&str>,
    label: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, Error> {
    let spec = TokenSpec {
        role,
        partner,
        org,
        label,
        expires_at: None,
    };
    issue_token(store, &spec, None, now).await.map(|(_, secret)| secret)
}

/// What a new token is: its role, the tenant it is bound to, a name, and
/// when it expires (never, if `None`).
pub struct TokenSpec<'a> {
    pub role: Role,
    pub partner: Option<&'a str>,
    pub org: Option<&'a str>,
    pub label: Option<&'a str>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Stores a new token and returns its id and its secret (which is shown
/// once and never stored). With an `actor`, the creation is audited.
pub async fn issue_token(
    store: &Store,
    spec: &TokenSpec<'_>,
    actor: Option<&Actor>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, String), Error> {
    use allot_domain::access::ScopeKind;
    let TokenSpec {
        role,
        partner,
        org,
        label,
        expires_at,
    } = *spec;
    match (role.scope_kind(), partner, org) {
        (ScopeKind::Provider, None, None) | (ScopeKind::Partner, Some(_), None) | (ScopeKind::Org, None, Some(_)) => {}
        (ScopeKind::Provider, ..) => return Err(Error::validation("role", "provider_admin tokens are bound to no partner or org.")),
        (ScopeKind::Partner, ..) => {
            return Err(Error::validation(
                "partner",
                format!(
                    "{} tokens are bound to a partner: give a partner (--partner) and no org.",
                    role.as_str()
                ),
            ))
        }
        (ScopeKind::Org, ..) => {
            return Err(Error::validation(
                "org",
                format!("{} tokens are bound to an org: give an org (--org) and no partner.", role.as_str()),
            ))
        }
    }
    if let Some(label) = label {
        allot_domain::types::check_text("name", label, 200)?;
    }
    if expires_at.is_some_and(|t| t <= now) {
        return Err(Error::validation("expires_at", "expires_at must lie in the future."));
    }
    let token = generate_token();
    let hash = hash_token(&token);
    let id = allot_store::in_transaction!(store, |tx| {
        if let Some(p) = partner {
            if tenants::get_partner(&mut tx, p).await?.is_none() {
                return Err::<String, StoreError>(Error::not_found(format!("Partner {p}")).into());
            }
        }
        if let Some(o) = org {
            if tenants::get_org(&mut tx, o).await?.is_none() {
                return Err(Error::not_found(format!("Organisation {o}")).into());
            }
        }
        let id = allot_store::new_id("tok");
        tokens::insert(
            &mut tx,
            &tokens::NewToken {
                id: &id,
                token_hash: &hash,
                role,
                partner,
                org,
                label,
                expires_at,
            },
            now,
        )
        .await?;
        if let Some(actor) = actor {
            let after = serde_json::json!({ "role": role.as_str(), "partner": partner, "org": org, "name": label });
            allot_store::audit::record(&mut tx, org, actor, "token.create", &format!("token:{id}"), None, Some(&after), now).await?;
        }
        Ok(id)
    })?;
    Ok((id, token))
}

/// The caller of one request: its principal and the request's id.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Principal,
    pub request_id: String,
}

impl Ctx {
    pub fn actor(&self) -> Actor {
        Actor {
            actor: format!("token:{}", self.principal.token_id),
            request_id: Some(self.request_id.clone()),
        }
    }

    /// 403 unless the caller's role may do `action` (inside its own tenant).
    pub fn require(&self, action: Action) -> Result<(), Error> {
        if self.principal.may(action) {
            Ok(())
        } else {
            Err(Error::new(
                Code::Forbidden,
                format!("A {} token may not {}.", self.principal.role.as_str(), describe(action)),
            ))
        }
    }

    /// Loads an org the caller may see (else 404, whether or not it exists)
    /// and checks the role may do `action` there (else 403).
    pub async fn org(&self, tx: &mut Tx, org_id: &str, action: Action) -> Result<Org, Error> {
        let org = tenants::get_org(tx, org_id)
            .await?
            .filter(|o| self.principal.covers_org(&o.id, o.partner.as_deref()))
            .ok_or_else(|| Error::not_found(format!("Organisation {org_id}")))?;
        self.require(action)?;
        Ok(org)
    }

    /// 403 naming `field` unless the role may do `action`: for fields of a
    /// body that only some of the roles allowed to send it may set.
    pub fn require_for_field(&self, action: Action, field: &str) -> Result<(), Error> {
        if self.principal.may(action) {
            return Ok(());
        }
        let msg = format!(
            "A {} token may not set {field}: only roles that may {} can.",
            self.principal.role.as_str(),
            describe(action)
        );
        Err(Error {
            code: Code::Forbidden,
            detail: msg.clone(),
            violations: vec![allot_domain::Violation::new(Code::Forbidden, msg).field(field)],
        })
    }

    /// Checks a partner lies in the caller's scope (else 404) and the action.
    pub fn partner(&self, partner_id: &str, action: Action) -> Result<(), Error> {
        if !self.principal.covers_partner(partner_id) {
            return Err(Error::not_found(format!("Partner {partner_id}")));
        }
        self.require(action)
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::ReadCatalogue => "read the catalogue",
        Action::WriteCatalogue => "change the catalogue",
        Action::ReadPartners => "read partners",
        Action::WritePartners => "create partners",
        Action::ReadOrg => "read organisations",
        Action::CreateOrg => "create organisations",
        Action::WriteOrg => "change organisations",
        Action::ReadSubscriptions => "read subscriptions",
        Action::WriteSubscriptions => "change subscriptions",
        Action::ReadUsers => "read users",
        Action::WriteUsers => "change users",
        Action::ReadLicenses => "read licences",
        Action::WriteLicenses => "change licences",
        Action::ReadAudit => "read the audit log",
        Action::Maintenance => "run provider housekeeping",
        Action::SubmitProvisioningDetails => "submit provisioning details",
        Action::RequestPurchase => "buy licences",
        Action::DecidePurchase => "fulfil or reject purchase requests",
        Action::ManageQueues => "manage contact-centre queues",
        Action::ManageTokens => "manage API tokens",
        Action::GrantSiteAdmin => "make users site administrators",
        Action::SetBillingTerms => "set an organisation's billing facts and purchase policy",
    }
}

/// The principal of a request that was already authenticated (by the
/// idempotency layer, which must know the caller before it touches a key).
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub Principal);

/// How long a token's `last_used_at` may lag: it is written at most once
/// per token in this interval, off the request's path.
const LAST_USED_GRANULARITY: chrono::Duration = chrono::Duration::minutes(5);

/// Who sent these headers: a live token's principal, or 401. Reads only;
/// never writes on the request's path.
pub(crate) async fn authenticate(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Principal, Error> {
    let unauthenticated = |why: &str| Error::new(Code::Unauthenticated, why.to_string());
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("Send an API token as Authorization: Bearer <token>."))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 200)
        .ok_or_else(|| unauthenticated("The Authorization header must be Bearer <token>."))?;
    let hash = hash_token(token);
    let now = state.clock.now();
    let mut tx = state.store.read_conn().await?;
    let found = tokens::principal_by_hash(&mut tx, &hash, now).await?;
    drop(tx);
    let (principal, last_used) = found.ok_or_else(|| unauthenticated("The API token is unknown, expired or revoked."))?;
    let stale = last_used.is_none_or(|t| t < allot_store::ts(now - LAST_USED_GRANULARITY));
    if stale {
        // Off the request's path: a slow or failed note must not delay or
        // fail the request.
        let store = state.store.clone();
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

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(p)) => p.clone(),
            None => authenticate(state, &parts.headers).await?,
        };
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| sane_request_id(v))
            .map(str::to_string)
            .unwrap_or_else(|| allot_store::new_id("req"));
        Ok(Ctx { principal, request_id })
    }
}
