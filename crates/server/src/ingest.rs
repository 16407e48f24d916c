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

/// Stores the batch for the agent; returns the acknowledgement.
pub async fn store(
    client: &mut tokio_postgres::Client,
    agent: AgentRef,
    batch: &Batch,
    window: Window,
) -> Result<BatchAck, IngestError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "SELECT stream, last_seq FROM agents WHERE id = $1 FOR UPDATE",
            &[&agent.id],
        )
        .await?;
    let stream: Option<String> = row.get(0);
    let mut last_seq = row.get::<_, i64>(1) as u64;
    if stream.as_deref() != Some(batch.stream.as_str()) {
        if batch.first_seq != 1 {
            return Err(IngestError::NewStreamNotAtStart {
                first: batch.first_seq,
            });
        }
        if let Some(old) = &stream {
            tracing::warn!(agent = agent.id, old, new = %batch.stream, "agent started a new stream (its event store was made anew)");
            tx.execute(
                "INSERT INTO audit_log (actor, action, target, detail)
                 VALUES ('agent', 'agent.new_stream', $1, jsonb_build_object('old', $2::text, 'new', $3::text, 'old_last_seq', $4::bigint))",
                &[&agent.id.to_string(), old, &batch.stream, &(last_seq as i64)],
            )
            .await?;
        }
        last_seq = 0;
    }
    if batch.first_seq > last_seq + 1 {
        return Err(IngestError::OutOfOrder {
            first: batch.first_seq,
            expected: last_seq + 1,
        });
    }
    let now = Timestamp::now();
    let fresh: Vec<&Record> = batch
        .records
        .iter()
        .filter(|r| r.seq() > last_seq)
        .collect();
    let duplicates = (batch.records.len() - fresh.len()) as u64;

    // Events.
    let mut e_ts = Vec::new();
    let mut e_seq = Vec::new();
    let mut e_local = Vec::new();
    let mut e_time: Vec<Option<Timestamp>> = Vec::new();
    let mut e_stored = Vec::new();
    let mut e_source = Vec::new();
    let mut e_host = Vec::new();
    let mut e_filters = Vec::new();
    let mut e_anomaly = Vec::new();
    let mut e_why: Vec<Option<&str>> = Vec::new();
    let mut e_needs = Vec::new();
    let mut e_fields = Vec::new();
    let mut e_raw = Vec::new();
    let mut e_origin: Vec<Option<&str>> = Vec::new();
    let mut e_search = Vec::new();
    // Outcomes.
    let mut o_local = Vec::new();
    let mut o_seq = Vec::new();
    let mut o_action = Vec::new();
    let mut o_filter = Vec::new();
    let mut o_at = Vec::new();
    let mut o_attempt = Vec::new();
    let mut o_ok = Vec::new();
    let mut o_detail = Vec::new();
    // Acknowledgements.
    let mut a_local = Vec::new();
    let mut a_at = Vec::new();
    let mut a_by = Vec::new();
    let mut a_comment = Vec::new();
    for r in &fresh {
        match r {
            Record::Event(e) => {
                let time = e.time_ms.map(ts_ms);
                e_ts.push(window.ts(time, now));
                e_seq.push(e.seq as i64);
                e_local.push(e.id as i64);
                e_time.push(time);
                e_stored.push(ts_ms(e.stored_ms));
                e_source.push(e.source.as_str());
                e_host.push(e.host.as_str());
                e_filters.push(joined(&e.filters));
                e_anomaly.push(e.anomaly);
                e_why.push(e.anomaly_why.as_deref());
                e_needs.push(e.needs_ack);
                e_fields.push(fields_json(&e.fields.0));
                e_raw.push(e.raw.as_str());
                e_origin.push(e.origin.as_deref());
                e_search.push(tsvector(&e.fields.0, &e.host, &e.raw));
            }
            Record::Outcome(o) => {
                o_local.push(o.event as i64);
                o_seq.push(o.seq as i64);
                o_action.push(o.action.as_str());
                o_filter.push(o.filter.as_str());
                o_at.push(ts_ms(o.at_ms));
                o_attempt.push(o.attempt.min(i32::MAX as u32) as i32);
                o_ok.push(o.ok);
                o_detail.push(o.detail.as_str());
            }
            Record::Ack(a) => {
                a_local.push(a.event as i64);
                a_at.push(ts_ms(a.at_ms));
                a_by.push(a.by.as_str());
                a_comment.push(a.comment.as_str());
            }
        }
    }
    let mut stored = 0u64;
    if !e_seq.is_empty() {
        let params: [&(dyn ToSql + Sync); 17] = [
            &agent.id, &now, &e_ts, &e_seq, &e_local, &e_time, &e_stored, &e_source, &e_host,
            &e_filters, &e_anomaly, &e_why, &e_needs, &e_fields, &e_raw, &e_origin, &e_search,
        ];
        stored += tx
            .execute(
                "INSERT INTO events (agent_id, received_at, ts, seq, local_id, time, stored_at,
                    source, host, filters, filter_keys, anomaly, anomaly_why, needs_ack, fields,
                    raw, origin, search)
                 SELECT $1, $2, ts, seq, local_id, time, stored_at, source, host,
                        f, (SELECT coalesce(array_agg(lower(x)), '{}') FROM unnest(f) x),
                        anomaly, why, needs_ack, fields::jsonb, raw, origin, search::tsvector
                 FROM unnest($3::timestamptz[], $4::int8[], $5::int8[], $6::timestamptz[],
                             $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::bool[],
                             $12::text[], $13::bool[], $14::text[], $15::text[], $16::text[],
                             $17::text[])
                   AS t(ts, seq, local_id, time, stored_at, source, host, filters, anomaly,
                        why, needs_ack, fields, raw, origin, search),
                 LATERAL (SELECT CASE WHEN filters = '' THEN '{}'::text[]
                                      ELSE string_to_array(filters, E'\\x1f') END AS f) fs",
                &params,
            )
            .await?;
    }
    if !o_seq.is_empty() {
        stored += tx
            .execute(
                "INSERT INTO outcomes (agent_id, received_at, event_local, seq, action, filter, at, attempt, ok, detail)
                 SELECT $1, $2, l, s, a, f, t, n, o, d
                 FROM unnest($3::int8[], $4::int8[], $5::text[], $6::text[], $7::timestamptz[],
                             $8::int4[], $9::bool[], $10::text[]) AS u(l, s, a, f, t, n, o, d)",
                &[
                    &agent.id, &now, &o_local, &o_seq, &o_action, &o_filter, &o_at, &o_attempt,
                    &o_ok, &o_detail,
                ],
            )
            .await?;
    }
    let mut orphans = 0u64;
    if !a_local.is_empty() {
        let n = tx
            .execute(
                "UPDATE events e SET acked_at = u.t, acked_by = u.b, ack_comment = u.c,
                        ack_origin = 'agent'
                 FROM unnest($2::int8[], $3::timestamptz[], $4::text[], $5::text[]) AS u(l, t, b, c)
                 WHERE e.agent_id = $1 AND e.local_id = u.l AND e.acked_at IS NULL",
                &[&agent.id, &a_local, &a_at, &a_by, &a_comment],
            )
            .await?;
        stored += n;
        orphans = a_local.len() as u64 - n.min(a_local.len() as u64);
    }
    let committed = batch.last_seq.max(last_seq);
    tx.execute(
        "UPDATE agents SET stream = $2, last_seq = $3, last_batch_at = $4, last_seen_at = $4
         WHERE id = $1",
        &[&agent.id, &batch.stream, &(committed as i64), &now],
    )
    .await?;
    tx.commit().await?;
    Ok(BatchAck {
        committed_seq: committed,
        stored,
        duplicates,
        orphans,
    })
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
