//! `allot bench csv`: N users holding a seat of subscription A are exported
//! as the users CSV over HTTP, the file is changed to move everyone to
//! subscription B (FALSE under A, TRUE under B), and imported: a dry run,
//! then for real (upload → job finished each time). Baselines in the same
//! run on a fresh database of the same kind: the same rows read with one
//! query per page and written as CSV (export), and the changed file parsed
//! and the same assignment rows deleted and inserted directly in one
//! transaction (import).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};
use allot_store::users::User;
use allot_store::{in_transaction, Store, Val};

use crate::anyhow_lite::{msg, Result};
use crate::bench::{seat_pool, seat_product};
use crate::bench_bulk::{json_of, peak_rss_mb, reset_peak_rss, rss_now_mb};

const ROWS_PER_STATEMENT: usize = 500;
const PRODUCT: &str = "bench-call";

struct Setup {
    store: Store,
    org: String,
    a: String,
    b: String,
}

/// An org with subscriptions A and B of `n` seats each, and `n` users each
/// holding a seat of A (loaded directly; not measured).
async fn setup(database: &str, n: usize, max_connections: u32) -> Result<Setup> {
    let store = crate::bench::open_store(database, max_connections).await?;
    let now = SystemClock.now();
    let (org, sub_a) = seat_pool("CSV Bench", PRODUCT, n as i64, now, SystemClock.today());
    let mut sub_b = sub_a.clone();
    sub_b.id = allot_store::new_id("sub");
    let stamp = allot_store::ts(now);
    in_transaction!(store, |tx| {
        allot_store::catalogue::insert(&mut tx, &seat_product(PRODUCT)?, now).await?;
        allot_store::tenants::insert_org(&mut tx, &org, now).await?;
        allot_store::subscriptions::insert(&mut tx, &sub_a, now).await?;
        allot_store::subscriptions::insert(&mut tx, &sub_b, now).await?;
        for start in (0..n).step_by(10_000) {
            let end = (start + 10_000).min(n);
            let batch: Vec<User> = (start..end)
                .map(|i| User {
                    display_name: format!("User {i}"),
                    usage_location: Some("SE".into()),
                    ..User::internal(format!("usr_{i:08}"), format!("user{i}@csv.example"))
                })
                .collect();
            allot_store::users::insert_many(&mut tx, &org.id, &batch, now).await?;
            let rows: Vec<Vec<Val>> = (start..end)
                .map(|i| {
                    vec![
                        Val::from(&org.id),
                        Val::Text(format!("usr_{i:08}")),
                        Val::from(PRODUCT),
                        Val::from(&sub_a.id),
                        Val::from("{}"),
                        Val::from(&stamp),
                    ]
                })
                .collect();
            tx.insert_rows(
                "assignments (org_id, user_id, product, subscription_id, properties, assigned_at)",
                rows,
            )
            .await?;
        }
        tx.exec(
            "UPDATE subscription_items SET consumed = $3 WHERE org_id = $1 AND subscription_id = $2",
            &[Val::from(&org.id), Val::from(&sub_a.id), Val::Int(n as i64)],
        )
        .await?;
        Ok::<(), allot_store::StoreError>(())
    })
    .map_err(|e| msg(e.detail))?;
    Ok(Setup {
        store,
        org: org.id,
        a: sub_a.id,
        b: sub_b.id,
    })
}

