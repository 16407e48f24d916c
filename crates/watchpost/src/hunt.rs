//! `watchpost hunt`: Sigma rules over collected EVTX files, with every core.
//!
//! Rules are loaded on every core through the compiled-rule cache (`watchpost_sigma`'s
//! `load.rs`; [`default_rule_cache`]; a rule from it is compiled when an event first
//! reaches it), skipping `deprecated`/`unsupported` rules and the
//! ids of `--exclude-list` files as Hayabusa does; rules that do not load are summed up by
//! reason in one line (`--verbose` lists them). Files are handed to worker threads
//! (largest first, so the run does not end on one big straggler); each streams its records
//! (`evtx::for_each_evtx`, one event in memory at a time) through the rule set's index and
//! matchers. Detections are printed when the hunt is done, sorted by time, as a table (one
//! line per detection: control characters escaped, long values cut), JSON lines or CSV,
//! each with the record's EventRecordID, channel and file; after the table a results
//! summary ([`Summary`]). A progress line on stderr (when it is a terminal) counts files,
//! records and detections. A corrupt file or chunk is reported with its place and skipped;
//! the rest is read.
//!
//! Correlation rules in the rule set run after the files are read: the matches of the
//! rules they reference (whatever their level) are put in time order (ties by file and
//! record) and fed to one `Correlator`; windows still open at the end of the records are
//! decided then (`Correlator::finish`: "too few" conditions can fire there). A
//! correlation's detection has the time it was decided (the match that made it hold, or
//! the end of its fixed window) and names the last record that counted.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use watchpost_event::Event;
use watchpost_sigma::{CorrelationMatch, Correlator, Level, LoadOptions, Match, Ruleset};
use watchpost_sources::ParseCtx;
use watchpost_sources::evtx::for_each_evtx;

/// Output of `watchpost hunt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HuntFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object per detection.
    Jsonl,
    /// Comma-separated, with a header line.
    Csv,
}

/// One detection.
struct Detection {
    time: String,
    host: String,
    title: String,
    level: Level,
    id: String,
    tags: String,
    fields: Vec<(String, String)>,
    /// The record's channel and event id (empty / `None` when it has none).
    channel: String,
    event_id: Option<i64>,
    /// The record's EventRecordID and the file it was read from.
    record_id: Option<u64>,
    file: String,
}

impl Detection {
    /// A detection of `event` (its time, host, channel, event id, EventRecordID, file).
    fn of_event(
        event: &Event,
        title: String,
        level: Level,
        id: String,
        tags: String,
        fields: Vec<(String, String)>,
    ) -> Detection {
        let sym = watchpost_event::Sym::new;
        Detection {
            time: event
                .time
                .map(watchpost_event::format_time)
                .unwrap_or_default(),
            host: event.host.to_string(),
            title,
            level,
            id,
            tags,
            fields,
            channel: event
                .get(sym("channel"))
                .map(|v| v.text().into_owned())
                .unwrap_or_default(),
            event_id: event
                .get_str(sym("event_id"))
                .and_then(|v| v.trim().parse().ok()),
            // The record's own EventRecordID (what Hayabusa and Chainsaw show); the EVTX
            // record header's number differs in exported and carved logs.
            record_id: event
                .get_str(sym("record_id"))
                .and_then(|v| v.trim().parse().ok())
                .or_else(|| event.origin.as_ref().map(|o| o.offset)),
            file: event
                .origin
                .as_ref()
                .map(|o| o.place.to_string())
                .unwrap_or_default(),
        }
    }
}

/// What a hunt found and read.
#[derive(Debug, Default, Clone)]
pub struct HuntTotals {
    /// Files found.
    pub files: usize,
    /// Records read.
    pub records: u64,
    /// Detections at or above the level.
    pub detections: u64,
    /// Files or records that could not be read.
    pub errors: u64,
    /// Inputs (named paths and found files) of which nothing could be read, with why.
    pub unreadable: Vec<(String, String)>,
}

