//! The licence-change planner: the one place that decides whether a user's
//! licence change is allowed and which seats it takes and releases.
//!
//! Pure: the user's licences, the request, the catalogue, the pools, the facts
//! about the user and the org, and `today` go in; a plan or *every* reason the
//! change is refused comes out. Every path that changes licences (single
//! change, bulk, CSV, templates, moves) calls [`plan_license_change`]; the
//! store then applies the plan in one transaction whose guarded counters are
//! the final word on seats (the pool snapshot given here may be stale under
//! load).
//!
//! The steps, each in its own module:
//! - `seats`: which pool an addition takes its seat from (or why none fits);
//! - `rules`: requires (adding what is required when asked), excludes, one per
//!   family, availability by usage location, pending external users;
//! - `properties`: per-assignment properties and the site rules of accounts.
//!
//! Rules are checked for what the change touches: every product it adds
//! against everything the user will hold, and every product it removes
//! against what stays. A user's existing licences are not re-judged, so a
//! catalogue rule added later does not block unrelated changes.

mod properties;
mod rules;
mod seats;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::catalogue::{Product, PropertyName};
use crate::error::{Code, Violation};
use crate::status::{derive_subscription_status, ProvisioningStatus, SubscriptionFacts, SubscriptionStatus};
use crate::types::{CountryCode, ProductCode, UserKind, UserStatus};

pub use properties::{valid_e164, valid_extension};

/// Per-assignment properties (e.g. `{"location": "HQ", "extension": "1234"}`).
pub type Properties = BTreeMap<PropertyName, String>;

/// The OpenAPI schema of [`Properties`], under that name.
pub struct PropertiesSchema;

impl utoipa::PartialSchema for PropertiesSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <Properties as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for PropertiesSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Properties")
    }
}

/// What the planner needs to know about the user.
#[derive(Debug, Clone)]
pub struct UserFacts {
    pub id: String,
    pub email: String,
    pub kind: UserKind,
    pub status: UserStatus,
    pub usage_location: Option<CountryCode>,
    /// Sites this user administers (attendee accounts are refused there).
    pub site_admin_of: Vec<String>,
    /// Products this user is billed for by membership of contact-centre
    /// queues, with the queues: such a licence cannot be removed
    /// while the user is still a member.
    pub queue_billed: Vec<QueueHold>,
}

/// A queue the user is a member of, and the product it bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHold {
    pub product: ProductCode,
    pub queue: String,
}

/// A site of the org as far as licence rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFacts {
    pub id: String,
    pub attendee_accounts_enabled: bool,
}

/// What the planner needs to know about the user's org.
#[derive(Debug, Clone, Default)]
pub struct OrgFacts {
    pub default_usage_location: Option<CountryCode>,
    /// At least the sites the change names; a site missing here is not the org's.
    pub sites: Vec<SiteFacts>,
}

/// A licence the user holds: a seat of one pool (subscription × product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Held {
    pub product: ProductCode,
    pub subscription: String,
    #[schema(value_type = PropertiesSchema)]
    pub properties: Properties,
}

/// A seat pool as last read: one subscription item and its subscription's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub subscription: String,
    pub product: ProductCode,
    pub quantity: i64,
    pub consumed: i64,
    pub provisioning: ProvisioningStatus,
    pub subscription_facts: SubscriptionFacts,
}

impl Pool {
    pub fn status(&self, today: NaiveDate) -> SubscriptionStatus {
        derive_subscription_status(&self.subscription_facts, today)
    }

