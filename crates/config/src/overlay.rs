//! A fleet group's configuration with the host's own file on top: the one rule for what
//! each keeps.
//!
//! **The group's configuration is the base; the local file wins where it speaks.**
//!
//! * `[fleet]` comes from the local file only (how this host reaches the server is never
//!   pushed); a group configuration with `[fleet]` is an error.
//! * `[agent]` and `[store]`: each key the local file sets replaces the group's key of the
//!   same name (the state directory, the host name, the store's path stay the host's).
//! * `[[source]]`, `[[filter]]`, `[[action]]`, `[[check]]`, `[[rules]]`: a local entry
//!   whose `name` equals a group entry's replaces that entry, in the group's place (a
//!   filter keeps its rank in the chain); a local entry with a new name comes after the
//!   group's entries. So a host overrides a source's path, an action's target or a
//!   filter by naming it, and adds what only it has.
//! * A relative path in the group's `[[rules]]` (`sigma`, `placeholders_file`) names one
//!   of the group's files, kept by the agent in a folder of its own (`files`).
//!
//! Diagnostics name the text they come from: the group's as `group.toml` (or the name
//! given), the local file by its path (each text gets its own range of offsets in the
//! [`SourceMap`](crate::SourceMap)).

use std::borrow::Cow;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::diag::Diagnostics;

/// Sections whose entries are matched by `name`.
const NAMED: &[&str] = &["source", "filter", "action", "check", "rules"];
/// Sections merged key by key.
const KEYED: &[&str] = &["agent", "store"];

/// `text` parsed as if it started at byte `base` of one long text (leading spaces are
/// TOML whitespace), so its spans are unique across the texts of one configuration.
pub(crate) fn padded(base: usize, text: &str) -> String {
    let mut s = String::with_capacity(base + text.len());
    s.extend(std::iter::repeat_n(' ', base));
    s.push_str(text);
    s
}

/// The group's tree with the local one on top (see the [module documentation](self)).
/// `files`: where the group's files are, for its relative rule paths.
pub(crate) fn merge<'i>(
    mut group: DeTable<'i>,
    local: Option<DeTable<'i>>,
    files: &Path,
    diags: &mut Diagnostics,
) -> DeTable<'i> {
    if let Some((k, _)) = group.iter().find(|(k, _)| k.get_ref() == "fleet") {
        diags.error(
            k.span(),
            "a group configuration cannot contain [fleet]: how a host reaches the server stays in its own file",
        );
    }
    if let Some(rules) = group.iter_mut().find(|(k, _)| k.get_ref() == "rules")
        && let Some(arr) = as_array_mut(rules.1)
    {
        for entry in arr.iter_mut() {
            if let DeValue::Table(t) = entry.get_mut() {
                rebase_paths(t, files);
            }
        }
    }
    let Some(local) = local else {
        return group;
    };
    for (key, value) in local {
        let name = key.get_ref().to_string();
        let existing = group.iter_mut().find(|(k, _)| k.get_ref() == name.as_str());
        match existing {
            None => {
                group.insert(key, value);
            }
            Some((_, base)) if KEYED.contains(&name.as_str()) => {
                match (base.get_mut(), value.into_inner()) {
                    (DeValue::Table(b), DeValue::Table(l)) => {
                        for (k, v) in l {
                            b.insert(k, v);
                        }
                    }
                    (b, l) => *b = l,
                }
            }
            Some((_, base)) if NAMED.contains(&name.as_str()) => {
                let span = value.span();
                let (Some(b), DeValue::Array(l)) = (as_array_mut(base), value.into_inner()) else {
                    diags.error(
                        span,
                        format!("`{name}` must be written as [[{name}]] tables"),
                    );
                    continue;
                };
                let mut merged: Vec<Spanned<DeValue<'i>>> = b.iter().cloned().collect();
                for entry in l {
                    let n = crate::definition::table_name(entry.get_ref());
                    match merged
                        .iter_mut()
                        .find(|e| !n.is_empty() && crate::definition::table_name(e.get_ref()) == n)
                    {
                        Some(slot) => *slot = entry,
                        None => merged.push(entry),
                    }
                }
                *b = merged.into_iter().collect();
            }
            // [fleet] and anything unknown: the local file's, as written.
            Some((_, base)) => *base = value,
        }
    }
    group
}

fn as_array_mut<'a, 'i>(v: &'a mut Spanned<DeValue<'i>>) -> Option<&'a mut DeArray<'i>> {
    match Spanned::get_mut(v) {
        DeValue::Array(a) => Some(a),
        _ => None,
    }
}

/// `sigma` and `placeholders_file` relative to `files`.
fn rebase_paths(table: &mut DeTable<'_>, files: &Path) {
    let rebase = |s: &mut Cow<'_, str>| {
        if Path::new(s.as_ref()).is_relative() {
            *s = Cow::Owned(files.join(s.as_ref()).display().to_string());
        }
    };
    for (k, v) in table.iter_mut() {
        match (k.get_ref().as_ref(), v.get_mut()) {
            ("sigma" | "placeholders_file", DeValue::String(s)) => rebase(s),
            ("sigma", DeValue::Array(a)) => {
                for item in a.iter_mut() {
                    if let DeValue::String(s) = item.get_mut() {
                        rebase(s);
                    }
                }
            }
            _ => {}
        }
    }
}
