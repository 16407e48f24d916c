//! The `jsonl_file` action: lines parsed back, rotation by size, the number of rotated
//! files kept, and a path that cannot be written (a counted failure, nothing stops).

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{event, job, specs, wait_for};
use watchpost_actions::Dispatcher;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn lines_are_written_and_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[[action]]
name = "events"
type = "jsonl_file"
path = '{dir}/out/events.jsonl'

[[action]]
name = "short"
type = "jsonl_file"
path = '{dir}/out/short.log'
format = "{{{{ host }}}} {{{{ risk_name }}}} {{{{ raw }}}}"
"#,
        dir = dir.path().display()
    );
    let d = Dispatcher::start(specs(&text)).unwrap();
    let (events, short) = (d.index_of("events").unwrap(), d.index_of("short").unwrap());
    for i in 0..50 {
        assert!(d.submit(events, job(event(&format!("pc{i}")), "virus")));
    }
    let mut multi = event("pc-x");
    multi.raw = "first line\nsecond line".into();
    assert!(d.submit(short, job(multi, "virus")));
    let stats = d.shutdown(Duration::from_secs(5));
    assert_eq!(
        stats.iter().map(|s| (s.ok, s.failed)).collect::<Vec<_>>(),
        [(50, 0), (1, 0)]
    );
    let got = lines(&dir.path().join("out/events.jsonl"));
    assert_eq!(got.len(), 50);
    for (i, line) in got.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["host"], format!("pc{i}"));
        assert_eq!(v["filter"], "virus");
        assert_eq!(v["actions"], "a,b");
        assert_eq!(v["source"], "sep-av");
        assert_eq!(v["risk_name"], "EICAR Test String");
        assert_eq!(v["time"], "2019-05-29T08:23:57.123Z");
    }
    // A template's line breaks become spaces: one event, one line.
    assert_eq!(
        lines(&dir.path().join("out/short.log")),
        ["pc-x EICAR Test String first line second line"]
    );
}

#[test]
fn rotates_at_the_size_and_keeps_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let text = format!(
        r#"
[[action]]
name = "a"
type = "jsonl_file"
path = '{}'
rotate_bytes = 1024
keep = 2
format = "{{{{ host }}}} {dots}"
"#,
        path.display(),
        dots = ".".repeat(93)
    );
    let d = Dispatcher::start(specs(&text)).unwrap();
    // Each line is 100 bytes: 10 fit in 1024, the 11th goes to a new file.
    let host = |i: usize| format!("h{i:04}");
    for i in 0..45 {
        assert!(d.submit(0, job(event(&host(i)), "f")));
    }
    let stats = d.shutdown(Duration::from_secs(5));
    assert_eq!((stats[0].ok, stats[0].failed), (45, 0), "{stats:?}");
    let numbered = |n: u32| dir.path().join(format!("a.jsonl.{n}"));
    // 45 lines: files of 10, 10, 10, 10, 5; only the newest two rotated ones are kept.
    let current = lines(&path);
    let first = |p: &Path| lines(p)[0].split(' ').next().unwrap().to_owned();
    assert_eq!(current.len(), 5);
    assert_eq!(first(&path), host(40));
    assert_eq!(
        (lines(&numbered(1)).len(), first(&numbered(1))),
        (10, host(30))
    );
    assert_eq!(
        (lines(&numbered(2)).len(), first(&numbered(2))),
        (10, host(20))
    );
    assert!(!numbered(3).exists());
    for p in [path.clone(), numbered(1), numbered(2)] {
        assert!(std::fs::metadata(&p).unwrap().len() <= 1024, "{p:?}");
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]);
}

#[test]
fn a_restart_continues_the_size_of_the_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    std::fs::write(&path, "x".repeat(1000) + "\n").unwrap();
    let text = format!(
        "[[action]]\nname = \"a\"\ntype = \"jsonl_file\"\npath = '{}'\nrotate_bytes = 1024\n",
        path.display()
    );
    let d = Dispatcher::start(specs(&text)).unwrap();
    assert!(d.submit(0, job(event("pc1"), "f")));
    d.shutdown(Duration::from_secs(5));
    assert_eq!(lines(&dir.path().join("a.jsonl.1")), ["x".repeat(1000)]);
    assert_eq!(lines(&path).len(), 1);
}

#[test]
fn an_unwritable_path_is_a_counted_failure() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: fails even for root.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let text = format!(
        r#"
[[action]]
name = "broken"
type = "jsonl_file"
path = '{blocker}/sub/out.jsonl'

[[action]]
name = "fine"
type = "jsonl_file"
path = '{dir}/fine.jsonl'
"#,
        blocker = blocker.display(),
        dir = dir.path().display()
    );
    let specs = specs(&text);
    let errs = specs[0].check();
    assert!(errs[0].message.contains("not a directory"), "{errs:?}");
    let d = Dispatcher::start(specs).unwrap();
    for i in 0..3 {
        // Handing over never fails or waits because the file cannot be written.
        assert!(d.submit(0, job(event(&format!("pc{i}")), "f")));
        assert!(d.submit(1, job(event(&format!("pc{i}")), "f")));
    }
    let stats = wait_for(Duration::from_secs(10), || {
        let s = d.stats();
        (s[0].failed == 3 && s[1].ok == 3).then_some(s)
    })
    .expect("jobs handled");
    let error = stats[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("cannot open") && error.contains("blocker/sub/out.jsonl"),
        "{error}"
    );
    d.shutdown(Duration::from_secs(5));
    assert_eq!(lines(&dir.path().join("fine.jsonl")).len(), 3);
}
