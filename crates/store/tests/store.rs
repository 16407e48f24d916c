//! The event store end to end: the writer thread, queries, acknowledgements, outcomes,
//! retention, reopening.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use watchpost_store::{NewEvent, Outcome, Query, Store, StoreOptions, Writer, parse_terms};

fn event(host: &str, filter: &str, fields: &[(&str, &str)], anomaly: bool) -> NewEvent {
    NewEvent {
        time: Some("2026-11-20T10:00:00Z".parse().unwrap()),
        source: "security".into(),
        host: host.into(),
        filters: vec![filter.into()],
        anomaly,
        anomaly_why: anomaly.then(|| "new value for key".into()),
        needs_ack: anomaly,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        raw: fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        origin: Some("Security:42".into()),
    }
}

fn query(text: &str) -> Query {
    Query {
        terms: parse_terms(text).unwrap(),
        ..Query::default()
    }
}

fn ids(store: &Store, q: &Query) -> Vec<u64> {
    store.query(q, 100).unwrap().iter().map(|e| e.id).collect()
}

fn options() -> StoreOptions {
    StoreOptions {
        flush_every: Duration::from_millis(20),
        ..StoreOptions::default()
    }
}

#[test]
fn events_are_stored_queried_acknowledged_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/events.db");
    let w = Writer::start(&path, options()).unwrap();
    let a = w
        .submit(event(
            "PC1",
            "rdp-logon",
            &[
                ("TargetUserName", "alice"),
                ("IpAddress", "10.0.0.9"),
                ("LogonType", "10"),
            ],
            true,
        ))
        .unwrap();
    let b = w
        .submit(event(
            "pc2",
            "process-start",
            &[
                ("SubjectUserName", "bob"),
                ("NewProcessName", r"C:\Tools\mimikatz.exe"),
            ],
            false,
        ))
        .unwrap();
    let c = w
        .submit(event(
            "LAB-3",
            "rdp-logon",
            &[
                ("TargetUserName", "Administrator"),
                ("IpAddress", "10.0.0.7"),
            ],
            true,
        ))
        .unwrap();
    assert!(a < b && b < c);
    w.outcome(Outcome {
        event: a,
        action: "siem".into(),
        filter: "rdp-logon".into(),
        at_ms: 1,
        attempt: 1,
        ok: true,
        detail: String::new(),
    });
    w.outcome(Outcome {
        event: a,
        action: "mail".into(),
        filter: "rdp-logon".into(),
        at_ms: 2,
        attempt: 1,
        ok: false,
        detail: "connection refused".into(),
    });
    assert!(w.flush(Duration::from_secs(10)));
    assert_eq!(w.stats().stored, 3);
    assert_eq!(w.stats().outcomes, 2);

    // Readers see committed events while the writer runs.
    let mut store = Store::open(&path).unwrap();
    assert_eq!(ids(&store, &Query::default()), [c, b, a], "newest first");
    assert_eq!(ids(&store, &query("isanomaly:true")), [c, a]);
    assert_eq!(ids(&store, &query("isanomaly:false")), [b]);
    assert_eq!(
        ids(&store, &query("targetusername:ALICE")),
        [] as [u64; 0],
        "field names are exact"
    );
    assert_eq!(
        ids(&store, &query("TargetUserName:ALICE")),
        [a],
        "values ignore case"
    );
    assert_eq!(ids(&store, &query("IpAddress:10.0.0.*")), [c, a]);
    assert_eq!(
        ids(&store, &query(r#"NewProcessName:"*\mimikatz.exe""#)),
        [b]
    );
    assert_eq!(ids(&store, &query("mimikatz")), [b], "free text");
    assert_eq!(ids(&store, &query("mimi*")), [b], "prefix");
    assert_eq!(ids(&store, &query("host:pc*")), [b, a]);
    assert_eq!(ids(&store, &query("-host:lab*")), [b, a]);
    assert_eq!(
        ids(&store, &query("filter:rdp-logon TargetUserName:admin*")),
        [c]
    );
    assert_eq!(ids(&store, &query(&format!("id:{b}"))), [b]);
    let q = Query {
        host: Some("PC1".into()),
        ..Query::default()
    };
    assert_eq!(ids(&store, &q), [a]);
    let q = Query {
        filter: Some("process-*".into()),
        ..Query::default()
    };
    assert_eq!(ids(&store, &q), [b]);
    let q = Query {
        since: Some("2026-11-21T00:00:00Z".parse().unwrap()),
        ..Query::default()
    };
    assert_eq!(ids(&store, &q), [] as [u64; 0], "event time is before");

    // Acknowledgement: pending until acknowledged, once.
    let q = Query {
        pending_ack: true,
        ..Query::default()
    };
    assert_eq!(ids(&store, &q), [c, a]);
    assert_eq!(
        store.ack(&[a, 999], "carol", "known admin host").unwrap(),
        [a]
    );
    assert_eq!(store.ack(&[a], "dave", "again").unwrap(), [] as [u64; 0]);
    assert_eq!(ids(&store, &q), [c]);
    assert_eq!(ids(&store, &query("acked:true")), [a]);
    let got = store.get(a).unwrap().unwrap();
    let ack = got.ack.unwrap();
    assert_eq!(
        (ack.by.as_str(), ack.comment.as_str()),
        ("carol", "known admin host")
    );
    assert_eq!(got.filters, ["rdp-logon"]);
    assert_eq!(got.anomaly_why.as_deref(), Some("new value for key"));
    assert_eq!(got.fields["IpAddress"], "10.0.0.9");
    assert_eq!(got.time.as_deref(), Some("2026-11-20T10:00:00Z"));
    assert_eq!(got.origin.as_deref(), Some("Security:42"));
    let outcomes: Vec<_> = got
        .outcomes
        .iter()
        .map(|o| (o.action.as_str(), o.filter.as_str(), o.ok))
        .collect();
    assert_eq!(
        outcomes,
        [("siem", "rdp-logon", true), ("mail", "rdp-logon", false)]
    );
    assert_eq!(store.counts().unwrap(), (3, 2, 1));
    drop(store);
    assert_eq!(w.shutdown().stored, 3);

    // Reopened: ids continue after the last one.
    let w = Writer::start(&path, options()).unwrap();
    let d = w.submit(event("PC1", "x", &[("a", "b")], false)).unwrap();
    assert!(d > c);
    w.shutdown();
    let store = Store::open_read_only(&path).unwrap();
    assert_eq!(store.counts().unwrap().0, 4);
}

#[test]
fn retention_deletes_by_age_and_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    // Age: everything older than 1 ms goes at the next retention pass.
    let w = Writer::start(
        &path,
        StoreOptions {
            max_age: Some(Duration::from_millis(1)),
            max_bytes: None,
            retention_every: Duration::from_millis(50),
            ..options()
        },
    )
    .unwrap();
    for i in 0..10 {
        w.submit(event("h", "f", &[("n", &i.to_string())], false));
    }
    assert!(w.flush(Duration::from_secs(10)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.stats().expired < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.stats().expired, 10);
    w.shutdown();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.counts().unwrap().0, 0);
    assert_eq!(
        ids(&store, &query("n")),
        [] as [u64; 0],
        "the text index forgot them too"
    );
    drop(store);

    // Size: 2 MB of events against a 512 KiB limit.
    let path = dir.path().join("sized.db");
    let w = Writer::start(
        &path,
        StoreOptions {
            max_age: None,
            max_bytes: Some(512 * 1024),
            retention_every: Duration::from_millis(50),
            ..options()
        },
    )
    .unwrap();
    let big = "x".repeat(300);
    for i in 0..1000 {
        w.submit(event(
            "h",
            "f",
            &[("n", &i.to_string()), ("pad", &big)],
            false,
        ));
    }
    assert!(w.flush(Duration::from_secs(30)));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w.stats().expired == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    w.shutdown();
    let store = Store::open(&path).unwrap();
    let (left, _, _) = store.counts().unwrap();
    assert!(left > 0 && left < 1000, "{left} left");
    // The newest survive.
    let newest = store.query(&Query::default(), 1).unwrap();
    assert_eq!(newest[0].fields["n"], "999");
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size <= 1024 * 1024, "file is {size} bytes");
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let w = Writer::start(
        &path,
        StoreOptions {
            queue: 1,
            batch: 1,
            ..options()
        },
    )
    .unwrap();
    let mut accepted = 0;
    for i in 0..2000 {
        if w.submit(event("h", "f", &[("n", &i.to_string())], false))
            .is_some()
        {
            accepted += 1;
        }
    }
    let stats = w.shutdown();
    assert_eq!(stats.stored, accepted);
    assert_eq!(stats.stored + stats.dropped, 2000);
}

