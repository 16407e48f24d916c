//! Following `.evtx` files: records appended to a live log, and logs that appear in a
//! folder, handed on once each in record-id order, the position kept per file as the last
//! handed-off `EventRecordID`.
//!
//! Shaped like [`crate::journald`]: [`EvtxFollower::start`] starts a background thread that
//! sends [`EvtxRecord`]s (path, record id, the record rendered as XML for
//! [`crate::winevent::parse_event_xml`]) to a bounded channel; the consumer calls
//! [`EvtxFollower::commit`] once it handled a record, [`EvtxFollower::checkpoint`] persists
//! the committed ids, [`EvtxFollower::shutdown`] (also run on drop) stops the thread and
//! writes a final checkpoint.
//!
//! # Wake-ups
//!
//! The directories of the glob patterns are watched with the tailer's watcher
//! (`tail/watch.rs`, inotify on Linux): a modified matching file is read at once; creations,
//! deletions and renames rescan the patterns. Every `poll_interval` (2 s by default) the
//! patterns are rescanned and files whose size or modification time changed are read, for
//! what notifications miss. The thread sleeps on a condition variable in between: no busy
//! polling.
//!
//! # Reading a file
//!
//! An EVTX file is a 4 KiB file header followed by 64 KiB chunks; each chunk header names
//! the first and last record id it holds. A pass over a file reads the 512-byte header of
//! every complete chunk (a 20 MB log: 320 reads of 512 bytes, well under a millisecond from
//! the page cache), orders the chunks by their first record id (so a log that wrapped around
//! is read oldest chunk first), and parses with the `evtx` crate only the chunks that can
//! hold a record id above the last one handed off: those whose header names a last record
//! id above it (the crate reads no record past that id, so records Windows appended before
//! updating the chunk header come with a later pass, once the header names them). Memory per pass is one chunk (64 KiB plus its parse) and
//! the list of chunk headers. Records are sent in id order; ids at or below the last one are
//! skipped. A chunk not yet complete at the end of the file waits for the next pass.
//!
//! # Corruption
//!
//! A chunk whose header magic is wrong or whose CRC32s do not match is reported
//! (`tracing::warn!` with the path, chunk number, file offset and the ids its header names),
//! counted in [`EvtxFollowStats::errors`] and skipped, once; the other chunks are read. A
//! record that does not render is reported with its path and record id (or chunk and offset
//! when its header is unreadable), counted and skipped. The newest chunk is the exception
//! while its checksums do not match: Windows is probably still writing it, so a record that
//! fails there ends the pass quietly and is tried again on the next change; when the file
//! has not changed for a whole `poll_interval`, the chunk is read once more reporting and
//! skipping what fails (a log left dirty by a crash is read to its end).
//!
//! # Identity and checkpoints
//!
//! A file is known by the tailer's platform key (`tail/identity.rs`: device + inode on Unix,
//! volume serial + file index on Windows) plus a fingerprint. The EVTX file header (next
//! record id, chunk count, checksum) and every chunk header (last record id, free space,
//! checksums) are rewritten in place as records are appended, so the fingerprint covers
//! neither: it is the FNV-1a hash of the first record of the first chunk (offset
//! 4096 + 512: record magic, size, id, timestamp and data), at most 256 bytes and never
//! beyond that record, which is written once and not changed afterwards. A file without a
//! record yet has an empty fingerprint, which matches any content.
//!
//! The first chunk is rewritten when a full log wraps around (its oldest chunk is
//! overwritten with new records), so a changed fingerprint under the same key is not by
//! itself a new log: the *anchor* (the chunk that held the last handed-off record and the
//! hash of that chunk's first record header) is checked, and if it is unchanged the log
//! wrapped and reading goes on after the last id. Otherwise the file was replaced or cleared
//! and is read again from its first record, as is a file whose record ids went backwards
//! (every chunk ends below the last id handed off); both count in
//! [`EvtxFollowStats::rereads`], as does a different file (new key) at a followed path.
//!
//! [`EvtxFollower::checkpoint`] writes
//! `{"version":1,"files":[{"dev","ino","fp","anchor","record_id","path"}]}` (`record_id`:
//! the last committed id) to `<path>.tmp`, syncs it, renames it over the checkpoint and
//! syncs the directory, only when something changed. A commit is taken only for an id above
//! the last committed and not above the last handed off for that path (a late commit of a
//! file since replaced is ignored unless the new file already got that far). Entries of
//! files no longer found are kept (the newest 4096) so a file that comes back is matched
//! again. Without a checkpoint (first start) the files found by the first scan start at
//! [`StartAt`]: `End` skips to their last record id (as their chunk headers name it),
//! `Beginning` reads them; a checkpoint is written at once; files seen later are read from
//! their first record. An unreadable checkpoint (and `.tmp`) is logged, counted, and the
//! start treated as a first start. After a clean shutdown nothing handled is delivered
//! twice; after a crash, records since the last checkpoint are.
//!
//! # Limits
//!
//! A file renamed so that the patterns no longer match it is no longer read. A matching
//! file that is not EVTX is reported once and ignored until it changes.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use evtx::{EvtxChunkData, EvtxChunkHeader, ParserSettings};
use serde::{Deserialize, Serialize};

