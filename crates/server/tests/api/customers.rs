//! The customer list: statuses derived for today, filters that
//! match a customer when at least one subscription matches, search, sort,
//! pages, and who sees which customers.

use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(customers_appear_under_each_status_they_hold, customer_lists_are_scoped_and_checked);

async fn sub(app: &TestApp, org: &str, trial: bool, start: &str, end: &str) -> String {
    app.post(
        &format!("/api/v1/orgs/{org}/subscriptions"),
        &app.admin,
        json!({ "trial": trial, "start_date": start, "end_date": end, "items": [{ "product": "meetings", "quantity": 5 }] }),
    )
    .await
    .ok()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Names of the customers a list answers, in order.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["org"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn customers(app: &TestApp, path: &str, token: &str) -> Value {
    app.get(path, token).await.ok()
}

async fn customers_appear_under_each_status_they_hold(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Reseller" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Today is 2026-06-15.
    let alpha = org(&app, "Alpha AB", Some(&partner)).await;
    sub(&app, &alpha, false, "2026-01-01", "2027-06-01").await; // active
    let suspended = sub(&app, &alpha, false, "2026-01-01", "2027-06-01").await;
    app.patch(
        &format!("/api/v1/orgs/{alpha}/subscriptions/{suspended}"),
        &app.admin,
        json!({ "suspended": true }),
    )
    .await
    .ok();
    let beta = org(&app, "Beta AB", Some(&partner)).await;
    sub(&app, &beta, true, "2026-06-01", "2026-07-01").await; // trial expiring within 30 days
    let gamma = org(&app, "Gamma AB", Some(&partner)).await;
    sub(&app, &gamma, false, "2025-01-01", "2026-06-01").await; // expired
    let gone = sub(&app, &gamma, false, "2026-01-01", "2026-08-10").await; // expiring within 60 days, then cancelled
    app.post(&format!("/api/v1/orgs/{gamma}/subscriptions/{gone}/cancel"), &app.admin, json!({}))
        .await
        .ok();
    org(&app, "Delta AB", Some(&partner)).await; // no subscriptions
                                                 // Provisioning: Alpha's most important is awaiting_details.
    app.patch(
        &format!("/api/v1/orgs/{alpha}/subscriptions/{suspended}"),
        &app.admin,
        json!({ "items": [{ "product": "meetings", "provisioning_status": "awaiting_details" }] }),
    )
    .await
    .ok();
    let base = format!("/api/v1/partners/{partner}/customers");
    let all = customers(&app, &base, &app.admin).await;
    assert_eq!(names(&all), ["Alpha AB", "Beta AB", "Delta AB", "Gamma AB"]);
    let by_name: std::collections::HashMap<String, &Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["org"]["name"].as_str().unwrap().to_string(), i))
        .collect();
    assert_eq!(by_name["Alpha AB"]["subscription_statuses"], json!(["active", "suspended"]));
    assert_eq!(by_name["Alpha AB"]["provisioning_status"], "awaiting_details");
    assert_eq!(by_name["Beta AB"]["subscription_statuses"], json!(["trial_expiring_30d"]));
    assert_eq!(by_name["Beta AB"]["provisioning_status"], "provisioned");
    assert_eq!(by_name["Gamma AB"]["subscription_statuses"], json!(["expired", "cancelled"]));
    assert_eq!(by_name["Delta AB"]["subscription_statuses"], json!([]));
    assert_eq!(by_name["Delta AB"]["provisioning_status"], Value::Null);
    // A customer appears under each status it holds.
    for (filter, expected) in [
        ("subscription_status=active", vec!["Alpha AB"]),
        ("subscription_status=suspended", vec!["Alpha AB"]),
        ("subscription_status=active,trial_expiring_30d", vec!["Alpha AB", "Beta AB"]),
        ("subscription_status=expired,cancelled", vec!["Gamma AB"]),
        ("subscription_status=expiring_60d", vec![]),
        ("provisioning_status=awaiting_details", vec!["Alpha AB"]),
        ("provisioning_status=provisioned", vec!["Alpha AB", "Beta AB", "Gamma AB"]),
        (
            "subscription_status=trial_expiring_30d&provisioning_status=awaiting_details",
            vec![],
        ),
        ("subscription_status=active&provisioning_status=awaiting_details", vec!["Alpha AB"]),
        ("q=ETA", vec!["Beta AB"]),
        ("q=ab&sort=-name", vec!["Gamma AB", "Delta AB", "Beta AB", "Alpha AB"]),
    ] {
        assert_eq!(
            names(&customers(&app, &format!("{base}?{filter}"), &app.admin).await),
            expected,
            "{filter}"
        );
    }
    // Statuses are derived for today: 45 days on, Alpha's paid subscription
    // still runs and Beta's trial has expired.
    app.clock.set(today() + chrono::Duration::days(45));
    assert_eq!(
        names(&customers(&app, &format!("{base}?subscription_status=trial_expired"), &app.admin).await),
        ["Beta AB"]
    );
    app.clock.set(today() + chrono::Duration::days(300)); // 2027-04-11: Alpha's ends 2027-06-01, 51 days left
    let l = customers(&app, &format!("{base}?subscription_status=expiring_60d"), &app.admin).await;
    assert_eq!(names(&l), ["Alpha AB"]);
    assert_eq!(l["items"][0]["subscription_statuses"], json!(["suspended", "expiring_60d"]));
    app.clock.set(today());
    // Pages: two at a time, filtered, in order, each customer once.
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let page = customers(&app, &format!("{base}?limit=2&sort=-name{next}"), &app.admin).await;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => next = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["Gamma AB", "Delta AB", "Beta AB", "Alpha AB"]);
}

