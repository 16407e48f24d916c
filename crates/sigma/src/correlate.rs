//! Sigma correlation rules (`event_count`, `value_count`, `temporal`,
//! `temporal_ordered`) over the live stream of base-rule matches.
//!
//! A [`Correlator`] is fed each [`Match`] with its event and the event's time. State is
//! one window per (correlation, group-by values): the matches of the last `timespan`.
//! When the condition holds the correlation fires once and its window is cleared, so
//! a burst fires once per `threshold` matches rather than on every later match.
//! Conditions `lt`/`lte` (too few events in a window) need a timer and are rejected at
//! load time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value as Json;
use watchpost_event::{Event, Sym};

use crate::ruleset::{Level, Match, Ruleset};

/// The kind of a correlation.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// At least / exactly N matching events.
    EventCount,
    /// N distinct values of `field`.
    ValueCount {
        /// The field counted.
        field: String,
    },
    /// Every referenced rule matched in the window.
    Temporal,
    /// Every referenced rule matched in the window, in the order listed.
    TemporalOrdered,
}

/// A comparison in a correlation `condition`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// `gt: n`
    Gt(u64),
    /// `gte: n`
    Gte(u64),
    /// `eq: n`
    Eq(u64),
}

impl Threshold {
    fn holds(self, n: u64) -> bool {
        match self {
            Threshold::Gt(t) => n > t,
            Threshold::Gte(t) => n >= t,
            Threshold::Eq(t) => n == t,
        }
    }
}

/// A parsed correlation rule.
#[derive(Debug, Clone)]
pub struct CorrelationRule {
    /// `title`.
    pub title: Arc<str>,
    /// `id`.
    pub id: Option<Arc<str>>,
    /// `name`.
    pub name: Option<String>,
    /// `level`.
    pub level: Level,
    /// The type.
    pub kind: Kind,
    /// Referenced rules (ids or names).
    pub rules: Vec<String>,
    /// `group-by` fields.
    pub group_by: Vec<String>,
    /// `timespan` in seconds.
    pub timespan_secs: i64,
    /// The threshold (temporal kinds: all referenced rules).
    pub threshold: Threshold,
}

/// Parses `5m`, `30s`, `1h`, `2d`, `1w` into seconds.
pub fn parse_timespan(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n.parse().map_err(|_| format!("bad timespan `{s}`"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        "M" => 30 * 86400,
        "y" => 365 * 86400,
        _ => return Err(format!("bad timespan unit in `{s}`")),
    };
    Ok(n * mult)
}

pub(crate) fn parse(
    c: &Json,
    title: Arc<str>,
    id: Option<Arc<str>>,
    name: Option<String>,
    level: Level,
) -> Result<CorrelationRule, String> {
    let c = c.as_object().ok_or("correlation must be a mapping")?;
    let strs = |v: Option<&Json>| -> Vec<String> {
        match v {
            Some(Json::String(s)) => vec![s.clone()],
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => vec![],
        }
    };
    let rules = strs(c.get("rules"));
    if rules.is_empty() {
        return Err("correlation references no rules".into());
    }
    let group_by = strs(c.get("group-by"));
    let timespan_secs = parse_timespan(
        c.get("timespan")
            .and_then(Json::as_str)
            .ok_or("correlation has no timespan")?,
    )?;
    let ty = c
        .get("type")
        .and_then(Json::as_str)
        .ok_or("correlation has no type")?;
    let cond = c.get("condition").and_then(Json::as_object);
    let mut field = None;
    let mut threshold = None;
    if let Some(cond) = cond {
        for (k, v) in cond {
            let n = || {
                v.as_u64()
                    .ok_or_else(|| format!("condition `{k}` needs a count"))
            };
            match k.as_str() {
                "gt" => threshold = Some(Threshold::Gt(n()?)),
                "gte" => threshold = Some(Threshold::Gte(n()?)),
                "eq" => threshold = Some(Threshold::Eq(n()?)),
                "lt" | "lte" => {
                    return Err(format!(
                        "correlation condition `{k}` (too few events) is not supported"
                    ));
                }
                "field" => field = v.as_str().map(String::from),
                other => return Err(format!("unknown correlation condition `{other}`")),
            }
        }
    }
    let kind = match ty {
        "event_count" => Kind::EventCount,
        "value_count" => Kind::ValueCount {
            field: field.ok_or("value_count needs condition.field")?,
        },
        "temporal" => Kind::Temporal,
        "temporal_ordered" => Kind::TemporalOrdered,
        other => return Err(format!("correlation type `{other}` is not supported")),
    };
    let threshold = match (&kind, threshold) {
        (Kind::Temporal | Kind::TemporalOrdered, t) => {
            t.unwrap_or(Threshold::Gte(rules.len() as u64))
        }
        (_, Some(t)) => t,
        (_, None) => return Err("correlation has no condition".into()),
    };
    Ok(CorrelationRule {
        title,
        id,
        name,
        level,
        kind,
        rules,
        group_by,
        timespan_secs,
        threshold,
    })
}

/// A correlation that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationMatch {
    /// Index into [`Ruleset::correlations`].
    pub correlation: usize,
    /// Its title.
    pub title: Arc<str>,
    /// Its level.
    pub level: Level,
    /// The group-by values (in `group-by` order).
    pub group: Vec<String>,
    /// How many events (event_count), distinct values (value_count) or rules
    /// (temporal) were seen in the window.
    pub count: u64,
}

