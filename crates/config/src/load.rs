//! Loading a configuration from where it lives, checked as a whole.

use std::path::PathBuf;

use watchpost_filters::Chain;

use crate::check::Purpose;
use crate::diag::{Diag, Diagnostics};
use crate::{Config, DEFAULT_CONFIG};

/// Where a configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The configuration built into the binary.
    BuiltIn,
    /// A file, read anew at every load.
    File(PathBuf),
    /// A text held in memory (pushed by a fleet server, written by a test), with the name
    /// its diagnostics give as the file.
    Text {
        /// Shown as the file name in diagnostics.
        name: String,
        /// The TOML text.
        text: String,
    },
}

impl ConfigSource {
    /// `None` for the built-in configuration, else the source (a command's `-c`).
    pub fn from_arg(path: Option<&std::path::Path>) -> ConfigSource {
        path.map_or(ConfigSource::BuiltIn, |p| ConfigSource::File(p.to_owned()))
    }

    /// The name diagnostics give as the file.
    pub fn name(&self) -> String {
        match self {
            ConfigSource::BuiltIn => "<built-in>".into(),
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Text { name, .. } => name.clone(),
        }
    }

    /// The file, when the configuration is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ConfigSource::File(p) => Some(p),
            _ => None,
        }
    }
}

/// The texts a configuration was read from, each with its range of byte offsets.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<(String, String, usize)>,
}

impl SourceMap {
    /// A map of one text starting at offset 0.
    pub fn single(name: impl Into<String>, text: impl Into<String>) -> SourceMap {
        SourceMap {
            files: vec![(name.into(), text.into(), 0)],
        }
    }

    /// The first text (the file itself).
    pub fn text(&self) -> &str {
        self.files.first().map_or("", |f| f.1.as_str())
    }

    /// The first text's name.
    pub fn name(&self) -> &str {
        self.files.first().map_or("", |f| f.0.as_str())
    }

    /// File name, line and column (1-based) of a diagnostic.
    pub fn locate(&self, d: &Diag) -> (String, usize, usize) {
        let (name, text, base) = self.file_of(d.span.start);
        let (line, col) = crate::diag::line_col(text, d.span.start - base);
        (name.to_owned(), line, col)
    }

    fn file_of(&self, offset: usize) -> (&str, &str, usize) {
        self.files
            .iter()
            .rev()
            .find(|f| f.2 <= offset)
            .map_or(("", "", 0), |f| (f.0.as_str(), f.1.as_str(), f.2))
    }

    /// Every diagnostic as `file:line:column: error: message`, the line and a caret,
    /// sorted by place.
    pub fn render(&self, diags: &Diagnostics) -> String {
        let mut out = String::new();
        for (name, text, base) in &self.files {
            let end = base + text.len() + 1;
            let mine = Diagnostics {
                items: diags
                    .items
                    .iter()
                    .filter(|d| (*base..end).contains(&d.span.start))
                    .map(|d| Diag {
                        span: d.span.start - base..d.span.end.saturating_sub(*base),
                        ..d.clone()
                    })
                    .collect(),
            };
            out.push_str(&mine.render(std::path::Path::new(name), text));
        }
        out
    }
}

/// A configuration without errors (warnings may have been found).
#[derive(Debug)]
pub struct Loaded {
    /// The parsed configuration.
    pub config: Config,
    /// Its filter chain, built.
    pub chain: Chain,
    /// Warnings.
    pub diagnostics: Diagnostics,
    /// Where its text came from.
    pub map: SourceMap,
    /// The files a change of which should reload it (`[agent] watch_config`): the file
    /// itself, rule folders, placeholder files and the fleet server's CA file.
    pub watched: Vec<PathBuf>,
}

impl Loaded {
    /// The warnings, rendered (empty without any).
    pub fn rendered(&self) -> String {
        self.map.render(&self.diagnostics)
    }
}

/// A configuration with errors: nothing of it may be used.
#[derive(Debug)]
pub struct Rejected {
    /// Every error and warning.
    pub diagnostics: Diagnostics,
    /// Where its text came from.
    pub map: SourceMap,
}

impl Rejected {
    /// Every diagnostic, rendered, then a closing count line.
    pub fn rendered(&self) -> String {
        format!(
            "{}{}: {} error(s), {} warning(s)\n",
            self.map.render(&self.diagnostics),
            self.map.name(),
            self.diagnostics.error_count(),
            self.diagnostics.warning_count()
        )
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered())
    }
}

impl std::error::Error for Rejected {}

/// Reads and checks a configuration. A file that cannot be read is a rejection too (one
/// diagnostic saying why).
pub fn load(source: &ConfigSource, purpose: Purpose) -> Result<Loaded, Rejected> {
    let name = source.name();
    let text = match source {
        ConfigSource::BuiltIn => DEFAULT_CONFIG.to_owned(),
        ConfigSource::Text { text, .. } => text.clone(),
        ConfigSource::File(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                let mut diagnostics = Diagnostics::default();
                diagnostics.error(0..0, format!("cannot read the configuration: {e}"));
                return Err(Rejected {
                    diagnostics,
                    map: SourceMap::single(name, String::new()),
                });
            }
        },
    };
    let mut diags = Diagnostics::default();
    let config = crate::parse(&text, &mut diags);
    let chain = config
        .as_ref()
        .and_then(|c| crate::check::validate(c, &mut diags, purpose));
    let map = SourceMap::single(name, text);
    match (config, chain) {
        (Some(config), Some(chain)) if !diags.has_errors() => {
            let mut watched: Vec<PathBuf> = source.path().map(PathBuf::from).into_iter().collect();
            for set in &config.rules {
                watched.extend(set.watched.iter().cloned());
            }
            if let Some((_, fleet)) = &config.fleet {
                watched.extend(fleet.ca_file.iter().cloned());
            }
            Ok(Loaded {
                config,
                chain,
                diagnostics: diags,
                map,
                watched,
            })
        }
        _ => Err(Rejected {
            diagnostics: diags,
            map,
        }),
    }
}

/// Settings a running daemon cannot change in place (a restart applies them): the state
/// directory (it holds positions, queues and baselines) and the event store. Each comes
/// back as an error at its place in the new configuration.
pub fn restart_only(old: &Config, new: &Config) -> Diagnostics {
    let mut d = Diagnostics::default();
    if old.state_dir != new.state_dir {
        d.error(
            new.agent.state_dir.span(),
            format!(
                "state_dir changed from {} to {}: a running watchpost keeps its positions, queues and baselines there; restart it to move them",
                old.state_dir.display(),
                new.state_dir.display()
            ),
        );
    }
    let (a, b) = (&old.store, &new.store);
    if a.enabled != b.enabled
        || a.path != b.path
        || a.max_age != b.max_age
        || a.max_bytes != b.max_bytes
    {
        d.error(
            0..0,
            "[store] changed: the event store's settings apply at the next start of watchpost, not on a reload",
        );
    }
    d
}
