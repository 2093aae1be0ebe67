//! The in-process index of who holds what, that entitlement checks are
//! answered from: per org, each user's status and licences (product and
//! subscription), each subscription's facts and its items' provisioning;
//! the catalogue's features. Statuses are derived at the check from the
//! facts and today's date, so a subscription that ends at midnight stops
//! granting at midnight without any write.
//!
//! The index holds no opinion of its own: it is replaced piece by piece
//! with what the database says (`follow.rs` reads and applies), and the
//! decision is `allot_domain::entitlements`.
//!
//! Memory: products are numbered (`u16`) and subscriptions numbered per
//! org (`u32`), so a licence is 8 bytes; a user costs its id, its email
//! (twice: in the user and as the email's key) and two hash entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use chrono::NaiveDate;

use allot_domain::catalogue::Product;
use allot_domain::entitlements::{decide, last_day, why_user_may_not, EntitlementReason, GrantingLicense};
use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_domain::types::UserStatus;
use allot_store::entitlements::{SubscriptionRow, UserRow};

type ProductId = u16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct License {
    product: ProductId,
    /// The subscription's slot in its org.
    subscription: u32,
}

#[derive(Debug, Clone)]
struct UserEntry {
    email: Box<str>,
    status: UserStatus,
    /// The licence version the licences below are of.
    version: i64,
    /// When a licence note last set the licences ([`IndexState::touched`]).
    touched: u64,
    licenses: Box<[License]>,
}

#[derive(Debug, Clone)]
struct SubscriptionSlot {
    id: Box<str>,
    /// `None`: not (or no longer) known.
    facts: Option<SubscriptionFacts>,
    items: Vec<(ProductId, ProvisioningStatus)>,
}

#[derive(Debug, Default, Clone)]
struct OrgIndex {
    subscriptions: Vec<SubscriptionSlot>,
    subscription_slots: HashMap<Box<str>, u32>,
    users: HashMap<Box<str>, UserEntry>,
    by_email: HashMap<Box<str>, Box<str>>,
}

#[derive(Debug, Default, Clone)]
struct CatalogueIndex {
    /// Product numbers: never reused, so licences keep theirs across reloads.
    codes: Vec<Box<str>>,
    numbers: HashMap<Box<str>, ProductId>,
    /// Products in the catalogue now, and the features each grants.
    features_of: HashMap<ProductId, Vec<Box<str>>>,
    /// Feature → the products granting it.
    granting: HashMap<Box<str>, Vec<ProductId>>,
}

impl CatalogueIndex {
    fn number(&mut self, code: &str) -> ProductId {
        if let Some(&n) = self.numbers.get(code) {
            return n;
        }
        let n = ProductId::try_from(self.codes.len()).unwrap_or(ProductId::MAX);
        self.codes.push(code.into());
        self.numbers.insert(code.into(), n);
        n
    }

    fn replace(&mut self, products: &[Product]) {
        self.features_of.clear();
        self.granting.clear();
        for p in products {
            let n = self.number(p.code.as_str());
            let features: Vec<Box<str>> = p.features.iter().map(|f| f.as_str().into()).collect();
            for f in &features {
                self.granting.entry(f.clone()).or_default().push(n);
            }
            self.features_of.insert(n, features);
        }
    }

    fn code(&self, n: ProductId) -> &str {
        self.codes.get(usize::from(n)).map_or("", |c| c)
    }
}

impl OrgIndex {
    fn slot(&mut self, id: &str) -> u32 {
        if let Some(&s) = self.subscription_slots.get(id) {
            return s;
        }
        let s = u32::try_from(self.subscriptions.len()).unwrap_or(u32::MAX);
        self.subscriptions.push(SubscriptionSlot {
            id: id.into(),
            facts: None,
            items: Vec::new(),
        });
        self.subscription_slots.insert(id.into(), s);
        s
    }

    fn replace_subscriptions(&mut self, catalogue: &mut CatalogueIndex, rows: &[SubscriptionRow]) {
        for slot in &mut self.subscriptions {
            slot.facts = None;
            slot.items.clear();
        }
        for r in rows {
            let s = self.slot(&r.id) as usize;
            let items = r.items.iter().map(|(p, st)| (catalogue.number(p), *st)).collect();
            if let Some(slot) = self.subscriptions.get_mut(s) {
                slot.facts = Some(r.facts);
                slot.items = items;
            }
        }
    }

