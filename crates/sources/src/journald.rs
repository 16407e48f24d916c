//! Following the systemd journal: `journalctl` as a child process, its JSON entries handed
//! to a bounded channel, the position kept as the journal's own `__CURSOR`.
//!
//! Two halves, like [`crate::listen`]:
//! * **Reading** (Linux only): [`Journal::start`] spawns
//!   `journalctl --follow --output=json --all --no-pager` (argv, never a shell) with
//!   `--after-cursor=C --no-tail` when a cursor is known, else `--no-tail`
//!   ([`StartAt::Beginning`](crate::tail::StartAt::Beginning)) or `--lines=0`
//!   ([`StartAt::End`](crate::tail::StartAt::End), the default: a first start reads only new
//!   entries), plus `--unit=…`, `--identifier=…` and `--directory=…` from
//!   [`JournalOptions`]. `--no-tail` matters: with `--follow`, journalctl otherwise shows
//!   only the last 10 entries after the cursor and silently skips the rest. A reader thread
//!   cuts stdout into lines and sends each as an [`Entry`] (its cursor plus the JSON line).
//!   When the channel is full the thread waits (journalctl's pipe fills and it waits too, so
//!   nothing is lost). When the child exits (journald restarted, the journal vacuumed, the
//!   process killed) it is started again after a back-off (100 ms doubling to 5 s, reset once
//!   a child delivers an entry), resuming after the last cursor *handed to the channel* — so a
//!   restart neither repeats nor skips an entry. (Before any entry was handed over, a start at
//!   the end restarts with `--since=@<start second>`: entries from up to a second before the
//!   start may come, none written while journalctl was down is skipped.) A rotated journal is not an exit: journalctl
//!   follows new files itself (measured with a second file appearing in `--directory`).
//! * **Parsing** (portable): [`JournalParser`] turns one JSON entry into an [`Event`].
//!
//! # Position and checkpoints
//!
//! The consumer calls [`Journal::commit`] with an entry's cursor once it has handled it;
//! [`Journal::checkpoint`] writes the last committed cursor to
//! [`JournalOptions::cursor_path`] (`{"version":1,"cursor":"…"}`, written to `<path>.tmp`,
//! synced, renamed, directory synced — the approach of the tail checkpoints) when it
//! changed. The next [`Journal::start`] resumes after it. [`Journal::shutdown`] (also run on
//! drop) kills the child, joins the thread and writes a final checkpoint. Entries still in
//! the channel and not committed are read again on the next start: after a clean shutdown
//! nothing handled is delivered twice, after a crash the entries since the last checkpoint
//! are. A checkpoint that cannot be read (nor its `.tmp`) is logged and counted, and the
//! journal is read as on a first start (as the tail checkpoints do).
//!
//! # Limits
//!
//! A line longer than [`JournalOptions::max_line_bytes`] (1 MiB by default) is skipped and
//! counted in [`JournalStats::oversized`]; a line without a readable `__CURSOR` (journalctl
//! always writes one) is skipped and counted in [`JournalStats::malformed`]. journalctl's
//! stderr is kept (the last 4 KiB) and logged when it exits; every unexpected exit counts in
//! [`JournalStats::errors`].
//!
//! # Field mapping ([`JournalParser`])
//!
//! | journal field | event |
//! |---|---|
//! | `__REALTIME_TIMESTAMP` (µs since the epoch) | [`Event::time`] |
//! | `_HOSTNAME` | [`Event::host`] (else the local host name) |
//! | `MESSAGE` | `message` |
//! | `SYSLOG_IDENTIFIER` | `program` |
//! | `_PID` | `pid` (a number when it is one) |
//! | `_SYSTEMD_UNIT` | `unit` |
//! | `PRIORITY` | `priority` (a number when it is one) |
//! | `_UID` | `uid` (a number when it is one) |
//! | `_COMM` | `comm` |
//! | `_EXE` | `exe` |
//! | `__CURSOR` | `cursor` |
//!
//! The short names come first; then **every** field is also kept under its journal name as
//! journalctl printed it (`MESSAGE`, `_PID`, `_SYSTEMD_UNIT`, `__CURSOR`, … — upper case,
//! as text), so filters can use either and nothing is lost. Values: a string is text; an
//! array of numbers is a binary or non-printable value and is decoded as UTF-8 (lossily); an
//! array of values is a field that occurs several times and is kept as a JSON array of
//! decoded strings (as [`crate::jsonl`] keeps arrays); `null` (a value journalctl did not
//! print) is left out. A name equal to a metadata name (`host`, `time`, …) is stored as
//! `<name>_field`. Field names are interned: after [`crate::jsonl::MAX_NEW_KEYS`] distinct
//! names first seen here, fields with further new names are dropped and counted in
//! `dropped_fields`. `raw` is the JSON line. A line that is not a JSON object (or not UTF-8,
//! or longer than 1 MiB) is a [`ParseError`].

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use jiff::Timestamp;
use serde_json::Value as Json;
use watchpost_event::{Event, Sym, Value};

