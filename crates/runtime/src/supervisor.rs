//! The task supervisor: every long-running part of the daemon (each source, the checks,
//! the quarantine timer, the metrics server, the configuration watcher, the fleet
//! shipper) is a [`Task`] on a thread of its own, started in order and stopped in reverse
//! order.
//!
//! A task runs until its [`StopSignal`] is raised; [`Task::stopper`] may return a handle
//! that wakes it out of a blocking wait (a source's `poll`, an `accept`). A task is a
//! type implementing [`Task`] or a closure ([`Supervisor::spawn`]), so adding one is one
//! line. Dropping the [`Supervisor`] stops whatever runs: when start-up fails half way
//! (an early `?`), what already started is stopped cleanly, sources writing their final
//! checkpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use watchpost_sources::StopHandle;

/// Raised once to ask a task to end.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    raised: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl StopSignal {
    /// A signal not raised yet.
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Whether the task should end.
    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::SeqCst)
    }

    /// Asks the task to end.
    pub fn raise(&self) {
        let _g = watchpost_support::lock(&self.0.lock);
        self.0.raised.store(true, Ordering::SeqCst);
        self.0.wake.notify_all();
    }

    /// Sleeps up to `d`; returns early (with `true`) when the signal is raised.
    pub fn sleep(&self, d: Duration) -> bool {
        let g = watchpost_support::lock(&self.0.lock);
        if self.is_raised() {
            return true;
        }
        let _ = self.0.wake.wait_timeout_while(g, d, |_| !self.is_raised());
        self.is_raised()
    }
}

/// A long-running part of the daemon.
pub trait Task: Send + 'static {
    /// Its name (the thread's name, and the key to stop it by).
    fn name(&self) -> String;

    /// A handle that wakes the task out of a blocking wait once its signal is raised.
    fn stopper(&self) -> Option<StopHandle> {
        None
    }

    /// Runs until `stop` is raised.
    fn run(self: Box<Self>, stop: StopSignal);
}

/// A task made of a closure.
struct FnTask<F> {
    name: String,
    f: F,
}

impl<F: FnOnce(StopSignal) + Send + 'static> Task for FnTask<F> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(self: Box<Self>, stop: StopSignal) {
        (self.f)(stop)
    }
}

struct Running {
    name: String,
    stop: StopSignal,
    stopper: Option<StopHandle>,
    thread: JoinHandle<()>,
}

/// Starts tasks and stops them in reverse order. See the [module documentation](self).
#[derive(Default)]
pub struct Supervisor {
    running: Vec<Running>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.running.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Supervisor").field("tasks", &names).finish()
    }
}

impl Supervisor {
    /// No tasks yet.
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Starts `task` on a thread of its own.
    pub fn start(&mut self, task: Box<dyn Task>) -> std::io::Result<()> {
        let name = task.name();
        let stop = StopSignal::new();
        let stopper = task.stopper();
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || task.run(signal))?;
        self.running.push(Running {
            name,
            stop,
            stopper,
            thread,
        });
        Ok(())
    }

    /// Starts a closure as a task named `name`.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce(StopSignal) + Send + 'static,
    ) -> std::io::Result<()> {
        self.start(Box::new(FnTask {
            name: name.into(),
            f,
        }))
    }

    /// Whether a task of this name runs.
    pub fn has(&self, name: &str) -> bool {
        self.running.iter().any(|r| r.name == name)
    }

    /// The names of the running tasks, in start order.
    pub fn names(&self) -> Vec<String> {
        self.running.iter().map(|r| r.name.clone()).collect()
    }

    /// Stops the task called `name` and waits for it; `false` when none runs.
    pub fn stop(&mut self, name: &str) -> bool {
        let Some(i) = self.running.iter().position(|r| r.name == name) else {
            return false;
        };
        let r = self.running.remove(i);
        finish(vec![r]);
        true
    }

    /// Stops every task whose name satisfies `which`, all signalled first, then joined.
    pub fn stop_where(&mut self, which: impl Fn(&str) -> bool) {
        let (stopping, keep): (Vec<Running>, Vec<Running>) =
            self.running.drain(..).partition(|r| which(&r.name));
        self.running = keep;
        finish(stopping.into_iter().rev().collect());
    }

    /// Stops every task, the last started first.
    pub fn stop_all(&mut self) {
        let all: Vec<Running> = self.running.drain(..).rev().collect();
        finish(all);
    }
}

/// Raises every signal (in the given order), then joins every thread.
fn finish(tasks: Vec<Running>) {
    for r in &tasks {
        r.stop.raise();
        if let Some(s) = &r.stopper {
            s.stop();
        }
    }
    for r in tasks {
        if r.thread.join().is_err() {
            tracing::error!(task = %r.name, "a task panicked");
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn tasks_stop_in_reverse_order_also_when_dropped() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut s = Supervisor::new();
            for name in ["a", "b", "c"] {
                let log = log.clone();
                s.spawn(name, move |stop| {
                    while !stop.sleep(Duration::from_secs(10)) {}
                    // Stopping takes a moment: a later task must not finish first.
                    std::thread::sleep(Duration::from_millis(20));
                    log.lock().unwrap().push(name);
                })
                .unwrap();
            }
            assert!(s.has("b"));
            assert!(s.stop("b"));
            assert!(!s.stop("b"));
            assert_eq!(s.names(), ["a", "c"]);
        }
        // Signalled in reverse order; joined: "b" first (stopped alone), then the rest.
        let log = log.lock().unwrap();
        assert_eq!(log[0], "b");
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn a_stopper_wakes_a_blocking_task() {
        struct Blocking(
            crossbeam_channel::Receiver<()>,
            crossbeam_channel::Sender<()>,
        );
        impl Task for Blocking {
            fn name(&self) -> String {
                "blocking".into()
            }
            fn stopper(&self) -> Option<StopHandle> {
                let tx = self.1.clone();
                Some(StopHandle::new(move || {
                    let _ = tx.send(());
                }))
            }
            fn run(self: Box<Self>, _: StopSignal) {
                let _ = self.0.recv();
            }
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut s = Supervisor::new();
        s.start(Box::new(Blocking(rx, tx))).unwrap();
        let t = std::time::Instant::now();
        s.stop_all();
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
