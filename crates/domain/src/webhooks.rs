//! Webhook rules that need no I/O: the event types, which endpoint wants
//! which event, the retry schedule, the events a licence plan makes, and
//! which target URLs and addresses are acceptable.
//!
//! The delivery itself (HTTP, signatures, the outbox) lives in the server
//! and the store; what is decided here is tested without them.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::planner::{Held, LicensePlan};
use crate::types::str_enum;
use crate::Error;

/// What happened, as the `type` of an event's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "license.assigned")]
    LicenseAssigned,
    #[serde(rename = "license.removed")]
    LicenseRemoved,
    #[serde(rename = "license.moved")]
    LicenseMoved,
    #[serde(rename = "user.created")]
    UserCreated,
    #[serde(rename = "user.updated")]
    UserUpdated,
    #[serde(rename = "user.deleted")]
    UserDeleted,
    #[serde(rename = "subscription.created")]
    SubscriptionCreated,
    #[serde(rename = "subscription.updated")]
    SubscriptionUpdated,
    #[serde(rename = "subscription.status_changed")]
    SubscriptionStatusChanged,
    #[serde(rename = "subscription.cancelled")]
    SubscriptionCancelled,
    #[serde(rename = "job.finished")]
    JobFinished,
    #[serde(rename = "purchase_request.created")]
    PurchaseRequestCreated,
    #[serde(rename = "purchase_request.fulfilled")]
    PurchaseRequestFulfilled,
    #[serde(rename = "purchase_request.rejected")]
    PurchaseRequestRejected,
    /// Sent by "test", to one endpoint; never subscribed to.
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

str_enum!(EventType {
    LicenseAssigned => "license.assigned", LicenseRemoved => "license.removed", LicenseMoved => "license.moved",
    UserCreated => "user.created", UserUpdated => "user.updated", UserDeleted => "user.deleted",
    SubscriptionCreated => "subscription.created", SubscriptionUpdated => "subscription.updated",
    SubscriptionStatusChanged => "subscription.status_changed", SubscriptionCancelled => "subscription.cancelled",
    JobFinished => "job.finished", PurchaseRequestCreated => "purchase_request.created",
    PurchaseRequestFulfilled => "purchase_request.fulfilled", PurchaseRequestRejected => "purchase_request.rejected",
    WebhookTest => "webhook.test",
});

impl EventType {
    /// The types an endpoint may subscribe to (all but `webhook.test`).
    pub const SUBSCRIBABLE: [EventType; 14] = [
        Self::LicenseAssigned,
        Self::LicenseRemoved,
        Self::LicenseMoved,
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserDeleted,
        Self::SubscriptionCreated,
        Self::SubscriptionUpdated,
        Self::SubscriptionStatusChanged,
        Self::SubscriptionCancelled,
        Self::JobFinished,
        Self::PurchaseRequestCreated,
        Self::PurchaseRequestFulfilled,
        Self::PurchaseRequestRejected,
    ];
}

/// The event types an endpoint receives: every one (`["*"]`) or those named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(Vec<EventType>),
}

impl EventFilter {
    /// Parses the `events` field: `["*"]` or a non-empty list of known,
    /// subscribable types (duplicates dropped). Anything else names the
    /// field and the offending entry.
    pub fn parse(names: &[String]) -> Result<EventFilter, Error> {
        if names.is_empty() {
            return Err(Error::validation(
                "events",
                "events must name at least one event type, or be [\"*\"] for all of them.",
            ));
        }
        if names.iter().any(|n| n == "*") {
            if names.len() > 1 {
                return Err(Error::validation("events", "\"*\" means every event type: give it alone."));
            }
            return Ok(EventFilter::All);
        }
        let mut types = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let t = EventType::parse(name).filter(|t| *t != EventType::WebhookTest).ok_or_else(|| {
                Error::validation(
                    &format!("events[{i}]"),
                    format!(
                        "{name:?} is not an event type. Known: {}.",
                        EventType::SUBSCRIBABLE.map(|t| t.as_str()).join(", ")
                    ),
                )
            })?;
            if !types.contains(&t) {
                types.push(t);
            }
        }
        types.sort();
        Ok(EventFilter::Only(types))
    }

    pub fn wants(&self, t: EventType) -> bool {
        match self {
            EventFilter::All => t != EventType::WebhookTest,
            EventFilter::Only(types) => types.contains(&t),
        }
    }

    /// As the API shows it and the store keeps it.
    pub fn names(&self) -> Vec<String> {
        match self {
            EventFilter::All => vec!["*".to_string()],
            EventFilter::Only(types) => types.iter().map(|t| t.as_str().to_string()).collect(),
        }
    }
}

