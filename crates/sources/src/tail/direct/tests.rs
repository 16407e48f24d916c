//! The direct wait's decisions against a stand-in backend: which directories are watched,
//! what a report means, when the wait ends. The same on every platform.

use super::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// What the stand-in reports at its next `collect`.
enum Next {
    Changed(u32, &'static str),
    Entry(u32, &'static str),
    From(u32, &'static str, u32),
    To(u32, &'static str, u32),
    Lost,
    Gone(u32),
}

#[derive(Default)]
struct Script {
    next_id: u32,
    /// Watch id → directory, as the "system" has them.
    live: HashMap<u32, PathBuf>,
    /// Directories whose watch cannot be set up.
    fail: HashSet<PathBuf>,
    /// The next `add` returns this id (a directory already watched under another path).
    same_as: Option<u32>,
    queue: VecDeque<Next>,
    block_fails: bool,
    blocks: usize,
}

struct Fake(Rc<RefCell<Script>>);

impl Backend for Fake {
    type Id = u32;
    const MAX_DIRS: usize = 2;

    fn new(_: &Shared) -> io::Result<Fake> {
        Ok(Fake(Rc::default()))
    }

    fn add(&mut self, dir: &Path) -> io::Result<u32> {
        let mut s = self.0.borrow_mut();
        if s.fail.contains(dir) || !dir.is_dir() {
            return Err(io::ErrorKind::NotFound.into());
        }
        if let Some(id) = s.same_as.take() {
            return Ok(id);
        }
        s.next_id += 1;
        let id = s.next_id;
        s.live.insert(id, dir.to_path_buf());
        Ok(id)
    }

    fn remove(&mut self, id: &u32) {
        self.0.borrow_mut().live.remove(id);
    }

    fn clear_signal(&mut self) {}

    fn collect(&mut self, report: &mut dyn FnMut(Report<'_, u32>)) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        while let Some(next) = s.queue.pop_front() {
            match next {
                Next::Changed(id, name) => report(Report::Changed(&id, OsStr::new(name))),
                Next::Entry(id, name) => report(Report::Entry(&id, OsStr::new(name))),
                Next::From(id, name, c) => report(Report::MovedFrom(&id, OsStr::new(name), c)),
                Next::To(id, name, c) => report(Report::MovedTo(&id, OsStr::new(name), c)),
                Next::Lost => report(Report::Lost),
                Next::Gone(id) => {
                    s.live.remove(&id);
                    report(Report::Gone(&id));
                }
            }
        }
        Ok(())
    }

    fn block(&mut self, timeout: Duration) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        s.blocks += 1;
        if s.block_fails {
            return Err(io::ErrorKind::Other.into());
        }
        std::thread::sleep(timeout.min(Duration::from_millis(2)));
        Ok(())
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    shared: Shared,
    patterns: Patterns,
    script: Rc<RefCell<Script>>,
    direct: DirectOn<Fake>,
}

/// Directories `a`, `b`, `c` under a temporary root; pattern `*/*.log`.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    for d in ["a", "b", "c"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    let pattern = root.join("*").join("*.log").to_string_lossy().into_owned();
    let patterns = Patterns::new(&[pattern], &[], Vec::new(), &root).unwrap();
    let script = Rc::new(RefCell::new(Script::default()));
    let direct = DirectOn {
        os: Fake(script.clone()),
        dirs: Dirs::default(),
    };
    Setup {
        _tmp: tmp,
        root,
        shared: Shared::default(),
        patterns,
        script,
        direct,
    }
}

impl Setup {
    fn files(&self, names: &[&str]) -> HashSet<PathBuf> {
        names.iter().map(|n| self.root.join(n)).collect()
    }

    fn sync_at(&mut self, names: &[&str], now: Instant) {
        let followed = self.files(names);
        self.shared.set_followed(followed.clone());
        self.direct
            .dirs
            .sync(&mut self.direct.os, &followed, &self.shared, now);
    }

    fn id(&self, dir: &str) -> u32 {
        self.direct.dirs.watched[&self.root.join(dir)].id
    }

    fn watched(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .script
            .borrow()
            .live
            .values()
            .map(|p| p.strip_prefix(&self.root).unwrap().display().to_string())
            .collect();
        v.sort();
        v
    }

    /// Whether notify's thread leaves modifications of `file` to the direct wait.
    fn left_to_us(&self, file: &str) -> bool {
        self.shared.is_direct(&self.root.join(file))
    }

    fn wait(&mut self, max: Duration) -> Waited {
        self.direct
            .wait_until(&self.shared, &self.patterns, Instant::now() + max)
            .unwrap()
    }

    /// Has the stand-in report `reports` (ids from `id`), then waits for them.
    fn after(&mut self, reports: impl FnOnce(&Setup) -> Vec<Next>) -> Waited {
        let reports = reports(self);
        self.script.borrow_mut().queue.extend(reports);
        self.wait(Duration::from_secs(30))
    }
}

/// Watching `a`, for `a/x.log`.
fn watching_a() -> Setup {
    let mut s = setup();
    s.sync_at(&["a/x.log"], Instant::now());
    s
}

#[test]
fn the_directories_of_followed_files_are_watched_and_left_to_us() {
    let mut s = setup();
    let now = Instant::now();
    s.sync_at(&["a/x.log", "a/y.log", "b/z.log"], now);
    assert_eq!(s.watched(), ["a", "b"]);
    assert!(s.left_to_us("a/x.log") && s.left_to_us("b/new.log"));
    assert!(!s.left_to_us("c/z.log"));
    // b no longer followed: its watch goes, and notify reports its modifications again.
    s.sync_at(&["a/x.log"], now);
    assert_eq!(s.watched(), ["a"]);
    assert!(!s.left_to_us("b/z.log"));
}

#[test]
fn beyond_the_backends_limit_notify_reports_the_rest() {
    let mut s = setup();
    let now = Instant::now();
    // The stand-in takes 2 directories (Windows: 63): the first two in path order.
    s.sync_at(&["c/1.log", "b/1.log", "a/1.log"], now);
    assert_eq!(s.watched(), ["a", "b"]);
    assert!(!s.left_to_us("c/1.log"));
    // Those watched stay watched; a freed place goes to the next directory.
    s.sync_at(&["c/1.log", "b/1.log"], now);
    assert_eq!(s.watched(), ["b", "c"]);
    assert!(s.left_to_us("c/1.log"));
}

#[test]
fn a_change_marks_followed_and_matching_files_only() {
    let mut s = watching_a();
    let w = s.after(|s| {
        let a = s.id("a");
        vec![
            Next::Changed(a, "x.log"),
            Next::Changed(a, "new.log"),
            Next::Changed(a, "notes.txt"),
            // A report for a watch no longer known (removed meanwhile) is ignored.
            Next::Changed(99, "x.log"),
        ]
    });
    assert_eq!(
        w,
        Waited {
            pending: true,
            direct: true,
            lost: 0
        }
    );
    let p = s.shared.take();
    assert_eq!(p.dirty, s.files(&["a/x.log", "a/new.log"]));
    assert!(!p.rescan && !p.woken);
}

/// Creations, deletions and attribute changes of followed or matching files, and of
/// directories on the way to a pattern's files, ask for a rescan (notify's thread no longer
/// watches these directories); none is a direct change. (Under the recursive base of
/// `*/*.log` every entry may concern the patterns.)
#[test]
fn an_entry_of_ours_asks_for_a_rescan() {
    let mut s = watching_a();
    let a = s.id("a");
    // A report for a watch no longer known is ignored.
    s.script
        .borrow_mut()
        .queue
        .extend([Next::Entry(99, "x.log")]);
    assert!(!s.wait(Duration::from_millis(5)).pending);
    for name in ["x.log", "new.log"] {
        let w = s.after(|_| vec![Next::Entry(a, name)]);
        assert!(w.pending && !w.direct, "{name}");
        let p = s.shared.take();
        assert!(p.rescan && p.dirty.is_empty(), "{name}");
    }
    // A directory made at the root, on the way to `*/*.log`.
    let mut root = watching_a();
    root.sync_at(&["a/x.log", "b/y.log"], Instant::now());
    let b = root.id("b");
    root.direct.dirs.by_id.insert(b, root.root.clone());
    assert!(root.after(|_| vec![Next::Entry(b, "d")]).pending);
    assert!(root.shared.take().rescan);
}

/// A rename's two halves are paired by their cookie: a followed file renamed to a name the
/// patterns do not match is noted where it went (read to its end there); every rename of
/// ours asks for a rescan.
#[test]
fn a_rename_is_paired_and_tells_where_a_followed_file_went() {
    let mut s = watching_a();
    let a = s.id("a");
    let w = s.after(|_| vec![Next::From(a, "x.log", 7), Next::To(a, "x.log.1", 7)]);
    assert!(w.pending && !w.direct);
    let p = s.shared.take();
    assert!(p.rescan);
    assert_eq!(p.moved, [s.root.join("a/x.log.1")]);
    // Halves of different renames: each rescans, nothing is noted.
    s.after(|_| vec![Next::From(a, "x.log", 8), Next::To(a, "x.log.2", 9)]);
    let p = s.shared.take();
    assert!(p.rescan && p.moved.is_empty());
    // Into the patterns (`old.txt` → `new.log`): a rescan, nothing noted.
    s.after(|_| vec![Next::From(a, "old.txt", 10), Next::To(a, "new.log", 10)]);
    let p = s.shared.take();
    assert!(p.rescan && p.moved.is_empty());
    // Of a watch no longer known: ignored, and no half is kept.
    s.script
        .borrow_mut()
        .queue
        .extend([Next::From(99, "x.log", 11), Next::To(99, "x.log.1", 11)]);
    assert!(!s.wait(Duration::from_millis(5)).pending);
    assert!(s.direct.dirs.rename_from.is_none());
}

/// A directory the direct wait watches is published (notify leaves it alone), and `sync`
/// says whether that set changed.
#[test]
fn sync_says_whether_the_watched_directories_changed() {
    let mut s = setup();
    let now = Instant::now();
    let followed = s.files(&["a/x.log"]);
    assert!(
        s.direct
            .dirs
            .sync(&mut s.direct.os, &followed, &s.shared, now)
    );
    assert!(s.shared.is_direct_dir(&s.root.join("a")));
    assert!(
        !s.direct
            .dirs
            .sync(&mut s.direct.os, &followed, &s.shared, now)
    );
    assert!(
        s.direct
            .dirs
            .sync(&mut s.direct.os, &HashSet::new(), &s.shared, now)
    );
    assert!(!s.shared.is_direct_dir(&s.root.join("a")));
}

#[test]
fn lost_notifications_ask_for_a_rescan() {
    let mut s = watching_a();
    let w = s.after(|_| vec![Next::Lost]);
    assert!(w.pending && !w.direct);
    assert_eq!(w.lost, 1);
    assert!(s.shared.take().rescan);
    // The watch stays.
    assert_eq!(s.watched(), ["a"]);
    assert!(s.left_to_us("a/x.log"));
}

#[test]
fn a_watch_that_ends_is_dropped_rescanned_and_tried_again_later() {
    let mut s = watching_a();
    let w = s.after(|s| vec![Next::Gone(s.id("a"))]);
    let t0 = Instant::now();
    assert!(w.pending && !w.direct);
    assert!(s.shared.take().rescan);
    assert!(!s.left_to_us("a/x.log"), "notify reports it meanwhile");
    // Not before RETRY (no busy loop of watches that end at once) …
    s.sync_at(&["a/x.log"], t0 + RETRY / 2);
    assert!(s.watched().is_empty());
    // … then again.
    s.sync_at(&["a/x.log"], t0 + RETRY);
    assert_eq!(s.watched(), ["a"]);
    assert!(s.left_to_us("a/x.log"));
}

#[test]
fn a_directory_that_cannot_be_watched_is_left_to_notify_and_tried_again_later() {
    let mut s = setup();
    let t0 = Instant::now();
    s.script.borrow_mut().fail.insert(s.root.join("a"));
    s.sync_at(&["a/x.log", "b/y.log"], t0);
    assert_eq!(s.watched(), ["b"]);
    assert!(!s.left_to_us("a/x.log"));
    s.script.borrow_mut().fail.clear();
    s.sync_at(&["a/x.log", "b/y.log"], t0 + RETRY / 2);
    assert_eq!(s.watched(), ["b"]);
    s.sync_at(&["a/x.log", "b/y.log"], t0 + RETRY);
    assert_eq!(s.watched(), ["a", "b"]);
}

#[test]
fn a_directory_made_anew_at_its_path_is_watched_anew() {
    let mut s = setup();
    let t0 = Instant::now();
    s.sync_at(&["a/x.log"], t0);
    let old = s.id("a");
    // Renamed away (the watch follows the old directory) and made again.
    std::fs::rename(s.root.join("a"), s.root.join("a.old")).unwrap();
    std::fs::create_dir(s.root.join("a")).unwrap();
    s.sync_at(&["a/x.log"], t0);
    assert_ne!(s.id("a"), old);
    assert_eq!(s.script.borrow().live.len(), 1, "the old watch was removed");
    assert!(s.left_to_us("a/x.log"));
    // Gone altogether: not watched, notify reports (the rename) meanwhile.
    std::fs::remove_dir(s.root.join("a")).unwrap();
    s.sync_at(&["a/x.log"], t0);
    assert!(s.watched().is_empty());
    assert!(!s.left_to_us("a/x.log"));
}

#[test]
fn the_same_directory_under_a_second_path_keeps_its_first_watch() {
    let mut s = setup();
    let t0 = Instant::now();
    s.sync_at(&["a/x.log"], t0);
    let a = s.id("a");
    s.script.borrow_mut().same_as = Some(a);
    s.sync_at(&["a/x.log", "b/y.log"], t0);
    assert_eq!(s.watched(), ["a"]);
    assert!(s.left_to_us("a/x.log") && !s.left_to_us("b/y.log"));
    assert_eq!(s.direct.dirs.by_id[&a], s.root.join("a"));
}

#[test]
fn the_wait_ends_at_its_deadline_for_a_wake_and_on_failure() {
    let mut s = watching_a();
    let start = Instant::now();
    let w = s.wait(Duration::from_millis(30));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(w, Waited::default());
    assert!(s.script.borrow().blocks >= 1);
    // Something pending (recorded by notify's thread, or a wake) ends it at once.
    s.shared.request_rescan();
    let blocks = s.script.borrow().blocks;
    assert!(s.wait(Duration::from_secs(30)).pending);
    assert_eq!(s.script.borrow().blocks, blocks, "no block when pending");
    s.shared.take();
    // A failing wait is an error for the tailer (it goes back to notify's path).
    s.script.borrow_mut().block_fails = true;
    assert!(
        s.direct
            .wait_until(
                &s.shared,
                &s.patterns,
                Instant::now() + Duration::from_secs(30)
            )
            .is_err()
    );
}
