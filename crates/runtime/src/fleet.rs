//! `[fleet]`: the daemon's link to the fleet server (crate `watchpost-fleet`) as one
//! supervised task, `fleet`. The event store's writer queues what it stores (its
//! `outbox`); the task ships that queue and heart-beats with the daemon's counters
//! ([`Metrics::heartbeat`]), the running configuration's digest and warnings, and the
//! quarantine in force.
//!
//! On a reload the task is kept when `[fleet]` (with its CA and secret files and the
//! host name it reports) did not change; otherwise it is stopped (a request under way
//! finishes within its `timeout`) and started with the new settings, the store's queue
//! turned on, resized or off to match. A new configuration's client is made before
//! anything changes (it opens the queue and reads the CA file), so one that cannot be
//! made rejects the reload.
//!
//! The second task, `fleet-channel`, is the way back (`watchpost_fleet::channel`): a
//! group configuration from the server is applied by a reload of
//! `ConfigSource::Fleet` (the group's text with the local file on top; from then on a
//! SIGHUP or `watchpost reload` reloads that pair), commands act as the CLI does
//! (quarantine apply/release, an action run with an event of the given fields, the
//! checks observed, a reload), acknowledgements made centrally go into the event store.
//! It is restarted with the shipper when `[fleet]` changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use watchpost_config::{Config, ConfigSource, GroupText, Loaded};
use watchpost_event::Event;
use watchpost_fleet::{Client, HostInfo};
use watchpost_fleet_protocol::{CentralAck, Command, CommandKind, ConfigReport, GroupConfig};

use crate::metrics::Metrics;
use crate::pipeline::local_host_name;
use crate::reload::{Outcome, ReloadHandle};
use crate::supervisor::{StopSignal, Supervisor};
use crate::tasks::Shared;

/// The task's name.
pub const TASK: &str = "fleet";

/// This host for the server: its stable id (`[fleet] host_id`, else the machine's id,
/// else one made once and kept in the state directory) and name.
pub fn host(config: &Config) -> Result<HostInfo> {
    let configured = config.fleet.as_ref().and_then(|(_, f)| f.host_id.clone());
    let host_id = match configured.or_else(watchpost_fleet::host_id) {
        Some(id) => id,
        None => {
            let path = config.state_dir.join("fleet.host-id");
            match std::fs::read_to_string(&path) {
                Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
                _ => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    let id = format!("watchpost-{nanos:x}-{:x}", std::process::id());
                    watchpost_support::write_atomic(&path, id.as_bytes()).with_context(|| {
                        format!(
                            "no machine id here, and cannot keep one in {}",
                            path.display()
                        )
                    })?;
                    id
                }
            }
        }
    };
    let hostname = config.agent.host.clone().unwrap_or_else(local_host_name);
    Ok(HostInfo { host_id, hostname })
}

/// The client for `config`'s `[fleet]` (`None` without one): the queue opened, the CA
/// file read; no request yet.
pub fn prepare(config: &Config, metrics: &Arc<Metrics>) -> Result<Option<Client>> {
    let Some((_, spec)) = &config.fleet else {
        return Ok(None);
    };
    if !config.store.enabled {
        return Ok(None);
    }
    let metrics = metrics.clone();
    let state_dir = config.state_dir.clone();
    let status = Box::new(move || {
        let mut hb = metrics.heartbeat();
        hb.quarantine = quarantine(&state_dir);
        hb
    });
    let client = Client::new(spec.clone(), &config.store.path, host(config)?, status)
        .map_err(|e| anyhow::anyhow!("[fleet]: {e}"))?;
    Ok(Some(client))
}

/// Starts the task with a prepared client.
pub fn start(sup: &mut Supervisor, client: Client, server: &str) -> Result<()> {
    let mut client = client;
    sup.spawn(TASK, move |stop| client.run(&|d| !stop.sleep(d)))?;
    tracing::info!(server = %server, "shipping the event store to the fleet server");
    Ok(())
}

