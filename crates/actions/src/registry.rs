//! The `registry` action (Windows): set a registry value (creating its key), delete a
//! value, or delete a key with everything under it. Key path, value name and data are
//! templates. The use it was made for: Symantec Endpoint Protection's location awareness
//! can switch a client to a locked-down "quarantine" location while a registry key exists
//! (`docs/actions.md`).
//!
//! The configuration is read on every platform (so `check-config` on Linux reports
//! mistakes with their places); [`RegistrySpec::check`] then says the action runs on
//! Windows only, and a job given to it elsewhere fails.
//!
//! The hive (`HKLM`/`HKEY_LOCAL_MACHINE` or `HKCU`/`HKEY_CURRENT_USER`) must be written out,
//! not templated. A rendered key path with a NUL byte, an empty, `.` or `..` component or
//! a component longer than 255 characters is refused; a backslash coming from event data
//! makes a deeper subkey, always under the configured literal part of the path. The
//! 64-bit registry view is used (`KEY_WOW64_64KEY`), also from a 32-bit build.
//!
//! Crate: `winreg` 0.56. It wraps the Win32 registry calls safely (this workspace denies
//! `unsafe_code`, which rules out calling `windows-sys` directly), and its dependencies,
//! `windows-sys` 0.61 and `cfg-if`, are already in the lock file: it adds one crate.
//! `windows-registry` would add `windows-result` and `windows-strings` and needs Rust 1.95
//! in its newest release. No shell and no `reg.exe` are involved.

use std::io;
use std::ops::Range;

use crossbeam_channel::Receiver;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::{ConfigError, FieldRef, Lookup, Sym};

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::{Tpl, deserialize};

/// What the action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Create the key if needed and set the value.
    Set,
    /// Delete the value (a missing key or value is fine).
    DeleteValue,
    /// Delete the key with its subkeys and values (a missing key is fine).
    DeleteKey,
}

/// The registry type of a value written by `mode = "set"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ValueKind {
    /// `REG_SZ`.
    Sz,
    /// `REG_EXPAND_SZ`.
    ExpandSz,
    /// `REG_DWORD` (32-bit number).
    Dword,
    /// `REG_QWORD` (64-bit number).
    Qword,
}

impl ValueKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ValueKind::Sz => "sz",
            ValueKind::ExpandSz => "expand_sz",
            ValueKind::Dword => "dword",
            ValueKind::Qword => "qword",
        }
    }

    /// The largest number the kind holds; `None` for strings.
    fn max(self) -> Option<u64> {
        match self {
            ValueKind::Sz | ValueKind::ExpandSz => None,
            ValueKind::Dword => Some(u64::from(u32::MAX)),
            ValueKind::Qword => Some(u64::MAX),
        }
    }
}

/// The root key a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hive {
    /// `HKEY_LOCAL_MACHINE`.
    LocalMachine,
    /// `HKEY_CURRENT_USER`.
    CurrentUser,
}

