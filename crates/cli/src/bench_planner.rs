//! `allot bench planner`: one licence change planned for a user holding 10
//! licences against a 200-product catalogue with rules, next to a baseline in
//! the same run that only does what a seats-only check must do (find a pool
//! with a free seat for each addition and build the resulting licence list).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use chrono::NaiveDate;

use allot_domain::catalogue::{validate_catalogue, Product, ProductRules, PropertyName, Requirement};
use allot_domain::planner::{
    plan_license_change, AddLicense, Held, LicenseChange, OrgFacts, PlanInput, Pool, RemoveLicense, SiteFacts, UserFacts,
};
use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_domain::types::{CountryCode, ProductCode, UserKind, UserStatus};

use crate::anyhow_lite::{msg, Result};

const FAMILIES: usize = 20;
const PER_FAMILY: usize = 10;

fn code(s: &str) -> Result<ProductCode> {
    ProductCode::parse(s).map_err(|e| msg(e.to_string()))
}

fn country(s: &str) -> Result<CountryCode> {
    CountryCode::parse(s).map_err(|e| msg(e.to_string()))
}

fn product_code(family: usize, i: usize) -> Result<ProductCode> {
    code(&format!("f{family:02}-p{i}"))
}

/// 20 families of 10 products. Families 0–9 are exclusive, with p0/p1 a
/// compatible pair; every p2 requires p7 of the family before; every p3
/// excludes p4 of the next family; every p5 is sold in 3 countries; every p6
/// takes a required extension and an optional phone number.
fn catalogue() -> Result<HashMap<ProductCode, Product>> {
    let mut cat = HashMap::new();
    for f in 0..FAMILIES {
        for i in 0..PER_FAMILY {
            let mut rules = ProductRules {
                exclusive_in_family: f < 10,
                ..Default::default()
            };
            if i == 0 {
                rules.compatible_with.push(product_code(f, 1)?);
            }
            if i == 2 && f > 0 {
                rules.requires.push(product_code(f - 1, 7)?);
            }
            if i == 3 {
                rules.excludes.push(product_code((f + 1) % FAMILIES, 4)?);
            }
            if i == 5 {
                rules.locations = Some(vec![country("SE")?, country("NO")?, country("DE")?]);
            }
            let mut properties = std::collections::BTreeMap::new();
            if i == 6 {
                properties.insert(PropertyName::Extension, Requirement::Required);
                properties.insert(PropertyName::PhoneNumber, Requirement::Optional);
            }
            let c = product_code(f, i)?;
            cat.insert(
                c.clone(),
                Product {
                    code: c,
                    name: format!("Family {f} product {i}"),
                    family: code(&format!("family-{f:02}"))?,
                    features: vec!["feature".into()],
                    rules,
                    properties,
                    retention_days: 7,
                },
            );
        }
    }
    validate_catalogue(&cat).map_err(|e| msg(format!("bench catalogue is invalid: {e:?}")))?;
    Ok(cat)
}

fn day(y: i32, m: u32, d: u32) -> Result<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| msg("bad date"))
}

/// One pool per product on a main subscription, a second one on a renewal
/// for the first 50 products: 250 pools.
fn pools(cat: &HashMap<ProductCode, Product>) -> Result<Vec<Pool>> {
    let facts = SubscriptionFacts {
        trial: false,
        start_date: day(2026, 1, 1)?,
        end_date: day(2027, 1, 1)?,
        suspended: false,
        cancelled: false,
    };
    let mut codes: Vec<&ProductCode> = cat.keys().collect();
    codes.sort();
    let mut pools = Vec::new();
    for (n, c) in codes.iter().enumerate() {
        for sub in ["sub-main", "sub-renewal"] {
            if sub == "sub-renewal" && n >= 50 {
                continue;
            }
            pools.push(Pool {
                subscription: sub.into(),
                product: (*c).clone(),
                quantity: 1000,
                consumed: 400,
                provisioning: ProvisioningStatus::Provisioned,
                subscription_facts: facts,
            });
        }
    }
    Ok(pools)
}

