//! In-memory state behind one mutex: registered filters, learning clocks per (filter,
//! host), key records, the pair set, and the pending batch the next flush commits.
//! [`State::check`] is the hot path: hashing, two hash-map lookups and one probe of the
//! pair set; it never touches the disk.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use jiff::Timestamp;

use crate::fpset::FpSet;
use crate::hash;
use crate::spec::{AnomalySpec, FilterId, Verdict};

/// Keys of these maps are already uniform 64-bit hashes: use them as they are.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// A registered filter.
pub(crate) struct FilterRt {
    pub(crate) name: Arc<str>,
    pub(crate) spec: AnomalySpec,
    pub(crate) learning: i64,
    pub(crate) forget_hours: Option<u32>,
}

/// One (filter, host) learning clock.
pub(crate) struct HostRec {
    pub(crate) filter: Arc<str>,
    pub(crate) host: Box<str>,
    /// Event time (seconds) of the filter's first match on this host.
    pub(crate) start: i64,
    /// Highest event time (seconds) seen for this (filter, host).
    pub(crate) clock: i64,
    pub(crate) dirty: bool,
}

/// One key: when it was first seen and how many values it holds.
#[derive(Clone, Copy)]
pub(crate) struct KeyRec {
    pub(crate) first: i64,
    pub(crate) count: u32,
    pub(crate) dirty: bool,
}

/// A pair recorded since the last flush.
pub(crate) struct NewPair {
    pub(crate) fh: u64,
    pub(crate) scope: u64,
    pub(crate) vfp: u64,
    pub(crate) fp: u64,
    pub(crate) time: i64,
    pub(crate) value: Box<[u8]>,
}

/// A pair seen in a later hour than its stored last-seen (forgetting on).
pub(crate) struct Touch {
    pub(crate) fh: u64,
    pub(crate) scope: u64,
    pub(crate) vfp: u64,
    pub(crate) fp: u64,
    pub(crate) time: i64,
}

/// Everything changed since the last flush.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) hosts: Vec<u64>,
    pub(crate) keys: Vec<(u64, u64)>,
    pub(crate) key_names: Vec<(u64, u64, Box<[u8]>)>,
    pub(crate) pairs: Vec<NewPair>,
    pub(crate) touches: Vec<Touch>,
}

impl Pending {
    fn memory_bytes(&self) -> usize {
        self.pairs.iter().map(|p| 56 + p.value.len()).sum::<usize>()
            + self.key_names.iter().map(|k| 32 + k.2.len()).sum::<usize>()
            + self.touches.len() * 40
            + self.keys.len() * 16
            + self.hosts.len() * 8
    }
}

/// All in-memory state.
pub(crate) struct State {
    pub(crate) filters: Vec<FilterRt>,
    pub(crate) hosts: IdMap<HostRec>,
    pub(crate) keys: IdMap<KeyRec>,
    pub(crate) set: FpSet,
    pub(crate) pending: Pending,
}

pub(crate) fn secs(t: Timestamp) -> i64 {
    t.as_second()
}

pub(crate) fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second()))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(crate) fn hour(s: i64) -> u32 {
    (s.max(0) / 3600).min(i64::from(u32::MAX)) as u32
}

fn plus(s: i64, d: i64) -> i64 {
    s.saturating_add(d)
}

impl State {
    pub(crate) fn new(forgetting: bool) -> State {
        State {
            filters: Vec::new(),
            hosts: IdMap::default(),
            keys: IdMap::default(),
            set: FpSet::new(forgetting),
            pending: Pending::default(),
        }
    }

