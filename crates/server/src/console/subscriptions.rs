//! **Subscriptions** of an org (`/ui/orgs/{org}/subscriptions`) and one
//! subscription's page: the status derived for today, the dates, trial,
//! and per item its quantity, used, available and provisioning status;
//! the form that completes an item awaiting details; **Cancel
//! subscription** with its guard (while users hold seats: **Move users to**
//! another subscription as a job, or a forced cancel confirmed by typing the
//! subscription's name).
//! And the org's **Audit log** (`/ui/orgs/{org}/audit`): who, when, what,
//! before and after, filtered by actor, action and date.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::status::ProvisioningStatus;
use allot_domain::{Code, Error};

use super::customers::{provisioning_status_label, subscription_status_label};
use super::orgs::{org_nav, OrgPage};
use super::page::{beside_form, page, refusal, when, HtmlError};
use super::session::SignedIn;
use crate::app::admins::ConsoleSession;
use crate::app::audit::{self, AuditQuery};
use crate::app::paging::PageQuery;
use crate::app::subscriptions::{self, CancelOutcome, CancelRequest, DetailsInput, SubscriptionView};
use crate::app::tenants::OrgView;
use crate::app::{tenants, App};

fn items_table(sub: &SubscriptionView) -> Markup {
    html! {
        table.stack {
            thead {
                tr {
                    th scope="col" { "Product" }
                    th scope="col" { "Quantity" }
                    th scope="col" { "Used" }
                    th scope="col" { "Available" }
                    th scope="col" { "Provisioning" }
                }
            }
            tbody {
                @for i in &sub.items {
                    tr {
                        th scope="row" data-label="Product" { (i.product) }
                        td data-label="Quantity" { (i.quantity) }
                        td data-label="Used" { (i.consumed) }
                        td data-label="Available" { (i.available) }
                        td data-label="Provisioning" { (provisioning_status_label(i.provisioning_status)) }
                    }
                }
            }
        }
    }
}

/// `GET /ui/orgs/{org}/subscriptions`.
pub async fn list(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let subs = subscriptions::list_subscriptions(
            &app,
            &s.caller,
            &org.id,
            &PageQuery {
                limit: Some(1000),
                cursor: None,
            },
        )
        .await?;
        Ok::<_, Error>((org, subs))
    }
    .await;
    let (org, subs) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let body = html! {
        (org_nav(&s, &org, OrgPage::Subscriptions))
        @if subs.items.is_empty() {
            p.muted { "No subscriptions." }
        } @else {
            table.stack {
                thead {
                    tr {
                        th scope="col" { "Subscription" }
                        th scope="col" { "Status" }
                        th scope="col" { "Dates" }
                        th scope="col" { "Products" }
                        th scope="col" { "Seats used / total" }
                    }
                }
                tbody {
                    @for sub in &subs.items {
                        tr {
                            th scope="row" data-label="Subscription" {
                                a href=(format!("/ui/orgs/{}/subscriptions/{}", org.id, sub.id)) { (sub.external_ref.as_deref().unwrap_or(&sub.id)) }
                            }
                            td data-label="Status" { span.status { (subscription_status_label(sub.status)) } @if sub.trial { " (trial)" } }
                            td.nowrap data-label="Dates" { (sub.start_date) " to " br; (sub.end_date) }
                            td data-label="Products" { (sub.items.iter().map(|i| i.product.as_str()).collect::<Vec<_>>().join(", ")) }
                            td data-label="Seats used / total" {
                                (sub.items.iter().map(|i| i.consumed).sum::<i64>()) " / " (sub.items.iter().map(|i| i.quantity).sum::<i64>())
                            }
                        }
                    }
                }
            }
        }
    };
    page("Subscriptions", Some(&s), body).into_response()
}

/// What a subscription is called on screen (and typed to confirm a forced
/// cancel): its reference where it has one, else its id.
fn sub_name(sub: &SubscriptionView) -> &str {
    sub.external_ref.as_deref().unwrap_or(&sub.id)
}

/// Everything a subscription's page shows.
struct SubPage {
    org: OrgView,
    sub: SubscriptionView,
    holders: i64,
    /// Subscriptions that could take its users.
    others: Vec<SubscriptionView>,
}

