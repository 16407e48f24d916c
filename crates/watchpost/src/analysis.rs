//! What the daemon and the replays keep beyond the filter chain: the anomaly baselines
//! that anomaly filters consult (`watchpost-anomaly`) and the event store that keeps
//! every matched event (`watchpost-store`).
//!
//! * `run` opens the baselines under `<state_dir>/baselines` and the store (`[store]`);
//!   each source thread judges with a [`BaselineJudge`] and stores what a filter matched.
//! * `test` opens a fresh baseline in a temporary directory (the daemon's stays
//!   untouched), so a replay shows what the daemon would have flagged had it lived
//!   through the same events; no store.
//! * `baseline learn` opens the daemon's baselines and records pairs without acting.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use watchpost_anomaly::{AnomalySpec, Baselines, FilterId, Options, Verdict as Judgement};
use watchpost_event::Event;
use watchpost_filters::{BaselineSpec, Chain, Judge, Verdict};
use watchpost_store::{NewEvent, StoreOptions, Writer};

use crate::config::Config;

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
    baselines: Option<Baselines>,
    /// Chain index → the baseline's id (anomaly filters only).
    ids: Vec<Option<FilterId>>,
    store: Option<std::sync::Arc<Writer>>,
    /// Keeps a temporary baseline directory alive (replays).
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis")
            .field("baselines", &self.baselines.is_some())
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
    /// Opens the baselines (when the chain has anomaly filters) and, with `store`, the
    /// event store.
    pub fn open(
        config: &Config,
        chain: &Chain,
        home: BaselineHome,
        store: bool,
    ) -> Result<Analysis> {
        let mut temp = None;
        let baselines = if chain.has_baselines() {
            let dir = match home {
                BaselineHome::State => baseline_dir(config),
                BaselineHome::Temporary => {
                    let t =
                        tempfile::tempdir().context("creating a temporary baseline directory")?;
                    let d = t.path().to_path_buf();
                    temp = Some(t);
                    d
                }
            };
            let options = Options {
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
            Some(open_baselines(&dir, options)?)
        } else {
            None
        };
        let mut ids = vec![None; chain.len()];
        if let Some(b) = &baselines {
            for (i, f) in chain.iter().enumerate() {
                if let Some(spec) = &f.baseline {
                    let reg = b
                        .filter(&f.name, &anomaly_spec(spec))
                        .with_context(|| format!("anomaly filter `{}`", f.name))?;
                    if let Some(change) = &reg.definition_changed {
                        tracing::warn!(filter = %f.name, change = ?change, "the anomaly filter's key/value definition changed: its baseline starts afresh");
                    }
                    ids[i] = Some(reg.id);
                }
            }
        }
        let store = if store && config.store.enabled {
            let options = StoreOptions {
                max_age: config.store.max_age,
                max_bytes: config.store.max_bytes,
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
        Ok(Analysis {
            baselines,
            ids,
            store,
            _temp: temp,
        })
    }

    /// A judge for one source thread (or one replay).
    pub fn judge(&self) -> BaselineJudge<'_> {
        BaselineJudge {
            analysis: self,
            verdicts: Vec::new(),
        }
    }

    /// Stores an event a filter matched (fired, or an anomaly filter judged it); returns its
    /// id in the store. Never waits (a full store queue drops and counts).
    pub fn store(
        &self,
        chain: &Chain,
        event: &Event,
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
        let mut e = NewEvent::from_event(event, names);
        let reasons: Vec<String> = why
            .iter()
            .filter(|(_, v)| v.is_anomaly())
            .map(|(i, v)| format!("{}: {v}", chain.filter(*i).name))
            .collect();
        if !reasons.is_empty() {
            e.anomaly_why = Some(reasons.join("; "));
        }
        e.needs_ack = verdict.fired.iter().any(|&i| chain.filter(i).require_ack);
        writer.submit(e)
    }

    /// Where action outcomes of stored events go (the store), for the dispatcher.
    pub fn outcome_sink(&self) -> Option<watchpost_actions::OutcomeSink> {
        let writer = self.store.clone()?;
        Some(std::sync::Arc::new(
            move |event, action: &str, ok, detail: &str| {
                writer.outcome(watchpost_store::Outcome {
                    event,
                    action: action.to_owned(),
                    at_ms: jiff::Timestamp::now().as_millisecond(),
                    attempt: 1,
                    ok,
                    detail: detail.to_owned(),
                });
            },
        ))
    }

    /// Commits pending baseline pairs and stored events, stops the store's writer.
    pub fn close(self) {
        if let Some(w) = self.store {
            match std::sync::Arc::try_unwrap(w) {
                Ok(w) => {
                    let stats = w.shutdown();
                    tracing::info!(stats = ?stats, "event store totals");
                }
                Err(w) => {
                    // An action worker that outlived shutdown still holds the sink.
                    let flushed = w.flush(Duration::from_secs(5));
                    tracing::info!(stats = ?w.stats(), flushed, "event store totals");
                }
            }
        }
        if let Some(b) = self.baselines {
            let stats = b.stats();
            if let Err(e) = b.close() {
                tracing::error!(error = %e, "closing the anomaly baselines");
            } else {
                tracing::info!(stats = ?stats, "anomaly baseline totals");
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
    /// The answers for the current event: (chain index, verdict).
    pub verdicts: Vec<(usize, Judgement)>,
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
        let (Some(b), Some(Some(id))) = (&self.analysis.baselines, self.analysis.ids.get(filter))
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
}
