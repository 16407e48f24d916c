//! Each command's options (clap `Args` structs) and what the command does with them:
//! `main.rs` only parses and dispatches here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use watchpost_config::Purpose;
use watchpost_runtime::analysis::{Analysis, BaselineHome};

use crate::load::{load, load_checked};
use crate::{commands, daemon, hunt, replay, service};

/// A configuration file (default: the built-in configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Configuration file (default: the built-in configuration).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
}

/// `watchpost reload`.
#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// The Windows service to signal.
    #[arg(long, default_value = "watchpost")]
    name: String,
}

/// `watchpost enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// Read the enrollment secret from this file instead of `[fleet]`.
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

/// `watchpost test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: replay::OutputFormat,
    /// Parse every input as this configured source.
    #[arg(long)]
    source: Option<String>,
    /// Log files and folders to replay.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// `watchpost hunt`.
#[derive(Debug, clap::Args)]
pub struct HuntArgs {
    /// Sigma rule files, folders or globs.
    #[arg(long, short = 'r', required = true)]
    rules: Vec<PathBuf>,
    /// Only detections of at least this level (informational, low, medium, high,
    /// critical).
    #[arg(long, default_value = "informational")]
    min_level: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: hunt::HuntFormat,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Values of `%name%` placeholders for rules with the `expand` modifier: a pySigma
    /// pipeline file (`vars:`) or a YAML mapping of names to values (repeatable; later
    /// files win).
    #[arg(long)]
    placeholders: Vec<PathBuf>,
    /// A configuration whose anomaly filters run over the same records too (first seen
    /// over the history; reported as `anomaly: FILTER`, level medium).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Rule ids not to load, one per line (`#` comments): Hayabusa's `exclude_rules.txt`
    /// and `noisy_rules.txt` are in this format (repeatable).
    #[arg(long, value_name = "FILE")]
    exclude_list: Vec<PathBuf>,
    /// Also load rules whose status is `deprecated`.
    #[arg(long)]
    include_deprecated: bool,
    /// Also load rules whose status is `unsupported`.
    #[arg(long)]
    include_unsupported: bool,
    /// The compiled-rule cache file (default: one per rule set in the user's cache
    /// directory, e.g. ~/.cache/watchpost).
    #[arg(long, value_name = "FILE", conflicts_with = "no_rule_cache")]
    rule_cache: Option<PathBuf>,
    /// Parse and compile every rule file, without the cache.
    #[arg(long)]
    no_rule_cache: bool,
    /// List every rule that is not loaded, with the reason.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// `.evtx` files and folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// `watchpost events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// Only events an anomaly filter flagged.
    #[arg(long)]
    anomaly: bool,
    /// Only events waiting for an acknowledgement.
    #[arg(long)]
    pending_ack: bool,
    /// Only this host (`*` wildcards).
    #[arg(long)]
    host: Option<String>,
    /// Only events this filter matched (`*` wildcards).
    #[arg(long)]
    filter: Option<String>,
    /// Only events since: RFC 3339, a date, or an age (30m, 12h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: commands::EventsFormat,
    /// Most events shown.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Query terms.
    query: Vec<String>,
}

/// `watchpost ack`.
#[derive(Debug, clap::Args)]
pub struct AckArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// Why: recorded with the acknowledgement.
    #[arg(long, short = 'm')]
    comment: String,
    /// Who (default: the user who ran sudo, else the login name, else the account's
    /// name).
    #[arg(long)]
    by: Option<String>,
    /// Event ids (as `watchpost events` shows them).
    #[arg(required = true)]
    ids: Vec<u64>,
}

/// `watchpost baseline`.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    #[command(subcommand)]
    cmd: commands::BaselineCmd,
}

/// `watchpost quarantine`.
#[derive(Debug, clap::Args)]
pub struct QuarantineArgs {
    /// Configuration file (default: the built-in configuration).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: commands::QuarantineCmd,
}

/// `watchpost service`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// install, uninstall, start, stop or status.
    #[arg(value_enum)]
    verb: service::Verb,
    #[command(flatten)]
    cfg: ConfigArg,
    /// Service (unit) name.
    #[arg(long, default_value = "watchpost")]
    name: String,
    /// Where the unit file is written (Linux).
    #[arg(long, default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
    /// Print the unit and the commands (Windows: the service's settings) instead of
    /// running them.
    #[arg(long)]
    dry_run: bool,
    /// Only write or remove the unit file; do not call systemctl (Linux).
    #[arg(long)]
    no_systemctl: bool,
}

