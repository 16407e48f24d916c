//! Linux: the tailer's own inotify instance (`IN_MODIFY` on each watched directory) and a
//! wake pipe, waited on together in one `poll()`.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use inotify::{EventMask, WatchDescriptor, WatchMask};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::{Backend, Report, Shared};

/// The inotify instance, the pipe's reading end and the buffer events are read into.
pub(crate) struct Inotify {
    inotify: inotify::Inotify,
    wake_rx: UnixStream,
    buf: Vec<u8>,
}

impl Backend for Inotify {
    type Id = WatchDescriptor;
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
            wake_rx,
            buf: vec![0; 16 * 1024],
        })
    }

    fn add(&mut self, dir: &Path) -> io::Result<WatchDescriptor> {
        self.inotify.watches().add(dir, WatchMask::MODIFY)
    }

    fn remove(&mut self, id: &WatchDescriptor) {
        let _ = self.inotify.watches().remove(id.clone());
    }

    fn clear_signal(&mut self) {
        let mut b = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut b), Ok(n) if n > 0) {}
    }

    fn collect(&mut self, report: &mut dyn FnMut(Report<'_, WatchDescriptor>)) -> io::Result<()> {
        loop {
            let events = match self.inotify.read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut any = false;
            for ev in events {
                any = true;
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    report(Report::Lost);
                } else if ev.mask.contains(EventMask::IGNORED) {
                    // The directory was deleted (once no file open in it keeps it:
                    // until then `sync` finds it gone by its identity) or its file
                    // system unmounted, or we removed the watch (its id is unknown then).
                    report(Report::Gone(&ev.wd));
                } else if let Some(name) = ev.name {
                    report(Report::Changed(&ev.wd, name));
                }
            }
            if !any {
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
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
