//! The one trait every action kind implements (its spec, parser, worker or deliverer
//! live in its own file; `table.rs` lists it once). The keys every kind shares
//! (`name`, `type`, `queue_capacity`, `retry`, `durable`, `throttle`, `dedupe`) are
//! taken out of the table and checked once (`common.rs`) before the kind's parser sees
//! the rest.

use std::any::Any;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use watchpost_event::ConfigError;

use crate::Job;
use crate::common::Common;
use crate::control::{Control, Counters};
use crate::delivery::Deliver;
use crate::kit::Tpl;

/// What the dispatcher and `check-config` need of an action kind.
pub(crate) trait ActionKind: std::fmt::Debug + Send + Sync + Any {
    /// The type it reports as (`"syslog"`, `"run"`, …).
    fn kind(&self) -> &'static str;

    /// `queue_capacity`: the default and the allowed range.
    fn queue_capacity(&self) -> (u64, RangeInclusive<u64>) {
        (1000, 1..=1_000_000)
    }

    /// Every configured template (for `check-config`'s variable check).
    fn templates(&self) -> Vec<&Tpl>;

    /// Checks beyond syntax (programs exist, directories can be written, the platform).
    fn check(&self) -> Vec<ConfigError>;

    /// Worker threads sharing the action's queue (when it does not retry).
    fn concurrency(&self) -> usize {
        1
    }

    /// The deliverer of a kind whose delivery can fail for a while: such actions go
    /// through the durable retry loop (`durable.rs`).
    fn deliverer(&self, _name: &str, _common: &Common) -> Option<Box<dyn Deliver + '_>> {
        None
    }

    /// The worker loop of a kind without a deliverer (kinds with one never get here).
    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control);

    /// A kind whose job can be done on the thread that judged the event without ever
    /// waiting (a UDP datagram) returns its [`Direct`] runner; its worker then serves only
    /// the jobs the runner gave back.
    fn direct(
        &self,
        _name: &str,
        _counters: &Arc<Counters>,
        _ctl: &Arc<Control>,
    ) -> Option<Arc<dyn Direct>> {
        None
    }

    /// Where watchpost keeps its state (the quarantine records itself there).
    fn set_state_dir(&mut self, _dir: &Path) {}

    /// Peers that must stay reachable whatever else the action does (the fleet server,
    /// for the quarantine).
    fn keep_reachable(&mut self, _peers: &[std::net::SocketAddr]) {}

    /// The file a kind appends to, with the place of its path (two actions appending to
    /// one file is a configuration error).
    fn appends_to(&self) -> Option<(&Path, Range<usize>)> {
        None
    }

    /// For the few places that need the concrete spec (the quarantine commands, tests).
    fn as_any(&self) -> &dyn Any;
}

/// Runs an action's jobs on the submitting thread when that cannot block, and is the
/// worker loop for the rest (see [`ActionKind::direct`]). Jobs stay in order: a job runs
/// directly only when no job given to the queue is still unsent, and both sides hold one
/// lock while they render and send.
pub(crate) trait Direct: Send + Sync {
    /// Runs `job` now if that does not wait (for the lock, a full socket buffer, a job
    /// queued before it); otherwise gives it back to be queued, counting it as queued.
    fn try_run(&self, job: Job) -> Result<(), Job>;

    /// Gives `job` back to be queued for the worker without trying it here, counting it
    /// as queued (so later jobs do not overtake it).
    fn to_worker(&self, job: Job) -> Job;

    /// A job given back by [`try_run`](Direct::try_run) was not queued after all
    /// (dropped).
    fn not_queued(&self);

    /// The worker loop over the queued jobs.
    fn serve(&self, rx: &Receiver<Job>);
}
