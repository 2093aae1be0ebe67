//! API tokens: list the live ones in the caller's scope, create one (its
//! secret answered once), revoke one. A revoked or expired token stops
//! working on its very next request (see `crate::auth`).
//!
//! Who may: roles with `ManageTokens` (provider, partner and org super
//! admins), never granting a role above their own; a token bound to a
//! tenant outside the caller's scope is 404, as everything else is.

use serde::{Deserialize, Serialize};

use allot_domain::access::{Action, Role, ScopeKind};
use allot_domain::{Code, Error};
use allot_store::audit::Actor;
use allot_store::tokens::{self, TokenInfo};
use allot_store::{audit, in_transaction, Store, StoreError};

use super::paging::{PageQuery, Paged};
use super::{App, Caller};
use crate::auth::{generate_token, hash_token};

/// A token as shown: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: Option<String>,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            role: t.role,
            partner: t.partner,
            org: t.org,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

/// A new token: the view and, this once, its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// The secret to send as `Authorization: Bearer <token>`. Shown only now.
    pub token: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// What the token is for.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: Option<String>,
    pub role: Role,
    /// The partner a `partner_*` token is bound to.
    #[serde(default)]
    pub partner: Option<String>,
    /// The org an `org_*` token is bound to.
    #[serde(default)]
    pub org: Option<String>,
    /// When it stops working (never, if left out); in the future.
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
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
    let TokenSpec {
        role,
        partner,
        org,
        label,
        expires_at,
    } = *spec;
    super::access::check_binding(role, partner, org, "tokens")?;
    if let Some(label) = label {
        allot_domain::types::check_text("name", label, 200)?;
    }
    if expires_at.is_some_and(|t| t <= now) {
        return Err(Error::validation("expires_at", "expires_at must lie in the future."));
    }
    let token = generate_token();
    let hash = hash_token(&token);
    let id = in_transaction!(store, |tx| {
        super::access::check_tenants_exist(&mut tx, partner, org).await?;
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
            audit::record(&mut tx, org, actor, "token.create", &format!("token:{id}"), None, Some(&after), now).await?;
        }
        Ok::<_, StoreError>(id)
    })?;
    Ok((id, token))
}

/// Creates a token for a role bound to its tenant and returns the secret
/// (the command line and tests, run by whoever holds the database).
pub async fn create_token_as_operator(
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

/// 403 unless the caller may hand out (and so `verb`) a token of `role`:
/// no role above one's own.
fn may_grant(caller: &Caller, role: Role, verb: &str) -> Result<(), Error> {
    if caller.principal.may_grant(role) {
        return Ok(());
    }
    Err(Error::new(
        Code::Forbidden,
        format!(
            "A {} token may not {verb} a {} token: no role above one's own.",
            caller.principal.role.as_str(),
            role.as_str()
        ),
    ))
}

/// Whether a stored token lies in the caller's scope.
fn in_scope(caller: &Caller, t: &TokenInfo) -> bool {
    let p = &caller.principal;
    match p.scope_kind() {
        ScopeKind::Provider => true,
        ScopeKind::Partner => p.partner.is_some() && (t.partner == p.partner || (t.org.is_some() && t.org_partner == p.partner)),
        ScopeKind::Org => t.org.is_some() && t.org == p.org,
    }
}

pub async fn list_tokens(app: &App, caller: &Caller, q: &PageQuery) -> Result<Paged<TokenView>, Error> {
    caller.require(Action::ManageTokens)?;
    let page = q.page()?;
    let mut rd = app.store.read_conn().await?;
    // Tokens are few; read past those out of scope until the page is full.
    let mut items = Vec::new();
    let mut after = page.after.clone();
    loop {
        let batch = tokens::list_live(&mut rd, after.as_deref(), 1000).await?;
        let done = batch.len() < 1000;
        after = batch.last().map(|t| t.id.clone());
        items.extend(batch.into_iter().filter(|t| in_scope(caller, t)));
        if done || items.len() as i64 > page.limit {
            break;
        }
    }
    Ok(Paged::from_rows(items, page.limit, |t| t.id.clone()).map(TokenView::from))
}

pub async fn create_token(app: &App, caller: &Caller, input: TokenInput) -> Result<CreatedToken, Error> {
    // The tenant first (404 outside the caller's scope), then the role (403),
    // as everywhere.
    if let Some(partner) = &input.partner {
        caller.partner(partner, Action::ManageTokens)?;
    }
    if let Some(org) = &input.org {
        let mut rd = app.store.read_conn().await?;
        caller.org(&mut rd, org, Action::ManageTokens).await?;
    }
    caller.require(Action::ManageTokens)?;
    if input.partner.is_none() && input.org.is_none() && caller.scope_kind() != ScopeKind::Provider {
        return Err(Error::new(
            Code::Forbidden,
            "Only a provider admin may create a token bound to no partner or org.",
        ));
    }
    may_grant(caller, input.role, "create")?;
    let spec = TokenSpec {
        role: input.role,
        partner: input.partner.as_deref(),
        org: input.org.as_deref(),
        label: input.name.as_deref(),
        expires_at: input.expires_at,
    };
    let now = app.clock.now();
    let (id, secret) = issue_token(&app.store, &spec, Some(&caller.actor()), now).await?;
    let mut rd = app.store.read_conn().await?;
    let info = tokens::get(&mut rd, &id)
        .await?
        .ok_or_else(|| Error::internal("The token just created cannot be read back."))?;
    Ok(CreatedToken {
        view: info.into(),
        token: secret,
    })
}

pub async fn revoke_token(app: &App, caller: &Caller, id: &str) -> Result<(), Error> {
    let now = app.clock.now();
    let not_found = || Error::not_found(format!("Token {}", allot_domain::types::excerpt(id)));
    in_transaction!(app.store, |tx| {
        let t = tokens::get(&mut tx, id)
            .await?
            .filter(|t| t.revoked_at.is_none() && in_scope(caller, t))
            .ok_or_else(|| StoreError::from(not_found()))?;
        caller.require(Action::ManageTokens)?;
        may_grant(caller, t.role, "revoke")?;
        if !revoke_and_record(&mut tx, &t, &caller.actor(), now).await? {
            return Err(not_found().into());
        }
        Ok::<_, StoreError>(())
    })?;
    // At once here; other servers follow the version bumped with it.
    app.caches.tokens_changed();
    Ok(())
}

/// Revokes a token by id with no caller to check (the command line, run by
/// whoever holds the database): false if there was no live token with it.
pub async fn revoke_as_operator(store: &Store, id: &str, now: chrono::DateTime<chrono::Utc>) -> Result<bool, Error> {
    let actor = Actor {
        actor: "system:cli".into(),
        request_id: None,
    };
    let revoked = in_transaction!(store, |tx| {
        match tokens::get(&mut tx, id).await? {
            Some(t) => revoke_and_record(&mut tx, &t, &actor, now).await,
            None => Ok::<_, StoreError>(false),
        }
    })?;
    Ok(revoked)
}

/// Revokes a token and records it in the audit log (of the token's org, if
/// it has one); false if it was already revoked.
async fn revoke_and_record(
    tx: &mut allot_store::Tx,
    t: &TokenInfo,
    actor: &Actor,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    if !tokens::revoke(tx, &t.id, now).await? {
        return Ok(false);
    }
    let target = format!("token:{}", t.id);
    audit::record(tx, t.org.as_deref(), actor, "token.revoke", &target, None, None, now).await?;
    Ok(true)
}
