//! **Edit licenses** (`/ui/orgs/{org}/users/{user}/licenses/edit`): one
//! user's licenses as a form. Products are grouped by family, each with the
//! subscriptions that carry it; ticking adds, clearing removes, choosing
//! another subscription of a held product moves the user (the service data
//! stays), and each product's properties can be set. **Save** turns the
//! form into one licence change (`change_user_licenses`, the same use case
//! as the API's): all of it applies, or none, and every reason for a
//! refusal is shown above the form as the API words it.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::catalogue::{Product, PropertyName, Requirement};
use allot_domain::planner::{AddLicense, LicenseChange, Properties, RemoveLicense};
use allot_domain::types::ProductCode;
use allot_domain::Error;

use super::orgs::{org_nav, OrgPage};
use super::page::{page, refusal, HtmlError};
use super::session::{csrf_refused, same_secret, SignedIn};
use crate::app::admins::ConsoleSession;
use crate::app::catalogue;
use crate::app::licenses::{self, LicenseView, OverviewRow};
use crate::app::paging::PageQuery;
use crate::app::tenants::{self, OrgView, SiteView};
use crate::app::users::{self, UserView};
use crate::app::App;

const TITLE: &str = "Edit licenses";

/// What the page needs to know.
struct Facts {
    org: OrgView,
    user: UserView,
    held: Vec<LicenseView>,
    /// Seats per product and subscription.
    pools: Vec<OverviewRow>,
    /// The products shown: those the org has seats of or the user holds.
    products: Vec<Product>,
    sites: Vec<SiteView>,
}

async fn gather(app: &App, s: &ConsoleSession, org: &str, user: &str) -> Result<Facts, Error> {
    let org = tenants::get_org(app, &s.caller, org).await?;
    // The user first: another org's user is 404 for everybody, then the role.
    let user = users::get_user(app, &s.caller, &org.id, user).await?;
    s.caller.require(Action::WriteLicenses)?;
    let held = licenses::list_user_licenses(app, &s.caller, &org.id, &user.id).await?.items;
    let pools = licenses::list_org_licenses(app, &s.caller, &org.id).await?.items;
    let wanted: BTreeSet<&str> = pools
        .iter()
        .map(|p| p.product.as_str())
        .chain(held.iter().map(|h| h.product.as_str()))
        .collect();
    let mut products: Vec<Product> = catalogue::list_products(
        app,
        &s.caller,
        &PageQuery {
            limit: Some(1000),
            cursor: None,
        },
    )
    .await?
    .items
    .into_iter()
    .map(|p| p.product)
    .filter(|p| wanted.contains(p.code.as_str()))
    .collect();
    products.sort_by(|a, b| (a.family.as_str(), a.name.as_str()).cmp(&(b.family.as_str(), b.name.as_str())));
    let sites = tenants::list_sites(app, &s.caller, &org.id).await?.items;
    Ok(Facts {
        org,
        user,
        held,
        pools,
        products,
        sites,
    })
}

/// The form's values: which products are ticked, the subscription chosen
/// for each, and each product's properties.
#[derive(Debug, Default, Clone)]
struct Chosen {
    hold: BTreeSet<String>,
    subscription: BTreeMap<String, String>,
    properties: BTreeMap<(String, PropertyName), String>,
    add_required: bool,
}

impl Chosen {
    /// The form as the user's licenses are now.
    fn from_held(held: &[LicenseView]) -> Chosen {
        let mut c = Chosen::default();
        for h in held {
            c.hold.insert(h.product.clone());
            c.subscription.insert(h.product.clone(), h.subscription.clone());
            for (k, v) in &h.properties {
                c.properties.insert((h.product.clone(), *k), v.clone());
            }
        }
        c
    }

