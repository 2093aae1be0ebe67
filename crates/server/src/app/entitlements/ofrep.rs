//! The OpenFeature Remote Evaluation Protocol (OFREP) over the same index
//! and rule as the checks: a flag is a feature of the catalogue, its value
//! is whether the user may use it now. Any OpenFeature SDK with an OFREP
//! provider can then gate features on Allot.
//!
//! The context names the user (`targetingKey`: an id or an email) and the
//! org (`org`; a token bound to one org may leave it out). Allot's reason
//! travels in `metadata.allot_reason`; the OFREP reason is
//! `TARGETING_MATCH` when licensed and `DISABLED` otherwise. Errors have
//! OFREP's shape (`errorCode`, `errorDetails`), not a problem document,
//! since OFREP providers read them.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use allot_domain::access::{Action, ScopeKind};
use allot_domain::entitlements::EntitlementReason;
use allot_domain::{Code, Error};

use super::index::{Answer, Asked};
use crate::app::{App, Caller};

/// An OFREP evaluation request.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct OfrepRequest {
    #[serde(default)]
    pub context: Option<OfrepContext>,
}

/// The evaluation context: the user, the org, and whatever else the SDK
/// sends (ignored).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct OfrepContext {
    /// The user's id or email.
    #[serde(rename = "targetingKey", default)]
    pub targeting_key: Option<String>,
    /// The org's id (a token bound to one org may leave it out).
    #[serde(default)]
    pub org: Option<String>,
    /// Other attributes of the context: accepted and not used.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// OFREP's reason for a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfrepReason {
    TargetingMatch,
    Disabled,
}

/// What Allot says beside the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OfrepMetadata {
    /// Allot's reason (`licensed`, `not_licensed`, `subscription_suspended`, ...).
    pub allot_reason: EntitlementReason,
    /// The user's id, when the user is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The last day the answer holds if nothing changes (allowed only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<NaiveDate>,
}

/// One flag's evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OfrepFlag {
    /// The feature.
    pub key: String,
    /// Whether the user may use it now.
    pub value: bool,
    pub reason: OfrepReason,
    /// `on` or `off`.
    pub variant: &'static str,
    pub metadata: OfrepMetadata,
}

/// Every flag for one user, with the answer's version in the `ETag` header.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OfrepFlags {
    pub flags: Vec<OfrepFlag>,
}

/// OFREP's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfrepErrorCode {
    ParseError,
    TargetingKeyMissing,
    InvalidContext,
    FlagNotFound,
    General,
}

/// An OFREP error answer (400, or 404 for a flag that does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfrepFailure {
    /// The flag asked for (single evaluations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub error_code: OfrepErrorCode,
    pub error_details: String,
}

/// Why an OFREP evaluation was not answered: OFREP's own errors, or the
/// domain's (unauthenticated, forbidden, rate limited, unavailable), which
/// keep their problem documents.
#[derive(Debug)]
pub enum OfrepError {
    Ofrep(OfrepFailure),
    Domain(Error),
}

impl From<Error> for OfrepError {
    fn from(e: Error) -> Self {
        OfrepError::Domain(e)
    }
}

fn failure(key: Option<&str>, code: OfrepErrorCode, details: impl Into<String>) -> OfrepError {
    OfrepError::Ofrep(OfrepFailure {
        key: key.map(str::to_string),
        error_code: code,
        error_details: details.into(),
    })
}

/// Parses a request body: not JSON → `PARSE_ERROR`; JSON of another shape
/// → `INVALID_CONTEXT`; an empty body is an empty request.
pub fn parse_request(body: &[u8], key: Option<&str>) -> Result<OfrepRequest, OfrepError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(OfrepRequest::default());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| failure(key, OfrepErrorCode::ParseError, format!("The body is not JSON: {e}.")))?;
    serde_json::from_value(value).map_err(|e| {
        failure(
            key,
            OfrepErrorCode::InvalidContext,
            format!("The body is not an OFREP request ({{\"context\": {{\"targetingKey\": ..., \"org\": ...}}}}): {e}."),
        )
    })
}

