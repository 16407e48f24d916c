//! Batches into PostgreSQL, exactly once.
//!
//! The batches waiting at one moment (of many agents) are stored in one transaction: the
//! agents are locked (an advisory lock per agent, in id order, so two copies of one batch
//! arriving at once — a retry racing the original, or two servers — are handled one after
//! the other), each batch is checked against its agent's `last_seq` and the batch it
//! committed last, the records of the batches that follow on are written (events and
//! outcomes as one binary `COPY` stream each, see `copy.rs`; acknowledgements as one
//! `UPDATE … FROM unnest`; the events' per-hour counts added to `event_hours` and
//! `filter_hours` by one upsert each), and each agent's `last_seq` moves to its batch's
//! end. Only
//! after `COMMIT` — with `synchronous_commit` on, so the records are on disk — does an
//! agent hear `committed_seq`, and only then does it forget the records: a server killed
//! before the commit stored nothing, one killed after it stored everything.
//!
//! A batch is one of three things against the agent's `last_seq`:
//!
//! * it starts at `last_seq + 1`: stored, whole;
//! * it is the batch committed last, byte for byte (the same numbers and the same SHA-256
//!   of its JSON): the agent sent it again because the answer was lost (a server killed
//!   after its commit, a connection dropped). Answered `already_committed`, nothing stored;
//! * anything else: a gap (409 `out_of_order`) or numbers already taken by other content,
//!   an older batch replayed (409 `replayed`). Refused whole, counted; the answer's
//!   `expected_seq` tells a genuine agent where to go on.

use std::collections::HashMap;

use jiff::Timestamp;
use watchpost_fleet_protocol::{Batch, BatchAck, Record};

use crate::copy::CopyWriter;
use crate::db::{DbError, Window};

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch starts after a gap: the agent must send from `expected`.
    #[error("batch starts at {first}, but {expected} is the next number expected")]
    OutOfOrder {
        /// Its first number.
        first: u64,
        /// What the server expects.
        expected: u64,
    },
    /// The batch reuses numbers the server has committed, and is not the batch it
    /// committed last sent again: a replay of an older batch, or different records under
    /// numbers already taken. Nothing of it is stored.
    #[error(
        "batch {first}..={last} reuses sequence numbers already committed (up to {committed}) and is not the batch committed last"
    )]
    Replayed {
        /// Its first number.
        first: u64,
        /// Its last number.
        last: u64,
        /// The last number committed.
        committed: u64,
    },
    /// A new stream must start at 1.
    #[error("a new stream must start at sequence number 1, not {first}")]
    NewStreamNotAtStart {
        /// Its first number.
        first: u64,
    },
    /// The credential no longer names this agent (deleted, or enrolled again since).
    #[error("unknown agent credential (enroll again)")]
    Unauthorized,
    /// The agent was revoked (the message says when and why).
    #[error("{0}")]
    Revoked(String),
    /// The database failed (transient: the agent tries again).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for IngestError {
    fn from(e: tokio_postgres::Error) -> IngestError {
        IngestError::Db(DbError::Postgres(e))
    }
}

fn ts_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What a revoked agent is told.
pub fn revoked_message(at: Timestamp, reason: &str) -> String {
    if reason.is_empty() {
        format!("this agent was revoked at {at}")
    } else {
        format!("this agent was revoked at {at}: {reason}")
    }
}

/// Who sends a batch.
#[derive(Debug, Clone)]
pub struct AgentRef {
    /// Agent id (from its credential).
    pub id: i64,
    /// The SHA-256 of the credential the request carried, when it was taken from the
    /// server's cache rather than looked up for this request: the transaction checks it
    /// against the agent's row (so a revoked, deleted or re-enrolled agent's batch is
    /// refused even when the cache did not know yet). `None`: already checked.
    pub credential: Option<Vec<u8>>,
}

impl AgentRef {
    /// An agent whose credential was checked by the caller.
    pub fn checked(id: i64) -> AgentRef {
        AgentRef {
            id,
            credential: None,
        }
    }
}

/// A batch made ready for the database where it was decoded (off the ingest worker):
/// each record's `COPY` row already encoded (the full-text vector and the fields' JSON
/// are most of the work per event), so the ingest transaction only decides and sends.
pub struct Prepared {
    /// The agent's sequence.
    pub stream: String,
    /// First sequence number covered.
    pub first_seq: u64,
    /// Last sequence number covered.
    pub last_seq: u64,
    /// SHA-256 of the batch as sent (its JSON, decompressed): a batch sent again after a
    /// lost answer is the same bytes.
    pub hash: [u8; 32],
    /// Per record, in order.
    pub records: Vec<PreparedRecord>,
    /// The encoded rows (`PreparedRecord::row` are ranges of it).
    rows: Vec<u8>,
}

