//! `POST .../imports`: a users CSV as a job (R-CSV-2). The body is spooled
//! to a temporary file under the size limit, then read twice off the async
//! threads: once to check the whole file (header, every row, duplicate
//! emails) so that a malformed file is refused with every reason and
//! nothing stored, and once to store its rows as the job's chunks, a chunk
//! at a time. The worker applies the rows (`worker::sheet_import`).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Seek, Write};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::sheet::{parse_header, parse_row, rows_refused, Header, ImportMode, ImportRequest, ItemColumn, SheetRow};
use allot_domain::{Code, Error, Violation};
use allot_store::audit;
use allot_store::jobs::{self, Job};

use super::jobs::job_view;
use super::sheet_export::item_columns;
use crate::auth::Ctx;
use crate::extract::ApiQuery;
use crate::problem::ApiResult;
use crate::worker::CHUNK_USERS;
use crate::AppState;

/// The most columns a users file may have: the five user columns and one per
/// subscription item, far fewer than this in any organisation.
const MAX_COLUMNS: usize = 10_000;

/// The kind of an import job.
pub const IMPORT_JOB_KIND: &str = "csv_import";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    pub mode: Option<ImportMode>,
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
async fn spool(body: Body, limit: u64) -> Result<(std::fs::File, u64), Error> {
    let mut quotes = allot_domain::sheet::QuoteScanner::default();
    let io = |e: std::io::Error| Error::internal(format!("cannot spool the upload: {e}"));
    let file = tempfile::tempfile().map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| Error::validation("body", format!("The upload could not be read: {e}.")))?;
        size += part.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        // Small writes into a buffer; the disk write of a full buffer is
        // short enough not to matter to the runtime.
        out.write_all(&part).map_err(io)?;
        quotes.feed(&part);
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

fn is_csv(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        ct.as_str(),
        "text/csv" | "application/csv" | "text/plain" | "application/vnd.ms-excel"
    )
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/imports", tag = "csv",
    params(("org" = String, Path), ("mode" = Option<String>, Query, description = "add_only (default) or add_and_remove"),
           ("dry_run" = Option<bool>, Query)),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 202, description = "The import job"), (status = 413, description = "Over the size limit"),
              (status = 422, description = "csv_header_invalid or csv_row_invalid, with every reason")))]
pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (org, org_items) = {
        let mut rd = st.store.read_conn().await?;
        let org = ctx.org(&mut rd, &org, Action::WriteLicenses).await?;
        ctx.require(Action::WriteUsers)?;
        let items = item_columns(&mut rd, &org.id).await?;
        (org, items)
    };
    if !is_csv(&headers) {
        return Err(Error::validation("content-type", "Send the file as the body with Content-Type: text/csv.").into());
    }
    let limit = st.limits.max_import_bytes;
    if let Some(declared) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if declared > limit {
            return Err(too_large(limit).into());
        }
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
    let now = st.clock.now();
    let job = Job::queued(
        &org.id,
        IMPORT_JOB_KIND,
        serde_json::to_string(&request).map_err(|e| Error::internal(format!("cannot store the request: {e}")))?,
        ctx.actor().actor,
        now,
        Some((rows.div_ceil(CHUNK_USERS as u64) as i64, rows as i64)),
    );
    // One transaction: the job appears with all its rows or not at all.
    let (send, mut recv) = tokio::sync::mpsc::channel::<Vec<String>>(2);
    let reading = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || send_chunks(&file, &header, send))
    };
    let mut tx = st.store.begin().await?;
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
            &ctx.actor(),
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
            return Err(e.into());
        }
    }
    crate::worker::job_created();
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": job_view(&job) }))).into_response())
}
