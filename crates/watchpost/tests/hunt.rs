//! `watchpost hunt`: the shared SigmaHQ rules over the shared EVTX samples.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use serde_json::Value;

fn hunt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .arg("hunt")
        .args(args)
        .output()
        .expect("run watchpost hunt")
}

#[test]
fn hunting_the_shared_samples_finds_the_known_detections() {
    let rules = common::fixture("sigma/rules");
    let evtx = common::fixture("evtx");
    let dir = tempfile::tempdir().unwrap();
    // A damaged file among the good ones is reported and skipped.
    let broken = dir.path().join("broken.evtx");
    std::fs::write(&broken, b"ElfFile\0 but nothing after the magic").unwrap();
    let out = hunt(&[
        "-r",
        rules.to_str().unwrap(),
        "--format",
        "jsonl",
        evtx.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1391 rules loaded, 0 not loaded"), "{err}");
    assert!(err.contains("broken.evtx"), "{err}");
    assert!(err.contains("61 files, 1635 records"), "{err}");
    let found: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |rule: &str, file: &str| {
        found
            .iter()
            .any(|d| d["rule"] == rule && d["record"].as_str().is_some_and(|r| r.contains(file)))
    };
    assert!(
        has("Security Eventlog Cleared", "DE_1102_security_log_cleared"),
        "{found:#?}"
    );
    assert!(has(
        "LSASS Access From Non System Account",
        "CA_hashdump_4663_4656_lsass_access"
    ));
    assert!(has("WmiPrvSE Spawned A Process", "NTLM2SelfRelay"));
    // Sorted by time; each detection names its matched fields.
    let times: Vec<&str> = found.iter().map(|d| d["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        found
            .iter()
            .all(|d| d["fields"].as_object().is_some_and(|f| !f.is_empty()))
    );

    // --min-level keeps the severe ones; CSV has a header and one line per detection.
    let out = hunt(&[
        "-r",
        rules.to_str().unwrap(),
        "--min-level",
        "high",
        "--format",
        "csv",
        "--threads",
        "1",
        evtx.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("time,host,rule,level,id,fields,record"));
    // A record starts with its time; quoted values may span lines (command lines with CR LF).
    let rows: Vec<&str> = lines.filter(|l| l.starts_with("20")).collect();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r.contains(",high,") || r.contains(",critical,")),
        "{text}"
    );
    assert!(rows.len() < found.len());

    let out = hunt(&[
        "-r",
        rules.to_str().unwrap(),
        "--min-level",
        "severe",
        evtx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown level `severe`"));
}

/// `hunt -c`: the configuration's anomaly filters over the same records, first seen over
/// the history, as `anomaly: FILTER` detections with the reason.
#[test]
fn a_hunt_runs_the_configured_anomaly_filters_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hunt.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nstate_dir = '{}'\n\n[[filter]]\nname = \"logon-source\"\nmatch = {{ source = \"evtx\", event_id = \"4624\" }}\nanomaly = {{ key = [\"TargetUserName\"], value = [\"IpAddress\"], learning = \"1h\" }}\n",
            dir.path().join("state").display().to_string().replace('\\', "/")
        ),
    )
    .unwrap();
    let rule =
        common::fixture("sigma/rules/windows/builtin/security/win_security_audit_log_cleared.yml");
    let out = hunt(&[
        "-r",
        rule.to_str().unwrap(),
        "-c",
        cfg.to_str().unwrap(),
        "--format",
        "jsonl",
        common::fixture("evtx").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let anomalies: Vec<&Value> = found
        .iter()
        .filter(|d| d["rule"] == "anomaly: logon-source")
        .collect();
    assert!(anomalies.len() >= 5, "{found:#?}");
    assert!(
        anomalies
            .iter()
            .all(|d| d["fields"]["why"].as_str().unwrap().starts_with("new "))
    );
    assert!(
        found
            .iter()
            .any(|d| d["rule"] == "Security Eventlog Cleared")
    );
}
