//! `allot demo`: a catalogue modelled on the seeds, 2 partners, 40 customers
//! whose subscriptions cover every subscription and provisioning status, and
//! about 2,000 users with licences, then serve it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, NaiveDate};

use allot_domain::access::{Principal, Role};
use allot_domain::catalogue::{ProductRules, PropertyName, Requirement};
use allot_domain::planner::{AddLicense, LicenseChange};
use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_domain::types::{CountryCode, ProductCode, UserKind, UserStatus};
use allot_server::app::catalogue::ProductInput;
use allot_server::app::Caller;
use allot_server::auth::create_token;
use allot_server::clock::{Clock, SystemClock};
use allot_server::AppState;
use allot_store::subscriptions::{Item, Subscription};
use allot_store::tenants::Org;
use allot_store::users::User;
use allot_store::{catalogue, in_transaction, new_id, subscriptions, tenants, users, Store, StoreError, StoreOptions};

use crate::anyhow_lite::{msg, Result};

fn code(s: &str) -> ProductCode {
    // Only called with the literal codes below, which are valid.
    ProductCode::parse(s).unwrap_or_else(|e| panic!("demo code {s}: {e}"))
}

fn product(
    c: &str,
    name: &str,
    family: &str,
    features: &[&str],
    rules: ProductRules,
    properties: &[(PropertyName, Requirement)],
    retention_days: u32,
) -> ProductInput {
    ProductInput {
        code: code(c),
        name: name.into(),
        family: code(family),
        features: features.iter().map(|s| s.to_string()).collect(),
        rules,
        properties: properties.iter().cloned().collect::<BTreeMap<_, _>>(),
        retention_days,
    }
}

/// The demo catalogue: the products and rules of the seed help pages.
pub fn catalogue_inputs() -> Vec<ProductInput> {
    use PropertyName::*;
    use Requirement::*;
    let calling = |compatible: &[&str], excludes: &[&str]| ProductRules {
        exclusive_in_family: true,
        compatible_with: compatible.iter().map(|c| code(c)).collect(),
        excludes: excludes.iter().map(|c| code(c)).collect(),
        ..Default::default()
    };
    // Rules name products created before them; a pair (excludes,
    // compatible_with) is declared once and holds both ways.
    vec![
        product(
            "cx-essentials",
            "Customer Experience Essentials",
            "customer-experience",
            &["queues", "supervisor"],
            ProductRules::default(),
            &[],
            7,
        ),
        product(
            "calling-standard",
            "Calling Standard",
            "calling",
            &["calling", "voicemail"],
            calling(&[], &["cx-essentials"]),
            &[(Location, Optional), (PhoneNumber, Optional), (Extension, Optional)],
            7,
        ),
        product(
            "calling-professional",
            "Calling Professional",
            "calling",
            &["calling", "voicemail", "call-recording", "hunt-groups"],
            calling(&[], &[]),
            &[(Location, Optional), (PhoneNumber, Optional), (Extension, Optional)],
            7,
        ),
        product(
            "ucm-registration",
            "On-premises Call Control Registration",
            "calling",
            &["on-premises-calling"],
            calling(&["calling-standard", "calling-professional"], &[]),
            &[],
            7,
        ),
        product(
            "attendant-console",
            "Attendant Console",
            "attendant-console",
            &["attendant-console", "call-park"],
            ProductRules {
                requires: vec![code("calling-professional")],
                ..Default::default()
            },
            &[],
            0,
        ),
        product(
            "meetings",
            "Meetings",
            "meetings",
            &["meetings", "recording", "webinars"],
            ProductRules::default(),
            &[(Site, Required), (AccountType, Required)],
            30,
        ),
        product(
            "messaging",
            "Messaging",
            "messaging",
            &["messaging", "file-sharing"],
            ProductRules::default(),
            &[],
            0,
        ),
        product(
            "contact-centre",
            "Contact Centre Agent",
            "contact-centre",
            &["contact-centre", "queues", "outbound", "inbox"],
            ProductRules {
                locations: Some(
                    ["SE", "NO", "NL", "DE", "PL", "GB", "US"]
                        .iter()
                        .filter_map(|c| CountryCode::parse(c).ok())
                        .collect(),
                ),
                ..Default::default()
            },
            &[(Location, Required)],
            7,
        ),
    ]
}