async fn gather(app: &App, s: &ConsoleSession, org: &str, sub: &str) -> Result<SubPage, Error> {
    let org = tenants::get_org(app, &s.caller, org).await?;
    let sub = subscriptions::get_subscription(app, &s.caller, &org.id, sub).await?;
    let holders = subscriptions::count_subscription_holders(app, &s.caller, &org.id, &sub.id).await?;
    let others = subscriptions::list_subscriptions(
        app,
        &s.caller,
        &org.id,
        &PageQuery {
            limit: Some(1000),
            cursor: None,
        },
    )
    .await?
    .items
    .into_iter()
    .filter(|o| o.id != sub.id && !o.cancelled)
    .collect();
    Ok(SubPage { org, sub, holders, others })
}

/// The form that completes an item awaiting details.
fn details_form(s: &ConsoleSession, org: &OrgView, sub: &SubscriptionView, product: &str, typed: &str) -> Markup {
    let id = format!("details-{product}");
    html! {
        form method="post" action=(format!("/ui/orgs/{}/subscriptions/{}/items/{product}/details", org.id, sub.id)) {
            input type="hidden" name="csrf" value=(s.csrf_token);
            label for=(id) { "Provisioning details for " (product) }
            p.field-hint.muted #(format!("{id}-hint")) { "One per line, as name: value (for example domain: example.com)." }
            textarea id=(id) name="details" rows="4" aria-describedby=(format!("{id}-hint")) required { (typed) }
            div.actions { button type="submit" { "Submit details" } }
        }
    }
}

/// "1 user", "6 users".
fn people(n: i64) -> String {
    if n == 1 {
        "1 user".to_string()
    } else {
        format!("{n} users")
    }
}

/// What a forced cancel takes: per product, the seats in use.
fn losses(sub: &SubscriptionView) -> String {
    let parts: Vec<String> = sub
        .items
        .iter()
        .filter(|i| i.consumed > 0)
        .map(|i| format!("{} ({} {})", i.product, i.consumed, if i.consumed == 1 { "user" } else { "users" }))
        .collect();
    parts.join(", ")
}

/// The guard of a cancel while users hold seats: move them first, or
/// cancel anyway after typing the subscription's name.
fn cancel_guard(s: &ConsoleSession, p: &SubPage) -> Markup {
    let action = format!("/ui/orgs/{}/subscriptions/{}/cancel", p.org.id, p.sub.id);
    let name = sub_name(&p.sub);
    html! {
        div.panel #cancel-guard {
            h2 { "Move users to another subscription" }
            @if p.others.is_empty() {
                p.muted { "This organisation has no other subscription to move them to." }
            } @else {
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    label for="move_users_to" { "Move users to" }
                    select #move_users_to name="move_users_to" required {
                        @for o in &p.others {
                            option value=(o.id) { (sub_name(o)) " — " (o.items.iter().map(|i| format!("{} ({} free)", i.product, i.available)).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                    p.hint { "Their service data (phone numbers, voicemail, settings) is kept. The subscription is cancelled once everyone has moved." }
                    div.actions { button type="submit" { "Move users, then cancel" } }
                }
            }
            h2 { "Cancel anyway" }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                input type="hidden" name="force" value="1";
                p {
                    strong { (people(p.holders)) " " (if p.holders == 1 { "loses" } else { "lose" }) " their licenses: " (losses(&p.sub)) "." }
                    " Their service data for these products (phone numbers, voicemail, settings) is deleted after the retention period."
                }
                label for="confirm" { "Type " code { (name) } " to confirm" }
                input #confirm type="text" name="confirm" autocomplete="off" required;
                div.actions { button.danger type="submit" { "Remove their licenses and cancel" } }
            }
        }
    }
}

