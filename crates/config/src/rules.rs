//! `[[rules]]`: Sigma rule sets as part of the live chain (and of `watchpost test`).
//!
//! A rule set is loaded once (`watchpost-sigma`); every event that no exclude filter
//! dropped is offered to every set after the filter chain ran. A detection at or above the
//! set's `min_level` (and, with `tags`, of a rule carrying one of them) fires the set's actions (minus those an exclude filter withheld) with
//! the event plus the fields `rule_title`, `rule_id`, `rule_level`, `rule_tags`,
//! `rule_fields` (the fields that matched), and `{{ filter }}` = the rule's title.
//! Correlation rules in the set (event_count, value_count, value_sum, value_avg,
//! value_percentile, temporal, temporal_ordered) run on the stream of its detections, in
//! event time; a correlation that holds fires like a detection, with `rule_title` = the
//! correlation's title and `correlation_count` (matches in the window),
//! `correlation_value` (what the condition tested), `correlation_group`. Conditions with
//! an upper bound (`lt`, `lte`, `eq`, ranges) are decided when their window closes: the
//! time of every event the set sees moves the clock, and the detection carries the last
//! event that joined the window (see `watchpost_sigma::correlate`).
//!
//! `placeholders` (inline) and `placeholders_file` (pySigma pipeline `vars:` or a bare
//! mapping) give the values of `%name%` placeholders for rules with the `expand`
//! modifier; inline values win over the file's.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use toml::Spanned;
use watchpost_event::{Event, Sym, Value};
use watchpost_sigma::{
    CorrelationMatch, Correlator, Level, LoadOptions, Match, Placeholders, Ruleset,
};

use crate::diag::Diagnostics;

/// A `[[rules]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesToml {
    name: Spanned<String>,
    sigma: Spanned<OneOrMany>,
    #[serde(default)]
    min_level: Option<Spanned<String>>,
    #[serde(default)]
    actions: Vec<Spanned<String>>,
    /// Only rules with at least one of these tags (e.g. `attack.credential_access`).
    #[serde(default)]
    tags: Vec<String>,
    /// Values of `%name%` placeholders (`expand` modifier).
    #[serde(default)]
    placeholders: Option<Spanned<BTreeMap<String, OneOrMany>>>,
    /// A placeholder file (pySigma pipeline with `vars:`, or a bare mapping).
    #[serde(default)]
    placeholders_file: Option<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The fields a detection adds to its event.
pub const FIELDS: &[&str] = &[
    "rule_title",
    "rule_id",
    "rule_level",
    "rule_tags",
    "rule_fields",
    "correlation_count",
    "correlation_value",
    "correlation_group",
];

/// A loaded rule set.
pub struct RuleSet {
    /// Its name.
    pub name: String,
    /// The rules.
    pub ruleset: Arc<Ruleset>,
    /// Lowest level that fires.
    pub min_level: Level,
    /// Action names with their places.
    pub actions: Vec<(String, Range<usize>)>,
    /// Only rules with one of these tags (lower-case; empty: all).
    pub tags: Vec<String>,
    /// Correlation state (live stream).
    correlator: Option<Mutex<Correlator>>,
    /// Whether a correlation waits for its window to close (every event's time counts).
    timed: bool,
    /// The files and folders it was loaded from (rule paths, the placeholder file), for
    /// `[agent] watch_config`.
    pub watched: Vec<std::path::PathBuf>,
    /// Size and modification time of every file under them, hashed: a reload keeps the
    /// running set (and its correlation windows) when neither the table nor this changed.
    pub files_stamp: u64,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("name", &self.name)
            .field("rules", &self.ruleset.len())
            .finish()
    }
}

/// Reads and loads one `[[rules]]` table; load problems go to `diags` (a rule that cannot
/// be loaded is a warning naming the file and the reason; no rule at all is an error).
pub fn parse(v: &Spanned<toml::de::DeValue<'_>>, diags: &mut Diagnostics) -> Option<RuleSet> {
    use serde::de::IntoDeserializer;
    let raw = match RulesToml::deserialize(v.clone().into_deserializer()) {
        Ok(r) => r,
        Err(e) => {
            diags.toml_error(&e, v.span());
            return None;
        }
    };
    if !raw.enabled {
        return None;
    }
    let min_level = match &raw.min_level {
        None => Level::Informational,
        Some(l) => match l.get_ref().parse() {
            Ok(l) => l,
            Err(e) => {
                diags.error(
                    l.span(),
                    format!("{e} (informational, low, medium, high, critical)"),
                );
                return None;
            }
        },
    };
    let paths: Vec<String> = match raw.sigma.get_ref() {
        OneOrMany::One(p) => vec![p.clone()],
        OneOrMany::Many(p) => p.clone(),
    };
    let mut placeholders = Placeholders::new();
    if let Some(f) = &raw.placeholders_file {
        match Placeholders::from_file(std::path::Path::new(f.get_ref())) {
            Ok(p) => placeholders.extend(p),
            Err(e) => {
                diags.error(f.span(), format!("rules `{}`: {e}", raw.name.get_ref()));
                return None;
            }
        }
    }
    if let Some(p) = &raw.placeholders {
        for (k, v) in p.get_ref() {
            let values = match v {
                OneOrMany::One(x) => vec![x.clone()],
                OneOrMany::Many(x) => x.clone(),
            };
            placeholders.insert(k.clone(), values);
        }
    }
    let watched = watched_paths(
        &paths,
        raw.placeholders_file.as_ref().map(|f| f.get_ref().as_str()),
    );
    let (ruleset, rejected) = Ruleset::load_with(
        &paths,
        &LoadOptions {
            placeholders,
            ..LoadOptions::default()
        },
    );
    for r in &rejected {
        diags.warning(
            raw.sigma.span(),
            format!("rules `{}`: not loaded: {r}", raw.name.get_ref()),
        );
    }
    if ruleset.is_empty() {
        diags.error(
            raw.sigma.span(),
            format!(
                "rules `{}`: no Sigma rule loaded from {paths:?}",
                raw.name.get_ref()
            ),
        );
        return None;
    }
    let correlator = if ruleset.correlations().is_empty() {
        None
    } else {
        let (c, missing) = Correlator::new(&ruleset);
        for m in missing {
            diags.warning(
                raw.sigma.span(),
                format!("rules `{}`: {m}", raw.name.get_ref()),
            );
        }
        Some(Mutex::new(c))
    };
    let timed = correlator
        .as_ref()
        .is_some_and(|c| watchpost_support::lock(c).has_timed());
    Some(RuleSet {
        name: raw.name.get_ref().clone(),
        ruleset: Arc::new(ruleset),
        min_level,
        actions: raw
            .actions
            .iter()
            .map(|a| (a.get_ref().clone(), a.span()))
            .collect(),
        tags: raw.tags.iter().map(|t| t.to_ascii_lowercase()).collect(),
        correlator,
        timed,
        files_stamp: files_stamp(&watched),
        watched,
    })
}

