//! Finding files: matching paths to followed files by identity, opening new ones at the right
//! position, noticing files that left their path, and expiring old checkpoint entries.

use std::collections::hash_map::Entry::Vacant;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::file::Followed;
use super::identity::{FileKey, Fingerprint, open_shared, read_head};
use super::{Dormant, StartAt, Tailer};

/// A file that keeps failing is logged again after this long.
const REWARN: Duration = Duration::from_secs(600);

impl Tailer {
    /// Refreshes the watches, then matches every path the patterns find against the followed
    /// files; opens new ones; marks followed files no longer found as rotated away.
    /// `initial`: the scan at open, which also resumes checkpointed files that were rotated
    /// out of the patterns while watchpost was down. `moved`: where files renamed out of the
    /// patterns went (from notifications).
    pub(super) fn rescan(&mut self, now: Instant, initial: bool, moved: &[PathBuf]) {
        self.stats.errors += self.watches.refresh(&self.patterns).errors;
        let paths = self.patterns.expand();
        self.failing.retain(|p, _| paths.contains(p));
        let known = self.files.len();
        let mut found = vec![false; known];
        let mut seen: HashSet<FileKey> = HashSet::new();
        for path in paths {
            let key = match FileKey::of_path(&path) {
                Ok((key, m)) if m.is_file() => key,
                Ok(_) => continue,
                Err(e) => {
                    self.note_failure(&path, &e, now);
                    continue;
                }
            };
            seen.insert(key);
            if let Some(i) = self.find_followed(key, &path) {
                if i < known {
                    found[i] = true;
                }
                let f = &mut self.files[i];
                f.matched = true;
                if f.path != path {
                    tracing::debug!(from = %f.path.display(), to = %path.display(), "tail: file renamed");
                    f.path = path;
                }
                continue;
            }
            if let Some(key) = self.open_file(path, now) {
                seen.insert(key);
            }
        }
        let placed = self.adopt_moved(moved, now);
        let mut left = Vec::new();
        for (f, _) in self
            .files
            .iter_mut()
            .zip(&found)
            .filter(|(_, found)| !**found)
        {
            if f.matched {
                f.matched = false;
                self.stats.rotations += 1;
                tracing::info!(path = %f.path.display(), "tail: file rotated away or deleted; reading it to its end");
                if !placed.contains(&f.key) {
                    left.push(f.key);
                }
            }
        }
        if !left.is_empty() {
            self.relocate(&left);
        }
        if initial {
            self.resume_unmatched(&seen, now);
        }
        self.expire(&seen, now);
        self.apply_start_at = false;
        self.publish_paths();
    }

    /// The followed file that `path` (with `key`) is, if any.
    fn find_followed(&self, key: FileKey, path: &Path) -> Option<usize> {
        let binary = self.is_binary();
        self.files
            .iter()
            .position(|f| f.key == key && (!key.may_collide() || f.content_at(path, binary)))
    }

    fn is_binary(&self) -> bool {
        matches!(self.cut, super::Cut::Binary(_))
    }

