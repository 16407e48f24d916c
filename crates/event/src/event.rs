//! The [`Event`]: one parsed log line or record.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use jiff::Timestamp;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::Sym;

/// A field's stored value.
///
/// Parsers avoid allocating: text that appears verbatim in the raw line is stored as a
/// [`Value::Span`] into [`Event::raw`]; decoded names from code tables are
/// [`Value::Static`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Bytes `start..start + len` of [`Event::raw`].
    Span {
        /// Byte offset into `raw`.
        start: u32,
        /// Length in bytes.
        len: u32,
    },
    /// A constant string (decoded code names).
    Static(&'static str),
    /// An owned string (decoded or unescaped text).
    Str(Box<str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A point in time (rendered in RFC 3339 when read as text).
    Time(Timestamp),
}

/// A field value as read from an event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldRef<'a> {
    /// Text.
    Str(&'a str),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A point in time (the event's `time`).
    Time(Timestamp),
}

impl<'a> FieldRef<'a> {
    /// The value as text (integers in decimal, times in RFC 3339).
    pub fn text(&self) -> Cow<'a, str> {
        match *self {
            FieldRef::Str(s) => Cow::Borrowed(s),
            FieldRef::Int(i) => Cow::Owned(i.to_string()),
            FieldRef::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            FieldRef::Time(t) => Cow::Owned(format_time(t)),
        }
    }

    /// Appends the text form to `out` without an intermediate allocation.
    pub fn write_to(&self, out: &mut String) {
        match *self {
            FieldRef::Str(s) => out.push_str(s),
            FieldRef::Int(i) => {
                let _ = write!(out, "{i}");
            }
            FieldRef::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            FieldRef::Time(t) => out.push_str(&format_time(t)),
        }
    }

    /// The value as a number, if it is one (text is parsed; `0x…` is read as hex).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldRef::Int(i) => Some(i as f64),
            FieldRef::Str(s) => parse_number(s),
            FieldRef::Bool(_) => None,
            FieldRef::Time(t) => Some(t.as_millisecond() as f64 / 1000.0),
        }
    }
}

/// Parses a decimal or `0x` hexadecimal number, trimming blanks.
pub fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// RFC 3339 with millisecond precision in UTC, the form every output uses.
pub fn format_time(t: Timestamp) -> String {
    format!("{t:.3}")
}

/// Symbols below this id are found through the event's dense index; rarer (later
/// interned) names are found by a scan.
const INDEXED: usize = 4096;

/// One event: metadata plus named fields.
///
/// Fields keep the order parsers pushed them in. [`Event::finish`] builds a dense index
/// from symbol id to position, so a lookup is one array access (no sorting, no search).
/// Parsers append with [`Event::push`] and call [`Event::finish`] once; later stages use
/// [`Event::set`].
#[derive(Clone, Debug)]
pub struct Event {
    /// The configured name of the source that read the event.
    pub source: Arc<str>,
    /// The computer the event is about.
    pub host: Arc<str>,
    /// When the event happened, if the record says.
    pub time: Option<Timestamp>,
    /// The original line or record, decoded to text (lossily where it was not UTF-8).
    pub raw: String,
    /// Where the event was read: a file path and byte offset, a channel and record id.
    pub origin: Option<Origin>,
    /// Set by anomaly filters.
    pub anomaly: bool,
    fields: Vec<(Sym, Value)>,
    /// `index[sym.id()]` = position + 1 in `fields` (0 = absent), for ids below [`INDEXED`].
    index: Vec<u16>,
}

/// Where an event came from, for messages and `watchpost test` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File path, channel or listener.
    pub place: Arc<str>,
    /// Byte offset or record number.
    pub offset: u64,
}

impl Event {
    /// A new event with no fields.
    pub fn new(source: Arc<str>, host: Arc<str>, raw: String) -> Event {
        Event {
            source,
            host,
            time: None,
            raw,
            origin: None,
            anomaly: false,
            fields: Vec::new(),
            index: Vec::new(),
        }
    }

