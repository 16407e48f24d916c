//! The small HTTP/1.1 client of the webhook action and of the fleet client (the agent's
//! connection to `watchpost-server`), over [`crate::net::Conn`] (std `TcpStream`, rustls
//! through `tls.rs`): one request per connection (`Connection: close`), or several over
//! one kept open ([`Session`]); the body sent with `Content-Length`, the answer read as
//! status line and headers (each line at most 8 KiB, at most 100 headers) and a body of
//! at most the caller's limit (`Content-Length`, chunked, or until close). Why not
//! `ureq`: see `webhook/mod.rs`.
//!
//! [`Endpoint`], [`send`] and [`Session`] are the public face (blocking, one deadline for
//! the whole exchange); the fleet client uses them.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::control::Control;
use crate::net::{self, Conn};

/// Longest status or header line read.
const MAX_LINE: usize = 8 << 10;
/// Most header lines read.
const MAX_HEADERS: usize = 100;

fn bad(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// Sends the request and reads the final answer: status, reason, and at most
/// `body_limit(status)` bytes of the body (its reading may fail on its own: a failure's
/// body is only for its message).
pub(crate) fn exchange(
    conn: &mut Conn,
    request: &[u8],
    ctl: &Control,
    body_limit: impl Fn(u16) -> usize,
) -> io::Result<(u16, String, io::Result<Vec<u8>>)> {
    exchange_keep(conn, request, ctl, body_limit).map(|(s, r, b, _)| (s, r, b))
}

/// [`exchange`], also saying whether the connection can carry another request: the
/// answer had a `Content-Length`, all of its body was read, and neither side said
/// `Connection: close` (an HTTP/1.0 answer never keeps it).
fn exchange_keep(
    conn: &mut Conn,
    request: &[u8],
    ctl: &Control,
    body_limit: impl Fn(u16) -> usize,
) -> io::Result<(u16, String, io::Result<Vec<u8>>, bool)> {
    conn.write_all(request, ctl)?;
    // 1xx answers (103 Early Hints, an unasked 100 Continue) come before the real one.
    for _ in 0..5 {
        let line = conn.read_line(MAX_LINE, ctl)?;
        let (status, reason) = status_line(&line)?;
        let mut keep = line.starts_with(b"HTTP/1.1 ");
        let mut length = None;
        let mut chunked = false;
        for n in 0.. {
            let line = conn.read_line(MAX_LINE, ctl)?;
            if line.is_empty() {
                break;
            }
            if n >= MAX_HEADERS {
                return Err(bad(format!(
                    "{} sent more than {MAX_HEADERS} headers",
                    conn.peer()
                )));
            }
            let line = String::from_utf8_lossy(&line);
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<u64>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                } else if k.eq_ignore_ascii_case("connection")
                    && v.to_ascii_lowercase().contains("close")
                {
                    keep = false;
                }
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let limit = body_limit(status);
        let body = if limit == 0 {
            Ok(Vec::new())
        } else {
            read_body(conn, length, chunked, limit, ctl)
        };
        let whole = match (&body, length) {
            (Ok(b), Some(n)) => !chunked && b.len() as u64 == n,
            _ => false,
        };
        let keep = keep && whole && !request_closes(request);
        return Ok((status, reason, body, keep));
    }
    Err(bad(format!("{} sent only 1xx answers", conn.peer())))
}

/// `HTTP/1.x 200 OK` → (200, "OK").
pub(crate) fn status_line(line: &[u8]) -> io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(bad(format!(
            "not an HTTP/1.x answer: {:?}",
            text.chars().take(80).collect::<String>()
        )));
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| bad(format!("bad HTTP status `{code}`")))?;
    Ok((status, parts.next().unwrap_or("").trim().to_owned()))
}

/// At most `limit` bytes of the body.
fn read_body(
    conn: &mut Conn,
    length: Option<u64>,
    chunked: bool,
    limit: usize,
    ctl: &Control,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if chunked {
        while out.len() < limit {
            let size_line = conn.read_line(MAX_LINE, ctl)?;
            let size_text = String::from_utf8_lossy(&size_line);
            let hex = size_text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size".into()))?;
            if size == 0 {
                break;
            }
            let mut left = size;
            while left > 0 && out.len() < limit {
                let want = (limit - out.len()).min(left as usize);
                let got = conn.read_some(want, ctl)?;
                if got.is_empty() {
                    return Ok(out);
                }
                left -= got.len() as u64;
                out.extend_from_slice(&got);
            }
            if left > 0 {
                break;
            }
            conn.read_line(MAX_LINE, ctl)?;
        }
    } else {
        let limit = length.map_or(limit, |n| (n as usize).min(limit));
        while out.len() < limit {
            let got = conn.read_some(limit - out.len(), ctl)?;
            if got.is_empty() {
                break;
            }
            out.extend_from_slice(&got);
        }
    }
    Ok(out)
}

/// Where requests go: `https://host:port` (or `http://` on loopback, for tests), with the
/// TLS settings to verify the server.
#[derive(Clone)]
pub struct Endpoint {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    /// Path prefix (without a trailing `/`).
    base: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.origin())
    }
}

