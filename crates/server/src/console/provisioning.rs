//! `/ui/orgs/{org}/provisioning` (**Identity provisioning**): what an org's
//! admin gives its identity provider (the SCIM base URL and a SCIM token,
//! whose secret is shown once), when the provider last synchronised, the
//! org's setting for deactivated users, and the last errors: SCIM requests
//! that failed and licences a SCIM change could not give or take back.
//! Each action is one use case: `scim::identity_provisioning`,
//! `tokens::create_token`, `scim::revoke_scim_token`, `tenants::update_org`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::Role;
use allot_domain::Error;

use super::admins::origin;
use super::orgs::{org_nav, OrgPage};
use super::page::{page, refusal, when, HtmlError};
use super::session::{CsrfForm, SignedIn};
use crate::app::admins::ConsoleSession;
use crate::app::etag::IfMatch;
use crate::app::scim::{identity_provisioning, IdentityProvisioning};
use crate::app::tenants::{self, OrgPatch, OrgView};
use crate::app::tokens::{self, CreatedToken, TokenInput};
use crate::app::App;

const TITLE: &str = "Identity provisioning";

#[derive(Debug, Default, serde::Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    /// Present (`"1"`) when the box is ticked.
    #[serde(default)]
    keep: Option<String>,
}

fn fail(s: &ConsoleSession, e: Error) -> Response {
    HtmlError::new(e, &s.caller.request_id).into_response()
}

fn base_url(headers: &HeaderMap, status: &IdentityProvisioning) -> String {
    format!("{}{}", origin(headers), status.base_path)
}

fn connection(headers: &HeaderMap, status: &IdentityProvisioning) -> Markup {
    html! {
        div.panel {
            p { "Give your identity provider (Microsoft Entra ID, Okta, Google, JumpCloud, OneLogin, ...) this SCIM base URL and a SCIM token from below. It then creates, updates, deactivates and deletes this organisation's users and groups; a group's license template follows its members." }
            label for="base-url" { "SCIM base URL" }
            textarea #base-url.shown-once readonly rows="2" spellcheck="false" { (base_url(headers, status)) }
            dl.facts {
                dt { "Last sync" }
                dd {
                    @match &status.last_sync_at {
                        Some(t) => { (when(t)) }
                        None => { "never: no SCIM token of this organisation has been used yet" }
                    }
                }
            }
        }
    }
}

fn settings(s: &ConsoleSession, org: &str, status: &IdentityProvisioning) -> Markup {
    html! {
        h2 { "Deactivated users" }
        div.panel {
            form method="post" action=(format!("/ui/orgs/{org}/provisioning/settings")) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                label.check {
                    input type="checkbox" name="keep" value="1" checked[status.keep_licenses_on_deactivation];
                    "Keep licenses when the identity provider deactivates a user"
                }
                p.muted { "Left unticked, a deactivated user's licenses are released (its service data is kept for each product's retention period, and comes back if the user is reactivated within it)." }
                div.actions { button type="submit" { "Save" } }
            }
        }
    }
}

