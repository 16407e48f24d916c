//! A configuration problem with its place, shared by every crate that reads configuration.

use std::ops::Range;

/// A problem in the configuration: a byte range in the config text and a message.
/// The binary turns the range into `file:line:column`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Byte range in the configuration text (empty range = a point).
    pub span: Range<usize>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
    /// A warning: the configuration still runs (e.g. a Windows-only action checked on
    /// Linux, where it is skipped).
    pub warning: bool,
}

impl ConfigError {
    /// A new error at `span`.
    pub fn new(span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            span,
            message: message.into(),
            warning: false,
        }
    }

    /// A warning at `span`: reported by `check-config`, but the configuration stays valid.
    pub fn warning(span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            span,
            message: message.into(),
            warning: true,
        }
    }

    /// An error for a template inside a quoted TOML string at `span`: points at the
    /// template's own byte `offset` (skipping the opening quote).
    pub fn in_string(
        span: &Range<usize>,
        offset: usize,
        message: impl Into<String>,
    ) -> ConfigError {
        let at = (span.start + 1 + offset).min(span.end);
        ConfigError::new(at..at, message)
    }
}
