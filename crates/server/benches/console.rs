//! How fast the fleet console's pages answer with many events in PostgreSQL: a private
//! cluster is filled with `CONSOLE_BENCH_EVENTS` events (default 10,000,000, spread over
//! the 30 days kept, 1,000 hosts, one in 50 an anomaly, a third of those waiting for an
//! acknowledgement, one in 5 a Sigma detection with a rule level; the overview's per-hour
//! counts filled from them as the schema migration does), then every page is
//! fetched over HTTP as a logged-in analyst `CONSOLE_BENCH_ROUNDS` times (default 20,
//! after 3 warm-up rounds) and its p50/p95/max printed.
//!
//! The per-agent per-hour counts are measured first as ingest leaves them (the overview
//! pages; main's overview reads, which read only them; this server's reads), then folded
//! as the server's maintenance task folds past hours (`db::fold_hours`, timed) and
//! measured again: before and after on the same data in one run (`CONSOLE_BENCH_FOLD=0`
//! skips the fold).
//!
//! Then, for comparison, the two counting reads the overview made before it read the
//! per-hour counts, over the same events.
//!
//! `cargo bench -p watchpost-server --bench console` (BENCHMARKS.md has figures). The
//! fill uses `INSERT … SELECT generate_series` with the search index built afterwards: it
//! measures the pages, not ingest (`scripts/fleet-bench.sh` measures that).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn http(addr: SocketAddr, method: &str, path: &str, cookie: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn percentile(times: &mut [f64], q: f64) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1]
}

/// Fetches each page `rounds` times after 3 warm-up rounds; prints p50/p95/max.
fn time_pages(addr: SocketAddr, cookie: &str, pages: &[(&str, String)], rounds: usize) {
    println!(
        "{:<36} {:>8} {:>8} {:>8}",
        "page", "p50 ms", "p95 ms", "max ms"
    );
    for (name, path) in pages {
        let mut times = Vec::new();
        for round in 0..rounds + 3 {
            let t = Instant::now();
            let (status, body) = http(addr, "GET", path, cookie, "");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(status, 200, "{name}: {}", &body[..body.len().min(2000)]);
            if round >= 3 {
                times.push(ms);
            }
        }
        println!(
            "{name:<36} {:>8.1} {:>8.1} {:>8.1}",
            percentile(&mut times, 0.5),
            percentile(&mut times, 0.95),
            percentile(&mut times, 1.0)
        );
    }
}

/// Times the overview's reads alone (`PgBackend::overview`: the SQL and the series built
/// from it, no HTTP, no page), `rounds` times after one warm-up.
fn time_overview(
    backend: &watchpost_server::console::PgBackend,
    what: &str,
    hours: u32,
    rounds: usize,
) {
    use watchpost_console::backend::Backend;
    if rounds == 0 {
        return;
    }
    let times = timed(rounds, || {
        let o = backend.overview(jiff::Timestamp::now(), hours).unwrap();
        assert!(!o.events.is_empty());
    });
    print_times(&format!("{what}, {hours} h"), times, "");
}

/// `f` run `rounds` times after one warm-up: the times in ms.
fn timed(rounds: usize, mut f: impl FnMut()) -> Vec<f64> {
    let mut times = Vec::new();
    for round in 0..rounds + 1 {
        let t = Instant::now();
        f();
        if round >= 1 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times
}

/// One line: what, p50, p95, max (ms), and a note.
fn print_times(what: &str, mut times: Vec<f64>, note: &str) {
    println!(
        "{what:<36} {:>8.1} {:>8.1} {:>8.1}{note}",
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.95),
        percentile(&mut times, 1.0)
    );
}

