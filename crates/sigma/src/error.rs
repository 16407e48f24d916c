//! The typed errors of this crate's public functions (rule load problems are
//! [`crate::LoadError`]s, collected rather than returned).

use std::path::PathBuf;

use thiserror::Error;

/// `"…".parse::<Level>()` met a word that is no Sigma level.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown level `{0}`")]
pub struct UnknownLevel(pub String);

/// A correlation's `timespan` that is not a positive duration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad timespan `{text}`: {why}")]
pub struct TimespanError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// Why a placeholder file or text could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlaceholderError {
    /// The text is not YAML.
    #[error("YAML: {0}")]
    Yaml(String),
    /// The YAML is not a mapping of names to plain values.
    #[error("{0}")]
    Shape(String),
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's content is wrong.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: Box<PlaceholderError>,
    },
}
