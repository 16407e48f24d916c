//! Small helpers every watchpost crate shares, written once.
//!
//! * [`write_atomic`] (and [`write_atomic_with`]): replace a file so that a reader or a
//!   crash sees either the old content or the new, never a mix, and the new content
//!   survives a power loss once the call returned (temporary file, `fsync`, rename,
//!   directory `fsync`). Checkpoints, queue cursors' neighbours, threshold and check
//!   state, flag files and the reload status all go through it.
//! * [`lock`]: a `Mutex` lock that outlives a panicking holder. The data behind watchpost's
//!   locks (counters, windows, positions) stays consistent at every step, so a panic in
//!   one thread must not take every other thread down with a poisoned lock.
//! * [`mailbox`]: a bounded queue to a background thread whose wake-ups the event path can
//!   hold back until the event's actions have run ([`defer_wakes`]), and whose receiver can
//!   wait for a batch instead of being woken per item.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("state.json");
//! watchpost_support::write_atomic(&path, b"{}").unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"{}");
//! let m = std::sync::Mutex::new(1);
//! *watchpost_support::lock(&m) += 1;
//! assert_eq!(*watchpost_support::lock(&m), 2);
//! ```

mod file;
mod mailbox;

pub use file::{AtomicWrite, tmp_path, write_atomic, write_atomic_with};
pub use mailbox::{DeferWakes, Mailbox, PushError, Receiver, Recv, defer_wakes, mailbox};

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, also when a thread panicked while holding it (the guard is taken back from
/// the poison error: every value watchpost keeps behind a lock is valid between any two
/// statements of its holder).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
