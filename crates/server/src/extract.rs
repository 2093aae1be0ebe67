//! Extractors that turn every bad input into a problem document: a body
//! that is not JSON is 400 `malformed_json`, a body in another media type
//! 415 `unsupported_media_type`, JSON of the wrong shape 422
//! `validation_failed` naming the field. Also the caller
//! ([`crate::app::Caller`]) and the `If-Match` precondition.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use allot_domain::{Code, Error};

use crate::app::etag::IfMatch;
use crate::app::{App, Caller};
use crate::auth::{authenticate, Authenticated};
use crate::observe::RequestId;
use crate::problem::ApiError;

/// The largest request body accepted (1 MiB); larger ones answer 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

fn too_large() -> Error {
    Error::new(
        Code::PayloadTooLarge,
        format!("The request body is larger than the limit of {MAX_BODY_BYTES} bytes."),
    )
}

/// Whether the request says its body is JSON (`application/json` or a
/// `+json` type, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

pub fn unsupported_media_type(expected: &str) -> Error {
    Error::new(
        Code::UnsupportedMediaType,
        format!("Send the body as {expected} (with that Content-Type)."),
    )
}

/// JSON body; malformed JSON, wrong types, unknown fields and oversized
/// bodies answer with a problem document that says which.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError(unsupported_media_type("application/json")));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rej) if rej.status().as_u16() == 413 => return Err(ApiError(too_large())),
            Err(rej) => {
                return Err(ApiError(Error::new(
                    Code::MalformedJson,
                    format!("The request body could not be read: {}.", rej.body_text()),
                )))
            }
        };
        parse_json(&bytes).map(ApiJson)
    }
}

/// A body's JSON as `T`. Every body Allot takes is a JSON object: an array
/// or a bare value that serde could read into a struct is refused too.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let v = match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(v)) => v,
        Err(rej) => return Err(ApiError(json_rejection(rej))),
    };
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError(Error::validation("body", "The request body must be a JSON object.")));
    }
    Ok(v)
}

/// A JSON body that may be left out: an empty body is `T::default()`
/// (`POST .../cancel` with nothing to say), anything else is read as `ApiJson`.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError(too_large()))?;
        // No body, or a JSON null: the operation's defaults.
        if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        if !is_json(&parts.headers) {
            return Err(ApiError(unsupported_media_type("application/json")));
        }
        parse_json(&bytes).map(ApiJsonOrEmpty)
    }
}

/// The field a data error names: serde_path_to_error writes "path: reason"
/// ("rules.locations[0]: ..."); without a path the whole body is at fault.
fn field_of(msg: &str) -> &str {
    match msg.split_once(": ") {
        Some((path, _)) if !path.is_empty() && !path.contains(char::is_whitespace) && path != "." => path,
        _ => "body",
    }
}

fn json_rejection(rej: JsonRejection) -> Error {
    match rej {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field and what was wrong with it.
            let msg = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text());
            Error::validation(field_of(&msg), format!("The request body does not fit: {msg}."))
        }
        JsonRejection::JsonSyntaxError(e) => {
            let msg = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text());
            Error::new(Code::MalformedJson, format!("The request body is not valid JSON: {msg}."))
        }
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type("application/json"),
        JsonRejection::BytesRejection(e) if e.status().as_u16() == 413 => too_large(),
        other => Error::new(
            Code::MalformedJson,
            format!("The request body could not be read: {}.", other.body_text()),
        ),
    }
}

/// Query string parameters, with bad ones answered as problem documents.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                // serde_urlencoded says "unknown field `x`, expected ..." or
                // "invalid value ... for `limit`": name the parameter when it can.
                let field = text
                    .split('`')
                    .nth(1)
                    .filter(|f| !f.is_empty() && f.len() <= 40 && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                    .unwrap_or("query");
                Err(ApiError(Error::validation(
                    field,
                    format!("The query string does not fit: {text}."),
                )))
            }
            Err(e) => Err(ApiError(Error::validation("query", e.body_text()))),
        }
    }
}

/// `If-Match`, when the request sends one.
pub struct Precondition(pub IfMatch);

impl<S: Send + Sync> FromRequestParts<S> for Precondition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(header::IF_MATCH) {
            None => Ok(Precondition(IfMatch::none())),
            Some(v) => match v.to_str() {
                Ok(s) => Ok(Precondition(IfMatch::parse(s))),
                Err(_) => Err(ApiError(Error::validation("If-Match", "If-Match must be visible ASCII."))),
            },
        }
    }
}

/// The caller: a live token's principal (401 otherwise) and the request's id.
impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let principal = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(p)) => p.clone(),
            None => authenticate(app, &parts.headers).await?,
        };
        crate::observe::TokenSlot::note(&parts.extensions, &principal.token_id);
        let request_id = match parts.extensions.get::<RequestId>() {
            Some(RequestId(id)) => id.clone(),
            None => allot_store::new_id("req"),
        };
        Ok(Caller { principal, request_id })
    }
}

/// The announced size of a body, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