fn sub_page(s: &ConsoleSession, p: &SubPage, notice: Option<Markup>, guard: bool, typed: Option<(&str, &str)>) -> Markup {
    let (org, sub) = (&p.org, &p.sub);
    let may_details = s.caller.principal.may(Action::SubmitProvisioningDetails);
    let may_cancel = s.caller.principal.may(Action::WriteSubscriptions);
    html! {
        (org_nav(s, org, OrgPage::Subscriptions))
        @if let Some(n) = notice { (n) }
        // Right under the refusal: the ways forward it names.
        @if may_cancel && !sub.cancelled && guard && p.holders > 0 {
            (cancel_guard(s, p))
        }
        div.panel {
            dl.facts {
                dt { "Subscription" } dd { (sub.id) }
                @if let Some(r) = &sub.external_ref { dt { "Reference" } dd { (r) } }
                dt { "Status" } dd { span.status { (subscription_status_label(sub.status)) } " (derived from the dates and flags below, for today)" }
                dt { "Starts" } dd { (sub.start_date) }
                dt { "Ends" } dd { (sub.end_date) }
                dt { "Trial" } dd { (if sub.trial { "yes" } else { "no" }) }
                dt { "Suspended" } dd { (if sub.suspended { "yes" } else { "no" }) }
                dt { "Cancelled" } dd { (if sub.cancelled { "yes" } else { "no" }) }
                dt { "Partner" } dd { (sub.partner.as_deref().unwrap_or("none")) }
                dt { "Users holding seats" } dd { (p.holders) }
            }
        }
        h2 { "Items" }
        (items_table(sub))
        @for i in sub.items.iter().filter(|i| i.provisioning_status == ProvisioningStatus::AwaitingDetails) {
            @if may_details {
                div.panel {
                    p { strong { (i.product) } " is awaiting the details its service needs before it can be set up." }
                    (details_form(s, org, sub, &i.product, typed.filter(|(prod, _)| *prod == i.product).map(|(_, t)| t).unwrap_or("")))
                }
            }
        }
        @if may_cancel && !sub.cancelled {
            @if !(guard && p.holders > 0) {
                h2 { "Cancel subscription" }
                form method="post" action=(format!("/ui/orgs/{}/subscriptions/{}/cancel", org.id, sub.id)) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    @if p.holders > 0 {
                        p { (people(p.holders)) " " (if p.holders == 1 { "holds" } else { "hold" }) " seats of this subscription. Cancelling asks what should happen to them first." }
                    } @else {
                        p { "Nobody holds a seat of it: it is cancelled at once." }
                    }
                    button.danger type="submit" { "Cancel subscription" }
                }
            }
        }
        p { a href=(format!("/ui/orgs/{}/subscriptions", org.id)) { "All subscriptions" } }
    }
}

/// `GET /ui/orgs/{org}/subscriptions/{sub}`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn, Path((org, sub)): Path<(String, String)>) -> Response {
    match gather(&app, &s, &org, &sub).await {
        Ok(p) => page("Subscription", Some(&s), sub_page(&s, &p, None, false, None)).into_response(),
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

/// The cancel form's fields.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    move_users_to: String,
    #[serde(default)]
    force: String,
    #[serde(default)]
    confirm: String,
}

