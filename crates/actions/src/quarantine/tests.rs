//! The quarantine's configuration, state transitions, hook and `nft` invocation, with a
//! stand-in `nft` (no root needed; the real one runs in `crates/watchpost/tests/quarantine.rs`).

#[cfg(unix)]
use std::path::{Path, PathBuf};

use super::*;
use crate::config::test_util::*;

const HEAD: &str = "[[action]]\nname = \"isolate\"\ntype = \"quarantine\"\n";

/// An absolute program path on this system.
const HOOK: &str = if cfg!(windows) {
    r"C:\Program Files\hv\nic-off.exe"
} else {
    "/usr/local/bin/nic-off"
};

fn spec(text: &str) -> (ActionSpecBox, QuarantineSpec) {
    let a = parse_ok(text);
    let q = a
        .kind_as::<QuarantineSpec>()
        .expect("a quarantine action")
        .clone();
    (ActionSpecBox(a), q)
}

struct ActionSpecBox(crate::ActionSpec);

/// A script standing in for a program: appends `tag`, $WATCHPOST_QUARANTINE, its arguments
/// and stdin to `log`. (A test helper; watchpost itself never runs a shell.)
#[cfg(unix)]
fn recorder(dir: &Path, tag: &str, log: &Path, fail_if: Option<&Path>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(tag);
    let fail = fail_if.map_or(String::new(), |f| {
        format!("[ -e '{}' ] && exit 3\n", f.display())
    });
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n{fail}{{ printf '%s|%s|' '{tag}' \"$WATCHPOST_QUARANTINE\"; printf '%s ' \"$@\"; echo; [ '{tag}' = nft ] && cat; }} >> '{}'\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_full_action_parses() {
    let text = format!(
        "{HEAD}allow = [\"10.0.0.5\", \"192.0.2.0/24:514\", \"[fd00::5]:443\"]\nallow_dns = true\ndns_servers = [\"10.0.0.53\"]\nallow_dhcp = true\ntimeout = \"4h\"\ntable = \"wp_q\"\nnft = \"/usr/sbin/nft\"\nregistry = {{ key = 'HKLM\\SOFTWARE\\Watchpost\\Quarantine', value = \"Active\", kind = \"dword\", data = \"1\" }}\nhook = ['{HOOK}', \"{{{{ host }}}}\", \"--vm\"]\nhook_timeout_secs = 30\n"
    );
    let (a, q) = spec(&text);
    assert_eq!(a.0.kind(), "quarantine");
    let vars: Vec<&str> = a.0.variables().iter().map(|(_, s)| at(&text, s)).collect();
    assert_eq!(vars, ["host"]);
    assert_eq!(q.timeout, Some(Duration::from_secs(4 * 3600)));
    assert_eq!(q.table, "wp_q");
    assert_eq!(q.allow.len(), 3);
    let r = q.registry.as_ref().unwrap();
    assert_eq!(
        (r.hive, r.path.as_str()),
        (Hive::LocalMachine, r"SOFTWARE\Watchpost\Quarantine")
    );
    assert_eq!(r.data, Data::Dword(1));
    let script = q.script();
    assert!(
        script.starts_with("table inet wp_q\ndelete table inet wp_q\n"),
        "{script}"
    );
    assert!(script.contains("ip daddr 10.0.0.53 meta l4proto { tcp, udp } th dport 53 accept"));
    assert!(script.contains("udp sport 68 udp dport 67 accept"));
    assert!(q.lets_through("192.0.2.9".parse().unwrap(), 514));
    assert!(!q.lets_through("192.0.2.9".parse().unwrap(), 515));
    assert!(q.lets_through("10.0.0.5".parse().unwrap(), 1));
    assert!(q.lets_through("10.0.0.53".parse().unwrap(), 53));
    assert!(!q.lets_through("10.0.0.6".parse().unwrap(), 514));
}

#[test]
fn config_errors_have_places() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "allow = [\"10.0.0.5\", \"siem.example\"]",
            "\"siem.example\"",
            "host names",
        ),
        ("allow = [\"10.0.0.1/8\"]", "\"10.0.0.1/8\"", "10.0.0.0/8"),
        ("timeout = \"4 hours\"", "\"4 hours\"", "not a duration"),
        ("timeout = \"0\"", "\"0\"", "at least 1s"),
        ("table = \"my-table\"", "\"my-table\"", "letters, digits"),
        (
            "dns_servers = [\"10.0.0.53\"]",
            "[\"10.0.0.53\"]",
            "allow_dns = true",
        ),
        (
            "allow_dns = true\ndns_servers = [\"ns1\"]",
            "\"ns1\"",
            "not an IPv4",
        ),
        ("hook = []", "[]", "empty"),
        (
            "hook = [\"{{ host }}\"]",
            "\"{{ host }}\"",
            "cannot be a template",
        ),
        ("hook = [\"bin/x\"]", "\"bin/x\"", "absolute path"),
        (
            "hook = [\"nic-off\", \"{{ host | nope }}\"]",
            "",
            "unknown filter",
        ),
        (
            "registry = { key = 'HKXX\\A' }",
            "HKXX",
            "unknown registry hive",
        ),
        (
            "registry = { key = 'HKLM\\A\\..\\B' }",
            "'HKLM\\A\\..\\B'",
            "`..`",
        ),
        (
            "registry = { key = 'HKLM\\A', data = \"x\" }",
            "\"x\"",
            "not a dword",
        ),
        (
            "registry = { key = 'HKLM\\A', colour = 1 }",
            "colour",
            "unknown field",
        ),
        (
            "mode = \"release\"\nallow = [\"10.0.0.5\"]",
            "[\"10.0.0.5\"]",
            "does not apply to mode = \"release\"",
        ),
        ("mode = \"lift\"", "\"lift\"", "unknown variant"),
        ("colour = 1", "colour", "unknown field"),
    ];
    for (body, place, why) in cases {
        let text = format!("{HEAD}{body}\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 1, "{body}: {errs:?}");
        assert!(errs[0].message.contains(why), "{body}: {errs:?}");
        assert!(
            at(&text, &errs[0].span).contains(place),
            "{body}: {:?} is at {:?}",
            errs[0].message,
            at(&text, &errs[0].span)
        );
    }
    parse_ok(&format!("{HEAD}mode = \"release\"\n"));
}

