//! `watchpost-server config …`, `command …`, `ack …`: the admin CLI over `control.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use watchpost_fleet_protocol::CommandKind;
use watchpost_server::control::{self, Target};

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Checks a configuration with the agent's own check-config code and publishes it as
    /// the group's next version (refused with every diagnostic when it has errors).
    Publish {
        group: String,
        /// The configuration file (TOML).
        file: PathBuf,
        /// A folder of the group's other files (Sigma rules, placeholder files); a
        /// relative path in the configuration's [[rules]] names a file in it.
        #[arg(long)]
        files: Option<PathBuf>,
        /// Why (kept with the version).
        #[arg(short = 'm', long, default_value = "")]
        comment: String,
    },
    /// Checks a configuration as `publish` would, without publishing.
    Check {
        file: PathBuf,
        #[arg(long)]
        files: Option<PathBuf>,
    },
    /// Lists a group's versions: published, who, when, agents applied/refused.
    List { group: String },
    /// Prints a version's text (the published one without --version).
    Show {
        group: String,
        #[arg(long)]
        version: Option<i32>,
    },
    /// Publishes an earlier version again.
    Rollback { group: String, version: i32 },
    /// Per agent of a group: the version it handled, and the agent's diagnostics when it
    /// refused it.
    Status { group: String },
}

