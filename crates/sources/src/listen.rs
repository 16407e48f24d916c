//! Receiving syslog over the network: a UDP or TCP listener that hands whole messages to a
//! bounded channel.
//!
//! [`Listener::start`] binds one address (`udp://127.0.0.1:5514`, `tcp://[::1]:6514`; port 0
//! picks a free port, see [`Listener::local_addr`]) and spawns plain threads (no async). It
//! only receives and frames: each [`Received`] is one message as its sender wrote it, without
//! framing and without trailing CR/LF/NUL, plus the peer address. Parsing the syslog header
//! is the job of the parsers (`sep::manager::header`, [`crate::textlog`]).
//!
//! # Addresses
//!
//! Only literal IP addresses are accepted (no name lookups). Bind where you are told: the
//! configuration defaults to loopback, and listening on every interface (`0.0.0.0`, `::`)
//! must be written out explicitly. Whether `::` also accepts IPv4 depends on the platform's
//! dual-stack default.
//!
//! # UDP
//!
//! One datagram is one message (an LF inside it is part of the message). A datagram above
//! [`ListenOptions::max_message_bytes`] is skipped and counted in [`ListenStats::oversized`].
//! UDP cannot wait: when the consumer's channel is full the message is dropped and counted in
//! [`ListenStats::queue_full_drops`]. The kernel's receive buffer (not set here) decides what
//! is lost before we read.
//!
//! # TCP and framing (RFC 6587)
//!
//! One thread per connection, at most [`ListenOptions::max_connections`]; connections beyond
//! are closed at once and counted in [`ListenStats::connections_refused`]. A connection
//! without data for [`ListenOptions::idle_timeout`] is closed. [`TcpFraming`]:
//! * `OctetCounting`: `LEN SP MSG`. A stream that does not start a message with a count has
//!   lost its framing and is closed (counted as an error).
//! * `Lf`: non-transparent framing, each message ends with LF (CRLF accepted).
//! * `Auto` (default): decided per message: a run of 1–10 digits followed by a space is an
//!   octet count, anything else is a line. Syslog messages start with `<PRI>`, so this is
//!   unambiguous for syslog; a plain-text line that starts with digits and a space (`12 foo`)
//!   would be read as a count — choose `Lf` for such senders.
//!
//! Partial frames wait for the rest; empty messages are dropped. Memory per connection stays
//! bounded by the message limit plus one read: a line longer than the limit is skipped up to
//! its LF, an octet count above the limit makes the listener skip that many bytes; both are
//! counted in [`ListenStats::oversized`] and the next message is read normally. Oversized
//! messages are skipped, never cut. When the connection ends, a last line without LF is still
//! a message; a counted message cut short is counted as an error.
//!
//! When the consumer's channel is full, TCP readers wait (back-pressure: the kernel's window
//! fills and senders slow down), counted once per wait in [`ListenStats::queue_full_waits`].
//!
//! # Shutdown and errors
//!
//! [`Listener::shutdown`] (also run on drop) sets a flag, wakes the blocked UDP receive or TCP
//! accept by sending a datagram to / connecting to its own address, shuts down every open
//! connection's socket (which ends its blocking read) and joins all threads. Nothing polls
//! while idle. Receive errors and protocol errors are logged with `tracing` (peer, reason),
//! at most a few lines per second, and counted in [`ListenStats::errors`].

mod frame;

use std::fmt;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use frame::{Frame, Framer};

/// Default [`ListenOptions::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default [`ListenOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default [`ListenOptions::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default [`ListenOptions::queue`].
pub const DEFAULT_QUEUE: usize = 65536;

/// Bytes read from a TCP connection at once.
const READ_CHUNK: usize = 64 * 1024;
/// Largest UDP payload (IPv4 and IPv6 without jumbograms stay below it).
const MAX_DATAGRAM: usize = 65536;
/// Stack of connection threads (they hold their buffers on the heap).
const CONN_STACK: usize = 256 * 1024;
/// How long shutdown waits for a thread before leaving it behind.
const JOIN_WAIT: Duration = Duration::from_secs(2);
/// Log lines allowed per second (the rest are counted and reported with the next one).
const LOG_BURST: u32 = 5;