#[test]
#[cfg(target_os = "linux")]
fn check_finds_nft_and_warns_about_an_empty_allow_list() {
    let (a, _) = spec(&format!("{HEAD}nft = \"/nonexistent/nft\"\n"));
    let errs = a.0.check();
    assert_eq!(errs.len(), 2, "{errs:?}");
    // Not installed on this machine: a warning (the quarantine fails here, logged).
    assert!(
        errs[0].warning && errs[0].message.contains("does not exist"),
        "{errs:?}"
    );
    assert!(
        errs[1].warning && errs[1].message.contains("allow-list is empty"),
        "{errs:?}"
    );
    let text = format!(
        "{HEAD}firewall = false\nallow = [\"10.0.0.5\"]\nregistry = {{ key = 'HKLM\\A' }}\nhook = [\"no-such-hook-xyz\"]\n"
    );
    let errs = spec(&text).0.0.check();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].warning && errs[0].message.contains("Windows only"),
        "{errs:?}"
    );
    assert!(
        errs[1].warning && errs[1].message.contains("not found on PATH"),
        "{errs:?}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "{HEAD}nft = \"{}\"\nallow_dns = true\n",
        file.path().display()
    );
    let errs = spec(&text).0.0.check();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        !errs[0].warning && errs[0].message.contains("not executable"),
        "there but unusable is an error: {errs:?}"
    );
}

