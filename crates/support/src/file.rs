//! Durable atomic replacement of a file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How [`write_atomic_with`] writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtomicWrite {
    /// Unix permissions of the new file (set after creation, so the umask does not reduce
    /// them); ignored elsewhere. `None`: the process's defaults.
    pub mode: Option<u32>,
    /// Write through a temporary file of a name no other writer uses
    /// (`.<name>.<pid>.<n>.tmp`), for paths several threads may replace at once. The
    /// default writes through [`tmp_path`], which a reader may fall back to when the file
    /// itself is missing (the tailer's checkpoints do).
    pub unique_tmp: bool,
}

/// The temporary file [`write_atomic`] writes before renaming: `<path>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Replaces `path` with `bytes` durably: missing parent directories are created, the
/// bytes go to [`tmp_path`], which is synced and renamed over `path`, then (on Unix) the
/// directory is synced so the rename itself survives a power loss. One writer per path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, AtomicWrite::default())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// [`write_atomic`] with options. The temporary file is removed again when a step fails.
pub fn write_atomic_with(path: &Path, bytes: &[u8], opts: AtomicWrite) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = if opts.unique_tmp {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
    } else {
        tmp_path(path)
    };
    let result = write_then_rename(&tmp, path, bytes, opts);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir)
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8], opts: AtomicWrite) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).truncate(true);
    if opts.unique_tmp {
        options.create_new(true);
    } else {
        options.create(true);
    }
    #[cfg(unix)]
    if let Some(mode) = opts.mode {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    }
    let mut file = options.open(tmp)?;
    file.write_all(bytes)?;
    #[cfg(unix)]
    if let Some(mode) = opts.mode {
        // Again: the mode given to open() was reduced by the umask.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)
}

/// Syncs a directory so a rename in it is on disk (Unix; Windows has no directory handle
/// to sync and commits the rename's metadata with the file system's journal).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn unique_temporary_files_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flag");
        let opts = AtomicWrite {
            mode: Some(0o640),
            unique_tmp: true,
        };
        write_atomic_with(&path, b"x", opts).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["flag"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
        }
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails.
        let path = dir.path().join("d");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("x"), b"").unwrap();
        assert!(write_atomic(&path, b"x").is_err());
        assert!(!tmp_path(&path).exists());
    }
}
