//! **Webhooks**: the endpoints of one scope (`/ui/webhooks` for the
//! provider's, `/ui/partners/{partner}/webhooks`, `/ui/orgs/{org}/webhooks`)
//! with a form that creates one (its secret shown once), and each
//! endpoint's page (`.../webhooks/{hook}`): its settings, **Send test
//! event**, **Rotate secret** (the new one shown once), **Disable** /
//! **Enable**, **Delete**, and its deliveries with every attempt and
//! **Redeliver**. Each action is one call of `crate::app::webhooks`, the
//! same use cases as the API.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::ScopeKind;
use allot_domain::webhooks::EventType;
use allot_domain::Error;

use super::page::{page, refusal, when, HtmlError};
use super::session::{CsrfForm, SignedIn};
use crate::app::admins::ConsoleSession;
use crate::app::paging::PageQuery;
use crate::app::webhooks::{self, CreatedWebhook, DeliveryView, HookScope, WebhookInput, WebhookPatch, WebhookView};
use crate::app::App;

const TITLE: &str = "Webhooks";

fn base(scope: &HookScope) -> String {
    match scope {
        HookScope::Provider => "/ui/webhooks".to_string(),
        HookScope::Partner(p) => format!("/ui/partners/{p}/webhooks"),
        HookScope::Org(o) => format!("/ui/orgs/{o}/webhooks"),
    }
}

fn describe(scope: &HookScope) -> &'static str {
    match scope {
        HookScope::Provider => "every organisation's events",
        HookScope::Partner(_) => "the events of this partner's customers",
        HookScope::Org(_) => "this organisation's events",
    }
}

/// What the create form was given (checkboxes named `event` repeat).
#[derive(Debug, Default)]
pub struct CreateForm {
    csrf: String,
    url: String,
    description: String,
    all: bool,
    events: Vec<String>,
}

impl CreateForm {
    fn parse(body: &[u8]) -> CreateForm {
        let mut f = CreateForm::default();
        for (k, v) in form_urlencoded::parse(body) {
            match k.as_ref() {
                "csrf" => f.csrf = v.into_owned(),
                "url" => f.url = v.into_owned(),
                "description" => f.description = v.into_owned(),
                "all" => f.all = true,
                "event" => f.events.push(v.into_owned()),
                _ => {}
            }
        }
        f
    }

    fn input(&self) -> WebhookInput {
        let description = self.description.trim();
        WebhookInput {
            url: self.url.trim().to_string(),
            events: if self.all { vec!["*".to_string()] } else { self.events.clone() },
            enabled: Some(true),
            description: (!description.is_empty()).then(|| description.to_string()),
        }
    }
}

fn status_of(w: &WebhookView) -> Markup {
    html! {
        @if w.enabled {
            span.status.good { "Enabled" }
        } @else {
            span.status.bad { "Disabled" }
            @if let Some(r) = &w.disabled_reason { br; span.muted { (r) } }
        }
    }
}

fn events_of(w: &WebhookView) -> String {
    if w.events == ["*"] {
        "All events".to_string()
    } else {
        w.events.join(", ")
    }
}

