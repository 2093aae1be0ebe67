//! A job's page (`/ui/jobs/{job}`) and an org's **Jobs** list
//! (`/ui/orgs/{org}/jobs`). Every long operation of the console (Manage
//! licenses, an import and its preview, a template given to existing
//! users, a cancel that moves users first) starts a job and opens this
//! page: a progress bar that htmx refreshes every second until the job
//! ends, then every user's (or row's) result with its sentence,
//! filterable to errors, and **Download results (CSV)**.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::bulk::{ChangeAction, JobKind, JobState, Outcome, ResultChange, UserResult};
use allot_domain::Error;

use super::orgs::{org_nav, OrgPage};
use super::page::{page, when, HtmlError};
use super::session::{CsrfForm, SignedIn};
use crate::app::admins::ConsoleSession;
use crate::app::jobs::{self, JobView, ResultsOf, ResultsQuery};
use crate::app::paging::PageQuery;
use crate::app::{tenants, App};

/// Results per page of the job page.
const RESULTS_PAGE: i64 = 100;

fn fail(s: &ConsoleSession, e: Error) -> Response {
    HtmlError::new(e, &s.caller.request_id).into_response()
}

pub fn kind_label(kind: JobKind) -> &'static str {
    match kind {
        JobKind::LicenseChange => "License change",
        JobKind::SubscriptionCancel => "Move users, then cancel a subscription",
        JobKind::CsvImport => "Import users and licenses",
        JobKind::TemplateApply => "License template for existing users",
    }
}

pub fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::CompletedWithErrors => "completed with errors",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Who started a job, as people read it: the signed-in admin is named by
/// email; others by their actor (`admin:<id>`, a token's id).
fn started_by(s: &ConsoleSession, actor: &str) -> String {
    if actor.strip_prefix("admin:") == Some(s.admin.id.as_str()) {
        format!("you ({})", s.admin.email)
    } else {
        actor.to_string()
    }
}

fn ended(j: &JobView) -> bool {
    !matches!(j.state, JobState::Queued | JobState::Running)
}

/// The progress bar with its figures in words: the part htmx refreshes
/// every second while the job runs.
fn progress(j: &JobView) -> Markup {
    let p = &j.progress;
    let percent = if p.total > 0 { p.done * 100 / p.total } else { 0 };
    let url = format!("/ui/jobs/{}/progress", j.id);
    let body = html! {
        label for="job-bar" { "Progress" }
        progress #job-bar max=(p.total.max(1)) value=(p.done) { (percent) "%" }
        p #job-figures {
            span.status { (state_label(j.state)) } " · "
            (p.done) " of " (p.total) " done (" (percent) "%) · "
            (p.succeeded) " succeeded · " (p.failed) " failed"
            @if j.cancel_requested && !ended(j) { " · stopping after the current chunk" }
        }
    };
    if ended(j) {
        html! { div #progress role="status" { (body) } }
    } else {
        html! { div #progress role="status" hx-get=(url) hx-trigger="every 1s" hx-swap="outerHTML" { (body) } }
    }
}

/// One change in words; a remove and an add of the same product on two
/// subscriptions read as the move they are.
fn changes_text(changes: &[ResultChange]) -> String {
    let mut out = Vec::new();
    let mut used = vec![false; changes.len()];
    for (i, c) in changes.iter().enumerate() {
        if used[i] || c.action != ChangeAction::Remove {
            continue;
        }
        if let Some(k) = changes
            .iter()
            .enumerate()
            .position(|(k, a)| !used[k] && a.action == ChangeAction::Add && a.product == c.product && a.subscription != c.subscription)
        {
            used[i] = true;
            used[k] = true;
            out.push(format!("move {} from {} to {}", c.product, c.subscription, changes[k].subscription));
        }
    }
    for (i, c) in changes.iter().enumerate() {
        if !used[i] {
            let verb = if c.action == ChangeAction::Add { "add" } else { "remove" };
            out.push(format!("{verb} {} on {}", c.product, c.subscription));
        }
    }
    if out.is_empty() {
        "no change".to_string()
    } else {
        out.join("; ")
    }
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Error => "error",
        Outcome::Skipped => "skipped",
    }
}

fn results_table(j: &JobView, items: &[UserResult]) -> Markup {
    let rows = j.kind == JobKind::CsvImport;
    html! {
        table.stack #results {
            thead {
                tr {
                    @if rows { th scope="col" { "Line" } }
                    th scope="col" { "User" }
                    th scope="col" { "Outcome" }
                    th scope="col" { "Changes" }
                    th scope="col" { "Reason" }
                }
            }
            tbody {
                @for r in items {
                    tr {
                        @if rows { td data-label="Line" { (r.row.map(|n| n.to_string()).unwrap_or_default()) } }
                        th scope="row" data-label="User" {
                            @if let Some(e) = &r.email { (e) } @else { (r.user) }
                        }
                        td data-label="Outcome" {
                            span.status.bad[r.outcome == Outcome::Error] { (outcome_label(r.outcome)) }
                        }
                        td data-label="Changes" { (changes_text(&r.changes)) }
                        td data-label="Reason" { (r.message.as_deref().unwrap_or("—")) }
                    }
                }
            }
        }
    }
}

