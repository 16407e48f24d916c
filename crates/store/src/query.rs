//! The query language of `watchpost events` and its translation to SQL (values are always
//! bound parameters, never spliced into the SQL text).
//!
//! A query is whitespace-separated terms, all of which must hold:
//! * `name:value`: the field `name` equals `value`, case-insensitively; `*` in the value
//!   matches any run of characters (`user:adm*`); quote values with spaces
//!   (`path:"C:\Program Files\*"`).
//! * special names: `isanomaly:true|false`, `needsack:true|false` (waits for an
//!   acknowledgement), `acked:true|false`, `host:`, `source:`, `filter:` (any matched
//!   filter), `id:N`.
//! * anything else is free text, looked up in the full-text index of the values and the
//!   raw record (`mimikatz`, `"System Infected"`, `cred*` as a prefix).
//! * a leading `-` negates a term (`-host:lab*`).

use jiff::{Span, Timestamp, ToSpan};
use rusqlite::types::Value;

/// A query that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query: {message} (at character {at})")]
pub struct QueryError {
    /// Character offset in the query text.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `name:value`.
    Field {
        /// Field (or special) name.
        name: String,
        /// Value, `*` as wildcard.
        value: String,
        /// `-name:value`.
        negated: bool,
    },
    /// Free text (a word or a quoted phrase).
    Text {
        /// The words.
        text: String,
        /// `-word`.
        negated: bool,
    },
}

/// What `watchpost events` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only events flagged by an anomaly filter.
    pub anomaly: bool,
    /// Only events waiting for an acknowledgement.
    pub pending_ack: bool,
    /// Only this host (`*` wildcards).
    pub host: Option<String>,
    /// Only events this filter matched (`*` wildcards).
    pub filter: Option<String>,
    /// Only events at or after this time (the event's own time, else when stored).
    pub since: Option<Timestamp>,
    /// Further conditions ([`parse_terms`]).
    pub terms: Vec<Term>,
}

/// Splits a query text into terms.
pub fn parse_terms(text: &str) -> Result<Vec<Term>, QueryError> {
    let mut terms = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].1.is_whitespace() {
            i += 1;
            continue;
        }
        let start = chars[i].0;
        let mut negated = false;
        if chars[i].1 == '-' && chars.get(i + 1).is_some_and(|c| !c.1.is_whitespace()) {
            negated = true;
            i += 1;
        }
        // A name: letters, digits, `_`, `.`, `-` up to a `:`.
        let name_start = i;
        while i < chars.len() && (chars[i].1.is_alphanumeric() || "_.-".contains(chars[i].1)) {
            i += 1;
        }
        let name: String = chars[name_start..i].iter().map(|c| c.1).collect();
        if i < chars.len() && chars[i].1 == ':' && !name.is_empty() {
            i += 1;
            let (value, next) = word(&chars, i, start)?;
            i = next;
            if value.is_empty() {
                return Err(QueryError {
                    at: start,
                    message: format!("`{name}:` needs a value"),
                });
            }
            terms.push(Term::Field {
                name,
                value,
                negated,
            });
        } else {
            let (text, next) = word(&chars, name_start, start)?;
            i = next;
            if !text.trim().is_empty() {
                terms.push(Term::Text { text, negated });
            }
        }
    }
    Ok(terms)
}

/// A bare word or a `"quoted phrase"` starting at `i`; returns it and where it ends.
fn word(
    chars: &[(usize, char)],
    mut i: usize,
    term_at: usize,
) -> Result<(String, usize), QueryError> {
    let mut out = String::new();
    if chars.get(i).is_some_and(|c| c.1 == '"') {
        i += 1;
        loop {
            match chars.get(i) {
                None => {
                    return Err(QueryError {
                        at: term_at,
                        message: "unclosed quote".into(),
                    });
                }
                Some((_, '"')) => return Ok((out, i + 1)),
                Some((_, '\\')) if chars.get(i + 1).is_some_and(|c| c.1 == '"') => {
                    out.push('"');
                    i += 2;
                }
                Some((_, c)) => {
                    out.push(*c);
                    i += 1;
                }
            }
        }
    }
    while let Some((_, c)) = chars.get(i) {
        if c.is_whitespace() {
            break;
        }
        out.push(*c);
        i += 1;
    }
    Ok((out, i))
}

