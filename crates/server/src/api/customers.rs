//! The customer lists of partners and of the provider.

use axum::extract::{Path, State};
use axum::Json;

use crate::app::customers::{self, CustomerQuery, CustomerView};
use crate::app::paging::Paged;
use crate::app::{App, Caller};
use crate::extract::ApiQuery;
use crate::problem::ApiResult;

#[utoipa::path(get, path = "/api/v1/partners/{partner}/customers", operation_id = "list_partner_customers", tag = "partners",
    params(("partner" = String, Path, description = "The partner's id"), CustomerQuery),
    responses((status = 200, description = "The partner's customers with their statuses", body = Paged<CustomerView>)))]
pub async fn list_partner_customers(
    State(app): State<App>,
    caller: Caller,
    Path(partner): Path<String>,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> ApiResult<Json<Paged<CustomerView>>> {
    Ok(Json(customers::list_partner_customers(&app, &caller, &partner, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/customers", operation_id = "list_customers", tag = "partners", params(CustomerQuery),
    responses((status = 200, description = "Every customer the caller may see, with their statuses", body = Paged<CustomerView>),
              (status = 404, description = "not_found: the partner named is not in the caller's scope")))]
pub async fn list_customers(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> ApiResult<Json<Paged<CustomerView>>> {
    Ok(Json(customers::list_customers(&app, &caller, &q).await?))
}
