//! Bulk licence changes: the manage-licences summary, job creation, a job's
//! progress and results, and cancellation. The work itself is done by the
//! worker in `crate::jobs`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use allot_domain::access::Action;
use allot_domain::bulk::{holder_state, LicenseJobRequest, Outcome, UserResult};
use allot_domain::{Code, Error};
use allot_store::jobs::{self, Job};
use allot_store::{audit, catalogue, in_transaction, subscriptions, users};

use crate::auth::Ctx;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;
use crate::worker::CHUNK_USERS;
use crate::AppState;

/// Bodies of bulk requests may name up to a million users.
pub const MAX_BULK_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The largest page of a job's results.
pub const MAX_RESULTS_PAGE: i64 = 10_000;

pub fn job_view(j: &Job) -> Value {
    let stored: Value = serde_json::from_str(&j.request).unwrap_or(Value::Null);
    // A cancel job keeps its licence change under "change".
    let req = stored.get("change").unwrap_or(&stored);
    json!({
        "id": j.id,
        "org": j.org,
        "kind": j.kind,
        "state": j.state,
        "mode": req.get("mode").cloned().unwrap_or(json!("per_user")),
        "dry_run": req.get("dry_run").cloned().unwrap_or(json!(false)),
        "progress": { "done": j.done, "total": j.total, "succeeded": j.succeeded, "failed": j.failed },
        "cancel_requested": j.cancel_requested,
        "error": j.error.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()),
        "created_by": j.created_by,
        "created_at": j.created_at,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
    })
}

