//! Following files without loss: identity, checkpoints, rotation, framing.
//!
//! A [`Tailer`] follows every file matching a source's glob patterns and hands out records
//! (lines, or SEP binary-log records) with their file path and byte offset. The daemon runs
//! one per source in its own thread: `read_available` → `wait` in a loop, `checkpoint` every
//! second and on shutdown. The design follows Vector's file source (identity by content and
//! inode, checkpoint file written atomically, positions moved only after hand-off); the code
//! is our own.
//!
//! # Identity
//!
//! A file is known by what it is, not where it is: a platform key plus a content fingerprint
//! (`identity.rs`).
//! * **Key**: on Unix `(device, inode)`; on Windows `(volume serial number, file index)`
//!   of an open handle (`GetFileInformationByHandle`), which renames keep. Both are unique
//!   among existing files. Where the platform gives no identity the key hashes the path
//!   (or is the creation time, off Unix and Windows), and matches are confirmed by content.
//!   Files are opened with Windows share mode read | write | delete, so the writer can
//!   still rename or delete a file watchpost holds open.
//! * **Fingerprint**: FNV-1a of the first up to 256 bytes, with the number of bytes covered;
//!   it grows with a young file. A file matches when its first `len` bytes hash alike. This
//!   detects inode reuse (a checkpoint entry meeting a different file with the same inode)
//!   and in-place rewrites (copytruncate followed by enough new data to hide the shrink).
//!   It is checked whenever a file grew, or changed its modification time without growing
//!   (truncated and refilled to the same size); one read of at most 256 bytes.
//! * **SEP ring logs** (`Framing::SepBinary`) rewrite their header line in place (entry
//!   counts), so their fingerprint starts after the first line. When a ring log wraps and its
//!   first record changes, the file counts as rewritten and is read again from the start;
//!   the header's running total (sep-logs.md §2.1) lets the parser drop records seen before.
//!
//! # Checkpoints
//!
//! `checkpoint()` writes versioned JSON (`{"version":1,"files":[{dev,ino,fp,pos,path}]}`) to
//! `<path>.tmp`, syncs it, renames it over `<path>` and syncs the directory; unchanged
//! positions are not rewritten. Before writing, `checkpoint()` rescans the patterns (a file
//! created a moment ago is put in at offset 0 even if its notification is still on its way)
//! and re-checks every file's size and fingerprint (a file truncated since the last read is
//! put in at 0, not at a position past its new end). It delivers nothing; what it finds is
//! read by the next `read_available`. On start the main file is read, the tmp file if the
//! main one is missing or unreadable (an unknown version counts as unreadable). `pos` is the offset of the first byte not yet delivered and only
//! moves after the sink returned for the record before it. Entries of files that are no
//! longer found expire after [`TailOptions::forget_after`]. Without any checkpoint (first
//! start) files found by the first scan start at [`TailOptions::start_at`]; every file seen
//! later starts at 0; a checkpoint is written at once so a crash does not repeat the first
//! start.
//!
//! # Discovery and wake-ups
//!
//! `notify` (inotify on Linux) watches the *directory* of each pattern (recursively when
//! directory components have wildcards), or the nearest existing ancestor while it does not
//! exist. Modifications of matching files mark just those files; creations, deletions and
//! renames trigger a rescan of the patterns. A rename from a matching path to one the
//! patterns do not match tells where the file went, so it is followed there (even if it was
//! created and renamed between two scans and never opened before); inotify pairs the old
//! and new name itself, on Windows the old-name event directly followed by the new-name
//! event are paired (`watch.rs`). A slow poll (`poll_interval`) rescans and reads
//! everything to catch what notifications miss (network file systems, queue overflow, files
//! renamed out of the watched directory). Nothing sleeps on the read path.
//!
//! On Linux and Windows the directories of the files being followed are watched by the
//! tailer's thread itself, not `notify`'s (`direct/`): inotify for modifications,
//! creations, deletions, renames and attribute changes; `ReadDirectoryChangesW` for file
//! and directory names, size and last-write changes. [`wait`](Tailer::wait) blocks on those
//! watches and on a wake signal that `notify`'s events and [`Waker::wake`] raise. A line
//! appended to a followed file is so noticed and read after one thread wake-up instead of
//! two (`notify`'s thread, then the tailer's), counted in [`TailStats::direct_wakeups`];
//! `notify` no longer watches those directories (unless recursively) and reports the
//! others. Creations, renames and deletions there mean what they mean from `notify`
//! (above). Notifications lost there (a queue
//! or buffer overflow, counted in [`TailStats::overflows`]) ask for a rescan that reads
//! every file. On Windows one wait takes at most 63 directories per source; any further
//! directory is watched by `notify`, one hand-off later. On Windows,
//! `notify` 8.2 does not report an overflow of `ReadDirectoryChangesW`'s 16 KiB buffer (a
//! burst of thousands of changes between two reads): the changes are dropped, or the
//! directory is no longer watched, without a word (notify-rs/notify#963); the poll then
//! finds everything at a matching path, with up to `poll_interval` of delay.
//!
//! # Rotation and truncation
//!
//! * **rename + create**: the renamed file keeps its identity; it is read to its end through
//!   the open handle (its new path comes from the rename notification, else from a search
//!   of its directory by identity, and is kept in the checkpoint), and the new file at the
//!   old path is a new identity read from 0.
//! * **delete + recreate**: the deleted file is drained through its handle; the new one is
//!   read from 0. (Windows: with POSIX delete semantics, NTFS on Windows 10 1903 and later,
//!   the name goes at once. Otherwise the deleted file stays at its name, unopenable, until
//!   watchpost closes it after `idle_close`, and the name cannot be re-created until then.)
//! * **copytruncate / truncation**: size < read position, or changed first bytes → read again
//!   from 0 (counted in [`TailStats::truncations`]). Lines written between the last read and
//!   the copy exist only in the copy: exclude copies from the patterns (they are new files).
//! * **new files** matching a glob (SEP daily `MMDDYYYY.Log`) are read from 0. All matching
//!   files stay followed, not only the newest: SEP may still write yesterday's file.
//! * Files rotated away or deleted are closed once read to their end and idle for
//!   [`TailOptions::idle_close`]; a last line without terminator is delivered then (a writer
//!   can no longer be expected to finish it). A file that is still matched keeps its partial
//!   last line back until the terminator arrives.
//! * After a restart, checkpointed files not found by the patterns are looked up by identity
//!   in the directory they were last seen in, so a file rotated while watchpost was down is
//!   still read to its end.
//!
//! # Guarantees
//!
//! * Clean restart (`checkpoint()` then drop): no record lost, none delivered twice.
//! * Crash: no record lost; records after the last checkpoint may be delivered again. The
//!   daemon saves [`Tailer::mark`]s instead of [`Tailer::checkpoint`] while running: a mark
//!   goes to the progress file (`crate::progress`, one `pwrite`, kept when the process
//!   dies) once the actions of every record before it completed, so a crash repeats only
//!   what was in flight; [`Tailer::save_mark`] writes one as the checkpoint. On open the
//!   newer of checkpoint and progress file (by their sequence numbers) is used. A
//!   `Source::poll` reads at most 512 KiB per file, so a batch stays small in a backlog.
//! * Lost, because nothing is left to read or to find:
//!   - data overwritten before it was read (lines written between the last read and a
//!     copytruncate, ring logs overwritten while watchpost was down, a file truncated and
//!     refilled to at least its old size with the same first 256 bytes);
//!   - files deleted before they were ever opened (while watchpost was down, or within
//!     moments of their creation);
//!   - a file that sat at a matching path only for an instant (created and renamed out of
//!     the patterns) when watchpost stops or crashes before handling the rename
//!     notification and before a checkpoint took it in (the next checkpoint, within a
//!     second, would have);
//!   - after a crash, a file created after the last checkpoint and renamed out of the
//!     patterns before the crash, if it was not read to its end before the crash (its new
//!     name is known to no checkpoint);
//!   - a file renamed out of the patterns *and* truncated or rewritten while watchpost was
//!     down (its content no longer matches the checkpoint, so it is not taken for ours);
//!   - on Windows, once a burst overflowed the notification buffer (see above), a file
//!     created and renamed out of the patterns between two polls (its rename is not seen).
//!
//! # Records
//!
//! Lines are cut at LF; a CR before it is removed; bytes pass unchanged (parsers decode).
//! With [`Encoding::Auto`] a UTF-16 BOM switches to UTF-16 (lines found on code units and
//! transcoded to UTF-8; offsets stay file offsets); a UTF-8 BOM is dropped. Empty lines are
//! delivered as empty records. A record longer than `max_record_bytes` is skipped up to its
//! end and counted; memory per file stays below `max_record_bytes` + 64 KiB. SEP binary
//! records are cut by a [`FrameFn`]; the header line is delivered with
//! [`Record::is_header`] set (once, when the file is read from offset 0).
//!
//! # Errors
//!
//! A file that cannot be opened or read is logged (`tracing::warn!` with the path, repeated
//! at most every 10 minutes), counted in [`TailStats::errors`] and retried on later scans;
//! the other files go on. At most `max_open_files` files are open; further files wait
//! (counted in [`TailStats::files_deferred`]) and are read from 0 once a slot frees.

