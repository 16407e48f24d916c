//! Anomaly baselines: first-seen key/value pairs per filter and host (issue 4).
//!
//! An anomaly filter names *key* fields (zero or more) and *value* fields (one or more).
//! For every matching event the filter chain calls [`Baselines::check`] with the event's
//! host, key and value strings and its time. While the (filter, host) — or, with
//! `learn_per_key`, the (filter, host, key) — is learning, pairs are recorded and nothing
//! is flagged; afterwards a pair not in the baseline is an anomaly and joins the baseline.
//!
//! ```no_run
//! # use watchpost_anomaly::*;
//! let b = Baselines::open("/var/lib/watchpost/anomaly", Options::default())?;
//! let mut spec = AnomalySpec::new(["TargetUserName"], ["IpAddress"]);
//! spec.learn_per_key = true;
//! let rdp = b.filter("rdp-new-source-ip", &spec)?.id;
//! let v = b.check(rdp, "ws1", &["alice"], &["192.0.2.7"], Some("2026-03-01T10:00:00Z".parse().unwrap()));
//! if v.is_anomaly() { println!("anomaly: {v}"); }
//! b.close()?;
//! # Ok::<(), Error>(())
//! ```
//!
//! # Semantics (also in `docs/anomaly.md`)
//!
//! * **Time.** Each (filter, host) has a *clock*: the highest event time it has seen. An
//!   event without a time uses its arrival (wall-clock) time. All decisions use the clock
//!   after the event is counted, so replaying logs in order gives exactly the verdicts of
//!   living through them (wall time never enters, except for events without a time).
//! * **Learning start** is the event time of the filter's first match on the host (with
//!   `learn_per_key`: the clock when the key first appears). It never moves: an older
//!   event arriving later does not move it back.
//! * **Out-of-order events** are judged at the clock, not at their own older time: once
//!   learning has ended, a late event from inside the learning window is still flagged if
//!   its pair is new. A falsely old timestamp therefore cannot slip a pair in silently; a
//!   falsely *future* timestamp advances the clock (ending learning early: more flags, not
//!   fewer).
//! * **After learning** a new pair is flagged once ([`Verdict::NewKey`] without
//!   `learn_per_key` when the key itself is new, else [`Verdict::NewValue`]) and stored.
//!   With `learn_per_key` a new key starts its own learning instead of being flagged.
//! * **`max_values_per_key`**: a full key stores no further values; new values are still
//!   judged (flagged after learning, with `stored: false`, every time they recur). Nothing is
//!   evicted, so a flood of junk cannot push real values out.
//! * **`forget_after`** (needs [`Options::forgetting`]): a pair whose last sighting (hour
//!   resolution, event time) is older than `forget_after` before the clock is treated as
//!   new — flagged after learning, and re-learned. [`Baselines::sweep`] reclaims such
//!   pairs from memory and disk; it never changes a verdict.
//! * **Definition change**: [`Baselines::filter`] stores the key and value field names;
//!   if they differ from the stored ones the filter's baselines on every host are
//!   discarded (reported in [`Registered::definition_changed`] and logged as a warning).
//!
//! # Storage and durability
//!
//! The hot path touches memory only: a 64-bit fingerprint of (filter, host, key, value) in
//! an open-addressing set (8 bytes per slot, ≤ 3/4 full), a map of keys (first seen,
//! value count) and a map of clocks per (filter, host). Strings live on disk only.
//! New pairs go to a pending batch; [`Baselines::flush`] (called by a background thread
//! every [`Options::flush_interval`], or by the owner) commits it in one redb transaction
//! (`baseline.redb`, fsynced). A `kill -9` loses at most the pairs recorded since the last
//! flush. For a fast restart the set is also saved as a flat snapshot file
//! (`pairs.snap`, tied to a database generation; newer commits are replayed from small
//! delta rows). The database is always the truth: a missing or damaged snapshot only
//! makes the next open slower. Fingerprints are XXH3-64 with fixed seeds (stable across
//! versions and platforms); two different pairs colliding in 64 bits is possible in
//! principle (about 1 in 10^12 per check at 10 million pairs) and would hide that one pair.
//!
//! Locking: one mutex guards the in-memory state; a flush holds it only to take the
//! pending batch. Disk work, including building a new snapshot from the previous one and
//! the delta rows, happens outside it. Doubling the table happens under it (pre-size with
//! [`Options::expected_pairs`]); `reset`, `sweep` and `import` hold it while they change
//! the set.

