//! What the daemon and its review commands print: its log's counters are `key=value`
//! pairs a person and a log shipper can read, never Rust's `Debug` structures
//! (`TailStats { files_followed: 1, … }`); `events` names the filter of each action
//! outcome; `ack` records who ran it.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Watchpost, append, wait_for};

#[test]
#[cfg(unix)] // the totals are logged at shutdown, which needs `kill -TERM` (a Unix signal)
fn log_lines_carry_key_value_pairs_not_debug_structures() {
    use common::free_udp_port;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |p: &std::path::Path| p.display().to_string().replace('\\', "/");
    let cfg = d.join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'
checkpoint_interval_ms = 100

[[source]]
name = "app"
type = "jsonl"
path = '{logs}/*.jsonl'
start_at = "beginning"

[[source]]
name = "net"
type = "jsonl"
listen = "udp://127.0.0.1:{port}"

[[filter]]
name = "new-user"
match = {{ source = "app" }}
anomaly = {{ key = [], value = ["user"], learning = "1h" }}

[[filter]]
name = "login"
match = {{ source = "app", event = "login" }}
actions = ["flag", "copy"]

[[action]]
name = "flag"
type = "flag_file"
path = '{flag}'

[[action]]
name = "copy"
type = "jsonl_file"
path = '{copy}'
"#,
            state = p(&d.join("state")),
            logs = p(&d.join("logs")),
            port = free_udp_port(),
            flag = p(&d.join("flag")),
            copy = p(&d.join("copy.jsonl")),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    append(
        &d.join("logs/app.jsonl"),
        b"{\"event\":\"login\",\"user\":\"alice\",\"time\":\"2026-01-01T10:00:00Z\"}\n",
    );
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    wait_for("the flag file", Duration::from_secs(20), || {
        d.join("flag").exists().then_some(())
    });
    let log_path = wp.log.clone();
    assert!(wp.terminate());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let debug = regex::Regex::new(r"[A-Za-z_]+ \{ [a-z_]+: |\w+Stats\b|Some\(|\[\x22").unwrap();
    for line in log.lines() {
        assert!(
            !debug.is_match(line),
            "a Debug structure in the log:\n{line}\n\n{log}"
        );
    }
    for expected in [
        "tail totals: files_followed=",
        "action totals: name=flag kind=flag_file queued=0 ok=1 failed=0",
        "action totals: name=copy kind=jsonl_file",
        "event store totals: stored=1 ",
        "anomaly baseline totals: pairs=1 ",
        "listen: stopped: messages=0 ",
        &format!("paths={}/*.jsonl", p(&d.join("logs"))),
    ] {
        assert!(
            log.contains(expected),
            "`{expected}` is not in the log:\n{log}"
        );
    }
}

