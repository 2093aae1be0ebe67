//! Users as CSV files. Export: every user of an org with a TRUE/FALSE
//! column per subscription item, streamed page by page, so a million users
//! never sit in memory and a slow client slows the reading down instead of
//! filling the server. Import: the upload is spooled to a temporary file
//! under the size limit, then read twice off the async threads: once to
//! check the whole file (header, every row, duplicate emails) so that a
//! malformed file is refused with every reason and nothing stored, and once
//! to store its rows as a `csv_import` job's chunks, a chunk at a time. The
//! worker applies the rows (`crate::worker::per_user`).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Seek, Write};

use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::bulk::JobKind;
use allot_domain::sheet::{
    escape_cell, parse_header, parse_row, rows_refused, Header, ImportMode, ImportRequest, ItemColumn, SheetRow, USER_COLUMNS,
};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error, Violation};
use allot_store::jobs::{self, Job};
use allot_store::{audit, subscriptions, users};

use super::jobs::{JobView, CHUNK_USERS};
use super::{App, Caller};

/// The most columns a users file may have: the five user columns and one per
/// subscription item, far fewer than this in any organisation.
const MAX_COLUMNS: usize = 10_000;

/// Users per page of an export: one statement each, about 1 MB of CSV.
const EXPORT_PAGE: i64 = 5_000;

/// Pages of an export written ahead of the client.
const PAGES_AHEAD: usize = 2;

/// `?mode=&dry_run=` of an import.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// `add_only` (default): blank and FALSE cells change nothing (a FALSE
    /// paired with a TRUE of the same family is a move); `add_and_remove`:
    /// FALSE removes.
    pub mode: Option<ImportMode>,
    /// Only say what each row would change.
    pub dry_run: Option<bool>,
}

fn too_large(limit: u64) -> Error {
    Error::new(
        Code::PayloadTooLarge,
        format!(
            "The file is larger than the import limit of {limit} bytes ({:.1} MiB). Split it into smaller files.",
            limit as f64 / (1024.0 * 1024.0)
        ),
    )
}

/// Writes the body to an anonymous temporary file, refusing it as soon as it
/// passes `limit` bytes.
async fn spool<S, B, E>(mut stream: S, limit: u64) -> Result<(std::fs::File, u64), Error>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut quotes = allot_domain::sheet::QuoteScanner::default();
    let io = |e: std::io::Error| Error::internal(format!("cannot spool the upload: {e}"));
    let file = tempfile::tempfile().map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut size = 0u64;
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| Error::validation("body", format!("The upload could not be read: {e}.")))?;
        let part = part.as_ref();
        size += part.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        // Small writes into a buffer; the disk write of a full buffer is
        // short enough not to matter to the runtime.
        out.write_all(part).map_err(io)?;
        quotes.feed(part);
    }
    if let Some(line) = quotes.unclosed_quote() {
        return Err(allot_domain::sheet::unclosed_quote_refused(line));
    }
    let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.rewind().map_err(io)?;
    Ok((file, size))
}

fn reader(file: &std::fs::File) -> Result<csv::Reader<std::io::BufReader<std::fs::File>>, Error> {
    let mut f = file
        .try_clone()
        .map_err(|e| Error::internal(format!("cannot read the upload: {e}")))?;
    f.rewind().map_err(|e| Error::internal(format!("cannot read the upload: {e}")))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, f)))
}

/// Reads the next record; answers its first line number, or why it cannot
/// be read (not UTF-8, ...) with its line.
fn next_record(
    rd: &mut csv::Reader<std::io::BufReader<std::fs::File>>,
    file: &std::fs::File,
    rec: &mut csv::StringRecord,
) -> Result<Option<u64>, Box<Violation>> {
    match rd.read_record(rec) {
        Ok(false) => Ok(None),
        Ok(true) => {
            // The reader's line counts the newlines it consumed, and it stops
            // right after a record's last cell or after its LF (a CR-LF pair
            // is split between two records). So the record ends on that
            // line, one less if the last byte read was an LF; it starts as
            // many lines earlier as it has newlines inside quoted cells.
            // (`rec.position()` would count the blank lines before it.)
            let end = rd.position();
            let mut last = [0u8];
            let lf = end.byte() > 0
                && std::os::unix::fs::FileExt::read_at(file, &mut last, end.byte() - 1).is_ok_and(|n| n == 1)
                && last[0] == b'\n';
            let inside: usize = rec.iter().map(|c| c.matches('\n').count()).sum();
            Ok(Some(end.line().saturating_sub(u64::from(lf) + inside as u64)))
        }
        Err(e) => {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            Err(Box::new(
                Violation::new(Code::CsvRowInvalid, format!("Line {line} cannot be read: {e}.")).with_row(line),
            ))
        }
    }
}

