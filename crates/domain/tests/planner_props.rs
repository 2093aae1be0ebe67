//! Property tests of the licence planner: random catalogues, random users and
//! random sequences of changes starting from no licences. Whenever the planner
//! returns a plan, an independent checker (below, written from the rules as
//! stated as the product's rules, not from the planner's code) must find the
//! resulting state lawful; whenever it refuses, the state stays as it was and
//! every reason names the user.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use proptest::prelude::*;

use allot_domain::catalogue::{validate_catalogue, Product, ProductRules, PropertyName, Requirement};
use allot_domain::planner::{
    plan_license_change, AddLicense, Held, LicenseChange, OrgFacts, PlanInput, Pool, QueueHold, RemoveLicense, SiteFacts, UserFacts,
};
use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_domain::types::{CountryCode, ProductCode, UserKind, UserStatus};

const TODAY: (i32, u32, u32) = (2026, 6, 15);
const COUNTRIES: [&str; 3] = ["SE", "NO", "DE"];
const SUBS: [&str; 2] = ["sub-a", "sub-b"];
/// Sites of the org: (id, attendee accounts enabled). "site-x" belongs to nobody.
const SITES: [(&str, bool); 2] = [("site-on", true), ("site-off", false)];

fn code(s: &str) -> ProductCode {
    ProductCode::parse(s).expect("test codes are valid")
}
fn country(s: &str) -> CountryCode {
    CountryCode::parse(s).expect("test countries are valid")
}
fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

// ---------------------------------------------------------------- generators

/// A product as drawn, before the catalogue is made valid.
#[derive(Debug, Clone)]
struct RawProduct {
    family: usize,
    exclusive: bool,
    compatible: Vec<usize>,
    requires: Vec<usize>,
    excludes: Vec<usize>,
    locations: Option<Vec<usize>>,
    properties: Vec<(usize, bool)>,
}

const PROPS: [PropertyName; 5] = [
    PropertyName::Location,
    PropertyName::PhoneNumber,
    PropertyName::Extension,
    PropertyName::Site,
    PropertyName::AccountType,
];

fn raw_product(n: usize) -> impl Strategy<Value = RawProduct> {
    (
        0..3usize,
        any::<bool>(),
        prop::collection::vec(0..n, 0..2),
        prop::collection::vec(0..n, 0..2),
        prop::collection::vec(0..n, 0..2),
        prop::option::weighted(0.2, prop::collection::vec(0..3usize, 1..3)),
        prop::collection::vec((0..5usize, any::<bool>()), 0..3),
    )
        .prop_map(
            |(family, exclusive, compatible, requires, excludes, locations, properties)| RawProduct {
                family,
                exclusive,
                compatible,
                requires,
                excludes,
                locations,
                properties,
            },
        )
}

/// Turns drawn products into a valid catalogue: rules naming the product
/// itself are dropped, and a product the validator objects to loses its
/// rules until the catalogue is accepted.
fn catalogue(raw: &[RawProduct]) -> HashMap<ProductCode, Product> {
    let name = |i: usize| code(&format!("p{i}"));
    let mut cat: HashMap<ProductCode, Product> = raw
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let others = |v: &Vec<usize>| -> Vec<ProductCode> {
                let set: BTreeSet<usize> = v.iter().copied().filter(|&j| j != i).collect();
                set.into_iter().map(name).collect()
            };
            let compatible: Vec<usize> = r.compatible.iter().copied().filter(|&j| raw[j].family == r.family).collect();
            let product = Product {
                code: name(i),
                name: format!("Product {i}"),
                family: code(&format!("f{}", r.family)),
                features: vec![],
                rules: ProductRules {
                    exclusive_in_family: r.exclusive,
                    compatible_with: others(&compatible),
                    requires: others(&r.requires),
                    excludes: others(&r.excludes),
                    locations: r.locations.as_ref().map(|l| {
                        let set: BTreeSet<usize> = l.iter().copied().collect();
                        set.into_iter().map(|c| country(COUNTRIES[c])).collect()
                    }),
                },
                properties: r
                    .properties
                    .iter()
                    .map(|&(p, required)| (PROPS[p], if required { Requirement::Required } else { Requirement::Optional }))
                    .collect(),
                retention_days: 7,
            };
            (name(i), product)
        })
        .collect();
    for _ in 0..=raw.len() {
        let Err(e) = validate_catalogue(&cat) else { return cat };
        for v in e.violations {
            if let Some(p) = v.product.as_deref().and_then(|c| cat.get_mut(&code(c))) {
                p.rules.requires.clear();
                p.rules.excludes.clear();
                p.rules.compatible_with.clear();
            }
        }
    }
    // Every product stripped of pair rules: always valid.
    for p in cat.values_mut() {
        p.rules.requires.clear();
        p.rules.excludes.clear();
        p.rules.compatible_with.clear();
    }
    assert!(validate_catalogue(&cat).is_ok());
    cat
}

