//! The hot-path set of pair fingerprints: open addressing, linear probing, 8 bytes per
//! slot (plus 4 for the last-seen hour when forgetting is on), grown at 3/4 load.
//! Removal shifts followers back, so there are no tombstones. The raw slot array is what
//! the snapshot file stores, so loading it needs no re-insertion.

/// An open-addressing set of non-zero `u64` fingerprints with an optional `u32` per entry.
#[derive(Clone)]
pub(crate) struct FpSet {
    slots: Vec<u64>,
    seen: Option<Vec<u32>>,
    len: usize,
}

const MIN_SLOTS: usize = 1024;

impl FpSet {
    /// An empty set; `with_seen` keeps a last-seen hour per entry.
    pub(crate) fn new(with_seen: bool) -> FpSet {
        FpSet::with_capacity(with_seen, 0)
    }

    /// An empty set that holds `n` entries before it first grows.
    pub(crate) fn with_capacity(with_seen: bool, n: usize) -> FpSet {
        let slots = (n.saturating_mul(4) / 3 + 1)
            .next_power_of_two()
            .max(MIN_SLOTS);
        FpSet {
            slots: vec![0; slots],
            seen: with_seen.then(|| vec![0; slots]),
            len: 0,
        }
    }

    /// Grows now (not on a later insert) so that `n` entries fit.
    pub(crate) fn reserve(&mut self, n: usize) {
        while n.saturating_mul(4) > self.slots.len().saturating_mul(3) {
            self.grow();
        }
    }

    /// Rebuilds a set from its raw arrays (as written by [`FpSet::raw`]); `None` if the
    /// arrays are not a valid table.
    pub(crate) fn from_raw(slots: Vec<u64>, seen: Option<Vec<u32>>) -> Option<FpSet> {
        if !slots.len().is_power_of_two() || slots.len() < MIN_SLOTS {
            return None;
        }
        if seen.as_ref().is_some_and(|s| s.len() != slots.len()) {
            return None;
        }
        let len = slots.iter().filter(|&&s| s != 0).count();
        Some(FpSet { slots, seen, len })
    }

    /// The raw arrays, for the snapshot file.
    pub(crate) fn raw(&self) -> (&[u64], Option<&[u32]>) {
        (&self.slots, self.seen.as_deref())
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn has_seen(&self) -> bool {
        self.seen.is_some()
    }

    /// Bytes of memory the arrays take.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.slots.len() * (8 + if self.seen.is_some() { 4 } else { 0 })
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `fp`, if present.
    #[inline]
    pub(crate) fn find(&self, fp: u64) -> Option<usize> {
        let mask = self.mask();
        let mut i = fp as usize & mask;
        loop {
            let s = self.slots[i];
            if s == fp {
                return Some(i);
            }
            if s == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn seen(&self, slot: usize) -> Option<u32> {
        self.seen.as_ref().map(|s| s[slot])
    }

    pub(crate) fn set_seen(&mut self, slot: usize, hour: u32) {
        if let Some(s) = self.seen.as_mut() {
            s[slot] = hour;
        }
    }

    /// Inserts `fp` (or updates its hour); true if it was not present.
    pub(crate) fn insert(&mut self, fp: u64, hour: u32) -> bool {
        debug_assert!(fp != 0);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = fp as usize & mask;
        loop {
            let s = self.slots[i];
            if s == fp {
                self.set_seen(i, hour);
                return false;
            }
            if s == 0 {
                self.slots[i] = fp;
                self.set_seen(i, hour);
                self.len += 1;
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes `fp`; true if it was present.
    pub(crate) fn remove(&mut self, fp: u64) -> bool {
        let Some(mut i) = self.find(fp) else {
            return false;
        };
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = s as usize & mask;
            // The entry at j may move to i if its home is not cyclically within (i, j].
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.slots[i] = s;
                if let Some(seen) = self.seen.as_mut() {
                    seen[i] = seen[j];
                }
                i = j;
            }
        }
        self.slots[i] = 0;
        self.len -= 1;
        true
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![0; n]);
        let old_seen = self.seen.as_mut().map(|s| std::mem::replace(s, vec![0; n]));
        self.len = 0;
        for (i, fp) in old.into_iter().enumerate() {
            if fp != 0 {
                let h = old_seen.as_ref().map_or(0, |s| s[i]);
                self.insert(fp, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_with_collisions_and_growth() {
        let mut s = FpSet::new(true);
        // Many values sharing low bits force long probe chains and wrap-around.
        let fps: Vec<u64> = (1..5000u64).map(|i| (i << 20) | 1023).collect();
        for (n, &fp) in fps.iter().enumerate() {
            assert!(s.insert(fp, n as u32));
        }
        assert_eq!(s.len(), fps.len());
        assert!(!s.insert(fps[0], 7));
        for (n, &fp) in fps.iter().enumerate().skip(1) {
            assert_eq!(s.seen(s.find(fp).unwrap()), Some(n as u32));
        }
        for &fp in fps.iter().step_by(2) {
            assert!(s.remove(fp));
        }
        assert!(!s.remove(fps[0]));
        for (n, &fp) in fps.iter().enumerate() {
            assert_eq!(s.find(fp).is_some(), n % 2 == 1, "fp {n}");
        }
        let (slots, seen) = s.raw();
        let mut sized = FpSet::with_capacity(false, 3000);
        let before = sized.memory_bytes();
        (1..=3000u64).for_each(|i| {
            sized.insert(i, 0);
        });
        assert_eq!(
            sized.memory_bytes(),
            before,
            "no growth below the capacity asked for"
        );
        sized.reserve(10_000);
        assert!(sized.memory_bytes() >= 10_000 * 8 * 4 / 3);
        assert!((1..=3000u64).all(|i| sized.find(i).is_some()));
        let back = FpSet::from_raw(slots.to_vec(), seen.map(<[u32]>::to_vec)).unwrap();
        assert_eq!(back.len(), s.len());
        assert!(back.find(fps[1]).is_some());
    }
}
