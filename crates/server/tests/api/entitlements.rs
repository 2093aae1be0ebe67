//! Entitlement checks: after changes on every path, every answer equals
//! what a plain query of the database says (written here, apart from the
//! index); the product_service role; bad input.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use allot_domain::access::Role;
use allot_server::clock::Clock;

use crate::both_backends;
use crate::kit::*;
use crate::sheet::import_done;

both_backends!(
    checks_equal_the_database_after_every_path,
    checks_refuse_bad_input_and_other_tenants,
    ofrep_answers_as_the_checks_with_an_etag_per_user,
    offline_tokens_sign_what_the_user_may_use_across_a_rotation,
    checks_record_usage_and_a_job_reclaims_idle_seats,
);

/// Features granted by the products of [`catalogue`].
const FEATURES: [&str; 6] = ["calling", "voicemail", "meetings", "recording", "messaging", "teleport"];
const PRODUCTS: [&str; 5] = [
    "calling-standard",
    "calling-professional",
    "meetings",
    "messaging",
    "no-such-product",
];

pub async fn catalogue(app: &TestApp) {
    for (code, family, features) in [
        ("calling-standard", "calling", json!(["calling"])),
        ("calling-professional", "calling", json!(["calling", "voicemail"])),
        ("meetings", "meetings", json!(["meetings", "recording"])),
        ("messaging", "messaging", json!(["messaging"])),
    ] {
        app.post(
            "/api/v1/products",
            &app.admin,
            json!({ "code": code, "name": code.replace('-', " "), "family": family, "features": features }),
        )
        .await
        .ok();
    }
}

/// One licence as the database holds it, with what decides whether it grants.
struct HeldRow {
    product: String,
    subscription: String,
    trial: bool,
    end_date: String,
    suspended: bool,
    cancelled: bool,
    provisioning: String,
}

/// What the database says, for every user of the org and every question:
/// (user id → (email, status, licences)). Written as plain SQL here, apart
/// from the index and the domain's rule.
async fn database_truth(app: &TestApp, org: &str) -> (BTreeMap<String, (String, String, Vec<HeldRow>)>, BTreeMap<String, Vec<String>>) {
    let mut tx = app.store.begin_read().await.expect("read");
    let users = tx
        .rows(
            "SELECT id, email_normalized, status FROM users WHERE org_id = $1",
            allot_store::args![org],
        )
        .await
        .expect("users");
    let mut out: BTreeMap<String, (String, String, Vec<HeldRow>)> = BTreeMap::new();
    for u in &users {
        out.insert(
            u.text("id").unwrap(),
            (u.text("email_normalized").unwrap(), u.text("status").unwrap(), Vec::new()),
        );
    }
    let held = tx
        .rows(
            "SELECT a.user_id, a.product, a.subscription_id, s.trial, s.end_date, s.suspended, s.cancelled, i.provisioning_status \
             FROM assignments a \
             JOIN subscriptions s ON s.org_id = a.org_id AND s.id = a.subscription_id \
             JOIN subscription_items i ON i.org_id = a.org_id AND i.subscription_id = a.subscription_id AND i.product = a.product \
             WHERE a.org_id = $1",
            allot_store::args![org],
        )
        .await
        .expect("licences");
    for h in &held {
        let u = h.text("user_id").unwrap();
        out.get_mut(&u).expect("a licence of a known user").2.push(HeldRow {
            product: h.text("product").unwrap(),
            subscription: h.text("subscription_id").unwrap(),
            trial: h.bool("trial").unwrap(),
            end_date: h.text("end_date").unwrap(),
            suspended: h.bool("suspended").unwrap(),
            cancelled: h.bool("cancelled").unwrap(),
            provisioning: h.text("provisioning_status").unwrap(),
        });
    }
    let products = tx.rows("SELECT code, features FROM products", &[]).await.expect("products");
    let features = products
        .iter()
        .map(|p| {
            let f: Vec<String> = serde_json::from_str(&p.text("features").unwrap()).unwrap();
            (p.text("code").unwrap(), f)
        })
        .collect();
    (out, features)
}

/// The expected answer: (allowed, reason, granted_by) for a user (as
/// asked: an id or an email) and a feature or product.
fn expected(
    truth: &BTreeMap<String, (String, String, Vec<HeldRow>)>,
    features: &BTreeMap<String, Vec<String>>,
    user: &str,
    feature: Option<&str>,
    product: Option<&str>,
    today: &str,
) -> (bool, String, BTreeSet<(String, String)>) {
    let found = truth
        .iter()
        .find(|(id, (email, ..))| id.as_str() == user || email.as_str() == user.to_lowercase());
    let Some((_, (_, status, held))) = found else {
        return (false, "unknown_user".into(), BTreeSet::new());
    };
    match status.as_str() {
        "pending" => return (false, "user_pending".into(), BTreeSet::new()),
        "inactive" => return (false, "user_inactive".into(), BTreeSet::new()),
        _ => {}
    }
    let grants = |p: &str| match (feature, product) {
        (Some(f), _) => features.get(p).is_some_and(|fs| fs.iter().any(|x| x == f)),
        (_, Some(code)) => p == code,
        _ => false,
    };
    let known = match (feature, product) {
        (Some(f), _) => features.values().any(|fs| fs.iter().any(|x| x == f)),
        (_, Some(code)) => features.contains_key(code),
        _ => false,
    };
    if !known {
        return (false, "unknown_feature".into(), BTreeSet::new());
    }
    let mut granted = BTreeSet::new();
    let mut reasons = Vec::new();
    for h in held.iter().filter(|h| grants(&h.product)) {
        let reason = if h.cancelled {
            "subscription_cancelled"
        } else if h.end_date.as_str() <= today && h.trial {
            "trial_expired"
        } else if h.end_date.as_str() <= today {
            "subscription_expired"
        } else if h.suspended {
            "subscription_suspended"
        } else if h.provisioning != "provisioned" {
            "service_not_provisioned"
        } else {
            granted.insert((h.product.clone(), h.subscription.clone()));
            continue;
        };
        reasons.push(reason);
    }
    if !granted.is_empty() {
        return (true, "licensed".into(), granted);
    }
    // The closest failing licence: the latest in the documented order.
    let order = [
        "subscription_cancelled",
        "subscription_expired",
        "trial_expired",
        "subscription_suspended",
        "service_not_provisioned",
    ];
    let closest = reasons.iter().max_by_key(|r| order.iter().position(|o| o == *r));
    (false, closest.map_or("not_licensed", |r| r).to_string(), BTreeSet::new())
}