/// Transport of a listen address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `udp://`
    Udp,
    /// `tcp://`
    Tcp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        })
    }
}

/// How a TCP stream is cut into messages (RFC 6587).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TcpFraming {
    /// Per message: `LEN SP` (1–10 digits, then a space) is octet counting, else a line.
    #[default]
    Auto,
    /// Only octet counting (`LEN SP MSG`); anything else closes the connection.
    OctetCounting,
    /// Only LF-terminated messages (CRLF accepted); leading digits are message text.
    Lf,
}

/// What to listen on and the limits that protect the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// `udp://IP:PORT` or `tcp://IP:PORT` (IPv6 in brackets); port 0 picks a free port.
    pub address: String,
    /// TCP framing (ignored for UDP).
    pub framing: TcpFraming,
    /// Longest message accepted; longer ones are skipped and counted.
    pub max_message_bytes: usize,
    /// Most TCP connections open at once; more are closed on arrival and counted.
    pub max_connections: usize,
    /// A TCP connection without data this long is closed (`Duration::ZERO`: never).
    pub idle_timeout: Duration,
    /// Capacity of the channel to the consumer.
    pub queue: usize,
}

impl ListenOptions {
    /// Options with the defaults: `Auto` framing, 64 KiB messages, 256 connections, 10 min
    /// idle timeout, a queue of 65536 messages.
    pub fn new(address: impl Into<String>) -> ListenOptions {
        ListenOptions {
            address: address.into(),
            framing: TcpFraming::Auto,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            queue: DEFAULT_QUEUE,
        }
    }

    /// Splits `udp://127.0.0.1:5514` / `tcp://[::1]:6514` into transport and socket address.
    /// The scheme is case-insensitive; the host must be a literal IP address.
    pub fn parse_address(s: &str) -> Result<(Proto, SocketAddr), ListenError> {
        let bad = |reason: &str| ListenError::Address {
            address: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("expected udp://IP:PORT or tcp://IP:PORT"))?;
        let proto = if scheme.eq_ignore_ascii_case("udp") {
            Proto::Udp
        } else if scheme.eq_ignore_ascii_case("tcp") {
            Proto::Tcp
        } else {
            return Err(bad("the scheme must be udp:// or tcp://"));
        };
        let addr = SocketAddr::from_str(rest).map_err(|_| {
            if rest.rsplit_once(':').is_none_or(|(_, p)| p.is_empty()) {
                bad("a port is required (0 picks a free one)")
            } else if rest.matches(':').count() > 1 && !rest.starts_with('[') {
                bad("write IPv6 addresses in brackets: [::1]:PORT")
            } else {
                bad("the host must be a literal IP address and the port a number up to 65535")
            }
        })?;
        Ok((proto, addr))
    }

