//! Durable jobs: a row per job, its users split into chunks, each chunk done
//! in one transaction together with the changes it makes and its results.
//!
//! A worker claims a job with a lease (a conditional UPDATE, so two workers
//! never hold one job); a restarted server finds the job `running` with an
//! expired lease and resumes it at the first chunk not done.

use allot_domain::bulk::{JobKind, JobState};

use crate::db::{Row, StoreError, Tx, Val};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub org: String,
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// The request as JSON (what the worker needs to carry it out).
    pub request: String,
    pub created_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Whether its users have been split into chunks yet.
    pub resolved: bool,
    pub chunks: i64,
    pub total: i64,
    pub done: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancel_requested: bool,
    /// A job-level refusal as JSON `{"code", "message", "errors"}`.
    pub error: Option<String>,
}

impl Job {
    /// A new job waiting for the worker. `stored`: (chunks, users) when its
    /// users are stored with it; None when the worker resolves them (a filter).
    pub fn queued(
        org: &str,
        kind: JobKind,
        request: String,
        created_by: String,
        now: chrono::DateTime<chrono::Utc>,
        stored: Option<(i64, i64)>,
    ) -> Job {
        let (chunks, total) = stored.unwrap_or((0, 0));
        Job {
            org: org.to_string(),
            id: crate::new_id("job"),
            kind,
            state: JobState::Queued,
            request,
            created_by,
            created_at: crate::ts(now),
            started_at: None,
            finished_at: None,
            resolved: stored.is_some(),
            chunks,
            total,
            done: 0,
            succeeded: 0,
            failed: 0,
            cancel_requested: false,
            error: None,
        }
    }
}

/// A job's columns, its request read as `$request` says.
macro_rules! job_columns {
    ($request:literal) => {
        concat!(
            "org_id, id, kind, state, ",
            $request,
            ", created_by, created_at, started_at, finished_at, resolved, chunks, total, done, succeeded, failed, cancel_requested, error"
        )
    };
}

const COLUMNS: &str = job_columns!("request");

fn job_from(r: &Row) -> Result<Job, StoreError> {
    Ok(Job {
        org: r.text("org_id")?,
        id: r.text("id")?,
        kind: {
            let k = r.text("kind")?;
            JobKind::parse(&k).ok_or_else(|| StoreError::Db(format!("a stored job has the unknown kind {k:?}")))?
        },
        state: {
            let s = r.text("state")?;
            JobState::parse(&s).ok_or_else(|| StoreError::Db(format!("a stored job has the unknown state {s:?}")))?
        },
        request: r.text("request")?,
        created_by: r.text("created_by")?,
        created_at: r.text("created_at")?,
        started_at: r.opt_text("started_at")?,
        finished_at: r.opt_text("finished_at")?,
        resolved: r.bool("resolved")?,
        chunks: r.int("chunks")?,
        total: r.int("total")?,
        done: r.int("done")?,
        succeeded: r.int("succeeded")?,
        failed: r.int("failed")?,
        cancel_requested: r.bool("cancel_requested")?,
        error: r.opt_text("error")?,
    })
}

pub async fn insert(tx: &mut Tx, job: &Job) -> Result<(), StoreError> {
    tx.exec(
        &format!(
            "INSERT INTO jobs ({COLUMNS}, lease_owner, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, NULL, 0)"
        ),
        args![
            &job.org,
            &job.id,
            job.kind.as_str(),
            job.state.as_str(),
            &job.request,
            &job.created_by,
            &job.created_at,
            job.started_at.clone(),
            job.finished_at.clone(),
            job.resolved,
            job.chunks,
            job.total,
            job.done,
            job.succeeded,
            job.failed,
            job.cancel_requested,
            job.error.clone()
        ],
    )
    .await?;
    Ok(())
}

