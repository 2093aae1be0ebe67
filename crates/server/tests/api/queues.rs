//! Dependent resources: contact-centre queues keep their product
//! billed; removing the phone licence warns, removing the billed licence is
//! refused on every path, and one call takes the user out of every queue.

use serde_json::{json, Value};

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;
use crate::sheet::import_done;

both_backends!(queues_keep_their_license_billed);

async fn queues_keep_their_license_billed(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "calling-standard", "calling").await;
    product(&app, "contact-centre", "contact-centre").await;
    let o = org(&app, "Support AB", None).await;
    let sub = subscription(
        &app,
        &o,
        json!([{ "product": "calling-standard", "quantity": 5 }, { "product": "contact-centre", "quantity": 5 }]),
    )
    .await;
    let agent = user(&app, &o, "agent@support.example").await;
    let other = user(&app, &o, "other@support.example").await;
    let lic = format!("/api/v1/orgs/{o}/users/{agent}/licenses");
    app.post(
        &lic,
        &app.admin,
        json!({ "add": [{ "product": "calling-standard" }, { "product": "contact-centre" }] }),
    )
    .await
    .ok();
    let queues = format!("/api/v1/orgs/{o}/queues");
    let mut ids = Vec::new();
    for (name, kind) in [("Support", "call"), ("Callbacks", "outbound"), ("Mail", "inbox")] {
        let r = app
            .post(
                &queues,
                &app.admin,
                json!({ "name": name, "kind": kind, "product": "contact-centre" }),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    // Bad queues, other tenants, roles.
    let stranger = org(&app, "Stranger AB", None).await;
    let their_token = app.token(Role::OrgSuperAdmin, None, Some(&stranger)).await;
    let readonly = app.token(Role::OrgReadOnly, None, Some(&o)).await;
    let state = app.snapshot().await;
    app.post(
        &queues,
        &app.admin,
        json!({ "name": "X", "kind": "chat", "product": "contact-centre" }),
    )
    .await
    .problem(422, "validation_failed");
    app.post(&queues, &app.admin, json!({ "name": "X", "kind": "call", "product": "nope" }))
        .await
        .problem(422, "validation_failed");
    app.post(
        &queues,
        &readonly,
        json!({ "name": "X", "kind": "call", "product": "contact-centre" }),
    )
    .await
    .problem(403, "forbidden");
    app.get(&format!("{queues}/{}", ids[0]), &their_token)
        .await
        .problem(404, "not_found");
    app.post(&format!("{queues}/{}/members", ids[0]), &their_token, json!({ "user": agent }))
        .await
        .problem(404, "not_found");
    // A member must hold the licence the queue bills.
    app.post(&format!("{queues}/{}/members", ids[0]), &app.admin, json!({ "user": other }))
        .await
        .problem(422, "not_assigned");
    app.post(&format!("{queues}/{}/members", ids[0]), &app.admin, json!({ "user": "usr_nope" }))
        .await
        .problem(404, "not_found");
    assert_eq!(app.snapshot().await, state, "refused calls change nothing");
    for q in &ids[..2] {
        let r = app
            .post(&format!("{queues}/{q}/members"), &app.admin, json!({ "user": agent }))
            .await
            .ok();
        assert_eq!(r["members"], json!([agent]));
    }
    // Removing the phone licence: done, with a warning naming the queues.
    let r = app
        .post(&lic, &app.admin, json!({ "remove": [{ "product": "calling-standard" }] }))
        .await
        .ok();
    assert_eq!(r["items"].as_array().unwrap().len(), 1);
    let w = &r["warnings"][0];
    assert_eq!(
        (w["code"].as_str(), w["product"].as_str()),
        (Some("still_billed"), Some("contact-centre")),
        "{r}"
    );
    let names: Vec<&str> = w["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Callbacks", "Support"]);
    // Removing the billed licence itself: refused on every path, naming the queues.
    let r = app
        .post(&lic, &app.admin, json!({ "remove": [{ "product": "contact-centre" }] }))
        .await;
    r.problem(422, "requires_product");
    assert!(r.body["detail"].as_str().unwrap().contains("Callbacks, Support"), "{}", r.body);
    let id = start_job(&app, &o, json!({ "users": [agent], "remove": [{ "product": "contact-centre" }] })).await;
    let j = finished_job(&app, &id).await;
    assert_eq!(j["progress"]["failed"], 1, "{j}");
    assert_eq!(job_results(&app, j["id"].as_str().unwrap()).await[0]["code"], "requires_product");
    let (_, rows) = import_done(
        &app,
        &o,
        "mode=add_and_remove",
        format!("email,contact-centre [{sub}]\nagent@support.example,FALSE\n"),
    )
    .await;
    assert_eq!(rows[0]["code"], "requires_product", "{rows:?}");
    // One call: out of every queue, and off the licence they kept billed.
    let mine = app.get(&format!("/api/v1/orgs/{o}/users/{agent}/queues"), &readonly).await.ok();
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/orgs/{o}/users/{agent}/queues?remove_licenses=true"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let left: Vec<&str> = r.body["left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["Callbacks", "Support"]);
    assert_eq!(r.body["removed_licenses"][0]["product"], "contact-centre");
    let l = app.get(&lic, &app.admin).await.ok();
    assert_eq!(l["items"], json!([]));
    let s: Value = app.get(&format!("/api/v1/orgs/{o}/subscriptions/{sub}"), &app.admin).await.ok();
    assert!(!s["items"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["items"].as_array().unwrap().iter().all(|i| i["consumed"] == 0), "{s}");
    let q = app.get(&format!("{queues}/{}", ids[0]), &app.admin).await.ok();
    assert_eq!(q["members"], json!([]));
    assert_eq!(crate::moves::audit_events(&app, &o, "queue.member_remove").await.len(), 2);
    // Deleting a queue.
    let r = app
        .call(reqwest::Method::DELETE, &format!("{queues}/{}", ids[2]), Some(&app.admin), None)
        .await;
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(app.get(&queues, &readonly).await.ok()["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.mismatches().await, 0);
}
