//! Moving users between subscriptions with their service data kept
//! (seed 001), and retention of the data of a family
//! whose last licence went (seed 002), on both backends.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(
    edit_move_keeps_service_data,
    cancel_is_refused_while_users_hold_seats,
    cancel_with_move_users_to_moves_everyone,
    cancel_with_force_removes_and_retains,
    retention_restores_then_purge_forgets,
    re_adding_within_retention_restores_the_license_properties,
);

/// Users with calling licences on subscription A, each with a phone number,
/// an extension and a location; B has exactly as many seats as A has users.
pub struct Calling {
    pub org: String,
    pub a: String,
    pub b: String,
    pub users: Vec<String>,
}

pub async fn calling_org(app: &TestApp, n: usize) -> Calling {
    for code in ["calling-professional", "calling-standard"] {
        app.post(
            "/api/v1/products",
            &app.admin,
            json!({ "code": code, "name": code, "family": "calling", "features": ["calling"], "retention_days": 7,
                    "properties": { "location": "optional", "phone_number": "optional", "extension": "optional" } }),
        )
        .await
        .ok();
    }
    let org = org(app, "Calling AB", None).await;
    let a = subscription(app, &org, json!([{ "product": "calling-professional", "quantity": n as i64 + 10 }])).await;
    let b = subscription(app, &org, json!([{ "product": "calling-professional", "quantity": n as i64 }])).await;
    let users = many_users(app, &org, "c", "calling.example", n, Some("SE")).await;
    for (i, u) in users.iter().enumerate() {
        app.post(
            &format!("/api/v1/orgs/{org}/users/{u}/licenses"),
            &app.admin,
            json!({ "add": [{ "product": "calling-professional", "subscription": a,
                              "properties": { "phone_number": format!("+46812{i:05}"), "extension": format!("{}", 2000 + i), "location": "Stockholm HQ" } }] }),
        )
        .await
        .ok();
    }
    Calling { org, a, b, users }
}

/// Every stored row of service data of a family, as stored text (compared
/// byte for byte), with its retention date.
pub async fn service_data_rows(app: &TestApp, org: &str, family: &str) -> BTreeMap<String, (String, Option<String>)> {
    let mut tx = app.store.begin_read().await.expect("read");
    tx.rows(
        "SELECT user_id, data, retain_until FROM service_data WHERE org_id = $1 AND family = $2",
        allot_store::args![org, family],
    )
    .await
    .expect("service data")
    .iter()
    .map(|r| {
        (
            r.text("user_id").unwrap(),
            (r.text("data").unwrap(), r.opt_text("retain_until").unwrap()),
        )
    })
    .collect()
}

