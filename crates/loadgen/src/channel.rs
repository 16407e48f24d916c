//! `--poll`: each simulated agent also holds the long-poll of the channel back
//! (`/api/v1/poll`), as the agent's `fleet-channel` task does, and reports what arrives
//! (`/api/v1/report`): a configuration version as applied, a command as done. The wall
//! clock of each arrival is kept, so the end of the run can say how long a publication
//! took to reach 50/99/100 % of the agents (against `config_versions.created_at`) and
//! how long commands took to be answered (`command_results.finished_at`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use watchpost_fleet_protocol::{
    self as proto, CommandResult, ConfigReport, Delivery, Poll, Report,
};

use crate::Client;

/// What the polls saw.
#[derive(Default)]
pub struct ChannelStats {
    /// Polls answered.
    pub polls: AtomicU64,
    /// Failed polls and reports.
    pub failures: AtomicU64,
    /// (version, Unix ms) of every configuration arrival.
    pub configs: std::sync::Mutex<Vec<(i32, i64)>>,
    /// Commands received.
    pub commands: AtomicU64,
}

/// Long-polls until `until`.
pub async fn poll_loop(
    client: Arc<Client>,
    cred: String,
    stats: Arc<ChannelStats>,
    until: Instant,
) {
    let mut conn = None;
    let mut version = None;
    let mut ack_after = 0;
    // After a failure: as the agent waits (`proto::retry`).
    let mut backoff = proto::retry::FIRST;
    while Instant::now() < until {
        let p = Poll {
            config_version: version,
            ack_after,
            wait_secs: 25,
        };
        let d = match client
            .post(
                &mut conn,
                proto::POLL,
                Some(&cred),
                proto::encode_json(&p, false),
                false,
            )
            .await
        {
            Ok((200, b)) => match serde_json::from_slice::<Delivery>(&b) {
                Ok(d) => {
                    backoff = proto::retry::FIRST;
                    d
                }
                Err(_) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
            _ => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(proto::retry::jitter(backoff)).await;
                backoff = proto::retry::next(backoff);
                continue;
            }
        };
        stats.polls.fetch_add(1, Ordering::Relaxed);
        let mut report = Report::default();
        if let Some(c) = &d.config {
            let now = jiff::Timestamp::now().as_millisecond();
            stats
                .configs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((c.version, now));
            version = Some(c.version);
            report.config = Some(ConfigReport {
                version: c.version,
                ok: true,
                generation: c.version as u64 + 1,
                diagnostics: String::new(),
            });
        }
        for c in &d.commands {
            stats.commands.fetch_add(1, Ordering::Relaxed);
            report.results.push(CommandResult {
                id: c.id,
                ok: true,
                output: "done (loadgen)".into(),
            });
        }
        if let Some(a) = d.acks.last() {
            ack_after = a.id;
            report.acks_applied = Some(a.id);
        }
        if d.is_empty() {
            continue;
        }
        for _ in 0..5 {
            match client
                .post(
                    &mut conn,
                    proto::REPORT,
                    Some(&cred),
                    proto::encode_json(&report, false),
                    false,
                )
                .await
            {
                Ok((200, _)) => break,
                _ => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Per published version: agents reached and the time to 50/99/100 % of them (ms after
/// the version was stored); per command: the time to its results.
pub async fn figures(
    seen: &crate::Snapshot,
    db: &tokio_postgres::Client,
) -> anyhow::Result<serde_json::Value> {
    let arrivals = &seen.configs;
    let agents = seen.enrolled;
    let rows = db
        .query(
            "SELECT version, (extract(epoch FROM created_at) * 1000)::bigint FROM config_versions ORDER BY version",
            &[],
        )
        .await?;
    let mut versions = Vec::new();
    for r in rows {
        let (v, at): (i32, i64) = (r.get(0), r.get(1));
        let mut ms: Vec<u32> = arrivals
            .iter()
            .filter(|(av, _)| *av == v)
            .map(|(_, t)| (t - at).clamp(0, i64::from(u32::MAX)) as u32)
            .collect();
        ms.sort_unstable();
        let at_fraction = |f: f64| {
            let need = ((agents as f64) * f).ceil() as usize;
            (need >= 1 && ms.len() >= need).then(|| ms[need - 1])
        };
        println!(
            "configuration version {v}: reached {} of {agents} agents; 50 % after {} ms, 99 % after {} ms, 100 % after {} ms",
            ms.len(),
            at_fraction(0.5).map_or("-".into(), |x| x.to_string()),
            at_fraction(0.99).map_or("-".into(), |x| x.to_string()),
            at_fraction(1.0).map_or("-".into(), |x| x.to_string()),
        );
        versions.push(serde_json::json!({
            "version": v, "reached": ms.len(), "agents": agents,
            "ms_to_50": at_fraction(0.5), "ms_to_99": at_fraction(0.99), "ms_to_100": at_fraction(1.0),
        }));
    }
    let rows = db
        .query(
            "SELECT c.id, c.kind, count(r.*), count(r.finished_at),
                    (max(extract(epoch FROM r.finished_at - c.created_at)) * 1000)::bigint
             FROM commands c JOIN command_results r ON r.command_id = c.id GROUP BY c.id ORDER BY c.id",
            &[],
        )
        .await?;
    let mut commands = Vec::new();
    for r in rows {
        let (id, kind, n, done, ms): (i64, String, i64, i64, Option<i64>) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        println!(
            "command {id} ({kind}) to {n} agent(s): {done} answered, the last {} ms after it was sent",
            ms.map_or("-".into(), |m| m.to_string())
        );
        commands.push(serde_json::json!({ "id": id, "kind": kind, "agents": n, "answered": done, "ms_to_last_answer": ms }));
    }
    println!(
        "polls answered {}, failed polls/reports {}",
        seen.polls, seen.poll_failures
    );
    Ok(
        serde_json::json!({ "configurations": versions, "commands": commands, "polls": seen.polls, "failures": seen.poll_failures }),
    )
}
