//! The HTTPS API (`/api/v1/…`, see `docs/fleet-api.md`): TLS, connections, limits,
//! routing, authentication, and the handlers.
//!
//! * **Connections**: at most `max_connections` served at once (more wait in the kernel's
//!   backlog); the TLS handshake must complete within `header_timeout` (slow clients
//!   cannot hold a slot); a kept-alive connection quiet for `idle_timeout` between
//!   requests is closed, and a request's headers must arrive within `idle_timeout` of
//!   the previous answer (hyper has one timer for both). HTTP/1.1 only.
//! * **Bodies**: refused with 413 above `max_body` before they are read whole (by
//!   `Content-Length`, and again while reading); decompressed up to `max_decompressed`
//!   (`watchpost-fleet-protocol`); enrollment and heartbeat bodies have smaller limits.
//! * **Who may do what**: `enroll` needs a group's enrollment secret (and is rate-limited
//!   per client address); `batches` and `heartbeat` need an agent's credential, which
//!   names the agent whose data is written (an agent can only write its own); the
//!   `admin` routes need a user's API token. A revoked agent gets 403 `revoked`
//!   everywhere. Per-agent token buckets answer 429 with `Retry-After`.
//! * **Errors**: every 4xx/5xx has a JSON body ([`ApiError`]) saying what was wrong; a
//!   malformed, oversized, replayed or out-of-order batch is counted and refused, and
//!   nothing else is affected.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use watchpost_fleet_protocol::{
    self as proto, ApiError, Encoding, EnrollRequest, EnrollResponse, Heartbeat, HeartbeatAck,
    Limits,
};

use crate::admin::{self, AdminError};
use crate::config::Config;
use crate::db::Window;
use crate::ingest::{self, IngestError};
use crate::metrics;
use crate::metrics::{Metrics, route_label};

/// Largest enrollment request.
const MAX_ENROLL_BODY: usize = 16 << 10;
/// Largest heartbeat (decompressed).
const MAX_HEARTBEAT: usize = 4 << 20;

/// What every request handler shares.
pub struct State {
    /// The configuration.
    pub config: Config,
    /// PostgreSQL.
    pub pool: deadpool_postgres::Pool,
    /// The urgent lane ([`crate::db::URGENT_POOL`] connections): polls woken for their
    /// own agent (a command, an acknowledgement) and the report worker, so that what one
    /// person waits on does not queue behind thousands of agents' polls.
    pub urgent: deadpool_postgres::Pool,
    /// Counters.
    pub metrics: Metrics,
    /// The partition window (moved by the maintenance task).
    pub window: RwLock<Window>,
    /// Wake-ups of the long-polls this instance holds (`channel.rs`).
    pub hub: Arc<crate::channel::Hub>,
    agent_buckets: Mutex<HashMap<i64, Bucket>>,
    enroll_buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Agent credentials seen valid (SHA-256 → agent id), so batches and heartbeats need
    /// no database lookup before their work; the work's own transaction checks the
    /// credential and the revocation against the agent's row.
    agent_keys: Mutex<HashMap<Vec<u8>, i64>>,
    ingest: tokio::sync::mpsc::Sender<IngestJob>,
    heartbeats: tokio::sync::mpsc::Sender<HeartbeatJob>,
    reports: tokio::sync::mpsc::Sender<ReportJob>,
    /// The web console (`[console] enabled`), set once when the server starts.
    pub console: std::sync::OnceLock<Arc<watchpost_console::Console>>,
}

/// The receiving ends of the server's work queues, for its workers.
pub struct Queues {
    /// Batches, for [`ingest_worker`]s.
    pub ingest: tokio::sync::mpsc::Receiver<IngestJob>,
    /// Heartbeats, for the [`heartbeat_worker`].
    pub heartbeats: tokio::sync::mpsc::Receiver<HeartbeatJob>,
    /// Channel reports, for the [`report_worker`].
    pub reports: tokio::sync::mpsc::Receiver<ReportJob>,
}

/// A heartbeat waiting for the heartbeat worker, and where its answer goes.
pub struct HeartbeatJob {
    agent: ingest::AgentRef,
    heartbeat: Heartbeat,
    reply: tokio::sync::oneshot::Sender<Result<(), HeartbeatFailed>>,
}

/// Why a heartbeat was not recorded.
#[derive(Debug)]
enum HeartbeatFailed {
    Refused(crate::heartbeat::Refused),
    Db(String),
}

/// Most agent credentials kept in the cache (it is emptied when full: a lookup each
/// then fills it again).
const MAX_CACHED_KEYS: usize = 1_000_000;