/// Asks every question about every user of the org (by id and by email,
/// plus an unknown user) through the batch call, and compares each answer
/// with the database. Returns how many questions were asked.
async fn assert_checks_equal_database(app: &TestApp, token: &str, org: &str, step: &str) -> usize {
    let (truth, features) = database_truth(app, org).await;
    let today = app.clock.now().date_naive().to_string();
    let mut questions: Vec<(String, Option<&str>, Option<&str>)> = Vec::new();
    let mut names: Vec<String> = vec!["nobody@nowhere.example".into(), "usr_unknown".into()];
    for (id, (email, ..)) in &truth {
        names.push(id.clone());
        names.push(email.to_uppercase());
    }
    for n in &names {
        for f in FEATURES {
            questions.push((n.clone(), Some(f), None));
        }
        for p in PRODUCTS {
            questions.push((n.clone(), None, Some(p)));
        }
    }
    for batch in questions.chunks(1000) {
        let body: Vec<Value> = batch
            .iter()
            .map(|(u, f, p)| match (f, p) {
                (Some(f), _) => json!({ "user": u, "feature": f }),
                (_, Some(p)) => json!({ "user": u, "product": p }),
                _ => unreachable!("every question names one"),
            })
            .collect();
        let r = app
            .post(
                "/api/v1/entitlements/evaluations",
                token,
                json!({ "org": org, "evaluations": body }),
            )
            .await
            .ok();
        let answers = r["evaluations"].as_array().expect("answers");
        assert_eq!(answers.len(), batch.len(), "one answer per question");
        for ((u, f, p), a) in batch.iter().zip(answers) {
            let (allowed, reason, granted) = expected(&truth, &features, u, *f, *p, &today);
            let got: BTreeSet<(String, String)> = a["granted_by"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    (
                        g["product"].as_str().unwrap().to_string(),
                        g["subscription"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(
                (a["allowed"].as_bool().unwrap(), a["reason"].as_str().unwrap(), &got),
                (allowed, reason.as_str(), &granted),
                "after {step}: {u} asking {f:?}/{p:?}: {a}"
            );
            assert_eq!(a["user"].as_str(), Some(u.as_str()));
        }
    }
    questions.len()
}

async fn product_service_token(app: &TestApp, org: &str) -> String {
    let r = app
        .post(
            "/api/v1/tokens",
            &app.admin,
            json!({ "name": "the product", "role": "product_service", "org": org }),
        )
        .await
        .ok();
    r["token"].as_str().expect("a token").to_string()
}

async fn checks_equal_the_database_after_every_path(backend: Backend) {
    let app = spawn(backend).await;
    catalogue(&app).await;
    let org = org(&app, "Checked AB", None).await;
    let active = subscription(
        &app,
        &org,
        json!([{ "product": "calling-standard", "quantity": 40 }, { "product": "calling-professional", "quantity": 40 },
               { "product": "meetings", "quantity": 40 }, { "product": "messaging", "quantity": 40 }]),
    )
    .await;
    let trial = app
        .post(
            &format!("/api/v1/orgs/{org}/subscriptions"),
            &app.admin,
            json!({ "trial": true, "start_date": "2026-06-01", "end_date": "2026-07-01",
                    "items": [{ "product": "calling-professional", "quantity": 20 }, { "product": "meetings", "quantity": 20 }] }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let spare = subscription(
        &app,
        &org,
        json!([{ "product": "messaging", "quantity": 20 }, { "product": "meetings", "quantity": 20 }]),
    )
    .await;
    let subs = [active.clone(), trial.clone(), spare.clone()];
    let token = product_service_token(&app, &org).await;
    let mut users = many_users(&app, &org, "ent", "checked.example", 24, Some("SE")).await;
    for i in 0..3 {
        users.push(user(&app, &org, &format!("api{i}@checked.example")).await);
    }
    let mut asked = assert_checks_equal_database(&app, &token, &org, "the start").await;
    let seed: u64 = match backend {
        Backend::Sqlite => 18,
        Backend::Postgres => 1818,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let codes = ["calling-standard", "calling-professional", "meetings", "messaging"];
    let reloads_before = app.app.entitlements.full_loads.load(std::sync::atomic::Ordering::Relaxed);
    let mut steps = 0;
    let mut moved = false;
    let mut clock_moved = false;
    while steps < 36 {
        steps += 1;
        let step = rng.gen_range(0..10);
        let label;
        match step {
            // A single change: add or remove one licence.
            0 | 1 => {
                let u = users.choose(&mut rng).unwrap().clone();
                let code = *codes.choose(&mut rng).unwrap();
                let sub = subs.choose(&mut rng).unwrap().clone();
                let body = if rng.gen_bool(0.6) {
                    json!({ "add": [{ "product": code, "subscription": sub }] })
                } else {
                    json!({ "remove": [{ "product": code }] })
                };
                let r = app
                    .post(&format!("/api/v1/orgs/{org}/users/{u}/licenses"), &app.admin, body.clone())
                    .await;
                label = format!("single change {body} of {u} ({})", r.status);
            }
            // A bulk job over some users.
            2 => {
                let some: Vec<String> = users.choose_multiple(&mut rng, 10).cloned().collect();
                let code = *codes.choose(&mut rng).unwrap();
                let body = if rng.gen_bool(0.5) {
                    json!({ "users": some, "add": [{ "product": code, "subscription": active }], "mode": "per_user" })
                } else {
                    json!({ "users": some, "remove": [{ "product": code }], "mode": "per_user" })
                };
                let j = start_job(&app, &org, body.clone()).await;
                finished_job(&app, &j).await;
                label = format!("bulk job {body}");
            }
            // A CSV import: some users gain meetings on the spare subscription, one is created.
            3 => {
                let mut csv = format!("email,meetings [{spare}],messaging [{active}]\n");
                for n in rand::seq::index::sample(&mut rng, 24, 4) {
                    csv.push_str(&format!(
                        "ent{n}@checked.example,{},TRUE\n",
                        rng.gen_bool(0.5).to_string().to_uppercase()
                    ));
                }
                let fresh = format!("csv{steps}@checked.example");
                csv.push_str(&format!("{fresh},TRUE,\n"));
                let (j, _) = import_done(&app, &org, "mode=add_and_remove", csv.clone()).await;
                assert!(matches!(j["state"].as_str(), Some("succeeded" | "completed_with_errors")), "{j}");
                if let Some(id) =
                    app.get(&format!("/api/v1/orgs/{org}/users?email={fresh}"), &app.admin).await.ok()["items"][0]["id"].as_str()
                {
                    users.push(id.to_string());
                }
                label = "a CSV import".to_string();
            }
            // A template applied to existing users.
            4 => {
                let code = *codes.choose(&mut rng).unwrap();
                let r = app
                    .post(
                        &format!("/api/v1/orgs/{org}/license-templates"),
                        &app.admin,
                        json!({ "name": format!("Template {steps}"), "scope": "org", "licenses": [{ "product": code, "subscription": active }] }),
                    )
                    .await;
                if r.status.as_u16() == 201 {
                    let tpl = r.body["id"].as_str().unwrap();
                    let r = app
                        .post(
                            &format!("/api/v1/orgs/{org}/license-templates/{tpl}/apply"),
                            &app.admin,
                            json!({ "existing_users": true, "retain_existing": true }),
                        )
                        .await;
                    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
                    finished_job(&app, r.body["job"]["id"].as_str().unwrap()).await;
                    // Templates apply to new users too: remove it to keep the story short.
                    app.call(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/orgs/{org}/license-templates/{tpl}"),
                        Some(&app.admin),
                        None,
                    )
                    .await;
                }
                label = format!("template of {code}");
            }
            // Cancel the spare subscription, moving its users (once).
            5 if !moved => {
                moved = true;
                let r = app
                    .post(
                        &format!("/api/v1/orgs/{org}/subscriptions/{spare}/cancel"),
                        &app.admin,
                        json!({ "move_users_to": active }),
                    )
                    .await;
                if r.status.as_u16() == 202 {
                    finished_job(&app, r.body["job"]["id"].as_str().unwrap()).await;
                }
                label = format!("cancel with move ({})", r.status);
            }
            // Suspend or resume the active subscription.
            6 => {
                let suspended = rng.gen_bool(0.5);
                app.patch(
                    &format!("/api/v1/orgs/{org}/subscriptions/{active}"),
                    &app.admin,
                    json!({ "suspended": suspended }),
                )
                .await
                .ok();
                label = format!("suspended = {suspended}");
            }
            // The day the trial ends: no write at all.
            7 if !clock_moved && steps > 12 => {
                clock_moved = true;
                app.clock.set(day(2026, 7, 1));
                label = "the clock moved past the trial's end".to_string();
            }
            // A user deactivated or activated again.
            8 => {
                let u = users.choose(&mut rng).unwrap().clone();
                let status = if rng.gen_bool(0.5) { "inactive" } else { "active" };
                app.patch(&format!("/api/v1/orgs/{org}/users/{u}"), &app.admin, json!({ "status": status }))
                    .await;
                label = format!("{u} {status}");
            }
            // An item's provisioning status changes, or a user is deleted.
            _ => {
                if rng.gen_bool(0.5) {
                    let status = *["provisioned", "provisioning", "provisioned"].choose(&mut rng).unwrap();
                    app.patch(
                        &format!("/api/v1/orgs/{org}/subscriptions/{active}"),
                        &app.admin,
                        json!({ "items": [{ "product": "messaging", "quantity": 40, "provisioning_status": status }] }),
                    )
                    .await;
                    label = format!("messaging {status}");
                } else {
                    let u = users.remove(rng.gen_range(0..users.len()));
                    app.call(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/orgs/{org}/users/{u}"),
                        Some(&app.admin),
                        None,
                    )
                    .await;
                    label = format!("{u} deleted");
                }
            }
        }
        asked += assert_checks_equal_database(&app, &token, &org, &label).await;
    }
    assert!(moved && clock_moved, "the story took every path");
    assert_eq!(
        app.app.entitlements.full_loads.load(std::sync::atomic::Ordering::Relaxed),
        reloads_before,
        "the index followed each change without reading everything again"
    );
    // Nor later: this server's own notifications and the looks at the
    // processes (PostgreSQL, every half second) ask for no full read.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        app.app.entitlements.full_loads.load(std::sync::atomic::Ordering::Relaxed),
        reloads_before,
        "everything was read again without another process dying"
    );
    assert!(asked > 10_000, "{asked} questions");
    // A fresh start-up read, in pages of 7 users (the server reads 20,000),
    // holds what the index followed: every answer is the same.
    let (truth, _) = database_truth(&app, &org).await;
    let copy = allot_server::app::entitlements::Entitlements::read_copy(&app.store, 7)
        .await
        .expect("read");
    assert_eq!(copy.size(), {
        let (u, l, _) = app.app.entitlements.size();
        (u, l)
    });
    let today_date = app.clock.today();
    for id in truth.keys() {
        for f in FEATURES {
            assert_eq!(
                copy.answer(&org, id, f, today_date),
                app.app.entitlements.answer(&org, id, f, today_date),
                "{id} {f}"
            );
        }
    }
    assert!(truth.len() > 14, "{} users: several pages", truth.len());
    // The user's own list agrees with the checks.
    let (truth, features) = database_truth(&app, &org).await;
    let today = app.clock.now().date_naive().to_string();
    for id in truth.keys().take(8) {
        let r = app.get(&format!("/api/v1/orgs/{org}/users/{id}/entitlements"), &token).await.ok();
        let listed: BTreeSet<&str> = r["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["feature"].as_str().unwrap())
            .collect();
        let allowed: BTreeSet<&str> = FEATURES
            .into_iter()
            .filter(|f| expected(&truth, &features, id, Some(f), None, &today).0)
            .collect();
        assert_eq!(listed, allowed, "{r}");
    }
}

async fn checks_refuse_bad_input_and_other_tenants(backend: Backend) {
    let app = spawn(backend).await;
    catalogue(&app).await;
    let org = org(&app, "Asked AB", None).await;
    let other = org_named(&app, "Other AB").await;
    let sub = subscription(&app, &org, json!([{ "product": "meetings", "quantity": 5 }])).await;
    let u = user(&app, &org, "Ada@Asked.example").await;
    app.post(
        &format!("/api/v1/orgs/{org}/users/{u}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings", "subscription": sub }] }),
    )
    .await
    .ok();
    let token = product_service_token(&app, &org).await;
    let check = format!("/api/v1/orgs/{org}/entitlements/check");
    // By id, and by email in any case.
    let a = app.post(&check, &token, json!({ "user": u, "feature": "recording" })).await.ok();
    assert_eq!(
        (a["allowed"].as_bool(), a["reason"].as_str()),
        (Some(true), Some("licensed")),
        "{a}"
    );
    assert_eq!(a["granted_by"], json!([{ "product": "meetings", "subscription": sub }]));
    assert_eq!(a["valid_until"], "2026-12-31");
    let a = app
        .post(&check, &token, json!({ "user": "ADA@asked.EXAMPLE", "product": "meetings" }))
        .await
        .ok();
    assert_eq!(
        (a["allowed"].as_bool(), a["user_id"].as_str()),
        (Some(true), Some(u.as_str())),
        "{a}"
    );
    // Unknown user or feature: an answer, never a 404.
    let a = app
        .post(&check, &token, json!({ "user": "nobody@asked.example", "feature": "recording" }))
        .await
        .ok();
    assert_eq!((a["allowed"].as_bool(), a["reason"].as_str()), (Some(false), Some("unknown_user")));
    let a = app.post(&check, &token, json!({ "user": u, "feature": "teleport" })).await.ok();
    assert_eq!(
        (a["allowed"].as_bool(), a["reason"].as_str()),
        (Some(false), Some("unknown_feature"))
    );
    let a = app.post(&check, &token, json!({ "user": u, "feature": "calling" })).await.ok();
    assert_eq!(a["reason"], "not_licensed");
    // A user of another org is unknown here, whatever it holds there.
    let theirs = user(&app, &other, "ada@asked.example").await;
    let a = app
        .post(&check, &token, json!({ "user": theirs, "feature": "recording" }))
        .await
        .ok();
    assert_eq!(a["reason"], "unknown_user");
    // Another tenant's org: 404; a made-up org: 404 too.
    let before = app.snapshot().await;
    app.post(
        &format!("/api/v1/orgs/{other}/entitlements/check"),
        &token,
        json!({ "user": theirs, "feature": "recording" }),
    )
    .await
    .problem(404, "not_found");
    app.post(
        "/api/v1/orgs/org_nope/entitlements/check",
        &token,
        json!({ "user": u, "feature": "recording" }),
    )
    .await
    .problem(404, "not_found");
    app.post(
        "/api/v1/entitlements/evaluations",
        &token,
        json!({ "evaluations": [{ "org": org, "user": u, "feature": "recording" }, { "org": other, "user": theirs, "feature": "recording" }] }),
    )
    .await
    .problem(404, "not_found");
    app.get(&format!("/api/v1/orgs/{other}/users/{theirs}/entitlements"), &token)
        .await
        .problem(404, "not_found");
    app.get(&format!("/api/v1/orgs/{org}/users/usr_nope/entitlements"), &token)
        .await
        .problem(404, "not_found");
    // Wrong shapes: 422 naming the field.
    for (body, field) in [
        (json!({ "user": u }), "feature"),
        (json!({ "user": u, "feature": "recording", "product": "meetings" }), "product"),
        (json!({ "user": "", "feature": "recording" }), "user"),
        (json!({ "user": u, "feature": "x".repeat(101) }), "feature"),
        (json!({ "user": u, "feature": "recording", "extra": 1 }), ""),
    ] {
        let r = app.post(&check, &token, body.clone()).await;
        r.problem(422, "validation_failed");
        assert!(field.is_empty() || r.body["errors"][0]["field"] == field, "{body}: {}", r.body);
    }
    let r = app
        .post(
            "/api/v1/entitlements/evaluations",
            &token,
            json!({ "evaluations": [{ "user": u, "feature": "recording" }] }),
        )
        .await;
    r.problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["field"], "evaluations[0].org");
    // Over 1,000 questions: refused with a sentence.
    let many: Vec<Value> = (0..1001).map(|_| json!({ "user": u, "feature": "recording" })).collect();
    let r = app
        .post(
            "/api/v1/entitlements/evaluations",
            &token,
            json!({ "org": org, "evaluations": many }),
        )
        .await;
    r.problem(422, "validation_failed");
    assert!(r.body["detail"].as_str().unwrap().contains("at most 1000"), "{}", r.body);
    // Exactly 1,000: answered in order.
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({ "user": u, "feature": if i % 2 == 0 { "recording" } else { "calling" } }))
        .collect();
    let r = app
        .post(
            "/api/v1/entitlements/evaluations",
            &token,
            json!({ "org": org, "evaluations": many }),
        )
        .await
        .ok();
    let answers = r["evaluations"].as_array().unwrap();
    assert_eq!(answers.len(), 1000);
    assert!(answers.iter().enumerate().all(|(i, a)| a["allowed"] == (i % 2 == 0)));
    // The product's token may ask nothing else.
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/v1/orgs/{org}/users")),
        (reqwest::Method::GET, format!("/api/v1/orgs/{org}/users/{u}/licenses")),
        (reqwest::Method::GET, "/api/v1/products".to_string()),
    ] {
        app.call(method, &path, Some(&token), None).await.problem(403, "forbidden");
    }
    app.post(
        &format!("/api/v1/orgs/{org}/users/{u}/licenses"),
        &token,
        json!({ "remove": [{ "product": "meetings" }] }),
    )
    .await
    .problem(403, "forbidden");
    assert_eq!(app.snapshot().await, before, "refused calls change nothing");
    // No person holds the product's role: inviting or changing an admin to it is 422.
    let r = app
        .post(
            "/api/v1/admins",
            &app.admin,
            json!({ "email": "svc@asked.example", "role": "product_service", "org": org }),
        )
        .await;
    r.problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["field"], "role");
    // Provider-wide and partner-bound product tokens are created like others.
    let wide = app.token(Role::ProductService, None, None).await;
    let a = app.post(&check, &wide, json!({ "user": u, "feature": "recording" })).await.ok();
    assert_eq!(a["allowed"], true);
    let partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Reseller" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let of_partner = app.token(Role::ProductService, Some(&partner), None).await;
    app.post(&check, &of_partner, json!({ "user": u, "feature": "recording" }))
        .await
        .problem(404, "not_found");
}

