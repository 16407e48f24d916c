//! Throughput: SEP AV log lines per second on one core through parse + 100 filters
//! (no actions): the parser and the chain alone, and the same through the daemon's
//! `Pipeline` (generation check, place, judgement, a counting sink). Run: `cargo bench -p watchpost --bench throughput`
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
    let (mut best_full, mut best_parse, mut best_pipeline) = (f64::MAX, f64::MAX, f64::MAX);
    let mut pipeline = pipeline_of(&text);
    let mut sink = Counting(0);
    let place = std::path::PathBuf::from("/var/log/sep/11222026.Log");
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
        let start = Instant::now();
        for (i, l) in lines.iter().cycle().take(per_round).enumerate() {
            pipeline.handle(
                watchpost_sources::Item::Bytes {
                    bytes: l,
                    place: watchpost_sources::Place::Path(&place),
                    offset: i as u64,
                    read_at: start,
                },
                &mut sink,
            );
        }
        best_pipeline = best_pipeline.min(start.elapsed().as_secs_f64() / per_round as f64);
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
    println!(
        "Pipeline (parse + 100 filters, generation check, origin, sink): {:.0} lines/s on one core ({:.2} µs/line, best round; {} firings)",
        1.0 / best_pipeline,
        best_pipeline * 1e6,
        sink.0
    );
}

/// The daemon's pipeline for source `sep-av` with the same filters, no store, no actions.
fn pipeline_of(filters: &str) -> watchpost_runtime::Pipeline {
    use std::sync::Arc;
    use watchpost_runtime::{Current, Generation, Pipeline, SourceKind};
    let text = format!(
        "[agent]\nstate_dir = '/nonexistent'\n\n[store]\nenabled = false\n\n[[source]]\nname = \"sep-av\"\ntype = \"sep_av_log\"\npath = '/var/log/sep/*.Log'\n\n[[source]]\nname = \"sep-ips\"\ntype = \"sep_security_log\"\npath = '/var/log/sep/seclog.log'\n\n{}\n[[action]]\nname = \"out\"\ntype = \"flag_file\"\npath = '/tmp/x'\n",
        filters
    );
    let source = watchpost_config::ConfigSource::Text {
        name: "bench.toml".into(),
        text,
    };
    let loaded =
        watchpost_config::load(&source, watchpost_config::Purpose::Offline).expect("config");
    let mut config = loaded.config;
    let (analysis, judges) = watchpost_runtime::analysis::Analysis::open(
        &config,
        &loaded.chain,
        watchpost_runtime::analysis::BaselineHome::Temporary,
        false,
    )
    .expect("analysis");
    let current = Arc::new(Current::new(Generation::build(
        0,
        &mut config,
        loaded.chain,
        judges,
        Vec::new(),
        &|_| None,
    )));
    let s = config.sources[0].clone();
    Pipeline::new(
        SourceKind::Configured(&s),
        "bench-host",
        current,
        Arc::new(analysis),
    )
}

/// Counts firings.
struct Counting(u64);

impl watchpost_runtime::Sink for Counting {
    fn unparsable(&mut self, _: &str, _: &str, _: u64, _: &dyn std::fmt::Display) {}

    fn verdict(
        &mut self,
        _: &watchpost_runtime::Generation,
        _: &watchpost_event::Event,
        _: &Verdict,
        _: &[(usize, watchpost_anomaly::Verdict)],
    ) {
    }

    fn fire(&mut self, _: &watchpost_runtime::Generation, _: &watchpost_runtime::Firing<'_>) {
        self.0 += 1;
    }
}
