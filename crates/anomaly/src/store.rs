//! The durable side: one redb database (`baseline.redb`) plus the snapshot file.
//!
//! Tables (all keys are fixed-seed XXH3 fingerprints, see `hash.rs`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"format"`, `"generation"` | u64 |
//! | `filters` | filter name | JSON `{"key":[…],"value":[…]}` (the definition) |
//! | `hosts` | host fp | learning start i64, clock i64 (seconds), encoded `[filter, host]` |
//! | `keys` | (host fp, scope fp) | (first seen i64, values u32) |
//! | `key_names` | (host fp, scope fp) | encoded key fields |
//! | `pairs` | (host fp, scope fp, value fp) | first seen i64, encoded value fields |
//! | `last_seen` | (host fp, scope fp, value fp) | i64 (only written with forgetting) |
//! | `deltas` | generation | pair fingerprints added/refreshed and removed in it |
//!
//! Every commit that changes the pair set increments `generation` and writes its delta row,
//! so `snapshot (generation G) + deltas G+1..=current` rebuilds the set exactly; deltas up
//! to a snapshot's generation are deleted once that snapshot is on disk.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::fpset::FpSet;
use crate::hash;
use crate::spec::Error;
use crate::state::{HostRec, KeyRec, NewPair, State, Touch, hour};

pub(crate) const FORMAT: u64 = 1;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const FILTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("filters");
pub(crate) const HOSTS: TableDefinition<u64, &[u8]> = TableDefinition::new("hosts");
pub(crate) const KEYS: TableDefinition<(u64, u64), (i64, u32)> = TableDefinition::new("keys");
pub(crate) const KEY_NAMES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("key_names");
pub(crate) const PAIRS: TableDefinition<(u64, u64, u64), &[u8]> = TableDefinition::new("pairs");
pub(crate) const LAST_SEEN: TableDefinition<(u64, u64, u64), i64> =
    TableDefinition::new("last_seen");
pub(crate) const DELTAS: TableDefinition<u64, &[u8]> = TableDefinition::new("deltas");

/// A host row, as gathered for a commit.
pub(crate) struct HostRow {
    pub(crate) fh: u64,
    pub(crate) filter: Arc<str>,
    pub(crate) host: Box<str>,
    pub(crate) start: i64,
    pub(crate) clock: i64,
}

/// What one flush commits.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) hosts: Vec<HostRow>,
    pub(crate) keys: Vec<(u64, u64, i64, u32)>,
    pub(crate) key_names: Vec<(u64, u64, Box<[u8]>)>,
    pub(crate) pairs: Vec<NewPair>,
    pub(crate) touches: Vec<Touch>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.keys.is_empty()
            && self.pairs.is_empty()
            && self.touches.is_empty()
    }

    pub(crate) fn append(&mut self, mut later: Batch) {
        self.hosts.append(&mut later.hosts);
        self.keys.append(&mut later.keys);
        self.key_names.append(&mut later.key_names);
        self.pairs.append(&mut later.pairs);
        self.touches.append(&mut later.touches);
    }
}

pub(crate) fn host_value(filter: &str, host: &str, start: i64, clock: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + filter.len() + host.len());
    v.extend_from_slice(&start.to_le_bytes());
    v.extend_from_slice(&clock.to_le_bytes());
    hash::encode_into(&mut v, &[filter, host]);
    v
}

pub(crate) fn decode_host(v: &[u8]) -> Result<(i64, i64, String, String), Error> {
    let bad = Error::Corrupt("hosts row");
    if v.len() < 16 {
        return Err(bad);
    }
    let start = i64::from_le_bytes(v[..8].try_into().expect("8"));
    let clock = i64::from_le_bytes(v[8..16].try_into().expect("8"));
    let mut names = hash::decode(&v[16..]).ok_or(Error::Corrupt("hosts row"))?;
    if names.len() != 2 {
        return Err(bad);
    }
    let host = names.pop().expect("2");
    let filter = names.pop().expect("2");
    Ok((start, clock, filter, host))
}

