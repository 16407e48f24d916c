//! `throttle` and `dedupe`: per-action limits whose state survives restarts.
//!
//! `dedupe = { key = "…", within = "10m" }` lets one job per rendered key through within
//! the window (counted from the first one); `throttle = { key = "…", count = 1, per =
//! "1h" }` lets `count` jobs per key through per window (a fixed window starting with the
//! first job). A duplicate does not use up the throttle. Suppressed jobs are counted
//! (`suppressed`) and reported to the event store as the outcome `duplicate` /
//! `throttled` (attempt 0: never attempted).
//!
//! The state is kept in memory (at most [`MAX_KEYS`] keys per limit: expired keys are
//! pruned first, then the oldest go) and written to `<state_dir>/actions/<name>.limits.json`
//! (temporary file, then rename) at most every [`SAVE_EVERY`] when it changed, and when
//! the worker ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::Tpl;

/// Most keys remembered per limit.
pub(crate) const MAX_KEYS: usize = 10_000;
/// Longest time between two saves of changed state.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The configured limits of an action.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimitSpec {
    pub(crate) throttle: Option<(Tpl, u32, Duration)>,
    pub(crate) dedupe: Option<(Tpl, Duration)>,
}

impl LimitSpec {
    pub(crate) fn is_empty(&self) -> bool {
        self.throttle.is_none() && self.dedupe.is_none()
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        self.throttle
            .iter()
            .map(|t| &t.0)
            .chain(self.dedupe.iter().map(|d| &d.0))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// key → (window start, jobs let through in it), Unix milliseconds.
    #[serde(default)]
    throttle: HashMap<String, (i64, u32)>,
    /// key → when it was first let through, Unix milliseconds.
    #[serde(default)]
    dedupe: HashMap<String, i64>,
}

/// The live limits of one action.
#[derive(Debug)]
pub(crate) struct Limits {
    spec: LimitSpec,
    path: Option<PathBuf>,
    state: State,
    dirty: bool,
    saved: Instant,
    key: String,
}

impl Limits {
    /// The limits with the state saved at `path` (none: memory only).
    pub(crate) fn load(spec: LimitSpec, path: Option<PathBuf>) -> Limits {
        let state = path
            .as_deref()
            .and_then(|p| match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(file = %p.display(), error = %e, "unreadable throttle/dedupe state; starting afresh");
                        None
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "cannot read throttle/dedupe state");
                    None
                }
            })
            .unwrap_or_default();
        let mut l = Limits {
            spec,
            path,
            state,
            dirty: false,
            saved: Instant::now(),
            key: String::new(),
        };
        l.prune(jiff::Timestamp::now().as_millisecond());
        l
    }

    fn prune(&mut self, now: i64) {
        prune(&self.spec, &mut self.state, now);
    }

    /// Whether `job` is held back: `Some("duplicate")` or `Some("throttled")`.
    pub(crate) fn suppress(&mut self, job: &Job) -> Option<&'static str> {
        let now = jiff::Timestamp::now().as_millisecond();
        let scope = job.scope();
        if let Some((tpl, within)) = &self.spec.dedupe {
            self.key.clear();
            tpl.template.render_into(&scope, &mut self.key);
            match self.state.dedupe.get(&self.key) {
                Some(t) if now - *t < within.as_millis() as i64 => return Some("duplicate"),
                _ => {
                    if self.state.dedupe.len() >= MAX_KEYS {
                        prune(&self.spec, &mut self.state, now);
                    }
                    self.state.dedupe.insert(self.key.clone(), now);
                    self.dirty = true;
                }
            }
        }
        if let Some((tpl, count, per)) = &self.spec.throttle {
            self.key.clear();
            tpl.template.render_into(&scope, &mut self.key);
            if self.state.throttle.len() >= MAX_KEYS && !self.state.throttle.contains_key(&self.key)
            {
                prune(&self.spec, &mut self.state, now);
            }
            let entry = self
                .state
                .throttle
                .entry(self.key.clone())
                .or_insert((now, 0));
            if now - entry.0 >= per.as_millis() as i64 {
                *entry = (now, 0);
            }
            if entry.1 >= *count {
                return Some("throttled");
            }
            entry.1 += 1;
            self.dirty = true;
        }
        None
    }

    /// Saves the state if it changed and the last save is [`SAVE_EVERY`] ago.
    pub(crate) fn maybe_save(&mut self) {
        if self.dirty && self.saved.elapsed() >= SAVE_EVERY {
            self.save();
        }
    }

    /// Saves the state now (if it changed).
    pub(crate) fn save(&mut self) {
        if self.path.is_none() || !self.dirty {
            return;
        }
        self.prune(jiff::Timestamp::now().as_millisecond());
        let Some(path) = &self.path else { return };
        let json = serde_json::to_vec(&self.state).unwrap_or_default();
        match watchpost_support::write_atomic(path, &json) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot save throttle/dedupe state");
            }
        }
        self.saved = Instant::now();
    }
}

