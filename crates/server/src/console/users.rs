//! **Users** of an org (`/ui/orgs/{org}/users`): search, filters, pages
//! with **First**, **Previous**, **Next**, **Last**, and a selection that
//! survives paging (kept on the server per session, see
//! `allot_store::selections`); `/ui/orgs/{org}/users/selected` lists it;
//! `/ui/orgs/{org}/users/{user}` is a user's summary.
//!
//! The check boxes sit in one form that htmx posts on every change and
//! swaps with the answer (the same table, its boxes and the **Selected
//! users (N)** count as the server now has them); without JavaScript the
//! **Update selection** button posts the same form.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::types::{UserKind, UserStatus};
use allot_domain::Error;
use allot_store::users::PageAt;

use super::orgs::{org_nav, OrgPage};
use super::page::{page, when, HtmlError};
use super::session::SignedIn;
use crate::app::admins::ConsoleSession;
use crate::app::tenants::OrgView;
use crate::app::users::{self, SelectionChange, UserBrowse, UserView, UsersPage};
use crate::app::{licenses, queues, tenants, App};

/// Users per page.
pub const PAGE_SIZE: i64 = 50;

/// The Users page's URL query, as given (values checked when used).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersQuery {
    pub q: String,
    pub status: String,
    pub kind: String,
    pub product: String,
    pub after: String,
    pub before: String,
    /// `last` for the last page.
    pub at: String,
}

impl UsersQuery {
    pub fn parse(raw: &str) -> UsersQuery {
        let mut u = UsersQuery::default();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "q" => u.q = v,
                "status" => u.status = v,
                "kind" => u.kind = v,
                "product" => u.product = v,
                "after" => u.after = v,
                "before" => u.before = v,
                "at" => u.at = v,
                _ => {}
            }
        }
        u
    }

    /// The filters only (a new page starts from the first).
    fn filters(&self) -> Vec<(&'static str, &str)> {
        [
            ("q", self.q.as_str()),
            ("status", &self.status),
            ("kind", &self.kind),
            ("product", &self.product),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// This query as a URL query string, with `extra` pairs.
    fn encode(&self, extra: &[(&str, &str)]) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.filters().into_iter().chain(extra.iter().copied()) {
            s.append_pair(k, v);
        }
        s.finish()
    }

    /// The query of the page shown, to come back to it.
    fn here(&self) -> String {
        let mut extra = Vec::new();
        if !self.after.is_empty() {
            extra.push(("after", self.after.as_str()));
        }
        if !self.before.is_empty() {
            extra.push(("before", self.before.as_str()));
        }
        if self.at == "last" {
            extra.push(("at", "last"));
        }
        self.encode(&extra)
    }

    fn browse(&self) -> Result<UserBrowse, Error> {
        let given = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        Ok(UserBrowse {
            q: given(&self.q),
            status: match given(&self.status) {
                None => None,
                Some(v) => Some(UserStatus::parse(&v).ok_or_else(|| Error::validation("status", "Choose a status from the list."))?),
            },
            kind: match given(&self.kind) {
                None => None,
                Some(v) => Some(UserKind::parse(&v).ok_or_else(|| Error::validation("kind", "Choose a kind from the list."))?),
            },
            product: given(&self.product),
        })
    }

    fn at(&self) -> PageAt {
        if !self.after.is_empty() {
            PageAt::After(self.after.clone())
        } else if !self.before.is_empty() {
            PageAt::Before(self.before.clone())
        } else if self.at == "last" {
            PageAt::Last
        } else {
            PageAt::First
        }
    }
}

/// Everything the Users page shows.
struct Shown {
    org: OrgView,
    query: UsersQuery,
    users: UsersPage,
    /// Products the org has seats of: (code, name).
    products: Vec<(String, String)>,
    selected_count: i64,
    selected: Vec<String>,
}