pub(crate) fn decode_pair(v: &[u8]) -> Result<(i64, Vec<String>), Error> {
    if v.len() < 8 {
        return Err(Error::Corrupt("pairs row"));
    }
    let t = i64::from_le_bytes(v[..8].try_into().expect("8"));
    Ok((t, hash::decode(&v[8..]).ok_or(Error::Corrupt("pairs row"))?))
}

fn delta_value(up: &[(u64, u32)], removed: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + up.len() * 12 + removed.len() * 8);
    v.extend_from_slice(&(up.len() as u32).to_le_bytes());
    for (fp, h) in up {
        v.extend_from_slice(&fp.to_le_bytes());
        v.extend_from_slice(&h.to_le_bytes());
    }
    v.extend_from_slice(&(removed.len() as u32).to_le_bytes());
    for fp in removed {
        v.extend_from_slice(&fp.to_le_bytes());
    }
    v
}

/// Applies one delta row; returns how many fingerprints it changed.
fn apply_delta(set: &mut FpSet, v: &[u8]) -> Option<u64> {
    let n = u32::from_le_bytes(v.get(..4)?.try_into().ok()?) as usize;
    let mut at = 4;
    for _ in 0..n {
        let fp = u64::from_le_bytes(v.get(at..at + 8)?.try_into().ok()?);
        let h = u32::from_le_bytes(v.get(at + 8..at + 12)?.try_into().ok()?);
        set.insert(fp, h);
        at += 12;
    }
    let m = u32::from_le_bytes(v.get(at..at + 4)?.try_into().ok()?) as usize;
    at += 4;
    for _ in 0..m {
        set.remove(u64::from_le_bytes(v.get(at..at + 8)?.try_into().ok()?));
        at += 8;
    }
    Some((n + m) as u64)
}

/// Creates missing tables and checks the format; returns the current generation.
pub(crate) fn init(db: &Database) -> Result<u64, Error> {
    let txn = db.begin_write()?;
    let generation;
    {
        let mut meta = txn.open_table(META)?;
        let format = meta.get("format")?.map(|g| g.value());
        match format {
            None => {
                meta.insert("format", FORMAT)?;
            }
            Some(FORMAT) => {}
            Some(found) => {
                return Err(Error::Format {
                    found,
                    expected: FORMAT,
                });
            }
        }
        generation = meta.get("generation")?.map_or(0, |g| g.value());
        txn.open_table(FILTERS)?;
        txn.open_table(HOSTS)?;
        txn.open_table(KEYS)?;
        txn.open_table(KEY_NAMES)?;
        txn.open_table(PAIRS)?;
        txn.open_table(LAST_SEEN)?;
        txn.open_table(DELTAS)?;
    }
    txn.commit()?;
    Ok(generation)
}

/// Stored filter definitions: name → (key fields, value fields).
pub(crate) type Defs = HashMap<String, (Vec<String>, Vec<String>)>;

pub(crate) fn parse_def(v: &[u8]) -> Result<(Vec<String>, Vec<String>), Error> {
    #[derive(serde::Deserialize)]
    struct Def {
        key: Vec<String>,
        value: Vec<String>,
    }
    let d: Def = serde_json::from_slice(v).map_err(|_| Error::Corrupt("filters row"))?;
    Ok((d.key, d.value))
}

pub(crate) fn def_value(key: &[String], value: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "key": key, "value": value })).expect("json")
}

