//! The console's view of HTTP, independent of any server: a [`Request`] (method, path,
//! query, the few headers it reads, the form body) in, a [`Response`] (status, headers,
//! body) out. The agent's blocking server (`serve.rs`) and the fleet server's hyper
//! service both translate to and from these, so every handler is written once.

use std::collections::HashMap;

use watchpost_fleet_protocol::{MAX_CONFIG_BYTES, MAX_FILES_BYTES};

/// Largest request body the console reads (a form: an acknowledgement comment with up to
/// a page of selected event ids).
pub const MAX_BODY: usize = 64 << 10;

/// Largest body of a publication on the fleet console (`groups/NAME/publish`,
/// `groups/NAME/files`) from a signed session: what a group version may hold, as the
/// CLI and the agents take it (`group.toml` up to [`MAX_CONFIG_BYTES`], files up to
/// [`MAX_FILES_BYTES`] together), form-encoded at its worst (three bytes for every byte),
/// and the form's other fields. The version itself is checked against those limits.
pub const MAX_PUBLISH_BODY: usize = 3 * (MAX_CONFIG_BYTES + MAX_FILES_BYTES) + MAX_BODY;

/// A request, as the console needs it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, percent-decoding not applied (`/console/events`).
    pub path: String,
    /// The query string after `?` (raw).
    pub query: String,
    /// The `Cookie` header.
    pub cookie: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Origin` header, when sent.
    pub origin: Option<String>,
    /// The `Host` header, when sent.
    pub host: Option<String>,
    /// The peer's address (rate limits and the audit log).
    pub peer: String,
    /// The body (at most `Console::body_limit`; the server refuses larger ones before).
    pub body: Vec<u8>,
}

impl Request {
    /// A `GET` of `target` (`/console/events?q=…`), for tests and the servers.
    pub fn get(target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            peer: "127.0.0.1".into(),
            ..Request::default()
        }
    }

    /// The query string's parameters.
    pub fn params(&self) -> Params {
        Params::parse(&self.query)
    }

    /// The form body's parameters (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> Params {
        Params::parse(&String::from_utf8_lossy(&self.body))
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookie.as_deref()?.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }
}

/// Decoded `name=value` pairs of a query string or form, in order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `a=1&b=x+y` (`+` is a space, `%XX` a byte; invalid UTF-8 is replaced).
    pub fn parse(text: &str) -> Params {
        Params(
            text.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decoding of a form value (`+` as space).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encoding for a query-string value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (name, value), security headers included.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The Content-Security-Policy of every page: nothing but this origin's style sheet and
/// images drawn inline as SVG; no script at all, no frames, forms only to this origin.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl Response {
    /// A response with the console's security headers.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                ("Content-Security-Policy".into(), CSP.into()),
                ("X-Content-Type-Options".into(), "nosniff".into()),
                ("X-Frame-Options".into(), "DENY".into()),
                ("Referrer-Policy".into(), "same-origin".into()),
                ("Cache-Control".into(), "no-store".into()),
            ],
            body,
        }
    }

    /// An HTML page.
    pub fn html(status: u16, markup: maud::Markup) -> Response {
        Response::new(
            status,
            "text/html; charset=utf-8",
            markup.into_string().into_bytes(),
        )
    }

    /// A `303 See Other` to `location`.
    pub fn redirect(location: &str) -> Response {
        let mut r = Response::new(303, "text/plain; charset=utf-8", Vec::new());
        r.headers.push(("Location".into(), location.into()));
        r
    }

    /// Adds a header.
    pub fn with(mut self, name: &str, value: String) -> Response {
        self.headers.push((name.into(), value));
        self
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The reason phrase of the status.
    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            303 => "See Other",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Payload Too Large",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        }
    }
}

/// Query parameters into a map (last one wins), for templates that rebuild links.
pub fn to_map(p: &Params) -> HashMap<String, String> {
    p.0.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_encode() {
        let p = Params::parse("q=isanomaly%3Atrue+host%3Apc1&id=1&id=2&bad=%ZZ%4");
        assert_eq!(p.get("q"), Some("isanomaly:true host:pc1"));
        assert_eq!(p.all("id").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(p.get("bad"), Some("%ZZ%4"));
        assert_eq!(decode(&encode("a b&c=\"<ü>")), "a b&c=\"<ü>");
        let r = Request {
            cookie: Some("a=1; wp_session=xyz".into()),
            ..Request::default()
        };
        assert_eq!(r.cookie("wp_session"), Some("xyz"));
        assert_eq!(r.cookie("b"), None);
    }
}
