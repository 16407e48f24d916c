//! What the daemon and the replays keep beyond the filter chain, across configuration
//! generations: the anomaly baselines that anomaly filters consult (`watchpost-anomaly`),
//! the threshold windows, and the event store that keeps every matched event
//! (`watchpost-store`). A generation's [`JudgeTable`] maps its chain's filters to their
//! baselines and windows ([`Analysis::register`]); a filter whose key/value definition is
//! unchanged keeps its baseline and windows across a reload.
//!
//! * `run` opens the baselines under `<state_dir>/baselines` and the store (`[store]`);
//!   each source thread judges with a [`BaselineJudge`] and stores what a filter matched.
//! * `test` opens a fresh baseline in a temporary directory (the daemon's stays
//!   untouched), so a replay shows what the daemon would have flagged had it lived
//!   through the same events; no store.
//! * `baseline learn` opens the daemon's baselines and records pairs without acting.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use watchpost_anomaly::{AnomalySpec, Baselines, FilterId, Options, Verdict as Judgement};
use watchpost_event::Event;
use watchpost_filters::threshold::Thresholds;
use watchpost_filters::{BaselineSpec, Chain, Judge, ThresholdSpec, Verdict};
use watchpost_store::{Matched, StoreOptions, Writer};

use watchpost_config::Config;

/// The baseline directory of a configuration.
pub fn baseline_dir(config: &Config) -> PathBuf {
    config.state_dir.join("baselines")
}

/// The engine's definition of a filter's baseline.
pub fn anomaly_spec(b: &BaselineSpec) -> AnomalySpec {
    AnomalySpec {
        key: b.key.iter().map(|s| s.as_str().to_owned()).collect(),
        value: b.value.iter().map(|s| s.as_str().to_owned()).collect(),
        learning: b.learning,
        learn_per_key: b.learn_per_key,
        max_values_per_key: b.max_values_per_key,
        forget_after: b.forget_after,
    }
}

/// Baselines and store, shared by the source threads.
pub struct Analysis {
    /// Opened when a generation first has an anomaly filter.
    baselines: std::sync::OnceLock<Baselines>,
    /// Where they live.
    baseline_dir: PathBuf,
    /// How they are opened.
    baseline_options: Options,
    store: Option<std::sync::Arc<Writer>>,
    /// Threshold windows (all sources), saved to `thresholds_path`.
    thresholds: std::sync::Mutex<Thresholds>,
    thresholds_path: Option<PathBuf>,
    /// What was written there last (unchanged windows are not written again).
    thresholds_written: std::sync::Mutex<String>,
    /// Keeps a temporary baseline directory alive (replays).
    _temp: Option<tempfile::TempDir>,
}

/// What one generation's judges look up, by chain index: the baseline of each anomaly
/// filter, the name each threshold filter's windows are kept under.
#[derive(Debug, Clone, Default)]
pub struct JudgeTable {
    ids: Vec<Option<FilterId>>,
    names: Vec<std::sync::Arc<str>>,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis")
            .field("baselines", &self.baselines.get().is_some())
            .field("store", &self.store.is_some())
            .finish()
    }
}

/// Where the baselines live for this use.
pub enum BaselineHome {
    /// The daemon's (`<state_dir>/baselines`).
    State,
    /// A fresh temporary directory, deleted afterwards.
    Temporary,
}

