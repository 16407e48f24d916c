//! The three examples of the anomaly seed (EventSentry's documentation), at engine level,
//! each with and without `learn_per_key`, before and after the learning period; plus the
//! time rules (out-of-order, missing times) and the limits.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jiff::Timestamp;
use watchpost_anomaly::{AnomalySpec, Baselines, FilterId, Options, Verdict};

const DAY: i64 = 86_400;

fn at(days: f64) -> Option<Timestamp> {
    let base: Timestamp = "2026-03-01T08:00:00Z".parse().unwrap();
    Some(Timestamp::from_second(base.as_second() + (days * DAY as f64) as i64).unwrap())
}

fn learning_until(days: f64) -> Verdict {
    Verdict::Learning {
        until: at(days).unwrap(),
    }
}

fn store() -> (tempfile::TempDir, Baselines) {
    let dir = tempfile::tempdir().unwrap();
    let b = Baselines::open(
        dir.path(),
        Options {
            flush_interval: None,
            ..Options::default()
        },
    )
    .unwrap();
    (dir, b)
}

fn spec(key: &[&str], value: &[&str], per_key: bool) -> AnomalySpec {
    let mut s = AnomalySpec::new(key.iter().copied(), value.iter().copied());
    s.learn_per_key = per_key;
    s
}

/// Example 1: a user logs on over RDP (4624, LogonType 10) from a new IP address.
/// Key TargetUserName, value IpAddress.
fn rdp(per_key: bool) -> (tempfile::TempDir, Baselines, FilterId) {
    let (d, b) = store();
    let f = b
        .filter(
            "rdp-new-source-ip",
            &spec(&["TargetUserName"], &["IpAddress"], per_key),
        )
        .unwrap()
        .id;
    // Learning: first match on ws1 at day 0 starts a 14-day period.
    assert_eq!(
        b.check(f, "ws1", &["alice"], &["10.0.0.1"], at(0.0)),
        learning_until(14.0)
    );
    assert_eq!(
        b.check(f, "ws1", &["bob"], &["10.0.0.2"], at(1.0)),
        if per_key {
            learning_until(15.0)
        } else {
            learning_until(14.0)
        }
    );
    assert_eq!(
        b.check(f, "ws1", &["alice"], &["10.0.0.3"], at(13.9)),
        learning_until(14.0),
        "new during learning: recorded, not flagged"
    );
    (d, b, f)
}

#[test]
fn rdp_new_source_ip_without_learn_per_key() {
    let (_d, b, f) = rdp(false);
    assert_eq!(
        b.check(f, "ws1", &["alice"], &["10.0.0.1"], at(15.0)),
        Verdict::Known
    );
    assert_eq!(
        b.check(f, "ws1", &["alice"], &["10.0.0.3"], at(15.0)),
        Verdict::Known,
        "learned at 13.9 days"
    );
    let v = b.check(f, "ws1", &["alice"], &["192.0.2.66"], at(15.0));
    assert_eq!(
        v,
        Verdict::NewValue {
            key_first_seen: at(0.0).unwrap(),
            values_known: 2,
            stored: true
        }
    );
    assert!(v.is_anomaly());
    assert!(v.to_string().starts_with("new value for key"), "{v}");
    assert_eq!(
        b.check(f, "ws1", &["alice"], &["192.0.2.66"], at(15.1)),
        Verdict::Known,
        "joined the baseline"
    );
    // A user never seen during learning: a new key, flagged.
    let v = b.check(f, "ws1", &["mallory"], &["10.0.0.1"], at(16.0));
    assert_eq!(
        v,
        Verdict::NewKey {
            learning_ended: at(14.0).unwrap()
        }
    );
    assert_eq!(
        b.check(f, "ws1", &["mallory"], &["10.0.0.1"], at(16.0)),
        Verdict::Known
    );
    // Another host has its own learning clock, started by its own first match.
    assert_eq!(
        b.check(f, "ws2", &["alice"], &["192.0.2.66"], at(20.0)),
        learning_until(34.0)
    );
}

