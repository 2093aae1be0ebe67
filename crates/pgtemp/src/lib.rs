//! A throwaway PostgreSQL cluster from the system's packages (Debian's
//! `postgresql`), for tests and benchmarks: `initdb` in a temp dir, `pg_ctl
//! start` on a free loopback port, stopped and deleted when dropped — or, for a
//! cluster kept in a `static`, when the process that started it exits (a small
//! watchdog process sees to that).
//!
//! Two traps handled here: `initdb` refuses to run as root, so as root the
//! cluster runs as the `postgres` user; and `pg_ctl start` without `-l` keeps
//! the caller's stdout/stderr open, which hangs a caller that captures them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

/// Where the PostgreSQL binaries are: `$ALLOT_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("ALLOT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgCluster {
    /// Starts a new cluster. `durable` keeps PostgreSQL's default fsync and
    /// synchronous commit (for benchmarks); otherwise both are off (tests).
    pub fn start(durable: bool) -> Result<PgCluster, String> {
        let bin = find_bin_dir().ok_or("no PostgreSQL binaries found (install Debian's postgresql package or set ALLOT_PG_BIN)")?;
        let dir = tempfile::Builder::new().prefix("allot-pg-").tempdir().map_err(|e| e.to_string())?;
        let as_postgres_user = is_root();
        if as_postgres_user {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("could not give the temp dir to the postgres user".into());
            }
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres_user,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
        )?;
        let settings = if durable {
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        // A port can be taken between choosing and binding it: try a few.
        let mut last_err = String::new();
        for _ in 0..5 {
            cluster.port = free_port().map_err(|e| e.to_string())?;
            let opts = format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 -c shared_buffers=256MB {settings}",
                cluster.port,
                path(cluster.dir.path())
            );
            let log = cluster.dir.path().join("server.log");
            match cluster.run(
                "pg_ctl",
                &["-D", path(&data), "-l", path(&log), "-o", &opts, "-w", "-t", "60", "start"],
            ) {
                Ok(()) => {
                    cluster.spawn_watchdog();
                    return Ok(cluster);
                }
                Err(e) => last_err = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
            }
        }
        Err(format!("pg_ctl start failed: {last_err}"))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the cluster and removes its files once this process is gone, even
    /// if it never drops the cluster (a `static` in a test binary) or is killed.
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} -D '{data}' -m immediate stop; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = if self.as_postgres_user {
                format!("runuser -u postgres -- '{}'", self.bin.join("pg_ctl").display())
            } else {
                format!("'{}'", self.bin.join("pg_ctl").display())
            },
            data = self.data_dir().display(),
            dir = self.dir.path().display(),
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// What the cluster has logged so far (its errors name the statements
    /// it refused).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("CREATE DATABASE {name}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(self.url(name))
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run("pg_ctl", &["-D", path(&data), "-m", "immediate", "stop"]);
    }
}

/// Whether a test may skip its PostgreSQL part when no cluster can be had:
/// only when asked by name (`ALLOT_SKIP_POSTGRES=1`) and never under CI
/// (`CI=true`), so that a test that did nothing cannot pass unnoticed.
pub fn skip_allowed() -> bool {
    std::env::var("ALLOT_SKIP_POSTGRES").as_deref() == Ok("1") && std::env::var("CI").as_deref() != Ok("true")
}