#[cfg(unix)]
fn job(filter: &str) -> crate::Job {
    let mut e = Event::new(
        Arc::from("sep-ips"),
        Arc::from("pc1"),
        "System Infected: X".into(),
    );
    e.origin = Some(watchpost_event::Origin {
        place: Arc::from("/var/log/seclog.log"),
        offset: 42,
    });
    crate::Job {
        event: Arc::new(e),
        filter: Arc::from(filter),
        actions: Arc::from("isolate"),
        stored: None,
        ticket: Default::default(),
    }
}

#[test]
#[cfg(unix)]
fn apply_renew_release_with_hook_and_nft() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let nft = recorder(dir.path(), "nft", &log, None);
    let hook = recorder(dir.path(), "hook", &log, None);
    let state_dir = dir.path().join("state");
    let text = format!(
        "{HEAD}allow = [\"10.0.0.5\"]\ntimeout = \"1h\"\nnft = '{}'\nhook = ['{}', \"{{{{ host }}}}\", \"{{{{ filter }}}}\", \"two words\"]\n",
        nft.display(),
        hook.display()
    );
    let (_, mut q) = spec(&text);
    q.set_state_dir(&state_dir);
    let ctl = Control::default();
    q.on_job("isolate", &job("ips-infected"), &ctl).unwrap();
    let s = status(&state_dir).unwrap().unwrap();
    assert!(s.active);
    assert_eq!(s.filter.as_deref(), Some("ips-infected"));
    assert_eq!(s.reason, "filter `ips-infected` fired");
    let ev = s.event.as_ref().unwrap();
    assert_eq!(
        (ev.host.as_str(), ev.origin.as_deref()),
        ("pc1", Some("/var/log/seclog.log:42"))
    );
    let since: jiff::Timestamp = s.since.parse().unwrap();
    assert_eq!(
        s.until_time().unwrap().duration_since(since).as_secs(),
        3600
    );
    assert_eq!(
        s.undo.hook.as_ref().unwrap().argv[1..],
        ["pc1", "ips-infected", "two words"]
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let script = q.script();
    assert_eq!(
        calls,
        format!("nft||-f - \n{script}hook|apply|pc1 ips-infected two words \n"),
    );

    // A second event renews: the table again, no second hook, `since` kept.
    q.on_job("isolate", &job("other"), &ctl).unwrap();
    let s2 = status(&state_dir).unwrap().unwrap();
    assert_eq!(
        (s2.since.as_str(), s2.filter.as_deref()),
        (s.since.as_str(), Some("ips-infected"))
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.matches("hook|apply").count(), 1, "{calls}");
    assert_eq!(calls.matches("nft||").count(), 2, "{calls}");

    // Released by a mode = "release" action.
    let (_, mut r) = spec(&format!("{HEAD}mode = \"release\"\n"));
    r.set_state_dir(&state_dir);
    r.on_job("lift", &job("all-clear"), &ctl).unwrap();
    let s3 = status(&state_dir).unwrap().unwrap();
    assert!(!s3.active);
    let rel = s3.released.unwrap();
    assert_eq!(
        (rel.by.as_str(), rel.reason.as_str()),
        ("daemon", "filter `all-clear` fired")
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.ends_with("nft||-f - \ntable inet watchpost_quarantine\ndelete table inet watchpost_quarantine\nhook|release|pc1 ips-infected two words \n"),
        "{calls}"
    );
    // Nothing in force: releasing again does nothing.
    assert!(release(&state_dir, "cli", "again").unwrap().is_none());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), calls);
}

