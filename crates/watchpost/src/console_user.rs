//! `watchpost console-user`: the users of the agent's web console, kept in the file
//! `[console] users` names (default `<state_dir>/console-users.toml`). Passwords are read
//! from standard input and stored as argon2id hashes; the file is replaced atomically
//! (mode 0600 on Unix). The console reads it at every login and request, so a change
//! applies without a restart.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use watchpost_config::Purpose;
use watchpost_console::auth::{FileUser, UserFile, hash_password, valid_name};
use watchpost_console::backend::Role;

use crate::cli::ConfigArg;
use crate::load::load;

/// `watchpost console-user`.
#[derive(Debug, clap::Args)]
pub struct ConsoleUserArgs {
    #[command(flatten)]
    cfg: ConfigArg,
    /// The user file (default: `[console] users`, else `<state_dir>/console-users.toml`).
    #[arg(long, global = true)]
    file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: ConsoleUserCmd,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum ConsoleUserCmd {
    /// Adds a user; the password (at least 12 characters) is read from standard input.
    Add {
        /// User name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// viewer (reads), analyst (also acknowledges), admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Sets a user's password (read from standard input).
    Passwd {
        /// User name.
        name: String,
    },
    /// Changes a user's role.
    Role {
        /// User name.
        name: String,
        /// viewer, analyst or admin.
        role: String,
    },
    /// Disables a user (their sessions end at their next request).
    Disable {
        /// User name.
        name: String,
    },
    /// Enables a disabled user again.
    Enable {
        /// User name.
        name: String,
    },
    /// Lists the users.
    List,
}

fn read_password() -> Result<String> {
    watchpost_console::auth::password_from_stdin()?.context("no password on standard input")
}

/// Runs `watchpost console-user`.
pub fn run(a: &ConsoleUserArgs) -> Result<ExitCode> {
    let path = match &a.file {
        Some(f) => f.clone(),
        None => {
            let Some((config, _)) = load(a.cfg.config.as_deref(), Purpose::Offline)? else {
                return Ok(ExitCode::from(1));
            };
            config
                .console
                .map(|c| c.users)
                .unwrap_or_else(|| config.state_dir.join("console-users.toml"))
        }
    };
    let mut file = UserFile::read(&path)?;
    let role = |r: &str| -> Result<String> {
        match Role::parse(r) {
            Some(r) => Ok(r.as_str().to_owned()),
            None => bail!("role `{r}`: use viewer, analyst or admin"),
        }
    };
    let existing = |file: &UserFile, name: &str| -> Result<FileUser> {
        file.user
            .iter()
            .find(|u| u.name == name)
            .cloned()
            .with_context(|| format!("no user `{name}` in {}", path.display()))
    };
    let message = match &a.cmd {
        ConsoleUserCmd::List => {
            for u in &file.user {
                println!(
                    "{}\t{}{}",
                    u.name,
                    u.role,
                    if u.disabled { "\tdisabled" } else { "" }
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        ConsoleUserCmd::Add { name, role: r } => {
            if !valid_name(name) {
                bail!("user name `{name}`: use 1-64 letters, digits, `-`, `_` or `.`");
            }
            if file.user.iter().any(|u| &u.name == name) {
                bail!("user `{name}` exists already (use `passwd` or `role`)");
            }
            let role = role(r)?;
            let password = hash_password(&read_password()?)?;
            file.set(FileUser {
                name: name.clone(),
                role: role.clone(),
                password,
                disabled: false,
            });
            format!("user {name} ({role}) added")
        }
        ConsoleUserCmd::Passwd { name } => {
            let mut u = existing(&file, name)?;
            u.password = hash_password(&read_password()?)?;
            file.set(u);
            format!("password of {name} set")
        }
        ConsoleUserCmd::Role { name, role: r } => {
            let mut u = existing(&file, name)?;
            u.role = role(r)?;
            let msg = format!("{name} is now {}", u.role);
            file.set(u);
            msg
        }
        ConsoleUserCmd::Disable { name } | ConsoleUserCmd::Enable { name } => {
            let mut u = existing(&file, name)?;
            u.disabled = matches!(a.cmd, ConsoleUserCmd::Disable { .. });
            let msg = format!("{name} {}", if u.disabled { "disabled" } else { "enabled" });
            file.set(u);
            msg
        }
    };
    watchpost_support::write_atomic_with(
        &path,
        file.to_text().as_bytes(),
        watchpost_support::AtomicWrite {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .with_context(|| format!("writing {}", path.display()))?;
    println!("{message} ({})", path.display());
    Ok(ExitCode::SUCCESS)
}
