//! The channel back to agents against a real PostgreSQL and two server instances: a
//! configuration is checked before it is published, reaches the long-poll of its group's
//! agent on the other instance (LISTEN/NOTIFY) and no other group; commands are sent once
//! per request id, delivered to their agents only, their results recorded once; central
//! acknowledgements reach their agent in order; rollbacks publish an old version again.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::*;
use watchpost_fleet_protocol::{CommandKind, CommandResult, ConfigReport, Delivery, Poll, Report};
use watchpost_server::control::{self, ControlError, Target};

const GOOD: &str = r#"
[[source]]
name = "av"
type = "sep_av_log"
path = "/var/log/sep/*.log"

[[filter]]
name = "av-detection"
match = { source = "av" }
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://127.0.0.1:514"
"#;

fn poll(addr: SocketAddr, cred: &str, p: &Poll) -> Delivery {
    let auth = format!("Bearer {cred}");
    let a = request(
        addr,
        "POST",
        "/api/v1/poll",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(p).unwrap(),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    serde_json::from_slice(&a.body).unwrap()
}

fn report(addr: SocketAddr, cred: &str, r: &Report) -> u64 {
    let auth = format!("Bearer {cred}");
    let a = request(
        addr,
        "POST",
        "/api/v1/report",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(r).unwrap(),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    a.json()["recorded"].as_u64().unwrap()
}

fn now_poll(config_version: Option<i32>, ack_after: i64) -> Poll {
    Poll {
        config_version,
        ack_after,
        wait_secs: 0,
    }
}

#[test]
fn configuration_commands_and_acks_reach_their_agents_through_either_instance() {
    let Some(env) = Env::start(|c| c.metrics = Some("127.0.0.1:0".parse().unwrap())) else {
        return;
    };
    // A second instance on the same database.
    let other = env
        .rt
        .block_on(watchpost_server::start(env.config.clone()))
        .unwrap();
    let (a_addr, b_addr) = (env.addr, other.addr);
    let db = env.db();
    let (s1, s2) = env.rt.block_on(async {
        for g in ["lab", "office"] {
            watchpost_server::admin::group_add(&db, "test", g, "")
                .await
                .unwrap();
        }
        (
            watchpost_server::admin::secret_create(&db, "test", "lab", "s", None)
                .await
                .unwrap(),
            watchpost_server::admin::secret_create(&db, "test", "office", "s", None)
                .await
                .unwrap(),
        )
    });
    let ca = credential(&enroll(a_addr, &s1, "host-a", "A"));
    let cb = credential(&enroll(a_addr, &s2, "host-b", "B"));
    assert!(poll(a_addr, &ca, &now_poll(None, 0)).is_empty());

    // A configuration with an error is refused at publication, with its place.
    let bad = GOOD.replace("actions = [\"siem\"]", "actions = [\"nope\"]");
    let e = env
        .rt
        .block_on(control::config_publish(
            &db,
            "test",
            "lab",
            &bad,
            &BTreeMap::new(),
            "",
            &[],
        ))
        .unwrap_err();
    match e {
        ControlError::Refused(d) => assert!(
            d.contains("group.toml:10:12: error: unknown action `nope`"),
            "{d}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(env.pg.psql("SELECT count(*) FROM config_versions"), "0");

    // A waits on the other instance; a publication through this one wakes it.
    let waiting = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let d = poll(
            b_addr,
            &ca,
            &Poll {
                config_version: None,
                ack_after: 0,
                wait_secs: 30,
            },
        );
        (d, t.elapsed())
    });
    // The poll is held by the other instance (so it was authenticated) before the
    // credential is replaced.
    let b_metrics = other.metrics_addr.expect("metrics listen");
    let started = std::time::Instant::now();
    while !String::from_utf8_lossy(&request(b_metrics, "GET", "/metrics", &[], b"").body)
        .lines()
        .any(|l| l.starts_with("watchpost_server_polls_waiting ") && !l.ends_with(" 0"))
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the poll never reached the other instance"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ca = credential(&enroll(a_addr, &s1, "host-a", "A"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let published = env
        .rt
        .block_on(control::config_publish(
            &db,
            "test",
            "lab",
            GOOD,
            &BTreeMap::new(),
            "first",
            &[],
        ))
        .unwrap();
    assert_eq!(published.version, 1);
    let (d, took) = waiting.join().unwrap();
    // (A fresh enrollment replaced the credential the waiting poll used; the poll was
    // authenticated before, so it still receives what it waited for.)
    let c = d.config.expect("the publication woke the poll");
    assert_eq!((c.version, c.config.as_str()), (1, GOOD));
    eprintln!("configuration reached the other instance's poll {took:?} after it began");
    // Not B: its group has no configuration.
    assert!(poll(b_addr, &cb, &now_poll(None, 0)).config.is_none());
    // A reports it runs version 1; nothing is outstanding then.
    report(
        a_addr,
        &ca,
        &Report {
            config: Some(ConfigReport {
                version: 1,
                ok: true,
                generation: 2,
                diagnostics: String::new(),
            }),
            ..Report::default()
        },
    );
    assert_eq!(env.rt.block_on(control::outstanding(&db)).unwrap(), (0, 0));
    assert!(poll(a_addr, &ca, &now_poll(Some(1), 0)).is_empty());

    // Commands: one request id sends once; only A receives it; its result is recorded once.
    let send = |target: Target, kind: CommandKind, id: Option<&str>| {
        env.rt
            .block_on(control::command_send(&db, "test", &target, &kind, id, None))
            .unwrap()
    };
    let release = CommandKind::QuarantineRelease {
        reason: "cleaned".into(),
    };
    let first = send(Target::Agent("A".into()), release.clone(), Some("r1"));
    let again = send(Target::Agent("A".into()), release.clone(), Some("r1"));
    assert_eq!(
        (first.id, first.agents, again.id, again.existing),
        (first.id, 1, first.id, true)
    );
    assert_eq!(env.rt.block_on(control::outstanding(&db)).unwrap(), (0, 1));
    let d = poll(b_addr, &ca, &now_poll(Some(1), 0));
    assert_eq!(d.commands.len(), 1);
    assert_eq!(
        (d.commands[0].id, &d.commands[0].kind),
        (first.id, &release)
    );
    assert!(poll(b_addr, &cb, &now_poll(None, 0)).commands.is_empty());
    let result = Report {
        results: vec![CommandResult {
            id: first.id,
            ok: true,
            output: "released".into(),
        }],
        ..Report::default()
    };
    assert_eq!(report(a_addr, &ca, &result), 1);
    assert_eq!(report(b_addr, &ca, &result), 0, "a result is recorded once");
    assert!(poll(a_addr, &ca, &now_poll(Some(1), 0)).commands.is_empty());
    let listed = env
        .rt
        .block_on(control::command_list(&db, Some(first.id), 10))
        .unwrap();
    assert_eq!(listed[0].results[0].ok, Some(true));
    assert_eq!(listed[0].results[0].output.as_deref(), Some("released"));
    // A group command reaches the group's agents, woken on the other instance.
    let waiting = std::thread::spawn(move || {
        poll(
            b_addr,
            &ca,
            &Poll {
                config_version: Some(1),
                ack_after: 0,
                wait_secs: 30,
            },
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let g = send(Target::Group("lab".into()), CommandKind::RunChecks, None);
    let d = waiting.join().unwrap();
    assert_eq!(d.commands.len(), 1);
    assert_eq!(
        (d.commands[0].id, &d.commands[0].kind),
        (g.id, &CommandKind::RunChecks)
    );
    let ca = credential(&enroll(a_addr, &s1, "host-a", "A"));

    // Central acknowledgements: events A shipped, acknowledged on the server, reach A in
    // order; its cursor then has them.
    assert_eq!(
        send_batch(a_addr, &ca, &events("st", 1, 6, "A")).status,
        200
    );
    let ids: Vec<i64> = env
        .pg
        .psql("SELECT string_agg(id::text, ',' ORDER BY local_id) FROM events WHERE needs_ack")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let acked = env
        .rt
        .block_on(control::ack(&db, "alice", &ids, "known test file"))
        .unwrap();
    assert_eq!(acked.len(), ids.len());
    let d = poll(a_addr, &ca, &now_poll(Some(1), 0));
    let locals: Vec<u64> = d.acks.iter().map(|a| a.event).collect();
    assert_eq!(locals, [3, 6]);
    assert!(
        d.acks
            .iter()
            .all(|a| a.by == "alice" && a.comment == "known test file")
    );
    let last = d.acks.last().unwrap().id;
    assert!(poll(a_addr, &ca, &now_poll(Some(1), last)).acks.is_empty());
    // Acknowledged again: nothing new.
    assert!(
        env.rt
            .block_on(control::ack(&db, "alice", &ids, "again"))
            .unwrap()
            .is_empty()
    );
    assert!(poll(b_addr, &cb, &now_poll(None, 0)).acks.is_empty());

    // A second version, then a rollback to the first: A receives version 1 again.
    let v2 = GOOD.replace("udp://127.0.0.1:514", "udp://127.0.0.1:1514");
    env.rt
        .block_on(control::config_publish(
            &db,
            "test",
            "lab",
            &v2,
            &BTreeMap::new(),
            "port",
            &[],
        ))
        .unwrap();
    assert_eq!(
        poll(a_addr, &ca, &now_poll(Some(1), last))
            .config
            .unwrap()
            .version,
        2
    );
    env.rt
        .block_on(control::config_rollback(&db, "test", "lab", 1))
        .unwrap();
    assert_eq!(
        poll(a_addr, &ca, &now_poll(Some(2), last))
            .config
            .unwrap()
            .version,
        1
    );
    let audit = env
        .pg
        .psql("SELECT string_agg(action, ',' ORDER BY id) FROM audit_log WHERE action LIKE 'config.%' OR action LIKE 'command.%' OR action = 'event.ack'");
    assert_eq!(
        audit,
        "config.publish,command.send,command.send,event.ack,config.publish,config.rollback"
    );
    env.rt.block_on(other.stop());
    env.stop();
}
