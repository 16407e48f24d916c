//! Values for the `expand` modifier: `%name%` placeholders in rule values.
//!
//! A rule writes `User|expand: '%Administrators%'`; the rule set supplies the values of
//! `Administrators` (`["Administrator", "Admin*"]`), each a Sigma value of its own
//! (wildcards count). A value may hold several placeholders and text around them
//! (`'%Domain%\%Users%'`): every combination becomes an alternative. As in pySigma's
//! `value_placeholders` transformation, a placeholder without values is an error: the
//! rule is not loaded, with the reason.
//!
//! Files use the pySigma / sigma-cli processing-pipeline format (the `vars:` mapping;
//! the pipeline's other keys are ignored) or a bare mapping of names to a value or a
//! list of values:
//!
//! ```yaml
//! vars:
//!     Administrators:
//!         - Administrator
//!         - Admin*
//!     DomainControllers: DC01
//! ```

use std::collections::HashMap;
use std::path::Path;

use crate::PlaceholderError;

use serde_json::Value as Json;

/// Placeholder name → values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placeholders {
    vars: HashMap<String, Vec<String>>,
}

fn scalar(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Placeholders {
    /// No placeholders.
    pub fn new() -> Placeholders {
        Placeholders::default()
    }

    /// Sets (replaces) the values of `name`.
    pub fn insert(&mut self, name: impl Into<String>, values: Vec<String>) {
        self.vars.insert(name.into(), values);
    }

    /// Adds every placeholder of `other`, replacing those of the same name.
    pub fn extend(&mut self, other: Placeholders) {
        self.vars.extend(other.vars);
    }

    /// The values of `name`.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.vars.get(name).map(Vec::as_slice)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// A digest of the names and values (in name order): what rules compiled with them
    /// depend on.
    pub(crate) fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort_unstable();
        let mut h = Sha256::new();
        for n in names {
            h.update((n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
            let values = &self.vars[n];
            h.update((values.len() as u64).to_le_bytes());
            for v in values {
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
        h.finalize().into()
    }

    /// Parses a placeholder file's text (a pipeline with `vars:`, or a bare mapping).
    pub fn from_yaml(text: &str) -> Result<Placeholders, PlaceholderError> {
        let shape = PlaceholderError::Shape;
        let docs: Vec<Json> = serde_saphyr::from_multiple(text).map_err(|e| {
            let msg = e.to_string();
            PlaceholderError::Yaml(msg.lines().next().unwrap_or("").to_owned())
        })?;
        let doc = docs.into_iter().next().unwrap_or(Json::Null);
        let map = match &doc {
            Json::Object(m) => match m.get("vars") {
                Some(Json::Object(v)) => v,
                Some(Json::Null) => return Ok(Placeholders::new()),
                Some(_) => return Err(shape("`vars` must be a mapping of names to values".into())),
                None if m.contains_key("transformations") => return Ok(Placeholders::new()),
                None => m,
            },
            Json::Null => return Ok(Placeholders::new()),
            _ => {
                return Err(shape(
                    "placeholders must be a mapping of names to values".into(),
                ));
            }
        };
        let mut out = Placeholders::new();
        for (k, v) in map {
            let values = match v {
                Json::Array(a) => a
                    .iter()
                    .map(|x| {
                        scalar(x).ok_or_else(|| {
                            shape(format!("placeholder `{k}`: values must be plain"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => vec![
                    scalar(other)
                        .ok_or_else(|| shape(format!("placeholder `{k}`: values must be plain")))?,
                ],
            };
            out.insert(k.clone(), values);
        }
        Ok(out)
    }

    /// Reads a placeholder file.
    pub fn from_file(path: &Path) -> Result<Placeholders, PlaceholderError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlaceholderError::Read {
            path: path.to_owned(),
            source,
        })?;
        Placeholders::from_yaml(&text).map_err(|e| PlaceholderError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Every expansion of the `%name%` placeholders in `value` (names are letters,
    /// digits and `_`; a `%` that does not open one is kept). Errors name a placeholder
    /// without values.
    pub(crate) fn expand(&self, value: &str) -> Result<Vec<String>, String> {
        let mut alts = vec![String::new()];
        let mut rest = value;
        while let Some(open) = rest.find('%') {
            let after = &rest[open + 1..];
            let close = after.find('%');
            let name = close.map(|c| &after[..c]);
            match name {
                Some(n) if !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                    let vals = self.get(n).filter(|v| !v.is_empty()).ok_or_else(|| {
                        format!(
                            "`expand`: placeholder `%{n}%` has no values (give them with `placeholders`/`placeholders_file` or --placeholders)"
                        )
                    })?;
                    let lit = &rest[..open];
                    let mut next = Vec::with_capacity(alts.len() * vals.len());
                    for a in &alts {
                        for v in vals {
                            next.push(format!("{a}{lit}{v}"));
                        }
                    }
                    if next.len() > 4096 {
                        return Err("placeholders expand to more than 4096 values".into());
                    }
                    alts = next;
                    rest = &after[n.len() + 1..];
                }
                _ => {
                    let lit = &rest[..open + 1];
                    alts.iter_mut().for_each(|a| a.push_str(lit));
                    rest = after;
                }
            }
        }
        alts.iter_mut().for_each(|a| a.push_str(rest));
        Ok(alts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_every_combination() {
        let mut p = Placeholders::new();
        p.insert("A", vec!["x".into(), "y*".into()]);
        p.insert("B", vec!["1".into()]);
        assert_eq!(p.expand("%A%").unwrap(), ["x", "y*"]);
        assert_eq!(
            p.expand(r"pre\%A%-%B%!").unwrap(),
            [r"pre\x-1!", r"pre\y*-1!"]
        );
        assert_eq!(p.expand("50% off").unwrap(), ["50% off"]);
        assert_eq!(p.expand("%%A%").unwrap(), ["%x", "%y*"]);
        assert!(p.expand("%C%").unwrap_err().contains("%C%"));
    }

    #[test]
    fn files() {
        let pipe = "name: p\nvars:\n  Admins: [Administrator, 'Admin*']\n  DC: DC01\ntransformations: []\n";
        let p = Placeholders::from_yaml(pipe).unwrap();
        assert_eq!(p.get("Admins").unwrap(), ["Administrator", "Admin*"]);
        assert_eq!(p.get("DC").unwrap(), ["DC01"]);
        let bare = Placeholders::from_yaml("Admins:\n  - root\nPorts: [22, 3389]\n").unwrap();
        assert_eq!(bare.get("Ports").unwrap(), ["22", "3389"]);
        assert!(Placeholders::from_yaml("- a\n").is_err());
        assert!(Placeholders::from_yaml("A: {b: 1}\n").is_err());
    }
}
