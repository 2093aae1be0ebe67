//! `/api/v1/products`: the catalogue. Provider admins write; every admin reads.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use allot_domain::access::Action;
use allot_domain::catalogue::{validate_catalogue, Product, ProductRules, PropertyName, Requirement};
use allot_domain::types::ProductCode;
use allot_domain::Error;
use allot_store::{audit, catalogue, in_transaction, StoreError};

use crate::auth::Ctx;
use crate::extract::{paged, ApiJson, ApiQuery, PageQuery};
use crate::problem::ApiResult;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    pub code: ProductCode,
    pub name: String,
    pub family: ProductCode,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub rules: ProductRules,
    #[serde(default)]
    pub properties: BTreeMap<PropertyName, Requirement>,
    #[serde(default)]
    pub retention_days: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub family: Option<ProductCode>,
    pub features: Option<Vec<String>>,
    pub rules: Option<ProductRules>,
    pub properties: Option<BTreeMap<PropertyName, Requirement>>,
    pub retention_days: Option<u32>,
}

/// Validates a product alone and within the catalogue it would join.
async fn check_in_catalogue(tx: &mut allot_store::Tx, p: &Product) -> Result<(), StoreError> {
    p.validate()?;
    let mut all = catalogue::all(tx).await?;
    all.insert(p.code.clone(), p.clone());
    validate_catalogue(&all)?;
    Ok(())
}

pub async fn create_product(st: &AppState, ctx: &Ctx, input: ProductInput) -> Result<Product, Error> {
    ctx.require(Action::WriteCatalogue)?;
    let p = Product {
        code: input.code,
        name: input.name.trim().to_string(),
        family: input.family,
        features: input.features,
        rules: input.rules,
        properties: input.properties,
        retention_days: input.retention_days,
    };
    let now = st.clock.now();
    in_transaction!(st.store, |tx| {
        check_in_catalogue(&mut tx, &p).await?;
        catalogue::insert(&mut tx, &p, now).await?;
        audit::record(
            &mut tx,
            None,
            &ctx.actor(),
            "product.create",
            &format!("product:{}", p.code),
            None,
            Some(&serde_json::to_value(&p).unwrap_or_default()),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p.clone())
    })
}

pub async fn patch_product(st: &AppState, ctx: &Ctx, code: &str, patch: ProductPatch) -> Result<Product, Error> {
    ctx.require(Action::WriteCatalogue)?;
    let now = st.clock.now();
    in_transaction!(st.store, |tx| {
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
        catalogue::update(&mut tx, &p, now).await?;
        let (b, a) = (serde_json::to_value(&before).ok(), serde_json::to_value(&p).ok());
        audit::record(
            &mut tx,
            None,
            &ctx.actor(),
            "product.update",
            &format!("product:{code}"),
            b.as_ref(),
            a.as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p)
    })
}

#[utoipa::path(get, path = "/api/v1/products", tag = "catalogue", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Products, by code")))]
pub async fn list(State(st): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Json<Value>> {
    ctx.require(Action::ReadCatalogue)?;
    let page = q.page()?;
    let mut tx = st.store.begin_read().await?;
    let rows = catalogue::list(&mut tx, page.after.as_deref(), page.limit + 1).await?;
    Ok(Json(paged(rows, page.limit, |p| p.code.to_string())))
}

#[utoipa::path(post, path = "/api/v1/products", tag = "catalogue",
    responses((status = 201, description = "Created"), (status = 422, description = "Invalid product or rules")))]
pub async fn create(State(st): State<AppState>, ctx: Ctx, ApiJson(input): ApiJson<ProductInput>) -> ApiResult<(StatusCode, Json<Product>)> {
    Ok((StatusCode::CREATED, Json(create_product(&st, &ctx, input).await?)))
}

#[utoipa::path(get, path = "/api/v1/products/{code}", tag = "catalogue", params(("code" = String, Path)),
    responses((status = 200, description = "The product"), (status = 404, description = "No such product")))]
pub async fn get(State(st): State<AppState>, ctx: Ctx, Path(code): Path<String>) -> ApiResult<Json<Product>> {
    ctx.require(Action::ReadCatalogue)?;
    let mut tx = st.store.begin_read().await?;
    let p = catalogue::get(&mut tx, &code)
        .await?
        .ok_or_else(|| Error::not_found(format!("Product {code}")))?;
    Ok(Json(p))
}

#[utoipa::path(patch, path = "/api/v1/products/{code}", tag = "catalogue", params(("code" = String, Path)),
    responses((status = 200, description = "Updated"), (status = 422, description = "Invalid")))]
pub async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(code): Path<String>,
    ApiJson(input): ApiJson<ProductPatch>,
) -> ApiResult<Json<Product>> {
    Ok(Json(patch_product(&st, &ctx, &code, input).await?))
}