use crate::tail::checkpoint::tmp_path;
use crate::tail::identity::{FP_BYTES, FileKey, Fingerprint, fnv1a, open_shared, read_full_at};
use crate::tail::pattern::Patterns;
use crate::tail::watch::{Shared as WatchShared, Waker, Watches};
use crate::tail::{StartAt, TailError};

/// Size of the file header block.
const FILE_HEADER: u64 = 4096;
/// Size of a chunk.
const CHUNK: u64 = 65536;
/// Size of a chunk header.
const CHUNK_HEADER: usize = 512;
/// The file signature.
const FILE_MAGIC: &[u8; 8] = b"ElfFile\0";
/// The chunk signature.
const CHUNK_MAGIC: &[u8; 8] = b"ElfChnk\0";
/// The record signature.
const RECORD_MAGIC: &[u8; 4] = b"\x2a\x2a\0\0";
/// A record header: magic, size, id, timestamp.
const RECORD_HEADER: usize = 24;
/// Where the first record of the first chunk starts (the fingerprint).
const FP_START: u64 = FILE_HEADER + CHUNK_HEADER as u64;
/// Checkpoint format version.
const VERSION: u32 = 1;
/// Checkpoint entries of files no longer found, kept.
const MAX_KNOWN: usize = 4096;
/// Default capacity of the channel.
pub const DEFAULT_QUEUE: usize = 4096;
/// Default fallback poll interval.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What to follow and where to keep the positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvtxFollowOptions {
    /// Glob patterns of the files (`*` does not cross `/`), e.g. `/logs/evtx/*.evtx`.
    pub patterns: Vec<String>,
    /// Where files found at the first start (no checkpoint yet) begin.
    pub start_at: StartAt,
    /// The checkpoint file, e.g. `<state_dir>/checkpoints/<source>.json`.
    pub checkpoint_path: PathBuf,
    /// Fallback rescan for what notifications miss.
    pub poll_interval: Duration,
    /// Capacity of the channel to the consumer.
    pub queue: usize,
}

