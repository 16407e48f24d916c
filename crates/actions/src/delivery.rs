//! The contract between the dispatcher's delivery loop and the actions whose delivery
//! can fail for a while and succeed later (syslog over TCP/TLS, webhook, email, a script
//! told to be retried).
//!
//! Such an action builds a [`Deliver`] per worker; the loop hands it one job at a time and
//! learns from the [`Failure`] whether to try the job again later (`Transient`: the peer is
//! down, a timeout, a 5xx answer, an SMTP 4xx reply) or to record it as failed for good
//! (`Permanent`: the peer refused the message itself, a template rendered something
//! unsendable).

use std::fmt;

use crate::Job;
use crate::control::{Control, Counters};

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Worth another attempt later: the same job may well succeed then.
    Transient(String),
    /// Never worth another attempt: the job itself is at fault.
    Permanent(String),
}

impl Failure {
    /// The failure's text.
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }

    /// Whether another attempt may succeed.
    #[allow(dead_code)] // for deliverers that wrap another's failure
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Failure::Transient(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// One worker's connection state for an action that delivers to a peer.
pub(crate) trait Deliver: Send {
    /// Makes one attempt at delivering `job`. Must not block past its own configured
    /// timeouts, and should give up early once `ctl` says shutdown's deadline passed.
    fn deliver(&mut self, job: &Job, ctl: &Control) -> Result<(), Failure>;

    /// Called when no job is waiting: flush what is buffered, close idle connections.
    fn idle(&mut self, _ctl: &Control) -> Result<(), Failure> {
        Ok(())
    }
}

/// The plain loop: one attempt per job, its outcome counted and reported. The durable
/// retry loop (`durable.rs`) replaces it for every kind with a deliverer; kept for a
/// kind that wants a deliverer without any queue.
#[allow(dead_code)]
pub(crate) fn serve_once(
    name: &str,
    rx: &crossbeam_channel::Receiver<Job>,
    counters: &Counters,
    ctl: &Control,
    d: &mut dyn Deliver,
) {
    loop {
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(crossbeam_channel::TryRecvError::Empty) => {
                if let Err(e) = d.idle(ctl) {
                    counters.failed_and_warn(name, e.to_string());
                }
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => return,
        };
        if ctl.past_deadline() {
            counters.dropped(1);
            return;
        }
        let outcome = d.deliver(&job, ctl);
        counters.finish(ctl, name, &job, outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use watchpost_event::Event;

    struct Flaky(u32);

    impl Deliver for Flaky {
        fn deliver(&mut self, _job: &Job, _ctl: &Control) -> Result<(), Failure> {
            self.0 += 1;
            if self.0.is_multiple_of(2) {
                Err(Failure::Transient("peer down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn serve_once_counts_each_job_once() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..4 {
            tx.send(Job {
                event: Arc::new(Event::new(Arc::from("s"), Arc::from("h"), "raw".into())),
                filter: Arc::from("f"),
                actions: Arc::from("a"),
                stored: None,
            })
            .unwrap();
        }
        drop(tx);
        let counters = Counters::default();
        let ctl = Control::default();
        serve_once("a", &rx, &counters, &ctl, &mut Flaky(0));
        let s = counters.snapshot("a", "test", 0);
        assert_eq!((s.ok, s.failed), (2, 2));
        assert_eq!(s.last_error.as_deref(), Some("peer down"));
        assert!(Failure::Transient("x".into()).is_transient());
        assert!(!Failure::Permanent("x".into()).is_transient());
    }
}
