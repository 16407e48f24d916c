//! Loading the TOML configuration into typed parts, collecting every problem with its place.
//!
//! The file is parsed once into toml's spanned tree ([`DeTable`]); each section is then
//! read on its own (`[agent]` and `[[source]]` through serde with `deny_unknown_fields`,
//! `[[filter]]` and `[[action]]` by their crates), so one bad entry does not hide the
//! problems of the next. Environment references `${NAME}` / `${NAME:-default}` are
//! expanded inside path values only, so byte spans stay true to the file.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use watchpost_actions::ActionSpec;
use watchpost_event::ConfigError;
use watchpost_filters::FilterSpec;
use watchpost_sources::Format;

use crate::diag::Diagnostics;

/// The configuration built into the binary (`watchpost run` without `-c`).
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// `[agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where checkpoints and other state live.
    #[serde(default = "default_state_dir")]
    pub state_dir: Spanned<String>,
    /// Overrides this machine's host name (used when a record names no computer).
    #[serde(default)]
    pub host: Option<String>,
    /// How often positions are written to disk (they are also written at shutdown).
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// Log every fired filter at info level (default true), at most 200 lines a second;
    /// beyond that one line a second counts the rest.
    #[serde(default = "yes")]
    pub log_fired: bool,
    /// What reading does when an action's queue is full: `wait` (default: the source
    /// pauses, its unread lines stay in the file, nothing is lost) or `drop` (the event is
    /// dropped for that action and counted; reading never pauses).
    #[serde(default)]
    pub when_queue_full: WhenFull,
    /// Where to serve Prometheus metrics (`GET /metrics`); off when absent. A bare port
    /// binds loopback.
    #[serde(default)]
    pub metrics: Option<Spanned<String>>,
    /// Reload when the configuration file, or a file it names (rule folders, placeholder
    /// files), changes (default false).
    #[serde(default)]
    pub watch_config: bool,
}

/// `[agent] when_queue_full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Pause reading until the action catches up.
    #[default]
    Wait,
    /// Drop the event for that action and count it.
    Drop,
}

fn default_state_dir() -> Spanned<String> {
    Spanned::new(
        0..0,
        "${WATCHPOST_STATE_DIR:-/var/lib/watchpost}".to_owned(),
    )
}
fn default_checkpoint_ms() -> u64 {
    1000
}
fn yes() -> bool {
    true
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: default_state_dir(),
            host: None,
            checkpoint_interval_ms: default_checkpoint_ms(),
            log_fired: true,
            when_queue_full: WhenFull::Wait,
            metrics: None,
            watch_config: false,
        }
    }
}

/// `[store]`: the event store (every event a filter matched, with anomaly flags,
/// acknowledgements and action outcomes) and how long it keeps them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreToml {
    /// Keep matched events (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The database file (default `<state_dir>/events.db`).
    #[serde(default)]
    pub path: Option<String>,
    /// Delete events stored longer ago than this (default `90d`; `"0"` keeps them).
    #[serde(default)]
    pub max_age: Option<Spanned<String>>,
    /// Delete the oldest events while the file is larger (default `1GiB`; `"0"` no limit).
    #[serde(default)]
    pub max_size: Option<Spanned<String>>,
}

/// `[console]`: the web console over the event store (off unless this section is
/// written).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleToml {
    /// Where it listens (a bare port binds 127.0.0.1; plain HTTP, so loopback only).
    pub listen: Spanned<String>,
    /// The user file (default `<state_dir>/console-users.toml`).
    #[serde(default)]
    pub users: Option<String>,
}

/// `[console]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The user file.
    pub users: PathBuf,
}

impl ConsoleConfig {
    fn from_toml(
        t: &ConsoleToml,
        state_dir: &Path,
        store: &StoreConfig,
        diags: &mut Diagnostics,
    ) -> Option<ConsoleConfig> {
        let listen = match crate::address::parse_address(t.listen.get_ref()) {
            Ok(a) => a,
            Err(e) => {
                diags.error(t.listen.span(), e);
                return None;
            }
        };
        if !listen.ip().is_loopback() {
            diags.error(
                t.listen.span(),
                format!(
                    "the agent's console speaks plain HTTP, so it listens on loopback only ({listen} is not); reach it through an SSH tunnel, or use the fleet server's console (HTTPS)"
                ),
            );
            return None;
        }
        if !store.enabled {
            diags.error(
                t.listen.span(),
                "[console] shows what the event store keeps: turn [store] back on (enabled = true)",
            );
            return None;
        }
        Some(ConsoleConfig {
            listen,
            users: t
                .users
                .as_ref()
                .map(|p| PathBuf::from(expand_env(p)))
                .unwrap_or_else(|| state_dir.join("console-users.toml")),
        })
    }
}

/// The event store's settings, checked.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Whether events are stored.
    pub enabled: bool,
    /// The database file.
    pub path: PathBuf,
    /// Retention by age.
    pub max_age: Option<std::time::Duration>,
    /// Retention by size.
    pub max_bytes: Option<u64>,
}

