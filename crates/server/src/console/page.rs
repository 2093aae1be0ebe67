//! The console's page frame and its presenter of the domain error: the same
//! `allot_domain::Error` the JSON API presents as a problem document is
//! presented here as an HTML page, or as a fragment next to a form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use allot_domain::access::{Action, ScopeKind};
use allot_domain::{Code, Error};

use super::assets;
use crate::app::admins::ConsoleSession;

/// A whole page: `title` is its one `<h1>` and its `<title>`.
pub fn page(title: &str, session: Option<&ConsoleSession>, body: Markup) -> Markup {
    frame(title, session, false, body)
}

/// A page of one small form (signing in), its heading above the form in a
/// narrow centred column.
pub fn narrow_page(title: &str, body: Markup) -> Markup {
    frame(title, None, true, body)
}

fn frame(title: &str, session: Option<&ConsoleSession>, narrow: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Allot" }
                link rel="stylesheet" href=(assets::url(&assets::STYLE));
                // htmx would otherwise add an inline <style>, which the
                // Content-Security-Policy refuses.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowScriptTags":false}"#;
                script src=(assets::url(&assets::SCRIPT)) defer {}
                script src=(assets::url(&assets::OWN)) defer {}
            }
            body {
                a.skip-link href="#main" { "Skip to content" }
                header.topbar {
                    a.brand href="/ui/" { "Allot" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/ui/" { "Home" } }
                                @if s.admin.role.scope_kind() == ScopeKind::Provider && s.caller.principal.may(Action::ReadPartners) {
                                    li { a href="/ui/partners" { "Partners" } }
                                }
                                @if s.admin.role.scope_kind() != ScopeKind::Org && s.caller.principal.may(Action::ReadSubscriptions) {
                                    li { a href=(customers_url(s)) { "Customers" } }
                                }
                                // A role that may not do something does not see its way there.
                                @if s.caller.principal.may(Action::ReadCatalogue) {
                                    li { a href="/ui/products" { "Catalogue" } }
                                }
                                @if s.caller.principal.may(Action::ManageAdmins) {
                                    li { a href="/ui/admins" { "Admins" } }
                                }
                                @if s.caller.principal.may(Action::ManageTokens) {
                                    li { a href="/ui/tokens" { "API tokens" } }
                                }
                                @if s.caller.principal.may(Action::ManageWebhooks) {
                                    li { a href="/ui/webhooks" { "Webhooks" } }
                                }
                            }
                        }
                        div.who {
                            span { (s.admin.email) " · " (s.admin.role.as_str()) }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(s.csrf_token);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" {
                    @if narrow {
                        div.narrow {
                            h1 { (title) }
                            (body)
                        }
                    } @else {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
    }
}

/// Where an admin's customer list is: a partner's own, or the provider's.
pub fn customers_url(s: &ConsoleSession) -> String {
    match &s.admin.partner {
        Some(p) => format!("/ui/partners/{p}/customers"),
        None => "/ui/customers".to_string(),
    }
}

/// A stored timestamp as people read it (`2026-06-15 12:00 UTC`); text
/// that is not one is shown as it is.
pub fn when(stored: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(stored)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| stored.to_string())
}

/// Every reason of a refusal, each with its sentence (the same sentences as
/// the API's problem documents), for the top of a form.
pub fn refusal(e: &Error) -> Markup {
    html! {
        div.errors role="alert" {
            p { (e.detail) }
            // Each reason once: a refusal of one reason says it in both places.
            @let reasons: Vec<&str> = e.violations.iter().map(|v| v.message.as_str()).filter(|m| *m != e.detail).collect();
            @if !reasons.is_empty() {
                ul {
                    @for m in reasons {
                        li { (m) }
                    }
                }
            }
        }
    }
}

/// Where a refused form's error goes: `None` for a missing or another
/// tenant's object, a role that may not, or a server error (the whole
/// error page, as for any page); otherwise the status to answer the form
/// with, its reasons shown beside it.
pub fn beside_form(e: &Error) -> Option<StatusCode> {
    if matches!(e.code, Code::NotFound | Code::Forbidden) || e.code.http_status() >= 500 {
        return None;
    }
    Some(StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY))
}

/// The domain error as a page. A server error's cause goes to the log; the
/// page names the request instead.
pub struct HtmlError {
    pub error: Error,
    pub request_id: String,
}

impl HtmlError {
    pub fn new(error: Error, request_id: &str) -> HtmlError {
        HtmlError {
            error,
            request_id: request_id.to_string(),
        }
    }
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (title, body) = if status.is_server_error() {
            tracing::error!(request_id = %self.request_id, cause = %self.error.detail, "console page failed");
            (
                "Something went wrong",
                html! { p { "Something went wrong on our side. Quote request " code { (self.request_id) } " when you report it." } },
            )
        } else {
            let title = match self.error.code {
                Code::NotFound => "Not found",
                Code::Forbidden => "Not allowed",
                Code::Unauthenticated => "Sign in",
                _ => "That cannot be done",
            };
            (title, refusal(&self.error))
        };
        (status, page(title, None, body)).into_response()
    }
}