/// Loads definitions, clocks, keys and the pair set (from the snapshot plus deltas when
/// possible). Returns the definitions and, if the snapshot was usable, how many pair
/// changes were replayed on top of it.
pub(crate) fn load(
    db: &Database,
    st: &mut State,
    generation: u64,
    snap: &std::path::Path,
) -> Result<(Defs, Option<u64>), Error> {
    let txn = db.begin_read()?;
    let mut defs = Defs::new();
    for row in txn.open_table(FILTERS)?.iter()? {
        let (k, v) = row?;
        defs.insert(k.value().to_string(), parse_def(v.value())?);
    }
    for row in txn.open_table(HOSTS)?.iter()? {
        let (k, v) = row?;
        let (start, clock, filter, host) = decode_host(v.value())?;
        st.hosts.insert(
            k.value(),
            HostRec {
                filter: filter.into(),
                host: host.into(),
                start,
                clock,
                dirty: false,
            },
        );
    }
    let keys = txn.open_table(KEYS)?;
    st.keys.reserve(keys.len()? as usize);
    for row in keys.iter()? {
        let (k, v) = row?;
        let (first, count) = v.value();
        st.keys.insert(
            k.value().1,
            KeyRec {
                first,
                count,
                dirty: false,
            },
        );
    }
    let forgetting = st.set.has_seen();
    if let Some((set, changes)) = snapshot_plus_deltas(&txn, snap, forgetting, generation)? {
        st.set = set;
        return Ok((defs, Some(changes)));
    }
    let pairs = txn.open_table(PAIRS)?;
    let mut set = FpSet::with_capacity(forgetting, pairs.len()? as usize);
    for row in pairs.iter()? {
        let (k, v) = row?;
        let (_, scope, vfp) = k.value();
        let first = if forgetting {
            decode_pair(v.value())?.0
        } else {
            0
        };
        set.insert(hash::pair_fp(scope, vfp), hour(first));
    }
    if forgetting {
        for row in txn.open_table(LAST_SEEN)?.iter()? {
            let (k, v) = row?;
            let (_, scope, vfp) = k.value();
            if let Some(slot) = set.find(hash::pair_fp(scope, vfp)) {
                let h = hour(v.value()).max(set.seen(slot).unwrap_or(0));
                set.set_seen(slot, h);
            }
        }
    }
    st.set = set;
    Ok((defs, None))
}

/// The pair set as of `generation`: the snapshot file plus the delta rows after it, and
/// how many changes those rows held. `None` if the file is missing, damaged, of another
/// shape, or the rows after it are incomplete.
pub(crate) fn snapshot_plus_deltas(
    txn: &redb::ReadTransaction,
    snap: &std::path::Path,
    forgetting: bool,
    generation: u64,
) -> Result<Option<(FpSet, u64)>, Error> {
    let Some((g, mut set)) = crate::snapshot::read(snap, forgetting) else {
        return Ok(None);
    };
    if g > generation {
        tracing::warn!(
            "baseline snapshot is newer than the database; rebuilding the pair set from the database"
        );
        return Ok(None);
    }
    let mut expected = g + 1;
    let mut changes = 0u64;
    for row in txn.open_table(DELTAS)?.range((g + 1)..=generation)? {
        let (k, v) = row?;
        match apply_delta(&mut set, v.value()) {
            Some(n) if k.value() == expected => changes += n,
            _ => break,
        }
        expected += 1;
    }
    if expected != generation + 1 {
        tracing::warn!(
            "baseline snapshot does not match the database; rebuilding the pair set from the database"
        );
        return Ok(None);
    }
    Ok(Some((set, changes)))
}

/// Commits one batch (plus removed pair fingerprints) as generation `generation + 1`.
pub(crate) fn commit(
    db: &Database,
    generation: &mut u64,
    b: &Batch,
    removed: &[u64],
) -> Result<u64, Error> {
    let txn = db.begin_write()?;
    let mut up = Vec::with_capacity(b.pairs.len() + b.touches.len());
    {
        let mut hosts = txn.open_table(HOSTS)?;
        for h in &b.hosts {
            hosts.insert(
                h.fh,
                host_value(&h.filter, &h.host, h.start, h.clock).as_slice(),
            )?;
        }
        let mut keys = txn.open_table(KEYS)?;
        for &(fh, scope, first, count) in &b.keys {
            keys.insert((fh, scope), (first, count))?;
        }
        let mut names = txn.open_table(KEY_NAMES)?;
        for (fh, scope, n) in &b.key_names {
            names.insert((*fh, *scope), &**n)?;
        }
        let mut pairs = txn.open_table(PAIRS)?;
        let mut buf = Vec::new();
        // Key order: fewer pages touched (and copied) per commit, fuller pages on disk.
        // The sort is stable, so a pair recorded twice in one batch keeps its later row.
        let mut sorted: Vec<&NewPair> = b.pairs.iter().collect();
        sorted.sort_by_key(|p| (p.fh, p.scope, p.vfp));
        for p in sorted {
            buf.clear();
            buf.extend_from_slice(&p.time.to_le_bytes());
            buf.extend_from_slice(&p.value);
            pairs.insert((p.fh, p.scope, p.vfp), buf.as_slice())?;
            up.push((p.fp, hour(p.time)));
        }
        let mut last = txn.open_table(LAST_SEEN)?;
        for t in &b.touches {
            last.insert((t.fh, t.scope, t.vfp), t.time)?;
            up.push((t.fp, hour(t.time)));
        }
        let next = *generation + 1;
        txn.open_table(DELTAS)?
            .insert(next, delta_value(&up, removed).as_slice())?;
        txn.open_table(META)?.insert("generation", next)?;
    }
    txn.commit()?;
    *generation += 1;
    Ok(up.len() as u64 + removed.len() as u64)
}