fn table(scope: &HookScope, items: &[WebhookView]) -> Markup {
    html! {
        @if items.is_empty() {
            p.muted { "No webhooks yet. Create one below to have Allot POST " (describe(scope)) " to your service." }
        } @else {
            table.stack {
                caption.muted { "Endpoints that receive " (describe(scope)) }
                thead {
                    tr {
                        th scope="col" { "Endpoint" }
                        th scope="col" { "Events" }
                        th scope="col" { "Status" }
                        th scope="col" { "Created" }
                    }
                }
                tbody {
                    @for w in items {
                        tr {
                            td data-label="Endpoint" {
                                a href=(format!("{}/{}", base(scope), w.id)) { (w.description.as_deref().unwrap_or(&w.url)) }
                                br; span.muted.break { (w.url) }
                            }
                            td data-label="Events" { (events_of(w)) }
                            td data-label="Status" { (status_of(w)) }
                            td data-label="Created" { (when(&w.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

fn create_form(s: &ConsoleSession, scope: &HookScope, given: &CreateForm, refused: Option<&Error>) -> Markup {
    html! {
        h2 { "Create a webhook" }
        div.panel {
            @if let Some(e) = refused { (refusal(e)) }
            p.muted { "Allot signs every request as Standard Webhooks: verify it with the secret shown once after you create the endpoint." }
            form method="post" action=(base(scope)) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                label for="url" { "Endpoint URL" }
                p.field-hint.muted #url-hint { "An https:// address of your service." }
                input #url type="text" name="url" value=(given.url) maxlength="2000" required aria-describedby="url-hint" placeholder="https://example.com/hooks/allot";
                label for="description" { "Description" }
                input #description type="text" name="description" value=(given.description) maxlength="500";
                fieldset {
                    legend { "Events" }
                    label.check { input type="checkbox" name="all" value="1" checked[given.all || given.events.is_empty()]; "All events" }
                    p.muted.field-hint { "Or only these:" }
                    ul.event-choices {
                        @for t in EventType::SUBSCRIBABLE {
                            li {
                                label.check {
                                    input type="checkbox" name="event" value=(t.as_str()) checked[given.events.iter().any(|e| e == t.as_str())];
                                    (t.as_str())
                                }
                            }
                        }
                    }
                }
                div.actions { button type="submit" { "Create webhook" } }
            }
        }
    }
}

/// The org's navigation above an org's page.
async fn org_nav(app: &App, s: &ConsoleSession, scope: &HookScope) -> Result<Option<Markup>, Error> {
    match scope {
        HookScope::Org(org) => {
            let o = crate::app::tenants::get_org(app, &s.caller, org).await?;
            Ok(Some(super::orgs::org_nav(s, &o, super::orgs::OrgPage::Webhooks)))
        }
        _ => Ok(None),
    }
}

async fn list_page(
    app: &App,
    s: &ConsoleSession,
    scope: &HookScope,
    status: StatusCode,
    given: &CreateForm,
    refused: Option<&Error>,
) -> Response {
    let all = PageQuery {
        limit: Some(1000),
        cursor: None,
    };
    let listed = match webhooks::list_webhooks(app, &s.caller, scope, &all).await {
        Ok(l) => l,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let nav = match org_nav(app, s, scope).await {
        Ok(n) => n,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let body = html! {
        @if let Some(n) = nav { (n) }
        (table(scope, &listed.items))
        (create_form(s, scope, given, refused))
    };
    (status, page(TITLE, Some(s), body)).into_response()
}

/// `/ui/webhooks` is the provider's; partner and org admins have their tenant's.
fn provider_scope(s: &ConsoleSession) -> Result<HookScope, String> {
    match s.admin.role.scope_kind() {
        ScopeKind::Provider => Ok(HookScope::Provider),
        ScopeKind::Partner => Err(format!("/ui/partners/{}/webhooks", s.admin.partner.as_deref().unwrap_or("-"))),
        ScopeKind::Org => Err(format!("/ui/orgs/{}/webhooks", s.admin.org.as_deref().unwrap_or("-"))),
    }
}

/// `GET /ui/webhooks`.
pub async fn show_provider(State(app): State<App>, SignedIn(s): SignedIn) -> Response {
    match provider_scope(&s) {
        Ok(scope) => list_page(&app, &s, &scope, StatusCode::OK, &CreateForm::default(), None).await,
        Err(path) => Redirect::to(&path).into_response(),
    }
}

/// `GET /ui/partners/{partner}/webhooks`.
pub async fn show_partner(State(app): State<App>, SignedIn(s): SignedIn, Path(partner): Path<String>) -> Response {
    list_page(&app, &s, &HookScope::Partner(partner), StatusCode::OK, &CreateForm::default(), None).await
}

/// `GET /ui/orgs/{org}/webhooks`.
pub async fn show_org(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    list_page(&app, &s, &HookScope::Org(org), StatusCode::OK, &CreateForm::default(), None).await
}

async fn create(app: &App, signed_in: SignedIn, scope: HookScope, body: &[u8]) -> Response {
    let f = CreateForm::parse(body);
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match webhooks::create_webhook(app, &s.caller, &scope, f.input()).await {
        Ok(CreatedWebhook { view, secret }) => {
            let body = html! {
                div.panel role="status" {
                    p { "Created the webhook " strong { (view.description.as_deref().unwrap_or(&view.url)) } ". Copy its signing secret now: it is not shown again." }
                    label for="secret" { "Signing secret" }
                    textarea #secret.shown-once readonly rows="2" spellcheck="false" { (secret) }
                    div.actions.row-actions {
                        a.button href=(format!("{}/{}", base(&scope), view.id)) { "Open the webhook" }
                        a.button.secondary href=(base(&scope)) { "Back to Webhooks" }
                    }
                }
            };
            (StatusCode::CREATED, page(TITLE, Some(s), body)).into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            if status.is_server_error() || status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN {
                return HtmlError::new(e, &s.caller.request_id).into_response();
            }
            list_page(app, s, &scope, status, &f, Some(&e)).await
        }
    }
}

/// `POST /ui/webhooks`.
pub async fn create_provider(State(app): State<App>, signed_in: SignedIn, body: axum::body::Bytes) -> Response {
    create(&app, signed_in, HookScope::Provider, &body).await
}

/// `POST /ui/partners/{partner}/webhooks`.
pub async fn create_partner(State(app): State<App>, signed_in: SignedIn, Path(partner): Path<String>, body: axum::body::Bytes) -> Response {
    create(&app, signed_in, HookScope::Partner(partner), &body).await
}

/// `POST /ui/orgs/{org}/webhooks`.
pub async fn create_org(State(app): State<App>, signed_in: SignedIn, Path(org): Path<String>, body: axum::body::Bytes) -> Response {
    create(&app, signed_in, HookScope::Org(org), &body).await
}

fn deliveries_table(s: &ConsoleSession, scope: &HookScope, hook: &str, items: &[DeliveryView]) -> Markup {
    html! {
        h2 { "Deliveries" }
        @if items.is_empty() {
            p.muted { "Nothing sent yet. Send a test event to see one." }
        } @else {
            table.stack.deliveries {
                caption.muted { "Newest first, each with every attempt" }
                thead {
                    tr {
                        th scope="col" { "Event" }
                        th scope="col" { "State" }
                        th scope="col" { "Attempts" }
                        th scope="col" { span.muted { "Action" } }
                    }
                }
                tbody {
                    @for d in items {
                        tr {
                            td data-label="Event" { (d.event_type) br; span.muted.break { (d.event_id) } br; span.muted { (when(&d.created_at)) } }
                            td data-label="State" {
                                @match d.state.as_str() {
                                    "delivered" => { span.status.good { "Delivered" } }
                                    "failed" => { span.status.bad { "Failed" } }
                                    _ => {
                                        "Pending"
                                        @if let Some(next) = &d.next_attempt_at { br; span.muted { "next try " (when(next)) } }
                                    }
                                }
                            }
                            td data-label="Attempts" {
                                @if d.attempt_log.is_empty() {
                                    span.muted { "none yet" }
                                } @else {
                                    ol.attempts {
                                        @for a in &d.attempt_log {
                                            li {
                                                (when(&a.at)) " · "
                                                @if let Some(st) = a.status { "HTTP " (st) } @else { (a.error.as_deref().unwrap_or("no answer")) }
                                                " · " (a.latency_ms) " ms"
                                                @if let Some(r) = a.response.as_deref().filter(|r| !r.is_empty()) {
                                                    br; code { (r) }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            td {
                                form method="post" action=(format!("{}/{hook}/deliveries/{}/redeliver", base(scope), d.id)) {
                                    input type="hidden" name="csrf" value=(s.csrf_token);
                                    button.secondary.small type="submit" aria-label=(format!("Redeliver {} {}", d.event_type, d.event_id)) { "Redeliver" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn hook_page(app: &App, s: &ConsoleSession, scope: &HookScope, hook: &str, status: StatusCode, notice: Option<Markup>) -> Response {
    let w = match webhooks::get_webhook(app, &s.caller, scope, hook).await {
        Ok(w) => w,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let recent = PageQuery {
        limit: Some(50),
        cursor: None,
    };
    let deliveries = match webhooks::list_deliveries(app, &s.caller, scope, hook, &recent).await {
        Ok(d) => d,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let nav = match org_nav(app, s, scope).await {
        Ok(n) => n,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let action = |what: &str| format!("{}/{hook}/{what}", base(scope));
    let body = html! {
        @if let Some(n) = nav { (n) }
        p { a href=(base(scope)) { "← All webhooks" } }
        @if let Some(n) = notice { (n) }
        div.panel {
            h2 { (w.description.as_deref().unwrap_or("Webhook")) }
            dl.facts {
                dt { "URL" } dd { (w.url) }
                dt { "Events" } dd { (events_of(&w)) }
                dt { "Status" } dd { (status_of(&w)) }
                dt { "Created" } dd { (when(&w.created_at)) }
                dt { "Id" } dd { (w.id) }
            }
            div.row-actions.hook-actions {
                form method="post" action=(action("test")) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    button type="submit" { "Send test event" }
                }
                form method="post" action=(action("rotate")) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    button.secondary type="submit" { "Rotate secret" }
                }
                form method="post" action=(action("enabled")) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    @if w.enabled {
                        input type="hidden" name="enabled" value="false";
                        button.secondary type="submit" { "Disable" }
                    } @else {
                        input type="hidden" name="enabled" value="true";
                        button.secondary type="submit" { "Enable" }
                    }
                }
                form method="post" action=(action("delete")) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    button.danger type="submit" { "Delete" }
                }
            }
        }
        (deliveries_table(s, scope, hook, &deliveries.items))
    };
    (status, page(TITLE, Some(s), body)).into_response()
}

/// The scope a console path names.
fn scope_of(_s: &ConsoleSession, tenant: Option<(&str, String)>) -> Result<HookScope, Error> {
    match tenant {
        // The use case refuses (403) an admin who may not manage the provider's.
        None => Ok(HookScope::Provider),
        Some(("partners", p)) => Ok(HookScope::Partner(p)),
        Some((_, o)) => Ok(HookScope::Org(o)),
    }
}

/// `?sent=test` after **Send test event** (a redirect, see [`act`]).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Sent {
    #[serde(default)]
    sent: Option<String>,
}

impl Sent {
    fn notice(&self) -> Option<Markup> {
        (self.sent.as_deref() == Some("test"))
            .then(|| html! { div.panel role="status" { p { "A test event is on its way; its delivery is listed below." } } })
    }
}

/// `GET /ui/webhooks/{hook}`.
pub async fn show_provider_hook(
    State(app): State<App>,
    SignedIn(s): SignedIn,
    Path(hook): Path<String>,
    Query(q): Query<Sent>,
) -> Response {
    match scope_of(&s, None) {
        Ok(scope) => hook_page(&app, &s, &scope, &hook, StatusCode::OK, q.notice()).await,
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

/// `GET /ui/partners/{partner}/webhooks/{hook}`.
pub async fn show_partner_hook(
    State(app): State<App>,
    SignedIn(s): SignedIn,
    Path((partner, hook)): Path<(String, String)>,
    Query(q): Query<Sent>,
) -> Response {
    hook_page(&app, &s, &HookScope::Partner(partner), &hook, StatusCode::OK, q.notice()).await
}

/// `GET /ui/orgs/{org}/webhooks/{hook}`.
pub async fn show_org_hook(
    State(app): State<App>,
    SignedIn(s): SignedIn,
    Path((org, hook)): Path<(String, String)>,
    Query(q): Query<Sent>,
) -> Response {
    hook_page(&app, &s, &HookScope::Org(org), &hook, StatusCode::OK, q.notice()).await
}

/// The form of the enable / disable button.
#[derive(Debug, Default, serde::Deserialize)]
pub struct EnabledForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    enabled: String,
}

/// What a POST on an endpoint does.
enum HookAction {
    Test,
    Rotate,
    Enabled(bool),
    Delete,
    Redeliver(String),
}

async fn act(app: &App, signed_in: SignedIn, scope: HookScope, hook: &str, csrf: &str, what: HookAction) -> Response {
    if let Err(e) = signed_in.check_csrf(csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let caller = &s.caller;
    let done: Result<Option<Markup>, Error> = match what {
        // Answered with a redirect, so that reloading the page sends nothing again.
        HookAction::Test => {
            return match webhooks::test_webhook(app, caller, &scope, hook).await {
                Ok(_) => Redirect::to(&format!("{}/{hook}?sent=test", base(&scope))).into_response(),
                Err(e) => HtmlError::new(e, &caller.request_id).into_response(),
            }
        }
        HookAction::Rotate => webhooks::rotate_webhook_secret(app, caller, &scope, hook).await.map(|r| {
            Some(html! {
                div.panel role="status" {
                    p { "A new signing secret. Copy it now: it is not shown again. The old secret keeps signing beside it until " (when(&r.previous_valid_until)) "." }
                    label for="secret" { "New signing secret" }
                    textarea #secret.shown-once readonly rows="2" spellcheck="false" { (r.secret) }
                }
            })
        }),
        HookAction::Enabled(enabled) => webhooks::update_webhook(
            app,
            caller,
            &scope,
            hook,
            WebhookPatch {
                enabled: Some(enabled),
                ..Default::default()
            },
        )
        .await
        .map(|_| None),
        HookAction::Delete => {
            return match webhooks::delete_webhook(app, caller, &scope, hook).await {
                Ok(()) => Redirect::to(&base(&scope)).into_response(),
                Err(e) => HtmlError::new(e, &caller.request_id).into_response(),
            }
        }
        HookAction::Redeliver(d) => webhooks::redeliver(app, caller, &scope, hook, &d).await.map(|_| None),
    };
    match done {
        // A secret is shown on the answer itself (never in a URL).
        Ok(Some(notice)) => hook_page(app, s, &scope, hook, StatusCode::OK, Some(notice)).await,
        Ok(None) => Redirect::to(&format!("{}/{hook}", base(&scope))).into_response(),
        Err(e) => HtmlError::new(e, &caller.request_id).into_response(),
    }
}

/// The three handlers of one endpoint action (provider, partner, org):
/// the form, then the action it asks for.
macro_rules! hook_actions {
    ($($provider:ident, $partner:ident, $org:ident => |$f:ident: $form:ty| $what:expr;)*) => {$(
        pub async fn $provider(State(app): State<App>, signed_in: SignedIn, Path(hook): Path<String>, Form($f): Form<$form>) -> Response {
            match scope_of(&signed_in.0, None) {
                Ok(scope) => act(&app, signed_in, scope, &hook, &$f.csrf.clone(), $what).await,
                Err(e) => HtmlError::new(e, &signed_in.0.caller.request_id).into_response(),
            }
        }
        pub async fn $partner(
            State(app): State<App>,
            signed_in: SignedIn,
            Path((partner, hook)): Path<(String, String)>,
            Form($f): Form<$form>,
        ) -> Response {
            act(&app, signed_in, HookScope::Partner(partner), &hook, &$f.csrf.clone(), $what).await
        }
        pub async fn $org(State(app): State<App>, signed_in: SignedIn, Path((org, hook)): Path<(String, String)>, Form($f): Form<$form>) -> Response {
            act(&app, signed_in, HookScope::Org(org), &hook, &$f.csrf.clone(), $what).await
        }
    )*};
}

hook_actions! {
    test_provider, test_partner, test_org => |f: CsrfForm| HookAction::Test;
    rotate_provider, rotate_partner, rotate_org => |f: CsrfForm| HookAction::Rotate;
    enabled_provider, enabled_partner, enabled_org => |f: EnabledForm| HookAction::Enabled(f.enabled == "true");
    delete_provider, delete_partner, delete_org => |f: CsrfForm| HookAction::Delete;
}

/// `POST /ui/webhooks/{hook}/deliveries/{delivery}/redeliver`.
pub async fn redeliver_provider(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((hook, d)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    match scope_of(&signed_in.0, None) {
        Ok(scope) => act(&app, signed_in, scope, &hook, &f.csrf, HookAction::Redeliver(d)).await,
        Err(e) => HtmlError::new(e, &signed_in.0.caller.request_id).into_response(),
    }
}

/// `POST /ui/partners/{partner}/webhooks/{hook}/deliveries/{delivery}/redeliver`.
pub async fn redeliver_partner(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((partner, hook, d)): Path<(String, String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    act(
        &app,
        signed_in,
        HookScope::Partner(partner),
        &hook,
        &f.csrf,
        HookAction::Redeliver(d),
    )
    .await
}

/// `POST /ui/orgs/{org}/webhooks/{hook}/deliveries/{delivery}/redeliver`.
pub async fn redeliver_org(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((org, hook, d)): Path<(String, String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    act(&app, signed_in, HookScope::Org(org), &hook, &f.csrf, HookAction::Redeliver(d)).await
}
