//! **Admins**: the accounts of one tenant (`/ui/admins` for the provider's
//! own, `/ui/partners/{partner}/admins`, `/ui/orgs/{org}/admins`): invite
//! (the link shown once), change role, a new link for an invitation not yet
//! accepted, remove. And `/ui/invitations/{secret}`, where an invited
//! person sets their password. Each action is one call of
//! `crate::app::admins`, the same use cases as `/api/v1/admins`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};

use allot_domain::access::{Role, ScopeKind};
use allot_domain::Error;

use super::page::{narrow_page, page, refusal, when, HtmlError};
use super::session::{cookie, csrf_refused, same_secret, set_cookie, CsrfForm, SignedIn, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::app::admins::{self, AdminInvite, AdminUpdate, AdminView, AdminsOf, ConsoleSession, InvitedAdmin};
use crate::app::paging::Page;
use crate::app::App;
use crate::observe::RequestId;

const TITLE: &str = "Admins";

/// Whose accounts a page shows, and where it lives.
struct Tenant(AdminsOf);

impl Tenant {
    fn base(&self) -> String {
        match &self.0 {
            AdminsOf::Partner(p) => format!("/ui/partners/{p}/admins"),
            AdminsOf::Org(o) => format!("/ui/orgs/{o}/admins"),
            _ => "/ui/admins".to_string(),
        }
    }

    fn kind(&self) -> ScopeKind {
        match &self.0 {
            AdminsOf::Partner(_) => ScopeKind::Partner,
            AdminsOf::Org(_) => ScopeKind::Org,
            _ => ScopeKind::Provider,
        }
    }

    fn describe(&self) -> String {
        match &self.0 {
            AdminsOf::Partner(p) => format!("partner {p}"),
            AdminsOf::Org(o) => format!("organisation {o}"),
            _ => "the provider (the whole deployment)".to_string(),
        }
    }
}

/// The roles this admin may give on this page: of the page's kind of
/// tenant, none above their own.
fn grantable(s: &ConsoleSession, t: &Tenant) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| r.scope_kind() == t.kind() && s.caller.principal.may_invite(*r))
        .collect()
}

/// What the invite form was given, to show it again beside a refusal.
#[derive(Debug, Default, serde::Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

