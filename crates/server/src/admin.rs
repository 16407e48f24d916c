//! What the admin commands do to the database: groups, enrollment secrets, agents, users;
//! also enrollment itself (the server's `/enroll` handler calls [`enroll`]). Every change
//! is written to the audit log with who made it.
//!
//! Credentials (agent credentials, enrollment secrets, user API tokens) are 32 random
//! bytes from the operating system, hex-encoded behind a prefix (`wpa_`, `wpe_`, `wpu_`).
//! Only their SHA-256 is stored: with 256 random bits a fast hash is enough (no guessing
//! can succeed), and a lookup by hash costs one index probe per request. User passwords,
//! which people choose, get argon2id.

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use watchpost_fleet_protocol::{
    CREDENTIAL_PREFIX, ENROLL_SECRET_PREFIX, EnrollRequest, USER_TOKEN_PREFIX,
};

/// Why an admin command or an enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something already exists or is in the way.
    #[error("{0}")]
    Conflict(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The enrollment secret is unknown, expired or revoked; or the agent is revoked.
    #[error("{0}")]
    Refused(String),
    /// No randomness from the operating system.
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

/// A fresh secret: `prefix` + 64 hex digits.
pub fn new_secret(prefix: &str) -> Result<String, AdminError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AdminError::Random(e.to_string()))?;
    let mut s = String::with_capacity(prefix.len() + 64);
    s.push_str(prefix);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.trim().as_bytes()).to_vec()
}

/// Names of groups, secrets and users: 1-64 letters, digits, `-`, `_`, `.`.
fn check_name(what: &str, name: &str) -> Result<(), AdminError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(AdminError::Invalid(format!(
            "{what} name `{name}`: use 1-64 letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(())
}

pub(crate) async fn audit(
    client: &Client,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), AdminError> {
    client
        .execute(
            "INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
            &[&actor, &action, &target, &detail],
        )
        .await?;
    Ok(())
}

pub(crate) async fn group_id(client: &Client, name: &str) -> Result<i64, AdminError> {
    client
        .query_opt("SELECT id FROM groups WHERE name = $1", &[&name])
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| AdminError::NotFound(format!("no group `{name}`")))
}

/// A group as listed.
#[derive(Debug, Serialize)]
pub struct GroupRow {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Agents in it.
    pub agents: i64,
    /// Enrollment secrets usable now.
    pub active_secrets: i64,
}

/// Makes a group.
pub async fn group_add(
    client: &Client,
    actor: &str,
    name: &str,
    description: &str,
) -> Result<(), AdminError> {
    check_name("group", name)?;
    let n = client
        .execute(
            "INSERT INTO groups (name, description) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &description],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::Conflict(format!(
            "group `{name}` exists already"
        )));
    }
    audit(
        client,
        actor,
        "group.add",
        name,
        serde_json::json!({ "description": description }),
    )
    .await
}

/// Every group.
pub async fn group_list(client: &Client) -> Result<Vec<GroupRow>, AdminError> {
    Ok(client
        .query(
            "SELECT g.name, g.description,
                    (SELECT count(*) FROM agents a WHERE a.group_id = g.id),
                    (SELECT count(*) FROM enroll_secrets s WHERE s.group_id = g.id
                        AND s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now()))
             FROM groups g ORDER BY g.name",
            &[],
        )
        .await?
        .iter()
        .map(|r| GroupRow {
            name: r.get(0),
            description: r.get(1),
            agents: r.get(2),
            active_secrets: r.get(3),
        })
        .collect())
}

/// Removes an empty group.
pub async fn group_remove(client: &Client, actor: &str, name: &str) -> Result<(), AdminError> {
    let id = group_id(client, name).await?;
    let agents: i64 = client
        .query_one("SELECT count(*) FROM agents WHERE group_id = $1", &[&id])
        .await?
        .get(0);
    if agents > 0 {
        return Err(AdminError::Conflict(format!(
            "group `{name}` has {agents} agents: move or delete them first"
        )));
    }
    client
        .execute("DELETE FROM groups WHERE id = $1", &[&id])
        .await?;
    audit(client, actor, "group.remove", name, serde_json::json!({})).await
}

/// An enrollment secret as listed (never the secret itself).
#[derive(Debug, Serialize)]
pub struct SecretRow {
    /// Group.
    pub group: String,
    /// Name.
    pub name: String,
    /// Made by.
    pub created_by: String,
    /// Made at.
    pub created_at: String,
    /// Expires at.
    pub expires_at: Option<String>,
    /// Revoked at.
    pub revoked_at: Option<String>,
    /// Enrollments made with it.
    pub uses: i64,
    /// `active`, `expired` or `revoked`.
    pub state: String,
}

