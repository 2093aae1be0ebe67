//! Licence templates: given to new users however created,
//! applied to existing users as a job (moves keep service data), checked.

use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;
use crate::moves::{assert_all_moved, calling_org, service_data_rows};
use crate::sheet::import_done;

both_backends!(
    template_move_keeps_service_data,
    new_users_get_the_template_that_fits,
    apply_without_retaining_removes_the_rest,
    templates_are_checked,
    group_templates_follow_the_api_s_membership,
    groups_are_read_renamed_and_deleted,
);

async fn template(app: &TestApp, org: &str, body: Value) -> String {
    let r = app.post(&format!("/api/v1/orgs/{org}/license-templates"), &app.admin, body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn apply(app: &TestApp, org: &str, tpl: &str, body: Value) -> Value {
    let r = app
        .post(&format!("/api/v1/orgs/{org}/license-templates/{tpl}/apply"), &app.admin, body)
        .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    assert_eq!(r.body["job"]["kind"], "template_apply");
    finished_job(app, r.body["job"]["id"].as_str().unwrap()).await
}

async fn template_move_keeps_service_data(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 50).await;
    let before = service_data_rows(&app, &c.org, "calling").await;
    let tpl = template(
        &app,
        &c.org,
        json!({ "name": "Calling on the new contract", "scope": "org", "licenses": [{ "product": "calling-professional", "subscription": c.b }] }),
    )
    .await;
    let state = license_state(&app).await;
    let dry = apply(
        &app,
        &c.org,
        &tpl,
        json!({ "existing_users": true, "retain_existing": true, "dry_run": true }),
    )
    .await;
    assert_eq!(
        (dry["state"].as_str(), dry["progress"]["succeeded"].as_i64()),
        (Some("succeeded"), Some(50)),
        "{dry}"
    );
    let results = job_results(&app, dry["id"].as_str().unwrap()).await;
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(|r| r["changes"].as_array().unwrap().len() == 2), "{results:?}");
    assert_eq!(license_state(&app).await, state, "a dry run changes nothing");
    let j = apply(&app, &c.org, &tpl, json!({ "existing_users": true, "retain_existing": true })).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_all_moved(&app, &c, &before).await;
    // Applied again: everyone already has it.
    let again = apply(&app, &c.org, &tpl, json!({})).await;
    let results = job_results(&app, again["id"].as_str().unwrap()).await;
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(|r| r["outcome"] == "skipped"), "{results:?}");
}

async fn new_users_get_the_template_that_fits(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let group = app
        .post(&format!("/api/v1/orgs/{}/groups", w.org), &app.admin, json!({ "name": "Phones" }))
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    template(
        &app,
        &w.org,
        json!({ "name": "Everyone", "scope": "org", "licenses": [{ "product": "meetings" }] }),
    )
    .await;
    template(
        &app,
        &w.org,
        json!({ "name": "Phones", "scope": { "group": group }, "licenses": [{ "product": "calling-professional", "subscription": w.sub }] }),
    )
    .await;
    template(
        &app,
        &w.org,
        json!({ "name": "Off", "scope": "org", "enabled": false, "licenses": [{ "product": "messaging" }] }),
    )
    .await;
    let held = |u: Value| {
        let app = &app;
        let org = w.org.clone();
        async move {
            let id = u["id"].as_str().unwrap().to_string();
            let l = app.get(&format!("/api/v1/orgs/{org}/users/{id}/licenses"), &app.admin).await.ok();
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["product"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // The group's template wins over the org's.
    let u = app
        .post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &app.admin,
            json!({ "email": "p@a.example", "groups": [group] }),
        )
        .await
        .ok();
    assert_eq!(u["license_template"]["applied"], true, "{u}");
    assert_eq!(held(u).await, vec!["calling-professional"]);
    let u = app
        .post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &app.admin,
            json!({ "email": "o@a.example" }),
        )
        .await
        .ok();
    assert_eq!(held(u).await, vec!["meetings"], "the org's, not the disabled one");
    // Through the CSV: a created user gets the org's template too.
    let (j, r) = import_done(&app, &w.org, "mode=add_only", "email,display_name\ncsv@a.example,From CSV\n").await;
    assert_eq!(j["state"], "succeeded", "{j} {r:?}");
    assert_eq!(r[0]["changes"][0]["product"], "meetings", "{r:?}");
    // No seat left: the user is created, and the answer says why it got nothing.
    app.patch(
        &format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub),
        &app.admin,
        json!({ "items": [{ "product": "meetings", "quantity": 2 }] }),
    )
    .await
    .ok();
    let u = app
        .post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &app.admin,
            json!({ "email": "late@a.example" }),
        )
        .await
        .ok();
    assert_eq!(u["license_template"]["applied"], false, "{u}");
    assert_eq!(u["license_template"]["errors"][0]["code"], "seats_exhausted", "{u}");
    assert_eq!(held(u).await, Vec::<String>::new());
    assert_eq!(app.mismatches().await, 0);
}

