//! Whether a SCIM resource matches a filter, decided on the resource as it
//! is served (its JSON), so that a filter means exactly what a client sees.
//!
//! Attribute names are matched without regard to case (RFC 7643 §2.1);
//! string values too, except for the attributes the schema marks
//! `caseExact` (`id`, `externalId`, `meta.version`...: [`case_exact`]). A
//! multi-valued attribute matches when one of its values does. Dates are
//! served in one format (RFC 3339, UTC), so ordering them as text orders
//! them in time.

use serde_json::Value;

use super::filter::{AttrPath, CompValue, CompareOp, Filter};

/// Attributes compared exactly (case counts), by their name path.
pub fn case_exact(name: &str, sub: Option<&str>) -> bool {
    matches!(
        (name.to_ascii_lowercase().as_str(), sub.map(str::to_ascii_lowercase).as_deref()),
        ("id", None) | ("externalid", None) | ("meta", Some("version")) | ("meta", Some("location")) | ("members", Some("value"))
    )
}

/// The member of an object whose key equals `name` ignoring case.
fn member<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// The values a path reaches in `resource`: several for a multi-valued
/// attribute (`emails.value` gives every email's value).
fn values<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    // A qualified path names an extension's attribute inside its object,
    // or a core attribute (whose URI is the resource's own schema).
    let base = match &path.uri {
        Some(uri) => member(resource, uri).unwrap_or(resource),
        None => resource,
    };
    let Some(top) = member(base, &path.name).or_else(|| {
        // An extension attribute named without its URI.
        base.as_object()?
            .iter()
            .filter(|(k, _)| k.starts_with("urn:"))
            .find_map(|(_, ext)| member(ext, &path.name))
    }) else {
        return Vec::new();
    };
    let tops: Vec<&Value> = match top {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    match &path.sub {
        None => tops,
        Some(sub) => tops.into_iter().filter_map(|t| member(t, sub)).collect(),
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn compare(v: &Value, op: CompareOp, want: &CompValue, exact: bool) -> bool {
    use std::cmp::Ordering;
    let fold = |s: &str| if exact { s.to_string() } else { s.to_lowercase() };
    let ordering: Option<Ordering> = match (v, want) {
        (Value::String(a), CompValue::Str(b)) => {
            let (a, b) = (fold(a), fold(b));
            match op {
                CompareOp::Co => return a.contains(&b),
                CompareOp::Sw => return a.starts_with(&b),
                CompareOp::Ew => return a.ends_with(&b),
                _ => Some(a.cmp(&b)),
            }
        }
        (Value::Bool(a), CompValue::Bool(b)) => match op {
            CompareOp::Eq | CompareOp::Ne => Some(a.cmp(b)),
            _ => None,
        },
        (Value::Number(a), CompValue::Number(b)) => match (a.as_f64(), b.parse::<f64>().ok()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (Value::Null, CompValue::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ordering) {
        (CompareOp::Eq, Some(o)) => o == Ordering::Equal,
        (CompareOp::Ne, Some(o)) => o != Ordering::Equal,
        (CompareOp::Ne, None) => true,
        (CompareOp::Gt, Some(o)) => o == Ordering::Greater,
        (CompareOp::Ge, Some(o)) => o != Ordering::Less,
        (CompareOp::Lt, Some(o)) => o == Ordering::Less,
        (CompareOp::Le, Some(o)) => o != Ordering::Greater,
        _ => false,
    }
}

/// Whether `resource` (a served resource, or one value of a multi-valued
/// attribute inside a value path) matches `filter`.
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    match filter {
        Filter::Present(p) => values(resource, p).into_iter().any(present),
        Filter::Compare(p, op, want) => {
            let exact = case_exact(&p.name, p.sub.as_deref());
            // A complex value is compared by its `value` sub-attribute.
            let found: Vec<&Value> = values(resource, p)
                .into_iter()
                .map(|v| if v.is_object() { member(v, "value").unwrap_or(v) } else { v })
                .collect();
            if *op == CompareOp::Ne {
                // Not equal: no value equals it (an absent attribute is not equal).
                return !found.iter().any(|v| compare(v, CompareOp::Eq, want, exact));
            }
            if found.is_empty() {
                return *want == CompValue::Null && *op == CompareOp::Eq;
            }
            found.into_iter().any(|v| compare(v, *op, want, exact))
        }
        Filter::And(a, b) => matches(a, resource) && matches(b, resource),
        Filter::Or(a, b) => matches(a, resource) || matches(b, resource),
        Filter::Not(x) => !matches(x, resource),
        Filter::ValuePath(p, inner) => values(resource, p).into_iter().any(|v| matches(inner, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_filter;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "usr_Abc",
            "externalId": "E-1",
            "userName": "Anna@Example.com",
            "name": { "givenName": "Anna", "familyName": "Berg" },
            "displayName": "Anna Berg",
            "active": true,
            "emails": [{ "value": "anna@example.com", "type": "work", "primary": true }],
            "meta": { "created": "2026-01-02T03:04:05Z", "lastModified": "2026-02-02T03:04:05Z" },
            "urn:allot:params:scim:schemas:extension:licensing:2.0:User": { "usageLocation": "SE" }
        })
    }

    fn m(f: &str) -> bool {
        matches(&parse_filter(f).unwrap_or_else(|e| panic!("{f}: {e}")), &user())
    }

    #[test]
    fn strings_ignore_case_unless_case_exact() {
        assert!(m(r#"userName eq "anna@example.com""#));
        assert!(m(r#"USERNAME Eq "ANNA@EXAMPLE.COM""#));
        assert!(m(r#"externalId eq "E-1""#));
        assert!(!m(r#"externalId eq "e-1""#));
        assert!(!m(r#"id eq "usr_abc""#));
        assert!(m(r#"name.familyName sw "be" and displayName co "NA B""#));
        assert!(m(r#"userName ew ".COM""#));
    }

    #[test]
    fn multi_valued_attributes_and_value_paths() {
        assert!(m(r#"emails[type eq "work"].value eq "anna@example.com""#));
        assert!(m(r#"emails[type eq "work" and primary eq true]"#));
        assert!(!m(r#"emails[type eq "home"]"#));
        assert!(m(r#"emails.value co "@example""#));
        // A complex attribute compared to a value compares its `value` (RFC 7644 §3.4.2.2).
        assert!(m(r#"emails co "@example""#));
        assert!(!m(r#"name eq "Anna""#), "an object without a value matches nothing");
    }

    #[test]
    fn presence_booleans_dates_and_logic() {
        assert!(!m("title pr") && m("name pr") && m("externalId pr"));
        assert!(m("active eq true") && !m("active eq false"));
        assert!(m(r#"meta.lastModified gt "2026-02-01T00:00:00Z""#));
        assert!(!m(r#"meta.created ge "2026-01-03T00:00:00Z""#));
        assert!(m(r#"not (userName eq "x") and (active eq false or usageLocation eq "se")"#));
        assert!(m(
            r#"urn:allot:params:scim:schemas:extension:licensing:2.0:User:usageLocation eq "SE""#
        ));
        assert!(m(r#"title ne "Boss""#), "an absent attribute is not equal to a value");
        assert!(!m(r#"userName ne "ANNA@example.com""#));
    }
}