/// Runs `reads` (main's overview reads, or the former counting) for the range of `hours`, at
/// once on one connection each, `rounds` times after one warm-up; prints p50/p95/max and
/// the rows returned.
fn time_reads(
    rt: &tokio::runtime::Runtime,
    conns: &[tokio_postgres::Client],
    what: &str,
    hours: u32,
    reads: &[String],
    rounds: usize,
) {
    if rounds == 0 {
        return;
    }
    let (from, len, n) = watchpost_console::backend::buckets(jiff::Timestamp::now(), hours);
    let from_t = jiff::Timestamp::from_millisecond(from).unwrap();
    let to_t = jiff::Timestamp::from_millisecond(from + len * n as i64).unwrap();
    let (from_f, len_f) = (from as f64, len as f64);
    let range: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&from_f, &len_f, &from_t, &to_t];
    let mut rows = 0;
    let times = timed(rounds, || {
        let read = |i: usize| {
            let conn = &conns[i];
            let range = &range;
            async move {
                match reads.get(i) {
                    Some(q) => conn.query(q, range).await.map(|r| r.len()),
                    None => Ok(0),
                }
            }
        };
        let (a, b, c) = rt
            .block_on(async { tokio::try_join!(read(0), read(1), read(2)) })
            .unwrap();
        rows = a + b + c;
    });
    print_times(
        &format!("{what}, {hours} h"),
        times,
        &format!("  ({rows} rows)"),
    );
}

