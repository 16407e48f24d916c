//! watchpost beside rsyslog, in one run: the reaction to a lone line and a burst.
//!
//! Both follow a file and forward the lines a regular expression selects over UDP to a
//! socket of this bench. rsyslog runs `imfile` in inotify mode → `re_match` → `omfwd`
//! UDP, in a ruleset with a Direct queue (the action runs on the thread that read the
//! line); watchpost runs a `text` source, one filter with the same regular expression and
//! a `syslog` action over UDP, with its defaults otherwise (event store on, a log line
//! per firing). A third case follows a SEP AV log instead (one Auto-Protect filter).
//!
//! * **Lone lines**: a line is appended every 20 ms (`WATCHPOST_BENCH_LONE`, default 300,
//!   after 20 not counted); the time from its `write()` to its datagram at the bench's
//!   socket is recorded: p50 / p99 / max.
//! * **Burst**: 1,000,000 sshd lines (`WATCHPOST_BENCH_BURST`), 38 % of them failed
//!   logins, are in the file before the follower starts (from the beginning); the time
//!   from its start to the last datagram.
//!
//! Every case runs `WATCHPOST_BENCH_ROUNDS` times (default 3), alternating within each
//! round; the summary gives medians. `WATCHPOST_BIN_BEFORE=/path/to/watchpost` adds the
//! same watchpost cases for another binary (an earlier build), alternating with this one.
//! The load average is printed with each run. rsyslog is `/usr/sbin/rsyslogd`
//! (`apt-get install rsyslog`); without it the bench says so and measures watchpost only.
//!
//! Run: `cargo bench -p watchpost --bench vs_rsyslog`.

// Benches may unwrap: a failing unwrap is a failing bench.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
/// The regular expression both select lines with (POSIX ERE for rsyslog, also valid for
/// Rust's `regex`).
const REGEX: &str = "Failed password for .* from [0-9.]+ port [0-9]+";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Input {
    /// sshd lines, regex filter.
    Text,
    /// SEP AV log lines, Auto-Protect filter.
    Sep,
}

#[derive(Clone, Debug)]
enum Follower {
    Rsyslog,
    Watchpost { label: String, bin: PathBuf },
}

impl Follower {
    fn label(&self) -> &str {
        match self {
            Follower::Rsyslog => "rsyslog",
            Follower::Watchpost { label, .. } => label,
        }
    }
}

struct Running {
    child: Child,
    term: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.term {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // A burst arrives faster than one thread may read it for a moment: a large buffer
    // (forced as root, else up to net.core.rmem_max) keeps the kernel from dropping.
    #[cfg(target_os = "linux")]
    {
        let size = 64 << 20;
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, size).is_err() {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock, size);
        }
    }
    sock
}

fn start(f: &Follower, dir: &Path, file: &Path, input: Input, port: u16, burst: bool) -> Running {
    match f {
        Follower::Rsyslog => {
            let work = dir.join("rsyslog-work");
            std::fs::create_dir_all(&work).unwrap();
            let conf = dir.join("rsyslog.conf");
            std::fs::write(
                &conf,
                format!(
                    r#"global(workDirectory="{work}")
module(load="imfile" mode="inotify")
template(name="m" type="string" string="%msg%")
ruleset(name="r" queue.type="Direct") {{
  if re_match($msg, "{REGEX}") then action(type="omfwd" target="127.0.0.1" port="{port}" protocol="udp" template="m")
}}
input(type="imfile" file="{file}" tag="bench" ruleset="r" freshStartTail="off")
"#,
                    work = work.display(),
                    file = file.display()
                ),
            )
            .unwrap();
            let child = Command::new(RSYSLOGD)
                .args(["-n", "-f"])
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslog.pid"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("rsyslog.log")).unwrap())
                .spawn()
                .expect("start rsyslogd");
            Running { child, term: false }
        }
        Follower::Watchpost { bin, .. } => {
            let state = dir.join("state");
            let (source, filter, message) = match input {
                Input::Text => (
                    format!(
                        "[[source]]\nname = \"auth\"\ntype = \"text\"\npath = \"{}\"\n{}",
                        file.display(),
                        if burst {
                            "start_at = \"beginning\"\n"
                        } else {
                            ""
                        }
                    ),
                    format!(
                        "[[filter]]\nname = \"failed-login\"\nmatch = {{ source = \"auth\", message = {{ regex = '{REGEX}' }} }}\nactions = [\"out\"]\n"
                    ),
                    "{{ message }}",
                ),
                Input::Sep => (
                    format!(
                        "[[source]]\nname = \"sep-av\"\ntype = \"sep_av_log\"\npath = \"{}\"\n",
                        file.display()
                    ),
                    "[[filter]]\nname = \"virus-found\"\nmatch = { source = \"sep-av\", event_code = 5, logger_name = { in = [\"Real_Time\", \"Bash\"] } }\nactions = [\"out\"]\n".to_owned(),
                    "{{ filter }} {{ file_path }}",
                ),
            };
            let config = dir.join("watchpost.toml");
            std::fs::write(
                &config,
                format!(
                    "[agent]\nstate_dir = \"{}\"\n\n{source}\n{filter}\n[[action]]\nname = \"out\"\ntype = \"syslog\"\ntarget = \"udp://127.0.0.1:{port}\"\nformat = \"rfc5424\"\nmessage = \"{message}\"\n",
                    state.display()
                ),
            )
            .unwrap();
            let child = Command::new(bin)
                .args(["run", "-c"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("watchpost.log")).unwrap())
                .spawn()
                .expect("start watchpost");
            Running { child, term: true }
        }
    }
}

