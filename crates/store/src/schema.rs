//! The database file: pragmas, tables, indexes, and the schema version.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::{StoreError, sql_err};

/// The schema this build writes (`PRAGMA user_version`). 2: `outcomes.filter` (which
/// filter's firing the action handled; version 1 files get the column, empty, on open).
/// 3: the fleet shipping queue (`outbox`, `outbox_state`; made on open).
/// 4: the console's audit log (`audit`; made on open).
/// 5: events counted per hour of storing time (`event_hours`, `filter_hours`), kept by
/// the writer; filled from the events stored on opening an older file.
pub(crate) const VERSION: i64 = 5;

/// The length of an hour in ms: the per-hour counts' unit.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Fills the per-hour counts (empty) from the events stored: on opening a file of
/// version 1–4 for writing, and for tools that rewrite events in place.
pub const HOURS_BACKFILL: &str = "
INSERT INTO event_hours (hour, host, level, events, anomalies)
SELECT stored / 3600000 * 3600000, host, coalesce(json_extract(fields, '$.rule_level'), ''),
       count(*), sum(anomaly)
FROM events WHERE true GROUP BY 1, 2, 3;
INSERT INTO filter_hours (hour, filter, events)
SELECT e.stored / 3600000 * 3600000, f.filter, count(*)
FROM events e JOIN event_filters f ON f.event = e.id WHERE true GROUP BY 1, 2;
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    time        INTEGER,
    stored      INTEGER NOT NULL,
    source      TEXT NOT NULL,
    host        TEXT NOT NULL,
    filters     TEXT NOT NULL,
    anomaly     INTEGER NOT NULL DEFAULT 0,
    anomaly_why TEXT,
    needs_ack   INTEGER NOT NULL DEFAULT 0,
    acked_at    INTEGER,
    acked_by    TEXT,
    ack_comment TEXT,
    fields      TEXT NOT NULL,
    raw         TEXT NOT NULL,
    origin      TEXT
);
CREATE INDEX IF NOT EXISTS events_stored ON events(stored);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE INDEX IF NOT EXISTS events_host ON events(host COLLATE NOCASE, id);
CREATE INDEX IF NOT EXISTS events_anomaly ON events(id) WHERE anomaly = 1;
CREATE INDEX IF NOT EXISTS events_pending ON events(id) WHERE needs_ack = 1 AND acked_at IS NULL;
CREATE TABLE IF NOT EXISTS event_filters (
    event  INTEGER NOT NULL,
    filter TEXT NOT NULL,
    PRIMARY KEY (filter, event)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_filters_event ON event_filters(event);
CREATE TABLE IF NOT EXISTS outcomes (
    event   INTEGER NOT NULL,
    action  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    ok      INTEGER NOT NULL,
    detail  TEXT NOT NULL,
    filter  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outcomes_event ON outcomes(event);
-- Version 3: the shipping queue to the fleet server (outbox.rs). Each stored event,
-- outcome and acknowledgement gets the next sequence number in the transaction that
-- stores it; the shipper sends them in that order and forgets them once the server has
-- committed them.
CREATE TABLE IF NOT EXISTS outbox (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    ref  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    stream      TEXT NOT NULL,
    committed   INTEGER NOT NULL DEFAULT 0,
    dropped     INTEGER NOT NULL DEFAULT 0,
    enabled     INTEGER NOT NULL DEFAULT 0,
    max_pending INTEGER NOT NULL DEFAULT 0
);
-- Version 4: who did what in the console (logins, acknowledgements, refusals).
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
-- Version 5: events counted per hour of storing time (`stored` rounded down to the hour,
-- Unix ms), for the console's overview. The writer adds each batch's counts in the
-- transaction that stores its events, and retention takes off the counts of the events
-- it deletes. `level` is the `rule_level` field, '' when none.
CREATE TABLE IF NOT EXISTS event_hours (
    hour      INTEGER NOT NULL,
    host      TEXT NOT NULL,
    level     TEXT NOT NULL,
    events    INTEGER NOT NULL,
    anomalies INTEGER NOT NULL,
    PRIMARY KEY (hour, host, level)
) WITHOUT ROWID;
-- Per hour and filter (an event matched by two filters counts once in each).
CREATE TABLE IF NOT EXISTS filter_hours (
    hour   INTEGER NOT NULL,
    filter TEXT NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (hour, filter)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(
    text, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2'
);
";

/// Opens (creating) the store for writing: WAL, incremental vacuum (set before the first
/// table, so retention can give space back), the schema.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = sql_err(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlite {
            path: path.to_path_buf(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
    }
    let conn = Connection::open(path).map_err(&err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(&err)?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(&err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&err)?;
    // WAL + NORMAL: a power cut can lose the last transactions, never corrupt the file.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    let found = check_version(&conn, path)?;
    if found == 1 {
        conn.execute_batch("ALTER TABLE outcomes ADD COLUMN filter TEXT NOT NULL DEFAULT ''")
            .map_err(&err)?;
    }
    conn.execute_batch(SCHEMA).map_err(&err)?;
    if (1..5).contains(&found) {
        // The events stored before the counts were kept: counted now, in the transaction
        // that moves the version (an open interrupted here counts them at the next).
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; DELETE FROM event_hours; DELETE FROM filter_hours; {HOURS_BACKFILL}
             PRAGMA user_version = {VERSION}; COMMIT;"
        ))
        .map_err(&err)?;
    }
    conn.pragma_update(None, "user_version", VERSION)
        .map_err(&err)?;
    Ok(conn)
}

/// Refuses a file written by a newer schema; returns the file's version (0: new).
pub(crate) fn check_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql_err(path))?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: VERSION,
        });
    }
    Ok(found)
}