struct Compiled {
    /// Per detection rule index: position in `rules` (for temporal), or none.
    refs: HashMap<usize, usize>,
    group_by: Vec<Sym>,
    field: Option<Sym>,
}

/// One group's recent matches: time, position of the rule in `rules`, counted value.
type Window = VecDeque<(Timestamp, usize, String)>;

/// Stateful evaluation of correlation rules.
pub struct Correlator {
    rules: Vec<CorrelationRule>,
    compiled: Vec<Compiled>,
    /// detection rule index → correlations that reference it.
    by_rule: HashMap<usize, Vec<usize>>,
    windows: HashMap<(usize, Vec<String>), Window>,
}

impl Correlator {
    /// Resolves each correlation's `rules` (by id, then by `name`, then by title) in
    /// `rs`; returns the correlator and the references that did not resolve.
    pub fn new(rs: &Ruleset) -> (Correlator, Vec<String>) {
        let mut missing = Vec::new();
        let mut compiled = Vec::new();
        let mut by_rule: HashMap<usize, Vec<usize>> = HashMap::new();
        for (ci, c) in rs.correlations().iter().enumerate() {
            let mut refs = HashMap::new();
            for (pos, r) in c.rules.iter().enumerate() {
                let found = rs.rules().iter().position(|x| {
                    x.id.as_deref() == Some(r.as_str())
                        || x.name.as_deref() == Some(r.as_str())
                        || &*x.title == r.as_str()
                });
                match found {
                    Some(i) => {
                        refs.insert(i, pos);
                        by_rule.entry(i).or_default().push(ci);
                    }
                    None => missing.push(format!("{}: unknown rule `{r}`", c.title)),
                }
            }
            let sym = |f: &str| {
                Sym::new(
                    crate::logsource::WINDOWS_COMMON
                        .iter()
                        .find(|(a, _)| *a == f)
                        .map_or(f, |(_, b)| *b),
                )
            };
            compiled.push(Compiled {
                refs,
                group_by: c.group_by.iter().map(|f| sym(f)).collect(),
                field: match &c.kind {
                    Kind::ValueCount { field } => Some(sym(field)),
                    _ => None,
                },
            });
        }
        (
            Correlator {
                rules: rs.correlations().to_vec(),
                compiled,
                by_rule,
                windows: HashMap::new(),
            },
            missing,
        )
    }

    /// Feeds one base-rule match of `ev` at `time`; correlations that fire are appended
    /// to `out`.
    pub fn feed(
        &mut self,
        m: &Match,
        ev: &Event,
        time: Timestamp,
        out: &mut Vec<CorrelationMatch>,
    ) {
        let Some(cs) = self.by_rule.get(&m.rule) else {
            return;
        };
        for &ci in cs {
            let c = &self.rules[ci];
            let comp = &self.compiled[ci];
            let group: Vec<String> = comp
                .group_by
                .iter()
                .map(|s| ev.get_str(*s).map(|v| v.into_owned()).unwrap_or_default())
                .collect();
            let value = comp
                .field
                .map(|s| ev.get_str(s).map(|v| v.into_owned()).unwrap_or_default())
                .unwrap_or_default();
            let pos = comp.refs.get(&m.rule).copied().unwrap_or(0);
            let w = self.windows.entry((ci, group.clone())).or_default();
            let start = time
                .checked_sub(jiff::SignedDuration::from_secs(c.timespan_secs))
                .unwrap_or(Timestamp::MIN);
            while w.front().is_some_and(|(t, _, _)| *t < start) {
                w.pop_front();
            }
            w.push_back((time, pos, value));
            let count = match &c.kind {
                Kind::EventCount => w.len() as u64,
                Kind::ValueCount { .. } => {
                    let mut vals: Vec<&str> = w.iter().map(|(_, _, v)| v.as_str()).collect();
                    vals.sort_unstable();
                    vals.dedup();
                    vals.len() as u64
                }
                Kind::Temporal => {
                    let mut seen: Vec<usize> = w.iter().map(|(_, p, _)| *p).collect();
                    seen.sort_unstable();
                    seen.dedup();
                    seen.len() as u64
                }
                Kind::TemporalOrdered => {
                    let mut next = 0;
                    for (_, p, _) in w.iter() {
                        if *p == next {
                            next += 1;
                        }
                    }
                    next as u64
                }
            };
            if c.threshold.holds(count) {
                out.push(CorrelationMatch {
                    correlation: ci,
                    title: c.title.clone(),
                    level: c.level,
                    group,
                    count,
                });
                w.clear();
            }
        }
    }

    /// Drops windows with nothing newer than `now - timespan` (call now and then on a
    /// long-running stream to bound memory).
    pub fn expire(&mut self, now: Timestamp) {
        let rules = &self.rules;
        self.windows.retain(|(ci, _), w| {
            let start = now
                .checked_sub(jiff::SignedDuration::from_secs(rules[*ci].timespan_secs))
                .unwrap_or(Timestamp::MIN);
            w.back().is_some_and(|(t, _, _)| *t >= start)
        });
    }
}
