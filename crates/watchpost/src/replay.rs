//! `watchpost test`: replays log files through the filter chain without running actions.
//!
//! Each input is parsed as the source `--source` names, else as the configured source
//! whose path pattern matches it, else by recognising its format from its first bytes
//! (EVTX files are read as the configured `type = "evtx"` source that matches them, else as
//! source `evtx`, so `match = { source = "evtx" }` targets them).
//! For every fired filter it prints the filter, the event and the actions that would run.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use serde_json::json;
use watchpost_config::{Config, SourceConfig};
use watchpost_event::{Event, Origin};
use watchpost_filters::{Chain, Verdict};
use watchpost_runtime::analysis::{Analysis, JudgeTable};
use watchpost_runtime::pipeline::local_host_name;
use watchpost_runtime::{Current, FiredBy, Firing, Generation, Pipeline, Sink, SourceKind};
use watchpost_sources::{Format, evtx};

/// Output format of `watchpost test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object per line. A fired filter: `filter`, `actions`, `anomaly` (the
    /// event was flagged), `event`, `origin` (`file`, `offset`). An anomaly filter's
    /// judgement: `anomaly_filter`, `anomaly`, `why`, `host`, `time`, `key`, `value`,
    /// `origin`. A Sigma detection: `rules`, `rule`, `actions`, `event`, `origin`.
    Jsonl,
}

/// Totals of one replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Files read (an empty one too: a log with no records yet).
    pub files: u64,
    /// Files not read: unreadable, or of a format that could not be told.
    pub skipped_files: u64,
    /// Files with records of which not one parsed.
    pub unparsable_files: u64,
    /// Records read.
    pub records: u64,
    /// Records that failed to parse.
    pub errors: u64,
    /// Filter firings.
    pub fired: u64,
    /// Events excluded.
    pub excluded: u64,
    /// Events an anomaly filter judged (its `match` held).
    pub judged: u64,
    /// Events an anomaly filter flagged.
    pub anomalies: u64,
}

/// What a replay prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Fired filters and anomaly verdicts, in this format.
    Findings(OutputFormat),
    /// Nothing (`baseline learn`).
    Quiet,
}

/// Replays `inputs` (files, and the files under folders) through the [`Pipeline`] of the
/// source each belongs to; writes findings to `out` and problems to stderr. Anomaly
/// filters consult `analysis`'s baselines. The configuration's rule sets move into the
/// replay's generation.
pub fn replay(
    config: &mut Config,
    chain: Chain,
    (analysis, judges): (Arc<Analysis>, JudgeTable),
    source: Option<&str>,
    inputs: &[std::path::PathBuf],
    output: Output,
    out: &mut dyn Write,
) -> Result<Totals> {
    let local_host = config.agent.host.clone().unwrap_or_else(local_host_name);
    let current = Arc::new(Current::new(Generation::build(
        0,
        config,
        chain,
        judges,
        Vec::new(),
        &|_| None,
    )));
    let mut sink = Printer {
        output,
        out,
        totals: Totals::default(),
        failed: None,
    };
    for input in &files_of(inputs, &mut sink.totals) {
        let bytes = match std::fs::read(input) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: cannot read it: {e}", input.display());
                sink.totals.skipped_files += 1;
                continue;
            }
        };
        // A log with no records yet.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            sink.totals.files += 1;
            continue;
        }
        let (records_before, errors_before) = (sink.totals.records, sink.totals.errors);
        let place = input.to_string_lossy();
        let configured_evtx = |s: &&SourceConfig| s.format == Format::Evtx;
        let evtx_source = match source {
            Some(n) => config
                .sources
                .iter()
                .filter(configured_evtx)
                .find(|s| s.name == n),
            None if evtx::is_evtx(&bytes) => config
                .sources
                .iter()
                .filter(configured_evtx)
                .find(|s| s.paths.iter().any(|p| glob_matches(p, input)))
                .or_else(|| config.sources.iter().find(configured_evtx)),
            None => None,
        };
        let place_arc: Arc<str> = place.as_ref().into();
        if evtx_source.is_some() || (source.is_none() && evtx::is_evtx(&bytes)) {
            // Streamed: one record in memory at a time, however large the file.
            let name = evtx_source.map_or("evtx", |s| s.name.as_str());
            let mut p = Pipeline::new(
                SourceKind::Named(name, Format::Evtx),
                &local_host,
                current.clone(),
                analysis.clone(),
            );
            let ctx = p.ctx().clone();
            let errors = evtx::for_each_evtx(&ctx, bytes, &place, &mut |event| {
                sink.totals.records += 1;
                one(&mut p, event, &place_arc, &mut sink);
            });
            report_errors(&place, ("record id", "EVTX"), &errors, &mut sink.totals);
        } else {
            let (kind, format) = match runtime_for(config, source, input, &bytes)? {
                Ok(k) => k,
                Err(why) => {
                    eprintln!("{why}");
                    sink.totals.skipped_files += 1;
                    continue;
                }
            };
            let mut p = Pipeline::new(kind, &local_host, current.clone(), analysis.clone());
            let (events, errors) =
                watchpost_sources::format::parse_file_in(format, p.ctx(), &place_arc, &bytes);
            sink.totals.records += events.len() as u64;
            report_errors(&place, ("offset", format.name()), &errors, &mut sink.totals);
            for event in events {
                one(&mut p, event, &place_arc, &mut sink);
            }
        }
        if let Some(e) = sink.failed.take() {
            return Err(e);
        }
        let t = &mut sink.totals;
        t.files += 1;
        let (records, errors) = (t.records - records_before, t.errors - errors_before);
        if records > 0 && errors == records {
            eprintln!(
                "{}: none of its {records} records could be parsed",
                input.display()
            );
            t.unparsable_files += 1;
        }
    }
    // The records are done: correlation windows still open are decided now.
    let mut p = Pipeline::new(
        SourceKind::Named("replay", Format::JsonLines),
        &local_host,
        current,
        analysis,
    );
    p.finish(&mut sink);
    if let Some(e) = sink.failed.take() {
        return Err(e);
    }
    Ok(sink.totals)
}

