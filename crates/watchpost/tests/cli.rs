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

/// `watchpost ARGS` with no `WATCHPOST_*` variable set: the configurations as written.
fn watchpost_as_written(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_watchpost"));
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WATCHPOST_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("WATCHPOST_LOG", "warn")
        .output()
        .expect("run watchpost")
}

fn shipped(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/").to_owned() + name
}

/// As the README promises: every example configuration passes `check-config` as it is
/// written, on a machine where the product is not installed and on either platform
/// (the other platform's paths, SEP's missing scanner and a state directory this user may
/// not write are warnings); `test` runs no actions, so a missing program never stops it;
/// `run` refuses a state directory of the other platform.
#[test]
fn shipped_configs_pass_check_config_as_written() {
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = watchpost_as_written(&["check-config", "-c", path.to_str().unwrap()]);
            let t = text(&out);
            assert!(out.status.success(), "{}:\n{t}", path.display());
            assert!(t.contains("configuration is valid"), "{t}");
            assert!(!t.contains(": error:"), "{t}");
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "default.toml",
            "linux.toml",
            "sep-client.toml",
            "sep-manager.toml",
            "windows-security.toml",
            "windows-sep.toml"
        ]
    );
    let out = watchpost_as_written(&["check-config", "-c", &shipped("sep-client.toml")]);
    let t = text(&out);
    if cfg!(windows) {
        assert!(
            t.contains("`/opt/Symantec/symantec_antivirus/sav` is a Unix path"),
            "{t}"
        );
    } else {
        assert!(
            t.contains("warning: `/opt/Symantec/symantec_antivirus/sav` does not exist: the action fails on this system until it is installed"),
            "{t}"
        );
    }
    // The README's replay example, as written.
    let input = fixture("sep/client-av/05292019.Log");
    let out = watchpost_as_written(&[
        "test",
        "-c",
        &shipped("sep-client.toml"),
        input.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("18 records, 0 unparsable"), "{t}");
    assert!(!t.contains("sav"), "test looks at no action program:\n{t}");
    if !cfg!(windows) {
        let out = watchpost_as_written(&["run", "-c", &shipped("windows-sep.toml")]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains(r"error: state_dir C:\ProgramData\watchpost\state is a Windows path"),
            "{t}"
        );
    }
}

/// A missing `}` is one error at its place, not a cascade of invented ones; a misspelt
/// key is one error with a suggestion, and the tables that could not be read cause no
/// follow-on errors (no "no [[source]]", no "unknown action").
#[test]
fn a_mistake_is_reported_once_without_follow_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(shipped("sep-client.toml")).unwrap();
    let state = format!("state_dir = '{}'", dir.path().display());
    let base = base.replace(
        r#"state_dir = "${WATCHPOST_STATE_DIR:-/var/lib/watchpost}""#,
        &state,
    );
    let check = |name: &str, body: String| -> String {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, body).unwrap();
        let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()], &[]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        t
    };
    let brace = base.replacen(
        "match = { source = \"sep-av\", event_code = 5 }",
        "match = { source = \"sep-av\", event_code = 5",
        1,
    );
    assert_ne!(brace, base);
    let t = check("brace.toml", brace);
    assert_eq!(t.matches(": error:").count(), 1, "{t}");
    assert!(!t.contains("duplicate key"), "{t}");
    assert!(t.contains("brace.toml: 1 error(s), 0 warning(s)"), "{t}");

    let t = check(
        "strat.toml",
        base.replace("start_at = \"end\"", "strat_at = \"end\""),
    );
    assert!(
        t.contains("error: unknown field `strat_at`; did you mean `start_at`?"),
        "{t}"
    );
    assert!(!t.contains("no [[source]]"), "{t}");
    assert!(!t.contains("1:1:"), "{t}");
    assert!(!t.contains("tests field"), "{t}");
    assert!(t.contains("1 error(s)"), "{t}");

    let t = check(
        "formt.toml",
        base.replacen("format = \"rfc5424\"", "formt = \"rfc5424\"", 1),
    );
    assert!(
        t.contains("error: unknown field `formt`; did you mean `format`?"),
        "{t}"
    );
    assert!(!t.contains("unknown action"), "{t}");
    assert!(t.contains("1 error(s)"), "{t}");

    // A configuration without any source at all: a warning about the whole file, not
    // about its first line.
    let cfg = dir.path().join("empty.toml");
    std::fs::write(&cfg, format!("# nothing yet\n[agent]\n{state}\n")).unwrap();
    let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()], &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "{}: warning: no [[source]] is configured",
            cfg.display()
        )),
        "{t}"
    );
}

