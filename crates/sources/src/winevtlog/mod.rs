//! Following the live Windows Event Log: channels subscribed in pull mode, each event
//! rendered as XML and turned into an [`Event`] by [`crate::winevent`], the position kept
//! as one bookmark per channel.
//!
//! Two halves:
//! * **The loop** (portable, this module): [`WinEvtLog`] subscribes every channel, waits
//!   for a signal, pulls batches, renders and parses each event, hands it to the caller's
//!   sink, and then moves the channel's bookmark past the batch and writes the checkpoint.
//!   It speaks to Windows only through the [`EventLogApi`] trait, so every rule below is
//!   tested with a fake implementation on Linux and under Wine
//!   (`crates/sources/tests/winevtlog.rs`).
//! * **The API** (`win.rs`, Windows only): [`win::WinApi`] implements the trait with
//!   wevtapi calls and nothing else: `EvtSubscribe` with a signal event (pull mode:
//!   callbacks are not used, they drop events under load),
//!   `WaitForMultipleObjects` on the signal events plus a stop event, `EvtNext` until
//!   `ERROR_NO_MORE_ITEMS`, `EvtRender(EvtRenderEventXml)`, `EvtCreateBookmark` /
//!   `EvtUpdateBookmark` / `EvtRender(EvtRenderBookmark)`, and `EvtOpenPublisherMetadata`
//!   with `EvtFormatMessage(EvtFormatMessageEvent)` (publisher handles cached per
//!   provider) for the message text. Handles are closed by `Drop`.
//!
//! # Order of work and what a restart sees
//!
//! One thread does everything for one source, so there is no channel to a consumer and no
//! separate commit call: [`WinEvtLog::poll`] hands each event of a batch to the sink, and
//! only when the sink has returned for every event of the batch does it update the
//! channel's bookmark to the batch's last event and write the checkpoint. The sink hands
//! events on synchronously (in `watchpost run` it runs the filter chain and queues the
//! actions), so a bookmark never gets ahead of what was handled:
//!
//! * after a clean stop (and after every batch) the checkpoint names the last handled
//!   event of every channel: a restart resumes after it, nothing lost, nothing repeated;
//! * after a crash in the middle of a batch, the events of that batch that were already
//!   handed on are delivered again (at most `batch_size` per channel), nothing is lost.
//!
//! A channel without a bookmark (first start, or the channel was added to the
//! configuration) starts at [`StartAt::End`] (only new events, the default) or
//! [`StartAt::Beginning`] (the oldest record still in the log). Bookmarks are kept for
//! channels no longer configured, so adding one back resumes where it stopped.
//!
//! # Checkpoint file
//!
//! `{"version":1,"channels":{"Security":"<BookmarkList>…</BookmarkList>",…}}`: the bookmark
//! XML of each channel as Windows renders it, written to `<path>.tmp`, synced, renamed over
//! the checkpoint, directory synced ([`watchpost_support::write_atomic`]). A file
//! that cannot be read (nor its `.tmp`) is logged and counted, and the start is treated as
//! a first start; a bookmark Windows refuses is logged, counted and that channel starts as
//! on a first start.
//!
//! Cost: one checkpoint write (tmp + fsync + rename) per batch. While a burst lasts,
//! batches are full (`batch_size` events, 100 by default), so the writes are amortised;
//! a quiet log writes once per event that arrives alone.
//!
//! # Batches and fairness
//!
//! When a signal (or the poll timeout) wakes the loop, every subscribed channel is asked
//! for one batch of up to `batch_size` events in turn, round after round, until a round
//! brings no full batch: a flooded channel cannot starve the others. A stop request is
//! noticed between batches. Signal events are reset before the draining starts, so an
//! event arriving during it signals again and nothing waits for the next timeout.
//!
//! # Errors
//!
//! * A channel that cannot be subscribed (not found: the log is not installed, e.g. Sysmon;
//!   access denied: the Security log needs Administrator or *Event Log Readers*) is reported
//!   with the source and channel and what to do, counted, and tried again with back-off
//!   (1 s doubling to 60 s; repeated failures are logged at debug level, the recovery at
//!   info). The other channels keep going. An invalid query is reported and the channel is
//!   given up: retrying cannot fix it.
//! * A subscription that fails while reading (the Event Log service restarted, the log was
//!   cleared under a result set) is dropped and subscribed again after its bookmark, with
//!   the same back-off.
//! * An event whose XML does not render or does not parse is reported with the source,
//!   channel and record id (found in the XML text when it can be), counted in
//!   [`WinEvtStats::malformed`], and skipped; the bookmark still moves past it, nothing
//!   else is lost.
//! * A checkpoint write that fails is logged, counted, and tried again every round (at
//!   least every `poll_interval`), also when no new event comes.
//!
//! # Fields
//!
//! Exactly those of [`crate::winevent`] (the EVTX source's): `event_id`, `provider`,
//! `channel`, `record_id`, … and the `<EventData>` insertion strings by name and as
//! `str1` … `strN`. With `render_message` (the default) the message text from
//! `EvtFormatMessage` is added to the XML as `<RenderingInfo><Message>` (as Event Viewer's
//! XML view shows it), so it becomes the `message` field and the event's `raw` XML replays
//! the same through `watchpost test`. When the provider's message file is missing the
//! event comes without `message`. [`Event::origin`] is the channel and the record id.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use watchpost_event::{Event, Origin};

