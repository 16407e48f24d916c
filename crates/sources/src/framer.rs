//! The binary framer interface: how the tailer asks a format that is not line-based (SEP's
//! binary ring logs, `sep/framing.rs`) where its records start and end. A leaf module, so
//! the tailer and the formats it frames both use it without depending on each other.

/// What a binary framer found at the start of the bytes it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The first `n` bytes are the file's header record (only answered when `at_file_start`).
    /// If `n` is larger than the bytes given, the header is incomplete and the tailer waits.
    Header(usize),
    /// A record of `n` bytes starts here. If `n` is larger than the bytes given, the record is
    /// incomplete: the tailer waits for the rest, or skips it when `n` exceeds
    /// [`TailOptions::max_record_bytes`](crate::tail::TailOptions::max_record_bytes).
    Record(usize),
    /// Nothing can be said yet (for example the length field is still being written).
    NeedMore,
    /// `n` stray bytes (CR, LF, NUL between records) to drop.
    Skip(usize),
}

/// A binary framer: `(bytes, at_file_start, at_eof) -> Frame`.
///
/// * `bytes` starts at a record boundary (or at offset 0 of the file);
/// * `at_file_start`: `bytes` starts at file offset 0, so a header may come first;
/// * `at_eof`: `bytes` reaches the file's current end; more may be appended later, unless the
///   file has been rotated away and is being closed.
///
/// Answers of zero length are treated as a framing error (one byte is dropped and counted).
pub type FrameFn = fn(&[u8], bool, bool) -> Frame;
