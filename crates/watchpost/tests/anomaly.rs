//! Anomaly filters end to end through the binary: the seed's three examples replayed with
//! `watchpost test` (before and after learning, with and without `learn_per_key`); the
//! same stream through the daemon (`run`) gives the same flags as the replay (replay
//! equivalence), lands in the event store, and is acknowledged with `watchpost ack`;
//! `watchpost baseline learn/list/explain/export/import/reset`.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
#[cfg(unix)] // only the tests that stop the daemon with `kill` wait
use std::time::Duration;

#[cfg(unix)]
use common::{Watchpost, wait_for};
use serde_json::{Value, json};

fn watchpost(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(args)
        .env("WATCHPOST_LOG", "warn")
        .output()
        .expect("run watchpost")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A Security-log-like event as a JSON line (`time` becomes the event time).
fn ev(day: u32, hour: u32, host: &str, id: u32, fields: &[(&str, &str)]) -> String {
    let mut o = json!({
        "time": format!("2026-03-{day:02}T{hour:02}:00:00Z"),
        "host": host,
        "event_id": id.to_string(),
    });
    for (k, v) in fields {
        o[*k] = json!(v);
    }
    o.to_string()
}

fn logon(day: u32, host: &str, user: &str, ip: &str, logon_type: &str) -> String {
    ev(
        day,
        9,
        host,
        4624,
        &[
            ("TargetUserName", user),
            ("IpAddress", ip),
            ("LogonType", logon_type),
        ],
    )
}

fn process(day: u32, host: &str, user: &str, path: &str) -> String {
    ev(
        day,
        10,
        host,
        4688,
        &[("SubjectUserName", user), ("NewProcessName", path)],
    )
}

fn config(dir: &Path, filters: &str) -> std::path::PathBuf {
    let cfg = dir.join("watchpost.toml");
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

{filters}
"#,
            state = dir.join("state").display(),
            logs = dir.join("logs").display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    cfg
}

/// `watchpost test --format jsonl`: (line number, why) of every flagged verdict of `filter`.
fn flagged(cfg: &Path, input: &Path, filter: &str) -> Vec<(u64, String)> {
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
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["anomaly_filter"] == filter && v["anomaly"] == true)
        .map(|v| {
            (
                v["origin"]["offset"].as_u64().unwrap(),
                v["why"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// Byte offset of line `n` (0-based) in `lines` as written by `write_lines`.
fn offset_of(lines: &[String], n: usize) -> u64 {
    lines[..n].iter().map(|l| l.len() as u64 + 1).sum()
}

const RDP: &str = r#"
[[filter]]
name = "rdp-source-ip"
match = { event_id = "4624", LogonType = "10" }
anomaly = { key = ["TargetUserName"], value = ["IpAddress"], learning = "14d", learn_per_key = PER_KEY }

[[filter]]
name = "alert"
match = { source = "security" }
anomaly = "only"
require_ack = true
"#;

#[test]
fn rdp_logon_from_a_new_ip_with_and_without_learn_per_key() {
    let lines = vec![
        logon(1, "ws1", "alice", "10.0.0.1", "10"), // 0: learning starts (day 1)
        logon(3, "ws1", "alice", "10.0.0.2", "10"), // 1: learning: recorded
        logon(5, "ws1", "bob", "10.0.0.5", "2"),    // 2: not RDP: not judged
        logon(16, "ws1", "alice", "10.0.0.1", "10"), // 3: after learning, known
        logon(16, "ws1", "alice", "10.6.6.6", "10"), // 4: after learning, new IP: flagged
        logon(17, "ws1", "alice", "10.6.6.6", "10"), // 5: now known
        logon(18, "ws1", "carol", "10.0.0.9", "10"), // 6: new user after learning
        logon(19, "ws1", "carol", "10.0.0.8", "10"), // 7: carol's second IP
        logon(2, "ws2", "alice", "10.6.6.6", "10"), // 8: another host learns on its own
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rdp.jsonl");
    write_lines(&input, &lines);

    let cfg = config(dir.path(), &RDP.replace("PER_KEY", "false"));
    let got = flagged(&cfg, &input, "rdp-source-ip");
    let at: Vec<u64> = got.iter().map(|g| g.0).collect();
    // Without learn_per_key a new user after learning is itself an anomaly (new key), and
    // so is its second address.
    assert_eq!(
        at,
        [
            offset_of(&lines, 4),
            offset_of(&lines, 6),
            offset_of(&lines, 7)
        ],
        "{got:?}"
    );
    assert!(got[0].1.starts_with("new value for key"), "{got:?}");
    assert!(got[1].1.starts_with("new key"), "{got:?}");

    let cfg = config(dir.path(), &RDP.replace("PER_KEY", "true"));
    let got = flagged(&cfg, &input, "rdp-source-ip");
    let at: Vec<u64> = got.iter().map(|g| g.0).collect();
    // With learn_per_key carol starts her own 14 days: neither of her addresses is flagged.
    assert_eq!(at, [offset_of(&lines, 4)], "{got:?}");

    // `test` says why the early events are not flagged, and the alert filter fires on the flag.
    let out = watchpost(&["test", "-c", cfg.to_str().unwrap(), input.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        text.contains("still learning until 2026-03-15T09:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains("== ANOMALY by `rdp-source-ip`: new value for key"),
        "{text}"
    );
    assert_eq!(
        text.matches("== filter `alert` fired  [anomaly]").count(),
        1,
        "{text}"
    );
}

#[test]
fn a_process_never_started_by_that_user_and_a_new_logon_type() {
    let procs = vec![
        process(1, "ws1", "alice", r"C:\Windows\explorer.exe"),
        process(1, "ws1", "bob", r"C:\Tools\backup.exe"),
        process(20, "ws1", "alice", r"C:\Windows\explorer.exe"), // known
        process(20, "ws1", "alice", r"C:\Tools\backup.exe"), // bob's process under alice: flagged
        process(20, "ws1", "bob", r"C:\Temp\mimikatz.exe"),  // new for bob: flagged
        process(21, "ws1", "alice", r"C:\Tools\backup.exe"), // known now
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("proc.jsonl");
    write_lines(&input, &procs);
    let cfg = config(
        dir.path(),
        r#"
[[filter]]
name = "process-per-user"
match = { event_id = "4688" }
anomaly = { key = ["SubjectUserName"], value = ["NewProcessName"], learning = "7d" }
"#,
    );
    let got = flagged(&cfg, &input, "process-per-user");
    let at: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(at, [offset_of(&procs, 3), offset_of(&procs, 4)], "{got:?}");

    let logons = vec![
        logon(1, "dc1", "svc-backup", "-", "5"),
        logon(2, "dc1", "alice", "10.0.0.1", "2"),
        logon(15, "dc1", "svc-backup", "-", "5"),
        logon(15, "dc1", "svc-backup", "10.0.0.3", "10"), // the service account logs on via RDP
        logon(15, "dc1", "alice", "10.0.0.1", "3"),       // alice over the network: new type too
    ];
    let input = dir.path().join("types.jsonl");
    write_lines(&input, &logons);
    let cfg = config(
        dir.path(),
        r#"
[[filter]]
name = "logon-type-per-user"
match = { event_id = "4624" }
anomaly = { key = ["TargetUserName"], value = ["LogonType"], learning = "10d" }
"#,
    );
    let got = flagged(&cfg, &input, "logon-type-per-user");
    let at: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        at,
        [offset_of(&logons, 3), offset_of(&logons, 4)],
        "{got:?}"
    );
}

// Stops the daemon with SIGTERM (`kill`): Unix only; the Windows daemon's stop is
// tested through the service (tests/service_windows.rs).
#[cfg(unix)]
#[test]
fn the_daemon_flags_what_the_replay_flags_stores_it_and_takes_acknowledgements() {
    // Three weeks of logons on two hosts, with new addresses now and then.
    let mut lines = Vec::new();
    for day in 1..=28u32 {
        for (host, users) in [("ws1", ["alice", "bob"]), ("ws2", ["carol", "dave"])] {
            for (u, user) in users.iter().enumerate() {
                let ip = if day % 9 == 0 && u == 0 {
                    format!("10.9.{day}.1")
                } else {
                    format!("10.0.{u}.1")
                };
                lines.push(logon(day, host, user, &ip, "10"));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let filters = RDP.replace("PER_KEY", "false").replace(
        "require_ack = true",
        "require_ack = true\nactions = [\"flag\"]",
    ) + &format!(
        "\n[[action]]\nname = \"flag\"\ntype = \"flag_file\"\npath = '{}'\ncontent = \"{{{{ TargetUserName }}}} from {{{{ IpAddress }}}}\"\n",
        dir.path().join("flags/anomaly").display()
    );
    let cfg = config(dir.path(), &filters);
    let replay_input = dir.path().join("replay.jsonl");
    write_lines(&replay_input, &lines);
    let mut expected: Vec<u64> = flagged(&cfg, &replay_input, "rdp-source-ip")
        .iter()
        .map(|g| g.0)
        .collect();
    expected.sort();
    assert_eq!(
        expected.len(),
        4,
        "day 9 is inside the 14 days of learning; days 18 and 27 on both hosts are not: {expected:?}"
    );

    // The daemon reads the same lines from a file it follows.
    let live = dir.path().join("logs/security.jsonl");
    write_lines(&live, &lines);
    let wp = Watchpost::start(&cfg, &dir.path().join("watchpost.log"));
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let stored = wait_for(
        "the daemon to store every judged event",
        Duration::from_secs(30),
        || {
            let out = watchpost(&[
                "events", "-c", &cfg_s, "--format", "jsonl", "--limit", "1000",
            ]);
            let n = stdout(&out).lines().count();
            (n == lines.len()).then_some(n)
        },
    );
    assert_eq!(stored, lines.len());
    assert!(wp.terminate());

    let out = watchpost(&["events", "-c", &cfg_s, "--anomaly", "--format", "jsonl"]);
    let anomalies: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut live_offsets: Vec<u64> = anomalies
        .iter()
        .map(|e| {
            e["origin"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    live_offsets.sort();
    assert_eq!(live_offsets, expected, "live flags equal replayed flags");
    for e in &anomalies {
        assert_eq!(e["filters"], json!(["rdp-source-ip", "alert"]));
        assert!(
            e["anomaly_why"]
                .as_str()
                .unwrap()
                .contains("rdp-source-ip: new value for key"),
            "{e}"
        );
        assert_eq!(e["needs_ack"], true);
        // The action's outcome is recorded with the event.
        assert_eq!(e["outcomes"][0]["action"], "flag", "{e}");
        assert_eq!(e["outcomes"][0]["ok"], true, "{e}");
    }

    // Acknowledge one: it leaves the pending list, with who and why.
    let first = anomalies[0]["id"].as_u64().unwrap().to_string();
    let out = watchpost(&[
        "ack",
        "-c",
        &cfg_s,
        "--by",
        "carol",
        "-m",
        "travel: hotel wifi",
        &first,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = watchpost(&["events", "-c", &cfg_s, "--pending-ack", "--format", "jsonl"]);
    let pending: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pending.len(), anomalies.len() - 1);
    let out = watchpost(&["events", "-c", &cfg_s, &format!("id:{first}")]);
    let text = stdout(&out);
    assert!(text.contains("acked by carol"), "{text}");
    assert!(text.contains("ack comment: travel: hotel wifi"), "{text}");
    // Acknowledging twice is refused.
    let out = watchpost(&["ack", "-c", &cfg_s, "-m", "again", &first]);
    assert_eq!(out.status.code(), Some(1));
    // Query terms.
    let out = watchpost(&[
        "events",
        "-c",
        &cfg_s,
        "--format",
        "jsonl",
        "isanomaly:true",
        "host:ws2",
    ]);
    let n = stdout(&out).lines().count();
    assert!(n >= 1, "ws2 has flags too");

    // The baseline the daemon built: list, explain, export → import into a fresh one.
    let out = watchpost(&["baseline", "-c", &cfg_s, "list"]);
    let text = stdout(&out);
    assert!(text.contains("rdp-source-ip  host ws1: detecting; learning 2026-03-01T09:00:00Z → 2026-03-15T09:00:00Z"), "{text}");
    let out = watchpost(&[
        "baseline",
        "-c",
        &cfg_s,
        "explain",
        "rdp-source-ip",
        "ws1",
        "alice",
    ]);
    let text = stdout(&out);
    assert!(text.contains("10.9.9.1"), "{text}");
    assert!(text.contains("first seen 2026-03-09T09:00:00Z"), "{text}");
    let export = dir.path().join("baseline.jsonl");
    let out = watchpost(&[
        "baseline",
        "-c",
        &cfg_s,
        "export",
        "--output",
        export.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = watchpost(&["baseline", "-c", &cfg_s, "reset", "rdp-source-ip"]);
    assert!(
        stdout(&out).contains("discarded 2 baseline(s)"),
        "{}",
        stdout(&out)
    );
    let out = watchpost(&["baseline", "-c", &cfg_s, "list"]);
    assert!(
        stdout(&out).contains("no baselines yet"),
        "{}",
        stdout(&out)
    );
    let out = watchpost(&["baseline", "-c", &cfg_s, "import", export.to_str().unwrap()]);
    assert!(stdout(&out).contains("imported"), "{}", stdout(&out));
    let out = watchpost(&[
        "baseline",
        "-c",
        &cfg_s,
        "explain",
        "rdp-source-ip",
        "ws1",
        "alice",
    ]);
    assert!(stdout(&out).contains("10.9.9.1"), "{}", stdout(&out));

    // `baseline learn` seeds from history without acting: afterwards nothing in it is new.
    let out = watchpost(&["baseline", "-c", &cfg_s, "reset", "rdp-source-ip"]);
    assert!(out.status.success());
    let out = watchpost(&[
        "baseline",
        "-c",
        &cfg_s,
        "learn",
        replay_input.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{} events judged", lines.len())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} would have been flagged", expected.len())),
        "{text}"
    );
}

/// The shared EVTX fixtures through a logon baseline: `watchpost test` and
/// `watchpost baseline learn` agree on what is new, and a known case is flagged.
#[test]
fn evtx_fixtures_through_a_logon_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("evtx.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{}'

[[filter]]
name = "logon-source"
match = {{ source = "evtx", event_id = "4624" }}
anomaly = {{ key = ["TargetUserName"], value = ["IpAddress"], learning = "1h" }}
"#,
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut files: Vec<String> = Vec::new();
    let root = common::fixture("evtx");
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "evtx") {
                files.push(p.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    let cfg_s = cfg.to_str().unwrap();
    let mut args = vec!["test", "-c", cfg_s, "--format", "jsonl"];
    args.extend(files.iter().map(String::as_str));
    let out = watchpost(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flagged: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["anomaly_filter"] == "logon-source" && v["anomaly"] == true)
        .collect();
    assert!(flagged.len() >= 5, "{flagged:?}");
    // On the host of this sample, a second address for a known user after the hour of
    // learning is a new value for that key.
    let case = flagged
        .iter()
        .find(|v| {
            v["origin"]["file"]
                .as_str()
                .unwrap()
                .ends_with("remote_sam_registry_access_via_backup_operator_priv.evtx")
                && v["why"].as_str().unwrap().starts_with("new value for key")
        })
        .unwrap_or_else(|| panic!("{flagged:#?}"));
    assert_eq!(case["host"], "01566s-win16-ir.threebeesco.com");

    let mut args = vec!["baseline", "-c", cfg_s, "learn"];
    args.extend(files.iter().map(String::as_str));
    let out = watchpost(&args);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{} would have been flagged", flagged.len())),
        "{text}"
    );
}
