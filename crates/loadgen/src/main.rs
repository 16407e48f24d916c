//! `watchpost-loadgen`: plays N watchpost agents against `watchpost-server` over the real
//! protocol and TLS, the way the agent talks to it. Each agent enrolls (with a host id of
//! its own); sends a batch of events every `--batch-interval` seconds (the agent's
//! `[fleet] interval`) so that all together send `--rate` events per second, over one
//! kept-alive connection; and, over a kept-alive connection of their own (as the agent's
//! heartbeat thread sends them), a heartbeat every `--heartbeat` seconds. A batch that fails
//! (the server killed, PostgreSQL restarting) is sent again with the same sequence numbers
//! until it is acknowledged, as the agent does. After `--duration` it drains what is
//! unacknowledged, then reports enrolled and online agents, the sustained ingest rate, the
//! time from a batch's first send to its acknowledgement and a heartbeat's (p50/p99/max),
//! the CPU and memory of the processes named with `--watch` (with their children) and its
//! own, and, with `--db`, checks every agent's sequence numbers in PostgreSQL: each stored
//! once, none missing.
//!
//! With `--poll` each agent also long-polls the channel back (`channel.rs`) and the
//! report says how fast configuration versions and commands reached the agents.
//!
//! The figures are printed as text and, with `--json FILE`, written as JSON.
//!
//! `--processes N` plays the agents in N processes of this program (agent `i` in the
//! `i mod N`-th, started with the hidden `--shard K/N`), each writing what it saw as a
//! [`Snapshot`] for the first, which measures and reports for all; `--server` may name
//! several instances (agent `i` talks to the `i mod n`-th).

mod channel;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use watchpost_fleet_protocol::{
    self as proto, Batch, BatchAck, EnrollRequest, EnrollResponse, EventRecord, Fields, Heartbeat,
    Record,
};

#[derive(Parser, Clone)]
#[command(
    name = "watchpost-loadgen",
    about = "Plays many watchpost agents against watchpost-server"
)]
struct Args {
    /// The server (`https://127.0.0.1:8443`). Several (comma-separated or the option
    /// repeated): instances of one server on one database, as behind a load balancer;
    /// agent `i` talks to the `i mod n`-th.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// CA certificate (PEM) to trust.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The enrollment secret.
    #[arg(long, env = "WATCHPOST_LOADGEN_SECRET")]
    secret: String,
    /// Agents to play.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Events per second, all agents together.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of load (after every agent started).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds between an agent's heartbeats.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Seconds between an agent's batches.
    #[arg(long, default_value_t = 10.0)]
    batch_interval: f64,
    /// Seconds over which the agents start (enroll) one after another.
    #[arg(long, default_value_t = 20.0)]
    ramp: f64,
    /// Host-id prefix (several runs against one database use different ones).
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// PostgreSQL connection string: check every sequence number at the end.
    #[arg(long)]
    db: Option<String>,
    /// Processes to measure: NAME=PID, or NAME=@FILE (the PID on the file's first line,
    /// read at each sample: a process started again is followed). Children count with
    /// their parent.
    #[arg(long)]
    watch: Vec<String>,
    /// Longest wait for the last acknowledgements after the load.
    #[arg(long, default_value_t = 300)]
    drain: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A connection per batch (no keep-alive).
    #[arg(long)]
    no_keep_alive: bool,
    /// After every N-th batch acknowledged (of all agents), the agent whose batch it was
    /// probes the server's exactly-once rules on its connection: the batch just acknowledged sent again (must be answered
    /// 200 `already_committed`), the one acknowledged before it replayed (must be refused:
    /// 409 `replayed`) and a batch after a gap (must be refused: 409 `out_of_order`).
    /// 0: no probes.
    #[arg(long, default_value_t = 0)]
    probe_every: u64,
    /// Each agent also long-polls for configuration and commands (and reports them).
    #[arg(long)]
    poll: bool,
    /// Connect every agent from the same address, not each from one of its own. By
    /// default, against a server on a 127.x.x.x address, agent `i` connects from
    /// 127.16.0.0 + i + 1 (all of 127.0.0.0/8 is this machine's): from one address,
    /// tens of thousands of connections to one server port exhaust the ephemeral ports,
    /// and the kernel's search for a free one in `connect()` becomes most of the
    /// simulator's CPU, which real agents, each on its own host, never cost.
    #[arg(long)]
    one_source: bool,
    /// Play the agents in this many processes (agent `i` in the `i mod n`-th), each
    /// reporting to this one, which measures and reports for all: every connection is a
    /// file descriptor, and a process may hold only so many (`ulimit -Hn`).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// (Set by `--processes` for the processes it starts: `K/N`.)
    #[arg(long, hide = true)]
    shard: Option<String>,
    /// (Set by `--processes`: where a shard writes what it saw.)
    #[arg(long, hide = true)]
    shard_out: Option<PathBuf>,
}

/// The exactly-once probes: what each must get, and what it got.
#[derive(Default)]
struct Probes {
    /// Per probe: answered as expected, answered otherwise, not answered (the
    /// connection failed, 5xx, 429: a load the machine could not carry, not a verdict).
    resent: [u64; 3],
    replayed: [u64; 3],
    gap: [u64; 3],
}

/// Most records in one batch (the agent's `[fleet] batch` default).
const MAX_BATCH: usize = 1000;

