//! The query language of `watchpost events` (parsed by `watchpost-query`, shared with the
//! fleet server) compiled to SQLite: values are always bound parameters, never spliced
//! into the SQL text; free text goes to the FTS5 index.

use rusqlite::types::Value;
use watchpost_query::{Cond, Query, QueryError};

/// A full-text query for folded words: each word quoted (FTS5 syntax cannot be injected),
/// the words as one phrase; `prefix` makes the last word a prefix.
fn fts(words: &[String], prefix: bool) -> String {
    let mut q = words
        .iter()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" + ");
    if prefix {
        q.push('*');
    }
    q
}

fn condition(cond: &Cond, args: &mut Vec<Value>) -> String {
    let mut arg = |v: Value| {
        args.push(v);
        args.len()
    };
    match cond {
        Cond::Anomaly(b) => format!("anomaly = {}", *b as i32),
        Cond::PendingAck(true) => "(needs_ack = 1 AND acked_at IS NULL)".into(),
        Cond::PendingAck(false) => "NOT (needs_ack = 1 AND acked_at IS NULL)".into(),
        Cond::Acked(true) => "acked_at IS NOT NULL".into(),
        Cond::Acked(false) => "acked_at IS NULL".into(),
        Cond::Id(id) => format!("id = ?{}", arg(Value::Integer(*id))),
        Cond::Host(p) => format!("host LIKE ?{} ESCAPE '\\'", arg(Value::Text(p.clone()))),
        Cond::Source(p) => format!("source LIKE ?{} ESCAPE '\\'", arg(Value::Text(p.clone()))),
        Cond::Filter(p) => format!(
            "EXISTS (SELECT 1 FROM event_filters f WHERE f.event = events.id AND f.filter LIKE ?{} ESCAPE '\\')",
            arg(Value::Text(p.clone()))
        ),
        Cond::Field { name, pattern } => {
            let path = arg(Value::Text(format!("$.\"{name}\"")));
            format!(
                "coalesce(json_extract(fields, ?{path}), '') LIKE ?{} ESCAPE '\\'",
                arg(Value::Text(pattern.clone()))
            )
        }
        Cond::Text { words, prefix } => format!(
            "id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?{})",
            arg(Value::Text(fts(words, *prefix)))
        ),
        Cond::Since(t) => format!(
            "coalesce(time, stored) >= ?{}",
            arg(Value::Integer(t.as_millisecond()))
        ),
        Cond::Until(t) => format!(
            "coalesce(time, stored) < ?{}",
            arg(Value::Integer(t.as_millisecond()))
        ),
        Cond::Not(c) => format!("NOT ({})", condition(c, args)),
    }
}

/// The conditions of `query` as SQL (joined with `AND`, none: empty) and their parameters.
pub(crate) fn conditions(query: &Query) -> Result<(Vec<String>, Vec<Value>), QueryError> {
    let mut args: Vec<Value> = Vec::new();
    let conds: Vec<String> = query
        .conditions()?
        .iter()
        .map(|c| condition(c, &mut args))
        .collect();
    Ok((conds, args))
}

/// The SQL selecting matching ids (newest first) and its parameters.
pub(crate) fn to_sql(query: &Query, limit: usize) -> Result<(String, Vec<Value>), QueryError> {
    let (conds, mut args) = conditions(query)?;
    args.push(Value::Integer(limit.min(i64::MAX as usize) as i64));
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    Ok((
        format!(
            "SELECT id FROM events {filter} ORDER BY id DESC LIMIT ?{}",
            args.len()
        ),
        args,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchpost_query::parse_terms;

    #[test]
    fn values_are_parameters_never_sql() {
        let q = Query {
            terms: parse_terms("user:\"x' OR 1=1 --\" 50%_off").unwrap(),
            ..Query::default()
        };
        let (sql, args) = to_sql(&q, 10).unwrap();
        assert!(!sql.contains("OR 1=1"), "{sql}");
        assert!(args.contains(&Value::Text("x' OR 1=1 --".into())));
        assert!(
            args.contains(&Value::Text("\"50\" + \"off\"".into())),
            "{args:?}"
        );
        assert_eq!(fts(&["cred".into()], true), "\"cred\"*");
        let q = Query {
            terms: parse_terms("--").unwrap(),
            ..Query::default()
        };
        assert_eq!(
            to_sql(&q, 1).unwrap().0,
            "SELECT id FROM events  ORDER BY id DESC LIMIT ?1"
        );
    }
}
