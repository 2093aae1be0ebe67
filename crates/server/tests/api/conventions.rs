//! The HTTP conventions every operation follows: the committed OpenAPI
//! document is the served one and describes every operation completely;
//! `ETag` / `If-Match` (412); per-token rate limits (429 with
//! `Retry-After`); request ids in headers, problem documents and the audit
//! log; a 5xx that tells the caller only the request id; and the metrics
//! page in the Prometheus text format.

use std::collections::{BTreeMap, HashSet};

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(if_match_guards_every_update, request_ids_follow_the_request);

/// The committed `openapi.json` at the repository's root.
fn committed_document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");
    let text = std::fs::read_to_string(path).expect("openapi.json is committed at the repository's root");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

#[tokio::test]
async fn the_served_document_is_the_committed_one_and_complete() {
    let app = spawn(Backend::Sqlite).await;
    let served = app.call(Method::GET, "/api/openapi.json", None, None).await.ok();
    assert!(
        served == committed_document(),
        "the served OpenAPI document differs from openapi.json: run `cargo run -q -- openapi > openapi.json`"
    );
    let doc = served;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({ "type": "http", "scheme": "bearer" })
    );
    let mut ids = HashSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let in_path: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(name, _)| name))
            .collect();
        for (method, op) in item.as_object().expect("operations") {
            operations += 1;
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                id.contains('_') && id.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{id}: operationIds are verb_noun"
            );
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in &in_path {
                assert!(
                    params
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == *name && p["required"] == true),
                    "{id}: path parameter {name} is not described"
                );
            }
            for p in &params {
                assert!(p.get("schema").is_some(), "{id}: parameter {} has no schema", p["name"]);
            }
            if let Some(body) = op.get("requestBody") {
                for (media, content) in body["content"].as_object().expect("request content") {
                    assert!(content.get("schema").is_some(), "{id}: request body {media} has no schema");
                }
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{id} takes a body but does not describe {status}"
                    );
                }
            }
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{id} describes no success");
            // OFREP is a protocol of its own: its 400 and 404 answers are
            // OFREP's error documents (its providers read them), and its bulk
            // evaluation answers 304 without a body.
            let ofrep = path.starts_with("/ofrep/");
            for (status, r) in responses {
                let content = r["content"].as_object();
                if ofrep && matches!(status.as_str(), "400" | "404") {
                    let schema = &r["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/OfrepFailure",
                        "{id}: {status} must be an OFREP error"
                    );
                } else if status.as_str() >= "400" {
                    let schema = &r["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Problem",
                        "{id}: {status} must be a problem document"
                    );
                } else if ofrep && status == "304" {
                    assert!(content.is_none(), "{id}: 304 has no body");
                } else if status != "204" {
                    let content = content.unwrap_or_else(|| panic!("{id}: {status} has no content"));
                    for (media, c) in content {
                        assert!(c.get("schema").is_some(), "{id}: {status} {media} has no schema");
                    }
                }
            }
            let public = op["security"] == json!([{}]);
            if !public {
                for status in ["401", "403", "429"] {
                    assert!(responses.contains_key(status), "{id} needs a token but does not describe {status}");
                }
            }
        }
    }
    assert!(operations >= 64, "{operations} operations");
    // Enums are enums in the document, not free strings.
    let schemas = &doc["components"]["schemas"];
    for (name, values) in [
        (
            "JobState",
            vec!["queued", "running", "succeeded", "completed_with_errors", "failed", "cancelled"],
        ),
        (
            "JobKind",
            vec!["license_change", "subscription_cancel", "csv_import", "template_apply"],
        ),
        ("UserKind", vec!["internal", "external"]),
        ("UserStatus", vec!["active", "pending", "inactive"]),
        (
            "ProvisioningStatus",
            vec![
                "provisioned",
                "provisioning",
                "manual_provider",
                "manual_partner",
                "awaiting_details",
                "cannot_provision",
            ],
        ),
        ("Role", vec!["provider_admin", "partner_admin", "org_read_only"]),
    ] {
        let listed: Vec<&str> = schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an enum: {}", schemas[name]))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for v in values {
            assert!(listed.contains(&v), "{name} lacks {v}");
        }
    }
}

