//! The way back from the fleet server, end to end with real parts: a private PostgreSQL,
//! `watchpost-server` over TLS on 127.0.0.1, two real `watchpost` agents (A in group
//! `lab`, B in group `office`) following SEP AV logs.
//!
//! * a configuration published to A's group is applied by A (by hot reload, the new
//!   generation reported to the server) and not by B; the local file keeps its source
//!   path, `[agent]` and `[fleet]` (the overlay rule);
//! * a configuration with an error is refused at publication; one that only fails on
//!   the agent (a source folder missing there) is reported with its diagnostics and A
//!   keeps its generation and keeps applying the version before;
//! * a quarantine applied on A by a detection is released from the server (the server
//!   is in the quarantine's allow-list); an action runs with an event built from fields
//!   sent from the server; a repeated command id runs once;
//! * an acknowledgement made on the server reaches A's store: `watchpost events
//!   --pending-ack` on A agrees with the server;
//! * A restarted comes back with the group configuration it ran.

#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use watchpost_fleet_protocol::CommandKind;
use watchpost_pgtest::{Cluster, Options};
use watchpost_server::control::{self, Target};

fn agent_config(dir: &Path, name: &str, port: u16, secret: &str) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    std::fs::create_dir_all(dir.join(format!("{name}-logs"))).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"
host = "{name}"
checkpoint_interval_ms = 200

[[source]]
name = "sep-av"
type = "sep_av_log"
path = "{logs}/*.Log"
start_at = "beginning"

[[filter]]
name = "virus-found"
match = {{ source = "sep-av", event_code = 5 }}
actions = ["log"]
require_ack = true

[[filter]]
name = "isolate-on-worm"
match = {{ source = "sep-av", risk_name = "Worm.Q" }}
actions = ["isolate"]

[[action]]
name = "log"
type = "jsonl_file"
path = "{state}/detections.jsonl"

[[action]]
name = "isolate"
type = "quarantine"
firewall = false
hook = ["/bin/true"]

[fleet]
server = "https://127.0.0.1:{port}"
ca_file = "{ca}"
enroll_secret = "{secret}"
host_id = "host-{name}"
"#,
            state = dir.join(format!("{name}-state")).display(),
            logs = dir.join(format!("{name}-logs")).display(),
            ca = dir.join("ca.pem").display(),
        ),
    )
    .unwrap();
    config
}

/// The group's configuration: the same source (its path is the host's), and a filter of
/// its own writing to `out`.
fn group_config(out: &Path, extra: &str) -> String {
    format!(
        r#"
[[source]]
name = "sep-av"
type = "sep_av_log"
path = "C:\\ProgramData\\Symantec\\Logs\\AV\\*.Log"

[[filter]]
name = "group-marker"
match = {{ source = "sep-av", event_code = 5 }}
actions = ["group-log"]

[[action]]
name = "group-log"
type = "jsonl_file"
path = "{}"
{extra}"#,
        out.display()
    )
}

fn detect(dir: &Path, agent: &str, risk: &str, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&av_virus_found(
            agent,
            risk,
            &format!("C:\\temp\\{risk}{i}.exe"),
        ));
        text.push_str("\r\n");
    }
    append(
        &dir.join(format!("{agent}-logs/05292019.Log")),
        text.as_bytes(),
    );
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn generation(dir: &Path, agent: &str) -> u64 {
    watchpost_runtime::reload::read_status(&dir.join(format!("{agent}-state")))
        .map_or(1, |s| s.outcome.generation())
}