/// The exported file changed to move every user from A to B.
fn move_everyone(exported: &std::path::Path, changed: &std::path::Path, s: &Setup) -> Result<()> {
    let input = std::io::BufReader::new(std::fs::File::open(exported)?);
    let mut out = std::io::BufWriter::new(std::fs::File::create(changed)?);
    let (ha, hb) = (format!("{PRODUCT} [{}]", s.a), format!("{PRODUCT} [{}]", s.b));
    let (mut ia, mut ib) = (usize::MAX, usize::MAX);
    for (k, line) in input.lines().enumerate() {
        let line = line?;
        let mut cells: Vec<&str> = line.split(',').collect();
        if k == 0 {
            ia = cells.iter().position(|c| *c == ha).ok_or_else(|| msg("no column for A"))?;
            ib = cells.iter().position(|c| *c == hb).ok_or_else(|| msg("no column for B"))?;
        } else {
            cells[ia] = "FALSE";
            cells[ib] = "TRUE";
        }
        out.write_all(cells.join(",").as_bytes())?;
        out.write_all(b"\r\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Uploads a file as an import (streamed from disk) and waits for its job.
async fn import(client: &reqwest::Client, url: &str, token: &str, org: &str, file: &std::path::Path, dry_run: bool) -> Result<Value> {
    let f = tokio::fs::File::open(file).await?;
    let len = f.metadata().await?.len();
    let body = futures::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(k) => {
                buf.truncate(k);
                Some((Ok::<_, std::io::Error>(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let created = json_of(
        client
            .post(format!("{url}/api/v1/orgs/{org}/imports?mode=add_only&dry_run={dry_run}"))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body)),
    )
    .await?;
    let id = created["job"]["id"]
        .as_str()
        .ok_or_else(|| msg(format!("no import job was created: {created}")))?
        .to_string();
    loop {
        let j = json_of(client.get(format!("{url}/api/v1/jobs/{id}")).bearer_auth(token)).await?;
        if !matches!(j["state"].as_str(), Some("queued" | "running")) {
            return Ok(j);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct AllotRun {
    export: Duration,
    bytes: u64,
    dry: Duration,
    apply: Duration,
    /// RSS when the export starts (the setup's memory included), and the
    /// peaks during the export and during the imports (MB).
    rss_start: Option<f64>,
    peak_export: Option<f64>,
    peak_import: Option<f64>,
}

async fn allot_run(database: &str, n: usize, dir: &std::path::Path) -> Result<AllotRun> {
    let s = setup(database, n, 16).await?;
    let token = allot_server::auth::create_token(&s.store, Role::ProviderAdmin, None, None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let server = crate::bench::InProcessServer::start(&s.store).await?;
    let url = server.url.clone();
    let client = reqwest::Client::new();
    reset_peak_rss();
    let rss_start = rss_now_mb();
    // Export, written to disk as it arrives.
    let exported = dir.join("export.csv");
    let started = Instant::now();
    let response = client
        .get(format!("{url}/api/v1/orgs/{}/users.csv", s.org))
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| msg(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&exported)?);
    let mut bytes = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| msg(e.to_string()))?;
        bytes += part.len() as u64;
        out.write_all(&part)?;
    }
    out.flush()?;
    let export = started.elapsed();
    let peak_export = peak_rss_mb();
    let changed = dir.join("changed.csv");
    move_everyone(&exported, &changed, &s)?;
    reset_peak_rss();
    let started = Instant::now();
    let dry = import(&client, &url, &token, &s.org, &changed, true).await?;
    let dry_time = started.elapsed();
    let started = Instant::now();
    let applied = import(&client, &url, &token, &s.org, &changed, false).await?;
    let apply = started.elapsed();
    let peak_import = peak_rss_mb();
    server.stop().await;
    for (what, j) in [("dry run", &dry), ("import", &applied)] {
        if j["state"] != "succeeded" || j["progress"]["succeeded"].as_u64() != Some(n as u64) {
            return Err(msg(format!("the {what} did not do its work: {j}")));
        }
    }
    let mut rd = s.store.begin_read().await.map_err(|e| msg(format!("{e:?}")))?;
    let b = allot_store::licenses::count_in_pool(&mut rd, &s.org, &s.b, PRODUCT)
        .await
        .map_err(|e| msg(format!("{e:?}")))?;
    let mismatches = allot_store::subscriptions::counter_mismatches(&mut rd)
        .await
        .map_err(|e| msg(format!("{e:?}")))?;
    if b != n as i64 || !mismatches.is_empty() {
        return Err(msg(format!("after the import B holds {b} of {n}; mismatches {mismatches:?}")));
    }
    drop(rd);
    s.store.close().await;
    Ok(AllotRun {
        export,
        bytes,
        dry: dry_time,
        apply,
        rss_start,
        peak_export,
        peak_import,
    })
}

/// Export baseline: the same rows read a page per query and written as
/// CSV lines, no HTTP. Import baseline: the changed file parsed, emails
/// looked up, and the same assignment rows deleted from A and inserted on B
/// in one transaction with multi-row statements.
async fn baseline_run(database: &str, n: usize, dir: &std::path::Path) -> Result<(Duration, Duration)> {
    let s = setup(database, n, 4).await?;
    let started = Instant::now();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("baseline.csv"))?);
    let mut after = String::new();
    loop {
        let mut rd = s.store.read_conn().await.map_err(|e| msg(format!("{e:?}")))?;
        let rows = rd
            .rows_packed(
                &["id", "email", "display_name"],
                "FROM users WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT 5000",
                &[Val::from(&s.org), Val::from(&after)],
            )
            .await
            .map_err(|e| msg(format!("{e:?}")))?;
        let Some(last) = rows.last() else { break };
        let last = last.text("id").map_err(|e| msg(format!("{e:?}")))?;
        let seats: HashMap<String, String> = rd
            .rows_packed(
                &["user_id", "subscription_id"],
                "FROM assignments WHERE org_id = $1 AND user_id > $2 AND user_id <= $3",
                &[Val::from(&s.org), Val::from(&after), Val::from(&last)],
            )
            .await
            .map_err(|e| msg(format!("{e:?}")))?
            .iter()
            .filter_map(|r| Some((r.text("user_id").ok()?, r.text("subscription_id").ok()?)))
            .collect();
        after = last;
        for r in &rows {
            let sub = seats.get(&r.text("id").map_err(|e| msg(format!("{e:?}")))?);
            writeln!(
                out,
                "{},{},internal,active,SE,{},{}\r",
                r.text("email").map_err(|e| msg(format!("{e:?}")))?,
                r.text("display_name").map_err(|e| msg(format!("{e:?}")))?,
                if sub == Some(&s.a) { "TRUE" } else { "FALSE" },
                if sub == Some(&s.b) { "TRUE" } else { "FALSE" },
            )?;
        }
        if rows.len() < 5000 {
            break;
        }
    }
    out.flush()?;
    let export = started.elapsed();
    // The file Allot imports, made the same way (not measured).
    let allot_file = dir.join("changed.csv");
    let started = Instant::now();
    let emails: Vec<String> = {
        let file = allot_file.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let mut rd = csv::ReaderBuilder::new().from_path(file).map_err(|e| msg(e.to_string()))?;
            let mut out = Vec::new();
            for rec in rd.records() {
                let rec = rec.map_err(|e| msg(e.to_string()))?;
                out.push(rec.get(0).unwrap_or("").to_lowercase());
            }
            Ok(out)
        })
        .await
        .map_err(|e| msg(e.to_string()))??
    };
    let mut tx = s.store.begin().await.map_err(|e| msg(format!("{e:?}")))?;
    let ids: HashMap<String, String> = tx
        .rows_packed(&["email_normalized", "id"], "FROM users WHERE org_id = $1", &[Val::from(&s.org)])
        .await
        .map_err(|e| msg(format!("{e:?}")))?
        .iter()
        .filter_map(|r| Some((r.text("email_normalized").ok()?, r.text("id").ok()?)))
        .collect();
    let stamp = allot_store::ts(SystemClock.now());
    tx.exec(
        "DELETE FROM assignments WHERE org_id = $1 AND subscription_id = $2",
        &[Val::from(&s.org), Val::from(&s.a)],
    )
    .await
    .map_err(|e| msg(format!("{e:?}")))?;
    for batch in emails.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<Vec<Val>> = batch
            .iter()
            .filter_map(|e| ids.get(e))
            .map(|id| {
                vec![
                    Val::from(&s.org),
                    Val::from(id),
                    Val::from(PRODUCT),
                    Val::from(&s.b),
                    Val::from("{}"),
                    Val::from(&stamp),
                ]
            })
            .collect();
        tx.insert_rows(
            "assignments (org_id, user_id, product, subscription_id, properties, assigned_at)",
            rows,
        )
        .await
        .map_err(|e| msg(format!("{e:?}")))?;
    }
    for (sub, delta) in [(&s.a, -(n as i64)), (&s.b, n as i64)] {
        tx.exec(
            "UPDATE subscription_items SET consumed = consumed + $3 WHERE org_id = $1 AND subscription_id = $2",
            &[Val::from(&s.org), Val::from(sub), Val::Int(delta)],
        )
        .await
        .map_err(|e| msg(format!("{e:?}")))?;
    }
    tx.commit().await.map_err(|e| msg(format!("{e:?}")))?;
    let import = started.elapsed();
    s.store.close().await;
    Ok((export, import))
}

fn mb(v: Option<f64>) -> String {
    v.map_or("?".to_string(), |r| format!("{r:.0}"))
}

pub async fn run(backend: &str, users: &[usize]) -> Result<()> {
    let backends = crate::bench::backends_of(backend)?;
    println!(
        "allot bench csv: export N users over HTTP, then import the file moving everyone A -> B (dry run, then for real); durable commits"
    );
    println!();
    println!("| backend | users | file MB | export s | baseline export s | ratio | import dry run s | import apply s | import total s | baseline parse+write s | ratio | RSS at start MB | peak RSS export MB | peak RSS import MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    for b in &backends {
        for &n in users {
            let (allot_db, base_db) = (databases.fresh(b, "csv")?, databases.fresh(b, "csv")?);
            let a = allot_run(&allot_db, n, databases.dir()).await?;
            let (base_export, base_import) = baseline_run(&base_db, n, databases.dir()).await?;
            let total = a.dry + a.apply;
            println!(
                "| {b} | {n} | {:.0} | {:.2} | {:.2} | {:.1}x | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}x | {} | {} | {} |",
                a.bytes as f64 / 1e6,
                a.export.as_secs_f64(),
                base_export.as_secs_f64(),
                a.export.as_secs_f64() / base_export.as_secs_f64(),
                a.dry.as_secs_f64(),
                a.apply.as_secs_f64(),
                total.as_secs_f64(),
                base_import.as_secs_f64(),
                total.as_secs_f64() / base_import.as_secs_f64(),
                mb(a.rss_start),
                mb(a.peak_export),
                mb(a.peak_import),
            );
        }
    }
    Ok(())
}