/// The job page's query: `errors=1` for errors only, `cursor` for a page.
struct JobQuery {
    errors: bool,
    cursor: String,
}

impl JobQuery {
    fn parse(raw: &str) -> JobQuery {
        let mut q = JobQuery {
            errors: false,
            cursor: String::new(),
        };
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            match k.as_ref() {
                "errors" => q.errors = v == "1",
                "cursor" => q.cursor = v.into_owned(),
                _ => {}
            }
        }
        q
    }
}

/// `GET /ui/jobs/{job}`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn, Path(id): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let q = JobQuery::parse(raw.as_deref().unwrap_or(""));
    let job = match jobs::get_job(&app, &s.caller, &id).await {
        Ok(j) => j,
        Err(e) => return fail(&s, e),
    };
    let org = match tenants::get_org(&app, &s.caller, &job.org).await {
        Ok(o) => o,
        Err(e) => return fail(&s, e),
    };
    let may_read_results = s.caller.principal.may(Action::ReadUsers);
    let results = if ended(&job) && may_read_results {
        let rq = ResultsQuery {
            format: None,
            cursor: Some(q.cursor.clone()).filter(|c| !c.is_empty()),
            limit: Some(RESULTS_PAGE),
        };
        let of = if q.errors { ResultsOf::Errors } else { ResultsOf::All };
        match jobs::list_job_results_where(&app, &s.caller, &job.id, &rq, of).await {
            Ok(r) => Some(r),
            Err(e) => return fail(&s, e),
        }
    } else {
        None
    };
    let base = format!("/ui/jobs/{}", job.id);
    let may_write = s.caller.principal.may(Action::WriteLicenses);
    let may_apply = may_write && (job.kind != JobKind::CsvImport || s.caller.principal.may(Action::WriteUsers));
    let body = html! {
        (org_nav(&s, &org, OrgPage::Jobs))
        div.panel {
            dl.facts {
                dt { "Kind" } dd { (kind_label(job.kind)) }
                dt { "Preview" } dd { (if job.dry_run { "yes: nothing is changed" } else { "no" }) }
                dt { "Started by" } dd { (started_by(&s, &job.created_by)) }
                dt { "Created" } dd { (when(&job.created_at)) }
                @if let Some(f) = &job.finished_at { dt { "Finished" } dd { (when(f)) } }
            }
        }
        (progress(&job))
        @if let Some(err) = &job.error {
            div.errors role="alert" {
                p { (err.message) }
                @if !err.errors.is_empty() {
                    ul { @for v in &err.errors { @if v.message != err.message { li { (v.message) } } } }
                }
            }
        }
        @if !ended(&job) && may_write && !job.cancel_requested {
            form method="post" action=(format!("{base}/cancel")) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                button.danger type="submit" { "Cancel job" }
            }
        }
        @if ended(&job) && job.dry_run && may_apply && matches!(job.state, JobState::Succeeded | JobState::CompletedWithErrors) {
            form method="post" action=(format!("{base}/apply")) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                p.muted { "This was a preview. Apply runs the same changes for real as a new job." }
                button type="submit" { "Apply" }
            }
        }
        @if let Some(results) = &results {
            h2 { "Results" }
            nav.pager aria-label="Which results" {
                @if q.errors {
                    a.button.secondary href=(base) { "All results" }
                    span.disabled aria-current="page" { "Errors only" }
                } @else {
                    span.disabled aria-current="page" { "All results" }
                    a.button.secondary href=(format!("{base}?errors=1")) { "Errors only" }
                }
                a.button.secondary href=(format!("{base}/results.csv")) download { "Download results (CSV)" }
            }
            @if results.items.is_empty() {
                p.muted { (if q.errors { "No errors." } else { "No results." }) }
            } @else {
                (results_table(&job, &results.items))
            }
            @if let Some(next) = &results.next_cursor {
                @let more = {
                    let mut ser = form_urlencoded::Serializer::new(String::new());
                    if q.errors { ser.append_pair("errors", "1"); }
                    ser.append_pair("cursor", next);
                    ser.finish()
                };
                nav.pager aria-label="Pages of results" {
                    a.button.secondary href=(format!("{base}?{more}")) rel="next" { "Next results" }
                }
            }
        } @else if ended(&job) {
            p.muted { "Your role may not read users, so the per-user results are not shown." }
        }
        p { a href=(format!("/ui/orgs/{}/jobs", org.id)) { "All jobs of " (org.name) } }
    };
    page("Job", Some(&s), body).into_response()
}