#[test]
#[cfg(unix)]
fn a_failing_nft_applies_nothing_and_a_failing_release_stays_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let broken = dir.path().join("broken");
    let nft = recorder(dir.path(), "nft", &log, Some(&broken));
    let state_dir = dir.path().join("state");
    let text = format!("{HEAD}allow = [\"10.0.0.5\"]\nnft = '{}'\n", nft.display());
    let (a, _) = spec(&text);
    let q = a.0.as_quarantine().unwrap();
    std::fs::write(&broken, "").unwrap();
    let e = q.apply(&state_dir, "pc1", "test", "cli (me)").unwrap_err();
    assert!(matches!(e, QuarantineError::Firewall(_)), "{e}");
    assert!(status(&state_dir).unwrap().is_none());
    std::fs::remove_file(&broken).unwrap();
    let (new, s) = q.apply(&state_dir, "pc1", "test", "cli (me)").unwrap();
    assert!(new && s.active && s.until.is_none());
    assert_eq!((s.by.as_str(), s.reason.as_str()), ("cli (me)", "test"));
    std::fs::write(&broken, "").unwrap();
    assert!(release(&state_dir, "cli (me)", "done").is_err());
    assert!(status(&state_dir).unwrap().unwrap().active);
    std::fs::remove_file(&broken).unwrap();
    assert!(
        !release(&state_dir, "cli (me)", "done")
            .unwrap()
            .unwrap()
            .active
    );
}

#[test]
#[cfg(unix)]
fn the_expiry_is_read_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let hook = recorder(dir.path(), "hook", &log, None);
    let state_dir = dir.path().join("state");
    let text = format!(
        "{HEAD}firewall = false\ntimeout = \"2s\"\nhook = ['{}']\n",
        hook.display()
    );
    let (a, _) = spec(&text);
    let q = a.0.as_quarantine().unwrap();
    q.apply(&state_dir, "pc1", "manual", "cli").unwrap();
    assert!(release_if_due(&state_dir).unwrap().is_none());
    // Another process shortens it: the file, not memory, decides.
    let mut s = status(&state_dir).unwrap().unwrap();
    s.until = Some(jiff::Timestamp::now().to_string());
    std::fs::write(state_dir.join(STATE_FILE), serde_json::to_vec(&s).unwrap()).unwrap();
    let released = release_if_due(&state_dir).unwrap().unwrap();
    assert_eq!(released.released.unwrap().by, "timeout");
    assert!(release_if_due(&state_dir).unwrap().is_none());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "hook|apply| \nhook|release| \n"
    );
    // While someone else holds the lock, the timer skips the round instead of waiting.
    q.apply(&state_dir, "pc1", "manual", "cli").unwrap();
    let mut s = status(&state_dir).unwrap().unwrap();
    s.until = Some(jiff::Timestamp::now().to_string());
    std::fs::write(state_dir.join(STATE_FILE), serde_json::to_vec(&s).unwrap()).unwrap();
    let held = Locked::acquire(&state_dir).unwrap();
    assert!(release_if_due(&state_dir).unwrap().is_none());
    assert!(status(&state_dir).unwrap().unwrap().active);
    drop(held);
    assert!(release_if_due(&state_dir).unwrap().is_some());
    // A damaged file is an error, never a panic.
    std::fs::write(state_dir.join(STATE_FILE), "{").unwrap();
    assert!(matches!(
        status(&state_dir),
        Err(StateError::Damaged { .. })
    ));
    assert!(release_if_due(&state_dir).is_err());
}

#[test]
fn release_actions_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = spec(&format!("{HEAD}mode = \"release\"\n"));
    let q = a.0.as_quarantine().unwrap();
    assert!(q.releases());
    assert!(matches!(
        q.apply(dir.path(), "h", "r", "b"),
        Err(QuarantineError::ReleaseOnly(_))
    ));
}