/// Turns the store's shipping queue on (bounded by `[fleet] max_queue`) or off, for a
/// reload that added, changed or removed `[fleet]` (the writer reads the setting in
/// every transaction).
pub fn set_queueing(config: &Config) -> Result<()> {
    if !config.store.enabled {
        return Ok(());
    }
    let ship = config.fleet.as_ref().map(|(_, f)| f.max_queue);
    watchpost_store::Outbox::open(&config.store.path)
        .and_then(|o| o.set_queueing(ship))
        .with_context(|| {
            format!(
                "setting the fleet queue of the event store {}",
                config.store.path.display()
            )
        })
}

/// The quarantine in force, from its state file (the heartbeat's, and the console's host
/// page).
pub(crate) fn quarantine(state_dir: &Path) -> Option<watchpost_fleet_protocol::QuarantineStatus> {
    let s = watchpost_actions::quarantine::status(state_dir).ok()??;
    if !s.active {
        return None;
    }
    let ms = |t: &str| {
        t.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    };
    Some(watchpost_fleet_protocol::QuarantineStatus {
        since_ms: ms(&s.since).unwrap_or(0),
        reason: s.reason,
        until_ms: s.until.as_deref().and_then(ms),
    })
}

/// The filter name a job run by a fleet command carries (its event is stored under it).
pub const COMMAND_FILTER: &str = "fleet-command";

/// How long a `run_action` command waits for the action before it answers (the channel
/// handles nothing else meanwhile; a longer action's outcome is still recorded with its
/// event, and shipped).
const ACTION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A `run_action` command's answer: the outcome of the action's last attempt as the event
/// store recorded it, or why there is none yet.
fn action_result(
    analysis: &crate::analysis::Analysis,
    store: &Path,
    action: &str,
    stored: Option<u64>,
    ended: bool,
) -> Result<String, String> {
    let Some(id) = stored else {
        return Ok(format!(
            "queued to action {action} (not stored: the event store refused the event)"
        ));
    };
    if !ended {
        return Ok(format!(
            "action {action} still running after {} s; its outcome is recorded with event {id}",
            ACTION_WAIT.as_secs()
        ));
    }
    analysis.flush_store(std::time::Duration::from_secs(5));
    let last = watchpost_store::Store::open_read_only(store)
        .and_then(|s| s.get(id))
        .ok()
        .flatten()
        .and_then(|e| {
            e.outcomes
                .into_iter()
                .filter(|o| o.action == action)
                .max_by_key(|o| o.attempt)
        });
    match last {
        Some(o) if o.ok => Ok(format!(
            "action {action}: ok{}{} (event {id})",
            if o.detail.is_empty() { "" } else { ": " },
            o.detail
        )),
        Some(o) => Err(format!(
            "action {action} failed (attempt {}): {} (event {id})",
            o.attempt, o.detail
        )),
        // Handed to its retry queue before any attempt: delivered from there.
        None => Ok(format!(
            "queued to action {action}'s retry queue; its outcomes are recorded with event {id}"
        )),
    }
}

/// The channel task's name.
pub const CHANNEL_TASK: &str = "fleet-channel";

/// What the daemon does with what the fleet server sends (see
/// `watchpost_fleet::channel`): a group configuration is applied by a reload of the
/// configuration made of it and the local file (`ConfigSource::Fleet`), commands act
/// as the CLI does, acknowledgements go into the event store.
struct DaemonApply {
    reload: ReloadHandle,
    /// What the daemon runs: its local file, and the group's once applied.
    source: Arc<Mutex<ConfigSource>>,
    shared: Shared,
    state_dir: PathBuf,
    store: PathBuf,
    stop: StopSignal,
}

impl DaemonApply {
    /// The running configuration, read again (commands need its actions and checks).
    fn running(&self) -> Result<Config, String> {
        let source = watchpost_support::lock(&self.source).clone();
        watchpost_config::load(&source, watchpost_config::Purpose::Offline)
            .map(|l| l.config)
            .map_err(|r| r.rendered())
    }
}