/// `--since`: an RFC 3339 time, a date (`2026-11-01`, midnight UTC), or an age before now
/// (`30m`, `12h`, `7d`, `2w`).
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, QueryError> {
    let t = text.trim();
    let bad = || QueryError {
        at: 0,
        message: format!(
            "`{t}` is not a time: use RFC 3339 (2026-11-01T08:00:00Z), a date (2026-11-01) or an age (30m, 12h, 7d, 2w)"
        ),
    };
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|_| bad());
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: i64 = t[..split].parse().map_err(|_| bad())?;
    let span: Span = match &t[split..] {
        "s" => n.seconds(),
        "m" | "min" => n.minutes(),
        "h" => n.hours(),
        "d" => (n * 24).hours(),
        "w" => (n * 24 * 7).hours(),
        _ => return Err(bad()),
    };
    now.checked_sub(span).map_err(|_| bad())
}

/// `value` with `*` as the only wildcard, as a LIKE pattern (escape `\`).
fn like(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '*' => out.push('%'),
            c => out.push(c),
        }
    }
    out
}

/// A full-text query for one term: each word quoted (FTS5 syntax cannot be injected);
/// a trailing `*` makes the last word a prefix.
fn fts(text: &str) -> Option<String> {
    let prefix = text.ends_with('*');
    let words: Vec<String> = text
        .trim_end_matches('*')
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    if words.is_empty() {
        return None;
    }
    // The words as one phrase: in this order, next to each other.
    let mut q = words.join(" + ");
    if prefix {
        q.push('*');
    }
    Some(q)
}

fn boolean(name: &str, value: &str, at: usize) -> Result<bool, QueryError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(QueryError {
            at,
            message: format!("`{name}:` takes true or false, not `{value}`"),
        }),
    }
}

