//! The web console on the fleet server (`[console] enabled = true`): the pages of
//! `watchpost-console` over PostgreSQL. [`PgBackend`] answers the console's synchronous
//! [`Backend`] calls by running its queries on the server's runtime
//! (`Handle::block_on`); the HTTP layer calls [`Console::handle`] inside
//! `spawn_blocking`, so a page never holds up an async worker thread.
//!
//! What the fleet console shows that the agent's cannot: every host (its last heartbeat,
//! problems, commands), acknowledgements by any analyst with `origin = 'server'`. What it
//! cannot show: baseline explanations (the baselines live on each host; their pair counts
//! come with the heartbeat).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use jiff::Timestamp;
use tokio::runtime::Handle;
use watchpost_console::backend::{
    AckView, Attention, AuditRow, Backend, BackendError, BaselineRow, CommandRow, CommandTo,
    ConfigText, Draft, EventDetail, EventSummary, ExplainView, GroupDetail, GroupRow, Home,
    HostConfigView, HostDetail, HostPage, HostQuery, HostRow, OutcomeView, Overview, Page,
    PublishOutcome, Role, UserRecord, VersionView, buckets, command_detail, problems, summarize,
    top,
};
use watchpost_console::{Console, auth::Keys};
use watchpost_fleet_protocol::{CommandKind, Heartbeat};

use crate::admin::AdminError;
use crate::control::{self, ControlError};
use watchpost_query::Query;

use crate::query::{Param, where_clause};

/// The console's store: the server's PostgreSQL pool.
pub struct PgBackend {
    pool: deadpool_postgres::Pool,
    rt: Handle,
    offline_after: Duration,
}

/// A database failure with its causes (logged by the console, never shown).
fn db(e: impl std::error::Error) -> BackendError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    BackendError::Store(text)
}

/// A control operation's failure: what the user can correct is a 400 with its sentence,
/// the rest a store failure.
fn control_err(e: ControlError) -> BackendError {
    match e {
        ControlError::Admin(
            AdminError::NotFound(m) | AdminError::Invalid(m) | AdminError::Conflict(m),
        )
        | ControlError::Refused(m) => BackendError::Invalid(m),
        other => db(other),
    }
}

/// Whether the operation failed because something named does not exist.
fn missing(e: &ControlError) -> bool {
    matches!(e, ControlError::Admin(AdminError::NotFound(_)))
}

const GROUP_COLUMNS: &str =
    "g.name, g.description, g.published_version, g.published_at, g.published_by,
     count(a.id),
     count(a.id) FILTER (WHERE a.config_version = g.published_version AND a.config_ok),
     count(a.id) FILTER (WHERE g.published_version IS NOT NULL
                           AND a.config_version IS DISTINCT FROM g.published_version),
     count(a.id) FILTER (WHERE a.config_version = g.published_version AND NOT a.config_ok)
     FROM groups g LEFT JOIN agents a ON a.group_id = g.id AND a.revoked_at IS NULL";

