//! `watchpost service` on Windows: install → start → Running → the daemon reacts to a line
//! appended to a followed file (beside a windows_event_log source) → `watchpost reload`
//! and `sc control NAME paramchange` apply a changed configuration → stop → Stopped →
//! uninstall → not installed, driven through
//! the built exe against the Service Control Manager (Wine's services.exe under
//! scripts/windows-test.sh). Always uninstalls, also when an assertion fails.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(windows)]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn watchpost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(args)
        .env("WATCHPOST_LOG", "warn")
        .output()
        .expect("run watchpost")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `watchpost service VERB --name NAME`, its output; panics when it failed.
fn service_ok(verb: &str, name: &str, more: &[&str]) -> String {
    let mut args = vec!["service", verb, "--name", name];
    args.extend_from_slice(more);
    let out = watchpost(&args);
    assert!(out.status.success(), "service {verb}: {}", text(&out));
    text(&out)
}

/// The state word `service status` printed (`Running`, `Stopped`, `not installed`, …).
fn status(name: &str) -> String {
    let out = watchpost(&["service", "status", "--name", name]);
    let t = text(&out);
    t.trim()
        .strip_prefix(&format!("{name}: "))
        .unwrap_or(&t)
        .to_owned()
}

fn wait_state(name: &str, want: &str, limit: Duration) {
    let mut last = String::new();
    let what = format!("service {name} to be {want}");
    wait_for(&what, limit, || {
        last = status(name);
        last.starts_with(want).then_some(())
    });
}

/// Sends SERVICE_CONTROL_PARAMCHANGE to the service, as `sc control NAME paramchange`
/// does (Wine's sc.exe has no `control` verb, so the test calls the API itself).
#[allow(unsafe_code)] // Win32 FFI: the handles are checked and closed here
fn param_change(name: &str) {
    use windows_sys::Win32::System::Services::{
        CloseServiceHandle, ControlService, OpenSCManagerW, OpenServiceW, SC_MANAGER_CONNECT,
        SERVICE_CONTROL_PARAMCHANGE, SERVICE_PAUSE_CONTINUE, SERVICE_STATUS,
    };
    let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
    // SAFETY: null pointers ask for the local machine's active database; `wide` is a
    // NUL-terminated UTF-16 string that outlives the calls; `status` is written by the
    // call; both handles are closed before returning.
    let ok = unsafe {
        let scm = OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT);
        assert!(!scm.is_null(), "OpenSCManagerW failed");
        let svc = OpenServiceW(scm, wide.as_ptr(), SERVICE_PAUSE_CONTINUE);
        let mut status: SERVICE_STATUS = std::mem::zeroed();
        let ok =
            !svc.is_null() && ControlService(svc, SERVICE_CONTROL_PARAMCHANGE, &mut status) != 0;
        if !svc.is_null() {
            CloseServiceHandle(svc);
        }
        CloseServiceHandle(scm);
        ok
    };
    assert!(
        ok,
        "ControlService(PARAMCHANGE) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Uninstalls on drop, so that a failed assertion leaves no service behind.
struct Installed<'a>(&'a str);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = watchpost(&["service", "uninstall", "--name", self.0]);
    }
}

#[test]
fn install_start_run_stop_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let flags = dir.path().join("flags");
    let log = dir.path().join("app.log");
    std::fs::create_dir_all(&flags).unwrap();
    std::fs::write(&log, "").unwrap();
    let config = dir.path().join("wp.toml");
    // TOML literal strings: Windows paths keep their backslashes.
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = '{state}'
checkpoint_interval_ms = 100

[[source]]
name = "app"
type = "text"
path = '{log}'
start_at = "beginning"

# The Windows Event Log source's thread runs beside it and stops with the service (under
# Wine its subscription fails: wevtapi is a stub there, and the failure is only logged).
[[source]]
name = "winlog"
type = "windows_event_log"
channels = ["System"]