/// Refuses a list naming any user that is not the org's, as a whole and
/// without saying which (other tenants' ids must not be probed).
async fn check_listed_users(tx: &mut allot_store::Tx, org: &str, ids: &[String]) -> Result<(), Error> {
    let mut found = 0i64;
    for batch in ids.chunks(CHUNK_USERS) {
        found += users::count_existing(tx, org, batch).await?;
    }
    if found != ids.len() as i64 {
        return Err(Error::new(
            Code::NotFound,
            format!(
                "{} of the {} listed users are not users of this organisation; nothing was started.",
                ids.len() as i64 - found,
                ids.len()
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryRequest {
    pub users: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-summary", tag = "bulk", params(("org" = String, Path)),
    responses((status = 200, description = "Per subscription item: available seats, holders among the users, all/some/none")))]
pub async fn license_summary(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<SummaryRequest>,
) -> ApiResult<Json<Value>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadLicenses).await?;
    ctx.require(Action::ReadUsers)?;
    if req.users.is_empty() {
        return Err(Error::validation("users", "The users list is empty.").into());
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = req.users.iter().find(|u| !seen.insert(u.as_str())) {
        return Err(Error::validation("users", format!("User {dup} is listed twice.")).into());
    }
    check_listed_users(&mut tx, &org.id, &req.users).await?;
    let cat = catalogue::all(&mut tx).await?;
    let mut holders: HashMap<(String, String), Vec<String>> = HashMap::new();
    for batch in req.users.chunks(CHUNK_USERS) {
        for (user, assignments) in allot_store::licenses::of_users(&mut tx, &org.id, batch).await? {
            for a in assignments {
                holders
                    .entry((a.held.subscription.clone(), a.held.product.to_string()))
                    .or_default()
                    .push(user.clone());
            }
        }
    }
    let items: Vec<Value> = subscriptions::license_rows(&mut tx, &org.id)
        .await?
        .into_iter()
        .map(|r| {
            let mut who = holders.remove(&(r.subscription.clone(), r.product.clone())).unwrap_or_default();
            who.sort();
            let name = allot_domain::types::ProductCode::parse(&r.product)
                .ok()
                .and_then(|c| cat.get(&c).map(|p| p.name.clone()))
                .unwrap_or_else(|| r.product.clone());
            json!({
                "product": r.product,
                "name": name,
                "subscription": r.subscription,
                "total": r.total,
                "consumed": r.consumed,
                "available": r.total - r.consumed,
                "state": holder_state(who.len(), req.users.len()),
                "holders": who,
            })
        })
        .collect();
    Ok(Json(json!({ "users": req.users.len(), "items": items })))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-jobs", tag = "bulk", params(("org" = String, Path)),
    responses((status = 202, description = "The job, queued"),
              (status = 404, description = "A listed user is not the organisation's"),
              (status = 422, description = "The request is refused; no job was created")))]
pub async fn create_license_job(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<LicenseJobRequest>,
) -> ApiResult<Response> {
    // Scope and role first: another tenant's org is 404 whatever the body says.
    let org = {
        let mut rd = st.store.read_conn().await?;
        let org = ctx.org(&mut rd, &org, Action::WriteLicenses).await?;
        req.validate()?;
        check_license_job(&mut rd, &org.id, &req).await?;
        org
    };
    let job = queue_job(&st, &ctx, &org.id, "license_change", &req, None).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": job_view(&job) }))).into_response())
}

/// Checks what a licence job names against the store: products in the
/// catalogue, the org's subscriptions, a move within families, the org's users.
pub(crate) async fn check_license_job(rd: &mut allot_store::Tx, org: &str, req: &LicenseJobRequest) -> Result<(), Error> {
    let cat = catalogue::all(rd).await?;
    let mut bad = Vec::new();
    for (i, a) in req.add.iter().enumerate() {
        if !cat.contains_key(&a.product) {
            bad.push(
                allot_domain::Violation::new(Code::ValidationFailed, format!("{} is not a product in the catalogue.", a.product))
                    .field(format!("add[{i}].product")),
            );
        }
    }
    for (i, r) in req.remove.iter().enumerate() {
        if !cat.contains_key(&r.product) {
            bad.push(
                allot_domain::Violation::new(Code::ValidationFailed, format!("{} is not a product in the catalogue.", r.product))
                    .field(format!("remove[{i}].product")),
            );
        }
    }
    if !bad.is_empty() {
        return Err(Error::rejected(bad));
    }
    let named_subs = req
        .add
        .iter()
        .filter_map(|a| a.subscription.as_ref())
        .chain(req.remove.iter().filter_map(|r| r.subscription.as_ref()))
        .chain(req.filter.iter().filter_map(|f| f.subscription.as_ref()))
        .chain(req.move_.iter().flat_map(|m| [&m.from_subscription, &m.to_subscription]));
    let mut subs = HashMap::new();
    for s in named_subs {
        if !subs.contains_key(s) {
            let found = subscriptions::get(rd, org, s)
                .await?
                .ok_or_else(|| Error::not_found(format!("Subscription {s}")))?;
            subs.insert(s.clone(), found);
        }
    }
    if let Some(spec) = &req.move_ {
        let products = |id: &String| -> Vec<allot_domain::types::ProductCode> {
            subs.get(id)
                .map(|s| {
                    s.items
                        .iter()
                        .filter_map(|i| allot_domain::types::ProductCode::parse(&i.product).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        allot_domain::bulk::move_mapping(spec, &products(&spec.from_subscription), &products(&spec.to_subscription), &cat)?;
    }
    if let Some(list) = &req.users {
        check_listed_users(rd, org, list).await?;
    }
    Ok(())
}

/// Stores a checked licence job (its listed users split into chunks) with
/// its audit event, and wakes the worker. `then_cancel`: the subscription
/// the job empties, cancelled by the worker when every user moved off it.
pub(crate) async fn queue_job(
    st: &AppState,
    ctx: &Ctx,
    org: &str,
    kind: &str,
    req: &LicenseJobRequest,
    then_cancel: Option<&str>,
) -> Result<Job, Error> {
    let now = st.clock.now();
    let request = match then_cancel {
        None => serde_json::to_string(req),
        Some(sub) => serde_json::to_string(&allot_domain::bulk::CancelJobRequest {
            subscription: sub.to_string(),
            change: req.clone(),
        }),
    }
    .map_err(|e| Error::internal(format!("cannot store the request: {e}")))?;
    let chunks: Vec<Vec<String>> = req
        .users
        .as_ref()
        .map(|list| list.chunks(CHUNK_USERS).map(<[String]>::to_vec).collect())
        .unwrap_or_default();
    let job = Job::queued(
        org,
        kind,
        request,
        ctx.actor().actor,
        now,
        req.users.as_ref().map(|u| (chunks.len() as i64, u.len() as i64)),
    );
    let summary = json!({
        "job": job.id,
        "kind": kind,
        "users": job.total,
        "filter": req.filter,
        "add": req.add,
        "remove": req.remove,
        "move": req.move_,
        "mode": req.mode,
        "dry_run": req.dry_run,
        "then_cancel": then_cancel,
    });
    in_transaction!(st.store, |tx| {
        jobs::insert(&mut tx, &job).await?;
        jobs::insert_chunks(&mut tx, &job.org, &job.id, 0, &chunks).await?;
        audit::record(
            &mut tx,
            Some(&job.org),
            &ctx.actor(),
            "license_job.create",
            &format!("job:{}", job.id),
            None,
            Some(&summary),
            now,
        )
        .await
    })?;
    crate::worker::job_created();
    Ok(job)
}

/// A job the caller may see: 404 for another tenant's, whether it exists or not.
async fn visible_job(st: &AppState, ctx: &Ctx, id: &str, action: Action) -> Result<Job, Error> {
    let mut rd = st.store.read_conn().await?;
    let job = jobs::get_by_id(&mut rd, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("Job {id}")))?;
    ctx.org(&mut rd, &job.org, action).await.map_err(|e| {
        if e.code == Code::NotFound {
            Error::not_found(format!("Job {id}"))
        } else {
            e
        }
    })?;
    Ok(job)
}

#[utoipa::path(get, path = "/api/v1/jobs/{job}", tag = "bulk", params(("job" = String, Path)),
    responses((status = 200, description = "State and progress")))]
pub async fn get_job(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = visible_job(&st, &ctx, &id, Action::ReadLicenses).await?;
    Ok(Json(job_view(&job)))
}

#[utoipa::path(post, path = "/api/v1/jobs/{job}/cancel", tag = "bulk", params(("job" = String, Path)),
    responses((status = 202, description = "The job stops between chunks"), (status = 409, description = "The job has ended")))]
pub async fn cancel_job(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let job = visible_job(&st, &ctx, &id, Action::WriteLicenses).await?;
    let now = st.clock.now();
    let asked = in_transaction!(st.store, |tx| {
        let asked = jobs::request_cancel(&mut tx, &job.org, &job.id).await?;
        if asked {
            audit::record(
                &mut tx,
                Some(&job.org),
                &ctx.actor(),
                "license_job.cancel",
                &format!("job:{}", job.id),
                None,
                None,
                now,
            )
            .await?;
        }
        Ok(asked)
    })?;
    if !asked {
        return Err(Error::new(
            Code::Conflict,
            format!("Job {id} has ended ({}); there is nothing to cancel.", job.state),
        )
        .into());
    }
    let job = visible_job(&st, &ctx, &id, Action::WriteLicenses).await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ResultsQuery {
    pub format: Option<String>,
    /// Results of users from this position on (the `next_cursor` of a page).
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// The results of the chunks from `seq` on; chunks not done are reported as
/// skipped once the job has ended (cancelled or refused before reaching them).
fn chunk_results(job: &Job, users_json: &str, results: Option<&str>) -> Vec<UserResult> {
    match results {
        Some(r) => serde_json::from_str(r).unwrap_or_default(),
        None if job.finished_at.is_some() => serde_json::from_str::<Vec<String>>(users_json)
            .unwrap_or_default()
            .iter()
            .map(|u| {
                let mut r = UserResult::skipped(
                    u,
                    Some("cancelled"),
                    format!("Not processed: the job ended ({}) before this user.", job.state),
                );
                // An import's chunk holds rows, not user ids.
                if let Ok(row) = serde_json::from_str::<allot_domain::sheet::SheetRow>(u) {
                    r.user = String::new();
                    r.email = Some(row.email);
                    r.row = Some(row.row);
                }
                r
            })
            .collect(),
        None => Vec::new(),
    }
}

#[utoipa::path(get, path = "/api/v1/jobs/{job}/results", tag = "bulk", params(("job" = String, Path)),
    responses((status = 200, description = "Per-user results (JSON, or CSV with ?format=csv)")))]
pub async fn job_results(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> ApiResult<Response> {
    let job = visible_job(&st, &ctx, &id, Action::ReadLicenses).await?;
    ctx.require(Action::ReadUsers)?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(Error::validation("format", format!("format must be json or csv, not {other:?}.")).into()),
    };
    if csv {
        return Ok(results_csv(st, job));
    }
    let mut rd = st.store.read_conn().await?;
    // JSON pages: the cursor is "<chunk>:<offset>".
    // Result pages may be larger than other lists' (a job has up to a
    // million of them), but a limit outside the range is refused as anywhere.
    let limit = q.limit.unwrap_or(1000);
    if !(1..=MAX_RESULTS_PAGE).contains(&limit) {
        return Err(Error::validation("limit", format!("limit must be between 1 and {MAX_RESULTS_PAGE} (got {limit}).")).into());
    }
    let limit = limit as usize;
    let (mut seq, mut offset) = match q.cursor.as_deref() {
        None | Some("") => (0i64, 0usize),
        Some(c) => c
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| Error::validation("cursor", "That cursor is not one this server gave out."))?,
    };
    let mut items: Vec<UserResult> = Vec::new();
    let mut next = None;
    'pages: loop {
        let page = jobs::chunk_page(&mut rd, &job.org, &job.id, seq, 20).await?;
        if page.is_empty() {
            break;
        }
        for (s, users_json, results) in &page {
            let all = chunk_results(&job, users_json, results.as_deref());
            let start = if *s == seq { offset } else { 0 };
            for (i, r) in all.into_iter().enumerate().skip(start) {
                if items.len() == limit {
                    next = Some(format!("{s}:{i}"));
                    break 'pages;
                }
                items.push(r);
            }
        }
        seq = page.last().map_or(seq, |p| p.0) + 1;
        offset = 0;
    }
    Ok(Json(json!({ "items": items, "next_cursor": next })).into_response())
}