fn group_row(r: &tokio_postgres::Row) -> GroupRow {
    GroupRow {
        name: r.get(0),
        description: r.get(1),
        published: r.get(2),
        published_at: r.get::<_, Option<Timestamp>>(3).map(|t| t.to_string()),
        published_by: r.get(4),
        hosts: r.get(5),
        current: r.get(6),
        behind: r.get(7),
        rejecting: r.get(8),
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

fn fields_of(json: &str) -> Vec<(String, String)> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect()
}

const SUMMARY_COLUMNS: &str = "e.id, coalesce(e.time, e.stored_at), e.host, e.source, e.filters, e.anomaly, \
     e.needs_ack AND e.acked_at IS NULL, e.acked_at IS NOT NULL, e.anomaly_why, e.fields::text";

fn summary(r: &tokio_postgres::Row) -> EventSummary {
    let why: Option<String> = r.get(8);
    let fields: String = r.get(9);
    EventSummary {
        id: r.get(0),
        time: r.get::<_, Timestamp>(1).to_string(),
        host: r.get(2),
        source: r.get(3),
        filters: r.get(4),
        anomaly: r.get(5),
        waiting: r.get(6),
        acked: r.get(7),
        summary: summarize(why.as_deref(), &fields_of(&fields)),
    }
}

impl PgBackend {
    /// A backend over `pool`, running its queries on `rt`.
    pub fn new(pool: deadpool_postgres::Pool, rt: Handle, offline_after: Duration) -> PgBackend {
        PgBackend {
            pool,
            rt,
            offline_after,
        }
    }

    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        self.rt.block_on(async {
            let client = self.pool.get().await.map_err(db)?;
            f(&client).await
        })
    }

    async fn search_on(
        client: &deadpool_postgres::Client,
        query: &Query,
        page: &Page,
    ) -> Result<Vec<EventSummary>, BackendError> {
        let (filter, mut args) = where_clause(query)?;
        let mut conds = if filter.is_empty() {
            Vec::new()
        } else {
            vec![filter.trim_start_matches("WHERE ").to_owned()]
        };
        if let Some(b) = page.before {
            args.push(Param::Int(b));
            conds.push(format!("e.id < ${}", args.len()));
        }
        if let Some(a) = page.after {
            args.push(Param::Int(a));
            conds.push(format!("e.id > ${}", args.len()));
        }
        args.push(Param::Int(page.limit.min(10_000) as i64));
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM events e {} ORDER BY e.id {} LIMIT ${}",
            if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            },
            if page.oldest_first { "ASC" } else { "DESC" },
            args.len()
        );
        let params: Vec<_> = args.iter().map(|p| p.as_sql()).collect();
        Ok(client
            .query(&sql, &params)
            .await
            .map_err(db)?
            .iter()
            .map(summary)
            .collect())
    }

    fn silent(&self, last: Option<Timestamp>, revoked: bool) -> Option<String> {
        if revoked {
            return None;
        }
        let Some(last) = last else {
            return Some("never sent a heartbeat".into());
        };
        let silent = Timestamp::now().duration_since(last);
        (silent.as_secs_f64() > self.offline_after.as_secs_f64()).then(|| {
            format!(
                "not seen for {} min (heartbeat allows {} s)",
                silent.as_secs() / 60,
                self.offline_after.as_secs()
            )
        })
    }

    fn host_row(&self, r: &tokio_postgres::Row) -> (HostRow, Option<Heartbeat>) {
        let hb: Option<Heartbeat> = r
            .get::<_, Option<serde_json::Value>>(7)
            .and_then(|v| serde_json::from_value(v).ok());
        let last: Option<Timestamp> = r.get(5);
        let revoked: bool = r.get(6);
        let online = last.is_some_and(|l| {
            Timestamp::now().duration_since(l).as_secs_f64() <= self.offline_after.as_secs_f64()
        });
        (
            HostRow {
                id: r.get::<_, i64>(0).to_string(),
                name: r.get(1),
                group: r.get(2),
                version: r.get(3),
                generation: r.get::<_, Option<String>>(4).unwrap_or_default(),
                last_seen: last.map(|t| t.to_string()),
                state: if revoked {
                    "revoked"
                } else if online {
                    "online"
                } else {
                    "offline"
                }
                .into(),
                problems: problems(hb.as_ref(), self.silent(last, revoked)),
            },
            hb,
        )
    }
}

/// Series a chart names; the rest is `other`.
const HOST_SERIES: usize = 6;

/// The overview's reads of the per-hour counts by rule level (with the totals and
/// anomalies) and by filter; each row (bucket number, name, events[, anomalies]).
/// Parameters: the first bucket's start (Unix ms, float8), the bucket length (ms,
/// float8), the range's start and end (timestamptz). The by-host chart reads
/// [`BUSIEST_HOSTS`] and [`HOST_HOURS`].
///
/// Counted from the per-agent rows ingest keeps (`event_hours`, `filter_hours`) and the
/// rows of all agents the fold of past hours made of them (`folded_*`, `db::fold_hours`):
/// each event is counted in exactly one of them. Every bucket is a whole number of hours,
/// so each hour's row falls in one bucket. The bucket's number is float8 arithmetic on
/// `date_part('epoch', …)`: `extract(epoch …)` is numeric arithmetic, a large share of the
/// read's time for 7 days of 1,000 agents.
pub fn overview_reads() -> [String; 2] {
    let read = |columns: &str, sums: &str, folded: &str, per_agent: &str| {
        let range = "hour >= $3 AND hour < $4";
        format!(
            "SELECT floor((date_part('epoch', hour) * 1000 - $1::float8) / $2::float8)::int8, {sums}
             FROM (SELECT hour, {columns} FROM {folded} WHERE {range}
                   UNION ALL
                   SELECT hour, {columns} FROM {per_agent} WHERE {range}) h
             GROUP BY 1, 2"
        )
    };
    [
        read(
            "level, events, anomalies",
            "level, sum(events)::int8, sum(anomalies)::int8",
            "folded_level_hours",
            "event_hours",
        ),
        read(
            "filter, events",
            "filter, sum(events)::int8",
            "folded_filter_hours",
            "filter_hours",
        ),
    ]
}

