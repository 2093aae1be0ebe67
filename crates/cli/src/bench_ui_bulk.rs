//! `allot bench ui`, its bulk part: the pages where the console works for
//! many users and customers at once, each beside the JSON API's answer for
//! the same data in the same run.
//!
//! 1. **Customers**: a partner with 10,000 customers and 50,000
//!    subscriptions; its Customers page filtered by two statuses vs.
//!    `GET /api/v1/partners/{partner}/customers` with the same filter.
//! 2. **Manage licenses** for 1,000 selected users of an org of N users
//!    (100,000 by default) vs. `POST .../license-summary` for the same 1,000.
//! 3. **Jobs of every user**: a job giving one product to all N users,
//!    started from the console (every user matching the Users page's
//!    filter selected, then **Save** on Manage licenses) and the same job
//!    created through the API with the N ids, in turns; the time from the
//!    request to the job's end, console vs. API. Every job is watched alike
//!    while it runs: its job page and `GET /api/v1/jobs/{job}` every 50 ms;
//!    the console jobs' samples give the job page's times beside the API's.

use std::time::{Duration, Instant};

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};
use allot_store::Store;
use serde_json::{json, Value};

use crate::anyhow_lite::{msg, Result};
use crate::bench_ui::{err, org_of, quantiles, sign_in, timed};

/// Sends a request; its JSON answer, or the error it answered.
async fn json_ok(request: reqwest::RequestBuilder) -> Result<Value> {
    let r = request.send().await.map_err(err)?;
    let status = r.status();
    let text = r.text().await.map_err(err)?;
    if !status.is_success() {
        return Err(msg(format!("{status}: {}", &text[..text.len().min(400)])));
    }
    serde_json::from_str(&text).map_err(err)
}

/// Sends a request; its text, or the error it answered.
async fn text_ok(request: reqwest::RequestBuilder) -> Result<String> {
    let r = request.send().await.map_err(err)?;
    let status = r.status();
    let text = r.text().await.map_err(err)?;
    if !status.is_success() {
        return Err(msg(format!("{status}: {}", &text[..text.len().min(400)])));
    }
    Ok(text)
}

/// A signed-in console session: its cookie and its forms' CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

async fn session(url: &str, email: &str, password: &str) -> Result<Session> {
    let cookie = sign_in(url, email, password).await?;
    let html = reqwest::Client::new()
        .get(format!("{url}/ui/tokens"))
        .header("cookie", format!("allot_session={cookie}"))
        .send()
        .await
        .map_err(err)?
        .text()
        .await
        .map_err(err)?;
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).ok_or_else(|| msg("no CSRF field on a page"))? + marker.len();
    Ok(Session {
        csrf: html[at..].split('"').next().unwrap_or("").to_string(),
        cookie,
    })
}

async fn admin(store: &Store, email: &str, password: &str, role: Role, partner: Option<&str>, org: Option<&str>) -> Result<()> {
    let spec = allot_server::app::admins::AdminSpec {
        email,
        display_name: None,
        role,
        partner,
        org,
    };
    allot_server::app::admins::create_admin_as_operator(store, &spec, password, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    Ok(())
}

/// A console form post (no redirects followed): the answer's status and `Location`.
async fn post_form(client: &reqwest::Client, url: &str, s: &Session, path: &str, form: &[(String, String)]) -> Result<(u16, String)> {
    let mut body = form_urlencoded::Serializer::new(String::new());
    body.append_pair("csrf", &s.csrf);
    for (k, v) in form {
        body.append_pair(k, v);
    }
    let r = client
        .post(format!("{url}{path}"))
        .header("cookie", format!("allot_session={}", s.cookie))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.finish())
        .send()
        .await
        .map_err(err)?;
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or("")
        .to_string();
    if status >= 400 {
        let text = r.text().await.unwrap_or_default();
        return Err(msg(format!("{path}: {status}: {}", &text[..text.len().min(400)])));
    }
    Ok((status, location))
}

fn row(backend: &str, what: &str, page: (f64, f64), api: (f64, f64)) -> String {
    format!(
        "| {backend} | {what} | {:.2} | {:.2} | {:.2} | {:.2} |",
        page.0, page.1, api.0, api.1
    )
}

