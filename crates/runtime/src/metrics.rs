//! `[agent] metrics`: the daemon's counters in the Prometheus text format (0.0.4) at
//! `GET /metrics`.
//!
//! [`Metrics`] reads the counters the daemon keeps anyway (per source: [`SourceCounters`],
//! kept by name across configuration generations; per action: [`Dispatcher::stats`]; the
//! event store's writer; the baselines) when it is scraped, and owns a few things of its
//! own: the reaction-time histogram, the time from a record being read (or received by a
//! listener) to its action job being queued, in lock-free atomic buckets, and the
//! configuration's generation and reload counts. [`Endpoint`] answers on a std
//! `TcpListener` (a supervised task), one connection at a time: no async runtime,
//! requests up to 8 KiB, 1 s to send one.
//!
//! The endpoint is off unless configured. A bare port (`"9464"`, `":9464"`) or
//! `localhost` binds loopback (127.0.0.1); any other address must be written out
//! (`"0.0.0.0:9464"`, `"[::1]:9464"`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use watchpost_actions::Dispatcher;
use watchpost_support::lock;

use crate::analysis::Analysis;
use crate::supervisor::{StopSignal, Task};

/// Counters per source (and per check), reported at shutdown and by the metrics
/// endpoint. Kept by name: a source restarted by a reload counts on.
#[derive(Default, Debug)]
pub struct SourceCounters {
    /// Records read.
    pub records: AtomicU64,
    /// When the last record arrived (Unix ms; the daemon's start until then), for
    /// `source_silence` checks.
    pub last_record_ms: AtomicI64,
    /// Records that did not parse.
    pub parse_errors: AtomicU64,
    /// Filter firings.
    pub fired: AtomicU64,
    /// Events excluded by an exclude filter.
    pub excluded: AtomicU64,
    /// Action hand-offs refused because a queue was full.
    pub dropped: AtomicU64,
    /// Events an anomaly filter flagged.
    pub anomalies: AtomicU64,
}

/// The configuration's generation and what reloads did.
#[derive(Debug, Default)]
pub struct ConfigCounters {
    /// The generation now running.
    pub generation: AtomicU64,
    /// When the last reload was applied (Unix ms; 0: never).
    pub last_reload_ms: AtomicI64,
    /// Reloads that changed something.
    pub applied: AtomicU64,
    /// Reloads whose configuration had errors (nothing changed).
    pub rejected: AtomicU64,
    /// Reloads of a configuration equal to the running one.
    pub unchanged: AtomicU64,
    /// What runs, for the fleet heartbeat.
    pub running: Mutex<Running>,
}

/// The running configuration as a fleet heartbeat reports it.
#[derive(Debug, Default, Clone)]
pub struct Running {
    /// A digest of its text.
    pub digest: String,
    /// Its `check-config` warnings.
    pub warnings: Vec<String>,
    /// Its sources and checks: the counters of parts a reload removed stay for the
    /// metrics endpoint (counters never go back) but are not reported as running.
    pub parts: Vec<String>,
}

impl Running {
    /// What `loaded` runs.
    pub fn of(
        loaded: &watchpost_config::Config,
        warnings: &watchpost_config::Diagnostics,
    ) -> Running {
        Running {
            digest: loaded.digest.clone(),
            warnings: warnings
                .items
                .iter()
                .filter(|d| d.severity == watchpost_config::Severity::Warning)
                .map(|d| d.message.clone())
                .collect(),
            parts: loaded
                .sources
                .iter()
                .map(|s| s.name.clone())
                .chain(loaded.checks.iter().map(|c| c.name.clone()))
                .collect(),
        }
    }
}

/// Upper bounds of the reaction-time buckets, in nanoseconds: 10 µs … 1 s.
const BOUNDS_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// A per-action metric: name, type, help, and how to read it from the stats.
type PerAction = (
    &'static str,
    &'static str,
    &'static str,
    fn(&watchpost_actions::ActionStats) -> u64,
);

