//! `watchpost-server events` means what `watchpost events` means: the same events are
//! stored in an agent's SQLite store and shipped (by the fleet client) into PostgreSQL;
//! every query below finds the same events in both.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use watchpost_fleet::{FleetSpec, HostInfo, SecretSource};
use watchpost_fleet_protocol::Heartbeat;
use watchpost_store::{NewEvent, Query, Store, StoreOptions, Writer, parse_since, parse_terms};

fn ev(
    host: &str,
    source: &str,
    filter: &str,
    fields: &[(&str, &str)],
    raw: &str,
    anomaly: bool,
    time: &str,
) -> NewEvent {
    NewEvent {
        time: Some(time.parse().unwrap()),
        source: source.into(),
        host: host.into(),
        filters: vec![filter.into()],
        anomaly,
        anomaly_why: anomaly.then(|| "new value".into()),
        needs_ack: anomaly,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        raw: raw.into(),
        origin: None,
    }
}

#[test]
fn the_agent_and_the_server_answer_every_query_alike() {
    let Some(env) = Env::start(|_| {}) else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        watchpost_server::admin::group_add(&db, "t", "g", "")
            .await
            .unwrap();
        watchpost_server::admin::secret_create(&db, "t", "g", "s", None)
            .await
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let w = Writer::start(
        &path,
        StoreOptions {
            flush_every: Duration::from_millis(20),
            ship: Some(10_000),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let now = jiff::Timestamp::now();
    let recent = (now - jiff::SignedDuration::from_hours(1)).to_string();
    let older = (now - jiff::SignedDuration::from_hours(50)).to_string();
    let events = [
        ev(
            "WS-01",
            "sep-av",
            "av-detection",
            &[
                ("risk_name", "EICAR Test String"),
                ("path", r"C:\Users\Ärger\eicar.com"),
                ("user", "alice"),
            ],
            "Virus found,Computer name: WS-01,Risk name: EICAR Test String",
            true,
            &recent,
        ),
        ev(
            "ws-02",
            "sep-av",
            "av-detection",
            &[
                ("risk_name", "Trojan.Gen.2"),
                ("path", r"C:\Temp\mimikatz.exe"),
                ("user", "bob"),
            ],
            "Virus found,Computer name: ws-02,Risk name: Trojan.Gen.2 mimikatz",
            false,
            &recent,
        ),
        ev(
            "ws-02",
            "security",
            "rdp-new-source",
            &[
                ("TargetUserName", "admin_x"),
                ("IpAddress", "10.0.0.9"),
                ("LogonType", "10"),
            ],
            "4624 logon admin_x from 10.0.0.9",
            true,
            &older,
        ),
        ev(
            "lab-pc",
            "sep-ips",
            "ips-system-infected",
            &[
                ("signature_name", "System Infected: Mimikatz Activity"),
                ("remote_ip", "10.0.0.50"),
            ],
            "System Infected: Mimikatz Activity 10.0.0.50",
            false,
            &older,
        ),
        ev(
            "LAB-PC",
            "security",
            "rdp-new-source",
            &[
                ("TargetUserName", "adm%in"),
                ("IpAddress", "10.0.0.10"),
                ("note", "50% off_sale"),
            ],
            "4624 logon adm%in",
            true,
            &recent,
        ),
    ];
    for e in &events {
        w.submit(e.clone()).unwrap();
    }
    assert!(w.flush(Duration::from_secs(5)));
    Store::open(&path)
        .unwrap()
        .ack(&[3], "carol", "known admin")
        .unwrap();
    let shipper = watchpost_fleet::start(
        FleetSpec {
            server: format!("http://{}", env.addr),
            ca_file: None,
            secret: Some(SecretSource::Inline(secret)),
            max_queue: 1000,
            batch: 100,
            timeout: Duration::from_secs(10),
            state_dir: dir.path().to_path_buf(),
            host_id: None,
        },
        path.clone(),
        HostInfo {
            host_id: "qa".into(),
            hostname: "qa".into(),
        },
        Box::new(Heartbeat::default),
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while env
        .pg
        .psql("SELECT count(*) FILTER (WHERE acked_at IS NOT NULL) || '/' || count(*) FROM events")
        != "1/5"
    {
        assert!(Instant::now() < until, "events not shipped");
        std::thread::sleep(Duration::from_millis(100));
    }
    shipper.stop();
    drop(w);
    let store = Store::open_read_only(&path).unwrap();
    let queries = [
        "",
        "isanomaly:true",
        "isanomaly:false",
        "needsack:true",
        "needsack:false",
        "acked:true",
        "acked:false",
        "host:ws-01",
        "host:WS*",
        "host:lab-pc",
        "-host:lab*",
        "source:sep-*",
        "filter:rdp-new-source",
        "filter:RDP*",
        "-filter:av-detection",
        "user:ALICE",
        "user:a*",
        "TargetUserName:adm%in",
        "TargetUserName:adm*",
        "TargetUserName:adm_in",
        "note:50%*",
        "missing:*",
        "missing:x",
        "mimikatz",
        "MIMIKATZ -source:sep-ips",
        "\"system infected\"",
        "\"infected system\"",
        "eica*",
        "\"eicar test*\"",
        "arger",
        "10.0.0.9",
        "\"10 0 0 9\"",
        "isanomaly:true needsack:true host:lab*",
        "id:3",
    ];
    for q in queries {
        for since in [None, Some("24h")] {
            let query = Query {
                terms: parse_terms(q).unwrap(),
                since: since.map(|s| parse_since(s, jiff::Timestamp::now()).unwrap()),
                ..Query::default()
            };
            let mut local: Vec<u64> = store
                .query(&query, 100)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            local.sort_unstable();
            let server_query = watchpost_server::events::parse_query(q, since).unwrap();
            let mut remote: Vec<u64> = if let Some(id) = q.strip_prefix("id:") {
                // `id:` names each store's own ids; compare through the local id.
                let n: i64 = id.parse().unwrap();
                env.rt
                    .block_on(watchpost_server::events::find(
                        &db,
                        &watchpost_server::events::parse_query("", since).unwrap(),
                        100,
                    ))
                    .unwrap()
                    .iter()
                    .filter(|e| e.local_id == n)
                    .map(|e| e.local_id as u64)
                    .collect()
            } else {
                env.rt
                    .block_on(watchpost_server::events::find(&db, &server_query, 100))
                    .unwrap()
                    .iter()
                    .map(|e| e.local_id as u64)
                    .collect()
            };
            remote.sort_unstable();
            assert_eq!(local, remote, "query {q:?} since {since:?}");
        }
    }
    env.stop();
}