mod export;
mod fpset;
mod hash;
mod snapshot;
mod spec;
mod state;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use jiff::Timestamp;
use redb::{Database, ReadableDatabase, ReadableTable};

pub use spec::{
    AnomalySpec, DefinitionChange, Error, Explanation, FilterId, HostSummary, Options, Registered,
    Stats, ValueInfo, Verdict,
};

use state::{FilterRt, State, hour, secs, ts};
use store::{Batch, Defs, HostRow};

/// The baselines of every anomaly filter on every host, in one directory.
///
/// Thread-safe: share it behind an `Arc`; `check` may be called from many threads.
pub struct Baselines {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
}

struct Inner {
    state: Mutex<State>,
    writer: Mutex<Writer>,
    options: Options,
    opened_from_snapshot: bool,
    stop: Mutex<bool>,
    wake: Condvar,
}

struct Writer {
    db: Database,
    generation: u64,
    defs: Defs,
    snap: PathBuf,
    /// A batch whose commit failed, retried with the next flush.
    failed: Option<Batch>,
    /// Generation of the snapshot file on disk, if it is known to be good.
    snapshot_generation: Option<u64>,
    changes_since_snapshot: u64,
}

use watchpost_support::lock;

impl Baselines {
    /// Opens (or creates) the baselines in directory `dir` (`baseline.redb` and
    /// `pairs.snap` inside). Starts the background flusher if `options.flush_interval` is set.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Baselines, Error> {
        let dir = dir.as_ref();
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let db = Database::builder()
            .set_cache_size(options.db_cache_bytes)
            .create(dir.join("baseline.redb"))?;
        let generation = store::init(&db)?;
        let mut st = State::new(options.forgetting);
        let snap = dir.join("pairs.snap");
        let (defs, changes) = store::load(&db, &mut st, generation, &snap)?;
        st.set.reserve(options.expected_pairs);
        let mut w = Writer {
            db,
            generation,
            defs,
            snap,
            failed: None,
            snapshot_generation: changes.map(|_| generation),
            changes_since_snapshot: changes.unwrap_or(u64::MAX),
        };
        if changes.is_none()
            && let Err(e) = write_snapshot(&mut w, &st.set)
        {
            tracing::warn!(
                "anomaly baseline: could not write the snapshot (next open will be slow): {e}"
            );
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(st),
            writer: Mutex::new(w),
            options: options.clone(),
            opened_from_snapshot: changes.is_some(),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let flusher = options.flush_interval.map(|every| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("anomaly-flush".into())
                .spawn(move || {
                    let mut stop = lock(&inner.stop);
                    while !*stop {
                        stop = inner
                            .wake
                            .wait_timeout(stop, every)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        drop(stop);
                        if let Err(e) = inner.flush(false) {
                            tracing::error!("anomaly baseline flush failed (will retry): {e}");
                        }
                        stop = lock(&inner.stop);
                    }
                })
                .expect("spawn flusher")
        });
        Ok(Baselines { inner, flusher })
    }

    /// Registers (or re-registers, e.g. after a configuration reload) an anomaly filter.
    /// If the stored key/value definition differs, the filter's baselines are discarded.
    pub fn filter(&self, name: &str, spec: &AnomalySpec) -> Result<Registered, Error> {
        let bad = |reason: &str| {
            Err(Error::Spec {
                filter: name.to_string(),
                reason: reason.to_string(),
            })
        };
        if spec.value.is_empty() {
            return bad("needs at least one value field");
        }
        if spec.forget_after.is_some() && !self.inner.options.forgetting {
            return bad("forget_after needs the store opened with forgetting enabled");
        }
        let learning = i64::try_from(spec.learning.as_secs()).unwrap_or(i64::MAX);
        let forget_hours = spec
            .forget_after
            .map(|d| u32::try_from(d.as_secs().div_ceil(3600).max(1)).unwrap_or(u32::MAX));
        let mut w = lock(&self.inner.writer);
        let mut changed = None;
        let new = (spec.key.clone(), spec.value.clone());
        match w.defs.get(name) {
            Some(old) if *old == new => {}
            old => {
                if let Some(old) = old.cloned() {
                    let hosts_reset = self.inner.reset_locked(&mut w, name, None)?;
                    tracing::warn!(
                        filter = name,
                        old_key = %old.0.join(","),
                        old_value = %old.1.join(","),
                        key = %new.0.join(","),
                        value = %new.1.join(","),
                        hosts_reset,
                        "anomaly definition changed: starting a fresh baseline"
                    );
                    changed = Some(DefinitionChange {
                        filter: name.to_string(),
                        old,
                        new: new.clone(),
                        hosts_reset,
                    });
                }
                store::put_def(&w.db, name, &new.0, &new.1)?;
                w.defs.insert(name.to_string(), new);
            }
        }
        let mut st = lock(&self.inner.state);
        let rt = FilterRt {
            name: name.into(),
            spec: spec.clone(),
            learning,
            forget_hours,
        };
        let id = match st.filters.iter().position(|f| &*f.name == name) {
            Some(i) => {
                st.filters[i] = rt;
                i
            }
            None => {
                st.filters.push(rt);
                st.filters.len() - 1
            }
        };
        Ok(Registered {
            id: FilterId(id as u32),
            definition_changed: changed,
        })
    }

    /// Judges one event and records its pair. In memory only; never waits for the disk.
    ///
    /// `key` may be empty (one-dimensional filter); `event_time` `None` means "use the
    /// arrival time". Panics if `filter` did not come from this store's [`Baselines::filter`].
    pub fn check(
        &self,
        filter: FilterId,
        host: &str,
        key: &[&str],
        value: &[&str],
        event_time: Option<Timestamp>,
    ) -> Verdict {
        let t = secs(event_time.unwrap_or_else(Timestamp::now));
        lock(&self.inner.state).check(filter, host, key, value, t)
    }

    /// Whether the pair is in the baseline (ignores forgetting). Changes nothing.
    pub fn contains(&self, filter: FilterId, host: &str, key: &[&str], value: &[&str]) -> bool {
        let st = lock(&self.inner.state);
        let fh = hash::host_fp(&st.filters[filter.0 as usize].name, host);
        st.set
            .find(hash::pair_fp(
                hash::scope_fp(fh, key),
                hash::value_fp(value),
            ))
            .is_some()
    }

    /// Commits the pending batch durably (one fsynced transaction). Called by the
    /// background flusher; call it yourself on a checkpoint tick if it is off.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.flush(false)
    }

    /// Stops the flusher, commits what is pending and writes the snapshot for a fast open.
    pub fn close(mut self) -> Result<(), Error> {
        self.stop_flusher();
        self.inner.flush(true)
    }

    fn stop_flusher(&mut self) {
        *lock(&self.inner.stop) = true;
        self.inner.wake.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }

    /// Discards the baseline of `filter` on `host` (or on every host): learning starts over
    /// at the next match. Returns how many (filter, host) baselines were discarded.
    pub fn reset(&self, filter: &str, host: Option<&str>) -> Result<usize, Error> {
        let mut w = lock(&self.inner.writer);
        self.inner.reset_locked(&mut w, filter, host)
    }

    /// Drops pairs that `forget_after` has expired (they are already judged as unknown;
    /// this reclaims memory and disk). Returns how many were dropped.
    pub fn sweep(&self) -> Result<u64, Error> {
        let mut guard = lock(&self.inner.writer);
        let w = &mut *guard;
        self.inner.flush_locked(w, false)?;
        let targets: Vec<(u64, u32, u32)> = {
            let st = lock(&self.inner.state);
            st.hosts
                .iter()
                .filter_map(|(&fh, h)| {
                    let f = st.filters.iter().find(|f| f.name == h.filter)?;
                    Some((fh, hour(h.clock), f.forget_hours?))
                })
                .collect()
        };
        let mut dropped = 0;
        for (fh, now, forget) in targets {
            let rows = store::host_pairs(&w.db, fh)?;
            let (gone, keys) = {
                let mut st = lock(&self.inner.state);
                let mut gone = Vec::new();
                let mut touched = Vec::new();
                for (fp, scope, vfp) in rows {
                    let Some(slot) = st.set.find(fp) else {
                        continue;
                    };
                    if now > st.set.seen(slot).unwrap_or(now).saturating_add(forget) {
                        st.set.remove(fp);
                        if let Some(k) = st.keys.get_mut(&scope) {
                            k.count = k.count.saturating_sub(1);
                            touched.push(scope);
                        }
                        gone.push((fh, scope, vfp, fp));
                    }
                }
                touched.dedup();
                let keys: Vec<_> = touched
                    .iter()
                    .map(|s| (fh, *s, st.keys[s].first, st.keys[s].count))
                    .collect();
                (gone, keys)
            };
            if !gone.is_empty() {
                let gen_before = w.generation;
                store::delete_pairs(&w.db, &mut w.generation, &gone, &keys)?;
                debug_assert_eq!(w.generation, gen_before + 1);
                w.changes_since_snapshot =
                    w.changes_since_snapshot.saturating_add(gone.len() as u64);
                dropped += gone.len() as u64;
            }
        }
        Ok(dropped)
    }

    /// Rewrites the database file without the pages copy-on-write has freed (they are
    /// otherwise kept for reuse). Slow on big stores: an administrative operation, never
    /// needed for correctness. Checks keep running meanwhile; flushes wait.
    pub fn compact(&self) -> Result<(), Error> {
        let mut w = lock(&self.inner.writer);
        self.inner.flush_locked(&mut w, false)?;
        w.db.compact().map_err(|e| Error::Db(e.into()))?;
        Ok(())
    }

    /// Explains one key of a filter on a host: learning start and end, known values and
    /// when each was first seen. Flushes first, so it reflects every check so far.
    pub fn explain(&self, filter: &str, host: &str, key: &[&str]) -> Result<Explanation, Error> {
        self.flush()?;
        let (per_key, learning) = {
            let st = lock(&self.inner.state);
            let f = st
                .filters
                .iter()
                .find(|f| &*f.name == filter)
                .ok_or_else(|| Error::UnknownFilter(filter.into()))?;
            (f.spec.learn_per_key, f.learning)
        };
        let fh = hash::host_fp(filter, host);
        let scope = hash::scope_fp(fh, key);
        let w = lock(&self.inner.writer);
        let txn = w.db.begin_read()?;
        let host_start = match txn.open_table(store::HOSTS)?.get(fh)? {
            Some(v) => Some(store::decode_host(v.value())?.0),
            None => None,
        };
        let key_first = txn
            .open_table(store::KEYS)?
            .get((fh, scope))?
            .map(|v| v.value().0);
        let last = txn.open_table(store::LAST_SEEN)?;
        let mut values = Vec::new();
        for row in txn
            .open_table(store::PAIRS)?
            .range((fh, scope, 0)..=(fh, scope, u64::MAX))?
        {
            let (k, v) = row?;
            let (first, value) = store::decode_pair(v.value())?;
            let seen = last.get(k.value())?.map(|l| ts(l.value().max(first)));
            let last_seen = if self.inner.options.forgetting {
                Some(seen.unwrap_or(ts(first)))
            } else {
                None
            };
            values.push(ValueInfo {
                value,
                first_seen: ts(first),
                last_seen,
            });
        }
        values.sort_by(|a, b| (a.first_seen, &a.value).cmp(&(b.first_seen, &b.value)));
        let start = if per_key { key_first } else { host_start };
        Ok(Explanation {
            filter: filter.into(),
            host: host.into(),
            key: key.iter().map(|k| k.to_string()).collect(),
            learn_per_key: per_key,
            learning_started: start.map(ts),
            learning_ends: start.map(|s| ts(s.saturating_add(learning))),
            key_first_seen: key_first.map(ts),
            values,
        })
    }

    /// The key fields of a registered filter, in order (`None`: not registered), so a
    /// caller can build the key of an event for [`Baselines::explain`].
    pub fn key_fields(&self, filter: &str) -> Option<Vec<String>> {
        let st = lock(&self.inner.state);
        st.filters
            .iter()
            .find(|f| &*f.name == filter)
            .map(|f| f.spec.key.clone())
    }

    /// Every (filter, host) baseline with its learning period and sizes. Flushes first.
    pub fn list(&self) -> Result<Vec<HostSummary>, Error> {
        self.flush()?;
        let learning: std::collections::HashMap<String, i64> = {
            let st = lock(&self.inner.state);
            st.filters
                .iter()
                .map(|f| (f.name.to_string(), f.learning))
                .collect()
        };
        let w = lock(&self.inner.writer);
        let txn = w.db.begin_read()?;
        let keys = txn.open_table(store::KEYS)?;
        let mut out = Vec::new();
        for row in txn.open_table(store::HOSTS)?.iter()? {
            let (k, v) = row?;
            let fh = k.value();
            let (start, clock, filter, host) = store::decode_host(v.value())?;
            let (mut nkeys, mut pairs) = (0, 0);
            for kr in keys.range((fh, 0)..=(fh, u64::MAX))? {
                nkeys += 1;
                pairs += u64::from(kr?.1.value().1);
            }
            let learning_ends = learning.get(&filter).map(|l| ts(start.saturating_add(*l)));
            out.push(HostSummary {
                filter,
                host,
                learning_started: ts(start),
                learning_ends,
                clock: ts(clock),
                keys: nkeys,
                pairs,
            });
        }
        out.sort_by(|a, b| (&a.filter, &a.host).cmp(&(&b.filter, &b.host)));
        Ok(out)
    }

    /// Counts and memory use (cheap: no disk access).
    pub fn stats(&self) -> Stats {
        let generation = lock(&self.inner.writer).generation;
        let st = lock(&self.inner.state);
        Stats {
            pairs: st.set.len() as u64,
            keys: st.keys.len() as u64,
            hosts: st.hosts.len() as u64,
            memory_bytes: st.memory_bytes() as u64,
            pending_pairs: st.pending.pairs.len() as u64,
            generation,
            opened_from_snapshot: self.inner.opened_from_snapshot,
        }
    }

    /// Writes every baseline as JSON lines (format in `docs/anomaly.md`). Flushes first.
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, Error> {
        self.flush()?;
        let w = lock(&self.inner.writer);
        export::export(&w.db, self.inner.options.forgetting, out)
    }

    /// Merges baselines written by [`Baselines::export`]: unknown hosts, keys and pairs are
    /// added (earliest first-seen and learning start win, the latest clock wins). A filter
    /// whose stored definition differs from the file's is refused. Returns pairs added.
    pub fn import(&self, input: &mut dyn std::io::BufRead) -> Result<u64, Error> {
        let mut w = lock(&self.inner.writer);
        let n = export::import(&self.inner, &mut w, input)?;
        self.inner.flush_locked(&mut w, false)?;
        Ok(n)
    }
}

