//! Finding rule files, reading them, and the compiled-rule cache file.
//!
//! Reading, parsing and compiling thousands of rules is most of what a hunt's start
//! costs, so what loading needs of every file is kept in one cache file, keyed by the
//! SHA-256 of the file's bytes (`cached.rs` says what an entry holds): a file whose bytes
//! changed (or a new one) is parsed and compiled again, the rest come from the cache,
//! and the cache is rewritten when anything changed. Its first line names the format
//! and the *context* the entries are valid in (the build of this crate and the
//! placeholder values, `Ruleset::load_with`): a cache of another context is not used.
//! Each entry carries a checksum of its text, checked when the entry is used: a
//! damaged or truncated entry is ignored (its file is compiled again) and reported.
//!
//! The cache also records each rule file's *identity* ([`FileId`]: device, inode, size,
//! modification and status-change times) beside the digest of its bytes, so that a file
//! whose identity is unchanged is neither opened, read nor hashed at the next load (see
//! [`FileId`] for why that is safe, and when an identity is not recorded).

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Largest rule file read (SigmaHQ's largest rule is ~60 KB).
const MAX_RULE_FILE: u64 = 16 << 20;
/// Largest cache file read (Hayabusa's 4,980 rule files make one of ~8 MB).
const MAX_CACHE: u64 = 256 << 20;
/// First word of a cache file's first line, and its format version.
const CACHE_MAGIC: &str = "watchpost-sigma-compiled 2";
/// An entry line's `<digest: 64 hex> <checksum: 16 hex> ` before the entry.
const PREFIX: usize = 82;

/// What loading a rule set cost and where its rules came from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadStats {
    /// Rule files read.
    pub files: usize,
    /// Files whose rules came from the cache.
    pub cached: usize,
    /// Of those, files taken by their identity (device, inode, size, modification and
    /// status-change times as the cache recorded them), neither read nor hashed.
    pub unread: usize,
    /// Cache entries (or file identity lines) that were damaged or cut short and not used
    /// (their files, if still in the set, were read and compiled again).
    pub damaged: usize,
    /// Seconds reading the files and parsing and compiling them (or taking them from the
    /// cache), on every core.
    pub read_secs: f64,
    /// Seconds joining the rules in file order and building the index.
    pub index_secs: f64,
    /// Rule forms filed in the index whose detections were not compiled: each is compiled
    /// at the first event that reaches it (see [`crate::Ruleset::compiled`]).
    pub deferred: usize,
}

/// The cache file in `dir` for the rule set at `paths`:
/// `sigma-compiled-<digest of the paths>.cache`, so that hunts over different rule sets
/// keep their own caches.
pub fn cache_file_for(dir: &Path, paths: &[PathBuf]) -> PathBuf {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
    }
    dir.join(format!(
        "sigma-compiled-{}.cache",
        &hex(&h.finalize())[..16]
    ))
}

/// Every `.yml`/`.yaml` file under `p` (a file is taken as it is), sorted; directories
/// that cannot be read come back as errors.
pub(crate) fn collect(p: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    if p.is_dir() {
        walk(p, out, errors);
    } else {
        out.push(p.to_path_buf());
    }
}

/// The rule files under directory `dir`, in path order. Entry types come from the
/// directory listing (no `stat` per file: a rule set has thousands); a symbolic link is
/// followed. Entries are sorted by name (within one directory the same order as by
/// path, without comparing paths component by component).
fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return errors.push((dir.to_path_buf(), format!("cannot read directory: {e}"))),
    };
    let mut entries: Vec<(std::ffi::OsString, bool)> = rd
        .flatten()
        .map(|e| {
            let is_dir = match e.file_type() {
                Ok(t) if !t.is_symlink() => t.is_dir(),
                _ => e.path().is_dir(),
            };
            (e.file_name(), is_dir)
        })
        .collect();
    entries.sort_unstable();
    for (name, is_dir) in entries {
        if is_dir {
            walk(&dir.join(name), out, errors);
        } else if Path::new(&name)
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("yml") || x.eq_ignore_ascii_case("yaml"))
        {
            out.push(dir.join(name));
        }
    }
}

/// The documents of one file, or why it could not be read.
pub(crate) type Parsed = Result<Vec<serde_json::Value>, String>;

