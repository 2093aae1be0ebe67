//! Bulk licence changes as durable jobs: the manage-licences summary, job
//! creation (checked as a whole before anything is stored), a job's
//! progress, its per-user results and cancellation. The worker
//! (`crate::worker`) carries the jobs out.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::bulk::{holder_state, HolderState, JobKind, JobState, LicenseJobRequest, UserResult};
use allot_domain::{Code, Error, Violation};
use allot_store::jobs::{self, Job};
use allot_store::{audit, catalogue, in_transaction, subscriptions, users, Tx};

use super::{App, Caller};

/// Users per chunk of a job: one transaction, one progress step. Larger
/// chunks spread a commit's fixed cost over more users; this size keeps one
/// chunk at about a tenth of a second of writing, which single changes
/// queued behind it on SQLite wait for at most.
pub const CHUNK_USERS: usize = 5_000;

/// The largest page of a job's results.
pub const MAX_RESULTS_PAGE: i64 = 10_000;

/// How a job applies its changes: a licence job per user or all at once;
/// an import adds only or adds and removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobModeView {
    PerUser,
    AllOrNothing,
    AddOnly,
    AddAndRemove,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// Users (or rows) processed so far.
    pub done: i64,
    /// Users (or rows) in the job; 0 until a filter job has found its users.
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// Why a job failed or ended with errors as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: Code,
    pub message: String,
    #[serde(default)]
    pub errors: Vec<Violation>,
    /// A cancel job that could not empty its subscription: the seats still taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats_taken: Option<i64>,
}

impl JobError {
    pub fn of(e: &Error) -> JobError {
        JobError {
            code: e.code,
            message: e.detail.clone(),
            errors: e.violations.clone(),
            seats_taken: None,
        }
    }

    /// As stored in the job's row.
    pub fn to_stored(&self) -> String {
        // A struct of strings, numbers and enums always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A job as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    pub org: String,
    pub kind: JobKind,
    pub state: JobState,
    pub mode: JobModeView,
    pub dry_run: bool,
    pub progress: JobProgress,
    pub cancel_requested: bool,
    pub error: Option<JobError>,
    pub created_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// `{"job": {...}}`: the answer that a job was queued.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobQueued {
    pub job: JobView,
}

/// The parts of a stored request that a job's view shows.
#[derive(Deserialize, Default)]
struct StoredRequest {
    mode: Option<String>,
    dry_run: Option<bool>,
    /// A cancel job keeps its licence change here.
    change: Option<Box<StoredRequest>>,
}

impl JobView {
    pub fn of(j: &Job) -> JobView {
        let stored: StoredRequest = serde_json::from_str(&j.request).unwrap_or_default();
        let req = stored.change.as_deref().unwrap_or(&stored);
        let mode = match req.mode.as_deref() {
            Some("all_or_nothing") => JobModeView::AllOrNothing,
            Some("add_only") => JobModeView::AddOnly,
            Some("add_and_remove") => JobModeView::AddAndRemove,
            _ => JobModeView::PerUser,
        };
        JobView {
            id: j.id.clone(),
            org: j.org.clone(),
            kind: j.kind,
            state: j.state,
            mode,
            dry_run: req.dry_run.unwrap_or(false),
            progress: JobProgress {
                done: j.done,
                total: j.total,
                succeeded: j.succeeded,
                failed: j.failed,
            },
            cancel_requested: j.cancel_requested,
            error: j.error.as_deref().and_then(|e| serde_json::from_str(e).ok()),
            created_by: j.created_by.clone(),
            created_at: j.created_at.clone(),
            started_at: j.started_at.clone(),
            finished_at: j.finished_at.clone(),
        }
    }
}

/// Refuses a list naming any user that is not the org's, as a whole and
/// without saying which (other tenants' ids must not be probed).
async fn check_listed_users(tx: &mut Tx, org: &str, ids: &[String]) -> Result<(), Error> {
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

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryRequest {
    /// The selected users' ids (each once).
    #[schema(schema_with = user_ids_schema)]
    pub users: Vec<String>,
}

/// A list of user ids, each once.
fn user_ids_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)))
        .min_items(Some(1))
        .unique_items(true)
        .build()
}

