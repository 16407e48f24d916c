//! A batch into PostgreSQL, exactly once.
//!
//! One transaction per batch: the agent's row is locked (`FOR UPDATE`, so two copies of
//! one batch arriving at once — a retry racing the original, or two servers — are stored
//! one after the other), records numbered at or below the agent's `last_seq` are skipped
//! as already stored, the rest are inserted (events as one multi-row `INSERT … SELECT FROM
//! unnest(arrays)`, outcomes likewise, acknowledgements as one `UPDATE … FROM unnest`),
//! and `last_seq` moves to the batch's end. Only after `COMMIT` does the agent hear
//! `committed_seq`, and only then does it forget the records: a server killed before the
//! commit stored nothing, one killed after it stored everything, and the agent's next
//! attempt (the same numbers) is then acknowledged without storing anything again.

use jiff::Timestamp;
use tokio_postgres::types::ToSql;
use watchpost_fleet_protocol::{Batch, BatchAck, Record};

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
    /// A new stream must start at 1.
    #[error("a new stream must start at sequence number 1, not {first}")]
    NewStreamNotAtStart {
        /// Its first number.
        first: u64,
    },
    /// The database failed (transient: the agent tries again).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for IngestError {
    fn from(e: tokio_postgres::Error) -> IngestError {
        IngestError::Db(DbError::Postgres(e))
    }
}

/// Most bytes of folded words indexed per event (PostgreSQL's tsvector holds at most
/// 1 MB; what is past this stays in `raw` and `fields`, found by `field:` terms).
const MAX_INDEX_BYTES: usize = 256 << 10;
/// Highest word position a tsvector records.
const MAX_POSITION: usize = 16_383;
/// Longest word PostgreSQL indexes (longer ones are left out, as its own parser does).
const MAX_WORD: usize = 2046;

/// The tsvector literal of an event's words (values in order, the host, the raw record),
/// with positions, so phrases match as in the agent's FTS5 index.
pub fn tsvector(values: &[(String, String)], host: &str, raw: &str) -> String {
    let mut out = String::new();
    let mut pos = 0usize;
    let texts = values.iter().map(|(_, v)| v.as_str()).chain([host, raw]);
    'outer: for text in texts {
        for word in watchpost_query::index_words(text) {
            pos += 1;
            if pos > MAX_POSITION || out.len() + word.len() > MAX_INDEX_BYTES {
                break 'outer;
            }
            if word.len() > MAX_WORD {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('\'');
            for c in word.chars() {
                if c == '\'' || c == '\\' {
                    out.push(c);
                }
                out.push(c);
            }
            out.push_str("':");
            out.push_str(&pos.to_string());
        }
    }
    out
}

/// The fields as a JSON object text (for `jsonb`).
fn fields_json(fields: &[(String, String)]) -> String {
    let mut m = serde_json::Map::with_capacity(fields.len());
    for (k, v) in fields {
        m.entry(k.clone())
            .or_insert_with(|| serde_json::Value::String(v.clone()));
    }
    serde_json::Value::Object(m).to_string()
}

