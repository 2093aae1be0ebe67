//! The web console's sign-in, at the HTTP level: the form and its CSRF
//! token, one sentence for a wrong email or password, the session cookie's
//! attributes, signing out on the server, idle expiry, the security headers
//! and the embedded assets.

use reqwest::header::LOCATION;
use reqwest::StatusCode;

use allot_domain::access::Role;
use allot_server::app::admins::{create_admin_as_operator, AdminSpec, SIGN_IN_REFUSED};

use serde_json::json;

use crate::both_backends;
use crate::kit::*;
use crate::ui_kit::*;

both_backends!(
    signing_in_and_out,
    repeated_failed_sign_ins_are_slowed_down,
    sessions_expire_when_idle,
    passwords_under_12_characters_are_refused,
    the_api_tokens_page_creates_lists_and_revokes,
    the_api_tokens_page_keeps_to_role_and_tenant,
    pages_carry_security_headers_and_assets_are_cached,
    the_users_selection_follows_boxes_pages_and_filters,
    edit_licenses_offers_required_products_and_the_summary_shows_retained_data,
    the_identity_provisioning_page_refuses_what_is_not_its_own
);

async fn signing_in_and_out(backend: Backend) {
    let app = spawn(backend).await;
    make_admin(&app, "Ada@Example.com").await;
    let b = browser();

    let r = b.get(format!("{}/ui/login", app.url)).send().await.expect("get");
    let html = r.text().await.expect("body");
    for label in ["<h1>Sign in</h1>", ">Email</label>", ">Password</label>", ">Sign in</button>"] {
        assert!(html.contains(label), "the sign-in page shows {label}: {html}");
    }

    // Without the form's CSRF token: 403, and no session is made.
    let before = app.snapshot().await;
    let (cookie, csrf) = login_form(&app, &b).await;
    let r = post_login(&app, &b, &cookie, "forged", "ada@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .post(format!("{}/ui/login", app.url))
        .form(&[("email", "ada@example.com"), ("password", PASSWORD), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a token without its cookie is refused");
    assert!(set_cookie(r.headers(), "allot_session").is_none());
    assert_eq!(app.snapshot().await, before, "a refused sign-in changes nothing");

    // A wrong password and an unknown email get the same sentence.
    for (email, password) in [("ada@example.com", "not the password"), ("nobody@example.com", PASSWORD)] {
        let (cookie, csrf) = login_form(&app, &b).await;
        let r = post_login(&app, &b, &cookie, &csrf, email, password).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(set_cookie(r.headers(), "allot_session").is_none());
        let html = r.text().await.expect("body");
        assert!(html.contains(SIGN_IN_REFUSED), "{html}");
    }
    assert_eq!(app.snapshot().await, before);

    // The right password, the email in another case: a session cookie.
    let (cookie, csrf) = login_form(&app, &b).await;
    let r = post_login(&app, &b, &cookie, &csrf, "ADA@example.COM", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/");
    let (session, header) = set_cookie(r.headers(), "allot_session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/ui"] {
        assert!(header.contains(attribute), "{header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: no Secure attribute ({header})");
    assert!(
        !app.snapshot().await.iter().any(|row| row.contains(&session)),
        "the session's secret is not stored"
    );

    let r = home(&app, &b, &session).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("body");
    assert!(html.contains("Ada@Example.com") && html.contains("provider_admin"), "{html}");
    let csrf = csrf_field(&html);

    // Signing out needs the session's CSRF token.
    let r = b
        .post(format!("{}/ui/logout", app.url))
        .header("cookie", format!("allot_session={session}"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(home(&app, &b, &session).await.status(), StatusCode::OK, "still signed in");

    let r = b
        .post(format!("{}/ui/logout", app.url))
        .header("cookie", format!("allot_session={session}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/login");
    // The old cookie no longer works, wherever it was kept.
    let r = home(&app, &b, &session).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/login");

    // Behind a TLS proxy the cookie is Secure.
    let (cookie, csrf) = login_form(&app, &b).await;
    let r = b
        .post(format!("{}/ui/login", app.url))
        .header("cookie", format!("allot_login_csrf={cookie}"))
        .header("x-forwarded-proto", "https")
        .form(&[("email", "ada@example.com"), ("password", PASSWORD), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    let (_, header) = set_cookie(r.headers(), "allot_session").expect("a session cookie");
    assert!(header.contains("; Secure"), "{header}");
}

async fn repeated_failed_sign_ins_are_slowed_down(backend: Backend) {
    let app = spawn(backend).await;
    make_admin(&app, "ada@example.com").await;
    let b = browser();
    for _ in 0..5 {
        let (cookie, csrf) = login_form(&app, &b).await;
        let r = post_login(&app, &b, &cookie, &csrf, "ada@example.com", "a wrong guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The sixth attempt waits before it is even checked, right or wrong.
    let (cookie, csrf) = login_form(&app, &b).await;
    let started = std::time::Instant::now();
    let r = post_login(&app, &b, &cookie, &csrf, "ada@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the right password still works");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "slowed down by a second, took {:?}",
        started.elapsed()
    );
}

async fn sessions_expire_when_idle(backend: Backend) {
    let app = spawn(backend).await;
    make_admin(&app, "ada@example.com").await;
    let b = browser();
    let session = sign_in(&app, &b, "ada@example.com").await;
    let idle = chrono::Duration::from_std(app.app.config.session_idle).expect("idle");
    // Used within the idle time, it lives on (each use counts).
    app.clock.set(today() + idle - chrono::Duration::minutes(5));
    assert_eq!(home(&app, &b, &session).await.status(), StatusCode::OK);
    app.clock.set(today() + idle * 2 - chrono::Duration::minutes(10));
    assert_eq!(home(&app, &b, &session).await.status(), StatusCode::OK);
    // Left alone longer than that, it has expired, and the worker's purge
    // deletes it (a live session of another admin stays).
    make_admin(&app, "grace@example.com").await;
    app.clock.set(today() + idle * 3 - chrono::Duration::minutes(1));
    let other = sign_in(&app, &b, "grace@example.com").await;
    app.clock.set(today() + idle * 3);
    let r = home(&app, &b, &session).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/login");
    let ended = allot_server::app::admins::end_idle_sessions(&app.app).await.expect("purge");
    assert_eq!(ended, 1);
    assert_eq!(home(&app, &b, &other).await.status(), StatusCode::OK);
}

async fn passwords_under_12_characters_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let before = app.snapshot().await;
    let spec = AdminSpec {
        email: "ada@example.com",
        display_name: None,
        role: Role::ProviderAdmin,
        partner: None,
        org: None,
    };
    let e = create_admin_as_operator(&app.store, &spec, "eleven char", today())
        .await
        .unwrap_err();
    assert_eq!(e.detail, "The password must have at least 12 characters; it has 11.");
    let bad_email = AdminSpec {
        email: "ada at example.com",
        ..spec
    };
    let e = create_admin_as_operator(&app.store, &bad_email, PASSWORD, today())
        .await
        .unwrap_err();
    assert_eq!(e.code, allot_domain::Code::ValidationFailed, "{}", e.detail);
    assert!(e.detail.contains("is not a valid email address"), "{}", e.detail);
    assert_eq!(app.snapshot().await, before);
    // An org admin needs an org that exists; a partner admin no org.
    let w = world(&app).await;
    let before_world = app.snapshot().await;
    let bad = AdminSpec {
        org: Some("org_nope"),
        role: Role::OrgAdmin,
        ..spec
    };
    let e = create_admin_as_operator(&app.store, &bad, PASSWORD, today()).await.unwrap_err();
    assert_eq!(e.code, allot_domain::Code::NotFound, "{}", e.detail);
    let bad = AdminSpec {
        org: Some(&w.org),
        role: Role::PartnerAdmin,
        ..spec
    };
    let e = create_admin_as_operator(&app.store, &bad, PASSWORD, today()).await.unwrap_err();
    assert_eq!(e.code, allot_domain::Code::ValidationFailed, "{}", e.detail);
    assert_eq!(
        e.detail,
        "partner_admin admins are bound to a partner: give a partner (--partner) and no org."
    );
    assert_eq!(app.snapshot().await, before_world);
    assert_ne!(before, before_world);
    // The same email twice (in another case) is refused by name.
    create_admin_as_operator(&app.store, &spec, PASSWORD, today()).await.expect("first");
    let again = AdminSpec {
        email: "ADA@example.com",
        ..spec
    };
    let e = create_admin_as_operator(&app.store, &again, PASSWORD, today()).await.unwrap_err();
    assert_eq!(e.detail, "An admin with email ADA@example.com already exists.");
}

async fn pages_carry_security_headers_and_assets_are_cached(backend: Backend) {
    let app = spawn(backend).await;
    let b = browser();
    let r = b.get(format!("{}/", app.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/");
    let r = b.get(format!("{}/ui/", app.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "a page that needs a session sends to Sign in");
    assert_eq!(r.headers()[LOCATION], "/ui/login");

    let r = b.get(format!("{}/ui/login", app.url)).send().await.expect("get");
    let csp = r.headers()["content-security-policy"].to_str().expect("csp").to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.expect("body");
    assert!(!html.contains("<script>") && !html.contains(" style="), "nothing inline: {html}");

    for (ext, content_type) in [(".css", "text/css"), (".js", "text/javascript")] {
        let at = html.find(ext).expect("the page links the asset");
        let start = html[..at].rfind("/ui/assets/").expect("under /ui/assets/");
        let path = &html[start..at + ext.len()];
        let r = b.get(format!("{}{path}", app.url)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"].to_str().expect("type").starts_with(content_type));
        assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert!(r.bytes().await.expect("body").len() > 1000);
        // Another name (an old build's hash) is not served.
        let r = b
            .get(format!("{}{}", app.url, path.replacen('.', ".0", 1)))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = b.get(format!("{}/ui/no/such/page", app.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.expect("body").contains("<h1>Not found</h1>"));
}

async fn the_api_tokens_page_creates_lists_and_revokes(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    make_admin(&app, "ada@example.com").await;
    let b = browser();
    let session = sign_in(&app, &b, "ada@example.com").await;
    let html = page_of(&app, &b, &session, "/ui/").await.text().await.expect("body");
    assert!(
        html.contains(r#"href="/ui/tokens""#),
        "the provider admin sees the way to API tokens"
    );
    let r = page_of(&app, &b, &session, "/ui/tokens").await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("body");
    assert!(html.contains("<h1>API tokens</h1>"), "{html}");
    let csrf = csrf_field(&html);

    // Without the CSRF token, or with a role that needs a tenant and none: nothing is made.
    let before = app.snapshot().await;
    let r = post_form(
        &app,
        &b,
        &session,
        "/ui/tokens",
        &[
            ("csrf", "forged"),
            ("name", "HR sync"),
            ("role", "org_admin"),
            ("org", w.org.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post_form(
        &app,
        &b,
        &session,
        "/ui/tokens",
        &[("csrf", csrf.as_str()), ("name", "HR sync"), ("role", "org_admin")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.expect("body");
    assert!(
        html.contains("org_admin tokens are bound to an org"),
        "the sentence beside the form: {html}"
    );
    assert!(html.contains(r#"value="HR sync""#), "what was typed is kept");
    assert_eq!(app.snapshot().await, before);

    // Created: the secret is shown once and works on the API.
    let r = post_form(
        &app,
        &b,
        &session,
        "/ui/tokens",
        &[
            ("csrf", csrf.as_str()),
            ("name", "HR sync"),
            ("role", "org_admin"),
            ("org", w.org.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let html = r.text().await.expect("body");
    let secret = html
        .split(r#"id="secret" readonly rows="2" spellcheck="false">"#)
        .nth(1)
        .expect("the secret")
        .split('<')
        .next()
        .expect("closed")
        .to_string();
    assert!(secret.starts_with("allot_"), "{secret}");
    app.get(&format!("/api/v1/orgs/{}/users", w.org), &secret).await.ok();
    let html = page_of(&app, &b, &session, "/ui/tokens").await.text().await.expect("body");
    assert!(html.contains("HR sync") && !html.contains(&secret), "listed, without its secret");

    // Revoked: it stops working at once.
    let id = app.get("/api/v1/tokens", &app.admin).await.ok()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["name"] == "HR sync")
        .expect("listed")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let r = post_form(&app, &b, &session, &format!("/ui/tokens/{id}/revoke"), &[("csrf", "forged")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    app.get(&format!("/api/v1/orgs/{}/users", w.org), &secret).await.ok();
    let r = post_form(&app, &b, &session, &format!("/ui/tokens/{id}/revoke"), &[("csrf", csrf.as_str())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = app.get(&format!("/api/v1/orgs/{}/users", w.org), &secret).await;
    assert_eq!(r.status.as_u16(), 401);
    let html = page_of(&app, &b, &session, "/ui/tokens").await.text().await.expect("body");
    assert!(!html.contains("HR sync"), "a revoked token is no longer listed");
}

async fn the_api_tokens_page_keeps_to_role_and_tenant(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let other_org = org(&app, "Other Org", None).await;
    make_admin_as(&app, "reader@example.com", Role::OrgAdmin, None, Some(&w.org)).await;
    make_admin_as(&app, "boss@example.com", Role::OrgSuperAdmin, None, Some(&w.org)).await;
    app.token(Role::OrgAdmin, None, Some(&other_org)).await;
    let other_id = app.get("/api/v1/tokens", &app.admin).await.ok()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["org"] == other_org.as_str())
        .expect("listed")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let b = browser();

    // A role that may not manage tokens: no link, 403 on the page and on a direct POST.
    let reader = sign_in(&app, &b, "reader@example.com").await;
    let home = landing(&app, &b, &reader).await.text().await.expect("body");
    assert!(!home.contains(r#"href="/ui/tokens""#), "{home}");
    let csrf = csrf_field(&home);
    assert_eq!(page_of(&app, &b, &reader, "/ui/tokens").await.status(), StatusCode::FORBIDDEN);
    let before = app.snapshot().await;
    let r = post_form(
        &app,
        &b,
        &reader,
        "/ui/tokens",
        &[("csrf", csrf.as_str()), ("name", "mine"), ("role", "org_read_only")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, before);

    // An org super admin manages its org's tokens, and another org's token
    // is 404 whether it exists or not, with nothing revoked.
    let boss = sign_in(&app, &b, "boss@example.com").await;
    let before = app.snapshot().await;
    let html = page_of(&app, &b, &boss, "/ui/tokens").await.text().await.expect("body");
    assert!(!html.contains(&other_id), "another org's token is not listed");
    let csrf = csrf_field(&html);
    let r = post_form(
        &app,
        &b,
        &boss,
        &format!("/ui/tokens/{other_id}/revoke"),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let exists = r.text().await.expect("body").replace(&other_id, "ID");
    let r = post_form(&app, &b, &boss, "/ui/tokens/tok_nope/revoke", &[("csrf", csrf.as_str())]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let missing = r.text().await.expect("body").replace("tok_nope", "ID");
    let strip = |h: &str| h.split("x-request-id").next().unwrap_or(h).to_string();
    assert_eq!(strip(&exists), strip(&missing), "the same page whether it exists or not");
    assert_eq!(app.snapshot().await, before);
    // Its own org's token, without naming the org: bound to the admin's org.
    let r = post_form(
        &app,
        &b,
        &boss,
        "/ui/tokens",
        &[("csrf", csrf.as_str()), ("name", "ours"), ("role", "org_read_only")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let listed = app.get("/api/v1/tokens", &app.admin).await.ok();
    let ours = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["name"] == "ours")
        .expect("made");
    assert_eq!(ours["org"], w.org.as_str());
}

/// The users ids a Users page shows, in order, and which are ticked.
fn boxes(html: &str) -> (Vec<String>, Vec<String>) {
    let mut shown = Vec::new();
    let mut ticked = Vec::new();
    for part in html.split("<input").skip(1) {
        let tag = part.split('>').next().unwrap_or("");
        if tag.contains(r#"name="selected""#) {
            let id = tag
                .split(r#"value=""#)
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
                .to_string();
            if tag.contains("checked") {
                ticked.push(id.clone());
            }
            shown.push(id);
        }
    }
    (shown, ticked)
}

async fn the_users_selection_follows_boxes_pages_and_filters(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let theirs = org(&app, "Customer B", None).await;
    let their_user = user(&app, &theirs, "them@b.example").await;
    many_users(&app, &w.org, "alpha", "a.example", 60, None).await;
    many_users(&app, &w.org, "beta", "b.example", 30, None).await;
    make_admin_as(&app, "boss@customer.example", Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let b = browser();
    let s = sign_in(&app, &b, "boss@customer.example").await;
    let users = format!("/ui/orgs/{}/users", w.org);
    let selection = format!("/ui/orgs/{}/users/selection", w.org);
    let html = page_of(&app, &b, &s, &users).await.text().await.unwrap();
    let csrf = csrf_field(&html);
    let (page1, ticked) = boxes(&html);
    assert_eq!(page1.len(), 50);
    assert!(ticked.is_empty());
    assert!(html.contains("Selected users (0)"));

    // Two boxes ticked on page 1 (the form posts every box of the page).
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf), ("page", ""), ("all_was", "0")];
    for id in &page1 {
        form.push(("on_page", id));
    }
    form.push(("selected", &page1[0]));
    form.push(("selected", &page1[1]));
    let r = post_form(&app, &b, &s, &selection, &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "without htmx: back to the page");
    // htmx gets the form back as it now is.
    let r = b
        .post(format!("{}{selection}", app.url))
        .header("cookie", format!("allot_session={s}"))
        .header("hx-request", "true")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let fragment = r.text().await.unwrap();
    assert!(
        fragment.starts_with("<form") && fragment.contains("Selected users (2)"),
        "{fragment}"
    );

    // Page 2: "Select all on this page" ticks its 40 (another org's user and
    // unknown ids posted along are ignored).
    let html = page_of(&app, &b, &s, &format!("{users}?after={}", page1[49]))
        .await
        .text()
        .await
        .unwrap();
    let (page2, _) = boxes(&html);
    assert_eq!(page2.len(), 40, "90 users: 50 + 40");
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf), ("page", ""), ("all_was", "0"), ("all_on_page", "1")];
    for id in &page2 {
        form.push(("on_page", id));
    }
    form.push(("on_page", &their_user));
    form.push(("on_page", "usr_nope"));
    post_form(&app, &b, &s, &selection, &form).await;
    let html = page_of(&app, &b, &s, &users).await.text().await.unwrap();
    assert!(html.contains("Selected users (42)"), "2 + 40");
    assert_eq!(boxes(&html).1, vec![page1[0].clone(), page1[1].clone()], "page 1 keeps its two");
    // Clearing one box on page 1 takes only that one out.
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf), ("page", ""), ("all_was", "0")];
    for id in &page1 {
        form.push(("on_page", id));
    }
    form.push(("selected", &page1[1]));
    post_form(&app, &b, &s, &selection, &form).await;
    let html = page_of(&app, &b, &s, &format!("/ui/orgs/{}/users/selected", w.org))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("41 users selected"), "{html}");
    assert!(!html.contains(&page1[0]));

    // Every user that matches a filter, on screen or not; then clear.
    post_form(&app, &b, &s, &selection, &[("csrf", &csrf), ("page", ""), ("clear", "1")]).await;
    post_form(
        &app,
        &b,
        &s,
        &selection,
        &[("csrf", &csrf), ("page", "q=b.example"), ("all_matching", "1")],
    )
    .await;
    let html = page_of(&app, &b, &s, &users).await.text().await.unwrap();
    assert!(html.contains("Selected users (30)"), "the 30 beta users");

    // Another org's selection page is the common 404; a post without the token changes nothing.
    let r = page_of(&app, &b, &s, &format!("/ui/orgs/{theirs}/users/selected")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let before = app.snapshot().await;
    let r = post_form(&app, &b, &s, &selection, &[("csrf", "forged"), ("page", ""), ("clear", "1")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, before);
    // Signing out drops the session's selection with it.
    let r = post_form(&app, &b, &s, "/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let mut tx = app.store.begin_read().await.expect("read");
    let left = tx.rows("SELECT COUNT(*) AS n FROM console_selections", &[]).await.expect("count")[0]
        .int("n")
        .expect("n");
    assert_eq!(left, 0);
}

async fn edit_licenses_offers_required_products_and_the_summary_shows_retained_data(backend: Backend) {
    let app = spawn(backend).await;
    for p in [
        json!({ "code": "calling-professional", "name": "Calling Professional", "family": "calling",
                "properties": { "phone_number": "optional" }, "retention_days": 30 }),
        json!({ "code": "attendant-console", "name": "Attendant Console", "family": "attendant-console",
                "rules": { "requires": ["calling-professional"] } }),
    ] {
        app.post("/api/v1/products", &app.admin, p).await.ok();
    }
    let org = org(&app, "Customer A", None).await;
    subscription(
        &app,
        &org,
        json!([{ "product": "calling-professional", "quantity": 5 }, { "product": "attendant-console", "quantity": 5 }]),
    )
    .await;
    let anna = user(&app, &org, "anna@example.com").await;
    many_users(&app, &org, "member", "customer.example", 120, None).await;
    make_admin_as(&app, "boss@customer.example", Role::OrgSuperAdmin, None, Some(&org)).await;
    let b = browser();
    let s = sign_in(&app, &b, "boss@customer.example").await;
    let edit = format!("/ui/orgs/{org}/users/{anna}/licenses/edit");
    let html = page_of(&app, &b, &s, &edit).await.text().await.unwrap();
    assert!(
        html.contains("Requires calling-professional."),
        "the rule is said beside the product"
    );
    assert!(html.contains("Also add the products that the chosen ones require"));
    let csrf = csrf_field(&html);

    // Attendant Console alone: refused with the rule's sentence, nothing changed.
    let before = app.snapshot().await;
    let r = post_form(
        &app,
        &b,
        &s,
        &edit,
        &[("csrf", &csrf), ("hold", "attendant-console"), ("sub:attendant-console", "")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("anna@example.com cannot get Attendant Console without Calling Professional: Attendant Console requires it."),
        "{html}"
    );
    assert!(html.contains(r#"value="attendant-console" checked"#), "the form keeps the tick");
    assert_eq!(app.snapshot().await, before);
    // With the offer taken: both, in one change.
    let r = post_form(
        &app,
        &b,
        &s,
        &edit,
        &[
            ("csrf", &csrf),
            ("hold", "attendant-console"),
            ("sub:attendant-console", ""),
            ("add_required", "1"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let held = app.get(&format!("/api/v1/orgs/{org}/users/{anna}/licenses"), &app.admin).await.ok();
    let mut products: Vec<&str> = held["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["product"].as_str().unwrap())
        .collect();
    products.sort();
    assert_eq!(products, ["attendant-console", "calling-professional"]);

    // Give the calling license a number, then clear every box: the summary
    // shows the number kept as service data, with the day it goes.
    let r = post_form(
        &app,
        &b,
        &s,
        &edit,
        &[
            ("csrf", &csrf),
            ("hold", "attendant-console"),
            ("hold", "calling-professional"),
            ("prop:calling-professional:phone_number", "+46812345678"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post_form(&app, &b, &s, &edit, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = page_of(&app, &b, &s, &format!("/ui/orgs/{org}/users/{anna}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No licenses."), "{html}");
    assert!(html.contains("phone_number: +46812345678"), "{html}");
    assert!(html.contains("2026-07-15"), "deleted 30 days after the license went: {html}");
    // Saving an unchanged form says so.
    let r = post_form(&app, &b, &s, &edit, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("Nothing to save"));

    // Paging by key: 121 users; Last shows the last 50 (pages are found by
    // key, not counted from the start), with First and Previous and no
    // Next; First shows 50 with Next and Last.
    let users = format!("/ui/orgs/{org}/users");
    let html = page_of(&app, &b, &s, &format!("{users}?at=last")).await.text().await.unwrap();
    assert_eq!(html.matches(r#"name="selected""#).count(), 50);
    assert!(
        html.contains("member119@customer.example"),
        "the last user by id is on the last page"
    );
    assert!(html.contains(r#"rel="prev""#) && html.contains(">First</a>"));
    assert!(html.contains(r#"aria-disabled="true">Next<"#) && html.contains(r#"aria-disabled="true">Last<"#));
    let html = page_of(&app, &b, &s, &users).await.text().await.unwrap();
    assert_eq!(html.matches(r#"name="selected""#).count(), 50);
    assert!(html.contains(r#"aria-disabled="true">First<"#) && html.contains(r#"rel="next""#) && html.contains(">Last</a>"));
    // A filter: only the status asked for, and a bad one is a sentence, not a crash.
    let html = page_of(&app, &b, &s, &format!("{users}?status=inactive"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No users match."));
    let r = page_of(&app, &b, &s, &format!("{users}?status=nonsense")).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("Choose a status from the list."));
}

/// The Identity provisioning page's forms: without the session's CSRF
/// token nothing is created or changed; a token of another org, or one of
/// this org that is not a SCIM token, cannot be revoked from it (404,
/// still working); an empty token name is refused beside the form (422).
async fn the_identity_provisioning_page_refuses_what_is_not_its_own(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let other = org(&app, "Other Org", None).await;
    make_admin_as(&app, "boss@example.com", Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let theirs = app.token(Role::Scim, None, Some(&other)).await;
    let own_admin = app.token(Role::OrgReadOnly, None, Some(&w.org)).await;
    let id_of = |role: &str, org_id: &str| {
        let listed = app.get("/api/v1/tokens", &app.admin);
        let (role, org_id) = (role.to_string(), org_id.to_string());
        async move {
            listed.await.ok()["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["role"] == role.as_str() && t["org"] == org_id.as_str())
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (their_id, reader_id) = (id_of("scim", &other).await, id_of("org_read_only", &w.org).await);
    let b = browser();
    let session = sign_in(&app, &b, "boss@example.com").await;
    let path = format!("/ui/orgs/{}/provisioning", w.org);
    let page = page_of(&app, &b, &session, &path).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = csrf_field(&page.text().await.expect("body"));
    let before = app.snapshot().await;
    // No CSRF token: refused, nothing made or changed.
    let r = post_form(&app, &b, &session, &format!("{path}/tokens"), &[("name", "Entra")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post_form(&app, &b, &session, &format!("{path}/settings"), &[("keep", "1")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Not this page's tokens: 404.
    for id in [&their_id, &reader_id, &"tok_nothing".to_string()] {
        let r = post_form(
            &app,
            &b,
            &session,
            &format!("{path}/tokens/{id}/revoke"),
            &[("csrf", csrf.as_str())],
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id}");
    }
    // A name of blanks: refused beside the form.
    let r = post_form(
        &app,
        &b,
        &session,
        &format!("{path}/tokens"),
        &[("csrf", csrf.as_str()), ("name", "   ")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.snapshot().await, before);
    let r = app.get(&format!("/scim/v2/orgs/{other}/Users"), &theirs).await;
    assert_eq!(r.status.as_u16(), 200, "the other org's token still works");
    let r = app.get(&format!("/api/v1/orgs/{}", w.org), &own_admin).await;
    assert_eq!(r.status.as_u16(), 200, "the org's read-only token still works");
}