/// Stores chunks of user ids from `first_seq` on.
pub async fn insert_chunks(tx: &mut Tx, org: &str, job: &str, first_seq: i64, chunks: &[Vec<String>]) -> Result<(), StoreError> {
    let rows: Vec<Vec<Val>> = chunks
        .iter()
        .enumerate()
        .map(|(i, users)| {
            vec![
                Val::from(org),
                Val::from(job),
                Val::Int(first_seq + i as i64),
                Val::Text(serde_json::to_string(users).unwrap_or_else(|_| "[]".into())),
                Val::Bool(false),
            ]
        })
        .collect();
    tx.insert_rows("job_chunks (org_id, job_id, seq, users, done)", rows).await
}

/// Drops a job's chunks (those of a resolve cut short before the job ran).
pub async fn delete_chunks(tx: &mut Tx, org: &str, job: &str) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM job_chunks WHERE org_id = $1 AND job_id = $2", args![org, job])
        .await
}

pub async fn get(tx: &mut Tx, org: &str, id: &str) -> Result<Option<Job>, StoreError> {
    tx.opt_row(&format!("SELECT {COLUMNS} FROM jobs WHERE org_id = $1 AND id = $2"), args![org, id])
        .await?
        .as_ref()
        .map(job_from)
        .transpose()
}

/// A job by id alone (`GET /api/v1/jobs/{id}`); the caller checks its org.
pub async fn get_by_id(tx: &mut Tx, id: &str) -> Result<Option<Job>, StoreError> {
    tx.opt_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), args![id])
        .await?
        .as_ref()
        .map(job_from)
        .transpose()
}

/// Jobs waiting for a worker or whose worker's lease ran out.
pub async fn claimable(tx: &mut Tx, now_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
    tx.rows(
        "SELECT org_id, id FROM jobs WHERE state IN ('queued', 'running') AND lease_until < $1 ORDER BY created_at LIMIT 10",
        args![now_ms],
    )
    .await?
    .iter()
    .map(|r| Ok((r.text("org_id")?, r.text("id")?)))
    .collect()
}

/// Takes (or renews) the job's lease if it is free or already ours; false if
/// another worker holds it or the job has ended.
pub async fn take_lease(tx: &mut Tx, org: &str, id: &str, owner: &str, now_ms: i64, until_ms: i64, now: &str) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "UPDATE jobs SET state = 'running', lease_owner = $3, lease_until = $5, started_at = COALESCE(started_at, $6) \
             WHERE org_id = $1 AND id = $2 AND state IN ('queued', 'running') AND (lease_until < $4 OR lease_owner = $3)",
            args![org, id, owner, now_ms, until_ms, now],
        )
        .await?;
    Ok(n == 1)
}

/// Keeps a job this owner could not finish from being taken again before
/// `until_ms` (by anyone, this owner included): the retry delay of a failed run.
pub async fn postpone(tx: &mut Tx, org: &str, id: &str, owner: &str, until_ms: i64) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE jobs SET lease_until = $4 WHERE org_id = $1 AND id = $2 AND lease_owner = $3",
        args![org, id, owner, until_ms],
    )
    .await?;
    Ok(())
}

/// Gives back every lease this owner holds on a job not ended (its worker
/// stops): the jobs are claimable again at once. Returns how many.
pub async fn release_leases(tx: &mut Tx, owner: &str) -> Result<u64, StoreError> {
    tx.exec(
        "UPDATE jobs SET lease_until = 0 WHERE lease_owner = $1 AND state IN ('queued', 'running')",
        args![owner],
    )
    .await
}

/// Records the users of a job once they are known (a filter resolved).
pub async fn set_resolved(tx: &mut Tx, org: &str, id: &str, chunks: i64, total: i64) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE jobs SET resolved = TRUE, chunks = $3, total = $4 WHERE org_id = $1 AND id = $2",
        args![org, id, chunks, total],
    )
    .await?;
    Ok(())
}

/// Sequence numbers of the chunks still to do, in order.
pub async fn pending_chunks(tx: &mut Tx, org: &str, id: &str) -> Result<Vec<i64>, StoreError> {
    tx.rows(
        "SELECT seq FROM job_chunks WHERE org_id = $1 AND job_id = $2 AND done = FALSE ORDER BY seq",
        args![org, id],
    )
    .await?
    .iter()
    .map(|r| r.int("seq"))
    .collect()
}

