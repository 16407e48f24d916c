//! The public value types: a filter's [`AnomalySpec`], store [`Options`], the [`Verdict`]
//! of a check, reports and the [`Error`] type.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// One anomaly filter's definition (`anomaly = { key = [...], value = [...], ... }`).
///
/// Only `key` and `value` form the *definition*: changing either starts a fresh baseline
/// for the filter. `learning`, `learn_per_key`, `max_values_per_key` and `forget_after`
/// may change freely; they apply to the stored baseline from then on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalySpec {
    /// Key fields (zero or more). Empty: one-dimensional (one key per host).
    pub key: Vec<String>,
    /// Value fields (one or more).
    pub value: Vec<String>,
    /// Length of the learning period, measured in event time.
    pub learning: Duration,
    /// Each key gets its own learning period, starting at its first appearance.
    pub learn_per_key: bool,
    /// At most this many values are stored per key; further new values are still judged
    /// (flagged after learning) but not stored.
    pub max_values_per_key: u32,
    /// Pairs not seen for this long (event time) count as unknown again and are dropped by
    /// [`Baselines::sweep`](crate::Baselines::sweep). Needs [`Options::forgetting`].
    pub forget_after: Option<Duration>,
}

impl AnomalySpec {
    /// A spec with the defaults: 14 days of learning, `learn_per_key = false`,
    /// 10,000 values per key, no forgetting.
    pub fn new<S: Into<String>>(
        key: impl IntoIterator<Item = S>,
        value: impl IntoIterator<Item = S>,
    ) -> AnomalySpec {
        AnomalySpec {
            key: key.into_iter().map(Into::into).collect(),
            value: value.into_iter().map(Into::into).collect(),
            learning: Duration::from_secs(14 * 86_400),
            learn_per_key: false,
            max_values_per_key: 10_000,
            forget_after: None,
        }
    }
}

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// A background thread commits pending pairs this often. `None`: no thread; the owner
    /// calls [`Baselines::flush`](crate::Baselines::flush) (e.g. on its checkpoint tick).
    pub flush_interval: Option<Duration>,
    /// Keep a last-seen hour per pair in memory (4 bytes per slot) so `forget_after` works.
    /// A filter with `forget_after` is refused when this is off.
    pub forgetting: bool,
    /// Rewrite the snapshot file once this many pair changes (or a quarter of all pairs, if
    /// more) were committed since the last one.
    pub snapshot_min_changes: u64,
    /// Bytes of page cache the database may hold in memory (redb's cache; the pair set
    /// itself needs none of it).
    pub db_cache_bytes: usize,
    /// Size the pair table for this many pairs at open. The table doubles when 3/4 full,
    /// under the lock `check` takes: about 0.3 s at 6 million pairs on the benchmark
    /// machine. Sizing it up front avoids those pauses at 8 (12 with forgetting) bytes per
    /// slot, slots being the next power of two above 4/3 of this.
    pub expected_pairs: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            flush_interval: Some(Duration::from_secs(1)),
            forgetting: false,
            snapshot_min_changes: 500_000,
            db_cache_bytes: 16 << 20,
            expected_pairs: 0,
        }
    }
}

/// The answer of [`Baselines::check`](crate::Baselines::check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Still learning (per host, or per key with `learn_per_key`) until `until`: the pair
    /// was recorded (if new and the key has room), nothing is flagged.
    Learning {
        /// When learning ends (event time).
        until: Timestamp,
    },
    /// Learning is over and the pair is in the baseline.
    Known,
    /// Anomaly: learning is over and the key was never seen (without `learn_per_key`).
    /// The pair joins the baseline.
    NewKey {
        /// When the filter's learning ended on this host.
        learning_ended: Timestamp,
    },
    /// Anomaly: the key is known but this value is not (or was forgotten).
    NewValue {
        /// When the key was first seen.
        key_first_seen: Timestamp,
        /// How many values the key had before this one.
        values_known: u32,
        /// False when the key already holds `max_values_per_key` values: the value is not
        /// stored and will be flagged again.
        stored: bool,
    },
}

impl Verdict {
    /// True for the flagged variants ([`Verdict::NewKey`], [`Verdict::NewValue`]).
    pub fn is_anomaly(&self) -> bool {
        matches!(self, Verdict::NewKey { .. } | Verdict::NewValue { .. })
    }
}

