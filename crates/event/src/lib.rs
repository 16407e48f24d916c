//! The event model every watchpost component shares.
//!
//! Three types: [`Event`] (one parsed log line or record: metadata plus named fields),
//! [`Sym`] (an interned field name; lookups are integer compares) and [`Template`]
//! (text with `{{ field }}` placeholders, rendered by actions). This crate does no I/O
//! and changes rarely; sources build events, filters read them, actions render them.

mod config_error;
mod event;
mod logfmt;
mod sym;
pub mod template;
mod units;

pub use config_error::ConfigError;
pub use event::{Event, FieldRef, Origin, Value, format_time, parse_number};
pub use logfmt::logfmt;
pub use sym::{MAX_SYMBOLS, Sym};
pub use template::{ActionScope, Lookup, Template, TemplateError};
pub use units::{parse_duration, parse_size};
