//! watchpost filters: the ordered chain that decides what an event means.
//!
//! * [`spec`] reads `[[filter]]` tables from the spanned TOML tree ([`parse_filter`]),
//!   compiling `match` tables into [`Cond`]itions and reporting every problem with its
//!   byte span.
//! * [`cond`] holds the closed condition enum and its evaluation.
//! * [`chain`] orders filters (excludes first, includes top to bottom, `stop`) and
//!   evaluates them per event ([`Chain::evaluate`]) with a per-source [`Plan`], whose
//!   prefilter (`prefilter.rs`) skips filters keyed on a field value the event lacks.

pub mod chain;
pub mod cond;
mod prefilter;
pub mod spec;

pub mod threshold;
pub use chain::{Chain, Filter, Judge, NoBaselines, Plan, Verdict};
pub use cond::{Cond, Test};
pub use spec::{AnomalyMode, BaselineSpec, FilterSpec, Forward, ThresholdSpec, parse_filter};

#[cfg(test)]
mod tests;
