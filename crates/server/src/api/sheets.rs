//! Users as CSV files: the export and the import.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::jobs::JobQueued;
use crate::app::sheets::{self, ImportQuery};
use crate::app::{App, Caller};
use crate::extract::{content_length, unsupported_media_type, ApiQuery};
use crate::problem::{ApiError, ApiResult};

use super::Status;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users.csv", operation_id = "export_users_csv", tag = "csv",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "One row per user: email, display_name, kind, status, usage_location, then TRUE/FALSE per subscription item",
               content_type = "text/csv", body = String)))]
pub async fn export_users_csv(State(app): State<App>, caller: Caller, Path(org): Path<String>) -> ApiResult<Response> {
    Ok(sheets::export_users_csv(&app, &caller, &org).await?.into_response())
}

/// Whether the body is declared as CSV (or as the plain text some clients send it as).
fn is_csv(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        ct.as_str(),
        "text/csv" | "application/csv" | "text/plain" | "application/vnd.ms-excel"
    )
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/imports", operation_id = "import_users_csv", tag = "csv",
    params(("org" = String, Path, description = "The organisation's id"), ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "A users file as exported: a header row, then a row per user"),
    responses((status = 202, description = "The import job", body = JobQueued),
              (status = 422, description = "csv_header_invalid or csv_row_invalid, with every reason and line; nothing stored")))]
pub async fn import_users_csv(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Status<JobQueued>> {
    if !is_csv(&headers) {
        return Err(ApiError(unsupported_media_type("text/csv")));
    }
    let job = sheets::import_users_csv(&app, &caller, &org, &q, content_length(&headers), body.into_data_stream()).await?;
    Ok(Status(StatusCode::ACCEPTED, JobQueued { job }))
}