impl Hive {
    pub(crate) fn short(self) -> &'static str {
        match self {
            Hive::LocalMachine => "HKLM",
            Hive::CurrentUser => "HKCU",
        }
    }

    /// The hive of a [`Hive::short`] name.
    pub(crate) fn from_short(name: &str) -> Option<Hive> {
        match name {
            "HKLM" => Some(Hive::LocalMachine),
            "HKCU" => Some(Hive::CurrentUser),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    key: Spanned<String>,
    mode: Option<Mode>,
    value: Option<Spanned<String>>,
    #[serde(rename = "kind")]
    value_kind: Option<Spanned<ValueKind>>,
    data: Option<Spanned<String>>,
}

/// A validated `registry` action.
#[derive(Debug, Clone)]
pub(crate) struct RegistrySpec {
    hive: Hive,
    /// The whole `key` template, hive included.
    key: Tpl,
    /// Bytes of the hive name and its backslash at the start of every rendered key.
    hive_len: usize,
    mode: Mode,
    /// The value name (`""`: the key's default value); `None` for `delete_key`.
    value: Option<Tpl>,
    kind: ValueKind,
    /// `Some` exactly for `mode = "set"`.
    data: Option<Tpl>,
    type_span: Range<usize>,
}

/// Why a registry action failed.
#[derive(Debug, Error)]
pub(crate) enum RegError {
    #[error("refusing registry key {key:?}: {why}")]
    BadKey { key: String, why: &'static str },
    #[error("refusing registry value name {value:?}: {why}")]
    BadValueName { value: String, why: &'static str },
    #[error("`data` rendered as {data:?}, which is not a {kind} number (decimal or 0x hex{range})")]
    BadNumber {
        data: String,
        kind: &'static str,
        range: &'static str,
    },
    #[error("refusing {kind} data with a NUL byte")]
    NulInData { kind: &'static str },
    #[error("cannot {what} {target}: {source}")]
    Os {
        what: &'static str,
        target: String,
        source: io::Error,
    },
}

/// Data ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    Sz(String),
    ExpandSz(String),
    Dword(u32),
    Qword(u64),
}

/// A template scope with no variables (for rendering constant templates).
struct NoVars;

impl Lookup for NoVars {
    fn lookup(&self, _: Sym) -> Option<FieldRef<'_>> {
        None
    }
}

impl RegistrySpec {
    pub(crate) fn parse(
        table: Spanned<DeValue<'_>>,
        type_span: std::ops::Range<usize>,
    ) -> Result<RegistrySpec, Vec<ConfigError>> {
        let raw: RawRegistry = deserialize(table)?;
        let mut errors = Vec::new();
        let key = Tpl::parse(&raw.key, &mut errors);
        let hive = parse_hive(&raw.key, &mut errors);
        let mode = raw.mode.unwrap_or(Mode::Set);
        let value = match (&raw.value, mode) {
            (Some(v), Mode::DeleteKey) => {
                errors.push(ConfigError::new(
                    v.span(),
                    "`value` does not apply to mode = \"delete_key\" (it deletes the whole key)",
                ));
                None
            }
            (Some(v), _) => {
                if v.get_ref().contains('\0') {
                    errors.push(ConfigError::new(v.span(), "`value` contains a NUL byte"));
                }
                Tpl::parse(v, &mut errors)
            }
            (None, Mode::DeleteKey) => None,
            (None, _) => Some(Tpl::builtin("")),
        };
        let kind = raw
            .value_kind
            .as_ref()
            .map_or(ValueKind::Sz, |k| *k.get_ref());
        let data = if mode == Mode::Set {
            match &raw.data {
                Some(d) => Tpl::parse(d, &mut errors).inspect(|t| {
                    if let (Some(max), true) = (kind.max(), t.template.is_constant()) {
                        let text = t.template.render(&NoVars);
                        if parse_number(&text, max).is_none() {
                            errors.push(ConfigError::new(
                                d.span(),
                                format!(
                                    "`data` must be a number for kind = \"{}\" (decimal or 0x hex{})",
                                    kind.as_str(),
                                    range_text(kind)
                                ),
                            ));
                        }
                    }
                }),
                None => {
                    let span = type_span.clone();
                    errors.push(ConfigError::new(
                        span.start..span.start,
                        "mode = \"set\" needs `data` (the value to write)",
                    ));
                    None
                }
            }
        } else {
            let misplaced = [
                ("kind", raw.value_kind.as_ref().map(Spanned::span)),
                ("data", raw.data.as_ref().map(Spanned::span)),
            ];
            for (name, span) in misplaced {
                if let Some(span) = span {
                    errors.push(ConfigError::new(
                        span,
                        format!("`{name}` only applies to mode = \"set\""),
                    ));
                }
            }
            None
        };
        match (key, hive) {
            (Some(key), Some((hive, hive_len))) if errors.is_empty() => Ok(RegistrySpec {
                hive,
                key,
                hive_len,
                mode,
                value,
                kind,
                data,
                type_span: type_span.clone(),
            }),
            _ => Err(errors),
        }
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        std::iter::once(&self.key)
            .chain(&self.value)
            .chain(&self.data)
    }

    /// Elsewhere than on Windows: a warning at the `type` value (the configuration stays
    /// valid, so one file can serve both platforms; the action is skipped here).
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        #[cfg(windows)]
        {
            let _ = &self.type_span;
            Vec::new()
        }
        #[cfg(not(windows))]
        vec![ConfigError::warning(
            self.type_span.clone(),
            "the registry action runs on Windows only; on this system it is skipped",
        )]
    }

    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        crate::control::serve(name, rx, counters, ctl, |job| self.apply(job));
    }

    fn apply(&self, job: &Job) -> Result<(), RegError> {
        let scope = job.scope();
        let rendered = self.key.template.render(&scope);
        let path = checked_key(&rendered, self.hive_len)?;
        let value = match &self.value {
            Some(t) => {
                let v = t.template.render(&scope);
                checked_value_name(&v)?;
                Some(v)
            }
            None => None,
        };
        let data = match &self.data {
            Some(t) => Some(to_data(self.kind, t.template.render(&scope))?),
            None => None,
        };
        let target = match &value {
            Some(v) if v.is_empty() => format!("{}\\{path} (default value)", self.hive.short()),
            Some(v) => format!("{}\\{path} value {v:?}", self.hive.short()),
            None => format!("{}\\{path}", self.hive.short()),
        };
        let what = match self.mode {
            Mode::Set => "set",
            Mode::DeleteValue => "delete",
            Mode::DeleteKey => "delete key",
        };
        os::apply(self.hive, path, value.as_deref(), data.as_ref(), self.mode).map_err(|source| {
            RegError::Os {
                what,
                target,
                source,
            }
        })
    }
}

