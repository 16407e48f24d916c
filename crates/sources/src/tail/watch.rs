//! Wake-ups: file-system notifications (via `notify`), explicit wakes, and the set of watched
//! directories.
//!
//! The `notify` callback runs on notify's own thread. It filters events (only paths that match
//! the patterns, followed files, and directories on the way to a pattern's directory count),
//! records what happened in [`Pending`] and signals a condition variable that
//! [`Shared::wait_until`] sleeps on, and the signal of a tailer blocked in its own wait
//! (`direct/`). Nothing is read on that thread. The directories the tailer's own wait
//! watches are not watched here (unless a recursive watch covers them; their modifications
//! are then left to that wait).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::identity::FileKey;
use super::pattern::Patterns;

/// Most distinct changed paths remembered between two reads; beyond that everything is read.
const MAX_DIRTY: usize = 4096;

/// What happened since the last [`Shared::take`].
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// [`Waker::wake`] was called.
    pub woken: bool,
    /// Files may have appeared, vanished or been renamed, or notifications were lost.
    pub rescan: bool,
    /// Files whose content changed.
    pub dirty: HashSet<PathBuf>,
    /// New paths of files renamed from a followed or matching path to one the patterns do
    /// not match (read to their end even if they were never opened).
    pub moved: Vec<PathBuf>,
}

impl Pending {
    fn is_set(&self) -> bool {
        self.woken || self.rescan || !self.dirty.is_empty()
    }
}

/// State shared between the tailer, its wakers and the notification thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pending: Mutex<Pending>,
    cond: Condvar,
    /// Current paths of followed files (renamed-away files no longer match the patterns).
    followed: Mutex<HashSet<PathBuf>>,
    /// The old name of a rename reported in two untracked halves, until its new name comes.
    rename_from: Mutex<Option<PathBuf>>,
    /// Directories whose modifications the tailer's own wait reports (`direct/`): notify's
    /// thread leaves those to it.
    direct_dirs: Mutex<HashSet<PathBuf>>,
    /// Raised after every update, for a tailer blocked in its own wait (`direct/`: a byte
    /// to a pipe on Linux, an event set on Windows).
    signal: std::sync::OnceLock<Signal>,
}

/// What wakes a tailer blocked in its own wait; set once, by `direct/`.
struct Signal(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signal")
    }
}

