//! The licence-change planner: the one place that decides whether a user's
//! licence change is allowed and which seats it takes and releases.
//!
//! Pure: current licences + request + catalogue + pools → a plan or every
//! reason it is refused. Every path that changes licences (single change,
//! bulk, CSV, templates, moves) calls [`plan_license_change`]; the store then
//! applies the plan in one transaction whose guarded counters are the final
//! word on seats (the pool snapshot given here may be stale under load).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::catalogue::{Product, PropertyName};
use crate::error::{Code, Violation};
use crate::status::{ProvisioningStatus, SubscriptionStatus};
use crate::types::{ProductCode, UserKind, UserStatus};

/// Per-assignment properties (e.g. `{"location": "HQ", "extension": "1234"}`).
pub type Properties = BTreeMap<PropertyName, String>;

/// What the planner needs to know about the user.
#[derive(Debug, Clone)]
pub struct UserFacts {
    pub id: String,
    pub email: String,
    pub kind: UserKind,
    pub status: UserStatus,
}

/// A licence the user holds: a seat of one pool (subscription × product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub product: ProductCode,
    pub subscription: String,
    pub properties: Properties,
}

/// A seat pool as last read: one subscription item with its subscription's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub subscription: String,
    pub product: ProductCode,
    pub quantity: i64,
    pub consumed: i64,
    pub provisioning: ProvisioningStatus,
    pub status: SubscriptionStatus,
}

impl Pool {
    pub fn assignable(&self) -> bool {
        self.status.is_usable() && self.provisioning == ProvisioningStatus::Provisioned
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLicense {
    pub product: ProductCode,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveLicense {
    pub product: ProductCode,
    #[serde(default)]
    pub subscription: Option<String>,
}

/// A requested change: adds and removes applied together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseChange {
    #[serde(default)]
    pub add: Vec<AddLicense>,
    #[serde(default)]
    pub remove: Vec<RemoveLicense>,
    #[serde(default)]
    pub add_required: bool,
}

/// Everything the planner reads. `pools` are the org's pools for the products
/// involved, in the order automatic seat choice should prefer them.
pub struct PlanInput<'a> {
    pub user: &'a UserFacts,
    pub held: &'a [Held],
    pub catalogue: &'a HashMap<ProductCode, Product>,
    pub pools: &'a [Pool],
}

/// The decided change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicensePlan {
    /// Licences to remove; each releases one seat of its pool.
    pub release: Vec<Held>,
    /// Licences to add, with the pool chosen; each takes one seat.
    pub take: Vec<Held>,
    /// Families whose licence moves between subscriptions or products in this
    /// change: their service data stays untouched.
    pub moved_families: Vec<ProductCode>,
    /// The user's licences after the change.
    pub result: Vec<Held>,
}

impl LicensePlan {
    pub fn is_empty(&self) -> bool {
        self.release.is_empty() && self.take.is_empty()
    }
}

fn product_name<'a>(catalogue: &'a HashMap<ProductCode, Product>, code: &'a ProductCode) -> &'a str {
    catalogue.get(code).map(|p| p.name.as_str()).unwrap_or(code.as_str())
}

