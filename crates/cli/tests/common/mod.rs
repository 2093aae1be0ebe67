//! Running the real `allot` binary in tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_allot");

/// Kills the child process when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `allot <args>` with `env` added and reads its stdout until `want`
/// has seen what it needs; returns the process and the lines read.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn start(args: &[&str], env: &[(&str, &str)], want: impl FnMut(&str) -> bool) -> (Running, Vec<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).envs(env.iter().copied());
    start_command(cmd, &format!("allot {args:?}"), want)
}

/// Starts `cmd` (which runs `allot` somehow, e.g. under a shell that sets a
/// limit first) and reads its stdout as [`start`] does.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn start_command(mut cmd: Command, label: &str, mut want: impl FnMut(&str) -> bool) -> (Running, Vec<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn allot");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{label} printed {lines:?} and then nothing"));
        let done = want(&line);
        lines.push(line);
        if done {
            return (running, lines);
        }
    }
}

/// The first `http://` word of the first line containing `marker`.
pub fn url_in(lines: &[String], marker: &str) -> String {
    let line = lines.iter().find(|l| l.contains(marker)).expect("a line with the URL");
    line.split_whitespace().find(|w| w.starts_with("http://")).expect("URL").to_string()
}

/// A throwaway PostgreSQL cluster and a database in it, or `None` when
/// PostgreSQL cannot be started and the skip was asked for by name
/// (`ALLOT_SKIP_POSTGRES=1`, never with `CI=true`); otherwise a missing
/// PostgreSQL fails the test.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn postgres_database(name: &str) -> Option<(allot_pgtemp::PgCluster, String)> {
    let cluster = match allot_pgtemp::PgCluster::start(false) {
        Ok(c) => c,
        Err(e) if allot_pgtemp::skip_allowed() => {
            eprintln!("SKIPPING a PostgreSQL test (ALLOT_SKIP_POSTGRES=1): {e}");
            return None;
        }
        Err(e) => panic!("PostgreSQL cannot be started ({e}); set ALLOT_SKIP_POSTGRES=1 to skip this test outside CI"),
    };
    let url = cluster.create_database(name).expect("database");
    Some((cluster, url))
}

/// A provider admin token for `database` (`allot admin create-token`).
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn token(database: &str) -> String {
    let out = Command::new(BIN)
        .args(["admin", "create-token", "--database", database, "--role", "provider_admin"])
        .output()
        .expect("create-token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string()
}

/// One API call that must succeed; its JSON answer.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub async fn call(client: &reqwest::Client, url: &str, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = client.request(method, format!("{url}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}
