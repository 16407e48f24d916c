//! Everything `check-config` verifies beyond syntax: the chain builds, action names
//! resolve, template variables can exist, paths are readable, the state directory is
//! writable. `run` and `test` go through the same checks before they start.

use std::collections::HashSet;

use watchpost_event::Sym;
use watchpost_filters::Chain;
use watchpost_sources::Schema;

use crate::config::Config;
use crate::diag::{Diagnostics, edit_distance};
use crate::paths::static_dir;

/// Names every event has, plus those that exist while an action runs.
const METADATA: &[&str] = &[
    "source", "host", "time", "raw", "filter", "actions", "anomaly",
];

/// What a configuration is loaded for, which decides how much of this system it is
/// checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `run` and `service install`: everything, as it is here.
    Run,
    /// `check-config`: everything, but the file may be checked elsewhere than where it
    /// runs: a path of the other platform, or a state directory this user may not write
    /// (the service's account may), is a warning.
    Check,
    /// `test`, `events`, `baseline`, …: nothing is followed and no action runs, so
    /// directories and action programs are not looked at.
    Offline,
}

/// Validates `config`; returns the built chain when there is no error.
pub fn validate(config: &Config, diags: &mut Diagnostics, purpose: Purpose) -> Option<Chain> {
    let names: Vec<&str> = config.actions.iter().map(|a| a.name()).collect();
    // Actions whose table had errors still resolve: the filters naming them are not the
    // mistake (and with those errors the chain is never used).
    let known: Vec<&str> = names
        .iter()
        .copied()
        .chain(config.failed.actions.iter().map(String::as_str))
        .collect();
    let resolve = |n: &str| known.iter().position(|a| *a == n);
    let chain = match Chain::build(config.filters.clone(), &resolve, &known) {
        Ok(c) => Some(c),
        Err(errs) => {
            diags.extend(errs);
            None
        }
    };
    if config.sources.is_empty() && config.checks.is_empty() && config.failed.sources.is_empty() {
        diags.warning(
            0..0,
            "no [[source]] is configured: `run` will have nothing to follow",
        );
    }
    check_variables(config, diags);
    check_checks(config, diags);
    for set in &config.rules {
        for (name, span) in &set.actions {
            if !known.contains(&name.as_str()) {
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
    if purpose != Purpose::Offline {
        for action in &config.actions {
            diags.extend(action.check());
        }
        diags.extend(watchpost_actions::check_allow_lists(&config.actions));
        if let Some((raw, spec)) = &config.fleet {
            // The CA file loads, the secret can be read (its value is never shown).
            diags.extend(spec.check(raw));
        }
        check_paths(config, diags);
        if check_state_dir(config, diags, purpose) {
            check_queue_dirs(config, diags);
        }
    }
    if diags.has_errors() { None } else { chain }
}

/// `[[check]]`s: a silent source must exist; SEP's registry exists on Windows only.
fn check_checks(config: &Config, diags: &mut Diagnostics) {
    use watchpost_checks::{DefSource, Kind};
    for c in &config.checks {
        match &c.kind {
            Kind::SourceSilence { source, .. }
                if !config.sources.iter().any(|s| &s.name == source)
                    && !config.failed.sources.contains(source) =>
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
            // A source or rule set with errors: which fields it would produce is unknown.
            open: !config.failed.sources.is_empty() || config.failed.rules > 0,
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
    // A field no source, check, rule set or regex capture produces: the test can never
    // hold, so the filter could never fire (a free-form source, such as JSON lines, the
    // journal or EVTX insertion strings, can produce any name).
    for f in &config.filters {
        for (sym, span) in &f.fields {
            if !known.allows(*sym) {
                let hint = known
                    .suggest(sym.as_str())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                diags.error(
                    span.clone(),
                    format!("filter `{}` tests field `{sym}`, which no configured source or regex capture produces{hint}", f.name),
                );
            }
        }
    }
}

fn check_paths(config: &Config, diags: &mut Diagnostics) {
    for s in &config.sources {
        for pattern in &s.paths {
            if let Some(platform) = watchpost_actions::foreign_platform_path(pattern) {
                diags.warning(
                    s.path_span.clone(),
                    format!("source `{}`: {pattern} is a {platform} path; it is followed on {platform} only", s.name),
                );
                continue;
            }
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

/// The state directory must be writable (or creatable). `false` when it is not usable
/// here (the retry queues inside it are then not looked at).
fn check_state_dir(config: &Config, diags: &mut Diagnostics, purpose: Purpose) -> bool {
    let dir = &config.state_dir;
    let span = config.agent.state_dir.span();
    if let Some(platform) = watchpost_actions::foreign_platform_path(&dir.to_string_lossy()) {
        let message = format!(
            "state_dir {} is a {platform} path: this configuration runs on {platform} only",
            dir.display()
        );
        match purpose {
            Purpose::Run => diags.error(span, message),
            _ => diags.warning(span, message),
        }
        return false;
    }
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
            true
        }
        // Checked by a user the service does not run as: `run` needs a user that can
        // write it (the service runs as root, or LocalSystem on Windows).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && purpose == Purpose::Check => {
            diags.warning(
                span,
                format!(
                    "state_dir {}: {} is not writable by this user ({e}); `run` needs a user who can write it, such as the service's (root, or LocalSystem on Windows), or set state_dir (WATCHPOST_STATE_DIR in the example configurations)",
                    dir.display(),
                    probe.display()
                ),
            );
            false
        }
        Err(e) => {
            diags.error(
                span,
                format!(
                    "state_dir {}: {} is not writable: {e}",
                    dir.display(),
                    probe.display()
                ),
            );
            false
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_dir_of_patterns() {
        use std::path::Path;
        assert_eq!(static_dir("/var/log/sep/*.Log"), Path::new("/var/log/sep"));
        assert_eq!(static_dir("/var/log/auth.log"), Path::new("/var/log"));
        assert_eq!(static_dir("logs/*/x.log"), Path::new("logs"));
        assert_eq!(static_dir("*.log"), Path::new("."));
    }
}
