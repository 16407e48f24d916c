//! watchpost sources: where events come from.
//!
//! Two halves:
//! * **Framing and reading** — [`tail`] follows files (inotify, rotation, truncation,
//!   checkpoints keyed by file identity) and hands out records (lines, or SEP binary-log
//!   records) with their byte offsets.
//! * **Parsing** — a [`Parser`] turns one record into an [`watchpost_event::Event`].
//!   [`Format`] names every parser; [`Format::detect`] recognises a file's format from its
//!   first bytes for `watchpost test`.

pub mod format;
pub mod framer;
pub mod parse;
pub mod progress;
pub mod text;
pub mod textlog;

pub use format::Format;
pub use parse::{ParseCtx, ParseError, Parser, Schema};
pub use source::{Item, Place, Source, SourceError, StopHandle};
pub mod evtx;
pub mod evtx_follow;
pub mod journald;
pub mod jsonl;
pub mod listen;
pub mod sep;
pub mod source;
pub mod tail;
pub mod winevent;
pub mod winevtlog;
mod xmlscan;
