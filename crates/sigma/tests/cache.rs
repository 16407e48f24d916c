//! The compiled-rule cache: rules taken from it (their detections compiled at first use)
//! match exactly as rules compiled as they load, and what the cache holds follows the
//! rule files, the placeholder values and damage to the cache file.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use watchpost_event::{Event, Sym, Value};
use watchpost_sigma::{LoadError, LoadOptions, Match, Placeholders, Ruleset};
use watchpost_sources::parse::ParseCtx;

mod common;
use common::{evtx_files, shared};

fn with_cache(cache: &Path) -> LoadOptions {
    LoadOptions {
        cache: Some(cache.to_path_buf()),
        ..LoadOptions::default()
    }
}

/// Every record of every EVTX file under `dir`.
fn records(dir: &Path) -> Vec<Event> {
    let mut files = Vec::new();
    evtx_files(dir, &mut files);
    let mut out = Vec::new();
    for p in files {
        let bytes = std::fs::read(&p).unwrap();
        let place = p.to_string_lossy().into_owned();
        let ctx = ParseCtx::new("evtx", "localhost");
        out.extend(watchpost_sources::evtx::read_evtx(&ctx, bytes, &place).0);
    }
    out
}

/// A folder `rules` in `dir` with `a.yml`, the rule [`WHOAMI`].
fn whoami_rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("a.yml"), WHOAMI).unwrap();
    rules
}

/// The matches of every event, one list per event.
fn all_matches(rs: &Ruleset, events: &[Event]) -> Vec<Vec<Match>> {
    events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            rs.matches(e, &mut out);
            out
        })
        .collect()
}

/// What a rule set holds, to compare two loads of the same rules.
fn shape(rs: &Ruleset) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        rs.rules(),
        rs.correlations(),
        rs.filters(),
        rs.channels().collect::<Vec<_>>()
    )
}

fn ev(fields: &[(&str, &str)]) -> Event {
    let mut e = Event::new(Arc::from("evtx"), Arc::from("pc"), String::new());
    for (k, v) in fields {
        e.push(Sym::new(k), Value::Str((*v).into()));
    }
    e.finish();
    e
}

fn titles(rs: &Ruleset, e: &Event) -> Vec<String> {
    let mut out = Vec::new();
    rs.matches(e, &mut out);
    out.iter().map(|m| m.title.to_string()).collect()
}

fn whoami(image: &str) -> Event {
    ev(&[
        ("channel", "Microsoft-Windows-Sysmon/Operational"),
        ("event_id", "1"),
        ("Image", image),
    ])
}

const WHOAMI: &str = r"title: Whoami
id: 11111111-2222-3333-4444-555555555555
logsource: { product: windows, category: process_creation }
detection:
    sel:
        Image|endswith: '\whoami.exe'
    condition: sel
";

