//! Bulk licence changes: the manage-licences summary, job creation, a job's
//! progress and results, and cancellation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use allot_domain::bulk::LicenseJobRequest;

use crate::app::jobs::{self, JobQueued, JobView, LicenseSummary, ResultsFormat, ResultsPage, ResultsQuery, SummaryRequest};
use crate::app::paging::{PageQuery, Paged};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;

use super::Status;

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-summary", operation_id = "summarize_licenses", tag = "bulk",
    params(("org" = String, Path, description = "The organisation's id")), request_body = SummaryRequest,
    responses((status = 200, description = "Per subscription item: seats free, and which of the users hold it (all, some or none)", body = LicenseSummary),
              (status = 404, description = "not_found: a listed user is not the organisation's")))]
pub async fn summarize_licenses(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<SummaryRequest>,
) -> ApiResult<Json<LicenseSummary>> {
    Ok(Json(jobs::summarize_licenses(&app, &caller, &org, req).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-jobs", operation_id = "create_license_job", tag = "bulk",
    params(("org" = String, Path, description = "The organisation's id")), request_body = LicenseJobRequest,
    responses((status = 202, description = "The job, queued", body = JobQueued),
              (status = 404, description = "not_found: a listed user or a named subscription is not the organisation's"),
              (status = 422, description = "The request is refused; no job was created")))]
pub async fn create_license_job(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<LicenseJobRequest>,
) -> ApiResult<Status<JobQueued>> {
    let job = jobs::create_license_job(&app, &caller, &org, req).await?;
    Ok(Status(StatusCode::ACCEPTED, JobQueued { job }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job}", operation_id = "get_job", tag = "bulk",
    params(("job" = String, Path, description = "The job's id")),
    responses((status = 200, description = "State and progress", body = JobView)))]
pub async fn get_job(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    Ok(Json(jobs::get_job(&app, &caller, &id).await?))
}

#[utoipa::path(post, path = "/api/v1/jobs/{job}/cancel", operation_id = "cancel_job", tag = "bulk",
    params(("job" = String, Path, description = "The job's id")),
    responses((status = 202, description = "The job stops between chunks", body = JobView),
              (status = 409, description = "conflict: the job has ended")))]
pub async fn cancel_job(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Status<JobView>> {
    Ok(Status(StatusCode::ACCEPTED, jobs::cancel_job(&app, &caller, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job}/results", operation_id = "list_job_results", tag = "bulk",
    params(("job" = String, Path, description = "The job's id"), ResultsQuery),
    responses((status = 200, description = "Per-user results: a page of JSON, or every result as CSV with ?format=csv",
               content((ResultsPage = "application/json"), (String = "text/csv")))))]
pub async fn list_job_results(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> ApiResult<Response> {
    if q.format()? == ResultsFormat::Csv {
        return Ok(jobs::job_results_csv(&app, &caller, &id).await?.into_response());
    }
    Ok(Json(jobs::list_job_results(&app, &caller, &id, &q).await?).into_response())
}

/// The results as a CSV download, streamed a few chunks at a time. A read
/// that fails half-way ends the stream with an error, so the client sees a
/// cut-off download rather than a file that looks complete.

#[utoipa::path(get, path = "/api/v1/orgs/{org}/jobs", operation_id = "list_jobs", tag = "bulk",
    params(("org" = String, Path, description = "The organisation's id"), PageQuery),
    responses((status = 200, description = "The org's jobs, newest first", body = Paged<JobView>)))]
pub async fn list_jobs(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<JobView>>> {
    Ok(Json(jobs::list_jobs(&app, &caller, &org, &q).await?))
}