impl Analysis {
    /// Prepares the baselines (opened when a chain first has anomaly filters) and, with
    /// `store`, opens the event store; registers `chain`'s filters (see
    /// [`Analysis::register`]).
    pub fn open(
        config: &Config,
        chain: &Chain,
        home: BaselineHome,
        store: bool,
    ) -> Result<(Analysis, JudgeTable)> {
        let mut temp = None;
        let baseline_dir = match home {
            BaselineHome::State => baseline_dir(config),
            BaselineHome::Temporary => {
                let t = tempfile::tempdir().context("creating a temporary baseline directory")?;
                let d = t.path().to_path_buf();
                temp = Some(t);
                d
            }
        };
        let baseline_options = Options {
            flush_interval: Some(Duration::from_millis(
                config.agent.checkpoint_interval_ms.max(100),
            )),
            forgetting: chain.iter().any(|f| {
                f.baseline
                    .as_ref()
                    .is_some_and(|b| b.forget_after.is_some())
            }),
            ..Options::default()
        };
        let store = if store && config.store.enabled {
            let options = StoreOptions {
                max_age: config.store.max_age,
                max_bytes: config.store.max_bytes,
                // `[fleet]`: what is stored is also queued for the server.
                ship: config.fleet.as_ref().map(|(_, f)| f.max_queue),
                ..StoreOptions::default()
            };
            Some(std::sync::Arc::new(
                Writer::start(&config.store.path, options).with_context(|| {
                    format!("opening the event store {}", config.store.path.display())
                })?,
            ))
        } else {
            None
        };
        let thresholds_path = (!matches!(home, BaselineHome::Temporary))
            .then(|| config.state_dir.join("thresholds.json"));
        let mut thresholds = Thresholds::default();
        if let Some(p) = thresholds_path.as_ref().filter(|_| chain.has_thresholds()) {
            match std::fs::read_to_string(p) {
                Ok(text) => match Thresholds::from_json(&text) {
                    Ok(t) => thresholds = t,
                    Err(e) => {
                        tracing::warn!(file = %p.display(), error = %e, "threshold state unreadable: windows start empty")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "reading threshold state")
                }
            }
        }
        let analysis = Analysis {
            baselines: std::sync::OnceLock::new(),
            baseline_dir,
            baseline_options,
            store,
            thresholds: std::sync::Mutex::new(thresholds),
            thresholds_written: std::sync::Mutex::new(Thresholds::default().to_json()),
            thresholds_path,
            _temp: temp,
        };
        let table = analysis.register(chain)?;
        Ok((analysis, table))
    }

    /// Registers a chain's anomaly filters with the baselines (opening them the first
    /// time one is configured) and keeps only its threshold filters' windows. A filter
    /// whose key/value (or threshold) definition changed starts afresh, logged.
    /// Changes nothing the running generation uses, so a reload can call it before it
    /// commits to the new configuration.
    pub fn register(&self, chain: &Chain) -> Result<JudgeTable> {
        let mut ids = vec![None; chain.len()];
        if chain.has_baselines() {
            let b = match self.baselines.get() {
                Some(b) => b,
                None => {
                    let opened = open_baselines(&self.baseline_dir, self.baseline_options.clone())?;
                    self.baselines.get_or_init(|| opened)
                }
            };
            for (i, f) in chain.iter().enumerate() {
                if let Some(spec) = &f.baseline {
                    let reg = b
                        .filter(&f.name, &anomaly_spec(spec))
                        .with_context(|| format!("anomaly filter `{}`", f.name))?;
                    // A changed definition (its baseline starts afresh) is logged by
                    // `Baselines::filter` itself.
                    ids[i] = Some(reg.id);
                }
            }
        }
        let specs: Vec<(&str, &watchpost_filters::ThresholdSpec)> = chain
            .iter()
            .filter_map(|f| Some((&*f.name, f.threshold.as_ref()?)))
            .collect();
        let names: Vec<&str> = specs.iter().map(|(n, _)| *n).collect();
        let mut windows = watchpost_support::lock(&self.thresholds);
        windows.retain_filters(&names);
        for name in windows.reset_changed(&specs) {
            tracing::warn!(filter = %name, "the threshold filter's definition changed: its windows start afresh");
        }
        Ok(JudgeTable {
            ids,
            names: chain.iter().map(|f| f.name.clone()).collect(),
        })
    }

