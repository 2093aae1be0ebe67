//! Bounded random input against the CSV import and the JSON bodies of the
//! licence change and the bulk job: whatever arrives, no panic, no 5xx, an
//! answer of bounded size, and nothing written when the answer is a
//! refusal. Seeded, so a failure names the input that caused it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(random_csv_uploads, random_json_bodies);

/// The largest answer any refusal may have (100 listed problems of a few
/// hundred bytes each, and a detail).
const MAX_ANSWER: usize = 64 * 1024;

const CSV_PIECES: &[&str] = &[
    "email",
    "display_name",
    "kind",
    "status",
    "usage_location",
    ",",
    ",",
    "\n",
    "\r\n",
    "\"",
    "\"\"",
    "TRUE",
    "FALSE",
    "true",
    "yes",
    "a@fuzz.example",
    "b@fuzz.example",
    "not-an-email",
    "internal",
    "external",
    "active",
    "SE",
    "se",
    "'=1+2",
    "\u{feff}",
    "\u{0}",
    "\u{202e}",
    "\t",
    " ",
    "calling-professional [",
    "]",
    "x",
    "Åsa",
];

/// A valid file of a few rows with up to four random edits: pieces of CSV
/// (quotes, separators, headings, hostile characters) or bytes inserted,
/// runs of a cell's character, or the header dropped.
fn random_csv(rng: &mut StdRng, item_heading: &str) -> Vec<u8> {
    let mut out: Vec<u8> = format!("email,display_name,{item_heading}\n").into_bytes();
    for i in 0..rng.gen_range(1..6) {
        out.extend_from_slice(format!("u{}@fuzz.example,Name {i},TRUE\n", rng.gen_range(0..20)).as_bytes());
    }
    if rng.gen_bool(0.1) {
        out.drain(..out.iter().position(|b| *b == b'\n').unwrap_or(0));
    }
    for _ in 0..rng.gen_range(0..5) {
        let at = rng.gen_range(0..=out.len());
        let piece: Vec<u8> = match rng.gen_range(0..10) {
            0 => vec![rng.gen()],
            1 => std::iter::repeat_n(b'a', rng.gen_range(0..3000)).collect(),
            2 => item_heading.as_bytes().to_vec(),
            _ => CSV_PIECES[rng.gen_range(0..CSV_PIECES.len())].as_bytes().to_vec(),
        };
        out.splice(at..at, piece);
    }
    out
}

const KEYS: &[&str] = &[
    "add",
    "remove",
    "product",
    "subscription",
    "properties",
    "users",
    "filter",
    "move",
    "mode",
    "dry_run",
    "email_domain",
    "group",
    "has_product",
    "from_subscription",
    "to_subscription",
    "phone_number",
    "extension",
    "location",
    "site",
    "account_type",
    "per_user",
    "all_or_nothing",
    "meetings",
    "calling-professional",
    "messaging",
    "",
];

fn random_value(rng: &mut StdRng, depth: u32, ids: &[String]) -> Value {
    match rng.gen_range(0..if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen_range(-3i64..100_000_000_000)),
        3 => json!(rng.gen::<f64>() * 1e6),
        4 => json!(KEYS[rng.gen_range(0..KEYS.len())]),
        5 => json!(ids[rng.gen_range(0..ids.len())]),
        6 | 7 => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.gen_range(0..5) {
                m.insert(KEYS[rng.gen_range(0..KEYS.len())].to_string(), random_value(rng, depth + 1, ids));
            }
            Value::Object(m)
        }
        _ => Value::Array((0..rng.gen_range(0..4)).map(|_| random_value(rng, depth + 1, ids)).collect()),
    }
}

/// A body near a valid one: a valid change or job with parts replaced by
/// random values, or its text with random bytes changed.
fn random_body(rng: &mut StdRng, valid: &Value, ids: &[String]) -> Vec<u8> {
    let mut v = valid.clone();
    if let Value::Object(m) = &mut v {
        for _ in 0..rng.gen_range(0..3) {
            let key = KEYS[rng.gen_range(0..KEYS.len())].to_string();
            m.insert(key, random_value(rng, 1, ids));
        }
    }
    if rng.gen_bool(0.3) {
        v = random_value(rng, 0, ids);
    }
    let mut text = v.to_string().into_bytes();
    if rng.gen_bool(0.25) && !text.is_empty() {
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..text.len());
            text[i] = rng.gen();
        }
    }
    text
}

/// Sends `body`, checks the answer, and returns whether it was accepted.
async fn check(app: &TestApp, what: &str, path: &str, content_type: &str, body: Vec<u8>, before: &[String]) -> bool {
    let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let r = app.raw(Method::POST, path, &app.admin, content_type, body).await;
    let status = r.status.as_u16();
    assert!(status < 500, "{what}: {status} for {shown:?}: {}", r.body);
    let size = r.body.to_string().len();
    assert!(size <= MAX_ANSWER, "{what}: a {size}-byte answer for {shown:?}");
    if status >= 400 {
        assert_eq!(
            app.snapshot().await,
            before,
            "{what}: refused ({status}) but something was written, for {shown:?}"
        );
        false
    } else {
        if let Some(job) = r.body["job"]["id"].as_str() {
            finished_job(app, job).await;
        }
        true
    }
}

async fn random_csv_uploads(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let heading = format!("meetings [{}]", w.sub);
    let mut rng = StdRng::seed_from_u64(0xc5f + backend as u64);
    let mut before = app.snapshot().await;
    let mut accepted = 0;
    for case in 0..150 {
        let body = random_csv(&mut rng, &heading);
        let mode = ["mode=add_only", "mode=add_and_remove", "mode=add_only&dry_run=true"][case % 3];
        let path = format!("/api/v1/orgs/{}/imports?{mode}", w.org);
        if check(&app, &format!("CSV case {case}"), &path, "text/csv", body, &before).await {
            accepted += 1;
            before = app.snapshot().await;
        }
    }
    // The generator reaches both sides.
    assert!(accepted > 0 && accepted < 150, "{accepted} of 150 accepted");
}

async fn random_json_bodies(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let users = many_users(&app, &w.org, "fz", "fuzz.example", 5, Some("SE")).await;
    let mut ids = users.clone();
    ids.push(w.sub.clone());
    ids.push("sub_nope".into());
    let mut rng = StdRng::seed_from_u64(0x15 + backend as u64);
    let mut before = app.snapshot().await;
    let mut accepted = 0;
    for case in 0..200 {
        let u = &users[rng.gen_range(0..users.len())];
        let (what, path, valid) = if case % 2 == 0 {
            (
                "licence change",
                format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
                json!({ "add": [{ "product": "meetings", "subscription": w.sub }], "remove": [] }),
            )
        } else {
            (
                "bulk job",
                format!("/api/v1/orgs/{}/license-jobs", w.org),
                json!({ "users": [u], "add": [{ "product": "messaging" }], "mode": "per_user" }),
            )
        };
        let body = random_body(&mut rng, &valid, &ids);
        if check(&app, &format!("{what} case {case}"), &path, "application/json", body, &before).await {
            accepted += 1;
            before = app.snapshot().await;
        }
    }
    assert!(accepted > 0 && accepted < 200, "{accepted} of 200 accepted");
    assert_eq!(app.mismatches().await, 0);
}