/// The state of a subscription, with whether its seats may be assigned
/// today, decided here by hand rather than by the status module.
#[derive(Debug, Clone, Copy)]
enum SubState {
    Active,
    Expiring,
    TrialActive,
    Suspended,
    Expired,
    TrialExpired,
    Cancelled,
}

impl SubState {
    fn usable(self) -> bool {
        matches!(self, SubState::Active | SubState::Expiring | SubState::TrialActive)
    }
    fn facts(self) -> SubscriptionFacts {
        let f = |trial, start: NaiveDate, end: NaiveDate, suspended, cancelled| SubscriptionFacts {
            trial,
            start_date: start,
            end_date: end,
            suspended,
            cancelled,
        };
        match self {
            SubState::Active => f(false, date(2026, 1, 1), date(2027, 6, 1), false, false),
            SubState::Expiring => f(false, date(2025, 7, 1), date(2026, 7, 1), false, false),
            SubState::TrialActive => f(true, date(2026, 6, 1), date(2026, 9, 1), false, false),
            SubState::Suspended => f(false, date(2026, 1, 1), date(2027, 6, 1), true, false),
            SubState::Expired => f(false, date(2025, 1, 1), date(2026, 1, 1), false, false),
            SubState::TrialExpired => f(true, date(2026, 4, 1), date(2026, 5, 1), false, false),
            SubState::Cancelled => f(false, date(2026, 1, 1), date(2027, 6, 1), false, true),
        }
    }
}

fn sub_state() -> impl Strategy<Value = SubState> {
    prop_oneof![
        14 => Just(SubState::Active),
        1 => Just(SubState::Expiring),
        1 => Just(SubState::TrialActive),
        1 => Just(SubState::Suspended),
        1 => Just(SubState::Expired),
        1 => Just(SubState::TrialExpired),
        1 => Just(SubState::Cancelled),
    ]
}

fn provisioning() -> impl Strategy<Value = ProvisioningStatus> {
    prop_oneof![
        16 => Just(ProvisioningStatus::Provisioned),
        1 => Just(ProvisioningStatus::AwaitingDetails),
        1 => Just(ProvisioningStatus::Provisioning),
    ]
}

/// Property values, lawful ones first and then unlawful ones, labelled by hand
/// (the checker's `lawful_value` knows the lawful ones).
fn property_value(p: PropertyName) -> impl Strategy<Value = String> {
    let (lawful, unlawful): (&'static [&'static str], &'static [&'static str]) = match p {
        PropertyName::Location => (&["HQ", "Branch office"], &[" padded ", ""]),
        PropertyName::PhoneNumber => (&["+46701234567", "+4930123456"], &["0701234567", "+0701234", "+46 70", "tel"]),
        PropertyName::Extension => (&["12", "1234567890"], &["1", "12345678901", "12a"]),
        PropertyName::Site => (&["site-on", "site-off"], &["site-x"]),
        PropertyName::AccountType => (&["host", "attendee"], &["guest"]),
    };
    prop_oneof![
        12 => prop::sample::select(lawful).prop_map(str::to_string),
        1 => prop::sample::select(unlawful).prop_map(str::to_string),
    ]
}

/// A value for each property, each present half of the time. The harness
/// keeps only those the product takes, unless the addition is marked stray.
fn properties() -> impl Strategy<Value = BTreeMap<PropertyName, String>> {
    PROPS
        .map(|p| prop::option::weighted(0.8, property_value(p)).prop_map(move |v| v.map(|v| (p, v))))
        .prop_map(|v| v.into_iter().flatten().collect())
}

/// An addition as drawn: product index, subscription, properties, and
/// whether properties the product does not take are kept (stray).
type DrawnAdd = (usize, Option<String>, BTreeMap<PropertyName, String>, bool);

