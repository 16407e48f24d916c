//! watchpost's runtime: the one event path every command drives, and the daemon around
//! it.
//!
//! * [`pipeline`]: [`Pipeline`] (parse → filter chain with anomaly and threshold
//!   judgement → Sigma rule sets → store → a [`Sink`]) judging with one immutable
//!   [`Generation`] of the configuration at a time; `watchpost test`, `hunt -c` and
//!   `baseline learn` drive it with their own sinks, the daemon with [`sink::DaemonSink`].
//! * [`supervisor`]: the daemon's long-running parts as [`Task`]s on their own threads,
//!   stopped in reverse order, also when start-up fails half way.
//! * [`daemon`]: [`run_until`] — start, serve stop and reload requests, stop; a reload
//!   ([`daemon::Runtime::reload`]) checks the new configuration completely before it
//!   changes anything, then swaps the generation between two events and restarts only
//!   what changed.
//! * [`reload`]: the in-process [`ReloadHandle`] any trigger uses (SIGHUP, the Windows
//!   service's paramchange, `[agent] watch_config`, a fleet agent), and the status file
//!   `watchpost reload` reads.
//!
//! ```
//! use watchpost_runtime::supervisor::Supervisor;
//! let mut tasks = Supervisor::new();
//! tasks.spawn("tick", |stop| while !stop.sleep(std::time::Duration::from_secs(1)) {}).unwrap();
//! tasks.stop_all();
//! ```

pub mod analysis;
pub mod console;
pub mod daemon;
pub mod fleet;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod reload;
pub mod sink;
pub mod supervisor;
mod tasks;
mod watch;

pub use daemon::{Runtime, run_until};
pub use pipeline::{Current, FiredBy, Firing, Generation, Pipeline, Sink, SourceKind};
pub use reload::{Outcome, ReloadHandle, Requests};
pub use supervisor::{StopSignal, Supervisor, Task};
pub use tasks::{checkpoint_path, sanitize};