struct Stats {
    enrolled: AtomicU64,
    events_acked: AtomicU64,
    batches_acked: AtomicU64,
    heartbeats: AtomicU64,
    failures: AtomicU64,
    duplicates: AtomicU64,
    latencies_ms: std::sync::Mutex<Vec<u32>>,
    heartbeat_ms: std::sync::Mutex<Vec<u32>>,
    last_heartbeat: std::sync::Mutex<HashMap<usize, Instant>>,
    /// Per agent: (agent id on the server, last sequence number acknowledged).
    acked: std::sync::Mutex<HashMap<usize, (i64, u64)>>,
    /// Failed attempts by what failed and why.
    failure_kinds: std::sync::Mutex<HashMap<String, u64>>,
    /// Batches the server answered `already_committed` (sent again after a lost answer).
    already_committed: AtomicU64,
    probes: std::sync::Mutex<Probes>,
}

impl Stats {
    /// Counts a failed attempt of `what`.
    fn fail(&self, what: &str, result: &Result<(u16, Bytes)>) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let why = match result {
            Ok((status, body)) => {
                let code = serde_json::from_slice::<proto::ApiError>(body)
                    .map(|e| e.code)
                    .unwrap_or_default();
                format!("{what}: HTTP {status} {code}")
            }
            Err(e) => {
                let text = e.to_string();
                format!("{what}: {}", text.chars().take(60).collect::<String>())
            }
        };
        *self
            .failure_kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }
}

struct Client {
    host: String,
    port: u16,
    authority: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    keep_alive: bool,
    /// The server's address, when it is an IPv4 loopback address (agents then connect
    /// from addresses of their own, see `--one-source`).
    loopback: Option<std::net::Ipv4Addr>,
    /// The address this agent connects from.
    source: Option<std::net::Ipv4Addr>,
}

impl Client {
    /// The client of agent `i` of the server this client talks to: connecting from an
    /// address of its own when the server is on loopback (unless `one_source`).
    fn for_agent(&self, i: usize, one_source: bool) -> Client {
        let source = (!one_source && self.loopback.is_some()).then(|| {
            std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 16, 0, 1)) + i as u32)
        });
        Client {
            host: self.host.clone(),
            port: self.port,
            authority: self.authority.clone(),
            tls: self.tls.clone(),
            keep_alive: self.keep_alive,
            loopback: self.loopback,
            source,
        }
    }

    async fn tcp(&self) -> Result<tokio::net::TcpStream> {
        match (self.source, self.loopback) {
            (Some(source), Some(server)) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket
                    .bind((source, 0).into())
                    .with_context(|| format!("cannot bind to {source}"))?;
                Ok(socket.connect((server, self.port).into()).await?)
            }
            _ => Ok(tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), self.tcp())
            .await
            .context("connect timed out")??;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    Duration::from_secs(10),
                    connector.connect(name.clone(), tcp),
                )
                .await
                .context("TLS handshake timed out")??;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                Ok(send)
            }
            None => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                Ok(send)
            }
        }
    }

    /// One request on the agent's connection (made when there is none); the answer's
    /// status and body.
    async fn post(
        &self,
        conn: &mut Option<SendRequest<Full<Bytes>>>,
        path: &str,
        credential: Option<&str>,
        body: Vec<u8>,
        gzip: bool,
    ) -> Result<(u16, Bytes)> {
        self.post_on(conn, path, credential, body, gzip, self.keep_alive)
            .await
    }

    /// A request on `conn` (made when there is none, or always without `keep_alive`).
    async fn post_on(
        &self,
        conn: &mut Option<SendRequest<Full<Bytes>>>,
        path: &str,
        credential: Option<&str>,
        body: Vec<u8>,
        gzip: bool,
        keep_alive: bool,
    ) -> Result<(u16, Bytes)> {
        if conn.as_ref().is_none_or(|c| c.is_closed()) || !keep_alive {
            *conn = Some(self.connect().await?);
        }
        let Some(send) = conn.as_mut() else {
            bail!("no connection")
        };
        send.ready().await?;
        let mut req = hyper::Request::post(path)
            .header("host", &self.authority)
            .header("content-type", "application/json");
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        if let Some(c) = credential {
            req = req.header("authorization", format!("Bearer {c}"));
        }
        if !keep_alive {
            req = req.header("connection", "close");
        }
        let result = tokio::time::timeout(Duration::from_secs(60), async {
            let resp = send
                .send_request(req.body(Full::new(Bytes::from(body)))?)
                .await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        })
        .await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                *conn = None;
                Err(e)
            }
            Err(_) => {
                *conn = None;
                bail!("request timed out")
            }
        }
    }
}