/// One record of a [`Prepared`] batch.
pub struct PreparedRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Event (with when the agent stored it, Unix ms), outcome or acknowledgement.
    pub kind: Kind,
    /// The event's or outcome's `COPY` row in `Prepared::rows`.
    row: std::ops::Range<usize>,
}

/// What a record is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// An event, stored by the agent at this time (Unix ms).
    Event {
        /// When the agent stored it.
        stored_ms: i64,
        /// What the per-hour counts file it under.
        count: EventCount,
    },
    /// An action's outcome.
    Outcome,
    /// An acknowledgement.
    Ack {
        /// The event's id on the agent.
        event: i64,
        /// When.
        at: Timestamp,
        /// Who.
        by: String,
        /// Why.
        comment: String,
    },
}

/// What the per-hour counts (`event_hours`, `filter_hours`) need of an event.
#[derive(Debug, Clone)]
pub struct EventCount {
    /// The start of the UTC hour of its `ts`.
    pub hour: Timestamp,
    /// Its host.
    pub host: String,
    /// Its `rule_level` field ('' when none), as `fields ->> 'rule_level'` reads it.
    pub level: String,
    /// Whether it is an anomaly.
    pub anomaly: bool,
    /// The filters that matched it.
    pub filters: Vec<String>,
}

/// The hash a batch is recognised by when it is sent again: SHA-256 of its JSON as
/// received (decompressed).
pub fn content_hash(json: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(json).into()
}

/// Encodes a decoded batch's rows (received at `now`; event partition times from
/// `window`); `hash` is the SHA-256 of its JSON.
pub fn prepare(batch: Batch, hash: [u8; 32], window: Window, now: Timestamp) -> Prepared {
    let mut w = CopyWriter::fragment();
    let mut records = Vec::with_capacity(batch.records.len());
    for r in &batch.records {
        let start = w.len();
        let kind = match r {
            Record::Event(e) => {
                let time = e.time_ms.map(ts_ms);
                let ts = window.ts(time, now);
                w.row(18);
                w.int8(0); // agent_id: set per group (see `store_group`)
                w.timestamptz(now);
                w.timestamptz(ts);
                w.int8(e.seq as i64);
                w.int8(e.id as i64);
                w.opt_timestamptz(time);
                w.timestamptz(ts_ms(e.stored_ms));
                w.text(&e.source);
                w.text(&e.host);
                w.text_array(e.filters.iter().map(String::as_str));
                // Filter names match case-insensitively (`filter:` terms): the index
                // holds them in lower case.
                let keys: Vec<String> = e.filters.iter().map(|f| f.to_lowercase()).collect();
                w.text_array(keys.iter().map(String::as_str));
                w.bool(e.anomaly);
                w.opt_text(e.anomaly_why.as_deref());
                w.bool(e.needs_ack);
                w.jsonb_object(&e.fields.0);
                w.text(&e.raw);
                w.opt_text(e.origin.as_deref());
                w.tsvector(&e.fields.0, &e.host, &e.raw);
                Kind::Event {
                    stored_ms: e.stored_ms,
                    count: EventCount {
                        hour: crate::db::hour_of(ts),
                        host: e.host.clone(),
                        // The first of its name, as the `fields` column keeps it.
                        level: e
                            .fields
                            .0
                            .iter()
                            .find(|(k, _)| k == "rule_level")
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default(),
                        anomaly: e.anomaly,
                        filters: e.filters.clone(),
                    },
                }
            }
            Record::Outcome(o) => {
                w.row(10);
                w.int8(0); // agent_id
                w.timestamptz(now);
                w.int8(o.event as i64);
                w.int8(o.seq as i64);
                w.text(&o.action);
                w.text(&o.filter);
                w.timestamptz(ts_ms(o.at_ms));
                w.int4(o.attempt.min(i32::MAX as u32) as i32);
                w.bool(o.ok);
                w.text(&o.detail);
                Kind::Outcome
            }
            Record::Ack(a) => Kind::Ack {
                event: a.event as i64,
                at: ts_ms(a.at_ms),
                by: a.by.clone(),
                comment: a.comment.clone(),
            },
        };
        records.push(PreparedRecord {
            seq: r.seq(),
            kind,
            row: start..w.len(),
        });
    }
    Prepared {
        stream: batch.stream,
        first_seq: batch.first_seq,
        last_seq: batch.last_seq,
        hash,
        records,
        rows: w.into_bytes(),
    }
}

