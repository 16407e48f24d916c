//! `[agent] metrics`: the daemon serves its counters in the Prometheus text format at
//! `GET /metrics` on loopback; other requests get 404/405; the daemon stops cleanly.
//!
//! Unix only: the clean stop is asked for with SIGTERM (`kill`).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Watchpost, append, wait_for};

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `request` and reads the whole answer: (status line, head, body).
fn http(port: u16, request: &[u8]) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    (status, head.to_owned(), body.to_owned())
}

fn scrape(port: u16) -> String {
    let (status, head, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    body
}

/// The value of the sample `series` (name with labels) in a scrape.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn config(d: &Path, metrics: &str) -> std::path::PathBuf {
    let cfg = d.join("watchpost.toml");
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{d}/state'
checkpoint_interval_ms = 100
metrics = "{metrics}"

[[source]]
name = "security"
type = "jsonl"
path = '{d}/logs/*.jsonl'
start_at = "beginning"

[[check]]
name = "security-quiet"
type = "source_silence"
source = "security"
after = "1h"
interval = "1s"

[[filter]]
name = "noise"
match = {{ event_id = "1" }}
exclude = true

[[filter]]
name = "failed-logon"
match = {{ event_id = "4625" }}
actions = ["out"]

[[action]]
name = "out"
type = "jsonl_file"
path = '{d}/out/matched.jsonl'
"#,
            d = d.display(),
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn counters_and_reaction_times_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_tcp_port();
    // A bare port: loopback.
    let cfg = config(d, &port.to_string());
    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    assert!(
        wp.log_text().contains(&format!("127.0.0.1:{port}")),
        "{}",
        wp.log_text()
    );
    // Not on this machine's other addresses (when it has one: the route to a
    // documentation address names it without sending anything).
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").and_then(|()| u.local_addr()))
        .map(|a| a.ip());
    if let Ok(ip) = outward
        && !ip.is_loopback()
        && !ip.is_unspecified()
    {
        let to = std::net::SocketAddr::new(ip, port);
        assert!(
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_err(),
            "{to} answered"
        );
    }
    append(
        &d.join("logs/a.jsonl"),
        concat!(
            r#"{"event_id":"4625","host":"dc1","TargetUserName":"admin"}"#,
            "\n",
            r#"{"event_id":"1","host":"dc1"}"#,
            "\n",
            "this is not json\n",
            r#"{"event_id":"4625","host":"dc2","TargetUserName":"root"}"#,
            "\n",
        )
        .as_bytes(),
    );
    let out = d.join("out/matched.jsonl");
    wait_for("two matched lines", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (text.lines().count() == 2).then_some(())
    });
    let body = wait_for("the counters to settle", Duration::from_secs(20), || {
        let body = scrape(port);
        let settled = [
            (
                r#"watchpost_action_jobs_total{action="out",outcome="ok"}"#,
                2.0,
            ),
            (r#"watchpost_store_events_total{outcome="stored"}"#, 2.0),
            (
                r#"watchpost_check_status{check="security-quiet",status="ok"}"#,
                1.0,
            ),
        ];
        settled
            .iter()
            .all(|(s, v)| sample(&body, s) == Some(*v))
            .then_some(body)
    });
    let expect = [
        (r#"watchpost_source_records_total{source="security"}"#, 4.0),
        (
            r#"watchpost_source_parse_errors_total{source="security"}"#,
            1.0,
        ),
        (r#"watchpost_filter_fired_total{source="security"}"#, 2.0),
        (r#"watchpost_events_excluded_total{source="security"}"#, 1.0),
        (r#"watchpost_anomalies_total{source="security"}"#, 0.0),
        (
            r#"watchpost_source_records_total{source="security-quiet"}"#,
            0.0,
        ),
        (
            r#"watchpost_action_jobs_total{action="out",outcome="failed"}"#,
            0.0,
        ),
        (
            r#"watchpost_action_jobs_total{action="out",outcome="timed_out"}"#,
            0.0,
        ),
        (
            r#"watchpost_action_jobs_total{action="out",outcome="dropped"}"#,
            0.0,
        ),
        (r#"watchpost_action_queue_depth{action="out"}"#, 0.0),
        (r#"watchpost_store_events_total{outcome="dropped"}"#, 0.0),
        (r#"watchpost_store_events_total{outcome="failed"}"#, 0.0),
        (r#"watchpost_reaction_seconds_bucket{le="+Inf"}"#, 2.0),
        ("watchpost_reaction_seconds_count", 2.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&body, series), Some(value), "{series}\n{body}");
    }
    for line in [
        "# TYPE watchpost_source_records_total counter",
        "# TYPE watchpost_action_queue_depth gauge",
        "# TYPE watchpost_reaction_seconds histogram",
    ] {
        assert!(body.lines().any(|l| l == line), "{line}\n{body}");
    }
    // Buckets 10 µs … 1 s, cumulative, ending at the count.
    let buckets: Vec<(String, f64)> = body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("watchpost_reaction_seconds_bucket{le=\"")?;
            let (le, v) = rest.split_once("\"} ")?;
            Some((le.to_owned(), v.parse().ok()?))
        })
        .collect();
    assert_eq!(buckets.len(), 17, "{body}");
    assert_eq!(
        (buckets[0].0.as_str(), buckets[15].0.as_str()),
        ("0.00001", "1")
    );
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{body}");
    let sum = sample(&body, "watchpost_reaction_seconds_sum").unwrap();
    assert!(sum > 0.0 && sum < 10.0, "{sum}");

    // Anything but GET /metrics.
    let (status, ..) = http(port, b"GET / HTTP/1.1\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, ..) = http(port, b"GET /metrics/../x HTTP/1.1\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, head, _) = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    assert!(head.contains("Allow: GET"), "{head}");
    // A request that never ends its headers is cut at 8 KiB.
    let (status, ..) = http(port, &[b'A'; 9000]);
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    // A client that sends nothing is dropped after a second; the next one is answered.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut nothing = Vec::new();
    let _ = silent.read_to_end(&mut nothing);
    assert!(nothing.is_empty());
    scrape(port);

    assert!(wp.terminate(), "clean exit");
}

#[test]
fn a_bad_address_is_a_config_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "example.com:9464");
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["check-config", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("watchpost.toml:4:11: error:") && text.contains("not a listen address"),
        "{text}"
    );
}

#[test]
fn a_taken_port_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = config(dir.path(), &format!("127.0.0.1:{port}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("WATCHPOST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("watchpost to give up", Duration::from_secs(20), || {
        child.try_wait().unwrap()
    });
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&format!("[agent] metrics: listening on 127.0.0.1:{port}")),
        "{err}"
    );
}