/// A batch waiting for an ingest worker, and where its answer goes.
pub struct IngestJob {
    agent: ingest::AgentRef,
    batch: ingest::Prepared,
    reply: tokio::sync::oneshot::Sender<Result<proto::BatchAck, IngestError>>,
}

/// Most records one group transaction takes.
const GROUP_RECORDS: usize = 20_000;

/// An ingest worker: takes a batch and whatever else is waiting at that moment (never
/// waiting for more), stores them in one transaction ([`ingest::store_group`]) and answers
/// each. Under load many small batches share one commit; alone, a batch goes at once.
pub async fn ingest_worker(
    state: Arc<State>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<IngestJob>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = tokio::select! {
                r = rx.lock() => r,
                _ = stop.changed() => return,
            };
            let first = tokio::select! {
                j = rx.recv() => match j { Some(j) => j, None => return },
                _ = stop.changed() => return,
            };
            let mut records = first.batch.records.len();
            jobs.push(first);
            while records < GROUP_RECORDS && jobs.len() < 1000 {
                match rx.try_recv() {
                    Ok(j) => {
                        records += j.batch.records.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
        }
        let result = match state.pool.get().await {
            Ok(mut db) => {
                let group: Vec<(ingest::AgentRef, &ingest::Prepared)> =
                    jobs.iter().map(|j| (j.agent.clone(), &j.batch)).collect();
                ingest::store_group(&mut db, &group).await
            }
            Err(e) => Err(IngestError::Db(crate::db::DbError::Pool(e))),
        };
        match result {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                let text = e.to_string();
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(IngestError::Db(crate::db::DbError::Build(
                            text.clone(),
                        ))));
                }
            }
        }
    }
}

/// Most heartbeats one transaction takes.
const GROUP_HEARTBEATS: usize = 2000;

/// A job of a [`grouping_worker`]: what it is answered with.
trait GroupJob {
    /// Each job's own outcome when the group's work was done.
    type Outcome;
    /// Sends the answer: the job's outcome, or why the group's work failed.
    fn answer(self, result: Result<Self::Outcome, String>);
}

/// A worker that takes a job and every other one waiting at that moment (`most` at most,
/// never waiting for more), does them together on one connection of `pool` (`run`: one
/// transaction) and answers each. Under load many jobs share one commit; alone, a job
/// goes at once.
async fn grouping_worker<J: GroupJob>(
    pool: &deadpool_postgres::Pool,
    rx: &mut tokio::sync::mpsc::Receiver<J>,
    stop: &mut watch::Receiver<bool>,
    most: usize,
    run: impl AsyncFn(&mut deadpool_postgres::Object, &[J]) -> Result<Vec<J::Outcome>, String>,
) {
    loop {
        let first = tokio::select! {
            j = rx.recv() => match j { Some(j) => j, None => return },
            _ = stop.changed() => return,
        };
        let mut jobs = vec![first];
        while jobs.len() < most {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let result = match pool.get().await {
            Ok(mut db) => run(&mut db, &jobs).await,
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    job.answer(Ok(outcome));
                }
            }
            Err(text) => {
                for job in jobs {
                    job.answer(Err(text.clone()));
                }
            }
        }
    }
}

impl GroupJob for HeartbeatJob {
    type Outcome = Result<(), crate::heartbeat::Refused>;
    fn answer(self, result: Result<Self::Outcome, String>) {
        let _ = self.reply.send(match result {
            Ok(outcome) => outcome.map_err(HeartbeatFailed::Refused),
            Err(text) => Err(HeartbeatFailed::Db(text)),
        });
    }
}