#[test]
fn rdp_new_source_ip_with_learn_per_key() {
    let (_d, b, f) = rdp(true);
    // bob's period ends at day 15, alice's at day 14.
    assert_eq!(
        b.check(f, "ws1", &["bob"], &["10.0.0.9"], at(14.5)),
        learning_until(15.0)
    );
    assert!(
        b.check(f, "ws1", &["alice"], &["10.0.0.9"], at(14.5))
            .is_anomaly()
    );
    assert_eq!(
        b.check(f, "ws1", &["bob"], &["10.0.0.9"], at(15.5)),
        Verdict::Known
    );
    // A new user after the filter's first two weeks gets its own learning period.
    assert_eq!(
        b.check(f, "ws1", &["carol"], &["10.0.0.1"], at(20.0)),
        learning_until(34.0)
    );
    assert_eq!(
        b.check(f, "ws1", &["carol"], &["10.0.0.5"], at(30.0)),
        learning_until(34.0)
    );
    assert_eq!(
        b.check(f, "ws1", &["carol"], &["10.0.0.5"], at(35.0)),
        Verdict::Known
    );
    let v = b.check(f, "ws1", &["carol"], &["203.0.113.1"], at(35.0));
    assert_eq!(
        v,
        Verdict::NewValue {
            key_first_seen: at(20.0).unwrap(),
            values_known: 2,
            stored: true
        }
    );
}

/// Example 2: processes per user (4688): key user, value process path. A process known for
/// one user is still an anomaly for another.
fn processes(per_key: bool) -> (tempfile::TempDir, Baselines, FilterId) {
    let (d, b) = store();
    let f = b
        .filter(
            "new-process-per-user",
            &spec(
                &["SubjectUserSid", "TargetUserSid"],
                &["NewProcessName"],
                per_key,
            ),
        )
        .unwrap()
        .id;
    let ipconfig = r"C:\Windows\System32\ipconfig.exe";
    let notepad = r"C:\Windows\System32\notepad.exe";
    assert!(
        !b.check(
            f,
            "pc",
            &["S-1-5-21-1-1001", "S-1-0-0"],
            &[ipconfig],
            at(0.0)
        )
        .is_anomaly()
    );
    assert!(
        !b.check(
            f,
            "pc",
            &["S-1-5-21-1-1002", "S-1-0-0"],
            &[notepad],
            at(2.0)
        )
        .is_anomaly()
    );
    (d, b, f)
}

#[test]
fn process_per_user_without_learn_per_key() {
    let (_d, b, f) = processes(false);
    let ipconfig = r"C:\Windows\System32\ipconfig.exe";
    let user_a = ["S-1-5-21-1-1001", "S-1-0-0"];
    let user_b = ["S-1-5-21-1-1002", "S-1-0-0"];
    assert_eq!(
        b.check(f, "pc", &user_a, &[ipconfig], at(20.0)),
        Verdict::Known
    );
    // User B running what user A ran in March is flagged in August.
    let v = b.check(f, "pc", &user_b, &[ipconfig], at(160.0));
    assert_eq!(
        v,
        Verdict::NewValue {
            key_first_seen: at(2.0).unwrap(),
            values_known: 1,
            stored: true
        }
    );
    // An unknown process is flagged each time it is launched under a different user.
    let tool = r"C:\Users\Public\tool.exe";
    assert!(b.check(f, "pc", &user_a, &[tool], at(161.0)).is_anomaly());
    assert!(b.check(f, "pc", &user_b, &[tool], at(161.0)).is_anomaly());
    assert!(matches!(
        b.check(f, "pc", &["S-1-5-18", "S-1-0-0"], &[tool], at(161.0)),
        Verdict::NewKey { .. }
    ));
    assert_eq!(
        b.check(f, "pc", &user_b, &[tool], at(162.0)),
        Verdict::Known
    );
    // Same SIDs as the elevated pair (second key field differs): a different key.
    assert!(
        b.check(
            f,
            "pc",
            &["S-1-5-21-1-1001", "S-1-5-21-1-1001"],
            &[ipconfig],
            at(162.0)
        )
        .is_anomaly()
    );
}

