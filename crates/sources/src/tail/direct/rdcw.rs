//! What a completed `ReadDirectoryChangesW` read means, decoded without Win32 calls (so it
//! is tested on every platform): the completion's status, the `FILE_NOTIFY_INFORMATION`
//! records of its buffer, and the wait's timeout in milliseconds.

use std::time::Duration;

/// `ERROR_SUCCESS`.
pub(crate) const ERROR_SUCCESS: u32 = 0;
/// `ERROR_OPERATION_ABORTED`: the read was cancelled (by `CancelIoEx`, or because the
/// thread that started it ended).
pub(crate) const ERROR_OPERATION_ABORTED: u32 = 995;
/// `ERROR_NOTIFY_ENUM_DIR`: more changes than the buffer holds.
pub(crate) const ERROR_NOTIFY_ENUM_DIR: u32 = 1022;

/// What a completed read says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Records are in the buffer: read them, then start the next read.
    Changes,
    /// Changes were lost (a buffer overflow, reported as zero bytes or
    /// `ERROR_NOTIFY_ENUM_DIR`, or a read cancelled under us): rescan, start the next read.
    Lost,
    /// The directory went away (deleted: `ERROR_ACCESS_DENIED` as its deletion is
    /// pending), or its watch broke: drop it.
    Gone,
}

/// A completed read's status (`GetOverlappedResult`'s error, or `ERROR_SUCCESS`) and the
/// bytes it returned.
pub(crate) fn completion(error: u32, bytes: u32) -> Completion {
    match error {
        ERROR_SUCCESS if bytes == 0 => Completion::Lost,
        ERROR_SUCCESS => Completion::Changes,
        ERROR_NOTIFY_ENUM_DIR | ERROR_OPERATION_ABORTED => Completion::Lost,
        _ => Completion::Gone,
    }
}

/// What a record's `FILE_ACTION_*` says happened to the entry it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// `FILE_ACTION_MODIFIED`: its size or last-write time changed.
    Changed,
    /// `FILE_ACTION_ADDED`, `FILE_ACTION_REMOVED`: created (or moved in), deleted (or moved
    /// out).
    Entry,
    /// `FILE_ACTION_RENAMED_OLD_NAME`: renamed from this name; the new name follows.
    MovedFrom,
    /// `FILE_ACTION_RENAMED_NEW_NAME`: renamed to this name.
    MovedTo,
}

/// The action of a record's `FILE_ACTION_*` code (`None`: unknown, ignored).
pub(crate) fn action(code: u32) -> Option<Action> {
    match code {
        1 | 2 => Some(Action::Entry),
        3 => Some(Action::Changed),
        4 => Some(Action::MovedFrom),
        5 => Some(Action::MovedTo),
        _ => None,
    }
}

/// Bytes before a record's name: `NextEntryOffset`, `Action`, `FileNameLength`.
const HEADER: usize = 12;

/// One `FILE_NOTIFY_INFORMATION` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// `FILE_ACTION_*`.
    pub action: u32,
    /// The file's name relative to the directory, UTF-16LE.
    name: &'a [u8],
}

impl Record<'_> {
    /// The name's UTF-16 code units.
    pub(crate) fn name_units(&self) -> impl Iterator<Item = u16> + '_ {
        self.name
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
}

