//! Choosing which filters of a plan can match an event before evaluating any of them.
//!
//! Most filters in a real rule set start with an equality on a field of few values
//! (`event_code = 5`, `event_id = 4624`, `computer in [...]`). Such a filter is *keyed*:
//! it is listed under each value it accepts, and an event reaches it only when its value
//! of that field is one of them. Filters without a key are always candidates. The
//! candidates form a bitset over the plan's positions, walked in order, so the chain's
//! order (and `stop`) is unchanged. The index only narrows: every candidate still runs
//! its whole condition.
//!
//! Fields set by regex captures are never keys, since they can change while the chain runs.

use std::collections::{HashMap, HashSet};

use watchpost_event::{Event, FieldRef, Sym};

use crate::cond::{Cond, Operand, Test};

/// The filters of one plan section (excludes or includes) with their value index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefilter {
    /// Filter indices in chain order; bit `n` of a candidate set stands for `filters[n]`.
    pub filters: Vec<usize>,
    /// Positions of filters without a key.
    base: Vec<u64>,
    groups: Vec<KeyGroup>,
}

#[derive(Debug, Clone)]
struct KeyGroup {
    sym: Sym,
    by_text: HashMap<Box<str>, Vec<u32>>,
    by_int: HashMap<i64, Vec<u32>>,
}

impl Prefilter {
    /// Indexes `filters` (in chain order) by the key test of each condition.
    pub fn build<'a>(
        filters: Vec<usize>,
        cond_of: impl Fn(usize) -> &'a Cond,
        captured: &HashSet<Sym>,
    ) -> Self {
        let words = filters.len().div_ceil(64);
        let mut pf = Prefilter {
            base: vec![0; words],
            groups: Vec::new(),
            filters,
        };
        for pos in 0..pf.filters.len() {
            match key_of(cond_of(pf.filters[pos]), captured) {
                Some((sym, ops)) => pf.add_keyed(pos as u32, sym, ops),
                None => pf.base[pos / 64] |= 1 << (pos % 64),
            }
        }
        pf
    }

    fn add_keyed(&mut self, pos: u32, sym: Sym, keys: Vec<KeyLiteral<'_>>) {
        let group = match self.groups.iter().position(|g| g.sym == sym) {
            Some(g) => &mut self.groups[g],
            None => {
                self.groups.push(KeyGroup {
                    sym,
                    by_text: HashMap::new(),
                    by_int: HashMap::new(),
                });
                self.groups.last_mut().expect("just pushed")
            }
        };
        for (text, num) in keys {
            group.by_text.entry(text.into()).or_default().push(pos);
            if let Some(n) = num.filter(|n| n.fract() == 0.0 && n.abs() < 9.0e15) {
                group.by_int.entry(n as i64).or_default().push(pos);
            }
        }
    }

    /// Fills `bits` with the candidate positions for `event`.
    pub fn candidates(&self, event: &Event, bits: &mut Vec<u64>) {
        bits.clear();
        bits.extend_from_slice(&self.base);
        for g in &self.groups {
            let hits = match event.get(g.sym) {
                Some(FieldRef::Str(s)) => g.by_text.get(s),
                Some(FieldRef::Int(i)) => g.by_int.get(&i),
                Some(FieldRef::Bool(b)) => g.by_text.get(if b { "true" } else { "false" }),
                Some(FieldRef::Time(_)) | None => None,
            };
            for &pos in hits.into_iter().flatten() {
                bits[pos as usize / 64] |= 1 << (pos % 64);
            }
        }
    }
}

/// Positions set in `bits`, ascending.
pub(crate) fn positions(bits: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bits.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(w * 64 + bit)
        })
    })
}

/// A key literal: its text and, for numbers, its value.
type KeyLiteral<'c> = (&'c str, Option<f64>);

/// The first top-level equality or `in` test on a field that can serve as a key.
fn key_of<'c>(cond: &'c Cond, captured: &HashSet<Sym>) -> Option<(Sym, Vec<KeyLiteral<'c>>)> {
    let op = |o: &'c Operand| (o.text.as_str(), o.num);
    match cond {
        Cond::Field(sym, test) if keyable(*sym, captured) => match test {
            Test::Eq(o) => Some((*sym, vec![op(o)])),
            Test::InSmall(ops) => Some((*sym, ops.iter().map(op).collect())),
            Test::InSet(set) => Some((*sym, set.iter().map(|s| (s.as_str(), None)).collect())),
            _ => None,
        },
        Cond::All(cs) => cs.iter().find_map(|c| key_of(c, captured)),
        _ => None,
    }
}

fn keyable(sym: Sym, captured: &HashSet<Sym>) -> bool {
    !matches!(sym, Sym::TIME | Sym::RAW | Sym::ANOMALY) && !captured.contains(&sym)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_walk_set_bits_in_order() {
        let bits = [0b1010u64, 1 << 63, 1];
        assert_eq!(positions(&bits).collect::<Vec<_>>(), [1, 3, 127, 128]);
    }
}
