//! Cutting a TCP byte stream into syslog messages (RFC 6587): octet counting
//! (`LEN SP MSG`) and non-transparent framing (messages ended by LF).
//!
//! The [`Framer`] holds at most one message being assembled (bounded by the message limit
//! plus one read), so a peer cannot make it buffer without bound: a line longer than the
//! limit is skipped up to its LF, an octet count above the limit is skipped byte by byte.

use super::TcpFraming;

/// Most digits accepted in an octet count (10 digits: up to 9 999 999 999 bytes).
const MAX_COUNT_DIGITS: usize = 10;

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// One message, framing removed, trailing CR/LF/NUL trimmed, never empty.
    Message(Vec<u8>),
    /// A message above the limit was skipped (or is being skipped).
    Oversized,
    /// The stream cannot be framed (strict octet counting saw no count, or the connection
    /// ended inside an octet-counted frame). The connection should be closed.
    Invalid(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages.
    Start,
    /// Inside an octet-counted message of this many bytes.
    Counted(usize),
    /// Inside an LF-terminated message; `scanned` bytes hold no LF.
    Line { scanned: usize },
    /// Skipping the rest of an oversized counted message.
    SkipBytes(u64),
    /// Skipping the rest of an oversized line, up to and including its LF.
    SkipLine,
    /// Framing lost (strict octet counting); everything is ignored.
    Broken,
}

/// What the start of a message says about its framing.
enum Count {
    /// `LEN SP`: the message length and the length of the `LEN SP` header.
    Len(u64, usize),
    /// A digit run that may still become a count.
    NeedMore,
    /// Not an octet count.
    No,
}

/// Per-connection framing state.
#[derive(Debug)]
pub(crate) struct Framer {
    mode: TcpFraming,
    max: usize,
    buf: Vec<u8>,
    pos: usize,
    state: State,
}

impl Framer {
    /// A framer for messages of at most `max` bytes.
    pub(crate) fn new(mode: TcpFraming, max: usize) -> Framer {
        Framer {
            mode,
            max,
            buf: Vec::new(),
            pos: 0,
            state: State::Start,
        }
    }

    /// Appends received bytes. Call [`next`](Framer::next) until it returns `None` before
    /// feeding more.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        match self.state {
            State::Broken => {}
            State::SkipBytes(n) if self.buf.is_empty() => {
                let take = usize::try_from(n).map_or(data.len(), |n| n.min(data.len()));
                let rest = n - take as u64;
                self.state = if rest == 0 {
                    State::Start
                } else {
                    State::SkipBytes(rest)
                };
                self.buf.extend_from_slice(&data[take..]);
            }
            _ => self.buf.extend_from_slice(data),
        }
    }

    /// The next frame from what was fed, `None` when more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Option<Frame> {
        loop {
            let avail = &self.buf[self.pos..];
            match self.state {
                State::Broken => {
                    self.pos = self.buf.len();
                    return None;
                }
                State::Start => {
                    let skip = avail
                        .iter()
                        .position(|b| !matches!(b, b'\n' | b'\r' | 0))
                        .unwrap_or(avail.len());
                    self.pos += skip;
                    let avail = &self.buf[self.pos..];
                    if avail.is_empty() {
                        return None;
                    }
                    match (self.mode, octet_count(avail)) {
                        (TcpFraming::Lf, _) | (TcpFraming::Auto, Count::No) => {
                            self.state = State::Line { scanned: 0 };
                        }
                        (_, Count::NeedMore) => return None,
                        (TcpFraming::OctetCounting, Count::No) => {
                            self.state = State::Broken;
                            return Some(Frame::Invalid("expected an octet count (LEN SP MSG)"));
                        }
                        (_, Count::Len(len, header)) => {
                            self.pos += header;
                            match usize::try_from(len) {
                                Ok(len) if len <= self.max => self.state = State::Counted(len),
                                _ => {
                                    self.state = State::SkipBytes(len);
                                    return Some(Frame::Oversized);
                                }
                            }
                        }
                    }
                }
                State::Counted(len) => {
                    if avail.len() < len {
                        return None;
                    }
                    let msg = trim(&avail[..len]);
                    let msg = (!msg.is_empty()).then(|| msg.to_vec());
                    self.pos += len;
                    self.state = State::Start;
                    if let Some(msg) = msg {
                        return Some(Frame::Message(msg));
                    }
                }
                State::Line { scanned } => match memchr::memchr(b'\n', &avail[scanned..]) {
                    Some(i) => {
                        let end = scanned + i;
                        let msg = trim(&avail[..end]);
                        let frame = if msg.len() > self.max {
                            Some(Frame::Oversized)
                        } else {
                            (!msg.is_empty()).then(|| Frame::Message(msg.to_vec()))
                        };
                        self.pos += end + 1;
                        self.state = State::Start;
                        if frame.is_some() {
                            return frame;
                        }
                    }
                    None => {
                        // One byte of slack for the CR of a CRLF not yet followed by its LF.
                        if avail.len() > self.max.saturating_add(1) {
                            self.pos = self.buf.len();
                            self.state = State::SkipLine;
                            return Some(Frame::Oversized);
                        }
                        self.state = State::Line {
                            scanned: avail.len(),
                        };
                        return None;
                    }
                },
                State::SkipLine => match memchr::memchr(b'\n', avail) {
                    Some(i) => {
                        self.pos += i + 1;
                        self.state = State::Start;
                    }
                    None => {
                        self.pos = self.buf.len();
                        return None;
                    }
                },
                State::SkipBytes(n) => {
                    let take = usize::try_from(n).map_or(avail.len(), |n| n.min(avail.len()));
                    self.pos += take;
                    let rest = n - take as u64;
                    if rest > 0 {
                        self.state = State::SkipBytes(rest);
                        return None;
                    }
                    self.state = State::Start;
                }
            }
        }
    }

    /// The stream ended (peer closed, idle timeout): what is left. A last line without its
    /// LF is a message; a counted frame cut short is [`Frame::Invalid`].
    pub(crate) fn finish(&mut self) -> Option<Frame> {
        let avail = &self.buf[self.pos..];
        let frame = match self.state {
            State::Start | State::Line { .. } => {
                let msg = trim(avail);
                if msg.is_empty() {
                    None
                } else if msg.len() > self.max {
                    Some(Frame::Oversized)
                } else if self.mode == TcpFraming::OctetCounting {
                    Some(Frame::Invalid("connection ended inside an octet count"))
                } else {
                    Some(Frame::Message(msg.to_vec()))
                }
            }
            State::Counted(_) => Some(Frame::Invalid(
                "connection ended inside an octet-counted message",
            )),
            State::SkipBytes(_) | State::SkipLine | State::Broken => None,
        };
        self.buf.clear();
        self.pos = 0;
        self.state = State::Start;
        frame
    }

    /// Bytes held (for tests: stays bounded).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Reads `LEN SP` at the start of `b` (RFC 6587 3.4.1; leading zeros tolerated).
