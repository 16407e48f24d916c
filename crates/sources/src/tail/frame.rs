//! Cutting bytes into records: line search (UTF-8/bytes and UTF-16) and text encodings
//! (binary records are cut by a [`FrameFn`](crate::framer::FrameFn)).

use memchr::{memchr, memchr_iter, memrchr};

/// How a file's text is stored, decided from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextEnc {
    /// UTF-8 or any byte encoding: bytes pass as they are.
    Bytes,
    /// UTF-16 little endian: lines are transcoded to UTF-8.
    Utf16Le,
    /// UTF-16 big endian: lines are transcoded to UTF-8.
    Utf16Be,
}

impl TextEnc {
    /// Bytes per code unit.
    pub(crate) fn unit(self) -> usize {
        match self {
            TextEnc::Bytes => 1,
            TextEnc::Utf16Le | TextEnc::Utf16Be => 2,
        }
    }
}

/// Decides the encoding from the first bytes of a file: `(encoding, BOM length)`, or `None`
/// while too few bytes exist to tell. `forced` is the configured encoding (`None` = auto).
pub(crate) fn detect(
    head: &[u8],
    forced: Option<TextEnc>,
    whole_file: bool,
) -> Option<(TextEnc, usize)> {
    const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
    let bom = |enc: TextEnc| -> Option<(TextEnc, usize)> {
        let mark: &[u8] = match enc {
            TextEnc::Bytes => UTF8_BOM,
            TextEnc::Utf16Le => b"\xFF\xFE",
            TextEnc::Utf16Be => b"\xFE\xFF",
        };
        if head.starts_with(mark) {
            Some((enc, mark.len()))
        } else if mark.starts_with(head) && !whole_file {
            None
        } else {
            Some((enc, 0))
        }
    };
    match forced {
        Some(enc) => bom(enc),
        None => {
            for enc in [TextEnc::Utf16Le, TextEnc::Utf16Be, TextEnc::Bytes] {
                match bom(enc)? {
                    (found, n) if n > 0 => return Some((found, n)),
                    _ => {}
                }
            }
            Some((TextEnc::Bytes, 0))
        }
    }
}

/// Index of the first line feed in `data` (for UTF-16, of the first byte of the LF code unit;
/// `data` starts at a code-unit boundary).
pub(crate) fn find_lf(data: &[u8], enc: TextEnc) -> Option<usize> {
    match enc {
        TextEnc::Bytes => memchr(b'\n', data),
        TextEnc::Utf16Le => {
            memchr_iter(b'\n', data).find(|&i| i % 2 == 0 && data.get(i + 1) == Some(&0))
        }
        TextEnc::Utf16Be => memchr_iter(b'\n', data)
            .find(|&i| i % 2 == 1 && data[i - 1] == 0)
            .map(|i| i - 1),
    }
}

/// Offset just after the last line feed in `data`, if any (`data` starts at a code-unit boundary).
pub(crate) fn after_last_lf(data: &[u8], enc: TextEnc) -> Option<usize> {
    match enc {
        TextEnc::Bytes => memrchr(b'\n', data).map(|i| i + 1),
        _ => {
            let units = data.len() / 2;
            (0..units)
                .rev()
                .find(|&u| find_lf(&data[u * 2..u * 2 + 2], enc).is_some())
                .map(|u| u * 2 + 2)
        }
    }
}

/// The record for a line without its terminator: CR stripped, UTF-16 transcoded into `scratch`.
pub(crate) fn line_bytes<'a>(line: &'a [u8], enc: TextEnc, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let text = match enc {
        TextEnc::Bytes => line,
        TextEnc::Utf16Le | TextEnc::Utf16Be => {
            transcode_utf16(line, enc == TextEnc::Utf16Be, scratch);
            scratch.as_slice()
        }
    };
    text.strip_suffix(b"\r").unwrap_or(text)
}

/// UTF-16 code units to UTF-8 (unpaired surrogates become U+FFFD; an odd last byte is dropped).
fn transcode_utf16(bytes: &[u8], big_endian: bool, out: &mut Vec<u8>) {
    out.clear();
    let units = bytes.chunks_exact(2).map(|p| {
        if big_endian {
            u16::from_be_bytes([p[0], p[1]])
        } else {
            u16::from_le_bytes([p[0], p[1]])
        }
    });
    let mut tmp = [0u8; 4];
    for c in char::decode_utf16(units) {
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn detects_boms_and_waits_for_short_heads() {
        assert_eq!(
            detect(b"\xFF\xFEa\0", None, false),
            Some((TextEnc::Utf16Le, 2))
        );
        assert_eq!(
            detect(b"\xFE\xFF\0a", None, false),
            Some((TextEnc::Utf16Be, 2))
        );
        assert_eq!(
            detect(b"\xEF\xBB\xBFab", None, false),
            Some((TextEnc::Bytes, 3))
        );
        assert_eq!(detect(b"\xFF", None, false), None);
        assert_eq!(detect(b"\xFF", None, true), Some((TextEnc::Bytes, 0)));
        assert_eq!(detect(b"abc", None, false), Some((TextEnc::Bytes, 0)));
        assert_eq!(
            detect(b"a\0b\0", Some(TextEnc::Utf16Le), false),
            Some((TextEnc::Utf16Le, 0))
        );
    }

    #[test]
    fn utf16_lines_are_found_on_unit_boundaries() {
        // U+0A41 has 0x0A as its low byte: not a line feed.
        let data = utf16le("\u{0A41}x\r\nnext");
        let i = find_lf(&data, TextEnc::Utf16Le).unwrap();
        assert_eq!(i, 6);
        let mut scratch = Vec::new();
        assert_eq!(
            line_bytes(&data[..i], TextEnc::Utf16Le, &mut scratch),
            "\u{0A41}x".as_bytes()
        );
        assert_eq!(after_last_lf(&data, TextEnc::Utf16Le), Some(8));
        let be: Vec<u8> = "ab\ncd"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        assert_eq!(find_lf(&be, TextEnc::Utf16Be), Some(4));
    }
}
