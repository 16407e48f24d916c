//! Looking: what each kind of check observes now.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::spec::{CheckSpec, DefSource, Kind};

/// What a check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// `ok` or the problem.
    pub status: String,
    /// A sentence for people.
    pub detail: String,
    /// Kind-specific fields.
    pub fields: Vec<(String, String)>,
}

impl Observation {
    fn new(status: &str, detail: impl Into<String>) -> Observation {
        Observation {
            status: status.to_owned(),
            detail: detail.into(),
            fields: Vec::new(),
        }
    }

    fn field(mut self, k: &str, v: impl Into<String>) -> Observation {
        self.fields.push((k.to_owned(), v.into()));
        self
    }

    /// The antivirus definitions' age in hours, when this is a `definitions_age` check
    /// that could tell it (its `age_hours` field).
    pub fn definitions_age_hours(&self) -> Option<f64> {
        self.fields
            .iter()
            .find(|(k, _)| k == "age_hours")
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .filter(|h| h.is_finite())
    }
}

/// When a source last delivered an event (Unix ms), as the daemon knows it; `None` for
/// an unknown source.
pub type SourceClock = Arc<dyn Fn(&str) -> Option<i64> + Send + Sync>;

/// Looks now.
pub fn observe(check: &CheckSpec, clock: &SourceClock) -> Observation {
    match &check.kind {
        Kind::DefinitionsAge { max_age, from } => definitions(*max_age, from),
        Kind::File {
            path,
            exists,
            sha256,
            sha256_not,
        } => file(path, *exists, sha256.as_deref(), sha256_not.as_deref()),
        Kind::Service { services } => service(services),
        Kind::SourceSilence { source, after } => silence(source, *after, clock),
    }
}

fn definitions(max_age: Duration, from: &DefSource) -> Observation {
    let found = match from {
        DefSource::Registry => registry_defs(),
        DefSource::SepLog(glob) => sep_log_defs(glob),
        DefSource::File { path, date: None } => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|t| Timestamp::try_from(t).map_err(|e| e.to_string()))
            .map(|t| (t, None, format!("modification time of {path}"))),
        DefSource::File {
            path,
            date: Some((re, fmt)),
        } => read_head(Path::new(path), 1 << 20)
            .and_then(|text| find_date(&text, re, fmt).map_err(|e| format!("{path}: {e}")))
            .map(|t| (t, None, format!("date in {path}"))),
        DefSource::Command {
            argv,
            date: (re, fmt),
        } => run(argv, Duration::from_secs(30))
            .and_then(|out| find_date(&out, re, fmt).map_err(|e| format!("{}: {e}", argv[0])))
            .map(|t| (t, None, format!("output of {}", argv[0]))),
    };
    match found {
        Err(e) => Observation::new("error", format!("cannot tell the definitions' age: {e}")),
        Ok((date, revision, from)) => {
            let age = Timestamp::now().duration_since(date);
            let hours = age.as_secs_f64() / 3600.0;
            let stale = age.as_secs_f64() > max_age.as_secs_f64();
            let detail = format!(
                "definitions of {} ({from}) are {:.1} days old; at most {:.1} days are accepted",
                date.strftime("%Y-%m-%d %H:%M UTC"),
                hours / 24.0,
                max_age.as_secs_f64() / 86_400.0
            );
            let mut o = Observation::new(if stale { "stale" } else { "ok" }, detail)
                .field("definitions_date", date.to_string())
                .field("age_hours", format!("{hours:.1}"));
            if let Some(r) = revision {
                o = o.field("definitions_revision", r);
            }
            o
        }
    }
}

type Found = Result<(Timestamp, Option<String>, String), String>;

/// SEP's own record of the definitions in use (Windows registry, 64-bit view first).
#[cfg(windows)]
fn registry_defs() -> Found {
    use winreg::RegKey;
    use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_32KEY, KEY_WOW64_64KEY};
    const KEY: &str =
        r"SOFTWARE\Symantec\Symantec Endpoint Protection\CurrentVersion\public-opstate";
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    let key = hklm
        .open_subkey_with_flags(KEY, KEY_READ | KEY_WOW64_64KEY)
        .or_else(|_| hklm.open_subkey_with_flags(KEY, KEY_READ | KEY_WOW64_32KEY))
        .map_err(|e| format!(r"HKLM\{KEY}: {e}"))?;
    let date: String = key
        .get_value("LatestVirusDefsDate")
        .map_err(|e| format!("LatestVirusDefsDate: {e}"))?;
    let revision: Option<String> = key
        .get_value::<String, _>("LatestVirusDefsRevision")
        .ok()
        .or_else(|| {
            key.get_value::<u32, _>("LatestVirusDefsRevision")
                .ok()
                .map(|n| n.to_string())
        });
    let t = parse_date(date.trim(), "auto")
        .map_err(|e| format!("LatestVirusDefsDate {date:?}: {e}"))?;
    Ok((t, revision, "SEP registry public-opstate".into()))
}