fn octet_count(b: &[u8]) -> Count {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_COUNT_DIGITS {
        return Count::No;
    }
    match b.get(digits) {
        None => Count::NeedMore,
        Some(b' ') => {
            let len = b[..digits]
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            Count::Len(len, digits + 1)
        }
        Some(_) => Count::No,
    }
}

/// `b` without trailing CR, LF and NUL bytes.
pub(crate) fn trim(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b'\n' | b'\r' | 0))
        .map_or(0, |i| i + 1);
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &mut Framer, data: &[u8]) -> Vec<Frame> {
        f.feed(data);
        std::iter::from_fn(|| f.next()).collect()
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(s.as_bytes().to_vec())
    }

    #[test]
    fn auto_mixes_counted_and_lines() {
        let mut f = Framer::new(TcpFraming::Auto, 100);
        let got = all(&mut f, b"5 hello<13>x\n3 abc\r\n<14>y\r\n");
        assert_eq!(
            got,
            vec![msg("hello"), msg("<13>x"), msg("abc"), msg("<14>y")]
        );
    }

    #[test]
    fn byte_by_byte() {
        let mut f = Framer::new(TcpFraming::Auto, 100);
        let mut got = Vec::new();
        for b in b"11 <13>counted<13>line\n" {
            got.extend(all(&mut f, &[*b]));
        }
        assert_eq!(got, vec![msg("<13>counted"), msg("<13>line")]);
    }

    #[test]
    fn digits_without_space_are_a_line() {
        let mut f = Framer::new(TcpFraming::Auto, 100);
        assert_eq!(all(&mut f, b"123abc\n"), vec![msg("123abc")]);
        assert_eq!(all(&mut f, b"12345678901 x\n"), vec![msg("12345678901 x")]);
    }

    #[test]
    fn oversized_count_is_skipped() {
        let mut f = Framer::new(TcpFraming::Auto, 4);
        let mut got = all(&mut f, b"10 0123");
        assert_eq!(got, vec![Frame::Oversized]);
        got = all(&mut f, b"456789");
        assert!(got.is_empty());
        assert_eq!(all(&mut f, b"2 ok"), vec![msg("ok")]);
        assert_eq!(
            all(&mut f, b"9999999999 "),
            vec![Frame::Oversized],
            "a huge count is skipped, not allocated"
        );
        f.feed(&[b'x'; 1000]);
        assert_eq!(f.next(), None);
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn oversized_line_is_skipped_to_lf() {
        let mut f = Framer::new(TcpFraming::Lf, 8);
        assert_eq!(all(&mut f, b"0123456789"), vec![Frame::Oversized]);
        assert_eq!(all(&mut f, &[b'y'; 500]), vec![]);
        assert_eq!(f.held(), 0);
        assert_eq!(all(&mut f, b"tail\nnext\n"), vec![msg("next")]);
        assert_eq!(
            all(&mut f, b"0123456789\nok\n"),
            vec![Frame::Oversized, msg("ok")]
        );
        assert_eq!(all(&mut f, b"01234567\r\n"), vec![msg("01234567")]);
    }

    #[test]
    fn strict_octet_counting_rejects_garbage() {
        let mut f = Framer::new(TcpFraming::OctetCounting, 100);
        assert_eq!(all(&mut f, b"3 abc"), vec![msg("abc")]);
        assert!(matches!(all(&mut f, b"<13>x\n")[..], [Frame::Invalid(_)]));
        assert_eq!(all(&mut f, b"3 abc"), vec![]);
    }

    #[test]
    fn lf_mode_takes_digits_literally() {
        let mut f = Framer::new(TcpFraming::Lf, 100);
        assert_eq!(all(&mut f, b"3 abc\n"), vec![msg("3 abc")]);
    }

    #[test]
    fn finish_delivers_last_line_only() {
        let mut f = Framer::new(TcpFraming::Auto, 100);
        assert_eq!(all(&mut f, b"<13>no newline"), vec![]);
        assert_eq!(f.finish(), Some(msg("<13>no newline")));
        assert_eq!(all(&mut f, b"10 abc"), vec![]);
        assert!(matches!(f.finish(), Some(Frame::Invalid(_))));
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn empty_messages_are_dropped() {
        let mut f = Framer::new(TcpFraming::Auto, 100);
        assert_eq!(
            all(&mut f, b"\n\r\n\0 0 2 \r\n1 x"),
            vec![msg(" 0 2 "), msg("x")]
        );
    }
}
