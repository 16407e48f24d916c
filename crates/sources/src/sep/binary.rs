//! Records of the SEP client binary logs: Security (`seclog.log`), Traffic (`tralog.log`),
//! System (`syslog.log`) and Application/Device Control (`processlog.log`).
//!
//! A record is TAB-separated: hex numbers, FILETIME times (GMT), IPv4 addresses as
//! little-endian hex, MAC addresses as 16 raw bytes, free text. Records are framed by
//! [`super::framing::frame`]; [`parse_log`] walks a whole file. Field tables are in
//! `docs/formats.md`; fields the reference calls unknown are not emitted (they stay in `raw`).

use std::sync::LazyLock;

use watchpost_event::{Event, Sym, Value};

use super::codes::Table;
use super::common::{
    Draft, check_len, filetime, hex, ips_description, ipv4_le, ipv6_hex, mac6, signature_category,
};
pub use super::framing::LogKind;
use super::framing::{Frame, LogHeader, frame, is_padding};
use crate::parse::{ParseCtx, ParseError, Parser, Schema};

impl LogKind {
    fn spec(self) -> &'static [F] {
        match self {
            LogKind::Security => &SECLOG,
            LogKind::Traffic => &TRALOG,
            LogKind::System => &SYSLOG,
            LogKind::Process => &PROCESSLOG,
        }
    }

    fn derived(self) -> &'static [&'static str] {
        match self {
            LogKind::Security => &["signature_category", "blocked"],
            LogKind::Traffic => &["action", "blocked"],
            LogKind::System => &[],
            LogKind::Process => &["action"],
        }
    }
}

