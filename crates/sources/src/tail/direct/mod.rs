//! The tailer's thread waits on file-system notifications itself (Linux and Windows).
//!
//! `notify` reads the platform's notifications on a thread of its own and hands each event
//! to the tailer through a condition variable: two thread wake-ups between a write to a
//! followed file and the tailer reading it. The tailer instead watches the directories of
//! its followed files itself and blocks on those watches and on a wake signal; a change is
//! marked and read on the same thread, one wake-up in all (what rsyslog's imfile does).
//!
//! * Linux (`linux.rs`): an inotify instance of the tailer's own with `IN_MODIFY`,
//!   `IN_ATTRIB`, `IN_CREATE`, `IN_DELETE`, `IN_MOVED_FROM`, `IN_MOVED_TO`,
//!   `IN_DELETE_SELF` and `IN_MOVE_SELF` on each directory, and a wake pipe, in one
//!   `poll()`; each is read only when that `poll()` found it readable, the queue again
//!   only while a read filled the buffer.
//! * Windows (`windows.rs`): per directory a handle opened with `FILE_FLAG_BACKUP_SEMANTICS
//!   | FILE_FLAG_OVERLAPPED` and an overlapped `ReadDirectoryChangesW` for file and
//!   directory names, size and last-write changes that sets an event, and a wake event, in
//!   one `WaitForMultipleObjects`; a completed read is decoded on the tailer's thread, and
//!   the next one started there before the following wait (the system keeps the changes in
//!   between for it).
//! * Elsewhere there is no direct wait: `notify`'s thread reports everything.
//!
//! # Who watches what
//!
//! The directories watched here are not watched by `notify` at all (its inotify mask
//! includes `IN_MODIFY` and cannot be narrowed: were it watching too, every write would wake
//! its thread as well). `notify` keeps the pattern directories that hold no followed file
//! yet, the directories on the way to a pattern's base while it does not exist, recursive
//! pattern directories (its recursive watch also covers their subdirectories; it skips
//! modifications in the directories watched here), and any directory this wait could not
//! watch. Its events and [`Waker::wake`](super::Waker::wake) raise the wake signal after
//! recording what happened, so the wait ends for them too. Each time the set of directories
//! watched here changes, `notify`'s watches are brought in line (`Tailer::rescan` and
//! `Tailer::publish_paths`): a directory is watched here before `notify` lets it go, and
//! when it goes back to `notify` a rescan covers the moment neither watched it. Should the
//! wait itself fail, the tailer drops it and `notify` watches every directory again.
//!
//! This file decides, alike on both platforms (and is tested on both with a stand-in
//! backend); the platform files only make the calls:
//! * **which directories**: those of the followed files. One whose identity changed
//!   (renamed away and made again) is watched anew; one whose watch could not be set up or
//!   ended is tried again after [`RETRY`], `notify` watching it meanwhile.
//! * **what a report means**, as `notify`'s events mean for its directories (`watch.rs`): a
//!   change of a followed or matching file's content marks that file; a creation, deletion
//!   or attribute change of such a file, or of a directory on the way to a pattern's files,
//!   asks for a rescan; a rename does too, and its two halves (paired by inotify's cookie;
//!   on Windows the new name directly follows the old one) tell where a followed file went
//!   when its new name is outside the patterns (it is read to its end there); notifications
//!   lost (an inotify queue overflow; a `ReadDirectoryChangesW` buffer
//!   overflow, reported as zero bytes or `ERROR_NOTIFY_ENUM_DIR`; a read cancelled because
//!   the thread that started it ended) ask for a rescan, which reads every file; a watch
//!   that ended (its directory went away or, on Linux, was renamed) is dropped and asks for
//!   a rescan.
//! * **when the wait ends**: as soon as something is pending, or at the deadline. Should
//!   the wait itself fail, the tailer drops the direct wait and goes back to `notify`'s.
//!
//! # Windows: at most 63 directories per tailer
//!
//! `WaitForMultipleObjects` takes at most 64 handles, and one is the wake event. A tailer
//! whose followed files lie in more than 63 directories watches 63 itself (those it has,
//! then in path order) and leaves the others to `notify` (and the poll): one thread
//! hand-off more for those, nothing lost. An I/O completion port would lift the limit, but
//! each source has a tailer of its own and SEP's logs lie in a handful of directories,
//! while one event per directory keeps a removed watch simple: its cancelled read is
//! awaited on the spot (`GetOverlappedResult`) before its buffer is freed, instead of
//! arriving later through the port among the other directories' completions.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::hash::Hash;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::identity::FileKey;
use super::pattern::Patterns;
use super::watch::Shared;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(any(windows, test))]
mod rdcw;
#[cfg(windows)]
mod windows;