#[test]
fn process_per_user_with_learn_per_key() {
    let (_d, b, f) = processes(true);
    let ipconfig = r"C:\Windows\System32\ipconfig.exe";
    let user_b = ["S-1-5-21-1-1002", "S-1-0-0"];
    // B's own learning ends at day 16: ipconfig under B is recorded silently before…
    assert_eq!(
        b.check(f, "pc", &user_b, &[ipconfig], at(10.0)),
        learning_until(16.0)
    );
    // …and a new process under B after that is flagged.
    assert!(
        b.check(f, "pc", &user_b, &[r"C:\x\evil.exe"], at(16.5))
            .is_anomaly()
    );
    // A user first seen in August learns for two weeks of its own.
    let user_c = ["S-1-5-21-1-1003", "S-1-0-0"];
    assert_eq!(
        b.check(f, "pc", &user_c, &[ipconfig], at(160.0)),
        learning_until(174.0)
    );
    assert!(
        b.check(f, "pc", &user_c, &[r"C:\x\evil.exe"], at(175.0))
            .is_anomaly()
    );
}

/// Example 3: a user logs on with a logon type never used before (console vs RDP). One
/// dimension: no key fields; the value is LogonType + TargetUserName.
#[test]
fn new_logon_type_per_user_one_dimensional() {
    for per_key in [false, true] {
        let (_d, b) = store();
        let f = b
            .filter(
                "new-logon-type",
                &spec(&[], &["LogonType", "TargetUserName"], per_key),
            )
            .unwrap()
            .id;
        assert_eq!(
            b.check(f, "dc1", &[], &["2", "alice"], at(0.0)),
            learning_until(14.0)
        );
        assert_eq!(
            b.check(f, "dc1", &[], &["10", "bob"], at(3.0)),
            learning_until(14.0),
            "per_key {per_key}"
        );
        assert_eq!(
            b.check(f, "dc1", &[], &["2", "alice"], at(14.0)),
            Verdict::Known,
            "learning ends at exactly 14 days"
        );
        let v = b.check(f, "dc1", &[], &["10", "alice"], at(15.0));
        assert_eq!(
            v,
            Verdict::NewValue {
                key_first_seen: at(0.0).unwrap(),
                values_known: 2,
                stored: true
            },
            "per_key {per_key}"
        );
        assert_eq!(
            b.check(f, "dc1", &[], &["10", "alice"], at(15.0)),
            Verdict::Known
        );
        assert!(b.check(f, "dc1", &[], &["3", "bob"], at(15.0)).is_anomaly());
        // Field boundaries matter: ("10", "alice") is not ("1", "0alice").
        assert!(
            b.check(f, "dc1", &[], &["1", "0alice"], at(15.0))
                .is_anomaly()
        );
    }
}

#[test]
fn out_of_order_events_are_judged_at_the_clock() {
    let (_d, b) = store();
    let f = b.filter("rdp", &spec(&["u"], &["ip"], false)).unwrap().id;
    assert_eq!(
        b.check(f, "h", &["a"], &["1"], at(10.0)),
        learning_until(24.0)
    );
    // An older event does not move the learning start back.
    assert_eq!(
        b.check(f, "h", &["a"], &["2"], at(5.0)),
        learning_until(24.0)
    );
    assert_eq!(
        b.check(f, "h", &["a"], &["3"], at(30.0)),
        Verdict::NewValue {
            key_first_seen: at(10.0).unwrap(),
            values_known: 2,
            stored: true
        }
    );
    // After learning, an event stamped inside the learning window is still judged as late.
    assert!(b.check(f, "h", &["a"], &["4"], at(12.0)).is_anomaly());
    assert_eq!(b.check(f, "h", &["a"], &["2"], at(12.0)), Verdict::Known);
}

#[test]
fn missing_event_time_uses_arrival_time() {
    let (_d, b) = store();
    let f = b.filter("rdp", &spec(&["u"], &["ip"], false)).unwrap().id;
    let before = Timestamp::now();
    let Verdict::Learning { until } = b.check(f, "h", &["a"], &["1"], None) else {
        panic!()
    };
    let d = until.as_second() - before.as_second();
    assert!((14 * DAY - 2..=14 * DAY + 2).contains(&d), "{d}");
}

