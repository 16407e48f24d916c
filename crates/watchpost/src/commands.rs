//! `watchpost events`, `watchpost ack` and `watchpost baseline …`: reviewing what the
//! daemon stored and learned.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use watchpost_anomaly::Options;
use watchpost_filters::Chain;
use watchpost_store::{Query, Store, StoredEvent, parse_since, parse_terms};

use crate::replay;
use watchpost_config::Config;
use watchpost_runtime::analysis::{
    Analysis, BaselineHome, anomaly_spec, baseline_dir, open_baselines,
};

/// Output format of `watchpost events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsFormat {
    /// For people.
    Text,
    /// One stored event per line: `id`, `time`, `stored`, `source`, `host`, `filters`,
    /// `anomaly`, `anomaly_why`, `needs_ack`, `ack` (`at`, `by`, `comment`), `fields`,
    /// `raw`, `origin`, `outcomes` (`event`, `action`, `filter`, `at_ms`, `attempt`,
    /// `ok`, `detail`).
    Jsonl,
}

/// `watchpost events`' options.
pub struct EventsArgs {
    /// Only anomalies.
    pub anomaly: bool,
    /// Only events waiting for an acknowledgement.
    pub pending_ack: bool,
    /// Only this host.
    pub host: Option<String>,
    /// Only this filter.
    pub filter: Option<String>,
    /// Only since.
    pub since: Option<String>,
    /// Output format.
    pub format: EventsFormat,
    /// Most events shown.
    pub limit: usize,
    /// Query terms.
    pub query: Vec<String>,
}

fn open_store(config: &Config) -> Result<Option<Store>> {
    let path = &config.store.path;
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Store::open_read_only(path)?))
}

/// Lists stored events, newest first.
pub fn events(config: &Config, args: &EventsArgs, out: &mut dyn Write) -> Result<usize> {
    let terms = parse_terms(&args.query.join(" "))?;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, jiff::Timestamp::now()))
        .transpose()?;
    let query = Query {
        anomaly: args.anomaly,
        pending_ack: args.pending_ack,
        host: args.host.clone(),
        filter: args.filter.clone(),
        since,
        until: None,
        terms,
    };
    let Some(store) = open_store(config)? else {
        eprintln!(
            "no event store at {} yet: the daemon creates it when a filter first matches",
            config.store.path.display()
        );
        return Ok(0);
    };
    let found = store.query(&query, args.limit)?;
    for e in &found {
        match args.format {
            EventsFormat::Jsonl => writeln!(out, "{}", serde_json::to_string(e)?)?,
            EventsFormat::Text => print_event(out, e)?,
        }
    }
    Ok(found.len())
}

fn print_event(out: &mut dyn Write, e: &StoredEvent) -> Result<()> {
    let mut flags = Vec::new();
    if e.anomaly {
        flags.push("ANOMALY".to_owned());
    }
    match (&e.ack, e.needs_ack) {
        (Some(a), _) => flags.push(format!("acked by {} at {}", a.by, a.at)),
        (None, true) => flags.push("NEEDS ACK".to_owned()),
        (None, false) => {}
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("  [{}]", flags.join(", "))
    };
    writeln!(
        out,
        "#{}  {}  {}  {}  filters: {}{flags}",
        e.id,
        e.time.as_deref().unwrap_or(&e.stored),
        e.host,
        e.source,
        e.filters.join(", ")
    )?;
    if let Some(why) = &e.anomaly_why {
        writeln!(out, "   why: {why}")?;
    }
    if let Some(a) = &e.ack
        && !a.comment.is_empty()
    {
        writeln!(out, "   ack comment: {}", a.comment)?;
    }
    for (k, v) in &e.fields {
        let v = v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string());
        writeln!(out, "   {k}: {v}")?;
    }
    for o in &e.outcomes {
        // Stores written before outcomes named their filter have none.
        let filter = if o.filter.is_empty() {
            String::new()
        } else {
            format!(" for filter {}", o.filter)
        };
        if o.attempt == 0 {
            // Held back by throttle or dedupe: never attempted.
            writeln!(
                out,
                "   action {}{filter}: not sent ({})",
                o.action, o.detail
            )?;
            continue;
        }
        let result = match (o.ok, o.detail.is_empty()) {
            (true, true) => "ok".to_owned(),
            (true, false) => format!("ok ({})", o.detail),
            (false, _) => format!("FAILED: {}", o.detail),
        };
        writeln!(
            out,
            "   action {}{filter} (attempt {}): {result}",
            o.action, o.attempt
        )?;
    }
    if let Some(origin) = &e.origin {
        writeln!(out, "   at: {origin}")?;
    }
    writeln!(out)?;
    Ok(())
}