/// The `.evtx` files under `paths` (a named file is taken whatever its name); named paths
/// and folders that cannot be read are added to `unreadable` with why.
fn evtx_files(paths: &[PathBuf], unreadable: &mut Vec<(String, String)>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(_) => stack.push(p.clone()),
            Err(e) => unreadable.push((p.to_string_lossy().into_owned(), e.to_string())),
        }
    }
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.flatten().map(|e| e.path())),
                Err(e) => unreadable.push((p.to_string_lossy().into_owned(), e.to_string())),
            }
        } else if p
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("evtx"))
            || paths.contains(&p)
        {
            out.push(p);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The configuration's anomaly filters over the hunt's records (first seen over the
/// history): files in name order, one thread, a fresh baseline, through the same
/// pipeline as the daemon; each flagged event is a detection titled `anomaly: FILTER`
/// with the reason and the key and value fields.
fn anomalies(
    config: &watchpost_config::Config,
    chain: &watchpost_filters::Chain,
    files: &[PathBuf],
    found: &mut Vec<Detection>,
) -> Result<u64> {
    use std::sync::Arc;
    use watchpost_runtime::analysis::{Analysis, BaselineHome};
    use watchpost_runtime::{Current, Generation, Pipeline, SourceKind};
    let (analysis, judges) = Analysis::open(config, chain, BaselineHome::Temporary, false)?;
    let analysis = Arc::new(analysis);
    // The anomaly filters alone: the configuration's rule sets stay out of the hunt.
    let mut bare = watchpost_config::parse("", &mut Default::default())
        .ok_or_else(|| anyhow::anyhow!("an empty configuration does not parse"))?;
    bare.sources = config.sources.clone();
    let current = Arc::new(Current::new(Generation::build(
        0,
        &mut bare,
        chain.clone(),
        judges,
        Vec::new(),
        &|_| None,
    )));
    let name = config
        .sources
        .iter()
        .find(|s| s.format == watchpost_sources::Format::Evtx)
        .map_or("evtx", |s| s.name.as_str());
    let mut pipeline = Pipeline::new(
        SourceKind::Named(name, watchpost_sources::Format::Evtx),
        "hunt",
        current,
        analysis.clone(),
    );
    let ctx = pipeline.ctx().clone();
    let mut sink = AnomalySink { found, n: 0 };
    let mut ordered = files.to_vec();
    ordered.sort();
    for file in &ordered {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let place = file.to_string_lossy().into_owned();
        for_each_evtx(&ctx, bytes, &place, &mut |event| {
            pipeline.handle_event(event, Instant::now(), &mut sink);
        });
    }
    let n = sink.n;
    drop(pipeline);
    crate::commands::close(analysis);
    Ok(n)
}

/// Collects the anomaly filters' flags as detections.
struct AnomalySink<'a> {
    found: &'a mut Vec<Detection>,
    n: u64,
}

impl watchpost_runtime::Sink for AnomalySink<'_> {
    fn unparsable(&mut self, _: &str, _: &str, _: u64, _: &dyn std::fmt::Display) {}

    fn verdict(
        &mut self,
        g: &watchpost_runtime::Generation,
        event: &Event,
        _: &watchpost_filters::Verdict,
        judged: &[(usize, watchpost_anomaly::Verdict)],
    ) {
        for (fi, v) in judged {
            if !v.is_anomaly() {
                continue;
            }
            self.n += 1;
            let f = g.chain.filter(*fi);
            let mut fields = vec![("why".to_owned(), v.to_string())];
            if let Some(b) = &f.baseline {
                for s in b.key.iter().chain(&b.value) {
                    let text = event
                        .get(*s)
                        .map(|x| x.text().into_owned())
                        .unwrap_or_default();
                    fields.push((s.as_str().to_owned(), text));
                }
            }
            self.found.push(Detection::of_event(
                event,
                format!("anomaly: {}", f.name),
                Level::Medium,
                String::new(),
                String::new(),
                fields,
            ));
        }
    }

    fn fire(&mut self, _: &watchpost_runtime::Generation, _: &watchpost_runtime::Firing<'_>) {}
}

/// Which rules a hunt loads.
pub struct HuntRules<'a> {
    /// Sigma rule files, folders or globs.
    pub paths: &'a [PathBuf],
    /// Placeholder values, skipped statuses and ids, the cache.
    pub load: LoadOptions,
    /// List every rule that is not loaded (else one line by reason).
    pub verbose: bool,
}

