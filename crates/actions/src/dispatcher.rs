//! The dispatcher: one bounded queue and worker thread(s) per action, off the hot path.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use thiserror::Error;
use watchpost_event::{ActionScope, Event};

use crate::config::{ActionSpec, Kind};
use crate::control::{ActionStats, Control, Counters, OutcomeSink};
use crate::durable::Durable;
use crate::limits::Limits;
use crate::queue::Queue;

/// What the dispatcher needs besides the actions.
#[derive(Clone, Default)]
pub struct DispatchOptions {
    /// The daemon's state directory: retry queues live in `queue/<action>/`, throttle and
    /// dedupe state in `actions/<action>.limits.json`. `None`: both in memory only.
    pub state_dir: Option<PathBuf>,
    /// Where the outcome of every attempt of a stored event's job goes.
    pub outcomes: Option<OutcomeSink>,
}

impl std::fmt::Debug for DispatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchOptions")
            .field("state_dir", &self.state_dir)
            .field("outcomes", &self.outcomes.is_some())
            .finish()
    }
}

/// One firing of one action: the event and the filter that chose the action.
#[derive(Debug, Clone)]
pub struct Job {
    /// The event.
    pub event: Arc<Event>,
    /// The name of the filter that fired.
    pub filter: Arc<str>,
    /// The filter's actions, comma-separated.
    pub actions: Arc<str>,
    /// The event's id in the event store, when it was stored: the job's outcome is
    /// reported to the dispatcher's [`OutcomeSink`].
    pub stored: Option<u64>,
}

impl Job {
    /// The template scope: the event plus `filter` and `actions`.
    pub fn scope(&self) -> ActionScope<'_> {
        ActionScope {
            event: &self.event,
            filter: &self.filter,
            actions: &self.actions,
        }
    }
}

/// Why the dispatcher could not start.
#[derive(Debug, Error)]
pub enum ActionError {
    /// Two actions share a name (filters could not tell them apart).
    #[error("two actions are named `{0}`")]
    DuplicateName(String),
    /// The operating system refused a worker thread.
    #[error("cannot start a worker thread for action `{action}`: {source}")]
    Thread {
        /// The action.
        action: String,
        /// The error.
        source: std::io::Error,
    },
}

struct Slot {
    name: Arc<str>,
    kind: &'static str,
    /// `None` once shutdown has closed the queue.
    tx: Option<Sender<Job>>,
    /// Kept to report the queue length and to count what is left at shutdown.
    rx: Receiver<Job>,
    counters: Arc<Counters>,
    workers: Vec<JoinHandle<()>>,
}

/// Runs actions on their own threads; [`Dispatcher::submit`] never blocks.
pub struct Dispatcher {
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    ctl: Arc<Control>,
    /// Each worker sends `(slot, worker)` here when it ends.
    done: Receiver<(usize, usize)>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("actions", &self.by_name)
            .finish_non_exhaustive()
    }
}

/// Tells the dispatcher a worker ended, however it ended.
struct DoneGuard(Sender<(usize, usize)>, (usize, usize));

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Time given to workers after the deadline to notice it (kill children, stop retrying).
const AFTER_DEADLINE: Duration = Duration::from_millis(300);

impl Dispatcher {
    /// Starts one worker thread per action (`run` actions: `max_concurrent` threads
    /// sharing one queue). Host names of syslog targets are resolved by the workers.
    pub fn start(specs: Vec<ActionSpec>) -> Result<Dispatcher, ActionError> {
        Self::start_with(specs, None)
    }

    /// [`Dispatcher::start`], reporting the outcome of every job of a stored event to
    /// `outcomes`.
    pub fn start_with(
        specs: Vec<ActionSpec>,
        outcomes: Option<OutcomeSink>,
    ) -> Result<Dispatcher, ActionError> {
        Self::start_opts(
            specs,
            DispatchOptions {
                state_dir: None,
                outcomes,
            },
        )
    }

