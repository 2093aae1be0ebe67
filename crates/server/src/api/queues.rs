//! Contact-centre queues (R-DEP-1): call, outbound and inbox queues with
//! members. Each queue bills one product for every member, so a member must
//! hold that licence, the licence cannot be removed while the user is a
//! member (the planner refuses, naming the queues), a removal that leaves
//! such a licence billed answers with a warning, and one call takes a user
//! out of every queue and, if asked, off the licences they kept billed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use allot_domain::access::Action;
use allot_domain::planner::{Held, LicenseChange, RemoveLicense};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::licenses;
use allot_store::queues::{self, Queue};
use allot_store::{audit, catalogue, in_transaction, new_id, ts, users, StoreError, Tx};

use super::licenses::LicenseView;
use crate::auth::Ctx;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;
use crate::AppState;

const KINDS: [&str; 3] = ["call", "outbound", "inbox"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueInput {
    pub name: String,
    pub kind: String,
    pub product: ProductCode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    pub user: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveQuery {
    /// Also remove the licences the queues kept billed.
    pub remove_licenses: Option<bool>,
}

fn not_found(id: &str) -> StoreError {
    StoreError::Domain(Error::not_found(format!("Queue {id}")))
}

async fn user_exists(tx: &mut Tx, org: &str, user: &str) -> Result<(), StoreError> {
    if users::get(tx, org, user).await?.is_none() {
        return Err(Error::not_found(format!("User {user}")).into());
    }
    Ok(())
}

/// Warnings for a licence change: licences the user keeps that queue
/// memberships bill, with the queues.
pub async fn still_billed(tx: &mut Tx, org: &str, user: &str, held: &[LicenseView]) -> Result<Vec<Value>, Error> {
    let mine = queues::of_user(tx, org, user).await?;
    let mut out = Vec::new();
    for l in held {
        let names: Vec<&str> = mine.iter().filter(|q| q.product == l.product).map(|q| q.name.as_str()).collect();
        if !names.is_empty() {
            out.push(json!({
                "code": "still_billed",
                "product": l.product,
                "queues": mine.iter().filter(|q| q.product == l.product).map(|q| json!({ "id": q.id, "name": q.name })).collect::<Vec<_>>(),
                "message": format!(
                    "{} stays billed while the user is a member of {}. Remove them from all queues with DELETE /api/v1/orgs/{org}/users/{user}/queues?remove_licenses=true.",
                    l.product,
                    names.join(", ")
                ),
            }));
        }
    }
    Ok(out)
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/queues", tag = "queues", params(("org" = String, Path)),
    responses((status = 200, description = "The org's contact-centre queues")))]
pub async fn list(State(st): State<AppState>, ctx: Ctx, Path(org): Path<String>) -> ApiResult<Json<Value>> {
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::ReadLicenses).await?;
    Ok(Json(json!({ "items": queues::list(&mut rd, &org.id).await? })))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/queues", tag = "queues", params(("org" = String, Path)),
    responses((status = 201, description = "Created")))]
pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<QueueInput>,
) -> ApiResult<(StatusCode, Json<Queue>)> {
    let name = allot_domain::types::check_text("name", &input.name, 200)?;
    if !KINDS.contains(&input.kind.as_str()) {
        return Err(Error::validation("kind", format!("kind must be call, outbound or inbox, not \"{}\".", input.kind)).into());
    }
    let now = st.clock.now();
    let q = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::ManageQueues).await?;
        if catalogue::get(&mut tx, input.product.as_str()).await?.is_none() {
            return Err(Error::validation("product", format!("{} is not a product in the catalogue.", input.product)).into());
        }
        let q = Queue {
            id: new_id("que"),
            name: name.clone(),
            kind: input.kind.clone(),
            product: input.product.to_string(),
            created_at: ts(now),
        };
        queues::insert(&mut tx, &org.id, &q).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "queue.create",
            &format!("queue:{}", q.id),
            None,
            Some(&json!(q)),
            now,
        )
        .await?;
        Ok::<_, StoreError>(q)
    })?;
    Ok((StatusCode::CREATED, Json(q)))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/queues/{queue}", tag = "queues", params(("org" = String, Path), ("queue" = String, Path)),
    responses((status = 200, description = "The queue with its members")))]
pub async fn get(State(st): State<AppState>, ctx: Ctx, Path((org, queue)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::ReadUsers).await?;
    let q = queues::get(&mut rd, &org.id, &queue).await?.ok_or_else(|| not_found(&queue))?;
    let members = queues::members(&mut rd, &org.id, &queue).await?;
    let mut body = json!(q);
    body["members"] = json!(members);
    Ok(Json(body))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/queues/{queue}", tag = "queues", params(("org" = String, Path), ("queue" = String, Path)),
    responses((status = 204, description = "Deleted with its memberships")))]
pub async fn delete(State(st): State<AppState>, ctx: Ctx, Path((org, queue)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let now = st.clock.now();
    in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::ManageQueues).await?;
        let q = queues::get(&mut tx, &org.id, &queue).await?.ok_or_else(|| not_found(&queue))?;
        let members = queues::members(&mut tx, &org.id, &queue).await?;
        queues::delete(&mut tx, &org.id, &queue).await?;
        let mut before = json!(q);
        before["members"] = json!(members);
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "queue.delete",
            &format!("queue:{queue}"),
            Some(&before),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/queues/{queue}/members", tag = "queues", params(("org" = String, Path), ("queue" = String, Path)),
    responses((status = 200, description = "A member (again)"), (status = 422, description = "The user lacks the queue's licence")))]
