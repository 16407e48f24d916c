//! The shipping queue to the fleet server, inside the event store.
//!
//! With shipping on ([`crate::StoreOptions::ship`]), the writer gives every event and
//! every action outcome it stores the next sequence number of the `outbox` table in the
//! same transaction, and [`crate::Store::ack`] (the `watchpost ack` command, another
//! process) does the same for each acknowledgement. The fleet client reads the queue in
//! sequence order ([`Outbox::read`]), sends it, and only when the server answers that it
//! committed everything up to a number does it call [`Outbox::commit`], which moves the
//! cursor and deletes those rows. So:
//!
//! * nothing is stored locally without being queued, or queued without being stored (one
//!   transaction), and a crash anywhere leaves the queue and the cursor consistent;
//! * the server sees every number in order (catch-up after a day offline goes oldest
//!   first) and stores each once (it keeps the highest number it committed);
//! * the queue is bounded: beyond `max_pending` waiting records new events and outcomes
//!   are not queued (stored locally all the same) and counted in `dropped`, which the
//!   agent's heartbeat reports. Acknowledgements are always queued (they are few, and a
//!   missing one would leave the server's view wrong). Records whose event retention
//!   deleted before they were sent become gaps, also counted as dropped.
//!
//! A queue of its own (the actions' retry queue) would have written every event twice
//! and could not take the acknowledgements the `watchpost ack` process makes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{StoreError, schema, sql_err};

/// `outbox.kind` of an event.
pub(crate) const KIND_EVENT: i64 = 1;
/// `outbox.kind` of an action outcome.
pub(crate) const KIND_OUTCOME: i64 = 2;
/// `outbox.kind` of an acknowledgement.
pub(crate) const KIND_ACK: i64 = 3;

/// A stream name for a new queue: unique per store made (time and process).
fn new_stream() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", nanos, std::process::id())
}

/// Turns queueing on (with the bound) or off for the writer; makes the state row.
pub(crate) fn configure(
    conn: &Connection,
    ship: Option<u64>,
    path: &Path,
) -> Result<(), StoreError> {
    let err = sql_err(path);
    conn.execute(
        "INSERT OR IGNORE INTO outbox_state (id, stream) VALUES (1, ?1)",
        [new_stream()],
    )
    .map_err(&err)?;
    conn.execute(
        "UPDATE outbox_state SET enabled = ?1, max_pending = ?2 WHERE id = 1",
        params![
            ship.is_some(),
            ship.unwrap_or(0).min(i64::MAX as u64) as i64
        ],
    )
    .map_err(&err)?;
    Ok(())
}

/// Inside a write transaction: the gate that decides whether a record is queued.
pub(crate) struct Gate {
    pending: i64,
    max: i64,
    pub(crate) dropped: u64,
}

impl Gate {
    /// Reads how much waits now; `None` when shipping is off.
    pub(crate) fn open(tx: &Connection) -> rusqlite::Result<Option<Gate>> {
        let row: Option<(bool, i64, i64)> = tx
            .query_row(
                "SELECT enabled, max_pending,
                        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0) - committed
                 FROM outbox_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            Some((true, max, pending)) => Some(Gate {
                pending,
                max,
                dropped: 0,
            }),
            _ => None,
        })
    }

    /// Queues one record, or counts it as dropped when the queue is full.
    pub(crate) fn queue(
        &mut self,
        tx: &Connection,
        kind: i64,
        reference: i64,
    ) -> rusqlite::Result<()> {
        if self.pending >= self.max {
            self.dropped += 1;
            return Ok(());
        }
        tx.prepare_cached("INSERT INTO outbox (kind, ref) VALUES (?1, ?2)")?
            .execute(params![kind, reference])?;
        self.pending += 1;
        Ok(())
    }

    /// Adds what was dropped to the state.
    pub(crate) fn finish(self, tx: &Connection) -> rusqlite::Result<()> {
        if self.dropped > 0 {
            tx.execute(
                "UPDATE outbox_state SET dropped = dropped + ?1 WHERE id = 1",
                [self.dropped as i64],
            )?;
        }
        Ok(())
    }
}