/// A change as drawn; `request` turns it into the request for a given state.
#[derive(Debug, Clone)]
struct DrawnChange {
    /// Which of the two users the change is for.
    who: usize,
    add: Vec<DrawnAdd>,
    /// (index, subscription, of a held licence rather than any product)
    remove: Vec<(usize, Option<String>, bool)>,
    add_required: bool,
}

fn subscription_choice() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.3, prop::sample::select(&SUBS[..]).prop_map(str::to_string))
}

fn change(n: usize) -> impl Strategy<Value = DrawnChange> {
    let add = (0..n, subscription_choice(), properties(), prop::bool::weighted(0.05));
    let remove = (0..16usize, subscription_choice(), prop::bool::weighted(0.85));
    (
        prop_oneof![1 => Just(Vec::<DrawnAdd>::new()), 4 => prop::collection::vec(add, 1..3)],
        prop::collection::vec(remove, 0..3),
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(add, mut remove, add_required, second_user)| {
            if !add.is_empty() && remove.len() == 2 {
                remove.pop(); // at most one removal beside additions; one or two alone
            }
            DrawnChange {
                who: usize::from(second_user),
                add,
                remove,
                add_required,
            }
        })
}

impl DrawnChange {
    fn request(&self, cat: &HashMap<ProductCode, Product>, held: &[Held]) -> LicenseChange {
        let n = cat.len();
        LicenseChange {
            add: self
                .add
                .iter()
                .map(|(p, subscription, props, stray)| {
                    let product = code(&format!("p{p}"));
                    let takes = &cat[&product].properties;
                    AddLicense {
                        properties: props
                            .iter()
                            .filter(|(k, _)| *stray || takes.contains_key(k))
                            .map(|(k, v)| (*k, v.clone()))
                            .collect(),
                        product,
                        subscription: subscription.clone(),
                    }
                })
                .collect(),
            remove: self
                .remove
                .iter()
                .filter_map(|(i, subscription, of_held)| match (*of_held, held.is_empty()) {
                    (true, true) => None,
                    // A held licence, named with its own subscription or none
                    // (a drawn subscription is kept when it is the right one).
                    (true, false) => {
                        let h = &held[i % held.len()];
                        Some(RemoveLicense {
                            product: h.product.clone(),
                            subscription: subscription.clone().filter(|s| s == &h.subscription),
                        })
                    }
                    (false, _) => Some(RemoveLicense {
                        product: code(&format!("p{}", i % n)),
                        subscription: subscription.clone(),
                    }),
                })
                .collect(),
            add_required: self.add_required,
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    raw: Vec<RawProduct>,
    /// Per product and subscription: (quantity, seats other users hold,
    /// state, provisioning) when the subscription carries it.
    pools: Vec<[Option<DrawnPool>; 2]>,
    kind: UserKind,
    status: UserStatus,
    usage_location: Option<usize>,
    org_location: Option<usize>,
    site_admin_of: Vec<usize>,
    /// Products the first user's queue memberships bill.
    queue_billed: Vec<usize>,
    changes: Vec<DrawnChange>,
}

/// (quantity, seats other users hold, state, provisioning) of a pool.
type DrawnPool = (i64, i64, SubState, ProvisioningStatus);

fn pool() -> impl Strategy<Value = Option<DrawnPool>> {
    // Other users hold some of the seats already (at most all of them).
    prop::option::weighted(
        0.8,
        (0..5i64, 0..3i64, sub_state(), provisioning()).prop_map(|(q, taken, s, p)| (q, taken.min(q), s, p)),
    )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (3..9usize).prop_flat_map(|n| {
        (
            prop::collection::vec(raw_product(n), n),
            prop::collection::vec([pool(), pool()], n),
            prop_oneof![4 => Just(UserKind::Internal), 1 => Just(UserKind::External)],
            prop_oneof![4 => Just(UserStatus::Active), 1 => Just(UserStatus::Pending)],
            prop::option::weighted(0.6, 0..3usize),
            prop::option::weighted(0.6, 0..3usize),
            prop::collection::vec(0..2usize, 0..2),
            prop::collection::vec(0..n, 0..2),
            prop::collection::vec(change(n), 1..12),
        )
            .prop_map(
                |(raw, pools, kind, status, usage_location, org_location, site_admin_of, queue_billed, changes)| Scenario {
                    raw,
                    pools,
                    kind,
                    status,
                    usage_location,
                    org_location,
                    site_admin_of,
                    queue_billed,
                    changes,
                },
            )
    })
}

// ------------------------------------------------------- the independent checker

/// What the checker knows about a pool: its size and whether it may be used.
struct PoolTruth {
    quantity: i64,
    usable: bool,
    provisioned: bool,
}

struct World<'a> {
    cat: &'a HashMap<ProductCode, Product>,
    pools: &'a HashMap<(String, ProductCode), PoolTruth>,
    user: &'a UserFacts,
    org: &'a OrgFacts,
}

fn lawful_value(world: &World<'_>, p: PropertyName, v: &str) -> bool {
    match p {
        PropertyName::Location => ["HQ", "Branch office"].contains(&v),
        PropertyName::PhoneNumber => ["+46701234567", "+4930123456"].contains(&v),
        PropertyName::Extension => ["12", "1234567890"].contains(&v),
        PropertyName::Site => world.org.sites.iter().any(|s| s.id == v),
        PropertyName::AccountType => v == "host" || v == "attendee",
    }
}

/// Every broken rule in the state after a change, as sentences.
fn broken_rules(world: &World<'_>, before: &[Held], after: &[Held], consumed: &HashMap<(String, ProductCode), i64>) -> Vec<String> {
    let mut broken = Vec::new();
    let held: BTreeSet<&ProductCode> = after.iter().map(|h| &h.product).collect();
    if held.len() != after.len() {
        broken.push(format!("a product is held twice: {after:?}"));
    }
    let added: Vec<&Held> = after.iter().filter(|h| !before.contains(h)).collect();
    for a in after {
        let pa = &world.cat[&a.product];
        for b in after {
            if a.product >= b.product {
                continue;
            }
            let pb = &world.cat[&b.product];
            if pa.rules.excludes.contains(&pb.code) || pb.rules.excludes.contains(&pa.code) {
                broken.push(format!("{} and {} exclude each other", pa.code, pb.code));
            }
            let compatible = pa.rules.compatible_with.contains(&pb.code) || pb.rules.compatible_with.contains(&pa.code);
            if pa.family == pb.family && (pa.rules.exclusive_in_family || pb.rules.exclusive_in_family) && !compatible {
                broken.push(format!("{} and {} share exclusive family {}", pa.code, pb.code, pa.family));
            }
        }
        for r in &pa.rules.requires {
            if !held.contains(r) {
                broken.push(format!("{} is held without {r}, which it requires", pa.code));
            }
        }
    }
    let location = world.user.usage_location.as_ref().or(world.org.default_usage_location.as_ref());
    for a in &added {
        let p = &world.cat[&a.product];
        if let Some(allowed) = &p.rules.locations {
            if !location.is_some_and(|l| allowed.contains(l)) {
                broken.push(format!("{} added for location {location:?}, allowed {allowed:?}", p.code));
            }
        }
        match world.pools.get(&(a.subscription.clone(), a.product.clone())) {
            None => broken.push(format!("{} taken from {}, which does not carry it", p.code, a.subscription)),
            Some(t) if !t.usable || !t.provisioned => broken.push(format!("{} taken from unusable pool {}", p.code, a.subscription)),
            Some(_) => {}
        }
        for (name, req) in &p.properties {
            if *req == Requirement::Required && !a.properties.contains_key(name) {
                broken.push(format!("{} added without required {name:?}", p.code));
            }
        }
        for (name, value) in &a.properties {
            if !p.properties.contains_key(name) {
                broken.push(format!("{} carries {name:?}, which it does not take", p.code));
            } else if !lawful_value(world, *name, value) {
                broken.push(format!("{} carries unlawful {name:?} {value:?}", p.code));
            }
        }
        if a.properties.get(&PropertyName::AccountType).map(String::as_str) == Some("attendee") {
            match a.properties.get(&PropertyName::Site) {
                None => broken.push(format!("{} attendee without a site", p.code)),
                Some(site) => {
                    if !world.org.sites.iter().any(|s| &s.id == site && s.attendee_accounts_enabled) {
                        broken.push(format!("{} attendee on site {site} without the attendee feature", p.code));
                    }
                    if world.user.site_admin_of.contains(site) {
                        broken.push(format!("{} attendee on site {site}, which the user administers", p.code));
                    }
                }
            }
        }
    }
    for ((sub, product), used) in consumed {
        let quantity = world.pools.get(&(sub.clone(), product.clone())).map(|t| t.quantity).unwrap_or(0);
        if *used > quantity {
            broken.push(format!("pool {sub}/{product} holds {used} of {quantity} seats"));
        }
    }
    for q in &world.user.queue_billed {
        let was = before.iter().any(|h| h.product == q.product);
        if was && !after.iter().any(|h| h.product == q.product) {
            broken.push(format!("{} removed while queue {} bills it", q.product, q.queue));
        }
    }
    let pending_external = world.user.kind == UserKind::External && world.user.status == UserStatus::Pending;
    if pending_external && !before.is_empty() && before != after && !after.is_empty() {
        broken.push("a pending external user's licences were changed in place".to_string());
    }
    broken
}

/// What a plan failed to do of what was asked: every product added is held
/// after it, from the subscription named if one was, with the properties
/// given; every product removed (and not added back) is gone.
fn not_done(change: &LicenseChange, result: &[Held]) -> Vec<String> {
    let mut undone = Vec::new();
    for a in &change.add {
        match result.iter().find(|h| h.product == a.product) {
            None => undone.push(format!("{} was to be added", a.product)),
            Some(h) => {
                if let Some(s) = &a.subscription {
                    if &h.subscription != s {
                        undone.push(format!("{} was to come from {s}, not {}", a.product, h.subscription));
                    }
                }
                for (k, v) in &a.properties {
                    if h.properties.get(k) != Some(v) {
                        undone.push(format!("{} was to carry {k:?} = {v:?}", a.product));
                    }
                }
            }
        }
    }
    for r in &change.remove {
        if change.add.iter().any(|a| a.product == r.product) {
            continue;
        }
        if result.iter().any(|h| h.product == r.product) {
            undone.push(format!("{} was to be removed", r.product));
        }
    }
    undone
}

/// Whether the checker agrees with a reason given for a refusal: `Some(true)`
/// if the rule it names does forbid the change, `Some(false)` if it cannot
/// (a refusal without ground), `None` for the reasons this checker does not
/// judge (properties, sites and attendee accounts; `validation_failed`).
fn refusal_justified(
    world: &World<'_>,
    change: &LicenseChange,
    held: &[Held],
    consumed: &HashMap<(String, ProductCode), i64>,
    v: &allot_domain::Violation,
) -> Option<bool> {
    let product = v.product.as_deref().map(code);
    let related = v.related_product.as_deref().map(code);
    let p = product.as_ref().and_then(|c| world.cat.get(c));
    let rp = related.as_ref().and_then(|c| world.cat.get(c));
    let location = world.user.usage_location.as_ref().or(world.org.default_usage_location.as_ref());
    let held_after_removals = |c: &ProductCode| held.iter().any(|h| &h.product == c) && !change.remove.iter().any(|r| &r.product == c);
    Some(match v.code.as_str() {
        "not_assigned" => change.remove.iter().any(|r| {
            !held
                .iter()
                .any(|h| h.product == r.product && r.subscription.as_ref().is_none_or(|s| s == &h.subscription))
        }),
        "user_pending" => world.user.kind == UserKind::External && world.user.status == UserStatus::Pending && !held.is_empty(),
        "mutually_exclusive" => match (p, rp) {
            (Some(a), Some(b)) => a.rules.excludes.contains(&b.code) || b.rules.excludes.contains(&a.code),
            _ => false,
        },
        "one_per_family" => match (p, rp) {
            (Some(a), Some(b)) => {
                let compatible = a.rules.compatible_with.contains(&b.code) || b.rules.compatible_with.contains(&a.code);
                a.family == b.family && (a.rules.exclusive_in_family || b.rules.exclusive_in_family) && !compatible
            }
            _ => false,
        },
        // The pair is bound by `requires` (named the other way round when the
        // change removes what a held product needs).
        // Without one, a queue membership bills the product being removed.
        "requires_product" => match (p, &related) {
            (Some(a), Some(r)) => a.rules.requires.contains(r) || world.cat.get(r).is_some_and(|b| b.rules.requires.contains(&a.code)),
            (Some(a), None) => {
                world.user.queue_billed.iter().any(|q| q.product == a.code) && change.remove.iter().any(|r| r.product == a.code)
            }
            _ => false,
        },
        "usage_location_missing" => p.is_some_and(|a| a.rules.locations.is_some()) && location.is_none(),
        "location_unavailable" => match (p.and_then(|a| a.rules.locations.as_ref()), location) {
            (Some(allowed), Some(l)) => !allowed.contains(l),
            _ => false,
        },
        "seats_exhausted" => match &product {
            // No pool that could give the product a seat has one free, after
            // what this change itself releases.
            Some(c) => {
                let named = change.add.iter().find(|a| &a.product == c).and_then(|a| a.subscription.clone());
                !SUBS.iter().any(|s| {
                    let key = (s.to_string(), c.clone());
                    let Some(t) = world.pools.get(&key) else { return false };
                    let released = held
                        .iter()
                        .filter(|h| h.subscription == *s && &h.product == c && !held_after_removals(c))
                        .count() as i64;
                    let free = t.quantity - consumed.get(&key).copied().unwrap_or(0) + released;
                    named.as_deref().is_none_or(|n| n == *s) && t.usable && t.provisioned && free > 0
                })
            }
            None => false,
        },
        "subscription_not_active" => match (&product, v.subscription.as_deref()) {
            (Some(c), Some(s)) => world.pools.get(&(s.to_string(), c.clone())).is_some_and(|t| !t.usable),
            (Some(c), None) => !SUBS
                .iter()
                .any(|s| world.pools.get(&(s.to_string(), c.clone())).is_some_and(|t| t.usable)),
            _ => false,
        },
        "service_not_provisioned" => match (&product, v.subscription.as_deref()) {
            (Some(c), Some(s)) => world.pools.get(&(s.to_string(), c.clone())).is_some_and(|t| !t.provisioned),
            (Some(c), None) => !SUBS.iter().any(|s| {
                world
                    .pools
                    .get(&(s.to_string(), c.clone()))
                    .is_some_and(|t| t.provisioned && t.usable)
            }),
            _ => false,
        },
        _ => return None,
    })
}

// ---------------------------------------------------------------- the property

/// What a run reached, so that a test can tell the generator does its job.
#[derive(Default)]
struct Reached {
    plans: usize,
    refusals: usize,
    codes: BTreeSet<&'static str>,
    /// How many refusals had each code among their reasons.
    histogram: BTreeMap<&'static str, usize>,
    /// Plans for the second user (sharing the pools), and removals refused
    /// because a queue membership bills the licence.
    second_user_plans: usize,
    queue_refusals: usize,
}

fn run(s: &Scenario) -> Result<Reached, TestCaseError> {
    let mut reached = Reached::default();
    let today = date(TODAY.0, TODAY.1, TODAY.2);
    let cat = catalogue(&s.raw);
    let mut pools = Vec::new();
    let mut truth = HashMap::new();
    let mut others: HashMap<(String, ProductCode), i64> = HashMap::new();
    for (i, per_sub) in s.pools.iter().enumerate() {
        for (j, p) in per_sub.iter().enumerate() {
            let Some((quantity, taken, state, provisioning)) = *p else {
                continue;
            };
            let product = code(&format!("p{i}"));
            if taken > 0 {
                others.insert((SUBS[j].to_string(), product.clone()), taken);
            }
            pools.push(Pool {
                subscription: SUBS[j].to_string(),
                product: product.clone(),
                quantity,
                consumed: taken,
                provisioning,
                subscription_facts: state.facts(),
            });
            truth.insert(
                (SUBS[j].to_string(), product),
                PoolTruth {
                    quantity,
                    usable: state.usable(),
                    provisioned: provisioning == ProvisioningStatus::Provisioned,
                },
            );
        }
    }
    // Two users share the pools: the first as drawn, with queue memberships;
    // the second an ordinary internal user.
    let users = [
        UserFacts {
            id: "usr-1".into(),
            email: "anna@example.com".into(),
            kind: s.kind,
            status: s.status,
            usage_location: s.usage_location.map(|c| country(COUNTRIES[c])),
            site_admin_of: s.site_admin_of.iter().map(|&i| SITES[i].0.to_string()).collect(),
            queue_billed: s
                .queue_billed
                .iter()
                .map(|&i| QueueHold {
                    product: code(&format!("p{i}")),
                    queue: format!("queue-{i}"),
                })
                .collect(),
        },
        UserFacts {
            id: "usr-2".into(),
            email: "bo@example.com".into(),
            kind: UserKind::Internal,
            status: UserStatus::Active,
            usage_location: s.usage_location.map(|c| country(COUNTRIES[c])),
            site_admin_of: vec![],
            queue_billed: vec![],
        },
    ];
    let org = OrgFacts {
        default_usage_location: s.org_location.map(|c| country(COUNTRIES[c])),
        sites: SITES
            .iter()
            .map(|&(id, on)| SiteFacts {
                id: id.into(),
                attendee_accounts_enabled: on,
            })
            .collect(),
    };
    let mut held_by: [Vec<Held>; 2] = [Vec::new(), Vec::new()];
    let mut consumed: HashMap<(String, ProductCode), i64> = others;
    for drawn in &s.changes {
        let user = &users[drawn.who];
        let world = World {
            cat: &cat,
            pools: &truth,
            user,
            org: &org,
        };
        let held = held_by[drawn.who].clone();
        let change = &drawn.request(&cat, &held);
        if change.add.is_empty() && change.remove.is_empty() {
            continue; // a removal drawn while nothing is held; the empty change has its own unit test
        }
        let input = PlanInput {
            user,
            org: &org,
            held: &held,
            catalogue: &cat,
            pools: &pools,
            today,
        };
        match plan_license_change(&input, change) {
            Ok(plan) => {
                reached.plans += 1;
                // The plan is consistent with itself: result = held − release + take.
                for r in &plan.release {
                    prop_assert!(held.contains(r), "released {r:?}, which is not held");
                }
                let mut expected: Vec<Held> = held.iter().filter(|h| !plan.release.contains(h)).cloned().collect();
                expected.extend(plan.take.iter().cloned());
                expected.sort_by(|a, b| a.product.cmp(&b.product));
                prop_assert_eq!(&plan.result, &expected);
                let mut next_consumed = consumed.clone();
                for r in &plan.release {
                    *next_consumed.entry((r.subscription.clone(), r.product.clone())).or_default() -= 1;
                }
                for t in &plan.take {
                    *next_consumed.entry((t.subscription.clone(), t.product.clone())).or_default() += 1;
                }
                let broken = broken_rules(&world, &held, &plan.result, &next_consumed);
                prop_assert!(broken.is_empty(), "change {change:?} on {held:?} broke: {broken:#?}");
                let undone = not_done(change, &plan.result);
                prop_assert!(
                    undone.is_empty(),
                    "change {change:?} on {held:?} planned {:?} but: {undone:#?}",
                    plan.result
                );
                reached.second_user_plans += drawn.who;
                held_by[drawn.who] = plan.result;
                consumed = next_consumed;
                for p in pools.iter_mut() {
                    p.consumed = consumed.get(&(p.subscription.clone(), p.product.clone())).copied().unwrap_or(0);
                }
            }
            Err(violations) => {
                // Refused: nothing to apply, and every reason is explained.
                reached.refusals += 1;
                reached.codes.extend(violations.iter().map(|v| v.code.as_str()));
                reached.queue_refusals += violations
                    .iter()
                    .filter(|v| v.code.as_str() == "requires_product" && v.related_product.is_none())
                    .count();
                let distinct: BTreeSet<&'static str> = violations.iter().map(|v| v.code.as_str()).collect();
                for c in distinct {
                    *reached.histogram.entry(c).or_default() += 1;
                }
                prop_assert!(!violations.is_empty());
                for v in &violations {
                    prop_assert!(!v.message.trim().is_empty());
                    prop_assert_eq!(v.user.as_deref(), Some(user.email.as_str()), "{:?}", v);
                    if let Some(false) = refusal_justified(&world, change, &held, &consumed, v) {
                        prop_assert!(
                            false,
                            "refused {change:?} on {held:?} with {v:?}, which the checker finds no ground for"
                        );
                    }
                }
            }
        }
    }
    Ok(reached)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn planned_changes_never_break_a_rule(s in scenario()) {
        run(&s)?;
    }
}

/// The generator must reach both outcomes and every refusal often, or the
/// property above proves little.
#[test]
fn scenarios_reach_plans_and_every_refusal() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut total = Reached::default();
    for _ in 0..500 {
        let s = scenario().new_tree(&mut runner).expect("tree").current();
        let r = run(&s).expect("the property holds");
        total.plans += r.plans;
        total.refusals += r.refusals;
        total.codes.extend(r.codes);
        total.second_user_plans += r.second_user_plans;
        total.queue_refusals += r.queue_refusals;
        for (c, k) in r.histogram {
            *total.histogram.entry(c).or_default() += k;
        }
    }
    assert!(
        total.second_user_plans > 50,
        "{} plans for the second user",
        total.second_user_plans
    );
    assert!(
        total.queue_refusals > 5,
        "{} removals refused for queue memberships",
        total.queue_refusals
    );
    let (plans, refusals, codes) = (total.plans, total.refusals, total.codes);
    let histogram = &total.histogram;
    // About one change in six gets a plan: the rules are dense on purpose.
    assert!(plans > 300 && refusals > 300, "plans {plans}, refusals {refusals}: {histogram:?}");
    for expected in [
        "seats_exhausted",
        "mutually_exclusive",
        "one_per_family",
        "requires_product",
        "location_unavailable",
        "usage_location_missing",
        "property_missing",
        "property_invalid",
        "site_feature_disabled",
        "role_not_allowed",
        "service_not_provisioned",
        "subscription_not_active",
        "user_pending",
        "not_assigned",
    ] {
        assert!(codes.contains(expected), "the generator never reaches {expected}: {codes:?}");
    }
    eprintln!("plans {plans}, refusals {refusals}, codes {codes:?}");
}

