//! The per-hour counts the console's overview reads (`event_hours`, `filter_hours` per
//! agent, kept by ingest in the batch's transaction; `folded_*` of all agents, made of the
//! per-agent rows of past hours by the fold): they agree exactly with counting the events
//! (several agents and hosts, filters, rule levels, anomalies, events across hour
//! boundaries and without a time); a batch sent again or replayed adds nothing; migration
//! 4 fills them from the events already stored; the fold changes no number of the
//! overview, also for events that arrive late for an hour already folded and while ingest
//! runs beside it; retention deletes per-agent and folded rows with the days.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, credential, enroll, send_batch};
use jiff::Timestamp;
use watchpost_console::backend::{Backend, Overview, buckets, top};
use watchpost_fleet_protocol::{Batch, EventRecord, Fields, Record};

/// Batch of `n` events from `first`: times spread over the last 30 hours (a few without a
/// time: filed under when received), two hosts per agent, 0–2 filters, 3 rule levels or
/// none, one in 4 an anomaly.
fn mixed(stream: &str, first: u64, n: u64, hosts: [&str; 2]) -> Batch {
    let now = Timestamp::now().as_millisecond();
    Batch {
        stream: stream.into(),
        first_seq: first,
        last_seq: first + n - 1,
        records: (first..first + n)
            .map(|seq| {
                let filters: Vec<String> = match seq % 4 {
                    0 => vec![],
                    1 => vec!["av-detection".into()],
                    2 => vec!["sigma-windows".into(), "av-detection".into()],
                    _ => vec!["sigma-windows".into()],
                };
                let mut fields = vec![("user".to_owned(), format!("u{}", seq % 3))];
                match seq % 5 {
                    0 => fields.push(("rule_level".into(), "high".into())),
                    1 => fields.push(("rule_level".into(), "low".into())),
                    2 => {
                        // The first of a repeated name is the one kept.
                        fields.push(("rule_level".into(), "critical".into()));
                        fields.push(("rule_level".into(), "low".into()));
                    }
                    _ => {}
                }
                Record::Event(EventRecord {
                    seq,
                    id: seq,
                    // 17 minutes apart going back: crosses many hour boundaries.
                    time_ms: (!seq.is_multiple_of(11))
                        .then(|| now - (seq as i64 % 106) * 1_020_000),
                    stored_ms: now,
                    source: "sep-av".into(),
                    host: hosts[(seq % 2) as usize].into(),
                    filters,
                    anomaly: seq.is_multiple_of(4),
                    anomaly_why: None,
                    needs_ack: false,
                    fields: Fields(fields),
                    raw: format!("event {seq}"),
                    origin: None,
                })
            })
            .collect(),
    }
}

/// The per-agent rows, sorted, and the same computed from the events (before a fold).
fn rollups_and_counts(env: &Env) -> [(Vec<String>, Vec<String>); 2] {
    let db = env.db();
    let rows = |sql: &str| -> Vec<String> {
        env.rt.block_on(async {
            db.query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect()
        })
    };
    [
        (
            rows(
                "SELECT concat_ws('|', hour, agent_id, host, level, events, anomalies)
                 FROM event_hours ORDER BY 1",
            ),
            rows(
                "SELECT concat_ws('|', date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                                  agent_id, host, coalesce(fields ->> 'rule_level', ''),
                                  count(*), count(*) FILTER (WHERE anomaly))
                 FROM events GROUP BY date_trunc('hour', ts AT TIME ZONE 'UTC'), agent_id, host,
                                      fields ->> 'rule_level'
                 ORDER BY 1",
            ),
        ),
        (
            rows(
                "SELECT concat_ws('|', hour, agent_id, filter, events) FROM filter_hours ORDER BY 1",
            ),
            rows(
                "SELECT concat_ws('|', date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                                  agent_id, f, count(*))
                 FROM events, unnest(filters) f
                 GROUP BY date_trunc('hour', ts AT TIME ZONE 'UTC'), agent_id, f ORDER BY 1",
            ),
        ),
    ]
}

/// How many rows of the per-hour counts (per-agent and folded, added up per hour and
/// level, host, filter) differ from counting the events: `db::HOURS_CHECK`.
fn differing(env: &Env) -> i64 {
    let db = env.db();
    env.rt.block_on(async {
        db.query_one(watchpost_server::db::HOURS_CHECK, &[])
            .await
            .unwrap()
            .get(0)
    })
}