fn tokens_table(s: &ConsoleSession, org: &str, status: &IdentityProvisioning, given: &TokenForm, refused: Option<&Error>) -> Markup {
    html! {
        h2 { "SCIM tokens" }
        @if status.tokens.is_empty() {
            p.muted { "No SCIM token yet: create one for your identity provider." }
        } @else {
            table.stack {
                caption.muted { "Live SCIM tokens, oldest first" }
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Created" }
                    th scope="col" { "Last used" }
                    th scope="col" { span.muted { "Action" } }
                } }
                tbody {
                    @for t in &status.tokens {
                        @let name = t.name.as_deref().unwrap_or(&t.id);
                        tr {
                            td data-label="Name" { (name) br; span.muted { (t.id) } }
                            td data-label="Created" { (when(&t.created_at)) }
                            td data-label="Last used" { (t.last_used_at.as_deref().map(when).unwrap_or_else(|| "never".into())) }
                            td {
                                form method="post" action=(format!("/ui/orgs/{org}/provisioning/tokens/{}/revoke", t.id)) {
                                    input type="hidden" name="csrf" value=(s.csrf_token);
                                    button type="submit" aria-label=(format!("Revoke {name}")) { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.panel {
            @if let Some(e) = refused { (refusal(e)) }
            form method="post" action=(format!("/ui/orgs/{org}/provisioning/tokens")) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                label for="token-name" { "Token name" }
                input #token-name type="text" name="name" value=(given.name) maxlength="200" required placeholder="e.g. Entra ID";
                div.actions { button type="submit" { "Create SCIM token" } }
            }
        }
    }
}

fn errors_table(status: &IdentityProvisioning) -> Markup {
    html! {
        h2 { "Last errors" }
        @if status.errors.is_empty() {
            p.muted { "No errors recorded." }
        } @else {
            table.stack {
                caption.muted { "Newest first: SCIM requests that failed, and licenses a SCIM change could not give or take back (the change itself went through)" }
                thead { tr {
                    th scope="col" { "When" }
                    th scope="col" { "Request" }
                    th scope="col" { "Answer" }
                    th scope="col" { "What went wrong" }
                } }
                tbody {
                    @for e in &status.errors {
                        tr {
                            td data-label="When" { (when(&e.at)) }
                            td data-label="Request" { code { (e.request) } }
                            td data-label="Answer" {
                                (e.status)
                                @if let Some(t) = &e.scim_type { " " span.muted { (t) } }
                            }
                            td data-label="What went wrong" { (e.detail) }
                        }
                    }
                }
            }
        }
    }
}

async fn show_page(
    app: &App,
    headers: &HeaderMap,
    s: &ConsoleSession,
    org: &str,
    status_code: StatusCode,
    given: &TokenForm,
    refused: Option<&Error>,
) -> Response {
    let (org, status): (OrgView, IdentityProvisioning) = match async {
        let o = tenants::get_org(app, &s.caller, org).await?;
        let st = identity_provisioning(app, &s.caller, &o.id).await?;
        Ok::<_, Error>((o, st))
    }
    .await
    {
        Ok(v) => v,
        Err(e) => return fail(s, e),
    };
    let body = html! {
        (org_nav(s, &org, OrgPage::Provisioning))
        (connection(headers, &status))
        (tokens_table(s, &org.id, &status, given, refused))
        (settings(s, &org.id, &status))
        (errors_table(&status))
    };
    (status_code, page(TITLE, Some(s), body)).into_response()
}

/// `GET /ui/orgs/{org}/provisioning`.
pub async fn show(State(app): State<App>, headers: HeaderMap, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    show_page(&app, &headers, &s, &org, StatusCode::OK, &TokenForm::default(), None).await
}

/// `POST /ui/orgs/{org}/provisioning/tokens`: a new SCIM token of the
/// org, its secret shown this once beside the base URL.
pub async fn create_token(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Path(org): Path<String>,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    // Named, so that the list says which identity provider holds which token.
    let created = match Some(f.name.trim().to_string()).filter(|n| !n.is_empty()) {
        None => Err(Error::validation(
            "name",
            "Give the token a name: the identity provider that will use it.",
        )),
        Some(name) => {
            let input = TokenInput {
                name: Some(name),
                role: Role::Scim,
                partner: None,
                org: Some(org.clone()),
                expires_at: None,
            };
            tokens::create_token(&app, &s.caller, input).await
        }
    };
    match created {
        Ok(CreatedToken { view, token }) => {
            let base = format!("{}/scim/v2/orgs/{org}", origin(&headers));
            let body = html! {
                div.panel role="status" {
                    p { "Created the SCIM token " strong { (view.name.as_deref().unwrap_or(&view.id)) } ". Copy it into your identity provider now: it is not shown again and is not stored." }
                    label for="base-url" { "SCIM base URL" }
                    textarea #base-url.shown-once readonly rows="2" spellcheck="false" { (base) }
                    label for="secret" { "Secret token" }
                    textarea #secret.shown-once readonly rows="2" spellcheck="false" { (token) }
                    div.actions { a.button href=(format!("/ui/orgs/{org}/provisioning")) { "Back to identity provisioning" } }
                }
            };
            (StatusCode::CREATED, page(TITLE, Some(s), body)).into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            if status.is_server_error() || status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN {
                return fail(s, e);
            }
            show_page(&app, &headers, s, &org, status, &f, Some(&e)).await
        }
    }
}

/// `POST /ui/orgs/{org}/provisioning/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((org, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match crate::app::scim::revoke_scim_token(&app, &s.caller, &org, &id).await {
        Ok(()) => Redirect::to(&format!("/ui/orgs/{org}/provisioning")).into_response(),
        Err(e) => fail(s, e),
    }
}

/// `POST /ui/orgs/{org}/provisioning/settings`.
pub async fn save_settings(State(app): State<App>, signed_in: SignedIn, Path(org): Path<String>, Form(f): Form<SettingsForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let patch = OrgPatch {
        keep_licenses_on_deactivation: Some(f.keep.is_some()),
        ..OrgPatch::default()
    };
    match tenants::update_org(&app, &s.caller, &org, patch, &IfMatch::none()).await {
        Ok(_) => Redirect::to(&format!("/ui/orgs/{org}/provisioning")).into_response(),
        Err(e) => fail(s, e),
    }
}
