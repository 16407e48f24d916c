//! The server against a real PostgreSQL (a private cluster): enrollment, batches stored
//! exactly once (again, overlapping, out of order, concurrently), bad input refused with a
//! clear 4xx, heartbeats, revocation, rate limits, metrics, retention.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use watchpost_fleet_protocol::{AckRecord, Batch, Heartbeat, OutcomeRecord, Record};

fn count(env: &Env, sql: &str) -> i64 {
    env.pg.psql(sql).parse().unwrap()
}

#[test]
fn agents_enroll_and_ship_exactly_once_and_bad_input_is_refused() {
    let Some(env) = Env::start(|_| {}) else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        watchpost_server::admin::group_add(&db, "test", "lab", "the lab")
            .await
            .unwrap();
        watchpost_server::admin::secret_create(&db, "test", "lab", "s1", None)
            .await
            .unwrap()
    });
    let addr = env.addr;

    // Enrollment: a wrong secret is refused, the right one gives a credential; the same
    // host enrolling again keeps its agent row.
    let a = enroll(addr, "wpe_wrong", "host-a", "A");
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (403, Some("enroll_refused"))
    );
    let cred = credential(&enroll(addr, &secret, "host-a", "A"));
    assert!(cred.starts_with("wpa_"));
    let stored_hash = env
        .pg
        .psql("SELECT encode(credential_hash, 'hex') FROM agents");
    assert!(!stored_hash.contains(&cred[4..]), "only a hash is stored");
    assert_eq!(count(&env, "SELECT count(*) FROM agents"), 1);
    // Each enrollment counts a use of its secret.
    let secrets = env
        .rt
        .block_on(watchpost_server::admin::secret_list(&db, Some("lab")))
        .unwrap();
    assert_eq!(
        secrets
            .iter()
            .map(|s| (s.name.as_str(), s.uses))
            .collect::<Vec<_>>(),
        [("s1", 1)]
    );

    // A batch, then the same batch again (its answer lost): acknowledged as committed,
    // stored once.
    let b = events("st1", 1, 10, "A");
    let r = send_batch(addr, &cred, &b);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["committed_seq"], 10);
    assert_eq!(r.json()["stored"], 10);
    assert_eq!(r.json().get("already_committed"), None);
    let r = send_batch(addr, &cred, &b);
    assert_eq!(
        (
            r.status,
            r.json()["stored"].as_u64(),
            r.json()["duplicates"].as_u64(),
            r.json()["already_committed"].as_bool()
        ),
        (200, Some(0), Some(10), Some(true))
    );
    // After a gap: refused with the number expected.
    let r = send_batch(addr, &cred, &events("st1", 15, 3, "A"));
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["code"], "out_of_order");
    assert_eq!(r.json()["expected_seq"], 11);
    // Numbers already committed under other content: the same range with other records,
    // an older part replayed, a range overlapping the committed end. Each refused whole,
    // with the number to go on from.
    for (first, n, host) in [(1, 10, "B"), (1, 5, "A"), (8, 7, "A")] {
        let r = send_batch(addr, &cred, &events("st1", first, n, host));
        assert_eq!(
            (
                r.status,
                r.json()["code"].as_str(),
                r.json()["expected_seq"].as_u64()
            ),
            (409, Some("replayed"), Some(11)),
            "{first}+{n} {host}"
        );
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("already committed (up to 10)"),
            "{:?}",
            r.json()
        );
    }
    assert_eq!(count(&env, "SELECT count(*) FROM events"), 10);
    let r = send_batch(addr, &cred, &events("st1", 11, 4, "A"));
    assert_eq!(
        (
            r.json()["stored"].as_u64(),
            r.json()["committed_seq"].as_u64()
        ),
        (Some(4), Some(14))
    );
    // The same batch from four connections at once: stored once.
    let b = events("st1", 15, 50, "A");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(send_batch(addr, &cred, &b).status, 200));
        }
    });
    assert_eq!(count(&env, "SELECT count(*) FROM events"), 64);
    assert_eq!(count(&env, "SELECT count(DISTINCT seq) FROM events"), 64);
    // Gaps inside a batch (records dropped on the agent) are fine.
    let mut b = events("st1", 65, 10, "A");
    b.records.retain(|r| r.seq() % 2 == 0);
    assert_eq!(send_batch(addr, &cred, &b).json()["committed_seq"], 74);
    // Outcomes and acknowledgements of stored events.
    let b = Batch {
        stream: "st1".into(),
        first_seq: 75,
        last_seq: 77,
        records: vec![
            Record::Outcome(OutcomeRecord {
                seq: 75,
                event: 3,
                action: "siem".into(),
                filter: "av".into(),
                at_ms: 1_700_000_000_000,
                attempt: 1,
                ok: false,
                detail: "timed out".into(),
            }),
            Record::Outcome(OutcomeRecord {
                seq: 76,
                event: 3,
                action: "siem".into(),
                filter: "av".into(),
                at_ms: 1_700_000_001_000,
                attempt: 2,
                ok: true,
                detail: String::new(),
            }),
            Record::Ack(AckRecord {
                seq: 77,
                event: 3,
                at_ms: 1_700_000_002_000,
                by: "bob".into(),
                comment: "test file".into(),
            }),
        ],
    };
    let r = send_batch(addr, &cred, &b);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["orphans"], 0);
    assert_eq!(env.pg.psql("SELECT acked_by || '|' || ack_comment || '|' || ack_origin FROM events WHERE local_id = 3"), "bob|test file|agent");
    assert_eq!(
        count(&env, "SELECT count(*) FROM outcomes WHERE event_local = 3"),
        2
    );

    // Bad input: each a clear 4xx with a JSON reason; nothing stored.
    let auth = format!("Bearer {cred}");
    let h = [("Authorization", auth.as_str())];
    let r = request(addr, "POST", "/api/v1/batches", &h, b"{not json");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("bad_json"))
    );
    assert!(
        r.json()["error"].as_str().unwrap().contains("line 1"),
        "{:?}",
        r.json()
    );
    let r = request(
        addr,
        "POST",
        "/api/v1/batches",
        &[("Authorization", &auth), ("Content-Encoding", "br")],
        b"{}",
    );
    assert_eq!(r.status, 415);
    let r = raw(addr, format!("POST /api/v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("too_large"))
    );
    let bomb = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let spaces = vec![b' '; 1 << 20];
        for _ in 0..100 {
            enc.write_all(&spaces).unwrap();
        }
        enc.finish().unwrap()
    };
    let r = request(
        addr,
        "POST",
        "/api/v1/batches",
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("too_large"))
    );
    let r = request(addr, "POST", "/api/v1/batches", &[], b"{}");
    assert_eq!(r.status, 401);
    let r = request(
        addr,
        "POST",
        "/api/v1/batches",
        &[("Authorization", "Bearer wpa_0000")],
        b"{}",
    );
    assert_eq!(r.status, 401);
    let r = request(addr, "GET", "/api/v1/nothing", &[], b"");
    assert_eq!(r.status, 404);
    let r = request(addr, "GET", "/api/v1/batches", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = raw(addr, b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(count(&env, "SELECT count(*) FROM events"), 69);

    // A heartbeat: the agent's row, check states and their history, the quarantine.
    let mut hb = Heartbeat {
        version: "0.1.0".into(),
        hostname: "A".into(),
        config_generation: Some("abc".into()),
        checks: vec![watchpost_fleet_protocol::CheckStatus {
            name: "defs".into(),
            status: "ok".into(),
            detail: String::new(),
        }],
        ..Heartbeat::default()
    };
    hb.shipping.dropped = 7;
    let send_hb = |hb: &Heartbeat| {
        request(
            addr,
            "POST",
            "/api/v1/heartbeat",
            &h,
            &serde_json::to_vec(hb).unwrap(),
        )
    };
    assert_eq!(send_hb(&hb).status, 200);
    hb.checks[0].status = "stale".into();
    hb.quarantine = Some(watchpost_fleet_protocol::QuarantineStatus {
        since_ms: 1_700_000_000_000,
        reason: "ips".into(),
        until_ms: None,
    });
    assert_eq!(send_hb(&hb).status, 200);
    assert_eq!(send_hb(&hb).status, 200);
    assert_eq!(env.pg.psql("SELECT status FROM check_states"), "stale");
    assert_eq!(count(&env, "SELECT count(*) FROM check_changes"), 2);
    assert_eq!(count(&env, "SELECT count(*) FROM quarantine_changes"), 1);
    assert_eq!(count(&env, "SELECT shipping_dropped FROM agents"), 7);

    // The query language against PostgreSQL.
    let found = |q: &str| -> Vec<i64> {
        let query = watchpost_server::events::parse_query(q, None).unwrap();
        env.rt
            .block_on(watchpost_server::events::find(&db, &query, 1000))
            .unwrap()
            .iter()
            .map(|e| e.local_id)
            .collect()
    };
    assert_eq!(found("isanomaly:true needsack:true host:a").len(), 22);
    assert_eq!(found("\"test string 42\""), [42]);
    assert_eq!(found("risk_name:\"EICAR Test String 1*\"").len(), 11);
    assert_eq!(found("acked:true"), [3]);
    assert!(found("-host:A").is_empty());
    assert_eq!(found("filter:AV-Detection").len(), 69);
    assert_eq!(found("filter:av-*").len(), 69);
    assert_eq!(found("-isanomaly:true").len(), 46);
    assert_eq!(found("\"eicar tes*\"").len(), 69);
    assert_eq!(found("user:ALICE 42"), [42]);
    assert!(found("user:bob").is_empty());

    // Revocation: refused everywhere, with the reason.
    env.rt
        .block_on(watchpost_server::admin::agent_revoke(
            &db,
            "test",
            "A",
            "stolen laptop",
        ))
        .unwrap();
    let r = send_batch(addr, &cred, &events("st1", 78, 1, "A"));
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("revoked"))
    );
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("stolen laptop")
    );
    assert_eq!(send_hb(&hb).status, 403);
    let r = enroll(addr, &secret, "host-a", "A");
    assert_eq!(r.status, 403, "a revoked host cannot enroll itself back");
    // Secrets: revoked and expired ones are refused.
    env.rt
        .block_on(watchpost_server::admin::secret_revoke(
            &db, "test", "lab", "s1",
        ))
        .unwrap();
    assert!(
        enroll(addr, &secret, "host-b", "B").json()["error"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let s2 = env
        .rt
        .block_on(watchpost_server::admin::secret_create(
            &db,
            "test",
            "lab",
            "s2",
            Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1)),
        ))
        .unwrap();
    assert!(
        enroll(addr, &s2, "host-b", "B").json()["error"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert!(
        count(
            &env,
            "SELECT count(*) FROM audit_log WHERE action IN ('agent.enroll', 'agent.revoke', 'secret.revoke')"
        ) >= 3
    );
    env.stop();
}

#[test]
fn rate_limits_metrics_admin_routes_and_retention() {
    let Some(env) = Env::start(|c| {
        c.agent_rate = 0.5;
        c.agent_burst = 2.0;
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    }) else {
        return;
    };
    let db = env.db();
    let (secret, token) = env.rt.block_on(async {
        watchpost_server::admin::group_add(&db, "test", "g", "")
            .await
            .unwrap();
        watchpost_server::admin::user_add(&db, "test", "ann", "viewer", None)
            .await
            .unwrap();
        (
            watchpost_server::admin::secret_create(&db, "test", "g", "s", None)
                .await
                .unwrap(),
            watchpost_server::admin::user_token(&db, "test", "ann", "t")
                .await
                .unwrap(),
        )
    });
    let addr = env.addr;
    let cred = credential(&enroll(addr, &secret, "h1", "H1"));
    let auth = format!("Bearer {cred}");
    // Two requests in the bucket, the third waits.
    assert_eq!(
        send_batch(addr, &cred, &events("s", 1, 5, "H1")).status,
        200
    );
    assert_eq!(
        send_batch(addr, &cred, &events("s", 6, 5, "H1")).status,
        200
    );
    let r = request(
        addr,
        "POST",
        "/api/v1/heartbeat",
        &[("Authorization", &auth)],
        b"{}",
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(r.header("retry-after").is_some());

    // Admin routes need a user token.
    assert_eq!(
        request(addr, "GET", "/api/v1/admin/events?q=host%3AH1", &[], b"").status,
        401
    );
    assert_eq!(
        request(
            addr,
            "GET",
            "/api/v1/admin/events",
            &[("Authorization", &auth)],
            b""
        )
        .status,
        401,
        "an agent credential is not a user token"
    );
    let user = format!("Bearer {token}");
    let r = request(
        addr,
        "GET",
        "/api/v1/admin/events?q=isanomaly%3Atrue+host%3AH1&limit=2",
        &[("Authorization", &user)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = request(
        addr,
        "GET",
        "/api/v1/admin/events?q=isanomaly%3Amaybe",
        &[("Authorization", &user)],
        b"",
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("bad_query"))
    );
    let r = request(
        addr,
        "GET",
        "/api/v1/admin/agents",
        &[("Authorization", &user)],
        b"",
    );
    assert_eq!(r.json()[0]["hostname"], "H1");
    assert_eq!(r.json()[0]["state"], "online");
    assert_eq!(
        request(addr, "GET", "/api/v1/health", &[], b"").json()["database"],
        "ok"
    );

    // Metrics.
    let m = env.server.as_ref().unwrap().metrics_addr.unwrap();
    let text = String::from_utf8(request(m, "GET", "/metrics", &[], b"").body).unwrap();
    for line in [
        "watchpost_server_requests_total{route=\"/api/v1/heartbeat\",status=\"429\"} 1",
        "watchpost_server_requests_total{route=\"/api/v1/batches\",status=\"200\"} 2",
        "watchpost_server_batches_total{result=\"stored\"} 2",
        "watchpost_server_records_total{kind=\"event\"} 10",
        "watchpost_server_rate_limited_total 1",
        "watchpost_server_ingest_lag_seconds_count 10",
        "watchpost_server_db_pool_connections{state=\"max\"} 8",
        "watchpost_server_db_urgent_pool_connections{state=\"max\"} 2",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert_eq!(request(m, "GET", "/other", &[], b"").status, 404);

    // Retention: forty days on, today's partition is past a 30-day window and dropped
    // whole; the new days are made.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(40 * 24);
    let dropped = env.rt.block_on(async {
        let (mut c, conn) = tokio_postgres::connect(&env.pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        watchpost_server::db::maintain_partitions(&mut c, later, 30)
            .await
            .unwrap()
            .1
    });
    let today = jiff::Timestamp::now().strftime("%Y%m%d").to_string();
    assert!(dropped.contains(&format!("events_p{today}")), "{dropped:?}");
    assert_eq!(count(&env, "SELECT count(*) FROM events"), 0);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
        ),
        32,
        "30 days kept (today included) and two ahead"
    );
    env.stop();
}

#[test]
fn a_group_of_batches_shares_one_transaction_and_each_gets_its_own_answer() {
    let Some(env) = Env::start(|_| {}) else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        watchpost_server::admin::group_add(&db, "test", "g", "")
            .await
            .unwrap();
        watchpost_server::admin::secret_create(&db, "test", "g", "s", None)
            .await
            .unwrap()
    });
    credential(&enroll(env.addr, &secret, "h1", "H1"));
    credential(&enroll(env.addr, &secret, "h2", "H2"));
    let id = |h: &str| -> i64 {
        env.pg
            .psql(&format!("SELECT id FROM agents WHERE hostname = '{h}'"))
            .parse()
            .unwrap()
    };
    let (a1, a2) = (
        watchpost_server::ingest::AgentRef::checked(id("H1")),
        watchpost_server::ingest::AgentRef::checked(id("H2")),
    );
    let (b1, b2, b3, b4) = (
        events("s", 1, 5, "H1"),
        events("s", 6, 3, "H1"),
        events("s", 3, 2, "H2"),
        events("s", 1, 8, "H1"),
    );
    // The second batch again (its answer lost).
    let b5 = b2.clone();
    let window = watchpost_server::db::Window {
        from: jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24),
        until: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48),
    };
    let results = env.rt.block_on(async {
        let (mut c, conn) = tokio_postgres::connect(&env.pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let now = jiff::Timestamp::now();
        let [p1, p2, p3, p4, p5] = [b1, b2, b3, b4, b5].map(|b| {
            let hash = watchpost_server::ingest::content_hash(&serde_json::to_vec(&b).unwrap());
            watchpost_server::ingest::prepare(b, hash, window, now)
        });
        watchpost_server::ingest::store_group(
            &mut c,
            &[
                (a1.clone(), &p1),
                (a1.clone(), &p2),
                (a2, &p3),
                (a1.clone(), &p4),
                (a1, &p5),
            ],
        )
        .await
        .unwrap()
    });
    let summary: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(a) => format!(
                "ok {} stored {} dup {}{}",
                a.committed_seq,
                a.stored,
                a.duplicates,
                if a.already_committed {
                    " already committed"
                } else {
                    ""
                }
            ),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ok 5 stored 5 dup 0",
            "ok 8 stored 3 dup 0",
            "a new stream must start at sequence number 1, not 3",
            "batch 1..=8 reuses sequence numbers already committed (up to 8) and is not the batch committed last",
            "ok 8 stored 0 dup 3 already committed",
        ]
    );
    assert_eq!(count(&env, "SELECT count(*) FROM events"), 8);
    assert_eq!(
        count(&env, "SELECT last_seq FROM agents WHERE hostname = 'H2'"),
        0
    );
    env.stop();
}

/// A kept-alive connection quiet for longer than `header_timeout` between requests stays
/// open (agents send a batch every few seconds and a heartbeat every 30 s on connections
/// they keep); only `idle_timeout` closes it. A client that starts a request and stalls
/// is still cut off (within `idle_timeout`).
#[test]
fn a_kept_connection_outlives_the_header_timeout_between_requests() {
    use std::io::{Read, Write};
    let Some(env) = Env::start(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(5);
    }) else {
        return;
    };
    let health = format!(
        "GET /api/v1/health HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        env.addr
    );
    let mut s = std::net::TcpStream::connect(env.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = |s: &mut std::net::TcpStream| {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    s.write_all(health.as_bytes()).unwrap();
    assert!(answer(&mut s).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(2500));
    s.write_all(health.as_bytes()).unwrap();
    let second = answer(&mut s);
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the connection was closed after 2.5 s quiet: {second:?}"
    );
    // A request begun and stalled is cut off after the idle limit.
    let mut stalled = std::net::TcpStream::connect(env.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stalled
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHo")
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = stalled.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "a stalled request is closed"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    env.stop();
}