/// Makes an enrollment secret for a group; returns the secret (shown once).
pub async fn secret_create(
    client: &Client,
    actor: &str,
    group: &str,
    name: &str,
    expires: Option<Timestamp>,
) -> Result<String, AdminError> {
    check_name("secret", name)?;
    let gid = group_id(client, group).await?;
    let secret = new_secret(ENROLL_SECRET_PREFIX)?;
    let n = client
        .execute(
            "INSERT INTO enroll_secrets (group_id, name, secret_hash, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id, name) DO NOTHING",
            &[&gid, &name, &hash(&secret), &actor, &expires],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::Conflict(format!(
            "group `{group}` has a secret named `{name}` already"
        )));
    }
    audit(
        client,
        actor,
        "secret.create",
        &format!("{group}/{name}"),
        serde_json::json!({ "expires_at": expires.map(|t| t.to_string()) }),
    )
    .await?;
    Ok(secret)
}

/// Secrets, of one group or all.
pub async fn secret_list(
    client: &Client,
    group: Option<&str>,
) -> Result<Vec<SecretRow>, AdminError> {
    Ok(client
        .query(
            "SELECT g.name, s.name, s.created_by, s.created_at, s.expires_at, s.revoked_at,
                    s.uses + (SELECT count(*) FROM enroll_secret_uses u WHERE u.secret_id = s.id),
                    CASE WHEN s.revoked_at IS NOT NULL THEN 'revoked'
                         WHEN s.expires_at IS NOT NULL AND s.expires_at <= now() THEN 'expired'
                         ELSE 'active' END
             FROM enroll_secrets s JOIN groups g ON g.id = s.group_id
             WHERE $1::text IS NULL OR g.name = $1
             ORDER BY g.name, s.name",
            &[&group],
        )
        .await?
        .iter()
        .map(|r| SecretRow {
            group: r.get(0),
            name: r.get(1),
            created_by: r.get(2),
            created_at: r.get::<_, Timestamp>(3).to_string(),
            expires_at: r.get::<_, Option<Timestamp>>(4).map(|t| t.to_string()),
            revoked_at: r.get::<_, Option<Timestamp>>(5).map(|t| t.to_string()),
            uses: r.get(6),
            state: r.get(7),
        })
        .collect())
}

/// Revokes a secret (enrolled agents keep their own credentials).
pub async fn secret_revoke(
    client: &Client,
    actor: &str,
    group: &str,
    name: &str,
) -> Result<(), AdminError> {
    let gid = group_id(client, group).await?;
    let n = client
        .execute(
            "UPDATE enroll_secrets SET revoked_at = now()
             WHERE group_id = $1 AND name = $2 AND revoked_at IS NULL",
            &[&gid, &name],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::NotFound(format!(
            "no active secret `{name}` in group `{group}`"
        )));
    }
    audit(
        client,
        actor,
        "secret.revoke",
        &format!("{group}/{name}"),
        serde_json::json!({}),
    )
    .await
}

/// Sets (or changes) when a secret expires.
pub async fn secret_expire(
    client: &Client,
    actor: &str,
    group: &str,
    name: &str,
    at: Timestamp,
) -> Result<(), AdminError> {
    let gid = group_id(client, group).await?;
    let n = client
        .execute(
            "UPDATE enroll_secrets SET expires_at = $3 WHERE group_id = $1 AND name = $2",
            &[&gid, &name, &at],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::NotFound(format!(
            "no secret `{name}` in group `{group}`"
        )));
    }
    audit(
        client,
        actor,
        "secret.expire",
        &format!("{group}/{name}"),
        serde_json::json!({ "expires_at": at.to_string() }),
    )
    .await
}