async fn gather(app: &App, s: &ConsoleSession, org: &str, query: UsersQuery) -> Result<Shown, Error> {
    let org = tenants::get_org(app, &s.caller, org).await?;
    let browse = query.browse()?;
    let users = users::browse_users(app, &s.caller, &org.id, &browse, &query.at(), PAGE_SIZE).await?;
    let mut products: Vec<(String, String)> = if s.caller.principal.may(Action::ReadLicenses) {
        licenses::list_org_licenses(app, &s.caller, &org.id)
            .await?
            .items
            .into_iter()
            .map(|r| (r.product, r.name))
            .collect()
    } else {
        Vec::new()
    };
    products.sort();
    products.dedup();
    let ids: Vec<String> = users.items.iter().map(|u| u.id.clone()).collect();
    let (selected_count, selected) = users::selection(app, &s.caller, &s.key, &org.id, &ids).await?;
    Ok(Shown {
        org,
        query,
        users,
        products,
        selected_count,
        selected,
    })
}

fn filters_form(sh: &Shown) -> Markup {
    let q = &sh.query;
    html! {
        form.toolbar method="get" action=(format!("/ui/orgs/{}/users", sh.org.id)) role="search" {
            div.field {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(q.q) maxlength="200" placeholder="Part of a name or email";
            }
            div.field {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "Any status" }
                    @for st in ["active", "pending", "inactive"] {
                        option value=(st) selected[q.status == st] { (st) }
                    }
                }
            }
            div.field {
                label for="kind" { "Kind" }
                select #kind name="kind" {
                    option value="" { "Any kind" }
                    @for k in ["internal", "external"] {
                        option value=(k) selected[q.kind == k] { (k) }
                    }
                }
            }
            div.field {
                label for="product" { "Product held" }
                select #product name="product" {
                    option value="" { "Any or none" }
                    @for (code, name) in &sh.products {
                        option value=(code) selected[&q.product == code] { (name) }
                    }
                }
            }
            div.field { button type="submit" { "Filter" } }
        }
    }
}

fn pager(sh: &Shown) -> Markup {
    let base = format!("/ui/orgs/{}/users", sh.org.id);
    let q = &sh.query;
    let link = |extra: &[(&str, &str)]| {
        let query = q.encode(extra);
        if query.is_empty() {
            base.clone()
        } else {
            format!("{base}?{query}")
        }
    };
    let first_id = sh.users.items.first().map(|u| u.id.as_str()).unwrap_or("");
    let last_id = sh.users.items.last().map(|u| u.id.as_str()).unwrap_or("");
    let (prev, next) = (sh.users.has_previous, sh.users.has_next);
    html! {
        nav.pager aria-label="Pages of users" {
            @if prev {
                a.button.secondary href=(link(&[])) { "First" }
                a.button.secondary href=(link(&[("before", first_id)])) rel="prev" { "Previous" }
            } @else {
                span.disabled aria-disabled="true" { "First" }
                span.disabled aria-disabled="true" { "Previous" }
            }
            @if next {
                a.button.secondary href=(link(&[("after", last_id)])) rel="next" { "Next" }
                a.button.secondary href=(link(&[("at", "last")])) { "Last" }
            } @else {
                span.disabled aria-disabled="true" { "Next" }
                span.disabled aria-disabled="true" { "Last" }
            }
        }
    }
}

/// The selection form: the table with its check boxes and the count.
fn selection_form(s: &ConsoleSession, sh: &Shown) -> Markup {
    let action = format!("/ui/orgs/{}/users/selection", sh.org.id);
    let all_on_page = !sh.users.items.is_empty() && sh.users.items.iter().all(|u| sh.selected.contains(&u.id));
    html! {
        form #selection method="post" action=(action) hx-post=(action) hx-trigger="change" hx-target="this" hx-swap="outerHTML" {
            input type="hidden" name="csrf" value=(s.csrf_token);
            input type="hidden" name="page" value=(sh.query.here());
            input type="hidden" name="all_was" value=(if all_on_page { "1" } else { "0" });
            p.selection-bar {
                a #selected-count href=(format!("/ui/orgs/{}/users/selected", sh.org.id)) { "Selected users (" (sh.selected_count) ")" }
                @if sh.selected_count > 0 && s.caller.principal.may(Action::ReadLicenses) {
                    " · " a href=(format!("/ui/orgs/{}/manage-licenses", sh.org.id)) { "Manage licenses" }
                }
            }
            @if sh.users.items.is_empty() {
                p.muted { "No users match." }
            } @else {
                table.stack {
                    caption.visually-hidden { "Users, by id" }
                    thead {
                        tr {
                            th.pick scope="col" {
                                input #all_on_page type="checkbox" name="all_on_page" value="1" checked[all_on_page];
                                label.visually-hidden for="all_on_page" { "Select all on this page" }
                            }
                            th scope="col" { "Email" }
                            th scope="col" { "Name" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Status" }
                            th scope="col" { "Usage location" }
                        }
                    }
                    tbody {
                        @for u in &sh.users.items {
                            (user_row(&sh.org, u, sh.selected.contains(&u.id)))
                        }
                    }
                }
            }
            div.row-actions {
                button.secondary type="submit" { "Update selection" }
                button.secondary type="submit" name="all_matching" value="1" { "Select every user that matches" }
                @if sh.selected_count > 0 {
                    button.secondary type="submit" name="clear" value="1" { "Clear selection" }
                }
            }
        }
    }
}

