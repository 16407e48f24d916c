//! What the console asks of a store: one synchronous interface ([`Backend`]) that the
//! agent's SQLite store (`local.rs`) and the fleet server's PostgreSQL (in
//! `watchpost-server`, run on a blocking thread) both answer, with the same query
//! language (`watchpost-query`) and the same meaning. Pages are built from the plain
//! values below, never from a backend's own rows.

use std::collections::BTreeMap;

use jiff::Timestamp;
pub use watchpost_fleet_protocol::CommandKind;
use watchpost_fleet_protocol::Heartbeat;
use watchpost_query::{Query, QueryError};

/// Which console this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// The agent's own console over its SQLite store: one host.
    Local,
    /// The fleet server's console over PostgreSQL: every host, groups.
    Fleet,
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also acknowledges events (and, on the fleet, releases quarantines, sends commands).
    Analyst,
    /// Also changes configuration and users.
    Admin,
}

impl Role {
    /// From its name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

/// A user as the backend knows them.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2id PHC string (`None`: no password set, cannot log in).
    pub password_hash: Option<String>,
    /// Disabled users cannot log in, and their sessions end.
    pub disabled: bool,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The query text cannot be understood (shown to the user as a 400).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Bad input other than a query (shown as a 400).
    #[error("{0}")]
    Invalid(String),
    /// The store failed (shown as a 503 without details; logged).
    #[error("{0}")]
    Store(String),
}

/// Which part of the results to show: keyset pagination by event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Page {
    /// Only events with a smaller id (the next page, newest first).
    pub before: Option<i64>,
    /// Only events with a larger id (the next page, oldest first).
    pub after: Option<i64>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// At most this many.
    pub limit: usize,
}

/// An event in a result list.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSummary {
    /// Id in this store.
    pub id: i64,
    /// The event's time (else when stored), RFC 3339.
    pub time: String,
    /// Host the event is about.
    pub host: String,
    /// Source name.
    pub source: String,
    /// Filters (or rule sets) that matched.
    pub filters: Vec<String>,
    /// Flagged by an anomaly filter.
    pub anomaly: bool,
    /// Waits for an acknowledgement (and has none yet).
    pub waiting: bool,
    /// Acknowledged.
    pub acked: bool,
    /// A line to recognise it by: the anomaly reason, else the first fields.
    pub summary: String,
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct AckView {
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub by: String,
    /// Why.
    pub comment: String,
    /// Where it was made (`agent`, `server`, `console`), when known.
    pub origin: String,
}

/// One attempt of an action.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeView {
    /// Action name.
    pub action: String,
    /// The filter whose firing it handled.
    pub filter: String,
    /// When (RFC 3339).
    pub at: String,
    /// Attempt number (0: held back by throttle/dedupe).
    pub attempt: i64,
    /// Succeeded.
    pub ok: bool,
    /// Error or note.
    pub detail: String,
}

/// What a baseline says about the key of an anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainView {
    /// Filter.
    pub filter: String,
    /// Host.
    pub host: String,
    /// Key field names and the event's values for them.
    pub key: Vec<(String, String)>,
    /// Whether learning is per key.
    pub learn_per_key: bool,
    /// When learning started (RFC 3339).
    pub learning_started: Option<String>,
    /// When it ended or ends.
    pub learning_ends: Option<String>,
    /// When the key was first seen.
    pub key_first_seen: Option<String>,
    /// Values already known for the key, with when each was first seen.
    pub values: Vec<(String, String)>,
}

/// An event with everything known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDetail {
    /// The list view.
    pub summary: EventSummary,
    /// When it was stored (RFC 3339).
    pub stored: String,
    /// The agent that shipped it (fleet).
    pub agent: Option<(i64, String)>,
    /// Why the anomaly filter flagged it.
    pub anomaly_why: Option<String>,
    /// Whether it needs an acknowledgement at all.
    pub needs_ack: bool,
    /// The acknowledgement.
    pub ack: Option<AckView>,
    /// Fields as text, in order.
    pub fields: Vec<(String, String)>,
    /// The record as read.
    pub raw: String,
    /// Where it was read.
    pub origin: Option<String>,
    /// Every action attempt.
    pub outcomes: Vec<OutcomeView>,
    /// Baseline explanations for its anomaly filters (empty where the baselines are not
    /// at hand, e.g. on the fleet server).
    pub explanations: Vec<ExplainView>,
}

