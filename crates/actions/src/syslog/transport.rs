//! Sending rendered messages: UDP datagrams, or TCP with RFC 6587 framing and reconnects.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::control::Control;

/// `udp` or `tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Udp,
    Tcp,
}

/// Where messages go: `udp://host:port` or `tcp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) proto: Proto,
    /// A hostname, or an IP address (IPv6 without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.proto == Proto::Udp {
            "udp"
        } else {
            "tcp"
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    /// Parses `udp://host[:port]` / `tcp://host[:port]` (port 514 when left out).
    pub(crate) fn parse(s: &str) -> Result<Target, String> {
        let (proto, rest) = if let Some(r) = s.strip_prefix("udp://") {
            (Proto::Udp, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (Proto::Tcp, r)
        } else {
            return Err(format!(
                "`{s}` must start with udp:// or tcp:// (e.g. \"udp://192.0.2.10:514\")"
            ));
        };
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            None => 514,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))?,
        };
        if host.parse::<std::net::IpAddr>().is_err() && !is_hostname(host) {
            return Err(format!("`{host}` is neither an IP address nor a host name"));
        }
        Ok(Target {
            proto,
            host: host.to_owned(),
            port,
        })
    }

    /// Whether the host is a name (resolved again on reconnect) rather than an address.
    fn is_name(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }

    fn resolve(&self) -> Result<Vec<SocketAddr>, SendError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| SendError::Resolve {
                target: self.to_string(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            let source = io::Error::new(io::ErrorKind::NotFound, "no addresses");
            return Err(SendError::Resolve {
                target: self.to_string(),
                source,
            });
        }
        Ok(addrs)
    }
}

fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{rest}`: write only host and port, e.g. udp://siem.example.org:514"
        ));
    }
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("an IPv6 address needs its closing `]`")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{host}` is not an IPv6 address"));
        }
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| "expected `:port` after `]`".into()),
        };
    }
    match rest.split_once(':') {
        Some((_, p)) if p.contains(':') => {
            Err("write an IPv6 address in brackets: [2001:db8::1]:514".into())
        }
        Some((h, p)) => Ok((h, Some(p))),
        None => Ok((rest, None)),
    }
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// How messages are delimited on a TCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub(crate) enum Framing {
    /// RFC 6587 octet counting: `LEN SP MSG`.
    #[serde(rename = "octet-counting")]
    OctetCounting,
    /// RFC 6587 non-transparent framing: `MSG LF` (line breaks inside become spaces).
    #[serde(rename = "lf")]
    Lf,
}

/// Why a message could not be sent.
#[derive(Debug, Error)]
pub(crate) enum SendError {
    /// The target's host name did not resolve.
    #[error("cannot resolve {target}: {source}")]
    Resolve { target: String, source: io::Error },
    /// No address of the target accepted a connection.
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    /// Writing to the socket failed.
    #[error("sending to {target} failed: {source}")]
    Io { target: String, source: io::Error },
    /// Waiting to resolve again after a failure.
    #[error("{target} is unreachable; retrying in {retry_in:?} ({last})")]
    Waiting {
        target: String,
        retry_in: Duration,
        last: String,
    },
    /// Shutdown's deadline passed while waiting to reconnect.
    #[error("shutdown deadline passed while reconnecting to {target}")]
    Shutdown { target: String },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) target: Target,
    pub(crate) framing: Framing,
    pub(crate) connect_timeout: Duration,
    pub(crate) write_timeout: Duration,
    /// Extra attempts for a message after a failed one (TCP).
    pub(crate) retries: u32,
    pub(crate) max_backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Exponential back-off between connection attempts.
#[derive(Debug)]
struct Backoff {
    failures: u32,
    next: Option<Instant>,
    max: Duration,
}

impl Backoff {
    fn failed(&mut self) {
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.next = Some(Instant::now() + delay);
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.next = None;
    }
}

