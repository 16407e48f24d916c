//! Sigma correlation rules over the stream of base-rule matches: `event_count`,
//! `value_count`, `temporal`, `temporal_ordered` (Sigma correlation specification 2.x)
//! and the numeric aggregations `value_sum`, `value_avg`, `value_percentile` (as
//! pySigma's and rsigma's correlation types).
//!
//! A [`Correlator`] is fed each [`Match`] with its event and the event's time, and
//! told the time of every other event ([`Correlator::advance`]) so windows can close.
//! State is one window per (correlation, group-by values). There are two kinds of
//! window, chosen by the condition:
//!
//! * **Lower bounds only** (`gt`, `gte`): a *sliding* window of the matches of the last
//!   `timespan`, evaluated at every match. When the condition holds the correlation
//!   fires at once (at that match) and the window is cleared, so a burst fires once per
//!   threshold rather than on every later match.
//! * **Any upper bound** (`lt`, `lte`, `eq`, or a range such as `gt: 100` + `lte: 200`):
//!   "too few" or "exactly" can only be known when no more events can join, so the
//!   window is *fixed*: it opens at the group's first match at time `t0`, takes the
//!   matches up to `t0 + timespan` (inclusive), and is evaluated once when it closes:
//!   when an event (any event, matched or not) later than `t0 + timespan` is seen, or
//!   at [`Correlator::finish`] (the end of a hunt). It fires at most once, with the
//!   time `t0 + timespan`; the next match opens a new window. A group that had no match
//!   at all has no window, so `lt` reports groups that were seen too rarely, never
//!   groups that were never seen (the count is at least 1).
//!
//! Values for `value_sum`/`value_avg`/`value_percentile` are the `condition.field`
//! values that parse as numbers (others are skipped); `value_percentile` compares the
//! `condition.percentile`-th percentile (0–100, default 50) of the window's values,
//! by linear interpolation between closest ranks.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use watchpost_event::{Event, Sym};

use crate::correlation::{CorrelationRule, Kind};
use crate::level::Level;
use crate::ruleset::{Match, Ruleset};

/// A correlation that fired.
#[derive(Debug, Clone)]
pub struct CorrelationMatch {
    /// Index into [`Ruleset::correlations`].
    pub correlation: usize,
    /// Its title.
    pub title: Arc<str>,
    /// Its level.
    pub level: Level,
    /// The group-by values (in `group-by` order).
    pub group: Vec<String>,
    /// Matches in the window.
    pub count: u64,
    /// The value the condition was tested on: the event count (event_count), distinct
    /// values (value_count), referenced rules seen (temporal, in order for
    /// temporal_ordered), or the sum, mean or percentile.
    pub value: f64,
    /// When it fired: the time of the match that made the condition hold, or the end of
    /// a fixed window (`t0 + timespan`).
    pub time: Timestamp,
    /// For a fixed window (upper-bound condition), the last event that joined it (the
    /// caller has no current event then); `None` when it fired on the event being fed.
    pub event: Option<Event>,
}

impl PartialEq for CorrelationMatch {
    fn eq(&self, o: &Self) -> bool {
        (self.correlation, &self.group, self.count, self.time)
            == (o.correlation, &o.group, o.count, o.time)
            && self.value.to_bits() == o.value.to_bits()
    }
}

struct Compiled {
    /// Per detection rule index: position in `rules` (for temporal), or none.
    refs: HashMap<usize, usize>,
    group_by: Vec<Sym>,
    field: Option<Sym>,
}

/// One entry of a window: time, position of the rule in `rules`, the field's value.
type Entry = (Timestamp, usize, String);

#[derive(Default)]
struct Window {
    entries: VecDeque<Entry>,
    /// Fixed windows: when the window closes (`t0 + timespan`).
    end: Option<Timestamp>,
    /// Fixed windows: the last event that joined.
    last: Option<Event>,
}

