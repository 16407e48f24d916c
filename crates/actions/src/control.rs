//! What the dispatcher and its workers share: counters, the shutdown deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A snapshot of one action's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionStats {
    /// The action's name.
    pub name: String,
    /// The action type (`syslog`, `run`, `flag_file`).
    pub kind: &'static str,
    /// Jobs waiting in the queue now.
    pub queued: usize,
    /// Jobs done successfully (messages sent, programs exited 0, files written).
    pub ok: u64,
    /// Jobs that failed (send error after retries, non-zero exit, timeout, I/O error).
    pub failed: u64,
    /// Of `failed`: programs killed because they ran past their timeout.
    pub timed_out: u64,
    /// Jobs never attempted: the queue was full, or shutdown's deadline passed first
    /// (durable queues: jobs of the in-memory fallback queue left at shutdown).
    pub dropped: u64,
    /// Delivery attempts of actions with a retry queue (each try of each job).
    pub attempts: u64,
    /// Of `attempts`: transient failures that were (or will be) tried again.
    pub retries: u64,
    /// Jobs held back by `throttle` or `dedupe`.
    pub suppressed: u64,
    /// Jobs in the action's retry queue (on disk, plus any in the memory fallback).
    pub durable_queued: u64,
    /// Why the retry queue is not (wholly) on disk, e.g. an unwritable state directory.
    pub queue_error: Option<String>,
    /// The most recent failure, if any.
    pub last_error: Option<String>,
}

/// Live counters of one action.
#[derive(Debug)]
pub(crate) struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    dropped: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    suppressed: AtomicU64,
    durable_queued: AtomicU64,
    queue_error: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    epoch: Instant,
    drop_warning: RateLimit,
    failure_warning: RateLimit,
}

/// Minimum time between two warnings of the same kind from one action.
const WARNING_EVERY: Duration = Duration::from_secs(10);

/// "At most once per [`WARNING_EVERY`]": milliseconds since the epoch of the last
/// warning, plus one (0 = never).
#[derive(Debug, Default)]
struct RateLimit(AtomicU64);

impl RateLimit {
    fn due(&self, epoch: Instant) -> bool {
        let now = epoch.elapsed().as_millis() as u64 + 1;
        let last = self.0.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < WARNING_EVERY.as_millis() as u64 {
            return false;
        }
        self.0
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            durable_queued: AtomicU64::new(0),
            queue_error: Mutex::new(None),
            last_error: Mutex::new(None),
            epoch: Instant::now(),
            drop_warning: RateLimit::default(),
            failure_warning: RateLimit::default(),
        }
    }
}