fn blank(rec: &csv::StringRecord) -> bool {
    rec.iter().all(|c| c.trim().is_empty())
}

fn cells(rec: &csv::StringRecord) -> Vec<String> {
    rec.iter().map(str::to_string).collect()
}

fn email_hash(email: &str) -> u64 {
    let mut h = DefaultHasher::new();
    email.hash(&mut h);
    h.finish()
}

/// The first pass: header and every row checked, duplicates found. Only
/// a hash and a line per email are kept (16 bytes a row, not the email); two
/// rows whose hashes meet are compared for real by a second, targeted read.
fn check_file(file: &std::fs::File, org_items: &[ItemColumn]) -> Result<(Header, u64), Error> {
    let mut rd = reader(file)?;
    let mut rec = csv::StringRecord::new();
    let header = loop {
        match next_record(&mut rd, file, &mut rec) {
            Ok(None) => {
                return Err(Error::new(
                    Code::CsvHeaderInvalid,
                    "The file is empty: it needs a header row and a row per user.",
                ))
            }
            Ok(Some(_)) if blank(&rec) => continue,
            // A header of more columns than any organisation has items is
            // refused before its cells are copied and checked one by one.
            Ok(Some(_)) if rec.len() > MAX_COLUMNS => {
                return Err(Error::new(
                    Code::CsvHeaderInvalid,
                    format!("The header row has {} columns; a users file has at most {MAX_COLUMNS}.", rec.len()),
                ))
            }
            Ok(Some(_)) => break parse_header(&cells(&rec), org_items)?,
            Err(v) => return Err(rows_refused(vec![*v], 1)),
        }
    };
    let mut problems: Vec<Violation> = Vec::new();
    let mut total_problems = 0usize;
    let mut note = |v: Violation, problems: &mut Vec<Violation>| {
        total_problems += 1;
        if problems.len() < allot_domain::sheet::MAX_LISTED_PROBLEMS {
            problems.push(v);
        }
    };
    // (email hash, line): 16 bytes a row, sorted afterwards to find repeats.
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut rows = 0u64;
    loop {
        let line = match next_record(&mut rd, file, &mut rec) {
            Ok(None) => break,
            Ok(Some(_)) if blank(&rec) => continue,
            Ok(Some(line)) => line,
            Err(v) => {
                note(*v, &mut problems);
                // A broken quote runs to the end of the file: stop here.
                break;
            }
        };
        rows += 1;
        match parse_row(&header, line, &cells(&rec)) {
            Ok(row) => seen.push((email_hash(&row.normalized_email()), line)),
            Err(vs) => {
                for v in vs {
                    note(v, &mut problems);
                }
            }
        }
    }
    seen.sort_unstable();
    let clashes: Vec<(u64, u64)> = seen.windows(2).filter(|w| w[0].0 == w[1].0).map(|w| (w[0].1, w[1].1)).collect();
    drop(seen);
    for (first, repeat, email) in confirmed_duplicates(file, &header, &clashes)? {
        note(
            Violation::new(
                Code::CsvRowInvalid,
                format!("Lines {first} and {repeat} have the same email {email}: a user may appear once per file."),
            )
            .with_row(repeat)
            .field("email"),
            &mut problems,
        );
    }
    if total_problems > 0 {
        return Err(rows_refused(problems, total_problems));
    }
    if rows == 0 {
        return Err(Error::new(Code::CsvRowInvalid, "The file has a header but no rows."));
    }
    Ok((header, rows))
}

/// Re-reads the rows whose email hashes met and keeps the pairs whose
/// emails are really the same (case-insensitively): (first line, repeating
/// line, email).
fn confirmed_duplicates(file: &std::fs::File, header: &Header, clashes: &[(u64, u64)]) -> Result<Vec<(u64, u64, String)>, Error> {
    if clashes.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<u64> = clashes.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let mut emails: HashMap<u64, String> = HashMap::new();
    let mut rd = reader(file)?;
    let mut rec = csv::StringRecord::new();
    let mut first = true;
    while let Ok(Some(line)) = next_record(&mut rd, file, &mut rec) {
        if blank(&rec) {
            continue;
        }
        if first {
            first = false;
            continue;
        }
        if wanted.contains(&line) {
            if let Ok(row) = parse_row(header, line, &cells(&rec)) {
                emails.insert(line, row.normalized_email());
            }
        }
    }
    Ok(clashes
        .iter()
        .filter_map(|(a, b)| {
            let (ea, eb) = (emails.get(a)?, emails.get(b)?);
            (ea == eb).then(|| (*a, *b, ea.clone()))
        })
        .collect())
}