async fn org_named(app: &TestApp, name: &str) -> String {
    org(app, name, None).await
}

async fn ofrep(app: &TestApp, token: &str, path: &str, body: Value, if_none_match: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = if_none_match.map(|t| vec![("if-none-match", t)]).unwrap_or_default();
    app.send(reqwest::Method::POST, path, Some(token), &headers, Some(body)).await
}

async fn ofrep_answers_as_the_checks_with_an_etag_per_user(backend: Backend) {
    let app = spawn(backend).await;
    catalogue(&app).await;
    let org = org(&app, "Flags AB", None).await;
    let other = org_named(&app, "Elsewhere AB").await;
    let sub = subscription(
        &app,
        &org,
        json!([{ "product": "meetings", "quantity": 5 }, { "product": "calling-professional", "quantity": 5 }]),
    )
    .await;
    let ada = user(&app, &org, "ada@flags.example").await;
    let bob = user(&app, &org, "bob@flags.example").await;
    let add = |u: &str, p: &str| {
        (
            format!("/api/v1/orgs/{org}/users/{u}/licenses"),
            json!({ "add": [{ "product": p, "subscription": sub }] }),
        )
    };
    let (path, body) = add(&ada, "meetings");
    app.post(&path, &app.admin, body).await.ok();
    // An org-bound product token may leave the org out of the context.
    let token = product_service_token(&app, &org).await;
    let one = "/ofrep/v1/evaluate/flags/recording";
    let r = ofrep(
        &app,
        &token,
        one,
        json!({ "context": { "targetingKey": "ADA@flags.example", "plan": "any attribute" } }),
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(
        (
            r.body["key"].as_str(),
            r.body["value"].as_bool(),
            r.body["reason"].as_str(),
            r.body["variant"].as_str()
        ),
        (Some("recording"), Some(true), Some("TARGETING_MATCH"), Some("on"))
    );
    assert_eq!(r.body["metadata"]["allot_reason"], "licensed");
    assert_eq!(r.body["metadata"]["user_id"], ada.as_str());
    let r = ofrep(
        &app,
        &token,
        "/ofrep/v1/evaluate/flags/voicemail",
        json!({ "context": { "targetingKey": ada, "org": org } }),
        None,
    )
    .await;
    assert_eq!(
        (r.body["value"].as_bool(), r.body["reason"].as_str()),
        (Some(false), Some("DISABLED"))
    );
    assert_eq!(r.body["metadata"]["allot_reason"], "not_licensed");
    // An unknown user is an answer; an unknown flag is FLAG_NOT_FOUND.
    let r = ofrep(
        &app,
        &token,
        one,
        json!({ "context": { "targetingKey": "nobody@flags.example" } }),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["metadata"]["allot_reason"].as_str()),
        (200, Some("unknown_user"))
    );
    let r = ofrep(
        &app,
        &token,
        "/ofrep/v1/evaluate/flags/teleport",
        json!({ "context": { "targetingKey": ada } }),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errorCode"].as_str(), r.body["key"].as_str()),
        (404, Some("FLAG_NOT_FOUND"), Some("teleport"))
    );
    // Bad requests in OFREP's words.
    let r = ofrep(&app, &token, one, json!({ "context": { "org": org } }), None).await;
    assert_eq!(
        (r.status.as_u16(), r.body["errorCode"].as_str()),
        (400, Some("TARGETING_KEY_MISSING"))
    );
    let r = app
        .raw(reqwest::Method::POST, one, &token, "application/json", b"{\"context\": ".to_vec())
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errorCode"].as_str()),
        (400, Some("PARSE_ERROR")),
        "{}",
        r.body
    );
    let r = ofrep(&app, &token, one, json!({ "context": "ada" }), None).await;
    assert_eq!((r.status.as_u16(), r.body["errorCode"].as_str()), (400, Some("INVALID_CONTEXT")));
    let r = ofrep(&app, &token, one, json!({ "context": { "targetingKey": ada, "org": other } }), None).await;
    assert_eq!(
        (r.status.as_u16(), r.body["errorCode"].as_str()),
        (400, Some("INVALID_CONTEXT")),
        "{}",
        r.body
    );
    let wide = app.token(Role::ProductService, None, None).await;
    let r = ofrep(&app, &wide, one, json!({ "context": { "targetingKey": ada } }), None).await;
    assert_eq!(
        (r.status.as_u16(), r.body["errorCode"].as_str()),
        (400, Some("INVALID_CONTEXT")),
        "a provider-wide token names the org"
    );
    let r = ofrep(&app, &wide, one, json!({ "context": { "targetingKey": ada, "org": org } }), None).await;
    assert_eq!(r.body["value"], true);
    app.send(reqwest::Method::POST, one, None, &[], Some(json!({})))
        .await
        .problem(401, "unauthenticated");
    // Bulk: every feature, in name order, with the checks' answers.
    let bulk = "/ofrep/v1/evaluate/flags";
    let ask = |u: &str| json!({ "context": { "targetingKey": u } });
    let r = ofrep(&app, &token, bulk, ask(&ada), None).await;
    assert_eq!(r.status.as_u16(), 200);
    let keys: Vec<&str> = r.body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["calling", "meetings", "messaging", "recording", "voicemail"]);
    for f in r.body["flags"].as_array().unwrap() {
        let check = app
            .post(
                &format!("/api/v1/orgs/{org}/entitlements/check"),
                &token,
                json!({ "user": ada, "feature": f["key"] }),
            )
            .await
            .ok();
        assert_eq!(f["value"], check["allowed"], "{f}");
        assert_eq!(f["metadata"]["allot_reason"], check["reason"]);
    }
    let ada_tag = r.headers["etag"].to_str().unwrap().to_string();
    let bob_tag = ofrep(&app, &token, bulk, ask(&bob), None).await.headers["etag"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(ada_tag, bob_tag, "different answers, different versions");
    // Unchanged answers: 304, with the same ETag, also after a change to someone else.
    let r = ofrep(&app, &token, bulk, ask(&ada), Some(&ada_tag)).await;
    assert_eq!((r.status.as_u16(), r.headers["etag"].to_str().unwrap()), (304, ada_tag.as_str()));
    let (path, body) = add(&bob, "calling-professional");
    app.post(&path, &app.admin, body).await.ok();
    assert_eq!(
        ofrep(&app, &token, bulk, ask(&ada), Some(&ada_tag)).await.status.as_u16(),
        304,
        "bob's change is not ada's"
    );
    let r = ofrep(&app, &token, bulk, ask(&bob), Some(&bob_tag)).await;
    assert_eq!(r.status.as_u16(), 200, "bob's answers changed");
    assert_ne!(r.headers["etag"].to_str().unwrap(), bob_tag);
    // Ada's answers change: a new version at once.
    let (path, body) = add(&ada, "calling-professional");
    app.post(&path, &app.admin, body).await.ok();
    let r = ofrep(&app, &token, bulk, ask(&ada), Some(&ada_tag)).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_ne!(r.headers["etag"].to_str().unwrap(), ada_tag);
    let voicemail = r.body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "voicemail")
        .unwrap()
        .clone();
    assert_eq!(voicemail["value"], true);
    // The subscription ends (the clock moves, nothing is written): the answers and their version change.
    let tag = r.headers["etag"].to_str().unwrap().to_string();
    app.clock.set(day(2027, 1, 1));
    let r = ofrep(&app, &token, bulk, ask(&ada), Some(&tag)).await;
    assert_eq!(r.status.as_u16(), 200);
    let after: Vec<(&str, bool, &str)> = r.body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap(),
                f["value"].as_bool().unwrap(),
                f["metadata"]["allot_reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        after,
        [
            ("calling", false, "subscription_expired"),
            ("meetings", false, "subscription_expired"),
            ("messaging", false, "not_licensed"),
            ("recording", false, "subscription_expired"),
            ("voicemail", false, "subscription_expired")
        ]
    );
}