/// The results as a CSV download, streamed a few chunks at a time: a job of
/// a million users never has its whole file in memory. A read that fails
/// half-way ends the stream with an error, so the client sees a cut-off
/// download rather than a file that looks complete.
fn results_csv(st: AppState, job: jobs::Job) -> Response {
    let filename = format!("attachment; filename=\"{}-results.csv\"", job.id);
    // State: the next chunk to read, or None once the end was reached.
    let pages = futures::stream::unfold(Some(0i64), move |from| {
        let st = st.clone();
        let job = job.clone();
        async move {
            let from = from?;
            let page = async {
                let mut rd = st.store.read_conn().await?;
                jobs::chunk_page(&mut rd, &job.org, &job.id, from, 2).await
            }
            .await;
            match page {
                Err(e) => {
                    let e = Error::from(e);
                    tracing::error!(job = %job.id, error = %e.detail, "results CSV cut off");
                    Some((Err(std::io::Error::other(e.detail)), None))
                }
                Ok(page) => {
                    let last = page.last()?.0;
                    let mut out = String::new();
                    for (_, users_json, results) in &page {
                        for r in chunk_results(&job, users_json, results.as_deref()) {
                            push_csv_row(&mut out, &r);
                        }
                    }
                    Some((Ok(out), Some(last + 1)))
                }
            }
        }
    });
    let header_row = futures::stream::once(async { Ok::<String, std::io::Error>("user,email,outcome,code,message,changes\r\n".into()) });
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(header_row, pages));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        body,
    )
        .into_response()
}

/// One user's result as a CSV line.
fn push_csv_row(out: &mut String, r: &UserResult) {
    let changes = r
        .changes
        .iter()
        .map(|c| {
            let verb = if c.action == allot_domain::bulk::ChangeAction::Add {
                "add"
            } else {
                "remove"
            };
            format!("{verb} {} on {}", c.product, c.subscription)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let outcome = match r.outcome {
        Outcome::Ok => "ok",
        Outcome::Error => "error",
        Outcome::Skipped => "skipped",
    };
    let cells = [
        r.user.as_str(),
        r.email.as_deref().unwrap_or(""),
        outcome,
        r.code.as_deref().unwrap_or(""),
        r.message.as_deref().unwrap_or(""),
        changes.as_str(),
    ];
    out.push_str(&cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
    out.push_str("\r\n");
}

/// A CSV cell: quoted when needed, and a leading `=`, `+`, `-`, `@`, tab or
/// CR escaped so that a spreadsheet shows it instead of running it.
pub fn csv_cell(s: &str) -> String {
    let mut out = String::new();
    super::sheet_export::push_cell(&mut out, s);
    out
}
