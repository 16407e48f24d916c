//! Throughput: SEP AV log lines per second on one core through parse + 100 filters
//! (no actions). Run: `cargo bench -p watchpost --bench throughput`.

mod common;

use std::time::Instant;

use toml::de::DeTable;
use watchpost_filters::{Chain, Verdict, parse_filter};
use watchpost_sources::{Format, ParseCtx};

fn main() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/sep/client-av"
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
    let target = 2_000_000usize;
    let (mut fired, mut errors) = (0usize, 0usize);
    // warm-up
    for l in lines.iter().take(1000) {
        let _ = parser.parse(&ctx, l);
    }
    let start = Instant::now();
    let mut n = 0usize;
    while n < target {
        for l in &lines {
            match parser.parse(&ctx, l) {
                Ok(mut e) => {
                    chain.evaluate(&plan, &mut e, &mut verdict);
                    fired += verdict.fired.len();
                }
                Err(_) => errors += 1,
            }
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "lines: {n} ({} distinct fixture lines), filters: {}, plan for sep-av: {}",
        lines.len(),
        chain.len(),
        plan.len()
    );
    println!(
        "parse + 100 filters: {:.0} lines/s on one core ({:.2} µs/line); fired {fired}, errors {errors}",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
    let start = Instant::now();
    let mut m = 0usize;
    while m < target {
        for l in &lines {
            let _ = std::hint::black_box(parser.parse(&ctx, l));
            m += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "parse only:          {:.0} lines/s on one core ({:.2} µs/line)",
        m as f64 / secs,
        secs * 1e6 / m as f64
    );
}
