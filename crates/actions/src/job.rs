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
