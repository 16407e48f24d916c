//! watchpost's configuration: one TOML file read into typed parts, checked completely,
//! every problem reported as `file:line:column` with the line and a caret.
//!
//! * [`load`] reads a [`ConfigSource`] (the built-in configuration, a file, or a text
//!   held in memory) and returns a [`Loaded`] configuration (with its built filter
//!   [`Chain`](watchpost_filters::Chain)) or, when anything is wrong, a [`Rejected`] one
//!   with every diagnostic. `watchpost check-config`, `run`, `test`, a reload and the
//!   fleet server go through it; [`Purpose::Offline`] leaves out what looks at this
//!   machine's files (readable source folders, a writable state directory), so a server
//!   can check an agent's configuration text without touching anything.
//! * [`Definitions`] says what each named part is (a fingerprint of its table) and
//!   [`Changes`] what differs between two configurations: what a reload keeps running,
//!   restarts, starts and stops. [`restart_only`] names the settings a running daemon
//!   cannot change in place.
//! * [`SourceMap`] maps a diagnostic's byte span to its file, line and column. A
//!   configuration made of several texts (a local file plus a fleet group's overlay)
//!   gives each text its own range of offsets; one file starts at 0.
//!
//! ```
//! use watchpost_config::{ConfigSource, Purpose, load};
//! let text = "[[filter]]\nname = \"x\"\nmatch = { event_id = 1 }\nactions = [\"nope\"]\n".to_owned();
//! let rejected = load(&ConfigSource::Text { name: "group.toml".into(), text }, Purpose::Offline)
//!     .unwrap_err();
//! assert!(rejected.rendered().contains("group.toml:4:12: error: unknown action `nope`"));
//! ```

mod address;
pub mod check;
mod config;
mod definition;
pub mod diag;
mod load;
mod paths;
pub mod rules;

pub use address::{DEFAULT_PORT, parse_address};
pub use check::Purpose;
pub use config::{
    AgentConfig, Config, DEFAULT_CONFIG, JournalConfig, OneOrMany, SourceConfig, StartAt,
    StoreConfig, StoreToml, WhenFull, WinEvtConfig, expand_env, parse,
};
pub use definition::{Changes, Definitions, Delta, fingerprint};
pub use diag::{Diag, Diagnostics, Severity};
pub use load::{ConfigSource, Loaded, Rejected, SourceMap, load, restart_only};
pub use paths::{static_dir, static_dir_or_path};
