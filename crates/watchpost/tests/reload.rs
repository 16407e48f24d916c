//! Reloading the configuration of a running daemon: SIGHUP, `watchpost reload`, `[agent]
//! watch_config`; a rejected configuration changes nothing; what carries over (positions,
//! threshold windows, anomaly baselines, a durable queue, metrics); 100 reloads under load
//! lose and repeat nothing.
//!
//! Unix only: signals and `kill`.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Watchpost, append, wait_for};
use serde_json::{Value, json};

/// The sections of a test configuration; `extra` goes at the end.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("watchpost.toml");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let text = format!(
        r#"[agent]
state_dir = '{d}/state'
checkpoint_interval_ms = 100
log_fired = false

[store]
enabled = false

[[source]]
name = "security"
type = "jsonl"
path = '{d}/logs/*.jsonl'
start_at = "beginning"

[[filter]]
name = "logons"
match = {{ event_id = "4624" }}
actions = ["out1"]

[[action]]
name = "out1"
type = "jsonl_file"
path = '{d}/out1.jsonl'
{extra}"#,
        d = dir.display()
    );
    // Replaced in one step, as an editor or a configuration tool does.
    let tmp = dir.join("watchpost.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    cfg
}

/// The second filter and action a reload adds.
fn second(dir: &Path) -> String {
    format!(
        r#"
[[filter]]
name = "failures"
match = {{ event_id = "4625" }}
actions = ["out2"]

[[action]]
name = "out2"
type = "jsonl_file"
path = '{}/out2.jsonl'
"#,
        dir.display()
    )
}

fn line(seq: u64, event_id: &str) -> String {
    format!(
        "{}\n",
        json!({ "event_id": event_id, "seq": seq, "host": "h1" })
    )
}

/// The `seq` of every line of a jsonl_file action's output.
fn seqs(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

fn watchpost(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(args)
        .env("WATCHPOST_LOG", "warn")
        .output()
        .expect("run watchpost")
}

fn hup(wp: &Watchpost) {
    let pid = wp.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits until the daemon's log has `n` lines containing `what`.
fn wait_log(wp: &Watchpost, what: &str, n: usize) {
    wait_for(what, Duration::from_secs(20), || {
        (wp.log_text().matches(what).count() >= n).then_some(())
    });
}

#[test]
fn sighup_adds_a_filter_and_an_action_and_keeps_the_source_running() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = write_config(dir, "");
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    append(
        &input,
        (0..5)
            .map(|i| line(i, "4624"))
            .collect::<String>()
            .as_bytes(),
    );
    let wp = Watchpost::start(&cfg, &log);
    wait_for("5 lines", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")).len() == 5).then_some(())
    });
    write_config(dir, &second(dir));
    hup(&wp);
    wait_log(&wp, "configuration reloaded", 1);
    let text = wp.log_text();
    assert!(
        text.contains("generation=2")
            && text.contains("filters: added failures")
            && text.contains("actions: added out2"),
        "{text}"
    );
    assert!(
        !text.contains("source stopped"),
        "the unchanged source kept running: {text}"
    );
    let mut more = String::new();
    for i in 5..10 {
        more.push_str(&line(i, "4624"));
        more.push_str(&line(100 + i, "4625"));
    }
    append(&input, more.as_bytes());
    wait_for("10 + 5 lines", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")).len() == 10 && seqs(&dir.join("out2.jsonl")).len() == 5)
            .then_some(())
    });
    // No line read twice, none skipped.
    assert_eq!(seqs(&dir.join("out1.jsonl")), (0..10).collect::<Vec<_>>());
    assert_eq!(
        seqs(&dir.join("out2.jsonl")),
        (105..110).collect::<Vec<_>>()
    );
    assert!(wp.terminate());
}