/// An SEP AV Auto-Protect detection line whose file path is `id`.
fn sep_line(template: &[String], id: &str) -> String {
    let mut cols = template.to_vec();
    cols[7] = id.to_owned();
    format!("{}\r\n", cols.join(","))
}

/// A failed login ending in `id.` (so the datagram can be told apart).
fn text_line(id: &str) -> String {
    format!(
        "Dec  7 05:00:00 bench sshd[4242]: Failed password for invalid user admin from 10.1.2.3 port 22 ssh2 {id}.\n"
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The directory of the followed file, apart from the followers' own files (their logs
/// and state): a follower's log line must not wake its own watch of the directory.
fn followed_dir(dir: &Path) -> PathBuf {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    logs
}

/// Lone lines 20 ms apart: write → datagram, per line.
fn lone(f: &Follower, input: Input, events: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let file = followed_dir(dir.path()).join(match input {
        Input::Text => "auth.log",
        Input::Sep => "12072026.Log",
    });
    std::fs::write(&file, b"").unwrap();
    let sock = receiver();
    let port = sock.local_addr().unwrap().port();
    let _run = start(f, dir.path(), &file, input, port, false);
    let template = common::sep_detection_template();
    let line = |id: &str| match input {
        Input::Text => text_line(id),
        Input::Sep => sep_line(&template, id),
    };
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    let mut buf = vec![0u8; 65536];
    // Ready: a probe line comes through.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    let mut k = 0;
    while !ready && Instant::now() < deadline {
        out.write_all(line(&format!("probe{k}")).as_bytes())
            .unwrap();
        k += 1;
        ready = sock.recv(&mut buf).is_ok();
    }
    assert!(ready, "{}: nothing arrived within 30 s", f.label());
    // Late probes.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while sock.recv(&mut buf).is_ok() {}
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let warmup = 20;
    let mut lat = Vec::with_capacity(events);
    let mut next = Instant::now();
    for i in 0..events + warmup {
        next += Duration::from_millis(20);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let id = format!("n{i}");
        let text = line(&id);
        let want = match input {
            Input::Text => format!("{id}."),
            Input::Sep => id.clone(),
        };
        let started = Instant::now();
        out.write_all(text.as_bytes()).unwrap();
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let got = String::from_utf8_lossy(&buf[..n]);
                    let hit = match input {
                        Input::Text => got.contains(&want),
                        Input::Sep => got.ends_with(&format!(" {want}")),
                    };
                    if hit {
                        if i >= warmup {
                            lat.push(started.elapsed());
                        }
                        break;
                    }
                }
                Err(_) => {
                    eprintln!("{}: line {i} timed out", f.label());
                    break;
                }
            }
        }
    }
    lat.sort();
    lat
}