/// How one field is read.
#[derive(Clone, Copy, Debug)]
enum F {
    /// Not emitted (meaning unknown, or consumed elsewhere).
    Skip,
    /// Hex integer.
    Hex(&'static str),
    /// Hex code with a decoded name.
    Code(&'static str, Table, &'static str),
    /// Hex integer whose decoded name is the main field; the number goes to the second.
    NamedCode(&'static str, Table, &'static str),
    /// IPv4, little-endian hex.
    Ipv4(&'static str),
    /// IPv6, 32 hex digits (all zero: absent).
    Ipv6(&'static str),
    /// MAC, 16 raw bytes (all zero: absent).
    Mac(&'static str),
    /// Text.
    Text(&'static str),
    /// Hash text (all zeros: absent).
    Hash(&'static str),
    /// FILETIME as RFC 3339 text.
    Time(&'static str),
    /// Binary data whose length is the value of the field at this index.
    Data(&'static str, usize),
    /// syslog.log event id: `0x1207xxxx` text plus a name.
    SyslogId(&'static str, &'static str),
}

impl F {
    fn names(self) -> [Option<&'static str>; 2] {
        match self {
            F::Skip => [None, None],
            F::Code(a, _, b) | F::NamedCode(a, _, b) | F::SyslogId(a, b) => [Some(a), Some(b)],
            F::Hex(a)
            | F::Ipv4(a)
            | F::Ipv6(a)
            | F::Mac(a)
            | F::Text(a)
            | F::Hash(a)
            | F::Time(a)
            | F::Data(a, _) => [Some(a), None],
        }
    }
}

/// seclog.log fields 0.. (0 Entry Length and 1 time are handled first).
const SECLOG: [F; 42] = [
    F::Skip,
    F::Skip,
    F::Code("event_id", Table::SeclogEvent, "event_name"),
    F::Code("severity", Table::Severity, "severity_name"),
    F::Ipv4("local_ip"),
    F::Ipv4("remote_ip"),
    F::Code("protocol", Table::Protocol, "protocol_name"),
    F::Hex("hack_type"),
    F::Code("direction", Table::Direction, "direction_name"),
    F::Time("begin_time"),
    F::Time("end_time"),
    F::Hex("occurrences"),
    F::Hex("log_data_size"),
    F::Text("description"),
    F::Skip,
    F::Text("application"),
    F::Data("log_data", 12),
    F::Mac("local_mac"),
    F::Mac("remote_mac"),
    F::Text("location"),
    F::Text("user"),
    F::Text("user_domain"),
    F::Hex("signature_id"),
    F::Hex("signature_subid"),
    F::Skip,
    F::Skip,
    F::Hex("remote_port"),
    F::Hex("local_port"),
    F::Ipv6("local_ipv6"),
    F::Ipv6("remote_ipv6"),
    F::Text("signature_name"),
    F::Text("intrusion_payload_url"),
    F::Text("intrusion_url"),
    F::Skip,
    F::Text("client_version"),
    F::Text("policy_serial"),
    F::Skip,
    F::Hash("md5"),
    F::Hash("sha256"),
    F::Hex("url_hid_level"),
    F::Hex("url_risk_score"),
    F::Text("url_categories"),
];

/// tralog.log fields.
const TRALOG: [F; 31] = [
    F::Skip,
    F::Skip,
    F::Code("event_id", Table::TralogEvent, "event_name"),
    F::Ipv4("local_ip"),
    F::Ipv4("remote_ip"),
    F::Hex("local_port"),
    F::Hex("remote_port"),
    F::Code("direction", Table::Direction, "direction_name"),
    F::Time("begin_time"),
    F::Time("end_time"),
    F::Hex("occurrences"),
    F::Hex("action_code"),
    F::Skip,
    F::Code("severity", Table::Severity, "severity_name"),
    F::Text("rule_id"),
    F::Text("remote_host_name"),
    F::Text("rule"),
    F::Text("application"),
    F::Mac("local_mac"),
    F::Mac("remote_mac"),
    F::Text("location"),
    F::Text("user"),
    F::Text("user_domain"),
    F::Skip,
    F::Skip,
    F::Ipv6("remote_ipv6"),
    F::Ipv6("local_ipv6"),
    F::Skip,
    F::Skip,
    F::Hash("md5"),
    F::Hash("sha256"),
];

/// syslog.log fields.
const SYSLOG: [F; 10] = [
    F::Skip,
    F::Skip,
    F::SyslogId("event_id", "event_name"),
    F::Skip,
    F::Code("severity", Table::SyslogSeverity, "severity_name"),
    F::Hex("data_size"),
    F::Text("description"),
    F::Text("event_source"),
    F::Data("data", 5),
    F::Text("location"),
];

/// processlog.log fields (indices as in the fixtures and SEPparser's reader: two unknown
/// fields sit between User Domain and IPv4, so IPv4 is 22, not 20 as in the reference list).
const PROCESSLOG: [F; 27] = [
    F::Skip,
    F::Skip,
    F::Code("event_id", Table::ProcessEvent, "event_name"),
    F::Hex("severity"),
    F::NamedCode("action", Table::ProcessAction, "action_code"),
    F::Hex("test_mode"),
    F::Text("description"),
    F::Text("api"),
    F::Skip,
    F::Time("begin_time"),
    F::Time("end_time"),
    F::Text("rule_name"),
    F::Hex("caller_pid"),
    F::Text("caller_process"),
    F::Skip,
    F::Text("caller_return_module"),
    F::Text("target"),
    F::Text("location"),
    F::Text("user"),
    F::Text("user_domain"),
    F::Skip,
    F::Skip,
    F::Ipv4("ip_address"),
    F::Text("device_instance_id"),
    F::Hex("file_size"),
    F::Skip,
    F::Ipv6("ipv6_address"),
];

struct Syms {
    fields: Vec<[Option<Sym>; 2]>,
    derived: Vec<Sym>,
    schema: Vec<&'static str>,
}

fn syms_for(kind: LogKind) -> Syms {
    let mut schema: Vec<&'static str> = Vec::new();
    let mut fields = Vec::new();
    for f in kind.spec() {
        let names = f.names();
        schema.extend(names.iter().flatten());
        fields.push(names.map(|n| n.map(Sym::new)));
    }
    let derived = kind.derived().iter().map(|n| Sym::new(n)).collect();
    for name in kind.derived() {
        if !schema.contains(name) {
            schema.push(name);
        }
    }
    Syms {
        fields,
        derived,
        schema,
    }
}

static SYMS: LazyLock<[Syms; 4]> = LazyLock::new(|| {
    [
        LogKind::Security,
        LogKind::Traffic,
        LogKind::System,
        LogKind::Process,
    ]
    .map(syms_for)
});

fn syms(kind: LogKind) -> &'static Syms {
    &SYMS[kind as usize]
}

/// Every field name a binary-log parser can produce.
pub fn schema(kind: LogKind) -> &'static [&'static str] {
    syms(kind).schema.as_slice()
}

/// Parser for one of the four binary logs (one framed record per call).
#[derive(Clone, Copy, Debug)]
pub struct SepBinaryParser {
    kind: LogKind,
}

impl SepBinaryParser {
    /// A parser for `kind`.
    pub fn new(kind: LogKind) -> SepBinaryParser {
        SepBinaryParser { kind }
    }
}

impl Parser for SepBinaryParser {
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
        parse_record(self.kind, ctx, record)
    }

    fn schema(&self) -> Schema {
        Schema::Fixed(schema(self.kind))
    }
}

/// Splits a record into fields: TAB-separated, except fixed-width binary fields.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    done: bool,
}

impl Reader<'_> {
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.done {
            return None;
        }
        let start = self.pos;
        match memchr::memchr(b'\t', &self.b[start..]) {
            Some(p) => {
                self.pos = start + p + 1;
                Some((start, start + p))
            }
            None => {
                self.done = true;
                Some((start, self.b.len()))
            }
        }
    }

    /// Exactly `n` bytes (which may contain TABs), then skips to after the next TAB.
    fn sized(&mut self, n: usize) -> Option<(usize, usize)> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let Some(end) = start.checked_add(n).filter(|&end| end <= self.b.len()) else {
            return self.next();
        };
        match memchr::memchr(b'\t', &self.b[end..]) {
            Some(p) => self.pos = end + p + 1,
            None => self.done = true,
        }
        Some((start, end))
    }

    /// A 16-byte binary field if a TAB (or the end) follows it, else a TAB-delimited one.
    fn fixed16(&mut self) -> Option<(usize, usize)> {
        let end = self.pos + 16;
        if !self.done && end <= self.b.len() && self.b.get(end).is_none_or(|&c| c == b'\t') {
            return self.sized(16);
        }
        self.next()
    }
}

/// The record without NUL padding and its line terminator.
fn content(record: &[u8]) -> &[u8] {
    let mut end = record.len();
    while end > 0 && record[end - 1] == 0 {
        end -= 1;
    }
    let r = &record[..end];
    r.strip_suffix(b"\r\n")
        .or_else(|| r.strip_suffix(b"\r"))
        .or_else(|| r.strip_suffix(b"\n"))
        .unwrap_or(r)
}

fn required_hex(b: &[u8], range: Option<(usize, usize)>, what: &str) -> Result<u64, ParseError> {
    let (s, e) =
        range.ok_or_else(|| ParseError::new(b.len(), format!("record ends before its {what}")))?;
    hex(&b[s..e]).ok_or_else(|| ParseError::new(s, format!("{what} is not hexadecimal")))
}

/// Parses one framed record of a `kind` log.
pub fn parse_record(kind: LogKind, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError> {
    check_len(record)?;
    let b = content(record);
    let mut r = Reader {
        b,
        pos: 0,
        done: false,
    };
    let len_field = r.next();
    required_hex(b, len_field, "entry length")?;
    let time_field = r.next();
    let ticks = required_hex(b, time_field, "time")?;
    if let Some((s, e)) = time_field.filter(|(s, e)| e - s != 16) {
        return Err(ParseError::new(
            s,
            format!("time must be 16 hex digits, found {}", e - s),
        ));
    }
    let id_field = r.next();
    required_hex(b, id_field, "event id")?;
    let syms = syms(kind);
    let mut d = Draft::new(ctx, b);
    d.ev.time = filetime(ticks);
    let mut ints = [None::<u64>; 48];
    let mut ranges = [None::<(usize, usize)>; 48];
    for (i, f) in kind.spec().iter().enumerate().skip(2) {
        let range = match f {
            F::Mac(_) => r.fixed16(),
            F::Data(_, size_at) => match ints[*size_at] {
                Some(n) if n > 0 => r.sized(n as usize),
                _ => r.next(),
            },
            _ => {
                if i == 2 {
                    id_field
                } else {
                    r.next()
                }
            }
        };
        let Some((s, e)) = range else { break };
        ranges[i] = Some((s, e));
        ints[i] = field(&mut d, b, s, e, *f, syms.fields[i]);
    }
    match kind {
        LogKind::Security => seclog_extras(&mut d, &ranges, syms),
        LogKind::Traffic => {
            if let Some(a) = ints[11] {
                d.push(
                    syms.derived[0],
                    Value::Static(if a == 1 { "blocked" } else { "allowed" }),
                );
                d.push(syms.derived[1], Value::Bool(a == 1));
            }
        }
        LogKind::System | LogKind::Process => {}
    }
    Ok(d.finish())
}

/// Pushes one field; returns its integer value if it is a hex number.
fn field(
    d: &mut Draft<'_>,
    b: &[u8],
    s: usize,
    e: usize,
    f: F,
    sym: [Option<Sym>; 2],
) -> Option<u64> {
    let bytes = &b[s..e];
    let (Some(main), second) = (sym[0], sym[1]) else {
        return hex(bytes);
    };
    match f {
        F::Skip => None,
        F::Hex(_) | F::Code(..) | F::NamedCode(..) | F::SyslogId(..) => {
            let v = hex(bytes);
            match v {
                Some(v) => number(d, v, f, main, second),
                None => d.span(main, s, e),
            }
            v
        }
        F::Ipv4(_) => match hex(bytes).filter(|_| bytes.len() <= 8) {
            Some(v) => {
                d.push(main, Value::Str(ipv4_le(v as u32).into_boxed_str()));
                Some(v)
            }
            None => {
                d.span(main, s, e);
                None
            }
        },
        F::Ipv6(_) => {
            if let Some(text) = ipv6_hex(bytes) {
                d.push(main, Value::Str(text.into_boxed_str()));
            }
            None
        }
        F::Mac(_) => {
            if let Some(text) = mac6(bytes) {
                d.push(main, Value::Str(text.into_boxed_str()));
            }
            None
        }
        F::Hash(_) if bytes.iter().all(|&c| c == b'0') => None,
        F::Time(_) => {
            match hex(bytes).and_then(filetime) {
                Some(t) => d.time(main, t),
                None if hex(bytes) == Some(0) => {}
                None => d.span(main, s, e),
            }
            None
        }
        F::Text(_) | F::Hash(_) | F::Data(..) => {
            d.trimmed(main, s, e, b);
            None
        }
    }
}

/// Pushes a hex number field (with its decoded name, for codes).
fn number(d: &mut Draft<'_>, v: u64, f: F, main: Sym, second: Option<Sym>) {
    match (f, second) {
        (F::Code(_, table, _), Some(name)) => {
            d.push(main, Value::Int(v as i64));
            if let Some(n) = table.name(v as i64) {
                d.push(name, Value::Static(n));
            }
        }
        (F::NamedCode(_, table, _), Some(code)) => {
            d.push(code, Value::Int(v as i64));
            if let Some(n) = table.name(v as i64) {
                d.push(main, Value::Static(n));
            }
        }
        (F::SyslogId(..), Some(name)) => {
            d.push(main, Value::Str(format!("0x{v:08X}").into_boxed_str()));
            if let Some(n) = Table::SyslogEvent.name(v as i64) {
                d.push(name, Value::Static(n));
            }
        }
        _ => d.push(main, Value::Int(v as i64)),
    }
}

/// seclog: signature id/name from the description when the fields lack them, plus
/// `signature_category` and `blocked`.
fn seclog_extras(d: &mut Draft<'_>, ranges: &[Option<(usize, usize)>; 48], syms: &Syms) {
    let Some((ds, de)) = ranges[13] else { return };
    let desc = d.text(ds, de).to_owned();
    let info = ips_description(&desc);
    let sid_sym = syms.fields[22][0];
    let name_sym = syms.fields[30][0];
    if let (None, Some(sid), Some(sym)) = (ranges[22], info.sid, sid_sym) {
        d.push(sym, Value::Int(sid));
    }
    let name = match ranges[30].filter(|(s, e)| e > s) {
        Some((s, e)) => d.text(s, e).to_owned(),
        None => match (info.name, name_sym) {
            (Some((s, e)), Some(sym)) => {
                d.span(sym, ds + s, ds + e);
                desc[s..e].to_owned()
            }
            _ => String::new(),
        },
    };
    if let Some(cat) = signature_category(&name) {
        d.push(syms.derived[0], Value::Str(cat.into()));
    }
    if let Some(blocked) = info.blocked {
        d.push(syms.derived[1], Value::Bool(blocked));
    }
}

/// A whole binary log file, parsed.
#[derive(Debug, Default)]
pub struct BinaryLog {
    /// The header line, if the file starts with one.
    pub header: Option<LogHeader>,
    /// Each record's byte offset in the file and its event.
    pub events: Vec<(u64, Event)>,
    /// Records that could not be parsed, and damaged stretches, by byte offset.
    pub errors: Vec<(u64, ParseError)>,
}

/// Parses every record of a binary log file held in `bytes`.
pub fn parse_log(kind: LogKind, ctx: &ParseCtx, bytes: &[u8]) -> BinaryLog {
    let mut out = BinaryLog::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let step = match frame(rest, pos == 0, true) {
            Frame::Header(n) => {
                match LogHeader::parse(&rest[..n]) {
                    Ok(h) => out.header = Some(h),
                    Err(e) => out.errors.push((pos as u64, e)),
                }
                n
            }
            Frame::Record(n) => {
                match parse_record(kind, ctx, &rest[..n]) {
                    Ok(ev) => out.events.push((pos as u64, ev)),
                    Err(e) => out.errors.push((pos as u64, e)),
                }
                n
            }
            Frame::Skip(n) => {
                if !is_padding(&rest[..n]) {
                    let msg = format!("skipped {n} bytes that are not a record");
                    out.errors.push((pos as u64, ParseError::new(0, msg)));
                }
                n
            }
            Frame::NeedMore => {
                let msg = format!("last {} bytes are an incomplete record", rest.len());
                out.errors
                    .push((pos as u64, ParseError::new(rest.len(), msg)));
                rest.len()
            }
        };
        pos += step.max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ParseCtx {
        ParseCtx::new("sep", "localbox")
    }

    #[test]
    fn schemas_name_every_field_once() {
        for kind in [
            LogKind::Security,
            LogKind::Traffic,
            LogKind::System,
            LogKind::Process,
        ] {
            let s = schema(kind);
            let mut sorted = s.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), s.len(), "{kind:?}");
        }
    }

