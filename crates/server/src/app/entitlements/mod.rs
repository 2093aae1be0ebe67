//! The SaaS product asks: may this user use this feature now? Answered
//! from an in-process index ([`index`]) kept exact at every commit
//! ([`follow`]), by the rule in `allot_domain::entitlements`.
//!
//! Use cases: [`check_entitlement`] (one question in an org),
//! [`evaluate_entitlements`] (up to 1,000 questions, answers in order) and
//! [`list_user_entitlements`] (everything one user may use today). The
//! caller needs `CheckEntitlements` (the `product_service` role, and the
//! admin roles that read users) in the org's tenant: another tenant's org
//! is 404, but an unknown user or feature is an answer (`allowed: false`
//! with its reason), never a 404 that would tell one tenant's product
//! about another's users.

pub mod follow;
pub mod index;
pub mod ofrep;
pub mod usage;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use allot_domain::access::Action;
use allot_domain::entitlements::EntitlementReason;
use allot_domain::{Code, Error, Violation};
use allot_store::changes::Fed;

use crate::app::{App, Caller};
use index::{Answer, Asked, Index};

/// The most questions one batch may ask.
pub const MAX_EVALUATIONS: usize = 1_000;

/// The index, its feed and what it has seen.
pub struct Entitlements {
    pub(crate) index: Index,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Fed>>>,
    ready: watch::Sender<bool>,
    /// How often everything was read again after start-up (a listener
    /// reconnected, another process died; the truth tests expect none).
    pub full_loads: AtomicU64,
    /// First uses that checks answered yes to, until written.
    pub usage: usage::UsageRecorder,
}

impl Entitlements {
    /// An index that follows `store`'s feed from now on (filled by
    /// [`follow::keep_exact`]).
    pub fn new(store: &allot_store::Store) -> Arc<Entitlements> {
        let ent = Arc::new(Entitlements {
            index: Index::default(),
            receiver: Mutex::new(store.change_feed().subscribe()),
            ready: watch::channel(false).0,
            full_loads: AtomicU64::new(0),
            usage: usage::UsageRecorder::default(),
        });
        // Licence notes are applied in the committing task (see
        // `ChangeFeed::apply_licenses_with`); weak, so that the store does
        // not keep a dropped application's index alive.
        let weak = Arc::downgrade(&ent);
        store.change_feed().apply_licenses_with(Box::new(move |notes| {
            if let Some(ent) = weak.upgrade() {
                let mut state = ent.index.write();
                for (org, now) in notes {
                    state.apply_licenses(org, now);
                }
            }
        }));
        ent
    }

    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Fed>> {
        self.receiver.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Waits (at most 30 s) for the start-up read to finish.
    async fn wait_ready(&self) -> Result<(), Error> {
        if *self.ready.borrow() {
            return Ok(());
        }
        let mut rx = self.ready.subscribe();
        let ready = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        match ready {
            true => Ok(()),
            false => Err(Error::new(
                Code::Unavailable,
                "The entitlement index is still being read; ask again in a moment.",
            )),
        }
    }

    /// Users and licences the index holds now, and the bytes its tables
    /// and strings take (metrics, benchmarks).
    pub fn size(&self) -> (usize, usize, usize) {
        let s = self.index.read();
        (s.users_known(), s.licenses_held(), s.heap_bytes())
    }

    /// The in-process answer alone (benchmarks): no scope check, no I/O.
    pub fn answer(&self, org: &str, user: &str, feature: &str, today: NaiveDate) -> bool {
        self.index.read().check(org, user, Asked::Feature(feature), today).reason.allowed()
    }

    /// Reads a second, separate copy of the index (in pages of `page`
    /// users) and keeps it until the value is dropped: for measuring the
    /// index's memory (benchmarks) and comparing a fresh read with the
    /// live index (tests).
    #[doc(hidden)]
    pub async fn read_copy(store: &allot_store::Store, page: i64) -> Result<IndexCopy, Error> {
        Ok(IndexCopy(follow::full_load_in_pages(store, page).await?))
    }

    /// Whether the start-up read is done.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
}

/// A separate copy of the index (see [`Entitlements::read_copy`]).
#[doc(hidden)]
pub struct IndexCopy(index::IndexState);

impl IndexCopy {
    /// The copy's answer, as [`Entitlements::answer`] gives the live index's.
    pub fn answer(&self, org: &str, user: &str, feature: &str, today: NaiveDate) -> bool {
        self.0.check(org, user, Asked::Feature(feature), today).reason.allowed()
    }