/// What enrollment hands back.
#[derive(Debug)]
pub struct Enrolled {
    /// Agent id.
    pub agent_id: i64,
    /// Group name.
    pub group: String,
    /// The new credential.
    pub credential: String,
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Enrolls (or re-enrolls, from the same host id) an agent with a group's secret.
pub async fn enroll(
    client: &mut Client,
    req: &EnrollRequest,
    address: &str,
) -> Result<Enrolled, AdminError> {
    let host_id = req.host_id.trim();
    if host_id.is_empty() || host_id.len() > 256 || host_id.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "`host_id` must be 1-256 printable characters".into(),
        ));
    }
    if req.hostname.trim().is_empty() || req.hostname.len() > 256 {
        return Err(AdminError::Invalid(
            "`hostname` must be 1-256 characters".into(),
        ));
    }
    let tx = client.transaction().await?;
    let secret = tx
        .query_opt(
            "SELECT s.id, s.group_id, g.name, s.revoked_at IS NOT NULL,
                    s.expires_at IS NOT NULL AND s.expires_at <= now()
             FROM enroll_secrets s JOIN groups g ON g.id = s.group_id
             WHERE s.secret_hash = $1",
            &[&hash(&req.secret)],
        )
        .await?;
    let Some(secret) = secret else {
        return Err(AdminError::Refused("unknown enrollment secret".into()));
    };
    let (secret_id, group_id, group): (i64, i64, String) =
        (secret.get(0), secret.get(1), secret.get(2));
    if secret.get::<_, bool>(3) {
        return Err(AdminError::Refused(
            "the enrollment secret was revoked".into(),
        ));
    }
    if secret.get::<_, bool>(4) {
        return Err(AdminError::Refused(
            "the enrollment secret has expired".into(),
        ));
    }
    let existing = tx
        .query_opt(
            "SELECT id, revoked_at IS NOT NULL FROM agents WHERE host_id = $1 FOR UPDATE",
            &[&host_id],
        )
        .await?;
    let credential = new_secret(CREDENTIAL_PREFIX)?;
    let cred_hash = hash(&credential);
    let hostname = clip(req.hostname.trim(), 256);
    let os = clip(&req.os, 128);
    let version = clip(&req.version, 64);
    let agent_id: i64 = match existing {
        Some(r) if r.get::<_, bool>(1) => {
            return Err(AdminError::Refused(
                "this host's agent was revoked; an administrator must delete it before it can enroll again".into(),
            ));
        }
        Some(r) => {
            let id: i64 = r.get(0);
            tx.execute(
                "UPDATE agents SET group_id = $2, hostname = $3, os = $4, version = $5,
                        credential_hash = $6, enrolled_at = now(), enrolled_with = $7,
                        last_address = $8, last_seen_at = now()
                 WHERE id = $1",
                &[
                    &id, &group_id, &hostname, &os, &version, &cred_hash, &secret_id, &address,
                ],
            )
            .await?;
            id
        }
        None => tx
            .query_one(
                "INSERT INTO agents (host_id, group_id, hostname, os, version, credential_hash,
                                     enrolled_with, last_address, last_seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) RETURNING id",
                &[
                    &host_id, &group_id, &hostname, &os, &version, &cred_hash, &secret_id, &address,
                ],
            )
            .await?
            .get(0),
    };
    tx.execute(
        "INSERT INTO audit_log (actor, action, target, detail)
         VALUES ($1, 'agent.enroll', $2, $3)",
        &[
            &format!("agent:{agent_id}"),
            &hostname,
            &serde_json::json!({ "group": group, "host_id": host_id, "address": address }),
        ],
    )
    .await?;
    // A use of the secret is a row of its own, not a counter on the secret's row: updated
    // by every enrollment, that row's lock made ten thousand agents enrolling at once wait
    // for each other's commit, one disk flush after another. (An enrollment that read the
    // secret before a revocation committed completes, as a request under way does.)
    tx.execute(
        "INSERT INTO enroll_secret_uses (secret_id) VALUES ($1)",
        &[&secret_id],
    )
    .await?;
    tx.commit().await?;
    Ok(Enrolled {
        agent_id,
        group,
        credential,
    })
}

/// An agent as listed.
#[derive(Debug, Serialize)]
pub struct AgentRow {
    /// Id.
    pub id: i64,
    /// Host name.
    pub hostname: String,
    /// Stable host id.
    pub host_id: String,
    /// Group.
    pub group: String,
    /// OS.
    pub os: String,
    /// watchpost version.
    pub version: String,
    /// Last request.
    pub last_seen: Option<String>,
    /// `online`, `offline` or `revoked`.
    pub state: String,
    /// Highest sequence number stored.
    pub last_seq: i64,
    /// Records the agent reported dropped.
    pub dropped: i64,
    /// Configuration generation it runs.
    pub config_generation: Option<String>,
}