#[test]
fn max_values_per_key_stops_storing_but_still_flags() {
    let (_d, b) = store();
    let mut s = spec(&["u"], &["ip"], false);
    s.max_values_per_key = 2;
    let f = b.filter("capped", &s).unwrap().id;
    for ip in ["1", "2", "3"] {
        assert!(!b.check(f, "h", &["a"], &[ip], at(1.0)).is_anomaly());
    }
    assert!(
        !b.contains(f, "h", &["a"], &["3"]),
        "third value during learning is not stored"
    );
    assert_eq!(b.check(f, "h", &["a"], &["2"], at(20.0)), Verdict::Known);
    for _ in 0..2 {
        let v = b.check(f, "h", &["a"], &["3"], at(20.0));
        assert_eq!(
            v,
            Verdict::NewValue {
                key_first_seen: at(1.0).unwrap(),
                values_known: 2,
                stored: false
            }
        );
        assert!(v.to_string().contains("key full"), "{v}");
    }
    // Other keys are not affected.
    assert!(matches!(
        b.check(f, "h", &["b"], &["3"], at(20.0)),
        Verdict::NewKey { .. }
    ));
}

#[test]
fn forget_after_treats_stale_pairs_as_new_and_sweep_reclaims_them() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        flush_interval: None,
        forgetting: true,
        ..Options::default()
    };
    let b = Baselines::open(dir.path(), opts.clone()).unwrap();
    let mut s = spec(&["u"], &["ip"], false);
    s.forget_after = Some(Duration::from_secs(5 * DAY as u64));
    let f = b.filter("forgetful", &s).unwrap().id;
    b.check(f, "h", &["a"], &["old"], at(0.0));
    b.check(f, "h", &["a"], &["fresh"], at(0.0));
    b.check(f, "h", &["a"], &["fresh"], at(12.0));
    assert_eq!(
        b.check(f, "h", &["a"], &["fresh"], at(15.0)),
        Verdict::Known,
        "seen 3 days ago"
    );
    // "old" was last seen at day 0: forgotten (5 days) by day 15, so judged as new.
    let v = b.check(f, "h", &["a"], &["old"], at(15.0));
    assert_eq!(
        v,
        Verdict::NewValue {
            key_first_seen: at(0.0).unwrap(),
            values_known: 1,
            stored: true
        }
    );
    assert_eq!(
        b.check(f, "h", &["a"], &["old"], at(15.5)),
        Verdict::Known,
        "re-learned"
    );
    assert!(b.check(f, "h", &["a"], &["x"], at(16.0)).is_anomaly());
    assert_eq!(b.sweep().unwrap(), 0, "nothing stale at day 16");
    assert!(b.check(f, "h", &["b"], &["y"], at(30.0)).is_anomaly()); // the clock moves on
    assert_eq!(b.sweep().unwrap(), 3, "old, fresh and x of key a");
    assert!(!b.contains(f, "h", &["a"], &["x"]));
    assert!(b.contains(f, "h", &["b"], &["y"]));
    let e = b.explain("forgetful", "h", &["a"]).unwrap();
    assert!(e.values.is_empty());
    assert_eq!(
        b.explain("forgetful", "h", &["b"]).unwrap().values[0].last_seen,
        at(30.0)
    );
    b.close().unwrap();
    // A store without forgetting refuses such a filter.
    let plain = Baselines::open(
        dir.path(),
        Options {
            flush_interval: None,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(plain.filter("forgetful", &s).is_err());
    drop(plain);
    // The sweep is durable, and last-seen survives a restart.
    let b = Baselines::open(dir.path(), opts).unwrap();
    let f = b.filter("forgetful", &s).unwrap().id;
    assert_eq!(b.stats().pairs, 1);
    assert_eq!(b.check(f, "h", &["b"], &["y"], at(34.0)), Verdict::Known);
}
