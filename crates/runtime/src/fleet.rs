//! `[fleet]`: the daemon's link to the fleet server (crate `watchpost-fleet`) as one
//! supervised task, `fleet`. The event store's writer queues what it stores (its
//! `outbox`); the task ships that queue and heart-beats with the daemon's counters
//! ([`Metrics::heartbeat`]), the running configuration's digest and warnings, and the
//! quarantine in force.
//!
//! On a reload the task is kept when `[fleet]` (with its CA and secret files and the
//! host name it reports) did not change; otherwise it is stopped (a request under way
//! finishes within its `timeout`) and started with the new settings, the store's queue
//! turned on, resized or off to match. A new configuration's client is made before
//! anything changes (it opens the queue and reads the CA file), so one that cannot be
//! made rejects the reload.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use watchpost_config::Config;
use watchpost_fleet::{Client, HostInfo};

use crate::metrics::Metrics;
use crate::pipeline::local_host_name;
use crate::supervisor::Supervisor;

/// The task's name.
pub const TASK: &str = "fleet";

/// This host for the server: its stable id (`[fleet] host_id`, else the machine's id,
/// else one made once and kept in the state directory) and name.
pub fn host(config: &Config) -> Result<HostInfo> {
    let configured = config.fleet.as_ref().and_then(|(_, f)| f.host_id.clone());
    let host_id = match configured.or_else(watchpost_fleet::host_id) {
        Some(id) => id,
        None => {
            let path = config.state_dir.join("fleet.host-id");
            match std::fs::read_to_string(&path) {
                Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
                _ => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    let id = format!("watchpost-{nanos:x}-{:x}", std::process::id());
                    watchpost_support::write_atomic(&path, id.as_bytes()).with_context(|| {
                        format!(
                            "no machine id here, and cannot keep one in {}",
                            path.display()
                        )
                    })?;
                    id
                }
            }
        }
    };
    let hostname = config.agent.host.clone().unwrap_or_else(local_host_name);
    Ok(HostInfo { host_id, hostname })
}

/// The client for `config`'s `[fleet]` (`None` without one): the queue opened, the CA
/// file read; no request yet.
pub fn prepare(config: &Config, metrics: &Arc<Metrics>) -> Result<Option<Client>> {
    let Some((_, spec)) = &config.fleet else {
        return Ok(None);
    };
    if !config.store.enabled {
        return Ok(None);
    }
    let metrics = metrics.clone();
    let state_dir = config.state_dir.clone();
    let status = Box::new(move || {
        let mut hb = metrics.heartbeat();
        hb.quarantine = quarantine(&state_dir);
        hb
    });
    let client = Client::new(spec.clone(), &config.store.path, host(config)?, status)
        .map_err(|e| anyhow::anyhow!("[fleet]: {e}"))?;
    Ok(Some(client))
}

/// Starts the task with a prepared client.
pub fn start(sup: &mut Supervisor, client: Client, server: &str) -> Result<()> {
    let mut client = client;
    sup.spawn(TASK, move |stop| client.run(&|d| !stop.sleep(d)))?;
    tracing::info!(server = %server, "shipping the event store to the fleet server");
    Ok(())
}

/// Turns the store's shipping queue on (bounded by `[fleet] max_queue`) or off, for a
/// reload that added, changed or removed `[fleet]` (the writer reads the setting in
/// every transaction).
pub fn set_queueing(config: &Config) -> Result<()> {
    if !config.store.enabled {
        return Ok(());
    }
    let ship = config.fleet.as_ref().map(|(_, f)| f.max_queue);
    watchpost_store::Outbox::open(&config.store.path)
        .and_then(|o| o.set_queueing(ship))
        .with_context(|| {
            format!(
                "setting the fleet queue of the event store {}",
                config.store.path.display()
            )
        })
}

/// The quarantine in force, from its state file.
fn quarantine(state_dir: &Path) -> Option<watchpost_fleet_protocol::QuarantineStatus> {
    let s = watchpost_actions::quarantine::status(state_dir).ok()??;
    if !s.active {
        return None;
    }
    let ms = |t: &str| {
        t.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    };
    Some(watchpost_fleet_protocol::QuarantineStatus {
        since_ms: ms(&s.since).unwrap_or(0),
        reason: s.reason,
        until_ms: s.until.as_deref().and_then(ms),
    })
}