#[cfg(not(windows))]
fn registry_defs() -> Found {
    Err("SEP's registry values exist on Windows only".into())
}

/// The newest `def_info` (`YYYYMMDD.rrr`, field 26) among the lines of the newest AV log.
fn sep_log_defs(glob_pattern: &str) -> Found {
    let newest = glob::glob(glob_pattern)
        .map_err(|e| format!("{glob_pattern}: {e}"))?
        .flatten()
        .filter_map(|p| {
            std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, p))
        })
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| format!("no SEP AV log matches {glob_pattern}"))?;
    let text = read_tail(&newest, 4 << 20)?;
    // The SEP AV log parser (quoted fields may hold commas).
    let parser = watchpost_sources::Format::SepAvLog.parser();
    let ctx = watchpost_sources::ParseCtx::new("checks", "local");
    let def_info = watchpost_event::Sym::new("def_info");
    let best = text
        .lines()
        .filter_map(|l| parser.parse(&ctx, l.as_bytes()).ok())
        .filter_map(|e| e.get_str(def_info).map(|c| c.into_owned()))
        .filter_map(|d| {
            let (date, rev) = d.trim().split_once('.')?;
            (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (date.to_owned(), rev.to_owned()))
        })
        .max()
        .ok_or_else(|| {
            format!(
                "{}: no line names its definitions (def_info)",
                newest.display()
            )
        })?;
    let t = parse_date(&best.0, "%Y%m%d")?;
    Ok((t, Some(best.1), format!("def_info in {}", newest.display())))
}

fn read_head(path: &Path, max: u64) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn read_tail(path: &PathBuf, max: u64) -> Result<String, String> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max {
        f.seek(SeekFrom::Start(len - max))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Runs `argv` (no shell) for at most `limit`; its standard output.
fn run(argv: &[String], limit: Duration) -> Result<String, String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let mut out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.take(1 << 20).read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} ran longer than {limit:?}; killed", argv[0]));
            }
        }
    }
    let buf = reader.join().unwrap_or_default();
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn find_date(text: &str, re: &Regex, fmt: &str) -> Result<Timestamp, String> {
    let caps = re
        .captures(text)
        .ok_or_else(|| format!("`{}` does not match", re.as_str()))?;
    let s = caps.name("date").map(|m| m.as_str()).unwrap_or_default();
    parse_date(s.trim(), fmt)
}

/// A date or time: `auto` tries RFC 3339, `YYYY-MM-DD`, `YYYYMMDD`; otherwise a strftime
/// format (without an offset in it the time is UTC).
pub(crate) fn parse_date(s: &str, fmt: &str) -> Result<Timestamp, String> {
    let utc =
        |dt: jiff::civil::DateTime| dt.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp());
    if fmt == "auto" {
        if let Ok(t) = s.parse::<Timestamp>() {
            return Ok(t);
        }
        for f in ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%m/%d/%Y"] {
            if let Ok(d) = jiff::civil::Date::strptime(f, s) {
                return utc(d.to_datetime(jiff::civil::Time::midnight()))
                    .map_err(|e| e.to_string());
            }
        }
        return Err(format!(
            "`{s}` is not a date I can read; give `date_format`"
        ));
    }
    let tm = jiff::fmt::strtime::BrokenDownTime::parse(fmt, s)
        .map_err(|e| format!("`{s}` with `{fmt}`: {e}"))?;
    if let Ok(t) = tm.to_timestamp() {
        return Ok(t);
    }
    if let Ok(dt) = tm.to_datetime() {
        return utc(dt).map_err(|e| e.to_string());
    }
    tm.to_date()
        .map_err(|e| format!("`{s}` with `{fmt}`: {e}"))
        .and_then(|d| utc(d.to_datetime(jiff::civil::Time::midnight())).map_err(|e| e.to_string()))
}

