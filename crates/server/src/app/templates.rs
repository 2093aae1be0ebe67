//! Licence templates: the licences every new user gets, for the whole org
//! or for one group's members (a group template of one of the user's
//! groups wins over the org's). CRUD, applying one to existing users as a
//! job, and giving a user just created the template that fits it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::bulk::{JobKind, UserFilter};
use allot_domain::planner::Held;
use allot_domain::templates::{template_change, TemplateApplyRequest, TemplateLicense};
use allot_domain::{Code, Error, Violation};
use allot_store::audit::Actor;
use allot_store::jobs::{self, Job};
use allot_store::templates::{self, Template};
use allot_store::{audit, catalogue, in_transaction, new_id, subscriptions, tenants, ts, users, StoreError, Tx};

use super::audit::snapshot;
use super::etag::{self, IfMatch};
use super::jobs::{JobView, CHUNK_USERS};
use super::paging::Paged;
use super::{App, Caller};

/// Whom a template is for: `"org"` (every new user of the org) or
/// `{"group": id}` (the group's members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TemplateScope {
    Named(String),
    Group(GroupScope),
}

/// `{"group": id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupScope {
    pub group: String,
}

impl utoipa::PartialSchema for TemplateScope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["org"]))
                    .description(Some("Every new user of the organisation")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property(
                        "group",
                        ObjectBuilder::new().schema_type(Type::String).description(Some("A group's id")),
                    )
                    .required("group")
                    .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
                    .description(Some("The members of one group")),
            )
            .into()
    }
}

impl utoipa::ToSchema for TemplateScope {}

impl TemplateScope {
    fn of(t: &Template) -> TemplateScope {
        match &t.group {
            None => TemplateScope::Named("org".into()),
            Some(g) => TemplateScope::Group(GroupScope { group: g.clone() }),
        }
    }
    fn group(&self) -> Result<Option<String>, Error> {
        match self {
            TemplateScope::Named(s) if s == "org" => Ok(None),
            TemplateScope::Named(other) => Err(Error::validation(
                "scope",
                format!(
                    "scope must be \"org\" or {{\"group\": \"<group id>\"}}, not \"{}\".",
                    allot_domain::types::excerpt(other)
                ),
            )),
            TemplateScope::Group(GroupScope { group }) => Ok(Some(group.clone())),
        }
    }
}

/// A template as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    pub scope: TemplateScope,
    pub enabled: bool,
    pub licenses: Vec<TemplateLicense>,
    pub created_at: String,
    pub updated_at: String,
    /// Changes whenever the template does; send it as `If-Match` to update only what was read.
    pub etag: String,
}

fn template_etag(t: &Template) -> String {
    etag::of(&json!({ "name": t.name, "group": t.group, "enabled": t.enabled, "licenses": t.licenses }))
}

pub fn view(t: &Template) -> TemplateView {
    TemplateView {
        id: t.id.clone(),
        name: t.name.clone(),
        scope: TemplateScope::of(t),
        enabled: t.enabled,
        licenses: t.licenses.clone(),
        created_at: t.created_at.clone(),
        updated_at: t.updated_at.clone(),
        etag: template_etag(t),
    }
}

fn audit_view(t: &Template) -> Option<serde_json::Value> {
    let mut v = snapshot(&view(t))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("etag");
    }
    Some(v)
}

fn yes() -> bool {
    true
}

/// A flag that may only be true (or left out).
fn only_true() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .default(Some(serde_json::Value::Bool(true)))
        .build()
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: String,
    pub scope: TemplateScope,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
    #[schema(min_items = 1)]
    pub licenses: Vec<TemplateLicense>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: Option<String>,
    pub scope: Option<TemplateScope>,
    pub enabled: Option<bool>,
    pub licenses: Option<Vec<TemplateLicense>>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyInput {
    /// Must be true: new users get their template when they are created.
    #[serde(default = "yes")]
    #[schema(schema_with = only_true)]
    pub existing_users: bool,
    /// Keep licences the template does not name (default); false removes them.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub retain_existing: bool,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a new user's template gave it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateOutcome {
    pub template: String,
    /// Whether its licences were given (all of them) or refused (none).
    pub applied: bool,
    /// The user's licences after it, when applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub licenses: Option<Vec<Held>>,
    /// Why it was refused; the user was created without them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Violation>>,
}

