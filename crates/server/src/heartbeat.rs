//! Heartbeats into PostgreSQL: the agent's row (last seen, version, configuration
//! generation and diagnostics, the whole heartbeat as JSON for the console, what its
//! shipping dropped), check states with a history row per change, and the quarantine
//! state with a history row when it is applied or lifted.
//!
//! Heartbeats have their own path, apart from the batches: the server's heartbeat worker
//! (`http.rs`) takes every heartbeat waiting at one moment and writes them together here,
//! set-wise (one statement each for the agents, the checks and the quarantine, whatever
//! the number of agents), in one transaction committed without waiting for the disk
//! (`synchronous_commit = off`): a heartbeat lost to a database crash is replaced by the
//! agent's next one, so it need not cost a disk flush. Events never take this path.

use std::collections::HashMap;

use jiff::Timestamp;
use watchpost_fleet_protocol::Heartbeat;

use crate::ingest::AgentRef;

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Most checks recorded per heartbeat.
const MAX_CHECKS: usize = 1000;

/// Why a heartbeat was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The credential no longer names the agent (deleted, or enrolled again since).
    #[error("unknown agent credential (enroll again)")]
    Unauthorized,
    /// The agent was revoked (the message says when and why).
    #[error("{0}")]
    Revoked(String),
}

/// Why each of `agents` (whose credentials were refused) was refused: revoked (when and
/// why), else unknown.
pub async fn refusals(
    db: &impl tokio_postgres::GenericClient,
    agents: &[i64],
) -> Result<HashMap<i64, Refused>, tokio_postgres::Error> {
    let mut refused = HashMap::new();
    if agents.is_empty() {
        return Ok(refused);
    }
    for r in db
        .query(
            "SELECT id, revoked_at, coalesce(revoke_reason, '')
             FROM agents WHERE id = ANY($1) AND revoked_at IS NOT NULL",
            &[&agents],
        )
        .await?
    {
        refused.insert(
            r.get(0),
            Refused::Revoked(crate::ingest::revoked_message(r.get(1), r.get(2))),
        );
    }
    for id in agents {
        refused.entry(*id).or_insert(Refused::Unauthorized);
    }
    Ok(refused)
}

/// Records one heartbeat of an agent whose credential was checked.
pub async fn record(
    client: &mut tokio_postgres::Client,
    agent: i64,
    hb: &Heartbeat,
) -> Result<(), tokio_postgres::Error> {
    record_group(client, &[(AgentRef::checked(agent), hb)])
        .await
        .map(|_| ())
}

