//! **Manage licenses** for the selected users
//! (`/ui/orgs/{org}/manage-licenses`): the selection as small boxes in
//! email order, then one row per product and subscription with its free
//! seats, a tri-state box (checked: every selected user holds it; mixed:
//! some; clear: none), the **Assigned** link listing who holds it, and
//! **Buy more** where no seat is free. **Save** starts one bulk job and
//! opens its page; a product without seats for everyone is refused as a
//! whole first (see `app::manage`).
//!
//! The mixed state needs our small script (`assets/allot.js`); without it
//! a mixed row shows as a clear box that is left as it is unless ticked.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::bulk::HolderState;
use allot_domain::Error;

use super::orgs::{org_nav, OrgPage};
use super::page::{beside_form, page, refusal, HtmlError};
use super::session::SignedIn;
use crate::app::admins::ConsoleSession;
use crate::app::manage::{self, ItemWish, SelectionLicenses, Want};
use crate::app::tenants::OrgView;
use crate::app::{tenants, App};

/// Holders listed on the Assigned page.
const HOLDERS_SHOWN: usize = 1000;

fn fail(s: &ConsoleSession, e: Error) -> Response {
    HtmlError::new(e, &s.caller.request_id).into_response()
}

fn state_word(st: HolderState) -> &'static str {
    match st {
        HolderState::All => "all",
        HolderState::Some => "some",
        HolderState::None => "none",
    }
}

