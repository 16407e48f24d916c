//! One trait for every kind of source, so the daemon runs them all alike.
//!
//! A [`Source`] is opened by its own constructor (the tailer, a listener, journald, the
//! EVTX follower, the Windows Event Log), then driven by one loop:
//! [`poll`](Source::poll) hands every record available now to a sink, waiting at most
//! until a deadline for the first; a record's position is committed right after the
//! sink returned for it, and [`checkpoint`](Source::checkpoint) writes the committed
//! positions (skipped when unchanged). [`stopper`](Source::stopper) gives a handle that
//! makes a waiting `poll` return from another thread; [`close`](Source::close) ends the
//! source: messages a listener received but did not hand out yet are handed out (nothing
//! else could bring them back), then the final checkpoint is written. Sources that can
//! read again (files, the journal, EVTX files) leave what was not handed out for their
//! next start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use watchpost_event::Event;

/// Where a record was read: the file, the peer, the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    /// A file.
    Path(&'a Path),
    /// A fixed name (`journal`).
    Name(&'a str),
    /// A network peer: protocol and address (`udp://192.0.2.1:514`).
    Peer(&'static str, SocketAddr),
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Path(p) => write!(f, "{}", p.display()),
            Place::Name(n) => f.write_str(n),
            Place::Peer(proto, peer) => write!(f, "{proto}://{peer}"),
        }
    }
}

/// One record a source hands out.
#[derive(Debug)]
pub enum Item<'a> {
    /// Bytes to parse: a line, a SEP binary record, a received message, a journal entry's
    /// JSON, an EVTX record's XML.
    Bytes {
        /// The record.
        bytes: &'a [u8],
        /// Where it was read.
        place: Place<'a>,
        /// Its byte offset, record id or number since start.
        offset: u64,
        /// When it was read or received (the start of its reaction time).
        read_at: Instant,
    },
    /// An event the source parsed itself (the Windows Event Log renders its XML per
    /// channel).
    Event(Event),
}

/// Stops (or wakes) a running source from another thread: a tailer's waker, a
/// listener's wake channel, the Windows Event Log's stop event.
#[derive(Clone)]
pub struct StopHandle(Arc<dyn Fn() + Send + Sync>);

impl StopHandle {
    /// A handle that runs `f` to stop.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> StopHandle {
        StopHandle(Arc::new(f))
    }

    /// Requests the stop; the loop notices it at its next wait or between batches.
    pub fn stop(&self) {
        (self.0)();
    }
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopHandle")
    }
}

/// Why a source call failed. The source keeps going; the caller logs it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

impl SourceError {
    /// Any error, as its message.
    pub fn from_err(e: impl std::fmt::Display) -> SourceError {
        SourceError(e.to_string())
    }
}

/// A running source. See the [module documentation](self).
pub trait Source: Send {
    /// Hands every record available now to `sink`, waiting at most until `deadline` for
    /// the first; each record's position is committed after `sink` returned for it.
    fn poll(
        &mut self,
        deadline: Instant,
        sink: &mut dyn FnMut(Item<'_>),
    ) -> Result<(), SourceError>;

    /// Writes the committed positions (skipped when nothing changed).
    fn checkpoint(&mut self) -> Result<(), SourceError>;

    /// A source that saves its progress as its records' actions complete (the tailer)
    /// opens its progress file here; the caller then uses [`mark`](Source::mark) and
    /// [`save_mark`](Source::save_mark) instead of [`checkpoint`](Source::checkpoint)
    /// while running. `None`: the source saves committed positions with `checkpoint`.
    fn progress_file(&self) -> Option<crate::progress::ProgressFile> {
        None
    }

    /// A snapshot of the positions committed now (after the records handed out so far).
    /// With `full`, first brings positions up to date with the files as a checkpoint
    /// does (new files, truncations).
    fn mark(&mut self, _full: bool) -> Option<crate::progress::Mark> {
        None
    }

    /// Writes `mark` as the durable checkpoint (skipped when it was written already).
    fn save_mark(&mut self, _mark: &crate::progress::Mark) -> Result<(), SourceError> {
        Ok(())
    }

    /// A handle that makes a waiting [`poll`](Source::poll) return at once, from any
    /// thread; the caller then stops polling and closes the source.
    fn stopper(&self) -> StopHandle;

    /// Ends the source: hands out what was received but cannot be read again, writes the
    /// final checkpoint, releases files, sockets and child processes. Returns a log line
    /// with its totals (empty when the source logged them itself).
    fn close(self: Box<Self>, sink: &mut dyn FnMut(Item<'_>)) -> String;
}

/// The wait of a source fed by a channel: the next message, or a wake, or the deadline.
pub(crate) struct Wakeable<T> {
    rx: Receiver<T>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
}

/// At most this many channel messages per [`Source::poll`] (then the loop checkpoints
/// and polls again).
const BATCH: usize = 4096;

impl<T> std::fmt::Debug for Wakeable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeable")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl<T> Wakeable<T> {
    pub(crate) fn new(rx: Receiver<T>) -> Wakeable<T> {
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        Wakeable {
            rx,
            wake_tx,
            wake_rx,
        }
    }

    pub(crate) fn stopper(&self) -> StopHandle {
        let tx = self.wake_tx.clone();
        StopHandle::new(move || {
            let _ = tx.try_send(());
        })
    }

    /// Calls `f` for each message available until `deadline` (at most [`BATCH`]; none
    /// once woken or once the channel is closed).
    pub(crate) fn each(&self, deadline: Instant, mut f: impl FnMut(T)) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        select! {
            recv(self.rx) -> m => match m {
                Ok(m) => f(m),
                Err(_) => {
                    // Closed: do not spin until the deadline.
                    let _ = self.wake_rx.recv_timeout(timeout);
                    return;
                }
            },
            recv(self.wake_rx) -> _ => return,
            default(timeout) => return,
        }
        for m in self.rx.try_iter().take(BATCH - 1) {
            f(m);
        }
    }

    /// What is left in the channel.
    pub(crate) fn rest(&self) -> impl Iterator<Item = T> + '_ {
        self.rx.try_iter()
    }
}

/// The time left until `deadline`, at least 1 ms.
pub(crate) fn until(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}
