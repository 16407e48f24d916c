//! What administrators (the CLI now, the web console next) send to agents, as library
//! functions over one database connection: group configuration versions (published,
//! rolled back, listed, with what each agent did with them), commands (sent to an agent
//! or a group, listed with their results), acknowledgements made centrally. Every change
//! is in the audit log with who made it, and is announced on the NOTIFY channel
//! [`CHANNEL`] in the same transaction, so every server instance wakes the long-polls it
//! holds (`channel.rs`) the moment it commits.
//!
//! Tables (migrations `0001_fleet.sql`, `0003_channel.sql`):
//!
//! | table | rows |
//! |---|---|
//! | `config_versions` | one per version of a group's configuration: text, files (name → content), digest, comment, who and when |
//! | `groups.published_version` | the version the group's agents run (`published_at`, `published_by`) |
//! | `agents.config_version`, `config_ok`, `config_error`, `config_reload_generation`, `config_reported_at` | the version each agent last handled, whether it runs, the agent's diagnostics when refused, the agent's configuration generation after it |
//! | `commands` | one per command: target agent or group, `kind`, `args` (the whole command as JSON), `created_by`, `request_id` (idempotent sends) |
//! | `command_results` | one per (command, target agent), made when it is sent: `delivered_at`, `finished_at`, `ok`, `result` (`{"output": …}`) |
//! | `central_acks` | acknowledgements made on the server, per agent in order (the agent's cursor is the id); `agents.acks_applied` is how far it applied them |
//! | `audit_log` | `config.publish`, `config.rollback`, `command.send`, `event.ack`, … with actor and detail |

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use tokio_postgres::Client;
use watchpost_fleet_protocol::CommandKind;

use crate::admin::{AdminError, audit, group_id};

/// The NOTIFY channel: payloads `c:GROUP:VERSION` (a configuration published),
/// `g:GROUP` (a command to a group), `a:AGENT` (a command or acknowledgement for one
/// agent).
pub const CHANNEL: &str = "watchpost_fleet";

/// Largest configuration text, and largest total of a version's files: the protocol's
/// (the console's limit on a publication's request follows from them too).
pub use watchpost_fleet_protocol::{MAX_CONFIG_BYTES, MAX_FILES_BYTES, check_file_name};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Database, not found, conflict, bad input.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The configuration has errors: every diagnostic as `file:line:column`.
    #[error("the configuration has errors; nothing was published:\n{0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for ControlError {
    fn from(e: tokio_postgres::Error) -> Self {
        ControlError::Admin(AdminError::Db(e))
    }
}