pub async fn chunk_users(tx: &mut Tx, org: &str, id: &str, seq: i64) -> Result<Vec<String>, StoreError> {
    let r = tx
        .opt_row(
            "SELECT users FROM job_chunks WHERE org_id = $1 AND job_id = $2 AND seq = $3",
            args![org, id, seq],
        )
        .await?
        .ok_or_else(|| StoreError::Db(format!("chunk {seq} of job {id} is missing")))?;
    serde_json::from_str(&r.text("users")?).map_err(|e| StoreError::Db(format!("chunk {seq} of job {id} is unreadable: {e}")))
}

/// Every chunk's users, in order (for a job processed as one unit).
pub async fn all_chunk_users(tx: &mut Tx, org: &str, id: &str) -> Result<Vec<(i64, Vec<String>)>, StoreError> {
    tx.rows(
        "SELECT seq, users FROM job_chunks WHERE org_id = $1 AND job_id = $2 ORDER BY seq",
        args![org, id],
    )
    .await?
    .iter()
    .map(|r| {
        let users =
            serde_json::from_str(&r.text("users")?).map_err(|e| StoreError::Db(format!("a chunk of job {id} is unreadable: {e}")))?;
        Ok((r.int("seq")?, users))
    })
    .collect()
}

/// A chunk's per-user results as stored: the JSON compressed (LZ4) and
/// written as base64 text after `lz4:`, so one TEXT column serves both
/// engines. 5,000 results are ~850 KB of JSON; written as they were, they
/// were a fifth of a bulk job's WAL and, through its commits and
/// checkpoints, 15–20% of its time (BENCHMARKS.md). Built off the writer's
/// path; [`chunk_page`] gives the JSON back, and reads the plain JSON that
/// databases from before hold as well.
pub struct PackedResults(String);

const PACKED_PREFIX: &str = "lz4:";

/// Results larger than this do not come out of a chunk of 5,000 users; a
/// stored size beyond it is damage, not a reason to allocate.
const MAX_RESULTS_BYTES: usize = 256 << 20;

impl PackedResults {
    pub fn of_json(json: &str) -> PackedResults {
        use base64::Engine;
        let packed = lz4_flex::compress_prepend_size(json.as_bytes());
        PackedResults(format!(
            "{PACKED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(packed)
        ))
    }

    /// The JSON of results as stored (packed, or plain from before).
    pub fn json_of(stored: String) -> Result<String, StoreError> {
        use base64::Engine;
        let Some(b64) = stored.strip_prefix(PACKED_PREFIX) else {
            return Ok(stored);
        };
        let damaged = |why: String| StoreError::Db(format!("stored job results are damaged: {why}"));
        let packed = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| damaged(e.to_string()))?;
        let size = packed
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| damaged("no size".into()))?;
        if size > MAX_RESULTS_BYTES {
            return Err(damaged(format!("a size of {size} bytes")));
        }
        let json = lz4_flex::decompress_size_prepended(&packed).map_err(|e| damaged(e.to_string()))?;
        String::from_utf8(json).map_err(|e| damaged(e.to_string()))
    }
}

/// Marks a chunk done with its results and adds to the job's progress. A
/// chunk already done (another worker got there first) makes this a Retry,
/// which rolls back the caller's transaction: no user is done twice.
/// What a finished chunk adds to its job.
pub struct ChunkDone<'a> {
    pub seq: i64,
    pub results: &'a PackedResults,
    pub succeeded: i64,
    pub failed: i64,
    pub count: i64,
}

