//! The shared fixtures: every SigmaHQ rule loads or is reported with a reason, and
//! hand-checked rule/EVTX pairs fire (or do not).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use watchpost_event::Event;
use watchpost_sigma::{Match, Ruleset};
use watchpost_sources::parse::ParseCtx;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn rules_dir() -> PathBuf {
    shared().join("sigma/rules")
}

fn evtx(rel: &str) -> Vec<Event> {
    let p = shared().join("evtx/attack-samples").join(rel);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (events, errors) =
        watchpost_sources::evtx::read_evtx(&ParseCtx::new("evtx", "localhost"), bytes, rel);
    assert!(errors.is_empty(), "{rel}: {errors:?}");
    events
}

fn all_rules() -> &'static Ruleset {
    static RS: std::sync::OnceLock<Ruleset> = std::sync::OnceLock::new();
    RS.get_or_init(|| Ruleset::load(&[rules_dir()]).0)
}

fn titles(rs: &Ruleset, events: &[Event]) -> Vec<String> {
    let mut out: Vec<Match> = Vec::new();
    for e in events {
        rs.matches(e, &mut out);
    }
    let mut t: Vec<String> = out.iter().map(|m| m.title.to_string()).collect();
    t.sort();
    t.dedup();
    t
}

fn count_yaml(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_yaml(&p);
        } else if p.extension().is_some_and(|x| x == "yml") {
            n += 1;
        }
    }
    n
}

#[test]
fn every_fixture_rule_loads_or_has_a_reason() {
    let (rs, errors) = Ruleset::load(&[rules_dir()]);
    let files = count_yaml(&rules_dir());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for e in &errors {
        assert!(!e.reason.is_empty());
        let key: String = e.reason.split(['`', ':']).next().unwrap_or("").trim().to_string();
        *reasons.entry(key).or_default() += 1;
        eprintln!("rejected: {e}");
    }
    eprintln!("{files} files: {} loaded, {} rejected: {reasons:?}", rs.len(), errors.len());
    assert_eq!(rs.len() + errors.len(), files);
    assert!(rs.len() >= files * 95 / 100, "too many rejected: {reasons:?}");
}

#[test]
#[ignore = "exploration: prints what fires on every fixture file"]
fn explore() {
    let rs = all_rules();
    let mut files = Vec::new();
    for d in std::fs::read_dir(shared().join("evtx/attack-samples")).unwrap().flatten() {
        if d.path().is_dir() {
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                let rel = format!("{}/{}", d.file_name().to_string_lossy(), f.file_name().to_string_lossy());
                if rel.ends_with(".evtx") {
                    files.push(rel);
                }
            }
        }
    }
    files.sort();
    for f in files {
        println!("{f}: {:?}", titles(rs, &evtx(&f)));
    }
}
