//! Persistence: reopen, snapshot and its loss, definition changes, reset, explain, list,
//! export/import, and replay equivalence.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use jiff::Timestamp;
use watchpost_anomaly::{AnomalySpec, Baselines, FilterId, Options, Verdict};

fn at(secs: i64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_772_352_000 + secs).unwrap())
}

const DAY: i64 = 86_400;

fn opts() -> Options {
    Options {
        flush_interval: None,
        snapshot_min_changes: 1000,
        ..Options::default()
    }
}

fn rdp_spec() -> AnomalySpec {
    let mut s = AnomalySpec::new(["TargetUserName"], ["IpAddress"]);
    s.learn_per_key = true;
    s
}

/// A deterministic event stream: (host, user, ip, seconds). xorshift, no dependencies.
fn events(n: usize, seed: u64) -> Vec<(String, String, String, i64)> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = 0;
    (0..n)
        .map(|_| {
            t += (next() % 600) as i64;
            let r = next();
            // A few users with many IPs early, new users and IPs keep appearing later.
            let user = format!("u{}", r % (5 + (t / DAY) as u64));
            let ip = format!(
                "10.0.{}.{}",
                (r >> 8) % 3,
                (r >> 16) % (4 + (t / (3 * DAY)) as u64)
            );
            let host = format!("h{}", (r >> 24) % 3);
            (host, user, ip, t)
        })
        .collect()
}

fn run(b: &Baselines, f: FilterId, ev: &[(String, String, String, i64)]) -> Vec<Verdict> {
    ev.iter()
        .map(|(h, u, ip, t)| b.check(f, h, &[u], &[ip], at(*t)))
        .collect()
}

#[test]
fn replay_gives_identical_verdicts_with_or_without_restarts() {
    let ev = events(20_000, 0x2545_f491_4f6c_dd1d);
    let d1 = tempfile::tempdir().unwrap();
    let b1 = Baselines::open(d1.path(), opts()).unwrap();
    let f1 = b1.filter("rdp", &rdp_spec()).unwrap().id;
    let first = run(&b1, f1, &ev);
    assert!(first.iter().any(Verdict::is_anomaly) && first.contains(&Verdict::Known));
    assert!(first.iter().any(|v| matches!(v, Verdict::Learning { .. })));

    // Same stream, fresh store, with a background flusher racing the checks.
    let d2 = tempfile::tempdir().unwrap();
    let b2 = Baselines::open(
        d2.path(),
        Options {
            flush_interval: Some(std::time::Duration::from_millis(1)),
            ..opts()
        },
    )
    .unwrap();
    let f2 = b2.filter("rdp", &rdp_spec()).unwrap().id;
    assert_eq!(run(&b2, f2, &ev), first);

    // Same stream, fresh store, closed and reopened (or dropped) every 3,000 events.
    let d3 = tempfile::tempdir().unwrap();
    let mut third = Vec::new();
    for (i, chunk) in ev.chunks(3000).enumerate() {
        let b = Baselines::open(d3.path(), opts()).unwrap();
        let f = b.filter("rdp", &rdp_spec()).unwrap().id;
        third.extend(run(&b, f, chunk));
        if i % 2 == 0 {
            b.close().unwrap();
        } else {
            b.flush().unwrap();
            drop(b);
        }
    }
    assert_eq!(third, first);
}

#[test]
fn reopen_keeps_pairs_clocks_and_learning_even_without_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = Baselines::open(dir.path(), opts()).unwrap();
        let f = b.filter("rdp", &rdp_spec()).unwrap().id;
        for i in 0..5000 {
            b.check(
                f,
                "ws1",
                &[&format!("user{}", i % 50)],
                &[&format!("10.1.{}.{}", i / 250, i % 250)],
                at(i),
            );
        }
        b.flush().unwrap();
        b.check(f, "ws1", &["late"], &["10.9.9.9"], at(6000));
        b.close().unwrap();
    }
    for damage in [false, true] {
        if damage {
            let snap = dir.path().join("pairs.snap");
            let mut bytes = std::fs::read(&snap).unwrap();
            let n = bytes.len();
            bytes[n / 2] ^= 0xff;
            std::fs::write(&snap, bytes).unwrap();
        }
        let b = Baselines::open(dir.path(), opts()).unwrap();
        let f = b.filter("rdp", &rdp_spec()).unwrap().id;
        assert_eq!(b.stats().pairs, 5001, "damaged snapshot: {damage}");
        assert_eq!(b.stats().opened_from_snapshot, !damage);
        assert_eq!(
            b.check(f, "ws1", &["user7"], &["10.1.0.7"], at(20 * DAY)),
            Verdict::Known
        );
        assert!(b.contains(f, "ws1", &["late"], &["10.9.9.9"]));
        // user7's learning started at second 7 and ended 14 days later.
        assert!(
            b.check(f, "ws1", &["user7"], &["172.16.0.1"], at(20 * DAY))
                .is_anomaly()
        );
        let l = b.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].keys, l[0].pairs), (51, 5002));
        assert_eq!(l[0].learning_started, at(0).unwrap());
        assert_eq!(l[0].clock, at(20 * DAY).unwrap());
        b.compact().unwrap();
        assert_eq!(
            b.check(f, "ws1", &["user8"], &["10.1.0.8"], at(20 * DAY)),
            Verdict::Known
        );
        b.reset("rdp", None).unwrap();
        b.close().unwrap();
        // Put the data back for the second round.
        if !damage {
            let b = Baselines::open(dir.path(), opts()).unwrap();
            let f = b.filter("rdp", &rdp_spec()).unwrap().id;
            for i in 0..5000 {
                b.check(
                    f,
                    "ws1",
                    &[&format!("user{}", i % 50)],
                    &[&format!("10.1.{}.{}", i / 250, i % 250)],
                    at(i),
                );
            }
            b.check(f, "ws1", &["late"], &["10.9.9.9"], at(6000));
            b.close().unwrap();
        }
    }
}

