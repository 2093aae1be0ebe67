//! Newtypes that can only be built by parsing, so a value of the type is valid.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::Error;

/// `s` as quoted back in a message: whole if short, else its first 60
/// characters and "…". A refusal names a value; it does not echo a
/// megabyte of it.
pub fn excerpt(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(60) {
        None => std::borrow::Cow::Borrowed(s),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}…", &s[..cut])),
    }
}

/// Whether a character may not appear in a name, label or other free text:
/// control characters (NUL, line breaks, escapes) and the invisible marks
/// that reorder text (bidi embeddings, overrides and isolates), with which a
/// name can display as something it is not.
pub fn is_forbidden_in_text(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks a one-line free text (a name, a label): trimmed, 1 to `max`
/// characters, none of them [forbidden](is_forbidden_in_text). Returns it trimmed.
pub fn check_text(field: &str, raw: &str, max: usize) -> Result<String, Error> {
    let t = raw.trim();
    // Counted and checked as sent, so that what is refused does not depend
    // on the spaces around it.
    if t.is_empty() || raw.chars().count() > max {
        return Err(Error::validation(field, format!("{field} must have 1 to {max} characters.")));
    }
    if let Some(c) = raw.chars().find(|c| is_forbidden_in_text(*c)) {
        return Err(Error::validation(
            field,
            format!(
                "{field} may not contain control or text-direction characters (found U+{:04X}).",
                c as u32
            ),
        ));
    }
    Ok(t.to_string())
}

/// Checks a search text from a query string (`?q=`, `?email=`): at most
/// `max` characters and none [forbidden](is_forbidden_in_text). A NUL would
/// end the text early for the database and match everything.
pub fn check_search(field: &str, raw: &str, max: usize) -> Result<(), Error> {
    if raw.chars().count() > max {
        return Err(Error::validation(field, format!("{field} may have at most {max} characters.")));
    }
    if raw.chars().any(is_forbidden_in_text) {
        return Err(Error::validation(
            field,
            format!("{field} may not contain control or text-direction characters."),
        ));
    }
    Ok(())
}

/// Whether `d` is a domain as an email address may have one: two or more
/// dot-separated labels of letters, digits and `-`, none empty or starting
/// or ending with `-`.
pub fn is_domain(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.')
        && d.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
}

/// An email address as Allot accepts it: one `@`, a non-empty local part, a
/// domain with a dot, no spaces or control characters, at most 254 characters.
/// Kept as given (case preserved); compare with [`Email::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let s = raw.trim();
        let bad = |why: &str| Error::validation("email", format!("\"{}\" is not a valid email address: {why}.", excerpt(raw)));
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > 254 {
            return Err(bad("it is longer than 254 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || is_forbidden_in_text(c)) {
            return Err(bad("it contains spaces, control or text-direction characters"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(bad("it has no @"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(bad("the part before @ must have 1 to 64 characters"));
        }
        if domain.contains('@') {
            return Err(bad("it has more than one @"));
        }
        if !domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.') {
            return Err(bad("the domain may hold only letters, digits, - and ."));
        }
        if !is_domain(domain) {
            return Err(bad("the domain must look like example.com"));
        }
        Ok(Email(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The form used for uniqueness: emails are unique in an org case-insensitively.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Email::parse(&s).map_err(|e| serde::de::Error::custom(e.detail))
    }
}

/// A catalogue code (products and families): 1–64 characters of lowercase
/// ASCII letters, digits and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProductCode(String);

impl ProductCode {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Self::parse_field(raw, "code")
    }
    pub fn parse_field(raw: &str, field: &str) -> Result<Self, Error> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(ProductCode(raw.to_string()))
        } else {
            Err(Error::validation(
                field,
                format!(
                    "\"{}\" is not a valid code: use 1 to 64 lowercase letters, digits and -, starting with a letter.",
                    excerpt(raw)
                ),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProductCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProductCode::parse(&s).map_err(|e| serde::de::Error::custom(e.detail))
    }
}

/// An ISO 3166-1 alpha-2 country code (two uppercase ASCII letters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CountryCode(String);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.len() == 2 && raw.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(CountryCode(raw.to_string()))
        } else {
            Err(Error::validation(
                "usage_location",
                format!("\"{}\" is not an ISO 3166 alpha-2 country code such as SE or NL.", excerpt(raw)),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CountryCode::parse(&s).map_err(|e| serde::de::Error::custom(e.detail))
    }
}

/// Internal members of the org, or external (guest) users who must accept first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    Internal,
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Pending,
    Inactive,
}

/// A string schema with a pattern, for the OpenAPI document of a newtype
/// that parses (the pattern says in the document what `parse` checks).
macro_rules! string_schema {
    ($t:ty, $name:literal, $pattern:expr, $max:expr, $desc:literal, $example:literal) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .max_length(Some($max))
                    .description(Some($desc))
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }
        impl utoipa::ToSchema for $t {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed($name)
            }
        }
    };
}

/// What [`Email::parse`] accepts, as a regular expression: a local part of
/// 1 to 64 characters without spaces, control or text-direction characters
/// or `@`, and a domain of dot-separated labels of letters, digits and `-`.
pub const EMAIL_PATTERN: &str = r"^[^\s@\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]{1,64}@(?:[^\W_](?:(?:[^\W_]|-)*[^\W_])?\.)+[^\W_](?:(?:[^\W_]|-)*[^\W_])?$";

string_schema!(
    Email,
    "Email",
    EMAIL_PATTERN,
    254,
    "An email address; unique in its organisation, compared case-insensitively.",
    "anna@example.com"
);
string_schema!(
    ProductCode,
    "ProductCode",
    "^[a-z][a-z0-9-]{0,63}$",
    64,
    "A catalogue code: lowercase letters, digits and -, starting with a letter.",
    "calling-professional"
);
string_schema!(
    CountryCode,
    "CountryCode",
    "^[A-Z]{2}$",
    2,
    "An ISO 3166-1 alpha-2 country code.",
    "SE"
);

macro_rules! str_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}
pub(crate) use str_enum;

str_enum!(UserKind { Internal => "internal", External => "external" });
str_enum!(UserStatus { Active => "active", Pending => "pending", Inactive => "inactive" });

impl UserStatus {
    /// A new user's status when none is given: external users are pending
    /// until they accept the invitation.
    pub fn initial(kind: UserKind) -> UserStatus {
        match kind {
            UserKind::External => UserStatus::Pending,
            UserKind::Internal => UserStatus::Active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn emails_parse_or_say_why() {
        assert_eq!(Email::parse(" Anna@Example.com ").unwrap().as_str(), "Anna@Example.com");
        assert_eq!(Email::parse("Anna@Example.com").unwrap().normalized(), "anna@example.com");
        for bad in [
            "",
            "anna",
            "anna@",
            "@example.com",
            "anna@example",
            "an na@example.com",
            "a@b@c.com",
            "anna@exa_mple.com",
            "anna@.com",
        ] {
            let e = Email::parse(bad).unwrap_err();
            assert_eq!(e.code, Code::ValidationFailed, "{bad}");
            assert!(e.detail.contains("not a valid email"), "{}", e.detail);
        }
    }

    #[test]
    fn codes_and_countries() {
        assert!(ProductCode::parse("calling-professional").is_ok());
        for bad in ["", "Calling", "1abc", "a b", "a_b", &"a".repeat(65)] {
            assert!(ProductCode::parse(bad).is_err(), "{bad}");
        }
        assert!(CountryCode::parse("SE").is_ok());
        for bad in ["se", "SWE", "S", ""] {
            assert!(CountryCode::parse(bad).is_err(), "{bad}");
        }
    }
}
