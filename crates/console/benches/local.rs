//! How fast the agent's console answers with many events in its SQLite store: the store
//! is filled through its own writer with `CONSOLE_BENCH_EVENTS` events (default
//! 1,000,000, spread over 30 days of storing time, 20 hosts, one in 50 an anomaly, a third
//! of those waiting for an acknowledgement, one in 5 with a Sigma rule level), then every
//! page is fetched over HTTP from the console's own blocking server as a logged-in
//! analyst, `CONSOLE_BENCH_ROUNDS` times (default 20, after 3 warm-up rounds).
//!
//! `cargo bench -p watchpost-console --features local --bench local` (BENCHMARKS.md).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use watchpost_console::auth::{FileUser, Keys, UserFile, hash_password};
use watchpost_console::local::{LocalBackend, LocalState};
use watchpost_store::{NewEvent, StoreOptions, Writer};

struct Idle;

impl LocalState for Idle {
    fn heartbeat(&self) -> watchpost_fleet_protocol::Heartbeat {
        watchpost_fleet_protocol::Heartbeat::default()
    }
    fn baselines(&self) -> Option<&watchpost_anomaly::Baselines> {
        None
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn http(addr: SocketAddr, method: &str, path: &str, cookie: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn main() {
    let events = env_num("CONSOLE_BENCH_EVENTS", 1_000_000);
    let rounds = env_num("CONSOLE_BENCH_ROUNDS", 20) as usize;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("events.db");
    let fill = Instant::now();
    let w = Writer::start(
        &store,
        StoreOptions {
            batch: 5000,
            queue: 200_000,
            max_bytes: None,
            max_age: None,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let span = 30 * 86_400_000i64;
    for i in 0..events {
        let anomaly = i % 50 == 0;
        let mut fields = vec![
            ("user".to_owned(), format!("user{}", i % 500)),
            ("risk_name".to_owned(), format!("Trojan.Gen {}", i % 97)),
        ];
        if i % 5 == 0 {
            fields.push((
                "rule_level".to_owned(),
                ["low", "medium", "high", "critical"][(i % 4) as usize].to_owned(),
            ));
        }
        let host = format!("host-{}", i % 20);
        let e = NewEvent {
            time: jiff::Timestamp::from_millisecond(
                now_ms - span + (i as i64 * span / events as i64),
            )
            .ok(),
            source: "sep-av".into(),
            raw: format!(
                "Virus found,Computer name: {host},Risk: Trojan.Gen {},User: user{}",
                i % 97,
                i % 500
            ),
            host,
            filters: vec![
                if i % 5 == 0 {
                    "sigma-windows"
                } else {
                    "av-detection"
                }
                .into(),
            ],
            anomaly,
            anomaly_why: anomaly
                .then(|| format!("new-logon-source: new value for key \"user{}\"", i % 500)),
            needs_ack: anomaly,
            fields,
            origin: Some(format!("C:\\AV\\log.txt:{i}")),
        };
        while w.submit(e.clone()).is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    w.shutdown();
    // The storing time is when the writer ran; spread it over 30 days like the event
    // times, so the overview's ranges hold a realistic share, and acknowledge two thirds
    // of the anomalies; the overview's per-hour counts follow.
    {
        let c = rusqlite::Connection::open(&store).unwrap();
        c.execute(
            "UPDATE events SET stored = time, acked_at = CASE WHEN anomaly = 1 AND id % 3 <> 0 THEN time END,
                    acked_by = CASE WHEN anomaly = 1 AND id % 3 <> 0 THEN 'ann' END",
            [],
        )
        .unwrap();
        // The per-hour counts the writer kept go by the storing time just rewritten:
        // counted again, as opening an older store counts them.
        c.execute_batch(&format!(
            "DELETE FROM event_hours; DELETE FROM filter_hours; {}",
            watchpost_store::HOURS_BACKFILL
        ))
        .unwrap();
        c.execute_batch("ANALYZE").unwrap();
    }
    let size = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "console bench: {events} events stored in {:.0} s ({} MB)",
        fill.elapsed().as_secs_f64(),
        size >> 20
    );
    let users = dir.path().join("users.toml");
    let mut f = UserFile::default();
    f.set(FileUser {
        name: "ann".into(),
        role: "analyst".into(),
        password: hash_password("correct horse battery").unwrap(),
        disabled: false,
    });
    std::fs::write(&users, f.to_text()).unwrap();
    let backend = LocalBackend::open(&store, users, "bench".into(), Box::new(Idle)).unwrap();
    let console = Arc::new(watchpost_console::Console::new(
        Arc::new(backend),
        Keys::random().unwrap(),
        false,
    ));
    let server = watchpost_console::serve::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    std::thread::spawn(move || server.run(console, || false));
    let (status, answer) = http(
        addr,
        "POST",
        "/console/login",
        "",
        "user=ann&password=correct+horse+battery",
    );
    assert_eq!(status, 303, "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: ")
                .then(|| l["set-cookie: ".len()..].to_owned())
        })
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mid = events / 2;
    let pages = [
        ("overview, 24 h", "/console/".to_owned()),
        ("overview, 7 days", "/console/?hours=168".to_owned()),
        ("events, newest", "/console/events".to_owned()),
        (
            "events, isanomaly needsack host",
            "/console/events?q=isanomaly%3Atrue+needsack%3Atrue+host%3Ahost-7".to_owned(),
        ),
        (
            "events, field wildcard",
            "/console/events?q=user%3Auser42*".to_owned(),
        ),
        (
            "events, free text + 7 d range",
            "/console/events?q=trojan&since=7d".to_owned(),
        ),
        (
            "events, deep page (keyset)",
            format!("/console/events?before={mid}"),
        ),
        (
            "event detail",
            format!("/console/events/{}", (mid / 50) * 50 + 1),
        ),
        ("host", "/console/hosts/local".to_owned()),
        ("audit log", "/console/audit".to_owned()),
    ];
    println!(
        "agent console, {events} events in SQLite, {rounds} rounds per page (HTTP, one connection per request):"
    );
    println!(
        "{:<36} {:>8} {:>8} {:>8}",
        "page", "p50 ms", "p95 ms", "max ms"
    );
    for (name, path) in &pages {
        let mut times = Vec::new();
        for round in 0..rounds + 3 {
            let t = Instant::now();
            let (status, body) = http(addr, "GET", path, &cookie, "");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(status, 200, "{name}: {}", &body[..body.len().min(2000)]);
            if round >= 3 {
                times.push(ms);
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        println!(
            "{name:<36} {:>8.1} {:>8.1} {:>8.1}",
            at(0.5),
            at(0.95),
            times[times.len() - 1]
        );
    }
}