pub(crate) mod checkpoint;
mod direct;
mod file;
mod frame;
pub(crate) mod identity;
pub(crate) mod pattern;
mod scan;
pub(crate) mod watch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use crate::framer::{Frame, FrameFn};
pub use watch::Waker;

use crate::progress::{Mark, ProgressFile, progress_path};
use checkpoint::{Entry, Loaded};
use file::{Ctx, Cut, Followed};
use frame::TextEnc;
use pattern::Patterns;
use watch::{Shared, Watches};

/// Where files found at the first start (no checkpoint yet) begin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// Read existing content.
    Beginning,
    /// Skip existing content (a line being written is delivered whole).
    #[default]
    End,
}

/// How bytes are cut into records.
#[derive(Clone, Copy, Debug, Default)]
pub enum Framing {
    /// Lines ending in LF (CRLF accepted).
    #[default]
    Lines,
    /// SEP client ring logs: header line, then records by Entry Length ([`crate::sep::frame`]).
    SepBinary,
    /// Binary records cut by the given framer.
    Binary(FrameFn),
}

/// Text encoding of line-framed files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-16 LE/BE if the file starts with its BOM, else bytes as they are.
    #[default]
    Auto,
    /// Bytes as they are (a UTF-8 BOM is dropped).
    Utf8,
    /// UTF-16 little endian (a BOM is dropped).
    Utf16Le,
    /// UTF-16 big endian (a BOM is dropped).
    Utf16Be,
}