use crate::parse::ParseCtx;
use crate::tail::StartAt;
use crate::tail::checkpoint::tmp_path;

#[cfg(windows)]
pub mod win;

/// Checkpoint format version.
const VERSION: u32 = 1;
/// Default [`WinEvtOptions::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Largest [`WinEvtOptions::batch_size`].
pub const MAX_BATCH_SIZE: usize = 1024;
/// Most channels one source can follow (`WaitForMultipleObjects` waits on at most 64
/// handles, one of them the stop event).
pub const MAX_CHANNELS: usize = 63;
/// Default [`WinEvtOptions::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Malformed events reported in full; after that only at powers of two.
const REPORT_ALL: u64 = 100;

/// One channel to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The channel path, e.g. `Security`, `Microsoft-Windows-Sysmon/Operational`.
    pub name: String,
    /// An XPath query (`*[System[(EventID=4624 or EventID=4625)]]`); `None`: every event.
    pub query: Option<String>,
}

impl ChannelSpec {
    /// A channel with every event.
    pub fn new(name: impl Into<String>) -> ChannelSpec {
        ChannelSpec {
            name: name.into(),
            query: None,
        }
    }
}

/// What to follow and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WinEvtOptions {
    /// The source name (for messages).
    pub source: String,
    /// The channels.
    pub channels: Vec<ChannelSpec>,
    /// Where a channel without a bookmark starts.
    pub start_at: StartAt,
    /// Add the message text (`EvtFormatMessage`) as the `message` field.
    pub render_message: bool,
    /// Most events pulled from a channel at once (1 … [`MAX_BATCH_SIZE`]).
    pub batch_size: usize,
    /// The checkpoint file, e.g. `<state_dir>/checkpoints/<source>.json`.
    pub checkpoint_path: PathBuf,
    /// Longest wait without a signal before the channels are asked anyway (and failed
    /// subscriptions retried when due).
    pub poll_interval: Duration,
    /// First wait before subscribing a failed channel again.
    pub retry_min: Duration,
    /// Longest wait before subscribing a failed channel again.
    pub retry_max: Duration,
}

impl WinEvtOptions {
    /// Options with the defaults: start at the end, messages rendered, batches of 100,
    /// poll every second, retry after 1 s doubling to 60 s.
    pub fn new(
        source: impl Into<String>,
        channels: Vec<ChannelSpec>,
        checkpoint_path: impl Into<PathBuf>,
    ) -> WinEvtOptions {
        WinEvtOptions {
            source: source.into(),
            channels,
            start_at: StartAt::End,
            render_message: true,
            batch_size: DEFAULT_BATCH_SIZE,
            checkpoint_path: checkpoint_path.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }

    fn check(&self) -> Result<(), WinEvtError> {
        let bad = |m: String| Err(WinEvtError::Options(m));
        if self.channels.is_empty() {
            return bad("at least one channel is needed".into());
        }
        if self.channels.len() > MAX_CHANNELS {
            return bad(format!("at most {MAX_CHANNELS} channels per source"));
        }
        for (i, c) in self.channels.iter().enumerate() {
            if c.name.trim().is_empty() || c.name.contains('\0') {
                return bad(format!("channel name {:?} is empty or has NUL", c.name));
            }
            if c.query
                .as_deref()
                .is_some_and(|q| q.trim().is_empty() || q.contains('\0'))
            {
                return bad(format!(
                    "the query of channel {} is empty or has NUL",
                    c.name
                ));
            }
            if self.channels[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&c.name))
            {
                return bad(format!("channel {} is listed twice", c.name));
            }
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return bad(format!("batch_size must be 1 … {MAX_BATCH_SIZE}"));
        }
        if self.poll_interval.is_zero() || self.retry_min.is_zero() {
            return bad("poll_interval and retry_min must be above zero".into());
        }
        Ok(())
    }
}