pub async fn complete_chunk(tx: &mut Tx, org: &str, id: &str, owner: &str, c: &ChunkDone<'_>) -> Result<(), StoreError> {
    let ChunkDone {
        seq,
        results,
        succeeded,
        failed,
        count,
    } = *c;
    let n = tx
        .exec(
            "UPDATE job_chunks SET done = TRUE, results = $4 WHERE org_id = $1 AND job_id = $2 AND seq = $3 AND done = FALSE",
            args![org, id, seq, &results.0],
        )
        .await?;
    if n != 1 {
        return Err(conflict(format!("chunk {seq} of job {id} is already done")));
    }
    let n = tx
        .exec(
            "UPDATE jobs SET done = done + $3, succeeded = succeeded + $4, failed = failed + $5 \
             WHERE org_id = $1 AND id = $2 AND lease_owner = $6",
            args![org, id, count, succeeded, failed, owner],
        )
        .await?;
    if n != 1 {
        return Err(conflict(format!("job {id} is no longer leased by this worker")));
    }
    Ok(())
}

/// Ends a job in one of the ended states.
pub async fn finish(
    tx: &mut Tx,
    org: &str,
    id: &str,
    state: JobState,
    error: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE jobs SET state = $3, error = $4, finished_at = $5, lease_owner = NULL WHERE org_id = $1 AND id = $2",
        args![org, id, state.as_str(), error.as_deref(), ts(now)],
    )
    .await?;
    // `job.finished`, in the same transaction (every way a job ends comes here).
    let error = error.map(|e| serde_json::from_str::<serde_json::Value>(&e).unwrap_or(serde_json::Value::String(e)));
    let data = serde_json::json!({ "org": org, "job": id, "state": state.as_str(), "error": error }).to_string();
    crate::webhooks::record(
        tx,
        &[crate::webhooks::NewEvent {
            org,
            event_type: "job.finished",
            subject: id,
            data,
        }],
        now,
    )
    .await
}

/// Starts a job's work over (a dry run interrupted by a restart: its results
/// are recomputed, nothing else was written).
pub async fn reset_progress(tx: &mut Tx, org: &str, id: &str) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE job_chunks SET done = FALSE, results = NULL WHERE org_id = $1 AND job_id = $2",
        args![org, id],
    )
    .await?;
    tx.exec(
        "UPDATE jobs SET done = 0, succeeded = 0, failed = 0 WHERE org_id = $1 AND id = $2",
        args![org, id],
    )
    .await?;
    Ok(())
}

/// Asks a queued or running job to stop between chunks; false if it has ended.
pub async fn request_cancel(tx: &mut Tx, org: &str, id: &str) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "UPDATE jobs SET cancel_requested = TRUE WHERE org_id = $1 AND id = $2 AND state IN ('queued', 'running')",
            args![org, id],
        )
        .await?;
    Ok(n == 1)
}

pub async fn cancel_requested(tx: &mut Tx, org: &str, id: &str) -> Result<bool, StoreError> {
    let r = tx
        .opt_row("SELECT cancel_requested FROM jobs WHERE org_id = $1 AND id = $2", args![org, id])
        .await?;
    match r {
        Some(r) => r.bool("cancel_requested"),
        None => Ok(false),
    }
}

/// A page of chunks from `from_seq` on: (seq, users, results if done).
pub async fn chunk_page(
    tx: &mut Tx,
    org: &str,
    id: &str,
    from_seq: i64,
    limit: i64,
) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
    tx.rows(
        "SELECT seq, users, results FROM job_chunks WHERE org_id = $1 AND job_id = $2 AND seq >= $3 ORDER BY seq LIMIT $4",
        args![org, id, from_seq, limit],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.int("seq")?,
            r.text("users")?,
            r.opt_text("results")?.map(PackedResults::json_of).transpose()?,
        ))
    })
    .collect()
}

/// How many jobs there are of each kind in each state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub kind: JobKind,
    pub state: JobState,
    pub jobs: i64,
}