use watchpost_support::lock;

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut lock(&self.pending));
        self.cond.notify_all();
        if let Some(signal) = self.signal.get() {
            (signal.0)();
        }
    }

    /// What [`update`](Shared::update) raises besides the condition variable (`direct/`);
    /// the first one set stays.
    pub(crate) fn set_signal(&self, raise: impl Fn() + Send + Sync + 'static) {
        let _ = self.signal.set(Signal(Box::new(raise)));
    }

    /// The directories the tailer's own wait watches (`direct/`).
    pub(crate) fn set_direct_dirs(&self, dirs: HashSet<PathBuf>) {
        *lock(&self.direct_dirs) = dirs;
    }

    /// Whether the tailer's own wait watches the directory `dir` (`direct/`).
    pub(crate) fn is_direct_dir(&self, dir: &Path) -> bool {
        lock(&self.direct_dirs).contains(dir)
    }

    /// Whether modifications of `path` are left to the tailer's own wait.
    pub(crate) fn is_direct(&self, path: &Path) -> bool {
        path.parent()
            .is_some_and(|d| lock(&self.direct_dirs).contains(d))
    }

    /// Whether something is pending (without taking it).
    pub(crate) fn is_pending(&self) -> bool {
        lock(&self.pending).is_set()
    }

    /// Marks a file changed, from the waiting thread itself (nobody to wake).
    pub(crate) fn mark_dirty(&self, path: PathBuf) {
        let mut p = lock(&self.pending);
        if p.dirty.len() < MAX_DIRTY {
            p.dirty.insert(path);
        } else {
            p.rescan = true;
        }
    }

    /// Asks for a rescan, from the waiting thread itself (nobody to wake).
    pub(crate) fn mark_rescan(&self) {
        lock(&self.pending).rescan = true;
    }

    /// A rename from `from` to `to`: a followed or matching file renamed to a path the
    /// patterns do not match is noted in [`Pending::moved`] (so it is read to its end even if
    /// it was never opened); any rename of ours asks for a rescan. `wake`: reported by
    /// another thread than the waiting one (notify's), which is woken.
    pub(crate) fn note_rename(&self, patterns: &Patterns, from: &Path, to: &Path, wake: bool) {
        let ours = |p: &Path| patterns.matches(p) || self.is_followed(p);
        let moved = ours(from) && !patterns.matches(to);
        if !moved && !ours(from) && !ours(to) {
            return;
        }
        let note = |pending: &mut Pending| {
            if moved && pending.moved.len() < MAX_DIRTY {
                pending.moved.push(to.to_path_buf());
            }
            pending.rescan = true;
        };
        if wake {
            self.update(note);
        } else {
            note(&mut lock(&self.pending));
        }
    }

    /// Takes what happened, leaving nothing pending.
    pub(crate) fn take(&self) -> Pending {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Marks everything for a rescan (used after errors and at start).
    pub(crate) fn request_rescan(&self) {
        self.update(|p| p.rescan = true);
    }

    /// Sleeps until something is pending or `deadline` passes. Returns whether something is.
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        let mut p = lock(&self.pending);
        loop {
            if p.is_set() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            p = match self.cond.wait_timeout(p, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Replaces the set of followed paths the notification filter accepts.
    pub(crate) fn set_followed(&self, paths: HashSet<PathBuf>) {
        *lock(&self.followed) = paths;
    }

    /// Files the filter should accept besides pattern matches.
    pub(crate) fn is_followed(&self, path: &Path) -> bool {
        lock(&self.followed).contains(path)
    }
}

/// Makes [`Tailer::wait`](super::Tailer::wait) return at once (for shutdown). Cloneable, `Send`.
#[derive(Clone, Debug)]
pub struct Waker {
    shared: Arc<Shared>,
}

impl Waker {
    pub(crate) fn new(shared: Arc<Shared>) -> Waker {
        Waker { shared }
    }

    /// Wakes the tailer's `wait` (now, or its next call if it is not waiting).
    pub fn wake(&self) {
        self.shared.update(|p| p.woken = true);
    }
}

/// Turns one notification into pending work.
fn on_event(shared: &Shared, patterns: &Patterns, res: notify::Result<Event>) {
    let ev = match res {
        Ok(ev) => ev,
        Err(e) => {
            tracing::debug!(error = %e, "tail: notification error, rescanning");
            return shared.request_rescan();
        }
    };
    if ev.need_rescan() {
        return shared.request_rescan();
    }
    let ours = |p: &Path| patterns.matches(p) || shared.is_followed(p);
    match ev.kind {
        EventKind::Access(_) => {}
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
            let hits: Vec<&PathBuf> = ev
                .paths
                .iter()
                .filter(|p| ours(p) && !shared.is_direct(p))
                .collect();
            if !hits.is_empty() {
                shared.update(|pending| {
                    for p in hits {
                        if pending.dirty.len() < MAX_DIRTY {
                            pending.dirty.insert(p.clone());
                        } else {
                            pending.rescan = true;
                        }
                    }
                });
            }
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            if let [from, to] = &ev.paths[..] {
                on_rename(shared, patterns, from, to);
            } else if ev.paths.iter().any(|p| ours(p)) {
                shared.request_rescan();
            }
        }
        // ReadDirectoryChangesW (Windows) reports a rename as its old name directly followed by
        // its new name, without the tracker inotify's halves carry (inotify also sends `Both`).
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) if ev.tracker().is_none() => {
            *lock(&shared.rename_from) = ev.paths.first().cloned();
            if ev.paths.iter().any(|p| ours(p)) {
                shared.request_rescan();
            }
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) if ev.tracker().is_none() => {
            let from = lock(&shared.rename_from).take();
            match (from, &ev.paths[..]) {
                (Some(from), [to]) => on_rename(shared, patterns, &from, to),
                _ => {
                    if ev.paths.iter().any(|p| ours(p) || patterns.concerns_dir(p)) {
                        shared.request_rescan();
                    }
                }
            }
        }
        EventKind::Modify(ModifyKind::Metadata(_)) => {
            if ev.paths.iter().any(|p| ours(p)) {
                shared.request_rescan();
            }
        }
        _ => {
            // Create, remove, rename, other: files or directories may have come or gone.
            if ev.paths.is_empty() || ev.paths.iter().any(|p| ours(p) || patterns.concerns_dir(p)) {
                shared.request_rescan();
            }
        }
    }
}

