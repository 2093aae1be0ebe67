//! The SCIM presenter of the one domain error (RFC 7644 §3.12): `status`
//! as a string, `scimType` for the kinds SCIM names, in
//! `application/scim+json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use allot_domain::{Code, Error};

pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SCIM_JSON: &str = "application/scim+json";

/// A handler's error, answered as a SCIM error.
#[derive(Debug)]
pub struct ScimError(pub Error);

impl From<Error> for ScimError {
    fn from(e: Error) -> Self {
        ScimError(e)
    }
}

impl From<allot_store::StoreError> for ScimError {
    fn from(e: allot_store::StoreError) -> Self {
        ScimError(e.into())
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    schemas: [&'static str; 1],
    status: String,
    #[serde(rename = "scimType", skip_serializing_if = "Option::is_none")]
    scim_type: Option<&'static str>,
    detail: String,
}

/// SCIM's name for a code, where it has one.
fn scim_type(code: Code) -> Option<&'static str> {
    Some(match code {
        Code::InvalidFilter => "invalidFilter",
        Code::InvalidPath => "invalidPath",
        Code::NoTarget => "noTarget",
        Code::Mutability => "mutability",
        Code::InvalidSyntax | Code::MalformedJson => "invalidSyntax",
        Code::EmailTaken | Code::NameTaken => "uniqueness",
        Code::ValidationFailed => "invalidValue",
        _ => return None,
    })
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let e = self.0;
        // SCIM answers a refused value with 400, where the JSON API says 422.
        let status = match e.code.http_status() {
            422 => 400,
            s => s,
        };
        let detail = if status >= 500 {
            tracing::error!(code = e.code.as_str(), detail = %e.detail, "a SCIM request failed");
            "The server failed to answer; its log has the cause.".to_string()
        } else {
            // Each reason names what it is about (`members: ...`).
            let reasons: Vec<String> = e
                .violations
                .iter()
                .map(|v| match &v.field {
                    Some(f) if !v.message.starts_with(f.as_str()) => format!("{f}: {}", v.message),
                    _ => v.message.clone(),
                })
                .collect();
            if reasons.is_empty() {
                e.detail.clone()
            } else if reasons.len() == 1 && reasons[0].ends_with(e.detail.as_str()) {
                reasons[0].clone()
            } else {
                format!("{} {}", e.detail, reasons.join(" "))
            }
        };
        let body = ErrorBody {
            schemas: [ERROR_SCHEMA],
            status: status.to_string(),
            scim_type: scim_type(e.code),
            detail,
        };
        let mut resp = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            serde_json::to_string(&body).unwrap_or_default(),
        )
            .into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        // For the org's identity provisioning page (see `track.rs`).
        resp.extensions_mut().insert(super::track::Failure {
            scim_type: body.scim_type,
            detail: body.detail.clone(),
        });
        if status == 401 {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"SCIM\""));
        }
        resp
    }
}
