//! Helpers shared by the SEP parsers: building events from byte ranges, hex and time
//! decoding, addresses, and the IPS signature rules.

use std::cell::RefCell;
use std::net::Ipv6Addr;
use std::sync::Arc;

use jiff::Timestamp;
use watchpost_event::{Event, Sym, Value};

use crate::parse::{ParseCtx, ParseError};
use crate::text;

/// Longest record any SEP parser accepts (bytes).
pub(crate) const MAX_RECORD: usize = 1 << 20;

/// Longest single field of a line format (bytes).
pub(crate) const MAX_FIELD: usize = 65_535;

/// Rejects records longer than [`MAX_RECORD`].
pub(crate) fn check_len(record: &[u8]) -> Result<(), ParseError> {
    if record.len() > MAX_RECORD {
        return Err(ParseError::new(
            MAX_RECORD,
            format!("record is {} bytes long (limit {MAX_RECORD})", record.len()),
        ));
    }
    Ok(())
}

/// The byte offset in `record` of offset `pos` of its decoded text (they differ only for
/// Windows-1252 records with bytes ≥ 0x80).
pub(crate) fn original_offset(record: &[u8], pos: usize) -> usize {
    if std::str::from_utf8(record).is_ok() {
        return pos.min(record.len());
    }
    let mut dec = 0;
    for (i, &b) in record.iter().enumerate() {
        if dec >= pos {
            return i;
        }
        dec += if b < 0x80 {
            1
        } else {
            text::cp1252(b).len_utf8()
        };
    }
    record.len()
}

/// Maps byte offsets in the original record to offsets in its decoded text.
///
/// Decoding is the identity for UTF-8 records. Windows-1252 records grow where a byte is
/// 0x80 or above, so offsets are advanced incrementally (callers ask in increasing order;
/// a smaller offset restarts from the beginning).
struct OffsetMap<'a> {
    src: &'a [u8],
    utf8: bool,
    orig: usize,
    dec: usize,
}

impl OffsetMap<'_> {
    fn map(&mut self, pos: usize) -> usize {
        if self.utf8 {
            return pos;
        }
        if pos < self.orig {
            self.orig = 0;
            self.dec = 0;
        }
        let end = pos.min(self.src.len());
        for &b in &self.src[self.orig..end] {
            self.dec += if b < 0x80 {
                1
            } else {
                text::cp1252(b).len_utf8()
            };
        }
        self.orig = end;
        self.dec
    }
}

/// An event under construction from a record's bytes: fields are pushed by their byte
/// ranges in the original record and stored as spans of the decoded `raw` text.
pub(crate) struct Draft<'a> {
    /// The event being built.
    pub ev: Event,
    map: OffsetMap<'a>,
}

impl<'a> Draft<'a> {
    /// Starts an event for `record` (decoded lossily into `raw`); host = the local host.
    pub fn new(ctx: &ParseCtx, record: &'a [u8]) -> Draft<'a> {
        let (raw, utf8) = match text::decode(record) {
            std::borrow::Cow::Borrowed(s) => (s.to_owned(), true),
            std::borrow::Cow::Owned(s) => (s, false),
        };
        // SEP records carry up to ~100 non-empty fields; reserving once avoids regrowth.
        let ev = Event::with_capacity(ctx.source.clone(), ctx.local_host.clone(), raw, 64);
        Draft {
            ev,
            map: OffsetMap {
                src: record,
                utf8,
                orig: 0,
                dec: 0,
            },
        }
    }

    /// The decoded text of original bytes `start..end`.
    pub fn text(&mut self, start: usize, end: usize) -> &str {
        let s = self.map.map(start);
        let e = self.map.map(end);
        self.ev.raw.get(s..e).unwrap_or("")
    }

    /// Pushes original bytes `start..end` as a span; empty ranges are skipped.
    pub fn span(&mut self, sym: Sym, start: usize, end: usize) {
        if start >= end {
            return;
        }
        let s = self.map.map(start);
        let e = self.map.map(end);
        if e <= self.ev.raw.len() && self.ev.raw.is_char_boundary(s) {
            self.ev.push(
                sym,
                Value::Span {
                    start: s as u32,
                    len: (e - s) as u32,
                },
            );
        }
    }

    /// Pushes original bytes `start..end` as text, trimming trailing NULs and blanks;
    /// a range that is empty afterwards is skipped.
    pub fn trimmed(&mut self, sym: Sym, start: usize, end: usize, bytes: &[u8]) {
        let mut e = end;
        while e > start && matches!(bytes[e - 1], 0 | b' ' | b'\r' | b'\n') {
            e -= 1;
        }
        self.span(sym, start, e);
    }

    /// Sets `Event::host` to the decoded text of `start..end` unless that is empty.
    pub fn host_from(&mut self, start: usize, end: usize) {
        let s = self.map.map(start);
        let e = self.map.map(end);
        if let Some(name) = self
            .ev
            .raw
            .get(s..e)
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let host = host_arc(name);
            self.ev.host = host;
        }
    }

