//! Health checks (`[[check]]`): the host's protection state, looked at on an interval.
//!
//! Each check observes a **status** (`ok`, or a problem such as `stale`, `missing`,
//! `changed`, `stopped`, `silent`, `error`). Only changes are reported: the first problem,
//! a different problem, and the recovery to `ok`; a steady state is never repeated (also
//! across restarts: the last reported status is saved). A problem must persist for the
//! check's `grace` before it is reported (a client downloading new definitions right now is
//! not stale). Each report is an [`Event`] with `source` = the check's name, so filters and
//! actions treat it like any other event:
//!
//! | field | meaning |
//! |---|---|
//! | `check` | the check's name |
//! | `check_type` | `definitions_age`, `file`, `service`, `source_silence` |
//! | `status` | the new status |
//! | `previous_status` | the status reported before (`ok` at the first report) |
//! | `detail` | a sentence for people |
//! | kind-specific | `definitions_date`, `definitions_revision`, `age_hours`; `path`, `sha256`; `service`, `state`; `silent_source`, `last_event` |
//!
//! Kinds ([`Kind`]):
//! * `definitions_age`: age of the antivirus definitions from SEP's registry
//!   (`public-opstate`, Windows), the SEP AV log's `def_info` field, a file's modification
//!   time or a date inside it, or a command's output (a regex with a `date` capture).
//! * `file`: exists / does not exist; SHA-256 equals (`sha256`) or differs from
//!   (`sha256_not`) a value. Hashing runs on the checks thread, never on the event path.
//! * `service`: systemd units (`systemctl is-active`, argv) or Windows services (SCM).
//! * `source_silence`: a source delivered nothing for longer than `after`.

mod kinds;
mod spec;
mod state;

pub use kinds::{Observation, SourceClock, observe};
pub use spec::{CheckSpec, CheckToml, DefSource, Kind, parse_check};
pub use state::{Reported, StateError, Tracker};

/// The field names check events carry (for `check-config`'s field checks).
pub const FIELDS: &[&str] = &[
    "check",
    "check_type",
    "status",
    "previous_status",
    "detail",
    "definitions_date",
    "definitions_revision",
    "age_hours",
    "path",
    "sha256",
    "service",
    "state",
    "silent_source",
    "last_event",
];

use watchpost_event::{Event, Sym, Value};

/// The event reporting `obs` of `check` (status changed from `previous`).
pub fn event(check: &CheckSpec, obs: &Observation, previous: &str, host: &str) -> Event {
    let detail = obs.detail.clone();
    let raw = format!("{}: {} ({})", check.name, obs.status, detail);
    let mut e = Event::new(check.name.as_str().into(), host.into(), raw);
    e.time = Some(jiff::Timestamp::now());
    let mut push = |name: &str, v: String| {
        if let Some(s) = Sym::try_new(name) {
            e.push(s, Value::Str(v.into_boxed_str()));
        }
    };
    push("check", check.name.clone());
    push("check_type", check.kind.name().to_owned());
    push("status", obs.status.clone());
    push("previous_status", previous.to_owned());
    push("detail", detail);
    for (k, v) in &obs.fields {
        push(k, v.clone());
    }
    e.finish();
    e
}