/// Every audit event of an org with one action (all pages).
pub async fn audit_events(app: &TestApp, org: &str, action: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = String::new();
    loop {
        let page = app
            .get(
                &format!("/api/v1/orgs/{org}/audit-events?action={action}&limit=500{next}"),
                &app.admin,
            )
            .await
            .ok();
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => next = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// What every way of moving must leave: the same service data byte for
/// byte, A empty, B full, and each user's last licence change a move.
pub async fn assert_all_moved(app: &TestApp, c: &Calling, before: &BTreeMap<String, (String, Option<String>)>) {
    assert_eq!(before.len(), c.users.len(), "every user had service data");
    let after = service_data_rows(app, &c.org, "calling").await;
    assert_eq!(&after, before, "service data is byte for byte the same, none in retention");
    let seats = |s: Value| s["items"][0]["consumed"].as_i64().unwrap();
    let a = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{}", c.org, c.a), &app.admin)
        .await
        .ok();
    let b = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{}", c.org, c.b), &app.admin)
        .await
        .ok();
    assert_eq!(
        (seats(a), seats(b)),
        (0, c.users.len() as i64),
        "A has 0 consumed, B has every user"
    );
    for u in &c.users {
        let l = app
            .get(&format!("/api/v1/orgs/{}/users/{u}/licenses", c.org), &app.admin)
            .await
            .ok();
        assert_eq!(l["items"].as_array().unwrap().len(), 1, "{l}");
        assert_eq!(l["items"][0]["subscription"], c.b.as_str());
        assert_eq!(l["service_data"][0]["family"], "calling");
        assert_eq!(l["service_data"][0]["retain_until"], Value::Null);
    }
    // The last licence change of each user is a move of the calling family.
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    for e in audit_events(app, &c.org, "license.change").await {
        let user = e["target"].as_str().unwrap().trim_start_matches("user:").to_string();
        let at = e["at"].as_str().unwrap().to_string();
        if last.get(&user).is_none_or(|p| p["at"].as_str().unwrap() <= at.as_str()) {
            last.insert(user, e);
        }
    }
    for u in &c.users {
        let e = &last[u];
        assert_eq!(e["after"]["moved_families"], json!(["calling"]), "{e}");
        assert_eq!(e["before"]["licenses"][0]["subscription"], c.a.as_str(), "{e}");
        assert_eq!(e["after"]["licenses"][0]["subscription"], c.b.as_str(), "{e}");
    }
    assert_eq!(app.mismatches().await, 0);
}

async fn edit_move_keeps_service_data(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 50).await;
    let before = service_data_rows(&app, &c.org, "calling").await;
    let id = start_job(
        &app,
        &c.org,
        json!({ "users": c.users, "move": { "from_subscription": c.a, "to_subscription": c.b } }),
    )
    .await;
    let j = finished_job(&app, &id).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_all_moved(&app, &c, &before).await;
}

async fn cancel_is_refused_while_users_hold_seats(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 3).await;
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "meetings", "name": "Meetings", "family": "meetings", "features": ["meetings"] }),
    )
    .await
    .ok();
    let small = subscription(&app, &c.org, json!([{ "product": "calling-professional", "quantity": 2 }])).await;
    let other = subscription(&app, &c.org, json!([{ "product": "meetings", "quantity": 10 }])).await;
    let stranger = org(&app, "Stranger AB", None).await;
    let theirs = subscription(&app, &stranger, json!([{ "product": "calling-professional", "quantity": 10 }])).await;
    let token = app.token(allot_domain::access::Role::OrgSuperAdmin, None, Some(&stranger)).await;
    let readonly = app.token(allot_domain::access::Role::OrgReadOnly, None, Some(&c.org)).await;
    let state = app.snapshot().await;
    let path = format!("/api/v1/orgs/{}/subscriptions/{}/cancel", c.org, c.a);
    let r = app.post(&path, &app.admin, json!({})).await;
    r.problem(409, "subscription_has_users");
    assert!(r.body["detail"].as_str().unwrap().contains("3 users"), "{}", r.body);
    // An empty body says the same; bad bodies are refused as such.
    let empty = app
        .raw(reqwest::Method::POST, &path, &app.admin, "application/json", Vec::new())
        .await;
    empty.problem(409, "subscription_has_users");
    app.post(&path, &app.admin, json!({ "force": true, "move_users_to": c.b }))
        .await
        .problem(422, "validation_failed");
    app.post(&path, &app.admin, json!({ "forse": true }))
        .await
        .problem(422, "validation_failed");
    app.post(&path, &app.admin, json!({ "move_users_to": c.a }))
        .await
        .problem(422, "validation_failed");
    app.post(&path, &app.admin, json!({ "move_users_to": "sub_nope" }))
        .await
        .problem(404, "not_found");
    // A target too small: refused as a whole, saying how many are needed and free.
    let r = app.post(&path, &app.admin, json!({ "move_users_to": small })).await;
    r.problem(422, "seats_exhausted");
    let why = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(why.contains('3') && why.contains('2'), "{why}");
    // A target without the family: refused.
    app.post(&path, &app.admin, json!({ "move_users_to": other }))
        .await
        .problem(422, "validation_failed");
    // Another tenant's subscription, and another tenant asking: 404.
    app.post(&path, &app.admin, json!({ "move_users_to": theirs }))
        .await
        .problem(404, "not_found");
    app.post(&path, &token, json!({ "force": true })).await.problem(404, "not_found");
    app.post(&path, &readonly, json!({ "force": true })).await.problem(403, "forbidden");
    assert_eq!(app.snapshot().await, state, "refused cancels change nothing");
    // An empty subscription cancels at once, and again is no change.
    let empty_sub = subscription(&app, &c.org, json!([{ "product": "calling-professional", "quantity": 5 }])).await;
    let p = format!("/api/v1/orgs/{}/subscriptions/{empty_sub}/cancel", c.org);
    let s = app.post(&p, &app.admin, json!({})).await.ok();
    assert_eq!((s["cancelled"].as_bool(), s["status"].as_str()), (Some(true), Some("cancelled")));
    let s = app.post(&p, &app.admin, json!({})).await.ok();
    assert_eq!(s["cancelled"], true);
    assert_eq!(audit_events(&app, &c.org, "subscription.cancel").await.len(), 1);
    // A cancelled subscription gives no seat.
    let u = user(&app, &c.org, "late@calling.example").await;
    app.patch(
        &format!("/api/v1/orgs/{}/users/{u}", c.org),
        &app.admin,
        json!({ "usage_location": "SE" }),
    )
    .await
    .ok();
    app.post(
        &format!("/api/v1/orgs/{}/users/{u}/licenses", c.org),
        &app.admin,
        json!({ "add": [{ "product": "calling-professional", "subscription": empty_sub }] }),
    )
    .await
    .problem(422, "subscription_not_active");
}

