//! Loading rule files into a [`Ruleset`] and matching events against it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value as Json;
use watchpost_event::{Event, FieldRef, Sym};

use crate::aggregation;
use crate::cached::{self, Body, DocEntry, FileEntry, FormEntry, RuleEntry};
use crate::compile::{self, Cond, FastMap, Names, Needles, Plan, Scratch, Slots};
use crate::correlation::CorrelationRule;
use crate::lazy::FormCond;
pub use crate::level::Level;
use crate::load::{self, Cache, FileId, LoadStats, Lookup};
use crate::logsource::{self, Target, WINDOWS_COMMON, WINDOWS_SYSTEM_FALLBACK};
use crate::placeholders::Placeholders;

/// How rules are loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Values of `%name%` placeholders for the `expand` modifier.
    pub placeholders: Placeholders,
    /// Rule `status` values that are not loaded (a hunt skips `deprecated` and
    /// `unsupported` rules as Hayabusa does); compared case-insensitively.
    pub skip_status: Vec<String>,
    /// Rule ids that are not loaded, each with the list that named it (see
    /// [`parse_exclude_list`]).
    pub exclude: HashMap<String, String>,
    /// The compiled-rule cache file ([`Ruleset::load_with`]): what loading needs of each
    /// rule file, keyed by the SHA-256 of its bytes; rules taken from it are compiled at
    /// their first use. `None`: every file is parsed and every rule compiled as it loads.
    pub cache: Option<PathBuf>,
    /// Threads that read, parse and compile rule files (0: every core).
    pub threads: usize,
}

/// The rule ids of an exclusion list in Hayabusa's `exclude_rules.txt` /
/// `noisy_rules.txt` format: one id per line (the first word), `#` starts a comment,
/// blank lines are ignored.
pub fn parse_exclude_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
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
    /// The prefilter key of each compiled form (one per target the detection does not
    /// exclude).
    pub keys: Vec<PrefilterKey>,
    /// The rule only feeds correlations: a correlation references it without
    /// `generate: true`, or it is the selection of a deprecated aggregation
    /// (`condition: sel | count() by X > 5`, loaded as this rule plus a correlation rule
    /// with the original title, id and level).
    pub correlation_only: bool,
}

/// What an event must have for a compiled rule form to be evaluated at all: what the
/// logsource implies and what every branch of the detection requires
/// (`Channel`, `EventID`, `Provider_Name` tests), wherever it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefilterKey {
    /// The channels (as the logsource mapping names them, else lowercased as the
    /// detection pins them; `None`: any Windows channel, or for a non-Windows rule,
    /// events without a channel).
    pub channels: Option<Vec<String>>,
    /// Event ids (from the logsource, else pinned by the detection); `None`: any.
    pub event_ids: Option<Vec<i64>>,
    /// Providers the detection pins (`Provider_Name`, lowercased); `None`: any. Rules
    /// with no channel are indexed by them; others test them before the condition.
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

impl LoadError {
    /// The reason in a few words, for a summary by reason: `status deprecated`,
    /// `status unsupported`, `excluded`, `no title`, `logsource not mapped`,
    /// `placeholder without values`, `YAML error`, `unreadable`, or `unsupported or
    /// invalid` (anything else; the full reason says what).
    pub fn kind(&self) -> &'static str {
        let r = self.reason.as_str();
        if let Some(st) = r.strip_prefix("status `") {
            return match st.split('`').next() {
                Some(x) if x.eq_ignore_ascii_case("deprecated") => "status deprecated",
                Some(x) if x.eq_ignore_ascii_case("unsupported") => "status unsupported",
                _ => "status skipped",
            };
        }
        if r.starts_with("excluded by ") {
            "excluded"
        } else if r == "rule has no title" {
            "no title"
        } else if r.contains("is not mapped to a channel")
            || r.contains("name different channels")
            || r.contains("names no product")
        {
            "logsource not mapped"
        } else if r.contains("placeholder `") && r.contains("` has no values") {
            "placeholder without values"
        } else if r.starts_with("YAML: ") {
            "YAML error"
        } else if r.starts_with("cannot read") {
            "unreadable"
        } else {
            "unsupported or invalid"
        }
    }
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
    /// The rule only feeds correlations (see [`Rule::correlation_only`]): not a
    /// detection by itself.
    pub correlation_only: bool,
}

struct Variant {
    rule: u32,
    cond: FormCond,
    /// Needle ids of which one must occur (see [`Needles`]); empty: no prefilter.
    needles: Box<[u32]>,
    /// The channels it applies to, lowercased (`None`: any) and whether it is a Windows
    /// target (for [`Ruleset::matches_unindexed`]).
    channels: Option<Box<[Box<str>]>>,
    windows: bool,
    /// Event ids the logsource implies (part of the rule's meaning, not a prefilter).
    target_ids: Option<Vec<i64>>,
    /// Providers the detection pins, lowercased: tested before the condition.
    providers: Option<Box<[Box<str>]>>,
}

#[derive(Default)]
struct ChanIdx {
    by_id: FastMap<i64, Vec<u32>>,
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
    /// The fields the rules read, numbered (a deferred form's compiled slots are looked
    /// up here).
    slots: Slots,
    /// For compiling deferred forms.
    placeholders: Placeholders,
    /// Deferred forms compiled so far, and those of them that did not compile.
    compiled: AtomicUsize,
    failed: AtomicUsize,
    cache_note: Option<String>,
    needles: Needles,
    /// Lowercased channel → rule forms for it.
    channels: FastMap<Box<str>, ChanIdx>,
    /// Channel names as the rules write them (for [`Ruleset::channels`]).
    channel_names: Vec<Box<str>>,
    /// Lowercased provider → Windows rule forms for any channel that pin it.
    providers: FastMap<Box<str>, ChanIdx>,
    any_windows: ChanIdx,
    other: Vec<u32>,
    sym_channel: Sym,
    sym_event_id: Sym,
    sym_provider: Sym,
    stats: LoadStats,
    /// Unique in the process: scratches keep plans for one ruleset at a time.
    serial: u64,
}

/// Most candidate plans a scratch keeps (keys come from the events: a hostile file could
/// name ever new channels and providers).
const MAX_PLANS: usize = 4096;

