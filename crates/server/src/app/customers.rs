//! The customer list: one partner's customers, or everything the caller may
//! see (the provider: every org, with or without a partner). Each customer
//! with its most important provisioning status and the derived statuses of
//! its subscriptions; a status filter matches a customer when at least one
//! of its subscriptions has any selected value.

use serde::{Deserialize, Serialize};

use allot_domain::access::{Action, ScopeKind};
use allot_domain::status::{
    derive_subscription_status, most_important_provisioning, status_window, ProvisioningStatus, SubscriptionStatus,
};
use allot_domain::Error;
use allot_store::customers::{self, CustomerFilter, CustomerSort};

use super::paging::Paged;
use super::tenants::OrgView;
use super::{App, Caller};

/// How the customer list is sorted (`-` for descending).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub enum CustomerOrder {
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "-name")]
    NameDescending,
    #[serde(rename = "created_at")]
    CreatedAt,
    #[serde(rename = "-created_at")]
    CreatedAtDescending,
}

/// The customer list's filters, sort and page.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// Subscription statuses, comma-separated: customers with at least one
    /// subscription in any of them.
    #[param(value_type = Option<Vec<SubscriptionStatus>>, style = Form, explode = false)]
    pub subscription_status: Option<String>,
    /// Provisioning statuses, comma-separated: customers with at least one
    /// subscription item in any of them.
    #[param(value_type = Option<Vec<ProvisioningStatus>>, style = Form, explode = false)]
    pub provisioning_status: Option<String>,
    /// Text the customer's name contains (case-insensitive).
    #[param(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub q: Option<String>,
    /// `name` (default), `-name`, `created_at` or `-created_at`.
    #[param(value_type = Option<CustomerOrder>)]
    pub sort: Option<String>,
    /// Customers per page, 1 to 1,000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^(?:[0-9a-f]*\.[0-9a-f]*)?$", max_length = 2000)]
    pub cursor: Option<String>,
    /// `GET /api/v1/customers` only, for the provider: a partner id, or
    /// `none` for customers without a partner.
    pub partner: Option<String>,
}

/// One customer with its statuses.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomerView {
    pub org: OrgView,
    /// The most important provisioning status of its subscription items
    /// (null when it has none).
    pub provisioning_status: Option<ProvisioningStatus>,
    /// The distinct derived statuses of its subscriptions, in a fixed order.
    pub subscription_statuses: Vec<SubscriptionStatus>,
}

fn list_of<T>(raw: &Option<String>, field: &str, parse: impl Fn(&str) -> Option<T>, allowed: &[&str]) -> Result<Vec<T>, Error> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    // Each value named exactly: an empty one (`a,,b`, or nothing at all) is
    // a mistake, not "any".
    raw.split(',')
        .map(|s| {
            parse(s).ok_or_else(|| {
                Error::validation(
                    field,
                    format!(
                        "{field} may hold {}; not \"{}\".",
                        allowed.join(", "),
                        allot_domain::types::excerpt(s)
                    ),
                )
            })
        })
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

/// How a query's subscription and provisioning statuses combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// A customer matches each list given (the API's two parameters).
    EachList,
    /// A customer matches any chosen value of either list (the console's
    /// one **Select a filter…** control).
    AnyValue,
}

async fn list(app: &App, filter: CustomerFilter, q: &CustomerQuery, how: StatusMatch) -> Result<Paged<CustomerView>, Error> {
    let today = app.clock.today();
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
                format!(
                    "sort may be name, -name, created_at or -created_at; not \"{}\".",
                    allot_domain::types::excerpt(other)
                ),
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
        either_list: how == StatusMatch::AnyValue,
        ..filter
    };
    let mut rd = app.store.read_conn().await?;
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
    let items: Vec<CustomerView> = orgs
        .into_iter()
        .map(|o| {
            let (subs, provisioning) = facts.remove(&o.id).unwrap_or_default();
            let mut derived: Vec<SubscriptionStatus> = subs.iter().map(|f| derive_subscription_status(f, today)).collect();
            derived.sort_by_key(|s| SubscriptionStatus::ALL.iter().position(|x| x == s));
            derived.dedup();
            CustomerView {
                org: o.into(),
                provisioning_status: most_important_provisioning(provisioning),
                subscription_statuses: derived,
            }
        })
        .collect();
    Ok(Paged { items, next_cursor: next })
}

/// One partner's customers.
pub async fn list_partner_customers(app: &App, caller: &Caller, partner: &str, q: &CustomerQuery) -> Result<Paged<CustomerView>, Error> {
    list_partner_customers_matching(app, caller, partner, q, StatusMatch::EachList).await
}

/// One partner's customers, the statuses combined as `how` says.
pub async fn list_partner_customers_matching(
    app: &App,
    caller: &Caller,
    partner: &str,
    q: &CustomerQuery,
    how: StatusMatch,
) -> Result<Paged<CustomerView>, Error> {
    caller.partner(partner, Action::ReadSubscriptions)?;
    if q.partner.is_some() {
        return Err(Error::validation("partner", "The partner is in the path here."));
    }
    let exists = {
        let mut rd = app.store.read_conn().await?;
        allot_store::tenants::get_partner(&mut rd, partner).await?.is_some()
    };
    if !exists {
        return Err(Error::not_found(format!("Partner {partner}")));
    }
    let filter = CustomerFilter {
        partner: Some(Some(partner.to_string())),
        ..CustomerFilter::default()
    };
    list(app, filter, q, how).await
}

/// Every customer the caller may see.
pub async fn list_customers(app: &App, caller: &Caller, q: &CustomerQuery) -> Result<Paged<CustomerView>, Error> {
    list_customers_matching(app, caller, q, StatusMatch::EachList).await
}

/// Every customer the caller may see, the statuses combined as `how` says.
pub async fn list_customers_matching(
    app: &App,
    caller: &Caller,
    q: &CustomerQuery,
    how: StatusMatch,
) -> Result<Paged<CustomerView>, Error> {
    caller.require(Action::ReadSubscriptions)?;
    let p = &caller.principal;
    let filter = match p.scope_kind() {
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
                return Err(Error::not_found(format!("Partner {}", q.partner.clone().unwrap_or_default())));
            }
            CustomerFilter {
                partner: Some(Some(own)),
                ..CustomerFilter::default()
            }
        }
        ScopeKind::Org => {
            if q.partner.is_some() {
                return Err(Error::not_found(format!("Partner {}", q.partner.clone().unwrap_or_default())));
            }
            CustomerFilter {
                org: Some(p.org.clone().unwrap_or_default()),
                ..CustomerFilter::default()
            }
        }
    };
    list(app, filter, q, how).await
}