/// Every `pattern` in `value` with where it stands.
fn patterns_in<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get("pattern") {
                found.push((at.clone(), p));
            }
            for (k, v) in map {
                patterns_in(v, format!("{at}/{k}"), found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                patterns_in(v, format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// utoipa takes a pattern only as a literal, so the free-text patterns are
/// written out at each field; each copy must still be the one the server
/// checks by (`allot_domain::types::check_text`, described by the two
/// constants), or clients would be told a different rule than is applied.
#[test]
fn every_free_text_pattern_is_the_shared_one() {
    let doc = committed_document();
    let mut found = Vec::new();
    patterns_in(&doc, String::new(), &mut found);
    let free_text: Vec<_> = found
        .iter()
        .filter(|(_, p)| p.starts_with(r"^[^\x00-\x1f\x7f-\x9f\u200e"))
        .collect();
    assert!(free_text.len() >= 20, "only {} free-text patterns found", free_text.len());
    for (at, p) in free_text {
        assert!(
            *p == allot_server::app::TEXT_PATTERN || *p == allot_server::app::ANY_TEXT_PATTERN,
            "{at}: {p} is neither TEXT_PATTERN nor ANY_TEXT_PATTERN"
        );
    }
}

#[tokio::test]
async fn bodies_are_json_objects_in_json() {
    let app = spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let users = format!("/api/v1/orgs/{}/users", w.org);
    for (ct, body, status, code) in [
        ("application/json", &b"{\"email\": "[..], 400, "malformed_json"),
        ("application/json", &b"\xff\xfe"[..], 400, "malformed_json"),
        ("application/json", &b"[]"[..], 422, "validation_failed"),
        ("application/json", &b"\"anna@example.com\""[..], 422, "validation_failed"),
        (
            "text/plain",
            &b"{\"email\": \"anna@example.com\"}"[..],
            415,
            "unsupported_media_type",
        ),
        (
            "application/x-www-form-urlencoded",
            &b"email=anna%40example.com"[..],
            415,
            "unsupported_media_type",
        ),
    ] {
        let r = app.raw(Method::POST, &users, &app.admin, ct, body.to_vec()).await;
        r.problem(status, code);
        assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", r.body);
    }
    // A JSON body with a parameter in its media type, and a +json type, are JSON.
    app.raw(
        Method::POST,
        &users,
        &app.admin,
        "application/json; charset=utf-8",
        br#"{"email": "anna@example.com"}"#.to_vec(),
    )
    .await
    .ok();
    let listed = app.get(&users, &app.admin).await.ok();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "only the good request made a user: {listed}"
    );
    // An optional body may be absent or null, but not of another type.
    let cancel = format!("/api/v1/orgs/{}/subscriptions/{}/cancel", w.org, w.sub);
    app.raw(Method::POST, &cancel, &app.admin, "application/json", b"[]".to_vec())
        .await
        .problem(422, "validation_failed");
    app.raw(Method::POST, &cancel, &app.admin, "text/plain", b"{}".to_vec())
        .await
        .problem(415, "unsupported_media_type");
    let r = app
        .raw(Method::POST, &cancel, &app.admin, "application/json", b"null".to_vec())
        .await;
    assert_eq!(
        r.ok()["cancelled"],
        true,
        "null is no instruction: an empty subscription is cancelled"
    );
}

/// The current etag of a resource, from its `ETag` header (which must
/// agree with its `etag` field).
async fn etag_of(app: &TestApp, path: &str) -> String {
    let r = app.get(path, &app.admin).await;
    let header = r.headers["etag"].to_str().expect("ascii").to_string();
    let field = r.ok()["etag"].as_str().expect("etag field").to_string();
    assert_eq!(header, format!("\"{field}\""), "{path}");
    field
}

async fn if_match_guards_every_update(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    let tpl = app
        .post(
            &format!("/api/v1/orgs/{}/license-templates", w.org),
            &app.admin,
            json!({ "name": "Starter", "scope": "org", "enabled": false, "licenses": [{ "product": "meetings" }] }),
        )
        .await
        .ok()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let cases: Vec<(String, Value)> = vec![
        ("/api/v1/products/meetings".to_string(), json!({ "name": "Meetings Plus" })),
        (format!("/api/v1/orgs/{}", w.org), json!({ "name": "Customer A, renamed" })),
        (format!("/api/v1/orgs/{}/users/{u}", w.org), json!({ "display_name": "Anna" })),
        (
            format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub),
            json!({ "external_ref": "SO-9" }),
        ),
        (
            format!("/api/v1/orgs/{}/license-templates/{tpl}", w.org),
            json!({ "name": "Starter 2" }),
        ),
    ];
    for (path, change) in cases {
        let tag = etag_of(&app, &path).await;
        let before = app.snapshot().await;
        // A stale (or made-up) etag: 412, and nothing changed.
        for stale in ["\"0123456789abcdef0123456789abcdef\"", "W/\"nope\"", "\"\""] {
            let r = app
                .send(Method::PATCH, &path, Some(&app.admin), &[("if-match", stale)], Some(change.clone()))
                .await;
            r.problem(412, "precondition_failed");
            assert!(
                r.body["detail"].as_str().unwrap().contains(&tag),
                "names the current etag: {}",
                r.body
            );
        }
        assert_eq!(app.snapshot().await, before, "{path}: a refused update changed something");
        // The current one (quoted, as ETag gives it), or `*`: applied, and the etag moves on.
        let quoted = format!("\"{tag}\"");
        let r = app
            .send(
                Method::PATCH,
                &path,
                Some(&app.admin),
                &[("if-match", &quoted)],
                Some(change.clone()),
            )
            .await;
        let new_tag = r.headers["etag"].to_str().unwrap().to_string();
        let body = r.ok();
        assert_ne!(body["etag"].as_str().unwrap(), tag, "{path}: the etag changes with the resource");
        assert_eq!(new_tag, format!("\"{}\"", body["etag"].as_str().unwrap()));
        // The old etag is stale now.
        app.send(
            Method::PATCH,
            &path,
            Some(&app.admin),
            &[("if-match", &quoted)],
            Some(change.clone()),
        )
        .await
        .problem(412, "precondition_failed");
        app.send(Method::PATCH, &path, Some(&app.admin), &[("if-match", "*")], Some(change))
            .await
            .ok();
    }
    // Taking a seat does not change the subscription's etag (only its own
    // facts do), so an admin's edit is not refused because users got licences.
    let sub_path = format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub);
    let tag = etag_of(&app, &sub_path).await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    assert_eq!(etag_of(&app, &sub_path).await, tag);
    // Deleting with a stale etag keeps the user.
    let user_path = format!("/api/v1/orgs/{}/users/{u}", w.org);
    app.send(Method::DELETE, &user_path, Some(&app.admin), &[("if-match", "\"stale\"")], None)
        .await
        .problem(412, "precondition_failed");
    app.get(&user_path, &app.admin).await.ok();
    let tag = etag_of(&app, &user_path).await;
    let r = app
        .send(
            Method::DELETE,
            &user_path,
            Some(&app.admin),
            &[("if-match", &format!("\"{tag}\""))],
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 204);
}

