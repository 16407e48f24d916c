//! The filter chain: exclude filters first, then include filters in order.
//!
//! Semantics (EventSentry's, see ARCHITECTURE.md):
//! 1. Every exclude filter runs first. One without `actions` that matches drops the
//!    event; one with `actions` only withholds those actions from the event.
//! 2. Include filters run top to bottom. Each one that matches *fires*: its regex
//!    captures become fields (visible to later filters) and its actions are chosen.
//!    A firing filter with `stop = true` ends the chain.
//! 3. An *anomaly filter* (`anomaly = { key, value, ... }`) whose `match` holds asks the
//!    [`Judge`] (the host's baseline) about the event and flags it (`event.anomaly`) when
//!    the judge says the pair is new; it has no actions and does not count as fired.
//!    `anomaly = "only" | "none"` makes a later include filter look only at flagged or
//!    unflagged events.
//!
//! A [`Plan`] per source skips filters whose `match` requires another source, so a
//! hundred filters for other sources cost nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use watchpost_event::{ConfigError, Event, Sym};

use crate::cond::{Captures, Cond, apply_captures};
use crate::prefilter::{Prefilter, positions};
use crate::spec::{AnomalyMode, BaselineSpec, FilterSpec, ThresholdSpec};

/// The chain's stateful decisions, kept outside it: whether an anomaly filter flags an
/// event (the host's baseline) and whether a threshold filter fires (its window).
/// The daemon's and `watchpost test`'s implementation keeps baselines and windows;
/// [`NoBaselines`] keeps nothing.
pub trait Judge {
    /// Anomaly filter `filter` (chain index) matched `event`; true flags the event.
    fn judge(&mut self, filter: usize, baseline: &BaselineSpec, event: &Event) -> bool;

    /// Threshold filter `filter` matched `event`; true fires it now. Matches held back
    /// (`forward = "all"`) are the implementation's to release.
    fn threshold(&mut self, filter: usize, threshold: &ThresholdSpec, event: &Event) -> bool;
}

/// A judge without state: anomaly filters match but flag nothing; threshold filters fire
/// on every match.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBaselines;

impl Judge for NoBaselines {
    fn judge(&mut self, _: usize, _: &BaselineSpec, _: &Event) -> bool {
        false
    }

    fn threshold(&mut self, _: usize, _: &ThresholdSpec, _: &Event) -> bool {
        true
    }
}

/// A filter ready to run.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Its name.
    pub name: Arc<str>,
    /// Action indices (as resolved by the caller).
    pub actions: Vec<usize>,
    /// Action names, comma-separated (`{{ actions }}`).
    pub action_names: Arc<str>,
    /// Exclude filter.
    pub exclude: bool,
    /// Stop after firing.
    pub stop: bool,
    /// Anomaly gate.
    pub anomaly: AnomalyMode,
    /// An anomaly filter's baseline definition.
    pub baseline: Option<BaselineSpec>,
    /// Events it fires on wait for an acknowledgement.
    pub require_ack: bool,
    /// Fires only past a count within a window.
    pub threshold: Option<ThresholdSpec>,
    /// The condition without its `source` test: filters only run inside per-source plans,
    /// which include a filter only for the sources that test allows.
    cond_in_plan: Cond,
    sources: Option<Vec<String>>,
}

impl Filter {
    fn applies_to(&self, source: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == source))
    }
}

/// The compiled chain.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    filters: Vec<Filter>,
    /// Fields any filter's regex creates (never prefilter keys).
    captured: HashSet<Sym>,
}

/// The filters that can apply to one source, in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    excludes: Prefilter,
    includes: Prefilter,
}

impl Plan {
    /// Number of filters this plan may evaluate.
    pub fn len(&self) -> usize {
        self.excludes.filters.len() + self.includes.filters.len()
    }

    /// Whether the plan evaluates no filter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the chain decided for one event.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// The exclude filter that dropped the event.
    pub excluded_by: Option<usize>,
    /// Include filters that fired, in order.
    pub fired: Vec<usize>,
    /// Actions withheld by per-action exclude filters.
    pub withheld: Vec<usize>,
    /// Anomaly filters whose `match` held (the judge was asked), in order.
    pub judged: Vec<usize>,
    /// Of those, the ones that flagged the event.
    pub flagged: Vec<usize>,
    /// Candidate bitset, reused between events.
    scratch: Vec<u64>,
}

