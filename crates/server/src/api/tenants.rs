//! Partners, organisations, sites and groups.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use allot_domain::access::{Action, ScopeKind};
use allot_domain::types::CountryCode;
use allot_domain::Error;
use allot_store::tenants::{self, Group, Org, OrgScope, Partner, Site};
use allot_store::{audit, in_transaction, new_id, StoreError};

use crate::auth::Ctx;
use crate::extract::{paged, ApiJson, ApiQuery, PageQuery};
use crate::problem::ApiResult;
use crate::AppState;

fn check_name(name: &str, field: &str) -> Result<String, Error> {
    allot_domain::types::check_text(field, name, 200)
}

fn json<T: serde::Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

// ---- partners

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerInput {
    pub name: String,
}

#[utoipa::path(get, path = "/api/v1/partners", tag = "partners", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Partners in the caller's scope")))]
pub async fn list_partners(State(st): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Json<Value>> {
    ctx.require(Action::ReadPartners)?;
    let page = q.page()?;
    let only = match ctx.principal.role.scope_kind() {
        ScopeKind::Provider => None,
        _ => Some(ctx.principal.partner.clone().unwrap_or_default()),
    };
    let mut tx = st.store.begin_read().await?;
    let rows = tenants::list_partners(&mut tx, only.as_deref(), page.after.as_deref(), page.limit + 1).await?;
    Ok(Json(paged(rows, page.limit, |p| p.id.clone())))
}

#[utoipa::path(post, path = "/api/v1/partners", tag = "partners", responses((status = 201, description = "Created")))]
pub async fn create_partner(
    State(st): State<AppState>,
    ctx: Ctx,
    ApiJson(input): ApiJson<PartnerInput>,
) -> ApiResult<(StatusCode, Json<Partner>)> {
    ctx.require(Action::WritePartners)?;
    let name = check_name(&input.name, "name")?;
    let now = st.clock.now();
    let p = in_transaction!(st.store, |tx| {
        let p = tenants::insert_partner(&mut tx, &name, now).await?;
        audit::record(
            &mut tx,
            None,
            &ctx.actor(),
            "partner.create",
            &format!("partner:{}", p.id),
            None,
            json(&p).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p)
    })?;
    Ok((StatusCode::CREATED, Json(p)))
}

#[utoipa::path(get, path = "/api/v1/partners/{partner}", tag = "partners", params(("partner" = String, Path)),
    responses((status = 200, description = "The partner"), (status = 404, description = "Not in scope")))]
pub async fn get_partner(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Partner>> {
    ctx.partner(&id, Action::ReadPartners)?;
    let mut tx = st.store.begin_read().await?;
    Ok(Json(
        tenants::get_partner(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Partner {id}")))?,
    ))
}

// ---- orgs

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgInput {
    pub name: String,
    #[serde(default)]
    pub partner: Option<String>,
    #[serde(default)]
    pub default_usage_location: Option<CountryCode>,
    #[serde(default)]
    pub payment_method_on_file: bool,
    #[serde(default = "yes")]
    pub self_service_purchase: bool,
}

fn yes() -> bool {
    true
}

/// A PATCH field that may be set to null: absent (None), null (Some(None)) or a value.
fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub partner: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub default_usage_location: Option<Option<CountryCode>>,
    pub payment_method_on_file: Option<bool>,
    pub self_service_purchase: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/orgs", tag = "orgs", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Organisations in the caller's scope")))]