async fn cancel_with_move_users_to_moves_everyone(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 50).await;
    let before = service_data_rows(&app, &c.org, "calling").await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/subscriptions/{}/cancel", c.org, c.a),
            &app.admin,
            json!({ "move_users_to": c.b }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    assert_eq!(r.body["job"]["kind"], "subscription_cancel");
    let j = finished_job(&app, r.body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["progress"]["succeeded"], 50, "{j}");
    assert_all_moved(&app, &c, &before).await;
    let a = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{}", c.org, c.a), &app.admin)
        .await
        .ok();
    assert_eq!(
        (a["cancelled"].as_bool(), a["status"].as_str()),
        (Some(true), Some("cancelled")),
        "{a}"
    );
    let cancels = audit_events(&app, &c.org, "subscription.cancel").await;
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["after"]["job"], j["id"]);
}

async fn cancel_with_force_removes_and_retains(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 5).await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/subscriptions/{}/cancel", c.org, c.a),
            &app.admin,
            json!({ "force": true }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    let j = finished_job(&app, r.body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let a = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{}", c.org, c.a), &app.admin)
        .await
        .ok();
    assert_eq!(
        (a["cancelled"].as_bool(), a["items"][0]["consumed"].as_i64()),
        (Some(true), Some(0))
    );
    let until = (today() + chrono::Duration::days(7)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (u, (_, retain)) in service_data_rows(&app, &c.org, "calling").await {
        assert!(c.users.contains(&u));
        assert_eq!(retain.as_deref().map(|r| &r[..10]), Some(&until[..10]), "retained 7 days");
    }
    assert_eq!(app.mismatches().await, 0);
}

async fn retention_restores_then_purge_forgets(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 2).await;
    let (u, other) = (&c.users[0], &c.users[1]);
    let lic = format!("/api/v1/orgs/{}/users/{u}/licenses", c.org);
    let original = service_data_rows(&app, &c.org, "calling").await[u].0.clone();
    app.post(&lic, &app.admin, json!({ "remove": [{ "product": "calling-professional" }] }))
        .await
        .ok();
    let l = app.get(&lic, &app.admin).await.ok();
    assert_eq!(l["items"], json!([]));
    assert_eq!(l["service_data"][0]["family"], "calling", "retained data is shown: {l}");
    assert!(
        l["service_data"][0]["retain_until"].as_str().unwrap().starts_with("2026-06-22"),
        "{l}"
    );
    // Six days later, re-added with no properties: everything is back.
    app.clock.set(today() + chrono::Duration::days(6));
    app.post(
        &lic,
        &app.admin,
        json!({ "add": [{ "product": "calling-professional", "subscription": c.b }] }),
    )
    .await
    .ok();
    let (data, retain) = service_data_rows(&app, &c.org, "calling").await[u].clone();
    assert_eq!((data, retain), (original.clone(), None), "restored exactly");
    // Removed again; a purge before the end of retention keeps it.
    app.post(&lic, &app.admin, json!({ "remove": [{ "product": "calling-professional" }] }))
        .await
        .ok();
    let purge = app.post("/api/v1/service-data/purge", &app.admin, json!({})).await.ok();
    assert_eq!(purge["purged"], 0);
    let org_admin = app.token(allot_domain::access::Role::OrgSuperAdmin, None, Some(&c.org)).await;
    app.post("/api/v1/service-data/purge", &org_admin, json!({}))
        .await
        .problem(403, "forbidden");
    // Eight days later: the purge deletes it, and says so in the audit log.
    app.clock.set(today() + chrono::Duration::days(14));
    let l = app.get(&lic, &app.admin).await.ok();
    assert_eq!(l["service_data"], json!([]), "expired data is not shown");
    let purge = app.post("/api/v1/service-data/purge", &app.admin, json!({})).await.ok();
    assert_eq!(purge["purged"], 1);
    let rows = service_data_rows(&app, &c.org, "calling").await;
    assert!(!rows.contains_key(u), "purged");
    assert!(rows.contains_key(other), "a user still holding the family keeps it");
    let events = audit_events(&app, &c.org, "service_data.purge").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["target"], format!("user:{u}"));
    assert_eq!(events[0]["before"]["family"], "calling");
    // Re-adding starts empty.
    app.post(
        &lic,
        &app.admin,
        json!({ "add": [{ "product": "calling-professional", "subscription": c.b }] }),
    )
    .await
    .ok();
    assert!(
        !service_data_rows(&app, &c.org, "calling").await.contains_key(u),
        "no data comes back"
    );
    let l = app.get(&lic, &app.admin).await.ok();
    assert_eq!(l["service_data"], json!([]));
}