/// The records of a read's buffer (its first `bytes_returned` bytes). Read field by field,
/// so a record need not be aligned (Wine packs them on 2-byte boundaries); a record that
/// does not fit, or an offset that does not move forward, ends the list.
pub(crate) fn records(buf: &[u8]) -> impl Iterator<Item = Record<'_>> + '_ {
    let mut at = Some(0usize);
    std::iter::from_fn(move || {
        let start = at.take()?;
        let u32_at = |i: usize| {
            let b = buf.get(start + i..start + i + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let next = usize::try_from(u32_at(0)?).ok()?;
        let action = u32_at(4)?;
        let len = usize::try_from(u32_at(8)?).ok()?;
        let name_at = start + HEADER;
        let name = buf.get(name_at..name_at.checked_add(len)?)?;
        if next != 0 {
            at = start.checked_add(next).filter(|n| *n >= name_at);
        }
        Some(Record { action, name })
    })
}

/// `INFINITE`: what the wait's timeout must never be.
const INFINITE: u32 = u32::MAX;

/// A timeout in whole milliseconds, rounded up (a wait never ends just before its
/// deadline only to wait again for less than a millisecond), below `INFINITE`.
pub(crate) fn timeout_ms(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(INFINITE - 1).min(INFINITE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as Windows lays it out (aligned to 4 bytes when `pad`), or Wine (not).
    fn record(action: u32, name: &str, last: bool, pad: bool) -> Vec<u8> {
        let name: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut len = HEADER + name.len();
        if pad {
            len = len.div_ceil(4) * 4;
        }
        let next = if last { 0 } else { len as u32 };
        let mut out = Vec::new();
        out.extend(next.to_le_bytes());
        out.extend(action.to_le_bytes());
        out.extend((name.len() as u32).to_le_bytes());
        out.extend(&name);
        out.resize(len, 0);
        out
    }

    fn names(buf: &[u8]) -> Vec<(u32, String)> {
        records(buf)
            .map(|r| {
                (
                    r.action,
                    String::from_utf16(&r.name_units().collect::<Vec<_>>()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn records_aligned_and_packed_are_read_alike() {
        for pad in [true, false] {
            let mut buf = record(3, "11212026.Log", false, pad);
            buf.extend(record(3, "a.log", false, pad));
            buf.extend(record(1, "Ünïcode ✓.log", true, pad));
            assert_eq!(
                names(&buf),
                [
                    (3, "11212026.Log".to_owned()),
                    (3, "a.log".to_owned()),
                    (1, "Ünïcode ✓.log".to_owned())
                ],
                "pad {pad}"
            );
        }
    }

    #[test]
    fn damaged_buffers_end_the_list_without_panicking() {
        let good = record(3, "a.log", true, true);
        assert!(names(&[]).is_empty());
        // Cut anywhere: the whole record or nothing.
        for cut in 0..good.len() {
            let got = names(&good[..cut]);
            assert!(got.is_empty() || cut >= HEADER + 10, "{cut}: {got:?}");
        }
        // A name longer than the buffer.
        let mut long = good.clone();
        long[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(names(&long).is_empty());
        // An offset pointing back into the record (or at itself) stops after it.
        let mut back = record(3, "a.log", false, true);
        back[0..4].copy_from_slice(&4u32.to_le_bytes());
        back.extend(record(3, "b.log", true, true));
        assert_eq!(names(&back), [(3, "a.log".to_owned())]);
        // An offset past the end stops after the record.
        let mut far = record(3, "a.log", false, true);
        far[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(names(&far), [(3, "a.log".to_owned())]);
        // An odd name length drops the odd byte.
        let mut odd = record(3, "ab", true, false);
        odd[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(names(&odd), [(3, "a".to_owned())]);
    }

    #[test]
    fn actions_name_what_happened() {
        assert_eq!(action(1), Some(Action::Entry));
        assert_eq!(action(2), Some(Action::Entry));
        assert_eq!(action(3), Some(Action::Changed));
        assert_eq!(action(4), Some(Action::MovedFrom));
        assert_eq!(action(5), Some(Action::MovedTo));
        assert_eq!(action(0), None);
        assert_eq!(action(6), None);
    }

    #[test]
    fn completions_name_what_to_do() {
        use Completion::*;
        assert_eq!(completion(ERROR_SUCCESS, 40), Changes);
        // Zero bytes: the system's buffer overflowed and its contents were dropped.
        assert_eq!(completion(ERROR_SUCCESS, 0), Lost);
        assert_eq!(completion(ERROR_NOTIFY_ENUM_DIR, 0), Lost);
        assert_eq!(completion(ERROR_OPERATION_ABORTED, 0), Lost);
        // ERROR_ACCESS_DENIED (deleted directory), ERROR_INVALID_FUNCTION, anything else.
        assert_eq!(completion(5, 0), Gone);
        assert_eq!(completion(1, 0), Gone);
    }

    #[test]
    fn timeouts_round_up_and_never_mean_forever() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 2);
        assert_eq!(timeout_ms(Duration::from_millis(20)), 20);
        assert_eq!(timeout_ms(Duration::MAX), u32::MAX - 1);
        assert_eq!(
            timeout_ms(Duration::from_secs(u64::from(u32::MAX))),
            u32::MAX - 1
        );
    }
}
