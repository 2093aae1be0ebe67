//! The `allot` binary as an operator runs it: real processes on a fresh database.

mod common;

use std::process::Command;

use common::{start, url_in, BIN};

#[tokio::test]
async fn demo_starts_on_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let (_demo, lines) = start(&["demo", "--database", db.to_str().unwrap(), "--listen", "127.0.0.1:0"], &[], |l| {
        l.starts_with("allot_")
    });
    let url = url_in(&lines, "running at");
    let token = lines.last().unwrap().clone();
    let client = reqwest::Client::new();
    let health: serde_json::Value = client.get(format!("{url}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let orgs = client
        .get(format!("{url}/api/v1/orgs?limit=1000"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(orgs.status().as_u16(), 200);
    let orgs: serde_json::Value = orgs.json().await.unwrap();
    let orgs = orgs["items"].as_array().unwrap();
    assert_eq!(orgs.len(), 40);
    // The demo covers every subscription status and every provisioning status.
    let mut statuses = std::collections::BTreeSet::new();
    let mut provisioning = std::collections::BTreeSet::new();
    let mut users = 0;
    for o in orgs {
        let id = o["id"].as_str().unwrap();
        let subs: serde_json::Value = client
            .get(format!("{url}/api/v1/orgs/{id}/subscriptions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for s in subs["items"].as_array().unwrap() {
            statuses.insert(s["status"].as_str().unwrap().to_string());
            for i in s["items"].as_array().unwrap() {
                provisioning.insert(i["provisioning_status"].as_str().unwrap().to_string());
            }
        }
        let u: serde_json::Value = client
            .get(format!("{url}/api/v1/orgs/{id}/users?limit=1000"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        users += u["items"].as_array().unwrap().len();
    }
    assert_eq!(statuses.len(), 10, "{statuses:?}");
    assert_eq!(provisioning.len(), 6, "{provisioning:?}");
    assert_eq!(users, 2000);

    // The console's URL and one admin per kind, with passwords that work.
    assert!(lines.iter().any(|l| l.starts_with(&format!("Console: {url}/ui/"))), "{lines:?}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (role, email) in [
        ("provider_admin", "provider@demo.example"),
        ("partner_admin", "partner@demo.example"),
        ("org_super_admin", "org@demo.example"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(email))
            .unwrap_or_else(|| panic!("{email} in {lines:?}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[..2], [role, email], "{line}");
        let form = client.get(format!("{url}/ui/login")).send().await.unwrap();
        let cookie = form.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let html = form.text().await.unwrap();
        let csrf = html
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let signed_in = browser
            .post(format!("{url}/ui/login"))
            .header("cookie", cookie)
            .form(&[("email", email), ("password", words[2]), ("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status().as_u16(), 303, "{email} signs in with the printed password");
    }
}

#[test]
fn create_admin_takes_the_password_from_stdin_or_the_environment() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("admins.db");
    let db = db.to_str().unwrap();
    let create = |email: &str, stdin: Option<&str>, env: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "admin",
            "create-admin",
            "--database",
            db,
            "--email",
            email,
            "--role",
            "provider_admin",
        ])
        .env("ALLOT_LOG", "error")
        .env_remove("ALLOT_ADMIN_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        if stdin.is_some() {
            cmd.arg("--password-stdin");
        }
        if let Some(p) = env {
            cmd.env("ALLOT_ADMIN_PASSWORD", p);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(p) = stdin {
            child.stdin.take().unwrap().write_all(format!("{p}\n").as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, stdout, _) = create("ada@example.com", Some("correct horse battery"), None);
    assert!(ok);
    assert!(stdout.lines().last().unwrap().starts_with("adm_"), "{stdout}");
    let (ok, stdout, _) = create("grace@example.com", None, Some("another long password"));
    assert!(ok);
    assert!(stdout.lines().last().unwrap().starts_with("adm_"), "{stdout}");
    let (ok, _, stderr) = create("linus@example.com", Some("too short"), None);
    assert!(!ok);
    assert!(stderr.contains("at least 12 characters"), "{stderr}");
    let (ok, _, stderr) = create("linus@example.com", None, None);
    assert!(!ok);
    assert!(
        stderr.contains("--password-stdin") && stderr.contains("ALLOT_ADMIN_PASSWORD"),
        "{stderr}"
    );
    let (ok, _, stderr) = create("ADA@example.com", Some("correct horse battery"), None);
    assert!(!ok);
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[tokio::test]
async fn create_token_then_serve() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("allot.db");
    let db = db.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["admin", "create-token", "--database", db, "--role", "provider_admin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().to_string();
    assert!(token.starts_with("allot_") && token.len() > 40, "{stdout}");

    // Bad flags: a clear message and a failing exit code.
    let bad = Command::new(BIN)
        .args(["admin", "create-token", "--database", db, "--role", "king"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
    let bad = Command::new(BIN)
        .args(["admin", "create-token", "--database", db, "--role", "org_admin"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--org"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = Command::new(BIN)
        .args([
            "admin",
            "create-token",
            "--database",
            db,
            "--role",
            "org_admin",
            "--org",
            "org_nope",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let (_server, lines) = start(&["serve", "--database", db, "--listen", "127.0.0.1:0"], &[], |l| {
        l.contains("listening on")
    });
    let url = url_in(&lines, "listening on");
    let client = reqwest::Client::new();
    let r = client.get(format!("{url}/api/v1/orgs")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(format!("{url}/api/v1/orgs"))
        .bearer_auth("allot_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A second token, revoked from the command line while the server runs:
    // refused within a second (the server caches tokens and follows the
    // database's cache versions every half second; a revocation through the
    // server itself takes effect at once).
    let made: serde_json::Value = client
        .post(format!("{url}/api/v1/tokens"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "to revoke", "role": "provider_admin" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (second, second_id) = (made["token"].as_str().unwrap(), made["id"].as_str().unwrap());
    let r = client.get(format!("{url}/api/v1/orgs")).bearer_auth(second).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let revoked = Command::new(BIN)
        .args(["admin", "revoke-token", "--database", db, "--id", second_id])
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let revoked_at = std::time::Instant::now();
    loop {
        let r = client.get(format!("{url}/api/v1/orgs")).bearer_auth(second).send().await.unwrap();
        if r.status().as_u16() == 401 {
            break;
        }
        assert_eq!(r.status().as_u16(), 200);
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(1),
            "a revoked token still works after a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = client.get(format!("{url}/api/v1/orgs")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the other token still works");
    let again = Command::new(BIN)
        .args(["admin", "revoke-token", "--database", db, "--id", second_id])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no live token"));

    let check = Command::new(BIN).args(["admin", "check", "--database", db]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