    /// The posted form (`hold`, `sub:<product>`, `prop:<product>:<name>`, `add_required`).
    fn parse(body: &[u8]) -> (String, Chosen) {
        let mut c = Chosen::default();
        let mut csrf = String::new();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "csrf" => csrf = v,
                "hold" => {
                    c.hold.insert(v);
                }
                "add_required" => c.add_required = v == "1",
                key => {
                    if let Some(product) = key.strip_prefix("sub:") {
                        c.subscription.insert(product.to_string(), v);
                    } else if let Some((product, name)) = key.strip_prefix("prop:").and_then(|r| r.split_once(':')) {
                        if let Some(name) = PropertyName::parse(name) {
                            if !v.is_empty() {
                                c.properties.insert((product.to_string(), name), v);
                            }
                        }
                    }
                }
            }
        }
        (csrf, c)
    }

    fn properties_of(&self, product: &str) -> Properties {
        self.properties
            .iter()
            .filter(|((p, _), _)| p == product)
            .map(|((_, k), v)| (*k, v.clone()))
            .collect()
    }

    /// The licence change that turns `held` into this form: a product
    /// cleared is removed; one ticked is added (from the subscription
    /// chosen, or any with a free seat); a held one with another
    /// subscription chosen is moved (removed and added in one change, so
    /// its service data stays); a held one with other properties is
    /// given them the same way, in its own subscription.
    fn change(&self, held: &[LicenseView]) -> Result<LicenseChange, Error> {
        let mut change = LicenseChange {
            add_required: self.add_required,
            ..LicenseChange::default()
        };
        let code = |p: &str| ProductCode::parse(p);
        for h in held {
            if !self.hold.contains(&h.product) {
                change.remove.push(RemoveLicense {
                    product: code(&h.product)?,
                    subscription: Some(h.subscription.clone()),
                });
            }
        }
        for p in &self.hold {
            let chosen = self.subscription.get(p).filter(|s| !s.is_empty()).cloned();
            let properties = self.properties_of(p);
            match held.iter().find(|h| &h.product == p) {
                None => change.add.push(AddLicense {
                    product: code(p)?,
                    subscription: chosen,
                    properties,
                }),
                Some(h) => {
                    let target = chosen.unwrap_or_else(|| h.subscription.clone());
                    if target != h.subscription || properties != h.properties {
                        change.remove.push(RemoveLicense {
                            product: code(p)?,
                            subscription: Some(h.subscription.clone()),
                        });
                        change.add.push(AddLicense {
                            product: code(p)?,
                            subscription: Some(target),
                            properties,
                        });
                    }
                }
            }
        }
        Ok(change)
    }
}

fn field_id(product: &str, what: &str) -> String {
    format!("{what}-{product}")
}

fn property_input(f: &Facts, c: &Chosen, product: &Product, name: PropertyName, need: Requirement) -> Markup {
    let code = product.code.as_str();
    let id = field_id(code, name.as_str());
    let field = format!("prop:{code}:{}", name.as_str());
    let value = c.properties.get(&(code.to_string(), name)).cloned().unwrap_or_default();
    let label = match need {
        Requirement::Required => format!("{} (required)", name.label()),
        Requirement::Optional => name.label().to_string(),
    };
    html! {
        div {
            label for=(id) { (label) }
            @match name {
                PropertyName::Site => {
                    select id=(id) name=(field) {
                        option value="" { "No site" }
                        @for site in &f.sites {
                            option value=(site.id) selected[value == site.id] {
                                (site.url)
                                @if !site.attendee_accounts_enabled { " (hosts only)" }
                            }
                        }
                    }
                }
                PropertyName::AccountType => {
                    select id=(id) name=(field) {
                        option value="" { "Not set" }
                        option value="host" selected[value == "host"] { "Host" }
                        option value="attendee" selected[value == "attendee"] { "Attendee" }
                    }
                }
                _ => {
                    input id=(id) type="text" name=(field) value=(value) maxlength="200"
                        autocomplete="off";
                }
            }
        }
    }
}

fn product_block(f: &Facts, c: &Chosen, product: &Product) -> Markup {
    let code = product.code.as_str();
    let held = f.held.iter().find(|h| h.product == code);
    let pools: Vec<&OverviewRow> = f.pools.iter().filter(|p| p.product == code).collect();
    let chosen_sub = c.subscription.get(code).cloned().unwrap_or_default();
    let hold_id = field_id(code, "hold");
    let sub_id = field_id(code, "sub");
    html! {
        div.product {
            label.check for=(hold_id) {
                input id=(hold_id) type="checkbox" name="hold" value=(code) checked[c.hold.contains(code)];
                (product.name)
            }
            @if !product.rules.requires.is_empty() {
                p.hint { "Requires " (product.rules.requires.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) "." }
            }
            div.details {
                div {
                    label for=(sub_id) { "Subscription" }
                    select id=(sub_id) name=(format!("sub:{code}")) {
                        @if held.is_none() {
                            option value="" { "Any with a free seat" }
                        }
                        @for p in &pools {
                            @let current = held.is_some_and(|h| h.subscription == p.subscription);
                            option value=(p.subscription) selected[chosen_sub == p.subscription] {
                                (p.subscription) " — " (p.available) " free"
                                @if current { " (current)" }
                            }
                        }
                        @if let Some(h) = held {
                            @if !pools.iter().any(|p| p.subscription == h.subscription) {
                                option value=(h.subscription) selected[chosen_sub == h.subscription] { (h.subscription) " (current)" }
                            }
                        }
                    }
                }
                @for (name, need) in &product.properties {
                    (property_input(f, c, product, *name, *need))
                }
            }
        }
    }
}

