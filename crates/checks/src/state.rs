//! Which status each check last reported, and problems waiting out their grace.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The last reported status of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// The status.
    pub status: String,
    /// When it was reported (Unix ms).
    pub since_ms: i64,
}

/// A saved tracker that cannot be read (it is then started afresh).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(#[source] serde_json::Error);

/// Decides which observations are reports; saved as JSON between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tracker {
    reported: HashMap<String, Reported>,
    /// A problem seen but not reported yet (grace): (status, first seen ms).
    pending: HashMap<String, (String, i64)>,
}

impl Tracker {
    /// Reads a saved tracker (unreadable → empty, with the reason).
    pub fn from_json(text: &str) -> Result<Tracker, StateError> {
        serde_json::from_str(text).map_err(StateError)
    }

    /// The tracker as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Forgets checks no longer configured.
    pub fn retain(&mut self, names: &[&str]) {
        self.reported.retain(|k, _| names.contains(&k.as_str()));
        self.pending.retain(|k, _| names.contains(&k.as_str()));
    }

    /// The last reported status (`ok` if none).
    pub fn status(&self, check: &str) -> &str {
        self.reported.get(check).map_or("ok", |r| r.status.as_str())
    }

    /// Takes an observation; returns the previously reported status when this one is to be
    /// reported: a change, after `grace` for problems (a recovery to `ok` is reported at
    /// once; a problem that clears during its grace is never reported).
    pub fn observe(
        &mut self,
        check: &str,
        status: &str,
        now_ms: i64,
        grace: Duration,
    ) -> Option<String> {
        let previous = self.status(check).to_owned();
        if status == previous {
            self.pending.remove(check);
            return None;
        }
        if status != "ok" && !grace.is_zero() {
            let first = match self.pending.get(check) {
                Some((s, at)) if s == status => *at,
                _ => {
                    self.pending
                        .insert(check.to_owned(), (status.to_owned(), now_ms));
                    now_ms
                }
            };
            if now_ms - first < grace.as_millis() as i64 {
                return None;
            }
        }
        self.pending.remove(check);
        self.reported.insert(
            check.to_owned(),
            Reported {
                status: status.to_owned(),
                since_ms: now_ms,
            },
        );
        Some(previous)
    }

    /// When a pending problem's grace ends (so the scheduler can look again then).
    pub fn pending_until(&self, check: &str, grace: Duration) -> Option<i64> {
        self.pending
            .get(check)
            .map(|(_, at)| at + grace.as_millis() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_only_with_grace_for_problems() {
        let mut t = Tracker::default();
        let g = Duration::from_secs(60);
        assert_eq!(t.observe("defs", "ok", 0, g), None, "ok at first: silent");
        assert_eq!(t.observe("defs", "stale", 1_000, g), None, "grace starts");
        assert_eq!(t.observe("defs", "stale", 30_000, g), None);
        assert_eq!(
            t.observe("defs", "stale", 61_000, g),
            Some("ok".into()),
            "still stale after the grace"
        );
        assert_eq!(
            t.observe("defs", "stale", 90_000, g),
            None,
            "steady: not repeated"
        );
        assert_eq!(
            t.observe("defs", "ok", 91_000, g),
            Some("stale".into()),
            "recovery at once"
        );
        // A problem that clears during its grace is never reported.
        assert_eq!(t.observe("defs", "stale", 100_000, g), None);
        assert_eq!(t.observe("defs", "ok", 120_000, g), None);
        assert_eq!(t.observe("defs", "stale", 130_000, g), None, "a new grace");
        assert_eq!(t.pending_until("defs", g), Some(190_000));
        // Without grace a change is reported at once; survives a round trip.
        assert_eq!(
            t.observe("svc", "stopped", 0, Duration::ZERO),
            Some("ok".into())
        );
        let mut back = Tracker::from_json(&t.to_json()).unwrap();
        assert_eq!(back.observe("svc", "stopped", 5, Duration::ZERO), None);
        assert_eq!(back.status("svc"), "stopped");
        back.retain(&["defs"]);
        assert_eq!(back.status("svc"), "ok");
    }
}