/// Counts per time bucket for one name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Filter, level or host.
    pub name: String,
    /// One count per bucket.
    pub counts: Vec<u64>,
}

/// A host with a problem worth a look.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    /// Host id for its page.
    pub host: String,
    /// Host name.
    pub name: String,
    /// What is wrong.
    pub problems: Vec<String>,
}

/// What the overview shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overview {
    /// Start of each bucket (Unix ms).
    pub buckets: Vec<i64>,
    /// Length of a bucket (ms).
    pub bucket_ms: i64,
    /// All events per bucket.
    pub events: Vec<u64>,
    /// Anomalies per bucket.
    pub anomalies: Vec<u64>,
    /// The busiest filters.
    pub by_filter: Vec<Series>,
    /// By Sigma rule level (`rule_level`).
    pub by_level: Vec<Series>,
    /// The busiest hosts.
    pub by_host: Vec<Series>,
    /// Events waiting for an acknowledgement (all time).
    pub waiting: u64,
    /// The newest of them.
    pub waiting_list: Vec<EventSummary>,
    /// Hosts that need attention.
    pub attention: Vec<Attention>,
}

/// A host in the list.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    /// Id for its page (the agent's id; `local` on the agent).
    pub id: String,
    /// Host name.
    pub name: String,
    /// Group (fleet).
    pub group: String,
    /// watchpost version.
    pub version: String,
    /// Configuration generation it runs.
    pub generation: String,
    /// Last heartbeat (RFC 3339).
    pub last_seen: Option<String>,
    /// `online`, `offline`, `revoked`, `running`.
    pub state: String,
    /// Problems (see [`problems`]).
    pub problems: Vec<String>,
}

/// Which hosts the hosts page lists, and where its page starts (keyset: the hosts after
/// the one named, in the order of their names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostQuery {
    /// Host names containing this, case-insensitively ("" for any).
    pub name: String,
    /// Only the hosts of this group ("" for any).
    pub group: String,
    /// Only the hosts that need attention (the overview's list).
    pub attention: bool,
    /// The page starts after this host (its id).
    pub after: Option<String>,
    /// Hosts per page.
    pub limit: usize,
}

/// One page of hosts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostPage {
    /// The hosts, by name.
    pub rows: Vec<HostRow>,
    /// How many hosts the query matches in all.
    pub total: u64,
    /// Whether more follow the last row.
    pub more: bool,
}

/// A baseline of one filter on one host.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRow {
    /// Filter.
    pub filter: String,
    /// Host.
    pub host: String,
    /// When learning started.
    pub learning_started: Option<String>,
    /// When it ends (or ended).
    pub learning_ends: Option<String>,
    /// `learning` or `detecting`.
    pub state: String,
    /// Known keys.
    pub keys: u64,
    /// Known pairs.
    pub pairs: u64,
}

/// A command sent to a host and its result (fleet).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRow {
    /// Id.
    pub id: i64,
    /// Kind (`release_quarantine`, `reload`, …).
    pub kind: String,
    /// Who sent it.
    pub by: String,
    /// When.
    pub at: String,
    /// What it asked beyond its kind (reason, action and fields), as text.
    pub detail: String,
    /// Result, when there is one.
    pub result: String,
}

/// Everything on a host's page.
#[derive(Debug, Clone, PartialEq)]
pub struct HostDetail {
    /// The list row.
    pub row: HostRow,
    /// Its last heartbeat (sources, actions, checks, quarantine, store, shipping).
    pub heartbeat: Option<Heartbeat>,
    /// Its baselines (per filter), where known.
    pub baselines: Vec<BaselineRow>,
    /// Commands sent to it.
    pub commands: Vec<CommandRow>,
    /// Configuration diagnostics the host reported.
    pub diagnostics: Vec<String>,
}

/// An entry of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Id (ascending).
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub actor: String,
    /// What (`event.ack`, `console.denied`, `console.login`, …).
    pub action: String,
    /// On what.
    pub target: String,
    /// Details (JSON text).
    pub detail: String,
}

/// A group in the list (fleet).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupRow {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The version its agents should run (`None`: they run their own files).
    pub published: Option<i32>,
    /// When it was published (RFC 3339).
    pub published_at: Option<String>,
    /// Who published it.
    pub published_by: Option<String>,
    /// Hosts in the group (not revoked).
    pub hosts: i64,
    /// Hosts running the published version.
    pub current: i64,
    /// Hosts that have not handled the published version yet (or run another one).
    pub behind: i64,
    /// Hosts that refused the published version.
    pub rejecting: i64,
}

