//! `[[check]]` tables → [`CheckSpec`], every mistake with its place.

use std::ops::Range;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;
use watchpost_event::{ConfigError, parse_duration};

/// A `[[check]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckToml {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    grace: Option<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    // definitions_age
    #[serde(default)]
    max_age: Option<Spanned<String>>,
    #[serde(default)]
    registry: Option<Spanned<bool>>,
    #[serde(default)]
    sep_log: Option<Spanned<String>>,
    #[serde(default)]
    file: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    date_regex: Option<Spanned<String>>,
    #[serde(default)]
    date_format: Option<Spanned<String>>,
    // file
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    exists: Option<bool>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    sha256_not: Option<Spanned<String>>,
    // service
    #[serde(default)]
    services: Option<Spanned<Vec<String>>>,
    // source_silence
    #[serde(default)]
    source: Option<Spanned<String>>,
    #[serde(default)]
    after: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// Where `definitions_age` reads the definitions' date.
#[derive(Debug, Clone)]
pub enum DefSource {
    /// SEP's `public-opstate` registry values (Windows).
    Registry,
    /// The newest `def_info` (`YYYYMMDD.rrr`) in the newest SEP AV log matching the glob.
    SepLog(String),
    /// A file: its modification time, or a date inside it (`date_regex` + `date_format`).
    File {
        /// The file.
        path: String,
        /// How to find the date inside (capture group `date`).
        date: Option<(Regex, String)>,
    },
    /// A command's output (argv, no shell), a date found by `date_regex` / `date_format`.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// How to find the date (capture group `date`) and how to read it.
        date: (Regex, String),
    },
}

/// What a check looks at.
#[derive(Debug, Clone)]
pub enum Kind {
    /// The antivirus definitions are not older than `max_age`.
    DefinitionsAge {
        /// Oldest acceptable.
        max_age: Duration,
        /// Where the date comes from.
        from: DefSource,
    },
    /// A file exists (or not), and its SHA-256 equals or differs from a value.
    File {
        /// The file.
        path: String,
        /// Expected existence.
        exists: bool,
        /// Expected hash (lower-case hex).
        sha256: Option<String>,
        /// Hash it must not have.
        sha256_not: Option<String>,
    },
    /// Services are running.
    Service {
        /// systemd units (Linux) or service names (Windows).
        services: Vec<String>,
    },
    /// A source delivered something within `after`.
    SourceSilence {
        /// The source's name.
        source: String,
        /// Longest accepted quiet.
        after: Duration,
    },
}

impl Kind {
    /// The `type` name.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::DefinitionsAge { .. } => "definitions_age",
            Kind::File { .. } => "file",
            Kind::Service { .. } => "service",
            Kind::SourceSilence { .. } => "source_silence",
        }
    }
}

/// A checked `[[check]]`.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// Its name (also the `source` of its events).
    pub name: String,
    /// Where the name is written.
    pub name_span: Range<usize>,
    /// How often it runs.
    pub interval: Duration,
    /// How long a problem must last before it is reported.
    pub grace: Duration,
    /// What it looks at.
    pub kind: Kind,
    /// `enabled = false`.
    pub enabled: bool,
    /// The `type` value's place (for platform warnings).
    pub type_span: Range<usize>,
}

const TYPES: &str = "definitions_age, file, service, source_silence";

fn duration(
    v: &Option<Spanned<String>>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(s.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                errors.push(ConfigError::new(s.span(), "must be longer than 0"));
                default
            }
            Err(e) => {
                errors.push(ConfigError::new(s.span(), e));
                default
            }
        },
    }
}

