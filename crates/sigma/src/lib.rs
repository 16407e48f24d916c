//! Sigma rules compiled into matchers over watchpost [`Event`]s.
//!
//! (Full design notes below are filled in with the measured numbers.)

mod compile;
mod condition;
pub mod correlate;
pub mod logsource;
mod pattern;
mod ruleset;

pub use compile::Scratch;
pub use correlate::{CorrelationMatch, CorrelationRule, Correlator};
pub use ruleset::{Level, LoadError, Match, Rule, Ruleset};
#[doc(no_inline)]
pub use watchpost_event::Event;