fn watchpost(args: &[&str], env: &[(&str, &str)], clear: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_watchpost"));
    if clear {
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
    } else {
        cmd.env_remove("SUDO_USER");
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run watchpost")
}

/// An event two filters matched got a job of the same action from each: `events` says
/// which outcome belongs to which filter (no trailing blanks). `ack` without `--by`
/// records the user who invoked `sudo`, else the login name, else the account's name.
#[test]
fn events_name_each_outcomes_filter_and_ack_records_who() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |p: &std::path::Path| p.display().to_string().replace('\\', "/");
    let cfg = d.join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'
checkpoint_interval_ms = 100

[[source]]
name = "app"
type = "jsonl"
path = '{logs}/*.jsonl'
start_at = "beginning"

[[filter]]
name = "login"
match = {{ event = "login" }}
actions = ["copy"]

[[filter]]
name = "admin-login"
match = {{ event = "login", user = "admin" }}
actions = ["copy"]
require_ack = true

[[action]]
name = "copy"
type = "jsonl_file"
path = '{copy}'
"#,
            state = p(&d.join("state")),
            logs = p(&d.join("logs")),
            copy = p(&d.join("copy.jsonl")),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let mut lines = String::new();
    for i in 0..3 {
        lines.push_str(&format!(
            "{{\"event\":\"login\",\"user\":\"admin\",\"n\":{i}}}\n"
        ));
    }
    append(&d.join("logs/app.jsonl"), lines.as_bytes());
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    let cfg = cfg.to_str().unwrap();
    // The store commits while the daemon runs (`events` reads beside it).
    wait_for("six outcomes stored", Duration::from_secs(30), || {
        let out = watchpost(&["events", "-c", cfg, "--format", "jsonl"], &[], false);
        let n: usize = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|e| e["outcomes"].as_array().map_or(0, Vec::len))
            .sum();
        (n == 6).then_some(())
    });

    let out = watchpost(&["events", "-c", cfg, "id:1"], &[], false);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for expected in [
        "   action copy for filter login (attempt 1): ok\n",
        "   action copy for filter admin-login (attempt 1): ok\n",
    ] {
        assert!(text.contains(expected), "`{expected}` in:\n{text}");
    }
    assert!(
        text.lines().all(|l| l == l.trim_end()),
        "a line ends in blanks:\n{text:?}"
    );
    let out = watchpost(
        &["events", "-c", cfg, "--format", "jsonl", "id:1"],
        &[],
        false,
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut filters: Vec<&str> = e["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["filter"].as_str().unwrap())
        .collect();
    filters.sort();
    assert_eq!(filters, ["admin-login", "login"], "{e}");

    let ack = |id: &str, env: &[(&str, &str)], clear: bool| -> String {
        let out = watchpost(&["ack", "-c", cfg, "-m", "checked", id], env, clear);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = watchpost(
            &[
                "events",
                "-c",
                cfg,
                "--format",
                "jsonl",
                &format!("id:{id}"),
            ],
            &[],
            false,
        );
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        e["ack"]["by"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        ack("1", &[("SUDO_USER", "alice"), ("USER", "root")], false),
        "alice"
    );
    assert_eq!(ack("2", &[("USER", "bob")], false), "bob");
    if cfg!(unix) {
        // No variable at all (a cron job, `env -i`): the account's own name.
        let id = Command::new("id").arg("-un").output().unwrap();
        let me = String::from_utf8_lossy(&id.stdout).trim().to_owned();
        assert!(!me.is_empty());
        assert_eq!(ack("3", &[], true), me);
    }
    drop(wp);
}

/// A burst of firings is logged up to the per-second budget; one line counts the rest,
/// while every event still reaches its action and the store.
#[test]
fn a_burst_of_firings_is_logged_up_to_the_budget_and_the_rest_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |p: &std::path::Path| p.display().to_string().replace('\\', "/");
    let cfg = d.join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'

[[source]]
name = "app"
type = "jsonl"
path = '{logs}/*.jsonl'
start_at = "beginning"

[[filter]]
name = "login"
match = {{ source = "app", event = "login" }}
actions = ["copy"]

[[action]]
name = "copy"
type = "jsonl_file"
path = '{copy}'
"#,
            state = p(&d.join("state")),
            logs = p(&d.join("logs")),
            copy = p(&d.join("copy.jsonl")),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let burst = 1_000;
    let lines: String = (0..burst)
        .map(|i| format!("{{\"event\":\"login\",\"user\":\"u{i}\"}}\n"))
        .collect();
    append(&d.join("logs/app.jsonl"), lines.as_bytes());
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    wait_for("every event copied", Duration::from_secs(30), || {
        let copied = std::fs::read_to_string(d.join("copy.jsonl")).unwrap_or_default();
        (copied.lines().count() == burst).then_some(())
    });
    let counted = regex::Regex::new(r"fired lines not logged: .* skipped=(\d+)").unwrap();
    let log = wait_for(
        "the count of lines not logged",
        Duration::from_secs(10),
        || {
            let log = wp.log_text();
            counted.is_match(&log).then_some(log)
        },
    );
    let fired = log.lines().filter(|l| l.contains(" fired filter=")).count();
    let skipped: usize = counted
        .captures_iter(&log)
        .map(|c| c[1].parse::<usize>().unwrap())
        .sum();
    assert!(fired >= 200 && fired < burst, "{fired} fired lines:\n{log}");
    // Lines of a second not yet over may still be counted later; none is counted twice.
    assert!(
        fired + skipped <= burst,
        "{fired} logged + {skipped} counted:\n{log}"
    );
    wp.kill9();
}
