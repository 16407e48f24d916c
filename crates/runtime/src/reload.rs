//! Asking the running daemon to reload, from anywhere: a signal handler, the Windows
//! service's control handler, the configuration watcher, a fleet agent applying a pushed
//! configuration.
//!
//! A [`ReloadHandle`] sends a [`Request`] to the daemon's main loop, which loads and
//! checks the configuration completely before touching anything (see `daemon.rs`) and
//! answers with an [`Outcome`]: the new generation, or the diagnostics that rejected it.
//! Requests that arrive while a reload runs are coalesced: after it, one more reload
//! serves all of them (of the source the last one named).
//!
//! Each attempt is also written to `<state_dir>/reload.json` (what `watchpost reload`
//! waits for; the daemon's pid is in `<state_dir>/watchpost.pid`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use watchpost_config::ConfigSource;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The new configuration runs as this generation; `changes` says what changed.
    Applied {
        /// The generation now running.
        generation: u64,
        /// Sources, filters, actions, checks and rule sets added, changed, removed.
        changes: String,
    },
    /// The configuration equals the running one: nothing was done.
    Unchanged {
        /// The generation still running.
        generation: u64,
    },
    /// The configuration had errors (or could not be applied); the old one keeps
    /// running.
    Rejected {
        /// The generation still running.
        generation: u64,
        /// Every diagnostic as `file:line:column: error: …`.
        diagnostics: String,
    },
}

impl Outcome {
    /// Whether the configuration is running now (applied, or already running).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Outcome::Rejected { .. })
    }

    /// The generation running after the attempt.
    pub fn generation(&self) -> u64 {
        match self {
            Outcome::Applied { generation, .. }
            | Outcome::Unchanged { generation }
            | Outcome::Rejected { generation, .. } => *generation,
        }
    }
}

/// One request.
#[derive(Debug)]
pub struct Request {
    /// The configuration to apply; `None`: the one the daemon runs with, read again.
    pub source: Option<ConfigSource>,
    /// Where the outcome goes (none for fire-and-forget triggers).
    pub reply: Option<Sender<Outcome>>,
}

/// Sends reload requests to the daemon. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: Sender<Request>,
}

/// The daemon's end of the request channel.
#[derive(Debug)]
pub struct Requests {
    pub(crate) rx: Receiver<Request>,
}

/// A handle and the receiving end it feeds.
pub fn channel() -> (ReloadHandle, Requests) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (ReloadHandle { tx }, Requests { rx })
}

impl ReloadHandle {
    /// Asks for a reload of the running configuration's source; does not wait. For
    /// signal handlers and watchers.
    pub fn request(&self) {
        let _ = self.tx.send(Request {
            source: None,
            reply: None,
        });
    }

    /// Reloads from `source` (`None`: the daemon's own) and waits for the outcome, at
    /// most `timeout`; `None` when the daemon did not answer (stopped, or still busy).
    pub fn reload(&self, source: Option<ConfigSource>, timeout: Duration) -> Option<Outcome> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Request {
                source,
                reply: Some(tx),
            })
            .ok()?;
        rx.recv_timeout(timeout).ok()
    }
}

/// What `<state_dir>/reload.json` holds: the last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// When the attempt started reading the configuration (Unix ms).
    pub started_ms: i64,
    /// When it ended.
    pub finished_ms: i64,
    /// What it did.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The status file of a state directory.
pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("reload.json")
}

/// The pid file of a state directory.
pub fn pid_path(state_dir: &Path) -> PathBuf {
    state_dir.join("watchpost.pid")
}

/// Reads the last reload's status (`None` when there is none or it is unreadable).
pub fn read_status(state_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(status_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes a reload's status.
pub(crate) fn write_status(state_dir: &Path, status: &Status) {
    let path = status_path(state_dir);
    let json = serde_json::to_vec_pretty(status).unwrap_or_default();
    if let Err(e) = watchpost_support::write_atomic(&path, &json) {
        tracing::error!(file = %path.display(), error = %e, "writing the reload status");
    }
}
