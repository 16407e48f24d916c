//! `watchpost-server`: the fleet server's command line. See `watchpost-server --help` and
//! `docs/fleet.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use watchpost_server::{admin, config, db, events};

mod control_cli;

#[derive(Parser)]
#[command(
    name = "watchpost-server",
    version,
    about = "The watchpost fleet server: agents enroll and ship what they saw into PostgreSQL"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "WATCHPOST_SERVER_CONFIG",
        default_value = "/etc/watchpost-server/server.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks the configuration and prints every problem with its place.
    CheckConfig,
    /// Creates or upgrades the database schema (also done at every start).
    InitDb,
    /// Runs the server (foreground; SIGINT/SIGTERM stop it).
    Run,
    /// Lists stored events matching a query (the language of `watchpost events`), newest first.
    Events {
        /// Only events at or after: RFC 3339, a date, or an age (30m, 12h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Most events shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Query terms: isanomaly:true needsack:true host:A field:value free text -term.
        query: Vec<String>,
    },
    /// Groups of agents.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Enrollment secrets of a group.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Enrolled agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Users (API tokens now; console logins use their passwords).
    #[command(subcommand)]
    User(UserCmd),
    /// Group configurations: publish (checked first), list, show, roll back, status.
    #[command(subcommand)]
    Config(control_cli::ConfigCmd),
    /// Commands to agents: quarantine, run an action, run checks, reload.
    #[command(subcommand, name = "command")]
    Cmd(control_cli::CommandCmd),
    /// Acknowledges events (by the ids `events` shows); the acknowledgement reaches the
    /// agent's own store.
    Ack {
        #[arg(required = true)]
        events: Vec<i64>,
        #[arg(short = 'm', long, default_value = "")]
        comment: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Jsonl,
}

