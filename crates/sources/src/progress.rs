//! A source's progress as its records' actions complete, kept when the process dies.
//!
//! The checkpoint file (written atomically with fsyncs, see `tail/checkpoint.rs`) survives
//! a power cut but costs milliseconds, so it is written once per `checkpoint_interval_ms`.
//! Between two of them a crash would repeat everything read since the last one. The
//! progress file closes that gap: after each batch of records whose actions all completed,
//! the same checkpoint document (a [`Mark`]) is written over the file's start with one
//! positioned write, without fsync. Such a write sits in the kernel's page cache the moment
//! the call returns, so a `kill -9` (or a panic, or an OOM kill) of the process does not
//! lose it; only a crash of the whole machine can, and then the checkpoint file is there.
//!
//! Layout: `WPPROG1\n`, the payload's length (u32 LE), its FNV-1a 64 hash (u64 LE), the
//! payload (the checkpoint JSON, which carries its sequence number). A record that does
//! not check out (a torn write at a power cut, an older build's garbage) is ignored. On
//! start the tailer reads both and takes the one with the higher sequence number.
//!
//! A memory-mapped record would save the system call, but needs `unsafe` code (mapping a
//! file another process may truncate); one `pwrite` of a few hundred bytes costs a few
//! microseconds, once per batch, after the batch's actions ran.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tail::identity::fnv1a;

const MAGIC: &[u8; 8] = b"WPPROG1\n";
const HEADER: usize = 8 + 4 + 8;
/// Larger payloads are not read back (a checkpoint of thousands of files is still far
/// below).
const MAX_PAYLOAD: usize = 64 << 20;

/// A snapshot of a source's committed positions: the checkpoint document and its sequence
/// number (later snapshots have higher numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Sequence number, increasing with every new snapshot of the source.
    pub seq: u64,
    /// The checkpoint document.
    pub bytes: Arc<[u8]>,
}

/// The progress file of a source: `<checkpoint>.progress`.
pub fn progress_path(checkpoint: &Path) -> PathBuf {
    let mut s = checkpoint.as_os_str().to_owned();
    s.push(".progress");
    PathBuf::from(s)
}

/// The open progress file; see the [module documentation](self).
#[derive(Debug)]
pub struct ProgressFile {
    file: File,
    path: PathBuf,
    written: u64,
    buf: Vec<u8>,
    failed: bool,
}

impl ProgressFile {
    /// Opens (creates) the progress file at `path`.
    pub fn open(path: &Path) -> io::Result<ProgressFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(ProgressFile {
            file,
            path: path.to_owned(),
            written: 0,
            buf: Vec::new(),
            failed: false,
        })
    }

    /// Writes `mark` over the file's start, unless a mark at least as new was written.
    /// A failure is logged once (the checkpoint file still bounds what a crash repeats).
    pub fn write(&mut self, mark: &Mark) {
        if mark.seq <= self.written {
            return;
        }
        self.buf.clear();
        self.buf.extend_from_slice(MAGIC);
        self.buf
            .extend_from_slice(&(mark.bytes.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&fnv1a(&mark.bytes).to_le_bytes());
        self.buf.extend_from_slice(&mark.bytes);
        match write_at(&self.file, &self.buf) {
            Ok(()) => {
                self.written = mark.seq;
                self.failed = false;
            }
            Err(e) => {
                if !self.failed {
                    tracing::warn!(path = %self.path.display(), error = %e, "writing the progress file");
                }
                self.failed = true;
            }
        }
    }
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, 0)
}

#[cfg(windows)]
fn write_at(file: &File, mut bytes: &[u8]) -> io::Result<()> {
    let mut at = 0u64;
    while !bytes.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, bytes, at)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
        at += n as u64;
    }
    Ok(())
}

/// The payload of the progress file at `path`, if it holds an intact record.
pub(crate) fn read(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let head = bytes.get(..HEADER)?;
    if &head[..8] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    let hash = u64::from_le_bytes(head[12..20].try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER + len)?;
    (fnv1a(payload) == hash).then(|| payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seq: u64, text: &str) -> Mark {
        Mark {
            seq,
            bytes: text.as_bytes().into(),
        }
    }

    #[test]
    fn newer_marks_overwrite_older_ones_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = progress_path(&dir.path().join("cp").join("src.json"));
        assert!(read(&path).is_none());
        let mut f = ProgressFile::open(&path).unwrap();
        f.write(&mark(1, "a longer first document"));
        assert_eq!(read(&path).unwrap(), b"a longer first document");
        f.write(&mark(2, "short"));
        assert_eq!(read(&path).unwrap(), b"short");
        // An older mark (completed later on another thread) does not go back.
        f.write(&mark(1, "old"));
        assert_eq!(read(&path).unwrap(), b"short");
        // A torn or damaged record is no record.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path).is_none());
        std::fs::write(&path, &bytes[..HEADER + 2]).unwrap();
        assert!(read(&path).is_none());
        std::fs::write(&path, b"WPPROG1\n\xff\xff\xff\xff").unwrap();
        assert!(read(&path).is_none());
    }
}
