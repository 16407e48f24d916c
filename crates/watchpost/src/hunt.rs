//! `watchpost hunt`: Sigma rules over collected EVTX files, with every core.
//!
//! Files are handed to worker threads (largest first, so the run does not end on one big
//! straggler); each streams its records (`evtx::for_each_evtx`, one event in memory at a
//! time) through the rule set's prefilter and matchers. Detections are printed when the
//! hunt is done, sorted by time, as a table, JSON lines or CSV. A progress line on stderr
//! (when it is a terminal) counts files, records and detections. A corrupt file or chunk is
//! reported with its place and skipped; the rest is read.
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
use serde_json::json;
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
    place: String,
}

/// What a hunt found and read.
#[derive(Debug, Default, Clone, Copy)]
pub struct HuntTotals {
    /// Files read.
    pub files: usize,
    /// Records read.
    pub records: u64,
    /// Detections at or above the level.
    pub detections: u64,
    /// Files or records that could not be read.
    pub errors: u64,
}

fn evtx_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
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
            self.found.push(Detection {
                time: event
                    .time
                    .map(watchpost_event::format_time)
                    .unwrap_or_default(),
                host: event.host.to_string(),
                title: format!("anomaly: {}", f.name),
                level: Level::Medium,
                id: String::new(),
                tags: String::new(),
                fields,
                place: place_of(event),
            });
        }
    }

    fn fire(&mut self, _: &watchpost_runtime::Generation, _: &watchpost_runtime::Firing<'_>) {}
}

/// Which rules a hunt loads.
pub struct HuntRules<'a> {
    /// Sigma rule files, folders or globs.
    pub paths: &'a [PathBuf],
    /// Placeholder values and other load options.
    pub load: LoadOptions,
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
    for r in &rejected {
        eprintln!("rule not loaded: {r}");
    }
    if ruleset.is_empty() {
        bail!("no Sigma rule loaded from {:?}", rules.paths);
    }
    eprintln!(
        "{} rules loaded, {} not loaded",
        ruleset.len(),
        rejected.len()
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
    let mut files = evtx_files(paths);
    if files.is_empty() {
        bail!("no .evtx file in {paths:?}");
    }
    files.sort_by_key(|f| std::cmp::Reverse(std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let records = AtomicU64::new(0);
    let hits = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
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
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let place = file.to_string_lossy().into_owned();
                    match std::fs::read(file) {
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{place}: {e}; skipped");
                        }
                        Ok(bytes) => {
                            let errs = for_each_evtx(&ctx, bytes, &place, &mut |event| {
                                records.fetch_add(1, Ordering::Relaxed);
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
                                for m in matches.drain(..).filter(|m| m.level >= min_level) {
                                    hits.fetch_add(1, Ordering::Relaxed);
                                    mine.push(detection(&event, m));
                                }
                            });
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
    found.sort_by(|a, b| (&a.time, &a.place).cmp(&(&b.time, &b.place)));
    print(&found, format, out)?;
    let totals = HuntTotals {
        files: files.len(),
        records: records.into_inner(),
        detections: hits.into_inner() + correlated + flagged,
        errors: errors.into_inner(),
    };
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
        host: base.host.to_string(),
        title: cm.title.to_string(),
        level: cm.level,
        id: rule.id.as_deref().unwrap_or_default().to_owned(),
        tags: String::new(),
        fields,
        place: place_of(base),
    }
}

fn detection(event: &Event, m: Match) -> Detection {
    Detection {
        time: event
            .time
            .map(watchpost_event::format_time)
            .unwrap_or_default(),
        host: event.host.to_string(),
        title: m.title.to_string(),
        level: m.level,
        id: m.id.as_deref().unwrap_or_default().to_owned(),
        tags: m.tags.iter().map(|t| &**t).collect::<Vec<_>>().join(","),
        fields: m
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
            .collect(),
        place: place_of(event),
    }
}

/// `file:record id` of an event read from an EVTX file.
fn place_of(event: &Event) -> String {
    event
        .origin
        .as_ref()
        .map(|o| format!("{}:{}", o.place, o.offset))
        .unwrap_or_default()
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn print(found: &[Detection], format: HuntFormat, out: &mut dyn Write) -> Result<()> {
    let fields = |d: &Detection| {
        d.fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ¦ ")
    };
    match format {
        HuntFormat::Jsonl => {
            for d in found {
                let f: serde_json::Map<String, serde_json::Value> = d
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    json!({ "time": d.time, "host": d.host, "rule": d.title, "level": d.level.to_string(),
                            "id": d.id, "tags": d.tags, "fields": f, "record": d.place })
                )?;
            }
        }
        HuntFormat::Csv => {
            writeln!(out, "time,host,rule,level,id,fields,record")?;
            for d in found {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{}",
                    csv(&d.time),
                    csv(&d.host),
                    csv(&d.title),
                    d.level,
                    csv(&d.id),
                    csv(&fields(d)),
                    csv(&d.place)
                )?;
            }
        }
        HuntFormat::Table => {
            let w = |f: &dyn Fn(&Detection) -> usize| found.iter().map(f).max().unwrap_or(0);
            let (wt, wh, wr) = (
                w(&|d| d.time.len()).max(4),
                w(&|d| d.host.chars().count()).max(4),
                w(&|d| d.title.chars().count()).clamp(4, 70),
            );
            writeln!(
                out,
                "{:wt$}  {:wh$}  {:wr$}  {:13}  fields",
                "time", "host", "rule", "level"
            )?;
            for d in found {
                writeln!(
                    out,
                    "{:wt$}  {:wh$}  {:wr$}  {:13}  {}",
                    d.time,
                    d.host,
                    d.title,
                    d.level.to_string(),
                    fields(d)
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
