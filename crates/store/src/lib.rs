//! The event store: one SQLite file under the state directory holding every event a filter
//! matched, with the filters' names, the anomaly flag and why, whether it needs an
//! acknowledgement, who acknowledged it (when, with what comment), and each action's
//! outcome.
//!
//! * **Writing** ([`Writer`]) happens on a thread of its own: the daemon's source threads
//!   hand over a [`NewEvent`] and get its id at once ([`Writer::submit`] never touches
//!   the disk); the writer commits batches (up to [`StoreOptions::batch`] events or every
//!   [`StoreOptions::flush_every`]) in one transaction each, in WAL mode, and applies
//!   retention (by age and by size) between batches.
//! * **Reading** ([`Store`]) is what the CLI does (`watchpost events`, `watchpost ack`),
//!   also while the daemon writes: WAL readers never block the writer, and writes from the
//!   CLI (acknowledgements) wait for the daemon's transaction with a busy timeout.
//! * **Queries** ([`Query`], [`parse_terms`]): `field:value` terms (`*` wildcards,
//!   case-insensitive), `isanomaly:true`, `needsack:true`, `acked:true`, `host:`,
//!   `source:`, `filter:`, `id:`, and free text (full-text index over the values and the
//!   raw record).
//! * **Review** (`review.rs`): pages by keyset, counts per time bucket and the audit log
//!   of the web console (`watchpost-console`).
//!
//! Crate: `rusqlite` with the bundled SQLite (FTS5, JSON1): one file that can be copied
//! while in use (`.backup`), ad-hoc queries, and no server. Times are stored as Unix
//! milliseconds (UTC).

mod outbox;
mod query;
mod review;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

pub use outbox::{Outbox, OutboxState, Queued, QueuedEvent};
pub use review::{AuditEntry, Dimension, PageSpec};
pub use schema::HOURS_BACKFILL;
pub use watchpost_query::{Query, QueryError, Term, parse_since, parse_terms};
pub use writer::{Writer, WriterStats, yield_to_the_event_path};

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no (file unreadable, not a database, disk full, …).
    #[error("event store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer watchpost.
    #[error(
        "event store {path}: schema version {found} is newer than this watchpost knows ({known})"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// A query that cannot be run.
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// How the store keeps and batches events.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Delete events stored longer ago than this (`None`: keep by age forever).
    pub max_age: Option<Duration>,
    /// Delete the oldest events while the file is larger than this (`None`: no limit).
    pub max_bytes: Option<u64>,
    /// Most events per transaction.
    pub batch: usize,
    /// Longest time an event waits for its transaction.
    pub flush_every: Duration,
    /// Events that may wait for the writer; beyond that [`Writer::submit`] drops and counts.
    pub queue: usize,
    /// How often retention runs.
    pub retention_every: Duration,
    /// Queue what is stored for the fleet server (`outbox.rs`), at most this many records
    /// waiting; `None`: no queueing.
    pub ship: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            max_age: Some(Duration::from_secs(90 * 86_400)),
            max_bytes: Some(1 << 30),
            batch: 1000,
            flush_every: Duration::from_millis(200),
            queue: 20_000,
            retention_every: Duration::from_secs(60),
            ship: None,
        }
    }
}

/// An event to store (built by the daemon from an [`watchpost_event::Event`] and the names
/// of the filters it matched).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewEvent {
    /// The event's own time, if it has one.
    pub time: Option<Timestamp>,
    /// Source name.
    pub source: String,
    /// Host the event is about.
    pub host: String,
    /// Names of the filters that matched, in chain order.
    pub filters: Vec<String>,
    /// Whether an anomaly filter flagged it.
    pub anomaly: bool,
    /// Why (e.g. `new value "10.0.0.9" for key "alice"`), when flagged.
    pub anomaly_why: Option<String>,
    /// Whether it waits for an acknowledgement.
    pub needs_ack: bool,
    /// Field names and values as text, in the event's order.
    pub fields: Vec<(String, String)>,
    /// The record as read.
    pub raw: String,
    /// Where it was read (`file:offset`, `channel:record id`).
    pub origin: Option<String>,
}

