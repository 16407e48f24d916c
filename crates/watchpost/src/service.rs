//! `watchpost service install|uninstall|start|stop|status`: run watchpost as a system
//! service. On Linux a systemd unit (`/etc/systemd/system/<name>.service`) that runs
//! `watchpost run -c CONFIG`, enabled with `systemctl`. `--dry-run` prints the unit and the
//! commands instead of doing anything. Every `systemctl` call is a separate argv, never a
//! shell.
//!
//! On Windows a service registered with the Service Control Manager (own process, automatic
//! start, LocalSystem) whose command line is `watchpost.exe service-run --name NAME -c CONFIG`;
//! `service-run` (hidden) hands the process to the SCM's dispatcher, and the SCM's Stop or
//! Shutdown stops the daemon the way SIGTERM does on Linux (`watchpost_runtime::run_until`);
//! its paramchange control (`sc control NAME paramchange`, or `watchpost reload`) reloads
//! the configuration the way SIGHUP does.

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
    #[cfg(windows)]
    return windows::service(args);
    #[cfg(not(windows))]
    systemd(args)
}

#[cfg_attr(windows, allow(dead_code))] // Windows goes to `windows::service`
fn systemd(args: &ServiceArgs) -> Result<i32> {
    if !cfg!(target_os = "linux") {
        bail!("`watchpost service` manages systemd units on Linux and services on Windows");
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
# `systemctl reload`: the daemon checks the configuration first and keeps the running one
# when it has errors (then this fails, printing them).
ExecReload={exe} reload{config_arg}
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

/// The Windows half: the Service Control Manager, through the `windows-service` crate.
#[cfg(windows)]
pub mod windows {
    use std::ffi::{OsStr, OsString};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result};
    use windows_service::service::{
        ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    use super::{ServiceArgs, Verb};

    /// The user control code `watchpost reload` sends (the service answers it as it
    /// answers paramchange).
    pub const RELOAD_CONTROL: u32 = 200;

    /// Asks the service `name` to reload its configuration (`watchpost reload`).
    pub fn param_change(name: &str) -> Result<()> {
        let m = manager(ServiceManagerAccess::CONNECT)?;
        let svc = m
            .open_service(name, ServiceAccess::USER_DEFINED_CONTROL)
            .with_context(|| format!("opening service {name}"))?;
        let code = windows_service::service::UserEventCode::from_raw(RELOAD_CONTROL)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        svc.notify(code)
            .with_context(|| format!("asking service {name} to reload"))?;
        Ok(())
    }

    /// `ERROR_SERVICE_DOES_NOT_EXIST`.
    const DOES_NOT_EXIST: i32 = 1060;
    /// `ERROR_SERVICE_MARKED_FOR_DELETE`.
    const MARKED_FOR_DELETE: i32 = 1072;
    /// `ERROR_SERVICE_NOT_ACTIVE`.
    const NOT_ACTIVE: i32 = 1062;
    /// How long `stop` and `uninstall` wait for the service to report Stopped.
    const STOP_WAIT: Duration = Duration::from_secs(30);
    const DESCRIPTION: &str = "watchpost endpoint security event monitor: reads security events as they are written and reacts within milliseconds.";

    fn os_error(e: &windows_service::Error) -> Option<i32> {
        match e {
            windows_service::Error::Winapi(io) => io.raw_os_error(),
            _ => None,
        }
    }

    /// The arguments the SCM starts `watchpost.exe` with.
    pub fn launch_arguments(name: &str, config: Option<&Path>) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["service-run".into(), "--name".into(), name.into()];
        if let Some(c) = config {
            a.push("-c".into());
            a.push(c.into());
        }
        a
    }

    fn service_info(name: &str, exe: PathBuf, config: Option<&Path>) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            display_name: format!("watchpost ({name})").into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: exe,
            launch_arguments: launch_arguments(name, config),
            dependencies: vec![],
            account_name: None, // LocalSystem
            account_password: None,
        }
    }

    fn manager(access: ServiceManagerAccess) -> Result<ServiceManager> {
        ServiceManager::local_computer(None::<&str>, access)
            .context("connecting to the service control manager (administrator rights needed)")
    }

    /// Runs the verb against the SCM; returns the exit code (0 on success).
    pub fn service(args: &ServiceArgs) -> Result<i32> {
        let name = args.name.as_str();
        match args.verb {
            Verb::Install => install(args),
            Verb::Uninstall => {
                if args.dry_run {
                    println!("stop service {name} (if running), then delete it");
                    return Ok(0);
                }
                let m = manager(ServiceManagerAccess::CONNECT)?;
                let access =
                    ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
                let svc = match m.open_service(name, access) {
                    Ok(s) => s,
                    Err(e) if os_error(&e) == Some(DOES_NOT_EXIST) => {
                        println!("{name}: not installed");
                        return Ok(0);
                    }
                    Err(e) => return Err(e).with_context(|| format!("opening service {name}")),
                };
                if svc.query_status()?.current_state != ServiceState::Stopped {
                    stop_and_wait(&svc, name)?;
                }
                svc.delete()
                    .with_context(|| format!("deleting service {name}"))?;
                println!("{name}: deleted");
                Ok(0)
            }
            Verb::Start => {
                if args.dry_run {
                    println!("start service {name}");
                    return Ok(0);
                }
                let m = manager(ServiceManagerAccess::CONNECT)?;
                let svc = m
                    .open_service(name, ServiceAccess::START)
                    .with_context(|| format!("opening service {name}"))?;
                svc.start(&[] as &[&OsStr])
                    .with_context(|| format!("starting service {name}"))?;
                println!("{name}: start requested");
                Ok(0)
            }
            Verb::Stop => {
                if args.dry_run {
                    println!("stop service {name}");
                    return Ok(0);
                }
                let m = manager(ServiceManagerAccess::CONNECT)?;
                let svc = m
                    .open_service(name, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)
                    .with_context(|| format!("opening service {name}"))?;
                let state = stop_and_wait(&svc, name)?;
                println!("{name}: {state:?}");
                Ok(if state == ServiceState::Stopped { 0 } else { 1 })
            }
            Verb::Status => {
                if args.dry_run {
                    println!("query service {name}");
                    return Ok(0);
                }
                let m = manager(ServiceManagerAccess::CONNECT)?;
                match m.open_service(name, ServiceAccess::QUERY_STATUS) {
                    Ok(svc) => {
                        let st = svc
                            .query_status()
                            .with_context(|| format!("querying service {name}"))?;
                        match st.exit_code {
                            ServiceExitCode::Win32(0) => println!("{name}: {:?}", st.current_state),
                            code => println!("{name}: {:?} (exit code {code:?})", st.current_state),
                        }
                        Ok(0)
                    }
                    Err(e) if matches!(os_error(&e), Some(DOES_NOT_EXIST | MARKED_FOR_DELETE)) => {
                        println!("{name}: not installed");
                        Ok(1)
                    }
                    Err(e) => Err(e).with_context(|| format!("opening service {name}")),
                }
            }
        }
    }

    fn install(args: &ServiceArgs) -> Result<i32> {
        let exe = std::env::current_exe().context("finding this program's path")?;
        // `absolute`, not `canonicalize`: no `\\?\` prefix in the service's command line.
        let config = match &args.config {
            Some(c) => Some(
                std::path::absolute(c).with_context(|| format!("configuration {}", c.display()))?,
            ),
            None => None,
        };
        let info = service_info(&args.name, exe, config.as_deref());
        if args.dry_run {
            println!("create service {}", args.name);
            println!("  display name: {}", info.display_name.to_string_lossy());
            println!("  description: {DESCRIPTION}");
            println!("  type: own process; start: automatic; account: LocalSystem");
            let cmd: Vec<String> = std::iter::once(info.executable_path.as_os_str())
                .chain(info.launch_arguments.iter().map(OsString::as_os_str))
                .map(|a| format!("{:?}", a.to_string_lossy()))
                .collect();
            println!("  command line: {}", cmd.join(" "));
            return Ok(0);
        }
        let m = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
        let svc = m
            .create_service(
                &info,
                ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_STATUS,
            )
            .with_context(|| format!("creating service {}", args.name))?;
        svc.set_description(DESCRIPTION)
            .with_context(|| format!("describing service {}", args.name))?;
        println!(
            "{}: installed (automatic start; `watchpost service start --name {}` starts it now)",
            args.name, args.name
        );
        Ok(0)
    }

    /// Asks the service to stop (unless it already is) and waits for Stopped, at most
    /// `STOP_WAIT`; returns the last state seen.
    fn stop_and_wait(svc: &windows_service::service::Service, name: &str) -> Result<ServiceState> {
        match svc.stop() {
            Ok(_) => {}
            Err(e) if os_error(&e) == Some(NOT_ACTIVE) => {}
            Err(e) => return Err(e).with_context(|| format!("stopping service {name}")),
        }
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            let state = svc.query_status()?.current_state;
            if state == ServiceState::Stopped || Instant::now() >= deadline {
                return Ok(state);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What `service-run` was given, for the service main (the dispatcher calls it on its own
    /// thread with the SCM's start arguments, not the command line).
    static RUN_ARGS: OnceLock<(String, Option<PathBuf>)> = OnceLock::new();

    #[allow(unsafe_code)] // the macro's FFI entry point converts the SCM's raw argument array
    mod entry {
        windows_service::define_windows_service!(ffi_service_main, service_main);

        fn service_main(_arguments: Vec<std::ffi::OsString>) {
            super::service_main();
        }

        pub(super) fn start(name: &str) -> windows_service::Result<()> {
            windows_service::service_dispatcher::start(name, ffi_service_main)
        }
    }

    /// `watchpost service-run`: the process the SCM starts. Blocks until the service stopped.
    pub fn dispatch(name: String, config: Option<PathBuf>) -> Result<()> {
        let _ = RUN_ARGS.set((name.clone(), config));
        entry::start(&name).context(
            "connecting to the service control manager (`service-run` is for the SCM; use `watchpost run`)",
        )
    }

    fn status(state: ServiceState, exit: ServiceExitCode) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP
                    | ServiceControlAccept::SHUTDOWN
                    | ServiceControlAccept::PARAM_CHANGE
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: exit,
            checkpoint: 0,
            wait_hint: if state == ServiceState::Running || state == ServiceState::Stopped {
                Duration::ZERO
            } else {
                Duration::from_secs(20)
            },
            process_id: None,
        }
    }

    fn service_main() {
        let Some((name, config)) = RUN_ARGS.get() else {
            return;
        };
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let (reload, requests) = watchpost_runtime::reload::channel();
        let handler_reload = reload.clone();
        // The handler reports StopPending (with its wait hint) before the daemon drains its
        // actions and writes checkpoints, so the SCM and `sc query` see the stop under way.
        let own =
            std::sync::Arc::new(OnceLock::<service_control_handler::ServiceStatusHandle>::new());
        let handler_own = own.clone();
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(h) = handler_own.get() {
                    let _ = h.set_service_status(status(
                        ServiceState::StopPending,
                        ServiceExitCode::NO_ERROR,
                    ));
                }
                let _ = stop_tx.try_send(());
                ServiceControlHandlerResult::NoError
            }
            // `sc control NAME paramchange`, and `watchpost reload` (a user control: the
            // crate sends no paramchange).
            ServiceControl::ParamChange => {
                handler_reload.request();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::UserEvent(code) if code.to_raw() == RELOAD_CONTROL => {
                handler_reload.request();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let handle = match service_control_handler::register(name, handler) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "registering the service control handler");
                return;
            }
        };
        let _ = own.set(handle);
        let set = |state, exit| {
            if let Err(e) = handle.set_service_status(status(state, exit)) {
                tracing::error!(error = %e, ?state, "reporting the service status");
            }
        };
        set(ServiceState::StartPending, ServiceExitCode::NO_ERROR);
        let exit =
            match crate::load::load_checked(config.as_deref(), watchpost_config::Purpose::Run) {
                Some(loaded) => {
                    let started = || set(ServiceState::Running, ServiceExitCode::NO_ERROR);
                    let (source, loaded) = watchpost_runtime::fleet::with_kept_group(
                        watchpost_config::ConfigSource::from_arg(config.as_deref()),
                        loaded,
                    );
                    match watchpost_runtime::run_until(
                        source,
                        loaded,
                        &stop_rx,
                        (reload, requests),
                        started,
                    ) {
                        Ok(()) => ServiceExitCode::NO_ERROR,
                        Err(e) => {
                            tracing::error!("{e:#}");
                            ServiceExitCode::ServiceSpecific(2)
                        }
                    }
                }
                None => ServiceExitCode::ServiceSpecific(1),
            };
        set(ServiceState::Stopped, exit);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_scm_runs_service_run_with_the_name_and_config() {
            let a = launch_arguments(
                "wp",
                Some(Path::new(r"C:\ProgramData\watchpost\my conf.toml")),
            );
            let a: Vec<_> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            assert_eq!(
                a,
                [
                    "service-run",
                    "--name",
                    "wp",
                    "-c",
                    r"C:\ProgramData\watchpost\my conf.toml"
                ]
            );
            assert_eq!(launch_arguments("x", None).len(), 3);
        }
    }
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
        assert!(
            u.contains("ExecReload=/usr/bin/watchpost reload -c \"/etc/watchpost/my conf.toml\"\n"),
            "{u}"
        );
        let u = unit_text(Path::new("/opt/wp/watchpost"), None);
        assert!(u.contains("ExecStart=/opt/wp/watchpost run\n"), "{u}");
        assert!(u.contains("ExecReload=/opt/wp/watchpost reload\n"), "{u}");
    }
}