use crate::parse::{ParseCtx, ParseError, Parser, Schema};
use crate::sep::common::check_len;

#[cfg(target_os = "linux")]
pub use reader::*;

/// Most distinct field names journal input may add to the symbol table.
const MAX_NEW_KEYS: usize = crate::jsonl::MAX_NEW_KEYS;
static NEW_KEYS: AtomicUsize = AtomicUsize::new(0);

/// Journal field → short name, in the order they are pushed.
const SHORT: [(&str, &str); 9] = [
    ("MESSAGE", "message"),
    ("SYSLOG_IDENTIFIER", "program"),
    ("_PID", "pid"),
    ("_SYSTEMD_UNIT", "unit"),
    ("PRIORITY", "priority"),
    ("_UID", "uid"),
    ("_COMM", "comm"),
    ("_EXE", "exe"),
    ("__CURSOR", "cursor"),
];

/// Short names whose values are numbers when they parse as one.
const NUMERIC: [&str; 3] = ["pid", "priority", "uid"];

static SHORT_SYMS: LazyLock<[Sym; 9]> = LazyLock::new(|| SHORT.map(|(_, s)| Sym::new(s)));
static DROPPED: LazyLock<Sym> = LazyLock::new(|| Sym::new("dropped_fields"));

/// Parser for `journalctl --output=json` lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalParser;

impl Parser for JournalParser {
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
        parse_entry(ctx, record)
    }

    fn schema(&self) -> Schema {
        Schema::Open
    }
}

/// Parses one journal entry as `journalctl --output=json` prints it.
pub fn parse_entry(ctx: &ParseCtx, line: &[u8]) -> Result<Event, ParseError> {
    check_len(line)?;
    let text = std::str::from_utf8(line)
        .map_err(|e| ParseError::new(e.valid_up_to(), "journal JSON must be UTF-8"))?;
    // serde_json limits nesting itself (128 levels); journal entries are flat.
    let value: Json = serde_json::from_str(text)
        .map_err(|e| ParseError::new(e.column().saturating_sub(1), format!("invalid JSON: {e}")))?;
    let Json::Object(obj) = value else {
        let at = text.len() - text.trim_start().len();
        return Err(ParseError::new(at, "a journal entry must be a JSON object"));
    };
    if obj.len() > crate::jsonl::MAX_FIELDS {
        return Err(ParseError::new(
            0,
            format!("more than {} fields", crate::jsonl::MAX_FIELDS),
        ));
    }
    let fields: Vec<(String, String)> = obj
        .into_iter()
        .filter_map(|(k, v)| field_text(v).map(|t| (k, t)))
        .collect();
    let find = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    let mut ev = Event::with_capacity(
        ctx.source.clone(),
        ctx.local_host.clone(),
        text.to_owned(),
        fields.len() + SHORT.len(),
    );
    if let Some(h) = find("_HOSTNAME")
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
    {
        ev.host = h.into();
    }
    ev.time = find("__REALTIME_TIMESTAMP")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(|us| Timestamp::from_microsecond(us).ok());
    for (i, (journal_name, _)) in SHORT.iter().enumerate() {
        let Some(v) = find(journal_name) else {
            continue;
        };
        let sym = SHORT_SYMS[i];
        let number = NUMERIC
            .contains(&sym.as_str())
            .then(|| v.trim().parse::<i64>().ok())
            .flatten();
        ev.push(
            sym,
            number.map_or_else(|| Value::Str(v.as_str().into()), Value::Int),
        );
    }
    let mut dropped = 0i64;
    for (name, v) in fields {
        match key_sym(&name) {
            Some(sym) => ev.push(sym, Value::Str(v.into_boxed_str())),
            None => dropped += 1,
        }
    }
    if dropped > 0 {
        ev.push(*DROPPED, Value::Int(dropped));
    }
    ev.finish();
    Ok(ev)
}

/// The text of one journal value (`None` for `null`).
fn field_text(v: Json) -> Option<String> {
    match v {
        Json::Null => None,
        Json::String(s) => Some(s),
        Json::Array(items) if is_bytes(&items) => Some(decode_bytes(&items)),
        Json::Array(items) => {
            // A field that occurs several times: its values, each decoded.
            let texts: Vec<Json> = items
                .into_iter()
                .filter_map(field_text)
                .map(Json::String)
                .collect();
            Some(Json::Array(texts).to_string())
        }
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        Json::Object(o) => Some(Json::Object(o).to_string()),
    }
}

/// Whether an array is a byte string (`[104,105]`): non-empty, every item 0–255.
fn is_bytes(items: &[Json]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|v| v.as_u64().is_some_and(|n| n <= u64::from(u8::MAX)))
}

