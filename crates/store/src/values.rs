//! Values crossing the boundary: arguments bound to a statement ([`Val`],
//! built with `args![...]`) and rows read back ([`Row`]), the same for both
//! engines.

use crate::db::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A value bound to a query. Nulls carry their type because PostgreSQL must
/// know a parameter's type even when it is null.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Text(String),
    Bool(bool),
    NullInt,
    NullText,
    /// Many values as one parameter: a PostgreSQL array, or on SQLite a JSON
    /// array read with `json_each` (see [`Tx::any_of`] and [`Tx::insert_rows`]).
    Texts(Vec<Option<String>>),
    Ints(Vec<Option<i64>>),
    Bools(Vec<Option<bool>>),
}

impl Val {
    /// Texts as one list parameter.
    pub fn texts<S: AsRef<str>>(items: &[S]) -> Val {
        Val::Texts(items.iter().map(|s| Some(s.as_ref().to_string())).collect())
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        v.map(Val::Text).unwrap_or(Val::NullText)
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        v.map(|s| Val::Text(s.to_string())).unwrap_or(Val::NullText)
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        v.map(Val::Int).unwrap_or(Val::NullInt)
    }
}

/// `args![a, b, c]` builds the argument list of a query.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::Val::from($v)),*][..] };
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

/// A cell of [`Tx::rows_packed`], read straight from its JSON.
pub(crate) struct PackedCell(pub(crate) Option<Cell>);

impl<'de> serde::Deserialize<'de> for PackedCell {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CellVisitor;
        impl serde::de::Visitor<'_> for CellVisitor {
            type Value = PackedCell;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column value (null, number, text or boolean)")
            }
            fn visit_unit<E>(self) -> Result<PackedCell, E> {
                Ok(PackedCell(None))
            }
            fn visit_bool<E>(self, v: bool) -> Result<PackedCell, E> {
                Ok(PackedCell(Some(Cell::Bool(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<PackedCell, E> {
                Ok(PackedCell(Some(Cell::Int(v))))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PackedCell, E> {
                i64::try_from(v).map(|v| PackedCell(Some(Cell::Int(v)))).map_err(E::custom)
            }
            fn visit_f64<E>(self, v: f64) -> Result<PackedCell, E> {
                Ok(PackedCell(Some(Cell::Float(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<PackedCell, E> {
                Ok(PackedCell(Some(Cell::Text(v.to_string()))))
            }
            fn visit_string<E>(self, v: String) -> Result<PackedCell, E> {
                Ok(PackedCell(Some(Cell::Text(v))))
            }
        }
        d.deserialize_any(CellVisitor)
    }
}

/// The names of a result's columns, shared by its rows.
pub(crate) type ColumnNames = std::sync::Arc<[Box<str>]>;

/// One result row, read by column name (`r.text("email")`): a statement's
/// columns may be reordered or added without touching the code that reads
/// them. Expressions need a name (`COUNT(*) AS n`).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub(crate) cells: Vec<Option<Cell>>,
    pub(crate) names: ColumnNames,
}

impl Row {
    /// The position of column `name` (ASCII case-insensitively: PostgreSQL
    /// folds unquoted names to lowercase).
    fn at(&self, name: &str) -> Result<usize, StoreError> {
        // Exact first: the names as written in the statements match as
        // they are on both engines (all lowercase), so the fallback is rare.
        self.names
            .iter()
            .position(|n| **n == *name)
            .or_else(|| self.names.iter().position(|n| n.eq_ignore_ascii_case(name)))
            .ok_or_else(|| StoreError::Db(format!("no column {name:?} in the row (it has {:?})", self.names)))
    }
    fn cell(&self, name: &str) -> Result<&Option<Cell>, StoreError> {
        let i = self.at(name)?;
        self.cells
            .get(i)
            .ok_or_else(|| StoreError::Db(format!("column {name} missing from row")))
    }
    pub fn text(&self, name: &str) -> Result<String, StoreError> {
        self.opt_text(name)?.ok_or_else(|| StoreError::Db(format!("column {name} is null")))
    }
    pub fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self.cell(name)? {
            None => Ok(None),
            Some(Cell::Text(s)) => Ok(Some(s.clone())),
            Some(other) => Err(StoreError::Db(format!("column {name}: expected text, found {other:?}"))),
        }
    }
    pub fn int(&self, name: &str) -> Result<i64, StoreError> {
        match self.cell(name)? {
            Some(Cell::Int(v)) => Ok(*v),
            Some(Cell::Float(f)) if f.fract() == 0.0 => Ok(*f as i64),
            other => Err(StoreError::Db(format!("column {name}: expected integer, found {other:?}"))),
        }
    }
    pub fn cell_is_null(&self, name: &str) -> bool {
        matches!(self.cell(name), Ok(None) | Err(_))
    }
    pub fn bool(&self, name: &str) -> Result<bool, StoreError> {
        match self.cell(name)? {
            Some(Cell::Bool(b)) => Ok(*b),
            // SQLite keeps booleans as 0/1.
            Some(Cell::Int(v)) => Ok(*v != 0),
            other => Err(StoreError::Db(format!("column {name}: expected boolean, found {other:?}"))),
        }
    }
}
