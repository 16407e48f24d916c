//! Sigma rules compiled into matchers over watchpost [`Event`]s.
//!
//! [`Ruleset::load`] reads rule files (YAML through `serde-saphyr`), compiles each
//! rule's `detection` into a tree of field tests over interned [`watchpost_event::Sym`]
//! ids (needles lowercased at load time, `memchr::memmem` finders for `contains`,
//! anchored regexes only for wildcards in the middle) and files every compiled form
//! under the (channel, event id) its `logsource` and detection imply
//! ([`logsource`]). [`Ruleset::matches`] looks up the event's channel and event id,
//! skips candidates none of whose required literals occur in the event (one
//! Aho-Corasick automaton per field, run at most once per event), and evaluates the
//! rest. Rules that cannot be loaded come back as [`LoadError`]s with the reason; the
//! others load. `expand` placeholders take their values from [`LoadOptions`]
//! ([`Placeholders`]). With [`LoadOptions::cache`], what loading needs of each rule file
//! (its rules' metadata, index keys and needles, the detections as JSON) is kept in a
//! compiled-rule cache keyed by the file's SHA-256; rules taken from it are filed in the
//! index without compiling, and each form is compiled at the first event that reaches it
//! as a candidate (`load.rs`, `cached.rs`, `lazy.rs`). [`Correlator`] evaluates correlation rules (`event_count`,
//! `value_count`, `value_sum`, `value_avg`, `value_percentile`, `temporal`,
//! `temporal_ordered`; lower bounds at the match, upper bounds when the window closes)
//! over the stream of matches.
//!
//! ## Why our own compiler
//!
//! Measured in one process on the shared fixtures (1,391 SigmaHQ rules, 1,635 EVTX
//! records; 2-vCPU VM): the parse floor (`read_evtx`) is 10.9 µs per record;
//! `rsigma-eval` 0.23 (the last release for Rust 1.95) evaluates in 38.8 µs per record
//! (3.6x the floor, before any field-mapping pipeline, reading fields by string path
//! through its `Event` trait, without a channel/event-id index); this crate in 4.4 µs
//! (0.4x the floor), so a hunt costs ~1.4-1.7x the parse floor against a 2x target.
//! Details, the mapping tables and what is not done: `docs/sigma.md`.
//!
//! ```
//! use std::path::Path;
//! use watchpost_event::{Event, Sym, Value};
//! use watchpost_sigma::{Level, Ruleset};
//!
//! let yaml = r"
//! title: Whoami
//! level: high
//! logsource: { product: windows, category: process_creation }
//! detection:
//!     sel:
//!         Image|endswith: '\whoami.exe'
//!     condition: sel
//! ";
//! let (rules, errors) = Ruleset::from_yaml(Path::new("whoami.yml"), yaml);
//! assert!(errors.is_empty());
//! // A Security 4688: `Image` is read from `NewProcessName`.
//! let mut e = Event::new("evtx".into(), "pc".into(), String::new());
//! e.push(Sym::new("channel"), Value::Static("Security"));
//! e.push(Sym::new("event_id"), Value::Int(4688));
//! e.push(Sym::new("NewProcessName"), Value::Static(r"C:\Windows\System32\WHOAMI.EXE"));
//! e.finish();
//! let mut out = Vec::new();
//! assert_eq!(rules.matches(&e, &mut out), 1);
//! assert!(out[0].level >= Level::Medium);
//! ```

mod aggregation;
mod cached;
mod compile;
mod condition;
pub mod correlate;
mod correlation;
mod error;
mod lazy;
mod level;
mod load;
pub mod logsource;
mod pattern;
mod placeholders;
mod ruleset;

pub use compile::Scratch;
pub use correlate::{CorrelationMatch, Correlator};
pub use correlation::{Condition, CorrelationRule, Kind, parse_timespan};
pub use error::{PlaceholderError, TimespanError, UnknownLevel};
pub use level::Level;
pub use load::{LoadStats, cache_file_for};
pub use placeholders::Placeholders;
pub use ruleset::{LoadError, LoadOptions, Match, PrefilterKey, Rule, Ruleset, parse_exclude_list};
#[doc(no_inline)]
pub use watchpost_event::Event;
