//! `allot bench scim`: an org that grows to `preload + 2 × users` users.
//!
//! 1. Baseline: `users` users created through the JSON API
//!    (`POST /api/v1/orgs/{org}/users`) from `clients` clients.
//! 2. The same number created through SCIM (`POST /scim/v2/orgs/{org}/Users`,
//!    an Entra ID-shaped body) from as many clients: users per second and
//!    p50 / p99, and the ratio to the baseline.
//! 3. `lookups` SCIM lookups `filter=userName eq "..."` (the identity
//!    provider's check before each create) from the same clients, over the
//!    whole org: p50 / p99.
//!
//! Group membership PATCHes are not measured yet: SCIM Groups are not
//! served yet.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};
use allot_store::tenants::Org;
use allot_store::{new_id, Store};

use crate::anyhow_lite::{msg, Result};
use crate::bench_ui::quantiles;

async fn setup(store: &Store, preload: usize) -> Result<String> {
    let now = SystemClock.now();
    let org = Org {
        id: new_id("org"),
        name: "Bench SCIM".into(),
        partner: None,
        default_usage_location: None,
        payment_method_on_file: false,
        self_service_purchase: true,
        keep_licenses_on_deactivation: false,
        created_at: allot_store::ts(now),
    };
    let mut tx = store.begin().await.map_err(|e| msg(format!("{e:?}")))?;
    allot_store::tenants::insert_org(&mut tx, &org, now)
        .await
        .map_err(|e| msg(format!("{e:?}")))?;
    for chunk in (0..preload).collect::<Vec<_>>().chunks(10_000) {
        let list: Vec<allot_store::users::User> = chunk
            .iter()
            .map(|i| allot_store::users::User::internal(format!("usr_pre{i:08}"), format!("pre{i}@bench.example")))
            .collect();
        allot_store::users::insert_many(&mut tx, &org.id, &list, now)
            .await
            .map_err(|e| msg(format!("{e:?}")))?;
    }
    tx.commit().await.map_err(|e| msg(format!("{e:?}")))?;
    Ok(org.id)
}

/// Makes request `k`.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;
/// Whether the answer to request `k` is right.
type CheckAnswer = Arc<dyn Fn(usize, &Value) -> bool + Send + Sync>;

/// `n` requests from `clients` clients, request `k` made by `request(k)`;
/// each must answer `want`. Returns (requests per second, latencies).
async fn drive(clients: usize, n: usize, want: u16, request: MakeRequest, check: CheckAnswer) -> Result<(f64, Vec<Duration>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, request, check) = (next.clone(), request.clone(), check.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut times = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return Ok(times);
                }
                let t = Instant::now();
                let resp = request(&client, k).send().await.map_err(|e| format!("request {k}: {e}"))?;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if status != want || !check(k, &body) {
                    return Err(format!("request {k} answered {status}: {body}"));
                }
                times.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| msg(e.to_string()))?.map_err(msg)?);
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), all))
}

pub async fn run(backend: &str, users: usize, preload: usize, lookups: usize, clients: usize) -> Result<()> {
    let backends = crate::bench::backends_of(backend)?;
    if users == 0 || lookups == 0 || clients == 0 {
        return Err(msg("users, lookups and clients must be at least 1"));
    }
    println!(
        "allot bench scim: an org of {preload} users; {users} created through the JSON API, then {users} through SCIM, from {clients} clients; then {lookups} SCIM lookups by userName over all {} users",
        preload + 2 * users
    );
    println!();
    println!("| backend | JSON API users/s (baseline) | p50 / p99 ms | SCIM users/s | p50 / p99 ms | SCIM / API time | userName lookups/s | lookup p50 / p99 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    for b in &backends {
        let database = databases.fresh(b, "scim")?;
        let store = crate::bench::open_store(&database, 16).await?;
        let org = setup(&store, preload).await?;
        let now = SystemClock.now();
        let admin = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, now)
            .await
            .map_err(|e| msg(e.detail))?;
        let scim = allot_server::auth::create_token(&store, Role::Scim, None, Some(&org), None, now)
            .await
            .map_err(|e| msg(e.detail))?;
        let server = crate::bench::InProcessServer::start(&store).await?;
        let url = server.url.clone();

        let (api_url, api_token) = (format!("{url}/api/v1/orgs/{org}/users"), admin.clone());
        let (api_rate, api_times) = drive(
            clients,
            users,
            201,
            Arc::new(move |c, k| {
                c.post(&api_url)
                    .bearer_auth(&api_token)
                    .json(&json!({ "email": format!("api{k}@bench.example"), "display_name": format!("Api User {k}") }))
            }),
            Arc::new(|_, body| body["id"].is_string()),
        )
        .await?;

        let (scim_url, scim_token) = (format!("{url}/scim/v2/orgs/{org}/Users"), scim.clone());
        let (scim_rate, scim_times) = drive(
            clients,
            users,
            201,
            Arc::new(move |c, k| {
                let email = format!("scim{k}@bench.example");
                c.post(&scim_url)
                    .bearer_auth(&scim_token)
                    .header("content-type", "application/scim+json")
                    .body(
                        json!({
                            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "externalId": format!("ext-{k}"),
                            "userName": email,
                            "active": true,
                            "displayName": format!("Scim User {k}"),
                            "emails": [{ "primary": true, "type": "work", "value": email }],
                            "name": { "givenName": "Scim", "familyName": format!("User {k}") }
                        })
                        .to_string(),
                    )
            }),
            Arc::new(|_, body| body["id"].is_string()),
        )
        .await?;

        // Lookups all over the org: preloaded, API and SCIM users alike.
        let total = preload + 2 * users;
        let (look_url, look_token) = (format!("{url}/scim/v2/orgs/{org}/Users"), scim.clone());
        let name_of = move |k: usize| {
            let i = (k.wrapping_mul(7_919)) % total;
            if i < preload {
                format!("pre{i}@bench.example")
            } else if i < preload + users {
                format!("api{}@bench.example", i - preload)
            } else {
                format!("scim{}@bench.example", i - preload - users)
            }
        };
        let name_of = Arc::new(name_of);
        let (n1, n2) = (name_of.clone(), name_of.clone());
        let (look_rate, look_times) = drive(
            clients,
            lookups,
            200,
            Arc::new(move |c, k| {
                c.get(&look_url)
                    .bearer_auth(&look_token)
                    .query(&[("filter", format!("userName eq \"{}\"", n1(k).to_uppercase()))])
            }),
            Arc::new(move |k, body| body["totalResults"] == 1 && body["Resources"][0]["userName"] == json!(n2(k))),
        )
        .await?;

        let (a50, a99) = quantiles(api_times);
        let (s50, s99) = quantiles(scim_times);
        let (l50, l99) = quantiles(look_times);
        println!(
            "| {b} | {api_rate:.0} | {a50:.2} / {a99:.2} | {scim_rate:.0} | {s50:.2} / {s99:.2} | {:.2}x | {look_rate:.0} | {l50:.2} / {l99:.2} |",
            api_rate / scim_rate
        );
        server.stop().await;
        store.close().await;
    }
    Ok(())
}