/// What to follow and how.
#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Glob patterns, absolute or relative to the current directory (`*`, `?`, `[..]`, `**`);
    /// a plain path is a pattern too.
    pub patterns: Vec<String>,
    /// Globs to skip: matched against the file name, or the whole path if they contain `/`.
    pub exclude: Vec<String>,
    /// Where files found at the first start (no checkpoint) begin.
    pub start_at: StartAt,
    /// How records are cut.
    pub framing: Framing,
    /// Longest record; longer ones are skipped to their end and counted.
    pub max_record_bytes: usize,
    /// Fallback rescan and read of everything, for what notifications miss.
    pub poll_interval: Duration,
    /// The checkpoint file, e.g. `<state_dir>/checkpoints/<source>.json`.
    pub checkpoint_path: PathBuf,
    /// Text encoding (line framing only).
    pub encoding: Encoding,
    /// How long a rotated-away or deleted file stays open after its last data.
    pub idle_close: Duration,
    /// How long a checkpoint entry of a file no longer found is kept.
    pub forget_after: Duration,
    /// Most files open at once.
    pub max_open_files: usize,
}

impl TailOptions {
    /// Options with defaults: start at the end, lines, auto encoding, 1 MiB records, 1 s poll,
    /// 60 s idle close, entries forgotten after 1 h, at most 1024 open files.
    pub fn new(patterns: Vec<String>, checkpoint_path: impl Into<PathBuf>) -> TailOptions {
        TailOptions {
            patterns,
            exclude: Vec::new(),
            start_at: StartAt::End,
            framing: Framing::Lines,
            max_record_bytes: 1 << 20,
            poll_interval: Duration::from_secs(1),
            checkpoint_path: checkpoint_path.into(),
            encoding: Encoding::Auto,
            idle_close: Duration::from_secs(60),
            forget_after: Duration::from_secs(3600),
            max_open_files: 1024,
        }
    }
}

