//! Threshold windows: "N matches in T", per host and `group_by` values, in event time.
//!
//! The chain asks [`Judge::threshold`](crate::Judge::threshold) whether a threshold
//! filter fires; the daemon's judge keeps one [`Thresholds`] for all source threads and
//! saves it with the checkpoints (`thresholds.json`), so a restart continues the windows.
//!
//! Per group the last `count` match times are kept (that is all a decision needs: the
//! threshold is reached when the oldest of them lies within `within` of the newest).
//! Time is the event's own (else its arrival), so a replay decides as the daemon did.
//! An event older than the group's newest time still counts (inserted in order).
//!
//! * `forward = "first"`: the match reaching the threshold fires; the group is then quiet
//!   until `within` has passed since that match.
//! * `forward = "each"`: every match fires while the window holds at least `count`.
//! * `forward = "all"`: matches below the threshold are held (at most `count - 1`, those
//!   inside the window); reaching it fires them all with the current one; then as `each`.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use watchpost_event::{Event, Origin, Sym, Value};

use crate::spec::{Forward, ThresholdSpec};

/// Most groups kept per filter; beyond it, groups whose window has passed are dropped
/// first, then the least recently matched.
pub const MAX_GROUPS: usize = 100_000;

/// A match held back by `forward = "all"`, in a form that survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldEvent {
    source: String,
    host: String,
    time_ms: Option<i64>,
    raw: String,
    origin: Option<(String, u64)>,
    fields: Vec<(String, String)>,
}

impl HeldEvent {
    fn of(e: &Event) -> HeldEvent {
        HeldEvent {
            source: e.source.to_string(),
            host: e.host.to_string(),
            time_ms: e.time.map(|t| t.as_millisecond()),
            raw: e.raw.clone(),
            origin: e.origin.as_ref().map(|o| (o.place.to_string(), o.offset)),
            fields: e
                .fields()
                .map(|(s, v)| (s.as_str().to_owned(), v.text().into_owned()))
                .collect(),
        }
    }

