//! The in-process reload API a fleet agent uses: any thread holding a `ReloadHandle`
//! applies a configuration text and gets the new generation or the diagnostics back.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use watchpost_config::{ConfigSource, Purpose};
use watchpost_runtime::{Outcome, Runtime, reload};

fn text(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[agent]\nstate_dir = '{d}/state'\ncheckpoint_interval_ms = 100\nlog_fired = false\n\n[store]\nenabled = false\n\n[[source]]\nname = \"app\"\ntype = \"jsonl\"\npath = '{d}/logs/*.jsonl'\n\n[[filter]]\nname = \"all\"\nmatch = {{ source = \"app\" }}\nactions = [\"out\"]\n\n[[action]]\nname = \"out\"\ntype = \"jsonl_file\"\npath = '{d}/out.jsonl'\n{extra}",
        d = dir.display()
    )
}

#[test]
fn a_pushed_text_is_applied_or_rejected_with_its_places() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("logs")).unwrap();
    let first = ConfigSource::Text {
        name: "group.toml".into(),
        text: text(d.path(), ""),
    };
    let loaded = watchpost_config::load(&first, Purpose::Run).unwrap();
    let (handle, requests) = reload::channel();
    let mut rt = Runtime::start(first, loaded, handle.clone()).unwrap();
    assert_eq!(rt.generation(), 1);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    // A task of its own, as a fleet shipper would be.
    let (seen_tx, seen_rx) = crossbeam_channel::bounded::<()>(1);
    rt.spawn("extra", move |stop| {
        let _ = seen_tx.send(());
        while !stop.sleep(Duration::from_secs(10)) {}
    })
    .unwrap();
    let dir = d.path().to_owned();
    let pusher = std::thread::spawn(move || {
        seen_rx.recv().unwrap();
        let bad = ConfigSource::Text {
            name: "group.toml".into(),
            text: text(
                &dir,
                "\n[[filter]]\nname = \"x\"\nmatch = { source = \"app\" }\nactions = [\"missing\"]\n",
            ),
        };
        let rejected = handle.reload(Some(bad), Duration::from_secs(30)).unwrap();
        let good = ConfigSource::Text {
            name: "group.toml".into(),
            text: text(
                &dir,
                "\n[[filter]]\nname = \"x\"\nmatch = { source = \"app\" }\nactions = [\"out\"]\n",
            ),
        };
        let applied = handle.reload(Some(good), Duration::from_secs(30)).unwrap();
        stop_tx.send(()).unwrap();
        (rejected, applied)
    });
    rt.serve_until(&stop_rx, &requests);
    let (rejected, applied) = pusher.join().unwrap();
    match rejected {
        Outcome::Rejected {
            generation,
            diagnostics,
        } => {
            assert_eq!(generation, 1);
            assert!(
                diagnostics.contains("group.toml:27:12: error: unknown action `missing`"),
                "{diagnostics}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        applied,
        Outcome::Applied {
            generation: 2,
            changes: "filters: added x".into()
        }
    );
    // The status file the CLI reads.
    let status = reload::read_status(&d.path().join("state")).unwrap();
    assert_eq!(status.outcome, applied);
}