fn file(path: &str, exists: bool, sha256: Option<&str>, sha256_not: Option<&str>) -> Observation {
    let meta = std::fs::metadata(path);
    match (meta, exists) {
        (Err(e), true) if e.kind() == std::io::ErrorKind::NotFound => {
            Observation::new("missing", format!("{path} does not exist")).field("path", path)
        }
        (Err(e), true) => Observation::new("error", format!("{path}: {e}")).field("path", path),
        (Err(_), false) => Observation::new("ok", format!("{path} does not exist, as expected"))
            .field("path", path),
        (Ok(_), false) => {
            Observation::new("present", format!("{path} exists and should not")).field("path", path)
        }
        (Ok(_), true) if sha256.is_none() && sha256_not.is_none() => {
            Observation::new("ok", format!("{path} exists")).field("path", path)
        }
        (Ok(_), true) => match hash_file(path) {
            Err(e) => Observation::new("error", format!("{path}: {e}")).field("path", path),
            Ok(h) => {
                let wrong = sha256.is_some_and(|x| x != h) || sha256_not.is_some_and(|x| x == h);
                let detail = if wrong {
                    format!("{path} has SHA-256 {h}, which is not what is expected")
                } else {
                    format!("{path} has the expected SHA-256")
                };
                Observation::new(if wrong { "changed" } else { "ok" }, detail)
                    .field("path", path)
                    .field("sha256", h)
            }
        },
    }
}

fn hash_file(path: &str) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Each service's state: `Ok(true)` running.
fn service(names: &[String]) -> Observation {
    let mut down = Vec::new();
    let mut states = Vec::new();
    for n in names {
        match service_state(n) {
            Ok((running, state)) => {
                if !running {
                    down.push(n.clone());
                }
                states.push(format!("{n}={state}"));
            }
            Err(e) => {
                return Observation::new("error", format!("service {n}: {e}"))
                    .field("service", n.clone());
            }
        }
    }
    let state = states.join(", ");
    if down.is_empty() {
        Observation::new("ok", format!("running: {state}")).field("state", state)
    } else {
        Observation::new(
            "stopped",
            format!("not running: {} ({state})", down.join(", ")),
        )
        .field("service", down.join(","))
        .field("state", state)
    }
}

#[cfg(not(windows))]
fn service_state(name: &str) -> Result<(bool, String), String> {
    // `systemctl is-active` prints the state and exits 0 only for `active`; argv, no shell.
    let out = Command::new("systemctl")
        .args(["is-active", "--", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("systemctl: {e}"))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if state.is_empty() {
        return Err("systemctl printed no state (is systemd running?)".into());
    }
    Ok((state == "active", state))
}

#[cfg(windows)]
fn service_state(name: &str) -> Result<(bool, String), String> {
    use windows_service::service::{ServiceAccess, ServiceState};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    let m = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| format!("service control manager: {e}"))?;
    let s = m
        .open_service(name, ServiceAccess::QUERY_STATUS)
        .map_err(|e| format!("{e}"))?;
    let st = s.query_status().map_err(|e| format!("{e}"))?.current_state;
    Ok((
        st == ServiceState::Running,
        format!("{st:?}").to_lowercase(),
    ))
}

fn silence(source: &str, after: Duration, clock: &SourceClock) -> Observation {
    let now = Timestamp::now().as_millisecond();
    match clock(source) {
        None => Observation::new("error", format!("no source named `{source}` is running"))
            .field("silent_source", source),
        Some(last) => {
            let quiet = Duration::from_millis((now - last).max(0) as u64);
            let last_s = Timestamp::from_millisecond(last)
                .map(|t| t.to_string())
                .unwrap_or_default();
            if quiet > after {
                Observation::new(
                    "silent",
                    format!(
                        "source {source} delivered nothing for {} min (last at {last_s})",
                        quiet.as_secs() / 60
                    ),
                )
                .field("silent_source", source)
                .field("last_event", last_s)
            } else {
                Observation::new("ok", format!("source {source} delivered at {last_s}"))
                    .field("silent_source", source)
                    .field("last_event", last_s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_several_forms() {
        assert_eq!(
            parse_date("2026-11-20", "auto").unwrap().to_string(),
            "2026-11-20T00:00:00Z"
        );
        assert_eq!(
            parse_date("20261120", "auto").unwrap().to_string(),
            "2026-11-20T00:00:00Z"
        );
        assert_eq!(
            parse_date("2026-11-20T08:00:00+01:00", "auto")
                .unwrap()
                .to_string(),
            "2026-11-20T07:00:00Z"
        );
        // ClamAV's header: "22 Nov 2026 08-27 +0000".
        assert_eq!(
            parse_date("22 Nov 2026 08-27 +0000", "%d %b %Y %H-%M %z")
                .unwrap()
                .to_string(),
            "2026-11-22T08:27:00Z"
        );
        assert!(parse_date("yesterday", "auto").is_err());
    }
}