/// The heartbeat worker: takes a heartbeat and every other one waiting at that moment,
/// writes them in one transaction ([`crate::heartbeat::record_group`], not waiting for
/// the disk) and answers each. Heartbeats never wait behind batches: they have this
/// queue and worker to themselves.
pub async fn heartbeat_worker(
    state: Arc<State>,
    mut rx: tokio::sync::mpsc::Receiver<HeartbeatJob>,
    mut stop: watch::Receiver<bool>,
) {
    grouping_worker(
        &state.pool,
        &mut rx,
        &mut stop,
        GROUP_HEARTBEATS,
        async |db, jobs: &[HeartbeatJob]| {
            let group: Vec<(ingest::AgentRef, &Heartbeat)> = jobs
                .iter()
                .map(|j| (j.agent.clone(), &j.heartbeat))
                .collect();
            crate::heartbeat::record_group(db, &group)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}

/// A channel report waiting for the report worker, and where its answer goes.
pub struct ReportJob {
    agent: ingest::AgentRef,
    report: proto::Report,
    reply: tokio::sync::oneshot::Sender<
        Result<Result<proto::ReportAck, crate::heartbeat::Refused>, String>,
    >,
}

/// Most reports one transaction takes.
const GROUP_REPORTS: usize = 2000;

impl GroupJob for ReportJob {
    type Outcome = Result<proto::ReportAck, crate::heartbeat::Refused>;
    fn answer(self, result: Result<Self::Outcome, String>) {
        let _ = self.reply.send(result);
    }
}

/// The report worker: takes a report and every other one waiting at that moment, records
/// them in one transaction ([`crate::channel::record_reports`]) on the urgent lane and
/// answers each. After a publication thousands of agents report at once; alone, a
/// report goes at once.
pub async fn report_worker(
    state: Arc<State>,
    mut rx: tokio::sync::mpsc::Receiver<ReportJob>,
    mut stop: watch::Receiver<bool>,
) {
    grouping_worker(
        &state.urgent,
        &mut rx,
        &mut stop,
        GROUP_REPORTS,
        async |db, jobs: &[ReportJob]| {
            let group: Vec<(ingest::AgentRef, &proto::Report)> =
                jobs.iter().map(|j| (j.agent.clone(), &j.report)).collect();
            crate::channel::record_reports(db, &group)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}

impl State {
    /// Shared state for a server, and the receiving ends of its queues (for
    /// [`ingest_worker`]s and the [`heartbeat_worker`]).
    pub fn new(
        config: Config,
        pool: deadpool_postgres::Pool,
        urgent: deadpool_postgres::Pool,
        window: Window,
    ) -> (State, Queues) {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let (htx, hrx) = tokio::sync::mpsc::channel(8192);
        let (rtx, rrx) = tokio::sync::mpsc::channel(8192);
        (
            State {
                config,
                pool,
                urgent,
                metrics: Metrics::default(),
                window: RwLock::new(window),
                hub: Arc::default(),
                agent_buckets: Mutex::new(HashMap::new()),
                enroll_buckets: Mutex::new(HashMap::new()),
                agent_keys: Mutex::new(HashMap::new()),
                ingest: tx,
                heartbeats: htx,
                reports: rtx,
                console: std::sync::OnceLock::new(),
            },
            Queues {
                ingest: rx,
                heartbeats: hrx,
                reports: rrx,
            },
        )
    }

    /// Forgets a credential (the database no longer accepts it).
    fn forget_key(&self, key: &[u8]) {
        self.agent_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Forgets rate-limit buckets idle for a minute (called by the maintenance task).
    pub fn prune_buckets(&self) {
        let old = Instant::now() - Duration::from_secs(60);
        self.agent_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| b.at > old);
        self.enroll_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| b.at > old);
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Takes a token from `key`'s bucket; `Err(seconds to wait)` when empty.
fn take<K: std::hash::Hash + Eq>(
    buckets: &Mutex<HashMap<K, Bucket>>,
    key: K,
    rate: f64,
    burst: f64,
) -> Result<(), u64> {
    let now = Instant::now();
    let mut m = buckets.lock().unwrap_or_else(|e| e.into_inner());
    let b = m.entry(key).or_insert(Bucket {
        tokens: burst,
        at: now,
    });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
    b.at = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        Ok(())
    } else {
        Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
    }
}

type Body = Full<Bytes>;

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(proto::encode_json(value, false))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ApiError {
            error: message.into(),
            code: code.into(),
            expected_seq: None,
        },
    )
}

/// Serves the API until `stop` turns true.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let tls = match &state.config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(
            files.server_config().map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let slots = Arc::new(Semaphore::new(state.config.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            state.metrics.connections.fetch_add(1, Ordering::Relaxed);
            let header_timeout = state.config.header_timeout;
            match tls {
                Some(acceptor) => {
                    let accepted = &state.metrics.accepted;
                    match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let kind = match stream.get_ref().1.handshake_kind() {
                                Some(rustls::HandshakeKind::Resumed) => metrics::TLS_RESUMED,
                                _ => metrics::TLS_FULL,
                            };
                            accepted[kind].fetch_add(1, Ordering::Relaxed);
                            connection(state.clone(), TokioIo::new(stream), peer, stop).await
                        }
                        Ok(Err(e)) => {
                            accepted[metrics::TLS_FAILED].fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            accepted[metrics::TLS_FAILED].fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake timed out")
                        }
                    }
                }
                None => {
                    state.metrics.accepted[metrics::TLS_NONE].fetch_add(1, Ordering::Relaxed);
                    connection(state.clone(), TokioIo::new(tcp), peer, stop).await
                }
            }
            state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Serves one connection until the client closes it, it stays quiet for `idle_timeout`,
/// or the server stops (`stop`: requests under way are answered, then it is closed, so
/// agents holding kept connections connect to whatever serves the address next).
async fn connection<I>(
    state: Arc<State>,
    io: TokioIo<I>,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let idle = state.config.idle_timeout;
    let opened = Instant::now();
    // When a request last began or ended (ms since `opened`).
    let active = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let svc_state = state.clone();
    let svc_active = active.clone();
    let svc = hyper::service::service_fn(move |req| {
        let state = svc_state.clone();
        let active = svc_active.clone();
        let mark = move || {
            let ms = opened.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
            active.store(ms, Ordering::Relaxed);
        };
        async move {
            mark();
            let response = handle(state, req, peer).await;
            mark();
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper's header timer runs from the end of an answer (or the connection's start)
        // to the end of the next request's headers: it is the idle limit too. With
        // `header_timeout` here, every kept connection quiet for 10 s was closed under its
        // agent (a heartbeat every 30 s, batches every few seconds), which then had to
        // connect again.
        .header_read_timeout(state.config.idle_timeout)
        .max_buf_size(64 << 10)
        .keep_alive(true)
        .serve_connection(io, svc);
    // The idle limit also bounds a connection busy for long with slow requests: one whose
    // quiet time since its last request reaches `idle_timeout` is shut down gracefully, so
    // an agent keeps its connection (and its TLS session) from batch to batch.
    let mut conn = std::pin::pin!(conn);
    let mut wait = idle;
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let served = tokio::select! {
            r = tokio::time::timeout(wait, conn.as_mut()) => r,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
                continue;
            }
        };
        match served {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                return;
            }
            Err(_) => {
                let last = Duration::from_millis(active.load(Ordering::Relaxed));
                let quiet = opened.elapsed().saturating_sub(last);
                if quiet >= idle {
                    conn.as_mut().graceful_shutdown();
                    wait = idle;
                } else {
                    wait = idle - quiet;
                }
            }
        }
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let route = route_label(req.uri().path());
    let response = route_request(&state, req, peer).await;
    state.metrics.request(route, response.status().as_u16());
    response
}

async fn route_request(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if (path == "/" || path == "/console" || path.starts_with("/console/"))
        && let Some(console) = state.console.get()
    {
        return crate::console::handle(console.clone(), req, peer).await;
    }
    let known = proto::ROUTES
        .iter()
        .filter(|(_, p)| *p == path)
        .collect::<Vec<_>>();
    if known.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
        );
    }
    if !known.iter().any(|(m, _)| *m == req.method().as_str()) {
        let allowed = known.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", ");
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} takes {allowed}"),
        );
        if let Ok(v) = HeaderValue::from_str(&allowed) {
            r.headers_mut().insert(hyper::header::ALLOW, v);
        }
        return r;
    }
    match (req.method(), path.as_str()) {
        (&Method::POST, proto::ENROLL) => enroll(state, req, peer).await,
        (&Method::POST, proto::BATCHES) => batch(state, req).await,
        (&Method::POST, proto::HEARTBEAT) => heartbeat(state, req).await,
        (&Method::GET, proto::ADMIN_EVENTS) => admin_events(state, req).await,
        (&Method::GET, proto::ADMIN_AGENTS) => admin_agents(state, req).await,
        (&Method::GET, proto::HEALTH) => health(state).await,
        (&Method::POST, proto::POLL) => poll(state, req).await,
        (&Method::POST, proto::REPORT) => report(state, req).await,
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
        ),
    }
}