    fn remove_user(&mut self, id: &str) {
        if let Some(old) = self.users.remove(id) {
            if self.by_email.get(&old.email).is_some_and(|u| &**u == id) {
                self.by_email.remove(&old.email);
            }
        }
    }

    /// Puts a user as read. Its licences as read are kept unless a licence
    /// note set them after the read began (`read_from`): the note is newer.
    fn put_user(&mut self, catalogue: &mut CatalogueIndex, row: &UserRow, read_from: u64) {
        let kept = self
            .users
            .get(row.id.as_str())
            .filter(|e| e.touched > read_from)
            .map(|e| (e.licenses.clone(), e.version, e.touched));
        self.remove_user(&row.id);
        let (licenses, version, touched) = match kept {
            Some(k) => k,
            None => (
                row.licenses
                    .iter()
                    .map(|(p, s)| License {
                        product: catalogue.number(p),
                        subscription: self.slot(s),
                    })
                    .collect(),
                row.version,
                0,
            ),
        };
        self.by_email.insert(row.email.as_str().into(), row.id.as_str().into());
        self.users.insert(
            row.id.as_str().into(),
            UserEntry {
                email: row.email.as_str().into(),
                status: row.status,
                version,
                touched,
                licenses,
            },
        );
    }

    fn find_user(&self, user: &str) -> Option<(&str, &UserEntry)> {
        if let Some((id, e)) = self.users.get_key_value(user) {
            return Some((id, e));
        }
        if !user.contains('@') {
            return None;
        }
        let id = if user.bytes().any(|b| b.is_ascii_uppercase()) || !user.is_ascii() {
            self.by_email.get(user.to_lowercase().as_str())?
        } else {
            self.by_email.get(user)?
        };
        self.users.get_key_value(id).map(|(id, e)| (&**id, e))
    }

    fn granting(&self, l: &License) -> GrantingLicense {
        let slot = self.subscriptions.get(l.subscription as usize);
        GrantingLicense {
            subscription: slot.and_then(|s| s.facts),
            provisioning: slot.and_then(|s| s.items.iter().find(|(p, _)| *p == l.product).map(|(_, st)| *st)),
        }
    }
}

/// What a check asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked<'a> {
    Feature(&'a str),
    Product(&'a str),
}

/// A check's answer, as the index gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub reason: EntitlementReason,
    /// The user's id, when the user is known.
    pub user_id: Option<String>,
    /// (product, subscription) of every licence that grants it today.
    pub granted_by: Vec<(String, String)>,
    /// The last day the answer holds if nothing changes (allowed only).
    pub valid_until: Option<NaiveDate>,
}

/// Everything one user may use today: per feature, what grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntitlements {
    pub user_id: String,
    pub email: String,
    /// `None` for an active user; else why nothing is granted.
    pub blocked: Option<EntitlementReason>,
    /// Feature → (product, subscription, last day) of each granting licence.
    pub features: BTreeMap<String, Vec<(String, String, NaiveDate)>>,
    /// Products the user may use today, with what grants them.
    pub products: BTreeMap<String, Vec<(String, NaiveDate)>>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct IndexState {
    catalogue: CatalogueIndex,
    orgs: HashMap<Box<str>, OrgIndex>,
    /// Counts licence notes applied: a read that began at `n` does not
    /// overwrite licences a note set after it (see `put_user`).
    touched: u64,
}

impl IndexState {
    pub(crate) fn replace_catalogue(&mut self, products: &[Product]) {
        self.catalogue.replace(products);
    }

    /// Replaces the subscriptions of every org named in `rows` (and of
    /// `orgs`, which may have none now).
    pub(crate) fn replace_subscriptions(&mut self, orgs: &[String], rows: &[SubscriptionRow]) {
        let mut by_org: HashMap<&str, Vec<SubscriptionRow>> = orgs.iter().map(|o| (o.as_str(), Vec::new())).collect();
        for r in rows {
            by_org.entry(r.org.as_str()).or_default().push(r.clone());
        }
        for (org, rows) in by_org {
            let o = self.orgs.entry(org.into()).or_default();
            o.replace_subscriptions(&mut self.catalogue, &rows);
        }
    }