/// A rule file's bytes (at most 16 MiB) into `buf` (a buffer each worker reuses: rule
/// files are small and thousands), and with `identify` its identity as it was before the
/// read (from the open file: what was read is at least as new as it).
pub(crate) fn read_rule_file(
    f: &Path,
    buf: &mut Vec<u8>,
    identify: bool,
) -> std::io::Result<Option<FileId>> {
    use std::io::Read;
    buf.clear();
    let file = std::fs::File::open(f)?;
    let id = if identify {
        file.metadata().ok().and_then(|m| FileId::of(&m))
    } else {
        None
    };
    file.take(MAX_RULE_FILE + 1).read_to_end(buf)?;
    if buf.len() as u64 > MAX_RULE_FILE {
        return Err(std::io::Error::other(format!(
            "larger than the {MAX_RULE_FILE}-byte limit"
        )));
    }
    Ok(id)
}

/// What identifies a rule file's bytes without reading them: device, inode, size, and
/// the modification and status-change (`ctime`) times in nanoseconds.
///
/// A cache entry is taken for a file whose identity is the one recorded with it, without
/// opening the file. Any write to a file sets its status-change time to the current time
/// (the kernel sets it; no system call sets it to a chosen value), and so does changing
/// its modification time (`touch -d`, `utimensat`): a file rewritten with the same size
/// and its old modification time restored (`cp -p`, `rsync -t`, unpacking an archive)
/// has another `ctime`, and a file replaced by a rename has another inode. A changed
/// identity only means the file is read and hashed, as without it.
///
/// Timestamps are kept by the kernel at the granularity of its clock tick (a few
/// milliseconds), so a file changed twice within one tick keeps its times. An identity
/// is therefore recorded only when the file's last change is older than the load by a
/// margin ([`SETTLE`]): a change after the file was read then gives a later `ctime`. A
/// file changed within that margin of a load is read and hashed again at the next one.
/// Where there is no status-change time (Windows), no identity is recorded and every
/// file is read and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i128,
    ctime: i128,
}

/// How much older than the load a file's last change must be for its identity to be
/// recorded (well above the kernel's timestamp granularity and the drift between its
/// coarse clock and the time of day).
pub(crate) const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

impl FileId {
    /// The identity of a file from its metadata (`None` where the platform gives no
    /// status-change time).
    #[cfg(unix)]
    pub(crate) fn of(m: &std::fs::Metadata) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: ns(m.mtime(), m.mtime_nsec()),
            ctime: ns(m.ctime(), m.ctime_nsec()),
        })
    }

    /// The identity of a file from its metadata (`None` where the platform gives no
    /// status-change time).
    #[cfg(not(unix))]
    pub(crate) fn of(_: &std::fs::Metadata) -> Option<FileId> {
        None
    }

    /// The identity of the file at `path` now (following a symbolic link).
    pub(crate) fn stat(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().and_then(|m| FileId::of(&m))
    }

    /// Whether its last status change is before `settled` (nanoseconds since the Unix
    /// epoch): only then may it be recorded.
    pub(crate) fn settled(&self, settled: i128) -> bool {
        self.ctime < settled
    }
}

/// Nanoseconds since the Unix epoch of `t` (negative before it).
pub(crate) fn epoch_ns(t: std::time::SystemTime) -> i128 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The SHA-256 of a rule file's bytes: its key in the cache.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The documents of a YAML text; the error is the parser's first line.
pub(crate) fn parse_yaml(text: &str) -> Parsed {
    serde_saphyr::from_multiple(text).map_err(|e| {
        let msg = e.to_string();
        format!("YAML: {}", msg.lines().next().unwrap_or(""))
    })
}

fn read_limited(f: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(f)?;
    // Sized from the file's length (one read instead of a growing buffer's several).
    let hint = file.metadata().map_or(0, |m| m.len().min(limit));
    let mut buf = Vec::with_capacity(hint as usize + 1);
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "larger than the {limit}-byte limit"
        )));
    }
    Ok(buf)
}

/// Lowercase hexadecimal.
pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// The bytes of lowercase or uppercase hexadecimal `s` into `out` (`None` unless `s` has
/// exactly twice as many digits).
fn unhex(s: &[u8], out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = d(pair[0])? << 4 | d(pair[1])?;
    }
    Some(())
}

/// The checksum of an entry's text: its XXH3-64 (it finds damage, not forgery: whoever
/// can write the cache can write any entry; a file's key stays the SHA-256 of its bytes).
fn check(text: &str) -> [u8; 8] {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes()).to_be_bytes()
}