#[test]
fn watchpost_reload_applies_or_rejects_and_the_old_configuration_keeps_running() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(dir, "");
    // The metrics endpoint is configured through [agent]: rewrite the head.
    let with_metrics = |extra: &str| {
        write_config(dir, extra);
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(
            &cfg,
            text.replacen(
                "log_fired = false\n",
                &format!("log_fired = false\nmetrics = \"{port}\"\n"),
                1,
            ),
        )
        .unwrap();
    };
    with_metrics("");
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    let wp = Watchpost::start(&cfg, &log);
    append(&input, line(1, "4624").as_bytes());
    wait_for("line 1", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")) == [1]).then_some(())
    });
    let cfg_arg = cfg.to_str().unwrap();

    // A mistake: rejected, every diagnostic printed with its place, nothing changes.
    with_metrics(
        "\n[[filter]]\nname = \"bad\"\nmatch = { event_id = \"1\" }\nactions = [\"nope\"]\n",
    );
    let out = watchpost(&["reload", "-c", cfg_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let at = format!("{cfg_arg}:");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&at) && l.contains("error:") && l.contains("nope")),
        "{stderr}"
    );
    assert!(stderr.contains("generation 1 keeps running"), "{stderr}");
    append(&input, line(2, "4624").as_bytes());
    wait_for(
        "line 2 with the old configuration",
        Duration::from_secs(20),
        || (seqs(&dir.join("out1.jsonl")) == [1, 2]).then_some(()),
    );
    let text = wp.log_text();
    assert!(text.contains("configuration reload rejected"), "{text}");
    assert!(text.contains(":8:") || text.contains("nope"), "{text}");

    // A good one: applied, exit 0, the generation in the answer and the metrics.
    with_metrics(&second(dir));
    let out = watchpost(&["reload", "-c", cfg_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("configuration applied: generation 2"),
        "{stdout}"
    );
    // The same again: nothing to do.
    let out = watchpost(&["reload", "-c", cfg_arg]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));

    append(&input, line(3, "4624").as_bytes());
    wait_for("line 3", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")) == [1, 2, 3]).then_some(())
    });
    let body = scrape(port);
    for (series, want) in [
        ("watchpost_config_generation", 2.0),
        ("watchpost_config_reloads_total{outcome=\"applied\"}", 1.0),
        ("watchpost_config_reloads_total{outcome=\"rejected\"}", 1.0),
        ("watchpost_config_reloads_total{outcome=\"unchanged\"}", 1.0),
        // Counted across generations, not from zero again.
        ("watchpost_source_records_total{source=\"security\"}", 3.0),
        ("watchpost_filter_fired_total{source=\"security\"}", 3.0),
    ] {
        assert_eq!(sample(&body, series), Some(want), "{series}\n{body}");
    }
    assert!(sample(&body, "watchpost_config_last_reload_timestamp_seconds").unwrap() > 1.7e9);
    assert!(wp.terminate());
}

#[test]
fn a_reload_that_cannot_read_the_file_or_loses_its_rules_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("r.yml"),
        "title: seq rule\nlogsource:\n  product: test\ndetection:\n  s:\n    event_id: '4624'\n  condition: s\nlevel: high\n",
    )
    .unwrap();
    let sigma = format!(
        "\n[[rules]]\nname = \"sigma\"\nsigma = '{}'\nactions = [\"out1\"]\n",
        rules.display()
    );
    let cfg = write_config(dir, &sigma);
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    let wp = Watchpost::start(&cfg, &log);
    append(&input, line(1, "4624").as_bytes());
    // The filter and the rule both fire.
    wait_for("two jobs", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")) == [1, 1]).then_some(())
    });
    // The rule folder vanishes: the reload is rejected, the rules keep running.
    std::fs::remove_dir_all(&rules).unwrap();
    let out = watchpost(&["reload", "-c", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Sigma rule loaded"), "{stderr}");
    // The file cannot be read (SIGHUP: the daemon re-reads its own file).
    let saved = std::fs::read_to_string(&cfg).unwrap();
    std::fs::remove_file(&cfg).unwrap();
    hup(&wp);
    wait_log(&wp, "configuration reload rejected", 2);
    assert!(wp.log_text().contains("cannot read the configuration"));
    append(&input, line(2, "4624").as_bytes());
    wait_for("two more jobs", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")) == [1, 1, 2, 2]).then_some(())
    });
    std::fs::write(&cfg, saved).unwrap();
    assert!(wp.terminate());
}

