//! `watchpost run` and `watchpost reload`: the daemon in the foreground with its signal
//! handlers, and the command that asks a running daemon to reload.
//!
//! SIGINT/SIGTERM stop the daemon; SIGHUP reloads its configuration (the runtime's
//! [`ReloadHandle`]). `watchpost reload` finds the daemon through the pid file in its state
//! directory, sends SIGHUP (on Windows: the service's paramchange control) and waits for
//! the outcome the daemon writes to `<state_dir>/reload.json`; the exit status says
//! whether the configuration was applied, and a rejection's diagnostics are printed.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use watchpost_config::{ConfigSource, Loaded};
use watchpost_runtime::ReloadHandle;
use watchpost_runtime::reload::{self, Outcome};

/// How long `watchpost reload` waits for the daemon's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Runs the daemon until SIGINT/SIGTERM; SIGHUP reloads.
pub fn run(path: Option<&Path>, loaded: Loaded) -> Result<()> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (handle, requests) = reload::channel();
    on_signals(stop_tx, &handle)?;
    let (source, loaded) =
        watchpost_runtime::fleet::with_kept_group(ConfigSource::from_arg(path), loaded);
    watchpost_runtime::run_until(source, loaded, &stop_rx, (handle, requests), || {})
}

/// SIGINT and SIGTERM stop, SIGHUP asks for a reload: one thread of signal-hook's waits
/// for them (the handlers themselves only note the signal).
#[cfg(unix)]
fn on_signals(stop: crossbeam_channel::Sender<()>, handle: &ReloadHandle) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing the SIGINT/SIGTERM/SIGHUP handlers")?;
    let handle = handle.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    tracing::info!("SIGHUP: reloading the configuration");
                    handle.request();
                } else {
                    let _ = stop.try_send(());
                }
            }
        })?;
    Ok(())
}

/// Ctrl+C, Ctrl+Break and closing the console stop (`watchpost run` in a console; the
/// service stops through the SCM).
#[cfg(not(unix))]
fn on_signals(stop: crossbeam_channel::Sender<()>, _: &ReloadHandle) -> Result<()> {
    ctrlc::set_handler(move || {
        let _ = stop.try_send(());
    })
    .context("installing the Ctrl+C handler")
}

/// `watchpost reload`: asks the daemon running with this configuration's state directory
/// to reload, waits for its answer. Exit 0: applied (or nothing changed); 1: rejected
/// (diagnostics printed); 2: no daemon answered.
pub fn reload_command(path: Option<&Path>, service: &str) -> Result<ExitCode> {
    let source = ConfigSource::from_arg(path);
    let state_dir = state_dir_of(&source)?;
    let sent_ms = jiff::Timestamp::now().as_millisecond();
    signal(&state_dir, service)?;
    let until = Instant::now() + ANSWER_WAIT;
    while Instant::now() < until {
        if let Some(s) = reload::read_status(&state_dir)
            && s.started_ms >= sent_ms
        {
            return Ok(report(&s.outcome));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the daemon did not answer within {} s (is it running with state directory {}?)",
        ANSWER_WAIT.as_secs(),
        state_dir.display()
    )
}

/// Prints what the reload did; the exit status.
fn report(outcome: &Outcome) -> ExitCode {
    match outcome {
        Outcome::Applied {
            generation,
            changes,
        } => {
            println!("configuration applied: generation {generation} ({changes})");
            ExitCode::SUCCESS
        }
        Outcome::Unchanged { generation } => {
            println!("configuration unchanged: generation {generation} keeps running");
            ExitCode::SUCCESS
        }
        Outcome::Rejected {
            generation,
            diagnostics,
        } => {
            eprint!("{diagnostics}");
            eprintln!("configuration rejected: generation {generation} keeps running unchanged");
            ExitCode::from(1)
        }
    }
}

/// The state directory a configuration names (read even when the configuration has
/// errors elsewhere: the daemon reports those).
fn state_dir_of(source: &ConfigSource) -> Result<std::path::PathBuf> {
    let text = match source {
        ConfigSource::File(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading configuration {}", p.display()))?,
        ConfigSource::BuiltIn => watchpost_config::DEFAULT_CONFIG.to_owned(),
        ConfigSource::Text { text, .. } => text.clone(),
        ConfigSource::Fleet { .. } => {
            return Ok(
                watchpost_config::load(source, watchpost_config::Purpose::Offline)
                    .map_err(|r| anyhow::anyhow!("{r}"))?
                    .config
                    .state_dir,
            );
        }
    };
    let mut diags = watchpost_config::Diagnostics::default();
    match watchpost_config::parse(&text, &mut diags) {
        Some(c) => Ok(c.state_dir),
        None => {
            let map = watchpost_config::SourceMap::single(source.name(), text);
            eprint!("{}", map.render(&diags));
            bail!("the configuration cannot be read, so its daemon cannot be found")
        }
    }
}

/// Sends the reload signal to the daemon of `state_dir`.
#[cfg(unix)]
fn signal(state_dir: &Path, _service: &str) -> Result<()> {
    let path = reload::pid_path(state_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is watchpost running with this configuration?)",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: not a process id", path.display()))?;
    let pid = rustix::process::Pid::from_raw(pid)
        .with_context(|| format!("{}: not a process id", path.display()))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("signalling watchpost (pid {})", pid.as_raw_nonzero()))?;
    Ok(())
}

/// On Windows the daemon is the service: its paramchange control reloads.
#[cfg(windows)]
fn signal(_state_dir: &Path, service: &str) -> Result<()> {
    crate::service::windows::param_change(service)
}