/// A licence removed and added back within its family's retention gets its
/// properties back in the licence itself, not only in the stored service
/// data, on every path: a single change (which may name a new value), a
/// bulk job, a CSV row and a template.
async fn re_adding_within_retention_restores_the_license_properties(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 4).await;
    for u in &c.users {
        app.post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", c.org),
            &app.admin,
            json!({ "remove": [{ "product": "calling-professional" }] }),
        )
        .await
        .ok();
    }
    let properties_of = |i: usize| {
        let path = format!("/api/v1/orgs/{}/users/{}/licenses", c.org, c.users[i]);
        let app = &app;
        async move {
            let l = app.get(&path, &app.admin).await.ok();
            let items = l["items"].as_array().expect("items").clone();
            assert_eq!(items.len(), 1, "{l}");
            items[0]["properties"].clone()
        }
    };
    let expected =
        |i: usize, extension: &str| json!({ "phone_number": format!("+46812{i:05}"), "extension": extension, "location": "Stockholm HQ" });
    // A single change that names a new extension: the other two come back.
    let answer = app
        .post(
            &format!("/api/v1/orgs/{}/users/{}/licenses", c.org, c.users[0]),
            &app.admin,
            json!({ "add": [{ "product": "calling-professional", "subscription": c.a, "properties": { "extension": "9999" } }] }),
        )
        .await
        .ok();
    assert_eq!(
        answer["items"][0]["properties"],
        expected(0, "9999"),
        "the answer shows them: {answer}"
    );
    assert_eq!(properties_of(0).await, expected(0, "9999"));
    // A bulk job.
    let id = start_job(
        &app,
        &c.org,
        json!({ "users": [c.users[1]], "add": [{ "product": "calling-professional", "subscription": c.a }] }),
    )
    .await;
    assert_eq!(finished_job(&app, &id).await["state"], "succeeded");
    assert_eq!(properties_of(1).await, expected(1, "2001"));
    // A CSV row.
    let csv = format!("email,calling-professional [{}]\nc2@calling.example,TRUE\n", c.a);
    let (j, r) = crate::sheet::import_done(&app, &c.org, "mode=add_only", csv).await;
    assert_eq!(j["state"], "succeeded", "{j} {r:?}");
    assert_eq!(properties_of(2).await, expected(2, "2002"));
    // A template applied to the org's users (the others hold it already).
    let tpl = app
        .post(
            &format!("/api/v1/orgs/{}/license-templates", c.org),
            &app.admin,
            json!({ "name": "Calling", "scope": "org", "licenses": [{ "product": "calling-professional", "subscription": c.a }] }),
        )
        .await
        .ok();
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/license-templates/{}/apply", c.org, tpl["id"].as_str().expect("id")),
            &app.admin,
            json!({ "existing_users": true }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    assert_eq!(
        finished_job(&app, r.body["job"]["id"].as_str().expect("id")).await["state"],
        "succeeded"
    );
    assert_eq!(properties_of(3).await, expected(3, "2003"));
    assert_eq!(app.mismatches().await, 0);
}
