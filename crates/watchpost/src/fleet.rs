//! The daemon's link to the fleet server (`[fleet]`, crate `watchpost-fleet`): the shipper
//! thread, started with the event store (whose writer queues what it stores), its
//! heartbeat built from the daemon's counters (`metrics.rs`), and `watchpost enroll`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use watchpost_fleet::{FleetSpec, HostInfo, SecretSource, Shipper};

use crate::config::Config;
use crate::metrics::Metrics;

/// This host for the server: its stable id (machine id; else one made once and kept in
/// the state directory) and name.
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
                    std::fs::create_dir_all(&config.state_dir).ok();
                    std::fs::write(&path, &id).with_context(|| {
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
    let hostname = config
        .agent
        .host
        .clone()
        .unwrap_or_else(crate::pipeline::local_host_name);
    Ok(HostInfo { host_id, hostname })
}

/// Starts shipping when `[fleet]` is configured (and the store is on).
pub fn start(config: &Config, metrics: &Arc<Metrics>) -> Result<Option<Shipper>> {
    let Some((_, spec)) = &config.fleet else {
        return Ok(None);
    };
    if !config.store.enabled {
        return Ok(None);
    }
    let metrics = metrics.clone();
    let generation = config.generation.clone();
    let warnings = config.warnings.clone();
    let state_dir = config.state_dir.clone();
    let status = Box::new(move || {
        let mut hb = metrics.heartbeat();
        hb.config_generation = Some(generation.clone());
        hb.config_diagnostics = warnings.clone();
        hb.quarantine = quarantine(&state_dir);
        hb
    });
    let shipper = watchpost_fleet::start(
        spec.clone(),
        config.store.path.clone(),
        host(config)?,
        status,
    )
    .map_err(|e| anyhow::anyhow!("[fleet]: {e}"))?;
    tracing::info!(server = %spec.server, "shipping the event store to the fleet server");
    Ok(Some(shipper))
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

/// `watchpost enroll`: enrolls with the configured (or given) secret and stores the
/// credential.
pub fn enroll(config: &Config, secret_file: Option<&Path>) -> Result<()> {
    let Some((_, spec)) = &config.fleet else {
        bail!(
            "the configuration has no [fleet] section: add `server`, `ca_file` and `enroll_secret`"
        );
    };
    let mut spec: FleetSpec = spec.clone();
    if let Some(f) = secret_file {
        spec.secret = Some(SecretSource::File(f.to_path_buf()));
    }
    let host = host(config)?;
    let r = watchpost_fleet::enroll(&spec, &host)?;
    println!(
        "enrolled with {} as agent {} in group {} (host id {}); credential stored in {}",
        spec.server,
        r.agent_id,
        r.group,
        host.host_id,
        config.state_dir.join("fleet.credential").display()
    );
    Ok(())
}
