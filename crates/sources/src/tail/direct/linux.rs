//! Linux: the tailer's own inotify instance on each watched directory (modifications,
//! creations, deletions, renames, attribute changes, and the directory's own deletion or
//! rename) and a wake pipe, waited on together in one `poll()`.
//!
//! Each is read only when the last `poll()` said it is readable: a lone line costs one
//! `poll()` and one `read()` of the inotify descriptor here. The queue is read again only
//! while a read may have left events behind (it filled the buffer to within one event).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use inotify::{EventMask, WatchDescriptor, WatchMask};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// `struct inotify_event` before its name: `wd`, `mask`, `cookie`, `len`.
const HEADER: usize = 16;
/// The longest event: its header and a name of `NAME_MAX` bytes with its NUL.
const MAX_EVENT: usize = HEADER + 255 + 1;

use super::{Backend, Report, Shared};

/// The inotify instance, the pipe's reading end and the buffer events are read into.
pub(crate) struct Inotify {
    inotify: inotify::Inotify,
    /// Watch descriptor number → the descriptor (to remove it).
    wds: HashMap<i32, WatchDescriptor>,
    wake_rx: UnixStream,
    buf: Vec<u8>,
    /// The last `poll()` found events queued (or none ran yet) and they were not read since.
    readable: bool,
    /// The last `poll()` found a wake byte in the pipe and it was not read since.
    woken: bool,
}

/// The events in what one `read()` returned: watch, mask, cookie, name (empty for the
/// directory itself). A damaged event ends the list.
fn events(buf: &[u8]) -> impl Iterator<Item = (i32, EventMask, u32, &OsStr)> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let head = buf.get(at..at + HEADER)?;
        let word = |i: usize| [head[i], head[i + 1], head[i + 2], head[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = EventMask::from_bits_retain(u32::from_ne_bytes(word(4)));
        let cookie = u32::from_ne_bytes(word(8));
        let len = usize::try_from(u32::from_ne_bytes(word(12))).ok()?;
        let name = buf.get(at + HEADER..at + HEADER + len)?;
        at += HEADER + len;
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        Some((wd, mask, cookie, OsStr::from_bytes(name)))
    })
}

/// What each directory's watch reports.
fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

impl Backend for Inotify {
    type Id = i32;
    /// Watches are limited by `fs.inotify.max_user_watches` only; a failed one is left to
    /// notify.
    const MAX_DIRS: usize = usize::MAX;

    fn new(shared: &Shared) -> io::Result<Inotify> {
        let inotify = inotify::Inotify::init()?;
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        shared.set_signal(move || {
            // Full (a wake is pending anyway) or closed (no one waits): nothing to do.
            let _ = (&wake_tx).write(&[1]);
        });
        Ok(Inotify {
            inotify,
            wds: HashMap::new(),
            wake_rx,
            buf: vec![0; 16 * 1024],
            readable: true,
            woken: false,
        })
    }

    fn add(&mut self, dir: &Path) -> io::Result<i32> {
        let wd = self.inotify.watches().add(dir, mask())?;
        let id = wd.get_watch_descriptor_id();
        self.wds.insert(id, wd);
        Ok(id)
    }

    fn remove(&mut self, id: &i32) {
        if let Some(wd) = self.wds.remove(id) {
            let _ = self.inotify.watches().remove(wd);
        }
    }

    fn clear_signal(&mut self) {
        // A byte the last poll did not see stays: the next poll returns at once for it, and
        // the wait looks at what is pending once more.
        if std::mem::take(&mut self.woken) {
            let mut b = [0u8; 64];
            while matches!((&self.wake_rx).read(&mut b), Ok(n) if n == b.len()) {}
        }
    }

