//! The dispatcher: one bounded queue and worker thread(s) per action, off the hot path.
//!
//! Each running action has a [`Lane`]: the sending end of its queue, shared (`Arc`) by
//! every configuration generation that lists the action. [`Dispatcher::reconfigure`]
//! applies a new list of actions in place: an unchanged action keeps its lane, queue and
//! workers; a changed or removed one is *retired*: once no generation holds its lane any
//! more (every source switched to the new generation), its queue is closed and its
//! workers drain it with the old definition (5 s at most). A changed action with a
//! durable retry queue hands it over: its old worker stops at once, leaving every job in
//! the on-disk queue, and only then does the new worker open the same queue (jobs that
//! reached the old channel while sources were switching are passed on after it, so they
//! may come after the first jobs of the new generation). Counters carry on under the same
//! name. Throttle/dedupe state of a changed action is saved by the old gate when it ends
//! and read by the new one when it starts: windows recorded in between start afresh.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use thiserror::Error;

use crate::Job;
use crate::config::ActionSpec;
use crate::control::{ActionStats, Control, Counters, OutcomeSink};
use crate::durable::Durable;
use crate::kind::Direct;
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

/// Whether a job may run on the submitting thread (an action that can run a job without
/// waiting, UDP syslog, does so when nothing is queued before it) or goes to the action's
/// worker. A source hands the first firing of a read to its actions [`Via::Here`] (a lone
/// event's packet leaves from the thread that read it) and the rest of a burst
/// [`Via::Worker`] (the worker sends them on another core while the source reads on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// On this thread when the action can.
    Here,
    /// Always through the worker's queue.
    Worker,
}

/// Where jobs for one running action go. Generations hold it; when the last holder
/// drops it, the action's queue closes.
pub struct Lane {
    name: Arc<str>,
    tx: Sender<Job>,
    counters: Arc<Counters>,
    /// Runs a job on the submitting thread when the action allows it and nothing is
    /// queued before it.
    direct: Option<Arc<dyn Direct>>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("name", &self.name).finish()
    }
}

impl Lane {
    /// The action's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `job` on this thread when `via` allows it, the action can without waiting and
    /// nothing is queued before it (UDP syslog: one non-blocking `send`); else gives it
    /// back.
    fn run_direct(&self, job: Job, via: Via) -> Option<Job> {
        match (&self.direct, via) {
            (Some(d), Via::Here) => d.try_run(job).err(),
            (Some(d), Via::Worker) => Some(d.to_worker(job)),
            (None, _) => Some(job),
        }
    }

    /// A job that [`run_direct`](Lane::run_direct) gave back was dropped.
    fn not_queued(&self) {
        if let Some(d) = &self.direct {
            d.not_queued();
        }
    }

    /// Runs or queues a job without ever blocking. When the queue is full the job is
    /// dropped, counted, and `false` returned; a warning is logged at most once per 10 s.
    pub fn submit(&self, job: Job) -> bool {
        self.submit_via(job, Via::Here)
    }

    /// [`submit`](Lane::submit), saying whether the job may run on this thread.
    pub fn submit_via(&self, job: Job, via: Via) -> bool {
        let Some(job) = self.run_direct(job, via) else {
            return true;
        };
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.not_queued();
                let total = self.counters.dropped(1);
                if self.counters.drop_warning_due() {
                    tracing::warn!(action = %self.name, dropped_total = total, "action queue full; event dropped");
                }
                false
            }
        }
    }

    /// Queues a job, waiting while the queue is full: back-pressure for sources that can
    /// simply read on later (a followed file keeps what is not read yet). Gives up,
    /// counting a drop, once `give_up()` answers true (checked every 100 ms). Returns
    /// whether the job was queued.
    pub fn submit_wait(&self, job: Job, give_up: &dyn Fn() -> bool) -> bool {
        self.submit_wait_via(job, give_up, Via::Here)
    }

    /// [`submit_wait`](Lane::submit_wait), saying whether the job may run on this thread.
    pub fn submit_wait_via(&self, job: Job, give_up: &dyn Fn() -> bool, via: Via) -> bool {
        let Some(job) = self.run_direct(job, via) else {
            return true;
        };
        let mut job = match self.tx.try_send(job) {
            Ok(()) => return true,
            Err(TrySendError::Full(job)) => job,
            Err(TrySendError::Disconnected(_)) => {
                self.not_queued();
                self.counters.dropped(1);
                return false;
            }
        };
        if self.counters.drop_warning_due() {
            tracing::warn!(action = %self.name, "action queue full; reading waits for the action to catch up");
        }
        loop {
            match self.tx.send_timeout(job, Duration::from_millis(100)) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(j)) if !give_up() => job = j,
                Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Disconnected(_)) => {
                    self.not_queued();
                    let total = self.counters.dropped(1);
                    tracing::warn!(action = %self.name, dropped_total = total, "action queue still full at shutdown; event dropped");
                    return false;
                }
            }
        }
    }
}

