//! Reaction latency and footprint of the real binary.
//!
//! Starts `watchpost run` with 100 filters on a tailed SEP AV log and a syslog UDP action
//! aimed at a socket of this process, then, 10,000 times: `write()` one detection line,
//! wait for its packet, record the time between. Also reports idle CPU, resident memory
//! idle and after a burst, and the stripped binary's size.
//! Run: `cargo bench -p watchpost --bench latency` (`WATCHPOST_BENCH_EVENTS=N` to change N).
//! The burst counts come from watchpost's own shutdown totals ("sent") and from this
//! bench's UDP socket ("received"; the kernel drops what the socket buffer cannot hold).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let events: usize = std::env::var("WATCHPOST_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let port = sock.local_addr().expect("addr").port();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\nlog_fired = false\n\n{}[[source]]\nname = \"sep-av\"\ntype = \"sep_av_log\"\npath = \"{}/*.Log\"\n\n[[source]]\nname = \"sep-ips\"\ntype = \"sep_security_log\"\npath = \"{}/seclog.log\"\n\n{}\n[[action]]\nname = \"out\"\ntype = \"syslog\"\ntarget = \"udp://127.0.0.1:{port}\"\nformat = \"rfc5424\"\nmessage = \"{{{{ filter }}}} {{{{ file_path }}}}\"\n",
            dir.path().join("state").display(),
            // LATENCY_NO_STORE=1: without the event store, to see what storing costs.
            if std::env::var_os("LATENCY_NO_STORE").is_some() {
                "[store]\nenabled = false\n\n"
            } else {
                ""
            },
            logs.display(),
            logs.display(),
            common::hundred_filters()
        ),
    )
    .expect("config");
    let log_path = logs.join("11222026.Log");
    std::fs::write(&log_path, b"").expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["run", "-c"])
        .arg(&config)
        .env("WATCHPOST_LOG", "info")
        .stderr(std::fs::File::create(dir.path().join("watchpost.log")).expect("log file"))
        .spawn()
        .expect("start watchpost");
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1500));

    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let idle_secs = 5.0;
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    let idle_cpu = (cpu_ticks(pid) - t0) as f64 / ticks_per_sec / idle_secs * 100.0;
    let rss_idle = proc_field(pid, "status", "VmRSS:").unwrap_or(0);

    let template = common::sep_detection_template();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .expect("open");
    let mut buf = vec![0u8; 65536];
    let warmup = 200;
    let mut lat = Vec::with_capacity(events);
    let mut lost = 0;
    for i in 0..events + warmup {
        let mut cols = template.clone();
        let id = format!("id{i}");
        cols[7] = id.clone();
        let line = format!("{}\r\n", cols.join(","));
        let start = Instant::now();
        file.write_all(line.as_bytes()).expect("write");
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if String::from_utf8_lossy(&buf[..n]).ends_with(&format!(" {id}")) {
                        if i >= warmup {
                            lat.push(start.elapsed());
                        }
                        break;
                    }
                }
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let burst = 200_000;
    let mut cols = template.clone();
    cols[7] = "burst".into();
    let line = format!("{}\r\n", cols.join(","));
    let big: String = line.repeat(1000);
    let burst_start = Instant::now();
    let drain = std::thread::spawn(move || {
        let mut n = 0;
        let mut last = burst_start;
        let mut b = vec![0u8; 65536];
        while n < burst {
            if sock.recv(&mut b).is_err() {
                break;
            }
            last = Instant::now();
            n += 1;
        }
        (n, last)
    });
    for _ in 0..burst / 1000 {
        file.write_all(big.as_bytes()).expect("write");
    }
    let (received, last) = drain.join().unwrap_or((0, burst_start));
    let burst_secs = (last - burst_start).as_secs_f64();
    let rss_load = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("watchpost.log")).unwrap_or_default();
    let total = |key: &str| -> u64 {
        let line = log
            .lines()
            .find(|l| l.contains("action totals"))
            .unwrap_or("");
        // `ok=N` (key=value log lines), or `ok: N` (older builds' Debug output).
        line.split(&format!("{key}="))
            .nth(1)
            .or_else(|| line.split(&format!("{key}: ")).nth(1))
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (sent, dropped) = (total("ok"), total("dropped"));
    let size = std::fs::metadata(env!("CARGO_BIN_EXE_watchpost"))
        .map(|m| m.len())
        .unwrap_or(0);

    println!(
        "reaction latency write() -> UDP packet, {} events, 100 filters:",
        lat.len()
    );
    println!(
        "  p50 {:?}  p90 {:?}  p99 {:?}  p99.9 {:?}  max {:?}  (timeouts: {lost})",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        lat[lat.len() - 1]
    );
    println!(
        "burst: {burst} detection lines written at once; watchpost sent {sent}, dropped {dropped}; this bench's socket received {received}, the last after {burst_secs:.2} s ({:.0} lines/s end to end with the syslog action)",
        received as f64 / burst_secs
    );
    println!("idle CPU over {idle_secs} s: {idle_cpu:.2} %");
    println!("resident memory: idle {rss_idle} KiB, peak after burst {rss_load} KiB");
    println!(
        "binary: {} ({size} bytes as built by this profile)",
        env!("CARGO_BIN_EXE_watchpost")
    );
}
