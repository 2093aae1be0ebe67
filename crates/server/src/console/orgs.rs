//! An org's pages: the overview (`/ui/orgs/{org}`) and **Products**
//! (`/ui/orgs/{org}/licenses`, with **Buy more**), and the navigation that
//! every page of an org shows. Each reads through the same use cases as the
//! JSON API (`list_org_licenses`, `list_subscriptions`, ...).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::Error;

use super::page::{page, refusal, HtmlError};
use super::session::SignedIn;
use crate::app::admins::ConsoleSession;
use crate::app::licenses::OverviewRow;
use crate::app::paging::PageQuery;
use crate::app::purchases;
use crate::app::subscriptions::SubscriptionView;
use crate::app::tenants::OrgView;
use crate::app::{licenses, subscriptions, tenants, App};

/// The pages of an org, in the order its navigation lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgPage {
    Overview,
    Products,
    Users,
    Subscriptions,
    Audit,
    Admins,
    Jobs,
    Import,
    Templates,
    Queues,
    Purchases,
    Webhooks,
    Provisioning,
}

/// The navigation of an org's pages: only those the admin's role may open.
pub fn org_nav(s: &ConsoleSession, org: &OrgView, current: OrgPage) -> Markup {
    let p = &s.caller.principal;
    let base = format!("/ui/orgs/{}", org.id);
    let links: Vec<(OrgPage, String, &str, bool)> = vec![
        (OrgPage::Overview, base.clone(), "Overview", p.may(Action::ReadOrg)),
        (
            OrgPage::Products,
            format!("{base}/licenses"),
            "Products",
            p.may(Action::ReadLicenses),
        ),
        (OrgPage::Users, format!("{base}/users"), "Users", p.may(Action::ReadUsers)),
        (
            OrgPage::Subscriptions,
            format!("{base}/subscriptions"),
            "Subscriptions",
            p.may(Action::ReadSubscriptions),
        ),
        (OrgPage::Jobs, format!("{base}/jobs"), "Jobs", p.may(Action::ReadLicenses)),
        (
            OrgPage::Import,
            format!("{base}/import"),
            "Import",
            p.may(Action::ReadUsers) && p.may(Action::ReadLicenses),
        ),
        (
            OrgPage::Templates,
            format!("{base}/templates"),
            "License templates",
            p.may(Action::ReadUsers) && p.may(Action::ReadLicenses),
        ),
        (
            OrgPage::Queues,
            format!("{base}/queues"),
            "Queues",
            p.may(Action::ReadUsers) && p.may(Action::ReadLicenses),
        ),
        (
            OrgPage::Purchases,
            format!("{base}/purchases"),
            "Purchase requests",
            p.may(Action::ReadSubscriptions),
        ),
        (OrgPage::Audit, format!("{base}/audit"), "Audit log", p.may(Action::ReadAudit)),
        (OrgPage::Admins, format!("{base}/admins"), "Admins", p.may(Action::ManageAdmins)),
        (
            OrgPage::Webhooks,
            format!("{base}/webhooks"),
            "Webhooks",
            p.may(Action::ManageWebhooks),
        ),
        (
            OrgPage::Provisioning,
            format!("{base}/provisioning"),
            "Identity provisioning",
            p.may(Action::ManageTokens),
        ),
    ];
    html! {
        nav.tabs aria-label=(format!("Pages of {}", org.name)) {
            // The overview's heading is the org's name already.
            @if current != OrgPage::Overview { p.org-name { (org.name) } }
            ul {
                @for (which, href, label, allowed) in links {
                    @if allowed {
                        li {
                            @if which == current {
                                a href=(href) aria-current="page" { (label) }
                            } @else {
                                a href=(href) { (label) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An error as the page, with its request id.
fn fail(s: &ConsoleSession, e: Error) -> Response {
    HtmlError::new(e, &s.caller.request_id).into_response()
}

/// Seats per product over all of the org's subscriptions: (name, used, total).
fn seats_per_product(rows: &[OverviewRow]) -> Vec<(String, i64, i64)> {
    let mut by: BTreeMap<&str, (String, i64, i64)> = BTreeMap::new();
    for r in rows {
        let e = by.entry(r.product.as_str()).or_insert((r.name.clone(), 0, 0));
        e.1 += r.consumed;
        e.2 += r.total;
    }
    by.into_values().collect()
}

/// `GET /ui/orgs/{org}`: the overview.
pub async fn overview(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    let org = match tenants::get_org(&app, &s.caller, &org).await {
        Ok(o) => o,
        Err(e) => return fail(&s, e),
    };
    let p = &s.caller.principal;
    let seats = if p.may(Action::ReadLicenses) {
        match licenses::list_org_licenses(&app, &s.caller, &org.id).await {
            Ok(rows) => Some(seats_per_product(&rows.items)),
            Err(e) => return fail(&s, e),
        }
    } else {
        None
    };
    let subs = if p.may(Action::ReadSubscriptions) {
        match subscriptions::list_subscriptions(
            &app,
            &s.caller,
            &org.id,
            &PageQuery {
                limit: Some(1000),
                cursor: None,
            },
        )
        .await
        {
            Ok(page) => Some(page.items),
            Err(e) => return fail(&s, e),
        }
    } else {
        None
    };
    let base = format!("/ui/orgs/{}", org.id);
    let body = html! {
        (org_nav(&s, &org, OrgPage::Overview))
        div.panel {
            dl.facts {
                dt { "Organisation" } dd { (org.name) br; span.muted { (org.id) } }
                dt { "Partner" } dd { (org.partner.as_deref().unwrap_or("none (served by the provider)")) }
                dt { "Default usage location" } dd { (org.default_usage_location.as_deref().unwrap_or("not set")) }
                dt { "Payment method on file" } dd { (if org.payment_method_on_file { "yes" } else { "no" }) }
            }
        }
        @if let Some(subs) = &subs {
            h2 { "Subscriptions" }
            @if subs.is_empty() {
                p.muted { "No subscriptions yet." }
            } @else {
                (subscription_statuses(subs))
                p { a href=(format!("{base}/subscriptions")) { "All subscriptions" } }
            }
        }
        @if let Some(seats) = &seats {
            h2 { "Seats per product" }
            @if seats.is_empty() {
                p.muted { "No seats yet." }
            } @else {
                table.stack {
                    thead { tr { th scope="col" { "Product" } th scope="col" { "Used" } th scope="col" { "Total" } } }
                    tbody {
                        @for (name, used, total) in seats {
                            tr {
                                th scope="row" data-label="Product" { (name) }
                                td data-label="Used" { (used) }
                                td data-label="Total" { (total) }
                            }
                        }
                    }
                }
                p { a href=(format!("{base}/licenses")) { "Products and seats" } }
            }
        }
    };
    page(&org.name, Some(&s), body).into_response()
}

/// How many subscriptions are in each derived status, as text.
fn subscription_statuses(subs: &[SubscriptionView]) -> Markup {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for sub in subs {
        *by.entry(sub.status.as_str().to_string()).or_default() += 1;
    }
    html! {
        ul.inline-list {
            @for (status, n) in &by {
                li { span.status { (status) } " × " (n) }
            }
        }
    }
}

/// What the **Buy more** form was given.
#[derive(Debug, Default, serde::Deserialize)]
pub struct BuyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    subscription: String,
    #[serde(default)]
    quantity: String,
}

fn products_table(s: &ConsoleSession, org: &OrgView, rows: &[OverviewRow]) -> Markup {
    let may_buy = s.caller.principal.may(Action::RequestPurchase);
    html! {
        @if rows.is_empty() {
            p.muted { "This organisation has no subscriptions yet." }
        } @else {
            table.stack {
                caption.muted { "One row per product and subscription" }
                thead {
                    tr {
                        th scope="col" { "Product" }
                        th scope="col" { "Subscription" }
                        th scope="col" { "Total" }
                        th scope="col" { "Used" }
                        th scope="col" { "Available" }
                        th scope="col" { "Features" }
                        th scope="col" { span.muted { "Buy more" } }
                    }
                }
                tbody {
                    @for r in rows {
                        tr {
                            th scope="row" data-label="Product" { (r.name) br; span.muted { (r.product) } }
                            td data-label="Subscription" {
                                @if s.caller.principal.may(Action::ReadSubscriptions) {
                                    a href=(format!("/ui/orgs/{}/subscriptions/{}", org.id, r.subscription)) { (r.subscription) }
                                } @else {
                                    (r.subscription)
                                }
                            }
                            td data-label="Total" { (r.total) }
                            td data-label="Used" { (r.consumed) }
                            td data-label="Available" {
                                (r.available)
                                @if r.available <= 0 { " " span.status.bad { "none free" } }
                            }
                            td data-label="Features" { (r.features.join(", ")) }
                            td {
                                @if let Some(b) = &r.buy_more {
                                    @if b.purchase_request && may_buy {
                                        details.buy {
                                            summary { "Buy more" span.visually-hidden { " " (r.name) " for " (r.subscription) } }
                                            form method="post" action=(format!("/ui/orgs/{}/licenses/buy", org.id)) {
                                                input type="hidden" name="csrf" value=(s.csrf_token);
                                                input type="hidden" name="product" value=(r.product);
                                                input type="hidden" name="subscription" value=(r.subscription);
                                                label for=(format!("qty-{}-{}", r.product, r.subscription)) { "Seats to buy" }
                                                input id=(format!("qty-{}-{}", r.product, r.subscription)) type="number" name="quantity" min="1" max="100000" value="1" required;
                                                div.actions { button type="submit" { "Request seats" } }
                                            }
                                        }
                                    } @else {
                                        span { "Buy more: " (b.message) }
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

async fn products_page(app: &App, s: &ConsoleSession, org: &str, status: StatusCode, notice: Option<Markup>) -> Response {
    let org = match tenants::get_org(app, &s.caller, org).await {
        Ok(o) => o,
        Err(e) => return fail(s, e),
    };
    let rows = match licenses::list_org_licenses(app, &s.caller, &org.id).await {
        Ok(r) => r.items,
        Err(e) => return fail(s, e),
    };
    let body = html! {
        (org_nav(s, &org, OrgPage::Products))
        @if let Some(n) = notice { (n) }
        (products_table(s, &org, &rows))
    };
    (status, page("Products", Some(s), body)).into_response()
}

/// `GET /ui/orgs/{org}/licenses`: **Products**.
pub async fn products(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    products_page(&app, &s, &org, StatusCode::OK, None).await
}

/// `POST /ui/orgs/{org}/licenses/buy`: a purchase request from **Buy more**.
pub async fn buy_more(State(app): State<App>, signed_in: SignedIn, Path(org): Path<String>, Form(f): Form<BuyForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let input = super::purchases::purchase_input(&f.product, &f.quantity, &f.subscription);
    let made = match input {
        Ok(input) => purchases::create_purchase_request(&app, &s.caller, &org, input).await,
        Err(e) => Err(e),
    };
    match made {
        Ok(p) => {
            let notice = html! {
                div.panel role="status" {
                    p { "Requested " (p.quantity) " more seats of " (p.product) ". The request is " (p.state) "; your provider or partner fulfils it." }
                }
            };
            products_page(&app, s, &org, StatusCode::CREATED, Some(notice)).await
        }
        Err(e) => match super::page::beside_form(&e) {
            Some(status) => products_page(&app, s, &org, status, Some(refusal(&e))).await,
            // A role that may not buy sees no form, so its post answers the 403 page.
            None => fail(s, e),
        },
    }
}

/// `GET /ui/`: what each role starts from. A provider sees **Partners**
/// and **Customers**, a partner its **Customers**, an org's admin goes to
/// its org's overview.
pub async fn home(State(app): State<App>, SignedIn(s): SignedIn) -> Response {
    use allot_domain::access::ScopeKind;
    let a = &s.admin;
    if a.role.scope_kind() == ScopeKind::Org {
        return Redirect::to(&format!("/ui/orgs/{}", a.org.as_deref().unwrap_or("-"))).into_response();
    }
    let all = PageQuery {
        limit: Some(100),
        cursor: None,
    };
    let partners = if a.role.scope_kind() == ScopeKind::Provider && s.caller.principal.may(Action::ReadPartners) {
        match tenants::list_partners(&app, &s.caller, &all).await {
            Ok(p) => Some(p),
            Err(e) => return fail(&s, e),
        }
    } else {
        None
    };
    let customers = match tenants::list_orgs(&app, &s.caller, &all).await {
        Ok(p) => p,
        Err(e) => return fail(&s, e),
    };
    let body = html! {
        p.muted { "Signed in as " (a.email) " (" (a.role.as_str()) ")." }
        @if let Some(partners) = &partners {
            h2 { "Partners" }
            @if partners.items.is_empty() {
                p.muted { "No partners yet." }
            } @else {
                table.stack {
                    thead { tr { th scope="col" { "Partner" } th scope="col" { span.muted { "Pages" } } } }
                    tbody {
                        @for p in &partners.items {
                            tr {
                                th scope="row" data-label="Partner" { (p.name) br; span.muted { (p.id) } }
                                td { a href=(format!("/ui/partners/{}/admins", p.id)) { "Admins" span.visually-hidden { " of " (p.name) } } }
                            }
                        }
                    }
                }
                @if partners.next_cursor.is_some() { p.muted { "The first 100 partners are shown." } }
            }
        }
        h2 { "Customers" }
        @if customers.items.is_empty() {
            p.muted { "No customers yet." }
        } @else {
            table.stack {
                thead {
                    tr {
                        th scope="col" { "Customer" }
                        // A partner's customers are all its own.
                        @if partners.is_some() { th scope="col" { "Partner" } }
                    }
                }
                tbody {
                    @for o in &customers.items {
                        tr {
                            th scope="row" data-label="Customer" { a href=(format!("/ui/orgs/{}", o.id)) { (o.name) } }
                            @if let Some(partners) = &partners {
                                td data-label="Partner" {
                                    @match &o.partner {
                                        None => { "none (the provider's own)" }
                                        Some(id) => { (partners.items.iter().find(|p| &p.id == id).map(|p| p.name.as_str()).unwrap_or(id)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if customers.next_cursor.is_some() { p.muted { "The first 100 customers are shown." } }
        }
    };
    page("Home", Some(&s), body).into_response()
}
