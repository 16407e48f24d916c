-- Whether the overview's counts agree with the events: the per-hour counts (the
-- per-agent rows of `event_hours` and `filter_hours` plus the folded rows of all agents)
-- added up per hour and rule level, per hour and host and per hour and filter, against
-- the events counted the same way, and the folded hosts' days against their hours. One
-- number: the rows that differ (0 when they agree).
-- Run by the server's tests (`db::HOURS_CHECK`) and at the end of `scripts/fleet-bench.sh`.
WITH kept_levels AS (
    SELECT hour, level, sum(events)::int8 AS events, sum(anomalies)::int8 AS anomalies
    FROM (SELECT hour, level, events, anomalies FROM event_hours
          UNION ALL SELECT hour, level, events, anomalies FROM folded_level_hours) k
    GROUP BY 1, 2
), counted_levels AS (
    SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           coalesce(fields ->> 'rule_level', '') AS level,
           count(*) AS events, count(*) FILTER (WHERE anomaly) AS anomalies
    FROM events GROUP BY 1, 2
), kept_hosts AS (
    SELECT hour, host, sum(events)::int8 AS events
    FROM (SELECT hour, host, events FROM event_hours
          UNION ALL SELECT hour, host, events FROM folded_host_hours) k
    GROUP BY 1, 2
), counted_hosts AS (
    SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, host,
           count(*) AS events
    FROM events GROUP BY 1, 2
), kept_filters AS (
    SELECT hour, filter, sum(events)::int8 AS events
    FROM (SELECT hour, filter, events FROM filter_hours
          UNION ALL SELECT hour, filter, events FROM folded_filter_hours) k
    GROUP BY 1, 2
), counted_filters AS (
    SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, f AS filter,
           count(*) AS events
    FROM events, unnest(filters) f GROUP BY 1, 2
), host_days AS (
    SELECT day, host, events FROM folded_host_days
), summed_host_days AS (
    SELECT date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day, host,
           sum(events)::int8 AS events
    FROM folded_host_hours GROUP BY 1, 2
)
SELECT (SELECT count(*) FROM ((TABLE kept_levels EXCEPT TABLE counted_levels)
                              UNION ALL (TABLE counted_levels EXCEPT TABLE kept_levels)) d)
     + (SELECT count(*) FROM ((TABLE kept_hosts EXCEPT TABLE counted_hosts)
                              UNION ALL (TABLE counted_hosts EXCEPT TABLE kept_hosts)) d)
     + (SELECT count(*) FROM ((TABLE kept_filters EXCEPT TABLE counted_filters)
                              UNION ALL (TABLE counted_filters EXCEPT TABLE kept_filters)) d)
     + (SELECT count(*) FROM ((TABLE host_days EXCEPT TABLE summed_host_days)
                              UNION ALL (TABLE summed_host_days EXCEPT TABLE host_days)) d)
  AS differing;