/// Who runs this command, for `ack` without `--by` and the quarantine's record: the user
/// who invoked `sudo` (`$SUDO_USER`), else the login name (`$USER`, `$LOGNAME`,
/// `%USERNAME%`), else the account the process runs as (from the system's user database,
/// as `id -un` or `whoami` would say), else its numeric id.
pub fn current_user() -> String {
    let env = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    env("SUDO_USER")
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .or_else(|| env("USERNAME"))
        .or_else(|| whoami::username().ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(account_id)
}

#[cfg(unix)]
fn account_id() -> String {
    format!("uid {}", rustix::process::geteuid().as_raw())
}

#[cfg(not(unix))]
fn account_id() -> String {
    "unknown".into()
}

/// Acknowledges events; returns (acknowledged now, not found or already acknowledged).
pub fn ack(config: &Config, ids: &[u64], by: &str, comment: &str) -> Result<(Vec<u64>, Vec<u64>)> {
    if !config.store.path.exists() {
        bail!("no event store at {}", config.store.path.display());
    }
    let mut store = Store::open(&config.store.path)?;
    let done = store.ack(ids, by, comment)?;
    let rest = ids.iter().copied().filter(|i| !done.contains(i)).collect();
    Ok((done, rest))
}

/// `watchpost baseline …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BaselineCmd {
    /// Every (filter, host) baseline: learning start and end, keys and pairs.
    List,
    /// One key of a filter on a host: learning, known values, when each was first seen.
    Explain {
        /// Anomaly filter name.
        filter: String,
        /// Host name.
        host: String,
        /// Key values, one per key field (none for a filter without key fields).
        key: Vec<String>,
    },
    /// Write every baseline as JSON lines to stdout (or --output).
    Export {
        /// File to write (default stdout).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Merge baselines written by `export`.
    Import {
        /// File written by `export` (`-` for stdin).
        input: PathBuf,
    },
    /// Seed the baselines from historical logs or EVTX files without acting on them.
    Learn {
        /// Parse every input as this configured source.
        #[arg(long)]
        source: Option<String>,
        /// Log files or EVTX files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Discard a filter's baseline (on one host, or all): learning starts over.
    Reset {
        /// Anomaly filter name.
        filter: String,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
    },
}

/// Runs a baseline command.
pub fn baseline(
    config: &mut Config,
    chain: &Chain,
    cmd: &BaselineCmd,
    out: &mut dyn Write,
) -> Result<()> {
    if !chain.has_baselines() {
        bail!(
            "the configuration has no anomaly filter (`anomaly = {{ key = [...], value = [...] }}`)"
        );
    }
    if let BaselineCmd::Learn { source, inputs } = cmd {
        let (analysis, judges) = Analysis::open(config, chain, BaselineHome::State, false)?;
        let analysis = std::sync::Arc::new(analysis);
        let t = replay::replay(
            config,
            chain.clone(),
            (analysis.clone(), judges),
            source.as_deref(),
            inputs,
            replay::Output::Quiet,
            out,
        )?;
        close(analysis);
        writeln!(
            out,
            "learned from {} records ({} unparsable): {} events judged by anomaly filters, {} would have been flagged",
            t.records, t.errors, t.judged, t.anomalies
        )?;
        return Ok(());
    }
    let dir = baseline_dir(config);
    let b = open_baselines(
        &dir,
        Options {
            flush_interval: None,
            ..Options::default()
        },
    )?;
    // Register the configured anomaly filters as the daemon does, so learning ends are known.
    for f in chain.iter() {
        if let Some(spec) = &f.baseline {
            let reg = b.filter(&f.name, &anomaly_spec(spec))?;
            if let Some(c) = reg.definition_changed {
                eprintln!(
                    "note: anomaly filter `{}` changed its key/value definition ({:?} → {:?}): its baseline starts afresh",
                    f.name, c.old, c.new
                );
            }
        }
    }
    match cmd {
        BaselineCmd::List => {
            let list = b.list()?;
            if list.is_empty() {
                writeln!(out, "no baselines yet")?;
            }
            for h in list {
                let ends = h
                    .learning_ends
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "(filter not configured)".into());
                let state = match h.learning_ends {
                    Some(end) if end > h.clock => "learning",
                    Some(_) => "detecting",
                    None => "orphaned",
                };
                writeln!(
                    out,
                    "{}  host {}: {state}; learning {} → {ends}; clock {}; {} keys, {} pairs",
                    h.filter, h.host, h.learning_started, h.clock, h.keys, h.pairs
                )?;
            }
        }
        BaselineCmd::Explain { filter, host, key } => {
            let keys: Vec<&str> = key.iter().map(String::as_str).collect();
            let e = b.explain(filter, host, &keys)?;
            writeln!(
                out,
                "filter {} on host {}, key {:?} = {:?}",
                e.filter, e.host, e.key, key
            )?;
            match (e.learning_started, e.learning_ends) {
                (Some(s), Some(end)) => writeln!(
                    out,
                    "learning ({}) started {s}, ends {end}",
                    if e.learn_per_key {
                        "per key"
                    } else {
                        "per host"
                    }
                )?,
                _ => writeln!(out, "never seen: learning has not started")?,
            }
            if let Some(t) = e.key_first_seen {
                writeln!(out, "key first seen {t}")?;
            }
            writeln!(out, "{} known values:", e.values.len())?;
            for v in &e.values {
                let last = v
                    .last_seen
                    .map(|t| format!(", last seen {t}"))
                    .unwrap_or_default();
                writeln!(out, "  {:?}  first seen {}{last}", v.value, v.first_seen)?;
            }
        }
        BaselineCmd::Export { output } => {
            let n = match output {
                Some(p) => {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(p)
                            .with_context(|| format!("creating {}", p.display()))?,
                    );
                    let n = b.export(&mut f)?;
                    f.flush()?;
                    n
                }
                None => b.export(out)?,
            };
            eprintln!("exported {n} lines");
        }
        BaselineCmd::Import { input } => {
            let n = if input.as_os_str() == "-" {
                b.import(&mut std::io::stdin().lock())?
            } else {
                let f = std::fs::File::open(input)
                    .with_context(|| format!("reading {}", input.display()))?;
                b.import(&mut std::io::BufReader::new(f))?
            };
            writeln!(out, "imported {n} pairs")?;
        }
        BaselineCmd::Reset { filter, host } => {
            let n = b.reset(filter, host.as_deref())?;
            writeln!(
                out,
                "discarded {n} baseline(s) of `{filter}`: learning starts over at the next match"
            )?;
        }
        // Handled above, before the baselines were opened here.
        BaselineCmd::Learn { .. } => {}
    }
    b.close()?;
    Ok(())
}