/// A JWT's three parts: header and claims as JSON, the signature's bytes,
/// and the signed input.
fn jwt_parts(token: &str) -> (Value, Value, Vec<u8>, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS has three parts: {token}");
    let json = |p: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON");
    (
        json(parts[0]),
        json(parts[1]),
        URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url"),
        format!("{}.{}", parts[0], parts[1]),
    )
}

/// Whether `token` verifies against a key of the served JWKS (the key
/// named by its `kid`, which must be an Ed25519 key for EdDSA).
async fn verifies_with_jwks(app: &TestApp, token: &str) -> bool {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ed25519_dalek::Verifier;
    let r = app.call(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await;
    let jwks = r.ok();
    let (header, _, signature, input) = jwt_parts(token);
    let Some(jwk) = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]) else {
        return false;
    };
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let x: [u8; 32] = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x).expect("a public key");
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&signature) else {
        return false;
    };
    header["alg"] == "EdDSA" && key.verify(input.as_bytes(), &signature).is_ok()
}

async fn offline_tokens_sign_what_the_user_may_use_across_a_rotation(backend: Backend) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let app = spawn(backend).await;
    catalogue(&app).await;
    let org = org(&app, "Offline AB", None).await;
    let other = org_named(&app, "Elsewhere AB").await;
    let sub = subscription(
        &app,
        &org,
        json!([{ "product": "meetings", "quantity": 5 }, { "product": "calling-professional", "quantity": 5 }]),
    )
    .await;
    let ada = user(&app, &org, "ada@offline.example").await;
    app.post(
        &format!("/api/v1/orgs/{org}/users/{ada}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings", "subscription": sub }, { "product": "calling-professional", "subscription": sub }] }),
    )
    .await
    .ok();
    let token = product_service_token(&app, &org).await;
    // No key yet: none published.
    let jwks = app.call(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.headers["cache-control"], "public, max-age=300");
    assert_eq!(jwks.ok()["keys"], json!([]));

    let issue = |user: String| {
        let app = &app;
        let token = token.clone();
        let org = org.clone();
        async move {
            app.post(&format!("/api/v1/orgs/{org}/users/{user}/entitlement-token"), &token, json!(null))
                .await
        }
    };
    let first = issue("ADA@offline.EXAMPLE".into()).await.ok();
    let jwt = first["token"].as_str().unwrap().to_string();
    let (header, claims, _, _) = jwt_parts(&jwt);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JWT");
    let now = app.clock.now().timestamp();
    assert_eq!(claims["iss"], "allot");
    assert_eq!(claims["sub"], ada.as_str());
    assert_eq!(claims["org"], org.as_str());
    assert_eq!(claims["email"], "ada@offline.example");
    assert_eq!(claims["features"], json!(["calling", "meetings", "recording", "voicemail"]));
    assert_eq!(claims["products"], json!(["calling-professional", "meetings"]));
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 24 * 3600);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(
        first["expires_at"]
            .as_str()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp()),
        Some(now + 24 * 3600)
    );
    assert!(verifies_with_jwks(&app, &jwt).await, "the token verifies against the JWKS");
    // Two tokens never share a jti.
    let again = issue(ada.clone()).await.ok();
    assert_ne!(jwt_parts(again["token"].as_str().unwrap()).1["jti"], claims["jti"]);

    // Tampered: claims changed, signature kept; or the signature changed.
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut forged = claims.clone();
    forged["features"] = json!(["calling", "meetings", "recording", "voicemail", "teleport"]);
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged.to_string()), parts[2]);
    assert!(!verifies_with_jwks(&app, &forged).await);
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    assert!(!verifies_with_jwks(&app, &format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig))).await);

    // Rotation: a new key signs; the old one stays published while its token lives.
    let rotated = allot_server::app::signing::rotate_signing_key(&app.store, &app.app.config.offline_tokens.keys, app.clock.now())
        .await
        .expect("rotated");
    assert_eq!(rotated.old_kid.as_deref(), header["kid"].as_str());
    let second = issue(ada.clone()).await.ok();
    let jwt2 = second["token"].as_str().unwrap().to_string();
    assert_eq!(jwt_parts(&jwt2).0["kid"].as_str(), Some(rotated.new_kid.as_str()));
    let kids = |v: Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let published = kids(app.call(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await.ok());
    assert_eq!(published, vec![rotated.new_kid.clone(), rotated.old_kid.clone().unwrap()]);
    assert!(verifies_with_jwks(&app, &jwt).await, "a token of the retired key still verifies");
    assert!(verifies_with_jwks(&app, &jwt2).await);
    // Once the old key's last token has expired, it leaves the JWKS.
    app.clock.set(app.clock.now() + chrono::Duration::hours(26));
    let published = kids(app.call(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await.ok());
    assert_eq!(published, vec![rotated.new_kid.clone()]);
    assert!(!verifies_with_jwks(&app, &jwt).await);
    app.clock.set(today());

    // An inactive user's token grants nothing.
    app.patch(
        &format!("/api/v1/orgs/{org}/users/{ada}"),
        &app.admin,
        json!({ "status": "inactive" }),
    )
    .await
    .ok();
    let inactive = issue(ada.clone()).await.ok();
    let claims = jwt_parts(inactive["token"].as_str().unwrap()).1;
    assert_eq!((claims["features"].clone(), claims["products"].clone()), (json!([]), json!([])));

    // Bad input: an unknown user, another tenant's org, a made-up org: 404;
    // the product's token asking anything else: 403.
    issue("nobody@offline.example".into()).await.problem(404, "not_found");
    let theirs = user(&app, &other, "ada@offline.example").await;
    app.post(
        &format!("/api/v1/orgs/{other}/users/{theirs}/entitlement-token"),
        &token,
        json!(null),
    )
    .await
    .problem(404, "not_found");
    app.post("/api/v1/orgs/org_nope/users/x/entitlement-token", &token, json!(null))
        .await
        .problem(404, "not_found");
    app.get(&format!("/api/v1/orgs/{org}/users/{ada}"), &token)
        .await
        .problem(403, "forbidden");

    // A server without a signing key answers 503 (its log names the
    // settings; a 5xx's detail never leaves the server).
    let bare = spawn_with_config(backend, allot_server::Config::default()).await;
    catalogue(&bare).await;
    let o = org_named(&bare, "Bare AB").await;
    let u = user(&bare, &o, "bea@bare.example").await;
    let r = bare
        .post(&format!("/api/v1/orgs/{o}/users/{u}/entitlement-token"), &bare.admin, json!(null))
        .await;
    r.problem(503, "unavailable");
}

/// (holders, active, idle, recently_assigned) of one product of one subscription.
async fn usage_of(app: &TestApp, org: &str, days: u32, product: &str, sub: &str) -> (i64, i64, i64, i64) {
    let r = app
        .get(&format!("/api/v1/orgs/{org}/license-usage?idle_days={days}"), &app.admin)
        .await
        .ok();
    let item = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["product"] == product && i["subscription"] == sub)
        .unwrap_or_else(|| panic!("no {product} on {sub} in {r}"))
        .clone();
    let n = |k: &str| item[k].as_i64().unwrap();
    (n("holders"), n("active"), n("idle"), n("recently_assigned"))
}