/// A rename from `from` to `to`, reported by notify's thread.
fn on_rename(shared: &Shared, patterns: &Patterns, from: &Path, to: &Path) {
    shared.note_rename(patterns, from, to, true);
}

/// The watched directories: each pattern's base directory, or its nearest existing ancestor
/// while the base does not exist yet; not those the tailer's own wait watches (`direct/`)
/// unless watched recursively (a recursive watch also covers the subdirectories).
pub(crate) struct Watches {
    watcher: Option<RecommendedWatcher>,
    shared: Arc<Shared>,
    /// Watched directory → (recursive, identity when watched).
    active: HashMap<PathBuf, (bool, Option<FileKey>)>,
    /// Directories whose watch failed (warned once).
    failed: HashSet<PathBuf>,
}

impl Watches {
    /// Starts the notification thread. Without one (inotify limits, unsupported platform) the
    /// tailer still works by polling; the error is returned for logging.
    pub(crate) fn new(
        shared: Arc<Shared>,
        patterns: Arc<Patterns>,
    ) -> (Watches, Option<notify::Error>) {
        let handler = {
            let shared = shared.clone();
            move |res| on_event(&shared, &patterns, res)
        };
        let (watcher, error) = match RecommendedWatcher::new(handler, notify::Config::default()) {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e)),
        };
        (
            Watches {
                watcher,
                shared,
                active: HashMap::new(),
                failed: HashSet::new(),
            },
            error,
        )
    }

    /// Whether notifications work at all.
    pub(crate) fn enabled(&self) -> bool {
        self.watcher.is_some()
    }

    /// Brings the watches in line with the patterns' directories and the directories the
    /// tailer's own wait watches. Returns new failures, and whether a directory was watched
    /// anew (what happened in it before is not reported: rescan).
    pub(crate) fn refresh(&mut self, patterns: &Patterns) -> Refreshed {
        let mut out = Refreshed::default();
        let Some(watcher) = self.watcher.as_mut() else {
            return out;
        };
        let mut desired: HashMap<PathBuf, bool> = HashMap::new();
        for (base, recursive) in patterns.bases() {
            let (dir, recursive) = if base.is_dir() {
                (base.to_path_buf(), recursive)
            } else {
                match base.ancestors().skip(1).find(|a| a.is_dir()) {
                    Some(a) => (a.to_path_buf(), false),
                    None => continue,
                }
            };
            *desired.entry(dir).or_insert(false) |= recursive;
        }
        // The tailer's own wait reports everything in the directories it watches; a
        // directory is left to it entirely unless watched recursively.
        desired.retain(|dir, recursive| *recursive || !self.shared.is_direct_dir(dir));
        self.active.retain(|dir, _| {
            let keep = desired.contains_key(dir);
            if !keep {
                let _ = watcher.unwatch(dir);
            }
            keep
        });
        for (dir, recursive) in desired {
            let key = FileKey::of_path(&dir).ok().map(|(key, _)| key);
            if self.active.get(&dir) == Some(&(recursive, key)) {
                continue;
            }
            if self.active.remove(&dir).is_some() {
                let _ = watcher.unwatch(&dir);
            }
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match watcher.watch(&dir, mode) {
                Ok(()) => {
                    self.failed.remove(&dir);
                    self.active.insert(dir, (recursive, key));
                    out.added = true;
                }
                Err(e) => {
                    if self.failed.insert(dir.clone()) {
                        tracing::warn!(dir = %dir.display(), error = %e, "tail: cannot watch directory; polling it");
                        out.errors += 1;
                    }
                }
            }
        }
        out
    }

    /// The directories notify watches now (tests).
    #[cfg(test)]
    pub(crate) fn watched(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.active.keys().cloned().collect();
        v.sort();
        v
    }
}