/// Drops expired keys (and, when still full, the older half).
fn prune(spec: &LimitSpec, state: &mut State, now: i64) {
    if let Some((_, _, per)) = &spec.throttle {
        let per = per.as_millis() as i64;
        state.throttle.retain(|_, (start, _)| now - *start < per);
        trim(&mut state.throttle, |v| v.0);
    } else {
        state.throttle.clear();
    }
    if let Some((_, within)) = &spec.dedupe {
        let within = within.as_millis() as i64;
        state.dedupe.retain(|_, t| now - *t < within);
        trim(&mut state.dedupe, |v| *v);
    } else {
        state.dedupe.clear();
    }
}

/// Keeps the newest [`MAX_KEYS`] / 2 entries once the map is full.
fn trim<V>(map: &mut HashMap<String, V>, time: impl Fn(&V) -> i64) {
    if map.len() < MAX_KEYS {
        return;
    }
    let mut times: Vec<i64> = map.values().map(&time).collect();
    times.sort_unstable();
    let cut = times[times.len() - MAX_KEYS / 2];
    map.retain(|_, v| time(v) >= cut);
}

/// The gate in front of an action without a deliverer: suppressed jobs stop here, the
/// rest go on to the action's own workers.
pub(crate) fn gate(
    name: &str,
    rx: &Receiver<Job>,
    tx: Sender<Job>,
    limits: &mut Limits,
    counters: &Counters,
    ctl: &Control,
) {
    loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(job) => {
                if let Some(why) = limits.suppress(&job) {
                    counters.suppressed();
                    ctl.report(name, &job, 0, Err(why));
                } else if tx.send(job).is_err() {
                    break;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        limits.maybe_save();
    }
    limits.save();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use watchpost_event::{Event, Sym, Value};

    fn job(host: &str, raw: &str) -> Job {
        let mut e = Event::new(Arc::from("s"), Arc::from(host), raw.to_owned());
        e.push(Sym::new("risk"), Value::Str("high".into()));
        e.finish();
        Job {
            event: Arc::new(e),
            filter: Arc::from("f"),
            actions: Arc::from("a"),
            stored: None,
            ticket: Default::default(),
        }
    }

    #[test]
    fn throttle_and_dedupe_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actions/a.limits.json");
        let spec = LimitSpec {
            throttle: Some((
                Tpl::builtin("{{ host }}/{{ risk }}"),
                2,
                Duration::from_secs(3600),
            )),
            dedupe: Some((Tpl::builtin("{{ raw }}"), Duration::from_secs(600))),
        };
        let mut l = Limits::load(spec.clone(), Some(path.clone()));
        assert_eq!(l.suppress(&job("pc1", "x")), None);
        assert_eq!(l.suppress(&job("pc1", "x")), Some("duplicate"));
        assert_eq!(l.suppress(&job("pc1", "y")), None);
        assert_eq!(l.suppress(&job("pc1", "z")), Some("throttled"));
        assert_eq!(l.suppress(&job("pc2", "w")), None);
        l.save();
        let mut l = Limits::load(spec, Some(path));
        assert_eq!(l.suppress(&job("pc1", "x")), Some("duplicate"));
        assert_eq!(l.suppress(&job("pc1", "v")), Some("throttled"));
        assert_eq!(l.suppress(&job("pc2", "u")), None);
    }

    #[test]
    fn the_state_is_bounded() {
        let spec = LimitSpec {
            throttle: None,
            dedupe: Some((Tpl::builtin("{{ raw }}"), Duration::from_secs(600))),
        };
        let mut l = Limits::load(spec, None);
        for i in 0..(MAX_KEYS + 10) {
            assert_eq!(l.suppress(&job("h", &i.to_string())), None);
        }
        assert!(l.state.dedupe.len() <= MAX_KEYS);
    }
}
