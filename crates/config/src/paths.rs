//! The folder part of a path pattern (what is watched or checked for a glob).

use std::path::Path;

/// A path as written when it has no wildcard, else the folder before its first one.
pub fn static_dir_or_path(pattern: &str) -> std::path::PathBuf {
    if pattern.contains(['*', '?', '[', '{']) {
        static_dir(pattern)
    } else {
        std::path::PathBuf::from(pattern)
    }
}

/// The directory part of a glob pattern before its first wildcard.
pub fn static_dir(pattern: &str) -> std::path::PathBuf {
    let cut = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let head = &pattern[..cut];
    let p = Path::new(head);
    let dir = if cut == pattern.len() {
        p.parent()
    } else if head.ends_with(['/', '\\']) {
        Some(p)
    } else {
        p.parent()
    };
    match dir {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => ".".into(),
    }
}