/// One subscription item seen from the selected users.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SummaryItem {
    pub product: String,
    pub name: String,
    pub subscription: String,
    pub total: i64,
    pub consumed: i64,
    pub available: i64,
    /// Whether all, some or none of the selected users hold it.
    pub state: HolderState,
    /// The selected users that hold it, sorted.
    pub holders: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LicenseSummary {
    /// How many users were selected.
    pub users: usize,
    pub items: Vec<SummaryItem>,
}

/// For the selected users, per subscription item: seats free, and which
/// of them hold it (the tri-state of a manage-licences page).
pub async fn summarize_licenses(app: &App, caller: &Caller, org: &str, req: SummaryRequest) -> Result<LicenseSummary, Error> {
    let mut tx = app.store.begin_read().await?;
    let org = caller.org(&mut tx, org, Action::ReadLicenses).await?;
    caller.require(Action::ReadUsers)?;
    if req.users.is_empty() {
        return Err(Error::validation("users", "The users list is empty."));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = req.users.iter().find(|u| !seen.insert(u.as_str())) {
        return Err(Error::validation(
            "users",
            format!("User {} is listed twice.", allot_domain::types::excerpt(dup)),
        ));
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
    let items: Vec<SummaryItem> = subscriptions::license_rows(&mut tx, &org.id)
        .await?
        .into_iter()
        .map(|r| {
            let mut who = holders.remove(&(r.subscription.clone(), r.product.clone())).unwrap_or_default();
            who.sort();
            let name = allot_domain::types::ProductCode::parse(&r.product)
                .ok()
                .and_then(|c| cat.get(&c).map(|p| p.name.clone()))
                .unwrap_or_else(|| r.product.clone());
            SummaryItem {
                state: holder_state(who.len(), req.users.len()),
                available: r.total - r.consumed,
                product: r.product,
                name,
                subscription: r.subscription,
                total: r.total,
                consumed: r.consumed,
                holders: who,
            }
        })
        .collect();
    Ok(LicenseSummary {
        users: req.users.len(),
        items,
    })
}

/// Checks and queues a bulk licence change. Scope and role first: another
/// tenant's org is 404 whatever the body says.
pub async fn create_license_job(app: &App, caller: &Caller, org: &str, req: LicenseJobRequest) -> Result<JobView, Error> {
    let org = {
        let mut rd = app.store.read_conn().await?;
        let org = caller.org(&mut rd, org, Action::WriteLicenses).await?;
        req.validate()?;
        check_license_job(&mut rd, &org.id, &req).await?;
        org
    };
    let job = queue_job(app, caller, &org.id, JobKind::LicenseChange, &req, None).await?;
    Ok(JobView::of(&job))
}

/// Checks what a licence job names against the store: products in the
/// catalogue, the org's subscriptions, a move within families, the org's users.
pub(crate) async fn check_license_job(rd: &mut Tx, org: &str, req: &LicenseJobRequest) -> Result<(), Error> {
    let cat = catalogue::all(rd).await?;
    let mut bad = Vec::new();
    for (i, a) in req.add.iter().enumerate() {
        if !cat.contains_key(&a.product) {
            bad.push(
                Violation::new(Code::ValidationFailed, format!("{} is not a product in the catalogue.", a.product))
                    .field(format!("add[{i}].product")),
            );
        }
    }
    for (i, r) in req.remove.iter().enumerate() {
        if !cat.contains_key(&r.product) {
            bad.push(
                Violation::new(Code::ValidationFailed, format!("{} is not a product in the catalogue.", r.product))
                    .field(format!("remove[{i}].product")),
            );
        }
    }
    if let Some(p) = req.filter.as_ref().and_then(|f| f.product.as_ref()) {
        if !cat.contains_key(p) {
            bad.push(Violation::new(Code::ValidationFailed, format!("{p} is not a product in the catalogue.")).field("filter.product"));
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
                .ok_or_else(|| Error::not_found(format!("Subscription {}", allot_domain::types::excerpt(s))))?;
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
    app: &App,
    caller: &Caller,
    org: &str,
    kind: JobKind,
    req: &LicenseJobRequest,
    then_cancel: Option<&str>,
) -> Result<Job, Error> {
    let now = app.clock.now();
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
        caller.actor().actor,
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
    in_transaction!(app.store, |tx| {
        jobs::insert(&mut tx, &job).await?;
        jobs::insert_chunks(&mut tx, &job.org, &job.id, 0, &chunks).await?;
        audit::record(
            &mut tx,
            Some(&job.org),
            &caller.actor(),
            "license_job.create",
            &format!("job:{}", job.id),
            None,
            Some(&summary),
            now,
        )
        .await
    })?;
    app.job_queued();
    Ok(job)
}

/// A job the caller may see: 404 for another tenant's, whether it exists or not.
async fn visible_job(app: &App, caller: &Caller, id: &str, action: Action) -> Result<Job, Error> {
    let mut rd = app.store.read_conn().await?;
    let not_found = || Error::not_found(format!("Job {}", allot_domain::types::excerpt(id)));
    let job = jobs::get_by_id(&mut rd, id).await?.ok_or_else(not_found)?;
    caller
        .org(&mut rd, &job.org, action)
        .await
        .map_err(|e| if e.code == Code::NotFound { not_found() } else { e })?;
    Ok(job)
}

pub async fn get_job(app: &App, caller: &Caller, id: &str) -> Result<JobView, Error> {
    Ok(JobView::of(&visible_job(app, caller, id, Action::ReadLicenses).await?))
}

/// Asks a queued or running job to stop between chunks.
pub async fn cancel_job(app: &App, caller: &Caller, id: &str) -> Result<JobView, Error> {
    let job = visible_job(app, caller, id, Action::WriteLicenses).await?;
    let now = app.clock.now();
    let asked = in_transaction!(app.store, |tx| {
        let asked = jobs::request_cancel(&mut tx, &job.org, &job.id).await?;
        if asked {
            audit::record(
                &mut tx,
                Some(&job.org),
                &caller.actor(),
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
            format!("Job {id} has ended ({}); there is nothing to cancel.", job.state.as_str()),
        ));
    }
    get_job(app, caller, id).await
}

/// The results of a chunk; chunks not done are reported as skipped once the
/// job has ended (cancelled or refused before reaching them).
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
                    format!("Not processed: the job ended ({}) before this user.", job.state.as_str()),
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

/// `?cursor=&limit=` of a job's results.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// `json` (default) or `csv` (a file of every result).
    #[param(value_type = Option<ResultsFormat>)]
    pub format: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^(?:[0-9]{1,18}:[0-9]{1,18})?$")]
    pub cursor: Option<String>,
    /// Results per page, 1 to 10,000 (default 1,000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

/// How a job's results are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultsFormat {
    Json,
    Csv,
}

impl ResultsQuery {
    /// The page asked for: (first chunk, offset in it, results per page).
    /// Checked for every format, so that a parameter out of range is
    /// refused whatever the answer's form.
    pub fn page(&self) -> Result<(i64, usize, usize), Error> {
        // Result pages may be larger than other lists' (a job has up to a
        // million of them), but a limit outside the range is refused as anywhere.
        let limit = self.limit.unwrap_or(1000);
        if !(1..=MAX_RESULTS_PAGE).contains(&limit) {
            return Err(Error::validation(
                "limit",
                format!("limit must be between 1 and {MAX_RESULTS_PAGE} (got {limit})."),
            ));
        }
        let (seq, offset) = match self.cursor.as_deref() {
            None | Some("") => (0i64, 0usize),
            Some(c) => c
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| Error::validation("cursor", "That cursor is not one this server gave out."))?,
        };
        Ok((seq, offset, limit as usize))
    }

    pub fn format(&self) -> Result<ResultsFormat, Error> {
        self.page()?;
        match self.format.as_deref() {
            None | Some("json") => Ok(ResultsFormat::Json),
            Some("csv") => Ok(ResultsFormat::Csv),
            Some(other) => Err(Error::validation(
                "format",
                format!("format must be json or csv, not {:?}.", allot_domain::types::excerpt(other)),
            )),
        }
    }
}

/// One page of a job's per-user results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResultsPage {
    pub items: Vec<UserResult>,
    pub next_cursor: Option<String>,
}

/// The job whose results the caller may read (results name users).
pub async fn job_for_results(app: &App, caller: &Caller, id: &str) -> Result<Job, Error> {
    let job = visible_job(app, caller, id, Action::ReadLicenses).await?;
    caller.require(Action::ReadUsers)?;
    Ok(job)
}

/// A page of a job's results; the cursor is `<chunk>:<offset>`.
pub async fn list_job_results(app: &App, caller: &Caller, id: &str, q: &ResultsQuery) -> Result<ResultsPage, Error> {
    list_job_results_where(app, caller, id, q, ResultsOf::All).await
}

/// Which results a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsOf {
    All,
    /// Only users (or rows) that were refused: the console's "errors only".
    Errors,
}

/// A page of a job's results that are `of` the kind asked; the cursor is
/// `<chunk>:<offset>` of the next result to look at.
pub async fn list_job_results_where(app: &App, caller: &Caller, id: &str, q: &ResultsQuery, of: ResultsOf) -> Result<ResultsPage, Error> {
    let job = job_for_results(app, caller, id).await?;
    q.format()?;
    let (mut seq, mut offset, limit) = q.page()?;
    let mut rd = app.store.read_conn().await?;
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
                if of == ResultsOf::Errors && r.outcome != allot_domain::bulk::Outcome::Error {
                    continue;
                }
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
    Ok(ResultsPage { items, next_cursor: next })
}

/// Every result of a job from chunk `from` on, a few chunks at a time: the
/// results and the chunk to read next (None at the end). A job of a million
/// users never has all of its results in memory.
pub async fn job_results_from(app: &App, job: &Job, from: i64) -> Result<(Vec<UserResult>, Option<i64>), Error> {
    let mut rd = app.store.read_conn().await?;
    let page = jobs::chunk_page(&mut rd, &job.org, &job.id, from, 2).await?;
    let Some(last) = page.last().map(|p| p.0) else {
        return Ok((Vec::new(), None));
    };
    let mut out = Vec::new();
    for (_, users_json, results) in &page {
        out.extend(chunk_results(job, users_json, results.as_deref()));
    }
    Ok((out, Some(last + 1)))
}

/// Jobs by kind and state, and the progress of those not ended.
pub struct JobCounts {
    pub by_state: Vec<jobs::JobCount>,
    pub active_done: i64,
    pub active_total: i64,
}

/// For the metrics page: no caller, no scope (it is served on the
/// operator's own address).
pub async fn job_counts(app: &App) -> Result<JobCounts, Error> {
    let mut rd = app.store.read_conn().await?;
    let (by_state, active_done, active_total) = jobs::counts(&mut rd).await?;
    Ok(JobCounts {
        by_state,
        active_done,
        active_total,
    })
}

/// An org's jobs, newest first: kind, state, progress and who started each.
pub async fn list_jobs(
    app: &App,
    caller: &Caller,
    org: &str,
    q: &super::paging::PageQuery,
) -> Result<super::paging::Paged<JobView>, Error> {
    let page = q.page()?;
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadLicenses).await?;
    // A cursor that names no job of this org finds nothing after it: an empty page.
    let rows = jobs::list_of_org(&mut rd, &org.id, page.after.as_deref(), page.limit).await?;
    let views: Vec<JobView> = rows.iter().map(JobView::of).collect();
    Ok(super::paging::Paged::from_rows(views, page.limit, |j| j.id.clone()))
}

