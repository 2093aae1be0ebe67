//! The one error type of Allot. Every layer returns it; the server presents it
//! as an RFC 9457 problem document (and later as HTML and SCIM errors).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable machine codes (the API guide, docs/api.md, lists them). Never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Unauthenticated,
    Forbidden,
    NotFound,
    ValidationFailed,
    EmailTaken,
    SeatsExhausted,
    MutuallyExclusive,
    OnePerFamily,
    RequiresProduct,
    LocationUnavailable,
    UsageLocationMissing,
    PropertyMissing,
    PropertyInvalid,
    SiteFeatureDisabled,
    RoleNotAllowed,
    ServiceNotProvisioned,
    SubscriptionNotActive,
    UserPending,
    NotAssigned,
    AlreadyAssigned,
    SubscriptionHasUsers,
    PaymentMethodRequired,
    SelfServicePurchaseDisabled,
    IdempotencyKeyReused,
    IdempotencyKeyInProgress,
    PreconditionFailed,
    PayloadTooLarge,
    RateLimited,
    CsvHeaderInvalid,
    CsvRowInvalid,
    /// The body is not JSON at all (bad syntax, not UTF-8).
    MalformedJson,
    /// The body comes in a media type the operation does not take.
    UnsupportedMediaType,
    Conflict,
    /// A name that must be unique in its organisation is taken (a group's).
    NameTaken,
    /// SCIM: a filter that does not parse, or names what cannot be filtered.
    InvalidFilter,
    /// SCIM: a PATCH path that does not parse.
    InvalidPath,
    /// SCIM: a PATCH operation without the path it needs.
    NoTarget,
    /// SCIM: a change to a read-only attribute (`id`).
    Mutability,
    /// SCIM: a body that is JSON but not the message it should be.
    InvalidSyntax,
    /// The server cannot serve the request now (not ready: its database
    /// cannot be written to, or it is shutting down).
    Unavailable,
    Internal,
}

impl Code {
    pub fn as_str(&self) -> &'static str {
        CODE_NAMES.iter().find(|(c, _)| c == self).map(|(_, n)| *n).unwrap_or("internal")
    }

    /// The HTTP status that goes with a code.
    pub fn http_status(&self) -> u16 {
        use Code::*;
        match self {
            Unauthenticated => 401,
            Forbidden | PaymentMethodRequired | SelfServicePurchaseDisabled => 403,
            NotFound => 404,
            EmailTaken | NameTaken | SubscriptionHasUsers | IdempotencyKeyInProgress | Conflict => 409,
            MalformedJson | InvalidFilter | InvalidPath | NoTarget | Mutability | InvalidSyntax => 400,
            PreconditionFailed => 412,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            RateLimited => 429,
            Internal => 500,
            Unavailable => 503,
            // Every rule and validation failure: the request was understood and refused.
            ValidationFailed
            | SeatsExhausted
            | MutuallyExclusive
            | OnePerFamily
            | RequiresProduct
            | LocationUnavailable
            | UsageLocationMissing
            | PropertyMissing
            | PropertyInvalid
            | SiteFeatureDisabled
            | RoleNotAllowed
            | ServiceNotProvisioned
            | SubscriptionNotActive
            | UserPending
            | NotAssigned
            | AlreadyAssigned
            | IdempotencyKeyReused
            | CsvHeaderInvalid
            | CsvRowInvalid => 422,
        }
    }
}