pub async fn add_member(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, queue)): Path<(String, String)>,
    ApiJson(input): ApiJson<MemberInput>,
) -> ApiResult<Json<Value>> {
    let now = st.clock.now();
    let members = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::ManageQueues).await?;
        let q = queues::get(&mut tx, &org.id, &queue).await?.ok_or_else(|| not_found(&queue))?;
        let user = users::get(&mut tx, &org.id, &input.user)
            .await?
            .ok_or_else(|| StoreError::Domain(Error::not_found(format!("User {}", input.user))))?;
        // Bumping the user's licence version first: a licence change planned
        // before this membership fails its claim and plans again with it.
        users::lock_licences(&mut tx, &org.id, std::slice::from_ref(&user.id)).await?;
        let held = licenses::of_user(&mut tx, &org.id, &user.id).await?;
        if !held.iter().any(|a| a.held.product.as_str() == q.product) {
            return Err(Error::new(
                Code::NotAssigned,
                format!(
                    "{} does not hold {}, which queue {} bills: assign it first.",
                    user.email, q.product, q.name
                ),
            )
            .into());
        }
        if queues::add_member(&mut tx, &org.id, &queue, &user.id, now).await? {
            audit::record(
                &mut tx,
                Some(&org.id),
                &ctx.actor(),
                "queue.member_add",
                &format!("queue:{queue}"),
                None,
                Some(&json!({ "user": user.id })),
                now,
            )
            .await?;
        }
        queues::members(&mut tx, &org.id, &queue).await
    })?;
    Ok(Json(json!({ "queue": queue, "members": members })))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/queues/{queue}/members/{user}", tag = "queues",
    params(("org" = String, Path), ("queue" = String, Path), ("user" = String, Path)),
    responses((status = 204, description = "No longer a member")))]
pub async fn remove_member(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, queue, user)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let now = st.clock.now();
    in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::ManageQueues).await?;
        queues::get(&mut tx, &org.id, &queue).await?.ok_or_else(|| not_found(&queue))?;
        user_exists(&mut tx, &org.id, &user).await?;
        if !queues::remove_member(&mut tx, &org.id, &queue, &user).await? {
            return Err(Error::not_found(format!("User {user} in queue {queue}")).into());
        }
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "queue.member_remove",
            &format!("queue:{queue}"),
            Some(&json!({ "user": user })),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users/{user}/queues", tag = "queues", params(("org" = String, Path), ("user" = String, Path)),
    responses((status = 200, description = "The queues the user is a member of")))]
pub async fn of_user(State(st): State<AppState>, ctx: Ctx, Path((org, user)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::ReadUsers).await?;
    user_exists(&mut rd, &org.id, &user).await?;
    Ok(Json(json!({ "items": queues::of_user(&mut rd, &org.id, &user).await? })))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/users/{user}/queues", tag = "queues",
    params(("org" = String, Path), ("user" = String, Path), ("remove_licenses" = Option<bool>, Query)),
    responses((status = 200, description = "Out of every queue (and, if asked, off the licences they billed), in one transaction")))]
pub async fn leave_all(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, user)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<LeaveQuery>,
) -> ApiResult<Json<Value>> {
    let remove_licenses = q.remove_licenses.unwrap_or(false);
    let (now, today) = (st.clock.now(), st.clock.today());
    let (left, removed) = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::ManageQueues).await?;
        if remove_licenses {
            ctx.require(Action::WriteLicenses)?;
        }
        let u = users::get(&mut tx, &org.id, &user)
            .await?
            .ok_or_else(|| StoreError::Domain(Error::not_found(format!("User {user}"))))?;
        users::lock_licences(&mut tx, &org.id, std::slice::from_ref(&u.id)).await?;
        let left = queues::remove_from_all(&mut tx, &org.id, &u.id).await?;
        for q in &left {
            audit::record(
                &mut tx,
                Some(&org.id),
                &ctx.actor(),
                "queue.member_remove",
                &format!("queue:{}", q.id),
                Some(&json!({ "user": u.id })),
                None,
                now,
            )
            .await?;
        }
        let mut removed: Vec<Held> = Vec::new();
        if remove_licenses {
            let held: Vec<Held> = licenses::of_user(&mut tx, &org.id, &u.id)
                .await?
                .into_iter()
                .map(|a| a.held)
                .collect();
            let billed: Vec<RemoveLicense> = held
                .iter()
                .filter(|h| left.iter().any(|q| q.product == h.product.as_str()))
                .map(|h| RemoveLicense {
                    product: h.product.clone(),
                    subscription: Some(h.subscription.clone()),
                })
                .collect();
            if !billed.is_empty() {
                let change = LicenseChange {
                    add: Vec::new(),
                    remove: billed,
                    add_required: false,
                };
                // Out of every queue by now, so nothing keeps the licences.
                let plan = super::licenses::change_within(&mut tx, &org, &u.id, &change, &ctx.actor(), today, now)
                    .await?
                    .map_err(|refused| StoreError::Domain(Error::rejected(refused)))?;
                removed = plan.release;
            }
        }
        Ok::<_, StoreError>((left, removed))
    })?;
    Ok(Json(json!({ "left": left, "removed_licenses": removed })))
}
