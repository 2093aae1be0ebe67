//! The users CSV: export, import as a job, moves through it, and every kind
//! of malformed file refused with its reason and nothing changed.

use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;
use crate::moves::{assert_all_moved, calling_org, service_data_rows};

both_backends!(
    csv_move_keeps_service_data,
    csv_round_trip_changes_nothing,
    csv_import_creates_users_adds_and_removes,
    csv_from_spreadsheets_is_read,
    malformed_files_are_refused_and_change_nothing,
    hostile_files_get_small_answers_and_change_nothing,
);

pub async fn export_csv(app: &TestApp, org: &str) -> String {
    let r = app.get(&format!("/api/v1/orgs/{org}/users.csv"), &app.admin).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    r.body.as_str().expect("CSV text").to_string()
}

pub async fn import_csv(app: &TestApp, org: &str, query: &str, body: impl Into<Vec<u8>>) -> Resp {
    app.raw(
        reqwest::Method::POST,
        &format!("/api/v1/orgs/{org}/imports?{query}"),
        &app.admin,
        "text/csv",
        body.into(),
    )
    .await
}

/// Imports a file and waits for its job; returns (job, results).
pub async fn import_done(app: &TestApp, org: &str, query: &str, body: impl Into<Vec<u8>>) -> (Value, Vec<Value>) {
    let r = import_csv(app, org, query, body).await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    assert_eq!(r.body["job"]["kind"], "csv_import");
    let j = finished_job(app, r.body["job"]["id"].as_str().unwrap()).await;
    let results = job_results(app, j["id"].as_str().unwrap()).await;
    (j, results)
}

/// The column index of a heading in a CSV text's header.
fn column(csv: &str, heading: &str) -> usize {
    csv.lines()
        .next()
        .unwrap()
        .split(',')
        .position(|h| h == heading)
        .unwrap_or_else(|| panic!("no column {heading} in {csv}"))
}

/// The file with one column's cells replaced in every data row.
fn set_column(csv: &str, col: usize, value: &str) -> String {
    let mut out = String::new();
    for (i, line) in csv.lines().enumerate() {
        let mut cells: Vec<&str> = line.split(',').collect();
        if i > 0 {
            cells[col] = value;
        }
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

async fn csv_move_keeps_service_data(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 50).await;
    let before = service_data_rows(&app, &c.org, "calling").await;
    let csv = export_csv(&app, &c.org).await;
    let a = column(&csv, &format!("calling-professional [{}]", c.a));
    let b = column(&csv, &format!("calling-professional [{}]", c.b));
    let csv = set_column(&set_column(&csv, a, "FALSE"), b, "TRUE");
    // add_only: FALSE on A with TRUE on B of the same family is a move, allowed.
    let (dry, results) = import_done(&app, &c.org, "mode=add_only&dry_run=true", csv.clone()).await;
    assert_eq!(dry["state"], "succeeded", "{dry}");
    assert_eq!(results.len(), 50);
    assert!(
        results
            .iter()
            .all(|r| r["outcome"] == "ok" && r["changes"].as_array().unwrap().len() == 2),
        "{results:?}"
    );
    assert_eq!(results[0]["row"], 2, "rows are line numbers, the header is line 1");
    assert_eq!(results[0]["email"], "c0@calling.example");
    assert_eq!(
        service_data_rows(&app, &c.org, "calling").await,
        before,
        "a dry run changes nothing"
    );
    let (j, _) = import_done(&app, &c.org, "mode=add_only", csv).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["progress"]["succeeded"], 50);
    assert_all_moved(&app, &c, &before).await;
}

