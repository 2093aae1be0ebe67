//! `allot bench check`: entitlement checks, answered from the in-process
//! index, measured beside their baselines in the same run.
//!
//! Data: N users in M orgs (default 100,000 in 100), 5 products with 3
//! features each, every user holding K of them (default 3) on the org's
//! one subscription. Then, with the same load generator (`wrk`, 2 threads,
//! C keep-alive connections, S seconds each; a Lua script picks a random
//! org, user and feature per request from prepared requests):
//!
//! 1. `GET /healthz`: the HTTP stack's own ceiling (no token, no database);
//! 2. `POST /api/v1/orgs/{org}/entitlements/check`, one question each;
//! 3. `POST /api/v1/entitlements/evaluations`, 100 questions each;
//!
//! and beside them (a) the same question as one indexed SQL query straight
//! to the same database from C concurrent tasks (no HTTP), (b) the index's
//! answer alone, in this process, per call. The server runs in this process:
//! its CPU (cores busy) and resident memory are read from `/proc/self`
//! (`wrk` is a process of its own). Memory: the resident size before the
//! server starts and once its index is read, per million licences held
//! (an upper bound: the allocator may keep what the read freed).

use std::time::{Duration, Instant};

use allot_domain::access::Role;
use allot_domain::status::ProvisioningStatus;
use allot_server::clock::{Clock, SystemClock};
use allot_store::subscriptions::Item;
use allot_store::{Store, Val};

use crate::anyhow_lite::{msg, Result};
use crate::bench::Lcg;

const PRODUCTS: usize = 5;
const FEATURES_PER_PRODUCT: usize = 3;

pub struct CheckBench {
    pub users: usize,
    pub orgs: usize,
    pub licenses_per_user: usize,
    pub connections: usize,
    pub seconds: u64,
    /// CPUs for `wrk` (`taskset -c` syntax), when the bench is pinned.
    pub load_cpus: Option<String>,
}

fn product_code(p: usize) -> String {
    format!("check-product-{p}")
}

fn feature(p: usize, f: usize) -> String {
    format!("feature-{p}-{f}")
}

fn user_id(org: usize, i: usize) -> String {
    format!("usr_chk{org:04}{i:07}")
}