fn main() {
    let events = env_num("CONSOLE_BENCH_EVENTS", 10_000_000);
    let rounds = env_num("CONSOLE_BENCH_ROUNDS", 20) as usize;
    let Some(pg) = watchpost_pgtest::Cluster::start_or_skip(watchpost_pgtest::Options {
        settings: vec![
            "shared_buffers = 1GB".into(),
            "work_mem = 64MB".into(),
            "maintenance_work_mem = 1GB".into(),
            "max_wal_size = 8GB".into(),
            "synchronous_commit = off".into(),
        ],
        ..Default::default()
    }) else {
        eprintln!("console bench: no PostgreSQL; skipped");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config =
        watchpost_server::config::Config::for_tests("127.0.0.1:0".parse().unwrap(), &pg.url());
    config.console = Some(watchpost_server::config::ConsoleSettings {
        session_key_file: None,
    });
    // The bench folds when it measures, not when the maintenance task would.
    config.fold_every = None;
    let server = rt
        .block_on(watchpost_server::start(config))
        .expect("server starts");
    let addr = server.addr;
    let fill = Instant::now();
    rt.block_on(async {
        let (db, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        use watchpost_server::admin;
        admin::group_add(&db, "bench", "all", "").await.unwrap();
        admin::user_add(&db, "bench", "ann", "analyst", Some("correct horse battery"))
            .await
            .unwrap();
        db.batch_execute(
            "INSERT INTO agents (host_id, group_id, hostname, version, last_seen_at, heartbeat)
             SELECT 'h' || i, (SELECT id FROM groups), 'host-' || i, '0.1.0',
                    now() - (CASE WHEN i % 97 = 0 THEN interval '1 hour' ELSE interval '5 seconds' END),
                    jsonb_build_object('checks', jsonb_build_array(jsonb_build_object(
                        'name', 'defs', 'status', CASE WHEN i % 50 = 0 THEN 'stale' ELSE 'ok' END,
                        'detail', '')), 'baseline_pairs', i * 10)
             FROM generate_series(1, 1000) i;
             DROP INDEX events_search; DROP INDEX events_filters;",
        )
        .await
        .unwrap();
        let chunk = 1_000_000u64;
        let span_ms = 29.0 * 86_400_000.0;
        let mut done = 0;
        while done < events {
            let n = chunk.min(events - done);
            db.execute(
                "INSERT INTO events (ts, agent_id, seq, local_id, time, stored_at, received_at,
                     source, host, filters, filter_keys, anomaly, anomaly_why, needs_ack, acked_at,
                     acked_by, ack_comment, ack_origin, fields, raw, origin, search)
                 SELECT t, 1 + i % 1000, i, i, t, t, t, 'sep-av', 'host-' || (i % 1000),
                        f, f, i % 50 = 0,
                        CASE WHEN i % 50 = 0 THEN 'new-logon-source: new value \"10.9.' || (i % 251) || '.1\" for key \"user' || (i % 500) || '\"' END,
                        i % 50 = 0,
                        CASE WHEN i % 50 = 0 AND i % 3 <> 0 THEN t + interval '1 hour' END,
                        CASE WHEN i % 50 = 0 AND i % 3 <> 0 THEN 'ann' END,
                        CASE WHEN i % 50 = 0 AND i % 3 <> 0 THEN 'reviewed' END,
                        CASE WHEN i % 50 = 0 AND i % 3 <> 0 THEN 'server' END,
                        fl, raw, 'C:\\AV\\log.txt:' || i, to_tsvector('simple', raw)
                 FROM (SELECT i,
                              now() - ((($2::int8 - i)::float8 / $2::int8 * $3::float8) || ' milliseconds')::interval AS t,
                              CASE WHEN i % 5 = 0 THEN ARRAY['sigma-windows'] ELSE ARRAY['av-detection'] END AS f,
                              CASE WHEN i % 5 = 0
                                   THEN jsonb_build_object('user', 'user' || (i % 500), 'risk_name', 'Trojan.Gen ' || (i % 97),
                                                           'rule_level', (ARRAY['low','medium','high','critical'])[1 + i % 4])
                                   ELSE jsonb_build_object('user', 'user' || (i % 500), 'risk_name', 'Trojan.Gen ' || (i % 97)) END AS fl,
                              'Virus found,Computer name: host-' || (i % 1000) || ',Risk: Trojan.Gen ' || (i % 97) || ',User: user' || (i % 500) AS raw
                       FROM generate_series($1::int8, $1::int8 + $4::int8 - 1) i) s",
                &[&((done + 1) as i64), &(events as i64), &span_ms, &(n as i64)],
            )
            .await
            .unwrap();
            done += n;
            eprintln!(
                "console bench: {done} events stored ({:.0} s)",
                fill.elapsed().as_secs_f64()
            );
        }
        // The per-hour counts the overview reads, filled as migration 4 fills them for
        // events stored before it (ingest keeps them as it stores).
        let t = Instant::now();
        db.batch_execute(watchpost_server::db::ROLLUP_BACKFILL)
            .await
            .unwrap();
        eprintln!(
            "console bench: per-hour counts filled in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        db.batch_execute(
            "CREATE INDEX events_search ON events USING gin (search);
             CREATE INDEX events_filters ON events USING gin (filter_keys);
             ANALYZE events; ANALYZE agents; ANALYZE event_hours; ANALYZE filter_hours;",
        )
        .await
        .unwrap();
    });
    eprintln!(
        "console bench: {events} events filled and indexed in {:.0} s",
        fill.elapsed().as_secs_f64()
    );
    let (status, answer) = http(
        addr,
        "POST",
        "/console/login",
        "",
        "user=ann&password=correct+horse+battery",
    );
    assert_eq!(status, 303, "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: ")
                .then(|| l["set-cookie: ".len()..].to_owned())
        })
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mid = pg.psql(&format!("SELECT id FROM events WHERE seq = {}", events / 2));
    let anomaly = pg.psql("SELECT max(id) FROM events WHERE anomaly");
    let pages = [
        ("overview, 24 h", "/console/".to_owned()),
        ("overview, 7 days", "/console/?hours=168".to_owned()),
        ("events, newest", "/console/events".to_owned()),
        (
            "events, isanomaly needsack host",
            "/console/events?q=isanomaly%3Atrue+needsack%3Atrue+host%3Ahost-300".to_owned(),
        ),
        (
            "events, field wildcard",
            "/console/events?q=user%3Auser42*".to_owned(),
        ),
        (
            "events, free text + 7 d range",
            "/console/events?q=trojan&since=7d".to_owned(),
        ),
        (
            "events, deep page (keyset)",
            format!("/console/events?before={mid}"),
        ),
        ("event detail", format!("/console/events/{anomaly}")),
        ("hosts (1,000)", "/console/hosts".to_owned()),
        ("host", "/console/hosts/300".to_owned()),
        ("audit log", "/console/audit".to_owned()),
    ];
    let overviews = &pages[..2];
    let conns = rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..3 {
            let (db, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            out.push(db);
        }
        out
    });
    let reads = env_num("CONSOLE_BENCH_FORMER_ROUNDS", 5) as usize;
    // The overview's reads before the fold (main's, on the per-agent rows alone): by level,
    // by host (every host's hours), by filter.
    let bucket = "floor((date_part('epoch', hour) * 1000 - $1::float8) / $2::float8)::int8";
    let per_agent = [
        format!(
            "SELECT {bucket}, level, sum(events)::int8, sum(anomalies)::int8
             FROM event_hours WHERE hour >= $3 AND hour < $4 GROUP BY 1, 2"
        ),
        format!(
            "SELECT {bucket}, host, sum(events)::int8
             FROM event_hours WHERE hour >= $3 AND hour < $4 GROUP BY 1, 2"
        ),
        format!(
            "SELECT {bucket}, filter, sum(events)::int8 FROM filter_hours
             WHERE hour >= $3 AND hour < $4 GROUP BY 1, 2"
        ),
    ];
    let backend = watchpost_server::console::PgBackend::new(
        watchpost_server::db::pool(
            &watchpost_server::config::Config::for_tests("127.0.0.1:0".parse().unwrap(), &pg.url())
                .database,
        )
        .unwrap(),
        rt.handle().clone(),
        Duration::from_secs(90),
    );
    let fold = env_num("CONSOLE_BENCH_FOLD", 1) == 1;
    if fold {
        println!(
            "fleet console, {events} events in PostgreSQL, per-agent per-hour counts (before the fold), {rounds} rounds per page (HTTP, one connection per request):"
        );
        time_pages(addr, &cookie, overviews, rounds);
        for hours in [24u32, 168] {
            time_reads(
                &rt,
                &conns,
                "main's overview SQL (per agent)",
                hours,
                &per_agent,
                reads,
            );
            time_overview(&backend, "overview reads (per-agent rows)", hours, reads);
        }
        let (folded, took) = rt.block_on(async {
            let (mut db, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let t = Instant::now();
            let f = watchpost_server::db::fold_hours(
                &mut db,
                watchpost_server::db::fold_before(jiff::Timestamp::now()),
            )
            .await
            .unwrap();
            let took = t.elapsed().as_secs_f64();
            // What autovacuum does after the server's folds (a bench measuring right
            // after folding 30 days at once would otherwise read past the dead rows).
            // (One statement at a time: VACUUM cannot run in a transaction block.)
            for (table, _) in watchpost_server::db::HOUR_TABLES {
                db.batch_execute(&format!("VACUUM ANALYZE {table}"))
                    .await
                    .unwrap();
            }
            (f, took)
        });
        let rows = pg.psql(
            "SELECT (SELECT count(*) FROM event_hours) || ' per-agent rows left, '
                    || (SELECT count(*) FROM folded_level_hours) || ' by level, '
                    || (SELECT count(*) FROM folded_host_hours) || ' by host and hour, '
                    || (SELECT count(*) FROM folded_host_days) || ' by host and day, '
                    || (SELECT count(*) FROM folded_filter_hours) || ' by filter'",
        );
        println!(
            "fold: {} per-agent hour rows and {} filter rows folded in {took:.1} s; {rows}",
            folded.event_rows, folded.filter_rows
        );
        let differing = pg.psql(watchpost_server::db::HOURS_CHECK);
        assert_eq!(differing, "0", "the folded counts agree with the events");
    }
    println!(
        "fleet console, {events} events in PostgreSQL{}, {rounds} rounds per page (HTTP, one connection per request):",
        if fold { ", past hours folded" } else { "" }
    );
    time_pages(addr, &cookie, &pages, rounds);
    for hours in [24u32, 168] {
        time_overview(
            &backend,
            if fold {
                "overview reads (folded)"
            } else {
                "overview reads (per-agent rows)"
            },
            hours,
            reads,
        );
    }
    // The same data counted the way the overview did before the per-hour counts: its two
    // counting reads over `events`, at once on two connections (`CONSOLE_BENCH_FORMER_ROUNDS`
    // rounds, default 5, after one warm-up; 0 skips, and skips the reads above).
    let bucket = "floor((extract(epoch FROM ts)::float8 * 1000 - $1::float8) / $2::float8)::int8";
    let former = [
        format!(
            "SELECT {bucket}, GROUPING(host), GROUPING(lvl), host, lvl, count(*), count(*) FILTER (WHERE anomaly)
             FROM (SELECT ts, host, anomaly, fields ->> 'rule_level' AS lvl FROM events
                   WHERE ts >= $3 AND ts < $4) e
             GROUP BY GROUPING SETS ((1), (1, host), (1, lvl))"
        ),
        format!(
            "SELECT {bucket}, f, count(*) FROM events, unnest(filters) f
             WHERE ts >= $3 AND ts < $4 GROUP BY 1, 2"
        ),
    ];
    for hours in [24u32, 168] {
        time_reads(
            &rt,
            &conns,
            "former overview counting",
            hours,
            &former,
            reads,
        );
    }
    rt.block_on(server.stop());
}
