//! `allot bench users`: one org of N users.
//!
//! 1. Lookups by email (`GET .../users?email=`, exact, case-insensitive):
//!    p50/p99 of sequential requests over HTTP. Baseline in the same run:
//!    the same users fetched by id (`GET .../users/{id}`, a primary-key
//!    read), the floor of an authenticated read of one user.
//! 2. Reads under load: C connections sending `GET .../users/{id}` for a
//!    few seconds, requests per second and p99. Baseline in the same run:
//!    `GET /healthz` (no token, no database) from the same connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};
use allot_store::tenants::Org;
use allot_store::{new_id, Store};

use crate::anyhow_lite::{msg, Result};

fn quantiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

use crate::bench::Lcg;

async fn setup(store: &Store, users: usize) -> Result<String> {
    let now = SystemClock.now();
    let org = Org {
        id: new_id("org"),
        name: "Bench Users".into(),
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
    let list: Vec<allot_store::users::User> = (0..users)
        .map(|i| allot_store::users::User::internal(format!("usr_bench{i:08}"), format!("User{i}@Bench.example")))
        .collect();
    allot_store::users::insert_many(&mut tx, &org.id, &list, now)
        .await
        .map_err(|e| msg(format!("{e:?}")))?;
    tx.commit().await.map_err(|e| msg(format!("{e:?}")))?;
    Ok(org.id)
}

/// `wrk` (when it is installed: it was the tool of the measurements this
/// benchmark repeats) from `connections` connections on one URL for
/// `for_how_long`: (requests per second, p99 ms).
fn load_with_wrk(url: &str, token: Option<&str>, connections: usize, for_how_long: Duration) -> Result<(f64, f64)> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{}s", for_how_long.as_secs().max(1)),
        "--latency",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().map_err(|e| msg(format!("cannot run wrk: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || text.contains("Non-2xx") {
        return Err(msg(format!("wrk failed or saw errors:\n{text}")));
    }
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| msg(format!("no rate in wrk's output:\n{text}")))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .and_then(|v| {
            let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
            let n: f64 = num.parse().ok()?;
            Some(match unit {
                "us" => n / 1000.0,
                "ms" => n,
                "s" => n * 1000.0,
                _ => return None,
            })
        })
        .ok_or_else(|| msg(format!("no p99 in wrk's output:\n{text}")))?;
    Ok((rate, p99))
}

fn wrk_installed() -> bool {
    std::process::Command::new("wrk").arg("--version").output().is_ok()
}

/// `connections` clients sending GETs of `path_of(k)` for `for_how_long`:
/// (requests per second, p99 ms).
async fn load(
    url: &str,
    token: Option<&str>,
    connections: usize,
    for_how_long: Duration,
    path_of: Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (url, token, stop, path_of) = (url.to_string(), token.map(str::to_string), stop.clone(), path_of.clone());
        tasks.push(tokio::spawn(async move {
            // A client that cannot be built (no TLS backend, ...) counts as
            // one failed request, so the run reports it instead of panicking.
            let Ok(client) = reqwest::Client::builder().pool_max_idle_per_host(1).build() else {
                return (Vec::new(), 1);
            };
            let mut rng = Lcg(c as u64 + 1);
            let mut times = Vec::new();
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut req = client.get(format!("{url}{}", path_of(rng.below(u64::MAX))));
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let started = Instant::now();
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        times.push(started.elapsed());
                    }
                    _ => failed += 1,
                }
            }
            (times, failed)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(for_how_long).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (times, f) = t.await.map_err(|e| msg(e.to_string()))?;
        all.extend(times);
        failed += f;
    }
    let took = started.elapsed().as_secs_f64();
    if failed > 0 {
        return Err(msg(format!("{failed} requests failed under load")));
    }
    let rate = all.len() as f64 / took;
    Ok((rate, quantiles(all).1))
}

