//! The CLI: check-config on every shipped configuration and on broken ones, and `test`
//! replaying fixtures.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn watchpost(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_watchpost"));
    cmd.args(args).env("WATCHPOST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run watchpost")
}

/// `watchpost test -c CONFIG --format jsonl INPUT`, parsed; panics with the output on failure.
fn test_jsonl(config: &Path, input: &Path) -> Vec<serde_json::Value> {
    let args = [
        "test",
        "-c",
        config.to_str().unwrap(),
        "--format",
        "jsonl",
        input.to_str().unwrap(),
    ];
    let out = watchpost(&args, &[]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_shipped_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
    // Any existing program given by absolute path will do: check-config only resolves it.
    #[cfg(unix)]
    let scanner = std::path::PathBuf::from("/bin/true");
    #[cfg(not(unix))]
    let scanner = std::env::current_exe().unwrap();
    let env = [
        ("WATCHPOST_STATE_DIR", dir.path()),
        ("WATCHPOST_SEP_LOGS", dir.path()),
        ("WATCHPOST_SEPM_LOG", &dir.path().join("sepm.log")),
        ("WATCHPOST_SCANNER", &scanner),
        ("WATCHPOST_DOSCAN", &scanner),
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = watchpost(&["check-config", "-c", path.to_str().unwrap()], &env);
            assert!(out.status.success(), "{}:\n{}", path.display(), text(&out));
            checked += 1;
        }
    }
    assert!(checked >= 3, "checked {checked} configs");
    let out = watchpost(&["check-config"], &env);
    assert!(out.status.success(), "built-in config:\n{}", text(&out));
}

#[test]
fn check_config_reports_every_problem_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'

[[source]]
name = "av"
type = "sep_av_logg"
path = '{state}/*.Log'

[[source]]
name = "ips"
type = "sep_security_log"
path = '{state}/seclog.log'
colour = "blue"

[[filter]]
name = "f1"
match = {{ risk_name = {{ regex = "(unclosed" }} }}
actions = ["siem", "nope"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://127.0.0.1:514"
message = "{{{{ risk_nam }}}} {{{{ unclosed"
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let name = cfg.display().to_string();
    for expected in [
        format!("{name}:6:8: error: unknown source type `sep_av_logg`"),
        format!("{name}:13:1: error: unknown field `colour`"),
        format!("{name}:17:33: error: bad regular expression"),
        format!("{name}:18:20: error: unknown action `nope`"),
    ] {
        assert!(t.contains(&expected), "missing `{expected}` in:\n{t}");
    }
    assert!(
        t.contains(":24:"),
        "the template error is reported on line 24:\n{t}"
    );
}

#[test]
fn test_replays_fixtures_and_prints_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[[source]]
name = "sep-av"
type = "sep_av_log"
path = "/nonexistent/*.Log"

[[filter]]
name = "virus-found"
match = { source = "sep-av", event_code = 5 }
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://127.0.0.1:514"
"#,
    )
    .unwrap();
    let input = fixture("sep/client-av/05292019.Log");
    let lines = test_jsonl(&cfg, &input);
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["filter"], "virus-found");
        assert_eq!(l["actions"], serde_json::json!(["siem"]));
        assert_eq!(l["event"]["event_code"], 5);
        assert_eq!(l["event"]["source"], "sep-av");
    }
    let expected = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .filter(|l| l.split(',').nth(1) == Some("5"))
        .count();
    assert_eq!(lines.len(), expected);

    // Format detection: a SEPM export file and a seclog, no matching source configured.
    for rel in [
        "sep/syslog/elastic/test-agent-security.log",
        "sep/client-binary/seclog3.log",
    ] {
        let out = watchpost(
            &[
                "test",
                "-c",
                cfg.to_str().unwrap(),
                fixture(rel).to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{rel}: {}", text(&out));
        assert!(
            text(&out).contains(" 0 unparsable"),
            "{rel}: {}",
            text(&out)
        );
    }
}

#[test]
fn test_recognises_evtx_and_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[[filter]]
name = "rdp-logon"
match = { source = "evtx", event_id = 4624, LogonType = "10" }

[[filter]]
name = "any-logon"
match = { source = "evtx", event_id = 4624 }

[[filter]]
name = "json-login"
match = { source = "jsonl", user = "root" }
"#,
    )
    .unwrap();
    let evtx = fixture("evtx/attack-samples/command-and-control/DE_RDP_Tunneling_4624.evtx");
    let lines = test_jsonl(&cfg, &evtx);
    // MANIFEST.tsv: 18 records, all Security 4624.
    assert_eq!(
        lines.iter().filter(|l| l["filter"] == "any-logon").count(),
        18
    );
    for l in &lines {
        assert_eq!(l["event"]["channel"], "Security");
        assert!(
            l["event"]["TargetUserName"].is_string()
                && l["event"]["str6"] == l["event"]["TargetUserName"]
        );
    }
    let jsonl = dir.path().join("events.jsonl");
    std::fs::write(
        &jsonl,
        "{\"user\":\"root\",\"host\":\"web1\"}\n{\"user\":\"ann\"}\nnot json\n",
    )
    .unwrap();
    let out = watchpost(
        &["test", "-c", cfg.to_str().unwrap(), jsonl.to_str().unwrap()],
        &[],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("== filter `json-login` fired") && t.contains("host: web1"),
        "{t}"
    );
    assert!(
        t.contains("3 records, 1 unparsable"),
        "the bad line is reported and counted: {t}"
    );
    assert!(
        t.contains("events.jsonl: offset 45: unparsable jsonl record: invalid JSON"),
        "the bad line's place is given: {t}"
    );
}