/// The byte offset of the agent id's value in an encoded row (after the field count and
/// the value's length).
const AGENT_ID_AT: usize = 2 + 4;

/// Per agent in a group: its stream, last number committed, whether they moved, and
/// why its batches are refused (credential no longer valid).
struct AgentState {
    stream: Option<String>,
    last_seq: u64,
    /// The batch committed last: its first number and hash (`None` when unknown).
    last_batch: Option<(u64, Vec<u8>)>,
    changed: bool,
    hash: Option<Vec<u8>>,
    revoked: Option<String>,
}

/// The columns the event rows are copied into, in order.
const EVENT_COLUMNS: &str = "agent_id, received_at, ts, seq, local_id, time, stored_at, source, host, \
     filters, filter_keys, anomaly, anomaly_why, needs_ack, fields, raw, origin, search";
/// The columns the outcome rows are copied into, in order.
const OUTCOME_COLUMNS: &str =
    "agent_id, received_at, event_local, seq, action, filter, at, attempt, ok, detail";

/// Sends a `COPY … FROM STDIN (FORMAT binary)` stream.
async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &str,
    rows: CopyWriter,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::SinkExt;
    if rows.rows() == 0 {
        return Ok(());
    }
    let sink = tx
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(rows.finish())).await?;
    sink.finish().await?;
    Ok(())
}

