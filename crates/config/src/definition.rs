//! What each configured part *is*, independent of where it is written: a fingerprint of
//! its TOML table (keys sorted, spans and comments ignored, environment references
//! already expanded), so a reload can tell which sources, filters, actions, checks and
//! rule sets are unchanged (kept running untouched), changed, added or removed.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use toml::de::DeValue;

/// Fingerprints of every named part of a configuration, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definitions {
    /// `[[source]]` tables (enabled ones), plus what every source shares from `[agent]`.
    pub sources: Vec<(String, u64)>,
    /// `[[filter]]` tables.
    pub filters: Vec<(String, u64)>,
    /// `[[action]]` tables.
    pub actions: Vec<(String, u64)>,
    /// `[[check]]` tables.
    pub checks: Vec<(String, u64)>,
    /// `[[rules]]` tables, with the size and time of every rule file they read.
    pub rules: Vec<(String, u64)>,
    /// `[fleet]` (one entry named `fleet` when it is on), with the size and time of its
    /// CA and secret files and the host name it reports.
    pub fleet: Vec<(String, u64)>,
}

/// How one kind of part changed between two configurations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// In the new configuration only.
    pub added: Vec<String>,
    /// In both, defined differently.
    pub changed: Vec<String>,
    /// In the old configuration only.
    pub removed: Vec<String>,
    /// In both, defined alike.
    pub unchanged: Vec<String>,
}

impl Delta {
    /// Compares two lists of (name, fingerprint).
    pub fn between(old: &[(String, u64)], new: &[(String, u64)]) -> Delta {
        let before: BTreeMap<&str, u64> = old.iter().map(|(n, f)| (n.as_str(), *f)).collect();
        let mut d = Delta::default();
        for (name, fp) in new {
            match before.get(name.as_str()) {
                None => d.added.push(name.clone()),
                Some(old) if old == fp => d.unchanged.push(name.clone()),
                Some(_) => d.changed.push(name.clone()),
            }
        }
        let after: BTreeMap<&str, u64> = new.iter().map(|(n, f)| (n.as_str(), *f)).collect();
        d.removed = old
            .iter()
            .filter(|(n, _)| !after.contains_key(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        d
    }

    /// Whether nothing was added, changed or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Whether `name` is kept as it was.
    pub fn keeps(&self, name: &str) -> bool {
        self.unchanged.iter().any(|n| n == name)
    }

    /// `added [a], changed [b], removed [c]` (only the non-empty parts), for the log.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (what, list) in [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what} {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            "unchanged".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Every kind of part, compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Sources.
    pub sources: Delta,
    /// Filters.
    pub filters: Delta,
    /// Actions.
    pub actions: Delta,
    /// Checks.
    pub checks: Delta,
    /// Sigma rule sets.
    pub rules: Delta,
    /// The link to the fleet server (`[fleet]`).
    pub fleet: Delta,
}

impl Changes {
    /// Compares two configurations' definitions.
    pub fn between(old: &Definitions, new: &Definitions) -> Changes {
        Changes {
            sources: Delta::between(&old.sources, &new.sources),
            filters: Delta::between(&old.filters, &new.filters),
            actions: Delta::between(&old.actions, &new.actions),
            checks: Delta::between(&old.checks, &new.checks),
            rules: Delta::between(&old.rules, &new.rules),
            fleet: Delta::between(&old.fleet, &new.fleet),
        }
    }

    /// Whether no part changed.
    pub fn is_empty(&self) -> bool {
        [
            &self.sources,
            &self.filters,
            &self.actions,
            &self.checks,
            &self.rules,
            &self.fleet,
        ]
        .iter()
        .all(|d| d.is_empty())
    }
}

/// The fingerprint of a TOML value: its canonical text (tables with sorted keys), hashed.
pub fn fingerprint(v: &DeValue<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    feed(v, &mut h);
    h.finish()
}

/// A fingerprint mixed with more (what a part also depends on).
pub(crate) fn mix(fp: u64, extra: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    fp.hash(&mut h);
    extra.hash(&mut h);
    h.finish()
}

fn feed(v: &DeValue<'_>, h: &mut DefaultHasher) {
    match v {
        DeValue::String(s) => (0u8, s.as_ref()).hash(h),
        DeValue::Integer(i) => (1u8, i.as_str(), i.radix()).hash(h),
        DeValue::Float(f) => (2u8, f.as_str()).hash(h),
        DeValue::Boolean(b) => (3u8, b).hash(h),
        DeValue::Datetime(d) => (4u8, d.to_string()).hash(h),
        DeValue::Array(items) => {
            (5u8, items.len()).hash(h);
            items.iter().for_each(|i| feed(i.get_ref(), h));
        }
        DeValue::Table(t) => {
            let sorted: BTreeMap<&str, &DeValue<'_>> = t
                .iter()
                .map(|(k, v)| (k.get_ref().as_ref(), v.get_ref()))
                .collect();
            (6u8, sorted.len()).hash(h);
            for (k, v) in sorted {
                k.hash(h);
                feed(v, h);
            }
        }
    }
}

/// The `name` string of a table (`""` when it has none: such a table is an error anyway).
pub fn table_name(v: &DeValue<'_>) -> String {
    match v {
        DeValue::Table(t) => t
            .get("name")
            .and_then(|n| match n.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                _ => None,
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(text: &str) -> u64 {
        let doc = toml::de::DeTable::parse(text).unwrap();
        fingerprint(&DeValue::Table(doc.into_inner()))
    }

    #[test]
    fn order_spacing_and_comments_do_not_matter() {
        assert_eq!(fp("a = 1\nb = \"x\"\n"), fp("# c\nb   = \"x\"\n\na = 1\n"));
        assert_ne!(fp("a = 1\n"), fp("a = 2\n"));
        assert_ne!(fp("a = \"1\"\n"), fp("a = 1\n"));
        assert_ne!(fp("a = [1, 2]\n"), fp("a = [2, 1]\n"));
    }

    #[test]
    fn deltas() {
        let old = vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)];
        let new = vec![("a".into(), 1), ("b".into(), 9), ("d".into(), 4)];
        let d = Delta::between(&old, &new);
        assert_eq!(d.unchanged, ["a"]);
        assert_eq!(d.changed, ["b"]);
        assert_eq!(d.added, ["d"]);
        assert_eq!(d.removed, ["c"]);
        assert_eq!(d.summary(), "added d; changed b; removed c");
        assert!(Delta::between(&old, &old).is_empty());
    }
}
