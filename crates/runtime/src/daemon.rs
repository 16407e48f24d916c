//! `watchpost run`: the daemon, its start, its reloads and its stop.
//!
//! [`run_until`] builds the [`Runtime`] from a loaded configuration (analysis, actions,
//! the first [`Generation`], one supervised task per source, the checks, the quarantine
//! timer, the metrics endpoint, the configuration watcher, the fleet shipper), then waits for a stop or a
//! reload request, then stops the tasks in reverse order (sources write their final
//! checkpoints), drains the actions and closes the store.
//!
//! A reload ([`Runtime::reload`]) loads and checks the new configuration completely
//! (the same code as `check-config`) before touching anything; then it prepares what can
//! fail (baselines registered, a changed `[fleet]`'s client made, new sources opened),
//! applies the actions ([`Dispatcher::reconfigure`]), publishes the next generation
//! (every source takes it between two records), and restarts only the sources, checks,
//! endpoint, fleet shipper and watcher whose definition changed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, select};
use watchpost_actions::Dispatcher;
use watchpost_config::{Changes, Config, ConfigSource, Loaded, Purpose, SourceConfig};
use watchpost_sources::Source;

use crate::analysis::{Analysis, BaselineHome};
use crate::fleet;
use crate::metrics::{Endpoint, Metrics, Running};
use crate::pipeline::{Current, Generation, local_host_name};
use crate::reload::{Outcome, Request, Requests, Status};
use crate::supervisor::Supervisor;
use crate::tasks::{self, Shared, SourceTask};

/// The running daemon.
pub struct Runtime {
    source: ConfigSource,
    config: Config,
    shared: Shared,
    dispatcher: Arc<Mutex<Option<Dispatcher>>>,
    supervisor: Supervisor,
    watched: Vec<std::path::PathBuf>,
    reload: crate::reload::ReloadHandle,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("source", &self.source)
            .field("tasks", &self.supervisor)
            .finish_non_exhaustive()
    }
}

/// Runs the daemon until `stop` receives a message (or every sender of it is dropped),
/// serving reload requests meanwhile, then shuts down cleanly: sources checkpoint, queued
/// actions drain. `started` is called once every source is following. `reload` is the
/// handle the configuration watcher uses; `requests` its receiving end.
pub fn run_until(
    source: ConfigSource,
    loaded: Loaded,
    stop: &Receiver<()>,
    (reload, requests): (crate::reload::ReloadHandle, Requests),
    started: impl FnOnce(),
) -> Result<()> {
    let rt = Runtime::start(source, loaded, reload)?;
    started();
    rt.serve_until(stop, &requests);
    Ok(())
}