    /// A judge for one source thread (or one replay).
    pub fn judge<'a>(&'a self, table: &'a JudgeTable) -> BaselineJudge<'a> {
        BaselineJudge {
            analysis: self,
            table,
            verdicts: Vec::new(),
            released: Vec::new(),
        }
    }

    /// Stores an event a filter matched (fired, or an anomaly filter judged it); returns its
    /// id in the store. Never waits (a full store queue drops and counts).
    pub fn store(
        &self,
        chain: &Chain,
        event: &Arc<Event>,
        verdict: &Verdict,
        why: &[(usize, Judgement)],
    ) -> Option<u64> {
        let writer = self.store.as_ref()?;
        if verdict.excluded_by.is_some() || (verdict.fired.is_empty() && verdict.judged.is_empty())
        {
            return None;
        }
        let names = verdict
            .judged
            .iter()
            .chain(&verdict.fired)
            .map(|&i| chain.filter(i).name.to_string())
            .collect();
        let reasons: Vec<String> = why
            .iter()
            .filter(|(_, v)| v.is_anomaly())
            .map(|(i, v)| format!("{}: {v}", chain.filter(*i).name))
            .collect();
        // The writer thread builds the stored form: here only the `Arc` is cloned.
        writer.submit_matched(Matched {
            event: event.clone(),
            filters: names,
            anomaly_why: (!reasons.is_empty()).then(|| reasons.join("; ")),
            needs_ack: verdict.fired.iter().any(|&i| chain.filter(i).require_ack),
        })
    }

    /// Waits until what was handed to the event store's writer is written (`true`), or
    /// `timeout`; `true` without a store.
    pub fn flush_store(&self, timeout: Duration) -> bool {
        self.store.as_ref().is_none_or(|w| w.flush(timeout))
    }

    /// The event store writer's counters (`None` without a store).
    pub fn store_stats(&self) -> Option<watchpost_store::WriterStats> {
        self.store.as_ref().map(|w| w.stats())
    }

    /// The anomaly baselines (`None` until a chain with anomaly filters registered).
    pub fn baselines(&self) -> Option<&Baselines> {
        self.baselines.get()
    }

    /// How many pairs the anomaly baselines hold (`None` without anomaly filters).
    pub fn baseline_pairs(&self) -> Option<u64> {
        self.baselines.get().map(|b| b.stats().pairs)
    }

    /// Saves the threshold windows (atomically) so a restart continues them.
    pub fn checkpoint(&self) {
        let Some(path) = &self.thresholds_path else {
            return;
        };
        let json = watchpost_support::lock(&self.thresholds).to_json();
        let mut written = watchpost_support::lock(&self.thresholds_written);
        if *written == json {
            return;
        }
        match watchpost_support::write_atomic(path, json.as_bytes()) {
            Ok(()) => *written = json,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "writing threshold state")
            }
        }
    }

    /// Where action outcomes of stored events go (the store), for the dispatcher.
    pub fn outcome_sink(&self) -> Option<watchpost_actions::OutcomeSink> {
        let writer = self.store.clone()?;
        Some(std::sync::Arc::new(
            move |a: &watchpost_actions::Attempt<'_>| {
                writer.outcome(watchpost_store::Outcome {
                    event: a.event,
                    action: a.action.to_owned(),
                    filter: a.filter.to_owned(),
                    at_ms: jiff::Timestamp::now().as_millisecond(),
                    attempt: a.attempt,
                    ok: a.ok,
                    detail: a.detail.to_owned(),
                });
            },
        ))
    }

    /// Stores an event one named matcher fired on outside the chain's verdict: a Sigma
    /// rule set, or a threshold filter releasing a held match (`needs_ack` as it says).
    pub fn store_named(&self, name: &str, event: &Arc<Event>, needs_ack: bool) -> Option<u64> {
        self.store.as_ref()?.submit_matched(Matched {
            event: event.clone(),
            filters: vec![name.to_owned()],
            anomaly_why: None,
            needs_ack,
        })
    }

    /// Commits pending baseline pairs and stored events, stops the store's writer.
    pub fn close(self) {
        self.checkpoint();
        if let Some(w) = self.store {
            match std::sync::Arc::try_unwrap(w) {
                Ok(w) => {
                    let stats = w.shutdown();
                    tracing::info!("event store totals: {}", watchpost_event::logfmt(&stats));
                }
                Err(w) => {
                    // An action worker that outlived shutdown still holds the sink.
                    let flushed = w.flush(Duration::from_secs(5));
                    tracing::info!(
                        flushed,
                        "event store totals: {}",
                        watchpost_event::logfmt(&w.stats())
                    );
                }
            }
        }
        if let Some(b) = self.baselines.into_inner() {
            let stats = b.stats();
            if let Err(e) = b.close() {
                tracing::error!(error = %e, "closing the anomaly baselines");
            } else {
                tracing::info!(
                    "anomaly baseline totals: {}",
                    watchpost_event::logfmt(&stats)
                );
            }
        }
    }
}

