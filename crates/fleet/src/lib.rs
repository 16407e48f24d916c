//! The agent's side of the fleet: `[fleet]` in the agent's configuration, enrollment
//! (`watchpost enroll`, or at start), the shipper thread that sends the event store's
//! queue (`watchpost_store::Outbox`) to `watchpost-server`, and the heartbeat thread.
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
//! # batch = 1000  interval = "5s"  timeout = "30s"
//! ```
//!
//! The shipper reads up to `batch` records after the server's last commit, sends them as
//! one gzip batch over a connection it keeps open (HTTP/1.1 keep-alive: one TLS handshake,
//! not one per batch), and on the server's `committed_seq` forgets them
//! ([`watchpost_store::Outbox::commit`]). It goes on at once while full batches wait
//! (catching up); a batch that is not full waits until `interval` has passed since the
//! last one — the first record after a quiet time goes at once, a steady stream goes as
//! one batch per interval, so ten thousand agents make a few thousand requests a second,
//! not one per event. A failure keeps the records and waits (exponential back-off up to
//! a minute, or the server's `Retry-After`); so a laptop offline for a day sends
//! everything, oldest first, when it is back. `409 out_of_order` with an earlier number
//! means the server lost what it had acknowledged (a restored database): the shipper
//! starts its next batch there (the gap is counted as dropped). `401` (the server forgot
//! the agent) enrolls again when a secret is configured; `403 revoked` is logged as an
//! error and retried every five minutes (an administrator may delete the agent so it can
//! enroll afresh).
//!
//! The heartbeat thread sends the daemon's health every `heartbeat_secs` (the server
//! says how often), on a kept-alive connection of its own (not the shipper's), so a
//! heartbeat never waits behind a batch: the server sees an agent alive, and how far behind its shipping is,
//! even while its batches are slow.
//!
//! The other direction (the group's configuration, commands, acknowledgements made on
//! the server) is [`channel`]: a long-poll the agent opens, with its cursors kept in the
//! state directory.

pub mod channel;
mod host;
mod spec;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
pub use spec::{DEFAULT_INTERVAL, FleetSpec, RawFleet, SecretSource};

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

/// What the daemon reports in heartbeats (called on the heartbeat thread).
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

/// The running shipper and heartbeat threads.
pub struct Shipper {
    stop: Arc<Stop>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
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

    /// Stops the threads (a request under way finishes within its timeout).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.flag.store(true, Ordering::Relaxed);
        self.stop.cv.notify_all();
        for t in self.threads.drain(..) {
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
/// server, and heart-beating, on a thread of its own ([`Client::run`]). Enrolls first when
/// no credential is stored and a secret is configured.
pub fn start(
    spec: FleetSpec,
    store: PathBuf,
    host: HostInfo,
    status: StatusFn,
) -> Result<Shipper, FleetError> {
    let mut client = Client::new(spec, &store, host, status)?;
    let counters = client.shipping.shared.counters.clone();
    let stop = Arc::new(Stop {
        flag: AtomicBool::new(false),
        lock: Mutex::new(()),
        cv: Condvar::new(),
    });
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || client.run(&|d| thread_stop.sleep(d)))
        .map_err(|e| FleetError::Local(format!("cannot start the fleet thread: {e}")))?;
    Ok(Shipper {
        stop,
        counters,
        threads: vec![thread],
    })
}

/// The shipper and the heartbeats, for a caller that runs them on a thread (or task) of
/// its own: [`Client::run`] loops until its `sleep` says stop.
pub struct Client {
    shipping: Shipping,
    beat: Beat,
}

impl Client {
    /// A client for `store` (opens its queue and reads the CA file; no request yet).
    pub fn new(
        spec: FleetSpec,
        store: &Path,
        host: HostInfo,
        status: StatusFn,
    ) -> Result<Client, FleetError> {
        let endpoint = spec.endpoint().map_err(FleetError::Local)?;
        let shared = Arc::new(Shared {
            batch_limit: AtomicUsize::new(spec.batch),
            heartbeat_secs: AtomicU64::new(30),
            credential: Mutex::new(None),
            spec,
            endpoint,
            host,
            counters: Arc::new(Counters::default()),
        });
        let shipping = Shipping::new(shared.clone(), store)?;
        let beat = Beat {
            outbox: Outbox::open(store).ok(),
            session: http::Session::new(shared.endpoint.clone()),
            shared,
            status,
            started: Instant::now(),
        };
        Ok(Client { shipping, beat })
    }