async fn csv_round_trip_changes_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 20).await;
    // A name a spreadsheet would run as a formula is escaped on export.
    let u = &c.users[3];
    app.patch(
        &format!("/api/v1/orgs/{}/users/{u}", c.org),
        &app.admin,
        json!({ "display_name": "=HYPERLINK(\"http://x\",\"y\")" }),
    )
    .await
    .ok();
    let csv = export_csv(&app, &c.org).await;
    // Item columns in product, then subscription id order.
    let (first, second) = if c.a < c.b { (&c.a, &c.b) } else { (&c.b, &c.a) };
    assert!(csv.starts_with(&format!(
        "email,display_name,kind,status,usage_location,calling-professional [{first}],calling-professional [{second}]\r\n"
    )));
    assert_eq!(csv.lines().count(), 21);
    let held = if c.a < c.b { "TRUE,FALSE" } else { "FALSE,TRUE" };
    assert!(
        csv.contains(&format!(
            "c3@calling.example,\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",internal,active,SE,{held}\r\n"
        )),
        "{csv}"
    );
    let state = license_state(&app).await;
    for query in ["mode=add_and_remove&dry_run=true", "mode=add_and_remove"] {
        let (j, results) = import_done(&app, &c.org, query, csv.clone()).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(results.len(), 20, "one result per row");
        assert!(
            results.iter().all(|r| r["outcome"] == "skipped" && r["changes"] == json!([])),
            "{results:?}"
        );
    }
    assert_eq!(license_state(&app).await, state, "zero changes");
    let users = app.get(&format!("/api/v1/orgs/{}/users/{u}", c.org), &app.admin).await.ok();
    assert_eq!(users["display_name"], "=HYPERLINK(\"http://x\",\"y\")");
}

async fn csv_import_creates_users_adds_and_removes(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 3).await;
    let (a, b) = (format!("calling-professional [{}]", c.a), format!("calling-professional [{}]", c.b));
    let file = format!(
        "email,display_name,usage_location,{a},{b}\n\
         c0@calling.example,,,FALSE,\n\
         new1@calling.example,New One,SE,,TRUE\n\
         new2@calling.example,New Two,,TRUE,TRUE\n\
         C1@Calling.Example,,,,\n"
    );
    // add_only: c0's FALSE alone is ignored; new1 is created with B; new2
    // asks for the same product twice, so its row fails and it is not created.
    let (j, r) = import_done(&app, &c.org, "mode=add_only", file.clone()).await;
    assert_eq!(j["state"], "completed_with_errors", "{j}");
    assert_eq!(
        (j["progress"]["succeeded"].as_i64(), j["progress"]["failed"].as_i64()),
        (Some(3), Some(1))
    );
    assert_eq!((r[0]["row"].as_i64(), r[0]["outcome"].as_str()), (Some(2), Some("skipped")));
    assert_eq!((r[1]["row"].as_i64(), r[1]["outcome"].as_str()), (Some(3), Some("ok")));
    assert!(r[1]["message"].as_str().unwrap().starts_with("Created new1@calling.example"));
    assert_eq!((r[2]["row"].as_i64(), r[2]["outcome"].as_str()), (Some(4), Some("error")));
    assert!(r[2]["message"].as_str().unwrap().contains("calling-professional"), "{:?}", r[2]);
    assert_eq!((r[3]["row"].as_i64(), r[3]["outcome"].as_str()), (Some(5), Some("skipped")));
    let found = app
        .get(&format!("/api/v1/orgs/{}/users?email=new1@calling.example", c.org), &app.admin)
        .await
        .ok();
    let new1 = found["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(found["items"][0]["display_name"], "New One");
    let l = app
        .get(&format!("/api/v1/orgs/{}/users/{new1}/licenses", c.org), &app.admin)
        .await
        .ok();
    assert_eq!(l["items"][0]["subscription"], c.b.as_str());
    let none = app
        .get(&format!("/api/v1/orgs/{}/users?email=new2@calling.example", c.org), &app.admin)
        .await
        .ok();
    assert_eq!(none["items"], json!([]), "a failed row creates no user");
    // add_and_remove: c0's FALSE removes; its data enters retention.
    let (j, r) = import_done(&app, &c.org, "mode=add_and_remove", file).await;
    assert_eq!(r[0]["outcome"], "ok", "{j} {r:?}");
    assert_eq!(r[0]["changes"][0]["action"], "remove");
    let (_, retain) = &service_data_rows(&app, &c.org, "calling").await[&c.users[0]];
    assert!(retain.is_some(), "removed through the CSV: retained");
    // A TRUE on a suspended subscription: that row is refused with its reason.
    app.patch(
        &format!("/api/v1/orgs/{}/subscriptions/{}", c.org, c.b),
        &app.admin,
        json!({ "suspended": true }),
    )
    .await
    .ok();
    let (_, r) = import_done(
        &app,
        &c.org,
        "mode=add_only",
        format!("email,usage_location,{b}\nfresh@calling.example,SE,TRUE\n"),
    )
    .await;
    assert_eq!(
        (r[0]["outcome"].as_str(), r[0]["code"].as_str()),
        (Some("error"), Some("subscription_not_active")),
        "{r:?}"
    );
    // Seats run out part-way: the rows past the last seat fail, the others apply.
    app.patch(
        &format!("/api/v1/orgs/{}/subscriptions/{}", c.org, c.b),
        &app.admin,
        json!({ "suspended": false }),
    )
    .await
    .ok();
    let many: String = (0..4).map(|i| format!("more{i}@calling.example,SE,TRUE\n")).collect();
    let (j, r) = import_done(&app, &c.org, "mode=add_only", format!("email,usage_location,{b}\n{many}")).await;
    // B has 3 seats and new1 holds one: two more fit.
    assert_eq!(
        (j["progress"]["succeeded"].as_i64(), j["progress"]["failed"].as_i64()),
        (Some(2), Some(2)),
        "{r:?}"
    );
    assert_eq!(r[3]["code"], "seats_exhausted");
    assert_eq!(app.mismatches().await, 0);
}