/// `GET /ui/jobs/{job}/progress`: the progress part alone. When the job
/// has ended, htmx is told to reload the page, which then shows the results.
pub async fn progress_part(State(app): State<App>, SignedIn(s): SignedIn, Path(id): Path<String>) -> Response {
    match jobs::get_job(&app, &s.caller, &id).await {
        Ok(j) if ended(&j) => (
            [(HeaderName::from_static("hx-refresh"), HeaderValue::from_static("true"))],
            progress(&j),
        )
            .into_response(),
        Ok(j) => progress(&j).into_response(),
        Err(e) => fail(&s, e),
    }
}

/// `GET /ui/jobs/{job}/results.csv`: **Download results (CSV)**.
pub async fn results_csv(State(app): State<App>, SignedIn(s): SignedIn, Path(id): Path<String>) -> Response {
    match jobs::job_results_csv(&app, &s.caller, &id).await {
        Ok(d) => d.into_response(),
        Err(e) => fail(&s, e),
    }
}

/// `POST /ui/jobs/{job}/cancel`: stops the job between chunks.
pub async fn cancel(State(app): State<App>, signed_in: SignedIn, Path(id): Path<String>, Form(f): Form<CsrfForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match jobs::cancel_job(&app, &s.caller, &id).await {
        Ok(j) => Redirect::to(&format!("/ui/jobs/{}", j.id)).into_response(),
        Err(e) => fail(s, e),
    }
}

/// `POST /ui/jobs/{job}/apply`: a finished preview run for real.
pub async fn apply(State(app): State<App>, signed_in: SignedIn, Path(id): Path<String>, Form(f): Form<CsrfForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match jobs::apply_preview(&app, &s.caller, &id).await {
        Ok(j) => Redirect::to(&format!("/ui/jobs/{}", j.id)).into_response(),
        Err(e) => fail(s, e),
    }
}

/// `GET /ui/orgs/{org}/jobs`: **Jobs**, newest first.
pub async fn list(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let cursor = form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| v.into_owned());
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let q = PageQuery { limit: Some(50), cursor };
        let list = jobs::list_jobs(&app, &s.caller, &org.id, &q).await?;
        Ok::<_, Error>((org, list))
    }
    .await;
    let (org, list) = match shown {
        Ok(x) => x,
        Err(e) => return fail(&s, e),
    };
    let may_write = s.caller.principal.may(Action::WriteLicenses);
    let body = html! {
        (org_nav(&s, &org, OrgPage::Jobs))
        @if list.items.is_empty() {
            p.muted { "No jobs yet. Manage licenses, an import or a license template starts one." }
        } @else {
            table.stack {
                caption.muted { "Newest first" }
                thead {
                    tr {
                        th scope="col" { "Job" }
                        th scope="col" { "State" }
                        th scope="col" { "Progress" }
                        th scope="col" { "Started by" }
                        th scope="col" { "Created" }
                        th scope="col" { span.muted { "Cancel" } }
                    }
                }
                tbody {
                    @for j in &list.items {
                        tr {
                            th scope="row" data-label="Job" {
                                a href=(format!("/ui/jobs/{}", j.id)) { (kind_label(j.kind)) @if j.dry_run { " (preview)" } }
                                br; span.muted { (j.id) }
                            }
                            td data-label="State" { span.status.bad[matches!(j.state, JobState::Failed | JobState::CompletedWithErrors)] { (state_label(j.state)) } }
                            td data-label="Progress" {
                                (j.progress.done) " of " (j.progress.total)
                                @if j.progress.failed > 0 { " (" (j.progress.failed) " failed)" }
                            }
                            td data-label="Started by" { (started_by(&s, &j.created_by)) }
                            td.nowrap data-label="Created" { (when(&j.created_at)) }
                            td {
                                @if !ended(j) && may_write && !j.cancel_requested {
                                    form method="post" action=(format!("/ui/jobs/{}/cancel", j.id)) {
                                        input type="hidden" name="csrf" value=(s.csrf_token);
                                        button.small.danger type="submit" { "Cancel job" span.visually-hidden { " " (j.id) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &list.next_cursor {
                nav.pager aria-label="Pages of jobs" {
                    a.button.secondary href=(format!("/ui/orgs/{}/jobs?cursor={next}", org.id)) rel="next" { "Older jobs" }
                }
            }
        }
    };
    page("Jobs", Some(&s), body).into_response()
}