/// The seven busiest hosts of a range (`$1`..`$2`), busiest first, ties by name byte by
/// byte (as [`top`] orders them): the whole UTC days inside it (`$3`..`$4`) from the
/// folded days, the hours at its ends from the folded hours, the hours not folded yet from
/// the per-agent rows. Seven days of a thousand hosts are some thousands of rows instead
/// of one per host and hour.
pub const BUSIEST_HOSTS: &str = r#"SELECT host FROM (
        SELECT host, events FROM folded_host_days WHERE day >= $3 AND day < $4
        UNION ALL
        SELECT host, events FROM folded_host_hours WHERE hour >= $1 AND hour < $3
        UNION ALL
        SELECT host, events FROM folded_host_hours WHERE hour >= $4 AND hour < $2
        UNION ALL
        SELECT host, events FROM event_hours WHERE hour >= $1 AND hour < $2
    ) h
    GROUP BY host ORDER BY sum(events) DESC, host COLLATE "C" LIMIT 7"#;

/// The hours of the hosts `$5` in the range, per bucket (parameters as the other reads').
pub const HOST_HOURS: &str =
    "SELECT floor((date_part('epoch', hour) * 1000 - $1::float8) / $2::float8)::int8,
            host, sum(events)::int8
     FROM (SELECT hour, host, events FROM folded_host_hours
           WHERE host = ANY($5) AND hour >= $3 AND hour < $4
           UNION ALL
           SELECT hour, host, events FROM event_hours
           WHERE host = ANY($5) AND hour >= $3 AND hour < $4) h
     GROUP BY 1, 2";

/// The whole UTC days inside `from`..`to`: (the first one's start, the end of the last);
/// both `to` when none is.
pub fn whole_days(from: Timestamp, to: Timestamp) -> (Timestamp, Timestamp) {
    const DAY: i64 = 86_400;
    let first = (from.as_second() + DAY - 1).div_euclid(DAY) * DAY;
    let end = to.as_second().div_euclid(DAY) * DAY;
    match (Timestamp::from_second(first), Timestamp::from_second(end)) {
        (Ok(f), Ok(e)) if f < e => (f, e),
        _ => (to, to),
    }
}

/// The condition for a host that needs attention (the overview's list, the hosts page's
/// filter): not seen for longer than the heartbeat allows (`offline`: the parameter
/// holding those seconds), a check not ok, quarantined, or configuration diagnostics.
fn needs_attention(offline: &str) -> String {
    format!(
        "a.last_seen_at IS NULL OR a.last_seen_at < now() - make_interval(secs => {offline})
         OR jsonb_path_exists(a.heartbeat, '$.checks[*] ? (@.status != \"ok\")')
         OR jsonb_typeof(a.heartbeat -> 'quarantine') = 'object'
         OR jsonb_array_length(coalesce(a.config_diagnostics, '[]')) > 0"
    )
}

/// `ILIKE` pattern for names containing `s` (its `%`, `_` and `\` taken literally).
fn like_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for ch in s.trim().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

const HOST_COLUMNS: &str = "a.id, a.hostname, g.name, a.version, a.config_generation, a.last_seen_at, \
     a.revoked_at IS NOT NULL, a.heartbeat";