/// A configuration version of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionView {
    /// The version.
    pub version: i32,
    /// Whether it is the published one.
    pub published: bool,
    /// Who stored it.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// The comment given.
    pub comment: String,
    /// SHA-256 of text and files.
    pub digest: String,
    /// Hosts that run it.
    pub applied: i64,
    /// Hosts that refused it.
    pub refused: i64,
}

/// What one host did with its group's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfigView {
    /// Host id for its page.
    pub id: String,
    /// Host name.
    pub name: String,
    /// The version it last handled.
    pub version: Option<i32>,
    /// Whether that version runs (`Some(false)`: refused).
    pub ok: Option<bool>,
    /// The host's diagnostics when it refused it.
    pub error: Option<String>,
    /// When it reported.
    pub reported_at: Option<String>,
    /// Its configuration generation (reload counter) after handling it.
    pub generation: Option<i64>,
    /// The configuration generation its last heartbeat named (the digest it runs).
    pub running: Option<String>,
}

/// A group with its versions and what its hosts run.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDetail {
    /// The list row.
    pub row: GroupRow,
    /// Versions, newest first.
    pub versions: Vec<VersionView>,
    /// Per host: the version handled and how.
    pub hosts: Vec<HostConfigView>,
}

/// One version's configuration text and files.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigText {
    /// The version.
    pub version: i32,
    /// The configuration (`group.toml`).
    pub text: String,
    /// Its other files (Sigma rules, placeholder files) by name (a relative path).
    pub files: BTreeMap<String, String>,
}

/// A version to publish: the configuration text, its files, why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draft<'a> {
    /// `group.toml`.
    pub text: &'a str,
    /// The other files by name.
    pub files: &'a BTreeMap<String, String>,
    /// The comment kept with the version.
    pub comment: &'a str,
    /// A file that must load (see [`Backend::publish`]).
    pub strict: Option<&'a str>,
}

/// What a publication did.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishOutcome {
    /// Stored and published as this version; `check-config` warnings (rendered).
    Published {
        /// The new version.
        version: i32,
        /// Warnings, rendered (empty without any).
        warnings: String,
    },
    /// `check-config` found errors: every diagnostic, rendered (`file:line:column: …`).
    Refused(String),
}

/// One `check-config` diagnostic, parsed back from its rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as rendered (`group.toml`, a rule file).
    pub file: String,
    /// Line (1-based), when it points into the text.
    pub line: Option<usize>,
    /// Column (1-based).
    pub column: Option<usize>,
    /// `error` or `warning`.
    pub severity: String,
    /// The message, continuation lines included (the source line and its caret too).
    pub message: String,
}

impl Diagnostic {
    /// `file:line:column` (or just the file).
    pub fn place(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            _ => self.file.clone(),
        }
    }

    /// Whether it points into the configuration text itself.
    pub fn in_config(&self) -> bool {
        let f = self.file.rsplit(['/', '\\']).next().unwrap_or("");
        f == "group.toml"
    }

    /// Whether it is about the version's file `name`: it points into the file, or its
    /// message names it (a Sigma rule that is not loaded, a placeholder file that cannot
    /// be read: reported at the `[[rules]]` table that reads them). `Some` with the line
    /// in the file when the diagnostic or its reason says one (`… at line 3, column 7`).
    pub fn about_file(&self, name: &str) -> Option<Option<usize>> {
        if self.file == name {
            return Some(self.line);
        }
        let first = self.message.lines().next().unwrap_or("");
        // The whole name (after a space), not the end of another file's path.
        let (at, _) = first
            .match_indices(&format!("{name}: "))
            .find(|(i, _)| *i == 0 || first[..*i].ends_with(' '))?;
        let rest = &first[at + name.len()..];
        // The first `line N` of the reason (`… at line 3, column 7`, `line 7 column 5: …`).
        let line = rest.match_indices("line ").find_map(|(i, _)| {
            let digits: String = rest[i + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
        Some(line)
    }
}

/// The diagnostics of a rendered `check-config` report (`file:line:column: severity:
/// message`, indented continuation lines; the closing count line is left out).
pub fn parse_diagnostics(rendered: &str) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for line in rendered.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(d) = out.last_mut() {
                d.message.push('\n');
                d.message.push_str(line);
            }
            continue;
        }
        // The first `: error: ` or `: warning: ` ends the place (a message may hold
        // another, e.g. a YAML parser's `error: line 7 column 5: …`).
        let Some((at, severity)) = ["error", "warning"]
            .iter()
            .filter_map(|sev| line.find(&format!(": {sev}: ")).map(|i| (i, *sev)))
            .min()
        else {
            continue;
        };
        let (head, msg) = (&line[..at], &line[at + severity.len() + 4..]);
        let mut parts = head.rsplitn(3, ':');
        let (c, l, f) = (parts.next(), parts.next(), parts.next());
        let (file, line_no, column) = match (
            f,
            l.and_then(|l| l.parse::<usize>().ok()),
            c.and_then(|c| c.parse::<usize>().ok()),
        ) {
            (Some(f), Some(l), Some(c)) => (f.to_owned(), Some(l), Some(c)),
            _ => (head.to_owned(), None, None),
        };
        out.push(Diagnostic {
            file,
            line: line_no,
            column,
            severity: severity.to_owned(),
            message: msg.to_owned(),
        });
    }
    out
}