/// A constant `HIVE\path` (not a template), checked like a rendered key: the quarantine
/// action's location-awareness key. Problems are pushed to `errors` at the key's place.
pub(crate) fn parse_fixed_key(
    key: &Spanned<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<(Hive, String)> {
    let (hive, len) = parse_hive(key, errors)?;
    match checked_key(key.get_ref(), len) {
        Ok(path) => Some((hive, path.to_owned())),
        Err(e) => {
            errors.push(ConfigError::new(key.span(), e.to_string()));
            None
        }
    }
}

/// Sets `value` under `HIVE\path` to `data`, creating the key (the quarantine action).
pub(crate) fn set_value(hive: Hive, path: &str, value: &str, data: &Data) -> Result<(), RegError> {
    os::apply(hive, path, Some(value), Some(data), Mode::Set).map_err(|source| RegError::Os {
        what: "set",
        target: format!("{}\\{path} value {value:?}", hive.short()),
        source,
    })
}

/// Deletes `value` under `HIVE\path`; a missing key or value is fine.
pub(crate) fn delete_value(hive: Hive, path: &str, value: &str) -> Result<(), RegError> {
    os::apply(hive, path, Some(value), None, Mode::DeleteValue).map_err(|source| RegError::Os {
        what: "delete",
        target: format!("{}\\{path} value {value:?}", hive.short()),
        source,
    })
}

/// Deletes the key `HIVE\path` with everything under it; a missing key is fine.
pub(crate) fn delete_key(hive: Hive, path: &str) -> Result<(), RegError> {
    os::apply(hive, path, None, None, Mode::DeleteKey).map_err(|source| RegError::Os {
        what: "delete key",
        target: format!("{}\\{path}", hive.short()),
        source,
    })
}

/// Whether the key `HIVE\path` exists and the current data of its `value` (`None`: the
/// value is missing), so that both can be restored later.
pub(crate) fn read_value(
    hive: Hive,
    path: &str,
    value: &str,
) -> Result<(bool, Option<Data>), RegError> {
    os::read(hive, path, value).map_err(|source| RegError::Os {
        what: "read",
        target: format!("{}\\{path} value {value:?}", hive.short()),
        source,
    })
}

impl Data {
    /// The value's kind and its data as text (what [`to_data`] reads back).
    pub(crate) fn to_text(&self) -> (ValueKind, String) {
        match self {
            Data::Sz(s) => (ValueKind::Sz, s.clone()),
            Data::ExpandSz(s) => (ValueKind::ExpandSz, s.clone()),
            Data::Dword(n) => (ValueKind::Dword, n.to_string()),
            Data::Qword(n) => (ValueKind::Qword, n.to_string()),
        }
    }
}

/// Reads the hive from the start of `key`; returns it with the length of `HIVE\`.
fn parse_hive(key: &Spanned<String>, errors: &mut Vec<ConfigError>) -> Option<(Hive, usize)> {
    let text = key.get_ref();
    let span = key.span();
    let Some(sep) = text.find('\\') else {
        errors.push(ConfigError::new(
            span,
            r"`key` is `HIVE\path`, e.g. 'HKLM\SOFTWARE\Watchpost\Quarantine' (HKLM, HKEY_LOCAL_MACHINE, HKCU or HKEY_CURRENT_USER)",
        ));
        return None;
    };
    let name = &text[..sep];
    let hive = match name.to_ascii_uppercase().as_str() {
        "HKLM" | "HKEY_LOCAL_MACHINE" => Hive::LocalMachine,
        "HKCU" | "HKEY_CURRENT_USER" => Hive::CurrentUser,
        _ => {
            // The string's opening quote is one byte; the hive starts right after it
            // (literal strings carry no escapes; a basic string may, then the whole
            // value is reported).
            let at = if text.len() + 2 == span.len() {
                span.start + 1..span.start + 1 + sep
            } else {
                span
            };
            errors.push(ConfigError::new(
                at,
                format!(
                    "unknown registry hive `{name}` (known: HKLM, HKEY_LOCAL_MACHINE, HKCU, HKEY_CURRENT_USER; it cannot be templated)"
                ),
            ));
            return None;
        }
    };
    let rest = &text[sep + 1..];
    if rest.trim_matches('\\').is_empty() {
        errors.push(ConfigError::new(
            span,
            "`key` names no key under the hive (writing to the hive's root is refused)",
        ));
        return None;
    }
    Some((hive, sep + 1))
}

/// The rendered key path without its hive, validated.
fn checked_key(rendered: &str, hive_len: usize) -> Result<&str, RegError> {
    let bad = |why| {
        Err(RegError::BadKey {
            key: rendered.to_owned(),
            why,
        })
    };
    let path = rendered.get(hive_len..).unwrap_or("");
    if rendered.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if path.is_empty() {
        return bad("it names no key under the hive");
    }
    for component in path.split('\\') {
        match component {
            "" => return bad("it has an empty component"),
            "." | ".." => return bad("it has a `.` or `..` component"),
            c if c.chars().count() > 255 => {
                return bad("a component is longer than 255 characters");
            }
            _ => {}
        }
    }
    Ok(path)
}

fn checked_value_name(value: &str) -> Result<(), RegError> {
    let why = if value.contains('\0') {
        "it contains a NUL byte"
    } else if value.chars().count() > 16383 {
        "it is longer than 16383 characters"
    } else {
        return Ok(());
    };
    Err(RegError::BadValueName {
        value: value.to_owned(),
        why,
    })
}

fn range_text(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Dword => ", at most 4294967295",
        _ => "",
    }
}