/// Where a hunt keeps the compiled rules of the rule set at `paths`: one file per set
/// (named by a digest of the paths as given, made absolute) in the user's cache
/// directory (`$XDG_CACHE_HOME/watchpost` or `~/.cache/watchpost`; on Windows
/// `%LOCALAPPDATA%\watchpost\cache`). `None` when there is no such directory.
pub fn default_rule_cache(paths: &[PathBuf]) -> Option<PathBuf> {
    let dir = if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").map(|d| PathBuf::from(d).join("watchpost").join("cache"))
    } else {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("watchpost"))
    }?;
    let abs: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    Some(watchpost_sigma::cache_file_for(&dir, &abs))
}

/// A match of a rule some correlation references, kept for the correlation pass.
struct Fed {
    time: jiff::Timestamp,
    place: String,
    record: u64,
    m: Match,
    event: Event,
}

/// Loads the rules (listing the ones that cannot be loaded) and hunts through `paths`;
/// with a configuration, its anomaly filters run over the same records.
pub fn hunt(
    rules: &HuntRules<'_>,
    min_level: Level,
    paths: &[PathBuf],
    format: HuntFormat,
    threads: usize,
    config: Option<&(watchpost_config::Config, watchpost_filters::Chain)>,
    out: &mut dyn Write,
) -> Result<HuntTotals> {
    let (ruleset, rejected) = Ruleset::load_with(rules.paths, &rules.load);
    if rules.verbose {
        for r in &rejected {
            eprintln!("rule not loaded: {r}");
        }
    }
    if ruleset.is_empty() {
        for r in rejected.iter().take(20) {
            eprintln!("rule not loaded: {r}");
        }
        bail!("no Sigma rule loaded from {:?}", rules.paths);
    }
    let st = ruleset.stats();
    if let Some(note) = ruleset.cache_note() {
        eprintln!("{note}");
    }
    if rules.verbose {
        eprintln!(
            "rules: reading, parsing and compiling (or taking from the cache) {:.3} s, \
             joining and indexing {:.3} s; {} rule forms to compile at their first use; \
             {} files unchanged since the cache recorded them (not read)",
            st.read_secs, st.index_secs, st.deferred, st.unread
        );
    }
    eprintln!(
        "{} rules loaded, {}; {} files in {:.2} s ({} from the cache)",
        ruleset.len(),
        not_loaded(&rejected, rules.verbose),
        st.files,
        st.read_secs + st.index_secs,
        st.cached
    );
    let mut correlator = if ruleset.correlations().is_empty() {
        None
    } else {
        let (c, missing) = Correlator::new(&ruleset);
        for m in &missing {
            eprintln!("correlation: {m}");
        }
        eprintln!("{} correlation rules", ruleset.correlations().len());
        Some(c)
    };
    // Per rule: whether correlations reference it, and the fields they read (a kept
    // match holds only those, so a correlation on a frequent rule stays small).
    let wanted: Vec<Option<Vec<watchpost_event::Sym>>> = (0..ruleset.len())
        .map(|i| {
            correlator
                .as_ref()
                .filter(|c| c.wants(i))
                .map(|c| c.fields(i))
        })
        .collect();
    let fed: Mutex<Vec<Fed>> = Mutex::new(Vec::new());
    let mut unreadable = Vec::new();
    let mut files = evtx_files(paths, &mut unreadable);
    for (p, e) in &unreadable {
        eprintln!("{p}: {e}; skipped");
    }
    if files.is_empty() {
        bail!("no .evtx file in {paths:?}");
    }
    files.sort_by_key(|f| std::cmp::Reverse(std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let records = AtomicU64::new(0);
    let hits = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let skipped: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let span: Mutex<Option<(jiff::Timestamp, jiff::Timestamp)>> = Mutex::new(None);
    let found: Mutex<Vec<Detection>> = Mutex::new(Vec::new());
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let ctx = ParseCtx::new("evtx", "hunt");
                let mut matches: Vec<Match> = Vec::new();
                let mut mine: Vec<Detection> = Vec::new();
                let mut to_feed: Vec<Fed> = Vec::new();
                let mut first_last: Option<(jiff::Timestamp, jiff::Timestamp)> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let place = file.to_string_lossy().into_owned();
                    match std::fs::read(file) {
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{place}: {e}; skipped");
                            skipped
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((place.clone(), e.to_string()));
                        }
                        Ok(bytes) => {
                            let mut read = 0u64;
                            let errs = for_each_evtx(&ctx, bytes, &place, &mut |event| {
                                records.fetch_add(1, Ordering::Relaxed);
                                read += 1;
                                if let Some(t) = event.time {
                                    first_last = Some(match first_last {
                                        None => (t, t),
                                        Some((a, b)) => (a.min(t), b.max(t)),
                                    });
                                }
                                matches.clear();
                                if ruleset.matches(&event, &mut matches) == 0 {
                                    return;
                                }
                                for m in &matches {
                                    let Some(keep) = &wanted[m.rule] else {
                                        continue;
                                    };
                                    to_feed.push(Fed {
                                        time: event.time.unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                                        place: place.clone(),
                                        record: event.origin.as_ref().map_or(0, |o| o.offset),
                                        m: m.clone(),
                                        event: slim(&event, keep),
                                    });
                                }
                                for m in matches
                                    .drain(..)
                                    .filter(|m| m.level >= min_level && !m.correlation_only)
                                {
                                    hits.fetch_add(1, Ordering::Relaxed);
                                    mine.push(detection(&event, m));
                                }
                            });
                            if read == 0
                                && let Some((_, e)) = errs.first()
                            {
                                skipped
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push((place.clone(), e.message.clone()));
                            }
                            for (rid, e) in errs {
                                errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("{place}: record {rid}: {e}");
                            }
                        }
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if progress {
                        eprint!(
                            "\r{n}/{} files, {} records, {} detections, {:.1} s   ",
                            files.len(),
                            records.load(Ordering::Relaxed),
                            hits.load(Ordering::Relaxed),
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&mut mine);
                fed.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&mut to_feed);
                if let Some((a, b)) = first_last {
                    let mut s = span.lock().unwrap_or_else(|e| e.into_inner());
                    *s = Some(match *s {
                        None => (a, b),
                        Some((x, y)) => (x.min(a), y.max(b)),
                    });
                }
            });
        }
    });
    if progress {
        eprintln!();
    }
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut correlated = 0;
    if let Some(c) = &mut correlator {
        let mut fed = fed.into_inner().unwrap_or_else(|e| e.into_inner());
        fed.sort_by(|a, b| (a.time, &a.place, a.record).cmp(&(b.time, &b.place, b.record)));
        let mut out = Vec::new();
        for f in &fed {
            out.clear();
            c.feed(&f.m, &f.event, f.time, &mut out);
            for cm in out.drain(..).filter(|cm| cm.level >= min_level) {
                correlated += 1;
                found.push(correlation_detection(&ruleset, cm, &f.event));
            }
        }
        c.finish(&mut out);
        for cm in out.drain(..).filter(|cm| cm.level >= min_level) {
            correlated += 1;
            let last = cm
                .event
                .clone()
                .unwrap_or_else(|| Event::new("".into(), "".into(), String::new()));
            found.push(correlation_detection(&ruleset, cm, &last));
        }
    }
    let mut flagged = 0;
    if let Some((config, chain)) = config
        && chain.has_baselines()
        && min_level <= Level::Medium
    {
        flagged = anomalies(config, chain, &files, &mut found)?;
    }
    found.sort_by(|a, b| (&a.time, &a.file, a.record_id).cmp(&(&b.time, &b.file, b.record_id)));
    print(&found, format, out)?;
    unreadable.extend(skipped.into_inner().unwrap_or_else(|e| e.into_inner()));
    let totals = HuntTotals {
        files: files.len(),
        records: records.into_inner(),
        detections: hits.into_inner() + correlated + flagged,
        errors: errors.into_inner(),
        unreadable,
    };
    let summary = Summary {
        found: &found,
        totals: &totals,
        span: span.into_inner().unwrap_or_else(|e| e.into_inner()),
        rules_loaded: ruleset.len(),
        not_loaded: not_loaded(&rejected, rules.verbose),
    };
    if format == HuntFormat::Table {
        summary.write(out)?;
    } else {
        summary.write(&mut std::io::stderr().lock())?;
    }
    if rules.verbose && st.deferred > 0 {
        let (compiled, failed) = ruleset.compiled();
        eprintln!(
            "rules: {compiled} of {} deferred rule forms compiled at their first use{}",
            st.deferred,
            if failed > 0 {
                format!(", {failed} of them did not compile (damaged cache?)")
            } else {
                String::new()
            }
        );
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "{} files, {} records, {} detections, {} unreadable, {:.2} s ({:.0} records/s, {} threads)",
        totals.files,
        totals.records,
        totals.detections,
        totals.errors,
        secs,
        totals.records as f64 / secs,
        threads.max(1)
    );
    // A hunt is the last thing its process does: freeing thousands of compiled rules
    // (and every detection) one allocation at a time cost up to a tenth of a short
    // hunt's CPU, and the operating system takes the memory back at exit anyway.
    std::mem::forget(correlator);
    std::mem::forget(ruleset);
    std::mem::forget(found);
    Ok(totals)
}

