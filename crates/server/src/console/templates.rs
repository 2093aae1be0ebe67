//! **License templates** of an org (`/ui/orgs/{org}/templates`): the list,
//! a form to create one and a page to edit one (name, scope: the whole org
//! or one group, enabled, and the products it gives, each on a chosen
//! subscription or on any with a free seat), and **Apply to existing
//! users** with **Keep existing licenses**, previewed first (a dry-run job
//! whose page offers **Apply**) or run at once. Each calls the same use
//! cases as `/api/v1/orgs/{org}/license-templates`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::templates::TemplateLicense;
use allot_domain::types::ProductCode;
use allot_domain::Error;

use super::orgs::{org_nav, OrgPage};
use super::page::{beside_form, page, refusal, HtmlError};
use super::session::{same_secret, SignedIn};
use crate::app::admins::ConsoleSession;
use crate::app::etag::IfMatch;
use crate::app::licenses::OverviewRow;
use crate::app::templates::{self, ApplyInput, GroupScope, TemplateInput, TemplatePatch, TemplateScope, TemplateView};
use crate::app::tenants::{GroupView, OrgView};
use crate::app::{licenses, tenants, App};

fn fail(s: &ConsoleSession, e: Error) -> Response {
    HtmlError::new(e, &s.caller.request_id).into_response()
}

/// The template form as typed (kept when a save is refused).
#[derive(Debug, Clone, Default)]
struct Typed {
    csrf: String,
    name: String,
    /// `org` or a group's id.
    scope: String,
    enabled: bool,
    /// `product\tsubscription` (subscription empty: any).
    licenses: Vec<String>,
    etag: String,
}

impl Typed {
    fn parse(body: &[u8]) -> Typed {
        let mut t = Typed::default();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => t.csrf = v,
                "name" => t.name = v,
                "scope" => t.scope = v,
                "enabled" => t.enabled = v == "1",
                "license" => t.licenses.push(v),
                "etag" => t.etag = v,
                _ => {}
            }
        }
        t
    }

    fn of(v: &TemplateView) -> Typed {
        Typed {
            csrf: String::new(),
            name: v.name.clone(),
            scope: match &v.scope {
                TemplateScope::Group(GroupScope { group }) => group.clone(),
                TemplateScope::Named(n) => n.clone(),
            },
            enabled: v.enabled,
            licenses: v
                .licenses
                .iter()
                .map(|l| format!("{}\t{}", l.product, l.subscription.as_deref().unwrap_or("")))
                .collect(),
            etag: v.etag.clone(),
        }
    }

    fn scope(&self) -> TemplateScope {
        if self.scope.is_empty() || self.scope == "org" {
            TemplateScope::Named("org".into())
        } else {
            TemplateScope::Group(GroupScope { group: self.scope.clone() })
        }
    }

    fn licenses(&self) -> Result<Vec<TemplateLicense>, Error> {
        self.licenses
            .iter()
            .map(|l| {
                let (p, s) = l.split_once('\t').unwrap_or((l.as_str(), ""));
                Ok(TemplateLicense {
                    product: ProductCode::parse(p)?,
                    subscription: Some(s.to_string()).filter(|s| !s.is_empty()),
                })
            })
            .collect()
    }
}

/// What the form offers: the org's groups and its products on each subscription.
struct Choices {
    groups: Vec<GroupView>,
    rows: Vec<OverviewRow>,
}

async fn choices(app: &App, s: &ConsoleSession, org: &str) -> Result<Choices, Error> {
    Ok(Choices {
        groups: tenants::list_groups(app, &s.caller, org).await?.items,
        rows: licenses::list_org_licenses(app, &s.caller, org).await?.items,
    })
}

fn template_form(s: &ConsoleSession, action: &str, c: &Choices, t: &Typed, submit: &str) -> Markup {
    let mut products: Vec<(&str, &str)> = c.rows.iter().map(|r| (r.product.as_str(), r.name.as_str())).collect();
    products.sort();
    products.dedup();
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(s.csrf_token);
            input type="hidden" name="etag" value=(t.etag);
            label for="tpl-name" { "Name" }
            input #tpl-name type="text" name="name" value=(t.name) maxlength="200" required;
            label for="tpl-scope" { "For" }
            select #tpl-scope name="scope" {
                option value="org" selected[t.scope.is_empty() || t.scope == "org"] { "Every new user of the organisation" }
                @for g in &c.groups {
                    option value=(g.id) selected[t.scope == g.id] { "Members of the group " (g.name) }
                }
            }
            label.check {
                input type="checkbox" name="enabled" value="1" checked[t.enabled];
                "Enabled (new users get it when they are created)"
            }
            fieldset {
                legend { "Products it gives" }
                @if products.is_empty() {
                    p.muted { "The organisation has no subscriptions yet." }
                }
                @for (code, name) in &products {
                    div.product {
                        @let any = format!("{code}\t");
                        @let any_id = format!("lic-{code}-any");
                        label.check for=(any_id) {
                            input id=(any_id) type="checkbox" name="license" value=(any) checked[t.licenses.contains(&any)];
                            (name) " — any subscription with a free seat"
                        }
                        @for r in c.rows.iter().filter(|r| r.product == *code) {
                            @let v = format!("{code}\t{}", r.subscription);
                            @let id = format!("lic-{code}-{}", r.subscription);
                            label.check.hint for=(id) {
                                input id=(id) type="checkbox" name="license" value=(v) checked[t.licenses.contains(&v)];
                                "on subscription " (r.subscription) " (" (r.available) " free)"
                            }
                        }
                    }
                }
            }
            div.actions { button type="submit" { (submit) } }
        }
    }
}

