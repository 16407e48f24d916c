//! PostgreSQL: the connection pool, versioned schema migrations (applied by `init-db` and at
//! every start, under an advisory lock so several servers starting at once apply each
//! once), and the day partitions of `events` and `outcomes` (made ahead, dropped after
//! the retention: dropping a partition frees its space at once, no `DELETE`, no vacuum;
//! the per-hour counts of those days are deleted with them), and the fold of the per-hour
//! counts of past hours into rows of all agents ([`fold_hours`]).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use tokio_postgres::NoTls;

use crate::config::Database;

/// Every migration, in order: version, name, SQL. A migration is never changed once
/// released; changes are new migrations.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "fleet", include_str!("../migrations/0001_fleet.sql")),
    (
        2,
        "ingest_indexes",
        include_str!("../migrations/0002_ingest_indexes.sql"),
    ),
    (3, "channel", include_str!("../migrations/0003_channel.sql")),
    (
        4,
        "rollups",
        concat!(
            include_str!("../migrations/0004_rollups.sql"),
            include_str!("../migrations/0004_rollups_backfill.sql")
        ),
    ),
    (
        5,
        "folded_hours",
        include_str!("../migrations/0005_folded_hours.sql"),
    ),
];

/// How many rows of the overview's per-hour counts disagree with counting the events
/// (per hour and rule level, host, filter; per-agent and folded rows added up): 0 when
/// they agree. The tests and `scripts/fleet-bench.sh` run it.
pub const HOURS_CHECK: &str = include_str!("../sql/hours_check.sql");

/// Fills the per-hour counts (`event_hours`, `filter_hours`, empty) from the events
/// stored, as migration 4 does for the events stored before it.
pub const ROLLUP_BACKFILL: &str = include_str!("../migrations/0004_rollups_backfill.sql");

/// The start of the UTC hour holding `t` (Unix seconds), as the per-hour counts file it.
pub fn hour_of(t: Timestamp) -> Timestamp {
    let s = t.as_second().div_euclid(3600) * 3600;
    Timestamp::from_second(s).unwrap_or(t)
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// PostgreSQL said no, or the connection failed.
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The pool could not be made.
    #[error("database pool: {0}")]
    Build(String),
    /// The schema is newer than this server.
    #[error(
        "the database schema is version {found}, newer than this server knows ({known}): upgrade the server"
    )]
    TooNew {
        /// In the database.
        found: i32,
        /// Known here.
        known: i32,
    },
    /// The password could not be read.
    #[error("database password: {0}")]
    Password(String),
}

/// Connects a pool (no connection is opened until one is needed).
pub fn pool(db: &Database) -> Result<Pool, DbError> {
    pool_of(db, db.pool_size)
}

/// Connections of the urgent lane: a pool apart from `pool_size`, for the work one person
/// waits on while thousands of agents keep the main pool busy (a command's delivery and
/// its result, see `http.rs`).
pub const URGENT_POOL: usize = 2;

/// A pool of `size` connections to the `[database]`.
pub fn pool_of(db: &Database, size: usize) -> Result<Pool, DbError> {
    let pg = pg_config(db)?;
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// The connection settings of `[database]` (the pool's, and the notification listener's).
pub fn pg_config(db: &Database) -> Result<tokio_postgres::Config, DbError> {
    let mut pg: tokio_postgres::Config = db
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Build(e.to_string()))?;
    if let Some(p) = &db.password {
        pg.password(p.read().map_err(DbError::Password)?);
    }
    pg.application_name("watchpost-server");
    pg.connect_timeout(Duration::from_secs(5));
    Ok(pg)
}

/// Applies the migrations not yet applied; returns the versions applied now.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, DbError> {
    // One server at a time (the key is arbitrary but fixed: "watchpost" in ASCII).
    client
        .batch_execute("SELECT pg_advisory_lock(8387236825053623156)")
        .await?;
    let result = migrate_locked(client).await;
    let unlock = client
        .batch_execute("SELECT pg_advisory_unlock(8387236825053623156)")
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let current: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(DbError::TooNew {
            found: current,
            known,
        });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "schema migration applied");
        applied.push(*version);
    }
    Ok(applied)
}

/// The schema version in the database (0: none).
pub async fn schema_version(client: &tokio_postgres::Client) -> Result<i32, DbError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0))
}

