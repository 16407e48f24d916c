//! Malformed input: truncated lines, bad times, random bytes, huge fields. Every parser
//! returns a `ParseError` whose column lies inside the record (or at its end), and never
//! panics; the binary-log framing always makes progress.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use watchpost_sources::sep::{Frame, frame};
use watchpost_sources::{Format, ParseCtx, ParseError, format};

fn fixtures(sub: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data")).join(sub)
}

fn ctx() -> ParseCtx {
    let mut c = ParseCtx::new("fuzz", "localbox");
    c.tz = TimeZone::UTC;
    c
}

/// xorshift64*: a small deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|_| {
                if alphabet.is_empty() {
                    self.next() as u8
                } else {
                    alphabet[self.below(alphabet.len())]
                }
            })
            .collect()
    }
}

fn check(format: Format, record: &[u8]) -> Result<(), ParseError> {
    let parser = format.parser();
    match parser.parse(&ctx(), record) {
        Ok(ev) => {
            let _ = ev.to_json();
            Ok(())
        }
        Err(e) => {
            assert!(
                e.column <= record.len(),
                "{}: column {} beyond {} bytes: {e}",
                format.name(),
                e.column,
                record.len()
            );
            Err(e)
        }
    }
}

fn av_line() -> Vec<u8> {
    let bytes = std::fs::read(fixtures("sep/client-av/05292019.Log")).unwrap();
    let line = bytes
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"31041D081739,5,"))
        .unwrap();
    line.strip_suffix(b"\r").unwrap_or(line).to_vec()
}

#[test]
fn truncated_av_lines_are_errors() {
    let line = av_line();
    let fields_at: Vec<usize> = line
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b',')
        .map(|(i, _)| i)
        .collect();
    // Cut anywhere before the 39th field starts: an error, never a panic.
    for cut in 0..=fields_at[37] {
        let e = check(Format::SepAvLog, &line[..cut]).expect_err("truncated line must fail");
        assert!(!e.message.is_empty());
    }
    // Later cuts may still be a (shorter) valid line; they must not panic.
    for cut in fields_at[37] + 1..line.len() {
        let _ = check(Format::SepAvLog, &line[..cut]);
    }
    assert!(check(Format::SepAvLog, &line).is_ok());
}

#[test]
fn bad_av_times_point_at_the_octet() {
    let line = av_line();
    let cases: [(&[u8], usize); 6] = [
        (b"31 41D081739", 2),
        (b"310C1D081739", 2),
        (b"3104001D1739", 4),
        (b"31041D181739", 6),
        (b"31041D083C39", 8),
        (b"31041D08173C", 10),
    ];
    for (time, col) in cases {
        let mut bad = time.to_vec();
        bad.extend_from_slice(&line[12..]);
        let e = check(Format::SepAvLog, &bad).expect_err("bad time");
        assert_eq!(e.column, col, "{}: {e}", String::from_utf8_lossy(time));
    }
    let mut short = b"31041D0817".to_vec();
    short.extend_from_slice(&line[12..]);
    assert_eq!(check(Format::SepAvLog, &short).unwrap_err().column, 0);
}

#[test]
fn huge_fields_and_records_are_errors() {
    let line = av_line();
    let comma = line.iter().position(|&b| b == b',').unwrap();
    let mut huge = line[..comma + 1].to_vec();
    huge.extend(std::iter::repeat_n(b'7', 70_000));
    huge.extend_from_slice(&line[comma + 2..]);
    let e = check(Format::SepAvLog, &huge).unwrap_err();
    assert_eq!(e.column, comma + 1, "{e}");
    let giant = vec![b'a'; (1 << 20) + 1];
    for f in Format::ALL {
        let e = check(f, &giant).expect_err("over the record limit");
        assert!(e.message.contains("limit"), "{}: {e}", f.name());
    }
    // A huge value in a SEPM line is still one field; a 1 MiB JSON string is fine too.
    let mut sepm = b"Site: S,Server: x,".to_vec();
    sepm.extend(std::iter::repeat_n(b'x', 60_000));
    assert!(check(Format::SepManagerSyslog, &sepm).is_ok());
}

