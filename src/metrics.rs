//! Prometheus metrics: request counts by action, decision and status;
//! latency histograms; cache hits and misses; store call latency and
//! errors; policy reloads. Served on an optional TCP address.
//!
//! Every label comes from a small fixed set, so the registry is fixed arrays
//! of atomics: the hot path is a few relaxed atomic adds, and no path (of a
//! denied request or any other) can ever become a label.

mod serve;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

pub use serve::{FD_RESERVE, MetricsError, serve_metrics};

use crate::shard::Sharded;
use crate::store::StoreErrorKind;
use crate::store::cache::CachedStore;

/// Actions as labelled (`none`: the request was not understood).
const ACTIONS: [&str; 10] = [
    "read", "write", "list", "delete", "upload", "whoami", "health", "ready", "reload", "none",
];
/// Decisions as labelled.
const DECISIONS: [&str; 3] = ["allow", "deny", "none"];
/// Statuses the broker answers with; anything else is counted as `other`.
const STATUSES: [u16; 20] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 411, 412, 413, 415, 429, 431, 500, 502, 503, 504,
    0,
];
/// Store operations as labelled.
const STORE_OPS: [&str; 5] = ["put", "get", "list", "delete", "health"];
/// Store error kinds as labelled.
const STORE_ERRORS: [&str; 7] = [
    "not_found",
    "exists",
    "denied",
    "unavailable",
    "timeout",
    "invalid",
    "backend",
];
/// Histogram bucket upper bounds, in microseconds.
const BUCKETS_US: [u64; 14] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 5_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        Self::render_sum(std::slice::from_ref(&self), out, name, labels);
    }

    /// Renders the sum of `parts` (one histogram kept in shards).
    fn render_sum(parts: &[&Self], out: &mut String, name: &str, labels: &str) {
        let total = |c: fn(&Self) -> &AtomicU64| -> u64 {
            parts.iter().map(|h| c(h).load(Ordering::Relaxed)).sum()
        };
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += parts
                .iter()
                .map(|h| h.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = total(|h| &h.count);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = total(|h| &h.sum_us) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The broker's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    /// Counted on every request, so kept per thread shard (see `shard`):
    /// workers do not bounce these cache lines between cores.
    per_thread: Sharded<RequestCells>,
    store_latency: Vec<Histogram>,
    store_errors: Vec<AtomicU64>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// TLS listener reloads: accepted, refused; handshakes that failed.
    tls: [AtomicU64; 3],
    audit_failures: AtomicU64,
    // Weak: the cache holds the store, which holds these metrics; a strong
    // reference closed that cycle, so the store was never dropped and the
    // embedded store's file was left unclosed at every stop (redb then
    // walked the whole file on the next start: 0.3 s at 1M secrets).
    cache: OnceLock<Weak<CachedStore>>,
}

/// Request counters, one per action × decision × status.
const REQUEST_CELLS: usize = ACTIONS.len() * DECISIONS.len() * STATUSES.len();

/// One shard's request counters and latency histograms, inline so that
/// the shard's cache-line padding covers them.
#[derive(Debug)]
struct RequestCells {
    requests: [AtomicU64; REQUEST_CELLS],
    latency: [Histogram; ACTIONS.len()],
}

impl Default for RequestCells {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| Histogram::default()),
        }
    }
}

impl RequestCells {
    fn requests(&self, i: usize) -> u64 {
        self.requests[i].load(Ordering::Relaxed)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            per_thread: Sharded::default(),
            store_latency: (0..STORE_OPS.len()).map(|_| Histogram::default()).collect(),
            store_errors: (0..STORE_OPS.len() * STORE_ERRORS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            tls: Default::default(),
            audit_failures: AtomicU64::new(0),
            cache: OnceLock::new(),
        }
    }
}

fn index_of(list: &[&str], item: Option<&str>) -> usize {
    item.and_then(|i| list.iter().position(|x| *x == i))
        .unwrap_or(list.len() - 1)
}

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len() - 1)
}

