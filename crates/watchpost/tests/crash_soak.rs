//! Crash soak: lines written at a steady rate into a file rotated by rename every 100
//! lines, watchpost killed with SIGKILL dozens of times and started again. Every line
//! must arrive, over UDP syslog (sent by the thread that read the line) and over TCP
//! syslog (through the on-disk retry queue); what a restart sends again is counted per
//! kill and must stay within what was in flight when the process died: the batch being
//! handled and the jobs not yet sent or queued on disk (a handful of lines at this rate),
//! not everything since the last checkpoint.
//!
//! `WATCHPOST_SOAK_SECS` (default 45) sets the duration, `WATCHPOST_SOAK_BIN` another
//! binary to soak (to compare builds).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")] // SIGKILL, stable inode identities, a forced UDP buffer size

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Watchpost, wait_for};

/// Lines written per second.
const RATE: u32 = 300;
/// Lines per file before it is renamed.
const ROTATE_EVERY: u32 = 100;
/// Most duplicates one kill may cause: in flight at this rate are a few lines; this is a
/// third of a second of traffic, allowing for a test machine that stalls the process.
const MAX_DUPLICATES_PER_KILL: usize = 100;

/// (run, line id) pairs received.
type Seen = Arc<Mutex<Vec<(u32, u32)>>>;

fn parse(msg: &str) -> Option<(u32, u32)> {
    let run = msg.split("RUN=").nth(1)?;
    let run: u32 = run
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let id = msg.split("ID=").nth(1)?;
    let id: u32 = id
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((run, id))
}

fn udp_receiver(seen: Seen) -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The test's threads may be starved on a busy machine: a buffer of minutes of traffic.
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, 16 << 20).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 16 << 20);
    }
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            if let Some(p) = parse(&String::from_utf8_lossy(&buf[..n])) {
                seen.lock().unwrap().push(p);
            }
        }
    });
    port
}

fn tcp_receiver(seen: Seen) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    if let Some(p) = parse(&line) {
                        seen.lock().unwrap().push(p);
                    }
                }
            });
        }
    });
    port
}

fn config(dir: &Path, udp: u16, tcp: u16) -> PathBuf {
    let path = dir.join("wp.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[agent]
state_dir = "{state}"

[[source]]
name = "soak"
type = "text"
path = "{logs}/auth.log*"
start_at = "beginning"

[[filter]]
name = "all"
match = {{ source = "soak", message = {{ contains = "soak line" }} }}
actions = ["udp", "tcp"]

[[action]]
name = "udp"
type = "syslog"
target = "udp://127.0.0.1:{udp}"
format = "rfc3164"
message = "RUN=${{WP_RUN:-0}} {{{{ message }}}}"

[[action]]
name = "tcp"
type = "syslog"
target = "tcp://127.0.0.1:{tcp}"
framing = "lf"
format = "rfc3164"
message = "RUN=${{WP_RUN:-0}} {{{{ message }}}}"
"#,
            state = dir.join("state").display(),
            logs = dir.join("logs").display(),
        ),
    )
    .unwrap();
    path
}

fn start(bin: &Path, config: &Path, log: &Path, run: u32) -> Watchpost {
    Watchpost::start_bin(bin, config, log, &[("WP_RUN", &run.to_string())])
}

/// Duplicates caused by each kill: the copies a run received of lines delivered before,
/// by an earlier run or by itself (a TCP job on disk when the process died is delivered
/// from the retry queue and, if its line's progress was not yet saved, read again). The
/// first run, before any kill, must deliver every line once.
fn duplicates_per_kill(seen: &[(u32, u32)], runs: u32, what: &str) -> Vec<usize> {
    let mut by_run: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(run, id) in seen {
        by_run.entry(run).or_default().push(id);
    }
    let mut before: HashSet<u32> = HashSet::new();
    let mut out = Vec::new();
    for run in 0..runs {
        let ids = by_run.remove(&run).unwrap_or_default();
        let copies = ids.len();
        let mut new = 0;
        for id in ids {
            new += usize::from(before.insert(id));
        }
        if run == 0 {
            assert_eq!(copies, new, "{what}: the first run delivered a line twice");
        } else {
            out.push(copies - new);
        }
    }
    out
}

