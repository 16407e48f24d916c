//! The durable delivery loop: how every action with a [`Deliver`]er is served.
//!
//! The worker takes jobs off the action's channel (so [`crate::Dispatcher::submit`] stays
//! a non-blocking `try_send`), appends each to the action's [`Queue`] and delivers the
//! queue's head. A transient failure keeps the head where it is (order per action is
//! kept: syslog receivers see events in the order they fired) and waits an exponential
//! back-off with jitter (`initial_backoff`, doubling to `max_backoff`, each wait drawn
//! from its upper half) while still taking in new jobs. The head leaves the queue after a
//! success, a permanent failure, or once `max_attempts` or `max_age` is used up (counted
//! as failed and logged with the reason). Every attempt is reported to the outcome sink
//! with its number. At shutdown the loop delivers what it can until the deadline; once an
//! attempt fails transiently (the peer is down) or the deadline passes, it ends and what
//! is queued stays on disk for the next start.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use serde::{Deserialize, Serialize};
use watchpost_event::{Event, Sym, Value};

use crate::Job;
use crate::control::{Control, Counters};
use crate::delivery::{Deliver, Failure};
use crate::limits::Limits;
use crate::queue::Queue;

/// The `retry` table of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retry {
    /// 0: unlimited.
    pub(crate) max_attempts: u32,
    /// Zero: unlimited.
    pub(crate) max_age: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    /// Bytes the queue may hold; new jobs beyond are dropped and counted.
    pub(crate) max_queue_bytes: u64,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            max_attempts: 0,
            max_age: Duration::from_secs(24 * 3600),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_queue_bytes: 1 << 30,
        }
    }
}

impl Retry {
    /// The wait after failed attempt number `attempt` (1-based): the doubled back-off,
    /// capped, then a random point in its upper half.
    pub(crate) fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let half = full / 2;
        let nanos = half.as_nanos().min(u128::from(u64::MAX)) as u64;
        half + Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
    }
}

/// A job as stored in the queue.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    source: String,
    host: String,
    /// Seconds and nanoseconds since the Unix epoch.
    time: Option<(i64, i32)>,
    raw: String,
    #[serde(default)]
    anomaly: bool,
    fields: Vec<(String, Field)>,
    filter: String,
    actions: String,
    stored: Option<u64>,
    /// When the job was first queued, Unix milliseconds.
    queued_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Field {
    S(String),
    I(i64),
    B(bool),
    T(i64, i32),
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Encodes a job for the queue.
pub(crate) fn encode(job: &Job, queued_ms: i64) -> Vec<u8> {
    let e = &job.event;
    let fields = e
        .fields()
        .map(|(sym, v)| {
            let v = match v {
                watchpost_event::FieldRef::Str(s) => Field::S(s.to_owned()),
                watchpost_event::FieldRef::Int(i) => Field::I(i),
                watchpost_event::FieldRef::Bool(b) => Field::B(b),
                watchpost_event::FieldRef::Time(t) => {
                    Field::T(t.as_second(), t.subsec_nanosecond())
                }
            };
            (sym.as_str().to_owned(), v)
        })
        .collect();
    let record = Record {
        source: e.source.to_string(),
        host: e.host.to_string(),
        time: e.time.map(|t| (t.as_second(), t.subsec_nanosecond())),
        raw: e.raw.clone(),
        anomaly: e.anomaly,
        fields,
        filter: job.filter.to_string(),
        actions: job.actions.to_string(),
        stored: job.stored,
        queued_ms,
    };
    serde_json::to_vec(&record).unwrap_or_default()
}

/// Decodes a queued job and the time it was first queued.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Job, i64), String> {
    let r: Record = serde_json::from_slice(bytes).map_err(|e| format!("undecodable job: {e}"))?;
    let ts = |(s, n): (i64, i32)| jiff::Timestamp::new(s, n).ok();
    let mut event = Event::with_capacity(
        r.source.as_str().into(),
        r.host.as_str().into(),
        r.raw,
        r.fields.len(),
    );
    event.time = r.time.and_then(ts);
    event.anomaly = r.anomaly;
    for (name, v) in r.fields {
        let Some(sym) = Sym::try_new(&name) else {
            continue;
        };
        let value = match v {
            Field::S(s) => Value::Str(s.into()),
            Field::I(i) => Value::Int(i),
            Field::B(b) => Value::Bool(b),
            Field::T(s, n) => match ts((s, n)) {
                Some(t) => Value::Time(t),
                None => continue,
            },
        };
        event.push(sym, value);
    }
    event.finish();
    let job = Job {
        event: event.into(),
        filter: r.filter.into(),
        actions: r.actions.into(),
        stored: r.stored,
        ticket: Default::default(),
    };
    Ok((job, r.queued_ms))
}

