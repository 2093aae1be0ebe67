//! Webhook endpoints at three scopes: the provider's (`/api/v1/webhooks`),
//! a partner's (its customers' events) and an org's (its own). Every
//! handler parses, calls one use case of `crate::app::webhooks` with the
//! scope its URL names, and presents the answer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::paging::{PageQuery, Paged};
use crate::app::webhooks::{
    self, CreatedWebhook, DeliveryQueued, DeliveryView, HookScope, RotatedSecret, WebhookInput, WebhookPatch, WebhookView,
};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;

use super::Status;

#[utoipa::path(get, path = "/api/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks", params(PageQuery),
    responses((status = 200, description = "The provider's webhook endpoints", body = Paged<WebhookView>)))]
pub async fn list_webhooks(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<WebhookView>>> {
    let scope = HookScope::Provider;
    Ok(Json(webhooks::list_webhooks(&app, &caller, &scope, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/webhooks", operation_id = "create_webhook", tag = "webhooks", request_body = WebhookInput,
    responses((status = 201, description = "Created; the signing secret is in `secret`, shown only now", body = CreatedWebhook),
              (status = 422, description = "validation_failed: a URL that is not https, points at a private address or holds credentials, or an unknown event type (the field is named)"),
              (status = 503, description = "unavailable: no webhook sealing secret is configured")))]
pub async fn create_webhook(
    State(app): State<App>,
    caller: Caller,
    ApiJson(input): ApiJson<WebhookInput>,
) -> ApiResult<Status<CreatedWebhook>> {
    let scope = HookScope::Provider;
    Ok(Status(
        StatusCode::CREATED,
        webhooks::create_webhook(&app, &caller, &scope, input).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{hook}", operation_id = "get_webhook", tag = "webhooks", params(("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 200, description = "The endpoint", body = WebhookView)))]
pub async fn get_webhook(State(app): State<App>, caller: Caller, Path(hook): Path<String>) -> ApiResult<Json<WebhookView>> {
    let scope = HookScope::Provider;
    Ok(Json(webhooks::get_webhook(&app, &caller, &scope, &hook).await?))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{hook}", operation_id = "update_webhook", tag = "webhooks", params(("hook" = String, Path, description = "The webhook endpoint's id")), request_body = WebhookPatch,
    responses((status = 200, description = "Changed; enabling an endpoint Allot disabled sends the events kept meanwhile", body = WebhookView)))]
pub async fn update_webhook(
    State(app): State<App>,
    caller: Caller,
    Path(hook): Path<String>,
    ApiJson(patch): ApiJson<WebhookPatch>,
) -> ApiResult<Json<WebhookView>> {
    let scope = HookScope::Provider;
    Ok(Json(webhooks::update_webhook(&app, &caller, &scope, &hook, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{hook}", operation_id = "delete_webhook", tag = "webhooks", params(("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 204, description = "Deleted, with its deliveries")))]
pub async fn delete_webhook(State(app): State<App>, caller: Caller, Path(hook): Path<String>) -> ApiResult<StatusCode> {
    let scope = HookScope::Provider;
    webhooks::delete_webhook(&app, &caller, &scope, &hook).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/webhooks/{hook}/rotate-secret", operation_id = "rotate_webhook_secret", tag = "webhooks", params(("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 200, description = "A new secret, shown only now; the old one signs beside it for 24 hours", body = RotatedSecret)))]
pub async fn rotate_webhook_secret(State(app): State<App>, caller: Caller, Path(hook): Path<String>) -> ApiResult<Json<RotatedSecret>> {
    let scope = HookScope::Provider;
    Ok(Json(webhooks::rotate_webhook_secret(&app, &caller, &scope, &hook).await?))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{hook}/test", operation_id = "test_webhook", tag = "webhooks", params(("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 202, description = "A `webhook.test` event is queued for this endpoint", body = DeliveryQueued)))]