    #[test]
    fn short_and_bad_records_are_errors() {
        assert_eq!(
            parse_record(LogKind::System, &ctx(), b"")
                .unwrap_err()
                .column,
            0
        );
        assert_eq!(
            parse_record(LogKind::System, &ctx(), b"zz\tx")
                .unwrap_err()
                .column,
            0
        );
        let e = parse_record(LogKind::System, &ctx(), b"20\t01d45f6a30f2a02").unwrap_err();
        assert_eq!(e.column, 3);
        let e = parse_record(LogKind::System, &ctx(), b"20\t01d45f6a30f2a02b").unwrap_err();
        assert!(e.message.contains("event id"), "{e}");
    }

    #[test]
    fn a_minimal_syslog_record_parses() {
        let rec = b"40\t01d45f6a30f2a02b\t12071027\t0\t00000002\t0\tOld defs\tSmc\t\r\n";
        let ev = parse_record(LogKind::System, &ctx(), rec).unwrap();
        assert_eq!(ev.get_str(Sym::new("event_id")).unwrap(), "0x12071027");
        assert_eq!(
            ev.get_str(Sym::new("event_name")).unwrap(),
            "Using old virus definitions"
        );
        assert_eq!(ev.get_str(Sym::new("severity_name")).unwrap(), "Error");
        assert_eq!(ev.get_str(Sym::new("description")).unwrap(), "Old defs");
    }
}