    /// Users and licences the copy holds.
    pub fn size(&self) -> (usize, usize) {
        (self.0.users_known(), self.0.licenses_held())
    }
}

/// One question: may `user` use `feature` (or `product`) now?
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// The user's id, or email (compared case-insensitively).
    #[schema(min_length = 1, max_length = 320)]
    pub user: String,
    /// A feature of the catalogue's products. Give this or `product`.
    #[schema(min_length = 1, max_length = 100)]
    pub feature: Option<String>,
    /// A product code: whether the user may use the product itself.
    #[schema(min_length = 1, max_length = 100)]
    pub product: Option<String>,
}

/// A licence that grants what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GrantedBy {
    pub product: String,
    pub subscription: String,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EntitlementCheck {
    pub allowed: bool,
    pub reason: EntitlementReason,
    /// The org asked about.
    pub org: String,
    /// The user as asked (an id or an email).
    pub user: String,
    /// The user's id, when the user is known.
    pub user_id: Option<String>,
    /// The feature asked about (`null` when a product was).
    pub feature: Option<String>,
    /// The product asked about, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Every licence that grants it today (empty when not allowed).
    pub granted_by: Vec<GrantedBy>,
    /// The last day the answer holds if nothing changes (the latest end of
    /// the granting subscriptions); `null` when not allowed.
    pub valid_until: Option<NaiveDate>,
}

/// A question of a batch: its org, or the batch's.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationInput {
    /// The org; defaults to the batch's `org`.
    pub org: Option<String>,
    #[schema(min_length = 1, max_length = 320)]
    pub user: String,
    #[schema(min_length = 1, max_length = 100)]
    pub feature: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub product: Option<String>,
}

/// Up to 1,000 questions.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationsInput {
    /// The org of every question that names none.
    pub org: Option<String>,
    #[schema(max_items = 1000)]
    pub evaluations: Vec<EvaluationInput>,
}

/// The answers, in the order of the questions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Evaluations {
    pub evaluations: Vec<EntitlementCheck>,
}

/// A feature a user may use today, with what grants it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FeatureEntitlement {
    pub feature: String,
    pub granted_by: Vec<GrantedBy>,
    pub valid_until: NaiveDate,
}

/// A product a user may use today.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProductEntitlement {
    pub product: String,
    pub subscriptions: Vec<String>,
    pub valid_until: NaiveDate,
}

/// Everything one user may use today.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserEntitlementsView {
    pub user: String,
    pub email: String,
    /// `licensed` when the user may use what their licences grant; else
    /// why nothing is granted (`user_pending`, `user_inactive`).
    pub reason: EntitlementReason,
    pub features: Vec<FeatureEntitlement>,
    pub products: Vec<ProductEntitlement>,
}

/// What a question asks, checked: the user and exactly one of feature or product.
fn asked<'a>(user: &str, feature: &'a Option<String>, product: &'a Option<String>, at: &str) -> Result<Asked<'a>, Box<Violation>> {
    let field = |f: &str| if at.is_empty() { f.to_string() } else { format!("{at}.{f}") };
    // Lengths in characters, as the schema counts them.
    if user.is_empty() || user.chars().count() > 320 {
        return Err(Box::new(
            Violation::new(Code::ValidationFailed, "Give the user's id or email (at most 320 characters).").field(field("user")),
        ));
    }
    let refused = |message: &str, f: &str| Err(Box::new(Violation::new(Code::ValidationFailed, message).field(field(f))));
    match (feature, product) {
        (Some(f), None) if !f.is_empty() && f.chars().count() <= 100 => Ok(Asked::Feature(f)),
        (None, Some(p)) if !p.is_empty() && p.chars().count() <= 100 => Ok(Asked::Product(p)),
        (Some(_), Some(_)) => refused("Ask about a feature or a product, not both.", "product"),
        (None, None) => refused("Name the feature (or the product) to check.", "feature"),
        (Some(_), None) => refused("A feature is 1 to 100 characters.", "feature"),
        (None, Some(_)) => refused("A product code is 1 to 100 characters.", "product"),
    }
}

