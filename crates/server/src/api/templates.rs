//! Licence templates (R-TPL-1/2): CRUD, applying one to existing users as a
//! job, and giving every new user the licences of the template that fits it
//! (a group template of one of its groups wins over the org's).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use allot_domain::access::Action;
use allot_domain::bulk::UserFilter;
use allot_domain::templates::{template_change, TemplateLicense};
use allot_domain::{Code, Error, Violation};
use allot_store::audit::Actor;
use allot_store::jobs::{self, Job};
use allot_store::templates::{self, Template};
use allot_store::{audit, catalogue, in_transaction, new_id, subscriptions, tenants, ts, users, StoreError, Tx};

use super::jobs::job_view;
use crate::auth::Ctx;
use crate::extract::ApiJson;
use crate::problem::ApiResult;
use crate::worker::per_user::{TemplateApplyRequest, TEMPLATE_JOB_KIND};
use crate::worker::CHUNK_USERS;
use crate::AppState;

/// `"org"` or `{"group": id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    Named(String),
    Group { group: String },
}

impl Scope {
    fn of(t: &Template) -> Scope {
        match &t.group {
            None => Scope::Named("org".into()),
            Some(g) => Scope::Group { group: g.clone() },
        }
    }
    fn group(&self) -> Result<Option<String>, Error> {
        match self {
            Scope::Named(s) if s == "org" => Ok(None),
            Scope::Named(other) => Err(Error::validation(
                "scope",
                format!("scope must be \"org\" or {{\"group\": \"<group id>\"}}, not \"{other}\"."),
            )),
            Scope::Group { group } => Ok(Some(group.clone())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub name: String,
    pub scope: Scope,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub licenses: Vec<TemplateLicense>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    pub name: Option<String>,
    pub scope: Option<Scope>,
    pub enabled: Option<bool>,
    pub licenses: Option<Vec<TemplateLicense>>,
}

pub fn view(t: &Template) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "scope": Scope::of(t),
        "enabled": t.enabled,
        "licenses": t.licenses,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    })
}

/// What a template names must exist in the org: its group, each product,
/// each subscription (carrying that product); no product twice.
async fn check(tx: &mut Tx, org: &str, t: &Template) -> Result<(), StoreError> {
    allot_domain::types::check_text("name", &t.name, 200)?;
    if let Some(g) = &t.group {
        if !users::unknown_links(tx, org, &[], std::slice::from_ref(g)).await?.is_empty() {
            return Err(Error::not_found(format!("Group {g}")).into());
        }
    }
    if t.licenses.is_empty() {
        return Err(Error::validation("licenses", "A template names at least one licence.").into());
    }
    let cat = catalogue::all(tx).await?;
    let mut bad = Vec::new();
    for (i, l) in t.licenses.iter().enumerate() {
        let field = format!("licenses[{i}]");
        if !cat.contains_key(&l.product) {
            bad.push(Violation::new(Code::ValidationFailed, format!("There is no product {}.", l.product)).field(&field));
            continue;
        }
        if t.licenses[..i].iter().any(|o| o.product == l.product) {
            bad.push(Violation::new(Code::ValidationFailed, format!("{} is named twice.", l.product)).field(&field));
        }
        if let Some(s) = &l.subscription {
            let sub = subscriptions::get(tx, org, s)
                .await?
                .ok_or_else(|| StoreError::Domain(subscriptions::not_found(s)))?;
            if !sub.items.iter().any(|i| i.product == l.product.as_str()) {
                bad.push(
                    Violation::new(Code::ValidationFailed, format!("Subscription {s} carries no {}.", l.product))
                        .field(&field)
                        .subscription(s),
                );
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::rejected(bad).into())
    }
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/license-templates", tag = "templates", params(("org" = String, Path)),
    responses((status = 200, description = "The org's licence templates, oldest first")))]
