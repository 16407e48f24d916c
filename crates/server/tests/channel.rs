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

/// The status and error code of a channel request.
fn channel_status(addr: SocketAddr, path: &str, cred: &str, body: &[u8]) -> (u16, String, String) {
    let auth = format!("Bearer {cred}");
    let a = request(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    let j = a.json();
    (
        a.status,
        j["code"].as_str().unwrap_or("").to_owned(),
        j["error"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn reports_arriving_together_are_recorded_apart_and_a_revoked_agent_is_refused_on_the_channel() {
    let Some(env) = Env::start(|_| {}) else {
        return;
    };
    let addr = env.addr;
    let db = env.db();
    let secret = env.rt.block_on(async {
        watchpost_server::admin::group_add(&db, "test", "lab", "")
            .await
            .unwrap();
        watchpost_server::admin::secret_create(&db, "test", "lab", "s", None)
            .await
            .unwrap()
    });
    let creds: Vec<String> = ["A", "B", "C"]
        .iter()
        .map(|h| credential(&enroll(addr, &secret, &format!("host-{h}"), h)))
        .collect();
    // Each agent polled once: its credential is in the server's cache from now on.
    for c in &creds {
        assert!(poll(addr, c, &now_poll(None, 0)).is_empty());
    }
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
    let send = |host: &str| {
        env.rt
            .block_on(control::command_send(
                &db,
                "test",
                &Target::Agent(host.into()),
                &CommandKind::RunChecks,
                None,
                None,
            ))
            .unwrap()
            .id
    };
    let (cmd_a, cmd_b) = (send("A"), send("B"));
    let ids: Vec<i64> = env
        .pg
        .psql("SELECT string_agg(id::text, ',' ORDER BY hostname) FROM agents")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let hash = |c: &str| Some(watchpost_server::admin::hash(c));
    let agent = |i: usize, credential: Option<Vec<u8>>| watchpost_server::ingest::AgentRef {
        id: ids[i],
        credential,
    };
    let applied = Report {
        config: Some(ConfigReport {
            version: published.version,
            ok: true,
            generation: 7,
            diagnostics: String::new(),
        }),
        ..Report::default()
    };
    let result = |id: i64, output: &str| Report {
        results: vec![CommandResult {
            id,
            ok: true,
            output: output.into(),
        }],
        acks_applied: Some(0),
        ..Report::default()
    };
    let (ra, rb) = (result(cmd_a, "a ran"), result(cmd_b, "b ran"));
    let refused_config = Report {
        config: Some(ConfigReport {
            version: published.version,
            ok: false,
            generation: 3,
            diagnostics: "group.toml:5:8: no such path".into(),
        }),
        ..Report::default()
    };
    // Revoked while its credential is still cached.
    env.rt
        .block_on(watchpost_server::admin::agent_revoke(
            &db,
            "test",
            "C",
            "decommissioned",
        ))
        .unwrap();
    let group = [
        (agent(0, hash(&creds[0])), &applied),
        (agent(0, hash(&creds[0])), &ra),
        (agent(1, None), &rb),
        // The same result again, in the same transaction: recorded once.
        (agent(0, hash(&creds[0])), &ra),
        (agent(1, hash(&creds[1])), &refused_config),
        (agent(2, hash(&creds[2])), &applied),
        // A's id with B's credential.
        (agent(0, hash(&creds[1])), &applied),
    ];
    let mut db2 = env.db();
    let answers = env.rt.block_on(async {
        watchpost_server::channel::record_reports(&mut db2, &group)
            .await
            .unwrap()
    });
    let recorded: Vec<Option<u32>> = answers
        .iter()
        .map(|a| a.as_ref().ok().map(|a| a.recorded))
        .collect();
    assert_eq!(
        recorded,
        [Some(0), Some(1), Some(1), Some(0), Some(0), None, None]
    );
    assert!(
        matches!(&answers[5], Err(watchpost_server::heartbeat::Refused::Revoked(m)) if m.contains("decommissioned"))
    );
    assert_eq!(
        answers[6],
        Err(watchpost_server::heartbeat::Refused::Unauthorized)
    );
    assert_eq!(
        env.pg.psql(
            "SELECT string_agg(hostname || '=' || coalesce(config_version::text, '-') || '/' || coalesce(config_ok::text, '-') || '/' || coalesce(config_error, '') || '/' || coalesce(config_reload_generation::text, '-'), ' ' ORDER BY hostname) FROM agents"
        ),
        format!(
            "A={v}/true//7 B={v}/false/group.toml:5:8: no such path/3 C=-/-//-",
            v = published.version
        )
    );
    assert_eq!(
        env.pg.psql(
            "SELECT string_agg(a.hostname || ':' || (r.result->>'output'), ' ' ORDER BY a.hostname) FROM command_results r JOIN agents a ON a.id = r.agent_id WHERE r.finished_at IS NOT NULL"
        ),
        "A:a ran B:b ran"
    );

    // Through HTTP, with C's credential cached: its poll and its report are refused, with
    // the reason, and so is a credential nobody has.
    let body = serde_json::to_vec(&now_poll(None, 0)).unwrap();
    let (status, code, error) = channel_status(addr, "/api/v1/poll", &creds[2], &body);
    assert_eq!((status, code.as_str()), (403, "revoked"), "{error}");
    assert!(error.contains("decommissioned"), "{error}");
    let (status, code, _) = channel_status(
        addr,
        "/api/v1/report",
        &creds[2],
        &serde_json::to_vec(&applied).unwrap(),
    );
    assert_eq!((status, code.as_str()), (403, "revoked"));
    let (status, _, _) = channel_status(addr, "/api/v1/poll", "not-a-credential", &body);
    assert_eq!(status, 401);
    // The others go on.
    assert_eq!(
        poll(addr, &creds[1], &now_poll(Some(published.version), 0))
            .commands
            .len(),
        0
    );
    assert_eq!(report(addr, &creds[0], &applied), 0);
    env.stop();
}
