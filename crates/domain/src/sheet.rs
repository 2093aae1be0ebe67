//! The users CSV: one row per user, `email`, `display_name`,
//! `kind`, `status`, `usage_location`, then one `TRUE`/`FALSE` column per
//! subscription item headed `<product code> [<subscription id>]`.
//!
//! Pure: the server reads records with a CSV parser and hands their cells
//! here. What is decided here: which header is acceptable, what a cell
//! means, which rows are malformed (with their line numbers), and what
//! licence change a row asks of a user holding some licences.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::catalogue::Product;
use crate::error::{Code, Error, Violation};
use crate::planner::{AddLicense, Held, LicenseChange, RemoveLicense};
use crate::types::{excerpt, CountryCode, Email, ProductCode, UserKind, UserStatus};

/// The user columns, in export order.
pub const USER_COLUMNS: [&str; 5] = ["email", "display_name", "kind", "status", "usage_location"];

/// At most this many malformed rows are listed in one refusal (the count says how many in all).
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// One subscription item column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemColumn {
    pub product: ProductCode,
    pub subscription: String,
}

impl ItemColumn {
    pub fn heading(&self) -> String {
        format!("{} [{}]", self.product, self.subscription)
    }
}

/// What a column of an uploaded file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRole {
    Email,
    DisplayName,
    Kind,
    Status,
    UsageLocation,
    /// Index into [`Header::items`].
    Item(usize),
    /// A column with an empty heading (spreadsheets add them at the end):
    /// its cells must be empty.
    Unnamed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub roles: Vec<ColumnRole>,
    /// The item columns of the file, in file order.
    pub items: Vec<ItemColumn>,
}

/// A cell as a spreadsheet saved it: the leading `'` that export put before
/// a formula character is taken off again.
pub fn unescape_cell(s: &str) -> &str {
    match s.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => s,
    }
}

/// A cell for export: a leading `=`, `+`, `-`, `@`, tab or CR gets a `'` so
/// that a spreadsheet shows it instead of running it as a formula.
pub fn escape_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Finds a quoted cell that is never closed, reading a CSV file's bytes as
/// they arrive. A CSV reader takes such a quote as a cell that runs to the
/// end of the file, so five rows would become one user whose name holds
/// the other four; the import refuses the file instead, naming the line.
///
/// It follows the reader's rules: a quote opens a quoted cell only at the
/// start of a cell (elsewhere it is a plain character), `""` inside one is
/// a quote, and a quote followed by anything else closes it.
#[derive(Debug, Clone)]
pub struct QuoteScanner {
    state: QuoteState,
    line: u64,
    opened_on: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    CellStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl Default for QuoteScanner {
    fn default() -> Self {
        QuoteScanner {
            state: QuoteState::CellStart,
            line: 1,
            opened_on: 0,
        }
    }
}

impl QuoteScanner {
    pub fn feed(&mut self, bytes: &[u8]) {
        use QuoteState::*;
        for &b in bytes {
            if b == b'\n' {
                self.line += 1;
            }
            self.state = match (self.state, b) {
                (CellStart, b'"') => {
                    self.opened_on = self.line;
                    Quoted
                }
                (CellStart | Unquoted | QuoteInQuoted, b',' | b'\n') => CellStart,
                (CellStart | Unquoted, _) => Unquoted,
                (Quoted, b'"') => QuoteInQuoted,
                (Quoted, _) => Quoted,
                (QuoteInQuoted, b'"') => Quoted,
                (QuoteInQuoted, _) => Unquoted,
            };
        }
    }