/// `event` with only the fields `keep` (and its host, time and origin).
fn slim(event: &Event, keep: &[watchpost_event::Sym]) -> Event {
    use watchpost_event::{FieldRef, Value};
    let mut e = Event::new(event.source.clone(), event.host.clone(), String::new());
    e.time = event.time;
    e.origin = event.origin.clone();
    for s in keep {
        if let Some(v) = event.get(*s) {
            e.push(
                *s,
                match v {
                    FieldRef::Str(t) => Value::Str(t.into()),
                    FieldRef::Int(i) => Value::Int(i),
                    FieldRef::Bool(b) => Value::Bool(b),
                    FieldRef::Time(t) => Value::Time(t),
                },
            );
        }
    }
    e.finish();
    e
}

/// A correlation that fired, on `event` (the match that made it hold) or the last event
/// of its window.
fn correlation_detection(rs: &Ruleset, cm: CorrelationMatch, event: &Event) -> Detection {
    let base = cm.event.as_ref().unwrap_or(event);
    let rule = &rs.correlations()[cm.correlation];
    let mut fields = vec![
        ("correlation_count".to_owned(), cm.count.to_string()),
        (
            "correlation_value".to_owned(),
            watchpost_config::rules::number(cm.value),
        ),
    ];
    for (k, v) in rule.group_by.iter().zip(&cm.group) {
        fields.push((k.clone(), v.clone()));
    }
    Detection {
        time: watchpost_event::format_time(cm.time),
        ..Detection::of_event(
            base,
            cm.title.to_string(),
            cm.level,
            rule.id.as_deref().unwrap_or_default().to_owned(),
            String::new(),
            fields,
        )
    }
}