/// Where a subscription starts.
pub enum Start<'a, B> {
    /// After the bookmarked event (`EvtSubscribeStartAfterBookmark`).
    AfterBookmark(&'a B),
    /// At the oldest record in the log (`EvtSubscribeStartAtOldestRecord`).
    Oldest,
    /// With events written from now on (`EvtSubscribeToFutureEvents`).
    Future,
}

impl<B> fmt::Debug for Start<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Start::AfterBookmark(_) => "after bookmark",
            Start::Oldest => "oldest record",
            Start::Future => "future events",
        })
    }
}

/// What kind of failure an API call reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// The channel does not exist (`ERROR_EVT_CHANNEL_NOT_FOUND`).
    ChannelNotFound,
    /// Not allowed to read the channel (`ERROR_ACCESS_DENIED`).
    AccessDenied,
    /// The XPath query is invalid (`ERROR_EVT_INVALID_QUERY`).
    InvalidQuery,
    /// Anything else.
    Other,
}

/// A failed API call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (Windows error {code})")]
pub struct ApiError {
    /// The kind, for the loop's decisions and messages.
    pub kind: ApiErrorKind,
    /// The Win32 error code (0 when the API gave none).
    pub code: u32,
    /// What failed.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(kind: ApiErrorKind, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            code,
            message: message.into(),
        }
    }
}

/// What a wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A subscription signalled new events.
    Ready,
    /// The timeout passed.
    Timeout,
    /// The stop event is set.
    Stop,
}

pub use crate::source::StopHandle;

/// The Windows Event Log calls the loop needs, one method per call (see the module doc).
/// Handles are owned values closed on drop.
pub trait EventLogApi {
    /// A subscription (`EvtSubscribe` handle and its signal event).
    type Subscription;
    /// An event handle from `EvtNext`.
    type Event;
    /// A bookmark handle.
    type Bookmark;

    /// Subscribes `channel` with an XPath `query` (`*` for every event).
    fn subscribe(
        &mut self,
        channel: &str,
        query: &str,
        start: Start<'_, Self::Bookmark>,
    ) -> Result<Self::Subscription, ApiError>;
    /// Waits until one of `subs` signals, the stop event is set, or `timeout` passes;
    /// resets the signals before returning [`Wake::Ready`].
    fn wait(&mut self, subs: &[&Self::Subscription], timeout: Duration) -> Wake;
    /// Whether the stop event is set (checked between batches).
    fn stop_requested(&self) -> bool;
    /// A handle that sets the stop event.
    fn stop_handle(&self) -> StopHandle;
    /// Up to `max` events (`EvtNext`); empty when there are no more (`ERROR_NO_MORE_ITEMS`).
    fn next(
        &mut self,
        sub: &mut Self::Subscription,
        max: usize,
    ) -> Result<Vec<Self::Event>, ApiError>;
    /// The event as XML (`EvtRender(EvtRenderEventXml)`).
    fn render_xml(&mut self, event: &Self::Event) -> Result<String, ApiError>;
    /// The event's message text from its provider's message table, if there is one.
    fn format_message(&mut self, event: &Self::Event, provider: &str) -> Option<String>;
    /// A bookmark from its XML, or an empty one (`EvtCreateBookmark`).
    fn create_bookmark(&mut self, xml: Option<&str>) -> Result<Self::Bookmark, ApiError>;
    /// Moves `bookmark` to `event` (`EvtUpdateBookmark`).
    fn update_bookmark(
        &mut self,
        bookmark: &mut Self::Bookmark,
        event: &Self::Event,
    ) -> Result<(), ApiError>;
    /// The bookmark as XML (`EvtRender(EvtRenderBookmark)`).
    fn bookmark_xml(&mut self, bookmark: &Self::Bookmark) -> Result<String, ApiError>;
}