    /// At the end of the file: the line of a quoted cell still open, if any.
    pub fn unclosed_quote(&self) -> Option<u64> {
        (self.state == QuoteState::Quoted).then_some(self.opened_on)
    }
}

/// The refusal of a file whose quoted cell opened on `line` never closes.
pub fn unclosed_quote_refused(line: u64) -> Error {
    let msg = format!(
        "Line {line} opens a quoted cell (\") that is never closed, so the rest of the file would be read as one cell. Close the quote, or remove it."
    );
    Error {
        code: Code::CsvRowInvalid,
        detail: format!("The file was not imported: {msg}"),
        violations: vec![Violation::new(Code::CsvRowInvalid, msg).with_row(line)],
    }
}

fn parse_heading(h: &str) -> Option<(&str, &str)> {
    let h = h.trim();
    let open = h.rfind(" [")?;
    let inner = h[open + 2..].strip_suffix(']')?;
    Some((h[..open].trim(), inner.trim()))
}

/// Reads the header row against the org's subscription items. Refused as a
/// whole (`csv_header_invalid`) naming every unknown, repeated or missing
/// column.
pub fn parse_header(cells: &[String], org_items: &[ItemColumn]) -> Result<Header, Error> {
    let mut roles = Vec::with_capacity(cells.len());
    let mut items = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in cells.iter().enumerate() {
        // A UTF-8 byte order mark may start the first heading.
        let text = if i == 0 { raw.trim_start_matches('\u{feff}') } else { raw.as_str() };
        let text = text.trim();
        if text.is_empty() {
            roles.push(ColumnRole::Unnamed);
            continue;
        }
        if let Some(first) = seen.insert(text.to_lowercase(), i + 1) {
            problems.push(format!("column {} repeats \"{}\" (column {first})", i + 1, excerpt(text)));
            roles.push(ColumnRole::Unnamed);
            continue;
        }
        let role = match text.to_lowercase().as_str() {
            "email" => Some(ColumnRole::Email),
            "display_name" => Some(ColumnRole::DisplayName),
            "kind" => Some(ColumnRole::Kind),
            "status" => Some(ColumnRole::Status),
            "usage_location" => Some(ColumnRole::UsageLocation),
            _ => parse_heading(text).and_then(|(product, sub)| {
                let col = org_items.iter().find(|c| c.product.as_str() == product && c.subscription == sub)?;
                items.push(col.clone());
                Some(ColumnRole::Item(items.len() - 1))
            }),
        };
        match role {
            Some(r) => roles.push(r),
            None => {
                let why = match parse_heading(text) {
                    Some((product, sub)) => format!(
                        "column {} \"{}\" names no item of this organisation (product {} on subscription {})",
                        i + 1,
                        excerpt(text),
                        excerpt(product),
                        excerpt(sub)
                    ),
                    None => format!(
                        "column {} \"{}\" is not a known column: use {} or \"<product code> [<subscription id>]\"",
                        i + 1,
                        excerpt(text),
                        USER_COLUMNS.join(", ")
                    ),
                };
                problems.push(why);
                roles.push(ColumnRole::Unnamed);
            }
        }
    }
    if !roles.contains(&ColumnRole::Email) {
        problems.push("the email column is missing".into());
    }
    if problems.is_empty() {
        Ok(Header { roles, items })
    } else {
        // However many columns are wrong, the answer lists at most
        // MAX_LISTED_PROBLEMS and says how many there were.
        let total = problems.len();
        let detail = if total == 1 {
            format!("The header row is not valid: {}.", problems[0])
        } else {
            format!("The header row is not valid: {total} problems, the first: {}.", problems[0])
        };
        let violations = problems
            .into_iter()
            .take(MAX_LISTED_PROBLEMS)
            .map(|p| Violation::new(Code::CsvHeaderInvalid, p).field("header"))
            .collect();
        Err(Error {
            code: Code::CsvHeaderInvalid,
            detail,
            violations,
        })
    }
}

/// One data row, checked: what it says about one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SheetRow {
    /// The line number of the row's first line in the file (the header is line 1).
    pub row: u64,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<UserKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<String>,
    /// (index into the header's items, TRUE or FALSE); blank cells are left out.
    pub cells: Vec<(usize, bool)>,
}

impl SheetRow {
    pub fn normalized_email(&self) -> String {
        self.email.to_lowercase()
    }
}

