//! Linux: the tailer's thread waits on file-system notifications itself.
//!
//! `notify` reads inotify on a thread of its own and hands each event to the tailer
//! through a condition variable: two thread wake-ups between a `write()` to a followed
//! file and the tailer reading it. For that most frequent event, a modification of a
//! followed file, the tailer keeps its own inotify instance (`IN_MODIFY` on the
//! directories of the followed files) and blocks in `poll()` on it and on a wake pipe;
//! the modification is marked and read on the same thread, one wake-up in all (what
//! rsyslog's imfile does). `notify` keeps reporting everything else (creations, renames,
//! deletions, directories on the way to a pattern's base) and skips modifications in the
//! directories watched here; its events and [`Waker::wake`](super::Waker::wake) write a
//! byte to the pipe after recording what happened, so `poll()` wakes for them too.
//! A queue overflow of this instance asks for a rescan.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::pattern::Patterns;
use super::watch::Shared;

/// The tailer's own notifications. See the [module documentation](self).
pub(crate) struct Direct {
    inotify: Inotify,
    /// Watched directory → its watch, and back.
    dirs: HashMap<PathBuf, WatchDescriptor>,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    wake_rx: UnixStream,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("dirs", &self.dirs.len())
            .finish()
    }
}

impl Direct {
    /// Sets up the inotify instance and the wake pipe (its writing end goes to `shared`).
    pub(crate) fn new(shared: &Shared) -> io::Result<Direct> {
        let inotify = Inotify::init()?;
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        shared.set_wake_pipe(wake_tx);
        Ok(Direct {
            inotify,
            dirs: HashMap::new(),
            by_wd: HashMap::new(),
            wake_rx,
            buf: vec![0; 16 * 1024],
        })
    }

    /// Watches exactly the directories of `followed` (files being read); tells `shared`
    /// which directories notify may leave to us.
    pub(crate) fn sync(&mut self, followed: &HashSet<PathBuf>, shared: &Shared) {
        let wanted: HashSet<PathBuf> = followed
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        let mut watches = self.inotify.watches();
        self.dirs.retain(|dir, wd| {
            let keep = wanted.contains(dir);
            if !keep {
                let _ = watches.remove(wd.clone());
                self.by_wd.remove(wd);
            }
            keep
        });
        for dir in wanted {
            if self.dirs.contains_key(&dir) {
                continue;
            }
            match watches.add(&dir, WatchMask::MODIFY) {
                Ok(wd) => {
                    self.by_wd.insert(wd.clone(), dir.clone());
                    self.dirs.insert(dir, wd);
                }
                Err(e) => {
                    // notify still reports its modifications, one thread further.
                    tracing::debug!(dir = %dir.display(), error = %e, "tail: no direct watch");
                }
            }
        }
        shared.set_direct_dirs(self.dirs.keys().cloned().collect());
    }

    /// Waits until something is pending or `deadline` passes; modifications of followed
    /// files are marked here. Returns whether something is pending.
    pub(crate) fn wait_until(
        &mut self,
        shared: &Shared,
        patterns: &Patterns,
        deadline: Instant,
    ) -> bool {
        loop {
            self.drain_wakes();
            self.read_events(shared, patterns);
            if shared.is_pending() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let timeout = Timespec::try_from(deadline - now).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let mut fds = [
                PollFd::new(&self.inotify, PollFlags::IN),
                PollFd::new(&self.wake_rx, PollFlags::IN),
            ];
            if let Err(e) = poll(&mut fds, Some(&timeout))
                && e != rustix::io::Errno::INTR
            {
                tracing::debug!(error = %e, "tail: poll failed; waiting on the fallback");
                return shared.wait_until(deadline);
            }
        }
    }

    fn drain_wakes(&mut self) {
        let mut b = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut b), Ok(n) if n > 0) {}
    }

    fn read_events(&mut self, shared: &Shared, patterns: &Patterns) {
        loop {
            let events = match self.inotify.read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "tail: reading notifications; rescanning");
                    shared.request_rescan();
                    return;
                }
            };
            let mut any = false;
            for ev in events {
                any = true;
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    shared.request_rescan();
                    continue;
                }
                let (Some(dir), Some(name)) = (self.by_wd.get(&ev.wd), ev.name) else {
                    continue;
                };
                let path = dir.join(OsStr::new(name));
                if patterns.matches(&path) || shared.is_followed(&path) {
                    shared.mark_dirty(path);
                }
            }
            if !any {
                return;
            }
        }
    }
}
