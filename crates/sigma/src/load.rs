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
const CACHE_MAGIC: &str = "watchpost-sigma-compiled 1";
/// An entry line's `<digest: 64 hex> <checksum: 16 hex> ` before the entry.
const PREFIX: usize = 82;

/// What loading a rule set cost and where its rules came from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadStats {
    /// Rule files read.
    pub files: usize,
    /// Files whose rules came from the cache.
    pub cached: usize,
    /// Cache entries that were damaged or cut short and not used (their files, if still
    /// in the set, were compiled again).
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
/// files are small and thousands).
pub(crate) fn read_rule_file(f: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open(f)?
        .take(MAX_RULE_FILE + 1)
        .read_to_end(buf)?;
    if buf.len() as u64 > MAX_RULE_FILE {
        return Err(std::io::Error::other(format!(
            "larger than the {MAX_RULE_FILE}-byte limit"
        )));
    }
    Ok(())
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

/// The checksum of an entry's text: the first 8 bytes of its SHA-256, as hex.
fn check(text: &str) -> [u8; 8] {
    let d = Sha256::digest(text.as_bytes());
    let mut out = [0; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// An opened cache file: its text and where each file's entry is.
pub(crate) struct Cache {
    text: Arc<String>,
    /// File digest → (the entry's checksum, its text's range).
    index: HashMap<[u8; 32], ([u8; 8], Range<usize>), foldhash::fast::FixedState>,
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
        let mut malformed = 0;
        let mut at = first.len() + 1;
        for line in text[at..].split_inclusive('\n') {
            let start = at;
            at += line.len();
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