fn event(seq: u64, agent: usize, host: &str) -> Record {
    let now = jiff::Timestamp::now().as_millisecond();
    Record::Event(EventRecord {
        seq,
        id: seq,
        time_ms: Some(now - 200),
        stored_ms: now,
        source: "sep-av".into(),
        host: host.into(),
        filters: vec!["av-detection".into()],
        anomaly: seq.is_multiple_of(50),
        anomaly_why: (seq.is_multiple_of(50))
            .then(|| "new-file: new value for key \"SYSTEM\"".into()),
        needs_ack: seq.is_multiple_of(50),
        fields: Fields(vec![
            ("risk_name".into(), format!("Trojan.Gen.{}", seq % 97)),
            (
                "path".into(),
                format!(
                    "C:\\Users\\user{}\\AppData\\Local\\Temp\\file{seq}.exe",
                    agent % 100
                ),
            ),
            ("action_taken".into(), "Quarantined".into()),
            ("user".into(), format!("user{}", agent % 100)),
            ("detection".into(), "auto_protect".into()),
        ]),
        raw: format!(
            "Virus found,IP Address: 10.{}.{}.{},Computer name: {host},Source: Auto-Protect scan,Risk name: Trojan.Gen.{},Occurrences: 1,File path: C:\\Users\\user{}\\AppData\\Local\\Temp\\file{seq}.exe,Actual action: Quarantined,Requested action: Cleaned,Secondary action: Quarantined",
            agent / 65536 % 256,
            agent / 256 % 256,
            agent % 256,
            seq % 97,
            agent % 100
        ),
        origin: Some(format!(
            "C:\\ProgramData\\Symantec\\Logs\\AV\\daily.Log:{}",
            seq * 300
        )),
    })
}