    /// Seats of this pool may be assigned today.
    pub fn assignable(&self, today: NaiveDate) -> bool {
        self.status(today).is_usable() && self.provisioning == ProvisioningStatus::Provisioned
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLicense {
    pub product: ProductCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = PropertiesSchema)]
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveLicense {
    pub product: ProductCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

/// A requested change: adds and removes applied together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseChange {
    #[serde(default)]
    pub add: Vec<AddLicense>,
    #[serde(default)]
    pub remove: Vec<RemoveLicense>,
    /// Add the products that added products require instead of refusing.
    #[serde(default)]
    pub add_required: bool,
}

impl LicenseChange {
    /// Adds and removes nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// The change, or `None` when there is nothing to do.
    pub fn unless_empty(self) -> Option<LicenseChange> {
        (!self.is_empty()).then_some(self)
    }
}

/// Everything the planner reads. `pools` are the org's pools for the products
/// that may be added (including required ones), in the order automatic seat
/// choice should prefer them; `catalogue` holds at least every product the
/// user holds or the change names, and what they require.
pub struct PlanInput<'a> {
    pub user: &'a UserFacts,
    pub org: &'a OrgFacts,
    pub held: &'a [Held],
    pub catalogue: &'a HashMap<ProductCode, Product>,
    pub pools: &'a [Pool],
    pub today: NaiveDate,
}

/// The decided change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicensePlan {
    /// Licences to remove; each releases one seat of its pool.
    pub release: Vec<Held>,
    /// Licences to add, with the pool chosen; each takes one seat.
    pub take: Vec<Held>,
    /// Products added only because an added product requires them (`add_required`).
    pub auto_added: Vec<ProductCode>,
    /// Families whose licence moves between subscriptions or products in this
    /// change: their service data stays untouched.
    pub moved_families: Vec<ProductCode>,
    /// The user's licences after the change, sorted by product.
    pub result: Vec<Held>,
}

impl LicensePlan {
    pub fn is_empty(&self) -> bool {
        self.release.is_empty() && self.take.is_empty()
    }
}

/// A product the change adds (asked for, or required by one that is).
#[derive(Debug, Clone)]
struct Addition<'a> {
    product: &'a Product,
    requested_subscription: Option<String>,
    properties: Properties,
    /// Where in the request it comes from, for `Violation::field`.
    field: String,
    /// Set when `add_required` added it for this product.
    required_by: Option<ProductCode>,
    /// The pool chosen for its seat; None when no pool fits (a violation says why).
    pool: Option<String>,
}

/// The planner's working state while it decides one change.
struct Planning<'a> {
    input: &'a PlanInput<'a>,
    change: &'a LicenseChange,
    violations: Vec<Violation>,
    release: Vec<Held>,
    additions: Vec<Addition<'a>>,
    /// Seats this plan has already taken (+) or released (−) per pool
    /// (subscription, product), on top of the snapshot. A change touches a
    /// handful of pools, so a short list beats a map (no hashing, no clones).
    pool_delta: Vec<(&'a str, &'a ProductCode, i64)>,
}

impl<'a> Planning<'a> {
    fn seats_taken(&self, subscription: &str, product: &ProductCode) -> i64 {
        self.pool_delta
            .iter()
            .find(|(s, p, _)| *s == subscription && *p == product)
            .map_or(0, |(_, _, d)| *d)
    }

    fn count_seat(&mut self, subscription: &'a str, product: &'a ProductCode, delta: i64) {
        match self.pool_delta.iter_mut().find(|(s, p, _)| *s == subscription && *p == product) {
            Some(entry) => entry.2 += delta,
            None => self.pool_delta.push((subscription, product, delta)),
        }
    }

