//! `[console]`: the web console over this agent's event store, served by a supervised
//! task on its own listener (plain HTTP on loopback; `watchpost-console`'s blocking
//! server). It reads the running daemon's counters (the heartbeat the fleet would get,
//! with the quarantine in force) and its baselines, and releases the quarantine through
//! the agent's quarantine API; users come from the console's user file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use watchpost_config::Config;
use watchpost_console::local::{LocalBackend, LocalState};
use watchpost_console::serve::Server;
use watchpost_console::{Console, auth::Keys};

use crate::analysis::Analysis;
use crate::metrics::Metrics;
use crate::supervisor::{StopSignal, Supervisor, Task};

/// The task's name.
pub const TASK: &str = "console";

struct Daemon {
    metrics: Arc<Metrics>,
    analysis: Arc<Analysis>,
    host: String,
    state_dir: PathBuf,
}

impl LocalState for Daemon {
    fn heartbeat(&self) -> watchpost_fleet_protocol::Heartbeat {
        let mut hb = self.metrics.heartbeat();
        hb.hostname = self.host.clone();
        hb.quarantine = crate::fleet::quarantine(&self.state_dir);
        hb
    }

    /// As the fleet's `quarantine_release` command and `watchpost quarantine release` do.
    fn release_quarantine(&self, by: &str, reason: &str) -> Result<bool, String> {
        watchpost_actions::quarantine::release(&self.state_dir, &format!("console ({by})"), reason)
            .map(|s| s.is_some())
            .map_err(|e| e.to_string())
    }

    fn baselines(&self) -> Option<&watchpost_anomaly::Baselines> {
        self.analysis.baselines()
    }
}

struct ConsoleTask {
    server: Server,
    console: Arc<Console>,
}

impl Task for ConsoleTask {
    fn name(&self) -> String {
        TASK.into()
    }

    /// Wakes `accept` with a connection of its own.
    fn stopper(&self) -> Option<watchpost_sources::StopHandle> {
        let mut wake = self.server.local_addr();
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        Some(watchpost_sources::StopHandle::new(move || {
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        }))
    }

    fn run(self: Box<Self>, stop: StopSignal) {
        self.server.run(self.console, || stop.is_raised());
    }
}

/// Binds the console (when configured) and starts its task.
pub fn start(
    sup: &mut Supervisor,
    config: &Config,
    metrics: &Arc<Metrics>,
    analysis: &Arc<Analysis>,
    host: &str,
) -> Result<()> {
    let Some(c) = &config.console else {
        return Ok(());
    };
    let backend = LocalBackend::open(
        &config.store.path,
        c.users.clone(),
        host.to_owned(),
        Box::new(Daemon {
            metrics: metrics.clone(),
            analysis: analysis.clone(),
            host: host.to_owned(),
            state_dir: config.state_dir.clone(),
        }),
    )
    .context("[console]: opening the event store")?;
    let keys = Keys::random().context("[console]: making the session key")?;
    let console = Arc::new(Console::new(Arc::new(backend), keys, false));
    let server =
        Server::bind(c.listen).with_context(|| format!("[console] listen: {}", c.listen))?;
    tracing::info!(address = %server.local_addr(), users = %c.users.display(), "serving the console at /console/");
    if !c.users.exists() {
        tracing::warn!(users = %c.users.display(), "the console has no user file yet: add a user with `watchpost console-user add NAME --role analyst`");
    }
    sup.start(Box::new(ConsoleTask { server, console }))?;
    Ok(())
}