impl PartialEq for Verdict {
    fn eq(&self, other: &Self) -> bool {
        (
            self.excluded_by,
            &self.fired,
            &self.withheld,
            &self.judged,
            &self.flagged,
        ) == (
            other.excluded_by,
            &other.fired,
            &other.withheld,
            &other.judged,
            &other.flagged,
        )
    }
}

impl Eq for Verdict {}

impl Verdict {
    /// Clears for reuse.
    pub fn clear(&mut self) {
        self.excluded_by = None;
        self.fired.clear();
        self.withheld.clear();
        self.judged.clear();
        self.flagged.clear();
    }
}

impl Chain {
    /// Builds the chain; `resolve` maps an action name to its index.
    pub fn build(
        specs: Vec<FilterSpec>,
        resolve: &dyn Fn(&str) -> Option<usize>,
        known_actions: &[&str],
    ) -> Result<Chain, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        let mut filters = Vec::new();
        let mut baseline_above = false;
        let captured: HashSet<Sym> = specs
            .iter()
            .flat_map(|s| s.captures.iter().copied())
            .collect();
        for spec in specs {
            if seen.insert(spec.name.clone(), ()).is_some() {
                errors.push(ConfigError::new(
                    spec.name_span.clone(),
                    format!("filter name `{}` is used twice", spec.name),
                ));
            }
            if let Some(span) = &spec.anomaly_span
                && !baseline_above
            {
                errors.push(ConfigError::new(
                    span.clone(),
                    "anomaly = \"only\"/\"none\" needs an anomaly filter (`anomaly = { key = [...], value = [...] }`) above it, and there is none",
                ));
            }
            baseline_above |= spec.baseline.is_some() && spec.enabled;
            let mut actions = Vec::new();
            for (name, span) in &spec.actions {
                match resolve(name) {
                    Some(i) => actions.push(i),
                    None => errors.push(ConfigError::new(
                        span.clone(),
                        format!(
                            "unknown action `{name}` (configured: {})",
                            list_or_none(known_actions)
                        ),
                    )),
                }
            }
            if !spec.enabled {
                continue;
            }
            let sources = spec
                .cond
                .required_sources()
                .map(|v| v.into_iter().map(str::to_owned).collect());
            let names: Vec<&str> = spec.actions.iter().map(|(n, _)| n.as_str()).collect();
            filters.push(Filter {
                name: spec.name.as_str().into(),
                action_names: names.join(",").into(),
                actions,
                exclude: spec.exclude,
                stop: spec.stop,
                anomaly: spec.anomaly,
                baseline: spec.baseline,
                require_ack: spec.require_ack,
                threshold: spec.threshold,
                cond_in_plan: spec.cond.without_source_test().unwrap_or(spec.cond),
                sources,
            });
        }
        if errors.is_empty() {
            Ok(Chain { filters, captured })
        } else {
            Err(errors)
        }
    }

    /// The filter at `index`.
    pub fn filter(&self, index: usize) -> &Filter {
        &self.filters[index]
    }

    /// The enabled filters in chain order (index = position).
    pub fn iter(&self) -> impl Iterator<Item = &Filter> {
        self.filters.iter()
    }

    /// Number of enabled filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether the chain has no filter.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The filters that can apply to events of `source`.
    pub fn plan(&self, source: &str) -> Plan {
        let (mut excludes, mut includes) = (Vec::new(), Vec::new());
        for (i, f) in self.filters.iter().enumerate() {
            if f.applies_to(source) {
                if f.exclude {
                    excludes.push(i)
                } else {
                    includes.push(i)
                }
            }
        }
        let cond_of = |i: usize| &self.filters[i].cond_in_plan;
        Plan {
            excludes: Prefilter::build(excludes, cond_of, &self.captured),
            includes: Prefilter::build(includes, cond_of, &self.captured),
        }
    }

    /// Runs the chain over `event` using a plan made for its source, without baselines
    /// (anomaly filters flag nothing; see [`Chain::evaluate_with`]).
    pub fn evaluate(&self, plan: &Plan, event: &mut Event, verdict: &mut Verdict) {
        self.evaluate_with(plan, event, verdict, &mut NoBaselines);
    }

    /// Runs the chain over `event` using a plan made for its source; anomaly filters ask
    /// `judge`.
    pub fn evaluate_with(
        &self,
        plan: &Plan,
        event: &mut Event,
        verdict: &mut Verdict,
        judge: &mut dyn Judge,
    ) {
        verdict.clear();
        let mut bits = std::mem::take(&mut verdict.scratch);
        self.run(plan, event, verdict, &mut bits, judge);
        verdict.scratch = bits;
    }

    /// Whether any filter has a baseline.
    pub fn has_baselines(&self) -> bool {
        self.filters.iter().any(|f| f.baseline.is_some())
    }

    /// Whether any filter has a threshold.
    pub fn has_thresholds(&self) -> bool {
        self.filters.iter().any(|f| f.threshold.is_some())
    }

    /// An include filter matched: fire it, or (an anomaly filter) ask the judge. True when
    /// the chain stops here.
    fn matched(
        &self,
        i: usize,
        event: &mut Event,
        verdict: &mut Verdict,
        judge: &mut dyn Judge,
    ) -> bool {
        let f = &self.filters[i];
        match &f.baseline {
            Some(b) => {
                verdict.judged.push(i);
                if judge.judge(i, b, event) {
                    event.anomaly = true;
                    verdict.flagged.push(i);
                }
            }
            None => {
                if let Some(t) = &f.threshold
                    && !judge.threshold(i, t, event)
                {
                    // Below the threshold (or suppressed): not fired, and no stop.
                    return false;
                }
                verdict.fired.push(i)
            }
        }
        f.stop
    }

    fn run(
        &self,
        plan: &Plan,
        event: &mut Event,
        verdict: &mut Verdict,
        bits: &mut Vec<u64>,
        judge: &mut dyn Judge,
    ) {
        let mut caps: Captures = Vec::new();
        plan.excludes.candidates(event, bits);
        for pos in positions(bits) {
            let i = plan.excludes.filters[pos];
            let f = &self.filters[i];
            if f.cond_in_plan.eval(event, &mut caps) {
                caps.clear();
                if f.actions.is_empty() {
                    verdict.excluded_by = Some(i);
                    return;
                }
                verdict.withheld.extend_from_slice(&f.actions);
            }
        }
        plan.includes.candidates(event, bits);
        for pos in positions(bits) {
            let i = plan.includes.filters[pos];
            let f = &self.filters[i];
            let gate = match f.anomaly {
                AnomalyMode::Any => true,
                AnomalyMode::Only => event.anomaly,
                AnomalyMode::None => !event.anomaly,
            };
            if !gate {
                continue;
            }
            if f.cond_in_plan.eval(event, &mut caps) {
                apply_captures(event, &mut caps);
                if self.matched(i, event, verdict, judge) {
                    return;
                }
            } else {
                caps.clear();
            }
        }
    }

    /// The same as [`Chain::evaluate`] without the prefilter (every filter of the source
    /// is evaluated): the reference the prefilter is tested against.
    #[cfg(test)]
    pub(crate) fn evaluate_naive(&self, event: &mut Event, judge: &mut dyn Judge) -> Verdict {
        let plan = self.plan(&event.source);
        let mut v = Verdict::default();
        let mut caps: Captures = Vec::new();
        for i in plan.excludes.filters.iter().chain(&plan.includes.filters) {
            let f = &self.filters[*i];
            if f.exclude {
                if f.cond_in_plan.eval(event, &mut caps) {
                    caps.clear();
                    if f.actions.is_empty() {
                        v.excluded_by = Some(*i);
                        return v;
                    }
                    v.withheld.extend_from_slice(&f.actions);
                }
                continue;
            }
            let gate = match f.anomaly {
                AnomalyMode::Any => true,
                AnomalyMode::Only => event.anomaly,
                AnomalyMode::None => !event.anomaly,
            };
            if gate && f.cond_in_plan.eval(event, &mut caps) {
                apply_captures(event, &mut caps);
                if self.matched(*i, event, &mut v, judge) {
                    break;
                }
            } else {
                caps.clear();
            }
        }
        v
    }

    /// Runs the chain with a plan computed on the spot (for one-off use).
    pub fn evaluate_once(&self, event: &mut Event) -> Verdict {
        let plan = self.plan(&event.source);
        let mut v = Verdict::default();
        self.evaluate(&plan, event, &mut v);
        v
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
