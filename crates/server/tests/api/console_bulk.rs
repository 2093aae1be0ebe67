//! The console's bulk pages at the HTTP level: Manage licenses for a
//! selection (tri-state rows, holders, refusal as a whole, the job it
//! starts), the job page (progress, results, errors only, CSV), the jobs
//! list, and a preview applied for real.

use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::json;

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;
use crate::ui_kit::*;

both_backends!(
    manage_licenses_for_a_selection,
    import_preview_then_apply_keeps_phone_numbers,
    templates_created_edited_and_given_to_existing_users,
    queue_members_and_remove_from_all_queues
);

/// The index of the Manage licenses row for `product` on `sub`.
fn row_of(html: &str, product: &str, sub: &str) -> usize {
    let needle = format!("value=\"{product}\t{sub}\"");
    let at = html.find(&needle).unwrap_or_else(|| panic!("no row for {product} on {sub}"));
    let before = &html[..at];
    let name_at = before.rfind("name=\"row_").expect("row field") + "name=\"row_".len();
    before[name_at..].split('"').next().expect("index").parse().expect("a number")
}

/// What the page says of row `i`: (was, ticked).
fn row_state(html: &str, i: usize) -> (String, bool) {
    let was_at = html.find(&format!("name=\"was_{i}\" value=\"")).expect("was") + format!("name=\"was_{i}\" value=\"").len();
    let was = html[was_at..].split('"').next().expect("was value").to_string();
    let box_at = html.find(&format!("name=\"want_{i}\"")).expect("box");
    let tag_start = html[..box_at].rfind("<input").expect("input");
    let tag = html[tag_start..].split('>').next().expect("tag");
    (was, tag.contains(" checked"))
}