fn the_page(s: &ConsoleSession, org: &OrgView, sel: &SelectionLicenses, notice: Option<Markup>) -> Markup {
    let base = format!("/ui/orgs/{}", org.id);
    let may_write = s.caller.principal.may(Action::WriteLicenses);
    let body = html! {
        (org_nav(s, org, OrgPage::Users))
        @if let Some(n) = notice { (n) }
        p {
            strong { (sel.selected) " users selected." } " "
            a href=(format!("{base}/users/selected")) { "Selected users (" (sel.selected) ")" } " · "
            a href=(format!("{base}/users")) { "Back to Users" }
        }
        @if sel.first.is_empty() {
            p.muted { "No users are selected. Select them on the Users page, then come back here." }
        } @else {
            // It scrolls when long: focusable, so a keyboard can scroll it too.
            ul.user-boxes aria-label="Selected users" tabindex="0" {
                @for (_, email) in &sel.first { li { (email) } }
                @if sel.selected > sel.first.len() as i64 {
                    li.more { "and " (sel.selected - sel.first.len() as i64) " more" }
                }
            }
        }
        @if sel.selected > 0 {
            @if sel.items.is_empty() {
                p.muted { "This organisation has no subscriptions to assign from." }
            } @else {
                form method="post" action=(format!("{base}/manage-licenses")) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    table.stack.manage {
                        caption.muted { "Tick to give a product to every selected user; clear to take it from every one; a mixed box is left as it is." }
                        thead {
                            tr {
                                th scope="col" { "Product" }
                                th scope="col" { "Subscription" }
                                th scope="col" { "Available" }
                                th scope="col" { "Assign" }
                                th scope="col" { "Assigned" }
                                th scope="col" { span.muted { "Buy more" } }
                            }
                        }
                        tbody {
                            @for (i, it) in sel.items.iter().enumerate() {
                                @let box_id = format!("want-{i}");
                                @let keep_id = format!("keep-{i}");
                                tr {
                                    th scope="row" data-label="Product" { (it.name) br; span.muted { (it.product) } }
                                    td data-label="Subscription" { (it.subscription) }
                                    td data-label="Available" {
                                        (it.available) " of " (it.total)
                                    }
                                    td data-label="Assign" {
                                        input type="hidden" name=(format!("row_{i}")) value=(format!("{}\t{}", it.product, it.subscription));
                                        input type="hidden" name=(format!("was_{i}")) value=(state_word(it.state));
                                        input type="hidden" id=(keep_id) name=(format!("keep_{i}")) value=(if it.state == HolderState::Some { "1" } else { "0" });
                                        span.check {
                                            input id=(box_id) type="checkbox" name=(format!("want_{i}")) value="1"
                                                checked[it.state == HolderState::All] disabled[!may_write]
                                                data-keep=(keep_id) data-was=(state_word(it.state));
                                            label for=(box_id) {
                                                span.visually-hidden { (it.name) " on " (it.subscription) ": " }
                                                (match it.state { HolderState::All => "all have it", HolderState::Some => "some have it", HolderState::None => "none have it" })
                                            }
                                        }
                                    }
                                    td data-label="Assigned" {
                                        @if it.holders == 0 {
                                            "0"
                                        } @else {
                                            a href=(format!("{base}/manage-licenses/assigned?{}", form_urlencoded::Serializer::new(String::new()).append_pair("product", &it.product).append_pair("subscription", &it.subscription).finish())) {
                                                (it.holders) " of " (sel.selected)
                                                span.visually-hidden { " selected users hold " (it.name) " on " (it.subscription) }
                                            }
                                        }
                                    }
                                    td {
                                        @if it.available <= 0 {
                                            a href=(format!("{base}/licenses")) { "Buy more" span.visually-hidden { " " (it.name) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if may_write {
                        div.actions { button type="submit" { "Save" } }
                    }
                }
            }
        }
    };
    page("Manage licenses", Some(s), body)
}

async fn show_page(app: &App, s: &ConsoleSession, org: &str, status: StatusCode, notice: Option<Markup>) -> Response {
    let shown = async {
        let org = tenants::get_org(app, &s.caller, org).await?;
        let sel = manage::summarize_selection(app, &s.caller, &s.key, &org.id).await?;
        Ok::<_, Error>((org, sel))
    }
    .await;
    match shown {
        Ok((org, sel)) => (status, the_page(s, &org, &sel, notice)).into_response(),
        Err(e) => fail(s, e),
    }
}

/// `GET /ui/orgs/{org}/manage-licenses`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    show_page(&app, &s, &org, StatusCode::OK, None).await
}

/// The rows of the posted form: what each asks for everyone.
fn wishes(body: &[u8]) -> (String, Vec<ItemWish>) {
    use std::collections::BTreeMap;
    let mut csrf = String::new();
    // Per row index: (product\tsubscription, was, keep, ticked).
    let mut rows: BTreeMap<usize, (String, String, bool, bool)> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if k == "csrf" {
            csrf = v.into_owned();
            continue;
        }
        let Some((field, i)) = k.rsplit_once('_') else { continue };
        let Ok(i) = i.parse::<usize>() else { continue };
        let row = rows.entry(i).or_default();
        match field {
            "row" => row.0 = v.into_owned(),
            "was" => row.1 = v.into_owned(),
            "keep" => row.2 = v == "1",
            "want" => row.3 = v == "1",
            _ => {}
        }
    }
    let out = rows
        .into_values()
        .filter_map(|(key, was, keep, ticked)| {
            let (product, subscription) = key.split_once('\t')?;
            let want = if ticked {
                Want::All
            } else if was == "some" && keep {
                return None;
            } else {
                Want::None
            };
            Some(ItemWish {
                product: product.to_string(),
                subscription: subscription.to_string(),
                want,
            })
        })
        .collect();
    (csrf, out)
}

/// `POST /ui/orgs/{org}/manage-licenses`: **Save** starts the job and
/// opens its page; a refusal is shown above the form, nothing written.
pub async fn save(State(app): State<App>, signed_in: SignedIn, Path(org): Path<String>, body: Bytes) -> Response {
    let (csrf, wishes) = wishes(&body);
    if let Err(e) = signed_in.check_csrf(&csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    match manage::change_selection_licenses(&app, &s.caller, &s.key, &org, &wishes).await {
        Ok(job) => Redirect::to(&format!("/ui/jobs/{}", job.id)).into_response(),
        Err(e) => match beside_form(&e) {
            Some(status) => show_page(&app, s, &org, status, Some(refusal(&e))).await,
            None => fail(s, e),
        },
    }
}

/// `GET /ui/orgs/{org}/manage-licenses/assigned?product=&subscription=`:
/// the selected users that hold it.
pub async fn assigned(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let (mut product, mut subscription) = (String::new(), String::new());
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "product" => product = v.into_owned(),
            "subscription" => subscription = v.into_owned(),
            _ => {}
        }
    }
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let (n, users) = manage::selection_holders(&app, &s.caller, &s.key, &org.id, &product, &subscription, HOLDERS_SHOWN).await?;
        Ok::<_, Error>((org, n, users))
    }
    .await;
    let (org, n, users) = match shown {
        Ok(x) => x,
        Err(e) => return fail(&s, e),
    };
    let body = html! {
        (org_nav(&s, &org, OrgPage::Users))
        p { (n) " of the selected users hold " strong { (product) } " on subscription " (subscription) "." }
        table.stack {
            thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } } }
            tbody {
                @for u in &users {
                    tr {
                        td data-label="Email" { a href=(format!("/ui/orgs/{}/users/{}", org.id, u.id)) { (u.email) } }
                        td data-label="Name" { (u.display_name) }
                    }
                }
            }
        }
        @if n > users.len() as i64 { p.muted { "The first " (users.len()) " are shown." } }
        p { a href=(format!("/ui/orgs/{}/manage-licenses", org.id)) { "Back to Manage licenses" } }
    };
    page("Assigned", Some(&s), body).into_response()
}