#[derive(Subcommand)]
pub enum CommandCmd {
    /// Sends a command to an agent (--agent) or every agent of a group (--group).
    Send {
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        agent: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// A key that makes sending again harmless: the command already sent with it is
        /// returned.
        #[arg(long)]
        id: Option<String>,
        #[command(subcommand)]
        what: What,
    },
    /// Lists commands with each agent's result (newest first).
    List {
        /// Only this command.
        #[arg(long)]
        id: Option<i64>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

#[derive(Subcommand)]
pub enum What {
    /// Applies the network quarantine as the agent's `quarantine` action does.
    QuarantineApply {
        #[arg(short = 'm', long, default_value = "applied from the fleet server")]
        reason: String,
        #[arg(long)]
        action: Option<String>,
    },
    /// Releases the agent's quarantine.
    QuarantineRelease {
        #[arg(short = 'm', long, default_value = "released from the fleet server")]
        reason: String,
    },
    /// Runs one of the agent's actions with an event built from --field NAME=VALUE.
    RunAction {
        action: String,
        #[arg(long = "field", value_parser = field)]
        fields: Vec<(String, String)>,
    },
    /// Observes every check now.
    RunChecks,
    /// Reloads the agent's configuration.
    Reload,
}

fn field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}`: write NAME=VALUE"))
}

impl What {
    fn kind(self) -> CommandKind {
        match self {
            What::QuarantineApply { reason, action } => {
                CommandKind::QuarantineApply { reason, action }
            }
            What::QuarantineRelease { reason } => CommandKind::QuarantineRelease { reason },
            What::RunAction { action, fields } => CommandKind::RunAction {
                action,
                fields: fields.into_iter().collect(),
            },
            What::RunChecks => CommandKind::RunChecks,
            What::Reload => CommandKind::Reload,
        }
    }
}

/// Reads a configuration file and the files of a folder (relative names, `/`-separated).
pub fn read_version(
    file: &Path,
    files: Option<&Path>,
) -> Result<(String, BTreeMap<String, String>)> {
    let text = watchpost_server::read_limited(file, control::MAX_CONFIG_BYTES as u64)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut out = BTreeMap::new();
    if let Some(dir) = files {
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in
                std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
            {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(dir)
                        .map(|r| {
                            r.components()
                                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                                .collect::<Vec<_>>()
                                .join("/")
                        })
                        .unwrap_or_default();
                    let content =
                        watchpost_server::read_limited(&p, control::MAX_FILES_BYTES as u64)
                            .with_context(|| format!("cannot read {}", p.display()))?;
                    out.insert(rel, content);
                }
            }
        }
    }
    Ok((text, out))
}

/// `config check`: no database needed.
pub fn check(file: &Path, files: Option<&Path>) -> Result<String> {
    let (text, files) = read_version(file, files)?;
    match control::check_group_config(&text, &files) {
        Ok(w) => Ok(format!("{w}configuration OK\n")),
        Err(e) => bail!("{e}"),
    }
}

pub async fn config(
    client: &tokio_postgres::Client,
    actor: &str,
    cmd: ConfigCmd,
) -> Result<String> {
    let mut o = String::new();
    match cmd {
        ConfigCmd::Publish {
            group,
            file,
            files,
            comment,
        } => {
            let (text, files) = read_version(&file, files.as_deref())?;
            let p = control::config_publish(client, actor, &group, &text, &files, &comment, &[])
                .await?;
            o.push_str(&p.warnings);
            o.push_str(&format!(
                "group {} version {} published ({} files, digest {})\n",
                p.group,
                p.version,
                files.len(),
                &p.digest[..12]
            ));
        }
        ConfigCmd::Check { file, files } => o.push_str(&check(&file, files.as_deref())?),
        ConfigCmd::List { group } => {
            for v in control::config_versions(client, &group).await? {
                o.push_str(&format!(
                    "{}{}\t{}\tby {}\t{} applied, {} refused\t{}\n",
                    v.version,
                    if v.published { " (published)" } else { "" },
                    v.created_at,
                    v.created_by,
                    v.applied,
                    v.refused,
                    v.comment
                ));
            }
        }
        ConfigCmd::Show { group, version } => {
            let (v, text, files) = control::config_get(client, &group, version).await?;
            o.push_str(&format!(
                "# group {group} version {v}; files: {:?}\n",
                files.keys().collect::<Vec<_>>()
            ));
            o.push_str(&text);
        }
        ConfigCmd::Rollback { group, version } => {
            control::config_rollback(client, actor, &group, version).await?;
            o.push_str(&format!(
                "group {group}: version {version} published again\n"
            ));
        }
        ConfigCmd::Status { group } => {
            for a in control::config_status(client, &group).await? {
                let state = match (a.version, a.ok) {
                    (None, _) => "no group configuration yet".to_owned(),
                    (Some(v), Some(true)) => format!("runs version {v}"),
                    (Some(v), _) => format!("refused version {v}"),
                };
                o.push_str(&format!(
                    "#{}\t{}\t{}\tgeneration {}\tdigest {}\n",
                    a.id,
                    a.hostname,
                    state,
                    a.generation.map_or("-".into(), |g| g.to_string()),
                    a.digest.as_deref().unwrap_or("-")
                ));
                if let Some(e) = a.error {
                    for line in e.lines() {
                        o.push_str(&format!("\t{line}\n"));
                    }
                }
            }
        }
    }
    Ok(o)
}

pub async fn command(
    client: &tokio_postgres::Client,
    actor: &str,
    cmd: CommandCmd,
) -> Result<String> {
    let mut o = String::new();
    match cmd {
        CommandCmd::Send {
            agent,
            group,
            id,
            what,
        } => {
            let target = match (agent, group) {
                (Some(a), _) => Target::Agent(a),
                (None, Some(g)) => Target::Group(g),
                (None, None) => bail!("name --agent or --group"),
            };
            let s =
                control::command_send(client, actor, &target, &what.kind(), id.as_deref(), None)
                    .await?;
            o.push_str(&format!(
                "command {} {} ({} agent(s))\n",
                s.id,
                if s.existing {
                    "was sent before with this --id"
                } else {
                    "sent"
                },
                s.agents
            ));
        }
        CommandCmd::List { id, limit } => {
            for c in control::command_list(client, id, limit).await? {
                o.push_str(&format!(
                    "command {}\t{}\t{}\tby {}\t{}\n",
                    c.id, c.kind, c.created_at, c.created_by, c.args
                ));
                for r in c.results {
                    let state = match r.ok {
                        None if r.delivered_at.is_some() => "delivered".to_owned(),
                        None => "pending".to_owned(),
                        Some(true) => "ok".to_owned(),
                        Some(false) => "failed".to_owned(),
                    };
                    o.push_str(&format!(
                        "\t#{} {}\t{}\t{}\n",
                        r.agent_id,
                        r.hostname,
                        state,
                        r.output.unwrap_or_default().replace('\n', " ")
                    ));
                }
            }
        }
    }
    Ok(o)
}

pub async fn ack(
    client: &tokio_postgres::Client,
    actor: &str,
    events: &[i64],
    comment: &str,
) -> Result<String> {
    let done = control::ack(client, actor, events, comment).await?;
    let mut o = String::new();
    for a in &done {
        o.push_str(&format!(
            "event {} acknowledged (agent {}, its event {})\n",
            a.event, a.agent_id, a.local_id
        ));
    }
    if done.len() < events.len() {
        o.push_str(&format!(
            "{} event(s) not found or already acknowledged\n",
            events.len() - done.len()
        ));
    }
    Ok(o)
}