/// The Windows part for real: run under Wine by `scripts/windows-test.sh`.
#[test]
#[cfg(windows)]
fn windows_sets_and_restores_the_location_awareness_value() {
    let dir = tempfile::tempdir().unwrap();
    let key = r"SOFTWARE\WatchpostTest\QuarantineUnit";
    let _ = registry::delete_key(Hive::CurrentUser, key);
    let text = format!(
        "{HEAD}registry = {{ key = 'HKCU\\{key}', value = \"Active\", kind = \"dword\", data = \"1\" }}\n"
    );
    let (a, _) = spec(&text);
    let q = a.0.as_quarantine().unwrap();
    // A key that did not exist is created, then deleted again.
    q.apply(dir.path(), "pc1", "test", "cli").unwrap();
    assert_eq!(
        registry::read_value(Hive::CurrentUser, key, "Active").unwrap(),
        (true, Some(Data::Dword(1)))
    );
    release(dir.path(), "cli", "done").unwrap().unwrap();
    assert_eq!(
        registry::read_value(Hive::CurrentUser, key, "Active").unwrap(),
        (false, None)
    );
    // An earlier value is put back.
    registry::set_value(Hive::CurrentUser, key, "Active", &Data::Sz("before".into())).unwrap();
    q.apply(dir.path(), "pc1", "test", "cli").unwrap();
    assert_eq!(
        registry::read_value(Hive::CurrentUser, key, "Active")
            .unwrap()
            .1,
        Some(Data::Dword(1))
    );
    release(dir.path(), "cli", "done").unwrap().unwrap();
    assert_eq!(
        registry::read_value(Hive::CurrentUser, key, "Active")
            .unwrap()
            .1,
        Some(Data::Sz("before".into()))
    );
    registry::delete_key(Hive::CurrentUser, key).unwrap();
}

#[test]
#[cfg(target_os = "linux")]
fn syslog_targets_outside_the_allow_list_are_warned_about() {
    let text = "[[action]]\nname = \"siem\"\ntype = \"syslog\"\ntarget = \"udp://192.0.2.10:514\"\n\
                [[action]]\nname = \"siem6\"\ntype = \"syslog\"\ntarget = \"tcp://[2001:db8::10]:6514\"\n\
                [[action]]\nname = \"named\"\ntype = \"syslog\"\ntarget = \"udp://siem.example:514\"\n\
                [[action]]\nname = \"isolate\"\ntype = \"quarantine\"\nallow = [\"192.0.2.10:514\"]\n";
    let actions: Vec<crate::ActionSpec> = parse_all(text).into_iter().map(Result::unwrap).collect();
    let warnings = crate::check_allow_lists(&actions);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].warning);
    assert!(
        warnings[0]
            .message
            .contains("`siem6` (2001:db8::10 port 6514)"),
        "{warnings:?}"
    );
    assert_eq!(at(text, &warnings[0].span), "\"quarantine\"");
}

/// Appliers and releasers in parallel (the daemon's worker, its timer and the CLI are
/// separate threads or processes): every transition happens under the lock on a freshly
/// read state, so the hook log alternates apply/release and the file always parses.
#[test]
#[cfg(unix)]
fn concurrent_apply_and_release_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let nft = recorder(dir.path(), "nft", &log, None);
    let hook = recorder(dir.path(), "hook", &log, None);
    let state_dir = dir.path().join("state");
    let text = format!(
        "{HEAD}allow = [\"10.0.0.5\"]\nnft = '{}'\nhook = ['{}']\n",
        nft.display(),
        hook.display()
    );
    let (a, _) = spec(&text);
    let q = a.0.as_quarantine().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (q, state_dir) = (q, &state_dir);
            s.spawn(move || {
                for i in 0..6 {
                    if (t + i) % 2 == 0 {
                        q.apply(state_dir, "pc1", "race", "test").unwrap();
                    } else {
                        release(state_dir, "test", "race").unwrap();
                    }
                    status(state_dir).unwrap();
                }
            });
        }
    });
    let calls = std::fs::read_to_string(&log).unwrap();
    let hooks: Vec<&str> = calls.lines().filter(|l| l.starts_with("hook|")).collect();
    assert!(!hooks.is_empty());
    for (i, h) in hooks.iter().enumerate() {
        let want = if i % 2 == 0 {
            "hook|apply|"
        } else {
            "hook|release|"
        };
        assert!(h.starts_with(want), "transition {i}: {h}\n{calls}");
    }
    let active = status(&state_dir).unwrap().unwrap().active;
    assert_eq!(active, hooks.len() % 2 == 1, "{calls}");
}