/// A field in `match` that nothing can produce is an error with a "did you mean"; a
/// field of a free-form source (JSON lines) or a regex capture is fine.
#[test]
fn a_match_field_nothing_produces_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let cfg = dir.path().join(name);
        let content = format!(
            "[agent]\nstate_dir = '{d}'\n\n[[source]]\nname = \"av\"\ntype = \"sep_av_log\"\npath = '{d}/*.Log'\n\n{body}",
            d = dir.path().display()
        );
        std::fs::write(&cfg, content).unwrap();
        let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()], &[]);
        (out.status.code(), text(&out))
    };
    let (code, t) = write(
        "typo.toml",
        "[[filter]]\nname = \"f\"\nmatch = { evnt_code = 5 }\n",
    );
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains(":11:11: error: filter `f` tests field `evnt_code`, which no configured source or regex capture produces; did you mean `event_code`?"),
        "{t}"
    );
    let (code, t) = write(
        "capture.toml",
        "[[filter]]\nname = \"f\"\nmatch = { risk_name = { regex = '^(?P<family>\\w+)\\.' } }\n\n\
         [[filter]]\nname = \"g\"\nmatch = { family = \"W32\" }\n",
    );
    assert_eq!(code, Some(0), "{t}");
    let (code, t) = write(
        "jsonl.toml",
        "[[source]]\nname = \"j\"\ntype = \"jsonl\"\npath = '/tmp/*.jsonl'\n\n\
         [[filter]]\nname = \"f\"\nmatch = { anything_at_all = 1 }\n",
    );
    assert_eq!(code, Some(0), "{t}");
}