/// An opened cache file: its text and where each file's entry is.
pub(crate) struct Cache {
    text: Arc<String>,
    /// File digest → (the entry's checksum, its text's range).
    index: HashMap<[u8; 32], ([u8; 8], Range<usize>), foldhash::fast::FixedState>,
    /// Rule file path → its identity and digest when the cache was written.
    ids: HashMap<Box<str>, (FileId, [u8; 32]), foldhash::fast::FixedState>,
    /// Lines that are not entries (cut short, or damaged before the entry).
    malformed: usize,
}

/// What the cache has for one file.
pub(crate) enum Lookup {
    /// Nothing.
    Miss,
    /// An entry whose text does not match its checksum.
    Damaged,
    /// The entry's text (`Cache::text`) range.
    Hit(Range<usize>),
}

impl Cache {
    /// Opens the cache at `path` if it was written in `context`. A missing file, or one
    /// of another context, is no cache; a damaged one is no cache and a message.
    pub(crate) fn open(path: &Path, context: &str) -> (Option<Cache>, Option<String>) {
        let damaged = |why: String| {
            (
                None,
                Some(format!("rule cache {}: {why}; ignored", path.display())),
            )
        };
        let bytes = match read_limited(path, MAX_CACHE) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
            Err(e) => return damaged(format!("cannot read: {e}")),
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return damaged("not UTF-8".into());
        };
        let Some((first, _)) = text.split_once('\n') else {
            return damaged("no header line".into());
        };
        match first.strip_prefix(CACHE_MAGIC) {
            Some(rest) if rest.strip_prefix(' ') == Some(context) => {}
            // Another build, other placeholders or an older format: not ours to use.
            Some(_) => return (None, None),
            None if first.starts_with("watchpost-sigma-") => return (None, None),
            None => return damaged("not a watchpost rule cache".into()),
        }
        let mut index = HashMap::with_capacity_and_hasher(
            text.len() / 1024,
            foldhash::fast::FixedState::default(),
        );
        let mut ids = HashMap::with_capacity_and_hasher(
            text.len() / 1024,
            foldhash::fast::FixedState::default(),
        );
        let mut malformed = 0;
        let mut at = first.len() + 1;
        for line in text[at..].split_inclusive('\n') {
            let start = at;
            at += line.len();
            if line.starts_with('@') {
                match line.strip_suffix('\n').and_then(parse_id_line) {
                    Some((path, id, digest)) => {
                        ids.entry(Box::from(path)).or_insert((id, digest));
                    }
                    None => malformed += 1,
                }
                continue;
            }
            // `<digest: 64 hex> <checksum: 16 hex> <entry>`; a line cut short has no end.
            let entry = line.strip_suffix('\n').and_then(|body| {
                let b = body.as_bytes();
                if b.len() <= PREFIX || b[64] != b' ' || b[PREFIX - 1] != b' ' {
                    return None;
                }
                let (mut d, mut c) = ([0u8; 32], [0u8; 8]);
                unhex(&b[..64], &mut d)?;
                unhex(&b[65..PREFIX - 1], &mut c)?;
                Some((d, c, start + PREFIX..start + body.len()))
            });
            match entry {
                Some((d, c, r)) => {
                    index.entry(d).or_insert((c, r));
                }
                None => malformed += 1,
            }
        }
        (
            Some(Cache {
                text: Arc::new(text),
                index,
                ids,
                malformed,
            }),
            None,
        )
    }

    /// The entry for the file of `digest`, its checksum checked.
    pub(crate) fn lookup(&self, digest: &[u8; 32]) -> Lookup {
        match self.index.get(digest) {
            None => Lookup::Miss,
            Some((c, r)) if check(&self.text[r.clone()]) == *c => Lookup::Hit(r.clone()),
            Some(_) => Lookup::Damaged,
        }
    }

    /// The identity and digest the cache recorded for the rule file at `path`.
    pub(crate) fn known(&self, path: &str) -> Option<(FileId, [u8; 32])> {
        self.ids.get(path).copied()
    }

    /// How many file identities it records.
    pub(crate) fn ids_len(&self) -> usize {
        self.ids.len()
    }

    /// The whole line of the entry at `entry` (a range [`Cache::lookup`] gave).
    pub(crate) fn line(&self, entry: &Range<usize>) -> &str {
        self.text
            .get(entry.start.saturating_sub(PREFIX)..entry.end)
            .unwrap_or("")
    }

    /// The cache's text (entries are ranges of it).
    pub(crate) fn text(&self) -> &Arc<String> {
        &self.text
    }

    /// How many entries it has.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// How many of its lines were not entries (cut short or damaged).
    pub(crate) fn malformed(&self) -> usize {
        self.malformed
    }
}

