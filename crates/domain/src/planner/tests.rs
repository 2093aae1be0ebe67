use super::*;
use crate::catalogue::{ProductRules, Requirement};

fn code(s: &str) -> ProductCode {
    ProductCode::parse(s).unwrap()
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn product(c: &str, family: &str, rules: ProductRules) -> (ProductCode, Product) {
    (
        code(c),
        Product {
            code: code(c),
            name: c.replace('-', " "),
            family: code(family),
            features: vec![],
            rules,
            properties: Default::default(),
            retention_days: 7,
        },
    )
}

fn catalogue() -> HashMap<ProductCode, Product> {
    let calling = ProductRules {
        exclusive_in_family: true,
        ..Default::default()
    };
    let mut cat: HashMap<_, _> = [
        product("calling-standard", "calling", calling.clone()),
        product("calling-professional", "calling", calling),
        product(
            "ucm",
            "calling",
            ProductRules {
                compatible_with: vec![code("calling-professional")],
                ..Default::default()
            },
        ),
        product(
            "cx",
            "cx",
            ProductRules {
                excludes: vec![code("calling-standard")],
                ..Default::default()
            },
        ),
        product(
            "console",
            "console",
            ProductRules {
                requires: vec![code("calling-professional")],
                ..Default::default()
            },
        ),
        product("meetings", "meetings", ProductRules::default()),
    ]
    .into_iter()
    .collect();
    let m = cat.get_mut(&code("meetings")).unwrap();
    m.properties.insert(PropertyName::Site, Requirement::Required);
    m.properties.insert(PropertyName::AccountType, Requirement::Required);
    cat
}

fn pool(sub: &str, product: &str, quantity: i64, consumed: i64) -> Pool {
    Pool {
        subscription: sub.into(),
        product: code(product),
        quantity,
        consumed,
        provisioning: ProvisioningStatus::Provisioned,
        subscription_facts: SubscriptionFacts {
            trial: false,
            start_date: day("2026-01-01"),
            end_date: day("2028-01-01"),
            suspended: false,
            cancelled: false,
        },
    }
}

fn user() -> UserFacts {
    UserFacts {
        id: "u1".into(),
        email: "anna@example.com".into(),
        kind: UserKind::Internal,
        status: UserStatus::Active,
        usage_location: None,
        site_admin_of: vec![],
        queue_billed: vec![],
    }
}

fn add(product: &str, sub: Option<&str>) -> AddLicense {
    AddLicense {
        product: code(product),
        subscription: sub.map(Into::into),
        properties: Default::default(),
    }
}

fn held(product: &str, sub: &str) -> Held {
    Held {
        product: code(product),
        subscription: sub.into(),
        properties: Default::default(),
    }
}

fn plan(held: &[Held], pools: &[Pool], change: LicenseChange) -> Result<LicensePlan, Vec<Violation>> {
    let cat = catalogue();
    let u = user();
    let org = OrgFacts {
        default_usage_location: None,
        sites: vec![SiteFacts {
            id: "site1".into(),
            attendee_accounts_enabled: false,
        }],
    };
    let input = PlanInput {
        user: &u,
        org: &org,
        held,
        catalogue: &cat,
        pools,
        today: day("2026-06-01"),
    };
    plan_license_change(&input, &change)
}

fn adding(products: &[&str]) -> LicenseChange {
    LicenseChange {
        add: products.iter().map(|p| add(p, None)).collect(),
        ..Default::default()
    }
}

fn codes(r: Result<LicensePlan, Vec<Violation>>) -> Vec<Code> {
    r.unwrap_err().iter().map(|v| v.code).collect()
}

fn all_pools() -> Vec<Pool> {
    ["calling-standard", "calling-professional", "ucm", "cx", "console", "meetings"]
        .iter()
        .map(|p| pool("s1", p, 10, 0))
        .collect()
}

#[test]
fn auto_choice_skips_full_and_unusable_pools() {
    let mut suspended = pool("s0", "cx", 10, 0);
    suspended.subscription_facts.suspended = true;
    let pools = [suspended, pool("s1", "cx", 5, 5), pool("s2", "cx", 5, 4)];
    let p = plan(&[], &pools, adding(&["cx"])).unwrap();
    assert_eq!(p.take[0].subscription, "s2");
}

#[test]
fn status_is_derived_from_today() {
    let mut ended = pool("s1", "cx", 10, 0);
    ended.subscription_facts.end_date = day("2026-06-01");
    let r = plan(&[], &[ended], adding(&["cx"]));
    assert_eq!(codes(r), [Code::SubscriptionNotActive]);
}

#[test]
fn every_violation_is_reported() {
    let pools = [pool("s1", "cx", 1, 1)];
    let change = LicenseChange {
        add: vec![add("cx", Some("s1")), add("nope", None)],
        remove: vec![RemoveLicense {
            product: code("calling-standard"),
            subscription: None,
        }],
        add_required: false,
    };
    let errs = plan(&[], &pools, change).unwrap_err();
    let found: Vec<Code> = errs.iter().map(|v| v.code).collect();
    assert_eq!(found, [Code::NotAssigned, Code::SeatsExhausted, Code::ValidationFailed]);
    assert!(errs[1].message.contains("anna@example.com"), "{}", errs[1].message);
}

#[test]
fn remove_and_add_in_a_family_is_a_move_and_reuses_the_released_seat() {
    let pools = [pool("a", "calling-standard", 1, 1), pool("b", "calling-professional", 1, 0)];
    let mut h = held("calling-standard", "a");
    h.properties.insert(PropertyName::Extension, "1234".into());
    let held = [h];
    let change = LicenseChange {
        add: vec![add("calling-professional", Some("b"))],
        remove: vec![RemoveLicense {
            product: code("calling-standard"),
            subscription: Some("a".into()),
        }],
        add_required: false,
    };
    let p = plan(&held, &pools, change).unwrap();
    assert_eq!(p.moved_families, [code("calling")]);
    assert_eq!(p.result.len(), 1);
    // Re-adding to the pool just released fits even though the snapshot says full.
    let change = LicenseChange {
        add: vec![add("calling-standard", Some("a"))],
        remove: vec![RemoveLicense {
            product: code("calling-standard"),
            subscription: None,
        }],
        add_required: false,
    };
    assert!(plan(&held, &pools, change).is_ok());
}

#[test]
fn already_held_is_refused() {
    let r = plan(&[held("cx", "s1")], &all_pools(), adding(&["cx"]));
    assert_eq!(codes(r), [Code::AlreadyAssigned]);
}

#[test]
fn excludes_hold_both_ways() {
    // cx declares the exclusion; it binds whichever side is added second.
    assert_eq!(
        codes(plan(&[held("cx", "s1")], &all_pools(), adding(&["calling-standard"]))),
        [Code::MutuallyExclusive]
    );
    assert_eq!(
        codes(plan(&[held("calling-standard", "s1")], &all_pools(), adding(&["cx"]))),
        [Code::MutuallyExclusive]
    );
    let both = plan(&[], &all_pools(), adding(&["cx", "calling-standard"])).unwrap_err();
    assert_eq!(both.len(), 1, "{both:?}");
    assert_eq!(
        both[0].message,
        "anna@example.com cannot hold cx together with calling standard: the two exclude each other."
    );
}

#[test]
fn one_per_family_except_compatible_pairs() {
    assert_eq!(
        codes(plan(
            &[held("calling-standard", "s1")],
            &all_pools(),
            adding(&["calling-professional"])
        )),
        [Code::OnePerFamily]
    );
    assert!(plan(&[held("calling-professional", "s1")], &all_pools(), adding(&["ucm"])).is_ok());
    assert_eq!(
        codes(plan(&[held("calling-standard", "s1")], &all_pools(), adding(&["ucm"]))),
        [Code::OnePerFamily]
    );
}

#[test]
fn requires_refuses_or_adds() {
    assert_eq!(codes(plan(&[], &all_pools(), adding(&["console"]))), [Code::RequiresProduct]);
    let mut change = adding(&["console"]);
    change.add_required = true;
    let p = plan(&[], &all_pools(), change.clone()).unwrap();
    assert_eq!(p.auto_added, [code("calling-professional")]);
    assert_eq!(p.take.len(), 2);
    // No seat for the required product: refused with seats_exhausted.
    let mut pools = all_pools();
    pools[1].consumed = 10;
    assert_eq!(codes(plan(&[], &pools, change)), [Code::SeatsExhausted]);
    // Removing what a kept product requires.
    let held = [held("console", "s1"), held("calling-professional", "s1")];
    let change = LicenseChange {
        remove: vec![RemoveLicense {
            product: code("calling-professional"),
            subscription: None,
        }],
        ..Default::default()
    };
    assert_eq!(codes(plan(&held, &all_pools(), change)), [Code::RequiresProduct]);
}

#[test]
fn properties_and_sites() {
    let mut a = add("meetings", None);
    let r = plan(
        &[],
        &all_pools(),
        LicenseChange {
            add: vec![a.clone()],
            ..Default::default()
        },
    );
    assert_eq!(codes(r), [Code::PropertyMissing, Code::PropertyMissing]);
    a.properties.insert(PropertyName::Site, "site1".into());
    a.properties.insert(PropertyName::AccountType, "attendee".into());
    let r = plan(
        &[],
        &all_pools(),
        LicenseChange {
            add: vec![a.clone()],
            ..Default::default()
        },
    );
    assert_eq!(codes(r), [Code::SiteFeatureDisabled]);
    a.properties.insert(PropertyName::Site, "elsewhere".into());
    a.properties.insert(PropertyName::Extension, "1".into());
    let r = plan(
        &[],
        &all_pools(),
        LicenseChange {
            add: vec![a],
            ..Default::default()
        },
    );
    assert_eq!(codes(r), [Code::PropertyInvalid, Code::PropertyInvalid]);
}

#[test]
fn phone_numbers_and_extensions() {
    assert!(valid_e164("+46812345678"));
    assert!(!valid_e164("46812345678"));
    assert!(!valid_e164("+0812345"));
    assert!(!valid_e164("+4681234567890123"));
    assert!(valid_extension("12"));
    assert!(!valid_extension("1"));
    assert!(!valid_extension("12345678901"));
    assert!(!valid_extension("12a"));
}
