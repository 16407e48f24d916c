//! End to end: `watchpost run` follows a folder of `.evtx` files; a copied-in file's logon
//! events fire once each, and a restart delivers none of them again.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // stops watchpost with `kill -TERM` (a Unix signal)

mod common;

use std::time::Duration;

use common::*;

#[test]
fn evtx_folder_is_followed_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("evtx");
    std::fs::create_dir_all(&logs).unwrap();
    let flags = dir.path().join("flags");
    let config = dir.path().join("wp.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"
checkpoint_interval_ms = 100

[[source]]
name = "security"
type = "evtx"
path = "{logs}/*.evtx"

[[filter]]
name = "logon"
match = {{ source = "security", channel = "Security", event_id = 4624 }}
actions = ["flag"]

[[action]]
name = "flag"
type = "flag_file"
path = "{flags}/{{{{ record_id }}}}"
content = "{{{{ TargetUserName }}}} logon type {{{{ LogonType }}}} from {{{{ IpAddress }}}} (str6 {{{{ str6 }}}})"
"#,
            state = dir.path().join("state").display(),
            logs = logs.display(),
            flags = flags.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("wp.log");
    let wp = Watchpost::start(&config, &log);
    // A file that appears after the start is read from its first record.
    let fixture = fixture("evtx/attack-samples/command-and-control/DE_RDP_Tunneling_4624.evtx");
    std::fs::copy(&fixture, logs.join("rdp.evtx")).unwrap();
    let count = || std::fs::read_dir(&flags).map(|d| d.count()).unwrap_or(0);
    // MANIFEST.tsv: 18 records, all Security 4624.
    wait_for("18 logon flags", Duration::from_secs(30), || {
        (count() == 18).then_some(())
    });
    let one = std::fs::read_dir(&flags)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(one).unwrap();
    assert!(
        text.contains(" logon type ") && text.contains(" (str6 "),
        "{text}"
    );
    assert!(wp.terminate());
    std::fs::remove_dir_all(&flags).unwrap();
    let wp = Watchpost::start(&config, &log);
    std::thread::sleep(Duration::from_millis(500));
    assert!(wp.terminate());
    assert_eq!(count(), 0, "nothing is delivered again after a restart");
}