/// The next [`Ruleset::serial`].
fn next_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

    /// [`Ruleset::load`] with options (placeholders, skipped statuses and ids, the
    /// compiled-rule cache). Files are read, parsed and compiled on every core (or
    /// [`LoadOptions::threads`]), each on its own, and joined in file order.
    ///
    /// With [`LoadOptions::cache`], a file whose entry the cache has (same bytes, same
    /// build of this crate, same placeholder values) is neither parsed nor compiled: its
    /// rules are filed in the index with the keys and needles the entry holds, and each
    /// form's detection is compiled at the first event that reaches it as a candidate
    /// (most rules of a large set never meet an event of their channel in a hunt). What
    /// the rules of a cached file report (rules not loaded and why) is what compiling
    /// them reported when the entry was written. Files without an entry are compiled as
    /// they load and the cache is rewritten.
    ///
    /// The cache also records each file's identity (device, inode, size, modification and
    /// status-change times): a file whose identity is the recorded one is taken from its
    /// entry without being opened. An identity is recorded only for a file whose last
    /// change is at least two seconds older than the load (docs/sigma.md says why).
    pub fn load_with<P: AsRef<Path>>(paths: &[P], opts: &LoadOptions) -> (Ruleset, Vec<LoadError>) {
        let now = load::epoch_ns(std::time::SystemTime::now());
        Ruleset::load_settled(paths, opts, now - load::SETTLE.as_nanos() as i128)
    }

    /// [`Ruleset::load_with`], recording the identity of files whose last status change
    /// is before `settled` (nanoseconds since the Unix epoch).
    pub(crate) fn load_settled<P: AsRef<Path>>(
        paths: &[P],
        opts: &LoadOptions,
        settled: i128,
    ) -> (Ruleset, Vec<LoadError>) {
        let started = std::time::Instant::now();
        let mut b = Builder::new(opts);
        let context = cache_context(&opts.placeholders);
        // The cache file is read while the rule folders are listed.
        let (files, (cache, note)) = std::thread::scope(|s| {
            let opening = opts
                .cache
                .as_ref()
                .map(|p| s.spawn(|| Cache::open(p, &context)));
            let files = find_files(paths, &mut b);
            let opened = opening.map_or((None, None), |h| h.join().unwrap_or((None, None)));
            (files, opened)
        });
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let malformed = cache.as_ref().map_or(0, Cache::malformed);
        let ctx = b.ctx();
        let caching = opts.cache.is_some();
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, FileDone)>> = Mutex::new(Vec::with_capacity(files.len()));
        std::thread::scope(|s| {
            for _ in 0..threads.clamp(1, files.len().max(1)) {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    let mut buf = Vec::with_capacity(64 << 10);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(f) = files.get(i) else { break };
                        let c = cache.as_ref();
                        mine.push((i, load_file(f, &mut buf, c, caching, settled, &ctx)));
                    }
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .append(&mut mine);
                });
            }
        });
        let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
        done.sort_unstable_by_key(|d| d.0);
        let mut stats = LoadStats {
            files: files.len(),
            damaged: malformed,
            read_secs: started.elapsed().as_secs_f64(),
            ..LoadStats::default()
        };
        let indexing = std::time::Instant::now();
        let mut lines: Vec<(&[u8; 32], &str)> = Vec::new();
        let mut fresh = false;
        for (i, d) in &mut done {
            stats.cached += usize::from(d.hit);
            stats.unread += usize::from(d.unread);
            stats.damaged += usize::from(d.damaged);
            match std::mem::replace(&mut d.docs, Ok(Vec::new())) {
                Ok(prepared) => b.commit(&files[*i], prepared),
                Err(e) => b.err(&files[*i], None, e),
            }
        }
        if let Some(path) = &opts.cache {
            for (_, d) in &done {
                match &d.entry {
                    Entry::None => {}
                    Entry::Old(digest, r) => {
                        if let Some(c) = &cache {
                            lines.push((digest, c.line(r)));
                        }
                    }
                    Entry::New(digest, line) => {
                        fresh = true;
                        lines.push((digest, line));
                    }
                }
            }
            lines.sort_unstable_by_key(|l| l.0);
            lines.dedup_by_key(|l| l.0);
            // The identities to record (path, identity, digest), and whether they differ
            // from the cache's; their lines are made only when the cache is written.
            let mut ids = Vec::new();
            let mut moved = false;
            for (i, d) in &done {
                let digest = match &d.entry {
                    Entry::Old(digest, _) | Entry::New(digest, _) => digest,
                    Entry::None => continue,
                };
                let path = load::recordable(&files[*i]);
                let had = path.and_then(|p| cache.as_ref()?.known(p));
                let has = d.id.filter(|_| path.is_some()).map(|id| (id, *digest));
                moved |= had != has;
                if let Some((id, digest)) = has {
                    ids.push((&files[*i], id, digest));
                }
            }
            moved |= cache.as_ref().map_or(0, Cache::ids_len) != ids.len();
            let stale = cache.as_ref().map_or(0, Cache::len) != lines.len();
            if fresh || stale || moved || stats.damaged > 0 {
                let ids: Vec<String> = ids
                    .iter()
                    .filter_map(|(p, id, d)| load::id_line(p, id, d))
                    .collect();
                // A cache that cannot be written only costs the next load its speed.
                let all = lines
                    .iter()
                    .map(|l| l.1)
                    .chain(ids.iter().map(String::as_str));
                let _ = load::write_cache(path, &context, all);
            }
        }
        let (mut rs, errors) = b.finish();
        stats.index_secs = indexing.elapsed().as_secs_f64();
        stats.deferred = rs.variants.iter().filter(|v| v.cond.is_deferred()).count();
        rs.stats = stats;
        rs.cache_note = match (note, stats.damaged) {
            (Some(n), _) => Some(n),
            (None, 0) => None,
            (None, n) => Some(format!(
                "rule cache {}: {n} damaged entries ignored (their files were compiled again)",
                opts.cache.as_deref().unwrap_or(Path::new("")).display()
            )),
        };
        (rs, errors)
    }

    /// What loading cost (files, cache hits, seconds).
    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    /// Why the cache file could not be used, or how many of its entries were damaged
    /// (those files were compiled again); `None` when nothing was wrong with it.
    pub fn cache_note(&self) -> Option<&str> {
        self.cache_note.as_deref()
    }

    /// Of the [`LoadStats::deferred`] rule forms, how many were compiled so far (at the
    /// first event that reached them), and how many of those did not compile after all
    /// (they match nothing; only a cache entry that lies about its rule does that).
    pub fn compiled(&self) -> (usize, usize) {
        (
            self.compiled.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// The condition of `var`, compiled now if it was deferred.
    fn cond<'a>(&'a self, var: &'a Variant) -> &'a Cond {
        var.cond.get(|det, t| {
            self.compiled.fetch_add(1, Ordering::Relaxed);
            let target = self
                .rules
                .get(var.rule as usize)
                .and_then(|r| r.targets.get(t));
            target
                .and_then(|t| compile_form(det, t, &self.placeholders, &self.slots))
                .unwrap_or_else(|| {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    Cond::Const(false)
                })
        })
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
        let mut b = Builder::new(opts);
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
        sc.next_event(self.slots.len(), self.variants.len());
        let plan = self.plan(ev, sc);
        for &slot in plan.slots.iter() {
            self.needles.scan(ev, sc, slot);
        }
        let epoch = sc.epoch();
        let before = out.len();
        for &c in plan.cands.iter() {
            let v = c & !Plan::NEEDLED;
            if c & Plan::NEEDLED != 0 && sc.marks[v as usize] != epoch {
                continue;
            }
            let var = &self.variants[v as usize];
            if out.len() > before && out.last().map(|m| m.rule) == Some(var.rule as usize) {
                continue;
            }
            let cond = self.cond(var);
            if cond.eval(ev, sc) {
                let r = &self.rules[var.rule as usize];
                let mut fields = Vec::new();
                cond.matched_fields(ev, sc, &mut fields);
                out.push(Match {
                    rule: var.rule as usize,
                    title: r.title.clone(),
                    id: r.id.clone(),
                    level: r.level,
                    tags: r.tags.clone(),
                    fields,
                    correlation_only: r.correlation_only,
                });
            }
        }
        out.len() - before
    }

    /// The candidate plan of `ev`'s (channel, event id, provider), made on first use and
    /// kept in the scratch (at most [`MAX_PLANS`] keys; past that, made per event).
    fn plan(&self, ev: &Event, sc: &mut Scratch) -> Arc<Plan> {
        if sc.owner != self.serial {
            sc.plans.clear();
            sc.owner = self.serial;
        }
        let mut key = std::mem::take(&mut sc.plan_key);
        let mut low = std::mem::take(&mut sc.key);
        let mut provider = std::mem::take(&mut sc.provider);
        key.clear();
        low.clear();
        provider.clear();
        if let Some(p) = ev.get(self.sym_provider) {
            lower_into(&p.text(), &mut provider);
        }
        let channel = ev.get(self.sym_channel);
        let id = ev.get(self.sym_event_id).and_then(|v| match v {
            FieldRef::Int(i) => Some(i),
            FieldRef::Str(s) => s.trim().parse().ok(),
            _ => None,
        });
        match &channel {
            Some(ch) => {
                lower_into(&ch.text(), &mut low);
                key.push(1);
                key.extend_from_slice(low.as_bytes());
                key.push(0);
                key.extend_from_slice(provider.as_bytes());
                key.push(0);
                match id {
                    Some(i) => {
                        key.push(1);
                        key.extend_from_slice(&i.to_le_bytes());
                    }
                    None => key.push(0),
                }
            }
            None => key.push(0),
        }
        let plan = match sc.plans.get(key.as_slice()) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(self.make_plan(
                    channel.is_some().then_some(low.as_str()),
                    id,
                    &provider,
                ));
                if sc.plans.len() < MAX_PLANS {
                    sc.plans.insert(key.as_slice().into(), p.clone());
                }
                p
            }
        };
        sc.plan_key = key;
        sc.key = low;
        sc.provider = provider;
        plan
    }

    /// The rule forms an event of (lowercased) `channel` (`None`: an event without one),
    /// `id` and lowercased `provider` is tested against, and the slots of their needles.
    fn make_plan(&self, channel: Option<&str>, id: Option<i64>, provider: &str) -> Plan {
        let mut cands = Vec::new();
        match channel {
            Some(low) => {
                if let Some(idx) = self.channels.get(low) {
                    idx.candidates(id, &mut cands);
                }
                self.any_windows.candidates(id, &mut cands);
                if let Some(idx) = self.providers.get(provider) {
                    idx.candidates(id, &mut cands);
                }
                cands.sort_unstable();
                cands.dedup();
            }
            None => cands.extend_from_slice(&self.other),
        }
        cands.retain(|&v| {
            self.variants[v as usize]
                .providers
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| **p == *provider))
        });
        let mut slots = Vec::new();
        for c in &mut cands {
            let var = &self.variants[*c as usize];
            if !var.needles.is_empty() {
                *c |= Plan::NEEDLED;
                slots.extend(var.needles.iter().map(|&n| self.needles.slot_of(n)));
            }
        }
        slots.sort_unstable();
        slots.dedup();
        Plan {
            cands: cands.into(),
            slots: slots.into(),
        }
    }

    /// [`Ruleset::matches`] without the event-id index and without the needle
    /// prefilter: every rule form of the event's channel is evaluated. For tests that
    /// check the prefilters lose nothing; far slower.
    #[doc(hidden)]
    pub fn matches_unindexed(&self, ev: &Event, out: &mut Vec<Match>) -> usize {
        let mut sc = Scratch::new();
        sc.next_event(self.slots.len(), self.variants.len());
        let channel = ev
            .get(self.sym_channel)
            .map(|c| c.text().to_ascii_lowercase());
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
            let applies = match (&channel, var.windows, &var.channels) {
                (None, false, _) => true,
                (Some(_), true, None) => true,
                (Some(ch), true, Some(vc)) => vc.iter().any(|c| **c == **ch),
                _ => false,
            };
            if !applies
                || (out.len() > before && out.last().map(|m| m.rule) == Some(var.rule as usize))
            {
                continue;
            }
            let cond = self.cond(var);
            if cond.eval(ev, &mut sc) {
                let r = &self.rules[var.rule as usize];
                let mut fields = Vec::new();
                cond.matched_fields(ev, &mut sc, &mut fields);
                out.push(Match {
                    rule: var.rule as usize,
                    title: r.title.clone(),
                    id: r.id.clone(),
                    level: r.level,
                    tags: r.tags.clone(),
                    fields,
                    correlation_only: r.correlation_only,
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

    /// The channels some rule is filed under, as the rules name them (`None` in
    /// [`PrefilterKey::channels`] means any channel: see [`Ruleset::wants`]).
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channel_names.iter().map(|k| &**k)
    }

    /// How many compiled rule forms an event of `channel` and `event_id` (of any
    /// provider) is tested against (for diagnostics and the benchmark).
    pub fn candidates(&self, channel: &str, event_id: Option<i64>) -> usize {
        let mut c = Vec::new();
        if let Some(idx) = self.channels.get(channel.to_ascii_lowercase().as_str()) {
            idx.candidates(event_id, &mut c);
        }
        self.any_windows.candidates(event_id, &mut c);
        for idx in self.providers.values() {
            idx.candidates(event_id, &mut c);
        }
        c.sort_unstable();
        c.dedup();
        c.len()
    }
}

#[derive(Default)]
struct Builder {
    rules: Vec<Rule>,
    correlations: Vec<CorrelationRule>,
    variants: Vec<Pending>,
    slots: Slots,
    needles: Needles,
    filters: Vec<FilterDoc>,
    errors: Vec<LoadError>,
    placeholders: Placeholders,
    skip_status: Vec<String>,
    exclude: HashMap<String, String>,
    /// Deprecated aggregations translated so far (names their selection rules).
    aggregations: usize,
}

/// A compiled rule form before indexing.
struct Pending {
    var: Variant,
    /// Its target (for the renames a filter document's detection gets) and which of the
    /// rule's targets it is.
    target: Target,
    target_index: usize,
    /// The channels it is filed under, as written (empty: any).
    shown: Vec<String>,
    /// The event ids it is filed under (`None`: any).
    ids: Option<Vec<i64>>,
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
    fn new(opts: &LoadOptions) -> Builder {
        Builder {
            placeholders: opts.placeholders.clone(),
            skip_status: opts.skip_status.clone(),
            exclude: opts.exclude.clone(),
            ..Builder::default()
        }
    }

    fn err(&mut self, path: &Path, title: Option<String>, reason: String) {
        self.errors.push(LoadError {
            path: path.to_path_buf(),
            title,
            reason,
        });
    }

    fn add_yaml(&mut self, path: &Path, text: &str) {
        match load::parse_yaml(text) {
            Ok(docs) => self.add_docs(path, docs),
            Err(e) => self.err(path, None, e),
        }
    }

    fn add_docs(&mut self, path: &Path, docs: Vec<Json>) {
        let ctx = self.ctx();
        let prepared: Vec<_> = docs.iter().map(|d| prepare(path, d, &ctx)).collect();
        self.commit(path, prepared);
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            placeholders: self.placeholders.clone(),
            skip_status: self.skip_status.clone(),
            exclude: self.exclude.clone(),
        }
    }

    /// Adds the prepared documents of one file, in order: their slots and needles join
    /// the set's, their rules get their indices.
    fn commit(&mut self, path: &Path, prepared: Vec<PreparedDoc>) {
        for (title, p) in prepared {
            match p {
                Err(reason) => self.err(path, title, reason),
                Ok(Prepared::Correlation(c)) => self.correlations.push(c),
                Ok(Prepared::Filter(f)) => self.filters.push(f),
                Ok(Prepared::Rule(r)) => self.commit_rule(*r),
            }
        }
    }

    fn commit_rule(&mut self, p: PreparedRule) {
        let PreparedRule {
            mut rule,
            forms,
            slots,
            aggregation,
        } = p;
        let rule_idx = self.rules.len() as u32;
        let map: Vec<u32> = slots
            .iter()
            .map(|(sym, alt)| self.slots.slot(*sym, *alt))
            .collect();
        for (mut pending, lits) in forms {
            pending.var.rule = rule_idx;
            if let FormCond::Ready(c) = &mut pending.var.cond {
                c.remap_slots(&map);
            }
            pending.var.needles = lits
                .into_iter()
                .map(|(slot, lit)| self.needles.intern(map[slot as usize], lit))
                .collect();
            self.variants.push(pending);
        }
        if let Some(a) = aggregation {
            // The selection becomes a rule of its own that only feeds the correlation;
            // the correlation keeps the rule's title, id and level.
            self.aggregations += 1;
            let base: Arc<str> = format!(
                "{} (selection of aggregation {})",
                rule.title, self.aggregations
            )
            .into();
            self.correlations.push(a.correlation(
                rule.title.clone(),
                rule.id.clone(),
                rule.level,
                base.to_string(),
            ));
            rule.name = Some(base);
            rule.correlation_only = true;
        }
        self.rules.push(rule);
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
                for Pending {
                    var: v, target: t, ..
                } in &mut self.variants
                {
                    if !targets.contains(&(v.rule as usize)) {
                        continue;
                    }
                    let (vars, slots) = (&self.placeholders, &mut self.slots);
                    match with_names(t, vars, |n| {
                        compile::compile_detection(&f.detection, n, slots)
                    }) {
                        Ok(fc) => {
                            // A form from the cache is compiled now, to take the filter.
                            let old =
                                std::mem::replace(&mut v.cond, FormCond::Ready(Cond::Const(false)))
                                    .into_cond(|det, _| {
                                        compile_form(det, t, vars, slots)
                                            .unwrap_or(Cond::Const(false))
                                    });
                            v.cond = FormCond::Ready(Cond::And(vec![old, fc]));
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
        // Rules correlations reference only feed them, unless one of those correlations
        // says `generate: true`.
        let refs = |generate: bool| -> Vec<&String> {
            self.correlations
                .iter()
                .filter(|c| c.generate == generate)
                .flat_map(|c| c.rules.iter())
                .collect()
        };
        let (quiet, loud) = (refs(false), refs(true));
        let named = |x: &Rule, r: &str| {
            x.id.as_deref() == Some(r) || x.name.as_deref() == Some(r) || &*x.title == r
        };
        let silence: Vec<usize> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, x)| quiet.iter().any(|r| named(x, r)) && !loud.iter().any(|r| named(x, r)))
            .map(|(i, _)| i)
            .collect();
        for i in silence {
            self.rules[i].correlation_only = true;
        }
        let forms = self.variants.iter().map(|p| &*p.var.needles);
        if let Err(e) = self.needles.build(&self.slots, forms) {
            // Cannot happen with valid literals; fall back to evaluating everything.
            self.errors.push(LoadError {
                path: PathBuf::new(),
                title: None,
                reason: format!("needle prefilter disabled: {e}"),
            });
            self.needles = Needles::default();
            for v in &mut self.variants {
                v.var.needles = Box::default();
            }
        }
        let mut rs = Ruleset {
            filters,
            rules: self.rules,
            correlations: self.correlations,
            variants: Vec::with_capacity(self.variants.len()),
            slots: self.slots,
            placeholders: self.placeholders,
            compiled: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            cache_note: None,
            needles: self.needles,
            channels: FastMap::default(),
            channel_names: Vec::new(),
            providers: FastMap::default(),
            any_windows: ChanIdx::default(),
            other: Vec::new(),
            sym_channel: Sym::new("channel"),
            sym_event_id: Sym::new("event_id"),
            sym_provider: Sym::new("provider"),
            stats: LoadStats::default(),
            serial: next_serial(),
        };
        let mut seen: FastMap<String, ()> = FastMap::default();
        // The index's entry for `key`, made the first time (keys are few, forms many).
        fn entry<'a>(map: &'a mut FastMap<Box<str>, ChanIdx>, key: &str) -> &'a mut ChanIdx {
            if !map.contains_key(key) {
                map.insert(key.into(), ChanIdx::default());
            }
            map.get_mut(key).expect("inserted above")
        }
        for (i, mut p) in self.variants.into_iter().enumerate() {
            let i = i as u32;
            let ids = p.ids.as_deref();
            if !p.var.windows {
                rs.other.push(i);
            } else if let Some(chans) = &p.var.channels {
                for (low, shown) in chans.iter().zip(&mut p.shown) {
                    entry(&mut rs.channels, low).add(ids, i);
                    if !seen.contains_key(shown.as_str()) {
                        rs.channel_names.push(shown.as_str().into());
                        seen.insert(std::mem::take(shown), ());
                    }
                }
            } else if let Some(provs) = &p.var.providers {
                for pr in provs.iter() {
                    entry(&mut rs.providers, pr).add(ids, i);
                }
            } else {
                rs.any_windows.add(ids, i);
            }
            rs.variants.push(p.var);
        }
        (rs, self.errors)
    }
}