/// The org and user a context names, checked against the caller's scope.
async fn subject<'a>(app: &App, caller: &Caller, req: &'a OfrepRequest, key: Option<&str>) -> Result<(String, &'a str), OfrepError> {
    let context = req.context.as_ref();
    let user = context
        .and_then(|c| c.targeting_key.as_deref())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            failure(
                key,
                OfrepErrorCode::TargetingKeyMissing,
                "The context has no targetingKey: give the user's id or email.",
            )
        })?;
    if user.chars().count() > 320 {
        return Err(failure(
            key,
            OfrepErrorCode::InvalidContext,
            "A targetingKey is at most 320 characters.",
        ));
    }
    let org = match (context.and_then(|c| c.org.clone()), caller.principal.scope_kind()) {
        (Some(org), _) => org,
        (None, ScopeKind::Org) => caller.principal.org.clone().unwrap_or_default(),
        (None, _) => {
            return Err(failure(
                key,
                OfrepErrorCode::InvalidContext,
                "The context has no org: give the org's id (only a token bound to one org may leave it out).",
            ))
        }
    };
    match app.visible_org(caller, &org, Action::CheckEntitlements).await {
        Ok(_) => {}
        Err(e) if e.code == Code::NotFound => return Err(failure(key, OfrepErrorCode::InvalidContext, e.detail)),
        Err(e) => return Err(e.into()),
    }
    app.entitlements.wait_ready().await?;
    Ok((org, user))
}

fn flag(key: &str, a: super::index::Answer) -> OfrepFlag {
    let allowed = a.reason.allowed();
    OfrepFlag {
        key: key.to_string(),
        value: allowed,
        reason: if allowed {
            OfrepReason::TargetingMatch
        } else {
            OfrepReason::Disabled
        },
        variant: if allowed { "on" } else { "off" },
        metadata: OfrepMetadata {
            allot_reason: a.reason,
            user_id: a.user_id,
            valid_until: a.valid_until,
        },
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`: a feature the catalogue does not
/// know is `FLAG_NOT_FOUND` (404); an unknown user is an answer, `false`.
pub async fn evaluate_flag(app: &App, caller: &Caller, key: &str, req: &OfrepRequest) -> Result<OfrepFlag, OfrepError> {
    let (org, user) = subject(app, caller, req, Some(key)).await?;
    let today = app.clock.today();
    let state = app.entitlements.index.read();
    if !state.knows_feature(key) {
        return Err(failure(
            Some(key),
            OfrepErrorCode::FlagNotFound,
            format!(
                "No product of the catalogue grants a feature named {}.",
                allot_domain::types::excerpt(key)
            ),
        ));
    }
    let answer = state.check(&org, user, Asked::Feature(key), today);
    drop(state);
    super::note_use(app, today, &org, &answer);
    Ok(flag(key, answer))
}

/// `POST /ofrep/v1/evaluate/flags`: every feature of the catalogue for the
/// user, in name order, and the answers' version (changes exactly when
/// one of them does).
pub async fn evaluate_flags(app: &App, caller: &Caller, req: &OfrepRequest) -> Result<(OfrepFlags, String), OfrepError> {
    let (org, user) = subject(app, caller, req, None).await?;
    let today = app.clock.today();
    let state = app.entitlements.index.read();
    let answers: Vec<(&str, Answer)> = state
        .features()
        .into_iter()
        .map(|f| (f, state.check(&org, user, Asked::Feature(f), today)))
        .collect();
    // A product that reads every flag at once may gate its features on
    // any of them: each yes counts as a use (a seat wrongly called idle
    // would be taken from someone who uses it).
    for (_, a) in &answers {
        super::note_use(app, today, &org, a);
    }
    let flags: Vec<OfrepFlag> = answers.into_iter().map(|(f, a)| flag(f, a)).collect();
    drop(state);
    let version = answers_version(&flags);
    Ok((OfrepFlags { flags }, version))
}

/// A digest of the answers: each flag's key, value and reasons.
fn answers_version(flags: &[OfrepFlag]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in flags {
        h.update(f.key.as_bytes());
        h.update([0, u8::from(f.value)]);
        h.update(f.metadata.allot_reason.as_str().as_bytes());
        if let Some(d) = f.metadata.valid_until {
            h.update(d.to_string().as_bytes());
        }
        if let Some(u) = &f.metadata.user_id {
            h.update(u.as_bytes());
        }
        h.update([1]);
    }
    hex::encode(&h.finalize()[..16])
}
