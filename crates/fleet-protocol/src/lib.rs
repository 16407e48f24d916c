//! What watchpost agents and the fleet server (`watchpost-server`) say to each other.
//!
//! The API is versioned under [`API`] (`/api/v1`); [`ROUTES`] lists every route the server
//! answers, and `docs/fleet-api.md` describes each (a test of the server keeps the two in
//! step). Bodies are JSON; batches are usually gzip-compressed (`Content-Encoding: gzip`).
//!
//! * **Enrollment** ([`EnrollRequest`] → [`EnrollResponse`]): an agent presents its group's
//!   enrollment secret and its stable host id once, and receives a per-agent credential
//!   (`wpa_…`) it sends as `Authorization: Bearer` from then on. The server keeps only a
//!   hash of it.
//! * **Batches** ([`Batch`] → [`BatchAck`]): what the agent's event store holds (matched
//!   events with their anomaly flag and reason, action outcomes, acknowledgements), in the
//!   order it was stored, each record numbered by the agent's sequence ([`Record::seq`]).
//!   A batch covers `first_seq..=last_seq` of one `stream` (a sequence is started afresh
//!   only with a new event store); numbers without a record in that range were dropped
//!   on the agent. The server stores each number once: a batch sent again is acknowledged
//!   and not stored again, a batch that starts after a gap is refused with the number
//!   expected ([`ApiError::expected_seq`]).
//! * **Heartbeats** ([`Heartbeat`] → [`HeartbeatAck`]): the agent's health: version,
//!   configuration generation and diagnostics, sources, actions, checks, quarantine,
//!   baselines, its shipping queue and what it dropped.
//! * **The channel back** ([`Poll`] → [`Delivery`], [`Report`] → [`ReportAck`];
//!   `channel.rs`): the agent long-polls for its group's configuration, commands and
//!   acknowledgements made centrally, and reports what it did with them.
//!
//! [`decode_batch`] is the one place a batch from the network is read: decompression with
//! a limit ([`Limits::max_decompressed`]), JSON with serde, then [`Batch::validate`]. It
//! never panics on any input (fuzzed: `fuzz/` and this crate's `tests/fuzz.rs`).

pub mod channel;
mod codec;
mod fields;
pub mod retry;

use serde::{Deserialize, Serialize};

pub use channel::{
    CentralAck, Command, CommandKind, CommandResult, ConfigReport, Delivery, GroupConfig,
    MAX_CONFIG_BYTES, MAX_DELIVERY, MAX_FILES_BYTES, Poll, Report, ReportAck, check_file_name,
};
pub use codec::{
    DecodeError, Encoding, Limits, decode_batch, decode_json, decompress, encode_batch,
    encode_json, fuzz_batch,
};
pub use fields::Fields;

/// Prefix of every API route.
pub const API: &str = "/api/v1";
/// `POST`: enroll with a group's secret.
pub const ENROLL: &str = "/api/v1/enroll";
/// `POST`: a batch of records.
pub const BATCHES: &str = "/api/v1/batches";
/// `POST`: a heartbeat.
pub const HEARTBEAT: &str = "/api/v1/heartbeat";
/// `GET`: events matching a query (admin credential).
pub const ADMIN_EVENTS: &str = "/api/v1/admin/events";
/// `GET`: the agents (admin credential).
pub const ADMIN_AGENTS: &str = "/api/v1/admin/agents";
/// `GET`: liveness and the database's reachability (no credential).
pub const HEALTH: &str = "/api/v1/health";
/// `POST`: long-poll for configuration, commands and acknowledgements.
pub const POLL: &str = "/api/v1/poll";
/// `POST`: what the agent did with them.
pub const REPORT: &str = "/api/v1/report";