/// A sender: one connected UDP socket, or a TCP stream that reconnects.
#[derive(Debug)]
pub(crate) struct Transport {
    settings: Settings,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    backoff: Backoff,
    last_error: String,
    frame: Vec<u8>,
}

impl Transport {
    /// A transport; a UDP target is resolved and its socket connected now.
    pub(crate) fn new(settings: Settings) -> Transport {
        let max = settings.max_backoff;
        let mut t = Transport {
            settings,
            udp: None,
            tcp: None,
            backoff: Backoff {
                failures: 0,
                next: None,
                max,
            },
            last_error: String::new(),
            frame: Vec::with_capacity(4096),
        };
        if t.settings.target.proto == Proto::Udp
            && let Err(e) = t.open_udp()
        {
            tracing::warn!(target = %t.settings.target, error = %e, "syslog target not ready yet");
        }
        t
    }

    /// Sends one message (without framing; TCP framing is added here).
    pub(crate) fn send(&mut self, msg: &str, ctl: &Control) -> Result<(), SendError> {
        match self.settings.target.proto {
            Proto::Udp => self.send_udp(msg.as_bytes()),
            Proto::Tcp => {
                frame(&mut self.frame, msg, self.settings.framing);
                let frame = std::mem::take(&mut self.frame);
                let result = self.send_tcp(&frame, ctl);
                self.frame = frame;
                result
            }
        }
    }

    fn open_udp(&mut self) -> Result<(), SendError> {
        let target = &self.settings.target;
        let result = target.resolve().and_then(|addrs| {
            let addr = addrs[0];
            let local: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let sock = UdpSocket::bind(local).and_then(|s| s.connect(addr).map(|()| s));
            sock.map_err(|source| SendError::Connect {
                target: target.to_string(),
                source,
            })
        });
        match result {
            Ok(sock) => {
                self.udp = Some(sock);
                self.backoff.succeeded();
                Ok(())
            }
            Err(e) => {
                self.backoff.failed();
                self.last_error = e.to_string();
                Err(e)
            }
        }
    }

    fn send_udp(&mut self, msg: &[u8]) -> Result<(), SendError> {
        if self.udp.is_none() {
            if let Some(next) = self.backoff.next.filter(|n| *n > Instant::now()) {
                return Err(self.waiting(next));
            }
            self.open_udp()?;
        }
        let Some(sock) = &self.udp else {
            return Err(self.waiting(Instant::now()));
        };
        match sock.send(msg) {
            Ok(_) => Ok(()),
            Err(source) => {
                if self.settings.target.is_name() {
                    self.udp = None; // resolve again: the name may point elsewhere now
                }
                Err(SendError::Io {
                    target: self.settings.target.to_string(),
                    source,
                })
            }
        }
    }

    fn waiting(&self, next: Instant) -> SendError {
        SendError::Waiting {
            target: self.settings.target.to_string(),
            retry_in: next.saturating_duration_since(Instant::now()),
            last: self.last_error.clone(),
        }
    }

