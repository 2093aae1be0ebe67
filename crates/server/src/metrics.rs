//! Prometheus metrics, served by `allot serve --metrics-listen <addr>` at
//! `/metrics` on that address (never on the API's own port): requests by
//! route and status, latency histograms per route, jobs by state and their
//! progress, the writer's queue depth and the connection pools.
//!
//! Counting is a short lock per request; everything else is read when the
//! metrics are scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::app::App;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Latency {
    /// Counts per bucket (not cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct RouteCounts {
    /// (method, status) → requests.
    requests: Vec<(String, u16, u64)>,
    latency: Latency,
}

#[derive(Default)]
struct Counts {
    /// By route template: looked up by reference, so counting a request
    /// allocates nothing once its route has been seen.
    routes: BTreeMap<String, RouteCounts>,
}

/// What the HTTP layer counts.
#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        // A poisoned lock only means a thread panicked mid-count; the counts are still numbers.
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !c.routes.contains_key(route) {
            c.routes.insert(route.to_string(), RouteCounts::default());
        }
        let Some(r) = c.routes.get_mut(route) else { return };
        match r.requests.iter_mut().find(|(m, s, _)| m == method && *s == status) {
            Some((_, _, n)) => *n += 1,
            None => r.requests.push((method.to_string(), status, 1)),
        }
        let l = &mut r.latency;
        l.count += 1;
        l.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            l.buckets[i] += 1;
        }
    }

    fn render_http(&self, out: &mut String) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP allot_http_requests_total HTTP requests answered, by route template, method and status.\n");
        out.push_str("# TYPE allot_http_requests_total counter\n");
        for (route, r) in &c.routes {
            let mut requests = r.requests.clone();
            requests.sort();
            for (method, status, n) in requests {
                let _ = writeln!(
                    out,
                    "allot_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                    label(route),
                    label(&method)
                );
            }
        }
        out.push_str("# HELP allot_http_request_duration_seconds Time from a request's head to its answer's head, by route template.\n");
        out.push_str("# TYPE allot_http_request_duration_seconds histogram\n");
        for (route, r) in &c.routes {
            let (route, l) = (label(route), &r.latency);
            let mut cumulative = 0u64;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += l.buckets[i];
                let _ = writeln!(
                    out,
                    "allot_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "allot_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                l.count
            );
            let _ = writeln!(out, "allot_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", l.sum);
            let _ = writeln!(out, "allot_http_request_duration_seconds_count{{route=\"{route}\"}} {}", l.count);
        }
    }
}

/// A label value with `\`, `"` and line breaks escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The whole metrics page, in the Prometheus text format.
pub async fn render(app: &App) -> String {
    let mut out = String::new();
    app.metrics.render_http(&mut out);
    out.push_str("# HELP allot_writer_queue_depth Units of work waiting for the group-committed writers.\n");
    out.push_str("# TYPE allot_writer_queue_depth gauge\n");
    let _ = writeln!(out, "allot_writer_queue_depth {}", app.store.writer_queue_depth());
    out.push_str("# HELP allot_db_pool_connections Open database connections, by pool and state.\n");
    out.push_str("# TYPE allot_db_pool_connections gauge\n");
    for (pool, size, idle) in app.store.pool_stats() {
        let _ = writeln!(out, "allot_db_pool_connections{{pool=\"{pool}\",state=\"idle\"}} {idle}");
        let _ = writeln!(
            out,
            "allot_db_pool_connections{{pool=\"{pool}\",state=\"busy\"}} {}",
            (size as usize).saturating_sub(idle)
        );
    }
    let (users, licenses, bytes) = app.entitlements.size();
    out.push_str("# HELP allot_entitlement_index Users and licences the entitlement index holds, and the bytes of its tables.\n");
    out.push_str("# TYPE allot_entitlement_index gauge\n");
    let _ = writeln!(out, "allot_entitlement_index{{part=\"users\"}} {users}");
    let _ = writeln!(out, "allot_entitlement_index{{part=\"licenses\"}} {licenses}");
    let _ = writeln!(out, "allot_entitlement_index{{part=\"bytes\"}} {bytes}");
    out.push_str("# HELP allot_license_usage_dropped_total First uses not recorded because the buffer was full (the database could not be written).\n");
    out.push_str("# TYPE allot_license_usage_dropped_total counter\n");
    let _ = writeln!(out, "allot_license_usage_dropped_total {}", app.entitlements.usage.dropped());
    out.push_str("# HELP allot_entitlement_full_reads_total Times the entitlement index was read whole again after start-up (a listening connection lost, another process died).\n");
    out.push_str("# TYPE allot_entitlement_full_reads_total counter\n");
    let _ = writeln!(
        out,
        "allot_entitlement_full_reads_total {}",
        app.entitlements.full_loads.load(std::sync::atomic::Ordering::Relaxed)
    );
    match crate::app::jobs::job_counts(app).await {
        Ok(counts) => {
            out.push_str("# HELP allot_jobs Jobs, by kind and state.\n");
            out.push_str("# TYPE allot_jobs gauge\n");
            for c in &counts.by_state {
                let _ = writeln!(
                    out,
                    "allot_jobs{{kind=\"{}\",state=\"{}\"}} {}",
                    c.kind.as_str(),
                    c.state.as_str(),
                    c.jobs
                );
            }
            out.push_str("# HELP allot_jobs_active_users Users (or rows) of queued and running jobs: done and in total.\n");
            out.push_str("# TYPE allot_jobs_active_users gauge\n");
            let _ = writeln!(out, "allot_jobs_active_users{{part=\"done\"}} {}", counts.active_done);
            let _ = writeln!(out, "allot_jobs_active_users{{part=\"total\"}} {}", counts.active_total);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot count jobs for the metrics");
        }
    }
    out
}