    /// Starts the actions with a state directory (durable retry queues, throttle and
    /// dedupe state across restarts) and an outcome sink.
    pub fn start_opts(
        specs: Vec<ActionSpec>,
        options: DispatchOptions,
    ) -> Result<Dispatcher, ActionError> {
        let DispatchOptions {
            state_dir,
            outcomes,
        } = options;
        let state_dir: Option<Arc<Path>> = state_dir.map(Arc::from);
        let mut by_name = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if by_name.insert(spec.name().to_owned(), i).is_some() {
                return Err(ActionError::DuplicateName(spec.name().to_owned()));
            }
        }
        let ctl = Arc::new(Control::with_outcomes(outcomes));
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut slots = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(spec.queue_capacity());
            let counters = Arc::new(Counters::default());
            let name: Arc<str> = Arc::from(spec.name());
            let kind = spec.kind();
            // Actions that retry deliver one job at a time, in order.
            let retrying = spec.retries();
            let threads = match &spec.kind {
                _ if retrying => 1,
                Kind::Run(r) => r.max_concurrent,
                Kind::Syslog(_)
                | Kind::FlagFile(_)
                | Kind::JsonlFile(_)
                | Kind::Registry(_)
                | Kind::Dialog(_)
                | Kind::OpenUrl(_)
                | Kind::Webhook(_)
                | Kind::Email(_)
                | Kind::Quarantine(_) => 1,
            };
            let gated = !retrying && !spec.common.limits.is_empty();
            let spec = Arc::new(spec);
            let mut workers = Vec::with_capacity(threads + 1);
            let spawn = |w: usize, body: Box<dyn FnOnce() + Send>| {
                let guard = DoneGuard(done_tx.clone(), (index, w));
                std::thread::Builder::new()
                    .name(format!("act-{}", name))
                    .spawn(move || {
                        let _guard = guard;
                        body();
                    })
                    .map_err(|source| ActionError::Thread {
                        action: name.to_string(),
                        source,
                    })
            };
            // throttle/dedupe of an action without a retry loop: a gate thread in front.
            let work_rx = if gated {
                let (gate_tx, gate_rx) = crossbeam_channel::bounded(spec.queue_capacity());
                let (spec, rx, counters, ctl, dir) = (
                    spec.clone(),
                    rx.clone(),
                    counters.clone(),
                    ctl.clone(),
                    state_dir.clone(),
                );
                workers.push(spawn(
                    threads,
                    Box::new(move || {
                        let mut limits = Limits::load(
                            spec.common.limits.clone(),
                            dir.map(|d| limits_path(&d, spec.name())),
                        );
                        crate::limits::gate(
                            spec.name(),
                            &rx,
                            gate_tx,
                            &mut limits,
                            &counters,
                            &ctl,
                        );
                    }),
                )?);
                gate_rx
            } else {
                rx.clone()
            };
            for w in 0..threads {
                let (spec, rx, counters, ctl, dir) = (
                    spec.clone(),
                    work_rx.clone(),
                    counters.clone(),
                    ctl.clone(),
                    state_dir.clone(),
                );
                workers.insert(
                    w,
                    spawn(
                        w,
                        Box::new(move || {
                            if retrying {
                                durable_worker(&spec, &rx, &counters, &ctl, dir.as_deref());
                            } else {
                                worker(&spec, &rx, &counters, &ctl);
                            }
                        }),
                    )?,
                );
            }
            slots.push(Slot {
                name,
                kind,
                tx: Some(tx),
                rx,
                counters,
                workers,
            });
        }
        Ok(Dispatcher {
            slots,
            by_name,
            ctl,
            done,
        })
    }

    /// The index of the action called `name`, for [`Dispatcher::submit`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Queues a job for action `action` without ever blocking. When the queue is full
    /// (or `action` is unknown) the job is dropped, counted, and `false` returned; a
    /// warning is logged at most once per 10 s per action.
    pub fn submit(&self, action: usize, job: Job) -> bool {
        let Some(slot) = self.slots.get(action) else {
            return false;
        };
        let Some(tx) = &slot.tx else { return false };
        match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let total = slot.counters.dropped(1);
                if slot.counters.drop_warning_due() {
                    tracing::warn!(action = %slot.name, dropped_total = total, "action queue full; event dropped");
                }
                false
            }
        }
    }

    /// Queues a job, waiting while the action's queue is full: back-pressure for sources
    /// that can simply read on later (a followed file keeps what is not read yet). Gives
    /// up, counting a drop, once `give_up()` answers true (checked every 100 ms).
    /// Returns whether the job was queued.
    pub fn submit_wait(&self, action: usize, job: Job, give_up: &dyn Fn() -> bool) -> bool {
        let Some(slot) = self.slots.get(action) else {
            return false;
        };
        let Some(tx) = &slot.tx else { return false };
        let mut job = match tx.try_send(job) {
            Ok(()) => return true,
            Err(TrySendError::Full(job)) => job,
            Err(TrySendError::Disconnected(_)) => {
                slot.counters.dropped(1);
                return false;
            }
        };
        if slot.counters.drop_warning_due() {
            tracing::warn!(action = %slot.name, "action queue full; reading waits for the action to catch up");
        }
        loop {
            match tx.send_timeout(job, Duration::from_millis(100)) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(j)) if !give_up() => job = j,
                Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Disconnected(_)) => {
                    let total = slot.counters.dropped(1);
                    tracing::warn!(action = %slot.name, dropped_total = total, "action queue still full at shutdown; event dropped");
                    return false;
                }
            }
        }
    }

    /// Counters of every action, in the order the specs were given.
    pub fn stats(&self) -> Vec<ActionStats> {
        self.slots
            .iter()
            .map(|s| s.counters.snapshot(&s.name, s.kind, s.rx.len()))
            .collect()
    }

    /// Closes the queues and lets the workers finish what is queued until `deadline` from
    /// now. After it, running programs are killed, reconnecting stops, and what is still
    /// queued is counted as dropped. Workers that are still busy a moment later are left
    /// to end on their own (they hold no queue). Returns the final counters.
    pub fn shutdown(self, deadline: Duration) -> Vec<ActionStats> {
        let until = Instant::now() + deadline;
        self.ctl.set_deadline(until);
        let Dispatcher {
            mut slots, done, ..
        } = self;
        // Closing the queues: a worker's `recv` ends once its queue is drained.
        for slot in &mut slots {
            slot.tx = None;
        }
        let mut finished = HashSet::new();
        let total: usize = slots.iter().map(|s| s.workers.len()).sum();
        while finished.len() < total {
            match done.recv_deadline(until + AFTER_DEADLINE) {
                Ok(id) => {
                    finished.insert(id);
                }
                Err(_) => break,
            }
        }
        let mut stats = Vec::with_capacity(slots.len());
        for (index, slot) in slots.into_iter().enumerate() {
            let left = slot.rx.try_iter().count() as u64;
            if left > 0 {
                slot.counters.dropped(left);
            }
            for (w, handle) in slot.workers.into_iter().enumerate() {
                if finished.contains(&(index, w)) {
                    let _ = handle.join();
                } else {
                    tracing::warn!(action = %slot.name, "action worker still busy at shutdown; leaving it");
                }
            }
            stats.push(slot.counters.snapshot(&slot.name, slot.kind, 0));
        }
        stats
    }
}

