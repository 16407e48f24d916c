//! The `jsonl_file` action: append each event as one line to a file, rotating by size.
//!
//! The line is the event's JSON (as the `flag_file` and syslog `json` actions write it:
//! metadata, fields, `raw`, plus `filter` and `actions`) or a configured template. Each
//! line reaches the file through one `write_all` (never split between writes), the file is
//! flushed after every batch of queued jobs, and it is rotated before a line would take it
//! past `rotate_bytes` (`file` → `file.1` … `file.<keep>`).
//!
//! The path is not a template: one file per action keeps its size (and so the rotation)
//! exact with one open handle, and event data cannot choose where watchpost writes.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Receiver;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::{Tpl, bounded, deserialize};
use crate::syslog::event_json;

/// Default size at which the file is rotated: 100 MiB.
const DEFAULT_ROTATE_BYTES: u64 = 100 << 20;
/// Jobs written between two flushes at most.
const MAX_BATCH: usize = 512;
/// The write buffer: bigger than most lines, so a batch costs few system calls.
const BUFFER_BYTES: usize = 64 << 10;

/// A size: a number of bytes or a string with a unit (`"100MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonlFile {
    path: Spanned<String>,
    format: Option<Spanned<String>>,
    rotate_bytes: Option<Spanned<Size>>,
    keep: Option<Spanned<u64>>,
}

/// A validated `jsonl_file` action.
#[derive(Debug, Clone)]
pub(crate) struct JsonlFileSpec {
    path: PathBuf,
    path_span: std::ops::Range<usize>,
    /// `None`: the event as JSON.
    format: Option<Tpl>,
    rotate_bytes: u64,
    keep: u32,
}

/// Why a line could not be written.
#[derive(Debug, Error)]
pub(crate) enum JsonlError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot rotate {path}: {source}")]
    Rotate { path: PathBuf, source: io::Error },
}

impl JsonlFileSpec {
    pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<JsonlFileSpec, Vec<ConfigError>> {
        let raw: RawJsonlFile = deserialize(table)?;
        let mut errors = Vec::new();
        let p = raw.path.get_ref();
        if p.trim().is_empty() {
            errors.push(ConfigError::new(raw.path.span(), "`path` is empty"));
        } else if p.contains("{{") {
            errors.push(ConfigError::new(
                raw.path.span(),
                "`path` of a jsonl_file action is not a template: one file per action keeps \
                 its rotation exact, and event data must not choose where watchpost writes \
                 (use `flag_file` for a file per value)",
            ));
        } else if p.ends_with(['/', '\\']) || Path::new(p).file_name().is_none() {
            errors.push(ConfigError::new(raw.path.span(), "`path` names no file"));
        }
        let format = raw.format.as_ref().and_then(|f| Tpl::parse(f, &mut errors));
        let rotate_bytes = match raw.rotate_bytes.as_ref() {
            None => DEFAULT_ROTATE_BYTES,
            Some(s) => {
                let n = match s.get_ref() {
                    Size::Bytes(n) => Ok(*n),
                    Size::Text(t) => watchpost_event::parse_size(t),
                };
                match n {
                    Ok(n) if (1024..=1 << 50).contains(&n) => n,
                    Ok(_) => {
                        errors.push(ConfigError::new(
                            s.span(),
                            "`rotate_bytes` must be at least 1024 (1KiB) and at most 1PiB",
                        ));
                        DEFAULT_ROTATE_BYTES
                    }
                    Err(e) => {
                        errors.push(ConfigError::new(s.span(), e));
                        DEFAULT_ROTATE_BYTES
                    }
                }
            }
        };
        let keep = bounded(raw.keep.as_ref(), 5, 0..=1000, "keep", &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(JsonlFileSpec {
            path: PathBuf::from(raw.path.get_ref()),
            path_span: raw.path.span(),
            format,
            rotate_bytes,
            keep: keep as u32,
        })
    }

    pub(crate) fn path(&self) -> (&Path, std::ops::Range<usize>) {
        (&self.path, self.path_span.clone())
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        self.format.iter()
    }

    /// The file must not be a directory, and its directory (or, when that does not exist
    /// yet, its nearest existing ancestor, where it will be created) must take a new file:
    /// a probe file is created there and removed.
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let err = |m: String| vec![ConfigError::new(self.path_span.clone(), m)];
        if self.path.is_dir() {
            return err(format!("`{}` is a directory", self.path.display()));
        }
        let dir = parent_dir(&self.path);
        let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
            return err(format!("no part of `{}` exists", dir.display()));
        };
        if !existing.is_dir() {
            return err(format!(
                "cannot create `{}`: `{}` is not a directory",
                dir.display(),
                existing.display()
            ));
        }
        match probe_writable(existing) {
            Ok(()) => Vec::new(),
            Err(e) => err(format!(
                "`{}` is not writable for watchpost: {e}",
                existing.display()
            )),
        }
    }

    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        let mut out = Output {
            spec: self,
            file: None,
            size: 0,
            line: String::new(),
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut buffered: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            out.notice_moved_away();
            let fail = |job: &Job, e: &str| {
                ctl.report(name, job, 1, Err(e));
                counters.failed_and_warn(name, e.to_owned());
            };
            for job in batch.drain(..) {
                if ctl.past_deadline() {
                    counters.dropped(1);
                    continue;
                }
                match out.append(&job) {
                    Ok(()) => buffered.push(job),
                    Err(e) => {
                        // The buffer was thrown away with the file: its lines failed too.
                        let e = e.to_string();
                        for b in buffered.drain(..) {
                            fail(&b, &e);
                        }
                        fail(&job, &e);
                    }
                }
            }
            match out.flush() {
                Ok(()) => {
                    for job in buffered.drain(..) {
                        counters.ok();
                        ctl.report(name, &job, 1, Ok(()));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    for b in buffered.drain(..) {
                        fail(&b, &e);
                    }
                }
            }
        }
    }
}