#[test]
fn rules_from_the_cache_match_exactly_as_rules_compiled_when_loaded() {
    let rules = shared().join("sigma/rules");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("rules.cache");
    let (eager, eager_errors) = Ruleset::load(&[&rules]);
    let (cold, cold_errors) = Ruleset::load_with(&[&rules], &with_cache(&cache));
    let (warm, warm_errors) = Ruleset::load_with(&[&rules], &with_cache(&cache));
    let files = eager.stats().files;
    assert_eq!((cold.stats().cached, cold.stats().deferred), (0, 0));
    assert_eq!(warm.stats().cached, files);
    assert_eq!(warm.stats().damaged, 0);
    assert!(warm.cache_note().is_none(), "{:?}", warm.cache_note());
    // Every form of every rule waits for its first use.
    let forms: usize = warm.rules().iter().map(|r| r.keys.len()).sum();
    assert_eq!(warm.stats().deferred, forms);
    assert_eq!(warm.compiled(), (0, 0));
    assert_eq!(cold_errors, eager_errors);
    assert_eq!(warm_errors, eager_errors);
    assert_eq!(shape(&cold), shape(&eager));
    assert_eq!(shape(&warm), shape(&eager));

    let events = records(&shared().join("evtx"));
    assert!(events.len() > 1000, "{}", events.len());
    let want = all_matches(&eager, &events);
    assert!(want.iter().map(Vec::len).sum::<usize>() > 100);
    assert_eq!(all_matches(&cold, &events), want);
    // The warm set evaluated on two threads at once: forms compile once, whichever
    // thread reaches them first, and both see the same conditions.
    let (a, b) = events.split_at(events.len() / 2);
    let (ma, mb) = std::thread::scope(|s| {
        let ta = s.spawn(|| all_matches(&warm, a));
        let tb = s.spawn(|| all_matches(&warm, b));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!([ma, mb].concat(), want);
    let (compiled, failed) = warm.compiled();
    assert_eq!(failed, 0);
    assert!(compiled > 0 && compiled < forms, "{compiled} of {forms}");
    // Without the index and the needles, every form of an event's channel is compiled
    // and evaluated: still the same detections.
    for e in events.iter().step_by(7) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        eager.matches_unindexed(e, &mut x);
        warm.matches_unindexed(e, &mut y);
        assert_eq!(x, y);
    }
    assert!(warm.compiled().0 > compiled);
    assert_eq!(warm.compiled().1, 0);
}

#[test]
fn a_changed_rule_file_is_compiled_again_and_a_removed_one_leaves_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let rules = whoami_rules(dir.path());
    std::fs::write(
        rules.join("b.yml"),
        WHOAMI
            .replace("title: Whoami", "title: Net")
            .replace("whoami.exe", "net.exe")
            .replace("555555555555", "666666666666"),
    )
    .unwrap();
    let cache = dir.path().join("c").join("rules.cache");
    let opts = with_cache(&cache);
    let load = || {
        let (rs, errors) = Ruleset::load_with(&[&rules], &opts);
        assert!(errors.is_empty(), "{errors:?}");
        rs
    };
    assert_eq!(load().stats().cached, 0);
    let rs = load();
    assert_eq!(rs.stats().cached, 2);
    assert_eq!(titles(&rs, &whoami(r"C:\x\net.exe")), ["Net"]);
    // b's detection changes: b is compiled again, and what it now says is what matches.
    let text = std::fs::read_to_string(rules.join("b.yml")).unwrap();
    std::fs::write(rules.join("b.yml"), text.replace("net.exe", "net1.exe")).unwrap();
    let rs = load();
    assert_eq!(rs.stats().cached, 1);
    assert!(titles(&rs, &whoami(r"C:\x\net.exe")).is_empty());
    assert_eq!(titles(&rs, &whoami(r"C:\x\NET1.EXE")), ["Net"]);
    let rs = load();
    assert_eq!(rs.stats().cached, 2);
    assert_eq!(titles(&rs, &whoami(r"C:\x\NET1.EXE")), ["Net"]);
    // A removed file's entry leaves the cache when it is rewritten.
    std::fs::remove_file(rules.join("b.yml")).unwrap();
    assert_eq!(load().stats().cached, 1);
    let lines = std::fs::read_to_string(&cache).unwrap().lines().count();
    assert_eq!(lines, 2, "the header and a.yml's entry");
    // Two files with the same bytes share one entry.
    std::fs::write(rules.join("b.yml"), WHOAMI).unwrap();
    assert_eq!(load().stats().cached, 2);
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 2);
}

/// Rule files under `dir/rules`: a rule that loads, a deprecated one, two that do not
/// compile, one without a title, a file that is not YAML and a rule whose placeholder has
/// no values.
fn mixed_rules(dir: &Path) -> PathBuf {
    let rules = whoami_rules(dir);
    std::fs::write(
        rules.join("b.yml"),
        format!(
            "{}---\ntitle: Bad modifier\nlogsource: {{ product: windows, service: security }}\ndetection:\n    sel:\n        TargetUserName|nonesuch: x\n    condition: sel\n---\ntitle: Bad regex\nlogsource: {{ product: windows, service: security }}\ndetection:\n    sel:\n        TargetUserName|re: 'a(b'\n    condition: sel\n---\nlogsource: {{ product: windows }}\n",
            WHOAMI
                .replace("Whoami", "Old whoami")
                .replace("555555555555", "777777777777")
                .replace("detection:", "status: deprecated\ndetection:")
        ),
    )
    .unwrap();
    std::fs::write(rules.join("c.yml"), "title: [unclosed\n").unwrap();
    std::fs::write(
        rules.join("d.yml"),
        "title: Placeholder\nlogsource: { product: windows, service: security }\ndetection:\n    sel:\n        TargetUserName|expand: '%Admins%'\n    condition: sel\n",
    )
    .unwrap();
    rules
}