/// The count of rows in `table`.
fn rows(env: &Env, table: &str) -> i64 {
    env.pg
        .psql(&format!("SELECT count(*) FROM {table}"))
        .parse()
        .unwrap()
}

/// A server that folds only when the test says so, the group `lab`: the server, a
/// database connection, the group's enrollment secret.
fn start() -> Option<(Env, tokio_postgres::Client, String)> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let env = Env::start(|c| c.fold_every = None)?;
    let db = env.db();
    let secret = env.rt.block_on(async {
        use watchpost_server::admin;
        admin::group_add(&db, "test", "lab", "").await.unwrap();
        admin::secret_create(&db, "test", "lab", "s1", None)
            .await
            .unwrap()
    });
    Some((env, db, secret))
}

/// Retention as it runs 40 days after `now`: every day partition of the test dropped.
fn retention_40_days_after(env: &Env, now: Timestamp) {
    let mut client = env.db();
    let later = now + jiff::SignedDuration::from_hours(24 * 40);
    let (_, dropped) = env
        .rt
        .block_on(watchpost_server::db::maintain_partitions(
            &mut client,
            later,
            env.config.retention_days,
        ))
        .unwrap();
    assert!(!dropped.is_empty());
}

/// The overview's charts counted straight from the events, bucket by bucket.
type Charts = (
    Vec<u64>,
    Vec<u64>,
    BTreeMap<String, Vec<u64>>,
    BTreeMap<String, Vec<u64>>,
    BTreeMap<String, Vec<u64>>,
);

fn counted(env: &Env, now: Timestamp, hours: u32) -> Charts {
    let (from, len, n) = buckets(now, hours);
    let db = env.db();
    let rows = env.rt.block_on(async {
        db.query(
            "SELECT (extract(epoch FROM ts) * 1000)::int8, host, fields ->> 'rule_level', anomaly, filters
             FROM events",
            &[],
        )
        .await
        .unwrap()
    });
    let mut c: Charts = (
        vec![0; n],
        vec![0; n],
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
    );
    for r in rows {
        let ms: i64 = r.get(0);
        if ms < from || ms >= from + len * n as i64 {
            continue;
        }
        let b = ((ms - from) / len) as usize;
        c.0[b] += 1;
        if r.get::<_, bool>(3) {
            c.1[b] += 1;
        }
        c.2.entry(r.get(1)).or_insert_with(|| vec![0; n])[b] += 1;
        if let Some(l) = r.get::<_, Option<String>>(2) {
            c.3.entry(l).or_insert_with(|| vec![0; n])[b] += 1;
        }
        for f in r.get::<_, Vec<String>>(4) {
            c.4.entry(f).or_insert_with(|| vec![0; n])[b] += 1;
        }
    }
    // The charts show the six largest and the rest as `other`.
    let top6 = |m: BTreeMap<String, Vec<u64>>| {
        top(m.into_iter().collect(), 6)
            .into_iter()
            .map(|s| (s.name, s.counts))
            .collect()
    };
    (c.0, c.1, top6(c.2), top6(c.3), top6(c.4))
}