/// Runs `f` in a transaction on `client` (BEGIN … COMMIT, ROLLBACK on error).
async fn in_tx<T, F>(client: &Client, f: F) -> Result<T, ControlError>
where
    F: AsyncFnOnce(&Client) -> Result<T, ControlError>,
{
    client.batch_execute("BEGIN").await?;
    match f(client).await {
        Ok(v) => {
            client.batch_execute("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn notify(client: &Client, payload: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map(|_| ())
}

/// Writes a version's files under `dir` (the agent does the same in its state directory).
pub fn write_files(dir: &std::path::Path, files: &BTreeMap<String, String>) -> Result<(), String> {
    let total: usize = files.values().map(String::len).sum();
    if total > MAX_FILES_BYTES {
        return Err(format!(
            "the files are {total} bytes together; at most {MAX_FILES_BYTES}"
        ));
    }
    for (name, content) in files {
        check_file_name(name)?;
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Checks a group configuration with the agent's own `check-config` code (nothing on
/// this machine is looked at: `Purpose::Offline`), its files in a temporary folder.
/// `Ok` carries the warnings, `Err` every diagnostic, both as `file:line:column`.
pub fn check_group_config(text: &str, files: &BTreeMap<String, String>) -> Result<String, String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "group.toml: the configuration is {} bytes; at most {MAX_CONFIG_BYTES}",
            text.len()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    write_files(dir.path(), files)?;
    let source = watchpost_config::ConfigSource::Fleet {
        local: None,
        group: watchpost_config::GroupText::Text {
            name: "group.toml".into(),
            text: text.to_owned(),
        },
        files: dir.path().to_owned(),
    };
    // The files are named as in the version (`rules/a.yml`), not by the temporary folder.
    let relative = |text: String| text.replace(&format!("{}/", dir.path().display()), "");
    match watchpost_config::load(&source, watchpost_config::Purpose::Offline) {
        Ok(l) => Ok(relative(l.rendered())),
        Err(r) => Err(relative(r.rendered())),
    }
}

/// Whether the rendered `check-config` report says that the file `name` of the version
/// (a Sigma rule file) was not loaded.
pub fn not_loaded(rendered: &str, name: &str) -> bool {
    let needle = format!("not loaded: {name}: ");
    rendered
        .lines()
        .any(|l| l.contains(": warning: ") && l.contains(&needle))
}

/// SHA-256 over the text and the files (name, content), hex.
pub fn digest(text: &str, files: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    for (n, c) in files {
        h.update([0]);
        h.update(n.as_bytes());
        h.update([0]);
        h.update(c.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A version published.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The group.
    pub group: String,
    /// Its new version.
    pub version: i32,
    /// Digest of text and files.
    pub digest: String,
    /// `check-config` warnings (rendered; empty without any).
    pub warnings: String,
}

/// Checks a configuration and, without errors, stores it as the group's next version and
/// publishes it: the group's agents receive it on their long-poll. A file named in
/// `strict` that is not loaded (a Sigma rule file's warning) refuses the publication too,
/// with every diagnostic: the console's publication of a file the admin just edited or
/// added, which must load (the CLI passes none: a rule set may hold rules skipped on
/// purpose).
pub async fn config_publish(
    client: &Client,
    actor: &str,
    group: &str,
    text: &str,
    files: &BTreeMap<String, String>,
    comment: &str,
    strict: &[&str],
) -> Result<Published, ControlError> {
    let gid = group_id(client, group).await?;
    let (t, f) = (text.to_owned(), files.clone());
    let warnings = tokio::task::spawn_blocking(move || check_group_config(&t, &f))
        .await
        .map_err(|e| ControlError::Refused(format!("the check failed: {e}")))?
        .map_err(ControlError::Refused)?;
    if strict.iter().any(|name| not_loaded(&warnings, name)) {
        return Err(ControlError::Refused(warnings));
    }
    let digest = digest(text, files);
    let files_json = serde_json::to_value(files).unwrap_or_default();
    let version = in_tx(client, async |c: &Client| {
        // The group row's lock orders publications of one group.
        c.execute("SELECT 1 FROM groups WHERE id = $1 FOR UPDATE", &[&gid])
            .await?;
        let version: i32 = c
            .query_one(
                "INSERT INTO config_versions (group_id, version, config, files, digest, comment, created_by)
                 SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6
                 FROM config_versions WHERE group_id = $1
                 RETURNING version",
                &[&gid, &text, &files_json, &digest, &comment, &actor],
            )
            .await?
            .get(0);
        set_published(c, actor, gid, group, version, "config.publish").await?;
        Ok(version)
    })
    .await?;
    Ok(Published {
        group: group.to_owned(),
        version,
        digest,
        warnings,
    })
}

async fn set_published(
    c: &Client,
    actor: &str,
    gid: i64,
    group: &str,
    version: i32,
    action: &str,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE groups SET published_version = $2, published_at = now(), published_by = $3 WHERE id = $1",
        &[&gid, &version, &actor],
    )
    .await?;
    audit(
        c,
        actor,
        action,
        group,
        serde_json::json!({ "version": version }),
    )
    .await?;
    notify(c, &format!("c:{gid}:{version}")).await?;
    Ok(())
}

/// Publishes an earlier version again (a rollback): agents receive it as they would a
/// new one.
pub async fn config_rollback(
    client: &Client,
    actor: &str,
    group: &str,
    version: i32,
) -> Result<(), ControlError> {
    let gid = group_id(client, group).await?;
    in_tx(client, async |c: &Client| {
        c.execute("SELECT 1 FROM groups WHERE id = $1 FOR UPDATE", &[&gid])
            .await?;
        if c.query_opt(
            "SELECT 1 FROM config_versions WHERE group_id = $1 AND version = $2",
            &[&gid, &version],
        )
        .await?
        .is_none()
        {
            return Err(
                AdminError::NotFound(format!("group {group} has no version {version}")).into(),
            );
        }
        set_published(c, actor, gid, group, version, "config.rollback").await
    })
    .await
}

/// A version as listed.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    /// The version.
    pub version: i32,
    /// Whether the group's agents should run it now.
    pub published: bool,
    /// Digest.
    pub digest: String,
    /// Who stored it, when, why.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// The comment given.
    pub comment: String,
    /// Agents that run it.
    pub applied: i64,
    /// Agents that refused it.
    pub refused: i64,
}

/// A group's versions, newest first.
pub async fn config_versions(
    client: &Client,
    group: &str,
) -> Result<Vec<VersionRow>, ControlError> {
    let gid = group_id(client, group).await?;
    Ok(client
        .query(
            "SELECT v.version, v.version = g.published_version, v.digest, v.created_by, v.created_at,
                    v.comment,
                    (SELECT count(*) FROM agents a WHERE a.group_id = g.id AND a.config_version = v.version AND a.config_ok),
                    (SELECT count(*) FROM agents a WHERE a.group_id = g.id AND a.config_version = v.version AND NOT a.config_ok)
             FROM config_versions v JOIN groups g ON g.id = v.group_id
             WHERE v.group_id = $1 ORDER BY v.version DESC",
            &[&gid],
        )
        .await?
        .iter()
        .map(|r| VersionRow {
            version: r.get(0),
            published: r.get::<_, Option<bool>>(1).unwrap_or(false),
            digest: r.get(2),
            created_by: r.get(3),
            created_at: r.get::<_, Timestamp>(4).to_string(),
            comment: r.get(5),
            applied: r.get(6),
            refused: r.get(7),
        })
        .collect())
}

/// One version's text and files.
pub async fn config_get(
    client: &Client,
    group: &str,
    version: Option<i32>,
) -> Result<(i32, String, BTreeMap<String, String>), ControlError> {
    let gid = group_id(client, group).await?;
    let row = client
        .query_opt(
            "SELECT v.version, v.config, v.files FROM config_versions v JOIN groups g ON g.id = v.group_id
             WHERE v.group_id = $1 AND v.version = coalesce($2, g.published_version)",
            &[&gid, &version],
        )
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("group {group} has no such version")))?;
    let files: serde_json::Value = row.get(2);
    Ok((
        row.get(0),
        row.get(1),
        serde_json::from_value(files).unwrap_or_default(),
    ))
}

/// What an agent did with its group's configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfigRow {
    /// Agent id.
    pub id: i64,
    /// Host name.
    pub hostname: String,
    /// The version it last handled.
    pub version: Option<i32>,
    /// Whether that version runs.
    pub ok: Option<bool>,
    /// The agent's diagnostics when it refused it.
    pub error: Option<String>,
    /// When it reported.
    pub reported_at: Option<String>,
    /// The agent's configuration generation after handling it (its reload counter).
    pub generation: Option<i64>,
    /// The digest of the configuration it runs (from its heartbeat).
    pub digest: Option<String>,
}

/// Per agent of a group: the configuration version it handled and how.
pub async fn config_status(
    client: &Client,
    group: &str,
) -> Result<Vec<AgentConfigRow>, ControlError> {
    let gid = group_id(client, group).await?;
    Ok(client
        .query(
            "SELECT id, hostname, config_version, config_ok, config_error, config_reported_at,
                    config_reload_generation, config_generation
             FROM agents WHERE group_id = $1 AND revoked_at IS NULL ORDER BY hostname, id",
            &[&gid],
        )
        .await?
        .iter()
        .map(|r| AgentConfigRow {
            id: r.get(0),
            hostname: r.get(1),
            version: r.get(2),
            ok: r.get(3),
            error: r.get(4),
            reported_at: r.get::<_, Option<Timestamp>>(5).map(|t| t.to_string()),
            generation: r.get(6),
            digest: r.get(7),
        })
        .collect())
}

/// Whom a command goes to.
#[derive(Debug, Clone)]
pub enum Target {
    /// One agent, by id or host name.
    Agent(String),
    /// Every agent of a group (at the moment it is sent).
    Group(String),
}

/// A command sent.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    /// Its id.
    pub id: i64,
    /// Agents it goes to.
    pub agents: i64,
    /// Whether a command with the same `request_id` had been sent before (this is it).
    pub existing: bool,
}