/// One running action.
struct Running {
    spec: Arc<ActionSpec>,
    kind: &'static str,
    lane: Arc<Lane>,
    /// Kept to report the queue length and to count what is left at the end.
    rx: Receiver<Job>,
    ctl: Arc<Control>,
    workers: Vec<JoinHandle<()>>,
    /// Each worker sends its number here when it ends.
    done: Receiver<usize>,
}

/// Runs actions on their own threads; [`Lane::submit`] never blocks.
pub struct Dispatcher {
    running: Vec<Running>,
    by_name: HashMap<String, usize>,
    opts: DispatchOptions,
    /// Threads that wait for retired actions to finish.
    retiring: Vec<JoinHandle<ActionStats>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("actions", &self.by_name)
            .finish_non_exhaustive()
    }
}

/// Tells the dispatcher a worker ended, however it ended.
struct DoneGuard(Sender<usize>, usize);

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
        let mut by_name = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if by_name.insert(spec.name().to_owned(), i).is_some() {
                return Err(ActionError::DuplicateName(spec.name().to_owned()));
            }
        }
        let mut running = Vec::with_capacity(specs.len());
        for spec in specs {
            running.push(start_action(spec, &options, None, None)?);
        }
        Ok(Dispatcher {
            running,
            by_name,
            opts: options,
            retiring: Vec::new(),
        })
    }

    /// Applies a new list of actions in place (see the module documentation): those
    /// `unchanged` says are unchanged keep running untouched, the others are started,
    /// and actions no longer listed (or listed differently) are retired.
    pub fn reconfigure(
        &mut self,
        specs: Vec<ActionSpec>,
        unchanged: &dyn Fn(&str) -> bool,
    ) -> Result<(), ActionError> {
        let mut names = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if names.insert(spec.name().to_owned(), i).is_some() {
                return Err(ActionError::DuplicateName(spec.name().to_owned()));
            }
        }
        let mut old: HashMap<String, Running> = self
            .running
            .drain(..)
            .map(|r| (r.spec.name().to_owned(), r))
            .collect();
        let mut next = Vec::with_capacity(specs.len());
        for spec in specs {
            match old.remove(spec.name()) {
                Some(r) if unchanged(spec.name()) => next.push(r),
                Some(r) => {
                    // A durable queue goes to the successor, which waits for it.
                    let hand_over = r.spec.durable() && spec.durable();
                    let counters = r.lane.counters.clone();
                    let (after_tx, after_rx) = crossbeam_channel::bounded::<()>(0);
                    let started = start_action(
                        spec,
                        &self.opts,
                        hand_over.then_some(after_rx),
                        Some(counters),
                    )?;
                    let successor = hand_over.then(|| started.lane.clone());
                    self.retiring.push(retire(r, successor, after_tx)?);
                    next.push(started);
                }
                None => next.push(start_action(spec, &self.opts, None, None)?),
            }
        }
        for (_, r) in old {
            let (after_tx, _) = crossbeam_channel::bounded::<()>(0);
            self.retiring.push(retire(r, None, after_tx)?);
        }
        self.running = next;
        self.by_name = names;
        self.retiring.retain(|t| !t.is_finished());
        Ok(())
    }

    /// The lanes of the running actions, in the order the specs were given.
    pub fn lanes(&self) -> Vec<Arc<Lane>> {
        self.running.iter().map(|r| r.lane.clone()).collect()
    }

    /// The index of the action called `name`, for [`Dispatcher::submit`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Queues a job for action `action` without ever blocking (see [`Lane::submit`]);
    /// `false` also for an unknown index.
    pub fn submit(&self, action: usize, job: Job) -> bool {
        self.running.get(action).is_some_and(|r| r.lane.submit(job))
    }

    /// Queues a job, waiting while the queue is full (see [`Lane::submit_wait`]).
    pub fn submit_wait(&self, action: usize, job: Job, give_up: &dyn Fn() -> bool) -> bool {
        self.running
            .get(action)
            .is_some_and(|r| r.lane.submit_wait(job, give_up))
    }

    /// Counters of every running action, in the order the specs were given.
    pub fn stats(&self) -> Vec<ActionStats> {
        self.running
            .iter()
            .map(|r| r.lane.counters.snapshot(&r.lane.name, r.kind, r.rx.len()))
            .collect()
    }

    /// Closes the queues and lets the workers finish what is queued until `deadline` from
    /// now. After it, running programs are killed, reconnecting stops, and what is still
    /// queued is counted as dropped. Workers that are still busy a moment later are left
    /// to end on their own (they hold no queue). Lanes held elsewhere must be dropped
    /// first (the daemon stops its sources before). Returns the final counters.
    pub fn shutdown(self, deadline: Duration) -> Vec<ActionStats> {
        let until = Instant::now() + deadline;
        let Dispatcher {
            running, retiring, ..
        } = self;
        let mut stats = Vec::with_capacity(running.len());
        let mut closing = Vec::with_capacity(running.len());
        for r in running {
            r.ctl.set_deadline(until);
            // Closing the queue: a worker's `recv` ends once its queue is drained.
            let Running {
                spec,
                kind,
                lane,
                rx,
                workers,
                done,
                ..
            } = r;
            let (name, counters) = (lane.name.clone(), lane.counters.clone());
            drop(lane);
            closing.push((spec, kind, name, counters, rx, workers, done));
        }
        for (_, kind, name, counters, rx, workers, done) in closing {
            finish_workers(
                &name,
                &rx,
                workers,
                &done,
                until + AFTER_DEADLINE,
                &counters,
                true,
            );
            stats.push(counters.snapshot(&name, kind, 0));
        }
        for t in retiring {
            let _ = t.join();
        }
        stats
    }
}

