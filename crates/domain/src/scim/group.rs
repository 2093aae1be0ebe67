//! A SCIM group's attributes as Allot keeps them (an Allot group: its
//! name, the provider's `externalId`, its member users) and what a `PUT`
//! body or `PATCH` operation does to them, with the shapes providers send:
//! - Entra ID: `Add` / `Remove` of `members` with a list of values,
//!   removal as `path: "members"` with the values to remove, `$ref: null`;
//! - Okta: a rename by `replace` without path carrying the read-only `id`,
//!   adds and removes mixed in one PATCH, `members[value eq "..."]` paths.
//!
//! Members are user ids; groups as members are not supported (refused).

use serde_json::Value;

use super::filter::{parse_patch_path, CompValue, CompareOp, Filter};
use super::user::{operations, OpKind};
use crate::{Code, Error};

pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupAttrs {
    pub display_name: String,
    pub external_id: Option<String>,
    /// Member user ids, in the order they were added, without repeats.
    pub members: Vec<String>,
}

fn refuse(code: Code, detail: impl Into<String>) -> Error {
    Error::new(code, detail.into())
}

fn member<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v)
}

/// The user ids of a `members` value: a list of `{"value": id, ...}` (or
/// one such object).
fn member_ids(v: &Value) -> Result<Vec<String>, Error> {
    let items: Vec<&Value> = match v {
        Value::Null => vec![],
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        other => return Err(refuse(Code::ValidationFailed, format!("members must be a list, not {other}"))),
    };
    items
        .into_iter()
        .map(|m| {
            let Value::Object(o) = m else {
                return Err(refuse(
                    Code::ValidationFailed,
                    format!("a member must be an object with a value, not {m}"),
                ));
            };
            if let Some(Value::String(t)) = member(o, "type") {
                if !t.eq_ignore_ascii_case("User") {
                    return Err(refuse(
                        Code::ValidationFailed,
                        format!("members are users; a member of type {t} is not supported"),
                    ));
                }
            }
            match member(o, "value") {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                _ => Err(refuse(Code::ValidationFailed, "a member needs a value: the user's id")),
            }
        })
        .collect()
}

fn text(attr: &str, v: &Value) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(refuse(Code::ValidationFailed, format!("{attr} must be a string, not {other}"))),
    }
}

fn add_members(list: &mut Vec<String>, ids: Vec<String>) {
    for id in ids {
        if !list.contains(&id) {
            list.push(id);
        }
    }
}

/// The member ids a `members[...]` filter names (`value eq "..."`, joined by `or`).
fn named_members(f: &Filter, out: &mut Vec<String>) -> Result<(), Error> {
    match f {
        Filter::Compare(p, CompareOp::Eq, CompValue::Str(v)) if p.is("value", None) => {
            out.push(v.clone());
            Ok(())
        }
        Filter::Or(a, b) => {
            named_members(a, out)?;
            named_members(b, out)
        }
        _ => Err(refuse(
            Code::InvalidFilter,
            "a members path filters by value: members[value eq \"<user id>\"]",
        )),
    }
}

impl GroupAttrs {
    /// The attributes of a `POST` or `PUT` body (what it leaves out is cleared).
    pub fn from_body(body: &Value) -> Result<GroupAttrs, Error> {
        let Value::Object(o) = body else {
            return Err(refuse(Code::InvalidSyntax, "the body must be a JSON object (a Group)"));
        };
        let mut g = GroupAttrs::default();
        for (k, v) in o {
            match k.to_ascii_lowercase().as_str() {
                "displayname" => g.display_name = text("displayName", v)?.unwrap_or_default(),
                "externalid" => g.external_id = text("externalId", v)?,
                "members" => add_members(&mut g.members, member_ids(v)?),
                _ => {}
            }
        }
        if g.display_name.trim().is_empty() {
            return Err(refuse(Code::ValidationFailed, "displayName is required"));
        }
        Ok(g)
    }

    /// Applies a `PatchOp` body to a copy: all operations or none. `id` is
    /// the group's, which a body may repeat but not change.
    pub fn patched(&self, id: &str, body: &Value) -> Result<GroupAttrs, Error> {
        let mut g = self.clone();
        for (n, op) in operations(body)?.iter().enumerate() {
            g.apply(id, op.kind, op.path.as_deref(), op.value.as_ref()).map_err(|mut e| {
                e.detail = format!("Operations[{n}]: {}", e.detail);
                e
            })?;
        }
        if g.display_name.trim().is_empty() {
            return Err(refuse(Code::ValidationFailed, "displayName cannot be removed"));
        }
        Ok(g)
    }