/// Sends a command. With `request_id`, sending again returns the command already sent
/// with it (a retried send runs once).
pub async fn command_send(
    client: &Client,
    actor: &str,
    target: &Target,
    kind: &CommandKind,
    request_id: Option<&str>,
    expires: Option<Timestamp>,
) -> Result<Sent, ControlError> {
    if let Some(r) = request_id
        && let Some(row) = client
            .query_opt(
                "SELECT id, (SELECT count(*) FROM command_results WHERE command_id = c.id) FROM commands c WHERE request_id = $1",
                &[&r],
            )
            .await?
    {
        return Ok(Sent {
            id: row.get(0),
            agents: row.get(1),
            existing: true,
        });
    }
    let (agent, group) = match target {
        Target::Agent(a) => (Some(crate::admin::agent_id(client, a).await?), None),
        Target::Group(g) => (None, Some(group_id(client, g).await?)),
    };
    let args = serde_json::to_value(kind).unwrap_or_default();
    let target_name = match target {
        Target::Agent(a) => format!("agent {a}"),
        Target::Group(g) => format!("group {g}"),
    };
    in_tx(client, async |c: &Client| {
        let id: i64 = c
            .query_one(
                "INSERT INTO commands (agent_id, group_id, kind, args, created_by, expires_at, request_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&agent, &group, &kind.name(), &args, &actor, &expires, &request_id],
            )
            .await?
            .get(0);
        let agents = c
            .execute(
                "INSERT INTO command_results (command_id, agent_id)
                 SELECT $1, id FROM agents
                 WHERE revoked_at IS NULL AND (id = $2 OR group_id = $3)",
                &[&id, &agent, &group],
            )
            .await? as i64;
        audit(
            c,
            actor,
            "command.send",
            &target_name,
            serde_json::json!({ "id": id, "command": args, "agents": agents }),
        )
        .await?;
        match (agent, group) {
            (Some(a), _) => notify(c, &format!("a:{a}")).await?,
            (_, Some(g)) => notify(c, &format!("g:{g}")).await?,
            _ => {}
        }
        Ok(Sent {
            id,
            agents,
            existing: false,
        })
    })
    .await
}