impl Endpoint {
    /// From a URL (`https://server.example:8443`, maybe with a path prefix). `ca_file`
    /// names the CAs to trust (PEM), else the system's store. Plain `http://` is accepted
    /// only for a loopback host.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{url}`: the URL must start with `https://`"));
        };
        let end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err("credentials do not belong in the URL".into());
        }
        let (host, port) = net::split_host_port(authority, if https { 443 } else { 80 })?;
        if !https && !net::is_loopback(&host) {
            return Err(format!(
                "`{url}`: plain http:// only to a loopback address (tests); use https://"
            ));
        }
        let base = rest[end..].trim_end_matches('/').to_owned();
        if base
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err(format!("`{url}`: the path cannot hold spaces, `?` or `#`"));
        }
        let tls = if https {
            let config = crate::tls::client_config_for(ca_file)?;
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = ServerName::try_from(bare)
                .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
            Some((config, name))
        } else {
            None
        };
        Ok(Endpoint {
            https,
            host,
            port,
            authority: authority.to_owned(),
            base,
            tls,
        })
    }

    /// `scheme://host:port`, for messages.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority
        )
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Its reason phrase.
    pub reason: String,
    /// The body (at most the limit asked for).
    pub body: Vec<u8>,
}

/// Whether a request's head says `Connection: close`.
fn request_closes(request: &[u8]) -> bool {
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(request.len());
    String::from_utf8_lossy(&request[..head_end])
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
}

/// The bytes of a request: its head (with `Connection: close` unless `keep_alive`) and
/// body.
fn request_bytes(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<Vec<u8>> {
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: watchpost/{}\r\nContent-Length: {}\r\n{}",
        endpoint.base,
        endpoint.authority,
        env!("CARGO_PKG_VERSION"),
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    for (k, v) in headers {
        if v.chars().any(|c| c.is_control()) || k.chars().any(|c| c.is_control() || c == ':') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("header `{k}` holds a control character"),
            ));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    Ok(request)
}

/// A connection to the endpoint, TLS done.
fn open(endpoint: &Endpoint, until: Instant, ctl: &Control) -> io::Result<Conn> {
    let mut conn = Conn::connect(&endpoint.host, endpoint.port, until, ctl)?;
    if let Some((config, name)) = &endpoint.tls {
        conn = conn.start_tls(config.clone(), name.clone(), ctl)?;
    }
    Ok(conn)
}

/// Sends one request (`method`, `path` under the endpoint's prefix, extra header lines,
/// body) and reads the answer, all within `timeout`; at most `max_body` bytes of the
/// answer's body are read.
pub fn send(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> io::Result<Answer> {
    let ctl = Control::default();
    let until = Instant::now() + timeout;
    let request = request_bytes(endpoint, method, path, headers, body, false)?;
    let mut conn = open(endpoint, until, &ctl)?;
    let result = exchange(&mut conn, &request, &ctl, |_| max_body);
    conn.close();
    let (status, reason, body) = result?;
    Ok(Answer {
        status,
        reason,
        body: body?,
    })
}

/// Longest a kept connection is reused after its last answer (servers close idle ones;
/// `watchpost-server` after two minutes).
const REUSE_WITHIN: Duration = Duration::from_secs(50);

/// Requests to one endpoint over one connection kept open between them (HTTP/1.1
/// keep-alive): a client that talks to the same server again and again (the fleet
/// shipper) pays the TCP and TLS handshakes once, not per request.
///
/// A kept connection the server has closed meanwhile shows as the request failing before
/// any answer; the request is then sent once more on a new connection. So use a session
/// only for requests that may arrive twice (the fleet's batches and heartbeats do: the
/// server recognises a batch it has).
pub struct Session {
    endpoint: Endpoint,
    conn: Option<(Conn, Instant)>,
}

impl Session {
    /// A session (no connection until the first request).
    pub fn new(endpoint: Endpoint) -> Session {
        Session {
            endpoint,
            conn: None,
        }
    }

    /// Where it sends.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether a connection is being kept.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// [`send`] over the kept connection (made when there is none).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
        max_body: usize,
    ) -> io::Result<Answer> {
        let ctl = Control::default();
        let until = Instant::now() + timeout;
        let request = request_bytes(&self.endpoint, method, path, headers, body, true)?;
        if let Some((mut conn, at)) = self.conn.take() {
            if at.elapsed() < REUSE_WITHIN {
                conn.set_deadline(until);
                match self.attempt(conn, &request, &ctl, max_body) {
                    Err(e) if dropped(&e) => {}
                    r => return r,
                }
            } else {
                conn.close();
            }
        }
        let conn = open(&self.endpoint, until, &ctl)?;
        self.attempt(conn, &request, &ctl, max_body)
    }

    fn attempt(
        &mut self,
        mut conn: Conn,
        request: &[u8],
        ctl: &Control,
        max_body: usize,
    ) -> io::Result<Answer> {
        match exchange_keep(&mut conn, request, ctl, |_| max_body) {
            Ok((status, reason, body, keep)) => {
                match (&body, keep) {
                    (Ok(_), true) => self.conn = Some((conn, Instant::now())),
                    _ => conn.close(),
                }
                Ok(Answer {
                    status,
                    reason,
                    body: body?,
                })
            }
            Err(e) => {
                conn.close();
                Err(e)
            }
        }
    }

    /// Closes the kept connection.
    pub fn close(&mut self) {
        if let Some((c, _)) = self.conn.take() {
            c.close();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether an error means the connection was gone before the answer began.
fn dropped(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_endpoints() {
        assert!(status_line(b"HTTP/1.1 200 OK").is_ok());
        assert!(status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(status_line(b"HTTP/1.1 2000 OK").is_err());
        let e = Endpoint::parse("http://127.0.0.1:9/fleet/", None).unwrap();
        assert_eq!(e.origin(), "http://127.0.0.1:9");
        assert_eq!(e.base, "/fleet");
        assert!(
            Endpoint::parse("http://server.example/", None)
                .unwrap_err()
                .contains("loopback")
        );
        assert!(Endpoint::parse("ftp://x/", None).is_err());
        assert!(Endpoint::parse("https://u:p@x/", None).is_err());
    }
}
