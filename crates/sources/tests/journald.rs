//! `journald::Journal` against real journal files made by Debian's `systemd-journal-remote`
//! from journal export format, read back through `journalctl --directory`.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use watchpost_event::{FieldRef, Sym};
use watchpost_sources::journald::{Entry, Journal, JournalOptions, JournalParser};
use watchpost_sources::tail::StartAt;
use watchpost_sources::{ParseCtx, Parser};

const WAIT: Duration = Duration::from_secs(20);
const BOOT: &str = "0123456789abcdef0123456789abcdef";
static SEQ: AtomicU64 = AtomicU64::new(1);

fn journal_remote() -> PathBuf {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect(
        "systemd-journal-remote not found in /lib/systemd or /usr/lib/systemd: \
             these tests need it to make journal files (apt-get install -y systemd-journal-remote)",
    )
}

/// One entry in journal export format. Times grow with every entry made in this process.
fn export(ident: &str, msg: &str, pid: u32, unit: Option<&str>) -> String {
    export_at(1_700_000_000_000_000, ident, msg, pid, unit)
}

/// Like [`export`], with the wall-clock time `base_us` plus a second per entry made so far.
fn export_at(base_us: u64, ident: &str, msg: &str, pid: u32, unit: Option<&str>) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let mut s = format!(
        "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={BOOT}\nMESSAGE={msg}\n\
         SYSLOG_IDENTIFIER={ident}\n_PID={pid}\n_HOSTNAME=web1\nPRIORITY={}\n",
        base_us + n * 1_000_000,
        1_000_000 + n * 1000,
        if ident == "sudo" { 5 } else { 6 },
    );
    if let Some(u) = unit {
        s.push_str(&format!("_SYSTEMD_UNIT={u}\n"));
    }
    s.push('\n');
    s
}

/// Writes `entries` (export format) to a new journal file `<dir>/<name>.journal`.
fn write_journal(dir: &Path, name: &str, entries: &[String]) {
    let out = dir.join(format!("{name}.journal"));
    let mut child = Command::new(journal_remote())
        .arg(format!("--output={}", out.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run systemd-journal-remote");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(entries.concat().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.is_file());
}

fn batch(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| export("app", &format!("{tag} {i}"), 100 + i as u32, None))
        .collect()
}

fn opts(dir: &Path, cursor: &Path, start_at: StartAt) -> JournalOptions {
    let mut o = JournalOptions::new(cursor);
    o.directory = Some(dir.to_path_buf());
    o.start_at = start_at;
    o
}

fn message(e: &Entry) -> String {
    let ev = JournalParser
        .parse(&ParseCtx::new("journal", "local"), &e.json)
        .unwrap();
    ev.get_str(Sym::new("message")).unwrap().into_owned()
}

/// Receives `n` entries, failing after [`WAIT`].
fn recv_n(rx: &Receiver<Entry>, n: usize) -> Vec<Entry> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        match rx.recv_deadline(deadline) {
            Ok(e) => got.push(e),
            Err(_) => panic!(
                "only {} of {n} entries arrived: {:?}",
                got.len(),
                got.iter().map(message).collect::<Vec<_>>()
            ),
        }
    }
    got
}