fn limits_path(state_dir: &Path, action: &str) -> PathBuf {
    state_dir
        .join("actions")
        .join(format!("{action}.limits.json"))
}

/// The worker of an action that retries: the durable loop over its queue (on disk under
/// `<state_dir>/queue/<action>/` unless `durable = false` or there is no state directory);
/// a panic (a bug) is counted and the loop restarted on the same queue.
fn durable_worker(
    spec: &ActionSpec,
    rx: &Receiver<Job>,
    counters: &Counters,
    ctl: &Control,
    state_dir: Option<&Path>,
) {
    restarting_on_panic(spec.name(), counters, || {
        let queue = match state_dir {
            Some(dir) if spec.durable() => Queue::open(&dir.join("queue").join(spec.name())),
            _ => Queue::volatile(),
        };
        let limits = (!spec.common.limits.is_empty()).then(|| {
            Limits::load(
                spec.common.limits.clone(),
                state_dir.map(|d| limits_path(d, spec.name())),
            )
        });
        let Some(mut deliverer) = spec.kind.deliverer(spec.name(), &spec.common) else {
            return;
        };
        let mut durable = Durable {
            name: spec.name(),
            counters,
            ctl,
            queue,
            retry: &spec.common.retry,
            limits,
            memory_cap: spec.queue_capacity().max(1000),
        };
        durable.serve(rx, &mut *deliverer);
    });
}

/// A worker: runs the action's loop; a panic (a bug) is counted and the loop restarted.
fn worker(spec: &ActionSpec, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
    restarting_on_panic(spec.name(), counters, || match &spec.kind {
        Kind::Syslog(s) => s.work(spec.name(), rx, counters, ctl),
        Kind::Run(r) => r.work(spec.name(), rx, counters, ctl),
        Kind::FlagFile(f) => f.work(spec.name(), rx, counters, ctl),
        Kind::JsonlFile(j) => j.work(spec.name(), rx, counters, ctl),
        Kind::Registry(r) => r.work(spec.name(), rx, counters, ctl),
        Kind::Dialog(d) => d.work(spec.name(), rx, counters, ctl),
        Kind::OpenUrl(o) => o.work(spec.name(), rx, counters, ctl),
        // Always served by `durable_worker`: they have a deliverer.
        Kind::Webhook(_) | Kind::Email(_) => {}
        Kind::Quarantine(q) => q.work(spec.name(), rx, counters, ctl),
    });
}

/// Runs a worker's loop until it returns; a panic (a bug) is logged, counted as a failure,
/// and the loop started again.
fn restarting_on_panic(action: &str, counters: &Counters, mut work: impl FnMut()) {
    while catch_unwind(AssertUnwindSafe(&mut work)).is_err() {
        tracing::error!(action, "action worker panicked; restarting it");
        counters.failed("worker panicked".to_owned());
    }
}