#[test]
fn sigkill_dozens_of_times_every_line_arrives_and_repeats_stay_in_flight() {
    let secs: u32 = std::env::var("WATCHPOST_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let bin: PathBuf = std::env::var_os("WATCHPOST_SOAK_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_watchpost").into(), PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (udp_seen, tcp_seen): (Seen, Seen) = Default::default();
    let cfg = config(
        dir.path(),
        udp_receiver(udp_seen.clone()),
        tcp_receiver(tcp_seen.clone()),
    );
    let log = dir.path().join("wp.log");
    let total = secs * RATE;

    let mut run = 0;
    let mut child = start(&bin, &cfg, &log, run);
    let written = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done, logs) = (written.clone(), done.clone(), logs.clone());
        std::thread::spawn(move || {
            let file = logs.join("auth.log");
            let started = Instant::now();
            for id in 0..total {
                let due = started + Duration::from_secs_f64(f64::from(id) / f64::from(RATE));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&file)
                    .unwrap();
                writeln!(f, "Dec  7 05:00:00 soak app[7]: soak line ID={id}").unwrap();
                drop(f);
                written.store(id + 1, Ordering::Relaxed);
                if (id + 1) % ROTATE_EVERY == 0 {
                    let n = (id + 1) / ROTATE_EVERY;
                    std::fs::rename(&file, logs.join(format!("auth.log.{n:05}"))).unwrap();
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    // Kill at uneven moments, 0.6–1.8 s apart.
    let mut kills = 0;
    let mut x: u32 = 12345;
    while !done.load(Ordering::Relaxed) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        std::thread::sleep(Duration::from_millis(600 + u64::from(x >> 16) % 1200));
        if done.load(Ordering::Relaxed) {
            break;
        }
        child.kill9();
        kills += 1;
        run += 1;
        child = start(&bin, &cfg, &log, run);
    }
    writer.join().unwrap();
    assert_eq!(written.load(Ordering::Relaxed), total);
    let all_in = |seen: &Seen| {
        let got: HashSet<u32> = seen.lock().unwrap().iter().map(|p| p.1).collect();
        (got.len() as u32 >= total).then_some(())
    };
    wait_for("every line over UDP", Duration::from_secs(60), || {
        all_in(&udp_seen)
    });
    wait_for("every line over TCP", Duration::from_secs(60), || {
        all_in(&tcp_seen)
    });
    assert!(child.terminate(), "clean stop");
    assert!(kills >= 20, "only {kills} kills in {secs} s");

    let runs = run + 1;
    for (what, seen) in [("udp", &udp_seen), ("tcp", &tcp_seen)] {
        let seen = seen.lock().unwrap().clone();
        let got: HashSet<u32> = seen.iter().map(|p| p.1).collect();
        for id in 0..total {
            assert!(got.contains(&id), "{what}: line {id} was lost");
        }
        let per_kill = duplicates_per_kill(&seen, runs, what);
        let sum: usize = per_kill.iter().sum();
        let max = per_kill.iter().copied().max().unwrap_or(0);
        let mut hist: HashMap<usize, usize> = HashMap::new();
        for d in &per_kill {
            *hist.entry(*d).or_default() += 1;
        }
        let mut hist: Vec<_> = hist.into_iter().collect();
        hist.sort();
        println!(
            "{what}: {total} lines, {kills} kills, duplicates {sum} ({:.2} per kill, max {max}); kills by duplicates: {hist:?}",
            sum as f64 / f64::from(kills)
        );
        assert!(
            max <= MAX_DUPLICATES_PER_KILL,
            "{what}: a kill caused {max} duplicates: {per_kill:?}"
        );
    }
}