    fn send_tcp(&mut self, frame: &[u8], ctl: &Control) -> Result<(), SendError> {
        let mut last = None;
        for _attempt in 0..=self.settings.retries {
            if self.tcp.as_ref().is_some_and(peer_closed) {
                self.tcp = None;
            }
            if self.tcp.is_none() {
                if let Some(next) = self.backoff.next
                    && !ctl.sleep_until(next)
                {
                    let target = self.settings.target.to_string();
                    return Err(SendError::Shutdown { target });
                }
                match self.connect() {
                    Ok(s) => self.tcp = Some(s),
                    Err(e) => {
                        self.backoff.failed();
                        tracing::debug!(target = %self.settings.target, error = %e, "syslog connect failed");
                        last = Some(e);
                        continue;
                    }
                }
            }
            let Some(stream) = self.tcp.as_mut() else {
                continue;
            };
            match stream.write_all(frame) {
                Ok(()) => return Ok(()),
                Err(source) => {
                    self.tcp = None;
                    tracing::debug!(target = %self.settings.target, error = %source, "syslog write failed");
                    last = Some(SendError::Io {
                        target: self.settings.target.to_string(),
                        source,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| SendError::Shutdown {
            target: self.settings.target.to_string(),
        }))
    }

    fn connect(&mut self) -> Result<TcpStream, SendError> {
        let target = self.settings.target.to_string();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        for addr in self.settings.target.resolve()? {
            match TcpStream::connect_timeout(&addr, self.settings.connect_timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(self.settings.write_timeout));
                    self.backoff.succeeded();
                    tracing::debug!(%target, %addr, "syslog connected");
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        self.last_error = last.to_string();
        Err(SendError::Connect {
            target,
            source: last,
        })
    }
}

/// Whether the peer has closed the connection (a syslog receiver never sends, so a
/// readable socket means end-of-stream or an error). Costs three system calls.
fn peer_closed(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 256];
    let closed = match (&*s).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).is_err() || closed
}

/// Frames `msg` for a TCP stream into `out` (cleared first).
pub(crate) fn frame(out: &mut Vec<u8>, msg: &str, framing: Framing) {
    out.clear();
    match framing {
        Framing::OctetCounting => {
            let _ = write!(out, "{} ", msg.len());
            out.extend_from_slice(msg.as_bytes());
        }
        Framing::Lf => {
            out.extend(msg.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;
    use std::net::TcpListener;

    #[test]
    fn octet_counting_and_lf_framing() {
        let mut out = Vec::new();
        frame(
            &mut out,
            "<14>1 - - - - - - h\u{e9}",
            Framing::OctetCounting,
        );
        assert_eq!(out, "21 <14>1 - - - - - - h\u{e9}".as_bytes());
        frame(&mut out, "a\nb", Framing::Lf);
        assert_eq!(out, b"a b\n");
    }

    #[test]
    fn targets_parse() {
        let t = Target::parse("udp://127.0.0.1:514").unwrap();
        assert_eq!(
            (t.proto, t.host.as_str(), t.port),
            (Proto::Udp, "127.0.0.1", 514)
        );
        let t = Target::parse("tcp://[::1]:6514").unwrap();
        assert_eq!(
            (t.proto, t.host.as_str(), t.port),
            (Proto::Tcp, "::1", 6514)
        );
        assert_eq!(t.to_string(), "tcp://[::1]:6514");
        assert_eq!(Target::parse("udp://siem.example.org").unwrap().port, 514);
        for bad in [
            "http://x:1",
            "udp://",
            "udp://a b:1",
            "udp://h:0",
            "udp://h:99999",
            "udp://::1:5",
            "tcp://h:1/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    fn settings(port: u16, retries: u32) -> Settings {
        Settings {
            target: Target {
                proto: Proto::Tcp,
                host: "127.0.0.1".into(),
                port,
            },
            framing: Framing::Lf,
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            retries,
            max_backoff: Duration::from_millis(200),
        }
    }

    #[test]
    fn tcp_reconnects_after_the_peer_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Control::default();
        let mut t = Transport::new(settings(port, 3));
        t.send("one", &ctl).unwrap();
        let (first, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&first)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "one\n");
        drop(first); // the receiver goes away; the next message must use a new connection
        std::thread::sleep(Duration::from_millis(50));
        t.send("two", &ctl).unwrap();
        let (second, _) = listener.accept().unwrap();
        line.clear();
        std::io::BufReader::new(&second)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "two\n");
    }

    #[test]
    fn tcp_gives_up_after_its_retries() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ctl = Control::default();
        let mut t = Transport::new(settings(port, 1));
        let start = Instant::now();
        let err = t.send("x", &ctl).unwrap_err();
        assert!(matches!(err, SendError::Connect { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