fn form(s: &ConsoleSession, f: &Facts, c: &Chosen, refused: Option<&Error>) -> Markup {
    let mut families: BTreeMap<&str, Vec<&Product>> = BTreeMap::new();
    for p in &f.products {
        families.entry(p.family.as_str()).or_default().push(p);
    }
    let action = format!("/ui/orgs/{}/users/{}/licenses/edit", f.org.id, f.user.id);
    html! {
        p { "Licenses of " strong { (f.user.email) } ". " a href=(format!("/ui/orgs/{}/users/{}", f.org.id, f.user.id)) { "Back to the user" } }
        @if let Some(e) = refused { (refusal(e)) }
        @if f.products.is_empty() {
            p.muted { "This organisation has no subscriptions, so there is nothing to assign." }
        } @else {
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                @for (family, products) in &families {
                    fieldset {
                        legend { (family) }
                        @for p in products { (product_block(f, c, p)) }
                    }
                }
                label.check for="add_required" {
                    input #add_required type="checkbox" name="add_required" value="1" checked[c.add_required];
                    "Also add the products that the chosen ones require"
                }
                div.actions { button type="submit" { "Save" } }
            }
        }
    }
}

fn edit_page(s: &ConsoleSession, f: &Facts, c: &Chosen, status: StatusCode, refused: Option<&Error>) -> Response {
    let body = html! {
        (org_nav(s, &f.org, OrgPage::Users))
        (form(s, f, c, refused))
    };
    (status, page(TITLE, Some(s), body)).into_response()
}

/// `GET /ui/orgs/{org}/users/{user}/licenses/edit`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn, Path((org, user)): Path<(String, String)>) -> Response {
    match gather(&app, &s, &org, &user).await {
        Ok(f) => {
            let c = Chosen::from_held(&f.held);
            edit_page(&s, &f, &c, StatusCode::OK, None)
        }
        Err(e) => HtmlError::new(e, &s.caller.request_id).into_response(),
    }
}

/// `POST /ui/orgs/{org}/users/{user}/licenses/edit`: **Save**.
pub async fn save(State(app): State<App>, SignedIn(s): SignedIn, Path((org, user)): Path<(String, String)>, body: Bytes) -> Response {
    let (csrf, chosen) = Chosen::parse(&body);
    if !same_secret(&csrf, &s.csrf_token) {
        return csrf_refused(&s.caller.request_id).into_response();
    }
    let f = match gather(&app, &s, &org, &user).await {
        Ok(f) => f,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let change = match chosen.change(&f.held) {
        Ok(c) => c,
        Err(e) => return edit_page(&s, &f, &chosen, StatusCode::UNPROCESSABLE_ENTITY, Some(&e)),
    };
    if change.is_empty() {
        let e = Error::validation("licenses", "Nothing to save: the form shows the user's licenses as they are.");
        return edit_page(&s, &f, &chosen, StatusCode::UNPROCESSABLE_ENTITY, Some(&e));
    }
    match licenses::change_user_licenses(&app, &s.caller, &f.org.id, &f.user.id, change).await {
        // A licence kept billed by queues is said on the user's page, with the way out.
        Ok(r) if !r.warnings.is_empty() => Redirect::to(&format!("/ui/orgs/{}/users/{}?billed=1", f.org.id, f.user.id)).into_response(),
        Ok(_) => Redirect::to(&format!("/ui/orgs/{}/users/{}", f.org.id, f.user.id)).into_response(),
        Err(e) => match super::page::beside_form(&e) {
            Some(status) => edit_page(&s, &f, &chosen, status, Some(&e)),
            None => HtmlError::new(e, &s.caller.request_id).into_response(),
        },
    }
}