    fn email(&self) -> &'a str {
        &self.input.user.email
    }

    fn name(&self, code: &ProductCode) -> String {
        self.input
            .catalogue
            .get(code)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| code.to_string())
    }

    /// A violation about this user and a product.
    fn violation(&self, code: Code, message: String, product: &ProductCode) -> Violation {
        Violation::new(code, message).user(self.email()).product(product.as_str())
    }

    /// The licences the user keeps (held and not released).
    fn kept(&self) -> impl Iterator<Item = &'a Held> + '_ {
        self.input.held.iter().filter(|h| !self.release.contains(h))
    }

    /// Whether the user will hold `code` after the change.
    fn will_hold(&self, code: &ProductCode) -> bool {
        self.kept().any(|h| &h.product == code) || self.additions.iter().any(|a| &a.product.code == code)
    }

    fn resolve_removals(&mut self) {
        let mut seen = HashSet::new();
        for (i, r) in self.change.remove.iter().enumerate() {
            if !seen.insert(&r.product) {
                let v = self
                    .violation(
                        Code::ValidationFailed,
                        format!("{} is named twice in remove.", r.product),
                        &r.product,
                    )
                    .field(format!("remove[{i}].product"));
                self.violations.push(v);
                continue;
            }
            let found = self
                .input
                .held
                .iter()
                .find(|h| h.product == r.product && r.subscription.as_ref().is_none_or(|s| *s == h.subscription));
            match found {
                Some(h) => {
                    self.count_seat(&h.subscription, &h.product, -1);
                    self.release.push(h.clone());
                }
                None => {
                    let from = r
                        .subscription
                        .as_ref()
                        .map(|s| format!(" from subscription {s}"))
                        .unwrap_or_default();
                    let v = self
                        .violation(
                            Code::NotAssigned,
                            format!(
                                "{} does not hold {}{from}, so it cannot be removed.",
                                self.email(),
                                self.name(&r.product)
                            ),
                            &r.product,
                        )
                        .field(format!("remove[{i}]"));
                    self.violations.push(v);
                }
            }
        }
    }

    /// The properties an addition starts from: on a move within a family, the
    /// released licence's properties that the new product takes, overlaid by
    /// what the request gives.
    fn starting_properties(&self, product: &Product, given: &Properties) -> Properties {
        let mut props = Properties::new();
        let family_of = |code: &ProductCode| self.input.catalogue.get(code).map(|p| &p.family);
        if let Some(moved) = self.release.iter().find(|h| family_of(&h.product) == Some(&product.family)) {
            for (k, v) in &moved.properties {
                if product.properties.contains_key(k) {
                    props.insert(*k, v.clone());
                }
            }
        }
        props.extend(given.iter().map(|(k, v)| (*k, v.clone())));
        props
    }

    fn resolve_additions(&mut self) {
        let mut seen = HashSet::new();
        for (i, a) in self.change.add.iter().enumerate() {
            let field = format!("add[{i}]");
            let Some(product) = self.input.catalogue.get(&a.product) else {
                let v = self
                    .violation(
                        Code::ValidationFailed,
                        format!("{} is not a product in the catalogue.", a.product),
                        &a.product,
                    )
                    .field(format!("{field}.product"));
                self.violations.push(v);
                continue;
            };
            if !seen.insert(&a.product) {
                let v = self
                    .violation(
                        Code::ValidationFailed,
                        format!("{} is named twice in add.", product.name),
                        &a.product,
                    )
                    .field(format!("{field}.product"));
                self.violations.push(v);
                continue;
            }
            let still_held = self.kept().find(|h| h.product == a.product).cloned();
            if let Some(h) = still_held {
                let v = self
                    .violation(
                        Code::AlreadyAssigned,
                        format!(
                            "{} already holds {} from subscription {}; remove it in the same change to move it.",
                            self.email(),
                            product.name,
                            h.subscription
                        ),
                        &a.product,
                    )
                    .field(field);
                self.violations.push(v);
                continue;
            }
            let properties = self.starting_properties(product, &a.properties);
            self.push_addition(Addition {
                product,
                requested_subscription: a.subscription.clone(),
                properties,
                field,
                required_by: None,
                pool: None,
            });
        }
    }

    /// Chooses the addition's pool (or records why none fits) and keeps it.
    fn push_addition(&mut self, mut addition: Addition<'a>) {
        match seats::choose_pool(self, &addition) {
            Ok(pool) => {
                self.count_seat(&pool.subscription, &pool.product, 1);
                addition.pool = Some(pool.subscription.clone());
            }
            Err(v) => {
                let mut v = *v;
                if let Some(by) = &addition.required_by {
                    v.message = format!("{} ({} requires it.)", v.message.trim_end_matches('.'), self.name(by));
                }
                self.violations.push(v.field(addition.field.clone()));
            }
        }
        self.additions.push(addition);
    }

    fn finish(self) -> Result<LicensePlan, Vec<Violation>> {
        if !self.violations.is_empty() {
            return Err(self.violations);
        }
        let mut take = Vec::with_capacity(self.additions.len());
        let mut auto_added = Vec::new();
        for a in &self.additions {
            let Some(pool) = &a.pool else {
                // Unreachable in practice: an addition without a pool always leaves a violation.
                return Err(vec![self.violation(
                    Code::Internal,
                    format!("No seat was chosen for {}.", a.product.name),
                    &a.product.code,
                )]);
            };
            if a.required_by.is_some() {
                auto_added.push(a.product.code.clone());
            }
            take.push(Held {
                product: a.product.code.clone(),
                subscription: pool.clone(),
                properties: a.properties.clone(),
            });
        }
        let family_of = |code: &ProductCode| self.input.catalogue.get(code).map(|p| p.family.clone());
        let released_families: HashSet<ProductCode> = self.release.iter().filter_map(|h| family_of(&h.product)).collect();
        let mut moved_families: Vec<ProductCode> = take
            .iter()
            .filter_map(|h| family_of(&h.product))
            .filter(|f| released_families.contains(f))
            .collect();
        moved_families.sort();
        moved_families.dedup();
        let mut result: Vec<Held> = self.kept().cloned().collect();
        result.extend(take.iter().cloned());
        result.sort_by(|a, b| a.product.cmp(&b.product));
        Ok(LicensePlan {
            release: self.release,
            take,
            auto_added,
            moved_families,
            result,
        })
    }
}

