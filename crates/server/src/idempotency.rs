//! `Idempotency-Key` on mutating calls: the same key with the same request
//! replays the first answer; with another request → 422; while the first is
//! still running → 409.
//!
//! The caller is authenticated before a key is looked at, so a request
//! without a live token never reads a stored answer nor writes a row (it gets
//! its 401 from the handler as any other would). Keys belong to the token.
//!
//! The request is identified by its method, URI and a SHA-256 of its body.
//! The body is hashed as it streams in: up to [`IN_MEMORY_BODY`] it is kept in
//! memory, beyond that it is spooled to an unnamed temporary file and handed
//! to the handler from there, so a 200 MB import with a key costs disk, not
//! memory, and each route's own size limit still applies when the handler
//! reads it.
//!
//! A request with a key runs in a task of its own, so a client that hangs up
//! cannot cut it off half-way: it finishes and its answer is stored for the
//! retry. A request that fails in that task frees its key
//! ([`Reservation`]'s drop). A reservation left by a server that died is taken
//! over after a lease. Stored answers are replayed for a time to live and
//! then purged by the worker; an answer larger than [`Limits::max_replay_bytes`]
//! is not kept (its replay says so instead of running the request twice).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use allot_domain::{Code, Error};
use allot_store::in_transaction;
use allot_store::tokens::{self, IdempotencyState, KeyTimes};

use crate::app::App as AppState;
use crate::auth::{authenticate, Authenticated};
use crate::config::Limits;
use crate::problem::ApiError;

/// Bodies up to this size are hashed and kept in memory; larger ones are
/// spooled to a temporary file while they are hashed.
const IN_MEMORY_BODY: usize = 1024 * 1024;

/// Stored in place of an answer too large to keep, so a replay can say so.
const ANSWER_NOT_KEPT: &str = "allot:answer-not-kept (not JSON, so no real answer equals it)";

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
    let principal = match authenticate(&st, req.headers()).await {
        Ok(p) => p,
        Err(e) => return ApiError(e).into_response(),
    };
    let token = principal.token_id.clone();
    let (mut parts, body) = req.into_parts();
    crate::observe::TokenSlot::note(&parts.extensions, &principal.token_id);
    parts.extensions.insert(Authenticated(principal));
    let spool_limit = st.config.limits.max_import_bytes.max(crate::api::MAX_BULK_BODY_BYTES as u64);
    let (body_hash, body) = match hash_body(body, spool_limit).await {
        Ok(b) => b,
        Err(e) => return ApiError(e).into_response(),
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update(b"\n");
    h.update(parts.uri.to_string());
    h.update(b"\n");
    h.update(body_hash);
    let request_hash = hex::encode(h.finalize());
    // From the reservation on, everything runs in a task of its own: a
    // client that hangs up cannot cut the request off half-way (its writes
    // may already be committed), which would leave its key reserved for
    // ever or freed for a second run. The request finishes, its answer is
    // stored, and a retry replays it.
    match tokio::spawn(reserve_and_run(st, next, parts, body, token, key, request_hash)).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "a request with an Idempotency-Key stopped");
            ApiError(Error::internal("The request stopped; see the server's log.")).into_response()
        }
    }
}

/// Reserves the key and, if it is new, runs the request and stores its
/// answer; otherwise answers from the key. Runs in a task of its own.
async fn reserve_and_run(
    st: AppState,
    next: Next,
    parts: axum::http::request::Parts,
    body: Body,
    token: String,
    key: String,
    request_hash: String,
) -> Response {
    let times = key_times(&st.config.limits);
    let now = st.clock.now();
    let state = in_transaction!(st.store, |tx| tokens::reserve_key(&mut tx, &token, &key, &request_hash, now, times)
        .await);
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
        Ok(IdempotencyState::Done { status, body }) if body == ANSWER_NOT_KEPT => ApiError(Error::new(
            Code::Conflict,
            format!(
                "The first request with this Idempotency-Key was done (status {status}), but its answer was too large to keep; read the result instead of sending it again."
            ),
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
            // Should the handler panic, the reservation's drop frees the key.
            let mut reservation = Reservation {
                st: st.clone(),
                token,
                key,
                settled: false,
            };
            let resp = next.run(Request::from_parts(parts, body)).await;
            let (token, key) = reservation.hand_over();
            let (rparts, rbody) = resp.into_parts();
            // Read the answer up to the size kept for replays; a larger one
            // is passed on as it streams, and not kept.
            let (head, rest) = match read_up_to(rbody, st.config.limits.max_replay_bytes).await {
                Ok(split) => split,
                Err(e) => {
                    tracing::error!(error = %e, "the handler's answer could not be read");
                    release_key(&st, &token, &key).await;
                    return ApiError(Error::internal("The answer could not be sent; nothing more is known.")).into_response();
                }
            };
            let status = rparts.status.as_u16();
            // Server errors are not replayed: the caller may retry them with the same key.
            if status >= 500 {
                release_key(&st, &token, &key).await;
            } else {
                let kept = if rest.is_some() {
                    ANSWER_NOT_KEPT.to_string()
                } else {
                    String::from_utf8_lossy(&head).into_owned()
                };
                let saved = in_transaction!(st.store, |tx| tokens::complete_key(&mut tx, &token, &key, status, &kept).await);
                if let Err(e) = saved {
                    tracing::warn!(error = %e, "could not record an idempotent answer");
                }
            }
            let body = match rest {
                None => Body::from(head),
                Some(rest) => Body::from_stream(futures::stream::once(async move { Ok::<_, axum::Error>(head) }).chain(rest.into_data_stream())),
            };
            Response::from_parts(rparts, body)
        }
    }
}