/// The request's body, at most `max` bytes as sent.
async fn read_body(
    req: Request<Incoming>,
    max: usize,
) -> Result<(Bytes, Option<String>), Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {max} bytes"),
        )
    };
    if let Some(len) = req.headers().get(CONTENT_LENGTH)
        && len
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > max as u64)
    {
        return Err(too_large());
    }
    let encoding = req
        .headers()
        .get(CONTENT_ENCODING)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok((b.to_bytes(), encoding)),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("the body could not be read: {e}"),
        )),
    }
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty() && t.len() <= 256)
}

async fn client(state: &State) -> Result<deadpool_postgres::Object, Response<Body>> {
    client_of(&state.pool).await
}

/// A connection of `pool`; 503 with `Retry-After` when none comes.
async fn client_of(
    pool: &deadpool_postgres::Pool,
) -> Result<deadpool_postgres::Object, Response<Body>> {
    pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "no database connection");
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is not reachable; try again",
        );
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("2"));
        r
    })
}

fn db_failed(e: impl std::fmt::Display) -> Response<Body> {
    tracing::warn!(error = %e, "database error");
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_error",
        "the database failed; try again",
    );
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("2"));
    r
}

fn no_credential() -> Response<Body> {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send the agent's credential as `Authorization: Bearer wpa_…` (enroll first)",
    )
}

