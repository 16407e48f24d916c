//! The query language of `watchpost events`, shared by every store that answers it: the
//! agent's SQLite event store (`watchpost events`) and the fleet server's PostgreSQL
//! (`watchpost-server events`). The text is parsed here once ([`parse_terms`],
//! [`parse_since`]) and turned into backend-neutral conditions ([`Query::conditions`]);
//! each store compiles those to its own SQL with bound parameters, so both give a query
//! the same meaning.
//!
//! A query is whitespace-separated terms, all of which must hold:
//! * `name:value`: the field `name` equals `value`, case-insensitively; `*` in the value
//!   matches any run of characters (`user:adm*`); quote values with spaces
//!   (`path:"C:\Program Files\*"`). An event without the field has it empty.
//! * special names: `isanomaly:true|false`, `needsack:true|false` (waits for an
//!   acknowledgement), `acked:true|false`, `host:`, `source:`, `filter:` (any matched
//!   filter), `id:N`.
//! * anything else is free text, looked up in the full-text index of the values, the
//!   host and the raw record (`mimikatz`, `"System Infected"`, `cred*` as a prefix). Text
//!   is indexed as runs of letters and digits ([`index_words`]), lower-cased, with
//!   accents removed; a term matches when its words occur next to each other in order.
//! * a leading `-` negates a term (`-host:lab*`).

use jiff::{Span, Timestamp, ToSpan};

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
    /// Only events before this time (the event's own time, else when stored).
    pub until: Option<Timestamp>,
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

/// `value` with `*` as the only wildcard, as a `LIKE`/`ILIKE` pattern with `\` as the
/// escape character (SQLite and PostgreSQL read it alike).
pub fn like(value: &str) -> String {
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

/// Folds a character for the full-text index: lower case, and the Latin letters with
/// accents to their base letter (`É` → `e`, `ß` stays), as SQLite's FTS5 `unicode61`
/// tokenizer with `remove_diacritics 2` does for them.
fn fold(c: char) -> impl Iterator<Item = char> {
    let base = match c {
        'À'..='Å' | 'à'..='å' | 'Ā'..='ą' => 'a',
        'Ç' | 'ç' | 'Ć'..='č' => 'c',
        'Ď'..='đ' => 'd',
        'È'..='Ë' | 'è'..='ë' | 'Ē'..='ě' => 'e',
        'Ĝ'..='ģ' => 'g',
        'Ĥ'..='ħ' => 'h',
        'Ì'..='Ï' | 'ì'..='ï' | 'Ĩ'..='ı' => 'i',
        'Ĵ' | 'ĵ' => 'j',
        'Ķ' | 'ķ' => 'k',
        'Ĺ'..='ł' => 'l',
        'Ñ' | 'ñ' | 'Ń'..='ň' => 'n',
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō'..='ő' => 'o',
        'Ŕ'..='ř' => 'r',
        'Ś'..='š' => 's',
        'Ţ'..='ŧ' => 't',
        'Ù'..='Ü' | 'ù'..='ü' | 'Ũ'..='ų' => 'u',
        'Ŵ' | 'ŵ' => 'w',
        'Ý' | 'ý' | 'ÿ' | 'Ŷ' | 'ŷ' | 'Ÿ' => 'y',
        'Ź'..='ž' => 'z',
        c => c,
    };
    base.to_lowercase()
}

/// The words of `text` as the full-text index sees them: maximal runs of letters and
/// digits, folded ([`fold`]). The fleet server indexes every event with it; the agent's
/// SQLite index (FTS5 `unicode61`) splits the same way.
pub fn index_words(text: &str) -> impl Iterator<Item = String> + '_ {
    raw_words(text).map(|w| {
        let mut out = String::with_capacity(w.len());
        fold_word_into(w, &mut out);
        out
    })
}