#[cfg(target_os = "linux")]
use linux::Inotify as Os;
#[cfg(not(any(target_os = "linux", windows)))]
use unsupported::Unsupported as Os;
#[cfg(windows)]
use windows::DirChanges as Os;

/// A directory whose watch failed or ended is not tried again before this.
const RETRY: Duration = Duration::from_secs(1);

/// The tailer's own wait on this platform. See the [module documentation](self).
pub(crate) type Direct = DirectOn<Os>;

/// What a backend reports.
pub(crate) enum Report<'a, Id> {
    /// The content of a file in the watched directory `Id` changed; its name.
    Changed(&'a Id, &'a OsStr),
    /// An entry of the directory was created, deleted or had its attributes changed.
    Entry(&'a Id, &'a OsStr),
    /// An entry was renamed away from this name; the cookie pairs it with its
    /// [`MovedTo`](Report::MovedTo) (inotify's cookie; 0 where the new name directly
    /// follows the old one, as `ReadDirectoryChangesW` reports it).
    MovedFrom(&'a Id, &'a OsStr, u32),
    /// An entry was renamed to this name.
    MovedTo(&'a Id, &'a OsStr, u32),
    /// Notifications were lost.
    Lost,
    /// The watch ended (the directory went away or was renamed, or its watch broke); the
    /// backend has let it go.
    Gone(&'a Id),
}

/// One platform's directory watches and wake signal.
pub(crate) trait Backend: Sized {
    /// Names one directory's watch.
    type Id: Clone + Eq + Hash;
    /// Most directories watched at once.
    const MAX_DIRS: usize;
    /// Sets up the wait and gives `shared` the signal to raise after each update.
    fn new(shared: &Shared) -> io::Result<Self>;
    /// Starts watching `dir` for changes of its entries and of the files in it.
    fn add(&mut self, dir: &Path) -> io::Result<Self::Id>;
    /// Stops watching.
    fn remove(&mut self, id: &Self::Id);
    /// Forgets the wake signals raised so far (before what is pending is looked at).
    fn clear_signal(&mut self);
    /// Hands what the watches reported to `report`, without blocking. An error means the
    /// direct wait cannot go on.
    fn collect(&mut self, report: &mut dyn FnMut(Report<'_, Self::Id>)) -> io::Result<()>;
    /// Blocks until a watch reports, the signal is raised or `timeout` passed.
    fn block(&mut self, timeout: Duration) -> io::Result<()>;
}

/// How one [`DirectOn::wait_until`] ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Waited {
    /// Something is pending.
    pub pending: bool,
    /// A followed or matching file's change was reported to this wait itself.
    pub direct: bool,
    /// Times notifications were lost (each asked for a rescan).
    pub lost: u64,
}

/// The tailer's own wait on backend `B`.
pub(crate) struct DirectOn<B: Backend> {
    os: B,
    dirs: Dirs<B::Id>,
}

impl<B: Backend> std::fmt::Debug for DirectOn<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("dirs", &self.dirs.watched.len())
            .finish()
    }
}

