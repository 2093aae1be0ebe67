//! The customer list (R-SUB-4): `GET /api/v1/partners/{partner}/customers`
//! for one partner, `GET /api/v1/customers` for everything the caller may
//! see (the provider: every org, with or without a partner). Each customer
//! with its most important provisioning status and the derived statuses of
//! its subscriptions; filters match a customer when at least one of its
//! subscriptions has any selected value.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use allot_domain::access::{Action, ScopeKind};
use allot_domain::status::{
    derive_subscription_status, most_important_provisioning, status_window, ProvisioningStatus, SubscriptionStatus,
};
use allot_domain::Error;
use allot_store::customers::{self, CustomerFilter, CustomerSort};

use crate::auth::Ctx;
use crate::extract::ApiQuery;
use crate::problem::ApiResult;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerQuery {
    /// Comma-separated subscription statuses.
    pub subscription_status: Option<String>,
    /// Comma-separated provisioning statuses.
    pub provisioning_status: Option<String>,
    /// Text the customer's name contains.
    pub q: Option<String>,
    /// `name` (default), `-name`, `created_at`, `-created_at`.
    pub sort: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// `GET /api/v1/customers` only, for the provider: a partner id, or `none`.
    pub partner: Option<String>,
}

fn list_of<T>(raw: &Option<String>, field: &str, parse: impl Fn(&str) -> Option<T>, allowed: &[&str]) -> Result<Vec<T>, Error> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).ok_or_else(|| Error::validation(field, format!("{field} may hold {}; not \"{s}\".", allowed.join(", ")))))
        .collect()
}

/// A cursor names the last customer of a page: its sort key and id, hex.
fn encode_cursor(key: &str, id: &str) -> String {
    format!("{}.{}", hex::encode(key), hex::encode(id))
}

fn decode_cursor(c: &str) -> Result<(String, String), Error> {
    let bad = || Error::validation("cursor", "cursor is not one this server handed out.");
    if c.len() > 2000 {
        return Err(bad());
    }
    let (k, i) = c.split_once('.').ok_or_else(bad)?;
    let text = |h: &str| hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad);
    Ok((text(k)?, text(i)?))
}

async fn list(st: &AppState, filter: CustomerFilter, q: &CustomerQuery) -> Result<Value, Error> {
    let today = st.clock.today();
    let statuses: Vec<SubscriptionStatus> = list_of(
        &q.subscription_status,
        "subscription_status",
        SubscriptionStatus::parse,
        &SubscriptionStatus::ALL.map(|s| s.as_str()),
    )?;
    let provisioning: Vec<ProvisioningStatus> = list_of(
        &q.provisioning_status,
        "provisioning_status",
        ProvisioningStatus::parse,
        &ProvisioningStatus::ALL.map(|s| s.as_str()),
    )?;
    let sort = match q.sort.as_deref() {
        None | Some("name") => CustomerSort::Name,
        Some("-name") => CustomerSort::NameDesc,
        Some("created_at") => CustomerSort::Created,
        Some("-created_at") => CustomerSort::CreatedDesc,
        Some(other) => {
            return Err(Error::validation(
                "sort",
                format!("sort may be name, -name, created_at or -created_at; not \"{other}\"."),
            ))
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Error::validation("limit", "limit must be between 1 and 1000."));
    }
    let after = q.cursor.as_deref().filter(|c| !c.is_empty()).map(decode_cursor).transpose()?;
    let filter = CustomerFilter {
        q: match &q.q {
            Some(t) => {
                allot_domain::types::check_search("q", t, 200)?;
                Some(t.trim().to_string()).filter(|t| !t.is_empty())
            }
            None => None,
        },
        statuses: statuses.iter().map(|s| status_window(*s, today)).collect(),
        provisioning,
        ..filter
    };
    let mut rd = st.store.read_conn().await?;
    let mut orgs = customers::page(
        &mut rd,
        &filter,
        sort,
        after.as_ref().map(|(k, i)| (k.as_str(), i.as_str())),
        limit + 1,
    )
    .await?;
    let next = if orgs.len() as i64 > limit {
        orgs.truncate(limit as usize);
        orgs.last().map(|o| encode_cursor(&sort.key(o), &o.id))
    } else {
        None
    };
    let ids: Vec<String> = orgs.iter().map(|o| o.id.clone()).collect();
    let mut facts = customers::statuses_of(&mut rd, &ids).await?;
    let items: Vec<Value> = orgs
        .into_iter()
        .map(|o| {
            let (subs, provisioning) = facts.remove(&o.id).unwrap_or_default();
            let mut derived: Vec<SubscriptionStatus> = subs.iter().map(|f| derive_subscription_status(f, today)).collect();
            derived.sort_by_key(|s| SubscriptionStatus::ALL.iter().position(|x| x == s));
            derived.dedup();
            json!({
                "org": o,
                "provisioning_status": most_important_provisioning(provisioning),
                "subscription_statuses": derived,
            })
        })
        .collect();
    Ok(json!({ "items": items, "next_cursor": next }))
}

#[utoipa::path(get, path = "/api/v1/partners/{partner}/customers", tag = "partners",
    params(("partner" = String, Path), ("subscription_status" = Option<String>, Query), ("provisioning_status" = Option<String>, Query),
           ("q" = Option<String>, Query), ("sort" = Option<String>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "The partner's customers with their statuses"), (status = 404, description = "Not this caller's partner")))]
pub async fn of_partner(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(partner): Path<String>,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> ApiResult<Json<Value>> {
    ctx.partner(&partner, Action::ReadSubscriptions)?;
    if q.partner.is_some() {
        return Err(Error::validation("partner", "The partner is in the path here.").into());
    }
    let exists = {
        let mut rd = st.store.read_conn().await?;
        allot_store::tenants::get_partner(&mut rd, &partner).await?.is_some()
    };
    if !exists {
        return Err(Error::not_found(format!("Partner {partner}")).into());
    }
    let filter = CustomerFilter {
        partner: Some(Some(partner)),
        ..CustomerFilter::default()
    };
    Ok(Json(list(&st, filter, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/customers", tag = "partners",
    params(("partner" = Option<String>, Query, description = "Provider only: a partner id, or none"), ("subscription_status" = Option<String>, Query),
           ("provisioning_status" = Option<String>, Query), ("q" = Option<String>, Query), ("sort" = Option<String>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Every customer the caller may see, with their statuses")))]
pub async fn all(State(st): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<CustomerQuery>) -> ApiResult<Json<Value>> {
    ctx.require(Action::ReadSubscriptions)?;
    let p = &ctx.principal;
    let filter = match p.role.scope_kind() {
        ScopeKind::Provider => CustomerFilter {
            partner: match q.partner.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(id) => Some(Some(id.to_string())),
            },
            ..CustomerFilter::default()
        },
        ScopeKind::Partner => {
            let own = p.partner.clone().unwrap_or_default();
            if q.partner.as_ref().is_some_and(|x| *x != own) {
                return Err(Error::not_found(format!("Partner {}", q.partner.clone().unwrap_or_default())).into());
            }
            CustomerFilter {
                partner: Some(Some(own)),
                ..CustomerFilter::default()
            }
        }
        ScopeKind::Org => {
            if q.partner.is_some() {
                return Err(Error::not_found(format!("Partner {}", q.partner.clone().unwrap_or_default())).into());
            }
            CustomerFilter {
                org: Some(p.org.clone().unwrap_or_default()),
                ..CustomerFilter::default()
            }
        }
    };
    Ok(Json(list(&st, filter, &q).await?))
}