    /// Where licence notes stand now: give it to the `replace_*` of a read
    /// that begins now.
    pub(crate) fn touched(&self) -> u64 {
        self.touched
    }

    /// Replaces the named users of `org` with `rows`, read from `read_from`
    /// on (a named user absent from them is gone).
    pub(crate) fn replace_users(&mut self, org: &str, named: &[String], rows: &[UserRow], read_from: u64) {
        let o = self.orgs.entry(org.into()).or_default();
        let present: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for id in named {
            if !present.contains(id.as_str()) {
                o.remove_user(id);
            }
        }
        for r in rows {
            o.put_user(&mut self.catalogue, r, read_from);
        }
    }

    /// Sets what users of `org` hold after a committed change (no read):
    /// a user not in the index is left to the note that adds them, and a
    /// version no newer than the one held is skipped (it was published
    /// out of commit order, and what is held already includes it).
    pub(crate) fn apply_licenses(&mut self, org: &str, now: &std::collections::BTreeMap<String, allot_store::changes::LicensesNow>) {
        let Some(o) = self.orgs.get_mut(org) else { return };
        self.touched += 1;
        for (user, n) in now {
            let current = match o.users.get(user.as_str()) {
                Some(e) => e.version,
                None => continue,
            };
            if n.version.is_some_and(|v| v <= current) {
                continue;
            }
            let licenses: Box<[License]> = n
                .held
                .iter()
                .map(|(p, s)| License {
                    product: self.catalogue.number(p),
                    subscription: o.slot(s),
                })
                .collect();
            if let Some(e) = o.users.get_mut(user.as_str()) {
                e.licenses = licenses;
                e.touched = self.touched;
                if let Some(v) = n.version {
                    e.version = v;
                }
            }
        }
    }

    /// Replaces every user of `org` with `rows`, read from `read_from` on.
    pub(crate) fn replace_all_users(&mut self, org: &str, rows: &[UserRow], read_from: u64) {
        let o = self.orgs.entry(org.into()).or_default();
        let present: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let gone: Vec<Box<str>> = o.users.keys().filter(|k| !present.contains(&***k)).cloned().collect();
        for id in gone {
            o.remove_user(&id);
        }
        for r in rows {
            o.put_user(&mut self.catalogue, r, read_from);
        }
    }

    /// Adds users of any orgs (a full load).
    pub(crate) fn put_users(&mut self, rows: &[UserRow]) {
        for r in rows {
            let o = self.orgs.entry(r.org.as_str().into()).or_default();
            o.put_user(&mut self.catalogue, r, u64::MAX);
        }
    }

    /// A full read (`fresh`, begun at `read_from`) replaces this state,
    /// except the licences notes set after the read began (kept, by
    /// product code and subscription id, since numbering differs).
    pub(crate) fn replace_with(&mut self, mut fresh: IndexState, read_from: u64) {
        for (org, o) in &self.orgs {
            for (id, e) in o.users.iter().filter(|(_, e)| e.touched > read_from) {
                let held: Vec<(String, String)> = e
                    .licenses
                    .iter()
                    .map(|l| {
                        let sub = o.subscriptions.get(l.subscription as usize).map_or("", |s| &s.id);
                        (self.catalogue.code(l.product).to_string(), sub.to_string())
                    })
                    .collect();
                let note = std::collections::BTreeMap::from([(id.to_string(), allot_store::changes::LicensesNow { version: None, held })]);
                fresh.apply_licenses(org, &note);
            }
        }
        fresh.touched = self.touched;
        *self = fresh;
    }

    /// Whether a product of the catalogue grants `feature`.
    pub(crate) fn knows_feature(&self, feature: &str) -> bool {
        self.catalogue.granting.contains_key(feature)
    }

    /// Every feature of the catalogue, in name order.
    pub(crate) fn features(&self) -> Vec<&str> {
        let mut f: Vec<&str> = self.catalogue.granting.keys().map(|k| &**k).collect();
        f.sort_unstable();
        f
    }

    pub(crate) fn licenses_held(&self) -> usize {
        self.orgs.values().flat_map(|o| o.users.values()).map(|u| u.licenses.len()).sum()
    }

