//! Extractors that turn every bad input into a problem document.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use allot_domain::{Code, Error};

use crate::problem::ApiError;

/// The largest request body accepted (1 MiB); larger ones answer 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// JSON body; malformed JSON, wrong types, unknown fields and oversized
/// bodies answer with a problem document that says which.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(ApiError(json_rejection(rej))),
        }
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`
/// (`POST .../cancel` with nothing to say), anything else is read as `ApiJson`.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
            ApiError(Error::new(
                Code::PayloadTooLarge,
                format!("The request body is larger than the limit of {MAX_BODY_BYTES} bytes."),
            ))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        ApiJson::<T>::from_request(req, state).await.map(|ApiJson(v)| ApiJsonOrEmpty(v))
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
            Error::validation("body", format!("The request body is not valid JSON: {msg}."))
        }
        JsonRejection::MissingJsonContentType(_) => {
            Error::validation("content-type", "Send the body as JSON with Content-Type: application/json.")
        }
        JsonRejection::BytesRejection(e) if e.status().as_u16() == 413 => Error::new(
            Code::PayloadTooLarge,
            format!("The request body is larger than the limit of {MAX_BODY_BYTES} bytes."),
        ),
        other => Error::validation("body", format!("The request body could not be read: {}.", other.body_text())),
    }
}

/// Query string parameters, with bad ones answered as problem documents.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError(Error::validation(
                "query",
                format!("The query string does not fit: {}.", e.body_text()),
            ))),
            Err(e) => Err(ApiError(Error::validation("query", e.body_text()))),
        }
    }
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub struct Page {
    pub limit: i64,
    pub after: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, Error> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::validation(
                "limit",
                format!("limit must be between 1 and 1000 (got {limit})."),
            ));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) if !c.is_empty() && c.len() <= 200 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') => {
                Some(c.clone())
            }
            Some(_) => return Err(Error::validation("cursor", "cursor is not one this server handed out.")),
        };
        Ok(Page { limit, after })
    }
}

/// A list answer: `{"items": [...], "next_cursor": ...}`. `rows` holds up to
/// `limit + 1` items (the extra one only says that there are more).
pub fn paged<T: serde::Serialize>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> serde_json::Value {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(&key) } else { None };
    serde_json::json!({ "items": rows, "next_cursor": next })
}