fn detection(event: &Event, m: Match) -> Detection {
    let fields = m
        .fields
        .iter()
        .map(|s| {
            (
                s.as_str().to_owned(),
                event
                    .get(*s)
                    .map(|v| v.text().into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    Detection::of_event(
        event,
        m.title.to_string(),
        m.level,
        m.id.as_deref().unwrap_or_default().to_owned(),
        m.tags.iter().map(|t| &**t).collect::<Vec<_>>().join(","),
        fields,
    )
}

/// "0 not loaded", or "18 not loaded (12 logsource not mapped, 6 status deprecated;
/// --verbose lists them)".
fn not_loaded(rejected: &[watchpost_sigma::LoadError], verbose: bool) -> String {
    if rejected.is_empty() {
        return "0 not loaded".into();
    }
    let mut by: Vec<(&str, usize)> = Vec::new();
    for r in rejected {
        match by.iter_mut().find(|(k, _)| *k == r.kind()) {
            Some(e) => e.1 += 1,
            None => by.push((r.kind(), 1)),
        }
    }
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = by.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "{} not loaded ({}{})",
        rejected.len(),
        parts.join(", "),
        if verbose {
            ""
        } else {
            "; --verbose lists them"
        }
    )
}

/// The results summary after the detections (as Hayabusa's): detections by level, the
/// most frequent rules, the hosts with the most high and critical detections, the time
/// span of the records, what was read and skipped, and the rules not loaded.
struct Summary<'a> {
    found: &'a [Detection],
    totals: &'a HuntTotals,
    span: Option<(jiff::Timestamp, jiff::Timestamp)>,
    rules_loaded: usize,
    not_loaded: String,
}

/// `12345` → `12,345`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Summary<'_> {
    fn write(&self, out: &mut dyn Write) -> Result<()> {
        use std::collections::HashMap;
        let levels = [
            Level::Critical,
            Level::High,
            Level::Medium,
            Level::Low,
            Level::Informational,
        ];
        let mut per_rule: HashMap<(&str, Level), u64> = HashMap::new();
        let mut per_host: HashMap<&str, u64> = HashMap::new();
        for d in self.found {
            *per_rule.entry((&d.title, d.level)).or_default() += 1;
            if d.level >= Level::High {
                *per_host.entry(&d.host).or_default() += 1;
            }
        }
        writeln!(out)?;
        writeln!(out, "Results summary")?;
        let by_level: Vec<String> = levels
            .iter()
            .map(|l| {
                let n = self.found.iter().filter(|d| d.level == *l).count() as u64;
                let rules = per_rule.keys().filter(|(_, x)| x == l).count() as u64;
                format!("{l} {} ({} rules)", thousands(n), thousands(rules))
            })
            .collect();
        writeln!(
            out,
            "  detections: {} · {}",
            thousands(self.found.len() as u64),
            by_level.join(" · ")
        )?;
        if let Some((a, b)) = self.span {
            writeln!(
                out,
                "  records from {} to {}",
                watchpost_event::format_time(a),
                watchpost_event::format_time(b)
            )?;
        }
        let t = self.totals;
        writeln!(
            out,
            "  read: {} records in {} files; {} not readable",
            thousands(t.records),
            thousands(t.files as u64),
            t.unreadable.len()
        )?;
        for (p, why) in t.unreadable.iter().take(10) {
            writeln!(out, "    skipped {}: {}", cell(p, 200), cell(why, 200))?;
        }
        if t.unreadable.len() > 10 {
            writeln!(out, "    … and {} more", t.unreadable.len() - 10)?;
        }
        writeln!(
            out,
            "  rules: {} loaded, {}",
            thousands(self.rules_loaded as u64),
            self.not_loaded
        )?;
        let mut top: Vec<(&(&str, Level), &u64)> = per_rule.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(b.0.1.cmp(&a.0.1)).then(a.0.0.cmp(b.0.0)));
        if !top.is_empty() {
            writeln!(out, "  most frequent rules:")?;
            for ((title, level), n) in top.iter().take(10) {
                writeln!(
                    out,
                    "    {:>9}  {:13}  {}",
                    thousands(**n),
                    level.to_string(),
                    cell(title, 100)
                )?;
            }
        }
        let mut hosts: Vec<(&&str, &u64)> = per_host.iter().collect();
        hosts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !hosts.is_empty() {
            writeln!(out, "  hosts with the most high and critical detections:")?;
            for (h, n) in hosts.iter().take(5) {
                writeln!(out, "    {:>9}  {}", thousands(**n), cell(h, 100))?;
            }
        }
        Ok(())
    }
}