/// A small xorshift generator for the jitter (no need for a cryptographic one).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Jitter(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// What the loop needs besides the channel and the deliverer.
pub(crate) struct Durable<'a> {
    pub(crate) name: &'a str,
    pub(crate) counters: &'a Counters,
    pub(crate) ctl: &'a Control,
    pub(crate) queue: Queue,
    pub(crate) retry: &'a Retry,
    pub(crate) limits: Option<Limits>,
    /// Most jobs kept in memory (when the disk cannot be used) before new ones are dropped.
    pub(crate) memory_cap: usize,
}

impl Durable<'_> {
    fn accept(&mut self, job: Job) {
        if let Some(limits) = &mut self.limits
            && let Some(why) = limits.suppress(&job)
        {
            self.counters.suppressed();
            self.ctl.report(self.name, &job, 0, Err(why));
            return;
        }
        if self.queue.bytes() >= self.retry.max_queue_bytes {
            let total = self.counters.dropped(1);
            if self.counters.drop_warning_due() {
                tracing::warn!(
                    action = self.name,
                    dropped_total = total,
                    max_queue = self.retry.max_queue_bytes,
                    "retry queue full (retry.max_queue); job dropped"
                );
            }
            return;
        }
        if self.queue.in_memory() >= self.memory_cap {
            let total = self.counters.dropped(1);
            if self.counters.drop_warning_due() {
                tracing::warn!(
                    action = self.name,
                    dropped_total = total,
                    "in-memory retry queue full; job dropped"
                );
            }
            return;
        }
        if let Err(e) = self.queue.push(&encode(&job, now_ms())) {
            self.ctl.report(self.name, &job, 0, Err(&e));
            self.counters.failed_and_warn(self.name, e);
        }
        self.publish();
    }

    fn publish(&self) {
        self.counters
            .set_queue(self.queue.len(), self.queue.error().map(str::to_owned));
    }

    /// Ends the loop: takes in what is still on the channel, then counts what cannot
    /// outlive the process.
    fn leave(&mut self, rx: &Receiver<Job>) {
        while let Ok(job) = rx.try_recv() {
            self.accept(job);
        }
        let lost = self.queue.in_memory();
        if lost > 0 {
            self.counters.dropped(lost as u64);
            tracing::warn!(
                action = self.name,
                jobs = lost,
                "jobs in the in-memory retry queue are lost at shutdown"
            );
        }
        let left = self.queue.len() - lost as u64;
        if left > 0 {
            tracing::info!(
                action = self.name,
                jobs = left,
                "jobs stay queued on disk for the next start"
            );
        }
        if let Some(limits) = &mut self.limits {
            limits.save();
        }
        self.publish();
    }

    /// The loop; returns when the channel is closed and the queue empty, or at
    /// shutdown's deadline.
    pub(crate) fn serve(&mut self, rx: &Receiver<Job>, d: &mut dyn Deliver) {
        let (name, counters, ctl) = (self.name, self.counters, self.ctl);
        let mut jitter = Jitter::new();
        let mut open = true;
        let mut wait_until: Option<Instant> = None;
        let mut corrupt = Vec::new();
        if let Some(e) = self.queue.error() {
            tracing::error!(action = name, error = %e, "durable queue unavailable; jobs are kept in memory only (lost at a restart)");
        }
        self.publish();
        loop {
            while open {
                match rx.try_recv() {
                    Ok(job) => self.accept(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if let Some(limits) = &mut self.limits {
                limits.maybe_save();
            }
            if self.queue.is_empty() {
                if !open {
                    self.leave(rx);
                    return;
                }
                if let Err(e) = d.idle(ctl) {
                    counters.failed_and_warn(name, e.to_string());
                }
                if ctl.past_deadline() {
                    self.leave(rx);
                    return;
                }
                // Wake now and then to save the limits' state, and at the deadline.
                let wake = Instant::now() + Duration::from_secs(5);
                match rx.recv_deadline(ctl.deadline().map_or(wake, |d| d.min(wake))) {
                    Ok(job) => self.accept(job),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
                continue;
            }
            if ctl.past_deadline() {
                self.leave(rx);
                return;
            }
            if let Some(at) = wait_until.filter(|t| *t > Instant::now()) {
                if open {
                    let until = ctl.deadline().map_or(at, |d| d.min(at));
                    match rx.recv_deadline(until) {
                        Ok(job) => self.accept(job),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => open = false,
                    }
                } else if (self.queue.in_memory() == 0 && ctl.deadline().is_some())
                    || !ctl.sleep_until(at)
                {
                    // Shutting down and the peer is failing: what is queued waits on disk
                    // for the next start rather than holding up the shutdown (jobs kept
                    // in memory get until the deadline).
                    self.leave(rx);
                    return;
                }
                continue;
            }
            let head = self.queue.peek(&mut corrupt);
            for c in corrupt.drain(..) {
                tracing::error!(action = name, "durable queue: damaged record: {c}");
                counters.failed(c.to_string());
            }
            let Some((payload, attempts)) = head else {
                self.publish();
                continue;
            };
            let (job, queued_ms) = match decode(&payload) {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(action = name, error = %e, "durable queue: skipping a job");
                    counters.failed(e);
                    self.queue.pop();
                    continue;
                }
            };
            let attempt = attempts.saturating_add(1);
            counters.attempt();
            let outcome = d.deliver(&job, ctl);
            wait_until = None;
            match outcome {
                Ok(()) => {
                    counters.ok();
                    ctl.report(name, &job, attempt, Ok(()));
                    self.queue.pop();
                }
                Err(failure) => {
                    let age_ms = now_ms().saturating_sub(queued_ms).max(0) as u64;
                    let age = Duration::from_millis(age_ms);
                    let r = self.retry;
                    let why = match &failure {
                        Failure::Permanent(m) => Some(format!("{m} (permanent)")),
                        Failure::Transient(m)
                            if r.max_attempts > 0 && attempt >= r.max_attempts =>
                        {
                            Some(format!("{m} (gave up after {attempt} attempts)"))
                        }
                        Failure::Transient(m) if !r.max_age.is_zero() && age >= r.max_age => {
                            Some(format!(
                                "{m} (gave up after {attempt} attempts: queued {}s ago, max_age {}s)",
                                age.as_secs(),
                                r.max_age.as_secs()
                            ))
                        }
                        Failure::Transient(_) => None,
                    };
                    match why {
                        Some(why) => {
                            ctl.report(name, &job, attempt, Err(&why));
                            tracing::warn!(action = name, attempt, error = %why, "action job failed for good");
                            counters.failed(why);
                            self.queue.pop();
                        }
                        None => {
                            let delay = r.backoff(attempt, jitter.next());
                            let note =
                                format!("{failure}; retrying in {:.1}s", delay.as_secs_f64());
                            ctl.report(name, &job, attempt, Err(&note));
                            counters.retried(name, note);
                            self.queue.retried();
                            wait_until = Some(Instant::now() + delay);
                        }
                    }
                }
            }
            self.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn job(i: usize) -> Job {
        let mut e = Event::new(Arc::from("src"), Arc::from("pc1"), format!("line {i}"));
        e.push(Sym::new("user"), Value::Str("alice".into()));
        e.push(Sym::new("count"), Value::Int(i as i64));
        e.push_span(Sym::new("word"), 0, 4);
        e.time = Some(jiff::Timestamp::new(1_700_000_000, 5).unwrap());
        e.finish();
        Job {
            event: Arc::new(e),
            filter: Arc::from("f"),
            actions: Arc::from("a,b"),
            stored: Some(i as u64),
            ticket: Default::default(),
        }
    }

    #[test]
    fn a_job_survives_encoding() {
        let j = job(3);
        let (back, at) = decode(&encode(&j, 42)).unwrap();
        assert_eq!(at, 42);
        assert_eq!(back.event.to_json(), j.event.to_json());
        assert_eq!(
            (&*back.filter, &*back.actions, back.stored),
            ("f", "a,b", Some(3))
        );
        assert!(decode(b"{nonsense").is_err());
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let r = Retry {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            ..Retry::default()
        };
        assert_eq!(r.backoff(1, 0), Duration::from_millis(500));
        assert_eq!(r.backoff(3, 0), Duration::from_secs(2));
        let d = r.backoff(30, u64::MAX);
        assert!(d <= Duration::from_secs(300) && d >= Duration::from_secs(150));
    }

    /// Fails the first `n` attempts of every job, records what it delivered.
    struct FailFirst {
        n: u32,
        tries: u32,
        got: Arc<Mutex<Vec<String>>>,
    }

    impl Deliver for FailFirst {
        fn deliver(&mut self, job: &Job, _ctl: &Control) -> Result<(), Failure> {
            self.tries += 1;
            if self.tries <= self.n {
                return Err(Failure::Transient("down".into()));
            }
            self.tries = 0;
            self.got.lock().unwrap().push(job.event.raw.clone());
            Ok(())
        }
    }

    /// The loop of action "a" over the queue in `dir`, without throttle or dedupe.
    fn durable<'a>(
        counters: &'a Counters,
        ctl: &'a Control,
        dir: &std::path::Path,
        retry: &'a Retry,
    ) -> Durable<'a> {
        Durable {
            name: "a",
            counters,
            ctl,
            queue: Queue::open(dir),
            retry,
            limits: None,
            memory_cap: 10,
        }
    }

    fn fast() -> Retry {
        Retry {
            max_attempts: 0,
            max_age: Duration::ZERO,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(10),
            max_queue_bytes: 1 << 30,
        }
    }

    #[test]
    fn retries_keep_order_and_report_every_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..5 {
            tx.send(job(i)).unwrap();
        }
        drop(tx);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink: crate::OutcomeSink = Arc::new(move |a: &crate::Attempt<'_>| {
            s.lock().unwrap().push((a.event, a.attempt, a.ok));
        });
        let ctl = Control::with_outcomes(Some(sink));
        let counters = Counters::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let retry = fast();
        let mut d = durable(&counters, &ctl, dir.path(), &retry);
        let mut deliverer = FailFirst {
            n: 2,
            tries: 0,
            got: got.clone(),
        };
        d.serve(&rx, &mut deliverer);
        let got = got.lock().unwrap().clone();
        assert_eq!(got, (0..5).map(|i| format!("line {i}")).collect::<Vec<_>>());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 15);
        assert_eq!(&seen[..3], &[(0, 1, false), (0, 2, false), (0, 3, true)]);
        let st = counters.snapshot("a", "t", 0);
        assert_eq!((st.ok, st.failed, st.retries, st.attempts), (5, 0, 10, 15));
    }

    #[test]
    fn a_full_queue_drops_and_counts_new_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..3 {
            tx.send(job(i)).unwrap();
        }
        let counters = Counters::default();
        let ctl = Control::default();
        ctl.set_deadline(Instant::now() + Duration::from_millis(500));
        let retry = Retry {
            max_queue_bytes: 1,
            ..fast()
        };
        let mut d = durable(&counters, &ctl, dir.path(), &retry);
        d.serve(
            &rx,
            &mut FailFirst {
                n: u32::MAX,
                tries: 0,
                got: Arc::new(Mutex::new(Vec::new())),
            },
        );
        let st = counters.snapshot("a", "t", 0);
        assert_eq!((st.dropped, st.durable_queued), (2, 1), "{st:?}");
        drop(tx);
    }

    #[test]
    fn a_damaged_record_is_reported_counted_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path());
        let sizes: Vec<usize> = (0..3)
            .map(|i| {
                let rec = encode(&job(i), 0);
                q.push(&rec).unwrap();
                rec.len()
            })
            .collect();
        drop(q);
        let seg = dir.path().join(format!("{:020}.seg", 0));
        let mut data = std::fs::read(&seg).unwrap();
        data[8 + sizes[0] + 8 + 20] ^= 0x55; // inside the second job's payload
        std::fs::write(&seg, &data).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        drop(tx);
        let counters = Counters::default();
        let ctl = Control::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let retry = fast();
        let mut d = durable(&counters, &ctl, dir.path(), &retry);
        d.serve(
            &rx,
            &mut FailFirst {
                n: 0,
                tries: 0,
                got: got.clone(),
            },
        );
        assert_eq!(*got.lock().unwrap(), ["line 0", "line 2"]);
        let st = counters.snapshot("a", "t", 0);
        assert_eq!((st.ok, st.failed), (2, 1));
        let e = st.last_error.unwrap();
        assert!(
            e.contains("00000000000000000000.seg")
                && e.contains(&format!("offset {}", 8 + sizes[0])),
            "{e}"
        );
    }

    #[test]
    fn max_attempts_fail_the_job_and_shutdown_leaves_the_rest_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..3 {
            tx.send(job(i)).unwrap();
        }
        let counters = Counters::default();
        let ctl = Control::default();
        let retry = Retry {
            max_attempts: 2,
            ..fast()
        };
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut d = durable(&counters, &ctl, dir.path(), &retry);
        // Long enough for six quick attempts on a loaded machine (the loop waits for the
        // deadline anyway: the channel stays open).
        ctl.set_deadline(Instant::now() + Duration::from_secs(2));
        let mut always = FailFirst {
            n: u32::MAX,
            tries: 0,
            got: got.clone(),
        };
        d.serve(&rx, &mut always);
        let st = counters.snapshot("a", "t", 0);
        assert_eq!(st.failed, 3, "{st:?}");
        assert!(st.last_error.unwrap().contains("gave up after 2 attempts"));
        // Queued after the deadline passed: kept on disk for the next start.
        let ctl = Control::default();
        ctl.set_deadline(Instant::now());
        tx.send(job(7)).unwrap();
        drop(tx);
        let mut d = Durable {
            ctl: &ctl,
            queue: Queue::open(dir.path()),
            ..d
        };
        d.serve(&rx, &mut always);
        let mut q = Queue::open(dir.path());
        let (p, attempts) = q.peek(&mut Vec::new()).unwrap();
        assert_eq!(
            (decode(&p).unwrap().0.event.raw.as_str(), attempts),
            ("line 7", 0)
        );
    }
}