    /// Pushes a value.
    pub fn push(&mut self, sym: Sym, value: Value) {
        self.ev.push(sym, value);
    }

    /// Pushes a time as RFC 3339 text.
    pub fn time(&mut self, sym: Sym, t: Timestamp) {
        self.ev.push(sym, Value::Time(t));
    }

    /// Indexes the fields and returns the event.
    pub fn finish(mut self) -> Event {
        self.ev.finish();
        self.ev
    }
}

thread_local! {
    static LAST_HOST: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// An `Arc<str>` for a host name, reusing the previous one when the name repeats (it
/// nearly always does: one log, one computer).
pub(crate) fn host_arc(name: &str) -> Arc<str> {
    LAST_HOST.with(|cell| {
        let mut last = cell.borrow_mut();
        match &*last {
            Some(h) if &**h == name => h.clone(),
            _ => {
                let h: Arc<str> = name.into();
                *last = Some(h.clone());
                h
            }
        }
    })
}

/// Reads 1 to 16 hexadecimal digits.
pub(crate) fn hex(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        v = (v << 4) | u64::from(hex_digit(c)?);
    }
    Some(v)
}

/// The value of one hexadecimal digit.
pub(crate) fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Reads a decimal integer (optional leading `-`, at most 19 digits).
pub(crate) fn dec(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// A Windows FILETIME (100 ns ticks since 1601-01-01 UTC); `None` for 0 or out of range.
pub(crate) fn filetime(ticks: u64) -> Option<Timestamp> {
    const EPOCH_DIFF: i64 = 11_644_473_600;
    if ticks == 0 {
        return None;
    }
    let secs = (ticks / 10_000_000) as i64 - EPOCH_DIFF;
    let nanos = ((ticks % 10_000_000) * 100) as i32;
    Timestamp::new(secs, nanos).ok()
}

/// Dotted IPv4 text of a u32 whose lowest byte is the first octet.
pub(crate) fn ipv4_le(v: u32) -> String {
    let [a, b, c, d] = v.to_le_bytes();
    format!("{a}.{b}.{c}.{d}")
}

/// IPv6 text of 32 hex digits (written most significant first); `None` if invalid or all zero.
pub(crate) fn ipv6_hex(b: &[u8]) -> Option<String> {
    if b.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        bytes[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    if bytes == [0; 16] {
        return None;
    }
    Some(Ipv6Addr::from(bytes).to_string())
}

/// `aa:bb:cc:dd:ee:ff` for the first six bytes; `None` if fewer or all zero.
pub(crate) fn mac6(b: &[u8]) -> Option<String> {
    let m = b.get(..6)?;
    if m.iter().all(|&x| x == 0) {
        return None;
    }
    Some(format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    ))
}

/// What an IPS description (`[SID: n] <name> attack blocked. …`) says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IpsDesc {
    /// The signature id after `[SID: `.
    pub sid: Option<i64>,
    /// Byte range of the signature name inside the description.
    pub name: Option<(usize, usize)>,
    /// `Some(true)` for `attack blocked`, `Some(false)` for `detected but not blocked`.
    pub blocked: Option<bool>,
}

