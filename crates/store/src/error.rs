//! What can go wrong below the domain ([`StoreError`]), and how engine
//! errors (constraint names, SQLSTATEs, SQLite result codes) become it.

use allot_domain::{Code, Error};

/// What can go wrong below the domain.
#[derive(Debug)]
pub enum StoreError {
    /// A refusal the use case decided (seats, rules, not found...).
    Domain(Error),
    /// A unique constraint; the text names the constraint or columns.
    Unique(String),
    /// A CHECK or foreign-key constraint.
    Constraint(String),
    /// Serialization failure, deadlock or busy database: run the unit again.
    Retry(String),
    /// The database cannot be opened at all: the sentence says why (a
    /// missing directory, a file that is not a database, a server that
    /// refused the connection).
    Open(String),
    /// The plan being written was made from a read that is stale now (a
    /// seat it counted on went to someone else, the user's licences changed
    /// meanwhile): nothing was written; read and plan again.
    Replan(String),
    Db(String),
}

impl StoreError {
    /// Whether running the unit of work again may succeed: the database
    /// asked for it, or the plan must be made again from fresh reads.
    pub fn is_retry(&self) -> bool {
        matches!(self, StoreError::Retry(_) | StoreError::Replan(_))
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Domain(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(e) => e,
            StoreError::Unique(what) => Error::new(Code::Conflict, format!("That conflicts with an existing record ({what}).")),
            StoreError::Constraint(what) => {
                tracing::error!(%what, "constraint violated");
                Error::new(Code::Conflict, "The change would break a database constraint and was not applied.")
            }
            StoreError::Retry(what) => Error::new(Code::Conflict, format!("The database stayed busy; try again ({what}).")),
            StoreError::Open(why) => Error::new(Code::Unavailable, why),
            StoreError::Replan(what) => Error::new(
                Code::Conflict,
                format!("What the change was planned from kept changing meanwhile; try again ({what})."),
            ),
            StoreError::Db(what) => {
                tracing::error!(%what, "database error");
                Error::internal("A database error occurred; nothing was changed.")
            }
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = db.message().to_string();
            let what = db.constraint().map(str::to_string).unwrap_or_else(|| msg.clone());
            return match code.as_str() {
                // PostgreSQL SQLSTATEs
                "23505" => StoreError::Unique(what),
                "23514" | "23503" => StoreError::Constraint(what),
                "40001" | "40P01" => StoreError::Retry(msg),
                // SQLite extended result codes: UNIQUE, PRIMARYKEY; CHECK, FOREIGNKEY; BUSY, LOCKED
                "2067" | "1555" => StoreError::Unique(what),
                "275" | "787" => StoreError::Constraint(what),
                "5" | "6" | "517" | "261" | "262" => StoreError::Retry(msg),
                _ => StoreError::Db(format!("{code}: {msg}")),
            };
        }
        match e {
            sqlx::Error::PoolTimedOut => StoreError::Retry("pool timed out".into()),
            other => StoreError::Db(other.to_string()),
        }
    }
}
