//! Users of an org.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use allot_domain::access::Action;
use allot_domain::types::{CountryCode, Email, UserKind, UserStatus};
use allot_domain::Error;
use allot_store::users::{self, User, UserFilter};
use allot_store::{audit, in_transaction, licenses, new_id, StoreError, Tx};

use crate::auth::Ctx;
use crate::extract::{paged, ApiJson, ApiQuery, PageQuery};
use crate::problem::ApiResult;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub email: Email,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub kind: Option<UserKind>,
    #[serde(default)]
    pub status: Option<UserStatus>,
    #[serde(default)]
    pub usage_location: Option<CountryCode>,
    #[serde(default)]
    pub site_admin_of: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub email: Option<Email>,
    pub display_name: Option<String>,
    pub kind: Option<UserKind>,
    pub status: Option<UserStatus>,
    #[serde(default, deserialize_with = "double_option")]
    pub usage_location: Option<Option<CountryCode>>,
    pub site_admin_of: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub email: Option<String>,
    pub kind: Option<UserKind>,
    pub status: Option<UserStatus>,
    pub q: Option<String>,
}

fn check_display_name(n: &str) -> Result<String, Error> {
    if n.trim().is_empty() {
        return Ok(String::new());
    }
    allot_domain::types::check_text("display_name", n, 200)
}

async fn check_links(tx: &mut Tx, org: &str, u: &User) -> Result<(), StoreError> {
    let missing = users::unknown_links(tx, org, &u.site_admin_of, &u.groups).await?;
    if !missing.is_empty() {
        return Err(Error::validation("site_admin_of", format!("Not in this organisation: {}.", missing.join(", "))).into());
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users", tag = "users",
    params(("org" = String, Path), ("email" = Option<String>, Query), ("kind" = Option<String>, Query), ("status" = Option<String>, Query),
           ("q" = Option<String>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Users")))]
pub async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> ApiResult<Json<Value>> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    if let Some(t) = &q.q {
        allot_domain::types::check_search("q", t, 200)?;
    }
    if let Some(t) = &q.email {
        allot_domain::types::check_search("email", t, 254)?;
    }
    let filter = UserFilter {
        email: q.email.clone(),
        kind: q.kind.map(|k| k.as_str().to_string()),
        status: q.status.map(|s| s.as_str().to_string()),
        q: q.q.clone().filter(|s| !s.is_empty()),
    };
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadUsers).await?;
    let rows = users::list(&mut tx, &org.id, &filter, page.after.as_deref(), page.limit + 1).await?;
    Ok(Json(paged(rows, page.limit, |u| u.id.clone())))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/users", tag = "users", params(("org" = String, Path)),
    responses((status = 201, description = "Created"), (status = 409, description = "email_taken"), (status = 422, description = "Invalid")))]
pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<UserInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let kind = input.kind.unwrap_or(UserKind::Internal);
    let status = input.status.unwrap_or(UserStatus::initial(kind));
    let u = User {
        id: new_id("usr"),
        email: input.email.to_string(),
        display_name: check_display_name(input.display_name.as_deref().unwrap_or(""))?,
        kind: kind.as_str().to_string(),
        status: status.as_str().to_string(),
        usage_location: input.usage_location.map(|c| c.to_string()),
        site_admin_of: input.site_admin_of.clone(),
        groups: input.groups.clone(),
    };
    let (now, today) = (st.clock.now(), st.clock.today());
    let (u, from_template) = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteUsers).await?;
        if !u.site_admin_of.is_empty() {
            ctx.require_for_field(Action::GrantSiteAdmin, "site_admin_of")?;
        }
        check_links(&mut tx, &org.id, &u).await?;
        users::insert(&mut tx, &org.id, &u, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "user.create",
            &format!("user:{}", u.id),
            None,
            serde_json::to_value(&u).ok().as_ref(),
            now,
        )
        .await?;
        // R-TPL-1: the enabled template that fits the new user gives its licences.
        let from_template = super::templates::give_new_user_template(&mut tx, &org, &u, &ctx.actor(), today, now).await?;
        Ok::<_, StoreError>((u.clone(), from_template))
    })?;
    let mut body = serde_json::to_value(&u).map_err(|e| Error::internal(format!("cannot show the user: {e}")))?;
    if let (Some(t), Some(obj)) = (from_template, body.as_object_mut()) {
        obj.insert("license_template".into(), t);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users/{user}", tag = "users", params(("org" = String, Path), ("user" = String, Path)),
    responses((status = 200, description = "The user"), (status = 404, description = "Not found")))]
pub async fn get(State(st): State<AppState>, ctx: Ctx, Path((org, user)): Path<(String, String)>) -> ApiResult<Json<User>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadUsers).await?;
    Ok(Json(
        users::get(&mut tx, &org.id, &user)
            .await?
            .ok_or_else(|| Error::not_found(format!("User {user}")))?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/users/{user}", tag = "users", params(("org" = String, Path), ("user" = String, Path)),
    responses((status = 200, description = "Updated")))]
pub async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, user)): Path<(String, String)>,
    ApiJson(p): ApiJson<UserPatch>,
) -> ApiResult<Json<User>> {
    let display_name = p.display_name.as_deref().map(check_display_name).transpose()?;
    let now = st.clock.now();
    let u = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteUsers).await?;
        if p.site_admin_of.is_some() {
            ctx.require_for_field(Action::GrantSiteAdmin, "site_admin_of")?;
        }
        let before = users::get_for_update(&mut tx, &org.id, &user)
            .await?
            .ok_or_else(|| Error::not_found(format!("User {user}")))?;
        let mut u = before.clone();
        if let Some(e) = &p.email {
            u.email = e.to_string();
        }
        if let Some(n) = &display_name {
            u.display_name = n.clone();
        }
        if let Some(k) = p.kind {
            u.kind = k.as_str().to_string();
        }
        if let Some(s) = p.status {
            u.status = s.as_str().to_string();
        }
        if let Some(l) = &p.usage_location {
            u.usage_location = l.as_ref().map(|c| c.to_string());
        }
        if let Some(s) = &p.site_admin_of {
            u.site_admin_of = s.clone();
        }
        if let Some(g) = &p.groups {
            u.groups = g.clone();
        }
        check_links(&mut tx, &org.id, &u).await?;
        users::update(&mut tx, &org.id, &u, now).await?;
        let (b, a) = (serde_json::to_value(&before).ok(), serde_json::to_value(&u).ok());
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "user.update",
            &format!("user:{}", u.id),
            b.as_ref(),
            a.as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(u)
    })?;
    Ok(Json(u))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/users/{user}", tag = "users", params(("org" = String, Path), ("user" = String, Path)),
    responses((status = 204, description = "Deleted; the user's seats are released")))]
pub async fn delete(State(st): State<AppState>, ctx: Ctx, Path((org, user)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let now = st.clock.now();
    in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteUsers).await?;
        let before = users::get_for_update(&mut tx, &org.id, &user)
            .await?
            .ok_or_else(|| Error::not_found(format!("User {user}")))?;
        let released = licenses::release_all(&mut tx, &org.id, &user).await?;
        users::delete(&mut tx, &org.id, &user).await?;
        let b = serde_json::json!({ "user": before, "licenses": released });
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "user.delete",
            &format!("user:{user}"),
            Some(&b),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