pub async fn test_webhook(State(app): State<App>, caller: Caller, Path(hook): Path<String>) -> ApiResult<Status<DeliveryQueued>> {
    let scope = HookScope::Provider;
    Ok(Status(
        StatusCode::ACCEPTED,
        webhooks::test_webhook(&app, &caller, &scope, &hook).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{hook}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks", params(("hook" = String, Path, description = "The webhook endpoint's id"), PageQuery),
    responses((status = 200, description = "Deliveries to this endpoint, newest first, with every attempt", body = Paged<DeliveryView>)))]
pub async fn list_webhook_deliveries(
    State(app): State<App>,
    caller: Caller,
    Path(hook): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<DeliveryView>>> {
    let scope = HookScope::Provider;
    Ok(Json(webhooks::list_deliveries(&app, &caller, &scope, &hook, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{hook}/deliveries/{delivery}/redeliver", operation_id = "redeliver_webhook", tag = "webhooks", params(("hook" = String, Path, description = "The webhook endpoint's id"), ("delivery" = String, Path, description = "The delivery's id")),
    responses((status = 202, description = "Queued to be sent again now, with the same `webhook-id`", body = DeliveryQueued)))]
pub async fn redeliver_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((hook, delivery)): Path<(String, String)>,
) -> ApiResult<Status<DeliveryQueued>> {
    let scope = HookScope::Provider;
    Ok(Status(
        StatusCode::ACCEPTED,
        webhooks::redeliver(&app, &caller, &scope, &hook, &delivery).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/partners/{partner}/webhooks", operation_id = "list_partner_webhooks", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), PageQuery),
    responses((status = 200, description = "The partner's webhook endpoints", body = Paged<WebhookView>)))]
pub async fn list_partner_webhooks(
    State(app): State<App>,
    caller: Caller,
    Path(partner): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<WebhookView>>> {
    let scope = HookScope::Partner(partner);
    Ok(Json(webhooks::list_webhooks(&app, &caller, &scope, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/partners/{partner}/webhooks", operation_id = "create_partner_webhook", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id")), request_body = WebhookInput,
    responses((status = 201, description = "Created; the signing secret is in `secret`, shown only now", body = CreatedWebhook),
              (status = 422, description = "validation_failed: a URL that is not https, points at a private address or holds credentials, or an unknown event type (the field is named)"),
              (status = 503, description = "unavailable: no webhook sealing secret is configured")))]
pub async fn create_partner_webhook(
    State(app): State<App>,
    caller: Caller,
    Path(partner): Path<String>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> ApiResult<Status<CreatedWebhook>> {
    let scope = HookScope::Partner(partner);
    Ok(Status(
        StatusCode::CREATED,
        webhooks::create_webhook(&app, &caller, &scope, input).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/partners/{partner}/webhooks/{hook}", operation_id = "get_partner_webhook", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 200, description = "The endpoint", body = WebhookView)))]
pub async fn get_partner_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((partner, hook)): Path<(String, String)>,
) -> ApiResult<Json<WebhookView>> {
    let scope = HookScope::Partner(partner);
    Ok(Json(webhooks::get_webhook(&app, &caller, &scope, &hook).await?))
}

#[utoipa::path(patch, path = "/api/v1/partners/{partner}/webhooks/{hook}", operation_id = "update_partner_webhook", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), ("hook" = String, Path, description = "The webhook endpoint's id")), request_body = WebhookPatch,
    responses((status = 200, description = "Changed; enabling an endpoint Allot disabled sends the events kept meanwhile", body = WebhookView)))]
pub async fn update_partner_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((partner, hook)): Path<(String, String)>,
    ApiJson(patch): ApiJson<WebhookPatch>,
) -> ApiResult<Json<WebhookView>> {
    let scope = HookScope::Partner(partner);
    Ok(Json(webhooks::update_webhook(&app, &caller, &scope, &hook, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/partners/{partner}/webhooks/{hook}", operation_id = "delete_partner_webhook", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 204, description = "Deleted, with its deliveries")))]
pub async fn delete_partner_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((partner, hook)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let scope = HookScope::Partner(partner);
    webhooks::delete_webhook(&app, &caller, &scope, &hook).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/partners/{partner}/webhooks/{hook}/rotate-secret", operation_id = "rotate_partner_webhook_secret", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 200, description = "A new secret, shown only now; the old one signs beside it for 24 hours", body = RotatedSecret)))]
pub async fn rotate_partner_webhook_secret(
    State(app): State<App>,
    caller: Caller,
    Path((partner, hook)): Path<(String, String)>,
) -> ApiResult<Json<RotatedSecret>> {
    let scope = HookScope::Partner(partner);
    Ok(Json(webhooks::rotate_webhook_secret(&app, &caller, &scope, &hook).await?))
}

#[utoipa::path(post, path = "/api/v1/partners/{partner}/webhooks/{hook}/test", operation_id = "test_partner_webhook", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 202, description = "A `webhook.test` event is queued for this endpoint", body = DeliveryQueued)))]
pub async fn test_partner_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((partner, hook)): Path<(String, String)>,
) -> ApiResult<Status<DeliveryQueued>> {
    let scope = HookScope::Partner(partner);
    Ok(Status(
        StatusCode::ACCEPTED,
        webhooks::test_webhook(&app, &caller, &scope, &hook).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/partners/{partner}/webhooks/{hook}/deliveries", operation_id = "list_partner_webhook_deliveries", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), ("hook" = String, Path, description = "The webhook endpoint's id"), PageQuery),
    responses((status = 200, description = "Deliveries to this endpoint, newest first, with every attempt", body = Paged<DeliveryView>)))]
pub async fn list_partner_webhook_deliveries(
    State(app): State<App>,
    caller: Caller,
    Path((partner, hook)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<DeliveryView>>> {
    let scope = HookScope::Partner(partner);
    Ok(Json(webhooks::list_deliveries(&app, &caller, &scope, &hook, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/partners/{partner}/webhooks/{hook}/deliveries/{delivery}/redeliver", operation_id = "redeliver_partner_webhook", tag = "webhooks", params(("partner" = String, Path, description = "The partner's id"), ("hook" = String, Path, description = "The webhook endpoint's id"), ("delivery" = String, Path, description = "The delivery's id")),
    responses((status = 202, description = "Queued to be sent again now, with the same `webhook-id`", body = DeliveryQueued)))]
pub async fn redeliver_partner_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((partner, hook, delivery)): Path<(String, String, String)>,
) -> ApiResult<Status<DeliveryQueued>> {
    let scope = HookScope::Partner(partner);
    Ok(Status(
        StatusCode::ACCEPTED,
        webhooks::redeliver(&app, &caller, &scope, &hook, &delivery).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/webhooks", operation_id = "list_org_webhooks", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), PageQuery),
    responses((status = 200, description = "The organisation's webhook endpoints", body = Paged<WebhookView>)))]
pub async fn list_org_webhooks(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<WebhookView>>> {
    let scope = HookScope::Org(org);
    Ok(Json(webhooks::list_webhooks(&app, &caller, &scope, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/webhooks", operation_id = "create_org_webhook", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id")), request_body = WebhookInput,
    responses((status = 201, description = "Created; the signing secret is in `secret`, shown only now", body = CreatedWebhook),
              (status = 422, description = "validation_failed: a URL that is not https, points at a private address or holds credentials, or an unknown event type (the field is named)"),
              (status = 503, description = "unavailable: no webhook sealing secret is configured")))]
pub async fn create_org_webhook(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> ApiResult<Status<CreatedWebhook>> {
    let scope = HookScope::Org(org);
    Ok(Status(
        StatusCode::CREATED,
        webhooks::create_webhook(&app, &caller, &scope, input).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/webhooks/{hook}", operation_id = "get_org_webhook", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 200, description = "The endpoint", body = WebhookView)))]
pub async fn get_org_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((org, hook)): Path<(String, String)>,
) -> ApiResult<Json<WebhookView>> {
    let scope = HookScope::Org(org);
    Ok(Json(webhooks::get_webhook(&app, &caller, &scope, &hook).await?))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/webhooks/{hook}", operation_id = "update_org_webhook", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), ("hook" = String, Path, description = "The webhook endpoint's id")), request_body = WebhookPatch,
    responses((status = 200, description = "Changed; enabling an endpoint Allot disabled sends the events kept meanwhile", body = WebhookView)))]
pub async fn update_org_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((org, hook)): Path<(String, String)>,
    ApiJson(patch): ApiJson<WebhookPatch>,
) -> ApiResult<Json<WebhookView>> {
    let scope = HookScope::Org(org);
    Ok(Json(webhooks::update_webhook(&app, &caller, &scope, &hook, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/webhooks/{hook}", operation_id = "delete_org_webhook", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 204, description = "Deleted, with its deliveries")))]
pub async fn delete_org_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((org, hook)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let scope = HookScope::Org(org);
    webhooks::delete_webhook(&app, &caller, &scope, &hook).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/webhooks/{hook}/rotate-secret", operation_id = "rotate_org_webhook_secret", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 200, description = "A new secret, shown only now; the old one signs beside it for 24 hours", body = RotatedSecret)))]
pub async fn rotate_org_webhook_secret(
    State(app): State<App>,
    caller: Caller,
    Path((org, hook)): Path<(String, String)>,
) -> ApiResult<Json<RotatedSecret>> {
    let scope = HookScope::Org(org);
    Ok(Json(webhooks::rotate_webhook_secret(&app, &caller, &scope, &hook).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/webhooks/{hook}/test", operation_id = "test_org_webhook", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), ("hook" = String, Path, description = "The webhook endpoint's id")),
    responses((status = 202, description = "A `webhook.test` event is queued for this endpoint", body = DeliveryQueued)))]
pub async fn test_org_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((org, hook)): Path<(String, String)>,
) -> ApiResult<Status<DeliveryQueued>> {
    let scope = HookScope::Org(org);
    Ok(Status(
        StatusCode::ACCEPTED,
        webhooks::test_webhook(&app, &caller, &scope, &hook).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/webhooks/{hook}/deliveries", operation_id = "list_org_webhook_deliveries", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), ("hook" = String, Path, description = "The webhook endpoint's id"), PageQuery),
    responses((status = 200, description = "Deliveries to this endpoint, newest first, with every attempt", body = Paged<DeliveryView>)))]
pub async fn list_org_webhook_deliveries(
    State(app): State<App>,
    caller: Caller,
    Path((org, hook)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<DeliveryView>>> {
    let scope = HookScope::Org(org);
    Ok(Json(webhooks::list_deliveries(&app, &caller, &scope, &hook, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/webhooks/{hook}/deliveries/{delivery}/redeliver", operation_id = "redeliver_org_webhook", tag = "webhooks", params(("org" = String, Path, description = "The organisation's id"), ("hook" = String, Path, description = "The webhook endpoint's id"), ("delivery" = String, Path, description = "The delivery's id")),
    responses((status = 202, description = "Queued to be sent again now, with the same `webhook-id`", body = DeliveryQueued)))]
pub async fn redeliver_org_webhook(
    State(app): State<App>,
    caller: Caller,
    Path((org, hook, delivery)): Path<(String, String, String)>,
) -> ApiResult<Status<DeliveryQueued>> {
    let scope = HookScope::Org(org);
    Ok(Status(
        StatusCode::ACCEPTED,
        webhooks::redeliver(&app, &caller, &scope, &hook, &delivery).await?,
    ))
}