    /// Opens a newly found file and decides where to start. Returns its key if it is (now)
    /// followed.
    fn open_file(&mut self, path: PathBuf, now: Instant) -> Option<FileKey> {
        if self.files.len() >= self.max_open {
            if !self.cap_warned {
                tracing::warn!(max = self.max_open, path = %path.display(), "tail: too many open files; further files wait");
                self.cap_warned = true;
            }
            // Known from now on (no rescan per change of it); retried on later scans.
            if let Vacant(slot) = self.failing.entry(path) {
                slot.insert(now);
                self.stats.files_deferred += 1;
            }
            return None;
        }
        let opened = open_shared(&path).and_then(|file| {
            let meta = file.metadata()?;
            let head = read_head(&file, meta.len())?;
            Ok((file, meta, head))
        });
        let (file, meta, head) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.note_failure(&path, &e, now);
                return None;
            }
        };
        if !meta.is_file() {
            return None;
        }
        // The path may have been replaced between the scan's stat and this open.
        let key = FileKey::of_file(&file, &meta, &path);
        if self.find_followed(key, &path).is_some() {
            return Some(key);
        }
        let fp = Fingerprint::of_head(&head, self.is_binary());
        let resumed = self.take_dormant(key, &fp, &head);
        let start = match resumed {
            Some(pos) if pos > meta.len() => {
                tracing::info!(path = %path.display(), "tail: file shorter than its checkpoint; reading it from the start");
                self.stats.truncations += 1;
                0
            }
            Some(pos) => pos,
            None => 0,
        };
        let mut f = Followed::new(key, path, file, &head, start, self.cut, now);
        let at_end = resumed.is_none() && self.apply_start_at && self.start_at == StartAt::End;
        if at_end && let Err(e) = f.seek_end(self.cut) {
            self.note_failure(&f.path, &e, now);
            return None;
        }
        tracing::info!(path = %f.path.display(), offset = f.pos, "tail: following file");
        self.failing.remove(&f.path);
        self.files.push(f);
        Some(key)
    }

    /// Takes the checkpoint entry for the file with `key` whose content is `head`: its
    /// position. Entries with the same key but other content (inode reuse) are dropped where
    /// keys are unique among existing files.
    fn take_dormant(&mut self, key: FileKey, fp: &Fingerprint, head: &[u8]) -> Option<u64> {
        let i = self
            .dormant
            .iter()
            .position(|d| d.entry.key == key && d.entry.fp.consistent_with(fp, head));
        let pos = i.map(|i| self.dormant.swap_remove(i).entry.pos);
        if !key.may_collide() {
            self.dormant.retain(|d| d.entry.key != key);
        }
        pos
    }

    /// Files renamed out of the patterns (paths from notifications): followed files learn
    /// their new path; files never opened (created and renamed between two scans) are opened
    /// and read from their start. Returns the keys placed.
    fn adopt_moved(&mut self, moved: &[PathBuf], now: Instant) -> Vec<FileKey> {
        let mut placed = Vec::new();
        for path in moved {
            let Ok((key, meta)) = FileKey::of_path(path) else {
                continue;
            };
            if !meta.is_file() || self.patterns.matches(path) {
                continue;
            }
            if let Some(i) = self.find_followed(key, path) {
                self.files[i].path = path.clone();
                placed.push(key);
            } else if let Some(key) = self.open_file(path.clone(), now) {
                if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
                    f.matched = false;
                    self.stats.rotations += 1;
                }
                placed.push(key);
            }
        }
        placed
    }

    /// Looks up the new paths of followed files that left their path (renamed within their
    /// directory), so checkpoints and notifications name them correctly.
    fn relocate(&mut self, keys: &[FileKey]) {
        let mut dirs: HashMap<PathBuf, HashSet<FileKey>> = HashMap::new();
        for f in self.files.iter().filter(|f| keys.contains(&f.key)) {
            if let Some(dir) = f.path.parent() {
                dirs.entry(dir.to_path_buf()).or_default().insert(f.key);
            }
        }
        for (dir, wanted) in dirs {
            for (key, path) in find_in_dir(&dir, &wanted) {
                if let Some(f) = self.files.iter_mut().find(|f| f.key == key && !f.matched) {
                    tracing::debug!(from = %f.path.display(), to = %path.display(), "tail: rotated file found");
                    f.path = path;
                }
            }
        }
    }

    /// After a restart: checkpointed files the patterns no longer find are looked for by
    /// identity in the directory they were last seen in, and read to their end from their
    /// checkpoint.
    fn resume_unmatched(&mut self, seen: &HashSet<FileKey>, now: Instant) {
        let mut dirs: HashMap<PathBuf, HashSet<FileKey>> = HashMap::new();
        for d in self.dormant.iter().filter(|d| !seen.contains(&d.entry.key)) {
            if let Some(dir) = Path::new(&d.entry.path).parent() {
                dirs.entry(dir.to_path_buf())
                    .or_default()
                    .insert(d.entry.key);
            }
        }
        for (dir, wanted) in dirs {
            for (key, path) in find_in_dir(&dir, &wanted) {
                if self.files.len() >= self.max_open {
                    return;
                }
                let Ok(file) = open_shared(&path) else {
                    continue;
                };
                let Ok(head) = file.metadata().and_then(|m| read_head(&file, m.len())) else {
                    continue;
                };
                let fp = Fingerprint::of_head(&head, self.is_binary());
                let Some(pos) = self.take_dormant(key, &fp, &head) else {
                    continue;
                };
                let mut f = Followed::new(key, path, file, &head, pos, self.cut, now);
                f.matched = false;
                tracing::info!(path = %f.path.display(), offset = pos, "tail: reading file rotated while stopped to its end");
                self.files.push(f);
            }
        }
    }

    /// Forgets checkpoint entries whose files have not been found for `forget_after`.
    fn expire(&mut self, seen: &HashSet<FileKey>, now: Instant) {
        let forget = self.forget_after;
        self.dormant.retain_mut(|d: &mut Dormant| {
            if seen.contains(&d.entry.key) {
                d.missing_since = None;
                return true;
            }
            let since = *d.missing_since.get_or_insert(now);
            now.duration_since(since) < forget
        });
    }

    /// Logs and counts a file that cannot be read (rate-limited per path); vanished files are
    /// not errors.
    pub(super) fn note_failure(&mut self, path: &Path, e: &io::Error, now: Instant) {
        if e.kind() == io::ErrorKind::NotFound {
            return;
        }
        let due = self
            .failing
            .get(path)
            .is_none_or(|t| now.duration_since(*t) >= REWARN);
        if due {
            tracing::warn!(path = %path.display(), error = %e, "tail: cannot read file; will retry");
            self.stats.errors += 1;
            self.failing.insert(path.to_path_buf(), now);
        }
    }

    /// After the directories the tailer's own wait watches changed: notify stops watching
    /// those it now covers and watches again those it no longer does. Changes in a
    /// directory between the end of one watch and the start of the other are not reported:
    /// rescan then.
    pub(super) fn hand_over_watches(&mut self) {
        let r = self.watches.refresh(&self.patterns);
        self.stats.errors += r.errors;
        if r.added {
            self.shared.mark_rescan();
        }
    }

    /// Tells the notification filter which paths are followed.
    pub(super) fn publish_paths(&mut self) {
        let followed: std::collections::HashSet<PathBuf> =
            self.files.iter().map(|f| f.path.clone()).collect();
        let handed = (self.direct.as_mut()).is_some_and(|d| d.sync(&followed, &self.shared));
        self.shared.set_followed(followed);
        if handed {
            self.hand_over_watches();
        }
    }
}

/// Files in `dir` (not recursing) whose key is in `wanted`.
fn find_in_dir(dir: &Path, wanted: &HashSet<FileKey>) -> Vec<(FileKey, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok((key, meta)) = FileKey::of_path(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if wanted.contains(&key) {
            out.push((key, path));
        }
    }
    out
}
