//! A small XML tokenizer for Windows event XML (EVTX records, `EvtRender` output).
//!
//! Event XML is machine-written, small and flat, and read once per event on the hot path
//! of the EVTX reader and the live Event Log source; a general parser spent as long on it
//! as the `evtx` crate spends rendering it. This scanner hands out element names,
//! attributes and text as byte ranges of the document (nothing is copied or unescaped
//! unless asked), checks that end tags match their start tags, and skips comments,
//! processing instructions and `<!DOCTYPE …>`. No DTD, no external entities: only the five
//! predefined entities and numeric character references are understood
//! ([`unescape`]). Unclosed elements at the end of the document are tolerated (a truncated
//! record still yields what it has); a mismatched end tag is an error.

use memchr::{memchr, memmem};

use crate::parse::ParseError;

/// One attribute: its local name and the raw (still escaped) value's byte range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'x> {
    pub name: &'x [u8],
    pub value: (usize, usize),
}

/// What the scanner found next.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tok<'x> {
    /// `<name …>` (or `<name …/>` when `empty`); its attributes are in the scanner's
    /// attribute buffer until the next call.
    Start { name: &'x [u8], empty: bool },
    /// `</name>`.
    End { name: &'x [u8] },
    /// Character data between tags: a raw range that may hold references.
    Text(usize, usize),
    /// The content of `<![CDATA[…]]>`: literal text.
    CData(usize, usize),
}

/// The tokenizer's state over one document.
pub(crate) struct Scanner<'x> {
    doc: &'x [u8],
    pos: usize,
    open: Vec<&'x [u8]>,
    /// Attributes of the last [`Tok::Start`].
    pub attrs: Vec<Attr<'x>>,
}

/// Deepest nesting accepted (event XML is a handful of levels deep).
const MAX_DEPTH: usize = 64;

impl<'x> Scanner<'x> {
    pub(crate) fn new(doc: &'x str) -> Scanner<'x> {
        Scanner {
            doc: doc.as_bytes(),
            pos: 0,
            open: Vec::with_capacity(8),
            attrs: Vec::with_capacity(4),
        }
    }

    fn err(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(at, message)
    }

    /// The next token, `None` at the end of the document.
    pub(crate) fn next_tok(&mut self) -> Result<Option<Tok<'x>>, ParseError> {
        let doc = self.doc;
        if self.pos >= doc.len() {
            return Ok(None);
        }
        if doc[self.pos] != b'<' {
            let end = memchr(b'<', &doc[self.pos..]).map_or(doc.len(), |i| self.pos + i);
            let start = self.pos;
            self.pos = end;
            return Ok(Some(Tok::Text(start, end)));
        }
        let lt = self.pos;
        match doc.get(lt + 1) {
            Some(b'/') => {
                let close = memchr(b'>', &doc[lt..])
                    .map(|i| lt + i)
                    .ok_or_else(|| self.err(lt, "bad event XML: end tag without `>`"))?;
                let name = trim(&doc[lt + 2..close]);
                self.pos = close + 1;
                match self.open.pop() {
                    Some(open) if open == name => Ok(Some(Tok::End { name: local(name) })),
                    Some(open) => Err(self.err(
                        lt,
                        format!(
                            "bad event XML: expected `</{}>`, found `</{}>`",
                            String::from_utf8_lossy(open),
                            String::from_utf8_lossy(name)
                        ),
                    )),
                    None => Err(self.err(
                        lt,
                        format!(
                            "bad event XML: `</{}>` closes nothing",
                            String::from_utf8_lossy(name)
                        ),
                    )),
                }
            }
            Some(b'?') => {
                self.pos = find(doc, lt, b"?>")
                    .ok_or_else(|| self.err(lt, "bad event XML: unclosed `<?`"))?
                    + 2;
                self.next_tok()
            }
            Some(b'!') => {
                let rest = &doc[lt..];
                if rest.starts_with(b"<!--") {
                    self.pos = find(doc, lt + 4, b"-->")
                        .ok_or_else(|| self.err(lt, "bad event XML: unclosed comment"))?
                        + 3;
                    self.next_tok()
                } else if rest.starts_with(b"<![CDATA[") {
                    let start = lt + 9;
                    let end = find(doc, start, b"]]>")
                        .ok_or_else(|| self.err(lt, "bad event XML: unclosed CDATA section"))?;
                    self.pos = end + 3;
                    Ok(Some(Tok::CData(start, end)))
                } else {
                    // <!DOCTYPE …> (no internal subset in event XML).
                    self.pos = memchr(b'>', rest)
                        .map(|i| lt + i + 1)
                        .ok_or_else(|| self.err(lt, "bad event XML: unclosed `<!`"))?;
                    self.next_tok()
                }
            }
            Some(_) => self.start_tag(lt).map(Some),
            None => Err(self.err(lt, "bad event XML: `<` at the end")),
        }
    }

