//! Glob patterns: made absolute, split into the directory to watch and the rest, expanded.

use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

use super::TailError;

/// Matching rules: `*` does not cross `/`; case-insensitive on Windows like its file systems.
const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: !cfg!(windows),
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// One include pattern.
#[derive(Debug)]
struct Include {
    text: String,
    pattern: Pattern,
    /// The longest leading directory without wildcards.
    base: PathBuf,
    /// Whether wildcards occur in directory components (the base is then watched recursively).
    recursive: bool,
}

/// One exclude pattern: matched against the file name, or the whole path if it names a directory.
#[derive(Debug)]
struct Exclude {
    pattern: Pattern,
    whole_path: bool,
}

/// The include and exclude patterns of one source.
#[derive(Debug)]
pub(crate) struct Patterns {
    include: Vec<Include>,
    exclude: Vec<Exclude>,
    /// Paths never followed (the checkpoint file and its tmp file).
    ignore: Vec<PathBuf>,
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `path` made absolute against `cwd` with `.` components and doubled separators removed.
pub(crate) fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl Patterns {
    /// Compiles `include` and `exclude`; relative patterns are taken from `cwd`.
    pub(crate) fn new(
        include: &[String],
        exclude: &[String],
        ignore: Vec<PathBuf>,
        cwd: &Path,
    ) -> Result<Patterns, TailError> {
        if include.is_empty() {
            return Err(TailError::Options("no file patterns given".into()));
        }
        let bad = |p: &str, m: String| TailError::Pattern {
            pattern: p.to_string(),
            message: m,
        };
        let cwd_text = cwd
            .to_str()
            .ok_or_else(|| bad(".", "the current directory is not UTF-8".into()))?;
        let mut out = Patterns {
            include: Vec::new(),
            exclude: Vec::new(),
            ignore,
        };
        for raw in include {
            let rel = Path::new(raw);
            let text = if rel.is_absolute() {
                absolute(rel, cwd).to_string_lossy().into_owned()
            } else {
                let escaped = PathBuf::from(Pattern::escape(cwd_text));
                absolute(rel, &escaped).to_string_lossy().into_owned()
            };
            let pattern = Pattern::new(&text).map_err(|e| bad(raw, e.to_string()))?;
            let mut base = PathBuf::new();
            let mut rest = 0;
            for c in Path::new(&text).components() {
                if rest > 0 || has_wildcard(&c.as_os_str().to_string_lossy()) {
                    rest += 1;
                } else {
                    base.push(c);
                }
            }
            if rest == 0 {
                // A plain path: watch its directory.
                base.pop();
                rest = 1;
            }
            out.include.push(Include {
                text,
                pattern,
                base,
                recursive: rest > 1,
            });
        }
        for raw in exclude {
            let pattern = Pattern::new(raw).map_err(|e| bad(raw, e.to_string()))?;
            out.exclude.push(Exclude {
                pattern,
                whole_path: raw.contains('/') || raw.contains('\\'),
            });
        }
        Ok(out)
    }

    /// The directories to watch: `(base, recursive)`.
    pub(crate) fn bases(&self) -> impl Iterator<Item = (&Path, bool)> {
        self.include.iter().map(|i| (i.base.as_path(), i.recursive))
    }

    /// Whether `path` is excluded or ignored.
    fn excluded(&self, path: &Path) -> bool {
        if self.ignore.iter().any(|p| p == path) {
            return true;
        }
        self.exclude.iter().any(|e| {
            if e.whole_path {
                e.pattern.matches_path_with(path, OPTIONS)
            } else {
                path.file_name()
                    .is_some_and(|n| e.pattern.matches_with(&n.to_string_lossy(), OPTIONS))
            }
        })
    }

    /// Whether `path` is one to follow.
    pub(crate) fn matches(&self, path: &Path) -> bool {
        self.include
            .iter()
            .any(|i| i.pattern.matches_path_with(path, OPTIONS))
            && !self.excluded(path)
    }

    /// Whether `path` is a directory on the way to a pattern's base (created late), the base
    /// itself, or inside a recursively watched base (a new subdirectory can bring files).
    pub(crate) fn concerns_dir(&self, path: &Path) -> bool {
        self.include
            .iter()
            .any(|i| i.base.starts_with(path) || (i.recursive && path.starts_with(&i.base)))
    }

    /// Every existing path matching an include pattern and no exclude pattern, without
    /// duplicates, in pattern order. Unreadable directories are skipped (logged at debug level).
    pub(crate) fn expand(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for inc in &self.include {
            let Ok(paths) = glob::glob_with(&inc.text, OPTIONS) else {
                continue;
            };
            for entry in paths {
                match entry {
                    Ok(p) if !self.excluded(&p) && !out.contains(&p) => out.push(p),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "tail: cannot list a directory"),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(inc: &[&str], exc: &[&str]) -> Patterns {
        let inc: Vec<String> = inc.iter().map(|s| s.to_string()).collect();
        let exc: Vec<String> = exc.iter().map(|s| s.to_string()).collect();
        Patterns::new(
            &inc,
            &exc,
            vec![PathBuf::from("/logs/cp.json")],
            Path::new("/work/dir"),
        )
        .unwrap()
    }

    #[test]
    fn bases_and_matching() {
        let p = pats(
            &["/logs/sep/*.Log", "rel/./app.log", "/var/**/x.log"],
            &["*.gz", "/logs/sep/old/*"],
        );
        let bases: Vec<_> = p.bases().map(|(b, r)| (b.to_path_buf(), r)).collect();
        assert_eq!(bases[0], (PathBuf::from("/logs/sep"), false));
        assert_eq!(bases[1], (PathBuf::from("/work/dir/rel"), false));
        assert_eq!(bases[2], (PathBuf::from("/var"), true));
        assert!(p.matches(Path::new("/logs/sep/05292019.Log")));
        assert!(!p.matches(Path::new("/logs/sep/sub/05292019.Log")));
        assert!(p.matches(Path::new("/work/dir/rel/app.log")));
        assert!(p.matches(Path::new("/var/a/b/x.log")));
        assert!(!p.matches(Path::new("/logs/sep/a.Log.gz")));
        assert!(p.concerns_dir(Path::new("/logs")));
        assert!(p.concerns_dir(Path::new("/logs/sep")));
        assert!(!p.concerns_dir(Path::new("/logs/sep/new.Log")));
        assert!(p.concerns_dir(Path::new("/var/a/new")));
        assert!(!p.concerns_dir(Path::new("/other/x")));
    }

    #[test]
    fn bad_patterns_are_errors() {
        let r = Patterns::new(&["/a/[".to_string()], &[], vec![], Path::new("/"));
        assert!(matches!(r, Err(TailError::Pattern { .. })));
        assert!(Patterns::new(&[], &[], vec![], Path::new("/")).is_err());
    }
}
