//! SCIM 2.0 users: discovery, create / read / filter / replace / patch /
//! delete with the shapes Entra ID and Okta send, SCIM's errors, and
//! tenant isolation (a SCIM token is for its org's SCIM and nothing else).

use reqwest::Method;
use serde_json::{json, Value};

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;

both_backends!(
    discovery_describes_what_is_served,
    users_are_provisioned_with_entra_s_and_okta_s_shapes,
    filters_paging_and_projection,
    bad_requests_get_scim_errors_and_change_nothing,
    a_scim_token_is_for_its_org_s_scim_only,
    a_user_name_that_is_no_address_takes_the_email_from_emails,
    deactivation_releases_seats_and_reactivation_restores_them,
    groups_with_entra_s_and_okta_s_member_changes,
    a_full_provisioning_cycle_with_group_templates,
    an_org_may_keep_licenses_on_deactivation,
);

const SCIM: &str = "application/scim+json";

/// A SCIM request with a JSON body sent as `application/scim+json`.
async fn scim(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> Resp {
    match body {
        Some(b) => app.raw(method, path, token, SCIM, serde_json::to_vec(&b).unwrap()).await,
        None => app.send(method, path, Some(token), &[], None).await,
    }
}

struct Idp {
    base: String,
    token: String,
    org: String,
}

async fn idp(app: &TestApp) -> Idp {
    let w = world(app).await;
    let token = app.token(Role::Scim, None, Some(&w.org)).await;
    Idp {
        base: format!("/scim/v2/orgs/{}", w.org),
        token,
        org: w.org,
    }
}

fn entra_user(email: &str, external: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:allot:params:scim:schemas:extension:licensing:2.0:User"],
        "externalId": external,
        "userName": email,
        "active": true,
        "displayName": "Anna Berg",
        "emails": [{ "primary": true, "type": "work", "value": email }],
        "name": { "formatted": "Anna Berg", "familyName": "Berg", "givenName": "Anna" },
        "title": "Engineer",
        "urn:allot:params:scim:schemas:extension:licensing:2.0:User": { "usageLocation": "SE" }
    })
}

