//! The daemon's tasks: one per source, the checks, the quarantine timer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use watchpost_actions::Ticket;
use watchpost_config::{Config, SourceConfig, StartAt};
use watchpost_sources::tail::{Encoding, Framing, StartAt as TailStart, TailOptions, Tailer};
use watchpost_sources::{Format, Source, StopHandle};

use crate::analysis::Analysis;
use crate::metrics::Metrics;
use crate::pipeline::{Current, Pipeline, SourceKind};
use crate::progress::Ledger;
use crate::sink::DaemonSink;
use crate::supervisor::{StopSignal, Supervisor, Task};

/// The task name of a source.
pub fn source_task(name: &str) -> String {
    format!("source-{name}")
}

/// What every source task shares.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The generation cell.
    pub current: Arc<Current>,
    /// Baselines, thresholds, store.
    pub analysis: Arc<Analysis>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// This machine's name (or `[agent] host`).
    pub local_host: String,
}

/// One source: reads, hands each record to its pipeline, checkpoints every interval and
/// when it stops.
pub struct SourceTask {
    name: String,
    source: Box<dyn Source>,
    config: SourceConfig,
    shared: Shared,
    interval: Duration,
}

impl SourceTask {
    /// A task for an opened source.
    pub fn new(
        config: &SourceConfig,
        source: Box<dyn Source>,
        shared: &Shared,
        interval: Duration,
    ) -> SourceTask {
        SourceTask {
            name: config.name.clone(),
            source,
            config: config.clone(),
            shared: shared.clone(),
            interval,
        }
    }
}

impl Task for SourceTask {
    fn name(&self) -> String {
        source_task(&self.name)
    }

    fn stopper(&self) -> Option<StopHandle> {
        Some(self.source.stopper())
    }

    fn run(self: Box<Self>, stop: StopSignal) {
        let SourceTask {
            mut source,
            config,
            shared,
            interval,
            ..
        } = *self;
        let mut pipeline = Pipeline::new(
            SourceKind::Configured(&config),
            &shared.local_host,
            shared.current.clone(),
            shared.analysis.clone(),
        );
        let mut sink = DaemonSink::new(&config.name, &shared.metrics, stop.clone());
        let ledger = source.progress_file().map(Ledger::new);
        let mut last_checkpoint = Instant::now();
        while !stop.is_raised() {
            pipeline.refresh();
            let deadline = last_checkpoint + interval;
            let batch = ledger.as_ref().map(Ledger::begin);
            if let Some(b) = &batch {
                sink.set_ticket(b.ticket());
            }
            // The store's writer and the log thread are woken after the records of this
            // poll were judged and their actions run or queued, not before the send.
            let held = watchpost_support::defer_wakes();
            sink.begin_read();
            if let Err(e) = source.poll(deadline, &mut |item| pipeline.handle(item, &mut sink)) {
                tracing::warn!(source = %config.name, error = %e, "reading");
            }
            drop(held);
            let due = last_checkpoint.elapsed() >= interval;
            match (&ledger, batch) {
                (Some(ledger), Some(batch)) => {
                    sink.set_ticket(Ticket::default());
                    if let Some(mark) = source.mark(due) {
                        ledger.seal(&batch, mark);
                    }
                    // The batch completes here unless action jobs still hold tickets.
                    drop(batch);
                    if due
                        && let Some(mark) = ledger.completed()
                        && let Err(e) = source.save_mark(&mark)
                    {
                        tracing::error!(source = %config.name, error = %e, "writing checkpoint");
                    }
                }
                _ if due => {
                    if let Err(e) = source.checkpoint() {
                        tracing::error!(source = %config.name, error = %e, "writing checkpoint");
                    }
                }
                _ => {}
            }
            if due {
                last_checkpoint = Instant::now();
            }
        }
        let totals = source.close(&mut |item| pipeline.handle(item, &mut sink));
        if !totals.is_empty() {
            tracing::info!(source = %config.name, "{totals}");
        }
        sink.report();
    }
}