fn date_finder(
    raw: &CheckToml,
    span: &Range<usize>,
    required: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<(Regex, String)> {
    match (&raw.date_regex, &raw.date_format) {
        (Some(re), fmt) => {
            let regex = match Regex::new(re.get_ref()) {
                Ok(r) if r.capture_names().flatten().any(|n| n == "date") => r,
                Ok(_) => {
                    errors.push(ConfigError::new(
                        re.span(),
                        "`date_regex` needs a capture group named `date`: (?P<date>...)",
                    ));
                    return None;
                }
                Err(e) => {
                    errors.push(ConfigError::new(
                        re.span(),
                        format!("bad regular expression: {e}"),
                    ));
                    return None;
                }
            };
            let format = fmt
                .as_ref()
                .map_or_else(|| "auto".to_owned(), |f| f.get_ref().clone());
            Some((regex, format))
        }
        (None, Some(f)) => {
            errors.push(ConfigError::new(
                f.span(),
                "`date_format` needs `date_regex`",
            ));
            None
        }
        (None, None) => {
            if required {
                errors.push(ConfigError::new(span.clone(), "a `command` source needs `date_regex` (with a `date` capture) to find the date in its output"));
            }
            None
        }
    }
}

/// Checks a `[[check]]` table; `None` with errors when it cannot run.
pub fn parse_check(raw: &CheckToml, errors: &mut Vec<ConfigError>) -> Option<CheckSpec> {
    let before = errors.len();
    let type_span = raw.kind.span();
    let interval = duration(&raw.interval, Duration::from_secs(300), errors);
    let grace = match &raw.grace {
        None => Duration::ZERO,
        Some(s) => parse_duration(s.get_ref()).unwrap_or_else(|e| {
            errors.push(ConfigError::new(s.span(), e));
            Duration::ZERO
        }),
    };
    // Keys that belong to other types are mistakes, not silently ignored.
    let mut foreign = |present: bool, key: &str, span: Range<usize>| {
        if present {
            errors.push(ConfigError::new(
                span,
                format!(
                    "`{key}` does not apply to a check of type \"{}\"",
                    raw.kind.get_ref()
                ),
            ));
        }
    };
    let def_keys = [
        ("max_age", raw.max_age.as_ref().map(|s| s.span())),
        ("registry", raw.registry.as_ref().map(|s| s.span())),
        ("sep_log", raw.sep_log.as_ref().map(|s| s.span())),
        ("file", raw.file.as_ref().map(|s| s.span())),
        ("command", raw.command.as_ref().map(|s| s.span())),
        ("date_regex", raw.date_regex.as_ref().map(|s| s.span())),
        ("date_format", raw.date_format.as_ref().map(|s| s.span())),
    ];
    let file_keys = [
        ("path", raw.path.as_ref().map(|s| s.span())),
        ("sha256", raw.sha256.as_ref().map(|s| s.span())),
        ("sha256_not", raw.sha256_not.as_ref().map(|s| s.span())),
    ];
    let svc_keys = [("services", raw.services.as_ref().map(|s| s.span()))];
    let silence_keys = [
        ("source", raw.source.as_ref().map(|s| s.span())),
        ("after", raw.after.as_ref().map(|s| s.span())),
    ];
    let t = raw.kind.get_ref().as_str();
    for (group, keys) in [
        ("definitions_age", &def_keys[..]),
        ("file", &file_keys[..]),
        ("service", &svc_keys[..]),
        ("source_silence", &silence_keys[..]),
    ] {
        if group != t {
            for (k, span) in keys {
                if let Some(span) = span {
                    foreign(true, k, span.clone());
                }
            }
        }
    }
    if t != "file" && raw.exists.is_some() {
        foreign(true, "exists", raw.name.span());
    }
    let kind = match t {
        "definitions_age" => {
            let max_age = match &raw.max_age {
                Some(_) => duration(&raw.max_age, Duration::from_secs(3 * 86_400), errors),
                None => {
                    errors.push(ConfigError::new(
                        type_span.clone(),
                        "a definitions_age check needs `max_age`, e.g. \"3d\"",
                    ));
                    Duration::ZERO
                }
            };
            let sources = [
                raw.registry
                    .as_ref()
                    .filter(|r| *r.get_ref())
                    .map(|s| s.span()),
                raw.sep_log.as_ref().map(|s| s.span()),
                raw.file.as_ref().map(|s| s.span()),
                raw.command.as_ref().map(|s| s.span()),
            ];
            let given: Vec<&Range<usize>> = sources.iter().flatten().collect();
            if given.len() != 1 {
                let at = given.get(1).map_or(type_span.clone(), |s| (*s).clone());
                errors.push(ConfigError::new(at, "a definitions_age check reads exactly one of `registry = true`, `sep_log`, `file`, `command`"));
                None
            } else if raw.registry.as_ref().is_some_and(|r| *r.get_ref()) {
                Some(DefSource::Registry)
            } else if let Some(g) = &raw.sep_log {
                Some(DefSource::SepLog(g.get_ref().clone()))
            } else if let Some(f) = &raw.file {
                let date = date_finder(raw, &f.span(), false, errors);
                Some(DefSource::File {
                    path: f.get_ref().clone(),
                    date,
                })
            } else if let Some(c) = &raw.command {
                if c.get_ref().is_empty() {
                    errors.push(ConfigError::new(c.span(), "`command` needs a program: [\"sigtool\", \"--info\", \"…\"]"));
                }
                date_finder(raw, &c.span(), true, errors).map(|date| DefSource::Command {
                    argv: c.get_ref().clone(),
                    date,
                })
            } else {
                None
            }
            .map(|from| Kind::DefinitionsAge { max_age, from })
        }
        "file" => {
            let Some(path) = &raw.path else {
                errors.push(ConfigError::new(
                    type_span.clone(),
                    "a file check needs `path`",
                ));
                return None;
            };
            let hex = |v: &Option<Spanned<String>>, errors: &mut Vec<ConfigError>| {
                v.as_ref().and_then(|s| {
                    let h = s.get_ref().trim().to_ascii_lowercase();
                    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Some(h)
                    } else {
                        errors.push(ConfigError::new(
                            s.span(),
                            "a SHA-256 is 64 hexadecimal digits",
                        ));
                        None
                    }
                })
            };
            let sha256 = hex(&raw.sha256, errors);
            let sha256_not = hex(&raw.sha256_not, errors);
            let exists = raw.exists.unwrap_or(true);
            if !exists && (sha256.is_some() || sha256_not.is_some()) {
                errors.push(ConfigError::new(
                    type_span.clone(),
                    "`exists = false` cannot also test a hash",
                ));
            }
            Some(Kind::File {
                path: path.get_ref().clone(),
                exists,
                sha256,
                sha256_not,
            })
        }
        "service" => match &raw.services {
            Some(s) if !s.get_ref().is_empty() => Some(Kind::Service {
                services: s.get_ref().clone(),
            }),
            Some(s) => {
                errors.push(ConfigError::new(
                    s.span(),
                    "`services` needs at least one name",
                ));
                None
            }
            None => {
                errors.push(ConfigError::new(
                    type_span.clone(),
                    "a service check needs `services = [\"…\"]`",
                ));
                None
            }
        },
        "source_silence" => match (&raw.source, &raw.after) {
            (Some(s), Some(_)) => Some(Kind::SourceSilence {
                source: s.get_ref().clone(),
                after: duration(&raw.after, Duration::from_secs(3600), errors),
            }),
            _ => {
                errors.push(ConfigError::new(
                    type_span.clone(),
                    "a source_silence check needs `source` and `after`",
                ));
                None
            }
        },
        other => {
            errors.push(ConfigError::new(
                type_span.clone(),
                format!("unknown check type `{other}` (known: {TYPES})"),
            ));
            None
        }
    };
    let kind = kind?;
    (errors.len() == before).then(|| CheckSpec {
        name: raw.name.get_ref().clone(),
        name_span: raw.name.span(),
        interval,
        grace,
        kind,
        enabled: raw.enabled,
        type_span,
    })
}
