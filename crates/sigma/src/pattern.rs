//! Value patterns: a Sigma value (with `*`/`?` wildcards and `\` escapes) after its
//! modifiers, compiled into the cheapest test that decides it.

use std::sync::OnceLock;

use memchr::memmem;
use regex::Regex;

/// A regular expression checked when the rule loads and compiled at its first use: most
/// of a large rule set's regexes never meet an event of their rule's channel in a hunt,
/// and compiling them all took a third of loading thousands of rules. The syntax is
/// checked at load (`regex-syntax`, the parser `regex` itself uses), so a bad pattern
/// is still a load error; a pattern that parses but exceeds the compiled-size limit
/// matches nothing.
#[derive(Debug)]
pub(crate) struct LazyRegex {
    src: Box<str>,
    re: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    /// Checks `src`'s syntax; the message is the parser's last line (what is wrong).
    pub(crate) fn new(src: String) -> Result<LazyRegex, String> {
        regex_syntax::Parser::new()
            .parse(&src)
            .map_err(|e| e.to_string().lines().last().unwrap_or("").to_string())?;
        Ok(LazyRegex {
            src: src.into(),
            re: OnceLock::new(),
        })
    }

    /// Whether `s` matches (compiling the regex the first time).
    pub(crate) fn is_match(&self, s: &str) -> bool {
        self.re
            .get_or_init(|| Regex::new(&self.src).ok())
            .as_ref()
            .is_some_and(|r| r.is_match(s))
    }
}

/// One piece of a value: literal bytes or a wildcard.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Lit(Vec<u8>),
    Star,
    Qmark,
}

/// Splits a Sigma string value into literals and wildcards. `\*`, `\?` and `\\` are
/// escapes; a backslash before any other character is kept as written (the spec's rule,
/// so Windows paths need no doubling).
pub(crate) fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() && matches!(b[i + 1], b'*' | b'?' | b'\\') => {
                lit.push(b[i + 1]);
                i += 2;
                continue;
            }
            b'*' | b'?' => {
                if !lit.is_empty() {
                    out.push(Tok::Lit(std::mem::take(&mut lit)));
                }
                out.push(if b[i] == b'*' { Tok::Star } else { Tok::Qmark });
            }
            c => lit.push(c),
        }
        i += 1;
    }
    if !lit.is_empty() {
        out.push(Tok::Lit(lit));
    }
    out
}

/// A plain value without wildcard interpretation (for `re`, `cidr`, numbers).
pub(crate) fn literal(toks: &[Tok]) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    for t in toks {
        match t {
            Tok::Lit(l) => v.extend_from_slice(l),
            _ => return None,
        }
    }
    Some(v)
}

/// A compiled string test.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // the finder stays inline: one less pointer chase per test
pub(crate) enum Pat {
    /// The whole value equals this.
    Exact(Box<str>),
    /// The value starts with this.
    Prefix(Box<str>),
    /// The value ends with this.
    Suffix(Box<str>),
    /// The value contains this.
    Contains(memmem::Finder<'static>),
    /// Any value (a lone `*`).
    Any,
    /// `*` wildcards in the middle: literals in order.
    Glob(Glob),
    /// `?` wildcards: an anchored regex.
    Wild(LazyRegex),
}

/// A value with `*` wildcards between literals (`cmd*/c*whoami*`): an optional anchored
/// prefix and suffix and the literals between them, each found leftmost after the one
/// before. Leftmost matching decides `*`-only patterns exactly, without compiling a regex
/// (most of a rule set's wildcard values never meet an event of their rule's channel,
/// and compiling those that do cost more than evaluating them).
#[derive(Debug)]
pub(crate) struct Glob {
    prefix: Box<str>,
    suffix: Box<str>,
    middle: Box<[memmem::Finder<'static>]>,
    /// The shortest matching value: prefix, suffix and middle literals.
    min: usize,
}

impl Glob {
    fn is_match(&self, s: &str) -> bool {
        let b = s.as_bytes();
        if b.len() < self.min
            || !b.starts_with(self.prefix.as_bytes())
            || !b.ends_with(self.suffix.as_bytes())
        {
            return false;
        }
        let mut hay = &b[self.prefix.len()..b.len() - self.suffix.len()];
        for f in self.middle.iter() {
            match f.find(hay) {
                Some(i) => hay = &hay[i + f.needle().len()..],
                None => return false,
            }
        }
        true
    }