/// Decide a licence change for one user. Returns the plan, or every reason
/// the change is refused (never only the first).
pub fn plan_license_change(input: &PlanInput<'_>, change: &LicenseChange) -> Result<LicensePlan, Vec<Violation>> {
    let user = input.user;
    let cat = input.catalogue;
    let mut violations = Vec::new();
    let v = |code: Code, msg: String, product: &ProductCode| Violation::new(code, msg).user(user.email.clone()).product(product.as_str());

    if change.add.is_empty() && change.remove.is_empty() {
        violations.push(
            Violation::new(Code::ValidationFailed, "The change adds and removes nothing.")
                .user(user.email.clone())
                .field("add"),
        );
        return Err(violations);
    }

    // Removals: each must name a licence the user holds.
    let mut release: Vec<Held> = Vec::new();
    let mut seen_remove = HashSet::new();
    for (i, r) in change.remove.iter().enumerate() {
        if !seen_remove.insert(&r.product) {
            violations.push(
                v(
                    Code::ValidationFailed,
                    format!("{} is named twice in remove.", r.product),
                    &r.product,
                )
                .field(format!("remove[{i}].product")),
            );
            continue;
        }
        let found = input
            .held
            .iter()
            .find(|h| h.product == r.product && r.subscription.as_ref().is_none_or(|s| *s == h.subscription));
        match found {
            Some(h) => release.push(h.clone()),
            None => {
                let from = r
                    .subscription
                    .as_ref()
                    .map(|s| format!(" from subscription {s}"))
                    .unwrap_or_default();
                violations.push(
                    v(
                        Code::NotAssigned,
                        format!(
                            "{} does not hold {}{from}, so it cannot be removed.",
                            user.email,
                            product_name(cat, &r.product)
                        ),
                        &r.product,
                    )
                    .field(format!("remove[{i}]")),
                );
            }
        }
    }

    // Seats this plan has already taken or released per pool, on top of the snapshot.
    let mut pool_delta: HashMap<(&str, &ProductCode), i64> = HashMap::new();
    for h in &release {
        *pool_delta.entry((h.subscription.as_str(), &h.product)).or_default() -= 1;
    }
    let free = |pool: &Pool, delta: &HashMap<(&str, &ProductCode), i64>| {
        pool.quantity - pool.consumed - delta.get(&(pool.subscription.as_str(), &pool.product)).copied().unwrap_or(0)
    };

    let mut take: Vec<Held> = Vec::new();
    let mut seen_add = HashSet::new();
    for (i, a) in change.add.iter().enumerate() {
        let field = format!("add[{i}]");
        let Some(product) = cat.get(&a.product) else {
            violations.push(
                v(
                    Code::ValidationFailed,
                    format!("{} is not a product in the catalogue.", a.product),
                    &a.product,
                )
                .field(format!("{field}.product")),
            );
            continue;
        };
        if !seen_add.insert(&a.product) {
            violations.push(
                v(
                    Code::ValidationFailed,
                    format!("{} is named twice in add.", product.name),
                    &a.product,
                )
                .field(format!("{field}.product")),
            );
            continue;
        }
        let still_held = input.held.iter().find(|h| h.product == a.product && !release.contains(h));
        if let Some(h) = still_held {
            violations.push(
                v(
                    Code::AlreadyAssigned,
                    format!(
                        "{} already holds {} from subscription {}; remove it in the same change to move it.",
                        user.email, product.name, h.subscription
                    ),
                    &a.product,
                )
                .field(field),
            );
            continue;
        }
        let candidates: Vec<&Pool> = input.pools.iter().filter(|p| p.product == a.product).collect();
        let chosen = match &a.subscription {
            Some(sub) => match candidates.iter().find(|p| &p.subscription == sub) {
                None => {
                    violations.push(
                        v(
                            Code::ValidationFailed,
                            format!("Subscription {sub} of this organisation carries no {}.", product.name),
                            &a.product,
                        )
                        .subscription(sub.clone())
                        .field(format!("{field}.subscription")),
                    );
                    continue;
                }
                Some(p) if !p.status.is_usable() => {
                    violations.push(
                        v(
                            Code::SubscriptionNotActive,
                            format!(
                                "{} cannot get {}: subscription {sub} is {}.",
                                user.email,
                                product.name,
                                p.status.as_str().replace('_', " ")
                            ),
                            &a.product,
                        )
                        .subscription(sub.clone())
                        .field(field),
                    );
                    continue;
                }
                Some(p) if p.provisioning != ProvisioningStatus::Provisioned => {
                    violations.push(
                        v(
                            Code::ServiceNotProvisioned,
                            format!(
                                "{} cannot get {}: the service on subscription {sub} is not provisioned yet ({}).",
                                user.email,
                                product.name,
                                p.provisioning.as_str().replace('_', " ")
                            ),
                            &a.product,
                        )
                        .subscription(sub.clone())
                        .field(field),
                    );
                    continue;
                }
                Some(p) if free(p, &pool_delta) <= 0 => {
                    violations.push(
                        v(
                            Code::SeatsExhausted,
                            format!(
                                "{} cannot get {}: all {} seats of subscription {sub} are taken.",
                                user.email, product.name, p.quantity
                            ),
                            &a.product,
                        )
                        .subscription(sub.clone())
                        .field(field),
                    );
                    continue;
                }
                Some(p) => *p,
            },
            None => match candidates.iter().find(|p| p.assignable() && free(p, &pool_delta) > 0) {
                Some(p) => *p,
                None => {
                    let (code, why) = if candidates.is_empty() {
                        (Code::SeatsExhausted, "the organisation has no subscription carrying it".to_string())
                    } else if !candidates.iter().any(|p| p.status.is_usable()) {
                        (Code::SubscriptionNotActive, "no subscription carrying it is active".to_string())
                    } else if !candidates.iter().any(|p| p.assignable()) {
                        (
                            Code::ServiceNotProvisioned,
                            "the service is not provisioned yet on any active subscription carrying it".to_string(),
                        )
                    } else {
                        let total: i64 = candidates.iter().filter(|p| p.assignable()).map(|p| p.quantity).sum();
                        (
                            Code::SeatsExhausted,
                            format!("all {total} seats on its active subscriptions are taken"),
                        )
                    };
                    violations.push(v(code, format!("{} cannot get {}: {why}.", user.email, product.name), &a.product).field(field));
                    continue;
                }
            },
        };
        *pool_delta.entry((chosen.subscription.as_str(), &chosen.product)).or_default() += 1;
        take.push(Held {
            product: a.product.clone(),
            subscription: chosen.subscription.clone(),
            properties: a.properties.clone(),
        });
    }

    if !violations.is_empty() {
        return Err(violations);
    }

    let family_of = |code: &ProductCode| cat.get(code).map(|p| p.family.clone());
    let released_families: HashSet<ProductCode> = release.iter().filter_map(|h| family_of(&h.product)).collect();
    let mut moved_families: Vec<ProductCode> = take
        .iter()
        .filter_map(|h| family_of(&h.product))
        .filter(|f| released_families.contains(f))
        .collect();
    moved_families.sort();
    moved_families.dedup();

    let mut result: Vec<Held> = input.held.iter().filter(|h| !release.contains(h)).cloned().collect();
    result.extend(take.iter().cloned());
    result.sort_by(|a, b| a.product.cmp(&b.product));
    Ok(LicensePlan {
        release,
        take,
        moved_families,
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::ProductRules;

    fn code(s: &str) -> ProductCode {
        ProductCode::parse(s).unwrap()
    }

    fn catalogue() -> HashMap<ProductCode, Product> {
        ["calling-standard", "calling-professional", "meetings"]
            .into_iter()
            .map(|c| {
                let family = if c.starts_with("calling") { "calling" } else { "meetings" };
                (
                    code(c),
                    Product {
                        code: code(c),
                        name: c.replace('-', " "),
                        family: code(family),
                        features: vec![],
                        rules: ProductRules::default(),
                        properties: Default::default(),
                        retention_days: 7,
                    },
                )
            })
            .collect()
    }

    fn pool(sub: &str, product: &str, quantity: i64, consumed: i64) -> Pool {
        Pool {
            subscription: sub.into(),
            product: code(product),
            quantity,
            consumed,
            provisioning: ProvisioningStatus::Provisioned,
            status: SubscriptionStatus::Active,
        }
    }

    fn user() -> UserFacts {
        UserFacts {
            id: "u1".into(),
            email: "anna@example.com".into(),
            kind: UserKind::Internal,
            status: UserStatus::Active,
        }
    }

    fn add(product: &str, sub: Option<&str>) -> AddLicense {
        AddLicense {
            product: code(product),
            subscription: sub.map(Into::into),
            properties: Default::default(),
        }
    }

    #[test]
    fn auto_choice_skips_full_and_unusable_pools() {
        let cat = catalogue();
        let mut suspended = pool("s0", "meetings", 10, 0);
        suspended.status = SubscriptionStatus::Suspended;
        let pools = [suspended, pool("s1", "meetings", 5, 5), pool("s2", "meetings", 5, 4)];
        let u = user();
        let input = PlanInput {
            user: &u,
            held: &[],
            catalogue: &cat,
            pools: &pools,
        };
        let plan = plan_license_change(
            &input,
            &LicenseChange {
                add: vec![add("meetings", None)],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plan.take[0].subscription, "s2");
    }

    #[test]
    fn every_violation_is_reported() {
        let cat = catalogue();
        let pools = [pool("s1", "meetings", 1, 1)];
        let u = user();
        let input = PlanInput {
            user: &u,
            held: &[],
            catalogue: &cat,
            pools: &pools,
        };
        let change = LicenseChange {
            add: vec![add("meetings", Some("s1")), add("nope", None)],
            remove: vec![RemoveLicense {
                product: code("calling-standard"),
                subscription: None,
            }],
            add_required: false,
        };
        let errs = plan_license_change(&input, &change).unwrap_err();
        let codes: Vec<Code> = errs.iter().map(|v| v.code).collect();
        assert_eq!(codes, [Code::NotAssigned, Code::SeatsExhausted, Code::ValidationFailed]);
        assert!(errs[1].message.contains("anna@example.com"), "{}", errs[1].message);
    }

    #[test]
    fn remove_and_add_in_a_family_is_a_move_and_reuses_the_released_seat() {
        let cat = catalogue();
        let pools = [pool("a", "calling-standard", 1, 1), pool("b", "calling-professional", 1, 0)];
        let held = [Held {
            product: code("calling-standard"),
            subscription: "a".into(),
            properties: Default::default(),
        }];
        let u = user();
        let input = PlanInput {
            user: &u,
            held: &held,
            catalogue: &cat,
            pools: &pools,
        };
        let change = LicenseChange {
            add: vec![add("calling-professional", Some("b"))],
            remove: vec![RemoveLicense {
                product: code("calling-standard"),
                subscription: Some("a".into()),
            }],
            add_required: false,
        };
        let plan = plan_license_change(&input, &change).unwrap();
        assert_eq!(plan.moved_families, [code("calling")]);
        assert_eq!(plan.result.len(), 1);
        // Re-adding to the pool just released fits even though the snapshot says full.
        let change = LicenseChange {
            add: vec![add("calling-standard", Some("a"))],
            remove: vec![RemoveLicense {
                product: code("calling-standard"),
                subscription: None,
            }],
            add_required: false,
        };
        assert!(plan_license_change(&input, &change).is_ok());
    }

    #[test]
    fn already_held_is_refused() {
        let cat = catalogue();
        let pools = [pool("a", "meetings", 5, 1)];
        let held = [Held {
            product: code("meetings"),
            subscription: "a".into(),
            properties: Default::default(),
        }];
        let u = user();
        let input = PlanInput {
            user: &u,
            held: &held,
            catalogue: &cat,
            pools: &pools,
        };
        let errs = plan_license_change(
            &input,
            &LicenseChange {
                add: vec![add("meetings", None)],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(errs[0].code, Code::AlreadyAssigned);
    }
}
