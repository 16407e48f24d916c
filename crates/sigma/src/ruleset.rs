//! Loading rule files into a [`Ruleset`] and matching events against it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value as Json;
use watchpost_event::{Event, FieldRef, Sym};

use crate::compile::{self, Cond, Names, Needles, Scratch, Slots};
use crate::correlate::CorrelationRule;
use crate::logsource::{self, Target, WINDOWS_COMMON};
use crate::placeholders::Placeholders;

/// How rules are loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Values of `%name%` placeholders for the `expand` modifier.
    pub placeholders: Placeholders,
}

/// A rule's severity; ordered `Informational < Low < Medium < High < Critical` (for a
/// `--min-level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `informational`
    Informational,
    /// `low`
    Low,
    /// `medium` (also what a rule without `level` gets)
    Medium,
    /// `high`
    High,
    /// `critical`
    Critical,
}

impl FromStr for Level {
    type Err = crate::UnknownLevel;
    fn from_str(s: &str) -> Result<Level, crate::UnknownLevel> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            other => return Err(crate::UnknownLevel(other.to_owned())),
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        })
    }
}

/// A rule's metadata.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `title`.
    pub title: Arc<str>,
    /// `id` (a UUID in SigmaHQ rules).
    pub id: Option<Arc<str>>,
    /// `name` (what correlation rules may reference).
    pub name: Option<Arc<str>>,
    /// `level` (`medium` when absent).
    pub level: Level,
    /// `status` (`stable`, `test`, `experimental`, …).
    pub status: Option<Arc<str>>,
    /// `tags` (`attack.t1003.001`, …).
    pub tags: Arc<[Arc<str>]>,
    /// `logsource.product`, `.category`, `.service`.
    pub product: Option<String>,
    /// `logsource.category`.
    pub category: Option<String>,
    /// `logsource.service`.
    pub service: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// The file the rule came from.
    pub path: PathBuf,
    /// Where the rule applies (channels and implied event ids).
    pub targets: Vec<Target>,
    /// The prefilter key of each compiled form (one per target).
    pub keys: Vec<PrefilterKey>,
}

/// What an event must have for a compiled rule form to be evaluated at all.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefilterKey {
    /// The channel (`None`: any Windows channel, or for a non-Windows rule, events
    /// without a channel).
    pub channel: Option<&'static str>,
    /// Event ids (from the logsource, else pinned by the detection); `None`: any.
    pub event_ids: Option<Vec<i64>>,
    /// Providers the detection pins (`Provider_Name`, lowercased); `None`: any. Tested by
    /// the condition, not indexed.
    pub providers: Option<Vec<String>>,
}

/// A rule (or a file) that could not be loaded, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// The rule's title when it got that far.
    pub title: Option<String>,
    /// Why.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.title {
            Some(t) => write!(f, "{}: {t}: {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// One rule that fired on an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Index into [`Ruleset::rules`].
    pub rule: usize,
    /// The rule's title.
    pub title: Arc<str>,
    /// The rule's id.
    pub id: Option<Arc<str>>,
    /// The rule's level.
    pub level: Level,
    /// The rule's tags.
    pub tags: Arc<[Arc<str>]>,
    /// Event fields whose tests held (names as in the event, e.g. `NewProcessName` for
    /// a `process_creation` rule's `Image` on a 4688).
    pub fields: Vec<Sym>,
}

struct Variant {
    rule: u32,
    cond: Cond,
    /// Needle ids of which one must occur (see [`Needles`]); empty: no prefilter.
    needles: Box<[u32]>,
    /// The target's channel and whether it is a Windows target (for
    /// [`Ruleset::matches_unindexed`]).
    channel: Option<&'static str>,
    windows: bool,
    /// Event ids the logsource implies (part of the rule's meaning, not a prefilter).
    target_ids: Option<Vec<i64>>,
}

#[derive(Default)]
struct ChanIdx {
    by_id: HashMap<i64, Vec<u32>>,
    any: Vec<u32>,
}

impl ChanIdx {
    fn add(&mut self, ids: Option<&[i64]>, v: u32) {
        match ids {
            Some(ids) => {
                for id in ids {
                    let e = self.by_id.entry(*id).or_default();
                    if e.last() != Some(&v) {
                        e.push(v);
                    }
                }
            }
            None => self.any.push(v),
        }
    }
    fn candidates(&self, id: Option<i64>, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.any);
        if let Some(list) = id.and_then(|id| self.by_id.get(&id)) {
            out.extend_from_slice(list);
        }
    }
}

