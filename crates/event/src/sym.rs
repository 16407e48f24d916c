//! Interned field names.
//!
//! Every field name that a parser emits or a filter names is interned once into a
//! process-wide table and afterwards handled as a [`Sym`] (a `u32`). Comparing and
//! looking up symbols is an integer operation, which keeps the filter chain cheap.
//!
//! The first symbols are fixed: the event's metadata names ([`Sym::SOURCE`],
//! [`Sym::HOST`], [`Sym::TIME`], [`Sym::RAW`]) and the names that only exist while an
//! action runs ([`Sym::FILTER`], [`Sym::ACTIONS`]).
//!
//! Names are leaked into `'static` strings. The table is bounded by [`MAX_SYMBOLS`] so
//! hostile input with ever new field names (JSON lines, say) cannot grow it without end;
//! [`Sym::try_new`] fails beyond that and callers drop the field (and count it).

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, RwLock};

/// Most distinct field names the process will intern.
pub const MAX_SYMBOLS: usize = 1 << 20;

/// An interned field name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

struct Table {
    by_name: HashMap<&'static str, Sym>,
    names: Vec<&'static str>,
}

/// Fixed symbols, in the order of their ids.
const FIXED: &[&str] = &[
    "source", "host", "time", "raw", "filter", "actions", "anomaly",
];

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(|| {
    let mut t = Table {
        by_name: HashMap::new(),
        names: Vec::new(),
    };
    for name in FIXED {
        let sym = Sym(t.names.len() as u32);
        t.names.push(name);
        t.by_name.insert(name, sym);
    }
    RwLock::new(t)
});

impl Sym {
    /// `source`: the configured name of the source that read the event.
    pub const SOURCE: Sym = Sym(0);
    /// `host`: the computer the event is about (from the log where it names one).
    pub const HOST: Sym = Sym(1);
    /// `time`: when the event happened, RFC 3339.
    pub const TIME: Sym = Sym(2);
    /// `raw`: the original line or record.
    pub const RAW: Sym = Sym(3);
    /// `filter`: the name of the filter that fired (actions only).
    pub const FILTER: Sym = Sym(4);
    /// `actions`: the actions the filter fired (actions only).
    pub const ACTIONS: Sym = Sym(5);
    /// `anomaly`: whether an anomaly filter flagged the event.
    pub const ANOMALY: Sym = Sym(6);

    /// The symbol's number (dense, from 0, in interning order).
    pub fn id(self) -> usize {
        self.0 as usize
    }

    /// Whether this is one of the metadata names every event has.
    pub fn is_metadata(self) -> bool {
        (self.0 as usize) < FIXED.len()
    }

    /// Interns `name`, panicking only if the table is full (use [`Sym::try_new`] for
    /// names that come from input).
    pub fn new(name: &str) -> Sym {
        Self::try_new(name).expect("symbol table full: names from input must use Sym::try_new")
    }

    /// Interns `name`; `None` once [`MAX_SYMBOLS`] names exist.
    pub fn try_new(name: &str) -> Option<Sym> {
        if let Some(sym) = Self::get(name) {
            return Some(sym);
        }
        let mut t = TABLE.write().unwrap_or_else(|e| e.into_inner());
        if let Some(sym) = t.by_name.get(name) {
            return Some(*sym);
        }
        if t.names.len() >= MAX_SYMBOLS {
            return None;
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let sym = Sym(t.names.len() as u32);
        t.names.push(leaked);
        t.by_name.insert(leaked, sym);
        Some(sym)
    }

    /// The symbol for `name` if it was interned already.
    pub fn get(name: &str) -> Option<Sym> {
        TABLE
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .get(name)
            .copied()
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        TABLE.read().unwrap_or_else(|e| e.into_inner()).names[self.0 as usize]
    }

    /// Interns a list of names in order (parsers call this once for their schema).
    pub fn many<const N: usize>(names: [&str; N]) -> [Sym; N] {
        names.map(Sym::new)
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_symbols_have_their_names() {
        assert_eq!(Sym::SOURCE.as_str(), "source");
        assert_eq!(Sym::new("host"), Sym::HOST);
        assert_eq!(Sym::ANOMALY.as_str(), "anomaly");
        assert!(Sym::RAW.is_metadata());
    }

    #[test]
    fn interning_is_idempotent() {
        let a = Sym::new("risk_name_test");
        assert_eq!(a, Sym::new("risk_name_test"));
        assert_eq!(a.as_str(), "risk_name_test");
        assert!(!a.is_metadata());
        assert_eq!(Sym::get("never_interned_name_xyz"), None);
    }
}
