//! The `flag_file` action: write (atomically) or remove a file whose path is a template.
//!
//! A rendered path is refused when it contains a NUL byte or a `..` component, or when
//! it is relative although the template is absolute; event data cannot walk out of the
//! directory the configuration names.

use std::io;
use std::path::{Component, Path, PathBuf};

use crossbeam_channel::Receiver;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::{Tpl, deserialize};
use crate::syslog::event_json;

/// What the action does with the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Create or replace the file.
    Write,
    /// Delete the file (a missing file is fine).
    Remove,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlagFile {
    path: Spanned<String>,
    mode: Option<Mode>,
    content: Option<Spanned<String>>,
    file_mode: Option<Spanned<String>>,
}

/// A validated `flag_file` action.
#[derive(Debug, Clone)]
pub(crate) struct FlagFileSpec {
    path: Tpl,
    absolute: bool,
    mode: Mode,
    /// `None`: the event as JSON.
    content: Option<Tpl>,
    file_mode: Option<u32>,
}

/// Why a flag file action failed.
#[derive(Debug, Error)]
pub(crate) enum FlagError {
    #[error("refusing flag file path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

impl FlagFileSpec {
    pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<FlagFileSpec, Vec<ConfigError>> {
        let raw: RawFlagFile = deserialize(table)?;
        let mut errors = Vec::new();
        let path = Tpl::parse(&raw.path, &mut errors);
        if raw.path.get_ref().trim().is_empty() {
            errors.push(ConfigError::new(raw.path.span(), "`path` is empty"));
        }
        let mode = raw.mode.unwrap_or(Mode::Write);
        let content = raw
            .content
            .as_ref()
            .and_then(|c| Tpl::parse(c, &mut errors));
        let file_mode = raw.file_mode.as_ref().and_then(|m| {
            let parsed = u32::from_str_radix(m.get_ref(), 8)
                .ok()
                .filter(|v| *v <= 0o7777);
            if parsed.is_none() {
                errors.push(ConfigError::new(
                    m.span(),
                    "`file_mode` is an octal permission string like \"0640\"",
                ));
            }
            parsed
        });
        if mode == Mode::Remove {
            let misplaced = [
                ("content", raw.content.as_ref()),
                ("file_mode", raw.file_mode.as_ref()),
            ];
            for (key, v) in misplaced {
                if let Some(v) = v {
                    errors.push(ConfigError::new(
                        v.span(),
                        format!("`{key}` only applies to mode = \"write\""),
                    ));
                }
            }
        }
        match path {
            Some(path) if errors.is_empty() => Ok(FlagFileSpec {
                absolute: Path::new(path.literal_prefix()).has_root(),
                path,
                mode,
                content,
                file_mode,
            }),
            _ => Err(errors),
        }
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        std::iter::once(&self.path).chain(&self.content)
    }

    /// The directory the file goes in must exist, or its nearest existing ancestor must be a
    /// writable directory (so it can be created).
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let span = self.path.span.clone().unwrap_or_default();
        let prefix = self.path.literal_prefix();
        let dir = if self.path.template.is_constant() {
            Path::new(prefix)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        } else {
            match prefix.rfind(['/', std::path::MAIN_SEPARATOR]) {
                Some(i) => PathBuf::from(&prefix[..=i]),
                None => PathBuf::new(),
            }
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
            return vec![ConfigError::new(
                span,
                format!("no part of `{}` exists", dir.display()),
            )];
        };
        match std::fs::metadata(existing) {
            Ok(m) if !m.is_dir() => vec![ConfigError::new(
                span,
                format!(
                    "cannot create `{}`: `{}` is not a directory",
                    dir.display(),
                    existing.display()
                ),
            )],
            Ok(m) if m.permissions().readonly() => {
                vec![ConfigError::new(
                    span,
                    format!("`{}` is read-only", existing.display()),
                )]
            }
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigError::new(
                span,
                format!("`{}`: {e}", existing.display()),
            )],
        }
    }

    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        crate::control::serve(name, rx, counters, ctl, |job| self.apply(job));
    }

    fn apply(&self, job: &Job) -> Result<(), FlagError> {
        let scope = job.scope();
        let rendered = self.path.template.render(&scope);
        let path = checked_path(&rendered, self.absolute)?;
        match self.mode {
            Mode::Write => {
                let content = match &self.content {
                    Some(t) => t.template.render(&scope),
                    None => event_json(&scope) + "\n",
                };
                watchpost_support::write_atomic_with(
                    &path,
                    content.as_bytes(),
                    watchpost_support::AtomicWrite {
                        mode: self.file_mode,
                        unique_tmp: true,
                    },
                )
                .map_err(|source| FlagError::Write { path, source })
            }
            Mode::Remove => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(FlagError::Remove { path, source: e })
                }
                _ => Ok(()),
            },
        }
    }
}

/// Validates a rendered path.
fn checked_path(rendered: &str, absolute_template: bool) -> Result<PathBuf, FlagError> {
    let bad = |why| {
        Err(FlagError::BadPath {
            path: rendered.to_owned(),
            why,
        })
    };
    if rendered.is_empty() {
        return bad("it is empty");
    }
    if rendered.contains('\0') {
        return bad("it contains a NUL byte");
    }
    let path = Path::new(rendered);
    if path.components().any(|c| c == Component::ParentDir)
        || rendered.split(['/', '\\']).any(|c| c == "..")
    {
        return bad("it contains a `..` component");
    }
    if absolute_template && !path.has_root() {
        return bad("the template is absolute but the rendered path is relative");
    }
    if path.file_name().is_none() {
        return bad("it names no file");
    }
    Ok(path.to_path_buf())
}

impl crate::kind::ActionKind for FlagFileSpec {
    fn kind(&self) -> &'static str {
        "flag_file"
    }

    fn templates(&self) -> Vec<&Tpl> {
        FlagFileSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        FlagFileSpec::check(self)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        FlagFileSpec::work(self, name, rx, counters, ctl);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;

    #[test]
    fn traversal_and_nul_are_refused() {
        assert!(checked_path("/var/flags/a/../../etc/passwd", true).is_err());
        assert!(checked_path("/var/flags/..", true).is_err());
        assert!(checked_path("/var/flags/a\0b", true).is_err());
        assert!(checked_path("relative/x", true).is_err());
        assert!(checked_path("", false).is_err());
        assert!(checked_path("/var/flags/..x", true).is_ok());
        assert!(checked_path("relative/x", false).is_ok());
    }

    #[test]
    fn config_errors_have_places() {
        let text = "[[action]]\nname = \"f\"\ntype = \"flag_file\"\npath = \"/tmp/{{ host\"\nfile_mode = \"rw\"\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].span.start, text.find("{{").unwrap());
        assert_eq!(at(text, &errs[1].span), "\"rw\"");
        let text = "[[action]]\nname = \"f\"\ntype = \"flag_file\"\npath = \"/tmp/x\"\nmode = \"remove\"\ncontent = \"x\"\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(at(text, &errs[0].span), "\"x\"");
    }

    #[test]
    fn check_looks_at_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let ok = format!(
            "[[action]]\nname = \"f\"\ntype = \"flag_file\"\npath = '{}/new/{{{{ host }}}}.flag'\n",
            dir.path().display()
        );
        assert!(parse_ok(&ok).check().is_empty());
        let bad = format!(
            "[[action]]\nname = \"f\"\ntype = \"flag_file\"\npath = '{}/sub/x.flag'\n",
            file.display()
        );
        let errs = parse_ok(&bad).check();
        assert!(errs[0].message.contains("not a directory"), "{errs:?}");
    }
}
