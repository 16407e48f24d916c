//! The parser interface shared by every format.

use std::sync::Arc;

use jiff::tz::TimeZone;
use thiserror::Error;
use watchpost_event::Event;

/// What a parser needs besides the record: names for the metadata.
#[derive(Clone, Debug)]
pub struct ParseCtx {
    /// The configured source name (becomes `Event::source`).
    pub source: Arc<str>,
    /// This machine's host name, used when the record names no computer.
    pub local_host: Arc<str>,
    /// Time zone for formats that write local time without an offset (SEP AV log).
    pub tz: TimeZone,
}

impl ParseCtx {
    /// A context with the system time zone.
    pub fn new(source: impl Into<Arc<str>>, local_host: impl Into<Arc<str>>) -> ParseCtx {
        ParseCtx {
            source: source.into(),
            local_host: local_host.into(),
            tz: TimeZone::system(),
        }
    }
}

/// A record that could not be parsed. The caller adds the file and offset.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{message} (byte {column} of the record)")]
pub struct ParseError {
    /// Byte offset inside the record where the problem is.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    /// A new error at `column`.
    pub fn new(column: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            column,
            message: message.into(),
        }
    }
}

/// The fields a parser can produce, so `check-config` can tell a misspelt field from a real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Exactly these names (plus metadata).
    Fixed(&'static [&'static str]),
    /// Any name (JSON lines, EVTX, …).
    Open,
}

impl Schema {
    /// Whether `name` can occur.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Schema::Fixed(names) => names.contains(&name),
            Schema::Open => true,
        }
    }
}

/// Turns one record into an event.
pub trait Parser: Send + Sync {
    /// Parses `record` (one line without its line terminator, or one binary-log record).
    fn parse(&self, ctx: &ParseCtx, record: &[u8]) -> Result<Event, ParseError>;
    /// The field names this parser can produce.
    fn schema(&self) -> Schema;
}
