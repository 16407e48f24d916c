//! PostgreSQL: the connection pool, versioned schema migrations (applied by `init-db` and at
//! every start, under an advisory lock so several servers starting at once apply each
//! once), and the day partitions of `events` and `outcomes` (made ahead, dropped after
//! the retention: dropping a partition frees its space at once, no `DELETE`, no vacuum;
//! the per-hour counts of those days are deleted with them).

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
];

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
    let pg = pg_config(db)?;
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(db.pool_size)
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
    // The per-hour counts go with the days they count.
    let oldest = day_start(first);
    tx.execute("DELETE FROM event_hours WHERE hour < $1", &[&oldest])
        .await?;
    tx.execute("DELETE FROM filter_hours WHERE hour < $1", &[&oldest])
        .await?;
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