    /// Ships and heart-beats until `sleep(d)` (which waits up to `d`) returns `false`.
    /// The heartbeats go from a second thread: a heartbeat never waits behind a batch (a
    /// slow server, a long catch-up), so the server sees the agent alive — and how far
    /// behind its shipping is — whatever its batches do.
    pub fn run(&mut self, sleep: &(dyn Fn(Duration) -> bool + Sync)) {
        let Client { shipping, beat } = self;
        std::thread::scope(|s| {
            let beats = std::thread::Builder::new()
                .name("fleet-heartbeat".into())
                .spawn_scoped(s, || beat.run(sleep));
            if let Err(e) = beats {
                tracing::error!(error = %e, "cannot start the fleet heartbeat thread: no heartbeats are sent");
            }
            shipping.run(sleep);
        });
    }
}

/// What the shipping and heartbeat threads share: the server, the credential (enrolling
/// when there is none), the counters.
struct Shared {
    spec: FleetSpec,
    endpoint: Endpoint,
    host: HostInfo,
    counters: Arc<Counters>,
    /// The credential in use (`None`: read it from the state directory, or enroll).
    /// Enrollment happens under this lock: one thread enrolls, the other waits for it.
    credential: Mutex<Option<String>>,
    /// Records per batch the server takes (from enrollment).
    batch_limit: AtomicUsize,
    /// How often the server wants a heartbeat.
    heartbeat_secs: AtomicU64,
}

impl Shared {
    /// The credential (enrolling when needed).
    fn credential(&self) -> Result<String, FleetError> {
        let mut slot = self.credential.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        if let Some(c) = load_credential(&self.spec.state_dir) {
            *slot = Some(c.clone());
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
        self.heartbeat_secs
            .store(u64::from(r.heartbeat_secs.max(1)), Ordering::Relaxed);
        self.batch_limit
            .store(r.max_batch_records.max(1) as usize, Ordering::Relaxed);
        *slot = Some(r.credential.clone());
        Ok(r.credential)
    }

    /// A POST with the credential, over `session` (kept open) or a connection of its
    /// own.
    fn post(
        &self,
        session: Option<&mut http::Session>,
        path: &str,
        body: &[u8],
    ) -> Result<http::Answer, FleetError> {
        let cred = self.credential()?;
        let auth = format!("Bearer {cred}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ];
        let sent = match session {
            Some(s) => s.send("POST", path, &headers, body, self.spec.timeout, MAX_ANSWER),
            None => http::send(
                &self.endpoint,
                "POST",
                path,
                &headers,
                body,
                self.spec.timeout,
                MAX_ANSWER,
            ),
        };
        let a = sent.map_err(|e| FleetError::Transient {
            origin: self.endpoint.origin(),
            message: e.to_string(),
        })?;
        if a.status == 401 {
            // The server does not know the credential (its database was reset, or the
            // agent was deleted): enroll again next time (unless the other thread already
            // did).
            let mut slot = self.credential.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_deref() == Some(cred.as_str()) {
                tracing::warn!(server = %self.endpoint.origin(), "the fleet server does not know this agent's credential; enrolling again");
                let _ = std::fs::remove_file(credential_path(&self.spec.state_dir));
                *slot = None;
            }
        }
        Ok(a)
    }
}

/// How long a thread waits after a failure, and what it logs (a message once, until it
/// changes or the server is reachable again).
struct Failures {
    backoff: Duration,
    last: Option<String>,
}

impl Failures {
    fn new() -> Failures {
        Failures {
            backoff: watchpost_fleet_protocol::retry::FIRST,
            last: None,
        }
    }

    fn ok(&mut self, server: &str, what: &str) {
        if self.last.take().is_some() {
            tracing::info!(server, "fleet server reachable again ({what})");
        }
        self.backoff = watchpost_fleet_protocol::retry::FIRST;
    }

    /// The wait after `e`; `what` names the work for the messages.
    fn failed(&mut self, e: &FleetError, counters: &Counters, what: &str) -> Duration {
        counters.failures.fetch_add(1, Ordering::Relaxed);
        let text = e.to_string();
        let fresh = self.last.as_deref() != Some(text.as_str());
        let wait = match e {
            FleetError::Refused { status: 403, .. } => {
                if fresh {
                    tracing::error!(error = %text, "the fleet server refuses this agent; {what} waits (retry in 5 min)");
                }
                Duration::from_secs(300)
            }
            FleetError::Refused { .. } | FleetError::Local(_) => {
                if fresh {
                    tracing::error!(error = %text, "fleet {what} failed");
                }
                Duration::from_secs(60)
            }
            FleetError::Transient { .. } => {
                if fresh {
                    tracing::warn!(error = %text, "fleet server unreachable; {what} waits");
                }
                let w = self.backoff;
                self.backoff = watchpost_fleet_protocol::retry::next(self.backoff);
                w
            }
        };
        self.last = Some(text);
        jitter(wait)
    }
}

/// The shipping thread's state: the queue, the kept connection, the batch size.
struct Shipping {
    shared: Arc<Shared>,
    outbox: Outbox,
    session: http::Session,
    /// Records per batch now (halved after a 413).
    batch: usize,
    /// The server expects this number next (after it lost acknowledged records).
    floor: Option<u64>,
    /// When the last batch was acknowledged.
    last_sent: Option<Instant>,
    /// The batch sent last, while its answer has not come.
    inflight: Option<Inflight>,
}

/// A batch as sent, to be sent again unchanged until the server answers it.
struct Inflight {
    /// The number committed when it was made (it follows that one).
    after: u64,
    /// Its last number.
    last_seq: u64,
    /// Numbers in its range without a record.
    lost: u64,
    /// Records in it.
    records: u64,
    /// The encoded body.
    body: Vec<u8>,
}

/// What one step did.
enum Step {
    /// Sent something; go on at once.
    Busy,
    /// Nothing to send.
    Idle,
    /// Wait this long (back-off, Retry-After, revoked, gathering).
    Wait(Duration),
}

impl Shipping {
    fn new(shared: Arc<Shared>, store: &Path) -> Result<Shipping, FleetError> {
        let outbox = Outbox::open(store).map_err(|e| FleetError::Local(e.to_string()))?;
        Ok(Shipping {
            session: http::Session::new(shared.endpoint.clone()),
            batch: shared.spec.batch,
            shared,
            outbox,
            floor: None,
            last_sent: None,
            inflight: None,
        })
    }

    /// Ships until `sleep(d)` (which waits up to `d`) returns `false`.
    fn run(&mut self, sleep: &dyn Fn(Duration) -> bool) {
        let mut failures = Failures::new();
        let origin = self.shared.endpoint.origin();
        loop {
            let pause = match self.ship() {
                Ok(step) => {
                    failures.ok(&origin, "shipping");
                    match step {
                        // Catching up: only look whether to stop.
                        Step::Busy => Duration::ZERO,
                        Step::Idle => Duration::from_secs(1),
                        Step::Wait(d) => d,
                    }
                }
                Err(e) => {
                    // A kept connection is suspect after a failure.
                    self.session.close();
                    failures.failed(&e, &self.shared.counters, "shipping")
                }
            };
            if !sleep(pause) {
                return;
            }
        }
    }

    fn ship(&mut self) -> Result<Step, FleetError> {
        let local = |e: watchpost_store::StoreError| FleetError::Local(e.to_string());
        let state = self.outbox.state().map_err(local)?;
        let after = state.committed;
        let batch = self
            .batch
            .min(self.shared.batch_limit.load(Ordering::Relaxed))
            .max(1);
        // Records come in as they are stored; a batch that is not full waits until
        // `interval` has passed since the last one (the first after a quiet time goes at
        // once), so a busy agent sends one batch per interval rather than one per record.
        if state.pending() > 0
            && state.pending() < batch as u64
            && self.floor.is_none()
            && let Some(at) = self.last_sent
        {
            let since = at.elapsed();
            if since < self.shared.spec.interval {
                return Ok(Step::Wait(
                    (self.shared.spec.interval - since).min(Duration::from_secs(1)),
                ));
            }
        }
        // A batch whose answer did not come (the server unreachable, killed, or its
        // database restarting) is sent again byte for byte: the server recognises the
        // same batch as committed, where a different one under numbers it already has
        // is refused as a replay.
        let resend = self
            .inflight
            .take()
            .filter(|f| f.after == after && self.floor.is_none());
        let sending = match resend {
            Some(f) => f,
            None => {
                let items = self
                    .outbox
                    .read(after, batch, MAX_BATCH_BYTES)
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
                // Numbers in the range without a record: gone before shipping (or lost
                // by the server).
                let lost = (last_seq + 1 - first_seq).saturating_sub(records.len() as u64);
                Inflight {
                    after,
                    last_seq,
                    lost,
                    records: records.len() as u64,
                    body: proto::encode_batch(&Batch {
                        stream: state.stream.clone(),
                        first_seq,
                        last_seq,
                        records,
                    }),
                }
            }
        };
        let (last_seq, lost, records) = (sending.last_seq, sending.lost, sending.records);
        let sent = self
            .shared
            .post(Some(&mut self.session), proto::BATCHES, &sending.body);
        let a = match sent {
            Ok(a) => a,
            Err(e) => {
                // No answer: the same batch goes again.
                self.inflight = Some(sending);
                return Err(e);
            }
        };
        if !matches!(a.status, 200 | 400 | 409 | 413) {
            // Not an answer about this batch (the server failed, a rate limit, a
            // credential to renew): the same batch goes again.
            self.inflight = Some(sending);
        }
        let origin = self.shared.endpoint.origin();
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
                self.last_sent = Some(Instant::now());
                self.batch = (self.batch * 2).min(self.shared.spec.batch);
                let c = &self.shared.counters;
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.records.fetch_add(records, Ordering::Relaxed);
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
                self.batch = self.shared.spec.batch;
                Ok(Step::Busy)
            }
            429 => Ok(Step::Wait(Duration::from_secs(2))),
            _ => Err(refused_or_transient(&origin, &a)),
        }
    }
}

/// The heartbeat thread's state.
struct Beat {
    shared: Arc<Shared>,
    /// The queue, for the shipping figures (its own SQLite connection; `None` if it did
    /// not open: heartbeats go without them).
    outbox: Option<Outbox>,
    /// The heartbeats' own connection, kept open from one to the next (not the
    /// shipper's: a heartbeat never waits behind a batch).
    session: http::Session,
    status: StatusFn,
    started: Instant,
}

impl Beat {
    /// Heart-beats until `sleep(d)` returns `false`: at once, then every `heartbeat_secs`
    /// (the server's), over a connection of the heartbeats' own kept open between them:
    /// a TLS handshake per heartbeat would cost a fleet server of ten thousand agents
    /// hundreds of handshakes a second. The connection is made again when the server
    /// closed it meanwhile (its `idle_timeout`, a restart).
    fn run(&mut self, sleep: &dyn Fn(Duration) -> bool) {
        let mut failures = Failures::new();
        let origin = self.shared.endpoint.origin();
        loop {
            let pause = match self.beat() {
                Ok(()) => {
                    failures.ok(&origin, "heartbeats");
                    Duration::from_secs(self.shared.heartbeat_secs.load(Ordering::Relaxed))
                }
                Err(e) => {
                    let every =
                        Duration::from_secs(self.shared.heartbeat_secs.load(Ordering::Relaxed));
                    failures
                        .failed(&e, &self.shared.counters, "heart-beating")
                        .min(every.max(Duration::from_secs(1)))
                }
            };
            if !sleep(pause) {
                return;
            }
        }
    }