/// Settings a worker needs to prepare documents.
struct Ctx {
    placeholders: Placeholders,
    skip_status: Vec<String>,
    exclude: HashMap<String, String>,
}

/// A document compiled on a worker thread, before it joins the set.
enum Prepared {
    Rule(Box<PreparedRule>),
    Correlation(CorrelationRule),
    Filter(FilterDoc),
}

/// A detection rule compiled with slots numbered for it alone.
struct PreparedRule {
    rule: Rule,
    /// Its forms, each with its needles (local slot, literal).
    forms: Vec<(Pending, Vec<(u32, String)>)>,
    /// Local slot → (field, System fallback).
    slots: Vec<(Sym, Option<Sym>)>,
    aggregation: Option<aggregation::Aggregation>,
}

/// Compiles one document (any thread): the rule's title for errors, and the result.
fn prepare(path: &Path, doc: &Json, ctx: &Ctx) -> (Option<String>, Result<Prepared, String>) {
    (text_of(doc.get("title")), prepare_doc(path, doc, ctx))
}

/// What is decided about a document before the options: it is a mapping without
/// `action` and with a title.
struct Head<'a> {
    obj: &'a serde_json::Map<String, Json>,
    title: Arc<str>,
    id: Option<Arc<str>>,
    status: Option<String>,
}