/// Waits for a running action's workers (until `until`), joins those that ended; with
/// `count_left`, counts what is still queued as dropped.
fn finish_workers(
    name: &str,
    rx: &Receiver<Job>,
    workers: Vec<JoinHandle<()>>,
    done: &Receiver<usize>,
    until: Instant,
    counters: &Counters,
    count_left: bool,
) {
    let mut finished = HashSet::new();
    while finished.len() < workers.len() {
        match done.recv_deadline(until) {
            Ok(w) => {
                finished.insert(w);
            }
            Err(_) => break,
        }
    }
    if count_left {
        let left = rx.try_iter().count() as u64;
        if left > 0 {
            counters.dropped(left);
        }
    }
    for (w, handle) in workers.into_iter().enumerate() {
        if finished.contains(&w) {
            let _ = handle.join();
        } else {
            tracing::warn!(action = %name, "action worker still busy at shutdown; leaving it");
        }
    }
}

/// How long a retired action may drain its queue.
const RETIRE_DRAIN: Duration = Duration::from_secs(5);

/// Retires an action on a thread of its own (see the module documentation).
///
/// Draining (`successor` is `None`): waits until no generation holds its lane (its queue
/// is then closed) and lets its workers finish what is queued, 5 s at most.
///
/// Handing over (a changed durable action, `successor` its new lane): its worker stops
/// at once, taking what is on its channel into the on-disk queue; then `after` lets the
/// successor open that queue; jobs that reached the old channel later (sources that had
/// not switched to the new generation yet) are passed on to the successor.
fn retire(
    r: Running,
    successor: Option<Arc<Lane>>,
    after: Sender<()>,
) -> Result<JoinHandle<ActionStats>, ActionError> {
    let Running {
        kind,
        lane,
        rx,
        ctl,
        workers,
        done,
        ..
    } = r;
    let name = lane.name.clone();
    let counters = lane.counters.clone();
    let held = Arc::downgrade(&lane);
    drop(lane);
    if successor.is_some() {
        ctl.set_deadline(Instant::now());
    }
    let thread_name = format!("retire-{name}");
    std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let wait_released = || {
                while held.strong_count() > 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            match successor {
                Some(next) => {
                    let until = Instant::now() + AFTER_DEADLINE + RETIRE_DRAIN;
                    finish_workers(&name, &rx, workers, &done, until, &counters, false);
                    drop(after);
                    wait_released();
                    let mut passed = 0u64;
                    let give_up = Instant::now() + RETIRE_DRAIN;
                    for job in rx.try_iter() {
                        passed += u64::from(next.submit_wait(job, &|| Instant::now() >= give_up));
                    }
                    tracing::info!(action = %name, passed_on = passed, "action handed over to its new definition");
                }
                None => {
                    wait_released();
                    let until = Instant::now() + RETIRE_DRAIN;
                    ctl.set_deadline(until);
                    finish_workers(&name, &rx, workers, &done, until + AFTER_DEADLINE, &counters, true);
                    drop(after);
                    tracing::info!(action = %name, "action retired");
                }
            }
            counters.snapshot(&name, kind, 0)
        })
        .map_err(|source| ActionError::Thread {
            action: thread_name,
            source,
        })
}