/// Why the log cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum WinEvtError {
    /// An option is out of range.
    #[error("windows_event_log options: {0}")]
    Options(String),
    /// The API could not be set up.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The checkpoint could not be written.
    #[error("cannot write the event log checkpoint {path}: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Counters of one channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    /// The channel.
    pub name: String,
    /// Whether it is subscribed now.
    pub subscribed: bool,
    /// Events handed to the sink.
    pub events: u64,
    /// Events that did not render or parse.
    pub malformed: u64,
    /// Failed subscriptions and reads.
    pub errors: u64,
    /// The last failure, while it is not resolved.
    pub last_error: Option<String>,
    /// The committed bookmark XML (not in log lines: it is long).
    #[serde(skip)]
    pub bookmark: Option<String>,
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WinEvtStats {
    /// Events handed to the sink.
    pub events: u64,
    /// Events that did not render or parse (reported and skipped).
    pub malformed: u64,
    /// API failures (subscribe, read, bookmark) and checkpoint problems.
    pub errors: u64,
    /// Checkpoint files written.
    pub checkpoints: u64,
    /// Per channel, in configuration order.
    pub channels: Vec<ChannelStats>,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    version: u32,
    channels: BTreeMap<String, String>,
}

/// What the checkpoint held: `Err` with the reasons when files exist but none is usable.
fn load(path: &Path) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut problems = Vec::new();
    for candidate in [path.to_path_buf(), tmp_path(path)] {
        match std::fs::read(&candidate) {
            Ok(bytes) => match parse_doc(&bytes) {
                Ok(c) => return Ok(c),
                Err(m) => problems.push(format!("{}: {m}", candidate.display())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("{}: {e}", candidate.display())),
        }
    }
    if problems.is_empty() {
        Ok(BTreeMap::new())
    } else {
        Err(problems)
    }
}

fn parse_doc(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    crate::tail::checkpoint::check_version(bytes, VERSION)?;
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(doc.channels)
}

fn save(path: &Path, channels: &BTreeMap<String, String>) -> io::Result<()> {
    let doc = Doc {
        version: VERSION,
        channels: channels.clone(),
    };
    crate::tail::checkpoint::write_atomic(
        path,
        &serde_json::to_vec(&doc).map_err(io::Error::other)?,
    )
}

struct Channel<A: EventLogApi> {
    spec: ChannelSpec,
    /// `Event::origin` place.
    place: Arc<str>,
    sub: Option<A::Subscription>,
    /// Moved to the last event of each handled batch.
    bookmark: Option<A::Bookmark>,
    /// When to try subscribing again (`None`: given up).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Failed attempts since the last success.
    failures: u32,
    stats: ChannelStats,
}

/// A followed set of channels. Drive it with [`run`](WinEvtLog::run) (or
/// [`poll`](WinEvtLog::poll)); stop it with a [`StopHandle`].
pub struct WinEvtLog<A: EventLogApi> {
    api: A,
    opts: WinEvtOptions,
    ctx: ParseCtx,
    channels: Vec<Channel<A>>,
    /// Every bookmark to write (configured channels and kept ones).
    saved: BTreeMap<String, String>,
    /// `saved` changed since the last write.
    dirty: bool,
    events: u64,
    malformed: u64,
    errors: u64,
    checkpoints: u64,
}

impl<A: EventLogApi> fmt::Debug for WinEvtLog<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WinEvtLog")
            .field("source", &self.opts.source)
            .field("checkpoint_path", &self.opts.checkpoint_path)
            .finish_non_exhaustive()
    }
}

impl<A: EventLogApi> WinEvtLog<A> {
    /// Checks the options and loads the checkpoint; channels are subscribed by the first
    /// [`poll`](WinEvtLog::poll). `ctx` names the source and host of the events.
    pub fn new(api: A, opts: WinEvtOptions, ctx: ParseCtx) -> Result<WinEvtLog<A>, WinEvtError> {
        opts.check()?;
        let mut errors = 0;
        let saved = match load(&opts.checkpoint_path) {
            Ok(s) => s,
            Err(problems) => {
                tracing::warn!(source = %opts.source, path = %opts.checkpoint_path.display(), problems = %problems.join("; "),
                    "windows_event_log: checkpoint unreadable; channels start as on a first start");
                errors += 1;
                BTreeMap::new()
            }
        };
        let now = Instant::now();
        let channels = opts
            .channels
            .iter()
            .map(|spec| Channel {
                place: spec.name.as_str().into(),
                spec: spec.clone(),
                sub: None,
                bookmark: None,
                retry_at: Some(now),
                backoff: opts.retry_min,
                failures: 0,
                stats: ChannelStats {
                    name: spec.name.clone(),
                    bookmark: saved.get(&spec.name).cloned(),
                    ..ChannelStats::default()
                },
            })
            .collect();
        Ok(WinEvtLog {
            api,
            opts,
            ctx,
            channels,
            saved,
            dirty: false,
            events: 0,
            malformed: 0,
            errors,
            checkpoints: 0,
        })
    }