impl<B: Backend> DirectOn<B> {
    /// Sets up the backend; its signal goes to `shared`.
    pub(crate) fn new(shared: &Shared) -> io::Result<DirectOn<B>> {
        Ok(DirectOn {
            os: B::new(shared)?,
            dirs: Dirs::default(),
        })
    }

    /// Watches the directories of `followed` (files being read); tells `shared` which
    /// directories notify may leave to us. Returns whether that set changed.
    pub(crate) fn sync(&mut self, followed: &HashSet<PathBuf>, shared: &Shared) -> bool {
        self.dirs
            .sync(&mut self.os, followed, shared, Instant::now())
    }

    /// Waits until something is pending or `deadline` passes; changes of followed files
    /// are marked here.
    pub(crate) fn wait_until(
        &mut self,
        shared: &Shared,
        patterns: &Patterns,
        deadline: Instant,
    ) -> io::Result<Waited> {
        let mut out = Waited::default();
        loop {
            let now = Instant::now();
            let dirs = &mut self.dirs;
            self.os
                .collect(&mut |r| dirs.report(r, shared, patterns, now, &mut out))?;
            if !shared.is_pending() {
                if now >= deadline {
                    return Ok(out);
                }
                // Signals raised until here are answered by what is pending (checked
                // again below); one raised after this ends the block. Cleared only now,
                // so a wait that ends for a change does not wait for it.
                self.os.clear_signal();
            }
            if shared.is_pending() {
                out.pending = true;
                return Ok(out);
            }
            self.os.block(deadline - now)?;
        }
    }
}

/// A watched directory.
struct Watched<Id> {
    id: Id,
    /// Its identity when the watch was set up.
    key: Option<FileKey>,
}

/// Which directories are watched, and what their reports mean.
struct Dirs<Id> {
    watched: HashMap<PathBuf, Watched<Id>>,
    by_id: HashMap<Id, PathBuf>,
    /// Directories whose watch could not be set up or ended → when.
    failed: HashMap<PathBuf, Instant>,
    /// More directories were wanted than the backend can watch (logged once).
    capped: bool,
    /// The old name of the last rename reported, until its new name comes.
    rename_from: Option<(u32, PathBuf)>,
}

impl<Id> Default for Dirs<Id> {
    fn default() -> Dirs<Id> {
        Dirs {
            watched: HashMap::new(),
            by_id: HashMap::new(),
            failed: HashMap::new(),
            capped: false,
            rename_from: None,
        }
    }
}

fn key_of(dir: &Path) -> Option<FileKey> {
    FileKey::of_path(dir).ok().map(|(key, _)| key)
}