/// Agents (of one group, or all).
pub async fn agent_list(
    client: &Client,
    group: Option<&str>,
    offline_after_secs: f64,
) -> Result<Vec<AgentRow>, AdminError> {
    Ok(client
        .query(
            "SELECT a.id, a.hostname, a.host_id, g.name, a.os, a.version, a.last_seen_at,
                    CASE WHEN a.revoked_at IS NOT NULL THEN 'revoked'
                         WHEN a.last_seen_at > now() - make_interval(secs => $2) THEN 'online'
                         ELSE 'offline' END,
                    a.last_seq, a.shipping_dropped, a.config_generation
             FROM agents a JOIN groups g ON g.id = a.group_id
             WHERE $1::text IS NULL OR g.name = $1
             ORDER BY a.hostname, a.id",
            &[&group, &offline_after_secs],
        )
        .await?
        .iter()
        .map(|r| AgentRow {
            id: r.get(0),
            hostname: r.get(1),
            host_id: r.get(2),
            group: r.get(3),
            os: r.get(4),
            version: r.get(5),
            last_seen: r.get::<_, Option<Timestamp>>(6).map(|t| t.to_string()),
            state: r.get(7),
            last_seq: r.get(8),
            dropped: r.get(9),
            config_generation: r.get(10),
        })
        .collect())
}

/// An agent named by id or host name (exactly one must match).
pub async fn agent_id(client: &Client, which: &str) -> Result<i64, AdminError> {
    if let Ok(id) = which.parse::<i64>() {
        if client
            .query_opt("SELECT 1 FROM agents WHERE id = $1", &[&id])
            .await?
            .is_some()
        {
            return Ok(id);
        }
        return Err(AdminError::NotFound(format!("no agent {id}")));
    }
    let rows = client
        .query(
            "SELECT id FROM agents WHERE lower(hostname) = lower($1) OR host_id = $1",
            &[&which],
        )
        .await?;
    match rows.len() {
        0 => Err(AdminError::NotFound(format!("no agent `{which}`"))),
        1 => Ok(rows[0].get(0)),
        n => Err(AdminError::Conflict(format!(
            "{n} agents are called `{which}`: name one by id (`agent list`)"
        ))),
    }
}

/// Revokes an agent: every request with its credential is refused from now on.
pub async fn agent_revoke(
    client: &Client,
    actor: &str,
    which: &str,
    reason: &str,
) -> Result<i64, AdminError> {
    let id = agent_id(client, which).await?;
    let n = client
        .execute(
            "UPDATE agents SET revoked_at = now(), revoked_by = $2, revoke_reason = $3
             WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &actor, &reason],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::Conflict(format!(
            "agent {id} is revoked already"
        )));
    }
    audit(
        client,
        actor,
        "agent.revoke",
        &id.to_string(),
        serde_json::json!({ "reason": reason }),
    )
    .await?;
    Ok(id)
}

/// Deletes an agent's row (its events stay, under its id); the host may enroll afresh.
pub async fn agent_delete(client: &Client, actor: &str, which: &str) -> Result<i64, AdminError> {
    let id = agent_id(client, which).await?;
    client
        .execute("DELETE FROM agents WHERE id = $1", &[&id])
        .await?;
    audit(
        client,
        actor,
        "agent.delete",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(id)
}

/// Moves an agent to another group.
pub async fn agent_move(
    client: &Client,
    actor: &str,
    which: &str,
    group: &str,
) -> Result<i64, AdminError> {
    let id = agent_id(client, which).await?;
    let gid = group_id(client, group).await?;
    client
        .execute(
            "UPDATE agents SET group_id = $2 WHERE id = $1",
            &[&id, &gid],
        )
        .await?;
    audit(
        client,
        actor,
        "agent.move",
        &id.to_string(),
        serde_json::json!({ "group": group }),
    )
    .await?;
    Ok(id)
}

/// The roles a user can have.
pub const ROLES: &[&str] = &["viewer", "analyst", "admin"];

/// A user as listed.
#[derive(Debug, Serialize)]
pub struct UserRow {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Has a password.
    pub password: bool,
    /// API tokens usable now.
    pub tokens: i64,
    /// Disabled at.
    pub disabled_at: Option<String>,
}

fn argon2id(password: &str) -> Result<String, AdminError> {
    use argon2::PasswordHasher;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AdminError::Random(e.to_string()))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Invalid(e.to_string()))
}