fn user_row(org: &OrgView, u: &UserView, selected: bool) -> Markup {
    let id = format!("pick-{}", u.id);
    html! {
        tr {
            td.pick {
                input type="hidden" name="on_page" value=(u.id);
                input id=(id) type="checkbox" name="selected" value=(u.id) checked[selected];
                label.visually-hidden for=(id) { "Select " (u.email) }
            }
            td data-label="Email" { a href=(format!("/ui/orgs/{}/users/{}", org.id, u.id)) { (u.email) } }
            td data-label="Name" { (u.display_name) }
            td data-label="Kind" { (u.kind.as_str()) }
            td data-label="Status" { (u.status.as_str()) }
            td data-label="Usage location" { (u.usage_location.as_deref().unwrap_or("—")) }
        }
    }
}

fn users_page(s: &ConsoleSession, sh: &Shown) -> Markup {
    let body = html! {
        (org_nav(s, &sh.org, OrgPage::Users))
        (filters_form(sh))
        (selection_form(s, sh))
        (pager(sh))
    };
    page("Users", Some(s), body)
}

/// `GET /ui/orgs/{org}/users`.
pub async fn list(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let query = UsersQuery::parse(raw.as_deref().unwrap_or(""));
    match gather(&app, &s, &org, query).await {
        Ok(sh) => users_page(&s, &sh).into_response(),
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

/// The selection form's fields.
#[derive(Debug, Default)]
struct SelectionForm {
    csrf: String,
    page: String,
    on_page: Vec<String>,
    selected: Vec<String>,
    all_on_page: bool,
    all_was: bool,
    all_matching: bool,
    clear: bool,
}

impl SelectionForm {
    fn parse(body: &[u8]) -> SelectionForm {
        let mut f = SelectionForm::default();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => f.csrf = v,
                "page" => f.page = v,
                "on_page" => f.on_page.push(v),
                "selected" => f.selected.push(v),
                "all_on_page" => f.all_on_page = v == "1",
                "all_was" => f.all_was = v == "1",
                "all_matching" => f.all_matching = v == "1",
                "clear" => f.clear = v == "1",
                _ => {}
            }
        }
        f
    }

    /// What the form asks: the header box, when it changed, speaks for the
    /// whole page; otherwise each row's box does.
    fn change(&self, query: &UsersQuery) -> Result<SelectionChange, Error> {
        let mut c = SelectionChange {
            clear: self.clear,
            ..SelectionChange::default()
        };
        if self.clear {
            return Ok(c);
        }
        if self.all_matching {
            c.add_matching = Some(query.browse()?);
            return Ok(c);
        }
        if self.all_on_page != self.all_was {
            if self.all_on_page {
                c.add = self.on_page.clone();
            } else {
                c.remove = self.on_page.clone();
            }
            return Ok(c);
        }
        c.add = self.selected.iter().filter(|id| self.on_page.contains(id)).cloned().collect();
        c.remove = self.on_page.iter().filter(|id| !self.selected.contains(id)).cloned().collect();
        Ok(c)
    }
}

