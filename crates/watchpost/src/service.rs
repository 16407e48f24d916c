//! `watchpost service install|uninstall|start|stop|status`: run watchpost as a system
//! service. On Linux a systemd unit (`/etc/systemd/system/<name>.service`) that runs
//! `watchpost run -c CONFIG`, enabled with `systemctl`. `--dry-run` prints the unit and the
//! commands instead of doing anything. Every `systemctl` call is a separate argv, never a
//! shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// What `service` was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Verb {
    /// Write the unit (after checking the configuration) and enable it.
    Install,
    /// Stop, disable and remove the unit.
    Uninstall,
    /// Start the service.
    Start,
    /// Stop the service.
    Stop,
    /// Show the service's state.
    Status,
}

/// Options of `watchpost service`.
#[derive(Debug, Clone)]
pub struct ServiceArgs {
    /// The verb.
    pub verb: Verb,
    /// Configuration the service runs with (absolute path written into the unit).
    pub config: Option<PathBuf>,
    /// Unit name without `.service`.
    pub name: String,
    /// Where unit files go.
    pub unit_dir: PathBuf,
    /// Print instead of doing.
    pub dry_run: bool,
    /// Write or remove the unit file only; no `systemctl` calls.
    pub no_systemctl: bool,
}

/// Runs the verb; returns the exit code of what ran (0 on success).
pub fn service(args: &ServiceArgs) -> Result<i32> {
    if !cfg!(target_os = "linux") {
        bail!(
            "`watchpost service` manages systemd units on Linux; this build has no Windows service support yet"
        );
    }
    let unit_file = args.unit_dir.join(format!("{}.service", args.name));
    let unit = format!("{}.service", args.name);
    match args.verb {
        Verb::Install => install(args, &unit_file, &unit),
        Verb::Uninstall => {
            let mut code = systemctl(args, &["disable", "--now", &unit])?;
            if args.dry_run {
                println!("rm {}", unit_file.display());
            } else if unit_file.exists() {
                std::fs::remove_file(&unit_file)
                    .with_context(|| format!("removing {}", unit_file.display()))?;
            }
            code = code.max(systemctl(args, &["daemon-reload"])?);
            Ok(code)
        }
        Verb::Start => systemctl(args, &["start", &unit]),
        Verb::Stop => systemctl(args, &["stop", &unit]),
        Verb::Status => systemctl(args, &["status", "--no-pager", &unit]),
    }
}

fn install(args: &ServiceArgs, unit_file: &Path, unit: &str) -> Result<i32> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let config = match &args.config {
        Some(c) => Some(
            std::fs::canonicalize(c).with_context(|| format!("configuration {}", c.display()))?,
        ),
        None => None,
    };
    let text = unit_text(&exe, config.as_deref());
    if args.dry_run {
        println!("# {}", unit_file.display());
        print!("{text}");
    } else {
        std::fs::create_dir_all(&args.unit_dir)
            .with_context(|| format!("creating {}", args.unit_dir.display()))?;
        std::fs::write(unit_file, &text)
            .with_context(|| format!("writing {}", unit_file.display()))?;
        println!("wrote {}", unit_file.display());
    }
    let code = systemctl(args, &["daemon-reload"])?;
    Ok(code.max(systemctl(args, &["enable", unit])?))
}

/// The systemd unit for `exe` running `config` (the built-in configuration when `None`).
pub fn unit_text(exe: &Path, config: Option<&Path>) -> String {
    let config_arg = config
        .map(|c| format!(" -c {}", quote(&c.to_string_lossy())))
        .unwrap_or_default();
    format!(
        "[Unit]
Description=watchpost endpoint security event monitor
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exe} run{config_arg}
# SIGTERM stops watchpost cleanly: positions are checkpointed, queued actions drain (5 s).
KillSignal=SIGTERM
TimeoutStopSec=20
Restart=on-failure
RestartSec=2
# /var/lib/watchpost, the built-in configuration's state directory.
StateDirectory=watchpost
Environment=WATCHPOST_LOG=info

[Install]
WantedBy=multi-user.target
",
        exe = quote(&exe.to_string_lossy()),
    )
}

/// Quotes a path for a systemd command line when it has spaces or quotes.
fn quote(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_owned()
    }
}

fn systemctl(args: &ServiceArgs, argv: &[&str]) -> Result<i32> {
    if args.no_systemctl {
        return Ok(0);
    }
    if args.dry_run {
        println!("systemctl {}", argv.join(" "));
        return Ok(0);
    }
    let status = Command::new("systemctl")
        .args(argv)
        .status()
        .context("running systemctl")?;
    let code = status.code().unwrap_or(1);
    if code != 0 {
        eprintln!("watchpost: systemctl {} exited with {code}", argv.join(" "));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_binary_with_the_config() {
        let u = unit_text(
            Path::new("/usr/bin/watchpost"),
            Some(Path::new("/etc/watchpost/my conf.toml")),
        );
        assert!(
            u.contains("ExecStart=/usr/bin/watchpost run -c \"/etc/watchpost/my conf.toml\"\n"),
            "{u}"
        );
        assert!(u.contains("WantedBy=multi-user.target"));
        let u = unit_text(Path::new("/opt/wp/watchpost"), None);
        assert!(u.contains("ExecStart=/opt/wp/watchpost run\n"), "{u}");
    }
}