/// The burst file: `n` sshd lines, 8 of every 21 a failed login. Returns how many match.
fn burst_file(path: &Path, n: usize) -> usize {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut matching = 0;
    for i in 0..n {
        let line = match i % 21 {
            0..8 => {
                matching += 1;
                format!(
                    "Dec  7 05:00:00 bench sshd[{}]: Failed password for invalid user u{i} from 10.{}.{}.{} port {} ssh2\n",
                    1000 + i % 5000,
                    i % 200,
                    i % 250,
                    i % 7,
                    1024 + i % 60000
                )
            }
            8..15 => format!(
                "Dec  7 05:00:00 bench sshd[{}]: Accepted publickey for ann from 10.0.{}.{} port {} ssh2: ED25519 SHA256:abcdefghijklmnop\n",
                1000 + i % 5000,
                i % 250,
                i % 7,
                1024 + i % 60000
            ),
            _ => format!(
                "Dec  7 05:00:00 bench sshd[{}]: pam_unix(sshd:session): session opened for user ann(uid=1000) by (uid=0)\n",
                1000 + i % 5000
            ),
        };
        w.write_all(line.as_bytes()).unwrap();
    }
    w.flush().unwrap();
    matching
}

/// A burst already in the file: start → last datagram. Returns seconds and datagrams.
fn burst(f: &Follower, lines: usize) -> (f64, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = followed_dir(dir.path()).join("auth.log");
    let expected = burst_file(&file, lines);
    let sock = receiver();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let started = Instant::now();
    let _run = start(f, dir.path(), &file, Input::Text, port, true);
    let mut buf = vec![0u8; 65536];
    let mut n = 0;
    let mut last = started;
    while n < expected {
        if sock.recv(&mut buf).is_err() {
            break;
        }
        n += 1;
        last = Instant::now();
    }
    ((last - started).as_secs_f64(), n, expected)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let events = env("WATCHPOST_BENCH_LONE", 300);
    let lines = env("WATCHPOST_BENCH_BURST", 1_000_000);
    let rounds = env("WATCHPOST_BENCH_ROUNDS", 3);
    let mut followers = Vec::new();
    if Path::new(RSYSLOGD).exists() {
        followers.push(Follower::Rsyslog);
    } else {
        println!("{RSYSLOGD} not found (apt-get install rsyslog): measuring watchpost only");
    }
    if let Some(before) = std::env::var_os("WATCHPOST_BIN_BEFORE") {
        followers.push(Follower::Watchpost {
            label: "watchpost before".into(),
            bin: before.into(),
        });
    }
    followers.push(Follower::Watchpost {
        label: "watchpost".into(),
        bin: env!("CARGO_BIN_EXE_watchpost").into(),
    });
    // (label, input) → per-round (p50, p99, max) in ms; label → burst seconds.
    let mut lone_runs: Vec<(String, Input, Vec<[f64; 3]>)> = Vec::new();
    let mut burst_runs: Vec<(String, Vec<f64>)> = Vec::new();
    for round in 1..=rounds {
        for f in &followers {
            let inputs: &[Input] = match f {
                Follower::Rsyslog => &[Input::Text],
                Follower::Watchpost { .. } => &[Input::Text, Input::Sep],
            };
            for &input in inputs {
                let la = load();
                let lat = lone(f, input, events);
                let row = [ms(pct(&lat, 0.5)), ms(pct(&lat, 0.99)), ms(pct(&lat, 1.0))];
                println!(
                    "round {round} lone {:?} {}: {} events, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (load {la})",
                    input,
                    f.label(),
                    lat.len(),
                    row[0],
                    row[1],
                    row[2]
                );
                match lone_runs
                    .iter_mut()
                    .find(|(l, i, _)| l == f.label() && *i == input)
                {
                    Some((_, _, v)) => v.push(row),
                    None => lone_runs.push((f.label().to_owned(), input, vec![row])),
                }
            }
        }
        for f in &followers {
            let la = load();
            let (secs, got, expected) = burst(f, lines);
            println!(
                "round {round} burst {}: {lines} lines, {got} of {expected} datagrams, the last after {secs:.2} s (load {la})",
                f.label()
            );
            match burst_runs.iter_mut().find(|(l, _)| l == f.label()) {
                Some((_, v)) => v.push(secs),
                None => burst_runs.push((f.label().to_owned(), vec![secs])),
            }
        }
    }
    println!("\nmedians over {rounds} rounds:");
    println!("| lone line → datagram | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (label, input, rows) in &lone_runs {
        let col = |k: usize| median(rows.iter().map(|r| r[k]).collect());
        println!(
            "| {label}, {} | {:.3} | {:.3} | {:.3} |",
            match input {
                Input::Text => "text + regex",
                Input::Sep => "SEP AV",
            },
            col(0),
            col(1),
            col(2)
        );
    }
    println!("| {lines}-line burst → last datagram | seconds | | |");
    for (label, v) in &burst_runs {
        println!("| {label} | {:.2} | | |", median(v.clone()));
    }
}
