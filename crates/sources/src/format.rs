//! The formats watchpost parses, by name, and recognising them from a file's first bytes.
//!
//! * [`Format::parser`] gives the parser of a format, [`Format::schema`] its field names.
//! * [`Format::detect`] (also [`detect`]) tells a file's format from its name and first bytes;
//!   [`is_evtx`] recognises Windows event log files, which no line parser reads.
//! * [`parse_file`] parses a whole file's bytes (for `watchpost test`): line formats are split
//!   on LF (a CR before it is dropped, blank lines are skipped; UTF-16 files with a BOM are
//!   transcoded first and offsets then count bytes of the UTF-8 text), binary logs are
//!   framed by Entry Length ([`crate::sep::frame`]).

use std::path::Path;
use std::sync::Arc;

use watchpost_event::{Event, Origin};

use crate::jsonl;
use crate::parse::{ParseCtx, ParseError, Parser, Schema};
use crate::sep::av::{self, SepAvParser};
use crate::sep::binary::{self, LogKind, SepBinaryParser};
use crate::sep::framing::LogHeader;
use crate::sep::manager::{self, SepManagerParser};

/// A log format with a parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// SEP client daily AV log (`MMDDYYYY.Log`, CSV with hex time). Config name `sep_av_log`.
    SepAvLog,
    /// SEP client security/IPS log (`seclog.log`). Config name `sep_security_log`.
    SepSecurityLog,
    /// SEP client traffic log (`tralog.log`). Config name `sep_traffic_log`.
    SepTrafficLog,
    /// SEP client system log (`syslog.log`). Config name `sep_system_log`.
    SepSystemLog,
    /// SEP client application/device control log (`processlog.log`). Config name `sep_process_log`.
    SepProcessLog,
    /// SEPM syslog export lines (with or without an RFC 3164/5424 header). Config name `sep_manager_syslog`.
    SepManagerSyslog,
    /// One JSON object per line. Config name `jsonl`.
    JsonLines,
    /// Plain text lines, with an optional syslog prefix and a per-source `pattern`
    /// ([`crate::textlog`]). Config name `text`.
    Text,
    /// The systemd journal, entries as `journalctl --output=json` prints them
    /// ([`crate::journald`]). Config name `journald`.
    Journald,
    /// Windows `.evtx` files, followed record by record ([`crate::evtx_follow`]); records
    /// are event XML ([`crate::winevent`]). Config name `evtx`.
    Evtx,
    /// The live Windows Event Log, channels followed with bookmarks
    /// ([`crate::winevtlog`], Windows only); events are rendered XML ([`crate::winevent`]),
    /// so `watchpost test` reads files of one event XML per line. Config name
    /// `windows_event_log`.
    WindowsEventLog,
}

impl Format {
    /// Which SEP binary log a format reads (`None` for the other formats).
    pub fn sep_log_kind(self) -> Option<LogKind> {
        match self {
            Format::SepSecurityLog => Some(LogKind::Security),
            Format::SepTrafficLog => Some(LogKind::Traffic),
            Format::SepSystemLog => Some(LogKind::System),
            Format::SepProcessLog => Some(LogKind::Process),
            _ => None,
        }
    }

    /// The format of a SEP binary log.
    pub fn of_sep_log(kind: LogKind) -> Format {
        match kind {
            LogKind::Security => Format::SepSecurityLog,
            LogKind::Traffic => Format::SepTrafficLog,
            LogKind::System => Format::SepSystemLog,
            LogKind::Process => Format::SepProcessLog,
        }
    }

    /// Every format, in documentation order.
    pub const ALL: [Format; 11] = [
        Format::SepAvLog,
        Format::SepSecurityLog,
        Format::SepTrafficLog,
        Format::SepSystemLog,
        Format::SepProcessLog,
        Format::SepManagerSyslog,
        Format::JsonLines,
        Format::Text,
        Format::Journald,
        Format::Evtx,
        Format::WindowsEventLog,
    ];

