//! One firing of one action, as the workers get it.

use std::sync::Arc;

use watchpost_event::{ActionScope, Event};

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
    /// Held until the action is done with the job (sent, run, appended to its retry
    /// queue, or dropped): the source's progress waits for it.
    pub ticket: Ticket,
}

/// A share in a batch of records that a source handed out: the source may save its
/// position past the batch once every ticket of it was dropped. Empty for jobs that no
/// source waits for.
#[derive(Clone, Default)]
pub struct Ticket(Option<Arc<dyn Send + Sync>>);

impl Ticket {
    /// A ticket holding `share` (dropped with the last clone).
    pub fn new(share: Arc<dyn Send + Sync>) -> Ticket {
        Ticket(Some(share))
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ticket"
        } else {
            "Ticket(none)"
        })
    }
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
