//! The agent's side of the fleet: `[fleet]` in the agent's configuration, enrollment
//! (`watchpost enroll`, or at start), and the shipper thread that sends the event store's
//! queue (`watchpost_store::Outbox`) to `watchpost-server` and heartbeats.
//!
//! Blocking, on std threads, over the HTTP/1.1 client and rustls setup of
//! `watchpost-actions` (`http.rs`, `tls.rs`): the endpoint agent carries no async runtime
//! and no database driver.
//!
//! ```toml
//! [fleet]
//! server = "https://fleet.example:8443"
//! ca_file = "/etc/watchpost/fleet-ca.pem"     # else the system's trust store
//! enroll_secret = "${WATCHPOST_ENROLL_SECRET}" # or enroll_secret_file = "/etc/watchpost/enroll"
//! max_queue = 1000000                          # records waiting; beyond: dropped, counted
//! # batch = 1000  timeout = "30s"
//! ```
//!
//! The shipper, once a second (at once while it is catching up): reads up to `batch`
//! records after the server's last commit, sends them as one gzip batch, and on the
//! server's `committed_seq` forgets them ([`watchpost_store::Outbox::commit`]). A failure
//! keeps them and waits (exponential back-off up to a minute, or the server's
//! `Retry-After`); so a laptop offline for a day sends everything, oldest first, when it
//! is back. `409 out_of_order` with an earlier number means the server lost what it had
//! acknowledged (a restored database): the shipper starts its next batch there (the gap
//! is counted as dropped). `401` (the server forgot the agent) enrolls again when a
//! secret is configured; `403 revoked` is logged as an error and retried every five
//! minutes (an administrator may delete the agent so it can enroll afresh).

mod host;
mod spec;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use watchpost_actions::http::{self, Endpoint};
use watchpost_fleet_protocol::{
    self as proto, AckRecord, ApiError, Batch, BatchAck, EnrollRequest, EnrollResponse,
    EventRecord, Fields, Heartbeat, HeartbeatAck, OutcomeRecord, Record,
};
use watchpost_store::{Outbox, Queued};

pub use host::host_id;
pub use spec::{FleetSpec, RawFleet, SecretSource};

/// Largest answer body read.
const MAX_ANSWER: usize = 1 << 20;
/// Largest batch body before compression that the shipper builds.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// Why enrollment or shipping failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The server could not be reached or answered nothing usable (try again).
    #[error("fleet server {origin}: {message}")]
    Transient {
        /// `https://host:port`.
        origin: String,
        /// What happened.
        message: String,
    },
    /// The server refused (wrong or revoked secret, revoked agent, bad request).
    #[error("fleet server {origin} refused: {message}")]
    Refused {
        /// `https://host:port`.
        origin: String,
        /// HTTP status.
        status: u16,
        /// The server's reason.
        message: String,
    },
    /// Local trouble: no secret, the credential file.
    #[error("{0}")]
    Local(String),
}

/// What the agent tells the server about itself at enrollment.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Stable id (`/etc/machine-id`, `MachineGuid`): [`host_id`].
    pub host_id: String,
    /// Computer name.
    pub hostname: String,
}

/// Where the credential is kept: `fleet.credential` in the state directory.
pub fn credential_path(state_dir: &Path) -> PathBuf {
    state_dir.join("fleet.credential")
}

/// The stored credential, if enrolled.
pub fn load_credential(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(credential_path(state_dir)).ok()?;
    let c = text.trim();
    c.starts_with(proto::CREDENTIAL_PREFIX)
        .then(|| c.to_owned())
}

