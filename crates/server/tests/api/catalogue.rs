//! The catalogue as one document (`PUT /api/v1/catalogue`): checked as a
//! whole, so products may name each other in any order; applied at once or
//! not at all; a dry run says what would be created, changed and left alone.

use reqwest::Method;
use serde_json::{json, Value};

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;

both_backends!(
    a_catalogue_document_applies_as_a_whole,
    site_addresses_are_taken_as_admins_type_them
);

fn doc() -> Value {
    json!({ "products": [
        // Names products that come later in the document.
        { "code": "calling-professional", "name": "Calling Professional", "family": "calling",
          "features": ["calling", "voicemail"], "rules": { "exclusive_in_family": true, "requires": ["ucm-registration"] },
          "properties": { "location": "optional" } },
        { "code": "calling-standard", "name": "Calling Standard", "family": "calling",
          "features": ["calling"], "rules": { "exclusive_in_family": true } },
        { "code": "ucm-registration", "name": "UCM Registration", "family": "ucm" }
    ]})
}

async fn apply(app: &TestApp, token: &str, body: Value, dry_run: bool) -> Resp {
    let q = if dry_run { "?dry_run=true" } else { "" };
    app.call(Method::PUT, &format!("/api/v1/catalogue{q}"), Some(token), Some(body))
        .await
}

fn codes(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect()
}

async fn a_catalogue_document_applies_as_a_whole(backend: Backend) {
    let app = spawn(backend).await;
    // One product exists already and is not in the document: left alone.
    product(&app, "meetings", "meetings").await;
    let before = app.snapshot().await;
    let plan = apply(&app, &app.admin, doc(), true).await.ok();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        codes(&plan["created"]),
        ["calling-professional", "calling-standard", "ucm-registration"]
    );
    assert_eq!(codes(&plan["changed"]), Vec::<&str>::new());
    assert_eq!(codes(&plan["left_alone"]), ["meetings"]);
    assert_eq!(app.snapshot().await, before, "a dry run changes nothing");

    let done = apply(&app, &app.admin, doc(), false).await.ok();
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["created"], plan["created"]);
    let p = app.get("/api/v1/products/calling-professional", &app.admin).await.ok();
    assert_eq!(p["rules"]["requires"], json!(["ucm-registration"]));
    // Each product created is audited like one created alone.
    let listed = app.get("/api/v1/products", &app.admin).await.ok();
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);

    // The same document again changes nothing; one product edited is "changed".
    let again = apply(&app, &app.admin, doc(), false).await.ok();
    assert_eq!(codes(&again["created"]).len() + codes(&again["changed"]).len(), 0, "{again}");
    let mut edited = doc();
    edited["products"][1]["name"] = json!("Calling Standard 2");
    let plan = apply(&app, &app.admin, edited, true).await.ok();
    assert_eq!(codes(&plan["changed"]), ["calling-standard"]);
    assert_eq!(codes(&plan["left_alone"]), ["calling-professional", "meetings", "ucm-registration"]);

    // A document with any fault is refused as a whole, every fault named.
    let before = app.snapshot().await;
    let mut bad = doc();
    bad["products"][0]["rules"]["requires"] = json!(["no-such-product"]);
    bad["products"][1]["name"] = json!("   ");
    bad["products"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "code": "brand-new", "name": "Brand New", "family": "new" }));
    bad["products"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "code": "ucm-registration", "name": "Twice", "family": "ucm" }));
    let r = apply(&app, &app.admin, bad, false).await;
    r.problem(422, "validation_failed");
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"products[1].name"), "{}", r.body);
    assert!(fields.contains(&"products[4].code"), "the repeated code: {}", r.body);
    // The missing product is found once the document is whole.
    let mut bad = doc();
    bad["products"][0]["rules"]["requires"] = json!(["no-such-product"]);
    bad["products"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "code": "brand-new", "name": "Brand New", "family": "new" }));
    let r = apply(&app, &app.admin, bad, false).await;
    r.problem(422, "validation_failed");
    assert!(r.body["detail"].as_str().unwrap().contains("no-such-product"), "{}", r.body);
    assert_eq!(
        app.snapshot().await,
        before,
        "nothing of a refused document is applied (brand-new neither)"
    );
    // Only the provider writes the catalogue.
    let org = org(&app, "Customer", None).await;
    let admin = app.token(Role::OrgSuperAdmin, None, Some(&org)).await;
    apply(&app, &admin, doc(), true).await.problem(403, "forbidden");
}

async fn site_addresses_are_taken_as_admins_type_them(backend: Backend) {
    let app = spawn(backend).await;
    let org = org(&app, "Acme", None).await;
    let sites = format!("/api/v1/orgs/{org}/sites");
    for (typed, stored) in [
        ("acme.webex.example", "https://acme.webex.example"),
        ("  Acme.Webex.Example ", "https://acme.webex.example"),
        ("https://acme.example.com", "https://acme.example.com"),
        ("http://eu.acme.example:8443/meet", "http://eu.acme.example:8443/meet"),
    ] {
        let s = app.post(&sites, &app.admin, json!({ "url": typed })).await.ok();
        assert_eq!(s["url"], stored, "{typed}");
    }
    for bad in [
        "acme",
        "ftp://acme.example",
        "acme..example",
        "-acme.example",
        "acme.example:99999",
        "acme example.com",
        "",
    ] {
        let r = app.post(&sites, &app.admin, json!({ "url": bad })).await;
        r.problem(422, "validation_failed");
        assert_eq!(r.body["errors"][0]["field"], "url", "{bad}: {}", r.body);
    }
}