/// What a template names must exist in the org: its group, each product,
/// each subscription (carrying that product); no product twice.
async fn check(tx: &mut Tx, org: &str, t: &Template) -> Result<(), StoreError> {
    allot_domain::types::check_text("name", &t.name, 200)?;
    if let Some(g) = &t.group {
        if !users::unknown_links(tx, org, &[], std::slice::from_ref(g)).await?.is_empty() {
            return Err(Error::not_found(format!("Group {}", allot_domain::types::excerpt(g))).into());
        }
    }
    if t.licenses.is_empty() {
        return Err(Error::validation("licenses", "A template names at least one licence.").into());
    }
    let cat = catalogue::all(tx).await?;
    let mut bad = Vec::new();
    for (i, l) in t.licenses.iter().enumerate() {
        let field = format!("licenses[{i}]");
        if !cat.contains_key(&l.product) {
            bad.push(Violation::new(Code::ValidationFailed, format!("There is no product {}.", l.product)).field(&field));
            continue;
        }
        if t.licenses[..i].iter().any(|o| o.product == l.product) {
            bad.push(Violation::new(Code::ValidationFailed, format!("{} is named twice.", l.product)).field(&field));
        }
        if let Some(s) = &l.subscription {
            let sub = subscriptions::get(tx, org, s)
                .await?
                .ok_or_else(|| StoreError::Domain(subscriptions::not_found(s)))?;
            if !sub.items.iter().any(|i| i.product == l.product.as_str()) {
                bad.push(
                    Violation::new(Code::ValidationFailed, format!("Subscription {s} carries no {}.", l.product))
                        .field(&field)
                        .subscription(s),
                );
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::rejected(bad).into())
    }
}

async fn find(tx: &mut Tx, org: &str, id: &str) -> Result<Template, StoreError> {
    templates::get(tx, org, id)
        .await?
        .ok_or_else(|| StoreError::Domain(Error::not_found(format!("Licence template {}", allot_domain::types::excerpt(id)))))
}

pub async fn list_license_templates(app: &App, caller: &Caller, org: &str) -> Result<Paged<TemplateView>, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadLicenses).await?;
    Ok(Paged::all(templates::list(&mut rd, &org.id).await?.iter().map(view).collect()))
}

pub async fn create_license_template(app: &App, caller: &Caller, org: &str, input: TemplateInput) -> Result<TemplateView, Error> {
    let now = app.clock.now();
    let group = input.scope.group()?;
    let t = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteLicenses).await?;
        let t = Template {
            org: org.id.clone(),
            id: new_id("tpl"),
            name: input.name.trim().to_string(),
            group: group.clone(),
            enabled: input.enabled,
            licenses: input.licenses.clone(),
            created_at: ts(now),
            updated_at: ts(now),
        };
        check(&mut tx, &org.id, &t).await?;
        templates::insert(&mut tx, &t).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "template.create",
            &format!("template:{}", t.id),
            None,
            audit_view(&t).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(t)
    })?;
    Ok(view(&t))
}

pub async fn get_license_template(app: &App, caller: &Caller, org: &str, tpl: &str) -> Result<TemplateView, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadLicenses).await?;
    Ok(view(&find(&mut rd, &org.id, tpl).await?))
}

pub async fn update_license_template(
    app: &App,
    caller: &Caller,
    org: &str,
    tpl: &str,
    p: TemplatePatch,
    if_match: &IfMatch,
) -> Result<TemplateView, Error> {
    let now = app.clock.now();
    let group = p.scope.as_ref().map(TemplateScope::group).transpose()?;
    let t = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteLicenses).await?;
        let before = find(&mut tx, &org.id, tpl).await?;
        let mut t = before.clone();
        if let Some(n) = &p.name {
            t.name = n.trim().to_string();
        }
        if let Some(g) = &group {
            t.group = g.clone();
        }
        if let Some(e) = p.enabled {
            t.enabled = e;
        }
        if let Some(l) = &p.licenses {
            t.licenses = l.clone();
        }
        check(&mut tx, &org.id, &t).await?;
        if_match.check(&format!("Licence template {tpl}"), &template_etag(&before))?;
        templates::update(&mut tx, &t, now).await?;
        t.updated_at = ts(now);
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "template.update",
            &format!("template:{}", t.id),
            audit_view(&before).as_ref(),
            audit_view(&t).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(t)
    })?;
    Ok(view(&t))
}

