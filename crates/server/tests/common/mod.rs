//! What the server's tests share: a private PostgreSQL, the server in this process, and a
//! raw HTTP/1.1 client over a std `TcpStream` (so tests can also send what no proper
//! client would).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use watchpost_fleet_protocol::{Batch, EnrollRequest, EnrollResponse, encode_batch};
use watchpost_pgtest::{Cluster, Options};
use watchpost_server::config::Config;

/// A database and a server on it.
pub struct Env {
    pub pg: Cluster,
    pub rt: tokio::runtime::Runtime,
    pub server: Option<watchpost_server::Running>,
    pub addr: SocketAddr,
    pub config: Config,
}

impl Env {
    pub fn start(tune: impl FnOnce(&mut Config)) -> Option<Env> {
        let pg = Cluster::start_or_skip(Options::default())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = Config::for_tests("127.0.0.1:0".parse().unwrap(), &pg.url());
        tune(&mut config);
        let server = rt
            .block_on(watchpost_server::start(config.clone()))
            .expect("server starts");
        let addr = server.addr;
        Some(Env {
            pg,
            rt,
            server: Some(server),
            addr,
            config,
        })
    }

    /// A server with the web console on.
    pub fn with_console() -> Option<Env> {
        Env::start(|c| {
            c.console = Some(watchpost_server::config::ConsoleSettings {
                session_key_file: None,
            });
        })
    }

    /// A database connection for checks and admin calls.
    pub fn db(&self) -> tokio_postgres::Client {
        self.rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.pg.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        })
    }

    pub fn stop(mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.stop());
        }
    }
}

/// An answer: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes, reads the answer until the server closes.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_answer(&buf)
}

pub fn parse_answer(buf: &[u8]) -> Answer {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// One request with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

pub fn enroll(addr: SocketAddr, secret: &str, host_id: &str, hostname: &str) -> Answer {
    let req = EnrollRequest {
        secret: secret.into(),
        host_id: host_id.into(),
        hostname: hostname.into(),
        os: "linux".into(),
        version: "test".into(),
    };
    request(
        addr,
        "POST",
        "/api/v1/enroll",
        &[("Content-Type", "application/json")],
        &serde_json::to_vec(&req).unwrap(),
    )
}

pub fn credential(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let r: EnrollResponse = serde_json::from_slice(&a.body).unwrap();
    r.credential
}

pub fn send_batch(addr: SocketAddr, cred: &str, batch: &Batch) -> Answer {
    let auth = format!("Bearer {cred}");
    request(
        addr,
        "POST",
        "/api/v1/batches",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &encode_batch(batch),
    )
}

/// A batch of `n` event records from `first` (event ids = sequence numbers), host `host`;
/// every third is an anomaly waiting for an acknowledgement.
pub fn events(stream: &str, first: u64, n: u64, host: &str) -> Batch {
    use watchpost_fleet_protocol::{EventRecord, Fields, Record};
    Batch {
        stream: stream.into(),
        first_seq: first,
        last_seq: first + n - 1,
        records: (first..first + n)
            .map(|seq| {
                Record::Event(EventRecord {
                    seq,
                    id: seq,
                    time_ms: Some(jiff::Timestamp::now().as_millisecond() - 1000),
                    stored_ms: jiff::Timestamp::now().as_millisecond() - 500,
                    source: "sep-av".into(),
                    host: host.into(),
                    filters: vec!["av-detection".into()],
                    anomaly: seq.is_multiple_of(3),
                    anomaly_why: (seq.is_multiple_of(3))
                        .then(|| "new-file: new value \"x\"".into()),
                    needs_ack: seq.is_multiple_of(3),
                    fields: Fields(vec![
                        ("risk_name".into(), format!("EICAR Test String {seq}")),
                        ("user".into(), "alice".into()),
                    ]),
                    raw: format!("Virus found,Computer name: {host},seq {seq}"),
                    origin: None,
                })
            })
            .collect(),
    }
}
