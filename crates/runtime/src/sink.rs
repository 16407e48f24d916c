//! The daemon's [`Sink`]: counts for the metrics, hands action jobs to the actions'
//! lanes (waiting on a full queue or dropping, as `[agent] when_queue_full` says), logs
//! what fired.

use std::cell::Cell;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use watchpost_actions::{Job, Ticket, Via};
use watchpost_anomaly::Verdict as Judgement;
use watchpost_config::WhenFull;
use watchpost_event::Event;
use watchpost_filters::Verdict;

use crate::metrics::{Metrics, SourceCounters};
use crate::pipeline::{Firing, Generation, Sink};
use crate::supervisor::StopSignal;

/// How long a source keeps waiting on a full action queue after a stop request.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The daemon's sink of one source (or check).
#[derive(Debug)]
pub struct DaemonSink {
    source: Arc<str>,
    counters: Arc<SourceCounters>,
    metrics: Arc<Metrics>,
    stop: StopSignal,
    /// When the stop request was first seen while waiting on a full queue.
    stopped_at: Cell<Option<Instant>>,
    /// Given to every job: the batch of records being handled (see `progress.rs`).
    ticket: Ticket,
    /// Firings handed on since [`begin_read`](DaemonSink::begin_read): the first may run
    /// its actions on this thread, the rest of a burst go to the actions' workers.
    fired_in_read: u64,
}

impl DaemonSink {
    /// A sink for `source`, counting into its counters; gives up waiting on a full queue
    /// 5 s after `stop` was raised.
    pub fn new(source: &str, metrics: &Arc<Metrics>, stop: StopSignal) -> DaemonSink {
        DaemonSink {
            source: source.into(),
            counters: metrics.source(source),
            metrics: metrics.clone(),
            stop,
            stopped_at: Cell::new(None),
            ticket: Ticket::default(),
            fired_in_read: 0,
        }
    }

    /// A new read of the source begins (a poll): its first firing may run its actions on
    /// this thread (a lone event's syslog packet leaves without a hand-off); the firings
    /// after it in the same read go to the actions' workers, which send them on another
    /// core while this thread reads and judges on.
    pub fn begin_read(&mut self) {
        self.fired_in_read = 0;
    }

    /// The ticket the jobs of the records handled from now on carry.
    pub fn set_ticket(&mut self, ticket: Ticket) {
        self.ticket = ticket;
    }

    /// The source's counters.
    pub fn counters(&self) -> &Arc<SourceCounters> {
        &self.counters
    }

    /// While waiting on a full queue: give up only some time after a stop request.
    fn give_up(&self) -> bool {
        if !self.stop.is_raised() {
            return false;
        }
        let at = self.stopped_at.get().unwrap_or_else(Instant::now);
        self.stopped_at.set(Some(at));
        at.elapsed() >= SHUTDOWN_WAIT
    }

    /// Logs the source's totals.
    pub fn report(&self) {
        let c = &self.counters;
        tracing::info!(
            source = %self.source,
            records = c.records.load(Ordering::Relaxed),
            parse_errors = c.parse_errors.load(Ordering::Relaxed),
            fired = c.fired.load(Ordering::Relaxed),
            excluded = c.excluded.load(Ordering::Relaxed),
            anomalies = c.anomalies.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            "source totals"
        );
    }
}

impl Sink for DaemonSink {
    fn received(&mut self) {
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_record_ms
            .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
    }

    fn unparsable(&mut self, source: &str, place: &str, offset: u64, error: &dyn Display) {
        let n = self.counters.parse_errors.fetch_add(1, Ordering::Relaxed);
        if n < 100 || n.is_power_of_two() {
            tracing::warn!(
                source,
                place,
                offset,
                errors_so_far = n + 1,
                "unparsable record: {error}"
            );
        }
    }