impl StoreConfig {
    fn from_toml(t: Option<&StoreToml>, state_dir: &Path, diags: &mut Diagnostics) -> StoreConfig {
        let mut c = StoreConfig {
            enabled: t.is_none_or(|t| t.enabled),
            path: t
                .and_then(|t| t.path.as_ref())
                .map(|p| PathBuf::from(expand_env(p)))
                .unwrap_or_else(|| state_dir.join("events.db")),
            max_age: Some(std::time::Duration::from_secs(90 * 86_400)),
            max_bytes: Some(1 << 30),
        };
        if let Some(age) = t.and_then(|t| t.max_age.as_ref()) {
            match watchpost_event::parse_duration(age.get_ref()) {
                Ok(d) => c.max_age = (!d.is_zero()).then_some(d),
                Err(e) => diags.error(age.span(), e),
            }
        }
        if let Some(size) = t.and_then(|t| t.max_size.as_ref()) {
            match watchpost_event::parse_size(size.get_ref()) {
                Ok(n) => c.max_bytes = (n != 0).then_some(n),
                Err(e) => diags.error(size.span(), e),
            }
        }
        c
    }
}

/// `path = "…"` or `path = ["…", "…"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One pattern.
    One(String),
    /// Several patterns.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceToml {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    path: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    start_at: Option<Spanned<String>>,
    #[serde(default)]
    encoding: Option<Spanned<String>>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    max_line_bytes: Option<usize>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    units: Vec<String>,
    #[serde(default)]
    identifiers: Vec<String>,
    #[serde(default)]
    directory: Option<String>,
    #[serde(default)]
    channels: Option<Spanned<Vec<ChannelToml>>>,
    #[serde(default)]
    query: Option<Spanned<String>>,
    #[serde(default)]
    render_message: Option<Spanned<bool>>,
    #[serde(default)]
    batch_size: Option<Spanned<i64>>,
    #[serde(default = "yes")]
    enabled: bool,
}

/// One entry of `channels = [...]`: a channel name, or `{ name = "…", query = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChannelToml {
    Name(String),
    Table(ChannelTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelTable {
    name: String,
    #[serde(default)]
    query: Option<String>,
}

/// `type = "windows_event_log"`: which channels to follow and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinEvtConfig {
    /// Channels with their XPath queries (a channel's own, else the source's `query`).
    pub channels: Vec<watchpost_sources::winevtlog::ChannelSpec>,
    /// Add the rendered message text as `message` (default true).
    pub render_message: bool,
    /// Events pulled per channel at once (default 100).
    pub batch_size: usize,
}

/// `type = "journald"`: which part of the journal to follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalConfig {
    /// Only these systemd units (`journalctl --unit`).
    pub units: Vec<String>,
    /// Only these syslog identifiers (`journalctl --identifier`).
    pub identifiers: Vec<String>,
    /// A directory of journal files instead of the system journal.
    pub directory: Option<String>,
}

/// Where a file source starts in files that exist at its first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Read them whole.
    Beginning,
    /// Only what is written from now on (default).
    End,
}

/// A `[[source]]` ready to open.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique name.
    pub name: String,
    /// Where the name is written.
    pub name_span: Range<usize>,
    /// The format.
    pub format: Format,
    /// Glob patterns, environment references expanded.
    pub paths: Vec<String>,
    /// Where `path` (or `listen`) is written.
    pub path_span: Range<usize>,
    /// A network address to receive on instead of files (`udp://…`, `tcp://…`).
    pub listen: Option<String>,
    /// Globs to skip.
    pub exclude: Vec<String>,
    /// Start position for files without a checkpoint at the first start.
    pub start_at: StartAt,
    /// `auto`, `utf-8`, `utf-16le`, `utf-16be`.
    pub encoding: String,
    /// Time zone name for local-time formats (`None` = the system's).
    pub timezone: Option<jiff::tz::TimeZone>,
    /// Longest record accepted.
    pub max_line_bytes: usize,
    /// Host name override for this source.
    pub host: Option<String>,
    /// `type = "text"`: a regular expression whose named captures become fields.
    pub pattern: Option<regex::Regex>,
    /// `type = "journald"`: what to follow.
    pub journal: Option<JournalConfig>,
    /// `type = "windows_event_log"`: what to follow.
    pub winevt: Option<WinEvtConfig>,
}

impl SourceConfig {
    /// The parser for this source's records.
    pub fn parser(&self) -> Box<dyn watchpost_sources::Parser> {
        match (&self.pattern, self.format) {
            (Some(re), Format::Text) => Box::new(watchpost_sources::textlog::TextParser::new(
                Some(re.clone()),
            )),
            _ => self.format.parser(),
        }
    }
}

