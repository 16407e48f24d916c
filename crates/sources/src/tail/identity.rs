//! File identity: a platform key plus a content fingerprint, and positioned reads.

use std::fs::{File, Metadata, OpenOptions};
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
/// * Windows: `(volume serial number, file index)` from `GetFileInformationByHandle` on an
///   open handle (through `winapi-util`, a safe wrapper already in the dependency tree via
///   `notify`; this workspace denies `unsafe_code`). On NTFS the file index is the MFT
///   record number with its sequence number: kept by renames within the volume, unique
///   among existing files, and not reused while a handle (ours) keeps the file alive, so it
///   works like an inode. On ReFS file ids are 128-bit and the 64-bit index is not
///   guaranteed unique (`FileIdInfo` would be; SEP logs live on the NTFS system volume); on
///   FAT the index comes from the directory entry and a rename can change it, so a file
///   rotated by rename there may be taken for a new one. Should the call fail, `dev` is
///   [`NO_DEV`] and `ino` hashes the path; such keys are confirmed by content
///   ([`FileKey::may_collide`]). Keys in checkpoints written by older Windows builds
///   (creation times) match no file any more: those files are read again from the start.
/// * Elsewhere: `dev = 0` and `ino` = creation time in nanoseconds since the Unix epoch
///   (kept by renames; matches confirmed by content); without a creation time `dev` is
///   [`NO_DEV`] and `ino` hashes the path.
///
/// A checkpoint entry is taken up again only if the file's fingerprint agrees with it, on
/// every platform (a key may have been reused while watchpost was down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// `dev` of a key made from the path because the platform gave no identity.
pub(crate) const NO_DEV: u64 = u64::MAX;

/// Windows `FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE`: our handles never stop
/// the writer (SEP) from writing, renaming or deleting a followed file.
#[cfg(windows)]
const SHARE_ALL: u32 = 0x1 | 0x2 | 0x4;
/// Windows `FILE_FLAG_BACKUP_SEMANTICS`: lets `CreateFileW` open directories too.
#[cfg(windows)]
const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;

/// Opens a file for reading without getting in the writer's way: on Windows with share mode
/// read | write | delete, so the writer can still append to, rename and delete it.
pub(crate) fn open_shared(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        o.share_mode(SHARE_ALL);
    }
    o.open(path)
}

impl FileKey {
    /// The key of the open file `file` (found at `path`, with metadata `meta`).
    #[cfg(unix)]
    pub(crate) fn of_file(_file: &File, meta: &Metadata, _path: &Path) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The key of the open file `file` (found at `path`, with metadata `meta`).
    #[cfg(windows)]
    pub(crate) fn of_file(file: &File, _meta: &Metadata, path: &Path) -> FileKey {
        match winapi_util::file::information(file) {
            Ok(info) => FileKey {
                dev: info.volume_serial_number(),
                ino: info.file_index(),
            },
            Err(_) => FileKey::of_path_name(path),
        }
    }

    /// The key of the open file `file` (found at `path`, with metadata `meta`).
    #[cfg(not(any(unix, windows)))]
    pub(crate) fn of_file(_file: &File, meta: &Metadata, path: &Path) -> FileKey {
        let created = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        match created {
            Some(d) => FileKey {
                dev: 0,
                ino: u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            },
            None => FileKey::of_path_name(path),
        }
    }

    /// The key and metadata of the file or directory at `path` (symbolic links followed).
    #[cfg(unix)]
    pub(crate) fn of_path(path: &Path) -> io::Result<(FileKey, Metadata)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok((key, meta))
    }

    /// The key and metadata of the file or directory at `path` (symbolic links followed).
    /// Opens a handle without data access (as `std::fs::metadata` does), sharing everything.
    #[cfg(not(unix))]
    pub(crate) fn of_path(path: &Path) -> io::Result<(FileKey, Metadata)> {
        let mut o = OpenOptions::new();
        #[cfg(windows)]
        {
            use std::os::windows::fs::OpenOptionsExt;
            o.access_mode(0)
                .share_mode(SHARE_ALL)
                .custom_flags(FILE_FLAG_BACKUP_SEMANTICS);
        }
        #[cfg(not(windows))]
        o.read(true);
        let file = o.open(path)?;
        let meta = file.metadata()?;
        Ok((FileKey::of_file(&file, &meta, path), meta))
    }

    /// A key from the path alone, for when the platform gives no identity.
    #[cfg(not(unix))]
    fn of_path_name(path: &Path) -> FileKey {
        FileKey {
            dev: NO_DEV,
            ino: fnv1a(path.to_string_lossy().as_bytes()),
        }
    }

    /// Whether another file existing now can have this key, so that a followed file found
    /// under it must be confirmed by content: never for inodes or Windows file indexes
    /// (unique among existing files; a followed file keeps its own alive through our handle),
    /// always for creation times and path hashes.
    pub(crate) fn may_collide(&self) -> bool {
        if cfg!(unix) {
            false
        } else if cfg!(windows) {
            self.dev == NO_DEV
        } else {
            true
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

    /// The key survives appends and renames, tells a new file at the same path apart, and
    /// our open handle lets the writer rename and delete the file.
    #[test]
    fn key_follows_the_file_not_the_path() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\r\n").unwrap();
        let followed = open_shared(&path).unwrap();
        let meta = followed.metadata().unwrap();
        let key = FileKey::of_file(&followed, &meta, &path);
        assert!(!key.may_collide(), "{key:?}");
        assert_eq!(FileKey::of_path(&path).unwrap().0, key);
        let mut w = OpenOptions::new().append(true).open(&path).unwrap();
        w.write_all(b"two\r\n").unwrap();
        assert_eq!(FileKey::of_path(&path).unwrap().0, key, "after an append");
        let moved = dir.path().join("a.log.1");
        std::fs::rename(&path, &moved).unwrap();
        w.write_all(b"late\r\n").unwrap();
        drop(w);
        assert_eq!(FileKey::of_path(&moved).unwrap().0, key, "after a rename");
        std::fs::write(&path, b"new\r\n").unwrap();
        let (other, _) = FileKey::of_path(&path).unwrap();
        assert_ne!(other, key, "a new file at the old path");
        std::fs::remove_file(&moved).unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut &followed, &mut rest).unwrap();
        assert_eq!(
            rest, b"one\r\ntwo\r\nlate\r\n",
            "read through the handle after the delete"
        );
        let (dir_key, dir_meta) = FileKey::of_path(dir.path()).unwrap();
        assert!(dir_meta.is_dir());
        assert_ne!(dir_key, key);
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
