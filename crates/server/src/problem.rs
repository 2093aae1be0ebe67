//! Presents the one domain error as an RFC 9457 problem document.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use allot_domain::{Code, Error};

/// The error type of every handler: a domain error, presented as JSON.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<allot_store::StoreError> for ApiError {
    fn from(e: allot_store::StoreError) -> Self {
        ApiError(e.into())
    }
}

pub fn title(code: Code) -> &'static str {
    match code.http_status() {
        401 => "Not signed in",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Conflict",
        412 => "Precondition failed",
        413 => "Payload too large",
        429 => "Too many requests",
        500 => "Internal error",
        503 => "Service unavailable",
        _ => "Request refused",
    }
}

pub fn problem_body(e: &Error) -> serde_json::Value {
    json!({
        "type": format!("urn:allot:problem:{}", e.code.as_str()),
        "title": title(e.code),
        "status": e.code.http_status(),
        "detail": e.detail,
        "code": e.code.as_str(),
        "errors": e.violations,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, problem_body(&self.0).to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.0.code == Code::RateLimited {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
