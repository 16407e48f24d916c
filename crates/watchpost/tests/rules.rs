//! `[[rules]]`: Sigma rule sets in the live daemon and in `watchpost test`.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Watchpost, fixture, wait_for};

fn config(dir: &std::path::Path, rules: &str) -> std::path::PathBuf {
    let cfg = dir.join("watchpost.toml");
    let p = |p: &std::path::Path| p.display().to_string().replace('\\', "/");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'
checkpoint_interval_ms = 100

[[source]]
name = "collected"
type = "evtx"
path = '{logs}/*.evtx'
start_at = "beginning"

[[filter]]
name = "not-the-lab"
exclude = true
match = {{ host = "LAB-1" }}

[[rules]]
name = "sigmahq"
sigma = '{rules}'
min_level = "high"
actions = ["flag"]

[[action]]
name = "flag"
type = "flag_file"
path = '{flag}'
content = "{{{{ filter }}}} | {{{{ rule_level }}}} | {{{{ rule_id }}}} | {{{{ host }}}}"
"#,
            state = p(&dir.join("state")),
            logs = p(&dir.join("logs")),
            rules = rules,
            flag = p(&dir.join("flag")),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    cfg
}

#[test]
fn a_sigma_detection_fires_the_rule_sets_actions_live() {
    let dir = tempfile::tempdir().unwrap();
    let rules = fixture("sigma/rules/windows/builtin/security")
        .display()
        .to_string()
        .replace('\\', "/");
    let cfg = config(dir.path(), &rules);
    let wp = Watchpost::start(&cfg, &dir.path().join("watchpost.log"));
    std::fs::copy(
        fixture("evtx/attack-samples/defense-evasion/DE_1102_security_log_cleared.evtx"),
        dir.path().join("logs/cleared.evtx"),
    )
    .unwrap();
    let flag = wait_for("the detection's action", Duration::from_secs(30), || {
        std::fs::read_to_string(dir.path().join("flag")).ok()
    });
    assert!(
        flag.starts_with(
            "Security Eventlog Cleared | high | d99b79d2-0a6f-4f46-ad8b-260b6e17f982 | "
        ),
        "{flag}"
    );
    drop(wp);

    // The same through `watchpost test`, with the rule's fields on the event.
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["test", "-c", cfg.to_str().unwrap(), "--format", "jsonl"])
        .arg(dir.path().join("logs/cleared.evtx"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["rules"] == "sigmahq")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(line["rule"], "Security Eventlog Cleared");
    assert_eq!(line["event"]["rule_level"], "high");
    assert_eq!(line["actions"], serde_json::json!(["flag"]));
}

#[test]
fn a_rule_set_can_be_narrowed_to_tags() {
    let dir = tempfile::tempdir().unwrap();
    let rules = fixture("sigma/rules/windows/builtin/security")
        .display()
        .to_string()
        .replace('\\', "/");
    let cfg = config(dir.path(), &rules);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let file = fixture("evtx/attack-samples/defense-evasion/DE_1102_security_log_cleared.evtx");
    let count = |cfg_text: &str| {
        std::fs::write(&cfg, cfg_text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
            .args(["test", "-c", cfg.to_str().unwrap(), "--format", "jsonl"])
            .arg(&file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"rules\":\"sigmahq\""))
            .count()
    };
    // "Security Eventlog Cleared" is tagged attack.defense-impairment.
    let with = text.replace(
        "actions = [\"flag\"]",
        "actions = [\"flag\"]\ntags = [\"attack.defense-impairment\"]",
    );
    let without = text.replace(
        "actions = [\"flag\"]",
        "actions = [\"flag\"]\ntags = [\"attack.discovery\"]",
    );
    assert!(count(&with) >= 1);
    assert_eq!(count(&without), 0);
}

#[test]
fn rule_sets_that_cannot_load_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("broken.yml"), "title: x\ndetection: [unclosed\n").unwrap();
    let cfg = config(dir.path(), &rules.display().to_string().replace('\\', "/"));
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["check-config", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("broken.yml"), "{err}");
    assert!(err.contains("no Sigma rule loaded"), "{err}");
}

#[test]
fn placeholders_and_correlations_in_a_rule_set() {
    let dir = tempfile::tempdir().unwrap();
    let p = |p: &std::path::Path| p.display().to_string().replace('\\', "/");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("hand.yml"),
        r"title: Kerberos pre-auth failure of an admin
id: krb-admin
level: high
logsource: { product: windows, service: security }
detection:
    sel:
        EventID: 4771
        TargetUserName|expand: '%Admins%'
    condition: sel
---
title: Service account logon
logsource: { product: windows, service: security }
detection:
    sel:
        TargetUserName|expand: '%ServiceAccounts%'
    condition: sel
---
title: Any Security event
name: sec_any
level: informational
logsource: { product: windows, service: security }
detection:
    sel:
        EventID|gt: 0
    condition: sel
---
title: Burst of Security events
level: high
correlation:
    type: event_count
    rules: sec_any
    generate: true
    group-by: Computer
    timespan: 1h
    condition:
        gte: 10
---
title: Quiet host
level: medium
correlation:
    type: event_count
    rules: sec_any
    group-by: Computer
    timespan: 1d
    condition:
        lt: 100
",
    )
    .unwrap();
    // The file's value is replaced by the inline one.
    std::fs::write(
        dir.path().join("vars.yml"),
        "vars:\n    Admins: nobody\ntransformations: []\n",
    )
    .unwrap();
    let cfg = dir.path().join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'