    /// A new event with room for `fields` fields (parsers that know their field count
    /// avoid reallocating while they push).
    pub fn with_capacity(source: Arc<str>, host: Arc<str>, raw: String, fields: usize) -> Event {
        let mut e = Event::new(source, host, raw);
        e.fields.reserve_exact(fields);
        e
    }

    /// Appends a field. Call [`Event::finish`] after the last push.
    pub fn push(&mut self, sym: Sym, value: Value) {
        self.fields.push((sym, value));
    }

    /// Appends a span of `raw` as a field (`range` in bytes).
    pub fn push_span(&mut self, sym: Sym, start: usize, end: usize) {
        debug_assert!(end <= self.raw.len() && self.raw.is_char_boundary(start));
        self.fields.push((
            sym,
            Value::Span {
                start: start as u32,
                len: (end - start) as u32,
            },
        ));
    }

    /// Indexes the fields for lookup; of duplicate names the first pushed wins.
    pub fn finish(&mut self) {
        self.reindex();
    }

    fn reindex(&mut self) {
        let max = self
            .fields
            .iter()
            .map(|(s, _)| s.id())
            .filter(|&id| id < INDEXED)
            .max();
        self.index.clear();
        self.index.resize(max.map_or(0, |m| m + 1), 0);
        let mut duplicates = false;
        for (pos, (sym, _)) in self.fields.iter().enumerate() {
            let id = sym.id();
            if id >= INDEXED || pos >= u16::MAX as usize {
                duplicates |= self.fields[..pos].iter().any(|(s, _)| s == sym);
                continue;
            }
            if self.index[id] == 0 {
                self.index[id] = pos as u16 + 1;
            } else {
                duplicates = true;
            }
        }
        if duplicates {
            let mut seen = std::collections::HashSet::new();
            self.fields.retain(|(s, _)| seen.insert(*s));
            self.reindex();
        }
    }

    fn position(&self, sym: Sym) -> Option<usize> {
        let id = sym.id();
        if id < INDEXED && self.fields.len() < u16::MAX as usize {
            match self.index.get(id) {
                Some(&p) if p > 0 => Some(p as usize - 1),
                _ => None,
            }
        } else {
            self.fields.iter().position(|(s, _)| *s == sym)
        }
    }

    /// Sets a field, replacing an existing one.
    pub fn set(&mut self, sym: Sym, value: Value) {
        match self.position(sym) {
            Some(i) => self.fields[i].1 = value,
            None => {
                self.fields.push((sym, value));
                let id = sym.id();
                if id < INDEXED && self.fields.len() < u16::MAX as usize {
                    if self.index.len() <= id {
                        self.index.resize(id + 1, 0);
                    }
                    self.index[id] = self.fields.len() as u16;
                }
            }
        }
    }

    /// Removes a field.
    pub fn remove(&mut self, sym: Sym) -> Option<Value> {
        let i = self.position(sym)?;
        let (_, v) = self.fields.remove(i);
        self.reindex();
        Some(v)
    }