impl<Id: Clone + Eq + Hash> Dirs<Id> {
    fn sync<B: Backend<Id = Id>>(
        &mut self,
        os: &mut B,
        followed: &HashSet<PathBuf>,
        shared: &Shared,
        now: Instant,
    ) -> bool {
        let wanted: BTreeSet<&Path> = followed.iter().filter_map(|p| p.parent()).collect();
        // Drop what is no longer wanted, or no longer the directory at its path.
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(dir, w)| !wanted.contains(dir.as_path()) || key_of(dir) != w.key)
            .map(|(dir, _)| dir.clone())
            .collect();
        let mut changed = !stale.is_empty();
        for dir in stale {
            if let Some(w) = self.watched.remove(&dir) {
                self.by_id.remove(&w.id);
                os.remove(&w.id);
            }
        }
        self.failed.retain(|dir, _| wanted.contains(dir.as_path()));
        for dir in wanted {
            if self.watched.contains_key(dir)
                || self
                    .failed
                    .get(dir)
                    .is_some_and(|t| now.duration_since(*t) < RETRY)
            {
                continue;
            }
            if self.watched.len() >= B::MAX_DIRS {
                if !self.capped {
                    self.capped = true;
                    tracing::debug!(
                        max = B::MAX_DIRS,
                        "tail: more directories than the direct wait takes; notify reports the others"
                    );
                }
                break;
            }
            let key = key_of(dir);
            match os.add(dir) {
                Ok(id) if !self.by_id.contains_key(&id) => {
                    self.failed.remove(dir);
                    self.by_id.insert(id.clone(), dir.to_path_buf());
                    self.watched.insert(dir.to_path_buf(), Watched { id, key });
                    changed = true;
                }
                Ok(_) => {
                    // The same directory under another path (a link): its watch reports
                    // the other name; notify reports this one.
                    self.failed.insert(dir.to_path_buf(), now);
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "tail: no direct watch");
                    self.failed.insert(dir.to_path_buf(), now);
                }
            }
        }
        if changed {
            self.publish(shared);
        }
        changed
    }

    fn publish(&self, shared: &Shared) {
        shared.set_direct_dirs(self.watched.keys().cloned().collect());
    }

    fn report(
        &mut self,
        report: Report<'_, Id>,
        shared: &Shared,
        patterns: &Patterns,
        now: Instant,
        out: &mut Waited,
    ) {
        let ours = |p: &Path| patterns.matches(p) || shared.is_followed(p);
        match report {
            Report::Changed(id, name) => {
                let Some(dir) = self.by_id.get(id) else {
                    return;
                };
                let path = dir.join(name);
                if ours(&path) {
                    shared.mark_dirty(path);
                    out.direct = true;
                }
            }
            Report::Entry(id, name) => {
                // Created, deleted, attributes changed: files or directories may have come
                // or gone (what notify's thread reports for the other directories).
                let Some(dir) = self.by_id.get(id) else {
                    return;
                };
                let path = dir.join(name);
                if ours(&path) || patterns.concerns_dir(&path) {
                    shared.mark_rescan();
                }
            }
            Report::MovedFrom(id, name, cookie) => {
                let Some(dir) = self.by_id.get(id) else {
                    return;
                };
                let path = dir.join(name);
                if ours(&path) || patterns.concerns_dir(&path) {
                    shared.mark_rescan();
                }
                self.rename_from = Some((cookie, path));
            }
            Report::MovedTo(id, name, cookie) => {
                let Some(dir) = self.by_id.get(id) else {
                    return;
                };
                let to = dir.join(name);
                match self.rename_from.take() {
                    Some((c, from)) if c == cookie => {
                        shared.note_rename(patterns, &from, &to, false);
                    }
                    _ => {}
                }
                if ours(&to) || patterns.concerns_dir(&to) {
                    shared.mark_rescan();
                }
            }
            Report::Lost => {
                out.lost += 1;
                shared.mark_rescan();
            }
            Report::Gone(id) => {
                let Some(dir) = self.by_id.remove(id) else {
                    return;
                };
                tracing::debug!(dir = %dir.display(), "tail: direct watch ended; rescanning");
                self.watched.remove(&dir);
                self.failed.insert(dir, now);
                self.publish(shared);
                shared.mark_rescan();
            }
        }
    }
}

/// No direct wait on this platform: `notify` reports everything.
#[cfg(not(any(target_os = "linux", windows)))]
mod unsupported {
    use super::{Backend, Report, Shared};
    use std::io;
    use std::path::Path;
    use std::time::Duration;

    pub(crate) enum Unsupported {}

    impl Backend for Unsupported {
        type Id = u64;
        const MAX_DIRS: usize = 0;
        fn new(_: &Shared) -> io::Result<Self> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn add(&mut self, _: &Path) -> io::Result<u64> {
            match *self {}
        }
        fn remove(&mut self, _: &u64) {
            match *self {}
        }
        fn clear_signal(&mut self) {
            match *self {}
        }
        fn collect(&mut self, _: &mut dyn FnMut(Report<'_, u64>)) -> io::Result<()> {
            match *self {}
        }
        fn block(&mut self, _: Duration) -> io::Result<()> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests;
