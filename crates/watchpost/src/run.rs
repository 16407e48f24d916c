//! `watchpost run`: the daemon.
//!
//! One thread per source reads records as they are written (the tailer blocks on
//! inotify; a listener source receives syslog over UDP/TCP), parses them, runs the
//! filter chain and hands fired actions to the dispatcher's queues. The main thread waits
//! for a stop request (SIGINT/SIGTERM for `run`; the service control manager's Stop for the
//! Windows service, see `service.rs`), then stops listeners and tailers. Positions are
//! checkpointed every `checkpoint_interval_ms` and at shutdown, after the records before
//! them were handed on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use watchpost_actions::{Dispatcher, Job};
use watchpost_event::{Event, Origin};
use watchpost_filters::{Chain, Verdict};
use watchpost_sources::listen::{ListenOptions, Listener, Received};
use watchpost_sources::tail::{
    Encoding, Framing, Record, StartAt as TailStart, TailOptions, Tailer, Waker,
};

use crate::analysis::{Analysis, BaselineHome};
use crate::config::{Config, SourceConfig, StartAt, WhenFull};
use crate::metrics::Metrics;
use crate::pipeline::{SourceRuntime, local_host_name};

/// Counters per source, reported at shutdown and by the metrics endpoint (`metrics.rs`).
#[derive(Default, Debug)]
pub struct SourceCounters {
    /// Records read.
    pub records: AtomicU64,
    /// When the last record arrived (Unix ms; the daemon's start until then), for
    /// `source_silence` checks.
    pub last_record_ms: std::sync::atomic::AtomicI64,
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

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(config: Config, chain: Chain) -> Result<()> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    run_until(config, chain, &stop_rx, || {})
}

