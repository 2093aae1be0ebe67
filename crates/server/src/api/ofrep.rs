//! OFREP (OpenFeature Remote Evaluation Protocol): entitlement checks in
//! the shape OpenFeature's OFREP providers speak, errors included.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::app::entitlements::ofrep::{self, OfrepError, OfrepErrorCode, OfrepFailure, OfrepFlag, OfrepFlags, OfrepRequest};
use crate::app::{App, Caller};
use crate::problem::ApiError;

fn present_error(e: OfrepError) -> Response {
    match e {
        OfrepError::Ofrep(f) => {
            let status = if f.error_code == OfrepErrorCode::FlagNotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, Json(f)).into_response()
        }
        OfrepError::Domain(e) => ApiError(e).into_response(),
    }
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", operation_id = "evaluate_ofrep_flag", tag = "entitlements",
    params(("key" = String, Path, description = "The flag: a feature of the catalogue")),
    request_body = OfrepRequest,
    responses(
        (status = 200, description = "The flag's value: whether the user may use the feature now", body = OfrepFlag),
        (status = 400, description = "PARSE_ERROR, TARGETING_KEY_MISSING or INVALID_CONTEXT (an org outside the caller's scope too)", body = OfrepFailure),
        (status = 404, description = "FLAG_NOT_FOUND: no product grants a feature of that name", body = OfrepFailure)
    ))]
pub async fn evaluate_ofrep_flag(State(app): State<App>, caller: Caller, Path(key): Path<String>, body: Bytes) -> Response {
    let evaluated = match ofrep::parse_request(&body, Some(&key)) {
        Ok(req) => ofrep::evaluate_flag(&app, &caller, &key, &req).await,
        Err(e) => Err(e),
    };
    match evaluated {
        Ok(flag) => Json(flag).into_response(),
        Err(e) => present_error(e),
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", operation_id = "evaluate_ofrep_flags", tag = "entitlements",
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of answers held: 304 while they are still the answers")),
    request_body = OfrepRequest,
    responses(
        (status = 200, description = "Every feature of the catalogue for the user; the ETag changes exactly when one of the answers does", body = OfrepFlags,
            headers(("ETag" = String, description = "The answers' version"))),
        (status = 304, description = "The answers are those of If-None-Match's ETag"),
        (status = 400, description = "PARSE_ERROR, TARGETING_KEY_MISSING or INVALID_CONTEXT (an org outside the caller's scope too)", body = OfrepFailure)
    ))]
pub async fn evaluate_ofrep_flags(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    let evaluated = match ofrep::parse_request(&body, None) {
        Ok(req) => ofrep::evaluate_flags(&app, &caller, &req).await,
        Err(e) => Err(e),
    };
    let (flags, version) = match evaluated {
        Ok(v) => v,
        Err(e) => return present_error(e),
    };
    let etag = format!("\"{version}\"");
    let mut resp = if not_modified(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json::<OfrepFlags>(flags).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}