/// A cache line for the file of `digest` whose entry is `entry`.
pub(crate) fn line(digest: &[u8; 32], entry: &str) -> String {
    let mut l = String::with_capacity(entry.len() + PREFIX);
    l.push_str(&hex(digest));
    l.push(' ');
    l.push_str(&hex(&check(entry)));
    l.push(' ');
    l.push_str(entry);
    l
}

/// A cache line recording that the rule file at `path` had identity `id` and bytes of
/// digest `digest`: `@<checksum> <digest> <dev> <ino> <size> <mtime> <ctime> <path>`, the
/// checksum (16 hex) of everything after it. `None` for a path that cannot be kept on
/// one line (not UTF-8, or with a line end).
pub(crate) fn id_line(path: &Path, id: &FileId, digest: &[u8; 32]) -> Option<String> {
    let path = recordable(path)?;
    let rest = format!(
        "{} {} {} {} {} {} {path}",
        hex(digest),
        id.dev,
        id.ino,
        id.size,
        id.mtime,
        id.ctime
    );
    Some(format!("@{} {rest}", hex(&check(&rest))))
}

/// `path` as an identity line keeps it: `None` when it cannot be kept on one line (not
/// UTF-8, or with a line end), and then no identity is recorded for it.
pub(crate) fn recordable(path: &Path) -> Option<&str> {
    path.to_str().filter(|p| !p.contains(['\n', '\r']))
}

/// The path, identity and digest of an identity line (without its end); `None` when it
/// is damaged.
fn parse_id_line(line: &str) -> Option<(&str, FileId, [u8; 32])> {
    let (c, rest) = line.strip_prefix('@')?.split_once(' ')?;
    let mut sum = [0u8; 8];
    unhex(c.as_bytes(), &mut sum)?;
    if check(rest) != sum {
        return None;
    }
    let mut parts = rest.splitn(7, ' ');
    let mut digest = [0u8; 32];
    unhex(parts.next()?.as_bytes(), &mut digest)?;
    let id = FileId {
        dev: parts.next()?.parse().ok()?,
        ino: parts.next()?.parse().ok()?,
        size: parts.next()?.parse().ok()?,
        mtime: parts.next()?.parse().ok()?,
        ctime: parts.next()?.parse().ok()?,
    };
    Some((parts.next()?, id, digest))
}

/// Writes the cache atomically (a temporary file in the same directory, then rename):
/// the header with `context`, then the lines.
pub(crate) fn write_cache<'a>(
    path: &Path,
    context: &str,
    lines: impl Iterator<Item = &'a str>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&tmp)?);
        writeln!(w, "{CACHE_MAGIC} {context}")?;
        for l in lines {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(all(test, unix))]
mod tests {
    // Tests may unwrap: a failing unwrap is a failing test.
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use watchpost_event::{Event, Sym, Value};

    use crate::{LoadOptions, Ruleset};

    fn rule(title: &str, image: &str) -> String {
        format!(
            "title: {title}\nlogsource: {{ product: windows, category: process_creation }}\n\
             detection:\n    sel:\n        Image|endswith: '\\\\{image}'\n    condition: sel\n"
        )
    }

    fn titles(rs: &Ruleset, image: &str) -> Vec<String> {
        let mut e = Event::new(Arc::from("evtx"), Arc::from("pc"), String::new());
        for (k, v) in [
            ("channel", "Microsoft-Windows-Sysmon/Operational"),
            ("event_id", "1"),
            ("Image", image),
        ] {
            e.push(Sym::new(k), Value::Str(v.into()));
        }
        e.finish();
        let mut out = Vec::new();
        rs.matches(&e, &mut out);
        out.iter().map(|m| m.title.to_string()).collect()
    }

    /// Rules `a.yml` (whoami) and `b.yml` (hostname) in `dir/rules`, and load options
    /// with a cache in `dir`.
    fn setup(dir: &std::path::Path) -> (std::path::PathBuf, LoadOptions) {
        let rules = dir.join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(rules.join("a.yml"), rule("Whoami", "whoami.exe")).unwrap();
        std::fs::write(rules.join("b.yml"), rule("Hostname", "hostname.exe")).unwrap();
        let opts = LoadOptions {
            cache: Some(dir.join("rules.cache")),
            ..LoadOptions::default()
        };
        (rules, opts)
    }

    /// Every file counts as settled (its last change long before the load).
    const ANY: i128 = i128::MAX;