    fn collect(&mut self, report: &mut dyn FnMut(Report<'_, i32>)) -> io::Result<()> {
        if !std::mem::take(&mut self.readable) {
            return Ok(());
        }
        loop {
            let n = match rustix::io::read(&self.inotify, &mut self.buf[..]) {
                Ok(n) => n,
                Err(rustix::io::Errno::AGAIN) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut moved_self = Vec::new();
            for (wd, mask, cookie, name) in events(&self.buf[..n]) {
                if mask.contains(EventMask::Q_OVERFLOW) {
                    report(Report::Lost);
                } else if mask.contains(EventMask::IGNORED) {
                    // The directory was deleted (once no file open in it keeps it: until
                    // then `sync` finds it gone by its identity) or its file system
                    // unmounted, or we removed the watch (its id is unknown then).
                    self.wds.remove(&wd);
                    report(Report::Gone(&wd));
                } else if mask.contains(EventMask::MOVE_SELF) {
                    // Renamed: the watch would report its files under the old path.
                    moved_self.push(wd);
                } else if name.is_empty() {
                    // The directory's own deletion: `IN_IGNORED` follows.
                } else if mask.contains(EventMask::MODIFY) {
                    report(Report::Changed(&wd, name));
                } else if mask.contains(EventMask::MOVED_FROM) {
                    report(Report::MovedFrom(&wd, name, cookie));
                } else if mask.contains(EventMask::MOVED_TO) {
                    report(Report::MovedTo(&wd, name, cookie));
                } else {
                    report(Report::Entry(&wd, name));
                }
            }
            for wd in moved_self {
                self.remove(&wd);
                report(Report::Gone(&wd));
            }
            // A read returns every whole event that fits: one with room for another left
            // none behind.
            if n + MAX_EVENT <= self.buf.len() {
                return Ok(());
            }
        }
    }

    fn block(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [
            PollFd::new(&self.inotify, PollFlags::IN),
            PollFd::new(&self.wake_rx, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
        self.readable |= ready(&fds[0]);
        self.woken |= ready(&fds[1]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn event(wd: i32, mask: u32, cookie: u32, name: &str, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(wd.to_ne_bytes());
        out.extend(mask.to_ne_bytes());
        out.extend(cookie.to_ne_bytes());
        out.extend((len as u32).to_ne_bytes());
        out.extend(name.as_bytes());
        out.resize(HEADER + len, 0);
        out
    }

    #[test]
    fn events_are_read_with_their_padding_and_a_damaged_one_ends_the_list() {
        let mut buf = event(1, 0x2, 0, "a.log", 16);
        buf.extend(event(2, 0x400, 0, "", 0));
        buf.extend(event(1, 0x40, 7, "b.log", 32));
        let got: Vec<(i32, u32, u32, String)> = events(&buf)
            .map(|(wd, m, c, n)| (wd, m.bits(), c, n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 0x2, 0, "a.log".into()),
                (2, 0x400, 0, String::new()),
                (1, 0x40, 7, "b.log".into())
            ]
        );
        // A name longer than what was read.
        let mut cut = event(1, 0x2, 0, "a.log", 16);
        cut.truncate(HEADER + 4);
        assert_eq!(events(&cut).count(), 0);
    }

    fn describe(r: Report<'_, i32>) -> String {
        match r {
            Report::Changed(_, n) => format!("changed {}", n.to_string_lossy()),
            Report::Entry(_, n) => format!("entry {}", n.to_string_lossy()),
            Report::MovedFrom(_, n, _) => format!("from {}", n.to_string_lossy()),
            Report::MovedTo(_, n, _) => format!("to {}", n.to_string_lossy()),
            Report::Lost => "lost".to_owned(),
            Report::Gone(_) => "gone".to_owned(),
        }
    }

    /// Blocks and collects until `want` was reported, or 10 s pass.
    fn until(d: &mut Inotify, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.iter().any(|s| s == want) && Instant::now() < deadline {
            d.block(Duration::from_millis(200)).unwrap();
            d.collect(&mut |r| seen.push(describe(r))).unwrap();
        }
        seen
    }

    #[test]
    fn writes_creations_renames_deletions_and_the_directorys_rename_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        let mut d = Inotify::new(&Shared::default()).unwrap();
        d.add(&dir).unwrap();
        let a = dir.join("a.log");
        std::fs::write(&a, b"x\n").unwrap();
        let seen = until(&mut d, "changed a.log");
        assert_eq!(seen[..2], ["entry a.log", "changed a.log"]);
        std::fs::rename(&a, dir.join("a.log.1")).unwrap();
        assert_eq!(until(&mut d, "to a.log.1"), ["from a.log", "to a.log.1"]);
        std::fs::remove_file(dir.join("a.log.1")).unwrap();
        assert_eq!(until(&mut d, "entry a.log.1"), ["entry a.log.1"]);
        // The directory renamed: its watch ends (it would name the wrong path).
        std::fs::rename(&dir, tmp.path().join("old")).unwrap();
        assert_eq!(until(&mut d, "gone"), ["gone"]);
        assert!(d.wds.is_empty());
    }

    /// A wake byte is read only after a poll saw it; one left behind ends the next block at
    /// once.
    #[test]
    fn the_wake_pipe_is_read_only_when_a_poll_found_it_ready() {
        let shared = Shared::default();
        let mut d = Inotify::new(&shared).unwrap();
        shared.request_rescan();
        d.clear_signal();
        let start = Instant::now();
        d.block(Duration::from_secs(30)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(d.woken);
        d.clear_signal();
        assert!(!d.woken);
        let start = Instant::now();
        d.block(Duration::from_millis(50)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
    }
}