[[filter]]
name = "marker"
match = {{ message = {{ regex = 'WATCHPOST-SERVICE-TEST' }} }}
actions = ["flag"]

[[action]]
name = "flag"
type = "flag_file"
path = '{flag}'
content = "seen"
"#,
            state = state.display(),
            log = log.display(),
            flag = flags.join("seen").display(),
        ),
    )
    .unwrap();
    let name = format!("wp-test-{}", std::process::id());
    let name = name.as_str();

    let dry = service_ok(
        "install",
        name,
        &["-c", config.to_str().unwrap(), "--dry-run"],
    );
    assert!(dry.contains("service-run"), "{dry}");
    let st = status(name);
    assert!(st.starts_with("not installed"), "{st}");

    service_ok("install", name, &["-c", config.to_str().unwrap()]);
    let _guard = Installed(name);
    let st = status(name);
    assert!(st.starts_with("Stopped"), "{st}");

    service_ok("start", name, &[]);
    wait_state(name, "Running", Duration::from_secs(30));

    // The daemon really runs: it follows the file and acts on a new line.
    append(
        &log,
        b"Nov 22 10:00:00 host app[1]: WATCHPOST-SERVICE-TEST one\n",
    );
    let flag = flags.join("seen");
    let seen = wait_for(
        "the flag file written by the service",
        Duration::from_secs(30),
        || std::fs::read_to_string(&flag).ok(),
    );
    assert_eq!(seen, "seen");
    assert!(
        state.join("checkpoints").is_dir(),
        "no checkpoints directory"
    );

    // A reload through the service's control: a second filter and action appear.
    let first = std::fs::read_to_string(&config).unwrap();
    let flag2 = flags.join("second");
    let second = |marker: &str| {
        format!(
            "{first}\n[[filter]]\nname = \"second\"\nmatch = {{ message = {{ regex = '{marker}' }} }}\nactions = [\"flag2\"]\n\n[[action]]\nname = \"flag2\"\ntype = \"flag_file\"\npath = '{}'\ncontent = \"{marker}\"\n",
            flag2.display()
        )
    };
    std::fs::write(&config, second("WATCHPOST-RELOAD-ONE")).unwrap();
    let out = watchpost(&["reload", "-c", config.to_str().unwrap(), "--name", name]);
    assert!(out.status.success(), "reload: {}", text(&out));
    assert!(text(&out).contains("generation 2"), "{}", text(&out));
    append(&log, b"Nov 22 10:00:01 host app[1]: WATCHPOST-RELOAD-ONE\n");
    let seen = wait_for("the new filter's flag", Duration::from_secs(30), || {
        std::fs::read_to_string(&flag2).ok()
    });
    assert_eq!(seen, "WATCHPOST-RELOAD-ONE");
    // The standard control, as `sc control NAME paramchange` sends it.
    std::fs::write(&config, second("WATCHPOST-RELOAD-TWO")).unwrap();
    param_change(name);
    wait_for("the reload by paramchange", Duration::from_secs(30), || {
        let s = std::fs::read_to_string(state.join("reload.json")).ok()?;
        s.contains("\"generation\": 3").then_some(())
    });
    append(&log, b"Nov 22 10:00:02 host app[1]: WATCHPOST-RELOAD-TWO\n");
    wait_for("the changed flag", Duration::from_secs(30), || {
        (std::fs::read_to_string(&flag2).ok()? == "WATCHPOST-RELOAD-TWO").then_some(())
    });

    service_ok("stop", name, &[]);
    wait_state(name, "Stopped", Duration::from_secs(30));
    // A clean shutdown wrote the source's checkpoint.
    let checkpoints: Vec<_> = std::fs::read_dir(state.join("checkpoints"))
        .unwrap()
        .collect();
    assert!(!checkpoints.is_empty(), "no checkpoint written");

    service_ok("uninstall", name, &[]);
    wait_state(name, "not installed", Duration::from_secs(10));
}