fn unknown_agent() -> Response<Body> {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unknown agent credential (enroll again)",
    )
}

fn revoked(message: String) -> Response<Body> {
    error(StatusCode::FORBIDDEN, "revoked", message)
}

/// Takes a token from the agent's bucket; 429 with `Retry-After` when it is empty.
fn rate_limit(state: &State, id: i64) -> Result<(), Response<Body>> {
    let Err(wait) = take(
        &state.agent_buckets,
        id,
        state.config.agent_rate,
        state.config.agent_burst,
    ) else {
        return Ok(());
    };
    state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this agent; wait {wait} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    Err(resp)
}

/// The agent a credential belongs to, looked up in the database; 401 or 403 (revoked)
/// otherwise.
async fn agent(state: &State, req: &Request<Incoming>) -> Result<i64, Response<Body>> {
    let Some(token) = bearer(req) else {
        return Err(no_credential());
    };
    let db = client(state).await?;
    let row = db
        .query_opt(
            "SELECT id, revoked_at, coalesce(revoke_reason, '') FROM agents WHERE credential_hash = $1",
            &[&admin::hash(&token)],
        )
        .await
        .map_err(db_failed)?;
    match row {
        None => Err(unknown_agent()),
        Some(r) => match r.get::<_, Option<Timestamp>>(1) {
            Some(at) => Err(revoked(ingest::revoked_message(at, r.get(2)))),
            None => {
                let id: i64 = r.get(0);
                rate_limit(state, id)?;
                Ok(id)
            }
        },
    }
}

/// The agent a credential belongs to, for work whose own statement checks the
/// credential again (batches, heartbeats, polls, reports): from the cache of credentials
/// seen valid when it is there (no database on the way), else looked up (and then kept).
/// 401, 403 or 429 otherwise.
async fn agent_cached(
    state: &State,
    req: &Request<Incoming>,
) -> Result<ingest::AgentRef, Response<Body>> {
    let Some(token) = bearer(req) else {
        return Err(no_credential());
    };
    let key = admin::hash(&token);
    let cached = state
        .agent_keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    if let Some(id) = cached {
        rate_limit(state, id)?;
        return Ok(ingest::AgentRef {
            id,
            credential: Some(key),
        });
    }
    let id = agent(state, req).await?;
    let mut keys = state.agent_keys.lock().unwrap_or_else(|e| e.into_inner());
    if keys.len() >= MAX_CACHED_KEYS {
        keys.clear();
    }
    keys.insert(key, id);
    Ok(ingest::AgentRef::checked(id))
}