[[source]]
name = "collected"
type = "evtx"
path = '{logs}/*.evtx'

[[rules]]
name = "hand"
sigma = '{rules}'
placeholders_file = '{vars}'
placeholders = {{ Admins = ["Administrator", "root*"] }}
"#,
            state = p(&dir.path().join("state")),
            logs = p(&dir.path().join("logs")),
            rules = p(&rules),
            vars = p(&dir.path().join("vars.yml")),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["check-config", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{err}");
    assert!(
        err.contains("Service account logon")
            && err.contains("placeholder `%ServiceAccounts%` has no values"),
        "{err}"
    );

    // A placeholder file that cannot be read is an error at its place.
    let broken = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("vars.yml", "missing.yml");
    let broken_cfg = dir.path().join("broken.toml");
    std::fs::write(&broken_cfg, broken).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["check-config", "-c", broken_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("broken.toml:") && err.contains("missing.yml: cannot read"),
        "{err}"
    );

    let file = fixture("evtx/attack-samples/credential-access/kerberos_pwd_spray_4771.evtx");
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["test", "-c", cfg.to_str().unwrap(), "--format", "jsonl"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let found: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["rules"] == "hand")
        .collect();
    let titles: Vec<&str> = found
        .iter()
        .map(|v| v["rule"].as_str().unwrap())
        .filter(|t| *t != "Any Security event")
        .collect();
    // 12 records: one 4771 for Administrator; the 10th event makes the burst; the quiet
    // host's window (12 < 100) is decided when the records end.
    assert_eq!(
        titles,
        [
            "Kerberos pre-auth failure of an admin",
            "Burst of Security events",
            "Quiet host"
        ],
        "{text}"
    );
    let quiet = found.last().unwrap();
    assert_eq!(quiet["event"]["correlation_count"], "12", "{quiet}");
    assert_eq!(quiet["event"]["correlation_value"], "12");
    assert_eq!(
        quiet["event"]["correlation_group"],
        "01566s-win16-ir.threebeesco.com"
    );

    // A later event closes the window as it is read (as on the live stream): the same
    // host two months later, in a second file.
    let later = fixture("evtx/attack-samples/defense-evasion/DE_Fake_ComputerAccount_4720.evtx");
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["test", "-c", cfg.to_str().unwrap(), "--format", "jsonl"])
        .arg(&file)
        .arg(&later)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let seen: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["rules"] == "hand")
        .map(|v| {
            (
                v["rule"].as_str().unwrap().to_owned(),
                v["event"]["correlation_count"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                v["origin"]["file"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let quiet: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].0 == "Quiet host")
        .collect();
    assert_eq!(quiet.len(), 2, "{seen:#?}");
    // The first: the spray file's 12 events, decided by the first record of the later
    // file (before that record's own detections), carrying the last event of its window.
    assert_eq!(seen[quiet[0]].1, "12");
    assert!(seen[quiet[0]].2.contains("kerberos_pwd_spray"), "{seen:#?}");
    assert!(
        seen[quiet[0] - 1].2.contains("kerberos_pwd_spray"),
        "{seen:#?}"
    );
    assert!(
        seen[quiet[0] + 1].2.contains("DE_Fake_ComputerAccount"),
        "{seen:#?}"
    );
    assert_eq!(
        quiet[1] - quiet[0],
        3,
        "the later file's two records between"
    );
    // The second: the later file's 2 events, decided when the records end.
    assert_eq!((seen[quiet[1]].1.as_str(), quiet[1]), ("2", seen.len() - 1));

    // `watchpost hunt` with the same rules and the placeholders from a file.
    std::fs::write(
        dir.path().join("vars.yml"),
        "Admins: [Administrator]\nServiceAccounts: svc_*\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["hunt", "--format", "jsonl", "-r"])
        .arg(&rules)
        .arg("--placeholders")
        .arg(dir.path().join("vars.yml"))
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 rules loaded, 0 not loaded"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    let hunted: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["rule"].as_str().unwrap().to_owned())
        .filter(|t| t != "Any Security event")
        .collect();
    assert!(hunted.contains(&"Kerberos pre-auth failure of an admin".to_owned()));
    assert_eq!(
        hunted
            .iter()
            .filter(|t| *t == "Burst of Security events")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        hunted.iter().filter(|t| *t == "Quiet host").count(),
        1,
        "{text}"
    );
}