/// Checks one data row. Every problem of the row is returned, each naming
/// its line and column.
pub fn parse_row(header: &Header, row: u64, cells: &[String]) -> Result<SheetRow, Vec<Violation>> {
    let mut problems = Vec::new();
    let bad = |column: &str, msg: String| Violation::new(Code::CsvRowInvalid, msg).with_row(row).field(column);
    let mut out = SheetRow {
        row,
        email: String::new(),
        display_name: None,
        kind: None,
        status: None,
        usage_location: None,
        cells: Vec::new(),
    };
    if cells.len() > header.roles.len() && cells[header.roles.len()..].iter().any(|c| !c.trim().is_empty()) {
        problems.push(bad(
            "row",
            format!(
                "Line {row} has {} cells but the header has {} columns.",
                cells.len(),
                header.roles.len()
            ),
        ));
    }
    for (i, role) in header.roles.iter().enumerate() {
        let raw = cells.get(i).map(String::as_str).unwrap_or("");
        let v = unescape_cell(raw.trim()).trim();
        match role {
            ColumnRole::Email => match Email::parse(v) {
                Ok(e) => out.email = e.as_str().to_string(),
                Err(e) => problems.push(bad("email", format!("Line {row}: {}", e.detail))),
            },
            ColumnRole::DisplayName => {
                if v.is_empty() {
                } else if let Err(e) = crate::types::check_text("display_name", v, 200) {
                    problems.push(bad("display_name", format!("Line {row}: {}", e.detail)));
                } else {
                    out.display_name = Some(v.to_string());
                }
            }
            ColumnRole::Kind if !v.is_empty() => match UserKind::parse(&v.to_lowercase()) {
                Some(k) => out.kind = Some(k),
                None => problems.push(bad(
                    "kind",
                    format!("Line {row}: kind must be internal or external, not \"{}\".", excerpt(v)),
                )),
            },
            ColumnRole::Status if !v.is_empty() => match UserStatus::parse(&v.to_lowercase()) {
                Some(s) => out.status = Some(s),
                None => problems.push(bad(
                    "status",
                    format!("Line {row}: status must be active, pending or inactive, not \"{}\".", excerpt(v)),
                )),
            },
            ColumnRole::UsageLocation if !v.is_empty() => match CountryCode::parse(v) {
                Ok(c) => out.usage_location = Some(c.as_str().to_string()),
                Err(e) => problems.push(bad("usage_location", format!("Line {row}: {}", e.detail))),
            },
            ColumnRole::Item(idx) if !v.is_empty() => {
                if v.eq_ignore_ascii_case("true") {
                    out.cells.push((*idx, true));
                } else if v.eq_ignore_ascii_case("false") {
                    out.cells.push((*idx, false));
                } else {
                    problems.push(bad(
                        &header.items[*idx].heading(),
                        format!(
                            "Line {row}, column {}: \"{}\" is neither TRUE nor FALSE (leave the cell blank for no change).",
                            header.items[*idx].heading(),
                            excerpt(v)
                        ),
                    ));
                }
            }
            ColumnRole::Unnamed if !v.is_empty() => problems.push(bad(
                "row",
                format!(
                    "Line {row}, column {}: \"{}\" is under a column without a valid heading.",
                    i + 1,
                    excerpt(v)
                ),
            )),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The refusal of a file whose rows have problems: the first
/// [`MAX_LISTED_PROBLEMS`] listed, and how many there are in all.
pub fn rows_refused(problems: Vec<Violation>, total: usize) -> Error {
    let first = problems.first().map(|p| p.message.clone()).unwrap_or_default();
    let detail = if total == 1 {
        format!("The file was not imported: {first}")
    } else {
        format!("The file was not imported: {total} problems in its rows, the first: {first}")
    };
    Error {
        code: Code::CsvRowInvalid,
        detail,
        violations: problems.into_iter().take(MAX_LISTED_PROBLEMS).collect(),
    }
}

/// Whether an import may take licences away (`add_and_remove`) or only add
/// (`add_only`; a FALSE paired with a TRUE of the same family is still a move).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    #[default]
    AddOnly,
    AddAndRemove,
}

/// What a row asks of a user holding `held`: TRUE where the user does not
/// hold that item adds it; FALSE where the user holds it removes it (in
/// `add_and_remove`, or in either mode when a TRUE of the same family in the
/// row takes its place: a move, which keeps the family's service data).
/// None when the row changes nothing.
pub fn row_change(
    row: &SheetRow,
    items: &[ItemColumn],
    held: &[Held],
    mode: ImportMode,
    catalogue: &HashMap<ProductCode, Product>,
) -> Option<LicenseChange> {
    let family = |p: &ProductCode| catalogue.get(p).map(|x| x.family.clone());
    let holds = |c: &ItemColumn| held.iter().any(|h| h.product == c.product && h.subscription == c.subscription);
    let mut add: Vec<AddLicense> = Vec::new();
    let mut remove: Vec<RemoveLicense> = Vec::new();
    let mut families_added: BTreeSet<String> = BTreeSet::new();
    for (idx, value) in &row.cells {
        let c = &items[*idx];
        if *value && !holds(c) {
            if let Some(f) = family(&c.product) {
                families_added.insert(f.to_string());
            }
            add.push(AddLicense {
                product: c.product.clone(),
                subscription: Some(c.subscription.clone()),
                properties: Default::default(),
            });
        }
    }
    for (idx, value) in &row.cells {
        let c = &items[*idx];
        if !*value && holds(c) {
            let is_move = family(&c.product).is_some_and(|f| families_added.contains(f.as_str()));
            if mode == ImportMode::AddAndRemove || is_move {
                remove.push(RemoveLicense {
                    product: c.product.clone(),
                    subscription: Some(c.subscription.clone()),
                });
            }
        }
    }
    LicenseChange {
        add,
        remove,
        add_required: false,
    }
    .unless_empty()
}

/// What a `csv_import` job stores: its rows are in the job's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub mode: ImportMode,
    pub dry_run: bool,
    /// The file's item columns; a row's cells index into them.
    pub columns: Vec<ItemColumn>,
    pub rows: u64,
    pub file_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<ItemColumn> {
        ["calling-professional", "meetings"]
            .iter()
            .flat_map(|p| {
                ["sub_a", "sub_b"].iter().map(move |s| ItemColumn {
                    product: ProductCode::parse(p).unwrap(),
                    subscription: s.to_string(),
                })
            })
            .collect()
    }

    fn cells(s: &[&str]) -> Vec<String> {
        s.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn header_accepts_bom_case_and_trailing_empty_columns() {
        let h = parse_header(&cells(&["\u{feff}Email", "display_name", "meetings [sub_b]", "", ""]), &items()).unwrap();
        assert_eq!(
            h.roles,
            vec![
                ColumnRole::Email,
                ColumnRole::DisplayName,
                ColumnRole::Item(0),
                ColumnRole::Unnamed,
                ColumnRole::Unnamed
            ]
        );
        assert_eq!(h.items[0].heading(), "meetings [sub_b]");
    }

    #[test]
    fn header_names_every_unknown_repeated_or_missing_column() {
        let e = parse_header(
            &cells(&["name", "meetings [sub_x]", "meetings [sub_a]", "Meetings [sub_a]"]),
            &items(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::CsvHeaderInvalid);
        // The detail names the first problem and the count; the violations each.
        assert!(e.detail.contains("4 problems"), "{}", e.detail);
        assert!(e.detail.contains("\"name\" is not a known column"), "{}", e.detail);
        let all: Vec<&str> = e.violations.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(all.len(), 4);
        for named in ["\"name\" is not a known column", "sub_x", "repeats", "email column is missing"] {
            assert!(all.iter().any(|m| m.contains(named)), "{named} in {all:?}");
        }
    }

    #[test]
    fn rows_read_booleans_blanks_and_escapes() {
        let h = parse_header(
            &cells(&[
                "email",
                "display_name",
                "calling-professional [sub_a]",
                "meetings [sub_a]",
                "meetings [sub_b]",
            ]),
            &items(),
        )
        .unwrap();
        let r = parse_row(&h, 2, &cells(&[" Anna@Example.com ", "'=SUM(1)", "true", "", "False", "", ""])).unwrap();
        assert_eq!(r.email, "Anna@Example.com");
        assert_eq!(r.display_name.as_deref(), Some("=SUM(1)"));
        assert_eq!(r.cells, vec![(0, true), (2, false)]);
        let e = parse_row(&h, 7, &cells(&["anna", "", "yes", "", "", "x"])).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().all(|v| v.row == Some(7)));
        assert!(e.iter().any(|v| v.message.contains("neither TRUE nor FALSE")), "{e:?}");
        assert!(e.iter().any(|v| v.message.contains("6 cells but the header has 5")), "{e:?}");
    }

    fn product(code: &str, family: &str) -> (ProductCode, Product) {
        let code = ProductCode::parse(code).unwrap();
        let p = Product {
            code: code.clone(),
            name: code.to_string(),
            family: ProductCode::parse(family).unwrap(),
            features: vec![],
            rules: Default::default(),
            properties: Default::default(),
            retention_days: 7,
        };
        (code, p)
    }

    #[test]
    fn rows_become_adds_removes_and_moves() {
        let cat: HashMap<ProductCode, Product> = [product("calling-professional", "calling"), product("meetings", "meetings")]
            .into_iter()
            .collect();
        let cols = items(); // 0: calling A, 1: calling B, 2: meetings A, 3: meetings B
        let held = |p: &str, s: &str| Held {
            product: ProductCode::parse(p).unwrap(),
            subscription: s.into(),
            properties: Default::default(),
        };
        let row = |cells: Vec<(usize, bool)>| SheetRow {
            row: 2,
            email: "a@b.se".into(),
            display_name: None,
            kind: None,
            status: None,
            usage_location: None,
            cells,
        };
        let has = [held("calling-professional", "sub_a"), held("meetings", "sub_a")];
        // FALSE on calling A + TRUE on calling B: a move in either mode.
        for mode in [ImportMode::AddOnly, ImportMode::AddAndRemove] {
            let c = row_change(&row(vec![(0, false), (1, true)]), &cols, &has, mode, &cat).unwrap();
            assert_eq!((c.add.len(), c.remove.len()), (1, 1), "{mode:?}");
            assert_eq!(c.add[0].subscription.as_deref(), Some("sub_b"));
        }
        // FALSE alone removes only in add_and_remove.
        let r = row(vec![(2, false)]);
        assert!(row_change(&r, &cols, &has, ImportMode::AddOnly, &cat).is_none());
        assert_eq!(row_change(&r, &cols, &has, ImportMode::AddAndRemove, &cat).unwrap().remove.len(), 1);
        // What is already so changes nothing: TRUE held, FALSE not held.
        let r = row(vec![(0, true), (3, false)]);
        assert!(row_change(&r, &cols, &has, ImportMode::AddAndRemove, &cat).is_none());
    }

    #[test]
    fn export_escaping_round_trips() {
        for s in ["=1+1", "+46", "-x", "@a", "\tx", "plain", "'quoted"] {
            assert_eq!(unescape_cell(&escape_cell(s)), s);
        }
        assert_eq!(escape_cell("=1"), "'=1");
    }
}

#[cfg(test)]
mod quote_tests {
    use super::*;

    fn scan(s: &str) -> Option<u64> {
        let mut q = QuoteScanner::default();
        // Fed in pieces, as an upload arrives.
        for piece in s.as_bytes().chunks(3) {
            q.feed(piece);
        }
        q.unclosed_quote()
    }

    #[test]
    fn a_quote_left_open_is_found_on_its_line() {
        assert_eq!(scan("email,display_name\na@x.se,\"Anna\nb@x.se,Bo\nc@x.se,Cy\n"), Some(2));
        assert_eq!(scan("email\n\"a@x.se"), Some(2));
    }

    #[test]
    fn closed_quotes_escapes_and_plain_quotes_are_fine() {
        assert_eq!(
            scan("email,display_name\na@x.se,\"Anna, \"\"the\"\" first\"\nb@x.se,5\" screen\n"),
            None
        );
        assert_eq!(scan("email,display_name\na@x.se,\"two\nlines\"\n"), None);
        assert_eq!(scan("email,display_name\r\na@x.se,\"x\"\r\n"), None);
        assert_eq!(scan(""), None);
    }

    #[test]
    fn long_cells_are_quoted_in_part() {
        let long = "x".repeat(10_000);
        assert!(excerpt(&long).chars().count() <= 61);
        assert_eq!(excerpt("short"), "short");
    }
}
