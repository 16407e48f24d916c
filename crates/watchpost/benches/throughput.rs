//! Throughput: SEP AV log lines per second on one core through parse + 100 filters
//! (no actions). Run: `cargo bench -p watchpost --bench throughput`
//! (`WATCHPOST_BENCH_LINES=N` sets how many lines each half runs; for instruction counts
//! run the built binary under `valgrind --tool=callgrind` with a small N).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use toml::de::DeTable;
use watchpost_filters::{Chain, Verdict, parse_filter};
use watchpost_sources::{Format, ParseCtx};

fn main() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/sep/client-av"
    );
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for entry in std::fs::read_dir(fixtures).expect("fixtures") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        for l in bytes.split(|&b| b == b'\n') {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if !l.is_empty() {
                lines.push(l.to_vec());
            }
        }
    }
    let text = common::hundred_filters();
    let doc = DeTable::parse(&text).expect("toml");
    let specs = doc.get_ref()["filter"]
        .get_ref()
        .as_array()
        .expect("filters")
        .iter()
        .map(|v| parse_filter(v).0)
        .collect();
    let chain = Chain::build(specs, &|n| (n == "out").then_some(0), &["out"]).expect("chain");
    let parser = Format::SepAvLog.parser();
    let ctx = ParseCtx::new("sep-av", "bench-host");
    let plan = chain.plan("sep-av");
    let mut verdict = Verdict::default();
    let per_round: usize = std::env::var("WATCHPOST_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let rounds = 5;
    for l in lines.iter().take(1000) {
        let _ = parser.parse(&ctx, l);
    }
    // Best of several rounds: this VM's neighbours steal time in bursts.
    let (mut fired, mut errors) = (0usize, 0usize);
    let (mut best_full, mut best_parse) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let start = Instant::now();
        for l in lines.iter().cycle().take(per_round) {
            match parser.parse(&ctx, l) {
                Ok(mut e) => {
                    chain.evaluate(&plan, &mut e, &mut verdict);
                    fired += verdict.fired.len();
                }
                Err(_) => errors += 1,
            }
        }
        best_full = best_full.min(start.elapsed().as_secs_f64() / per_round as f64);
        let start = Instant::now();
        for l in lines.iter().cycle().take(per_round) {
            let _ = std::hint::black_box(parser.parse(&ctx, l));
        }
        best_parse = best_parse.min(start.elapsed().as_secs_f64() / per_round as f64);
    }
    println!(
        "{per_round} lines x {rounds} rounds ({} distinct fixture lines), filters: {}, plan for sep-av: {}; fired {fired}, errors {errors}",
        lines.len(),
        chain.len(),
        plan.len()
    );
    println!(
        "parse + 100 filters: {:.0} lines/s on one core ({:.2} µs/line, best round)",
        1.0 / best_full,
        best_full * 1e6
    );
    println!(
        "parse only:          {:.0} lines/s on one core ({:.2} µs/line, best round)",
        1.0 / best_parse,
        best_parse * 1e6
    );
}