    fn start_tag(&mut self, lt: usize) -> Result<Tok<'x>, ParseError> {
        let doc = self.doc;
        self.attrs.clear();
        let mut i = lt + 1;
        let name_start = i;
        while i < doc.len() && !is_space(doc[i]) && doc[i] != b'>' && doc[i] != b'/' {
            i += 1;
        }
        let name = &doc[name_start..i];
        if name.is_empty() {
            return Err(self.err(lt, "bad event XML: `<` without an element name"));
        }
        loop {
            while i < doc.len() && is_space(doc[i]) {
                i += 1;
            }
            match doc.get(i) {
                None => return Err(self.err(lt, "bad event XML: unclosed start tag")),
                Some(b'>') => {
                    self.pos = i + 1;
                    if self.open.len() >= MAX_DEPTH {
                        return Err(self.err(lt, "bad event XML: nested too deep"));
                    }
                    self.open.push(name);
                    return Ok(Tok::Start {
                        name: local(name),
                        empty: false,
                    });
                }
                Some(b'/') => {
                    if doc.get(i + 1) != Some(&b'>') {
                        return Err(self.err(i, "bad event XML: `/` not followed by `>`"));
                    }
                    self.pos = i + 2;
                    return Ok(Tok::Start {
                        name: local(name),
                        empty: true,
                    });
                }
                Some(_) => {
                    let an_start = i;
                    while i < doc.len() && doc[i] != b'=' && !is_space(doc[i]) && doc[i] != b'>' {
                        i += 1;
                    }
                    let an = &doc[an_start..i];
                    while i < doc.len() && is_space(doc[i]) {
                        i += 1;
                    }
                    if doc.get(i) != Some(&b'=') {
                        return Err(self.err(
                            an_start,
                            format!(
                                "bad event XML: attribute `{}` without a value",
                                String::from_utf8_lossy(an)
                            ),
                        ));
                    }
                    i += 1;
                    while i < doc.len() && is_space(doc[i]) {
                        i += 1;
                    }
                    let quote = match doc.get(i) {
                        Some(&q @ (b'"' | b'\'')) => q,
                        _ => return Err(self.err(i, "bad event XML: unquoted attribute value")),
                    };
                    let v_start = i + 1;
                    let v_end = memchr(quote, &doc[v_start..])
                        .map(|k| v_start + k)
                        .ok_or_else(|| self.err(i, "bad event XML: unclosed attribute value"))?;
                    self.attrs.push(Attr {
                        name: local(an),
                        value: (v_start, v_end),
                    });
                    i = v_end + 1;
                }
            }
        }
    }
}

fn find(doc: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memmem::find(&doc[from..], needle).map(|i| from + i)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s
        && is_space(*last)
    {
        s = rest;
    }
    s
}

