//! Anomaly baseline benchmark: checks per second at 1 and 10 million known pairs, memory and
//! disk bytes per pair, time to open the baseline after a restart.
//!
//! Run: `cargo bench -p watchpost-anomaly --bench baseline`
//! (`WATCHPOST_BENCH_PAIRS=1000000,10000000` picks the sizes; `WATCHPOST_BENCH_DIR` the
//! directory the stores are built in, default the system temp dir).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use jiff::Timestamp;
use watchpost_anomaly::{AnomalySpec, Baselines, Options, Verdict};

const VALUES_PER_KEY: u64 = 100;

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn key(i: u64) -> String {
    format!(
        "S-1-5-21-3623811015-3361044348-30300820-{}",
        1000 + i / VALUES_PER_KEY
    )
}

fn value(i: u64) -> String {
    format!(r"C:\Program Files\Vendor{}\bin\program{}.exe", i % 7, i)
}

fn at(s: i64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_772_352_000 + s).unwrap())
}

fn spec() -> AnomalySpec {
    AnomalySpec::new(["SubjectUserSid"], ["NewProcessName"])
}

fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn run(n: u64, base: &std::path::Path) {
    let dir = tempfile::tempdir_in(base).unwrap();
    println!(
        "\n== {n} pairs ({} keys × {VALUES_PER_KEY} values), store in {}",
        n / VALUES_PER_KEY,
        dir.path().display()
    );
    let opts = Options {
        flush_interval: Some(Duration::from_millis(500)),
        ..Options::default()
    };
    let rss0 = rss_bytes();

    // Learn n pairs (all inside the learning period).
    let b = Baselines::open(dir.path(), opts.clone()).unwrap();
    let f = b.filter("new-process-per-user", &spec()).unwrap().id;
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut slow = 0u64;
    for i in 0..n {
        let (k, v) = (key(i), value(i));
        let t0 = Instant::now();
        let verdict = b.check(f, "host", &[&k], &[&v], at((i / 1000) as i64));
        let took = t0.elapsed();
        worst = worst.max(took);
        slow += u64::from(took > Duration::from_millis(1));
        debug_assert!(matches!(verdict, Verdict::Learning { .. }));
    }
    let learn = start.elapsed();
    b.flush().unwrap();
    let learned_and_flushed = start.elapsed();
    let stats = b.stats();
    let rss1 = rss_bytes();
    println!(
        "learn: {:.2} s for {n} new pairs ({:.0} checks/s, strings formatted in the loop); committed after {:.2} s",
        learn.as_secs_f64(),
        n as f64 / learn.as_secs_f64(),
        learned_and_flushed.as_secs_f64()
    );
    println!(
        "learn: slowest single check {:.1} ms ({slow} checks over 1 ms: table doubling, flusher taking the batch, preemption)",
        worst.as_secs_f64() * 1e3
    );
    println!(
        "memory: {} bytes estimated = {:.1} bytes/pair (RSS grew {:.1} bytes/pair)",
        stats.memory_bytes,
        stats.memory_bytes as f64 / n as f64,
        rss0.zip(rss1)
            .map_or(f64::NAN, |(a, b)| b.saturating_sub(a) as f64 / n as f64)
    );

    // Checks per second after learning, on one thread.
    let queries = 2_000_000u64;
    let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
    let known: Vec<(String, String)> = (0..queries)
        .map(|_| rnd() % n)
        .map(|i| (key(i), value(i)))
        .collect();
    let after = 20 * 86_400;
    for round in 0..3 {
        let start = Instant::now();
        let mut flagged = 0;
        for (k, v) in &known {
            flagged += usize::from(b.check(f, "host", &[k], &[v], at(after)).is_anomaly());
        }
        let el = start.elapsed();
        assert_eq!(flagged, 0);
        println!(
            "check known pair (round {round}): {:.0} ns/check, {:.2} M checks/s",
            el.as_nanos() as f64 / queries as f64,
            queries as f64 / el.as_secs_f64() / 1e6
        );
    }
    let fresh: Vec<(String, String)> = (0..200_000u64)
        .map(|i| (key(i * 37 % n), format!(r"C:\Temp\new{i}.exe")))
        .collect();
    let start = Instant::now();
    let mut flagged = 0;
    for (k, v) in &fresh {
        flagged += usize::from(b.check(f, "host", &[k], &[v], at(after)).is_anomaly());
    }
    let el = start.elapsed();
    assert_eq!(flagged, fresh.len());
    println!(
        "check new pair (flagged, recorded): {:.0} ns/check, {:.2} M checks/s",
        el.as_nanos() as f64 / fresh.len() as f64,
        fresh.len() as f64 / el.as_secs_f64() / 1e6
    );
    let pairs = b.stats().pairs;
    let start = Instant::now();
    b.close().unwrap();
    println!(
        "close (flush + snapshot): {:.2} s",
        start.elapsed().as_secs_f64()
    );
    drop(known);

    let redb = std::fs::metadata(dir.path().join("baseline.redb"))
        .unwrap()
        .len();
    let snap = std::fs::metadata(dir.path().join("pairs.snap"))
        .unwrap()
        .len();
    println!(
        "disk: {} bytes = {:.1} bytes/pair (database {:.1}, snapshot {:.1})",
        dir_bytes(dir.path()),
        dir_bytes(dir.path()) as f64 / pairs as f64,
        redb as f64 / pairs as f64,
        snap as f64 / pairs as f64
    );

    let b = Baselines::open(
        dir.path(),
        Options {
            flush_interval: None,
            ..opts.clone()
        },
    )
    .unwrap();
    let start = Instant::now();
    b.compact().unwrap();
    let redb = std::fs::metadata(dir.path().join("baseline.redb"))
        .unwrap()
        .len();
    println!(
        "compact: {:.2} s, database then {:.1} bytes/pair",
        start.elapsed().as_secs_f64(),
        redb as f64 / pairs as f64
    );
    drop(b);

    // Open after restart: snapshot path (as after a clean stop, or a crash within one
    // snapshot interval), then the fallback that rebuilds the set from every pair row.
    for round in 0..2 {
        let start = Instant::now();
        let b = Baselines::open(
            dir.path(),
            Options {
                flush_interval: None,
                ..opts.clone()
            },
        )
        .unwrap();
        let el = start.elapsed();
        assert!(b.stats().opened_from_snapshot);
        assert_eq!(b.stats().pairs, pairs);
        println!(
            "open with snapshot (round {round}): {:.3} s",
            el.as_secs_f64()
        );
        drop(b);
    }
    std::fs::remove_file(dir.path().join("pairs.snap")).unwrap();
    let start = Instant::now();
    let b = Baselines::open(
        dir.path(),
        Options {
            flush_interval: None,
            ..opts
        },
    )
    .unwrap();
    println!(
        "open without snapshot (rebuild from database, writes a new snapshot): {:.3} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(b.stats().pairs, pairs);
    drop(b);

    // Learning again into a fresh store sized up front (`expected_pairs`): no doubling.
    let dir2 = tempfile::tempdir_in(base).unwrap();
    let sized = Options {
        flush_interval: Some(Duration::from_millis(500)),
        expected_pairs: n as usize,
        ..Options::default()
    };
    let b = Baselines::open(dir2.path(), sized).unwrap();
    let f = b.filter("new-process-per-user", &spec()).unwrap().id;
    let mut worst = Duration::ZERO;
    let mut slow = 0u64;
    for i in 0..n {
        let (k, v) = (key(i), value(i));
        let t0 = Instant::now();
        b.check(f, "host", &[&k], &[&v], at((i / 1000) as i64));
        let took = t0.elapsed();
        worst = worst.max(took);
        slow += u64::from(took > Duration::from_millis(1));
    }
    println!(
        "learn with expected_pairs = {n}: slowest single check {:.1} ms ({slow} over 1 ms)",
        worst.as_secs_f64() * 1e3
    );
    // Skip committing the backlog: it is not measured here.
    std::mem::forget(b);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes =
        std::env::var("WATCHPOST_BENCH_PAIRS").unwrap_or_else(|_| "1000000,10000000".into());
    let base =
        std::env::var("WATCHPOST_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    for n in sizes.split(',') {
        run(
            n.trim().parse().expect("WATCHPOST_BENCH_PAIRS: numbers"),
            &base,
        );
    }
}