/// `POST /ui/orgs/{org}/users/selection`: htmx gets the form back as it
/// now is; a plain post goes back to the page it came from.
pub async fn change_selection(
    State(app): State<App>,
    signed_in: SignedIn,
    headers: HeaderMap,
    Path(org): Path<String>,
    body: Bytes,
) -> Response {
    let f = SelectionForm::parse(&body);
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let query = UsersQuery::parse(&f.page);
    let changed = match f.change(&query) {
        Ok(c) => users::change_selection(&app, &s.caller, &s.key, &org, &c).await,
        Err(e) => Err(e),
    };
    if let Err(e) = changed {
        return HtmlError::new(e, &s.caller.request_id).into_response();
    }
    if headers.contains_key("hx-request") {
        return match gather(&app, s, &org, query).await {
            Ok(sh) => selection_form(s, &sh).into_response(),
            Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
        };
    }
    let here = query.here();
    let back = if here.is_empty() {
        format!("/ui/orgs/{org}/users")
    } else {
        format!("/ui/orgs/{org}/users?{here}")
    };
    Redirect::to(&back).into_response()
}

/// `GET /ui/orgs/{org}/users/selected`: only the selected users, with
/// **Manage licenses** for them.
pub async fn selected(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let after = UsersQuery::parse(raw.as_deref().unwrap_or("")).after;
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let page = users::list_selected(&app, &s.caller, &s.key, &org.id, &after, PAGE_SIZE).await?;
        let (n, _) = users::selection(&app, &s.caller, &s.key, &org.id, &[]).await?;
        Ok::<_, Error>((org, page, n))
    }
    .await;
    let (org, page_of, n) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let base = format!("/ui/orgs/{}/users", org.id);
    let body = html! {
        (org_nav(&s, &org, OrgPage::Users))
        p { (n) " users selected. " a href=(base) { "Back to Users" } }
        @if page_of.items.is_empty() {
            p.muted { "No users are selected. Tick them on the Users page." }
        } @else {
            @if s.caller.principal.may(Action::ReadLicenses) {
                p { a.button href=(format!("/ui/orgs/{}/manage-licenses", org.id)) { "Manage licenses" } }
            }
            table.stack {
                thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Status" } } }
                tbody {
                    @for u in &page_of.items {
                        tr {
                            td data-label="Email" { a href=(format!("{base}/{}", u.id)) { (u.email) } }
                            td data-label="Name" { (u.display_name) }
                            td data-label="Status" { (u.status.as_str()) }
                        }
                    }
                }
            }
            @if let Some(next) = &page_of.next_cursor {
                nav.pager aria-label="Pages of selected users" {
                    a.button.secondary href=(format!("{base}/selected?after={next}")) rel="next" { "Next" }
                }
            }
            form method="post" action=(format!("{base}/selection")) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                input type="hidden" name="page" value="";
                button.secondary type="submit" name="clear" value="1" { "Clear selection" }
            }
        }
    };
    page("Selected users", Some(&s), body).into_response()
}