/// The words of `text` before folding: maximal runs of letters and digits.
pub fn raw_words(text: &str) -> impl Iterator<Item = &str> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Appends `word` folded ([`fold`]) to `out`, as [`index_words`] folds it (ASCII, most
/// words, only needs lower case).
pub fn fold_word_into(word: &str, out: &mut String) {
    if word.is_ascii() {
        out.extend(word.bytes().map(|b| b.to_ascii_lowercase() as char));
    } else {
        out.extend(word.chars().flat_map(fold));
    }
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

/// One condition of a query, ready for a store to compile; every one must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// Flagged (or not) by an anomaly filter.
    Anomaly(bool),
    /// Waiting (or not) for an acknowledgement: needs one and has none yet.
    PendingAck(bool),
    /// Acknowledged (or not).
    Acked(bool),
    /// The event with this id.
    Id(i64),
    /// The host matches this [`like`] pattern.
    Host(String),
    /// The source matches this [`like`] pattern.
    Source(String),
    /// Some matched filter's name matches this [`like`] pattern.
    Filter(String),
    /// The field (missing: empty) matches the [`like`] pattern, case-insensitively.
    Field {
        /// Field name as written.
        name: String,
        /// [`like`] pattern.
        pattern: String,
    },
    /// These folded words occur next to each other, in order; with `prefix`, the last one
    /// only needs to start a word.
    Text {
        /// Words from [`index_words`].
        words: Vec<String>,
        /// The term ended in `*`.
        prefix: bool,
    },
    /// The event's own time (else when it was stored) is at or after this.
    Since(Timestamp),
    /// The event's own time (else when it was stored) is before this.
    Until(Timestamp),
    /// The condition does not hold.
    Not(Box<Cond>),
}

impl Query {
    /// The query's conditions, all of which must hold. Errors name what cannot be
    /// understood (`isanomaly:maybe`, `id:x`).
    pub fn conditions(&self) -> Result<Vec<Cond>, QueryError> {
        let mut out = Vec::new();
        if self.anomaly {
            out.push(Cond::Anomaly(true));
        }
        if self.pending_ack {
            out.push(Cond::PendingAck(true));
        }
        if let Some(h) = &self.host {
            out.push(Cond::Host(like(h)));
        }
        if let Some(f) = &self.filter {
            out.push(Cond::Filter(like(f)));
        }
        if let Some(t) = self.since {
            out.push(Cond::Since(t));
        }
        if let Some(t) = self.until {
            out.push(Cond::Until(t));
        }
        for term in &self.terms {
            let (cond, negated) = match term {
                Term::Field {
                    name,
                    value,
                    negated,
                } => {
                    let cond = match name.to_ascii_lowercase().as_str() {
                        "isanomaly" => Cond::Anomaly(boolean(name, value, 0)?),
                        "needsack" => Cond::PendingAck(boolean(name, value, 0)?),
                        "acked" => Cond::Acked(boolean(name, value, 0)?),
                        "id" => Cond::Id(value.parse().map_err(|_| QueryError {
                            at: 0,
                            message: format!("`id:` takes a number, not `{value}`"),
                        })?),
                        "host" => Cond::Host(like(value)),
                        "source" => Cond::Source(like(value)),
                        "filter" => Cond::Filter(like(value)),
                        _ => Cond::Field {
                            name: name.clone(),
                            pattern: like(value),
                        },
                    };
                    (cond, *negated)
                }
                Term::Text { text, negated } => {
                    let prefix = text.ends_with('*');
                    let words: Vec<String> = index_words(text.trim_end_matches('*')).collect();
                    if words.is_empty() {
                        continue;
                    }
                    (Cond::Text { words, prefix }, *negated)
                }
            };
            out.push(if negated {
                Cond::Not(Box::new(cond))
            } else {
                cond
            });
        }
        Ok(out)
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
    fn conditions_keep_the_meaning_of_each_term() {
        let q = Query {
            anomaly: true,
            host: Some("ws*".into()),
            terms: parse_terms(r#"isanomaly:no -needsack:true acked:1 id:7 source:sep_% -filter:rdp user:a_b* "Système Infecté" cred* -- "#)
                .unwrap(),
            ..Query::default()
        };
        let c = q.conditions().unwrap();
        assert_eq!(
            c,
            [
                Cond::Anomaly(true),
                Cond::Host("ws%".into()),
                Cond::Anomaly(false),
                Cond::Not(Box::new(Cond::PendingAck(true))),
                Cond::Acked(true),
                Cond::Id(7),
                Cond::Source("sep\\_\\%".into()),
                Cond::Not(Box::new(Cond::Filter("rdp".into()))),
                Cond::Field {
                    name: "user".into(),
                    pattern: "a\\_b%".into()
                },
                Cond::Text {
                    words: vec!["systeme".into(), "infecte".into()],
                    prefix: false
                },
                Cond::Text {
                    words: vec!["cred".into()],
                    prefix: true
                },
            ]
        );
        for bad in ["isanomaly:maybe", "id:x", "needsack:2"] {
            let q = Query {
                terms: parse_terms(bad).unwrap(),
                ..Query::default()
            };
            assert!(q.conditions().is_err(), "{bad}");
        }
    }

    #[test]
    fn index_words_split_on_anything_but_letters_and_digits() {
        let w: Vec<String> = index_words(r"C:\Users\ÄRGER\mimikatz.exe 10.0.0.9 Straße").collect();
        assert_eq!(
            w,
            [
                "c", "users", "arger", "mimikatz", "exe", "10", "0", "0", "9", "straße"
            ]
        );
        assert_eq!(like("50%_a*"), "50\\%\\_a%");
    }
}
