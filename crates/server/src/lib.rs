//! The watchpost fleet server: agents enroll with a group's secret and ship what their
//! event stores hold; the server keeps it in PostgreSQL, each record exactly once, and
//! keeps no state of its own (several servers can share one database behind a load
//! balancer).
//!
//! | module | what it owns |
//! |---|---|
//! | `config.rs` | the TOML file and its `check-config` diagnostics |
//! | `db.rs` | the connection pool, versioned migrations (`migrations/*.sql`), day partitions and retention |
//! | `http.rs` | HTTPS (rustls), connection and body limits, routing, authentication, rate limits, the handlers |
//! | `ingest.rs` | one batch into PostgreSQL in one transaction, exactly once |
//! | `heartbeat.rs` | a heartbeat into the agent's row, check and quarantine states |
//! | `admin.rs` | groups, enrollment secrets, enrollment, agents, users, the audit log |
//! | `control.rs` | group configuration versions (checked with the agent's own code), commands, central acknowledgements: library functions for the CLI and the console |
//! | `channel.rs` | the long-poll back to agents (`/poll`, `/report`), woken through PostgreSQL `LISTEN/NOTIFY` |
//! | `query.rs`, `events.rs` | the `watchpost events` query language compiled to PostgreSQL; listing |
//! | `metrics.rs` | Prometheus counters |
//! | `console.rs` | the web console (`watchpost-console`) over PostgreSQL, `[console]` |
//!
//! The wire format is `watchpost-fleet-protocol`; the API is described in
//! `docs/fleet-api.md`, deployment in `docs/fleet.md`.

pub mod admin;
pub mod channel;
pub mod config;
pub mod console;
pub mod control;
pub mod copy;
pub mod db;
pub mod events;
pub mod heartbeat;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod query;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

/// Reads at most `max` bytes of a file as text.
pub fn read_limited(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(text)
}

/// Opens the pool, applies migrations and makes the partitions: what `run` does before
/// it listens.
pub async fn prepare(
    config: &config::Config,
) -> anyhow::Result<(deadpool_postgres::Pool, db::Window)> {
    let pool = db::pool(&config.database)?;
    let mut client = pool.get().await.map_err(db::DbError::from)?;
    let applied = db::migrate(&mut client).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "database schema migrated");
    }
    let (window, _) =
        db::maintain_partitions(&mut client, jiff::Timestamp::now(), config.retention_days).await?;
    Ok((pool, window))
}

/// Every 15 s: agents online/offline for the metrics, idle rate-limit buckets pruned;
/// every `fold_every` (5 minutes, the first time at the first tick): the per-hour counts
/// of past hours folded (`db::fold_hours`); every hour (and after a database outage):
/// partitions made and dropped.
async fn maintenance(state: Arc<http::State>, mut stop: watch::Receiver<bool>) {
    let mut last_partitions = tokio::time::Instant::now();
    let mut partitions_due = false;
    let mut last_fold: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            _ = stop.changed() => return,
        }
        state.prune_buckets();
        state.hub.prune();
        let Ok(mut client) = state.pool.get().await else {
            partitions_due = true;
            continue;
        };
        let offline = state.config.offline_after.as_secs_f64();
        if let Ok(row) = client
            .query_one(
                "SELECT count(*) FILTER (WHERE revoked_at IS NULL AND last_seen_at > now() - make_interval(secs => $1)),
                        count(*) FILTER (WHERE revoked_at IS NULL AND (last_seen_at IS NULL OR last_seen_at <= now() - make_interval(secs => $1))),
                        count(*) FILTER (WHERE revoked_at IS NOT NULL)
                 FROM agents",
                &[&offline],
            )
            .await
        {
            for i in 0..3 {
                state.metrics.agents[i].store(row.get::<_, i64>(i), Ordering::Relaxed);
            }
        }
        if let Ok((outstanding, pending)) = control::outstanding(&client).await {
            state
                .metrics
                .config_outstanding
                .store(outstanding, Ordering::Relaxed);
            state
                .metrics
                .commands_pending
                .store(pending, Ordering::Relaxed);
        }
        if let Some(every) = state.config.fold_every
            && last_fold.is_none_or(|t| t.elapsed() >= every)
        {
            match db::fold_hours(&mut client, db::fold_before(jiff::Timestamp::now())).await {
                Ok(f) => {
                    last_fold = Some(tokio::time::Instant::now());
                    if f.event_rows + f.filter_rows > 0 {
                        tracing::debug!(
                            event_rows = f.event_rows,
                            filter_rows = f.filter_rows,
                            "per-hour counts of past hours folded"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "folding the per-hour counts failed; trying again")
                }
            }
        }
        if partitions_due || last_partitions.elapsed() >= Duration::from_secs(3600) {
            match db::maintain_partitions(
                &mut client,
                jiff::Timestamp::now(),
                state.config.retention_days,
            )
            .await
            {
                Ok((w, _)) => {
                    *state.window.write().unwrap_or_else(|e| e.into_inner()) = w;
                    last_partitions = tokio::time::Instant::now();
                    partitions_due = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "partition maintenance failed; trying again");
                    partitions_due = true;
                }
            }
        }
    }
}

