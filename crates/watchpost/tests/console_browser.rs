//! The agent's console in a real browser: the daemon follows a JSON-lines security log
//! with an anomaly filter (RDP logons from a new address, acknowledgement required) and a
//! process filter, serves `[console]` on loopback, and headless Chromium runs the review
//! flow (`crates/console/tests/browser/console_flow.py`): a viewer refused, a change
//! without the CSRF token refused, the overview's charts, search, the anomaly with its
//! baseline explanation, acknowledgement (one and two selected), the audit log, event
//! values with HTML/JS shown as text with no script run, the host page and baselines.
//! Screenshots land in `target/console-screenshots/local/`. `watchpost console-user`
//! makes the users.

// Stops the daemon with SIGTERM.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Watchpost, wait_for};
use serde_json::json;

fn logon(day: u32, host: &str, user: &str, ip: &str) -> String {
    json!({
        "time": format!("2026-03-{day:02}T09:00:00Z"),
        "host": host, "event_id": "4624",
        "TargetUserName": user, "IpAddress": ip, "LogonType": "10",
    })
    .to_string()
}

fn user_add(cfg: &str, name: &str, role: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["console-user", "-c", cfg, "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("user {name} ({role}) added")));
}

#[test]
fn the_review_flow_in_chromium_on_the_agents_console() {
    if let Some(why) = watchpost_console::browser::missing()
        && std::env::var("CI").as_deref() != Ok("true")
    {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("watchpost.toml");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
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
name = "rdp-source-ip"
match = {{ event_id = "4624", LogonType = "10" }}
anomaly = {{ key = ["TargetUserName"], value = ["IpAddress"], learning = "14d" }}

[[filter]]
name = "new-rdp-source"
match = {{ source = "security" }}
anomaly = "only"
require_ack = true

[[filter]]
name = "process-start"
match = {{ event_id = "4688" }}

[console]
listen = "127.0.0.1:{port}"
"#,
            state = dir.path().join("state").display(),
            logs = dir.path().join("logs").display(),
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    user_add(cfg_s, "ann", "analyst");
    user_add(cfg_s, "vic", "viewer");

    // Four weeks of RDP logons on ws1: alice and bob from their usual addresses, a new
    // one for each now and then after the 14 days of learning; and a process start whose
    // command line holds HTML and script.
    let mut lines = Vec::new();
    for day in 1..=28u32 {
        lines.push(logon(
            day,
            "ws1",
            "alice",
            if day % 5 == 0 && day > 14 {
                "10.9.9.1"
            } else {
                "10.0.0.1"
            },
        ));
        lines.push(logon(
            day,
            "ws1",
            "bob",
            if day % 6 == 0 && day > 14 {
                "10.9.9.2"
            } else {
                "10.0.0.2"
            },
        ));
        lines.push(logon(day, "ws1", "carol", &format!("10.7.{day}.3")));
    }
    lines.push(
        json!({
            "time": "2026-03-28T10:00:00Z", "host": "ws1", "event_id": "4688",
            "CommandLine": "<script>console.log('XSS-1')</script> xss-probe",
            "SubjectUserName": "\"><img src=x onerror=console.log('XSS-2')>",
        })
        .to_string(),
    );
    std::fs::write(
        dir.path().join("logs/security.jsonl"),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let wp = Watchpost::start(&cfg, &dir.path().join("watchpost.log"));
    wait_for(
        "the daemon to store the events",
        Duration::from_secs(30),
        || {
            let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
                .args([
                    "events", "-c", cfg_s, "--format", "jsonl", "--limit", "1000",
                ])
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout).lines().count() == lines.len()).then_some(())
        },
    );
    let out = watchpost_console::browser::screenshot_dir("local");
    let _ = std::fs::remove_dir_all(&out);
    let result = watchpost_console::browser::run_flow(&[
        "--base",
        &format!("http://127.0.0.1:{port}"),
        "--mode",
        "local",
        "--host",
        "ws1",
        "--out",
        out.to_str().unwrap(),
        "--explain-filter",
        "rdp-source-ip",
        "--explain-key",
        "alice",
    ]);
    let log = wp.log_text();
    assert!(wp.terminate());
    match result {
        Ok(ran) => {
            if ran {
                assert!(
                    std::fs::read_dir(&out).unwrap().count() >= 10,
                    "a screenshot per page"
                );
            }
        }
        Err(e) => panic!("{e}\n--- daemon log ---\n{log}"),
    }
    // The daemon's log names the console and never a password or session.
    assert!(log.contains("serving the console"), "{log}");
    assert!(
        !log.contains("correct horse") && !log.contains("wp_session="),
        "{log}"
    );
}