/// Starts one action's workers. `after`: wait for the predecessor (a changed action that
/// hands over its on-disk state) before touching the state. `counters`: carried on from
/// the predecessor.
fn start_action(
    spec: ActionSpec,
    options: &DispatchOptions,
    after: Option<Receiver<()>>,
    counters: Option<Arc<Counters>>,
) -> Result<Running, ActionError> {
    let state_dir: Option<Arc<Path>> = options.state_dir.clone().map(Arc::from);
    let ctl = Arc::new(Control::with_outcomes(options.outcomes.clone()));
    let (done_tx, done) = crossbeam_channel::unbounded();
    let (tx, rx) = crossbeam_channel::bounded(spec.queue_capacity());
    let counters = counters.unwrap_or_default();
    let name: Arc<str> = Arc::from(spec.name());
    let kind = spec.kind();
    // Actions that retry deliver one job at a time, in order.
    let retrying = spec.retries();
    let threads = if retrying { 1 } else { spec.kind.concurrency() };
    let gated = !retrying && !spec.common.limits.is_empty();
    let direct = if retrying || gated {
        None
    } else {
        spec.kind.direct(spec.name(), &counters, &ctl)
    };
    let spec = Arc::new(spec);
    let mut workers = Vec::with_capacity(threads + 1);
    let after = after.map(Arc::new);
    let spawn = |w: usize, body: Box<dyn FnOnce() + Send>| {
        let guard = DoneGuard(done_tx.clone(), w);
        let after = after.clone();
        std::thread::Builder::new()
            .name(format!("act-{}", name))
            .spawn(move || {
                let _guard = guard;
                if let Some(after) = after {
                    // Disconnected once the predecessor finished.
                    let _ = after.recv();
                }
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
                crate::limits::gate(spec.name(), &rx, gate_tx, &mut limits, &counters, &ctl);
            }),
        )?);
        gate_rx
    } else {
        rx.clone()
    };
    for w in 0..threads {
        let (spec, rx, counters, ctl, dir, direct) = (
            spec.clone(),
            work_rx.clone(),
            counters.clone(),
            ctl.clone(),
            state_dir.clone(),
            direct.clone(),
        );
        workers.insert(
            w,
            spawn(
                w,
                Box::new(move || {
                    if let Some(d) = direct {
                        restarting_on_panic(spec.name(), &counters, || d.serve(&rx));
                    } else if retrying {
                        durable_worker(&spec, &rx, &counters, &ctl, dir.as_deref());
                    } else {
                        worker(&spec, &rx, &counters, &ctl);
                    }
                }),
            )?,
        );
    }
    Ok(Running {
        kind,
        lane: Arc::new(Lane {
            name,
            tx,
            counters,
            direct,
        }),
        spec,
        rx,
        ctl,
        workers,
        done,
    })
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
    restarting_on_panic(spec.name(), counters, || {
        spec.kind.work(spec.name(), rx, counters, ctl)
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