async fn enroll(state: &Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if take(
        &state.enroll_buckets,
        peer.ip(),
        state.config.enroll_per_minute as f64 / 60.0,
        state.config.enroll_per_minute as f64,
    )
    .is_err()
    {
        state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many enrollment attempts from this address",
        );
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let (body, encoding) = match read_body(req, MAX_ENROLL_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let limits = Limits {
        max_body: MAX_ENROLL_BODY,
        max_decompressed: MAX_ENROLL_BODY * 4,
        max_records: 0,
    };
    let request: EnrollRequest = match Encoding::from_header(encoding.as_deref())
        .and_then(|e| proto::decode_json(&body, e, &limits))
    {
        Ok(r) => r,
        Err(e) => return decode_error(&e),
    };
    let mut db = match client(state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match admin::enroll(&mut db, &request, &peer.ip().to_string()).await {
        Ok(done) => {
            tracing::info!(agent = done.agent_id, group = %done.group, hostname = %request.hostname, %peer, "agent enrolled");
            json(
                StatusCode::OK,
                &EnrollResponse {
                    agent_id: done.agent_id,
                    group: done.group,
                    credential: done.credential,
                    heartbeat_secs: state.config.heartbeat.as_secs().max(1) as u32,
                    max_batch_records: state.config.limits.max_records as u32,
                    max_body_bytes: state.config.limits.max_body as u64,
                },
            )
        }
        Err(AdminError::Refused(m)) => {
            tracing::warn!(%peer, hostname = %request.hostname, reason = %m, "enrollment refused");
            error(StatusCode::FORBIDDEN, "enroll_refused", m)
        }
        Err(AdminError::Invalid(m)) => error(StatusCode::BAD_REQUEST, "bad_request", m),
        Err(e) => db_failed(e),
    }
}

fn decode_error(e: &proto::DecodeError) -> Response<Body> {
    error(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        e.code(),
        e.to_string(),
    )
}

async fn batch(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let m = &state.metrics;
    let agent = match agent_cached(state, &req).await {
        Ok(a) => a,
        Err(r) => {
            m.batches_refused.fetch_add(1, Ordering::Relaxed);
            return r;
        }
    };
    let agent_id = agent.id;
    let key = agent.credential.clone();
    let limits = state.config.limits;
    let (body, encoding) = match read_body(req, limits.max_body).await {
        Ok(b) => b,
        Err(r) => {
            m.batches_refused.fetch_add(1, Ordering::Relaxed);
            return r;
        }
    };
    // Decompressing, parsing and encoding the rows of a few MB is CPU work: off the I/O
    // threads, and before the batch joins a group (whose transaction then only sends).
    let window = *state.window.read().unwrap_or_else(|e| e.into_inner());
    let decoded = tokio::task::spawn_blocking(move || {
        let plain = proto::decompress(&body, Encoding::from_header(encoding.as_deref())?, &limits)?;
        let hash = ingest::content_hash(&plain);
        let batch = proto::decode_batch(&plain, Encoding::Identity, &limits)?;
        Ok::<_, proto::DecodeError>(ingest::prepare(batch, hash, window, Timestamp::now()))
    })
    .await;
    let batch = match decoded {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            m.batches_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = agent_id, error = %e, "batch refused");
            return decode_error(&e);
        }
        Err(e) => return db_failed(e),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    // For the counters: each record's kind and, for events, when the agent stored it.
    let records: Vec<(u8, i64)> = batch
        .records
        .iter()
        .map(|r| match r.kind {
            ingest::Kind::Event { stored_ms, .. } => (0, stored_ms),
            ingest::Kind::Outcome => (1, 0),
            ingest::Kind::Ack { .. } => (2, 0),
        })
        .collect();
    let job = IngestJob {
        agent,
        batch,
        reply,
    };
    if state.ingest.send(job).await.is_err() {
        return db_failed("the ingest workers stopped");
    }
    let result = match answer.await {
        Ok(r) => r,
        Err(_) => Err(IngestError::Db(crate::db::DbError::Build(
            "no answer from the ingest worker".into(),
        ))),
    };
    match result {
        Ok(ack) => {
            let now = Timestamp::now().as_millisecond();
            let (mut events, mut outcomes, mut acks) = (0u64, 0u64, 0u64);
            for (kind, stored_ms) in records.iter().skip(ack.duplicates as usize) {
                match kind {
                    0 => {
                        events += 1;
                        m.lag(now - stored_ms);
                    }
                    1 => outcomes += 1,
                    _ => acks += 1,
                }
            }
            m.events.fetch_add(events, Ordering::Relaxed);
            m.outcomes.fetch_add(outcomes, Ordering::Relaxed);
            m.acks
                .fetch_add(acks.saturating_sub(ack.orphans), Ordering::Relaxed);
            m.duplicates.fetch_add(ack.duplicates, Ordering::Relaxed);
            if ack.already_committed {
                m.batches_duplicate.fetch_add(1, Ordering::Relaxed);
            } else {
                m.batches_stored.fetch_add(1, Ordering::Relaxed);
            }
            json(StatusCode::OK, &ack)
        }
        Err(e @ IngestError::Replayed { committed, .. }) => {
            m.batches_replayed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = agent_id, error = %e, "batch refused as a replay");
            json(
                StatusCode::CONFLICT,
                &ApiError {
                    error: e.to_string(),
                    code: "replayed".into(),
                    expected_seq: Some(committed + 1),
                },
            )
        }
        Err(IngestError::OutOfOrder { first, expected }) => {
            m.batches_out_of_order.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = agent_id, first, expected, "batch out of order");
            json(
                StatusCode::CONFLICT,
                &ApiError {
                    error: format!(
                        "batch starts at sequence number {first}, but {expected} is expected next"
                    ),
                    code: "out_of_order".into(),
                    expected_seq: Some(expected),
                },
            )
        }
        Err(e @ IngestError::NewStreamNotAtStart { .. }) => {
            m.batches_out_of_order.fetch_add(1, Ordering::Relaxed);
            json(
                StatusCode::CONFLICT,
                &ApiError {
                    error: e.to_string(),
                    code: "out_of_order".into(),
                    expected_seq: Some(1),
                },
            )
        }
        Err(IngestError::Unauthorized) => {
            m.batches_refused.fetch_add(1, Ordering::Relaxed);
            if let Some(k) = &key {
                state.forget_key(k);
            }
            unknown_agent()
        }
        Err(IngestError::Revoked(message)) => {
            m.batches_refused.fetch_add(1, Ordering::Relaxed);
            if let Some(k) = &key {
                state.forget_key(k);
            }
            revoked(message)
        }
        Err(IngestError::Db(e)) => {
            m.batches_failed.fetch_add(1, Ordering::Relaxed);
            db_failed(e)
        }
    }
}