    fn apply(&mut self, id: &str, kind: OpKind, path: Option<&str>, value: Option<&Value>) -> Result<(), Error> {
        let value = value.unwrap_or(&Value::Null);
        let Some(path) = path else {
            if kind == OpKind::Remove {
                return Err(refuse(Code::NoTarget, "remove needs a path"));
            }
            let Value::Object(o) = value else {
                return Err(refuse(
                    Code::ValidationFailed,
                    "an add or replace without a path needs an object as its value",
                ));
            };
            for (k, v) in o {
                let key = k.rsplit(':').next().unwrap_or(k);
                match key.to_ascii_lowercase().as_str() {
                    // Okta renames with the read-only id in the body.
                    "id" if v.as_str() == Some(id) => {}
                    "id" => return Err(refuse(Code::Mutability, "id is read-only")),
                    "displayname" => self.display_name = text("displayName", v)?.unwrap_or_default(),
                    "externalid" => self.external_id = text("externalId", v)?,
                    "members" if kind == OpKind::Add => add_members(&mut self.members, member_ids(v)?),
                    "members" => self.members = member_ids(v)?,
                    _ => {}
                }
            }
            return Ok(());
        };
        let parsed = parse_patch_path(path).map_err(|e| refuse(Code::InvalidPath, format!("path {path:?}: {e}")))?;
        let name = parsed.attr.name.to_ascii_lowercase();
        match (name.as_str(), &parsed.filter, kind) {
            ("id" | "meta" | "schemas", _, _) => Err(refuse(Code::Mutability, format!("{path} is read-only"))),
            ("displayname", None, OpKind::Remove) => {
                self.display_name.clear();
                Ok(())
            }
            ("displayname", None, _) => {
                self.display_name = text("displayName", value)?.unwrap_or_default();
                Ok(())
            }
            ("externalid", None, OpKind::Remove) => {
                self.external_id = None;
                Ok(())
            }
            ("externalid", None, _) => {
                self.external_id = text("externalId", value)?;
                Ok(())
            }
            ("members", None, OpKind::Add) => {
                add_members(&mut self.members, member_ids(value)?);
                Ok(())
            }
            ("members", None, OpKind::Replace) => {
                self.members = member_ids(value)?;
                Ok(())
            }
            // Entra ID: `remove` of `members` with the values to remove;
            // without a value, every member.
            ("members", None, OpKind::Remove) => {
                if value.is_null() {
                    self.members.clear();
                } else {
                    let gone = member_ids(value)?;
                    self.members.retain(|m| !gone.contains(m));
                }
                Ok(())
            }
            ("members", Some(f), OpKind::Remove) => {
                let mut gone = Vec::new();
                named_members(f, &mut gone)?;
                self.members.retain(|m| !gone.contains(m));
                Ok(())
            }
            ("members", Some(_), _) => Err(refuse(
                Code::InvalidPath,
                "members are added with path \"members\" and a list of values",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn g() -> GroupAttrs {
        GroupAttrs::from_body(&json!({ "schemas": [GROUP_SCHEMA], "displayName": "Sales", "externalId": "x1",
            "members": [{ "value": "usr_a", "$ref": null }, { "value": "usr_b", "type": "User" }] }))
        .unwrap()
    }

    fn patch(ops: Value) -> Result<GroupAttrs, Error> {
        g().patched("grp_1", &json!({ "Operations": ops }))
    }

    #[test]
    fn bodies() {
        assert_eq!(g().members, vec!["usr_a", "usr_b"]);
        assert_eq!(
            GroupAttrs::from_body(&json!({ "members": [] })).unwrap_err().code,
            Code::ValidationFailed
        );
        let e = GroupAttrs::from_body(&json!({ "displayName": "G", "members": [{ "value": "grp_x", "type": "Group" }] })).unwrap_err();
        assert!(e.detail.contains("Group"), "{e:?}");
    }

    #[test]
    fn entra_s_member_changes() {
        let p = patch(json!([{ "op": "Add", "path": "members", "value": [{ "value": "usr_c" }, { "value": "usr_a" }] }])).unwrap();
        assert_eq!(p.members, vec!["usr_a", "usr_b", "usr_c"]);
        let p = patch(json!([{ "op": "Remove", "path": "members", "value": [{ "value": "usr_a" }] }])).unwrap();
        assert_eq!(p.members, vec!["usr_b"]);
        let p = patch(json!([{ "op": "Replace", "path": "displayName", "value": "Sales EU" }])).unwrap();
        assert_eq!(p.display_name, "Sales EU");
    }

    #[test]
    fn okta_s_rename_and_mixed_changes() {
        let p = patch(json!([{ "op": "replace", "value": { "id": "grp_1", "displayName": "Sales 2" } }])).unwrap();
        assert_eq!(p.display_name, "Sales 2");
        assert_eq!(
            patch(json!([{ "op": "replace", "value": { "id": "grp_2" } }])).unwrap_err().code,
            Code::Mutability
        );
        let p = patch(json!([
            { "op": "remove", "path": "members[value eq \"usr_b\"]" },
            { "op": "add", "path": "members", "value": [{ "value": "usr_d" }] }
        ]))
        .unwrap();
        assert_eq!(p.members, vec!["usr_a", "usr_d"]);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            patch(json!([{ "op": "remove", "path": "displayName" }])).unwrap_err().code,
            Code::ValidationFailed
        );
        assert_eq!(
            patch(json!([{ "op": "remove", "path": "members[display eq \"x\"]" }]))
                .unwrap_err()
                .code,
            Code::InvalidFilter
        );
        assert_eq!(
            patch(json!([{ "op": "replace", "path": "id", "value": "x" }])).unwrap_err().code,
            Code::Mutability
        );
        assert_eq!(patch(json!([{ "op": "remove" }])).unwrap_err().code, Code::NoTarget);
        let p = patch(json!([{ "op": "remove", "path": "members" }])).unwrap();
        assert!(p.members.is_empty());
    }
}