    /// The event again (field values as text).
    pub fn to_event(&self) -> Event {
        let mut e = Event::new(
            self.source.as_str().into(),
            self.host.as_str().into(),
            self.raw.clone(),
        );
        e.time = self
            .time_ms
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
        e.origin = self.origin.as_ref().map(|(p, o)| Origin {
            place: p.as_str().into(),
            offset: *o,
        });
        for (k, v) in &self.fields {
            if let Some(sym) = Sym::try_new(k) {
                e.push(sym, Value::Str(v.as_str().into()));
            }
        }
        e.finish();
        e
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Group {
    /// The last `count` match times (ms), oldest first.
    times: VecDeque<i64>,
    /// When `first` last fired.
    fired_at: Option<i64>,
    /// Held matches (`all`).
    held: Vec<HeldEvent>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FilterState {
    /// The threshold's settings when the state was made; other settings start afresh.
    definition: String,
    groups: HashMap<String, Group>,
}

/// The windows of every threshold filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Thresholds {
    version: u32,
    filters: HashMap<String, FilterState>,
}

const VERSION: u32 = 1;

fn definition(spec: &ThresholdSpec) -> String {
    let group: Vec<&str> = spec.group_by.iter().map(|s| s.as_str()).collect();
    format!(
        "{}|{}|{}|{:?}",
        spec.count,
        spec.within.as_millis(),
        group.join(","),
        spec.forward
    )
}

impl Thresholds {
    /// Reads saved windows; state of a filter whose threshold changed is dropped later,
    /// at its first decision.
    pub fn from_json(text: &str) -> Result<Thresholds, String> {
        let t: Thresholds = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if t.version != VERSION {
            return Err(format!(
                "threshold state version {} (expected {VERSION})",
                t.version
            ));
        }
        Ok(t)
    }

    /// The windows as JSON.
    pub fn to_json(&self) -> String {
        let mut t = self.clone();
        t.version = VERSION;
        serde_json::to_string(&t).unwrap_or_else(|_| "{}".into())
    }

    /// Forgets filters no longer configured.
    pub fn retain_filters(&mut self, names: &[&str]) {
        self.filters.retain(|k, _| names.contains(&k.as_str()));
    }

    /// Starts the windows of every filter whose threshold definition differs from the
    /// one its windows were counted with afresh (a reload, a restart with a changed
    /// configuration); returns those filters' names.
    pub fn reset_changed(&mut self, specs: &[(&str, &ThresholdSpec)]) -> Vec<String> {
        let mut reset = Vec::new();
        for (name, spec) in specs {
            let def = definition(spec);
            if let Some(state) = self.filters.get_mut(*name)
                && state.definition != def
            {
                state.definition = def;
                if !state.groups.is_empty() {
                    state.groups.clear();
                    reset.push((*name).to_owned());
                }
            }
        }
        reset
    }

    /// Decides for one match of filter `name`; returns whether it fires now and the held
    /// matches released with it (`forward = "all"`). `now_ms` stands in for a missing
    /// event time.
    pub fn decide(
        &mut self,
        name: &str,
        spec: &ThresholdSpec,
        event: &Event,
        now_ms: i64,
    ) -> (bool, Vec<Event>) {
        let def = definition(spec);
        let state = self.filters.entry(name.to_owned()).or_default();
        if state.definition != def {
            state.definition = def;
            state.groups.clear();
        }
        let mut key = String::with_capacity(64);
        key.push_str(&event.host);
        for s in &spec.group_by {
            key.push('\u{1f}');
            if let Some(v) = event.get(*s) {
                v.write_to(&mut key);
            }
        }
        let t = event.time.map_or(now_ms, |t| t.as_millisecond());
        let within = spec.within.as_millis() as i64;
        if state.groups.len() >= MAX_GROUPS && !state.groups.contains_key(&key) {
            evict(&mut state.groups, t, within);
        }
        let g = state.groups.entry(key).or_default();
        let n = spec.count as usize;
        // Insert in time order, keep the newest `count`.
        let at = g.times.partition_point(|&x| x <= t);
        g.times.insert(at, t);
        while g.times.len() > n {
            g.times.pop_front();
        }
        let newest = *g.times.back().unwrap_or(&t);
        let reached = g.times.len() == n && newest - g.times[0] <= within;
        match spec.forward {
            Forward::Each => (reached, Vec::new()),
            Forward::First => {
                let quiet = g.fired_at.is_some_and(|f| newest - f < within);
                if reached && !quiet {
                    g.fired_at = Some(t);
                    (true, Vec::new())
                } else {
                    (false, Vec::new())
                }
            }
            Forward::All => {
                g.held
                    .retain(|h| h.time_ms.is_none_or(|ht| newest - ht <= within));
                if reached {
                    let released = g.held.drain(..).map(|h| h.to_event()).collect();
                    (true, released)
                } else {
                    g.held.push(HeldEvent::of(event));
                    if g.held.len() > n.saturating_sub(1) {
                        g.held.remove(0);
                    }
                    (false, Vec::new())
                }
            }
        }
    }
}

/// Makes room: drops groups whose newest match is older than the window, else the
/// least recent tenth.
fn evict(groups: &mut HashMap<String, Group>, now: i64, within: i64) {
    let newest = |g: &Group| g.times.back().copied().unwrap_or(i64::MIN);
    groups.retain(|_, g| now - newest(g) <= within);
    if groups.len() >= MAX_GROUPS {
        let mut ages: Vec<i64> = groups.values().map(newest).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 10];
        groups.retain(|_, g| newest(g) > cut);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(count: u32, secs: u64, forward: Forward, group: &[&str]) -> ThresholdSpec {
        ThresholdSpec {
            count,
            within: Duration::from_secs(secs),
            group_by: group.iter().map(|g| Sym::new(g)).collect(),
            forward,
            span: 0..0,
        }
    }

    fn ev(sec: i64, ip: &str) -> Event {
        let mut e = Event::new(
            "s".into(),
            "pc1".into(),
            format!("failed logon from {ip} at {sec}"),
        );
        e.time = Some(jiff::Timestamp::from_second(1_800_000_000 + sec).unwrap());
        e.push(Sym::new("IpAddress"), Value::Str(ip.into()));
        e.finish();
        e
    }

    fn run(t: &mut Thresholds, s: &ThresholdSpec, events: &[(i64, &str)]) -> Vec<(bool, usize)> {
        events
            .iter()
            .map(|(sec, ip)| {
                let (fire, released) = t.decide("f", s, &ev(*sec, ip), 0);
                (fire, released.len())
            })
            .collect()
    }

    #[test]
    fn first_fires_once_per_window() {
        let s = spec(3, 60, Forward::First, &[]);
        let mut t = Thresholds::default();
        let got = run(
            &mut t,
            &s,
            &[
                (0, "a"),
                (10, "a"),
                (20, "a"),
                (30, "a"),
                (100, "a"),
                (110, "a"),
                (200, "a"),
            ],
        );
        let fired: Vec<bool> = got.iter().map(|g| g.0).collect();
        // The 3rd match fires; the 4th is inside the quiet minute; afterwards no three
        // matches fall within 60 s.
        assert_eq!(fired, [false, false, true, false, false, false, false]);
        let got = run(&mut t, &s, &[(210, "a"), (220, "a")]);
        assert_eq!(
            got,
            [(false, 0), (true, 0)],
            "200, 210, 220 within 60 s, quiet period over"
        );
    }

    #[test]
    fn each_fires_while_over_and_groups_count_apart() {
        let s = spec(2, 10, Forward::Each, &["IpAddress"]);
        let mut t = Thresholds::default();
        let got = run(
            &mut t,
            &s,
            &[(0, "a"), (1, "b"), (2, "a"), (3, "a"), (30, "a"), (31, "b")],
        );
        let fired: Vec<bool> = got.iter().map(|g| g.0).collect();
        assert_eq!(fired, [false, false, true, true, false, false]);
    }

    #[test]
    fn all_releases_the_held_matches_and_forgets_stale_ones() {
        let s = spec(3, 60, Forward::All, &[]);
        let mut t = Thresholds::default();
        let got = run(
            &mut t,
            &s,
            &[(0, "a"), (100, "a"), (110, "a"), (120, "a"), (125, "a")],
        );
        // 0 is held then falls out of the window; 100 and 110 are held; 120 reaches the
        // threshold and releases them; 125 fires alone (over the threshold).
        assert_eq!(
            got,
            [(false, 0), (false, 0), (false, 0), (true, 2), (true, 0)]
        );
        // Released events are the held ones, fields intact.
        let mut t = Thresholds::default();
        t.decide("f", &s, &ev(0, "x"), 0);
        t.decide("f", &s, &ev(1, "y"), 0);
        let (_, released) = t.decide("f", &s, &ev(2, "z"), 0);
        let ips: Vec<String> = released
            .iter()
            .map(|e| e.get_str(Sym::new("IpAddress")).unwrap().into_owned())
            .collect();
        assert_eq!(ips, ["x", "y"]);
        assert_eq!(released[0].raw, "failed logon from x at 0");
    }

    #[test]
    fn state_survives_a_round_trip_and_a_changed_threshold_starts_afresh() {
        let s = spec(3, 60, Forward::Each, &[]);
        let mut t = Thresholds::default();
        run(&mut t, &s, &[(0, "a"), (10, "a")]);
        let mut back = Thresholds::from_json(&t.to_json()).unwrap();
        assert_eq!(run(&mut back, &s, &[(20, "a")]), [(true, 0)]);
        let changed = spec(3, 30, Forward::Each, &[]);
        let mut back = Thresholds::from_json(&t.to_json()).unwrap();
        assert_eq!(run(&mut back, &changed, &[(20, "a")]), [(false, 0)]);
        assert!(Thresholds::from_json("{\"version\":9,\"filters\":{}}").is_err());
        assert!(Thresholds::from_json("garbage").is_err());
    }

    #[test]
    fn late_events_count_in_time_order() {
        let s = spec(3, 10, Forward::Each, &[]);
        let mut t = Thresholds::default();
        let got = run(&mut t, &s, &[(100, "a"), (50, "a"), (95, "a")]);
        // 50 is old: the newest three are 50, 95, 100 → not within 10 s.
        assert_eq!(got, [(false, 0), (false, 0), (false, 0)]);
        assert_eq!(run(&mut t, &s, &[(98, "a")]), [(true, 0)]);
    }
}
