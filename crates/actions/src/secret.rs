//! Secrets of delivering actions (a webhook's token or password, an SMTP password): named
//! in the configuration by where to find them (`…_env = "VAR"` or `…_file = "/path"`),
//! never written into it, and read at each delivery so a rotated secret is picked up
//! without a restart. Their values never appear in `Debug` output or messages.

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;
use watchpost_event::ConfigError;

/// Longest secret file read.
const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Where a secret is kept.
#[derive(Debug, Clone)]
pub(crate) enum SecretRef {
    /// An environment variable of watchpost's process.
    Env { name: String, span: Range<usize> },
    /// A file (its text, without the final line break).
    File { path: PathBuf, span: Range<usize> },
}

impl SecretRef {
    /// `<key>_env` or `<key>_file` (not both); `None` when neither is written.
    pub(crate) fn parse(
        env: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        key: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<SecretRef> {
        match (env, file) {
            (Some(e), Some(_)) => {
                errors.push(ConfigError::new(
                    e.span(),
                    format!("write `{key}_env` or `{key}_file`, not both"),
                ));
                None
            }
            (Some(e), None) => {
                let n = e.get_ref();
                if n.is_empty() || n.contains(['=', '\0']) {
                    errors.push(ConfigError::new(
                        e.span(),
                        "not an environment variable name",
                    ));
                    return None;
                }
                Some(SecretRef::Env {
                    name: n.clone(),
                    span: e.span(),
                })
            }
            (None, Some(f)) => {
                if f.get_ref().trim().is_empty() {
                    errors.push(ConfigError::new(f.span(), "the path is empty"));
                    return None;
                }
                Some(SecretRef::File {
                    path: PathBuf::from(f.get_ref()),
                    span: f.span(),
                })
            }
            (None, None) => None,
        }
    }

    /// The secret's value now.
    pub(crate) fn read(&self) -> Result<String, String> {
        match self {
            SecretRef::Env { name, .. } => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("environment variable {name} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {name} is not UTF-8"))
                }
            },
            SecretRef::File { path, .. } => {
                use std::io::Read as _;
                let f = std::fs::File::open(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let mut text = String::new();
                f.take(MAX_SECRET_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if text.len() as u64 > MAX_SECRET_BYTES {
                    return Err(format!("{} is larger than 64 KiB", path.display()));
                }
                let v = text.strip_suffix('\n').unwrap_or(&text);
                let v = v.strip_suffix('\r').unwrap_or(v);
                if v.is_empty() {
                    return Err(format!("{} is empty", path.display()));
                }
                Ok(v.to_owned())
            }
        }
    }

    /// For `check-config`: the variable is set, the file can be read.
    pub(crate) fn check(&self) -> Option<ConfigError> {
        let span = match self {
            SecretRef::Env { span, .. } | SecretRef::File { span, .. } => span.clone(),
        };
        self.read().err().map(|e| ConfigError::new(span, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_missing_variables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let file = SecretRef::File {
            path: p,
            span: 0..1,
        };
        assert_eq!(file.read().unwrap(), "s3cret");
        assert!(file.check().is_none());
        let env = SecretRef::Env {
            name: "WATCHPOST_TEST_SURELY_UNSET_VARIABLE".into(),
            span: 3..4,
        };
        let e = env.check().unwrap();
        assert!(
            e.message.contains("is not set") && e.span == (3..4),
            "{e:?}"
        );
        let mut errors = Vec::new();
        let both = SecretRef::parse(
            Some(&Spanned::new(0..1, "A".into())),
            Some(&Spanned::new(2..3, "/f".into())),
            "password",
            &mut errors,
        );
        assert!(both.is_none() && errors[0].message.contains("not both"));
    }
}