/// An event as the daemon hands it to the store: the shared event itself (the same `Arc`
/// the action jobs hold) and what the chain said of it. The writer thread turns it into
/// a [`NewEvent`], so the event path copies no field.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The event.
    pub event: std::sync::Arc<watchpost_event::Event>,
    /// Names of the filters that matched, in chain order.
    pub filters: Vec<String>,
    /// Why an anomaly filter flagged it.
    pub anomaly_why: Option<String>,
    /// Whether it waits for an acknowledgement.
    pub needs_ack: bool,
}

impl From<Matched> for NewEvent {
    fn from(m: Matched) -> NewEvent {
        let mut e = NewEvent::from_event(&m.event, m.filters);
        e.anomaly_why = m.anomaly_why;
        e.needs_ack = m.needs_ack;
        e
    }
}

impl NewEvent {
    /// The storable form of `event` as matched by `filters`.
    pub fn from_event(event: &watchpost_event::Event, filters: Vec<String>) -> NewEvent {
        NewEvent {
            time: event.time,
            source: event.source.to_string(),
            host: event.host.to_string(),
            filters,
            anomaly: event.anomaly,
            anomaly_why: None,
            needs_ack: false,
            fields: event
                .fields()
                .map(|(sym, v)| (sym.as_str().to_owned(), v.text().into_owned()))
                .collect(),
            raw: event.raw.clone(),
            origin: event
                .origin
                .as_ref()
                .map(|o| format!("{}:{}", o.place, o.offset)),
        }
    }
}

/// What happened when an action handled a stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The stored event's id.
    pub event: u64,
    /// The action's name.
    pub action: String,
    /// The filter (or rule set) whose firing the action handled ("" in stores written
    /// before this was recorded).
    pub filter: String,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Whether it succeeded.
    pub ok: bool,
    /// The error or a short note.
    pub detail: String,
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// When (RFC 3339).
    pub at: String,
    /// Who (the user that ran `watchpost ack`).
    pub by: String,
    /// Their comment.
    pub comment: String,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Id (ascending in storing order).
    pub id: u64,
    /// The event's time (RFC 3339), if any.
    pub time: Option<String>,
    /// When it was stored (RFC 3339).
    pub stored: String,
    /// Source name.
    pub source: String,
    /// Host.
    pub host: String,
    /// Filters that matched.
    pub filters: Vec<String>,
    /// Flagged by an anomaly filter.
    pub anomaly: bool,
    /// Why it was flagged.
    pub anomaly_why: Option<String>,
    /// Waits (or waited) for an acknowledgement.
    pub needs_ack: bool,
    /// The acknowledgement, once given.
    pub ack: Option<Ack>,
    /// Fields as text, in the event's order.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The record as read.
    pub raw: String,
    /// Where it was read.
    pub origin: Option<String>,
    /// What the actions did with it.
    pub outcomes: Vec<Outcome>,
}

/// The store, opened for reading and acknowledging (the CLI), or by the writer thread.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The file's schema version (older files are read as they are).
    version: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