#[test]
fn linux_example_finds_ssh_logins_and_sudo_in_an_auth_log() {
    let cfg = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/linux.toml"
    ));
    let input = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/auth.log"));
    let lines = test_jsonl(cfg, input);
    let fired: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            let e = &l["event"];
            (
                l["filter"].as_str().unwrap(),
                e["user"].as_str().unwrap_or(""),
                e["ip"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        fired,
        [
            ("ssh-login", "ann", "10.0.0.7"),
            ("ssh-failed", "admin", "203.0.113.9"),
            ("ssh-login", "root", "198.51.100.4"),
            ("ssh-root-login", "root", "198.51.100.4"),
            ("sudo", "ann", ""),
        ]
    );
    let sudo = &lines[4]["event"];
    assert_eq!(sudo["command"], "/usr/bin/apt-get update");
    assert_eq!(sudo["run_as"], "root");
    assert_eq!(sudo["host"], "web1");
    assert_eq!(sudo["program"], "sudo");
}

#[cfg(target_os = "linux")]
#[test]
fn service_install_writes_a_valid_systemd_unit_and_uninstall_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let cfg = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/linux.toml"
    ));
    let env = [("WATCHPOST_STATE_DIR", dir.path())];
    let args = |verb: &str| {
        vec![
            "service".to_owned(),
            verb.to_owned(),
            "-c".into(),
            cfg.to_str().unwrap().into(),
            "--unit-dir".into(),
            units.to_str().unwrap().into(),
            "--no-systemctl".into(),
        ]
    };
    let run = |a: Vec<String>| watchpost(&a.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    let out = run(args("install"));
    assert!(out.status.success(), "{}", text(&out));
    let unit = std::fs::read_to_string(units.join("watchpost.service")).unwrap();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_watchpost")).unwrap();
    let config = std::fs::canonicalize(cfg).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={} run -c {}\n",
            exe.display(),
            config.display()
        )),
        "{unit}"
    );
    // systemd's own check of the unit, where systemd is installed.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let v = Command::new("systemd-analyze")
            .arg("verify")
            .arg(units.join("watchpost.service"))
            .output()
            .unwrap();
        assert!(v.status.success(), "systemd-analyze verify: {}", text(&v));
    }
    let out = run(args("uninstall"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!units.join("watchpost.service").exists());
    // --dry-run prints the unit and the systemctl commands, and writes nothing.
    let out = watchpost(
        &[
            "service",
            "install",
            "--dry-run",
            "--unit-dir",
            units.to_str().unwrap(),
        ],
        &env,
    );
    let t = text(&out);
    assert!(
        out.status.success()
            && t.contains("[Service]")
            && t.contains("systemctl enable watchpost.service"),
        "{t}"
    );
    assert!(!units.join("watchpost.service").exists());
    // A configuration with errors is not installed.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[filter]]\nname = 1\n").unwrap();
    let out = watchpost(
        &[
            "service",
            "install",
            "-c",
            bad.to_str().unwrap(),
            "--unit-dir",
            units.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!units.join("watchpost.service").exists());
}

#[cfg(not(windows))]
#[test]
fn check_config_says_the_registry_action_is_windows_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'

[[action]]
name = "quarantine"
type = "registry"
key = 'HKLM\SOFTWARE\Watchpost\Quarantine'
value = "Infected"
data = "{{{{ host }}}}"
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()], &[]);
    let t = text(&out);
    // A warning, not an error: one configuration file serves both platforms.
    assert_eq!(out.status.code(), Some(0), "{t}");
    let expected = format!(
        "{}:6:8: warning: the registry action runs on Windows only; on this system it is skipped",
        cfg.display()
    );
    assert!(t.contains(&expected), "missing `{expected}` in:\n{t}");
    // The configuration itself is read: no error.
    assert_eq!(t.matches("error:").count(), 0, "{t}");
}

