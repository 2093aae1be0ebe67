//! **Subscriptions** of an org (`/ui/orgs/{org}/subscriptions`) and one
//! subscription's page: the status derived for today, the dates, trial,
//! and per item its quantity, used, available and provisioning status.
//! And the org's **Audit log** (`/ui/orgs/{org}/audit`): who, when, what,
//! before and after, filtered by actor, action and date.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use allot_domain::Error;

use super::orgs::{org_nav, OrgPage};
use super::page::{page, when, HtmlError};
use super::session::SignedIn;
use crate::app::audit::{self, AuditQuery};
use crate::app::paging::PageQuery;
use crate::app::subscriptions::{self, SubscriptionView};
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
                        td data-label="Provisioning" { (i.provisioning_status.as_str().replace('_', " ")) }
                    }
                }
            }
        }
    }
}

fn status_text(sub: &SubscriptionView) -> String {
    sub.status.as_str().replace('_', " ")
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
                            td data-label="Status" { span.status { (status_text(sub)) } @if sub.trial { " (trial)" } }
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

/// `GET /ui/orgs/{org}/subscriptions/{sub}`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn, Path((org, sub)): Path<(String, String)>) -> Response {
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let sub = subscriptions::get_subscription(&app, &s.caller, &org.id, &sub).await?;
        Ok::<_, Error>((org, sub))
    }
    .await;
    let (org, sub) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let body = html! {
        (org_nav(&s, &org, OrgPage::Subscriptions))
        div.panel {
            dl.facts {
                dt { "Subscription" } dd { (sub.id) }
                @if let Some(r) = &sub.external_ref { dt { "Reference" } dd { (r) } }
                dt { "Status" } dd { span.status { (status_text(&sub)) } " (derived from the dates and flags below, for today)" }
                dt { "Starts" } dd { (sub.start_date) }
                dt { "Ends" } dd { (sub.end_date) }
                dt { "Trial" } dd { (if sub.trial { "yes" } else { "no" }) }
                dt { "Suspended" } dd { (if sub.suspended { "yes" } else { "no" }) }
                dt { "Cancelled" } dd { (if sub.cancelled { "yes" } else { "no" }) }
                dt { "Partner" } dd { (sub.partner.as_deref().unwrap_or("none")) }
            }
        }
        h2 { "Items" }
        (items_table(&sub))
        p { a href=(format!("/ui/orgs/{}/subscriptions", org.id)) { "All subscriptions" } }
    };
    page("Subscription", Some(&s), body).into_response()
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
                            td data-label="When" { (when(&e.at)) }
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