/// A rendered `data` text as the value to write.
pub(crate) fn to_data(kind: ValueKind, text: String) -> Result<Data, RegError> {
    let number = |max| {
        parse_number(&text, max).ok_or_else(|| RegError::BadNumber {
            data: text.clone(),
            kind: kind.as_str(),
            range: range_text(kind),
        })
    };
    match kind {
        ValueKind::Sz | ValueKind::ExpandSz if text.contains('\0') => Err(RegError::NulInData {
            kind: kind.as_str(),
        }),
        ValueKind::Sz => Ok(Data::Sz(text)),
        ValueKind::ExpandSz => Ok(Data::ExpandSz(text)),
        ValueKind::Dword => Ok(Data::Dword(number(u64::from(u32::MAX))? as u32)),
        ValueKind::Qword => Ok(Data::Qword(number(u64::MAX)?)),
    }
}

/// A decimal or `0x` hexadecimal number no larger than `max` (surrounding white space is
/// ignored).
fn parse_number(text: &str, max: u64) -> Option<u64> {
    let t = text.trim();
    let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok()?,
        None => return None,
    };
    (n <= max).then_some(n)
}

#[cfg(windows)]
mod os {
    use std::borrow::Cow;
    use std::io;

    use winreg::enums::{
        HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE, KEY_ALL_ACCESS, KEY_READ, KEY_SET_VALUE,
        KEY_WOW64_64KEY, REG_EXPAND_SZ,
    };
    use winreg::{RegKey, RegValue};

