//! Sending rendered messages: UDP datagrams, or TCP with RFC 6587 framing and reconnects.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket};
use std::time::{Duration, Instant};

use thiserror::Error;

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::control::Control;
use crate::tls::TlsSpec;

/// `udp`, `tcp` or `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Udp,
    Tcp,
    /// RFC 5425: TLS over TCP, octet-counting framing.
    Tls,
}

/// Where messages go: `udp://host:port`, `tcp://host:port` or `tls://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) proto: Proto,
    /// A hostname, or an IP address (IPv6 without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    /// Parses `udp://host[:port]` / `tcp://host[:port]` (port 514 when left out) /
    /// `tls://host[:port]` (port 6514).
    pub(crate) fn parse(s: &str) -> Result<Target, String> {
        let (proto, rest) = if let Some(r) = s.strip_prefix("udp://") {
            (Proto::Udp, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (Proto::Tcp, r)
        } else if let Some(r) = s.strip_prefix("tls://") {
            (Proto::Tls, r)
        } else {
            return Err(format!(
                "`{s}` must start with udp://, tcp:// or tls:// (e.g. \"udp://192.0.2.10:514\")"
            ));
        };
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            None if proto == Proto::Tls => 6514,
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
    /// TLS setup or handshake failed (certificate not trusted, name mismatch, timeout).
    #[error("TLS with {target}: {message}")]
    Tls { target: String, message: String },
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
    /// Longest wait between two attempts to open the UDP socket.
    pub(crate) max_backoff: Duration,
    /// `tls://` targets.
    pub(crate) tls: Option<TlsSpec>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Exponential back-off between attempts to resolve a UDP target.
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

/// The UDP sender: one connected socket, fire and forget (no queue, no retry).
#[derive(Debug)]
pub(crate) struct Transport {
    settings: Settings,
    udp: Option<UdpSocket>,
    backoff: Backoff,
    last_error: String,
}

impl Transport {
    /// A transport; the target is resolved and its socket connected now.
    pub(crate) fn new(settings: Settings) -> Transport {
        let max = settings.max_backoff;
        let mut t = Transport {
            settings,
            udp: None,
            backoff: Backoff {
                failures: 0,
                next: None,
                max,
            },
            last_error: String::new(),
        };
        if let Err(e) = t.open_udp() {
            tracing::warn!(target = %t.settings.target, error = %e, "syslog target not ready yet");
        }
        t
    }

    /// Sends one message as one datagram; waits (at most `write_timeout`) while the
    /// socket's send buffer is full.
    pub(crate) fn send(&mut self, msg: &str, ctl: &Control) -> Result<(), SendError> {
        let until = Instant::now() + self.settings.write_timeout;
        loop {
            match self.try_send(msg) {
                Some(outcome) => return outcome,
                None if Instant::now() >= until || ctl.past_deadline() => {
                    return Err(SendError::Io {
                        target: self.settings.target.to_string(),
                        source: io::ErrorKind::TimedOut.into(),
                    });
                }
                // A full send buffer drains in microseconds on a live interface.
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// Sends each message as one datagram, several per system call where the platform
    /// has one for that (`sendmmsg` on Linux); `done(i, outcome)` is called for each.
    /// Waits like [`send`](Transport::send) while the send buffer is full.
    pub(crate) fn send_many(
        &mut self,
        msgs: &[String],
        ctl: &Control,
        done: &mut dyn FnMut(usize, Result<(), SendError>),
    ) {
        #[cfg(target_os = "linux")]
        if msgs.len() > 1 && self.udp.is_some() {
            self.send_mmsg(msgs, ctl, done);
            return;
        }
        for (i, m) in msgs.iter().enumerate() {
            done(i, self.send(m, ctl));
        }
    }

    #[cfg(target_os = "linux")]
    fn send_mmsg(
        &mut self,
        msgs: &[String],
        ctl: &Control,
        done: &mut dyn FnMut(usize, Result<(), SendError>),
    ) {
        use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};
        use std::io::IoSlice;
        let mut next = 0;
        let until = Instant::now() + self.settings.write_timeout;
        while next < msgs.len() {
            let Some(sock) = &self.udp else {
                // Closed after an error (a name to resolve again): one by one from here.
                for (i, m) in msgs.iter().enumerate().skip(next) {
                    done(i, self.send(m, ctl));
                }
                return;
            };
            let iovs: Vec<[IoSlice<'_>; 1]> = msgs[next..]
                .iter()
                .map(|m| [IoSlice::new(m.as_bytes())])
                .collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = iovs
                .iter()
                .map(|_| SendAncillaryBuffer::default())
                .collect();
            let mut hdrs: Vec<MMsgHdr<'_>> = iovs
                .iter()
                .zip(controls.iter_mut())
                .map(|(iov, control)| MMsgHdr::new(iov, control))
                .collect();
            match sendmmsg(sock, &mut hdrs, SendFlags::empty()) {
                Ok(n) if n > 0 => {
                    for i in next..next + n {
                        done(i, Ok(()));
                    }
                    next += n;
                }
                Ok(_) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) if e == rustix::io::Errno::AGAIN => {
                    if Instant::now() >= until || ctl.past_deadline() {
                        for i in next..msgs.len() {
                            done(
                                i,
                                Err(SendError::Io {
                                    target: self.settings.target.to_string(),
                                    source: io::ErrorKind::TimedOut.into(),
                                }),
                            );
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => {
                    // The first message failed: `send` reports why (and reopens the
                    // socket when it should); the rest go on.
                    done(next, self.send(&msgs[next], ctl));
                    next += 1;
                }
            }
        }
    }

    /// Sends one message as one datagram if that does not block; `None` when the socket's
    /// send buffer is full.
    pub(crate) fn try_send(&mut self, msg: &str) -> Option<Result<(), SendError>> {
        match self.send_udp(msg.as_bytes()) {
            Err(SendError::Io { source, .. }) if source.kind() == io::ErrorKind::WouldBlock => None,
            outcome => Some(outcome),
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
            // Non-blocking: the source thread that judged an event sends on it directly
            // and leaves the job to the worker when the send buffer is full.
            let sock = UdpSocket::bind(local)
                .and_then(|s| s.connect(addr).map(|()| s))
                .and_then(|s| s.set_nonblocking(true).map(|()| s));
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
            Err(source) if source.kind() == io::ErrorKind::WouldBlock => Err(SendError::Io {
                target: self.settings.target.to_string(),
                source,
            }),
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
}

/// An open stream: plain TCP or TLS over it.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    /// Writes the whole frame within `timeout` (for the frame, not per `write` call: a
    /// peer that reads slowly cannot stretch an attempt).
    fn write_frame(&mut self, mut frame: &[u8], timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "write timed out");
        let arm = |sock: &TcpStream| -> io::Result<()> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            sock.set_write_timeout(Some(left))
        };
        while !frame.is_empty() {
            arm(self.socket())?;
            let written = match self {
                Conn::Tcp(s) => s.write(frame),
                Conn::Tls(s) => s.write(frame),
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => frame = &frame[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Unix reports a send timeout as `WouldBlock`, Windows as `TimedOut`.
                Err(e) if crate::net::is_timeout(&e) => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
        if let Conn::Tls(s) = self {
            while s.conn.wants_write() {
                arm(&s.sock)?;
                match s.conn.write_tls(&mut s.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if crate::net::is_timeout(&e) => return Err(timed_out()),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Whether the peer has closed the connection (a syslog receiver never sends
    /// application data, so readable plain TCP means end-of-stream or an error; over TLS
    /// records are read and processed: session tickets are fine, a close_notify or EOF
    /// is the end).
    fn peer_closed(&mut self) -> bool {
        match self {
            Conn::Tcp(s) => peer_closed(s),
            Conn::Tls(s) => {
                let (conn, sock) = (&mut s.conn, &mut s.sock);
                if sock.set_nonblocking(true).is_err() {
                    return true;
                }
                let mut closed = false;
                loop {
                    match conn.read_tls(sock) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(_) => {
                            if conn.process_new_packets().is_err() {
                                closed = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let mut buf = [0u8; 256];
                match conn.reader().read(&mut buf) {
                    Ok(0) => closed = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
                sock.set_nonblocking(false).is_err() || closed
            }
        }
    }
}

/// The TCP / TLS sender of the durable loop: one attempt = connect (and handshake) if
/// needed, then write one frame. Every failure is transient (the peer may come back,
/// its certificate may be fixed); waiting between attempts is the loop's business.
pub(crate) struct Stream {
    settings: Settings,
    conn: Option<Conn>,
    tls: Option<Arc<ClientConfig>>,
    frame: Vec<u8>,
}

impl Stream {
    pub(crate) fn new(settings: Settings) -> Stream {
        Stream {
            settings,
            conn: None,
            tls: None,
            frame: Vec::with_capacity(4096),
        }
    }

    /// Sends one message (framing added here).
    pub(crate) fn send(&mut self, msg: &str, ctl: &Control) -> Result<(), SendError> {
        if ctl.past_deadline() {
            let target = self.settings.target.to_string();
            return Err(SendError::Shutdown { target });
        }
        if self.conn.as_mut().is_some_and(Conn::peer_closed) {
            tracing::debug!(target = %self.settings.target, "syslog peer closed the connection");
            self.conn = None;
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        frame(&mut self.frame, msg, self.settings.framing);
        match conn.write_frame(&self.frame, self.settings.write_timeout) {
            Ok(()) => {
                self.conn = Some(conn);
                Ok(())
            }
            Err(source) => Err(SendError::Io {
                target: self.settings.target.to_string(),
                source,
            }),
        }
    }

    fn connect(&mut self) -> Result<Conn, SendError> {
        let target = self.settings.target.to_string();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        let mut stream = None;
        for addr in self.settings.target.resolve()? {
            match TcpStream::connect_timeout(&addr, self.settings.connect_timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(self.settings.write_timeout));
                    tracing::debug!(%target, %addr, "syslog connected");
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(sock) = stream else {
            return Err(SendError::Connect {
                target,
                source: last,
            });
        };
        let Some(tls) = &self.settings.tls else {
            return Ok(Conn::Tcp(sock));
        };
        let tls_err = |message: String| SendError::Tls {
            target: target.clone(),
            message,
        };
        if self.tls.is_none() {
            self.tls = Some(tls.client_config().map_err(tls_err)?);
        }
        let config = self.tls.clone().expect("just set");
        let name = tls
            .server_name(&self.settings.target.host)
            .map_err(tls_err)?;
        let mut conn = ClientConnection::new(config, name).map_err(|e| tls_err(e.to_string()))?;
        // The handshake must not hang on a peer that accepts and never answers.
        let _ = sock.set_read_timeout(Some(self.settings.write_timeout));
        let mut sock = sock;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                // Keep the certificate files' errors readable; reload them next time.
                self.tls = None;
                let message = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        "TLS handshake timed out".to_owned()
                    }
                    _ => format!("TLS handshake failed: {e}"),
                };
                return Err(tls_err(message));
            }
        }
        // Kept: rustls may read while it completes I/O; it must not wait forever either.
        Ok(Conn::Tls(Box::new(StreamOwned::new(conn, sock))))
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
        let t = Target::parse("tls://siem.example.org").unwrap();
        assert_eq!((t.proto, t.port), (Proto::Tls, 6514));
        assert_eq!(t.to_string(), "tls://siem.example.org:6514");
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

    fn settings(port: u16) -> Settings {
        Settings {
            target: Target {
                proto: Proto::Tcp,
                host: "127.0.0.1".into(),
                port,
            },
            framing: Framing::Lf,
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            max_backoff: Duration::from_millis(200),
            tls: None,
        }
    }

    #[test]
    fn tcp_reconnects_after_the_peer_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Control::default();
        let mut t = Stream::new(settings(port));
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
    fn a_refused_connection_fails_at_once() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ctl = Control::default();
        let mut t = Stream::new(settings(port));
        let start = Instant::now();
        let err = t.send("x", &ctl).unwrap_err();
        assert!(matches!(err, SendError::Connect { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_peer_that_never_reads_is_a_write_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Control::default();
        let mut t = Stream::new(settings(port));
        // More than the socket buffers hold: the write blocks until its timeout.
        let big = "x".repeat(16 << 20);
        let start = Instant::now();
        let err = t.send(&big, &ctl).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        // The timeout (1 s) ends the send of the whole frame. The bound is generous (a
        // loaded machine, Wine): what it catches is a send that does not end.
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn a_tls_peer_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut s = settings(port);
        s.target.proto = Proto::Tls;
        let raw: crate::tls::RawTls = toml::from_str("verify = false").unwrap();
        s.tls = Some(TlsSpec::parse(&raw, &mut Vec::new()));
        let ctl = Control::default();
        let mut t = Stream::new(s);
        let start = Instant::now();
        let err = t.send("x", &ctl).unwrap_err();
        assert!(err.to_string().contains("handshake timed out"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
        drop(listener);
    }
}
