//! End to end: the SEP Manager's syslog export arrives over the network (sent by the real
//! `logger` of util-linux, over UDP and TCP with octet counting) and fires a filter whose
//! action writes a flag file.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // sends with util-linux `logger` and stops watchpost with `kill -TERM`

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::*;

fn send(args: &[&str], message: &str) {
    let logger = std::path::Path::new("/usr/bin/logger");
    assert!(
        logger.exists(),
        "`logger` (util-linux, Debian package bsdutils) is needed: apt-get install bsdutils"
    );
    let status = Command::new(logger)
        .args(args)
        .arg(message)
        .status()
        .expect("run logger");
    assert!(status.success(), "logger {args:?} failed");
}

#[test]
fn sepm_export_over_udp_and_tcp_fires_filters() {
    let dir = tempfile::tempdir().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let flags = dir.path().join("flags");
    let config = dir.path().join("wp.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"

[[source]]
name = "sepm-udp"
type = "sep_manager_syslog"
listen = "udp://127.0.0.1:{udp}"

[[source]]
name = "sepm-tcp"
type = "sep_manager_syslog"
listen = "tcp://127.0.0.1:{tcp}"

[[filter]]
name = "risk"
match = {{ family = "risk", risk_name = {{ exists = true }} }}
actions = ["flag"]

[[action]]
name = "flag"
type = "flag_file"
path = "{flags}/{{{{ source }}}}-{{{{ host }}}}"
content = "{{{{ risk_name }}}} on {{{{ host }}}} via {{{{ source }}}}"
"#,
            state = dir.path().join("state").display(),
            flags = flags.display(),
        ),
    )
    .unwrap();
    let wp = Watchpost::start(&config, &dir.path().join("wp.log"));
    let line = std::fs::read_to_string(fixture("sep/syslog/elastic/test-agent-risk.log")).unwrap();
    let line = line.trim_end();
    let p_udp = udp.to_string();
    let p_tcp = tcp.to_string();
    send(
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &p_udp,
            "--udp",
            "--rfc3164",
            "-t",
            "SymantecServer",
        ],
        line,
    );
    send(
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &p_tcp,
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "-t",
            "SymantecServer",
        ],
        line,
    );
    for source in ["sepm-udp", "sepm-tcp"] {
        let path = flags.join(format!("{source}-exampleComputer"));
        let text = wait_for(
            &format!("{}", path.display()),
            Duration::from_secs(20),
            || std::fs::read_to_string(&path).ok(),
        );
        assert_eq!(
            text,
            format!("WS.Reputation.1 on exampleComputer via {source}")
        );
    }
    assert!(wp.terminate());
}
