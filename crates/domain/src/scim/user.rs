//! A SCIM user's attributes as Allot keeps them, and what a `PUT` body or
//! a `PATCH` operation does to them (RFC 7644 §3.5), with the shapes real
//! identity providers send:
//! - Entra ID: capitalised ops (`Replace`), `"active": "False"` as text,
//!   `replace` without `path` carrying dotted (`name.givenName`) or
//!   URN-qualified keys, `emails[type eq "work"].value` as a path;
//! - Okta: `PUT` of the whole user, `replace` of `active` alone.
//!
//! Attributes Allot does not keep (`title`, `phoneNumbers`, ...) are
//! ignored, as providers send whatever their mappings hold; a kept
//! attribute with a value of the wrong type is refused (`invalidValue`),
//! and so is a change to a read-only one (`mutability`). Operations apply
//! in order to a copy: all of them, or (on the first error) none.

use serde_json::{Map, Value};

use super::filter::{parse_patch_path, AttrPath, Filter};
use crate::{Code, Error};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const LICENSING_SCHEMA: &str = "urn:allot:params:scim:schemas:extension:licensing:2.0:User";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// One email of a user, as served.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScimEmail {
    pub value: String,
    pub kind: Option<String>,
    pub primary: bool,
}

/// What Allot keeps of a SCIM user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserAttrs {
    pub user_name: String,
    pub external_id: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// `name.formatted`, as sent.
    pub formatted_name: Option<String>,
    pub display_name: Option<String>,
    pub active: bool,
    pub emails: Vec<ScimEmail>,
    pub usage_location: Option<String>,
}

/// Why a body or an operation was refused; the SCIM surface names the
/// code as SCIM does (`scimType`: `ValidationFailed` is `invalidValue`).
fn refuse(code: Code, detail: impl Into<String>) -> Error {
    Error::new(code, detail.into())
}

/// A string, or null (clears).
fn text(attr: &str, v: &Value) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(refuse(Code::ValidationFailed, format!("{attr} must be a string, not {other}"))),
    }
}

/// `true` / `false`, also as the text Entra ID sends (`"False"`).
fn boolean(attr: &str, v: &Value) -> Result<bool, Error> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(refuse(Code::ValidationFailed, format!("{attr} must be true or false, not {other}"))),
    }
}

fn emails(v: &Value) -> Result<Vec<ScimEmail>, Error> {
    let items: Vec<&Value> = match v {
        Value::Null => vec![],
        Value::Array(a) => a.iter().collect(),
        // One email instead of a list of one.
        Value::Object(_) => vec![v],
        other => return Err(refuse(Code::ValidationFailed, format!("emails must be a list, not {other}"))),
    };
    items.into_iter().map(email).collect()
}

fn email(v: &Value) -> Result<ScimEmail, Error> {
    let Value::Object(o) = v else {
        return Err(refuse(
            Code::ValidationFailed,
            format!("an email must be an object with a value, not {v}"),
        ));
    };
    let get = |k: &str| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v);
    let value = get("value")
        .map(|v| text("emails.value", v))
        .transpose()?
        .flatten()
        .ok_or_else(|| refuse(Code::ValidationFailed, "an email needs a value"))?;
    Ok(ScimEmail {
        value,
        kind: get("type").map(|v| text("emails.type", v)).transpose()?.flatten(),
        primary: get("primary").map(|v| boolean("emails.primary", v)).transpose()?.unwrap_or(false),
    })
}

/// The attribute a path names, as Allot keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    UserName,
    ExternalId,
    DisplayName,
    Active,
    Name,
    GivenName,
    FamilyName,
    Formatted,
    Emails,
    UsageLocation,
    /// The licensing extension's object as a whole.
    Licensing,
    /// `id`, `meta`, `schemas`: served, never set by a client.
    ReadOnly,
    /// Not kept by Allot: ignored.
    Other,
}

fn attr_of(path: &AttrPath) -> Attr {
    let in_licensing = path.uri.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(LICENSING_SCHEMA));
    let name = path.name.to_ascii_lowercase();
    let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
    match (name.as_str(), sub.as_deref()) {
        ("usagelocation", None) if in_licensing || path.uri.is_none() => Attr::UsageLocation,
        _ if in_licensing => Attr::Other,
        ("username", None) => Attr::UserName,
        ("externalid", None) => Attr::ExternalId,
        ("displayname", None) => Attr::DisplayName,
        ("active", None) => Attr::Active,
        ("name", None) => Attr::Name,
        ("name", Some("givenname")) => Attr::GivenName,
        ("name", Some("familyname")) => Attr::FamilyName,
        ("name", Some("formatted")) => Attr::Formatted,
        ("emails", None) => Attr::Emails,
        ("id" | "meta" | "schemas", _) => Attr::ReadOnly,
        _ => Attr::Other,
    }
}