/// Dates that give subscription status number `v` (0–9, in the order of
/// `SubscriptionStatus::ALL`) on `today`.
fn facts_for_status(v: usize, today: NaiveDate) -> SubscriptionFacts {
    let (trial, end_in, suspended, cancelled) = match v {
        0 => (false, 300, false, false), // active
        1 => (false, 300, true, false),  // suspended
        2 => (false, 20, false, false),  // expiring within 30 days
        3 => (false, 45, false, false),  // expiring within 60 days
        4 => (true, 90, false, false),   // trial active
        5 => (true, 10, false, false),   // trial expiring within 30 days
        6 => (true, 50, false, false),   // trial expiring within 60 days
        7 => (true, -5, false, false),   // trial expired
        8 => (false, -10, false, false), // expired
        _ => (false, 200, false, true),  // cancelled
    };
    SubscriptionFacts {
        trial,
        start_date: today - Duration::days(120),
        end_date: today + Duration::days(end_in),
        suspended,
        cancelled,
    }
}

const FIRST: &[&str] = &[
    "anna", "erik", "sofie", "jan", "marta", "lars", "eva", "piotr", "ingrid", "daan", "lena", "tomas", "kari", "noor", "ola",
];
const LAST: &[&str] = &[
    "berg",
    "jansen",
    "kowalski",
    "nilsen",
    "de vries",
    "lindqvist",
    "nowak",
    "hansen",
    "bakker",
    "svensson",
];
const ORGS: &[&str] = &[
    "Acme Logistics",
    "Fjord Fisheries",
    "Polder Water",
    "Vistula Foods",
    "Nordlys Energy",
    "Tulip Retail",
    "Baltic Freight",
    "Dune Health",
];