fn table(s: &ConsoleSession, t: &Tenant, items: &[AdminView]) -> Markup {
    let roles = grantable(s, t);
    let me = &s.admin.id;
    html! {
        @if items.is_empty() {
            p.muted { "No admin accounts here yet." }
        } @else {
            table.stack {
                caption.muted { "Accounts bound to " (t.describe()) }
                thead {
                    tr {
                        th scope="col" { "Admin" }
                        th scope="col" { "Role" }
                        th scope="col" { "Status" }
                        th scope="col" { "Last sign-in" }
                        th scope="col" { span.muted { "Actions" } }
                    }
                }
                tbody {
                    @for a in items {
                        @let mine = &a.id == me;
                        @let reachable = roles.contains(&a.role);
                        tr {
                            td data-label="Admin" { (a.display_name) br; span.muted { (a.email) } }
                            td data-label="Role" {
                                @if reachable && !mine {
                                    form.inline method="post" action=(format!("{}/{}/role", t.base(), a.id)) {
                                        input type="hidden" name="csrf" value=(s.csrf_token);
                                        label.visually-hidden for=(format!("role-{}", a.id)) { "Role of " (a.email) }
                                        select id=(format!("role-{}", a.id)) name="role" {
                                            @for r in &roles {
                                                option value=(r.as_str()) selected[*r == a.role] { (r.as_str()) }
                                            }
                                        }
                                        button type="submit" aria-label=(format!("Change role of {}", a.email)) { "Change role" }
                                    }
                                } @else {
                                    (a.role.as_str())
                                    @if mine { span.muted { " (you)" } }
                                }
                            }
                            td data-label="Status" {
                                @if a.invitation_pending { "Invitation pending" } @else { "Active" }
                            }
                            td data-label="Last sign-in" { (a.last_sign_in_at.as_deref().map(when).unwrap_or_else(|| "never".into())) }
                            td {
                                @if reachable && !mine {
                                    div.row-actions {
                                        @if a.invitation_pending {
                                            form method="post" action=(format!("{}/{}/invitation", t.base(), a.id)) {
                                                input type="hidden" name="csrf" value=(s.csrf_token);
                                                button type="submit" aria-label=(format!("New invitation link for {}", a.email)) { "New invitation link" }
                                            }
                                        }
                                        form method="post" action=(format!("{}/{}/remove", t.base(), a.id)) {
                                            input type="hidden" name="csrf" value=(s.csrf_token);
                                            button.danger type="submit" aria-label=(format!("Remove {}", a.email)) { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn invite_form(s: &ConsoleSession, t: &Tenant, given: &InviteForm, refused: Option<&Error>) -> Markup {
    let roles = grantable(s, t);
    html! {
        h2 { "Invite an admin" }
        div.panel {
            @if let Some(e) = refused { (refusal(e)) }
            @if roles.is_empty() {
                p.muted { "Your role may not invite admins here." }
            } @else {
                p.muted { "The invited person gets a link that sets their password. It works once, for "
                    (admins::INVITATION_VALID_DAYS) " days." }
                form method="post" action=(t.base()) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    label for="email" { "Email" }
                    input #email type="email" name="email" value=(given.email) maxlength="254" required;
                    label for="name" { "Name" }
                    input #name type="text" name="name" value=(given.name) maxlength="200";
                    label for="role" { "Role" }
                    select #role name="role" required {
                        @for r in &roles {
                            option value=(r.as_str()) selected[given.role == r.as_str()] { (r.as_str()) }
                        }
                    }
                    div.actions { button type="submit" { "Invite" } }
                }
            }
        }
    }
}

async fn list_page(app: &App, s: &ConsoleSession, t: &Tenant, status: StatusCode, given: &InviteForm, refused: Option<&Error>) -> Response {
    let page_of = Page { limit: 1000, after: None };
    // An org's Admins page is one of the org's pages, with their navigation.
    let nav = match &t.0 {
        AdminsOf::Org(org) => match crate::app::tenants::get_org(app, &s.caller, org).await {
            Ok(o) => Some(super::orgs::org_nav(s, &o, super::orgs::OrgPage::Admins)),
            Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
        },
        _ => None,
    };
    match admins::list_admins(app, &s.caller, &t.0, &page_of).await {
        Ok(paged) => {
            let body = html! {
                @if let Some(n) = nav { (n) }
                (table(s, t, &paged.items))
                (invite_form(s, t, given, refused))
            };
            (status, page(TITLE, Some(s), body)).into_response()
        }
        Err(error) => HtmlError::new(error, &s.caller.request_id).into_response(),
    }
}

/// `/ui/admins` is the provider's own page; partner and org admins have
/// their tenant's (the path to it is the `Err`).
fn provider_page(s: &ConsoleSession) -> Result<Tenant, String> {
    match s.admin.role.scope_kind() {
        ScopeKind::Provider => Ok(Tenant(AdminsOf::Provider)),
        ScopeKind::Partner => Err(format!("/ui/partners/{}/admins", s.admin.partner.as_deref().unwrap_or("-"))),
        ScopeKind::Org => Err(format!("/ui/orgs/{}/admins", s.admin.org.as_deref().unwrap_or("-"))),
    }
}

/// `GET /ui/admins`: the provider's own accounts (others go to their tenant's page).
pub async fn show_provider(State(app): State<App>, SignedIn(s): SignedIn) -> Response {
    match provider_page(&s) {
        Ok(t) => list_page(&app, &s, &t, StatusCode::OK, &InviteForm::default(), None).await,
        Err(path) => Redirect::to(&path).into_response(),
    }
}

/// `GET /ui/partners/{partner}/admins`.
pub async fn show_partner(State(app): State<App>, SignedIn(s): SignedIn, Path(partner): Path<String>) -> Response {
    list_page(
        &app,
        &s,
        &Tenant(AdminsOf::Partner(partner)),
        StatusCode::OK,
        &InviteForm::default(),
        None,
    )
    .await
}

/// `GET /ui/orgs/{org}/admins`.
pub async fn show_org(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    list_page(&app, &s, &Tenant(AdminsOf::Org(org)), StatusCode::OK, &InviteForm::default(), None).await
}

/// `POST /ui/admins`.
pub async fn invite_provider(State(app): State<App>, headers: HeaderMap, signed_in: SignedIn, Form(f): Form<InviteForm>) -> Response {
    match provider_page(&signed_in.0) {
        Ok(t) => invite(&app, &headers, signed_in, t, f).await,
        Err(_) => HtmlError::new(Error::not_found("That page"), &signed_in.0.caller.request_id).into_response(),
    }
}

/// `POST /ui/partners/{partner}/admins`.
pub async fn invite_partner(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Path(partner): Path<String>,
    Form(f): Form<InviteForm>,
) -> Response {
    invite(&app, &headers, signed_in, Tenant(AdminsOf::Partner(partner)), f).await
}

/// `POST /ui/orgs/{org}/admins`.
pub async fn invite_org(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Path(org): Path<String>,
    Form(f): Form<InviteForm>,
) -> Response {
    invite(&app, &headers, signed_in, Tenant(AdminsOf::Org(org)), f).await
}

/// The address people reach this console at, as the inviter's browser
/// did: an invitation link to copy must be whole.
pub(crate) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("localhost");
    let scheme = match headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

fn link_shown_once(headers: &HeaderMap, t: &Tenant, what: &str, invited: &InvitedAdmin) -> Markup {
    let url = format!("{}{}", origin(headers), invited.invitation.path);
    html! {
        div.panel role="status" {
            p { (what) " " strong { (invited.admin.email) } " as " (invited.admin.role.as_str()) ". Send them this link: it sets their password, works once, and expires "
                (when(&invited.invitation.expires_at)) ". It is not shown again and is not stored." }
            label for="link" { "Invitation link" }
            textarea #link.shown-once readonly rows="2" spellcheck="false" { (url) }
            div.actions { a.button href=(t.base()) { "Back to Admins" } }
        }
    }
}

fn role_of(f: &str) -> Result<Role, Error> {
    Role::parse(f).ok_or_else(|| Error::validation("role", "Choose a role from the list."))
}

async fn invite(app: &App, headers: &HeaderMap, signed_in: SignedIn, t: Tenant, f: InviteForm) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let given = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let invited = match role_of(&f.role) {
        Ok(role) => {
            let (partner, org) = match &t.0 {
                AdminsOf::Partner(p) => (Some(p.clone()), None),
                AdminsOf::Org(o) => (None, Some(o.clone())),
                _ => (None, None),
            };
            let input = allot_domain::types::Email::parse(f.email.trim()).map(|email| AdminInvite {
                email,
                display_name: given(&f.name),
                role,
                partner,
                org,
            });
            match input {
                Ok(input) => admins::invite_admin(app, &s.caller, input).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    match invited {
        Ok(invited) => (
            StatusCode::CREATED,
            page(TITLE, Some(s), link_shown_once(headers, &t, "Invited", &invited)),
        )
            .into_response(),
        // 404 (a tenant out of scope) is the same page as anywhere; what
        // the form can explain is shown beside it, with nothing created.
        Err(e) if e.code == allot_domain::Code::NotFound || e.code.http_status() >= 500 => {
            HtmlError::new(e, &s.caller.request_id).into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            list_page(app, s, &t, status, &f, Some(&e)).await
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
}

/// The tenant and admin a path names: `/ui/admins/{admin}/...`,
/// `/ui/partners/{partner}/admins/{admin}/...`, `/ui/orgs/{org}/admins/{admin}/...`.
fn target(params: Vec<(String, String)>) -> (Tenant, String) {
    let mut tenant = Tenant(AdminsOf::Provider);
    let mut admin = String::new();
    for (k, v) in params {
        match k.as_str() {
            "partner" => tenant = Tenant(AdminsOf::Partner(v)),
            "org" => tenant = Tenant(AdminsOf::Org(v)),
            _ => admin = v,
        }
    }
    (tenant, admin)
}

/// `POST .../admins/{admin}/role`.
pub async fn change_role(
    State(app): State<App>,
    signed_in: SignedIn,
    Path(params): Path<Vec<(String, String)>>,
    Form(f): Form<RoleForm>,
) -> Response {
    let (t, id) = target(params);
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let changed = match role_of(&f.role) {
        Ok(role) => {
            admins::update_admin(
                &app,
                &s.caller,
                &id,
                AdminUpdate {
                    role: Some(role),
                    display_name: None,
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    match changed {
        Ok(_) => Redirect::to(&t.base()).into_response(),
        Err(e) if e.code == allot_domain::Code::NotFound || e.code.http_status() >= 500 => {
            HtmlError::new(e, &s.caller.request_id).into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            list_page(&app, s, &t, status, &InviteForm::default(), Some(&e)).await
        }
    }
}

/// `POST .../admins/{admin}/remove`: their sessions end at once.
pub async fn remove(
    State(app): State<App>,
    signed_in: SignedIn,
    Path(params): Path<Vec<(String, String)>>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (t, id) = target(params);
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match admins::remove_admin(&app, &s.caller, &id).await {
        Ok(()) => Redirect::to(&t.base()).into_response(),
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

/// `POST .../admins/{admin}/invitation`: a new link, shown once.
pub async fn reinvite(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Path(params): Path<Vec<(String, String)>>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (t, id) = target(params);
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match admins::reinvite_admin(&app, &s.caller, &id).await {
        Ok(invited) => (
            StatusCode::CREATED,
            page(TITLE, Some(s), link_shown_once(&headers, &t, "A new invitation for", &invited)),
        )
            .into_response(),
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

const ACCEPT_TITLE: &str = "Accept invitation";

fn accept_form(csrf: &str, secret: &str, email: &str, role: Role, refused: Option<&Error>) -> Markup {
    html! {
        div.panel {
            p { "You are invited to Allot as " strong { (email) } ", " (role.as_str()) ". Choose a password of at least "
                (admins::MIN_PASSWORD_CHARS) " characters; you sign in with your email and this password." }
            @if let Some(e) = refused { (refusal(e)) }
            form method="post" action=(format!("/ui/invitations/{secret}")) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="email" value=(email) autocomplete="username";
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="new-password" minlength=(admins::MIN_PASSWORD_CHARS) required autofocus;
                label for="repeat" { "Repeat password" }
                input #repeat type="password" name="repeat" autocomplete="new-password" required;
                div.actions { button type="submit" { "Set password and sign in" } }
            }
        }
    }
}

fn accept_page(headers: &HeaderMap, status: StatusCode, secret: &str, email: &str, role: Role, refused: Option<&Error>) -> Response {
    let csrf = crate::auth::generate_token();
    (
        status,
        [(header::SET_COOKIE, set_cookie(headers, LOGIN_CSRF_COOKIE, Some(&csrf)))],
        narrow_page(ACCEPT_TITLE, accept_form(&csrf, secret, email, role, refused)),
    )
        .into_response()
}

fn link_not_valid(request_id: &str) -> Response {
    HtmlError::new(Error::new(allot_domain::Code::NotFound, admins::INVITATION_NOT_VALID), request_id).into_response()
}

/// `GET /ui/invitations/{secret}`.
pub async fn show_invitation(
    State(app): State<App>,
    headers: HeaderMap,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(secret): Path<String>,
) -> Response {
    match admins::invitation(&app, &secret).await {
        Ok(Some((admin, _))) => accept_page(&headers, StatusCode::OK, &secret, &admin.email, admin.role, None),
        Ok(None) => link_not_valid(&rid),
        Err(e) => HtmlError::new(e, &rid).into_response(),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    repeat: String,
}

/// `POST /ui/invitations/{secret}`: sets the password, signs in, goes home.
pub async fn accept_invitation(
    State(app): State<App>,
    headers: HeaderMap,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(secret): Path<String>,
    Form(f): Form<AcceptForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_secret(expected, &f.csrf) {
        return csrf_refused(&rid).into_response();
    }
    let invited = match admins::invitation(&app, &secret).await {
        Ok(Some((admin, _))) => admin,
        Ok(None) => return link_not_valid(&rid),
        Err(e) => return HtmlError::new(e, &rid).into_response(),
    };
    let accepted = if f.password != f.repeat {
        Err(Error::validation(
            "repeat",
            "The two passwords differ; type the same password twice.",
        ))
    } else {
        admins::accept_invitation(&app, &secret, &f.password).await
    };
    match accepted {
        Ok(session) => {
            let mut resp = Redirect::to("/ui/").into_response();
            let h = resp.headers_mut();
            for c in [
                set_cookie(&headers, SESSION_COOKIE, Some(&session.secret)),
                set_cookie(&headers, LOGIN_CSRF_COOKIE, None),
            ] {
                if let Ok(v) = c.parse() {
                    h.append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        Err(e) if e.code == allot_domain::Code::NotFound => link_not_valid(&rid),
        Err(e) if e.code.http_status() >= 500 => HtmlError::new(e, &rid).into_response(),
        Err(e) => accept_page(
            &headers,
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            &secret,
            &invited.email,
            invited.role,
            Some(&e),
        ),
    }
}
