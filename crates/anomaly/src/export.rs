//! `export` / `import`: the baselines as JSON lines, one record per line, in this order:
//!
//! ```text
//! {"kind":"baseline","format":1}
//! {"kind":"filter","filter":"rdp","key":["TargetUserName"],"value":["IpAddress"]}
//! {"kind":"host","filter":"rdp","host":"ws1","learning_started":"2026-03-01T10:00:00Z","clock":"2026-03-20T08:00:00Z"}
//! {"kind":"key","filter":"rdp","host":"ws1","key":["alice"],"first_seen":"2026-03-01T10:00:00Z"}
//! {"kind":"pair","filter":"rdp","host":"ws1","key":["alice"],"value":["192.0.2.7"],"first_seen":"2026-03-01T10:00:00Z"}
//! ```
//!
//! Times are RFC 3339 UTC, whole seconds. `pair` lines carry `"last_seen"` when the store
//! tracks it. Strings are the event's own; fingerprints are recomputed on import, so the
//! file is independent of the hash seeds.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use jiff::Timestamp;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::state::{HostRec, KeyRec, NewPair, Touch, hour, secs, ts};
use crate::{Error, Inner, Writer, hash, lock, store};

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Baseline {
        format: u64,
    },
    Filter {
        filter: String,
        key: Vec<String>,
        value: Vec<String>,
    },
    Host {
        filter: String,
        host: String,
        learning_started: Timestamp,
        clock: Timestamp,
    },
    Key {
        filter: String,
        host: String,
        key: Vec<String>,
        first_seen: Timestamp,
    },
    Pair {
        filter: String,
        host: String,
        key: Vec<String>,
        value: Vec<String>,
        first_seen: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<Timestamp>,
    },
}

/// The scopes (keys) stored for one (filter, host).
pub(crate) fn host_scopes(db: &Database, fh: u64) -> Result<Vec<u64>, Error> {
    let txn = db.begin_read()?;
    let mut out = Vec::new();
    for row in txn
        .open_table(store::KEYS)?
        .range((fh, 0)..=(fh, u64::MAX))?
    {
        out.push(row?.0.value().1);
    }
    Ok(out)
}

fn put(out: &mut dyn Write, line: &Line) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: "(export)".into(),
        source,
    };
    serde_json::to_writer(&mut *out, line).map_err(|e| io(e.into()))?;
    out.write_all(b"\n").map_err(io)
}

pub(crate) fn export(db: &Database, forgetting: bool, out: &mut dyn Write) -> Result<u64, Error> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let txn = db.begin_read()?;
    put(
        &mut out,
        &Line::Baseline {
            format: store::FORMAT,
        },
    )?;
    for row in txn.open_table(store::FILTERS)?.iter()? {
        let (k, v) = row?;
        let (key, value) = store::parse_def(v.value())?;
        put(
            &mut out,
            &Line::Filter {
                filter: k.value().into(),
                key,
                value,
            },
        )?;
    }
    let mut hosts = HashMap::new();
    for row in txn.open_table(store::HOSTS)?.iter()? {
        let (k, v) = row?;
        let (start, clock, filter, host) = store::decode_host(v.value())?;
        let line = Line::Host {
            filter,
            host,
            learning_started: ts(start),
            clock: ts(clock),
        };
        put(&mut out, &line)?;
        let Line::Host { filter, host, .. } = line else {
            unreachable!()
        };
        hosts.insert(k.value(), (filter, host));
    }
    let names = txn.open_table(store::KEY_NAMES)?;
    let mut keys = HashMap::new();
    for row in txn.open_table(store::KEYS)?.iter()? {
        let (k, v) = row?;
        let (fh, scope) = k.value();
        let Some((filter, host)) = hosts.get(&fh) else {
            continue;
        };
        let key = match names.get((fh, scope))? {
            Some(n) => hash::decode(n.value()).ok_or(Error::Corrupt("key_names row"))?,
            None => return Err(Error::Corrupt("key without key_names row")),
        };
        let line = Line::Key {
            filter: filter.clone(),
            host: host.clone(),
            key,
            first_seen: ts(v.value().0),
        };
        put(&mut out, &line)?;
        let Line::Key { key, .. } = line else {
            unreachable!()
        };
        keys.insert(scope, key);
    }
    let last = txn.open_table(store::LAST_SEEN)?;
    let mut n = 0;
    for row in txn.open_table(store::PAIRS)?.iter()? {
        let (k, v) = row?;
        let (fh, scope, _) = k.value();
        let (Some((filter, host)), Some(key)) = (hosts.get(&fh), keys.get(&scope)) else {
            continue;
        };
        let (first, value) = store::decode_pair(v.value())?;
        let last_seen = if forgetting {
            Some(ts(last
                .get(k.value())?
                .map_or(first, |l| l.value().max(first))))
        } else {
            None
        };
        let line = Line::Pair {
            filter: filter.clone(),
            host: host.clone(),
            key: key.clone(),
            value,
            first_seen: ts(first),
            last_seen,
        };
        put(&mut out, &line)?;
        n += 1;
    }
    out.flush().map_err(|source| Error::Io {
        path: "(export)".into(),
        source,
    })?;
    Ok(n)
}

