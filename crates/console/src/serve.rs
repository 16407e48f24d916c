//! The agent's console server: HTTP/1.1 on a std `TcpListener`, blocking, one thread per
//! connection (at most [`MAX_CONNECTIONS`] at once; beyond that a connection gets 503), one
//! request per connection. The agent has no async runtime, and a console is used by a
//! person or two: a thread per request is the simplest thing that serves them, and adds
//! no HTTP crate to the agent.
//!
//! Limits: the request head at most 16 KiB (431 beyond), a body at most
//! [`crate::http::MAX_BODY`] (413 beyond), 5 s to send the request (the connection is
//! then dropped), 10 s to take the answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Console;
use crate::http::{MAX_BODY, Request, Response};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
const MAX_HEAD: usize = 16 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound console listener.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Server { listener, addr })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stopped()` says so (checked after every accepted connection: wake a
    /// blocked `accept` by connecting to [`Server::local_addr`]).
    pub fn run(self, console: Arc<Console>, stopped: impl Fn() -> bool) {
        let active = Arc::new(AtomicUsize::new(0));
        for conn in self.listener.incoming() {
            if stopped() {
                break;
            }
            let mut stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "console: accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::AcqRel);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                write_response(
                    &mut stream,
                    &Response::new(503, "text/plain; charset=utf-8", b"busy\n".to_vec())
                        .with("Retry-After", "1".into()),
                );
                continue;
            }
            let console = console.clone();
            let active = active.clone();
            let spawned = std::thread::Builder::new()
                .name("console-conn".into())
                .spawn(move || {
                    serve_one(stream, &console);
                    active.fetch_sub(1, Ordering::AcqRel);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "console: no thread for a connection");
            }
        }
    }
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn plain(status: u16, text: &str) -> Response {
    Response::new(
        status,
        "text/plain; charset=utf-8",
        format!("{text}\n").into_bytes(),
    )
}

/// Reads one request and answers it.
fn serve_one(mut stream: TcpStream, console: &Console) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let peer = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let response = match read_request(&mut stream, peer) {
        Ok(req) => console.handle(&req),
        Err(Some(r)) => r,
        Err(None) => return,
    };
    write_response(&mut stream, &response);
}

/// The request, or the answer to a bad one (`None`: the client went away or was too
/// slow; nothing to answer).
fn read_request(stream: &mut TcpStream, peer: String) -> Result<Request, Option<Response>> {
    let started = Instant::now();
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    let head_end = loop {
        if let Some(end) = header_end(&buf[..n]) {
            break end;
        }
        if n == buf.len() {
            return Err(Some(plain(431, "the request head is larger than 16 KiB")));
        }
        let left = READ_TIMEOUT.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(None);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf[n..]) {
            Ok(0) | Err(_) => return Err(None),
            Ok(r) => n += r,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or("").split_ascii_whitespace();
    let (Some(method), Some(target), Some(_version)) = (words.next(), words.next(), words.next())
    else {
        return Err(Some(plain(400, "malformed request line")));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        peer,
        ..Request::default()
    };
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "cookie" => req.cookie = Some(value),
            "content-type" => req.content_type = Some(value),
            "origin" => req.origin = Some(value),
            "host" => req.host = Some(value),
            "content-length" => {
                length = value
                    .parse()
                    .map_err(|_| Some(plain(400, "Content-Length is not a number")))?;
            }
            "transfer-encoding" => {
                return Err(Some(plain(
                    400,
                    "chunked request bodies are not accepted; send Content-Length",
                )));
            }
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err(Some(plain(
            413,
            &format!("the request body is larger than {MAX_BODY} bytes"),
        )));
    }
    let mut body = buf[head_end..n].to_vec();
    body.truncate(length);
    while body.len() < length {
        let left = READ_TIMEOUT.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(None);
        }
        let _ = stream.set_read_timeout(Some(left));
        let mut chunk = vec![0u8; (length - body.len()).min(16 << 10)];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(None),
            Ok(r) => body.extend_from_slice(&chunk[..r]),
        }
    }
    req.body = body;
    Ok(req)
}

fn write_response(stream: &mut TcpStream, r: &Response) {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, r.reason());
    for (k, v) in &r.headers {
        // Header values are built by the console; a line break would split the head.
        if v.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&r.body);
    let _ = stream.flush();
}