/// Proves nothing else is queued: writes a marker entry and expects it to be the next one.
fn expect_only_marker(dir: &Path, rx: &Receiver<Entry>, tag: &str) {
    write_journal(
        dir,
        &format!("marker-{tag}"),
        &[export("app", tag, 1, None)],
    );
    let next = recv_n(rx, 1);
    assert_eq!(message(&next[0]), tag, "an unexpected entry arrived first");
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reads_fields_resumes_from_cursor_and_follows_new_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    std::fs::create_dir(&dir).unwrap();
    let cp = tmp.path().join("checkpoints").join("journal.json");
    write_journal(
        &dir,
        "first",
        &[
            export(
                "sshd",
                "Accepted publickey for alice from 10.0.0.5 port 51234 ssh2",
                1234,
                Some("ssh.service"),
            ),
            export(
                "sudo",
                "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/id",
                1240,
                None,
            ),
        ],
    );

    let (j, rx) = Journal::start(opts(&dir, &cp, StartAt::Beginning)).unwrap();
    let got = recv_n(&rx, 2);
    let ctx = ParseCtx::new("journal", "local");
    let ssh = JournalParser.parse(&ctx, &got[0].json).unwrap();
    assert_eq!(&*ssh.host, "web1");
    let t = ssh.time.unwrap().as_microsecond();
    assert!(t > 1_700_000_000_000_000 && t % 1_000_000 == 0, "{t}");
    assert_eq!(ssh.get_str(Sym::new("program")).unwrap(), "sshd");
    assert_eq!(ssh.get(Sym::new("pid")), Some(FieldRef::Int(1234)));
    assert_eq!(ssh.get_str(Sym::new("unit")).unwrap(), "ssh.service");
    assert_eq!(
        ssh.get_str(Sym::new("_SYSTEMD_UNIT")).unwrap(),
        "ssh.service"
    );
    assert_eq!(ssh.get(Sym::new("priority")), Some(FieldRef::Int(6)));
    assert!(
        ssh.get_str(Sym::new("message"))
            .unwrap()
            .starts_with("Accepted publickey for alice")
    );
    assert_eq!(ssh.get_str(Sym::new("cursor")).unwrap(), got[0].cursor);
    let sudo = JournalParser.parse(&ctx, &got[1].json).unwrap();
    assert_eq!(sudo.get_str(Sym::new("program")).unwrap(), "sudo");
    assert_eq!(sudo.get(Sym::new("pid")), Some(FieldRef::Int(1240)));
    assert_eq!(sudo.get(Sym::new("priority")), Some(FieldRef::Int(5)));
    assert!(
        sudo.get_str(Sym::new("message"))
            .unwrap()
            .contains("COMMAND=/bin/id")
    );
    assert_eq!(sudo.get(Sym::new("unit")), None);

    // A file appearing while following (as rotation makes one) is read.
    write_journal(&dir, "second", &batch("live", 3));
    let live = recv_n(&rx, 3);
    assert_eq!(
        live.iter().map(message).collect::<Vec<_>>(),
        ["live 0", "live 1", "live 2"]
    );
    for e in got.iter().chain(&live) {
        j.commit(&e.cursor);
    }
    j.checkpoint().unwrap();
    let last = live[2].cursor.clone();
    assert!(std::fs::read_to_string(&cp).unwrap().contains(&last));
    let s = j.stats();
    assert_eq!((s.entries, s.restarts, s.malformed), (5, 0, 0));
    assert_eq!(s.committed.as_deref(), Some(last.as_str()));
    j.shutdown();

    // While stopped: more than 10 new entries (journalctl --follow alone would show only
    // the last 10 after the cursor).
    write_journal(&dir, "third", &batch("after", 12));
    let (j, rx) = Journal::start(opts(&dir, &cp, StartAt::Beginning)).unwrap();
    let again = recv_n(&rx, 12);
    let want: Vec<String> = (0..12).map(|i| format!("after {i}")).collect();
    assert_eq!(again.iter().map(message).collect::<Vec<_>>(), want);
    expect_only_marker(&dir, &rx, "marker one");
    j.commit(&again[5].cursor);
    j.shutdown();
    // The final checkpoint at shutdown holds the last commit: entries after it come again.
    let (j, rx) = Journal::start(opts(&dir, &cp, StartAt::End)).unwrap();
    let rest = recv_n(&rx, 7);
    assert_eq!(message(&rest[0]), "after 6");
    assert_eq!(message(&rest[6]), "marker one");
    j.shutdown();
}

#[test]
fn start_at_end_skips_old_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cp = tmp.path().join("cp").join("j.json");
    write_journal(&dir, "old", &batch("old", 5));
    let (j, rx) = Journal::start(opts(&dir, &cp, StartAt::End)).unwrap();
    // journalctl may still be seeking to the end when a file is written; write new files
    // until one arrives. Whatever arrives first must be new.
    let deadline = Instant::now() + WAIT;
    let mut k = 0;
    let first = loop {
        assert!(Instant::now() < deadline, "no new entry arrived");
        write_journal(
            &dir,
            &format!("new{k}"),
            &[export("app", &format!("new {k}"), 1, None)],
        );
        k += 1;
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(500)) {
            break e;
        }
    };
    assert!(message(&first).starts_with("new "), "{}", message(&first));
    j.shutdown();
}