/// Compiled Sigma rules with their prefilter index.
///
/// `Ruleset` is `Send + Sync`: share one between threads; each thread evaluates with
/// its own [`Scratch`] (or [`Ruleset::matches`], which keeps one per thread).
pub struct Ruleset {
    rules: Vec<Rule>,
    filters: Vec<String>,
    correlations: Vec<CorrelationRule>,
    variants: Vec<Variant>,
    slots: usize,
    needles: Needles,
    channels: HashMap<Box<str>, ChanIdx>,
    any_windows: ChanIdx,
    other: Vec<u32>,
    sym_channel: Sym,
    sym_event_id: Sym,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

impl Ruleset {
    /// Loads every `.yml`/`.yaml` file under the given files, directories (recursively)
    /// or glob patterns. Rules that cannot be loaded come back with the reason; the
    /// others load.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> (Ruleset, Vec<LoadError>) {
        Ruleset::load_with(paths, &LoadOptions::default())
    }

    /// [`Ruleset::load`] with options (placeholder values).
    pub fn load_with<P: AsRef<Path>>(paths: &[P], opts: &LoadOptions) -> (Ruleset, Vec<LoadError>) {
        let mut b = Builder {
            placeholders: opts.placeholders.clone(),
            ..Builder::default()
        };
        for p in paths {
            let p = p.as_ref();
            let s = p.to_string_lossy();
            if s.contains(['*', '?', '[']) {
                match glob::glob(&s) {
                    Ok(it) => {
                        for e in it.flatten() {
                            b.add_path(&e);
                        }
                    }
                    Err(e) => b.err(p, None, format!("bad glob pattern: {e}")),
                }
            } else {
                b.add_path(p);
            }
        }
        b.finish()
    }

    /// Compiles rules from YAML text (one or more documents); `path` names them in
    /// errors.
    pub fn from_yaml(path: &Path, text: &str) -> (Ruleset, Vec<LoadError>) {
        Ruleset::from_yaml_with(path, text, &LoadOptions::default())
    }

    /// [`Ruleset::from_yaml`] with options (placeholder values).
    pub fn from_yaml_with(
        path: &Path,
        text: &str,
        opts: &LoadOptions,
    ) -> (Ruleset, Vec<LoadError>) {
        let mut b = Builder {
            placeholders: opts.placeholders.clone(),
            ..Builder::default()
        };
        b.add_yaml(path, text);
        b.finish()
    }

    /// The loaded detection rules; [`Match::rule`] indexes this.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The loaded correlation rules (for a [`crate::Correlator`]).
    pub fn correlations(&self) -> &[CorrelationRule] {
        &self.correlations
    }