pub async fn list(State(st): State<AppState>, ctx: Ctx, Path(org): Path<String>) -> ApiResult<Json<Value>> {
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::ReadLicenses).await?;
    let items: Vec<Value> = templates::list(&mut rd, &org.id).await?.iter().map(view).collect();
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-templates", tag = "templates", params(("org" = String, Path)),
    responses((status = 201, description = "Created"), (status = 422, description = "Invalid")))]
pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<TemplateInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let now = st.clock.now();
    let group = input.scope.group()?;
    let t = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteLicenses).await?;
        let t = Template {
            org: org.id.clone(),
            id: new_id("tpl"),
            name: input.name.trim().to_string(),
            group: group.clone(),
            enabled: input.enabled,
            licenses: input.licenses.clone(),
            created_at: ts(now),
            updated_at: ts(now),
        };
        check(&mut tx, &org.id, &t).await?;
        templates::insert(&mut tx, &t).await?;
        let after = view(&t);
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "template.create",
            &format!("template:{}", t.id),
            None,
            Some(&after),
            now,
        )
        .await?;
        Ok::<_, StoreError>(t)
    })?;
    Ok((StatusCode::CREATED, Json(view(&t))))
}

async fn find(tx: &mut Tx, org: &str, id: &str) -> Result<Template, StoreError> {
    templates::get(tx, org, id)
        .await?
        .ok_or_else(|| StoreError::Domain(Error::not_found(format!("Licence template {id}"))))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/license-templates/{tpl}", tag = "templates", params(("org" = String, Path), ("tpl" = String, Path)),
    responses((status = 200, description = "The template"), (status = 404, description = "Not found")))]
pub async fn get(State(st): State<AppState>, ctx: Ctx, Path((org, tpl)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::ReadLicenses).await?;
    Ok(Json(view(&find(&mut rd, &org.id, &tpl).await?)))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/license-templates/{tpl}", tag = "templates", params(("org" = String, Path), ("tpl" = String, Path)),
    responses((status = 200, description = "Updated"), (status = 404, description = "Not found")))]
pub async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, tpl)): Path<(String, String)>,
    ApiJson(p): ApiJson<TemplatePatch>,
) -> ApiResult<Json<Value>> {
    let now = st.clock.now();
    let group = p.scope.as_ref().map(Scope::group).transpose()?;
    let t = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteLicenses).await?;
        let before = find(&mut tx, &org.id, &tpl).await?;
        let mut t = before.clone();
        if let Some(n) = &p.name {
            t.name = n.trim().to_string();
        }
        if let Some(g) = &group {
            t.group = g.clone();
        }
        if let Some(e) = p.enabled {
            t.enabled = e;
        }
        if let Some(l) = &p.licenses {
            t.licenses = l.clone();
        }
        check(&mut tx, &org.id, &t).await?;
        templates::update(&mut tx, &t, now).await?;
        t.updated_at = ts(now);
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "template.update",
            &format!("template:{}", t.id),
            Some(&view(&before)),
            Some(&view(&t)),
            now,
        )
        .await?;
        Ok::<_, StoreError>(t)
    })?;
    Ok(Json(view(&t)))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/license-templates/{tpl}", tag = "templates", params(("org" = String, Path), ("tpl" = String, Path)),
    responses((status = 204, description = "Deleted; licences it gave stay"), (status = 404, description = "Not found")))]
pub async fn delete(State(st): State<AppState>, ctx: Ctx, Path((org, tpl)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let now = st.clock.now();
    in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteLicenses).await?;
        let before = find(&mut tx, &org.id, &tpl).await?;
        templates::delete(&mut tx, &org.id, &tpl).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "template.delete",
            &format!("template:{tpl}"),
            Some(&view(&before)),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyInput {
    #[serde(default = "yes")]
    pub existing_users: bool,
    #[serde(default = "yes")]
    pub retain_existing: bool,
    #[serde(default)]
    pub dry_run: bool,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-templates/{tpl}/apply", tag = "templates", params(("org" = String, Path), ("tpl" = String, Path)),
    responses((status = 202, description = "A template_apply job over the template's users (the org's, or the group's members)")))]