#[test]
fn watch_config_reloads_when_the_file_changes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = dir.join("watchpost.toml");
    let watched = |extra: &str| {
        write_config(dir, extra);
        let t = std::fs::read_to_string(&cfg).unwrap();
        let t = t.replacen(
            "log_fired = false\n",
            "log_fired = false\nwatch_config = true\n",
            1,
        );
        let tmp = dir.join("x.new");
        std::fs::write(&tmp, t).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    };
    watched("");
    let log = dir.join("watchpost.log");
    let wp = Watchpost::start(&cfg, &log);
    watched(&second(dir));
    wait_log(&wp, "configuration reloaded", 1);
    let input = dir.join("logs/a.jsonl");
    append(&input, line(7, "4625").as_bytes());
    wait_for("the new filter's job", Duration::from_secs(20), || {
        (seqs(&dir.join("out2.jsonl")) == [7]).then_some(())
    });
    assert!(wp.terminate());
}

#[test]
fn threshold_windows_carry_over_unless_their_definition_changed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let threshold = |count: u32, extra: &str| {
        format!(
            r#"
[[filter]]
name = "guessing"
match = {{ event_id = "4625" }}
threshold = {{ count = {count}, within = "1h" }}
actions = ["out2"]

[[action]]
name = "out2"
type = "jsonl_file"
path = '{}/out2.jsonl'
{extra}"#,
            dir.display()
        )
    };
    let cfg = write_config(dir, &threshold(3, ""));
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    let wp = Watchpost::start(&cfg, &log);
    append(
        &input,
        format!("{}{}", line(1, "4625"), line(2, "4625")).as_bytes(),
    );
    // Both matches counted (the windows are saved with the checkpoints).
    wait_for("two matches in the window", Duration::from_secs(20), || {
        let t = std::fs::read_to_string(dir.join("state/thresholds.json")).ok()?;
        let times = t.split("\"times\":[").nth(1)?.split(']').next()?;
        (times.split(',').count() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    // An unrelated change: the window (2 of 3) carries over.
    write_config(
        dir,
        &threshold(
            3,
            "\n[[action]]\nname = \"unused\"\ntype = \"flag_file\"\npath = '/tmp/x'\n",
        ),
    );
    hup(&wp);
    wait_log(&wp, "configuration reloaded", 1);
    append(&input, line(3, "4625").as_bytes());
    wait_for("the third match fires", Duration::from_secs(20), || {
        (seqs(&dir.join("out2.jsonl")) == [3]).then_some(())
    });
    // The threshold's definition changes: its windows start afresh.
    write_config(dir, &threshold(2, ""));
    hup(&wp);
    wait_log(&wp, "configuration reloaded", 2);
    append(&input, line(4, "4625").as_bytes());
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        seqs(&dir.join("out2.jsonl")),
        [3],
        "one match of a fresh window of 2"
    );
    append(&input, line(5, "4625").as_bytes());
    wait_for(
        "the second match of the new window",
        Duration::from_secs(20),
        || (seqs(&dir.join("out2.jsonl")) == [3, 5]).then_some(()),
    );
    assert!(wp.terminate());
}

#[test]
fn anomaly_baselines_carry_over_unless_their_key_or_value_changed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // An anomaly filter (learning one hour of event time) and a filter acting on what it
    // flags; `extra` is what a reload changes.
    let anomaly = |key: &str, extra: &str| {
        format!(
            r#"
[[filter]]
name = "new-address"
match = {{ event_id = "4625" }}
anomaly = {{ key = {key}, value = ["ip"], learning = "1h" }}

[[filter]]
name = "alert"
match = {{ source = "security" }}
anomaly = "only"
actions = ["out2"]

[[action]]
name = "out2"
type = "jsonl_file"
path = '{}/out2.jsonl'
{extra}"#,
            dir.display()
        )
    };
    let at = |seq: u64, hours: i64, ip: &str| {
        let t = jiff::Timestamp::from_second(1_700_000_000 + hours * 3600).unwrap();
        format!(
            "{}\n",
            json!({ "event_id": "4625", "seq": seq, "host": "h1", "time": t.to_string(), "user": "alice", "ip": ip })
        )
    };
    let cfg = write_config(dir, &anomaly(r#"["user"]"#, ""));
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    let out2 = dir.join("out2.jsonl");
    let wp = Watchpost::start(&cfg, &log);
    // Learned during the first hour; a new address after it is flagged.
    append(
        &input,
        format!("{}{}", at(1, 0, "10.0.0.1"), at(2, 2, "10.0.0.2")).as_bytes(),
    );
    wait_for("the new address flagged", Duration::from_secs(20), || {
        (seqs(&out2) == [2]).then_some(())
    });
    // An unrelated change: the baseline carries over with its pairs and its clock, so a
    // learned address is known and a new one is flagged at once (a fresh baseline would
    // be learning again and flag neither).
    write_config(
        dir,
        &anomaly(
            r#"["user"]"#,
            "\n[[action]]\nname = \"unused\"\ntype = \"flag_file\"\npath = '/tmp/x'\n",
        ),
    );
    hup(&wp);
    wait_log(&wp, "configuration reloaded", 1);
    append(
        &input,
        format!("{}{}", at(3, 3, "10.0.0.1"), at(4, 3, "10.0.0.3")).as_bytes(),
    );
    wait_for(
        "only the unknown address flagged",
        Duration::from_secs(20),
        || (seqs(&out2) == [2, 4]).then_some(()),
    );
    assert!(
        !wp.log_text().contains("fresh baseline"),
        "{}",
        wp.log_text()
    );
    // The key changes: the filter's baseline starts afresh, logged. Its first match starts
    // a new hour of learning; after it, an address the old baseline knew is new.
    write_config(dir, &anomaly("[]", ""));
    hup(&wp);
    wait_log(&wp, "configuration reloaded", 2);
    wait_log(
        &wp,
        "anomaly definition changed: starting a fresh baseline",
        1,
    );
    append(
        &input,
        format!("{}{}", at(5, 4, "10.0.0.5"), at(6, 6, "10.0.0.1")).as_bytes(),
    );
    wait_for(
        "the old address flagged by the fresh baseline",
        Duration::from_secs(20),
        || (seqs(&out2) == [2, 4, 6]).then_some(()),
    );
    assert!(wp.terminate());
}

#[test]
fn a_changed_source_continues_from_its_checkpoint_and_signals_arriving_together_coalesce() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = write_config(dir, "");
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    let wp = Watchpost::start(&cfg, &log);
    append(
        &input,
        (0..50)
            .map(|i| line(i, "4624"))
            .collect::<String>()
            .as_bytes(),
    );
    wait_for("50 lines", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")).len() == 50).then_some(())
    });
    // The source's definition changes (an exclude pattern): it stops at a checkpoint and
    // starts again from it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let changed = text.replacen(
        "start_at = \"beginning\"\n",
        "start_at = \"beginning\"\nexclude = [\"*.gz\"]\n",
        1,
    );
    std::fs::write(&cfg, &changed).unwrap();
    // Three signals at once: one reload (or two) serves them all.
    for _ in 0..3 {
        hup(&wp);
    }
    wait_log(&wp, "configuration reloaded", 1);
    append(
        &input,
        (50..100)
            .map(|i| line(i, "4624"))
            .collect::<String>()
            .as_bytes(),
    );
    wait_for("100 lines", Duration::from_secs(20), || {
        (seqs(&dir.join("out1.jsonl")).len() >= 100).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seqs(&dir.join("out1.jsonl")), (0..100).collect::<Vec<_>>());
    let text = wp.log_text();
    assert!(text.contains("sources: changed security"), "{text}");
    assert!(
        text.contains("tail totals"),
        "the changed source was stopped: {text}"
    );
    let reloads = text.matches("configuration reloaded generation=").count();
    let unchanged = text
        .matches("configuration reloaded: nothing changed")
        .count();
    assert!(
        reloads == 1 && unchanged <= 2,
        "{reloads} applied, {unchanged} unchanged:\n{text}"
    );
    assert!(wp.terminate());
}