/// The open file of a worker and the bytes it holds.
struct Output<'a> {
    spec: &'a JsonlFileSpec,
    file: Option<BufWriter<File>>,
    /// The file's size including what is buffered.
    size: u64,
    line: String,
}

impl Output<'_> {
    /// Renders `job` and buffers it as one line, opening or rotating the file first when
    /// needed. On an error the file is closed (and reopened for the next job) and what was
    /// buffered is lost.
    fn append(&mut self, job: &Job) -> Result<(), JsonlError> {
        let scope = job.scope();
        self.line.clear();
        match &self.spec.format {
            Some(t) => {
                self.line.push_str(&t.template.render(&scope));
                // One event, one line: line breaks from event values become spaces.
                if self.line.contains(['\n', '\r']) {
                    self.line = self.line.replace(['\n', '\r'], " ");
                }
            }
            None => self.line.push_str(&event_json(&scope)),
        }
        self.line.push('\n');
        let len = self.line.len() as u64;
        let path = &self.spec.path;
        if self.file.is_some() && self.size > 0 && self.size + len > self.spec.rotate_bytes {
            let flushed = self.flush();
            self.file = None;
            flushed?;
            rotate(path, self.spec.keep).map_err(|source| JsonlError::Rotate {
                path: path.clone(),
                source,
            })?;
        }
        if self.file.is_none() {
            self.reopen()?;
            // A file that is already full (left by an earlier run) is rotated first.
            if self.size > 0 && self.size + len > self.spec.rotate_bytes {
                self.file = None;
                rotate(path, self.spec.keep).map_err(|source| JsonlError::Rotate {
                    path: path.clone(),
                    source,
                })?;
                self.reopen()?;
            }
        }
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened above")
        };
        match file.write_all(self.line.as_bytes()) {
            Ok(()) => {
                self.size += len;
                Ok(())
            }
            Err(source) => {
                self.discard();
                Err(JsonlError::Write {
                    path: path.clone(),
                    source,
                })
            }
        }
    }

    fn reopen(&mut self) -> Result<(), JsonlError> {
        let (file, size) = open(&self.spec.path).map_err(|source| JsonlError::Open {
            path: self.spec.path.clone(),
            source,
        })?;
        self.file = Some(BufWriter::with_capacity(BUFFER_BYTES, file));
        self.size = size;
        Ok(())
    }

    /// Hands the buffered lines to the operating system.
    fn flush(&mut self) -> Result<(), JsonlError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.flush().map_err(|source| {
            self.discard();
            JsonlError::Write {
                path: self.spec.path.clone(),
                source,
            }
        })
    }

    /// Closes the file without writing what is buffered.
    fn discard(&mut self) {
        if let Some(w) = self.file.take() {
            let _ = w.into_parts();
        }
    }

    /// When something else moved or deleted the file, the next line creates it again.
    fn notice_moved_away(&mut self) {
        if self.file.is_some() && !self.spec.path.exists() {
            let _ = self.flush();
            self.file = None;
        }
    }
}

