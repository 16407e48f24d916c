//! The shipping queue inside the store: every stored event, outcome and acknowledgement
//! numbered in storing order; bounded, with drops counted; forgotten only when committed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use watchpost_store::{NewEvent, Outbox, Outcome, Queued, Store, StoreOptions, Writer};

fn event(n: u32) -> NewEvent {
    NewEvent {
        time: Some("2026-11-20T10:00:00Z".parse().unwrap()),
        source: "sep-av".into(),
        host: "pc1".into(),
        filters: vec!["av".into()],
        anomaly: n.is_multiple_of(2),
        anomaly_why: (n.is_multiple_of(2)).then(|| "new".into()),
        needs_ack: true,
        fields: vec![("n".into(), n.to_string())],
        raw: format!("line {n}"),
        origin: None,
    }
}

fn options(ship: Option<u64>) -> StoreOptions {
    StoreOptions {
        flush_every: Duration::from_millis(10),
        ship,
        ..StoreOptions::default()
    }
}

#[test]
fn stored_records_are_queued_in_order_and_forgotten_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let w = Writer::start(&path, options(Some(1000))).unwrap();
    let a = w.submit(event(1)).unwrap();
    let b = w.submit(event(2)).unwrap();
    w.outcome(Outcome {
        event: a,
        action: "siem".into(),
        filter: "av".into(),
        at_ms: 5,
        attempt: 1,
        ok: true,
        detail: String::new(),
    });
    assert!(w.flush(Duration::from_secs(5)));
    // `watchpost ack` runs in another process: its acknowledgement joins the queue.
    Store::open(&path)
        .unwrap()
        .ack(&[b], "alice", "known")
        .unwrap();
    let mut ob = Outbox::open(&path).unwrap();
    let st = ob.state().unwrap();
    assert_eq!(
        (st.committed, st.last, st.pending(), st.dropped),
        (0, 4, 4, 0)
    );
    assert!(st.oldest_pending_ms.is_some());
    let got = ob.read(0, 100, 1 << 20).unwrap();
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    match &got[0].1 {
        Some(Queued::Event(e)) => {
            assert_eq!(
                (e.id, e.raw.as_str(), e.fields[0].1.as_str()),
                (a, "line 1", "1")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&got[2].1, Some(Queued::Outcome(o)) if o.event == a && o.ok));
    assert!(
        matches!(&got[3].1, Some(Queued::Ack { event, by, .. }) if *event == b && by == "alice")
    );
    // Reading again gives the same (nothing is forgotten before a commit).
    assert_eq!(ob.read(0, 100, 1 << 20).unwrap(), got);
    ob.commit(2, 0).unwrap();
    assert_eq!(ob.read(0, 100, 1 << 20).unwrap().len(), 2);
    assert_eq!(ob.state().unwrap().pending(), 2);
    // A byte budget cuts a batch short (but never to nothing).
    assert_eq!(ob.read(2, 100, 1).unwrap().len(), 1);
    drop(w);
    // The cursor survives reopening.
    let ob = Outbox::open(&path).unwrap();
    assert_eq!(ob.state().unwrap().committed, 2);
}

#[test]
fn a_full_queue_drops_and_counts_and_shipping_off_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let w = Writer::start(&path, options(Some(3))).unwrap();
    for n in 0..5 {
        w.submit(event(n)).unwrap();
    }
    assert!(w.flush(Duration::from_secs(5)));
    let st = Outbox::open(&path).unwrap().state().unwrap();
    assert_eq!((st.pending(), st.dropped), (3, 2));
    drop(w);
    // Shipping turned off: events are stored, nothing queued, acks not queued either.
    let w = Writer::start(&path, options(None)).unwrap();
    let id = w.submit(event(9)).unwrap();
    assert!(w.flush(Duration::from_secs(5)));
    Store::open(&path).unwrap().ack(&[id], "bob", "").unwrap();
    let st = Outbox::open(&path).unwrap().state().unwrap();
    assert_eq!((st.pending(), st.dropped), (3, 2));
    assert_eq!(Store::open(&path).unwrap().counts().unwrap().0, 6);
}
