//! The server's Prometheus metrics (text format 0.0.4), served at `GET /metrics` on
//! `[server] metrics` (plain HTTP; loopback unless another address is written out).
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `watchpost_server_requests_total` | `route`, `status` | requests answered |
//! | `watchpost_server_batches_total` | `result` | batches `stored`, `duplicate` (the batch committed last sent again: acknowledged, nothing stored), `replayed` (409: committed numbers with other content), `out_of_order` (409: after a gap), `refused` (other 4xx), `failed` (database) |
//! | `watchpost_server_records_total` | `kind` | records stored: `event`, `outcome`, `ack`; `duplicate` (skipped, stored before) |
//! | `watchpost_server_ingest_lag_seconds` | | histogram: from the agent storing an event to the server committing it |
//! | `watchpost_server_agents` | `state` | agents `online`, `offline`, `revoked` (gauge, counted every 15 s) |
//! | `watchpost_server_db_pool_connections` | `state` | pool connections `open`, `idle`, and requests `waiting` for one (gauge) |
//! | `watchpost_server_db_urgent_pool_connections` | `state` | the same for the urgent lane (polls woken for their own agent, the report worker) |
//! | `watchpost_server_rate_limited_total` | | requests refused with 429 |
//! | `watchpost_server_connections` | | client connections open (gauge) |
//! | `watchpost_server_connections_accepted_total` | `tls` | connections accepted, by how their TLS handshake went: `full`, `resumed` (a session ticket: no certificate exchange), `failed` (refused or timed out), `none` (plain HTTP on loopback) |
//! | `watchpost_server_config_outstanding` | | agents not (yet) running their group's published configuration version (gauge, every 15 s) |
//! | `watchpost_server_commands_pending` | | command deliveries without a result (gauge, every 15 s) |
//! | `watchpost_server_polls_waiting` | | long-polls held by this instance now (gauge) |

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use watchpost_fleet_protocol::ROUTES;

/// Upper bounds of the lag histogram's buckets (seconds).
const LAG_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86_400.0,
];

/// Index into [`Metrics::accepted`].
pub const TLS_FULL: usize = 0;
/// Index into [`Metrics::accepted`].
pub const TLS_RESUMED: usize = 1;
/// Index into [`Metrics::accepted`].
pub const TLS_FAILED: usize = 2;
/// Index into [`Metrics::accepted`].
pub const TLS_NONE: usize = 3;

/// Counters kept by the request handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    /// Batches stored.
    pub batches_stored: AtomicU64,
    /// Batches sent again after a lost answer: the batch committed last, acknowledged
    /// again without storing anything.
    pub batches_duplicate: AtomicU64,
    /// Batches refused because they reuse committed numbers with other content (409
    /// `replayed`).
    pub batches_replayed: AtomicU64,
    /// Batches refused because they start after a gap, or a new stream not at 1 (409
    /// `out_of_order`).
    pub batches_out_of_order: AtomicU64,
    /// Batches refused with another 4xx (malformed, too large, credential).
    pub batches_refused: AtomicU64,
    /// Batches the database failed.
    pub batches_failed: AtomicU64,
    /// Events stored.
    pub events: AtomicU64,
    /// Outcomes stored.
    pub outcomes: AtomicU64,
    /// Acknowledgements stored.
    pub acks: AtomicU64,
    /// Records skipped as duplicates.
    pub duplicates: AtomicU64,
    /// 429 answers.
    pub rate_limited: AtomicU64,
    /// Connections open.
    pub connections: AtomicI64,
    /// Connections accepted by their TLS handshake: full, resumed, failed, none.
    pub accepted: [AtomicU64; 4],
    lag: [AtomicU64; 12],
    lag_count: AtomicU64,
    lag_sum_ms: AtomicU64,
    /// Agents online, offline, revoked.
    pub agents: [AtomicI64; 3],
    /// Agents not running their group's published version.
    pub config_outstanding: AtomicI64,
    /// Command deliveries without a result.
    pub commands_pending: AtomicI64,
    /// Long-polls held now.
    pub polls_waiting: AtomicI64,
}

/// The route label of a path: a known route, else `other`.
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(_, p)| *p == path)
        .map_or("other", |(_, p)| p)
}

impl Metrics {
    /// Counts an answered request.
    pub fn request(&self, route: &'static str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route, status)).or_default() += 1;
    }

