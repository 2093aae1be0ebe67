//! Presents the one domain error as an RFC 9457 problem document (the JSON
//! presenter; the console and SCIM get presenters of their own). The
//! request's id is added on the way out by `crate::observe`, which also
//! replaces the detail of a 5xx with the request id (the cause goes to the
//! log, not to the caller).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use allot_domain::{Code, Error, Violation};

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

/// An RFC 9457 problem document, as every error is answered.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:allot:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// A sentence a person understands.
    pub detail: String,
    /// The stable machine code.
    pub code: Code,
    /// Every reason, each naming what it is about.
    pub errors: Vec<Violation>,
    /// The request's id, as in the `x-request-id` header and the server's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

pub fn title(code: Code) -> &'static str {
    match code.http_status() {
        400 => "Bad request",
        401 => "Not signed in",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Conflict",
        412 => "Precondition failed",
        413 => "Payload too large",
        415 => "Unsupported media type",
        429 => "Too many requests",
        500 => "Internal error",
        503 => "Service unavailable",
        _ => "Request refused",
    }
}

impl Problem {
    pub fn of(e: &Error) -> Problem {
        Problem {
            type_: format!("urn:allot:problem:{}", e.code.as_str()),
            title: title(e.code).to_string(),
            status: e.code.http_status(),
            detail: e.detail.clone(),
            code: e.code,
            errors: e.violations.clone(),
            request_id: None,
        }
    }
}

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A struct of strings, numbers and enums always serializes.
        let body = serde_json::to_string(&Problem::of(&self.0)).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.0.code == Code::RateLimited {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