fn decode_bytes(items: &[Json]) -> String {
    let bytes: Vec<u8> = items
        .iter()
        .filter_map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn key_sym(name: &str) -> Option<Sym> {
    let renamed;
    let name = if Sym::get(name).is_some_and(Sym::is_metadata) {
        renamed = format!("{name}_field");
        renamed.as_str()
    } else {
        name
    };
    if let Some(s) = Sym::get(name) {
        return Some(s);
    }
    if NEW_KEYS.fetch_add(1, Ordering::Relaxed) >= MAX_NEW_KEYS {
        NEW_KEYS.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Sym::try_new(name)
}

#[cfg(target_os = "linux")]
mod reader {
    use std::ffi::OsString;
    use std::fs;
    use std::io::{self, BufRead, BufReader, Read};
    use std::path::{Path, PathBuf};
    use std::process::{Child, ChildStderr, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    use crossbeam_channel::{Receiver, Sender};
    use serde::{Deserialize, Serialize};

    use crate::tail::StartAt;

    /// Default [`JournalOptions::queue`].
    pub const DEFAULT_QUEUE: usize = 65536;
    /// Default [`JournalOptions::max_line_bytes`].
    pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

    /// Checkpoint format version.
    const VERSION: u32 = 1;
    /// First wait before restarting journalctl.
    const BACKOFF_MIN: Duration = Duration::from_millis(100);
    /// Longest wait before restarting journalctl.
    const BACKOFF_MAX: Duration = Duration::from_secs(5);
    /// journalctl stderr kept for the log.
    const STDERR_KEEP: usize = 4096;
    /// Longest cursor accepted from a checkpoint file.
    const MAX_CURSOR: usize = 4096;

    /// What to follow and where to keep the position.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct JournalOptions {
        /// `--unit=…` for each (empty: every unit).
        pub units: Vec<String>,
        /// `--identifier=…` (SYSLOG_IDENTIFIER) for each, e.g. `sudo` (empty: all).
        pub identifiers: Vec<String>,
        /// `--directory=…`: a directory of journal files (tests, remote journals);
        /// `None`: the system journal.
        pub directory: Option<PathBuf>,
        /// Where a start without a cursor begins: [`StartAt::End`] reads only new entries.
        pub start_at: StartAt,
        /// The cursor checkpoint, e.g. `<state_dir>/checkpoints/<source>.json`.
        pub cursor_path: PathBuf,
        /// The journalctl program (looked up in `PATH` when it has no `/`).
        pub journalctl: PathBuf,
        /// Capacity of the channel to the consumer.
        pub queue: usize,
        /// Longest JSON line; longer entries are skipped and counted.
        pub max_line_bytes: usize,
    }

    impl JournalOptions {
        /// Options with the defaults: the whole system journal from its end, `journalctl`
        /// from `PATH`, a queue of 65536 entries, 1 MiB lines.
        pub fn new(cursor_path: impl Into<PathBuf>) -> JournalOptions {
            JournalOptions {
                units: Vec::new(),
                identifiers: Vec::new(),
                directory: None,
                start_at: StartAt::End,
                cursor_path: cursor_path.into(),
                journalctl: PathBuf::from("journalctl"),
                queue: DEFAULT_QUEUE,
                max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            }
        }

        fn check(&self) -> Result<(), JournalError> {
            if self.queue == 0 {
                return Err(JournalError::Options("queue must be at least 1".into()));
            }
            if self.max_line_bytes == 0 {
                return Err(JournalError::Options(
                    "max_line_bytes must be at least 1".into(),
                ));
            }
            for (what, list) in [("unit", &self.units), ("identifier", &self.identifiers)] {
                if let Some(bad) = list
                    .iter()
                    .find(|s| s.is_empty() || s.contains(['\n', '\0']))
                {
                    return Err(JournalError::Options(format!(
                        "{what} {bad:?} must be non-empty, without newline or NUL"
                    )));
                }
            }
            if let Some(d) = &self.directory
                && !d.is_dir()
            {
                return Err(JournalError::Options(format!(
                    "journal directory {} is not a readable directory",
                    d.display()
                )));
            }
            Ok(())
        }

        /// journalctl's arguments for reading from `from`.
        fn args(&self, from: &From) -> Vec<OsString> {
            let mut a: Vec<OsString> = ["--follow", "--output=json", "--all", "--no-pager"]
                .map(OsString::from)
                .into();
            match (from, self.start_at) {
                (From::After(c), _) => {
                    a.push(format!("--after-cursor={c}").into());
                    a.push("--no-tail".into());
                }
                (From::Since(secs), _) => {
                    a.push(format!("--since=@{secs}").into());
                    a.push("--no-tail".into());
                }
                (From::Start, StartAt::Beginning) => a.push("--no-tail".into()),
                (From::Start, StartAt::End) => a.push("--lines=0".into()),
            }
            for u in &self.units {
                a.push(format!("--unit={u}").into());
            }
            for i in &self.identifiers {
                a.push(format!("--identifier={i}").into());
            }
            if let Some(d) = &self.directory {
                let mut s = OsString::from("--directory=");
                s.push(d);
                a.push(s);
            }
            a
        }
    }

    /// Where a journalctl child starts reading.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum From {
        /// After this cursor.
        After(String),
        /// At this Unix second (a restart before any entry was handed over, start at end).
        Since(i64),
        /// As [`JournalOptions::start_at`] says.
        Start,
    }

    /// One journal entry as journalctl printed it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Entry {
        /// Its `__CURSOR`: pass it to [`Journal::commit`] once handled.
        pub cursor: String,
        /// The JSON line without its newline (input for [`super::JournalParser`]).
        pub json: Vec<u8>,
    }

    /// Counters since start.
    #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
    pub struct JournalStats {
        /// Entries handed to the channel.
        pub entries: u64,
        /// Bytes of those entries.
        pub bytes: u64,
        /// Times journalctl was started again after it exited.
        pub restarts: u64,
        /// Unexpected journalctl exits, spawn failures, read and checkpoint errors.
        pub errors: u64,
        /// Lines above `max_line_bytes`, skipped.
        pub oversized: u64,
        /// Lines without a readable `__CURSOR`, skipped.
        pub malformed: u64,
        /// The cursor of the last entry handed to the channel (where a restart resumes).
        pub last_cursor: Option<String>,
        /// The last committed cursor.
        pub committed: Option<String>,
        /// The process id of the running journalctl, if one runs.
        pub child_pid: Option<u32>,
    }

    /// Why the journal cannot be followed.
    #[derive(Debug, thiserror::Error)]
    pub enum JournalError {
        /// An option is out of range.
        #[error("journal options: {0}")]
        Options(String),
        /// journalctl could not be started.
        #[error("cannot run {program}: {source}")]
        Spawn {
            /// The program.
            program: PathBuf,
            /// The OS error.
            source: io::Error,
        },
        /// The reader thread could not be started.
        #[error("cannot start the journal reader thread: {0}")]
        Thread(io::Error),
        /// The checkpoint could not be written.
        #[error("cannot write the journal checkpoint {path}: {source}")]
        Checkpoint {
            /// The checkpoint file.
            path: PathBuf,
            /// The OS error.
            source: io::Error,
        },
    }

    #[derive(Default)]
    struct Counters {
        entries: AtomicU64,
        bytes: AtomicU64,
        restarts: AtomicU64,
        errors: AtomicU64,
        oversized: AtomicU64,
        malformed: AtomicU64,
    }

    struct Shared {
        opts: JournalOptions,
        stop: AtomicBool,
        /// When [`Journal::start`] ran, in Unix seconds.
        started: i64,
        counters: Counters,
        /// The running child; spawned and killed under this lock.
        child: Mutex<Option<Child>>,
        child_pid: AtomicU32,
        /// Last cursor handed to the channel (or loaded from the checkpoint).
        handed: Mutex<Option<String>>,
        /// Last cursor the consumer committed, and the one last written.
        committed: Mutex<(Option<String>, Option<String>)>,
    }

    use watchpost_support::lock;

    impl Shared {
        fn count(&self, c: impl Fn(&Counters) -> &AtomicU64) {
            c(&self.counters).fetch_add(1, Ordering::Relaxed);
        }

        /// Starts journalctl reading from `from`, unless stopping. Returns its stdout and
        /// stderr.
        fn spawn(
            &self,
            from: &From,
        ) -> Result<Option<(std::process::ChildStdout, ChildStderr)>, JournalError> {
            let mut slot = lock(&self.child);
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let mut child = Command::new(&self.opts.journalctl)
                .args(self.opts.args(from))
                .env("SYSTEMD_COLORS", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| JournalError::Spawn {
                    program: self.opts.journalctl.clone(),
                    source,
                })?;
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(JournalError::Spawn {
                    program: self.opts.journalctl.clone(),
                    source: io::Error::other("no stdout/stderr pipe"),
                });
            };
            self.child_pid.store(child.id(), Ordering::SeqCst);
            let after = match from {
                From::After(cursor) => format!("after cursor {cursor}"),
                From::Since(second) => format!("since Unix second {second}"),
                From::Start => "at the configured start".to_owned(),
            };
            tracing::info!(pid = child.id(), from = %after, "journald: journalctl started");
            *slot = Some(child);
            Ok(Some((out, err)))
        }

        /// Waits for the exited (or killed) child.
        fn reap(&self) -> Option<std::process::ExitStatus> {
            let child = lock(&self.child).take();
            self.child_pid.store(0, Ordering::SeqCst);
            child.and_then(|mut c| {
                let _ = c.kill();
                c.wait().ok()
            })
        }
    }

    /// A running journal follower. Stop it with [`shutdown`](Journal::shutdown) (dropping it
    /// does the same).
    pub struct Journal {
        shared: Arc<Shared>,
        /// Dropped on shutdown: wakes the reader from a full channel or a back-off.
        stop_tx: Option<Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    impl std::fmt::Debug for Journal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Journal")
                .field("cursor_path", &self.shared.opts.cursor_path)
                .finish_non_exhaustive()
        }
    }

    impl Journal {
        /// Loads the checkpoint, starts journalctl and the reader thread. Entries arrive on
        /// the returned channel (capacity `opts.queue`); dropping the receiver stops reading.
        pub fn start(opts: JournalOptions) -> Result<(Journal, Receiver<Entry>), JournalError> {
            opts.check()?;
            let mut errors = 0;
            let cursor = match load(&opts.cursor_path) {
                Ok(c) => c,
                Err(problems) => {
                    tracing::warn!(path = %opts.cursor_path.display(), problems = %problems.join("; "),
                        "journald: checkpoint unreadable; starting as on a first start");
                    errors += 1;
                    None
                }
            };
            let (tx, rx) = crossbeam_channel::bounded(opts.queue);
            let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
            let shared = Arc::new(Shared {
                opts,
                stop: AtomicBool::new(false),
                started: jiff::Timestamp::now().as_second(),
                counters: Counters::default(),
                child: Mutex::new(None),
                child_pid: AtomicU32::new(0),
                handed: Mutex::new(cursor.clone()),
                committed: Mutex::new((cursor.clone(), cursor.clone())),
            });
            shared.counters.errors.store(errors, Ordering::Relaxed);
            // The first child is started here so a missing journalctl is reported at once.
            let from = cursor.map_or(From::Start, From::After);
            let Some(pipes) = shared.spawn(&from)? else {
                return Err(JournalError::Options("stopped while starting".into()));
            };
            let sh = shared.clone();
            let thread = thread::Builder::new()
                .name("journald".into())
                .spawn(move || reader_loop(&sh, pipes, &tx, &stop_rx))
                .map_err(|e| {
                    shared.stop.store(true, Ordering::SeqCst);
                    shared.reap();
                    JournalError::Thread(e)
                })?;
            let journal = Journal {
                shared,
                stop_tx: Some(stop_tx),
                thread: Some(thread),
            };
            Ok((journal, rx))
        }

        /// Marks `cursor` handled; [`Journal::checkpoint`] persists it. Empty cursors are
        /// ignored.
        pub fn commit(&self, cursor: &str) {
            if cursor.is_empty() {
                return;
            }
            let mut c = lock(&self.shared.committed);
            if c.0.as_deref() != Some(cursor) {
                c.0 = Some(cursor.to_owned());
            }
        }

        /// Writes the last committed cursor atomically if it changed since the last write.
        pub fn checkpoint(&self) -> Result<(), JournalError> {
            let mut c = lock(&self.shared.committed);
            if c.0 == c.1 {
                return Ok(());
            }
            let Some(cursor) = c.0.clone() else {
                return Ok(());
            };
            let path = &self.shared.opts.cursor_path;
            match save(path, &cursor) {
                Ok(()) => {
                    c.1 = Some(cursor);
                    Ok(())
                }
                Err(source) => {
                    self.shared.count(|c| &c.errors);
                    Err(JournalError::Checkpoint {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }

        /// Counters since start.
        pub fn stats(&self) -> JournalStats {
            let c = &self.shared.counters;
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let pid = self.shared.child_pid.load(Ordering::SeqCst);
            JournalStats {
                entries: get(&c.entries),
                bytes: get(&c.bytes),
                restarts: get(&c.restarts),
                errors: get(&c.errors),
                oversized: get(&c.oversized),
                malformed: get(&c.malformed),
                last_cursor: lock(&self.shared.handed).clone(),
                committed: lock(&self.shared.committed).0.clone(),
                child_pid: (pid != 0).then_some(pid),
            }
        }

        /// Kills journalctl, joins the reader and writes a final checkpoint. Entries already
        /// in the channel stay there.
        pub fn shutdown(mut self) {
            self.stop();
        }

        fn stop(&mut self) {
            let Some(thread) = self.thread.take() else {
                return;
            };
            self.shared.stop.store(true, Ordering::SeqCst);
            drop(self.stop_tx.take());
            if let Some(child) = lock(&self.shared.child).as_mut() {
                let _ = child.kill();
            }
            if thread.join().is_err() {
                tracing::error!("journald: the reader thread panicked");
            }
            self.shared.reap();
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, "journald: final checkpoint failed");
            }
            tracing::info!(
                "journald: stopped: {}",
                watchpost_event::logfmt(&self.stats())
            );
        }
    }

    impl Drop for Journal {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// A [`Journal`] as a [`Source`](crate::source::Source): each entry's cursor is
    /// committed after the sink returned for it; entries not handed out when it closes
    /// are read again at the next start (after the last committed cursor).
    #[derive(Debug)]
    pub struct JournalSource {
        journal: Option<Journal>,
        wait: crate::source::Wakeable<Entry>,
        n: u64,
    }

    impl JournalSource {
        /// Starts journalctl.
        pub fn start(opts: JournalOptions) -> Result<JournalSource, JournalError> {
            let (journal, rx) = Journal::start(opts)?;
            Ok(JournalSource {
                journal: Some(journal),
                wait: crate::source::Wakeable::new(rx),
                n: 0,
            })
        }
    }

    impl crate::source::Source for JournalSource {
        fn poll(
            &mut self,
            deadline: Instant,
            sink: &mut dyn FnMut(crate::source::Item<'_>),
        ) -> Result<(), crate::source::SourceError> {
            let (journal, n) = (&self.journal, &mut self.n);
            self.wait.each(deadline, |entry| {
                sink(crate::source::Item::Bytes {
                    bytes: &entry.json,
                    place: crate::source::Place::Name("journal"),
                    offset: *n,
                    read_at: Instant::now(),
                });
                if let Some(j) = journal {
                    j.commit(&entry.cursor);
                }
                *n += 1;
            });
            Ok(())
        }

        fn checkpoint(&mut self) -> Result<(), crate::source::SourceError> {
            match &self.journal {
                Some(j) => j.checkpoint().map_err(crate::source::SourceError::from_err),
                None => Ok(()),
            }
        }

        fn stopper(&self) -> crate::source::StopHandle {
            self.wait.stopper()
        }

        fn close(mut self: Box<Self>, _: &mut dyn FnMut(crate::source::Item<'_>)) -> String {
            if let Some(j) = self.journal.take() {
                // Logs its totals.
                j.shutdown();
            }
            String::new()
        }
    }

    /// Reads children one after another until stopped.
    fn reader_loop(
        sh: &Shared,
        first: (std::process::ChildStdout, ChildStderr),
        tx: &Sender<Entry>,
        stop_rx: &Receiver<()>,
    ) {
        let mut pipes = Some(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some((out, err)) = pipes.take() {
                let stderr = thread::Builder::new()
                    .name("journald-stderr".into())
                    .spawn(move || keep_tail(err))
                    .ok();
                let (delivered, go_on) = read_child(sh, out, tx, stop_rx);
                let status = sh.reap();
                let msg = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
                if !go_on || sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                sh.count(|c| &c.errors);
                tracing::warn!(status = %status.map_or_else(|| "unknown".to_owned(), |s| s.to_string()), stderr = %msg.trim(), delivered,
                    "journald: journalctl exited; restarting");
                if delivered > 0 {
                    backoff = BACKOFF_MIN;
                }
            }
            // Back-off, cut short by shutdown.
            if stop_rx.recv_timeout(backoff).is_ok() || sh.stop.load(Ordering::SeqCst) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let from = match lock(&sh.handed).clone() {
                Some(c) => From::After(c),
                None if sh.opts.start_at == StartAt::End => From::Since(sh.started),
                None => From::Start,
            };
            match sh.spawn(&from) {
                Ok(Some(p)) => {
                    sh.count(|c| &c.restarts);
                    pipes = Some(p);
                }
                Ok(None) => return,
                Err(e) => {
                    sh.count(|c| &c.errors);
                    tracing::warn!(error = %e, "journald: cannot restart journalctl");
                }
            }
        }
    }

    /// Reads one child's stdout to its end. Returns the entries delivered and whether to go
    /// on (false: stopping or the receiver is gone).
    fn read_child(
        sh: &Shared,
        out: std::process::ChildStdout,
        tx: &Sender<Entry>,
        stop_rx: &Receiver<()>,
    ) -> (u64, bool) {
        #[derive(Deserialize)]
        struct CursorOnly {
            #[serde(rename = "__CURSOR")]
            cursor: String,
        }
        let mut r = BufReader::with_capacity(64 * 1024, out);
        let mut line = Vec::new();
        let mut delivered = 0;
        loop {
            match read_line(&mut r, &mut line, sh.opts.max_line_bytes) {
                Ok(Line::Eof) => return (delivered, true),
                Ok(Line::Oversized) => {
                    sh.count(|c| &c.oversized);
                    tracing::warn!(
                        limit = sh.opts.max_line_bytes,
                        "journald: entry too long, skipped"
                    );
                }
                Ok(Line::Full) => {
                    let cursor = match serde_json::from_slice::<CursorOnly>(&line) {
                        Ok(c) if !c.cursor.is_empty() => c.cursor,
                        _ => {
                            sh.count(|c| &c.malformed);
                            tracing::warn!(
                                line = %String::from_utf8_lossy(&line[..line.len().min(200)]),
                                "journald: line without a readable __CURSOR, skipped"
                            );
                            continue;
                        }
                    };
                    let n = line.len() as u64;
                    let entry = Entry {
                        cursor: cursor.clone(),
                        json: std::mem::take(&mut line),
                    };
                    crossbeam_channel::select! {
                        send(tx, entry) -> r => if r.is_err() {
                            return (delivered, false);
                        },
                        recv(stop_rx) -> _ => return (delivered, false),
                    }
                    *lock(&sh.handed) = Some(cursor);
                    sh.counters.entries.fetch_add(1, Ordering::Relaxed);
                    sh.counters.bytes.fetch_add(n, Ordering::Relaxed);
                    delivered += 1;
                }
                Err(e) => {
                    if !sh.stop.load(Ordering::SeqCst) {
                        tracing::warn!(error = %e, "journald: reading journalctl failed");
                    }
                    return (delivered, true);
                }
            }
        }
    }

    enum Line {
        /// `buf` holds one whole line (without LF).
        Full,
        /// A line above the limit was skipped.
        Oversized,
        /// End of output (a last line without LF — a child killed mid-write — is dropped:
        /// its entry is read again after the restart).
        Eof,
    }

    /// Reads one LF-terminated line into `buf`, never holding more than `max` bytes.
    fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
        buf.clear();
        let mut over = false;
        loop {
            let avail = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(Line::Eof);
            }
            let (take, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            if !over {
                if buf.len() + take > max {
                    over = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(&avail[..take]);
                }
            }
            r.consume(take + usize::from(done));
            if done {
                return Ok(if over { Line::Oversized } else { Line::Full });
            }
        }
    }

    /// Reads a pipe to its end, keeping the last [`STDERR_KEEP`] bytes.
    fn keep_tail(mut err: ChildStderr) -> String {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match err.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > STDERR_KEEP {
                        kept.drain(..kept.len() - STDERR_KEEP);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    }

    #[derive(Serialize, Deserialize)]
    struct Doc {
        version: u32,
        cursor: String,
    }

    use crate::tail::checkpoint::tmp_path;

    /// The saved cursor: `Ok(None)` when neither the file nor its tmp exists, `Err` with
    /// the reasons when files exist but none is usable.
    fn load(path: &Path) -> Result<Option<String>, Vec<String>> {
        let mut problems = Vec::new();
        for candidate in [path.to_path_buf(), tmp_path(path)] {
            match fs::read(&candidate) {
                Ok(bytes) => match parse_doc(&bytes) {
                    Ok(c) => return Ok(Some(c)),
                    Err(m) => problems.push(format!("{}: {m}", candidate.display())),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("{}: {e}", candidate.display())),
            }
        }
        if problems.is_empty() {
            Ok(None)
        } else {
            Err(problems)
        }
    }

    fn parse_doc(bytes: &[u8]) -> Result<String, String> {
        crate::tail::checkpoint::check_version(bytes, VERSION)?;
        let doc: Doc = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let c = doc.cursor;
        // journalctl cursors are `k=v;k=v…` (s=, i=, b=, m=, t=, x=).
        let looks_valid = !c.is_empty()
            && c.len() <= MAX_CURSOR
            && !c.chars().any(char::is_control)
            && c.split(';').all(|kv| kv.split_once('=').is_some());
        if !looks_valid {
            return Err(format!("not a journal cursor: {c:?}"));
        }
        Ok(c)
    }

    /// Writes the cursor atomically (the tailer's checkpoint writer).
    fn save(path: &Path, cursor: &str) -> io::Result<()> {
        let doc = Doc {
            version: VERSION,
            cursor: cursor.to_owned(),
        };
        crate::tail::checkpoint::write_atomic(
            path,
            &serde_json::to_vec(&doc).map_err(io::Error::other)?,
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn args_per_start() {
            let mut o = JournalOptions::new("/x/cp.json");
            o.units = vec!["ssh.service".into()];
            o.identifiers = vec!["sudo".into()];
            o.directory = Some("/j".into());
            let s = |a: Vec<OsString>| {
                a.iter()
                    .map(|x| x.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert_eq!(
                s(o.args(&From::Start)),
                "--follow --output=json --all --no-pager --lines=0 --unit=ssh.service \
                 --identifier=sudo --directory=/j"
            );
            o.start_at = StartAt::Beginning;
            assert!(s(o.args(&From::Start)).contains(" --no-tail "));
            let after = From::After("s=1;i=2".into());
            assert!(s(o.args(&after)).contains(" --after-cursor=s=1;i=2 --no-tail "));
            assert!(s(o.args(&From::Since(17))).contains(" --since=@17 --no-tail "));
        }

        #[test]
        fn bounded_lines() {
            let data = b"short\nthis line is long\nok\npartial".to_vec();
            let mut r = BufReader::with_capacity(4, &data[..]);
            let mut buf = Vec::new();
            assert!(matches!(
                read_line(&mut r, &mut buf, 8).unwrap(),
                Line::Full
            ));
            assert_eq!(buf, b"short");
            assert!(matches!(
                read_line(&mut r, &mut buf, 8).unwrap(),
                Line::Oversized
            ));
            assert!(matches!(
                read_line(&mut r, &mut buf, 8).unwrap(),
                Line::Full
            ));
            assert_eq!(buf, b"ok");
            assert!(matches!(read_line(&mut r, &mut buf, 8).unwrap(), Line::Eof));
        }

        #[test]
        fn checkpoint_round_trip_and_validation() {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("cp").join("j.json");
            assert_eq!(load(&p), Ok(None));
            save(&p, "s=ab;i=3;b=cd").unwrap();
            assert!(!tmp_path(&p).exists());
            assert_eq!(load(&p), Ok(Some("s=ab;i=3;b=cd".into())));
            fs::write(&p, br#"{"version":1,"cursor":"garbage"}"#).unwrap();
            assert!(load(&p).unwrap_err()[0].contains("not a journal cursor"));
            fs::write(&p, br#"{"version":2,"cursor":"s=1"}"#).unwrap();
            assert!(load(&p).unwrap_err()[0].contains("version 2"));
            fs::write(tmp_path(&p), br#"{"version":1,"cursor":"s=1;i=2"}"#).unwrap();
            assert_eq!(load(&p), Ok(Some("s=1;i=2".into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchpost_event::FieldRef;

    fn ctx() -> ParseCtx {
        ParseCtx::new("journal", "localbox")
    }

    #[test]
    fn maps_fields_and_metadata() {
        let line = br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000123456","_HOSTNAME":"web1","MESSAGE":"Accepted publickey for alice","SYSLOG_IDENTIFIER":"sshd","_PID":"1234","_SYSTEMD_UNIT":"ssh.service","PRIORITY":"6","_UID":"0","_COMM":"sshd","_EXE":"/usr/sbin/sshd","FOO":["a","b"],"BIN":[104,105,255],"GONE":null}"#;
        let ev = parse_entry(&ctx(), line).unwrap();
        assert_eq!(ev.time.unwrap().as_microsecond(), 1_700_000_000_123_456);
        assert_eq!(&*ev.host, "web1");
        let s = |n: &str| ev.get_str(Sym::new(n)).map(|c| c.into_owned());
        assert_eq!(s("message").unwrap(), "Accepted publickey for alice");
        assert_eq!(s("MESSAGE").unwrap(), "Accepted publickey for alice");
        assert_eq!(s("program").unwrap(), "sshd");
        assert_eq!(ev.get(Sym::new("pid")), Some(FieldRef::Int(1234)));
        assert_eq!(s("_PID").unwrap(), "1234");
        assert_eq!(ev.get(Sym::new("priority")), Some(FieldRef::Int(6)));
        assert_eq!(ev.get(Sym::new("uid")), Some(FieldRef::Int(0)));
        assert_eq!(s("unit").unwrap(), "ssh.service");
        assert_eq!(s("comm").unwrap(), "sshd");
        assert_eq!(s("exe").unwrap(), "/usr/sbin/sshd");
        assert_eq!(s("cursor").unwrap(), "s=1;i=2");
        assert_eq!(s("_HOSTNAME").unwrap(), "web1");
        assert_eq!(s("FOO").unwrap(), r#"["a","b"]"#);
        assert_eq!(s("BIN").unwrap(), "hi\u{fffd}");
        assert_eq!(s("GONE"), None);
        assert_eq!(&*ev.source, "journal");
        assert_eq!(ev.raw.as_bytes(), line);
    }

    #[test]
    fn binary_message_and_odd_values() {
        let ev = parse_entry(
            &ctx(),
            br#"{"MESSAGE":[98,105,110,1,255],"_PID":"x1","__REALTIME_TIMESTAMP":"soon","host":"h","E":[]}"#,
        )
        .unwrap();
        let s = |n: &str| ev.get_str(Sym::new(n)).map(|c| c.into_owned());
        assert_eq!(s("message").unwrap(), "bin\u{1}\u{fffd}");
        assert_eq!(s("pid").unwrap(), "x1");
        assert_eq!(ev.time, None);
        assert_eq!(&*ev.host, "localbox");
        assert_eq!(s("host_field").unwrap(), "h");
        assert_eq!(s("E").unwrap(), "[]");
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b""[..],
            b"not json",
            b"{\"MESSAGE\":",
            b"[1,2]",
            b"  \"text\"",
            b"{\"MESSAGE\":\"\xff\"}",
            b"{\"a\":1}{",
        ] {
            let e = parse_entry(&ctx(), bad).unwrap_err();
            assert!(!e.message.is_empty(), "{bad:?}");
        }
        assert_eq!(parse_entry(&ctx(), b"  [1]").unwrap_err().column, 2);
        let long = vec![b' '; (1 << 20) + 1];
        assert!(
            parse_entry(&ctx(), &long)
                .unwrap_err()
                .message
                .contains("limit")
        );
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_entry(&ctx(), format!("{{\"A\":{deep}}}").as_bytes()).is_err());
    }
}