async fn customer_lists_are_scoped_and_checked(backend: Backend) {
    let app = spawn(backend).await;
    let mine = app.post("/api/v1/partners", &app.admin, json!({ "name": "Mine" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = app.post("/api/v1/partners", &app.admin, json!({ "name": "Theirs" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = org(&app, "A of mine", Some(&mine)).await;
    org(&app, "B of theirs", Some(&theirs)).await;
    org(&app, "C direct", None).await;
    use allot_domain::access::Role;
    let partner_admin = app.token(Role::PartnerAdmin, Some(&mine), None).await;
    let sales = app.token(Role::PartnerSales, Some(&mine), None).await;
    let org_admin = app.token(Role::OrgAdmin, None, Some(&a)).await;
    // The provider sees every customer, with or without a partner.
    assert_eq!(
        names(&customers(&app, "/api/v1/customers", &app.admin).await),
        ["A of mine", "B of theirs", "C direct"]
    );
    assert_eq!(
        names(&customers(&app, "/api/v1/customers?partner=none", &app.admin).await),
        ["C direct"]
    );
    assert_eq!(
        names(&customers(&app, &format!("/api/v1/customers?partner={theirs}"), &app.admin).await),
        ["B of theirs"]
    );
    // A partner sees its own; another partner's list is 404.
    for t in [&partner_admin, &sales] {
        assert_eq!(
            names(&customers(&app, &format!("/api/v1/partners/{mine}/customers"), t).await),
            ["A of mine"]
        );
        assert_eq!(names(&customers(&app, "/api/v1/customers", t).await), ["A of mine"]);
        app.get(&format!("/api/v1/partners/{theirs}/customers"), t)
            .await
            .problem(404, "not_found");
        app.get(&format!("/api/v1/customers?partner={theirs}"), t)
            .await
            .problem(404, "not_found");
    }
    // An org's admin sees its own org only, and no partner's list.
    assert_eq!(names(&customers(&app, "/api/v1/customers", &org_admin).await), ["A of mine"]);
    app.get(&format!("/api/v1/partners/{mine}/customers"), &org_admin)
        .await
        .problem(404, "not_found");
    app.get("/api/v1/partners/ptn_nope/customers", &app.admin)
        .await
        .problem(404, "not_found");
    // Bad input.
    let base = format!("/api/v1/partners/{mine}/customers");
    for bad in [
        "subscription_status=bogus",
        "provisioning_status=active",
        "sort=size",
        "limit=0",
        "cursor=zz",
        "cursor=6162",
        "colour=red",
        "partner=x",
    ] {
        app.get(&format!("{base}?{bad}"), &app.admin)
            .await
            .problem(422, "validation_failed");
    }
}
