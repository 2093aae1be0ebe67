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