#[test]
fn rules_that_do_not_load_are_reported_from_the_cache_as_when_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let rules = mixed_rules(dir.path());
    let cache = dir.path().join("rules.cache");
    let skip = |cache: Option<&Path>, skip: bool| LoadOptions {
        cache: cache.map(Path::to_path_buf),
        skip_status: if skip {
            vec!["deprecated".into()]
        } else {
            vec![]
        },
        ..LoadOptions::default()
    };
    let reasons = |e: &[LoadError]| -> Vec<String> { e.iter().map(|e| e.to_string()).collect() };
    // Skipping deprecated rules, as a hunt does.
    let (eager, eager_errors) = Ruleset::load_with(&[&rules], &skip(None, true));
    assert_eq!(eager.len(), 1);
    let kinds: Vec<&str> = eager_errors.iter().map(LoadError::kind).collect();
    assert_eq!(
        kinds,
        [
            "status deprecated",
            "unsupported or invalid",
            "unsupported or invalid",
            "no title",
            "YAML error",
            "placeholder without values"
        ],
        "{eager_errors:?}"
    );
    for _ in 0..2 {
        let (rs, errors) = Ruleset::load_with(&[&rules], &skip(Some(&cache), true));
        assert_eq!(reasons(&errors), reasons(&eager_errors));
        assert_eq!(shape(&rs), shape(&eager));
    }
    assert_eq!(
        Ruleset::load_with(&[&rules], &skip(Some(&cache), true))
            .0
            .stats()
            .cached,
        4
    );
    // Loading deprecated rules too: the entry written by a run that skipped the rule
    // did not compile it, so its file is compiled again (as loading without the cache
    // does) and its new entry defers both rules from then on.
    let (all, all_errors) = Ruleset::load_with(&[&rules], &skip(None, false));
    assert_eq!(all.len(), 2);
    for cached in [3, 4] {
        let (rs, errors) = Ruleset::load_with(&[&rules], &skip(Some(&cache), false));
        assert_eq!((rs.stats().cached, rs.stats().damaged), (cached, 0));
        assert_eq!(reasons(&errors), reasons(&all_errors));
        assert_eq!(shape(&rs), shape(&all));
        assert_eq!(
            titles(&rs, &whoami(r"C:\WHOAMI.exe")),
            ["Whoami", "Old whoami"]
        );
    }
    let (rs, _) = Ruleset::load_with(&[&rules], &skip(Some(&cache), false));
    let forms: usize = rs.rules().iter().map(|r| r.keys.len()).sum();
    assert_eq!(rs.stats().deferred, forms);
    // And skipping it again takes the new entry as it is.
    let (rs, errors) = Ruleset::load_with(&[&rules], &skip(Some(&cache), true));
    assert_eq!(rs.stats().cached, 4);
    assert_eq!(reasons(&errors), reasons(&eager_errors));
    // Placeholder values are part of what an entry is valid for.
    let mut vars = Placeholders::new();
    vars.insert("Admins", vec!["root".into()]);
    let with_vars = LoadOptions {
        placeholders: vars,
        ..skip(Some(&cache), true)
    };
    let (rs, errors) = Ruleset::load_with(&[&rules], &with_vars);
    assert_eq!((rs.stats().cached, rs.len()), (0, 2), "{errors:?}");
    assert!(rs.cache_note().is_none());
    let (rs, _) = Ruleset::load_with(&[&rules], &with_vars);
    assert_eq!(rs.stats().cached, 4);
    let logon = ev(&[
        ("channel", "Security"),
        ("event_id", "4624"),
        ("TargetUserName", "ROOT"),
    ]);
    assert_eq!(titles(&rs, &logon), ["Placeholder"]);
}

