-- The fleet schema: groups and their configuration versions, enrollment secrets, agents,
-- the events they ship (partitioned by day) with outcomes and acknowledgements, check and
-- quarantine states, commands and their results, users and the audit log.
-- Partitions of `events` and `outcomes` are made and dropped by the server (db.rs).

CREATE TABLE groups (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    description       text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The configuration version agents of the group run (NULL: their own files).
    published_version integer
);

-- A group's watchpost configuration, versioned: every change is a new row; publishing
-- (or rolling back) points the group at one.
CREATE TABLE config_versions (
    group_id    bigint NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    config      text NOT NULL,
    -- Sigma rule files, placeholder files: name -> content.
    files       jsonb NOT NULL DEFAULT '{}',
    digest      text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, version)
);

CREATE TABLE enroll_secrets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id     bigint NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    name         text NOT NULL,
    -- SHA-256 of the secret; the secret itself is shown once, when made.
    secret_hash  bytea NOT NULL UNIQUE,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    uses         bigint NOT NULL DEFAULT 0,
    last_used_at timestamptz,
    UNIQUE (group_id, name)
);

CREATE TABLE agents (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- /etc/machine-id, Windows MachineGuid: enrolling again from the same host keeps the row.
    host_id            text NOT NULL UNIQUE,
    group_id           bigint NOT NULL REFERENCES groups (id),
    hostname           text NOT NULL,
    os                 text NOT NULL DEFAULT '',
    version            text NOT NULL DEFAULT '',
    -- SHA-256 of the agent's credential.
    credential_hash    bytea UNIQUE,
    enrolled_at        timestamptz NOT NULL DEFAULT now(),
    enrolled_with      bigint REFERENCES enroll_secrets (id) ON DELETE SET NULL,
    revoked_at         timestamptz,
    revoked_by         text,
    revoke_reason      text,
    last_seen_at       timestamptz,
    last_address       text,
    -- Shipping: the agent's sequence and the last number committed here.
    stream             text,
    last_seq           bigint NOT NULL DEFAULT 0,
    last_batch_at      timestamptz,
    -- From heartbeats.
    heartbeat_at       timestamptz,
    heartbeat          jsonb,
    config_generation  text,
    config_diagnostics jsonb,
    shipping_dropped   bigint NOT NULL DEFAULT 0
);
CREATE INDEX agents_group ON agents (group_id);
CREATE INDEX agents_hostname ON agents (lower(hostname));
CREATE INDEX agents_last_seen ON agents (last_seen_at);

CREATE SEQUENCE events_id_seq CACHE 1000;

-- Every event an agent stored. `ts` is the event's time, or when it was received when it
-- has none or lies outside the days kept; partitions are one day of `ts` each.
CREATE TABLE events (
    id          bigint NOT NULL DEFAULT nextval('events_id_seq'),
    ts          timestamptz NOT NULL,
    agent_id    bigint NOT NULL,
    seq         bigint NOT NULL,
    local_id    bigint NOT NULL,
    time        timestamptz,
    stored_at   timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    source      text NOT NULL,
    host        text NOT NULL,
    filters     text[] NOT NULL,
    -- `filters` in lower case, for the index (filter names match case-insensitively).
    filter_keys text[] NOT NULL,
    anomaly     boolean NOT NULL,
    anomaly_why text,
    needs_ack   boolean NOT NULL,
    acked_at    timestamptz,
    acked_by    text,
    ack_comment text,
    -- `agent` (watchpost ack on the host) or `server`.
    ack_origin  text,
    fields      jsonb NOT NULL,
    raw         text NOT NULL,
    origin      text,
    -- Words of the values, host and raw record (watchpost_query::index_words).
    search      tsvector NOT NULL,
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_host ON events (lower(host), ts);
CREATE INDEX events_agent_local ON events (agent_id, local_id);
CREATE INDEX events_anomaly ON events (ts) WHERE anomaly;
CREATE INDEX events_pending ON events (ts) WHERE needs_ack AND acked_at IS NULL;
CREATE INDEX events_filters ON events USING gin (filter_keys);
CREATE INDEX events_search ON events USING gin (search);

-- Every attempt of an action on a shipped event, partitioned by the day received.
CREATE TABLE outcomes (
    agent_id    bigint NOT NULL,
    event_local bigint NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    action      text NOT NULL,
    -- The filter (or rule set) whose firing the action handled.
    filter      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    attempt     integer NOT NULL,
    ok          boolean NOT NULL,
    detail      text NOT NULL
) PARTITION BY RANGE (received_at);
CREATE INDEX outcomes_event ON outcomes (agent_id, event_local);

-- The last status of each check per agent, and every change.
CREATE TABLE check_states (
    agent_id   bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name       text NOT NULL,
    status     text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    since      timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, name)
);
CREATE TABLE check_changes (
    agent_id bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name     text NOT NULL,
    status   text NOT NULL,
    previous text,
    detail   text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL
);
CREATE INDEX check_changes_agent ON check_changes (agent_id, at);

-- The network quarantine per agent (a row while applied), and every change.
CREATE TABLE quarantine_states (
    agent_id   bigint PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    since      timestamptz NOT NULL,
    reason     text NOT NULL,
    until      timestamptz,
    updated_at timestamptz NOT NULL
);
CREATE TABLE quarantine_changes (
    agent_id bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    applied  boolean NOT NULL,
    reason   text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL
);
CREATE INDEX quarantine_changes_agent ON quarantine_changes (agent_id, at);

-- Commands to an agent or a group (release the quarantine, run an action, reload, ...),
-- delivered once each, and their results.
CREATE TABLE commands (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id   bigint REFERENCES agents (id) ON DELETE CASCADE,
    group_id   bigint REFERENCES groups (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    args       jsonb NOT NULL DEFAULT '{}',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    CHECK ((agent_id IS NULL) <> (group_id IS NULL))
);
CREATE TABLE command_results (
    command_id   bigint NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    agent_id     bigint NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    delivered_at timestamptz,
    finished_at  timestamptz,
    ok           boolean,
    result       jsonb,
    PRIMARY KEY (command_id, agent_id)
);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    role          text NOT NULL CHECK (role IN ('viewer', 'analyst', 'admin')),
    -- argon2id (PHC string); NULL until a password is set.
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
CREATE TABLE user_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Who did what, when: every administrative change and every refused attempt worth knowing.
CREATE TABLE audit_log (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