#[tokio::test]
async fn a_token_over_its_rate_is_told_when_to_come_back() {
    let config = allot_server::Config {
        rate_limit: allot_server::config::RateLimit {
            per_second: 0.5,
            burst: 3.0,
        },
        ..Default::default()
    };
    let app = spawn_with_config(Backend::Sqlite, config).await;
    for _ in 0..3 {
        app.get("/api/v1/orgs", &app.admin).await.ok();
    }
    let r = app.get("/api/v1/orgs", &app.admin).await;
    r.problem(429, "rate_limited");
    assert_eq!(
        r.headers["retry-after"], "2",
        "at half a request a second, the next is allowed in 2 s"
    );
    // Another token has its own budget; the health check needs none.
    let other = app.token(allot_domain::access::Role::ProviderAdmin, None, None).await;
    app.get("/api/v1/orgs", &other).await.ok();
    assert_eq!(app.call(Method::GET, "/healthz", None, None).await.status.as_u16(), 200);
    // With the default rate, nobody meets it.
    let app = spawn(Backend::Sqlite).await;
    for _ in 0..200 {
        app.get("/api/v1/products", &app.admin).await.ok();
    }
}

async fn request_ids_follow_the_request(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let users = format!("/api/v1/orgs/{}/users", w.org);
    // A new one when the caller sends none.
    let r = app.get(&users, &app.admin).await;
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(id.starts_with("req_"), "{id}");
    // The caller's, when sane; it reaches the audit log.
    let r = app
        .send(
            Method::POST,
            &users,
            Some(&app.admin),
            &[("x-request-id", "client-42.a_b")],
            Some(json!({ "email": "anna@example.com" })),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "client-42.a_b");
    r.ok();
    let events = app
        .get(&format!("/api/v1/orgs/{}/audit-events?action=user.create", w.org), &app.admin)
        .await
        .ok();
    assert_eq!(events["items"][0]["request_id"], "client-42.a_b");
    // Not when it could pass for Allot's own, or is not sane at all.
    for insane in ["req_spoofed", "has space", "x".repeat(101).as_str(), "job:1"] {
        let r = app
            .send(Method::GET, &users, Some(&app.admin), &[("x-request-id", insane)], None)
            .await;
        let got = r.headers["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(got, insane);
        assert!(got.starts_with("req_"));
    }
    // Problem documents repeat it.
    let r = app
        .send(
            Method::GET,
            &format!("/api/v1/orgs/{}/users/usr_nope", w.org),
            Some(&app.admin),
            &[("x-request-id", "trace-7")],
            None,
        )
        .await;
    r.problem(404, "not_found");
    assert_eq!(r.body["request_id"], "trace-7");
    assert_eq!(r.headers["x-request-id"], "trace-7");
    let r = app.call(Method::GET, "/api/v1/orgs", None, None).await;
    r.problem(401, "unauthenticated");
    assert_eq!(r.body["request_id"], r.headers["x-request-id"].to_str().unwrap());
}

#[tokio::test]
async fn a_server_error_tells_only_the_request_id() {
    let app = spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    // Break the database under the server: the audit log's table goes.
    app.store.raw_execute("DROP TABLE audit_events").await.expect("drop");
    let r = app
        .send(
            Method::POST,
            &format!("/api/v1/orgs/{}/users", w.org),
            Some(&app.admin),
            &[("x-request-id", "broken-1")],
            Some(json!({ "email": "anna@example.com" })),
        )
        .await;
    r.problem(500, "internal");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("broken-1"), "{detail}");
    assert!(
        !detail.to_lowercase().contains("audit") && !detail.contains("table"),
        "no cause leaks: {detail}"
    );
    assert_eq!(r.body["errors"], json!([]));
    assert_eq!(r.body["request_id"], "broken-1");
}

