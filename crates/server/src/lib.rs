//! Allot's server: the use cases ([`app`]) and what hangs off them: the
//! JSON API ([`api`]), the job worker ([`worker`]), and the HTTP plumbing
//! around them (request ids, logs and metrics in [`observe`], problem
//! documents in [`problem`], idempotency keys, connection limits in
//! [`serve`]), and the web console ([`console`]). Rules are decided by `allot_domain`; `allot_store` keeps
//! everything.

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
mod download;
pub mod extract;
mod idempotency;
pub mod metrics;
pub mod observe;
pub mod problem;
pub mod ratelimit;
pub mod scim;
pub mod serve;
pub mod worker;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{middleware, Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use allot_domain::Error;

use crate::api::*;
use crate::problem::ApiError;

pub use crate::app::App;
pub use crate::config::{Config, Limits};

/// The application as the router's state.
pub type AppState = App;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Allot",
        description = "Licence and subscription administration: catalogue, customers, subscriptions, seats and licences. \
                       Errors are RFC 9457 problem documents; every answer carries x-request-id."
    ),
    components(schemas(
        crate::problem::Problem,
        crate::app::customers::CustomerOrder,
        crate::app::jobs::ResultsFormat,
        allot_domain::sheet::ImportMode,
        allot_domain::planner::PropertiesSchema
    )),
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

#[utoipa::path(get, path = "/healthz", operation_id = "get_health", tag = "health", security(()),
    responses((status = 200, description = "The server is up", body = HealthStatus)))]
async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: the database answers and can be written to now. A writer that
/// cannot begin a transaction (a lock held elsewhere, a read-only server)
/// makes this 503 while `/healthz`, the liveness answer, stays 200.
#[utoipa::path(get, path = "/readyz", operation_id = "get_readiness", tag = "health", security(()), responses(
    (status = 200, description = "The server can serve reads and writes", body = HealthStatus),
    (status = 503, description = "unavailable: the database cannot be written to now, or the server is shutting down")
))]
async fn readyz(State(app): State<App>) -> Result<Json<HealthStatus>, ApiError> {
    if app.is_shutting_down() {
        return Err(ApiError(Error::new(
            allot_domain::Code::Unavailable,
            "The server is shutting down.",
        )));
    }
    match app.store.probe_writable(std::time::Duration::from_secs(2)).await {
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

async fn method_not_allowed() -> impl IntoResponse {
    let mut resp = ApiError(Error::new(allot_domain::Code::NotFound, "That method is not served at this path.")).into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}

/// The OpenAPI document and the router come from the same registrations, so
/// the document lists exactly the routes the server serves.
pub fn api_parts() -> (Router<App>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(catalogue::list_products, catalogue::create_product))
        .routes(routes!(catalogue::get_product, catalogue::update_product))
        .routes(routes!(catalogue::apply_catalogue))
        .routes(routes!(tenants::list_partners, tenants::create_partner))
        .routes(routes!(tenants::get_partner))
        .routes(routes!(customers::list_partner_customers))
        .routes(routes!(customers::list_customers))
        .routes(routes!(tenants::list_orgs, tenants::create_org))
        .routes(routes!(tenants::get_org, tenants::update_org))
        .routes(routes!(tenants::get_identity_provisioning))
        .routes(routes!(tenants::list_sites, tenants::create_site))
        .routes(routes!(tenants::list_groups, tenants::create_group))
        .routes(routes!(tenants::get_group, tenants::update_group, tenants::delete_group))
        .routes(routes!(subscriptions::list_subscriptions, subscriptions::create_subscription))
        .routes(routes!(subscriptions::get_subscription, subscriptions::update_subscription))
        .routes(routes!(subscriptions::cancel_subscription))
        .routes(routes!(subscriptions::submit_provisioning_details))
        .routes(routes!(purchases::list_purchase_requests, purchases::create_purchase_request))
        .routes(routes!(purchases::fulfil_purchase_request))
        .routes(routes!(purchases::reject_purchase_request))
        .routes(routes!(licenses::list_org_licenses))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user, users::update_user, users::delete_user))
        .routes(routes!(sheets::export_users_csv))
        .routes(routes!(licenses::list_user_licenses, licenses::change_user_licenses))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::get_webhook, webhooks::update_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::rotate_webhook_secret))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::list_webhook_deliveries))
        .routes(routes!(webhooks::redeliver_webhook))
        .routes(routes!(webhooks::list_partner_webhooks, webhooks::create_partner_webhook))
        .routes(routes!(
            webhooks::get_partner_webhook,
            webhooks::update_partner_webhook,
            webhooks::delete_partner_webhook
        ))
        .routes(routes!(webhooks::rotate_partner_webhook_secret))
        .routes(routes!(webhooks::test_partner_webhook))
        .routes(routes!(webhooks::list_partner_webhook_deliveries))
        .routes(routes!(webhooks::redeliver_partner_webhook))
        .routes(routes!(webhooks::list_org_webhooks, webhooks::create_org_webhook))
        .routes(routes!(
            webhooks::get_org_webhook,
            webhooks::update_org_webhook,
            webhooks::delete_org_webhook
        ))
        .routes(routes!(webhooks::rotate_org_webhook_secret))
        .routes(routes!(webhooks::test_org_webhook))
        .routes(routes!(webhooks::list_org_webhook_deliveries))
        .routes(routes!(webhooks::redeliver_org_webhook))
        .routes(routes!(queues::list_queues, queues::create_queue))
        .routes(routes!(queues::get_queue, queues::delete_queue))
        .routes(routes!(queues::add_queue_member))
        .routes(routes!(queues::remove_queue_member))
        .routes(routes!(queues::list_user_queues, queues::leave_all_queues))
        .routes(routes!(housekeeping::list_audit_events))
        .routes(routes!(templates::list_license_templates, templates::create_license_template))
        .routes(routes!(
            templates::get_license_template,
            templates::update_license_template,
            templates::delete_license_template
        ))
        .routes(routes!(templates::apply_license_template))
        .routes(routes!(housekeeping::purge_service_data))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(admins::list_admins, admins::invite_admin))
        .routes(routes!(admins::get_admin, admins::update_admin, admins::remove_admin))
        .routes(routes!(admins::reinvite_admin))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::list_job_results))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(entitlements::check_entitlement))
        .routes(routes!(entitlements::evaluate_entitlements))
        .routes(routes!(entitlements::list_user_entitlements))
        .routes(routes!(entitlements::issue_entitlement_token))
        .routes(routes!(entitlements::get_jwks))
        .routes(routes!(entitlements::get_license_usage))
        .routes(routes!(ofrep::evaluate_ofrep_flag))
        .routes(routes!(ofrep::evaluate_ofrep_flags))
        .merge(
            // Bulk bodies may list up to a million users: their own, larger limit.
            OpenApiRouter::new()
                .routes(routes!(jobs::summarize_licenses))
                .routes(routes!(jobs::create_license_job))
                .layer(DefaultBodyLimit::max(MAX_BULK_BODY_BYTES)),
        )
        .merge(
            // Imports are spooled to disk and limited by `Limits::max_import_bytes`.
            OpenApiRouter::new()
                .routes(routes!(sheets::import_users_csv))
                .layer(DefaultBodyLimit::disable()),
        )
        .split_for_parts();
    describe_errors(&mut doc);
    (router, doc)
}

