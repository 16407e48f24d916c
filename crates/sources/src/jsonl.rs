//! JSON lines: one JSON object per line.
//!
//! Top-level strings, numbers and booleans become fields; nested objects are flattened
//! with `.` (`{"a":{"b":1}}` → `a.b`); arrays are kept as JSON text; `null` is left out.
//! Integers that fit in 64 bits are numbers, other numbers are text.
//!
//! Metadata: `time` (else `@timestamp`, else `timestamp`; RFC 3339 text or epoch seconds /
//! milliseconds, as a number or digits) becomes `Event::time`; `host` (else `hostname`,
//! else `host.name`) becomes `Event::host`. `time` and `host` used that way are not fields
//! (they are the metadata); the others stay fields too. A key equal to a metadata name that
//! cannot be used as such (`source`, `raw`, an unreadable `time`, a non-text `host`, …) is
//! stored as `<name>_field`.
//!
//! Limits: nesting deeper than [`MAX_DEPTH`] or more than [`MAX_FIELDS`] fields is an
//! error. Field names are interned; after [`MAX_NEW_KEYS`] distinct names first seen in
//! JSON input, fields with further new names are dropped and counted in `dropped_fields`.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use jiff::Timestamp;
use serde_json::{Map, Value as Json};
use watchpost_event::{Event, Sym, Value};

use crate::parse::{ParseCtx, ParseError, Parser, Schema};
use crate::sep::common::check_len;

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 32;

/// Most fields one line may produce.
pub const MAX_FIELDS: usize = 1_000;

/// Most distinct field names JSON input may add to the symbol table.
pub const MAX_NEW_KEYS: usize = 100_000;
static NEW_KEYS: AtomicUsize = AtomicUsize::new(0);

static DROPPED: LazyLock<Sym> = LazyLock::new(|| Sym::new("dropped_fields"));

/// Parser for JSON lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLinesParser;

impl Parser for JsonLinesParser {
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
        parse_line(ctx, record)
    }

    fn schema(&self) -> Schema {
        Schema::Open
    }
}