/// What a set reads: each rule path (a glob stands for the folder before its first
/// wildcard) and the placeholder file.
fn watched_paths(paths: &[String], placeholders_file: Option<&str>) -> Vec<std::path::PathBuf> {
    paths
        .iter()
        .map(|p| crate::paths::static_dir_or_path(p))
        .chain(placeholders_file.map(std::path::PathBuf::from))
        .collect()
}

/// Hashes (path, size, modification time) of every file under `roots` (folders walked,
/// at most 100,000 files): cheap enough for every reload, and any edit changes it.
pub(crate) fn files_stamp(roots: &[std::path::PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut found = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = roots.to_vec();
    while let Some(p) = stack.pop() {
        if found.len() >= 100_000 {
            break;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            found.push((p, 0, 0));
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        found.push((p, meta.len(), mtime));
    }
    found.sort();
    let mut h = std::hash::DefaultHasher::new();
    found.hash(&mut h);
    h.finish()
}

/// One detection (or correlation) of a set on an event.
pub struct Detection {
    /// The event with the rule's fields added.
    pub event: Event,
    /// The rule's (or correlation's) title.
    pub title: Arc<str>,
}

impl RuleSet {
    /// The set's detections on `event` (at or above `min_level`), correlations included
    /// (also those whose window the event's time closed).
    pub fn detect(&self, event: &Event, scratch: &mut Vec<Match>) -> Vec<Detection> {
        let mut correlated: Vec<CorrelationMatch> = Vec::new();
        let t = event.time.unwrap_or_else(jiff::Timestamp::now);
        if self.timed
            && let Some(c) = &self.correlator
        {
            watchpost_support::lock(c).advance(t, &mut correlated);
        }
        scratch.clear();
        if self.ruleset.matches(event, scratch) == 0 && correlated.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        // Windows that closed before this event come first.
        self.correlation_detections(event, std::mem::take(&mut correlated), &mut out);
        for m in scratch.iter() {
            if let Some(c) = &self.correlator {
                watchpost_support::lock(c).feed(m, event, t, &mut correlated);
            }
            if m.correlation_only
                || m.level < self.min_level
                || (!self.tags.is_empty()
                    && !m
                        .tags
                        .iter()
                        .any(|t| self.tags.iter().any(|w| t.eq_ignore_ascii_case(w))))
            {
                continue;
            }
            let tags: Vec<&str> = m.tags.iter().map(|t| &**t).collect();
            let fields: Vec<&str> = m.fields.iter().map(|s| s.as_str()).collect();
            out.push(Detection {
                event: enriched(
                    event,
                    &[
                        ("rule_title", m.title.to_string()),
                        ("rule_id", m.id.as_deref().unwrap_or_default().to_owned()),
                        ("rule_level", m.level.to_string()),
                        ("rule_tags", tags.join(",")),
                        ("rule_fields", fields.join(",")),
                    ],
                ),
                title: m.title.clone(),
            });
        }
        self.correlation_detections(event, correlated, &mut out);
        out
    }

    /// The end of the records (a replay is done): correlations whose window is still open
    /// are decided now.
    pub fn finish(&self) -> Vec<Detection> {
        let mut correlated = Vec::new();
        if let Some(c) = &self.correlator {
            watchpost_support::lock(c).finish(&mut correlated);
        }
        let mut out = Vec::new();
        let empty = Event::new("sigma".into(), "".into(), String::new());
        self.correlation_detections(&empty, correlated, &mut out);
        out
    }

    fn correlation_detections(
        &self,
        event: &Event,
        correlated: Vec<CorrelationMatch>,
        out: &mut Vec<Detection>,
    ) {
        for c in correlated.into_iter().filter(|c| c.level >= self.min_level) {
            let base = c.event.as_ref().unwrap_or(event);
            out.push(Detection {
                event: enriched(
                    base,
                    &[
                        ("rule_title", c.title.to_string()),
                        ("rule_level", c.level.to_string()),
                        ("correlation_count", c.count.to_string()),
                        ("correlation_value", number(c.value)),
                        ("correlation_group", c.group.join(",")),
                    ],
                ),
                title: c.title.clone(),
            });
        }
    }
}

/// A correlation value as text: integers without a fraction.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn enriched(event: &Event, add: &[(&str, String)]) -> Event {
    let mut e = event.clone();
    for (k, v) in add {
        e.push(Sym::new(k), Value::Str(v.as_str().into()));
    }
    e.finish();
    e
}