/// A key of a body or of a `replace` without path: `name`, `name.givenName`,
/// `urn:...:User:userName`, or an extension's URN (its object).
fn attr_of_key(key: &str) -> Attr {
    if key.eq_ignore_ascii_case(LICENSING_SCHEMA) {
        return Attr::Licensing;
    }
    if key.eq_ignore_ascii_case(USER_SCHEMA) {
        return Attr::Other;
    }
    match super::filter::parse_attr_path(key) {
        Ok(p)
            if p.uri
                .as_deref()
                .is_none_or(|u| u.eq_ignore_ascii_case(USER_SCHEMA) || u.eq_ignore_ascii_case(LICENSING_SCHEMA)) =>
        {
            attr_of(&p)
        }
        _ => Attr::Other,
    }
}

impl UserAttrs {
    /// The attributes of a `POST` or `PUT` body: what it leaves out is
    /// cleared (a `PUT` replaces the user), `active` defaults to true.
    pub fn from_body(body: &Value) -> Result<UserAttrs, Error> {
        let Value::Object(o) = body else {
            return Err(refuse(Code::InvalidSyntax, "the body must be a JSON object (a User)"));
        };
        let mut u = UserAttrs {
            active: true,
            ..UserAttrs::default()
        };
        for (k, v) in o {
            u.set(attr_of_key(k), k, v, Mode::Body)?;
        }
        if u.user_name.trim().is_empty() {
            return Err(refuse(Code::ValidationFailed, "userName is required"));
        }
        Ok(u)
    }

    /// Applies a `PatchOp` body to a copy and returns it: all operations or
    /// none. `id` is the user's, which a body may repeat but not change.
    pub fn patched(&self, id: &str, body: &Value) -> Result<UserAttrs, Error> {
        let mut u = self.clone();
        for (n, op) in operations(body)?.iter().enumerate() {
            u.apply(id, op).map_err(|mut e| {
                e.detail = format!("Operations[{n}]: {}", e.detail);
                e
            })?;
        }
        Ok(u)
    }

    fn apply(&mut self, id: &str, op: &PatchOperation) -> Result<(), Error> {
        match (&op.path, op.kind) {
            (None, OpKind::Remove) => Err(refuse(Code::NoTarget, "remove needs a path")),
            (None, _) => {
                let Some(Value::Object(o)) = &op.value else {
                    return Err(refuse(
                        Code::ValidationFailed,
                        "an add or replace without a path needs an object as its value",
                    ));
                };
                for (k, v) in o {
                    let attr = attr_of_key(k);
                    if attr == Attr::ReadOnly {
                        // Okta and Entra repeat `id` (and `schemas`) in their bodies.
                        if k.eq_ignore_ascii_case("id") && v.as_str() != Some(id) {
                            return Err(refuse(Code::Mutability, "id is read-only"));
                        }
                        continue;
                    }
                    self.set(attr, k, v, Mode::Patch(op.kind))?;
                }
                Ok(())
            }
            // The extension's object as a whole (`urn:...:licensing:2.0:User`).
            (Some(path), kind) if path.trim().eq_ignore_ascii_case(LICENSING_SCHEMA) => {
                let value = match kind {
                    OpKind::Remove => &Value::Null,
                    _ => op.value.as_ref().unwrap_or(&Value::Null),
                };
                self.set(Attr::Licensing, path, value, Mode::Patch(kind))
            }
            (Some(path), kind) => {
                let parsed = parse_patch_path(path).map_err(|e| refuse(Code::InvalidPath, format!("path {path:?}: {e}")))?;
                let attr = attr_of(&parsed.attr);
                if attr == Attr::ReadOnly {
                    return Err(refuse(Code::Mutability, format!("{path} is read-only")));
                }
                match (attr, &parsed.filter) {
                    (Attr::Emails, Some(filter)) => self.patch_emails(filter, parsed.sub.as_deref(), kind, op.value.as_ref()),
                    (_, Some(_)) => Ok(()),
                    (_, None) => match kind {
                        OpKind::Remove => self.set(attr, path, &Value::Null, Mode::Patch(kind)),
                        _ => self.set(attr, path, op.value.as_ref().unwrap_or(&Value::Null), Mode::Patch(kind)),
                    },
                }
            }
        }
    }

