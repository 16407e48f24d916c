//! `[[rules]]`: Sigma rule sets in the live daemon and in `watchpost test`.

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