/// Queues acknowledgements (always, when shipping is on).
pub(crate) fn queue_acks(tx: &Connection, ids: &[u64]) -> rusqlite::Result<()> {
    let enabled: bool = tx
        .query_row("SELECT enabled FROM outbox_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(false);
    if enabled {
        for id in ids {
            tx.prepare_cached("INSERT INTO outbox (kind, ref) VALUES (?1, ?2)")?
                .execute(params![KIND_ACK, *id as i64])?;
        }
    }
    Ok(())
}

/// An event as queued for the server.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    /// Its id in this store.
    pub id: u64,
    /// The event's own time (Unix ms).
    pub time_ms: Option<i64>,
    /// When it was stored (Unix ms).
    pub stored_ms: i64,
    /// Source.
    pub source: String,
    /// Host.
    pub host: String,
    /// Filters that matched.
    pub filters: Vec<String>,
    /// Anomaly flag.
    pub anomaly: bool,
    /// Why.
    pub anomaly_why: Option<String>,
    /// Waits for an acknowledgement.
    pub needs_ack: bool,
    /// Fields (as stored: one value per name).
    pub fields: Vec<(String, String)>,
    /// The record as read.
    pub raw: String,
    /// Where it was read.
    pub origin: Option<String>,
}

/// One queued record.
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    /// A stored event.
    Event(QueuedEvent),
    /// An action's attempt on a stored event.
    Outcome(crate::Outcome),
    /// An acknowledgement.
    Ack {
        /// The event's id.
        event: u64,
        /// When (Unix ms).
        at_ms: i64,
        /// Who.
        by: String,
        /// Why.
        comment: String,
    },
}

/// Where the queue stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxState {
    /// The sequence's name (new with each new store).
    pub stream: String,
    /// Highest number the server committed.
    pub committed: u64,
    /// Highest number given out.
    pub last: u64,
    /// Records not queued (queue full) or lost before shipping (retention).
    pub dropped: u64,
    /// When the oldest waiting event was stored (Unix ms).
    pub oldest_pending_ms: Option<i64>,
}

impl OutboxState {
    /// Records waiting.
    pub fn pending(&self) -> u64 {
        self.last.saturating_sub(self.committed)
    }
}

/// The shipper's handle on the queue (its own connection; the daemon's writer keeps
/// writing meanwhile).
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