/// Every route the server answers: method and path. `docs/fleet-api.md` documents each.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", ENROLL),
    ("POST", BATCHES),
    ("POST", HEARTBEAT),
    ("GET", ADMIN_EVENTS),
    ("GET", ADMIN_AGENTS),
    ("GET", HEALTH),
    ("POST", POLL),
    ("POST", REPORT),
];

/// How agent credentials start (so a leaked one is recognisable, e.g. by secret scanners).
pub const CREDENTIAL_PREFIX: &str = "wpa_";
/// How enrollment secrets start.
pub const ENROLL_SECRET_PREFIX: &str = "wpe_";
/// How user API tokens start.
pub const USER_TOKEN_PREFIX: &str = "wpu_";

/// An agent asks to join a group.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The group's enrollment secret.
    pub secret: String,
    /// Stable host id: `/etc/machine-id`, Windows `MachineGuid`.
    pub host_id: String,
    /// The computer's name.
    pub hostname: String,
    /// Operating system (`linux`, `windows`) and, where known, its release.
    pub os: String,
    /// watchpost version.
    pub version: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("secret", &"<hidden>")
            .field("host_id", &self.host_id)
            .field("hostname", &self.hostname)
            .field("os", &self.os)
            .field("version", &self.version)
            .finish()
    }
}

/// The server's answer to a successful enrollment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent's id on the server.
    pub agent_id: i64,
    /// The group it joined.
    pub group: String,
    /// The per-agent credential (`wpa_…`): store it, send it as `Authorization: Bearer`.
    pub credential: String,
    /// How often to send a heartbeat.
    pub heartbeat_secs: u32,
    /// What a batch may hold.
    pub max_batch_records: u32,
    /// Largest (compressed) body the server takes.
    pub max_body_bytes: u64,
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("agent_id", &self.agent_id)
            .field("group", &self.group)
            .field("credential", &"<hidden>")
            .field("heartbeat_secs", &self.heartbeat_secs)
            .finish()
    }
}

/// Records `first_seq..=last_seq` of an agent's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The agent's sequence (1-64 letters, digits, `-`, `_`): made with its event store.
    pub stream: String,
    /// First sequence number covered.
    pub first_seq: u64,
    /// Last sequence number covered (numbers without a record were dropped).
    pub last_seq: u64,
    /// The records, in sequence order.
    pub records: Vec<Record>,
}

/// One thing the agent's store recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A matched or anomaly-judged event.
    Event(EventRecord),
    /// An action's attempt on a stored event.
    Outcome(OutcomeRecord),
    /// An acknowledgement given on the agent (`watchpost ack`).
    Ack(AckRecord),
}

impl Record {
    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Record::Event(e) => e.seq,
            Record::Outcome(o) => o.seq,
            Record::Ack(a) => a.seq,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    /// Sequence number.
    pub seq: u64,
    /// The event's id in the agent's store (outcomes and acknowledgements name it).
    pub id: u64,
    /// The event's own time (Unix ms), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<i64>,
    /// When the agent stored it (Unix ms).
    pub stored_ms: i64,
    /// Source name.
    pub source: String,
    /// Host the event is about.
    pub host: String,
    /// Filters (and rule sets) that matched, in chain order.
    pub filters: Vec<String>,
    /// Flagged by an anomaly filter.
    #[serde(default)]
    pub anomaly: bool,
    /// Why it was flagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_why: Option<String>,
    /// Waits for an acknowledgement.
    #[serde(default)]
    pub needs_ack: bool,
    /// Field names and values.
    pub fields: Fields,
    /// The record as read.
    pub raw: String,
    /// Where it was read (`file:offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// What an action did with a stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRecord {
    /// Sequence number.
    pub seq: u64,
    /// The event's id in the agent's store.
    pub event: u64,
    /// The action's name.
    pub action: String,
    /// The filter (or rule set) whose firing the action handled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Attempt number (0: held back by throttle/dedupe).
    pub attempt: u32,
    /// Whether it succeeded.
    pub ok: bool,
    /// The error or a note.
    #[serde(default)]
    pub detail: String,
}

