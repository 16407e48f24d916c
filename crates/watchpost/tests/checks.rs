//! `[[check]]`s in the daemon: definitions going stale (after their grace) and fresh
//! again, a service stopping and recovering, a source going silent and speaking again;
//! each change is an event for the chain (flag files written and removed here), steady
//! states are not repeated, not even after a restart.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{Watchpost, append, wait_for};

fn age(path: &Path, days: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

fn flag(dir: &Path, name: &str) -> bool {
    dir.join("flags").join(name).exists()
}

#[test]
fn checks_report_changes_once_and_only_after_their_grace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::create_dir_all(d.join("bin")).unwrap();
    let defs = d.join("daily.cld");
    std::fs::write(&defs, "db").unwrap();
    age(&defs, 5);
    // A stand-in for systemctl: prints the state written to a file.
    let state = d.join("svc-state");
    std::fs::write(&state, "active\n").unwrap();
    let systemctl = d.join("bin/systemctl");
    std::fs::write(
        &systemctl,
        format!("#!/bin/sh\ncat '{}'\n", state.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();

    let cfg = d.join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{d}/state'
checkpoint_interval_ms = 100

[[source]]
name = "av-log"
type = "jsonl"
path = '{d}/logs/*.jsonl'

[[check]]
name = "clamav-definitions"
type = "definitions_age"
file = '{defs}'
max_age = "3d"
interval = "1s"
grace = "3s"

[[check]]
name = "av-daemon"
type = "service"
services = ["clamav-daemon"]
interval = "1s"

[[check]]
name = "av-log-quiet"
type = "source_silence"
source = "av-log"
after = "2s"
interval = "1s"

[[filter]]
name = "problem"
match = {{ status = ["stale", "stopped", "silent"] }}
actions = ["raise"]

[[filter]]
name = "recovered"
match = {{ status = "ok", previous_status = {{ exists = true }} }}
actions = ["lower"]

[[action]]
name = "raise"
type = "flag_file"
path = '{d}/flags/{{{{ check }}}}'
content = "{{{{ status }}}}: {{{{ detail }}}}"

[[action]]
name = "lower"
type = "flag_file"
path = '{d}/flags/{{{{ check }}}}'
mode = "remove"
"#,
            d = d.display(),
            defs = defs.display(),
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        d.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = d.join("watchpost.log");
    let check = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["check-config", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let wp = start_with_path(&cfg, &log, &path);
    let started = std::time::Instant::now();
    // The silent source is reported after 2 s; the definitions only after their 3 s grace.
    wait_for("the silence report", Duration::from_secs(20), || {
        flag(d, "av-log-quiet").then_some(())
    });
    let stale = wait_for("the stale definitions", Duration::from_secs(20), || {
        std::fs::read_to_string(d.join("flags/clamav-definitions")).ok()
    });
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "reported before the grace ended"
    );
    assert!(stale.starts_with("stale: definitions of"), "{stale}");
    assert!(!flag(d, "av-daemon"), "the service runs");

    // The service stops and comes back; the source speaks again; definitions get fresh.
    std::fs::write(&state, "inactive\n").unwrap();
    let stopped = wait_for("the stopped service", Duration::from_secs(20), || {
        std::fs::read_to_string(d.join("flags/av-daemon")).ok()
    });
    assert!(
        stopped.starts_with("stopped: not running: clamav-daemon"),
        "{stopped}"
    );
    std::fs::write(&state, "active\n").unwrap();
    append(&d.join("logs/av.jsonl"), b"{\"msg\":\"scan done\"}\n");
    std::fs::write(&defs, "db2").unwrap();
    for name in ["av-daemon", "av-log-quiet", "clamav-definitions"] {
        wait_for(
            &format!("{name} to recover"),
            Duration::from_secs(20),
            || (!flag(d, name)).then_some(()),
        );
    }
    assert!(wp.terminate());

    // Steady states are not repeated: a restart with the definitions stale again reports
    // once more (a change), but a second restart with nothing changed reports nothing.
    age(&defs, 5);
    let wp = start_with_path(&cfg, &log, &path);
    wait_for("stale again", Duration::from_secs(20), || {
        flag(d, "clamav-definitions").then_some(())
    });
    assert!(wp.terminate());
    std::fs::remove_file(d.join("flags/clamav-definitions")).unwrap();
    let wp = start_with_path(&cfg, &log, &path);
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !flag(d, "clamav-definitions"),
        "a steady stale state was reported again"
    );
    assert!(wp.terminate());
    // The store holds each reported change once.
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args([
            "events",
            "-c",
            cfg.to_str().unwrap(),
            "--format",
            "jsonl",
            "source:clamav-definitions",
            "status:stale",
        ])
        .output()
        .unwrap();
    let stored = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(stored, 2, "{}", String::from_utf8_lossy(&out.stdout));
}

fn start_with_path(cfg: &Path, log: &Path, path: &str) -> Watchpost {
    // The stand-in systemctl comes first on the daemon's PATH.
    Watchpost::start_env(cfg, log, &[("PATH", path)])
}
