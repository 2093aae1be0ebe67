//! The web console under `/ui/`: server-rendered pages (maud), htmx for
//! partial updates, one stylesheet. A page parses its input, calls one use
//! case of [`crate::app`] with the signed-in admin as the caller (the same
//! role and scope checks, rules and audit log as the JSON API), and
//! presents the result or the domain error (see [`page::HtmlError`]).
//!
//! Every answer under `/ui/` carries a Content-Security-Policy that allows
//! scripts and styles from this origin only (no inline script), refuses
//! framing, and keeps the referrer to this origin.

mod admins;
mod assets;
mod catalogue;
mod customers;
mod edit_licenses;
mod import;
mod jobs;
mod manage_licenses;
mod orgs;
pub mod page;
mod provisioning;
mod purchases;
mod queues;
pub mod session;
mod sign_in;
mod subscriptions;
mod templates;
mod tokens;
mod users;
mod webhooks;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};

use allot_domain::Error;

use crate::app::App;
use crate::observe::RequestId;
use page::HtmlError;

/// The console's routes (merged into the server's router).
pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(orgs::home))
        .route("/ui/login", get(sign_in::show).post(sign_in::submit))
        .route("/ui/logout", post(sign_in::sign_out))
        .route("/ui/tokens", get(tokens::show).post(tokens::create))
        .route("/ui/tokens/{id}/revoke", post(tokens::revoke))
        .route("/ui/admins", get(admins::show_provider).post(admins::invite_provider))
        .route(
            "/ui/partners/{partner}/admins",
            get(admins::show_partner).post(admins::invite_partner),
        )
        .route("/ui/orgs/{org}/admins", get(admins::show_org).post(admins::invite_org))
        .route("/ui/admins/{admin}/role", post(admins::change_role))
        .route("/ui/partners/{partner}/admins/{admin}/role", post(admins::change_role))
        .route("/ui/orgs/{org}/admins/{admin}/role", post(admins::change_role))
        .route("/ui/admins/{admin}/remove", post(admins::remove))
        .route("/ui/partners/{partner}/admins/{admin}/remove", post(admins::remove))
        .route("/ui/orgs/{org}/admins/{admin}/remove", post(admins::remove))
        .route("/ui/admins/{admin}/invitation", post(admins::reinvite))
        .route("/ui/partners/{partner}/admins/{admin}/invitation", post(admins::reinvite))
        .route("/ui/orgs/{org}/admins/{admin}/invitation", post(admins::reinvite))
        .route(
            "/ui/invitations/{secret}",
            get(admins::show_invitation).post(admins::accept_invitation),
        )
        .route("/ui/customers", get(customers::all))
        .route("/ui/partners", get(customers::partners))
        .route("/ui/partners/{partner}/customers", get(customers::of_partner))
        .route("/ui/orgs/{org}", get(orgs::overview))
        .route("/ui/orgs/{org}/licenses", get(orgs::products))
        .route("/ui/orgs/{org}/licenses/buy", post(orgs::buy_more))
        .route("/ui/orgs/{org}/users", get(users::list))
        .route("/ui/orgs/{org}/users/selection", post(users::change_selection))
        .route("/ui/orgs/{org}/users/selected", get(users::selected))
        .route(
            "/ui/orgs/{org}/manage-licenses",
            get(manage_licenses::show).post(manage_licenses::save),
        )
        .route("/ui/orgs/{org}/manage-licenses/assigned", get(manage_licenses::assigned))
        .route("/ui/orgs/{org}/users/{user}", get(users::summary))
        .route("/ui/orgs/{org}/users/{user}/queues/leave", post(users::leave_queues))
        .route("/ui/orgs/{org}/queues", get(queues::list))
        .route(
            "/ui/orgs/{org}/users/{user}/licenses/edit",
            get(edit_licenses::show).post(edit_licenses::save),
        )
        .route("/ui/products", get(catalogue::show))
        .route("/ui/products/document", post(catalogue::document))
        .route("/ui/products/new", get(catalogue::new_product).post(catalogue::create))
        .route("/ui/products/{code}/edit", get(catalogue::edit).post(catalogue::save))
        .route("/ui/orgs/{org}/subscriptions", get(subscriptions::list))
        .route("/ui/orgs/{org}/subscriptions/{sub}", get(subscriptions::show))
        .route("/ui/orgs/{org}/subscriptions/{sub}/cancel", post(subscriptions::cancel))
        .route(
            "/ui/orgs/{org}/subscriptions/{sub}/items/{product}/details",
            post(subscriptions::submit_details),
        )
        .route("/ui/orgs/{org}/audit", get(subscriptions::audit_log))
        .route("/ui/orgs/{org}/purchases", get(purchases::show).post(purchases::request))
        .route("/ui/orgs/{org}/purchases/{id}/fulfil", post(purchases::fulfil))
        .route("/ui/orgs/{org}/purchases/{id}/reject", post(purchases::reject))
        .route("/ui/orgs/{org}/jobs", get(jobs::list))
        .route("/ui/orgs/{org}/templates", get(templates::list).post(templates::create))
        .route("/ui/orgs/{org}/templates/{tpl}", get(templates::edit).post(templates::save))
        .route("/ui/orgs/{org}/templates/{tpl}/apply", post(templates::apply))
        .route(
            "/ui/orgs/{org}/import",
            // The use case keeps to the import limit while it reads.
            get(import::show)
                .post(import::upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/ui/orgs/{org}/users.csv", get(import::export))
        .route("/ui/jobs/{job}", get(jobs::show))
        .route("/ui/webhooks", get(webhooks::show_provider).post(webhooks::create_provider))
        .route("/ui/webhooks/{hook}", get(webhooks::show_provider_hook))
        .route("/ui/webhooks/{hook}/test", post(webhooks::test_provider))
        .route("/ui/webhooks/{hook}/rotate", post(webhooks::rotate_provider))
        .route("/ui/webhooks/{hook}/enabled", post(webhooks::enabled_provider))
        .route("/ui/webhooks/{hook}/delete", post(webhooks::delete_provider))
        .route(
            "/ui/webhooks/{hook}/deliveries/{delivery}/redeliver",
            post(webhooks::redeliver_provider),
        )
        .route(
            "/ui/partners/{partner}/webhooks",
            get(webhooks::show_partner).post(webhooks::create_partner),
        )
        .route("/ui/partners/{partner}/webhooks/{hook}", get(webhooks::show_partner_hook))
        .route("/ui/partners/{partner}/webhooks/{hook}/test", post(webhooks::test_partner))
        .route("/ui/partners/{partner}/webhooks/{hook}/rotate", post(webhooks::rotate_partner))
        .route("/ui/partners/{partner}/webhooks/{hook}/enabled", post(webhooks::enabled_partner))
        .route("/ui/partners/{partner}/webhooks/{hook}/delete", post(webhooks::delete_partner))
        .route(
            "/ui/partners/{partner}/webhooks/{hook}/deliveries/{delivery}/redeliver",
            post(webhooks::redeliver_partner),
        )
        .route("/ui/orgs/{org}/webhooks", get(webhooks::show_org).post(webhooks::create_org))
        .route("/ui/orgs/{org}/provisioning", get(provisioning::show))
        .route("/ui/orgs/{org}/provisioning/tokens", post(provisioning::create_token))
        .route("/ui/orgs/{org}/provisioning/tokens/{id}/revoke", post(provisioning::revoke_token))
        .route("/ui/orgs/{org}/provisioning/settings", post(provisioning::save_settings))
        .route("/ui/orgs/{org}/webhooks/{hook}", get(webhooks::show_org_hook))
        .route("/ui/orgs/{org}/webhooks/{hook}/test", post(webhooks::test_org))
        .route("/ui/orgs/{org}/webhooks/{hook}/rotate", post(webhooks::rotate_org))
        .route("/ui/orgs/{org}/webhooks/{hook}/enabled", post(webhooks::enabled_org))
        .route("/ui/orgs/{org}/webhooks/{hook}/delete", post(webhooks::delete_org))
        .route(
            "/ui/orgs/{org}/webhooks/{hook}/deliveries/{delivery}/redeliver",
            post(webhooks::redeliver_org),
        )
        .route("/ui/jobs/{job}/progress", get(jobs::progress_part))
        .route("/ui/jobs/{job}/results.csv", get(jobs::results_csv))
        .route("/ui/jobs/{job}/cancel", post(jobs::cancel))
        .route("/ui/jobs/{job}/apply", post(jobs::apply))
        .route("/ui/assets/{name}", get(assets::serve_asset))
        .route("/ui/{*rest}", any(not_found))
        .layer(middleware::from_fn(security_headers))
}

/// Any other path under `/ui/`: the same page whatever was asked for.
async fn not_found(Extension(RequestId(id)): Extension<RequestId>) -> Response {
    HtmlError::new(Error::not_found("That page"), &id).into_response()
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show tenant data: never kept by a shared cache or the back button of another person.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