/// The whole configuration.
#[derive(Debug)]
pub struct Config {
    /// `[agent]`.
    pub agent: AgentConfig,
    /// The state directory, environment references expanded.
    pub state_dir: PathBuf,
    /// Enabled sources.
    pub sources: Vec<SourceConfig>,
    /// Filters in file order.
    pub filters: Vec<FilterSpec>,
    /// Actions in file order.
    pub actions: Vec<ActionSpec>,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[[check]]`s (enabled ones).
    pub checks: Vec<watchpost_checks::CheckSpec>,
    /// `[[rules]]`: Sigma rule sets (enabled ones, loaded).
    pub rules: Vec<crate::rules::RuleSet>,
    /// `[agent] metrics`, parsed: where the Prometheus endpoint listens.
    pub metrics: Option<std::net::SocketAddr>,
    /// `[console]`, checked: the web console.
    pub console: Option<ConsoleConfig>,
    /// `[fleet]`, checked (with the section as written, for the places of later checks).
    pub fleet: Option<(watchpost_fleet::RawFleet, watchpost_fleet::FleetSpec)>,
    /// Which configuration this is: a digest of its text (reported to the fleet server).
    pub digest: String,
    /// What each named part is, for telling a reload what changed.
    pub definitions: crate::Definitions,
    /// Entries that could not be read (their errors are reported): the checks across
    /// sections leave them alone instead of reporting each reference to them.
    pub failed: Failed,
}

/// `[[source]]`, `[[action]]` and `[[rules]]` entries with errors, by name ("" when the
/// name itself could not be read).
#[derive(Debug, Default)]
pub struct Failed {
    /// Sources: the fields they would produce are unknown.
    pub sources: Vec<String>,
    /// Actions: filters naming them are not in error.
    pub actions: Vec<String>,
    /// Rule sets: the fields their detections would add are unknown.
    pub rules: usize,
}

const SOURCE_TYPES: &str = "sep_av_log, sep_security_log, sep_traffic_log, sep_system_log, sep_process_log, sep_manager_syslog, jsonl, text, journald, evtx, windows_event_log";

/// Parses `text`; every problem lands in `diags`. `None` only for syntax errors (the
/// configuration may be partial otherwise: check `diags`).
pub fn parse(text: &str, diags: &mut Diagnostics) -> Option<Config> {
    let doc = parse_table(text, diags)?;
    parse_doc(doc, &[text], diags)
}

/// `text` as toml's spanned tree, `${…}` references expanded; `None` after a syntax error
/// (only the first is reported: the parser's recovery after it, such as a missing `}`
/// swallowing the tables that follow, produces errors that are not in the file).
pub(crate) fn parse_table<'i>(text: &'i str, diags: &mut Diagnostics) -> Option<DeTable<'i>> {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if let Some(e) = syntax
        .iter()
        .min_by_key(|e| e.span().map_or(0, |s| s.start))
    {
        diags.error(e.span().unwrap_or(0..0), e.message().to_owned());
        return None;
    }
    let mut doc = doc.into_inner();
    expand_tree(&mut doc);
    Some(doc)
}

/// The configuration of a parsed tree; `texts` are what it was read from (their digest
/// says which configuration runs).
pub(crate) fn parse_doc(
    doc: DeTable<'_>,
    texts: &[&str],
    diags: &mut Diagnostics,
) -> Option<Config> {
    let mut agent = AgentConfig::default();
    let mut store_toml: Option<StoreToml> = None;
    let mut console_toml: Option<ConsoleToml> = None;
    let mut fleet_raw: Option<(watchpost_fleet::RawFleet, std::ops::Range<usize>, u64)> = None;
    let (mut sources, mut filters, mut actions) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed = Failed::default();
    let mut checks = Vec::new();
    let mut rules = Vec::new();
    let mut defs = crate::Definitions::default();
    for (key, value) in doc.iter() {
        record_definitions(key.get_ref(), value, &mut defs);
        let k: &str = key.get_ref();
        match k {
            "agent" => match AgentConfig::deserialize(value.clone().into_deserializer()) {
                Ok(a) => agent = a,
                Err(e) => diags.toml_error(&e, value.span()),
            },
            "store" => match StoreToml::deserialize(value.clone().into_deserializer()) {
                Ok(t) => store_toml = Some(t),
                Err(e) => diags.toml_error(&e, value.span()),
            },
            "console" => match ConsoleToml::deserialize(value.clone().into_deserializer()) {
                Ok(t) => console_toml = Some(t),
                Err(e) => diags.toml_error(&e, value.span()),
            },
            "fleet" => match watchpost_fleet::RawFleet::deserialize(value.clone().into_deserializer()) {
                Ok(t) => {
                    let fp = crate::definition::fingerprint(value.get_ref());
                    fleet_raw = Some((t, key.span(), fp));
                }
                Err(e) => diags.toml_error(&e, value.span()),
            },
            "source" => for_each_entry(value, "source", diags, |v, d| {
                let before = d.error_count();
                match parse_source(v, d) {
                    Some(s) => sources.push(s),
                    None if d.error_count() > before => failed.sources.push(entry_name(v)),
                    None => {}
                }
            }),
            "filter" => for_each_entry(value, "filter", diags, |v, d| {
                let (spec, errs) = watchpost_filters::parse_filter(v);
                filters.push(spec);
                d.extend(errs);
            }),
            "action" => {
                for_each_entry(
                    value,
                    "action",
                    diags,
                    |v, d| match watchpost_actions::parse_action(v.clone()) {
                        Ok(a) => actions.push(a),
                        Err(errs) => {
                            failed.actions.push(entry_name(v));
                            d.extend(errs);
                        }
                    },
                )
            }
            "check" => for_each_entry(value, "check", diags, |v, d| {
                match watchpost_checks::CheckToml::deserialize(v.clone().into_deserializer()) {
                    Ok(raw) => {
                        let mut errs = Vec::new();
                        if let Some(c) = watchpost_checks::parse_check(&raw, &mut errs)
                            && c.enabled
                        {
                            checks.push(c);
                        }
                        d.extend(errs);
                    }
                    Err(e) => d.toml_error(&e, v.span()),
                }
            }),
            "rules" => for_each_entry(value, "rules", diags, |v, d| {
                let before = d.error_count();
                match crate::rules::parse(v, d) {
                    Some(r) => rules.push(r),
                    None if d.error_count() > before => failed.rules += 1,
                    None => {}
                }
            }),
            other => diags.error(
                key.span(),
                format!(
                    "unknown section `{other}` (known: [agent], [store], [console], [fleet], [[source]], [[filter]], [[action]], [[check]], [[rules]])"
                ),
            ),
        }
    }
    check_unique(
        sources
            .iter()
            .map(|s| (s.name.as_str(), s.name_span.clone())),
        "source",
        diags,
    );
    check_unique(
        actions.iter().map(|a| (a.name(), a.name_span())),
        "action",
        diags,
    );
    // Two jsonl_file actions on one file would each rotate it by their own count.
    let mut files = std::collections::HashSet::new();
    for (path, span) in actions.iter().filter_map(|a| a.appends_to()) {
        if !files.insert(path) {
            diags.error(
                span,
                format!(
                    "another jsonl_file action appends to `{}`: each would rotate it by its own count; let both filters name one action",
                    path.display()
                ),
            );
        }
    }
    // A check's events carry its name as their source: it must not clash with a source.
    let mut taken: std::collections::HashSet<&str> =
        sources.iter().map(|s| s.name.as_str()).collect();
    for c in &checks {
        if !taken.insert(c.name.as_str()) {
            diags.error(
                c.name_span.clone(),
                format!(
                    "check name `{}` is used twice (checks and sources share names: a check's events have it as their source)",
                    c.name
                ),
            );
        }
    }
    let state_dir = PathBuf::from(expand_env(agent.state_dir.get_ref()));
    for a in &mut actions {
        a.set_state_dir(&state_dir);
    }
    let store = StoreConfig::from_toml(store_toml.as_ref(), &state_dir, diags);
    let console = console_toml
        .as_ref()
        .and_then(|t| ConsoleConfig::from_toml(t, &state_dir, &store, diags));
    let fleet = fleet_raw.and_then(|(raw, at, fp)| {
        let mut errs = Vec::new();
        let spec = watchpost_fleet::FleetSpec::parse(&raw, state_dir.clone(), &mut errs);
        for e in &mut errs {
            if e.span == (0..0) {
                e.span = at.clone();
            }
        }
        diags.extend(errs);
        if spec.is_some() && !store.enabled {
            diags.error(
                at.clone(),
                "[fleet] ships what the event store keeps: turn [store] back on (enabled = true)",
            );
        }
        let spec = spec?;
        // The shipper also reads the CA and secret files, and reports the host's name:
        // a change of any of them restarts it.
        let files: Vec<PathBuf> = spec
            .ca_file
            .iter()
            .chain(spec.secret_file())
            .cloned()
            .collect();
        // The server stays reachable from a quarantined host (to be released from it).
        match spec.server_addrs() {
            Ok(peers) => {
                for a in &mut actions {
                    a.keep_reachable(&peers);
                }
            }
            Err(e) => diags.warning(
                at.clone(),
                format!("{e}: a quarantine would not leave the fleet server reachable"),
            ),
        }
        let stamp = (crate::rules::files_stamp(&files), agent.host.clone());
        defs.fleet
            .push(("fleet".into(), crate::definition::mix(fp, &stamp)));
        Some((raw, spec))
    });
    // FNV-1a over the text: which configuration runs, for the fleet server.
    let digest = format!(
        "{:016x}",
        texts
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (i > 0).then_some(0u8).into_iter().chain(t.bytes()))
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    );
    let metrics = agent.metrics.as_ref().and_then(|m| {
        crate::address::parse_address(m.get_ref())
            .map_err(|e| diags.error(m.span(), e))
            .ok()
    });
    // What every source shares from [agent]: a change restarts them all.
    let shared = (agent.host.clone(), agent.checkpoint_interval_ms);
    for (_, fp) in &mut defs.sources {
        *fp = crate::definition::mix(*fp, &shared);
    }
    for (_, fp) in &mut defs.checks {
        *fp = crate::definition::mix(*fp, &agent.host);
    }
    for (name, fp) in &mut defs.rules {
        if let Some(set) = rules
            .iter()
            .find(|r: &&crate::rules::RuleSet| &r.name == name)
        {
            *fp = crate::definition::mix(*fp, &set.files_stamp);
        }
    }
    // Returned even with errors, so later checks can report their problems too.
    Some(Config {
        agent,
        state_dir,
        sources,
        filters,
        actions,
        store,
        checks,
        rules,
        metrics,
        console,
        fleet,
        digest,
        definitions: defs,
        failed,
    })
}

/// Notes the fingerprint of every named table of a section (disabled ones are left out:
/// to the running daemon they do not exist).
fn record_definitions(section: &str, value: &Spanned<DeValue<'_>>, defs: &mut crate::Definitions) {
    use crate::definition::{fingerprint, table_name};
    let list = match section {
        "source" => &mut defs.sources,
        "filter" => &mut defs.filters,
        "action" => &mut defs.actions,
        "check" => &mut defs.checks,
        "rules" => &mut defs.rules,
        _ => return,
    };
    let Some(items) = value.get_ref().as_array() else {
        return;
    };
    for item in items {
        let v = item.get_ref();
        let disabled = matches!(v, DeValue::Table(t) if matches!(
            t.get("enabled").map(|e| e.get_ref()),
            Some(DeValue::Boolean(false))
        ));
        if !disabled {
            list.push((table_name(v), fingerprint(v)));
        }
    }
}

/// The `name` of a table that could not be read, or "" when it has none.
fn entry_name(v: &Spanned<DeValue<'_>>) -> String {
    v.get_ref()
        .as_table()
        .and_then(|t| t.get("name"))
        .and_then(|n| n.get_ref().as_str())
        .unwrap_or_default()
        .to_owned()
}

fn for_each_entry(
    value: &Spanned<DeValue<'_>>,
    what: &str,
    diags: &mut Diagnostics,
    mut f: impl FnMut(&Spanned<DeValue<'_>>, &mut Diagnostics),
) {
    match value.get_ref().as_array() {
        Some(arr) => arr.iter().for_each(|v| f(v, diags)),
        None => diags.error(
            value.span(),
            format!("`{what}` must be written as [[{what}]] tables"),
        ),
    }
}

fn check_unique<'a>(
    names: impl Iterator<Item = (&'a str, Range<usize>)>,
    what: &str,
    diags: &mut Diagnostics,
) {
    let mut seen = std::collections::HashSet::new();
    for (name, span) in names {
        if !seen.insert(name.to_owned()) {
            diags.error(span, format!("{what} name `{name}` is used twice"));
        }
    }
}

fn parse_source(v: &Spanned<DeValue<'_>>, diags: &mut Diagnostics) -> Option<SourceConfig> {
    let raw = match SourceToml::deserialize(v.clone().into_deserializer()) {
        Ok(r) => r,
        Err(e) => {
            diags.toml_error(&e, v.span());
            return None;
        }
    };
    if !raw.enabled {
        return None;
    }
    let format = Format::from_name(raw.kind.get_ref());
    if format.is_none() {
        diags.error(
            raw.kind.span(),
            format!(
                "unknown source type `{}` (known: {SOURCE_TYPES})",
                raw.kind.get_ref()
            ),
        );
    }
    let start_at = match raw.start_at.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("end") => StartAt::End,
        Some("beginning") => StartAt::Beginning,
        Some(other) => {
            let span = raw.start_at.as_ref().map(|s| s.span()).unwrap_or_default();
            diags.error(
                span,
                format!("start_at = \"{other}\": use \"beginning\" or \"end\""),
            );
            StartAt::End
        }
    };
    let encoding = raw
        .encoding
        .as_ref()
        .map(|e| e.get_ref().clone())
        .unwrap_or_else(|| "auto".into());
    if !["auto", "utf-8", "utf-16le", "utf-16be"].contains(&encoding.as_str()) {
        let span = raw.encoding.as_ref().map(|s| s.span()).unwrap_or_default();
        diags.error(
            span,
            format!("encoding = \"{encoding}\": use auto, utf-8, utf-16le or utf-16be"),
        );
    }
    let timezone =
        raw.timezone
            .as_ref()
            .and_then(|tz| match jiff::tz::TimeZone::get(tz.get_ref()) {
                Ok(z) => Some(z),
                Err(e) => {
                    diags.error(
                        tz.span(),
                        format!("unknown time zone `{}`: {e}", tz.get_ref()),
                    );
                    None
                }
            });
    let pattern = raw.pattern.as_ref().and_then(|p| {
        if format != Some(Format::Text) {
            diags.error(
                p.span(),
                "`pattern` applies to type = \"text\" sources only",
            );
            return None;
        }
        match regex::RegexBuilder::new(p.get_ref())
            .size_limit(16 << 20)
            .build()
        {
            Ok(re) => Some(re),
            Err(e) => {
                diags.error(p.span(), format!("bad regular expression: {e}"));
                None
            }
        }
    });
    let journal = (format == Some(Format::Journald)).then(|| JournalConfig {
        units: raw.units.clone(),
        identifiers: raw.identifiers.clone(),
        directory: raw.directory.clone(),
    });
    if journal.is_none()
        && (!raw.units.is_empty() || !raw.identifiers.is_empty() || raw.directory.is_some())
    {
        diags.error(
            raw.kind.span(),
            "`units`, `identifiers` and `directory` apply to type = \"journald\" sources only",
        );
    }
    if journal.is_some() && (raw.path.is_some() || raw.listen.is_some()) {
        diags.error(
            raw.kind.span(),
            "a journald source reads the systemd journal: it takes no `path` or `listen`",
        );
    }
    if journal.is_some() && !cfg!(target_os = "linux") {
        diags.error(raw.kind.span(), "journald sources exist on Linux only");
    }
    let winevt = parse_winevt(&raw, format, diags);
    let (paths, listen, path_span) = match (raw.path, raw.listen) {
        _ if journal.is_some() || winevt.is_some() => (Vec::new(), None, raw.kind.span()),
        (Some(p), None) => {
            let span = p.span();
            let paths = p.into_inner().into_vec();
            if paths.is_empty() {
                diags.error(span.clone(), "`path` needs at least one pattern");
            }
            (paths, None, span)
        }
        (None, Some(l)) => {
            let span = l.span();
            if let Err(e) = watchpost_sources::listen::ListenOptions::parse_address(l.get_ref()) {
                diags.error(span.clone(), e.to_string());
            }
            if format.is_some_and(|f| f.is_sep_binary() || f == Format::Evtx) {
                diags.error(
                    span.clone(),
                    "SEP binary logs and EVTX files are files: use `path`, not `listen`",
                );
            }
            (Vec::new(), Some(l.into_inner()), span)
        }
        (Some(p), Some(_)) => {
            diags.error(
                p.span(),
                "a source reads either files (`path`) or the network (`listen`), not both",
            );
            (Vec::new(), None, p.span())
        }
        (None, None) => {
            diags.error(raw.name.span(), "a source needs `path` (files to follow) or `listen` (an address to receive syslog on)");
            (Vec::new(), None, raw.name.span())
        }
    };
    Some(SourceConfig {
        name: raw.name.get_ref().clone(),
        name_span: raw.name.span(),
        format: format?,
        paths,
        path_span,
        listen,
        exclude: raw.exclude,
        start_at,
        encoding,
        timezone,
        max_line_bytes: raw.max_line_bytes.unwrap_or(1 << 20).clamp(1024, 64 << 20),
        host: raw.host,
        pattern,
        journal,
        winevt,
    })
}

/// The `windows_event_log` keys: checked for that type, refused for the others. On
/// systems other than Windows the source is valid but skipped by `run` (a warning).
fn parse_winevt(
    raw: &SourceToml,
    format: Option<Format>,
    diags: &mut Diagnostics,
) -> Option<WinEvtConfig> {
    use watchpost_sources::winevtlog::{
        ChannelSpec, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, MAX_CHANNELS,
    };
    if format != Some(Format::WindowsEventLog) {
        let given = [
            raw.channels.as_ref().map(|c| c.span()),
            raw.query.as_ref().map(|q| q.span()),
            raw.render_message.as_ref().map(|r| r.span()),
            raw.batch_size.as_ref().map(|b| b.span()),
        ];
        if let Some(span) = given.into_iter().flatten().next() {
            diags.error(
                span,
                "`channels`, `query`, `render_message` and `batch_size` apply to type = \"windows_event_log\" sources only",
            );
        }
        return None;
    }
    if let Some(p) = &raw.path {
        diags.error(
            p.span(),
            "a windows_event_log source reads Event Log channels: it takes `channels`, not `path`",
        );
    }
    if let Some(l) = &raw.listen {
        diags.error(
            l.span(),
            "a windows_event_log source reads Event Log channels: it takes `channels`, not `listen`",
        );
    }
    let query = raw.query.as_ref().and_then(|q| {
        let text = q.get_ref().trim();
        if text.is_empty() || text.contains('\0') {
            diags.error(q.span(), "`query` must be a non-empty XPath event query");
            return None;
        }
        Some(text.to_owned())
    });
    let mut channels: Vec<ChannelSpec> = Vec::new();
    match &raw.channels {
        None => diags.error(
            raw.kind.span(),
            "a windows_event_log source needs `channels`, e.g. channels = [\"Security\", \"System\"]",
        ),
        Some(list) => {
            let span = list.span();
            for entry in list.get_ref() {
                let (name, own) = match entry {
                    ChannelToml::Name(n) => (n.trim().to_owned(), None),
                    ChannelToml::Table(t) => (t.name.trim().to_owned(), t.query.clone()),
                };
                if name.is_empty() || name.contains('\0') {
                    diags.error(span.clone(), "a channel name must not be empty");
                    continue;
                }
                if own.as_deref().is_some_and(|q| q.trim().is_empty() || q.contains('\0')) {
                    diags.error(
                        span.clone(),
                        format!("channel `{name}`: `query` must be a non-empty XPath event query"),
                    );
                    continue;
                }
                if channels.iter().any(|c| c.name.eq_ignore_ascii_case(&name)) {
                    diags.error(span.clone(), format!("channel `{name}` is listed twice"));
                    continue;
                }
                channels.push(ChannelSpec {
                    name,
                    query: own.or_else(|| query.clone()),
                });
            }
            if list.get_ref().is_empty() {
                diags.error(span.clone(), "`channels` needs at least one channel");
            }
            if channels.len() > MAX_CHANNELS {
                diags.error(
                    span,
                    format!("at most {MAX_CHANNELS} channels per source (split them over several sources)"),
                );
            }
        }
    }
    let batch_size = match &raw.batch_size {
        None => DEFAULT_BATCH_SIZE,
        Some(b) => match usize::try_from(*b.get_ref()) {
            Ok(n) if (1..=MAX_BATCH_SIZE).contains(&n) => n,
            _ => {
                diags.error(
                    b.span(),
                    format!("batch_size = {}: use 1 … {MAX_BATCH_SIZE}", b.get_ref()),
                );
                DEFAULT_BATCH_SIZE
            }
        },
    };
    if !cfg!(windows) {
        diags.warning(
            raw.kind.span(),
            format!(
                "source `{}`: type = \"windows_event_log\" reads the live Windows Event Log and runs on Windows only; `run` skips it here",
                raw.name.get_ref()
            ),
        );
    }
    Some(WinEvtConfig {
        channels,
        render_message: raw.render_message.as_ref().is_none_or(|r| *r.get_ref()),
        batch_size,
    })
}

/// Expands environment references in every string value of the tree, in place, so the
/// values' spans still point at the text as written.
fn expand_tree(table: &mut DeTable<'_>) {
    for (_, value) in table.iter_mut() {
        expand_value(value.get_mut());
    }
}

fn expand_value(value: &mut DeValue<'_>) {
    match value {
        DeValue::String(s) if s.contains('$') => *s = std::borrow::Cow::Owned(expand_env(s)),
        DeValue::Array(items) => items.iter_mut().for_each(|v| expand_value(v.get_mut())),
        DeValue::Table(t) => expand_tree(t),
        _ => {}
    }
}

/// Expands `${NAME}` and `${NAME:-default}`; an unset name without a default expands to "";
/// `$${` writes a literal `${`.
pub fn expand_env(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i]);
            out.push('{');
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => out.push_str(&v),
            _ => out.push_str(default.unwrap_or("")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

impl From<ConfigError> for crate::diag::Diag {
    fn from(e: ConfigError) -> Self {
        crate::diag::Diag {
            severity: if e.warning {
                crate::diag::Severity::Warning
            } else {
                crate::diag::Severity::Error
            },
            span: e.span,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_for_text_sources_and_must_compile() {
        let text = r#"
[[source]]
name = "a"
type = "jsonl"
path = "/x/*.jsonl"
pattern = "(?P<u>x)"

[[source]]
name = "b"
type = "text"
path = "/x/*.log"
pattern = "(?P<u>x"
"#;
        let mut diags = Diagnostics::default();
        let config = parse(text, &mut diags).unwrap();
        let msgs: Vec<(&str, &str)> = diags
            .items
            .iter()
            .map(|d| (&text[d.span.clone()], d.message.as_str()))
            .collect();
        assert!(
            msgs.iter()
                .any(|(at, m)| *at == "\"(?P<u>x)\"" && m.contains("type = \"text\" sources only")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|(at, m)| *at == "\"(?P<u>x\"" && m.contains("bad regular expression")),
            "{msgs:?}"
        );
        assert_eq!(config.sources.len(), 2);
    }

    #[test]
    fn metrics_address_and_shared_jsonl_files() {
        let text = r#"
[agent]
metrics = "9464"

[[action]]
name = "a"
type = "jsonl_file"
path = "/var/log/w/out.jsonl"

[[action]]
name = "b"
type = "jsonl_file"
path = "/var/log/w/out.jsonl"
"#;
        let mut diags = Diagnostics::default();
        let config = parse(text, &mut diags).unwrap();
        assert_eq!(config.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let msgs: Vec<(&str, &str)> = diags
            .items
            .iter()
            .map(|d| (&text[d.span.clone()], d.message.as_str()))
            .collect();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0].0, "\"/var/log/w/out.jsonl\"");
        // At the second one.
        assert!(diags.items[0].span.start > text.find("name = \"b\"").unwrap());
        assert!(msgs[0].1.contains("another jsonl_file action"), "{msgs:?}");

        let mut diags = Diagnostics::default();
        let config = parse("[agent]\nmetrics = \"[::1]:9100\"\n", &mut diags).unwrap();
        assert_eq!(config.metrics, Some("[::1]:9100".parse().unwrap()));
        assert_eq!(diags.items.len(), 0);
        let config = parse("", &mut diags).unwrap();
        assert_eq!(config.metrics, None, "off by default");
    }

    #[test]
    fn the_console_listens_on_loopback_over_the_store() {
        let mut diags = Diagnostics::default();
        let config = parse("[console]\nlisten = \"8443\"\n", &mut diags).unwrap();
        assert_eq!(diags.items.len(), 0);
        let c = config.console.unwrap();
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert!(c.users.ends_with("console-users.toml"));
        assert_eq!(
            parse("", &mut diags).unwrap().console,
            None,
            "off by default"
        );
        for (text, what) in [
            ("[console]\nlisten = \"0.0.0.0:8443\"\n", "loopback only"),
            ("[console]\nlisten = \"nowhere\"\n", "not a listen address"),
            (
                "[store]\nenabled = false\n[console]\nlisten = \"8443\"\n",
                "turn [store] back on",
            ),
            ("[console]\nlisten = \"8443\"\nport = 1\n", "unknown field"),
        ] {
            let mut diags = Diagnostics::default();
            let _ = parse(text, &mut diags);
            assert_eq!(diags.items.len(), 1, "{text}");
            assert!(
                diags.items[0].message.contains(what),
                "{text}: {}",
                diags.items[0].message
            );
        }
    }

    #[test]
    fn a_source_reads_files_or_listens() {
        let text = r#"
[[source]]
name = "both"
type = "text"
path = "/x/a.log"
listen = "udp://127.0.0.1:5514"

[[source]]
name = "neither"
type = "text"

[[source]]
name = "bad-address"
type = "sep_manager_syslog"
listen = "udp://localhost:514"

[[source]]
name = "binary-over-net"
type = "sep_security_log"
listen = "tcp://127.0.0.1:6514"

[[source]]
name = "fine"
type = "sep_manager_syslog"
listen = "tcp://[::1]:6514"
"#;
        let mut diags = Diagnostics::default();
        let config = parse(text, &mut diags).unwrap();
        let msgs: Vec<&str> = diags.items.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs[0].contains("either files"), "{msgs:?}");
        assert!(msgs[1].contains("needs `path`"), "{msgs:?}");
        assert!(
            msgs[2].starts_with(
                "listen address \"udp://localhost:514\": the host must be a literal IP"
            ),
            "{msgs:?}"
        );
        assert!(msgs[3].contains("EVTX files are files"), "{msgs:?}");
        let fine = config.sources.iter().find(|s| s.name == "fine").unwrap();
        assert_eq!(fine.listen.as_deref(), Some("tcp://[::1]:6514"));
    }

    #[test]
    fn windows_event_log_channels_and_queries() {
        let text = r#"
[[source]]
name = "w"
type = "windows_event_log"
channels = ["Security", { name = "System", query = "*[System[(EventID=7045)]]" }]
query = "*[System[(Level<=3)]]"
start_at = "beginning"
"#;
        let mut diags = Diagnostics::default();
        let config = parse(text, &mut diags).unwrap();
        assert!(!diags.has_errors(), "{:?}", diags.items);
        assert_eq!(diags.warning_count(), usize::from(!cfg!(windows)));
        let s = &config.sources[0];
        assert_eq!(s.format, Format::WindowsEventLog);
        assert_eq!(s.start_at, StartAt::Beginning);
        let w = s.winevt.as_ref().unwrap();
        assert!(w.render_message);
        assert_eq!(w.batch_size, 100);
        let q: Vec<(&str, Option<&str>)> = w
            .channels
            .iter()
            .map(|c| (c.name.as_str(), c.query.as_deref()))
            .collect();
        assert_eq!(
            q,
            [
                ("Security", Some("*[System[(Level<=3)]]")),
                ("System", Some("*[System[(EventID=7045)]]"))
            ]
        );
        assert!(s.paths.is_empty() && s.listen.is_none());
    }

    #[test]
    fn env_expansion() {
        // SAFETY-free: only reads variables that tests never set concurrently.
        assert_eq!(
            expand_env("${WATCHPOST_TEST_UNSET_X:-/var/x}/a"),
            "/var/x/a"
        );
        assert_eq!(expand_env("plain"), "plain");
        assert_eq!(expand_env("${WATCHPOST_TEST_UNSET_X}b"), "b");
        assert_eq!(expand_env("${broken"), "${broken");
        assert_eq!(expand_env("a$${HOME}"), "a${HOME}");
    }
}
