//! **Purchase requests** of an org (`/ui/orgs/{org}/purchases`): an org
//! super admin asks for more seats (the org needs a payment method on
//! file, as the API says); other roles are told whom to contact. Requests
//! are listed pending, fulfilled or rejected; the provider and the org's
//! partner see **Fulfil** and **Reject** on pending ones.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::types::ProductCode;
use allot_domain::Error;

use super::orgs::{org_nav, OrgPage};
use super::page::{beside_form, page, refusal, when, HtmlError};
use super::session::SignedIn;
use crate::app::admins::ConsoleSession;
use crate::app::paging::PageQuery;
use crate::app::purchases::{self, FulfilInput, PurchaseInput, PurchaseView, RejectInput};
use crate::app::subscriptions::SubscriptionView;
use crate::app::tenants::OrgView;
use crate::app::{subscriptions, tenants, App};

struct Shown {
    org: OrgView,
    list: Vec<PurchaseView>,
    subs: Vec<SubscriptionView>,
    contact: String,
}

async fn gather(app: &App, s: &ConsoleSession, org: &str) -> Result<Shown, Error> {
    let all = PageQuery {
        limit: Some(1000),
        cursor: None,
    };
    let org = tenants::get_org(app, &s.caller, org).await?;
    let list = purchases::list_purchase_requests(app, &s.caller, &org.id, &all).await?.items;
    let subs = subscriptions::list_subscriptions(app, &s.caller, &org.id, &all)
        .await?
        .items
        .into_iter()
        .filter(|x| !x.cancelled)
        .collect();
    let contact = purchases::purchase_contact(app, &s.caller, &org.id).await?;
    Ok(Shown { org, list, subs, contact })
}

fn request_form(s: &ConsoleSession, sh: &Shown) -> Markup {
    let mut products: Vec<&str> = sh.subs.iter().flat_map(|x| x.items.iter().map(|i| i.product.as_str())).collect();
    products.sort();
    products.dedup();
    html! {
        form method="post" action=(format!("/ui/orgs/{}/purchases", sh.org.id)) {
            input type="hidden" name="csrf" value=(s.csrf_token);
            label for="product" { "Product" }
            select #product name="product" required {
                @for p in &products { option value=(p) { (p) } }
            }
            label for="quantity" { "Seats" }
            input #quantity type="number" name="quantity" min="1" max="100000" value="1" required;
            label for="subscription" { "Subscription" }
            select #subscription name="subscription" {
                option value="" { "Whichever fits (the provider or partner chooses)" }
                @for x in &sh.subs { option value=(x.id) { (x.external_ref.as_deref().unwrap_or(&x.id)) } }
            }
            div.actions { button type="submit" { "Request seats" } }
        }
    }
}

fn decide_forms(s: &ConsoleSession, sh: &Shown, p: &PurchaseView) -> Markup {
    let base = format!("/ui/orgs/{}/purchases/{}", sh.org.id, p.id);
    let sub_id = format!("fulfil-sub-{}", p.id);
    let reason_id = format!("reason-{}", p.id);
    html! {
        div.row-actions {
            form.inline method="post" action=(format!("{base}/fulfil")) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                @if p.subscription.is_none() {
                    label.visually-hidden for=(sub_id) { "Subscription for request " (p.id) }
                    select id=(sub_id) name="subscription" required {
                        @for x in sh.subs.iter().filter(|x| x.items.iter().any(|i| i.product == p.product)) {
                            option value=(x.id) { (x.external_ref.as_deref().unwrap_or(&x.id)) }
                        }
                    }
                }
                button.small type="submit" { "Fulfil" span.visually-hidden { " request for " (p.quantity) " " (p.product) } }
            }
            form.inline method="post" action=(format!("{base}/reject")) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                label.visually-hidden for=(reason_id) { "Reason for rejecting request " (p.id) }
                input id=(reason_id) type="text" name="reason" maxlength="1000" placeholder="Reason (optional)";
                button.small.danger type="submit" { "Reject" span.visually-hidden { " request for " (p.quantity) " " (p.product) } }
            }
        }
    }
}

