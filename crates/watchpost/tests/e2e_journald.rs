//! End to end: `watchpost run` follows a journal (files made by Debian's
//! `systemd-journal-remote`, read through journalctl) and fires on an sshd login.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn journal_remote() -> PathBuf {
    ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("systemd-journal-remote is needed to make journal files: apt-get install -y systemd-journal-remote")
}

/// Journal export format for one entry.
fn entry(n: u64, ident: &str, msg: &str) -> String {
    format!(
        "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=4a1c5a2b3c4d4e5f8a9b0c1d2e3f4a5b\n\
         MESSAGE={msg}\nSYSLOG_IDENTIFIER={ident}\n_PID={}\n_HOSTNAME=web1\nPRIORITY=6\n\n",
        1_763_800_000_000_000 + n * 1_000_000,
        1_000_000 + n,
        4000 + n
    )
}

fn write_journal(dir: &Path, name: &str, entries: &str) {
    let mut child = Command::new(journal_remote())
        .arg(format!(
            "--output={}",
            dir.join(format!("{name}.journal")).display()
        ))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run systemd-journal-remote");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(entries.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn journald_source_fires_on_ssh_login() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    write_journal(
        &journal,
        "a",
        &[
            entry(1, "cron", "session opened for user root"),
            entry(
                2,
                "sshd",
                "Accepted publickey for ann from 10.0.0.7 port 50522 ssh2",
            ),
        ]
        .concat(),
    );
    let flags = dir.path().join("flags");
    let config = dir.path().join("wp.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"

[[source]]
name = "journal"
type = "journald"
directory = "{journal}"
start_at = "beginning"

[[filter]]
name = "ssh-login"
match = {{ program = "sshd", message = {{ regex = '^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<ip>\S+)' }} }}
actions = ["flag"]

[[action]]
name = "flag"
type = "flag_file"
path = "{flags}/{{{{ user }}}}"
content = "{{{{ user }}}} from {{{{ ip }}}} on {{{{ host }}}} pid {{{{ pid }}}}"
"#,
            state = dir.path().join("state").display(),
            journal = journal.display(),
            flags = flags.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("wp.log");
    let wp = Watchpost::start(&config, &log);
    let ann = flags.join("ann");
    let text = wait_for("the flag for ann", Duration::from_secs(20), || {
        std::fs::read_to_string(&ann).ok()
    });
    assert_eq!(text, "ann from 10.0.0.7 on web1 pid 4002");
    assert!(wp.terminate());
    // Restart from the persisted cursor: only the new entry arrives.
    std::fs::remove_file(&ann).unwrap();
    write_journal(
        &journal,
        "b",
        &entry(
            3,
            "sshd",
            "Accepted password for bob from 10.0.0.8 port 1 ssh2",
        ),
    );
    let wp = Watchpost::start(&config, &log);
    let bob = flags.join("bob");
    wait_for("the flag for bob", Duration::from_secs(20), || {
        std::fs::read_to_string(&bob).ok()
    });
    assert!(wp.terminate());
    assert!(
        !ann.exists(),
        "ann's login was not delivered again after the restart"
    );
}
