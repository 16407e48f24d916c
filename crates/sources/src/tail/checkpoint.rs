//! The checkpoint file: versioned JSON written atomically (tmp + fsync + rename).

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::identity::{FileKey, Fingerprint};

/// Current format version.
const VERSION: u32 = 1;

/// One followed (or recently followed) file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Platform identity.
    #[serde(flatten)]
    pub key: FileKey,
    /// Content fingerprint (detects inode reuse and rewrites).
    pub fp: Fingerprint,
    /// Offset of the first byte not yet delivered (a record boundary).
    pub pos: u64,
    /// Where the file was last seen (lossy UTF-8; used to find rotated files after a restart).
    pub path: String,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    version: u32,
    /// Increases with every snapshot; of the checkpoint and the progress file the one
    /// with the higher number is the newer (older files have none: 0).
    #[serde(default)]
    seq: u64,
    files: Vec<Entry>,
}

/// What [`load`] found.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// Entries from the main file or, if that was missing or unreadable, from the tmp file
    /// (or from the progress file, when that is newer).
    Found {
        entries: Vec<Entry>,
        from_tmp: bool,
        seq: u64,
    },
    /// Neither file exists: the first start.
    Missing,
    /// Files exist but none could be read; the messages say why.
    Unreadable(Vec<String>),
}

pub(crate) use watchpost_support::{tmp_path, write_atomic};

/// Reads the checkpoint at `path`, falling back to its tmp file; a newer intact progress
/// file (see `progress.rs`) wins over both.
pub(crate) fn load(path: &Path) -> Loaded {
    let loaded = load_checkpoint(path);
    let Some(progress) = crate::progress::read(&crate::progress::progress_path(path))
        .and_then(|bytes| parse(&bytes).ok())
    else {
        return loaded;
    };
    match loaded {
        Loaded::Found { seq, .. } if seq >= progress.0 => loaded,
        _ => Loaded::Found {
            entries: progress.1,
            from_tmp: false,
            seq: progress.0,
        },
    }
}

fn load_checkpoint(path: &Path) -> Loaded {
    let mut problems = Vec::new();
    let mut any_exists = false;
    for (candidate, from_tmp) in [(path.to_path_buf(), false), (tmp_path(path), true)] {
        match fs::read(&candidate) {
            Ok(bytes) => {
                any_exists = true;
                match parse(&bytes) {
                    Ok((seq, entries)) => {
                        return Loaded::Found {
                            entries,
                            from_tmp,
                            seq,
                        };
                    }
                    Err(msg) => problems.push(format!("{}: {msg}", candidate.display())),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                any_exists = true;
                problems.push(format!("{}: {e}", candidate.display()));
            }
        }
    }
    if any_exists {
        Loaded::Unreadable(problems)
    } else {
        Loaded::Missing
    }
}

fn parse(bytes: &[u8]) -> Result<(u64, Vec<Entry>), String> {
    check_version(bytes, VERSION)?;
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok((doc.seq, doc.files))
}

/// Checks the `version` field of a checkpoint document (shared by every checkpoint file:
/// tailer, journal cursor, EVTX positions).
pub(crate) fn check_version(bytes: &[u8], expected: u32) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if v.version != expected {
        return Err(format!(
            "unsupported checkpoint version {} (this build reads {expected})",
            v.version
        ));
    }
    Ok(())
}

/// The checkpoint document of `entries` with sequence number `seq`.
pub(crate) fn encode(seq: u64, entries: &[Entry]) -> io::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct DocRef<'a> {
        version: u32,
        seq: u64,
        files: &'a [Entry],
    }
    let doc = DocRef {
        version: VERSION,
        seq,
        files: entries,
    };
    serde_json::to_vec(&doc).map_err(io::Error::other)
}

/// Writes `entries` to `path` atomically (see [`write_atomic`]).
pub(crate) fn save(path: &Path, seq: u64, entries: &[Entry]) -> io::Result<()> {
    write_atomic(path, &encode(seq, entries)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Mark, ProgressFile, progress_path};

    #[test]
    fn the_newer_of_checkpoint_and_progress_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.json");
        let found = |l: Loaded| match l {
            Loaded::Found { entries, seq, .. } => (seq, entries[0].pos),
            other => panic!("{other:?}"),
        };
        save(&path, 5, &[entry(50)]).unwrap();
        let mut progress = ProgressFile::open(&progress_path(&path)).unwrap();
        // Written after the checkpoint: the process died before the next checkpoint.
        progress.write(&Mark {
            seq: 6,
            bytes: encode(6, &[entry(60)]).unwrap().into(),
        });
        assert_eq!(found(load(&path)), (6, 60));
        // A later checkpoint (a clean stop) is newer than the progress file.
        save(&path, 7, &[entry(70)]).unwrap();
        assert_eq!(found(load(&path)), (7, 70));
        // A progress file alone (the checkpoint lost) still counts.
        fs::remove_file(&path).unwrap();
        assert_eq!(found(load(&path)), (6, 60));
    }

    fn entry(pos: u64) -> Entry {
        Entry {
            key: FileKey { dev: 1, ino: 2 },
            fp: Fingerprint {
                start: 0,
                len: 3,
                hash: 4,
            },
            pos,
            path: "/x/a.log".into(),
        }
    }

    #[test]
    fn round_trip_and_tmp_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp").join("src.json");
        assert!(matches!(load(&path), Loaded::Missing));
        save(&path, 3, &[entry(7)]).unwrap();
        assert!(!tmp_path(&path).exists());
        match load(&path) {
            Loaded::Found {
                entries,
                from_tmp,
                seq,
            } => {
                assert_eq!(entries, vec![entry(7)]);
                assert!(!from_tmp);
                assert_eq!(seq, 3);
            }
            other => panic!("{other:?}"),
        }
        fs::rename(&path, tmp_path(&path)).unwrap();
        fs::write(&path, b"{\"version\":1,\"fil").unwrap();
        assert!(matches!(load(&path), Loaded::Found { from_tmp: true, .. }));
        fs::write(tmp_path(&path), b"{\"version\":99,\"files\":[]}").unwrap();
        match load(&path) {
            Loaded::Unreadable(p) => {
                assert!(p[1].contains("unsupported checkpoint version 99"), "{p:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}
