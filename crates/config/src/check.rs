//! Everything `check-config` verifies beyond syntax: the chain builds, action names
//! resolve, template variables can exist, paths are readable, the state directory is
//! writable. `run` and `test` go through the same checks before they start.

use std::collections::HashSet;
use std::path::Path;

use watchpost_event::Sym;
use watchpost_filters::Chain;
use watchpost_sources::Schema;

use crate::config::Config;
use crate::diag::Diagnostics;

/// Names every event has, plus those that exist while an action runs.
const METADATA: &[&str] = &[
    "source", "host", "time", "raw", "filter", "actions", "anomaly",
];

/// Validates `config`; returns the built chain when there is no error.
/// `io` turns on the checks that touch the file system (off for `test`).
pub fn validate(config: &Config, diags: &mut Diagnostics, io: bool) -> Option<Chain> {
    let names: Vec<&str> = config.actions.iter().map(|a| a.name()).collect();
    let resolve = |n: &str| names.iter().position(|a| *a == n);
    let chain = match Chain::build(config.filters.clone(), &resolve, &names) {
        Ok(c) => Some(c),
        Err(errs) => {
            diags.extend(errs);
            None
        }
    };
    if config.sources.is_empty() && config.checks.is_empty() {
        diags.warning(
            0..0,
            "no [[source]] is configured: `run` will have nothing to follow",
        );
    }
    check_variables(config, diags);
    check_checks(config, diags);
    for set in &config.rules {
        for (name, span) in &set.actions {
            if !names.contains(&name.as_str()) {
                diags.error(
                    span.clone(),
                    format!(
                        "rules `{}`: unknown action `{name}` (configured: {})",
                        set.name,
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                );
            }
        }
    }
    for action in &config.actions {
        diags.extend(action.check());
    }
    diags.extend(watchpost_actions::quarantine::check_allow_lists(
        &config.actions,
    ));
    if io {
        check_paths(config, diags);
        check_state_dir(config, diags);
        check_queue_dirs(config, diags);
    }
    if diags.has_errors() { None } else { chain }
}

/// `[[check]]`s: a silent source must exist; SEP's registry exists on Windows only.
fn check_checks(config: &Config, diags: &mut Diagnostics) {
    use watchpost_checks::{DefSource, Kind};
    for c in &config.checks {
        match &c.kind {
            Kind::SourceSilence { source, .. }
                if !config.sources.iter().any(|s| &s.name == source) =>
            {
                let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
                diags.error(
                    c.name_span.clone(),
                    format!(
                        "check `{}` watches source `{source}`, which is not configured (configured: {})",
                        c.name,
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    ),
                );
            }
            Kind::DefinitionsAge {
                from: DefSource::Registry,
                ..
            } if !cfg!(windows) => diags.warning(
                c.type_span.clone(),
                format!(
                    "check `{}` reads SEP's registry values, which exist on Windows only; here it reports status `error`",
                    c.name
                ),
            ),
            _ => {}
        }
    }
}

struct Known {
    open: bool,
    names: HashSet<&'static str>,
    captures: HashSet<Sym>,
}

impl Known {
    fn of(config: &Config) -> Known {
        let mut k = Known {
            open: false,
            names: METADATA.iter().copied().collect(),
            captures: HashSet::new(),
        };
        for s in &config.sources {
            match s.parser().schema() {
                Schema::Open => k.open = true,
                Schema::Fixed(list) => k.names.extend(list.iter().copied()),
            }
        }
        for f in &config.filters {
            k.captures.extend(f.captures.iter().copied());
        }
        if !config.checks.is_empty() {
            k.names.extend(watchpost_checks::FIELDS.iter().copied());
        }
        if !config.rules.is_empty() {
            k.names.extend(crate::rules::FIELDS.iter().copied());
        }
        k
    }

    fn allows(&self, sym: Sym) -> bool {
        self.open || self.names.contains(sym.as_str()) || self.captures.contains(&sym)
    }

    fn suggest(&self, name: &str) -> Option<&'static str> {
        self.names
            .iter()
            .copied()
            .filter(|n| edit_distance(n, name) <= 2)
            .min_by_key(|n| edit_distance(n, name))
    }
}

