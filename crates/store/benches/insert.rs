//! Store inserts per second, sustained: events shaped like a Windows 4624 logon (20
//! fields, 1.3 KB of XML) submitted as fast as the writer commits them; bytes on disk per
//! event. Run: `cargo bench -p watchpost-store --bench insert`
//! (`WATCHPOST_BENCH_EVENTS=N`, default 200000).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use watchpost_store::{NewEvent, StoreOptions, Writer};

fn main() {
    let n: u64 = std::env::var("WATCHPOST_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let w = Writer::start(
        &path,
        StoreOptions {
            queue: 10_000,
            ..StoreOptions::default()
        },
    )
    .expect("store");
    let names = [
        "SubjectUserSid",
        "SubjectUserName",
        "SubjectDomainName",
        "SubjectLogonId",
        "TargetUserSid",
        "TargetUserName",
        "TargetDomainName",
        "TargetLogonId",
        "LogonType",
        "LogonProcessName",
        "AuthenticationPackageName",
        "WorkstationName",
        "LogonGuid",
        "TransmittedServices",
        "LmPackageName",
        "KeyLength",
        "ProcessId",
        "ProcessName",
        "IpAddress",
        "IpPort",
    ];
    let start = Instant::now();
    let mut dropped_retries = 0u64;
    for i in 0..n {
        let fields: Vec<(String, String)> = names
            .iter()
            .enumerate()
            .map(|(k, name)| (name.to_string(), format!("value-{k}-{}", i % 977)))
            .collect();
        let raw = format!("<Event>{}</Event>", "x".repeat(1300));
        let mut e = NewEvent {
            time: Some(jiff::Timestamp::now()),
            source: "security".into(),
            host: format!("pc{}", i % 50),
            filters: vec!["logon".into()],
            anomaly: i % 100 == 0,
            anomaly_why: None,
            needs_ack: i % 100 == 0,
            fields,
            raw,
            origin: Some(format!("Security:{i}")),
        };
        // Sustained rate: when the queue is full, wait for the writer instead of dropping.
        loop {
            match w.submit(e.clone()) {
                Some(_) => break,
                None => {
                    dropped_retries += 1;
                    std::thread::sleep(Duration::from_micros(200));
                    e.anomaly_why = None;
                }
            }
        }
    }
    w.flush(Duration::from_secs(600));
    let elapsed = start.elapsed();
    let stats = w.shutdown();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} events stored in {:.2} s: {:.0} inserts/s sustained; {:.0} bytes on disk per event ({:.1} MB); {} submits retried on a full queue",
        stats.stored,
        elapsed.as_secs_f64(),
        stats.stored as f64 / elapsed.as_secs_f64(),
        size as f64 / stats.stored.max(1) as f64,
        size as f64 / 1e6,
        dropped_retries
    );
}