pub async fn run(backend: &str, users: usize, requests: usize, connections: usize, seconds: u64) -> Result<()> {
    let backends = crate::bench::backends_of(backend)?;
    if users == 0 || requests == 0 || connections == 0 || seconds == 0 {
        return Err(msg("users, requests, connections and seconds must be at least 1"));
    }
    println!("allot bench users: one org of {users} users; {requests} sequential lookups by email vs. by id; then {connections} connections for {seconds} s: GET one user vs. GET /healthz");
    println!();
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    let mut lookups = Vec::new();
    let mut loads = Vec::new();
    for b in &backends {
        let database = databases.fresh(b, "users")?;
        let store = crate::bench::open_store(&database, 16).await?;
        let org = setup(&store, users).await?;
        let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, SystemClock.now())
            .await
            .map_err(|e| msg(e.detail))?;
        let server = crate::bench::InProcessServer::start(&store).await?;
        let url = server.url.clone();
        let client = reqwest::Client::new();
        let mut rng = Lcg(7);
        let (mut by_email, mut by_id) = (Vec::new(), Vec::new());
        for k in 0..requests + 20 {
            let i = rng.below(users as u64);
            // Asked in another case than stored: the match is case-insensitive.
            let email = format!("user{i}@bench.example");
            let started = Instant::now();
            let page = crate::bench_bulk::json_of(
                client
                    .get(format!("{url}/api/v1/orgs/{org}/users"))
                    .query(&[("email", email.as_str())])
                    .bearer_auth(&token),
            )
            .await?;
            let took = started.elapsed();
            if page["items"].as_array().map(Vec::len) != Some(1) {
                return Err(msg(format!("{email} was not found: {page}")));
            }
            let started = Instant::now();
            let user = crate::bench_bulk::json_of(
                client
                    .get(format!("{url}/api/v1/orgs/{org}/users/usr_bench{i:08}"))
                    .bearer_auth(&token),
            )
            .await?;
            let took_id = started.elapsed();
            if user["id"].as_str().is_none() {
                return Err(msg(format!("usr_bench{i:08} was not found: {user}")));
            }
            if k >= 20 {
                by_email.push(took);
                by_id.push(took_id);
            }
        }
        let (e50, e99) = quantiles(by_email);
        let (i50, i99) = quantiles(by_id);
        lookups.push(format!("| {b} | {e50:.2} | {e99:.2} | {i50:.2} | {i99:.2} |"));
        let dur = Duration::from_secs(seconds);
        let n = users as u64;
        let org2 = org.clone();
        let user_path: Arc<dyn Fn(u64) -> String + Send + Sync> =
            Arc::new(move |k| format!("/api/v1/orgs/{org2}/users/usr_bench{:08}", k % n));
        let health: Arc<dyn Fn(u64) -> String + Send + Sync> = Arc::new(|_| "/healthz".to_string());
        // Warm up, then measure each, the baseline first and last. wrk asks
        // for one user; the built-in client for users all over the org.
        let (h1, hp1, u, up, h2, hp2) = if wrk_installed() {
            let one = format!("{url}/api/v1/orgs/{org}/users/usr_bench{:08}", n / 2);
            let health = format!("{url}/healthz");
            let c = connections;
            let run =
                move |u: String, t: Option<String>, d: Duration| tokio::task::spawn_blocking(move || load_with_wrk(&u, t.as_deref(), c, d));
            let join = |e: tokio::task::JoinError| msg(e.to_string());
            run(one.clone(), Some(token.clone()), Duration::from_secs(1))
                .await
                .map_err(join)??;
            let (h1, hp1) = run(health.clone(), None, dur).await.map_err(join)??;
            let (u, up) = run(one, Some(token.clone()), dur).await.map_err(join)??;
            let (h2, hp2) = run(health, None, dur).await.map_err(join)??;
            (h1, hp1, u, up, h2, hp2)
        } else {
            load(&url, Some(&token), connections, Duration::from_secs(1), user_path.clone()).await?;
            let (h1, hp1) = load(&url, None, connections, dur, health.clone()).await?;
            let (u, up) = load(&url, Some(&token), connections, dur, user_path).await?;
            let (h2, hp2) = load(&url, None, connections, dur, health).await?;
            (h1, hp1, u, up, h2, hp2)
        };
        let (h, hp) = ((h1 + h2) / 2.0, hp1.max(hp2));
        loads.push(format!("| {b} | {u:.0} | {up:.2} | {h:.0} | {hp:.2} | {:.0}% |", u / h * 100.0));
        server.stop().await;
        store.close().await;
    }
    println!("Lookups (ms):");
    println!();
    println!("| backend | by email p50 | by email p99 | by id p50 (baseline) | by id p99 (baseline) |");
    println!("|---|---|---|---|---|");
    for l in lookups {
        println!("{l}");
    }
    println!();
    println!(
        "Reads under load ({}):",
        if wrk_installed() {
            "wrk -t2"
        } else {
            "the built-in client; install wrk for the figures of BENCHMARKS.md"
        }
    );
    println!();
    println!("| backend | GET user /s | p99 ms | GET /healthz /s (baseline) | p99 ms | ratio |");
    println!("|---|---|---|---|---|---|");
    for l in loads {
        println!("{l}");
    }
    Ok(())
}
