//! `<state_dir>/quarantine.json` and the lock every change takes.
//!
//! The daemon's worker and timer and the `watchpost quarantine` commands may act at the
//! same time (the CLI while the daemon runs). Each change takes an exclusive lock on
//! `<state_dir>/quarantine.lock` (`File::lock`: flock on Unix, LockFileEx on Windows;
//! released by the kernel if the holder dies), reads the state file, acts, writes the file
//! atomically (temporary file, fsync, rename) and only then unlocks. Nobody trusts a copy in
//! memory: the daemon re-reads the file under the lock before each decision.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::ValueKind;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "quarantine.json";
const LOCK_FILE: &str = "quarantine.lock";
const VERSION: u32 = 1;

/// The recorded quarantine: whether it is in force, since when, why, until when, and how
/// to undo it (so any process can release it, with what was really applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineState {
    /// Format version (1).
    pub version: u32,
    /// Whether the quarantine is in force.
    pub active: bool,
    /// The `quarantine` action that applied it.
    pub action: String,
    /// When it was applied (RFC 3339, UTC).
    pub since: String,
    /// When the daemon lifts it (RFC 3339, UTC); `None`: until released.
    pub until: Option<String>,
    /// Why: `filter NAME fired` or the `--reason` given to the CLI.
    pub reason: String,
    /// Who applied it: `daemon` or `cli (USER)`.
    pub by: String,
    /// The filter that fired, when an event applied it.
    pub filter: Option<String>,
    /// The event that applied it.
    pub event: Option<EventInfo>,
    /// How and when it was lifted (once `active` is false).
    pub released: Option<Released>,
    /// What was applied, so that it can be undone.
    pub undo: Undo,
}

/// The event behind a quarantine, shortened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInfo {
    /// The event's source.
    pub source: String,
    /// The event's host.
    pub host: String,
    /// The event's time (RFC 3339), if it has one.
    pub time: Option<String>,
    /// `place:offset` where it was read.
    pub origin: Option<String>,
    /// The raw record, cut at 500 bytes.
    pub raw: String,
}

/// How a quarantine was lifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// By whom: `daemon`, `timeout` or `cli (USER)`.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// What was applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Undo {
    /// The nftables table (Linux).
    pub nft: Option<NftUndo>,
    /// The registry value (Windows) and what it held before.
    pub registry: Option<RegistryUndo>,
    /// The hook's rendered argv, run again on release.
    pub hook: Option<HookUndo>,
}

/// The nftables part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NftUndo {
    /// The `nft` program.
    pub program: String,
    /// Our table (family `inet`).
    pub table: String,
}

/// The registry part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryUndo {
    /// `HKLM` or `HKCU`.
    pub hive: String,
    /// The key under the hive.
    pub path: String,
    /// The value name.
    pub value: String,
    /// Whether the key existed before (a key the quarantine created is deleted on release:
    /// SEP's "registry key exists" condition must turn false again).
    pub key_existed: bool,
    /// What the value held before (restored on release); `None`: it did not exist
    /// (deleted on release).
    pub previous: Option<PreviousValue>,
}

/// A registry value's earlier data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousValue {
    /// `sz`, `expand_sz`, `dword` or `qword`.
    pub(crate) kind: ValueKind,
    /// The data as text.
    pub data: String,
}

/// The hook part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookUndo {
    /// Program and arguments, rendered when the quarantine was applied.
    pub argv: Vec<String>,
    /// Seconds before the hook is killed.
    pub timeout_secs: u64,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Locking, reading or writing failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a state file this version understands.
    #[error("{} is damaged or of another version ({why}); remove it after checking `nft list tables` and the registry by hand", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },
}

/// The exclusive lock on the state; unlocked when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct Locked {
    _file: File,
    dir: PathBuf,
}

impl Locked {
    /// Waits for the lock (creating the state directory and the lock file if needed).
    pub(crate) fn acquire(dir: &Path) -> Result<Locked, StateError> {
        Self::take(dir, true)?.ok_or_else(|| StateError::Io {
            what: "locking",
            path: dir.join(LOCK_FILE),
            source: io::Error::other("the lock was not taken"),
        })
    }

    /// The lock if nobody holds it now (`None`: someone is applying or releasing).
    pub(crate) fn try_acquire(dir: &Path) -> Result<Option<Locked>, StateError> {
        Self::take(dir, false)
    }

    fn take(dir: &Path, wait: bool) -> Result<Option<Locked>, StateError> {
        let path = dir.join(LOCK_FILE);
        let err = |what, source| StateError::Io {
            what,
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| err("creating the directory of", e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| err("opening", e))?;
        if wait {
            file.lock().map_err(|e| err("locking", e))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(err("locking", e)),
            }
        }
        Ok(Some(Locked {
            _file: file,
            dir: dir.to_owned(),
        }))
    }

    /// The state as written now.
    pub(crate) fn read(&self) -> Result<Option<QuarantineState>, StateError> {
        read(&self.dir)
    }

    /// Replaces the state file atomically.
    pub(crate) fn write(&self, state: &QuarantineState) -> Result<(), StateError> {
        let path = self.dir.join(STATE_FILE);
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
            what: "encoding",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        let err = |source| StateError::Io {
            what: "writing",
            path: path.clone(),
            source,
        };
        watchpost_support::write_atomic(&path, &bytes).map_err(err)?;
        // The rename itself survives a power loss only once the directory is synced.
        #[cfg(unix)]
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

impl Locked {
    /// Puts back an earlier state (`None`: there was no file).
    pub(crate) fn put_back(&self, state: Option<&QuarantineState>) -> Result<(), StateError> {
        match state {
            Some(s) => self.write(s),
            None => {
                let path = self.dir.join(STATE_FILE);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(StateError::Io {
                        what: "removing",
                        path,
                        source,
                    }),
                }
            }
        }
    }
}

/// The state file's content (`None` when there is none), read without the lock: the file
/// is only ever replaced whole, so a reader sees one version or the other.
pub fn read(dir: &Path) -> Result<Option<QuarantineState>, StateError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                what: "reading",
                path,
                source,
            });
        }
    };
    let state: QuarantineState =
        serde_json::from_slice(&bytes).map_err(|e| StateError::Damaged {
            path: path.clone(),
            why: e.to_string(),
        })?;
    if state.version != VERSION {
        return Err(StateError::Damaged {
            path,
            why: format!("version {}", state.version),
        });
    }
    Ok(Some(state))
}

impl QuarantineState {
    /// A new, active state.
    pub(crate) fn new(action: &str, since: String, reason: String, by: String) -> Self {
        QuarantineState {
            version: VERSION,
            active: true,
            action: action.to_owned(),
            since,
            until: None,
            reason,
            by,
            filter: None,
            event: None,
            released: None,
            undo: Undo::default(),
        }
    }

    /// When it expires, parsed.
    pub fn until_time(&self) -> Option<jiff::Timestamp> {
        self.until.as_deref().and_then(|u| u.parse().ok())
    }
}