pub async fn apply(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, tpl)): Path<(String, String)>,
    ApiJson(input): ApiJson<ApplyInput>,
) -> ApiResult<Response> {
    if !input.existing_users {
        return Err(Error::validation(
            "existing_users",
            "Only existing users can be given a template now: new users get the enabled template that fits them when they are created.",
        )
        .into());
    }
    let now = st.clock.now();
    let (org, t) = {
        let mut rd = st.store.read_conn().await?;
        let org = ctx.org(&mut rd, &org, Action::WriteLicenses).await?;
        let t = find(&mut rd, &org.id, &tpl).await?;
        (org, t)
    };
    let request = TemplateApplyRequest {
        template: t.id.clone(),
        licenses: t.licenses.clone(),
        retain_existing: input.retain_existing,
        dry_run: input.dry_run,
    };
    let filter = UserFilter {
        group: t.group.clone(),
        ..UserFilter::default()
    };
    // Its users are stored below, in the job's own transaction (which sets
    // the counts).
    let job = Job::queued(
        &org.id,
        TEMPLATE_JOB_KIND,
        serde_json::to_string(&request).map_err(|e| Error::internal(format!("cannot store the request: {e}")))?,
        ctx.actor().actor,
        now,
        Some((0, 0)),
    );
    // The users are those of the template's scope now, in chunks stored
    // with the job in one transaction.
    let job = in_transaction!(st.store, |tx| {
        jobs::insert(&mut tx, &job).await?;
        let (mut after, mut seq, mut total) = (String::new(), 0i64, 0i64);
        loop {
            let page = users::ids_matching(&mut tx, &org.id, &filter, &after, CHUNK_USERS as i64).await?;
            let Some(last) = page.last() else { break };
            after = last.clone();
            total += page.len() as i64;
            let full = page.len() == CHUNK_USERS;
            jobs::insert_chunks(&mut tx, &org.id, &job.id, seq, &[page]).await?;
            seq += 1;
            if !full {
                break;
            }
        }
        jobs::set_resolved(&mut tx, &org.id, &job.id, seq, total).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "template.apply",
            &format!("template:{}", t.id),
            None,
            Some(&json!({ "job": job.id, "users": total, "retain_existing": input.retain_existing, "dry_run": input.dry_run })),
            now,
        )
        .await?;
        let mut j = job.clone();
        (j.chunks, j.total) = (seq, total);
        Ok::<_, StoreError>(j)
    })?;
    crate::worker::job_created();
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": job_view(&job) }))).into_response())
}

/// Gives a user just created the licences of the enabled template that fits
/// it, in the creating transaction. The user is created either way: a
/// refusal (no seat left, a rule) is answered with the reasons, so the
/// caller can fix it; nothing of the template is applied then.
pub async fn give_new_user_template(
    tx: &mut Tx,
    org: &tenants::Org,
    user: &users::User,
    who: &Actor,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Value>, StoreError> {
    let all = templates::list(tx, &org.id).await?;
    let Some(t) = templates::choose(&all, &user.groups) else {
        return Ok(None);
    };
    let Some(change) = template_change(&t.licenses, &[], true) else {
        return Ok(None);
    };
    match super::licenses::change_within(tx, org, &user.id, &change, who, today, now).await {
        Ok(Ok(plan)) => Ok(Some(json!({ "template": t.id, "applied": true, "licenses": plan.result }))),
        Ok(Err(errors)) => Ok(Some(json!({ "template": t.id, "applied": false, "errors": errors }))),
        // A seat the plan counted on went to someone else while it was
        // written: the whole creation starts over, and the planner then sees
        // the pool full and says so (the user is still created).
        Err(StoreError::Domain(e)) if e.code == Code::SeatsExhausted => Err(StoreError::Retry(format!(
            "a seat for the template was taken concurrently: {}",
            e.detail
        ))),
        Err(e) => Err(e),
    }
}
