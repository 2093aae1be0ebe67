//! `Idempotency-Key` on mutating calls: the same key with the same request
//! replays the first answer; with another request → 422; while the first is
//! still running → 409. Keys are scoped to the caller's token.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use allot_domain::{Code, Error};
use allot_store::in_transaction;
use allot_store::tokens::{self, IdempotencyState};

use crate::auth::hash_token;
use crate::extract::MAX_BODY_BYTES;
use crate::problem::ApiError;
use crate::AppState;

pub async fn idempotency(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::POST | Method::PATCH | Method::PUT | Method::DELETE) {
        return next.run(req).await;
    }
    let Some(raw_key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        _ => {
            return ApiError(Error::validation(
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            ))
            .into_response()
        }
    };
    let Some(scope) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(hash_token)
    else {
        // No caller to scope the key to: the handler answers 401.
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError(Error::new(
            Code::PayloadTooLarge,
            format!("The request body is larger than the limit of {MAX_BODY_BYTES} bytes."),
        ))
        .into_response();
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update(b"\n");
    h.update(parts.uri.to_string());
    h.update(b"\n");
    h.update(&bytes);
    let request_hash = hex::encode(h.finalize());
    let now = st.clock.now();
    let state = in_transaction!(st.store, |tx| tokens::reserve_key(&mut tx, &scope, &key, &request_hash, now).await);
    match state {
        Err(e) => ApiError(e).into_response(),
        Ok(IdempotencyState::Mismatch) => ApiError(Error::new(
            Code::IdempotencyKeyReused,
            "This Idempotency-Key was used with a different request; use a new key for a new request.",
        ))
        .into_response(),
        Ok(IdempotencyState::InProgress) => ApiError(Error::new(
            Code::IdempotencyKeyInProgress,
            "The first request with this Idempotency-Key is still running; try again shortly.",
        ))
        .into_response(),
        Ok(IdempotencyState::Done { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut resp = (status, body).into_response();
            let ct = if status.is_success() {
                "application/json"
            } else {
                "application/problem+json"
            };
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            resp
        }
        Ok(IdempotencyState::Reserved) => {
            let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let (rparts, rbody) = resp.into_parts();
            let body = to_bytes(rbody, usize::MAX).await.unwrap_or_default();
            let status = rparts.status.as_u16();
            let text = String::from_utf8_lossy(&body).to_string();
            // Server errors are not replayed: the caller may retry them with the same key.
            let saved = in_transaction!(st.store, |tx| {
                if status < 500 {
                    tokens::complete_key(&mut tx, &scope, &key, status, &text).await
                } else {
                    tokens::release_key(&mut tx, &scope, &key).await
                }
            });
            if let Err(e) = saved {
                tracing::warn!(error = %e, "could not record idempotency key");
            }
            Response::from_parts(rparts, Body::from(body))
        }
    }
}