async fn agent(
    i: usize,
    args: Arc<Args>,
    client: Arc<Client>,
    stats: Arc<Stats>,
    start_at: Instant,
    end_at: Instant,
    channel_stats: Option<Arc<channel::ChannelStats>>,
) {
    tokio::time::sleep_until(start_at.into()).await;
    let host = format!("{}-{i:05}", args.prefix);
    let mut conn = None;
    // Enroll (retrying).
    let req = EnrollRequest {
        secret: args.secret.clone(),
        host_id: format!("{}-host-{i}", args.prefix),
        hostname: host.clone(),
        os: "windows".into(),
        version: "loadgen".into(),
    };
    let body = proto::encode_json(&req, false);
    let mut wait = Duration::from_millis(500);
    let enrolled: EnrollResponse = loop {
        let r = client
            .post(&mut conn, proto::ENROLL, None, body.clone(), false)
            .await;
        if let Ok((200, b)) = &r
            && let Ok(e) = serde_json::from_slice(b)
        {
            break e;
        }
        stats.fail("enroll", &r);
        if Instant::now() > end_at + Duration::from_secs(args.drain) {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    };
    stats.enrolled.fetch_add(1, Ordering::Relaxed);
    let cred = enrolled.credential;
    if let Some(ch) = channel_stats {
        tokio::spawn(channel::poll_loop(client.clone(), cred.clone(), ch, end_at));
    }
    let stream = format!("{}-{i}", args.prefix);
    let per_batch = args.rate / args.agents as f64 * args.batch_interval;
    let mut carry = 0.0;
    let mut next_seq = 1u64;
    let mut pending: Vec<Record> = Vec::new();
    let mut first_sent: Option<Instant> = None;
    // Spread the agents' batches over the interval.
    let phase = Duration::from_secs_f64(args.batch_interval * (i as f64 * 0.618_034).fract());
    let mut next_batch = Instant::now() + phase;
    let heartbeats = tokio::spawn(heartbeat_loop(
        i,
        host.clone(),
        cred.clone(),
        args.clone(),
        client.clone(),
        stats.clone(),
        end_at,
    ));
    // After a failure: as the agent waits (`proto::retry`).
    let mut backoff = proto::retry::FIRST;
    // The batch acknowledged before the last one, for the replay probe.
    let mut previous: Option<Batch> = None;
    loop {
        let now = Instant::now();
        let running = now < end_at;
        if !running && pending.is_empty() {
            break;
        }
        if now > end_at + Duration::from_secs(args.drain) {
            break;
        }
        if running && now >= next_batch && pending.is_empty() {
            // What gathered in every interval that has passed goes together (an agent
            // whose last batch took long sends a bigger one), up to the agent's batch.
            while next_batch <= now && pending.len() < MAX_BATCH {
                carry += per_batch;
                let n = carry.floor() as u64;
                carry -= n as f64;
                for _ in 0..n {
                    pending.push(event(next_seq, i, &host));
                    next_seq += 1;
                }
                next_batch += Duration::from_secs_f64(args.batch_interval);
            }
        }
        if !pending.is_empty() {
            let batch = Batch {
                stream: stream.clone(),
                first_seq: pending[0].seq(),
                last_seq: pending[pending.len() - 1].seq(),
                records: pending.clone(),
            };
            let started = *first_sent.get_or_insert_with(Instant::now);
            let r = client
                .post(
                    &mut conn,
                    proto::BATCHES,
                    Some(&cred),
                    proto::encode_batch(&batch),
                    true,
                )
                .await;
            match &r {
                Ok((200, b)) => {
                    let ack: Option<BatchAck> = serde_json::from_slice(b).ok();
                    if let Some(ack) = ack {
                        let ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
                        stats
                            .latencies_ms
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(ms);
                        stats
                            .events_acked
                            .fetch_add(pending.len() as u64, Ordering::Relaxed);
                        let acked_batches = stats.batches_acked.fetch_add(1, Ordering::Relaxed) + 1;
                        stats
                            .duplicates
                            .fetch_add(ack.duplicates, Ordering::Relaxed);
                        if ack.already_committed {
                            stats.already_committed.fetch_add(1, Ordering::Relaxed);
                        }
                        stats
                            .acked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(i, (enrolled.agent_id, ack.committed_seq));
                        pending.clear();
                        first_sent = None;
                        backoff = proto::retry::FIRST;
                        if running
                            && args.probe_every > 0
                            && acked_batches.is_multiple_of(args.probe_every)
                        {
                            probe(
                                &client,
                                &mut conn,
                                &cred,
                                &batch,
                                previous.as_ref(),
                                next_seq,
                                &stats,
                            )
                            .await;
                        }
                        previous = Some(batch);
                        continue;
                    }
                    stats.fail("batch", &r);
                }
                _ => stats.fail("batch", &r),
            }
            tokio::time::sleep(proto::retry::jitter(backoff)).await;
            backoff = proto::retry::next(backoff);
            continue;
        }
        let wake = if running { next_batch } else { Instant::now() };
        tokio::time::sleep_until(wake.into()).await;
    }
    let _ = heartbeats.await;
}

/// The exactly-once probes after an acknowledged batch `last` (see `--probe-every`);
/// `next` is the agent's next sequence number.
async fn probe(
    client: &Client,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    cred: &str,
    last: &Batch,
    previous: Option<&Batch>,
    next: u64,
    stats: &Stats,
) {
    let code = |b: &Bytes| {
        serde_json::from_slice::<proto::ApiError>(b)
            .map(|e| (e.code, e.expected_seq))
            .unwrap_or_default()
    };
    let tally = |slot: fn(&mut Probes) -> &mut [u64; 3], r: &Result<(u16, Bytes)>, ok: bool| {
        let answered = matches!(r, Ok((status, _)) if *status != 429 && *status < 500);
        let mut p = stats.probes.lock().unwrap_or_else(|e| e.into_inner());
        slot(&mut p)[match (answered, ok) {
            (_, true) => 0,
            (true, false) => 1,
            (false, false) => 2,
        }] += 1;
    };
    // The same batch again: acknowledged as committed, nothing stored.
    let r = client
        .post(
            conn,
            proto::BATCHES,
            Some(cred),
            proto::encode_batch(last),
            true,
        )
        .await;
    let ok = matches!(&r, Ok((200, b)) if serde_json::from_slice::<BatchAck>(b)
        .is_ok_and(|a| a.already_committed && a.committed_seq == last.last_seq && a.stored == 0));
    tally(|p| &mut p.resent, &r, ok);
    // An older batch replayed: refused, the server says where to go on.
    if let Some(old) = previous {
        let r = client
            .post(
                conn,
                proto::BATCHES,
                Some(cred),
                proto::encode_batch(old),
                true,
            )
            .await;
        let ok = matches!(&r, Ok((409, b)) if code(b) == ("replayed".into(), Some(next)));
        tally(|p| &mut p.replayed, &r, ok);
    }
    // A batch after a gap: refused.
    let gap = Batch {
        stream: last.stream.clone(),
        first_seq: next + 10,
        last_seq: next + 10,
        records: Vec::new(),
    };
    let r = client
        .post(
            conn,
            proto::BATCHES,
            Some(cred),
            proto::encode_batch(&gap),
            true,
        )
        .await;
    let ok = matches!(&r, Ok((409, b)) if code(b) == ("out_of_order".into(), Some(next)));
    tally(|p| &mut p.gap, &r, ok);
}

/// What a heartbeat of a watchpost agent with two sources, two actions and two checks
/// holds.
fn heartbeat(host: &str, i: usize, uptime: u64, committed: u64) -> Heartbeat {
    let now = jiff::Timestamp::now().as_millisecond();
    Heartbeat {
        version: "loadgen".into(),
        hostname: host.into(),
        os: "windows (loadgen)".into(),
        uptime_secs: uptime,
        config_generation: Some("0123456789abcdef".into()),
        sources: ["sep-av", "security"]
            .iter()
            .enumerate()
            .map(|(n, s)| proto::SourceStatus {
                name: (*s).into(),
                records: uptime * (n as u64 + 1),
                errors: 0,
                last_record_ms: Some(now - 1000),
            })
            .collect(),
        actions: ["syslog", "webhook"]
            .iter()
            .map(|a| proto::ActionStatus {
                name: (*a).into(),
                kind: (*a).into(),
                ok: committed,
                ..Default::default()
            })
            .collect(),
        checks: vec![
            proto::CheckStatus {
                name: "sep-definitions".into(),
                status: "ok".into(),
                detail: "definitions 20 h old (limit 72 h)".into(),
            },
            proto::CheckStatus {
                name: "sep-service".into(),
                status: if i.is_multiple_of(500) {
                    "stopped"
                } else {
                    "ok"
                }
                .into(),
                detail: String::new(),
            },
        ],
        definitions_age_hours: Some(20.0),
        baseline_pairs: Some(1200),
        shipping: proto::ShippingStatus {
            committed_seq: committed,
            ..Default::default()
        },
        ..Heartbeat::default()
    }
}

/// An agent's heartbeats until the load ends, over a kept-alive connection of their own
/// (as the agent's heartbeat thread sends them): never behind a batch.
async fn heartbeat_loop(
    i: usize,
    host: String,
    cred: String,
    args: Arc<Args>,
    client: Arc<Client>,
    stats: Arc<Stats>,
    end_at: Instant,
) {
    let started = Instant::now();
    let every = Duration::from_secs(args.heartbeat.max(1));
    let mut next = Instant::now();
    let mut conn = None;
    while next < end_at {
        tokio::time::sleep_until(next.into()).await;
        let sent = Instant::now();
        let committed = stats
            .acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i)
            .map_or(0, |a| a.1);
        let body = proto::encode_json(
            &heartbeat(&host, i, started.elapsed().as_secs(), committed),
            true,
        );
        let r = client
            .post(&mut conn, proto::HEARTBEAT, Some(&cred), body, true)
            .await;
        match &r {
            Ok((200, _)) => {
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                let done = Instant::now();
                stats
                    .last_heartbeat
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i, done);
                stats
                    .heartbeat_ms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(done.duration_since(sent).as_millis().min(u32::MAX as u128) as u32);
            }
            _ => stats.fail("heartbeat", &r),
        }
        next = sent + every;
    }
}

