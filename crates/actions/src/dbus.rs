//! A minimal, blocking D-Bus client: just enough to call a method on the session bus
//! (`org.freedesktop.Notifications.Notify` for the `dialog` action) with a hard deadline.
//!
//! Why not a crate: `zbus` (even its blocking API) brings an async runtime and some 60
//! crates, `notify-rust` sits on `zbus` or on libdbus (C), and `dbus` links libdbus. The
//! `dialog` action needs one method call with a fixed signature over a Unix socket:
//! SASL `EXTERNAL` authentication, `Hello`, one call, its reply. That is this module
//! (little-endian marshalling of the basic types, arrays, structs, dict entries and
//! variants; reading any message). Every read and write runs under the caller's deadline,
//! so a bus that stops answering cannot hold the worker.
//!
//! Addresses: `unix:path=…` and (Linux) `unix:abstract=…`, several separated by `;` (the
//! first that connects wins), values percent-decoded as the specification says.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Largest message accepted (the specification allows 128 MiB; replies here are tiny).
const MAX_MESSAGE: usize = 4 << 20;

/// Message types.
pub(crate) const METHOD_CALL: u8 = 1;
pub(crate) const METHOD_RETURN: u8 = 2;
pub(crate) const ERROR: u8 = 3;

/// A D-Bus value, as read or to be written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Double(f64),
    Str(String),
    ObjectPath(String),
    Signature(String),
    /// Element signature and elements.
    Array(String, Vec<Value>),
    Struct(Vec<Value>),
    DictEntry(Box<Value>, Box<Value>),
    Variant(Box<Value>),
}

impl Value {
    /// The value's type signature.
    pub(crate) fn signature(&self) -> String {
        match self {
            Value::Byte(_) => "y".into(),
            Value::Bool(_) => "b".into(),
            Value::I16(_) => "n".into(),
            Value::U16(_) => "q".into(),
            Value::I32(_) => "i".into(),
            Value::U32(_) => "u".into(),
            Value::I64(_) => "x".into(),
            Value::U64(_) => "t".into(),
            Value::Double(_) => "d".into(),
            Value::Str(_) => "s".into(),
            Value::ObjectPath(_) => "o".into(),
            Value::Signature(_) => "g".into(),
            Value::Array(elem, _) => format!("a{elem}"),
            Value::Struct(fields) => {
                let inner: String = fields.iter().map(Value::signature).collect();
                format!("({inner})")
            }
            Value::DictEntry(k, v) => format!("{{{}{}}}", k.signature(), v.signature()),
            Value::Variant(_) => "v".into(),
        }
    }

    /// The string inside `Str`, `ObjectPath` or `Signature`.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::ObjectPath(s) | Value::Signature(s) => Some(s),
            _ => None,
        }
    }
}

/// Why a call did not get a reply.
#[derive(Debug)]
pub(crate) enum BusError {
    /// No address could be connected to.
    Connect(String),
    /// The connection broke or timed out.
    Io(io::Error),
    /// The bus or the peer answered in a way this client does not understand.
    Protocol(String),
    /// The peer answered with an error message.
    Remote { name: String, message: String },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Connect(m) => write!(f, "cannot connect to the bus: {m}"),
            BusError::Io(e) if is_timeout(e) => write!(f, "the bus did not answer in time"),
            BusError::Io(e) => write!(f, "bus connection failed: {e}"),
            BusError::Protocol(m) => write!(f, "D-Bus protocol error: {m}"),
            BusError::Remote { name, message } if message.is_empty() => write!(f, "{name}"),
            BusError::Remote { name, message } => write!(f, "{name}: {message}"),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl From<io::Error> for BusError {
    fn from(e: io::Error) -> BusError {
        BusError::Io(e)
    }
}

fn protocol(m: impl Into<String>) -> BusError {
    BusError::Protocol(m.into())
}

/// A message read from or written to the bus.
#[derive(Debug, Clone, Default)]
pub(crate) struct Message {
    pub(crate) kind: u8,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) serial: u32,
    pub(crate) path: Option<String>,
    pub(crate) interface: Option<String>,
    pub(crate) member: Option<String>,
    pub(crate) error_name: Option<String>,
    pub(crate) reply_serial: Option<u32>,
    pub(crate) destination: Option<String>,
    pub(crate) sender: Option<String>,
    pub(crate) body: Vec<Value>,
}