    /// A handle that stops [`run`](WinEvtLog::run) from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.api.stop_handle()
    }

    /// Follows until stopped, handing every event to `sink`; writes a final checkpoint.
    pub fn run(&mut self, sink: &mut dyn FnMut(Event)) {
        let interval = self.opts.poll_interval;
        while self.poll(interval, sink) != Wake::Stop {}
        if let Err(e) = self.checkpoint() {
            tracing::error!(source = %self.opts.source, error = %e, "windows_event_log: final checkpoint failed");
        }
        tracing::info!(source = %self.opts.source, "windows_event_log: stopped: {}", watchpost_event::logfmt(&self.stats()));
    }

    /// One round: subscribes channels that are due, waits up to `timeout` for a signal,
    /// then pulls and hands on every available event, batch by batch, checkpointing after
    /// each batch. Returns how the wait ended ([`Wake::Stop`] also when the stop came
    /// during the pulling).
    pub fn poll(&mut self, timeout: Duration, sink: &mut dyn FnMut(Event)) -> Wake {
        self.subscribe_due();
        let now = Instant::now();
        let timeout = self
            .channels
            .iter()
            .filter(|c| c.sub.is_none())
            .filter_map(|c| c.retry_at)
            .map(|at| at.saturating_duration_since(now))
            .fold(timeout, Duration::min);
        let subs: Vec<&A::Subscription> = self
            .channels
            .iter()
            .filter_map(|c| c.sub.as_ref())
            .collect();
        let wake = self.api.wait(&subs, timeout);
        if wake == Wake::Stop {
            return Wake::Stop;
        }
        if self.drain(sink) {
            return Wake::Stop;
        }
        // A checkpoint write that failed (a virus scanner holding the file, a full disk)
        // is tried again each round, also when no new batch comes.
        if self.dirty
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!(source = %self.opts.source, error = %e, "windows_event_log: writing checkpoint (retry)");
        }
        wake
    }

    /// Writes the bookmarks if they changed since the last write.
    pub fn checkpoint(&mut self) -> Result<(), WinEvtError> {
        if !self.dirty {
            return Ok(());
        }
        match save(&self.opts.checkpoint_path, &self.saved) {
            Ok(()) => {
                self.dirty = false;
                self.checkpoints += 1;
                Ok(())
            }
            Err(source) => {
                self.errors += 1;
                Err(WinEvtError::Checkpoint {
                    path: self.opts.checkpoint_path.clone(),
                    source,
                })
            }
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> WinEvtStats {
        WinEvtStats {
            events: self.events,
            malformed: self.malformed,
            errors: self.errors,
            checkpoints: self.checkpoints,
            channels: self
                .channels
                .iter()
                .map(|c| ChannelStats {
                    subscribed: c.sub.is_some(),
                    ..c.stats.clone()
                })
                .collect(),
        }
    }

    /// Subscribes every channel whose retry time has come.
    fn subscribe_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.channels.len() {
            let ch = &self.channels[i];
            if ch.sub.is_some() || ch.retry_at.is_none_or(|at| at > now) {
                continue;
            }
            self.subscribe(i);
        }
    }

    fn subscribe(&mut self, i: usize) {
        let source = self.opts.source.clone();
        let ch = &mut self.channels[i];
        let name = ch.spec.name.clone();
        // The saved bookmark, once per start (afterwards the live handle is kept).
        if ch.bookmark.is_none()
            && let Some(xml) = self.saved.get(&name)
        {
            match self.api.create_bookmark(Some(xml)) {
                Ok(b) => ch.bookmark = Some(b),
                Err(e) => {
                    self.errors += 1;
                    tracing::warn!(source = %source, channel = %name, error = %e,
                        "windows_event_log: saved bookmark refused; the channel starts as on a first start");
                    self.saved.remove(&name);
                    ch.stats.bookmark = None;
                }
            }
        }
        let start = match (&ch.bookmark, self.opts.start_at) {
            (Some(b), _) => Start::AfterBookmark(b),
            (None, StartAt::Beginning) => Start::Oldest,
            (None, StartAt::End) => Start::Future,
        };
        let start_name = format!("{start:?}");
        let query = ch.spec.query.as_deref().unwrap_or("*");
        match self.api.subscribe(&name, query, start) {
            Ok(sub) => {
                ch.sub = Some(sub);
                ch.retry_at = None;
                ch.backoff = self.opts.retry_min;
                ch.stats.last_error = None;
                if ch.failures > 0 {
                    tracing::info!(source = %source, channel = %name, failed_attempts = ch.failures,
                        "windows_event_log: channel subscribed after failing");
                } else {
                    tracing::info!(source = %source, channel = %name, start = %start_name,
                        "windows_event_log: channel subscribed");
                }
                ch.failures = 0;
            }
            Err(e) => {
                self.errors += 1;
                ch.stats.errors += 1;
                ch.failures += 1;
                let advice = match e.kind {
                    ApiErrorKind::ChannelNotFound => {
                        "the channel does not exist on this machine (is its log installed? `wevtutil el` lists channels)"
                    }
                    ApiErrorKind::AccessDenied => {
                        "access denied (the Security log needs Administrator rights or membership in Event Log Readers)"
                    }
                    ApiErrorKind::InvalidQuery => "the query is not a valid XPath event query",
                    ApiErrorKind::Other => "cannot subscribe",
                };
                let msg = format!(
                    "source `{source}`: channel `{name}`: {advice}: {}",
                    e.message
                );
                ch.stats.last_error = Some(msg.clone());
                if e.kind == ApiErrorKind::InvalidQuery {
                    ch.retry_at = None;
                    tracing::error!(code = e.code, "windows_event_log: {msg}; channel given up");
                    return;
                }
                ch.retry_at = Some(Instant::now() + ch.backoff);
                if ch.failures == 1 {
                    tracing::warn!(code = e.code, retry_in = ?ch.backoff,
                        "windows_event_log: {msg}; retrying with back-off");
                } else {
                    tracing::debug!(code = e.code, retry_in = ?ch.backoff, attempts = ch.failures,
                        "windows_event_log: {msg}");
                }
                ch.backoff = (ch.backoff * 2).min(self.opts.retry_max);
            }
        }
    }

    /// Pulls one batch per channel per round until a round brings no full batch. Returns
    /// true when a stop was requested.
    fn drain(&mut self, sink: &mut dyn FnMut(Event)) -> bool {
        let mut first = true;
        loop {
            // A long flood must not hold up the retries of failed channels.
            if !std::mem::take(&mut first) {
                self.subscribe_due();
            }
            let mut more = false;
            for i in 0..self.channels.len() {
                if self.api.stop_requested() {
                    return true;
                }
                let Some(sub) = self.channels[i].sub.as_mut() else {
                    continue;
                };
                match self.api.next(sub, self.opts.batch_size) {
                    Ok(batch) => {
                        more |= batch.len() >= self.opts.batch_size;
                        if !batch.is_empty() {
                            self.handle_batch(i, batch, sink);
                        }
                    }
                    Err(e) => self.read_failed(i, &e),
                }
            }
            if !more {
                return false;
            }
        }
    }

    /// A subscription that failed while reading: dropped, subscribed again later.
    fn read_failed(&mut self, i: usize, e: &ApiError) {
        let ch = &mut self.channels[i];
        ch.sub = None;
        self.errors += 1;
        ch.stats.errors += 1;
        ch.failures += 1;
        let msg = format!(
            "source `{}`: channel `{}`: reading failed: {e}",
            self.opts.source, ch.spec.name
        );
        ch.stats.last_error = Some(msg.clone());
        tracing::warn!(retry_in = ?ch.backoff, "windows_event_log: {msg}; subscribing again after the bookmark");
        ch.retry_at = Some(Instant::now() + ch.backoff);
        ch.backoff = (ch.backoff * 2).min(self.opts.retry_max);
    }

    /// Hands on every event of a batch, then commits the bookmark and writes the checkpoint.
    fn handle_batch(&mut self, i: usize, batch: Vec<A::Event>, sink: &mut dyn FnMut(Event)) {
        for ev in &batch {
            let xml = match self.api.render_xml(ev) {
                Ok(x) => x,
                Err(e) => {
                    self.report_malformed(i, None, &format!("cannot render the event: {e}"));
                    continue;
                }
            };
            let head = scan_head(&xml);
            let xml = match (&head.provider, self.opts.render_message) {
                (Some(p), true) => match self.api.format_message(ev, p) {
                    Some(m) => with_message(xml, &m),
                    None => xml,
                },
                _ => xml,
            };
            match crate::winevent::parse_event_xml(&self.ctx, &xml) {
                Ok(mut event) => {
                    event.origin = Some(Origin {
                        place: self.channels[i].place.clone(),
                        offset: head.record_id.unwrap_or(0),
                    });
                    self.events += 1;
                    self.channels[i].stats.events += 1;
                    sink(event);
                }
                Err(e) => self.report_malformed(i, head.record_id, &e.to_string()),
            }
        }
        let Some(last) = batch.last() else {
            return;
        };
        self.commit(i, last);
        if let Err(e) = self.checkpoint() {
            tracing::error!(source = %self.opts.source, error = %e, "windows_event_log: writing checkpoint");
        }
        // The batch's event handles close here.
    }

    /// Moves the channel's bookmark to `last` and records its XML for the checkpoint.
    fn commit(&mut self, i: usize, last: &A::Event) {
        let ch = &mut self.channels[i];
        if ch.bookmark.is_none() {
            match self.api.create_bookmark(None) {
                Ok(b) => ch.bookmark = Some(b),
                Err(e) => {
                    self.errors += 1;
                    tracing::error!(source = %self.opts.source, channel = %ch.spec.name, error = %e,
                        "windows_event_log: cannot create a bookmark; position not saved");
                    return;
                }
            }
        }
        let Some(bm) = ch.bookmark.as_mut() else {
            return;
        };
        let xml = self
            .api
            .update_bookmark(bm, last)
            .and_then(|()| self.api.bookmark_xml(bm));
        match xml {
            Ok(xml) => {
                ch.stats.bookmark = Some(xml.clone());
                self.saved.insert(ch.spec.name.clone(), xml);
                self.dirty = true;
            }
            Err(e) => {
                self.errors += 1;
                tracing::error!(source = %self.opts.source, channel = %ch.spec.name, error = %e,
                    "windows_event_log: cannot update the bookmark; position not saved");
            }
        }
    }

    fn report_malformed(&mut self, i: usize, record_id: Option<u64>, error: &str) {
        let n = self.malformed;
        self.malformed += 1;
        let ch = &mut self.channels[i];
        ch.stats.malformed += 1;
        if n < REPORT_ALL || n.is_power_of_two() {
            let record_id = record_id.map_or_else(|| "unknown".to_owned(), |r| r.to_string());
            tracing::warn!(source = %self.opts.source, channel = %ch.spec.name, record_id,
                malformed_so_far = n + 1, "windows_event_log: event skipped: {error}");
        }
    }
}