async fn csv_from_spreadsheets_is_read(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 2).await;
    let b = format!("calling-professional [{}]", c.b);
    let a = format!("calling-professional [{}]", c.a);
    // BOM, CRLF, quoted cells with commas and doubled quotes, True/false,
    // trailing empty columns, a blank line, and an escaped formula.
    let mut file = vec![0xEF, 0xBB, 0xBF];
    file.extend_from_slice(
        format!(
            "Email,display_name,usage_location,{a},\"{b}\",,\r\n\
             c0@calling.example,\"Doe, Jane\",,false,True,,\r\n\
             \r\n\
             quoted@calling.example,\"Line \"\"one\"\", two\",SE,,TRUE,,\r\n\
             formula@calling.example,'=1+2,SE,,,,\r\n"
        )
        .as_bytes(),
    );
    // A quoted cell over two lines is read as one cell, and the lines after
    // it keep their numbers; a line break is no part of a name, so the file
    // is refused naming both of its bad lines, and nothing changes.
    let before = app.snapshot().await;
    let multi_line = "email,display_name\r\nm@calling.example,\"Line one\r\nline two\"\r\nnot-an-email,Bo\r\n";
    let refused = import_csv(&app, &c.org, "mode=add_only", multi_line).await;
    refused.problem(422, "csv_row_invalid");
    let rows: Vec<i64> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["row"].as_i64().unwrap())
        .collect();
    assert_eq!(rows, vec![2, 4], "{}", refused.body);
    assert_eq!(app.snapshot().await, before);

    let (j, r) = import_done(&app, &c.org, "mode=add_only", file).await;
    assert_eq!(j["state"], "succeeded", "{j} {r:?}");
    assert_eq!(r.len(), 3);
    assert_eq!(r.iter().map(|x| x["row"].as_i64().unwrap()).collect::<Vec<_>>(), vec![2, 4, 5]);
    let q = app
        .get(&format!("/api/v1/orgs/{}/users?email=quoted@calling.example", c.org), &app.admin)
        .await
        .ok();
    assert_eq!(q["items"][0]["display_name"], "Line \"one\", two");
    let f = app
        .get(&format!("/api/v1/orgs/{}/users?email=formula@calling.example", c.org), &app.admin)
        .await
        .ok();
    assert_eq!(f["items"][0]["display_name"], "=1+2", "the export escape is taken off");
    let l = app
        .get(&format!("/api/v1/orgs/{}/users/{}/licenses", c.org, c.users[0]), &app.admin)
        .await
        .ok();
    assert_eq!(l["items"][0]["subscription"], c.b.as_str(), "moved");
}