impl Message {
    /// A method call.
    pub(crate) fn call(
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        body: Vec<Value>,
    ) -> Message {
        Message {
            kind: METHOD_CALL,
            path: Some(path.into()),
            interface: Some(interface.into()),
            member: Some(member.into()),
            destination: Some(destination.into()),
            body,
            ..Message::default()
        }
    }

    /// A reply to `to` (a method return).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn reply(to: &Message, body: Vec<Value>) -> Message {
        Message {
            kind: METHOD_RETURN,
            reply_serial: Some(to.serial),
            destination: to.sender.clone(),
            body,
            ..Message::default()
        }
    }

    fn encode(&self, serial: u32) -> Vec<u8> {
        let mut body = Writer::default();
        for v in &self.body {
            body.value(v);
        }
        let signature: String = self.body.iter().map(Value::signature).collect();
        let mut fields = Vec::new();
        let mut field = |code: u8, v: Value| {
            fields.push(Value::Struct(vec![
                Value::Byte(code),
                Value::Variant(Box::new(v)),
            ]))
        };
        if let Some(p) = &self.path {
            field(1, Value::ObjectPath(p.clone()));
        }
        if let Some(i) = &self.interface {
            field(2, Value::Str(i.clone()));
        }
        if let Some(m) = &self.member {
            field(3, Value::Str(m.clone()));
        }
        if let Some(e) = &self.error_name {
            field(4, Value::Str(e.clone()));
        }
        if let Some(r) = self.reply_serial {
            field(5, Value::U32(r));
        }
        if let Some(d) = &self.destination {
            field(6, Value::Str(d.clone()));
        }
        if !signature.is_empty() {
            field(8, Value::Signature(signature));
        }
        let mut out = Writer::default();
        out.u8(b'l');
        out.u8(self.kind);
        out.u8(0);
        out.u8(1);
        out.u32(body.buf.len() as u32);
        out.u32(serial);
        out.value(&Value::Array("(yv)".into(), fields));
        out.align(8);
        out.buf.extend_from_slice(&body.buf);
        out.buf
    }
}