/// Loads the catalogue, orgs, subscriptions, users and licences straight
/// into the database (as a data load would; the server reads them at start).
async fn setup(store: &Store, b: &CheckBench) -> Result<Vec<String>> {
    let now = SystemClock.now();
    let today = SystemClock.today();
    let e = |e: allot_store::StoreError| msg(format!("{e:?}"));
    let mut tx = store.begin().await.map_err(e)?;
    for p in 0..PRODUCTS {
        let mut product = crate::bench::seat_product(&product_code(p)).map_err(|e| msg(e.detail))?;
        product.features = (0..FEATURES_PER_PRODUCT).map(|f| feature(p, f)).collect();
        allot_store::catalogue::insert(&mut tx, &product, now).await.map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    let per_org = b.users / b.orgs;
    let mut orgs = Vec::new();
    for o in 0..b.orgs {
        // One active, provisioned subscription (as every benchmark's pool),
        // with an item of each product; ids a run can name again.
        let (mut org, mut sub) = crate::bench::seat_pool(&format!("Check {o}"), &product_code(0), per_org as i64, now, today);
        org.id = format!("org_chk{o:04}");
        sub.org = org.id.clone();
        sub.id = format!("sub_chk{o:04}");
        sub.items = (0..PRODUCTS)
            .map(|p| Item {
                product: product_code(p),
                quantity: per_org as i64,
                consumed: 0,
                provisioning_status: ProvisioningStatus::Provisioned,
            })
            .collect();
        let users: Vec<allot_store::users::User> = (0..per_org)
            .map(|i| allot_store::users::User::internal(user_id(o, i), format!("user{i}@org{o}.check.example")))
            .collect();
        let mut tx = store.begin().await.map_err(e)?;
        allot_store::tenants::insert_org(&mut tx, &org, now).await.map_err(e)?;
        allot_store::subscriptions::insert(&mut tx, &sub, now).await.map_err(e)?;
        allot_store::users::insert_many(&mut tx, &org.id, &users, now).await.map_err(e)?;
        let mut rows = Vec::new();
        for i in 0..per_org {
            for k in 0..b.licenses_per_user {
                let p = (i + k) % PRODUCTS;
                rows.push(vec![
                    Val::from(&org.id),
                    Val::from(user_id(o, i)),
                    Val::from(product_code(p)),
                    Val::from(&sub.id),
                    Val::from("{}"),
                    Val::from(allot_store::ts(now)),
                ]);
            }
        }
        for chunk in rows.chunks(5_000) {
            tx.insert_rows(
                "assignments (org_id, user_id, product, subscription_id, properties, assigned_at)",
                chunk.to_vec(),
            )
            .await
            .map_err(e)?;
        }
        tx.exec(
            "UPDATE subscription_items SET consumed = (SELECT COUNT(*) FROM assignments a WHERE a.org_id = subscription_items.org_id \
             AND a.subscription_id = subscription_items.subscription_id AND a.product = subscription_items.product) WHERE org_id = $1",
            &[Val::from(&org.id)],
        )
        .await
        .map_err(e)?;
        tx.commit().await.map_err(e)?;
        orgs.push(org.id);
    }
    Ok(orgs)
}

/// This process's resident memory in MB (`bench_bulk`'s reading).
fn rss_mb() -> f64 {
    crate::bench_bulk::rss_now_mb().unwrap_or(0.0)
}

/// This process's CPU time so far, in seconds.
fn cpu_time() -> f64 {
    crate::bench_bulk::cpu_seconds().unwrap_or(0.0)
}

/// What one load run measured.
struct Load {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Cores this process kept busy (the server; `wrk` is another process).
    cores: f64,
    rss_mb: f64,
}

/// `wrk` with a Lua script that sends the prepared requests in random
/// order (or `GET path` when none are given).
fn wrk(url: &str, path: &str, prepared: &[String], gen: &LoadGen, seconds: u64, dir: &std::path::Path) -> Result<Load> {
    wrk_paced(url, path, prepared, gen, seconds, dir, None)
}

/// How `wrk` runs: its connections, and the CPUs it is pinned to (one
/// thread per CPU) or two threads anywhere.
struct LoadGen {
    connections: usize,
    cpus: Option<String>,
}

impl LoadGen {
    fn command(&self) -> std::process::Command {
        match &self.cpus {
            Some(cpus) => {
                let threads = cpu_count(cpus).max(1);
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", cpus, "wrk", &format!("-t{threads}")]);
                c
            }
            None => {
                let mut c = std::process::Command::new("wrk");
                c.arg("-t2");
                c
            }
        }
    }
}

/// CPUs named by a `taskset -c` list such as `1` or `2-3,5`.
fn cpu_count(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum()
}

/// [`wrk`], each connection waiting `pause_ms` after each answer (a load
/// below saturation, to see latency without queueing).
fn wrk_paced(
    url: &str,
    path: &str,
    prepared: &[String],
    gen: &LoadGen,
    seconds: u64,
    dir: &std::path::Path,
    pause_ms: Option<u32>,
) -> Result<Load> {
    let script = dir.join(format!("load{}.lua", rand_suffix()));
    let mut lua = String::new();
    if let Some(ms) = pause_ms {
        lua.push_str(&format!("delay = function() return {ms} end\n"));
    }
    lua.push_str("local prepared = {\n");
    for r in prepared {
        lua.push_str(&format!("  {:?},\n", r));
    }
    lua.push_str(
        "}\n\
         math.randomseed(os.time())\n\
         request = function()\n\
           if #prepared == 0 then return wrk.format(\"GET\") end\n\
           return prepared[math.random(#prepared)]\n\
         end\n\
         done = function(summary, latency, requests)\n\
           io.write(string.format(\"ALLOT %d %d %d %d %d\\n\", summary.requests, latency:percentile(50), latency:percentile(99), latency:percentile(99.9), summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\n\
         end\n",
    );
    std::fs::write(&script, lua)?;
    let cpu0 = cpu_time();
    let started = Instant::now();
    let out = gen
        .command()
        .args([
            &format!("-c{}", gen.connections),
            &format!("-d{seconds}s"),
            "-s",
            &script.to_string_lossy(),
            &format!("{url}{path}"),
        ])
        .output()
        .map_err(|e| msg(format!("cannot run wrk (install it: apt install wrk): {e}")))?;
    let wall = started.elapsed().as_secs_f64();
    let cores = (cpu_time() - cpu0) / wall;
    let rss_mb = rss_mb();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ALLOT "))
        .ok_or_else(|| msg(format!("wrk said nothing measurable:\n{text}")))?;
    let n: Vec<f64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    if n.len() != 5 {
        return Err(msg(format!("wrk's summary is unreadable: {line}")));
    }
    if n[4] > 0.0 {
        return Err(msg(format!("{} requests failed under load:\n{text}", n[4])));
    }
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(n[0] / seconds as f64);
    Ok(Load {
        requests_per_s: rate,
        p50_ms: n[1] / 1000.0,
        p99_ms: n[2] / 1000.0,
        p999_ms: n[3] / 1000.0,
        cores,
        rss_mb,
    })
}

fn rand_suffix() -> String {
    allot_store::new_id("r")
}

fn http_request(method: &str, host: &str, path: &str, token: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The same question as one indexed SQL query, from `connections`
/// concurrent tasks for `seconds`: (questions/s, p50, p99, p99.9 ms).
async fn sql_baseline(store: &Store, orgs: &[String], per_org: usize, connections: usize, seconds: u64) -> Result<(f64, f64, f64, f64)> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let today = SystemClock.today().to_string();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (store, orgs, stop, today) = (store.clone(), orgs.to_vec(), stop.clone(), today.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(c as u64 + 11);
            let mut times = Vec::new();
            let sql = "SELECT a.product FROM users u \
                JOIN assignments a ON a.org_id = u.org_id AND a.user_id = u.id \
                JOIN subscriptions s ON s.org_id = a.org_id AND s.id = a.subscription_id \
                JOIN subscription_items i ON i.org_id = a.org_id AND i.subscription_id = a.subscription_id AND i.product = a.product \
                WHERE u.org_id = $1 AND u.id = $2 AND u.status = 'active' AND a.product = $3 \
                AND NOT s.cancelled AND NOT s.suspended AND s.end_date > $4 AND i.provisioning_status = 'provisioned' LIMIT 1";
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = rng.pick(orgs.len());
                let u = user_id(o, rng.pick(per_org));
                // The products granting a feature are known from the
                // catalogue (one here): the query checks the rest.
                let product = product_code(rng.pick(PRODUCTS));
                let started = Instant::now();
                let Ok(mut conn) = store.read_conn().await else {
                    return Err(msg("no connection"));
                };
                conn.rows(
                    sql,
                    &[Val::from(&orgs[o]), Val::from(u), Val::from(product), Val::from(today.as_str())],
                )
                .await
                .map_err(|e| msg(format!("{e:?}")))?;
                drop(conn);
                times.push(started.elapsed());
            }
            Ok::<_, crate::anyhow_lite::Error>(times)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| msg(e.to_string()))??);
    }
    let took = started.elapsed().as_secs_f64();
    all.sort();
    let q = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    Ok((all.len() as f64 / took, q(0.5), q(0.99), q(0.999)))
}