async fn discovery_describes_what_is_served(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let spc = scim(&app, Method::GET, &format!("{}/ServiceProviderConfig", i.base), &i.token, None).await;
    assert_eq!(spc.status.as_u16(), 200, "{}", spc.body);
    assert_eq!(spc.headers["content-type"], SCIM);
    assert_eq!(spc.body["patch"]["supported"], true);
    assert_eq!(spc.body["bulk"]["supported"], false);
    assert_eq!(spc.body["etag"]["supported"], true);
    assert_eq!(spc.body["filter"]["maxResults"], 200);
    let types = scim(&app, Method::GET, &format!("{}/ResourceTypes", i.base), &i.token, None)
        .await
        .ok();
    assert_eq!(types["Resources"][0]["endpoint"], "/Users");
    let schemas = scim(&app, Method::GET, &format!("{}/Schemas", i.base), &i.token, None).await.ok();
    let user = schemas["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "urn:ietf:params:scim:schemas:core:2.0:User")
        .expect("the User schema");
    let names: Vec<&str> = user["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["userName", "name", "displayName", "active", "emails"]);
    let one = scim(
        &app,
        Method::GET,
        &format!("{}/Schemas/urn:allot:params:scim:schemas:extension:licensing:2.0:User", i.base),
        &i.token,
        None,
    )
    .await
    .ok();
    assert_eq!(one["attributes"][0]["name"], "usageLocation");
    let missing = scim(&app, Method::GET, &format!("{}/Schemas/urn:nope", i.base), &i.token, None).await;
    assert_eq!(missing.status.as_u16(), 404);
    assert_eq!(missing.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(missing.body["status"], "404");
}

async fn users_are_provisioned_with_entra_s_and_okta_s_shapes(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let users = format!("{}/Users", i.base);

    // Entra ID creates a user (attributes Allot does not keep are ignored).
    let created = scim(&app, Method::POST, &users, &i.token, Some(entra_user("Anna@A.example", "E-1"))).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        created.body["meta"]["location"].as_str().unwrap()
    );
    assert!(created.headers["location"].to_str().unwrap().ends_with(&format!("{users}/{id}")));
    assert_eq!(
        created.headers["etag"].to_str().unwrap(),
        created.body["meta"]["version"].as_str().unwrap()
    );
    assert_eq!(created.body["userName"], "Anna@A.example");
    assert_eq!(created.body["externalId"], "E-1");
    assert_eq!(created.body["name"]["givenName"], "Anna");
    assert_eq!(created.body["active"], true);
    assert_eq!(
        created.body["urn:allot:params:scim:schemas:extension:licensing:2.0:User"]["usageLocation"],
        "SE"
    );
    assert!(created.body.get("title").is_none());
    // The same user on the JSON API, with the SCIM token as the actor of its audit event.
    let api = app.get(&format!("/api/v1/orgs/{}/users/{id}", i.org), &app.admin).await.ok();
    assert_eq!(
        (api["email"].as_str(), api["display_name"].as_str(), api["usage_location"].as_str()),
        (Some("Anna@A.example"), Some("Anna Berg"), Some("SE"))
    );
    let audit = app
        .get(&format!("/api/v1/orgs/{}/audit-events?action=user.create", i.org), &app.admin)
        .await
        .ok();
    assert!(audit["items"][0]["actor"].as_str().unwrap().starts_with("token:"), "{audit}");

    // Entra: the lookup it makes before creating, by userName and by its work email.
    let found = scim(
        &app,
        Method::GET,
        &format!("{users}?filter=userName+eq+%22anna%40a.example%22"),
        &i.token,
        None,
    )
    .await
    .ok();
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], json!(id));
    let found = scim(
        &app,
        Method::GET,
        &format!(
            "{users}?filter={}",
            urlencode(r#"emails[type eq "work"].value eq "anna@a.example""#)
        ),
        &i.token,
        None,
    )
    .await
    .ok();
    assert_eq!(found["totalResults"], 1);
    // An unknown value: 200 with an empty list, never 404.
    let none = scim(
        &app,
        Method::GET,
        &format!("{users}?filter={}", urlencode(r#"userName eq "nobody@a.example""#)),
        &i.token,
        None,
    )
    .await;
    assert_eq!(none.status.as_u16(), 200);
    assert_eq!(none.body["totalResults"], 0);
    assert_eq!(none.body["Resources"], json!([]));

    // Entra: capitalised op, "False" as text, replace without path with dotted and URN keys.
    let one = format!("{users}/{id}");
    let patched = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
            { "op": "Replace", "path": "active", "value": "False" },
            { "op": "Replace", "value": { "name.familyName": "Berg-Lund", "urn:allot:params:scim:schemas:extension:licensing:2.0:User:usageLocation": "NO" } },
            { "op": "Add", "path": "emails[type eq \"work\"].value", "value": "anna.berg@a.example" }
        ] })),
    )
    .await;
    assert_eq!(patched.status.as_u16(), 200, "{}", patched.body);
    assert_eq!(patched.body["active"], false);
    assert_eq!(patched.body["name"]["familyName"], "Berg-Lund");
    assert_eq!(patched.body["emails"][0]["value"], "anna.berg@a.example");
    let api = app.get(&format!("/api/v1/orgs/{}/users/{id}", i.org), &app.admin).await.ok();
    assert_eq!(
        (api["status"].as_str(), api["usage_location"].as_str()),
        (Some("inactive"), Some("NO"))
    );

    // Okta: PUT of the whole user (it comes back active; what it leaves out is cleared).
    let put = scim(
        &app,
        Method::PUT,
        &one,
        &i.token,
        Some(
            json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": id, "userName": "anna@a.example",
                     "name": { "givenName": "Anna", "familyName": "Berg" }, "active": true,
                     "emails": [{ "value": "anna@a.example", "primary": true, "type": "work" }] }),
        ),
    )
    .await;
    assert_eq!(put.status.as_u16(), 200, "{}", put.body);
    assert_eq!(put.body["active"], true);
    assert!(put.body.get("externalId").is_none(), "{}", put.body);
    // Okta: deactivation by PATCH replace active false, without a path.
    let off = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{ "op": "replace", "value": { "active": false } }] })),
    )
    .await
    .ok();
    assert_eq!(off["active"], false);

    // If-Match: the version read is honoured; a stale one refused.
    let version = off["meta"]["version"].as_str().unwrap().to_string();
    let stale = app
        .send(
            Method::PATCH,
            &one,
            Some(&i.token),
            &[("if-match", "W/\"stale\""), ("content-type", SCIM)],
            Some(json!({ "Operations": [{ "op": "replace", "path": "displayName", "value": "X" }] })),
        )
        .await;
    assert_eq!(stale.status.as_u16(), 412, "{}", stale.body);
    let fresh = app
        .send(
            Method::PATCH,
            &one,
            Some(&i.token),
            &[("if-match", &version)],
            Some(json!({ "Operations": [{ "op": "replace", "path": "displayName", "value": "Anna B." }] })),
        )
        .await;
    assert_eq!(fresh.status.as_u16(), 200, "{}", fresh.body);
    assert_ne!(fresh.body["meta"]["version"].as_str(), Some(version.as_str()));

    // Delete: 204, then 404 in SCIM's format.
    let gone = scim(&app, Method::DELETE, &one, &i.token, None).await;
    assert_eq!(gone.status.as_u16(), 204);
    let again = scim(&app, Method::GET, &one, &i.token, None).await;
    assert_eq!(again.status.as_u16(), 404);
    assert_eq!(again.body["status"], "404");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn filters_paging_and_projection(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let users = format!("{}/Users", i.base);
    for n in 0..7 {
        let mut u = entra_user(&format!("u{n}@a.example"), &format!("E-{n}"));
        u["active"] = json!(n % 2 == 0);
        assert_eq!(scim(&app, Method::POST, &users, &i.token, Some(u)).await.status.as_u16(), 201);
    }
    // A user made by the JSON API is served too, with its email as its one email.
    user(&app, &i.org, "api@a.example").await;
    let all = scim(&app, Method::GET, &users, &i.token, None).await.ok();
    assert_eq!(all["totalResults"], 8);
    let api_user = all["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userName"] == "api@a.example")
        .unwrap();
    assert_eq!(
        api_user["emails"],
        json!([{ "value": "api@a.example", "type": "work", "primary": true }])
    );

    // Paging: stable order, totalResults of the whole list.
    let page = |start: u32, count: u32| {
        let (app, token, users) = (&app, i.token.clone(), users.clone());
        async move {
            scim(app, Method::GET, &format!("{users}?startIndex={start}&count={count}"), &token, None)
                .await
                .ok()
        }
    };
    let (p1, p2, p3) = (page(1, 3).await, page(4, 3).await, page(7, 3).await);
    let ids = |p: &Value| -> Vec<String> {
        p["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        (p1["totalResults"].clone(), p1["startIndex"].clone(), p1["itemsPerPage"].clone()),
        (json!(8), json!(1), json!(3))
    );
    let mut seen: Vec<String> = [ids(&p1), ids(&p2), ids(&p3)].concat();
    assert_eq!(seen.len(), 8);
    let sorted = {
        let mut s = seen.clone();
        s.sort();
        s
    };
    assert_eq!(seen, sorted, "pages in a stable order");
    seen.dedup();
    assert_eq!(seen.len(), 8);
    let none = page(20, 5).await;
    assert_eq!((none["totalResults"].clone(), none["itemsPerPage"].clone()), (json!(8), json!(0)));

    // Filters of several kinds.
    let count = |f: &'static str| {
        let (app, token, users) = (&app, i.token.clone(), users.clone());
        async move {
            scim(app, Method::GET, &format!("{users}?filter={}", urlencode(f)), &token, None)
                .await
                .ok()["totalResults"]
                .clone()
        }
    };
    assert_eq!(count(r#"active eq true and userName sw "u""#).await, json!(4));
    assert_eq!(count(r#"not (active eq true) or externalId eq "E-0""#).await, json!(4));
    assert_eq!(count(r#"externalId eq "E-3""#).await, json!(1));
    assert_eq!(count(r#"externalId eq "e-3""#).await, json!(0), "externalId is case-exact");
    assert_eq!(count(r#"USERNAME EQ "U3@A.EXAMPLE""#).await, json!(1));
    assert_eq!(count(r#"name.givenName co "nn" and meta.created pr"#).await, json!(7));
    assert_eq!(count(r#"emails[type eq "work" and value ew "@a.example"]"#).await, json!(8));

    // Projection.
    let slim = scim(&app, Method::GET, &format!("{users}?attributes=userName&count=1"), &i.token, None)
        .await
        .ok();
    let keys: Vec<&String> = slim["Resources"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["id", "schemas", "userName"]);
    let without = scim(
        &app,
        Method::GET,
        &format!("{users}?excludedAttributes=emails,meta&count=1"),
        &i.token,
        None,
    )
    .await
    .ok();
    assert!(without["Resources"][0].get("emails").is_none() && without["Resources"][0].get("meta").is_none());
    assert!(without["Resources"][0].get("userName").is_some());

    // POST .search says the same as GET.
    let searched = scim(
        &app,
        Method::POST,
        &format!("{users}/.search"),
        &i.token,
        Some(json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "active eq false", "startIndex": 1, "count": 2 })),
    )
    .await
    .ok();
    assert_eq!(
        (searched["totalResults"].clone(), searched["itemsPerPage"].clone()),
        (json!(3), json!(2))
    );
}

async fn bad_requests_get_scim_errors_and_change_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let users = format!("{}/Users", i.base);
    let created = scim(&app, Method::POST, &users, &i.token, Some(entra_user("anna@a.example", "E-1"))).await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let before = app.snapshot().await;

    let check = |r: &Resp, status: u16, scim_type: Option<&str>| {
        assert_eq!(r.status.as_u16(), status, "{}", r.body);
        assert_eq!(r.headers["content-type"], SCIM);
        assert_eq!(r.body["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:Error"]));
        assert_eq!(r.body["status"], json!(status.to_string()));
        assert_eq!(r.body["scimType"].as_str(), scim_type, "{}", r.body);
        assert!(!r.body["detail"].as_str().unwrap_or("").is_empty());
    };
    // A duplicate userName, in another case.
    let dup = scim(&app, Method::POST, &users, &i.token, Some(entra_user("ANNA@a.example", "E-2"))).await;
    check(&dup, 409, Some("uniqueness"));
    // Filters that do not parse, and hostile ones.
    let r = scim(
        &app,
        Method::GET,
        &format!("{users}?filter={}", urlencode("userName eq")),
        &i.token,
        None,
    )
    .await;
    check(&r, 400, Some("invalidFilter"));
    let deep = format!("{}userName pr{}", "(".repeat(1_000), ")".repeat(1_000));
    let r = scim(&app, Method::GET, &format!("{users}?filter={}", urlencode(&deep)), &i.token, None).await;
    check(&r, 400, Some("invalidFilter"));
    let long = format!(r#"userName eq "{}""#, "x".repeat(1_000_000));
    let r = scim(
        &app,
        Method::POST,
        &format!("{users}/.search"),
        &i.token,
        Some(json!({ "filter": long })),
    )
    .await;
    assert!(matches!(r.status.as_u16(), 400 | 413), "{}", r.status);
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{}",
        r.body
    );
    // Bodies: not JSON, not an email, a wrong type, an unknown op, a read-only id.
    let r = app.raw(Method::POST, &users, &i.token, SCIM, b"{not json".to_vec()).await;
    check(&r, 400, Some("invalidSyntax"));
    let r = app.raw(Method::POST, &users, &i.token, "text/plain", b"{}".to_vec()).await;
    check(&r, 415, None);
    let r = scim(&app, Method::POST, &users, &i.token, Some(json!({ "userName": "not an email" }))).await;
    check(&r, 400, Some("invalidValue"));
    let r = scim(
        &app,
        Method::POST,
        &users,
        &i.token,
        Some(json!({ "userName": "b@a.example", "active": "maybe" })),
    )
    .await;
    check(&r, 400, Some("invalidValue"));
    let one = format!("{users}/{id}");
    let r = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "Operations": [{ "op": "move", "path": "active" }] })),
    )
    .await;
    check(&r, 400, Some("invalidSyntax"));
    let r = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "Operations": [{ "op": "replace", "path": "id", "value": "usr_x" }] })),
    )
    .await;
    check(&r, 400, Some("mutability"));
    let r = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "Operations": [{ "op": "remove" }] })),
    )
    .await;
    check(&r, 400, Some("noTarget"));
    // Atomic: the first operation would apply, the second is refused: nothing changes.
    let r = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "Operations": [{ "op": "replace", "path": "displayName", "value": "Changed" }, { "op": "replace", "path": "active", "value": 42 }] })),
    )
    .await;
    check(&r, 400, Some("invalidValue"));
    let r = scim(
        &app,
        Method::PUT,
        &one,
        &i.token,
        Some(json!({ "id": "usr_other", "userName": "anna@a.example" })),
    )
    .await;
    check(&r, 400, Some("mutability"));
    let r = scim(&app, Method::GET, &format!("{users}/usr_nobody"), &i.token, None).await;
    check(&r, 404, None);
    let r = scim(&app, Method::GET, &format!("{users}?count=lots"), &i.token, None).await;
    check(&r, 400, Some("invalidValue"));
    assert_eq!(app.snapshot().await, before, "a refused SCIM call changed something");
}