impl Drop for Baselines {
    /// Like [`Baselines::close`], logging instead of returning an error.
    fn drop(&mut self) {
        self.stop_flusher();
        if let Err(e) = self.inner.flush(true) {
            tracing::error!("anomaly baseline: final flush failed: {e}");
        }
    }
}

fn write_snapshot(w: &mut Writer, set: &fpset::FpSet) -> Result<(), Error> {
    w.snapshot_generation = None;
    snapshot::write(&w.snap, w.generation, set).map_err(|source| Error::Io {
        path: w.snap.clone(),
        source,
    })?;
    w.snapshot_generation = Some(w.generation);
    store::prune_deltas(&w.db, w.generation)?;
    w.changes_since_snapshot = 0;
    Ok(())
}

impl Inner {
    fn flush(&self, final_snapshot: bool) -> Result<(), Error> {
        let mut w = lock(&self.writer);
        self.flush_locked(&mut w, final_snapshot)
    }

    /// Takes the pending batch, commits it, and writes a snapshot when one is due.
    fn flush_locked(&self, w: &mut Writer, final_snapshot: bool) -> Result<(), Error> {
        let (batch, due, copy) = {
            let mut st = lock(&self.state);
            let batch = gather(&mut st);
            let changes = w
                .changes_since_snapshot
                .saturating_add((batch.pairs.len() + batch.touches.len()) as u64);
            let due = changes
                >= self
                    .options
                    .snapshot_min_changes
                    .max(st.set.len() as u64 / 4)
                || (final_snapshot && changes > 0);
            // With a good snapshot on disk the next one is built from it and the delta rows,
            // off this lock; only without one is the table copied here.
            let copy = (due && w.snapshot_generation.is_none()).then(|| st.set.clone());
            (batch, due, copy)
        };
        let batch = match w.failed.take() {
            Some(mut f) => {
                f.append(batch);
                f
            }
            None => batch,
        };
        if !batch.is_empty() {
            match store::commit(&w.db, &mut w.generation, &batch, &[]) {
                Ok(n) => w.changes_since_snapshot = w.changes_since_snapshot.saturating_add(n),
                Err(e) => {
                    w.failed = Some(batch);
                    return Err(e);
                }
            }
        }
        if let Some(set) = copy {
            write_snapshot(w, &set)?;
        } else if due {
            let txn = w.db.begin_read()?;
            match store::snapshot_plus_deltas(&txn, &w.snap, self.options.forgetting, w.generation)?
            {
                Some((set, _)) => {
                    drop(txn);
                    write_snapshot(w, &set)?;
                }
                // The next flush that finds a snapshot due copies the table instead.
                None => w.snapshot_generation = None,
            }
        }
        Ok(())
    }