/// Runs the daemon until `stop_rx` receives a message (or every sender of it is dropped),
/// then shuts down cleanly: listeners stop, sources checkpoint, queued actions drain.
/// `started` is called once every source is following, just before waiting on `stop_rx`.
/// `run` fires it from SIGINT/SIGTERM, the Windows service from the SCM's Stop.
pub fn run_until(
    mut config: Config,
    chain: Chain,
    stop_rx: &crossbeam_channel::Receiver<()>,
    started: impl FnOnce(),
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    std::fs::create_dir_all(config.state_dir.join("checkpoints"))
        .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
    let local_host = config.agent.host.clone().unwrap_or_else(local_host_name);
    let analysis = Arc::new(Analysis::open(&config, &chain, BaselineHome::State, true)?);
    let dispatcher = Arc::new(
        Dispatcher::start_opts(
            config.actions.clone(),
            watchpost_actions::DispatchOptions {
                state_dir: Some(config.state_dir.clone()),
                outcomes: analysis.outcome_sink(),
            },
        )
        .context("starting actions")?,
    );
    let metrics = config
        .metrics
        .map(|_| Arc::new(Metrics::new(&dispatcher, &analysis)));
    // Bound before any source starts: a taken port fails the start cleanly. Sources
    // register their counters as they start.
    let metrics_server = match (config.metrics, &metrics) {
        (Some(address), Some(m)) => {
            let server = crate::metrics::serve(address, m.clone())
                .with_context(|| format!("[agent] metrics: listening on {address}"))?;
            tracing::info!(address = %server.local_addr(), "serving Prometheus metrics at /metrics");
            Some(server)
        }
        _ => None,
    };
    let chain = Arc::new(chain);
    // Sigma rule sets and their actions' indices.
    let rule_sets = Arc::new(RuleSets {
        actions: config
            .rules
            .iter()
            .map(|set| {
                set.actions
                    .iter()
                    .filter_map(|(n, _)| dispatcher.index_of(n))
                    .collect()
            })
            .collect(),
        action_names: config
            .rules
            .iter()
            .map(|set| {
                let names: Vec<&str> = set.actions.iter().map(|(n, _)| n.as_str()).collect();
                Arc::from(names.join(","))
            })
            .collect(),
        sets: std::mem::take(&mut config.rules),
    });
    let wakers: Arc<Mutex<Vec<Waker>>> = Arc::default();
    let mut threads = Vec::new();
    let mut listeners = Vec::new();
    let mut clocks: std::collections::HashMap<String, Arc<SourceCounters>> =
        std::collections::HashMap::new();
    let mut checks_thread: Option<thread::JoinHandle<()>> = None;
    let mut event_log_stops: Vec<watchpost_sources::winevtlog::StopHandle> = Vec::new();
    // A worker for one source (or check): its parser and plan, the shared rest.
    let new_worker = |rt: SourceRuntime| {
        let counters = Arc::new(SourceCounters::default());
        counters
            .last_record_ms
            .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
        if let Some(m) = &metrics {
            m.add_source(&rt.name, &counters);
        }
        SourceWorker {
            rt,
            chain: chain.clone(),
            dispatcher: dispatcher.clone(),
            analysis: analysis.clone(),
            rules: rule_sets.clone(),
            counters,
            log_fired: config.agent.log_fired,
            when_full: config.agent.when_queue_full,
            stop: stop.clone(),
            stopped_at: Mutex::new(None),
            metrics: metrics.clone(),
        }
    };
    for source in &config.sources {
        let worker = new_worker(SourceRuntime::from_config(source, &local_host, &chain));
        clocks.insert(source.name.clone(), worker.counters.clone());
        let builder = thread::Builder::new().name(format!("source-{}", source.name));
        if let Some(address) = &source.listen {
            let (listener, rx) = Listener::start(ListenOptions::new(address))
                .with_context(|| format!("source `{}`: listening on {address}", source.name))?;
            let proto = address.split("://").next().unwrap_or("net").to_owned();
            tracing::info!(source = %source.name, format = source.format.name(), address = %listener.local_addr(), proto, filters = worker.rt.plan.len(), "listening");
            listeners.push(listener);
            threads.push(builder.spawn(move || {
                worker.receive(&rx, &proto);
                worker
            })?);
            continue;
        }
        if let Some(w) = &source.winevt {
            if let Some((thread, stop)) = follow_event_log(&config, source, w, worker, builder)? {
                threads.push(thread);
                event_log_stops.push(stop);
            }
            continue;
        }
        if source.format == watchpost_sources::Format::Evtx {
            threads.push(follow_evtx(&config, source, worker, builder)?);
            continue;
        }
        if let Some(journal) = &source.journal {
            let thread = follow_journal(&config, source, journal, worker, builder)?;
            threads.push(thread);
            continue;
        }
        let tailer = Tailer::open(tail_options(&config, source))
            .with_context(|| format!("opening source `{}`", source.name))?;
        wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tailer.waker());
        tracing::info!(source = %source.name, format = source.format.name(), paths = %source.paths.join(", "), filters = worker.rt.plan.len(), "following");
        let interval = Duration::from_millis(config.agent.checkpoint_interval_ms.max(10));
        let stop = stop.clone();
        threads.push(builder.spawn(move || {
            worker.follow(tailer, &stop, interval);
            worker
        })?);
    }
    if !config.checks.is_empty() {
        let clocks = Arc::new(clocks);
        let clock: watchpost_checks::SourceClock = Arc::new(move |name: &str| {
            clocks
                .get(name)
                .map(|c| c.last_record_ms.load(Ordering::Relaxed))
        });
        let workers: Vec<SourceWorker> = config
            .checks
            .iter()
            .map(|c| {
                new_worker(SourceRuntime::new(
                    &c.name,
                    watchpost_sources::Format::JsonLines,
                    &local_host,
                    None,
                    &chain,
                ))
            })
            .collect();
        let checks = config.checks.clone();
        let state = config.state_dir.join("checks.json");
        let stop = stop.clone();
        let host = local_host.clone();
        let m = metrics.clone();
        checks_thread = Some(
            thread::Builder::new()
                .name("checks".into())
                .spawn(move || {
                    run_checks(
                        &checks,
                        &workers,
                        &clock,
                        &state,
                        &host,
                        &stop,
                        m.as_deref(),
                    )
                })?,
        );
    }
    let quarantine_timer = start_quarantine_timer(&config, &stop)?;
    tracing::info!(sources = config.sources.len(), checks = config.checks.len(), filters = chain.len(), actions = config.actions.len(), state_dir = %config.state_dir.display(), "watchpost running");
    if threads.is_empty() {
        tracing::warn!("no [[source]] configured: nothing to follow until stopped");
    }
    started();
    // Threshold windows are saved with the checkpoints' rhythm.
    let interval = Duration::from_millis(config.agent.checkpoint_interval_ms.max(10));
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
        analysis.checkpoint();
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(server) = metrics_server {
        server.shutdown();
    }
    for w in wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        w.wake();
    }
    for l in listeners {
        l.shutdown();
    }
    if let Some(t) = checks_thread
        && t.join().is_err()
    {
        tracing::error!("the checks thread panicked");
    }
    if let Some(t) = quarantine_timer
        && t.join().is_err()
    {
        tracing::error!("the quarantine timer panicked");
    }
    for s in &event_log_stops {
        s.stop();
    }
    for t in threads {
        let name = t.thread().name().unwrap_or("source").to_owned();
        match t.join() {
            Ok(worker) => worker.report(),
            Err(_) => {
                tracing::error!(thread = %name, "a source thread panicked; its last checkpoint stands")
            }
        }
    }
    let dispatcher = Arc::try_unwrap(dispatcher)
        .map_err(|_| anyhow::anyhow!("dispatcher still shared at shutdown"))?;
    for s in dispatcher.shutdown(Duration::from_secs(5)) {
        tracing::info!("action totals: {}", watchpost_event::logfmt(&s));
    }
    match Arc::try_unwrap(analysis) {
        Ok(a) => a.close(),
        Err(_) => tracing::error!(
            "baselines still shared at shutdown: pending pairs since the last flush are lost"
        ),
    }
    tracing::info!("watchpost stopped");
    Ok(())
}