/// The directory a file goes in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Opens `path` for appending (creating it and its directory); returns it and its size.
fn open(path: &Path) -> io::Result<(File, u64)> {
    std::fs::create_dir_all(parent_dir(path))?;
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// `path` with `.n` appended.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// `file.<keep>` is deleted, `file.<n>` becomes `file.<n+1>`, `file` becomes `file.1`;
/// with `keep = 0` the file is just deleted.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let ignore_missing = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    if keep == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    ignore_missing(std::fs::remove_file(numbered(path, keep)))?;
    for n in (1..keep).rev() {
        ignore_missing(std::fs::rename(numbered(path, n), numbered(path, n + 1)))?;
    }
    ignore_missing(std::fs::rename(path, numbered(path, 1)))
}

static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates and removes a file in `dir`.
fn probe_writable(dir: &Path) -> io::Result<()> {
    let n = PROBE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let probe = dir.join(format!(".watchpost-probe.{}.{n}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

impl crate::kind::ActionKind for JsonlFileSpec {
    fn kind(&self) -> &'static str {
        "jsonl_file"
    }

    fn queue_capacity(&self) -> (u64, std::ops::RangeInclusive<u64>) {
        (10_000, 1..=1_000_000)
    }

    fn appends_to(&self) -> Option<(&Path, std::ops::Range<usize>)> {
        Some(self.path())
    }

    fn templates(&self) -> Vec<&Tpl> {
        JsonlFileSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        JsonlFileSpec::check(self)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        JsonlFileSpec::work(self, name, rx, counters, ctl);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;

    fn table(extra: &str) -> String {
        format!("[[action]]\nname = \"j\"\ntype = \"jsonl_file\"\n{extra}")
    }

    #[test]
    fn config_errors_have_places() {
        let text = table(
            "path = \"/tmp/{{ host }}.jsonl\"\nrotate_bytes = \"12 parsecs\"\nkeep = 5000\nformat = \"{{ x\"\n",
        );
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(at(&text, &errs[0].span), "\"/tmp/{{ host }}.jsonl\"");
        assert!(errs[0].message.contains("not a template"), "{errs:?}");
        assert_eq!(errs[1].span.start, text.find("{{ x").unwrap());
        assert_eq!(at(&text, &errs[2].span), "\"12 parsecs\"");
        assert_eq!(at(&text, &errs[3].span), "5000");
        let text = table("path = \"/tmp/x.jsonl\"\nrotate_bytes = 10\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "10");
        let text = table("path = \"/tmp/dir/\"\n");
        assert!(parse_one(&text).unwrap_err()[0].message.contains("no file"));
    }

    #[test]
    fn sizes_and_defaults() {
        let spec = |extra: &str| {
            parse_ok(&table(extra))
                .kind_as::<JsonlFileSpec>()
                .expect("a jsonl_file action")
                .clone()
        };
        let d = spec("path = \"/tmp/x.jsonl\"\n");
        assert_eq!((d.rotate_bytes, d.keep), (100 << 20, 5));
        let s = spec("path = \"/tmp/x.jsonl\"\nrotate_bytes = \"1MiB\"\nkeep = 0\n");
        assert_eq!((s.rotate_bytes, s.keep), (1 << 20, 0));
    }

    #[test]
    fn check_looks_at_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let ok = table(&format!(
            "path = '{}/new/sub/out.jsonl'\n",
            dir.path().display()
        ));
        assert!(parse_ok(&ok).check().is_empty());
        let bad = table(&format!("path = '{}/sub/out.jsonl'\n", file.display()));
        let errs = parse_ok(&bad).check();
        assert!(errs[0].message.contains("not a directory"), "{errs:?}");
        let bad = table(&format!("path = '{}'\n", dir.path().display()));
        assert!(parse_ok(&bad).check()[0].message.contains("is a directory"));
        // No probe file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn rotation_shifts_and_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        for round in 0..4 {
            std::fs::write(&path, format!("{round}\n")).unwrap();
            rotate(&path, 2).unwrap();
        }
        let read = |n| std::fs::read_to_string(numbered(&path, n)).ok();
        assert_eq!(
            (read(1), read(2), read(3)),
            (Some("3\n".into()), Some("2\n".into()), None)
        );
        assert!(!path.exists());
    }
}