    /// Discards the baselines of `filter` on `host` (or all hosts). Caller holds the writer.
    fn reset_locked(
        &self,
        w: &mut Writer,
        filter: &str,
        host: Option<&str>,
    ) -> Result<usize, Error> {
        self.flush_locked(w, false)?;
        let fhs: Vec<u64> = lock(&self.state)
            .hosts
            .iter()
            .filter(|(_, h)| &*h.filter == filter && host.is_none_or(|x| &*h.host == x))
            .map(|(fh, _)| *fh)
            .collect();
        if fhs.is_empty() {
            return Ok(0);
        }
        let mut removed = Vec::new();
        let mut scopes = Vec::new();
        for &fh in &fhs {
            for (fp, scope, _) in store::host_pairs(&w.db, fh)? {
                removed.push(fp);
                scopes.push(scope);
            }
            scopes.extend(export::host_scopes(&w.db, fh)?);
        }
        {
            let mut st = lock(&self.state);
            let p = &mut st.pending;
            let mut late = Vec::new();
            p.pairs.retain(|x| {
                let keep = !fhs.contains(&x.fh);
                if !keep {
                    late.push(x.fp);
                }
                keep
            });
            p.touches.retain(|x| !fhs.contains(&x.fh));
            p.keys.retain(|x| {
                let keep = !fhs.contains(&x.0);
                if !keep {
                    scopes.push(x.1);
                }
                keep
            });
            p.key_names.retain(|x| !fhs.contains(&x.0));
            p.hosts.retain(|x| !fhs.contains(x));
            for fp in removed.iter().chain(&late) {
                st.set.remove(*fp);
            }
            for s in &scopes {
                st.keys.remove(s);
            }
            for fh in &fhs {
                st.hosts.remove(fh);
            }
        }
        store::delete_hosts(&w.db, &mut w.generation, &fhs, &removed)?;
        w.changes_since_snapshot = w
            .changes_since_snapshot
            .saturating_add(removed.len() as u64);
        Ok(fhs.len())
    }
}

/// Moves the pending changes into a batch (under the state lock).
fn gather(st: &mut State) -> Batch {
    let p = std::mem::take(&mut st.pending);
    let mut b = Batch {
        key_names: p.key_names,
        pairs: p.pairs,
        touches: p.touches,
        ..Batch::default()
    };
    for fh in p.hosts {
        if let Some(h) = st.hosts.get_mut(&fh) {
            h.dirty = false;
            b.hosts.push(HostRow {
                fh,
                filter: h.filter.clone(),
                host: h.host.clone(),
                start: h.start,
                clock: h.clock,
            });
        }
    }
    for (fh, scope) in p.keys {
        if let Some(k) = st.keys.get_mut(&scope) {
            k.dirty = false;
            b.keys.push((fh, scope, k.first, k.count));
        }
    }
    b
}