pub async fn seed(store: &Store) -> Result<()> {
    let clock = Arc::new(SystemClock);
    let (now, today) = (clock.now(), clock.today());
    let st = AppState::new(store.clone(), clock.clone(), allot_server::Config::default());
    let ctx = Caller {
        principal: Principal {
            token_id: "demo-seed".into(),
            role: Role::ProviderAdmin,
            partner: None,
            org: None,
        },
        request_id: new_id("req"),
    };
    for p in catalogue_inputs() {
        allot_server::app::catalogue::create_product(&st, &ctx, p)
            .await
            .map_err(|e| msg(e.detail))?;
    }
    let partners = in_transaction!(store, |tx| {
        let a = tenants::insert_partner(&mut tx, "Nordic Voice Partners", now).await?;
        let b = tenants::insert_partner(&mut tx, "Lowlands Cloud Services", now).await?;
        Ok::<_, StoreError>([a.id, b.id])
    })
    .map_err(|e| msg(e.detail))?;

    for i in 0..40usize {
        let partner = match i % 5 {
            0 => None, // the provider's own customers
            1 | 2 => Some(partners[0].clone()),
            _ => Some(partners[1].clone()),
        };
        let country = ["SE", "NL", "DE", "PL", "NO"][i % 5];
        let org = Org {
            id: new_id("org"),
            name: format!("{} {}", ORGS[i % ORGS.len()], i / ORGS.len() + 1),
            partner: partner.clone(),
            default_usage_location: Some(country.to_string()),
            payment_method_on_file: i % 3 != 0,
            self_service_purchase: i % 4 != 0,
            keep_licenses_on_deactivation: false,
            created_at: allot_store::ts(now),
        };
        let status_variant = i % 10;
        let provisioning = ProvisioningStatus::ALL[i % 6];
        let slug = org.name.to_lowercase().replace(' ', "-");
        let seeded = in_transaction!(store, |tx| {
            tenants::insert_org(&mut tx, &org, now).await?;
            let site = tenants::insert_site(&mut tx, &org.id, &format!("https://{slug}.meetings.example"), i % 2 == 0, now).await?;
            let group = tenants::insert_group(&mut tx, &org.id, "Sales", now).await?;
            let item = |p: &str, q: i64, s: ProvisioningStatus| Item {
                product: p.into(),
                quantity: q,
                consumed: 0,
                provisioning_status: s,
            };
            let main = Subscription {
                org: org.id.clone(),
                id: new_id("sub"),
                external_ref: Some(format!("SO-{:05}", 1000 + i)),
                partner: partner.clone(),
                facts: facts_for_status(status_variant, today),
                items: vec![
                    item("calling-professional", 40, ProvisioningStatus::Provisioned),
                    item("calling-standard", 20, ProvisioningStatus::Provisioned),
                    item("attendant-console", 5, ProvisioningStatus::Provisioned),
                    item("meetings", 30, ProvisioningStatus::Provisioned),
                    item("messaging", 50, ProvisioningStatus::Provisioned),
                ],
            };
            subscriptions::insert(&mut tx, &main, now).await?;
            let addon = Subscription {
                org: org.id.clone(),
                id: new_id("sub"),
                external_ref: Some(format!("SO-{:05}-CC", 1000 + i)),
                partner: partner.clone(),
                facts: facts_for_status(0, today),
                items: vec![
                    item("contact-centre", 10, provisioning),
                    item("ucm-registration", 10, ProvisioningStatus::Provisioned),
                ],
            };
            subscriptions::insert(&mut tx, &addon, now).await?;
            let mut ids = Vec::new();
            for j in 0..50usize {
                let (first, last) = (FIRST[(i + j) % FIRST.len()], LAST[(i * 7 + j) % LAST.len()]);
                let external = j >= 47;
                let u = User {
                    id: new_id("usr"),
                    email: format!(
                        "{first}.{}{j}@{}",
                        last.replace(' ', ""),
                        if external {
                            "guest.example".to_string()
                        } else {
                            format!("{slug}.example")
                        }
                    ),
                    display_name: format!("{} {}", capitalise(first), capitalise(last)),
                    kind: if external { UserKind::External } else { UserKind::Internal },
                    status: if external { UserStatus::Pending } else { UserStatus::Active },
                    usage_location: (j % 4 != 0).then(|| country.to_string()),
                    site_admin_of: if j == 0 { vec![site.id.clone()] } else { vec![] },
                    groups: if j % 3 == 0 { vec![group.id.clone()] } else { vec![] },
                };
                users::insert(&mut tx, &org.id, &u, now).await?;
                ids.push(u.id);
            }
            Ok::<_, StoreError>((site.id, main.facts, ids))
        })
        .map_err(|e| msg(e.detail))?;
        let (site, facts, user_ids) = seeded;
        if !allot_domain::status::derive_subscription_status(&facts, today).is_usable() {
            continue; // no seats can be assigned from a suspended, ended or cancelled subscription
        }
        for (j, user) in user_ids.iter().enumerate().take(45) {
            let add = |p: &str, props: &[(PropertyName, String)]| AddLicense {
                product: code(p),
                subscription: None,
                properties: props.iter().cloned().collect(),
            };
            let mut change = LicenseChange::default();
            if j < 20 {
                change
                    .add
                    .push(add("calling-professional", &[(PropertyName::Extension, format!("{}", 2000 + j))]));
            } else if j < 30 {
                change
                    .add
                    .push(add("calling-standard", &[(PropertyName::Extension, format!("{}", 2000 + j))]));
            }
            if j < 3 {
                change.add.push(add("attendant-console", &[]));
            }
            if j < 25 {
                change.add.push(add(
                    "meetings",
                    &[(PropertyName::Site, site.clone()), (PropertyName::AccountType, "host".into())],
                ));
            }
            change.add.push(add("messaging", &[]));
            if j < 3 && provisioning == ProvisioningStatus::Provisioned {
                change.add.push(add("contact-centre", &[(PropertyName::Location, "HQ".into())]));
            }
            allot_server::app::licenses::change_user_licenses(&st, &ctx, &org.id, user, change.clone())
                .await
                .map_err(|e| msg(format!("seeding licences: {}", e.detail)))?;
        }
    }
    Ok(())
}