fn ts_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Filter names joined by U+001F (split again in SQL: a text[][] would be flattened by
/// `unnest`).
fn joined(names: &[String]) -> String {
    names
        .iter()
        .map(|n| n.replace('\u{1f}', " "))
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// What the caller knows about the agent before the transaction.
#[derive(Debug, Clone, Copy)]
pub struct AgentRef {
    /// Agent id (from its credential).
    pub id: i64,
}

/// Stores one batch for the agent; returns the acknowledgement.
pub async fn store(
    client: &mut tokio_postgres::Client,
    agent: AgentRef,
    batch: &Batch,
    window: Window,
) -> Result<BatchAck, IngestError> {
    let mut results = store_group(client, &[(agent, batch)], window).await?;
    results.pop().unwrap_or(Err(IngestError::Db(DbError::Build(
        "no result for the batch".into(),
    ))))
}

/// The rows of one insert statement, for every batch of a group.
#[derive(Default)]
struct Rows<'a> {
    e_agent: Vec<i64>,
    e_ts: Vec<Timestamp>,
    e_seq: Vec<i64>,
    e_local: Vec<i64>,
    e_time: Vec<Option<Timestamp>>,
    e_stored: Vec<Timestamp>,
    e_source: Vec<&'a str>,
    e_host: Vec<&'a str>,
    e_filters: Vec<String>,
    e_anomaly: Vec<bool>,
    e_why: Vec<Option<&'a str>>,
    e_needs: Vec<bool>,
    e_fields: Vec<String>,
    e_raw: Vec<&'a str>,
    e_origin: Vec<Option<&'a str>>,
    e_search: Vec<String>,
    o_agent: Vec<i64>,
    o_local: Vec<i64>,
    o_seq: Vec<i64>,
    o_action: Vec<&'a str>,
    o_filter: Vec<&'a str>,
    o_at: Vec<Timestamp>,
    o_attempt: Vec<i32>,
    o_ok: Vec<bool>,
    o_detail: Vec<&'a str>,
    a_agent: Vec<i64>,
    a_local: Vec<i64>,
    a_at: Vec<Timestamp>,
    a_by: Vec<&'a str>,
    a_comment: Vec<&'a str>,
}

impl<'a> Rows<'a> {
    fn add(&mut self, agent: i64, r: &'a Record, window: Window, now: Timestamp) {
        match r {
            Record::Event(e) => {
                let time = e.time_ms.map(ts_ms);
                self.e_agent.push(agent);
                self.e_ts.push(window.ts(time, now));
                self.e_seq.push(e.seq as i64);
                self.e_local.push(e.id as i64);
                self.e_time.push(time);
                self.e_stored.push(ts_ms(e.stored_ms));
                self.e_source.push(e.source.as_str());
                self.e_host.push(e.host.as_str());
                self.e_filters.push(joined(&e.filters));
                self.e_anomaly.push(e.anomaly);
                self.e_why.push(e.anomaly_why.as_deref());
                self.e_needs.push(e.needs_ack);
                self.e_fields.push(fields_json(&e.fields.0));
                self.e_raw.push(e.raw.as_str());
                self.e_origin.push(e.origin.as_deref());
                self.e_search.push(tsvector(&e.fields.0, &e.host, &e.raw));
            }
            Record::Outcome(o) => {
                self.o_agent.push(agent);
                self.o_local.push(o.event as i64);
                self.o_seq.push(o.seq as i64);
                self.o_action.push(o.action.as_str());
                self.o_filter.push(o.filter.as_str());
                self.o_at.push(ts_ms(o.at_ms));
                self.o_attempt.push(o.attempt.min(i32::MAX as u32) as i32);
                self.o_ok.push(o.ok);
                self.o_detail.push(o.detail.as_str());
            }
            Record::Ack(a) => {
                self.a_agent.push(agent);
                self.a_local.push(a.event as i64);
                self.a_at.push(ts_ms(a.at_ms));
                self.a_by.push(a.by.as_str());
                self.a_comment.push(a.comment.as_str());
            }
        }
    }
}

/// Stores a group of batches (of one agent or several) in one transaction: one commit for
/// all, so a server receiving many small batches at once pays one disk flush for them.
/// Each batch gets its own answer; one refused (out of order) does not affect the others.
/// A database failure fails the whole group (every agent sends again).
pub async fn store_group(
    client: &mut tokio_postgres::Client,
    group: &[(AgentRef, &Batch)],
    window: Window,
) -> Result<Vec<Result<BatchAck, IngestError>>, IngestError> {
    let tx = client.transaction().await?;
    let mut ids: Vec<i64> = group.iter().map(|(a, _)| a.id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Locked in id order: two groups sharing agents cannot deadlock.
    let rows = tx
        .query(
            "SELECT id, stream, last_seq FROM agents WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?;
    let mut state: std::collections::HashMap<i64, (Option<String>, u64, bool)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get::<_, i64>(2) as u64, false)))
        .collect();
    let now = Timestamp::now();
    let mut out = Vec::with_capacity(group.len());
    let mut rows = Rows::default();
    // Per batch: the number of acknowledgements it sent (to count orphans after the
    // update).
    let mut ack_counts = Vec::with_capacity(group.len());
    for (agent, batch) in group {
        let Some((stream, last_seq, changed)) = state.get_mut(&agent.id) else {
            out.push(Err(IngestError::Db(DbError::Build(format!(
                "agent {} is gone",
                agent.id
            )))));
            ack_counts.push(0);
            continue;
        };
        if stream.as_deref() != Some(batch.stream.as_str()) {
            if batch.first_seq != 1 {
                out.push(Err(IngestError::NewStreamNotAtStart {
                    first: batch.first_seq,
                }));
                ack_counts.push(0);
                continue;
            }
            if let Some(old) = stream.as_deref() {
                tracing::warn!(agent = agent.id, old, new = %batch.stream, "agent started a new stream (its event store was made anew)");
                tx.execute(
                    "INSERT INTO audit_log (actor, action, target, detail)
                     VALUES ('agent', 'agent.new_stream', $1, jsonb_build_object('old', $2::text, 'new', $3::text, 'old_last_seq', $4::bigint))",
                    &[&agent.id.to_string(), &old, &batch.stream, &(*last_seq as i64)],
                )
                .await?;
            }
            *stream = Some(batch.stream.clone());
            *last_seq = 0;
            *changed = true;
        }
        if batch.first_seq > *last_seq + 1 {
            out.push(Err(IngestError::OutOfOrder {
                first: batch.first_seq,
                expected: *last_seq + 1,
            }));
            ack_counts.push(0);
            continue;
        }
        let mut fresh = 0u64;
        let mut acks = 0u64;
        for r in batch.records.iter().filter(|r| r.seq() > *last_seq) {
            rows.add(agent.id, r, window, now);
            fresh += 1;
            acks += matches!(r, Record::Ack(_)) as u64;
        }
        let duplicates = batch.records.len() as u64 - fresh;
        if batch.last_seq > *last_seq {
            *last_seq = batch.last_seq;
            *changed = true;
        }
        ack_counts.push(acks);
        out.push(Ok(BatchAck {
            committed_seq: *last_seq,
            stored: fresh - acks,
            duplicates,
            orphans: 0,
        }));
    }
    let r = &rows;
    if !r.e_seq.is_empty() {
        let params: [&(dyn ToSql + Sync); 17] = [
            &r.e_agent,
            &now,
            &r.e_ts,
            &r.e_seq,
            &r.e_local,
            &r.e_time,
            &r.e_stored,
            &r.e_source,
            &r.e_host,
            &r.e_filters,
            &r.e_anomaly,
            &r.e_why,
            &r.e_needs,
            &r.e_fields,
            &r.e_raw,
            &r.e_origin,
            &r.e_search,
        ];
        tx.execute(
            "INSERT INTO events (agent_id, received_at, ts, seq, local_id, time, stored_at,
                source, host, filters, filter_keys, anomaly, anomaly_why, needs_ack, fields,
                raw, origin, search)
             SELECT agent, $2, ts, seq, local_id, time, stored_at, source, host,
                    f, (SELECT coalesce(array_agg(lower(x)), '{}') FROM unnest(f) x),
                    anomaly, why, needs_ack, fields::jsonb, raw, origin, search::tsvector
             FROM unnest($1::int8[], $3::timestamptz[], $4::int8[], $5::int8[], $6::timestamptz[],
                         $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::bool[],
                         $12::text[], $13::bool[], $14::text[], $15::text[], $16::text[],
                         $17::text[])
               AS t(agent, ts, seq, local_id, time, stored_at, source, host, filters, anomaly,
                    why, needs_ack, fields, raw, origin, search),
             LATERAL (SELECT CASE WHEN filters = '' THEN '{}'::text[]
                                  ELSE string_to_array(filters, E'\\x1f') END AS f) fs",
            &params,
        )
        .await?;
    }
    if !r.o_seq.is_empty() {
        tx.execute(
            "INSERT INTO outcomes (agent_id, received_at, event_local, seq, action, filter, at, attempt, ok, detail)
             SELECT g, $2, l, s, a, f, t, n, o, d
             FROM unnest($1::int8[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::timestamptz[],
                         $8::int4[], $9::bool[], $10::text[]) AS u(g, l, s, a, f, t, n, o, d)",
            &[
                &r.o_agent, &now, &r.o_local, &r.o_seq, &r.o_action, &r.o_filter, &r.o_at,
                &r.o_attempt, &r.o_ok, &r.o_detail,
            ],
        )
        .await?;
    }
    if !r.a_local.is_empty() {
        // Which acknowledgements found their event, per agent (orphans are counted).
        let updated = tx
            .query(
                "UPDATE events e SET acked_at = u.t, acked_by = u.b, ack_comment = u.c,
                        ack_origin = 'agent'
                 FROM unnest($1::int8[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[]) AS u(g, l, t, b, c)
                 WHERE e.agent_id = u.g AND e.local_id = u.l AND e.acked_at IS NULL
                 RETURNING e.agent_id",
                &[&r.a_agent, &r.a_local, &r.a_at, &r.a_by, &r.a_comment],
            )
            .await?;
        let mut found: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
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
    for (id, (stream, last_seq, changed)) in &state {
        if *changed {
            u_id.push(*id);
            u_stream.push(stream.clone().unwrap_or_default());
            u_seq.push(*last_seq as i64);
        }
    }
    tx.execute(
        "UPDATE agents a SET stream = u.s, last_seq = u.q, last_batch_at = $4, last_seen_at = $4
         FROM unnest($1::int8[], $2::text[], $3::int8[]) AS u(i, s, q)
         WHERE a.id = u.i",
        &[&u_id, &u_stream, &u_seq, &now],
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsvector_literals_are_positioned_and_quoted() {
        let v = tsvector(
            &[
                ("a".into(), "Mimikatz.exe run".into()),
                ("b".into(), "O'Brien".into()),
            ],
            "PC1",
            "raw",
        );
        assert_eq!(
            v,
            "'mimikatz':1 'exe':2 'run':3 'o':4 'brien':5 'pc1':6 'raw':7"
        );
        let long = "x ".repeat(20_000);
        let v = tsvector(&[], "h", &long);
        assert!(v.ends_with(":16383"), "{}", &v[v.len() - 20..]);
        assert_eq!(joined(&["a".into(), "b\u{1f}c".into()]), "a\u{1f}b c");
        assert_eq!(
            fields_json(&[("k".into(), "v\"".into()), ("k".into(), "2".into())]),
            r#"{"k":"v\""}"#
        );
    }
}
