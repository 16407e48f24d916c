//! The fleet server's console in a real browser, over a private PostgreSQL: two agents
//! enroll and ship events through the real API (anomalies waiting for acknowledgement,
//! Sigma detections with their rule level, an event whose fields hold HTML/JS) and
//! heartbeats (a stale definitions check, a quarantine); headless Chromium runs the
//! review flow of `crates/console/tests/browser/console_flow.py`, then the groups,
//! configuration and commands flow of `fleet_admin_flow.py` (an admin publishes, is
//! refused with the diagnostic at its line, compares versions and rolls back, adds a Sigma
//! rule file, is refused a broken edit of it with the reason at the file and its line,
//! publishes the correction and sees it in the difference; a viewer is refused; an
//! analyst releases a quarantine). Screenshots land in
//! `target/console-screenshots/fleet/`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, credential, enroll, request, send_batch};
use watchpost_fleet_protocol::{
    ActionStatus, Batch, CheckStatus, EventRecord, Fields, Heartbeat, QuarantineStatus, Record,
    SourceStatus,
};

fn batch(host: &str, n: u64) -> Batch {
    let now = jiff::Timestamp::now().as_millisecond();
    let records = (1..=n)
        .map(|seq| {
            let anomaly = seq % 4 == 0;
            let mut fields = vec![
                ("user".to_owned(), format!("user{}", seq % 7)),
                ("risk_name".to_owned(), format!("Trojan.Gen {seq}")),
            ];
            if seq % 5 == 0 {
                fields.push((
                    "rule_level".to_owned(),
                    ["high", "medium", "critical"][(seq % 3) as usize].to_owned(),
                ));
            }
            if seq == n {
                fields = vec![
                    (
                        "CommandLine".to_owned(),
                        "<script>console.log('XSS-1')</script> xss-probe".to_owned(),
                    ),
                    (
                        "User".to_owned(),
                        "\"><img src=x onerror=console.log('XSS-2')>".to_owned(),
                    ),
                ];
            }
            Record::Event(EventRecord {
                seq,
                id: seq,
                time_ms: Some(now - (n - seq) as i64 * 60_000),
                stored_ms: now - (n - seq) as i64 * 60_000 + 100,
                source: "sep-av".into(),
                host: host.into(),
                filters: vec![
                    if seq % 5 == 0 {
                        "sigma-windows"
                    } else {
                        "av-detection"
                    }
                    .into(),
                ],
                anomaly,
                anomaly_why: anomaly.then(|| {
                    format!(
                        "new-logon-source: new value \"10.9.{seq}.1\" for key \"user{}\"",
                        seq % 7
                    )
                }),
                needs_ack: anomaly,
                fields: Fields(fields),
                raw: format!("Virus found,Computer name: {host},seq {seq}"),
                origin: Some(format!("C:\\ProgramData\\Symantec\\AV\\log.txt:{seq}")),
            })
        })
        .collect();
    Batch {
        stream: format!("{host}-s"),
        first_seq: 1,
        last_seq: n,
        records,
    }
}