fn capitalise(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(database: &str, listen: &str, config: allot_server::Config, metrics_listen: Option<&str>) -> Result<()> {
    // Seed with fast commits, then serve with durable ones.
    let seeding = Store::open(
        database,
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| msg(allot_domain::Error::from(e).detail))?;
    let has_catalogue = {
        let mut tx = seeding.begin_read().await.map_err(|e| msg(allot_domain::Error::from(e).detail))?;
        !catalogue::list(&mut tx, None, 1)
            .await
            .map_err(|e| msg(allot_domain::Error::from(e).detail))?
            .is_empty()
    };
    if has_catalogue {
        eprintln!("{database} already holds demo data; serving it as it is.");
    } else {
        eprintln!("Creating demo data in {database} ...");
        let started = std::time::Instant::now();
        seed(&seeding).await?;
        eprintln!("Demo data created in {:.1} s.", started.elapsed().as_secs_f64());
    }
    seeding.close().await;
    let store = Store::open(database, StoreOptions::default())
        .await
        .map_err(|e| msg(allot_domain::Error::from(e).detail))?;
    let token = create_token(&store, Role::ProviderAdmin, None, None, Some("demo"), SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let admins = demo_admins(&store).await?;
    let listener = crate::bind(listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("Allot demo is running at {url}");
    println!();
    println!("Console: {url}/ui/ (passwords are new on every start)");
    for (role, email, password) in &admins {
        println!("  {role:<16} {email:<24} {password}");
    }
    println!();
    println!("Provider admin token (shown once):");
    println!("{token}");
    println!("Try: curl -H 'Authorization: Bearer {token}' {url}/api/v1/orgs");
    let state = AppState::new(store.clone(), Arc::new(SystemClock), config);
    crate::serve_until_signal(state, listener, metrics_listen).await?;
    store.close().await;
    Ok(())
}

/// One console admin per kind (provider, a partner's, an org's), made on
/// the first start and given fresh random passwords on every start (only
/// their hashes are stored, so earlier ones cannot be shown again):
/// `(role, email, password)`.
async fn demo_admins(store: &Store) -> Result<Vec<(&'static str, &'static str, String)>> {
    use allot_server::app::admins::{create_admin_as_operator, set_password_as_operator, AdminSpec};
    let (partner, org) = {
        let mut tx = store.begin_read().await.map_err(|e| msg(allot_domain::Error::from(e).detail))?;
        let partner = tenants::list_partners(&mut tx, None, None, 1)
            .await
            .map_err(|e| msg(allot_domain::Error::from(e).detail))?
            .into_iter()
            .next()
            .ok_or_else(|| msg("the demo data has no partner"))?;
        let scope = tenants::OrgScope {
            partner: Some(partner.id.clone()),
            org: None,
        };
        let org = tenants::list_orgs(&mut tx, &scope, None, 1)
            .await
            .map_err(|e| msg(allot_domain::Error::from(e).detail))?
            .into_iter()
            .next()
            .ok_or_else(|| msg("the demo partner has no customer"))?;
        (partner.id, org.id)
    };
    let kinds = [
        ("provider_admin", "provider@demo.example", Role::ProviderAdmin, None, None),
        (
            "partner_admin",
            "partner@demo.example",
            Role::PartnerAdmin,
            Some(partner.as_str()),
            None,
        ),
        ("org_super_admin", "org@demo.example", Role::OrgSuperAdmin, None, Some(org.as_str())),
    ];
    let mut made = Vec::new();
    for (role_name, email, role, partner, org) in kinds {
        let password = allot_server::auth::generate_token()["allot_".len()..][..20].to_string();
        let now = SystemClock.now();
        match set_password_as_operator(store, email, &password, now).await {
            Ok(_) => {}
            Err(e) if e.code != allot_domain::Code::NotFound => return Err(msg(format!("the demo admin {email}: {}", e.detail))),
            Err(_) => {
                let spec = AdminSpec {
                    email,
                    display_name: None,
                    role,
                    partner,
                    org,
                };
                create_admin_as_operator(store, &spec, &password, now)
                    .await
                    .map_err(|e| msg(format!("creating the demo admin {email}: {}", e.detail)))?;
            }
        }
        made.push((role_name, email, password));
    }
    Ok(made)
}

/// The demo's webhook sealing secret: read from `<database>.webhook-secret`,
/// or made (random, mode 0600) when the file is missing.
pub fn webhook_sealing_secret(database: &str) -> Result<allot_server::config::SealingSecret> {
    use std::io::Write;
    let path = format!("{database}.webhook-secret");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&path).map_err(|e| msg(format!("cannot create {path}: {e}")))?;
            writeln!(f, "{secret}").map_err(|e| msg(format!("cannot write {path}: {e}")))?;
            secret
        }
        Err(e) => return Err(msg(format!("cannot read {path}: {e}"))),
    };
    allot_server::config::SealingSecret::new(text).map_err(|e| msg(format!("{path}: {e}")))
}
