//! The catalogue: products, the features they grant and their rules.
//! Provider admins write it; every admin reads it. A product may only name
//! products that exist, so it can be built one product at a time in order,
//! or as a whole document (`apply_catalogue`) checked and applied at once.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use allot_domain::access::Action;
use allot_domain::catalogue::{validate_catalogue, Product, ProductRules, PropertyName, Requirement};
use allot_domain::types::ProductCode;
use allot_domain::{Error, Violation};
use allot_store::{audit, catalogue, in_transaction, StoreError};

use super::audit::snapshot;
use super::etag::{self, IfMatch};
use super::paging::{PageQuery, Paged};
use super::{App, Caller};

/// A new product.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    pub code: ProductCode,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: String,
    /// Products of one family replace each other (a move keeps the user's
    /// service data); often the code of the family's first product.
    pub family: ProductCode,
    /// What the product lets its holder use (each 1 to 100 characters).
    #[serde(default)]
    #[schema(schema_with = features_schema)]
    pub features: Vec<String>,
    #[serde(default)]
    pub rules: ProductRules,
    /// The per-assignment properties the product takes.
    #[serde(default)]
    pub properties: BTreeMap<PropertyName, Requirement>,
    /// Days a user's service data is kept after the family's last licence went.
    #[serde(default, deserialize_with = "super::whole::u32")]
    #[schema(maximum = 3650)]
    pub retention_days: u32,
}

impl ProductInput {
    fn into_product(self) -> Product {
        Product {
            code: self.code,
            name: self.name.trim().to_string(),
            family: self.family,
            features: self.features,
            rules: self.rules,
            properties: self.properties,
            retention_days: self.retention_days,
        }
    }
}

/// Changes to a product; fields left out stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: Option<String>,
    pub family: Option<ProductCode>,
    #[schema(schema_with = optional_features_schema)]
    pub features: Option<Vec<String>>,
    pub rules: Option<ProductRules>,
    pub properties: Option<BTreeMap<PropertyName, Requirement>>,
    #[serde(default, deserialize_with = "super::whole::opt_u32")]
    #[schema(maximum = 3650)]
    pub retention_days: Option<u32>,
}

fn features_array() -> utoipa::openapi::schema::ArrayBuilder {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new().items(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(100))
            .pattern(Some(super::TEXT_PATTERN)),
    )
}

fn features_schema() -> utoipa::openapi::schema::Array {
    features_array().build()
}

fn optional_features_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{SchemaType, Type};
    features_array()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .build()
}

/// A product as shown, with its `etag`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProductView {
    #[serde(flatten)]
    pub product: Product,
    /// Changes whenever the product does; send it as `If-Match` to update
    /// only what was read.
    pub etag: String,
}

impl From<Product> for ProductView {
    fn from(product: Product) -> Self {
        ProductView {
            etag: etag::of(&product),
            product,
        }
    }
}

/// Validates a product alone and within the catalogue it would join.
async fn check_in_catalogue(tx: &mut allot_store::Tx, p: &Product) -> Result<(), StoreError> {
    p.validate()?;
    let mut all = catalogue::all(tx).await?;
    all.insert(p.code.clone(), p.clone());
    validate_catalogue(&all)?;
    Ok(())
}

pub async fn list_products(app: &App, caller: &Caller, q: &PageQuery) -> Result<Paged<ProductView>, Error> {
    caller.require(Action::ReadCatalogue)?;
    let page = q.page()?;
    let mut tx = app.store.read_conn().await?;
    let rows = catalogue::list(&mut tx, page.after.as_deref(), page.limit + 1).await?;
    Ok(Paged::from_rows(rows, page.limit, |p| p.code.to_string()).map(ProductView::from))
}

pub async fn get_product(app: &App, caller: &Caller, code: &str) -> Result<ProductView, Error> {
    caller.require(Action::ReadCatalogue)?;
    let mut tx = app.store.read_conn().await?;
    let p = catalogue::get(&mut tx, code)
        .await?
        .ok_or_else(|| Error::not_found(format!("Product {code}")))?;
    Ok(p.into())
}

pub async fn create_product(app: &App, caller: &Caller, input: ProductInput) -> Result<ProductView, Error> {
    caller.require(Action::WriteCatalogue)?;
    let p = input.into_product();
    let now = app.clock.now();
    let p = in_transaction!(app.store, |tx| {
        check_in_catalogue(&mut tx, &p).await?;
        catalogue::insert(&mut tx, &p, now).await?;
        audit::record(
            &mut tx,
            None,
            &caller.actor(),
            "product.create",
            &format!("product:{}", p.code),
            None,
            snapshot(&p).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p.clone())
    })?;
    app.caches.catalogue_changed();
    Ok(p.into())
}

