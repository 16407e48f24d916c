//! The per-hour counts the console's overview reads (`event_hours`, `filter_hours`):
//! kept by the writer, they agree exactly with counting the events (hosts, filters, rule
//! levels, anomalies, several hours); a store of schema 4 is counted when opened for
//! writing; retention takes the deleted events off the counts.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use watchpost_store::{Dimension, NewEvent, Store, StoreOptions, Writer};

const HOUR: i64 = 3_600_000;

fn event(i: u64) -> NewEvent {
    let mut fields = vec![("user".to_owned(), format!("u{}", i % 3))];
    match i % 5 {
        0 => fields.push(("rule_level".into(), "high".into())),
        1 => fields.push(("rule_level".into(), "low".into())),
        2 => {
            // The first of a repeated name is the one kept.
            fields.push(("rule_level".into(), "critical".into()));
            fields.push(("rule_level".into(), "low".into()));
        }
        _ => {}
    }
    NewEvent {
        time: None,
        source: "security".into(),
        host: ["PC1", "PC2", "pc3"][(i % 3) as usize].into(),
        filters: match i % 4 {
            0 => vec![],
            1 => vec!["av".into()],
            // A filter named twice counts once.
            2 => vec!["sigma".into(), "av".into(), "sigma".into()],
            _ => vec!["sigma".into()],
        },
        anomaly: i.is_multiple_of(4),
        anomaly_why: None,
        needs_ack: false,
        fields,
        raw: format!("event {i}"),
        origin: None,
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        flush_every: Duration::from_millis(20),
        max_age: None,
        max_bytes: None,
        ..StoreOptions::default()
    }
}

fn store(path: &Path, from: u64, n: u64) {
    let w = Writer::start(path, options()).unwrap();
    for i in from..from + n {
        w.submit(event(i)).unwrap();
        if i % 40 == 0 {
            assert!(w.flush(Duration::from_secs(10)));
        }
    }
    w.shutdown();
}

fn rows(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut s = conn.prepare(sql).unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The counts kept, and the same counted from the events.
fn kept_and_counted(path: &Path) -> [(Vec<String>, Vec<String>); 2] {
    let c = rusqlite::Connection::open(path).unwrap();
    [
        (
            rows(
                &c,
                "SELECT hour || '|' || host || '|' || level || '|' || events || '|' || anomalies
                 FROM event_hours ORDER BY 1",
            ),
            rows(
                &c,
                "SELECT h || '|' || host || '|' || l || '|' || n || '|' || a FROM (
                     SELECT stored - stored % 3600000 AS h, host,
                            ifnull(json_extract(fields, '$.rule_level'), '') AS l,
                            count(*) AS n, sum(anomaly = 1) AS a
                     FROM events GROUP BY 1, 2, 3)
                 ORDER BY 1",
            ),
        ),
        (
            rows(
                &c,
                "SELECT hour || '|' || filter || '|' || events FROM filter_hours ORDER BY 1",
            ),
            rows(
                &c,
                "SELECT h || '|' || filter || '|' || n FROM (
                     SELECT e.stored - e.stored % 3600000 AS h, f.filter, count(*) AS n
                     FROM events e, event_filters f WHERE f.event = e.id GROUP BY 1, 2)
                 ORDER BY 1",
            ),
        ),
    ]
}

type Histograms = BTreeMap<String, Vec<(String, Vec<u64>)>>;

/// Every dimension of the histogram over `hours` hourly buckets from `from`.
fn histograms(store: &Store, from: i64, hours: usize) -> Histograms {
    [
        ("all", Dimension::All),
        ("filter", Dimension::Filter),
        ("level", Dimension::Level),
        ("host", Dimension::Host),
    ]
    .into_iter()
    .map(|(name, d)| {
        let mut h = store.histogram(from, HOUR, hours, d).unwrap();
        h.sort();
        (name.to_owned(), h)
    })
    .collect()
}

fn assert_agree(path: &Path) {
    let [(hours, hours_counted), (filters, filters_counted)] = kept_and_counted(path);
    assert_eq!(hours, hours_counted);
    assert_eq!(filters, filters_counted);
}

#[test]
fn hourly_counts_agree_with_the_events_through_upgrade_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    store(&path, 0, 300);
    let [(hours, _), (filters, _)] = kept_and_counted(&path);
    assert!(!hours.is_empty() && !filters.is_empty());
    assert_agree(&path);

    // Spread the storing times over ten hours, and make the file one of schema 4 (no
    // counts): read as it is, the events are counted.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "UPDATE events SET stored = stored - (id % 10) * 3600000 - (id % 7) * 60000;
         DROP TABLE event_hours; DROP TABLE filter_hours; PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(c);
    // Twelve hourly buckets, the last holding this hour (and the next, should the hour
    // turn during the test).
    let now = jiff::Timestamp::now().as_millisecond();
    let from = (now / HOUR - 10) * HOUR;
    let old = histograms(&Store::open_read_only(&path).unwrap(), from, 12);
    assert_eq!(
        old["all"]
            .iter()
            .filter(|(k, _)| k.is_empty())
            .flat_map(|(_, v)| v)
            .sum::<u64>(),
        300
    );
    assert_eq!(old["level"].len(), 3, "{:?}", old["level"]);
    assert_eq!(old["host"].len(), 3);

    // Opened for writing: counted, the same histograms read from the counts.
    store(&path, 300, 50);
    let [(hours, _), _] = kept_and_counted(&path);
    assert!(hours.len() >= 10 * 3, "{hours:?}");
    assert_agree(&path);
    let new = histograms(&Store::open_read_only(&path).unwrap(), from, 12);
    let sum = |h: &Histograms| -> u64 {
        h["all"]
            .iter()
            .filter(|(k, _)| k.is_empty())
            .flat_map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sum(&new), 350);
    // The same read by counting the events (the file marked as schema 4 for a moment).
    let mark = |v: i64| {
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", v)
            .unwrap()
    };
    mark(4);
    let counted = histograms(&Store::open_read_only(&path).unwrap(), from, 12);
    mark(5);
    assert_eq!(new, counted);
    assert_ne!(new, old);
    assert_eq!(new["level"].len(), 3, "rule levels, '' not among them");

    // Retention by age: events stored more than 4.5 hours ago go, and their counts.
    let w = Writer::start(
        &path,
        StoreOptions {
            max_age: Some(Duration::from_secs(4 * 3600 + 1800)),
            retention_every: Duration::from_millis(50),
            ..options()
        },
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.stats().expired == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let expired = w.shutdown().expired;
    assert!(expired > 0 && expired < 350, "{expired}");
    assert_agree(&path);
    let c = rusqlite::Connection::open(&path).unwrap();
    let left: i64 = c
        .query_row("SELECT sum(events) FROM event_hours", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left as u64, 350 - expired);
    let empty: i64 = c
        .query_row(
            "SELECT (SELECT count(*) FROM event_hours WHERE events <= 0)
                  + (SELECT count(*) FROM filter_hours WHERE events <= 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(empty, 0);
}