/// One record.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The file's current path (as last seen).
    pub path: &'a Path,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Lines: without LF / CRLF (UTF-16 transcoded to UTF-8). Binary: the whole record.
    pub bytes: &'a [u8],
    /// A binary log's header record.
    pub is_header: bool,
}

/// What one `read_available` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Records delivered.
    pub records: u64,
    /// Bytes read from files.
    pub bytes: u64,
    /// A file had more than its per-call share; call again without waiting (`wait` returns
    /// at once).
    pub more: bool,
}

/// Counters since `open`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TailStats {
    /// Files open now.
    pub files_followed: usize,
    /// Bytes read.
    pub bytes_read: u64,
    /// Records delivered.
    pub records: u64,
    /// Records skipped for exceeding `max_record_bytes`.
    pub oversized_skipped: u64,
    /// Followed files that left their matching path (renamed away or deleted).
    pub rotations: u64,
    /// Files read again from 0 after truncation or an in-place rewrite.
    pub truncations: u64,
    /// Errors (files that could not be opened or read, watches, checkpoints).
    pub errors: u64,
    /// Times a file had to wait because `max_open_files` were open.
    pub files_deferred: u64,
    /// Fallback polls done.
    pub polls: u64,
    /// `wait` calls ended by a notification or a wake (not by a timeout).
    pub wakeups: u64,
    /// Of those, the ones ended by a change of a followed file that the tailer's own wait
    /// received (Linux, Windows): read on the tailer's thread with no other thread woken.
    pub direct_wakeups: u64,
    /// Times the tailer's own notifications were lost (a queue or buffer overflow), each
    /// answered by a rescan that reads every file.
    pub overflows: u64,
    /// Checkpoint files written.
    pub checkpoints_written: u64,
}