fn head(doc: &Json) -> Result<Head<'_>, String> {
    let obj = doc.as_object().ok_or("a rule document must be a mapping")?;
    if obj.contains_key("action") {
        return Err("multi-document `action: global` rule collections are not supported".into());
    }
    Ok(Head {
        obj,
        title: text_of(obj.get("title")).ok_or("rule has no title")?.into(),
        id: text_of(obj.get("id")).map(Arc::from),
        status: text_of(obj.get("status")),
    })
}

impl Ctx {
    /// Why the options keep a document with this `status` and `id` out, if they do.
    fn skips(&self, status: Option<&str>, id: Option<&str>) -> Result<(), String> {
        if let Some(st) = status
            && self.skip_status.iter().any(|x| x.eq_ignore_ascii_case(st))
        {
            return Err(format!("status `{st}` (not loaded by default)"));
        }
        if let Some(list) = id.and_then(|i| self.exclude.get(i)) {
            return Err(format!("excluded by {list}"));
        }
        Ok(())
    }
}

fn prepare_doc(path: &Path, doc: &Json, ctx: &Ctx) -> Result<Prepared, String> {
    let Head {
        obj,
        title,
        id,
        status,
    } = head(doc)?;
    ctx.skips(status.as_deref(), id.as_deref())?;
    let level = match obj.get("level") {
        None | Some(Json::Null) => Level::Medium,
        Some(Json::String(s)) => s.parse().map_err(|e: crate::UnknownLevel| e.to_string())?,
        Some(_) => return Err("level must be a string".into()),
    };
    if let Some(c) = obj.get("correlation") {
        let name = text_of(obj.get("name"));
        let rule = crate::correlation::parse(c, obj.get("generate"), title, id, name, level)?;
        return Ok(Prepared::Correlation(rule));
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
                fallbacks: &[],
                vars: &ctx.placeholders,
            },
            &mut Slots::default(),
        )?;
        return Ok(Prepared::Filter(FilterDoc {
            path: path.to_path_buf(),
            title: title.to_string(),
            rules,
            detection: det,
        }));
    }
    let detection = obj
        .get("detection")
        .and_then(Json::as_object)
        .ok_or("rule has no detection mapping")?;
    let aggregation = aggregation::split(detection, obj.get("timeframe"))?;
    let detection = aggregation.as_ref().map_or(detection, |a| &a.detection);
    let ls = obj.get("logsource").and_then(Json::as_object);
    let lsf = |k: &str| ls.and_then(|m| text_of(m.get(k)));
    let (product, category, service) = (lsf("product"), lsf("category"), lsf("service"));
    let targets = logsource::targets(product.as_deref(), category.as_deref(), service.as_deref())?;
    let tags: Arc<[Arc<str>]> = match obj.get("tags") {
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(|t| text_of(Some(t)))
            .map(Arc::from)
            .collect(),
        _ => Arc::from(Vec::new()),
    };
    let mut slots = Slots::default();
    let (keys, forms) = compile_targets(detection, &targets, ctx, &mut slots)?;
    let rule = Rule {
        title,
        id,
        name: text_of(obj.get("name")).map(Arc::from),
        level,
        status: status.map(Arc::from),
        tags,
        product,
        category,
        service,
        description: text_of(obj.get("description")),
        path: path.to_path_buf(),
        targets,
        keys,
        correlation_only: false,
    };
    Ok(Prepared::Rule(Box::new(PreparedRule {
        rule,
        forms,
        slots: slots.syms(),
        aggregation,
    })))
}

