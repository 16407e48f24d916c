//! A clone of the repository alone is enough: `git clone` it into a directory with
//! nothing beside it (no `../shared`), then, there, run the demo's steps and a sample of
//! the tests that read the sample data.
//!
//! What it proves: the committed tree (HEAD, not uncommitted changes) carries what the
//! demo and those tests read — the demo writes its own SEP records, the tests find their
//! SEP logs and EVTX files in the clone's `tests/data`. What it does not: the demo runs
//! this build's binary (`WATCHPOST_BIN`) instead of building one in the clone, and the
//! sample tests are compiled with a build directory kept from run to run (registry crates
//! from Cargo's local cache, offline), so only the first run compiles their dependencies.
//! The clone and that build directory live in this workspace's `target/bare-clone/` (the
//! clone always at the same path, so repeated runs reuse one set of build artifacts).
//! A cold build from nothing is timed in BENCHMARKS.md instead.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` to its end or kills it after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let start = Instant::now();
    let out = std::thread::scope(|s| {
        let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let o = s.spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut so, &mut v).ok();
            v
        });
        let e = s.spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut se, &mut v).ok();
            v
        });
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Output {
            status,
            stdout: o.join().unwrap(),
            stderr: e.join().unwrap(),
        }
    });
    assert!(
        start.elapsed() <= limit,
        "{cmd:?} ran longer than {limit:?} and was killed:\n{}",
        text(&out)
    );
    out
}

#[test]
#[cfg_attr(
    windows,
    ignore = "clones with git and runs bash, python3 and cargo, which Wine does not provide"
)]
fn a_clone_alone_runs_the_demo_and_the_tests_on_its_own_data() {
    let root = root();
    let git = Command::new("git")
        .args(["-C", &root.display().to_string(), "rev-parse", "--git-dir"])
        .output();
    if !git.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs from a git checkout, and git must be installed"
        );
        eprintln!("skipped: this source tree is not a git checkout (or git is missing)");
        return;
    }
    let home = root.join("target/bare-clone");
    let parent = home.join("clone");
    let clone = parent.join("watchpost");
    if parent.exists() {
        std::fs::remove_dir_all(&parent).unwrap();
    }
    std::fs::create_dir_all(&parent).unwrap();
    let out = run_bounded(
        Command::new("git")
            .args(["clone", "--quiet", &root.display().to_string()])
            .arg(&clone),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "git clone:\n{}", text(&out));
    assert_eq!(
        std::fs::read_dir(&parent).unwrap().count(),
        1,
        "nothing beside the clone"
    );
    assert!(clone.join("tests/data/README.md").is_file());

    // The demo's steps, with this build's binary: both SEP records it writes reach the
    // stand-in SIEM.
    let out = run_bounded(
        Command::new("bash")
            .arg(clone.join("scripts/demo.sh"))
            .env("WATCHPOST_BIN", env!("CARGO_BIN_EXE_watchpost"))
            .env_remove("WATCHPOST_STATE_DIR")
            .env_remove("WATCHPOST_SEP_LOGS")
            .env_remove("WATCHPOST_SIEM"),
        Duration::from_secs(120),
    );
    let t = text(&out);
    assert!(out.status.success(), "demo:\n{t}");
    let received: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("SIEM received:"))
        .collect();
    assert_eq!(received.len(), 2, "demo:\n{t}");
    assert!(
        received[0].contains("sep-virus-found: EICAR Test String"),
        "{t}"
    );
    assert!(
        received[1].contains("sep-ips-system-infected: System Infected: Tidserv Activity 2"),
        "{t}"
    );

    // A sample of the tests, compiled and run in the clone: the SEP client and manager
    // parsers and the EVTX reader over the clone's tests/data.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run_bounded(
        Command::new(cargo)
            .current_dir(&clone)
            .args([
                "test",
                "--offline",
                "--locked",
                "-p",
                "watchpost-sources",
                "--test",
                "parsers",
                "--test",
                "parsers_manager",
                "--test",
                "evtx",
            ])
            .env("CARGO_TARGET_DIR", home.join("target"))
            .env_remove("RUSTFLAGS"),
        Duration::from_secs(1200),
    );
    let t = text(&out);
    assert!(out.status.success(), "cargo test in the clone:\n{t}");
    let passed: u64 = t
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(passed >= 10, "{passed} tests passed in the clone:\n{t}");
    std::fs::remove_dir_all(&parent).unwrap();
}