fn present(org: &str, user: &str, asked: Asked<'_>, a: Answer) -> EntitlementCheck {
    let (feature, product) = match asked {
        Asked::Feature(f) => (Some(f.to_string()), None),
        Asked::Product(p) => (None, Some(p.to_string())),
    };
    EntitlementCheck {
        allowed: a.reason.allowed(),
        reason: a.reason,
        org: org.to_string(),
        user: user.to_string(),
        user_id: a.user_id,
        feature,
        product,
        granted_by: a
            .granted_by
            .into_iter()
            .map(|(product, subscription)| GrantedBy { product, subscription })
            .collect(),
        valid_until: a.valid_until,
    }
}

/// Records a yes as a use of the granting products (see [`usage`]).
pub(crate) fn note_use(app: &App, today: NaiveDate, org: &str, a: &Answer) {
    if let (true, Some(user)) = (a.reason.allowed(), &a.user_id) {
        app.entitlements
            .usage
            .note(today, org, user, a.granted_by.iter().map(|(product, _)| product.as_str()));
    }
}

fn invalid(v: Violation) -> Error {
    Error {
        code: Code::ValidationFailed,
        detail: v.message.clone(),
        violations: vec![v],
    }
}

/// `POST /orgs/{org}/entitlements/check`.
pub async fn check_entitlement(app: &App, caller: &Caller, org: &str, input: &CheckInput) -> Result<EntitlementCheck, Error> {
    app.visible_org(caller, org, Action::CheckEntitlements).await?;
    let what = asked(&input.user, &input.feature, &input.product, "").map_err(|v| invalid(*v))?;
    app.entitlements.wait_ready().await?;
    let today = app.clock.today();
    let answer = app.entitlements.index.read().check(org, &input.user, what, today);
    note_use(app, today, org, &answer);
    Ok(present(org, &input.user, what, answer))
}