/// Compiles a rule's detection once per target and files each form under what it
/// needs: the target's channel and event ids, narrowed by the `Channel`, `EventID`
/// and `Provider_Name` values every branch of the condition requires. A form whose
/// target the detection excludes (a `process_creation` rule that tests
/// `Channel: Security`, on its Sysmon target) is dropped when another form covers
/// the rule; when none does, the detection's own channels are taken (what the rule
/// says it reads wins over its logsource).
#[allow(clippy::type_complexity)]
fn compile_targets(
    detection: &serde_json::Map<String, Json>,
    targets: &[Target],
    ctx: &Ctx,
    slots: &mut Slots,
) -> Result<(Vec<PrefilterKey>, Vec<(Pending, Vec<(u32, String)>)>), String> {
    let sym_event_id = Sym::new("event_id");
    let sym_provider = Sym::new("provider");
    let sym_channel = Sym::new("channel");
    let mut forms = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        let cond = with_names(t, &ctx.placeholders, |n| {
            compile::compile_detection(detection, n, slots)
        })?;
        let (pinned_ch, pinned_ids, providers) = if t.windows {
            (
                cond.pinned(sym_channel)
                    .map(|v| v.iter().map(|c| c.to_ascii_lowercase()).collect::<Vec<_>>()),
                cond.pinned_ids(sym_event_id),
                cond.pinned(sym_provider)
                    .map(|v| v.iter().map(|c| c.to_ascii_lowercase()).collect::<Vec<_>>()),
            )
        } else {
            (None, None, None)
        };
        let chan_ok = match (t.channel, &pinned_ch) {
            (Some(c), Some(p)) => p.iter().any(|x| x.eq_ignore_ascii_case(c)),
            _ => true,
        };
        let ids = match (&t.event_ids, &pinned_ids) {
            (Some(t), Some(p)) => Some(t.iter().copied().filter(|i| p.contains(i)).collect()),
            (Some(t), None) => Some(t.clone()),
            (None, p) if t.windows => p.clone(),
            (None, _) => None,
        };
        let fits = chan_ok && ids.as_ref().is_none_or(|v: &Vec<i64>| !v.is_empty());
        forms.push((ti, t, cond, pinned_ch, pinned_ids, providers, ids, fits));
    }
    let any_fits = forms.iter().any(|f| f.7);
    let mut keys = Vec::new();
    let mut forms_out = Vec::new();
    for (ti, t, cond, pinned_ch, pinned_ids, providers, ids, fits) in forms {
        if !fits && any_fits {
            continue;
        }
        // (channels to index under as written, lowercased; event ids; logsource ids)
        let (shown, ids, target_ids) = if fits {
            let shown = match (t.channel, &pinned_ch) {
                (Some(c), _) => Some(vec![c.to_string()]),
                (None, Some(p)) => Some(p.clone()),
                (None, None) => None,
            };
            (shown, ids, t.event_ids.clone())
        } else {
            (pinned_ch.clone(), pinned_ids, None)
        };
        let channels: Option<Box<[Box<str>]>> = shown.as_ref().map(|v| {
            v.iter()
                .map(|c| Box::from(c.to_ascii_lowercase()))
                .collect()
        });
        keys.push(PrefilterKey {
            channels: shown.clone(),
            event_ids: ids.clone(),
            providers: providers.clone(),
        });
        let lits: Vec<(u32, String)> = cond
            .required(&[sym_channel, sym_event_id, sym_provider])
            .unwrap_or_default()
            .into_iter()
            .map(|(slot, lit)| (slot, lit.to_string()))
            .collect();
        forms_out.push((
            Pending {
                var: Variant {
                    rule: 0,
                    cond: FormCond::Ready(cond),
                    needles: Box::default(),
                    channels,
                    windows: t.windows,
                    target_ids,
                    providers: providers.map(|v| v.into_iter().map(Box::from).collect()),
                },
                target: t.clone(),
                target_index: ti,
                shown: shown.unwrap_or_default(),
                ids,
            },
            lits,
        ));
    }
    Ok((keys, forms_out))
}