    /// Its longest literal (every match contains it).
    fn literal(&self) -> Option<&str> {
        let mut best: &str = &self.prefix;
        for s in self
            .middle
            .iter()
            .filter_map(|f| std::str::from_utf8(f.needle()).ok())
            .chain(std::iter::once(&*self.suffix))
        {
            if s.len() > best.len() {
                best = s;
            }
        }
        Some(best)
    }
}

impl Pat {
    /// Compiles wildcard tokens; `lower` lowercases the literals (the haystack will be
    /// lowercased too).
    pub(crate) fn compile(toks: &[Tok], lower: bool) -> Result<Pat, String> {
        let lit = |l: &[u8]| -> Result<String, String> {
            let s = String::from_utf8(l.to_vec())
                .map_err(|_| "value is not valid UTF-8 after its modifiers".to_string())?;
            Ok(if lower { fold(&s) } else { s })
        };
        // Merge adjacent stars.
        let mut t: Vec<&Tok> = Vec::with_capacity(toks.len());
        for x in toks {
            if *x == Tok::Star && t.last() == Some(&&Tok::Star) {
                continue;
            }
            t.push(x);
        }
        Ok(match t.as_slice() {
            [] => Pat::Exact("".into()),
            [Tok::Lit(l)] => Pat::Exact(lit(l)?.into()),
            [Tok::Star] => Pat::Any,
            [Tok::Lit(l), Tok::Star] => Pat::Prefix(lit(l)?.into()),
            [Tok::Star, Tok::Lit(l)] => Pat::Suffix(lit(l)?.into()),
            [Tok::Star, Tok::Lit(l), Tok::Star] => {
                Pat::Contains(memmem::Finder::new(lit(l)?.as_bytes()).into_owned())
            }
            _ if !t.contains(&&Tok::Qmark) => {
                let mut parts: Vec<String> = Vec::new();
                for x in &t {
                    if let Tok::Lit(l) = x {
                        parts.push(lit(l)?);
                    }
                }
                let starts = t.first() != Some(&&Tok::Star);
                let ends = t.last() != Some(&&Tok::Star);
                let prefix = if starts {
                    parts.remove(0)
                } else {
                    String::new()
                };
                let suffix = if ends {
                    parts.pop().unwrap_or_default()
                } else {
                    String::new()
                };
                let min =
                    prefix.len() + suffix.len() + parts.iter().map(String::len).sum::<usize>();
                Pat::Glob(Glob {
                    prefix: prefix.into(),
                    suffix: suffix.into(),
                    middle: parts
                        .iter()
                        .map(|p| memmem::Finder::new(p.as_bytes()).into_owned())
                        .collect(),
                    min,
                })
            }
            _ => {
                let mut re = String::from("(?s)^");
                for x in t {
                    match x {
                        Tok::Lit(l) => re.push_str(&regex::escape(&lit(l)?)),
                        Tok::Star => re.push_str(".*"),
                        Tok::Qmark => re.push('.'),
                    }
                }
                re.push('$');
                Pat::Wild(LazyRegex::new(re).map_err(|e| format!("wildcard pattern: {e}"))?)
            }
        })
    }

    /// The pattern of a value without wildcards, as [`Pat::compile`] makes it from its
    /// tokens with a star added in `front` (`contains`, `endswith`) and at the `back`
    /// (`contains`, `startswith`); `lit` is already folded when the test is.
    pub(crate) fn plain(lit: String, front: bool, back: bool) -> Pat {
        match (lit.is_empty(), front, back) {
            (true, false, false) => Pat::Exact("".into()),
            (true, _, _) => Pat::Any,
            (false, false, false) => Pat::Exact(lit.into()),
            (false, false, true) => Pat::Prefix(lit.into()),
            (false, true, false) => Pat::Suffix(lit.into()),
            (false, true, true) => Pat::Contains(memmem::Finder::new(lit.as_bytes()).into_owned()),
        }
    }

    /// A literal every matching value contains (for the needle prefilter).
    pub(crate) fn literal(&self) -> Option<&str> {
        match self {
            Pat::Exact(p) | Pat::Prefix(p) | Pat::Suffix(p) => Some(&**p),
            Pat::Contains(f) => std::str::from_utf8(f.needle()).ok(),
            Pat::Glob(g) => g.literal(),
            Pat::Any | Pat::Wild(_) => None,
        }
        .filter(|l| !l.is_empty())
    }