/// A tailer could not be set up or its checkpoint not be written.
#[derive(Debug, Error)]
pub enum TailError {
    /// A glob pattern is invalid.
    #[error("invalid file pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// An option is invalid.
    #[error("invalid tail options: {0}")]
    Options(String),
    /// Relative patterns need the current directory.
    #[error("cannot resolve relative paths: {0}")]
    CurrentDir(#[source] std::io::Error),
    /// The checkpoint file could not be written.
    #[error("cannot write checkpoint {path}: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A checkpoint entry of a file not open now.
#[derive(Debug)]
struct Dormant {
    entry: Entry,
    /// Since when no scan found the file.
    missing_since: Option<Instant>,
}

/// Reads at most this much from one file per `read_available` call.
const READ_BUDGET: u64 = 8 << 20;

/// Reads at most this much from one file per `Source::poll`: a poll is one batch whose
/// progress is saved when its actions completed, so a crash repeats at most about this
/// much per file (a few thousand lines), however large the backlog.
const POLL_BUDGET: u64 = 512 << 10;

/// Follows the files of one source. See the [module documentation](self).
pub struct Tailer {
    cut: Cut,
    start_at: StartAt,
    max_record: usize,
    poll_interval: Duration,
    idle_close: Duration,
    forget_after: Duration,
    max_open: usize,
    checkpoint_path: PathBuf,
    patterns: Arc<Patterns>,
    shared: Arc<Shared>,
    watches: Watches,
    /// Modifications noticed by the tailer's own wait (`direct/`; Linux, Windows).
    direct: Option<direct::Direct>,
    files: Vec<Followed>,
    dormant: Vec<Dormant>,
    /// No checkpoint existed at open and the first scan has not run: `start_at` applies.
    apply_start_at: bool,
    next_poll: Instant,
    /// Read everything at the next call (start, or a file's budget ran out).
    backlog: bool,
    /// Paths that could not be opened (errors, or the open-file cap) → when that was logged.
    failing: HashMap<PathBuf, Instant>,
    cap_warned: bool,
    last_saved: Option<Vec<Entry>>,
    /// Sequence number of the newest snapshot (checkpoint or mark).
    seq: u64,
    /// The last mark and the entries it holds.
    last_mark: Option<(Vec<Entry>, Mark)>,
    /// Sequence number of the last mark written as the checkpoint file.
    durable_seq: u64,
    stats: TailStats,
    scratch: Vec<u8>,
}

impl Tailer {
    /// Compiles the patterns, reads the checkpoint, starts watching and scans once (no records
    /// are delivered before the first `read_available`).
    pub fn open(opts: TailOptions) -> Result<Tailer, TailError> {
        let cut = resolve_cut(&opts)?;
        if opts.max_record_bytes == 0 || opts.max_open_files == 0 {
            return Err(TailError::Options(
                "max_record_bytes and max_open_files must be at least 1".into(),
            ));
        }
        let cwd = std::env::current_dir().map_err(TailError::CurrentDir)?;
        let checkpoint_path = pattern::absolute(&opts.checkpoint_path, &cwd);
        let ignore = vec![
            checkpoint_path.clone(),
            checkpoint::tmp_path(&checkpoint_path),
            progress_path(&checkpoint_path),
        ];
        let patterns = Arc::new(Patterns::new(&opts.patterns, &opts.exclude, ignore, &cwd)?);
        let shared = Arc::new(Shared::default());
        let (watches, watch_error) = Watches::new(shared.clone(), patterns.clone());
        let mut stats = TailStats::default();
        if let Some(e) = watch_error {
            tracing::warn!(error = %e, "tail: file notifications unavailable; polling only");
            stats.errors += 1;
        }
        let (entries, first_start, seq) = match checkpoint::load(&checkpoint_path) {
            Loaded::Found {
                entries,
                from_tmp,
                seq,
            } => {
                if from_tmp {
                    tracing::warn!(path = %checkpoint_path.display(), "tail: checkpoint restored from its tmp file");
                }
                (entries, false, seq)
            }
            Loaded::Missing => (Vec::new(), true, 0),
            Loaded::Unreadable(problems) => {
                tracing::warn!(path = %checkpoint_path.display(), problems = %problems.join("; "), "tail: checkpoint unreadable; starting as on a first start");
                stats.errors += 1;
                (Vec::new(), true, 0)
            }
        };
        let poll_interval = opts.poll_interval.max(Duration::from_millis(10));
        let direct = if watches.enabled() {
            direct::Direct::new(&shared)
                .inspect_err(|e| tracing::debug!(error = %e, "tail: no direct notifications"))
                .ok()
        } else {
            None
        };
        let mut tailer = Tailer {
            cut,
            start_at: opts.start_at,
            max_record: opts.max_record_bytes,
            poll_interval,
            idle_close: opts.idle_close,
            forget_after: opts.forget_after,
            max_open: opts.max_open_files,
            checkpoint_path,
            patterns,
            shared,
            watches,
            direct,
            files: Vec::new(),
            dormant: entries
                .into_iter()
                .map(|entry| Dormant {
                    entry,
                    missing_since: None,
                })
                .collect(),
            apply_start_at: first_start,
            next_poll: Instant::now() + poll_interval,
            backlog: true,
            failing: HashMap::new(),
            cap_warned: false,
            last_saved: None,
            seq,
            last_mark: None,
            durable_seq: seq,
            stats,
            scratch: Vec::new(),
        };
        tailer.rescan(Instant::now(), true, &[]);
        if first_start {
            tailer.checkpoint()?;
        }
        Ok(tailer)
    }

    /// Reads everything available now, calling `sink` per record, then returns. A file's
    /// position moves past a record only after `sink` returned for it.
    pub fn read_available(
        &mut self,
        sink: &mut dyn FnMut(Record<'_>),
    ) -> Result<ReadStats, TailError> {
        self.read_budgeted(sink, READ_BUDGET)
    }

    /// [`read_available`](Tailer::read_available) reading at most about `budget` bytes per
    /// file.
    fn read_budgeted(
        &mut self,
        sink: &mut dyn FnMut(Record<'_>),
        budget: u64,
    ) -> Result<ReadStats, TailError> {
        let pending = self.shared.take();
        let now = Instant::now();
        let poll = now >= self.next_poll;
        if poll {
            self.next_poll = now + self.poll_interval;
            self.stats.polls += 1;
        }
        let unknown = pending
            .dirty
            .iter()
            .any(|p| !self.files.iter().any(|f| &f.path == p) && !self.failing.contains_key(p));
        if poll || pending.rescan || unknown {
            self.rescan(now, false, &pending.moved);
        }
        let all = poll || pending.rescan || unknown || std::mem::take(&mut self.backlog);
        let before = self.stats;
        let mut i = 0;
        while i < self.files.len() {
            if !all && !pending.dirty.contains(&self.files[i].path) {
                i += 1;
                continue;
            }
            let mut cx = Ctx {
                cut: self.cut,
                max_record: self.max_record,
                stats: &mut self.stats,
                scratch: &mut self.scratch,
                now,
            };
            match self.files[i].read(&mut cx, sink, budget) {
                Ok(more) => {
                    self.backlog |= more;
                    self.files[i].trim();
                    i += 1;
                }
                Err(e) => {
                    let f = self.files.swap_remove(i);
                    self.note_failure(&f.path, &e, now);
                    self.dormant.push(Dormant {
                        entry: f.entry(),
                        missing_since: None,
                    });
                    self.publish_paths();
                }
            }
        }
        if poll {
            self.close_idle(now, sink);
        }
        Ok(ReadStats {
            records: self.stats.records - before.records,
            bytes: self.stats.bytes_read - before.bytes_read,
            more: self.backlog,
        })
    }

    /// Blocks until something may be readable (a notification, the fallback poll, or a
    /// [`Waker::wake`]), at most `max_wait`. Returns at once if a file has unread data left.
    pub fn wait(&mut self, max_wait: Duration) {
        if self.backlog {
            return;
        }
        let deadline = Instant::now()
            .checked_add(max_wait)
            .map_or(self.next_poll, |d| d.min(self.next_poll));
        if let Some(d) = &mut self.direct {
            match d.wait_until(&self.shared, &self.patterns, deadline) {
                Ok(w) => {
                    self.stats.wakeups += u64::from(w.pending);
                    self.stats.direct_wakeups += u64::from(w.direct);
                    self.stats.overflows += w.lost;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tail: waiting on notifications failed; leaving them to the notification thread");
                    self.stats.errors += 1;
                    self.leave_direct_wait();
                }
            }
        }
        if self.shared.wait_until(deadline) {
            self.stats.wakeups += 1;
        }
    }

    /// Drops the tailer's own wait: notify watches every pattern's directory and reports
    /// every change again from now on (a rescan covers the moment in between).
    fn leave_direct_wait(&mut self) {
        self.direct = None;
        self.shared
            .set_direct_dirs(std::collections::HashSet::new());
        self.hand_over_watches();
    }

    /// A handle that makes [`wait`](Tailer::wait) return at once, from any thread.
    pub fn waker(&self) -> Waker {
        Waker::new(self.shared.clone())
    }

    /// Writes the checkpoint file atomically (skipped when nothing changed since the last one).
    /// Rescans the patterns first, so every file matching now is in it.
    pub fn checkpoint(&mut self) -> Result<(), TailError> {
        self.prepare_checkpoint();
        let entries = self.entries();
        if self.last_saved.as_ref() == Some(&entries) {
            return Ok(());
        }
        self.seq += 1;
        if let Err(source) = checkpoint::save(&self.checkpoint_path, self.seq, &entries) {
            self.stats.errors += 1;
            return Err(TailError::Checkpoint {
                path: self.checkpoint_path.clone(),
                source,
            });
        }
        self.stats.checkpoints_written += 1;
        self.durable_seq = self.seq;
        self.last_saved = Some(entries);
        Ok(())
    }

    fn entries(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self.files.iter().map(Followed::entry).collect();
        entries.extend(self.dormant.iter().map(|d| d.entry.clone()));
        entries
    }

    /// A snapshot of the positions committed now (see [`crate::progress`]); with `full`,
    /// brought up to date with the files first, as [`checkpoint`](Tailer::checkpoint) does.
    pub fn mark(&mut self, full: bool) -> Mark {
        if full {
            self.prepare_checkpoint();
        }
        let entries = self.entries();
        if let Some((last, mark)) = &self.last_mark
            && *last == entries
        {
            return mark.clone();
        }
        self.seq += 1;
        let mark = Mark {
            seq: self.seq,
            bytes: checkpoint::encode(self.seq, &entries)
                .unwrap_or_default()
                .into(),
        };
        self.last_mark = Some((entries, mark.clone()));
        mark
    }

    /// Writes `mark` as the checkpoint file, atomically (skipped when it was already).
    pub fn save_mark(&mut self, mark: &Mark) -> Result<(), TailError> {
        if mark.seq <= self.durable_seq {
            return Ok(());
        }
        if let Err(source) = checkpoint::write_atomic(&self.checkpoint_path, &mark.bytes) {
            self.stats.errors += 1;
            return Err(TailError::Checkpoint {
                path: self.checkpoint_path.clone(),
                source,
            });
        }
        self.stats.checkpoints_written += 1;
        self.durable_seq = mark.seq;
        // The file no longer holds what `checkpoint` wrote last.
        self.last_saved = None;
        Ok(())
    }

    /// Brings positions up to date with the files without reading records: every file at a
    /// matching path now (also ones created or renamed a moment ago, whose notifications are
    /// still on their way) is put in the checkpoint, at its start if it was never read; files
    /// truncated or rewritten since the last read go back to 0. What changed is read next time.
    fn prepare_checkpoint(&mut self) {
        let pending = self.shared.take();
        let open_before = self.files.len();
        self.rescan(Instant::now(), false, &pending.moved);
        let mut cx = Ctx {
            cut: self.cut,
            max_record: self.max_record,
            stats: &mut self.stats,
            scratch: &mut self.scratch,
            now: Instant::now(),
        };
        let mut stale = false;
        for f in &mut self.files {
            stale |= f.revalidate(&mut cx).is_err();
        }
        if stale || self.files.len() != open_before || pending.woken || !pending.dirty.is_empty() {
            self.backlog = true;
        }
    }

    /// Counters since `open`.
    pub fn stats(&self) -> TailStats {
        TailStats {
            files_followed: self.files.len(),
            ..self.stats
        }
    }

    /// Whether file notifications work (else only the fallback poll finds changes).
    pub fn notifications(&self) -> bool {
        self.watches.enabled()
    }

    /// Closes files that left their matching path, were read to their end and stayed idle
    /// for `idle_close`, delivering a last unterminated line.
    fn close_idle(&mut self, now: Instant, sink: &mut dyn FnMut(Record<'_>)) {
        let mut i = 0;
        let mut closed = false;
        while i < self.files.len() {
            let f = &self.files[i];
            if f.matched || !f.drained() || now.duration_since(f.last_data) < self.idle_close {
                i += 1;
                continue;
            }
            let mut f = self.files.swap_remove(i);
            let mut cx = Ctx {
                cut: self.cut,
                max_record: self.max_record,
                stats: &mut self.stats,
                scratch: &mut self.scratch,
                now,
            };
            f.finish(&mut cx, sink);
            tracing::debug!(path = %f.path.display(), "tail: closed rotated-away file");
            self.dormant.push(Dormant {
                entry: f.entry(),
                missing_since: None,
            });
            closed = true;
        }
        if closed {
            self.publish_paths();
        }
    }
}

/// The framing and encoding to use.
fn resolve_cut(opts: &TailOptions) -> Result<Cut, TailError> {
    let forced = match opts.encoding {
        Encoding::Auto => None,
        Encoding::Utf8 => Some(TextEnc::Bytes),
        Encoding::Utf16Le => Some(TextEnc::Utf16Le),
        Encoding::Utf16Be => Some(TextEnc::Utf16Be),
    };
    let binary = |f: FrameFn| match forced {
        Some(TextEnc::Utf16Le | TextEnc::Utf16Be) => Err(TailError::Options(
            "UTF-16 encoding is only supported with line framing".into(),
        )),
        _ => Ok(Cut::Binary(f)),
    };
    match opts.framing {
        Framing::Lines => Ok(Cut::Lines(forced)),
        Framing::SepBinary => binary(crate::sep::frame),
        Framing::Binary(f) => binary(f),
    }
}

impl crate::source::Source for Tailer {
    fn poll(
        &mut self,
        deadline: Instant,
        sink: &mut dyn FnMut(crate::source::Item<'_>),
    ) -> Result<(), crate::source::SourceError> {
        use crate::source::{Item, Place, SourceError};
        self.wait(crate::source::until(deadline));
        self.read_budgeted(
            &mut |r: Record<'_>| {
                if !r.is_header {
                    sink(Item::Bytes {
                        bytes: r.bytes,
                        place: Place::Path(r.path),
                        offset: r.offset,
                        read_at: Instant::now(),
                    });
                }
            },
            POLL_BUDGET,
        )
        .map(drop)
        .map_err(SourceError::from_err)
    }

    fn checkpoint(&mut self) -> Result<(), crate::source::SourceError> {
        Tailer::checkpoint(self).map_err(crate::source::SourceError::from_err)
    }

    fn progress_file(&self) -> Option<ProgressFile> {
        let path = progress_path(&self.checkpoint_path);
        ProgressFile::open(&path)
            .inspect_err(|e| {
                tracing::warn!(path = %path.display(), error = %e, "tail: no progress file; a crash repeats what was read since the last checkpoint");
            })
            .ok()
    }

    fn mark(&mut self, full: bool) -> Option<Mark> {
        Some(Tailer::mark(self, full))
    }

    fn save_mark(&mut self, mark: &Mark) -> Result<(), crate::source::SourceError> {
        Tailer::save_mark(self, mark).map_err(crate::source::SourceError::from_err)
    }

    fn stopper(&self) -> crate::source::StopHandle {
        let waker = self.waker();
        crate::source::StopHandle::new(move || waker.wake())
    }

    fn close(mut self: Box<Self>, _: &mut dyn FnMut(crate::source::Item<'_>)) -> String {
        if let Err(e) = Tailer::checkpoint(&mut self) {
            tracing::error!(error = %e, "tail: final checkpoint failed");
        }
        format!("tail totals: {}", watchpost_event::logfmt(&self.stats()))
    }
}