/// `s` ASCII-lowercased into `out` (channel and provider names are ASCII).
fn lower_into(s: &str, out: &mut String) {
    out.clear();
    out.push_str(s);
    out.make_ascii_lowercase();
}

/// The rule files of `paths` (files, folders searched recursively, glob patterns), in
/// order; what cannot be read is reported through `b`.
fn find_files<P: AsRef<Path>>(paths: &[P], b: &mut Builder) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let s = p.to_string_lossy();
        if s.contains(['*', '?', '[']) {
            match glob::glob(&s) {
                Ok(it) => {
                    for e in it.flatten() {
                        load::collect(&e, &mut files, &mut unreadable);
                    }
                }
                Err(e) => b.err(p, None, format!("bad glob pattern: {e}")),
            }
        } else {
            load::collect(p, &mut files, &mut unreadable);
        }
    }
    for (p, e) in unreadable {
        b.err(&p, None, e);
    }
    files
}

/// Runs `f` with the field names of target `t` (its renames, and for Windows the System
/// names and fallbacks).
fn with_names<R>(t: &Target, vars: &Placeholders, f: impl FnOnce(&Names<'_>) -> R) -> R {
    let windows = [t.renames, WINDOWS_COMMON];
    f(&Names {
        renames: if t.windows { &windows } else { &[] },
        fallbacks: if t.windows {
            WINDOWS_SYSTEM_FALLBACK
        } else {
            &[]
        },
        vars,
    })
}

/// A deferred form's detection (JSON text) compiled for `target`, its fields numbered
/// as the set numbers them. `None` when it does not compile or reads a field the set does
/// not number: the cache entry it came from did not hold together.
fn compile_form(det: &str, target: &Target, vars: &Placeholders, slots: &Slots) -> Option<Cond> {
    let det: serde_json::Map<String, Json> = serde_json::from_str(det).ok()?;
    let mut local = Slots::default();
    let mut cond = with_names(target, vars, |n| {
        compile::compile_detection(&det, n, &mut local)
    })
    .ok()?;
    let map = local
        .syms()
        .iter()
        .map(|(sym, alt)| slots.get(*sym, *alt))
        .collect::<Option<Vec<u32>>>()?;
    cond.remap_slots(&map);
    Some(cond)
}

/// What a cache's entries are valid for: this build of the crate (a digest of its
/// sources and of the lock file, `build.rs`) and the placeholder values `expand` uses.
fn cache_context(vars: &Placeholders) -> String {
    format!(
        "build={} vars={}",
        env!("WATCHPOST_SIGMA_BUILD"),
        &load::hex(&vars.digest())[..16]
    )
}

/// A document prepared: its title (for errors) and the rule, or why it is not loaded.
type PreparedDoc = (Option<String>, Result<Prepared, String>);

/// A file's documents prepared, or why the file could not be read.
type FileDocs = Result<Vec<PreparedDoc>, String>;

/// One rule file loaded on a worker.
struct FileDone {
    /// Its documents prepared, or why the file could not be read.
    docs: FileDocs,
    /// Its line in the cache to write.
    entry: Entry,
    /// Whether it came from the cache.
    hit: bool,
    /// Whether it came from the cache by its identity, without being read.
    unread: bool,
    /// Its identity to record (when its last change is old enough).
    id: Option<FileId>,
    /// Whether the cache's entry for it was damaged.
    damaged: bool,
}

/// A file's line in the cache to write.
enum Entry {
    None,
    /// The line the cache has (the range of its entry in the cache's text).
    Old([u8; 32], Range<usize>),
    /// A new line.
    New([u8; 32], String),
}

/// Takes one rule file's rules from the cache's entry: by the file's identity when it is
/// the one the cache recorded (without reading the file), else by the digest of its
/// bytes (read into `buf`); or parses and compiles them (and makes the entry). The
/// identity is recorded when the file's last change is before `settled`.
fn load_file(
    path: &Path,
    buf: &mut Vec<u8>,
    cache: Option<&Cache>,
    caching: bool,
    settled: i128,
    ctx: &Ctx,
) -> FileDone {
    if let Some(c) = cache
        && let Some((id, d)) = path.to_str().and_then(|p| c.known(p))
        && FileId::stat(path) == Some(id)
        && let Lookup::Hit(r) = c.lookup(&d)
        && let Some(FromEntry::Docs(docs)) = from_entry(path, c.text(), r.clone(), ctx)
    {
        return FileDone {
            docs,
            entry: Entry::Old(d, r),
            hit: true,
            unread: true,
            id: Some(id),
            damaged: false,
        };
    }
    let failed = |e: String, entry: Entry, damaged: bool| FileDone {
        docs: Err(e),
        entry,
        hit: false,
        unread: false,
        id: None,
        damaged,
    };
    let id = match load::read_rule_file(path, buf, caching) {
        Ok(id) => id.filter(|id| id.settled(settled)),
        Err(e) => return failed(format!("cannot read: {e}"), Entry::None, false),
    };
    let digest = caching.then(|| load::digest(buf));
    let mut damaged = false;
    if let (Some(c), Some(d)) = (cache, &digest) {
        match c.lookup(d) {
            Lookup::Hit(r) => match from_entry(path, c.text(), r.clone(), ctx) {
                Some(FromEntry::Docs(docs)) => {
                    return FileDone {
                        docs,
                        entry: Entry::Old(*d, r),
                        hit: true,
                        unread: false,
                        id,
                        damaged: false,
                    };
                }
                // Compiled again below, for an entry that defers the rule next time.
                Some(FromEntry::Outdated) => {}
                None => damaged = true,
            },
            Lookup::Damaged => damaged = true,
            Lookup::Miss => {}
        }
    }
    let new_entry = |entry: &FileEntry, segments: &[String]| match &digest {
        Some(d) => cached::encode(entry, segments)
            .map_or(Entry::None, |l| Entry::New(*d, load::line(d, &l))),
        None => Entry::None,
    };
    let Ok(text) = std::str::from_utf8(buf) else {
        return failed("cannot read: not UTF-8".into(), Entry::None, damaged);
    };
    let docs = match load::parse_yaml(text) {
        Ok(d) => d,
        Err(e) => {
            let entry = new_entry(&FileEntry::Error(e.clone()), &[]);
            return FileDone {
                id,
                ..failed(e, entry, damaged)
            };
        }
    };
    let mut prepared = Vec::with_capacity(docs.len());
    let mut entries = Vec::new();
    let mut segments = Vec::new();
    for doc in &docs {
        let p = prepare(path, doc, ctx);
        if digest.is_some() {
            entries.push(entry_of(doc, &p.1, ctx, &mut segments));
        }
        prepared.push(p);
    }
    FileDone {
        docs: Ok(prepared),
        entry: new_entry(&FileEntry::Docs(entries), &segments),
        hit: false,
        unread: false,
        id,
        damaged,
    }
}

/// The cache entry of a document, from what preparing it gave; segments (JSON kept for
/// later) are added to `segments`.
fn entry_of(
    doc: &Json,
    prepared: &Result<Prepared, String>,
    ctx: &Ctx,
    segments: &mut Vec<String>,
) -> DocEntry {
    let mut segment = |v: &Json| {
        segments.push(serde_json::to_string(v).unwrap_or_default());
        segments.len() - 1
    };
    let h = match head(doc) {
        Ok(h) => h,
        Err(reason) => {
            return DocEntry::Refused {
                title: text_of(doc.get("title")),
                reason,
            };
        }
    };
    let body = match prepared {
        // Not compiled in this run: the next one with other options prepares it whole.
        _ if ctx.skips(h.status.as_deref(), h.id.as_deref()).is_err() => Body::Json(segment(doc)),
        Err(reason) => Body::Refused(reason.clone()),
        Ok(Prepared::Rule(r)) if r.aggregation.is_none() => match h.obj.get("detection") {
            Some(det) => Body::Rule(Box::new(rule_entry(r, segment(det)))),
            None => Body::Json(segment(doc)),
        },
        Ok(_) => Body::Json(segment(doc)),
    };
    DocEntry::Doc {
        title: h.title.to_string(),
        id: h.id.map(|i| i.to_string()),
        status: h.status,
        body,
    }
}

/// The cache entry of a compiled rule whose detection is segment `detection`.
fn rule_entry(p: &PreparedRule, detection: usize) -> RuleEntry {
    let r = &p.rule;
    let text = |s: &Option<Arc<str>>| s.as_deref().map(str::to_string);
    RuleEntry {
        name: text(&r.name),
        level: r.level.to_string(),
        tags: r.tags.iter().map(|t| t.to_string()).collect(),
        product: r.product.clone(),
        category: r.category.clone(),
        service: r.service.clone(),
        description: r.description.clone(),
        detection,
        slots: p
            .slots
            .iter()
            .map(|(s, a)| (s.as_str().to_string(), a.map(|a| a.as_str().to_string())))
            .collect(),
        forms: p
            .forms
            .iter()
            .zip(&r.keys)
            .map(|((pending, needles), key)| FormEntry {
                target: pending.target_index,
                channels: key.channels.clone(),
                event_ids: key.event_ids.clone(),
                providers: key.providers.clone(),
                target_ids: pending.var.target_ids.clone(),
                needles: needles.clone(),
            })
            .collect(),
    }
}

/// What a cache entry gives.
enum FromEntry {
    /// The file's documents.
    Docs(FileDocs),
    /// The entry holds a detection rule as JSON (the options of the run that wrote it
    /// did not load it) that these options load: better compiled with its file again,
    /// so that the new entry files it without compiling next time.
    Outdated,
}

/// A file's documents from its cache entry (`text[range]`), prepared as loading them
/// would: the options decide on each document again, detection rules are filed with
/// deferred conditions. `None` when the entry does not hold together.
fn from_entry(
    path: &Path,
    text: &Arc<String>,
    range: Range<usize>,
    ctx: &Ctx,
) -> Option<FromEntry> {
    let (entry, segments) = cached::decode(text, range)?;
    let docs = match entry {
        FileEntry::Error(e) => return Some(FromEntry::Docs(Err(e))),
        FileEntry::Docs(docs) => docs,
    };
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let (title, id, status, body) = match d {
            DocEntry::Refused { title, reason } => {
                out.push((title, Err(reason)));
                continue;
            }
            DocEntry::Doc {
                title,
                id,
                status,
                body,
            } => (title, id, status, body),
        };
        if let Err(reason) = ctx.skips(status.as_deref(), id.as_deref()) {
            out.push((Some(title), Err(reason)));
            continue;
        }
        let prepared = match body {
            Body::Json(n) => {
                let doc: Json = serde_json::from_str(text.get(segments.get(n)?.clone())?).ok()?;
                let p = prepare(path, &doc, ctx);
                if matches!(&p.1, Ok(Prepared::Rule(r)) if r.aggregation.is_none()) {
                    return Some(FromEntry::Outdated);
                }
                p
            }
            Body::Refused(reason) => (Some(title), Err(reason)),
            Body::Rule(e) => {
                let rule = rule_from_entry(path, &title, id, status, *e, text, &segments)?;
                (Some(title), Ok(Prepared::Rule(Box::new(rule))))
            }
        };
        out.push(prepared);
    }
    Some(FromEntry::Docs(Ok(out)))
}