async fn heartbeat(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let agent = match agent_cached(state, &req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (body, encoding) = match read_body(req, MAX_HEARTBEAT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let limits = Limits {
        max_body: MAX_HEARTBEAT,
        max_decompressed: MAX_HEARTBEAT,
        max_records: 0,
    };
    let hb: Heartbeat = match Encoding::from_header(encoding.as_deref())
        .and_then(|e| proto::decode_json(&body, e, &limits))
    {
        Ok(h) => h,
        Err(e) => return decode_error(&e),
    };
    let key = agent.credential.clone();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = HeartbeatJob {
        agent,
        heartbeat: hb,
        reply,
    };
    if state.heartbeats.send(job).await.is_err() {
        return db_failed("the heartbeat worker stopped");
    }
    let result = answer.await.unwrap_or_else(|_| {
        Err(HeartbeatFailed::Db(
            "no answer from the heartbeat worker".into(),
        ))
    });
    match result {
        Ok(()) => json(
            StatusCode::OK,
            &HeartbeatAck {
                heartbeat_secs: state.config.heartbeat.as_secs().max(1) as u32,
                server_time_ms: Timestamp::now().as_millisecond(),
            },
        ),
        Err(HeartbeatFailed::Refused(why)) => {
            if let Some(k) = &key {
                state.forget_key(k);
            }
            match why {
                crate::heartbeat::Refused::Unauthorized => unknown_agent(),
                crate::heartbeat::Refused::Revoked(m) => revoked(m),
            }
        }
        Err(HeartbeatFailed::Db(e)) => db_failed(e),
    }
}

/// The user a request's token names: (name, role); 401 otherwise.
async fn user(state: &State, req: &Request<Incoming>) -> Result<(String, String), Response<Body>> {
    let unauthorized = || {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a user's API token as `Authorization: Bearer wpu_…` (`watchpost-server user token`)",
        )
    };
    let Some(token) = bearer(req) else {
        return Err(unauthorized());
    };
    if !token.starts_with(proto::USER_TOKEN_PREFIX) {
        return Err(unauthorized());
    }
    let db = client(state).await?;
    admin::user_for_token(&db, &token)
        .await
        .map_err(db_failed)?
        .ok_or_else(unauthorized)
}

fn query_params(req: &Request<Incoming>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); bad escapes stay as
/// they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn admin_events(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (name, _role) = match user(state, &req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let params = query_params(&req);
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 10_000);
    let query = match crate::events::parse_query(
        params.get("q").map(String::as_str).unwrap_or(""),
        params.get("since").map(String::as_str),
    ) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_query", e.to_string()),
    };
    let db = match client(state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match crate::events::find(&db, &query, limit).await {
        Ok(found) => {
            tracing::debug!(user = %name, n = found.len(), "admin events query");
            json(StatusCode::OK, &found)
        }
        Err(crate::events::FindError::Query(e)) => {
            error(StatusCode::BAD_REQUEST, "bad_query", e.to_string())
        }
        Err(e) => db_failed(e),
    }
}

async fn admin_agents(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    if let Err(r) = user(state, &req).await {
        return r;
    }
    let params = query_params(&req);
    let db = match client(state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match admin::agent_list(
        &db,
        params.get("group").map(String::as_str),
        state.config.offline_after.as_secs_f64(),
    )
    .await
    {
        Ok(list) => json(StatusCode::OK, &list),
        Err(e) => db_failed(e),
    }
}

/// Largest poll or report body.
const MAX_CHANNEL_BODY: usize = 1 << 20;

/// A poll or report body.
async fn channel_body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let (body, encoding) = read_body(req, MAX_CHANNEL_BODY).await?;
    let limits = Limits {
        max_body: MAX_CHANNEL_BODY,
        max_decompressed: MAX_CHANNEL_BODY,
        max_records: 0,
    };
    Encoding::from_header(encoding.as_deref())
        .and_then(|e| proto::decode_json(&body, e, &limits))
        .map_err(|e| decode_error(&e))
}