#[test]
fn configuration_commands_and_acknowledgements_reach_real_agents() {
    let Some(pg) = Cluster::start_or_skip(Options::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls_for_loopback(d);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server_config = d.join("server.toml");
    std::fs::write(
        &server_config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\nheartbeat = \"1s\"\n[database]\nurl = \"{url}\"\n",
            cert = d.join("server.pem").display(),
            key = d.join("server.key").display(),
            url = pg.url()
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (config, _) = watchpost_server::config::load(&server_config).unwrap();
    let server = rt.block_on(watchpost_server::start(config)).unwrap();
    let db = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    });
    let (lab, office) = rt.block_on(async {
        for g in ["lab", "office"] {
            watchpost_server::admin::group_add(&db, "e2e", g, "")
                .await
                .unwrap();
        }
        (
            watchpost_server::admin::secret_create(&db, "e2e", "lab", "s", None)
                .await
                .unwrap(),
            watchpost_server::admin::secret_create(&db, "e2e", "office", "s", None)
                .await
                .unwrap(),
        )
    });
    let config_a = agent_config(d, "A", port, &lab);
    let config_b = agent_config(d, "B", port, &office);
    detect(d, "A", "EICAR", 2);
    detect(d, "B", "EICAR", 1);
    let a = Watchpost::start(&config_a, &d.join("A.log"));
    let b = Watchpost::start(&config_b, &d.join("B.log"));
    let shipped = |host: &str| -> i64 {
        pg.psql(&format!(
            "SELECT count(*) FROM events e JOIN agents a ON a.id = e.agent_id WHERE a.hostname = '{host}'"
        ))
        .parse()
        .unwrap()
    };
    wait_for("both agents shipping", Duration::from_secs(60), || {
        (shipped("A") == 2 && shipped("B") == 1).then_some(())
    });

    // Refused at publication: an unknown action, with its place.
    let marker = d.join("group-A.jsonl");
    let bad = group_config(&marker, "").replace("[\"group-log\"]", "[\"nope\"]");
    let e = rt
        .block_on(control::config_publish(
            &db,
            "e2e",
            "lab",
            &bad,
            &BTreeMap::new(),
            "",
            &[],
        ))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("group.toml:10:12: error: unknown action `nope`"),
        "{e}"
    );

    // Published to lab: A applies it by hot reload and reports it; B does not.
    let v1 = rt
        .block_on(control::config_publish(
            &db,
            "e2e",
            "lab",
            &group_config(&marker, ""),
            &BTreeMap::new(),
            "marker",
            &[],
        ))
        .unwrap();
    wait_for("A reporting version 1", Duration::from_secs(30), || {
        (pg.psql("SELECT coalesce(config_version::text || config_ok::text, '') FROM agents WHERE hostname = 'A'") == "1true").then_some(())
    });
    assert_eq!(v1.version, 1);
    assert_eq!(generation(d, "A"), 2);
    let status = rt.block_on(control::config_status(&db, "lab")).unwrap();
    assert_eq!(
        status[0].generation,
        Some(2),
        "the server records A's generation"
    );
    assert_eq!(generation(d, "B"), 1);
    detect(d, "A", "EICAR", 1);
    detect(d, "B", "EICAR", 1);
    wait_for("the group's filter on A", Duration::from_secs(30), || {
        (lines(&marker) == 1 && lines(&d.join("B-state/detections.jsonl")) == 2).then_some(())
    });
    // The local file kept its source path (A read its own folder) and its actions.
    assert_eq!(lines(&d.join("A-state/detections.jsonl")), 3);
    let status = rt.block_on(control::config_status(&db, "office")).unwrap();
    assert_eq!(status[0].version, None, "B has no group configuration");

    // A version that only fails on the agent (a source folder that is a file there):
    // reported, and A stays on version 1.
    std::fs::write(d.join("not-a-folder"), "").unwrap();
    let v2 = rt
        .block_on(control::config_publish(
            &db,
            "e2e",
            "lab",
            &group_config(
                &marker,
                &format!(
                    "\n[[source]]\nname = \"extra\"\ntype = \"text\"\npath = \"{}/not-a-folder/*.log\"\n",
                    d.display()
                ),
            ),
            &BTreeMap::new(),
            "extra source", &[],
        ))
        .unwrap();
    wait_for("A refusing version 2", Duration::from_secs(30), || {
        (pg.psql("SELECT coalesce(config_version::text || config_ok::text, '') FROM agents WHERE hostname = 'A'") == "2false").then_some(())
    });
    assert_eq!(v2.version, 2);
    let status = rt.block_on(control::config_status(&db, "lab")).unwrap();
    let error = status[0].error.clone().unwrap();
    assert!(
        error.contains("group.toml:") && error.contains("not-a-folder"),
        "{error}"
    );
    assert_eq!(generation(d, "A"), 2, "A keeps its generation");
    detect(d, "A", "EICAR", 1);
    wait_for(
        "version 1 still running on A",
        Duration::from_secs(30),
        || (lines(&marker) == 2).then_some(()),
    );
    assert_eq!(rt.block_on(control::outstanding(&db)).unwrap().0, 1);

    // Rolled back to version 1: A runs it (nothing changed on A).
    rt.block_on(control::config_rollback(&db, "e2e", "lab", 1))
        .unwrap();
    wait_for("A back on version 1", Duration::from_secs(30), || {
        (pg.psql("SELECT coalesce(config_version::text || config_ok::text, '') FROM agents WHERE hostname = 'A'") == "1true").then_some(())
    });

    // A quarantine applied on A by a detection, released from the server.
    detect(d, "A", "Worm.Q", 1);
    let quarantined = || {
        watchpost_actions::quarantine::status(&d.join("A-state"))
            .unwrap()
            .is_some_and(|s| s.active)
    };
    wait_for("A quarantined", Duration::from_secs(30), || {
        quarantined().then_some(())
    });
    let send = |target: Target, kind: CommandKind, id: Option<&str>| {
        rt.block_on(control::command_send(
            &db, "cli:e2e", &target, &kind, id, None,
        ))
        .unwrap()
    };
    let result = |id: i64| {
        rt.block_on(control::command_list(&db, Some(id), 1))
            .unwrap()[0]
            .results[0]
            .clone()
    };
    let release = CommandKind::QuarantineRelease {
        reason: "cleaned".into(),
    };
    let sent = send(
        Target::Agent("A".into()),
        release.clone(),
        Some("release-1"),
    );
    wait_for("the release's result", Duration::from_secs(30), || {
        result(sent.id).ok.map(|_| ())
    });
    let r = result(sent.id);
    assert_eq!(r.ok, Some(true), "{r:?}");
    assert!(
        r.output.as_deref().unwrap().starts_with("released"),
        "{r:?}"
    );
    assert!(!quarantined());
    let released_by = watchpost_actions::quarantine::status(&d.join("A-state"))
        .unwrap()
        .unwrap()
        .released
        .unwrap()
        .by;
    assert!(released_by.contains("cli:e2e"), "{released_by}");
    // The same request id again: the same command, not run again.
    let again = send(Target::Agent("A".into()), release, Some("release-1"));
    assert!(again.existing && again.id == sent.id);

    // An action run with an event built from fields; run the checks; a reload.
    let mut fields = BTreeMap::new();
    fields.insert("path".to_owned(), "C:\\suspect\\x.exe".to_owned());
    let run = send(
        Target::Agent("A".into()),
        CommandKind::RunAction {
            action: "log".into(),
            fields,
        },
        None,
    );
    let reload = send(Target::Group("lab".into()), CommandKind::Reload, None);
    wait_for("the action's result", Duration::from_secs(30), || {
        (result(run.id).ok.is_some() && result(reload.id).ok.is_some()).then_some(())
    });
    // The answer is the action's own outcome, recorded with the event the command made
    // (stored under the filter `fleet-command`, and shipped like any other).
    let run_output = result(run.id).output.unwrap_or_default();
    assert_eq!(result(run.id).ok, Some(true), "{run_output}");
    assert!(run_output.starts_with("action log: ok"), "{run_output}");
    wait_for(
        "the command's event on the server",
        Duration::from_secs(30),
        || {
            (pg.psql("SELECT count(*) FROM events e JOIN agents a ON a.id = e.agent_id WHERE a.hostname = 'A' AND e.source = 'fleet' AND 'fleet-command' = ANY(e.filters) AND e.fields ->> 'path' = 'C:\\suspect\\x.exe'") == "1")
            .then_some(())
        },
    );
    assert_eq!(result(reload.id).ok, Some(true), "{:?}", result(reload.id));
    wait_for("the action's line", Duration::from_secs(30), || {
        std::fs::read_to_string(d.join("A-state/detections.jsonl"))
            .unwrap()
            .contains("suspect")
            .then_some(())
    });
    let unknown = send(
        Target::Agent("A".into()),
        CommandKind::RunAction {
            action: "nope".into(),
            fields: BTreeMap::new(),
        },
        None,
    );
    wait_for(
        "the failing command's result",
        Duration::from_secs(30),
        || result(unknown.id).ok.map(|_| ()),
    );
    assert_eq!(result(unknown.id).ok, Some(false));
    assert!(
        result(unknown.id)
            .output
            .unwrap()
            .contains("no action `nope`")
    );

    // Acknowledged on the server: `watchpost events --pending-ack` on A agrees.
    wait_for("A's events shipped", Duration::from_secs(30), || {
        (shipped("A") >= 5).then_some(())
    });
    let pending = |config: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
            .args(["events", "--pending-ack", "--format", "jsonl", "-c"])
            .arg(config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert!(pending(&config_a) >= 4);
    let ids: Vec<i64> = pg
        .psql("SELECT string_agg(e.id::text, ',') FROM events e JOIN agents a ON a.id = e.agent_id WHERE a.hostname = 'A' AND e.needs_ack AND e.acked_at IS NULL")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let acked = rt
        .block_on(control::ack(&db, "cli:alice", &ids, "known test files"))
        .unwrap();
    assert_eq!(acked.len(), ids.len());
    wait_for("A's store to agree", Duration::from_secs(30), || {
        (pending(&config_a) == 0).then_some(())
    });
    let store = watchpost_store::Store::open_read_only(&d.join("A-state/events.db")).unwrap();
    let e = store.get(acked[0].local_id as u64).unwrap().unwrap();
    let ack = e.ack.unwrap();
    assert_eq!(
        (ack.by.as_str(), ack.comment.as_str()),
        ("cli:alice", "known test files")
    );
    assert_eq!(pending(&config_b), 2, "B's events are untouched");

    // A restarted runs the group configuration it ran (version 1), from the start.
    assert!(a.terminate());
    let a = Watchpost::start(&config_a, &d.join("A.log"));
    detect(d, "A", "EICAR", 1);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while lines(&marker) != 3 {
        assert!(
            std::time::Instant::now() < until,
            "version 1 after the restart: {}",
            std::fs::read_to_string(d.join("A.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(a.terminate());
    assert!(b.terminate());
    rt.block_on(server.stop());
}