/// Why a command form cannot become a command.
pub const MAX_FIELDS: usize = 64;

/// The command a host page's form asks for: `kind` (`quarantine_apply`,
/// `quarantine_release`, `run_checks`, `reload`, `run_action`), a reason, an action name,
/// and `field=value` lines for `run_action`. Errors are sentences for the page.
pub fn command_from_form(
    kind: &str,
    reason: &str,
    action: &str,
    fields: &str,
) -> Result<CommandKind, String> {
    let reason = reason.trim();
    let action = action.trim();
    if reason.chars().count() > 1000 {
        return Err("The reason is longer than 1000 characters.".into());
    }
    if action.chars().count() > 200 {
        return Err("The action name is longer than 200 characters.".into());
    }
    match kind {
        "quarantine_apply" => {
            if reason.is_empty() {
                return Err("A quarantine needs a reason.".into());
            }
            Ok(CommandKind::QuarantineApply {
                reason: reason.to_owned(),
                action: (!action.is_empty()).then(|| action.to_owned()),
            })
        }
        "quarantine_release" => Ok(CommandKind::QuarantineRelease {
            reason: if reason.is_empty() {
                "released from the console".to_owned()
            } else {
                reason.to_owned()
            },
        }),
        "run_checks" => Ok(CommandKind::RunChecks),
        "reload" => Ok(CommandKind::Reload),
        "run_action" => {
            if action.is_empty() {
                return Err("Name the action to run (as in the configuration).".into());
            }
            if fields.len() > 16 * 1024 {
                return Err("The fields are longer than 16 KiB.".into());
            }
            let mut map = std::collections::BTreeMap::new();
            for (n, line) in fields.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let Some((k, v)) = line.split_once('=') else {
                    return Err(format!(
                        "Field line {}: write `name=value`, not `{line}`.",
                        n + 1
                    ));
                };
                let k = k.trim();
                if k.is_empty() {
                    return Err(format!("Field line {}: the field has no name.", n + 1));
                }
                map.insert(k.to_owned(), v.trim().to_owned());
            }
            if map.len() > MAX_FIELDS {
                return Err(format!("At most {MAX_FIELDS} fields."));
            }
            Ok(CommandKind::RunAction {
                action: action.to_owned(),
                fields: map,
            })
        }
        other => Err(format!("`{other}` is not a command this console sends.")),
    }
}