fn check_variables(config: &Config, diags: &mut Diagnostics) {
    if config.sources.is_empty() && config.checks.is_empty() {
        return;
    }
    let known = Known::of(config);
    for action in &config.actions {
        for (sym, span) in action.variables() {
            if !known.allows(sym) {
                let hint = known
                    .suggest(sym.as_str())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                diags.error(
                    span,
                    format!("template variable `{sym}` can never exist: no configured source or regex capture produces it{hint}"),
                );
            }
        }
    }
    for f in &config.filters {
        for (sym, span) in &f.fields {
            if !known.allows(*sym) {
                let hint = known
                    .suggest(sym.as_str())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                diags.warning(
                    span.clone(),
                    format!("filter `{}` tests field `{sym}`, which no configured source produces{hint}", f.name),
                );
            }
        }
    }
}

fn check_paths(config: &Config, diags: &mut Diagnostics) {
    for s in &config.sources {
        for pattern in &s.paths {
            let dir = static_dir(pattern);
            match std::fs::read_dir(&dir) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => diags.warning(
                    s.path_span.clone(),
                    format!("source `{}`: directory {} does not exist (yet); watchpost will pick it up when it appears", s.name, dir.display()),
                ),
                Err(e) => diags.error(
                    s.path_span.clone(),
                    format!("source `{}`: cannot read directory {}: {e}", s.name, dir.display()),
                ),
            }
        }
    }
}

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

fn check_state_dir(config: &Config, diags: &mut Diagnostics) {
    let dir = &config.state_dir;
    let span = config.agent.state_dir.span();
    let mut probe = dir.as_path();
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => break,
        }
    }
    let test = probe.join(format!(".watchpost-write-test-{}", std::process::id()));
    match std::fs::write(&test, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&test);
        }
        Err(e) => diags.error(
            span,
            format!(
                "state_dir {}: {} is not writable: {e}",
                dir.display(),
                probe.display()
            ),
        ),
    }
}

/// Actions with a durable retry queue need `<state_dir>/queue/<name>/`; when it cannot be
/// made or written the action still runs, from memory (lost at a restart): a warning.
fn check_queue_dirs(config: &Config, diags: &mut Diagnostics) {
    for action in config.actions.iter().filter(|a| a.durable()) {
        let dir = config.state_dir.join("queue").join(action.name());
        let mut probe = dir.as_path();
        while !probe.exists() {
            match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p,
                _ => break,
            }
        }
        let problem = if !probe.is_dir() {
            Some(format!("{} is not a directory", probe.display()))
        } else {
            let test = probe.join(format!(".watchpost-write-test-{}", std::process::id()));
            match std::fs::write(&test, b"") {
                Ok(()) => {
                    let _ = std::fs::remove_file(&test);
                    None
                }
                Err(e) => Some(format!("{} is not writable: {e}", probe.display())),
            }
        };
        if let Some(why) = problem {
            diags.warning(
                action.name_span(),
                format!(
                    "the retry queue of `{}` cannot be kept in {} ({why}); its jobs will be kept in memory only and lost at a restart",
                    action.name(),
                    dir.display()
                ),
            );
        }
    }
}

/// Levenshtein distance (for "did you mean" hints; names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_dir_of_patterns() {
        assert_eq!(static_dir("/var/log/sep/*.Log"), Path::new("/var/log/sep"));
        assert_eq!(static_dir("/var/log/auth.log"), Path::new("/var/log"));
        assert_eq!(static_dir("logs/*/x.log"), Path::new("logs"));
        assert_eq!(static_dir("*.log"), Path::new("."));
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("risk_name", "risk_nam"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}