/// A command and what each agent answered.
#[derive(Debug, Clone, Serialize)]
pub struct CommandRow {
    /// Id.
    pub id: i64,
    /// `quarantine_release`, …
    pub kind: String,
    /// The command as sent.
    pub args: serde_json::Value,
    /// Who sent it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// Per target agent: host name, delivered, finished, ok, output.
    pub results: Vec<ResultRow>,
}

/// What one agent did with a command.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    /// Agent id.
    pub agent_id: i64,
    /// Host name.
    pub hostname: String,
    /// When it was last handed to the agent.
    pub delivered_at: Option<String>,
    /// When the result came.
    pub finished_at: Option<String>,
    /// Whether it did what was asked (`None`: pending).
    pub ok: Option<bool>,
    /// Its output or error.
    pub output: Option<String>,
}

/// Commands, newest first (`id`: only that one).
pub async fn command_list(
    client: &Client,
    id: Option<i64>,
    limit: i64,
) -> Result<Vec<CommandRow>, ControlError> {
    let rows = client
        .query(
            "SELECT c.id, c.kind, c.args, c.created_by, c.created_at,
                    coalesce(json_agg(json_build_object(
                        'agent_id', r.agent_id, 'hostname', a.hostname,
                        'delivered_at', r.delivered_at, 'finished_at', r.finished_at,
                        'ok', r.ok, 'output', r.result->>'output') ORDER BY a.hostname)
                      FILTER (WHERE r.agent_id IS NOT NULL), '[]')
             FROM commands c
             LEFT JOIN command_results r ON r.command_id = c.id
             LEFT JOIN agents a ON a.id = r.agent_id
             WHERE $1::bigint IS NULL OR c.id = $1
             GROUP BY c.id ORDER BY c.id DESC LIMIT $2",
            &[&id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let results: Vec<serde_json::Value> =
                serde_json::from_value(r.get(5)).unwrap_or_default();
            CommandRow {
                id: r.get(0),
                kind: r.get(1),
                args: r.get(2),
                created_by: r.get(3),
                created_at: r.get::<_, Timestamp>(4).to_string(),
                results: results
                    .iter()
                    .map(|v| ResultRow {
                        agent_id: v["agent_id"].as_i64().unwrap_or(0),
                        hostname: v["hostname"].as_str().unwrap_or("").to_owned(),
                        delivered_at: v["delivered_at"].as_str().map(str::to_owned),
                        finished_at: v["finished_at"].as_str().map(str::to_owned),
                        ok: v["ok"].as_bool(),
                        output: v["output"].as_str().map(str::to_owned),
                    })
                    .collect(),
            }
        })
        .collect())
}