#[test]
fn snapshot_plus_deltas_after_a_crash_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let b = Baselines::open(dir.path(), opts()).unwrap();
    let f = b.filter("rdp", &rdp_spec()).unwrap().id;
    for i in 0..3500 {
        b.check(f, "h", &["u"], &[&i.to_string()], at(i));
        if i % 500 == 499 {
            b.flush().unwrap(); // snapshots happen every 1000 changes, deltas in between
        }
    }
    b.check(f, "h", &["u"], &["never flushed"], at(4000));
    // Like a crash: copy the files as they are now (no final flush, no fresh snapshot).
    let copy = tempfile::tempdir().unwrap();
    for name in ["baseline.redb", "pairs.snap"] {
        std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
    }
    drop(b);
    let b = Baselines::open(copy.path(), opts()).unwrap();
    let f = b.filter("rdp", &rdp_spec()).unwrap().id;
    assert_eq!(b.stats().pairs, 3500);
    assert!(b.stats().opened_from_snapshot);
    assert!(b.contains(f, "h", &["u"], &["3499"]) && b.contains(f, "h", &["u"], &["0"]));
    assert!(!b.contains(f, "h", &["u"], &["never flushed"]));
}

#[test]
fn definition_change_starts_a_fresh_baseline_other_changes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let b = Baselines::open(dir.path(), opts()).unwrap();
    let f = b.filter("rdp", &rdp_spec()).unwrap().id;
    let other = b
        .filter("other", &AnomalySpec::new(["a"], ["b"]))
        .unwrap()
        .id;
    b.check(f, "h1", &["alice"], &["1.1.1.1"], at(0));
    b.check(f, "h2", &["alice"], &["1.1.1.1"], at(0));
    b.check(other, "h1", &["x"], &["y"], at(0));
    b.close().unwrap();

    let b = Baselines::open(dir.path(), opts()).unwrap();
    // Longer learning and a cap: same definition, baseline kept.
    let mut s = rdp_spec();
    s.learning = std::time::Duration::from_secs(30 * DAY as u64);
    s.max_values_per_key = 5;
    let r = b.filter("rdp", &s).unwrap();
    assert!(r.definition_changed.is_none());
    assert_eq!(
        b.check(r.id, "h1", &["alice"], &["1.1.1.1"], at(20 * DAY)),
        Verdict::Learning {
            until: at(30 * DAY).unwrap()
        }
    );
    // New value field: fresh baseline, reported.
    let s2 = AnomalySpec {
        value: vec!["IpAddress".into(), "WorkstationName".into()],
        ..rdp_spec()
    };
    let r = b.filter("rdp", &s2).unwrap();
    let change = r.definition_changed.expect("reported");
    assert_eq!(change.hosts_reset, 2);
    assert_eq!(change.old.1, vec!["IpAddress"]);
    assert_eq!(
        b.check(r.id, "h1", &["alice"], &["1.1.1.1", "WS"], at(20 * DAY)),
        Verdict::Learning {
            until: at(34 * DAY).unwrap()
        }
    );
    assert_eq!(
        b.list()
            .unwrap()
            .iter()
            .filter(|h| h.filter == "rdp")
            .count(),
        1
    );
    let other = b
        .filter("other", &AnomalySpec::new(["a"], ["b"]))
        .unwrap()
        .id;
    assert!(
        b.contains(other, "h1", &["x"], &["y"]),
        "other filters keep theirs"
    );
    b.close().unwrap();
    let b = Baselines::open(dir.path(), opts()).unwrap();
    assert!(
        b.filter("rdp", &s2).unwrap().definition_changed.is_none(),
        "the new definition was stored"
    );
}