    /// A field or metadata value by name.
    pub fn get(&self, sym: Sym) -> Option<FieldRef<'_>> {
        if sym.is_metadata() {
            return self.metadata(sym);
        }
        let i = self.position(sym)?;
        Some(self.resolve(&self.fields[i].1))
    }

    /// A field or metadata value as text.
    pub fn get_str(&self, sym: Sym) -> Option<Cow<'_, str>> {
        self.get(sym).map(|v| v.text())
    }

    fn metadata(&self, sym: Sym) -> Option<FieldRef<'_>> {
        match sym {
            Sym::SOURCE => Some(FieldRef::Str(&self.source)),
            Sym::HOST => Some(FieldRef::Str(&self.host)),
            Sym::TIME => self.time.map(FieldRef::Time),
            Sym::RAW => Some(FieldRef::Str(&self.raw)),
            Sym::ANOMALY => Some(FieldRef::Bool(self.anomaly)),
            _ => None,
        }
    }

    /// Turns a stored value into a readable one.
    pub fn resolve<'a>(&'a self, value: &'a Value) -> FieldRef<'a> {
        match value {
            Value::Span { start, len } => {
                let (s, e) = (*start as usize, *start as usize + *len as usize);
                FieldRef::Str(self.raw.get(s..e).unwrap_or(""))
            }
            Value::Static(s) => FieldRef::Str(s),
            Value::Str(s) => FieldRef::Str(s),
            Value::Int(i) => FieldRef::Int(*i),
            Value::Bool(b) => FieldRef::Bool(*b),
            Value::Time(t) => FieldRef::Time(*t),
        }
    }

    /// The fields (not metadata) in the order the parser produced them.
    pub fn fields(&self) -> impl Iterator<Item = (Sym, FieldRef<'_>)> {
        self.fields.iter().map(|(s, v)| (*s, self.resolve(v)))
    }

    /// Number of fields (not counting metadata).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the event has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The event as one JSON object: metadata first, then fields, `raw` last.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn serialize_ref<M: SerializeMap>(map: &mut M, key: &str, v: FieldRef<'_>) -> Result<(), M::Error> {
    match v {
        FieldRef::Str(s) => map.serialize_entry(key, s),
        FieldRef::Int(i) => map.serialize_entry(key, &i),
        FieldRef::Bool(b) => map.serialize_entry(key, &b),
        FieldRef::Time(t) => map.serialize_entry(key, &format_time(t)),
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len() + 5))?;
        if let Some(t) = self.time {
            map.serialize_entry("time", &format_time(t))?;
        }
        map.serialize_entry("source", &*self.source)?;
        map.serialize_entry("host", &*self.host)?;
        if self.anomaly {
            map.serialize_entry("anomaly", &true)?;
        }
        for (sym, v) in self.fields() {
            serialize_ref(&mut map, sym.as_str(), v)?;
        }
        map.serialize_entry("raw", &self.raw)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut e = Event::new("sep-av".into(), "pc1".into(), "a,b,HELLO".into());
        e.push(Sym::new("zz_last"), Value::Int(7));
        e.push_span(Sym::new("aa_first"), 4, 9);
        e.push(Sym::new("mid"), Value::Static("INFECTION"));
        e.push(Sym::new("aa_first"), Value::Static("duplicate loses"));
        e.finish();
        e
    }

    #[test]
    fn lookup_finds_fields_and_metadata() {
        let e = sample();
        assert_eq!(e.get(Sym::new("aa_first")), Some(FieldRef::Str("HELLO")));
        assert_eq!(e.get(Sym::new("zz_last")), Some(FieldRef::Int(7)));
        assert_eq!(e.get(Sym::new("mid")).unwrap().text(), "INFECTION");
        assert_eq!(e.get(Sym::SOURCE), Some(FieldRef::Str("sep-av")));
        assert_eq!(e.get(Sym::TIME), None);
        assert_eq!(e.get(Sym::new("absent")), None);
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn set_and_remove_keep_order() {
        let mut e = sample();
        e.set(Sym::new("new_one"), Value::Bool(true));
        e.set(Sym::new("zz_last"), Value::Int(8));
        assert_eq!(e.get(Sym::new("zz_last")), Some(FieldRef::Int(8)));
        assert_eq!(e.get(Sym::new("new_one")), Some(FieldRef::Bool(true)));
        assert!(e.remove(Sym::new("new_one")).is_some());
        assert_eq!(e.get(Sym::new("new_one")), None);
    }

    #[test]
    fn json_has_metadata_fields_and_raw() {
        let mut e = sample();
        e.time = Some("2019-05-29T08:23:57Z".parse().unwrap());
        let j = e.to_json();
        assert_eq!(j["time"], "2019-05-29T08:23:57.000Z");
        assert_eq!(j["source"], "sep-av");
        assert_eq!(j["zz_last"], 7);
        assert_eq!(j["raw"], "a,b,HELLO");
    }

    #[test]
    fn numbers_parse_in_decimal_and_hex() {
        assert_eq!(parse_number(" 42 "), Some(42.0));
        assert_eq!(parse_number("0x1f"), Some(31.0));
        assert_eq!(parse_number("nope"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(FieldRef::Str("2.5").as_f64(), Some(2.5));
    }
}
