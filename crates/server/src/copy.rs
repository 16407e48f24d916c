//! PostgreSQL's binary `COPY` format, written by hand for the rows the server stores in
//! bulk (events and outcomes).
//!
//! `COPY … FROM STDIN (FORMAT binary)` is the cheapest way into PostgreSQL: no statement
//! is planned per row, rows go into the table in multi-row inserts, and nothing is parsed
//! from text. What a row costs PostgreSQL was measured (BENCHMARKS.md, fleet section): the
//! earlier `INSERT … SELECT FROM unnest($arrays)` spent about a third of its time parsing
//! the `tsvector` and `jsonb` text literals. Here the full-text vector goes over in its
//! binary form, already sorted and merged the way `tsvector`'s text input would make it.
//!
//! Written by hand rather than through `tokio_postgres::binary_copy`: that writer needs a
//! `ToSql` type per column, and `tsvector` has none; the format is small (a header, per
//! row a field count and length-prefixed fields, a trailer) and each field's layout is
//! PostgreSQL's `*_send`/`*_recv` pair, tested against a real server in
//! `tests/copy_format.rs`.

use jiff::Timestamp;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// `text`'s type oid (array elements carry it).
const TEXT_OID: i32 = 25;

/// Most bytes of lexemes indexed per event (PostgreSQL's tsvector holds at most 1 MB;
/// what is past this stays in `raw` and `fields`, found by `field:` terms).
pub const MAX_INDEX_BYTES: usize = 256 << 10;
/// Highest word position a tsvector records.
pub const MAX_POSITION: usize = 16_383;
/// Longest word PostgreSQL indexes (longer ones are left out, as its own parser does).
pub const MAX_WORD: usize = 2046;
/// Most positions kept per lexeme (PostgreSQL keeps the first 256).
const MAX_POSITIONS_PER_WORD: usize = 256;

/// A `COPY … (FORMAT binary)` stream being written.
pub struct CopyWriter {
    buf: Vec<u8>,
    rows: usize,
}

impl Default for CopyWriter {
    fn default() -> Self {
        CopyWriter::new()
    }
}

impl CopyWriter {
    /// A stream with its header.
    pub fn new() -> CopyWriter {
        let mut buf = Vec::with_capacity(64 << 10);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyWriter { buf, rows: 0 }
    }

