//! Hunt benchmark: every shared EVTX fixture record against every shared Sigma rule,
//! beside the parse-only floor (`read_evtx` alone), single thread and all cores.
//!
//! `cargo bench -p watchpost-sigma --bench hunt` (rounds: `HUNT_ROUNDS`, default 20;
//! threads for "all cores": `HUNT_THREADS`, default `available_parallelism`).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use watchpost_event::Event;
use watchpost_sigma::{Match, Ruleset, Scratch};
use watchpost_sources::parse::ParseCtx;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{evtx_files, shared};

/// [`run_once`] three times; the fastest (the machine is shared, so the best of three is
/// the least disturbed).
fn run<F>(threads: usize, n: usize, work: F) -> (usize, usize, Duration)
where
    F: Fn(usize, &mut Scratch, &mut Vec<Match>) -> (usize, usize) + Sync,
{
    (0..3)
        .map(|_| run_once(threads, n, &work))
        .min_by_key(|r| r.2)
        .expect("three runs")
}

/// Runs `work(item, scratch)` for items `0..n` on `threads` threads; returns the summed
/// (records, detections) and the wall time.
fn run_once<F>(threads: usize, n: usize, work: &F) -> (usize, usize, Duration)
where
    F: Fn(usize, &mut Scratch, &mut Vec<Match>) -> (usize, usize) + Sync,
{
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    let (recs, dets) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut sc = Scratch::new();
                    let mut out = Vec::new();
                    let (mut r, mut d) = (0, 0);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let (a, b) = work(i, &mut sc, &mut out);
                        r += a;
                        d += b;
                    }
                    (r, d)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("worker"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    (recs, dets, t.elapsed())
}

fn report(
    name: &str,
    threads: usize,
    (recs, dets, dt): (usize, usize, Duration),
    floor: Option<f64>,
) -> f64 {
    let rate = recs as f64 / dt.as_secs_f64();
    let vs = floor.map_or(String::new(), |f| {
        format!("  cost {:.2}x the parse floor", f / rate)
    });
    println!(
        "{name:<34} {threads:>2} thr  {recs:>8} records  {dets:>7} detections  {:>8.3} s  {rate:>10.0} rec/s{vs}",
        dt.as_secs_f64()
    );
    rate
}

/// The 1-minute load average (Linux), to print beside the figures: the machine is shared.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    println!(
        "load average at start: {} ({} cores)",
        load(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let rounds: usize = std::env::var("HUNT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let all = std::env::var("HUNT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let t = Instant::now();
    let (rs, errors) = Ruleset::load(&[shared().join("sigma/rules")]);
    println!(
        "rules: {} loaded, {} rejected, in {:.3} s",
        rs.len(),
        errors.len(),
        t.elapsed().as_secs_f64()
    );
    let mut paths = Vec::new();
    evtx_files(&shared().join("evtx"), &mut paths);
    let blobs: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let ctx = ParseCtx::new("evtx", "localhost");
    let events: Vec<Vec<Event>> = blobs
        .iter()
        .map(|b| watchpost_sources::evtx::read_evtx(&ctx, b.clone(), "bench").0)
        .collect();
    let records: usize = events.iter().map(Vec::len).sum();
    println!(
        "evtx: {} files, {} MB, {records} records; {rounds} rounds per measurement, best of 3",
        blobs.len(),
        blobs.iter().map(Vec::len).sum::<usize>() / 1_000_000
    );
    let n = rounds * blobs.len();
    let nf = blobs.len();

    for threads in [1, all] {
        let parse = |i: usize, _: &mut Scratch, _: &mut Vec<Match>| {
            let (ev, _) = watchpost_sources::evtx::read_evtx(&ctx, blobs[i % nf].clone(), "bench");
            (ev.len(), 0)
        };
        let floor = report(
            "parse only (read_evtx)",
            threads,
            run(threads, n, parse),
            None,
        );
        let eval = |i: usize, sc: &mut Scratch, out: &mut Vec<Match>| {
            let mut d = 0;
            for e in &events[i % nf] {
                out.clear();
                d += rs.matches_with(e, sc, out);
            }
            (events[i % nf].len(), d)
        };
        report(
            "rules on pre-parsed events",
            threads,
            run(threads, n, eval),
            None,
        );
        let hunt = |i: usize, sc: &mut Scratch, out: &mut Vec<Match>| {
            let (ev, _) = watchpost_sources::evtx::read_evtx(&ctx, blobs[i % nf].clone(), "bench");
            let mut d = 0;
            for e in &ev {
                out.clear();
                d += rs.matches_with(e, sc, out);
            }
            (ev.len(), d)
        };
        report(
            "hunt end to end (parse + rules)",
            threads,
            run(threads, n, hunt),
            Some(floor),
        );
    }
    println!("load average at end: {}", load());
}