impl Runtime {
    /// Starts everything a loaded configuration describes. When a step fails, what
    /// already started is stopped (the supervisor and the dispatcher are dropped).
    pub fn start(
        source: ConfigSource,
        loaded: Loaded,
        reload: crate::reload::ReloadHandle,
    ) -> Result<Runtime> {
        let Loaded {
            mut config,
            chain,
            watched,
            diagnostics,
            ..
        } = loaded;
        std::fs::create_dir_all(config.state_dir.join("checkpoints"))
            .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
        let local_host = config.agent.host.clone().unwrap_or_else(local_host_name);
        let (analysis, judges) = Analysis::open(&config, &chain, BaselineHome::State, true)?;
        let analysis = Arc::new(analysis);
        let dispatcher = Dispatcher::start_opts(
            config.actions.clone(),
            watchpost_actions::DispatchOptions {
                state_dir: Some(config.state_dir.clone()),
                outcomes: analysis.outcome_sink(),
            },
        )
        .context("starting actions")?;
        let lanes = dispatcher.lanes();
        let dispatcher = Arc::new(Mutex::new(Some(dispatcher)));
        let metrics = Arc::new(Metrics::new(&dispatcher, &analysis));
        let generation = Generation::build(1, &mut config, chain, judges, lanes, &|_| None);
        metrics.config.generation.store(1, Ordering::Relaxed);
        *watchpost_support::lock(&metrics.config.running) = Running::of(&config, &diagnostics);
        let shared = Shared {
            current: Arc::new(Current::new(generation)),
            analysis,
            metrics,
            local_host,
        };
        let mut supervisor = Supervisor::new();
        // Bound before any source starts: a taken port fails the start cleanly.
        start_endpoint(&mut supervisor, &config, &shared.metrics)?;
        crate::console::start(
            &mut supervisor,
            &config,
            &shared.metrics,
            &shared.analysis,
            &shared.local_host,
        )?;
        let interval = checkpoint_interval(&config);
        for s in &config.sources {
            if let Some(opened) = tasks::open_source(&config, s, &shared.local_host)? {
                supervisor.start(Box::new(SourceTask::new(s, opened, &shared, interval)))?;
            }
        }
        tasks::start_checks(&mut supervisor, &config, &shared)?;
        tasks::start_quarantine_timer(&mut supervisor, &config)?;
        if config.agent.watch_config {
            crate::watch::start(&mut supervisor, &watched, &reload)?;
        }
        if let Some(client) = fleet::prepare(&config, &shared.metrics)? {
            fleet::start(&mut supervisor, client, &fleet_server(&config))?;
            fleet::start_channel(&mut supervisor, &config, &source, &reload, &shared)?;
        }
        write_pid(&config);
        let g = shared.current.load();
        tracing::info!(sources = config.sources.len(), checks = config.checks.len(), filters = g.chain.len(), actions = config.actions.len(), generation = 1, state_dir = %config.state_dir.display(), "watchpost running");
        if config.sources.is_empty() && config.checks.is_empty() {
            tracing::warn!("no [[source]] configured: nothing to follow until stopped");
        }
        Ok(Runtime {
            source,
            config,
            shared,
            dispatcher,
            supervisor,
            watched,
            reload,
        })
    }

    /// The generation running now.
    pub fn generation(&self) -> u64 {
        self.shared.current.number()
    }