/// `POST /api/v1/poll`: what is new for the agent, at once or when it arrives (see
/// `channel.rs`). The credential comes from the server's cache when it is there and is
/// checked by the poll's own statement; the database connection goes back to the pool
/// while the poll waits.
async fn poll(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let agent = match agent_cached(state, &req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let p: proto::Poll = match channel_body(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let wait = Duration::from_secs(u64::from(p.wait_secs.min(proto::channel::MAX_WAIT_SECS)));
    let deadline = Instant::now() + wait;
    let mut woken = crate::channel::Woken::No;
    loop {
        let noted = state.hub.before_reading(agent.id);
        let pool = match woken {
            crate::channel::Woken::Agent => &state.urgent,
            _ => &state.pool,
        };
        let conn = match client_of(pool).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let fetched = crate::channel::fetch(&conn, &state.hub, &agent, &p).await;
        drop(conn);
        let (group, delivery) = match fetched {
            Ok(crate::channel::Fetched::Found(g, d)) => (g, d),
            Ok(crate::channel::Fetched::Refused(why)) => return refused(state, &agent, why),
            Err(e) => return db_failed(e),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if !delivery.is_empty() || left.is_zero() {
            return json(StatusCode::OK, &delivery);
        }
        woken = crate::channel::wait(&state.hub, &noted, group, p.config_version, left).await;
        if woken == crate::channel::Woken::No {
            return json(StatusCode::OK, &proto::Delivery::default());
        }
        if woken == crate::channel::Woken::Group
            && let Some(c) = crate::channel::cached_publication(&state.hub, group, p.config_version)
        {
            let d = proto::Delivery {
                config: Some(c),
                ..proto::Delivery::default()
            };
            return json(StatusCode::OK, &d);
        }
    }
}

/// The answer to a request whose credential its transaction refused; the credential
/// leaves the cache.
fn refused(
    state: &State,
    agent: &ingest::AgentRef,
    why: crate::heartbeat::Refused,
) -> Response<Body> {
    if let Some(k) = &agent.credential {
        state.forget_key(k);
    }
    match why {
        crate::heartbeat::Refused::Unauthorized => unknown_agent(),
        crate::heartbeat::Refused::Revoked(m) => revoked(m),
    }
}

/// `POST /api/v1/report`: a configuration applied or refused, command results, how far
/// central acknowledgements were applied; recorded by the report worker together with
/// the reports that arrived at the same time.
async fn report(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let agent = match agent_cached(state, &req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let r: proto::Report = match channel_body(req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = ReportJob {
        agent: agent.clone(),
        report: r,
        reply,
    };
    if state.reports.send(job).await.is_err() {
        return db_failed("the report worker stopped");
    }
    match answer.await {
        Ok(Ok(Ok(ack))) => json(StatusCode::OK, &ack),
        Ok(Ok(Err(why))) => refused(state, &agent, why),
        Ok(Err(e)) => db_failed(e),
        Err(_) => db_failed("no answer from the report worker"),
    }
}

async fn health(state: &Arc<State>) -> Response<Body> {
    let ok = match state.pool.get().await {
        Ok(c) => c.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    if ok {
        json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "database": "ok" }),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "degraded", "database": "unreachable" }),
        )
    }
}

/// Serves `GET /metrics` (plain HTTP) until `stop`.
pub async fn serve_metrics(
    state: Arc<State>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let r = if req.uri().path() != "/metrics" {
                        error(StatusCode::NOT_FOUND, "not_found", "only /metrics here")
                    } else if req.method() != Method::GET {
                        error(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "method_not_allowed",
                            "GET only",
                        )
                    } else {
                        state
                            .metrics
                            .polls_waiting
                            .store(state.hub.waiting.load(Ordering::Relaxed), Ordering::Relaxed);
                        let text = state
                            .metrics
                            .render(&state.pool.status(), &state.urgent.status());
                        let mut r = Response::new(Full::new(Bytes::from(text)));
                        r.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        r
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(2))
                    .serve_connection(TokioIo::new(tcp), svc),
            )
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_their_rate() {
        let b = Mutex::new(HashMap::new());
        assert!(take(&b, 1, 1.0, 2.0).is_ok());
        assert!(take(&b, 1, 1.0, 2.0).is_ok());
        assert_eq!(take(&b, 1, 1.0, 2.0), Err(1));
        assert!(take(&b, 2, 1.0, 2.0).is_ok());
        assert_eq!(percent_decode("a%20b+c%zz%"), "a b c%zz%");
        assert_eq!(
            percent_decode("isanomaly%3Atrue%20host%3AA"),
            "isanomaly:true host:A"
        );
    }
}