    /// `emails[filter]` or `emails[filter].sub`: the matching emails are
    /// changed or removed; an add or replace that matches none adds one
    /// (Entra ID sets `emails[type eq "work"].value` on a user with none).
    fn patch_emails(&mut self, filter: &Filter, sub: Option<&str>, kind: OpKind, value: Option<&Value>) -> Result<(), Error> {
        let served: Vec<Value> = self.emails.iter().map(email_json).collect();
        let hits: Vec<usize> = (0..served.len()).filter(|&i| super::eval::matches(filter, &served[i])).collect();
        if kind == OpKind::Remove {
            let mut i = 0;
            self.emails.retain(|_| {
                let keep = !hits.contains(&i);
                i += 1;
                keep
            });
            return Ok(());
        }
        let value = value.unwrap_or(&Value::Null);
        let change = |e: &mut ScimEmail| -> Result<(), Error> {
            match sub.map(str::to_ascii_lowercase).as_deref() {
                Some("value") => {
                    e.value = text("emails.value", value)?.ok_or_else(|| refuse(Code::ValidationFailed, "an email needs a value"))?
                }
                Some("type") => e.kind = text("emails.type", value)?,
                Some("primary") => e.primary = boolean("emails.primary", value)?,
                Some(_) => {}
                None => *e = email(value)?,
            }
            Ok(())
        };
        if hits.is_empty() {
            // The filter's `type eq "..."` says what the new email is.
            let mut e = ScimEmail {
                kind: type_in(filter),
                ..ScimEmail::default()
            };
            change(&mut e)?;
            if !e.value.is_empty() {
                self.emails.push(e);
            }
            return Ok(());
        }
        for i in hits {
            change(&mut self.emails[i])?;
        }
        Ok(())
    }

    fn set(&mut self, attr: Attr, key: &str, v: &Value, mode: Mode) -> Result<(), Error> {
        match attr {
            Attr::UserName => {
                self.user_name = text("userName", v)?.ok_or_else(|| refuse(Code::ValidationFailed, "userName cannot be removed"))?;
            }
            Attr::ExternalId => self.external_id = text("externalId", v)?,
            Attr::DisplayName => self.display_name = text("displayName", v)?,
            Attr::Active => {
                self.active = match (v, mode) {
                    // Left out of a new user: active.
                    (Value::Null, Mode::Body) => true,
                    (Value::Null, _) => {
                        return Err(refuse(
                            Code::ValidationFailed,
                            "active cannot be removed: replace it with false to deactivate the user",
                        ))
                    }
                    (v, _) => boolean("active", v)?,
                }
            }
            Attr::GivenName => self.given_name = text("name.givenName", v)?,
            Attr::FamilyName => self.family_name = text("name.familyName", v)?,
            Attr::Formatted => self.formatted_name = text("name.formatted", v)?,
            Attr::Name => match v {
                Value::Null => {
                    self.given_name = None;
                    self.family_name = None;
                    self.formatted_name = None;
                }
                Value::Object(o) => {
                    // A replace of `name` replaces it; an add merges.
                    if mode != Mode::Patch(OpKind::Add) {
                        self.given_name = None;
                        self.family_name = None;
                        self.formatted_name = None;
                    }
                    for (k, v) in o {
                        match k.to_ascii_lowercase().as_str() {
                            "givenname" => self.given_name = text("name.givenName", v)?,
                            "familyname" => self.family_name = text("name.familyName", v)?,
                            "formatted" => self.formatted_name = text("name.formatted", v)?,
                            _ => {}
                        }
                    }
                }
                other => return Err(refuse(Code::ValidationFailed, format!("name must be an object, not {other}"))),
            },
            Attr::Emails => {
                let given = emails(v)?;
                if mode == Mode::Patch(OpKind::Add) {
                    for e in given {
                        if !self.emails.iter().any(|x| x.value.eq_ignore_ascii_case(&e.value)) {
                            self.emails.push(e);
                        }
                    }
                } else {
                    self.emails = given;
                }
            }
            Attr::UsageLocation => self.usage_location = text("usageLocation", v)?,
            Attr::Licensing => match v {
                Value::Null => self.usage_location = None,
                Value::Object(o) => {
                    for (k, v) in o {
                        if k.eq_ignore_ascii_case("usageLocation") {
                            self.usage_location = text("usageLocation", v)?;
                        }
                    }
                }
                other => return Err(refuse(Code::ValidationFailed, format!("{key} must be an object, not {other}"))),
            },
            Attr::ReadOnly | Attr::Other => {}
        }
        Ok(())
    }
}