/// Plans one user of a batch (a bulk job's chunk) against the pools the
/// batch shares and, when the change is planned, counts its seats in them,
/// so that users planned later see the seats earlier users took and
/// released.
pub fn plan_in_batch(
    user: &UserFacts,
    org: &OrgFacts,
    held: &[Held],
    catalogue: &HashMap<ProductCode, Product>,
    pools: &mut [Pool],
    today: NaiveDate,
    change: &LicenseChange,
) -> Result<LicensePlan, Vec<Violation>> {
    let input = PlanInput {
        user,
        org,
        held,
        catalogue,
        pools,
        today,
    };
    let plan = plan_license_change(&input, change)?;
    count_plan_in(pools, &plan);
    Ok(plan)
}

/// Counts a plan's seats in `pools` (see [`plan_in_batch`]).
fn count_plan_in(pools: &mut [Pool], plan: &LicensePlan) {
    for (h, delta) in plan.take.iter().map(|h| (h, 1)).chain(plan.release.iter().map(|h| (h, -1))) {
        if let Some(p) = pools
            .iter_mut()
            .find(|p| p.product == h.product && p.subscription == h.subscription)
        {
            p.consumed += delta;
        }
    }
}

/// Decide a licence change for one user. Returns the plan, or every reason
/// the change is refused (never only the first).
pub fn plan_license_change(input: &PlanInput<'_>, change: &LicenseChange) -> Result<LicensePlan, Vec<Violation>> {
    if change.is_empty() {
        return Err(vec![Violation::new(Code::ValidationFailed, "The change adds and removes nothing.")
            .user(input.user.email.clone())
            .field("add")]);
    }
    let mut p = Planning {
        input,
        change,
        violations: Vec::new(),
        release: Vec::new(),
        additions: Vec::new(),
        pool_delta: Vec::new(),
    };
    p.resolve_removals();
    p.resolve_additions();
    rules::add_or_refuse_required(&mut p);
    rules::refuse_removing_required(&mut p);
    rules::refuse_removing_queue_billed(&mut p);
    rules::check_pending_user(&mut p);
    rules::check_pairs(&mut p);
    rules::check_locations(&mut p);
    properties::check_additions(&mut p);
    p.finish()
}

#[cfg(test)]
mod tests;
