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
use crate::control::Control;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_whether_to_try_again() {
        let t = Failure::Transient("peer down".into());
        assert!(t.is_transient());
        assert_eq!(t.to_string(), "peer down");
        assert!(!Failure::Permanent("refused".into()).is_transient());
    }
}
