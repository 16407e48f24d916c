//! The filter chain: exclude filters first, then include filters in order.
//!
//! Semantics (EventSentry's, see ARCHITECTURE.md):
//! 1. Every exclude filter runs first. One without `actions` that matches drops the
//!    event; one with `actions` only withholds those actions from the event.
//! 2. Include filters run top to bottom. Each one that matches *fires*: its regex
//!    captures become fields (visible to later filters) and its actions are chosen.
//!    A firing filter with `stop = true` ends the chain.
//! 3. `anomaly = "only" | "none"` makes an include filter look only at flagged or
//!    unflagged events.
//!
//! A [`Plan`] per source skips filters whose `match` requires another source, so a
//! hundred filters for other sources cost nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use watchpost_event::{ConfigError, Event, Sym};

use crate::cond::{Captures, Cond, apply_captures};
use crate::prefilter::{Prefilter, positions};
use crate::spec::{AnomalyMode, FilterSpec};

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
    /// Candidate bitset, reused between events.
    scratch: Vec<u64>,
}

impl PartialEq for Verdict {
    fn eq(&self, other: &Self) -> bool {
        (self.excluded_by, &self.fired, &self.withheld)
            == (other.excluded_by, &other.fired, &other.withheld)
    }
}

impl Eq for Verdict {}

impl Verdict {
    /// Clears for reuse.
    pub fn clear(&mut self) {
        self.excluded_by = None;
        self.fired.clear();
        self.withheld.clear();
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
            if let Some(span) = &spec.anomaly_span {
                errors.push(ConfigError::new(
                    span.clone(),
                    "anomaly = \"only\"/\"none\" needs an anomaly filter above it, and none is configured",
                ));
            }
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

    /// Runs the chain over `event` using a plan made for its source.
    pub fn evaluate(&self, plan: &Plan, event: &mut Event, verdict: &mut Verdict) {
        verdict.clear();
        let mut bits = std::mem::take(&mut verdict.scratch);
        self.run(plan, event, verdict, &mut bits);
        verdict.scratch = bits;
    }

    fn run(&self, plan: &Plan, event: &mut Event, verdict: &mut Verdict, bits: &mut Vec<u64>) {
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
                verdict.fired.push(i);
                if f.stop {
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
    pub(crate) fn evaluate_naive(&self, event: &mut Event) -> Verdict {
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
                v.fired.push(*i);
                if f.stop {
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
