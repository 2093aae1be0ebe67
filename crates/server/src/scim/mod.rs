//! The SCIM 2.0 surface: `/scim/v2/orgs/{org}/...` for an org's identity
//! provider. Each handler parses its input (a bearer token of role `scim`,
//! `application/scim+json` or `application/json`, SCIM's query
//! parameters), calls one use case of `app::scim`, and presents the result
//! in `application/scim+json`; errors in SCIM's format (`error.rs`).

mod discovery;
pub mod error;
pub mod track;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde::Serialize;
use serde_json::Value;

use allot_domain::{Code, Error};

use crate::app::access::Caller;
use crate::app::etag::IfMatch;
use crate::app::scim::{self as uc, Projection, ScimGroup, ScimQuery, ScimUser};
use crate::app::App;
use crate::auth::authenticate;
use crate::observe::RequestId;
use error::{ScimError, SCIM_JSON};

/// The SCIM routes (merged into the server's router), each request's
/// failure noted for the org's identity provisioning page.
pub fn router(app: &App) -> Router<App> {
    Router::new()
        .route("/scim/v2/orgs/{org}/ServiceProviderConfig", get(service_provider_config))
        .route("/scim/v2/orgs/{org}/ResourceTypes", get(resource_types))
        .route("/scim/v2/orgs/{org}/ResourceTypes/{id}", get(resource_type))
        .route("/scim/v2/orgs/{org}/Schemas", get(schemas))
        .route("/scim/v2/orgs/{org}/Schemas/{id}", get(schema))
        .route("/scim/v2/orgs/{org}/Users", get(list_users).post(create_user))
        .route("/scim/v2/orgs/{org}/Users/.search", post(search_users))
        // A search at the root covers every resource type.
        .route("/scim/v2/orgs/{org}/.search", post(search_all))
        .route(
            "/scim/v2/orgs/{org}/Users/{id}",
            get(get_user).put(replace_user).patch(patch_user).delete(delete_user),
        )
        .route("/scim/v2/orgs/{org}/Groups", get(list_groups).post(create_group))
        .route("/scim/v2/orgs/{org}/Groups/.search", post(search_groups))
        .route(
            "/scim/v2/orgs/{org}/Groups/{id}",
            get(get_group).put(replace_group).patch(patch_group).delete(delete_group),
        )
        .route("/scim/{*rest}", any(not_served))
        .layer(axum::middleware::from_fn_with_state(app.clone(), track::track))
}

/// The caller: a live token's principal (401 otherwise), as a SCIM error.
pub struct ScimCaller(pub Caller);

impl FromRequestParts<App> for ScimCaller {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let principal = authenticate(app, &parts.headers).await?;
        crate::observe::TokenSlot::note(&parts.extensions, &principal.token_id);
        if principal.role == allot_domain::access::Role::Scim {
            if let Some(org) = &principal.org {
                let actor = Caller {
                    principal: principal.clone(),
                    request_id: String::new(),
                }
                .actor()
                .actor;
                track::Slot::note(&parts.extensions, org, &actor);
            }
        }
        let request_id = match parts.extensions.get::<RequestId>() {
            Some(RequestId(id)) => id.clone(),
            None => allot_store::new_id("req"),
        };
        Ok(ScimCaller(Caller { principal, request_id }))
    }
}

/// The org's SCIM base URL, as the client reached it (for `meta.location`).
fn base_url(headers: &HeaderMap, org: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let scheme = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/scim/v2/orgs/{org}")
}

/// A SCIM answer: JSON in `application/scim+json`.
fn answer<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => {
            let mut resp = (status, text).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
            resp
        }
        Err(e) => ScimError(Error::internal(format!("serializing a SCIM answer: {e}"))).into_response(),
    }
}