/// Writes the credential readable by its owner only (0600; on Windows SYSTEM and
/// Administrators only), atomically. Not `watchpost_support::write_atomic`: on Windows the
/// temporary file's access list must be narrowed before it is renamed into place, so the
/// secret is never at its path readable by others.
fn store_credential(state_dir: &Path, credential: &str) -> Result<PathBuf, FleetError> {
    let local = |e: std::io::Error, what: &str| {
        FleetError::Local(format!("{what} {}: {e}", state_dir.display()))
    };
    std::fs::create_dir_all(state_dir).map_err(|e| local(e, "cannot create"))?;
    let path = credential_path(state_dir);
    let tmp = state_dir.join("fleet.credential.tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o
            .open(&tmp)
            .map_err(|e| local(e, "cannot write the credential into"))?;
        f.write_all(credential.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| local(e, "cannot write the credential into"))?;
    }
    #[cfg(windows)]
    host::restrict_to_admins(&tmp).map_err(FleetError::Local)?;
    std::fs::rename(&tmp, &path).map_err(|e| local(e, "cannot write the credential into"))?;
    Ok(path)
}

fn refused_or_transient(origin: &str, a: &http::Answer) -> FleetError {
    let message = serde_json::from_slice::<ApiError>(&a.body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("HTTP {} {}", a.status, a.reason));
    if a.status == 408 || a.status == 429 || a.status >= 500 {
        FleetError::Transient {
            origin: origin.to_owned(),
            message,
        }
    } else {
        FleetError::Refused {
            origin: origin.to_owned(),
            status: a.status,
            message,
        }
    }
}

