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
    /// A fleet group's configuration with the host's own file on top (the rule of what
    /// each keeps is in `overlay.rs`).
    Fleet {
        /// The host's file (its `[fleet]`, `[agent]`, `[store]` and overrides); `None`
        /// for the group's configuration alone (the server checking a version).
        local: Option<PathBuf>,
        /// The group's configuration text, as the agent keeps it (or as published).
        group: GroupText,
        /// Where the group's files (Sigma rules, placeholder files) are.
        files: PathBuf,
    },
}

/// A group configuration's text: a file the agent keeps, or a text in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupText {
    /// A file.
    File(PathBuf),
    /// A text with the name its diagnostics give as the file.
    Text {
        /// Shown as the file name.
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
            ConfigSource::Fleet { local: Some(p), .. } => p.display().to_string(),
            ConfigSource::Fleet {
                group: GroupText::File(p),
                ..
            } => p.display().to_string(),
            ConfigSource::Fleet {
                group: GroupText::Text { name, .. },
                ..
            } => name.clone(),
        }
    }

    /// The file, when the configuration is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ConfigSource::File(p) | ConfigSource::Fleet { local: Some(p), .. } => Some(p),
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
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| {
            let mut diagnostics = Diagnostics::default();
            diagnostics.error(0..0, format!("cannot read the configuration: {e}"));
            Rejected {
                diagnostics,
                map: SourceMap::single(p.display().to_string(), String::new()),
            }
        })
    };
    let mut diags = Diagnostics::default();
    let (config, map) = match source {
        ConfigSource::BuiltIn => {
            let config = crate::parse(DEFAULT_CONFIG, &mut diags);
            (config, SourceMap::single(name, DEFAULT_CONFIG))
        }
        ConfigSource::Text { text, .. } => {
            let config = crate::parse(text, &mut diags);
            (config, SourceMap::single(name, text.clone()))
        }
        ConfigSource::File(p) => {
            let text = read(p)?;
            let config = crate::parse(&text, &mut diags);
            (config, SourceMap::single(name, text))
        }
        ConfigSource::Fleet {
            local,
            group,
            files,
        } => {
            let (group_name, group_text) = match group {
                GroupText::File(p) => (p.display().to_string(), read(p)?),
                GroupText::Text { name, text } => (name.clone(), text.clone()),
            };
            let local = match local {
                Some(p) => Some((p.display().to_string(), read(p)?)),
                None => None,
            };
            let mut map = SourceMap::single(group_name, group_text.clone());
            let base = group_text.len() + 1;
            let local_padded = local.as_ref().map(|(_, t)| crate::overlay::padded(base, t));
            if let Some((n, t)) = &local {
                map.files.push((n.clone(), t.clone(), base));
            }
            let g = crate::config::parse_table(&group_text, &mut diags);
            let l = match &local_padded {
                Some(t) => crate::config::parse_table(t, &mut diags).map(Some),
                None => Some(None),
            };
            let config = match (g, l) {
                (Some(g), Some(l)) => {
                    let doc = crate::overlay::merge(g, l, files, &mut diags);
                    let mut texts = vec![group_text.as_str()];
                    texts.extend(local.as_ref().map(|(_, t)| t.as_str()));
                    crate::config::parse_doc(doc, &texts, &mut diags)
                }
                _ => None,
            };
            (config, map)
        }
    };
    let chain = config
        .as_ref()
        .and_then(|c| crate::check::validate(c, &mut diags, purpose));
    match (config, chain) {
        (Some(config), Some(chain)) if !diags.has_errors() => {
            let mut watched: Vec<PathBuf> = source.path().map(PathBuf::from).into_iter().collect();
            if let ConfigSource::Fleet {
                group: GroupText::File(p),
                ..
            } = source
            {
                watched.push(p.clone());
            }
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