/// Lifts an expired quarantine: every second the state file is read again (the CLI may
/// have applied, renewed or released meanwhile; nothing is kept in memory), so an expiry
/// that passed while the daemon was stopped is honoured right at the start. Runs when a
/// `quarantine` action is configured or a state file exists.
fn start_quarantine_timer(
    config: &Config,
    stop: &Arc<AtomicBool>,
) -> Result<Option<thread::JoinHandle<()>>> {
    use watchpost_actions::quarantine::{STATE_FILE, release_if_due};
    let dir = config.state_dir.clone();
    let configured = config.actions.iter().any(|a| a.as_quarantine().is_some());
    if !configured && !dir.join(STATE_FILE).exists() {
        return Ok(None);
    }
    let stop = stop.clone();
    let thread = thread::Builder::new()
        .name("quarantine".into())
        .spawn(move || {
            let mut last_error: Option<String> = None;
            while !stop.load(Ordering::SeqCst) {
                match release_if_due(&dir) {
                    Ok(Some(s)) => {
                        tracing::warn!(action = %s.action, since = %s.since, until = s.until.as_deref().unwrap_or(""), "quarantine expired: released");
                        last_error = None;
                    }
                    Ok(None) => last_error = None,
                    Err(e) => {
                        let m = e.to_string();
                        if last_error.as_ref() != Some(&m) {
                            tracing::error!(error = %m, "quarantine timer: releasing the expired quarantine");
                            last_error = Some(m);
                        }
                    }
                }
                for _ in 0..10 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(Some(thread))
}

/// Starts a journald source's reader (journalctl) and its handling thread.
#[cfg(target_os = "linux")]
fn follow_journal(
    config: &Config,
    source: &SourceConfig,
    journal: &crate::config::JournalConfig,
    worker: SourceWorker,
    builder: thread::Builder,
) -> Result<thread::JoinHandle<SourceWorker>> {
    use watchpost_sources::journald::{Journal, JournalOptions};
    let mut o = JournalOptions::new(checkpoint_path(config, &source.name));
    o.units = journal.units.clone();
    o.identifiers = journal.identifiers.clone();
    o.directory = journal.directory.as_ref().map(Into::into);
    o.start_at = match source.start_at {
        StartAt::Beginning => TailStart::Beginning,
        StartAt::End => TailStart::End,
    };
    let (journal, rx) = Journal::start(o)
        .with_context(|| format!("source `{}`: starting journalctl", source.name))?;
    tracing::info!(source = %source.name, units = %source.journal.as_ref().map(|j| j.units.join(", ")).unwrap_or_default(), filters = worker.rt.plan.len(), "following the journal");
    let interval = Duration::from_millis(config.agent.checkpoint_interval_ms.max(10));
    Ok(builder.spawn(move || {
        worker.journal(journal, &rx, interval);
        worker
    })?)
}

#[cfg(not(target_os = "linux"))]
fn follow_journal(
    _: &Config,
    source: &SourceConfig,
    _: &crate::config::JournalConfig,
    _: SourceWorker,
    _: thread::Builder,
) -> Result<thread::JoinHandle<SourceWorker>> {
    anyhow::bail!(
        "source `{}`: journald sources exist on Linux only",
        source.name
    )
}

/// Starts a Windows Event Log source's thread: it subscribes the channels, hands events on
/// and checkpoints the bookmarks after each batch and when its stop handle fires.
#[cfg(windows)]
fn follow_event_log(
    config: &Config,
    source: &SourceConfig,
    w: &crate::config::WinEvtConfig,
    worker: SourceWorker,
    builder: thread::Builder,
) -> Result<
    Option<(
        thread::JoinHandle<SourceWorker>,
        watchpost_sources::winevtlog::StopHandle,
    )>,
> {
    use watchpost_sources::winevtlog::{WinEvtLog, WinEvtOptions, win::WinApi};
    let mut o = WinEvtOptions::new(
        &source.name,
        w.channels.clone(),
        checkpoint_path(config, &source.name),
    );
    o.start_at = match source.start_at {
        StartAt::Beginning => TailStart::Beginning,
        StartAt::End => TailStart::End,
    };
    o.render_message = w.render_message;
    o.batch_size = w.batch_size;
    let api = WinApi::new()
        .with_context(|| format!("source `{}`: preparing the Event Log API", source.name))?;
    let mut log = WinEvtLog::new(api, o, worker.rt.ctx.clone())
        .with_context(|| format!("source `{}`: following the Windows Event Log", source.name))?;
    let stop = log.stop_handle();
    let channels: Vec<&str> = w.channels.iter().map(|c| c.name.as_str()).collect();
    tracing::info!(source = %source.name, channels = %channels.join(", "), filters = worker.rt.plan.len(), "following the Windows Event Log");
    let thread = builder.spawn(move || {
        worker.event_log(&mut log);
        worker
    })?;
    Ok(Some((thread, stop)))
}

/// Elsewhere a Windows Event Log source is skipped (check-config warned about it).
#[cfg(not(windows))]
fn follow_event_log(
    _: &Config,
    source: &SourceConfig,
    _: &crate::config::WinEvtConfig,
    _: SourceWorker,
    _: thread::Builder,
) -> Result<
    Option<(
        thread::JoinHandle<SourceWorker>,
        watchpost_sources::winevtlog::StopHandle,
    )>,
> {
    tracing::warn!(source = %source.name, "windows_event_log sources run on Windows only: skipped");
    Ok(None)
}

/// Starts an EVTX source's follower and its handling thread.
fn follow_evtx(
    config: &Config,
    source: &SourceConfig,
    worker: SourceWorker,
    builder: thread::Builder,
) -> Result<thread::JoinHandle<SourceWorker>> {
    use watchpost_sources::evtx_follow::{EvtxFollowOptions, EvtxFollower};
    let mut o = EvtxFollowOptions::new(source.paths.clone(), checkpoint_path(config, &source.name));
    o.start_at = match source.start_at {
        StartAt::Beginning => TailStart::Beginning,
        StartAt::End => TailStart::End,
    };
    let (follower, rx) = EvtxFollower::start(o)
        .with_context(|| format!("source `{}`: following EVTX files", source.name))?;
    tracing::info!(source = %source.name, paths = %source.paths.join(", "), filters = worker.rt.plan.len(), "following EVTX files");
    let interval = Duration::from_millis(config.agent.checkpoint_interval_ms.max(10));
    Ok(builder.spawn(move || {
        worker.evtx(follower, &rx, interval);
        worker
    })?)
}

/// The checks thread: runs each check on its interval (and again when a problem's grace
/// ends), turns reported changes into events for the chain, saves what was reported.
fn run_checks(
    checks: &[watchpost_checks::CheckSpec],
    workers: &[SourceWorker],
    clock: &watchpost_checks::SourceClock,
    state: &std::path::Path,
    host: &str,
    stop: &AtomicBool,
    metrics: Option<&Metrics>,
) {
    use watchpost_checks::{Tracker, event, observe};
    let mut tracker = match std::fs::read_to_string(state) {
        Ok(text) => Tracker::from_json(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %state.display(), error = %e, "check state unreadable: starting afresh");
            Tracker::default()
        }),
        Err(_) => Tracker::default(),
    };
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    tracker.retain(&names);
    let start = Instant::now();
    // Each check's next run; the first a second after start (sources open first).
    let mut due: Vec<Instant> = checks
        .iter()
        .map(|_| start + Duration::from_secs(1))
        .collect();
    let mut verdict = Verdict::default();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let mut changed = false;
        for (i, check) in checks.iter().enumerate() {
            if now < due[i] {
                continue;
            }
            let obs = observe(check, clock);
            if let Some(m) = metrics {
                m.check_status(&check.name, &obs.status);
            }
            let now_ms = jiff::Timestamp::now().as_millisecond();
            due[i] = now + check.interval;
            if let Some(previous) = tracker.observe(&check.name, &obs.status, now_ms, check.grace) {
                changed = true;
                tracing::info!(check = %check.name, status = %obs.status, previous = %previous, detail = %obs.detail, "check changed");
                let e = event(check, &obs, &previous, host);
                workers[i].counters.records.fetch_add(1, Ordering::Relaxed);
                workers[i].handle_event(e, &mut verdict, Instant::now());
            } else if let Some(until) = tracker.pending_until(&check.name, check.grace) {
                // Look again when the grace ends, not a whole interval later.
                let wait = Duration::from_millis((until - now_ms).max(0) as u64);
                due[i] = due[i].min(now + wait);
            }
        }
        if changed
            && let Err(e) =
                watchpost_sources::tail::write_atomic(state, tracker.to_json().as_bytes())
        {
            tracing::error!(file = %state.display(), error = %e, "writing check state");
        }
        let next = due
            .iter()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(1));
        let nap = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        thread::sleep(nap);
    }
    for w in workers {
        w.report();
    }
}