/// A TCP syslog receiver (octet counting) that is down until started.
fn receive_frames(listener: TcpListener, until: usize) -> Vec<String> {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    while frames.len() < until {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "peer closed after {frames:?}");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
            if buf.len() < sp + 1 + len {
                break;
            }
            frames.push(String::from_utf8_lossy(&buf[sp + 1..sp + 1 + len]).into_owned());
            buf.drain(..sp + 1 + len);
        }
    }
    frames
}

#[test]
fn a_changed_durable_action_keeps_its_queued_jobs() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A port nobody listens on yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let action = |msg: &str| {
        format!(
            r#"
[[filter]]
name = "failures"
match = {{ event_id = "4625" }}
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "tcp://127.0.0.1:{port}"
message = "{msg} {{{{ seq }}}}"
retry = {{ initial_backoff = "100ms", max_backoff = "200ms" }}
"#
        )
    };
    let cfg = write_config(dir, &action("old"));
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    let wp = Watchpost::start(&cfg, &log);
    append(
        &input,
        (1..=3)
            .map(|i| line(i, "4625"))
            .collect::<String>()
            .as_bytes(),
    );
    // Queued on disk while the receiver is down.
    wait_for("three queued jobs", Duration::from_secs(20), || {
        let q = dir.join("state/queue/siem");
        let bytes: u64 = std::fs::read_dir(&q)
            .ok()?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum();
        (bytes > 0 && wp.log_text().contains("will retry")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    // The action changes (its message): same name, same queue.
    write_config(dir, &action("new"));
    hup(&wp);
    wait_log(&wp, "configuration reloaded", 1);
    append(&input, line(4, "4625").as_bytes());
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let frames = receive_frames(listener, 4);
    let tail: Vec<String> = frames
        .iter()
        .map(|f| f.rsplit(": ").next().unwrap_or(f).to_owned())
        .collect();
    assert_eq!(frames.len(), 4, "{frames:?}");
    // The queued jobs keep their order; the new definition renders them.
    let seqs: Vec<&str> = tail.iter().map(|t| t.rsplit(' ').next().unwrap()).collect();
    assert_eq!(seqs, ["1", "2", "3", "4"], "{frames:?}");
    assert!(frames.iter().all(|f| f.contains("new ")), "{frames:?}");
    assert!(wp.terminate());
}

/// 100 reloads that alternate between two configurations (one adds a filter and an
/// action, the other removes them) while lines stream in: every line reaches the
/// unchanged action exactly once.
#[test]
fn hundred_reloads_under_load_lose_and_repeat_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = write_config(dir, "");
    let log = dir.join("watchpost.log");
    let input = dir.join("logs/a.jsonl");
    let wp = Watchpost::start(&cfg, &log);
    let total: u64 = 200_000;
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&input)
                .unwrap();
            let mut batch = String::new();
            for i in 0..total {
                batch.push_str(&line(i, if i % 2 == 0 { "4624" } else { "4625" }));
                if i % 500 == 499 {
                    f.write_all(batch.as_bytes()).unwrap();
                    batch.clear();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            f.write_all(batch.as_bytes()).unwrap();
        })
    };
    let cfg_arg = cfg.to_str().unwrap().to_owned();
    let started = Instant::now();
    let mut took = Vec::new();
    for n in 0..100 {
        write_config(
            dir,
            if n % 2 == 0 {
                second(dir)
            } else {
                String::new()
            }
            .as_str(),
        );
        let t = Instant::now();
        let out = watchpost(&["reload", "-c", &cfg_arg]);
        took.push(t.elapsed());
        assert!(
            out.status.success(),
            "reload {n}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reloading = started.elapsed();
    writer.join().unwrap();
    let want = (total / 2) as usize;
    wait_for("every 4624 line", Duration::from_secs(120), || {
        (seqs(&dir.join("out1.jsonl")).len() >= want).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut count: HashMap<u64, u32> = HashMap::new();
    for s in seqs(&dir.join("out1.jsonl")) {
        *count.entry(s).or_default() += 1;
    }
    let lost: Vec<u64> = (0..total)
        .step_by(2)
        .filter(|s| !count.contains_key(s))
        .collect();
    let twice: Vec<u64> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        lost.is_empty(),
        "{} lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(twice.is_empty(), "{} delivered twice", twice.len());
    let log_text = wp.log_text();
    assert_eq!(
        log_text.matches("configuration reloaded").count(),
        100,
        "every reload applied"
    );
    took.sort();
    eprintln!(
        "100 reloads in {reloading:?} while {total} lines streamed in; `watchpost reload` round trip p50 {:?}, max {:?}",
        took[50], took[99]
    );
    assert!(wp.terminate());
}

/// Sends a request to the metrics endpoint and returns the body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of the sample `series` (name with labels) in a scrape.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