    /// The name used in `type = "…"` of a `[[source]]`.
    pub fn name(self) -> &'static str {
        match self {
            Format::SepAvLog => "sep_av_log",
            Format::SepSecurityLog => "sep_security_log",
            Format::SepTrafficLog => "sep_traffic_log",
            Format::SepSystemLog => "sep_system_log",
            Format::SepProcessLog => "sep_process_log",
            Format::SepManagerSyslog => "sep_manager_syslog",
            Format::JsonLines => "jsonl",
            Format::Text => "text",
            Format::Journald => "journald",
            Format::Evtx => "evtx",
            Format::WindowsEventLog => "windows_event_log",
        }
    }

    /// The format with config name `name`.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether records are SEP binary-log records (framed by Entry Length) instead of lines.
    pub fn is_sep_binary(self) -> bool {
        matches!(
            self,
            Format::SepSecurityLog
                | Format::SepTrafficLog
                | Format::SepSystemLog
                | Format::SepProcessLog
        )
    }

    /// The parser for this format. Create it once per source; parsing a record through it
    /// is one virtual call.
    pub fn parser(self) -> Box<dyn Parser> {
        match self {
            Format::SepAvLog => Box::new(SepAvParser),
            Format::SepSecurityLog => Box::new(SepBinaryParser::new(LogKind::Security)),
            Format::SepTrafficLog => Box::new(SepBinaryParser::new(LogKind::Traffic)),
            Format::SepSystemLog => Box::new(SepBinaryParser::new(LogKind::System)),
            Format::SepProcessLog => Box::new(SepBinaryParser::new(LogKind::Process)),
            Format::SepManagerSyslog => Box::new(SepManagerParser),
            Format::JsonLines => Box::new(jsonl::JsonLinesParser),
            Format::Text => Box::new(crate::textlog::TextParser::new(None)),
            Format::Journald => Box::new(crate::journald::JournalParser),
            Format::Evtx | Format::WindowsEventLog => Box::new(crate::winevent::EventXmlParser),
        }
    }

    /// The field names this format's parser can produce.
    pub fn schema(self) -> Schema {
        match self {
            Format::SepAvLog => Schema::Fixed(av::schema()),
            Format::SepSecurityLog => Schema::Fixed(binary::schema(LogKind::Security)),
            Format::SepTrafficLog => Schema::Fixed(binary::schema(LogKind::Traffic)),
            Format::SepSystemLog => Schema::Fixed(binary::schema(LogKind::System)),
            Format::SepProcessLog => Schema::Fixed(binary::schema(LogKind::Process)),
            Format::SepManagerSyslog
            | Format::JsonLines
            | Format::Journald
            | Format::Evtx
            | Format::WindowsEventLog => Schema::Open,
            Format::Text => Schema::Fixed(crate::textlog::FIELDS),
        }
    }

    /// Recognises a file's format from its first bytes (`head`, say 4 KiB), falling back on
    /// the file name. `None` for EVTX files (see [`is_evtx`]) and anything unrecognised.
    pub fn detect(path: &Path, head: &[u8]) -> Option<Format> {
        detect(path, head)
    }
}

/// Whether `head` is the start of a Windows EVTX file (magic `ElfFile\0`).
pub fn is_evtx(head: &[u8]) -> bool {
    head.starts_with(b"ElfFile\0")
}

/// See [`Format::detect`]: SEP binary logs by their header line (log type 0 system,
/// 1 security, 2 traffic, 4 process), the AV log by its 12-hex-digit time and comma, JSON
/// lines by `{`, Windows event XML (one event per line) by `<Event`, SEPM syslog by its
/// header or a first line the manager's parser classifies by its labels; then by file
/// name. The text formats are claimed only for a first line that is text (no control
/// characters other than tab): random bytes are no format.
pub fn detect(path: &Path, head: &[u8]) -> Option<Format> {
    if is_evtx(head) {
        return None;
    }
    if let Some(f) = first_line(head)
        .and_then(|l| LogHeader::parse(l).ok())
        .and_then(|h| h.kind())
        .map(Format::of_sep_log)
    {
        return Some(f);
    }
    let text = transcode(head);
    let text: &[u8] = &text;
    let line = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find(|l| !l.iter().all(u8::is_ascii_whitespace));
    if let Some(line) = line.filter(|l| is_text(l)) {
        if line.len() > 12 && line[..12].iter().all(u8::is_ascii_hexdigit) && line[12] == b',' {
            return Some(Format::SepAvLog);
        }
        if line.trim_ascii_start().starts_with(b"{") {
            return Some(Format::JsonLines);
        }
        let l = line.trim_ascii_start();
        if l.starts_with(b"<Event ") || l.starts_with(b"<Event>") {
            return Some(Format::WindowsEventLog);
        }
        if manager::recognises(line) {
            return Some(Format::SepManagerSyslog);
        }
    }
    by_name(path)
}

fn first_line(head: &[u8]) -> Option<&[u8]> {
    let lf = memchr::memchr(b'\n', head)?;
    Some(&head[..=lf])
}

/// A line of text: no control characters but tab (bytes of 0x80 and above are fine:
/// UTF-8 or Windows-1252). About one byte in eight of random data is a control character,
/// so a line of random bytes almost never passes.
fn is_text(line: &[u8]) -> bool {
    !line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

fn by_name(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let stem = name.strip_suffix(".log");
    Some(match stem {
        Some(s) if s.starts_with("seclog") => Format::SepSecurityLog,
        Some(s) if s.starts_with("tralog") => Format::SepTrafficLog,
        Some(s) if s.starts_with("processlog") => Format::SepProcessLog,
        Some("syslog") => Format::SepSystemLog,
        Some(s) if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) => Format::SepAvLog,
        _ if name.ends_with(".jsonl") || name.ends_with(".ndjson") => Format::JsonLines,
        _ => return None,
    })
}

