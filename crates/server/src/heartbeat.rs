//! A heartbeat into PostgreSQL: the agent's row (last seen, version, configuration
//! generation and diagnostics, the whole heartbeat as JSON for the console, what its
//! shipping dropped), check states with a history row per change, and the quarantine
//! state with a history row when it is applied or lifted. One transaction, committed
//! without waiting for the disk.

use jiff::Timestamp;
use watchpost_fleet_protocol::Heartbeat;

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Records a heartbeat of `agent`.
pub async fn record(
    client: &mut tokio_postgres::Client,
    agent: i64,
    hb: &Heartbeat,
) -> Result<(), tokio_postgres::Error> {
    let now = Timestamp::now();
    let tx = client.transaction().await?;
    // A heartbeat lost to a database crash is replaced by the next one: its commit need
    // not wait for the disk (batches' commits do).
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let json = serde_json::to_value(hb).unwrap_or(serde_json::Value::Null);
    let diagnostics = serde_json::to_value(&hb.config_diagnostics).unwrap_or_default();
    tx.execute(
        "UPDATE agents SET last_seen_at = $2, heartbeat_at = $2, heartbeat = $3,
                version = CASE WHEN $4 = '' THEN version ELSE $4 END,
                hostname = CASE WHEN $5 = '' THEN hostname ELSE $5 END,
                os = CASE WHEN $6 = '' THEN os ELSE $6 END,
                config_generation = $7, config_diagnostics = $8,
                shipping_dropped = greatest(shipping_dropped, $9)
         WHERE id = $1",
        &[
            &agent,
            &now,
            &json,
            &clip(&hb.version, 64),
            &clip(&hb.hostname, 256),
            &clip(&hb.os, 128),
            &hb.config_generation.as_deref().map(|g| clip(g, 128)),
            &diagnostics,
            &(hb.shipping.dropped.min(i64::MAX as u64) as i64),
        ],
    )
    .await?;
    // Checks: a change (or a new check) is a history row.
    let known: Vec<(String, String)> = if hb.checks.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "SELECT name, status FROM check_states WHERE agent_id = $1",
            &[&agent],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    for c in hb.checks.iter().take(1000) {
        let name = clip(&c.name, 256);
        let status = clip(&c.status, 64);
        let detail = clip(&c.detail, 4096);
        let previous = known
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone());
        if previous.as_deref() == Some(status.as_str()) {
            tx.execute(
                "UPDATE check_states SET detail = $3, updated_at = $4 WHERE agent_id = $1 AND name = $2",
                &[&agent, &name, &detail, &now],
            )
            .await?;
            continue;
        }
        tx.execute(
            "INSERT INTO check_states (agent_id, name, status, detail, since, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (agent_id, name) DO UPDATE
               SET status = $3, detail = $4, since = $5, updated_at = $5",
            &[&agent, &name, &status, &detail, &now],
        )
        .await?;
        tx.execute(
            "INSERT INTO check_changes (agent_id, name, status, previous, detail, at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&agent, &name, &status, &previous, &detail, &now],
        )
        .await?;
    }
    // Quarantine.
    let was: Option<Timestamp> = tx
        .query_opt(
            "SELECT since FROM quarantine_states WHERE agent_id = $1",
            &[&agent],
        )
        .await?
        .map(|r| r.get(0));
    match &hb.quarantine {
        Some(q) => {
            let since = Timestamp::from_millisecond(q.since_ms).unwrap_or(now);
            let until = q.until_ms.and_then(|u| Timestamp::from_millisecond(u).ok());
            let reason = clip(&q.reason, 1024);
            tx.execute(
                "INSERT INTO quarantine_states (agent_id, since, reason, until, updated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (agent_id) DO UPDATE SET since = $2, reason = $3, until = $4, updated_at = $5",
                &[&agent, &since, &reason, &until, &now],
            )
            .await?;
            if was != Some(since) {
                tx.execute(
                    "INSERT INTO quarantine_changes (agent_id, applied, reason, at) VALUES ($1, true, $2, $3)",
                    &[&agent, &reason, &since],
                )
                .await?;
            }
        }
        None => {
            if was.is_some() {
                tx.execute(
                    "DELETE FROM quarantine_states WHERE agent_id = $1",
                    &[&agent],
                )
                .await?;
                tx.execute(
                    "INSERT INTO quarantine_changes (agent_id, applied, reason, at) VALUES ($1, false, '', $2)",
                    &[&agent, &now],
                )
                .await?;
            }
        }
    }
    tx.commit().await
}