    /// Adds one event's lag (ms).
    pub fn lag(&self, ms: i64) {
        let secs = ms.max(0) as f64 / 1000.0;
        for (i, b) in LAG_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.lag[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lag_count.fetch_add(1, Ordering::Relaxed);
        self.lag_sum_ms
            .fetch_add(ms.max(0) as u64, Ordering::Relaxed);
    }

    /// The text exposition, with the state of the main pool and the urgent lane's.
    pub fn render(
        &self,
        pool: &deadpool_postgres::Status,
        urgent: &deadpool_postgres::Status,
    ) -> String {
        let mut o = String::new();
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        o.push_str("# HELP watchpost_server_requests_total Requests answered.\n# TYPE watchpost_server_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "watchpost_server_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        o.push_str("# HELP watchpost_server_batches_total Batches by result.\n# TYPE watchpost_server_batches_total counter\n");
        for (k, v) in [
            ("stored", &self.batches_stored),
            ("duplicate", &self.batches_duplicate),
            ("replayed", &self.batches_replayed),
            ("out_of_order", &self.batches_out_of_order),
            ("refused", &self.batches_refused),
            ("failed", &self.batches_failed),
        ] {
            let _ = writeln!(
                o,
                "watchpost_server_batches_total{{result=\"{k}\"}} {}",
                r(v)
            );
        }
        o.push_str("# HELP watchpost_server_records_total Records stored, by kind; duplicates skipped.\n# TYPE watchpost_server_records_total counter\n");
        for (k, v) in [
            ("event", &self.events),
            ("outcome", &self.outcomes),
            ("ack", &self.acks),
            ("duplicate", &self.duplicates),
        ] {
            let _ = writeln!(o, "watchpost_server_records_total{{kind=\"{k}\"}} {}", r(v));
        }
        o.push_str("# HELP watchpost_server_ingest_lag_seconds From the agent storing an event to the server committing it.\n# TYPE watchpost_server_ingest_lag_seconds histogram\n");
        for (i, b) in LAG_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "watchpost_server_ingest_lag_seconds_bucket{{le=\"{b}\"}} {}",
                r(&self.lag[i])
            );
        }
        let count = r(&self.lag_count);
        let _ = writeln!(
            o,
            "watchpost_server_ingest_lag_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "watchpost_server_ingest_lag_seconds_sum {}",
            r(&self.lag_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(o, "watchpost_server_ingest_lag_seconds_count {count}");
        o.push_str("# HELP watchpost_server_agents Agents by state.\n# TYPE watchpost_server_agents gauge\n");
        for (i, k) in ["online", "offline", "revoked"].iter().enumerate() {
            let _ = writeln!(
                o,
                "watchpost_server_agents{{state=\"{k}\"}} {}",
                self.agents[i].load(Ordering::Relaxed)
            );
        }
        for (name, what, p) in [
            ("db_pool_connections", "Database pool", pool),
            (
                "db_urgent_pool_connections",
                "The database pool's urgent lane",
                urgent,
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP watchpost_server_{name} {what}: connections open and idle, requests waiting.\n# TYPE watchpost_server_{name} gauge"
            );
            for (state, v) in [
                ("open", p.size),
                ("idle", p.available),
                ("waiting", p.waiting),
                ("max", p.max_size),
            ] {
                let _ = writeln!(o, "watchpost_server_{name}{{state=\"{state}\"}} {v}");
            }
        }
        o.push_str("# HELP watchpost_server_rate_limited_total Requests refused with 429.\n# TYPE watchpost_server_rate_limited_total counter\n");
        let _ = writeln!(
            o,
            "watchpost_server_rate_limited_total {}",
            r(&self.rate_limited)
        );
        o.push_str("# HELP watchpost_server_connections Client connections open.\n# TYPE watchpost_server_connections gauge\n");
        let _ = writeln!(
            o,
            "watchpost_server_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        o.push_str("# HELP watchpost_server_connections_accepted_total Connections accepted, by their TLS handshake.\n# TYPE watchpost_server_connections_accepted_total counter\n");
        for (kind, v) in ["full", "resumed", "failed", "none"]
            .iter()
            .zip(&self.accepted)
        {
            let _ = writeln!(
                o,
                "watchpost_server_connections_accepted_total{{tls=\"{kind}\"}} {}",
                r(v)
            );
        }
        for (name, help, v) in [
            (
                "watchpost_server_config_outstanding",
                "Agents not running their group's published configuration version.",
                &self.config_outstanding,
            ),
            (
                "watchpost_server_commands_pending",
                "Command deliveries without a result.",
                &self.commands_pending,
            ),
            (
                "watchpost_server_polls_waiting",
                "Long-polls held by this instance now.",
                &self.polls_waiting,
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        o
    }
}