#[test]
fn killed_journalctl_is_restarted_without_loss_or_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cp = tmp.path().join("j.json");
    write_journal(&dir, "a", &batch("a", 4));
    let (j, rx) = Journal::start(opts(&dir, &cp, StartAt::Beginning)).unwrap();
    let first = recv_n(&rx, 4);
    let pid = j.stats().child_pid.expect("journalctl runs");
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    write_journal(&dir, "b", &batch("b", 4));
    let second = recv_n(&rx, 4);
    let got: Vec<String> = first.iter().chain(&second).map(message).collect();
    let want: Vec<String> = (0..4)
        .map(|i| format!("a {i}"))
        .chain((0..4).map(|i| format!("b {i}")))
        .collect();
    assert_eq!(got, want);
    expect_only_marker(&dir, &rx, "after kill");
    let s = j.stats();
    assert!(s.restarts >= 1, "{s:?}");
    assert!(s.errors >= 1, "{s:?}");
    assert_ne!(s.child_pid, Some(pid));
    wait_for("a running journalctl", || j.stats().child_pid.is_some());
    j.shutdown();
}

#[test]
fn killed_before_any_entry_at_end_keeps_new_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cp = tmp.path().join("j.json");
    write_journal(&dir, "old", &batch("old", 3));
    let (j, rx) = Journal::start(opts(&dir, &cp, StartAt::End)).unwrap();
    let pid = j.stats().child_pid.expect("journalctl runs");
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Written after the start (real times) and, most likely, while no journalctl runs (the
    // back-off is 100 ms): the restart finds them with --since where --lines=0 would not.
    wait_for("the reaping", || j.stats().child_pid != Some(pid));
    let now_us = jiff::Timestamp::now().as_microsecond() as u64;
    write_journal(
        &dir,
        "new",
        &[
            export_at(now_us, "app", "fresh 0", 1, None),
            export_at(now_us, "app", "fresh 1", 1, None),
        ],
    );
    let got = recv_n(&rx, 2);
    assert_eq!(
        got.iter().map(message).collect::<Vec<_>>(),
        ["fresh 0", "fresh 1"]
    );
    j.shutdown();
}

#[test]
fn identifier_filter_and_start_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cp = tmp.path().join("j.json");
    write_journal(
        &dir,
        "mixed",
        &[
            export("sshd", "s1", 10, Some("ssh.service")),
            export("sudo", "u1", 11, None),
            export("cron", "c1", 12, None),
            export("sudo", "u2", 13, None),
        ],
    );
    let mut o = opts(&dir, &cp, StartAt::Beginning);
    o.identifiers = vec!["sudo".into()];
    let (j, rx) = Journal::start(o).unwrap();
    let got = recv_n(&rx, 2);
    assert_eq!(got.iter().map(message).collect::<Vec<_>>(), ["u1", "u2"]);
    j.shutdown();

    let mut o = opts(&dir, &cp, StartAt::Beginning);
    o.units = vec!["ssh.service".into()];
    let (j, rx) = Journal::start(o).unwrap();
    assert_eq!(message(&recv_n(&rx, 1)[0]), "s1");
    j.shutdown();

    let mut o = opts(&dir, &cp, StartAt::Beginning);
    o.journalctl = tmp.path().join("no-such-journalctl");
    let e = Journal::start(o).unwrap_err().to_string();
    assert!(e.contains("no-such-journalctl"), "{e}");
    let o = opts(&tmp.path().join("missing"), &cp, StartAt::Beginning);
    assert!(
        Journal::start(o)
            .unwrap_err()
            .to_string()
            .contains("directory")
    );
}

#[test]
fn parser_rejects_malformed_json() {
    let ctx = ParseCtx::new("journal", "local");
    for bad in [&b"{"[..], b"nope", b"[]", b"{\"MESSAGE\":\"a\"", b"\xff"] {
        assert!(JournalParser.parse(&ctx, bad).is_err(), "{bad:?}");
    }
    let ev = JournalParser
        .parse(&ctx, br#"{"MESSAGE":[104,105],"_HOSTNAME":"h"}"#)
        .unwrap();
    assert_eq!(ev.get_str(Sym::new("message")).unwrap(), "hi");
    assert_eq!(&*ev.host, "h");
}