#[test]
fn explain_reset_export_import() {
    let dir = tempfile::tempdir().unwrap();
    let b = Baselines::open(dir.path(), opts()).unwrap();
    let f = b.filter("rdp", &rdp_spec()).unwrap().id;
    b.check(f, "ws1", &["alice"], &["10.0.0.2"], at(100));
    b.check(f, "ws1", &["alice"], &["10.0.0.1"], at(50)); // out of order: judged at the clock (100)
    b.check(f, "ws1", &["bob"], &["10.0.0.1"], at(200));
    b.check(f, "ws2", &["alice"], &["10.0.0.7"], at(300));
    let e = b.explain("rdp", "ws1", &["alice"]).unwrap();
    assert!(e.learn_per_key);
    assert_eq!(e.learning_started, at(100));
    assert_eq!(e.learning_ends, at(100 + 14 * DAY));
    let vals: Vec<_> = e
        .values
        .iter()
        .map(|v| (v.value[0].as_str(), v.first_seen))
        .collect();
    assert_eq!(
        vals,
        [
            ("10.0.0.1", at(100).unwrap()),
            ("10.0.0.2", at(100).unwrap())
        ]
    );
    assert!(b.explain("nope", "ws1", &[]).is_err());
    let unknown = b.explain("rdp", "ws1", &["nobody"]).unwrap();
    assert!(unknown.learning_started.is_none() && unknown.values.is_empty());

    let mut out = Vec::new();
    assert_eq!(b.export(&mut out).unwrap(), 4);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.starts_with("{\"kind\":\"baseline\",\"format\":1}\n"),
        "{text}"
    );
    assert!(text.contains(r#"{"kind":"pair","filter":"rdp","host":"ws1","key":["bob"],"value":["10.0.0.1"],"first_seen":"2026-03-01T08:03:20Z"}"#), "{text}");

    assert_eq!(b.reset("rdp", Some("ws1")).unwrap(), 1);
    assert_eq!(b.list().unwrap().len(), 1);
    assert_eq!(
        b.check(f, "ws1", &["alice"], &["10.0.0.2"], at(30 * DAY)),
        Verdict::Learning {
            until: at(44 * DAY).unwrap()
        }
    );
    assert_eq!(b.reset("rdp", Some("ws1")).unwrap(), 1);

    // Import into a fresh store: same baseline, same verdicts.
    let d2 = tempfile::tempdir().unwrap();
    let b2 = Baselines::open(d2.path(), opts()).unwrap();
    assert_eq!(b2.import(&mut out.as_slice()).unwrap(), 4);
    let f2 = b2.filter("rdp", &rdp_spec()).unwrap();
    assert!(f2.definition_changed.is_none());
    assert_eq!(
        b2.check(f2.id, "ws1", &["bob"], &["10.0.0.1"], at(20 * DAY)),
        Verdict::Known
    );
    assert!(
        b2.check(f2.id, "ws1", &["bob"], &["10.0.0.9"], at(20 * DAY))
            .is_anomaly()
    );
    let mut again = Vec::new();
    b2.import(&mut out.as_slice()).unwrap();
    b2.export(&mut again).unwrap();
    assert_eq!(
        String::from_utf8(again)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"pair\""))
            .count(),
        5,
        "idempotent + 1 new"
    );
    // A file with another definition of the same filter is refused.
    let bad = text.replace(r#""value":["IpAddress"]"#, r#""value":["Other"]"#);
    assert!(b2.import(&mut bad.as_bytes()).is_err());
    assert!(
        b2.import(&mut "{\"kind\":\"nonsense\"}".as_bytes())
            .is_err()
    );
}

#[test]
fn concurrent_checks_flushes_and_resets_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let b = std::sync::Arc::new(
        Baselines::open(
            dir.path(),
            Options {
                flush_interval: Some(std::time::Duration::from_millis(2)),
                ..opts()
            },
        )
        .unwrap(),
    );
    let f = b.filter("rdp", &rdp_spec()).unwrap().id;
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..5_000i64 {
                    b.check(
                        f,
                        &format!("h{}", i % 4),
                        &[&format!("u{w}")],
                        &[&i.to_string()],
                        at(i),
                    );
                }
            })
        })
        .collect();
    for _ in 0..8 {
        b.reset("rdp", Some("h3")).unwrap();
        b.flush().unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
    let pairs = b.stats().pairs;
    let listed: u64 = b.list().unwrap().iter().map(|h| h.pairs).sum();
    assert_eq!(listed, pairs);
    let b = std::sync::Arc::into_inner(b).unwrap();
    b.close().unwrap();
    let b = Baselines::open(dir.path(), opts()).unwrap();
    assert_eq!(b.stats().pairs, pairs);
    assert!(b.stats().opened_from_snapshot);
}

#[test]
fn snapshot_deleted_while_running_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let b = Baselines::open(dir.path(), opts()).unwrap();
    let f = b.filter("rdp", &rdp_spec()).unwrap().id;
    let mut n = 0;
    for round in 0..4 {
        for _ in 0..1200 {
            b.check(f, "h", &["u"], &[&n.to_string()], at(n));
            n += 1;
        }
        b.flush().unwrap();
        if round == 1 {
            std::fs::remove_file(dir.path().join("pairs.snap")).unwrap();
        }
    }
    // No close: the snapshot written by a later flush (from a copy of the table) is used.
    let copy = tempfile::tempdir().unwrap();
    for name in ["baseline.redb", "pairs.snap"] {
        std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
    }
    drop(b);
    let b = Baselines::open(copy.path(), opts()).unwrap();
    assert!(b.stats().opened_from_snapshot);
    assert_eq!(b.stats().pairs, 4800);
}