    fn check(&self) -> Result<(), ListenError> {
        let bad = |what: &str| Err(ListenError::Options(format!("{what} must be at least 1")));
        if self.max_message_bytes == 0 {
            return bad("max_message_bytes");
        }
        if self.max_connections == 0 {
            return bad("max_connections");
        }
        if self.queue == 0 {
            return bad("queue");
        }
        Ok(())
    }
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Who sent it.
    pub peer: SocketAddr,
    /// The message without framing, trailing CR/LF/NUL trimmed; never empty.
    pub bytes: Vec<u8>,
    /// When the listener received it (for the daemon's reaction-time histogram).
    pub at: Instant,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ListenStats {
    /// Messages handed to the channel.
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Messages above `max_message_bytes`, skipped.
    pub oversized: u64,
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// TCP connections closed on arrival (over `max_connections`).
    pub connections_refused: u64,
    /// TCP connections open now.
    pub connections_open: u64,
    /// TCP connections closed by the idle timeout.
    pub idle_closed: u64,
    /// UDP messages dropped because the channel was full.
    pub queue_full_drops: u64,
    /// Times a TCP reader waited for room in the channel.
    pub queue_full_waits: u64,
    /// Receive, accept and framing errors.
    pub errors: u64,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address is malformed.
    #[error("listen address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option is out of range.
    #[error("listen options: {0}")]
    Options(String),
    /// The socket could not be bound.
    #[error("cannot listen on {proto}://{addr}: {source}")]
    Bind {
        /// Transport.
        proto: Proto,
        /// Address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the {proto} listener thread: {source}")]
    Spawn {
        /// Transport.
        proto: Proto,
        /// The OS error.
        source: io::Error,
    },
}

/// A running listener. Stop it with [`shutdown`](Listener::shutdown) (dropping it does the
/// same).
pub struct Listener {
    proto: Proto,
    local: SocketAddr,
    shared: Arc<Shared>,
    /// Dropped on shutdown: wakes TCP readers waiting for room in the channel.
    stop_tx: Option<Sender<()>>,
    main: Option<JoinHandle<()>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("proto", &self.proto)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds `opts.address` and starts receiving. Messages arrive on the returned channel
    /// (capacity `opts.queue`); dropping the receiver stops the reading threads.
    pub fn start(opts: ListenOptions) -> Result<(Listener, Receiver<Received>), ListenError> {
        opts.check()?;
        let (proto, addr) = ListenOptions::parse_address(&opts.address)?;
        let (tx, rx) = crossbeam_channel::bounded(opts.queue);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared::new(opts));
        let bind_err = |source| ListenError::Bind {
            proto,
            addr,
            source,
        };
        let spawn_err = |source| ListenError::Spawn { proto, source };
        let (local, main) = match proto {
            Proto::Udp => {
                let sock = UdpSocket::bind(addr).map_err(bind_err)?;
                let local = sock.local_addr().map_err(bind_err)?;
                let sh = shared.clone();
                let h = thread::Builder::new()
                    .name("listen-udp".into())
                    .spawn(move || udp_loop(&sock, &sh, &tx))
                    .map_err(spawn_err)?;
                (local, h)
            }
            Proto::Tcp => {
                let sock = TcpListener::bind(addr).map_err(bind_err)?;
                let local = sock.local_addr().map_err(bind_err)?;
                let sh = shared.clone();
                let h = thread::Builder::new()
                    .name("listen-tcp".into())
                    .spawn(move || accept_loop(&sock, &sh, &tx, &stop_rx))
                    .map_err(spawn_err)?;
                (local, h)
            }
        };
        tracing::info!(%proto, %local, "listen: receiving syslog");
        let listener = Listener {
            proto,
            local,
            shared,
            stop_tx: Some(stop_tx),
            main: Some(main),
        };
        Ok((listener, rx))
    }

    /// The bound address (with the port the OS picked when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transport.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Counters since start.
    pub fn stats(&self) -> ListenStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenStats {
            messages: get(&c.messages),
            bytes: get(&c.bytes),
            oversized: get(&c.oversized),
            connections_accepted: get(&c.connections_accepted),
            connections_refused: get(&c.connections_refused),
            connections_open: self.shared.conns().open.len() as u64,
            idle_closed: get(&c.idle_closed),
            queue_full_drops: get(&c.queue_full_drops),
            queue_full_waits: get(&c.queue_full_waits),
            errors: get(&c.errors),
        }
    }

    /// Stops accepting and reading and joins the threads. Messages already in the channel
    /// stay there.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(main) = self.main.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        drop(self.stop_tx.take());
        if let Err(e) = self.wake() {
            tracing::warn!(proto = %self.proto, local = %self.local, error = %e,
                "listen: could not wake the listener thread for shutdown");
        }
        join_within(main, "listener");
        // No new connection can be registered now: close the open ones.
        let open: Vec<Conn> = self.shared.conns().open.drain(..).collect();
        for c in &open {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        for c in open {
            if let Some(h) = c.thread {
                join_within(h, "connection");
            }
        }
        tracing::info!(proto = %self.proto, local = %self.local,
            "listen: stopped: {}", watchpost_event::logfmt(&self.stats()));
    }