#[test]
fn the_review_flow_in_chromium_on_the_fleet_console() {
    if let Some(why) = watchpost_console::browser::missing()
        && std::env::var("CI").as_deref() != Ok("true")
    {
        eprintln!("skipping: {why}");
        return;
    }
    let Some(env) = Env::with_console() else {
        return;
    };
    let db = env.db();
    let secret = env.rt.block_on(async {
        use watchpost_server::admin;
        admin::group_add(&db, "test", "laptops", "").await.unwrap();
        for (u, r) in [("ann", "analyst"), ("vic", "viewer"), ("ada", "admin")] {
            admin::user_add(&db, "test", u, r, Some("correct horse battery"))
                .await
                .unwrap();
        }
        admin::secret_create(&db, "test", "laptops", "s1", None)
            .await
            .unwrap()
    });
    let mut creds = Vec::new();
    for (i, host) in ["LAPTOP-7", "DESK-2"].iter().enumerate() {
        let cred = credential(&enroll(env.addr, &secret, &format!("id-{host}"), host));
        creds.push(cred.clone());
        assert_eq!(send_batch(env.addr, &cred, &batch(host, 90)).status, 200);
        let hb = Heartbeat {
            version: "0.1.0".into(),
            hostname: (*host).into(),
            os: "windows".into(),
            config_generation: Some("3f9a2c71e0d4b8a6".into()),
            sources: vec![SourceStatus {
                name: "sep-av".into(),
                records: 90,
                errors: 0,
                last_record_ms: Some(jiff::Timestamp::now().as_millisecond()),
            }],
            actions: vec![ActionStatus {
                name: "siem".into(),
                kind: "syslog".into(),
                ok: 30,
                ..ActionStatus::default()
            }],
            checks: vec![CheckStatus {
                name: "sep-definitions".into(),
                status: if i == 0 { "stale" } else { "ok" }.into(),
                detail: if i == 0 {
                    "definitions are 9 days old"
                } else {
                    ""
                }
                .into(),
            }],
            definitions_age_hours: Some(if i == 0 { 216.0 } else { 20.0 }),
            quarantine: (i == 0).then(|| QuarantineStatus {
                since_ms: jiff::Timestamp::now().as_millisecond() - 600_000,
                reason: "filter ransomware-note".into(),
                until_ms: None,
            }),
            baseline_pairs: Some(1200 + i as u64),
            ..Heartbeat::default()
        };
        let auth = format!("Bearer {cred}");
        let a = request(
            env.addr,
            "POST",
            "/api/v1/heartbeat",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &serde_json::to_vec(&hb).unwrap(),
        );
        assert_eq!(a.status, 200);
    }
    let out = watchpost_console::browser::screenshot_dir("fleet");
    let _ = std::fs::remove_dir_all(&out);
    let result = watchpost_console::browser::run_flow(&[
        "--base",
        &format!("http://{}", env.addr),
        "--mode",
        "fleet",
        "--host",
        "LAPTOP-7",
        "--out",
        out.to_str().unwrap(),
    ]);
    // The acknowledgements are in PostgreSQL, made on the server.
    let acked = env
        .pg
        .psql("SELECT count(*) FROM events WHERE ack_origin = 'server' AND acked_by = 'ann'");
    // Groups, configuration and commands: the admin, a viewer refused, the analyst
    // releasing LAPTOP-7's quarantine.
    let laptop = env
        .pg
        .psql("SELECT id FROM agents WHERE hostname = 'LAPTOP-7'");
    let admin_result = match result {
        Ok(true) => watchpost_console::browser::run_script(
            "fleet_admin_flow.py",
            &[
                "--base",
                &format!("http://{}", env.addr),
                "--group",
                "laptops",
                "--host-id",
                &laptop,
                // The agents' reports of what they did with version 2, as the channel
                // carries them: LAPTOP-7 refuses it, DESK-2 runs it.
                "--refusing-credential",
                &creds[0],
                "--running-credential",
                &creds[1],
                "--out",
                out.to_str().unwrap(),
            ],
        ),
        other => other,
    };
    let versions = env.pg.psql(
        "SELECT string_agg(version || ' ' || created_by, ',' ORDER BY version) FROM config_versions",
    );
    let published = env
        .pg
        .psql("SELECT published_version || ' ' || published_by FROM groups WHERE name = 'laptops'");
    let commands = env.pg.psql(&format!(
        "SELECT string_agg(kind || ' ' || created_by || ' ' || coalesce(args ->> 'reason', ''), ',' ORDER BY id)
         FROM commands WHERE agent_id = {laptop}"
    ));
    let denied = env.pg.psql(
        "SELECT count(*) FROM audit_log WHERE action = 'console.denied' AND actor = 'vic'
         AND target IN ('publish group laptops', 'command to host ' || (SELECT id FROM agents WHERE hostname = 'LAPTOP-7'))",
    );
    env.stop();
    match admin_result {
        Ok(true) => {
            assert_eq!(acked, "3", "one plus two selected");
            // The refused configuration stored nothing; two published, then rolled back;
            // a rule file added, group.toml reading it, the rule corrected (its broken
            // edit and a refused removal stored nothing).
            assert_eq!(versions, "1 ada,2 ada,3 ada,4 ada,5 ada");
            assert_eq!(published, "5 ada");
            assert_eq!(
                commands,
                "quarantine_release ann false positive, ticket 4712,run_checks ann"
            );
            assert_eq!(denied, "2", "the viewer's publication and command");
            let shots: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            for page in [
                "groups",
                "group",
                "publish-refused",
                "group-published",
                "group-hosts-reported",
                "diff",
                "version",
                "rolled-back",
                "group-files",
                "file",
                "file-refused",
                "file-published",
                "diff-files",
                "remove-refused",
                "viewer-publish-refused",
                "host-quarantined",
                "host-commands",
            ] {
                assert!(
                    shots.iter().any(|s| s.ends_with(&format!("-{page}.png"))),
                    "a screenshot of {page}: {shots:?}"
                );
            }
            assert!(shots.len() >= 20);
        }
        Ok(false) => {}
        Err(e) => panic!("{e}"),
    }
}
