//! The partner hub's **Customers** (`/ui/customers` for the provider,
//! `/ui/partners/{partner}/customers` for a partner): one row per customer
//! with its **Provisioning status** (the most important of its items) and
//! **Subscription status** (every status its subscriptions are in). The
//! **Select a filter…** control chooses any number of statuses; a customer
//! is listed when any of its subscriptions matches any chosen value. The
//! URL carries the filter as the API's list does
//! (`?subscription_status=a,b&provisioning_status=c&q=&sort=`), so a
//! filtered list can be bookmarked and shared. Also the provider's
//! **Partners** list (`/ui/partners`).

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::status::{ProvisioningStatus, SubscriptionStatus};
use allot_domain::Error;

use super::page::{page, HtmlError};
use super::session::SignedIn;
use crate::app::admins::ConsoleSession;
use crate::app::customers::{self, CustomerQuery, CustomerView, StatusMatch};
use crate::app::paging::{PageQuery, Paged};
use crate::app::{tenants, App};

/// Customers per page.
const PAGE: i64 = 50;

pub fn subscription_status_label(s: SubscriptionStatus) -> &'static str {
    match s {
        SubscriptionStatus::Active => "Active",
        SubscriptionStatus::Suspended => "Suspended",
        SubscriptionStatus::Expiring30d => "Expiring within 30 days",
        SubscriptionStatus::Expiring60d => "Expiring within 60 days",
        SubscriptionStatus::TrialActive => "Trial active",
        SubscriptionStatus::TrialExpiring30d => "Trial expiring within 30 days",
        SubscriptionStatus::TrialExpiring60d => "Trial expiring within 60 days",
        SubscriptionStatus::TrialExpired => "Trial expired",
        SubscriptionStatus::Expired => "Expired",
        SubscriptionStatus::Cancelled => "Cancelled",
    }
}

pub fn provisioning_status_label(s: ProvisioningStatus) -> &'static str {
    match s {
        ProvisioningStatus::Provisioned => "Provisioned",
        ProvisioningStatus::Provisioning => "Provisioning",
        ProvisioningStatus::ManualProvider => "Manual set-up by the provider",
        ProvisioningStatus::ManualPartner => "Manual set-up by the partner",
        ProvisioningStatus::AwaitingDetails => "Awaiting provisioning details",
        ProvisioningStatus::CannotProvision => "Cannot provision",
    }
}

/// The page's query as given. Check boxes of one name arrive as repeated
/// parameters; the page answers those with a redirect to the one
/// comma-separated form the URL keeps.
#[derive(Debug, Default)]
struct Query {
    subscription_status: Vec<String>,
    provisioning_status: Vec<String>,
    q: String,
    sort: String,
    cursor: String,
    /// Whether a list came as repeated parameters (to be redirected).
    repeated: bool,
}

impl Query {
    fn parse(raw: &str) -> Query {
        let mut q = Query::default();
        let (mut subs_seen, mut prov_seen) = (0, 0);
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "subscription_status" => {
                    subs_seen += 1;
                    q.subscription_status
                        .extend(v.split(',').filter(|x| !x.is_empty()).map(str::to_string));
                }
                "provisioning_status" => {
                    prov_seen += 1;
                    q.provisioning_status
                        .extend(v.split(',').filter(|x| !x.is_empty()).map(str::to_string));
                }
                "q" => q.q = v,
                "sort" => q.sort = v,
                "cursor" => q.cursor = v,
                _ => {}
            }
        }
        q.repeated = subs_seen > 1 || prov_seen > 1;
        q
    }

    fn encode(&self, cursor: Option<&str>) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if !self.subscription_status.is_empty() {
            s.append_pair("subscription_status", &self.subscription_status.join(","));
        }
        if !self.provisioning_status.is_empty() {
            s.append_pair("provisioning_status", &self.provisioning_status.join(","));
        }
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
        }
        if !self.sort.is_empty() {
            s.append_pair("sort", &self.sort);
        }
        if let Some(c) = cursor {
            s.append_pair("cursor", c);
        }
        s.finish()
    }

    fn api(&self) -> CustomerQuery {
        let given = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        CustomerQuery {
            subscription_status: given(&self.subscription_status.join(",")),
            provisioning_status: given(&self.provisioning_status.join(",")),
            q: given(&self.q),
            sort: given(&self.sort),
            limit: Some(PAGE),
            cursor: given(&self.cursor),
            partner: None,
        }
    }

    fn chosen(&self) -> usize {
        self.subscription_status.len() + self.provisioning_status.len()
    }
}