/// Rows of the usage table, read straight from the database.
async fn usage_rows(app: &TestApp, org: &str) -> BTreeMap<(String, String), String> {
    let mut rd = app.store.read_conn().await.unwrap();
    rd.rows(
        "SELECT user_id, product, last_used_on FROM license_usage WHERE org_id = $1",
        &[allot_store::Val::from(org)],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            (r.text("user_id").unwrap(), r.text("product").unwrap()),
            r.text("last_used_on").unwrap(),
        )
    })
    .collect()
}

async fn checks_record_usage_and_a_job_reclaims_idle_seats(backend: Backend) {
    let app = spawn(backend).await;
    catalogue(&app).await;
    let org = org(&app, "Usage AB", None).await;
    let other = org_named(&app, "Not yours AB").await;
    let sub = subscription(
        &app,
        &org,
        json!([{ "product": "meetings", "quantity": 10 }, { "product": "messaging", "quantity": 10 }]),
    )
    .await;
    let mut users = Vec::new();
    for name in ["ada", "bo", "cy", "di"] {
        users.push(user(&app, &org, &format!("{name}@usage.example")).await);
    }
    let (ada, bo, cy, di) = (&users[0], &users[1], &users[2], &users[3]);
    for u in [ada, bo, cy] {
        app.post(
            &format!("/api/v1/orgs/{org}/users/{u}/licenses"),
            &app.admin,
            json!({ "add": [{ "product": "meetings", "subscription": sub }] }),
        )
        .await
        .ok();
    }
    // Forty days later: the seats were given before any 30-day window.
    let start = app.clock.now();
    app.clock.set(start + chrono::Duration::days(40));
    let day40 = app.clock.today().to_string();
    let token = product_service_token(&app, &org).await;
    let check = format!("/api/v1/orgs/{org}/entitlements/check");
    assert_eq!(usage_of(&app, &org, 30, "meetings", &sub).await, (3, 0, 3, 0));
    // Ada uses a feature meetings grants, Bo the product (in a batch), Di
    // (no licence) is refused: refusals record nothing.
    let a = app.post(&check, &token, json!({ "user": ada, "feature": "recording" })).await.ok();
    assert_eq!(a["allowed"], true);
    app.post(
        "/api/v1/entitlements/evaluations",
        &token,
        json!({ "org": org, "evaluations": [{ "user": "BO@usage.example", "product": "meetings" }, { "user": di, "feature": "meetings" }] }),
    )
    .await
    .ok();
    // Asked again the same day: still one record.
    app.post(&check, &token, json!({ "user": ada, "feature": "meetings" })).await.ok();
    // Written by the server's flusher within a few seconds, without the report.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let rows = loop {
        let rows = usage_rows(&app, &org).await;
        if rows.len() >= 2 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let want: BTreeMap<(String, String), String> = [
        ((ada.clone(), "meetings".to_string()), day40.clone()),
        ((bo.clone(), "meetings".to_string()), day40.clone()),
    ]
    .into();
    assert_eq!(rows, want);
    assert_eq!(usage_of(&app, &org, 30, "meetings", &sub).await, (3, 2, 1, 0));
    assert_eq!(usage_of(&app, &org, 30, "messaging", &sub).await, (0, 0, 0, 0));
    // A seat given today is not idle yet.
    app.post(
        &format!("/api/v1/orgs/{org}/users/{di}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings", "subscription": sub }] }),
    )
    .await
    .ok();
    assert_eq!(usage_of(&app, &org, 30, "meetings", &sub).await, (4, 2, 1, 1));

    // Reclaim: a dry run names the idle holder and writes nothing; the run removes only that seat.
    let reclaim =
        |dry: bool| json!({ "filter": { "product": "meetings", "idle_days": 30 }, "remove": [{ "product": "meetings" }], "dry_run": dry });
    let before = license_state(&app).await;
    let id = start_job(&app, &org, reclaim(true)).await;
    let j = finished_job(&app, &id).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let named: Vec<String> = job_results(&app, &id)
        .await
        .iter()
        .map(|r| r["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(named, vec!["cy@usage.example"]);
    assert_eq!(license_state(&app).await, before, "a dry run wrote licences");
    let id = start_job(&app, &org, reclaim(false)).await;
    assert_eq!(finished_job(&app, &id).await["state"], "succeeded");
    assert_eq!(usage_of(&app, &org, 30, "meetings", &sub).await, (3, 2, 0, 1));
    let held = |u: &str| {
        let app = &app;
        let path = format!("/api/v1/orgs/{org}/users/{u}/licenses");
        async move { app.get(&path, &app.admin).await.ok()["items"].as_array().unwrap().len() }
    };
    assert_eq!((held(ada).await, held(bo).await, held(cy).await, held(di).await), (1, 1, 0, 1));

    // A month on, nobody has used it: every seat is idle; a use the same day counts at once.
    app.clock.set(start + chrono::Duration::days(71));
    assert_eq!(usage_of(&app, &org, 30, "meetings", &sub).await, (3, 0, 3, 0));
    assert_eq!(usage_of(&app, &org, 60, "meetings", &sub).await, (3, 2, 0, 1));
    app.post(&check, &token, json!({ "user": di, "feature": "recording" })).await.ok();
    assert_eq!(usage_of(&app, &org, 30, "meetings", &sub).await, (3, 1, 2, 0));
    assert_eq!(usage_rows(&app, &org).await.len(), 3);
    // A deleted user's usage goes with it.
    app.call(
        reqwest::Method::DELETE,
        &format!("/api/v1/orgs/{org}/users/{di}"),
        Some(&app.admin),
        None,
    )
    .await
    .ok();
    assert_eq!(usage_rows(&app, &org).await.len(), 2);

    // Bad input: a clear 422 naming the field, another tenant's org 404, nothing written.
    let before = license_state(&app).await;
    for q in ["idle_days=0", "idle_days=3651", "idle_days=many", "idle_days=7&x=1"] {
        let r = app.get(&format!("/api/v1/orgs/{org}/license-usage?{q}"), &app.admin).await;
        assert_eq!(r.status.as_u16(), 422, "{q}: {}", r.body);
    }
    let r = app.get(&format!("/api/v1/orgs/{org}/license-usage?idle_days=0"), &app.admin).await;
    assert_eq!(r.body["errors"][0]["field"], "idle_days", "{}", r.body);
    app.get(&format!("/api/v1/orgs/{other}/license-usage"), &app.admin.clone())
        .await
        .ok();
    let mine_only = app.token(Role::OrgAdmin, None, Some(&org)).await;
    app.get(&format!("/api/v1/orgs/{other}/license-usage"), &mine_only)
        .await
        .problem(404, "not_found");
    for (filter, field) in [
        (json!({ "idle_days": 30 }), "filter.product"),
        (json!({ "product": "meetings", "idle_days": 0 }), "filter.idle_days"),
        (json!({ "product": "no-such-product", "idle_days": 30 }), "filter.product"),
    ] {
        let r = app
            .post(
                &format!("/api/v1/orgs/{org}/license-jobs"),
                &app.admin,
                json!({ "filter": filter, "remove": [{ "product": "meetings" }] }),
            )
            .await;
        assert_eq!(r.status.as_u16(), 422, "{filter}: {}", r.body);
        assert!(
            r.body["errors"].as_array().unwrap().iter().any(|e| e["field"] == field),
            "{filter}: {}",
            r.body
        );
    }
    assert_eq!(license_state(&app).await, before);
}

/// PostgreSQL: another process that closes its store cleanly costs this
/// server nothing; one whose connections end without a word (as they do
/// on `kill -9`) makes it read everything again, once; and a process whose
/// presence connection was cut but that lives on comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_process_is_read_for_only_when_it_dies() {
    if !postgres_available() {
        return;
    }
    let app = spawn(Backend::Postgres).await;
    let reads = || app.app.entitlements.full_loads.load(std::sync::atomic::Ordering::Relaxed);
    let row = |origin: String| {
        let store = app.store.clone();
        async move {
            let mut rd = store.read_conn().await.expect("read");
            rd.rows(
                "SELECT gone_at FROM processes WHERE origin = $1",
                allot_store::args![origin.as_str()],
            )
            .await
            .expect("rows")
            .first()
            .map(|r| r.opt_text("gone_at").expect("gone_at"))
        }
    };
    let before = reads();
    let open = || allot_store::Store::open(&app.database, allot_store::StoreOptions::default());

    let clean = open().await.expect("open");
    let origin = clean.change_feed().origin.clone();
    assert_eq!(
        row(origin.clone()).await,
        Some(None),
        "a process has its row while it has the database open"
    );
    clean.close().await;
    assert_eq!(row(origin).await, None, "a clean close removes the row");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(reads(), before, "nothing to read for a process that left cleanly");

    let dying = open().await.expect("open");
    let origin = dying.change_feed().origin.clone();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(reads(), before, "a live process costs nothing");
    let mut admin = app.store.read_conn().await.expect("read");
    let cut = admin
        .rows(
            "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity WHERE application_name LIKE $1",
            allot_store::args![format!("allot {origin}%")],
        )
        .await
        .expect("terminate");
    drop(admin);
    assert!(!cut.is_empty(), "the process's connections carry its name");
    let started = std::time::Instant::now();
    while reads() == before {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "a process whose connections all ended was not read for"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(reads(), before + 1, "read for once");
    assert!(
        row(origin.clone()).await.is_some_and(|g| g.is_some()),
        "its row notes when it was seen gone"
    );
    // Alive after all: its presence connection comes back within seconds.
    let started = std::time::Instant::now();
    while row(origin.clone()).await != Some(None) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "a living process did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    dying.close().await;
    assert_eq!(reads(), before + 1);
}

/// PostgreSQL: a server alone on its database announces nothing; a second
/// one that starts greets it, is answered once it announces again, and
/// follows its commits from then on; when the second goes, the first is
/// alone again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_alone_announces_nothing_until_another_greets_it() {
    if !postgres_available() {
        return;
    }
    let app = spawn(Backend::Postgres).await;
    catalogue(&app).await;
    let feed = app.store.change_feed().clone();
    let wait_for = |want: bool, what: &'static str| {
        let feed = feed.clone();
        async move {
            let started = std::time::Instant::now();
            while feed.announces() != want {
                assert!(started.elapsed() < std::time::Duration::from_secs(3), "{what}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(false, "a server alone still announces its commits").await;

    let org = org_named(&app, "Greeted").await;
    let sub = subscription(&app, &org, json!([{ "product": "meetings", "quantity": 10 }])).await;

    // A second server on the same database (another store: another process
    // as far as the database can tell).
    let second_store = allot_store::Store::open(&app.database, allot_store::StoreOptions::default())
        .await
        .expect("open");
    let second = allot_server::AppState::new(second_store.clone(), app.clock.clone(), allot_server::Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let second_url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(allot_server::serve(second.clone(), listener, async move {
        let _ = stopped.await;
    }));
    let started = std::time::Instant::now();
    while !second.entitlements.is_ready() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the second server did not read its index"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(feed.announces(), "the first server was welcomed only once it announced again");

    // A change through the first is followed by the second within a second.
    let token = product_service_token(&app, &org).await;
    let new_user_with_meetings = |email: String| {
        let (app, org, sub) = (&app, &org, &sub);
        async move {
            let u = user(app, org, &email).await;
            let r = app
                .post(
                    &format!("/api/v1/orgs/{org}/users/{u}/licenses"),
                    &app.admin,
                    json!({ "add": [{ "product": "meetings", "subscription": sub }] }),
                )
                .await;
            assert!(r.status.is_success(), "{}", r.body);
            u
        }
    };
    let user = new_user_with_meetings("greeted@example.com".into()).await;
    let ask = json!({ "user": user, "feature": "meetings" });
    let started = std::time::Instant::now();
    loop {
        let r = app
            .client
            .post(format!("{second_url}/api/v1/orgs/{org}/entitlements/check"))
            .bearer_auth(&token)
            .json(&ask)
            .send()
            .await
            .expect("check");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        if body["allowed"] == json!(true) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "the second server did not follow the first's commit within a second: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // More changes, each announced with the next number: the second never
    // had to read everything.
    for i in 0..5 {
        new_user_with_meetings(format!("greeted{i}@example.com")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        second.entitlements.full_loads.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the second server read everything again without a notification missing"
    );
    let _ = stop.send(());
    let _ = serving.await;
    second_store.close().await;
    wait_for(false, "alone again, the first server still announces").await;
}