/// The value of `type eq "..."` in a value filter, if it says one.
fn type_in(filter: &Filter) -> Option<String> {
    use super::filter::{CompValue, CompareOp};
    match filter {
        Filter::Compare(p, CompareOp::Eq, CompValue::Str(s)) if p.is("type", None) => Some(s.clone()),
        Filter::And(a, b) => type_in(a).or_else(|| type_in(b)),
        _ => None,
    }
}

/// An email as served.
pub fn email_json(e: &ScimEmail) -> Value {
    let mut o = Map::new();
    o.insert("value".into(), Value::String(e.value.clone()));
    if let Some(k) = &e.kind {
        o.insert("type".into(), Value::String(k.clone()));
    }
    o.insert("primary".into(), Value::Bool(e.primary));
    Value::Object(o)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Body,
    Patch(OpKind),
}

/// One operation of a `PatchOp` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub kind: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// The operations of a `PatchOp` body; `op` in any case (Entra ID sends
/// `Replace`), at least one operation.
pub fn operations(body: &Value) -> Result<Vec<PatchOperation>, Error> {
    let Value::Object(o) = body else {
        return Err(refuse(Code::InvalidSyntax, "the body must be a PatchOp object"));
    };
    let ops = o
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .map(|(_, v)| v)
        .ok_or_else(|| refuse(Code::InvalidSyntax, "a PatchOp needs Operations"))?;
    let Value::Array(ops) = ops else {
        return Err(refuse(Code::InvalidSyntax, "Operations must be a list"));
    };
    if ops.is_empty() {
        return Err(refuse(Code::InvalidSyntax, "Operations is empty"));
    }
    ops.iter()
        .enumerate()
        .map(|(n, op)| {
            let Value::Object(op) = op else {
                return Err(refuse(Code::InvalidSyntax, format!("Operations[{n}] must be an object")));
            };
            let get = |k: &str| op.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)).map(|(_, v)| v);
            let kind = match get("op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
                Some("add") => OpKind::Add,
                Some("replace") => OpKind::Replace,
                Some("remove") => OpKind::Remove,
                _ => {
                    return Err(refuse(
                        Code::InvalidSyntax,
                        format!("Operations[{n}].op must be add, replace or remove"),
                    ))
                }
            };
            let path = match get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(refuse(Code::InvalidPath, format!("Operations[{n}].path must be a string"))),
            };
            let value = get("value").cloned();
            if kind != OpKind::Remove && value.is_none() {
                return Err(refuse(Code::ValidationFailed, format!("Operations[{n}] needs a value")));
            }
            Ok(PatchOperation { kind, path, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn anna() -> UserAttrs {
        UserAttrs::from_body(&json!({
            "schemas": [USER_SCHEMA, LICENSING_SCHEMA],
            "userName": "anna@example.com",
            "externalId": "E-1",
            "name": { "givenName": "Anna", "familyName": "Berg" },
            "displayName": "Anna Berg",
            "emails": [{ "value": "anna@example.com", "type": "work", "primary": true }],
            "title": "Engineer",
            LICENSING_SCHEMA: { "usageLocation": "SE" }
        }))
        .expect("a user")
    }

    fn patch(u: &UserAttrs, ops: Value) -> Result<UserAttrs, Error> {
        u.patched("usr_1", &json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": ops }))
    }

    #[test]
    fn a_body_is_read_and_unknown_attributes_ignored() {
        let u = anna();
        assert_eq!(u.user_name, "anna@example.com");
        assert_eq!(u.external_id.as_deref(), Some("E-1"));
        assert_eq!((u.given_name.as_deref(), u.family_name.as_deref()), (Some("Anna"), Some("Berg")));
        assert!(u.active);
        assert_eq!(u.usage_location.as_deref(), Some("SE"));
        assert_eq!(u.emails.len(), 1);
        assert_eq!(
            UserAttrs::from_body(&json!({ "userName": " " })).unwrap_err().code,
            Code::ValidationFailed
        );
        assert_eq!(
            UserAttrs::from_body(&json!({ "userName": "a@b.example", "active": 3 }))
                .unwrap_err()
                .code,
            Code::ValidationFailed
        );
    }

    #[test]
    fn entra_s_shapes() {
        let u = anna();
        // Capitalised op, "False" as text.
        let off = patch(&u, json!([{ "op": "Replace", "path": "active", "value": "False" }])).unwrap();
        assert!(!off.active);
        // Replace without a path: dotted and URN-qualified keys.
        let p = patch(
            &u,
            json!([{ "op": "replace", "value": {
                "name.givenName": "Annie",
                "urn:ietf:params:scim:schemas:core:2.0:User:displayName": "Annie Berg",
                "urn:allot:params:scim:schemas:extension:licensing:2.0:User:usageLocation": "NO",
                "active": "True"
            } }]),
        )
        .unwrap();
        assert_eq!(p.given_name.as_deref(), Some("Annie"));
        assert_eq!(p.family_name.as_deref(), Some("Berg"));
        assert_eq!(p.display_name.as_deref(), Some("Annie Berg"));
        assert_eq!(p.usage_location.as_deref(), Some("NO"));
        // A filtered path with a sub-attribute.
        let p = patch(
            &u,
            json!([{ "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "anna.berg@example.com" }]),
        )
        .unwrap();
        assert_eq!(p.emails[0].value, "anna.berg@example.com");
        assert!(p.emails[0].primary);
        // ... on a user with no work email: one is added.
        let none = UserAttrs {
            emails: vec![],
            ..u.clone()
        };
        let p = patch(
            &none,
            json!([{ "op": "Add", "path": "emails[type eq \"work\"].value", "value": "w@example.com" }]),
        )
        .unwrap();
        assert_eq!(
            p.emails,
            vec![ScimEmail {
                value: "w@example.com".into(),
                kind: Some("work".into()),
                primary: false
            }]
        );
    }

    #[test]
    fn okta_s_shapes() {
        let u = anna();
        let p = patch(&u, json!([{ "op": "replace", "value": { "active": false } }])).unwrap();
        assert!(!p.active);
        // `id` repeated unchanged is fine; changed, it is refused.
        assert!(patch(&u, json!([{ "op": "replace", "value": { "id": "usr_1", "displayName": "A" } }])).is_ok());
        let e = patch(&u, json!([{ "op": "replace", "value": { "id": "usr_2" } }])).unwrap_err();
        assert_eq!(e.code, Code::Mutability);
    }

    #[test]
    fn remove_add_and_atomicity() {
        let u = anna();
        let p = patch(
            &u,
            json!([{ "op": "remove", "path": "externalId" }, { "op": "remove", "path": "name.familyName" }]),
        )
        .unwrap();
        assert_eq!((p.external_id, p.family_name), (None, None));
        let p = patch(&u, json!([{ "op": "remove", "path": LICENSING_SCHEMA }])).unwrap();
        assert_eq!(p.usage_location, None);
        let p = patch(
            &u,
            json!([{ "op": "add", "path": LICENSING_SCHEMA, "value": { "usageLocation": "DK" } }]),
        )
        .unwrap();
        assert_eq!(p.usage_location.as_deref(), Some("DK"));
        let p = patch(&u, json!([{ "op": "remove", "path": "emails[type eq \"work\"]" }])).unwrap();
        assert!(p.emails.is_empty());
        let p = patch(
            &u,
            json!([{ "op": "add", "path": "emails", "value": [{ "value": "home@example.com", "type": "home" }] }]),
        )
        .unwrap();
        assert_eq!(p.emails.len(), 2);
        // The second operation fails: nothing of the first applies (a copy was patched).
        let e = patch(
            &u,
            json!([{ "op": "replace", "path": "displayName", "value": "X" }, { "op": "replace", "path": "active", "value": 7 }]),
        )
        .unwrap_err();
        assert!(e.detail.starts_with("Operations[1]"), "{e:?}");
        assert_eq!(u.display_name.as_deref(), Some("Anna Berg"));
        assert_eq!(patch(&u, json!([{ "op": "remove" }])).unwrap_err().code, Code::NoTarget);
        assert_eq!(
            patch(&u, json!([{ "op": "remove", "path": "active" }])).unwrap_err().code,
            Code::ValidationFailed
        );
        assert_eq!(
            patch(&u, json!([{ "op": "replace", "path": "id", "value": "x" }]))
                .unwrap_err()
                .code,
            Code::Mutability
        );
        assert_eq!(
            patch(&u, json!([{ "op": "move", "path": "a" }])).unwrap_err().code,
            Code::InvalidSyntax
        );
        assert_eq!(
            patch(&u, json!([{ "op": "replace", "path": "emails[type eq", "value": 1 }]))
                .unwrap_err()
                .code,
            Code::InvalidPath
        );
        assert_eq!(patch(&u, json!([])).unwrap_err().code, Code::InvalidSyntax);
        assert_eq!(
            patch(&u, json!([{ "op": "replace", "path": "userName" }])).unwrap_err().code,
            Code::ValidationFailed
        );
    }
}