    use super::{Data, Hive, Mode};

    fn root(hive: Hive) -> RegKey {
        RegKey::predef(match hive {
            Hive::LocalMachine => HKEY_LOCAL_MACHINE,
            Hive::CurrentUser => HKEY_CURRENT_USER,
        })
    }

    /// `ERROR_KEY_DELETED`: the key was deleted (by another action, another program)
    /// after it was opened.
    const ERROR_KEY_DELETED: i32 = 1018;

    /// A missing key or value is not an error when deleting: what was asked (that it be
    /// gone) holds. That includes a key deleted between opening it and deleting from it.
    fn missing_ok(r: io::Result<()>) -> io::Result<()> {
        match r {
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(ERROR_KEY_DELETED) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    /// Whether the key exists, and the data of the value (`None` when it is missing).
    pub(super) fn read(hive: Hive, path: &str, value: &str) -> io::Result<(bool, Option<Data>)> {
        use winreg::enums::{REG_DWORD, REG_QWORD, REG_SZ};
        use winreg::types::FromRegValue;
        let key = match root(hive).open_subkey_with_flags(path, KEY_READ | KEY_WOW64_64KEY) {
            Ok(key) => key,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((false, None)),
            Err(e) => return Err(e),
        };
        let raw = match key.get_raw_value(value) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((true, None)),
            Err(e) => return Err(e),
        };
        Ok((
            true,
            Some(match raw.vtype {
                REG_SZ => Data::Sz(String::from_reg_value(&raw)?),
                REG_EXPAND_SZ => Data::ExpandSz(String::from_reg_value(&raw)?),
                REG_DWORD => Data::Dword(u32::from_reg_value(&raw)?),
                REG_QWORD => Data::Qword(u64::from_reg_value(&raw)?),
                other => {
                    return Err(io::Error::other(format!(
                        "the value has type {other:?}, which cannot be restored later"
                    )));
                }
            }),
        ))
    }

    pub(super) fn apply(
        hive: Hive,
        path: &str,
        value: Option<&str>,
        data: Option<&Data>,
        mode: Mode,
    ) -> io::Result<()> {
        let root = root(hive);
        let name = value.unwrap_or("");
        match (mode, data) {
            (Mode::Set, Some(data)) => {
                let (key, _) =
                    root.create_subkey_with_flags(path, KEY_SET_VALUE | KEY_WOW64_64KEY)?;
                match data {
                    Data::Sz(s) => key.set_value(name, s),
                    Data::ExpandSz(s) => {
                        let bytes: Vec<u8> = s
                            .encode_utf16()
                            .chain([0])
                            .flat_map(u16::to_le_bytes)
                            .collect();
                        key.set_raw_value(
                            name,
                            &RegValue {
                                bytes: Cow::Owned(bytes),
                                vtype: REG_EXPAND_SZ,
                            },
                        )
                    }
                    Data::Dword(n) => key.set_value(name, n),
                    Data::Qword(n) => key.set_value(name, n),
                }
            }
            (Mode::Set, None) => Err(io::Error::other("no data to set")),
            (Mode::DeleteValue, _) => {
                match root.open_subkey_with_flags(path, KEY_SET_VALUE | KEY_WOW64_64KEY) {
                    Ok(key) => missing_ok(key.delete_value(name)),
                    Err(e) => missing_ok(Err(e)),
                }
            }
            (Mode::DeleteKey, _) => {
                let key = match root.open_subkey_with_flags(path, KEY_ALL_ACCESS | KEY_WOW64_64KEY)
                {
                    Ok(key) => key,
                    Err(e) => return missing_ok(Err(e)),
                };
                // Subkeys and values first: RegDeleteKeyExW only deletes empty keys.
                key.delete_subkey_all("")?;
                drop(key);
                let (parent, last) = match path.rsplit_once('\\') {
                    Some((parent, last)) => (
                        root.open_subkey_with_flags(parent, KEY_READ | KEY_WOW64_64KEY)?,
                        last,
                    ),
                    None => (root, path),
                };
                missing_ok(parent.delete_subkey_with_flags(last, KEY_WOW64_64KEY))
            }
        }
    }
}

#[cfg(not(windows))]
mod os {
    use std::io;

