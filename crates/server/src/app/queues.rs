//! Contact-centre queues: call, outbound and inbox queues with members.
//! Each queue bills one product for every member, so a member must hold
//! that licence, the licence cannot be removed while the user is a member
//! (the planner refuses, naming the queues), a removal that leaves such a
//! licence billed answers with a warning, and one call takes a user out of
//! every queue and, if asked, off the licences they kept billed.

use serde::{Deserialize, Serialize};
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::planner::{Held, LicenseChange, RemoveLicense};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::licenses;
use allot_store::queues::{self, Queue};
use allot_store::{audit, catalogue, in_transaction, new_id, ts, users, StoreError, Tx};

use super::licenses::LicenseView;
use super::paging::Paged;
use super::{App, Caller};

/// What kind of queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    Call,
    Outbound,
    Inbox,
}

impl QueueKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueKind::Call => "call",
            QueueKind::Outbound => "outbound",
            QueueKind::Inbox => "inbox",
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    pub id: String,
    pub name: String,
    #[schema(value_type = QueueKind)]
    pub kind: String,
    /// The product each member is billed for.
    pub product: String,
    pub created_at: String,
}

impl From<Queue> for QueueView {
    fn from(q: Queue) -> Self {
        QueueView {
            id: q.id,
            name: q.name,
            kind: q.kind,
            product: q.product,
            created_at: q.created_at,
        }
    }
}

/// A queue with its members' user ids.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueWithMembers {
    #[serde(flatten)]
    pub queue: QueueView,
    pub members: Vec<String>,
}

/// A queue's members after one was added.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueMembers {
    pub queue: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: String,
    pub kind: QueueKind,
    pub product: ProductCode,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    pub user: String,
}

/// `?remove_licenses=` of leaving every queue.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeaveQuery {
    /// Also remove the licences the queues kept billed.
    pub remove_licenses: Option<bool>,
}

/// A queue as named in a warning.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueRef {
    pub id: String,
    pub name: String,
}

/// A licence a change left in place because queue memberships bill it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BillingWarning {
    /// Always `still_billed`.
    pub code: String,
    pub product: String,
    pub queues: Vec<QueueRef>,
    pub message: String,
}

/// Out of every queue: the queues left, and the licences removed with them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueuesLeft {
    pub left: Vec<QueueView>,
    pub removed_licenses: Vec<Held>,
}

fn not_found(id: &str) -> StoreError {
    StoreError::Domain(Error::not_found(format!("Queue {}", allot_domain::types::excerpt(id))))
}

fn user_not_found(id: &str) -> StoreError {
    StoreError::Domain(Error::not_found(format!("User {}", allot_domain::types::excerpt(id))))
}

async fn user_exists(tx: &mut Tx, org: &str, user: &str) -> Result<(), StoreError> {
    if users::get(tx, org, user).await?.is_none() {
        return Err(user_not_found(user));
    }
    Ok(())
}

/// Warnings for a licence change: licences the user keeps that queue
/// memberships bill, with the queues.
pub async fn still_billed(tx: &mut Tx, org: &str, user: &str, held: &[LicenseView]) -> Result<Vec<BillingWarning>, Error> {
    let mine = queues::of_user(tx, org, user).await?;
    let mut out = Vec::new();
    for l in held {
        let billing: Vec<&Queue> = mine.iter().filter(|q| q.product == l.product).collect();
        if !billing.is_empty() {
            let names: Vec<&str> = billing.iter().map(|q| q.name.as_str()).collect();
            out.push(BillingWarning {
                code: "still_billed".into(),
                product: l.product.clone(),
                queues: billing
                    .iter()
                    .map(|q| QueueRef {
                        id: q.id.clone(),
                        name: q.name.clone(),
                    })
                    .collect(),
                message: format!(
                    "{} stays billed while the user is a member of {}. Remove them from all queues with DELETE /api/v1/orgs/{org}/users/{user}/queues?remove_licenses=true.",
                    l.product,
                    names.join(", ")
                ),
            });
        }
    }
    Ok(out)
}

