//! The snapshot file `pairs.snap`: the raw slot array of the pair set as of one committed
//! database generation, so a restart reads one file instead of every pair row.
//!
//! Layout (little-endian): magic `WPSNAP01`, generation u64, slot count u64, has-seen u64
//! (0/1), the slots (u64 each), the last-seen hours (u32 each) if present, then the XXH3-64
//! of everything before it. Written to `pairs.snap.tmp`, synced, renamed over the old one,
//! so a crash leaves either the old or the new file. Any mismatch means "no snapshot": the
//! set is rebuilt from the database, which is always the truth.

use std::fs::File;
use std::io::{BufWriter, Read, Write};

use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::fpset::FpSet;

const MAGIC: &[u8; 8] = b"WPSNAP01";

pub(crate) fn write(path: &Path, generation: u64, set: &FpSet) -> std::io::Result<()> {
    let tmp = path.with_extension("snap.tmp");
    let (slots, seen) = set.raw();
    {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut h = Xxh3::new();
        let mut put = |w: &mut BufWriter<File>, b: &[u8]| -> std::io::Result<()> {
            h.update(b);
            w.write_all(b)
        };
        put(&mut w, MAGIC)?;
        put(&mut w, &generation.to_le_bytes())?;
        put(&mut w, &(slots.len() as u64).to_le_bytes())?;
        put(&mut w, &u64::from(seen.is_some()).to_le_bytes())?;
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in slots.chunks(8192) {
            buf.clear();
            chunk
                .iter()
                .for_each(|s| buf.extend_from_slice(&s.to_le_bytes()));
            put(&mut w, &buf)?;
        }
        if let Some(seen) = seen {
            for chunk in seen.chunks(8192) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|s| buf.extend_from_slice(&s.to_le_bytes()));
                put(&mut w, &buf)?;
            }
        }
        let sum = h.digest();
        w.write_all(&sum.to_le_bytes())?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

#[cfg(unix)]
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) {}

/// Reads a snapshot: `(generation, set)`, or `None` if missing, damaged or of another shape.
/// Streams the file (no second copy of it in memory).
pub(crate) fn read(path: &Path, want_seen: bool) -> Option<(u64, FpSet)> {
    let file = File::open(path).ok()?;
    let total = file.metadata().ok()?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut h = Xxh3::new();
    let mut head = [0u8; 32];
    r.read_exact(&mut head).ok()?;
    h.update(&head);
    let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    if &head[..8] != MAGIC {
        return None;
    }
    let generation = word(8);
    let n = usize::try_from(word(16)).ok()?;
    let has_seen = word(24) == 1;
    let expect = 40
        + n.checked_mul(8)? as u64
        + if has_seen {
            n.checked_mul(4)? as u64
        } else {
            0
        };
    if total != expect || has_seen != want_seen {
        return None;
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut slots = Vec::with_capacity(n);
    while slots.len() < n {
        let take = ((n - slots.len()) * 8).min(buf.len());
        r.read_exact(&mut buf[..take]).ok()?;
        h.update(&buf[..take]);
        slots.extend(
            buf[..take]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8"))),
        );
    }
    let seen = if has_seen {
        let mut seen = Vec::with_capacity(n);
        while seen.len() < n {
            let take = ((n - seen.len()) * 4).min(buf.len());
            r.read_exact(&mut buf[..take]).ok()?;
            h.update(&buf[..take]);
            seen.extend(
                buf[..take]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4"))),
            );
        }
        Some(seen)
    } else {
        None
    };
    let mut sum = [0u8; 8];
    r.read_exact(&mut sum).ok()?;
    if h.digest() != u64::from_le_bytes(sum) {
        return None;
    }
    Some((generation, FpSet::from_raw(slots, seen)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pairs.snap");
        let mut s = FpSet::new(true);
        for i in 1..3000u64 {
            s.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, i as u32);
        }
        write(&p, 42, &s).unwrap();
        let (g, back) = read(&p, true).unwrap();
        assert_eq!(g, 42);
        assert_eq!(back.len(), s.len());
        assert!(read(&p, false).is_none(), "shape mismatch");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(read(&p, true).is_none(), "checksum");
    }
}