async fn apply_without_retaining_removes_the_rest(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let users = many_users(&app, &w.org, "r", "a.example", 3, None).await;
    for u in &users {
        app.post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "calling-professional" }] }),
        )
        .await
        .ok();
    }
    let tpl = template(
        &app,
        &w.org,
        json!({ "name": "Meetings only", "scope": "org", "licenses": [{ "product": "meetings" }] }),
    )
    .await;
    let j = apply(&app, &w.org, &tpl, json!({ "retain_existing": true })).await;
    assert_eq!(j["progress"]["succeeded"], 3, "{j}");
    let j = apply(&app, &w.org, &tpl, json!({ "retain_existing": false })).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    for u in &users {
        let l = app
            .get(&format!("/api/v1/orgs/{}/users/{u}/licenses", w.org), &app.admin)
            .await
            .ok();
        assert_eq!(l["items"].as_array().unwrap().len(), 1, "{l}");
        assert_eq!(l["items"][0]["product"], "meetings");
    }
    let events = crate::moves::audit_events(&app, &w.org, "template.apply").await;
    assert_eq!(events.len(), 2);
    assert_eq!(app.mismatches().await, 0);
}

async fn templates_are_checked(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let stranger = org(&app, "Stranger AB", None).await;
    let theirs = subscription(&app, &stranger, json!([{ "product": "meetings", "quantity": 5 }])).await;
    let their_tpl = template(
        &app,
        &stranger,
        json!({ "name": "T", "scope": "org", "licenses": [{ "product": "meetings" }] }),
    )
    .await;
    let org_admin = app.token(allot_domain::access::Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let readonly = app.token(allot_domain::access::Role::OrgReadOnly, None, Some(&w.org)).await;
    let state = app.snapshot().await;
    let path = format!("/api/v1/orgs/{}/license-templates", w.org);
    for (body, status, code) in [
        (
            json!({ "name": "x", "scope": "org", "licenses": [{ "product": "nope" }] }),
            422,
            "validation_failed",
        ),
        (json!({ "name": "x", "scope": "org", "licenses": [] }), 422, "validation_failed"),
        (
            json!({ "name": "", "scope": "org", "licenses": [{ "product": "meetings" }] }),
            422,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scope": "everyone", "licenses": [{ "product": "meetings" }] }),
            422,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scope": { "group": "grp_nope" }, "licenses": [{ "product": "meetings" }] }),
            404,
            "not_found",
        ),
        (
            json!({ "name": "x", "scope": "org", "licenses": [{ "product": "meetings", "subscription": theirs }] }),
            404,
            "not_found",
        ),
        (
            json!({ "name": "x", "scope": "org", "licenses": [{ "product": "calling-standard", "subscription": w.sub }] }),
            422,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scope": "org", "licenses": [{ "product": "meetings" }, { "product": "meetings" }] }),
            422,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scope": "org", "licenses": [{ "product": "meetings" }], "extra": 1 }),
            422,
            "validation_failed",
        ),
    ] {
        app.post(&path, &app.admin, body.clone()).await.problem(status, code);
    }
    app.post(
        &path,
        &readonly,
        json!({ "name": "x", "scope": "org", "licenses": [{ "product": "meetings" }] }),
    )
    .await
    .problem(403, "forbidden");
    let theirs_path = format!("/api/v1/orgs/{stranger}/license-templates/{their_tpl}");
    app.get(&theirs_path, &org_admin).await.problem(404, "not_found");
    app.post(&format!("{theirs_path}/apply"), &org_admin, json!({}))
        .await
        .problem(404, "not_found");
    app.get(&format!("{path}/{their_tpl}"), &app.admin).await.problem(404, "not_found");
    app.post(&format!("{path}/{their_tpl}/apply"), &app.admin, json!({}))
        .await
        .problem(404, "not_found");
    assert_eq!(app.snapshot().await, state, "refused calls change nothing");
    // Read, change, delete.
    let tpl = template(
        &app,
        &w.org,
        json!({ "name": "M", "scope": "org", "licenses": [{ "product": "meetings" }] }),
    )
    .await;
    let t = app
        .patch(&format!("{path}/{tpl}"), &org_admin, json!({ "enabled": false, "name": "M2" }))
        .await
        .ok();
    assert_eq!(
        (t["enabled"].as_bool(), t["name"].as_str(), t["scope"].as_str()),
        (Some(false), Some("M2"), Some("org"))
    );
    let list = app.get(&path, &readonly).await.ok();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    app.post(&format!("{path}/{tpl}/apply"), &app.admin, json!({ "existing_users": false }))
        .await
        .problem(422, "validation_failed");
    let r = app
        .call(reqwest::Method::DELETE, &format!("{path}/{tpl}"), Some(&org_admin), None)
        .await;
    assert_eq!(r.status.as_u16(), 204);
    app.get(&format!("{path}/{tpl}"), &app.admin).await.problem(404, "not_found");
    let actions: Vec<String> = ["template.create", "template.update", "template.delete"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    for a in actions {
        assert!(!crate::moves::audit_events(&app, &w.org, &a).await.is_empty(), "{a} is audited");
    }
}

/// The API's user `groups` drive group templates as SCIM's members do:
/// joining gives the template's licences, leaving takes back those it gave,
/// and a template that is deleted leaves what it gave in place.
async fn group_templates_follow_the_api_s_membership(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let group = app
        .post(&format!("/api/v1/orgs/{}/groups", w.org), &app.admin, json!({ "name": "Phones" }))
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tpl = template(
        &app,
        &w.org,
        json!({ "name": "Phones", "scope": { "group": group }, "licenses": [{ "product": "calling-professional" }, { "product": "meetings" }] }),
    )
    .await;
    let u = user(&app, &w.org, "gm@a.example").await;
    let user_path = format!("/api/v1/orgs/{}/users/{u}", w.org);
    // Meetings given directly first: joining leaves it, leaving keeps it.
    let r = app
        .post(
            &format!("{user_path}/licenses"),
            &app.admin,
            json!({ "add": [{ "product": "meetings" }] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let held = || async {
        let l = app.get(&format!("{user_path}/licenses"), &app.admin).await.ok();
        let mut p: Vec<String> = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["product"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    let r = app.patch(&user_path, &app.admin, json!({ "groups": [group] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held().await, vec!["calling-professional", "meetings"]);
    let r = app.patch(&user_path, &app.admin, json!({ "groups": [] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held().await, vec!["meetings"], "the directly given licence stays");
    // Joined again, then the template is deleted: leaving takes nothing back.
    let r = app.patch(&user_path, &app.admin, json!({ "groups": [group] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held().await, vec!["calling-professional", "meetings"]);
    let r = app
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/orgs/{}/license-templates/{tpl}", w.org),
            Some(&app.admin),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    let r = app.patch(&user_path, &app.admin, json!({ "groups": [] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(held().await, vec!["calling-professional", "meetings"]);

    // Created in two groups: both groups' templates, as joining them would.
    let second = app
        .post(&format!("/api/v1/orgs/{}/groups", w.org), &app.admin, json!({ "name": "Chat" }))
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let phones = template(
        &app,
        &w.org,
        json!({ "name": "Phones again", "scope": { "group": group }, "licenses": [{ "product": "calling-professional" }] }),
    )
    .await;
    template(
        &app,
        &w.org,
        json!({ "name": "Chat", "scope": { "group": second }, "licenses": [{ "product": "meetings" }] }),
    )
    .await;
    let both = app
        .post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &app.admin,
            json!({ "email": "both@a.example", "groups": [group, second] }),
        )
        .await
        .ok();
    let both_path = format!("/api/v1/orgs/{}/users/{}", w.org, both["id"].as_str().unwrap());
    let both_held = || async {
        let l = app.get(&format!("{both_path}/licenses"), &app.admin).await.ok();
        let mut p: Vec<String> = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["product"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    assert_eq!(both_held().await, vec!["calling-professional", "meetings"]);
    // Leaving one group takes back only its template's licence.
    let r = app.patch(&both_path, &app.admin, json!({ "groups": [group] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(both_held().await, vec!["calling-professional"]);
    let r = app
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/orgs/{}/license-templates/{phones}", w.org),
            Some(&app.admin),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    // Its template gone, the phone stays when it leaves the group too.
    let r = app.patch(&both_path, &app.admin, json!({ "groups": [] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(both_held().await, vec!["calling-professional"]);

    // Members from before a template existed get it by applying it (a
    // job); leaving the group then takes back what the job gave.
    let v = user(&app, &w.org, "gv@a.example").await;
    let v_path = format!("/api/v1/orgs/{}/users/{v}", w.org);
    let r = app.patch(&v_path, &app.admin, json!({ "groups": [group] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let tpl = template(
        &app,
        &w.org,
        json!({ "name": "Messaging", "scope": { "group": group }, "licenses": [{ "product": "messaging" }] }),
    )
    .await;
    let job = apply(&app, &w.org, &tpl, json!({})).await;
    assert_eq!(
        (job["state"].as_str(), job["progress"]["succeeded"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{job}"
    );
    let v_held = || async {
        let l = app.get(&format!("{v_path}/licenses"), &app.admin).await.ok();
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["product"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(v_held().await, vec!["messaging"]);
    let r = app.patch(&v_path, &app.admin, json!({ "groups": [] })).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(v_held().await, Vec::<String>::new());
    assert_eq!(app.mismatches().await, 0);
}

/// A group by id: read, renamed (a taken name is 409), deleted (its
/// members leave it) unless a template is scoped to it; another org's
/// group is 404 and unchanged.
async fn groups_are_read_renamed_and_deleted(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let groups = format!("/api/v1/orgs/{}/groups", w.org);
    let a = app.post(&groups, &app.admin, json!({ "name": "Sales" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = app.post(&groups, &app.admin, json!({ "name": "Support" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.get(&format!("{groups}/{a}"), &app.admin).await;
    assert_eq!((r.status.as_u16(), r.body["name"].as_str()), (200, Some("Sales")), "{}", r.body);
    let r = app.patch(&format!("{groups}/{a}"), &app.admin, json!({ "name": "Sales EU" })).await;
    assert_eq!((r.status.as_u16(), r.body["name"].as_str()), (200, Some("Sales EU")), "{}", r.body);
    let r = app.patch(&format!("{groups}/{a}"), &app.admin, json!({ "name": "Support" })).await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    let r = app.patch(&format!("{groups}/{a}"), &app.admin, json!({ "name": "" })).await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.body);
    // Another org's group: 404, unchanged.
    let other = org(&app, "Other AB", None).await;
    let theirs = app
        .post(&format!("/api/v1/orgs/{other}/groups"), &app.admin, json!({ "name": "Theirs" }))
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.get(&format!("{groups}/{theirs}"), &app.admin).await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    let r = app
        .patch(&format!("{groups}/{theirs}"), &app.admin, json!({ "name": "Mine" }))
        .await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    // A member; a template scoped to b keeps b.
    let u = user(&app, &w.org, "member@a.example").await;
    let r = app
        .patch(
            &format!("/api/v1/orgs/{}/users/{u}", w.org),
            &app.admin,
            json!({ "groups": [a, b] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    template(
        &app,
        &w.org,
        json!({ "name": "Support kit", "scope": { "group": b }, "licenses": [{ "product": "meetings" }] }),
    )
    .await;
    let delete = |id: String| {
        let (app, groups) = (&app, groups.clone());
        async move {
            app.send(reqwest::Method::DELETE, &format!("{groups}/{id}"), Some(&app.admin), &[], None)
                .await
        }
    };
    let r = delete(b.clone()).await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    let r = delete(a.clone()).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    assert_eq!(app.get(&format!("{groups}/{a}"), &app.admin).await.status.as_u16(), 404);
    let me = app.get(&format!("/api/v1/orgs/{}/users/{u}", w.org), &app.admin).await.ok();
    assert_eq!(me["groups"], json!([b]), "{me}");
    assert_eq!(delete(a).await.status.as_u16(), 404);
}