    /// Starts one more task beside the configured ones (a configuration puller, a local
    /// console): it runs until the daemon stops, stopped before the sources.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce(crate::supervisor::StopSignal) + Send + 'static,
    ) -> std::io::Result<()> {
        self.supervisor.spawn(name, f)
    }

    /// The handle that asks this daemon to reload (for tasks that apply configurations).
    pub fn reload_handle(&self) -> crate::reload::ReloadHandle {
        self.reload.clone()
    }

    /// Serves reload requests (saving threshold windows every checkpoint interval) until
    /// `stop` receives a message or every sender of it is dropped, then stops.
    pub fn serve_until(mut self, stop: &Receiver<()>, requests: &Requests) {
        let interval = Duration::from_millis(self.config.agent.checkpoint_interval_ms.max(10));
        loop {
            select! {
                recv(stop) -> _ => break,
                recv(requests.rx) -> r => match r {
                    Ok(first) => self.serve(first, &requests.rx),
                    Err(_) => break,
                },
                default(interval) => self.shared.analysis.checkpoint(),
            }
        }
        self.stop();
    }

    /// Serves a request and every request that arrived meanwhile: one reload for all of
    /// them (of the source the last one named), each answered with its outcome.
    fn serve(&mut self, first: Request, more: &Receiver<Request>) {
        let mut batch = vec![first];
        loop {
            batch.extend(more.try_iter());
            let source = batch
                .iter()
                .rev()
                .find_map(|r| r.source.clone())
                .unwrap_or_else(|| self.source.clone());
            let outcome = self.reload(&source);
            for r in batch.drain(..) {
                if let Some(reply) = r.reply {
                    let _ = reply.send(outcome.clone());
                }
            }
            if more.is_empty() {
                return;
            }
        }
    }

    /// Reloads from `source`; see the [module documentation](self). The outcome is
    /// logged, counted and written to `<state_dir>/reload.json`.
    pub fn reload(&mut self, source: &ConfigSource) -> Outcome {
        let started_ms = jiff::Timestamp::now().as_millisecond();
        let t = std::time::Instant::now();
        let outcome = match self.try_reload(source) {
            Ok(o) => o,
            Err(diagnostics) => Outcome::Rejected {
                generation: self.generation(),
                diagnostics,
            },
        };
        let c = &self.shared.metrics.config;
        match &outcome {
            Outcome::Applied {
                generation,
                changes,
            } => {
                c.applied.fetch_add(1, Ordering::Relaxed);
                c.generation.store(*generation, Ordering::Relaxed);
                c.last_reload_ms
                    .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
                tracing::info!(generation, took_ms = t.elapsed().as_millis() as u64, changes = %changes, "configuration reloaded");
            }
            Outcome::Unchanged { generation } => {
                c.unchanged.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation, "configuration reloaded: nothing changed");
            }
            Outcome::Rejected { diagnostics, .. } => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
                for line in diagnostics.lines().filter(|l| !l.starts_with("    ")) {
                    tracing::error!("{line}");
                }
                tracing::error!("configuration reload rejected: the running configuration stays");
            }
        }
        crate::reload::write_status(
            &self.config.state_dir,
            &Status {
                started_ms,
                finished_ms: jiff::Timestamp::now().as_millisecond(),
                outcome: outcome.clone(),
            },
        );
        outcome
    }

    /// The reload itself; `Err` carries the rendered diagnostics of a rejection.
    fn try_reload(&mut self, source: &ConfigSource) -> Result<Outcome, String> {
        let loaded = watchpost_config::load(source, Purpose::Run).map_err(|r| r.rendered())?;
        let restart = watchpost_config::restart_only(&self.config, &loaded.config);
        if restart.has_errors() {
            return Err(loaded.map.render(&restart));
        }
        let Loaded {
            config: mut new,
            chain,
            watched,
            diagnostics,
            ..
        } = loaded;
        let changes = Changes::between(&self.config.definitions, &new.definitions);
        let agent_changed = agent_differs(&self.config, &new);
        // The digest and warnings the fleet heartbeat reports follow the file, also
        // when only comments changed.
        let running = Running::of(&new, &diagnostics);
        if changes.is_empty() && !agent_changed && watched == self.watched {
            *watchpost_support::lock(&self.shared.metrics.config.running) = running;
            return Ok(Outcome::Unchanged {
                generation: self.generation(),
            });
        }
        // What can fail comes first, while nothing has changed yet.
        let judges = self
            .shared
            .analysis
            .register(&chain)
            .map_err(|e| format!("{}: {e:#}\n", source.name()))?;
        let fleet_client = if changes.fleet.is_empty() {
            None
        } else {
            fleet::prepare(&new, &self.shared.metrics)
                .map_err(|e| format!("{}: {e:#}\n", source.name()))?
        };
        let mut opened = self.open_added(&new, &changes)?;
        // Actions: unchanged ones keep running; the rest start or retire.
        let lanes = {
            let mut d = watchpost_support::lock(&self.dispatcher);
            let d = d
                .as_mut()
                .ok_or_else(|| "the daemon is stopping".to_owned())?;
            d.reconfigure(new.actions.clone(), &|n| changes.actions.keeps(n))
                .map_err(|e| format!("starting actions: {e}\n"))?;
            d.lanes()
        };
        let old = self.shared.current.load();
        let keep = |name: &str| {
            changes
                .rules
                .keeps(name)
                .then(|| old.rules.iter().find(|s| s.name == name).cloned())
                .flatten()
        };
        let number = self.generation() + 1;
        let generation = Generation::build(number, &mut new, chain, judges, lanes, &keep);
        drop(old);
        drop(self.shared.current.store(generation));
        // Sources: stop the changed and removed ones (final checkpoints), start the
        // changed ones again from their checkpoints, and the added ones.
        let restart: Vec<String> = changes
            .sources
            .changed
            .iter()
            .chain(&changes.sources.removed)
            .map(|n| tasks::source_task(n))
            .collect();
        self.supervisor
            .stop_where(|n| restart.iter().any(|r| r == n));
        // A changed host name changed every source's and check's definition.
        self.shared.local_host = new.agent.host.clone().unwrap_or_else(local_host_name);
        let interval = checkpoint_interval(&new);
        for s in &new.sources {
            let opened = if changes.sources.changed.contains(&s.name) {
                match tasks::open_source(&new, s, &self.shared.local_host) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(source = %s.name, error = %format!("{e:#}"), "reopening the changed source failed: it stays stopped until the next reload");
                        None
                    }
                }
            } else {
                opened.remove(&s.name)
            };
            if let Some(o) = opened {
                self.start_source(s, o, interval);
            }
        }
        if !changes.checks.is_empty() {
            self.supervisor.stop("checks");
            if let Err(e) = tasks::start_checks(&mut self.supervisor, &new, &self.shared) {
                tracing::error!(error = %format!("{e:#}"), "starting the checks");
            }
        }
        if let Err(e) = tasks::start_quarantine_timer(&mut self.supervisor, &new) {
            tracing::error!(error = %format!("{e:#}"), "starting the quarantine timer");
        }
        if self.config.metrics != new.metrics {
            self.supervisor.stop("metrics");
            if let Err(e) = start_endpoint(&mut self.supervisor, &new, &self.shared.metrics) {
                tracing::error!(error = %format!("{e:#}"), "the metrics endpoint stays off");
            }
        }
        if self.config.console != new.console {
            self.supervisor.stop(crate::console::TASK);
            if let Err(e) = crate::console::start(
                &mut self.supervisor,
                &new,
                &self.shared.metrics,
                &self.shared.analysis,
                &self.shared.local_host,
            ) {
                tracing::error!(error = %format!("{e:#}"), "the console stays off");
            }
        }
        if !changes.fleet.is_empty() {
            self.supervisor.stop(fleet::CHANNEL_TASK);
            self.supervisor.stop(fleet::TASK);
            if let Err(e) = fleet::set_queueing(&new) {
                tracing::error!(error = %format!("{e:#}"), "the event store's fleet queue keeps its old setting");
            }
            if let Some(client) = fleet_client
                && let Err(e) = fleet::start(&mut self.supervisor, client, &fleet_server(&new))
            {
                tracing::error!(error = %format!("{e:#}"), "starting the fleet task");
            }
            if let Err(e) = fleet::start_channel(
                &mut self.supervisor,
                &new,
                source,
                &self.reload,
                &self.shared,
            ) {
                tracing::error!(error = %format!("{e:#}"), "starting the fleet channel");
            }
        }
        *watchpost_support::lock(&self.shared.metrics.config.running) = running;
        if self.config.agent.watch_config != new.agent.watch_config || self.watched != watched {
            self.supervisor.stop("watch-config");
            if new.agent.watch_config
                && let Err(e) = crate::watch::start(&mut self.supervisor, &watched, &self.reload)
            {
                tracing::error!(error = %e, "watching the configuration");
            }
        }
        let summary = summary(&changes, agent_changed);
        self.config = new;
        self.watched = watched;
        self.source = source.clone();
        Ok(Outcome::Applied {
            generation: number,
            changes: summary,
        })
    }

    /// Opens the sources a reload adds, before anything changes: one that cannot open
    /// rejects the reload.
    fn open_added(
        &self,
        new: &Config,
        changes: &Changes,
    ) -> Result<HashMap<String, Box<dyn Source>>, String> {
        let mut opened = HashMap::new();
        for s in new
            .sources
            .iter()
            .filter(|s| changes.sources.added.contains(&s.name))
        {
            match tasks::open_source(new, s, &self.shared.local_host) {
                Ok(Some(o)) => {
                    opened.insert(s.name.clone(), o);
                }
                Ok(None) => {}
                Err(e) => {
                    for (_, o) in opened {
                        o.close(&mut |_| {});
                    }
                    return Err(format!("{e:#}\n"));
                }
            }
        }
        Ok(opened)
    }

    fn start_source(&mut self, s: &SourceConfig, opened: Box<dyn Source>, interval: Duration) {
        let task = SourceTask::new(s, opened, &self.shared, interval);
        if let Err(e) = self.supervisor.start(Box::new(task)) {
            tracing::error!(source = %s.name, error = %e, "starting the source's thread");
        }
    }

    /// Stops every task (the last started first), drains the actions, closes the
    /// baselines and the store.
    pub fn stop(mut self) {
        self.supervisor.stop_all();
        let Runtime {
            config,
            shared,
            dispatcher,
            ..
        } = self;
        let Shared {
            current,
            analysis,
            metrics,
            ..
        } = shared;
        // The last holder of the generation: its lanes go, the queues close.
        drop(current);
        drop(metrics);
        if let Some(d) = watchpost_support::lock(&dispatcher).take() {
            for s in d.shutdown(Duration::from_secs(5)) {
                tracing::info!("action totals: {}", watchpost_event::logfmt(&s));
            }
        }
        match Arc::try_unwrap(analysis) {
            Ok(a) => a.close(),
            Err(_) => tracing::error!(
                "baselines still shared at shutdown: pending pairs since the last flush are lost"
            ),
        }
        let _ = std::fs::remove_file(crate::reload::pid_path(&config.state_dir));
        tracing::info!("watchpost stopped");
    }
}