pub async fn list_queues(app: &App, caller: &Caller, org: &str) -> Result<Paged<QueueView>, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadLicenses).await?;
    Ok(Paged::all(queues::list(&mut rd, &org.id).await?).map(QueueView::from))
}

pub async fn create_queue(app: &App, caller: &Caller, org: &str, input: QueueInput) -> Result<QueueView, Error> {
    let name = allot_domain::types::check_text("name", &input.name, 200)?;
    let now = app.clock.now();
    let q = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::ManageQueues).await?;
        if catalogue::get(&mut tx, input.product.as_str()).await?.is_none() {
            return Err(Error::validation("product", format!("{} is not a product in the catalogue.", input.product)).into());
        }
        let q = Queue {
            id: new_id("que"),
            name: name.clone(),
            kind: input.kind.as_str().to_string(),
            product: input.product.to_string(),
            created_at: ts(now),
        };
        queues::insert(&mut tx, &org.id, &q).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "queue.create",
            &format!("queue:{}", q.id),
            None,
            Some(&json!(q)),
            now,
        )
        .await?;
        Ok::<_, StoreError>(q)
    })?;
    Ok(q.into())
}

pub async fn get_queue(app: &App, caller: &Caller, org: &str, queue: &str) -> Result<QueueWithMembers, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadUsers).await?;
    let q = queues::get(&mut rd, &org.id, queue).await?.ok_or_else(|| not_found(queue))?;
    let members = queues::members(&mut rd, &org.id, queue).await?;
    Ok(QueueWithMembers { queue: q.into(), members })
}

pub async fn delete_queue(app: &App, caller: &Caller, org: &str, queue: &str) -> Result<(), Error> {
    let now = app.clock.now();
    in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::ManageQueues).await?;
        let q = queues::get(&mut tx, &org.id, queue).await?.ok_or_else(|| not_found(queue))?;
        let members = queues::members(&mut tx, &org.id, queue).await?;
        queues::delete(&mut tx, &org.id, queue).await?;
        let mut before = json!(q);
        before["members"] = json!(members);
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "queue.delete",
            &format!("queue:{queue}"),
            Some(&before),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })
}

pub async fn add_queue_member(app: &App, caller: &Caller, org: &str, queue: &str, input: MemberInput) -> Result<QueueMembers, Error> {
    let now = app.clock.now();
    let members = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::ManageQueues).await?;
        let q = queues::get(&mut tx, &org.id, queue).await?.ok_or_else(|| not_found(queue))?;
        let user = users::get(&mut tx, &org.id, &input.user)
            .await?
            .ok_or_else(|| user_not_found(&input.user))?;
        // Bumping the user's licence version first: a licence change planned
        // before this membership fails its claim and plans again with it.
        users::lock_licenses(&mut tx, &org.id, std::slice::from_ref(&user.id)).await?;
        let held = licenses::of_user(&mut tx, &org.id, &user.id).await?;
        if !held.iter().any(|a| a.held.product.as_str() == q.product) {
            return Err(Error::new(
                Code::NotAssigned,
                format!(
                    "{} does not hold {}, which queue {} bills: assign it first.",
                    user.email, q.product, q.name
                ),
            )
            .into());
        }
        if queues::add_member(&mut tx, &org.id, queue, &user.id, now).await? {
            audit::record(
                &mut tx,
                Some(&org.id),
                &caller.actor(),
                "queue.member_add",
                &format!("queue:{queue}"),
                None,
                Some(&json!({ "user": user.id })),
                now,
            )
            .await?;
        }
        queues::members(&mut tx, &org.id, queue).await
    })?;
    Ok(QueueMembers {
        queue: queue.to_string(),
        members,
    })
}

pub async fn remove_queue_member(app: &App, caller: &Caller, org: &str, queue: &str, user: &str) -> Result<(), Error> {
    let now = app.clock.now();
    in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::ManageQueues).await?;
        queues::get(&mut tx, &org.id, queue).await?.ok_or_else(|| not_found(queue))?;
        user_exists(&mut tx, &org.id, user).await?;
        if !queues::remove_member(&mut tx, &org.id, queue, user).await? {
            return Err(Error::not_found(format!("User {user} in queue {queue}")).into());
        }
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "queue.member_remove",
            &format!("queue:{queue}"),
            Some(&json!({ "user": user })),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })
}