/// Checks the nesting depth without parsing; the error points at the first bracket too deep.
fn check_depth(text: &str) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ParseError::new(
                        i,
                        format!("nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses one JSON line.
pub fn parse_line(ctx: &ParseCtx, line: &[u8]) -> Result<Event, ParseError> {
    check_len(line)?;
    let text = std::str::from_utf8(line)
        .map_err(|e| ParseError::new(e.valid_up_to(), "JSON lines must be UTF-8"))?;
    check_depth(text)?;
    let value: Json = serde_json::from_str(text)
        .map_err(|e| ParseError::new(e.column().saturating_sub(1), format!("invalid JSON: {e}")))?;
    let Json::Object(obj) = value else {
        let at = text.len() - text.trim_start().len();
        return Err(ParseError::new(at, "a JSON line must be an object"));
    };
    let mut flat = Vec::new();
    flatten("", obj, &mut flat)?;
    let mut ev = Event::new(ctx.source.clone(), ctx.local_host.clone(), text.to_owned());
    let time_keys = ["time", "@timestamp", "timestamp"];
    let time_at = time_keys.iter().find_map(|k| {
        let i = flat.iter().position(|(n, _)| n == k)?;
        json_time(&flat[i].1).map(|t| (i, t))
    });
    let host_at = ["host", "hostname", "host.name"].iter().find_map(|k| {
        flat.iter()
            .position(|(n, v)| n == k && v.as_str().is_some_and(|s| !s.trim().is_empty()))
    });
    let mut dropped = 0i64;
    for (i, (name, v)) in flat.into_iter().enumerate() {
        let mut used_as_metadata = false;
        if let Some((_, t)) = time_at.filter(|(ti, _)| *ti == i) {
            ev.time = Some(t);
            used_as_metadata = true;
        }
        if host_at == Some(i) {
            if let Some(h) = v.as_str() {
                ev.host = h.trim().into();
            }
            used_as_metadata = true;
        }
        if used_as_metadata && flat_is_meta(&name) {
            continue;
        }
        match key_sym(&name) {
            Some(sym) => {
                if let Some(value) = to_value(v) {
                    ev.push(sym, value);
                }
            }
            None => dropped += 1,
        }
    }
    if dropped > 0 {
        ev.push(*DROPPED, Value::Int(dropped));
    }
    ev.finish();
    Ok(ev)
}

/// Whether a flattened key is a metadata name (and so cannot be a field as it is).
fn flat_is_meta(name: &str) -> bool {
    Sym::get(name).is_some_and(Sym::is_metadata)
}

fn key_sym(name: &str) -> Option<Sym> {
    let renamed;
    let name = if flat_is_meta(name) {
        renamed = format!("{name}_field");
        renamed.as_str()
    } else {
        name
    };
    if let Some(s) = Sym::get(name) {
        return Some(s);
    }
    if NEW_KEYS.fetch_add(1, Ordering::Relaxed) >= MAX_NEW_KEYS {
        NEW_KEYS.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Sym::try_new(name)
}

fn flatten(
    prefix: &str,
    obj: Map<String, Json>,
    out: &mut Vec<(String, Json)>,
) -> Result<(), ParseError> {
    for (k, v) in obj {
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Json::Object(inner) => flatten(&name, inner, out)?,
            Json::Null => {}
            v => {
                if out.len() == MAX_FIELDS {
                    return Err(ParseError::new(0, format!("more than {MAX_FIELDS} fields")));
                }
                out.push((name, v));
            }
        }
    }
    Ok(())
}

fn to_value(v: Json) -> Option<Value> {
    Some(match v {
        Json::String(s) => Value::Str(s.into_boxed_str()),
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Str(n.to_string().into_boxed_str()),
        },
        Json::Array(_) => Value::Str(v.to_string().into_boxed_str()),
        Json::Null | Json::Object(_) => return None,
    })
}

/// A time from RFC 3339 text or epoch seconds/milliseconds (≥ 10¹¹ is read as milliseconds).
fn json_time(v: &Json) -> Option<Timestamp> {
    let epoch = |x: f64| -> Option<Timestamp> {
        if !x.is_finite() {
            return None;
        }
        let ms = if x.abs() >= 1e11 { x } else { x * 1000.0 };
        if ms.abs() > 1e16 {
            return None;
        }
        Timestamp::from_millisecond(ms.round() as i64).ok()
    };
    match v {
        Json::Number(n) => n.as_f64().and_then(epoch),
        Json::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                s.parse::<f64>().ok().and_then(epoch)
            } else {
                s.parse::<Timestamp>().ok()
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchpost_event::FieldRef;

    fn ctx() -> ParseCtx {
        ParseCtx::new("json", "localbox")
    }

    #[test]
    fn flattens_and_maps_metadata() {
        let line = br#"{"time":"2024-01-02T03:04:05Z","host":"pc1","a":{"b":1,"c":[1,2]},"ok":true,"n":null,"f":1.5,"source":"x"}"#;
        let ev = parse_line(&ctx(), line).unwrap();
        assert_eq!(ev.time.unwrap().to_string(), "2024-01-02T03:04:05Z");
        assert_eq!(&*ev.host, "pc1");
        assert_eq!(ev.get(Sym::new("a.b")), Some(FieldRef::Int(1)));
        assert_eq!(ev.get_str(Sym::new("a.c")).unwrap(), "[1,2]");
        assert_eq!(ev.get(Sym::new("ok")), Some(FieldRef::Bool(true)));
        assert_eq!(ev.get(Sym::new("n")), None);
        assert_eq!(ev.get_str(Sym::new("f")).unwrap(), "1.5");
        assert_eq!(ev.get_str(Sym::new("source_field")).unwrap(), "x");
        assert_eq!(&*ev.source, "json");
    }

    #[test]
    fn epoch_times_and_fallbacks() {
        let ev = parse_line(&ctx(), br#"{"@timestamp":1700000000123,"hostname":"h2"}"#).unwrap();
        assert_eq!(ev.time.unwrap().as_millisecond(), 1_700_000_000_123);
        assert_eq!(&*ev.host, "h2");
        assert_eq!(ev.get_str(Sym::new("hostname")).unwrap(), "h2");
        let ev = parse_line(&ctx(), br#"{"timestamp":"1700000000","time":"garbage"}"#).unwrap();
        assert_eq!(ev.time.unwrap().as_second(), 1_700_000_000);
        assert_eq!(ev.get_str(Sym::new("time_field")).unwrap(), "garbage");
        let ev = parse_line(&ctx(), br#"{"host":{"name":"h3"}}"#).unwrap();
        assert_eq!(&*ev.host, "h3");
    }

    #[test]
    fn limits_and_errors() {
        let deep = format!("{}{}", "{\"a\":".repeat(40), "1");
        let e = parse_line(&ctx(), deep.as_bytes()).unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
        let many: Vec<String> = (0..1001).map(|i| format!("\"k{i}\":1")).collect();
        let line = format!("{{{}}}", many.join(","));
        assert!(
            parse_line(&ctx(), line.as_bytes())
                .unwrap_err()
                .message
                .contains("1000")
        );
        assert_eq!(parse_line(&ctx(), b"  [1,2]").unwrap_err().column, 2);
        assert!(parse_line(&ctx(), b"{\"a\":").is_err());
        assert_eq!(
            parse_line(&ctx(), b"{\"a\":\"\xff\"}").unwrap_err().column,
            6
        );
    }
}