/// A process to measure.
#[derive(Clone)]
enum Watched {
    Pid(u32),
    File(PathBuf),
}

impl Watched {
    fn pid(&self) -> Option<u32> {
        match self {
            Watched::Pid(p) => Some(*p),
            Watched::File(f) => std::fs::read_to_string(f)
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok(),
        }
    }
}

/// CPU seconds and, with `memory`, memory (bytes: proportional set size) of each root
/// process and its descendants, from one pass over `/proc`. Memory is read only for the
/// processes of the trees asked for (`smaps_rollup` walks a process's page tables: read
/// for every process on the machine, it stalled this program and the ones it measures).
fn usage(roots: &[Option<u32>], memory: bool) -> Vec<(f64, u64)> {
    let tick = 100.0; // USER_HZ on Linux
    let page = 4096u64;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut info: HashMap<u32, (f64, u64)> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the name: state(0) ppid(1) … utime(11) stime(12) … rss(21)
            let ppid: u32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            let cpu = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            let rss = f.get(21).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * page;
            children.entry(ppid).or_default().push(pid);
            info.insert(pid, (cpu / tick, rss));
        }
    }
    roots
        .iter()
        .map(|root| {
            let mut total = (0.0, 0);
            let mut stack: Vec<u32> = root.iter().copied().collect();
            while let Some(p) = stack.pop() {
                if let Some((c, rss)) = info.get(&p) {
                    total.0 += c;
                    if memory {
                        // Proportional set size where the kernel gives it (shared memory
                        // such as PostgreSQL's shared_buffers counted once across its
                        // processes), else RSS.
                        total.1 += std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                            .ok()
                            .and_then(|t| {
                                t.lines()
                                    .find_map(|l| l.strip_prefix("Pss:"))
                                    .and_then(|v| {
                                        v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
                                    })
                            })
                            .map_or(*rss, |kb| kb * 1024);
                    }
                }
                if let Some(ch) = children.get(&p) {
                    stack.extend(ch);
                }
            }
            total
        })
        .collect()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What the agents of one process saw: the figures the report is made of. A process of
/// `--processes` writes it as JSON for the one that started it, which adds them up.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Snapshot {
    enrolled: u64,
    events_acked: u64,
    batches_acked: u64,
    heartbeats: u64,
    failures: u64,
    duplicates: u64,
    already_committed: u64,
    latencies_ms: Vec<u32>,
    heartbeat_ms: Vec<u32>,
    /// Agents whose last heartbeat was recent when the load ended.
    online: u64,
    /// Events acknowledged per second during the load.
    sustained: f64,
    /// Per agent: (index, agent id on the server, last sequence number acknowledged).
    acked: Vec<(usize, i64, u64)>,
    failure_kinds: Vec<(String, u64)>,
    /// Resent, replayed, gap: as expected, otherwise, unanswered.
    probes: [[u64; 3]; 3],
    polls: u64,
    poll_failures: u64,
    commands: u64,
    /// (version, Unix ms) of every configuration arrival.
    configs: Vec<(i32, i64)>,
}

impl Snapshot {
    /// Adds another process's figures.
    fn add(&mut self, o: Snapshot) {
        self.enrolled += o.enrolled;
        self.events_acked += o.events_acked;
        self.batches_acked += o.batches_acked;
        self.heartbeats += o.heartbeats;
        self.failures += o.failures;
        self.duplicates += o.duplicates;
        self.already_committed += o.already_committed;
        self.latencies_ms.extend(o.latencies_ms);
        self.heartbeat_ms.extend(o.heartbeat_ms);
        self.online += o.online;
        self.sustained += o.sustained;
        self.acked.extend(o.acked);
        let mut kinds: HashMap<String, u64> = self.failure_kinds.drain(..).collect();
        for (k, n) in o.failure_kinds {
            *kinds.entry(k).or_default() += n;
        }
        self.failure_kinds = kinds.into_iter().collect();
        for (a, b) in self.probes.iter_mut().zip(o.probes) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.polls += o.polls;
        self.poll_failures += o.poll_failures;
        self.commands += o.commands;
        self.configs.extend(o.configs);
    }
}

