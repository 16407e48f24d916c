//! Framing the SEP client's binary logs (`seclog.log`, `tralog.log`, `syslog.log`,
//! `processlog.log`) into records.
//!
//! # For the tailer
//!
//! These logs are not line-based. The first line of a file is a header (TAB-separated hex,
//! ends in CRLF); every record after it starts with **Entry Length**, its first
//! TAB-separated field in hex: the byte length of the whole record including terminator and
//! padding. Records may contain CR, LF, TAB and NUL bytes anywhere, so never split on them.
//!
//! Call [`frame`] with the unread bytes of the file, starting at a record boundary:
//!
//! ```text
//! let mut pos = 0;                      // file offset of buf[0]
//! loop {
//!     match frame(&buf[consumed..], pos == 0, buf_reaches_eof) {
//!         Frame::Header(n) => { header = LogHeader::parse(&bytes[..n]); advance(n) }
//!         Frame::Record(n) => { parser.parse(ctx, &bytes[..n]); advance(n) }
//!         Frame::Skip(n)   => advance(n), // stray CR/LF/NUL, or garbage while resyncing
//!         Frame::NeedMore  => break,      // wait for the file to grow, keep the offset
//!     }
//! }
//! ```
//!
//! * `at_file_start`: `buf[0]` is file offset 0, where the header lives.
//! * `at_eof`: `buf` ends where the file currently ends. Only then is a record shorter than
//!   its Entry Length accepted, and only if it ends in CRLF and has all its fields:
//!   processlog.log omits the NUL padding of its last record (declared 318 bytes, 244
//!   present). A record still being written is otherwise reported as [`Frame::NeedMore`].
//! * [`Frame::Skip`] covers both harmless padding (CR, LF, NUL between records; seclog and
//!   tralog end in a stray CRLF) and resynchronisation over bytes that are not a record
//!   start. Use [`is_padding`] on the skipped bytes to tell them apart (count the others as
//!   damage).
//! * SEP rewrites the header in place as entries are added: re-read offset 0 to follow
//!   [`LogHeader::entry_count`] and [`LogHeader::running_total`] (entries ever written,
//!   which keeps growing after the log wraps: use it for loss accounting).

use crate::parse::ParseError;

use super::common::{hex, hex_digit};

/// What the framer found: the tailer's frame type (`Header`, `Record`, `NeedMore`, `Skip`).
pub use crate::framer::Frame;

/// Which of the four logs (the header says; the record layouts are in `binary.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// `seclog.log`: firewall/IPS security events.
    Security,
    /// `tralog.log`: firewall traffic.
    Traffic,
    /// `syslog.log`: the client's system log.
    System,
    /// `processlog.log`: application and device control.
    Process,
}

/// Longest record accepted; a larger Entry Length is treated as damage.
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// Longest header line looked for.
const MAX_HEADER_LEN: usize = 256;

/// Entry Length digits, TAB, 16 FILETIME digits, TAB.
fn prefix_len(digits: usize) -> usize {
    digits + 1 + 16 + 1
}

/// Frames the bytes at the start of `buf` (see the module documentation).
pub fn frame(buf: &[u8], at_file_start: bool, at_eof: bool) -> Frame {
    if buf.is_empty() {
        return Frame::NeedMore;
    }
    if at_file_start && buf[0].is_ascii_hexdigit() {
        match header_len(buf) {
            Some(Ok(n)) => return Frame::Header(n),
            None => return Frame::NeedMore,
            Some(Err(_)) => {}
        }
    }
    let pad = buf
        .iter()
        .take_while(|&&b| matches!(b, b'\r' | b'\n' | 0))
        .count();
    if pad > 0 {
        return Frame::Skip(pad);
    }
    match record_start(buf) {
        Start::Valid(len) if buf.len() >= len => Frame::Record(len),
        Start::Valid(len) if at_eof && unpadded_complete(buf, len) => Frame::Record(buf.len()),
        Start::Valid(_) | Start::Short => Frame::NeedMore,
        Start::Invalid => resync(buf),
    }
}

/// Whether `bytes` are only record padding (CR, LF, NUL).
pub fn is_padding(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| matches!(b, b'\r' | b'\n' | 0))
}

enum Start {
    /// A record of this Entry Length starts here.
    Valid(usize),
    /// Could be a record start; too few bytes to tell.
    Short,
    /// Not a record start.
    Invalid,
}

fn record_start(buf: &[u8]) -> Start {
    let digits = buf
        .iter()
        .take(9)
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    if digits == 0 || digits > 8 {
        return Start::Invalid;
    }
    let need = prefix_len(digits);
    let avail = buf.len().min(need);
    if buf.get(digits).is_some_and(|&b| b != b'\t') {
        return Start::Invalid;
    }
    let time = &buf[(digits + 1).min(avail)..(digits + 17).min(avail)];
    if !time.iter().all(u8::is_ascii_hexdigit) || (avail > digits + 17 && buf[digits + 17] != b'\t')
    {
        return Start::Invalid;
    }
    if buf.len() < need {
        return Start::Short;
    }
    match hex(&buf[..digits]).map(|v| v as usize) {
        Some(len) if (need..=MAX_RECORD_LEN).contains(&len) => Start::Valid(len),
        _ => Start::Invalid,
    }
}

/// A record shorter than its Entry Length at the end of the file: complete if it ends in CRLF
/// and has at least the fields every log's records have (nine TABs).
fn unpadded_complete(buf: &[u8], len: usize) -> bool {
    buf.len() < len && buf.ends_with(b"\r\n") && memchr::memchr_iter(b'\t', buf).count() >= 8
}