fn checkpoint_interval(config: &Config) -> Duration {
    Duration::from_millis(config.agent.checkpoint_interval_ms.max(10))
}

/// Binds the metrics endpoint (when configured) and starts its task.
fn start_endpoint(sup: &mut Supervisor, config: &Config, metrics: &Arc<Metrics>) -> Result<()> {
    let Some(address) = config.metrics else {
        return Ok(());
    };
    let endpoint = Endpoint::bind(address, metrics.clone())
        .with_context(|| format!("[agent] metrics: listening on {address}"))?;
    tracing::info!(address = %endpoint.local_addr(), "serving Prometheus metrics at /metrics");
    sup.start(Box::new(endpoint))?;
    Ok(())
}

/// `[fleet] server`, for the log.
fn fleet_server(config: &Config) -> String {
    config
        .fleet
        .as_ref()
        .map_or_else(String::new, |(_, f)| f.server.clone())
}

/// Whether `[agent]` settings a generation or a task uses changed.
fn agent_differs(old: &Config, new: &Config) -> bool {
    let (a, b) = (&old.agent, &new.agent);
    a.log_fired != b.log_fired
        || a.when_queue_full != b.when_queue_full
        || a.watch_config != b.watch_config
        || old.metrics != new.metrics
        || old.console != new.console
}

fn summary(c: &Changes, agent: bool) -> String {
    let mut parts = Vec::new();
    for (what, d) in [
        ("sources", &c.sources),
        ("filters", &c.filters),
        ("actions", &c.actions),
        ("checks", &c.checks),
        ("rules", &c.rules),
        ("fleet", &c.fleet),
    ] {
        if !d.is_empty() {
            parts.push(format!("{what}: {}", d.summary()));
        }
    }
    if agent {
        parts.push("[agent] settings".into());
    }
    if parts.is_empty() {
        "rule or placeholder files".into()
    } else {
        parts.join("; ")
    }
}

/// `<state_dir>/watchpost.pid`: how `watchpost reload` finds the daemon.
fn write_pid(config: &Config) {
    let path = crate::reload::pid_path(&config.state_dir);
    if let Err(e) =
        watchpost_support::write_atomic(&path, format!("{}\n", std::process::id()).as_bytes())
    {
        tracing::warn!(file = %path.display(), error = %e, "writing the pid file (`watchpost reload` will not find this daemon)");
    }
}