/// Whether `password` matches an argon2id PHC string.
pub fn password_matches(password: &str, phc: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::password_hash::PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Adds a user with a role and, optionally, a password.
pub async fn user_add(
    client: &Client,
    actor: &str,
    name: &str,
    role: &str,
    password: Option<&str>,
) -> Result<(), AdminError> {
    check_name("user", name)?;
    if !ROLES.contains(&role) {
        return Err(AdminError::Invalid(format!(
            "role `{role}`: use viewer, analyst or admin"
        )));
    }
    let hash = match password {
        Some(p) if p.chars().count() < 12 => {
            return Err(AdminError::Invalid(
                "a password needs at least 12 characters".into(),
            ));
        }
        Some(p) => Some(argon2id(p)?),
        None => None,
    };
    let n = client
        .execute(
            "INSERT INTO users (name, role, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &role, &hash],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::Conflict(format!(
            "user `{name}` exists already"
        )));
    }
    audit(
        client,
        actor,
        "user.add",
        name,
        serde_json::json!({ "role": role }),
    )
    .await
}

/// Sets a user's password.
pub async fn user_passwd(
    client: &Client,
    actor: &str,
    name: &str,
    password: &str,
) -> Result<(), AdminError> {
    if password.chars().count() < 12 {
        return Err(AdminError::Invalid(
            "a password needs at least 12 characters".into(),
        ));
    }
    let hash = argon2id(password)?;
    let n = client
        .execute(
            "UPDATE users SET password_hash = $2 WHERE name = $1",
            &[&name, &hash],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::NotFound(format!("no user `{name}`")));
    }
    audit(client, actor, "user.passwd", name, serde_json::json!({})).await
}

/// Disables a user (and so their tokens).
pub async fn user_disable(client: &Client, actor: &str, name: &str) -> Result<(), AdminError> {
    let n = client
        .execute(
            "UPDATE users SET disabled_at = now() WHERE name = $1 AND disabled_at IS NULL",
            &[&name],
        )
        .await?;
    if n == 0 {
        return Err(AdminError::NotFound(format!("no enabled user `{name}`")));
    }
    audit(client, actor, "user.disable", name, serde_json::json!({})).await
}

/// Makes an API token for a user (shown once).
pub async fn user_token(
    client: &Client,
    actor: &str,
    name: &str,
    token_name: &str,
) -> Result<String, AdminError> {
    check_name("token", token_name)?;
    let uid: i64 = client
        .query_opt(
            "SELECT id FROM users WHERE name = $1 AND disabled_at IS NULL",
            &[&name],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| AdminError::NotFound(format!("no enabled user `{name}`")))?;
    let token = new_secret(USER_TOKEN_PREFIX)?;
    client
        .execute(
            "INSERT INTO user_tokens (user_id, name, token_hash) VALUES ($1, $2, $3)",
            &[&uid, &token_name, &hash(&token)],
        )
        .await?;
    audit(
        client,
        actor,
        "user.token",
        name,
        serde_json::json!({ "token": token_name }),
    )
    .await?;
    Ok(token)
}

/// Users.
pub async fn user_list(client: &Client) -> Result<Vec<UserRow>, AdminError> {
    Ok(client
        .query(
            "SELECT u.name, u.role, u.password_hash IS NOT NULL,
                    (SELECT count(*) FROM user_tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL),
                    u.disabled_at
             FROM users u ORDER BY u.name",
            &[],
        )
        .await?
        .iter()
        .map(|r| UserRow {
            name: r.get(0),
            role: r.get(1),
            password: r.get(2),
            tokens: r.get(3),
            disabled_at: r.get::<_, Option<Timestamp>>(4).map(|t| t.to_string()),
        })
        .collect())
}

/// The user (name, role) a bearer token belongs to, if it is valid now.
pub async fn user_for_token(
    client: &Client,
    token: &str,
) -> Result<Option<(String, String)>, AdminError> {
    Ok(client
        .query_opt(
            "UPDATE user_tokens t SET last_used_at = now()
             FROM users u
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.id = t.user_id
               AND u.disabled_at IS NULL
             RETURNING u.name, u.role",
            &[&hash(token)],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hashed() {
        let a = new_secret("wpa_").unwrap();
        let b = new_secret("wpa_").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(hash(&a).len(), 32);
        assert_eq!(hash(&format!("{a}\n")), hash(&a));
        assert!(check_name("group", "lab-1.x").is_ok());
        assert!(check_name("group", "a b").is_err());
        let phc = argon2id("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(password_matches("correct horse battery", &phc));
        assert!(!password_matches("wrong", &phc));
    }
}