/// `watchpost quarantine …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QuarantineCmd {
    /// Whether this computer is quarantined: since when, why (filter, event), until when.
    Status {
        /// The state file as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Quarantine now, as the configured `quarantine` action does (its allow-list,
    /// registry value, hook and timeout).
    Apply {
        /// Why (recorded and shown by `status`).
        #[arg(long, short = 'm', default_value = "applied by hand")]
        reason: String,
        /// The `quarantine` action to apply (needed when several are configured).
        #[arg(long)]
        action: Option<String>,
        /// Print the nft script instead of applying it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Lift the quarantine in force (firewall table deleted, registry value restored,
    /// hook run with WATCHPOST_QUARANTINE=release).
    Release {
        /// Why (recorded).
        #[arg(long, short = 'm', default_value = "released by hand")]
        reason: String,
    },
}

/// Runs a quarantine command; returns the exit code (0, or 1 when nothing was applied).
pub fn quarantine(config: &Config, cmd: &QuarantineCmd, out: &mut dyn Write) -> Result<u8> {
    use watchpost_actions::quarantine::{release, status};
    let dir = &config.state_dir;
    let by = format!("cli ({})", current_user());
    match cmd {
        QuarantineCmd::Status { json } => {
            let state = status(dir)?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&state)?)?;
            } else {
                print_quarantine(out, state.as_ref())?;
            }
            Ok(0)
        }
        QuarantineCmd::Apply {
            reason,
            action,
            dry_run,
        } => {
            let candidates: Vec<_> = config
                .actions
                .iter()
                .filter_map(|a| a.as_quarantine())
                .filter(|q| !q.releases())
                .collect();
            let names: Vec<&str> = candidates.iter().map(|q| q.name()).collect();
            let q = match (action, candidates.as_slice()) {
                (Some(name), _) => {
                    candidates
                        .iter()
                        .find(|q| q.name() == name)
                        .with_context(|| {
                            format!("no quarantine action `{name}` (configured: {names:?})")
                        })?
                }
                (None, [one]) => one,
                (None, []) => bail!(
                    "the configuration has no [[action]] of type = \"quarantine\" (mode = \"apply\")"
                ),
                (None, _) => bail!(
                    "several quarantine actions are configured ({names:?}): pick one with --action"
                ),
            };
            if *dry_run {
                match q.script() {
                    Some(s) => write!(out, "{s}")?,
                    None => writeln!(out, "(no nftables firewall on this system)")?,
                }
                return Ok(0);
            }
            let host = config
                .agent
                .host
                .clone()
                .unwrap_or_else(watchpost_runtime::pipeline::local_host_name);
            let (new, state) = q.apply(dir, &host, reason, &by)?;
            let until = state.until.as_deref().unwrap_or("released");
            if new {
                writeln!(out, "quarantined (action {}) until {until}", q.name())?;
            } else {
                writeln!(
                    out,
                    "already quarantined since {}; now until {until}",
                    state.since
                )?;
            }
            Ok(0)
        }
        QuarantineCmd::Release { reason } => match release(dir, &by, reason)? {
            Some(s) => {
                writeln!(out, "released (quarantined since {})", s.since)?;
                Ok(0)
            }
            None => {
                writeln!(out, "not quarantined: nothing to release")?;
                Ok(0)
            }
        },
    }
}