/// Every result of a job as a CSV file (`user,email,outcome,code,message,changes`),
/// read a few chunks at a time while it is sent.
pub async fn job_results_csv(app: &App, caller: &Caller, id: &str) -> Result<super::sheets::CsvDownload, Error> {
    let job = job_for_results(app, caller, id).await?;
    let (send, recv) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(2);
    let app = app.clone();
    let filename = format!("{}-results.csv", job.id);
    tokio::spawn(async move {
        if send.send(Ok("user,email,outcome,code,message,changes\r\n".into())).await.is_err() {
            return;
        }
        let mut from = Some(0i64);
        while let Some(at) = from {
            match job_results_from(&app, &job, at).await {
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e.detail, "results CSV cut off");
                    let _ = send.send(Err(std::io::Error::other(e.detail))).await;
                    return;
                }
                Ok((results, next)) => {
                    let mut out = String::new();
                    for r in &results {
                        push_result_row(&mut out, r);
                    }
                    if !out.is_empty() && send.send(Ok(out)).await.is_err() {
                        return;
                    }
                    from = next;
                }
            }
        }
    });
    Ok(super::sheets::CsvDownload { filename, pages: recv })
}

/// One result as a CSV row; its changes as `add <product> on <subscription>; ...`.
fn push_result_row(out: &mut String, r: &UserResult) {
    use super::sheets::csv_cell;
    use allot_domain::bulk::{ChangeAction, Outcome};
    let changes = r
        .changes
        .iter()
        .map(|c| {
            let verb = if c.action == ChangeAction::Add { "add" } else { "remove" };
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

/// Runs a finished preview (a dry-run job) for real: a new job of the same
/// kind with the same request and the same users or rows, not dry. The
/// caller needs what creating that job needs; a preview that did not
/// finish, or a job that was no preview, is refused.
pub async fn apply_preview(app: &App, caller: &Caller, id: &str) -> Result<JobView, Error> {
    let preview = visible_job(app, caller, id, Action::WriteLicenses).await?;
    if preview.kind == JobKind::CsvImport {
        caller.require(Action::WriteUsers)?;
    }
    let mut request: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&preview.request)
        .map_err(|e| Error::internal(format!("job {} has a request that cannot be read: {e}", preview.id)))?;
    let was_preview = request.get("dry_run").and_then(serde_json::Value::as_bool) == Some(true);
    if !was_preview || preview.kind == JobKind::SubscriptionCancel {
        return Err(Error::new(
            Code::Conflict,
            format!("Job {} is not a preview; there is nothing to apply.", preview.id),
        ));
    }
    if !matches!(preview.state, JobState::Succeeded | JobState::CompletedWithErrors) {
        return Err(Error::new(
            Code::Conflict,
            format!(
                "The preview has not finished ({}); apply it once it has.",
                preview.state.as_str().replace('_', " ")
            ),
        ));
    }
    request.insert("dry_run".into(), serde_json::Value::Bool(false));
    let request = serde_json::Value::Object(request).to_string();
    let now = app.clock.now();
    let job = Job::queued(
        &preview.org,
        preview.kind,
        request,
        caller.actor().actor,
        now,
        Some((preview.chunks, preview.total)),
    );
    in_transaction!(app.store, |tx| {
        jobs::insert(&mut tx, &job).await?;
        jobs::copy_chunks(&mut tx, &job.org, &preview.id, &job.id).await?;
        audit::record(
            &mut tx,
            Some(&job.org),
            &caller.actor(),
            "job.apply_preview",
            &format!("job:{}", job.id),
            None,
            Some(&json!({ "job": job.id, "kind": job.kind, "preview": preview.id, "users": job.total })),
            now,
        )
        .await
    })?;
    app.job_queued();
    Ok(JobView::of(&job))
}