pub async fn list_user_queues(app: &App, caller: &Caller, org: &str, user: &str) -> Result<Paged<QueueView>, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadUsers).await?;
    user_exists(&mut rd, &org.id, user).await?;
    Ok(Paged::all(queues::of_user(&mut rd, &org.id, user).await?).map(QueueView::from))
}

/// Takes a user out of every queue and, if asked, off the licences they
/// billed, in one transaction.
pub async fn leave_all_queues(app: &App, caller: &Caller, org: &str, user: &str, q: &LeaveQuery) -> Result<QueuesLeft, Error> {
    let remove_licenses = q.remove_licenses.unwrap_or(false);
    let (now, today) = (app.clock.now(), app.clock.today());
    let (left, removed) = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::ManageQueues).await?;
        if remove_licenses {
            caller.require(Action::WriteLicenses)?;
        }
        let u = users::get(&mut tx, &org.id, user).await?.ok_or_else(|| user_not_found(user))?;
        users::lock_licenses(&mut tx, &org.id, std::slice::from_ref(&u.id)).await?;
        let left = queues::remove_from_all(&mut tx, &org.id, &u.id).await?;
        for q in &left {
            audit::record(
                &mut tx,
                Some(&org.id),
                &caller.actor(),
                "queue.member_remove",
                &format!("queue:{}", q.id),
                Some(&json!({ "user": u.id })),
                None,
                now,
            )
            .await?;
        }
        let mut removed: Vec<Held> = Vec::new();
        if remove_licenses {
            let held: Vec<Held> = licenses::of_user(&mut tx, &org.id, &u.id)
                .await?
                .into_iter()
                .map(|a| a.held)
                .collect();
            let billed: Vec<RemoveLicense> = held
                .iter()
                .filter(|h| left.iter().any(|q| q.product == h.product.as_str()))
                .map(|h| RemoveLicense {
                    product: h.product.clone(),
                    subscription: Some(h.subscription.clone()),
                })
                .collect();
            if !billed.is_empty() {
                let change = LicenseChange {
                    add: Vec::new(),
                    remove: billed,
                    add_required: false,
                };
                // Out of every queue by now, so nothing keeps the licences.
                let plan = super::licenses::change_within(&mut tx, &org, &u.id, &change, &caller.actor(), today, now)
                    .await?
                    .map_err(|refused| StoreError::Domain(Error::rejected(refused)))?;
                removed = plan.release;
            }
        }
        Ok::<_, StoreError>((left, removed))
    })?;
    Ok(QueuesLeft {
        left: left.into_iter().map(QueueView::from).collect(),
        removed_licenses: removed,
    })
}

/// A queue with its members as users (the console's **Queues** page).
#[derive(Debug, Clone)]
pub struct QueueRoster {
    pub queue: QueueView,
    /// Members by email.
    pub members: Vec<super::users::UserView>,
}

/// Every queue of the org with its members.
pub async fn list_queue_rosters(app: &App, caller: &Caller, org: &str) -> Result<Vec<QueueRoster>, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadUsers).await?;
    caller.require(Action::ReadLicenses)?;
    let mut out = Vec::new();
    for q in queues::list(&mut rd, &org.id).await? {
        let ids = queues::members(&mut rd, &org.id, &q.id).await?;
        let mut members: Vec<super::users::UserView> = users::many(&mut rd, &org.id, &ids)
            .await?
            .into_iter()
            .map(super::users::UserView::from)
            .collect();
        members.sort_by(|a, b| a.email.cmp(&b.email));
        out.push(QueueRoster { queue: q.into(), members });
    }
    Ok(out)
}

/// The licences a user holds that queue memberships keep billed, with the
/// queues (what a page shows after the phone licence was removed).
pub async fn billing_warnings(app: &App, caller: &Caller, org: &str, user: &str) -> Result<Vec<BillingWarning>, Error> {
    let held = super::licenses::list_user_licenses(app, caller, org, user).await?;
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadLicenses).await?;
    still_billed(&mut rd, &org.id, user, &held.items).await
}