/// Adds the per-hour counts of the events a group stored, in its transaction: one
/// `INSERT … ON CONFLICT … DO UPDATE` per table (each key once, so no row is met twice).
/// The rows are each agent's own, and an agent's batches are stored one after the other
/// (its advisory lock): groups of different agents never wait for each other here. Rows
/// go in key order, the order in which the fold of past hours (`db::fold_hours`) locks
/// the rows it moves: a late batch and a fold wait for each other at most one way.
async fn add_hours(
    tx: &tokio_postgres::Transaction<'_>,
    hours: HashMap<(Timestamp, i64, &str, &str), (i64, i64)>,
    filter_hours: HashMap<(Timestamp, i64, &str), i64>,
) -> Result<(), tokio_postgres::Error> {
    if !hours.is_empty() {
        let n = hours.len();
        let (mut hour, mut agent, mut host, mut level, mut events, mut anomalies) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut hours: Vec<_> = hours.into_iter().collect();
        hours.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((h, a, ho, l), (e, an)) in hours {
            hour.push(h);
            agent.push(a);
            host.push(ho);
            level.push(l);
            events.push(e);
            anomalies.push(an);
        }
        tx.execute(
            "INSERT INTO event_hours AS t (hour, agent_id, host, level, events, anomalies)
             SELECT * FROM unnest($1::timestamptz[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::int8[])
             ON CONFLICT (hour, agent_id, host, level) DO UPDATE
             SET events = t.events + excluded.events, anomalies = t.anomalies + excluded.anomalies",
            &[&hour, &agent, &host, &level, &events, &anomalies],
        )
        .await?;
    }
    if !filter_hours.is_empty() {
        let n = filter_hours.len();
        let (mut hour, mut agent, mut filter, mut events) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut filter_hours: Vec<_> = filter_hours.into_iter().collect();
        filter_hours.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((h, a, f), e) in filter_hours {
            hour.push(h);
            agent.push(a);
            filter.push(f);
            events.push(e);
        }
        tx.execute(
            "INSERT INTO filter_hours AS t (hour, agent_id, filter, events)
             SELECT * FROM unnest($1::timestamptz[], $2::int8[], $3::text[], $4::int8[])
             ON CONFLICT (hour, agent_id, filter) DO UPDATE SET events = t.events + excluded.events",
            &[&hour, &agent, &filter, &events],
        )
        .await?;
    }
    Ok(())
}

/// Stores a group of batches (of one agent or several) in one transaction: one commit for
/// all, so a server receiving many small batches at once pays one disk flush for them.
/// Each batch gets its own answer; one refused (out of order, or its credential no longer
/// valid) does not affect the others. A database failure fails the whole group (every
/// agent sends again).
///
/// Exactly once across retries and servers: each agent of the group is locked for the
/// transaction (`pg_advisory_xact_lock(agent id)`, in id order, so two groups sharing
/// agents cannot deadlock) before its `last_seq` is read, so two copies of one batch are
/// stored one after the other and the second finds its numbers taken. The agents' rows
/// themselves are locked only at the end, to move `last_seq`: a heartbeat updating the
/// same row waits for a commit, never for a whole group.
pub async fn store_group(
    client: &mut tokio_postgres::Client,
    group: &[(AgentRef, &Prepared)],
) -> Result<Vec<Result<BatchAck, IngestError>>, IngestError> {
    let tx = client.transaction().await?;
    let mut ids: Vec<i64> = group.iter().map(|(a, _)| a.id).collect();
    ids.sort_unstable();
    ids.dedup();
    tx.execute(
        "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k",
        &[&ids],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT id, stream, last_seq, credential_hash, revoked_at, coalesce(revoke_reason, ''),
                    last_batch_first, last_batch_hash
             FROM agents WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    let mut state: HashMap<i64, AgentState> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                AgentState {
                    stream: r.get(1),
                    last_seq: r.get::<_, i64>(2) as u64,
                    last_batch: r
                        .get::<_, Option<i64>>(6)
                        .zip(r.get::<_, Option<Vec<u8>>>(7))
                        .map(|(first, hash)| (first as u64, hash)),
                    changed: false,
                    hash: r.get(3),
                    revoked: r
                        .get::<_, Option<Timestamp>>(4)
                        .map(|at| revoked_message(at, r.get(5))),
                },
            )
        })
        .collect();
    let now = Timestamp::now();
    let mut out = Vec::with_capacity(group.len());
    let mut events = CopyWriter::new();
    let mut outcomes = CopyWriter::new();
    let (mut a_agent, mut a_local, mut a_at, mut a_by, mut a_comment) =
        (vec![], vec![], vec![], vec![], vec![]);
    // The per-hour counts of the events stored: (hour, agent, host, level) -> (events,
    // anomalies) and (hour, agent, filter) -> events.
    let mut hours: HashMap<(Timestamp, i64, &str, &str), (i64, i64)> = HashMap::new();
    let mut filter_hours: HashMap<(Timestamp, i64, &str), i64> = HashMap::new();
    // Per batch: the number of acknowledgements it sent (to count orphans after the
    // update).
    let mut ack_counts = Vec::with_capacity(group.len());
    for (agent, batch) in group {
        ack_counts.push(0);
        let Some(st) = state.get_mut(&agent.id) else {
            out.push(Err(IngestError::Unauthorized));
            continue;
        };
        if let Some(sent) = &agent.credential {
            if st.hash.as_ref() != Some(sent) {
                out.push(Err(IngestError::Unauthorized));
                continue;
            }
            if let Some(why) = &st.revoked {
                out.push(Err(IngestError::Revoked(why.clone())));
                continue;
            }
        }
        if st.stream.as_deref() != Some(batch.stream.as_str()) {
            if batch.first_seq != 1 {
                out.push(Err(IngestError::NewStreamNotAtStart {
                    first: batch.first_seq,
                }));
                continue;
            }
            if let Some(old) = st.stream.as_deref() {
                tracing::warn!(agent = agent.id, old, new = %batch.stream, "agent started a new stream (its event store was made anew)");
                tx.execute(
                    "INSERT INTO audit_log (actor, action, target, detail)
                     VALUES ('agent', 'agent.new_stream', $1, jsonb_build_object('old', $2::text, 'new', $3::text, 'old_last_seq', $4::bigint))",
                    &[&agent.id.to_string(), &old, &batch.stream, &(st.last_seq as i64)],
                )
                .await?;
            }
            st.stream = Some(batch.stream.clone());
            st.last_seq = 0;
            st.last_batch = None;
            st.changed = true;
        }
        if batch.first_seq > st.last_seq + 1 {
            out.push(Err(IngestError::OutOfOrder {
                first: batch.first_seq,
                expected: st.last_seq + 1,
            }));
            continue;
        }
        if batch.first_seq <= st.last_seq {
            // Numbers already taken: acknowledged again only when this is the batch
            // committed last, byte for byte (an agent whose answer was lost sends it
            // again); anything else under those numbers is refused, whole.
            let same = batch.last_seq == st.last_seq
                && st.last_batch.as_ref().is_some_and(|(first, hash)| {
                    *first == batch.first_seq && hash.as_slice() == batch.hash.as_slice()
                });
            out.push(if same {
                Ok(BatchAck {
                    committed_seq: st.last_seq,
                    stored: 0,
                    duplicates: batch.records.len() as u64,
                    orphans: 0,
                    already_committed: true,
                })
            } else {
                Err(IngestError::Replayed {
                    first: batch.first_seq,
                    last: batch.last_seq,
                    committed: st.last_seq,
                })
            });
            continue;
        }
        let mut fresh = 0u64;
        let mut acks = 0u64;
        for r in &batch.records {
            fresh += 1;
            let row = &batch.rows[r.row.clone()];
            match &r.kind {
                Kind::Event { count, .. } => {
                    events.append_row(row, AGENT_ID_AT, agent.id);
                    let c = hours
                        .entry((count.hour, agent.id, &count.host, &count.level))
                        .or_default();
                    c.0 += 1;
                    c.1 += i64::from(count.anomaly);
                    for f in &count.filters {
                        *filter_hours
                            .entry((count.hour, agent.id, f.as_str()))
                            .or_default() += 1;
                    }
                }
                Kind::Outcome => outcomes.append_row(row, AGENT_ID_AT, agent.id),
                Kind::Ack {
                    event,
                    at,
                    by,
                    comment,
                } => {
                    acks += 1;
                    a_agent.push(agent.id);
                    a_local.push(*event);
                    a_at.push(*at);
                    a_by.push(by.as_str());
                    a_comment.push(comment.as_str());
                }
            }
        }
        st.last_seq = batch.last_seq;
        st.last_batch = Some((batch.first_seq, batch.hash.to_vec()));
        st.changed = true;
        if let Some(n) = ack_counts.last_mut() {
            *n = acks;
        }
        out.push(Ok(BatchAck {
            committed_seq: st.last_seq,
            stored: fresh - acks,
            duplicates: 0,
            orphans: 0,
            already_committed: false,
        }));
    }
    copy_in(&tx, "events", EVENT_COLUMNS, events).await?;
    copy_in(&tx, "outcomes", OUTCOME_COLUMNS, outcomes).await?;
    add_hours(&tx, hours, filter_hours).await?;
    if !a_local.is_empty() {
        // Which acknowledgements found their event, per agent (orphans are counted).
        let updated = tx
            .query(
                "UPDATE events e SET acked_at = u.t, acked_by = u.b, ack_comment = u.c,
                        ack_origin = 'agent'
                 FROM unnest($1::int8[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[]) AS u(g, l, t, b, c)
                 WHERE e.agent_id = u.g AND e.local_id = u.l AND e.acked_at IS NULL
                 RETURNING e.agent_id",
                &[&a_agent, &a_local, &a_at, &a_by, &a_comment],
            )
            .await?;
        let mut found: HashMap<i64, u64> = HashMap::new();
        for row in updated {
            *found.entry(row.get(0)).or_default() += 1;
        }
        for (i, (agent, _)) in group.iter().enumerate() {
            if let Ok(ack) = &mut out[i] {
                let sent = ack_counts[i];
                let f = found.entry(agent.id).or_default();
                let got = sent.min(*f);
                *f -= got;
                ack.stored += got;
                ack.orphans = sent - got;
            }
        }
    }
    let (mut u_id, mut u_stream, mut u_seq) = (Vec::new(), Vec::new(), Vec::new());
    let (mut u_first, mut u_hash) = (Vec::new(), Vec::new());
    for (id, st) in &state {
        if st.changed {
            u_id.push(*id);
            u_stream.push(st.stream.clone().unwrap_or_default());
            u_seq.push(st.last_seq as i64);
            u_first.push(st.last_batch.as_ref().map(|(f, _)| *f as i64));
            u_hash.push(st.last_batch.as_ref().map(|(_, h)| h.clone()));
        }
    }
    if !u_id.is_empty() {
        // Rows locked in id order (as the heartbeat worker does: no deadlock), `NO KEY`
        // so a heartbeat's check rows (foreign keys to `agents`) do not wait.
        let mut order = u_id.clone();
        order.sort_unstable();
        tx.execute(
            "SELECT 1 FROM agents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            &[&order],
        )
        .await?;
        tx.execute(
            "UPDATE agents a SET stream = u.s, last_seq = u.q, last_batch_first = u.f,
                    last_batch_hash = u.h, last_batch_at = $6, last_seen_at = $6
             FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::bytea[])
                  AS u(i, s, q, f, h)
             WHERE a.id = u.i",
            &[&u_id, &u_stream, &u_seq, &u_first, &u_hash, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}