/// Deletes delta rows up to and including `upto` (a snapshot of `upto` is on disk).
pub(crate) fn prune_deltas(db: &Database, upto: u64) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(DELTAS)?.retain_in(..=upto, |_, _| false)?;
    txn.commit()?;
    Ok(())
}

/// Every pair fingerprint, scope and value fp stored for one (filter, host).
pub(crate) fn host_pairs(db: &Database, fh: u64) -> Result<Vec<(u64, u64, u64)>, Error> {
    let txn = db.begin_read()?;
    let mut out = Vec::new();
    for row in txn
        .open_table(PAIRS)?
        .range((fh, 0, 0)..=(fh, u64::MAX, u64::MAX))?
    {
        let (k, _) = row?;
        let (_, scope, vfp) = k.value();
        out.push((hash::pair_fp(scope, vfp), scope, vfp));
    }
    Ok(out)
}

/// Deletes every row of the given (filter, host)s and records the removed fingerprints.
pub(crate) fn delete_hosts(
    db: &Database,
    generation: &mut u64,
    fhs: &[u64],
    removed: &[u64],
) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut hosts = txn.open_table(HOSTS)?;
        let mut keys = txn.open_table(KEYS)?;
        let mut names = txn.open_table(KEY_NAMES)?;
        let mut pairs = txn.open_table(PAIRS)?;
        let mut last = txn.open_table(LAST_SEEN)?;
        for &fh in fhs {
            hosts.remove(fh)?;
            keys.retain_in((fh, 0)..=(fh, u64::MAX), |_, _| false)?;
            names.retain_in((fh, 0)..=(fh, u64::MAX), |_, _| false)?;
            pairs.retain_in((fh, 0, 0)..=(fh, u64::MAX, u64::MAX), |_, _| false)?;
            last.retain_in((fh, 0, 0)..=(fh, u64::MAX, u64::MAX), |_, _| false)?;
        }
        let next = *generation + 1;
        txn.open_table(DELTAS)?
            .insert(next, delta_value(&[], removed).as_slice())?;
        txn.open_table(META)?.insert("generation", next)?;
    }
    txn.commit()?;
    *generation += 1;
    Ok(())
}

/// Deletes single pairs (forgotten ones) and rewrites their keys' counts.
pub(crate) fn delete_pairs(
    db: &Database,
    generation: &mut u64,
    gone: &[(u64, u64, u64, u64)],
    keys: &[(u64, u64, i64, u32)],
) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut pairs = txn.open_table(PAIRS)?;
        let mut last = txn.open_table(LAST_SEEN)?;
        for &(fh, scope, vfp, _) in gone {
            pairs.remove((fh, scope, vfp))?;
            last.remove((fh, scope, vfp))?;
        }
        let mut kt = txn.open_table(KEYS)?;
        for &(fh, scope, first, count) in keys {
            kt.insert((fh, scope), (first, count))?;
        }
        let removed: Vec<u64> = gone.iter().map(|g| g.3).collect();
        let next = *generation + 1;
        txn.open_table(DELTAS)?
            .insert(next, delta_value(&[], &removed).as_slice())?;
        txn.open_table(META)?.insert("generation", next)?;
    }
    txn.commit()?;
    *generation += 1;
    Ok(())
}

pub(crate) fn put_def(
    db: &Database,
    name: &str,
    key: &[String],
    value: &[String],
) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(FILTERS)?
        .insert(name, def_value(key, value).as_slice())?;
    txn.commit()?;
    Ok(())
}