/// Deletes a template; the licences it gave stay.
pub async fn delete_license_template(app: &App, caller: &Caller, org: &str, tpl: &str, if_match: &IfMatch) -> Result<(), Error> {
    let now = app.clock.now();
    in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteLicenses).await?;
        let before = find(&mut tx, &org.id, tpl).await?;
        if_match.check(&format!("Licence template {tpl}"), &template_etag(&before))?;
        templates::delete(&mut tx, &org.id, tpl).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "template.delete",
            &format!("template:{tpl}"),
            audit_view(&before).as_ref(),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })
}

/// Queues a `template_apply` job over the template's users (the org's, or
/// the group's members), stored with the job in one transaction.
pub async fn apply_license_template(app: &App, caller: &Caller, org: &str, tpl: &str, input: ApplyInput) -> Result<JobView, Error> {
    if !input.existing_users {
        return Err(Error::validation(
            "existing_users",
            "Only existing users can be given a template now: new users get the enabled template that fits them when they are created.",
        ));
    }
    let now = app.clock.now();
    let (org, t) = {
        let mut rd = app.store.read_conn().await?;
        let org = caller.org(&mut rd, org, Action::WriteLicenses).await?;
        let t = find(&mut rd, &org.id, tpl).await?;
        (org, t)
    };
    let request = TemplateApplyRequest {
        template: t.id.clone(),
        licenses: t.licenses.clone(),
        retain_existing: input.retain_existing,
        dry_run: input.dry_run,
    };
    let filter = UserFilter {
        group: t.group.clone(),
        ..UserFilter::default()
    };
    let job = Job::queued(
        &org.id,
        JobKind::TemplateApply,
        serde_json::to_string(&request).map_err(|e| Error::internal(format!("cannot store the request: {e}")))?,
        caller.actor().actor,
        now,
        Some((0, 0)),
    );
    let job = in_transaction!(app.store, |tx| {
        jobs::insert(&mut tx, &job).await?;
        let (mut after, mut seq, mut total) = (String::new(), 0i64, 0i64);
        loop {
            let page = users::ids_matching(&mut tx, &org.id, &filter, now.date_naive(), &after, CHUNK_USERS as i64).await?;
            let Some(last) = page.last() else { break };
            after = last.clone();
            total += page.len() as i64;
            let full = page.len() == CHUNK_USERS;
            jobs::insert_chunks(&mut tx, &org.id, &job.id, seq, &[page]).await?;
            seq += 1;
            if !full {
                break;
            }
        }
        jobs::set_resolved(&mut tx, &org.id, &job.id, seq, total).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "template.apply",
            &format!("template:{}", t.id),
            None,
            Some(&json!({ "job": job.id, "users": total, "retain_existing": input.retain_existing, "dry_run": input.dry_run })),
            now,
        )
        .await?;
        let mut j = job.clone();
        (j.chunks, j.total) = (seq, total);
        Ok::<_, StoreError>(j)
    })?;
    app.job_queued();
    Ok(JobView::of(&job))
}

/// Gives a user just created the licences of the enabled template that fits
/// it, in the creating transaction. The user is created either way: a
/// refusal (no seat left, a rule) is answered with the reasons, so the
/// caller can fix it; nothing of the template is applied then.
pub async fn give_new_user_template(
    tx: &mut Tx,
    org: &tenants::Org,
    user: &users::User,
    who: &Actor,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<TemplateOutcome>, StoreError> {
    let all = templates::list(tx, &org.id).await?;
    let Some(t) = templates::choose(&all, &user.groups) else {
        return Ok(None);
    };
    let Some(change) = template_change(&t.licenses, &[], true) else {
        return Ok(None);
    };
    match super::licenses::change_within(tx, org, &user.id, &change, who, today, now).await {
        Ok(Ok(plan)) => {
            // The template gave these: a group's are taken back when the user leaves it.
            let products: Vec<&str> = change.add.iter().map(|a| a.product.as_str()).collect();
            allot_store::grants::record(tx, &org.id, &user.id, &t.id, &products).await?;
            Ok(Some(TemplateOutcome {
                template: t.id.clone(),
                applied: true,
                licenses: Some(plan.result),
                errors: None,
            }))
        }
        Ok(Err(errors)) => Ok(Some(TemplateOutcome {
            template: t.id.clone(),
            applied: false,
            licenses: None,
            errors: Some(errors),
        })),
        // A seat the plan counted on went to someone else while it was
        // written: the whole creation starts over, and the planner then sees
        // the pool full and says so (the user is still created).
        Err(StoreError::Domain(e)) if e.code == Code::SeatsExhausted => Err(StoreError::Replan(format!(
            "a seat for the template was taken concurrently: {}",
            e.detail
        ))),
        Err(e) => Err(e),
    }
}