fn key_times(limits: &Limits) -> KeyTimes {
    KeyTimes {
        lease: chrono::Duration::from_std(limits.idempotency_lease).unwrap_or(chrono::Duration::minutes(10)),
        ttl: chrono::Duration::from_std(limits.idempotency_ttl).unwrap_or(chrono::Duration::hours(24)),
    }
}

/// A reserved key whose request has not finished: dropped unsettled (its
/// task failed), it releases the key from a task of its own so a retry can
/// run.
struct Reservation {
    st: AppState,
    token: String,
    key: String,
    settled: bool,
}

impl Reservation {
    /// Takes the key out for whoever settles it now; the drop then does nothing.
    fn hand_over(&mut self) -> (String, String) {
        self.settled = true;
        (std::mem::take(&mut self.token), std::mem::take(&mut self.key))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (st, token, key) = (self.st.clone(), std::mem::take(&mut self.token), std::mem::take(&mut self.key));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { release_key(&st, &token, &key).await });
        }
    }
}

async fn release_key(st: &AppState, token: &str, key: &str) {
    let released = in_transaction!(st.store, |tx| tokens::release_key(&mut tx, token, key).await);
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not release an idempotency key; it is freed when its lease ends");
    }
}

/// Hashes a request body as it arrives and gives back a body with the same
/// bytes: in memory when small, from an unnamed temporary file when large.
/// Refuses with 413 a body over `limit` (no route takes more).
async fn hash_body(body: Body, limit: u64) -> Result<([u8; 32], Body), Error> {
    let too_large = || {
        Error::new(
            Code::PayloadTooLarge,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    };
    let read_failed = |e: &dyn std::fmt::Display| Error::validation("body", format!("The request body could not be read: {e}"));
    let spool_failed = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot spool a request body to a temporary file");
        Error::internal("The request body could not be stored for reading.")
    };
    let mut hasher = Sha256::new();
    let mut memory: Vec<u8> = Vec::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut total: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| read_failed(&e))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(too_large());
        }
        hasher.update(&chunk);
        match file.as_mut() {
            Some(f) => f.write_all(&chunk).await.map_err(spool_failed)?,
            None if memory.len() + chunk.len() <= IN_MEMORY_BODY => memory.extend_from_slice(&chunk),
            None => {
                let std_file = tempfile::tempfile().map_err(spool_failed)?;
                let mut f = tokio::fs::File::from_std(std_file);
                f.write_all(&memory).await.map_err(spool_failed)?;
                f.write_all(&chunk).await.map_err(spool_failed)?;
                memory = Vec::new();
                file = Some(f);
            }
        }
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let body = match file {
        None => Body::from(memory),
        Some(mut f) => {
            f.flush().await.map_err(spool_failed)?;
            f.rewind().await.map_err(spool_failed)?;
            Body::from_stream(futures::stream::unfold(f, |mut f| async move {
                let mut buf = vec![0u8; 64 * 1024];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), f))
                    }
                    Err(e) => Some((Err(e), f)),
                }
            }))
        }
    };
    Ok((digest, body))
}

/// Reads at most `max` bytes of an answer. Returns them, and the rest of the
/// body (unread) if the answer is longer.
async fn read_up_to(body: Body, max: usize) -> Result<(Bytes, Option<Body>), axum::Error> {
    let mut body = body;
    let mut head: Vec<u8> = Vec::new();
    loop {
        let Some(frame) = body.frame().await else {
            return Ok((Bytes::from(head), None));
        };
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: none of Allot's answers has any
        };
        if head.len() + data.len() > max {
            head.extend_from_slice(&data);
            return Ok((Bytes::from(head), Some(body)));
        }
        head.extend_from_slice(&data);
    }
}