/// Jobs by kind and state, and the users done and in total of the jobs
/// not ended (for metrics).
pub async fn counts(tx: &mut Tx) -> Result<(Vec<JobCount>, i64, i64), StoreError> {
    let rows = tx
        .rows(
            "SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state ORDER BY kind, state",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let (k, s) = (r.text("kind")?, r.text("state")?);
        out.push(JobCount {
            kind: JobKind::parse(&k).ok_or_else(|| StoreError::Db(format!("a stored job has the unknown kind {k:?}")))?,
            state: JobState::parse(&s).ok_or_else(|| StoreError::Db(format!("a stored job has the unknown state {s:?}")))?,
            jobs: r.int("n")?,
        });
    }
    let active = tx
        .opt_row(
            "SELECT CAST(COALESCE(SUM(done), 0) AS BIGINT) AS done, CAST(COALESCE(SUM(total), 0) AS BIGINT) AS total FROM jobs WHERE state IN ('queued', 'running')",
            &[],
        )
        .await?;
    let (done, total) = match active {
        Some(r) => (r.int("done")?, r.int("total")?),
        None => (0, 0),
    };
    Ok((out, done, total))
}

fn conflict(what: String) -> StoreError {
    StoreError::Domain(allot_domain::Error::new(allot_domain::Code::Conflict, what))
}

/// An org's jobs, newest first, `limit + 1` of them (the extra one says
/// that there are more), after the job `before` when given.
pub async fn list_of_org(tx: &mut Tx, org: &str, before: Option<&str>, limit: i64) -> Result<Vec<Job>, StoreError> {
    // The request without its list of users (a licence job's may name a
    // million), so that the list still says what it shows of each job
    // (preview or not, its mode).
    let columns = match tx.backend() {
        crate::Backend::Sqlite => job_columns!("json_remove(request, '$.users', '$.change.users') AS request"),
        crate::Backend::Postgres => job_columns!("((request::jsonb - 'users') #- '{change,users}')::text AS request"),
    };
    let rows = match before {
        None => {
            tx.rows(
                &format!("SELECT {columns} FROM jobs WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"),
                args![org, limit + 1],
            )
            .await?
        }
        Some(id) => {
            tx.rows(
                &format!(
                    "SELECT {columns} FROM jobs WHERE org_id = $1 \
                     AND (created_at, id) < (SELECT created_at, id FROM jobs WHERE org_id = $1 AND id = $2) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ),
                args![org, id, limit + 1],
            )
            .await?
        }
    };
    rows.iter().map(job_from).collect()
}

/// Copies a job's chunks (its users or rows, not their results) to another
/// job of the same org: a preview's users applied for real. Returns how
/// many chunks were copied.
pub async fn copy_chunks(tx: &mut Tx, org: &str, from_job: &str, to_job: &str) -> Result<u64, StoreError> {
    tx.exec(
        "INSERT INTO job_chunks (org_id, job_id, seq, users, done) \
         SELECT org_id, $3, seq, users, $4 FROM job_chunks WHERE org_id = $1 AND job_id = $2",
        args![org, from_job, to_job, false],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::PackedResults;

    #[test]
    fn packed_results_give_back_their_json_and_refuse_damage() {
        let json = format!(
            "[{}]",
            (0..5_000)
                .map(|i| format!(r#"{{"user":"usr_{i:08}","email":"u{i}@ex.example","outcome":"ok","note":"ünïcødé \"q\""}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let packed = PackedResults::of_json(&json);
        assert!(packed.0.starts_with("lz4:"));
        assert!(packed.0.len() * 4 < json.len(), "{} of {} bytes", packed.0.len(), json.len());
        assert_eq!(PackedResults::json_of(packed.0.clone()).expect("unpacks"), json);
        // Results stored before packing are plain JSON, given back as they are.
        assert_eq!(PackedResults::json_of("[]".into()).expect("plain"), "[]");
        // Damage is an error, not a panic or a huge allocation.
        for damaged in [
            "lz4:not base64!".to_string(),
            "lz4:".to_string(),
            "lz4:AAE=".to_string(),
            // A size of 4 GB in front of nothing.
            format!("lz4:{}", {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode([0xff, 0xff, 0xff, 0xff, 0x10])
            }),
            packed.0[..packed.0.len() / 2].to_string(),
        ] {
            assert!(PackedResults::json_of(damaged.clone()).is_err(), "{damaged:.40}");
        }
    }
}