/// The user holds p8 of families 10–19 (10 licences). The change moves
/// family 10 from p8 to p9 (keeping properties), adds f12-p6 with an
/// extension and f13-p5 (a located product): 3 additions, 1 removal, every
/// rule family consulted.
fn scenario() -> Result<(Vec<Held>, LicenseChange)> {
    let held = (10..20)
        .map(|f| {
            Ok(Held {
                product: product_code(f, 8)?,
                subscription: "sub-main".into(),
                properties: Default::default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ext = std::collections::BTreeMap::new();
    ext.insert(PropertyName::Extension, "4711".to_string());
    ext.insert(PropertyName::PhoneNumber, "+46812345678".to_string());
    let change = LicenseChange {
        add: vec![
            AddLicense {
                product: product_code(10, 9)?,
                subscription: None,
                properties: Default::default(),
            },
            AddLicense {
                product: product_code(12, 6)?,
                subscription: None,
                properties: ext,
            },
            AddLicense {
                product: product_code(13, 5)?,
                subscription: None,
                properties: Default::default(),
            },
        ],
        remove: vec![RemoveLicense {
            product: product_code(10, 8)?,
            subscription: None,
        }],
        add_required: false,
    };
    Ok((held, change))
}

/// What a planner without rules must still do: a pool with a free seat for
/// each addition, and the resulting licence list.
fn seats_only(held: &[Held], change: &LicenseChange, pools: &[Pool]) -> Option<Vec<Held>> {
    let mut result: Vec<Held> = held
        .iter()
        .filter(|h| !change.remove.iter().any(|r| r.product == h.product))
        .cloned()
        .collect();
    for a in &change.add {
        let pool = pools.iter().find(|p| p.product == a.product && p.quantity > p.consumed)?;
        result.push(Held {
            product: a.product.clone(),
            subscription: pool.subscription.clone(),
            properties: a.properties.clone(),
        });
    }
    result.sort_by(|a, b| a.product.cmp(&b.product));
    Some(result)
}

/// Median and 99th percentile of per-call times (ns), measured in batches.
fn measure(mut f: impl FnMut()) -> (f64, f64) {
    const BATCH: u32 = 200;
    // Warm up caches and the allocator.
    for _ in 0..20_000 {
        f();
    }
    let mut per_call: Vec<f64> = (0..1_000)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(BATCH)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    (per_call[per_call.len() / 2], per_call[per_call.len() * 99 / 100])
}

pub fn run() -> Result<()> {
    let cat = catalogue()?;
    let pools = pools(&cat)?;
    let (held, change) = scenario()?;
    let user = UserFacts {
        id: "usr-bench".into(),
        email: "anna@example.com".into(),
        kind: UserKind::Internal,
        status: UserStatus::Active,
        usage_location: Some(country("SE")?),
        site_admin_of: vec![],
        queue_billed: vec![],
    };
    let org = OrgFacts {
        default_usage_location: Some(country("SE")?),
        sites: vec![SiteFacts {
            id: "site-1".into(),
            attendee_accounts_enabled: true,
        }],
    };
    let input = PlanInput {
        user: &user,
        org: &org,
        held: &held,
        catalogue: &cat,
        pools: &pools,
        today: day(2026, 6, 15)?,
    };
    // The scenario must be a plan, not a refusal, or the figure is meaningless.
    let plan = plan_license_change(&input, &change).map_err(|v| msg(format!("bench change refused: {v:?}")))?;
    let baseline_result = seats_only(&held, &change, &pools).ok_or_else(|| msg("baseline found no seat"))?;
    if plan.result.len() != baseline_result.len() || plan.take.len() != 3 || plan.release.len() != 1 {
        return Err(msg("planner and baseline disagree on the bench change"));
    }
    let (planner_p50, planner_p99) = measure(|| {
        let _ = black_box(plan_license_change(black_box(&input), black_box(&change)));
    });
    let (base_p50, base_p99) = measure(|| {
        let _ = black_box(seats_only(black_box(&held), black_box(&change), black_box(&pools)));
    });
    println!(
        "allot bench planner: user holding {} licences, {} products in the catalogue, {} pools; change = 1 move + 2 adds",
        held.len(),
        cat.len(),
        pools.len()
    );
    println!();
    println!("| what | median µs | p99 µs |");
    println!("|---|---|---|");
    println!(
        "| plan_license_change (all rules) | {:.2} | {:.2} |",
        planner_p50 / 1000.0,
        planner_p99 / 1000.0
    );
    println!(
        "| baseline: seats only (pool lookup + result list) | {:.2} | {:.2} |",
        base_p50 / 1000.0,
        base_p99 / 1000.0
    );
    println!();
    println!(
        "planner / baseline (median): {:.1}x; target median <= 10 µs: {}",
        planner_p50 / base_p50,
        if planner_p50 <= 10_000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