impl fmt::Display for Verdict {
    /// The "why" that `watchpost test` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Learning { until } => write!(f, "still learning until {until}"),
            Verdict::Known => f.write_str("known pair"),
            Verdict::NewKey { learning_ended } => {
                write!(f, "new key (learning ended {learning_ended})")
            }
            Verdict::NewValue {
                key_first_seen,
                values_known,
                stored,
            } => {
                write!(
                    f,
                    "new value for key (key first seen {key_first_seen}, {values_known} values known"
                )?;
                if !stored {
                    f.write_str(", key full: value not stored")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Identifies a registered filter in [`Baselines::check`](crate::Baselines::check).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FilterId(pub(crate) u32);

/// What [`Baselines::filter`](crate::Baselines::filter) did.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The handle for `check`.
    pub id: FilterId,
    /// Set when the stored definition differed: the filter's baseline was discarded.
    pub definition_changed: Option<DefinitionChange>,
}

/// A filter's key/value definition changed; its old baseline was discarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionChange {
    /// The filter's name.
    pub filter: String,
    /// The stored key and value fields.
    pub old: (Vec<String>, Vec<String>),
    /// The new key and value fields.
    pub new: (Vec<String>, Vec<String>),
    /// How many (filter, host) baselines were discarded.
    pub hosts_reset: usize,
}

/// One (filter, host) baseline, as [`Baselines::list`](crate::Baselines::list) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSummary {
    /// Filter name.
    pub filter: String,
    /// Host name.
    pub host: String,
    /// Event time of the filter's first match on this host.
    pub learning_started: Timestamp,
    /// When the host-wide learning period ends (`None` if the filter is not registered).
    pub learning_ends: Option<Timestamp>,
    /// The latest event time seen (the host's clock).
    pub clock: Timestamp,
    /// Known keys.
    pub keys: u64,
    /// Known pairs.
    pub pairs: u64,
}

/// What [`Baselines::explain`](crate::Baselines::explain) says about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Filter name.
    pub filter: String,
    /// Host name.
    pub host: String,
    /// Key fields.
    pub key: Vec<String>,
    /// Whether learning is per key.
    pub learn_per_key: bool,
    /// Learning start that applies to this key (the key's first appearance with
    /// `learn_per_key`, else the filter's first match on the host); `None` if never seen.
    pub learning_started: Option<Timestamp>,
    /// End of that learning period.
    pub learning_ends: Option<Timestamp>,
    /// When the key was first seen.
    pub key_first_seen: Option<Timestamp>,
    /// Known values with first (and, with forgetting, last) seen times, oldest first.
    pub values: Vec<ValueInfo>,
}

/// One known value of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueInfo {
    /// Value fields.
    pub value: Vec<String>,
    /// When the pair was first recorded.
    pub first_seen: Timestamp,
    /// When it was last seen, where tracked (forgetting on, hour resolution).
    pub last_seen: Option<Timestamp>,
}

/// Counts and sizes, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Pairs in the in-memory set.
    pub pairs: u64,
    /// Keys known (all filters and hosts).
    pub keys: u64,
    /// (filter, host) learning clocks.
    pub hosts: u64,
    /// Estimated bytes of memory held (set, key and host maps, pending batch).
    pub memory_bytes: u64,
    /// Pairs waiting for the next flush.
    pub pending_pairs: u64,
    /// Committed generation (one per flush that changed something).
    pub generation: u64,
    /// Whether `open` read the pair set from the snapshot file (plus deltas) rather than
    /// rebuilding it from every pair row.
    pub opened_from_snapshot: bool,
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed.
    #[error("baseline database: {0}")]
    Db(#[from] redb::Error),
    /// File I/O failed.
    #[error("baseline file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file was written by an incompatible version.
    #[error("baseline format {found} is not supported (expected {expected})")]
    Format {
        /// Found version.
        found: u64,
        /// Supported version.
        expected: u64,
    },
    /// A stored record could not be decoded.
    #[error("baseline record is corrupt: {0}")]
    Corrupt(&'static str),
    /// No filter of that name is registered.
    #[error("no anomaly filter named {0:?} is registered")]
    UnknownFilter(String),
    /// The spec is not usable.
    #[error("anomaly filter {filter:?}: {reason}")]
    Spec {
        /// Filter name.
        filter: String,
        /// What is wrong.
        reason: String,
    },
    /// An import line is wrong.
    #[error("import line {line}: {reason}")]
    Import {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