fn print_quarantine(
    out: &mut dyn Write,
    state: Option<&watchpost_actions::quarantine::QuarantineState>,
) -> Result<()> {
    let now = jiff::Timestamp::now();
    let ago = |t: &str| match t.parse::<jiff::Timestamp>() {
        Ok(t) if t <= now => format!("{t} ({} ago)", secs(now.duration_since(t).as_secs())),
        Ok(t) => format!("{t} (in {})", secs(t.duration_since(now).as_secs())),
        Err(_) => t.to_owned(),
    };
    let Some(s) = state else {
        writeln!(out, "not quarantined")?;
        return Ok(());
    };
    if !s.active {
        writeln!(out, "not quarantined")?;
        if let Some(r) = &s.released {
            writeln!(
                out,
                "  last quarantine: {} to {} by {}: {}",
                s.since,
                ago(&r.at),
                r.by,
                r.reason
            )?;
        }
        return Ok(());
    }
    writeln!(out, "QUARANTINED since {} by {}", ago(&s.since), s.by)?;
    writeln!(out, "  action: {}", s.action)?;
    writeln!(out, "  why: {}", s.reason)?;
    if let Some(e) = &s.event {
        writeln!(
            out,
            "  event: {} on {}{}{}",
            e.source,
            e.host,
            e.time
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default(),
            e.origin
                .as_deref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default()
        )?;
        writeln!(out, "    {}", e.raw)?;
    }
    match &s.until {
        Some(u) => writeln!(out, "  expires: {}", ago(u))?,
        None => writeln!(out, "  expires: never (until released)")?,
    }
    if let Some(n) = &s.undo.nft {
        writeln!(out, "  firewall: nftables table inet {}", n.table)?;
    }
    if let Some(r) = &s.undo.registry {
        writeln!(
            out,
            "  registry: {}\\{} value {:?}",
            r.hive, r.path, r.value
        )?;
    }
    if let Some(h) = &s.undo.hook {
        writeln!(out, "  hook: {:?}", h.argv)?;
    }
    Ok(())
}

/// Seconds as `1h2m3s`.
fn secs(total: i64) -> String {
    let total = total.unsigned_abs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Closes an analysis a replay shared (its pipelines are gone by now).
pub fn close(analysis: std::sync::Arc<Analysis>) {
    match std::sync::Arc::try_unwrap(analysis) {
        Ok(a) => a.close(),
        Err(_) => tracing::error!("baselines still shared: pending pairs are not flushed"),
    }
}