/// `watchpost service-run` (the Windows service's process).
#[derive(Debug, clap::Args)]
pub struct ServiceRunArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// The service's name, as installed.
    #[arg(long, default_value = "watchpost")]
    name: String,
}

/// `watchpost run`.
pub fn run(a: &ConfigArg) -> Result<ExitCode> {
    let Some(loaded) = load_checked(a.config.as_deref(), Purpose::Run) else {
        return Ok(ExitCode::from(1));
    };
    daemon::run(a.config.as_deref(), loaded)?;
    Ok(ExitCode::SUCCESS)
}

/// `watchpost reload`.
pub fn reload(a: &ReloadArgs) -> Result<ExitCode> {
    daemon::reload_command(a.cfg.config.as_deref(), &a.name)
}

/// `watchpost enroll`: enrolls with the configured (or given) secret and stores the
/// credential in the state directory.
pub fn enroll(a: &EnrollArgs) -> Result<ExitCode> {
    let Some((config, _)) = load(a.cfg.config.as_deref(), Purpose::Check)? else {
        return Ok(ExitCode::from(1));
    };
    let Some((_, spec)) = &config.fleet else {
        anyhow::bail!(
            "the configuration has no [fleet] section: add `server`, `ca_file` and `enroll_secret`"
        );
    };
    let mut spec = spec.clone();
    if let Some(f) = &a.secret_file {
        spec.secret = Some(watchpost_fleet::SecretSource::File(f.clone()));
    }
    let host = watchpost_runtime::fleet::host(&config)?;
    let r = watchpost_fleet::enroll(&spec, &host)?;
    println!(
        "enrolled with {} as agent {} in group {} (host id {}); credential stored in {}",
        spec.server,
        r.agent_id,
        r.group,
        host.host_id,
        watchpost_fleet::credential_path(&config.state_dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `watchpost check-config`.
pub fn check_config(a: &ConfigArg) -> Result<ExitCode> {
    let ok = load(a.config.as_deref(), Purpose::Check)?.is_some();
    if ok {
        println!("configuration is valid");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `watchpost test`: a replay with a fresh baseline (it shows what the daemon would have
/// flagged had it lived through these events, and leaves the daemon's baselines alone).
pub fn test(a: &TestArgs) -> Result<ExitCode> {
    let Some((mut config, chain)) = load(a.cfg.config.as_deref(), Purpose::Offline)? else {
        return Ok(ExitCode::from(1));
    };
    let (analysis, judges) = Analysis::open(&config, &chain, BaselineHome::Temporary, false)?;
    let analysis = Arc::new(analysis);
    let has_baselines = chain.has_baselines();
    let t = replay::replay(
        &mut config,
        chain,
        (analysis.clone(), judges),
        a.source.as_deref(),
        &a.inputs,
        replay::Output::Findings(a.format),
        &mut std::io::stdout().lock(),
    )?;
    commands::close(analysis);
    let anomalies = if has_baselines {
        format!(
            ", {} judged by anomaly filters, {} anomalies",
            t.judged, t.anomalies
        )
    } else {
        String::new()
    };
    let skipped = if t.skipped_files > 0 {
        format!(", {} file(s) not read", t.skipped_files)
    } else {
        String::new()
    };
    eprintln!(
        "{} file(s), {} records, {} unparsable, {} excluded, {} filter firings{anomalies}{skipped}",
        t.files, t.records, t.errors, t.excluded, t.fired
    );
    // An input that could not be read, or of which no record parsed, was not tested:
    // say so in the exit status too.
    Ok(if t.skipped_files + t.unparsable_files > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `watchpost service`.
pub fn service(a: ServiceArgs) -> Result<ExitCode> {
    let config = a.cfg.config;
    if a.verb == service::Verb::Install && load(config.as_deref(), Purpose::Run)?.is_none() {
        return Ok(ExitCode::from(1));
    }
    let args = service::ServiceArgs {
        verb: a.verb,
        config,
        name: a.name,
        unit_dir: a.unit_dir,
        dry_run: a.dry_run,
        no_systemctl: a.no_systemctl,
    };
    let code = service::service(&args)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `watchpost service-run`.
#[cfg(windows)]
pub fn service_run(a: ServiceRunArgs) -> Result<ExitCode> {
    service::windows::dispatch(a.name, a.cfg.config)?;
    Ok(ExitCode::SUCCESS)
}

/// `watchpost service-run` exists on Windows only.
#[cfg(not(windows))]
pub fn service_run(_: ServiceRunArgs) -> Result<ExitCode> {
    anyhow::bail!("`service-run` is the Windows service's entry point; use `watchpost run`")
}

/// `watchpost events`.
pub fn events(a: EventsArgs) -> Result<ExitCode> {
    let Some((config, _)) = load(a.cfg.config.as_deref(), Purpose::Offline)? else {
        return Ok(ExitCode::from(1));
    };
    let args = commands::EventsArgs {
        anomaly: a.anomaly,
        pending_ack: a.pending_ack,
        host: a.host,
        filter: a.filter,
        since: a.since,
        format: a.format,
        limit: a.limit,
        query: a.query,
    };
    let n = commands::events(&config, &args, &mut std::io::stdout().lock())?;
    eprintln!("{n} event(s)");
    Ok(ExitCode::SUCCESS)
}

/// `watchpost ack`.
pub fn ack(a: AckArgs) -> Result<ExitCode> {
    let Some((config, _)) = load(a.cfg.config.as_deref(), Purpose::Offline)? else {
        return Ok(ExitCode::from(1));
    };
    let by = a.by.unwrap_or_else(commands::current_user);
    let (done, rest) = commands::ack(&config, &a.ids, &by, &a.comment)?;
    if !done.is_empty() {
        println!("acknowledged by {by}: {done:?}");
    }
    if !rest.is_empty() {
        eprintln!("not found or already acknowledged: {rest:?}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `watchpost baseline`.
pub fn baseline(a: &BaselineArgs) -> Result<ExitCode> {
    let Some((mut config, chain)) = load(a.cfg.config.as_deref(), Purpose::Offline)? else {
        return Ok(ExitCode::from(1));
    };
    commands::baseline(&mut config, &chain, &a.cmd, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// `watchpost quarantine`.
pub fn quarantine(a: &QuarantineArgs) -> Result<ExitCode> {
    let Some((config, _)) = load(a.config.as_deref(), Purpose::Offline)? else {
        return Ok(ExitCode::from(1));
    };
    let code = commands::quarantine(&config, &a.cmd, &mut std::io::stdout().lock())?;
    Ok(ExitCode::from(code))
}

/// `watchpost hunt`.
pub fn hunt(a: &HuntArgs) -> Result<ExitCode> {
    let mut vars = watchpost_sigma::Placeholders::new();
    for p in &a.placeholders {
        vars.extend(
            watchpost_sigma::Placeholders::from_file(p)
                .map_err(|e| anyhow::anyhow!("--placeholders: {e}"))?,
        );
    }
    let loaded = match &a.config {
        Some(path) => match load(Some(path), Purpose::Offline)? {
            Some(c) => Some(c),
            None => return Ok(ExitCode::from(1)),
        },
        None => None,
    };
    let level: watchpost_sigma::Level = a
        .min_level
        .parse()
        .map_err(|e| anyhow::anyhow!("--min-level: {e}"))?;
    let threads = a.threads.unwrap_or_else(hunt::default_threads);
    let mut exclude = std::collections::HashMap::new();
    for list in &a.exclude_list {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("--exclude-list {}", list.display()))?;
        for id in watchpost_sigma::parse_exclude_list(&text) {
            exclude.insert(id, list.display().to_string());
        }
    }
    let mut skip_status = Vec::new();
    if !a.include_deprecated {
        skip_status.push("deprecated".to_string());
    }
    if !a.include_unsupported {
        skip_status.push("unsupported".to_string());
    }
    let cache = if a.no_rule_cache {
        None
    } else {
        a.rule_cache
            .clone()
            .or_else(|| hunt::default_rule_cache(&a.rules))
    };
    let totals = hunt::hunt(
        &hunt::HuntRules {
            paths: &a.rules,
            load: watchpost_sigma::LoadOptions {
                placeholders: vars,
                skip_status,
                exclude,
                cache,
                threads,
            },
            verbose: a.verbose,
        },
        level,
        &a.paths,
        a.format,
        threads,
        loaded.as_ref(),
        &mut std::io::stdout().lock(),
    )?;
    if totals.records == 0 && !totals.unreadable.is_empty() {
        let which: Vec<String> = totals
            .unreadable
            .iter()
            .map(|(p, e)| format!("{p} ({e})"))
            .collect();
        eprintln!("error: no input could be read: {}", which.join(", "));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
