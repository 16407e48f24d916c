//! The agent's console backend: its SQLite event store (its own read-write connection:
//! WAL lets the daemon's writer go on), the running daemon's baselines and counters (a
//! [`LocalState`] the runtime provides), and the user file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use watchpost_anomaly::Baselines;
use watchpost_fleet_protocol::Heartbeat;
use watchpost_query::Query;
use watchpost_store::{Dimension, PageSpec, Store, StoreError, StoredEvent};

use crate::auth::UserFile;
use crate::backend::{
    AckView, Attention, AuditRow, Backend, BackendError, BaselineRow, EventDetail, EventSummary,
    ExplainView, Home, HostDetail, HostPage, HostQuery, HostRow, OutcomeView, Overview, Page,
    UserRecord, buckets, problems, rfc3339, summarize, top,
};

/// What the running daemon tells its console.
pub trait LocalState: Send + Sync {
    /// Its counters, as a fleet heartbeat carries them.
    fn heartbeat(&self) -> Heartbeat;
    /// Its anomaly baselines (`None` until an anomaly filter ran).
    fn baselines(&self) -> Option<&Baselines>;
    /// Releases the quarantine in force (the agent's quarantine API, as `watchpost
    /// quarantine release` does), recording `by` and `reason`: `Ok(true)` released,
    /// `Ok(false)` none was in force, `Err` why it could not be released.
    fn release_quarantine(&self, by: &str, reason: &str) -> Result<bool, String> {
        let _ = (by, reason);
        Err("this daemon cannot release its quarantine from the console".into())
    }
}

/// The agent's console backend.
pub struct LocalBackend {
    store: Mutex<Store>,
    users: PathBuf,
    hostname: String,
    state: Box<dyn LocalState>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("users", &self.users)
            .finish()
    }
}

