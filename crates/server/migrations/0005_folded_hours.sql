-- The per-hour counts of hours that are past, of all agents together: the maintenance
-- task folds the per-agent rows of `event_hours` and `filter_hours` older than the hour
-- before the current one into these, in one transaction that deletes the rows it adds
-- up. The overview reads both: each event is counted in exactly one of them (a late
-- batch for a folded hour adds per-agent rows again, which the next fold adds to these).
-- Seven days of a thousand agents are then a few hundred rows by level and by filter,
-- and one row per host and hour (and per host and day). Retention deletes them with their
-- days.

-- Per hour and Sigma rule level ('' when none): all events and the anomalies among them.
CREATE TABLE folded_level_hours (
    hour      timestamptz NOT NULL,
    level     text NOT NULL,
    events    bigint NOT NULL,
    anomalies bigint NOT NULL,
    PRIMARY KEY (hour, level)
);

-- Per hour and host (the event's `host`): all events. The by-host chart reads the hours
-- of the six busiest hosts of its range (by host, then hour).
CREATE TABLE folded_host_hours (
    hour   timestamptz NOT NULL,
    host   text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (hour, host)
);
CREATE INDEX folded_host_hours_host ON folded_host_hours (host, hour);

-- Per UTC day and host: the sums of `folded_host_hours`, kept by the same fold. Which hosts
-- are the busiest of a range is added up from the whole days inside it and the hours at
-- its ends (seven days of a thousand hosts: some thousands of rows, not 168,000).
CREATE TABLE folded_host_days (
    day    timestamptz NOT NULL,
    host   text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (day, host)
);

-- Per hour and filter: the events the filter matched.
CREATE TABLE folded_filter_hours (
    hour   timestamptz NOT NULL,
    filter text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (hour, filter)
);