/// One event of a replay (the first write error ends the replay: the output is gone).
fn one(p: &mut Pipeline, mut event: Event, place: &Arc<str>, sink: &mut Printer<'_>) {
    if sink.failed.is_some() {
        return;
    }
    if event.origin.is_none() {
        event.origin = Some(Origin {
            place: place.clone(),
            offset: 0,
        });
    }
    event.source = p.source().clone();
    p.handle_event(event, std::time::Instant::now(), sink);
}

/// Counts and prints the records of one input that could not be parsed.
fn report_errors<E: std::fmt::Display>(
    place: &str,
    (unit, format): (&str, &str),
    errors: &[(u64, E)],
    totals: &mut Totals,
) {
    totals.records += errors.len() as u64;
    for (offset, e) in errors {
        totals.errors += 1;
        eprintln!("{place}: {unit} {offset}: unparsable {format} record: {e}");
    }
}

/// A replay's sink: counts, and prints what fired and every anomaly judgement.
struct Printer<'a> {
    output: Output,
    out: &'a mut dyn Write,
    totals: Totals,
    failed: Option<anyhow::Error>,
}

impl Printer<'_> {
    fn keep(&mut self, r: Result<()>) {
        if let Err(e) = r
            && self.failed.is_none()
        {
            self.failed = Some(e);
        }
    }
}

impl Sink for Printer<'_> {
    fn unparsable(&mut self, _: &str, place: &str, offset: u64, error: &dyn std::fmt::Display) {
        self.totals.errors += 1;
        eprintln!("{place}: offset {offset}: unparsable record: {error}");
    }

    fn verdict(
        &mut self,
        g: &Generation,
        event: &Event,
        verdict: &Verdict,
        judged: &[(usize, watchpost_anomaly::Verdict)],
    ) {
        if verdict.excluded_by.is_some() {
            self.totals.excluded += 1;
            return;
        }
        self.totals.judged += u64::from(!verdict.judged.is_empty());
        self.totals.anomalies += u64::from(!verdict.flagged.is_empty());
        if let Output::Findings(format) = self.output {
            for (fi, v) in judged {
                let r = print_judged(self.out, format, &g.chain, *fi, v, event);
                self.keep(r);
            }
        }
    }

    fn fire(&mut self, g: &Generation, f: &Firing<'_>) {
        self.totals.fired += 1;
        let Output::Findings(format) = self.output else {
            return;
        };
        let r = match f.by {
            FiredBy::Filter(fi) | FiredBy::Released(fi) => {
                print_fired(self.out, format, &g.chain, fi, f.event)
            }
            FiredBy::Rules(si) => print_detection(self.out, format, &g.rules[si], f.name, f.event),
        };
        self.keep(r);
    }
}

