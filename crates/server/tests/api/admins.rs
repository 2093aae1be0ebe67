//! Admin accounts: invitations within the inviter's scope (never a role
//! above their own), the invitation link (sets the password, works once,
//! expires after 7 days), changing a role, removing an account (its
//! sessions end at once), over `/api/v1/admins` and the **Admins** pages.

use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::json;

use allot_domain::access::Role;
use allot_server::app::admins::INVITATION_NOT_VALID;

use crate::both_backends;
use crate::kit::*;
use crate::ui_kit::*;

both_backends!(
    invitations_keep_to_the_inviters_scope_and_role,
    an_invitation_link_works_once_and_expires,
    roles_change_within_reach_and_removed_admins_are_signed_out,
    the_admins_pages_invite_change_and_remove
);

async fn invitations_keep_to_the_inviters_scope_and_role(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let other_partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Partner B" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let their_org = org(&app, "Customer B", Some(&other_partner)).await;
    let partner_admin = app.token(Role::PartnerAdmin, Some(&w.partner), None).await;
    let super_admin = app.token(Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let org_admin = app.token(Role::OrgAdmin, None, Some(&w.org)).await;

    // The provider invites a partner admin; the answer carries the link once.
    let r = app
        .post(
            "/api/v1/admins",
            &app.admin,
            json!({ "email": "Pat@Partner.example", "display_name": "Pat", "role": "partner_admin", "partner": w.partner }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["email"], "Pat@Partner.example");
    assert_eq!(r.body["role"], "partner_admin");
    assert_eq!(r.body["partner"], w.partner.as_str());
    assert_eq!(r.body["invitation_pending"], true);
    assert_eq!(r.body["last_sign_in_at"], serde_json::Value::Null);
    let path = r.body["invitation"]["path"].as_str().expect("a path").to_string();
    assert!(path.starts_with("/ui/invitations/"), "{path}");
    assert_eq!(r.body["invitation"]["expires_at"], "2026-06-22T12:00:00.000000Z");
    let pat = r.body["id"].as_str().unwrap().to_string();
    let secret = path.trim_start_matches("/ui/invitations/");
    assert!(
        !app.snapshot().await.iter().any(|row| row.contains(secret)),
        "the link's secret is not stored"
    );
    // Read back: never the link again.
    let r = app.get(&format!("/api/v1/admins/{pat}"), &app.admin).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("invitation").is_none(), "{}", r.body);

    // A partner admin invites into its customers' orgs, not above its role,
    // not into another partner's org.
    let r = app
        .post(
            "/api/v1/admins",
            &partner_admin,
            json!({ "email": "olga@customer.example", "role": "org_super_admin", "org": w.org }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    let before = app.snapshot().await;
    let refusals = [
        (&partner_admin, json!({ "email": "x1@example.com", "role": "provider_admin" }), 403),
        (
            &partner_admin,
            json!({ "email": "x2@example.com", "role": "org_admin", "org": their_org }),
            404,
        ),
        (
            &partner_admin,
            json!({ "email": "x3@example.com", "role": "partner_admin", "partner": other_partner }),
            404,
        ),
        (
            &super_admin,
            json!({ "email": "x4@example.com", "role": "partner_admin", "partner": w.partner }),
            404,
        ),
        (
            &super_admin,
            json!({ "email": "x5@example.com", "role": "org_admin", "org": their_org }),
            404,
        ),
        (
            &org_admin,
            json!({ "email": "x6@example.com", "role": "org_read_only", "org": w.org }),
            403,
        ),
        (
            &super_admin,
            json!({ "email": "not an email", "role": "org_admin", "org": w.org }),
            422,
        ),
        (
            &super_admin,
            json!({ "email": "olga@CUSTOMER.example", "role": "org_admin", "org": w.org }),
            409,
        ),
        (
            &app.admin,
            json!({ "email": "x7@example.com", "role": "org_admin", "partner": w.partner }),
            422,
        ),
        (
            &super_admin,
            json!({ "email": "x8@example.com", "role": "org_admin", "org": w.org, "color": "red" }),
            422,
        ),
    ];
    for (token, body, status) in refusals {
        let r = app.post("/api/v1/admins", token, body.clone()).await;
        assert_eq!(r.status, status, "{body} -> {}", r.body);
    }
    let r = app
        .post(
            "/api/v1/admins",
            &super_admin,
            json!({ "email": "not an email", "role": "org_admin", "org": w.org }),
        )
        .await;
    assert_eq!(r.body["errors"][0]["field"], "email", "{}", r.body);
    let r = app
        .post(
            "/api/v1/admins",
            &partner_admin,
            json!({ "email": "x1@example.com", "role": "provider_admin" }),
        )
        .await;
    assert!(r.body["detail"].as_str().unwrap().contains("no role above one's own"), "{}", r.body);
    assert_eq!(app.snapshot().await, before, "refused invitations change nothing");

    // Lists keep to the scope: the org's super admin sees its org's only.
    let r = app.get("/api/v1/admins", &super_admin).await.ok();
    let emails: Vec<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec!["olga@customer.example"]);
    let r = app.get("/api/v1/admins", &partner_admin).await.ok();
    assert_eq!(r["items"].as_array().unwrap().len(), 2, "its own and its customer's: {r}");
    let r = app.get(&format!("/api/v1/admins?partner={}", w.partner), &partner_admin).await.ok();
    assert_eq!(r["items"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(app.get(&format!("/api/v1/admins/{pat}"), &super_admin).await.status, 404);
    assert_eq!(
        app.get(&format!("/api/v1/admins?org={their_org}"), &partner_admin).await.status,
        404
    );
    assert_eq!(app.get("/api/v1/admins/adm_nonexistent", &partner_admin).await.status, 404);
}

/// Posts the accept form of an invitation link (with its CSRF cookie).
async fn accept(app: &TestApp, b: &reqwest::Client, path: &str, password: &str, repeat: &str) -> reqwest::Response {
    let r = b.get(format!("{}{path}", app.url)).send().await.expect("get");
    let (cookie, _) = set_cookie(r.headers(), "allot_login_csrf").unwrap_or_default();
    let html = r.text().await.expect("body");
    let csrf = if html.contains(r#"name="csrf""#) {
        csrf_field(&html)
    } else {
        String::new()
    };
    b.post(format!("{}{path}", app.url))
        .header("cookie", format!("allot_login_csrf={cookie}"))
        .form(&[("csrf", csrf.as_str()), ("password", password), ("repeat", repeat)])
        .send()
        .await
        .expect("post")
}

async fn an_invitation_link_works_once_and_expires(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let invite = |email: &'static str| {
        let app = &app;
        let org = w.org.clone();
        async move {
            let r = app
                .post(
                    "/api/v1/admins",
                    &app.admin,
                    json!({ "email": email, "role": "org_admin", "org": org }),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["invitation"]["path"].as_str().unwrap().to_string()
        }
    };
    let b = browser();
    let path = invite("ines@customer.example").await;

    let r = b.get(format!("{}{path}", app.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("body");
    for text in [
        "<h1>Accept invitation</h1>",
        "ines@customer.example",
        ">Password</label>",
        ">Repeat password</label>",
    ] {
        assert!(html.contains(text), "{text}: {html}");
    }

    // Refusals leave the link working: a short password, two that differ, no CSRF token.
    let before = app.snapshot().await;
    let r = accept(&app, &b, &path, "short", "short").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.expect("body");
    assert!(html.contains("at least 12 characters"), "{html}");
    let r = accept(&app, &b, &path, "a long enough password", "another long password").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("The two passwords differ"));
    let r = b
        .post(format!("{}{path}", app.url))
        .form(&[("csrf", "forged"), ("password", PASSWORD), ("repeat", PASSWORD)])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, before, "refusals change nothing");

    // Accepted: signed in at once, and the password signs in from now on.
    let r = accept(&app, &b, &path, PASSWORD, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/");
    let (session, _) = set_cookie(r.headers(), "allot_session").expect("a session");
    let r = landing(&app, &b, &session).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("ines@customer.example"));
    sign_in(&app, &b, "ines@customer.example").await;
    let listed = app.get(&format!("/api/v1/admins?org={}", w.org), &app.admin).await.ok();
    assert_eq!(listed["items"][0]["invitation_pending"], false);
    assert!(listed["items"][0]["last_sign_in_at"].is_string());

    // Once only.
    let before = app.snapshot().await;
    // (A form kept open from before: its CSRF cookie and field are valid.)
    let (cookie, csrf) = login_form(&app, &b).await;
    let r = b
        .post(format!("{}{path}", app.url))
        .header("cookie", format!("allot_login_csrf={cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("password", "someone else's password"),
            ("repeat", "someone else's password"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = b.get(format!("{}{path}", app.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains(INVITATION_NOT_VALID));
    assert_eq!(app.snapshot().await, before);
    sign_in(&app, &b, "ines@customer.example").await;

    // Valid for 7 days: a second later it is not.
    let late = invite("late@customer.example").await;
    app.clock.set(today() + chrono::Duration::days(7) + chrono::Duration::seconds(1));
    let r = b.get(format!("{}{late}", app.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A new link replaces it (and only an invitation not accepted gets one).
    let listed = app.get(&format!("/api/v1/admins?org={}", w.org), &app.admin).await.ok();
    let late_id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == "late@customer.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ines_id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == "ines@customer.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(&format!("/api/v1/admins/{ines_id}/invitation"), &app.admin, json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = app
        .post(&format!("/api/v1/admins/{late_id}/invitation"), &app.admin, json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let fresh = r.body["invitation"]["path"].as_str().unwrap().to_string();
    let r = accept(&app, &b, &fresh, PASSWORD, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

async fn roles_change_within_reach_and_removed_admins_are_signed_out(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let boss = make_admin_as(&app, "boss@customer.example", Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let reader = make_admin_as(&app, "reader@customer.example", Role::OrgReadOnly, None, Some(&w.org)).await;
    let b = browser();
    let boss_session = sign_in(&app, &b, "boss@customer.example").await;
    let reader_session = sign_in(&app, &b, "reader@customer.example").await;
    let super_admin = app.token(Role::OrgSuperAdmin, None, Some(&w.org)).await;

    // Up to one's own role, within the same kind of tenant.
    let r = app
        .patch(&format!("/api/v1/admins/{reader}"), &super_admin, json!({ "role": "org_admin" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["role"], "org_admin");
    let before = app.snapshot().await;
    let r = app
        .patch(
            &format!("/api/v1/admins/{reader}"),
            &super_admin,
            json!({ "role": "partner_admin" }),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = app
        .patch(&format!("/api/v1/admins/{reader}"), &app.admin, json!({ "role": "partner_admin" }))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "role");
    let r = app
        .patch(&format!("/api/v1/admins/{reader}"), &super_admin, json!({ "role": "no_such_role" }))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(app.snapshot().await, before);
    // The new role applies on the reader's next click.
    let html = landing(&app, &b, &reader_session).await.text().await.unwrap();
    assert!(html.contains("org_admin"), "{html}");

    // Nobody removes or demotes themselves (a console session is the caller here).
    let html = page_of(&app, &b, &boss_session, &format!("/ui/orgs/{}/admins", w.org))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_field(&html);
    let r = post_form(
        &app,
        &b,
        &boss_session,
        &format!("/ui/orgs/{}/admins/{boss}/remove", w.org),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("Nobody removes their own account"));

    // Removed: the session stops working at once.
    assert_eq!(landing(&app, &b, &reader_session).await.status(), StatusCode::OK);
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/admins/{reader}"),
            Some(&super_admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = page_of(&app, &b, &reader_session, "/ui/").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/login");
    assert_eq!(app.get(&format!("/api/v1/admins/{reader}"), &super_admin).await.status, 404);
    let events = app.get(&format!("/api/v1/orgs/{}/audit-events", w.org), &app.admin).await.ok();
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"admin.update") && actions.contains(&"admin.remove"),
        "{actions:?}"
    );
}

async fn the_admins_pages_invite_change_and_remove(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let theirs = org(&app, "Customer B", None).await;
    make_admin_as(&app, "boss@customer.example", Role::OrgSuperAdmin, None, Some(&w.org)).await;
    make_admin_as(&app, "helper@customer.example", Role::OrgAdmin, None, Some(&w.org)).await;
    let b = browser();
    let boss = sign_in(&app, &b, "boss@customer.example").await;
    let helper = sign_in(&app, &b, "helper@customer.example").await;
    let admins_page = format!("/ui/orgs/{}/admins", w.org);

    let r = page_of(&app, &b, &boss, "/ui/admins").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "an org admin's Admins link leads to its org's page"
    );
    assert_eq!(r.headers()[LOCATION], admins_page.as_str());
    let r = page_of(&app, &b, &boss, &admins_page).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    for text in [
        "<h1>Admins</h1>",
        "boss@customer.example",
        "helper@customer.example",
        ">Invite</button>",
        ">Email</label>",
    ] {
        assert!(html.contains(text), "{text}: {html}");
    }
    assert!(!html.contains(r#"value="partner_admin""#), "no role above one's own is offered");
    let csrf = csrf_field(&html);

    // Another tenant's page is the same 404 as one that does not exist.
    let theirs_page = page_of(&app, &b, &boss, &format!("/ui/orgs/{theirs}/admins")).await;
    assert_eq!(theirs_page.status(), StatusCode::NOT_FOUND);
    let nowhere = page_of(&app, &b, &boss, "/ui/orgs/org_nonexistent/admins").await;
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    let (a, b_) = (theirs_page.text().await.unwrap(), nowhere.text().await.unwrap());
    assert_eq!(a.replace(&theirs, "X"), b_.replace("org_nonexistent", "X"));
    // A role without ManageAdmins: 403 to look, 403 to post, no control in the nav.
    let r = page_of(&app, &b, &helper, &admins_page).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let home = landing(&app, &b, &helper).await.text().await.unwrap();
    assert!(!home.contains(r#"href="/ui/admins""#), "{home}");
    let helper_csrf = csrf_field(&home);

    let before = app.snapshot().await;
    let form = [("email", "new@customer.example"), ("role", "org_admin"), ("name", "New")];
    let r = post_form(
        &app,
        &b,
        &helper,
        &admins_page,
        &[&form[..], &[("csrf", helper_csrf.as_str())]].concat(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post_form(&app, &b, &boss, &admins_page, &[&form[..], &[("csrf", "forged")]].concat()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post_form(
        &app,
        &b,
        &boss,
        &format!("/ui/orgs/{theirs}/admins"),
        &[&form[..], &[("csrf", csrf.as_str())]].concat(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post_form(
        &app,
        &b,
        &boss,
        &admins_page,
        &[
            ("csrf", csrf.as_str()),
            ("email", "not-an-email"),
            ("role", "org_admin"),
            ("name", ""),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"role="alert""#) && html.contains("not-an-email"),
        "the reason beside the kept form: {html}"
    );
    assert_eq!(app.snapshot().await, before, "refusals change nothing");

    // Invite: the whole link, shown once.
    let r = post_form(&app, &b, &boss, &admins_page, &[&form[..], &[("csrf", csrf.as_str())]].concat()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let html = r.text().await.unwrap();
    let at = html.find(&format!("{}/ui/invitations/", app.url)).expect("the whole link is shown");
    let link = html[at..].split('"').next().unwrap().to_string();
    let listed = app.get(&format!("/api/v1/admins?org={}", w.org), &app.admin).await.ok();
    let new = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["email"] == "new@customer.example")
        .expect("invited")
        .clone();
    assert_eq!(new["role"], "org_admin");
    assert_eq!(new["display_name"], "New");
    let id = new["id"].as_str().unwrap();
    let html = page_of(&app, &b, &boss, &admins_page).await.text().await.unwrap();
    assert!(html.contains("Invitation pending"), "{html}");

    // Change role, then remove.
    let r = post_form(
        &app,
        &b,
        &boss,
        &format!("{admins_page}/{id}/role"),
        &[("csrf", &csrf), ("role", "org_support")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get(&format!("/api/v1/admins/{id}"), &app.admin).await.ok()["role"],
        "org_support"
    );
    let r = post_form(&app, &b, &boss, &format!("{admins_page}/{id}/remove"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.get(&format!("/api/v1/admins/{id}"), &app.admin).await.status, 404);
    let path = link.trim_start_matches(&app.url);
    assert_eq!(
        b.get(format!("{}{path}", app.url)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "a removed admin's link is dead"
    );
}
