-- The per-hour counts of the events already stored (part of migration 4; the console
-- bench fills its counts with it too).
INSERT INTO event_hours (hour, agent_id, host, level, events, anomalies)
SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', agent_id, host,
       coalesce(fields ->> 'rule_level', ''), count(*), count(*) FILTER (WHERE anomaly)
FROM events
GROUP BY 1, 2, 3, 4;
INSERT INTO filter_hours (hour, agent_id, filter, events)
SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', agent_id, f, count(*)
FROM events, unnest(filters) f
GROUP BY 1, 2, 3;
