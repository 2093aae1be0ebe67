//! SCIM filters (RFC 7644 §3.4.2.2): parsed into a tree, printed back.
//!
//! Identity providers send filters on `GET /Users` and `/Groups` (and in
//! PATCH paths such as `members[value eq "..."]`). The parser is small and
//! bounded on purpose: the input is an attacker's string, so its length, its
//! nesting and its number of terms are capped before anything is built, and
//! no recursion is deeper than the nesting cap. What the tree means (which
//! attributes exist, which operators suit them) is decided where it is
//! turned into a query, not here.
//!
//! Accepted beyond the strict grammar, because real providers send it:
//! keywords and operators in any case (`EQ`, `And`), runs of spaces, and a
//! value path followed by a sub-attribute comparison
//! (`emails[type eq "work"].value eq "x"`, from Entra ID), read as the one
//! filter `emails[type eq "work" and value eq "x"]` it means.

use std::fmt;

/// The longest filter read, in bytes.
pub const MAX_FILTER_LEN: usize = 8 * 1024;
/// The deepest nesting of parentheses, `not` and value paths.
pub const MAX_DEPTH: usize = 16;
/// The most comparisons in one filter.
pub const MAX_TERMS: usize = 128;

/// An attribute path: `[uri:]name[.sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URI, when the path is qualified
    /// (`urn:ietf:params:scim:schemas:core:2.0:User:userName`).
    pub uri: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// A plain attribute name, or `name.sub`.
    pub fn simple(name: &str) -> AttrPath {
        match name.split_once('.') {
            Some((n, s)) => AttrPath {
                uri: None,
                name: n.to_string(),
                sub: Some(s.to_string()),
            },
            None => AttrPath {
                uri: None,
                name: name.to_string(),
                sub: None,
            },
        }
    }

    /// Whether this names `name` (and `sub`), ignoring case, as SCIM does.
    pub fn is(&self, name: &str, sub: Option<&str>) -> bool {
        self.name.eq_ignore_ascii_case(name)
            && match (&self.sub, sub) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(uri) = &self.uri {
            write!(f, "{uri}:")?;
        }
        write!(f, "{}", self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A comparison operator (`pr` is [`Filter::Present`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<CompareOp> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

/// A comparison's right-hand side. Numbers keep their text (SCIM compares
/// them as numbers; nothing here does arithmetic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompValue {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Null => write!(f, "null"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Number(n) => write!(f, "{n}"),
            // A JSON string: serializing a `str` cannot fail.
            CompValue::Str(s) => write!(f, "{}", serde_json::to_string(s).unwrap_or_default()),
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Present(AttrPath),
    Compare(AttrPath, CompareOp, CompValue),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches
    /// `filter`, whose paths name its sub-attributes.
    ValuePath(AttrPath, Box<Filter>),
}

impl fmt::Display for Filter {
    /// Prints the filter so that parsing the text gives the same tree:
    /// a logical operand that is itself `and` / `or` is parenthesised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, x: &Filter| match x {
            Filter::And(..) | Filter::Or(..) => write!(f, "({x})"),
            _ => write!(f, "{x}"),
        };
        match self {
            Filter::Present(p) => write!(f, "{p} pr"),
            Filter::Compare(p, op, v) => write!(f, "{p} {} {v}", op.as_str()),
            Filter::And(a, b) => {
                operand(f, a)?;
                write!(f, " and ")?;
                operand(f, b)
            }
            Filter::Or(a, b) => {
                operand(f, a)?;
                write!(f, " or ")?;
                operand(f, b)
            }
            Filter::Not(x) => write!(f, "not ({x})"),
            Filter::ValuePath(p, x) => write!(f, "{p}[{x}]"),
        }
    }
}

/// Why a filter was refused (answered as 400 `invalidFilter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<FilterError> for crate::Error {
    fn from(e: FilterError) -> Self {
        crate::Error::new(crate::Code::InvalidFilter, format!("The filter does not parse: {}.", e.0))
    }
}