/// A resource, with its version as `ETag` (and, when created, its `Location`).
fn resource_answer<T: Serialize>(status: StatusCode, body: &T, meta: Option<&uc::ScimMeta>) -> Response {
    let mut resp = answer(status, body);
    if let Some(meta) = meta {
        if let Ok(v) = HeaderValue::from_str(&meta.version) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        if status == StatusCode::CREATED {
            if let Ok(v) = HeaderValue::from_str(&meta.location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
        }
    }
    resp
}

fn user_answer(status: StatusCode, u: &ScimUser) -> Response {
    resource_answer(status, u, u.meta.as_ref())
}

fn group_answer(status: StatusCode, g: &ScimGroup) -> Response {
    resource_answer(status, g, g.meta.as_ref())
}

/// A request body: JSON, sent as `application/scim+json` or `application/json`.
fn body_of(headers: &HeaderMap, body: &Bytes) -> Result<Value, ScimError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/scim+json") | Some("application/json") => {}
        Some(other) => {
            return Err(ScimError(Error::new(
                Code::UnsupportedMediaType,
                format!("Send the body as application/scim+json or application/json, not {other}."),
            )))
        }
        None => {
            return Err(ScimError(Error::new(
                Code::UnsupportedMediaType,
                "Send the body with Content-Type: application/scim+json.",
            )))
        }
    }
    serde_json::from_slice(body).map_err(|e| ScimError(Error::new(Code::InvalidSyntax, format!("The body is not JSON: {e}."))))
}

fn if_match(headers: &HeaderMap) -> Result<IfMatch, ScimError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(IfMatch::none()),
        Some(v) => v
            .to_str()
            .map(IfMatch::parse)
            .map_err(|_| ScimError(Error::validation("If-Match", "If-Match must be visible ASCII."))),
    }
}

/// A query parameter by its name, ignoring case (providers differ).
fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn number(name: &str, v: Option<&str>) -> Result<Option<i64>, ScimError> {
    v.map(|s| {
        s.trim().parse::<i64>().map_err(|_| {
            ScimError(Error::validation(
                name,
                format!("{name} must be an integer, not {:?}.", allot_domain::types::excerpt(s)),
            ))
        })
    })
    .transpose()
}

fn query_of(q: &HashMap<String, String>) -> Result<ScimQuery, ScimError> {
    Ok(ScimQuery {
        filter: param(q, "filter").map(str::to_string),
        start_index: number("startIndex", param(q, "startIndex"))?,
        count: number("count", param(q, "count"))?,
        projection: Projection::parse(param(q, "attributes"), param(q, "excludedAttributes")),
    })
}

/// The body of `POST .search` (RFC 7644 §3.4.3).
fn search_of(body: &Value) -> Result<ScimQuery, ScimError> {
    let Value::Object(o) = body else {
        return Err(ScimError(Error::new(
            Code::InvalidSyntax,
            "A search is a JSON object (SearchRequest).",
        )));
    };
    let get = |k: &str| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v);
    let text = |k: &str| -> Result<Option<String>, ScimError> {
        match get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(a)) => Ok(Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))),
            Some(_) => Err(ScimError(Error::validation(k, format!("{k} must be a string.")))),
        }
    };
    let int = |k: &str| -> Result<Option<i64>, ScimError> {
        match get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ScimError(Error::validation(k, format!("{k} must be an integer.")))),
        }
    };
    Ok(ScimQuery {
        filter: text("filter")?,
        start_index: int("startIndex")?,
        count: int("count")?,
        projection: Projection::parse(text("attributes")?.as_deref(), text("excludedAttributes")?.as_deref()),
    })
}

/// Discovery answers the org's identity provider only, as every call
/// does (so that other tenants cannot probe which orgs exist).
async fn discovery_org(app: &App, caller: &Caller, org: &str) -> Result<(), ScimError> {
    Ok(uc::check_provisioner(app, caller, org).await?)
}

async fn service_provider_config(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery_org(&app, &caller, &org).await?;
    Ok(answer(
        StatusCode::OK,
        &discovery::service_provider_config(&base_url(&headers, &org)),
    ))
}

async fn resource_types(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery_org(&app, &caller, &org).await?;
    Ok(answer(
        StatusCode::OK,
        &discovery::listed(discovery::resource_types(&base_url(&headers, &org))),
    ))
}

async fn resource_type(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery_org(&app, &caller, &org).await?;
    discovery::resource_types(&base_url(&headers, &org))
        .into_iter()
        .find(|t| t.id == id)
        .map(|t| answer(StatusCode::OK, &t))
        .ok_or_else(|| ScimError(Error::not_found(format!("Resource type {}", allot_domain::types::excerpt(&id)))))
}