pub(crate) fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl Store {
    /// Opens (creating it and its schema if needed) the store at `path` for reading and
    /// writing.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = schema::open(path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            version: schema::VERSION,
        })
    }

    /// Opens an existing store read-only (queries while the daemon writes).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err(path))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql_err(path))?;
        let version = schema::check_version(&conn, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            version,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events matching `query`, newest first, at most `limit`.
    pub fn query(&self, query: &Query, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let (sql, args) = query::to_sql(query, limit)?;
        let mut stmt = self.conn.prepare(&sql).map_err(sql_err(&self.path))?;
        let ids: Vec<u64> = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, i64>(0).map(|v| v as u64)
            })
            .and_then(|rows| rows.collect())
            .map_err(sql_err(&self.path))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.get(id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// One event by id.
    pub fn get(&self, id: u64) -> Result<Option<StoredEvent>, StoreError> {
        let err = sql_err(&self.path);
        let row = self
            .conn
            .query_row(
                "SELECT id, time, stored, source, host, filters, anomaly, anomaly_why, needs_ack,
                        acked_at, acked_by, ack_comment, fields, raw, origin
                 FROM events WHERE id = ?1",
                [id as i64],
                |r| {
                    let filters: String = r.get(5)?;
                    let fields: String = r.get(12)?;
                    let acked_at: Option<i64> = r.get(9)?;
                    Ok(StoredEvent {
                        id: r.get::<_, i64>(0)? as u64,
                        time: r.get::<_, Option<i64>>(1)?.map(rfc3339),
                        stored: rfc3339(r.get(2)?),
                        source: r.get(3)?,
                        host: r.get(4)?,
                        filters: serde_json::from_str(&filters).unwrap_or_default(),
                        anomaly: r.get(6)?,
                        anomaly_why: r.get(7)?,
                        needs_ack: r.get(8)?,
                        ack: match acked_at {
                            Some(at) => Some(Ack {
                                at: rfc3339(at),
                                by: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                                comment: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                            }),
                            None => None,
                        },
                        fields: serde_json::from_str(&fields).unwrap_or_default(),
                        raw: r.get(13)?,
                        origin: r.get(14)?,
                        outcomes: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(&err)?;
        let Some(mut event) = row else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare_cached(if self.version >= 2 {
                "SELECT action, at, attempt, ok, detail, filter FROM outcomes WHERE event = ?1 ORDER BY at, rowid"
            } else {
                "SELECT action, at, attempt, ok, detail, '' FROM outcomes WHERE event = ?1 ORDER BY at, rowid"
            })
            .map_err(&err)?;
        event.outcomes = stmt
            .query_map([id as i64], |r| {
                Ok(Outcome {
                    event: id,
                    action: r.get(0)?,
                    filter: r.get(5)?,
                    at_ms: r.get(1)?,
                    attempt: r.get(2)?,
                    ok: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(&err)?;
        Ok(Some(event))
    }

    /// Acknowledges events: sets who, when and the comment on each id that exists and is
    /// not acknowledged yet. Returns the ids that were acknowledged now.
    pub fn ack(&mut self, ids: &[u64], by: &str, comment: &str) -> Result<Vec<u64>, StoreError> {
        let now = ms(Timestamp::now());
        let err = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        let mut done = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "UPDATE events SET acked_at = ?2, acked_by = ?3, ack_comment = ?4
                     WHERE id = ?1 AND acked_at IS NULL",
                )
                .map_err(&err)?;
            for &id in ids {
                if stmt
                    .execute(params![id as i64, now, by, comment])
                    .map_err(&err)?
                    == 1
                {
                    done.push(id);
                }
            }
        }
        outbox::queue_acks(&tx, &done).map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(done)
    }

    /// Records acknowledgements made on the fleet server: `(event id, when (Unix ms), who,
    /// why)`. An event already acknowledged keeps its acknowledgement; nothing is queued
    /// for shipping (the server has it). Returns the ids acknowledged now.
    pub fn ack_central(
        &mut self,
        acks: &[(u64, i64, String, String)],
    ) -> Result<Vec<u64>, StoreError> {
        let err = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        let mut done = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "UPDATE events SET acked_at = ?2, acked_by = ?3, ack_comment = ?4
                     WHERE id = ?1 AND acked_at IS NULL",
                )
                .map_err(&err)?;
            for (id, at, by, comment) in acks {
                if stmt
                    .execute(params![*id as i64, at, by, comment])
                    .map_err(&err)?
                    == 1
                {
                    done.push(*id);
                }
            }
        }
        tx.commit().map_err(&err)?;
        Ok(done)
    }

    /// How many events are stored, and how many of them are anomalies / pending an ack.
    pub fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        self.conn
            .query_row(
                "SELECT count(*),
                        (SELECT count(*) FROM events WHERE anomaly = 1),
                        (SELECT count(*) FROM events WHERE needs_ack = 1 AND acked_at IS NULL)
                 FROM events",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )
            .map_err(sql_err(&self.path))
    }
}
