//! The `flag_file` action: write, remove, and refuse paths that leave their directory.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{event, job, specs, wait_for};
use watchpost_actions::Dispatcher;

fn config(dir: &std::path::Path) -> String {
    format!(
        r#"
[[action]]
name = "flag-on"
type = "flag_file"
path = '{dir}/flags/{{{{ host }}}}.flag'
content = "{{{{ risk_name }}}} by {{{{ filter }}}}"
file_mode = "0640"

[[action]]
name = "flag-off"
type = "flag_file"
path = '{dir}/flags/{{{{ host }}}}.flag'
mode = "remove"

[[action]]
name = "flag-json"
type = "flag_file"
path = '{dir}/json/{{{{ host }}}}'
"#,
        dir = dir.display()
    )
}

#[test]
fn write_then_remove() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dispatcher::start(specs(&config(dir.path()))).unwrap();
    let flag = dir.path().join("flags").join("pc1.flag");
    assert!(d.submit(d.index_of("flag-on").unwrap(), job(event("pc1"), "virus")));
    let written = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&flag).ok()
    });
    assert_eq!(written.as_deref(), Some("EICAR Test String by virus"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&flag).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(flag.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary files remain");

    assert!(d.submit(d.index_of("flag-off").unwrap(), job(event("pc1"), "virus")));
    assert!(wait_for(Duration::from_secs(10), || (!flag.exists()).then_some(())).is_some());
    // Removing a file that is already gone is fine.
    assert!(d.submit(d.index_of("flag-off").unwrap(), job(event("pc1"), "virus")));

    assert!(d.submit(d.index_of("flag-json").unwrap(), job(event("pc2"), "virus")));
    let json_path = dir.path().join("json").join("pc2");
    let json = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&json_path).ok()
    })
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["host"].as_str(), v["filter"].as_str()),
        (Some("pc2"), Some("virus"))
    );

    let stats = d.shutdown(Duration::from_secs(5));
    let counts: Vec<(u64, u64)> = stats.iter().map(|s| (s.ok, s.failed)).collect();
    assert_eq!(counts, [(1, 0), (2, 0), (1, 0)], "{stats:?}");
}

#[test]
fn traversal_from_event_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dispatcher::start(specs(&config(dir.path()))).unwrap();
    for host in ["../../escape", r"..\..\escape", "a/../../b", "nul\0byte"] {
        assert!(d.submit(d.index_of("flag-on").unwrap(), job(event(host), "virus")));
    }
    let stats = d.shutdown(Duration::from_secs(5));
    assert_eq!((stats[0].ok, stats[0].failed), (0, 4), "{stats:?}");
    assert!(
        stats[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("refusing"),
        "{stats:?}"
    );
    assert!(!dir.path().join("escape.flag").exists());
    assert!(!dir.path().parent().unwrap().join("escape.flag").exists());
}
