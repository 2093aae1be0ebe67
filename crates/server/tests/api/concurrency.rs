//! Seats are never oversold: 64 concurrent changes against 50 seats.

use futures::future::join_all;
use serde_json::json;

use crate::both_backends;
use crate::kit::*;

both_backends!(sixty_four_changes_fifty_seats);

async fn sixty_four_changes_fifty_seats(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let org = org(&app, "Hot Pool Ltd", None).await;
    let sub = subscription(&app, &org, json!([{ "product": "meetings", "quantity": 50 }])).await;
    let mut users = Vec::new();
    for i in 0..64 {
        users.push(user(&app, &org, &format!("user{i}@hot.example")).await);
    }
    // Half name the subscription, half let Allot choose: both paths must hold.
    let calls = users.iter().enumerate().map(|(i, u)| {
        let (app, org) = (&app, &org);
        let body = if i % 2 == 0 {
            json!({ "add": [{ "product": "meetings", "subscription": sub }] })
        } else {
            json!({ "add": [{ "product": "meetings" }] })
        };
        async move { app.post(&format!("/api/v1/orgs/{org}/users/{u}/licenses"), &app.admin, body).await }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.status.is_success()).count();
    let exhausted = results
        .iter()
        .filter(|r| r.status.as_u16() == 422 && r.code() == "seats_exhausted")
        .count();
    let other: Vec<String> = results
        .iter()
        .filter(|r| !r.status.is_success() && r.code() != "seats_exhausted")
        .map(|r| r.body.to_string())
        .collect();
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!((ok, exhausted), (50, 14));

    let s = app.get(&format!("/api/v1/orgs/{org}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(s["items"][0]["consumed"], 50);
    assert_eq!(s["items"][0]["available"], 0);
    let mut tx = app.store.begin_read().await.unwrap();
    assert_eq!(
        allot_store::licenses::count_in_pool(&mut tx, &org, &sub, "meetings").await.unwrap(),
        50
    );
    drop(tx);
    assert_eq!(app.mismatches().await, 0);
}

both_backends!(concurrent_changes_of_one_user);

/// Changes of one user planned at the same time: each is planned from what
/// the user holds, so exactly one add of a product wins and the rest are told
/// the user already holds it; adds and removes of other products interleave
/// without losing any.
async fn concurrent_changes_of_one_user(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    let path = format!("/api/v1/orgs/{}/users/{u}/licenses", w.org);
    let same = (0..16).map(|_| app.post(&path, &app.admin, json!({ "add": [{ "product": "meetings" }] })));
    let results = join_all(same).await;
    let ok = results.iter().filter(|r| r.status.is_success()).count();
    let held = results.iter().filter(|r| r.code() == "already_assigned").count();
    assert_eq!(
        (ok, held),
        (1, 15),
        "{:?}",
        results.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
    );

    let mixed = [
        json!({ "add": [{ "product": "calling-professional" }] }),
        json!({ "add": [{ "product": "messaging" }] }),
        json!({ "remove": [{ "product": "meetings" }] }),
    ];
    let results = join_all(mixed.iter().map(|b| app.post(&path, &app.admin, b.clone()))).await;
    assert!(
        results.iter().all(|r| r.status.is_success()),
        "{:?}",
        results.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
    );
    let mine = app.get(&path, &app.admin).await.ok();
    let products: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product"].as_str().unwrap())
        .collect();
    assert_eq!(products, ["calling-professional", "messaging"]);
    assert_eq!(app.mismatches().await, 0);
}
