//! Webhooks: endpoints at three scopes, events from the outbox on the
//! licence paths, signed deliveries verified by the Standard Webhooks
//! library (not Allot's signing code), retries, 410, and bad input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(
    license_changes_reach_the_endpoints_in_reach_signed_and_in_order,
    a_failing_receiver_is_retried_on_schedule_and_410_disables,
    bad_endpoints_are_refused_naming_the_field,
    users_subscriptions_purchases_and_jobs_make_their_events,
    a_status_that_changes_with_the_date_is_announced_once,
    a_bulk_job_s_grouped_events_keep_each_user_s_order,
    a_change_no_endpoint_reaches_leaves_the_outbox_empty,
);

/// One request the receiver got, and whether the library verified it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub id: String,
    pub body: Value,
    pub verified: bool,
}

/// What the receiver answers: a status per path, until a time (then 200).
#[derive(Default)]
struct Behaviour {
    failing: HashMap<String, (u16, Instant)>,
}

/// A receiver on loopback that verifies each delivery with the Standard
/// Webhooks library against the secrets registered for its path.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    secrets: Arc<Mutex<HashMap<String, String>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

async fn receive(State(r): State<Receiver>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let path = uri.path().to_string();
    let secret = r.secrets.lock().unwrap().get(&path).cloned();
    let verified = secret.is_some_and(|s| standardwebhooks::Webhook::new(&s).and_then(|w| w.verify(&body, &headers)).is_ok());
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.got.lock().unwrap().push(Received {
        path: path.clone(),
        id,
        body: parsed,
        verified,
    });
    let b = r.behaviour.lock().unwrap();
    match b.failing.get(&path) {
        Some((status, until)) if Instant::now() < *until => StatusCode::from_u16(*status).unwrap(),
        _ => StatusCode::OK,
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            got: Default::default(),
            secrets: Default::default(),
            behaviour: Default::default(),
        };
        let router = axum::Router::new().fallback(axum::routing::post(receive)).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        r
    }

    pub fn secret(&self, path: &str, secret: &str) {
        self.secrets.lock().unwrap().insert(path.to_string(), secret.to_string());
    }

    /// `path` answers `status` for `for_how_long`, then 200.
    fn fail(&self, path: &str, status: u16, for_how_long: Duration) {
        self.behaviour
            .lock()
            .unwrap()
            .failing
            .insert(path.to_string(), (status, Instant::now() + for_how_long));
    }

    pub fn got(&self, path: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits until `path` has received `n` requests (at most 60 s).
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.got(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} got {} of {n} deliveries: {:?}",
                got.len(),
                summary(&got)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The test configuration: loopback http targets allowed, a sealing
/// secret, a quick poll and a schedule shortened a thousandfold.
pub fn webhook_config() -> allot_server::Config {
    let mut config = allot_server::Config::default();
    config.offline_tokens.keys = sealed_keys();
    config.webhooks.targets = allot_domain::webhooks::TargetPolicy {
        allow_http: true,
        allow_private: true,
    };
    config.webhooks.sealing = Some(sealing_secret());
    config.webhooks.retry_scale = 0.001;
    config.webhooks.poll = Duration::from_millis(50);
    config
}

/// Creates an endpoint at `base` for `path` of the receiver; registers its
/// secret with the receiver; returns the endpoint's id.
pub async fn endpoint(app: &TestApp, rx: &Receiver, base: &str, path: &str, events: Value) -> String {
    let r = app
        .post(
            base,
            &app.admin,
            json!({ "url": format!("{}{path}", rx.url), "events": events, "description": path }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let secret = r.body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    rx.secret(path, secret);
    r.body["id"].as_str().unwrap().to_string()
}

/// (type, user, product) of each delivery, in arrival order.
fn summary(got: &[Received]) -> Vec<(String, String, String)> {
    got.iter()
        .map(|r| {
            (
                r.body["type"].as_str().unwrap_or("").to_string(),
                r.body["data"]["user"].as_str().unwrap_or("").to_string(),
                r.body["data"]["product"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A bulk job's events are written grouped (one outbox row per change
/// alike); each user still gets its own event, id and email, and its
/// events in order, although the chunk's first user has fewer of them
/// than the others.
async fn a_bulk_job_s_grouped_events_keep_each_user_s_order(backend: Backend) {
    let app = spawn_with_config(backend, webhook_config()).await;
    let rx = Receiver::start().await;
    let w = world(&app).await;
    subscription(
        &app,
        &w.org,
        json!([{ "product": "meetings", "quantity": 50 }, { "product": "messaging", "quantity": 50 }]),
    )
    .await;
    endpoint(
        &app,
        &rx,
        &format!("/api/v1/orgs/{}/webhooks", w.org),
        "/org",
        json!(["license.assigned", "license.removed"]),
    )
    .await;
    let users = many_users(&app, &w.org, "grp", "g.example", 10, None).await;
    // The odd users hold messaging; the first user does not.
    let odd: Vec<String> = users.iter().skip(1).step_by(2).cloned().collect();
    let job = start_job(&app, &w.org, json!({ "users": odd, "add": [{ "product": "messaging" }] })).await;
    assert_eq!(finished_job(&app, &job).await["state"], "succeeded");
    rx.wait_for("/org", 5).await;
    // Everyone: messaging removed (where held), meetings assigned.
    let job = start_job(
        &app,
        &w.org,
        json!({ "users": users, "remove": [{ "product": "messaging" }], "add": [{ "product": "meetings" }] }),
    )
    .await;
    let done = finished_job(&app, &job).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let got = rx.wait_for("/org", 5 + 10 + 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = rx.got("/org");
    assert_eq!(got_all.len(), 20, "{:?}", summary(&got_all));
    for (i, u) in users.iter().enumerate() {
        let mine: Vec<(String, String)> = got[5..]
            .iter()
            .filter(|r| r.body["data"]["user"] == json!(u))
            .map(|r| {
                (
                    r.body["type"].as_str().unwrap_or("").to_string(),
                    r.body["data"]["product"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = if i % 2 == 1 {
            vec![
                ("license.removed".into(), "messaging".into()),
                ("license.assigned".into(), "meetings".into()),
            ]
        } else {
            vec![("license.assigned".into(), "meetings".into())]
        };
        assert_eq!(mine, expected, "user {i}");
    }
    // Each user's own email; one id per event; all verified.
    for r in &got_all {
        let user = r.body["data"]["user"].as_str().unwrap_or("");
        let i = users.iter().position(|u| u == user).expect("one of the job's users");
        assert_eq!(r.body["data"]["email"], json!(format!("grp{i}@g.example")), "{}", r.body);
    }
    let ids: std::collections::BTreeSet<&str> = got_all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 20, "an id per event");
    assert!(got_all.iter().all(|r| r.verified));
}

async fn license_changes_reach_the_endpoints_in_reach_signed_and_in_order(backend: Backend) {
    let app = spawn_with_config(backend, webhook_config()).await;
    let rx = Receiver::start().await;
    let w = world(&app).await;
    // Another org of the same partner and one of no partner: whose events reach whom.
    let sibling = org(&app, "Customer B", Some(&w.partner)).await;
    subscription(&app, &sibling, json!([{ "product": "meetings", "quantity": 5 }])).await;
    let stranger = org(&app, "Customer C", None).await;
    subscription(&app, &stranger, json!([{ "product": "meetings", "quantity": 5 }])).await;

    // (`["*"]` is tested with the other event types below.)
    let org_hook = endpoint(
        &app,
        &rx,
        &format!("/api/v1/orgs/{}/webhooks", w.org),
        "/org",
        json!(["license.assigned", "license.removed", "license.moved"]),
    )
    .await;
    endpoint(
        &app,
        &rx,
        &format!("/api/v1/partners/{}/webhooks", w.partner),
        "/partner",
        json!(["license.removed"]),
    )
    .await;
    endpoint(
        &app,
        &rx,
        "/api/v1/webhooks",
        "/provider",
        json!(["license.assigned", "license.moved"]),
    )
    .await;

    let u1 = user(&app, &w.org, "one@a.example").await;
    let u2 = user(&app, &w.org, "two@a.example").await;
    let path1 = format!("/api/v1/orgs/{}/users/{u1}/licenses", w.org);
    app.post(
        &path1,
        &app.admin,
        json!({ "add": [{ "product": "calling-professional", "properties": { "extension": "1234" } }, { "product": "messaging" }] }),
    )
    .await
    .ok();
    // Refused (messaging has one seat, u1 holds it): no event.
    let refused = app
        .post(
            &format!("/api/v1/orgs/{}/users/{u2}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "messaging" }] }),
        )
        .await;
    assert_eq!(refused.status.as_u16(), 422, "{}", refused.body);
    app.post(&path1, &app.admin, json!({ "remove": [{ "product": "messaging" }] }))
        .await
        .ok();
    // A move between subscriptions.
    let sub_b = subscription(&app, &w.org, json!([{ "product": "calling-professional", "quantity": 5 }])).await;
    app.post(
        &path1,
        &app.admin,
        json!({ "remove": [{ "product": "calling-professional", "subscription": w.sub }], "add": [{ "product": "calling-professional", "subscription": sub_b }] }),
    )
    .await
    .ok();
    // The sibling's and the stranger's changes.
    let s1 = user(&app, &sibling, "s1@b.example").await;
    app.post(
        &format!("/api/v1/orgs/{sibling}/users/{s1}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    app.post(
        &format!("/api/v1/orgs/{sibling}/users/{s1}/licenses"),
        &app.admin,
        json!({ "remove": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    let c1 = user(&app, &stranger, "c1@c.example").await;
    app.post(
        &format!("/api/v1/orgs/{stranger}/users/{c1}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    // A bulk job: 40 users get meetings (from a subscription with room for them).
    subscription(&app, &w.org, json!([{ "product": "meetings", "quantity": 50 }])).await;
    let many = many_users(&app, &w.org, "bulk", "a.example", 40, None).await;
    let job = start_job(&app, &w.org, json!({ "users": many, "add": [{ "product": "meetings" }] })).await;
    let done = finished_job(&app, &job).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The org's endpoint: every event of its org, none of the others', a user's in commit order.
    let got = rx.wait_for("/org", 4 + 40).await;
    let e = |t: &str, u: &str, p: &str| (t.to_string(), u.to_string(), p.to_string());
    // Order is kept per user (not between users: the bulk job's may overtake u1's last).
    let (mine, bulk): (Vec<Received>, Vec<Received>) = got.iter().cloned().partition(|r| r.body["data"]["user"] == json!(u1));
    assert_eq!(
        summary(&mine),
        vec![
            e("license.assigned", &u1, "calling-professional"),
            e("license.assigned", &u1, "messaging"),
            e("license.removed", &u1, "messaging"),
            e("license.moved", &u1, "calling-professional"),
        ]
    );
    let bulk_summary: Vec<(String, String, String)> = summary(&bulk);
    let mut bulk_users: Vec<String> = bulk_summary.iter().map(|(_, u, _)| u.clone()).collect();
    bulk_users.sort();
    assert_eq!(bulk_users, many);
    assert!(
        bulk_summary.iter().all(|(t, _, p)| t == "license.assigned" && p == "meetings"),
        "{bulk_summary:?}"
    );
    let assigned = &mine[0].body;
    assert_eq!(assigned["data"]["org"], json!(w.org));
    assert_eq!(assigned["data"]["email"], json!("one@a.example"));
    assert_eq!(assigned["data"]["subscription"], json!(w.sub));
    assert_eq!(assigned["data"]["properties"]["extension"], json!("1234"));
    assert!(assigned["data"]["actor"].as_str().unwrap().starts_with("token:"), "{assigned}");
    assert!(assigned["data"]["request_id"].as_str().is_some(), "{assigned}");
    assert!(assigned["timestamp"].as_str().is_some(), "{assigned}");
    let moved = &mine[3].body["data"];
    assert_eq!(
        (moved["subscription"].as_str(), moved["from_subscription"].as_str()),
        (Some(sub_b.as_str()), Some(w.sub.as_str()))
    );
    assert!(bulk
        .iter()
        .all(|r| r.body["data"]["request_id"].as_str().unwrap().starts_with("job:")));

    // The partner's endpoint: removals of both its customers, nothing else.
    let partner = rx.wait_for("/partner", 2).await;
    let mut removed: Vec<(String, String, String)> = summary(&partner);
    removed.sort();
    let mut expected = vec![e("license.removed", &u1, "messaging"), e("license.removed", &s1, "meetings")];
    expected.sort();
    assert_eq!(removed, expected);

    // The provider's: assignments and moves of every org.
    let provider = rx.wait_for("/provider", 3 + 2 + 40).await;
    assert!(
        summary(&provider).iter().any(|(_, u, _)| *u == c1),
        "the stranger org's event reached the provider"
    );
    assert!(summary(&provider).iter().all(|(t, _, _)| t != "license.removed"));

    // Give stragglers a moment, then check nothing more came and all verified.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got("/org").len(), 44, "{:?}", summary(&rx.got("/org")));
    assert_eq!(rx.got("/partner").len(), 2);
    assert_eq!(rx.got("/provider").len(), 45);
    let all: Vec<Received> = ["/org", "/partner", "/provider"].iter().flat_map(|p| rx.got(p)).collect();
    assert!(
        all.iter().all(|r| r.verified),
        "a delivery failed the Standard Webhooks verification"
    );
    // An event's id is the same at every endpoint it reaches, and differs between events.
    let org_ids: std::collections::BTreeSet<String> = rx.got("/org").iter().map(|r| r.id.clone()).collect();
    assert_eq!(org_ids.len(), 44);
    let provider_ids: std::collections::BTreeSet<String> = rx.got("/provider").iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        org_ids.iter().filter(|id| provider_ids.contains(*id)).count(),
        3 + 40,
        "an event has one id wherever it goes"
    );

    // The deliveries log: delivered, one attempt each, status 200.
    let log = app
        .get(
            &format!("/api/v1/orgs/{}/webhooks/{org_hook}/deliveries?limit=100", w.org),
            &app.admin,
        )
        .await
        .ok();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 44);
    assert!(
        items
            .iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1 && d["attempt_log"][0]["status"] == 200),
        "{log}"
    );

    // Redeliver one: the same webhook-id again.
    let one = &items[0];
    app.post(
        &format!(
            "/api/v1/orgs/{}/webhooks/{org_hook}/deliveries/{}/redeliver",
            w.org,
            one["id"].as_str().unwrap()
        ),
        &app.admin,
        json!({}),
    )
    .await;
    let again = rx.wait_for("/org", 45).await;
    assert_eq!(again[44].id, one["event_id"].as_str().unwrap());
    assert!(again[44].verified);

    // Test event, and a rotated secret: both secrets sign for a while.
    let test = app
        .post(&format!("/api/v1/orgs/{}/webhooks/{org_hook}/test", w.org), &app.admin, json!({}))
        .await;
    assert_eq!(test.status.as_u16(), 202, "{}", test.body);
    let got = rx.wait_for("/org", 46).await;
    assert_eq!(got[45].body["type"], "webhook.test");
    let rotated = app
        .post(
            &format!("/api/v1/orgs/{}/webhooks/{org_hook}/rotate-secret", w.org),
            &app.admin,
            json!({}),
        )
        .await
        .ok();
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    let old_secret = rx.secrets.lock().unwrap().get("/org").cloned().unwrap();
    app.post(&format!("/api/v1/orgs/{}/webhooks/{org_hook}/test", w.org), &app.admin, json!({}))
        .await;
    let got = rx.wait_for("/org", 47).await;
    assert!(got[46].verified, "the old secret still verifies during the overlap");
    rx.secret("/org", &new_secret);
    app.post(&format!("/api/v1/orgs/{}/webhooks/{org_hook}/test", w.org), &app.admin, json!({}))
        .await;
    let got = rx.wait_for("/org", 48).await;
    assert!(got[47].verified, "the new secret verifies");
    assert_ne!(old_secret, new_secret);
}

async fn a_failing_receiver_is_retried_on_schedule_and_410_disables(backend: Backend) {
    let app = spawn_with_config(backend, webhook_config()).await;
    let rx = Receiver::start().await;
    let w = world(&app).await;
    let flaky = endpoint(
        &app,
        &rx,
        &format!("/api/v1/orgs/{}/webhooks", w.org),
        "/flaky",
        json!(["license.assigned"]),
    )
    .await;
    let gone = endpoint(&app, &rx, &format!("/api/v1/orgs/{}/webhooks", w.org), "/gone", json!(["*"])).await;
    // 500 for 3 s: the shortened schedule (5 ms, 300 ms, 1.8 s, 7.2 s ...) retries it until it answers.
    rx.fail("/flaky", 500, Duration::from_secs(3));
    rx.fail("/gone", 410, Duration::from_secs(3600));
    let u = user(&app, &w.org, "retry@a.example").await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let log = app
            .get(&format!("/api/v1/orgs/{}/webhooks/{flaky}/deliveries", w.org), &app.admin)
            .await
            .ok();
        if log["items"][0]["state"] == "delivered" {
            break log["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "not delivered: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tries = delivered["attempt_log"].as_array().unwrap();
    assert!(tries.len() >= 3, "{delivered}");
    assert!(tries[..tries.len() - 1].iter().all(|t| t["status"] == 500), "{delivered}");
    assert_eq!(tries.last().unwrap()["status"], 200);
    // Every attempt carried the same webhook-id.
    let got = rx.got("/flaky");
    assert_eq!(got.len(), tries.len());
    assert!(got.iter().all(|r| r.id == got[0].id && r.verified));
    // The spacing follows the schedule: the third attempt at least ~0.27 s after the second.
    let at = |i: usize| chrono::DateTime::parse_from_rfc3339(tries[i]["at"].as_str().unwrap()).unwrap();
    assert!((at(2) - at(1)).num_milliseconds() >= 250, "{delivered}");

    // 410: the endpoint is disabled with a reason, after one attempt.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hook = app.get(&format!("/api/v1/orgs/{}/webhooks/{gone}", w.org), &app.admin).await.ok();
        if hook["enabled"] == false {
            assert!(hook["disabled_reason"].as_str().unwrap().contains("410"), "{hook}");
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {hook}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.got("/gone").len(), 1);
}

async fn bad_endpoints_are_refused_naming_the_field(backend: Backend) {
    // Production rules: https only, public addresses only.
    let mut config = webhook_config();
    config.webhooks.targets = Default::default();
    let app = spawn_with_config(backend, config).await;
    let w = world(&app).await;
    let base = format!("/api/v1/orgs/{}/webhooks", w.org);
    let cases = [
        (json!({ "url": "http://hooks.example.com/x", "events": ["*"] }), "url"),
        (json!({ "url": "https://127.0.0.1/x", "events": ["*"] }), "url"),
        (json!({ "url": "https://10.0.0.7/x", "events": ["*"] }), "url"),
        (json!({ "url": "https://localhost:8443/x", "events": ["*"] }), "url"),
        (json!({ "url": "https://user:pw@hooks.example.com/x", "events": ["*"] }), "url"),
        (
            json!({ "url": "https://hooks.example.com/x", "events": ["license.exploded"] }),
            "events[0]",
        ),
        (json!({ "url": "https://hooks.example.com/x", "events": [] }), "events"),
    ];
    for (body, field) in cases {
        let r = app.post(&base, &app.admin, body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.body);
        let named: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["field"].as_str())
            .collect();
        assert!(named.contains(&field), "{body}: {}", r.body);
    }
    let r = app.call(reqwest::Method::POST, &base, Some(&app.admin), None).await;
    assert!(matches!(r.status.as_u16(), 400 | 415 | 422), "{}", r.body);
    // Nothing was created.
    assert_eq!(app.get(&base, &app.admin).await.ok()["items"], json!([]));

    // A good one, then other tenants: 404 for its id under another org, and for another org's admin.
    let ok = app
        .post(
            &base,
            &app.admin,
            json!({ "url": "https://hooks.example.com/allot", "events": ["license.assigned"] }),
        )
        .await;
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.body);
    assert!(ok.body.get("secret_sealed").is_none());
    let id = ok.body["id"].as_str().unwrap();
    let other = org(&app, "Other", None).await;
    app.get(&format!("/api/v1/orgs/{other}/webhooks/{id}"), &app.admin)
        .await
        .problem(404, "not_found");
    let other_admin = app.token(allot_domain::access::Role::OrgSuperAdmin, None, Some(&other)).await;
    app.get(&format!("{base}/{id}"), &other_admin).await.problem(404, "not_found");
    // A role below org super admin: 403.
    let org_admin = app.token(allot_domain::access::Role::OrgAdmin, None, Some(&w.org)).await;
    app.get(&base, &org_admin).await.problem(403, "forbidden");
    // The list never shows a secret.
    let listed = app.get(&base, &app.admin).await.ok();
    assert!(listed["items"][0].get("secret").is_none(), "{listed}");
}

async fn users_subscriptions_purchases_and_jobs_make_their_events(backend: Backend) {
    let app = spawn_with_config(backend, webhook_config()).await;
    let rx = Receiver::start().await;
    let w = world(&app).await;
    let o = &w.org;
    endpoint(&app, &rx, &format!("/api/v1/orgs/{o}/webhooks"), "/all", json!(["*"])).await;
    // A user: created, updated, refused an update (stale If-Match: rolled back, no event), given a licence, deleted.
    let u = user(&app, o, "life@a.example").await;
    let upath = format!("/api/v1/orgs/{o}/users/{u}");
    app.patch(&upath, &app.admin, json!({ "display_name": "Life Cycle" })).await.ok();
    let stale = app
        .send(
            reqwest::Method::PATCH,
            &upath,
            Some(&app.admin),
            &[("if-match", "\"stale\"")],
            Some(json!({ "display_name": "Never" })),
        )
        .await;
    assert_eq!(stale.status.as_u16(), 412, "{}", stale.body);
    app.post(
        &format!("{upath}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    let del = app.call(reqwest::Method::DELETE, &upath, Some(&app.admin), None).await;
    assert_eq!(del.status.as_u16(), 204, "{}", del.body);
    // A subscription: created, changed, cancelled.
    let sub = subscription(&app, o, json!([{ "product": "messaging", "quantity": 3 }])).await;
    app.patch(
        &format!("/api/v1/orgs/{o}/subscriptions/{sub}"),
        &app.admin,
        json!({ "end_date": "2027-06-01" }),
    )
    .await
    .ok();
    app.post(&format!("/api/v1/orgs/{o}/subscriptions/{sub}/cancel"), &app.admin, json!({}))
        .await
        .ok();
    // A purchase request, fulfilled.
    app.patch(&format!("/api/v1/orgs/{o}"), &app.admin, json!({ "payment_method_on_file": true }))
        .await
        .ok();
    let buyer = app.token(allot_domain::access::Role::OrgSuperAdmin, None, Some(o)).await;
    let pr = app
        .post(
            &format!("/api/v1/orgs/{o}/purchase-requests"),
            &buyer,
            json!({ "product": "meetings", "quantity": 2, "subscription": w.sub }),
        )
        .await;
    assert!(pr.status.is_success(), "{}", pr.body);
    let pr_id = pr.body["id"].as_str().unwrap().to_string();
    let ful = app
        .post(&format!("/api/v1/orgs/{o}/purchase-requests/{pr_id}/fulfil"), &app.admin, json!({}))
        .await;
    assert!(ful.status.is_success(), "{}", ful.body);
    // A job.
    let ju = user(&app, o, "job@a.example").await;
    let job = start_job(
        &app,
        o,
        json!({ "users": [ju], "add": [{ "product": "meetings" }], "dry_run": true }),
    )
    .await;
    finished_job(&app, &job).await;

    let types = |got: &[Received]| {
        got.iter()
            .map(|r| r.body["type"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = rx.got("/all");
        if types(&got).iter().any(|t| t == "job.finished") {
            break;
        }
        assert!(Instant::now() < deadline, "no job.finished: {:?}", types(&got));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.got("/all");
    assert!(got.iter().all(|r| r.verified));
    // The user's events, in commit order.
    let of_user: Vec<String> = got
        .iter()
        .filter(|r| r.body["data"]["user"] == json!(u))
        .map(|r| r.body["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        of_user,
        [
            "user.created",
            "user.updated",
            "license.assigned",
            "license.removed",
            "user.deleted"
        ]
    );
    let updated = got.iter().find(|r| r.body["type"] == "user.updated").unwrap();
    assert_eq!(updated.body["data"]["state"]["display_name"], "Life Cycle", "{:?}", updated.body);
    assert!(
        got.iter().all(|r| r.body["data"]["state"]["display_name"] != "Never"),
        "a refused change made an event"
    );
    let removed = got.iter().find(|r| r.body["type"] == "license.removed").unwrap();
    assert_eq!(removed.body["data"]["email"], "life@a.example");
    assert_eq!(removed.body["data"]["product"], "meetings");
    let of_sub: Vec<String> = got
        .iter()
        .filter(|r| r.body["data"]["subscription"] == json!(sub) && r.body["type"].as_str().unwrap().starts_with("subscription."))
        .map(|r| r.body["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(of_sub, ["subscription.created", "subscription.updated", "subscription.cancelled"]);
    let purchase: Vec<String> = got
        .iter()
        .filter(|r| r.body["data"]["purchase_request"] == json!(pr_id))
        .map(|r| r.body["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(purchase, ["purchase_request.created", "purchase_request.fulfilled"]);
    let finished = got.iter().find(|r| r.body["type"] == "job.finished").unwrap();
    assert_eq!(finished.body["data"]["job"], json!(job));
    assert_eq!(finished.body["data"]["state"], "succeeded");
}

async fn a_status_that_changes_with_the_date_is_announced_once(backend: Backend) {
    let app = spawn_with_config(backend, webhook_config()).await;
    let rx = Receiver::start().await;
    let w = world(&app).await;
    let o = &w.org;
    endpoint(
        &app,
        &rx,
        &format!("/api/v1/orgs/{o}/webhooks"),
        "/status",
        json!(["subscription.status_changed"]),
    )
    .await;
    // Ends 40 days after "today" (2026-06-15): expiring within 60 days.
    let r = app
        .post(
            &format!("/api/v1/orgs/{o}/subscriptions"),
            &app.admin,
            json!({ "start_date": "2026-01-01", "end_date": "2026-07-25", "items": [{ "product": "meetings", "quantity": 1 }] }),
        )
        .await
        .ok();
    let sub = r["id"].as_str().unwrap().to_string();
    // The sender's start-up scan (or this one) notes every status; nothing is announced yet.
    allot_server::worker::webhooks::scan_subscription_statuses(&app.app).await.unwrap();
    assert_eq!(
        allot_server::worker::webhooks::scan_subscription_statuses(&app.app).await.unwrap(),
        0
    );
    // Fifteen days later the same subscription expires within 30 days: announced once, however often scanned.
    app.clock.set(today() + chrono::Duration::days(15));
    let first = allot_server::worker::webhooks::scan_subscription_statuses(&app.app).await.unwrap();
    let again = allot_server::worker::webhooks::scan_subscription_statuses(&app.app).await.unwrap();
    assert_eq!((first, again), (1, 0), "only the subscription whose status moved, once");
    let got = rx.wait_for("/status", 1).await;
    assert_eq!(got[0].body["type"], "subscription.status_changed");
    assert_eq!(got[0].body["data"]["subscription"], json!(sub));
    assert_eq!(
        (got[0].body["data"]["from"].as_str(), got[0].body["data"]["to"].as_str()),
        (Some("expiring_60d"), Some("expiring_30d"))
    );
    assert!(got[0].verified);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got("/status").len(), 1);
}

/// The outbox rows of `org`, read from the database.
async fn outbox_rows(app: &TestApp, org: &str) -> i64 {
    let mut rd = app.store.read_conn().await.expect("read");
    let rows = rd
        .rows(
            "SELECT COUNT(*) AS n FROM webhook_events WHERE org_id = $1",
            &[allot_store::Val::from(org)],
        )
        .await
        .expect("count");
    rows[0].int("n").expect("n")
}

/// A licence change of an org that no endpoint reaches leaves no outbox
/// row (the version claim tells the change so, and it sends no outbox
/// statement); once an endpoint is created, the next change's event is
/// written and delivered.
async fn a_change_no_endpoint_reaches_leaves_the_outbox_empty(backend: Backend) {
    let app = spawn_with_config(backend, webhook_config()).await;
    let rx = Receiver::start().await;
    let w = world(&app).await;
    subscription(&app, &w.org, json!([{ "product": "meetings", "quantity": 5 }])).await;
    let u = user(&app, &w.org, "quiet@a.example").await;
    let path = format!("/api/v1/orgs/{}/users/{u}/licenses", w.org);
    let r = app.post(&path, &app.admin, json!({ "add": [{ "product": "meetings" }] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(outbox_rows(&app, &w.org).await, 0, "no endpoint, no outbox row");

    endpoint(
        &app,
        &rx,
        &format!("/api/v1/orgs/{}/webhooks", w.org),
        "/org",
        json!(["license.assigned", "license.removed"]),
    )
    .await;
    let r = app.post(&path, &app.admin, json!({ "remove": [{ "product": "meetings" }] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let got = rx.wait_for("/org", 1).await;
    assert_eq!(
        summary(&got),
        vec![("license.removed".to_string(), u.clone(), "meetings".to_string())]
    );
    assert_eq!(outbox_rows(&app, &w.org).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got("/org").len(), 1, "the change before the endpoint sent nothing");
}
