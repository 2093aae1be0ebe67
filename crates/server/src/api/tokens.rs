//! API tokens: list the live ones in the caller's scope, create one (its
//! secret answered once), revoke one. A revoked or expired token stops
//! working on its very next request: every request reads the token's row.
//!
//! Who may: roles with `ManageTokens` (provider, partner and org super
//! admins), never granting a role above their own; a token bound to a
//! tenant outside the caller's scope is 404, as everything else is.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use allot_domain::access::{Action, Role, ScopeKind};
use allot_domain::{Code, Error};
use allot_store::tokens::{self, TokenInfo};
use allot_store::{audit, in_transaction, StoreError};

use crate::auth::{issue_token, Ctx, TokenSpec};
use crate::extract::{ApiJson, ApiQuery, PageQuery};
use crate::problem::ApiResult;
use crate::AppState;

/// A token as shown: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: Option<String>,
    pub role: String,
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
            role: t.role.as_str().to_string(),
            partner: t.partner,
            org: t.org,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

/// A new token: the view and, this once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// The secret to send as `Authorization: Bearer <token>`. Shown only now.
    pub token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    #[serde(default)]
    pub name: Option<String>,
    /// One of the roles (provider_admin, partner_admin, ..., org_read_only).
    #[schema(value_type = String)]
    pub role: Role,
    #[serde(default)]
    pub partner: Option<String>,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// 403 unless the caller may hand out (and so `verb`) a token of `role`:
/// no role above one's own.
fn may_grant(ctx: &Ctx, role: Role, verb: &str) -> Result<(), Error> {
    if ctx.principal.may_grant(role) {
        return Ok(());
    }
    Err(Error::new(
        Code::Forbidden,
        format!(
            "A {} token may not {verb} a {} token: no role above one's own.",
            ctx.principal.role.as_str(),
            role.as_str()
        ),
    ))
}

/// Whether a stored token lies in the caller's scope.
fn in_scope(ctx: &Ctx, t: &TokenInfo) -> bool {
    let p = &ctx.principal;
    match p.role.scope_kind() {
        ScopeKind::Provider => true,
        ScopeKind::Partner => p.partner.is_some() && (t.partner == p.partner || (t.org.is_some() && t.org_partner == p.partner)),
        ScopeKind::Org => t.org.is_some() && t.org == p.org,
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Live tokens in the caller's scope", body = TokenList)))]
pub async fn list(State(st): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Json<TokenList>> {
    ctx.require(Action::ManageTokens)?;
    let page = q.page()?;
    let mut rd = st.store.read_conn().await?;
    // Tokens are few; read past those out of scope until the page is full.
    let mut items = Vec::new();
    let mut after = page.after.clone();
    loop {
        let batch = tokens::list_live(&mut rd, after.as_deref(), 1000).await?;
        let done = batch.len() < 1000;
        after = batch.last().map(|t| t.id.clone());
        items.extend(batch.into_iter().filter(|t| in_scope(&ctx, t)));
        if done || items.len() as i64 > page.limit {
            break;
        }
    }
    let more = items.len() as i64 > page.limit;
    items.truncate(page.limit as usize);
    let next_cursor = if more { items.last().map(|t| t.id.clone()) } else { None };
    Ok(Json(TokenList {
        items: items.into_iter().map(TokenView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenInput,
    responses((status = 201, description = "Created; the secret is in `token`, shown only now", body = CreatedToken)))]
pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    // The tenant first (404 outside the caller's scope), then the role (403),
    // as everywhere.
    if let Some(partner) = &input.partner {
        ctx.partner(partner, Action::ManageTokens)?;
    }
    if let Some(org) = &input.org {
        let mut rd = st.store.read_conn().await?;
        ctx.org(&mut rd, org, Action::ManageTokens).await?;
    }
    ctx.require(Action::ManageTokens)?;
    if input.partner.is_none() && input.org.is_none() && ctx.principal.role.scope_kind() != ScopeKind::Provider {
        return Err(Error::new(
            Code::Forbidden,
            "Only a provider admin may create a token bound to no partner or org.",
        )
        .into());
    }
    may_grant(&ctx, input.role, "create")?;
    let spec = TokenSpec {
        role: input.role,
        partner: input.partner.as_deref(),
        org: input.org.as_deref(),
        label: input.name.as_deref(),
        expires_at: input.expires_at,
    };
    let now = st.clock.now();
    let (id, secret) = issue_token(&st.store, &spec, Some(&ctx.actor()), now).await?;
    let mut rd = st.store.read_conn().await?;
    let info = tokens::get(&mut rd, &id)
        .await?
        .ok_or_else(|| Error::internal("The token just created cannot be read back."))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            view: info.into(),
            token: secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{token}", tag = "tokens", params(("token" = String, Path, description = "The token's id (not its secret)")),
    responses((status = 204, description = "Revoked: it stops working at once"), (status = 404, description = "No live token with that id in the caller's scope")))]
pub async fn revoke(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let now = st.clock.now();
    let not_found = || Error::not_found(format!("Token {id}"));
    in_transaction!(st.store, |tx| {
        let t = tokens::get(&mut tx, &id)
            .await?
            .filter(|t| t.revoked_at.is_none() && in_scope(&ctx, t))
            .ok_or_else(|| StoreError::from(not_found()))?;
        ctx.require(Action::ManageTokens)?;
        may_grant(&ctx, t.role, "revoke")?;
        if !revoke_and_record(&mut tx, &t, &ctx.actor(), now).await? {
            return Err(not_found().into());
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a token by id with no caller to check (the command line, run by
/// whoever holds the database): false if there was no live token with it.
pub async fn revoke_as_operator(store: &allot_store::Store, id: &str, now: chrono::DateTime<chrono::Utc>) -> Result<bool, Error> {
    let actor = allot_store::audit::Actor {
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
    actor: &allot_store::audit::Actor,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    if !tokens::revoke(tx, &t.id, now).await? {
        return Ok(false);
    }
    let target = format!("token:{}", t.id);
    audit::record(tx, t.org.as_deref(), actor, "token.revoke", &target, None, None, now).await?;
    Ok(true)
}
