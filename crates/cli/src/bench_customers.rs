//! `allot bench customers`: a partner with N customers holding S
//! subscriptions in all (every status represented), its customer list
//! filtered by two subscription statuses, first page of 50, over HTTP; p50
//! and p99 of sequential requests. Baseline in the same run and database:
//! the first page of 50 of the same partner's customers by name with no
//! filter, read straight from the store (the floor of reading a page).

use std::time::{Duration, Instant};

use allot_domain::access::Role;
use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_server::clock::{Clock, SystemClock};
use allot_store::subscriptions::{Item, Subscription};
use allot_store::tenants::Org;
use allot_store::{in_transaction, new_id, Store};

use crate::anyhow_lite::{msg, Result};
use crate::bench::seat_product;
use crate::bench_bulk::json_of;

use crate::bench::Lcg;

pub(crate) async fn setup(store: &Store, customers: usize, subscriptions: usize) -> Result<String> {
    let now = SystemClock.now();
    let today = SystemClock.today();
    let partner = in_transaction!(store, |tx| {
        allot_store::catalogue::insert(&mut tx, &seat_product("bench-list")?, now).await?;
        allot_store::tenants::insert_partner(&mut tx, "Bench Partner", now).await
    })
    .map_err(|e| msg(e.detail))?;
    let mut rng = Lcg(42);
    let per = subscriptions / customers.max(1);
    for start in (0..customers).step_by(1000) {
        let end = (start + 1000).min(customers);
        let batch: Vec<(Org, Vec<Subscription>)> = (start..end)
            .map(|i| {
                let org = Org {
                    id: new_id("org"),
                    name: format!("Customer {:05}", (i * 7919) % customers),
                    partner: Some(partner.id.clone()),
                    default_usage_location: None,
                    payment_method_on_file: false,
                    self_service_purchase: true,
                    keep_licenses_on_deactivation: false,
                    created_at: allot_store::ts(now),
                };
                let subs = (0..per)
                    .map(|_| {
                        // Ends spread over -100..300 days: every dated status occurs.
                        let left = rng.below(400) as i64 - 100;
                        Subscription {
                            org: org.id.clone(),
                            id: new_id("sub"),
                            external_ref: None,
                            partner: Some(partner.id.clone()),
                            facts: SubscriptionFacts {
                                trial: rng.below(5) == 0,
                                start_date: today - chrono::Duration::days(400),
                                end_date: today + chrono::Duration::days(left),
                                suspended: rng.below(20) == 0,
                                cancelled: rng.below(25) == 0,
                            },
                            items: vec![Item {
                                product: "bench-list".into(),
                                quantity: 10,
                                consumed: 0,
                                provisioning_status: ProvisioningStatus::ALL[rng.below(6) as usize],
                            }],
                        }
                    })
                    .collect();
                (org, subs)
            })
            .collect();
        in_transaction!(store, |tx| {
            for (org, subs) in &batch {
                allot_store::tenants::insert_org(&mut tx, org, now).await?;
                for s in subs {
                    allot_store::subscriptions::insert(&mut tx, s, now).await?;
                }
            }
            Ok::<(), allot_store::StoreError>(())
        })
        .map_err(|e| msg(e.detail))?;
    }
    Ok(partner.id)
}

fn quantiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

pub async fn run(backend: &str, customers: usize, subscriptions: usize, requests: usize) -> Result<()> {
    let backends = crate::bench::backends_of(backend)?;
    if customers == 0 || subscriptions < customers || requests == 0 {
        return Err(msg(
            "customers and requests must be at least 1, and subscriptions at least customers",
        ));
    }
    println!(
        "allot bench customers: {customers} customers, {subscriptions} subscriptions, one partner; first page of 50 filtered by two statuses over HTTP, {requests} sequential requests per filter"
    );
    println!();
    println!("| backend | filter | matches on page | p50 ms | p99 ms | baseline p50 ms | baseline p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    for b in &backends {
        let database = databases.fresh(b, "customers")?;
        let store = crate::bench::open_store(&database, 16).await?;
        let partner = setup(&store, customers, subscriptions).await?;
        let token = allot_server::auth::create_token(&store, Role::PartnerAdmin, Some(&partner), None, None, SystemClock.now())
            .await
            .map_err(|e| msg(e.detail))?;
        let server = crate::bench::InProcessServer::start(&store).await?;
        let url = server.url.clone();
        let client = reqwest::Client::new();
        // Baseline: the unfiltered first page, straight from the store.
        let mut base = Vec::with_capacity(requests);
        for k in 0..requests + 20 {
            let started = Instant::now();
            let mut rd = store.read_conn().await.map_err(|e| msg(format!("{e:?}")))?;
            let filter = allot_store::customers::CustomerFilter {
                partner: Some(Some(partner.clone())),
                ..Default::default()
            };
            let page = allot_store::customers::page(&mut rd, &filter, Default::default(), None, 51)
                .await
                .map_err(|e| msg(format!("{e:?}")))?;
            if page.is_empty() {
                return Err(msg("the baseline read no customers"));
            }
            if k >= 20 {
                base.push(started.elapsed());
            }
        }
        let (bp50, bp99) = quantiles(base);
        for filter in [
            "suspended,expiring_30d",
            "trial_expired,cancelled",
            "trial_expiring_30d,trial_expiring_60d",
        ] {
            let mut times = Vec::with_capacity(requests);
            let mut found = 0;
            for k in 0..requests + 20 {
                let started = Instant::now();
                let page = json_of(
                    client
                        .get(format!(
                            "{url}/api/v1/partners/{partner}/customers?subscription_status={filter}&limit=50"
                        ))
                        .bearer_auth(&token),
                )
                .await?;
                let elapsed = started.elapsed();
                let items = page["items"].as_array().ok_or_else(|| msg(format!("no list: {page}")))?;
                found = items.len();
                if k >= 20 {
                    times.push(elapsed);
                }
            }
            let (p50, p99) = quantiles(times);
            println!("| {b} | {filter} | {found} | {p50:.2} | {p99:.2} | {bp50:.2} | {bp99:.2} |");
        }
        server.stop().await;
        store.close().await;
    }
    Ok(())
}