/// Skips to the next plausible record start (or keeps a tail that might begin one).
fn resync(buf: &[u8]) -> Frame {
    for p in 1..buf.len() {
        if !buf[p].is_ascii_hexdigit() || buf[p - 1].is_ascii_hexdigit() {
            continue;
        }
        if let Start::Valid(_) | Start::Short = record_start(&buf[p..]) {
            return Frame::Skip(p);
        }
    }
    Frame::Skip(buf.len())
}

/// `Some(Ok(len))` for a complete header line, `Some(Err)` if the first line is not a header,
/// `None` if no line end was seen yet.
fn header_len(buf: &[u8]) -> Option<Result<usize, ParseError>> {
    let window = &buf[..buf.len().min(MAX_HEADER_LEN)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= MAX_HEADER_LEN {
            Some(Err(ParseError::new(0, "no header line")))
        } else {
            None
        };
    };
    Some(LogHeader::parse(&buf[..=lf]).map(|_| lf + 1))
}

/// The header line of a SEP client binary log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogHeader {
    /// Log type: 0 system, 1 security, 2 traffic, 4 process.
    pub log_type: u32,
    /// Maximum file size in bytes.
    pub max_size: u64,
    /// Field 2 (meaning unknown; 0 in every sample).
    pub unknown2: u64,
    /// Number of entries in the file now.
    pub entry_count: u64,
    /// Field 4 (meaning unknown; 0 in every sample).
    pub unknown4: u64,
    /// Entries ever written; only grows, also after the log wraps.
    pub running_total: u64,
    /// Maximum number of days entries are kept.
    pub max_days: u64,
}

impl LogHeader {
    /// Parses a header line (with or without its CRLF).
    pub fn parse(line: &[u8]) -> Result<LogHeader, ParseError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut v = [0u64; 7];
        let mut n = 0;
        let mut col = 0;
        for part in line.split(|&b| b == b'\t') {
            if n == v.len() {
                return Err(ParseError::new(col, "header has more than 7 fields"));
            }
            v[n] =
                hex(part).ok_or_else(|| ParseError::new(col, "header field is not hexadecimal"))?;
            n += 1;
            col += part.len() + 1;
        }
        if n != v.len() {
            return Err(ParseError::new(
                line.len(),
                format!("header has {n} fields, not 7"),
            ));
        }
        if line.first().and_then(|&b| hex_digit(b)).is_none() || v[0] > 0xff {
            return Err(ParseError::new(0, "not a log header"));
        }
        Ok(LogHeader {
            log_type: v[0] as u32,
            max_size: v[1],
            unknown2: v[2],
            entry_count: v[3],
            unknown4: v[4],
            running_total: v[5],
            max_days: v[6],
        })
    }

    /// Which of the four logs the file is, if the log type is known
    /// ([`Format::of_sep_log`](crate::Format::of_sep_log) names its format).
    pub fn kind(&self) -> Option<LogKind> {
        match self.log_type {
            0 => Some(LogKind::System),
            1 => Some(LogKind::Security),
            2 => Some(LogKind::Traffic),
            4 => Some(LogKind::Process),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] =
        b"00000001\t00080000\t00000000\t00000005\t00000000\t0000000000000005\t0000000e\r\n";

    #[test]
    fn header_parses() {
        let h = LogHeader::parse(HEADER).unwrap();
        assert_eq!(h.log_type, 1);
        assert_eq!(h.entry_count, 5);
        assert_eq!(h.max_days, 14);
        assert_eq!(h.kind(), Some(LogKind::Security));
        assert!(LogHeader::parse(b"zz\t1").is_err());
        assert!(LogHeader::parse(b"1\t2\t3").is_err());
        assert_eq!(frame(HEADER, true, false), Frame::Header(HEADER.len()));
        assert_eq!(frame(&HEADER[..20], true, false), Frame::NeedMore);
    }

    fn record(body: &str, pad: usize) -> Vec<u8> {
        let len = 9 + body.len() + pad;
        let mut r = format!("{len:08x}\t{body}").into_bytes();
        r.extend(std::iter::repeat_n(0u8, pad));
        r
    }

    #[test]
    fn records_frame_by_entry_length() {
        let r = record("01d50b296ed97e44\ta\tb\tc\td\te\tf\tg\th\r\n", 10);
        assert_eq!(frame(&r, false, false), Frame::Record(r.len()));
        assert_eq!(frame(&r[..r.len() - 1], false, false), Frame::NeedMore);
        // Missing padding at the end of the file: complete once its CRLF is there.
        assert_eq!(
            frame(&r[..r.len() - 10], false, true),
            Frame::Record(r.len() - 10)
        );
        assert_eq!(frame(&r[..r.len() - 10], false, false), Frame::NeedMore);
        assert_eq!(frame(&r[..r.len() - 12], false, true), Frame::NeedMore);
        assert_eq!(frame(&r[..5], false, true), Frame::NeedMore);
    }

    #[test]
    fn padding_and_garbage_are_skipped() {
        assert_eq!(frame(b"\r\n\0\0", false, true), Frame::Skip(4));
        let r = record("01d50b296ed97e44\ta\r\n", 0);
        let mut g = b"garbage!".to_vec();
        g.extend(&r);
        assert_eq!(frame(&g, false, false), Frame::Skip(8));
        assert_eq!(frame(&g[8..], false, false), Frame::Record(r.len()));
        assert_eq!(frame(b"zzzz", false, true), Frame::Skip(4));
        // A possible record start at the end is kept for the next read.
        assert_eq!(frame(b"zz\tzz 0000", false, true), Frame::Skip(6));
        // A too-small Entry Length is not a record.
        assert_eq!(
            frame(b"00000001\t01d50b296ed97e44\tx", false, true),
            Frame::Skip(27)
        );
        assert!(is_padding(b"\r\n\0"));
        assert!(!is_padding(b"\r\nx"));
    }
}