/// A running server (in this process): its address and how to stop it.
pub struct Running {
    /// Where the API listens.
    pub addr: std::net::SocketAddr,
    /// Where the metrics listen.
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    hub: Arc<channel::Hub>,
}

impl Running {
    /// Stops accepting and waits for the tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.hub.close();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Ingest workers for a pool of `pool_size` connections: a quarter of the pool, two to
/// four. Each stores a group of batches in one transaction; while one waits for its
/// commit to reach the disk, another copies rows. More would only share the same CPUs
/// (PostgreSQL's work per event is the same) in smaller, costlier groups; the rest of the
/// pool serves the heartbeat worker, enrollment, credential lookups and admin requests.
pub fn ingest_workers(pool_size: usize) -> usize {
    (pool_size / 4)
        .clamp(2, 4)
        .min(pool_size.saturating_sub(1).max(1))
}

/// Raises the open-file limit to the hard maximum the system allows this process: every
/// agent holds up to three connections (batches, heartbeats, the channel back), each a
/// file descriptor, and the usual soft limit of 1,024 would refuse the 342nd agent.
/// Warns when the limit is still below `max_connections` (and the few the server needs
/// for itself): connections beyond it wait in the kernel's backlog until others close.
/// Returns the limit in force (`None`: unlimited or unknown).
#[cfg(unix)]
pub fn raise_open_files(max_connections: usize) -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let want = l.maximum.unwrap_or(1 << 20).min(1 << 20);
    if l.current.is_some_and(|c| c < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: l.maximum,
            },
        );
    }
    let now = getrlimit(Resource::Nofile).current;
    let needed = max_connections as u64 + 256;
    if let Some(n) = now.filter(|n| *n < needed) {
        tracing::warn!(
            open_files = n,
            max_connections,
            "the open-file limit is below max_connections: with that many agents connected, further connections wait until others close (raise the limit: LimitNOFILE= in the systemd unit, or ulimit -Hn)"
        );
    }
    now
}

/// Prepares the database and starts serving; returns once listening.
pub async fn start(config: config::Config) -> anyhow::Result<Running> {
    #[cfg(unix)]
    raise_open_files(config.max_connections);
    let (pool, window) = prepare(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics {
        Some(m) => Some(
            TcpListener::bind(m)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {m} (metrics): {e}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let workers = ingest_workers(config.database.pool_size);
    let pg = db::pg_config(&config.database)?;
    let console = console::console(&config, pool.clone())?;
    let urgent = db::pool_of(&config.database, db::URGENT_POOL)?;
    let (state, queues) = http::State::new(config, pool, urgent, window);
    if let Some(c) = console {
        let _ = state.console.set(c);
    }
    let state = Arc::new(state);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let hub = state.hub.clone();
    tasks.push(tokio::spawn(channel::listen(
        pg,
        hub.clone(),
        stop_rx.clone(),
    )));
    let ingest_rx = Arc::new(tokio::sync::Mutex::new(queues.ingest));
    for _ in 0..workers {
        tasks.push(tokio::spawn(http::ingest_worker(
            state.clone(),
            ingest_rx.clone(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(http::heartbeat_worker(
        state.clone(),
        queues.heartbeats,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(http::report_worker(
        state.clone(),
        queues.reports,
        stop_rx.clone(),
    )));
    let s = state.clone();
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = http::serve(s, listener, rx).await {
            tracing::error!(error = %e, "API server stopped");
        }
    }));
    if let Some(l) = metrics_listener {
        tasks.push(tokio::spawn(http::serve_metrics(
            state.clone(),
            l,
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(maintenance(state, stop_rx)));
    Ok(Running {
        addr,
        metrics_addr,
        stop,
        tasks,
        hub,
    })
}

#[cfg(all(test, unix))]
mod tests {
    use rustix::process::{Resource, getrlimit};

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_maximum() {
        let before = getrlimit(Resource::Nofile);
        let now = super::raise_open_files(usize::MAX / 2);
        let hard = before.maximum.unwrap_or(1 << 20).min(1 << 20);
        assert!(now >= before.current, "{now:?} < {:?}", before.current);
        if before.maximum.is_some_and(|m| m <= 1 << 20) {
            assert_eq!(now, Some(hard));
        }
    }
}
