//! Allot's HTTP server: thin axum handlers over the store and the domain.
//!
//! Data enters through [`api`] (JSON; bad input becomes a problem document
//! in [`extract`]), the caller is identified and checked in [`auth`], rules
//! are decided by `allot_domain`, and `allot_store` keeps everything.

pub mod api;
pub mod auth;
pub mod clock;
pub mod extract;
mod idempotency;
pub mod problem;
pub mod retention;
pub mod serve;
pub mod worker;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{middleware, Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use allot_domain::Error;
use allot_store::Store;

use crate::api::*;
use crate::clock::Clock;
use crate::problem::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
}

/// Sizes the server accepts, set per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest CSV import, in bytes (413 above it).
    pub max_import_bytes: u64,
    /// How long an answer stored for an `Idempotency-Key` is replayed.
    pub idempotency_ttl: std::time::Duration,
    /// How long a key stays reserved for a request that neither finished
    /// nor released it (its server died); then another request may take it.
    pub idempotency_lease: std::time::Duration,
    /// The largest answer kept for replays; a larger one is not stored.
    pub max_replay_bytes: usize,
    /// Open connections and how long they may idle (see [`serve`]).
    pub connections: serve::ConnectionLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A million users with a dozen item columns is about 100 MB.
            max_import_bytes: 256 * 1024 * 1024,
            idempotency_ttl: std::time::Duration::from_secs(24 * 3600),
            idempotency_lease: std::time::Duration::from_secs(600),
            // Every answer of a mutating call is far smaller (refusals list
            // at most 100 errors).
            max_replay_bytes: 1024 * 1024,
            connections: serve::ConnectionLimits::default(),
        }
    }
}

impl Limits {
    /// The defaults, changed by `ALLOT_MAX_IMPORT_BYTES`,
    /// `ALLOT_IDEMPOTENCY_TTL_SECS`, `ALLOT_IDEMPOTENCY_LEASE_SECS`,
    /// `ALLOT_MAX_CONNECTIONS`, `ALLOT_HEADER_TIMEOUT_MS` and
    /// `ALLOT_BODY_TIMEOUT_MS`.
    pub fn from_env() -> Self {
        let mut l = Limits::default();
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = var("ALLOT_MAX_IMPORT_BYTES") {
            l.max_import_bytes = v;
        }
        if let Some(v) = var("ALLOT_IDEMPOTENCY_TTL_SECS").filter(|v| *v >= 1) {
            l.idempotency_ttl = std::time::Duration::from_secs(v);
        }
        if let Some(v) = var("ALLOT_IDEMPOTENCY_LEASE_SECS").filter(|v| *v >= 1) {
            l.idempotency_lease = std::time::Duration::from_secs(v);
        }
        if let Some(v) = var("ALLOT_MAX_CONNECTIONS").filter(|v| *v >= 1) {
            l.connections.max_connections = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = var("ALLOT_HEADER_TIMEOUT_MS").filter(|v| *v >= 100) {
            l.connections.header_timeout = std::time::Duration::from_millis(v);
        }
        if let Some(v) = var("ALLOT_BODY_TIMEOUT_MS").filter(|v| *v >= 100) {
            l.connections.body_timeout = std::time::Duration::from_millis(v);
        }
        l
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Allot", description = "Licence and subscription administration: catalogue, customers, subscriptions, seats and licences."),
    components(schemas()),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The answer of the health and readiness checks.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HealthStatus {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "The server is up", body = HealthStatus)))]
async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: the database answers and can be written to now. A writer that
/// cannot begin a transaction (a lock held elsewhere, a read-only server)
/// makes this 503 while `/healthz`, the liveness answer, stays 200.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses(
    (status = 200, description = "The server can serve reads and writes", body = HealthStatus),
    (status = 503, description = "The database cannot be written to now", content_type = "application/problem+json")
))]
async fn readyz(axum::extract::State(st): axum::extract::State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    match st.store.probe_writable(std::time::Duration::from_secs(2)).await {
        Ok(()) => Ok(Json(HealthStatus { status: "ready" })),
        Err(e) => {
            tracing::error!(error = ?e, "readiness probe failed: the database cannot be written to");
            Err(ApiError(Error::new(
                allot_domain::Code::Unavailable,
                "The database cannot be written to now; see the server's log.",
            )))
        }
    }
}

async fn not_found() -> ApiError {
    ApiError(Error::not_found("That path"))
}

async fn method_not_allowed() -> ApiError {
    ApiError(Error::new(allot_domain::Code::NotFound, "That method is not served at this path."))
}

/// The OpenAPI document and the router come from the same registrations, so
/// the document lists exactly the routes the server serves.
pub fn api_parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(catalogue::list, catalogue::create))
        .routes(routes!(catalogue::get, catalogue::patch))
        .routes(routes!(tenants::list_partners, tenants::create_partner))
        .routes(routes!(tenants::get_partner))
        .routes(routes!(customers::of_partner))
        .routes(routes!(customers::all))
        .routes(routes!(tenants::list_orgs, tenants::create_org))
        .routes(routes!(tenants::get_org, tenants::patch_org))
        .routes(routes!(tenants::list_sites, tenants::create_site))
        .routes(routes!(tenants::list_groups, tenants::create_group))
        .routes(routes!(subscriptions::list, subscriptions::create))
        .routes(routes!(subscriptions::get, subscriptions::patch))
        .routes(routes!(subscription_cancel::cancel))
        .routes(routes!(provisioning::submit))
        .routes(routes!(purchases::list, purchases::create))
        .routes(routes!(purchases::fulfil))
        .routes(routes!(purchases::reject))
        .routes(routes!(licenses::overview))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::patch, users::delete))
        .routes(routes!(sheet_export::export))
        .routes(routes!(licenses::of_user, licenses::change))
        .routes(routes!(queues::list, queues::create))
        .routes(routes!(queues::get, queues::delete))
        .routes(routes!(queues::add_member))
        .routes(routes!(queues::remove_member))
        .routes(routes!(queues::of_user, queues::leave_all))
        .routes(routes!(audit::list))
        .routes(routes!(templates::list, templates::create))
        .routes(routes!(templates::get, templates::patch, templates::delete))
        .routes(routes!(templates::apply))
        .routes(routes!(service_data::purge))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::job_results))
        .merge(
            // Bulk bodies may list up to a million users: their own, larger limit.
            OpenApiRouter::new()
                .routes(routes!(jobs::license_summary))
                .routes(routes!(jobs::create_license_job))
                .layer(DefaultBodyLimit::max(jobs::MAX_BULK_BODY_BYTES)),
        )
        .merge(
            // Imports are spooled to disk and limited by `Limits::max_import_bytes`.
            OpenApiRouter::new()
                .routes(routes!(sheet_import::create))
                .layer(DefaultBodyLimit::disable()),
        )
        .split_for_parts()
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api_parts().1
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api_parts();
    let doc = Arc::new(doc);
    api.route("/api/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), idempotency::idempotency))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves until `shutdown` resolves, with the job worker running beside the
/// HTTP server (and stopped with it).
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let worker = tokio::spawn(worker::run_worker(state.clone()));
    let limits = state.limits.connections;
    let served = serve::serve_connections(listener, router(state), limits, shutdown, std::time::Duration::from_secs(30)).await;
    worker.abort();
    served
}