impl Query {
    /// The SQL selecting matching ids (newest first) and its parameters.
    pub(crate) fn to_sql(&self, limit: usize) -> Result<(String, Vec<Value>), QueryError> {
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if self.anomaly {
            conds.push("anomaly = 1".into());
        }
        if self.pending_ack {
            conds.push("needs_ack = 1 AND acked_at IS NULL".into());
        }
        if let Some(h) = &self.host {
            args.push(Value::Text(like(h)));
            conds.push(format!("host LIKE ?{} ESCAPE '\\'", args.len()));
        }
        if let Some(f) = &self.filter {
            args.push(Value::Text(like(f)));
            conds.push(format!(
                "EXISTS (SELECT 1 FROM event_filters f WHERE f.event = events.id AND f.filter LIKE ?{} ESCAPE '\\')",
                args.len()
            ));
        }
        if let Some(t) = self.since {
            args.push(Value::Integer(t.as_millisecond()));
            conds.push(format!("coalesce(time, stored) >= ?{}", args.len()));
        }
        for term in &self.terms {
            let (cond, negated) = match term {
                Term::Field {
                    name,
                    value,
                    negated,
                } => {
                    let cond = match name.to_ascii_lowercase().as_str() {
                        "isanomaly" => format!("anomaly = {}", boolean(name, value, 0)? as i32),
                        "needsack" => {
                            if boolean(name, value, 0)? {
                                "(needs_ack = 1 AND acked_at IS NULL)".into()
                            } else {
                                "NOT (needs_ack = 1 AND acked_at IS NULL)".into()
                            }
                        }
                        "acked" => {
                            if boolean(name, value, 0)? {
                                "acked_at IS NOT NULL".into()
                            } else {
                                "acked_at IS NULL".into()
                            }
                        }
                        "id" => {
                            let id: i64 = value.parse().map_err(|_| QueryError {
                                at: 0,
                                message: format!("`id:` takes a number, not `{value}`"),
                            })?;
                            args.push(Value::Integer(id));
                            format!("id = ?{}", args.len())
                        }
                        "host" | "source" => {
                            args.push(Value::Text(like(value)));
                            format!(
                                "{} LIKE ?{} ESCAPE '\\'",
                                name.to_ascii_lowercase(),
                                args.len()
                            )
                        }
                        "filter" => {
                            args.push(Value::Text(like(value)));
                            format!(
                                "EXISTS (SELECT 1 FROM event_filters f WHERE f.event = events.id AND f.filter LIKE ?{} ESCAPE '\\')",
                                args.len()
                            )
                        }
                        _ => {
                            args.push(Value::Text(format!("$.\"{name}\"")));
                            let path = args.len();
                            args.push(Value::Text(like(value)));
                            format!(
                                "coalesce(json_extract(fields, ?{path}), '') LIKE ?{} ESCAPE '\\'",
                                args.len()
                            )
                        }
                    };
                    (cond, *negated)
                }
                Term::Text { text, negated } => {
                    let Some(q) = fts(text) else { continue };
                    args.push(Value::Text(q));
                    (
                        format!(
                            "id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?{})",
                            args.len()
                        ),
                        *negated,
                    )
                }
            };
            conds.push(if negated {
                format!("NOT ({cond})")
            } else {
                cond
            });
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_fields_text_quotes_and_negation() {
        let t = parse_terms(r#"user:alice  isanomaly:true -host:lab* "System Infected" path:"C:\Program Files\x y" mimi*"#)
            .unwrap();
        assert_eq!(
            t,
            [
                Term::Field {
                    name: "user".into(),
                    value: "alice".into(),
                    negated: false
                },
                Term::Field {
                    name: "isanomaly".into(),
                    value: "true".into(),
                    negated: false
                },
                Term::Field {
                    name: "host".into(),
                    value: "lab*".into(),
                    negated: true
                },
                Term::Text {
                    text: "System Infected".into(),
                    negated: false
                },
                Term::Field {
                    name: "path".into(),
                    value: r"C:\Program Files\x y".into(),
                    negated: false
                },
                Term::Text {
                    text: "mimi*".into(),
                    negated: false
                },
            ]
        );
        assert!(
            parse_terms("user:")
                .unwrap_err()
                .message
                .contains("needs a value")
        );
        assert!(
            parse_terms("a \"open")
                .unwrap_err()
                .message
                .contains("unclosed")
        );
        assert_eq!(parse_terms("  ").unwrap(), []);
    }

    #[test]
    fn since_accepts_times_dates_and_ages() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since("2h", now).unwrap().to_string(),
            "2026-11-22T10:00:00Z"
        );
        assert_eq!(
            parse_since("7d", now).unwrap().to_string(),
            "2026-11-15T12:00:00Z"
        );
        assert_eq!(
            parse_since("2026-11-01", now).unwrap().to_string(),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(
            parse_since("2026-11-01T08:00:00+01:00", now)
                .unwrap()
                .to_string(),
            "2026-11-01T07:00:00Z"
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("5y", now).is_err());
    }

    #[test]
    fn values_are_parameters_never_sql() {
        let q = Query {
            terms: parse_terms("user:\"x' OR 1=1 --\" 50%_off").unwrap(),
            ..Query::default()
        };
        let (sql, args) = q.to_sql(10).unwrap();
        assert!(!sql.contains("OR 1=1"), "{sql}");
        assert!(args.contains(&Value::Text("x' OR 1=1 --".into())));
        assert!(
            args.contains(&Value::Text("\"50\" + \"off\"".into())),
            "{args:?}"
        );
        assert_eq!(like("50%_a*"), "50\\%\\_a%");
        assert_eq!(fts("cred*").unwrap(), "\"cred\"*");
        assert!(fts("--").is_none());
    }
}
