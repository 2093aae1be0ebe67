//! Units of work that may be run again: how a unit ended ([`Outcome`]),
//! committing or undoing it ([`finish`]), the backoff between attempts, the
//! [`in_transaction!`](crate::in_transaction) macro, and new ids.

use rand::Rng;
use std::time::Duration;

use allot_domain::Error;

use crate::db::{StoreError, Tx};

/// How a unit of work ended: done (committed or refused), or to be run again.
pub enum Outcome<T> {
    Done(Result<T, Error>),
    Retry(StoreError),
}

/// Commits a successful unit of work, rolls back a failed one, and says
/// whether the failure is worth another attempt.
pub async fn finish<T>(tx: Tx, result: Result<T, StoreError>) -> Outcome<T> {
    match result {
        Ok(v) => match tx.commit().await {
            Ok(()) => Outcome::Done(Ok(v)),
            Err(e) if e.is_retry() => Outcome::Retry(e),
            Err(e) => Outcome::Done(Err(e.into())),
        },
        Err(e) => {
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = ?rb, "rollback failed");
            }
            if e.is_retry() {
                Outcome::Retry(e)
            } else {
                Outcome::Done(Err(e.into()))
            }
        }
    }
}

/// Exponential backoff with jitter between attempts of a unit of work.
pub async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(8));
    let jitter = rand::thread_rng().gen_range(0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// Runs `$body` (an expression using `$tx: &mut Tx` and `?` on
/// `StoreError`s) in one write transaction, retrying the whole unit on
/// serialization failures, deadlocks and busy errors. Evaluates to
/// `Result<T, allot_domain::Error>`.
#[macro_export]
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let mut $tx = match $store.begin().await {
                Ok(tx) => tx,
                Err(e) if e.is_retry() && attempt < 8 => {
                    attempt += 1;
                    $crate::backoff(attempt).await;
                    continue;
                }
                Err(e) => break Err(allot_domain::Error::from(e)),
            };
            let result = async { $body }.await;
            match $crate::finish($tx, result).await {
                $crate::Outcome::Done(r) => break r,
                $crate::Outcome::Retry(e) => {
                    attempt += 1;
                    if attempt > 8 {
                        break Err(allot_domain::Error::from(e));
                    }
                    $crate::backoff(attempt).await;
                }
            }
        }
    }};
}

/// A new opaque id: a prefix, then 10 characters of milliseconds and 16 random
/// characters in Crockford base32, so ids sort by creation time (which keyset
/// pagination relies on) and are unguessable.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..10).rev() {
        out.push(ALPHABET[((millis >> (i * 5)) & 31) as usize] as char);
    }
    // 80 random bits, five per character, from one draw (a bulk job makes
    // an id per audit event; a draw per character showed in its profile).
    let mut bits: u128 = rand::thread_rng().gen();
    for _ in 0..16 {
        out.push(ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_sort_by_time_and_differ() {
        let a = new_id("evt");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("evt");
        for id in [&a, &b] {
            assert_eq!(id.len(), 4 + 26, "{id}");
            assert!(id.starts_with("evt_"));
            assert!(id[4..].bytes().all(|c| b"0123456789abcdefghjkmnpqrstvwxyz".contains(&c)), "{id}");
        }
        assert!(a < b, "{a} then {b}");
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| new_id("x")).collect();
        assert_eq!(many.len(), 10_000, "ids made in the same millisecond must still differ");
    }
}
