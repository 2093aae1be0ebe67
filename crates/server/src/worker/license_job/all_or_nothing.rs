//! `all_or_nothing`: every user planned in one transaction; any refusal
//! and nothing is applied.

use allot_domain::bulk::{JobState, Outcome, UserResult};
use allot_domain::{Code, Error};
use allot_store::jobs::{self, Job};
use allot_store::{in_transaction, users, StoreError, Tx};

use super::super::chunks::{keep_lease, record_chunk, refusals};
use super::super::Lease;
use crate::app::jobs::JobError;
use crate::app::App as AppState;

use super::plan::{apply_chunk, plan_chunk, ChunkPlans, ChunkWrite};
use super::{end, pools, Setting};

/// Plans every user of the job in `tx` and, when all are allowed and it is
/// not a dry run, applies them and marks every chunk done. Returns how many
/// were refused and, when nothing was applied, the plans for the results.
pub(super) async fn plan_and_apply_all(
    tx: &mut Tx,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(i64, Vec<(i64, ChunkPlans)>), StoreError> {
    let dry = setting.req.dry_run;
    keep_lease(tx, job, owner, now).await?;
    let chunks = jobs::all_chunk_users(tx, &job.org, &job.id).await?;
    let mut pools = pools(tx, job, setting).await?;
    let mut all: Vec<(i64, ChunkPlans)> = Vec::with_capacity(chunks.len());
    for (seq, chunk) in &chunks {
        if !dry {
            users::lock_licenses(tx, &job.org, chunk).await?;
        }
        all.push((*seq, plan_chunk(tx, job, setting, chunk, &mut pools, today).await?));
    }
    let refused: i64 = all.iter().map(|(_, p)| refusals(&p.results)).sum();
    if refused > 0 || dry {
        return Ok((refused, all));
    }
    // The lease was renewed above, in this same transaction.
    for (seq, plans) in &all {
        let write = ChunkWrite::of(tx.backend(), job, setting, *seq, plans, now);
        apply_chunk(tx, job, setting, plans, write, now)
            .await?
            .store(tx, job, owner)
            .await?;
    }
    Ok((0, Vec::new()))
}

/// `all_or_nothing`: every user planned in one transaction; any refusal and
/// nothing is applied (the others are reported as skipped).
pub(super) async fn run_all_or_nothing(st: &AppState, job: &Job, owner: &Lease, setting: &Setting) -> Result<(), Error> {
    let today = st.clock.today();
    let now = st.clock.now();
    let dry = setting.req.dry_run;
    // Not `in_transaction!`: a refused job must roll back (the user locks
    // included) yet keep its plans for the results.
    let mut attempt = 0u32;
    let outcome = loop {
        let mut tx = st.store.begin().await?;
        let result = plan_and_apply_all(&mut tx, job, owner, setting, today, now).await;
        match result {
            Ok((refused, all)) if refused > 0 || dry => {
                tx.rollback().await?;
                break (refused, all);
            }
            other => match allot_store::finish(tx, other).await {
                allot_store::Outcome::Done(r) => break r?,
                allot_store::Outcome::Retry(e) => {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(e.into());
                    }
                    allot_store::backoff(attempt).await;
                }
            },
        }
    };
    let (refused, all) = outcome;
    if refused == 0 && !dry {
        return end(st, job, setting).await;
    }
    // Refused (or a dry run): write the results alone, in their own transaction.
    in_transaction!(st.store, |tx| {
        for (seq, plans) in &all {
            let results: Vec<UserResult> = plans
                .results
                .iter()
                .map(|r| {
                    if refused > 0 && r.outcome != Outcome::Error {
                        UserResult::skipped(
                            &r.user,
                            Some("not_applied"),
                            format!("Not applied: the job is all or nothing and {refused} users were refused."),
                        )
                    } else {
                        r.clone()
                    }
                })
                .collect();
            record_chunk(&mut tx, job, owner, *seq, &results).await?;
        }
        let (state, error) = if refused > 0 {
            let e = Error::new(
                Code::ValidationFailed,
                format!("{refused} users were refused; the job is all or nothing, so nothing was changed."),
            );
            (JobState::Failed, Some(JobError::of(&e).to_stored()))
        } else {
            (JobState::Succeeded, None)
        };
        jobs::finish(&mut tx, &job.org, &job.id, state, error.clone(), now).await
    })
}
