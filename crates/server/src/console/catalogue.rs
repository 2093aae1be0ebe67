//! **Catalogue** (`/ui/products`): the products, their families, features,
//! rules and properties; a product's create and edit forms; and the whole
//! catalogue as one document, previewed (a dry run) or applied. Every
//! signed-in admin reads it; only the provider's admins see the forms and
//! may post them. The validation is the API's: the same use cases
//! (`create_product`, `update_product`, `apply_catalogue`) give the same
//! sentences, shown above the form that was refused, its values kept.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::catalogue::{Product, ProductRules, PropertyName, Requirement};
use allot_domain::types::{CountryCode, ProductCode};
use allot_domain::{Code, Error, Violation};

use super::page::{page, refusal, HtmlError};
use super::session::SignedIn;
use crate::app::admins::ConsoleSession;
use crate::app::catalogue::{self, CatalogueChanges, CatalogueDocument, ProductInput, ProductPatch};
use crate::app::etag::IfMatch;
use crate::app::paging::PageQuery;
use crate::app::App;

const TITLE: &str = "Catalogue";

fn fail(s: &ConsoleSession, e: Error) -> Response {
    HtmlError::new(e, &s.caller.request_id).into_response()
}

fn codes(list: &[ProductCode]) -> String {
    list.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

fn rules_text(r: &ProductRules) -> Vec<String> {
    let mut out = Vec::new();
    if r.exclusive_in_family {
        out.push("one per family".to_string());
    }
    if !r.requires.is_empty() {
        out.push(format!("requires {}", codes(&r.requires)));
    }
    if !r.excludes.is_empty() {
        out.push(format!("excludes {}", codes(&r.excludes)));
    }
    if !r.compatible_with.is_empty() {
        out.push(format!("compatible with {}", codes(&r.compatible_with)));
    }
    if let Some(l) = &r.locations {
        out.push(format!("sold in {}", l.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")));
    }
    out
}

/// The catalogue as the document `PUT /api/v1/catalogue` takes.
fn document_of(products: &[Product]) -> String {
    let doc = serde_json::json!({ "products": products });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

async fn list_page(app: &App, s: &ConsoleSession, status: StatusCode, document: Option<&str>, outcome: Option<Markup>) -> Response {
    let products: Vec<Product> = match catalogue::list_products(
        app,
        &s.caller,
        &PageQuery {
            limit: Some(1000),
            cursor: None,
        },
    )
    .await
    {
        Ok(p) => p.items.into_iter().map(|v| v.product).collect(),
        Err(e) => return fail(s, e),
    };
    let may_write = s.caller.principal.may(Action::WriteCatalogue);
    let doc = document.map(str::to_string).unwrap_or_else(|| document_of(&products));
    let body = html! {
        @if may_write {
            p { a.button href="/ui/products/new" { "Create a product" } }
        }
        @if products.is_empty() {
            p.muted { "The catalogue is empty." }
        } @else {
            table.stack {
                caption.muted { "Products by code" }
                thead {
                    tr {
                        th scope="col" { "Product" }
                        th scope="col" { "Family" }
                        th scope="col" { "Features" }
                        th scope="col" { "Rules" }
                        th scope="col" { "Properties" }
                        th scope="col" { "Service data kept" }
                        @if may_write { th scope="col" { span.muted { "Action" } } }
                    }
                }
                tbody {
                    @for p in &products {
                        tr {
                            th scope="row" data-label="Product" { (p.name) br; span.muted { (p.code.as_str()) } }
                            td data-label="Family" { (p.family.as_str()) }
                            td data-label="Features" { (p.features.join(", ")) }
                            td data-label="Rules" { @let r = rules_text(&p.rules); @if r.is_empty() { "none" } @else { (r.join("; ")) } }
                            td data-label="Properties" {
                                @if p.properties.is_empty() { "none" } @else {
                                    (p.properties.iter().map(|(k, v)| format!("{} ({})", k.as_str(), if *v == Requirement::Required { "required" } else { "optional" })).collect::<Vec<_>>().join(", "))
                                }
                            }
                            td data-label="Service data kept" { (p.retention_days) " days" }
                            @if may_write {
                                td { a href=(format!("/ui/products/{}/edit", p.code.as_str())) { "Edit" span.visually-hidden { " " (p.name) } } }
                            }
                        }
                    }
                }
            }
        }
        @if may_write {
            h2 #document { "The whole catalogue" }
            @if let Some(o) = outcome { (o) }
            div.panel {
                p.muted { "Every product as one JSON document. Products not listed are left alone. Preview says what would change; Apply changes all of it or nothing." }
                form method="post" action="/ui/products/document" {
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    label for="doc" { "Catalogue document (JSON)" }
                    textarea #doc name="document" rows="16" spellcheck="false" { (doc) }
                    div.actions.row-actions {
                        button type="submit" name="apply" value="0" { "Preview" }
                        button.secondary type="submit" name="apply" value="1" { "Apply" }
                    }
                }
            }
        }
    };
    (status, page(TITLE, Some(s), body)).into_response()
}

/// `GET /ui/products`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn) -> Response {
    list_page(&app, &s, StatusCode::OK, None, None).await
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct DocumentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    document: String,
    #[serde(default)]
    apply: String,
}

fn changes(c: &CatalogueChanges) -> Markup {
    let verb = if c.dry_run { "would be" } else { "were" };
    html! {
        div.panel role="status" {
            p { strong { (if c.dry_run { "Preview: nothing is changed yet." } else { "Applied." }) } }
            ul {
                li { (c.created.len()) " " (verb) " created" @if !c.created.is_empty() { ": " (codes(&c.created)) } }
                li { (c.changed.len()) " " (verb) " changed" @if !c.changed.is_empty() { ": " (codes(&c.changed)) } }
                li { (c.left_alone.len()) " left alone" }
            }
        }
    }
}

/// `POST /ui/products/document`: preview or apply the whole catalogue.
pub async fn document(State(app): State<App>, signed_in: SignedIn, Form(f): Form<DocumentForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    if let Err(e) = s.caller.require(Action::WriteCatalogue) {
        return fail(s, e);
    }
    let dry_run = f.apply != "1";
    let parsed: Result<CatalogueDocument, Error> = serde_json::from_str(&f.document).map_err(|e| {
        Error::new(
            Code::ValidationFailed,
            format!(
                "The document is not a catalogue document: {e} (line {}, column {}).",
                e.line(),
                e.column()
            ),
        )
    });
    let done = match parsed {
        Ok(doc) => catalogue::apply_catalogue(&app, &s.caller, doc, dry_run).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(c) => list_page(&app, s, StatusCode::OK, (dry_run).then_some(f.document.as_str()), Some(changes(&c))).await,
        Err(e) if e.code.http_status() >= 500 || e.code == Code::Forbidden => fail(s, e),
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            list_page(&app, s, status, Some(&f.document), Some(refusal(&e))).await
        }
    }
}

/// A product form's fields, as typed.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ProductForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    family: String,
    #[serde(default)]
    features: String,
    #[serde(default)]
    exclusive_in_family: Option<String>,
    #[serde(default)]
    requires: String,
    #[serde(default)]
    excludes: String,
    #[serde(default)]
    compatible_with: String,
    #[serde(default)]
    locations: String,
    #[serde(default)]
    retention_days: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    account_type: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    phone_number: String,
    #[serde(default)]
    extension: String,
}

impl ProductForm {
    fn of(p: &Product, etag: &str) -> ProductForm {
        let need = |n: PropertyName| match p.properties.get(&n) {
            Some(Requirement::Required) => "required".to_string(),
            Some(Requirement::Optional) => "optional".to_string(),
            None => String::new(),
        };
        ProductForm {
            csrf: String::new(),
            etag: etag.to_string(),
            code: p.code.as_str().to_string(),
            name: p.name.clone(),
            family: p.family.as_str().to_string(),
            features: p.features.join("\n"),
            exclusive_in_family: p.rules.exclusive_in_family.then(|| "1".to_string()),
            requires: codes(&p.rules.requires),
            excludes: codes(&p.rules.excludes),
            compatible_with: codes(&p.rules.compatible_with),
            locations: p
                .rules
                .locations
                .as_ref()
                .map(|l| l.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            retention_days: p.retention_days.to_string(),
            site: need(PropertyName::Site),
            account_type: need(PropertyName::AccountType),
            location: need(PropertyName::Location),
            phone_number: need(PropertyName::PhoneNumber),
            extension: need(PropertyName::Extension),
        }
    }

    fn requirement(&self, n: PropertyName) -> &str {
        match n {
            PropertyName::Site => &self.site,
            PropertyName::AccountType => &self.account_type,
            PropertyName::Location => &self.location,
            PropertyName::PhoneNumber => &self.phone_number,
            PropertyName::Extension => &self.extension,
        }
    }

    /// The product the form describes, every wrong field named at once.
    fn product(&self) -> Result<(ProductCode, ProductInput), Error> {
        let mut v: Vec<Violation> = Vec::new();
        let mut bad = |field: &str, e: Error| v.push(Violation::new(Code::ValidationFailed, e.detail).field(field));
        let code_list = |raw: &str, field: &str, bad: &mut dyn FnMut(&str, Error)| -> Vec<ProductCode> {
            raw.split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .filter_map(|c| ProductCode::parse(c).map_err(|e| bad(field, e)).ok())
                .collect()
        };
        let code = ProductCode::parse(self.code.trim()).map_err(|e| bad("code", e)).ok();
        let family = ProductCode::parse(self.family.trim()).map_err(|e| bad("family", e)).ok();
        let requires = code_list(&self.requires, "requires", &mut bad);
        let excludes = code_list(&self.excludes, "excludes", &mut bad);
        let compatible_with = code_list(&self.compatible_with, "compatible_with", &mut bad);
        let locations: Vec<CountryCode> = self
            .locations
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .filter_map(|c| CountryCode::parse(c).map_err(|e| bad("locations", e)).ok())
            .collect();
        let retention_days = match self.retention_days.trim() {
            "" => 0,
            t => t.parse::<u32>().unwrap_or_else(|_| {
                bad(
                    "retention_days",
                    Error::validation("retention_days", "Days to keep service data must be a whole number."),
                );
                0
            }),
        };
        let mut properties = BTreeMap::new();
        for n in PropertyName::ALL {
            match self.requirement(n) {
                "required" => {
                    properties.insert(n, Requirement::Required);
                }
                "optional" => {
                    properties.insert(n, Requirement::Optional);
                }
                _ => {}
            }
        }
        let (Some(code), Some(family), true) = (code, family, v.is_empty()) else {
            return Err(Error {
                code: Code::ValidationFailed,
                detail: "The product has fields that do not fit.".into(),
                violations: v,
            });
        };
        let input = ProductInput {
            code: code.clone(),
            name: self.name.clone(),
            family,
            features: self
                .features
                .lines()
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect(),
            rules: ProductRules {
                exclusive_in_family: self.exclusive_in_family.is_some(),
                compatible_with,
                requires,
                excludes,
                locations: (!locations.is_empty()).then_some(locations),
            },
            properties,
            retention_days,
        };
        Ok((code, input))
    }
}

fn product_form(s: &ConsoleSession, f: &ProductForm, editing: bool, refused: Option<&Error>) -> Markup {
    let action = if editing {
        format!("/ui/products/{}/edit", f.code)
    } else {
        "/ui/products/new".to_string()
    };
    let text = |id: &str, label: &str, value: &str, hint: &str| {
        html! {
            label for=(id) { (label) }
            @if !hint.is_empty() { p.muted.field-hint id=(format!("{id}-hint")) { (hint) } }
            input id=(id) type="text" name=(id) value=(value) aria-describedby=[(!hint.is_empty()).then(|| format!("{id}-hint"))];
        }
    };
    html! {
        p { a href="/ui/products" { "Back to the catalogue" } }
        div.panel {
            @if let Some(e) = refused { (refusal(e)) }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(s.csrf_token);
                input type="hidden" name="etag" value=(f.etag);
                @if editing {
                    input type="hidden" name="code" value=(f.code);
                    p { "Code: " strong { (f.code) } " (a product's code never changes)" }
                } @else {
                    (text("code", "Code", &f.code, "Lowercase letters, digits and dashes, such as calling-professional."))
                }
                (text("name", "Name", &f.name, ""))
                (text("family", "Family", &f.family, "Products of one family replace each other; moving between them keeps the user's service data."))
                label for="features" { "Features (one per line)" }
                textarea #features name="features" rows="4" { (f.features) }
                label.check for="exclusive_in_family" {
                    input #exclusive_in_family type="checkbox" name="exclusive_in_family" value="1" checked[f.exclusive_in_family.is_some()];
                    "At most one product of this family per user"
                }
                (text("requires", "Requires (product codes)", &f.requires, "Separated by commas."))
                (text("excludes", "Excludes (product codes)", &f.excludes, ""))
                (text("compatible_with", "Compatible with (product codes of the same family)", &f.compatible_with, ""))
                (text("locations", "Sold only in (country codes)", &f.locations, "Leave empty for everywhere."))
                (text("retention_days", "Days to keep service data after the last license of the family goes", &f.retention_days, ""))
                fieldset {
                    legend { "Properties each license takes" }
                    div.details {
                        @for n in PropertyName::ALL {
                            div {
                                label for=(format!("prop-{}", n.as_str())) { (n.label()) }
                                select id=(format!("prop-{}", n.as_str())) name=(n.as_str()) {
                                    option value="" { "Not taken" }
                                    option value="optional" selected[f.requirement(n) == "optional"] { "Optional" }
                                    option value="required" selected[f.requirement(n) == "required"] { "Required" }
                                }
                            }
                        }
                    }
                }
                div.actions { button type="submit" { (if editing { "Save product" } else { "Create product" }) } }
            }
        }
    }
}

fn form_page(s: &ConsoleSession, title: &str, status: StatusCode, f: &ProductForm, editing: bool, refused: Option<&Error>) -> Response {
    (status, page(title, Some(s), product_form(s, f, editing, refused))).into_response()
}

/// `GET /ui/products/new`.
pub async fn new_product(SignedIn(s): SignedIn) -> Response {
    if let Err(e) = s.caller.require(Action::WriteCatalogue) {
        return fail(&s, e);
    }
    form_page(&s, "Create a product", StatusCode::OK, &ProductForm::default(), false, None)
}

/// `POST /ui/products/new`.
pub async fn create(State(app): State<App>, signed_in: SignedIn, Form(f): Form<ProductForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    if let Err(e) = s.caller.require(Action::WriteCatalogue) {
        return fail(s, e);
    }
    let made = match f.product() {
        Ok((_, input)) => catalogue::create_product(&app, &s.caller, input).await,
        Err(e) => Err(e),
    };
    match made {
        Ok(_) => Redirect::to("/ui/products").into_response(),
        Err(e) if e.code.http_status() >= 500 => fail(s, e),
        Err(e) => form_page(
            s,
            "Create a product",
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            &f,
            false,
            Some(&e),
        ),
    }
}

/// `GET /ui/products/{code}/edit`.
pub async fn edit(State(app): State<App>, SignedIn(s): SignedIn, Path(code): Path<String>) -> Response {
    let p = match catalogue::get_product(&app, &s.caller, &code).await {
        Ok(p) => p,
        Err(e) => return fail(&s, e),
    };
    if let Err(e) = s.caller.require(Action::WriteCatalogue) {
        return fail(&s, e);
    }
    form_page(
        &s,
        "Edit product",
        StatusCode::OK,
        &ProductForm::of(&p.product, &p.etag),
        true,
        None,
    )
}

/// `POST /ui/products/{code}/edit`: saves only over the version the form
/// was made from (its etag), so that two admins cannot overwrite each other.
pub async fn save(State(app): State<App>, signed_in: SignedIn, Path(code): Path<String>, Form(mut f): Form<ProductForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let s = &signed_in.0;
    if let Err(e) = catalogue::get_product(&app, &s.caller, &code).await {
        return fail(s, e);
    }
    if let Err(e) = s.caller.require(Action::WriteCatalogue) {
        return fail(s, e);
    }
    f.code = code.clone();
    let saved = match f.product() {
        Ok((_, input)) => {
            let patch = ProductPatch {
                name: Some(input.name),
                family: Some(input.family),
                features: Some(input.features),
                rules: Some(input.rules),
                properties: Some(input.properties),
                retention_days: Some(input.retention_days),
            };
            let if_match = IfMatch::parse(&format!("\"{}\"", f.etag));
            catalogue::update_product(&app, &s.caller, &code, patch, &if_match).await
        }
        Err(e) => Err(e),
    };
    match saved {
        Ok(_) => Redirect::to("/ui/products").into_response(),
        Err(e) if e.code.http_status() >= 500 || e.code == Code::NotFound => fail(s, e),
        Err(e) => form_page(
            s,
            "Edit product",
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            &f,
            true,
            Some(&e),
        ),
    }
}
