//! The message an `email` action sends: RFC 5322 headers (Date, Message-ID, an RFC 2047
//! encoded Subject when it is not plain ASCII), a MIME UTF-8 text body in
//! quoted-printable, and the SMTP `DATA` framing (CRLF lines, dot-stuffing).

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Longest subject kept (characters); the rest is cut.
const MAX_SUBJECT_CHARS: usize = 500;

/// Makes Message-IDs unique within the process.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The whole message (headers and body), lines ending in CRLF.
pub(crate) fn compose(from: &str, to: &[String], subject: &str, body: &str) -> String {
    let now = Timestamp::now();
    let date = now
        .to_zoned(TimeZone::UTC)
        .strftime("%a, %d %b %Y %H:%M:%S +0000")
        .to_string();
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let id = format!(
        "<{:x}.{:x}.{}@{domain}>",
        now.as_nanosecond(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let mut m = String::with_capacity(body.len() * 11 / 10 + 512);
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("From: <{from}>\r\n"));
    m.push_str("To: ");
    for (i, t) in to.iter().enumerate() {
        if i > 0 {
            m.push_str(",\r\n ");
        }
        m.push_str(&format!("<{t}>"));
    }
    m.push_str("\r\n");
    m.push_str(&format!("Subject: {}\r\n", encode_subject(subject)));
    m.push_str(&format!("Message-ID: {id}\r\n"));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    m.push_str("Content-Transfer-Encoding: quoted-printable\r\n");
    m.push_str(&format!(
        "X-Mailer: watchpost/{}\r\n",
        env!("CARGO_PKG_VERSION")
    ));
    m.push_str("\r\n");
    m.push_str(&quoted_printable(body));
    m
}

/// The subject as a header value: control characters become spaces; plain ASCII stays
/// as it is, anything else becomes RFC 2047 `=?UTF-8?B?…?=` words of at most 75
/// characters, one per folded line, never splitting a character.
pub(crate) fn encode_subject(subject: &str) -> String {
    let clean: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_SUBJECT_CHARS)
        .collect();
    let clean = clean.trim();
    if clean.is_ascii() && !clean.contains("=?") && clean.len() <= 900 {
        return clean.to_owned();
    }
    // 45 bytes of UTF-8 make 60 base64 characters: 12 + 60 = 72 per word.
    let mut words = Vec::new();
    let mut start = 0;
    while start < clean.len() {
        let mut end = (start + 45).min(clean.len());
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!(
            "=?UTF-8?B?{}?=",
            crate::net::base64(&clean.as_bytes()[start..end])
        ));
        start = end;
    }
    words.join("\r\n ")
}

/// Quoted-printable (RFC 2045 6.7) of UTF-8 text: line breaks become CRLF, lines are at
/// most 76 characters (soft breaks `=`), `=`, control and non-ASCII bytes are `=XX`,
/// and so are a space or tab at the end of a line.
pub(crate) fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 2);
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line).as_bytes();
        let mut col = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal = match b {
                b' ' | b'\t' => !last,
                b'=' => false,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            if literal {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("={b:02X}"));
            }
            col += width;
        }
        out.push_str("\r\n");
    }
    out
}

/// The message as sent after `DATA`: every line starting with `.` gets another `.`
/// (RFC 5321 4.5.2), then the ending `.` line.
pub(crate) fn dot_stuffed(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive('\n') {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp_decode(s: &str) -> String {
        let mut out = Vec::new();
        let b = s.replace("=\r\n", "").into_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                out.push(
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
                );
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap().replace("\r\n", "\n")
    }

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        let text = format!("Größe = 3 \t\n.dot line\n{}\nend ", "x".repeat(200) + "ü");
        let qp = quoted_printable(&text);
        assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
        assert!(qp.is_ascii());
        assert!(qp.contains("Gr=C3=B6=C3=9Fe =3D 3 =09\r\n"), "{qp}");
        assert!(qp.ends_with("end=20\r\n"), "{qp}");
        assert_eq!(qp_decode(&qp), format!("{text}\n"));
    }

    #[test]
    fn subjects_are_encoded_only_when_needed() {
        assert_eq!(
            encode_subject("virus on pc1\r\nBcc: x"),
            "virus on pc1  Bcc: x"
        );
        let s = "Virus gefunden auf Rechner „pc1“: Größe ".repeat(4);
        let enc = encode_subject(&s);
        for word in enc.split("\r\n ") {
            assert!(
                word.starts_with("=?UTF-8?B?") && word.ends_with("?=") && word.len() <= 75,
                "{word}"
            );
        }
        assert!(enc.is_ascii());
    }

    #[test]
    fn data_is_dot_stuffed_and_terminated() {
        assert_eq!(
            dot_stuffed("a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        let m = compose(
            "w@example.org",
            &["a@x.example".into(), "b@y.example".into()],
            "s",
            "body",
        );
        assert!(
            m.contains("To: <a@x.example>,\r\n <b@y.example>\r\n"),
            "{m}"
        );
        assert!(m.contains("@example.org>\r\n") && !m.contains("\r\nDate: "));
        assert!(m.starts_with("Date: "));
    }
}
