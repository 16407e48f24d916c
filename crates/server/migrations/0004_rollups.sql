-- Events counted per hour as they are stored, for the console's overview: it reads these
-- rows for its range instead of counting the events themselves. Ingest adds each batch's
-- counts in the transaction that stores its rows (a batch refused as a replay adds
-- nothing, a transaction rolled back adds nothing). Each row belongs to one agent, and one
-- agent's batches are stored one after the other: ingest of different agents at once
-- never updates the same row.
--
-- `hour` is the start of the hour (UTC) of the event's `ts`, the time the overview's
-- charts go by; rows older than the oldest day partition kept are deleted with it.

-- Per hour, agent, host and Sigma rule level (`fields ->> 'rule_level'`, '' when none):
-- all events and the anomalies among them.
CREATE TABLE event_hours (
    hour      timestamptz NOT NULL,
    agent_id  bigint NOT NULL,
    host      text NOT NULL,
    level     text NOT NULL,
    events    bigint NOT NULL,
    anomalies bigint NOT NULL,
    PRIMARY KEY (hour, agent_id, host, level)
);

-- Per hour, agent and filter: the events the filter matched (an event matched by two
-- filters counts once in each; `event_hours` counts it once).
CREATE TABLE filter_hours (
    hour      timestamptz NOT NULL,
    agent_id  bigint NOT NULL,
    filter    text NOT NULL,
    events    bigint NOT NULL,
    PRIMARY KEY (hour, agent_id, filter)
);
