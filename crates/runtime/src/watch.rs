//! `[agent] watch_config = true`: reload when the configuration file, or a file it names
//! (rule folders, placeholder files), changes.
//!
//! The folders holding them are watched with `notify` (inotify on Linux,
//! `ReadDirectoryChangesW` on Windows): a file's folder, not the file, so an editor that
//! saves by writing a new file and renaming it over the old one is seen too. A burst of
//! changes (a checkout of a rule repository) is debounced: the reload is asked for once
//! nothing changed for half a second. A folder that vanishes is reported by the reload
//! that follows (its rules are gone); the old configuration keeps running then.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use crate::reload::ReloadHandle;
use crate::supervisor::Supervisor;

/// Quiet time after the last change before the reload is asked for.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Starts the `watch-config` task over `paths`.
pub fn start(
    sup: &mut Supervisor,
    paths: &[PathBuf],
    reload: &ReloadHandle,
) -> std::io::Result<()> {
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let wanted: Vec<PathBuf> = paths.iter().map(|p| absolute(p)).collect();
    let matches = {
        let wanted = wanted.clone();
        move |p: &Path| {
            wanted
                .iter()
                .any(|w| p == w || p.starts_with(w) || w.starts_with(p))
        }
    };
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && ev.paths.iter().any(|p| matches(p))
        {
            let _ = tx.send(());
        }
    })
    .map_err(std::io::Error::other)?;
    for p in &wanted {
        // A file: its folder; a folder: itself, with everything below.
        let (dir, mode) = if p.is_dir() {
            (p.clone(), RecursiveMode::Recursive)
        } else {
            (
                p.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                RecursiveMode::NonRecursive,
            )
        };
        if let Err(e) = watcher.watch(&dir, mode) {
            tracing::warn!(path = %dir.display(), error = %e, "watch_config: cannot watch");
        }
    }
    let reload = reload.clone();
    let names: Vec<String> = wanted.iter().map(|p| p.display().to_string()).collect();
    tracing::info!(paths = %names.join(", "), "watching the configuration for changes");
    sup.spawn("watch-config", move |stop| {
        let _watcher = watcher;
        let mut pending: Option<Instant> = None;
        while !stop.is_raised() {
            let wait = pending.map_or(Duration::from_millis(200), |at| {
                (at + DEBOUNCE).saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(wait.min(Duration::from_millis(200))) {
                Ok(()) => pending = Some(Instant::now()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if pending.is_some_and(|at| at.elapsed() >= DEBOUNCE) {
                        pending = None;
                        tracing::info!("configuration changed on disk: reloading");
                        reload.request();
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