impl watchpost_fleet::channel::Apply for DaemonApply {
    fn config(&mut self, c: &GroupConfig, group_file: &Path, files: &Path) -> ConfigReport {
        let local = watchpost_support::lock(&self.source)
            .path()
            .map(Path::to_owned);
        let source = ConfigSource::Fleet {
            local,
            group: GroupText::File(group_file.to_owned()),
            files: files.to_owned(),
        };
        let stop = self.stop.clone();
        match self
            .reload
            .reload_while(Some(source.clone()), &|| !stop.is_raised())
        {
            Some(o) => {
                if o.is_ok() {
                    *watchpost_support::lock(&self.source) = source;
                }
                let diagnostics = match &o {
                    Outcome::Rejected { diagnostics, .. } => diagnostics.clone(),
                    _ => String::new(),
                };
                ConfigReport {
                    version: c.version,
                    ok: o.is_ok(),
                    generation: o.generation(),
                    diagnostics,
                }
            }
            None => ConfigReport {
                version: c.version,
                ok: false,
                generation: self.shared.current.number(),
                diagnostics: "the daemon stopped before applying it".into(),
            },
        }
    }

    fn command(&mut self, c: &Command) -> Result<String, String> {
        let by = format!("fleet ({})", c.by);
        match &c.kind {
            CommandKind::QuarantineRelease { reason } => {
                match watchpost_actions::quarantine::release(&self.state_dir, &by, reason) {
                    Ok(Some(s)) => Ok(format!("released (quarantined since {})", s.since)),
                    Ok(None) => Ok("not quarantined: nothing to release".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
            CommandKind::QuarantineApply { reason, action } => {
                let config = self.running()?;
                let candidates: Vec<_> = config
                    .actions
                    .iter()
                    .filter_map(|a| a.as_quarantine())
                    .filter(|q| !q.releases())
                    .collect();
                let q = match (action, candidates.as_slice()) {
                    (Some(name), _) => candidates
                        .iter()
                        .find(|q| q.name() == name)
                        .ok_or_else(|| format!("no quarantine action `{name}`"))?,
                    (None, [one]) => one,
                    (None, []) => return Err("no quarantine action is configured".into()),
                    (None, _) => {
                        return Err("several quarantine actions are configured: name one".into());
                    }
                };
                let (new, state) = q
                    .apply(&self.state_dir, &self.shared.local_host, reason, &by)
                    .map_err(|e| e.to_string())?;
                let until = state.until.as_deref().unwrap_or("released");
                Ok(if new {
                    format!("quarantined (action {}) until {until}", q.name())
                } else {
                    format!(
                        "already quarantined since {}; now until {until}",
                        state.since
                    )
                })
            }
            CommandKind::RunAction { action, fields } => {
                let g = self.shared.current.load();
                let lane = g
                    .actions
                    .iter()
                    .find(|l| l.name() == action)
                    .ok_or_else(|| format!("no action `{action}` in the running configuration"))?;
                let raw = serde_json::to_string(fields).unwrap_or_default();
                let host = fields
                    .get("host")
                    .cloned()
                    .unwrap_or_else(|| self.shared.local_host.clone());
                let mut event = Event::new(Arc::from("fleet"), Arc::from(host.as_str()), raw);
                event.time = Some(jiff::Timestamp::now());
                for (k, v) in fields {
                    if let Some(sym) = watchpost_event::Sym::try_new(k) {
                        event.push(sym, watchpost_event::Value::Str(v.as_str().into()));
                    }
                }
                let event = Arc::new(event);
                // Stored as a detection of the filter `fleet-command` would be: every
                // attempt's outcome is recorded with it (`watchpost events`), and both
                // are shipped to the server like any other.
                let stored = self
                    .shared
                    .analysis
                    .store_named(COMMAND_FILTER, &event, false);
                // The action drops the job when it is done with it (run, sent, or put in
                // its retry queue): the receiver then sees the sender gone.
                let (done, finished) = crossbeam_channel::bounded::<()>(0);
                let job = watchpost_actions::Job {
                    event,
                    filter: Arc::from(COMMAND_FILTER),
                    actions: Arc::from(action.as_str()),
                    stored,
                    ticket: watchpost_actions::Ticket::new(Arc::new(done)),
                };
                if !lane.submit(job) {
                    return Err(format!("action {action}'s queue is full"));
                }
                let ended = !matches!(
                    finished.recv_timeout(ACTION_WAIT),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                );
                action_result(&self.shared.analysis, &self.store, action, stored, ended)
            }
            CommandKind::RunChecks => {
                let config = self.running()?;
                if config.checks.is_empty() {
                    return Ok("no checks configured".into());
                }
                let metrics = self.shared.metrics.clone();
                let clock: watchpost_checks::SourceClock = Arc::new(move |name: &str| {
                    metrics
                        .source_if_known(name)
                        .map(|c| c.last_record_ms.load(std::sync::atomic::Ordering::Relaxed))
                });
                let mut out = String::new();
                for check in &config.checks {
                    let o = watchpost_checks::observe(check, &clock);
                    out.push_str(&format!("{}: {} ({})\n", check.name, o.status, o.detail));
                }
                Ok(out)
            }
            CommandKind::Reload => {
                let stop = self.stop.clone();
                match self.reload.reload_while(None, &|| !stop.is_raised()) {
                    Some(Outcome::Applied {
                        generation,
                        changes,
                    }) => Ok(format!("generation {generation}: {changes}")),
                    Some(Outcome::Unchanged { generation }) => {
                        Ok(format!("generation {generation}: nothing changed"))
                    }
                    Some(Outcome::Rejected { diagnostics, .. }) => Err(diagnostics),
                    None => Err("the daemon stopped before reloading".into()),
                }
            }
        }
    }

    fn acks(&mut self, acks: &[CentralAck]) -> Result<(), String> {
        let mut store = watchpost_store::Store::open(&self.store).map_err(|e| e.to_string())?;
        let list: Vec<(u64, i64, String, String)> = acks
            .iter()
            .map(|a| (a.event, a.at_ms, a.by.clone(), a.comment.clone()))
            .collect();
        let done = store.ack_central(&list).map_err(|e| e.to_string())?;
        tracing::info!(
            received = acks.len(),
            acknowledged = done.len(),
            "acknowledgements from the fleet server"
        );
        Ok(())
    }
}

/// Starts the channel task for `config`'s `[fleet]` (nothing without one).
pub fn start_channel(
    sup: &mut Supervisor,
    config: &Config,
    source: &ConfigSource,
    reload: &ReloadHandle,
    shared: &Shared,
) -> Result<()> {
    let Some((_, spec)) = &config.fleet else {
        return Ok(());
    };
    if !config.store.enabled {
        return Ok(());
    }
    let spec = spec.clone();
    let mut apply = DaemonApply {
        reload: reload.clone(),
        source: Arc::new(Mutex::new(source.clone())),
        shared: shared.clone(),
        state_dir: config.state_dir.clone(),
        store: config.store.path.clone(),
        stop: StopSignal::new(),
    };
    sup.spawn(CHANNEL_TASK, move |stop| {
        apply.stop = stop.clone();
        watchpost_fleet::channel::run(spec, &mut apply, &|| stop.is_raised());
    })?;
    Ok(())
}

/// With `[fleet]` and a group configuration kept from the server, the daemon starts with
/// both (the group's with the local file on top), as it ran before it stopped; if that
/// pair no longer loads, with the local file alone (the server sends the group's
/// configuration again and hears what is wrong with it).
pub fn with_kept_group(source: ConfigSource, loaded: Loaded) -> (ConfigSource, Loaded) {
    if loaded.config.fleet.is_none() {
        return (source, loaded);
    }
    let Some((group, files)) = watchpost_fleet::channel::kept_group(&loaded.config.state_dir)
    else {
        return (source, loaded);
    };
    let fleet = ConfigSource::Fleet {
        local: source.path().map(Path::to_owned),
        group: watchpost_config::GroupText::File(group),
        files,
    };
    match watchpost_config::load(&fleet, watchpost_config::Purpose::Run) {
        Ok(l) => {
            eprint!("{}", l.rendered());
            (fleet, l)
        }
        Err(r) => {
            eprint!("{}", r.rendered());
            tracing::error!(
                "the group configuration kept from the fleet server does not load here; starting with the local file alone"
            );
            (source, loaded)
        }
    }
}
