//! `/ui/tokens` (**API tokens**): the live tokens in the admin's scope, a
//! form that creates one (its secret shown once), and **Revoke**. Each
//! action is one call of `crate::app::tokens`, the same use cases as
//! `/api/v1/tokens`: the scope and role checks, the audit record and the
//! token cache's invalidation happen there.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::{Role, ScopeKind};
use allot_domain::Error;

use super::page::{page, refusal, when, HtmlError};
use super::session::{CsrfForm, SignedIn};
use crate::app::admins::ConsoleSession;
use crate::app::paging::PageQuery;
use crate::app::tokens::{self, CreatedToken, TokenInput, TokenView};
use crate::app::App;

const TITLE: &str = "API tokens";

/// What the create form was given, to show it again beside a refusal.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    partner: String,
    #[serde(default)]
    org: String,
}

fn table(s: &ConsoleSession, items: &[TokenView]) -> Markup {
    html! {
        @if items.is_empty() {
            p.muted { "No live tokens in your scope." }
        } @else {
            table.stack {
                caption.muted { "Live tokens, oldest first" }
                thead {
                    tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Role" }
                        th scope="col" { "Bound to" }
                        th scope="col" { "Created" }
                        th scope="col" { "Last used" }
                        th scope="col" { "Expires" }
                        th scope="col" { span.muted { "Action" } }
                    }
                }
                tbody {
                    @for t in items {
                        tr {
                            td data-label="Name" { (t.name.as_deref().unwrap_or("(no name)")) br; span.muted { (t.id) } }
                            td data-label="Role" { (t.role.as_str()) }
                            td data-label="Bound to" {
                                @if let Some(p) = &t.partner { "partner " (p) }
                                @else if let Some(o) = &t.org { "org " (o) }
                                @else { "the whole deployment" }
                            }
                            td data-label="Created" { (when(&t.created_at)) }
                            td data-label="Last used" { (t.last_used_at.as_deref().map(when).unwrap_or_else(|| "never".into())) }
                            td data-label="Expires" { (t.expires_at.as_deref().map(when).unwrap_or_else(|| "never".into())) }
                            td {
                                form method="post" action=(format!("/ui/tokens/{}/revoke", t.id)) {
                                    input type="hidden" name="csrf" value=(s.csrf_token);
                                    button type="submit" aria-label=(format!("Revoke {}", t.name.as_deref().unwrap_or(&t.id))) { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The roles this admin may hand out: none above their own.
fn grantable(s: &ConsoleSession) -> Vec<Role> {
    Role::ALL.into_iter().filter(|r| s.caller.principal.may_grant(*r)).collect()
}

fn create_form(s: &ConsoleSession, given: &CreateForm, refused: Option<&Error>) -> Markup {
    let scope = s.admin.role.scope_kind();
    html! {
        h2 { "Create a token" }
        div.panel {
            @if let Some(e) = refused { (refusal(e)) }
            form method="post" action="/ui/tokens" {
                input type="hidden" name="csrf" value=(s.csrf_token);
                label for="name" { "Name" }
                input #name type="text" name="name" value=(given.name) maxlength="200" required;
                label for="role" { "Role" }
                select #role name="role" required {
                    @for r in grantable(s) {
                        option value=(r.as_str()) selected[given.role == r.as_str()] { (r.as_str()) }
                    }
                }
                @if scope == ScopeKind::Provider {
                    label for="partner" { "Partner (for partner_* roles; product_service: optional)" }
                    input #partner type="text" name="partner" value=(given.partner);
                }
                @if scope != ScopeKind::Org {
                    label for="org" { "Org (for org_* roles; product_service: optional)" }
                    input #org type="text" name="org" value=(given.org);
                }
                div.actions { button type="submit" { "Create token" } }
            }
        }
    }
}

async fn list_page(app: &App, s: &ConsoleSession, status: StatusCode, given: &CreateForm, refused: Option<&Error>) -> Response {
    let listed = tokens::list_tokens(
        app,
        &s.caller,
        &PageQuery {
            limit: Some(1000),
            cursor: None,
        },
    )
    .await;
    match listed {
        Ok(paged) => {
            let body = html! {
                (table(s, &paged.items))
                (create_form(s, given, refused))
            };
            (status, page(TITLE, Some(s), body)).into_response()
        }
        Err(error) => HtmlError::new(error, &s.caller.request_id).into_response(),
    }
}

/// `GET /ui/tokens`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn) -> Response {
    list_page(&app, &s, StatusCode::OK, &CreateForm::default(), None).await
}

fn input_of(s: &ConsoleSession, f: &CreateForm) -> Result<TokenInput, Error> {
    let role = Role::parse(&f.role).ok_or_else(|| Error::validation("role", "Choose a role from the list."))?;
    let given = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    // An admin bound to a partner or an org hands out tokens of that tenant
    // unless they name another one inside it.
    let (mut partner, mut org) = (given(&f.partner), given(&f.org));
    match (s.admin.role.scope_kind(), role.scope_kind()) {
        (ScopeKind::Partner, ScopeKind::Partner) if partner.is_none() => partner = s.admin.partner.clone(),
        // A product's token made by a partner admin serves the partner's customers.
        (ScopeKind::Partner, _) if role == Role::ProductService && partner.is_none() && org.is_none() => partner = s.admin.partner.clone(),
        (ScopeKind::Org, _) if org.is_none() => org = s.admin.org.clone(),
        _ => {}
    }
    Ok(TokenInput {
        name: given(&f.name),
        role,
        partner,
        org,
        expires_at: None,
    })
}

/// `POST /ui/tokens`: creates the token and shows its secret, this once.
pub async fn create(State(app): State<App>, signed_in: SignedIn, Form(f): Form<CreateForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let created = match input_of(s, &f) {
        Ok(input) => tokens::create_token(&app, &s.caller, input).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(CreatedToken { view, token }) => {
            let body = html! {
                div.panel role="status" {
                    p { "Created the " (view.role.as_str()) " token " strong { (view.name.as_deref().unwrap_or(&view.id)) } ". Copy its secret now: it is not shown again and is not stored." }
                    label for="secret" { "Secret" }
                    textarea #secret.shown-once readonly rows="2" spellcheck="false" { (token) }
                    div.actions { a.button href="/ui/tokens" { "Back to API tokens" } }
                }
            };
            (StatusCode::CREATED, page(TITLE, Some(s), body)).into_response()
        }
        // A refusal the form can show (a wrong field, a role above one's
        // own, an unknown tenant) is shown beside it, with nothing created.
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            // Another tenant's object is the same 404 page as anywhere.
            if status.is_server_error() || status == StatusCode::NOT_FOUND {
                return HtmlError::new(e, &s.caller.request_id).into_response();
            }
            list_page(&app, s, status, &f, Some(&e)).await
        }
    }
}

/// `POST /ui/tokens/{id}/revoke`: the token stops working at once.
pub async fn revoke(State(app): State<App>, signed_in: SignedIn, Path(id): Path<String>, Form(f): Form<CsrfForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match tokens::revoke_token(&app, &s.caller, &id).await {
        Ok(()) => Redirect::to("/ui/tokens").into_response(),
        Err(error) => HtmlError::new(error, &s.caller.request_id).into_response(),
    }
}