    fn beat(&mut self) -> Result<(), FleetError> {
        let mut hb = (self.status)();
        hb.version = env!("CARGO_PKG_VERSION").into();
        hb.hostname = self.shared.host.hostname.clone();
        hb.os = host::os();
        hb.uptime_secs = self.started.elapsed().as_secs();
        if let Some(st) = self.outbox.as_ref().and_then(|o| o.state().ok()) {
            hb.shipping = proto::ShippingStatus {
                pending: st.pending(),
                dropped: st.dropped,
                committed_seq: st.committed,
                oldest_pending_ms: st.oldest_pending_ms,
            };
        }
        let a = self.shared.post(
            Some(&mut self.session),
            proto::HEARTBEAT,
            &proto::encode_json(&hb, true),
        )?;
        if a.status != 200 {
            return Err(refused_or_transient(&self.shared.endpoint.origin(), &a));
        }
        if let Ok(ack) = serde_json::from_slice::<HeartbeatAck>(&a.body) {
            self.shared.heartbeat_secs.store(
                u64::from(ack.heartbeat_secs.clamp(1, 86_400)),
                Ordering::Relaxed,
            );
        }
        self.shared
            .counters
            .heartbeats
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
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

pub(crate) use watchpost_fleet_protocol::retry::jitter;