    /// Unblocks the thread waiting in `recv_from` / `accept`.
    fn wake(&self) -> io::Result<()> {
        let mut to = self.local;
        if to.ip().is_unspecified() {
            to.set_ip(match to {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        match self.proto {
            Proto::Udp => {
                let from: SocketAddr = match to {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                UdpSocket::bind(from)?.send_to(&[], to).map(drop)
            }
            Proto::Tcp => TcpStream::connect_timeout(&to, Duration::from_secs(1)).map(drop),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to [`JOIN_WAIT`] for a thread; leaves it behind (with a warning) after that.
fn join_within(h: JoinHandle<()>, what: &str) {
    let deadline = Instant::now() + JOIN_WAIT;
    while !h.is_finished() {
        if Instant::now() >= deadline {
            tracing::warn!(
                thread = what,
                "listen: thread did not stop in time, left behind"
            );
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    if h.join().is_err() {
        tracing::error!(thread = what, "listen: thread panicked");
    }
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    oversized: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    idle_closed: AtomicU64,
    queue_full_drops: AtomicU64,
    queue_full_waits: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// An open TCP connection: a handle on its socket (to shut it down) and its thread.
struct Conn {
    id: u64,
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    open: Vec<Conn>,
}

/// State shared by the listener's threads.
struct Shared {
    opts: ListenOptions,
    stop: AtomicBool,
    counters: Counters,
    conns: Mutex<Conns>,
    log: LogLimit,
}

impl Shared {
    fn new(opts: ListenOptions) -> Shared {
        Shared {
            opts,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            conns: Mutex::new(Conns::default()),
            log: LogLimit::default(),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn conns(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn delivered(&self, len: u64) {
        Counters::add(&self.counters.messages, 1);
        Counters::add(&self.counters.bytes, len);
    }

    fn error(&self) {
        Counters::add(&self.counters.errors, 1);
    }
}

/// Allows [`LOG_BURST`] log lines per second; counts the rest.
#[derive(Default)]
struct LogLimit {
    state: Mutex<LogWindow>,
}

#[derive(Default)]
struct LogWindow {
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(lines suppressed since the last allowed one)` when a line may be logged.
    fn allow(&self) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if w.start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            w.start = Some(now);
            w.used = 0;
        }
        if w.used < LOG_BURST {
            w.used += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// Logs a warning through the shared rate limit.
macro_rules! warn_limited {
    ($shared:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $shared.log.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    };
}

// ---------------------------------------------------------------------------------------
// UDP

fn udp_loop(sock: &UdpSocket, sh: &Shared, tx: &Sender<Received>) {
    let max = sh.opts.max_message_bytes;
    let mut buf = vec![0u8; max.saturating_add(1).min(MAX_DATAGRAM)];
    let mut failures = 0u32;
    loop {
        let res = sock.recv_from(&mut buf);
        if sh.stopping() {
            return;
        }
        let (n, peer) = match res {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_msg_size(&e) => {
                Counters::add(&sh.counters.oversized, 1);
                warn_limited!(sh, "listen: udp datagram above {max} bytes skipped");
                continue;
            }
            Err(e) => {
                sh.error();
                warn_limited!(sh, error = %e, "listen: udp receive failed");
                // A persistent error (e.g. ICMP reports on Windows) must not spin.
                failures = failures.saturating_add(1);
                if failures > 3 {
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        failures = 0;
        if n > max {
            Counters::add(&sh.counters.oversized, 1);
            warn_limited!(sh, %peer, "listen: udp datagram above {max} bytes skipped");
            continue;
        }
        let msg = frame::trim(&buf[..n]);
        if msg.is_empty() {
            continue;
        }
        let r = Received {
            peer,
            bytes: msg.to_vec(),
            at: Instant::now(),
        };
        match tx.try_send(r) {
            Ok(()) => sh.delivered(msg.len() as u64),
            Err(TrySendError::Full(_)) => {
                Counters::add(&sh.counters.queue_full_drops, 1);
                warn_limited!(sh, %peer, "listen: queue full, udp message dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::debug!("listen: consumer gone, udp receiver stops");
                return;
            }
        }
    }
}

/// A datagram larger than the buffer (Windows reports it as an error, WSAEMSGSIZE; Unix
/// truncates silently, which the caller sees as `n > max`).
fn is_msg_size(e: &io::Error) -> bool {
    #[cfg(windows)]
    {
        e.raw_os_error() == Some(10040)
    }
    #[cfg(not(windows))]
    {
        let _ = e;
        false
    }
}

// ---------------------------------------------------------------------------------------
// TCP

fn accept_loop(
    sock: &TcpListener,
    sh: &Arc<Shared>,
    tx: &Sender<Received>,
    stop_rx: &Receiver<()>,
) {
    loop {
        let res = sock.accept();
        if sh.stopping() {
            return;
        }
        let (stream, peer) = match res {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                sh.error();
                warn_limited!(sh, error = %e, "listen: tcp accept failed");
                // Out of descriptors and the like: wait a little instead of spinning.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let mut conns = sh.conns();
        if conns.open.len() >= sh.opts.max_connections {
            drop(conns);
            Counters::add(&sh.counters.connections_refused, 1);
            warn_limited!(sh, %peer, max = sh.opts.max_connections,
                "listen: too many tcp connections, refused");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let idle = sh.opts.idle_timeout;
        let prepared = stream
            .set_read_timeout((!idle.is_zero()).then_some(idle))
            .and_then(|()| stream.try_clone());
        let handle = match prepared {
            Ok(h) => h,
            Err(e) => {
                drop(conns);
                sh.error();
                warn_limited!(sh, %peer, error = %e, "listen: cannot set up tcp connection");
                continue;
            }
        };
        let id = conns.next_id;
        conns.next_id += 1;
        let (sh2, tx2, stop2) = (sh.clone(), tx.clone(), stop_rx.clone());
        // Spawned under the lock, so the thread's own removal comes after this insertion.
        let spawned = thread::Builder::new()
            .name("listen-tcp-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                conn_loop(stream, peer, &sh2, &tx2, &stop2);
                sh2.conns().open.retain(|c| c.id != id);
            });
        match spawned {
            Ok(thread) => {
                conns.open.push(Conn {
                    id,
                    stream: handle,
                    thread: Some(thread),
                });
                Counters::add(&sh.counters.connections_accepted, 1);
                tracing::debug!(%peer, "listen: tcp connection accepted");
            }
            Err(e) => {
                drop(conns);
                sh.error();
                warn_limited!(sh, %peer, error = %e, "listen: cannot start a connection thread");
            }
        }
    }
}

/// Why a connection's reader stops delivering.
enum Halt {
    /// Shutdown, or the consumer dropped the channel.
    Stop,
    /// The peer broke the framing.
    Invalid(&'static str),
}

fn conn_loop(
    mut stream: TcpStream,
    peer: SocketAddr,
    sh: &Shared,
    tx: &Sender<Received>,
    stop_rx: &Receiver<()>,
) {
    let mut framer = Framer::new(sh.opts.framing, sh.opts.max_message_bytes);
    let mut chunk = vec![0u8; READ_CHUNK];
    let end = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => break "closed by peer",
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Counters::add(&sh.counters.idle_closed, 1);
                break "idle timeout";
            }
            Err(e) => {
                if sh.stopping() {
                    return;
                }
                sh.error();
                warn_limited!(sh, %peer, error = %e, "listen: tcp read failed");
                break "read error";
            }
        };
        if sh.stopping() {
            return;
        }
        framer.feed(&chunk[..n]);
        while let Some(f) = framer.next() {
            match handle(f, peer, sh, tx, stop_rx) {
                Ok(()) => {}
                Err(Halt::Stop) => return,
                Err(Halt::Invalid(why)) => {
                    let _ = stream.shutdown(Shutdown::Both);
                    tracing::debug!(%peer, reason = why, "listen: tcp connection closed");
                    return;
                }
            }
        }
    };
    if sh.stopping() {
        return;
    }
    if let Some(f) = framer.finish() {
        let _ = handle(f, peer, sh, tx, stop_rx);
    }
    let _ = stream.shutdown(Shutdown::Both);
    tracing::debug!(%peer, reason = end, "listen: tcp connection closed");
}

/// Delivers a message (waiting for room) or counts what went wrong.
fn handle(
    f: Frame,
    peer: SocketAddr,
    sh: &Shared,
    tx: &Sender<Received>,
    stop_rx: &Receiver<()>,
) -> Result<(), Halt> {
    match f {
        Frame::Message(bytes) => {
            let len = bytes.len() as u64;
            let r = match tx.try_send(Received {
                peer,
                bytes,
                at: Instant::now(),
            }) {
                Ok(()) => {
                    sh.delivered(len);
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(Halt::Stop),
                Err(TrySendError::Full(r)) => r,
            };
            Counters::add(&sh.counters.queue_full_waits, 1);
            crossbeam_channel::select! {
                send(tx, r) -> res => match res {
                    Ok(()) => {
                        sh.delivered(len);
                        Ok(())
                    }
                    Err(_) => Err(Halt::Stop),
                },
                recv(stop_rx) -> _ => Err(Halt::Stop),
            }
        }
        Frame::Oversized => {
            Counters::add(&sh.counters.oversized, 1);
            warn_limited!(sh, %peer, max = sh.opts.max_message_bytes,
                "listen: tcp message above the limit skipped");
            Ok(())
        }
        Frame::Invalid(why) => {
            sh.error();
            warn_limited!(sh, %peer, reason = why, "listen: tcp framing error, closing");
            Err(Halt::Invalid(why))
        }
    }
}

/// A [`Listener`] as a [`Source`](crate::source::Source): received messages are handed out
/// with their peer as the place and their number since start as the offset.
pub struct ListenSource {
    listener: Option<Listener>,
    wait: crate::source::Wakeable<Received>,
    proto: &'static str,
    n: u64,
}

impl fmt::Debug for ListenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenSource")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl ListenSource {
    /// Binds and starts receiving.
    pub fn start(opts: ListenOptions) -> Result<ListenSource, ListenError> {
        let (listener, rx) = Listener::start(opts)?;
        let proto = match listener.proto() {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        };
        Ok(ListenSource {
            listener: Some(listener),
            wait: crate::source::Wakeable::new(rx),
            proto,
            n: 0,
        })
    }

    /// The address it receives on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().map(Listener::local_addr)
    }
}

fn hand(
    proto: &'static str,
    n: &mut u64,
    msg: &Received,
    sink: &mut dyn FnMut(crate::source::Item<'_>),
) {
    sink(crate::source::Item::Bytes {
        bytes: &msg.bytes,
        place: crate::source::Place::Peer(proto, msg.peer),
        offset: *n,
        read_at: msg.at,
    });
    *n += 1;
}

impl crate::source::Source for ListenSource {
    fn poll(
        &mut self,
        deadline: Instant,
        sink: &mut dyn FnMut(crate::source::Item<'_>),
    ) -> Result<(), crate::source::SourceError> {
        let (proto, n) = (self.proto, &mut self.n);
        self.wait.each(deadline, |m| hand(proto, n, &m, sink));
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), crate::source::SourceError> {
        Ok(())
    }

    fn stopper(&self) -> crate::source::StopHandle {
        self.wait.stopper()
    }

    fn close(mut self: Box<Self>, sink: &mut dyn FnMut(crate::source::Item<'_>)) -> String {
        if let Some(l) = self.listener.take() {
            l.shutdown();
        }
        // Received but not handed out: nothing could bring these back.
        let (proto, n) = (self.proto, &mut self.n);
        for m in self.wait.rest() {
            hand(proto, n, &m, sink);
        }
        // The listener logged its totals when it stopped.
        String::new()
    }
}
