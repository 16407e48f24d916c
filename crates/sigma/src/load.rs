//! Finding rule files, reading and parsing them on every core, and the parsed-rule cache.
//!
//! Parsing YAML is most of the cost of loading thousands of rules, so the parsed
//! documents of every file are kept in one cache file, keyed by the SHA-256 of the
//! file's bytes: a file whose bytes changed (or a new one) is parsed again, the rest
//! come from the cache, and the cache is rewritten when anything changed. The cache
//! holds only what the YAML said (as JSON), never compiled state, so a newer watchpost
//! reads an older cache correctly; its first line names the format version.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// Largest rule file read (SigmaHQ's largest rule is ~60 KB).
const MAX_RULE_FILE: u64 = 16 << 20;
/// Largest cache file read.
const MAX_CACHE: u64 = 1 << 30;
/// First line of a cache file.
const CACHE_MAGIC: &str = "watchpost-sigma-parsed 1";

/// What loading a rule set cost and where its rules came from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadStats {
    /// Rule files read.
    pub files: usize,
    /// Files whose parsed documents came from the cache.
    pub cached: usize,
    /// Seconds reading and parsing files (or taking them from the cache), on every core.
    pub parse_secs: f64,
    /// Seconds compiling the rules and building the index.
    pub compile_secs: f64,
}

/// The cache file in `dir` for the rule set at `paths`: `sigma-<digest of the paths>.cache`,
/// so that hunts over different rule sets keep their own caches.
pub fn cache_file_for(dir: &Path, paths: &[PathBuf]) -> PathBuf {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
    }
    dir.join(format!("sigma-{}.cache", &hex(&h.finalize())[..16]))
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

/// The rule files under directory `dir`. Entry types come from the directory listing
/// (no `stat` per file: a rule set has thousands); a symbolic link is followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return errors.push((dir.to_path_buf(), format!("cannot read directory: {e}"))),
    };
    let mut entries: Vec<(PathBuf, bool)> = rd
        .flatten()
        .map(|e| {
            let path = e.path();
            let is_dir = match e.file_type() {
                Ok(t) if t.is_symlink() => path.is_dir(),
                Ok(t) => t.is_dir(),
                Err(_) => path.is_dir(),
            };
            (path, is_dir)
        })
        .collect();
    entries.sort_unstable();
    for (e, is_dir) in entries {
        if is_dir {
            walk(&e, out, errors);
        } else if e
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("yml") || x.eq_ignore_ascii_case("yaml"))
        {
            out.push(e);
        }
    }
}

/// The documents of one file, or why it could not be read.
pub(crate) type Parsed = Result<Vec<Json>, String>;

/// A file's digest and its documents as one JSON line.
type CacheEntry = (String, String);

/// One file read: its index, documents, cache entry, and whether the cache had it.
type FileResult = (usize, Parsed, Option<CacheEntry>, bool);

/// Reads and parses `files` on `threads` threads (documents in file order), through the
/// cache at `cache` when given.
pub(crate) fn parse_all(
    files: &[PathBuf],
    threads: usize,
    cache: Option<&Path>,
) -> (Vec<Parsed>, LoadStats) {
    let started = Instant::now();
    let old = cache.map(read_cache).unwrap_or_default();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<FileResult>> = Mutex::new(Vec::with_capacity(files.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, files.len().max(1)) {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    let (parsed, entry, hit) = parse_one(f, cache.is_some(), &old);
                    mine.push((i, parsed, entry, hit));
                }
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&mut mine);
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_unstable_by_key(|r| r.0);
    let cached = results.iter().filter(|r| r.3).count();
    if let Some(path) = cache {
        let entries: Vec<&(String, String)> = results.iter().filter_map(|r| r.2.as_ref()).collect();
        // Rewrite when a file was parsed anew or the cache holds files no longer loaded.
        if cached != entries.len() || old.len() != cached {
            // A cache that cannot be written only costs the next run its speed.
            let _ = write_cache(path, &entries);
        }
    }
    let stats = LoadStats {
        files: files.len(),
        cached,
        parse_secs: started.elapsed().as_secs_f64(),
        compile_secs: 0.0,
    };
    (results.into_iter().map(|r| r.1).collect(), stats)
}

/// One file: its documents, its cache entry (digest, JSON line) and whether the cache had
/// it.
fn parse_one(
    f: &Path,
    caching: bool,
    old: &HashMap<String, String>,
) -> (Parsed, Option<(String, String)>, bool) {
    let bytes = match read_limited(f, MAX_RULE_FILE) {
        Ok(b) => b,
        Err(e) => return (Err(format!("cannot read: {e}")), None, false),
    };
    let digest = if caching {
        hex(&Sha256::digest(&bytes))
    } else {
        String::new()
    };
    if let Some(line) = old.get(&digest)
        && let Ok(docs) = serde_json::from_str::<Vec<Json>>(line)
    {
        return (Ok(docs), Some((digest, line.clone())), true);
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => return (Err("cannot read: not UTF-8".into()), None, false),
    };
    let docs = match parse_yaml(&text) {
        Ok(d) => d,
        Err(e) => return (Err(e), None, false),
    };
    let entry = caching
        .then(|| serde_json::to_string(&docs).ok())
        .flatten()
        .map(|line| (digest, line));
    (Ok(docs), entry, false)
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Digest → the file's documents as one JSON line. A missing, unreadable or foreign
/// file is an empty cache.
fn read_cache(path: &Path) -> HashMap<String, String> {
    let Ok(bytes) = read_limited(path, MAX_CACHE) else {
        return HashMap::new();
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return HashMap::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(CACHE_MAGIC) {
        return HashMap::new();
    }
    lines
        .filter_map(|l| l.split_once(' '))
        .map(|(d, j)| (d.to_string(), j.to_string()))
        .collect()
}

/// Writes the cache atomically (a temporary file in the same directory, then rename).
fn write_cache(path: &Path, entries: &[&(String, String)]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(w, "{CACHE_MAGIC}")?;
        for (d, j) in entries {
            writeln!(w, "{d} {j}")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yml");
        let b = dir.path().join("b.yml");
        std::fs::write(&a, "title: A\n").unwrap();
        std::fs::write(&b, "title: B\n---\ntitle: B2\n").unwrap();
        let cache = dir.path().join("cache").join("rules.cache");
        let files = vec![a.clone(), b.clone()];
        let (docs, st) = parse_all(&files, 2, Some(&cache));
        assert_eq!((st.files, st.cached), (2, 0));
        assert_eq!(docs[1].as_ref().unwrap().len(), 2);
        let (again, st) = parse_all(&files, 2, Some(&cache));
        assert_eq!(st.cached, 2);
        assert_eq!(again, docs);
        // One file changes: only it is parsed again.
        std::fs::write(&a, "title: A changed\n").unwrap();
        let (docs, st) = parse_all(&files, 1, Some(&cache));
        assert_eq!(st.cached, 1);
        assert_eq!(docs[0].as_ref().unwrap()[0]["title"], "A changed");
        // A damaged cache is ignored.
        std::fs::write(&cache, "junk").unwrap();
        let (docs2, st) = parse_all(&files, 1, Some(&cache));
        assert_eq!((st.cached, docs2), (0, docs));
        // Broken YAML is an error for that file only, and never cached.
        std::fs::write(&b, "title: [unclosed\n").unwrap();
        let (docs, _) = parse_all(&files, 2, Some(&cache));
        assert!(docs[1].as_ref().unwrap_err().starts_with("YAML"));
        let (_, st) = parse_all(&files, 2, Some(&cache));
        assert_eq!(st.cached, 1);
    }
}