/// An acknowledgement made centrally.
#[derive(Debug, Clone, Serialize)]
pub struct Acked {
    /// The server's event id.
    pub event: i64,
    /// The agent it goes to.
    pub agent_id: i64,
    /// The event's id in the agent's store.
    pub local_id: i64,
}

/// Acknowledges events by their server ids (`watchpost-server events` shows them): who,
/// when and why are stored on the event, and each goes to its agent's local store.
/// Events already acknowledged are left as they are (not in the answer).
pub async fn ack(
    client: &Client,
    actor: &str,
    events: &[i64],
    comment: &str,
) -> Result<Vec<Acked>, ControlError> {
    in_tx(client, async |c: &Client| {
        let rows = c
            .query(
                "UPDATE events SET acked_at = now(), acked_by = $2, ack_comment = $3, ack_origin = 'server'
                 WHERE id = ANY($1) AND acked_at IS NULL
                 RETURNING id, agent_id, local_id",
                &[&events, &actor, &comment],
            )
            .await?;
        let mut done = Vec::new();
        let mut agents = std::collections::BTreeSet::new();
        for r in &rows {
            let a = Acked {
                event: r.get(0),
                agent_id: r.get(1),
                local_id: r.get(2),
            };
            c.execute(
                "INSERT INTO central_acks (agent_id, local_id, by_user, comment) VALUES ($1, $2, $3, $4)",
                &[&a.agent_id, &a.local_id, &actor, &comment],
            )
            .await?;
            agents.insert(a.agent_id);
            done.push(a);
        }
        if !done.is_empty() {
            let ids: Vec<i64> = done.iter().map(|a| a.event).collect();
            audit(
                c,
                actor,
                "event.ack",
                "events",
                serde_json::json!({ "events": ids, "comment": comment }),
            )
            .await?;
        }
        for a in agents {
            notify(c, &format!("a:{a}")).await?;
        }
        Ok(done)
    })
    .await
}

/// Agents not running their group's published version (not received yet, or refused:
/// outstanding), and command
/// deliveries without a result (pending): the gauges of `/metrics`.
pub async fn outstanding(client: &Client) -> Result<(i64, i64), tokio_postgres::Error> {
    let r = client
        .query_one(
            "SELECT (SELECT count(*) FROM agents a JOIN groups g ON g.id = a.group_id
                     WHERE a.revoked_at IS NULL AND g.published_version IS NOT NULL
                       AND (a.config_version IS DISTINCT FROM g.published_version
                            OR NOT coalesce(a.config_ok, false))),
                    (SELECT count(*) FROM command_results WHERE finished_at IS NULL)",
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}