fn store_error_index(kind: StoreErrorKind) -> usize {
    match kind {
        StoreErrorKind::NotFound => 0,
        StoreErrorKind::Exists => 1,
        StoreErrorKind::Denied => 2,
        StoreErrorKind::Unavailable => 3,
        StoreErrorKind::Timeout => 4,
        StoreErrorKind::Invalid => 5,
        StoreErrorKind::Backend => 6,
    }
}

/// A store operation, for store metrics.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    /// `put`.
    Put = 0,
    /// `get`.
    Get = 1,
    /// `list`.
    List = 2,
    /// `delete`.
    Delete = 3,
    /// `health`.
    Health = 4,
}

impl Metrics {
    /// Counts one finished request. Unknown actions and decisions count as
    /// `none`, unknown statuses as `other`.
    pub fn request(
        &self,
        action: Option<&str>,
        decision: Option<&str>,
        status: u16,
        latency: Duration,
    ) {
        let a = index_of(&ACTIONS, action);
        let d = index_of(&DECISIONS, decision);
        let s = status_index(status);
        let i = (a * DECISIONS.len() + d) * STATUSES.len() + s;
        let cells = self.per_thread.local();
        cells.requests[i].fetch_add(1, Ordering::Relaxed);
        cells.latency[a].observe(latency);
    }