/// The part after `prefix:`.
fn local(name: &[u8]) -> &[u8] {
    match memchr(b':', name) {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Whether the raw text needs [`unescape`].
pub(crate) fn has_refs(raw: &[u8]) -> bool {
    memchr(b'&', raw).is_some()
}

/// Replaces the predefined entities and numeric character references in `raw` (UTF-8
/// bytes of the document); `at` is `raw`'s offset for the error.
pub(crate) fn unescape(raw: &str, at: usize) -> Result<String, ParseError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = memchr(b';', after.as_bytes())
            .filter(|&i| i <= 10)
            .ok_or_else(|| ParseError::new(at, "bad XML text: `&` without `;`"))?;
        let name = &after[..semi];
        let c = entity(name)
            .ok_or_else(|| ParseError::new(at, format!("unknown XML entity &{name};")))?;
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The character of an XML entity reference (`amp`, `#60`, `#x3C`).
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(doc: &str) -> Result<Vec<String>, ParseError> {
        let mut s = Scanner::new(doc);
        let mut out = Vec::new();
        while let Some(t) = s.next_tok()? {
            out.push(match t {
                Tok::Start { name, empty } => {
                    let attrs: Vec<String> = s
                        .attrs
                        .iter()
                        .map(|a| {
                            format!(
                                "{}={}",
                                String::from_utf8_lossy(a.name),
                                &doc[a.value.0..a.value.1]
                            )
                        })
                        .collect();
                    format!(
                        "<{}{}{}>",
                        String::from_utf8_lossy(name),
                        attrs.iter().map(|a| format!(" {a}")).collect::<String>(),
                        if empty { "/" } else { "" }
                    )
                }
                Tok::End { name } => format!("</{}>", String::from_utf8_lossy(name)),
                Tok::Text(a, b) => format!("T({})", &doc[a..b]),
                Tok::CData(a, b) => format!("C({})", &doc[a..b]),
            });
        }
        Ok(out)
    }

    #[test]
    fn tokens_of_event_xml() {
        let doc = "<?xml version=\"1.0\"?>\r\n<!-- c --><e:Event xmlns:e='x'><System><Provider Name=\"A &amp; B\" Guid = '{1}' /><EventID>4624</EventID></System><D><![CDATA[<x>]]></D></e:Event>";
        assert_eq!(
            toks(doc).unwrap(),
            [
                "T(\r\n)",
                "<Event e=x>",
                "<System>",
                "<Provider Name=A &amp; B Guid={1}/>",
                "<EventID>",
                "T(4624)",
                "</EventID>",
                "</System>",
                "<D>",
                "C(<x>)",
                "</D>",
                "</Event>"
            ]
        );
    }

    #[test]
    fn broken_documents_are_errors_with_places() {
        for (doc, what) in [
            ("<a><b></c></a>", "expected `</b>`"),
            ("</a>", "closes nothing"),
            ("<a", "unclosed start tag"),
            ("<a b>", "without a value"),
            ("<a b=c>", "unquoted"),
            ("<a b='c>", "unclosed attribute"),
            ("<!-- x", "unclosed comment"),
            ("<a/ >", "not followed by"),
            ("<", "at the end"),
            ("< a>", "without an element name"),
        ] {
            let e = toks(doc).unwrap_err();
            assert!(e.message.contains(what), "{doc}: {e}");
        }
        // Truncated at the end: what was read stands.
        assert_eq!(toks("<a><b>x").unwrap(), ["<a>", "<b>", "T(x)"]);
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(toks(&deep).unwrap_err().message.contains("too deep"));
    }

    #[test]
    fn references_are_unescaped() {
        assert_eq!(
            unescape("a &lt;b&gt; &amp;&quot;&apos; &#65;&#x42;", 0).unwrap(),
            "a <b> &\"' AB"
        );
        assert!(
            unescape("&nope;", 3)
                .unwrap_err()
                .message
                .contains("&nope;")
        );
        assert!(unescape("a & b", 0).is_err());
        assert!(unescape("&#xD800;", 0).is_err());
        assert!(!has_refs(b"plain") && has_refs(b"a&amp;"));
    }
}
