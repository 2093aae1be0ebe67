//! What every request passes through on its way in and out: its id
//! (`x-request-id`: the caller's, if it sent a sane one, else a new one),
//! one structured log line (method, route template, status, latency,
//! request id, token id), the metrics, and the problem document's
//! `request_id`. A 5xx answer's detail goes to the log; the caller is told
//! only that something went wrong and the request id to quote.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, HttpBody as _};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;
use crate::auth::sane_request_id;
use crate::problem::{Problem, PROBLEM_JSON};

/// The id of the request being served (a request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Where authentication notes the token's id, for the request's log line.
#[derive(Debug, Clone, Default)]
pub struct TokenSlot(pub Arc<OnceLock<String>>);

impl TokenSlot {
    pub fn note(extensions: &axum::http::Extensions, token_id: &str) {
        if let Some(slot) = extensions.get::<TokenSlot>() {
            let _ = slot.0.set(token_id.to_string());
        }
    }
}

/// A problem document this large (one listing every reason a request with
/// tens of thousands of entries was refused) is passed on as it is, without
/// `request_id` (the `x-request-id` header still names the request), rather
/// than held whole in memory a second time.
const MAX_PROBLEM_BYTES: usize = 1 << 20;

pub async fn observe(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| allot_store::new_id("req"));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(no route)".to_string());
    let slot = TokenSlot::default();
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(slot.clone());

    let mut resp = next.run(req).await;

    let status = resp.status();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let mut cause = None;
    if is_problem {
        let (parts, body) = resp.into_parts();
        let (body, detail) = decorate(body, &id, status.is_server_error()).await;
        cause = detail;
        resp = Response::from_parts(parts, body);
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    if status.as_u16() == 429 {
        let per_second = app.config.rate_limit.per_second.max(f64::MIN_POSITIVE);
        let secs = (1.0 / per_second).ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    let took = started.elapsed();
    let token = slot.0.get().map(String::as_str).unwrap_or("-");
    let token = tracing::field::display(token);
    let latency_ms = took.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::error!(
            request_id = %id, method = %method, route = %route, status = status.as_u16(), latency_ms, token,
            cause = cause.as_deref().unwrap_or("(no detail)"),
            "request failed"
        );
    } else {
        tracing::info!(request_id = %id, method = %method, route = %route, status = status.as_u16(), latency_ms, token, "request");
    }
    app.metrics.observe(&route, method.as_str(), status.as_u16(), took);
    resp
}

/// Adds `request_id` to a problem document; for a 5xx, also replaces its
/// detail (returned, for the log) with a sentence naming the request.
async fn decorate(body: Body, id: &str, server_error: bool) -> (Body, Option<String>) {
    let large = body.size_hint().upper().is_none_or(|n| n > MAX_PROBLEM_BYTES as u64);
    if large && !server_error {
        return (body, None);
    }
    // A 5xx's detail is never passed on: if it cannot be read, it is replaced.
    let bytes = match axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return (
                Body::from(format!("{{\"request_id\":\"{id}\"}}")),
                Some(format!("unreadable problem body: {e}")),
            )
        }
    };
    let Ok(mut p) = serde_json::from_slice::<Problem>(&bytes) else {
        return (Body::from(bytes), None);
    };
    p.request_id = Some(id.to_string());
    let mut cause = None;
    if server_error {
        cause = Some(std::mem::replace(
            &mut p.detail,
            format!("Something went wrong on our side. Quote request {id} when you report it."),
        ));
        p.errors.clear();
    }
    // A struct of strings, numbers and enums always serializes.
    (Body::from(serde_json::to_vec(&p).unwrap_or_default()), cause)
}
