//! One TCP connection, plain or TLS, for the small protocol clients of the webhook
//! (HTTP/1.1) and email (SMTP) actions.
//!
//! Everything done on a [`Conn`] shares one deadline: the action's `timeout` from the
//! start of the attempt, or the dispatcher's shutdown deadline when that comes first.
//! Before every socket operation the remaining time is set as the socket's read/write
//! timeout, so no single call can wait past the deadline (a TLS record written as
//! several system calls may overrun it by at most one such wait). Reads go through a
//! buffer owned here, so lines (`read_line`) and bodies (`read_some`) are bounded by the
//! caller's limits, never by what the peer sends. Name resolution is the system's
//! (`getaddrinfo`), which has no timeout of its own: a hanging resolver can hold an attempt
//! past its deadline (the connect itself then gets no time and fails).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::Deserialize;
use toml::Spanned;
use watchpost_event::ConfigError;

use crate::control::Control;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 << 10;

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

/// A connection with a deadline and a read buffer.
pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..]`.
    pos: usize,
    until: Instant,
    /// `host:port`, for messages.
    peer: String,
}

/// The deadline of one attempt: `timeout` from now, or shutdown's deadline if sooner.
pub(crate) fn deadline(timeout: Duration, ctl: &Control) -> Instant {
    let own = Instant::now() + timeout;
    match ctl.deadline() {
        Some(d) if d < own => d,
        _ => own,
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {what}"))
}

/// Whether an I/O error is a socket timeout (Unix says `WouldBlock`, Windows `TimedOut`).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Conn {
    /// Resolves `host` and connects to the first address that answers before `until`.
    /// `host` may be an IPv6 address in brackets.
    pub(crate) fn connect(
        host: &str,
        port: u16,
        until: Instant,
        ctl: &Control,
    ) -> io::Result<Conn> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let peer = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let addrs: Vec<SocketAddr> = (bare, port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {bare}: {e}")))?
            .collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{bare} resolves to no address"),
        );
        for addr in addrs {
            let Some(left) = remaining(until, ctl) else {
                return Err(timed_out(&format!("connecting to {peer}")));
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(Conn {
                        stream: Stream::Plain(tcp),
                        buf: Vec::new(),
                        pos: 0,
                        until,
                        peer,
                    });
                }
                Err(e) if is_timeout(&e) => last = timed_out(&format!("connecting to {peer}")),
                Err(e) => last = io::Error::new(e.kind(), format!("cannot connect to {peer}: {e}")),
            }
        }
        Err(last)
    }

    /// A new deadline (a kept connection's next exchange).
    pub(crate) fn set_deadline(&mut self, until: Instant) {
        self.until = until;
    }

    /// `host:port` as connected to.
    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    /// Starts TLS on the connection (implicit TLS right after connecting, or after SMTP's
    /// `STARTTLS`) and completes the handshake, so certificate problems show here.
    /// Refused when the peer already sent bytes that were not read (they would be taken
    /// as coming through TLS: the STARTTLS injection).
    pub(crate) fn start_tls(
        self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        ctl: &Control,
    ) -> io::Result<Conn> {
        let Conn {
            stream,
            buf,
            pos,
            until,
            peer,
        } = self;
        let Stream::Plain(mut tcp) = stream else {
            return Err(io::Error::other("TLS is already on"));
        };
        if pos < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{peer} sent data before the TLS handshake"),
            ));
        }
        let mut tls = ClientConnection::new(config, name)
            .map_err(|e| io::Error::other(format!("TLS setup for {peer}: {e}")))?;
        while tls.is_handshaking() {
            arm(&tcp, until, ctl, "in the TLS handshake")?;
            if let Err(e) = tls.complete_io(&mut tcp) {
                return Err(if is_timeout(&e) {
                    timed_out(&format!("in the TLS handshake with {peer}"))
                } else {
                    io::Error::new(e.kind(), format!("TLS handshake with {peer} failed: {e}"))
                });
            }
        }
        Ok(Conn {
            stream: Stream::Tls(Box::new(StreamOwned::new(tls, tcp))),
            buf: Vec::new(),
            pos: 0,
            until,
            peer,
        })
    }

    /// Writes all of `data` (and flushes TLS records) before the deadline.
    pub(crate) fn write_all(&mut self, data: &[u8], ctl: &Control) -> io::Result<()> {
        for chunk in data.chunks(READ_CHUNK) {
            arm(self.stream.tcp(), self.until, ctl, "sending")?;
            let r = match &mut self.stream {
                Stream::Plain(s) => s.write_all(chunk),
                Stream::Tls(t) => t.write_all(chunk).and_then(|()| t.flush()),
            };
            r.map_err(|e| self.io_error(e, "sending to"))?;
        }
        Ok(())
    }

    /// Reads one line ending in LF (the CR before it, if any, is removed). A line longer
    /// than `max` bytes, or the connection ending first, is an error.
    pub(crate) fn read_line(&mut self, max: usize, ctl: &Control) -> io::Result<Vec<u8>> {
        let mut searched = 0;
        loop {
            let unread = &self.buf[self.pos..];
            if let Some(i) = unread[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                let mut line = unread[..end].to_vec();
                self.pos += end + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            searched = unread.len();
            if searched > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} sent a line longer than {max} bytes", self.peer),
                ));
            }
            if self.fill(ctl)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} closed the connection", self.peer),
                ));
            }
        }
    }

    /// Up to `max` buffered or newly read bytes; empty at the end of the stream.
    pub(crate) fn read_some(&mut self, max: usize, ctl: &Control) -> io::Result<Vec<u8>> {
        if self.pos == self.buf.len() && self.fill(ctl)? == 0 {
            return Ok(Vec::new());
        }
        let n = max.min(self.buf.len() - self.pos);
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// Reads more into the buffer; 0 at the end of the stream.
    fn fill(&mut self, ctl: &Control) -> io::Result<usize> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        arm(self.stream.tcp(), self.until, ctl, "waiting for an answer")?;
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let r = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut self.buf[start..]),
            Stream::Tls(t) => match t.read(&mut self.buf[start..]) {
                // A peer that closes without close_notify: the end, for our purposes
                // (every message read here has its own length or terminator).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        };
        match r {
            Ok(n) => {
                self.buf.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(self.io_error(e, "reading from"))
            }
        }
    }

    fn io_error(&self, e: io::Error, doing: &str) -> io::Error {
        if is_timeout(&e) {
            timed_out(&format!("{doing} {}", self.peer))
        } else {
            io::Error::new(e.kind(), format!("{doing} {}: {e}", self.peer))
        }
    }

    /// Ends the connection politely (TLS close_notify), without waiting for the peer.
    pub(crate) fn close(self) {
        match self.stream {
            Stream::Plain(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Stream::Tls(mut t) => {
                t.conn.send_close_notify();
                let _ = t.sock.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = t.sock.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = t.conn.complete_io(&mut t.sock);
                let _ = t.sock.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Time left before the deadline (or shutdown's), if any.
fn remaining(until: Instant, ctl: &Control) -> Option<Duration> {
    let until = match ctl.deadline() {
        Some(d) if d < until => d,
        _ => until,
    };
    until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Sets the socket's timeouts to the time left; an error when none is.
fn arm(tcp: &TcpStream, until: Instant, ctl: &Control, what: &str) -> io::Result<()> {
    let left = remaining(until, ctl).ok_or_else(|| timed_out(what))?;
    // A zero timeout means "none" to the OS: at least a millisecond.
    let left = left.max(Duration::from_millis(1));
    tcp.set_read_timeout(Some(left))?;
    tcp.set_write_timeout(Some(left))?;
    Ok(())
}

/// Seconds or a duration string (`"10s"`, `"1500ms"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Timeout {
    Secs(u64),
    Text(String),
}