/// Stateful evaluation of correlation rules.
pub struct Correlator {
    rules: Vec<CorrelationRule>,
    compiled: Vec<Compiled>,
    /// detection rule index → correlations that reference it.
    by_rule: HashMap<usize, Vec<usize>>,
    windows: HashMap<(usize, Vec<String>), Window>,
    /// The earliest end of an open fixed window.
    next_close: Option<Timestamp>,
    /// When idle sliding windows were last dropped (event time).
    last_expire: Option<Timestamp>,
}

fn span(secs: i64) -> SignedDuration {
    SignedDuration::from_secs(secs)
}

fn number(s: &str) -> Option<f64> {
    watchpost_event::parse_number(s).filter(|x| x.is_finite())
}

/// The `p`-th percentile (0–100) of sorted `v` by linear interpolation between closest
/// ranks (rank = p/100 × (n − 1)).
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (rank.ceil() as usize).min(n - 1);
    Some(v[lo] + (rank - lo as f64) * (v[hi] - v[lo]))
}

/// The value the condition is tested on; `None` when there is none (no numeric value).
fn value(kind: &Kind, entries: &VecDeque<Entry>) -> Option<f64> {
    let nums = || -> Vec<f64> { entries.iter().filter_map(|(_, _, v)| number(v)).collect() };
    Some(match kind {
        Kind::EventCount => entries.len() as f64,
        Kind::ValueCount { .. } => {
            let mut vals: Vec<&str> = entries
                .iter()
                .map(|(_, _, v)| v.as_str())
                .filter(|v| !v.is_empty())
                .collect();
            vals.sort_unstable();
            vals.dedup();
            vals.len() as f64
        }
        Kind::Temporal => {
            let mut seen: Vec<usize> = entries.iter().map(|(_, p, _)| *p).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len() as f64
        }
        Kind::TemporalOrdered => {
            let mut next = 0;
            for (_, p, _) in entries {
                if *p == next {
                    next += 1;
                }
            }
            next as f64
        }
        Kind::ValueSum { .. } => {
            let v = nums();
            if v.is_empty() {
                return None;
            }
            v.iter().sum()
        }
        Kind::ValueAvg { .. } => {
            let v = nums();
            if v.is_empty() {
                return None;
            }
            v.iter().sum::<f64>() / v.len() as f64
        }
        Kind::ValuePercentile { percentile: p, .. } => {
            let mut v = nums();
            v.sort_by(f64::total_cmp);
            percentile(&v, *p)?
        }
    })
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
                field: c.kind.field().map(sym),
            });
        }
        (
            Correlator {
                rules: rs.correlations().to_vec(),
                compiled,
                by_rule,
                windows: HashMap::new(),
                next_close: None,
                last_expire: None,
            },
            missing,
        )
    }

    /// Whether a correlation references detection rule `rule` (its matches need feeding).
    pub fn wants(&self, rule: usize) -> bool {
        self.by_rule.contains_key(&rule)
    }

    /// The event fields the correlations referencing `rule` read (group-by fields and
    /// the counted or summed field): a caller that keeps matches for later (a hunt) can
    /// keep only these.
    pub fn fields(&self, rule: usize) -> Vec<Sym> {
        let mut out: Vec<Sym> = Vec::new();
        for &ci in self.by_rule.get(&rule).map_or(&[][..], Vec::as_slice) {
            let c = &self.compiled[ci];
            for s in c.group_by.iter().chain(c.field.iter()) {
                if !out.contains(s) {
                    out.push(*s);
                }
            }
        }
        out
    }

    /// Whether some correlation has a fixed window (an upper-bound condition), so the
    /// time of every event matters ([`Correlator::advance`]).
    pub fn has_timed(&self) -> bool {
        self.rules.iter().any(|r| r.condition.at_close())
    }

    /// Feeds one base-rule match of `ev` at `time`; correlations that fire are appended
    /// to `out` (first those whose fixed windows closed before `time`).
    pub fn feed(
        &mut self,
        m: &Match,
        ev: &Event,
        time: Timestamp,
        out: &mut Vec<CorrelationMatch>,
    ) {
        self.advance(time, out);
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
            let value_text = comp
                .field
                .map(|s| ev.get_str(s).map(|v| v.into_owned()).unwrap_or_default())
                .unwrap_or_default();
            let pos = comp.refs.get(&m.rule).copied().unwrap_or(0);
            let key = (ci, group.clone());
            if c.condition.at_close() {
                let w = self.windows.entry(key).or_default();
                if w.end.is_none() {
                    let end = time
                        .checked_add(span(c.timespan_secs))
                        .unwrap_or(Timestamp::MAX);
                    w.end = Some(end);
                    self.next_close = Some(self.next_close.map_or(end, |n| n.min(end)));
                }
                w.entries.push_back((time, pos, value_text));
                w.last = Some(ev.clone());
                continue;
            }
            let w = self.windows.entry(key).or_default();
            let start = time
                .checked_sub(span(c.timespan_secs))
                .unwrap_or(Timestamp::MIN);
            while w.entries.front().is_some_and(|(t, _, _)| *t < start) {
                w.entries.pop_front();
            }
            w.entries.push_back((time, pos, value_text));
            if let Some(v) = value(&c.kind, &w.entries)
                && c.condition.holds(v)
            {
                out.push(CorrelationMatch {
                    correlation: ci,
                    title: c.title.clone(),
                    level: c.level,
                    group,
                    count: w.entries.len() as u64,
                    value: v,
                    time,
                    event: None,
                });
                w.entries.clear();
            }
        }
    }

    /// The stream has reached `now` (the time of any event, matched or not): fixed
    /// windows that ended before `now` are evaluated (appending what fires to `out`) and
    /// dropped, and sliding windows with nothing newer than `now - timespan` are dropped.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<CorrelationMatch>) {
        if self.next_close.is_some_and(|n| n < now) {
            self.close(|end| end < now, out);
        }
        // Idle sliding windows: dropped once per minute of event time.
        if self
            .last_expire
            .is_none_or(|t| now.duration_since(t) >= span(60) || now < t)
        {
            self.last_expire = Some(now);
            self.expire(now);
        }
    }

    /// The end of the stream (a hunt is done): every fixed window is evaluated now, as if
    /// its timespan had passed.
    pub fn finish(&mut self, out: &mut Vec<CorrelationMatch>) {
        self.close(|_| true, out);
        self.windows.clear();
    }

    fn close(&mut self, due: impl Fn(Timestamp) -> bool, out: &mut Vec<CorrelationMatch>) {
        let mut closed: Vec<(usize, Vec<String>)> = self
            .windows
            .iter()
            .filter(|(_, w)| w.end.is_some_and(&due))
            .map(|(k, _)| k.clone())
            .collect();
        // Deterministic order: by end time, then correlation and group.
        closed.sort_by(|a, b| {
            let ea = self.windows[a].end;
            let eb = self.windows[b].end;
            (ea, a).cmp(&(eb, b))
        });
        for key in closed {
            let Some(w) = self.windows.remove(&key) else {
                continue;
            };
            let c = &self.rules[key.0];
            if let Some(v) = value(&c.kind, &w.entries)
                && c.condition.holds(v)
            {
                out.push(CorrelationMatch {
                    correlation: key.0,
                    title: c.title.clone(),
                    level: c.level,
                    group: key.1,
                    count: w.entries.len() as u64,
                    value: v,
                    time: w.end.unwrap_or(Timestamp::MAX),
                    event: w.last,
                });
            }
        }
        self.next_close = self.windows.values().filter_map(|w| w.end).min();
    }

    /// Drops sliding windows with nothing newer than `now - timespan` (call now and then
    /// on a long-running stream to bound memory); fixed windows are left to
    /// [`Correlator::advance`].
    pub fn expire(&mut self, now: Timestamp) {
        let rules = &self.rules;
        self.windows.retain(|(ci, _), w| {
            if w.end.is_some() {
                return true;
            }
            let start = now
                .checked_sub(span(rules[*ci].timespan_secs))
                .unwrap_or(Timestamp::MIN);
            w.entries.back().is_some_and(|(t, _, _)| *t >= start)
        });
    }
}