/// A value for one table cell: CR, LF, tab and other control characters escaped
/// (`\r`, `\n`, `\t`, `\u{1b}`), cut to `max` characters with `…`.
fn cell(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max.saturating_add(8)));
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Longest field value shown in the table (JSON lines and CSV keep every value whole).
const TABLE_VALUE: usize = 160;

/// One detection as a JSON line (keys in this order).
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    host: &'a str,
    rule: &'a str,
    level: String,
    id: &'a str,
    tags: &'a str,
    channel: &'a str,
    event_id: Option<i64>,
    record_id: Option<u64>,
    file: &'a str,
    fields: JsonFields<'a>,
}

/// The fields of a detection as one JSON object: a name given twice keeps its first
/// place and its last value.
struct JsonFields<'a>(&'a [(String, String)]);

impl serde::Serialize for JsonFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let f = self.0;
        let mut m = s.serialize_map(None)?;
        for (i, (k, _)) in f.iter().enumerate() {
            if f[..i].iter().any(|(x, _)| x == k) {
                continue;
            }
            let v = f.iter().rev().find(|(x, _)| x == k).map_or("", |(_, v)| v);
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn print(found: &[Detection], format: HuntFormat, out: &mut dyn Write) -> Result<()> {
    // One write per 64 KiB, not per line (stdout is line-buffered).
    let mut buffered = std::io::BufWriter::with_capacity(1 << 16, out);
    print_to(found, format, &mut buffered)?;
    buffered.flush()?;
    Ok(())
}

fn print_to(found: &[Detection], format: HuntFormat, out: &mut dyn Write) -> Result<()> {
    let fields = |d: &Detection, max: usize| {
        d.fields
            .iter()
            .map(|(k, v)| format!("{}={}", cell(k, max), cell(v, max)))
            .collect::<Vec<_>>()
            .join(" ¦ ")
    };
    let event_id = |d: &Detection| d.event_id.map(|i| i.to_string()).unwrap_or_default();
    let record_id = |d: &Detection| d.record_id.map(|i| i.to_string()).unwrap_or_default();
    match format {
        HuntFormat::Jsonl => {
            for d in found {
                serde_json::to_writer(
                    &mut *out,
                    &JsonLine {
                        time: &d.time,
                        host: &d.host,
                        rule: &d.title,
                        level: d.level.to_string(),
                        id: &d.id,
                        tags: &d.tags,
                        channel: &d.channel,
                        event_id: d.event_id,
                        record_id: d.record_id,
                        file: &d.file,
                        fields: JsonFields(&d.fields),
                    },
                )?;
                out.write_all(b"\n")?;
            }
        }
        HuntFormat::Csv => {
            writeln!(
                out,
                "time,host,rule,level,id,channel,event_id,record_id,file,fields"
            )?;
            for d in found {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{}",
                    csv(&d.time),
                    csv(&d.host),
                    csv(&d.title),
                    d.level,
                    csv(&d.id),
                    csv(&d.channel),
                    event_id(d),
                    record_id(d),
                    csv(&d.file),
                    csv(&fields(d, usize::MAX))
                )?;
            }
        }
        HuntFormat::Table => {
            let w = |f: &dyn Fn(&Detection) -> usize| found.iter().map(f).max().unwrap_or(0);
            let (wt, wh, wr, wc, we, wn) = (
                w(&|d| d.time.len()).max(4),
                w(&|d| cell(&d.host, 60).chars().count()).max(4),
                w(&|d| cell(&d.title, 70).chars().count()).max(4),
                w(&|d| cell(&d.channel, 60).chars().count()).max(7),
                w(&|d| event_id(d).len()).max(5),
                w(&|d| record_id(d).len()).max(6),
            );
            writeln!(
                out,
                "{:wt$}  {:wh$}  {:13}  {:wr$}  {:wc$}  {:>we$}  {:>wn$}  file  fields",
                "time", "host", "level", "rule", "channel", "event", "record"
            )?;
            for d in found {
                writeln!(
                    out,
                    "{:wt$}  {:wh$}  {:13}  {:wr$}  {:wc$}  {:>we$}  {:>wn$}  {}  {}",
                    cell(&d.time, 40),
                    cell(&d.host, 60),
                    d.level.to_string(),
                    cell(&d.title, 70),
                    cell(&d.channel, 60),
                    event_id(d),
                    record_id(d),
                    cell(&d.file, 200),
                    fields(d, TABLE_VALUE)
                )?;
            }
        }
    }
    Ok(())
}

/// Default worker count: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
