//! The role table: every endpoint × every role × own tenant / other tenant. The
//! expected answer comes from a permission table written out here (`WHO_MAY`) and the
//! endpoint's scope: another tenant's object is 404, a role that may not do
//! the action in its own tenant is 403, anything else succeeds. Every
//! refused call leaves the database as it was.

use reqwest::Method;
use serde_json::{json, Value};

use allot_domain::access::{Action, Role, ScopeKind};

use crate::both_backends;
use crate::kit::*;
use crate::ui_kit;

both_backends!(every_endpoint_every_role_every_tenant, every_page_every_role_every_tenant);

/// One tenant: a partner with a customer org and objects of every kind.
#[derive(Clone, Debug)]
struct Tenant {
    partner: String,
    org: String,
    sub: String,
    user: String,
    template: String,
    job: String,
    /// An org super admin's token: only they ask to buy.
    buyer: String,
}

/// Objects made fresh for one call (a call may consume them).
#[derive(Clone, Debug, Default)]
struct Fresh {
    id: String,
    user: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    /// Not bound to a tenant: catalogue, partners, provider housekeeping.
    Provider,
    /// A partner's own resources.
    Partner,
    /// An org's resources.
    Org,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Prep {
    None,
    User,
    Template,
    /// A group of the tenant's org.
    Group,
    Queue,
    QueueMember,
    Purchase,
    EmptySub,
    AwaitingSub,
    Job,
    /// A token of the tenant's org, to revoke.
    Token,
    /// An invited org_read_only admin of the tenant's org.
    Admin,
    /// A webhook endpoint of the provider, the tenant's partner or its org,
    /// with one delivery (a test event): its id, and the delivery's as `user`.
    ProviderHook,
    PartnerHook,
    OrgHook,
}

struct Case {
    /// The operation's `operationId`: every registered route has a case
    /// (checked against the server's own OpenAPI document).
    name: &'static str,
    method: Method,
    path: fn(&Tenant, &Fresh) -> String,
    body: fn(&Tenant, &Fresh) -> Option<Value>,
    scope: Scope,
    actions: &'static [Action],
    prep: Prep,
    /// Statuses that count as done for an allowed caller.
    ok: &'static [u16],
    csv: bool,
    /// Changes nothing when it succeeds (a POST that reads, a purge with nothing due).
    changes_nothing: bool,
    /// The status for another tenant's object: 404, except where a
    /// protocol of its own says otherwise (OFREP: an org outside the
    /// caller's scope is an invalid context, 400).
    outside: u16,
}

const DONE: &[u16] = &[200, 201, 202, 204];

fn none(_: &Tenant, _: &Fresh) -> Option<Value> {
    None
}

fn cases() -> Vec<Case> {
    use Action::*;
    let c = |name, method, path, body, scope, actions, prep| Case {
        name,
        method,
        path,
        body,
        scope,
        actions,
        prep,
        ok: DONE,
        csv: false,
        changes_nothing: false,
        outside: 404,
    };
    vec![
        c(
            "list_tokens",
            Method::GET,
            |_, _| "/api/v1/tokens".into(),
            none,
            Scope::Provider,
            &[ManageTokens],
            Prep::None,
        ),
        c(
            "create_token",
            Method::POST,
            |_, _| "/api/v1/tokens".into(),
            |t, _| Some(json!({ "role": "org_read_only", "org": t.org })),
            Scope::Org,
            &[ManageTokens],
            Prep::None,
        ),
        c(
            "revoke_token",
            Method::DELETE,
            |_, f| format!("/api/v1/tokens/{}", f.id),
            none,
            Scope::Org,
            &[ManageTokens],
            Prep::Token,
        ),
        c(
            "list_admins",
            Method::GET,
            |_, _| "/api/v1/admins".into(),
            none,
            Scope::Provider,
            &[ManageAdmins],
            Prep::None,
        ),
        c(
            "invite_admin",
            Method::POST,
            |_, _| "/api/v1/admins".into(),
            |t, _| Some(json!({ "email": format!("{}@admins.example", rand_suffix()), "role": "org_read_only", "org": t.org })),
            Scope::Org,
            &[ManageAdmins],
            Prep::None,
        ),
        c(
            "get_admin",
            Method::GET,
            |_, f| format!("/api/v1/admins/{}", f.id),
            none,
            Scope::Org,
            &[ManageAdmins],
            Prep::Admin,
        ),
        c(
            "update_admin",
            Method::PATCH,
            |_, f| format!("/api/v1/admins/{}", f.id),
            |_, _| Some(json!({ "role": "org_support" })),
            Scope::Org,
            &[ManageAdmins],
            Prep::Admin,
        ),
        c(
            "remove_admin",
            Method::DELETE,
            |_, f| format!("/api/v1/admins/{}", f.id),
            none,
            Scope::Org,
            &[ManageAdmins],
            Prep::Admin,
        ),
        c(
            "reinvite_admin",
            Method::POST,
            |_, f| format!("/api/v1/admins/{}/invitation", f.id),
            none,
            Scope::Org,
            &[ManageAdmins],
            Prep::Admin,
        ),
        c(
            "list_products",
            Method::GET,
            |_, _| "/api/v1/products".into(),
            none,
            Scope::Provider,
            &[ReadCatalogue],
            Prep::None,
        ),
        c(
            "create_product",
            Method::POST,
            |_, _| "/api/v1/products".into(),
            |_, _| Some(json!({ "code": format!("p-{}", rand_suffix()), "name": "P", "family": "f", "features": [] })),
            Scope::Provider,
            &[WriteCatalogue],
            Prep::None,
        ),
        c(
            "get_product",
            Method::GET,
            |_, _| "/api/v1/products/meetings".into(),
            none,
            Scope::Provider,
            &[ReadCatalogue],
            Prep::None,
        ),
        c(
            "update_product",
            Method::PATCH,
            |_, _| "/api/v1/products/meetings".into(),
            |_, _| Some(json!({ "name": "Meetings" })),
            Scope::Provider,
            &[WriteCatalogue],
            Prep::None,
        ),
        c(
            "list_partners",
            Method::GET,
            |_, _| "/api/v1/partners".into(),
            none,
            Scope::Provider,
            &[ReadPartners],
            Prep::None,
        ),
        c(
            "create_partner",
            Method::POST,
            |_, _| "/api/v1/partners".into(),
            |_, _| Some(json!({ "name": "New" })),
            Scope::Provider,
            &[WritePartners],
            Prep::None,
        ),
        Case {
            // A dry run: it says what would change and changes nothing.
            changes_nothing: true,
            ..c(
                "apply_catalogue",
                Method::PUT,
                |_, _| "/api/v1/catalogue?dry_run=true".into(),
                |_, _| Some(json!({ "products": [{ "code": "meetings", "name": "Meetings", "family": "meetings" }] })),
                Scope::Provider,
                &[WriteCatalogue],
                Prep::None,
            )
        },
        Case {
            changes_nothing: true,
            ..c(
                "purge_service_data",
                Method::POST,
                |_, _| "/api/v1/service-data/purge".into(),
                |_, _| Some(json!({})),
                Scope::Provider,
                &[Maintenance],
                Prep::None,
            )
        },
        c(
            "list_orgs",
            Method::GET,
            |_, _| "/api/v1/orgs".into(),
            none,
            Scope::Provider,
            &[ReadOrg],
            Prep::None,
        ),
        c(
            "create_org",
            Method::POST,
            |_, _| "/api/v1/orgs".into(),
            |_, _| Some(json!({ "name": "New org" })),
            Scope::Provider,
            &[CreateOrg],
            Prep::None,
        ),
        c(
            "list_customers",
            Method::GET,
            |_, _| "/api/v1/customers".into(),
            none,
            Scope::Provider,
            &[ReadSubscriptions],
            Prep::None,
        ),
        c(
            "get_partner",
            Method::GET,
            |t, _| format!("/api/v1/partners/{}", t.partner),
            none,
            Scope::Partner,
            &[ReadPartners],
            Prep::None,
        ),
        c(
            "list_partner_customers",
            Method::GET,
            |t, _| format!("/api/v1/partners/{}/customers", t.partner),
            none,
            Scope::Partner,
            &[ReadSubscriptions],
            Prep::None,
        ),
        c(
            "get_org",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}", t.org),
            none,
            Scope::Org,
            &[ReadOrg],
            Prep::None,
        ),
        c(
            "update_org",
            Method::PATCH,
            |t, _| format!("/api/v1/orgs/{}", t.org),
            |_, _| Some(json!({ "default_usage_location": "SE" })),
            Scope::Org,
            &[WriteOrg],
            Prep::None,
        ),
        c(
            "get_identity_provisioning",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/identity-provisioning", t.org),
            none,
            Scope::Org,
            &[ManageTokens],
            Prep::None,
        ),
        c(
            "list_sites",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/sites", t.org),
            none,
            Scope::Org,
            &[ReadOrg],
            Prep::None,
        ),
        c(
            "create_site",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/sites", t.org),
            |_, _| Some(json!({ "url": format!("https://s{}.example.com", rand_suffix()) })),
            Scope::Org,
            &[WriteOrg],
            Prep::None,
        ),
        c(
            "list_groups",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/groups", t.org),
            none,
            Scope::Org,
            &[ReadUsers],
            Prep::None,
        ),
        c(
            "create_group",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/groups", t.org),
            |_, _| Some(json!({ "name": rand_suffix() })),
            Scope::Org,
            &[WriteUsers],
            Prep::None,
        ),
        c(
            "get_group",
            Method::GET,
            |t, f| format!("/api/v1/orgs/{}/groups/{}", t.org, f.id),
            none,
            Scope::Org,
            &[ReadUsers],
            Prep::Group,
        ),
        c(
            "update_group",
            Method::PATCH,
            |t, f| format!("/api/v1/orgs/{}/groups/{}", t.org, f.id),
            |_, _| Some(json!({ "name": rand_suffix() })),
            Scope::Org,
            &[WriteUsers],
            Prep::Group,
        ),
        c(
            "delete_group",
            Method::DELETE,
            |t, f| format!("/api/v1/orgs/{}/groups/{}", t.org, f.id),
            none,
            Scope::Org,
            &[WriteUsers],
            Prep::Group,
        ),
        c(
            "list_subscriptions",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/subscriptions", t.org),
            none,
            Scope::Org,
            &[ReadSubscriptions],
            Prep::None,
        ),
        c(
            "create_subscription",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/subscriptions", t.org),
            |_, _| Some(json!({ "start_date": "2026-01-01", "end_date": "2027-01-01" })),
            Scope::Org,
            &[WriteSubscriptions],
            Prep::None,
        ),
        c(
            "get_subscription",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/subscriptions/{}", t.org, t.sub),
            none,
            Scope::Org,
            &[ReadSubscriptions],
            Prep::None,
        ),
        c(
            "update_subscription",
            Method::PATCH,
            |t, _| format!("/api/v1/orgs/{}/subscriptions/{}", t.org, t.sub),
            |_, _| Some(json!({ "external_ref": "po-1" })),
            Scope::Org,
            &[WriteSubscriptions],
            Prep::None,
        ),
        c(
            "cancel_subscription",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/subscriptions/{}/cancel", t.org, f.id),
            |_, _| Some(json!({})),
            Scope::Org,
            &[WriteSubscriptions],
            Prep::EmptySub,
        ),
        c(
            "submit_provisioning_details",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/subscriptions/{}/items/meetings/provisioning-details", t.org, f.id),
            |_, _| Some(json!({ "details": { "domain": "x.example" } })),
            Scope::Org,
            &[SubmitProvisioningDetails],
            Prep::AwaitingSub,
        ),
        c(
            "list_org_licenses",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/licenses", t.org),
            none,
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        c(
            "list_purchase_requests",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/purchase-requests", t.org),
            none,
            Scope::Org,
            &[ReadSubscriptions],
            Prep::None,
        ),
        c(
            "create_purchase_request",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/purchase-requests", t.org),
            |t, _| Some(json!({ "product": "meetings", "quantity": 1, "subscription": t.sub })),
            Scope::Org,
            &[RequestPurchase],
            Prep::None,
        ),
        c(
            "fulfil_purchase_request",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/purchase-requests/{}/fulfil", t.org, f.id),
            |_, _| Some(json!({})),
            Scope::Org,
            &[DecidePurchase],
            Prep::Purchase,
        ),
        c(
            "reject_purchase_request",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/purchase-requests/{}/reject", t.org, f.id),
            |_, _| Some(json!({})),
            Scope::Org,
            &[DecidePurchase],
            Prep::Purchase,
        ),
        c(
            "list_users",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/users", t.org),
            none,
            Scope::Org,
            &[ReadUsers],
            Prep::None,
        ),
        c(
            "create_user",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/users", t.org),
            |_, _| Some(json!({ "email": format!("n{}@m.example", rand_suffix()) })),
            Scope::Org,
            &[WriteUsers],
            Prep::None,
        ),
        Case {
            changes_nothing: true,
            ..c(
                "check_entitlement",
                Method::POST,
                |t, _| format!("/api/v1/orgs/{}/entitlements/check", t.org),
                |t, _| Some(json!({ "user": t.user, "feature": "meetings" })),
                Scope::Org,
                &[CheckEntitlements],
                Prep::None,
            )
        },
        Case {
            changes_nothing: true,
            ..c(
                "evaluate_entitlements",
                Method::POST,
                |_, _| "/api/v1/entitlements/evaluations".into(),
                |t, _| Some(json!({ "org": t.org, "evaluations": [{ "user": t.user, "product": "meetings" }] })),
                Scope::Org,
                &[CheckEntitlements],
                Prep::None,
            )
        },
        Case {
            changes_nothing: true,
            outside: 400,
            ..c(
                "evaluate_ofrep_flag",
                Method::POST,
                |_, _| "/ofrep/v1/evaluate/flags/meetings".into(),
                |t, _| Some(json!({ "context": { "targetingKey": t.user, "org": t.org } })),
                Scope::Org,
                &[CheckEntitlements],
                Prep::None,
            )
        },
        Case {
            changes_nothing: true,
            outside: 400,
            ..c(
                "evaluate_ofrep_flags",
                Method::POST,
                |_, _| "/ofrep/v1/evaluate/flags".into(),
                |t, _| Some(json!({ "context": { "targetingKey": t.user, "org": t.org } })),
                Scope::Org,
                &[CheckEntitlements],
                Prep::None,
            )
        },
        Case {
            // Signs what the user may use: nothing is changed or audited
            // (the key's publication time is bookkeeping, not a change).
            changes_nothing: true,
            ..c(
                "issue_entitlement_token",
                Method::POST,
                |t, _| format!("/api/v1/orgs/{}/users/{}/entitlement-token", t.org, t.user),
                none,
                Scope::Org,
                &[CheckEntitlements],
                Prep::None,
            )
        },
        c(
            "get_license_usage",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/license-usage?idle_days=30", t.org),
            none,
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        c(
            "list_user_entitlements",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/users/{}/entitlements", t.org, t.user),
            none,
            Scope::Org,
            &[CheckEntitlements],
            Prep::None,
        ),
        c(
            "get_user",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/users/{}", t.org, t.user),
            none,
            Scope::Org,
            &[ReadUsers],
            Prep::None,
        ),
        c(
            "update_user",
            Method::PATCH,
            |t, _| format!("/api/v1/orgs/{}/users/{}", t.org, t.user),
            |_, _| Some(json!({ "display_name": "Anna" })),
            Scope::Org,
            &[WriteUsers],
            Prep::None,
        ),
        c(
            "delete_user",
            Method::DELETE,
            |t, f| format!("/api/v1/orgs/{}/users/{}", t.org, f.user),
            none,
            Scope::Org,
            &[WriteUsers],
            Prep::User,
        ),
        c(
            "list_user_licenses",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/users/{}/licenses", t.org, t.user),
            none,
            Scope::Org,
            &[ReadLicenses, ReadUsers],
            Prep::None,
        ),
        c(
            "change_user_licenses",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/users/{}/licenses", t.org, f.user),
            |_, _| Some(json!({ "add": [{ "product": "meetings" }] })),
            Scope::Org,
            &[WriteLicenses],
            Prep::User,
        ),
        c(
            "export_users_csv",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/users.csv", t.org),
            none,
            Scope::Org,
            &[ReadUsers, ReadLicenses],
            Prep::None,
        ),
        Case {
            csv: true,
            ..c(
                "import_users_csv",
                Method::POST,
                |t, _| format!("/api/v1/orgs/{}/imports?mode=add_only", t.org),
                none,
                Scope::Org,
                &[WriteLicenses, WriteUsers],
                Prep::None,
            )
        },
        Case {
            changes_nothing: true,
            ..c(
                "summarize_licenses",
                Method::POST,
                |t, _| format!("/api/v1/orgs/{}/license-summary", t.org),
                |t, _| Some(json!({ "users": [t.user] })),
                Scope::Org,
                &[ReadLicenses, ReadUsers],
                Prep::None,
            )
        },
        c(
            "create_license_job",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/license-jobs", t.org),
            |t, _| Some(json!({ "users": [t.user], "add": [{ "product": "meetings" }] })),
            Scope::Org,
            &[WriteLicenses],
            Prep::None,
        ),
        c(
            "list_jobs",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/jobs", t.org),
            none,
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        c(
            "get_job",
            Method::GET,
            |t, _| format!("/api/v1/jobs/{}", t.job),
            none,
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        c(
            "list_job_results",
            Method::GET,
            |t, _| format!("/api/v1/jobs/{}/results", t.job),
            none,
            Scope::Org,
            &[ReadLicenses, ReadUsers],
            Prep::None,
        ),
        Case {
            // A job may have ended before the cancel arrives: 409 then.
            ok: &[202, 409],
            ..c(
                "cancel_job",
                Method::POST,
                |_, f| format!("/api/v1/jobs/{}/cancel", f.id),
                |_, _| Some(json!({})),
                Scope::Org,
                &[WriteLicenses],
                Prep::Job,
            )
        },
        c(
            "list_audit_events",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/audit-events", t.org),
            none,
            Scope::Org,
            &[ReadAudit],
            Prep::None,
        ),
        c(
            "list_license_templates",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/license-templates", t.org),
            none,
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        c(
            "create_license_template",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/license-templates", t.org),
            |_, _| Some(json!({ "name": "T", "scope": "org", "enabled": false, "licenses": [{ "product": "meetings" }] })),
            Scope::Org,
            &[WriteLicenses],
            Prep::None,
        ),
        c(
            "get_license_template",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/license-templates/{}", t.org, t.template),
            none,
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        c(
            "update_license_template",
            Method::PATCH,
            |t, _| format!("/api/v1/orgs/{}/license-templates/{}", t.org, t.template),
            |_, _| Some(json!({ "name": "T2" })),
            Scope::Org,
            &[WriteLicenses],
            Prep::None,
        ),
        c(
            "delete_license_template",
            Method::DELETE,
            |t, f| format!("/api/v1/orgs/{}/license-templates/{}", t.org, f.id),
            none,
            Scope::Org,
            &[WriteLicenses],
            Prep::Template,
        ),
        c(
            "apply_license_template",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/license-templates/{}/apply", t.org, t.template),
            |_, _| Some(json!({ "dry_run": true })),
            Scope::Org,
            &[WriteLicenses],
            Prep::None,
        ),
        c(
            "list_queues",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/queues", t.org),
            none,
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        c(
            "create_queue",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/queues", t.org),
            |_, _| Some(json!({ "name": "Q", "kind": "call", "product": "meetings" })),
            Scope::Org,
            &[ManageQueues],
            Prep::None,
        ),
        c(
            "get_queue",
            Method::GET,
            |t, f| format!("/api/v1/orgs/{}/queues/{}", t.org, f.id),
            none,
            Scope::Org,
            &[ReadUsers],
            Prep::Queue,
        ),
        c(
            "delete_queue",
            Method::DELETE,
            |t, f| format!("/api/v1/orgs/{}/queues/{}", t.org, f.id),
            none,
            Scope::Org,
            &[ManageQueues],
            Prep::Queue,
        ),
        c(
            "add_queue_member",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/queues/{}/members", t.org, f.id),
            |_, f| Some(json!({ "user": f.user })),
            Scope::Org,
            &[ManageQueues],
            Prep::Queue,
        ),
        c(
            "remove_queue_member",
            Method::DELETE,
            |t, f| format!("/api/v1/orgs/{}/queues/{}/members/{}", t.org, f.id, f.user),
            none,
            Scope::Org,
            &[ManageQueues],
            Prep::QueueMember,
        ),
        c(
            "list_user_queues",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/users/{}/queues", t.org, t.user),
            none,
            Scope::Org,
            &[ReadUsers],
            Prep::None,
        ),
        c(
            "leave_all_queues",
            Method::DELETE,
            |t, f| format!("/api/v1/orgs/{}/users/{}/queues", t.org, f.user),
            none,
            Scope::Org,
            &[ManageQueues],
            Prep::QueueMember,
        ),
        c(
            "list_webhooks",
            Method::GET,
            |_, _| "/api/v1/webhooks".to_string(),
            none,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::None,
        ),
        c(
            "create_webhook",
            Method::POST,
            |_, _| "/api/v1/webhooks".to_string(),
            |_, _| Some(json!({ "url": "https://93.184.215.14/allot-hook", "events": ["license.assigned"] })),
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::None,
        ),
        c(
            "get_webhook",
            Method::GET,
            |_, f| format!("/api/v1/webhooks/{}", f.id),
            none,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        c(
            "update_webhook",
            Method::PATCH,
            |_, f| format!("/api/v1/webhooks/{}", f.id),
            |_, _| Some(json!({ "description": "changed" })),
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        c(
            "delete_webhook",
            Method::DELETE,
            |_, f| format!("/api/v1/webhooks/{}", f.id),
            none,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        c(
            "rotate_webhook_secret",
            Method::POST,
            |_, f| format!("/api/v1/webhooks/{}/rotate-secret", f.id),
            none,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        c(
            "test_webhook",
            Method::POST,
            |_, f| format!("/api/v1/webhooks/{}/test", f.id),
            none,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        c(
            "list_webhook_deliveries",
            Method::GET,
            |_, f| format!("/api/v1/webhooks/{}/deliveries", f.id),
            none,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        c(
            "redeliver_webhook",
            Method::POST,
            |_, f| format!("/api/v1/webhooks/{}/deliveries/{}/redeliver", f.id, f.user),
            none,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        c(
            "list_partner_webhooks",
            Method::GET,
            |t, _| format!("/api/v1/partners/{}/webhooks", t.partner),
            none,
            Scope::Partner,
            &[ManageWebhooks],
            Prep::None,
        ),
        c(
            "create_partner_webhook",
            Method::POST,
            |t, _| format!("/api/v1/partners/{}/webhooks", t.partner),
            |_, _| Some(json!({ "url": "https://93.184.215.14/allot-hook", "events": ["license.assigned"] })),
            Scope::Partner,
            &[ManageWebhooks],
            Prep::None,
        ),
        c(
            "get_partner_webhook",
            Method::GET,
            |t, f| format!("/api/v1/partners/{}/webhooks/{}", t.partner, f.id),
            none,
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        c(
            "update_partner_webhook",
            Method::PATCH,
            |t, f| format!("/api/v1/partners/{}/webhooks/{}", t.partner, f.id),
            |_, _| Some(json!({ "description": "changed" })),
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        c(
            "delete_partner_webhook",
            Method::DELETE,
            |t, f| format!("/api/v1/partners/{}/webhooks/{}", t.partner, f.id),
            none,
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        c(
            "rotate_partner_webhook_secret",
            Method::POST,
            |t, f| format!("/api/v1/partners/{}/webhooks/{}/rotate-secret", t.partner, f.id),
            none,
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        c(
            "test_partner_webhook",
            Method::POST,
            |t, f| format!("/api/v1/partners/{}/webhooks/{}/test", t.partner, f.id),
            none,
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        c(
            "list_partner_webhook_deliveries",
            Method::GET,
            |t, f| format!("/api/v1/partners/{}/webhooks/{}/deliveries", t.partner, f.id),
            none,
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        c(
            "redeliver_partner_webhook",
            Method::POST,
            |t, f| format!("/api/v1/partners/{}/webhooks/{}/deliveries/{}/redeliver", t.partner, f.id, f.user),
            none,
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        c(
            "list_org_webhooks",
            Method::GET,
            |t, _| format!("/api/v1/orgs/{}/webhooks", t.org),
            none,
            Scope::Org,
            &[ManageWebhooks],
            Prep::None,
        ),
        c(
            "create_org_webhook",
            Method::POST,
            |t, _| format!("/api/v1/orgs/{}/webhooks", t.org),
            |_, _| Some(json!({ "url": "https://93.184.215.14/allot-hook", "events": ["license.assigned"] })),
            Scope::Org,
            &[ManageWebhooks],
            Prep::None,
        ),
        c(
            "get_org_webhook",
            Method::GET,
            |t, f| format!("/api/v1/orgs/{}/webhooks/{}", t.org, f.id),
            none,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        c(
            "update_org_webhook",
            Method::PATCH,
            |t, f| format!("/api/v1/orgs/{}/webhooks/{}", t.org, f.id),
            |_, _| Some(json!({ "description": "changed" })),
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        c(
            "delete_org_webhook",
            Method::DELETE,
            |t, f| format!("/api/v1/orgs/{}/webhooks/{}", t.org, f.id),
            none,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        c(
            "rotate_org_webhook_secret",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/webhooks/{}/rotate-secret", t.org, f.id),
            none,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        c(
            "test_org_webhook",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/webhooks/{}/test", t.org, f.id),
            none,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        c(
            "list_org_webhook_deliveries",
            Method::GET,
            |t, f| format!("/api/v1/orgs/{}/webhooks/{}/deliveries", t.org, f.id),
            none,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        c(
            "redeliver_org_webhook",
            Method::POST,
            |t, f| format!("/api/v1/orgs/{}/webhooks/{}/deliveries/{}/redeliver", t.org, f.id, f.user),
            none,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
    ]
}

/// A unique lowercase suffix (codes, names and emails that must not repeat).
fn rand_suffix() -> String {
    allot_store::new_id("x").replace('_', "")
}

async fn id_of(r: Resp) -> String {
    r.ok()["id"].as_str().expect("id").to_string()
}

async fn tenant(app: &TestApp, name: &str) -> Tenant {
    let partner = id_of(app.post("/api/v1/partners", &app.admin, json!({ "name": name })).await).await;
    let org = id_of(
        app.post(
            "/api/v1/orgs",
            &app.admin,
            json!({ "name": format!("{name} customer"), "partner": partner, "payment_method_on_file": true }),
        )
        .await,
    )
    .await;
    let sub = subscription(app, &org, json!([{ "product": "meetings", "quantity": 100000 }])).await;
    let user = user(app, &org, &format!("anna@{}.example", name.to_lowercase())).await;
    app.post(
        &format!("/api/v1/orgs/{org}/users/{user}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    let group = id_of(
        app.post(&format!("/api/v1/orgs/{org}/groups"), &app.admin, json!({ "name": "G" }))
            .await,
    )
    .await;
    let template = id_of(
        app.post(
            &format!("/api/v1/orgs/{org}/license-templates"),
            &app.admin,
            json!({ "name": "T", "scope": { "group": group }, "enabled": false, "licenses": [{ "product": "meetings" }] }),
        )
        .await,
    )
    .await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{org}/license-jobs"),
            &app.admin,
            json!({ "users": [user], "add": [{ "product": "meetings" }] }),
        )
        .await;
    let job = r.body["job"]["id"].as_str().unwrap().to_string();
    finished_job(app, &job).await;
    let buyer = app.token(Role::OrgSuperAdmin, None, Some(&org)).await;
    Tenant {
        partner,
        org,
        sub,
        user,
        template,
        job,
        buyer,
    }
}

/// Makes what a call consumes, as the provider.
async fn prepare(app: &TestApp, t: &Tenant, prep: Prep) -> Fresh {
    let fresh_user = || async {
        let u = user(app, &t.org, &format!("{}@m.example", rand_suffix())).await;
        app.post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", t.org),
            &app.admin,
            json!({ "add": [{ "product": "meetings" }] }),
        )
        .await
        .ok();
        u
    };
    let queue = || async {
        id_of(
            app.post(
                &format!("/api/v1/orgs/{}/queues", t.org),
                &app.admin,
                json!({ "name": "Q", "kind": "call", "product": "meetings" }),
            )
            .await,
        )
        .await
    };
    let hook = |base: String| async move {
        let id = id_of(
            app.post(
                &base,
                &app.admin,
                json!({ "url": "https://93.184.215.14/allot-hook", "events": ["license.assigned"] }),
            )
            .await,
        )
        .await;
        let delivery = app.post(&format!("{base}/{id}/test"), &app.admin, json!({})).await.ok()["delivery"]
            .as_str()
            .expect("a delivery")
            .to_string();
        Fresh { id, user: delivery }
    };
    match prep {
        Prep::ProviderHook => hook("/api/v1/webhooks".to_string()).await,
        Prep::PartnerHook => hook(format!("/api/v1/partners/{}/webhooks", t.partner)).await,
        Prep::OrgHook => hook(format!("/api/v1/orgs/{}/webhooks", t.org)).await,
        Prep::None => Fresh::default(),
        Prep::User => Fresh {
            id: String::new(),
            user: user(app, &t.org, &format!("{}@m.example", rand_suffix())).await,
        },
        Prep::Template => Fresh {
            id: id_of(
                app.post(
                    &format!("/api/v1/orgs/{}/license-templates", t.org),
                    &app.admin,
                    json!({ "name": "T", "scope": "org", "enabled": false, "licenses": [{ "product": "meetings" }] }),
                )
                .await,
            )
            .await,
            user: String::new(),
        },
        Prep::Group => Fresh {
            id: id_of(
                app.post(
                    &format!("/api/v1/orgs/{}/groups", t.org),
                    &app.admin,
                    json!({ "name": rand_suffix() }),
                )
                .await,
            )
            .await,
            user: String::new(),
        },
        Prep::Queue => Fresh {
            id: queue().await,
            user: fresh_user().await,
        },
        Prep::QueueMember => {
            let (q, u) = (queue().await, fresh_user().await);
            app.post(
                &format!("/api/v1/orgs/{}/queues/{q}/members", t.org),
                &app.admin,
                json!({ "user": u }),
            )
            .await
            .ok();
            Fresh { id: q, user: u }
        }
        Prep::Purchase => Fresh {
            id: id_of(
                app.post(
                    &format!("/api/v1/orgs/{}/purchase-requests", t.org),
                    &t.buyer,
                    json!({ "product": "meetings", "quantity": 1, "subscription": t.sub }),
                )
                .await,
            )
            .await,
            user: String::new(),
        },
        Prep::EmptySub => Fresh {
            id: subscription(app, &t.org, json!([{ "product": "meetings", "quantity": 1 }])).await,
            user: String::new(),
        },
        Prep::AwaitingSub => Fresh {
            id: subscription(
                app,
                &t.org,
                json!([{ "product": "meetings", "quantity": 1, "provisioning_status": "awaiting_details" }]),
            )
            .await,
            user: String::new(),
        },
        Prep::Token => {
            let r = app
                .post("/api/v1/tokens", &app.admin, json!({ "role": "org_read_only", "org": t.org }))
                .await
                .ok();
            Fresh {
                id: r["id"].as_str().unwrap().to_string(),
                user: String::new(),
            }
        }
        Prep::Admin => {
            let r = app
                .post(
                    "/api/v1/admins",
                    &app.admin,
                    json!({ "email": format!("{}@admins.example", rand_suffix()), "role": "org_read_only", "org": t.org }),
                )
                .await
                .ok();
            Fresh {
                id: r["id"].as_str().unwrap().to_string(),
                user: String::new(),
            }
        }
        Prep::Job => {
            let r = app
                .post(
                    &format!("/api/v1/orgs/{}/license-jobs", t.org),
                    &app.admin,
                    json!({ "users": [t.user], "add": [{ "product": "meetings" }], "dry_run": true }),
                )
                .await;
            // Finished before the call under test, so that its snapshot
            // comparison sees the call, not the job's own progress.
            finished_job(app, r.body["job"]["id"].as_str().unwrap()).await;
            Fresh {
                id: r.body["job"]["id"].as_str().unwrap().to_string(),
                user: String::new(),
            }
        }
    }
}

async fn audit_count(app: &TestApp) -> i64 {
    let mut tx = app.store.begin_read().await.expect("read");
    tx.rows("SELECT COUNT(*) AS n FROM audit_events", &[]).await.expect("count")[0]
        .int("n")
        .expect("int")
}

/// What a role should get: Some(status) for a refusal, None for done.
/// Who may do what, written out from the roles as the README describes them
/// and not taken from the server's own table, so that a wrong entry there
/// fails here. Columns in `Role::ALL` order: provider_admin, partner_admin,
/// partner_sales, partner_helpdesk, org_super_admin, org_admin,
/// org_user_admin, org_support, org_read_only, product_service (here bound
/// to an org; it may ask about entitlements and nothing else), scim (an
/// org's identity provider: SCIM and nothing else).
const WHO_MAY: &[(Action, &str)] = &[
    (Action::ReadCatalogue, "YYYYYYYYY--"),
    (Action::WriteCatalogue, "Y----------"),
    (Action::ReadPartners, "YYYY-------"),
    (Action::WritePartners, "Y----------"),
    (Action::ReadOrg, "YYYYYYYYY--"),
    (Action::CreateOrg, "YYY--------"),
    (Action::WriteOrg, "YYY-Y------"),
    (Action::SetBillingTerms, "YYY--------"),
    (Action::ReadSubscriptions, "YYYYYY-YY--"),
    (Action::WriteSubscriptions, "YYY--------"),
    (Action::ReadUsers, "YY-YYYYYY--"),
    (Action::WriteUsers, "YY--YYY----"),
    (Action::ReadLicenses, "YYYYYYYYY--"),
    (Action::WriteLicenses, "YY--YYY----"),
    (Action::ReadAudit, "YY--YY-----"),
    (Action::Maintenance, "Y----------"),
    (Action::SubmitProvisioningDetails, "YY--YY-----"),
    (Action::RequestPurchase, "----Y------"),
    (Action::DecidePurchase, "YYY--------"),
    (Action::ManageQueues, "YY--YYY----"),
    (Action::ManageTokens, "YY--Y------"),
    (Action::ManageAdmins, "YY--Y------"),
    (Action::GrantSiteAdmin, "YY--YY-----"),
    (Action::CheckEntitlements, "YY-YYYYYYY-"),
    (Action::ManageWebhooks, "YY--Y------"),
    (Action::ManageProviderWebhooks, "Y----------"),
    (Action::ProvisionIdentities, "----------Y"),
];

fn may(role: Role, action: Action) -> bool {
    let column = Role::ALL.iter().position(|r| *r == role).expect("a role of Role::ALL");
    let (_, row) = WHO_MAY
        .iter()
        .find(|(a, _)| *a == action)
        .unwrap_or_else(|| panic!("{action:?} is missing from WHO_MAY"));
    row.as_bytes()[column] == b'Y'
}

fn expected(role: Role, own: bool, scope: Scope, actions: &[Action]) -> Option<u16> {
    expected_outside(role, own, scope, actions, 404)
}

fn expected_outside(role: Role, own: bool, scope: Scope, actions: &[Action], outside_status: u16) -> Option<u16> {
    let kind = role.scope_kind();
    let allowed = actions.iter().all(|a| may(role, *a));
    let outside = match scope {
        Scope::Provider => false,
        Scope::Partner => kind == ScopeKind::Org || (kind == ScopeKind::Partner && !own),
        Scope::Org => kind != ScopeKind::Provider && !own,
    };
    if outside {
        Some(outside_status)
    } else if allowed {
        None
    } else {
        Some(403)
    }
}

/// Every operation the server registers that needs a token, by operationId
/// (from the OpenAPI document, which comes from the same registrations as
/// the router): a route added without a case here fails this test.
fn registered_operations() -> std::collections::BTreeSet<String> {
    let doc = serde_json::to_value(allot_server::openapi()).expect("document");
    let mut ops = std::collections::BTreeSet::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("operations").values() {
            if op["security"] != json!([{}]) {
                ops.insert(op["operationId"].as_str().expect("operationId").to_string());
            }
        }
    }
    ops
}

async fn every_endpoint_every_role_every_tenant(backend: Backend) {
    let cased: std::collections::BTreeSet<String> = cases().iter().map(|c| c.name.to_string()).collect();
    let registered = registered_operations();
    assert_eq!(
        registered.difference(&cased).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "registered operations without a case in the role matrix"
    );
    assert_eq!(
        cased.difference(&registered).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "cases of operations that are not registered"
    );
    let app = matrix_app(backend).await;
    product(&app, "meetings", "meetings").await;
    let mine = tenant(&app, "Mine").await;
    let theirs = tenant(&app, "Theirs").await;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let token = match role.scope_kind() {
            ScopeKind::Provider => app.admin.clone(),
            ScopeKind::Partner => app.token(role, Some(&mine.partner), None).await,
            ScopeKind::Org => app.token(role, None, Some(&mine.org)).await,
        };
        tokens.push((role, token));
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases() {
        for (role, token) in &tokens {
            for own in [true, false] {
                if !own && case.scope == Scope::Provider {
                    continue;
                }
                let t = if own { &mine } else { &theirs };
                let fresh = prepare(&app, t, case.prep).await;
                let path = (case.path)(t, &fresh);
                let want = expected_outside(*role, own, case.scope, case.actions, case.outside);
                let before = if want.is_some() { Some(app.snapshot().await) } else { None };
                let events_before = audit_count(&app).await;
                let r = if case.csv {
                    app.raw(
                        case.method.clone(),
                        &path,
                        token,
                        "text/csv",
                        format!("email\n{}@m.example\n", rand_suffix()).into_bytes(),
                    )
                    .await
                } else {
                    app.call(case.method.clone(), &path, Some(token), (case.body)(t, &fresh)).await
                };
                let got = r.status.as_u16();
                let fine = match want {
                    Some(s) => got == s,
                    None => case.ok.contains(&got),
                };
                if !fine {
                    failures.push(format!(
                        "{} as {} ({} tenant): expected {}, got {got} {}",
                        case.name,
                        role.as_str(),
                        if own { "own" } else { "other" },
                        want.map_or("success".to_string(), |s| s.to_string()),
                        r.body
                    ));
                }
                if let Some(before) = before {
                    if app.snapshot().await != before {
                        failures.push(format!("{} as {}: a refused call changed the database", case.name, role.as_str()));
                    }
                }
                // Jobs run in the background: let them end before the next snapshot.
                if let Some(job) = r.body["job"]["id"].as_str() {
                    finished_job(&app, job).await;
                }
                // Every change is in the audit log (a purge with nothing to purge changes nothing).
                if want.is_none()
                    && case.method != Method::GET
                    && !case.changes_nothing
                    && got != 409
                    && audit_count(&app).await <= events_before
                {
                    failures.push(format!("{} as {}: done but not in the audit log", case.name, role.as_str()));
                }
                if case.prep == Prep::Job {
                    finished_job(&app, &fresh.id).await;
                }
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} calls were wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 700, "{checked} calls");
}

/// One page or form of the console, checked like an API operation: the
/// same tenants, roles, permission table and "a refusal changes nothing".
struct PageCase {
    name: &'static str,
    post: bool,
    path: fn(&Tenant, &Fresh) -> String,
    form: fn(&Tenant, &Fresh) -> Vec<(&'static str, String)>,
    scope: Scope,
    actions: &'static [Action],
    prep: Prep,
    /// Whether a done POST is in the audit log (a selection is not a change).
    audited: bool,
    /// Sent as `multipart/form-data` (an upload), the last field a file.
    multipart: bool,
    /// The session selects the fresh user first (Manage licenses works on
    /// the selection).
    select_first: bool,
    /// Statuses that count as done for an allowed caller.
    done: &'static [u16],
}

const PAGE_DONE: &[u16] = &[200, 201, 303];

fn no_form(_: &Tenant, _: &Fresh) -> Vec<(&'static str, String)> {
    Vec::new()
}

fn page_cases() -> Vec<PageCase> {
    use Action::*;
    let get = |name, path, scope, actions, prep| PageCase {
        name,
        post: false,
        path,
        form: no_form,
        scope,
        actions,
        prep,
        audited: false,
        multipart: false,
        select_first: false,
        done: PAGE_DONE,
    };
    let post = |name, path, form, scope, actions, prep| PageCase {
        name,
        post: true,
        path,
        form,
        scope,
        actions,
        prep,
        audited: true,
        multipart: false,
        select_first: false,
        done: PAGE_DONE,
    };
    vec![
        get("home", |_, _| "/ui/".into(), Scope::Provider, &[], Prep::None),
        get(
            "API tokens",
            |_, _| "/ui/tokens".into(),
            Scope::Provider,
            &[ManageTokens],
            Prep::None,
        ),
        get(
            "org overview",
            |t, _| format!("/ui/orgs/{}", t.org),
            Scope::Org,
            &[ReadOrg],
            Prep::None,
        ),
        get(
            "Products",
            |t, _| format!("/ui/orgs/{}/licenses", t.org),
            Scope::Org,
            &[ReadOrg, ReadLicenses],
            Prep::None,
        ),
        get(
            "Users",
            |t, _| format!("/ui/orgs/{}/users?q=anna", t.org),
            Scope::Org,
            &[ReadOrg, ReadUsers],
            Prep::None,
        ),
        get(
            "Selected users",
            |t, _| format!("/ui/orgs/{}/users/selected", t.org),
            Scope::Org,
            &[ReadOrg, ReadUsers],
            Prep::None,
        ),
        get(
            "user summary",
            |t, _| format!("/ui/orgs/{}/users/{}", t.org, t.user),
            Scope::Org,
            &[ReadOrg, ReadUsers, ReadLicenses],
            Prep::None,
        ),
        get(
            "Edit licenses",
            |t, _| format!("/ui/orgs/{}/users/{}/licenses/edit", t.org, t.user),
            Scope::Org,
            &[ReadOrg, ReadUsers, ReadLicenses, WriteLicenses],
            Prep::None,
        ),
        get(
            "org Admins",
            |t, _| format!("/ui/orgs/{}/admins", t.org),
            Scope::Org,
            &[ManageAdmins],
            Prep::None,
        ),
        get(
            "partner Admins",
            |t, _| format!("/ui/partners/{}/admins", t.partner),
            Scope::Partner,
            &[ManageAdmins],
            Prep::None,
        ),
        post(
            "create a token",
            |_, _| "/ui/tokens".into(),
            |t, _| vec![("name", "Sync".into()), ("role", "org_read_only".into()), ("org", t.org.clone())],
            Scope::Org,
            &[ManageTokens],
            Prep::None,
        ),
        post(
            "revoke a token",
            |_, f| format!("/ui/tokens/{}/revoke", f.id),
            no_form,
            Scope::Org,
            &[ManageTokens],
            Prep::Token,
        ),
        post(
            "invite an admin",
            |t, _| format!("/ui/orgs/{}/admins", t.org),
            |_, _| {
                vec![
                    ("email", format!("{}@admins.example", rand_suffix())),
                    ("role", "org_read_only".into()),
                ]
            },
            Scope::Org,
            &[ManageAdmins],
            Prep::None,
        ),
        post(
            "change an admin's role",
            |t, f| format!("/ui/orgs/{}/admins/{}/role", t.org, f.id),
            |_, _| vec![("role", "org_support".into())],
            Scope::Org,
            &[ManageAdmins],
            Prep::Admin,
        ),
        post(
            "a new invitation link",
            |t, f| format!("/ui/orgs/{}/admins/{}/invitation", t.org, f.id),
            no_form,
            Scope::Org,
            &[ManageAdmins],
            Prep::Admin,
        ),
        post(
            "remove an admin",
            |t, f| format!("/ui/orgs/{}/admins/{}/remove", t.org, f.id),
            no_form,
            Scope::Org,
            &[ManageAdmins],
            Prep::Admin,
        ),
        post(
            "Save licenses",
            |t, f| format!("/ui/orgs/{}/users/{}/licenses/edit", t.org, f.user),
            |_, _| vec![("hold", "meetings".into()), ("sub:meetings", String::new())],
            Scope::Org,
            &[ReadOrg, ReadUsers, ReadLicenses, WriteLicenses],
            Prep::User,
        ),
        post(
            "Buy more",
            |t, _| format!("/ui/orgs/{}/licenses/buy", t.org),
            |t, _| {
                vec![
                    ("product", "meetings".into()),
                    ("subscription", t.sub.clone()),
                    ("quantity", "1".into()),
                ]
            },
            Scope::Org,
            &[RequestPurchase],
            Prep::None,
        ),
        get(
            "Subscriptions",
            |t, _| format!("/ui/orgs/{}/subscriptions", t.org),
            Scope::Org,
            &[ReadOrg, ReadSubscriptions],
            Prep::None,
        ),
        get(
            "subscription page",
            |t, _| format!("/ui/orgs/{}/subscriptions/{}", t.org, t.sub),
            Scope::Org,
            &[ReadOrg, ReadSubscriptions],
            Prep::None,
        ),
        get(
            "Audit log",
            |t, _| format!("/ui/orgs/{}/audit", t.org),
            Scope::Org,
            &[ReadOrg, ReadAudit],
            Prep::None,
        ),
        get(
            "Jobs",
            |t, _| format!("/ui/orgs/{}/jobs", t.org),
            Scope::Org,
            &[ReadOrg, ReadLicenses],
            Prep::None,
        ),
        get(
            "job page",
            |t, _| format!("/ui/jobs/{}", t.job),
            Scope::Org,
            &[ReadOrg, ReadLicenses],
            Prep::None,
        ),
        get(
            "job progress",
            |t, _| format!("/ui/jobs/{}/progress", t.job),
            Scope::Org,
            &[ReadLicenses],
            Prep::None,
        ),
        get(
            "job results CSV",
            |t, _| format!("/ui/jobs/{}/results.csv", t.job),
            Scope::Org,
            &[ReadLicenses, ReadUsers],
            Prep::None,
        ),
        get(
            "Manage licenses",
            |t, _| format!("/ui/orgs/{}/manage-licenses", t.org),
            Scope::Org,
            &[ReadOrg, ReadLicenses, ReadUsers],
            Prep::None,
        ),
        get(
            "Assigned",
            |t, _| {
                format!(
                    "/ui/orgs/{}/manage-licenses/assigned?product=meetings&subscription={}",
                    t.org, t.sub
                )
            },
            Scope::Org,
            &[ReadOrg, ReadLicenses, ReadUsers],
            Prep::None,
        ),
        get(
            "Import users and licenses",
            |t, _| format!("/ui/orgs/{}/import", t.org),
            Scope::Org,
            &[ReadOrg, ReadUsers, ReadLicenses],
            Prep::None,
        ),
        get(
            "Export",
            |t, _| format!("/ui/orgs/{}/users.csv", t.org),
            Scope::Org,
            &[ReadUsers, ReadLicenses],
            Prep::None,
        ),
        get(
            "License templates",
            |t, _| format!("/ui/orgs/{}/templates", t.org),
            Scope::Org,
            &[ReadOrg, ReadUsers, ReadLicenses],
            Prep::None,
        ),
        get(
            "Edit license template",
            |t, _| format!("/ui/orgs/{}/templates/{}", t.org, t.template),
            Scope::Org,
            &[ReadOrg, ReadUsers, ReadLicenses, WriteLicenses],
            Prep::None,
        ),
        get(
            "Queues",
            |t, _| format!("/ui/orgs/{}/queues", t.org),
            Scope::Org,
            &[ReadOrg, ReadUsers, ReadLicenses],
            Prep::None,
        ),
        get(
            "Purchase requests",
            |t, _| format!("/ui/orgs/{}/purchases", t.org),
            Scope::Org,
            &[ReadOrg, ReadSubscriptions],
            Prep::None,
        ),
        get(
            "Customers",
            |_, _| "/ui/customers?subscription_status=active,expiring_30d&provisioning_status=awaiting_details".into(),
            Scope::Provider,
            &[ReadSubscriptions],
            Prep::None,
        ),
        get(
            "partner Customers",
            |t, _| format!("/ui/partners/{}/customers?q=customer", t.partner),
            Scope::Partner,
            &[ReadPartners, ReadSubscriptions],
            Prep::None,
        ),
        get(
            "Partners",
            |_, _| "/ui/partners".into(),
            Scope::Provider,
            &[ReadPartners],
            Prep::None,
        ),
        PageCase {
            select_first: true,
            ..post(
                "Save Manage licenses",
                |t, _| format!("/ui/orgs/{}/manage-licenses", t.org),
                |t, _| {
                    vec![
                        ("row_0", format!("meetings\t{}", t.sub)),
                        ("was_0", "none".into()),
                        ("keep_0", "0".into()),
                        ("want_0", "1".into()),
                    ]
                },
                Scope::Org,
                &[ReadOrg, ReadLicenses, ReadUsers, WriteLicenses],
                Prep::User,
            )
        },
        PageCase {
            multipart: true,
            ..post(
                "Preview an import",
                |t, _| format!("/ui/orgs/{}/import", t.org),
                |_, _| {
                    vec![
                        ("mode", "add_only".into()),
                        (
                            "file",
                            format!(
                                "email,display_name,kind,status,usage_location\r\n{}@new.example,New,internal,active,SE\r\n",
                                rand_suffix()
                            ),
                        ),
                    ]
                },
                Scope::Org,
                &[ReadOrg, ReadUsers, ReadLicenses, WriteUsers, WriteLicenses],
                Prep::None,
            )
        },
        PageCase {
            audited: false,
            done: &[303, 409],
            ..post(
                "cancel a job",
                |_, f| format!("/ui/jobs/{}/cancel", f.id),
                no_form,
                Scope::Org,
                &[WriteLicenses],
                Prep::Job,
            )
        },
        post(
            "apply a preview",
            |_, f| format!("/ui/jobs/{}/apply", f.id),
            no_form,
            Scope::Org,
            &[WriteLicenses],
            Prep::Job,
        ),
        post(
            "Cancel subscription",
            |t, f| format!("/ui/orgs/{}/subscriptions/{}/cancel", t.org, f.id),
            no_form,
            Scope::Org,
            &[WriteSubscriptions],
            Prep::EmptySub,
        ),
        post(
            "Submit details",
            |t, f| format!("/ui/orgs/{}/subscriptions/{}/items/meetings/details", t.org, f.id),
            |_, _| vec![("details", "site_url: x.example".into())],
            Scope::Org,
            &[SubmitProvisioningDetails],
            Prep::AwaitingSub,
        ),
        post(
            "Request seats",
            |t, _| format!("/ui/orgs/{}/purchases", t.org),
            |t, _| {
                vec![
                    ("product", "meetings".into()),
                    ("quantity", "1".into()),
                    ("subscription", t.sub.clone()),
                ]
            },
            Scope::Org,
            &[RequestPurchase],
            Prep::None,
        ),
        post(
            "Fulfil",
            |t, f| format!("/ui/orgs/{}/purchases/{}/fulfil", t.org, f.id),
            no_form,
            Scope::Org,
            &[DecidePurchase],
            Prep::Purchase,
        ),
        post(
            "Reject",
            |t, f| format!("/ui/orgs/{}/purchases/{}/reject", t.org, f.id),
            |_, _| vec![("reason", "No budget".into())],
            Scope::Org,
            &[DecidePurchase],
            Prep::Purchase,
        ),
        post(
            "Create template",
            |t, _| format!("/ui/orgs/{}/templates", t.org),
            |_, _| {
                vec![
                    ("name", "New hires".into()),
                    ("scope", "org".into()),
                    ("license", "meetings\t".into()),
                ]
            },
            Scope::Org,
            &[WriteLicenses],
            Prep::None,
        ),
        post(
            "Save template",
            |t, f| format!("/ui/orgs/{}/templates/{}", t.org, f.id),
            |_, _| {
                vec![
                    ("name", "Renamed".into()),
                    ("scope", "org".into()),
                    ("license", "meetings\t".into()),
                ]
            },
            Scope::Org,
            &[WriteLicenses],
            Prep::Template,
        ),
        post(
            "Apply to existing users",
            |t, f| format!("/ui/orgs/{}/templates/{}/apply", t.org, f.id),
            |_, _| vec![("keep", "1".into()), ("run", "preview".into())],
            Scope::Org,
            &[WriteLicenses],
            Prep::Template,
        ),
        post(
            "Remove from all queues",
            |t, f| format!("/ui/orgs/{}/users/{}/queues/leave", t.org, f.user),
            no_form,
            Scope::Org,
            &[ManageQueues],
            Prep::QueueMember,
        ),
        PageCase {
            audited: false,
            ..post(
                "select users",
                |t, _| format!("/ui/orgs/{}/users/selection", t.org),
                |t, _| vec![("selected", t.user.clone()), ("on_page", t.user.clone()), ("page", String::new())],
                Scope::Org,
                &[ReadOrg, ReadUsers],
                Prep::None,
            )
        },
        get(
            "org Webhooks",
            |t, _| format!("/ui/orgs/{}/webhooks", t.org),
            Scope::Org,
            &[ManageWebhooks],
            Prep::None,
        ),
        get(
            "partner Webhooks",
            |t, _| format!("/ui/partners/{}/webhooks", t.partner),
            Scope::Partner,
            &[ManageWebhooks],
            Prep::None,
        ),
        get(
            "an org webhook",
            |t, f| format!("/ui/orgs/{}/webhooks/{}", t.org, f.id),
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        get(
            "a partner webhook",
            |t, f| format!("/ui/partners/{}/webhooks/{}", t.partner, f.id),
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        get(
            "a provider webhook",
            |_, f| format!("/ui/webhooks/{}", f.id),
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
        post(
            "create an org webhook",
            |t, _| format!("/ui/orgs/{}/webhooks", t.org),
            |_, _| vec![("url", "https://93.184.215.14/allot".into()), ("event", "license.assigned".into())],
            Scope::Org,
            &[ManageWebhooks],
            Prep::None,
        ),
        post(
            "create a partner webhook",
            |t, _| format!("/ui/partners/{}/webhooks", t.partner),
            |_, _| vec![("url", "https://93.184.215.14/allot".into()), ("all", "1".into())],
            Scope::Partner,
            &[ManageWebhooks],
            Prep::None,
        ),
        post(
            "create a provider webhook",
            |_, _| "/ui/webhooks".into(),
            |_, _| vec![("url", "https://93.184.215.14/allot".into()), ("all", "1".into())],
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::None,
        ),
        post(
            "send a test event",
            |t, f| format!("/ui/orgs/{}/webhooks/{}/test", t.org, f.id),
            no_form,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        post(
            "rotate a webhook secret",
            |t, f| format!("/ui/orgs/{}/webhooks/{}/rotate", t.org, f.id),
            no_form,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        post(
            "disable a webhook",
            |t, f| format!("/ui/partners/{}/webhooks/{}/enabled", t.partner, f.id),
            |_, _| vec![("enabled", "false".into())],
            Scope::Partner,
            &[ManageWebhooks],
            Prep::PartnerHook,
        ),
        post(
            "redeliver",
            |t, f| format!("/ui/orgs/{}/webhooks/{}/deliveries/{}/redeliver", t.org, f.id, f.user),
            no_form,
            Scope::Org,
            &[ManageWebhooks],
            Prep::OrgHook,
        ),
        post(
            "delete a webhook",
            |_, f| format!("/ui/webhooks/{}/delete", f.id),
            no_form,
            Scope::Provider,
            &[ManageProviderWebhooks],
            Prep::ProviderHook,
        ),
    ]
}

/// A signed-in admin of each role, bound to the tenant `mine`: the session
/// cookie and the CSRF token of its forms.
async fn sessions(app: &TestApp, mine: &Tenant) -> Vec<(Role, String, String)> {
    let b = ui_kit::browser();
    let mut out = Vec::new();
    for role in Role::ALL {
        if !role.is_for_people() {
            // A service's role has no console account at all.
            let spec = allot_server::app::admins::AdminSpec {
                email: "service@m.example",
                display_name: None,
                role,
                partner: None,
                org: Some(mine.org.as_str()),
            };
            let refused = allot_server::app::admins::create_admin_as_operator(&app.store, &spec, ui_kit::PASSWORD, today()).await;
            assert!(refused.is_err(), "{} admins cannot exist", role.as_str());
            continue;
        }
        let email = format!("{}@{}.example", role.as_str().replace('_', "-"), rand_suffix());
        let (partner, org) = match role.scope_kind() {
            ScopeKind::Provider => (None, None),
            ScopeKind::Partner => (Some(mine.partner.as_str()), None),
            ScopeKind::Org => (None, Some(mine.org.as_str())),
        };
        ui_kit::make_admin_as(app, &email, role, partner, org).await;
        let session = ui_kit::sign_in(app, &b, &email).await;
        let html = ui_kit::landing(app, &b, &session).await.text().await.expect("body");
        out.push((role, session, ui_kit::csrf_field(&html)));
    }
    out
}

/// A 404 page says the same whether the object exists or not: the ids in
/// it are all that differ.
fn without_ids(body: &str, ids: &[&str]) -> String {
    ids.iter().fold(body.to_string(), |b, id| b.replace(id, "<id>"))
}

/// The server both matrices call. Webhooks are not sent here (delivery
/// writes in the background, between the snapshots that show a refused
/// call changed nothing); who may manage them is what is checked. Delivery
/// has tests of its own.
async fn matrix_app(backend: Backend) -> TestApp {
    let mut config = allot_server::Config::default();
    config.offline_tokens.keys = sealed_keys();
    config.webhooks.sealing = Some(sealing_secret());
    config.webhooks.deliver = false;
    spawn_with_config(backend, config).await
}

async fn every_page_every_role_every_tenant(backend: Backend) {
    let app = matrix_app(backend).await;
    product(&app, "meetings", "meetings").await;
    let mine = tenant(&app, "Mine").await;
    let theirs = tenant(&app, "Theirs").await;
    let signed_in = sessions(&app, &mine).await;
    let b = ui_kit::browser();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in page_cases() {
        for (role, session, csrf) in &signed_in {
            for own in [true, false] {
                if !own && case.scope == Scope::Provider {
                    continue;
                }
                let t = if own { &mine } else { &theirs };
                let fresh = prepare(&app, t, case.prep).await;
                let path = (case.path)(t, &fresh);
                let want = expected(*role, own, case.scope, case.actions);
                if case.select_first {
                    let select = format!("/ui/orgs/{}/users/selection", t.org);
                    ui_kit::post_form(&app, &b, session, &select, &[("csrf", csrf), ("page", ""), ("clear", "1")]).await;
                    ui_kit::post_form(
                        &app,
                        &b,
                        session,
                        &select,
                        &[("csrf", csrf), ("page", ""), ("on_page", &fresh.user), ("selected", &fresh.user)],
                    )
                    .await;
                }
                let before = app.snapshot().await;
                let events_before = audit_count(&app).await;
                let send = |csrf: String| {
                    let mut form = (case.form)(t, &fresh);
                    // The token first: an upload's is read before its file.
                    form.insert(0, ("csrf", csrf));
                    let (b, app, path, session) = (&b, &app, path.clone(), session.clone());
                    async move {
                        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        if case.multipart {
                            let mut parts = reqwest::multipart::Form::new();
                            for (k, v) in &pairs {
                                parts = if *k == "file" {
                                    parts.part("file", reqwest::multipart::Part::text(v.to_string()).file_name("users.csv"))
                                } else {
                                    parts.text(k.to_string(), v.to_string())
                                };
                            }
                            b.post(format!("{}{path}", app.url))
                                .header("cookie", format!("allot_session={session}"))
                                .multipart(parts)
                                .send()
                                .await
                                .expect("upload")
                        } else if case.post {
                            ui_kit::post_form(app, b, &session, &path, &pairs).await
                        } else {
                            ui_kit::page_of(app, b, &session, &path).await
                        }
                    }
                };
                // Every form refuses a post without its CSRF token, changing nothing.
                if case.post {
                    let r = send("forged".into()).await;
                    if r.status().as_u16() != 403 {
                        failures.push(format!("{} as {} without CSRF: {}", case.name, role.as_str(), r.status()));
                    }
                    if app.snapshot().await != before {
                        failures.push(format!(
                            "{} as {}: a post without CSRF changed the database",
                            case.name,
                            role.as_str()
                        ));
                    }
                }
                let r = send(csrf.clone()).await;
                let got = r.status().as_u16();
                // A job started by the call ends before the next call's snapshot.
                if let Some(job) = r
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| l.strip_prefix("/ui/jobs/"))
                {
                    finished_job(&app, job).await;
                }
                let body = r.text().await.unwrap_or_default();
                let fine = match want {
                    Some(s) => got == s,
                    None => case.done.contains(&got),
                };
                if !fine {
                    failures.push(format!(
                        "{} as {} ({} tenant): expected {}, got {got}: {}",
                        case.name,
                        role.as_str(),
                        if own { "own" } else { "other" },
                        want.map_or("success".to_string(), |s| s.to_string()),
                        body.chars().take(400).collect::<String>()
                    ));
                }
                if want.is_some() && app.snapshot().await != before {
                    failures.push(format!(
                        "{} as {}: a refused request changed the database",
                        case.name,
                        role.as_str()
                    ));
                }
                if want.is_none() && case.post && case.audited && audit_count(&app).await <= events_before {
                    failures.push(format!("{} as {}: done but not in the audit log", case.name, role.as_str()));
                }
                // Another tenant's page is the 404 of a page that does not exist.
                if want == Some(404) && !case.post {
                    let missing = format!("org_{}", rand_suffix());
                    let other = path
                        .replace(&t.org, &missing)
                        .replace(&t.partner, &missing)
                        .replace(&t.job, &missing)
                        .replace(&t.template, &missing);
                    let r = ui_kit::page_of(&app, &b, session, &other).await;
                    let again = r.text().await.unwrap_or_default();
                    if without_ids(&again, &[&missing]) != without_ids(&body, &[&t.org, &t.partner, &t.job, &t.template]) {
                        failures.push(format!(
                            "{} as {}: another tenant's 404 differs from a missing one's",
                            case.name,
                            role.as_str()
                        ));
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} requests were wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 250, "{checked} requests");
}