/// The checkpoint file of a source.
pub fn checkpoint_path(state_dir: &Path, source: &str) -> PathBuf {
    state_dir
        .join("checkpoints")
        .join(format!("{}.json", sanitize(source)))
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

fn start_at(s: &SourceConfig) -> TailStart {
    match s.start_at {
        StartAt::Beginning => TailStart::Beginning,
        StartAt::End => TailStart::End,
    }
}

fn tail_options(state_dir: &Path, s: &SourceConfig) -> TailOptions {
    let mut o = TailOptions::new(s.paths.clone(), checkpoint_path(state_dir, &s.name));
    o.exclude = s.exclude.clone();
    o.start_at = start_at(s);
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

/// Opens a configured source: binds a listener, starts journalctl or the EVTX follower,
/// subscribes Event Log channels, opens the tailer. `None`: skipped on this system (a
/// Windows Event Log source elsewhere, logged).
pub fn open_source(
    config: &Config,
    s: &SourceConfig,
    local_host: &str,
) -> Result<Option<Box<dyn Source>>> {
    let dir = &config.state_dir;
    if let Some(address) = &s.listen {
        use watchpost_sources::listen::{ListenOptions, ListenSource};
        let l = ListenSource::start(ListenOptions::new(address))
            .with_context(|| format!("source `{}`: listening on {address}", s.name))?;
        let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(source = %s.name, format = s.format.name(), address = %local, "listening");
        return Ok(Some(Box::new(l)));
    }
    if let Some(w) = &s.winevt {
        return open_event_log(config, s, w, local_host);
    }
    if s.format == Format::Evtx {
        use watchpost_sources::evtx_follow::{EvtxFollowOptions, EvtxSource};
        let mut o = EvtxFollowOptions::new(s.paths.clone(), checkpoint_path(dir, &s.name));
        o.start_at = start_at(s);
        let f = EvtxSource::start(o)
            .with_context(|| format!("source `{}`: following EVTX files", s.name))?;
        tracing::info!(source = %s.name, paths = %s.paths.join(", "), "following EVTX files");
        return Ok(Some(Box::new(f)));
    }
    if let Some(journal) = &s.journal {
        return open_journal(dir, s, journal);
    }
    let tailer = Tailer::open(tail_options(dir, s))
        .with_context(|| format!("opening source `{}`", s.name))?;
    tracing::info!(source = %s.name, format = s.format.name(), paths = %s.paths.join(", "), "following");
    Ok(Some(Box::new(tailer)))
}

#[cfg(target_os = "linux")]
fn open_journal(
    dir: &Path,
    s: &SourceConfig,
    journal: &watchpost_config::JournalConfig,
) -> Result<Option<Box<dyn Source>>> {
    use watchpost_sources::journald::{JournalOptions, JournalSource};
    let mut o = JournalOptions::new(checkpoint_path(dir, &s.name));
    o.units = journal.units.clone();
    o.identifiers = journal.identifiers.clone();
    o.directory = journal.directory.as_ref().map(Into::into);
    o.start_at = start_at(s);
    let j = JournalSource::start(o)
        .with_context(|| format!("source `{}`: starting journalctl", s.name))?;
    tracing::info!(source = %s.name, units = %journal.units.join(", "), "following the journal");
    Ok(Some(Box::new(j)))
}

#[cfg(not(target_os = "linux"))]
fn open_journal(
    _: &Path,
    s: &SourceConfig,
    _: &watchpost_config::JournalConfig,
) -> Result<Option<Box<dyn Source>>> {
    anyhow::bail!("source `{}`: journald sources exist on Linux only", s.name)
}

/// Subscribes a Windows Event Log source's channels.
#[cfg(windows)]
fn open_event_log(
    config: &Config,
    s: &SourceConfig,
    w: &watchpost_config::WinEvtConfig,
    local_host: &str,
) -> Result<Option<Box<dyn Source>>> {
    use watchpost_sources::winevtlog::{WinEvtLog, WinEvtOptions, win::WinApi};
    let mut o = WinEvtOptions::new(
        &s.name,
        w.channels.clone(),
        checkpoint_path(&config.state_dir, &s.name),
    );
    o.start_at = start_at(s);
    o.render_message = w.render_message;
    o.batch_size = w.batch_size;
    let api = WinApi::new()
        .with_context(|| format!("source `{}`: preparing the Event Log API", s.name))?;
    let mut ctx =
        watchpost_sources::ParseCtx::new(s.name.as_str(), s.host.as_deref().unwrap_or(local_host));
    if let Some(tz) = &s.timezone {
        ctx.tz = tz.clone();
    }
    let log = WinEvtLog::new(api, o, ctx)
        .with_context(|| format!("source `{}`: following the Windows Event Log", s.name))?;
    let channels: Vec<&str> = w.channels.iter().map(|c| c.name.as_str()).collect();
    tracing::info!(source = %s.name, channels = %channels.join(", "), "following the Windows Event Log");
    Ok(Some(Box::new(log)))
}

/// Elsewhere a Windows Event Log source is skipped (check-config warned about it).
#[cfg(not(windows))]
fn open_event_log(
    _: &Config,
    s: &SourceConfig,
    _: &watchpost_config::WinEvtConfig,
    _: &str,
) -> Result<Option<Box<dyn Source>>> {
    tracing::warn!(source = %s.name, "windows_event_log sources run on Windows only: skipped");
    Ok(None)
}

/// Starts the checks task: runs each check on its interval (and again when a problem's
/// grace ends), turns reported changes into events for the chain, saves what was
/// reported in `<state_dir>/checks.json`.
pub fn start_checks(sup: &mut Supervisor, config: &Config, shared: &Shared) -> Result<()> {
    if config.checks.is_empty() {
        return Ok(());
    }
    let checks = config.checks.clone();
    let state = config.state_dir.join("checks.json");
    let shared = shared.clone();
    let metrics = shared.metrics.clone();
    let clock: watchpost_checks::SourceClock = Arc::new(move |name: &str| {
        metrics
            .source_if_known(name)
            .map(|c| c.last_record_ms.load(Ordering::Relaxed))
    });
    sup.spawn("checks", move |stop| {
        run_checks(&checks, &shared, &clock, &state, &stop);
    })?;
    Ok(())
}

fn run_checks(
    checks: &[watchpost_checks::CheckSpec],
    shared: &Shared,
    clock: &watchpost_checks::SourceClock,
    state: &Path,
    stop: &StopSignal,
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
    let mut lanes: Vec<(Pipeline, DaemonSink)> = checks
        .iter()
        .map(|c| {
            let p = Pipeline::new(
                SourceKind::Named(&c.name, Format::JsonLines),
                &shared.local_host,
                shared.current.clone(),
                shared.analysis.clone(),
            );
            (p, DaemonSink::new(&c.name, &shared.metrics, stop.clone()))
        })
        .collect();
    let start = Instant::now();
    // Each check's next run; the first a second after start (sources open first).
    let mut due: Vec<Instant> = checks
        .iter()
        .map(|_| start + Duration::from_secs(1))
        .collect();
    while !stop.is_raised() {
        let now = Instant::now();
        let mut changed = false;
        for (i, check) in checks.iter().enumerate() {
            if now < due[i] {
                continue;
            }
            let obs = observe(check, clock);
            shared.metrics.check_observed(&check.name, &obs);
            let now_ms = jiff::Timestamp::now().as_millisecond();
            due[i] = now + check.interval;
            if let Some(previous) = tracker.observe(&check.name, &obs.status, now_ms, check.grace) {
                changed = true;
                tracing::info!(check = %check.name, status = %obs.status, previous = %previous, detail = %obs.detail, "check changed");
                let e = event(check, &obs, &previous, &shared.local_host);
                let (pipeline, sink) = &mut lanes[i];
                sink.begin_read();
                crate::pipeline::Sink::received(sink);
                pipeline.handle_event(e, Instant::now(), sink);
            } else if let Some(until) = tracker.pending_until(&check.name, check.grace) {
                // Look again when the grace ends, not a whole interval later.
                let wait = Duration::from_millis((until - now_ms).max(0) as u64);
                due[i] = due[i].min(now + wait);
            }
        }
        if changed
            && let Err(e) = watchpost_support::write_atomic(state, tracker.to_json().as_bytes())
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
        stop.sleep(nap);
    }
    for (_, sink) in &lanes {
        sink.report();
    }
}

/// Lifts an expired quarantine: every second the state file is read again (the CLI may
/// have applied, renewed or released meanwhile; nothing is kept in memory), so an expiry
/// that passed while the daemon was stopped is honoured right at the start. Runs when a
/// `quarantine` action is configured or a state file exists.
pub fn start_quarantine_timer(sup: &mut Supervisor, config: &Config) -> Result<()> {
    use watchpost_actions::quarantine::{STATE_FILE, release_if_due};
    let dir = config.state_dir.clone();
    let configured = config.actions.iter().any(|a| a.as_quarantine().is_some());
    if sup.has("quarantine") || (!configured && !dir.join(STATE_FILE).exists()) {
        return Ok(());
    }
    sup.spawn("quarantine", move |stop| {
        let mut last_error: Option<String> = None;
        while !stop.is_raised() {
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
            stop.sleep(Duration::from_secs(1));
        }
    })?;
    Ok(())
}