#[test]
fn unterminated_quotes_and_garbage() {
    let line = av_line();
    let mut open = line[..200].to_vec();
    open.extend_from_slice(b",\"never closed");
    assert_eq!(check(Format::SepAvLog, &open).unwrap_err().column, 201);
    let e = check(
        Format::SepManagerSyslog,
        b"<54>Jun 7 09:16:10 S SymantecServer: h,\"Event Description: x",
    )
    .unwrap_err();
    assert_eq!(e.column, 39);
    assert!(
        check(
            Format::SepManagerSyslog,
            b"<54>Jun 7 09:16:10 S SymantecServer: "
        )
        .is_err()
    );
    assert!(check(Format::SepManagerSyslog, b"just some words").is_err());
    assert!(check(Format::SepManagerSyslog, b"").is_err());
    assert!(check(Format::JsonLines, b"{\"a\": tru").is_err());
    assert!(check(Format::SepSecurityLog, b"00000290\t01d50b296ed97e44").is_err());
    assert!(
        check(
            Format::SepSecurityLog,
            b"00000001\t00080000\t00000000\t00000005\t00000000\t0000000000000005\t0000000e\r\n"
        )
        .is_err()
    );
}

/// Random byte strings, random printable text, and mutated fixture records through every
/// parser.
#[test]
fn random_input_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabets: [&[u8]; 4] = [
        b"",
        b"0123456789abcdefABCDEF,\t\r\n\"' :",
        b"{}[]\":,0123456789truefalsenull.-e\\u",
        b"",
    ];
    let av = av_line();
    let sepm = std::fs::read(fixtures("sep/syslog/elastic/symantec_endpoint.log")).unwrap();
    let seclog = std::fs::read(fixtures("sep/client-binary/seclog3.log")).unwrap();
    let seeds: [&[u8]; 3] = [
        &av,
        &sepm[..sepm.iter().position(|&b| b == b'\n').unwrap()],
        &seclog[72..72 + 656],
    ];
    for round in 0..4_000 {
        let input = if round % 2 == 0 {
            let alphabet = alphabets[round / 2 % alphabets.len()];
            let len = rng.below(if round % 10 == 0 { 5_000 } else { 300 });
            rng.bytes(len, alphabet)
        } else {
            let mut v = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(v.len());
                match rng.below(3) {
                    0 => v[i] = rng.next() as u8,
                    1 => {
                        v.truncate(i);
                    }
                    _ => v.insert(i, b",\t\"'\r\n:"[rng.below(7)]),
                }
                if v.is_empty() {
                    break;
                }
            }
            v
        };
        for f in Format::ALL {
            let _ = check(f, &input);
        }
        if round % 2 == 0 {
            // Random bytes are never a valid AV line or binary record.
            assert!(
                check(Format::SepAvLog, &input).is_err()
                    || input.len() > 12 && input[..12].iter().all(u8::is_ascii_hexdigit)
            );
        }
    }
}

/// `frame` always consumes within the buffer, and `parse_file` walks damaged files.
#[test]
fn framing_always_progresses() {
    let mut rng = Rng(42);
    let tralog = std::fs::read(fixtures("sep/client-binary/tralog.log")).unwrap();
    for round in 0..2_000 {
        let mut buf = if round % 2 == 0 {
            let len = rng.below(600);
            rng.bytes(len, b"0123456789abcdef\t\r\n\0x")
        } else {
            let start = rng.below(tralog.len());
            tralog[start..(start + rng.below(2_000)).min(tralog.len())].to_vec()
        };
        if round % 3 == 0 && !buf.is_empty() {
            let i = rng.below(buf.len());
            buf[i] = rng.next() as u8;
        }
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            match frame(rest, pos == 0, true) {
                Frame::Header(n) | Frame::Record(n) | Frame::Skip(n) => {
                    assert!(
                        n > 0 && n <= rest.len(),
                        "frame of {n} in {} bytes",
                        rest.len()
                    );
                    pos += n;
                }
                Frame::NeedMore => break,
            }
        }
        for f in [Format::SepTrafficLog, Format::SepSystemLog] {
            let (events, errors) = format::parse_file(f, &ctx(), &buf);
            for (off, e) in &errors {
                assert!(*off as usize <= buf.len(), "{e}");
            }
            let _ = events;
        }
    }
    // A damaged copy of tralog (the 5th record's start overwritten): the records after the
    // damage are found again.
    let mut damaged = tralog.clone();
    let at = 72 + 4 * 374;
    assert!(damaged[at..].starts_with(b"00000176\t"));
    damaged[at..at + 40].fill(b'#');
    let (events, errors) = format::parse_file(Format::SepTrafficLog, &ctx(), &damaged);
    assert!(events.len() >= 344, "{} events", events.len());
    assert!(!errors.is_empty());
}
