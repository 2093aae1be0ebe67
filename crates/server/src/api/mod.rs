//! The JSON API: each handler extracts its input, calls one use case of
//! [`crate::app`], and presents the result (the domain error as a problem
//! document). The `#[utoipa::path]` of each handler is its entry in the
//! OpenAPI document; [`describe_errors`] completes every entry with the
//! error answers it can give.

pub mod admins;
pub mod catalogue;
pub mod customers;
pub mod entitlements;
pub mod housekeeping;
pub mod jobs;
pub mod licenses;
pub mod ofrep;
pub mod purchases;
pub mod queues;
pub mod sheets;
pub mod subscriptions;
pub mod templates;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod webhooks;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

use crate::problem::PROBLEM_JSON;

/// Bodies of bulk requests may name up to a million users.
pub const MAX_BULK_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A resource that carries an entity tag.
pub trait HasEtag {
    fn etag(&self) -> &str;
}

impl HasEtag for crate::app::catalogue::ProductView {
    fn etag(&self) -> &str {
        &self.etag
    }
}
impl HasEtag for crate::app::tenants::OrgView {
    fn etag(&self) -> &str {
        &self.etag
    }
}
impl HasEtag for crate::app::users::UserView {
    fn etag(&self) -> &str {
        &self.etag
    }
}
impl HasEtag for crate::app::users::CreatedUser {
    fn etag(&self) -> &str {
        &self.user.etag
    }
}
impl HasEtag for crate::app::subscriptions::SubscriptionView {
    fn etag(&self) -> &str {
        &self.etag
    }
}
impl HasEtag for crate::app::templates::TemplateView {
    fn etag(&self) -> &str {
        &self.etag
    }
}

/// A resource answered as JSON with its `ETag` header.
pub struct Tagged<T>(pub StatusCode, pub T);

impl<T: Serialize + HasEtag> IntoResponse for Tagged<T> {
    fn into_response(self) -> Response {
        let tag = format!("\"{}\"", self.1.etag());
        let mut resp = (self.0, Json(self.1)).into_response();
        if let Ok(v) = HeaderValue::from_str(&tag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        resp
    }
}

/// A JSON answer with a status other than 200.
pub struct Status<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for Status<T> {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// Completes the document's entries with their error answers: every answer
/// of status 400 and up is a problem document, and each operation lists
/// the statuses it can answer by its nature (401/403/429 when it needs a
/// token, 404 when its path names objects, 400/413/415/422 when it takes a
/// body, 422 for bad query parameters, 412 when it honours `If-Match`).
pub fn describe_errors(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for op in ops.into_iter().flatten() {
            complete(op, doc.security.is_some());
        }
    }
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, Content::new(Some(Ref::from_schema_name("Problem"))))
        .into()
}

fn complete(op: &mut Operation, secured_by_default: bool) {
    // `security(())`: one empty requirement, no token needed.
    let public = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| serde_json::to_string(r).is_ok_and(|t| t == "{}")));
    let params = op.parameters.clone().unwrap_or_default();
    let has_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let has_if_match = params
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case("if-match"));
    let has_body = op.request_body.is_some();
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if secured_by_default && !public {
        wanted.push(("401", "unauthenticated: no token, or one that is unknown, expired or revoked"));
        wanted.push(("403", "forbidden: the token's role may not do this"));
        wanted.push(("429", "rate_limited: the token sent too many requests; see Retry-After"));
    }
    if has_path && !public {
        wanted.push(("404", "not_found: nothing with that id in the caller's scope"));
    }
    if has_body {
        wanted.push(("400", "malformed_json: the body is not JSON"));
        wanted.push(("413", "payload_too_large: the body is over the limit"));
        wanted.push((
            "415",
            "unsupported_media_type: the body is not of the media type the operation takes",
        ));
        wanted.push((
            "422",
            "validation_failed (or a rule's code): the body or a parameter does not fit; nothing changed",
        ));
    }
    if has_query {
        wanted.push(("422", "validation_failed: a query parameter does not fit"));
    }
    if has_if_match {
        wanted.push(("412", "precondition_failed: If-Match names another version; nothing changed"));
    }
    for (status, description) in wanted {
        if !op.responses.responses.contains_key(status) {
            op.responses.responses.insert(status.to_string(), problem(description));
        }
    }
    for (status, resp) in op.responses.responses.iter_mut() {
        if status.as_str() >= "400" {
            if let RefOr::T(r) = resp {
                if r.content.is_empty() {
                    r.content
                        .insert(PROBLEM_JSON.to_string(), Content::new(Some(Ref::from_schema_name("Problem"))));
                }
            }
        }
    }
}