#[test]
fn a_damaged_or_foreign_cache_is_ignored_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let rules = mixed_rules(dir.path());
    let cache = dir.path().join("rules.cache");
    let opts = with_cache(&cache);
    let (eager, eager_errors) = Ruleset::load(&[&rules]);
    let load = || {
        let (rs, errors) = Ruleset::load_with(&[&rules], &opts);
        assert_eq!(errors, eager_errors);
        assert_eq!(shape(&rs), shape(&eager));
        let e = whoami(r"C:\Windows\whoami.exe");
        assert_eq!(titles(&rs, &e), titles(&eager, &e));
        rs
    };
    load();
    let good = std::fs::read_to_string(&cache).unwrap();
    assert_eq!(load().stats().cached, 4);

    // One byte of a.yml's detection changed: that entry is not used, the file is
    // compiled again, and the cache is repaired.
    let damaged = good.replacen("whoami.exe", "whoami.exf", 1);
    assert_ne!(damaged, good);
    std::fs::write(&cache, &damaged).unwrap();
    let rs = load();
    assert_eq!((rs.stats().cached, rs.stats().damaged), (3, 1));
    assert!(
        rs.cache_note().is_some_and(|n| n.contains("1 damaged")),
        "{:?}",
        rs.cache_note()
    );
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), good);

    // Cut short in the middle of its last line.
    std::fs::write(&cache, &good[..good.len() - 10]).unwrap();
    let rs = load();
    assert_eq!((rs.stats().cached, rs.stats().damaged), (3, 1));
    assert!(rs.cache_note().is_some());
    assert_eq!(load().stats().cached, 4);

    // Not a cache at all, or empty: ignored, said, and written anew.
    for junk in ["junk\nmore junk\n", "", "\u{0}\u{1}"] {
        std::fs::write(&cache, junk).unwrap();
        let rs = load();
        assert_eq!(rs.stats().cached, 0);
        assert!(
            rs.cache_note().is_some_and(|n| n.contains("ignored")),
            "{junk:?}: {:?}",
            rs.cache_note()
        );
        assert_eq!(load().stats().cached, 4);
    }
    // A cache of another build or format: not used, quietly.
    let other = good.replacen("build=", "build=0", 1);
    std::fs::write(&cache, other).unwrap();
    let rs = load();
    assert_eq!(rs.stats().cached, 0);
    assert!(rs.cache_note().is_none());
    std::fs::write(&cache, good.replacen("compiled 2", "compiled 1", 1)).unwrap();
    assert_eq!(load().stats().cached, 0);
    // A line that claims a huge checksum-valid entry of nonsense: decoding fails, the
    // file is compiled again.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let (digest, _) = lines[1].split_at(64);
    let entry = r#"{"d":[{"d":{"t":"x","i":null,"s":null,"b":{"rule":{"n":null,"l":"high","g":[],"p":"windows","c":"nonesuch","s":null,"x":null,"d":9,"f":[],"v":[]}}}}]}"#;
    lines[1] = sigma_line(digest, entry);
    std::fs::write(&cache, lines.join("\n") + "\n").unwrap();
    let rs = load();
    assert_eq!((rs.stats().cached, rs.stats().damaged), (3, 1));
}

/// A cache line with a correct checksum (the entry's XXH3-64).
fn sigma_line(digest: &str, entry: &str) -> String {
    let check = xxhash_rust::xxh3::xxh3_64(entry.as_bytes());
    format!("{digest} {check:016x} {entry}")
}

#[test]
fn filter_documents_apply_to_rules_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let rules = whoami_rules(dir.path());
    std::fs::write(
        rules.join("f.yml"),
        "title: Not from the jump host\nlogsource:\n    product: windows\nfilter:\n    rules:\n        - 11111111-2222-3333-4444-555555555555\n    jump:\n        Computer|startswith: 'JUMP'\n    condition: not jump\n",
    )
    .unwrap();
    let cache = dir.path().join("rules.cache");
    let on = |host: &str| {
        ev(&[
            ("channel", "Microsoft-Windows-Sysmon/Operational"),
            ("event_id", "1"),
            ("Image", r"C:\Windows\System32\whoami.exe"),
            ("computer", host),
        ])
    };
    for round in 0..2 {
        let (rs, errors) = Ruleset::load_with(&[&rules], &with_cache(&cache));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(rs.stats().cached, round * 2);
        assert_eq!(rs.filters(), ["Not from the jump host"]);
        assert_eq!(titles(&rs, &on("WS-17")), ["Whoami"]);
        assert!(titles(&rs, &on("jump01")).is_empty());
    }
}