/// Reads the signature id, name and verdict from an IPS event description.
pub(crate) fn ips_description(desc: &str) -> IpsDesc {
    let mut out = IpsDesc {
        blocked: if desc.contains("attack blocked") {
            Some(true)
        } else if desc.contains("not blocked") || desc.contains("attack detected") {
            Some(false)
        } else {
            None
        },
        ..IpsDesc::default()
    };
    let Some(rest) = desc.strip_prefix("[SID: ") else {
        return out;
    };
    let Some(close) = rest.find(']') else {
        return out;
    };
    out.sid = dec(rest[..close].trim().as_bytes());
    let name_start = "[SID: ".len() + close + 1;
    let after = &desc[name_start..];
    let lead = after.len() - after.trim_start().len();
    let tail = [" attack blocked", " attack detected", " attack"]
        .iter()
        .find_map(|m| after.find(m))
        .unwrap_or(after.len());
    if tail > lead {
        out.name = Some((name_start + lead, name_start + tail));
    }
    out
}

/// The category of a signature name: the text before its first `": "`
/// (`System Infected: Tidserv Activity` → `System Infected`).
pub(crate) fn signature_category(name: &str) -> Option<&str> {
    let i = name.find(": ")?;
    let cat = name[..i].trim();
    (!cat.is_empty()).then_some(cat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_decimal() {
        assert_eq!(hex(b"000077a4"), Some(30628));
        assert_eq!(hex(b"1F5"), Some(501));
        assert_eq!(hex(b""), None);
        assert_eq!(hex(b"12345678901234567"), None);
        assert_eq!(hex(b"xy"), None);
        assert_eq!(dec(b"-12"), Some(-12));
        assert_eq!(dec(b"99999999999999999999"), None);
        assert_eq!(dec(b"1a"), None);
    }

    #[test]
    fn filetime_and_addresses() {
        let t = filetime(0x01d5_0b29_6ed9_7e44).unwrap();
        assert_eq!(watchpost_event::format_time(t), "2019-05-15T14:21:05.860Z");
        assert_eq!(filetime(0), None);
        assert_eq!(ipv4_le(0x4174_500a), "10.80.116.65");
        assert_eq!(ipv6_hex(&[b'0'; 32]), None);
        let mut v6 = [b'0'; 32];
        v6[31] = b'1';
        assert_eq!(ipv6_hex(&v6).as_deref(), Some("::1"));
        assert_eq!(
            mac6(&[0xf4, 0x39, 0x09, 0xe1, 0x04, 0x7b, 0, 0]).as_deref(),
            Some("f4:39:09:e1:04:7b")
        );
        assert_eq!(mac6(&[0; 16]), None);
    }

    #[test]
    fn ips_descriptions() {
        let d = "[SID: 30628] Web Attack: Malicious Payload Upload 2 attack blocked. Traffic has been blocked for this application: SYSTEM";
        let got = ips_description(d);
        assert_eq!(got.sid, Some(30628));
        let (s, e) = got.name.unwrap();
        assert_eq!(&d[s..e], "Web Attack: Malicious Payload Upload 2");
        assert_eq!(got.blocked, Some(true));
        let d = "[SID: 29464] Audit: Nessus Vulnerability Scanner Activity attack detected but not blocked. Application path: X";
        assert_eq!(ips_description(d).blocked, Some(false));
        assert_eq!(ips_description("Portscan"), IpsDesc::default());
        assert_eq!(ips_description("[SID: x"), IpsDesc::default());
        assert_eq!(
            signature_category("System Infected: Tidserv Activity"),
            Some("System Infected")
        );
        assert_eq!(signature_category("Portscan"), None);
    }

    #[test]
    fn offsets_map_through_cp1252() {
        let rec = b"a\xe9b,c";
        let ctx = ParseCtx::new("s", "h");
        let mut d = Draft::new(&ctx, rec);
        assert_eq!(d.ev.raw, "a\u{e9}b,c");
        assert_eq!(d.text(4, 5), "c");
        assert_eq!(d.text(0, 3), "a\u{e9}b");
        d.span(Sym::new("x_test"), 0, 3);
        let ev = d.finish();
        assert_eq!(ev.get_str(Sym::new("x_test")).unwrap(), "a\u{e9}b");
    }
}