pub async fn update_product(app: &App, caller: &Caller, code: &str, patch: ProductPatch, if_match: &IfMatch) -> Result<ProductView, Error> {
    caller.require(Action::WriteCatalogue)?;
    let now = app.clock.now();
    let p = in_transaction!(app.store, |tx| {
        let before = catalogue::get(&mut tx, code)
            .await?
            .ok_or_else(|| Error::not_found(format!("Product {code}")))?;
        let mut p = before.clone();
        if let Some(v) = &patch.name {
            p.name = v.trim().to_string();
        }
        if let Some(v) = &patch.family {
            p.family = v.clone();
        }
        if let Some(v) = &patch.features {
            p.features = v.clone();
        }
        if let Some(v) = &patch.rules {
            p.rules = v.clone();
        }
        if let Some(v) = &patch.properties {
            p.properties = v.clone();
        }
        if let Some(v) = patch.retention_days {
            p.retention_days = v;
        }
        check_in_catalogue(&mut tx, &p).await?;
        if_match.check(&format!("Product {code}"), &etag::of(&before))?;
        catalogue::update(&mut tx, &p, now).await?;
        let (b, a) = (snapshot(&before), snapshot(&p));
        audit::record(
            &mut tx,
            None,
            &caller.actor(),
            "product.update",
            &format!("product:{code}"),
            b.as_ref(),
            a.as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p)
    })?;
    app.caches.catalogue_changed();
    Ok(p.into())
}

/// The whole catalogue as one document (`PUT /api/v1/catalogue`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogueDocument {
    /// Every product the catalogue should hold; products already stored
    /// and not listed here are left alone (never deleted).
    pub products: Vec<ProductInput>,
}

/// What applying a catalogue document did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CatalogueChanges {
    pub dry_run: bool,
    /// Codes of the products created.
    pub created: Vec<ProductCode>,
    /// Codes of the products whose definition changed.
    pub changed: Vec<ProductCode>,
    /// Codes of the stored products left as they were (listed the same, or not listed).
    pub left_alone: Vec<ProductCode>,
}

/// The most products one catalogue document may hold.
pub const MAX_CATALOGUE_PRODUCTS: usize = 10_000;

/// Checks the document as a whole (every product, then every rule against
/// the catalogue it would make) and applies it in one transaction: all of
/// it or nothing. With `dry_run`, only says what would change.
pub async fn apply_catalogue(app: &App, caller: &Caller, doc: CatalogueDocument, dry_run: bool) -> Result<CatalogueChanges, Error> {
    caller.require(Action::WriteCatalogue)?;
    if doc.products.len() > MAX_CATALOGUE_PRODUCTS {
        return Err(Error::validation(
            "products",
            format!("A catalogue document holds at most {MAX_CATALOGUE_PRODUCTS} products."),
        ));
    }
    let mut wanted: Vec<Product> = Vec::with_capacity(doc.products.len());
    let mut problems: Vec<Violation> = Vec::new();
    for (i, input) in doc.products.into_iter().enumerate() {
        let p = input.into_product();
        if wanted.iter().any(|w| w.code == p.code) {
            problems.push(
                Violation::new(
                    allot_domain::Code::ValidationFailed,
                    format!("{} is listed twice in the document.", p.code),
                )
                .product(p.code.as_str())
                .field(format!("products[{i}].code")),
            );
            continue;
        }
        if let Err(e) = p.validate() {
            problems.extend(e.in_field(&format!("products[{i}]")).violations);
        }
        wanted.push(p);
    }
    if !problems.is_empty() {
        return Err(Error::rejected(problems));
    }
    let now = app.clock.now();
    let changes = in_transaction!(app.store, |tx| {
        let stored = catalogue::all(&mut tx).await?;
        let mut after: HashMap<ProductCode, Product> = stored.clone();
        let (mut created, mut changed) = (Vec::new(), Vec::new());
        for p in &wanted {
            match stored.get(&p.code) {
                None => created.push(p.code.clone()),
                Some(old) if old != p => changed.push(p.code.clone()),
                Some(_) => {}
            }
            after.insert(p.code.clone(), p.clone());
        }
        validate_catalogue(&after)?;
        let mut left_alone: Vec<ProductCode> = stored
            .keys()
            .filter(|c| !created.contains(c) && !changed.contains(c))
            .cloned()
            .collect();
        left_alone.sort();
        if !dry_run {
            for p in wanted.iter().filter(|p| created.contains(&p.code)) {
                catalogue::insert(&mut tx, p, now).await?;
                audit::record(
                    &mut tx,
                    None,
                    &caller.actor(),
                    "product.create",
                    &format!("product:{}", p.code),
                    None,
                    snapshot(p).as_ref(),
                    now,
                )
                .await?;
            }
            for p in wanted.iter().filter(|p| changed.contains(&p.code)) {
                catalogue::update(&mut tx, p, now).await?;
                audit::record(
                    &mut tx,
                    None,
                    &caller.actor(),
                    "product.update",
                    &format!("product:{}", p.code),
                    stored.get(&p.code).and_then(snapshot).as_ref(),
                    snapshot(p).as_ref(),
                    now,
                )
                .await?;
            }
        }
        Ok::<_, StoreError>(CatalogueChanges {
            dry_run,
            created: created.clone(),
            changed: changed.clone(),
            left_alone,
        })
    })?;
    if !dry_run {
        app.caches.catalogue_changed();
    }
    Ok(changes)
}