#[derive(Subcommand)]
enum GroupCmd {
    /// Makes a group.
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Lists groups.
    List,
    /// Removes a group without agents.
    Remove { name: String },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Makes an enrollment secret and prints it (once; only its hash is kept).
    Create {
        group: String,
        name: String,
        /// When it expires: an age from now (30d) or a time (RFC 3339, a date).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Lists secrets (never their values).
    List { group: Option<String> },
    /// Revokes a secret: no new enrollments with it.
    Revoke { group: String, name: String },
    /// Makes a secret expire (now, or at --at).
    Expire {
        group: String,
        name: String,
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Lists agents.
    List {
        #[arg(long)]
        group: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Revokes an agent (by id or host name): every request it makes is refused.
    Revoke {
        agent: String,
        #[arg(short = 'm', long, default_value = "")]
        reason: String,
    },
    /// Deletes an agent's record (its events stay); the host may enroll again.
    Delete { agent: String },
    /// Moves an agent to another group.
    Move { agent: String, group: String },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Adds a user; the password (optional) is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        /// Read a password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Sets a user's password (read from standard input).
    Passwd { name: String },
    /// Disables a user and their tokens.
    Disable { name: String },
    /// Makes an API token for a user and prints it (once).
    Token {
        name: String,
        #[arg(long, default_value = "cli")]
        token_name: String,
    },
    /// Lists users.
    List,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WATCHPOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Who runs the admin command (for the audit log).
fn actor() -> String {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

/// The configuration for admin commands: parsed and checked, without loading TLS files.
fn admin_config(path: &Path) -> Result<config::Config> {
    let text = watchpost_server::read_limited(path, 1 << 20)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (c, errors) = config::parse(&text);
    let shown = config::render(path, &text, &errors);
    match c {
        Some(c) => {
            eprint!("{shown}");
            Ok(c)
        }
        None => bail!("{}configuration has errors", shown),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("watchpost-server")
        .build()?)
}

/// A database connection for an admin command, with the schema up to date.
async fn admin_client(c: &config::Config) -> Result<deadpool_postgres::Object> {
    let pool = db::pool(&c.database)?;
    let client = pool.get().await.map_err(db::DbError::from)?;
    let version = db::schema_version(&client).await?;
    let known = db::MIGRATIONS.last().map_or(0, |m| m.0);
    if version < known {
        bail!(
            "the database schema is at version {version}, this server needs {known}: run `watchpost-server init-db`"
        );
    }
    Ok(client)
}

fn parse_when(text: &str) -> Result<jiff::Timestamp> {
    let now = jiff::Timestamp::now();
    let t = text.trim();
    // An age counts forward here (expires in 30d).
    if let Ok(past) = watchpost_query::parse_since(t, now)
        && !t.contains('-')
        && !t.contains(':')
    {
        let span = now.duration_since(past);
        return Ok(now.checked_add(span)?);
    }
    Ok(watchpost_query::parse_since(t, now)?)
}

fn read_password() -> Result<String> {
    watchpost_console::auth::password_from_stdin()?.context("no password on standard input")
}

fn run(cli: Cli) -> Result<ExitCode> {
    let out = &mut std::io::stdout().lock();
    match cli.command {
        Command::CheckConfig => {
            let text = watchpost_server::read_limited(&cli.config, 1 << 20)
                .with_context(|| format!("cannot read {}", cli.config.display()))?;
            let (c, mut errors) = config::parse(&text);
            if let Some(c) = &c {
                errors.extend(config::check_files(c, &text));
            }
            print!("{}", config::render(&cli.config, &text, &errors));
            let n = errors.iter().filter(|e| !e.warning).count();
            let w = errors.len() - n;
            if n > 0 {
                eprintln!("{}: {n} error(s), {w} warning(s)", cli.config.display());
                return Ok(ExitCode::FAILURE);
            }
            println!("{}: ok ({w} warning(s))", cli.config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::InitDb => {
            let c = admin_config(&cli.config)?;
            runtime()?.block_on(async {
                let pool = db::pool(&c.database)?;
                let mut client = pool.get().await.map_err(db::DbError::from)?;
                let applied = db::migrate(&mut client).await?;
                let (w, _) =
                    db::maintain_partitions(&mut client, jiff::Timestamp::now(), c.retention_days)
                        .await?;
                let version = db::schema_version(&client).await?;
                if applied.is_empty() {
                    println!("schema is up to date (version {version})");
                } else {
                    println!("applied migrations {applied:?}; schema version {version}");
                }
                println!("event partitions from {} to {}", w.from, w.until);
                Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
            })
        }
        Command::Run => {
            let (c, shown) = config::load(&cli.config)
                .map_err(|e| anyhow::anyhow!("{e}configuration has errors"))?;
            eprint!("{shown}");
            runtime()?.block_on(async move {
                let running = watchpost_server::start(c.clone()).await?;
                tracing::info!(
                    listen = %running.addr,
                    tls = c.tls.is_some(),
                    metrics = ?running.metrics_addr,
                    "watchpost-server listening"
                );
                wait_for_signal().await;
                tracing::info!("stopping");
                running.stop().await;
                Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
            })
        }
        Command::Events {
            since,
            limit,
            format,
            query,
        } => {
            let c = admin_config(&cli.config)?;
            let q = events::parse_query(&query.join(" "), since.as_deref())?;
            let found = runtime()?.block_on(async {
                let client = admin_client(&c).await?;
                Ok::<_, anyhow::Error>(events::find(&client, &q, limit).await?)
            })?;
            for e in &found {
                match format {
                    Format::Jsonl => writeln!(out, "{}", serde_json::to_string(e)?)?,
                    Format::Text => events::print(out, e)?,
                }
            }
            if found.is_empty() {
                eprintln!("no matching events");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Group(cmd) => admin_cmd(&cli.config, |client| {
            Box::pin(async move {
                let mut o = String::new();
                match cmd {
                    GroupCmd::Add { name, description } => {
                        admin::group_add(client, &actor(), &name, &description).await?;
                        o.push_str(&format!("group {name} added\n"));
                    }
                    GroupCmd::List => {
                        for g in admin::group_list(client).await? {
                            o.push_str(&format!(
                                "{}\t{} agents\t{} active secrets\t{}\n",
                                g.name, g.agents, g.active_secrets, g.description
                            ));
                        }
                    }
                    GroupCmd::Remove { name } => {
                        admin::group_remove(client, &actor(), &name).await?;
                        o.push_str(&format!("group {name} removed\n"));
                    }
                }
                Ok(o)
            })
        }),
        Command::Secret(cmd) => admin_cmd(&cli.config, |client| {
            Box::pin(async move {
                let mut o = String::new();
                match cmd {
                    SecretCmd::Create {
                        group,
                        name,
                        expires,
                    } => {
                        let expires = expires.as_deref().map(parse_when).transpose()?;
                        let s =
                            admin::secret_create(client, &actor(), &group, &name, expires).await?;
                        eprintln!(
                            "enrollment secret {group}/{name} (shown once; only its hash is kept):"
                        );
                        o.push_str(&format!("{s}\n"));
                    }
                    SecretCmd::List { group } => {
                        for s in admin::secret_list(client, group.as_deref()).await? {
                            o.push_str(&format!(
                                "{}/{}\t{}\tuses {}\tcreated {} by {}\texpires {}\n",
                                s.group,
                                s.name,
                                s.state,
                                s.uses,
                                s.created_at,
                                s.created_by,
                                s.expires_at.as_deref().unwrap_or("never")
                            ));
                        }
                    }
                    SecretCmd::Revoke { group, name } => {
                        admin::secret_revoke(client, &actor(), &group, &name).await?;
                        o.push_str(&format!("secret {group}/{name} revoked\n"));
                    }
                    SecretCmd::Expire { group, name, at } => {
                        let at = match at {
                            Some(a) => parse_when(&a)?,
                            None => jiff::Timestamp::now(),
                        };
                        admin::secret_expire(client, &actor(), &group, &name, at).await?;
                        o.push_str(&format!("secret {group}/{name} expires at {at}\n"));
                    }
                }
                Ok(o)
            })
        }),
        Command::Agent(cmd) => {
            let offline = admin_config(&cli.config)?.offline_after.as_secs_f64();
            admin_cmd(&cli.config, move |client| {
                Box::pin(async move {
                    let mut o = String::new();
                    match cmd {
                        AgentCmd::List { group, format } => {
                            for a in admin::agent_list(client, group.as_deref(), offline).await? {
                                match format {
                                    Format::Jsonl => {
                                        o.push_str(&serde_json::to_string(&a)?);
                                        o.push('\n');
                                    }
                                    Format::Text => o.push_str(&format!(
                                        "#{}\t{}\t{}\t{}\t{} {}\tlast seen {}\tseq {}\tdropped {}\n",
                                        a.id,
                                        a.hostname,
                                        a.group,
                                        a.state,
                                        a.os,
                                        a.version,
                                        a.last_seen.as_deref().unwrap_or("never"),
                                        a.last_seq,
                                        a.dropped
                                    )),
                                }
                            }
                        }
                        AgentCmd::Revoke { agent, reason } => {
                            let id = admin::agent_revoke(client, &actor(), &agent, &reason).await?;
                            o.push_str(&format!("agent {id} revoked\n"));
                        }
                        AgentCmd::Delete { agent } => {
                            let id = admin::agent_delete(client, &actor(), &agent).await?;
                            o.push_str(&format!("agent {id} deleted\n"));
                        }
                        AgentCmd::Move { agent, group } => {
                            let id = admin::agent_move(client, &actor(), &agent, &group).await?;
                            o.push_str(&format!("agent {id} moved to {group}\n"));
                        }
                    }
                    Ok(o)
                })
            })
        }
        Command::Config(control_cli::ConfigCmd::Check { file, files }) => {
            print!("{}", control_cli::check(&file, files.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(cmd) => admin_cmd(&cli.config, |client| {
            Box::pin(async move { control_cli::config(client, &actor(), cmd).await })
        }),
        Command::Cmd(cmd) => admin_cmd(&cli.config, |client| {
            Box::pin(async move { control_cli::command(client, &actor(), cmd).await })
        }),
        Command::Ack { events, comment } => admin_cmd(&cli.config, |client| {
            Box::pin(async move { control_cli::ack(client, &actor(), &events, &comment).await })
        }),
        Command::User(cmd) => {
            let password = match &cmd {
                UserCmd::Add {
                    password_stdin: true,
                    ..
                }
                | UserCmd::Passwd { .. } => Some(read_password()?),
                _ => None,
            };
            admin_cmd(&cli.config, move |client| {
                Box::pin(async move {
                    let mut o = String::new();
                    match cmd {
                        UserCmd::Add { name, role, .. } => {
                            admin::user_add(client, &actor(), &name, &role, password.as_deref())
                                .await?;
                            o.push_str(&format!("user {name} ({role}) added\n"));
                        }
                        UserCmd::Passwd { name } => {
                            admin::user_passwd(
                                client,
                                &actor(),
                                &name,
                                password.as_deref().unwrap_or(""),
                            )
                            .await?;
                            o.push_str(&format!("password of {name} set\n"));
                        }
                        UserCmd::Disable { name } => {
                            admin::user_disable(client, &actor(), &name).await?;
                            o.push_str(&format!("user {name} disabled\n"));
                        }
                        UserCmd::Token { name, token_name } => {
                            let t = admin::user_token(client, &actor(), &name, &token_name).await?;
                            eprintln!(
                                "API token {token_name} of {name} (shown once; only its hash is kept):"
                            );
                            o.push_str(&format!("{t}\n"));
                        }
                        UserCmd::List => {
                            for u in admin::user_list(client).await? {
                                o.push_str(&format!(
                                    "{}\t{}\tpassword {}\ttokens {}{}\n",
                                    u.name,
                                    u.role,
                                    if u.password { "set" } else { "none" },
                                    u.tokens,
                                    u.disabled_at
                                        .map(|d| format!("\tdisabled {d}"))
                                        .unwrap_or_default()
                                ));
                            }
                        }
                    }
                    Ok(o)
                })
            })
        }
    }
}

type AdminFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String>> + 'a>>;

/// Runs one admin command against the database and prints what it says.
fn admin_cmd(
    path: &Path,
    f: impl for<'a> FnOnce(&'a tokio_postgres::Client) -> AdminFuture<'a>,
) -> Result<ExitCode> {
    let c = admin_config(path)?;
    let text = runtime()?.block_on(async {
        let client = admin_client(&c).await?;
        f(&client).await
    })?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