    fn verdict(&mut self, _: &Generation, _: &Event, verdict: &Verdict, _: &[(usize, Judgement)]) {
        if !verdict.flagged.is_empty() {
            self.counters.anomalies.fetch_add(1, Ordering::Relaxed);
        }
        if verdict.excluded_by.is_some() {
            self.counters.excluded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fire(&mut self, g: &Generation, f: &Firing<'_>) {
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        let via = if self.fired_in_read == 0 {
            Via::Here
        } else {
            Via::Worker
        };
        self.fired_in_read += 1;
        for &ai in f.actions {
            if f.withheld.contains(&ai) {
                continue;
            }
            let Some(lane) = g.actions.get(ai) else {
                continue;
            };
            let job = Job {
                event: f.event.clone(),
                filter: f.name.clone(),
                actions: f.action_names.clone(),
                stored: f.stored,
                ticket: self.ticket.clone(),
            };
            let queued = match g.when_full {
                WhenFull::Drop => lane.submit_via(job, via),
                WhenFull::Wait => lane.submit_wait_via(job, &|| self.give_up(), via),
            };
            if queued {
                self.metrics.reaction.observe(f.read_at.elapsed());
            } else {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if g.log_fired {
            fired_log().log(f);
        }
    }
}

/// The per-firing log line (`[agent] log_fired`), written by a thread of its own: the
/// source thread only queues the shared event and names (formatting and writing a log
/// line cost it more than judging the event). At most [`FIRED_LOG_PER_SECOND`] lines a
/// second are logged: a burst of detections goes to the store and the actions in full,
/// while the log gets one line a second counting what it left out (a log line per event
/// of a 100,000-event burst cost the machine as much CPU as reading them, and journald
/// would rate-limit them anyway). Lines the thread has no room for
/// ([`FIRED_LOG_QUEUE`]) are counted the same way.
struct FiredLog {
    tx: watchpost_support::Mailbox<(Arc<Event>, Arc<str>, Arc<str>)>,
    /// The clock of the per-second budget.
    base: Instant,
    /// The second (since `base`) the budget counts, and the lines it let through.
    second: std::sync::atomic::AtomicU64,
    in_second: std::sync::atomic::AtomicU64,
    /// Lines not logged since the last report.
    skipped: std::sync::atomic::AtomicU64,
}

const FIRED_LOG_QUEUE: usize = 10_000;
/// Fired lines logged per second at most.
const FIRED_LOG_PER_SECOND: u64 = 200;

fn fired_log() -> &'static FiredLog {
    static LOG: std::sync::OnceLock<FiredLog> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let (tx, rx) =
            watchpost_support::mailbox::<(Arc<Event>, Arc<str>, Arc<str>)>(FIRED_LOG_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("fired-log".into())
            .spawn(move || {
                watchpost_store::yield_to_the_event_path();
                let mut lines = Vec::new();
                let mut last_report = Instant::now();
                loop {
                    let pending = fired_log().skipped.load(Ordering::Relaxed) > 0;
                    let deadline = pending.then(|| last_report + Duration::from_secs(1));
                    let got = rx.recv(&mut lines, 256, 1, deadline);
                    for (event, filter, actions) in lines.drain(..) {
                        log_fired(&event, &filter, &actions);
                    }
                    if last_report.elapsed() >= Duration::from_secs(1) {
                        let skipped = fired_log().skipped.swap(0, Ordering::Relaxed);
                        if skipped > 0 {
                            tracing::info!(
                                skipped,
                                "fired lines not logged: more than {FIRED_LOG_PER_SECOND} a second (each event went to the store and its actions)"
                            );
                        }
                        last_report = Instant::now();
                    }
                    if got == watchpost_support::Recv::Closed {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread of the fired log lines");
        }
        FiredLog {
            tx,
            base: Instant::now(),
            second: Default::default(),
            in_second: Default::default(),
            skipped: Default::default(),
        }
    })
}

impl FiredLog {
    fn log(&self, f: &Firing<'_>) {
        if !self.admit(f.read_at) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let line = (f.event.clone(), f.name.clone(), f.action_names.clone());
        if self.tx.push(line).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a line read at `at` is within this second's budget (several source
    /// threads may race at a second's turn: the budget is approximate by a few lines).
    fn admit(&self, at: Instant) -> bool {
        let second = at.saturating_duration_since(self.base).as_secs();
        let current = self.second.load(Ordering::Relaxed);
        if second > current
            && self
                .second
                .compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_second.store(0, Ordering::Relaxed);
        }
        self.in_second.fetch_add(1, Ordering::Relaxed) < FIRED_LOG_PER_SECOND
    }
}

fn log_fired(event: &Event, filter: &str, actions: &str) {
    let time = event
        .time
        .map(watchpost_event::format_time)
        .unwrap_or_default();
    let origin = event
        .origin
        .as_ref()
        .map(|o| format!("{}:{}", o.place, o.offset))
        .unwrap_or_default();
    tracing::info!(filter, actions, source = %event.source, host = %event.host, time, origin, "fired");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fired_log_admits_its_budget_a_second_and_starts_again_the_next() {
        let (tx, _rx) = watchpost_support::mailbox(4);
        let base = Instant::now();
        let log = FiredLog {
            tx,
            base,
            second: Default::default(),
            in_second: Default::default(),
            skipped: Default::default(),
        };
        let in_first = (0..FIRED_LOG_PER_SECOND + 50)
            .filter(|_| log.admit(base + Duration::from_millis(300)))
            .count() as u64;
        assert_eq!(in_first, FIRED_LOG_PER_SECOND);
        // A line read before the budget's clock started counts in its first second.
        assert!(!log.admit(base.checked_sub(Duration::from_secs(1)).unwrap_or(base)));
        assert!(log.admit(base + Duration::from_millis(1_200)));
        let in_second = 1
            + (0..FIRED_LOG_PER_SECOND)
                .filter(|_| log.admit(base + Duration::from_millis(1_900)))
                .count() as u64;
        assert_eq!(in_second, FIRED_LOG_PER_SECOND);
    }
}
