//! `watchpost-server events`: the `watchpost events` query language (parsed by
//! `watchpost-query`, the same parser the agent uses) compiled to PostgreSQL, with the
//! same meaning term by term:
//!
//! | condition | agent (SQLite) | server (PostgreSQL) |
//! |---|---|---|
//! | `isanomaly:` | `anomaly = 1` | `anomaly` (partial index) |
//! | `needsack:` | `needs_ack = 1 AND acked_at IS NULL` | the same (partial index) |
//! | `host:`, `source:` | `LIKE` (case-insensitive) | `ILIKE` (`host` has an index on `lower(host)`) |
//! | `filter:` | any matched filter `LIKE` | exact names through the GIN index of the lower-cased names, patterns with `ILIKE` |
//! | `field:value` | `json_extract(fields, '$."field"')` | `fields ->> 'field'`, missing = empty |
//! | free text | FTS5 phrase (prefix with `*`) | `tsvector @@ tsquery` phrase (`<->`, `:*`) over the same words |
//! | `--since` | `coalesce(time, stored)` | `coalesce(time, stored_at)` (and the day partitions from a day before) |
//! | until (the console's time range) | `coalesce(time, stored) <` | `coalesce(time, stored_at) <` |
//!
//! Every value is a bound parameter. Events are listed newest first (by id: the order the
//! server stored them).

use tokio_postgres::types::ToSql;
use watchpost_query::{Cond, Query, QueryError};

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// `bigint`.
    Int(i64),
    /// `text`.
    Text(String),
    /// `timestamptz`.
    Time(jiff::Timestamp),
}

impl Param {
    /// As a `ToSql`.
    pub fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Int(i) => i,
            Param::Text(t) => t,
            Param::Time(t) => t,
        }
    }
}

/// A `tsquery` literal: the words as a phrase, the last a prefix when asked.
fn tsquery(words: &[String], prefix: bool) -> String {
    let mut q = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\\', "\\\\").replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" <-> ");
    if prefix {
        q.push_str(":*");
    }
    q
}

fn has_wildcard(like: &str) -> bool {
    let mut escaped = false;
    for c in like.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '%' | '_' if !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}

fn unescape(like: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in like.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

fn condition(cond: &Cond, args: &mut Vec<Param>) -> String {
    let mut arg = |v: Param| {
        args.push(v);
        args.len()
    };
    match cond {
        Cond::Anomaly(true) => "anomaly".into(),
        Cond::Anomaly(false) => "NOT anomaly".into(),
        Cond::PendingAck(true) => "(needs_ack AND acked_at IS NULL)".into(),
        Cond::PendingAck(false) => "NOT (needs_ack AND acked_at IS NULL)".into(),
        Cond::Acked(true) => "acked_at IS NOT NULL".into(),
        Cond::Acked(false) => "acked_at IS NULL".into(),
        Cond::Id(id) => format!("id = ${}", arg(Param::Int(*id))),
        Cond::Host(p) if !has_wildcard(p) => {
            format!("lower(host) = lower(${})", arg(Param::Text(unescape(p))))
        }
        Cond::Host(p) => format!("host ILIKE ${}", arg(Param::Text(p.clone()))),
        Cond::Source(p) => format!("source ILIKE ${}", arg(Param::Text(p.clone()))),
        Cond::Filter(p) if !has_wildcard(p) => format!(
            "filter_keys @> ARRAY[lower(${})]",
            arg(Param::Text(unescape(p)))
        ),
        Cond::Filter(p) => format!(
            "EXISTS (SELECT 1 FROM unnest(filters) f WHERE f ILIKE ${})",
            arg(Param::Text(p.clone()))
        ),
        Cond::Field { name, pattern } => {
            let n = arg(Param::Text(name.clone()));
            format!(
                "coalesce(fields ->> ${n}, '') ILIKE ${}",
                arg(Param::Text(pattern.clone()))
            )
        }
        Cond::Text { words, prefix } => format!(
            "search @@ ${}::text::tsquery",
            arg(Param::Text(tsquery(words, *prefix)))
        ),
        Cond::Since(t) => {
            let n = arg(Param::Time(*t));
            format!("(coalesce(time, stored_at) >= ${n} AND ts >= ${n} - interval '1 day')")
        }
        Cond::Until(t) => {
            let n = arg(Param::Time(*t));
            // No partition bound: an event whose own time lies before the kept days is
            // filed under when it was received, which can be later than `until`.
            format!("coalesce(time, stored_at) < ${n}")
        }
        Cond::Not(c) => format!("NOT ({})", condition(c, args)),
    }
}

/// The `WHERE` clause (maybe empty) and its parameters.
pub fn where_clause(query: &Query) -> Result<(String, Vec<Param>), QueryError> {
    let mut args = Vec::new();
    let conds: Vec<String> = query
        .conditions()?
        .iter()
        .map(|c| condition(c, &mut args))
        .collect();
    Ok((
        if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        },
        args,
    ))
}

/// The SQL selecting matching events (newest first) with what is shown of them.
pub fn to_sql(query: &Query, limit: usize) -> Result<(String, Vec<Param>), QueryError> {
    let (filter, mut args) = where_clause(query)?;
    args.push(Param::Int(limit.min(i64::MAX as usize) as i64));
    Ok((
        format!(
            "SELECT e.id, e.agent_id, e.local_id, e.seq, e.time, e.stored_at, e.received_at,
                    e.source, e.host, e.filters, e.anomaly, e.anomaly_why, e.needs_ack,
                    e.acked_at, e.acked_by, e.ack_comment, e.ack_origin, e.fields::text,
                    e.raw, e.origin, a.hostname
             FROM (SELECT * FROM events {filter} ORDER BY id DESC LIMIT ${}) e
             JOIN agents a ON a.id = e.agent_id
             ORDER BY e.id DESC",
            args.len()
        ),
        args,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchpost_query::parse_terms;

    fn sql(text: &str) -> (String, Vec<Param>) {
        let q = Query {
            terms: parse_terms(text).unwrap(),
            ..Query::default()
        };
        where_clause(&q).unwrap()
    }

    #[test]
    fn terms_compile_to_bound_parameters() {
        let (s, a) = sql(
            "isanomaly:true host:PC1 -filter:rdp* user:\"x' OR 1=1\" \"System Infected\" cred*",
        );
        assert_eq!(
            s,
            "WHERE anomaly AND lower(host) = lower($1) AND NOT (EXISTS (SELECT 1 FROM unnest(filters) f WHERE f ILIKE $2)) AND coalesce(fields ->> $3, '') ILIKE $5 AND search @@ $6::text::tsquery AND search @@ $7::text::tsquery"
                .replace("$5", "$4")
                .replace("$6", "$5")
                .replace("$7", "$6")
        );
        assert_eq!(
            a,
            [
                Param::Text("PC1".into()),
                Param::Text("rdp%".into()),
                Param::Text("user".into()),
                Param::Text("x' OR 1=1".into()),
                Param::Text("'system' <-> 'infected'".into()),
                Param::Text("'cred':*".into()),
            ]
        );
        let (s, a) = sql("filter:av_hit host:pc\\_1");
        assert!(s.contains("filter_keys @> ARRAY[lower($1)]"), "{s}");
        assert_eq!(a[0], Param::Text("av_hit".into()));
        assert!(
            s.contains("host ILIKE $2") || s.contains("lower(host) = lower($2)"),
            "{s}"
        );
        assert!(has_wildcard("a%") && !has_wildcard("a\\%") && has_wildcard("a\\\\%"));
    }
}