impl EvtxFollowOptions {
    /// Options with the defaults: start at the end, poll every 2 s, a queue of 4096.
    pub fn new(patterns: Vec<String>, checkpoint_path: impl Into<PathBuf>) -> EvtxFollowOptions {
        EvtxFollowOptions {
            patterns,
            start_at: StartAt::End,
            checkpoint_path: checkpoint_path.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// One record, rendered as XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvtxRecord {
    /// The file it came from (as the patterns found it); pass it to
    /// [`EvtxFollower::commit`].
    pub path: PathBuf,
    /// Its `EventRecordID`.
    pub record_id: u64,
    /// The record as XML (input for [`crate::winevent::parse_event_xml`]).
    pub xml: String,
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvtxFollowStats {
    /// Files followed now.
    pub files: u64,
    /// Records handed to the channel.
    pub records: u64,
    /// Corrupt chunks and records, files that are not EVTX, read and checkpoint errors.
    pub errors: u64,
    /// Files read again from their first record: replaced, cleared, record ids reset.
    pub rereads: u64,
    /// Chunks parsed (the cost of following: chunks without new records are not).
    pub chunks_parsed: u64,
}

/// Why files cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum EvtxFollowError {
    /// An option is out of range.
    #[error("evtx follow options: {0}")]
    Options(String),
    /// A pattern is invalid, or relative patterns cannot be resolved.
    #[error(transparent)]
    Pattern(#[from] TailError),
    /// The reader thread could not be started.
    #[error("cannot start the evtx reader thread: {0}")]
    Thread(#[source] io::Error),
    /// The checkpoint could not be written.
    #[error("cannot write the evtx checkpoint {path}: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The chunk that held the last handed-off record: its number and the hash of its first
/// record header. Unchanged while a wrapped log overwrites other chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Anchor {
    chunk: u64,
    hash: u64,
}

/// One checkpoint entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    key: FileKey,
    fp: Fingerprint,
    #[serde(default)]
    anchor: Option<Anchor>,
    /// The last committed record id.
    record_id: u64,
    path: String,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    version: u32,
    files: Vec<Saved>,
}

/// What the checkpoint file held.
enum Loaded {
    Found(Vec<Saved>),
    Missing,
    Unreadable(Vec<String>),
}

fn load(path: &Path) -> Loaded {
    let mut problems = Vec::new();
    let mut exists = false;
    for candidate in [path.to_path_buf(), tmp_path(path)] {
        match fs::read(&candidate) {
            Ok(bytes) => {
                exists = true;
                match serde_json::from_slice::<Doc>(&bytes) {
                    Ok(doc) if doc.version == VERSION => return Loaded::Found(doc.files),
                    Ok(doc) => problems.push(format!(
                        "{}: unsupported checkpoint version {} (this build reads {VERSION})",
                        candidate.display(),
                        doc.version
                    )),
                    Err(e) => problems.push(format!("{}: {e}", candidate.display())),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                exists = true;
                problems.push(format!("{}: {e}", candidate.display()));
            }
        }
    }
    if exists {
        Loaded::Unreadable(problems)
    } else {
        Loaded::Missing
    }
}

/// Writes the entries atomically (the tailer's checkpoint writer).
fn save(path: &Path, files: &[Saved]) -> io::Result<()> {
    let doc = Doc {
        version: VERSION,
        files: files.to_vec(),
    };
    crate::tail::checkpoint::write_atomic(
        path,
        &serde_json::to_vec(&doc).map_err(io::Error::other)?,
    )
}

/// The position of a followed path, shared with [`EvtxFollower::commit`].
#[derive(Clone, Debug)]
struct Pos {
    key: FileKey,
    fp: Fingerprint,
    anchor: Option<Anchor>,
    handed: u64,
    committed: u64,
}

impl Pos {
    fn saved(&self, path: &Path) -> Saved {
        Saved {
            key: self.key,
            fp: self.fp,
            anchor: self.anchor,
            record_id: self.committed,
            path: path.to_string_lossy().into_owned(),
        }
    }
}

#[derive(Default)]
struct Positions {
    /// Followed paths.
    files: HashMap<PathBuf, Pos>,
    /// Checkpoint entries of files not found (yet), oldest first.
    known: Vec<Saved>,
    /// What the last checkpoint wrote.
    written: Option<Vec<Saved>>,
}

impl Positions {
    fn entries(&self) -> Vec<Saved> {
        let mut out: Vec<Saved> = self.files.iter().map(|(p, pos)| pos.saved(p)).collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.extend(self.known.iter().cloned());
        out
    }

    fn remember(&mut self, saved: Saved) {
        self.known.retain(|k| k.key != saved.key);
        self.known.push(saved);
        if self.known.len() > MAX_KNOWN {
            let excess = self.known.len() - MAX_KNOWN;
            self.known.drain(..excess);
        }
    }
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    errors: AtomicU64,
    rereads: AtomicU64,
    chunks_parsed: AtomicU64,
    files: AtomicU64,
}

struct Shared {
    checkpoint_path: PathBuf,
    stop: AtomicBool,
    counters: Counters,
    positions: Mutex<Positions>,
}

use watchpost_support::lock;

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A running follower. Stop it with [`shutdown`](EvtxFollower::shutdown) (dropping it does
/// the same).
pub struct EvtxFollower {
    shared: Arc<Shared>,
    waker: Waker,
    /// Dropped on shutdown: wakes the reader from a full channel.
    stop_tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EvtxFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvtxFollower")
            .field("checkpoint_path", &self.shared.checkpoint_path)
            .finish_non_exhaustive()
    }
}

impl EvtxFollower {
    /// Loads the checkpoint, places the files of a first start, starts watching and the
    /// reader thread. Records arrive on the returned channel (capacity `opts.queue`);
    /// dropping the receiver stops reading.
    pub fn start(
        opts: EvtxFollowOptions,
    ) -> Result<(EvtxFollower, Receiver<EvtxRecord>), EvtxFollowError> {
        if opts.queue == 0 {
            return Err(EvtxFollowError::Options("queue must be at least 1".into()));
        }
        if opts.poll_interval.is_zero() {
            return Err(EvtxFollowError::Options(
                "poll_interval must be above zero".into(),
            ));
        }
        let cwd = std::env::current_dir().map_err(TailError::CurrentDir)?;
        let ignore = vec![
            opts.checkpoint_path.clone(),
            tmp_path(&opts.checkpoint_path),
        ];
        let patterns = Arc::new(Patterns::new(&opts.patterns, &[], ignore, &cwd)?);
        let shared = Arc::new(Shared {
            checkpoint_path: opts.checkpoint_path.clone(),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            positions: Mutex::new(Positions::default()),
        });
        let first_start = match load(&opts.checkpoint_path) {
            Loaded::Found(files) => {
                let mut pos = lock(&shared.positions);
                pos.written = Some(files.clone());
                pos.known = files;
                false
            }
            Loaded::Missing => true,
            Loaded::Unreadable(problems) => {
                tracing::warn!(path = %opts.checkpoint_path.display(), problems = %problems.join("; "),
                    "evtx: checkpoint unreadable; starting as on a first start");
                bump(&shared.counters.errors);
                true
            }
        };
        let watch = Arc::new(WatchShared::default());
        let (mut watches, watch_error) = Watches::new(watch.clone(), patterns.clone());
        if let Some(e) = watch_error {
            tracing::warn!(error = %e, "evtx: no file notifications; polling");
        }
        watches.refresh(&patterns);
        let mut reader = Reader {
            shared: shared.clone(),
            patterns,
            watch: watch.clone(),
            watches,
            poll_interval: opts.poll_interval,
            settings: Arc::new(ParserSettings::new().indent(false)),
            files: HashMap::new(),
            not_evtx: HashMap::new(),
            tx: None,
            stop_rx: None,
        };
        if first_start {
            if opts.start_at == StartAt::End {
                reader.skip_existing();
            }
            let follower_cp = {
                let mut pos = lock(&shared.positions);
                let entries = pos.entries();
                save(&opts.checkpoint_path, &entries).map(|()| pos.written = Some(entries))
            };
            if let Err(source) = follower_cp {
                bump(&shared.counters.errors);
                return Err(EvtxFollowError::Checkpoint {
                    path: opts.checkpoint_path.clone(),
                    source,
                });
            }
        }
        let (tx, rx) = crossbeam_channel::bounded(opts.queue);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        reader.tx = Some(tx);
        reader.stop_rx = Some(stop_rx);
        let thread = thread::Builder::new()
            .name("evtx-follow".into())
            .spawn(move || reader.run())
            .map_err(EvtxFollowError::Thread)?;
        Ok((
            EvtxFollower {
                shared,
                waker: Waker::new(watch),
                stop_tx: Some(stop_tx),
                thread: Some(thread),
            },
            rx,
        ))
    }

    /// Marks the record `record_id` of `path` handled; [`EvtxFollower::checkpoint`]
    /// persists it. Taken only above the last committed id and not above the last handed
    /// off for that path.
    pub fn commit(&self, path: &Path, record_id: u64) {
        let mut pos = lock(&self.shared.positions);
        if let Some(p) = pos.files.get_mut(path)
            && p.committed < record_id
            && record_id <= p.handed
        {
            p.committed = record_id;
        }
    }

    /// Writes the committed positions atomically if they changed since the last write.
    pub fn checkpoint(&self) -> Result<(), EvtxFollowError> {
        let mut pos = lock(&self.shared.positions);
        let entries = pos.entries();
        if pos.written.as_ref() == Some(&entries) {
            return Ok(());
        }
        match save(&self.shared.checkpoint_path, &entries) {
            Ok(()) => {
                pos.written = Some(entries);
                Ok(())
            }
            Err(source) => {
                bump(&self.shared.counters.errors);
                Err(EvtxFollowError::Checkpoint {
                    path: self.shared.checkpoint_path.clone(),
                    source,
                })
            }
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> EvtxFollowStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EvtxFollowStats {
            files: get(&c.files),
            records: get(&c.records),
            errors: get(&c.errors),
            rereads: get(&c.rereads),
            chunks_parsed: get(&c.chunks_parsed),
        }
    }

    /// Stops and joins the reader and writes a final checkpoint. Records already in the
    /// channel stay there (uncommitted ones are read again on the next start).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        drop(self.stop_tx.take());
        self.waker.wake();
        if thread.join().is_err() {
            tracing::error!("evtx: the reader thread panicked");
        }
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "evtx: final checkpoint failed");
        }
        tracing::info!("evtx: stopped: {}", watchpost_event::logfmt(&self.stats()));
    }
}

impl Drop for EvtxFollower {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An [`EvtxFollower`] as a [`Source`](crate::source::Source): each record is committed
/// after the sink returned for it; records not handed out when it closes are read again
/// at the next start.
#[derive(Debug)]
pub struct EvtxSource {
    follower: Option<EvtxFollower>,
    wait: crate::source::Wakeable<EvtxRecord>,
}

impl EvtxSource {
    /// Starts following.
    pub fn start(opts: EvtxFollowOptions) -> Result<EvtxSource, EvtxFollowError> {
        let (follower, rx) = EvtxFollower::start(opts)?;
        Ok(EvtxSource {
            follower: Some(follower),
            wait: crate::source::Wakeable::new(rx),
        })
    }
}

impl crate::source::Source for EvtxSource {
    fn poll(
        &mut self,
        deadline: Instant,
        sink: &mut dyn FnMut(crate::source::Item<'_>),
    ) -> Result<(), crate::source::SourceError> {
        let follower = &self.follower;
        self.wait.each(deadline, |r| {
            sink(crate::source::Item::Bytes {
                bytes: r.xml.as_bytes(),
                place: crate::source::Place::Path(&r.path),
                offset: r.record_id,
                read_at: Instant::now(),
            });
            if let Some(f) = follower {
                f.commit(&r.path, r.record_id);
            }
        });
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), crate::source::SourceError> {
        match &self.follower {
            Some(f) => f.checkpoint().map_err(crate::source::SourceError::from_err),
            None => Ok(()),
        }
    }

    fn stopper(&self) -> crate::source::StopHandle {
        self.wait.stopper()
    }

    fn close(mut self: Box<Self>, _: &mut dyn FnMut(crate::source::Item<'_>)) -> String {
        if let Some(f) = self.follower.take() {
            // Logs its totals.
            f.shutdown();
        }
        String::new()
    }
}

/// What the reader knows about a followed path.
struct Tracked {
    key: FileKey,
    fp: Fingerprint,
    anchor: Option<Anchor>,
    /// The last record id handed off (or skipped as corrupt).
    last: u64,
    size: u64,
    mtime: Option<SystemTime>,
    /// Chunks already reported corrupt.
    reported: HashSet<u64>,
    /// Since when the newest chunk ends passes on an error (it is being written).
    stalled: Option<Instant>,
}

/// One complete chunk slot of a file, from its header.
enum Slot {
    /// All zeroes (preallocated).
    Empty,
    /// Header unreadable.
    Bad(String),
    /// Records `first..=last`.
    Ids { first: u64, last: u64 },
}

/// A file as one pass sees it.
struct Probe {
    key: FileKey,
    size: u64,
    mtime: Option<SystemTime>,
    fp: Fingerprint,
    chunks: Vec<Slot>,
}

impl Probe {
    fn max_last(&self) -> Option<u64> {
        self.chunks
            .iter()
            .filter_map(|s| match s {
                Slot::Ids { first, last } if first <= last => Some(*last),
                _ => None,
            })
            .max()
    }
}

/// Why a pass ended early.
enum Halt {
    /// Stopping (shutdown or the receiver is gone).
    Stop,
}

/// Why a file cannot be probed.
enum ProbeError {
    /// Not there (any more).
    Gone,
    /// Shorter than the file header: being created.
    NotReady,
    /// Does not start like an EVTX file.
    NotEvtx {
        key: FileKey,
        size: u64,
    },
    Io(io::Error),
}

fn chunk_offset(no: u64) -> u64 {
    FILE_HEADER + no * CHUNK
}

fn probe(path: &Path) -> Result<(File, Probe), ProbeError> {
    let file = open_shared(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ProbeError::Gone,
        _ => ProbeError::Io(e),
    })?;
    let meta = file.metadata().map_err(ProbeError::Io)?;
    let key = FileKey::of_file(&file, &meta, path);
    let size = meta.len();
    if size < FILE_HEADER {
        return Err(ProbeError::NotReady);
    }
    let mut magic = [0u8; 8];
    read_full_at(&file, &mut magic, 0).map_err(ProbeError::Io)?;
    if &magic != FILE_MAGIC {
        return Err(ProbeError::NotEvtx { key, size });
    }
    let fp = fingerprint(&file, size).map_err(ProbeError::Io)?;
    let count = (size - FILE_HEADER) / CHUNK;
    let mut chunks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut header = [0u8; CHUNK_HEADER];
    for no in 0..count {
        let n = read_full_at(&file, &mut header, chunk_offset(no)).map_err(ProbeError::Io)?;
        if n < CHUNK_HEADER {
            break;
        }
        chunks.push(if header.iter().all(|b| *b == 0) {
            Slot::Empty
        } else if &header[..8] != CHUNK_MAGIC {
            Slot::Bad("bad chunk header magic".into())
        } else {
            match EvtxChunkHeader::from_bytes(&header) {
                Ok(h) => Slot::Ids {
                    first: h.first_event_record_id,
                    last: h.last_event_record_id,
                },
                Err(e) => Slot::Bad(e.to_string()),
            }
        });
    }
    let mtime = meta.modified().ok();
    Ok((
        file,
        Probe {
            key,
            size,
            mtime,
            fp,
            chunks,
        },
    ))
}

/// The fingerprint: the first record of the first chunk, at most [`FP_BYTES`] of it.
fn fingerprint(file: &File, size: u64) -> io::Result<Fingerprint> {
    if size < FP_START + RECORD_HEADER as u64 {
        return Ok(Fingerprint::default());
    }
    let mut head = [0u8; RECORD_HEADER];
    read_full_at(file, &mut head, FP_START)?;
    if &head[..4] != RECORD_MAGIC {
        return Ok(Fingerprint::default());
    }
    let rec_size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    let len = rec_size
        .min(FP_BYTES as u64)
        .min(size - FP_START)
        .max(RECORD_HEADER as u64);
    let mut buf = vec![0u8; len as usize];
    if read_full_at(file, &mut buf, FP_START)? < buf.len() {
        return Ok(Fingerprint::default());
    }
    Ok(Fingerprint {
        start: FP_START,
        len: len as u32,
        hash: fnv1a(&buf),
    })
}

/// The hash of the first record header of chunk `no` (for [`Anchor`]).
fn anchor_hash(file: &File, no: u64) -> io::Result<u64> {
    let mut head = [0u8; RECORD_HEADER];
    let n = read_full_at(file, &mut head, chunk_offset(no) + CHUNK_HEADER as u64)?;
    Ok(fnv1a(&head[..n]))
}

/// Whether a file with fingerprint `fp` (open as `file`) is the log a position with `old`
/// and `anchor` was taken from: same first record, or (a wrapped log) the anchor chunk
/// unchanged.
fn same_log(old: &Fingerprint, anchor: Option<Anchor>, fp: &Fingerprint, file: &File) -> bool {
    if old.len == 0 || old == fp {
        return true;
    }
    anchor.is_some_and(|a| anchor_hash(file, a.chunk).is_ok_and(|h| h == a.hash))
}

/// The background reader.
struct Reader {
    shared: Arc<Shared>,
    patterns: Arc<Patterns>,
    watch: Arc<WatchShared>,
    watches: Watches,
    poll_interval: Duration,
    settings: Arc<ParserSettings>,
    files: HashMap<PathBuf, Tracked>,
    /// Matching files that are not EVTX, with the key and size they were reported at.
    not_evtx: HashMap<PathBuf, (FileKey, u64)>,
    tx: Option<Sender<EvtxRecord>>,
    stop_rx: Option<Receiver<()>>,
}

impl Reader {
    /// First start at the end: every file found now starts after its last record.
    fn skip_existing(&mut self) {
        for path in self.patterns.expand() {
            let Ok((file, p)) = probe(&path) else {
                continue;
            };
            let last = p.max_last().unwrap_or(0);
            let anchor = self.anchor_for(&file, &p, last);
            self.track(&path, &p, last, anchor);
        }
    }

    /// The anchor of the chunk holding `last`.
    fn anchor_for(&self, file: &File, p: &Probe, last: u64) -> Option<Anchor> {
        let no = p.chunks.iter().position(
            |s| matches!(s, Slot::Ids { first, last: l } if *first <= last && last <= *l),
        )? as u64;
        anchor_hash(file, no)
            .ok()
            .map(|hash| Anchor { chunk: no, hash })
    }

    /// Starts (or restarts) following `path` at `last`, published as handed and committed.
    fn track(&mut self, path: &Path, p: &Probe, last: u64, anchor: Option<Anchor>) {
        self.files.insert(
            path.to_path_buf(),
            Tracked {
                key: p.key,
                fp: p.fp,
                anchor,
                last,
                size: 0,
                mtime: None,
                reported: HashSet::new(),
                stalled: None,
            },
        );
        let mut pos = lock(&self.shared.positions);
        pos.files.insert(
            path.to_path_buf(),
            Pos {
                key: p.key,
                fp: p.fp,
                anchor,
                handed: last,
                committed: last,
            },
        );
        self.shared
            .counters
            .files
            .store(self.files.len() as u64, Ordering::Relaxed);
    }

    /// Stops following `path` (gone); its position stays in the checkpoint.
    fn forget(&mut self, path: &Path) {
        if self.files.remove(path).is_none() {
            return;
        }
        let mut pos = lock(&self.shared.positions);
        if let Some(p) = pos.files.remove(path) {
            let saved = p.saved(path);
            pos.remember(saved);
        }
        self.shared
            .counters
            .files
            .store(self.files.len() as u64, Ordering::Relaxed);
    }

    /// A checkpoint entry for this file, taken out of the known ones.
    fn adopt(&self, p: &Probe, file: &File) -> Option<Saved> {
        let mut pos = lock(&self.shared.positions);
        let i = pos
            .known
            .iter()
            .position(|s| s.key == p.key && same_log(&s.fp, s.anchor, &p.fp, file))?;
        Some(pos.known.remove(i))
    }

    fn run(mut self) {
        let mut next_poll = Instant::now();
        let mut full = true;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let quiet = Instant::now() >= next_poll;
            if quiet {
                full = true;
                next_poll = Instant::now() + self.poll_interval;
            }
            let pending = self.watch.take();
            let result = if full || pending.rescan {
                self.watches.refresh(&self.patterns);
                self.scan(&pending.dirty, quiet)
            } else {
                let mut dirty: Vec<PathBuf> = pending.dirty.into_iter().collect();
                dirty.sort();
                dirty
                    .iter()
                    .try_for_each(|path| self.pass(path, true, false))
            };
            if result.is_err() {
                return;
            }
            full = false;
            self.watch.wait_until(next_poll);
        }
    }

    /// Rescans the patterns and reads what changed (`dirty` files whatever their stat).
    fn scan(&mut self, dirty: &HashSet<PathBuf>, quiet: bool) -> Result<(), Halt> {
        let found = self.patterns.expand();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !found.contains(p))
            .cloned()
            .collect();
        for path in gone {
            self.forget(&path);
        }
        for path in &found {
            self.pass(path, dirty.contains(path), quiet)?;
        }
        Ok(())
    }

    /// Reads `path` if it changed (or `force`). `quiet`: a poll without a change since the
    /// last one; a stalled newest chunk is then read reporting its errors.
    fn pass(&mut self, path: &Path, force: bool, quiet: bool) -> Result<(), Halt> {
        let (file, p) = match probe(path) {
            Ok(x) => x,
            Err(ProbeError::Gone) => {
                self.forget(path);
                return Ok(());
            }
            Err(ProbeError::NotReady) => return Ok(()),
            Err(ProbeError::NotEvtx { key, size }) => {
                if self.not_evtx.get(path) != Some(&(key, size)) {
                    tracing::warn!(path = %path.display(), "evtx: not an EVTX file; ignored");
                    bump(&self.shared.counters.errors);
                    if self.not_evtx.len() >= MAX_KNOWN {
                        self.not_evtx.clear();
                    }
                    self.not_evtx.insert(path.to_path_buf(), (key, size));
                }
                return Ok(());
            }
            Err(ProbeError::Io(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "evtx: cannot read");
                bump(&self.shared.counters.errors);
                return Ok(());
            }
        };
        self.not_evtx.remove(path);
        let final_read = match self.files.get(path) {
            Some(t) if t.key == p.key && t.size == p.size && t.mtime == p.mtime => {
                let final_read = quiet
                    && t.stalled
                        .is_some_and(|since| since.elapsed() >= self.poll_interval);
                if !force && !final_read {
                    return Ok(());
                }
                final_read
            }
            _ => false,
        };
        self.identify(path, &file, &p);
        self.read(path, &file, &p, final_read)
    }

    /// Decides where reading `path` goes on: its own position, a checkpoint entry, or
    /// its first record.
    fn identify(&mut self, path: &Path, file: &File, p: &Probe) {
        let max_last = p.max_last();
        let same = self.files.get(path).map(|t| {
            (
                t.key == p.key && same_log(&t.fp, t.anchor, &p.fp, file),
                t.last,
            )
        });
        match same {
            Some((true, last)) if max_last.is_some_and(|m| m < last) => {
                tracing::warn!(path = %path.display(), last, now = max_last,
                    "evtx: record ids went backwards (log cleared?); reading from the first record");
                bump(&self.shared.counters.rereads);
                self.track(path, p, 0, None);
            }
            Some((true, _)) => {
                if let Some(t) = self.files.get_mut(path)
                    && t.fp != p.fp
                {
                    // Grown from no record yet, or a wrapped log: keep the new fingerprint.
                    t.fp = p.fp;
                    if let Some(pos) = lock(&self.shared.positions).files.get_mut(path) {
                        pos.fp = p.fp;
                    }
                }
            }
            Some((false, _)) => {
                tracing::info!(path = %path.display(),
                    "evtx: file replaced; reading it from its first record");
                bump(&self.shared.counters.rereads);
                let (last, anchor) = self.adopted(p, file);
                self.track(path, p, last, anchor);
            }
            None => {
                let (last, anchor) = self.adopted(p, file);
                self.track(path, p, last, anchor);
            }
        }
    }

    /// Where a file not followed now starts: its checkpoint entry, else its first record.
    fn adopted(&self, p: &Probe, file: &File) -> (u64, Option<Anchor>) {
        match self.adopt(p, file) {
            Some(s) if p.max_last().is_none_or(|m| m >= s.record_id) => (s.record_id, s.anchor),
            _ => (0, None),
        }
    }

    /// Sends the records above the last id, chunk by chunk in id order.
    fn read(&mut self, path: &Path, file: &File, p: &Probe, final_read: bool) -> Result<(), Halt> {
        let Some(t) = self.files.get_mut(path) else {
            return Ok(());
        };
        t.size = p.size;
        t.mtime = p.mtime;
        let stalled_before = t.stalled.take();
        let mut order: Vec<(u64, u64, u64)> = Vec::new();
        for (no, slot) in p.chunks.iter().enumerate() {
            let no = no as u64;
            match slot {
                Slot::Empty => {}
                Slot::Bad(msg) => {
                    if t.reported.insert(no) {
                        tracing::warn!(path = %path.display(), chunk = no, offset = chunk_offset(no),
                            error = %msg, "evtx: corrupt chunk skipped");
                        bump(&self.shared.counters.errors);
                    }
                }
                Slot::Ids { first, last } if first <= last => order.push((*first, *last, no)),
                // A chunk started without records yet.
                Slot::Ids { .. } => {}
            }
        }
        order.sort_unstable();
        let newest = order.last().map(|c| c.2);
        for (first, last_in_chunk, no) in order {
            // The crate reads no record past the id its chunk header names.
            if last_in_chunk <= self.files.get(path).map_or(0, |t| t.last) {
                continue;
            }
            let ids = (first, last_in_chunk);
            self.read_chunk(path, file, no, ids, Some(no) == newest, final_read)?;
        }
        if let Some(t) = self.files.get_mut(path)
            && t.stalled.is_some()
        {
            t.stalled = stalled_before.or(t.stalled);
        }
        Ok(())
    }

    /// Reads one chunk's records above the last id.
    fn read_chunk(
        &mut self,
        path: &Path,
        file: &File,
        no: u64,
        ids: (u64, u64),
        newest: bool,
        final_read: bool,
    ) -> Result<(), Halt> {
        let counters = &self.shared.counters;
        let Some(t) = self.files.get_mut(path) else {
            return Ok(());
        };
        let offset = chunk_offset(no);
        let mut buf = vec![0u8; CHUNK as usize];
        match read_full_at(file, &mut buf, offset) {
            Ok(n) if n == buf.len() => {}
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(path = %path.display(), chunk = no, error = %e, "evtx: cannot read chunk");
                bump(&counters.errors);
                return Ok(());
            }
        }
        let corrupt = |t: &mut Tracked, msg: &dyn std::fmt::Display| {
            if t.reported.insert(no) {
                tracing::warn!(path = %path.display(), chunk = no, offset, first = ids.0, last = ids.1,
                    error = %msg, "evtx: corrupt chunk skipped");
                bump(&counters.errors);
            }
        };
        let mut data = match EvtxChunkData::new(buf, false) {
            Ok(d) => d,
            Err(e) => {
                corrupt(t, &e);
                return Ok(());
            }
        };
        // A chunk whose CRC32s match is complete; the newest one may be half-written.
        let intact = data.validate_checksum();
        if !intact && !newest {
            corrupt(t, &"checksum mismatch");
            return Ok(());
        }
        let lenient = !intact && !final_read;
        bump(&counters.chunks_parsed);
        let mut chunk = match data.parse(self.settings.clone()) {
            Ok(c) => c,
            Err(e) => {
                if lenient {
                    t.stalled = Some(Instant::now());
                } else {
                    corrupt(t, &e);
                }
                return Ok(());
            }
        };
        let (Some(tx), Some(stop_rx)) = (self.tx.as_ref(), self.stop_rx.as_ref()) else {
            return Err(Halt::Stop);
        };
        for record in chunk.iter() {
            let (id, result) = match record {
                Ok(r) => {
                    let id = r.event_record_id;
                    if id <= t.last {
                        continue;
                    }
                    (Some(id), r.into_xml().map(|s| s.data))
                }
                Err(e) => (None, Err(e)),
            };
            match (id, result) {
                (Some(id), Ok(xml)) => {
                    if self.shared.stop.load(Ordering::SeqCst) {
                        return Err(Halt::Stop);
                    }
                    let rec = EvtxRecord {
                        path: path.to_path_buf(),
                        record_id: id,
                        xml,
                    };
                    if t.anchor.is_none_or(|a| a.chunk != no) {
                        t.anchor = anchor_hash(file, no)
                            .ok()
                            .map(|hash| Anchor { chunk: no, hash });
                    }
                    // Published before the send: the consumer may commit the record before
                    // this thread runs again, and a commit above `handed` is refused (the
                    // record would come again after a restart). A send cut short by a stop
                    // leaves `committed` where it was.
                    if let Some(p) = lock(&self.shared.positions).files.get_mut(path) {
                        p.handed = id;
                        p.anchor = t.anchor;
                    }
                    crossbeam_channel::select! {
                        send(tx, rec) -> r => if r.is_err() {
                            return Err(Halt::Stop);
                        },
                        recv(stop_rx) -> _ => return Err(Halt::Stop),
                    }
                    bump(&counters.records);
                    t.last = id;
                }
                (id, Err(e)) => {
                    if lenient {
                        t.stalled = Some(Instant::now());
                        return Ok(());
                    }
                    bump(&counters.errors);
                    match id {
                        Some(id) => {
                            tracing::warn!(path = %path.display(), record_id = id, chunk = no,
                                error = %e, "evtx: corrupt record skipped");
                            t.last = id;
                        }
                        None => tracing::warn!(path = %path.display(), chunk = no,
                            error = %e, "evtx: corrupt record skipped"),
                    }
                }
                (None, Ok(_)) => {}
            }
        }
        Ok(())
    }
}