/// The files to read: each input file, and every file under each input folder (in
/// name order, recursively, not following links to folders, hidden entries left out).
/// An input that does not exist is reported and counted as skipped.
fn files_of(inputs: &[std::path::PathBuf], totals: &mut Totals) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        match std::fs::metadata(input) {
            Ok(m) if m.is_dir() => {
                let mut found = Vec::new();
                let mut stack = vec![input.clone()];
                while let Some(dir) = stack.pop() {
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(rd) => rd,
                        Err(e) => {
                            eprintln!("{}: cannot read the folder: {e}", dir.display());
                            totals.skipped_files += 1;
                            continue;
                        }
                    };
                    for entry in entries.flatten() {
                        if entry.file_name().to_string_lossy().starts_with('.') {
                            continue;
                        }
                        match entry.file_type() {
                            Ok(t) if t.is_dir() => stack.push(entry.path()),
                            Ok(_) => found.push(entry.path()),
                            Err(_) => {}
                        }
                    }
                }
                found.sort();
                out.extend(found);
            }
            Ok(_) => out.push(input.clone()),
            Err(e) => {
                eprintln!("{}: cannot read it: {e}", input.display());
                totals.skipped_files += 1;
            }
        }
    }
    out
}

/// How to read `input`: `Err` ends the replay (a `--source` that does not exist), the
/// inner `Err` skips this file with the message (its format cannot be told). A configured
/// source of the detected format gives the events its name, so its filters apply.
fn runtime_for<'c>(
    config: &'c Config,
    source: Option<&str>,
    input: &Path,
    bytes: &[u8],
) -> Result<std::result::Result<(SourceKind<'c>, Format), String>> {
    if let Some(name) = source {
        let Some(s) = config.sources.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "--source {name}: no such source (configured: {})",
                names.join(", ")
            );
        };
        return Ok(Ok((SourceKind::Configured(s), s.format)));
    }
    if let Some(s) = config
        .sources
        .iter()
        .find(|s| s.paths.iter().any(|p| glob_matches(p, input)))
    {
        return Ok(Ok((SourceKind::Configured(s), s.format)));
    }
    let head = &bytes[..bytes.len().min(4096)];
    let Some(format) = Format::detect(input, head) else {
        return Ok(Err(format!(
            "{}: cannot tell the format (not a SEP client or manager log, JSON lines nor Windows event XML or EVTX); it starts with {}; name a configured source with --source",
            input.display(),
            first_bytes(bytes)
        )));
    };
    if let Some(s) = config.sources.iter().find(|s| s.format == format) {
        return Ok(Ok((SourceKind::Configured(s), format)));
    }
    Ok(Ok((SourceKind::Named(format.name(), format), format)))
}

/// The first bytes of a file, printable ASCII as it is and the rest as `\xNN`, quoted.
fn first_bytes(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(24)];
    let mut out = String::from("\"");
    for &b in head {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    if bytes.len() > head.len() {
        out.push('…');
    }
    out
}

/// Whether `path` matches the glob `pattern` (or its file name matches the pattern's).
fn glob_matches(pattern: &str, path: &Path) -> bool {
    let full = glob::Pattern::new(pattern).is_ok_and(|p| p.matches_path(path));
    full || {
        let pat_name = Path::new(pattern).file_name().and_then(|n| n.to_str());
        let name = path.file_name().and_then(|n| n.to_str());
        match (pat_name, name) {
            (Some(p), Some(n)) => glob::Pattern::new(p).is_ok_and(|p| p.matches(n)),
            _ => false,
        }
    }
}