impl Backend for PgBackend {
    fn home(&self) -> Home {
        Home::Fleet
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, BackendError> {
        self.run(async |c| {
            Ok(c.query_opt(
                "SELECT name, role, password_hash, disabled_at IS NOT NULL FROM users WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db)?
            .map(|r| UserRecord {
                name: r.get(0),
                role: Role::parse(r.get(1)).unwrap_or(Role::Viewer),
                password_hash: r.get(2),
                disabled: r.get(3),
            }))
        })
    }

    fn overview(&self, now: Timestamp, hours: u32) -> Result<Overview, BackendError> {
        let (from, len, n) = buckets(now, hours);
        let (from_t, to_t) = (
            Timestamp::from_millisecond(from).map_err(db)?,
            Timestamp::from_millisecond(from + len * n as i64).map_err(db)?,
        );
        let offline = self.offline_after.as_secs_f64();
        // Four independent reads on four connections at once.
        self.rt.block_on(async {
            let (c1, c2, c3, c4) = tokio::try_join!(
                self.pool.get(),
                self.pool.get(),
                self.pool.get(),
                self.pool.get()
            )
            .map_err(db)?;
            // Totals and levels on one connection, hosts on another, filters on a third,
            // at once (the waiting events and the hosts needing attention, both small,
            // share the fourth).
            let [by_level, by_filter] = overview_reads();
            let from_f = from as f64;
            let len_f = len as f64;
            let range: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&from_f, &len_f, &from_t, &to_t];
            // The whole UTC days inside the range (none: both its end).
            let (first_day, end_day) = whole_days(from_t, to_t);
            let ranking: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&from_t, &to_t, &first_day, &end_day];
            let index = |b: i64| usize::try_from(b).ok();
            let attention = format!(
                "SELECT {HOST_COLUMNS} FROM agents a JOIN groups g ON g.id = a.group_id
                 WHERE a.revoked_at IS NULL AND ({})
                 ORDER BY a.hostname LIMIT 50",
                needs_attention("$1")
            );
            let waiting = format!(
                "SELECT {SUMMARY_COLUMNS} FROM events e WHERE e.needs_ack AND e.acked_at IS NULL
                 ORDER BY e.id DESC LIMIT 10"
            );
            let offline_arg: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&offline];
            let (g, (busiest, h), f, (w, a)) = tokio::try_join!(
                c1.query(&by_level, &range),
                async {
                    // The six busiest hosts of the range (a seventh: others exist), then
                    // their hours.
                    let mut busiest: Vec<String> = c4
                        .query(BUSIEST_HOSTS, &ranking)
                        .await?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    let more = busiest.len() > HOST_SERIES;
                    busiest.truncate(HOST_SERIES);
                    let series: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                        [&from_f, &len_f, &from_t, &to_t, &busiest];
                    let rows = c4.query(HOST_HOURS, &series).await?;
                    Ok::<_, tokio_postgres::Error>(((busiest, more), rows))
                },
                c2.query(&by_filter, &range),
                async {
                    let n: i64 = c3
                        .query_one(
                            "SELECT count(*) FROM events WHERE needs_ack AND acked_at IS NULL",
                            &[],
                        )
                        .await?
                        .get(0);
                    let list = c3.query(&waiting, &[]).await?;
                    let attention = c3.query(&attention, &offline_arg).await?;
                    Ok::<_, tokio_postgres::Error>(((n, list), attention))
                },
            )
            .map_err(db)?;
            let mut all: Vec<u64> = vec![0; n];
            let mut anomalies: Vec<u64> = vec![0; n];
            // By name (a thousand hosts × 42 buckets of rows for 7 days: a map, not a
            // list searched per row).
            type ByName = std::collections::HashMap<String, Vec<u64>>;
            let mut hosts = ByName::new();
            let mut levels = ByName::new();
            let add = |map: &mut ByName, name: String, b: usize, c: u64| {
                map.entry(name).or_insert_with(|| vec![0; n])[b] += c;
            };
            for r in &g {
                let Some(b) = index(r.get(0)).filter(|b| *b < n) else {
                    continue;
                };
                let count = r.get::<_, i64>(2).max(0) as u64;
                all[b] += count;
                anomalies[b] += r.get::<_, i64>(3).max(0) as u64;
                // '' is an event without a rule level: in the totals, not in this chart.
                let l: String = r.get(1);
                if !l.is_empty() {
                    add(&mut levels, l, b, count);
                }
            }
            let (busiest, more) = busiest;
            for name in &busiest {
                hosts.insert(name.clone(), vec![0; n]);
            }
            for r in &h {
                if let Some(b) = index(r.get(0)).filter(|b| *b < n) {
                    add(&mut hosts, r.get(1), b, r.get::<_, i64>(2).max(0) as u64);
                }
            }
            // The six named as `top` orders them (the read ranked them the same way), the
            // rest of every bucket's events as `other`.
            let mut by_host = top(hosts.into_iter().collect(), HOST_SERIES);
            if more {
                let named: Vec<u64> = (0..n)
                    .map(|b| by_host.iter().map(|s| s.counts[b]).sum())
                    .collect();
                by_host.push(watchpost_console::backend::Series {
                    name: "other".into(),
                    counts: all
                        .iter()
                        .zip(named)
                        .map(|(a, h)| a.saturating_sub(h))
                        .collect(),
                });
            }
            let mut filters = ByName::new();
            for r in &f {
                let Some(b) = index(r.get(0)) else {
                    continue;
                };
                if b < n {
                    add(&mut filters, r.get(1), b, r.get::<_, i64>(2).max(0) as u64);
                }
            }
            Ok(Overview {
                buckets: (0..n).map(|i| from + i as i64 * len).collect(),
                bucket_ms: len,
                events: all,
                anomalies,
                by_filter: top(filters.into_iter().collect(), HOST_SERIES),
                by_level: top(levels.into_iter().collect(), HOST_SERIES),
                by_host,
                waiting: w.0.max(0) as u64,
                waiting_list: w.1.iter().map(summary).collect(),
                attention: a
                    .iter()
                    .map(|r| {
                        let (row, _) = self.host_row(r);
                        Attention {
                            host: row.id,
                            name: row.name,
                            problems: row.problems,
                        }
                    })
                    .filter(|a| !a.problems.is_empty())
                    .collect(),
            })
        })
    }

    fn search(&self, query: &Query, page: &Page) -> Result<Vec<EventSummary>, BackendError> {
        self.run(async |c| Self::search_on(c, query, page).await)
    }

    fn event(&self, id: i64) -> Result<Option<EventDetail>, BackendError> {
        self.run(async |c| {
            let Some(r) = c
                .query_opt(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS}, e.stored_at, e.agent_id, a.hostname, e.needs_ack,
                                e.acked_at, e.acked_by, e.ack_comment, e.ack_origin, e.raw, e.origin, e.local_id
                         FROM events e JOIN agents a ON a.id = e.agent_id WHERE e.id = $1"
                    ),
                    &[&id],
                )
                .await
                .map_err(db)?
            else {
                return Ok(None);
            };
            let agent: i64 = r.get(11);
            let local: i64 = r.get(20);
            let outcomes = c
                .query(
                    "SELECT action, filter, at, attempt, ok, detail FROM outcomes
                     WHERE agent_id = $1 AND event_local = $2 ORDER BY at, seq",
                    &[&agent, &local],
                )
                .await
                .map_err(db)?;
            let fields: String = r.get(9);
            Ok(Some(EventDetail {
                summary: summary(&r),
                stored: r.get::<_, Timestamp>(10).to_string(),
                agent: Some((agent, r.get(12))),
                anomaly_why: r.get(8),
                needs_ack: r.get(13),
                ack: r.get::<_, Option<Timestamp>>(14).map(|at| AckView {
                    at: at.to_string(),
                    by: r.get::<_, Option<String>>(15).unwrap_or_default(),
                    comment: r.get::<_, Option<String>>(16).unwrap_or_default(),
                    origin: r.get::<_, Option<String>>(17).unwrap_or_default(),
                }),
                fields: fields_of(&fields),
                raw: r.get(18),
                origin: r.get(19),
                outcomes: outcomes
                    .iter()
                    .map(|o| OutcomeView {
                        action: o.get(0),
                        filter: o.get(1),
                        at: o.get::<_, Timestamp>(2).to_string(),
                        attempt: i64::from(o.get::<_, i32>(3)),
                        ok: o.get(4),
                        detail: o.get(5),
                    })
                    .collect(),
                explanations: Vec::new(),
            }))
        })
    }

    fn ack(&self, ids: &[i64], by: &str, comment: &str) -> Result<Vec<i64>, BackendError> {
        self.run(async |c| {
            Ok(c.query(
                "UPDATE events SET acked_at = now(), acked_by = $2, ack_comment = $3, ack_origin = 'server'
                 WHERE id = ANY($1) AND acked_at IS NULL RETURNING id",
                &[&ids, &by, &comment],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), BackendError> {
        self.run(async |c| {
            c.execute(
                "INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
                &[&actor, &action, &target, &detail],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn audit_log(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditRow>, BackendError> {
        self.run(async |c| {
            Ok(c.query(
                "SELECT id, at, actor, action, target, detail::text FROM audit_log
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before.unwrap_or(i64::MAX), &(limit.min(10_000) as i64)],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| AuditRow {
                id: r.get(0),
                at: r.get::<_, Timestamp>(1).to_string(),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                detail: r.get(5),
            })
            .collect())
        })
    }

    fn hosts(&self, q: &HostQuery) -> Result<HostPage, BackendError> {
        let name = like_pattern(&q.name);
        let after: Option<i64> = match q.after.as_deref() {
            None | Some("") => None,
            Some(a) => Some(
                a.parse()
                    .map_err(|_| BackendError::Invalid(format!("`{a}` is not a host id")))?,
            ),
        };
        let offline = self.offline_after.as_secs_f64();
        let limit = q.limit.clamp(1, 1000) as i64;
        self.run(async |c| {
            // $1 name pattern, $2 group, $3 attention only, $4 offline after (s).
            let filter = format!(
                "FROM agents a JOIN groups g ON g.id = a.group_id
                 WHERE ($1 = '%%' OR a.hostname ILIKE $1)
                   AND ($2 = '' OR g.name = $2)
                   AND (NOT $3 OR (a.revoked_at IS NULL AND ({})))",
                needs_attention("$4")
            );
            let total: i64 = c
                .query_one(
                    &format!("SELECT count(*) {filter}"),
                    &[&name, &q.group, &q.attention, &offline],
                )
                .await
                .map_err(db)?
                .get(0);
            let rows = c
                .query(
                    &format!(
                        "SELECT {HOST_COLUMNS} {filter}
                           AND ($5::int8 IS NULL OR (lower(a.hostname), a.id) >
                                (SELECT lower(hostname), id FROM agents WHERE id = $5))
                         ORDER BY lower(a.hostname), a.id LIMIT $6"
                    ),
                    &[
                        &name,
                        &q.group,
                        &q.attention,
                        &offline,
                        &after,
                        &(limit + 1),
                    ],
                )
                .await
                .map_err(db)?;
            let more = rows.len() as i64 > limit;
            Ok(HostPage {
                rows: rows
                    .iter()
                    .take(limit as usize)
                    .map(|r| self.host_row(r).0)
                    .collect(),
                total: total as u64,
                more,
            })
        })
    }

    fn host(&self, id: &str) -> Result<Option<HostDetail>, BackendError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        self.run(async |c| {
            let Some(r) = c
                .query_opt(
                    &format!(
                        "SELECT {HOST_COLUMNS}, a.config_diagnostics FROM agents a
                         JOIN groups g ON g.id = a.group_id WHERE a.id = $1"
                    ),
                    &[&id],
                )
                .await
                .map_err(db)?
            else {
                return Ok(None);
            };
            let (row, heartbeat) = self.host_row(&r);
            let diagnostics: Vec<String> = r
                .get::<_, Option<serde_json::Value>>(8)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let commands = c
                .query(
                    "SELECT c.id, c.kind, c.created_by, c.created_at, r.ok, r.result ->> 'output',
                            r.delivered_at IS NOT NULL, c.args
                     FROM commands c LEFT JOIN command_results r ON r.command_id = c.id AND r.agent_id = $1
                     WHERE c.agent_id = $1 OR c.group_id = (SELECT group_id FROM agents WHERE id = $1)
                     ORDER BY c.id DESC LIMIT 50",
                    &[&id],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| CommandRow {
                    id: r.get(0),
                    kind: r.get(1),
                    by: r.get(2),
                    at: r.get::<_, Timestamp>(3).to_string(),
                    detail: serde_json::from_value::<CommandKind>(r.get(7))
                        .map(|k| command_detail(&k))
                        .unwrap_or_default(),
                    result: match (r.get::<_, Option<bool>>(4), r.get::<_, bool>(6)) {
                        (Some(true), _) => format!("ok {}", r.get::<_, Option<String>>(5).unwrap_or_default()),
                        (Some(false), _) => format!("failed {}", r.get::<_, Option<String>>(5).unwrap_or_default()),
                        (None, true) => "delivered".into(),
                        (None, false) => "waiting".into(),
                    },
                })
                .collect();
            let baselines = heartbeat
                .as_ref()
                .and_then(|h| h.baseline_pairs)
                .map(|pairs| BaselineRow {
                    filter: "(all anomaly filters)".into(),
                    host: row.name.clone(),
                    learning_started: None,
                    learning_ends: None,
                    state: "reported".into(),
                    keys: 0,
                    pairs,
                })
                .into_iter()
                .collect();
            Ok(Some(HostDetail {
                row,
                heartbeat,
                baselines,
                commands,
                diagnostics,
            }))
        })
    }

    fn baselines(&self) -> Result<Vec<BaselineRow>, BackendError> {
        self.run(async |c| {
            Ok(c.query(
                "SELECT hostname, (heartbeat ->> 'baseline_pairs')::int8 FROM agents
                 WHERE revoked_at IS NULL AND heartbeat ->> 'baseline_pairs' IS NOT NULL
                 ORDER BY hostname",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| BaselineRow {
                filter: "(all anomaly filters)".into(),
                host: r.get(0),
                learning_started: None,
                learning_ends: None,
                state: "reported".into(),
                keys: 0,
                pairs: r.get::<_, Option<i64>>(1).unwrap_or(0).max(0) as u64,
            })
            .collect())
        })
    }

    fn explain(&self, _: &str, _: &str, _: &[String]) -> Result<Option<ExplainView>, BackendError> {
        Ok(None)
    }

    fn export_baselines(&self) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(None)
    }

    fn groups(&self) -> Result<Vec<GroupRow>, BackendError> {
        self.run(async |c| {
            Ok(c.query(
                &format!("SELECT {GROUP_COLUMNS} GROUP BY g.id ORDER BY g.name"),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(group_row)
            .collect())
        })
    }

    fn group(&self, name: &str) -> Result<Option<GroupDetail>, BackendError> {
        self.run(async |c| {
            let Some(r) = c
                .query_opt(
                    &format!("SELECT {GROUP_COLUMNS} WHERE g.name = $1 GROUP BY g.id"),
                    &[&name],
                )
                .await
                .map_err(db)?
            else {
                return Ok(None);
            };
            let row = group_row(&r);
            let versions = control::config_versions(c, name)
                .await
                .map_err(control_err)?
                .into_iter()
                .map(|x| VersionView {
                    version: x.version,
                    published: x.published,
                    by: x.created_by,
                    at: x.created_at,
                    comment: x.comment,
                    digest: x.digest,
                    applied: x.applied,
                    refused: x.refused,
                })
                .collect();
            let hosts = control::config_status(c, name)
                .await
                .map_err(control_err)?
                .into_iter()
                .map(|a| HostConfigView {
                    id: a.id.to_string(),
                    name: a.hostname,
                    version: a.version,
                    ok: a.ok,
                    error: a.error,
                    reported_at: a.reported_at,
                    generation: a.generation,
                    running: a.digest,
                })
                .collect();
            Ok(Some(GroupDetail {
                row,
                versions,
                hosts,
            }))
        })
    }

    fn config_text(
        &self,
        group: &str,
        version: Option<i32>,
    ) -> Result<Option<ConfigText>, BackendError> {
        self.run(
            async |c| match control::config_get(c, group, version).await {
                Ok((version, text, files)) => Ok(Some(ConfigText {
                    version,
                    text,
                    files,
                })),
                Err(e) if missing(&e) => Ok(None),
                Err(e) => Err(control_err(e)),
            },
        )
    }

    fn publish(
        &self,
        by: &str,
        group: &str,
        version: &Draft<'_>,
    ) -> Result<PublishOutcome, BackendError> {
        let strict: Vec<&str> = version.strict.into_iter().collect();
        self.run(async |c| {
            match control::config_publish(
                c,
                by,
                group,
                version.text,
                version.files,
                version.comment,
                &strict,
            )
            .await
            {
                Ok(p) => Ok(PublishOutcome::Published {
                    version: p.version,
                    warnings: p.warnings,
                }),
                Err(ControlError::Refused(r)) => Ok(PublishOutcome::Refused(r)),
                Err(e) => Err(control_err(e)),
            }
        })
    }

    fn rollback(&self, by: &str, group: &str, version: i32) -> Result<(), BackendError> {
        self.run(async |c| {
            control::config_rollback(c, by, group, version)
                .await
                .map_err(control_err)
        })
    }

    fn send_command(
        &self,
        by: &str,
        to: CommandTo<'_>,
        kind: &CommandKind,
        request: Option<&str>,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        let target = match to {
            // Only agent ids (the host page's): a host name could name several agents.
            CommandTo::Host(id) if id.parse::<i64>().is_err() => return Ok(None),
            CommandTo::Host(id) => control::Target::Agent(id.to_owned()),
            CommandTo::Group(g) => control::Target::Group(g.to_owned()),
        };
        // Request ids are the user's own: one user's form cannot name another's command.
        let request = request
            .filter(|r| !r.is_empty())
            .map(|r| format!("console:{by}:{r}"));
        self.run(async |c| {
            match control::command_send(c, by, &target, kind, request.as_deref(), None).await {
                Ok(sent) => Ok(Some((sent.id, sent.agents))),
                Err(e) if missing(&e) => Ok(None),
                Err(e) => Err(control_err(e)),
            }
        })
    }
}

/// The console for a server: over `pool`, sessions signed with the key from
/// `[console] session_key_file` (shared by several servers) or a random one.
pub fn console(
    config: &crate::config::Config,
    pool: deadpool_postgres::Pool,
) -> anyhow::Result<Option<Arc<Console>>> {
    let Some(c) = &config.console else {
        return Ok(None);
    };
    let keys = match &c.session_key_file {
        Some(p) => {
            let secret = crate::read_limited(p, 4096)
                .map_err(|e| anyhow::anyhow!("[console] session_key_file {}: {e}", p.display()))?;
            Keys::from_secret(secret.trim().as_bytes()).ok_or_else(|| {
                anyhow::anyhow!(
                    "[console] session_key_file {}: needs at least 32 characters",
                    p.display()
                )
            })?
        }
        None => Keys::random().map_err(|e| anyhow::anyhow!("[console]: {e}"))?,
    };
    let backend = PgBackend::new(pool, Handle::current(), config.offline_after);
    Ok(Some(Arc::new(Console::new(
        Arc::new(backend),
        keys,
        config.tls.is_some(),
    ))))
}

/// Answers a console request (on a blocking thread).
pub async fn handle(
    console: Arc<Console>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<http_body_util::Full<Bytes>> {
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut creq = watchpost_console::Request {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or("").to_owned(),
        cookie: header(hyper::header::COOKIE),
        content_type: header(hyper::header::CONTENT_TYPE),
        origin: header(hyper::header::ORIGIN),
        host: header(hyper::header::HOST),
        peer: peer.ip().to_string(),
        body: Vec::new(),
    };
    // The limit is decided from the head (a publication from a signed session may carry
    // a whole group version); a body over it is never read whole.
    let limit = console.body_limit(&creq);
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    // A length that is no number, or more than the limit: refused before reading.
    if declared
        .as_ref()
        .is_some_and(|n| n.as_ref().map_or(true, |n| *n > limit as u64))
    {
        return to_hyper(console.too_large(&creq));
    }
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => creq.body = b.to_bytes().to_vec(),
        Err(_) => return to_hyper(console.too_large(&creq)),
    }
    let answer = tokio::task::spawn_blocking(move || console.handle(&creq)).await;
    let r = match answer {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "console: a handler failed");
            watchpost_console::Response::new(
                500,
                "text/plain; charset=utf-8",
                b"internal error\n".to_vec(),
            )
        }
    };
    to_hyper(r)
}

/// A console response as hyper's.
fn to_hyper(r: watchpost_console::Response) -> Response<http_body_util::Full<Bytes>> {
    let mut out = Response::new(http_body_util::Full::new(Bytes::from(r.body)));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            out.headers_mut().append(k, v);
        }
    }
    out
}
