//! File identity: a platform key plus a content fingerprint, and positioned reads.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

use memchr::memchr;
use serde::{Deserialize, Serialize};

/// Bytes covered by a complete fingerprint.
pub(crate) const FP_BYTES: usize = 256;
/// How far into a SEP ring log the header line may reach before the file is taken to have none.
pub(crate) const HEAD_PROBE: usize = 4096;

/// The platform part of a file's identity.
///
/// * Unix: `(device, inode)`. Unique among existing files; an inode can be reused only after
///   the file is deleted and no handle (ours included) keeps it alive, which the fingerprint
///   detects.
/// * Elsewhere (Windows): `dev = 0` and `ino` = creation time in nanoseconds since the Unix
///   epoch. A rename keeps the creation time, so renamed files keep their identity; NTFS
///   "tunnelling" can give a file re-created under the same name within 15 s the old creation
///   time, which the fingerprint tells apart. Volume serial + file index (stable identity via
///   `GetFileInformationByHandle`) can replace this behind `cfg(windows)` without changing the
///   portable logic. Without a creation time `dev = 1` and `ino` hashes the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// Whether two existing files can share a [`FileKey`]; if so, matches are confirmed by content.
pub(crate) const KEY_MAY_COLLIDE: bool = !cfg!(unix);

impl FileKey {
    /// The key of the file described by `meta` (found at `path`).
    #[cfg(unix)]
    pub(crate) fn of(meta: &Metadata, _path: &Path) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The key of the file described by `meta` (found at `path`).
    #[cfg(not(unix))]
    pub(crate) fn of(meta: &Metadata, path: &Path) -> FileKey {
        let created = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        match created {
            Some(d) => FileKey {
                dev: 0,
                ino: u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            },
            None => FileKey {
                dev: 1,
                ino: fnv1a(path.to_string_lossy().as_bytes()),
            },
        }
    }
}

/// A hash of the first bytes of a file's content (after the header line for SEP ring logs,
/// whose header changes in place). `len < FP_BYTES` while the file is shorter; it grows as the
/// file does, and a file matches a fingerprint if its bytes `start..start + len` hash alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    pub start: u64,
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    /// Whether it covers [`FP_BYTES`] (then it no longer changes).
    pub(crate) fn complete(&self) -> bool {
        self.len as usize >= FP_BYTES
    }

    /// The fingerprint of a file whose first bytes are `head` (`head` is all of the file if it
    /// is shorter than [`HEAD_PROBE`]). `skip_header`: start after the first line.
    pub(crate) fn of_head(head: &[u8], skip_header: bool) -> Fingerprint {
        let start = if skip_header {
            match memchr(b'\n', head) {
                Some(i) => i + 1,
                // No header line yet (or none at all within the probe): cover nothing / from 0.
                None if head.len() < HEAD_PROBE => return Fingerprint::default(),
                None => 0,
            }
        } else {
            0
        };
        let body = &head[start..head.len().min(start + FP_BYTES)];
        Fingerprint {
            start: start as u64,
            len: body.len() as u32,
            hash: fnv1a(body),
        }
    }

    /// Whether a file with fingerprint `newer` (taken later) can be the file this one was taken
    /// from: same start and the first `self.len` bytes alike.
    pub(crate) fn consistent_with(&self, newer: &Fingerprint, head: &[u8]) -> bool {
        if self.len == 0 {
            return true;
        }
        if newer.start != self.start || newer.len < self.len {
            return false;
        }
        let from = self.start as usize;
        head.get(from..from + self.len as usize)
            .is_some_and(|b| fnv1a(b) == self.hash)
    }
}

/// 64-bit FNV-1a: stable across builds and platforms (it is persisted in checkpoints).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Reads at `offset` without moving a shared cursor (Unix), or via seek (elsewhere).
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::FileExt::seek_read(file, buf, offset)
    }
    #[cfg(not(any(unix, windows)))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read(buf)
    }
}

/// Reads `buf.len()` bytes at `offset`, fewer only at end of file. Returns the count.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_at(file, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The first bytes of a file (at most [`HEAD_PROBE`], fewer if the file is shorter).
pub(crate) fn read_head(file: &File, size: u64) -> io::Result<Vec<u8>> {
    let want = usize::try_from(size).unwrap_or(usize::MAX).min(HEAD_PROBE);
    let mut head = vec![0; want];
    let n = read_full_at(file, &mut head, 0)?;
    head.truncate(n);
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_grows_and_stays_consistent() {
        let short = Fingerprint::of_head(b"first line\n", false);
        let long_head = [b"first line\n".as_slice(), &[b'x'; 400]].concat();
        let long = Fingerprint::of_head(&long_head, false);
        assert!(long.complete() && !short.complete());
        assert!(short.consistent_with(&long, &long_head));
        let other = Fingerprint::of_head(b"other line\n", false);
        assert!(!short.consistent_with(&other, b"other line\n"));
        assert!(!long.consistent_with(&short, b"first line\n"));
    }

    #[test]
    fn sep_fingerprint_skips_the_header_line() {
        let a = Fingerprint::of_head(b"00000001\t00000005\r\nrecord", true);
        let b = Fingerprint::of_head(b"00000001\t00000006\r\nrecord and more", true);
        assert_eq!(a.start, 19);
        assert!(a.consistent_with(&b, b"00000001\t00000006\r\nrecord and more"));
        assert_eq!(
            Fingerprint::of_head(b"0000000", true),
            Fingerprint::default()
        );
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