pub async fn run(backend: &str, b: CheckBench) -> Result<()> {
    let backends = crate::bench::backends_of(backend)?;
    if b.users == 0 || b.orgs == 0 || b.users < b.orgs || b.connections == 0 || b.seconds == 0 {
        return Err(msg(
            "users, orgs, connections and seconds must be at least 1, and users at least orgs",
        ));
    }
    if !(1..=PRODUCTS).contains(&b.licenses_per_user) {
        return Err(msg(format!("--licenses-per-user is 1 to {PRODUCTS}")));
    }
    let per_org = b.users / b.orgs;
    let licenses = per_org * b.orgs * b.licenses_per_user;
    let gen = LoadGen {
        connections: b.connections,
        cpus: b.load_cpus.clone(),
    };
    let placement = match &gen.cpus {
        Some(cpus) => format!("wrk -t{} -c{} pinned to CPUs {cpus}", cpu_count(cpus), b.connections),
        None => format!("wrk -t2 -c{}", b.connections),
    };
    println!(
        "allot bench check: {} users in {} orgs, {PRODUCTS} products x {FEATURES_PER_PRODUCT} features, {} licences each ({licenses} held); {placement} for {} s per run; {} cores for this process",
        per_org * b.orgs,
        b.orgs,
        b.licenses_per_user,
        b.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    for backend in &backends {
        let database = databases.fresh(backend, "check")?;
        let store = crate::bench::open_store(&database, 16).await?;
        let orgs = setup(&store, &b).await?;
        let token = allot_server::auth::create_token(&store, Role::ProductService, None, None, None, SystemClock.now())
            .await
            .map_err(|e| msg(e.detail))?;
        let rss_before = rss_mb();
        let loading = Instant::now();
        let server = crate::bench::InProcessServer::start(&store).await?;
        while !server.app.entitlements.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let load_time = loading.elapsed();
        let (known_users, held, heap) = server.app.entitlements.size();
        // The index's memory: a second copy read and held beside the
        // server's (the server's own start-up costs are not in it).
        let rss_before_copy = rss_mb();
        let copy = allot_server::app::entitlements::Entitlements::read_copy(&store, 20_000)
            .await
            .map_err(|e| msg(e.detail))?;
        let rss_after = rss_mb();
        drop(copy);
        let index_mb = (rss_after - rss_before_copy).max(0.0);
        let per_million = index_mb * 1e6 / held.max(1) as f64;

        // Prepared requests: random org, user and feature (by id; a tenth by email).
        let host = server.url.trim_start_matches("http://").to_string();
        let mut rng = Lcg(5);
        let mut singles = Vec::new();
        for k in 0..5_000 {
            let o = rng.pick(orgs.len());
            let i = rng.pick(per_org);
            let user = if k % 10 == 0 {
                format!("User{i}@Org{o}.check.example")
            } else {
                user_id(o, i)
            };
            let f = feature(rng.pick(PRODUCTS), rng.pick(FEATURES_PER_PRODUCT));
            let body = format!("{{\"user\":\"{user}\",\"feature\":\"{f}\"}}");
            singles.push(http_request(
                "POST",
                &host,
                &format!("/api/v1/orgs/{}/entitlements/check", orgs[o]),
                &token,
                &body,
            ));
        }
        let mut batches = Vec::new();
        for _ in 0..500 {
            let o = rng.pick(orgs.len());
            let questions: Vec<String> = (0..100)
                .map(|_| {
                    let u = user_id(o, rng.pick(per_org));
                    let f = feature(rng.pick(PRODUCTS), rng.pick(FEATURES_PER_PRODUCT));
                    format!("{{\"user\":\"{u}\",\"feature\":\"{f}\"}}")
                })
                .collect();
            let body = format!("{{\"org\":\"{}\",\"evaluations\":[{}]}}", orgs[o], questions.join(","));
            batches.push(http_request("POST", &host, "/api/v1/entitlements/evaluations", &token, &body));
        }
        // A short warm-up, then each measured run.
        let dir = databases.dir().to_path_buf();
        wrk(&server.url, "/", &singles, &gen, 2, &dir)?;
        let health = wrk(&server.url, "/healthz", &[], &gen, b.seconds, &dir)?;
        let single = wrk(&server.url, "/", &singles, &gen, b.seconds, &dir)?;
        let batch = wrk(&server.url, "/", &batches, &gen, b.seconds, &dir)?;
        // Below saturation: every connection pauses 4 ms after each answer.
        let paced = wrk_paced(&server.url, "/", &singles, &gen, b.seconds, &dir, Some(4))?;
        let (sql_rate, sql_p50, sql_p99, sql_p999) = sql_baseline(&store, &orgs, per_org, b.connections, b.seconds).await?;

        // The index alone, per call.
        let today = SystemClock.today();
        let ent = server.app.entitlements.clone();
        let asked: Vec<(String, String, String)> = (0..100_000)
            .map(|_| {
                let o = rng.pick(orgs.len());
                (
                    orgs[o].clone(),
                    user_id(o, rng.pick(per_org)),
                    feature(rng.pick(PRODUCTS), rng.pick(FEATURES_PER_PRODUCT)),
                )
            })
            .collect();
        let mut per_call = Vec::with_capacity(1_000_000);
        let mut allowed = 0usize;
        for round in 0..10 {
            for (o, u, f) in &asked {
                let t = Instant::now();
                let yes = ent.answer(o, u, f, today);
                per_call.push(t.elapsed());
                allowed += usize::from(yes && round == 0);
            }
        }
        per_call.sort();
        let q = |p: f64| per_call[((per_call.len() as f64 - 1.0) * p).round() as usize].as_nanos();
        server.stop().await;
        store.close().await;

        let single_checks = single.requests_per_s;
        let batch_checks = batch.requests_per_s * 100.0;
        println!();
        println!("### {backend}");
        println!();
        println!(
            "Index: {known_users} users, {held} licences read in {:.2} s. Its tables and strings: {:.0} MB, {:.0} MB per million licences held. (The process: {:.0} MB resident before the server started; a second copy of the index read and held: {:.0} MB -> {:.0} MB resident, {index_mb:.0} MB, {per_million:.0} MB per million licences, which includes what the read left with the allocator.) {:.0}% of the index's answers are `allowed`.",
            load_time.as_secs_f64(),
            heap as f64 / 1e6,
            heap as f64 / held.max(1) as f64,
            rss_before,
            rss_before_copy,
            rss_after,
            100.0 * allowed as f64 / asked.len() as f64
        );
        println!();
        println!("| what | checks/s | requests/s | p50 ms | p99 ms | p99.9 ms | server cores busy | server RSS MB |");
        println!("|---|---|---|---|---|---|---|---|");
        let row = |name: &str, checks: f64, l: &Load| {
            println!(
                "| {name} | {checks:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
                l.requests_per_s, l.p50_ms, l.p99_ms, l.p999_ms, l.cores, l.rss_mb
            )
        };
        row("`GET /healthz` (the HTTP stack's ceiling)", 0.0, &health);
        row("single check over HTTP", single_checks, &single);
        row("batches of 100 over HTTP", batch_checks, &batch);
        row("single check, each connection pausing 4 ms", paced.requests_per_s, &paced);
        println!(
            "| (a) one indexed SQL query, {} tasks, no HTTP | {sql_rate:.0} | {sql_rate:.0} | {sql_p50:.2} | {sql_p99:.2} | {sql_p999:.2} | - | - |",
            b.connections
        );
        println!(
            "| (b) the index alone, in process | {:.0} | - | {:.6} | {:.6} | {:.6} | 1 | - |",
            1e9 / q(0.5).max(1) as f64,
            q(0.5) as f64 / 1e6,
            q(0.99) as f64 / 1e6,
            q(0.999) as f64 / 1e6
        );
        println!();
        println!(
            "Single checks: {:.0}% of `/healthz`'s rate, {:.1}x the SQL baseline; batches: {:.1}x the SQL baseline; the index alone: median {} ns per call (timer included).",
            100.0 * single.requests_per_s / health.requests_per_s,
            single_checks / sql_rate,
            batch_checks / sql_rate,
            q(0.5)
        );
    }
    Ok(())
}