/// `POST /entitlements/evaluations`: every question is checked for shape,
/// then every org for scope (404) and the role there (403), before any is
/// answered.
pub async fn evaluate_entitlements(app: &App, caller: &Caller, input: &EvaluationsInput) -> Result<Evaluations, Error> {
    if input.evaluations.len() > MAX_EVALUATIONS {
        return Err(invalid(
            Violation::new(
                Code::ValidationFailed,
                format!(
                    "A batch asks at most {MAX_EVALUATIONS} questions; this one asks {}. Split it.",
                    input.evaluations.len()
                ),
            )
            .field("evaluations"),
        ));
    }
    let mut questions = Vec::with_capacity(input.evaluations.len());
    let mut violations = Vec::new();
    for (i, e) in input.evaluations.iter().enumerate() {
        let at = format!("evaluations[{i}]");
        let Some(org) = e.org.as_deref().or(input.org.as_deref()) else {
            violations.push(
                Violation::new(Code::ValidationFailed, "Name the org of this question, or the batch's org.").field(format!("{at}.org")),
            );
            continue;
        };
        match asked(&e.user, &e.feature, &e.product, &at) {
            Ok(what) => questions.push((org, e.user.as_str(), what)),
            Err(v) => violations.push(*v),
        }
    }
    if !violations.is_empty() {
        return Err(Error {
            code: Code::ValidationFailed,
            detail: format!("{} of the questions cannot be asked; see errors.", violations.len()),
            violations,
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (org, ..) in &questions {
        if !seen.contains(org) {
            app.visible_org(caller, org, Action::CheckEntitlements).await?;
            seen.push(org);
        }
    }
    caller.require(Action::CheckEntitlements)?;
    app.entitlements.wait_ready().await?;
    let today = app.clock.today();
    let state = app.entitlements.index.read();
    let answers: Vec<_> = questions
        .into_iter()
        .map(|(org, user, what)| (org, user, what, state.check(org, user, what, today)))
        .collect();
    drop(state);
    let evaluations = answers
        .into_iter()
        .map(|(org, user, what, a)| {
            note_use(app, today, org, &a);
            present(org, user, what, a)
        })
        .collect();
    Ok(Evaluations { evaluations })
}

/// `GET /orgs/{org}/users/{user}/entitlements`: 404 for a user the org
/// does not have (here the user is the resource asked for).
pub async fn list_user_entitlements(app: &App, caller: &Caller, org: &str, user: &str) -> Result<UserEntitlementsView, Error> {
    app.visible_org(caller, org, Action::CheckEntitlements).await?;
    app.entitlements.wait_ready().await?;
    let today = app.clock.today();
    let found = app.entitlements.index.read().user_entitlements(org, user, today);
    let u = found.ok_or_else(|| Error::not_found(format!("User {}", allot_domain::types::excerpt(user))))?;
    Ok(UserEntitlementsView {
        user: u.user_id,
        email: u.email,
        reason: u.blocked.unwrap_or(EntitlementReason::Licensed),
        features: u
            .features
            .into_iter()
            .map(|(feature, by)| FeatureEntitlement {
                valid_until: by.iter().map(|(_, _, d)| *d).max().unwrap_or(today),
                granted_by: by
                    .into_iter()
                    .map(|(product, subscription, _)| GrantedBy { product, subscription })
                    .collect(),
                feature,
            })
            .collect(),
        products: u
            .products
            .into_iter()
            .map(|(product, by)| ProductEntitlement {
                valid_until: by.iter().map(|(_, d)| *d).max().unwrap_or(today),
                subscriptions: by.into_iter().map(|(s, _)| s).collect(),
                product,
            })
            .collect(),
    })
}

/// A signed offline token and when it expires.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntitlementToken {
    /// A JWT signed with Ed25519 (`alg: EdDSA`, with the `kid` of a key
    /// in `/.well-known/jwks.json`).
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The claims of an offline token: what the user may use as of `iat`.
#[derive(Debug, Clone, Serialize)]
struct OfflineClaims<'a> {
    iss: &'a str,
    /// The user's id.
    sub: &'a str,
    org: &'a str,
    email: &'a str,
    /// Features the user may use at `iat` (none for a pending or inactive user).
    features: Vec<&'a str>,
    /// Products the user may use at `iat`.
    products: Vec<&'a str>,
    iat: i64,
    exp: i64,
    jti: String,
}

/// `POST /orgs/{org}/users/{user}/entitlement-token`: what the user may
/// use today, signed, for a product that must work offline until `exp`.
/// 404 for a user the org does not have.
pub async fn issue_entitlement_token(app: &App, caller: &Caller, org: &str, user: &str) -> Result<EntitlementToken, Error> {
    app.visible_org(caller, org, Action::CheckEntitlements).await?;
    app.entitlements.wait_ready().await?;
    let now = app.clock.now();
    let found = app.entitlements.index.read().user_entitlements(org, user, app.clock.today());
    let u = found.ok_or_else(|| Error::not_found(format!("User {}", allot_domain::types::excerpt(user))))?;
    let (kid, key) = app.signer.current(app).await?;
    let ttl = chrono::Duration::from_std(app.config.offline_tokens.ttl)
        .map_err(|_| Error::internal("the offline token lifetime is out of range"))?;
    let expires_at = now + ttl;
    let mut jti = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut jti);
    let claims = OfflineClaims {
        iss: &app.config.offline_tokens.issuer,
        sub: &u.user_id,
        org,
        email: &u.email,
        features: u.features.keys().map(String::as_str).collect(),
        products: u.products.keys().map(String::as_str).collect(),
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
        jti: hex::encode(jti),
    };
    let token = crate::app::signing::sign_jwt(&kid, &key, &claims)?;
    // Recorded before the token is handed out: its key must stay published
    // for as long as it lives.
    app.signer.note_expiry(app, &kid, expires_at).await?;
    Ok(EntitlementToken { token, expires_at })
}