async fn select(app: &TestApp, b: &reqwest::Client, s: &str, org: &str, csrf: &str, ids: &[String]) {
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf), ("page", ""), ("all_was", "0")];
    for id in ids {
        form.push(("on_page", id));
        form.push(("selected", id));
    }
    let r = post_form(app, b, s, &format!("/ui/orgs/{org}/users/selection"), &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

async fn job_page_until_done(app: &TestApp, b: &reqwest::Client, s: &str, path: &str) -> String {
    let id = path.trim_start_matches("/ui/jobs/");
    finished_job(app, id).await;
    let r = page_of(app, b, s, path).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

async fn manage_licenses_for_a_selection(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "contact-centre", "name": "Contact Centre Agent", "family": "contact-centre", "rules": { "locations": ["SE"] } }),
    )
    .await
    .ok();
    let other_sub = subscription(
        &app,
        &w.org,
        json!([{ "product": "meetings", "quantity": 5 }, { "product": "contact-centre", "quantity": 20 }]),
    )
    .await;
    let ids = many_users(&app, &w.org, "m", "m.example", 30, Some("SE")).await;
    // One user in the US, where the contact centre is not sold.
    let abroad = many_users(&app, &w.org, "n", "m.example", 1, Some("US")).await;
    // Three of the eight to be selected hold meetings; one holds it on the other subscription.
    for u in &ids[0..3] {
        app.post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "meetings", "subscription": w.sub }] }),
        )
        .await
        .ok();
    }
    app.post(
        &format!("/api/v1/orgs/{}/users/{}/licenses", w.org, ids[3]),
        &app.admin,
        json!({ "add": [{ "product": "meetings", "subscription": other_sub }] }),
    )
    .await
    .ok();
    // The one messaging seat goes to someone not selected: none is free.
    app.post(
        &format!("/api/v1/orgs/{}/users/{}/licenses", w.org, ids[29]),
        &app.admin,
        json!({ "add": [{ "product": "messaging" }] }),
    )
    .await
    .ok();
    make_admin_as(&app, "boss@customer.example", Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let b = browser();
    let s = sign_in(&app, &b, "boss@customer.example").await;
    let users_html = page_of(&app, &b, &s, &format!("/ui/orgs/{}/users", w.org))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_field(&users_html);
    let chosen: Vec<String> = ids[0..7].iter().chain(&abroad).cloned().collect();
    select(&app, &b, &s, &w.org, &csrf, &chosen).await;

    let manage = format!("/ui/orgs/{}/manage-licenses", w.org);
    let html = page_of(&app, &b, &s, &manage).await.text().await.unwrap();
    assert!(html.contains("<h1>Manage licenses</h1>"));
    assert!(html.contains("8 users selected."));
    // The boxes, in email order: m0, m1, ... (m0 < m1 < ... < m7).
    let first = html.find("<li>m0@m.example</li>").expect("m0's box");
    let last = html.find("<li>n0@m.example</li>").expect("n0's box");
    assert!(first < last);
    let meetings = row_of(&html, "meetings", &w.sub);
    let contact = row_of(&html, "contact-centre", &other_sub);
    let messaging = row_of(&html, "messaging", &w.sub);
    assert_eq!(row_state(&html, meetings), ("some".to_string(), false));
    assert_eq!(row_state(&html, contact), ("none".to_string(), false));
    assert!(html.contains(&format!("manage-licenses/assigned?product=meetings&amp;subscription={}", w.sub)));
    assert!(html.contains("3 of 8"), "three of the eight hold meetings");
    // Buy more where no seat is free (messaging), and only there.
    assert_eq!(html.matches(">Buy more<span").count(), 1, "{html}");

    // The Assigned page names the three holders.
    let holders = page_of(&app, &b, &s, &format!("{manage}/assigned?product=meetings&subscription={}", w.sub))
        .await
        .text()
        .await
        .unwrap();
    for e in ["m0@m.example", "m1@m.example", "m2@m.example"] {
        assert!(holders.contains(e), "{e} holds meetings");
    }
    assert!(!holders.contains("m3@m.example"), "m3's meetings is on the other subscription");

    // Messaging for all 8 with no seat free: refused as a whole, nothing written.
    let before = app.snapshot().await;
    let form_for = |extra: Vec<(String, String)>| {
        let mut f: Vec<(String, String)> = vec![("csrf".into(), csrf.clone())];
        for (i, p, sub) in [
            (meetings, "meetings", &w.sub),
            (contact, "contact-centre", &other_sub),
            (messaging, "messaging", &w.sub),
        ] {
            f.push((format!("row_{i}"), format!("{p}\t{sub}")));
            let (was, _) = row_state(&html, i);
            f.push((format!("keep_{i}"), if was == "some" { "1".into() } else { "0".into() }));
            f.push((format!("was_{i}"), was));
        }
        f.extend(extra);
        f
    };
    let post = |form: Vec<(String, String)>| {
        let (b, app, s, manage) = (&b, &app, s.clone(), manage.clone());
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            post_form(app, b, &s, &manage, &pairs).await
        }
    };
    let r = post(form_for(vec![(format!("want_{messaging}"), "1".into())])).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "seats exhausted");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("8 seats are needed for the selected users who do not hold it, and 0 are free."),
        "{text}"
    );
    assert!(text.contains("nothing was changed"));
    assert_eq!(app.snapshot().await, before, "nothing written");
    // Without CSRF: 403, nothing written.
    let mut forged = form_for(vec![(format!("want_{meetings}"), "1".into())]);
    forged[0].1 = "forged".into();
    assert_eq!(post(forged).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, before);
    // Nothing ticked or cleared (the mixed row kept): nothing to do.
    let r = post(form_for(vec![])).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("Nothing to change"));

    // Meetings and the contact centre for everyone: a job; its page shows
    // the results, n0 refused (the contact centre is not sold in the US).
    let r = post(form_for(vec![
        (format!("want_{meetings}"), "1".into()),
        (format!("want_{contact}"), "1".into()),
    ]))
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let job_path = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(job_path.starts_with("/ui/jobs/job_"), "{job_path}");
    let job_html = job_page_until_done(&app, &b, &s, &job_path).await;
    assert!(job_html.contains("completed with errors"), "{job_html}");
    assert!(job_html.contains("<progress"));
    assert!(job_html.contains("Download results (CSV)"));
    assert!(
        job_html.contains("n0@m.example cannot get Contact Centre Agent: it is not available in US"),
        "{job_html}"
    );
    assert!(job_html.contains("add meetings on"));
    assert!(job_html.contains("m0@m.example"), "results name users by email");
    let errors = page_of(&app, &b, &s, &format!("{job_path}?errors=1")).await.text().await.unwrap();
    assert!(errors.contains("n0@m.example"));
    assert!(!errors.contains("m4@m.example"), "errors only: m4 was given meetings");
    let csv = page_of(&app, &b, &s, &format!("{job_path}/results.csv")).await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 9, "a header and 8 users: {csv}");
    assert!(csv.lines().any(|l| l.contains("n0@m.example") && l.contains(",error,")));
    let held: Vec<String> = app
        .get(&format!("/api/v1/orgs/{}/users/{}/licenses", w.org, ids[6]), &app.admin)
        .await
        .ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["product"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.contains(&"contact-centre".to_string()) && held.contains(&"meetings".to_string()));
    // The progress part of a finished job tells htmx to reload the page.
    let part = page_of(&app, &b, &s, &format!("{job_path}/progress")).await;
    assert_eq!(part.headers().get("hx-refresh").map(|v| v.to_str().unwrap()), Some("true"));

    // Now 6 of 8 hold meetings on this subscription (not m3, whose is on
    // the other, nor n0) and 7 of 8 the contact centre: clearing the
    // mixed meetings box takes it from everyone selected.
    let html = page_of(&app, &b, &s, &manage).await.text().await.unwrap();
    assert!(html.contains("6 of 8") && html.contains("7 of 8"), "{html}");
    // The mixed box clicked to clear: its keep field goes to 0, the box stays clear.
    let cleared: Vec<(String, String)> = form_for(vec![])
        .into_iter()
        .map(|(k, v)| {
            if k == format!("keep_{meetings}") {
                (k, "0".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let r = post(cleared).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let second = r.headers()[LOCATION].to_str().unwrap().to_string();
    job_page_until_done(&app, &b, &s, &second).await;
    let html = page_of(&app, &b, &s, &manage).await.text().await.unwrap();
    let meetings = row_of(&html, "meetings", &w.sub);
    assert_eq!(row_state(&html, meetings), ("none".to_string(), false));

    // The jobs list shows both, newest first.
    let jobs = page_of(&app, &b, &s, &format!("/ui/orgs/{}/jobs", w.org))
        .await
        .text()
        .await
        .unwrap();
    let (a, z) = (
        jobs.find(second.trim_start_matches("/ui/jobs/")).expect("second"),
        jobs.find(job_path.trim_start_matches("/ui/jobs/")).expect("first"),
    );
    assert!(a < z, "newest first");
    assert!(jobs.contains("boss@customer.example") || jobs.contains("admin:"), "who started it");
    let api = app.get(&format!("/api/v1/orgs/{}/jobs?limit=1", w.org), &app.admin).await.ok();
    assert_eq!(api["items"].as_array().unwrap().len(), 1);
    assert_eq!(api["items"][0]["mode"], "per_user");
    assert!(api["next_cursor"].is_string());

    // Another org's job page is the common 404.
    let theirs = org(&app, "Customer B", None).await;
    let their_user = user(&app, &theirs, "them@b.example").await;
    let their_job = start_job(
        &app,
        &theirs,
        json!({ "users": [their_user], "add": [], "remove": [{ "product": "meetings" }] }),
    )
    .await;
    let r = page_of(&app, &b, &s, &format!("/ui/jobs/{their_job}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let missing = page_of(&app, &b, &s, "/ui/jobs/job_nope").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.text().await.unwrap().replace(&their_job, "X"),
        missing.text().await.unwrap().replace("job_nope", "X")
    );
}

async fn upload(app: &TestApp, b: &reqwest::Client, s: &str, path: &str, csrf: &str, mode: &str, file: String) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf.to_string())
        .text("mode", mode.to_string())
        .part(
            "file",
            reqwest::multipart::Part::text(file)
                .file_name("users.csv")
                .mime_str("text/csv")
                .unwrap(),
        );
    b.post(format!("{}{path}", app.url))
        .header("cookie", format!("allot_session={s}"))
        .multipart(form)
        .send()
        .await
        .expect("upload")
}

async fn import_preview_then_apply_keeps_phone_numbers(backend: Backend) {
    let app = spawn(backend).await;
    let c = crate::moves::calling_org(&app, 8).await;
    let before = crate::moves::service_data_rows(&app, &c.org, "calling").await;
    make_admin_as(&app, "boss@calling.example", Role::OrgSuperAdmin, None, Some(&c.org)).await;
    let b = browser();
    let s = sign_in(&app, &b, "boss@calling.example").await;
    let import = format!("/ui/orgs/{}/import", c.org);
    let html = page_of(&app, &b, &s, &import).await.text().await.unwrap();
    assert!(html.contains("<h1>Import users and licenses</h1>"));
    assert!(html.contains("Add only") && html.contains("Add and remove") && html.contains(">Preview<"));
    let csrf = csrf_field(&html);
    // Export, then move the first five users from A to B in the file.
    let r = page_of(&app, &b, &s, &format!("/ui/orgs/{}/users.csv", c.org)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let csv = r.text().await.unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: String| header.iter().position(|h| *h == name).expect("column");
    let (a, bcol) = (
        col(format!("calling-professional [{}]", c.a)),
        col(format!("calling-professional [{}]", c.b)),
    );
    let mut file = String::new();
    for (i, line) in csv.lines().enumerate() {
        let mut cells: Vec<&str> = line.split(',').collect();
        if (1..=5).contains(&i) {
            cells[a] = "FALSE";
            cells[bcol] = "TRUE";
        }
        file.push_str(&cells.join(","));
        file.push_str("\r\n");
    }

    // A bad file: refused with the line and the reason, nothing stored.
    let snapshot = app.snapshot().await;
    let bad = format!("{file}not-an-email,x,internal,active,SE,TRUE\r\n");
    let r = upload(&app, &b, &s, &import, &csrf, "add_only", bad).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("Line 10: &quot;not-an-email&quot; is not a valid email address"),
        "{text}"
    );
    assert_eq!(app.snapshot().await, snapshot);
    // Without the CSRF token: 403 before the file is read.
    let r = upload(&app, &b, &s, &import, "forged", "add_only", file.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, snapshot);

    // Preview: five moves, nothing changed.
    let r = upload(&app, &b, &s, &import, &csrf, "add_only", file.clone()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap_or_default());
    let preview = r.headers()[LOCATION].to_str().unwrap().to_string();
    let html = job_page_until_done(&app, &b, &s, &preview).await;
    assert!(html.contains("Preview</dt><dd>yes"), "{html}");
    let moves = format!("move calling-professional from {} to {}", c.a, c.b);
    assert_eq!(html.matches(&moves).count(), 5, "{html}");
    assert!(html.contains(">Line<") && html.contains(">2<"), "rows by line number");
    assert_eq!(crate::moves::service_data_rows(&app, &c.org, "calling").await, before);
    // Apply the preview: a new job, the same five moves, phone numbers kept.
    let r = post_form(&app, &b, &s, &format!("{preview}/apply"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let applied = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert_ne!(applied, preview);
    let html = job_page_until_done(&app, &b, &s, &applied).await;
    assert!(html.contains("Preview</dt><dd>no"));
    assert_eq!(html.matches(&moves).count(), 5);
    assert_eq!(
        crate::moves::service_data_rows(&app, &c.org, "calling").await,
        before,
        "phone numbers and the rest of the service data kept"
    );
    for u in &c.users[0..5] {
        let l = app
            .get(&format!("/api/v1/orgs/{}/users/{u}/licenses", c.org), &app.admin)
            .await
            .ok();
        assert_eq!(l["items"][0]["subscription"], c.b.as_str());
        assert!(l["items"][0]["properties"]["phone_number"].as_str().unwrap().starts_with("+46812"));
    }
    // The jobs list tells the preview from the import (the list reads each
    // request without its users).
    let jobs = page_of(&app, &b, &s, &format!("/ui/orgs/{}/jobs", c.org))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(jobs.matches("Import users and licenses (preview)").count(), 1, "{jobs}");
    assert_eq!(jobs.matches("Import users and licenses").count(), 2);
    let listed = app.get(&format!("/api/v1/orgs/{}/jobs", c.org), &app.admin).await.ok();
    let previews: Vec<bool> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["dry_run"].as_bool().unwrap())
        .collect();
    assert_eq!(previews, [false, true], "newest first: the applied job, then its preview");
    // Applying a preview twice, or a job that was no preview, is refused.
    let r = post_form(&app, &b, &s, &format!("{applied}/apply"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

async fn templates_created_edited_and_given_to_existing_users(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let ids = many_users(&app, &w.org, "t", "t.example", 12, None).await;
    // One already holds meetings.
    app.post(
        &format!("/api/v1/orgs/{}/users/{}/licenses", w.org, ids[0]),
        &app.admin,
        json!({ "add": [{ "product": "messaging" }] }),
    )
    .await
    .ok();
    make_admin_as(&app, "boss@customer.example", Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let b = browser();
    let s = sign_in(&app, &b, "boss@customer.example").await;
    let list = format!("/ui/orgs/{}/templates", w.org);
    let html = page_of(&app, &b, &s, &list).await.text().await.unwrap();
    assert!(html.contains("<h1>License templates</h1>") && html.contains("Create template"));
    let csrf = csrf_field(&html);
    // Refused (no product ticked): the typed name is kept.
    let r = post_form(
        &app,
        &b,
        &s,
        &list,
        &[("csrf", &csrf), ("name", "Everyone"), ("scope", "org"), ("enabled", "1")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("value=\"Everyone\""));
    let meetings_any = "meetings\t".to_string();
    let r = post_form(
        &app,
        &b,
        &s,
        &list,
        &[("csrf", &csrf), ("name", "Everyone"), ("scope", "org"), ("license", &meetings_any)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let api = app.get(&format!("/api/v1/orgs/{}/license-templates", w.org), &app.admin).await.ok();
    let tpl = api["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(api["items"][0]["enabled"], false, "the box was not ticked");
    assert_eq!(api["items"][0]["licenses"], json!([{ "product": "meetings" }]));
    // Edit: enable it, meetings on the world's subscription.
    let edit = format!("{list}/{tpl}");
    let html = page_of(&app, &b, &s, &edit).await.text().await.unwrap();
    assert!(html.contains("<h1>Edit license template</h1>"));
    let etag = html
        .split("name=\"etag\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let on_sub = format!("meetings\t{}", w.sub);
    let r = post_form(
        &app,
        &b,
        &s,
        &edit,
        &[
            ("csrf", &csrf),
            ("etag", &etag),
            ("name", "Everyone"),
            ("scope", "org"),
            ("enabled", "1"),
            ("license", &on_sub),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // A second save over the old version is refused: someone changed it meanwhile.
    let r = post_form(
        &app,
        &b,
        &s,
        &edit,
        &[
            ("csrf", &csrf),
            ("etag", &etag),
            ("name", "Stale"),
            ("scope", "org"),
            ("license", &on_sub),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let t = app
        .get(&format!("/api/v1/orgs/{}/license-templates/{tpl}", w.org), &app.admin)
        .await
        .ok();
    assert_eq!((t["name"].as_str(), t["enabled"].as_bool()), (Some("Everyone"), Some(true)));

    // Apply to existing users: preview first (nothing changes), then Apply.
    let before = app.snapshot().await;
    let apply = format!("{edit}/apply");
    let r = post_form(&app, &b, &s, &apply, &[("csrf", &csrf), ("keep", "1"), ("run", "preview")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let preview = r.headers()[LOCATION].to_str().unwrap().to_string();
    let html = job_page_until_done(&app, &b, &s, &preview).await;
    assert!(html.contains("License template for existing users") && html.contains("Preview</dt><dd>yes"));
    assert_eq!(html.matches(&format!("add meetings on {}", w.sub)).count(), 10, "10 seats: {html}");
    assert_eq!(
        app.snapshot().await.iter().filter(|l| l.starts_with("assignment")).count(),
        before.iter().filter(|l| l.starts_with("assignment")).count(),
        "a preview assigns nothing"
    );
    let r = post_form(&app, &b, &s, &format!("{preview}/apply"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let applied = r.headers()[LOCATION].to_str().unwrap().to_string();
    let j = finished_job(&app, applied.trim_start_matches("/ui/jobs/")).await;
    assert_eq!(j["progress"]["succeeded"], 10, "{j}");
    let held = app
        .get(&format!("/api/v1/orgs/{}/users/{}/licenses", w.org, ids[0]), &app.admin)
        .await
        .ok();
    assert_eq!(held["items"].as_array().unwrap().len(), 2, "kept messaging, got meetings: {held}");
}

async fn queue_members_and_remove_from_all_queues(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "calling-standard", "calling").await;
    product(&app, "contact-centre", "contact-centre").await;
    let o = org(&app, "Support AB", None).await;
    subscription(
        &app,
        &o,
        json!([{ "product": "calling-standard", "quantity": 5 }, { "product": "contact-centre", "quantity": 5 }]),
    )
    .await;
    let agent = user(&app, &o, "agent@support.example").await;
    app.post(
        &format!("/api/v1/orgs/{o}/users/{agent}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "calling-standard" }, { "product": "contact-centre" }] }),
    )
    .await
    .ok();
    for name in ["Support", "Callbacks"] {
        let q = app
            .post(
                &format!("/api/v1/orgs/{o}/queues"),
                &app.admin,
                json!({ "name": name, "kind": "call", "product": "contact-centre" }),
            )
            .await
            .ok();
        app.post(
            &format!("/api/v1/orgs/{o}/queues/{}/members", q["id"].as_str().unwrap()),
            &app.admin,
            json!({ "user": agent }),
        )
        .await
        .ok();
    }
    make_admin_as(&app, "admin@support.example", Role::OrgAdmin, None, Some(&o)).await;
    let b = browser();
    let s = sign_in(&app, &b, "admin@support.example").await;
    let html = page_of(&app, &b, &s, &format!("/ui/orgs/{o}/queues")).await.text().await.unwrap();
    assert!(html.contains("<h1>Queues</h1>"));
    assert_eq!(html.matches("agent@support.example").count(), 2, "a member of both");
    // Remove the phone license: the contact centre stays billed, naming the queues.
    let edit = format!("/ui/orgs/{o}/users/{agent}/licenses/edit");
    let html = page_of(&app, &b, &s, &edit).await.text().await.unwrap();
    let csrf = csrf_field(&html);
    let keep_contact: Vec<(String, String)> = html
        .split("<input")
        .filter(|t| t.contains("contact-centre") && t.contains(" checked"))
        .filter_map(|t| {
            let name = t.split("name=\"").nth(1)?.split('"').next()?.to_string();
            let value = t.split("value=\"").nth(1)?.split('"').next()?.to_string();
            Some((name, value))
        })
        .collect();
    assert!(!keep_contact.is_empty(), "the contact centre's box: {html}");
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
    for (k, v) in &keep_contact {
        form.push((k, v));
    }
    let r = post_form(&app, &b, &s, &edit, &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(to.ends_with("?billed=1"), "{to}");
    let html = page_of(&app, &b, &s, &to).await.text().await.unwrap();
    assert!(
        html.contains("stays billed while agent@support.example is a member of Support, Callbacks")
            || html.contains("stays billed while agent@support.example is a member of Callbacks, Support"),
        "{html}"
    );
    // Remove from all queues: out of both, and the contact centre removed, in one step.
    let r = post_form(
        &app,
        &b,
        &s,
        &format!("/ui/orgs/{o}/users/{agent}/queues/leave"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let held = app.get(&format!("/api/v1/orgs/{o}/users/{agent}/licenses"), &app.admin).await.ok();
    assert_eq!(held["items"].as_array().unwrap().len(), 0, "{held}");
    let q = app.get(&format!("/api/v1/orgs/{o}/users/{agent}/queues"), &app.admin).await.ok();
    assert_eq!(q["items"].as_array().unwrap().len(), 0);
}