impl<A> crate::source::Source for WinEvtLog<A>
where
    A: EventLogApi,
    WinEvtLog<A>: Send,
{
    fn poll(
        &mut self,
        deadline: Instant,
        sink: &mut dyn FnMut(crate::source::Item<'_>),
    ) -> Result<(), crate::source::SourceError> {
        WinEvtLog::poll(self, crate::source::until(deadline), &mut |e| {
            sink(crate::source::Item::Event(e));
        });
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), crate::source::SourceError> {
        WinEvtLog::checkpoint(self).map_err(crate::source::SourceError::from_err)
    }

    fn stopper(&self) -> crate::source::StopHandle {
        self.stop_handle()
    }

    fn close(mut self: Box<Self>, _: &mut dyn FnMut(crate::source::Item<'_>)) -> String {
        if let Err(e) = WinEvtLog::checkpoint(&mut self) {
            tracing::error!(source = %self.opts.source, error = %e, "windows_event_log: final checkpoint failed");
        }
        format!(
            "windows_event_log: stopped: {}",
            watchpost_event::logfmt(&self.stats())
        )
    }
}

/// What the start of an event's XML says, read even when the rest is broken.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// `System/Provider/@Name`.
    pub provider: Option<String>,
    /// `System/EventRecordID`.
    pub record_id: Option<u64>,
}

/// Reads `Provider/@Name` and `EventRecordID` from event XML, up to the first error.
pub fn scan_head(xml: &str) -> Head {
    use crate::xmlscan::{Scanner, Tok, unescape};
    let mut head = Head::default();
    let mut scanner = Scanner::new(xml);
    let mut in_record_id = false;
    while let Ok(Some(tok)) = scanner.next_tok() {
        match tok {
            Tok::Start { name, .. } => {
                if name == b"Provider" && head.provider.is_none() {
                    head.provider = scanner
                        .attrs
                        .iter()
                        .find(|a| a.name == b"Name")
                        .and_then(|a| unescape(&xml[a.value.0..a.value.1], a.value.0).ok());
                }
                in_record_id = name == b"EventRecordID";
            }
            Tok::Text(a, b) if in_record_id => {
                head.record_id = xml[a..b].trim().parse().ok();
                in_record_id = false;
            }
            Tok::End { name } if name == b"System" => break,
            _ => {}
        }
    }
    head
}

/// Adds `<RenderingInfo><Message>` before the closing `</Event>` (unless the XML already
/// has rendering info).
pub fn with_message(mut xml: String, message: &str) -> String {
    if xml.contains("<RenderingInfo") {
        return xml;
    }
    let Some(at) = xml.rfind("</Event>") else {
        return xml;
    };
    let mut add = String::with_capacity(message.len() + 48);
    add.push_str("<RenderingInfo><Message>");
    for c in message.chars() {
        match c {
            '&' => add.push_str("&amp;"),
            '<' => add.push_str("&lt;"),
            '>' => add.push_str("&gt;"),
            // XML readers turn CR LF into LF: keep the message's line ends as written.
            '\r' => add.push_str("&#13;"),
            _ => add.push(c),
        }
    }
    add.push_str("</Message></RenderingInfo>");
    xml.insert_str(at, &add);
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Security-Auditing' Guid='{54849625-5478-4994-a5ba-3e3b0328c30d}'/><EventID>4624</EventID><EventRecordID>6016</EventRecordID><Channel>Security</Channel></System><EventData><Data Name='LogonType'>10</Data></EventData></Event>";

    #[test]
    fn head_is_read_from_good_and_broken_xml() {
        let h = scan_head(XML);
        assert_eq!(
            h.provider.as_deref(),
            Some("Microsoft-Windows-Security-Auditing")
        );
        assert_eq!(h.record_id, Some(6016));
        let broken =
            "<Event><System><Provider Name=\"P\"/><EventRecordID>77</EventRecordID><Oops></System>";
        assert_eq!(
            scan_head(broken),
            Head {
                provider: Some("P".into()),
                record_id: Some(77)
            }
        );
        assert_eq!(scan_head("garbage"), Head::default());
    }

    #[test]
    fn message_is_added_as_rendering_info() {
        let xml = with_message(
            XML.to_owned(),
            "An account <was> logged on & more.\r\n\tTab",
        );
        let e = crate::winevent::parse_event_xml(&ParseCtx::new("w", "h"), &xml).unwrap();
        let msg = e.get_str(watchpost_event::Sym::new("message")).unwrap();
        assert_eq!(msg, "An account <was> logged on & more.\r\n\tTab");
        assert_eq!(
            e.get_str(watchpost_event::Sym::new("LogonType")).unwrap(),
            "10"
        );
        // Existing rendering info is kept as it is.
        assert_eq!(with_message(xml.clone(), "other"), xml);
    }

    #[test]
    fn options_are_checked() {
        let o = |chs: &[&str]| {
            WinEvtOptions::new(
                "w",
                chs.iter().map(|c| ChannelSpec::new(*c)).collect(),
                "/x",
            )
        };
        assert!(o(&["Security", "System"]).check().is_ok());
        assert!(o(&[]).check().is_err());
        assert!(o(&["Security", "security"]).check().is_err());
        assert!(o(&[" "]).check().is_err());
        let mut b = o(&["System"]);
        b.batch_size = 0;
        assert!(b.check().is_err());
        b.batch_size = MAX_BATCH_SIZE + 1;
        assert!(b.check().is_err());
        let many: Vec<String> = (0..=MAX_CHANNELS).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(o(&many).check().is_err());
    }

    #[test]
    fn checkpoint_round_trip_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp").join("w.json");
        assert_eq!(load(&p), Ok(BTreeMap::new()));
        let mut m = BTreeMap::new();
        m.insert(
            "Security".to_owned(),
            "<BookmarkList><Bookmark Channel='Security' RecordId='5' IsCurrent='true'/></BookmarkList>".to_owned(),
        );
        save(&p, &m).unwrap();
        assert!(!tmp_path(&p).exists());
        assert_eq!(load(&p), Ok(m.clone()));
        std::fs::write(&p, br#"{"version":2,"channels":{}}"#).unwrap();
        assert!(load(&p).unwrap_err()[0].contains("version 2"));
        std::fs::write(
            tmp_path(&p),
            serde_json::to_vec(&Doc {
                version: 1,
                channels: m.clone(),
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(load(&p), Ok(m));
    }
}
