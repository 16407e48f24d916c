//! The agent's fleet client (watchpost-fleet) shipping a real event store to the real
//! server on a real PostgreSQL: enrollment with the credential stored 0600, everything
//! arriving once and in order, catch-up after the server was away, a bounded queue whose
//! drops reach the server, revocation.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use watchpost_fleet::{FleetSpec, HostInfo, SecretSource};
use watchpost_fleet_protocol::Heartbeat;
use watchpost_store::{NewEvent, Outbox, Outcome, StoreOptions, Writer};

fn event(n: u32) -> NewEvent {
    NewEvent {
        time: Some(jiff::Timestamp::now()),
        source: "sep-av".into(),
        host: "laptop".into(),
        filters: vec!["av".into()],
        anomaly: true,
        anomaly_why: Some(format!("av: new value \"{n}\"")),
        needs_ack: true,
        fields: vec![("n".into(), n.to_string())],
        raw: format!("detection {n}"),
        origin: None,
    }
}

fn spec(addr: std::net::SocketAddr, secret: &str, state: &Path, max_queue: u64) -> FleetSpec {
    FleetSpec {
        server: format!("http://{addr}"),
        ca_file: None,
        secret: Some(SecretSource::Inline(secret.into())),
        max_queue,
        batch: 50,
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(10),
        state_dir: state.to_path_buf(),
        host_id: None,
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn host() -> HostInfo {
    HostInfo {
        host_id: "test-host-1".into(),
        hostname: "laptop".into(),
    }
}

#[test]
fn a_store_ships_once_in_order_across_outages_and_drops_are_reported() {
    let Some(mut env) = Env::start(|c| c.heartbeat = Duration::from_secs(2)) else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        watchpost_server::admin::group_add(&db, "test", "laptops", "")
            .await
            .unwrap();
        watchpost_server::admin::secret_create(&db, "test", "laptops", "s", None)
            .await
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("events.db");
    let writer = Writer::start(
        &store,
        StoreOptions {
            flush_every: Duration::from_millis(20),
            ship: Some(150),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(writer.submit(event(n)).unwrap());
    }
    writer.outcome(Outcome {
        event: ids[0],
        action: "siem".into(),
        filter: "av".into(),
        at_ms: 1,
        attempt: 1,
        ok: true,
        detail: String::new(),
    });
    assert!(writer.flush(Duration::from_secs(5)));

    let shipper = watchpost_fleet::start(
        spec(env.addr, &secret, dir.path(), 150),
        store.clone(),
        host(),
        Box::new(Heartbeat::default),
    )
    .unwrap();
    wait_for("100 events", Duration::from_secs(30), || {
        env.pg.psql("SELECT count(*) FROM events") == "100"
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("fleet.credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    wait_for("the outcome", Duration::from_secs(10), || {
        env.pg.psql("SELECT count(*) FROM outcomes") == "1"
    });

    // The server goes away; detections accumulate (more than the queue holds); it comes
    // back on the same address: everything queued arrives once, in order.
    let addr = env.addr;
    env.rt.block_on(env.server.take().unwrap().stop());
    for n in 100..300 {
        writer.submit(event(n)).unwrap();
    }
    assert!(writer.flush(Duration::from_secs(5)));
    let st = Outbox::open(&store).unwrap().state().unwrap();
    assert_eq!(
        (st.pending(), st.dropped),
        (150, 50),
        "150 waiting, 50 over max_queue"
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut config = env.config.clone();
    config.listen = addr;
    env.server = Some(env.rt.block_on(watchpost_server::start(config)).unwrap());
    wait_for("the catch-up", Duration::from_secs(90), || {
        env.pg.psql("SELECT count(*) FROM events") == "250"
    });
    assert_eq!(env.pg.psql("SELECT count(DISTINCT seq) FROM events"), "250");
    // In order: in the order the server accepted them (their sequence numbers) the
    // events follow the order the agent stored them in. (Not the server's `id`s: its
    // sequence hands each pooled connection a block of 1,000.)
    assert_eq!(
        env.pg.psql("SELECT count(*) FROM (SELECT local_id, lag(local_id) OVER (ORDER BY seq) AS prev FROM events) t WHERE prev >= local_id"),
        "0"
    );
    // The drops reach the server with the next heartbeat.
    wait_for("the dropped count", Duration::from_secs(60), || {
        env.pg.psql("SELECT shipping_dropped FROM agents") == "50"
    });
    // Revoked: refused, nothing more stored.
    env.rt
        .block_on(watchpost_server::admin::agent_revoke(
            &db, "test", "laptop", "test",
        ))
        .unwrap();
    writer.submit(event(999)).unwrap();
    assert!(writer.flush(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.pg.psql("SELECT count(*) FROM events"), "250");
    assert!(shipper.stats().failures > 0);
    shipper.stop();
    drop(writer);
    env.stop();
}
