//! EVTX records per second: watchpost's reader (`read_evtx`: the `evtx` crate's XML
//! rendering + our XML → `Event` conversion) beside parse-only floors (the `evtx` crate
//! alone on the same bytes, same machine, same run), on one thread and on all cores.
//!
//! Run: `cargo bench -p watchpost-sources --bench evtx`
//! (`WATCHPOST_EVTX_DIR=DIR` reads another folder; `WATCHPOST_BENCH_ROUNDS=N` repeats the
//! whole set N times per measurement, default 5.)

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use watchpost_sources::ParseCtx;
use watchpost_sources::evtx::for_each_evtx;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("evtx"))
        {
            out.push(p);
        }
    }
}

/// One way to read a file's bytes; returns how many records it produced.
type Case = fn(&[u8]) -> usize;

fn settings() -> evtx::ParserSettings {
    evtx::ParserSettings::new().indent(false)
}

/// Floor 1: the `evtx` crate renders every record to an XML string (what we consume).
fn floor_xml(bytes: &[u8]) -> usize {
    let Ok(p) = evtx::EvtxParser::from_buffer(bytes.to_vec()) else {
        return 0;
    };
    let mut p = p.with_configuration(settings());
    p.records().filter(|r| r.is_ok()).count()
}

/// Floor 2: the `evtx` crate renders every record to JSON (what Chainsaw/Hayabusa consume).
fn floor_json(bytes: &[u8]) -> usize {
    let Ok(p) = evtx::EvtxParser::from_buffer(bytes.to_vec()) else {
        return 0;
    };
    let mut p = p.with_configuration(settings());
    p.records_json_value().filter(|r| r.is_ok()).count()
}

/// watchpost: records → `Event`s with every System and EventData field, streamed (each
/// event handed on and dropped, as the floors drop their records).
fn watchpost(bytes: &[u8]) -> usize {
    let ctx = ParseCtx::new("evtx", "bench-host");
    let mut n = 0;
    for_each_evtx(&ctx, bytes.to_vec(), "bench", &mut |e| {
        std::hint::black_box(&e);
        n += 1;
    });
    n
}

/// Runs `f` over every file `rounds` times on `threads` threads (files handed out from a
/// shared counter); returns records and elapsed time.
fn measure(
    data: &[Vec<u8>],
    rounds: usize,
    threads: usize,
    f: fn(&[u8]) -> usize,
) -> (usize, Duration) {
    let next = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let jobs = data.len() * rounds;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        break;
                    }
                    total.fetch_add(f(&data[i % data.len()]), Ordering::Relaxed);
                }
            });
        }
    });
    (total.into_inner(), start.elapsed())
}

fn main() {
    let dir = std::env::var_os("WATCHPOST_EVTX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/data/evtx"
            ))
        });
    let rounds: usize = std::env::var("WATCHPOST_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // `WATCHPOST_BENCH_ONLY=watchpost` runs only the cases whose name contains it (profiling).
    let only = std::env::var("WATCHPOST_BENCH_ONLY").ok();
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    paths.sort();
    // Largest first, so the all-cores runs do not end on one big straggler.
    let mut data: Vec<Vec<u8>> = paths.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    data.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let bytes: usize = data.iter().map(Vec::len).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} EVTX files, {:.1} MB, from {}; {rounds} rounds per measurement; {cores} cores",
        data.len(),
        bytes as f64 / 1e6,
        dir.display()
    );
    // The conversion alone, on records rendered beforehand (where our share of the time goes).
    {
        let mut xmls: Vec<String> = Vec::new();
        for d in &data {
            if let Ok(p) = evtx::EvtxParser::from_buffer(d.clone()) {
                let mut p = p.with_configuration(settings());
                xmls.extend(p.records().flatten().map(|r| r.data));
            }
        }
        let ctx = ParseCtx::new("evtx", "bench-host");
        let bytes: usize = xmls.iter().map(String::len).sum();
        let start = Instant::now();
        let mut n = 0usize;
        for _ in 0..rounds {
            for x in &xmls {
                if let Ok(e) = watchpost_sources::winevent::parse_event_xml_owned(&ctx, x.clone()) {
                    std::hint::black_box(&e);
                    n += 1;
                }
            }
        }
        let t = start.elapsed();
        println!(
            " 1 thread(s)  XML -> Event only (pre-rendered)  {:>9.0} records/s  {:>6.2} us CPU/record  ({} records, {:.0} bytes of XML each)",
            n as f64 / t.as_secs_f64(),
            t.as_secs_f64() * 1e6 / n.max(1) as f64,
            xmls.len(),
            bytes as f64 / xmls.len().max(1) as f64
        );
    }
    // Warm up (page cache, allocator).
    measure(&data, 1, 1, watchpost);
    let cases: [(&str, Case); 3] = [
        ("evtx crate alone, XML (floor)", floor_xml),
        ("evtx crate alone, JSON value", floor_json),
        ("watchpost read_evtx -> Event", watchpost),
    ];
    for threads in [1, cores] {
        let mut floor = 0.0;
        for (name, f) in cases {
            if only.as_deref().is_some_and(|o| !name.contains(o)) {
                continue;
            }
            let (n, t) = measure(&data, rounds, threads, f);
            let rate = n as f64 / t.as_secs_f64();
            let per = t.as_secs_f64() * 1e6 / n.max(1) as f64 * threads as f64;
            if floor == 0.0 {
                floor = rate;
            }
            println!(
                "{threads:>2} thread(s)  {name:<32} {:>9.0} records/s  {per:>6.2} us CPU/record  {:.2}x floor time",
                rate,
                floor / rate
            );
        }
    }
}