/// An anomaly filter's verdict on an event: flagged or not, and why.
fn print_judged(
    out: &mut dyn Write,
    format: OutputFormat,
    chain: &Chain,
    fi: usize,
    verdict: &watchpost_anomaly::Verdict,
    event: &Event,
) -> Result<()> {
    let f = chain.filter(fi);
    let Some(spec) = &f.baseline else {
        return Ok(());
    };
    let text = |syms: &[watchpost_event::Sym]| -> Vec<String> {
        syms.iter()
            .map(|s| {
                event
                    .get(*s)
                    .map(|v| v.text().into_owned())
                    .unwrap_or_default()
            })
            .collect()
    };
    let (key, value) = (text(&spec.key), text(&spec.value));
    let at = event
        .origin
        .as_ref()
        .map(|o| format!("{}:{}", o.place, o.offset))
        .unwrap_or_default();
    match format {
        OutputFormat::Jsonl => {
            let origin = event
                .origin
                .as_ref()
                .map(|o| json!({ "file": &*o.place, "offset": o.offset }));
            let line = json!({
                "anomaly_filter": &*f.name,
                "anomaly": verdict.is_anomaly(),
                "why": verdict.to_string(),
                "host": &*event.host,
                "time": event.time.map(watchpost_event::format_time),
                "key": key,
                "value": value,
                "origin": origin,
            });
            writeln!(out, "{line}")?;
        }
        OutputFormat::Text => {
            let mark = if verdict.is_anomaly() {
                "ANOMALY"
            } else {
                "judged"
            };
            let time = event
                .time
                .map(watchpost_event::format_time)
                .unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "== {mark} by `{}`: {verdict}  ({at})\n   time: {time}  host: {}  key: {:?}  value: {:?}\n",
                f.name, event.host, key, value
            )?;
        }
    }
    Ok(())
}

/// A Sigma rule's detection.
fn print_detection(
    out: &mut dyn Write,
    format: OutputFormat,
    set: &watchpost_config::rules::RuleSet,
    title: &str,
    e: &Event,
) -> Result<()> {
    match format {
        OutputFormat::Jsonl => {
            let origin = e
                .origin
                .as_ref()
                .map(|o| json!({ "file": &*o.place, "offset": o.offset }));
            let actions: Vec<&str> = set.actions.iter().map(|(n, _)| n.as_str()).collect();
            let line = json!({ "rules": set.name, "rule": title, "actions": actions, "event": e, "origin": origin });
            writeln!(out, "{line}")?;
        }
        OutputFormat::Text => {
            let at = e
                .origin
                .as_ref()
                .map(|o| format!("{}:{}", o.place, o.offset))
                .unwrap_or_default();
            let level = e
                .get(watchpost_event::Sym::new("rule_level"))
                .map(|v| v.text().into_owned())
                .unwrap_or_default();
            writeln!(
                out,
                "== rules `{}`: `{}` ({level})  ({at})",
                set.name, title
            )?;
            for (sym, v) in e.fields() {
                writeln!(out, "   {sym}: {}", v.text())?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn print_fired(
    out: &mut dyn Write,
    format: OutputFormat,
    chain: &Chain,
    fi: usize,
    event: &Event,
) -> Result<()> {
    let f = chain.filter(fi);
    let actions: Vec<&str> = f
        .action_names
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    let origin = event
        .origin
        .as_ref()
        .map(|o| json!({ "file": &*o.place, "offset": o.offset }));
    match format {
        OutputFormat::Jsonl => {
            let line = json!({ "filter": &*f.name, "actions": actions, "anomaly": event.anomaly, "event": event, "origin": origin });
            writeln!(out, "{line}")?;
        }
        OutputFormat::Text => {
            let at = event
                .origin
                .as_ref()
                .map(|o| format!("{}:{}", o.place, o.offset))
                .unwrap_or_default();
            let flag = if event.anomaly { "  [anomaly]" } else { "" };
            writeln!(out, "== filter `{}` fired{flag}  ({at})", f.name)?;
            writeln!(
                out,
                "   actions: {}",
                if actions.is_empty() {
                    "(none)".into()
                } else {
                    actions.join(", ")
                }
            )?;
            let time = event
                .time
                .map(watchpost_event::format_time)
                .unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "   time: {time}  source: {}  host: {}",
                event.source, event.host
            )?;
            for (sym, v) in event.fields() {
                writeln!(out, "   {sym}: {}", v.text())?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}
