//! `/api/v1/products` and `/api/v1/catalogue`: the catalogue.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use crate::app::catalogue::{self, CatalogueChanges, CatalogueDocument, ProductInput, ProductPatch, ProductView};
use crate::app::paging::{PageQuery, Paged};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery, Precondition};
use crate::problem::ApiResult;

use super::Tagged;

#[utoipa::path(get, path = "/api/v1/products", operation_id = "list_products", tag = "catalogue", params(PageQuery),
    responses((status = 200, description = "Products, by code", body = Paged<ProductView>)))]
pub async fn list_products(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<ProductView>>> {
    Ok(Json(catalogue::list_products(&app, &caller, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/products", operation_id = "create_product", tag = "catalogue", request_body = ProductInput,
    responses((status = 201, description = "Created", body = ProductView, headers(("ETag" = String, description = "The product's etag"))),
              (status = 409, description = "conflict: a product with that code exists")))]
pub async fn create_product(
    State(app): State<App>,
    caller: Caller,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<Tagged<ProductView>> {
    Ok(Tagged(StatusCode::CREATED, catalogue::create_product(&app, &caller, input).await?))
}

#[utoipa::path(get, path = "/api/v1/products/{code}", operation_id = "get_product", tag = "catalogue",
    params(("code" = String, Path, description = "The product's code")),
    responses((status = 200, description = "The product", body = ProductView, headers(("ETag" = String, description = "The product's etag")))))]
pub async fn get_product(State(app): State<App>, caller: Caller, Path(code): Path<String>) -> ApiResult<Tagged<ProductView>> {
    Ok(Tagged(StatusCode::OK, catalogue::get_product(&app, &caller, &code).await?))
}

#[utoipa::path(patch, path = "/api/v1/products/{code}", operation_id = "update_product", tag = "catalogue",
    params(("code" = String, Path, description = "The product's code"),
           ("If-Match" = Option<String>, Header, description = "Change only if the product's etag is still this")),
    request_body = ProductPatch,
    responses((status = 200, description = "Updated", body = ProductView, headers(("ETag" = String, description = "The product's new etag")))))]
pub async fn update_product(
    State(app): State<App>,
    caller: Caller,
    Path(code): Path<String>,
    Precondition(if_match): Precondition,
    ApiJson(patch): ApiJson<ProductPatch>,
) -> ApiResult<Tagged<ProductView>> {
    Ok(Tagged(
        StatusCode::OK,
        catalogue::update_product(&app, &caller, &code, patch, &if_match).await?,
    ))
}

/// `?dry_run=` of applying a catalogue document.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApplyQuery {
    /// Only say what would be created, changed and left alone.
    pub dry_run: Option<bool>,
}

#[utoipa::path(put, path = "/api/v1/catalogue", operation_id = "apply_catalogue", tag = "catalogue", params(ApplyQuery),
    request_body = CatalogueDocument,
    responses((status = 200, description = "Applied as a whole (or, with dry_run, what would be): the products created, changed and left alone", body = CatalogueChanges)))]
pub async fn apply_catalogue(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ApplyQuery>,
    ApiJson(doc): ApiJson<CatalogueDocument>,
) -> ApiResult<Json<CatalogueChanges>> {
    Ok(Json(
        catalogue::apply_catalogue(&app, &caller, doc, q.dry_run.unwrap_or(false)).await?,
    ))
}
