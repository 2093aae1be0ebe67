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
//! 4. 1,000 group membership PATCHes of 100 members each (Entra ID's
//!    shape) on one group whose licence template gives a product: each
//!    client adds a block of 100 preloaded users, then removes it, so that
//!    every PATCH gives or takes back 100 licences. PATCHes per second,
//!    p50 / p99; checked afterwards: every licence given was taken back
//!    (the seats are free again) and each member's change is audited.

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

/// Group membership PATCHes: how many, and members in each.
const PATCHES: usize = 1_000;
const MEMBERS: usize = 100;

/// The group phase: a product, a subscription with its seats, a group and
/// its template; each client adds its blocks of preloaded users and removes
/// them again. Returns (PATCHes per second, latencies).
async fn group_phase(
    store: &Store,
    url: &str,
    org: &str,
    admin: &str,
    scim: &str,
    clients: usize,
    preload: usize,
) -> Result<(f64, Vec<Duration>)> {
    let blocks = PATCHES / 2;
    if preload < blocks * MEMBERS {
        return Err(msg(format!("the group phase needs --preload {} at least", blocks * MEMBERS)));
    }
    let c = reqwest::Client::new();
    let call = |req: reqwest::RequestBuilder, want: u16| async move {
        let resp = req.send().await.map_err(|e| msg(e.to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != want {
            return Err(msg(format!("set-up answered {status}: {body}")));
        }
        Ok(body)
    };
    call(
        c.post(format!("{url}/api/v1/products")).bearer_auth(admin).json(&json!({
            "code": "bench-phone", "name": "Bench phone", "family": "bench-phone", "features": ["phone"]
        })),
        201,
    )
    .await?;
    call(
        c.post(format!("{url}/api/v1/orgs/{org}/subscriptions"))
            .bearer_auth(admin)
            .json(&json!({
                "start_date": "2020-01-01", "end_date": "2099-01-01",
                "items": [{ "product": "bench-phone", "quantity": clients * MEMBERS }]
            })),
        201,
    )
    .await?;
    let group = call(
        c.post(format!("{url}/scim/v2/orgs/{org}/Groups"))
            .bearer_auth(scim)
            .header("content-type", "application/scim+json")
            .body(json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Phones" }).to_string()),
        201,
    )
    .await?;
    let group = group["id"].as_str().ok_or_else(|| msg("the group has no id"))?.to_string();
    call(
        c.post(format!("{url}/api/v1/orgs/{org}/license-templates"))
            .bearer_auth(admin)
            .json(&json!({
                "name": "Phones", "scope": { "group": group }, "licenses": [{ "product": "bench-phone" }]
            })),
        201,
    )
    .await?;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for first in 0..clients {
        let (url, scim) = (format!("{url}/scim/v2/orgs/{org}/Groups/{group}"), scim.to_string());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut times = Vec::new();
            for b in (first..blocks).step_by(clients) {
                let members: Vec<Value> = (b * MEMBERS..(b + 1) * MEMBERS)
                    .map(|i| json!({ "value": format!("usr_pre{i:08}") }))
                    .collect();
                for op in ["Add", "Remove"] {
                    let body = json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{ "op": op, "path": "members", "value": members }]
                    });
                    let t = Instant::now();
                    let resp = client
                        .patch(&url)
                        .bearer_auth(&scim)
                        .header("content-type", "application/scim+json")
                        .body(body.to_string())
                        .send()
                        .await
                        .map_err(|e| format!("PATCH {op} block {b}: {e}"))?;
                    let status = resp.status().as_u16();
                    if status != 200 {
                        let text = resp.text().await.unwrap_or_default();
                        return Err(format!("PATCH {op} block {b} answered {status}: {text}"));
                    }
                    resp.bytes().await.map_err(|e| e.to_string())?;
                    times.push(t.elapsed());
                }
            }
            Ok::<_, String>(times)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| msg(e.to_string()))?.map_err(msg)?);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    // Every licence given was taken back, and each change is on record.
    let mut tx = store.begin().await.map_err(|e| msg(format!("{e:?}")))?;
    let mut count = async |sql: &str| -> Result<i64> {
        let row = tx
            .opt_row(sql, &[allot_store::Val::from(org)])
            .await
            .map_err(|e| msg(format!("{e:?}")))?;
        row.map(|r| r.int("n"))
            .transpose()
            .map_err(|e| msg(format!("{e:?}")))
            .map(|n| n.unwrap_or(-1))
    };
    let held = count("SELECT COUNT(*) AS n FROM assignments WHERE org_id = $1 AND product = 'bench-phone'").await?;
    let changes = count("SELECT COUNT(*) AS n FROM audit_events WHERE org_id = $1 AND action = 'license.change'").await?;
    tx.rollback().await.map_err(|e| msg(format!("{e:?}")))?;
    let want = (PATCHES * MEMBERS) as i64;
    if held != 0 || changes != want {
        return Err(msg(format!(
            "after the group phase {held} bench-phone licences are held (want 0) and {changes} licence changes audited (want {want})"
        )));
    }
    Ok((rate, all))
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
    println!("then {PATCHES} group PATCHes of {MEMBERS} members on a group with a template (each gives or takes back {MEMBERS} licences)");
    println!();
    println!("| backend | JSON API users/s (baseline) | p50 / p99 ms | SCIM users/s | p50 / p99 ms | SCIM / API time | userName lookups/s | lookup p50 / p99 ms | group PATCHes/s | PATCH p50 / p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
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

        let (group_rate, group_times) = group_phase(&store, &url, &org, &admin, &scim, clients, preload).await?;

        let (a50, a99) = quantiles(api_times);
        let (g50, g99) = quantiles(group_times);
        let (s50, s99) = quantiles(scim_times);
        let (l50, l99) = quantiles(look_times);
        println!(
            "| {b} | {api_rate:.0} | {a50:.2} / {a99:.2} | {scim_rate:.0} | {s50:.2} / {s99:.2} | {:.2}x | {look_rate:.0} | {l50:.2} / {l99:.2} | {group_rate:.0} | {g50:.1} / {g99:.1} |",
            api_rate / scim_rate
        );
        server.stop().await;
        store.close().await;
    }
    Ok(())
}