/// A client for `server` (`https://host:port` or `http://host:port`).
fn client_for(server: &str, args: &Args) -> Result<Client> {
    let (https, rest) = if let Some(r) = server.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = server.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("--server must start with https:// or http://");
    };
    let authority = rest.trim_end_matches('/').to_owned();
    let (host, port) = authority
        .rsplit_once(':')
        .map(|(h, p)| (h.trim_matches(['[', ']']).to_owned(), p.parse::<u16>()))
        .context("--server needs host:port")?;
    let port = port.context("bad port")?;
    let tls = if https {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let ca = args
            .ca_file
            .as_ref()
            .context("--ca-file is needed for https")?;
        for c in CertificateDer::pem_file_iter(ca)? {
            roots.add(c?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    } else {
        None
    };
    let loopback = host
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .filter(|a| a.is_loopback());
    Ok(Client {
        host,
        port,
        authority,
        tls,
        keep_alive: !args.no_keep_alive,
        loopback,
        source: None,
    })
}

/// `K/N` of `--shard`.
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (k, n) = s.split_once('/').context("--shard is K/N")?;
    let (k, n): (usize, usize) = (k.parse()?, n.parse()?);
    if n == 0 || k >= n {
        bail!("--shard {s}: K must be below N");
    }
    Ok((k, n))
}

/// Plays the agents `i` with `i mod n == k` from `t0` on (their ramp, load and drain) and
/// returns what they saw.
async fn play(
    args: Arc<Args>,
    clients: Arc<Vec<Client>>,
    (k, n): (usize, usize),
    t0: Instant,
) -> Snapshot {
    let stats = Arc::new(Stats {
        enrolled: AtomicU64::new(0),
        events_acked: AtomicU64::new(0),
        batches_acked: AtomicU64::new(0),
        heartbeats: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        latencies_ms: std::sync::Mutex::new(Vec::new()),
        heartbeat_ms: std::sync::Mutex::new(Vec::new()),
        last_heartbeat: std::sync::Mutex::new(HashMap::new()),
        acked: std::sync::Mutex::new(HashMap::new()),
        failure_kinds: std::sync::Mutex::new(HashMap::new()),
        already_committed: AtomicU64::new(0),
        probes: std::sync::Mutex::new(Probes::default()),
    });
    let channel_stats = Arc::new(channel::ChannelStats::default());
    let ramp = Duration::from_secs_f64(args.ramp);
    let load_start = t0 + ramp;
    let end_at = load_start + Duration::from_secs(args.duration);
    let mut tasks = Vec::with_capacity(args.agents / n + 1);
    for i in (k..args.agents).step_by(n) {
        let start_at = t0 + ramp.mul_f64(i as f64 / args.agents.max(1) as f64);
        let server = &clients[i % clients.len()];
        tasks.push(tokio::spawn(agent(
            i,
            args.clone(),
            Arc::new(server.for_agent(i, args.one_source)),
            stats.clone(),
            start_at,
            end_at,
            args.poll.then(|| channel_stats.clone()),
        )));
    }
    // Progress once every 10 s.
    let label = if n > 1 {
        format!(" process {}/{n}", k + 1)
    } else {
        String::new()
    };
    let progress = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let now = stats.events_acked.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>5.0} s{label}] enrolled {}  events acked {} ({:.0}/s)  batches {}  heartbeats {}  failures {}",
                    t0.elapsed().as_secs_f64(),
                    stats.enrolled.load(Ordering::Relaxed),
                    now,
                    (now - last) as f64 / 10.0,
                    stats.batches_acked.load(Ordering::Relaxed),
                    stats.heartbeats.load(Ordering::Relaxed),
                    stats.failures.load(Ordering::Relaxed),
                );
                last = now;
            }
        })
    };
    tokio::time::sleep_until(load_start.into()).await;
    let (t_a, e_a) = (Instant::now(), stats.events_acked.load(Ordering::Relaxed));
    tokio::time::sleep_until(end_at.into()).await;
    let online = {
        let hb = stats
            .last_heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        hb.values()
            .filter(|t| t.elapsed() < Duration::from_secs(args.heartbeat * 2 + 5))
            .count() as u64
    };
    let (t_b, e_b) = (Instant::now(), stats.events_acked.load(Ordering::Relaxed));
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    let p = stats.probes.lock().unwrap_or_else(|e| e.into_inner());
    let take = |m: &std::sync::Mutex<Vec<u32>>| {
        std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
    };
    Snapshot {
        enrolled: stats.enrolled.load(Ordering::Relaxed),
        events_acked: stats.events_acked.load(Ordering::Relaxed),
        batches_acked: stats.batches_acked.load(Ordering::Relaxed),
        heartbeats: stats.heartbeats.load(Ordering::Relaxed),
        failures: stats.failures.load(Ordering::Relaxed),
        duplicates: stats.duplicates.load(Ordering::Relaxed),
        already_committed: stats.already_committed.load(Ordering::Relaxed),
        latencies_ms: take(&stats.latencies_ms),
        heartbeat_ms: take(&stats.heartbeat_ms),
        online,
        sustained: (e_b - e_a) as f64 / t_b.duration_since(t_a).as_secs_f64().max(0.001),
        acked: stats
            .acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(i, (id, seq))| (*i, *id, *seq))
            .collect(),
        failure_kinds: stats
            .failure_kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .into_iter()
            .collect(),
        probes: [p.resent, p.replayed, p.gap],
        polls: channel_stats.polls.load(Ordering::Relaxed),
        poll_failures: channel_stats.failures.load(Ordering::Relaxed),
        commands: channel_stats.commands.load(Ordering::Relaxed),
        configs: std::mem::take(
            &mut *channel_stats
                .configs
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ),
    }
}