/// A bad regular expression keeps the regex crate's layout: the expression on a line of
/// its own with a caret under the spot, then what is wrong.
#[test]
fn a_bad_regular_expression_shows_where() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("re.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nstate_dir = '{d}'\n\n[[source]]\nname = \"auth\"\ntype = \"text\"\npath = '{d}/auth.log'\n\n\
             [[filter]]\nname = \"f\"\nmatch = {{ message = {{ regex = '^Accepted (?P<user\\S+)' }} }}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = watchpost(&["check-config", "-c", cfg.to_str().unwrap()], &[]);
    let t = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{t}");
    let expected = format!(
        "{}:11:31: error: bad regular expression: regex parse error:\n\
         \x20       ^Accepted (?P<user\\S+)\n\
         \x20                         ^\n\
         \x20   error: invalid capture group character\n\
         \x20   match = {{ message = {{ regex = '^Accepted (?P<user\\S+)' }} }}\n\
         \x20                                 ^^^^^^^^^^^^^^^^^^^^^^^^\n",
        cfg.display()
    );
    assert!(t.starts_with(&expected), "expected:\n{expected}\ngot:\n{t}");
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

/// `test` does not claim a format it cannot recognise: random bytes are "cannot tell the
/// format" with their first bytes shown, and exit non-zero; an input none of whose
/// records parse exits non-zero; an empty file is a log with no records; a folder is
/// read recursively.
#[test]
fn test_refuses_what_it_cannot_read_and_reads_folders() {
    let dir = tempfile::tempdir().unwrap();
    // 200 KB of deterministic noise (xorshift), as `head -c 200000 /dev/urandom` would be.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let random = dir.path().join("random.bin");
    std::fs::write(&random, &noise).unwrap();
    let out = watchpost(&["test", random.to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("random.bin: cannot tell the format"), "{t}");
    let shown: String = noise[..4]
        .iter()
        .map(|b| match b {
            0x20..=0x7e if *b != b'"' && *b != b'\\' => char::from(*b).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect();
    assert!(t.contains(&format!("it starts with \"{shown}")), "{t}");
    assert!(t.contains("0 records"), "{t}");
    assert!(t.contains("1 file(s) not read"), "{t}");

    // Named as a format it is not: every record fails, so the exit status says so.
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "not json\nnor this\n").unwrap();
    let out = watchpost(&["test", junk.to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("junk.jsonl: none of its 2 records could be parsed"),
        "{t}"
    );

    let empty = dir.path().join("05292019.Log");
    std::fs::write(&empty, "").unwrap();
    let out = watchpost(&["test", empty.to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("1 file(s), 0 records"), "{t}");

    // A folder: every file below it, in name order, each by its own format.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("ips")).unwrap();
    std::fs::copy(
        fixture("sep/client-av/05292019.Log"),
        logs.join("05292019.Log"),
    )
    .unwrap();
    std::fs::copy(
        fixture("sep/client-binary/seclog3.log"),
        logs.join("ips/seclog.log"),
    )
    .unwrap();
    let every = dir.path().join("every.toml");
    std::fs::write(
        &every,
        "[[filter]]\nname = \"every\"\nmatch = { host = { exists = true } }\n",
    )
    .unwrap();
    let args = [
        "test",
        "-c",
        every.to_str().unwrap(),
        "--format",
        "jsonl",
        logs.to_str().unwrap(),
    ];
    let out = watchpost(&args, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("2 file(s), "), "{t}");
    let files: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["origin"]["file"]
                .as_str()
                .unwrap()
                .replace('\\', "/")
        })
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("logs/05292019.Log")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("logs/ips/seclog.log")),
        "{files:?}"
    );
}

/// `test --help` names every key its JSON lines carry: those of a fired filter, of an
/// anomaly filter's judgement and of a Sigma detection, each checked on real output.
#[test]
fn test_help_lists_every_jsonl_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = |p: &Path| p.display().to_string().replace('\\', "/");
    let cfg = dir.path().join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{state}'

[[source]]
name = "collected"
type = "evtx"
path = '{state}/*.evtx'

[[filter]]
name = "who-cleared"
match = {{ event_id = "1102" }}
anomaly = {{ key = [], value = ["SubjectUserName"], learning = "0s" }}

[[filter]]
name = "log-cleared"
match = {{ event_id = "1102" }}

[[rules]]
name = "sigma"
sigma = '{rule}'
"#,
            state = p(dir.path()),
            rule = p(&fixture(
                "sigma/rules/windows/builtin/security/win_security_audit_log_cleared.yml"
            )),
        ),
    )
    .unwrap();
    let input = fixture("evtx/attack-samples/defense-evasion/DE_1102_security_log_cleared.evtx");
    let lines = test_jsonl(&cfg, &input);
    let help = watchpost(&["test", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut kinds = std::collections::BTreeSet::new();
    for line in &lines {
        let obj = line.as_object().unwrap();
        kinds.insert(if obj.contains_key("anomaly_filter") {
            "judgement"
        } else if obj.contains_key("rule") {
            "detection"
        } else {
            "filter"
        });
        let mut keys: Vec<&String> = obj.keys().collect();
        if let Some(origin) = obj.get("origin").and_then(|o| o.as_object()) {
            keys.extend(origin.keys());
        }
        for k in keys {
            assert!(
                help.contains(&format!("`{k}`")),
                "`test --help` does not name `{k}` (in {line}):\n{help}"
            );
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["detection", "filter", "judgement"],
        "{lines:?}"
    );
}

/// The README's "Using it" examples that run from the repository run as written (with
/// `watchpost` being this build), on the example configurations and the sample files.
#[test]
fn readme_examples_run_as_written() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let intro = "Run from the repository, these use its example configurations and sample files:";
    let at = readme.find(intro).expect("the README's runnable examples");
    let block = &readme[at..];
    let start = block.find("```sh\n").unwrap() + "```sh\n".len();
    let end = start + block[start..].find("```").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for line in block[start..end].lines() {
        let command = line.split(" #").next().unwrap().trim();
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("watchpost"), "{line}");
        let args: Vec<&str> = words.collect();
        let out = Command::new(env!("CARGO_BIN_EXE_watchpost"))
            .args(&args)
            .current_dir(root)
            .env("WATCHPOST_STATE_DIR", state.path())
            .env("WATCHPOST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "`{command}`:\n{}", text(&out));
        assert!(!text(&out).trim().is_empty(), "`{command}` printed nothing");
        ran += 1;
    }
    assert!(ran >= 5, "{ran} examples");
}