async fn schemas(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery_org(&app, &caller, &org).await?;
    Ok(answer(
        StatusCode::OK,
        &discovery::listed(discovery::schemas(&base_url(&headers, &org))),
    ))
}

async fn schema(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    discovery_org(&app, &caller, &org).await?;
    discovery::schemas(&base_url(&headers, &org))
        .into_iter()
        .find(|s| s.id == id)
        .map(|s| answer(StatusCode::OK, &s))
        .ok_or_else(|| ScimError(Error::not_found(format!("Schema {}", allot_domain::types::excerpt(&id)))))
}

async fn list_users(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let q = query_of(&q)?;
    let listed = uc::list_users(&app, &caller, &org, &base_url(&headers, &org), &q).await?;
    Ok(answer(StatusCode::OK, &listed))
}

async fn search_users(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let q = search_of(&body_of(&headers, &body)?)?;
    let listed = uc::list_users(&app, &caller, &org, &base_url(&headers, &org), &q).await?;
    Ok(answer(StatusCode::OK, &listed))
}

async fn search_all(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let q = search_of(&body_of(&headers, &body)?)?;
    let listed = uc::search_all(&app, &caller, &org, &base_url(&headers, &org), &q).await?;
    Ok(answer(StatusCode::OK, &listed))
}

async fn get_user(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let projection = Projection::parse(param(&q, "attributes"), param(&q, "excludedAttributes"));
    let u = uc::get_user(&app, &caller, &org, &base_url(&headers, &org), &id, &projection).await?;
    Ok(user_answer(StatusCode::OK, &u))
}

async fn create_user(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = body_of(&headers, &body)?;
    let u = uc::create_user(&app, &caller, &org, &base_url(&headers, &org), &body).await?;
    Ok(user_answer(StatusCode::CREATED, &u))
}

async fn replace_user(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = body_of(&headers, &body)?;
    let u = uc::replace_user(&app, &caller, &org, &base_url(&headers, &org), &id, &body, &if_match(&headers)?).await?;
    Ok(user_answer(StatusCode::OK, &u))
}

async fn patch_user(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = body_of(&headers, &body)?;
    let u = uc::patch_user(&app, &caller, &org, &base_url(&headers, &org), &id, &body, &if_match(&headers)?).await?;
    Ok(user_answer(StatusCode::OK, &u))
}

async fn delete_user(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    uc::delete_user(&app, &caller, &org, &id, &if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_groups(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let q = query_of(&q)?;
    let listed = uc::list_groups(&app, &caller, &org, &base_url(&headers, &org), &q).await?;
    Ok(answer(StatusCode::OK, &listed))
}

async fn search_groups(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let q = search_of(&body_of(&headers, &body)?)?;
    let listed = uc::list_groups(&app, &caller, &org, &base_url(&headers, &org), &q).await?;
    Ok(answer(StatusCode::OK, &listed))
}

async fn get_group(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let projection = Projection::parse(param(&q, "attributes"), param(&q, "excludedAttributes"));
    let g = uc::get_group(&app, &caller, &org, &base_url(&headers, &org), &id, &projection).await?;
    Ok(group_answer(StatusCode::OK, &g))
}

async fn create_group(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = body_of(&headers, &body)?;
    let g = uc::create_group(&app, &caller, &org, &base_url(&headers, &org), &body).await?;
    Ok(group_answer(StatusCode::CREATED, &g))
}

async fn replace_group(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = body_of(&headers, &body)?;
    let g = uc::replace_group(&app, &caller, &org, &base_url(&headers, &org), &id, &body, &if_match(&headers)?).await?;
    Ok(group_answer(StatusCode::OK, &g))
}

async fn patch_group(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = body_of(&headers, &body)?;
    let g = uc::patch_group(&app, &caller, &org, &base_url(&headers, &org), &id, &body, &if_match(&headers)?).await?;
    Ok(group_answer(StatusCode::OK, &g))
}

async fn delete_group(
    State(app): State<App>,
    ScimCaller(caller): ScimCaller,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    uc::delete_group(&app, &caller, &org, &id, &if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn not_served() -> ScimError {
    ScimError(Error::not_found("That SCIM path"))
}
