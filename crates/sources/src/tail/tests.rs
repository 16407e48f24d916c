//! Which thread's watch covers which directory: the tailer's own wait (`direct/`) and
//! `notify` divide the directories between them.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Record, StartAt, TailOptions, Tailer};

/// Follows `pattern` under `root`, read from the beginning, polled once an hour.
fn open(root: &Path, pattern: &str) -> Tailer {
    let mut o = TailOptions::new(
        vec![root.join(pattern).to_string_lossy().into_owned()],
        root.join("state").join("cp.json"),
    );
    o.start_at = StartAt::Beginning;
    o.poll_interval = Duration::from_secs(3600);
    Tailer::open(o).unwrap()
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Waits and reads until `got` holds `n` lines (fails after 10 s).
fn read_until(t: &mut Tailer, got: &mut Vec<(PathBuf, String)>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        t.read_available(&mut |r: Record<'_>| {
            got.push((
                r.path.to_path_buf(),
                String::from_utf8_lossy(r.bytes).into_owned(),
            ));
        })
        .unwrap();
        if got.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines: {got:?}",
            got.len()
        );
        t.wait(Duration::from_secs(1));
    }
}

fn texts(got: &[(PathBuf, String)]) -> Vec<&str> {
    got.iter().map(|(_, s)| s.as_str()).collect()
}

/// The directory of a followed file is watched by the tailer's own wait alone: notify's
/// thread is not woken by a write there. Creations, renames and deletions in it are
/// reported by that wait (the fallback poll is an hour away); when that wait is given up,
/// notify watches the directory again.
#[cfg(any(target_os = "linux", windows))]
#[test]
fn notify_leaves_the_directories_of_followed_files_to_the_tailers_own_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    fs::create_dir(&logs).unwrap();
    // Before a file is followed, notify watches the pattern's directory.
    let mut t = open(tmp.path(), "logs/*.log");
    assert_eq!(t.watches.watched(), std::slice::from_ref(&logs));
    let mut got = Vec::new();
    append(&logs.join("a.log"), "a0\n");
    read_until(&mut t, &mut got, 1);
    // Followed: handed over.
    assert!(t.watches.watched().is_empty(), "{:?}", t.watches.watched());
    assert!(t.shared.is_direct_dir(&logs));
    // A new file, a rename out of the patterns (read to its end at its new name) with a
    // new file at the old name, a deletion: seen by the tailer's own wait alone.
    append(&logs.join("b.log"), "b0\n");
    read_until(&mut t, &mut got, 2);
    let mut old = OpenOptions::new()
        .append(true)
        .open(logs.join("a.log"))
        .unwrap();
    fs::rename(logs.join("a.log"), logs.join("a.log.1")).unwrap();
    old.write_all(b"a1\n").unwrap();
    append(&logs.join("a.log"), "c0\n");
    read_until(&mut t, &mut got, 4);
    fs::remove_file(logs.join("b.log")).unwrap();
    append(&logs.join("d.log"), "d0\n");
    read_until(&mut t, &mut got, 5);
    let s = t.stats();
    assert_eq!(s.polls, 0, "{s:?}");
    // Linux reports the deletion at once; on Windows a file deleted while the tailer
    // holds it open stays (delete pending) until the handle is closed, so only the
    // rename is sure to be counted by now (what matters, every line, is checked below).
    #[cfg(target_os = "linux")]
    assert_eq!(s.rotations, 2, "a.log renamed, b.log deleted: {s:?}");
    #[cfg(windows)]
    assert!(s.rotations >= 1, "a.log renamed: {s:?}");
    assert!(
        got.contains(&(logs.join("a.log.1"), "a1".to_owned())),
        "{got:?}"
    );
    let mut all = texts(&got);
    all.sort();
    assert_eq!(all, ["a0", "a1", "b0", "c0", "d0"]);
    assert!(t.watches.watched().is_empty());
    // The tailer's own wait given up (its wait failed): notify watches the directory
    // again and reports what follows.
    t.leave_direct_wait();
    assert!(t.direct.is_none() && !t.shared.is_direct_dir(&logs));
    assert_eq!(t.watches.watched(), std::slice::from_ref(&logs));
    append(&logs.join("e.log"), "e0\n");
    read_until(&mut t, &mut got, 6);
    append(&logs.join("e.log"), "e1\n");
    read_until(&mut t, &mut got, 7);
    assert_eq!(texts(&got[5..]), ["e0", "e1"]);
    assert_eq!(t.stats().polls, 0);
}

/// A recursive pattern's directory stays watched by notify (its watch also covers the
/// subdirectories, where new ones may bring files), beside the tailer's own wait.
#[cfg(any(target_os = "linux", windows))]
#[test]
fn a_recursively_watched_directory_stays_with_notify() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    fs::create_dir_all(logs.join("x")).unwrap();
    append(&logs.join("x").join("a.log"), "a0\n");
    let mut t = open(tmp.path(), "logs/**/*.log");
    let mut got = Vec::new();
    read_until(&mut t, &mut got, 1);
    assert_eq!(t.watches.watched(), std::slice::from_ref(&logs));
    assert!(t.shared.is_direct_dir(&logs.join("x")));
    fs::create_dir(logs.join("y")).unwrap();
    append(&logs.join("y").join("b.log"), "b0\n");
    read_until(&mut t, &mut got, 2);
    assert_eq!(t.stats().polls, 0);
}