fn charts(o: &Overview) -> Charts {
    let map = |s: &[watchpost_console::backend::Series]| {
        s.iter()
            .map(|s| (s.name.clone(), s.counts.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    (
        o.events.clone(),
        o.anomalies.clone(),
        map(&o.by_host),
        map(&o.by_level),
        map(&o.by_filter),
    )
}

#[test]
fn hourly_counts_agree_with_the_events_and_replays_add_nothing() {
    // No fold by the maintenance task: the per-agent rows are compared as ingest left them.
    let Some((env, db, secret)) = start() else {
        return;
    };
    let a = credential(&enroll(env.addr, &secret, "host-a", "PC-A"));
    let b = credential(&enroll(env.addr, &secret, "host-b", "PC-B"));
    let a1 = mixed("sa", 1, 150, ["PC-A", "pc-a.lab"]);
    let a2 = mixed("sa", 151, 130, ["PC-A", "pc-a.lab"]);
    let b1 = mixed("sb", 1, 170, ["PC-B", "PC-C"]);
    for (cred, batch) in [(&a, &a1), (&b, &b1), (&a, &a2)] {
        let r = send_batch(env.addr, cred, batch);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json()["stored"].as_u64(),
            Some(batch.records.len() as u64)
        );
    }
    let [(hours, hours_counted), (filters, filters_counted)] = rollups_and_counts(&env);
    assert!(hours.len() > 40, "{hours:?}");
    assert_eq!(hours, hours_counted);
    assert!(filters.len() > 20, "{filters:?}");
    assert_eq!(filters, filters_counted);

    // The batch committed last sent again (its answer lost) and an older one replayed:
    // neither adds to the counts.
    let r = send_batch(env.addr, &a, &a2);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["already_committed"].as_bool(), Some(true));
    let r = send_batch(env.addr, &a, &a1);
    assert_eq!(r.status, 409);
    let again = rollups_and_counts(&env);
    assert_eq!(again[0].0, hours);
    assert_eq!(again[1].0, filters);
    let total: i64 = env.rt.block_on(async {
        db.query_one("SELECT sum(events)::int8 FROM event_hours", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(total, 450);

    // The overview, read from the counts, is what counting the events gives.
    let pool = watchpost_server::db::pool(&env.config.database).unwrap();
    let backend = watchpost_server::console::PgBackend::new(
        pool,
        env.rt.handle().clone(),
        Duration::from_secs(300),
    );
    let now = Timestamp::now();
    for h in [6, 24, 168] {
        let o = backend.overview(now, h).unwrap();
        let expected = counted(&env, now, h);
        assert_eq!(charts(&o), expected, "{h} hours");
        assert_eq!(o.buckets.len(), o.events.len());
    }
    let o = backend.overview(now, 168).unwrap();
    assert_eq!(o.events.iter().sum::<u64>(), 450);
    assert!(
        backend
            .overview(now, 24)
            .unwrap()
            .events
            .iter()
            .sum::<u64>()
            < 450
    );

    // Migration 4 on a database with events fills the same counts (and 5 makes the
    // folded tables, empty).
    env.rt.block_on(async {
        db.batch_execute(
            "DROP TABLE event_hours, filter_hours, folded_level_hours, folded_host_hours,
                        folded_host_days, folded_filter_hours;
             DELETE FROM schema_migrations WHERE version >= 4",
        )
        .await
        .unwrap();
    });
    let mut client = env.db();
    let applied = env
        .rt
        .block_on(watchpost_server::db::migrate(&mut client))
        .unwrap();
    assert_eq!(applied, vec![4, 5]);
    let filled = rollups_and_counts(&env);
    assert_eq!(filled[0].0, hours);
    assert_eq!(filled[1].0, filters);

    // Retention: the days dropped take their counts along.
    retention_40_days_after(&env, now);
    let left: (i64, i64, i64) = env.rt.block_on(async {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_hours),
                        (SELECT count(*) FROM filter_hours)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    });
    assert_eq!(left, (0, 0, 0));
    env.stop();
}

/// The overview at 6 h, 24 h, 7 and 30 days, each equal to counting the events.
fn overviews_agree(
    env: &Env,
    backend: &watchpost_server::console::PgBackend,
    now: Timestamp,
) -> Vec<Charts> {
    [6, 24, 168, 720]
        .into_iter()
        .map(|h| {
            let o = charts(&backend.overview(now, h).unwrap());
            assert_eq!(o, counted(env, now, h), "{h} hours");
            o
        })
        .collect()
}

fn fold(env: &Env, now: Timestamp) -> watchpost_server::db::Folded {
    let mut client = env.db();
    env.rt
        .block_on(watchpost_server::db::fold_hours(
            &mut client,
            watchpost_server::db::fold_before(now),
        ))
        .unwrap()
}

#[test]
fn the_fold_keeps_the_overview_exact_with_late_events_and_retention() {
    // The test folds by hand (`db::fold_hours`, what the maintenance task runs).
    let Some((env, _, secret)) = start() else {
        return;
    };
    // Four agents, seven hosts (more than the six a chart names, one reported by two
    // agents): the by-host chart's `other` and a host's rows of several agents.
    let agents: Vec<(String, [&str; 2])> = [
        ("a", ["PC-A", "pc-a.lab"]),
        ("b", ["PC-B", "PC-B2"]),
        ("c", ["PC-C", "PC-SHARED"]),
        ("d", ["PC-D", "PC-SHARED"]),
    ]
    .into_iter()
    .map(|(id, hosts)| {
        (
            credential(&enroll(env.addr, &secret, &format!("host-{id}"), hosts[0])),
            hosts,
        )
    })
    .collect();
    let mut next = vec![1u64; agents.len()];
    let mut ship = |i: usize, n: u64| {
        let (cred, hosts) = &agents[i];
        let batch = mixed(&format!("s{i}"), next[i], n, *hosts);
        let r = send_batch(env.addr, cred, &batch);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        next[i] += n;
        batch
    };
    for i in 0..agents.len() {
        ship(i, 120 + 10 * i as u64);
    }
    let pool = watchpost_server::db::pool(&env.config.database).unwrap();
    let backend = watchpost_server::console::PgBackend::new(
        pool,
        env.rt.handle().clone(),
        Duration::from_secs(300),
    );
    let now = Timestamp::now();
    let before = overviews_agree(&env, &backend, now);
    assert_eq!(differing(&env), 0);
    let cutoff = watchpost_server::db::fold_before(now);
    let old_rows = |table: &str| -> i64 {
        env.pg
            .psql(&format!(
                "SELECT count(*) FROM {table} WHERE hour < '{cutoff}'"
            ))
            .parse()
            .unwrap()
    };
    let per_agent = rows(&env, "event_hours");
    assert!(old_rows("event_hours") > 40 && old_rows("filter_hours") > 20);

    // The fold: the per-agent rows of past hours become rows of all agents; every number
    // of the overview stays what it was.
    let f = fold(&env, now);
    assert_eq!(f.event_rows as i64, per_agent - rows(&env, "event_hours"));
    assert!(f.event_rows > 40 && f.filter_rows > 20, "{f:?}");
    assert_eq!((old_rows("event_hours"), old_rows("filter_hours")), (0, 0));
    assert!(rows(&env, "folded_level_hours") > 0);
    assert!(rows(&env, "folded_host_hours") < f.event_rows as i64);
    assert!(rows(&env, "folded_filter_hours") > 0);
    assert_eq!(differing(&env), 0);
    assert_eq!(overviews_agree(&env, &backend, now), before);
    // Nothing left to fold.
    assert_eq!(fold(&env, now), watchpost_server::db::Folded::default());

    // Events arriving late for folded hours (the next batches go back 30 hours again):
    // per-agent rows for those hours once more, counted beside the folded ones.
    let late = ship(0, 90);
    assert!(old_rows("event_hours") > 0);
    assert_eq!(differing(&env), 0);
    let with_late = overviews_agree(&env, &backend, now);
    assert_ne!(with_late, before, "the late events are counted");
    // Sent again (its answer lost) or replayed: nothing more.
    let r = send_batch(env.addr, &agents[0].0, &late);
    assert_eq!(r.json()["already_committed"].as_bool(), Some(true));
    assert_eq!(differing(&env), 0);
    assert_eq!(overviews_agree(&env, &backend, now), with_late);
    // Folded in by the next fold, still counted once.
    assert!(fold(&env, now).event_rows > 0);
    assert_eq!(old_rows("event_hours"), 0);
    assert_eq!(differing(&env), 0);
    assert_eq!(overviews_agree(&env, &backend, now), with_late);

    // Late batches of every agent while another connection folds again and again: every
    // event counted once, in per-agent or folded rows, and nothing stuck.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let folder = {
        let stop = stop.clone();
        let mut client = env.db();
        let rt = env.rt.handle().clone();
        std::thread::spawn(move || {
            let mut folds = 0u32;
            while folds < 3 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rt.block_on(watchpost_server::db::fold_hours(
                    &mut client,
                    watchpost_server::db::fold_before(Timestamp::now()),
                ))
                .unwrap();
                folds += 1;
            }
            folds
        })
    };
    for round in 0..6 {
        for i in 0..agents.len() {
            ship(i, 20 + round);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(folder.join().unwrap() >= 3);
    assert_eq!(differing(&env), 0);
    let total: i64 = env
        .pg
        .psql(
            "SELECT (SELECT coalesce(sum(events), 0) FROM event_hours)
                  + (SELECT coalesce(sum(events), 0) FROM folded_level_hours)",
        )
        .parse()
        .unwrap();
    assert_eq!(
        total.to_string(),
        env.pg.psql("SELECT count(*) FROM events")
    );
    let now = Timestamp::now();
    overviews_agree(&env, &backend, now);

    // Retention: the days dropped take per-agent and folded rows along.
    retention_40_days_after(&env, now);
    assert_eq!(rows(&env, "events"), 0);
    for (table, _) in watchpost_server::db::HOUR_TABLES {
        assert_eq!(rows(&env, table), 0, "{table}");
    }
    assert_eq!(differing(&env), 0);
    env.stop();
}
