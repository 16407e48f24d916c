//! `watchpost test`: replays log files through the filter chain without running actions.
//!
//! Each input is parsed as the source `--source` names, else as the configured source
//! whose path pattern matches it, else by recognising its format from its first bytes
//! (EVTX files are read as the configured `type = "evtx"` source that matches them, else as
//! source `evtx`, so `match = { source = "evtx" }` targets them).
//! For every fired filter it prints the filter, the event and the actions that would run.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::json;
use watchpost_event::{Event, Origin};
use watchpost_filters::{Chain, Verdict};
use watchpost_sources::{Format, ParseCtx, evtx};

use crate::config::Config;
use crate::pipeline::{SourceRuntime, local_host_name};

/// Output format of `watchpost test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object per fired filter: `filter`, `actions`, `event`, `origin`.
    Jsonl,
}

/// Totals of one replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Records read.
    pub records: u64,
    /// Records that failed to parse.
    pub errors: u64,
    /// Filter firings.
    pub fired: u64,
    /// Events excluded.
    pub excluded: u64,
}

/// Replays `inputs`; writes findings to `out` and problems to stderr.
pub fn replay(
    config: &Config,
    chain: &Chain,
    source: Option<&str>,
    inputs: &[std::path::PathBuf],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<Totals> {
    let local_host = config.agent.host.clone().unwrap_or_else(local_host_name);
    let mut totals = Totals::default();
    for input in inputs {
        let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
        let place = input.to_string_lossy();
        let configured_evtx = |s: &crate::config::SourceConfig| s.format == Format::Evtx;
        let evtx_source = match source {
            Some(n) => config
                .sources
                .iter()
                .find(|s| s.name == n && configured_evtx(s)),
            None if evtx::is_evtx(&bytes) => config
                .sources
                .iter()
                .filter(|s| configured_evtx(s))
                .find(|s| s.paths.iter().any(|p| glob_matches(p, input)))
                .or_else(|| config.sources.iter().find(|s| configured_evtx(s))),
            None => None,
        };
        let evtx_name = evtx_source.map_or("evtx", |s| s.name.as_str());
        let (name, plan, events, errors, what) =
            if evtx_source.is_some() || (source.is_none() && evtx::is_evtx(&bytes)) {
                let ctx = ParseCtx::new(evtx_name, local_host.as_str());
                let (events, errors) = evtx::read_evtx(&ctx, bytes, &place);
                (
                    ctx.source,
                    chain.plan(evtx_name),
                    events,
                    errors,
                    ("record id", "EVTX"),
                )
            } else {
                let rt = runtime_for(config, chain, source, input, &bytes, &local_host)?;
                let place: std::sync::Arc<str> = place.as_ref().into();
                let (events, errors) =
                    watchpost_sources::format::parse_file_in(rt.format, &rt.ctx, &place, &bytes);
                (
                    rt.name,
                    rt.plan,
                    events,
                    errors,
                    ("offset", rt.format.name()),
                )
            };
        totals.records += (events.len() + errors.len()) as u64;
        for (offset, e) in &errors {
            totals.errors += 1;
            eprintln!(
                "{place}: {} {offset}: unparsable {} record: {e}",
                what.0, what.1
            );
        }
        let place: std::sync::Arc<str> = place.as_ref().into();
        let mut verdict = Verdict::default();
        for mut event in events {
            if event.origin.is_none() {
                event.origin = Some(Origin {
                    place: place.clone(),
                    offset: 0,
                });
            }
            event.source = name.clone();
            chain.evaluate(&plan, &mut event, &mut verdict);
            if verdict.excluded_by.is_some() {
                totals.excluded += 1;
                continue;
            }
            for &fi in &verdict.fired {
                totals.fired += 1;
                print_fired(out, format, chain, fi, &event)?;
            }
        }
    }
    Ok(totals)
}

fn runtime_for(
    config: &Config,
    chain: &Chain,
    source: Option<&str>,
    input: &Path,
    bytes: &[u8],
    local_host: &str,
) -> Result<SourceRuntime> {
    if let Some(name) = source {
        let Some(s) = config.sources.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "--source {name}: no such source (configured: {})",
                names.join(", ")
            );
        };
        return Ok(SourceRuntime::from_config(s, local_host, chain));
    }
    if let Some(s) = config
        .sources
        .iter()
        .find(|s| s.paths.iter().any(|p| glob_matches(p, input)))
    {
        return Ok(SourceRuntime::from_config(s, local_host, chain));
    }
    let head = &bytes[..bytes.len().min(4096)];
    let Some(format) = Format::detect(input, head) else {
        bail!(
            "{}: cannot tell the format (not a SEP client or manager log, JSON lines nor Windows event XML); name a source with --source",
            input.display()
        );
    };
    // A configured source of that format gives the events its name, so its filters apply.
    if let Some(s) = config.sources.iter().find(|s| s.format == format) {
        return Ok(SourceRuntime::from_config(s, local_host, chain));
    }
    Ok(SourceRuntime::new(
        format.name(),
        format,
        local_host,
        None,
        chain,
    ))
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
            let line =
                json!({ "filter": &*f.name, "actions": actions, "event": event, "origin": origin });
            writeln!(out, "{line}")?;
        }
        OutputFormat::Text => {
            let at = event
                .origin
                .as_ref()
                .map(|o| format!("{}:{}", o.place, o.offset))
                .unwrap_or_default();
            writeln!(out, "== filter `{}` fired  ({at})", f.name)?;
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