    /// The bytes the index's tables and strings take on the heap, counted
    /// from their capacities (hash tables: their buckets and control
    /// bytes); the allocator's own rounding is not in it.
    pub(crate) fn heap_bytes(&self) -> usize {
        fn table<K, V>(m: &HashMap<K, V>) -> usize {
            if m.capacity() == 0 {
                return 0;
            }
            // `capacity()` is 7/8 of the buckets (all of them below 8).
            let buckets = if m.capacity() < 8 {
                m.capacity() + 1
            } else {
                (m.capacity() * 8 / 7).next_power_of_two()
            };
            buckets * (std::mem::size_of::<(K, V)>() + 1) + 16
        }
        let mut n = table(&self.orgs);
        for (id, o) in &self.orgs {
            n += id.len();
            n += table(&o.users) + table(&o.by_email) + table(&o.subscription_slots);
            n += o.subscriptions.capacity() * std::mem::size_of::<SubscriptionSlot>();
            for s in &o.subscriptions {
                n += s.id.len() + s.items.capacity() * std::mem::size_of::<(ProductId, ProvisioningStatus)>();
            }
            n += o.subscription_slots.keys().map(|k| k.len()).sum::<usize>();
            for (id, u) in &o.users {
                n += id.len() + u.email.len() + u.licenses.len() * std::mem::size_of::<License>();
            }
            for (email, id) in &o.by_email {
                n += email.len() + id.len();
            }
        }
        n
    }

    pub(crate) fn users_known(&self) -> usize {
        self.orgs.values().map(|o| o.users.len()).sum()
    }

    pub(crate) fn check(&self, org: &str, user: &str, asked: Asked<'_>, today: NaiveDate) -> Answer {
        let found = self.orgs.get(org).and_then(|o| o.find_user(user).map(|(id, e)| (o, id, e)));
        let refused = |reason, user_id: Option<&str>| Answer {
            reason,
            user_id: user_id.map(str::to_string),
            granted_by: Vec::new(),
            valid_until: None,
        };
        let Some((o, id, entry)) = found else {
            return refused(EntitlementReason::UnknownUser, None);
        };
        if let Some(reason) = why_user_may_not(Some(entry.status)) {
            return refused(reason, Some(id));
        }
        let granting_products: &[ProductId] = match asked {
            Asked::Feature(f) => match self.catalogue.granting.get(f) {
                Some(p) => p,
                None => return refused(EntitlementReason::UnknownFeature, Some(id)),
            },
            Asked::Product(code) => match self.catalogue.numbers.get(code) {
                Some(n) if self.catalogue.features_of.contains_key(n) => std::slice::from_ref(n),
                _ => return refused(EntitlementReason::UnknownFeature, Some(id)),
            },
        };
        let mut candidates: Vec<(&License, GrantingLicense)> = Vec::new();
        for l in entry.licenses.iter().filter(|l| granting_products.contains(&l.product)) {
            candidates.push((l, o.granting(l)));
        }
        let reason = decide(candidates.iter().map(|(_, g)| g), today);
        if !reason.allowed() {
            return refused(reason, Some(id));
        }
        let mut answer = refused(reason, Some(id));
        for (l, g) in &candidates {
            if allot_domain::entitlements::why_license_does_not_grant(g, today).is_none() {
                let sub = o.subscriptions.get(l.subscription as usize).map_or("", |s| &s.id);
                answer
                    .granted_by
                    .push((self.catalogue.code(l.product).to_string(), sub.to_string()));
                if let Some(f) = g.subscription {
                    let last = last_day(&f);
                    answer.valid_until = Some(answer.valid_until.map_or(last, |v: NaiveDate| v.max(last)));
                }
            }
        }
        answer
    }