pub(crate) fn import(inner: &Inner, w: &mut Writer, input: &mut dyn BufRead) -> Result<u64, Error> {
    let mut added = 0;
    for (i, line) in input.lines().enumerate() {
        let err = |reason: String| Error::Import {
            line: i + 1,
            reason,
        };
        let line = line.map_err(|e| err(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
        match parsed {
            Line::Baseline { format } if format == store::FORMAT => {}
            Line::Baseline { format } => {
                return Err(err(format!("format {format} is not supported")));
            }
            Line::Filter { filter, key, value } => match w.defs.get(&filter) {
                Some(d) if *d == (key.clone(), value.clone()) => {}
                Some(d) => {
                    return Err(err(format!(
                        "filter {filter:?} is defined here with key {:?} value {:?}, the file has key {key:?} value {value:?}",
                        d.0, d.1
                    )));
                }
                None => {
                    store::put_def(&w.db, &filter, &key, &value)?;
                    w.defs.insert(filter, (key, value));
                }
            },
            Line::Host {
                filter,
                host,
                learning_started,
                clock,
            } => {
                let mut st = lock(&inner.state);
                let (start, clock) = (secs(learning_started), secs(clock));
                let fh = hash::host_fp(&filter, &host);
                let st = &mut *st;
                let rec = st.hosts.entry(fh).or_insert_with(|| HostRec {
                    filter: filter.as_str().into(),
                    host: host.as_str().into(),
                    start,
                    clock,
                    dirty: false,
                });
                rec.start = rec.start.min(start);
                rec.clock = rec.clock.max(clock);
                if !rec.dirty {
                    rec.dirty = true;
                    st.pending.hosts.push(fh);
                }
            }
            Line::Key {
                filter,
                host,
                key,
                first_seen,
            } => {
                let mut st = lock(&inner.state);
                ensure_key(&mut st, &filter, &host, &key, secs(first_seen));
            }
            Line::Pair {
                filter,
                host,
                key,
                value,
                first_seen,
                last_seen,
            } => {
                let mut st = lock(&inner.state);
                let first = secs(first_seen);
                let (fh, scope) = ensure_key(&mut st, &filter, &host, &key, first);
                let vfp = hash::value_fp(&value);
                let fp = hash::pair_fp(scope, vfp);
                if st.set.find(fp).is_some() {
                    continue;
                }
                let last = last_seen.map_or(first, secs).max(first);
                st.set.insert(fp, hour(last));
                let k = st.keys.get_mut(&scope).expect("ensured");
                k.count += 1;
                if !k.dirty {
                    k.dirty = true;
                    st.pending.keys.push((fh, scope));
                }
                st.pending.pairs.push(NewPair {
                    fh,
                    scope,
                    vfp,
                    fp,
                    time: first,
                    value: hash::encode(&value).into(),
                });
                if last > first && st.set.has_seen() {
                    st.pending.touches.push(Touch {
                        fh,
                        scope,
                        vfp,
                        fp,
                        time: last,
                    });
                }
                added += 1;
            }
        }
    }
    Ok(added)
}

/// Makes sure the host and key exist (created with `first` as their start).
fn ensure_key(
    st: &mut crate::State,
    filter: &str,
    host: &str,
    key: &[String],
    first: i64,
) -> (u64, u64) {
    let fh = hash::host_fp(filter, host);
    if let std::collections::hash_map::Entry::Vacant(e) = st.hosts.entry(fh) {
        e.insert(HostRec {
            filter: filter.into(),
            host: host.into(),
            start: first,
            clock: first,
            dirty: true,
        });
        st.pending.hosts.push(fh);
    }
    let scope = hash::scope_fp(fh, key);
    match st.keys.get_mut(&scope) {
        Some(k) => {
            if first < k.first {
                k.first = first;
                if !k.dirty {
                    k.dirty = true;
                    st.pending.keys.push((fh, scope));
                }
            }
        }
        None => {
            st.keys.insert(
                scope,
                KeyRec {
                    first,
                    count: 0,
                    dirty: true,
                },
            );
            st.pending.keys.push((fh, scope));
            st.pending
                .key_names
                .push((fh, scope, hash::encode(key).into()));
        }
    }
    (fh, scope)
}