/// The OpenAPI document the server serves (and the repository keeps as
/// `openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_parts().1
}

pub fn router(app: App) -> Router {
    let (api, doc) = api_parts();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_default());
    api.route(
        "/api/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc.as_ref().clone()) }),
    )
    .merge(console::router())
    .merge(scim::router(&app))
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(middleware::from_fn_with_state(app.clone(), idempotency::idempotency))
    .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
    .layer(middleware::from_fn_with_state(app.clone(), observe::observe))
    .with_state(app)
}

/// The metrics address's router: `/metrics` alone.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(app): State<App>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics::render(&app).await,
                )
            }),
        )
        .with_state(app)
}

/// Serves the metrics page on its own listener until the task is dropped.
pub async fn serve_metrics(app: App, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(app)).await
}

/// Serves until `shutdown` resolves, with the job worker running beside the
/// HTTP server. On shutdown: stop accepting, let requests in flight finish
/// (up to `Config::shutdown_grace`), stop the worker and release its job
/// leases (so another server resumes the jobs at once). The caller closes
/// the store afterwards (`Store::close`: SQLite checkpoints its log).
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let entitlements = tokio::spawn(app::entitlements::follow::keep_exact(app.clone()));
    let worker = worker::Worker::start(app.clone());
    let webhooks = app
        .config
        .webhooks
        .deliver
        .then(|| tokio::spawn(worker::webhooks::run(app.clone())));
    let caches = tokio::spawn(app::cache::sync_caches(app.clone()));
    let (stop_usage, usage_stopped) = tokio::sync::oneshot::channel();
    let usage = tokio::spawn(app::entitlements::usage::keep_flushing(app.clone(), usage_stopped));
    let limits = app.config.limits.connections;
    let grace = app.config.shutdown_grace;
    let flag = app.clone();
    let shutdown = async move {
        shutdown.await;
        flag.begin_shutdown();
    };
    let served = serve::serve_connections(listener, router(app.clone()), limits, shutdown, grace).await;
    worker.stop().await;
    // A batch being sent is dropped: its leases run out (or, on SQLite, are voided at the next start) and it is sent again.
    if let Some(webhooks) = webhooks {
        webhooks.abort();
    }
    caches.abort();
    // What checks recorded since the last flush is written before the end.
    let _ = stop_usage.send(());
    let _ = usage.await;
    entitlements.abort();
    served
}
