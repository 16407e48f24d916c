-- Indexes shaped for the questions asked of `events` (the console and `watchpost-server
-- events`: newest first, by host, anomalies, waiting for acknowledgement), and agents' rows
-- updated in place.
--
-- Lists are newest first by `id` (the order the server stored them). An index whose last
-- column is `id` answers "the newest N of host X / of the anomalies / of those waiting for
-- acknowledgement" by reading N entries per day partition, where one on `ts` had to
-- collect and sort every match first. The cost per stored event is the same.
DROP INDEX events_host;
CREATE INDEX events_host ON events (lower(host), id);
DROP INDEX events_anomaly;
CREATE INDEX events_anomaly ON events (id) WHERE anomaly;
DROP INDEX events_pending;
CREATE INDEX events_pending ON events (id) WHERE needs_ack AND acked_at IS NULL;

-- Every heartbeat and every batch moves an agent's `last_seen_at`; indexed, each such
-- update wrote a new entry into every index of `agents`. Without the index (a scan of the
-- agents table answers "who is offline" quickly even for 100,000 agents) and with room
-- left in each page, PostgreSQL updates the row in place (a HOT update).
DROP INDEX agents_last_seen;
ALTER TABLE agents SET (fillfactor = 70);
-- Each heartbeat also moves its checks' `detail` and `updated_at`: the same for them.
ALTER TABLE check_states SET (fillfactor = 70);

-- The batch each agent had committed last (its first number and the SHA-256 of its JSON):
-- the same batch sent again (its answer was lost) is acknowledged as committed; any other
-- batch under numbers already taken is refused as a replay.
ALTER TABLE agents ADD COLUMN last_batch_first bigint, ADD COLUMN last_batch_hash bytea;

-- Each enrollment with a secret, a row of its own (`secret list` counts them with the
-- `uses` counted before): an enrollment no longer updates the secret's row, whose lock
-- made agents enrolling at once wait for each other's commit. No foreign key (its check
-- would lock the secret's row too); secrets are never deleted.
CREATE TABLE enroll_secret_uses (
    secret_id bigint NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enroll_secret_uses_secret ON enroll_secret_uses (secret_id);