/// The second pass: the rows in chunks, sent to the storing task as they
/// are read (a bounded channel, so at most a few chunks are in memory).
fn send_chunks(file: &std::fs::File, header: &Header, out: tokio::sync::mpsc::Sender<Vec<String>>) -> Result<(), Error> {
    let mut rd = reader(file)?;
    let mut rec = csv::StringRecord::new();
    let mut seen_header = false;
    let mut chunk: Vec<String> = Vec::with_capacity(CHUNK_USERS);
    let stopped = || Error::internal("the import was stopped while its rows were stored");
    loop {
        let line = match next_record(&mut rd, file, &mut rec) {
            Ok(None) => break,
            Ok(Some(_)) if blank(&rec) => continue,
            Ok(Some(line)) => line,
            Err(v) => return Err(Error::internal(format!("the upload changed between its reads: {}", v.message))),
        };
        if !seen_header {
            seen_header = true;
            continue;
        }
        let row: SheetRow = parse_row(header, line, &cells(&rec))
            .map_err(|_| Error::internal(format!("line {line} changed between the reads of the upload")))?;
        chunk.push(serde_json::to_string(&row).map_err(|e| Error::internal(format!("cannot store line {line}: {e}")))?);
        if chunk.len() == CHUNK_USERS {
            out.blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_USERS)))
                .map_err(|_| stopped())?;
        }
    }
    if !chunk.is_empty() {
        out.blocking_send(chunk).map_err(|_| stopped())?;
    }
    Ok(())
}

/// Checks an uploaded users file as a whole and queues it as a
/// `csv_import` job (its rows stored with the job in one transaction).
/// `declared_len`: the upload's announced size, refused early when over
/// the limit.
pub async fn import_users_csv<S, B, E>(
    app: &App,
    caller: &Caller,
    org: &str,
    q: &ImportQuery,
    declared_len: Option<u64>,
    body: S,
) -> Result<JobView, Error>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let (org, org_items) = {
        let mut rd = app.store.read_conn().await?;
        let org = caller.org(&mut rd, org, Action::WriteLicenses).await?;
        caller.require(Action::WriteUsers)?;
        let items = item_columns(&mut rd, &org.id).await?;
        (org, items)
    };
    let limit = app.config.limits.max_import_bytes;
    if declared_len.is_some_and(|declared| declared > limit) {
        return Err(too_large(limit));
    }
    let (file, size) = spool(body, limit).await?;
    let file = std::sync::Arc::new(file);
    let (header, rows) = {
        let (file, items) = (file.clone(), org_items.clone());
        tokio::task::spawn_blocking(move || check_file(&file, &items))
            .await
            .map_err(|e| Error::internal(format!("the file check stopped: {e}")))??
    };
    let request = ImportRequest {
        mode: q.mode.unwrap_or_default(),
        dry_run: q.dry_run.unwrap_or(false),
        columns: header.items.clone(),
        rows,
        file_bytes: size,
    };
    let now = app.clock.now();
    let job = Job::queued(
        &org.id,
        JobKind::CsvImport,
        serde_json::to_string(&request).map_err(|e| Error::internal(format!("cannot store the request: {e}")))?,
        caller.actor().actor,
        now,
        Some((rows.div_ceil(CHUNK_USERS as u64) as i64, rows as i64)),
    );
    // One transaction: the job appears with all its rows or not at all.
    let (send, mut recv) = tokio::sync::mpsc::channel::<Vec<String>>(2);
    let reading = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || send_chunks(&file, &header, send))
    };
    let mut tx = app.store.begin().await?;
    let stored: Result<(), Error> = async {
        jobs::insert(&mut tx, &job).await?;
        let mut seq = 0i64;
        while let Some(chunk) = recv.recv().await {
            jobs::insert_chunks(&mut tx, &job.org, &job.id, seq, &[chunk]).await?;
            seq += 1;
        }
        if seq != job.chunks {
            return Err(Error::internal(format!("stored {seq} chunks of {}", job.chunks)));
        }
        audit::record(
            &mut tx,
            Some(&job.org),
            &caller.actor(),
            "import.create",
            &format!("job:{}", job.id),
            None,
            Some(
                &json!({ "job": job.id, "mode": request.mode, "dry_run": request.dry_run, "rows": rows, "bytes": size,
                           "columns": request.columns.iter().map(ItemColumn::heading).collect::<Vec<_>>() }),
            ),
            now,
        )
        .await?;
        Ok(())
    }
    .await;
    drop(recv);
    let read = reading.await.map_err(|e| Error::internal(format!("the file read stopped: {e}")))?;
    match stored.and(read) {
        Ok(()) => tx.commit().await?,
        Err(e) => {
            tx.rollback().await?;
            return Err(e);
        }
    }
    app.job_queued();
    Ok(JobView::of(&job))
}