/// A windows_event_log source: checked everywhere; elsewhere than on Windows a warning
/// (exit 0), and its keys' mistakes are errors with their places.
#[test]
fn windows_event_log_sources_are_checked_and_windows_only_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            r#"[agent]
state_dir = '{state}'

[[source]]
name = "winlog"
type = "windows_event_log"
channels = ["Security", {{ name = "System", query = "*[System[(EventID=7045)]]" }}]
batch_size = 50
render_message = false
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let out = watchpost(&["check-config", "-c", good.to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    if cfg!(windows) {
        assert!(!t.contains("warning:"), "{t}");
    } else {
        let expected = format!(
            "{}:6:8: warning: source `winlog`: type = \"windows_event_log\" reads the live Windows Event Log and runs on Windows only; `run` skips it here",
            good.display()
        );
        assert!(t.contains(&expected), "missing `{expected}` in:\n{t}");
    }

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            r#"[agent]
state_dir = '{state}'

[[source]]
name = "winlog"
type = "windows_event_log"
channels = ["Security", "security"]
batch_size = 5000
path = "C:/x/*.evtx"

[[source]]
name = "nochannels"
type = "windows_event_log"

[[source]]
name = "json"
type = "jsonl"
path = "/x/*.jsonl"
channels = ["System"]
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let out = watchpost(&["check-config", "-c", bad.to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let b = bad.display();
    for expected in [
        format!("{b}:7:12: error: channel `security` is listed twice"),
        format!("{b}:8:14: error: batch_size = 5000: use 1 … 1024"),
        format!(
            "{b}:9:8: error: a windows_event_log source reads Event Log channels: it takes `channels`, not `path`"
        ),
        format!("{b}:13:8: error: a windows_event_log source needs `channels`"),
        format!(
            "{b}:19:12: error: `channels`, `query`, `render_message` and `batch_size` apply to type = \"windows_event_log\" sources only"
        ),
    ] {
        assert!(t.contains(&expected), "missing `{expected}` in:\n{t}");
    }
    assert_eq!(t.matches("error:").count(), 5, "{t}");
}

/// `watchpost test --source` replays event XML (one event per line, as EvtRender prints
/// it) through the example Windows configuration.
#[test]
fn windows_example_fires_on_event_xml_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sources/tests/data/winevt"
    ));
    let mut xml = String::new();
    for f in ["security-4624.xml", "security-4688.xml", "system-7045.xml"] {
        xml.push_str(&std::fs::read_to_string(data.join(f)).unwrap());
    }
    let input = dir.path().join("events.xml");
    std::fs::write(&input, xml).unwrap();
    let cfg = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/windows-security.toml"
    ));
    // Recognised by its `<Event` start, read as the configured windows_event_log source.
    let lines = test_jsonl(cfg, &input);
    let fired: Vec<(String, String)> = lines
        .iter()
        .map(|v| {
            (
                v["filter"].as_str().unwrap().to_owned(),
                v["event"]["record_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let fired2: Vec<(&str, &str)> = fired
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        fired2,
        [
            ("rdp-logon", "184467"),
            ("encoded-powershell", "184470"),
            ("service-installed", "9921")
        ]
    );
    assert_eq!(lines[0]["event"]["source"], "winlog");
    let args = [
        "test",
        "-c",
        cfg.to_str().unwrap(),
        "--source",
        "winlog",
        "--format",
        "jsonl",
        input.to_str().unwrap(),
    ];
    let out = watchpost(&args, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let fired: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["filter"].as_str().unwrap().to_owned(),
                v["event"]["record_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let fired: Vec<(&str, &str)> = fired
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        fired,
        [
            ("rdp-logon", "184467"),
            ("encoded-powershell", "184470"),
            ("service-installed", "9921")
        ]
    );
}

#[test]
fn check_config_reports_dialog_and_open_url_mistakes_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("user.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'

[[action]]
name = "tell-user"
type = "dialog"
text = "{{{{ risk_name }}}}"
icon = "question"

[[action]]
name = "threat-page"
type = "open_url"
url = "file:///C:/{{{{ risk_name | url }}}}"
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for expected in [
        format!("{}:8:8: error: unknown variant `question`", cfg.display()),
        format!(
            "{}:13:7: error: scheme `file` is not in `allowed_schemes` (https, http)",
            cfg.display()
        ),
    ] {
        assert!(t.contains(&expected), "missing `{expected}` in:\n{t}");
    }
}