impl Outbox {
    /// Opens the store's queue (creating the store if needed).
    pub fn open(path: &Path) -> Result<Outbox, StoreError> {
        let conn = schema::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(sql_err(path))?;
        conn.execute(
            "INSERT OR IGNORE INTO outbox_state (id, stream) VALUES (1, ?1)",
            [new_stream()],
        )
        .map_err(sql_err(path))?;
        Ok(Outbox {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Turns queueing on (at most `ship` records waiting) or off. The writer reads the
    /// setting in every transaction, so a running daemon's reload can change it.
    pub fn set_queueing(&self, ship: Option<u64>) -> Result<(), StoreError> {
        configure(&self.conn, ship, &self.path)
    }

    /// Where the queue stands now.
    pub fn state(&self) -> Result<OutboxState, StoreError> {
        self.conn
            .query_row(
                "SELECT stream, committed, dropped,
                        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),
                        (SELECT e.stored FROM outbox o JOIN events e ON e.id = o.ref
                          WHERE o.kind = 1 AND o.seq > s.committed ORDER BY o.seq LIMIT 1)
                 FROM outbox_state s WHERE id = 1",
                [],
                |r| {
                    Ok(OutboxState {
                        stream: r.get(0)?,
                        committed: r.get::<_, i64>(1)? as u64,
                        dropped: r.get::<_, i64>(2)? as u64,
                        last: r.get::<_, i64>(3)? as u64,
                        oldest_pending_ms: r.get(4)?,
                    })
                },
            )
            .map_err(sql_err(&self.path))
    }

    /// Up to `max` queued records after number `after`, in order, until their raw records
    /// and values add up to about `max_bytes`. A record whose event or outcome no longer
    /// exists (retention) is left out: its number becomes a gap.
    pub fn read(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Option<Queued>)>, StoreError> {
        let err = sql_err(&self.path);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT o.seq, o.kind, o.ref,
                        e.id, e.time, e.stored, e.source, e.host, e.filters, e.anomaly,
                        e.anomaly_why, e.needs_ack, e.fields, e.raw, e.origin,
                        e.acked_at, e.acked_by, e.ack_comment,
                        x.event, x.action, x.at, x.attempt, x.ok, x.detail, x.filter
                 FROM outbox o
                 LEFT JOIN events e ON e.id = (CASE WHEN o.kind IN (1, 3) THEN o.ref END)
                 LEFT JOIN outcomes x ON x.rowid = (CASE WHEN o.kind = 2 THEN o.ref END)
                 WHERE o.seq > ?1 ORDER BY o.seq LIMIT ?2",
            )
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![after as i64, max.min(i64::MAX as usize) as i64])
            .map_err(&err)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(r) = rows.next().map_err(&err)? {
            let seq = r.get::<_, i64>(0).map_err(&err)? as u64;
            let kind: i64 = r.get(1).map_err(&err)?;
            let item = match kind {
                KIND_EVENT => match r.get::<_, Option<i64>>(3).map_err(&err)? {
                    None => None,
                    Some(id) => {
                        let filters: String = r.get(8).map_err(&err)?;
                        let fields: String = r.get(12).map_err(&err)?;
                        let fields: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str(&fields).unwrap_or_default();
                        let e = QueuedEvent {
                            id: id as u64,
                            time_ms: r.get(4).map_err(&err)?,
                            stored_ms: r.get(5).map_err(&err)?,
                            source: r.get(6).map_err(&err)?,
                            host: r.get(7).map_err(&err)?,
                            filters: serde_json::from_str(&filters).unwrap_or_default(),
                            anomaly: r.get(9).map_err(&err)?,
                            anomaly_why: r.get(10).map_err(&err)?,
                            needs_ack: r.get(11).map_err(&err)?,
                            fields: fields
                                .into_iter()
                                .map(|(k, v)| match v {
                                    serde_json::Value::String(s) => (k, s),
                                    other => (k, other.to_string()),
                                })
                                .collect(),
                            raw: r.get(13).map_err(&err)?,
                            origin: r.get(14).map_err(&err)?,
                        };
                        bytes += e.raw.len()
                            + e.fields
                                .iter()
                                .map(|(k, v)| k.len() + v.len() + 8)
                                .sum::<usize>()
                            + 200;
                        Some(Queued::Event(e))
                    }
                },
                KIND_ACK => match r.get::<_, Option<i64>>(15).map_err(&err)? {
                    None => None,
                    Some(at) => {
                        bytes += 200;
                        Some(Queued::Ack {
                            event: r.get::<_, i64>(3).map_err(&err)? as u64,
                            at_ms: at,
                            by: r
                                .get::<_, Option<String>>(16)
                                .map_err(&err)?
                                .unwrap_or_default(),
                            comment: r
                                .get::<_, Option<String>>(17)
                                .map_err(&err)?
                                .unwrap_or_default(),
                        })
                    }
                },
                KIND_OUTCOME => match r.get::<_, Option<i64>>(18).map_err(&err)? {
                    None => None,
                    Some(event) => {
                        let detail: String = r.get(23).map_err(&err)?;
                        bytes += 100 + detail.len();
                        Some(Queued::Outcome(crate::Outcome {
                            event: event as u64,
                            action: r.get(19).map_err(&err)?,
                            at_ms: r.get(20).map_err(&err)?,
                            attempt: r.get(21).map_err(&err)?,
                            ok: r.get(22).map_err(&err)?,
                            detail,
                            filter: r.get(24).map_err(&err)?,
                        }))
                    }
                },
                _ => None,
            };
            out.push((seq, item));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The server committed everything up to `upto`: move the cursor, forget those
    /// records, and count `lost` records (gaps) as dropped.
    pub fn commit(&mut self, upto: u64, lost: u64) -> Result<(), StoreError> {
        let err = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        tx.execute(
            "UPDATE outbox_state SET committed = max(committed, ?1), dropped = dropped + ?2 WHERE id = 1",
            params![upto as i64, lost as i64],
        )
        .map_err(&err)?;
        tx.execute("DELETE FROM outbox WHERE seq <= ?1", [upto as i64])
            .map_err(&err)?;
        tx.commit().map_err(&err)
    }
}