/// Parses a `timeout` value (100 ms to 1 h).
pub(crate) fn timeout(
    v: Option<&Spanned<Timeout>>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    let Some(v) = v else { return default };
    let d = match v.get_ref() {
        Timeout::Secs(s) => Ok(Duration::from_secs(*s)),
        Timeout::Text(t) => watchpost_event::parse_duration(t),
    };
    match d {
        Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => d,
        Ok(_) => {
            errors.push(ConfigError::new(
                v.span(),
                "`timeout` must be between 100ms and 1h",
            ));
            default
        }
        Err(e) => {
            errors.push(ConfigError::new(v.span(), e));
            default
        }
    }
}

/// Standard base64 (RFC 4648, with padding): HTTP basic auth, SMTP AUTH, MIME.
pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `host` (a name or an address, brackets allowed) is this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Splits `host:port` (`[v6]:port`); the port defaults to `default_port`.
pub(crate) fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: `[` without `]`"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{h}` is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{s}`: expected `:port` after `]`"))?,
            ),
        };
        (format!("[{h}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_owned(), Some(p)),
            Some(_) => return Err(format!("`{s}`: write an IPv6 address in brackets")),
            None => (s.to_owned(), None),
        }
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name_ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if bare.parse::<std::net::IpAddr>().is_err() && !name_ok {
        return Err(format!("`{bare}` is not a host name or IP address"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("`{p}` is not a port number (1-65535)")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("mail.example:587", 25).unwrap(),
            ("mail.example".into(), 587)
        );
        assert_eq!(
            split_host_port("10.0.0.1", 25).unwrap(),
            ("10.0.0.1".into(), 25)
        );
        assert_eq!(
            split_host_port("[::1]:2525", 25).unwrap(),
            ("[::1]".into(), 2525)
        );
        assert!(split_host_port("::1", 25).is_err());
        assert!(split_host_port("a b:25", 25).is_err());
        assert!(split_host_port("host:0", 25).is_err());
        assert!(split_host_port("host:x", 25).is_err());
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
        assert!(!is_loopback("mail.example"));
    }

    #[test]
    fn a_silent_peer_times_out_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Control::default();
        let start = Instant::now();
        let until = start + Duration::from_millis(300);
        let mut c = Conn::connect("127.0.0.1", port, until, &ctl).unwrap();
        let e = c.read_line(100, &ctl).unwrap_err();
        assert!(is_timeout(&e), "{e}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(listener);
    }
}
