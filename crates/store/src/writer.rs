//! The writer thread: batches of events and outcomes in one transaction each, retention
//! between batches. The daemon's threads only enqueue.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use jiff::Timestamp;
use rusqlite::{Connection, params};
use serde::Serialize;
use watchpost_support::{Mailbox, PushError, Receiver, Recv};

use crate::schema::HOUR_MS;
use crate::{Matched, NewEvent, Outcome, StoreError, StoreOptions, ms, schema, sql_err};

enum Msg {
    Event(u64, Box<NewEvent>),
    /// Turned into an `Event` by the writer thread.
    Matched(u64, Box<Matched>),
    Outcome(Outcome),
    Flush(Sender<()>),
}

/// Lowers the calling (writer) thread's priority (nice 10 on Linux, below normal on
/// Windows): on a small machine SQLite's commits then wait for the reading, filtering and
/// sending threads instead of taking their core (measured: `BENCHMARKS.md`, reaction
/// latency with the store). The runtime's thread of the per-firing log lines uses it too.
pub fn yield_to_the_event_path() {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(me), 10) {
            tracing::debug!(error = %e, "event store writer keeps its priority");
        }
    }
    #[cfg(windows)]
    #[allow(unsafe_code)] // two Win32 calls on this thread's own pseudo-handle
    {
        use windows_sys::Win32::System::Threading::{
            GetCurrentThread, SetThreadPriority, THREAD_PRIORITY_BELOW_NORMAL,
        };
        // SAFETY: GetCurrentThread returns a pseudo-handle valid for this thread, which
        // SetThreadPriority only reads.
        if unsafe { SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_BELOW_NORMAL) } == 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "event store writer keeps its priority"
            );
        }
    }
}

impl Msg {
    /// A matched event in its stored form (built here, on the writer thread).
    fn materialize(self) -> Msg {
        match self {
            Msg::Matched(id, m) => Msg::Event(id, Box::new(NewEvent::from(*m))),
            m => m,
        }
    }
}

/// Counters of the writer.
#[derive(Debug, Default)]
struct Counters {
    stored: AtomicU64,
    outcomes: AtomicU64,
    dropped: AtomicU64,
    outcomes_dropped: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Events committed.
    pub stored: u64,
    /// Action outcomes committed.
    pub outcomes: u64,
    /// Events not stored because the queue was full.
    pub dropped: u64,
    /// Action outcomes not stored because the queue was full.
    pub outcomes_dropped: u64,
    /// Events and outcomes lost to a failed transaction (disk full, …).
    pub failed: u64,
    /// Events deleted by retention.
    pub expired: u64,
}

/// The handle the daemon keeps: enqueue events and outcomes; the thread writes them.
pub struct Writer {
    tx: Option<Mailbox<Msg>>,
    next_id: AtomicU64,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).finish()
    }
}