fn store_err(e: StoreError) -> BackendError {
    match e {
        StoreError::Query(q) => BackendError::Query(q),
        e => BackendError::Store(e.to_string()),
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

fn fields(e: &StoredEvent) -> Vec<(String, String)> {
    e.fields.iter().map(|(k, v)| (k.clone(), text(v))).collect()
}

fn summary(e: &StoredEvent) -> EventSummary {
    EventSummary {
        id: e.id as i64,
        time: e.time.clone().unwrap_or_else(|| e.stored.clone()),
        host: e.host.clone(),
        source: e.source.clone(),
        filters: e.filters.clone(),
        anomaly: e.anomaly,
        waiting: e.needs_ack && e.ack.is_none(),
        acked: e.ack.is_some(),
        summary: summarize(e.anomaly_why.as_deref(), &fields(e)),
    }
}

fn explain_view(x: watchpost_anomaly::Explanation, key_names: &[String]) -> ExplainView {
    ExplainView {
        filter: x.filter,
        host: x.host,
        key: key_names.iter().cloned().zip(x.key).collect(),
        learn_per_key: x.learn_per_key,
        learning_started: x.learning_started.map(|t| t.to_string()),
        learning_ends: x.learning_ends.map(|t| t.to_string()),
        key_first_seen: x.key_first_seen.map(|t| t.to_string()),
        values: x
            .values
            .into_iter()
            .map(|v| (v.value.join(", "), v.first_seen.to_string()))
            .collect(),
    }
}

impl LocalBackend {
    /// Opens the store at `store` (creating its tables if needed); users come from the
    /// file at `users` (read at every login and request, so edits apply at once).
    pub fn open(
        store: &Path,
        users: PathBuf,
        hostname: String,
        state: Box<dyn LocalState>,
    ) -> Result<LocalBackend, StoreError> {
        Ok(LocalBackend {
            store: Mutex::new(Store::open(store)?),
            users,
            hostname,
            state,
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn host_row(&self, hb: &Heartbeat) -> HostRow {
        HostRow {
            id: "local".into(),
            name: self.hostname.clone(),
            group: String::new(),
            version: env!("CARGO_PKG_VERSION").into(),
            generation: hb.config_generation.clone().unwrap_or_default(),
            last_seen: Some(Timestamp::now().to_string()),
            state: "running".into(),
            problems: problems(Some(hb), None),
        }
    }
}

impl Backend for LocalBackend {
    fn home(&self) -> Home {
        Home::Local
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, BackendError> {
        UserFile::read(&self.users)
            .map(|f| f.find(name))
            .map_err(|e| BackendError::Store(e.to_string()))
    }

    fn overview(&self, now: Timestamp, hours: u32) -> Result<Overview, BackendError> {
        let (from, len, n) = buckets(now, hours);
        let store = self.store();
        let all = store
            .histogram(from, len, n, Dimension::All)
            .map_err(store_err)?;
        let series = |name: &str| {
            all.iter()
                .find(|(k, _)| k == name)
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| vec![0; n])
        };
        let hist = |d| store.histogram(from, len, n, d).map_err(store_err);
        let waiting_list = store
            .page(
                &Query {
                    pending_ack: true,
                    ..Query::default()
                },
                &PageSpec {
                    limit: 10,
                    ..PageSpec::default()
                },
            )
            .map_err(store_err)?
            .iter()
            .map(summary)
            .collect();
        let hb = self.state.heartbeat();
        let problems = problems(Some(&hb), None);
        Ok(Overview {
            buckets: (0..n).map(|i| from + i as i64 * len).collect(),
            bucket_ms: len,
            events: series(""),
            anomalies: series("anomaly"),
            by_filter: top(hist(Dimension::Filter)?, 6),
            by_level: top(hist(Dimension::Level)?, 6),
            by_host: top(hist(Dimension::Host)?, 6),
            waiting: store.waiting().map_err(store_err)?,
            waiting_list,
            attention: if problems.is_empty() {
                Vec::new()
            } else {
                vec![Attention {
                    host: "local".into(),
                    name: self.hostname.clone(),
                    problems,
                }]
            },
        })
    }

    fn search(&self, query: &Query, page: &Page) -> Result<Vec<EventSummary>, BackendError> {
        Ok(self
            .store()
            .page(
                query,
                &PageSpec {
                    before: page.before,
                    after: page.after,
                    oldest_first: page.oldest_first,
                    limit: page.limit,
                },
            )
            .map_err(store_err)?
            .iter()
            .map(summary)
            .collect())
    }

    fn event(&self, id: i64) -> Result<Option<EventDetail>, BackendError> {
        let Ok(uid) = u64::try_from(id) else {
            return Ok(None);
        };
        let Some(e) = self.store().get(uid).map_err(store_err)? else {
            return Ok(None);
        };
        let fields = fields(&e);
        let mut explanations = Vec::new();
        if e.anomaly
            && let Some(b) = self.state.baselines()
        {
            for f in &e.filters {
                let Some(names) = b.key_fields(f) else {
                    continue;
                };
                let values: Vec<&str> = names
                    .iter()
                    .map(|n| {
                        fields
                            .iter()
                            .find(|(k, _)| k == n)
                            .map_or("", |(_, v)| v.as_str())
                    })
                    .collect();
                match b.explain(f, &e.host, &values) {
                    Ok(x) => explanations.push(explain_view(x, &names)),
                    Err(err) => {
                        tracing::debug!(error = %err, filter = %f, "console: no explanation")
                    }
                }
            }
        }
        Ok(Some(EventDetail {
            summary: summary(&e),
            stored: e.stored.clone(),
            agent: None,
            anomaly_why: e.anomaly_why.clone(),
            needs_ack: e.needs_ack,
            ack: e.ack.as_ref().map(|a| AckView {
                at: a.at.clone(),
                by: a.by.clone(),
                comment: a.comment.clone(),
                origin: String::new(),
            }),
            fields,
            raw: e.raw.clone(),
            origin: e.origin.clone(),
            outcomes: e
                .outcomes
                .iter()
                .map(|o| OutcomeView {
                    action: o.action.clone(),
                    filter: o.filter.clone(),
                    at: rfc3339(o.at_ms),
                    attempt: i64::from(o.attempt),
                    ok: o.ok,
                    detail: o.detail.clone(),
                })
                .collect(),
            explanations,
        }))
    }

    fn ack(&self, ids: &[i64], by: &str, comment: &str) -> Result<Vec<i64>, BackendError> {
        let ids: Vec<u64> = ids.iter().filter_map(|i| u64::try_from(*i).ok()).collect();
        Ok(self
            .store()
            .ack(&ids, by, comment)
            .map_err(store_err)?
            .into_iter()
            .map(|i| i as i64)
            .collect())
    }

    fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), BackendError> {
        self.store()
            .audit(actor, action, target, &detail.to_string())
            .map_err(store_err)
    }

    fn audit_log(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditRow>, BackendError> {
        Ok(self
            .store()
            .audit_log(before, limit)
            .map_err(store_err)?
            .into_iter()
            .map(|a| AuditRow {
                id: a.id,
                at: rfc3339(a.at_ms),
                actor: a.actor,
                action: a.action,
                target: a.target,
                detail: a.detail,
            })
            .collect())
    }

    fn hosts(&self, _: &HostQuery) -> Result<HostPage, BackendError> {
        // One host: the console sends its hosts page to that host's own.
        Ok(HostPage {
            rows: vec![self.host_row(&self.state.heartbeat())],
            total: 1,
            more: false,
        })
    }

    fn release_local_quarantine(&self, by: &str, reason: &str) -> Result<bool, BackendError> {
        self.state
            .release_quarantine(by, reason)
            .map_err(|e| BackendError::Invalid(format!("The quarantine was not released: {e}")))
    }

    fn host(&self, id: &str) -> Result<Option<HostDetail>, BackendError> {
        if id != "local" {
            return Ok(None);
        }
        let hb = self.state.heartbeat();
        Ok(Some(HostDetail {
            row: self.host_row(&hb),
            diagnostics: hb.config_diagnostics.clone(),
            heartbeat: Some(hb),
            baselines: self.baselines()?,
            commands: Vec::new(),
        }))
    }

    fn baselines(&self) -> Result<Vec<BaselineRow>, BackendError> {
        let Some(b) = self.state.baselines() else {
            return Ok(Vec::new());
        };
        let list = b.list().map_err(|e| BackendError::Store(e.to_string()))?;
        Ok(list
            .into_iter()
            .map(|h| BaselineRow {
                state: match h.learning_ends {
                    Some(end) if h.clock < end => "learning".into(),
                    _ => "detecting".into(),
                },
                filter: h.filter,
                host: h.host,
                learning_started: Some(h.learning_started.to_string()),
                learning_ends: h.learning_ends.map(|t| t.to_string()),
                keys: h.keys,
                pairs: h.pairs,
            })
            .collect())
    }

    fn explain(
        &self,
        filter: &str,
        host: &str,
        key: &[String],
    ) -> Result<Option<ExplainView>, BackendError> {
        let Some(b) = self.state.baselines() else {
            return Err(BackendError::Invalid(
                "No anomaly filter has run yet: there are no baselines.".into(),
            ));
        };
        let Some(names) = b.key_fields(filter) else {
            return Err(BackendError::Invalid(format!(
                "`{filter}` is not an anomaly filter of this configuration."
            )));
        };
        if key.len() != names.len() {
            return Err(BackendError::Invalid(format!(
                "`{filter}` has {} key field(s) ({}); {} value(s) given.",
                names.len(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                },
                key.len()
            )));
        }
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        b.explain(filter, host, &key)
            .map(|x| Some(explain_view(x, &names)))
            .map_err(|e| BackendError::Invalid(e.to_string()))
    }

    fn export_baselines(&self) -> Result<Option<Vec<u8>>, BackendError> {
        let Some(b) = self.state.baselines() else {
            return Ok(Some(Vec::new()));
        };
        let mut out = Vec::new();
        b.export(&mut out)
            .map_err(|e| BackendError::Store(e.to_string()))?;
        Ok(Some(out))
    }
}
