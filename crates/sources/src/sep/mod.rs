//! Symantec Endpoint Protection log parsers.
//!
//! * [`av`]: the client's daily AV log (`MMDDYYYY.Log`, CSV).
//! * [`binary`]: the client's Security, Traffic, System and Process logs (`seclog.log`,
//!   `tralog.log`, `syslog.log`, `processlog.log`). Their records are framed by [`frame`]
//!   (see [`framing`] for how a tailer uses it); [`LogHeader`] is their first line.
//! * [`manager`]: SEP Manager syslog export lines.
//! * [`codes`]: the code tables (numbers to names) they share.
//!
//! Field names and meanings: `docs/formats.md`.

pub mod av;
pub mod binary;
pub mod codes;
pub(crate) mod common;
pub mod framing;
pub mod manager;

pub use framing::{Frame, LogHeader, MAX_RECORD_LEN, frame, is_padding};