/// `GET /ui/orgs/{org}/users/{user}`: the user's summary.
pub async fn summary(
    State(app): State<App>,
    SignedIn(s): SignedIn,
    Path((org, user)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let after_change = form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()).any(|(k, v)| k == "billed" && v == "1");
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let u = users::get_user(&app, &s.caller, &org.id, &user).await?;
        let held = licenses::list_user_licenses(&app, &s.caller, &org.id, &u.id).await?;
        let groups = tenants::list_groups(&app, &s.caller, &org.id).await?.items;
        let in_queues = if s.caller.principal.may(Action::ManageQueues) {
            Some(queues::list_user_queues(&app, &s.caller, &org.id, &u.id).await?.items)
        } else {
            None
        };
        let names = licenses::list_org_licenses(&app, &s.caller, &org.id).await?.items;
        let billed = if after_change && s.caller.principal.may(Action::ManageQueues) {
            queues::billing_warnings(&app, &s.caller, &org.id, &u.id).await?
        } else {
            Vec::new()
        };
        Ok::<_, Error>((org, u, held, groups, in_queues, names, billed))
    }
    .await;
    let (org, u, held, groups, in_queues, names, billed) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let product_name = |code: &str| {
        names
            .iter()
            .find(|r| r.product == code)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| code.to_string())
    };
    let group_names: Vec<String> = u
        .groups
        .iter()
        .map(|g| {
            groups
                .iter()
                .find(|x| &x.id == g)
                .map(|x| x.name.clone())
                .unwrap_or_else(|| g.clone())
        })
        .collect();
    let edit = format!("/ui/orgs/{}/users/{}/licenses/edit", org.id, u.id);
    let title = if u.display_name.is_empty() {
        u.email.clone()
    } else {
        u.display_name.clone()
    };
    let body = html! {
        (org_nav(&s, &org, OrgPage::Users))
        @for w in &billed {
            div.errors role="status" {
                p {
                    strong { (product_name(&w.product)) } " stays billed while " (u.email) " is a member of "
                    (w.queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>().join(", ")) "."
                }
                form method="post" action=(format!("/ui/orgs/{}/users/{}/queues/leave", org.id, u.id)) {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    p.muted { "Remove from all queues takes the user out of every queue and removes the licenses the queues kept billed, in one step." }
                    button type="submit" { "Remove from all queues" }
                }
            }
        }
        div.panel {
            dl.facts {
                dt { "Email" } dd { (u.email) }
                dt { "Name" } dd { (if u.display_name.is_empty() { "—" } else { &u.display_name }) }
                dt { "Kind" } dd { (u.kind.as_str()) }
                dt { "Status" } dd { (u.status.as_str()) }
                dt { "Usage location" } dd { (u.usage_location.as_deref().or(org.default_usage_location.as_deref()).unwrap_or("not set")) }
                dt { "Groups" } dd { @if group_names.is_empty() { "none" } @else { (group_names.join(", ")) } }
                @if let Some(qs) = &in_queues {
                    dt { "Queues" } dd { @if qs.is_empty() { "none" } @else { (qs.iter().map(|q| q.name.as_str()).collect::<Vec<_>>().join(", ")) } }
                }
            }
        }
        h2 { "Licenses" }
        @if held.items.is_empty() {
            p.muted { "No licenses." }
        } @else {
            table.stack {
                thead { tr { th scope="col" { "Product" } th scope="col" { "Subscription" } th scope="col" { "Properties" } th scope="col" { "Assigned" } } }
                tbody {
                    @for l in &held.items {
                        tr {
                            th scope="row" data-label="Product" { (product_name(&l.product)) }
                            td data-label="Subscription" { (l.subscription) }
                            td data-label="Properties" {
                                @if l.properties.is_empty() { "—" } @else {
                                    (l.properties.iter().map(|(k, v)| format!("{}: {v}", k.as_str())).collect::<Vec<_>>().join(", "))
                                }
                            }
                            td data-label="Assigned" { (when(&l.assigned_at)) }
                        }
                    }
                }
            }
        }
        @if s.caller.principal.may(Action::WriteLicenses) {
            p { a.button href=(edit) { "Edit licenses" } }
        }
        h2 { "Retained service data" }
        @if held.service_data.is_empty() {
            p.muted { "None." }
        } @else {
            table.stack {
                thead { tr { th scope="col" { "Family" } th scope="col" { "Data" } th scope="col" { "Deleted on" } } }
                tbody {
                    @for d in &held.service_data {
                        tr {
                            th scope="row" data-label="Family" { (d.family) }
                            td data-label="Data" { (d.data.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")) }
                            td data-label="Deleted on" {
                                @match &d.retain_until {
                                    Some(t) => { (when(t)) }
                                    None => { "kept while a license of the family is held" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&title, Some(&s), body).into_response()
}

/// `POST /ui/orgs/{org}/users/{user}/queues/leave`: **Remove from all
/// queues**, and off the licences they billed, in one step.
pub async fn leave_queues(
    State(app): State<App>,
    signed_in: SignedIn,
    Path((org, user)): Path<(String, String)>,
    axum::Form(f): axum::Form<super::session::CsrfForm>,
) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let q = queues::LeaveQuery {
        remove_licenses: Some(s.caller.principal.may(Action::WriteLicenses)),
    };
    match queues::leave_all_queues(&app, &s.caller, &org, &user, &q).await {
        Ok(_) => Redirect::to(&format!("/ui/orgs/{org}/users/{user}")).into_response(),
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}