/// What a command asks beyond its kind, as one line for the host page.
pub fn command_detail(kind: &CommandKind) -> String {
    match kind {
        CommandKind::QuarantineApply { reason, action } => match action {
            Some(a) => format!("reason: {reason}; action: {a}"),
            None => format!("reason: {reason}"),
        },
        CommandKind::QuarantineRelease { reason } => format!("reason: {reason}"),
        CommandKind::RunAction { action, fields } => format!(
            "action: {action}; {}",
            fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CommandKind::RunChecks | CommandKind::Reload => String::new(),
    }
}

/// The store behind a console.
pub trait Backend: Send + Sync {
    /// Local or fleet.
    fn home(&self) -> Home;
    /// A user by name.
    fn user(&self, name: &str) -> Result<Option<UserRecord>, BackendError>;
    /// The overview for `hours` before `now`.
    fn overview(&self, now: Timestamp, hours: u32) -> Result<Overview, BackendError>;
    /// Events matching `query` (its `since`/`until` are the time range), one page.
    fn search(&self, query: &Query, page: &Page) -> Result<Vec<EventSummary>, BackendError>;
    /// One event.
    fn event(&self, id: i64) -> Result<Option<EventDetail>, BackendError>;
    /// Acknowledges events not yet acknowledged; returns those acknowledged now.
    fn ack(&self, ids: &[i64], by: &str, comment: &str) -> Result<Vec<i64>, BackendError>;
    /// Appends to the audit log.
    fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), BackendError>;
    /// The audit log, newest first, entries with an id below `before`.
    fn audit_log(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditRow>, BackendError>;
    /// A page of the hosts `query` asks for.
    fn hosts(&self, query: &HostQuery) -> Result<HostPage, BackendError>;
    /// One host.
    fn host(&self, id: &str) -> Result<Option<HostDetail>, BackendError>;
    /// Baselines (per filter and host).
    fn baselines(&self) -> Result<Vec<BaselineRow>, BackendError>;
    /// What the baseline of `filter` on `host` knows for `key` (`None`: not at hand).
    fn explain(
        &self,
        filter: &str,
        host: &str,
        key: &[String],
    ) -> Result<Option<ExplainView>, BackendError>;
    /// The baselines as JSON lines (`watchpost baseline export`), where at hand.
    fn export_baselines(&self) -> Result<Option<Vec<u8>>, BackendError>;
    /// Groups (fleet; the agent's console has none).
    fn groups(&self) -> Result<Vec<GroupRow>, BackendError> {
        Ok(Vec::new())
    }
    /// One group with its versions and its hosts' configuration state (`None`: no such
    /// group, or no groups here).
    fn group(&self, name: &str) -> Result<Option<GroupDetail>, BackendError> {
        let _ = name;
        Ok(None)
    }
    /// One version's text (`None` as `version`: the published one; `Ok(None)`: no such
    /// group or version).
    fn config_text(
        &self,
        group: &str,
        version: Option<i32>,
    ) -> Result<Option<ConfigText>, BackendError> {
        let _ = (group, version);
        Ok(None)
    }
    /// Checks a version (`text` and its `files`) with `check-config` and, without errors,
    /// publishes it as the group's next version. `strict`: a file that must load (the one
    /// the user changed): a warning that it is not loaded refuses the publication too.
    fn publish(
        &self,
        by: &str,
        group: &str,
        version: &Draft<'_>,
    ) -> Result<PublishOutcome, BackendError> {
        let _ = (by, group, version);
        Err(BackendError::Invalid(
            "Groups and their configuration live on the fleet server.".into(),
        ))
    }
    /// Publishes an earlier version again.
    fn rollback(&self, by: &str, group: &str, version: i32) -> Result<(), BackendError> {
        let _ = (by, group, version);
        Err(BackendError::Invalid(
            "Groups and their configuration live on the fleet server.".into(),
        ))
    }
    /// Releases this host's quarantine (the agent's console): `Ok(true)` released,
    /// `Ok(false)` none was in force.
    fn release_local_quarantine(&self, by: &str, reason: &str) -> Result<bool, BackendError> {
        let _ = (by, reason);
        Err(BackendError::Invalid(
            "A host's quarantine is released by a command from the fleet console.".into(),
        ))
    }
    /// Sends a command to a host (`to`: its id) or to every host of a group; returns
    /// the command's id and how many hosts it goes to (`None`: no such host or group).
    /// A `request` sent before returns that command instead of sending it again.
    fn send_command(
        &self,
        by: &str,
        to: CommandTo<'_>,
        kind: &CommandKind,
        request: Option<&str>,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        let _ = (by, to, kind, request);
        Err(BackendError::Invalid(
            "Commands are sent from the fleet server's console.".into(),
        ))
    }
}

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandTo<'a> {
    /// One host (its id).
    Host(&'a str),
    /// Every host of a group (its name).
    Group(&'a str),
}

/// The problems a heartbeat shows: stale definitions (with their age), stopped services
/// and other failing checks, silent sources, quarantine, configuration diagnostics, and
/// `silent_for` when the host has not been heard from for longer than its heartbeat
/// allows.
pub fn problems(hb: Option<&Heartbeat>, silent_for: Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = silent_for {
        out.push(s);
    }
    let Some(hb) = hb else {
        return out;
    };
    for c in &hb.checks {
        if c.status != "ok" {
            let age = match (c.status.as_str(), hb.definitions_age_hours) {
                ("stale", Some(h)) => format!(" ({:.0} days old)", h / 24.0),
                _ => String::new(),
            };
            out.push(format!(
                "check {}: {}{age}{}",
                c.name,
                c.status,
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", c.detail)
                }
            ));
        }
    }
    if let Some(q) = &hb.quarantine {
        out.push(format!("quarantined: {}", q.reason));
    }
    if !hb.config_diagnostics.is_empty() {
        out.push(format!(
            "configuration: {} diagnostic(s)",
            hb.config_diagnostics.len()
        ));
    }
    out
}

/// RFC 3339 of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// A one-line summary of an event's fields for lists.
pub fn summarize(anomaly_why: Option<&str>, fields: &[(String, String)]) -> String {
    if let Some(w) = anomaly_why {
        return w.chars().take(160).collect();
    }
    let mut s = String::new();
    for (k, v) in fields.iter().take(4) {
        if !s.is_empty() {
            s.push_str("  ");
        }
        s.push_str(k);
        s.push('=');
        s.extend(v.chars().take(48));
    }
    s
}

/// The overview's buckets for `hours` before `now`: (first bucket's start in Unix ms,
/// bucket length in ms, number of buckets). At most 48 buckets of a whole number of hours
/// each (24 h: 24 × 1 h, 7 days: 42 × 4 h, 30 days: 48 × 15 h), aligned to the bucket
/// length from the Unix epoch, the last one holding `now`: counts kept per hour add up
/// into them exactly. The buckets may cover a little more than `hours` when `hours` is
/// not a multiple of the bucket length.
pub fn buckets(now: Timestamp, hours: u32) -> (i64, i64, usize) {
    let hours = i64::from(hours.max(1));
    let per = (hours + 47) / 48;
    let n = (hours + per - 1) / per;
    let bucket = per * 3_600_000;
    let end = (now.as_millisecond().div_euclid(bucket) + 1) * bucket;
    (end - n * bucket, bucket, n as usize)
}

/// The `n` largest series by total, the rest summed as `other`, largest first.
pub fn top(mut series: Vec<(String, Vec<u64>)>, n: usize) -> Vec<Series> {
    series.sort_by(|a, b| {
        b.1.iter()
            .sum::<u64>()
            .cmp(&a.1.iter().sum::<u64>())
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut out: Vec<Series> = Vec::new();
    let mut other: Option<Series> = None;
    for (i, (name, counts)) in series.into_iter().enumerate() {
        if i < n {
            out.push(Series {
                name: if name.is_empty() {
                    "(none)".into()
                } else {
                    name
                },
                counts,
            });
        } else {
            let o = other.get_or_insert_with(|| Series {
                name: "other".into(),
                counts: vec![0; counts.len()],
            });
            for (a, b) in o.counts.iter_mut().zip(counts) {
                *a += b;
            }
        }
    }
    out.extend(other);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_align_and_top_sums_the_rest() {
        let now: Timestamp = "2026-12-07T10:30:00Z".parse().unwrap();
        let (from, len, n) = buckets(now, 24);
        assert_eq!((len, n), (3_600_000, 24));
        assert_eq!(
            from,
            "2026-12-06T11:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_millisecond()
        );
        let (from, len, n) = buckets(now, 168);
        assert_eq!((len, n), (4 * 3_600_000, 42));
        // Aligned to 4 h from the epoch; the last bucket holds `now`.
        assert_eq!(from % len, 0);
        assert!(from + len * 41 <= now.as_millisecond());
        assert!(now.as_millisecond() < from + len * 42);
        let (from, len, n) = buckets(now, 720);
        assert_eq!((len, n), (15 * 3_600_000, 48));
        assert_eq!(from % len, 0);
        for h in [1, 6, 24, 100, 168, 720, 10_000] {
            let (from, len, n) = buckets(now, h);
            assert_eq!(len % 3_600_000, 0, "{h}");
            assert_eq!(from % 3_600_000, 0, "{h}");
            assert!(n <= 48 && len * n as i64 >= i64::from(h) * 3_600_000, "{h}");
        }
        let s = top(
            vec![
                ("a".into(), vec![1, 1]),
                ("b".into(), vec![5, 0]),
                ("c".into(), vec![0, 1]),
            ],
            1,
        );
        assert_eq!(s[0].name, "b");
        assert_eq!(s[1].name, "other");
        assert_eq!(s[1].counts, vec![1, 2]);
    }

    #[test]
    fn diagnostics_are_parsed_back_with_their_place() {
        let r = "group.toml: warning: no [[source]] is configured\n\
                 group.toml:10:12: error: unknown action `nope`\n\
                 \x20   actions = [\"nope\"]\n\
                 \x20              ^^^^^^\n\
                 /tmp/x/rules/a.yml:3:1: error: bad rule\n\
                 group.toml: 2 error(s), 1 warning(s)\n";
        let d = parse_diagnostics(r);
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0].line, None);
        assert_eq!(d[0].severity, "warning");
        assert_eq!(d[1].place(), "group.toml:10:12");
        assert_eq!((d[1].line, d[1].column), (Some(10), Some(12)));
        assert!(d[1].message.starts_with("unknown action `nope`\n"));
        assert!(d[1].message.contains("^^^^^^"));
        assert!(d[1].in_config());
        assert_eq!(d[2].file, "/tmp/x/rules/a.yml");
        assert!(!d[2].in_config());
        assert_eq!(d[2].about_file("/tmp/x/rules/a.yml"), Some(Some(3)));
        assert_eq!(d[1].about_file("rules/a.yml"), None);
        // A rule that is not loaded is reported at the [[rules]] table, naming its file,
        // with the YAML error's place in it.
        let r = "group.toml:13:9: warning: rules `lab`: not loaded: rules/bad.yml: YAML: did not find expected key at line 4, column 3\n\
                 group.toml:13:9: warning: rules `lab`: not loaded: rules/other.yml: status `deprecated` is skipped\n\
                 group.toml:13:9: warning: rules `lab`: not loaded: rules/c.yml: YAML: error: line 7 column 5: while parsing\n";
        let d = parse_diagnostics(r);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].about_file("rules/bad.yml"), Some(Some(4)));
        assert_eq!(
            (d[2].place().as_str(), d[2].severity.as_str()),
            ("group.toml:13:9", "warning")
        );
        assert_eq!(d[2].about_file("rules/c.yml"), Some(Some(7)));
        assert_eq!(d[0].about_file("rules/other.yml"), None);
        assert_eq!(d[1].about_file("rules/other.yml"), Some(None));
        assert_eq!(d[1].about_file("other.yml"), None);
    }

    #[test]
    fn command_forms_become_commands_or_sentences() {
        assert_eq!(
            command_from_form("quarantine_release", "  ", "", ""),
            Ok(CommandKind::QuarantineRelease {
                reason: "released from the console".into()
            })
        );
        assert!(command_from_form("quarantine_apply", "", "", "").is_err());
        assert_eq!(
            command_from_form("quarantine_apply", "ransomware", "isolate", ""),
            Ok(CommandKind::QuarantineApply {
                reason: "ransomware".into(),
                action: Some("isolate".into())
            })
        );
        assert_eq!(
            command_from_form("run_checks", "", "", ""),
            Ok(CommandKind::RunChecks)
        );
        assert_eq!(
            command_from_form("reload", "", "", ""),
            Ok(CommandKind::Reload)
        );
        let CommandKind::RunAction { action, fields } = command_from_form(
            "run_action",
            "",
            "notify",
            "path = C:\\x.exe\n\nhost=PC-1\r\n",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(action, "notify");
        assert_eq!(fields.get("path").map(String::as_str), Some("C:\\x.exe"));
        assert_eq!(fields.get("host").map(String::as_str), Some("PC-1"));
        let e = command_from_form("run_action", "", "notify", "path C:\\x").unwrap_err();
        assert!(e.contains("line 1") && e.contains("name=value"), "{e}");
        assert!(command_from_form("run_action", "", "", "a=b").is_err());
        assert!(command_from_form("run_action", "", "n", "=b").is_err());
        assert!(command_from_form("format_disk", "", "", "").is_err());
        assert!(command_from_form("reload", &"x".repeat(1001), "", "").is_err());
    }
}
