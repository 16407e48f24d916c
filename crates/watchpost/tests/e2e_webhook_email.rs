//! End to end: a SEP line appended to a tailed file fires a filter whose `webhook` and
//! `email` actions reach a real HTTP receiver and a real SMTP server (the Python helpers
//! of `crates/actions/tests/helpers/`, their own processes on 127.0.0.1). The bearer
//! token and the SMTP password come from the daemon's environment.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // stops watchpost with `kill -TERM`; the helpers run with /usr/bin/python3

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A helper script from the actions crate's tests, killed on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_peer(script: &str, dir: &Path, args: &[&str]) -> Peer {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../actions/tests/helpers")
        .join(script);
    let port_file = dir.join(format!("{script}.port"));
    let child = Command::new("/usr/bin/python3")
        .arg(helper)
        .arg("--port-file")
        .arg(&port_file)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start a helper with /usr/bin/python3");
    let mut peer = Peer { child, port: 0 };
    peer.port = wait_for(script, Duration::from_secs(20), || {
        std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    peer
}

fn records(log: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_detection_is_posted_and_mailed() {
    let dir = tempfile::tempdir().unwrap();
    let (http_log, smtp_log) = (dir.path().join("http.log"), dir.path().join("smtp.log"));
    let http = start_peer(
        "http_receiver.py",
        dir.path(),
        &["--log", http_log.to_str().unwrap()],
    );
    let smtp = start_peer(
        "smtp_receiver.py",
        dir.path(),
        &[
            "--log",
            smtp_log.to_str().unwrap(),
            "--mode",
            "none",
            "--user",
            "alert",
            "--password",
            "mail pw",
        ],
    );
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

[[filter]]
name = "virus-found"
match = {{ source = "sep-av", event_code = 5 }}
actions = ["hook", "mail"]

[[action]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{http}/alerts/{{{{ filter | url }}}}"
bearer_token_env = "HOOK_TOKEN"
headers = {{ X-Risk = "{{{{ risk_name }}}}" }}
timeout = "5s"

[[action]]
name = "mail"
type = "email"
server = "127.0.0.1:{smtp}"
tls = "none"
username = "alert"
password_env = "SMTP_PASSWORD"
allow_plaintext_auth = true
from = "watchpost@example.org"
to = ["soc@example.org"]
subject = "{{{{ risk_name }}}} on {{{{ host }}}}"
"#,
            state = dir.path().join("state").display(),
            logs = logs.display(),
            http = http.port,
            smtp = smtp.port,
        ),
    )
    .unwrap();
    let env = [("HOOK_TOKEN", "hook-t0ken"), ("SMTP_PASSWORD", "mail pw")];
    let check = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(["check-config", "-c"])
        .arg(&config)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let wp = Watchpost::start_env(&config, &dir.path().join("watchpost.log"), &env);
    let line = av_virus_found("e2e-pc", "EICAR Test String", r"C:\Users\ann\eicar.com");
    append(&logs.join("11222026.Log"), format!("{line}\r\n").as_bytes());

    let posted = wait_for("the webhook POST", Duration::from_secs(20), || {
        records(&http_log).pop()
    });
    assert_eq!(posted["method"], "POST");
    assert_eq!(posted["path"], "/alerts/virus-found");
    assert_eq!(posted["headers"]["authorization"], "Bearer hook-t0ken");
    assert_eq!(posted["headers"]["x-risk"], "EICAR Test String");
    let body: serde_json::Value = serde_json::from_str(posted["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["filter"], "virus-found");
    assert_eq!(body["risk_name"], "EICAR Test String");
    assert_eq!(body["file_path"], r"C:\Users\ann\eicar.com");

    let mail = wait_for("the email", Duration::from_secs(20), || {
        records(&smtp_log).pop()
    });
    assert_eq!(mail["auth_user"], "alert");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["soc@example.org"]));
    assert_eq!(mail["subject"], "EICAR Test String on e2e-pc");
    let text = mail["body"].as_str().unwrap();
    assert!(text.contains("Filter:  virus-found\n"), "{text}");
    assert!(
        text.contains(r"file_path: C:\Users\ann\eicar.com"),
        "{text}"
    );

    assert!(wp.terminate(), "clean exit on SIGTERM");
    assert_eq!(records(&http_log).len(), 1);
    assert_eq!(records(&smtp_log).len(), 1);
}