/// Waits before the 2nd, 3rd, ... attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 10 h. After the last, the delivery has failed for good.
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// When to try again after `attempts` failed attempts: the schedule's step
/// (scaled, so tests can shorten it), spread by `jitter` in [0, 1) over
/// ±10%, and never sooner than a `Retry-After` the receiver asked for.
/// `None`: the schedule is used up.
pub fn retry_delay(attempts: u32, scale: f64, jitter: f64, retry_after: Option<Duration>) -> Option<Duration> {
    let step = RETRY_SCHEDULE.get(attempts.checked_sub(1)? as usize)?;
    let spread = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    let wait = step.mul_f64(scale.max(0.0) * spread);
    Some(match retry_after {
        Some(asked) if asked > wait => asked,
        _ => wait,
    })
}

/// One licence event of a user's change: what the plan did to one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseEvent<'a> {
    pub kind: EventType,
    /// The licence after the change (for `removed`, the one released).
    pub held: &'a Held,
    /// For `moved`: the subscription the licence left.
    pub from_subscription: Option<&'a str>,
}

/// The licence events of one user's plan, in a fixed order: licences
/// removed, then moved (the same product released from one subscription
/// and taken from another), then assigned; by product within each.
pub fn license_events(plan: &LicensePlan) -> Vec<LicenseEvent<'_>> {
    let mut removed = Vec::new();
    let mut moved = Vec::new();
    let mut assigned = Vec::new();
    for r in &plan.release {
        match plan.take.iter().find(|t| t.product == r.product) {
            Some(t) if t.subscription != r.subscription => moved.push(LicenseEvent {
                kind: EventType::LicenseMoved,
                held: t,
                from_subscription: Some(r.subscription.as_str()),
            }),
            // Taken again from the same subscription: its properties changed.
            Some(_) => {}
            None => removed.push(LicenseEvent {
                kind: EventType::LicenseRemoved,
                held: r,
                from_subscription: None,
            }),
        }
    }
    for t in &plan.take {
        if !moved.iter().any(|m| m.held.product == t.product) {
            assigned.push(LicenseEvent {
                kind: EventType::LicenseAssigned,
                held: t,
                from_subscription: None,
            });
        }
    }
    let by_product = |a: &LicenseEvent, b: &LicenseEvent| a.held.product.cmp(&b.held.product);
    removed.sort_by(by_product);
    moved.sort_by(by_product);
    assigned.sort_by(by_product);
    removed.into_iter().chain(moved).chain(assigned).collect()
}

/// What the configuration allows of webhook targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// `http://` targets (otherwise `https://` only).
    pub allow_http: bool,
    /// Loopback, private, link-local and other non-public addresses.
    pub allow_private: bool,
}

/// The most a target URL may be long.
pub const MAX_URL_LEN: usize = 2_000;

