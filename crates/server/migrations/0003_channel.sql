-- The channel back to agents: group configuration versions applied or refused by each
-- agent, commands with their delivery and results, acknowledgements made centrally and
-- delivered to the agent's local store. Changes are announced on the NOTIFY channel
-- `watchpost_fleet` so that every server instance wakes the long-polls it holds.

-- What each agent did with its group's configuration.
ALTER TABLE agents
    -- The group configuration version the agent last handled (NULL: none yet).
    ADD COLUMN config_version      integer,
    -- Whether that version runs on the agent (false: refused, see config_error).
    ADD COLUMN config_ok           boolean,
    ADD COLUMN config_error        text,
    -- The agent's configuration generation after handling it (its reload counter).
    ADD COLUMN config_reload_generation bigint,
    ADD COLUMN config_reported_at  timestamptz,
    -- The highest central acknowledgement the agent applied to its store.
    ADD COLUMN acks_applied        bigint NOT NULL DEFAULT 0;

-- Who published which version when (the audit log has it too).
ALTER TABLE groups
    ADD COLUMN published_at timestamptz,
    ADD COLUMN published_by text;

-- A command is sent once (`request_id`: a client's key making a retried send idempotent);
-- `command_results` gets one row per target agent when it is sent (pending until the
-- agent reports), so a group command reaches the agents in the group at that moment.
ALTER TABLE commands ADD COLUMN request_id text UNIQUE;
CREATE INDEX command_results_pending ON command_results (agent_id, command_id)
    WHERE finished_at IS NULL;

-- Acknowledgements made on the server, per agent, in order: the agent's cursor is the id.
CREATE TABLE central_acks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id   bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    local_id   bigint NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    by_user    text NOT NULL,
    comment    text NOT NULL DEFAULT ''
);
CREATE INDEX central_acks_agent ON central_acks (agent_id, id);
