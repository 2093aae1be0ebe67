//! Lists come in pages: `?limit=` (1 to 1,000, default 100) and `?cursor=`
//! (the `next_cursor` of the page before), answered as
//! `{"items": [...], "next_cursor": ...}`.

use serde::{Deserialize, Serialize};

use allot_domain::Error;

/// The most items one page holds.
pub const MAX_PAGE: i64 = 1000;

/// `?limit=&cursor=` of list operations.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub cursor: Option<String>,
}

/// A checked page request.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: i64,
    /// Items after this key (exclusive).
    pub after: Option<String>,
}

impl Page {
    /// Checks `limit` (1 to 1,000, default 100) and a cursor of ids.
    pub fn of(limit: Option<i64>, cursor: Option<&str>) -> Result<Page, Error> {
        let limit = limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::validation(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE} (got {limit})."),
            ));
        }
        let after = match cursor {
            None => None,
            Some(c) if !c.is_empty() && c.len() <= 200 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') => {
                Some(c.to_string())
            }
            Some(_) => return Err(Error::validation("cursor", "cursor is not one this server handed out.")),
        };
        Ok(Page { limit, after })
    }
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, Error> {
        Page::of(self.limit, self.cursor.as_deref())
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Paged<T> {
    /// A page from up to `limit + 1` rows (the extra one only says that
    /// there are more), keyed for the cursor by `key`.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Paged<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(&key) } else { None };
        Paged { items: rows, next_cursor }
    }

    /// Every item at once (lists that are short by nature).
    pub fn all(items: Vec<T>) -> Paged<T> {
        Paged { items, next_cursor: None }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paged<U> {
        Paged {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
