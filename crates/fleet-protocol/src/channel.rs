//! The channel the agent opens towards the server for what flows the other way: the
//! group's configuration, commands, and acknowledgements made centrally.
//!
//! The agent long-polls [`crate::POLL`] with what it already has ([`Poll`]): the
//! configuration version it last handled and the last central acknowledgement it applied.
//! The server answers at once when something is new for it, else holds the request up to
//! `wait_secs` and answers as soon as something arrives (an empty [`Delivery`] when the
//! time is up). The agent reports what it did on [`crate::REPORT`] ([`Report`]). Nothing
//! is lost across a network failure: the cursors live on the agent and are sent again;
//! a command stays pending on the server until its result is reported, and the agent
//! remembers the commands it ran, so one delivered twice runs once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest wait the server grants a poll.
pub const MAX_WAIT_SECS: u32 = 60;

/// Largest configuration text (`group.toml`) of a group version: the server publishes no
/// larger one, from the CLI or the console.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Largest total size of a group version's other files (Sigma rules, placeholder files).
pub const MAX_FILES_BYTES: usize = 16 << 20;
/// Largest answer to a poll an agent reads: a version at its largest with its JSON
/// escaping (commonly a few percent, at worst a few times for text full of quotes,
/// backslashes and control characters), with commands and acknowledgements.
pub const MAX_DELIVERY: usize = 64 << 20;
const _: () = assert!(MAX_DELIVERY >= 3 * (MAX_CONFIG_BYTES + MAX_FILES_BYTES));

/// Whether `name` may name a file of a group version: a relative, `/`-separated path of
/// letters, digits, `-`, `_`, `.` (no empty part, no `.` or `..`), at most 255 bytes.
/// The server refuses any other at publication (the agent writes each under its folder
/// of the version); the error is a sentence for the user.
pub fn check_file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "file name `{name}`: use a relative path of letters, digits, `-`, `_`, `.` (no `..`)"
        ))
    }
}

/// What the agent has; sent with every poll.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Poll {
    /// The group configuration version the agent last handled (applied or rejected);
    /// `None`: none yet (it runs its local file).
    pub config_version: Option<i32>,
    /// The highest central acknowledgement id applied to the local store.
    pub ack_after: i64,
    /// How long the server may hold the request when nothing is new (capped at
    /// [`MAX_WAIT_SECS`]; 0 answers at once).
    pub wait_secs: u32,
}

/// What the server has for the agent (all empty: nothing new within the wait).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delivery {
    /// The group's published configuration, when it differs from the agent's.
    pub config: Option<GroupConfig>,
    /// Commands the agent has not reported a result for, oldest first.
    pub commands: Vec<Command>,
    /// Acknowledgements made centrally after the agent's `ack_after`, oldest first.
    pub acks: Vec<CentralAck>,
}

impl Delivery {
    /// Whether nothing is in it.
    pub fn is_empty(&self) -> bool {
        self.config.is_none() && self.commands.is_empty() && self.acks.is_empty()
    }
}

/// A version of a group's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// The version (1, 2, … per group).
    pub version: i32,
    /// SHA-256 of the text and files (hex).
    pub digest: String,
    /// The configuration text (TOML).
    pub config: String,
    /// The group's other files (Sigma rules, placeholder files): relative path → content.
    pub files: BTreeMap<String, String>,
}

/// A command to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The server's id of the command (the same for every agent of a group command).
    pub id: i64,
    /// What to do.
    #[serde(flatten)]
    pub kind: CommandKind,
    /// Who sent it.
    pub by: String,
}

/// What a command asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandKind {
    /// Apply the network quarantine as the configured `quarantine` action does.
    QuarantineApply {
        /// Recorded as the reason.
        reason: String,
        /// The `quarantine` action (needed when several are configured).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
    /// Release the quarantine in force.
    QuarantineRelease {
        /// Recorded as the reason.
        reason: String,
    },
    /// Run one of the configuration's actions with an event built from `fields`.
    RunAction {
        /// The action's name.
        action: String,
        /// The event's fields (`path`, `host`, …).
        fields: BTreeMap<String, String>,
    },
    /// Observe every check now and report the statuses.
    RunChecks,
    /// Reload the configuration the agent runs.
    Reload,
}

impl CommandKind {
    /// The kind's name (`quarantine_apply`, …).
    pub fn name(&self) -> &'static str {
        match self {
            CommandKind::QuarantineApply { .. } => "quarantine_apply",
            CommandKind::QuarantineRelease { .. } => "quarantine_release",
            CommandKind::RunAction { .. } => "run_action",
            CommandKind::RunChecks => "run_checks",
            CommandKind::Reload => "reload",
        }
    }
}

/// An acknowledgement made on the server, for the agent's local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentralAck {
    /// Its id on the server (the agent's cursor).
    pub id: i64,
    /// The event's id in the agent's store.
    pub event: u64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who.
    pub by: String,
    /// Why.
    pub comment: String,
}

/// What the agent did with a delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Report {
    /// The outcome of applying a configuration version.
    pub config: Option<ConfigReport>,
    /// Results of commands.
    pub results: Vec<CommandResult>,
    /// The highest central acknowledgement id now applied.
    pub acks_applied: Option<i64>,
}

/// The outcome of applying a group configuration version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The version.
    pub version: i32,
    /// Whether it runs now.
    pub ok: bool,
    /// The agent's configuration generation after the attempt.
    pub generation: u64,
    /// Every diagnostic as `file:line:column: …` (errors when refused, else warnings).
    pub diagnostics: String,
}

/// The result of one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: i64,
    /// Whether it did what it asked.
    pub ok: bool,
    /// What it did, or its error.
    pub output: String,
}

/// The server's answer to a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// Command results recorded now (a result already recorded is not counted again).
    pub recorded: u32,
}