    /// Titles of the Sigma filter documents that were applied (their condition is
    /// and-ed to the conditions of the rules they name).
    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// Number of detection rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule loaded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Appends the rules that match `ev` to `out` (in rule order) and returns how many.
    /// Only rules whose channel and event id fit the event are evaluated.
    pub fn matches(&self, ev: &Event, out: &mut Vec<Match>) -> usize {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => self.matches_with(ev, &mut s, out),
            Err(_) => self.matches_with(ev, &mut Scratch::new(), out),
        })
    }

    /// [`Ruleset::matches`] with a caller-owned scratch.
    pub fn matches_with(&self, ev: &Event, sc: &mut Scratch, out: &mut Vec<Match>) -> usize {
        sc.next_event(self.slots, self.needles.len());
        let mut cands = std::mem::take(&mut sc.cands);
        cands.clear();
        match ev.get(self.sym_channel) {
            Some(ch) => {
                let id = ev.get(self.sym_event_id).and_then(|v| match v {
                    FieldRef::Int(i) => Some(i),
                    FieldRef::Str(s) => s.trim().parse().ok(),
                    _ => None,
                });
                let ch = ch.text();
                let idx = self.channels.get(&*ch).or_else(|| {
                    let low = ch.to_ascii_lowercase();
                    self.channels.get(low.as_str())
                });
                if let Some(idx) = idx {
                    idx.candidates(id, &mut cands);
                }
                self.any_windows.candidates(id, &mut cands);
                cands.sort_unstable();
                cands.dedup();
            }
            None => cands.extend_from_slice(&self.other),
        }
        let before = out.len();
        for &v in &cands {
            let var = &self.variants[v as usize];
            if out.len() > before && out.last().map(|m| m.rule) == Some(var.rule as usize) {
                continue;
            }
            if !var.needles.is_empty()
                && !var.needles.iter().any(|&n| self.needles.present(ev, sc, n))
            {
                continue;
            }
            if var.cond.eval(ev, sc) {
                let r = &self.rules[var.rule as usize];
                let mut fields = Vec::new();
                var.cond.matched_fields(ev, sc, &mut fields);
                out.push(Match {
                    rule: var.rule as usize,
                    title: r.title.clone(),
                    id: r.id.clone(),
                    level: r.level,
                    tags: r.tags.clone(),
                    fields,
                });
            }
        }
        sc.cands = cands;
        out.len() - before
    }

    /// [`Ruleset::matches`] without the event-id index and without the needle
    /// prefilter: every rule form of the event's channel is evaluated. For tests that
    /// check the prefilters lose nothing; far slower.
    #[doc(hidden)]
    pub fn matches_unindexed(&self, ev: &Event, out: &mut Vec<Match>) -> usize {
        let mut sc = Scratch::new();
        sc.next_event(self.slots, self.needles.len());
        let channel = ev.get(self.sym_channel).map(|c| c.text().into_owned());
        let id: Option<i64> = ev
            .get_str(self.sym_event_id)
            .and_then(|s| s.trim().parse().ok());
        let before = out.len();
        for var in &self.variants {
            if let Some(ids) = &var.target_ids
                && !id.is_some_and(|id| ids.contains(&id))
            {
                continue;
            }
            let applies = match (&channel, var.windows, var.channel) {
                (None, false, _) => true,
                (Some(_), true, None) => true,
                (Some(ch), true, Some(vc)) => ch.eq_ignore_ascii_case(vc),
                _ => false,
            };
            if !applies
                || (out.len() > before && out.last().map(|m| m.rule) == Some(var.rule as usize))
            {
                continue;
            }
            if var.cond.eval(ev, &mut sc) {
                let r = &self.rules[var.rule as usize];
                let mut fields = Vec::new();
                var.cond.matched_fields(ev, &mut sc, &mut fields);
                out.push(Match {
                    rule: var.rule as usize,
                    title: r.title.clone(),
                    id: r.id.clone(),
                    level: r.level,
                    tags: r.tags.clone(),
                    fields,
                });
            }
        }
        out.len() - before
    }

    /// Whether any rule can apply to an event of `channel` and `event_id` (a hunt can
    /// skip records, or whole files of one channel, for which this is false).
    pub fn wants(&self, channel: &str, event_id: Option<i64>) -> bool {
        self.candidates(channel, event_id) > 0
    }

    /// The channels some rule is filed under (`None` in [`PrefilterKey::channel`] means
    /// any channel: see [`Ruleset::wants`]).
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(|k| &**k)
    }

    /// How many compiled rule forms an event of `channel` and `event_id` is tested
    /// against (for diagnostics and the benchmark).
    pub fn candidates(&self, channel: &str, event_id: Option<i64>) -> usize {
        let mut c = Vec::new();
        let idx = self
            .channels
            .get(channel)
            .or_else(|| self.channels.get(channel.to_ascii_lowercase().as_str()));
        if let Some(idx) = idx {
            idx.candidates(event_id, &mut c);
        }
        self.any_windows.candidates(event_id, &mut c);
        c.sort_unstable();
        c.dedup();
        c.len()
    }
}

#[derive(Default)]
struct Builder {
    rules: Vec<Rule>,
    correlations: Vec<CorrelationRule>,
    variants: Vec<(Variant, Target, Option<Vec<i64>>)>,
    slots: Slots,
    needles: Needles,
    filters: Vec<FilterDoc>,
    errors: Vec<LoadError>,
    placeholders: Placeholders,
}

/// A Sigma filter document: its condition is and-ed to the rules it names.
struct FilterDoc {
    path: PathBuf,
    title: String,
    rules: Vec<String>,
    detection: serde_json::Map<String, Json>,
}