    pub(crate) fn user_entitlements(&self, org: &str, user: &str, today: NaiveDate) -> Option<UserEntitlements> {
        let o = self.orgs.get(org)?;
        let (id, entry) = o.find_user(user)?;
        let mut out = UserEntitlements {
            user_id: id.to_string(),
            email: entry.email.to_string(),
            blocked: why_user_may_not(Some(entry.status)),
            features: BTreeMap::new(),
            products: BTreeMap::new(),
        };
        if out.blocked.is_some() {
            return Some(out);
        }
        for l in entry.licenses.iter() {
            let g = o.granting(l);
            if allot_domain::entitlements::why_license_does_not_grant(&g, today).is_some() {
                continue;
            }
            let Some(features) = self.catalogue.features_of.get(&l.product) else {
                continue;
            };
            let code = self.catalogue.code(l.product).to_string();
            let sub = o.subscriptions.get(l.subscription as usize).map_or("", |s| &s.id).to_string();
            let last = g.subscription.as_ref().map(last_day).unwrap_or(today);
            out.products.entry(code.clone()).or_default().push((sub.clone(), last));
            for f in features {
                out.features
                    .entry(f.to_string())
                    .or_default()
                    .push((code.clone(), sub.clone(), last));
            }
        }
        Some(out)
    }
}

/// The index with its lock. Checks take the read lock for a few hundred
/// nanoseconds; applying a change takes the write lock for as long as
/// replacing the rows read takes (the reads happen before, unlocked).
#[derive(Default)]
pub struct Index {
    state: RwLock<IndexState>,
}

impl Index {
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexState> {
        // A panic while applying cannot leave half a value behind that a
        // check could misread more than the database it copies: take it.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn swap(&self, fresh: IndexState) {
        *self.write() = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_store::changes::LicensesNow;
    use std::collections::BTreeMap;

    fn row(licenses: &[(&str, &str)], version: i64) -> UserRow {
        UserRow {
            org: "org_a".into(),
            id: "usr_1".into(),
            email: "ada@a.example".into(),
            status: UserStatus::Active,
            licenses: licenses.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect(),
            version,
        }
    }

    fn held(state: &IndexState) -> Vec<(String, String)> {
        let o = &state.orgs["org_a"];
        o.users["usr_1"]
            .licenses
            .iter()
            .map(|l| {
                (
                    state.catalogue.code(l.product).to_string(),
                    o.subscriptions[l.subscription as usize].id.to_string(),
                )
            })
            .collect()
    }

    fn note(held: &[(&str, &str)], version: Option<i64>) -> BTreeMap<String, LicensesNow> {
        BTreeMap::from([(
            "usr_1".to_string(),
            LicensesNow {
                version,
                held: held.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect(),
            },
        )])
    }

    #[test]
    fn a_read_begun_before_a_note_does_not_undo_it() {
        let mut s = IndexState::default();
        s.put_users(&[row(&[], 0)]);
        let read_from = s.touched();
        // A licence change lands (and is applied) while a read of the user is under way.
        s.apply_licenses("org_a", &note(&[("meetings", "sub_1")], None));
        s.replace_users("org_a", &["usr_1".to_string()], &[row(&[], 0)], read_from);
        assert_eq!(held(&s), [("meetings".to_string(), "sub_1".to_string())]);
        // A read begun after it is taken as it is.
        let read_from = s.touched();
        s.replace_users("org_a", &["usr_1".to_string()], &[row(&[("calling", "sub_2")], 3)], read_from);
        assert_eq!(held(&s), [("calling".to_string(), "sub_2".to_string())]);
        // A full read begun before the note keeps it too.
        let read_from = s.touched();
        s.apply_licenses("org_a", &note(&[("messaging", "sub_1")], Some(4)));
        let mut fresh = IndexState::default();
        fresh.put_users(&[row(&[("calling", "sub_2")], 3)]);
        s.replace_with(fresh, read_from);
        assert_eq!(held(&s), [("messaging".to_string(), "sub_1".to_string())]);
    }

    #[test]
    fn notes_with_versions_apply_only_forward() {
        let mut s = IndexState::default();
        s.put_users(&[row(&[], 5)]);
        s.apply_licenses("org_a", &note(&[("meetings", "sub_1")], Some(7)));
        // Published out of commit order: an older version is skipped.
        s.apply_licenses("org_a", &note(&[], Some(6)));
        assert_eq!(held(&s), [("meetings".to_string(), "sub_1".to_string())]);
        s.apply_licenses("org_a", &note(&[], Some(8)));
        assert!(held(&s).is_empty());
        // A note for a user the index does not hold waits for the user's own note.
        s.apply_licenses("org_b", &note(&[("meetings", "sub_1")], None));
        assert!(!s.orgs.contains_key("org_b"));
    }
}