/// Enrolls with the configured secret and stores the credential in the state directory.
pub fn enroll(spec: &FleetSpec, host: &HostInfo) -> Result<EnrollResponse, FleetError> {
    let endpoint = spec.endpoint().map_err(FleetError::Local)?;
    let secret = spec
        .secret
        .as_ref()
        .ok_or_else(|| {
            FleetError::Local("[fleet] has no enroll_secret or enroll_secret_file".into())
        })?
        .read()
        .map_err(FleetError::Local)?;
    let req = EnrollRequest {
        secret,
        host_id: host.host_id.clone(),
        hostname: host.hostname.clone(),
        os: host::os(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let origin = endpoint.origin();
    let a = http::send(
        &endpoint,
        "POST",
        proto::ENROLL,
        &[("Content-Type", "application/json")],
        &proto::encode_json(&req, false),
        spec.timeout,
        MAX_ANSWER,
    )
    .map_err(|e| FleetError::Transient {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    if a.status != 200 {
        return Err(refused_or_transient(&origin, &a));
    }
    let r: EnrollResponse = serde_json::from_slice(&a.body).map_err(|e| FleetError::Transient {
        origin: origin.clone(),
        message: format!("unreadable enrollment answer: {e}"),
    })?;
    store_credential(&spec.state_dir, &r.credential)?;
    Ok(r)
}

/// What the daemon reports in heartbeats (called on the shipper's thread).
pub type StatusFn = Box<dyn Fn() -> Heartbeat + Send>;

/// Counters of the shipper.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    records: AtomicU64,
    failures: AtomicU64,
    heartbeats: AtomicU64,
}

/// A snapshot of the shipper's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipperStats {
    /// Batches the server committed.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Failed attempts (batches and heartbeats).
    pub failures: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
}

struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Stop {
    /// Waits `d` or until stopped; `false` when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let guard = watchpost_support::lock(&self.lock);
        let _ = self
            .cv
            .wait_timeout_while(guard, d, |_| !self.flag.load(Ordering::Relaxed));
        !self.flag.load(Ordering::Relaxed)
    }
}

/// The running shipper thread.
pub struct Shipper {
    stop: Arc<Stop>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Shipper {
    /// Counters now.
    pub fn stats(&self) -> ShipperStats {
        let c = &self.counters;
        ShipperStats {
            batches: c.batches.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            heartbeats: c.heartbeats.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread (a request under way finishes within its timeout).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.flag.store(true, Ordering::Relaxed);
        self.stop.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts shipping `store` (the event store's file, with shipping on in its writer) to the
/// server on a thread of its own. Enrolls first when no credential is stored and a secret
/// is configured.
pub fn start(
    spec: FleetSpec,
    store: PathBuf,
    host: HostInfo,
    status: StatusFn,
) -> Result<Shipper, FleetError> {
    let mut client = Client::new(spec, &store, host, status)?;
    let stop = Arc::new(Stop {
        flag: AtomicBool::new(false),
        lock: Mutex::new(()),
        cv: Condvar::new(),
    });
    let counters = client.counters.clone();
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || client.run(&|d| thread_stop.sleep(d)))
        .map_err(|e| FleetError::Local(format!("cannot start the fleet thread: {e}")))?;
    Ok(Shipper {
        stop,
        counters,
        thread: Some(thread),
    })
}

/// The shipper's state, for a caller that runs it on a thread (or task) of its own:
/// [`Client::run`] loops until its `sleep` says stop.
pub struct Client {
    spec: FleetSpec,
    endpoint: Endpoint,
    outbox: Outbox,
    host: HostInfo,
    status: StatusFn,
    counters: Arc<Counters>,
    credential: Option<String>,
    heartbeat_every: Duration,
    next_heartbeat: Instant,
    /// Records per batch now (halved after a 413).
    batch: usize,
    /// The server expects this number next (after it lost acknowledged records).
    floor: Option<u64>,
    started: Instant,
}

/// What one step did.
enum Step {
    /// Sent something; go on at once.
    Busy,
    /// Nothing to send.
    Idle,
    /// Wait this long (back-off, Retry-After, revoked).
    Wait(Duration),
}

impl Client {
    /// A client for `store` (opens its queue; no request yet).
    pub fn new(
        spec: FleetSpec,
        store: &Path,
        host: HostInfo,
        status: StatusFn,
    ) -> Result<Client, FleetError> {
        let endpoint = spec.endpoint().map_err(FleetError::Local)?;
        let outbox = Outbox::open(store).map_err(|e| FleetError::Local(e.to_string()))?;
        let batch = spec.batch;
        Ok(Client {
            spec,
            endpoint,
            outbox,
            host,
            status,
            counters: Arc::new(Counters::default()),
            credential: None,
            heartbeat_every: Duration::from_secs(30),
            next_heartbeat: Instant::now(),
            batch,
            floor: None,
            started: Instant::now(),
        })
    }

    /// Ships and heart-beats until `sleep(d)` (which waits up to `d`) returns `false`.
    pub fn run(&mut self, sleep: &dyn Fn(Duration) -> bool) {
        let mut backoff = Duration::from_secs(1);
        let mut last_error: Option<String> = None;
        loop {
            let step = match self.step() {
                Ok(s) => {
                    if last_error.take().is_some() {
                        tracing::info!(server = %self.endpoint.origin(), "fleet server reachable again");
                    }
                    backoff = Duration::from_secs(1);
                    s
                }
                Err(e) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    let text = e.to_string();
                    let wait = match &e {
                        FleetError::Refused { status: 403, .. } => {
                            tracing::error!(error = %text, "the fleet server refuses this agent; shipping waits (retry in 5 min)");
                            Duration::from_secs(300)
                        }
                        FleetError::Refused { .. } | FleetError::Local(_) => {
                            if last_error.as_deref() != Some(text.as_str()) {
                                tracing::error!(error = %text, "fleet shipping failed");
                            }
                            Duration::from_secs(60)
                        }
                        FleetError::Transient { .. } => {
                            if last_error.as_deref() != Some(text.as_str()) {
                                tracing::warn!(error = %text, "fleet server unreachable; records wait in the queue");
                            }
                            let w = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            w
                        }
                    };
                    last_error = Some(text);
                    Step::Wait(jitter(wait))
                }
            };
            let pause = match step {
                // Catching up: only look whether to stop.
                Step::Busy => Duration::ZERO,
                Step::Idle => Duration::from_secs(1),
                Step::Wait(d) => d,
            };
            if !sleep(pause) {
                return;
            }
        }
    }

    /// Makes sure there is a credential (enrolling when needed).
    fn credential(&mut self) -> Result<String, FleetError> {
        if let Some(c) = &self.credential {
            return Ok(c.clone());
        }
        if let Some(c) = load_credential(&self.spec.state_dir) {
            self.credential = Some(c.clone());
            return Ok(c);
        }
        if self.spec.secret.is_none() {
            return Err(FleetError::Local(format!(
                "not enrolled: no credential in {} and no enroll_secret; run `watchpost enroll`",
                self.spec.state_dir.display()
            )));
        }
        let r = enroll(&self.spec, &self.host)?;
        tracing::info!(agent = r.agent_id, group = %r.group, server = %self.endpoint.origin(), "enrolled with the fleet server");
        self.heartbeat_every = Duration::from_secs(u64::from(r.heartbeat_secs.max(1)));
        self.batch = self.batch.min(r.max_batch_records.max(1) as usize);
        self.credential = Some(r.credential.clone());
        Ok(r.credential)
    }

    fn post(&mut self, path: &str, body: &[u8]) -> Result<http::Answer, FleetError> {
        let cred = self.credential()?;
        let auth = format!("Bearer {cred}");
        let a = http::send(
            &self.endpoint,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            body,
            self.spec.timeout,
            MAX_ANSWER,
        )
        .map_err(|e| FleetError::Transient {
            origin: self.endpoint.origin(),
            message: e.to_string(),
        })?;
        if a.status == 401 {
            // The server does not know the credential (its database was reset, or the
            // agent was deleted): enroll again next time.
            tracing::warn!(server = %self.endpoint.origin(), "the fleet server does not know this agent's credential; enrolling again");
            let _ = std::fs::remove_file(credential_path(&self.spec.state_dir));
            self.credential = None;
        }
        Ok(a)
    }

    fn step(&mut self) -> Result<Step, FleetError> {
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat()?;
            self.next_heartbeat = Instant::now() + self.heartbeat_every;
        }
        self.ship()
    }

    fn heartbeat(&mut self) -> Result<(), FleetError> {
        let mut hb = (self.status)();
        hb.version = env!("CARGO_PKG_VERSION").into();
        hb.hostname = self.host.hostname.clone();
        hb.os = host::os();
        hb.uptime_secs = self.started.elapsed().as_secs();
        if let Ok(st) = self.outbox.state() {
            hb.shipping = proto::ShippingStatus {
                pending: st.pending(),
                dropped: st.dropped,
                committed_seq: st.committed,
                oldest_pending_ms: st.oldest_pending_ms,
            };
        }
        let a = self.post(proto::HEARTBEAT, &proto::encode_json(&hb, true))?;
        if a.status != 200 {
            return Err(refused_or_transient(&self.endpoint.origin(), &a));
        }
        if let Ok(ack) = serde_json::from_slice::<HeartbeatAck>(&a.body) {
            self.heartbeat_every =
                Duration::from_secs(u64::from(ack.heartbeat_secs.clamp(1, 86_400)));
        }
        self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn ship(&mut self) -> Result<Step, FleetError> {
        let local = |e: watchpost_store::StoreError| FleetError::Local(e.to_string());
        let state = self.outbox.state().map_err(local)?;
        let after = state.committed;
        let items = self
            .outbox
            .read(after, self.batch, MAX_BATCH_BYTES)
            .map_err(local)?;
        let Some(&(last_seq, _)) = items.last() else {
            return Ok(Step::Idle);
        };
        let first_seq = self.floor.map_or(after + 1, |f| f.min(after + 1));
        let mut records = Vec::with_capacity(items.len());
        for (seq, item) in &items {
            if let Some(r) = record(*seq, item) {
                records.push(r);
            }
        }
        // Numbers in the range without a record: gone before shipping (or lost by the server).
        let lost = (last_seq + 1 - first_seq).saturating_sub(records.len() as u64);
        let batch = Batch {
            stream: state.stream.clone(),
            first_seq,
            last_seq,
            records,
        };
        let a = self.post(proto::BATCHES, &proto::encode_batch(&batch))?;
        let origin = self.endpoint.origin();
        match a.status {
            200 => {
                let ack: BatchAck =
                    serde_json::from_slice(&a.body).map_err(|e| FleetError::Transient {
                        origin,
                        message: format!("unreadable answer to a batch: {e}"),
                    })?;
                let upto = ack.committed_seq.min(last_seq);
                self.outbox.commit(upto, lost).map_err(local)?;
                self.floor = None;
                self.batch = (self.batch * 2).min(self.spec.batch);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .records
                    .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                Ok(Step::Busy)
            }
            409 => {
                let e: ApiError = serde_json::from_slice(&a.body).unwrap_or(ApiError {
                    error: String::new(),
                    code: String::new(),
                    expected_seq: None,
                });
                match e.expected_seq {
                    Some(expected) if expected <= after => {
                        tracing::warn!(
                            expected,
                            committed = after,
                            "the fleet server lost records it had acknowledged; continuing from its number (the rest is counted as dropped)"
                        );
                        self.floor = Some(expected);
                        Ok(Step::Busy)
                    }
                    Some(expected) => {
                        // The server has more than this queue says: forget up to there.
                        self.outbox
                            .commit((expected - 1).min(last_seq), 0)
                            .map_err(local)?;
                        Ok(Step::Busy)
                    }
                    None => Err(refused_or_transient(&origin, &a)),
                }
            }
            413 | 400 if self.batch > 1 => {
                self.batch = (self.batch / 2).max(1);
                tracing::warn!(
                    status = a.status,
                    batch = self.batch,
                    "the fleet server refused a batch; trying smaller ones"
                );
                Ok(Step::Busy)
            }
            413 | 400 => {
                // One record the server will never take: skip it rather than stall.
                let why = refused_or_transient(&origin, &a);
                tracing::error!(seq = last_seq, error = %why, "a record the fleet server refuses is dropped");
                self.outbox.commit(last_seq, 1).map_err(local)?;
                self.batch = self.spec.batch;
                Ok(Step::Busy)
            }
            429 => Ok(Step::Wait(Duration::from_secs(2))),
            _ => Err(refused_or_transient(&origin, &a)),
        }
    }
}

/// A queued record in its wire form (`None`: its event or outcome is gone).
fn record(seq: u64, item: &Option<Queued>) -> Option<Record> {
    Some(match item.as_ref()? {
        Queued::Event(e) => Record::Event(EventRecord {
            seq,
            id: e.id,
            time_ms: e.time_ms,
            stored_ms: e.stored_ms,
            source: e.source.clone(),
            host: e.host.clone(),
            filters: e.filters.clone(),
            anomaly: e.anomaly,
            anomaly_why: e.anomaly_why.clone(),
            needs_ack: e.needs_ack,
            fields: Fields(e.fields.clone()),
            raw: e.raw.clone(),
            origin: e.origin.clone(),
        }),
        Queued::Outcome(o) => Record::Outcome(OutcomeRecord {
            seq,
            event: o.event,
            action: o.action.clone(),
            filter: o.filter.clone(),
            at_ms: o.at_ms,
            attempt: o.attempt,
            ok: o.ok,
            detail: o.detail.clone(),
        }),
        Queued::Ack {
            event,
            at_ms,
            by,
            comment,
        } => Record::Ack(AckRecord {
            seq,
            event: *event,
            at_ms: *at_ms,
            by: by.clone(),
            comment: comment.clone(),
        }),
    })
}

/// ±20 % so a fleet that lost its server does not come back in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let f = 0.8 + (nanos % 1000) as f64 / 2500.0;
    d.mul_f64(f)
}