impl Counters {
    pub(crate) fn ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *watchpost_support::lock(&self.last_error) = Some(error);
    }

    pub(crate) fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn suppressed(&self) {
        self.suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a transient failure that will be tried again; logs it at most once per
    /// 10 s per action.
    pub(crate) fn retried(&self, action: &str, note: String) {
        let total = self.retries.fetch_add(1, Ordering::Relaxed) + 1;
        if self.failure_warning.due(self.epoch) {
            tracing::warn!(action, retries_total = total, error = %note, "action delivery failed; will retry");
        }
        *watchpost_support::lock(&self.last_error) = Some(note);
    }

    /// Publishes the retry queue's length and its error (for stats and metrics).
    pub(crate) fn set_queue(&self, len: u64, error: Option<String>) {
        self.durable_queued.store(len, Ordering::Relaxed);
        let mut e = watchpost_support::lock(&self.queue_error);
        if *e != error {
            *e = error;
        }
    }

    pub(crate) fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` dropped jobs; returns the new total.
    pub(crate) fn dropped(&self, n: u64) -> u64 {
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Whether a "queue full" warning is due now (at most one per 10 s per action).
    pub(crate) fn drop_warning_due(&self) -> bool {
        self.drop_warning.due(self.epoch)
    }

    /// Counts a failure and logs it, at most once per 10 s per action (with the total).
    pub(crate) fn failed_and_warn(&self, action: &str, error: String) {
        if self.failure_warning.due(self.epoch) {
            let total = self.failed.load(Ordering::Relaxed) + 1;
            tracing::warn!(action, failed_total = total, error = %error, "action failed");
        }
        self.failed(error);
    }

    /// Counts a job's outcome, reports it to the event store (jobs of stored events) and
    /// logs a failure (at most once per 10 s).
    pub(crate) fn finish<E: std::fmt::Display>(
        &self,
        ctl: &Control,
        name: &str,
        job: &crate::Job,
        outcome: Result<(), E>,
    ) {
        match outcome {
            Ok(()) => {
                self.ok();
                ctl.report(name, job, 1, Ok(()));
            }
            Err(e) => {
                let e = e.to_string();
                ctl.report(name, job, 1, Err(&e));
                self.failed_and_warn(name, e);
            }
        }
    }

    pub(crate) fn snapshot(&self, name: &str, kind: &'static str, queued: usize) -> ActionStats {
        ActionStats {
            name: name.to_owned(),
            kind,
            queued,
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            suppressed: self.suppressed.load(Ordering::Relaxed),
            durable_queued: self.durable_queued.load(Ordering::Relaxed),
            queue_error: watchpost_support::lock(&self.queue_error).clone(),
            last_error: watchpost_support::lock(&self.last_error).clone(),
        }
    }
}

/// Where each job's outcome goes when the job came from a stored event (the event store
/// records it). Actions with a retry queue report every attempt.
pub type OutcomeSink = std::sync::Arc<dyn Fn(&Attempt<'_>) + Send + Sync>;

/// One attempt of one job, as the [`OutcomeSink`] gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The stored event's id.
    pub event: u64,
    /// The action.
    pub action: &'a str,
    /// The filter (or rule set) whose firing made the job: an event two filters matched
    /// gets a job, and outcomes, for each.
    pub filter: &'a str,
    /// 1, 2, … (a failed one that will be tried again says so in `detail`); 0 for a job
    /// never attempted because `throttle` or `dedupe` held it back (`detail` `throttled`
    /// or `duplicate`).
    pub attempt: u32,
    /// Whether it succeeded.
    pub ok: bool,
    /// The error or a short note ("" for a plain success).
    pub detail: &'a str,
}

/// The shutdown deadline, set once by [`crate::Dispatcher::shutdown`]; the outcome sink.
#[derive(Default)]
pub(crate) struct Control {
    deadline: OnceLock<Instant>,
    pub(crate) outcomes: Option<OutcomeSink>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("deadline", &self.deadline)
            .field("outcomes", &self.outcomes.is_some())
            .finish()
    }
}

impl Control {
    pub(crate) fn with_outcomes(outcomes: Option<OutcomeSink>) -> Control {
        Control {
            deadline: OnceLock::new(),
            outcomes,
        }
    }

    /// Reports the outcome of a job's attempt to the sink (jobs of stored events only).
    pub(crate) fn report(
        &self,
        action: &str,
        job: &crate::Job,
        attempt: u32,
        result: Result<(), &str>,
    ) {
        if let (Some(sink), Some(id)) = (&self.outcomes, job.stored) {
            let (ok, detail) = match result {
                Ok(()) => (true, ""),
                Err(e) => (false, e),
            };
            sink(&Attempt {
                event: id,
                action,
                filter: &job.filter,
                attempt,
                ok,
                detail,
            });
        }
    }

    pub(crate) fn set_deadline(&self, at: Instant) {
        let _ = self.deadline.set(at);
    }

    /// Whether shutdown's deadline has passed: workers stop starting new jobs.
    pub(crate) fn past_deadline(&self) -> bool {
        self.deadline.get().is_some_and(|d| Instant::now() >= *d)
    }

    /// The deadline, if shutdown has begun.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// Sleeps until `until` or the shutdown deadline, whichever is first; `false` if
    /// the deadline cut the sleep short (the caller should give up).
    pub(crate) fn sleep_until(&self, until: Instant) -> bool {
        let wake = match self.deadline() {
            Some(d) if d < until => d,
            _ => until,
        };
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        }
        wake >= until && !self.past_deadline()
    }
}

/// The loop of a worker that handles one job at a time: each job's outcome is counted
/// (failures logged with the action's name); after the shutdown deadline the rest is
/// counted as dropped.
pub(crate) fn serve<E: std::fmt::Display>(
    name: &str,
    rx: &crossbeam_channel::Receiver<crate::Job>,
    counters: &Counters,
    ctl: &Control,
    mut apply: impl FnMut(&crate::Job) -> Result<(), E>,
) {
    while let Ok(job) = rx.recv() {
        if ctl.past_deadline() {
            counters.dropped(1);
            break;
        }
        let outcome = apply(&job);
        counters.finish(ctl, name, &job, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_warnings_are_rate_limited() {
        let c = Counters::default();
        assert!(c.drop_warning_due());
        assert!(!c.drop_warning_due());
        assert_eq!(c.dropped(2), 2);
        assert_eq!(c.dropped(1), 3);
    }

    #[test]
    fn sleep_is_cut_by_the_deadline() {
        let ctl = Control::default();
        let start = Instant::now();
        assert!(ctl.sleep_until(start + Duration::from_millis(5)));
        ctl.set_deadline(Instant::now() + Duration::from_millis(10));
        assert!(!ctl.sleep_until(Instant::now() + Duration::from_secs(30)));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(ctl.past_deadline());
    }
}