/// A store written before outcomes named their filter (schema 1) is read as it is, and
/// gains the column when the daemon opens it for writing.
#[test]
fn a_store_of_schema_1_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let w = Writer::start(&path, options()).unwrap();
    let a = w.submit(event("PC1", "f", &[("a", "b")], false)).unwrap();
    w.outcome(Outcome {
        event: a,
        action: "siem".into(),
        filter: "f".into(),
        at_ms: 1,
        attempt: 1,
        ok: true,
        detail: String::new(),
    });
    w.shutdown();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("ALTER TABLE outcomes DROP COLUMN filter; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let outcome = |store: &Store| {
        let e = store.get(a).unwrap().unwrap();
        (e.outcomes[0].action.clone(), e.outcomes[0].filter.clone())
    };
    assert_eq!(
        outcome(&Store::open_read_only(&path).unwrap()),
        ("siem".to_owned(), String::new())
    );
    let w = Writer::start(&path, options()).unwrap();
    let b = w.submit(event("PC1", "g", &[("a", "c")], false)).unwrap();
    w.outcome(Outcome {
        event: b,
        action: "siem".into(),
        filter: "g".into(),
        at_ms: 2,
        attempt: 1,
        ok: true,
        detail: String::new(),
    });
    w.shutdown();
    let store = Store::open_read_only(&path).unwrap();
    assert_eq!(outcome(&store), ("siem".to_owned(), String::new()));
    let e = store.get(b).unwrap().unwrap();
    assert_eq!(e.outcomes[0].filter, "g");
}