fn filter_form(base: &str, q: &Query) -> Markup {
    html! {
        form.toolbar method="get" action=(base) role="search" {
            div.field {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(q.q) maxlength="200" placeholder="Part of a customer's name";
            }
            details.filter open[q.chosen() > 0] {
                summary { "Select a filter…" @if q.chosen() > 0 { " (" (q.chosen()) " chosen)" } }
                div.filter-lists {
                    fieldset {
                        legend { "Subscription status" }
                        @for st in SubscriptionStatus::ALL {
                            label.check {
                                input type="checkbox" name="subscription_status" value=(st.as_str()) checked[q.subscription_status.iter().any(|x| x == st.as_str())];
                                (subscription_status_label(st))
                            }
                        }
                    }
                    fieldset {
                        legend { "Provisioning status" }
                        @for st in ProvisioningStatus::ALL {
                            label.check {
                                input type="checkbox" name="provisioning_status" value=(st.as_str()) checked[q.provisioning_status.iter().any(|x| x == st.as_str())];
                                (provisioning_status_label(st))
                            }
                        }
                    }
                }
            }
            div.field {
                label for="sort" { "Sort by" }
                select #sort name="sort" {
                    @for (v, l) in [("name", "Name, A to Z"), ("-name", "Name, Z to A"), ("-created_at", "Newest first"), ("created_at", "Oldest first")] {
                        option value=(v) selected[q.sort == v] { (l) }
                    }
                }
            }
            div.field { button type="submit" { "Apply filter" } }
            @if q.chosen() > 0 || !q.q.is_empty() {
                div.field { a.button.secondary href=(base) { "Clear filter" } }
            }
        }
    }
}

