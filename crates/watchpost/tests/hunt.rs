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
            .any(|d| d["rule"] == rule && d["file"].as_str().is_some_and(|r| r.contains(file)))
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
    // Each names its record as Hayabusa does: EventRecordID, channel, event id, file.
    let cleared = found
        .iter()
        .find(|d| {
            d["rule"] == "Security Eventlog Cleared"
                && d["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("DE_1102_security_log_cleared.evtx"))
        })
        .unwrap();
    assert_eq!(cleared["channel"], "Security");
    assert_eq!(cleared["event_id"], 1102);
    assert!(
        cleared["record_id"].as_u64().is_some_and(|r| r > 0),
        "{cleared}"
    );
    // The results summary goes to stderr with JSON lines on stdout.
    assert!(err.contains("Results summary"), "{err}");
    assert!(err.contains("most frequent rules:"), "{err}");

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
    assert_eq!(
        lines.next(),
        Some("time,host,rule,level,id,channel,event_id,record_id,file,fields")
    );
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

/// The table keeps one line per detection whatever the values hold (command lines with
/// CR LF, tabs), names each record, and ends with the results summary.
#[test]
fn the_table_is_one_line_per_detection_with_a_summary() {
    let rules = common::fixture("sigma/rules");
    let out = hunt(&[
        "-r",
        rules.to_str().unwrap(),
        "--no-rule-cache",
        common::fixture("evtx").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\r') && !text.contains('\t'),
        "raw CR or tab in the table"
    );
    let (table, summary) = text.split_once("\nResults summary\n").expect("summary");
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    for col in [
        "time", "host", "level", "rule", "channel", "event", "record", "file",
    ] {
        assert!(head.contains(col), "{head}");
    }
    let rows: Vec<&str> = lines.collect();
    // As many lines as detections (the JSON lines run of the same set finds 179).
    assert_eq!(rows.len(), 179, "{table}");
    assert!(rows.iter().all(|r| r.starts_with("20")), "{table}");
    assert!(
        rows.iter().any(|r| r.contains("\\r\\n")),
        "escaped CR LF shown"
    );
    assert!(summary.contains("detections: 179"), "{summary}");
    assert!(summary.contains("records from 20"), "{summary}");
    assert!(
        summary.contains("read: 1,635 records in 60 files"),
        "{summary}"
    );
    assert!(summary.contains("hosts with the most high and critical detections:"));
}

/// Rules that do not load are summed up by reason in one line; --verbose lists them.
#[test]
fn rules_not_loaded_are_summed_up_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
    let det = "detection:\n    sel:\n        EventID: 1102\n    condition: sel\n";
    rule(
        "ok.yml",
        &format!(
            "title: Cleared\nid: ok-1\nlogsource: {{ product: windows, service: security }}\n{det}"
        ),
    );
    rule(
        "old.yml",
        &format!(
            "title: Old\nid: old-1\nstatus: deprecated\nlogsource: {{ product: windows, service: security }}\n{det}"
        ),
    );
    rule(
        "noisy.yml",
        &format!(
            "title: Noisy\nid: noisy-1\nlogsource: {{ product: windows, service: security }}\n{det}"
        ),
    );
    rule(
        "untitled.yml",
        &format!("id: u-1\nlogsource: {{ product: windows }}\n{det}"),
    );
    rule(
        "unmapped.yml",
        &format!("title: X\nlogsource: {{ product: windows, service: nonesuch }}\n{det}"),
    );
    let list = dir.path().join("noisy.txt");
    std::fs::write(&list, "# noisy rules\nnoisy-1 # Noisy\n").unwrap();
    let evtx = common::fixture("evtx");
    let args = |verbose: bool| {
        let mut a = vec![
            "-r".to_string(),
            dir.path().display().to_string(),
            "--exclude-list".into(),
            list.display().to_string(),
            "--no-rule-cache".into(),
            "--format".into(),
            "jsonl".into(),
            evtx.display().to_string(),
        ];
        if verbose {
            a.push("--verbose".into());
        }
        a
    };
    let run = |verbose: bool| {
        let a = args(verbose);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        hunt(&a)
    };
    let out = run(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "1 rules loaded, 4 not loaded (1 excluded, 1 logsource not mapped, 1 no title, 1 status deprecated; --verbose lists them)"
        ),
        "{err}"
    );
    assert!(!err.contains("rule not loaded:"), "{err}");
    let out = run(true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("rule not loaded:").count(), 4, "{err}");
    assert!(err.contains("excluded by"), "{err}");
    // --include-deprecated loads the deprecated one.
    let mut a = args(false);
    a.push("--include-deprecated".into());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = String::from_utf8_lossy(&hunt(&a).stderr).into_owned();
    assert!(err.contains("2 rules loaded, 3 not loaded"), "{err}");
}

/// Nothing readable: exit 1, naming each input and why.
#[test]
fn a_hunt_with_nothing_readable_fails_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.evtx");
    std::fs::write(&broken, b"not an evtx file at all").unwrap();
    let missing = dir.path().join("missing.evtx");
    let rule =
        common::fixture("sigma/rules/windows/builtin/security/win_security_audit_log_cleared.yml");
    let out = hunt(&[
        "-r",
        rule.to_str().unwrap(),
        "--no-rule-cache",
        broken.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no input could be read"), "{err}");
    assert!(
        err.contains("broken.evtx (") && err.contains("missing.evtx ("),
        "{err}"
    );
    // One good file beside them: a normal hunt (exit 0), the others named as skipped.
    let good =
        common::fixture("evtx/attack-samples/defense-evasion/DE_1102_security_log_cleared.evtx");
    let out = hunt(&[
        "-r",
        rule.to_str().unwrap(),
        "--no-rule-cache",
        broken.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("skipped ") && text.contains("broken.evtx"),
        "{text}"
    );
}

/// The second hunt over the same rules takes their parsed form from the cache; a changed
/// rule file is parsed again.
#[test]
fn the_rule_cache_is_used_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let src =
        common::fixture("sigma/rules/windows/builtin/security/win_security_audit_log_cleared.yml");
    std::fs::copy(&src, rules.join("a.yml")).unwrap();
    std::fs::copy(&src, rules.join("b.yml")).unwrap();
    let cache = dir.path().join("rules.cache");
    let evtx =
        common::fixture("evtx/attack-samples/defense-evasion/DE_1102_security_log_cleared.evtx");
    let run = || {
        let out = hunt(&[
            "-r",
            rules.to_str().unwrap(),
            "--rule-cache",
            cache.to_str().unwrap(),
            "--format",
            "jsonl",
            evtx.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run().contains("(0 from the cache)"));
    assert!(run().contains("(2 from the cache)"));
    let text = std::fs::read_to_string(rules.join("b.yml")).unwrap();
    std::fs::write(
        rules.join("b.yml"),
        text.replace("level: high", "level: low"),
    )
    .unwrap();
    assert!(run().contains("(1 from the cache)"));
}
