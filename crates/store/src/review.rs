//! What the web console reads and writes beyond `watchpost events`: pages of results by
//! keyset (an id to continue from, never `OFFSET`, so page 1,000 costs what page 1
//! costs), counts per time bucket for the overview's charts, and the console's audit log.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params};
use watchpost_query::Query;

use crate::schema::HOUR_MS;
use crate::{Store, StoreError, StoredEvent, ms, query, sql_err};

/// Which part of the results: keyset pagination by id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageSpec {
    /// Only ids below this (newest first).
    pub before: Option<i64>,
    /// Only ids above this (oldest first).
    pub after: Option<i64>,
    /// Oldest first.
    pub oldest_first: bool,
    /// At most this many.
    pub limit: usize,
}

/// What the overview's charts count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Every event (name ""), and anomalies (name "anomaly").
    All,
    /// Each matched filter (or rule set).
    Filter,
    /// The Sigma rule level (`rule_level`; events of plain filters are not counted).
    Level,
    /// The host.
    Host,
}

/// An entry of the console's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Id.
    pub id: i64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Details (JSON text).
    pub detail: String,
}

impl Store {
    /// One page of the events matching `query`.
    pub fn page(&self, query: &Query, page: &PageSpec) -> Result<Vec<StoredEvent>, StoreError> {
        let (mut conds, mut args) = query::conditions(query)?;
        if let Some(b) = page.before {
            args.push(Value::Integer(b));
            conds.push(format!("id < ?{}", args.len()));
        }
        if let Some(a) = page.after {
            args.push(Value::Integer(a));
            conds.push(format!("id > ?{}", args.len()));
        }
        args.push(Value::Integer(page.limit.min(10_000) as i64));
        let sql = format!(
            "SELECT id FROM events {} ORDER BY id {} LIMIT ?{}",
            if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            },
            if page.oldest_first { "ASC" } else { "DESC" },
            args.len()
        );
        let err = sql_err(&self.path);
        let mut stmt = self.conn.prepare(&sql).map_err(&err)?;
        let ids: Vec<i64> = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(&err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.get(id as u64)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Counts per bucket of storing time from `from_ms` (`buckets` of `bucket_ms`), per
    /// name of `by`. When the buckets are whole hours (start and length), the counts come
    /// from the per-hour counts the writer keeps (schema 5), a few rows per hour whatever
    /// the number of events; otherwise (or in an older file opened read-only) the events
    /// of the range are counted.
    pub fn histogram(
        &self,
        from_ms: i64,
        bucket_ms: i64,
        buckets: usize,
        by: Dimension,
    ) -> Result<Vec<(String, Vec<u64>)>, StoreError> {
        let to_ms = from_ms.saturating_add(bucket_ms.saturating_mul(buckets as i64));
        let hourly = self.version >= 5
            && bucket_ms > 0
            && from_ms.rem_euclid(HOUR_MS) == 0
            && bucket_ms % HOUR_MS == 0;
        let sql = match (by, hourly) {
            (Dimension::All, true) => {
                "SELECT (hour - ?1) / ?3, '', sum(events), sum(anomalies) FROM event_hours
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY 1"
            }
            (Dimension::Filter, true) => {
                "SELECT (hour - ?1) / ?3, filter, sum(events), 0 FROM filter_hours
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY 1, 2"
            }
            (Dimension::Level, true) => {
                "SELECT (hour - ?1) / ?3, level, sum(events), 0 FROM event_hours
                 WHERE hour >= ?1 AND hour < ?2 AND level <> '' GROUP BY 1, 2"
            }
            (Dimension::Host, true) => {
                "SELECT (hour - ?1) / ?3, host, sum(events), 0 FROM event_hours
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY 1, 2"
            }
            (Dimension::All, false) => {
                "SELECT (stored - ?1) / ?3, '', count(*), sum(anomaly) FROM events
                 WHERE stored >= ?1 AND stored < ?2 GROUP BY 1"
            }
            (Dimension::Filter, false) => {
                "SELECT (e.stored - ?1) / ?3, f.filter, count(*), 0
                 FROM events e JOIN event_filters f ON f.event = e.id
                 WHERE e.stored >= ?1 AND e.stored < ?2 GROUP BY 1, 2"
            }
            (Dimension::Level, false) => {
                "SELECT b, lvl, count(*), 0 FROM (
                    SELECT (stored - ?1) / ?3 AS b, json_extract(fields, '$.rule_level') AS lvl
                    FROM events WHERE stored >= ?1 AND stored < ?2)
                 WHERE lvl IS NOT NULL AND lvl <> '' GROUP BY 1, 2"
            }
            (Dimension::Host, false) => {
                "SELECT (stored - ?1) / ?3, host, count(*), 0 FROM events
                 WHERE stored >= ?1 AND stored < ?2 GROUP BY 1, 2"
            }
        };
        let err = sql_err(&self.path);
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let rows: Vec<(i64, String, i64, i64)> = stmt
            .query_map(params![from_ms, to_ms, bucket_ms.max(1)], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    r.get(2)?,
                    r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(&err)?;
        let mut out: Vec<(String, Vec<u64>)> = Vec::new();
        let mut add = |name: &str, b: i64, n: i64| {
            let Ok(b) = usize::try_from(b) else { return };
            if b >= buckets {
                return;
            }
            let i = match out.iter().position(|(k, _)| k == name) {
                Some(i) => i,
                None => {
                    out.push((name.to_owned(), vec![0; buckets]));
                    out.len() - 1
                }
            };
            out[i].1[b] += n.max(0) as u64;
        };
        for (b, name, n, anomalies) in rows {
            add(&name, b, n);
            if by == Dimension::All {
                add("anomaly", b, anomalies);
            }
        }
        Ok(out)
    }

    /// Events waiting for an acknowledgement.
    pub fn waiting(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM events WHERE needs_ack = 1 AND acked_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql_err(&self.path))
    }

    /// Appends to the audit log.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ms(jiff::Timestamp::now()), actor, action, target, detail],
            )
            .map(|_| ())
            .map_err(sql_err(&self.path))
    }

    /// The audit log, newest first: at most `limit` entries with an id below `before`.
    pub fn audit_log(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let err = sql_err(&self.path);
        let has = self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(&err)?;
        if has.is_none() {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, at, actor, action, target, detail FROM audit
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(&err)?;
        stmt.query_map(
            params![before.unwrap_or(i64::MAX), limit.min(10_000) as i64],
            |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            },
        )
        .and_then(|rows| rows.collect())
        .map_err(&err)
    }
}