async fn malformed_files_are_refused_and_change_nothing(backend: Backend) {
    let app = spawn_with_limits(
        backend,
        allot_server::Limits {
            max_import_bytes: 10_000,
            ..Default::default()
        },
    )
    .await;
    let c = calling_org(&app, 2).await;
    let a = format!("calling-professional [{}]", c.a);
    let state = app.snapshot().await;
    let refused = |r: Resp, status: u16, code: &str| {
        r.problem(status, code);
        r.body
    };
    // Header: unknown and missing columns, each named.
    let e = refused(
        import_csv(
            &app,
            &c.org,
            "",
            format!("mail,{a},calling-professional [sub_nope],Phone\nx@y.se,TRUE,,\n"),
        )
        .await,
        422,
        "csv_header_invalid",
    );
    // The detail names the first and the count; the errors name each.
    let detail = e["detail"].as_str().unwrap();
    assert!(detail.contains("4 problems") && detail.contains("\"mail\""), "{detail}");
    let messages: Vec<&str> = e["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "{messages:?}");
    for named in ["\"mail\"", "sub_nope", "\"Phone\"", "email column is missing"] {
        assert!(messages.iter().any(|m| m.contains(named)), "{named} in {messages:?}");
    }
    // Bad cells, each with its line.
    let e = refused(
        import_csv(
            &app,
            &c.org,
            "",
            format!("email,{a}\nok@calling.example,TRUE\nnot-an-email,TRUE\nz@calling.example,yes\n"),
        )
        .await,
        422,
        "csv_row_invalid",
    );
    let rows: Vec<i64> = e["errors"].as_array().unwrap().iter().map(|v| v["row"].as_i64().unwrap()).collect();
    assert_eq!(rows, vec![3, 4], "{e}");
    assert!(e["errors"][1]["message"].as_str().unwrap().contains("neither TRUE nor FALSE"));
    // Duplicate emails, case-insensitively: both lines named.
    let e = refused(
        import_csv(
            &app,
            &c.org,
            "",
            format!("email,{a}\nd@calling.example,TRUE\nx@calling.example,\nD@Calling.example,FALSE\n"),
        )
        .await,
        422,
        "csv_row_invalid",
    );
    assert!(e["detail"].as_str().unwrap().contains("Lines 2 and 4"), "{e}");
    // Over the size limit: 413 stating it.
    let big = format!("email\n{}", "someone@calling.example\n".repeat(500));
    let e = refused(import_csv(&app, &c.org, "", big).await, 413, "payload_too_large");
    assert!(e["detail"].as_str().unwrap().contains("10000 bytes"), "{e}");
    // Empty, header only, not UTF-8, wrong content type, bad query.
    refused(import_csv(&app, &c.org, "", "").await, 422, "csv_header_invalid");
    refused(import_csv(&app, &c.org, "", "email\n").await, 422, "csv_row_invalid");
    refused(
        import_csv(&app, &c.org, "", b"email\n\xff\xfe@x.se\n".to_vec()).await,
        422,
        "csv_row_invalid",
    );
    let r = app
        .raw(
            reqwest::Method::POST,
            &format!("/api/v1/orgs/{}/imports", c.org),
            &app.admin,
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    // A body that is not CSV is of a media type the import does not take.
    refused(r, 415, "unsupported_media_type");
    refused(
        import_csv(&app, &c.org, "mode=replace", "email\nx@calling.example\n").await,
        422,
        "validation_failed",
    );
    // Another tenant's org: 404 whatever the file.
    let stranger = org(&app, "Stranger AB", None).await;
    let token = app.token(allot_domain::access::Role::OrgSuperAdmin, None, Some(&stranger)).await;
    let r = app
        .raw(
            reqwest::Method::POST,
            &format!("/api/v1/orgs/{}/imports", c.org),
            &token,
            "text/csv",
            b"email\n".to_vec(),
        )
        .await;
    refused(r, 404, "not_found");
    let r = app.get(&format!("/api/v1/orgs/{}/users.csv", c.org), &token).await;
    refused(r, 404, "not_found");
    let mut after = app.snapshot().await;
    // The stranger org, its token and the org's creation event are the only
    // new rows (and so the row counts of their tables differ).
    let ours = |l: &String| {
        let table = l.split([' ', ':']).next().unwrap_or("");
        let counted = l.starts_with(&format!("{table}: "));
        let theirs = l.contains(&stranger) || l.contains("\"Stranger AB\"");
        !(matches!(table, "orgs" | "api_tokens" | "audit_events") && (counted || theirs))
    };
    after.retain(ours);
    let mut before = state;
    before.retain(ours);
    assert_eq!(after, before, "refused files change nothing");
}

/// A small upload never makes a huge answer: a header of 100,000 unknown
/// columns, a megabyte cell, and a quote left open (which a CSV reader would
/// take as one cell to the end of the file) are each refused in a few
/// kilobytes, naming the first problems and the count, changing nothing.
async fn hostile_files_get_small_answers_and_change_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let c = calling_org(&app, 2).await;
    let before = app.snapshot().await;
    let mut header = String::from("email");
    for i in 0..100_000 {
        header.push_str(&format!(
            ",unknown column number {i:06} with a long and useless heading text that nobody needs"
        ));
    }
    header.push_str("\nx@calling.example\n");
    assert!(header.len() > 7_000_000, "{}", header.len());
    let r = import_csv(&app, &c.org, "", header).await;
    r.problem(422, "csv_header_invalid");
    let size = r.body.to_string().len();
    assert!(size < 64 * 1024, "a {size}-byte answer");
    assert!(
        r.body["detail"].as_str().unwrap().contains("100001 columns"),
        "{}",
        r.body["detail"]
    );
    // Under the column cap, every unknown column is a problem: 100 listed, all counted.
    let mut header = String::from("email");
    for i in 0..9_000 {
        header.push_str(&format!(
            ",unknown column number {i:06} with a long and useless heading text that nobody needs"
        ));
    }
    header.push_str("\nx@calling.example\n");
    let r = import_csv(&app, &c.org, "", header).await;
    r.problem(422, "csv_header_invalid");
    let size = r.body.to_string().len();
    assert!(size < 64 * 1024, "a {size}-byte answer");
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 100);
    assert!(r.body["detail"].as_str().unwrap().contains("9000 problems"), "{}", r.body["detail"]);

    let huge_cell = format!("email,display_name\n{}@calling.example,x\n", "a".repeat(1_000_000));
    let r = import_csv(&app, &c.org, "", huge_cell).await;
    r.problem(422, "csv_row_invalid");
    let size = r.body.to_string().len();
    assert!(size < 4 * 1024, "a {size}-byte answer: {}", r.body);

    let open_quote = "email,display_name\na@calling.example,Anna\nb@calling.example,\"Bo\nc@calling.example,Cy\nd@calling.example,Di\ne@calling.example,Ed\n";
    let r = import_csv(&app, &c.org, "", open_quote).await;
    r.problem(422, "csv_row_invalid");
    assert_eq!(r.body["errors"][0]["row"], 3, "{}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("never closed"), "{}", r.body);
    assert_eq!(app.snapshot().await, before);
}