/// Parses a filter.
pub fn parse_filter(text: &str) -> Result<Filter, FilterError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(FilterError(format!(
            "the filter is {} bytes long; at most {MAX_FILTER_LEN} are read",
            text.len()
        )));
    }
    let mut p = Parser { s: text, at: 0, terms: 0 };
    let f = p.or(0, false)?;
    p.space();
    if p.at < p.s.len() {
        return Err(p.error("expected `and`, `or` or the end of the filter"));
    }
    Ok(f)
}

/// Parses an attribute path alone (a PATCH operation's `path` without a
/// filter, or an `attributes` entry).
pub fn parse_attr_path(text: &str) -> Result<AttrPath, FilterError> {
    let mut p = Parser {
        s: text.trim(),
        at: 0,
        terms: 0,
    };
    let path = p.attr_path()?;
    if p.at < p.s.len() {
        return Err(p.error("expected the end of the attribute path"));
    }
    Ok(path)
}

/// A PATCH `path`: an attribute, `attr[filter]`, or `attr[filter].sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    /// The sub-attribute after a filter (`emails[type eq "work"].value`).
    pub sub: Option<String>,
}

/// Parses a PATCH operation's `path`.
pub fn parse_patch_path(text: &str) -> Result<PatchPath, FilterError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(FilterError(format!(
            "the path is {} bytes long; at most {MAX_FILTER_LEN} are read",
            text.len()
        )));
    }
    let mut p = Parser {
        s: text.trim(),
        at: 0,
        terms: 0,
    };
    let attr = p.attr_path()?;
    let mut out = PatchPath {
        attr,
        filter: None,
        sub: None,
    };
    if p.peek() == Some('[') {
        p.at += 1;
        out.filter = Some(p.or(1, true)?);
        p.space();
        p.expect(']')?;
        if p.peek() == Some('.') {
            p.at += 1;
            out.sub = Some(p.name()?);
        }
    }
    if p.at < p.s.len() {
        return Err(p.error("expected the end of the path"));
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
    terms: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> FilterError {
        FilterError(format!("{what} at character {}", self.at + 1))
    }

    fn peek(&self) -> Option<char> {
        self.s[self.at..].chars().next()
    }

    fn space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += self.peek().map_or(1, char::len_utf8);
        }
    }

    fn expect(&mut self, c: char) -> Result<(), FilterError> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{c}`")))
        }
    }

    /// The next word (letters, digits, `_`, `-`, `$`), not consumed.
    fn word(&self) -> &str {
        let rest = &self.s[self.at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$'))
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// Consumes `keyword` (any case) when it is the next word.
    fn keyword(&mut self, keyword: &str) -> bool {
        let save = self.at;
        self.space();
        if self.word().eq_ignore_ascii_case(keyword) {
            self.at += keyword.len();
            true
        } else {
            self.at = save;
            false
        }
    }

    /// `or` binds loosest: `a or b and c` is `a or (b and c)`.
    fn or(&mut self, depth: usize, inside_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.and(depth, inside_value_path)?;
        while self.keyword("or") {
            let right = self.and(depth, inside_value_path)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize, inside_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.unary(depth, inside_value_path)?;
        while self.keyword("and") {
            let right = self.unary(depth, inside_value_path)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn nested(&mut self, depth: usize) -> Result<usize, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(&format!("the filter nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(depth + 1)
    }

    fn unary(&mut self, depth: usize, inside_value_path: bool) -> Result<Filter, FilterError> {
        self.space();
        let save = self.at;
        if self.keyword("not") {
            self.space();
            if self.peek() == Some('(') {
                let depth = self.nested(depth)?;
                self.at += 1;
                let inner = self.or(depth, inside_value_path)?;
                self.space();
                self.expect(')')?;
                return Ok(Filter::Not(Box::new(inner)));
            }
            // An attribute called `not`.
            self.at = save;
        }
        if self.peek() == Some('(') {
            let depth = self.nested(depth)?;
            self.at += 1;
            let inner = self.or(depth, inside_value_path)?;
            self.space();
            self.expect(')')?;
            return Ok(inner);
        }
        let path = self.attr_path()?;
        if self.peek() == Some('[') {
            if inside_value_path {
                return Err(self.error("a value path cannot hold another"));
            }
            if path.sub.is_some() {
                return Err(self.error("a value path names an attribute, not a sub-attribute"));
            }
            let depth = self.nested(depth)?;
            self.at += 1;
            let mut inner = self.or(depth, true)?;
            self.space();
            self.expect(']')?;
            // Entra ID: `emails[type eq "work"].value eq "x"`.
            if self.peek() == Some('.') {
                self.at += 1;
                let sub = AttrPath {
                    uri: None,
                    name: self.name()?,
                    sub: None,
                };
                let rest = self.comparison(sub)?;
                inner = Filter::And(Box::new(inner), Box::new(rest));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.comparison(path)
    }

    /// `path pr` or `path op value`.
    fn comparison(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error(&format!("the filter has more than {MAX_TERMS} comparisons")));
        }
        self.space();
        let op = self.word().to_string();
        if op.is_empty() {
            return Err(self.error("expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"));
        }
        if op.eq_ignore_ascii_case("pr") {
            self.at += 2;
            return Ok(Filter::Present(path));
        }
        let Some(op) = CompareOp::parse(&op) else {
            return Err(self.error(&format!("`{op}` is not an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)")));
        };
        self.at += 2;
        self.space();
        let value = self.value()?;
        Ok(Filter::Compare(path, op, value))
    }

    fn value(&mut self) -> Result<CompValue, FilterError> {
        match self.peek() {
            Some('"') => {
                // The closing quote: the first `"` not escaped.
                let rest = &self.s[self.at..];
                let bytes = rest.as_bytes();
                let mut i = 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return Err(self.error("a string is not closed"));
                }
                let s: String = serde_json::from_str(&rest[..=i]).map_err(|e| self.error(&format!("a bad string ({e})")))?;
                self.at += i + 1;
                Ok(CompValue::Str(s))
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let rest = &self.s[self.at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
                    .unwrap_or(rest.len());
                let text = &rest[..end];
                if serde_json::from_str::<serde_json::Number>(text).is_err() {
                    return Err(self.error(&format!("`{text}` is not a number")));
                }
                self.at += end;
                Ok(CompValue::Number(text.to_string()))
            }
            _ => {
                let w = self.word().to_ascii_lowercase();
                let v = match w.as_str() {
                    "true" => CompValue::Bool(true),
                    "false" => CompValue::Bool(false),
                    "null" => CompValue::Null,
                    _ => return Err(self.error("expected a value: a string in double quotes, a number, true, false or null")),
                };
                self.at += w.len();
                Ok(v)
            }
        }
    }

    /// An attribute or sub-attribute name: a letter, then letters,
    /// digits, `_`, `-` or `$` (`$ref`).
    fn name(&mut self) -> Result<String, FilterError> {
        let w = self.word();
        if !w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '$') {
            return Err(self.error("expected an attribute name"));
        }
        let w = w.to_string();
        self.at += w.len();
        Ok(w)
    }

    /// `[uri:]name[.sub]`: a URI is everything up to the last `:` of the
    /// token (URIs hold dots, as in `...:core:2.0:User`).
    fn attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let rest = &self.s[self.at..];
        let token_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$' | ':' | '.')))
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        let (uri, local) = match token.rfind(':') {
            Some(i) => (Some(token[..i].to_string()), i + 1),
            None => (None, 0),
        };
        self.at += local;
        let name = self.name()?;
        let sub = if self.peek() == Some('.') {
            self.at += 1;
            Some(self.name()?)
        } else {
            None
        };
        Ok(AttrPath { uri, name, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Filter {
        parse_filter(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn cmp(name: &str, op: CompareOp, v: &str) -> Filter {
        Filter::Compare(AttrPath::simple(name), op, CompValue::Str(v.into()))
    }

    #[test]
    fn the_rfc_examples_parse() {
        for s in [
            r#"userName eq "bjensen""#,
            r#"name.familyName co "O'Malley""#,
            r#"userName sw "J""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            "title pr",
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
            r#"title pr and userType eq "Employee""#,
            r#"title pr or userType eq "Intern""#,
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType eq "Employee" and (emails.type eq "work")"#,
            r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        ] {
            let f = p(s);
            assert_eq!(p(&f.to_string()), f, "{s} printed as {f}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or_and_case_does_not_matter() {
        let a = || cmp("a", CompareOp::Eq, "1");
        let b = || cmp("b", CompareOp::Eq, "2");
        let c = || cmp("c", CompareOp::Eq, "3");
        assert_eq!(
            p(r#"a eq "1" OR b EQ "2" And c eq "3""#),
            Filter::Or(Box::new(a()), Box::new(Filter::And(Box::new(b()), Box::new(c()))))
        );
        assert_eq!(
            p(r#"(a eq "1" or b eq "2") and c eq "3""#),
            Filter::And(Box::new(Filter::Or(Box::new(a()), Box::new(b()))), Box::new(c()))
        );
    }

    #[test]
    fn qualified_paths_keep_their_uri() {
        let Filter::Compare(path, ..) = p(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "x""#) else {
            panic!("a comparison");
        };
        assert_eq!(
            path.uri.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert!(path.is("manager", Some("value")));
    }

    #[test]
    fn entra_s_value_path_with_a_sub_attribute_reads_as_one_value_filter() {
        assert_eq!(
            p(r#"emails[type eq "work"].value eq "a@b.example""#),
            Filter::ValuePath(
                AttrPath::simple("emails"),
                Box::new(Filter::And(
                    Box::new(cmp("type", CompareOp::Eq, "work")),
                    Box::new(cmp("value", CompareOp::Eq, "a@b.example"))
                ))
            )
        );
    }

    #[test]
    fn values_of_every_kind() {
        assert_eq!(
            p("active eq true"),
            Filter::Compare(AttrPath::simple("active"), CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(
            p("x eq null"),
            Filter::Compare(AttrPath::simple("x"), CompareOp::Eq, CompValue::Null)
        );
        assert_eq!(
            p("n ge -1.5e3"),
            Filter::Compare(AttrPath::simple("n"), CompareOp::Ge, CompValue::Number("-1.5e3".into()))
        );
        assert_eq!(p(r#"s eq "a \"q\" \\ \u00e9""#), cmp("s", CompareOp::Eq, "a \"q\" \\ é"));
    }

    #[test]
    fn patch_paths() {
        let path = parse_patch_path(r#"members[value eq "usr_1"]"#).unwrap();
        assert!(path.attr.is("members", None));
        assert_eq!(path.filter, Some(cmp("value", CompareOp::Eq, "usr_1")));
        let path = parse_patch_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.sub.as_deref(), Some("value"));
        let path = parse_patch_path("name.givenName").unwrap();
        assert!(path.attr.is("name", Some("givenName")) && path.filter.is_none());
        let path = parse_patch_path("urn:allot:params:scim:schemas:extension:licensing:2.0:User:usageLocation").unwrap();
        assert!(path.attr.is("usageLocation", None));
        assert!(parse_patch_path("members[").is_err());
    }

    #[test]
    fn bad_filters_say_where() {
        for (s, says) in [
            ("", "attribute name"),
            ("userName", "operator"),
            (r#"userName xx "a""#, "`xx` is not an operator"),
            (r#"userName eq "a"#, "not closed"),
            ("userName eq bjensen", "expected a value"),
            (r#"userName eq "a" and"#, "attribute name"),
            (r#"(userName eq "a""#, "expected `)`"),
            (r#"userName eq "a")"#, "end of the filter"),
            (r#"emails[value eq "a"[type eq "w"]]"#, "expected `]`"),
            (r#"emails[x[y eq "1"]]"#, "cannot hold another"),
            ("n eq 1.2.3", "not a number"),
        ] {
            let e = parse_filter(s).expect_err(s);
            assert!(e.0.contains(says), "{s}: {e}");
        }
    }

    #[test]
    fn hostile_filters_are_refused_before_anything_is_built() {
        let deep = format!("{}a pr{}", "(".repeat(1_000), ")".repeat(1_000));
        assert!(parse_filter(&deep).unwrap_err().0.contains("deeper"));
        let nots = format!("{}a pr{}", "not (".repeat(1_000), ")".repeat(1_000));
        assert!(parse_filter(&nots).unwrap_err().0.contains("deeper"));
        let long = format!(r#"userName eq "{}""#, "x".repeat(1 << 20));
        assert!(parse_filter(&long).unwrap_err().0.contains("at most"));
        let many = vec![r#"a eq "1""#; 300].join(" or ");
        assert!(parse_filter(&many).unwrap_err().0.contains("comparisons"));
    }
}