/// An acknowledgement given on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRecord {
    /// Sequence number.
    pub seq: u64,
    /// The event's id in the agent's store.
    pub event: u64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who.
    pub by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// The server's answer to a batch: everything up to `committed_seq` is in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// The agent may forget every record up to this number.
    pub committed_seq: u64,
    /// Records stored now.
    pub stored: u64,
    /// Records that were stored before (a batch sent again).
    pub duplicates: u64,
    /// Outcomes and acknowledgements whose event the server does not have.
    pub orphans: u64,
    /// The batch is the one the server committed last, sent again (its answer was lost):
    /// nothing was stored now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_committed: bool,
}

/// An error answer (every 4xx and 5xx has one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
    /// What went wrong, for a program (`too_large`, `bad_batch`, `out_of_order`,
    /// `unauthorized`, `revoked`, `rate_limited`, …).
    pub code: String,
    /// `out_of_order`: the sequence number the server expects next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

/// The agent's health, sent every `heartbeat_secs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Heartbeat {
    /// watchpost version.
    pub version: String,
    /// The computer's name now.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Which configuration it runs (a digest of the file).
    pub config_generation: Option<String>,
    /// `check-config` warnings of the running configuration.
    pub config_diagnostics: Vec<String>,
    /// Per source.
    pub sources: Vec<SourceStatus>,
    /// Per action.
    pub actions: Vec<ActionStatus>,
    /// Last status of each check.
    pub checks: Vec<CheckStatus>,
    /// The network quarantine, when applied.
    pub quarantine: Option<QuarantineStatus>,
    /// Pairs the anomaly baselines hold.
    pub baseline_pairs: Option<u64>,
    /// Age of the antivirus definitions (hours), from a `definitions_age` check.
    pub definitions_age_hours: Option<f64>,
    /// The local event store.
    pub store: StoreStatus,
    /// Shipping to the server.
    pub shipping: ShippingStatus,
}

/// One source's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceStatus {
    /// Source name.
    pub name: String,
    /// Records read or received.
    pub records: u64,
    /// Records that did not parse.
    pub errors: u64,
    /// When the last record was read (Unix ms).
    pub last_record_ms: Option<i64>,
}

/// One action's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionStatus {
    /// Action name.
    pub name: String,
    /// Its type.
    pub kind: String,
    /// Jobs done.
    pub ok: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Jobs dropped.
    pub dropped: u64,
    /// Jobs waiting in memory.
    pub queued: u64,
    /// Jobs in the retry queue.
    pub durable_queued: u64,
}

/// A check's last status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckStatus {
    /// Check name.
    pub name: String,
    /// `ok` or the problem (`stale`, `stopped`, `silent`, …).
    pub status: String,
    /// Details.
    pub detail: String,
}

/// The quarantine as recorded on the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuarantineStatus {
    /// Since when (Unix ms).
    pub since_ms: i64,
    /// Why (the filter or the person).
    pub reason: String,
    /// When it ends by itself (Unix ms).
    pub until_ms: Option<i64>,
}

/// The agent's event store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreStatus {
    /// Events stored.
    pub stored: u64,
    /// Events not stored (its queue was full).
    pub dropped: u64,
    /// Events lost to a failed write.
    pub failed: u64,
}

/// Shipping to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShippingStatus {
    /// Records waiting to be shipped.
    pub pending: u64,
    /// Records never shipped because the queue was at `max_queue` or retention removed
    /// their event first (since the queue was made).
    pub dropped: u64,
    /// The highest sequence number the server acknowledged.
    pub committed_seq: u64,
    /// When the oldest waiting record was stored (Unix ms).
    pub oldest_pending_ms: Option<i64>,
}

/// The server's answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// How often to send one.
    pub heartbeat_secs: u32,
    /// The server's clock (Unix ms).
    pub server_time_ms: i64,
}
