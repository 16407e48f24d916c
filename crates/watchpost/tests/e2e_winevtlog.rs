//! `watchpost run` with a windows_event_log source on Linux: the source is skipped with a
//! log line, the other sources run, and the daemon stops cleanly. (On Windows the source's
//! thread is started and stopped by `service_windows.rs`.)

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]
#![cfg(unix)] // stops watchpost with `kill -TERM` (a Unix signal)

mod common;

use std::time::Duration;

use common::*;

#[test]
fn run_skips_windows_event_log_sources_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    std::fs::write(&app, "").unwrap();
    let flag = dir.path().join("seen");
    let config = dir.path().join("wp.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
state_dir = "{state}"
checkpoint_interval_ms = 100

[[source]]
name = "winlog"
type = "windows_event_log"
channels = ["Security", "System"]

[[source]]
name = "app"
type = "text"
path = "{app}"

[[filter]]
name = "marker"
match = {{ message = {{ regex = 'MARKER' }} }}
actions = ["flag"]

[[action]]
name = "flag"
type = "flag_file"
path = "{flag}"
content = "seen"
"#,
            state = dir.path().join("state").display(),
            app = app.display(),
            flag = flag.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("wp.log");
    let wp = Watchpost::start(&config, &log);
    let text = wp.log_text();
    assert!(
        text.contains("windows_event_log sources run on Windows only: skipped")
            && text.contains("winlog"),
        "{text}"
    );
    append(&app, b"Nov 22 10:00:00 host app[1]: MARKER\n");
    wait_for("the flag file", Duration::from_secs(20), || {
        std::fs::read_to_string(&flag).ok()
    });
    assert!(wp.terminate(), "clean exit");
}
