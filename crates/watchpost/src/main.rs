//! watchpost: endpoint security event monitor. `main` only parses arguments and
//! dispatches; each command's options and work are in `cli.rs` and the modules it calls.

mod cli;
mod commands;
mod console_user;
mod daemon;
mod hunt;
mod load;
mod replay;
mod service;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Reads security events the moment they are written and reacts within milliseconds.
#[derive(Parser)]
#[command(name = "watchpost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitor in the foreground (SIGINT/SIGTERM stop it cleanly; SIGHUP reloads
    /// its configuration).
    Run(cli::ConfigArg),
    /// Make the running daemon reload its configuration (the daemon of this
    /// configuration's state directory). Exit status 0: applied; 1: rejected, with every
    /// diagnostic printed (the old configuration keeps running).
    Reload(cli::ReloadArgs),
    /// Enroll with the fleet server of `[fleet]` (the daemon does this at its first start
    /// when `enroll_secret` is set); the credential goes to the state directory (0600).
    Enroll(cli::EnrollArgs),
    /// Check a configuration; every problem is printed as file:line:column.
    CheckConfig(cli::ConfigArg),
    /// Replay log files through the filter chain without running actions.
    ///
    /// Each input is read as the source `--source` names, else as the configured source
    /// whose `path` matches it, else by recognising its format. Folders are read
    /// recursively. Exit status 1 when an input could not be read or its format could
    /// not be told, or when none of an input's records parsed; an empty file is a log
    /// with no records.
    Test(cli::TestArgs),
    /// Print the built-in configuration.
    DefaultConfig,
    /// Hunt through EVTX files and folders with Sigma rules, on every core.
    Hunt(cli::HuntArgs),
    /// List stored events (every event a filter matched), newest first.
    ///
    /// QUERY terms: `field:value` (`*` wildcards, case-insensitive values),
    /// `isanomaly:true`, `needsack:true`, `acked:true`, `host:`, `source:`, `filter:`,
    /// `id:`, free text (full-text search), `-term` negates.
    Events(cli::EventsArgs),
    /// Acknowledge stored events (who, when and a comment are recorded).
    Ack(cli::AckArgs),
    /// Manage the users of the web console (`[console]`): add, passwd, role, disable,
    /// enable, list. Passwords are read from standard input.
    ConsoleUser(console_user::ConsoleUserArgs),
    /// Inspect and manage the anomaly baselines.
    Baseline(cli::BaselineArgs),
    /// Isolate this computer from the network or lift the isolation (the `quarantine`
    /// action), and show whether it is isolated. Works while the daemon runs.
    Quarantine(cli::QuarantineArgs),
    /// Install or control watchpost as a system service (a systemd unit on Linux, a service
    /// of the Service Control Manager on Windows).
    Service(cli::ServiceArgs),
    /// The Windows service's process, started by the Service Control Manager (what
    /// `service install` registers); stops cleanly on the SCM's Stop or Shutdown.
    #[command(hide = true)]
    ServiceRun(cli::ServiceRunArgs),
}

fn main() -> ExitCode {
    init_logging();
    let result = match Cli::parse().command {
        Command::Run(a) => cli::run(&a),
        Command::Reload(a) => cli::reload(&a),
        Command::Enroll(a) => cli::enroll(&a),
        Command::CheckConfig(a) => cli::check_config(&a),
        Command::Test(a) => cli::test(&a),
        Command::DefaultConfig => {
            print!("{}", watchpost_config::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
        Command::Hunt(a) => cli::hunt(&a),
        Command::Events(a) => cli::events(a),
        Command::Ack(a) => cli::ack(a),
        Command::Baseline(a) => cli::baseline(&a),
        Command::ConsoleUser(a) => console_user::run(&a),
        Command::Quarantine(a) => cli::quarantine(&a),
        Command::Service(a) => cli::service(a),
        Command::ServiceRun(a) => cli::service_run(a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("watchpost: {e:#}");
        ExitCode::from(2)
    })
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