fn text_of(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Builder {
    fn err(&mut self, path: &Path, title: Option<String>, reason: String) {
        self.errors.push(LoadError {
            path: path.to_path_buf(),
            title,
            reason,
        });
    }

    fn add_path(&mut self, p: &Path) {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
                Err(e) => return self.err(p, None, format!("cannot read directory: {e}")),
            };
            entries.sort();
            for e in entries {
                let is_yaml = e.extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("yml") || x.eq_ignore_ascii_case("yaml")
                });
                if e.is_dir() || is_yaml {
                    self.add_path(&e);
                }
            }
            return;
        }
        match std::fs::read_to_string(p) {
            Ok(t) => self.add_yaml(p, &t),
            Err(e) => self.err(p, None, format!("cannot read: {e}")),
        }
    }

    fn add_yaml(&mut self, path: &Path, text: &str) {
        let docs: Vec<Json> = match serde_saphyr::from_multiple(text) {
            Ok(d) => d,
            Err(e) => {
                let msg = e.to_string();
                let first = msg.lines().next().unwrap_or("").to_string();
                return self.err(path, None, format!("YAML: {first}"));
            }
        };
        for doc in docs {
            let title = text_of(doc.get("title"));
            if let Err(reason) = self.add_doc(path, &doc) {
                self.err(path, title, reason);
            }
        }
    }

    fn add_doc(&mut self, path: &Path, doc: &Json) -> Result<(), String> {
        let obj = doc.as_object().ok_or("a rule document must be a mapping")?;
        if obj.contains_key("action") {
            return Err(
                "multi-document `action: global` rule collections are not supported".into(),
            );
        }
        let title: Arc<str> = text_of(obj.get("title")).ok_or("rule has no title")?.into();
        let id = text_of(obj.get("id")).map(Arc::from);
        let level = match obj.get("level") {
            None | Some(Json::Null) => Level::Medium,
            Some(Json::String(s)) => s.parse().map_err(|e: crate::UnknownLevel| e.to_string())?,
            Some(_) => return Err("level must be a string".into()),
        };
        if let Some(c) = obj.get("correlation") {
            let name = text_of(obj.get("name"));
            let rule = crate::correlate::parse(c, title, id, name, level)?;
            self.correlations.push(rule);
            return Ok(());
        }
        if let Some(f) = obj.get("filter")
            && !obj.contains_key("detection")
        {
            let f = f.as_object().ok_or("filter must be a mapping")?;
            let rules: Vec<String> = match f.get("rules") {
                Some(Json::String(s)) => vec![s.clone()],
                Some(Json::Array(a)) => a.iter().filter_map(|x| text_of(Some(x))).collect(),
                _ => vec![],
            };
            if rules.is_empty() {
                return Err("filter names no rules".into());
            }
            let mut det = f.clone();
            det.remove("rules");
            // Check it compiles now, so a broken filter is reported as such.
            compile::compile_detection(
                &det,
                &Names {
                    renames: &[],
                    vars: &self.placeholders,
                },
                &mut Slots::default(),
            )?;
            self.filters.push(FilterDoc {
                path: path.to_path_buf(),
                title: title.to_string(),
                rules,
                detection: det,
            });
            return Ok(());
        }
        let detection = obj
            .get("detection")
            .and_then(Json::as_object)
            .ok_or("rule has no detection mapping")?;
        let ls = obj.get("logsource").and_then(Json::as_object);
        let lsf = |k: &str| ls.and_then(|m| text_of(m.get(k)));
        let (product, category, service) = (lsf("product"), lsf("category"), lsf("service"));
        let targets =
            logsource::targets(product.as_deref(), category.as_deref(), service.as_deref())?;
        let tags: Arc<[Arc<str>]> = match obj.get("tags") {
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(|t| text_of(Some(t)))
                .map(Arc::from)
                .collect(),
            _ => Arc::from(Vec::new()),
        };
        let rule_idx = self.rules.len() as u32;
        let sym_event_id = Sym::new("event_id");
        let mut compiled = Vec::new();
        let mut keys = Vec::new();
        let sym_provider = Sym::new("provider");
        for t in &targets {
            let tables: Vec<&[(&str, &str)]> = if t.windows {
                vec![t.renames, WINDOWS_COMMON]
            } else {
                vec![]
            };
            let names = Names {
                renames: &tables,
                vars: &self.placeholders,
            };
            let cond = compile::compile_detection(detection, &names, &mut self.slots)?;
            let ids = match &t.event_ids {
                Some(ids) => Some(ids.clone()),
                None if t.windows => cond.pinned_ids(sym_event_id),
                None => None,
            };
            keys.push(PrefilterKey {
                channel: t.channel,
                event_ids: ids.clone(),
                providers: if t.windows {
                    cond.pinned(sym_provider)
                } else {
                    None
                },
            });
            let needles = match cond.required() {
                Some(req) => req
                    .iter()
                    .map(|(slot, lit)| self.needles.intern(*slot, lit))
                    .collect(),
                None => Box::default(),
            };
            compiled.push((
                Variant {
                    rule: rule_idx,
                    cond,
                    needles,
                    channel: t.channel,
                    windows: t.windows,
                    target_ids: t.event_ids.clone(),
                },
                t.clone(),
                ids,
            ));
        }
        self.variants.extend(compiled);
        self.rules.push(Rule {
            title,
            id,
            name: text_of(obj.get("name")).map(Arc::from),
            level,
            status: text_of(obj.get("status")).map(Arc::from),
            tags,
            product,
            category,
            service,
            description: text_of(obj.get("description")),
            path: path.to_path_buf(),
            targets,
            keys,
        });
        Ok(())
    }

    fn apply_filters(&mut self) -> Vec<String> {
        let mut applied = Vec::new();
        for f in std::mem::take(&mut self.filters) {
            let mut used = false;
            for r in &f.rules {
                let targets: Vec<usize> = self
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| {
                        x.id.as_deref() == Some(r.as_str())
                            || x.name.as_deref() == Some(r.as_str())
                            || &*x.title == r.as_str()
                    })
                    .map(|(i, _)| i)
                    .collect();
                if targets.is_empty() {
                    self.err(
                        &f.path,
                        Some(f.title.clone()),
                        format!("filter names unknown rule `{r}`"),
                    );
                    continue;
                }
                for (v, t, _) in &mut self.variants {
                    if !targets.contains(&(v.rule as usize)) {
                        continue;
                    }
                    let tables: Vec<&[(&str, &str)]> = if t.windows {
                        vec![t.renames, WINDOWS_COMMON]
                    } else {
                        vec![]
                    };
                    let names = Names {
                        renames: &tables,
                        vars: &self.placeholders,
                    };
                    match compile::compile_detection(&f.detection, &names, &mut self.slots) {
                        Ok(fc) => {
                            let old = std::mem::replace(&mut v.cond, Cond::Const(false));
                            v.cond = Cond::And(vec![old, fc]);
                            used = true;
                        }
                        Err(e) => self.errors.push(LoadError {
                            path: f.path.clone(),
                            title: Some(f.title.clone()),
                            reason: e,
                        }),
                    }
                }
            }
            if used {
                applied.push(f.title);
            }
        }
        applied
    }

    fn finish(mut self) -> (Ruleset, Vec<LoadError>) {
        let filters = self.apply_filters();
        if let Err(e) = self.needles.build(&self.slots) {
            // Cannot happen with valid literals; fall back to evaluating everything.
            self.errors.push(LoadError {
                path: PathBuf::new(),
                title: None,
                reason: format!("needle prefilter disabled: {e}"),
            });
            self.needles = Needles::default();
            for v in &mut self.variants {
                v.0.needles = Box::default();
            }
        }
        let mut rs = Ruleset {
            filters,
            rules: self.rules,
            correlations: self.correlations,
            variants: Vec::with_capacity(self.variants.len()),
            slots: self.slots.len(),
            needles: self.needles,
            channels: HashMap::new(),
            any_windows: ChanIdx::default(),
            other: Vec::new(),
            sym_channel: Sym::new("channel"),
            sym_event_id: Sym::new("event_id"),
        };
        for (i, (v, t, ids)) in self.variants.into_iter().enumerate() {
            let i = i as u32;
            match (t.windows, t.channel) {
                (false, _) => rs.other.push(i),
                (true, None) => rs.any_windows.add(ids.as_deref(), i),
                (true, Some(ch)) => {
                    rs.channels
                        .entry(ch.into())
                        .or_default()
                        .add(ids.as_deref(), i);
                    let low = ch.to_ascii_lowercase();
                    if low != ch {
                        rs.channels
                            .entry(low.into())
                            .or_default()
                            .add(ids.as_deref(), i);
                    }
                }
            }
            rs.variants.push(v);
        }
        (rs, self.errors)
    }
}