/// The days that have partitions: events with a time outside are filed under the time
/// they were received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start of the oldest day kept.
    pub from: Timestamp,
    /// End of the newest day made.
    pub until: Timestamp,
}

impl Window {
    /// The partition time for an event: its own time when inside the window, else when
    /// it was received.
    pub fn ts(&self, time: Option<Timestamp>, received: Timestamp) -> Timestamp {
        match time {
            Some(t) if t >= self.from && t < self.until => t,
            _ => received,
        }
    }
}

fn day_start(d: Date) -> Timestamp {
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The partition days for `now`: `retention_days` back (today included) and two ahead.
pub fn window_for(now: Timestamp, retention_days: u32) -> (Date, Date) {
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let first = today
        .checked_sub((retention_days.max(1) as i64 - 1).days())
        .unwrap_or(today);
    let last = today.checked_add(2.days()).unwrap_or(today);
    (first, last)
}

/// Makes the partitions of the retention window and drops older ones. Returns the
/// window and the partitions dropped.
pub async fn maintain_partitions(
    client: &mut tokio_postgres::Client,
    now: Timestamp,
    retention_days: u32,
) -> Result<(Window, Vec<String>), DbError> {
    let (first, last) = window_for(now, retention_days);
    let tx = client.transaction().await?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(8387236825053623157)")
        .await?;
    let existing: Vec<String> = tx
        .query(
            "SELECT c.relname::text FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
              WHERE p.relname IN ('events', 'outcomes')",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut day = first;
    while day <= last {
        for parent in ["events", "outcomes"] {
            let name = format!("{parent}_p{}", day.strftime("%Y%m%d"));
            if existing.contains(&name) {
                continue;
            }
            let next = day.checked_add(1.day()).unwrap_or(day);
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent}
                 FOR VALUES FROM ('{}') TO ('{}')",
                day_start(day),
                day_start(next)
            ))
            .await?;
        }
        day = match day.checked_add(1.day()) {
            Ok(d) => d,
            Err(_) => break,
        };
    }
    // The per-hour counts go with the days they count, per agent and folded.
    let oldest = day_start(first);
    for (table, column) in HOUR_TABLES {
        tx.execute(
            &format!("DELETE FROM {table} WHERE {column} < $1"),
            &[&oldest],
        )
        .await?;
    }
    let cutoff = first.strftime("%Y%m%d").to_string();
    let mut dropped = Vec::new();
    for name in existing {
        let Some((_, date)) = name.rsplit_once("_p") else {
            continue;
        };
        if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) && *date < *cutoff {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await?;
            dropped.push(name);
        }
    }
    tx.commit().await?;
    if !dropped.is_empty() {
        tracing::info!(partitions = ?dropped, "retention dropped old day partitions");
    }
    let until = day_start(last.checked_add(1.day()).unwrap_or(last));
    Ok((
        Window {
            from: day_start(first),
            until,
        },
        dropped,
    ))
}

/// Every table of per-hour counts, with its time column: per agent (`event_hours`,
/// `filter_hours`, kept by ingest) and folded ([`fold_hours`]; per host also per day).
pub const HOUR_TABLES: [(&str, &str); 6] = [
    ("event_hours", "hour"),
    ("filter_hours", "hour"),
    ("folded_level_hours", "hour"),
    ("folded_host_hours", "hour"),
    ("folded_host_days", "day"),
    ("folded_filter_hours", "hour"),
];

/// The per-hour counts before this hour are folded when it is `now`: hours that ended
/// more than an hour ago (late batches for them are still counted, see [`fold_hours`]).
pub fn fold_before(now: Timestamp) -> Timestamp {
    hour_of(now)
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What a fold moved: per-agent rows of `event_hours` and `filter_hours` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// `event_hours` rows added into `folded_level_hours` and `folded_host_hours`.
    pub event_rows: u64,
    /// `filter_hours` rows added into `folded_filter_hours`.
    pub filter_rows: u64,
}