fn checkpoint_path(config: &Config, source: &str) -> std::path::PathBuf {
    config
        .state_dir
        .join("checkpoints")
        .join(format!("{}.json", sanitize(source)))
}

fn tail_options(config: &Config, s: &SourceConfig) -> TailOptions {
    let checkpoint = checkpoint_path(config, &s.name);
    let mut o = TailOptions::new(s.paths.clone(), checkpoint);
    o.exclude = s.exclude.clone();
    o.start_at = match s.start_at {
        StartAt::Beginning => TailStart::Beginning,
        StartAt::End => TailStart::End,
    };
    o.framing = if s.format.is_sep_binary() {
        Framing::SepBinary
    } else {
        Framing::Lines
    };
    o.max_record_bytes = s.max_line_bytes;
    o.encoding = match s.encoding.as_str() {
        "utf-8" => Encoding::Utf8,
        "utf-16le" => Encoding::Utf16Le,
        "utf-16be" => Encoding::Utf16Be,
        _ => Encoding::Auto,
    };
    o
}

/// A file-name-safe form of a source name.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The Sigma rule sets with their actions resolved.
struct RuleSets {
    sets: Vec<crate::rules::RuleSet>,
    actions: Vec<Vec<usize>>,
    action_names: Vec<Arc<str>>,
}