/// Little-endian marshalling.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn signature(&mut self, s: &str) {
        self.u8(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Byte(b) => self.u8(*b),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::I16(n) => {
                self.align(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U16(n) => {
                self.align(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::I32(n) => {
                self.align(4);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U32(n) => self.u32(*n),
            Value::I64(n) => {
                self.align(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U64(n) => {
                self.align(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Double(d) => {
                self.align(8);
                self.buf.extend_from_slice(&d.to_le_bytes());
            }
            Value::Str(s) | Value::ObjectPath(s) => self.string(s),
            Value::Signature(s) => self.signature(s),
            Value::Array(elem, items) => {
                self.u32(0);
                let len_at = self.buf.len() - 4;
                self.align(alignment(elem.as_bytes().first().copied().unwrap_or(b'y')));
                let start = self.buf.len();
                for item in items {
                    self.value(item);
                }
                let len = (self.buf.len() - start) as u32;
                self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Value::Struct(fields) => {
                self.align(8);
                for f in fields {
                    self.value(f);
                }
            }
            Value::DictEntry(k, v) => {
                self.align(8);
                self.value(k);
                self.value(v);
            }
            Value::Variant(inner) => {
                self.signature(&inner.signature());
                self.value(inner);
            }
        }
    }
}

/// The alignment of a type by its first signature character.
fn alignment(code: u8) -> usize {
    match code {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 4,
    }
}

/// Little-endian unmarshalling of one message's header fields or body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Reader<'_> {
    fn align(&mut self, n: usize) -> Result<(), BusError> {
        let to = self.pos.div_ceil(n) * n;
        if to > self.buf.len() {
            return Err(protocol("message ends inside padding"));
        }
        self.pos = to;
        Ok(())
    }
    fn take(&mut self, n: usize) -> Result<&[u8], BusError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| protocol("message is shorter than its contents"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], BusError> {
        self.align(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, BusError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }
    fn text(&mut self, len: usize) -> Result<String, BusError> {
        let bytes = self.take(len)?.to_vec();
        if self.take(1)? != [0] {
            return Err(protocol("string without its NUL"));
        }
        String::from_utf8(bytes).map_err(|_| protocol("string is not UTF-8"))
    }

    /// Reads one value of the complete type at the start of `sig`; returns the value and
    /// the rest of the signature.
    fn value<'s>(&mut self, sig: &'s str) -> Result<(Value, &'s str), BusError> {
        let Some(&code) = sig.as_bytes().first() else {
            return Err(protocol("empty signature"));
        };
        let rest = &sig[1..];
        let v = match code {
            b'y' => Value::Byte(self.take(1)?[0]),
            b'b' => Value::Bool(self.u32()? != 0),
            b'n' => Value::I16(i16::from_le_bytes(self.fixed()?)),
            b'q' => Value::U16(u16::from_le_bytes(self.fixed()?)),
            b'i' => Value::I32(i32::from_le_bytes(self.fixed()?)),
            b'u' | b'h' => Value::U32(self.u32()?),
            b'x' => Value::I64(i64::from_le_bytes(self.fixed()?)),
            b't' => Value::U64(u64::from_le_bytes(self.fixed()?)),
            b'd' => Value::Double(f64::from_le_bytes(self.fixed()?)),
            b's' | b'o' => {
                let len = self.u32()? as usize;
                let s = self.text(len)?;
                if code == b's' {
                    Value::Str(s)
                } else {
                    Value::ObjectPath(s)
                }
            }
            b'g' => {
                let len = usize::from(self.take(1)?[0]);
                Value::Signature(self.text(len)?)
            }
            b'v' => {
                let len = usize::from(self.take(1)?[0]);
                let inner_sig = self.text(len)?;
                self.nest()?;
                let (inner, left) = self.value(&inner_sig)?;
                self.depth -= 1;
                if !left.is_empty() {
                    return Err(protocol("variant holds more than one value"));
                }
                Value::Variant(Box::new(inner))
            }
            b'a' => {
                let elem_len = complete_type_len(rest)?;
                let elem = &rest[..elem_len];
                let len = self.u32()? as usize;
                self.align(alignment(elem.as_bytes()[0]))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or_else(|| protocol("array is longer than the message"))?;
                self.nest()?;
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value(elem)?.0);
                }
                self.depth -= 1;
                return Ok((Value::Array(elem.to_owned(), items), &rest[elem_len..]));
            }
            b'(' => {
                let len = complete_type_len(sig)?;
                let mut inner = &sig[1..len - 1];
                self.align(8)?;
                self.nest()?;
                let mut fields = Vec::new();
                while !inner.is_empty() {
                    let (v, left) = self.value(inner)?;
                    fields.push(v);
                    inner = left;
                }
                self.depth -= 1;
                return Ok((Value::Struct(fields), &sig[len..]));
            }
            b'{' => {
                let len = complete_type_len(sig)?;
                let inner = &sig[1..len - 1];
                self.align(8)?;
                self.nest()?;
                let (k, left) = self.value(inner)?;
                let (v, _) = self.value(left)?;
                self.depth -= 1;
                return Ok((Value::DictEntry(Box::new(k), Box::new(v)), &sig[len..]));
            }
            other => {
                return Err(protocol(format!(
                    "unsupported type code `{}`",
                    char::from(other)
                )));
            }
        };
        Ok((v, rest))
    }

    fn nest(&mut self) -> Result<(), BusError> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(protocol("values nested too deeply"));
        }
        Ok(())
    }
}

/// The length of the first complete type in `sig`.
fn complete_type_len(sig: &str) -> Result<usize, BusError> {
    let b = sig.as_bytes();
    match b.first() {
        None => Err(protocol("signature ends early")),
        Some(b'a') => Ok(1 + complete_type_len(&sig[1..])?),
        Some(&open @ (b'(' | b'{')) => {
            let close = if open == b'(' { b')' } else { b'}' };
            let mut depth = 0usize;
            for (i, c) in b.iter().enumerate() {
                if *c == open {
                    depth += 1;
                } else if *c == close {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
            }
            Err(protocol("unbalanced signature"))
        }
        Some(_) => Ok(1),
    }
}

/// A connection to a bus, with a deadline for everything it does.
pub(crate) struct Connection {
    stream: UnixStream,
    serial: u32,
    deadline: Instant,
    /// The unique name the bus gave us.
    pub(crate) unique_name: String,
}

impl Connection {
    /// Connects to the first address of `address` that accepts, authenticates as this
    /// process's user and says `Hello`, all before `deadline`.
    pub(crate) fn open(address: &str, deadline: Instant) -> Result<Connection, BusError> {
        let stream = connect(address)?;
        let mut conn = Connection {
            stream,
            serial: 0,
            deadline,
            unique_name: String::new(),
        };
        conn.authenticate()?;
        let reply = conn.call(Message::call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
            Vec::new(),
        ))?;
        conn.unique_name = reply
            .body
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| protocol("Hello returned no name"))?
            .to_owned();
        Ok(conn)
    }

    /// Moves the deadline (e.g. for a long-running test server).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    fn remaining(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(left)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let left = self.remaining()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write_all(bytes)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let left = self.remaining()?;
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_line(&mut self) -> Result<String, BusError> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 1024 {
                return Err(protocol("authentication line too long"));
            }
            self.read_exact(&mut b)?;
            line.push(b[0]);
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| protocol("authentication line is not text"))
    }

    fn authenticate(&mut self) -> Result<(), BusError> {
        let uid = rustix::process::getuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        self.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let answer = self.read_line()?;
        if !answer.starts_with("OK ") {
            return Err(protocol(format!(
                "the bus refused EXTERNAL authentication: {answer}"
            )));
        }
        self.write_all(b"BEGIN\r\n")?;
        Ok(())
    }

    /// Sends a message; returns its serial.
    pub(crate) fn send(&mut self, message: &Message) -> Result<u32, BusError> {
        self.serial += 1;
        let serial = self.serial;
        let bytes = message.encode(serial);
        self.write_all(&bytes)?;
        Ok(serial)
    }

    /// Reads the next message.
    pub(crate) fn receive(&mut self) -> Result<Message, BusError> {
        let mut fixed = [0u8; 16];
        self.read_exact(&mut fixed)?;
        if fixed[0] != b'l' && fixed[0] != b'B' {
            return Err(protocol("bad endianness byte"));
        }
        if fixed[0] == b'B' {
            return Err(protocol("big-endian messages are not supported"));
        }
        let body_len = u32::from_le_bytes(fixed[4..8].try_into().unwrap_or_default()) as usize;
        let fields_len = u32::from_le_bytes(fixed[12..16].try_into().unwrap_or_default()) as usize;
        let header_len = (16 + fields_len).div_ceil(8) * 8;
        let total = header_len
            .checked_add(body_len)
            .filter(|t| *t <= MAX_MESSAGE)
            .ok_or_else(|| protocol("message too large"))?;
        let mut buf = vec![0u8; total];
        buf[..16].copy_from_slice(&fixed);
        self.read_exact(&mut buf[16..])?;
        let mut message = Message {
            kind: fixed[1],
            serial: u32::from_le_bytes(fixed[8..12].try_into().unwrap_or_default()),
            ..Message::default()
        };
        let mut r = Reader {
            buf: &buf[..16 + fields_len],
            pos: 12,
            depth: 0,
        };
        let (Value::Array(_, fields), _) = r.value("a(yv)")? else {
            return Err(protocol("bad header fields"));
        };
        let mut signature = String::new();
        for f in fields {
            let Value::Struct(f) = f else { continue };
            let (Some(Value::Byte(code)), Some(Value::Variant(v))) = (f.first(), f.get(1)) else {
                continue;
            };
            let s = v.as_str().map(str::to_owned);
            match code {
                1 => message.path = s,
                2 => message.interface = s,
                3 => message.member = s,
                4 => message.error_name = s,
                5 => {
                    if let Value::U32(n) = **v {
                        message.reply_serial = Some(n);
                    }
                }
                6 => message.destination = s,
                7 => message.sender = s,
                8 => signature = s.unwrap_or_default(),
                _ => {}
            }
        }
        let mut r = Reader {
            buf: &buf[header_len..],
            pos: 0,
            depth: 0,
        };
        let mut sig = signature.as_str();
        while !sig.is_empty() {
            let (v, rest) = r.value(sig)?;
            message.body.push(v);
            sig = rest;
        }
        Ok(message)
    }

    /// Sends a method call and waits for its reply (other messages are skipped). An error
    /// reply becomes [`BusError::Remote`].
    pub(crate) fn call(&mut self, message: Message) -> Result<Message, BusError> {
        let serial = self.send(&message)?;
        loop {
            let reply = self.receive()?;
            if reply.reply_serial != Some(serial) {
                continue;
            }
            return match reply.kind {
                METHOD_RETURN => Ok(reply),
                ERROR => Err(BusError::Remote {
                    name: reply.error_name.clone().unwrap_or_default(),
                    message: reply
                        .body
                        .first()
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                }),
                _ => continue,
            };
        }
    }
}

