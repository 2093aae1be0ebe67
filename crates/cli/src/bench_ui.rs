//! `allot bench ui`: the console's pages, and the search that is their
//! busiest query.
//!
//! 1. Pages: one org of N users (100,000 by default) with a catalogue of
//!    50 products; a signed-in org super admin asks, in sequence, for the
//!    **Users** page with a search, a user's summary and **Edit
//!    licenses**: p50/p99 of each and its bytes (HTML + the stylesheet and
//!    script it loads). Baseline in the same run: the same data read
//!    through the JSON API with a token (the calls the page makes).
//! 2. Search: one org of M users (1,000,000 by default); a search for a
//!    part of one user's email through the substring index (the API's
//!    `GET .../users?q=`) vs. the same search as a scan (`LIKE`, read
//!    directly from the database), the baseline, in the same run.
//!
//! Client and server share this process over loopback; the times are
//! what a browser on the server's machine would wait for.

use std::time::{Duration, Instant};

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};
use allot_store::{new_id, Store};
use serde_json::json;

use crate::anyhow_lite::{msg, Result};

/// p50 and p99 in milliseconds.
pub(crate) fn quantiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    if times.is_empty() {
        return (0.0, 0.0);
    }
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

use crate::bench::Lcg;

pub(crate) fn err<E: std::fmt::Debug>(e: E) -> crate::anyhow_lite::Error {
    msg(format!("{e:?}"))
}

/// An org of `users` users (`user<i>@bench.example`, named `Bench User <i>`).
pub(crate) async fn org_of(store: &Store, users: usize) -> Result<String> {
    let now = SystemClock.now();
    let org = allot_store::tenants::Org {
        id: new_id("org"),
        name: "Bench UI".into(),
        partner: None,
        default_usage_location: None,
        payment_method_on_file: true,
        self_service_purchase: true,
        keep_licenses_on_deactivation: false,
        created_at: allot_store::ts(now),
    };
    let mut tx = store.begin().await.map_err(err)?;
    allot_store::tenants::insert_org(&mut tx, &org, now).await.map_err(err)?;
    tx.commit().await.map_err(err)?;
    // In batches of 100,000: one transaction each.
    for start in (0..users).step_by(100_000) {
        let list: Vec<allot_store::users::User> = (start..(start + 100_000).min(users))
            .map(|i| allot_store::users::User {
                display_name: format!("Bench User {i}"),
                ..allot_store::users::User::internal(format!("usr_bench{i:08}"), format!("user{i}@bench.example"))
            })
            .collect();
        let mut tx = store.begin().await.map_err(err)?;
        allot_store::users::insert_many(&mut tx, &org.id, &list, now).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    Ok(org.id)
}

/// The session cookie of a signed-in admin (the sign-in form, as a browser posts it).
pub(crate) async fn sign_in(url: &str, email: &str, password: &str) -> Result<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(err)?;
    let form = client.get(format!("{url}/ui/login")).send().await.map_err(err)?;
    let cookie = form
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("allot_login_csrf="))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| msg("the sign-in form set no CSRF cookie"))?
        .to_string();
    let html = form.text().await.map_err(err)?;
    let at = html.find(r#"name="csrf" value=""#).ok_or_else(|| msg("no CSRF field"))? + r#"name="csrf" value=""#.len();
    let csrf = html[at..].split('"').next().unwrap_or("").to_string();
    let r = client
        .post(format!("{url}/ui/login"))
        .header("cookie", format!("allot_login_csrf={cookie}"))
        .form(&[("email", email), ("password", password), ("csrf", csrf.as_str())])
        .send()
        .await
        .map_err(err)?;
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("allot_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| msg(format!("signing in failed: {}", r.status())))
}

/// Times one GET; fails unless it answers 200.
pub(crate) async fn timed(client: &reqwest::Client, req: reqwest::RequestBuilder) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let r = client.execute(req.build().map_err(err)?).await.map_err(err)?;
    let status = r.status();
    let body = r.bytes().await.map_err(err)?;
    let took = started.elapsed();
    if !status.is_success() {
        return Err(msg(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))));
    }
    Ok((took, body.len()))
}