/// The checker itself can fail: a plan that does nothing, one that ignores
/// the subscription asked for, and refusals without ground are all caught.
#[test]
fn the_checker_catches_idle_plans_and_groundless_refusals() {
    use allot_domain::error::Code;
    let raw = vec![RawProduct {
        family: 0,
        exclusive: false,
        compatible: vec![],
        requires: vec![],
        excludes: vec![],
        locations: None,
        properties: vec![],
    }];
    let cat = catalogue(&raw);
    let p0 = code("p0");
    let mut pools = HashMap::new();
    for s in SUBS {
        pools.insert(
            (s.to_string(), p0.clone()),
            PoolTruth {
                quantity: 2,
                usable: true,
                provisioned: true,
            },
        );
    }
    let user = UserFacts {
        id: "usr-1".into(),
        email: "anna@example.com".into(),
        kind: UserKind::Internal,
        status: UserStatus::Active,
        usage_location: None,
        site_admin_of: vec![],
        queue_billed: vec![],
    };
    let org = OrgFacts {
        default_usage_location: None,
        sites: vec![],
    };
    let world = World {
        cat: &cat,
        pools: &pools,
        user: &user,
        org: &org,
    };
    let add = LicenseChange {
        add: vec![AddLicense {
            product: p0.clone(),
            subscription: Some("sub-a".into()),
            properties: BTreeMap::new(),
        }],
        remove: vec![],
        add_required: false,
    };
    assert!(!not_done(&add, &[]).is_empty(), "a plan that adds nothing");
    let from_b = Held {
        product: p0.clone(),
        subscription: "sub-b".into(),
        properties: BTreeMap::new(),
    };
    assert!(!not_done(&add, std::slice::from_ref(&from_b)).is_empty(), "the wrong subscription");
    let from_a = Held {
        subscription: "sub-a".into(),
        ..from_b.clone()
    };
    assert!(not_done(&add, std::slice::from_ref(&from_a)).is_empty());
    let remove = LicenseChange {
        add: vec![],
        remove: vec![RemoveLicense {
            product: p0.clone(),
            subscription: None,
        }],
        add_required: false,
    };
    assert!(
        !not_done(&remove, std::slice::from_ref(&from_a)).is_empty(),
        "a removal left undone"
    );
    let none = HashMap::new();
    let reason = |c: Code| allot_domain::Violation::new(c, "refused").user("anna@example.com").product("p0");
    // Seats are free and the licence is held: neither refusal has ground.
    assert_eq!(
        refusal_justified(&world, &add, &[], &none, &reason(Code::SeatsExhausted)),
        Some(false)
    );
    assert_eq!(
        refusal_justified(&world, &remove, std::slice::from_ref(&from_a), &none, &reason(Code::NotAssigned)),
        Some(false)
    );
    assert_eq!(refusal_justified(&world, &add, &[], &none, &reason(Code::UserPending)), Some(false));
    // With both pools full the seat refusal stands.
    let full: HashMap<(String, ProductCode), i64> = SUBS.iter().map(|s| ((s.to_string(), p0.clone()), 2)).collect();
    assert_eq!(
        refusal_justified(&world, &add, &[], &full, &reason(Code::SeatsExhausted)),
        Some(true)
    );
}
