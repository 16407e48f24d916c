//! watchpost: endpoint security event monitor. `main` only parses arguments and dispatches.

mod commands;
mod daemon;
mod hunt;
mod replay;
mod service;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use watchpost_config::{Config, ConfigSource, Purpose};
use watchpost_runtime::analysis::{Analysis, BaselineHome};

/// Reads security events the moment they are written and reacts within milliseconds.
#[derive(Parser)]
#[command(name = "watchpost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitor in the foreground (SIGINT/SIGTERM stop it cleanly).
    Run {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Make the running daemon reload its configuration (the daemon of this
    /// configuration's state directory). Exit status 0: applied; 1: rejected, with every
    /// diagnostic printed (the old configuration keeps running).
    Reload {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The Windows service to signal.
        #[arg(long, default_value = "watchpost")]
        name: String,
    },
    /// Check a configuration; every problem is printed as file:line:column.
    CheckConfig {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Replay log files through the filter chain without running actions.
    ///
    /// Each input is read as the source `--source` names, else as the configured source
    /// whose `path` matches it, else by recognising its format. Folders are read
    /// recursively. Exit status 1 when an input could not be read or its format could
    /// not be told, or when none of an input's records parsed; an empty file is a log
    /// with no records.
    Test {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: replay::OutputFormat,
        /// Parse every input as this configured source.
        #[arg(long)]
        source: Option<String>,
        /// Log files and folders to replay.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Print the built-in configuration.
    DefaultConfig,
    /// Hunt through EVTX files and folders with Sigma rules, on every core.
    Hunt {
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
        /// Values of `%name%` placeholders for rules with the `expand` modifier: a
        /// pySigma pipeline file (`vars:`) or a YAML mapping of names to values
        /// (repeatable; later files win).
        #[arg(long)]
        placeholders: Vec<PathBuf>,
        /// A configuration whose anomaly filters run over the same records too (first
        /// seen over the history; reported as `anomaly: FILTER`, level medium).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// `.evtx` files and folders (searched recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List stored events (every event a filter matched), newest first.
    ///
    /// QUERY terms: `field:value` (`*` wildcards, case-insensitive values),
    /// `isanomaly:true`, `needsack:true`, `acked:true`, `host:`, `source:`, `filter:`,
    /// `id:`, free text (full-text search), `-term` negates.
    Events {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
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
    },
    /// Acknowledge stored events (who, when and a comment are recorded).
    Ack {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
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
    },
    /// Inspect and manage the anomaly baselines.
    Baseline {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: commands::BaselineCmd,
    },
    /// Isolate this computer from the network or lift the isolation (the `quarantine`
    /// action), and show whether it is isolated. Works while the daemon runs.
    Quarantine {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: commands::QuarantineCmd,
    },
    /// Install or control watchpost as a system service (a systemd unit on Linux, a service
    /// of the Service Control Manager on Windows).
    Service {
        /// install, uninstall, start, stop or status.
        #[arg(value_enum)]
        verb: service::Verb,
        /// Configuration the service runs with (checked before installing).
        #[arg(short, long)]
        config: Option<PathBuf>,
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
    },
    /// The Windows service's process, started by the Service Control Manager (what
    /// `service install` registers); stops cleanly on the SCM's Stop or Shutdown.
    #[command(hide = true)]
    ServiceRun {
        /// Configuration file (default: the built-in configuration).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The service's name, as installed.
        #[arg(long, default_value = "watchpost")]
        name: String,
    },
}

fn main() -> ExitCode {
    init_logging();
    match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("watchpost: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let Some(loaded) = load_checked(config.as_deref(), Purpose::Run) else {
                return Ok(ExitCode::from(1));
            };
            daemon::run(config.as_deref(), loaded)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { config, name } => daemon::reload_command(config.as_deref(), &name),
        Command::CheckConfig { config } => {
            let ok = load(config.as_deref(), Purpose::Check)?.is_some();
            if ok {
                println!("configuration is valid");
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Test {
            config,
            format,
            source,
            inputs,
        } => {
            let Some((mut config, chain)) = load(config.as_deref(), Purpose::Offline)? else {
                return Ok(ExitCode::from(1));
            };
            // A fresh baseline: the replay shows what the daemon would have flagged had it
            // lived through these events, and leaves the daemon's baselines alone.
            let (analysis, judges) =
                Analysis::open(&config, &chain, BaselineHome::Temporary, false)?;
            let analysis = std::sync::Arc::new(analysis);
            let has_baselines = chain.has_baselines();
            let mut out = std::io::stdout().lock();
            let t = replay::replay(
                &mut config,
                chain,
                (analysis.clone(), judges),
                source.as_deref(),
                &inputs,
                replay::Output::Findings(format),
                &mut out,
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
            // An input that could not be read, or of which no record parsed, was not
            // tested: say so in the exit status too.
            Ok(if t.skipped_files + t.unparsable_files > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Service {
            verb,
            config,
            name,
            unit_dir,
            dry_run,
            no_systemctl,
        } => {
            if verb == service::Verb::Install && load(config.as_deref(), Purpose::Run)?.is_none() {
                return Ok(ExitCode::from(1));
            }
            let args = service::ServiceArgs {
                verb,
                config,
                name,
                unit_dir,
                dry_run,
                no_systemctl,
            };
            let code = service::service(&args)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        #[cfg(windows)]
        Command::ServiceRun { config, name } => {
            service::windows::dispatch(name, config)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(not(windows))]
        Command::ServiceRun { .. } => {
            anyhow::bail!("`service-run` is the Windows service's entry point; use `watchpost run`")
        }
        Command::Events {
            config,
            anomaly,
            pending_ack,
            host,
            filter,
            since,
            format,
            limit,
            query,
        } => {
            let Some((config, _)) = load(config.as_deref(), Purpose::Offline)? else {
                return Ok(ExitCode::from(1));
            };
            let args = commands::EventsArgs {
                anomaly,
                pending_ack,
                host,
                filter,
                since,
                format,
                limit,
                query,
            };
            let n = commands::events(&config, &args, &mut std::io::stdout().lock())?;
            eprintln!("{n} event(s)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ack {
            config,
            comment,
            by,
            ids,
        } => {
            let Some((config, _)) = load(config.as_deref(), Purpose::Offline)? else {
                return Ok(ExitCode::from(1));
            };
            let by = by.unwrap_or_else(commands::current_user);
            let (done, rest) = commands::ack(&config, &ids, &by, &comment)?;
            if !done.is_empty() {
                println!("acknowledged by {by}: {done:?}");
            }
            if !rest.is_empty() {
                eprintln!("not found or already acknowledged: {rest:?}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Baseline { config, cmd } => {
            let Some((mut config, chain)) = load(config.as_deref(), Purpose::Offline)? else {
                return Ok(ExitCode::from(1));
            };
            commands::baseline(&mut config, &chain, &cmd, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine { config, cmd } => {
            let Some((config, _)) = load(config.as_deref(), Purpose::Offline)? else {
                return Ok(ExitCode::from(1));
            };
            let code = commands::quarantine(&config, &cmd, &mut std::io::stdout().lock())?;
            Ok(ExitCode::from(code))
        }
        Command::Hunt {
            rules,
            min_level,
            format,
            threads,
            placeholders,
            config,
            paths,
        } => {
            let mut vars = watchpost_sigma::Placeholders::new();
            for p in &placeholders {
                vars.extend(
                    watchpost_sigma::Placeholders::from_file(p)
                        .map_err(|e| anyhow::anyhow!("--placeholders: {e}"))?,
                );
            }
            let loaded = match &config {
                Some(path) => match load(Some(path), Purpose::Offline)? {
                    Some(c) => Some(c),
                    None => return Ok(ExitCode::from(1)),
                },
                None => None,
            };
            let level: watchpost_sigma::Level = min_level
                .parse()
                .map_err(|e| anyhow::anyhow!("--min-level: {e}"))?;
            let threads = threads.unwrap_or_else(hunt::default_threads);
            hunt::hunt(
                &hunt::HuntRules {
                    paths: &rules,
                    load: watchpost_sigma::LoadOptions { placeholders: vars },
                },
                level,
                &paths,
                format,
                threads,
                loaded.as_ref(),
                &mut std::io::stdout().lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DefaultConfig => {
            print!("{}", watchpost_config::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads and validates a configuration, printing every diagnostic to stderr.
/// `None` when there were errors.
fn load(
    path: Option<&Path>,
    purpose: Purpose,
) -> Result<Option<(Config, watchpost_filters::Chain)>> {
    Ok(load_checked(path, purpose).map(|l| (l.config, l.chain)))
}

/// [`load`], keeping everything the daemon needs.
fn load_checked(path: Option<&Path>, purpose: Purpose) -> Option<watchpost_config::Loaded> {
    match watchpost_config::load(&ConfigSource::from_arg(path), purpose) {
        Ok(loaded) => {
            eprint!("{}", loaded.rendered());
            Some(loaded)
        }
        Err(rejected) => {
            eprint!("{}", rejected.rendered());
            None
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WATCHPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,evtx=warn"));
    // Colours only on a terminal: the journal, log files and the Windows service get
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