/// Records the heartbeats of a group of agents in one transaction; each gets its own
/// answer (refused when its credential is no longer valid). An agent named twice keeps
/// its last heartbeat.
pub async fn record_group(
    client: &mut tokio_postgres::Client,
    group: &[(AgentRef, &Heartbeat)],
) -> Result<Vec<Result<(), Refused>>, tokio_postgres::Error> {
    let now = Timestamp::now();
    // The last heartbeat of each agent.
    let mut last: HashMap<i64, usize> = HashMap::new();
    for (i, (a, _)) in group.iter().enumerate() {
        last.insert(a.id, i);
    }
    let mut order: Vec<usize> = last.values().copied().collect();
    order.sort_unstable();
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let (mut ids, mut hashes, mut json, mut version, mut hostname, mut os) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut generation, mut diagnostics, mut dropped) = (vec![], vec![], vec![]);
    for &i in &order {
        let (a, hb) = &group[i];
        ids.push(a.id);
        hashes.push(a.credential.clone());
        json.push(serde_json::to_string(hb).unwrap_or_else(|_| "null".into()));
        version.push(clip(&hb.version, 64));
        hostname.push(clip(&hb.hostname, 256));
        os.push(clip(&hb.os, 128));
        generation.push(hb.config_generation.as_deref().map(|g| clip(g, 128)));
        diagnostics
            .push(serde_json::to_string(&hb.config_diagnostics).unwrap_or_else(|_| "[]".into()));
        dropped.push(hb.shipping.dropped.min(i64::MAX as u64) as i64);
    }
    // Rows locked in id order, as the ingest transaction locks them (no deadlock), `NO
    // KEY` so the check rows' foreign keys do not wait on them.
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    tx.execute(
        "SELECT 1 FROM agents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        &[&sorted],
    )
    .await?;
    let accepted: Vec<i64> = tx
        .query(
            "UPDATE agents a SET last_seen_at = $10, heartbeat_at = $10, heartbeat = u.hb::jsonb,
                    version = CASE WHEN u.v = '' THEN a.version ELSE u.v END,
                    hostname = CASE WHEN u.h = '' THEN a.hostname ELSE u.h END,
                    os = CASE WHEN u.o = '' THEN a.os ELSE u.o END,
                    config_generation = u.g, config_diagnostics = u.d::jsonb,
                    shipping_dropped = greatest(a.shipping_dropped, u.dr)
             FROM unnest($1::int8[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::int8[])
                  AS u(id, hash, hb, v, h, o, g, d, dr)
             WHERE a.id = u.id AND a.revoked_at IS NULL
               AND (u.hash IS NULL OR a.credential_hash = u.hash)
             RETURNING a.id",
            &[
                &ids,
                &hashes,
                &json,
                &version,
                &hostname,
                &os,
                &generation,
                &diagnostics,
                &dropped,
                &now,
            ],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Why the others were refused.
    let mut refused: HashMap<i64, Refused> = HashMap::new();
    if accepted.len() < ids.len() {
        let others: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !accepted.contains(id))
            .collect();
        refused = refusals(&tx, &others).await?;
    }
    // Checks: a change (or a new check) is a history row; the same status moves only the
    // detail and the time it was last reported.
    let mut c_agent = Vec::new();
    let mut c_name = Vec::new();
    let mut c_status = Vec::new();
    let mut c_detail = Vec::new();
    for &i in &order {
        let (a, hb) = &group[i];
        if refused.contains_key(&a.id) {
            continue;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for c in hb.checks.iter().take(MAX_CHECKS) {
            let name = clip(&c.name, 256);
            let (status, detail) = (clip(&c.status, 64), clip(&c.detail, 4096));
            match seen.get(&name) {
                // A name twice: the later entry counts.
                Some(&at) => {
                    c_status[at] = status;
                    c_detail[at] = detail;
                }
                None => {
                    seen.insert(name.clone(), c_name.len());
                    c_agent.push(a.id);
                    c_name.push(name);
                    c_status.push(status);
                    c_detail.push(detail);
                }
            }
        }
    }
    if !c_agent.is_empty() {
        tx.execute(
            "WITH u AS (
                SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[])
                       AS u(agent_id, name, status, detail)
             ), changed AS (
                INSERT INTO check_changes (agent_id, name, status, previous, detail, at)
                SELECT u.agent_id, u.name, u.status, s.status, u.detail, $5
                FROM u LEFT JOIN check_states s ON s.agent_id = u.agent_id AND s.name = u.name
                WHERE s.status IS DISTINCT FROM u.status
             )
             INSERT INTO check_states AS s (agent_id, name, status, detail, since, updated_at)
             SELECT agent_id, name, status, detail, $5, $5 FROM u
             ON CONFLICT (agent_id, name) DO UPDATE
               SET since = CASE WHEN s.status = excluded.status THEN s.since ELSE excluded.since END,
                   status = excluded.status, detail = excluded.detail,
                   updated_at = excluded.updated_at",
            &[&c_agent, &c_name, &c_status, &c_detail, &now],
        )
        .await?;
    }
    // Quarantine: applied (or applied anew: another start) is a history row, and so is
    // lifted.
    let (mut q_agent, mut q_on, mut q_since, mut q_reason, mut q_until) =
        (vec![], vec![], vec![], vec![], vec![]);
    for &i in &order {
        let (a, hb) = &group[i];
        if refused.contains_key(&a.id) {
            continue;
        }
        q_agent.push(a.id);
        match &hb.quarantine {
            Some(q) => {
                q_on.push(true);
                q_since.push(Timestamp::from_millisecond(q.since_ms).unwrap_or(now));
                q_reason.push(clip(&q.reason, 1024));
                q_until.push(q.until_ms.and_then(|u| Timestamp::from_millisecond(u).ok()));
            }
            None => {
                q_on.push(false);
                q_since.push(now);
                q_reason.push(String::new());
                q_until.push(None);
            }
        }
    }
    if !q_agent.is_empty() {
        tx.execute(
            "WITH u AS (
                SELECT u.*, q.since AS was FROM unnest($1::int8[], $2::bool[], $3::timestamptz[],
                                                      $4::text[], $5::timestamptz[])
                       AS u(agent_id, applied, since, reason, until)
                LEFT JOIN quarantine_states q ON q.agent_id = u.agent_id
             ), changes AS (
                INSERT INTO quarantine_changes (agent_id, applied, reason, at)
                SELECT agent_id, true, reason, since FROM u
                 WHERE applied AND was IS DISTINCT FROM since
                UNION ALL
                SELECT agent_id, false, '', $6 FROM u WHERE NOT applied AND was IS NOT NULL
             ), lifted AS (
                DELETE FROM quarantine_states q USING u
                 WHERE q.agent_id = u.agent_id AND NOT u.applied
             )
             INSERT INTO quarantine_states AS q (agent_id, since, reason, until, updated_at)
             SELECT agent_id, since, reason, until, $6 FROM u WHERE applied
             ON CONFLICT (agent_id) DO UPDATE
               SET since = excluded.since, reason = excluded.reason, until = excluded.until,
                   updated_at = excluded.updated_at",
            &[&q_agent, &q_on, &q_since, &q_reason, &q_until, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(group
        .iter()
        .map(|(a, _)| match refused.get(&a.id) {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        })
        .collect())
}