#[test]
fn a_bad_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::fs::write(
        &path,
        b"this is not a database, it is a text file of some length....",
    )
    .unwrap();
    let e = Store::open(&path).unwrap_err().to_string();
    assert!(e.contains("events.db"), "{e}");
    assert!(e.contains("not a database"), "{e}");
}

/// The daemon's path: the shared event goes in as it is, the writer thread builds the row
/// (fields as text, origin, the chain's verdict).
#[test]
fn a_matched_event_is_stored_from_the_shared_event() {
    use std::sync::Arc;
    use watchpost_event::{Event, Origin, Sym};
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::start(&dir.path().join("events.db"), options()).unwrap();
    let raw = "user=alice ip=10.0.0.9".to_owned();
    let mut e = Event::new(Arc::from("security"), Arc::from("PC1"), raw);
    e.push_span(Sym::new("TargetUserName"), 5, 10);
    e.push_span(Sym::new("IpAddress"), 14, 22);
    e.finish();
    e.origin = Some(Origin {
        place: Arc::from("Security"),
        offset: 42,
    });
    let id = w
        .submit_matched(watchpost_store::Matched {
            event: Arc::new(e),
            filters: vec!["rdp-logon".into()],
            anomaly_why: Some("rdp-logon: new value".into()),
            needs_ack: true,
        })
        .unwrap();
    assert!(w.flush(Duration::from_secs(5)));
    let store = Store::open_read_only(&dir.path().join("events.db")).unwrap();
    let got = store.get(id).unwrap().unwrap();
    assert_eq!(got.fields["TargetUserName"], "alice");
    assert_eq!(got.fields["IpAddress"], "10.0.0.9");
    assert_eq!(got.filters, ["rdp-logon"]);
    assert_eq!(got.anomaly_why.as_deref(), Some("rdp-logon: new value"));
    assert!(got.needs_ack);
    assert_eq!(got.origin.as_deref(), Some("Security:42"));
    assert_eq!(got.raw, "user=alice ip=10.0.0.9");
    assert_eq!(w.shutdown().stored, 1);
}