/// Checks a target URL's text as far as it can be without resolving its
/// host: an absolute `https` (or allowed `http`) URL with a host, no
/// credentials, no fragment; a literal IP address must be public unless
/// allowed. Names the field `url`.
pub fn check_target_url(url: &str, policy: TargetPolicy) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::validation("url", why.to_string()));
    if url.len() > MAX_URL_LEN {
        return bad(&format!("url is longer than {MAX_URL_LEN} characters."));
    }
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return bad("url must be an absolute URL such as https://example.com/hooks/allot."),
    };
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return bad("url must use https (this server does not allow http targets)."),
        _ => return bad("url must use https."),
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("url must not contain spaces or control characters.");
    }
    if url.contains('#') {
        return bad("url must not have a fragment (#...).");
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return bad("url must not contain credentials (user:password@): the signature authenticates Allot.");
    }
    let host = host_of(authority);
    if host.is_empty() {
        return bad("url must name a host.");
    }
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        if !policy.allow_private && !is_public(ip) {
            return bad(&format!(
                "url points at {ip}, a private, loopback or reserved address; webhooks go to public addresses only."
            ));
        }
    } else if !policy.allow_private && is_local_name(host) {
        return bad(&format!(
            "url names {host}, which is this machine; webhooks go to public addresses only."
        ));
    }
    Ok(())
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_local_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// Whether an address is one a webhook may reach without the
/// configuration's leave: not loopback, private, link-local, shared (CGN),
/// documentation, benchmarking, multicast, broadcast, unspecified or
/// otherwise reserved; IPv4 inside IPv6 judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(a == 0
                || a == 10
                || a == 127
                || (a == 100 && (64..128).contains(&b))
                || (a == 169 && b == 254)
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 0 && c == 2)
                || (a == 198 && (b == 18 || b == 19))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
                || a >= 224)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xff00) == 0xff00 // multicast
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: may reach IPv4 private space
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0))
            // IPv4-compatible
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ProductCode;

    fn field_of(e: &Error) -> Option<&str> {
        e.violations.first().and_then(|v| v.field.as_deref())
    }

    fn held(product: &str, sub: &str) -> Held {
        Held {
            product: ProductCode::parse(product).unwrap(),
            subscription: sub.to_string(),
            properties: Default::default(),
        }
    }

    #[test]
    fn the_filter_takes_star_or_known_types_and_names_the_bad_entry() {
        assert_eq!(EventFilter::parse(&["*".into()]).unwrap(), EventFilter::All);
        let f = EventFilter::parse(&["license.removed".into(), "license.assigned".into(), "license.removed".into()]).unwrap();
        assert_eq!(f.names(), vec!["license.assigned", "license.removed"]);
        assert!(f.wants(EventType::LicenseAssigned) && !f.wants(EventType::UserCreated));
        let e = EventFilter::parse(&["license.assigned".into(), "licence.gone".into()]).unwrap_err();
        assert_eq!(field_of(&e), Some("events[1]"));
        assert!(EventFilter::parse(&[]).is_err());
        assert!(EventFilter::parse(&["*".into(), "user.created".into()]).is_err());
        assert!(EventFilter::parse(&["webhook.test".into()]).is_err());
        assert!(!EventFilter::All.wants(EventType::WebhookTest));
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter_and_retry_after() {
        assert_eq!(retry_delay(0, 1.0, 0.5, None), None);
        assert_eq!(retry_delay(1, 1.0, 0.5, None), Some(Duration::from_secs(5)));
        assert_eq!(retry_delay(2, 1.0, 0.5, None), Some(Duration::from_secs(300)));
        assert_eq!(retry_delay(7, 1.0, 0.5, None), Some(Duration::from_secs(36_000)));
        assert_eq!(retry_delay(8, 1.0, 0.5, None), None);
        let low = retry_delay(3, 1.0, 0.0, None).unwrap();
        let high = retry_delay(3, 1.0, 0.999, None).unwrap();
        assert!(low >= Duration::from_secs(1620) && high <= Duration::from_secs(1980) && low < high);
        assert_eq!(retry_delay(1, 0.01, 0.5, None), Some(Duration::from_millis(50)));
        assert_eq!(
            retry_delay(1, 1.0, 0.5, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_delay(2, 1.0, 0.5, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn a_plan_makes_removed_moved_and_assigned_events() {
        let plan = LicensePlan {
            release: vec![held("alpha", "s1"), held("beta", "s1"), held("gamma", "s1")],
            take: vec![held("beta", "s2"), held("delta", "s1"), held("gamma", "s1")],
            ..Default::default()
        };
        let events = license_events(&plan);
        let kinds: Vec<_> = events
            .iter()
            .map(|e| (e.kind, e.held.product.as_str(), e.held.subscription.as_str(), e.from_subscription))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventType::LicenseRemoved, "alpha", "s1", None),
                (EventType::LicenseMoved, "beta", "s2", Some("s1")),
                (EventType::LicenseAssigned, "delta", "s1", None),
                (EventType::LicenseAssigned, "gamma", "s1", None),
            ]
        );
    }

    #[test]
    fn target_urls_must_be_https_public_and_without_credentials() {
        let strict = TargetPolicy::default();
        assert!(check_target_url("https://hooks.example.com/allot?x=1", strict).is_ok());
        assert!(check_target_url("https://[2606:4700::1]:8443/h", strict).is_ok());
        for bad in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "hooks.example.com/x",
            "https://user:pw@hooks.example.com/",
            "https://127.0.0.1/",
            "https://10.1.2.3:8443/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:192.168.1.1]/",
            "https://localhost:8080/",
            "https://a.localhost/",
            "https:///path",
            "https://hooks.example.com/a b",
            "https://hooks.example.com/#frag",
        ] {
            let e = check_target_url(bad, strict).unwrap_err();
            assert_eq!(field_of(&e), Some("url"), "{bad}");
        }
        let lax = TargetPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert!(check_target_url("http://127.0.0.1:9000/hook", lax).is_ok());
        assert!(check_target_url("http://user@127.0.0.1:9000/hook", lax).is_err());
    }

    #[test]
    fn public_and_private_addresses() {
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "100.128.0.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "0.0.0.0",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "192.168.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }
}
