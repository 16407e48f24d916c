//! End to end: SEP client log lines appended to tailed files reach a real rsyslog as
//! syslog messages with the variables filled in.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // needs /usr/sbin/rsyslogd (a Linux daemon) and stops watchpost with `kill -TERM`

mod common;

use std::time::Duration;

use common::*;

#[test]
fn sep_detections_reach_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path());
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = dir.path().join("watchpost.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"

[[source]]
name = "sep-av"
type = "sep_av_log"
path = "{logs}/*.Log"

[[source]]
name = "sep-ips"
type = "sep_security_log"
path = "{logs}/seclog.log"

[[filter]]
name = "virus-found"
match = {{ source = "sep-av", event_code = 5, logger_name = {{ in = ["Real_Time", "Bash"] }} }}
actions = ["siem"]

[[filter]]
name = "sonar"
match = {{ source = "sep-av", event_code = 72 }}
actions = ["siem"]

[[filter]]
name = "system-infected"
match = {{ source = "sep-ips", signature_name = {{ prefix = "System Infected:" }} }}
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://127.0.0.1:{port}"
format = "rfc5424"
message = "{{{{ filter }}}}|{{{{ risk_name }}}}{{{{ signature_name }}}}|{{{{ file_path }}}}{{{{ remote_ip }}}}"
"#,
            state = dir.path().join("state").display(),
            logs = logs.display(),
            port = rsyslog.port
        ),
    )
    .unwrap();
    let wp = Watchpost::start(&config, &dir.path().join("watchpost.log"));

    // A new daily file appears after the start (picked up by the glob, read from its start).
    let day = logs.join("11222026.Log");
    let ap = av_virus_found("e2e-pc", "EICAR Test String", r"C:\Users\ann\eicar.com");
    let noise = av_fixture_lines()
        .into_iter()
        .find(|l| l.split(',').nth(1) == Some("46"))
        .unwrap();
    append(&day, format!("{noise}\r\n{ap}\r\n").as_bytes());
    let mut sonar: Vec<String> =
        av_virus_found("e2e-pc", "SONAR.Heuristic.159", r"C:\Temp\dropper.exe")
            .split(',')
            .map(str::to_owned)
            .collect();
    sonar[1] = "72".into();
    sonar[3] = "16".into();
    append(&day, format!("{}\r\n", sonar.join(",")).as_bytes());
    append(
        &logs.join("seclog.log"),
        &seclog_with_signature("System Infected: Tidserv Activity"),
    );

    let text = wait_for("three messages at rsyslog", Duration::from_secs(20), || {
        let t = rsyslog.text();
        (t.lines().filter(|l| !l.contains("ready")).count() >= 3).then_some(t)
    });
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("ready")).collect();
    assert!(
        lines.contains(&r"e2e-pc|watchpost|virus-found|EICAR Test String|C:\Users\ann\eicar.com"),
        "{text}"
    );
    assert!(
        lines.contains(&r"e2e-pc|watchpost|sonar|SONAR.Heuristic.159|C:\Temp\dropper.exe"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(
            "|watchpost|system-infected|System Infected: Tidserv Activity|10.80.116.20"
        )),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "only the three detections fire: {text}");
    assert!(wp.terminate(), "clean exit on SIGTERM");
    let checkpoints = dir.path().join("state/checkpoints");
    assert!(checkpoints.join("sep-av.json").exists() && checkpoints.join("sep-ips.json").exists());
}