/// UTF-16 (with a BOM) to UTF-8; a UTF-8 BOM is dropped; anything else is returned as is.
fn transcode(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let utf16 = |le: bool| -> Vec<u8> {
        let units = bytes[2..].chunks_exact(2).map(|p| {
            if le {
                u16::from_le_bytes([p[0], p[1]])
            } else {
                u16::from_be_bytes([p[0], p[1]])
            }
        });
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect::<String>()
            .into_bytes()
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(true).into(),
        [0xFE, 0xFF, ..] => utf16(false).into(),
        [0xEF, 0xBB, 0xBF, rest @ ..] => rest.into(),
        _ => bytes.into(),
    }
}

/// Parses every record of a file held in `bytes`: the events, and the records that failed
/// with their byte offsets. Events carry no `origin`; see [`parse_file_in`].
pub fn parse_file(
    format: Format,
    ctx: &ParseCtx,
    bytes: &[u8],
) -> (Vec<Event>, Vec<(u64, ParseError)>) {
    let (events, errors) = parse_records(format, ctx, bytes);
    (events.into_iter().map(|(_, e)| e).collect(), errors)
}

/// [`parse_file`], with each event's `origin` set to `place` and the record's byte offset.
pub fn parse_file_in(
    format: Format,
    ctx: &ParseCtx,
    place: &Arc<str>,
    bytes: &[u8],
) -> (Vec<Event>, Vec<(u64, ParseError)>) {
    let (events, errors) = parse_records(format, ctx, bytes);
    let events = events
        .into_iter()
        .map(|(offset, mut e)| {
            e.origin = Some(Origin {
                place: place.clone(),
                offset,
            });
            e
        })
        .collect();
    (events, errors)
}

/// Items with the byte offsets of their records.
pub type AtOffsets<T> = Vec<(u64, T)>;

/// Events and errors with the byte offsets of their records.
pub fn parse_records(
    format: Format,
    ctx: &ParseCtx,
    bytes: &[u8],
) -> (AtOffsets<Event>, AtOffsets<ParseError>) {
    if let Some(kind) = format.sep_log_kind() {
        let log = binary::parse_log(kind, ctx, bytes);
        return (log.events, log.errors);
    }
    let parser = format.parser();
    let text = transcode(bytes);
    let skipped =
        if text.len() < bytes.len() && !matches!(bytes, [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..]) {
            bytes.len() - text.len()
        } else {
            0
        };
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut offset = 0usize;
    for line in text.split(|&b| b == b'\n') {
        let at = (offset + skipped) as u64;
        offset += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parser.parse(ctx, line) {
            Ok(e) => events.push((at, e)),
            Err(e) => errors.push((at, e)),
        }
    }
    (events, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(f));
            assert_eq!(f.parser().schema(), f.schema());
        }
        assert_eq!(Format::from_name("nope"), None);
    }

    #[test]
    fn detects_by_content_and_name() {
        let p = Path::new("x.txt");
        assert_eq!(
            detect(p, b"31041D081228,14,2,8,pc\r\n"),
            Some(Format::SepAvLog)
        );
        assert_eq!(
            detect(p, b"00000004\t00100000\t0\t7\t0\t62\te\r\n13e\t"),
            Some(Format::SepProcessLog)
        );
        assert_eq!(detect(p, b"  {\"a\":1}\n"), Some(Format::JsonLines));
        assert_eq!(
            detect(p, b"Site: S,Server: x,LiveUpdate started.\n"),
            Some(Format::SepManagerSyslog)
        );
        assert_eq!(
            detect(p, b"<54>Jun 22 00:36:45 h SymantecServer: whatever\n"),
            Some(Format::SepManagerSyslog)
        );
        assert_eq!(detect(p, b"ElfFile\0rest"), None);
        assert_eq!(
            detect(
                p,
                b"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'>"
            ),
            Some(Format::WindowsEventLog)
        );
        assert_eq!(detect(p, b"<Events><Event>"), None);
        assert!(is_evtx(b"ElfFile\0"));
        assert_eq!(detect(p, b"hello world\n"), None);
        assert_eq!(
            detect(Path::new("/x/05292019.Log"), b""),
            Some(Format::SepAvLog)
        );
        assert_eq!(
            detect(Path::new("seclog.log"), b""),
            Some(Format::SepSecurityLog)
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("{\"a\":1}\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(detect(p, &utf16), Some(Format::JsonLines));
    }

    #[test]
    fn parse_file_splits_lines_and_reports_offsets() {
        let ctx = ParseCtx::new("j", "h");
        let bytes = b"{\"a\":1}\r\n\r\nnot json\n{\"b\":2}";
        let (events, errors) = parse_file(Format::JsonLines, &ctx, bytes);
        assert_eq!(events.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 11);
        let place: Arc<str> = "f.jsonl".into();
        let (events, _) = parse_file_in(Format::JsonLines, &ctx, &place, bytes);
        assert_eq!(events[1].origin.as_ref().map(|o| o.offset), Some(20));
    }
}