    /// Rows without the stream's header, to be appended to a stream later
    /// ([`CopyWriter::append_row`]).
    pub fn fragment() -> CopyWriter {
        CopyWriter {
            buf: Vec::with_capacity(16 << 10),
            rows: 0,
        }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A fragment's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Appends one row of a fragment, with the `bigint` value at byte `at` of the row
    /// replaced by `value` (a column only known when the row is stored).
    pub fn append_row(&mut self, row: &[u8], at: usize, value: i64) {
        let start = self.buf.len();
        self.buf.extend_from_slice(row);
        if let Some(v) = self.buf.get_mut(start + at..start + at + 8) {
            v.copy_from_slice(&value.to_be_bytes());
        }
        self.rows += 1;
    }

    /// Rows started.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    /// The stream with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }

    fn len_prefix(&mut self, n: usize) {
        // Every value written here is far below 1 GB (the batch limits see to it).
        self.buf
            .extend_from_slice(&(n.min(i32::MAX as usize) as i32).to_be_bytes());
    }

    /// Starts a value of unknown length; [`CopyWriter::end_value`] writes it.
    fn begin_value(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        at
    }

    fn end_value(&mut self, at: usize) {
        let n = (self.buf.len() - at - 4).min(i32::MAX as usize) as i32;
        self.buf[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }

    /// SQL NULL.
    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// `bigint`.
    pub fn int8(&mut self, v: i64) {
        self.len_prefix(8);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `integer`.
    pub fn int4(&mut self, v: i32) {
        self.len_prefix(4);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `boolean`.
    pub fn bool(&mut self, v: bool) {
        self.len_prefix(1);
        self.buf.push(v as u8);
    }

    /// `text` (the protocol crate has replaced NUL, which PostgreSQL refuses).
    pub fn text(&mut self, s: &str) {
        self.len_prefix(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// `text` or NULL.
    pub fn opt_text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    /// `timestamptz` (microseconds since 2000-01-01 UTC).
    pub fn timestamptz(&mut self, t: Timestamp) {
        self.int8(t.as_microsecond() - PG_EPOCH_US);
    }

    /// `timestamptz` or NULL.
    pub fn opt_timestamptz(&mut self, t: Option<Timestamp>) {
        match t {
            Some(t) => self.timestamptz(t),
            None => self.null(),
        }
    }

    /// `text[]` (one dimension, no NULL elements).
    pub fn text_array<'a>(&mut self, items: impl Iterator<Item = &'a str> + Clone) {
        let at = self.begin_value();
        let n = items.clone().count();
        if n == 0 {
            // An empty array has no dimensions.
            self.buf.extend_from_slice(&0i32.to_be_bytes());
            self.buf.extend_from_slice(&0i32.to_be_bytes());
            self.buf.extend_from_slice(&TEXT_OID.to_be_bytes());
        } else {
            self.buf.extend_from_slice(&1i32.to_be_bytes()); // dimensions
            self.buf.extend_from_slice(&0i32.to_be_bytes()); // has NULLs
            self.buf.extend_from_slice(&TEXT_OID.to_be_bytes());
            self.buf
                .extend_from_slice(&(n.min(i32::MAX as usize) as i32).to_be_bytes());
            self.buf.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            for s in items {
                self.text(s);
            }
        }
        self.end_value(at);
    }

    /// `jsonb` from JSON text (format version 1, then the text).
    pub fn jsonb(&mut self, json: &str) {
        self.len_prefix(json.len() + 1);
        self.buf.push(1);
        self.buf.extend_from_slice(json.as_bytes());
    }

    /// `jsonb` of an object of string values (a name given twice keeps its first value,
    /// as the agent's store does), written straight into the stream.
    pub fn jsonb_object(&mut self, pairs: &[(String, String)]) {
        let at = self.begin_value();
        self.buf.push(1);
        self.buf.push(b'{');
        let mut first = true;
        // Names seen (a set once there are many: an event may carry thousands).
        let mut seen = std::collections::HashSet::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            let again = if pairs.len() <= 32 {
                pairs[..i].iter().any(|(k2, _)| k2 == k)
            } else {
                !seen.insert(k.as_str())
            };
            if again {
                continue;
            }
            if !first {
                self.buf.push(b',');
            }
            first = false;
            json_string(&mut self.buf, k);
            self.buf.push(b':');
            json_string(&mut self.buf, v);
        }
        self.buf.push(b'}');
        self.end_value(at);
    }

    /// `tsvector` of an event's words: the values in order, the host, the raw record
    /// ([`watchpost_query::index_words`], the words the agent's FTS5 index holds), with
    /// positions so phrases match as they do on the agent.
    pub fn tsvector(&mut self, values: &[(String, String)], host: &str, raw: &str) {
        let mut words = Words::default();
        words.collect(values, host, raw);
        let at = self.begin_value();
        let count_at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        let mut count = 0i32;
        for (word, positions) in words.grouped() {
            count += 1;
            self.buf.extend_from_slice(word.as_bytes());
            self.buf.push(0);
            self.buf
                .extend_from_slice(&(positions.len() as u16).to_be_bytes());
            for p in positions {
                // Weight D (0) in the top two bits, the position below.
                self.buf.extend_from_slice(&p.to_be_bytes());
            }
        }
        self.buf[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
        self.end_value(at);
    }
}

/// A JSON string literal (quotes, backslashes and control characters escaped).
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

/// The lexemes of an event and their positions, as `tsvector`'s input would make them
/// from the words in order ([`watchpost_query::index_words`]): sorted (byte order, as
/// PostgreSQL compares lexemes), each once with its positions ascending (at most 256),
/// positions up to 16,383, words longer than 2,046 bytes left out (their position still
/// counted), at most 256 KiB of words.
pub fn lexemes<'a>(
    values: &'a [(String, String)],
    host: &'a str,
    raw: &'a str,
) -> Vec<(String, Vec<u16>)> {
    let mut words = Words::default();
    words.collect(values, host, raw);
    words
        .grouped()
        .map(|(w, p)| (w.to_owned(), p.to_vec()))
        .collect()
}

/// An event's folded words in one buffer (one allocation for all of them, not one each:
/// this runs for every event the server stores).
#[derive(Default)]
struct Words {
    text: String,
    /// (start, end, position) per word in `text`.
    spans: Vec<(u32, u32, u16)>,
    positions: Vec<u16>,
}

impl Words {
    fn collect(&mut self, values: &[(String, String)], host: &str, raw: &str) {
        let mut pos = 0usize;
        let texts = values.iter().map(|(_, v)| v.as_str()).chain([host, raw]);
        'outer: for text in texts {
            for word in watchpost_query::raw_words(text) {
                pos += 1;
                if pos > MAX_POSITION {
                    break 'outer;
                }
                let start = self.text.len();
                watchpost_query::fold_word_into(word, &mut self.text);
                let len = self.text.len() - start;
                if start + len > MAX_INDEX_BYTES {
                    self.text.truncate(start);
                    break 'outer;
                }
                if len > MAX_WORD {
                    self.text.truncate(start);
                    continue;
                }
                self.spans
                    .push((start as u32, (start + len) as u32, pos as u16));
            }
        }
        // By word, positions ascending within each (a stable sort keeps their order).
        let text = &self.text;
        self.spans.sort_by(|a, b| {
            text[a.0 as usize..a.1 as usize].cmp(&text[b.0 as usize..b.1 as usize])
        });
    }

    /// Each lexeme with its positions (at most 256).
    fn grouped(&mut self) -> impl Iterator<Item = (&str, &[u16])> {
        let mut groups: Vec<(usize, usize, usize, usize)> = Vec::new();
        self.positions.clear();
        let mut i = 0;
        while i < self.spans.len() {
            let (s, e, _) = self.spans[i];
            let word = &self.text[s as usize..e as usize];
            let from = self.positions.len();
            let mut j = i;
            while j < self.spans.len() {
                let (s2, e2, p) = self.spans[j];
                if &self.text[s2 as usize..e2 as usize] != word {
                    break;
                }
                if self.positions.len() - from < MAX_POSITIONS_PER_WORD {
                    self.positions.push(p);
                }
                j += 1;
            }
            groups.push((s as usize, e as usize, from, self.positions.len()));
            i = j;
        }
        groups
            .into_iter()
            .map(|(s, e, a, b)| (&self.text[s..e], &self.positions[a..b]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_values_have_the_binary_layout() {
        let mut w = CopyWriter::new();
        w.row(3);
        w.int8(-2);
        w.opt_text(None);
        w.text_array(std::iter::empty());
        let b = w.finish();
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        let body = &b[19..];
        assert_eq!(&body[..2], &3i16.to_be_bytes());
        assert_eq!(&body[2..6], &8i32.to_be_bytes());
        assert_eq!(&body[6..14], &(-2i64).to_be_bytes());
        assert_eq!(&body[14..18], &(-1i32).to_be_bytes());
        assert_eq!(&body[18..22], &12i32.to_be_bytes());
        assert_eq!(&body[body.len() - 2..], &(-1i16).to_be_bytes());
        let mut w = CopyWriter::new();
        w.timestamptz(Timestamp::from_second(946_684_800).unwrap());
        assert_eq!(&w.buf[23..31], &0i64.to_be_bytes());
    }

    #[test]
    fn json_objects_are_escaped_and_keep_first_values() {
        let mut w = CopyWriter::fragment();
        w.jsonb_object(&[
            ("k".into(), "v\"\\\n\u{1}ü".into()),
            ("k".into(), "2".into()),
            ("n".into(), String::new()),
        ]);
        let b = w.into_bytes();
        let text = std::str::from_utf8(&b[5..]).unwrap();
        assert_eq!(text, r#"{"k":"v\"\\\n\u0001ü","n":""}"#);
        let back: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back["k"], "v\"\\\n\u{1}ü");
    }

    #[test]
    fn lexemes_merge_positions_and_keep_the_limits() {
        let l = lexemes(
            &[("a".into(), "Mimikatz.exe run".into())],
            "PC1",
            "run mimikatz",
        );
        let got: Vec<(&str, &[u16])> = l.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        let find = |l: &[(String, Vec<u16>)], w: &str| {
            l.iter().find(|(k, _)| k == w).map(|(_, p)| p.clone())
        };
        assert_eq!(
            got,
            [
                ("exe", &[2u16][..]),
                ("mimikatz", &[1, 6]),
                ("pc1", &[4]),
                ("run", &[3, 5]),
            ]
        );
        let many = "x ".repeat(20_000);
        let l = lexemes(&[], "h", &many);
        assert_eq!(find(&l, "x").map(|p| p.len()), Some(256));
        let long = format!("{} y", "z".repeat(3000));
        let l = lexemes(&[], "h", &long);
        assert_eq!(find(&l, &"z".repeat(3000)), None);
        assert_eq!(find(&l, "y"), Some(vec![3]));
        // The words are index_words' words.
        let text = "Ärger ÉCOLE straße 10.0.0.1 C:\\Temp\\x.EXE ǅemal 🙂 ſ";
        let mut mine: Vec<String> = lexemes(&[], "", text).into_iter().map(|(w, _)| w).collect();
        let mut theirs: Vec<String> = watchpost_query::index_words(text).collect();
        mine.sort();
        theirs.sort();
        theirs.dedup();
        assert_eq!(mine, theirs);
    }
}
