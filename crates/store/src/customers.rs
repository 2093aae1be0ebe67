//! The customer list of a partner (or of the provider): orgs filtered by the
//! derived status of their subscriptions and the provisioning status of
//! their services. A customer matches a filter when **at least
//! one** of its subscriptions (items) has one of the selected values. Status
//! is never stored: each selected status becomes the date window that gives
//! it today (`allot_domain::status::status_window`).

use std::collections::HashMap;

use allot_domain::status::{ProvisioningStatus, StatusWindow, SubscriptionFacts};

use crate::db::{StoreError, Tx, Val};
use crate::subscriptions::{provisioning, sub_from, SUB_COLUMNS};
use crate::tenants::{org_from, Org, ORG_COLUMNS};

#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// Only this partner's customers; `Some(None)` those without a partner.
    pub partner: Option<Option<String>>,
    /// Only this org (an org's own admins see their org alone).
    pub org: Option<String>,
    /// Name contains, case-insensitively.
    pub q: Option<String>,
    /// Any subscription in any of these windows (empty: no filter).
    pub statuses: Vec<StatusWindow>,
    /// Any subscription item in any of these provisioning states (empty: no filter).
    pub provisioning: Vec<ProvisioningStatus>,
    /// How the two lists combine when both are given: false, a customer
    /// must match each (the API's two parameters); true, either will do
    /// (the console's one filter control, where every chosen value is an
    /// alternative).
    pub either_list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CustomerSort {
    #[default]
    Name,
    NameDesc,
    Created,
    CreatedDesc,
}

impl CustomerSort {
    fn column(&self) -> &'static str {
        match self {
            Self::Name | Self::NameDesc => "o.name",
            Self::Created | Self::CreatedDesc => "o.created_at",
        }
    }
    fn descending(&self) -> bool {
        matches!(self, Self::NameDesc | Self::CreatedDesc)
    }
    /// The sort key of an org, for the cursor after it.
    pub fn key(&self, o: &Org) -> String {
        match self {
            Self::Name | Self::NameDesc => o.name.clone(),
            Self::Created | Self::CreatedDesc => o.created_at.clone(),
        }
    }
}

/// Builds the SQL text and its arguments together, numbering `$n`.
struct Sql {
    text: String,
    args: Vec<Val>,
}

impl Sql {
    fn arg(&mut self, v: Val) -> String {
        self.args.push(v);
        format!("${}", self.args.len())
    }
}

/// One page of customers in `sort` order after the cursor `(key, id)`.
pub async fn page(
    tx: &mut Tx,
    f: &CustomerFilter,
    sort: CustomerSort,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<Org>, StoreError> {
    let mut q = Sql {
        text: String::new(),
        args: Vec::new(),
    };
    let mut conds: Vec<String> = Vec::new();
    match &f.partner {
        Some(Some(p)) => {
            let a = q.arg(Val::from(p.as_str()));
            conds.push(format!("o.partner_id = {a}"));
        }
        Some(None) => conds.push("o.partner_id IS NULL".into()),
        None => {}
    }
    if let Some(org) = &f.org {
        let a = q.arg(Val::from(org.as_str()));
        conds.push(format!("o.id = {a}"));
    }
    if let Some(text) = &f.q {
        let pattern = format!("%{}%", crate::escape_like(&text.to_lowercase()));
        let a = q.arg(Val::Text(pattern));
        conds.push(format!("LOWER(o.name) LIKE {a} ESCAPE '\\'"));
    }
    let mut status_conds: Vec<String> = Vec::new();
    if !f.statuses.is_empty() {
        let mut any = Vec::new();
        for w in &f.statuses {
            let mut parts = vec![format!("s.cancelled = {}", q.arg(Val::Bool(w.cancelled)))];
            if let Some(v) = w.suspended {
                parts.push(format!("s.suspended = {}", q.arg(Val::Bool(v))));
            }
            if let Some(v) = w.trial {
                parts.push(format!("s.trial = {}", q.arg(Val::Bool(v))));
            }
            if let Some(d) = w.end_from {
                parts.push(format!("s.end_date >= {}", q.arg(Val::Text(d.to_string()))));
            }
            if let Some(d) = w.end_to {
                parts.push(format!("s.end_date <= {}", q.arg(Val::Text(d.to_string()))));
            }
            any.push(format!("({})", parts.join(" AND ")));
        }
        status_conds.push(format!(
            "EXISTS (SELECT 1 FROM subscriptions s WHERE s.org_id = o.id AND ({}))",
            any.join(" OR ")
        ));
    }
    if !f.provisioning.is_empty() {
        let list: Vec<String> = f.provisioning.iter().map(|p| q.arg(Val::from(p.as_str()))).collect();
        status_conds.push(format!(
            "EXISTS (SELECT 1 FROM subscription_items i WHERE i.org_id = o.id AND i.provisioning_status IN ({}))",
            list.join(", ")
        ));
    }
    if f.either_list && status_conds.len() > 1 {
        conds.push(format!("({})", status_conds.join(" OR ")));
    } else {
        conds.extend(status_conds);
    }
    let (col, desc) = (sort.column(), sort.descending());
    if let Some((key, id)) = after {
        let (k, i) = (q.arg(Val::from(key)), q.arg(Val::from(id)));
        let op = if desc { "<" } else { ">" };
        conds.push(format!("({col} {op} {k} OR ({col} = {k} AND o.id {op} {i}))"));
    }
    let dir = if desc { "DESC" } else { "ASC" };
    let columns: Vec<String> = ORG_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect();
    q.text = format!(
        "SELECT {} FROM orgs o{} ORDER BY {col} {dir}, o.id {dir} LIMIT {}",
        columns.join(", "),
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        },
        q.arg(Val::Int(limit)),
    );
    tx.rows(&q.text, &q.args).await?.iter().map(org_from).collect()
}

/// What the list shows of each customer: its subscriptions' facts (the
/// caller derives their status for today) and its items' provisioning states.
pub async fn statuses_of(
    tx: &mut Tx,
    orgs: &[String],
) -> Result<HashMap<String, (Vec<SubscriptionFacts>, Vec<ProvisioningStatus>)>, StoreError> {
    let mut out: HashMap<String, (Vec<SubscriptionFacts>, Vec<ProvisioningStatus>)> = HashMap::new();
    if orgs.is_empty() {
        return Ok(out);
    }
    let subs = tx
        .rows(
            &format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE {}", tx.any_of("org_id", 1)),
            &[Val::texts(orgs)],
        )
        .await?;
    for r in &subs {
        let sub = sub_from(r)?;
        out.entry(sub.org).or_default().0.push(sub.facts);
    }
    let items = tx
        .rows(
            &format!(
                "SELECT DISTINCT org_id, provisioning_status FROM subscription_items WHERE {}",
                tx.any_of("org_id", 1)
            ),
            &[Val::texts(orgs)],
        )
        .await?;
    for r in &items {
        let p = provisioning(&r.text("provisioning_status")?)?;
        out.entry(r.text("org_id")?).or_default().1.push(p);
    }
    Ok(out)
}
