//! The batch decoder fuzzed on stable Rust for a bounded time: valid batches (plain and
//! gzip) mutated at random (bit flips, byte changes, insertions, deletions, splices,
//! truncation, interesting numbers) and fed to `fuzz_batch`, the same target
//! `fuzz/fuzz_targets/batch.rs` runs under libFuzzer. A panic saves the input under
//! `target/fuzz-failures/` and fails the test. `WATCHPOST_FUZZ_SECS` sets the time
//! (default 20 s); `WATCHPOST_FUZZ_SEED` repeats a run.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use watchpost_fleet_protocol::{encode_batch, encode_json, fuzz_batch};

mod common;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"0",
    b"-1",
    b"18446744073709551615",
    b"4611686018427387904",
    b"null",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"[]",
    b"{}",
    b"1e999",
    b"\"kind\":\"ack\"",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let b = rng.next() as u8;
                input.insert(i, b);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64)) + 1;
                input.drain(i..i + n);
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a) + 1;
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            5 if len > 0 => input.truncate(rng.below(len)),
            6 => {
                let word = INTERESTING[rng.below(INTERESTING.len())];
                let at = rng.below(len + 1);
                let end = (at + rng.below(8)).min(len);
                input.splice(at..end, word.iter().copied());
            }
            _ => {
                // Change a number in the text.
                if let Some(i) = (0..len)
                    .map(|_| rng.below(len))
                    .find(|&i| input[i].is_ascii_digit())
                {
                    input[i] = b'0' + rng.below(10) as u8;
                }
            }
        }
    }
}

#[test]
fn batch_decoder_survives_mutated_input() {
    let secs: u64 = std::env::var("WATCHPOST_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("WATCHPOST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("fuzzing the batch decoder for {secs} s, WATCHPOST_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for (first, n) in [(1, 1), (7, 5), (100, 30)] {
        let b = common::sample(first, n);
        corpus.push(encode_json(&b, false));
        corpus.push(encode_batch(&b));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &mut input, &corpus);
            let result = std::panic::catch_unwind(|| fuzz_batch(&input));
            runs += 1;
            if result.is_err() {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target/fuzz-failures");
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("batch-{seed}-{runs}"));
                let _ = std::fs::write(&path, &input);
                panic!("fuzz_batch panicked; input saved to {}", path.display());
            }
        }
    }
    eprintln!("{runs} inputs decoded without a panic");
    assert!(runs > 1000, "only {runs} inputs in {secs} s");
}