/// Appends one CSV cell: formula characters escaped, quoted when needed.
pub fn push_cell(out: &mut String, raw: &str) {
    let s = escape_cell(raw);
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&s);
    }
}

/// A CSV cell: quoted when needed, and a leading `=`, `+`, `-`, `@`, tab or
/// CR escaped so that a spreadsheet shows it instead of running it.
pub fn csv_cell(s: &str) -> String {
    let mut out = String::new();
    push_cell(&mut out, s);
    out
}

/// The org's item columns, in product then subscription order.
pub async fn item_columns(tx: &mut allot_store::Tx, org: &str) -> Result<Vec<ItemColumn>, Error> {
    subscriptions::license_rows(tx, org)
        .await?
        .into_iter()
        .map(|r| {
            Ok(ItemColumn {
                product: ProductCode::parse(&r.product)?,
                subscription: r.subscription,
            })
        })
        .collect()
}

/// A CSV download: its file name and its text, a page at a time. A read
/// that fails half-way ends the stream with an error, so the client sees a
/// cut-off download rather than a file that looks complete.
pub struct CsvDownload {
    pub filename: String,
    pub pages: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
}

/// Every user of the org, one row each: email, display name, kind, status,
/// usage location, then TRUE or FALSE per subscription item.
pub async fn export_users_csv(app: &App, caller: &Caller, org: &str) -> Result<CsvDownload, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadUsers).await?;
    caller.require(Action::ReadLicenses)?;
    let columns = item_columns(&mut rd, &org.id).await?;
    drop(rd);
    let mut head = String::new();
    for (i, name) in USER_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(columns.iter().map(ItemColumn::heading))
        .enumerate()
    {
        if i > 0 {
            head.push(',');
        }
        push_cell(&mut head, &name);
    }
    head.push_str("\r\n");
    let (send, recv) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(PAGES_AHEAD);
    let org_id = org.id.clone();
    let store = app.store.clone();
    tokio::spawn(async move {
        if send.send(Ok(head)).await.is_err() {
            return;
        }
        let index: HashMap<(&str, &str), usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| ((c.product.as_str(), c.subscription.as_str()), i))
            .collect();
        let mut after = String::new();
        loop {
            let page = async {
                // A read transaction: a page's users and seats are one snapshot.
                let mut rd = store.begin_read().await?;
                let page = users::export_page(&mut rd, &org_id, &after, EXPORT_PAGE).await;
                rd.rollback().await?;
                page
            }
            .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let e = Error::from(e);
                    tracing::error!(org = %org_id, error = %e.detail, "users CSV cut off");
                    let _ = send.send(Err(std::io::Error::other(e.detail))).await;
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            after = last.user.id.clone();
            let full = page.len() as i64 == EXPORT_PAGE;
            let mut out = String::with_capacity(page.len() * (60 + 6 * columns.len()));
            let mut held = vec![false; columns.len()];
            for e in &page {
                let u = &e.user;
                for (i, v) in [
                    u.email.as_str(),
                    u.display_name.as_str(),
                    u.kind.as_str(),
                    u.status.as_str(),
                    u.usage_location.as_deref().unwrap_or(""),
                ]
                .iter()
                .enumerate()
                {
                    if i > 0 {
                        out.push(',');
                    }
                    push_cell(&mut out, v);
                }
                held.iter_mut().for_each(|h| *h = false);
                for (p, s) in &e.seats {
                    if let Some(i) = index.get(&(p.as_str(), s.as_str())) {
                        held[*i] = true;
                    }
                }
                for h in &held {
                    out.push_str(if *h { ",TRUE" } else { ",FALSE" });
                }
                out.push_str("\r\n");
            }
            if send.send(Ok(out)).await.is_err() {
                return; // the client went away
            }
            if !full {
                return;
            }
        }
    });
    Ok(CsvDownload {
        filename: format!("{}-users.csv", org.id),
        pages: recv,
    })
}