/// Customers filtered by two statuses: the page vs. the API, `requests` each.
pub async fn customers(backend: &str, database: &str, customers: usize, subscriptions: usize, requests: usize) -> Result<String> {
    let store = crate::bench::open_store(database, 16).await?;
    let partner = crate::bench_customers::setup(&store, customers, subscriptions).await?;
    if store.backend() == allot_store::Backend::Postgres {
        let mut tx = store.begin().await.map_err(err)?;
        tx.raw("ANALYZE").await.map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    let token = allot_server::auth::create_token(&store, Role::PartnerAdmin, Some(&partner), None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let password = "bench password, long enough";
    admin(&store, "pat@bench.example", password, Role::PartnerAdmin, Some(&partner), None).await?;
    let server = crate::bench::InProcessServer::start(&store).await?;
    let url = server.url.clone();
    let s = session(&url, "pat@bench.example", password).await?;
    let (browser, api) = (reqwest::Client::new(), reqwest::Client::new());
    let filter = "subscription_status=expiring_30d,trial_expiring_30d";
    let (mut page_times, mut api_times) = (Vec::new(), Vec::new());
    for k in 0..requests + 20 {
        let (took, _) = timed(
            &browser,
            browser
                .get(format!("{url}/ui/partners/{partner}/customers?{filter}"))
                .header("cookie", format!("allot_session={}", s.cookie)),
        )
        .await?;
        let (api_took, _) = timed(
            &api,
            api.get(format!("{url}/api/v1/partners/{partner}/customers?{filter}&limit=50"))
                .bearer_auth(&token),
        )
        .await?;
        if k >= 20 {
            page_times.push(took);
            api_times.push(api_took);
        }
    }
    server.stop().await;
    store.close().await;
    Ok(row(
        backend,
        &format!("Customers, {customers} customers / {subscriptions} subscriptions, two statuses"),
        quantiles(page_times),
        quantiles(api_times),
    ))
}

/// The index of Manage licenses' row for `product` on `sub`.
fn row_index(html: &str, product: &str, sub: &str) -> Result<usize> {
    let needle = format!("value=\"{product}\t{sub}\"");
    let at = html.find(&needle).ok_or_else(|| msg(format!("no row for {product}")))?;
    let before = &html[..at];
    let name_at = before.rfind("name=\"row_").ok_or_else(|| msg("no row field"))? + "name=\"row_".len();
    before[name_at..]
        .split('"')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| msg("a row index"))
}

async fn job_state(api: &reqwest::Client, url: &str, token: &str, job: &str) -> Result<Value> {
    json_ok(api.get(format!("{url}/api/v1/jobs/{job}")).bearer_auth(token)).await
}

/// Watches a job until it ends as a person at the console would: its
/// page every 50 ms (timed), beside the API's view of it (timed, and
/// read for the state). Both kinds of job are watched alike, so that the
/// watching costs them the same. Fails unless every user succeeded.
async fn watch(w: &Watcher<'_>, id: &str, users: usize, page: &mut Vec<Duration>, api_view: &mut Vec<Duration>) -> Result<()> {
    loop {
        let (took, _) = timed(
            w.browser,
            w.browser
                .get(format!("{}/ui/jobs/{id}", w.url))
                .header("cookie", format!("allot_session={}", w.cookie)),
        )
        .await?;
        let started = Instant::now();
        let j = job_state(w.api, w.url, w.token, id).await?;
        let api_took = started.elapsed();
        if ended(&j) {
            if j["progress"]["succeeded"].as_i64() != Some(users as i64) {
                return Err(msg(format!("job {id} did not give every user its product: {j}")));
            }
            return Ok(());
        }
        page.push(took);
        api_view.push(api_took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What watching a job needs.
struct Watcher<'a> {
    browser: &'a reqwest::Client,
    api: &'a reqwest::Client,
    url: &'a str,
    token: &'a str,
    cookie: &'a str,
}

fn ended(j: &Value) -> bool {
    !matches!(j["state"].as_str(), Some("queued" | "running"))
}

/// Manage licenses for 1,000 users, and jobs of all `users` users from
/// the console and from the API.
pub async fn manage_and_jobs(backend: &str, database: &str, users: usize, requests: usize, pairs: usize) -> Result<Vec<String>> {
    if !(1..=4).contains(&pairs) {
        // Ten products: one for the 1,000, eight for four pairs, one for the first job.
        return Err(msg("--job-pairs is 1 to 4"));
    }
    let store = crate::bench::open_store(database, 16).await?;
    let org = org_of(&store, users).await?;
    let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let server = crate::bench::InProcessServer::start(&store).await?;
    let url = server.url.clone();
    let api = reqwest::Client::new();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(err)?;
    // Ten products, each with a seat for every user in one subscription.
    let mut items = Vec::new();
    for p in 0..10 {
        let code = format!("bulk-{p:02}");
        json_ok(
            api.post(format!("{url}/api/v1/products")).bearer_auth(&token).json(
                &json!({ "code": code, "name": format!("Bulk {p}"), "family": format!("bulk-{p}"), "features": [format!("bulk-{p}")] }),
            ),
        )
        .await?;
        items.push(json!({ "product": code, "quantity": users }));
    }
    let sub = json_ok(
        api.post(format!("{url}/api/v1/orgs/{org}/subscriptions"))
            .bearer_auth(&token)
            .json(&json!({ "start_date": "2026-01-01", "end_date": "2099-01-01", "items": items })),
    )
    .await?["id"]
        .as_str()
        .ok_or_else(|| msg("no subscription id"))?
        .to_string();
    // The statistics autovacuum would have gathered after the load.
    if store.backend() == allot_store::Backend::Postgres {
        let mut tx = store.begin().await.map_err(err)?;
        tx.raw("ANALYZE").await.map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    let password = "bench password, long enough";
    admin(&store, "boss@bench.example", password, Role::OrgSuperAdmin, None, Some(&org)).await?;
    let s = session(&url, "boss@bench.example", password).await?;
    let mut out = Vec::new();

    // 1. Manage licenses for 1,000 selected users (every 100th), half of
    // them holding bulk-00: the page vs. the API's summary of the same users.
    let picked: Vec<String> = (0..1000).map(|i| format!("usr_bench{:08}", (i * 100) % users)).collect();
    let mut picked_unique = picked.clone();
    picked_unique.sort();
    picked_unique.dedup();
    let half: Vec<&String> = picked_unique.iter().step_by(2).collect();
    let j = json_ok(
        api.post(format!("{url}/api/v1/orgs/{org}/license-jobs"))
            .bearer_auth(&token)
            .json(&json!({ "users": half, "add": [{ "product": "bulk-00" }] })),
    )
    .await?;
    let first = j["job"]["id"].as_str().unwrap_or("").to_string();
    while !ended(&job_state(&api, &url, &token, &first).await?) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut form: Vec<(String, String)> = vec![("page".into(), String::new())];
    for id in &picked_unique {
        form.push(("on_page".into(), id.clone()));
        form.push(("selected".into(), id.clone()));
    }
    post_form(&browser, &url, &s, &format!("/ui/orgs/{org}/users/selection"), &form).await?;
    let (mut page_times, mut api_times) = (Vec::new(), Vec::new());
    for k in 0..requests + 20 {
        let (took, _) = timed(
            &browser,
            browser
                .get(format!("{url}/ui/orgs/{org}/manage-licenses"))
                .header("cookie", format!("allot_session={}", s.cookie)),
        )
        .await?;
        let (api_took, _) = timed(
            &api,
            api.post(format!("{url}/api/v1/orgs/{org}/license-summary"))
                .bearer_auth(&token)
                .json(&json!({ "users": picked_unique })),
        )
        .await?;
        if k >= 20 {
            page_times.push(took);
            api_times.push(api_took);
        }
    }
    out.push(row(
        backend,
        &format!("Manage licenses, {} selected users", picked_unique.len()),
        quantiles(page_times),
        quantiles(api_times),
    ));

    // 2. Every user selected (by the Users page's empty filter): how long that takes.
    post_form(
        &browser,
        &url,
        &s,
        &format!("/ui/orgs/{org}/users/selection"),
        &[("page".into(), String::new()), ("clear".into(), "1".into())],
    )
    .await?;
    let started = Instant::now();
    post_form(
        &browser,
        &url,
        &s,
        &format!("/ui/orgs/{org}/users/selection"),
        &[("page".into(), String::new()), ("all_matching".into(), "1".into())],
    )
    .await?;
    let select_all = started.elapsed();
    let all_ids: Vec<String> = (0..users).map(|i| format!("usr_bench{i:08}")).collect();
    let manage = text_ok(
        browser
            .get(format!("{url}/ui/orgs/{org}/manage-licenses"))
            .header("cookie", format!("allot_session={}", s.cookie)),
    )
    .await?;
    if !manage.contains(&format!("{users} users selected.")) {
        return Err(msg(format!("the selection does not hold all {users} users")));
    }

    // 3. Jobs of every user: console and API alternately, a fresh product each.
    let (mut console_secs, mut api_secs) = (Vec::new(), Vec::new());
    // How long the request that creates the job takes, console vs. API.
    let (mut console_create, mut api_create) = (Vec::new(), Vec::new());
    let (mut job_page, mut job_api) = (Vec::new(), Vec::new());
    let w = Watcher {
        browser: &browser,
        api: &api,
        url: &url,
        token: &token,
        cookie: &s.cookie,
    };
    // Two jobs of every user through the API before the pairs (a product
    // given, then taken): on PostgreSQL the first large jobs after the
    // load run many times slower than later ones (see BENCHMARKS.md),
    // which would fall on whichever side went first.
    let mut warm_up = Vec::new();
    for change in [
        json!({ "add": [{ "product": "bulk-09" }] }),
        json!({ "remove": [{ "product": "bulk-09" }] }),
    ] {
        let started = Instant::now();
        let mut body = change;
        body["users"] = json!(all_ids);
        let warm = json_ok(
            api.post(format!("{url}/api/v1/orgs/{org}/license-jobs"))
                .bearer_auth(&token)
                .json(&body),
        )
        .await?;
        let (mut p, mut a) = (Vec::new(), Vec::new());
        watch(&w, warm["job"]["id"].as_str().unwrap_or(""), users, &mut p, &mut a).await?;
        warm_up.push(started.elapsed().as_secs_f64());
    }
    for pair in 0..pairs {
        let console_product = format!("bulk-{:02}", 1 + pair * 2);
        let api_product = format!("bulk-{:02}", 2 + pair * 2);
        // Each later job finds the users holding more: the two take turns going first.
        for console_turn in [pair % 2 == 1, pair % 2 == 0] {
            let started = Instant::now();
            let id = if console_turn {
                let html = text_ok(
                    browser
                        .get(format!("{url}/ui/orgs/{org}/manage-licenses"))
                        .header("cookie", format!("allot_session={}", s.cookie)),
                )
                .await?;
                let i = row_index(&html, &console_product, &sub)?;
                let started = Instant::now();
                let (_, location) = post_form(
                    &browser,
                    &url,
                    &s,
                    &format!("/ui/orgs/{org}/manage-licenses"),
                    &[
                        (format!("row_{i}"), format!("{console_product}\t{sub}")),
                        (format!("was_{i}"), "none".into()),
                        (format!("keep_{i}"), "0".into()),
                        (format!("want_{i}"), "1".into()),
                    ],
                )
                .await?;
                console_create.push(started.elapsed().as_secs_f64());
                location
                    .strip_prefix("/ui/jobs/")
                    .ok_or_else(|| msg(format!("Save did not open a job page: {location:?}")))?
                    .to_string()
            } else {
                let j = json_ok(
                    api.post(format!("{url}/api/v1/orgs/{org}/license-jobs"))
                        .bearer_auth(&token)
                        // The job the console makes: the product on its subscription, per user.
                        .json(&json!({ "users": all_ids, "add": [{ "product": api_product, "subscription": sub }], "mode": "per_user" })),
                )
                .await?;
                api_create.push(started.elapsed().as_secs_f64());
                j["job"]["id"].as_str().unwrap_or("").to_string()
            };
            if console_turn {
                watch(&w, &id, users, &mut job_page, &mut job_api).await?;
                console_secs.push(started.elapsed().as_secs_f64());
            } else {
                // Its page is watched alike; those samples are the API job's.
                let (mut p, mut a) = (Vec::new(), Vec::new());
                watch(&w, &id, users, &mut p, &mut a).await?;
                api_secs.push(started.elapsed().as_secs_f64());
            }
        }
    }
    out.push(row(
        backend,
        &format!("job page of a running {users}-user job ({} samples)", job_page.len()),
        quantiles(job_page),
        quantiles(job_api),
    ));
    // Medians: one run held up by the machine does not decide the ratio.
    let mean = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    out.push(format!(
        "| {backend} | {users}-user job, request to end, median s (console runs: {}; API runs: {}) | {:.2} | — | {:.2} | — |",
        console_secs.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
        api_secs.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
        mean(&console_secs),
        mean(&api_secs),
    ));
    out.push(format!(
        "| {backend} | creating the job (the request alone), median s | {:.2} | — | {:.2} | — |",
        mean(&console_create),
        mean(&api_create)
    ));
    out.push(format!(
        "| {backend} | console job / API job (medians) | {:.1}% | — | 100% | — |",
        100.0 * mean(&console_secs) / mean(&api_secs).max(0.001)
    ));
    out.push(format!(
        "| {backend} | the two jobs of every user before the pairs (API), s | — | — | {} | — |",
        warm_up.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", ")
    ));
    out.push(format!(
        "| {backend} | selecting every user that matches ({users}), ms | {:.0} | — | — | — |",
        select_all.as_secs_f64() * 1000.0
    ));
    server.stop().await;
    store.close().await;
    Ok(out)
}