/// Folds the per-agent per-hour counts of the hours before `before` into rows of all
/// agents: per hour and level (`folded_level_hours`), per hour and host
/// (`folded_host_hours`, what the by-host chart needs, and its sums per UTC day,
/// `folded_host_days`) and per hour and filter (`folded_filter_hours`), in one transaction that deletes the per-agent rows it adds
/// up. The overview reads per-agent and folded rows together, so its numbers are the same
/// before and after.
///
/// **Late batches are counted once.** Ingest keeps writing per-agent rows only, for
/// whatever hour an event falls in, folded or not; a per-agent row is either still there
/// or already added to the folded rows, never both (the move is one transaction), and the
/// next fold adds what came late. Ingest that upserts a row the fold is deleting waits for
/// the fold's commit and then inserts it anew. The fold locks the rows it moves in key
/// order (text compared byte by byte, `COLLATE "C"`, as Rust compares it), the order
/// ingest upserts them in, so the two never wait for each other in a circle. Folds (of several servers) and retention run one at a time (one advisory lock).
pub async fn fold_hours(
    client: &mut tokio_postgres::Client,
    before: Timestamp,
) -> Result<Folded, DbError> {
    let tx = client.transaction().await?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(8387236825053623157)")
        .await?;
    let mut moved = [0i64; 2];
    for (n, (table, key, fold)) in moved.iter_mut().zip(FOLDS) {
        tx.execute(
            &format!("SELECT 1 FROM {table} WHERE hour < $1 ORDER BY {key} FOR UPDATE"),
            &[&before],
        )
        .await?;
        *n = tx.query_one(fold, &[&before]).await?.get(0);
    }
    tx.commit().await?;
    Ok(Folded {
        event_rows: moved[0].max(0) as u64,
        filter_rows: moved[1].max(0) as u64,
    })
}

/// Per table of per-agent counts: its name, its key in the order ingest upserts it (text
/// byte by byte), and the statement that moves its rows before `$1` into the folded
/// tables and counts them.
const FOLDS: [(&str, &str, &str); 2] = [
    (
        "event_hours",
        r#"hour, agent_id, host COLLATE "C", level COLLATE "C""#,
        "WITH moved AS (
             DELETE FROM event_hours WHERE hour < $1
             RETURNING hour, host, level, events, anomalies
         ), levels AS (
             INSERT INTO folded_level_hours AS t (hour, level, events, anomalies)
             SELECT hour, level, sum(events)::int8, sum(anomalies)::int8 FROM moved GROUP BY 1, 2
             ON CONFLICT (hour, level) DO UPDATE
             SET events = t.events + excluded.events, anomalies = t.anomalies + excluded.anomalies
         ), hosts AS (
             INSERT INTO folded_host_hours AS t (hour, host, events)
             SELECT hour, host, sum(events)::int8 FROM moved GROUP BY 1, 2
             ON CONFLICT (hour, host) DO UPDATE SET events = t.events + excluded.events
         ), host_days AS (
             INSERT INTO folded_host_days AS t (day, host, events)
             SELECT date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', host,
                    sum(events)::int8
             FROM moved GROUP BY 1, 2
             ON CONFLICT (day, host) DO UPDATE SET events = t.events + excluded.events
         )
         SELECT count(*) FROM moved",
    ),
    (
        "filter_hours",
        r#"hour, agent_id, filter COLLATE "C""#,
        "WITH moved AS (
             DELETE FROM filter_hours WHERE hour < $1 RETURNING hour, filter, events
         ), filters AS (
             INSERT INTO folded_filter_hours AS t (hour, filter, events)
             SELECT hour, filter, sum(events)::int8 FROM moved GROUP BY 1, 2
             ON CONFLICT (hour, filter) DO UPDATE SET events = t.events + excluded.events
         )
         SELECT count(*) FROM moved",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_partition_time() {
        let now: Timestamp = "2026-11-20T13:00:00Z".parse().unwrap();
        let (first, last) = window_for(now, 30);
        assert_eq!(first.to_string(), "2026-10-22");
        assert_eq!(last.to_string(), "2026-11-22");
        let w = Window {
            from: day_start(first),
            until: day_start(last.checked_add(1.day()).unwrap()),
        };
        let inside: Timestamp = "2026-11-19T08:00:00Z".parse().unwrap();
        assert_eq!(w.ts(Some(inside), now), inside);
        let future: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(w.ts(Some(future), now), now);
        assert_eq!(w.ts(None, now), now);
        let old: Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(w.ts(Some(old), now), now);
    }
}