    #[test]
    fn an_unchanged_file_is_taken_from_the_cache_by_its_identity_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let (rules, opts) = setup(dir.path());
        let cold = Ruleset::load_settled(&[&rules], &opts, ANY).0;
        assert_eq!((cold.stats().cached, cold.stats().unread), (0, 0));
        let text = std::fs::read_to_string(dir.path().join("rules.cache")).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with('@')).count(), 2);
        let warm = Ruleset::load_settled(&[&rules], &opts, ANY).0;
        assert_eq!((warm.stats().cached, warm.stats().unread), (2, 2));
        assert_eq!(titles(&warm, r"C:\x\whoami.exe"), ["Whoami"]);
        // Nothing changed: the cache is not rewritten.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rules.cache")).unwrap(),
            text
        );

        // The file's bytes are not consulted: an identity line of a.yml that names
        // b.yml's digest (checksum valid) gives a.yml b.yml's rule.
        let path_a = rules.join("a.yml");
        let digest_b = super::digest(&std::fs::read(rules.join("b.yml")).unwrap());
        let id_a = super::FileId::stat(&path_a).unwrap();
        let forged = super::id_line(&path_a, &id_a, &digest_b).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.starts_with('@') && l.ends_with("a.yml") {
                    forged.as_str()
                } else {
                    l
                }
            })
            .collect();
        std::fs::write(dir.path().join("rules.cache"), lines.join("\n") + "\n").unwrap();
        let lied = Ruleset::load_settled(&[&rules], &opts, ANY).0;
        assert_eq!(lied.stats().unread, 2);
        assert!(titles(&lied, r"C:\x\whoami.exe").is_empty());
        assert_eq!(
            titles(&lied, r"C:\x\hostname.exe"),
            ["Hostname", "Hostname"]
        );
    }

    #[test]
    fn a_file_rewritten_with_the_same_size_and_modification_time_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (rules, opts) = setup(dir.path());
        Ruleset::load_settled(&[&rules], &opts, ANY);
        let path_a = rules.join("a.yml");
        let before = std::fs::metadata(&path_a).unwrap();
        // Past the kernel's timestamp granularity, so that the rewrite's times differ.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let rewritten = rule("Whoamx", "whoamx.exe");
        assert_eq!(rewritten.len() as u64, before.len());
        std::fs::write(&path_a, &rewritten).unwrap();
        let f = std::fs::File::options().write(true).open(&path_a).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        drop(f);
        let after = std::fs::metadata(&path_a).unwrap();
        assert_eq!(
            (after.len(), after.modified().unwrap()),
            (before.len(), before.modified().unwrap())
        );
        let rs = Ruleset::load_settled(&[&rules], &opts, ANY).0;
        // b.yml by its identity; a.yml read, hashed and compiled again.
        assert_eq!((rs.stats().cached, rs.stats().unread), (1, 1));
        assert_eq!(titles(&rs, r"C:\x\whoamx.exe"), ["Whoamx"]);
        assert!(titles(&rs, r"C:\x\whoami.exe").is_empty());
        // Its new identity is recorded: the next load reads neither.
        let again = Ruleset::load_settled(&[&rules], &opts, ANY).0;
        assert_eq!((again.stats().cached, again.stats().unread), (2, 2));
        assert_eq!(titles(&again, r"C:\x\whoamx.exe"), ["Whoamx"]);
    }

    #[test]
    fn a_file_changed_just_before_the_load_is_not_recorded_and_read_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let (rules, opts) = setup(dir.path());
        // The files were just written: within the settling margin of this load.
        Ruleset::load_with(&[&rules], &opts);
        let text = std::fs::read_to_string(dir.path().join("rules.cache")).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with('@')).count(), 0);
        let rs = Ruleset::load_with(&[&rules], &opts).0;
        assert_eq!((rs.stats().cached, rs.stats().unread), (2, 0));
        // A damaged identity line is ignored (the file is read) and reported.
        Ruleset::load_settled(&[&rules], &opts, ANY);
        let text = std::fs::read_to_string(dir.path().join("rules.cache")).unwrap();
        // The last character of the first identity line (its path) changed.
        let at = text.find('@').unwrap() + text[text.find('@').unwrap()..].find('\n').unwrap();
        let damaged = format!("{}x{}", &text[..at - 1], &text[at..]);
        std::fs::write(dir.path().join("rules.cache"), &damaged).unwrap();
        let rs = Ruleset::load_settled(&[&rules], &opts, ANY).0;
        assert_eq!(rs.stats().cached, 2);
        assert_eq!(rs.stats().damaged, 1);
        assert_eq!(rs.stats().unread, 1);
    }
}