const CODE_NAMES: &[(Code, &str)] = &[
    (Code::Unauthenticated, "unauthenticated"),
    (Code::Forbidden, "forbidden"),
    (Code::NotFound, "not_found"),
    (Code::ValidationFailed, "validation_failed"),
    (Code::EmailTaken, "email_taken"),
    (Code::SeatsExhausted, "seats_exhausted"),
    (Code::MutuallyExclusive, "mutually_exclusive"),
    (Code::OnePerFamily, "one_per_family"),
    (Code::RequiresProduct, "requires_product"),
    (Code::LocationUnavailable, "location_unavailable"),
    (Code::UsageLocationMissing, "usage_location_missing"),
    (Code::PropertyMissing, "property_missing"),
    (Code::PropertyInvalid, "property_invalid"),
    (Code::SiteFeatureDisabled, "site_feature_disabled"),
    (Code::RoleNotAllowed, "role_not_allowed"),
    (Code::ServiceNotProvisioned, "service_not_provisioned"),
    (Code::SubscriptionNotActive, "subscription_not_active"),
    (Code::UserPending, "user_pending"),
    (Code::NotAssigned, "not_assigned"),
    (Code::AlreadyAssigned, "already_assigned"),
    (Code::SubscriptionHasUsers, "subscription_has_users"),
    (Code::PaymentMethodRequired, "payment_method_required"),
    (Code::SelfServicePurchaseDisabled, "self_service_purchase_disabled"),
    (Code::IdempotencyKeyReused, "idempotency_key_reused"),
    (Code::IdempotencyKeyInProgress, "idempotency_key_in_progress"),
    (Code::PreconditionFailed, "precondition_failed"),
    (Code::PayloadTooLarge, "payload_too_large"),
    (Code::RateLimited, "rate_limited"),
    (Code::CsvHeaderInvalid, "csv_header_invalid"),
    (Code::CsvRowInvalid, "csv_row_invalid"),
    (Code::MalformedJson, "malformed_json"),
    (Code::UnsupportedMediaType, "unsupported_media_type"),
    (Code::Conflict, "conflict"),
    (Code::NameTaken, "name_taken"),
    (Code::InvalidFilter, "invalid_filter"),
    (Code::InvalidPath, "invalid_path"),
    (Code::NoTarget, "no_target"),
    (Code::Mutability, "mutability"),
    (Code::InvalidSyntax, "invalid_syntax"),
    (Code::Unavailable, "unavailable"),
    (Code::Internal, "internal"),
];

/// One reason a request was refused, naming what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Violation {
    pub code: Code,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The other product of a pair rule (excludes, one per family, requires).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Violation {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Violation {
            code,
            message: message.into(),
            user: None,
            product: None,
            related_product: None,
            subscription: None,
            row: None,
            field: None,
        }
    }
    pub fn user(mut self, u: impl Into<String>) -> Self {
        self.user = Some(u.into());
        self
    }
    pub fn product(mut self, p: impl Into<String>) -> Self {
        self.product = Some(p.into());
        self
    }
    pub fn related(mut self, p: impl Into<String>) -> Self {
        self.related_product = Some(p.into());
        self
    }
    pub fn subscription(mut self, s: impl Into<String>) -> Self {
        self.subscription = Some(s.into());
        self
    }
    pub fn with_row(mut self, row: u64) -> Self {
        self.row = Some(row);
        self
    }
    pub fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }
}

/// A refused or failed operation: a code, a sentence, and every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub detail: String,
    pub violations: Vec<Violation>,
}

impl Error {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Error {
            code,
            detail: detail.into(),
            violations: Vec::new(),
        }
    }
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Error {
            code: Code::ValidationFailed,
            detail: message.clone(),
            violations: vec![Violation::new(Code::ValidationFailed, message).field(field)],
        }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::new(Code::NotFound, format!("{} was not found.", what.into()))
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Error::new(Code::Internal, detail)
    }
    /// Several reasons at once. The top-level code is the first reason's code
    /// when they all agree, else `validation_failed`.
    pub fn rejected(violations: Vec<Violation>) -> Self {
        let code = match violations.first() {
            Some(first) if violations.iter().all(|v| v.code == first.code) => first.code,
            _ => Code::ValidationFailed,
        };
        let detail = match violations.len() {
            0 => "The request was refused.".to_string(),
            1 => violations[0].message.clone(),
            n => format!(
                "The change was refused for {n} reasons; nothing was changed. {}",
                violations[0].message
            ),
        };
        Error { code, detail, violations }
    }
    /// Prefix a field path to every violation (e.g. `add[1]`).
    pub fn in_field(mut self, prefix: &str) -> Self {
        for v in &mut self.violations {
            v.field = Some(match &v.field {
                Some(f) => format!("{prefix}.{f}"),
                None => prefix.to_string(),
            });
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_serde_name() {
        for (code, name) in CODE_NAMES {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::String(name.to_string()));
            assert_eq!(code.as_str(), *name);
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(Code::SeatsExhausted.http_status(), 422);
        assert_eq!(Code::NotFound.http_status(), 404);
        assert_eq!(Code::EmailTaken.http_status(), 409);
        assert_eq!(Code::PaymentMethodRequired.http_status(), 403);
    }
}