fn the_page(s: &ConsoleSession, sh: &Shown, notice: Option<Markup>) -> Markup {
    let may_decide = s.caller.principal.may(Action::DecidePurchase);
    let body = html! {
        (org_nav(s, &sh.org, OrgPage::Purchases))
        @if let Some(n) = notice { (n) }
        @if s.caller.principal.may(Action::RequestPurchase) {
            details.buy open[sh.list.is_empty()] {
                summary { "Request more seats" }
                @if sh.org.payment_method_on_file {
                    (request_form(s, sh))
                } @else {
                    p { "This organisation has no payment method on file, so seats cannot be requested here. Contact " (sh.contact) "." }
                }
            }
        } @else if !may_decide {
            p { "To buy more seats, contact " (sh.contact) "." }
        }
        @for (state, title) in [("pending", "Pending"), ("fulfilled", "Fulfilled"), ("rejected", "Rejected")] {
            @let rows: Vec<&PurchaseView> = sh.list.iter().filter(|p| p.state == state).collect();
            h2 { (title) " (" (rows.len()) ")" }
            @if rows.is_empty() {
                p.muted { "None." }
            } @else {
                table.stack {
                    thead {
                        tr {
                            th scope="col" { "Product" }
                            th scope="col" { "Seats" }
                            th scope="col" { "Subscription" }
                            th scope="col" { "Requested" }
                            @if state != "pending" { th scope="col" { "Decided" } }
                            @if state == "rejected" { th scope="col" { "Reason" } }
                            @if state == "pending" && may_decide { th scope="col" { span.muted { "Decide" } } }
                        }
                    }
                    tbody {
                        @for p in rows {
                            tr {
                                th scope="row" data-label="Product" { (p.product) }
                                td data-label="Seats" { (p.quantity) }
                                td data-label="Subscription" { (p.fulfilled_subscription.as_deref().or(p.subscription.as_deref()).unwrap_or("any")) }
                                td data-label="Requested" { (when(&p.requested_at)) br; span.muted { (p.requested_by) } }
                                @if state != "pending" {
                                    td data-label="Decided" { (p.decided_at.as_deref().map(when).unwrap_or_default()) br; span.muted { (p.decided_by.as_deref().unwrap_or("")) } }
                                }
                                @if state == "rejected" { td data-label="Reason" { (p.reason.as_deref().unwrap_or("—")) } }
                                @if state == "pending" && may_decide { td { (decide_forms(s, sh, p)) } }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Purchase requests", Some(s), body)
}

async fn show_page(app: &App, s: &ConsoleSession, org: &str, status: StatusCode, notice: Option<Markup>) -> Response {
    match gather(app, s, org).await {
        Ok(sh) => (status, the_page(s, &sh, notice)).into_response(),
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

/// `GET /ui/orgs/{org}/purchases`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    show_page(&app, &s, &org, StatusCode::OK, None).await
}

/// A done change goes back to the list; a refusal is shown above it.
async fn after(app: &App, s: &ConsoleSession, org: &str, done: Result<PurchaseView, Error>) -> Response {
    match done {
        Ok(_) => Redirect::to(&format!("/ui/orgs/{org}/purchases")).into_response(),
        Err(e) => match beside_form(&e) {
            Some(status) => show_page(app, s, org, status, Some(refusal(&e))).await,
            None => HtmlError::new(e, &s.caller.request_id).into_response(),
        },
    }
}

/// A purchase request as a form gives it (here, and **Buy more** on Products).
pub fn purchase_input(product: &str, quantity: &str, subscription: &str) -> Result<PurchaseInput, Error> {
    let product = ProductCode::parse(product)?;
    let quantity = quantity
        .trim()
        .parse::<i64>()
        .map_err(|_| Error::validation("quantity", "Give the number of seats as a whole number."))?;
    Ok(PurchaseInput {
        product,
        quantity,
        subscription: Some(subscription.to_string()).filter(|v| !v.is_empty()),
    })
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    quantity: String,
    #[serde(default)]
    subscription: String,
}

/// `POST /ui/orgs/{org}/purchases`: a request for more seats.
pub async fn request(State(app): State<App>, signed_in: SignedIn, Path(org): Path<String>, Form(f): Form<RequestForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let done = match purchase_input(&f.product, &f.quantity, &f.subscription) {
        Ok(input) => purchases::create_purchase_request(&app, &s.caller, &org, input).await,
        Err(e) => Err(e),
    };
    after(&app, s, &org, done).await
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    subscription: String,
    #[serde(default)]
    reason: String,
}

/// `POST /ui/orgs/{org}/purchases/{id}/fulfil`.
pub async fn fulfil(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((org, id)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let input = FulfilInput {
        subscription: Some(f.subscription.clone()).filter(|v| !v.is_empty()),
    };
    let done = purchases::fulfil_purchase_request(&app, &s.caller, &org, &id, input).await;
    after(&app, s, &org, done).await
}

/// `POST /ui/orgs/{org}/purchases/{id}/reject`.
pub async fn reject(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((org, id)): Path<(String, String)>,
    Form(f): Form<DecideForm>,
) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let input = RejectInput {
        reason: Some(f.reason.trim().to_string()).filter(|v| !v.is_empty()),
    };
    let done = purchases::reject_purchase_request(&app, &s.caller, &org, &id, input).await;
    after(&app, s, &org, done).await
}