pub async fn list_orgs(State(st): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Json<Value>> {
    ctx.require(Action::ReadOrg)?;
    let page = q.page()?;
    let p = &ctx.principal;
    let scope = match p.role.scope_kind() {
        ScopeKind::Provider => OrgScope::default(),
        ScopeKind::Partner => OrgScope {
            partner: Some(p.partner.clone().unwrap_or_default()),
            org: None,
        },
        ScopeKind::Org => OrgScope {
            partner: None,
            org: Some(p.org.clone().unwrap_or_default()),
        },
    };
    let mut tx = st.store.begin_read().await?;
    let rows = tenants::list_orgs(&mut tx, &scope, page.after.as_deref(), page.limit + 1).await?;
    Ok(Json(paged(rows, page.limit, |o| o.id.clone())))
}

#[utoipa::path(post, path = "/api/v1/orgs", tag = "orgs", responses((status = 201, description = "Created")))]
pub async fn create_org(State(st): State<AppState>, ctx: Ctx, ApiJson(input): ApiJson<OrgInput>) -> ApiResult<(StatusCode, Json<Org>)> {
    ctx.require(Action::CreateOrg)?;
    // A partner creates customers under itself; naming another partner is naming something it cannot see.
    let partner = match ctx.principal.role.scope_kind() {
        ScopeKind::Partner => {
            let own = ctx.principal.partner.clone();
            if input.partner.is_some() && input.partner != own {
                return Err(Error::not_found(format!("Partner {}", input.partner.unwrap_or_default())).into());
            }
            own
        }
        _ => input.partner.clone(),
    };
    let now = st.clock.now();
    let org = Org {
        id: new_id("org"),
        name: check_name(&input.name, "name")?,
        partner,
        default_usage_location: input.default_usage_location.map(|c| c.to_string()),
        payment_method_on_file: input.payment_method_on_file,
        self_service_purchase: input.self_service_purchase,
        created_at: allot_store::ts(now),
    };
    let org = in_transaction!(st.store, |tx| {
        if let Some(p) = &org.partner {
            if tenants::get_partner(&mut tx, p).await?.is_none() {
                return Err(Error::not_found(format!("Partner {p}")).into());
            }
        }
        tenants::insert_org(&mut tx, &org, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "org.create",
            &format!("org:{}", org.id),
            None,
            json(&org).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(org.clone())
    })?;
    Ok((StatusCode::CREATED, Json(org)))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "orgs", params(("org" = String, Path)),
    responses((status = 200, description = "The organisation"), (status = 404, description = "Not in scope")))]
pub async fn get_org(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Org>> {
    let mut tx = st.store.begin_read().await?;
    Ok(Json(ctx.org(&mut tx, &id, Action::ReadOrg).await?))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}", tag = "orgs", params(("org" = String, Path)), responses((status = 200, description = "Updated")))]
pub async fn patch_org(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<OrgPatch>,
) -> ApiResult<Json<Org>> {
    let now = st.clock.now();
    let name = patch.name.as_deref().map(|n| check_name(n, "name")).transpose()?;
    let org = in_transaction!(st.store, |tx| {
        let before = ctx.org(&mut tx, &id, Action::WriteOrg).await?;
        let mut org = before.clone();
        if let Some(n) = &name {
            org.name = n.clone();
        }
        // Fields some writers may not set: refused by name, before anything changes.
        if patch.payment_method_on_file.is_some() {
            ctx.require_for_field(Action::SetBillingTerms, "payment_method_on_file")?;
        }
        if patch.self_service_purchase.is_some() {
            ctx.require_for_field(Action::SetBillingTerms, "self_service_purchase")?;
        }
        if let Some(p) = &patch.partner {
            // Moving a customer between partners is the provider's call.
            ctx.require_for_field(Action::WritePartners, "partner")?;
            if let Some(pid) = p {
                if tenants::get_partner(&mut tx, pid).await?.is_none() {
                    return Err(Error::not_found(format!("Partner {pid}")).into());
                }
            }
            org.partner = p.clone();
        }
        if let Some(l) = &patch.default_usage_location {
            org.default_usage_location = l.as_ref().map(|c| c.to_string());
        }
        if let Some(v) = patch.payment_method_on_file {
            org.payment_method_on_file = v;
        }
        if let Some(v) = patch.self_service_purchase {
            org.self_service_purchase = v;
        }
        tenants::update_org(&mut tx, &org, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "org.update",
            &format!("org:{}", org.id),
            json(&before).as_ref(),
            json(&org).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(org)
    })?;
    Ok(Json(org))
}

// ---- sites and groups

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    pub url: String,
    #[serde(default)]
    pub attendee_accounts_enabled: bool,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sites", tag = "orgs", params(("org" = String, Path)), responses((status = 200, description = "Sites")))]
pub async fn list_sites(State(st): State<AppState>, ctx: Ctx, Path(org): Path<String>) -> ApiResult<Json<Value>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadOrg).await?;
    let sites = tenants::list_sites(&mut tx, &org.id).await?;
    Ok(Json(serde_json::json!({ "items": sites, "next_cursor": null })))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/sites", tag = "orgs", params(("org" = String, Path)), responses((status = 201, description = "Created")))]
pub async fn create_site(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<SiteInput>,
) -> ApiResult<(StatusCode, Json<Site>)> {
    let url = input.url.trim().to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 200 || url.chars().any(char::is_whitespace) {
        return Err(Error::validation("url", format!("\"{url}\" is not a site URL such as https://acme.example.com.")).into());
    }
    let now = st.clock.now();
    let site = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteOrg).await?;
        let site = tenants::insert_site(&mut tx, &org.id, &url, input.attendee_accounts_enabled, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "site.create",
            &format!("site:{}", site.id),
            None,
            json(&site).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(site)
    })?;
    Ok((StatusCode::CREATED, Json(site)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    pub name: String,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/groups", tag = "orgs", params(("org" = String, Path)), responses((status = 200, description = "Groups")))]
pub async fn list_groups(State(st): State<AppState>, ctx: Ctx, Path(org): Path<String>) -> ApiResult<Json<Value>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadUsers).await?;
    let groups = tenants::list_groups(&mut tx, &org.id).await?;
    Ok(Json(serde_json::json!({ "items": groups, "next_cursor": null })))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/groups", tag = "orgs", params(("org" = String, Path)), responses((status = 201, description = "Created")))]
pub async fn create_group(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<GroupInput>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    let name = check_name(&input.name, "name")?;
    let now = st.clock.now();
    let group = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteUsers).await?;
        let g = tenants::insert_group(&mut tx, &org.id, &name, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "group.create",
            &format!("group:{}", g.id),
            None,
            json(&g).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(g)
    })?;
    Ok((StatusCode::CREATED, Json(group)))
}
