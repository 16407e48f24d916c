//! Threshold filters through the binary: "N matches in T" per group, forwarding the first,
//! each, or all held matches; the windows survive a daemon restart.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
#[cfg(unix)] // only the tests that stop the daemon with `kill` wait
use std::time::Duration;

#[cfg(unix)]
use common::{Watchpost, append, wait_for};
use serde_json::{Value, json};

fn watchpost(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(args)
        .env("WATCHPOST_LOG", "warn")
        .output()
        .expect("run watchpost")
}

fn failed_logon(sec: u32, ip: &str) -> String {
    json!({
        "time": format!("2026-03-01T10:{:02}:{:02}Z", sec / 60, sec % 60),
        "host": "dc1",
        "event_id": "4625",
        "TargetUserName": "administrator",
        "IpAddress": ip,
    })
    .to_string()
}

fn config(dir: &Path, forward: &str) -> std::path::PathBuf {
    let cfg = dir.join(format!("{forward}.toml"));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'
checkpoint_interval_ms = 100
log_fired = false

[[source]]
name = "security"
type = "jsonl"
path = '{logs}/*.jsonl'
start_at = "beginning"

[[filter]]
name = "password-guessing"
match = {{ event_id = "4625" }}
threshold = {{ count = 3, within = "5m", group_by = ["IpAddress"], forward = "{forward}" }}
actions = ["flag"]

[[action]]
name = "flag"
type = "flag_file"
path = '{flag}'
content = "{{{{ IpAddress }}}}"
"#,
            state = dir.join("state").display(),
            logs = dir.join("logs").display(),
            flag = dir.join("flag").display(),
        ),
    )
    .unwrap();
    cfg
}

/// Offsets of the events `watchpost test` says the filter fired on, in output order.
fn fired(cfg: &Path, input: &Path) -> Vec<(u64, String)> {
    let out = watchpost(&[
        "test",
        "-c",
        cfg.to_str().unwrap(),
        "--format",
        "jsonl",
        input.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["filter"] == "password-guessing")
        .map(|v| {
            (
                v["origin"]["offset"].as_u64().unwrap(),
                v["event"]["IpAddress"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn first_each_and_all_forward_what_they_promise() {
    let lines = [
        failed_logon(0, "10.0.0.66"),   // 0
        failed_logon(10, "10.0.0.66"),  // 1
        failed_logon(15, "10.0.0.7"),   // 2: another address counts apart
        failed_logon(20, "10.0.0.66"),  // 3: third within 5 min: threshold
        failed_logon(30, "10.0.0.66"),  // 4
        failed_logon(900, "10.0.0.66"), // 5: a quarter of an hour later: alone
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let at = |n: usize| -> u64 { lines[..n].iter().map(|l| l.len() as u64 + 1).sum() };

    let got = fired(&config(dir.path(), "first"), &input);
    assert_eq!(got, [(at(3), "10.0.0.66".to_owned())]);
    let got: Vec<u64> = fired(&config(dir.path(), "each"), &input)
        .iter()
        .map(|g| g.0)
        .collect();
    assert_eq!(got, [at(3), at(4)]);
    // `all`: the two held matches are released with the one reaching the threshold.
    let got: Vec<u64> = fired(&config(dir.path(), "all"), &input)
        .iter()
        .map(|g| g.0)
        .collect();
    assert_eq!(got, [at(3), at(0), at(1), at(4)]);
}

// Stops the daemon with SIGTERM (`kill`): Unix only; the Windows daemon's stop is
// tested through the service (tests/service_windows.rs).
#[cfg(unix)]
#[test]
fn the_window_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "first");
    let log = dir.path().join("watchpost.log");
    let live = dir.path().join("logs/security.jsonl");
    let state = dir.path().join("state/thresholds.json");

    let wp = Watchpost::start(&cfg, &log);
    append(
        &live,
        format!(
            "{}\n{}\n",
            failed_logon(0, "10.0.0.66"),
            failed_logon(10, "10.0.0.66")
        )
        .as_bytes(),
    );
    // Both matches are counted and saved (no firing yet).
    wait_for("the window to be saved", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&state).ok()?;
        text.contains("10.0.0.66").then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(wp.terminate());
    assert!(
        !dir.path().join("flag").exists(),
        "two matches do not reach the threshold"
    );

    // After the restart the third match completes the window.
    let wp = Watchpost::start(&cfg, &log);
    append(
        &live,
        format!("{}\n", failed_logon(20, "10.0.0.66")).as_bytes(),
    );
    let flag = wait_for("the threshold to fire", Duration::from_secs(20), || {
        std::fs::read_to_string(dir.path().join("flag")).ok()
    });
    assert_eq!(flag, "10.0.0.66");
    assert!(wp.terminate());
}

#[test]
fn threshold_mistakes_are_reported_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        r#"[[filter]]
name = "x"
threshold = { count = 1, within = "5 minutes", forward = "some" }
"#,
    )
    .unwrap();
    let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.toml:3:23: error: `count` must be a whole number from 2 to 100000"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:3:35: error: `5 minutes` is not a duration"),
        "{err}"
    );
    assert!(
        err.contains("`forward` must be \"first\", \"each\" or \"all\""),
        "{err}"
    );
}