/// Checks a metrics page is Prometheus text: `# HELP`/`# TYPE` lines, then
/// samples `name{labels} value` of the declared families; histogram buckets
/// are cumulative and end at `+Inf` = `_count`. Returns the samples.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels: {line}");
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{line}");
                    assert!(!v.trim_end_matches('"').contains('\n'), "{line}");
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram")))
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample of an undeclared family: {line}");
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_are_prometheus_text_on_their_own_address() {
    let app = spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let users = format!("/api/v1/orgs/{}/users", w.org);
    for _ in 0..3 {
        app.get(&users, &app.admin).await.ok();
    }
    app.get(&format!("/api/v1/orgs/{}/users/usr_nope", w.org), &app.admin)
        .await
        .problem(404, "not_found");
    let u = user(&app, &w.org, "anna@example.com").await;
    app.post(
        &format!("/api/v1/orgs/{}/license-jobs", w.org),
        &app.admin,
        json!({ "users": [u], "add": [{ "product": "meetings" }], "dry_run": true }),
    )
    .await
    .ok();
    // The API's own port serves no metrics.
    app.call(Method::GET, "/metrics", None, None).await.problem(404, "not_found");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(allot_server::serve_metrics(app.app.clone(), listener));
    let resp = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let samples = parse_prometheus(&resp.text().await.expect("text"));
    let route = "/api/v1/orgs/{org}/users";
    assert!(samples[&format!("allot_http_requests_total{{route=\"{route}\",method=\"GET\",status=\"200\"}}")] >= 3.0);
    assert_eq!(
        samples[&"allot_http_requests_total{route=\"/api/v1/orgs/{org}/users/{user}\",method=\"GET\",status=\"404\"}".to_string()],
        1.0
    );
    let count = samples[&format!("allot_http_request_duration_seconds_count{{route=\"{route}\"}}")];
    assert_eq!(
        samples[&format!("allot_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}}")],
        count
    );
    // Buckets are cumulative: never fewer in a wider one.
    let prefix = format!("allot_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"");
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.trim_end_matches("\"}");
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert!(samples.contains_key("allot_writer_queue_depth"));
    assert_eq!(samples.get("allot_license_usage_dropped_total"), Some(&0.0));
    assert_eq!(samples.get("allot_entitlement_full_reads_total"), Some(&0.0));
    // The index holds what the test made (at least one user so far).
    assert!(
        samples.get("allot_entitlement_index{part=\"users\"}").is_some_and(|n| *n >= 1.0),
        "{samples:?}"
    );
    assert!(samples.get("allot_entitlement_index{part=\"bytes\"}").is_some_and(|n| *n > 0.0));
    assert!(samples
        .keys()
        .any(|k| k.starts_with("allot_db_pool_connections{pool=\"sqlite_readers\"")));
    let jobs: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("allot_jobs{kind=\"license_change\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(jobs, 1.0, "the job is counted in whatever state it is");
    assert!(samples.contains_key("allot_jobs_active_users{part=\"total\"}"));
}