/// A refusal shown on the subscription's page (status of the error).
async fn refused_page(app: &App, s: &ConsoleSession, org: &str, sub: &str, e: Error, guard: bool, typed: Option<(&str, &str)>) -> Response {
    let Some(status) = beside_form(&e) else {
        return HtmlError::new(e, &s.caller.request_id).into_response();
    };
    match gather(app, s, org, sub).await {
        Ok(p) => {
            let e = if e.code == Code::SubscriptionHasUsers {
                // The API's sentence ends with its JSON fields; here the choices are the forms below.
                Error::new(
                    Code::SubscriptionHasUsers,
                    format!(
                        "{} {} seats of subscription {}. Cancelling it now would take their licenses and, after the retention period, \
                         their service data (phone numbers, voicemail, settings). Move them to another subscription first, which keeps their data, or cancel anyway.",
                        people(p.holders),
                        if p.holders == 1 { "holds" } else { "hold" },
                        sub_name(&p.sub)
                    ),
                )
            } else {
                e
            };
            (
                status,
                page("Subscription", Some(s), sub_page(s, &p, Some(refusal(&e)), guard, typed)),
            )
                .into_response()
        }
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

/// `POST /ui/orgs/{org}/subscriptions/{sub}/cancel`: cancels at once when
/// nobody holds a seat; otherwise refused with the guard, or, as chosen
/// there, a job that moves (or removes) the users and then cancels.
pub async fn cancel(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((org, sub)): Path<(String, String)>,
    Form(f): Form<CancelForm>,
) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let force = f.force == "1";
    if force {
        // A forced cancel is confirmed by typing the subscription's name.
        match subscriptions::get_subscription(&app, &s.caller, &org, &sub).await {
            Ok(view) if f.confirm.trim() == sub_name(&view) => {}
            Ok(view) => {
                let e = Error::validation(
                    "confirm",
                    format!(
                        "Type the subscription's name, {}, to confirm the forced cancel. Nothing was changed.",
                        sub_name(&view)
                    ),
                );
                return refused_page(&app, s, &org, &sub, e, true, None).await;
            }
            Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
        }
    }
    let req = CancelRequest {
        move_users_to: Some(f.move_users_to.trim().to_string()).filter(|v| !v.is_empty()),
        force,
    };
    match subscriptions::cancel_subscription(&app, &s.caller, &org, &sub, req).await {
        Ok(CancelOutcome::Cancelled(view)) => Redirect::to(&format!("/ui/orgs/{org}/subscriptions/{}", view.id)).into_response(),
        Ok(CancelOutcome::Queued(job)) => Redirect::to(&format!("/ui/jobs/{}", job.id)).into_response(),
        Err(e) => refused_page(&app, s, &org, &sub, e, true, None).await,
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct DetailsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    details: String,
}

/// `name: value` lines as the details map; a line without a colon is refused.
fn parse_details(text: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| Error::validation("details", format!("Line {} has no colon: write each detail as name: value.", n + 1)))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// `POST /ui/orgs/{org}/subscriptions/{sub}/items/{product}/details`.
pub async fn submit_details(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((org, sub, product)): Path<(String, String, String)>,
    Form(f): Form<DetailsForm>,
) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let done = match parse_details(&f.details) {
        Ok(details) => subscriptions::submit_provisioning_details(&app, &s.caller, &org, &sub, &product, DetailsInput { details }).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(view) => Redirect::to(&format!("/ui/orgs/{org}/subscriptions/{}", view.id)).into_response(),
        Err(e) => refused_page(&app, s, &org, &sub, e, false, Some((&product, &f.details))).await,
    }
}

/// The audit page's query as given.
#[derive(Debug, Default)]
struct AuditFilters {
    actor: String,
    action: String,
    since: String,
    cursor: String,
}

impl AuditFilters {
    fn parse(raw: &str) -> AuditFilters {
        let mut f = AuditFilters::default();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "actor" => f.actor = v,
                "action" => f.action = v,
                "since" => f.since = v,
                "cursor" => f.cursor = v,
                _ => {}
            }
        }
        f
    }

    fn query(&self) -> Result<AuditQuery, Error> {
        let given = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        let since = match given(&self.since) {
            None => None,
            Some(d) => Some(
                chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                    .map_err(|_| Error::validation("since", "Give the date as YYYY-MM-DD."))?
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc())
                    .ok_or_else(|| Error::validation("since", "Give the date as YYYY-MM-DD."))?,
            ),
        };
        Ok(AuditQuery {
            limit: Some(50),
            cursor: given(&self.cursor),
            since,
            actor: given(&self.actor),
            action: given(&self.action),
        })
    }

    fn next(&self, cursor: &str) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("actor", &self.actor), ("action", &self.action), ("since", &self.since)] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.append_pair("cursor", cursor);
        s.finish()
    }
}

fn json_text(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "—".to_string(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// `GET /ui/orgs/{org}/audit`: **Audit log**.
pub async fn audit_log(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let f = AuditFilters::parse(raw.as_deref().unwrap_or(""));
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let events = audit::list_audit_events(&app, &s.caller, &org.id, &f.query()?).await?;
        Ok::<_, Error>((org, events))
    }
    .await;
    let (org, events) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let base = format!("/ui/orgs/{}/audit", org.id);
    let body = html! {
        (org_nav(&s, &org, OrgPage::Audit))
        form.toolbar method="get" action=(base) role="search" {
            div.field { label for="actor" { "Actor" } input #actor type="text" name="actor" value=(f.actor) placeholder="admin:… or token:…"; }
            div.field { label for="action" { "Action" } input #action type="text" name="action" value=(f.action) placeholder="license.assign"; }
            div.field { label for="since" { "Since (date)" } input #since type="date" name="since" value=(f.since); }
            div.field { button type="submit" { "Filter" } }
        }
        @if events.items.is_empty() {
            p.muted { "No events match." }
        } @else {
            table.stack.audit {
                caption.muted { "Oldest first" }
                thead {
                    tr {
                        th scope="col" { "When" }
                        th scope="col" { "Who" }
                        th scope="col" { "What" }
                        th scope="col" { "Before" }
                        th scope="col" { "After" }
                    }
                }
                tbody {
                    @for e in &events.items {
                        tr {
                            td.nowrap data-label="When" { (when(&e.at)) }
                            td data-label="Who" { (e.actor) }
                            td data-label="What" { strong { (e.action) } br; span.muted { (e.target) } }
                            td data-label="Before" { code { (json_text(&e.before)) } }
                            td data-label="After" { code { (json_text(&e.after)) } }
                        }
                    }
                }
            }
            @if let Some(c) = &events.next_cursor {
                nav.pager aria-label="Pages of events" {
                    a.button.secondary href=(format!("{base}?{}", f.next(c))) rel="next" { "Later events" }
                }
            }
        }
    };
    page("Audit log", Some(&s), body).into_response()
}