/// A histogram of durations with fixed buckets; observing is three relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        family(out, name, "histogram", help);
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match BOUNDS_NS.get(i) {
                Some(&ns) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", seconds(ns));
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_ns.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_sum {}", sum as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Nanoseconds as a decimal number of seconds without exponent (`0.00001`, `1`).
fn seconds(ns: u64) -> String {
    let whole = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// What a scrape reads.
#[derive(Debug)]
pub struct Metrics {
    sources: Mutex<BTreeMap<String, Arc<SourceCounters>>>,
    /// Weak: the daemon takes the dispatcher and the analysis back at shutdown.
    dispatcher: Weak<Mutex<Option<Dispatcher>>>,
    analysis: Weak<Analysis>,
    /// Check name → the status it last observed.
    checks: Mutex<BTreeMap<String, String>>,
    /// Record read → action job queued.
    pub reaction: Histogram,
    /// Generation and reloads.
    pub config: ConfigCounters,
}

impl Metrics {
    /// Metrics over the daemon's dispatcher and analysis (baselines, store).
    pub fn new(dispatcher: &Arc<Mutex<Option<Dispatcher>>>, analysis: &Arc<Analysis>) -> Metrics {
        Metrics {
            sources: Mutex::default(),
            dispatcher: Arc::downgrade(dispatcher),
            analysis: Arc::downgrade(analysis),
            checks: Mutex::default(),
            reaction: Histogram::default(),
            config: ConfigCounters::default(),
        }
    }

    /// The counters of a source (or a check), labelled `source`: the same ones for the
    /// same name, across reloads.
    pub fn source(&self, name: &str) -> Arc<SourceCounters> {
        lock(&self.sources)
            .entry(name.to_owned())
            .or_insert_with(|| {
                let c = SourceCounters::default();
                c.last_record_ms
                    .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
                Arc::new(c)
            })
            .clone()
    }

    /// The counters of a source, if it ever ran.
    pub fn source_if_known(&self, name: &str) -> Option<Arc<SourceCounters>> {
        lock(&self.sources).get(name).cloned()
    }

    /// Records the status a check observed.
    pub fn check_status(&self, check: &str, status: &str) {
        let mut checks = lock(&self.checks);
        match checks.get_mut(check) {
            Some(s) if s == status => {}
            Some(s) => status.clone_into(s),
            None => {
                checks.insert(check.to_owned(), status.to_owned());
            }
        }
    }

    /// The counters a fleet heartbeat carries (the running configuration, its sources,
    /// actions and checks, baselines, the store); the fleet client adds version, host and
    /// shipping.
    pub fn heartbeat(&self) -> watchpost_fleet_protocol::Heartbeat {
        use watchpost_fleet_protocol::{ActionStatus, CheckStatus, SourceStatus, StoreStatus};
        let running = lock(&self.config.running).clone();
        let runs = |name: &str| running.parts.iter().any(|p| p == name);
        let mut hb = watchpost_fleet_protocol::Heartbeat {
            config_generation: Some(running.digest.clone()),
            sources: lock(&self.sources)
                .iter()
                .filter(|(name, _)| runs(name))
                .map(|(name, c)| SourceStatus {
                    name: name.clone(),
                    records: c.records.load(Ordering::Relaxed),
                    errors: c.parse_errors.load(Ordering::Relaxed),
                    last_record_ms: Some(c.last_record_ms.load(Ordering::Relaxed)),
                })
                .collect(),
            checks: lock(&self.checks)
                .iter()
                .filter(|(name, _)| runs(name))
                .map(|(name, status)| CheckStatus {
                    name: name.clone(),
                    status: status.clone(),
                    detail: String::new(),
                })
                .collect(),
            ..Default::default()
        };
        hb.config_diagnostics = running.warnings;
        let stats = self
            .dispatcher
            .upgrade()
            .and_then(|d| lock(&d).as_ref().map(Dispatcher::stats));
        hb.actions = stats
            .unwrap_or_default()
            .into_iter()
            .map(|s| ActionStatus {
                name: s.name,
                kind: s.kind.to_owned(),
                ok: s.ok,
                failed: s.failed,
                dropped: s.dropped,
                queued: s.queued as u64,
                durable_queued: s.durable_queued,
            })
            .collect();
        if let Some(a) = self.analysis.upgrade() {
            hb.baseline_pairs = a.baseline_pairs();
            if let Some(s) = a.store_stats() {
                hb.store = StoreStatus {
                    stored: s.stored,
                    dropped: s.dropped,
                    failed: s.failed,
                };
            }
        }
        hb
    }

    /// Everything in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let sources: Vec<(String, Arc<SourceCounters>)> = lock(&self.sources)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        type Pick = fn(&SourceCounters) -> &AtomicU64;
        let per_source: [(&str, &str, Pick); 5] = [
            (
                "watchpost_source_records_total",
                "Records read or received.",
                |c| &c.records,
            ),
            (
                "watchpost_source_parse_errors_total",
                "Records that did not parse.",
                |c| &c.parse_errors,
            ),
            (
                "watchpost_filter_fired_total",
                "Filter firings, by the source of the event.",
                |c| &c.fired,
            ),
            (
                "watchpost_events_excluded_total",
                "Events dropped by an exclude filter.",
                |c| &c.excluded,
            ),
            (
                "watchpost_anomalies_total",
                "Events an anomaly filter flagged.",
                |c| &c.anomalies,
            ),
        ];
        for (name, help, pick) in per_source {
            family(&mut out, name, "counter", help);
            for (source, c) in &sources {
                let v = pick(c).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{source=\"{}\"}} {v}", escape(source));
            }
        }
        let stats = self
            .dispatcher
            .upgrade()
            .and_then(|d| lock(&d).as_ref().map(Dispatcher::stats));
        if let Some(stats) = stats {
            let name = "watchpost_action_jobs_total";
            family(
                &mut out,
                name,
                "counter",
                "Action jobs by outcome (failed excludes timed_out; dropped: never attempted; suppressed: held back by throttle or dedupe).",
            );
            for s in &stats {
                let a = escape(&s.name);
                let outcomes = [
                    ("ok", s.ok),
                    ("failed", s.failed.saturating_sub(s.timed_out)),
                    ("timed_out", s.timed_out),
                    ("dropped", s.dropped),
                    ("suppressed", s.suppressed),
                ];
                for (outcome, v) in outcomes {
                    let _ = writeln!(out, "{name}{{action=\"{a}\",outcome=\"{outcome}\"}} {v}");
                }
            }
            let name = "watchpost_action_queue_depth";
            family(
                &mut out,
                name,
                "gauge",
                "Jobs waiting in the action's queue.",
            );
            for s in &stats {
                let _ = writeln!(out, "{name}{{action=\"{}\"}} {}", escape(&s.name), s.queued);
            }
            let per_action: [PerAction; 4] = [
                (
                    "watchpost_action_attempts_total",
                    "counter",
                    "Delivery attempts of actions with a retry queue.",
                    |s| s.attempts,
                ),
                (
                    "watchpost_action_retries_total",
                    "counter",
                    "Attempts that failed transiently and are tried again.",
                    |s| s.retries,
                ),
                (
                    "watchpost_action_durable_queue_depth",
                    "gauge",
                    "Jobs in the action's retry queue (on disk, or in memory when the state directory is unusable).",
                    |s| s.durable_queued,
                ),
                (
                    "watchpost_action_queue_error",
                    "gauge",
                    "1 when the action's retry queue cannot use the disk (jobs kept in memory only).",
                    |s| u64::from(s.queue_error.is_some()),
                ),
            ];
            for (name, kind, help, pick) in per_action {
                family(&mut out, name, kind, help);
                for s in &stats {
                    let _ = writeln!(out, "{name}{{action=\"{}\"}} {}", escape(&s.name), pick(s));
                }
            }
        }
        if let Some(a) = self.analysis.upgrade() {
            let (store, pairs) = (a.store_stats(), a.baseline_pairs());
            drop(a);
            if let Some(st) = store {
                let name = "watchpost_store_events_total";
                family(
                    &mut out,
                    name,
                    "counter",
                    "Events handed to the event store.",
                );
                for (outcome, v) in [
                    ("stored", st.stored),
                    ("dropped", st.dropped),
                    ("failed", st.failed),
                ] {
                    let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {v}");
                }
                let name = "watchpost_store_outcomes_dropped_total";
                family(
                    &mut out,
                    name,
                    "counter",
                    "Action outcomes not stored because the store's queue was full.",
                );
                let _ = writeln!(out, "{name} {}", st.outcomes_dropped);
            }
            if let Some(pairs) = pairs {
                let name = "watchpost_baseline_pairs";
                family(&mut out, name, "gauge", "Pairs the anomaly baselines hold.");
                let _ = writeln!(out, "{name} {pairs}");
            }
        }
        let checks = lock(&self.checks).clone();
        if !checks.is_empty() {
            let name = "watchpost_check_status";
            family(
                &mut out,
                name,
                "gauge",
                "1 for the status each check observed last (before its grace).",
            );
            for (check, status) in &checks {
                let _ = writeln!(
                    out,
                    "{name}{{check=\"{}\",status=\"{}\"}} 1",
                    escape(check),
                    escape(status)
                );
            }
        }
        let c = &self.config;
        for (name, kind, help, v) in [
            (
                "watchpost_config_generation",
                "gauge",
                "The configuration generation running (1 at start, one more per applied reload).",
                c.generation.load(Ordering::Relaxed) as i64,
            ),
            (
                "watchpost_config_last_reload_timestamp_seconds",
                "gauge",
                "When the last reload was applied (Unix time; 0: none since start).",
                c.last_reload_ms.load(Ordering::Relaxed) / 1000,
            ),
        ] {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
        let name = "watchpost_config_reloads_total";
        family(
            &mut out,
            name,
            "counter",
            "Reload attempts by outcome (applied, rejected: the configuration had errors and nothing changed, unchanged).",
        );
        for (outcome, v) in [
            ("applied", &c.applied),
            ("rejected", &c.rejected),
            ("unchanged", &c.unchanged),
        ] {
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{outcome}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.reaction.render(
            &mut out,
            "watchpost_reaction_seconds",
            "Time from a record being read or received to its action job being queued.",
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value: `\`, `"` and line feeds escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The largest request read (request line and headers).
const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The endpoint: a bound listener, answering scrapes as a supervised [`Task`].
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// Binds `addr` (a taken port fails here, before anything else starts).
    pub fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Endpoint {
            listener,
            addr,
            metrics,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Task for Endpoint {
    fn name(&self) -> String {
        "metrics".into()
    }

    /// Wakes `accept` with a connection of its own.
    fn stopper(&self) -> Option<watchpost_sources::StopHandle> {
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        Some(watchpost_sources::StopHandle::new(move || {
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        }))
    }

    fn run(self: Box<Self>, stop: StopSignal) {
        for conn in self.listener.incoming() {
            if stop.is_raised() {
                break;
            }
            match conn {
                Ok(stream) => answer(stream, &self.metrics),
                Err(e) => {
                    tracing::debug!(error = %e, "metrics: accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Reads one request and answers it; the connection is closed afterwards.
fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    let head_end = loop {
        if let Some(end) = header_end(&buf[..n]) {
            break end;
        }
        if n == buf.len() {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                "too large\n",
            );
            return;
        }
        match stream.read(&mut buf[n..]) {
            Ok(0) | Err(_) => return,
            Ok(r) => n += r,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut words = head.lines().next().unwrap_or("").split_ascii_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        respond(&mut stream, "404 Not Found", "", "only /metrics is here\n");
    } else if method != "GET" {
        respond(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "only GET\n",
        );
    } else {
        let body = metrics.render();
        respond(&mut stream, "200 OK", "", &body);
    }
}

/// Where the request's headers end (after the blank line), if they do within `b`.
fn header_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
    // Closing with unread input would reset the connection and could destroy the answer
    // before the client reads it: end our side, then read what is left (for a second).
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = std::time::Instant::now() + READ_TIMEOUT;
    let mut sink = [0u8; 4096];
    let mut left = 64 << 10;
    while left > 0 && std::time::Instant::now() < until {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n.min(left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.00025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        assert!(out.contains("x_sum 2.000315\n"), "{out}");
        assert!(out.starts_with("# HELP x help\n# TYPE x histogram\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn requests_end_at_the_blank_line() {
        assert_eq!(header_end(b"GET / HTTP/1.1\r\n\r\nxx"), Some(18));
        assert_eq!(header_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
