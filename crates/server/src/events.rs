//! `watchpost-server events` and `GET /api/v1/admin/events`: stored events found with the
//! query language of `watchpost events` (see `query.rs`), printed like the agent prints
//! its own (with the agent that shipped each).

use std::io::Write;

use jiff::Timestamp;
use serde::Serialize;
use watchpost_query::{Query, QueryError, parse_since, parse_terms};

use crate::query::to_sql;

/// An action's attempt, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeRow {
    /// Action name.
    pub action: String,
    /// The filter (or rule set) whose firing it handled.
    pub filter: String,
    /// When (RFC 3339).
    pub at: String,
    /// Attempt number (0: held back by throttle/dedupe).
    pub attempt: i32,
    /// Succeeded.
    pub ok: bool,
    /// Error or note.
    pub detail: String,
}

/// An acknowledgement, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct AckRow {
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub by: String,
    /// Why.
    pub comment: String,
    /// `agent` (on the host) or `server`.
    pub origin: String,
}

/// An event as the server stores it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Server id (ascending in storing order).
    pub id: i64,
    /// The agent that shipped it.
    pub agent_id: i64,
    /// Its host name.
    pub agent: String,
    /// Its id in the agent's store.
    pub local_id: i64,
    /// The agent's sequence number.
    pub seq: i64,
    /// The event's own time.
    pub time: Option<String>,
    /// When the agent stored it.
    pub stored: String,
    /// When the server received it.
    pub received: String,
    /// Source.
    pub source: String,
    /// Host the event is about.
    pub host: String,
    /// Filters that matched.
    pub filters: Vec<String>,
    /// Anomaly flag.
    pub anomaly: bool,
    /// Why.
    pub anomaly_why: Option<String>,
    /// Waits (or waited) for an acknowledgement.
    pub needs_ack: bool,
    /// The acknowledgement.
    pub ack: Option<AckRow>,
    /// Fields.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The record as read.
    pub raw: String,
    /// Where it was read.
    pub origin: Option<String>,
    /// What the actions did.
    pub outcomes: Vec<OutcomeRow>,
}

/// A query from its text and an optional `--since`.
pub fn parse_query(text: &str, since: Option<&str>) -> Result<Query, QueryError> {
    Ok(Query {
        terms: parse_terms(text)?,
        since: since
            .map(|s| parse_since(s, Timestamp::now()))
            .transpose()?,
        ..Query::default()
    })
}

/// Why events could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The query.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The database.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// Events matching `query`, newest first, with their outcomes.
pub async fn find(
    client: &tokio_postgres::Client,
    query: &Query,
    limit: usize,
) -> Result<Vec<EventRow>, FindError> {
    let (sql, params) = to_sql(query, limit)?;
    let args: Vec<_> = params.iter().map(|p| p.as_sql()).collect();
    let rows = client.query(&sql, &args).await?;
    let mut out: Vec<EventRow> = rows
        .iter()
        .map(|r| {
            let fields: String = r.get(17);
            let acked_at: Option<Timestamp> = r.get(13);
            EventRow {
                id: r.get(0),
                agent_id: r.get(1),
                local_id: r.get(2),
                seq: r.get(3),
                time: r.get::<_, Option<Timestamp>>(4).map(|t| t.to_string()),
                stored: r.get::<_, Timestamp>(5).to_string(),
                received: r.get::<_, Timestamp>(6).to_string(),
                source: r.get(7),
                host: r.get(8),
                filters: r.get(9),
                anomaly: r.get(10),
                anomaly_why: r.get(11),
                needs_ack: r.get(12),
                ack: acked_at.map(|at| AckRow {
                    at: at.to_string(),
                    by: r.get::<_, Option<String>>(14).unwrap_or_default(),
                    comment: r.get::<_, Option<String>>(15).unwrap_or_default(),
                    origin: r.get::<_, Option<String>>(16).unwrap_or_default(),
                }),
                fields: serde_json::from_str(&fields).unwrap_or_default(),
                raw: r.get(18),
                origin: r.get(19),
                agent: r.get(20),
                outcomes: Vec::new(),
            }
        })
        .collect();
    if out.is_empty() {
        return Ok(out);
    }
    let agents: Vec<i64> = out.iter().map(|e| e.agent_id).collect();
    let locals: Vec<i64> = out.iter().map(|e| e.local_id).collect();
    let rows = client
        .query(
            "SELECT o.agent_id, o.event_local, o.action, o.at, o.attempt, o.ok, o.detail, o.filter
             FROM outcomes o
             JOIN unnest($1::int8[], $2::int8[]) AS k(a, l) ON o.agent_id = k.a AND o.event_local = k.l
             ORDER BY o.at, o.seq",
            &[&agents, &locals],
        )
        .await?;
    for r in rows {
        let (a, l): (i64, i64) = (r.get(0), r.get(1));
        if let Some(e) = out.iter_mut().find(|e| e.agent_id == a && e.local_id == l) {
            e.outcomes.push(OutcomeRow {
                action: r.get(2),
                at: r.get::<_, Timestamp>(3).to_string(),
                attempt: r.get(4),
                ok: r.get(5),
                detail: r.get(6),
                filter: r.get(7),
            });
        }
    }
    Ok(out)
}

/// Prints one event as text (the layout of `watchpost events`, with the agent).
pub fn print(out: &mut dyn Write, e: &EventRow) -> std::io::Result<()> {
    let mut flags = Vec::new();
    if e.anomaly {
        flags.push("ANOMALY".to_owned());
    }
    match (&e.ack, e.needs_ack) {
        (Some(a), _) => flags.push(format!("acked by {} at {} on the {}", a.by, a.at, a.origin)),
        (None, true) => flags.push("NEEDS ACK".to_owned()),
        (None, false) => {}
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("  [{}]", flags.join(", "))
    };
    writeln!(
        out,
        "#{}  {}  {}  {}  filters: {}{flags}",
        e.id,
        e.time.as_deref().unwrap_or(&e.stored),
        e.host,
        e.source,
        e.filters.join(", ")
    )?;
    writeln!(
        out,
        "   agent: {} (#{}), local id {}, seq {}",
        e.agent, e.agent_id, e.local_id, e.seq
    )?;
    if let Some(why) = &e.anomaly_why {
        writeln!(out, "   why: {why}")?;
    }
    if let Some(a) = &e.ack
        && !a.comment.is_empty()
    {
        writeln!(out, "   ack comment: {}", a.comment)?;
    }
    for (k, v) in &e.fields {
        let v = v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string());
        writeln!(out, "   {k}: {v}")?;
    }
    for o in &e.outcomes {
        let filter = if o.filter.is_empty() {
            String::new()
        } else {
            format!(" for filter {}", o.filter)
        };
        if o.attempt == 0 {
            writeln!(
                out,
                "   action {}{filter}: not sent ({})",
                o.action, o.detail
            )?;
            continue;
        }
        let result = match (o.ok, o.detail.is_empty()) {
            (true, true) => "ok".to_owned(),
            (true, false) => format!("ok ({})", o.detail),
            (false, _) => format!("FAILED: {}", o.detail),
        };
        writeln!(
            out,
            "   action {}{filter} (attempt {}): {result}",
            o.action, o.attempt
        )?;
    }
    if let Some(origin) = &e.origin {
        writeln!(out, "   at: {origin}")?;
    }
    writeln!(out)
}