/// A detection rule from its cache entry, its forms deferred.
fn rule_from_entry(
    path: &Path,
    title: &str,
    id: Option<String>,
    status: Option<String>,
    e: RuleEntry,
    text: &Arc<String>,
    segments: &[Range<usize>],
) -> Option<PreparedRule> {
    let targets = logsource::targets(
        e.product.as_deref(),
        e.category.as_deref(),
        e.service.as_deref(),
    )
    .ok()?;
    let slots = e
        .slots
        .iter()
        .map(|(s, a)| {
            let alt = match a {
                Some(a) => Some(Sym::try_new(a)?),
                None => None,
            };
            Some((Sym::try_new(s)?, alt))
        })
        .collect::<Option<Vec<_>>>()?;
    let detection = segments.get(e.detection)?;
    let mut keys = Vec::with_capacity(e.forms.len());
    let mut forms = Vec::with_capacity(e.forms.len());
    for f in e.forms {
        let t = targets.get(f.target)?;
        if f.needles.iter().any(|(s, _)| *s as usize >= slots.len()) {
            return None;
        }
        keys.push(PrefilterKey {
            channels: f.channels.clone(),
            event_ids: f.event_ids.clone(),
            providers: f.providers.clone(),
        });
        let var = Variant {
            rule: 0,
            cond: FormCond::deferred(text.clone(), detection.clone(), f.target),
            needles: Box::default(),
            channels: f.channels.as_ref().map(|v| {
                v.iter()
                    .map(|c| Box::from(c.to_ascii_lowercase()))
                    .collect()
            }),
            windows: t.windows,
            target_ids: f.target_ids,
            providers: f.providers.map(|v| v.into_iter().map(Box::from).collect()),
        };
        let pending = Pending {
            var,
            target: t.clone(),
            target_index: f.target,
            shown: f.channels.unwrap_or_default(),
            ids: f.event_ids,
        };
        forms.push((pending, f.needles));
    }
    let rule = Rule {
        title: title.into(),
        id: id.map(Arc::from),
        name: e.name.map(Arc::from),
        level: e.level.parse().ok()?,
        status: status.map(Arc::from),
        tags: e.tags.into_iter().map(Arc::from).collect(),
        product: e.product,
        category: e.category,
        service: e.service,
        description: e.description,
        path: path.to_path_buf(),
        targets,
        keys,
        correlation_only: false,
    };
    Some(PreparedRule {
        rule,
        forms,
        slots,
        aggregation: None,
    })
}