/// The bytes of the stylesheet and script a page loads.
async fn asset_bytes(client: &reqwest::Client, url: &str, html: &str) -> Result<usize> {
    let mut total = 0;
    for marker in [r#"rel="stylesheet" href=""#, r#"<script src=""#] {
        let at = html.find(marker).ok_or_else(|| msg("a page without its stylesheet or script"))? + marker.len();
        let path = html[at..].split('"').next().unwrap_or("");
        total += client
            .get(format!("{url}{path}"))
            .send()
            .await
            .map_err(err)?
            .bytes()
            .await
            .map_err(err)?
            .len();
    }
    Ok(total)
}

struct PageFigures {
    name: &'static str,
    page: (f64, f64),
    api: (f64, f64),
    bytes: usize,
}

/// The statistics autovacuum gathers after a large load: PostgreSQL plans
/// the search from them (before it has them, it also reads the org's
/// whole primary-key range: see BENCHMARKS.md). SQLite needs none.
async fn analyze(store: &Store) -> Result<()> {
    if store.backend() == allot_store::Backend::Postgres {
        let mut tx = store.begin().await.map_err(err)?;
        tx.raw("ANALYZE users").await.map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    Ok(())
}

async fn pages(backend: &str, database: &str, users: usize, requests: usize) -> Result<Vec<PageFigures>> {
    let store = crate::bench::open_store(database, 16).await?;
    let org = org_of(&store, users).await?;
    analyze(&store).await?;
    let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let server = crate::bench::InProcessServer::start(&store).await?;
    let url = server.url.clone();
    let api = reqwest::Client::new();
    // A catalogue of 50 products in 10 families, each with seats in one subscription.
    let mut items = Vec::new();
    for p in 0..50 {
        let code = format!("product-{p:02}");
        let body = json!({ "code": code, "name": format!("Product {p}"), "family": format!("family-{}", p / 5), "features": [format!("feature-{p}")],
                           "properties": if p % 5 == 0 { json!({ "location": "optional", "phone_number": "optional" }) } else { json!({}) } });
        let r = api
            .post(format!("{url}/api/v1/products"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .map_err(err)?;
        if !r.status().is_success() {
            return Err(msg(format!("creating {code}: {}", r.text().await.unwrap_or_default())));
        }
        items.push(json!({ "product": code, "quantity": users }));
    }
    let r = api
        .post(format!("{url}/api/v1/orgs/{org}/subscriptions"))
        .bearer_auth(&token)
        .json(&json!({ "start_date": "2026-01-01", "end_date": "2099-01-01", "items": items }))
        .send()
        .await
        .map_err(err)?;
    if !r.status().is_success() {
        return Err(msg(format!("creating the subscription: {}", r.text().await.unwrap_or_default())));
    }
    let password = "bench password, long enough";
    let spec = allot_server::app::admins::AdminSpec {
        email: "boss@bench.example",
        display_name: None,
        role: Role::OrgSuperAdmin,
        partner: None,
        org: Some(&org),
    };
    allot_server::app::admins::create_admin_as_operator(&store, &spec, password, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let session = sign_in(&url, "boss@bench.example", password).await?;
    let browser = reqwest::Client::new();
    let page = |path: String| {
        browser
            .get(format!("{url}{path}"))
            .header("cookie", format!("allot_session={session}"))
    };
    let call = |path: String| api.get(format!("{url}{path}")).bearer_auth(&token);

    // The users asked about hold three licences each.
    let mut rng = Lcg(11);
    let picked: Vec<u64> = (0..20).map(|_| rng.below(users as u64)).collect();
    for i in &picked {
        let r = api
            .post(format!("{url}/api/v1/orgs/{org}/users/usr_bench{i:08}/licenses"))
            .bearer_auth(&token)
            .json(&json!({ "add": [{ "product": "product-00", "properties": { "phone_number": "+46812345678" } }, { "product": "product-11" }, { "product": "product-22" }] }))
            .send()
            .await
            .map_err(err)?;
        if !r.status().is_success() {
            return Err(msg(format!("assigning: {}", r.text().await.unwrap_or_default())));
        }
    }

    let mut out = Vec::new();
    type Paths = Box<dyn Fn(u64) -> (String, Vec<String>)>;
    let org2 = org.clone();
    let o3 = org.clone();
    let o4 = org.clone();
    let cases: Vec<(&'static str, Paths)> = vec![
        (
            "Users, searching one user's email",
            Box::new(move |i| {
                (
                    format!("/ui/orgs/{org2}/users?q=user{i}%40bench"),
                    vec![format!("/api/v1/orgs/{org2}/users?q=user{i}%40bench&limit=50")],
                )
            }),
        ),
        (
            "user summary",
            Box::new(move |i| {
                (
                    format!("/ui/orgs/{o3}/users/usr_bench{i:08}"),
                    vec![
                        format!("/api/v1/orgs/{o3}/users/usr_bench{i:08}"),
                        format!("/api/v1/orgs/{o3}/users/usr_bench{i:08}/licenses"),
                    ],
                )
            }),
        ),
        (
            "Edit licenses",
            Box::new(move |i| {
                (
                    format!("/ui/orgs/{o4}/users/usr_bench{i:08}/licenses/edit"),
                    vec![
                        format!("/api/v1/orgs/{o4}/users/usr_bench{i:08}"),
                        format!("/api/v1/orgs/{o4}/users/usr_bench{i:08}/licenses"),
                        format!("/api/v1/orgs/{o4}/licenses"),
                        "/api/v1/products?limit=1000".to_string(),
                    ],
                )
            }),
        ),
    ];
    for (name, paths) in cases {
        let (mut page_times, mut api_times) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        for k in 0..requests + 20 {
            let i = picked[k % picked.len()];
            let (p, calls) = paths(i);
            let (took, size) = timed(&browser, page(p.clone())).await?;
            if k == 0 {
                let html = browser
                    .execute(page(p).build().map_err(err)?)
                    .await
                    .map_err(err)?
                    .text()
                    .await
                    .map_err(err)?;
                bytes = size + asset_bytes(&browser, &url, &html).await?;
            }
            let started = Instant::now();
            for c in calls {
                timed(&api, call(c)).await?;
            }
            let api_took = started.elapsed();
            if k >= 20 {
                page_times.push(took);
                api_times.push(api_took);
            }
        }
        out.push(PageFigures {
            name,
            page: quantiles(page_times),
            api: quantiles(api_times),
            bytes,
        });
    }
    println!("  {backend}: pages measured");
    server.stop().await;
    store.close().await;
    Ok(out)
}

struct SearchFigures {
    index: (f64, f64),
    scan: (f64, f64),
    scans: usize,
}

async fn search(database: &str, users: usize, requests: usize) -> Result<SearchFigures> {
    let store = crate::bench::open_store(database, 16).await?;
    let started = Instant::now();
    let org = org_of(&store, users).await?;
    analyze(&store).await?;
    println!("  {users} users loaded in {:.0} s", started.elapsed().as_secs_f64());
    let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let server = crate::bench::InProcessServer::start(&store).await?;
    let url = server.url.clone();
    let client = reqwest::Client::new();
    let mut rng = Lcg(5);
    let mut index = Vec::new();
    for k in 0..requests + 20 {
        let i = rng.below(users as u64);
        let started = Instant::now();
        let page = crate::bench_bulk::json_of(
            client
                .get(format!("{url}/api/v1/orgs/{org}/users"))
                .query(&[("q", format!("user{i}@bench").as_str())])
                .bearer_auth(&token),
        )
        .await?;
        let took = started.elapsed();
        if page["items"].as_array().map(Vec::len) != Some(1) {
            return Err(msg(format!("user{i}@bench was not found once: {page}")));
        }
        if k >= 20 {
            index.push(took);
        }
    }
    // The scan, as the API ran it before the index: fewer samples, it is slow.
    let scans = (requests / 10).max(10);
    let mut scan = Vec::new();
    let mut tx = store.begin_read().await.map_err(err)?;
    for _ in 0..scans {
        let i = rng.below(users as u64);
        let pattern = format!("%user{i}@bench%");
        let started = Instant::now();
        let rows = tx
            .rows(
                "SELECT id FROM users WHERE org_id = $1 AND id > '' AND (email_normalized LIKE $2 ESCAPE '\\' OR LOWER(display_name) LIKE $2 ESCAPE '\\') ORDER BY id LIMIT 51",
                allot_store::args![org.as_str(), pattern.as_str()],
            )
            .await
            .map_err(err)?;
        scan.push(started.elapsed());
        if rows.len() != 1 {
            return Err(msg(format!("the scan found {} rows for {pattern}", rows.len())));
        }
    }
    drop(tx);
    server.stop().await;
    store.close().await;
    Ok(SearchFigures {
        index: quantiles(index),
        scan: quantiles(scan),
        scans,
    })
}

/// What `allot bench ui` measures and with how much data.
pub struct UiBench {
    pub users: usize,
    pub search_users: usize,
    pub requests: usize,
    pub customers: usize,
    pub subscriptions: usize,
    /// Console jobs and API jobs of every user, run alternately.
    pub job_pairs: usize,
    /// pages, search, bulk or all.
    pub part: String,
}

pub async fn run(backend: &str, b: UiBench) -> Result<()> {
    let UiBench {
        users,
        search_users,
        requests,
        customers,
        subscriptions,
        job_pairs,
        part,
    } = b;
    if !["all", "pages", "search", "bulk"].contains(&part.as_str()) {
        return Err(msg("--part is pages, search, bulk or all"));
    }
    let wants = |p: &str| part == "all" || part == p;
    let backends = crate::bench::backends_of(backend)?;
    if users == 0 || search_users == 0 || requests == 0 {
        return Err(msg("users, search users and requests must be at least 1"));
    }
    println!(
        "allot bench ui: pages of an org of {users} users and 50 products, {requests} sequential requests each (after 20 to warm up), \
         vs. the same data through the JSON API; then searching one user's email among {search_users} users, index vs. scan"
    );
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    let mut page_rows = Vec::new();
    let mut search_rows = Vec::new();
    let mut bulk_rows = Vec::new();
    for b in &backends {
        if wants("bulk") {
            let database = databases.fresh(b, "ui-customers")?;
            bulk_rows.push(crate::bench_ui_bulk::customers(b, &database, customers, subscriptions, requests).await?);
            let database = databases.fresh(b, "ui-bulk")?;
            bulk_rows.extend(crate::bench_ui_bulk::manage_and_jobs(b, &database, users, requests, job_pairs).await?);
            println!("  {b}: bulk pages measured");
        }
        if wants("pages") {
            let database = databases.fresh(b, "ui")?;
            for f in pages(b, &database, users, requests).await? {
                page_rows.push(format!(
                    "| {b} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                    f.name,
                    f.page.0,
                    f.page.1,
                    f.api.0,
                    f.api.1,
                    f.bytes as f64 / 1024.0
                ));
            }
        }
        if wants("search") {
            let database = databases.fresh(b, "search")?;
            let s = search(&database, search_users, requests).await?;
            search_rows.push(format!(
                "| {b} | {search_users} | {:.2} | {:.2} | {:.2} | {:.2} ({} samples) | {:.0}× |",
                s.index.0,
                s.index.1,
                s.scan.0,
                s.scan.1,
                s.scans,
                s.scan.0 / s.index.0.max(0.001)
            ));
        }
    }
    if !bulk_rows.is_empty() {
        println!();
        println!("Bulk pages (ms unless said; baseline: the JSON API's answer for the same data):");
        println!();
        println!("| backend | page | p50 | p99 | JSON API p50 (baseline) | JSON API p99 |");
        println!("|---|---|---|---|---|---|");
        for r in &bulk_rows {
            println!("{r}");
        }
    }
    if page_rows.is_empty() && search_rows.is_empty() {
        return Ok(());
    }
    println!();
    println!("Pages (ms; KB = HTML + CSS + JS):");
    println!();
    println!("| backend | page | p50 | p99 | JSON API p50 (baseline) | JSON API p99 | KB |");
    println!("|---|---|---|---|---|---|---|");
    for r in page_rows {
        println!("{r}");
    }
    println!();
    println!("Search for a part of one email (ms):");
    println!();
    println!("| backend | users | index p50 | index p99 | scan p50 (baseline) | scan p99 | scan / index |");
    println!("|---|---|---|---|---|---|---|");
    for r in search_rows {
        println!("{r}");
    }
    Ok(())
}
