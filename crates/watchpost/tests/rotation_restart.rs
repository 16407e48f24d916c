//! The binary under rotation, copytruncate, `kill -9` and clean restarts: every line
//! written comes out; after a clean restart none comes out twice; after a crash only the
//! lines since the last checkpoint may repeat.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // stops watchpost with `kill -TERM` (a Unix signal) and relies on stable file identities

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

struct Receiver {
    seen: Arc<Mutex<HashMap<u32, u32>>>,
    port: u16,
}

impl Receiver {
    /// A TCP syslog receiver (LF framing): unlike UDP it cannot lose a message when this
    /// test's threads are starved on a busy machine. Each watchpost run connects anew.
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = s2.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(conn).lines().map_while(Result::ok) {
                        if let Some(id) = line
                            .split("ID=")
                            .nth(1)
                            .and_then(|s| s.trim().parse::<u32>().ok())
                        {
                            *seen.lock().unwrap().entry(id).or_default() += 1;
                        }
                    }
                });
            }
        });
        Receiver { seen, port }
    }

    fn distinct(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn wait_for_all(&self, n: u32) {
        wait_for(
            &format!("{n} distinct lines"),
            Duration::from_secs(30),
            || (self.distinct() >= n as usize).then_some(()),
        );
    }
}

fn write_lines(path: &Path, ids: std::ops::Range<u32>) {
    let template = av_virus_found("pc", "Risk", "x");
    let mut buf = String::new();
    for id in ids {
        let mut cols: Vec<&str> = template.split(',').collect();
        let file = id.to_string();
        cols[7] = &file;
        buf.push_str(&cols.join(","));
        buf.push_str("\r\n");
        if buf.len() > 16 * 1024 {
            append(path, buf.as_bytes());
            buf.clear();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    append(path, buf.as_bytes());
}

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("wp.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[agent]
state_dir = "{state}"
checkpoint_interval_ms = 200
log_fired = false

[[source]]
name = "av"
type = "sep_av_log"
path = "{logs}/*.Log"

[[filter]]
name = "all-detections"
match = {{ event_code = 5 }}
actions = ["out"]

[[action]]
name = "out"
type = "syslog"
target = "tcp://127.0.0.1:{port}"
framing = "lf"
format = "rfc3164"
message = "ID={{{{ file_path }}}}"
"#,
            state = dir.join("state").display(),
            logs = dir.join("logs").display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn no_line_lost_across_rotation_truncation_crash_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let rx = Receiver::start();
    let cfg = config(dir.path(), rx.port);
    let file = logs.join("11222026.Log");
    let log = dir.path().join("wp.log");

    let wp = Watchpost::start(&cfg, &log);
    write_lines(&file, 0..300);
    // rename-and-create while the writer goes on
    std::fs::rename(&file, logs.join("11222026.Log.1")).unwrap();
    write_lines(&file, 300..600);
    rx.wait_for_all(600);
    // copytruncate
    std::fs::copy(&file, logs.join("11222026.Log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    write_lines(&file, 600..900);
    rx.wait_for_all(900);
    wp.kill9();
    // lines written while watchpost is down
    write_lines(&file, 900..1200);
    let wp = Watchpost::start(&cfg, &log);
    rx.wait_for_all(1200);
    let dupes_after_crash: Vec<u32> = rx
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        dupes_after_crash.iter().all(|id| *id < 900),
        "only lines before the crash may repeat: {dupes_after_crash:?}"
    );
    assert!(wp.terminate());
    let before_clean = rx.seen.lock().unwrap().clone();
    // a new daily file while down, then a clean restart
    write_lines(&logs.join("11232026.Log"), 1200..1300);
    let wp = Watchpost::start(&cfg, &log);
    write_lines(&file, 1300..1400);
    rx.wait_for_all(1400);
    assert!(wp.terminate());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log_text.matches("watchpost running").count(),
        3,
        "three runs: {log_text}"
    );
    assert_eq!(
        log_text.matches("watchpost stopped").count(),
        2,
        "two clean stops: {log_text}"
    );
    let seen = rx.seen.lock().unwrap().clone();
    for id in 0..1400 {
        assert!(seen.contains_key(&id), "line {id} was lost");
    }
    for (id, count) in &seen {
        let before = before_clean.get(id).copied().unwrap_or(0);
        assert_eq!(
            *count,
            before.max(1),
            "line {id} delivered again after a clean restart"
        );
    }
}