impl Writer {
    /// Opens (creating) the store at `path` and starts its writer thread.
    pub fn start(path: &Path, options: StoreOptions) -> Result<Writer, StoreError> {
        let conn = schema::open(path)?;
        crate::outbox::configure(&conn, options.ship, path)?;
        let max: i64 = conn
            .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
            .map_err(sql_err(path))?;
        let (tx, rx) = watchpost_support::mailbox(options.queue.max(1));
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                yield_to_the_event_path();
                let mut w = Worker {
                    conn,
                    path: thread_path,
                    options,
                    counters: thread_counters,
                };
                w.run(&rx);
            })
            .map_err(|e| StoreError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Writer {
            tx: Some(tx),
            next_id: AtomicU64::new(max as u64 + 1),
            counters,
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    /// Enqueues an event; returns its id, or `None` (counted) when the queue is full.
    /// Never waits.
    pub fn submit(&self, event: NewEvent) -> Option<u64> {
        self.enqueue(|id| Msg::Event(id, Box::new(event)))
    }

    /// Enqueues a matched event whose stored form the writer thread builds (the caller
    /// only clones an `Arc`); returns its id, or `None` (counted) when the queue is full.
    /// Never waits.
    pub fn submit_matched(&self, matched: Matched) -> Option<u64> {
        self.enqueue(|id| Msg::Matched(id, Box::new(matched)))
    }

    fn enqueue(&self, msg: impl FnOnce(u64) -> Msg) -> Option<u64> {
        let tx = self.tx.as_ref()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match tx.push(msg(id)) {
            Ok(()) => Some(id),
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Enqueues an action's outcome for a stored event; when the queue is full it is
    /// dropped and counted. Never waits: an action must not deliver at the store's pace
    /// (a burst once held the syslog worker to the store's ~8,000 inserts/s).
    pub fn outcome(&self, outcome: Outcome) {
        if let Some(tx) = &self.tx
            && tx.push(Msg::Outcome(outcome)).is_err()
        {
            self.counters
                .outcomes_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything enqueued so far is committed (or `timeout` passed).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let mut msg = Msg::Flush(done_tx);
        // A full queue: wait for room, as a flush must come after what is queued.
        loop {
            match tx.push_now(msg) {
                Ok(()) => break,
                Err((PushError::Full, m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// The counters now.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            stored: c.stored.load(Ordering::Relaxed),
            outcomes: c.outcomes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            outcomes_dropped: c.outcomes_dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
        }
    }

    /// Commits what is queued and stops the thread.
    pub fn shutdown(mut self) -> WriterStats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(&mut self, rx: &Receiver<Msg>) {
        let mut next_retention = Instant::now();
        let mut batch: Vec<Msg> = Vec::with_capacity(self.options.batch);
        loop {
            if Instant::now() >= next_retention {
                if let Err(e) = self.retention() {
                    tracing::warn!(error = %e, "event store retention failed");
                }
                next_retention = Instant::now() + self.options.retention_every;
            }
            // Asleep until something is queued (or retention is due); then the batch
            // fills until it is full, `flush_every` passed, or a flush is asked for,
            // without being woken per item.
            let mut incoming = Vec::with_capacity(self.options.batch);
            let wait = Some(Instant::now() + self.options.retention_every);
            match rx.recv(&mut incoming, self.options.batch, 1, wait) {
                Recv::Items => {}
                Recv::Timeout => continue,
                Recv::Closed => break,
            }
            let deadline = Some(Instant::now() + self.options.flush_every);
            let mut disconnected = false;
            loop {
                let mut flush = false;
                for m in incoming.drain(..) {
                    flush |= matches!(m, Msg::Flush(_));
                    batch.push(m.materialize());
                }
                let room = self.options.batch.saturating_sub(batch.len());
                if flush || room == 0 {
                    break;
                }
                match rx.recv(&mut incoming, room, room, deadline) {
                    Recv::Items => {}
                    Recv::Timeout => break,
                    Recv::Closed => {
                        disconnected = true;
                        break;
                    }
                }
            }
            self.commit(&mut batch);
            if disconnected {
                break;
            }
        }
        if !batch.is_empty() {
            self.commit(&mut batch);
        }
        let _ = self
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;");
    }

    fn commit(&mut self, batch: &mut Vec<Msg>) {
        let (events, outcomes) = batch.iter().fold((0, 0), |(e, o), m| match m {
            Msg::Event(..) | Msg::Matched(..) => (e + 1, o),
            Msg::Outcome(_) => (e, o + 1),
            Msg::Flush(_) => (e, o),
        });
        match self.write(batch) {
            Ok(()) => {
                self.counters.stored.fetch_add(events, Ordering::Relaxed);
                self.counters
                    .outcomes
                    .fetch_add(outcomes, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters
                    .failed
                    .fetch_add(events + outcomes, Ordering::Relaxed);
                tracing::error!(error = %e, events, outcomes, "event store: batch not written");
            }
        }
        for m in batch.drain(..) {
            if let Msg::Flush(done) = m {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, batch: &[Msg]) -> Result<(), StoreError> {
        let now = ms(Timestamp::now());
        let err = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO events (id, time, stored, source, host, filters, anomaly,
                        anomaly_why, needs_ack, fields, raw, origin)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(&err)?;
            let mut ins_filter = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO event_filters (event, filter) VALUES (?1, ?2)",
                )
                .map_err(&err)?;
            let mut ins_fts = tx
                .prepare_cached("INSERT INTO events_fts (rowid, text) VALUES (?1, ?2)")
                .map_err(&err)?;
            let mut ins_outcome = tx
                .prepare_cached(
                    "INSERT INTO outcomes (event, action, at, attempt, ok, detail, filter)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(&err)?;
            let mut gate = crate::outbox::Gate::open(&tx).map_err(&err)?;
            // The batch's per-hour counts (all its events are stored at `now`):
            // (host, level) -> (events, anomalies), and filter -> events.
            let mut hours: HashMap<(&str, &str), (i64, i64)> = HashMap::new();
            let mut filter_hours: HashMap<&str, i64> = HashMap::new();
            let mut fields = serde_json::Map::new();
            let mut text = String::new();
            for m in batch {
                match m {
                    Msg::Event(id, e) => {
                        fields.clear();
                        text.clear();
                        for (k, v) in &e.fields {
                            fields
                                .entry(k.clone())
                                .or_insert_with(|| serde_json::Value::String(v.clone()));
                            text.push_str(v);
                            text.push('\n');
                        }
                        text.push_str(&e.host);
                        text.push('\n');
                        text.push_str(&e.raw);
                        let filters = serde_json::to_string(&e.filters).unwrap_or_default();
                        let fields_json =
                            serde_json::to_string(&fields).unwrap_or_else(|_| "{}".into());
                        ins.execute(params![
                            *id as i64,
                            e.time.map(ms),
                            now,
                            e.source,
                            e.host,
                            filters,
                            e.anomaly,
                            e.anomaly_why,
                            e.needs_ack,
                            fields_json,
                            e.raw,
                            e.origin,
                        ])
                        .map_err(&err)?;
                        for f in &e.filters {
                            ins_filter.execute(params![*id as i64, f]).map_err(&err)?;
                        }
                        // The level `fields` keeps (the first of the name), and each
                        // filter once per event, as `event_filters` holds them.
                        let level = e
                            .fields
                            .iter()
                            .find(|(k, _)| k == "rule_level")
                            .map_or("", |(_, v)| v.as_str());
                        let c = hours.entry((e.host.as_str(), level)).or_default();
                        c.0 += 1;
                        c.1 += i64::from(e.anomaly);
                        for (i, f) in e.filters.iter().enumerate() {
                            if !e.filters[..i].contains(f) {
                                *filter_hours.entry(f.as_str()).or_default() += 1;
                            }
                        }
                        ins_fts.execute(params![*id as i64, text]).map_err(&err)?;
                        if let Some(g) = &mut gate {
                            g.queue(&tx, crate::outbox::KIND_EVENT, *id as i64)
                                .map_err(&err)?;
                        }
                    }
                    Msg::Outcome(o) => {
                        ins_outcome
                            .execute(params![
                                o.event as i64,
                                o.action,
                                o.at_ms,
                                o.attempt,
                                o.ok,
                                o.detail,
                                o.filter
                            ])
                            .map_err(&err)?;
                        if let Some(g) = &mut gate {
                            g.queue(&tx, crate::outbox::KIND_OUTCOME, tx.last_insert_rowid())
                                .map_err(&err)?;
                        }
                    }
                    // Materialized when received.
                    Msg::Matched(..) | Msg::Flush(_) => {}
                }
            }
            if let Some(g) = gate {
                g.finish(&tx).map_err(&err)?;
            }
            let hour = now / HOUR_MS * HOUR_MS;
            if !hours.is_empty() {
                let mut up = tx
                    .prepare_cached(
                        "INSERT INTO event_hours (hour, host, level, events, anomalies)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (hour, host, level) DO UPDATE
                         SET events = events + excluded.events, anomalies = anomalies + excluded.anomalies",
                    )
                    .map_err(&err)?;
                for ((host, level), (n, anomalies)) in &hours {
                    up.execute(params![hour, host, level, n, anomalies])
                        .map_err(&err)?;
                }
            }
            if !filter_hours.is_empty() {
                let mut up = tx
                    .prepare_cached(
                        "INSERT INTO filter_hours (hour, filter, events) VALUES (?1, ?2, ?3)
                         ON CONFLICT (hour, filter) DO UPDATE SET events = events + excluded.events",
                    )
                    .map_err(&err)?;
                for (filter, n) in &filter_hours {
                    up.execute(params![hour, filter, n]).map_err(&err)?;
                }
            }
        }
        tx.commit().map_err(&err)
    }

    /// Deletes events older than `max_age`, then the oldest while the file is over
    /// `max_bytes`, and gives the pages back to the file system.
    fn retention(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = sql_err(&path);
        if let Some(age) = self.options.max_age {
            let cutoff = ms(Timestamp::now()) - age.as_millis() as i64;
            let upto: Option<i64> = self
                .conn
                .query_row(
                    "SELECT max(id) FROM events WHERE stored < ?1",
                    [cutoff],
                    |r| r.get(0),
                )
                .map_err(&err)?;
            if let Some(upto) = upto {
                self.delete_upto(upto)?;
            }
        }
        if let Some(max) = self.options.max_bytes {
            for _ in 0..64 {
                if self.used_bytes()? <= max {
                    break;
                }
                // The oldest tenth at a time.
                let (count, min): (i64, Option<i64>) = self
                    .conn
                    .query_row("SELECT count(*), min(id) FROM events", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(&err)?;
                let Some(min) = min else { break };
                let step = (count / 10).max(1);
                let upto: i64 = self
                    .conn
                    .query_row(
                        "SELECT id FROM events WHERE id >= ?1 ORDER BY id LIMIT 1 OFFSET ?2",
                        params![min, step - 1],
                        |r| r.get(0),
                    )
                    .or_else(|_| {
                        self.conn
                            .query_row("SELECT max(id) FROM events", [], |r| r.get(0))
                    })
                    .map_err(&err)?;
                self.delete_upto(upto)?;
            }
        }
        Ok(())
    }

    fn used_bytes(&self) -> Result<u64, StoreError> {
        let err = sql_err(&self.path);
        let page_size: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(&err)?;
        let pages: i64 = self
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .map_err(&err)?;
        let free: i64 = self
            .conn
            .pragma_query_value(None, "freelist_count", |r| r.get(0))
            .map_err(&err)?;
        Ok(((pages - free).max(0) * page_size) as u64)
    }

    fn delete_upto(&mut self, upto: i64) -> Result<(), StoreError> {
        let err = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        // The per-hour counts lose the events deleted (hours left with none go).
        tx.execute(
            "INSERT INTO event_hours (hour, host, level, events, anomalies)
             SELECT stored / 3600000 * 3600000, host,
                    coalesce(json_extract(fields, '$.rule_level'), ''), -count(*), -sum(anomaly)
             FROM events WHERE id <= ?1 GROUP BY 1, 2, 3
             ON CONFLICT (hour, host, level) DO UPDATE
             SET events = events + excluded.events, anomalies = anomalies + excluded.anomalies",
            [upto],
        )
        .map_err(&err)?;
        tx.execute(
            "INSERT INTO filter_hours (hour, filter, events)
             SELECT e.stored / 3600000 * 3600000, f.filter, -count(*)
             FROM events e JOIN event_filters f ON f.event = e.id WHERE e.id <= ?1 GROUP BY 1, 2
             ON CONFLICT (hour, filter) DO UPDATE SET events = events + excluded.events",
            [upto],
        )
        .map_err(&err)?;
        tx.execute_batch(
            "DELETE FROM event_hours WHERE events <= 0; DELETE FROM filter_hours WHERE events <= 0;",
        )
        .map_err(&err)?;
        let n = tx
            .execute("DELETE FROM events WHERE id <= ?1", [upto])
            .map_err(&err)?;
        tx.execute("DELETE FROM event_filters WHERE event <= ?1", [upto])
            .map_err(&err)?;
        tx.execute("DELETE FROM outcomes WHERE event <= ?1", [upto])
            .map_err(&err)?;
        tx.execute("DELETE FROM events_fts WHERE rowid <= ?1", [upto])
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        self.conn
            .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(&err)?;
        self.counters.expired.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(deleted = n, upto, "event store retention");
        }
        Ok(())
    }
}