async fn a_scim_token_is_for_its_org_s_scim_only(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let other = org(&app, "Customer B", None).await;
    let theirs = app.token(Role::Scim, None, Some(&other)).await;
    let before = app.snapshot().await;
    // Another org's SCIM: 404, whether reading or writing.
    for (m, body) in [(Method::GET, None), (Method::POST, Some(entra_user("x@b.example", "X")))] {
        let r = scim(&app, m, &format!("/scim/v2/orgs/{other}/Users"), &i.token, body).await;
        assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    }
    let r = scim(
        &app,
        Method::GET,
        &format!("/scim/v2/orgs/{other}/ServiceProviderConfig"),
        &i.token,
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 404);
    // The JSON API: 403 with a sentence that says why.
    let r = app.get(&format!("/api/v1/orgs/{}/users", i.org), &i.token).await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("SCIM"), "{}", r.body);
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/users", i.org),
            &i.token,
            json!({ "email": "y@a.example" }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403);
    // An admin token is not a SCIM token; no token, or a wrong one, is 401.
    let r = scim(&app, Method::GET, &format!("{}/Users", i.base), &app.admin, None).await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    let r = app.send(Method::GET, &format!("{}/Users", i.base), None, &[], None).await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(r.body["status"], "401");
    let r = scim(&app, Method::GET, &format!("{}/Users", i.base), "not-a-token", None).await;
    assert_eq!(r.status.as_u16(), 401);
    // The other org's token works on its own org only.
    let r = scim(&app, Method::GET, &format!("/scim/v2/orgs/{other}/Users"), &theirs, None).await;
    assert_eq!(r.status.as_u16(), 200);
    let r = scim(&app, Method::GET, &format!("{}/Users", i.base), &theirs, None).await;
    assert_eq!(r.status.as_u16(), 404);
    // An unknown SCIM path answers in SCIM's format.
    let r = scim(&app, Method::GET, &format!("{}/Nothing", i.base), &i.token, None).await;
    assert_eq!((r.status.as_u16(), r.body["status"].as_str()), (404, Some("404")));
    assert_eq!(app.snapshot().await, before);
    // Only the org's own token's failures are on its record: the other
    // org's token probing this org's URL left nothing on either.
    let errors = |org: String| {
        let app = &app;
        async move {
            let s = app.get(&format!("/api/v1/orgs/{org}/identity-provisioning"), &app.admin).await.ok();
            s["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["request"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let r = scim(&app, Method::GET, &format!("{}/Users/usr_nobody", i.base), &i.token, None).await;
    assert_eq!(r.status.as_u16(), 404);
    assert_eq!(errors(other.clone()).await, Vec::<String>::new());
    assert_eq!(errors(i.org.clone()).await, vec!["GET /Users/usr_nobody".to_string()]);
}

/// Entra ID sends the user principal name as `userName`; when it is no
/// address, the user's email comes from `emails` and the userName is kept
/// as sent (unique without regard to case, looked up by it).
async fn a_user_name_that_is_no_address_takes_the_email_from_emails(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let users = format!("{}/Users", i.base);
    let mut body = entra_user("x", "E-9");
    body["userName"] = json!("anna.berg");
    body["emails"] = json!([{ "value": "home@a.example", "type": "home" }, { "value": "anna@a.example", "type": "work", "primary": true }]);
    let created = scim(&app, Method::POST, &users, &i.token, Some(body.clone())).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["userName"], "anna.berg", "{}", created.body);
    let api = app.get(&format!("/api/v1/orgs/{}/users/{id}", i.org), &app.admin).await.ok();
    assert_eq!(api["email"], "anna@a.example");
    let found = scim(
        &app,
        Method::GET,
        &format!("{users}?filter={}", urlencode(r#"userName eq "ANNA.BERG""#)),
        &i.token,
        None,
    )
    .await
    .ok();
    assert_eq!(
        (found["totalResults"].clone(), found["Resources"][0]["id"].clone()),
        (json!(1), json!(id))
    );
    // The email is not a userName of its own here: nobody is found by it as userName.
    let by_email = scim(
        &app,
        Method::GET,
        &format!("{users}?filter={}", urlencode(r#"userName eq "anna@a.example""#)),
        &i.token,
        None,
    )
    .await
    .ok();
    assert_eq!(by_email["totalResults"], 0);
    // The same userName in another case, or a userName that is another user's email: taken.
    body["userName"] = json!("Anna.Berg");
    body["emails"] = json!([{ "value": "other@a.example", "primary": true }]);
    let dup = scim(&app, Method::POST, &users, &i.token, Some(body.clone())).await;
    assert_eq!(
        (dup.status.as_u16(), dup.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        dup.body
    );
    user(&app, &i.org, "api@a.example").await;
    body["userName"] = json!("API@a.example");
    let dup = scim(&app, Method::POST, &users, &i.token, Some(body.clone())).await;
    assert_eq!(
        (dup.status.as_u16(), dup.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        dup.body
    );
    // No address anywhere: refused naming userName.
    let r = scim(&app, Method::POST, &users, &i.token, Some(json!({ "userName": "nobody" }))).await;
    assert_eq!(
        (r.status.as_u16(), r.body["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{}",
        r.body
    );
    assert!(r.body["detail"].as_str().unwrap().contains("userName"), "{}", r.body);
    // Renamed to an address: that address becomes the email, and the userName is no longer kept apart.
    let renamed = scim(
        &app,
        Method::PATCH,
        &format!("{users}/{id}"),
        &i.token,
        Some(json!({ "Operations": [{ "op": "replace", "path": "userName", "value": "anna.b@a.example" }] })),
    )
    .await
    .ok();
    assert_eq!(renamed["userName"], "anna.b@a.example");
    let api = app.get(&format!("/api/v1/orgs/{}/users/{id}", i.org), &app.admin).await.ok();
    assert_eq!(api["email"], "anna.b@a.example");
}

/// A user made by SCIM gets the org's template; deactivated, its seats
/// are released (its service data kept for the product's retention);
/// reactivated within retention, the template gives them back with the
/// service data.
async fn deactivation_releases_seats_and_reactivation_restores_them(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let users = format!("{}/Users", i.base);
    let r = app
        .patch("/api/v1/products/calling-professional", &app.admin, json!({ "retention_days": 30 }))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let t = app
        .post(
            &format!("/api/v1/orgs/{}/license-templates", i.org),
            &app.admin,
            json!({ "name": "Everyone", "scope": "org", "enabled": true, "licenses": [{ "product": "calling-professional" }, { "product": "meetings" }] }),
        )
        .await;
    assert_eq!(t.status.as_u16(), 201, "{}", t.body);
    let consumed = |product: &'static str| {
        let (app, org) = (&app, i.org.clone());
        async move {
            let rows = app.get(&format!("/api/v1/orgs/{org}/licenses"), &app.admin).await.ok();
            rows["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["product"] == product)
                .map(|r| r["consumed"].as_i64().unwrap())
                .sum::<i64>()
        }
    };
    let created = scim(&app, Method::POST, &users, &i.token, Some(entra_user("pat@a.example", "P-1"))).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let licenses = format!("/api/v1/orgs/{}/users/{id}/licenses", i.org);
    let held = |v: &Value| -> Vec<String> {
        let mut p: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["product"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    assert_eq!(
        held(&app.get(&licenses, &app.admin).await.ok()),
        vec!["calling-professional", "meetings"]
    );
    // Service data: the extension of its phone licence.
    let r = app
        .post(
            &licenses,
            &app.admin,
            json!({ "remove": [{ "product": "calling-professional" }], "add": [{ "product": "calling-professional", "properties": { "extension": "4711" } }] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let (cp, m) = (consumed("calling-professional").await, consumed("meetings").await);

    // Deactivated (Okta's PATCH): seats released, the user kept.
    let off = scim(
        &app,
        Method::PATCH,
        &format!("{users}/{id}"),
        &i.token,
        Some(json!({ "Operations": [{ "op": "replace", "value": { "active": false } }] })),
    )
    .await;
    assert_eq!(off.status.as_u16(), 200, "{}", off.body);
    assert_eq!(held(&app.get(&licenses, &app.admin).await.ok()), Vec::<String>::new());
    assert_eq!(
        (consumed("calling-professional").await, consumed("meetings").await),
        (cp - 1, m - 1)
    );
    assert_eq!(app.mismatches().await, 0);

    // Reactivated within retention: the template again, the extension back.
    let on = scim(
        &app,
        Method::PATCH,
        &format!("{users}/{id}"),
        &i.token,
        Some(json!({ "Operations": [{ "op": "Replace", "path": "active", "value": "True" }] })),
    )
    .await;
    assert_eq!(on.status.as_u16(), 200, "{}", on.body);
    let back = app.get(&licenses, &app.admin).await.ok();
    assert_eq!(held(&back), vec!["calling-professional", "meetings"]);
    let phone = back["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["product"] == "calling-professional")
        .unwrap();
    assert_eq!(phone["properties"]["extension"], "4711", "{back}");
    assert_eq!((consumed("calling-professional").await, consumed("meetings").await), (cp, m));
    assert_eq!(app.mismatches().await, 0);
}

/// Groups: created with members, renamed with the read-only id (Okta),
/// members added and removed by Entra's and Okta's shapes, filtered and
/// paged; another org's user, a taken name and a group a template is
/// scoped to are refused.
async fn groups_with_entra_s_and_okta_s_member_changes(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let users = format!("{}/Users", i.base);
    let groups = format!("{}/Groups", i.base);
    let mut ids = Vec::new();
    for n in 0..3 {
        let u = scim(
            &app,
            Method::POST,
            &users,
            &i.token,
            Some(entra_user(&format!("m{n}@a.example"), &format!("M-{n}"))),
        )
        .await;
        ids.push(u.body["id"].as_str().unwrap().to_string());
    }
    let created = scim(
        &app,
        Method::POST,
        &groups,
        &i.token,
        Some(
            json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Sales", "externalId": "g-1",
                     "members": [{ "value": ids[0], "$ref": null }, { "value": ids[1] }] }),
        ),
    )
    .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let gid = created.body["id"].as_str().unwrap().to_string();
    let members = |v: &Value| -> Vec<String> {
        let mut m: Vec<String> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap().to_string())
            .collect();
        m.sort();
        m
    };
    let mut want = vec![ids[0].clone(), ids[1].clone()];
    want.sort();
    assert_eq!(members(&created.body), want);
    // The same group on the JSON API: the users' groups.
    let api = app.get(&format!("/api/v1/orgs/{}/users/{}", i.org, ids[0]), &app.admin).await.ok();
    assert_eq!(api["groups"], json!([gid]));

    // Entra: Add with a list, Remove with path "members" and the values.
    let one = format!("{groups}/{gid}");
    let p = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(
            json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
            { "op": "Add", "path": "members", "value": [{ "value": ids[2] }] },
            { "op": "Remove", "path": "members", "value": [{ "value": ids[0] }] }
        ] }),
        ),
    )
    .await;
    assert_eq!(p.status.as_u16(), 200, "{}", p.body);
    let mut want = vec![ids[1].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(members(&p.body), want);
    // Okta: a rename carrying the read-only id; a filtered removal mixed with an add.
    let p = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "Operations": [
            { "op": "replace", "value": { "id": gid, "displayName": "Sales EU" } },
            { "op": "remove", "path": format!("members[value eq \"{}\"]", ids[1]) },
            { "op": "add", "path": "members", "value": [{ "value": ids[0] }] }
        ] })),
    )
    .await;
    assert_eq!(p.status.as_u16(), 200, "{}", p.body);
    assert_eq!(p.body["displayName"], "Sales EU");
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(members(&p.body), want);
    let found = scim(
        &app,
        Method::GET,
        &format!("{groups}?filter={}", urlencode(r#"displayName eq "sales eu""#)),
        &i.token,
        None,
    )
    .await
    .ok();
    assert_eq!(
        (found["totalResults"].clone(), found["Resources"][0]["id"].clone()),
        (json!(1), json!(gid))
    );

    // Refused, changing nothing: another org's user, a taken name.
    let other = org(&app, "Customer B", None).await;
    let stranger = user(&app, &other, "s@b.example").await;
    let before_other = app.snapshot().await;
    let r = scim(
        &app,
        Method::PATCH,
        &one,
        &i.token,
        Some(json!({ "Operations": [{ "op": "add", "path": "members", "value": [{ "value": stranger }] }] })),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["scimType"].as_str()),
        (400, Some("invalidValue")),
        "{}",
        r.body
    );
    assert!(r.body["detail"].as_str().unwrap().contains("members"), "{}", r.body);
    let r = scim(&app, Method::POST, &groups, &i.token, Some(json!({ "displayName": "Sales EU" }))).await;
    assert_eq!(
        (r.status.as_u16(), r.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        r.body
    );
    assert_eq!(app.snapshot().await, before_other);

    // A group a template is scoped to stays; without one, it goes.
    let t = app
        .post(
            &format!("/api/v1/orgs/{}/license-templates", i.org),
            &app.admin,
            json!({ "name": "Sales", "scope": { "group": gid }, "enabled": true, "licenses": [{ "product": "meetings" }] }),
        )
        .await;
    assert_eq!(t.status.as_u16(), 201, "{}", t.body);
    let r = scim(&app, Method::DELETE, &one, &i.token, None).await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    let tpl = t.body["id"].as_str().unwrap();
    app.call(
        Method::DELETE,
        &format!("/api/v1/orgs/{}/license-templates/{tpl}", i.org),
        Some(&app.admin),
        None,
    )
    .await;
    let r = scim(&app, Method::DELETE, &one, &i.token, None).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    let api = app.get(&format!("/api/v1/orgs/{}/users/{}", i.org, ids[0]), &app.admin).await.ok();
    assert_eq!(api["groups"], json!([]));
}

/// The products a user holds, sorted.
async fn held_by(app: &TestApp, org: &str, user: &str) -> Vec<String> {
    let v = app.get(&format!("/api/v1/orgs/{org}/users/{user}/licenses"), &app.admin).await.ok();
    let mut p: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["product"].as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

/// Seats taken of a product in the org, over its subscriptions.
async fn consumed(app: &TestApp, org: &str, product: &str) -> i64 {
    let rows = app.get(&format!("/api/v1/orgs/{org}/licenses"), &app.admin).await.ok();
    rows["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["product"] == product)
        .map(|r| r["consumed"].as_i64().unwrap())
        .sum()
}

async fn template(app: &TestApp, org: &str, name: &str, scope: Value, products: &[&str]) -> String {
    let licenses: Vec<Value> = products.iter().map(|p| json!({ "product": p })).collect();
    let t = app
        .post(
            &format!("/api/v1/orgs/{org}/license-templates"),
            &app.admin,
            json!({ "name": name, "scope": scope, "enabled": true, "licenses": licenses }),
        )
        .await;
    assert_eq!(t.status.as_u16(), 201, "{}", t.body);
    t.body["id"].as_str().unwrap().to_string()
}

fn members(op: &str, ids: &[&str]) -> Value {
    let value: Vec<Value> = ids.iter().map(|i| json!({ "value": i, "$ref": null })).collect();
    json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{ "op": op, "path": "members", "value": value }] })
}

/// The cycle an identity provider drives: create, update, join a group
/// with a template (its licences given), leave it (taken back, but not a
/// licence another group's template or an admin gave), deactivate (seats
/// released), reactivate within retention (service data restored), delete.
/// A licence the planner refuses never blocks the membership: it is
/// recorded on the org's identity provisioning status and audited.
async fn a_full_provisioning_cycle_with_group_templates(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let org = i.org.clone();
    let (users, groups) = (format!("{}/Users", i.base), format!("{}/Groups", i.base));
    let r = app
        .patch("/api/v1/products/calling-professional", &app.admin, json!({ "retention_days": 30 }))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let group = |name: &'static str| {
        let (app, groups, token) = (&app, groups.clone(), i.token.clone());
        async move {
            let g = scim(
                app,
                Method::POST,
                &groups,
                &token,
                Some(json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name })),
            )
            .await;
            assert_eq!(g.status.as_u16(), 201, "{}", g.body);
            g.body["id"].as_str().unwrap().to_string()
        }
    };
    let (sales, support) = (group("Sales").await, group("Support").await);
    template(&app, &org, "Everyone", json!("org"), &["meetings"]).await;
    template(
        &app,
        &org,
        "Sales kit",
        json!({ "group": sales }),
        &["calling-professional", "messaging"],
    )
    .await;
    template(&app, &org, "Support kit", json!({ "group": support }), &["calling-professional"]).await;

    // Created: the org's template (no group yet); updated by Okta's PUT.
    let created = scim(&app, Method::POST, &users, &i.token, Some(entra_user("cy@a.example", "C-1"))).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let u1 = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(held_by(&app, &org, &u1).await, vec!["meetings"]);
    let mut put = entra_user("cy@a.example", "C-1");
    put["displayName"] = json!("Cy Berg");
    put["id"] = json!(u1);
    let r = scim(&app, Method::PUT, &format!("{users}/{u1}"), &i.token, Some(put)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(r.body["displayName"], "Cy Berg");

    // A second user who holds a phone licence an admin gave directly.
    let other = scim(&app, Method::POST, &users, &i.token, Some(entra_user("di@a.example", "D-1"))).await;
    let u2 = other.body["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            &format!("/api/v1/orgs/{org}/users/{u2}/licenses"),
            &app.admin,
            json!({ "add": [{ "product": "calling-professional" }] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let phones = consumed(&app, &org, "calling-professional").await;

    // Both join Sales (Entra's shape): u1 gets the kit; messaging has one
    // seat, so u2's is refused, and u2 is a member all the same.
    let r = scim(
        &app,
        Method::PATCH,
        &format!("{groups}/{sales}"),
        &i.token,
        Some(members("Add", &[&u1, &u2])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2, "{}", r.body);
    assert_eq!(
        held_by(&app, &org, &u1).await,
        vec!["calling-professional", "meetings", "messaging"]
    );
    assert_eq!(held_by(&app, &org, &u2).await, vec!["calling-professional", "meetings"]);
    assert_eq!(consumed(&app, &org, "calling-professional").await, phones + 1);
    let status = app.get(&format!("/api/v1/orgs/{org}/identity-provisioning"), &app.admin).await.ok();
    let errors = status["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{status}");
    assert_eq!(errors[0]["request"], format!("PATCH /Groups/{sales}"));
    let detail = errors[0]["detail"].as_str().unwrap();
    assert!(detail.contains("Sales kit") && detail.contains("di@a.example"), "{detail}");
    assert_eq!(status["base_path"], format!("/scim/v2/orgs/{org}"));
    assert!(status["last_sync_at"].is_string(), "{status}");
    assert_eq!(status["tokens"].as_array().unwrap().len(), 1, "{status}");
    let audit = app
        .get(&format!("/api/v1/orgs/{org}/audit-events?action=template.refused"), &app.admin)
        .await
        .ok();
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");

    // u1's phone gets an extension (service data), then u1 joins Support too.
    let r = app
        .post(
            &format!("/api/v1/orgs/{org}/users/{u1}/licenses"),
            &app.admin,
            json!({ "remove": [{ "product": "calling-professional" }], "add": [{ "product": "calling-professional", "properties": { "extension": "4711" } }] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let r = scim(
        &app,
        Method::PATCH,
        &format!("{groups}/{support}"),
        &i.token,
        Some(members("add", &[&u1])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);

    // Okta removes u1 from Sales: messaging is taken back; the phone stays
    // (Support's template gives it too), so does meetings (the org's).
    let okta_remove = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "remove", "path": format!("members[value eq \"{u1}\"]") }] });
    let r = scim(&app, Method::PATCH, &format!("{groups}/{sales}"), &i.token, Some(okta_remove)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held_by(&app, &org, &u1).await, vec!["calling-professional", "meetings"]);
    assert_eq!(consumed(&app, &org, "messaging").await, 0);
    // u2 leaves Sales: its phone was the admin's, not the template's.
    let r = scim(
        &app,
        Method::PATCH,
        &format!("{groups}/{sales}"),
        &i.token,
        Some(members("Remove", &[&u2])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held_by(&app, &org, &u2).await, vec!["calling-professional", "meetings"]);
    // u1 leaves Support: now nothing gives the phone, which goes.
    let r = scim(
        &app,
        Method::PATCH,
        &format!("{groups}/{support}"),
        &i.token,
        Some(members("remove", &[&u1])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held_by(&app, &org, &u1).await, vec!["meetings"]);
    assert_eq!(consumed(&app, &org, "calling-professional").await, phones);
    // Back into Sales within retention: the phone with its extension.
    let r = scim(
        &app,
        Method::PATCH,
        &format!("{groups}/{sales}"),
        &i.token,
        Some(members("add", &[&u1])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(
        held_by(&app, &org, &u1).await,
        vec!["calling-professional", "meetings", "messaging"]
    );
    let lic = app.get(&format!("/api/v1/orgs/{org}/users/{u1}/licenses"), &app.admin).await.ok();
    let phone = lic["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["product"] == "calling-professional")
        .unwrap();
    assert_eq!(phone["properties"]["extension"], "4711", "{lic}");

    // Deactivated: every seat released, the user kept.
    let off = json!({ "Operations": [{ "op": "replace", "value": { "active": false } }] });
    let r = scim(&app, Method::PATCH, &format!("{users}/{u1}"), &i.token, Some(off)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held_by(&app, &org, &u1).await, Vec::<String>::new());
    assert_eq!(consumed(&app, &org, "messaging").await, 0);
    // Reactivated (Entra's string): its group's template (which wins over
    // the org's), the extension restored.
    let on = json!({ "Operations": [{ "op": "Replace", "path": "active", "value": "True" }] });
    let r = scim(&app, Method::PATCH, &format!("{users}/{u1}"), &i.token, Some(on)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held_by(&app, &org, &u1).await, vec!["calling-professional", "messaging"]);
    let lic = app.get(&format!("/api/v1/orgs/{org}/users/{u1}/licenses"), &app.admin).await.ok();
    let phone = lic["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["product"] == "calling-professional")
        .unwrap();
    assert_eq!(phone["properties"]["extension"], "4711", "{lic}");
    // Changing the user by SCIM left its memberships alone.
    let g = scim(&app, Method::GET, &format!("{groups}/{sales}"), &i.token, None).await;
    assert_eq!(g.body["members"][0]["value"], u1.as_str(), "{}", g.body);
    // Leaving the group now takes the kit back again (it was given again).
    let r = scim(
        &app,
        Method::PATCH,
        &format!("{groups}/{sales}"),
        &i.token,
        Some(members("remove", &[&u1])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held_by(&app, &org, &u1).await, Vec::<String>::new());

    // Deleted: gone, its seats free.
    let r = scim(
        &app,
        Method::PATCH,
        &format!("{groups}/{sales}"),
        &i.token,
        Some(members("add", &[&u1])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let r = scim(&app, Method::DELETE, &format!("{users}/{u1}"), &i.token, None).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    assert_eq!(
        scim(&app, Method::GET, &format!("{users}/{u1}"), &i.token, None)
            .await
            .status
            .as_u16(),
        404
    );
    assert_eq!(consumed(&app, &org, "messaging").await, 0);
    assert_eq!(consumed(&app, &org, "calling-professional").await, phones);
    assert_eq!(app.mismatches().await, 0);

    // A failed request by the org's token is on the status too; another
    // token's request (an admin's on the JSON API) is not.
    let r = scim(
        &app,
        Method::GET,
        &format!("{users}?filter=userName%20zz%20%22x%22"),
        &i.token,
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    let status = app.get(&format!("/api/v1/orgs/{org}/identity-provisioning"), &app.admin).await.ok();
    let newest = &status["errors"][0];
    assert_eq!(newest["status"], 400, "{status}");
    assert_eq!(newest["scim_type"], "invalidFilter", "{status}");
    assert!(newest["request"].as_str().unwrap().starts_with("GET /Users"), "{status}");
    // The SCIM token itself may not read it (SCIM only).
    let r = app.get(&format!("/api/v1/orgs/{org}/identity-provisioning"), &i.token).await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
}

/// With the org's setting, a deactivated user keeps its licences, and a
/// reactivation gives nothing twice.
async fn an_org_may_keep_licenses_on_deactivation(backend: Backend) {
    let app = spawn(backend).await;
    let i = idp(&app).await;
    let org = i.org.clone();
    let users = format!("{}/Users", i.base);
    template(&app, &org, "Everyone", json!("org"), &["meetings"]).await;
    let r = app
        .patch(
            &format!("/api/v1/orgs/{org}"),
            &app.admin,
            json!({ "keep_licenses_on_deactivation": true }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(r.body["keep_licenses_on_deactivation"], true);
    let created = scim(&app, Method::POST, &users, &i.token, Some(entra_user("kim@a.example", "K-1"))).await;
    let u = created.body["id"].as_str().unwrap().to_string();
    let seats = consumed(&app, &org, "meetings").await;
    let off = json!({ "Operations": [{ "op": "replace", "path": "active", "value": false }] });
    let r = scim(&app, Method::PATCH, &format!("{users}/{u}"), &i.token, Some(off)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_eq!(held_by(&app, &org, &u).await, vec!["meetings"]);
    assert_eq!(consumed(&app, &org, "meetings").await, seats);
    let on = json!({ "Operations": [{ "op": "replace", "path": "active", "value": true }] });
    let r = scim(&app, Method::PATCH, &format!("{users}/{u}"), &i.token, Some(on)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held_by(&app, &org, &u).await, vec!["meetings"]);
    assert_eq!(consumed(&app, &org, "meetings").await, seats);
    let status = app.get(&format!("/api/v1/orgs/{org}/identity-provisioning"), &app.admin).await.ok();
    assert_eq!(status["keep_licenses_on_deactivation"], true);
    assert_eq!(status["errors"].as_array().map(Vec::len), Some(0), "{status}");
    assert_eq!(app.mismatches().await, 0);
}