/// What a job says fired it.
struct Named {
    name: Arc<str>,
    action_names: Arc<str>,
}

struct SourceWorker {
    rt: SourceRuntime,
    chain: Arc<Chain>,
    dispatcher: Arc<Dispatcher>,
    analysis: Arc<Analysis>,
    rules: Arc<RuleSets>,
    counters: Arc<SourceCounters>,
    log_fired: bool,
    when_full: WhenFull,
    stop: Arc<AtomicBool>,
    /// When the stop request was first seen while waiting on a full queue.
    stopped_at: Mutex<Option<Instant>>,
    /// With `[agent] metrics`: where reaction times go.
    metrics: Option<Arc<Metrics>>,
}

/// How long a source keeps waiting on a full action queue after a stop request.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

impl SourceWorker {
    fn follow(&self, mut tailer: Tailer, stop: &AtomicBool, interval: Duration) {
        let mut verdict = Verdict::default();
        let mut last_checkpoint = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let mut sink = |r: Record<'_>| self.handle(r, &mut verdict);
            if let Err(e) = tailer.read_available(&mut sink) {
                tracing::warn!(source = %self.rt.name, error = %e, "reading");
            }
            if last_checkpoint.elapsed() >= interval {
                self.checkpoint(&mut tailer);
                last_checkpoint = Instant::now();
            }
            tailer.wait(interval);
        }
        self.checkpoint(&mut tailer);
        tracing::info!(source = %self.rt.name, "tail totals: {}", watchpost_event::logfmt(&tailer.stats()));
    }

    fn checkpoint(&self, tailer: &mut Tailer) {
        if let Err(e) = tailer.checkpoint() {
            tracing::error!(source = %self.rt.name, error = %e, "writing checkpoint");
        }
    }

    fn handle(&self, record: Record<'_>, verdict: &mut Verdict) {
        if record.is_header {
            return;
        }
        let origin = Origin {
            place: record.path.to_string_lossy().as_ref().into(),
            offset: record.offset,
        };
        self.handle_bytes(record.bytes, origin, verdict, Instant::now());
    }

    /// Parses one record (a line, a binary-log record, a received message) and acts on it.
    /// `read_at`: when it was read or received (the start of its reaction time).
    fn handle_bytes(&self, bytes: &[u8], origin: Origin, verdict: &mut Verdict, read_at: Instant) {
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_record_ms
            .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
        let place = origin.place.clone();
        let offset = origin.offset;
        match self.rt.parser.parse(&self.rt.ctx, bytes) {
            Ok(mut event) => {
                event.origin = Some(origin);
                self.handle_event(event, verdict, read_at);
            }
            Err(e) => {
                let n = self.counters.parse_errors.fetch_add(1, Ordering::Relaxed);
                if n < 100 || n.is_power_of_two() {
                    tracing::warn!(source = %self.rt.name, place = %place, offset, errors_so_far = n + 1, "unparsable record: {e}");
                }
            }
        }
    }

    /// Runs the chain over a parsed event (anomaly filters and thresholds asking the
    /// analysis), stores what matched, and hands fired actions on.
    fn handle_event(&self, mut event: Event, verdict: &mut Verdict, read_at: Instant) {
        let mut judge = self.analysis.judge();
        self.chain
            .evaluate_with(&self.rt.plan, &mut event, verdict, &mut judge);
        if !verdict.flagged.is_empty() {
            self.counters.anomalies.fetch_add(1, Ordering::Relaxed);
        }
        if verdict.excluded_by.is_some() {
            self.counters.excluded.fetch_add(1, Ordering::Relaxed);
        } else if verdict.fired.is_empty() && verdict.judged.is_empty() {
            // Most events: nothing to store or send; only Sigma rule sets may want it.
            self.sigma(&event, &verdict.withheld, read_at);
        } else {
            // Shared by the store and every action job (no copy of the event).
            let event = Arc::new(event);
            let stored = self
                .analysis
                .store(&self.chain, &event, verdict, &judge.verdicts);
            self.sigma(&event, &verdict.withheld, read_at);
            for &fi in &verdict.fired {
                self.fire(fi, &event, &verdict.withheld, stored, read_at);
            }
        }
        // Matches a threshold filter held back, released by this one.
        for (fi, held) in judge.released.drain(..) {
            let f = self.chain.filter(fi);
            let held = Arc::new(held);
            let stored = self.analysis.store_named(&f.name, &held, f.require_ack);
            self.fire(fi, &held, &[], stored, read_at);
        }
    }

    /// A journald source: handles entries, committing each cursor after its event was
    /// handed on; checkpoints every `interval` and when stopping.
    #[cfg(target_os = "linux")]
    fn journal(
        &self,
        journal: watchpost_sources::journald::Journal,
        rx: &crossbeam_channel::Receiver<watchpost_sources::journald::Entry>,
        interval: Duration,
    ) {
        let mut verdict = Verdict::default();
        let place: Arc<str> = "journal".into();
        let mut last_checkpoint = Instant::now();
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            match rx.recv_timeout(interval) {
                Ok(entry) => {
                    let origin = Origin {
                        place: place.clone(),
                        offset: n,
                    };
                    self.handle_bytes(&entry.json, origin, &mut verdict, Instant::now());
                    journal.commit(&entry.cursor);
                    n += 1;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            if last_checkpoint.elapsed() >= interval {
                if let Err(e) = journal.checkpoint() {
                    tracing::error!(source = %self.rt.name, error = %e, "writing journal checkpoint");
                }
                last_checkpoint = Instant::now();
            }
        }
        journal.shutdown();
    }

    /// An EVTX source: handles records, committing each after its event was handed on;
    /// checkpoints every `interval` and when stopping.
    fn evtx(
        &self,
        follower: watchpost_sources::evtx_follow::EvtxFollower,
        rx: &crossbeam_channel::Receiver<watchpost_sources::evtx_follow::EvtxRecord>,
        interval: Duration,
    ) {
        let mut verdict = Verdict::default();
        let mut last_checkpoint = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            match rx.recv_timeout(interval) {
                Ok(r) => {
                    let origin = Origin {
                        place: r.path.to_string_lossy().as_ref().into(),
                        offset: r.record_id,
                    };
                    self.handle_bytes(r.xml.as_bytes(), origin, &mut verdict, Instant::now());
                    follower.commit(&r.path, r.record_id);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            if last_checkpoint.elapsed() >= interval {
                if let Err(e) = follower.checkpoint() {
                    tracing::error!(source = %self.rt.name, error = %e, "writing EVTX checkpoint");
                }
                last_checkpoint = Instant::now();
            }
        }
        follower.shutdown();
    }

    /// A Windows Event Log source: the loop parses each event and hands it here; the
    /// bookmark moves once a whole batch was handed on. Runs until the stop handle fires.
    #[cfg(windows)]
    fn event_log<A: watchpost_sources::winevtlog::EventLogApi>(
        &self,
        log: &mut watchpost_sources::winevtlog::WinEvtLog<A>,
    ) {
        let mut verdict = Verdict::default();
        log.run(&mut |event| {
            self.counters.records.fetch_add(1, Ordering::Relaxed);
            self.counters
                .last_record_ms
                .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
            self.handle_event(event, &mut verdict, Instant::now());
        });
        let st = log.stats();
        for c in [&self.counters.records, &self.counters.parse_errors] {
            c.fetch_add(st.malformed, Ordering::Relaxed);
        }
    }

    /// A listener source: handles received messages until the listener shuts down.
    /// `offset` of a received event is its number since start; `place` the sender.
    fn receive(&self, rx: &crossbeam_channel::Receiver<Received>, proto: &str) {
        let mut verdict = Verdict::default();
        for (n, msg) in rx.iter().enumerate() {
            let origin = Origin {
                place: format!("{proto}://{}", msg.peer).into(),
                offset: n as u64,
            };
            self.handle_bytes(&msg.bytes, origin, &mut verdict, msg.at);
        }
    }

    /// Offers the event to every Sigma rule set; each detection is stored and fires its
    /// set's actions (but those `withheld`).
    fn sigma(&self, event: &Event, withheld: &[usize], read_at: Instant) {
        if self.rules.sets.is_empty() {
            return;
        }
        let mut scratch = Vec::new();
        for (si, set) in self.rules.sets.iter().enumerate() {
            for d in set.detect(event, &mut scratch) {
                let detected = Arc::new(d.event);
                let stored = self.analysis.store_named(&set.name, &detected, false);
                self.counters.fired.fetch_add(1, Ordering::Relaxed);
                let named = Named {
                    name: d.title.clone(),
                    action_names: self.rules.action_names[si].clone(),
                };
                self.hand_on(
                    &self.rules.actions[si],
                    &named,
                    &detected,
                    withheld,
                    stored,
                    read_at,
                );
            }
        }
    }

    /// Hands `event` to the actions of filter `fi` (but those `withheld`).
    fn fire(
        &self,
        fi: usize,
        event: &Arc<Event>,
        withheld: &[usize],
        stored: Option<u64>,
        read_at: Instant,
    ) {
        let filter = self.chain.filter(fi);
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        let named = Named {
            name: filter.name.clone(),
            action_names: filter.action_names.clone(),
        };
        self.hand_on(&filter.actions, &named, event, withheld, stored, read_at);
    }

    /// Queues `event` for `actions` (but those `withheld`) as fired by `filter`.
    fn hand_on(
        &self,
        actions: &[usize],
        filter: &Named,
        event: &Arc<Event>,
        withheld: &[usize],
        stored: Option<u64>,
        read_at: Instant,
    ) {
        for &ai in actions {
            if withheld.contains(&ai) {
                continue;
            }
            let job = Job {
                event: event.clone(),
                filter: filter.name.clone(),
                actions: filter.action_names.clone(),
                stored,
            };
            let queued = match self.when_full {
                WhenFull::Drop => self.dispatcher.submit(ai, job),
                WhenFull::Wait => self.dispatcher.submit_wait(ai, job, &|| self.give_up()),
            };
            if !queued {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            } else if let Some(m) = &self.metrics {
                m.reaction.observe(read_at.elapsed());
            }
        }
        if self.log_fired {
            log_fired(event, &filter.name, &filter.action_names);
        }
    }

    /// While waiting on a full queue: give up only some time after a stop request.
    fn give_up(&self) -> bool {
        if !self.stop.load(Ordering::SeqCst) {
            return false;
        }
        let mut at = self.stopped_at.lock().unwrap_or_else(|e| e.into_inner());
        at.get_or_insert_with(Instant::now).elapsed() >= SHUTDOWN_WAIT
    }

    fn report(&self) {
        let c = &self.counters;
        tracing::info!(
            source = %self.rt.name,
            records = c.records.load(Ordering::Relaxed),
            parse_errors = c.parse_errors.load(Ordering::Relaxed),
            fired = c.fired.load(Ordering::Relaxed),
            excluded = c.excluded.load(Ordering::Relaxed),
            anomalies = c.anomalies.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            "source totals"
        );
    }
}

fn log_fired(event: &Event, filter: &str, actions: &str) {
    let time = event
        .time
        .map(watchpost_event::format_time)
        .unwrap_or_default();
    let origin = event
        .origin
        .as_ref()
        .map(|o| format!("{}:{}", o.place, o.offset))
        .unwrap_or_default();
    tracing::info!(filter, actions, source = %event.source, host = %event.host, time, origin, "fired");
}
