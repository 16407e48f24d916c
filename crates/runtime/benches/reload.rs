//! How long a reload of the built-in configuration takes: the daemon's runtime runs the
//! built-in configuration (SEP log folders and the state directory in a temporary
//! directory), then reloads 100 times, alternating between the built-in configuration
//! and the same plus one filter (so every reload builds and publishes a new generation;
//! the sources and the action stay untouched). Reported: each `Runtime::reload` call,
//! from reading the file to the new generation published.
//! Run: `cargo bench -p watchpost-runtime --bench reload`.

// A bench may unwrap: a failure ends it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use watchpost_config::{ConfigSource, DEFAULT_CONFIG, Purpose};
use watchpost_runtime::{Outcome, Runtime, reload};

fn main() {
    // The built-in configuration reads its folders from the environment: run again with
    // them set.
    if std::env::var_os("WATCHPOST_STATE_DIR").is_none() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("sep");
        std::fs::create_dir_all(&logs).unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env("WATCHPOST_STATE_DIR", dir.path().join("state"))
            .env("WATCHPOST_SEP_LOGS", &logs)
            .env("WATCHPOST_BENCH_DIR", dir.path())
            .status()
            .unwrap();
        drop(dir);
        std::process::exit(status.code().unwrap_or(1));
    }
    let dir = std::path::PathBuf::from(std::env::var_os("WATCHPOST_BENCH_DIR").unwrap());
    let dir = &dir;
    let extra = format!(
        "{DEFAULT_CONFIG}\n[[filter]]\nname = \"bench-extra\"\nmatch = {{ source = \"sep-av\", risk_name = \"EICAR\" }}\nactions = [\"siem\"]\n"
    );
    let base = dir.join("base.toml");
    let more = dir.join("more.toml");
    std::fs::write(&base, DEFAULT_CONFIG).unwrap();
    std::fs::write(&more, extra).unwrap();
    let loaded = watchpost_config::load(&ConfigSource::File(base.clone()), Purpose::Run).unwrap();
    let (handle, _requests) = reload::channel();
    let mut rt = Runtime::start(ConfigSource::File(base.clone()), loaded, handle).unwrap();
    let mut took = Vec::new();
    for i in 0..100 {
        let source = ConfigSource::File(if i % 2 == 0 {
            more.clone()
        } else {
            base.clone()
        });
        let t = Instant::now();
        let outcome = rt.reload(&source);
        took.push(t.elapsed());
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reload of the built-in configuration (+/- one filter), 100 reloads: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms (generation {})",
        ms(took[50]),
        ms(took[90]),
        ms(took[99]),
        rt.generation()
    );
    rt.stop();
}
