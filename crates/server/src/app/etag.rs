//! Entity tags: a resource's `etag` is a hash of what is stored for it, so
//! it changes exactly when the resource does (derived values such as a
//! subscription's seat counts or status are left out: they change without
//! anyone editing the resource). An update that sends `If-Match` with
//! another value is refused with 412 and changes nothing.

use serde::Serialize;
use sha2::{Digest, Sha256};

use allot_domain::{Code, Error};

/// The etag of a stored value: the first 16 bytes of the SHA-256 of its
/// JSON, hex.
pub fn of<T: Serialize>(stored: &T) -> String {
    // Serializing plain stored structs cannot fail (no maps with non-string
    // keys, no failing Serialize impls); an empty hash input would still
    // give a stable tag.
    let json = serde_json::to_vec(stored).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..16])
}

/// An `If-Match` precondition as sent: `*`, or one or more tags (quoted or
/// not, weak or strong; compared by value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfMatch(Option<Vec<String>>);

impl IfMatch {
    /// No precondition.
    pub fn none() -> IfMatch {
        IfMatch(None)
    }

    /// Parses the header's value.
    pub fn parse(raw: &str) -> IfMatch {
        let tags = raw
            .split(',')
            .map(|t| {
                let t = t.trim();
                let t = t.strip_prefix("W/").unwrap_or(t);
                t.trim_matches('"').to_string()
            })
            .filter(|t| !t.is_empty())
            .collect();
        IfMatch(Some(tags))
    }

    /// Ok when there is no precondition, it is `*`, or it names `current`;
    /// else 412 `precondition_failed` naming `what`.
    pub fn check(&self, what: &str, current: &str) -> Result<(), Error> {
        match &self.0 {
            None => Ok(()),
            Some(tags) if tags.iter().any(|t| t == "*" || t == current) => Ok(()),
            Some(_) => Err(Error::new(
                Code::PreconditionFailed,
                format!("{what} has changed since it was read (its etag is now \"{current}\"); read it again and repeat the change."),
            )),
        }
    }
}