    /// Records one store call.
    pub fn store_call(&self, op: StoreOp, latency: Duration, error: Option<StoreErrorKind>) {
        self.store_latency[op as usize].observe(latency);
        if let Some(kind) = error {
            let i = op as usize * STORE_ERRORS.len() + store_error_index(kind);
            self.store_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a policy reload and whether it was accepted.
    pub fn reload(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a TLS certificate reload and whether it was accepted.
    pub fn tls_reload(&self, ok: bool) {
        self.tls[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TLS handshake that failed or timed out.
    pub fn tls_handshake_failed(&self) {
        self.tls[2].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an audit line that could not be written.
    pub fn audit_failure(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Lets the registry report this cache's hits and misses while the
    /// cache lives (it is held weakly: see the field).
    pub fn attach_cache(&self, cache: &Arc<CachedStore>) {
        let _ = self.cache.set(Arc::downgrade(cache));
    }

    /// Requests counted so far with this action (all decisions and statuses).
    pub fn requests_for(&self, action: &str) -> u64 {
        let a = index_of(&ACTIONS, Some(action));
        let per_action = DECISIONS.len() * STATUSES.len();
        (a * per_action..(a + 1) * per_action)
            .map(|i| self.requests_at(i))
            .sum()
    }

    /// One request counter, summed over the shards.
    fn requests_at(&self, i: usize) -> u64 {
        self.per_thread.all().map(|c| c.requests(i)).sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP secret_broker_requests_total Requests answered, by action, decision and status.\n");
        out.push_str("# TYPE secret_broker_requests_total counter\n");
        for (a, action) in ACTIONS.iter().enumerate() {
            for (d, decision) in DECISIONS.iter().enumerate() {
                for (s, status) in STATUSES.iter().enumerate() {
                    let i = (a * DECISIONS.len() + d) * STATUSES.len() + s;
                    let n = self.requests_at(i);
                    if n > 0 {
                        let status = if *status == 0 {
                            "other".to_owned()
                        } else {
                            status.to_string()
                        };
                        let _ = writeln!(
                            out,
                            "secret_broker_requests_total{{action=\"{action}\",decision=\"{decision}\",status=\"{status}\"}} {n}"
                        );
                    }
                }
            }
        }
        out.push_str(
            "# HELP secret_broker_request_duration_seconds Time to answer a request, by action.\n",
        );
        out.push_str("# TYPE secret_broker_request_duration_seconds histogram\n");
        for (a, action) in ACTIONS.iter().enumerate() {
            let parts: Vec<&Histogram> = self.per_thread.all().map(|c| &c.latency[a]).collect();
            Histogram::render_sum(
                &parts,
                &mut out,
                "secret_broker_request_duration_seconds",
                &format!("action=\"{action}\""),
            );
        }
        out.push_str(
            "# HELP secret_broker_store_call_duration_seconds Store call latency, by operation.\n",
        );
        out.push_str("# TYPE secret_broker_store_call_duration_seconds histogram\n");
        for (o, op) in STORE_OPS.iter().enumerate() {
            self.store_latency[o].render(
                &mut out,
                "secret_broker_store_call_duration_seconds",
                &format!("op=\"{op}\""),
            );
        }
        out.push_str(
            "# HELP secret_broker_store_errors_total Store call failures, by operation and kind.\n",
        );
        out.push_str("# TYPE secret_broker_store_errors_total counter\n");
        for (o, op) in STORE_OPS.iter().enumerate() {
            for (k, kind) in STORE_ERRORS.iter().enumerate() {
                let n = self.store_errors[o * STORE_ERRORS.len() + k].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "secret_broker_store_errors_total{{op=\"{op}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        let (hits, misses) = self
            .cache
            .get()
            .and_then(Weak::upgrade)
            .map(|c| {
                let s = c.stats();
                (s.hits, s.misses)
            })
            .unwrap_or((0, 0));
        out.push_str("# HELP secret_broker_cache_hits_total Reads answered from the cache.\n");
        out.push_str("# TYPE secret_broker_cache_hits_total counter\n");
        let _ = writeln!(out, "secret_broker_cache_hits_total {hits}");
        out.push_str("# HELP secret_broker_cache_misses_total Reads that went to the store.\n");
        out.push_str("# TYPE secret_broker_cache_misses_total counter\n");
        let _ = writeln!(out, "secret_broker_cache_misses_total {misses}");
        out.push_str(
            "# HELP secret_broker_audit_failures_total Audit lines that could not be written.\n",
        );
        out.push_str("# TYPE secret_broker_audit_failures_total counter\n");
        let _ = writeln!(
            out,
            "secret_broker_audit_failures_total {}",
            self.audit_failures.load(Ordering::Relaxed)
        );
        out.push_str("# HELP secret_broker_policy_reloads_total Policy reloads, by outcome.\n");
        out.push_str("# TYPE secret_broker_policy_reloads_total counter\n");
        let _ = writeln!(
            out,
            "secret_broker_policy_reloads_total{{outcome=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "secret_broker_policy_reloads_total{{outcome=\"refused\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        out.push_str("# HELP secret_broker_tls_reloads_total TLS listener certificate reloads, by outcome.\n");
        out.push_str("# TYPE secret_broker_tls_reloads_total counter\n");
        for (i, outcome) in ["ok", "refused"].iter().enumerate() {
            let _ = writeln!(
                out,
                "secret_broker_tls_reloads_total{{outcome=\"{outcome}\"}} {}",
                self.tls[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP secret_broker_tls_handshake_failures_total TLS handshakes refused or timed out.\n");
        out.push_str("# TYPE secret_broker_tls_handshake_failures_total counter\n");
        let _ = writeln!(
            out,
            "secret_broker_tls_handshake_failures_total {}",
            self.tls[2].load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        m.request(Some("read"), Some("allow"), 200, Duration::from_micros(40));
        m.request(Some("read"), Some("deny"), 403, Duration::from_micros(40));
        m.request(None, None, 400, Duration::from_micros(10));
        m.request(Some("bogus"), Some("bogus"), 999, Duration::from_secs(9));
        m.store_call(
            StoreOp::Get,
            Duration::from_millis(2),
            Some(StoreErrorKind::Timeout),
        );
        m.reload(true);
        m.reload(false);
        let text = m.render();
        assert!(text.contains(
            "secret_broker_requests_total{action=\"read\",decision=\"allow\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "secret_broker_requests_total{action=\"none\",decision=\"none\",status=\"other\"} 1"
        ));
        assert!(text.contains(
            "secret_broker_request_duration_seconds_bucket{action=\"read\",le=\"0.00005\"} 2"
        ));
        assert!(text.contains("secret_broker_store_errors_total{op=\"get\",kind=\"timeout\"} 1"));
        assert!(text.contains("secret_broker_policy_reloads_total{outcome=\"refused\"} 1"));
        assert_eq!(m.requests_for("read"), 2);
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
