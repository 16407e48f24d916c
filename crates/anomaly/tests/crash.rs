//! `kill -9` during heavy learning: the test re-runs its own binary as a child that learns
//! at full speed (flushing explicitly and reporting each completed flush on stdout, while a
//! background flusher and snapshot rewrites also run), kills it, reopens the directory and
//! checks that every pair up to the last reported flush is there and learning continues.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use watchpost_anomaly::{AnomalySpec, Baselines, Options, Verdict};

const CHILD_ENV: &str = "WATCHPOST_ANOMALY_CRASH_CHILD";

fn spec() -> AnomalySpec {
    AnomalySpec::new(["user"], ["process"])
}

fn opts() -> Options {
    Options {
        flush_interval: Some(Duration::from_millis(20)),
        snapshot_min_changes: 20_000,
        ..Options::default()
    }
}

fn pair(i: u64) -> (String, String) {
    (format!("user{}", i % 97), format!(r"C:\bin\tool{i}.exe"))
}

fn t(i: u64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_772_352_000 + i as i64 / 100).unwrap())
}

fn child(dir: &str) {
    let b = Baselines::open(dir, opts()).unwrap();
    let f = b.filter("procs", &spec()).unwrap().id;
    for i in 0u64.. {
        let (u, p) = pair(i);
        b.check(f, "host", &[&u], &[&p], t(i));
        if i % 1500 == 1499 {
            b.flush().unwrap();
            println!("flushed {}", i + 1);
        }
    }
}

#[test]
fn kill_9_during_learning_keeps_everything_flushed() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_during_learning_keeps_everything_flushed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(kid.stdout.take().unwrap()).lines();
    let mut flushed = 0u64;
    while flushed < 30_000 {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("flushed ") {
            flushed = n.trim().parse().unwrap();
        }
    }
    kid.kill().unwrap(); // SIGKILL on Unix, TerminateProcess on Windows
    kid.wait().unwrap();
    // Lines the child printed after we stopped reading still count as flushed.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("flushed ") {
            flushed = flushed.max(n.trim().parse().unwrap());
        }
    }

    let b = Baselines::open(dir.path(), opts()).unwrap();
    let f = b.filter("procs", &spec()).unwrap().id;
    let s = b.stats();
    assert!(
        s.pairs >= flushed,
        "{} pairs on disk, {flushed} reported flushed",
        s.pairs
    );
    for i in 0..flushed {
        let (u, p) = pair(i);
        assert!(
            b.contains(f, "host", &[&u], &[&p]),
            "pair {i} of {flushed} lost"
        );
    }
    // It continues: still learning (14 days from the first event), new pairs are recorded.
    assert!(matches!(
        b.check(f, "host", &["user1"], &["new.exe"], t(flushed + 10)),
        Verdict::Learning { .. }
    ));
    b.flush().unwrap();
    let explained = b.explain("procs", "host", &["user1"]).unwrap();
    assert_eq!(explained.learning_started, t(0));
    assert!(explained.values.iter().any(|v| v.value == ["new.exe"]));
    b.close().unwrap();
    let b = Baselines::open(dir.path(), opts()).unwrap();
    assert!(b.stats().opened_from_snapshot);
    assert_eq!(b.stats().pairs, s.pairs + 1);
}