/// Starts `n` processes of this program playing a share of the agents each, waits for
/// them and adds up what they saw.
async fn play_in_processes(n: usize) -> Result<Snapshot> {
    let dir = std::env::temp_dir().join(format!("watchpost-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    // This process's own options, without those only it acts on.
    let mut own: Vec<String> = Vec::new();
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        let name = a.split('=').next().unwrap_or("");
        if matches!(name, "--processes" | "--json" | "--db" | "--watch") {
            skip = !a.contains('=');
            continue;
        }
        own.push(a);
    }
    let mut children = Vec::new();
    for k in 0..n {
        let out = dir.join(format!("{k}.json"));
        let child = std::process::Command::new(&exe)
            .args(&own)
            .arg("--shard")
            .arg(format!("{k}/{n}"))
            .arg("--shard-out")
            .arg(&out)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        children.push((child, out));
    }
    let results = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|(mut c, out)| (c.wait(), out))
            .collect::<Vec<_>>()
    })
    .await?;
    let mut all = Snapshot::default();
    for (status, out) in results {
        let status = status?;
        if !status.success() {
            bail!("a loadgen process failed ({status})");
        }
        let text = std::fs::read(&out).with_context(|| format!("cannot read {}", out.display()))?;
        all.add(serde_json::from_slice(&text)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(all)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let clients: Arc<Vec<Client>> = Arc::new(
        args.server
            .iter()
            .map(|s| client_for(s, &args))
            .collect::<Result<_>>()?,
    );
    if let Some(shard) = &args.shard {
        let shard = parse_shard(shard)?;
        let out = args
            .shard_out
            .clone()
            .context("--shard needs --shard-out")?;
        let snapshot = play(args.clone(), clients, shard, Instant::now()).await;
        std::fs::write(out, serde_json::to_vec(&snapshot)?)?;
        return Ok(());
    }
    if args.processes == 0 {
        bail!("--processes must be at least 1");
    }
    let mut watched: Vec<(String, Watched)> = args
        .watch
        .iter()
        .filter_map(|w| {
            let (n, p) = w.split_once('=')?;
            let target = match p.strip_prefix('@') {
                Some(file) => Watched::File(PathBuf::from(file)),
                None => Watched::Pid(p.parse().ok()?),
            };
            Some((n.to_owned(), target))
        })
        .collect();
    // Its own share of the machine, too (the agents' TLS, gzip and JSON), with the
    // processes it started.
    watched.push(("watchpost-loadgen".into(), Watched::Pid(std::process::id())));
    let t0 = Instant::now();
    let load_start = t0 + Duration::from_secs_f64(args.ramp);
    let end_at = load_start + Duration::from_secs(args.duration);
    // Sample the watched processes' CPU and memory every second.
    let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let watched = watched.clone();
        let stop = sampler_stop.clone();
        // On a thread of its own: reading /proc is blocking work.
        std::thread::spawn(move || {
            // CPU: the sum of positive differences between samples during the load (a
            // process killed and started again does not count backwards). Memory: the
            // peak, sampled every tenth second.
            let mut last: HashMap<String, f64> = HashMap::new();
            let mut busy: HashMap<String, f64> = HashMap::new();
            let mut peak: HashMap<String, u64> = HashMap::new();
            // From the sample before the first one in the load (the first difference
            // counted covers the time since then, which a stalled sampler can make long)
            // to the last one in it.
            let mut window: Option<(Instant, Instant)> = None;
            let mut previous_sample = Instant::now();
            for n in 0u64.. {
                let now = Instant::now();
                let in_load = now >= load_start && now <= end_at;
                if in_load {
                    window = Some((window.map_or(previous_sample, |w| w.0), now));
                }
                previous_sample = now;
                let pids: Vec<Option<u32>> = watched.iter().map(|(_, t)| t.pid()).collect();
                let memory = n % 10 == 0;
                for ((name, _), (pid, (cpu, rss))) in
                    watched.iter().zip(pids.iter().zip(usage(&pids, memory)))
                {
                    if pid.is_none() {
                        continue;
                    }
                    if let Some(prev) = last.insert(name.clone(), cpu)
                        && in_load
                        && cpu > prev
                    {
                        *busy.entry(name.clone()).or_default() += cpu - prev;
                    }
                    let p = peak.entry(name.clone()).or_default();
                    *p = (*p).max(rss);
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            let secs = window.map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
            watched
                .iter()
                .map(|(n, _)| {
                    let cpu = if secs > 0.0 {
                        busy.get(n).copied().unwrap_or(0.0) / secs
                    } else {
                        0.0
                    };
                    (n.clone(), cpu, peak.get(n).copied().unwrap_or(0))
                })
                .collect::<Vec<_>>()
        })
    };
    let played = if args.processes > 1 {
        play_in_processes(args.processes).await
    } else {
        Ok(play(args.clone(), clients, (0, 1), t0).await)
    };
    sampler_stop.store(true, Ordering::Relaxed);
    let usage = sampler.join().unwrap_or_default();
    let mut snap = played?;
    let sustained = snap.sustained;
    let online = snap.online;
    let mut lat = std::mem::take(&mut snap.latencies_ms);
    lat.sort_unstable();
    let mut hb_lat = std::mem::take(&mut snap.heartbeat_ms);
    hb_lat.sort_unstable();
    let total_events = snap.events_acked;
    let mut report = serde_json::json!({
        "agents": args.agents,
        "processes": args.processes,
        "servers": args.server.len(),
        "enrolled": snap.enrolled,
        "online_at_end_of_load": online,
        "target_rate": args.rate,
        "sustained_events_per_second": sustained.round(),
        "events_acknowledged": total_events,
        "batches_acknowledged": snap.batches_acked,
        "heartbeats": snap.heartbeats,
        "failed_attempts": snap.failures,
        "duplicates_reported_by_server": snap.duplicates,
        "batches_already_committed": snap.already_committed,
        "ack_latency_ms": { "p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99), "max": lat.last().copied().unwrap_or(0) },
        "heartbeat_latency_ms": { "p50": percentile(&hb_lat, 0.5), "p99": percentile(&hb_lat, 0.99), "max": hb_lat.last().copied().unwrap_or(0) },
        "processes_measured": usage.iter().map(|(n, cpu, rss)| serde_json::json!({ "name": n, "cpu_cores_during_load": (cpu * 100.0).round() / 100.0, "peak_memory_mib": rss / (1 << 20) })).collect::<Vec<_>>(),
    });
    println!(
        "agents {} enrolled {} online {}",
        args.agents, report["enrolled"], online
    );
    println!(
        "sustained ingest {:.0} events/s (target {}), {} events acknowledged",
        sustained, args.rate, total_events
    );
    println!(
        "batch send → acknowledgement: p50 {} ms, p99 {} ms, max {} ms",
        report["ack_latency_ms"]["p50"],
        report["ack_latency_ms"]["p99"],
        report["ack_latency_ms"]["max"]
    );
    println!(
        "heartbeat → answer (its kept connection): p50 {} ms, p99 {} ms, max {} ms",
        report["heartbeat_latency_ms"]["p50"],
        report["heartbeat_latency_ms"]["p99"],
        report["heartbeat_latency_ms"]["max"]
    );
    println!(
        "failed attempts (retried) {}, batches sent again and answered `already committed` {} ({} records not stored again)",
        report["failed_attempts"],
        report["batches_already_committed"],
        report["duplicates_reported_by_server"]
    );
    if args.probe_every > 0 {
        let [resent, replayed, gap] = snap.probes;
        let line = |what: &str, c: &[u64; 3]| {
            format!(
                "{what} {} as expected, {} otherwise, {} unanswered",
                c[0], c[1], c[2]
            )
        };
        println!(
            "probes: {}; {}; {}",
            line("resent (200 already_committed):", &resent),
            line("replayed (409 replayed):", &replayed),
            line("after a gap (409 out_of_order):", &gap)
        );
        report["probes"] = serde_json::json!({
            "resent_already_committed": resent,
            "replayed_refused": replayed,
            "gap_refused": gap,
            "fields": ["as expected", "otherwise", "unanswered"],
        });
    }
    let mut kinds: Vec<(String, u64)> = snap.failure_kinds.clone();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (why, n) in kinds.iter().take(8) {
        println!("  {n} × {why}");
    }
    report["failures_by_kind"] = serde_json::json!(
        kinds
            .iter()
            .map(|(why, n)| serde_json::json!({ "what": why, "count": n }))
            .collect::<Vec<_>>()
    );
    for (n, cpu, rss) in &usage {
        println!(
            "{n}: {cpu:.2} cores during the load, peak {} MiB (proportional set size)",
            rss / (1 << 20)
        );
    }
    let mut ok = true;
    if let Some(db) = &args.db {
        let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let acked = &snap.acked;
        let ids: Vec<i64> = acked.iter().map(|(_, id, _)| *id).collect();
        let rows = client
            .query(
                "SELECT agent_id, count(*), count(DISTINCT seq), coalesce(min(seq), 0), coalesce(max(seq), 0)
                 FROM events WHERE agent_id = ANY($1) GROUP BY agent_id",
                &[&ids],
            )
            .await?;
        let found: HashMap<i64, (i64, i64, i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect();
        let (mut missing, mut doubled, mut checked) = (0i64, 0i64, 0u64);
        for (_, id, last) in acked {
            let (n, distinct, min, max) = found.get(id).copied().unwrap_or((0, 0, 0, 0));
            checked += *last;
            doubled += n - distinct;
            if distinct != *last as i64 || min != 1 || max != *last as i64 {
                missing += (*last as i64 - distinct).max(0);
                ok = false;
            }
        }
        ok &= doubled == 0 && total_events == checked;
        println!(
            "database check: {checked} sequence numbers of {} agents: {missing} missing, {doubled} stored twice{}",
            acked.len(),
            if ok { " — ok" } else { " — FAILED" }
        );
        report["database_check"] = serde_json::json!({ "sequence_numbers": checked, "agents": acked.len(), "missing": missing, "doubled": doubled, "ok": ok });
        if args.poll {
            report["channel"] = channel::figures(&snap, &client).await?;
        }
    }
    let probes_failed = snap.probes.iter().map(|p| p[1]).sum::<u64>();
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    if !ok {
        bail!("the database does not hold every acknowledged event exactly once");
    }
    if probes_failed > 0 {
        bail!("{probes_failed} exactly-once probes got an answer other than the one expected");
    }
    Ok(())
}
