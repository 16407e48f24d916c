//! The agent's console releases the agent's own quarantine: the daemon runs a `quarantine`
//! action without the firewall (a hook records apply and release; no root needed),
//! `watchpost quarantine apply` puts the host in quarantine, the console's host page shows
//! it with a release button for an analyst (not for a viewer, whose hand-made release is
//! refused), and the analyst's release goes through the agent's quarantine API: the state
//! file records who released it and why, the hook ran its release, the audit log has it.

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Watchpost, wait_for};

fn watchpost(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchpost"))
        .args(args)
        .env("WATCHPOST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn http(port: u16, method: &str, path: &str, cookie: &str, body: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    Answer {
        status: head[9..12].parse().unwrap(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn login(port: u16, user: &str) -> String {
    let a = http(
        port,
        "POST",
        "/console/login",
        "",
        &format!("user={user}&password=correct+horse+battery&next=%2Fconsole%2F"),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let line = a
        .head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    line["set-cookie:".len()..]
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..at + 64].to_owned()
}

fn state(d: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(d.join("state/quarantine.json")).unwrap())
        .unwrap()
}

#[test]
fn an_analyst_releases_the_agents_quarantine_from_its_console() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::create_dir_all(d.join("logs")).unwrap();
    // A stand-in hook (a test script; watchpost itself never runs a shell).
    let hook = d.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$WATCHPOST_QUARANTINE\" >> '{}'\n",
            d.join("hook.out").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = d.join("watchpost.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
state_dir = '{d}/state'
checkpoint_interval_ms = 100
host = "pc-test"

[[source]]
name = "ips"
type = "jsonl"
path = '{d}/logs/*.jsonl'
start_at = "end"

[[filter]]
name = "infected"
match = {{ signature_name = {{ prefix = "System Infected:" }} }}
actions = ["isolate"]

[[action]]
name = "isolate"
type = "quarantine"
allow = ["10.77.0.2"]
firewall = false
hook = ['{hook}']

[console]
listen = "127.0.0.1:{port}"
"#,
            d = d.display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    for (u, r) in [("ann", "analyst"), ("vic", "viewer")] {
        let (ok, out) = watchpost(
            &["console-user", "-c", cfg_s, "add", u, "--role", r],
            Some("correct horse battery\n"),
        );
        assert!(ok, "{out}");
    }
    let (ok, out) = watchpost(
        &["quarantine", "apply", "-c", cfg_s, "-m", "by <hand>"],
        None,
    );
    assert!(ok, "{out}");
    assert_eq!(state(d)["active"], true);

    let wp = Watchpost::start(&cfg, &d.join("watchpost.log"));
    wait_for("the console", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });

    // The viewer sees the quarantine, gets no button, and a hand-made release is refused.
    let vic = login(port, "vic");
    let a = http(port, "GET", "/console/hosts/local", &vic, "");
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("Quarantined since") && a.body.contains("by &lt;hand&gt;"),
        "{}",
        a.body
    );
    assert!(!a.body.contains("form class=\"release\""));
    let token = csrf(&a.body);
    let a = http(
        port,
        "POST",
        "/console/hosts/local/command",
        &vic,
        &format!("csrf={token}&kind=quarantine_release"),
    );
    assert_eq!(a.status, 403);
    assert_eq!(state(d)["active"], true);

    // The analyst releases it.
    let ann = login(port, "ann");
    let a = http(port, "GET", "/console/hosts/local", &ann, "");
    assert!(a.body.contains("form class=\"release\""), "{}", a.body);
    let token = csrf(&a.body);
    let a = http(
        port,
        "POST",
        "/console/hosts/local/command",
        &ann,
        &format!("csrf={token}&kind=quarantine_release&reason=false+positive"),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let s = state(d);
    assert_eq!(s["active"], false, "{s}");
    assert_eq!(s["released"]["by"], "console (ann)", "{s}");
    assert_eq!(s["released"]["reason"], "false positive", "{s}");
    assert_eq!(
        std::fs::read_to_string(d.join("hook.out")).unwrap(),
        "apply\nrelease\n"
    );
    let a = http(port, "GET", "/console/hosts/local?released=1", &ann, "");
    assert!(
        a.body.contains("The quarantine was released.") && a.body.contains("Not quarantined."),
        "{}",
        a.body
    );
    let a = http(port, "GET", "/console/audit", &ann, "");
    assert!(
        a.body.contains("quarantine.release") && a.body.contains("console.denied"),
        "{}",
        a.body
    );
    assert!(wp.terminate());
}