/// Opens a baseline directory, saying what to do when another process has it open.
pub fn open_baselines(dir: &Path, options: Options) -> Result<Baselines> {
    Baselines::open(dir, options).map_err(|e| {
        let text = e.to_string();
        let hint = if text.contains("already open") || text.contains("lock") {
            " (is the watchpost daemon running? stop it first; baselines have one writer)"
        } else {
            ""
        };
        anyhow::anyhow!(
            "opening anomaly baselines in {}: {text}{hint}",
            dir.display()
        )
    })
}

/// Asks the baselines about the events anomaly filters match; remembers each answer.
pub struct BaselineJudge<'a> {
    analysis: &'a Analysis,
    table: &'a JudgeTable,
    /// The answers for the current event: (chain index, verdict).
    pub verdicts: Vec<(usize, Judgement)>,
    /// Matches a threshold filter held back and released with the current event
    /// (`forward = "all"`): (chain index, event). They fire that filter's actions.
    pub released: Vec<(usize, Event)>,
}

/// An event's text for `fields` (a missing key field is the empty string; `None` when a
/// value field is missing: such events are not judged).
fn texts<'e>(
    event: &'e Event,
    fields: &[watchpost_event::Sym],
    required: bool,
) -> Option<Vec<Cow<'e, str>>> {
    let mut out = Vec::with_capacity(fields.len());
    for &f in fields {
        match event.get(f) {
            Some(v) => out.push(v.text()),
            None if required => return None,
            None => out.push(Cow::Borrowed("")),
        }
    }
    Some(out)
}

impl Judge for BaselineJudge<'_> {
    fn judge(&mut self, filter: usize, spec: &BaselineSpec, event: &Event) -> bool {
        let (Some(b), Some(Some(id))) = (self.analysis.baselines.get(), self.table.ids.get(filter))
        else {
            return false;
        };
        let Some(values) = texts(event, &spec.value, true) else {
            return false;
        };
        let keys = texts(event, &spec.key, false).unwrap_or_default();
        let keys: Vec<&str> = keys.iter().map(|c| c.as_ref()).collect();
        let values: Vec<&str> = values.iter().map(|c| c.as_ref()).collect();
        let v = b.check(*id, &event.host, &keys, &values, event.time);
        self.verdicts.push((filter, v));
        v.is_anomaly()
    }

    fn threshold(&mut self, filter: usize, spec: &ThresholdSpec, event: &Event) -> bool {
        let Some(name) = self.table.names.get(filter) else {
            return true;
        };
        let now = jiff::Timestamp::now().as_millisecond();
        let (fire, released) =
            watchpost_support::lock(&self.analysis.thresholds).decide(name, spec, event, now);
        self.released
            .extend(released.into_iter().map(|e| (filter, e)));
        fire
    }
}