    use super::{Data, Hive, Mode};

    pub(super) fn read(_: Hive, _: &str, _: &str) -> io::Result<(bool, Option<Data>)> {
        Err(io::Error::other("the registry runs on Windows only"))
    }

    pub(super) fn apply(
        _: Hive,
        _: &str,
        _: Option<&str>,
        _: Option<&Data>,
        _: Mode,
    ) -> io::Result<()> {
        Err(io::Error::other("the registry action runs on Windows only"))
    }
}

impl crate::kind::ActionKind for RegistrySpec {
    fn kind(&self) -> &'static str {
        "registry"
    }

    fn templates(&self) -> Vec<&Tpl> {
        RegistrySpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        RegistrySpec::check(self)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        RegistrySpec::work(self, name, rx, counters, ctl);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;

    const HEAD: &str = "[[action]]\nname = \"q\"\ntype = \"registry\"\n";

    #[test]
    fn a_full_set_action_parses_and_lists_its_variables() {
        let text = format!(
            "{HEAD}key = 'HKLM\\SOFTWARE\\Watchpost\\{{{{ host }}}}'\nvalue = \"Infected\"\nkind = \"expand_sz\"\ndata = \"{{{{ risk_name }}}} from {{{{ ip_address }}}}\"\n"
        );
        let spec = parse_ok(&text);
        assert_eq!(spec.kind(), "registry");
        let vars: Vec<&str> = spec
            .variables()
            .iter()
            .map(|(_, span)| at(&text, span))
            .collect();
        assert_eq!(vars, ["host", "risk_name", "ip_address"]);
        let r = spec.kind_as::<RegistrySpec>().expect("a registry action");
        assert_eq!(
            (r.hive, r.mode, r.kind),
            (Hive::LocalMachine, Mode::Set, ValueKind::ExpandSz)
        );
    }

    #[test]
    fn long_hive_names_and_delete_modes() {
        let text = format!("{HEAD}key = 'hkey_current_user\\Software\\X'\nmode = \"delete_key\"\n");
        let spec = parse_ok(&text);
        let r = spec.kind_as::<RegistrySpec>().expect("a registry action");
        assert_eq!((r.hive, r.hive_len), (Hive::CurrentUser, 18));
        let text = format!(
            "{HEAD}key = 'HKEY_LOCAL_MACHINE\\Software\\X'\nmode = \"delete_value\"\nvalue = \"v\"\n"
        );
        parse_ok(&text);
    }

    #[test]
    fn config_errors_have_places() {
        let text = format!("{HEAD}key = 'HKXX\\Software\\X'\ndata = \"1\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(at(&text, &errs[0].span), "HKXX");
        assert!(
            errs[0].message.contains("unknown registry hive"),
            "{errs:?}"
        );

        let text = format!("{HEAD}key = 'HKLM\\X'\nkind = \"binary\"\ndata = \"1\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"binary\"", "{errs:?}");

        let text = format!(
            "{HEAD}key = 'HKLM\\X'\nmode = \"delete_value\"\nkind = \"sz\"\ndata = \"1\"\n"
        );
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(at(&text, &errs[0].span), "\"sz\"");
        assert_eq!(at(&text, &errs[1].span), "\"1\"");

        let text = format!("{HEAD}key = 'HKLM\\X'\nmode = \"delete_key\"\nvalue = \"v\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"v\"");

        let text = format!("{HEAD}key = 'HKLM\\X'\nkind = \"dword\"\ndata = \"lots\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"lots\"");
        assert!(errs[0].message.contains("number"), "{errs:?}");
        let text = format!("{HEAD}key = 'HKLM\\X'\nkind = \"dword\"\ndata = \"0x100000000\"\n");
        assert!(parse_one(&text).is_err());
        // A templated dword is checked when it is rendered.
        let text =
            format!("{HEAD}key = 'HKLM\\X'\nkind = \"dword\"\ndata = \"{{{{ risk_name }}}}\"\n");
        parse_ok(&text);

        for key in ["'HKLM'", "'HKLM\\'", "'{{ host }}\\X'"] {
            let text = format!("{HEAD}key = {key}\ndata = \"1\"\n");
            let errs = parse_one(&text).unwrap_err();
            assert_eq!(errs.len(), 1, "{key}: {errs:?}");
        }

        let text = format!("{HEAD}key = 'HKLM\\X'\n");
        let errs = parse_one(&text).unwrap_err();
        assert!(errs[0].message.contains("needs `data`"), "{errs:?}");

        let text = format!("{HEAD}key = 'HKLM\\X'\ndata = \"1\"\ncolour = 1\n");
        let errs = parse_one(&text).unwrap_err();
        assert!(errs[0].message.contains("colour"), "{errs:?}");
    }

    #[test]
    fn check_says_windows_only_at_the_type() {
        let text = format!("{HEAD}key = 'HKLM\\X'\ndata = \"1\"\n");
        let errs = parse_ok(&text).check();
        if cfg!(windows) {
            assert!(errs.is_empty(), "{errs:?}");
        } else {
            assert_eq!(errs.len(), 1);
            assert_eq!(at(&text, &errs[0].span), "\"registry\"");
            assert!(errs[0].message.contains("Windows only"));
        }
    }

    #[test]
    fn rendered_keys_values_and_numbers_are_checked() {
        assert_eq!(
            checked_key(r"HKLM\SOFTWARE\W\pc1", 5).unwrap(),
            r"SOFTWARE\W\pc1"
        );
        for bad in [
            r"HKLM\",
            r"HKLM\a\\b",
            r"HKLM\a\..\b",
            r"HKLM\a\.",
            "HKLM\\a\0b",
            r"HKLM\a\",
        ] {
            assert!(checked_key(bad, 5).is_err(), "{bad:?}");
        }
        assert!(checked_key(&format!(r"HKLM\a\{}", "x".repeat(256)), 5).is_err());
        assert!(checked_value_name("").is_ok());
        assert!(checked_value_name("a\0").is_err());

        assert_eq!(parse_number("42", u64::MAX), Some(42));
        assert_eq!(parse_number(" 0x2A ", u64::MAX), Some(42));
        assert_eq!(parse_number("0XfF", u64::MAX), Some(255));
        assert_eq!(parse_number("4294967296", u32::MAX.into()), None);
        for bad in ["", "-1", "0x", "1e3", "12a", "+1", "0x-1"] {
            assert_eq!(parse_number(bad, u64::MAX), None, "{bad:?}");
        }
        assert_eq!(
            to_data(ValueKind::Dword, "7".into()).unwrap(),
            Data::Dword(7)
        );
        assert_eq!(to_data(ValueKind::Qword, "0x1_0".into()).ok(), None);
        let e = to_data(ValueKind::Dword, "EICAR".into()).unwrap_err();
        assert!(e.to_string().contains("not a dword number"), "{e}");
        assert!(to_data(ValueKind::Sz, "a\0b".into()).is_err());
    }
}