/// Connects to the first address in `address` (`;`-separated) that accepts.
fn connect(address: &str) -> Result<UnixStream, BusError> {
    let mut errors = Vec::new();
    for one in address.split(';').filter(|a| !a.is_empty()) {
        match connect_one(one) {
            Ok(s) => return Ok(s),
            Err(e) => errors.push(format!("{one}: {e}")),
        }
    }
    if errors.is_empty() {
        errors.push(format!("no usable address in {address:?}"));
    }
    Err(BusError::Connect(errors.join("; ")))
}

fn connect_one(address: &str) -> io::Result<UnixStream> {
    let (transport, params) = address.split_once(':').unwrap_or((address, ""));
    if transport != "unix" {
        return Err(io::Error::other(format!(
            "transport `{transport}` is not supported (only unix)"
        )));
    }
    for kv in params.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = unescape(v);
        match k {
            "path" => return UnixStream::connect(v),
            #[cfg(target_os = "linux")]
            "abstract" => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(v.as_bytes())?;
                return UnixStream::connect_addr(&addr);
            }
            _ => {}
        }
    }
    Err(io::Error::other("no `path` (or `abstract`) in the address"))
}

/// Percent-decodes a D-Bus address value.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).and_then(|c| char::from(*c).to_digit(16)),
                b.get(i + 2).and_then(|c| char::from(*c).to_digit(16)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_marshalling() {
        let body = vec![
            Value::Str("watchpost".into()),
            Value::U32(0),
            Value::Array("s".into(), vec![Value::Str("a".into())]),
            Value::Array(
                "{sv}".into(),
                vec![Value::DictEntry(
                    Box::new(Value::Str("urgency".into())),
                    Box::new(Value::Variant(Box::new(Value::Byte(2)))),
                )],
            ),
            Value::I32(-1),
            Value::Struct(vec![Value::U64(7), Value::Bool(true), Value::Double(1.5)]),
        ];
        let sig: String = body.iter().map(Value::signature).collect();
        assert_eq!(sig, "suasa{sv}i(tbd)");
        let mut w = Writer::default();
        for v in &body {
            w.value(v);
        }
        let mut r = Reader {
            buf: &w.buf,
            pos: 0,
            depth: 0,
        };
        let mut rest = sig.as_str();
        let mut read = Vec::new();
        while !rest.is_empty() {
            let (v, left) = r.value(rest).unwrap();
            read.push(v);
            rest = left;
        }
        assert_eq!(read, body);
        assert_eq!(r.pos, w.buf.len());
    }

    #[test]
    fn truncated_and_hostile_input_is_an_error_not_a_panic() {
        let mut w = Writer::default();
        w.value(&Value::Str("hello".into()));
        for cut in 0..w.buf.len() {
            let mut r = Reader {
                buf: &w.buf[..cut],
                pos: 0,
                depth: 0,
            };
            assert!(r.value("s").is_err());
        }
        let deep = "v";
        let mut nested = Vec::new();
        for _ in 0..100 {
            nested.extend_from_slice(&[1, b'v', 0]);
        }
        let mut r = Reader {
            buf: &nested,
            pos: 0,
            depth: 0,
        };
        assert!(r.value(deep).is_err());
        assert!(complete_type_len("a(s").is_err());
    }

    #[test]
    fn addresses_are_unescaped_and_unknown_transports_refused() {
        assert_eq!(unescape("/tmp/a%2cb"), "/tmp/a,b");
        assert_eq!(unescape("100%"), "100%");
        let e = connect("tcp:host=localhost,port=1").unwrap_err();
        assert!(e.to_string().contains("only unix"), "{e}");
        let e = connect("unix:path=/nonexistent/watchpost-test/bus").unwrap_err();
        assert!(matches!(e, BusError::Connect(_)), "{e}");
    }
}
