//! The daemon's own log: counters and settings are `key=value` pairs a person and a log
//! shipper can read, never Rust's `Debug` structures (`TailStats { files_followed: 1, … }`).

mod common;

use std::time::Duration;

use common::{Watchpost, append, free_udp_port, wait_for};

#[test]
fn log_lines_carry_key_value_pairs_not_debug_structures() {
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
