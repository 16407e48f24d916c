//! A rule's severity (`level:`), shared by detection and correlation rules.

use std::fmt;
use std::str::FromStr;

/// A rule's severity; ordered `Informational < Low < Medium < High < Critical` (for a
/// `--min-level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `informational`
    Informational,
    /// `low`
    Low,
    /// `medium` (also what a rule without `level` gets)
    Medium,
    /// `high`
    High,
    /// `critical`
    Critical,
}

impl FromStr for Level {
    type Err = crate::UnknownLevel;
    fn from_str(s: &str) -> Result<Level, crate::UnknownLevel> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            other => return Err(crate::UnknownLevel(other.to_owned())),
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        })
    }
}