/// What [`Watches::refresh`] did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Refreshed {
    /// Directories that could not be watched (first failure of each).
    pub errors: u64,
    /// A directory was watched anew.
    pub added: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wake_interrupts_a_wait_and_is_consumed() {
        let shared = Arc::new(Shared::default());
        let waker = Waker::new(shared.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        assert!(shared.wait_until(Instant::now() + Duration::from_secs(30)));
        t.join().unwrap();
        assert!(shared.take().woken);
        assert!(!shared.wait_until(Instant::now() + Duration::from_millis(5)));
    }

    /// Every update from another thread raises the signal (after recording it); marks
    /// made by the waiting thread itself do not.
    #[test]
    fn updates_raise_the_signal_and_own_marks_do_not() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let shared = Arc::new(Shared::default());
        let raised = Arc::new(AtomicUsize::new(0));
        let (count, seen) = (raised.clone(), shared.clone());
        shared.set_signal(move || {
            assert!(lock(&seen.pending).is_set(), "recorded before the signal");
            count.fetch_add(1, Ordering::SeqCst);
        });
        shared.request_rescan();
        Waker::new(shared.clone()).wake();
        assert_eq!(raised.load(Ordering::SeqCst), 2);
        shared.take();
        shared.mark_dirty(PathBuf::from("a.log"));
        shared.mark_rescan();
        assert_eq!(raised.load(Ordering::SeqCst), 2);
        assert!(shared.is_pending());
    }

    /// Modifications in a directory the tailer's own wait watches are left to it, as
    /// inotify (`Data`) and `ReadDirectoryChangesW` (`Any`) report them; elsewhere, and
    /// anything but a modification, still count.
    #[test]
    fn modifications_in_directly_watched_directories_are_left_to_the_tailer() {
        let dir = std::env::temp_dir().join("watchpost-watch-direct");
        let other = dir.join("other");
        let pattern = dir.join("**").join("*.log").to_string_lossy().into_owned();
        let patterns = Patterns::new(&[pattern], &[], Vec::new(), &dir).unwrap();
        let shared = Shared::default();
        shared.set_direct_dirs(HashSet::from([dir.clone()]));
        let event = |kind, path: PathBuf| Ok(Event::new(kind).add_path(path));
        for kind in [
            ModifyKind::Data(notify::event::DataChange::Any),
            ModifyKind::Any,
        ] {
            on_event(
                &shared,
                &patterns,
                event(EventKind::Modify(kind), dir.join("a.log")),
            );
            assert!(!shared.take().is_set(), "{kind:?}");
            on_event(
                &shared,
                &patterns,
                event(EventKind::Modify(kind), other.join("b.log")),
            );
            assert_eq!(shared.take().dirty, HashSet::from([other.join("b.log")]));
        }
        let created = EventKind::Create(notify::event::CreateKind::Any);
        on_event(&shared, &patterns, event(created, dir.join("c.log")));
        assert!(shared.take().rescan);
    }

    /// A rename in two untracked halves (as `ReadDirectoryChangesW` reports it) tells where
    /// the file went, like inotify's `Both`; tracked halves (inotify) are left to `Both`.
    #[test]
    fn rename_halves_without_tracker_are_paired() {
        let dir = std::env::temp_dir().join("watchpost-watch-test");
        let pattern = dir.join("*.Log").to_string_lossy().into_owned();
        let patterns = Patterns::new(&[pattern], &[], Vec::new(), &dir).unwrap();
        let shared = Shared::default();
        let (from, to) = (dir.join("11212026.Log"), dir.join("11212026.Log.1"));
        let half = |mode, path: &PathBuf| {
            Ok(Event::new(EventKind::Modify(ModifyKind::Name(mode))).add_path(path.clone()))
        };
        on_event(&shared, &patterns, half(RenameMode::From, &from));
        on_event(&shared, &patterns, half(RenameMode::To, &to));
        let pending = shared.take();
        assert_eq!(pending.moved, std::slice::from_ref(&to));
        assert!(pending.rescan);
        // A new name without an old one (moved in from elsewhere) only rescans if it matches.
        on_event(&shared, &patterns, half(RenameMode::To, &to));
        assert!(!shared.take().is_set());
        let tracked = |mode, path: &PathBuf| half(mode, path).map(|e: Event| e.set_tracker(7));
        on_event(&shared, &patterns, tracked(RenameMode::From, &from));
        on_event(&shared, &patterns, tracked(RenameMode::To, &to));
        assert!(shared.take().moved.is_empty());
        on_event(
            &shared,
            &patterns,
            Ok(
                Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
                    .add_path(from.clone())
                    .add_path(to.clone()),
            ),
        );
        assert_eq!(shared.take().moved, [to]);
    }
}