    /// Whether `s` (already lowercased when the pattern is) matches.
    pub(crate) fn is_match(&self, s: &str) -> bool {
        match self {
            // Windows leaves trailing blanks in some values (4624's `LogonProcessName`
            // is `NtLmSsp `): an exact value matches them too, as in Hayabusa.
            Pat::Exact(p) => {
                s == &**p
                    || (s.len() > p.len()
                        && s.ends_with(|c: char| c.is_ascii_whitespace())
                        && s.trim_end_matches(|c: char| c.is_ascii_whitespace()) == &**p)
            }
            Pat::Prefix(p) => s.starts_with(&**p),
            Pat::Suffix(p) => s.ends_with(&**p),
            Pat::Contains(f) => f.find(s.as_bytes()).is_some(),
            Pat::Any => true,
            Pat::Glob(g) => g.is_match(s),
            Pat::Wild(r) => r.is_match(s),
        }
    }
}

/// Case folding used on both needles and haystacks: ASCII fast path, else Unicode
/// lowercase.
pub(crate) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// Folds `s` into `out` (reusing its allocation).
pub(crate) fn fold_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        out.push_str(s);
        out.make_ascii_lowercase();
    } else {
        for c in s.chars() {
            out.extend(c.to_lowercase());
        }
    }
}

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The three `base64offset` forms of `v`: the value encoded at each byte offset in a
/// longer base64 stream, with the characters that depend on neighbours cut off
/// (pySigma's algorithm).
pub(crate) fn base64_offsets(v: &[u8]) -> Vec<Vec<u8>> {
    let starts = [0usize, 2, 3];
    let ends = [0usize, 3, 2];
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(v);
            let enc = base64(&padded).into_bytes();
            let end = enc.len() - ends[(v.len() + i) % 3];
            enc[starts[i].min(end)..end].to_vec()
        })
        .collect()
}

/// A CIDR network (IPv4 or IPv6).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cidr {
    net: u128,
    mask: u128,
    v4: bool,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s.split_once('/').unwrap_or((s, ""));
        let ip: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("cidr: bad address {s:?}"))?;
        let (bits, v4, n) = match ip {
            std::net::IpAddr::V4(a) => (32u32, true, u32::from(a) as u128),
            std::net::IpAddr::V6(a) => (128, false, u128::from(a)),
        };
        let len: u32 = if len.is_empty() {
            bits
        } else {
            len.trim()
                .parse()
                .ok()
                .filter(|l| *l <= bits)
                .ok_or_else(|| format!("cidr: bad prefix length {s:?}"))?
        };
        let mask = if len == 0 {
            0
        } else {
            (u128::MAX << (bits - len)) & if v4 { u32::MAX as u128 } else { u128::MAX }
        };
        Ok(Cidr {
            net: n & mask,
            mask,
            v4,
        })
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        match s.trim().parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) if self.v4 => {
                (u32::from(a) as u128) & self.mask == self.net
            }
            Ok(std::net::IpAddr::V6(a)) if !self.v4 => u128::from(a) & self.mask == self.net,
            Ok(std::net::IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|v4| (u32::from(v4) as u128) & self.mask == self.net),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_escapes() {
        assert_eq!(
            tokenize(r"a\*b*c?\\d\e"),
            vec![
                Tok::Lit(b"a*b".to_vec()),
                Tok::Star,
                Tok::Lit(b"c".to_vec()),
                Tok::Qmark,
                Tok::Lit(br"\d\e".to_vec())
            ]
        );
    }

    #[test]
    fn shapes() {
        let p = |s: &str| Pat::compile(&tokenize(s), true).unwrap();
        assert!(matches!(p("abc"), Pat::Exact(_)));
        assert!(matches!(p("abc*"), Pat::Prefix(_)));
        assert!(matches!(p("*abc"), Pat::Suffix(_)));
        assert!(matches!(p("**abc*"), Pat::Contains(_)));
        assert!(matches!(p("*"), Pat::Any));
        let g = p("a*b?c");
        assert!(matches!(g, Pat::Wild(_)));
        assert!(g.is_match("axxbyc") && !g.is_match("axxbc"));
        let g = p("a*b*c");
        assert!(matches!(g, Pat::Glob(_)));
        assert!(g.is_match("abc") && g.is_match("axbxxc") && !g.is_match("acb"));
        assert!(!g.is_match("ab") && !g.is_match("xabc"));
        // Prefix and suffix may not overlap.
        let g = p("ab*ba");
        assert!(g.is_match("abba") && g.is_match("abxba") && !g.is_match("aba"));
        let g = p("*x*y*");
        assert!(g.is_match("--x--y--") && g.is_match("xy") && !g.is_match("yx"));
        assert_eq!(p("*/Temp/*.exe").literal(), Some("/temp/"));
        assert!(p("*\\SYSTEM32\\\\*").is_match("c:\\windows\\system32\\cmd.exe"));
        assert!(p("a\\*").is_match("a*") && !p("a\\*").is_match("ab"));
    }

    #[test]
    fn base64_forms() {
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        // pySigma's documented example for `base64offset` of "/c ping".
        let f: Vec<String> = base64_offsets(b"/c ping")
            .into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect();
        assert_eq!(f, ["L2MgcGluZ", "9jIHBpbm", "vYyBwaW5n"]);
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3") && !c.contains("11.0.0.1") && !c.contains("x"));
        let c6 = Cidr::parse("fe80::/10").unwrap();
        assert!(c6.contains("fe80::1") && !c6.contains("::1"));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }
}