    /// The hot path. `t` is the event time in seconds (already defaulted to arrival time).
    pub(crate) fn check(
        &mut self,
        f: FilterId,
        host: &str,
        key: &[&str],
        value: &[&str],
        t: i64,
    ) -> Verdict {
        let filter = &self.filters[f.0 as usize];
        let (learning, per_key, max, forget) = (
            filter.learning,
            filter.spec.learn_per_key,
            filter.spec.max_values_per_key,
            filter.forget_hours,
        );
        let fh = hash::host_fp(&filter.name, host);
        let scope = hash::scope_fp(fh, key);
        let vfp = hash::value_fp(value);
        let fp = hash::pair_fp(scope, vfp);
        // Probe first: the likely cache miss overlaps with the map lookups below. Nothing
        // changes the set before `found` is used.
        let found = self.set.find(fp);

        let rec = match self.hosts.get_mut(&fh) {
            Some(r) => r,
            None => {
                let name = filter.name.clone();
                self.pending.hosts.push(fh);
                self.hosts.entry(fh).or_insert(HostRec {
                    filter: name,
                    host: host.into(),
                    start: t,
                    clock: t,
                    dirty: true,
                })
            }
        };
        if t > rec.clock {
            rec.clock = t;
            if !rec.dirty {
                rec.dirty = true;
                self.pending.hosts.push(fh);
            }
        }
        let clock = rec.clock;
        let host_until = plus(rec.start, learning);

        let Some(k) = self.keys.get_mut(&scope) else {
            self.keys.insert(
                scope,
                KeyRec {
                    first: clock,
                    count: 0,
                    dirty: true,
                },
            );
            self.pending.keys.push((fh, scope));
            self.pending
                .key_names
                .push((fh, scope, hash::encode(key).into()));
            self.record(fh, scope, vfp, fp, clock, value, max);
            let until = if per_key {
                plus(clock, learning)
            } else {
                host_until
            };
            return if clock < until {
                Verdict::Learning { until: ts(until) }
            } else {
                Verdict::NewKey {
                    learning_ended: ts(host_until),
                }
            };
        };
        let until = if per_key {
            plus(k.first, learning)
        } else {
            host_until
        };
        let learning_now = clock < until;
        if let Some(slot) = found {
            let h = hour(clock);
            let last = self.set.seen(slot).unwrap_or(h);
            let expired = forget.is_some_and(|fo| h > last.saturating_add(fo));
            if !expired {
                if forget.is_some() && h > last {
                    self.set.set_seen(slot, h);
                    self.pending.touches.push(Touch {
                        fh,
                        scope,
                        vfp,
                        fp,
                        time: clock,
                    });
                }
                return if learning_now {
                    Verdict::Learning { until: ts(until) }
                } else {
                    Verdict::Known
                };
            }
            // Forgotten: judged as new, re-recorded (its first-seen restarts).
            let (first, known) = (k.first, k.count);
            self.set.set_seen(slot, h);
            self.pending.pairs.push(NewPair {
                fh,
                scope,
                vfp,
                fp,
                time: clock,
                value: hash::encode(value).into(),
            });
            return if learning_now {
                Verdict::Learning { until: ts(until) }
            } else {
                Verdict::NewValue {
                    key_first_seen: ts(first),
                    values_known: known.saturating_sub(1),
                    stored: true,
                }
            };
        }
        let (first, known) = (k.first, k.count);
        let stored = self.record(fh, scope, vfp, fp, clock, value, max);
        if learning_now {
            Verdict::Learning { until: ts(until) }
        } else {
            Verdict::NewValue {
                key_first_seen: ts(first),
                values_known: known,
                stored,
            }
        }
    }

    /// Adds a new pair to the set and the pending batch unless its key is full.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        fh: u64,
        scope: u64,
        vfp: u64,
        fp: u64,
        time: i64,
        value: &[&str],
        max: u32,
    ) -> bool {
        let Some(k) = self.keys.get_mut(&scope) else {
            return false;
        };
        if k.count >= max {
            return false;
        }
        k.count += 1;
        if !k.dirty {
            k.dirty = true;
            self.pending.keys.push((fh, scope));
        }
        self.set.insert(fp, hour(time));
        self.pending.pairs.push(NewPair {
            fh,
            scope,
            vfp,
            fp,
            time,
            value: hash::encode(value).into(),
        });
        true
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        // hashbrown: key + value + 1 control byte per bucket, buckets ≈ capacity * 8/7.
        let hosts = self.hosts.capacity() * 8 / 7 * (8 + std::mem::size_of::<HostRec>() + 1)
            + self
                .hosts
                .values()
                .map(|h| h.host.len() + 16)
                .sum::<usize>();
        let keys = self.keys.capacity() * 8 / 7 * (8 + std::mem::size_of::<KeyRec>() + 1);
        self.set.memory_bytes() + hosts + keys + self.pending.memory_bytes()
    }
}