fn scope_text(v: &TemplateView, groups: &[GroupView]) -> String {
    match &v.scope {
        TemplateScope::Group(GroupScope { group }) => format!(
            "Members of {}",
            groups.iter().find(|g| &g.id == group).map(|g| g.name.as_str()).unwrap_or(group)
        ),
        TemplateScope::Named(_) => "Whole organisation".to_string(),
    }
}

fn apply_form(s: &ConsoleSession, org: &OrgView, v: &TemplateView) -> Markup {
    let keep_id = format!("keep-{}", v.id);
    html! {
        form.inline method="post" action=(format!("/ui/orgs/{}/templates/{}/apply", org.id, v.id)) {
            input type="hidden" name="csrf" value=(s.csrf_token);
            label.check for=(keep_id) {
                input id=(keep_id) type="checkbox" name="keep" value="1" checked;
                "Keep existing licenses"
            }
            button.small type="submit" name="run" value="preview" { "Preview" span.visually-hidden { " " (v.name) } }
            button.small.secondary type="submit" name="run" value="apply" { "Apply to existing users" span.visually-hidden { " (" (v.name) ")" } }
        }
    }
}

async fn list_page(
    app: &App,
    s: &ConsoleSession,
    org: &str,
    status: StatusCode,
    notice: Option<Markup>,
    typed: Option<&Typed>,
) -> Response {
    let shown = async {
        let org = tenants::get_org(app, &s.caller, org).await?;
        let list = templates::list_license_templates(app, &s.caller, &org.id).await?.items;
        let c = choices(app, s, &org.id).await?;
        Ok::<_, Error>((org, list, c))
    }
    .await;
    let (org, list, c) = match shown {
        Ok(x) => x,
        Err(e) => return fail(s, e),
    };
    let may_write = s.caller.principal.may(Action::WriteLicenses);
    let fresh = Typed {
        enabled: true,
        ..Typed::default()
    };
    let body = html! {
        (org_nav(s, &org, OrgPage::Templates))
        @if let Some(n) = &notice { (n) }
        @if list.is_empty() {
            p.muted { "No templates yet. A template gives new users their licenses when they are created, and can be given to existing users." }
        } @else {
            table.stack {
                thead {
                    tr {
                        th scope="col" { "Template" }
                        th scope="col" { "For" }
                        th scope="col" { "Enabled" }
                        th scope="col" { "Products" }
                        @if may_write { th scope="col" { "Apply to existing users" } }
                    }
                }
                tbody {
                    @for v in &list {
                        tr {
                            th scope="row" data-label="Template" {
                                @if may_write { a href=(format!("/ui/orgs/{}/templates/{}", org.id, v.id)) { (v.name) } } @else { (v.name) }
                            }
                            td data-label="For" { (scope_text(v, &c.groups)) }
                            td data-label="Enabled" { (if v.enabled { "yes" } else { "no" }) }
                            td data-label="Products" {
                                (v.licenses.iter().map(|l| match &l.subscription {
                                    Some(sub) => format!("{} on {sub}", l.product),
                                    None => l.product.to_string(),
                                }).collect::<Vec<_>>().join(", "))
                            }
                            @if may_write { td data-label="Apply to existing users" { (apply_form(s, &org, v)) } }
                        }
                    }
                }
            }
        }
        @if may_write {
            details.buy open[typed.is_some() || list.is_empty()] {
                summary { "New template" }
                (template_form(s, &format!("/ui/orgs/{}/templates", org.id), &c, typed.unwrap_or(&fresh), "Create template"))
            }
        }
    };
    (status, page("License templates", Some(s), body)).into_response()
}

/// `GET /ui/orgs/{org}/templates`.
pub async fn list(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    list_page(&app, &s, &org, StatusCode::OK, None, None).await
}