fn customers_table(list: &Paged<CustomerView>, partner_names: Option<&[(String, String)]>) -> Markup {
    html! {
        @if list.items.is_empty() {
            p.muted { "No customers match." }
        } @else {
            table.stack {
                thead {
                    tr {
                        th scope="col" { "Customer" }
                        @if partner_names.is_some() { th scope="col" { "Partner" } }
                        th scope="col" { "Provisioning status" }
                        th scope="col" { "Subscription status" }
                    }
                }
                tbody {
                    @for c in &list.items {
                        tr {
                            th scope="row" data-label="Customer" { a href=(format!("/ui/orgs/{}", c.org.id)) { (c.org.name) } }
                            @if let Some(names) = partner_names {
                                td data-label="Partner" {
                                    @match &c.org.partner {
                                        None => { "none (the provider's own)" }
                                        Some(id) => { (names.iter().find(|(p, _)| p == id).map(|(_, n)| n.as_str()).unwrap_or(id)) }
                                    }
                                }
                            }
                            td data-label="Provisioning status" {
                                @match c.provisioning_status {
                                    Some(p) => { span.status.bad[p != ProvisioningStatus::Provisioned] { (provisioning_status_label(p)) } }
                                    None => { span.muted { "no subscriptions" } }
                                }
                            }
                            td data-label="Subscription status" {
                                @if c.subscription_statuses.is_empty() { span.muted { "none" } }
                                @else { (c.subscription_statuses.iter().map(|s| subscription_status_label(*s)).collect::<Vec<_>>().join(", ")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn pager(base: &str, q: &Query, list: &Paged<CustomerView>) -> Markup {
    html! {
        nav.pager aria-label="Pages of customers" {
            @if q.cursor.is_empty() {
                span.disabled aria-disabled="true" { "First" }
            } @else {
                a.button.secondary href=(format!("{base}?{}", q.encode(None))) { "First" }
            }
            @if let Some(next) = &list.next_cursor {
                a.button.secondary href=(format!("{base}?{}", q.encode(Some(next)))) rel="next" { "Next" }
            } @else {
                span.disabled aria-disabled="true" { "Next" }
            }
        }
    }
}

async fn partner_names(app: &App, s: &ConsoleSession) -> Result<Vec<(String, String)>, Error> {
    let all = PageQuery {
        limit: Some(1000),
        cursor: None,
    };
    Ok(tenants::list_partners(app, &s.caller, &all)
        .await?
        .items
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect())
}

/// `GET /ui/customers`: every customer the admin may see (the provider's list).
pub async fn all(State(app): State<App>, SignedIn(s): SignedIn, RawQuery(raw): RawQuery) -> Response {
    let q = Query::parse(raw.as_deref().unwrap_or(""));
    let base = "/ui/customers".to_string();
    if q.repeated {
        return Redirect::to(&format!("{base}?{}", q.encode(None))).into_response();
    }
    let shown = async {
        let list = customers::list_customers_matching(&app, &s.caller, &q.api(), StatusMatch::AnyValue).await?;
        let names = if s.caller.principal.may(Action::ReadPartners) && s.admin.partner.is_none() {
            Some(partner_names(&app, &s).await?)
        } else {
            None
        };
        Ok::<_, Error>((list, names))
    }
    .await;
    let (list, names) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let body = html! {
        (filter_form(&base, &q))
        (customers_table(&list, names.as_deref()))
        (pager(&base, &q, &list))
    };
    page("Customers", Some(&s), body).into_response()
}

/// `GET /ui/partners/{partner}/customers`: one partner's customers.
pub async fn of_partner(State(app): State<App>, SignedIn(s): SignedIn, Path(partner): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let q = Query::parse(raw.as_deref().unwrap_or(""));
    let base = format!("/ui/partners/{partner}/customers");
    if q.repeated {
        return Redirect::to(&format!("{base}?{}", q.encode(None))).into_response();
    }
    let shown = async {
        let p = tenants::get_partner(&app, &s.caller, &partner).await?;
        let list = customers::list_partner_customers_matching(&app, &s.caller, &p.id, &q.api(), StatusMatch::AnyValue).await?;
        Ok::<_, Error>((p, list))
    }
    .await;
    let (p, list) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let body = html! {
        p.org-name.muted { "Partner: " (p.name) }
        (filter_form(&base, &q))
        (customers_table(&list, None))
        (pager(&base, &q, &list))
    };
    page("Customers", Some(&s), body).into_response()
}

/// `GET /ui/partners`: the provider's **Partners**, each with its customers.
pub async fn partners(State(app): State<App>, SignedIn(s): SignedIn) -> Response {
    let list = match partner_names(&app, &s).await {
        Ok(l) => l,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let body = html! {
        @if list.is_empty() {
            p.muted { "No partners yet." }
        } @else {
            table.stack {
                thead { tr { th scope="col" { "Partner" } th scope="col" { span.muted { "Pages" } } } }
                tbody {
                    @for (id, name) in &list {
                        tr {
                            th scope="row" data-label="Partner" { (name) br; span.muted { (id) } }
                            td {
                                ul.inline-list {
                                    li { a href=(format!("/ui/partners/{id}/customers")) { "Customers" span.visually-hidden { " of " (name) } } }
                                    @if s.caller.principal.may(Action::ManageAdmins) {
                                        li { a href=(format!("/ui/partners/{id}/admins")) { "Admins" span.visually-hidden { " of " (name) } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Partners", Some(&s), body).into_response()
}