/// `POST /ui/orgs/{org}/templates`: creates a template.
pub async fn create(State(app): State<App>, signed_in: SignedIn, Path(org): Path<String>, body: Bytes) -> Response {
    let t = Typed::parse(&body);
    if let Err(e) = signed_in.check_csrf(&t.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let made = match t.licenses() {
        Ok(licenses) => {
            let input = TemplateInput {
                name: t.name.clone(),
                scope: t.scope(),
                enabled: t.enabled,
                licenses,
            };
            templates::create_license_template(&app, &s.caller, &org, input).await
        }
        Err(e) => Err(e),
    };
    match made {
        Ok(_) => Redirect::to(&format!("/ui/orgs/{org}/templates")).into_response(),
        Err(e) => match beside_form(&e) {
            Some(status) => list_page(&app, s, &org, status, Some(refusal(&e)), Some(&t)).await,
            None => fail(s, e),
        },
    }
}

async fn edit_page(
    app: &App,
    s: &ConsoleSession,
    org: &str,
    tpl: &str,
    status: StatusCode,
    notice: Option<Markup>,
    typed: Option<Typed>,
) -> Response {
    let shown = async {
        let org = tenants::get_org(app, &s.caller, org).await?;
        s.caller.require(Action::WriteLicenses)?;
        let v = templates::get_license_template(app, &s.caller, &org.id, tpl).await?;
        let c = choices(app, s, &org.id).await?;
        Ok::<_, Error>((org, v, c))
    }
    .await;
    let (org, v, c) = match shown {
        Ok(x) => x,
        Err(e) => return fail(s, e),
    };
    let t = typed.unwrap_or_else(|| Typed::of(&v));
    let body = html! {
        (org_nav(s, &org, OrgPage::Templates))
        @if let Some(n) = &notice { (n) }
        div.panel {
            (template_form(s, &format!("/ui/orgs/{}/templates/{}", org.id, v.id), &c, &t, "Save"))
        }
        p { a href=(format!("/ui/orgs/{}/templates", org.id)) { "All license templates" } }
    };
    (status, page("Edit license template", Some(s), body)).into_response()
}

/// `GET /ui/orgs/{org}/templates/{tpl}`: the edit form.
pub async fn edit(State(app): State<App>, SignedIn(s): SignedIn, Path((org, tpl)): Path<(String, String)>) -> Response {
    edit_page(&app, &s, &org, &tpl, StatusCode::OK, None, None).await
}

/// `POST /ui/orgs/{org}/templates/{tpl}`: saves the edit, only over the
/// template as it was read (a change by someone else meanwhile is refused).
pub async fn save(State(app): State<App>, signed_in: SignedIn, Path((org, tpl)): Path<(String, String)>, body: Bytes) -> Response {
    let t = Typed::parse(&body);
    if let Err(e) = signed_in.check_csrf(&t.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    let saved = match t.licenses() {
        Ok(licenses) => {
            let patch = TemplatePatch {
                name: Some(t.name.clone()),
                scope: Some(t.scope()),
                enabled: Some(t.enabled),
                licenses: Some(licenses),
            };
            // The form carries the version it was read at; a post without one is unconditional.
            let if_match = if t.etag.is_empty() {
                IfMatch::none()
            } else {
                IfMatch::parse(&format!("\"{}\"", t.etag))
            };
            templates::update_license_template(&app, &s.caller, &org, &tpl, patch, &if_match).await
        }
        Err(e) => Err(e),
    };
    match saved {
        Ok(_) => Redirect::to(&format!("/ui/orgs/{org}/templates")).into_response(),
        Err(e) => match beside_form(&e) {
            Some(status) => edit_page(&app, s, &org, &tpl, status, Some(refusal(&e)), Some(t)).await,
            None => fail(s, e),
        },
    }
}

/// `POST /ui/orgs/{org}/templates/{tpl}/apply`: **Preview** or **Apply to
/// existing users**, with **Keep existing licenses**; opens the job.
pub async fn apply(State(app): State<App>, signed_in: SignedIn, Path((org, tpl)): Path<(String, String)>, body: Bytes) -> Response {
    let (mut csrf, mut keep, mut preview) = (String::new(), false, true);
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "csrf" => csrf = v.into_owned(),
            "keep" => keep = v == "1",
            "run" => preview = v != "apply",
            _ => {}
        }
    }
    let s = &signed_in.0;
    if !same_secret(&csrf, &s.csrf_token) {
        return super::session::csrf_refused(&s.caller.request_id).into_response();
    }
    let input = ApplyInput {
        existing_users: true,
        retain_existing: keep,
        dry_run: preview,
    };
    match templates::apply_license_template(&app, &s.caller, &org, &tpl, input).await {
        Ok(job) => Redirect::to(&format!("/ui/jobs/{}", job.id)).into_response(),
        Err(e) => match beside_form(&e) {
            Some(status) => list_page(&app, s, &org, status, Some(refusal(&e)), None).await,
            None => fail(s, e),
        },
    }
}
