//! The `quarantine` action: isolate this computer from the network until released.
//!
//! * Linux: one nftables table of watchpost's own (`inet watchpost_quarantine`) whose
//!   input, output and forward chains drop everything but loopback, the allow-list (peers,
//!   optionally one port of them), DNS to the resolvers and DHCP when asked (`nft.rs`).
//! * Windows: the registry value SEP's location awareness watches (the SEPM location
//!   "Quarantine" with a locked-down firewall policy), through the `registry` action's code;
//!   what it held before is restored on release, and a key that did not exist is deleted.
//! * Anywhere: a `hook` program (argv, no shell) run on apply and on release with
//!   `WATCHPOST_QUARANTINE=apply|release`, through the `run` action's process handling, e.g.
//!   to disconnect a VM's NIC at the hypervisor.
//!
//! What was applied, since when, why and until when is recorded in
//! `<state_dir>/quarantine.json` (`state.rs`), together with how to undo it, so the
//! daemon's timer, a `mode = "release"` action and `watchpost quarantine release` all
//! release the same way, also after a restart or a configuration change. Every change
//! holds the state lock and re-reads the file first; the record is written before anything
//! is applied (undoing what did not happen is harmless), and put back when `nft` fails.
//!
//! Applying while a quarantine is in force re-applies the firewall (one table: idempotent),
//! keeps `since`, and moves the expiry out when the new one is later (no `timeout` = never);
//! the registry's earlier value and the hook are not touched again.

pub(crate) mod nft;
mod state;

use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::{ActionScope, ConfigError, Event, Lookup, parse_duration};

pub use state::{
    EventInfo, HookUndo, NftUndo, PreviousValue, QuarantineState, RegistryUndo, Released,
    STATE_FILE, StateError, Undo,
};

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::{Tpl, bounded, deserialize};
use crate::registry::{self, Data, Hive, ValueKind};
use state::Locked;

/// The default table name.
pub const DEFAULT_TABLE: &str = "watchpost_quarantine";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Apply,
    Release,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    mode: Option<Spanned<Mode>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    allow_dns: Option<Spanned<bool>>,
    dns_servers: Option<Spanned<Vec<Spanned<String>>>>,
    allow_dhcp: Option<Spanned<bool>>,
    timeout: Option<Spanned<String>>,
    firewall: Option<Spanned<bool>>,
    nft: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
    registry: Option<Spanned<RawRegistryPart>>,
    hook: Option<Spanned<Vec<Spanned<String>>>>,
    hook_timeout_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistryPart {
    key: Spanned<String>,
    value: Option<Spanned<String>>,
    kind: Option<Spanned<ValueKind>>,
    data: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
struct RegistryPart {
    hive: Hive,
    path: String,
    value: String,
    data: Data,
    span: Range<usize>,
}

/// A validated `quarantine` action.
#[derive(Debug, Clone)]
pub(crate) struct QuarantineSpec {
    mode: Mode,
    allow: Vec<nft::Allow>,
    allow_dns: bool,
    dns_servers: Option<Vec<IpAddr>>,
    allow_dhcp: bool,
    timeout: Option<Duration>,
    firewall: bool,
    firewall_span: Option<Range<usize>>,
    nft: Spanned<String>,
    table: String,
    registry: Option<RegistryPart>,
    hook: Vec<Tpl>,
    hook_span: Option<Range<usize>>,
    hook_timeout: Duration,
    state_dir: Option<PathBuf>,
    type_span: Range<usize>,
}

/// Why applying or releasing failed.
#[derive(Debug, Error)]
pub enum QuarantineError {
    /// The action was not given the state directory (a bug of the caller).
    #[error("no state directory is set for the quarantine action")]
    NoStateDir,
    /// The state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// `nft` failed: nothing of the transaction was applied.
    #[error("firewall: {0}")]
    Firewall(String),
    /// The registry value could not be read, written or restored.
    #[error("registry: {0}")]
    Registry(String),
    /// The hook failed (the quarantine itself is recorded as applied or released).
    #[error("hook: {0}")]
    Hook(String),
    /// This is a `mode = "release"` action.
    #[error("`{0}` is a mode = \"release\" action; apply with a mode = \"apply\" one")]
    ReleaseOnly(String),
}

fn reject(errors: &mut Vec<ConfigError>, span: Option<Range<usize>>, key: &str) {
    if let Some(span) = span {
        errors.push(ConfigError::new(
            span,
            format!("`{key}` does not apply to mode = \"release\" (it undoes what the applying action recorded)"),
        ));
    }
}

impl QuarantineSpec {
    pub(crate) fn parse(
        table: Spanned<DeValue<'_>>,
        type_span: Range<usize>,
    ) -> Result<QuarantineSpec, Vec<ConfigError>> {
        let raw: RawQuarantine = deserialize(table)?;
        let mut errors = Vec::new();
        let mode = raw.mode.as_ref().map_or(Mode::Apply, |m| *m.get_ref());
        if mode == Mode::Release {
            let e = &mut errors;
            reject(e, raw.allow.as_ref().map(Spanned::span), "allow");
            reject(e, raw.allow_dns.as_ref().map(Spanned::span), "allow_dns");
            reject(
                e,
                raw.dns_servers.as_ref().map(Spanned::span),
                "dns_servers",
            );
            reject(e, raw.allow_dhcp.as_ref().map(Spanned::span), "allow_dhcp");
            reject(e, raw.timeout.as_ref().map(Spanned::span), "timeout");
            reject(e, raw.firewall.as_ref().map(Spanned::span), "firewall");
            reject(e, raw.nft.as_ref().map(Spanned::span), "nft");
            reject(e, raw.table.as_ref().map(Spanned::span), "table");
            reject(e, raw.registry.as_ref().map(Spanned::span), "registry");
            reject(e, raw.hook.as_ref().map(Spanned::span), "hook");
            let s = raw.hook_timeout_secs.as_ref().map(Spanned::span);
            reject(e, s, "hook_timeout_secs");
        }
        let mut allow = Vec::new();
        for a in raw.allow.iter().flat_map(|l| l.get_ref()) {
            match nft::parse_allow(a.get_ref()) {
                Ok(x) => allow.push(x),
                Err(why) => errors.push(ConfigError::new(a.span(), why)),
            }
        }
        let dns_servers = raw.dns_servers.as_ref().map(|list| {
            let mut out = Vec::new();
            for s in list.get_ref() {
                match s.get_ref().trim().parse::<IpAddr>() {
                    Ok(ip) => out.push(ip),
                    Err(_) => errors.push(ConfigError::new(
                        s.span(),
                        format!("`{}` is not an IPv4 or IPv6 address", s.get_ref()),
                    )),
                }
            }
            out
        });
        let allow_dns = raw.allow_dns.as_ref().is_some_and(|b| *b.get_ref());
        if let (false, Some(list)) = (allow_dns, &raw.dns_servers) {
            errors.push(ConfigError::new(
                list.span(),
                "`dns_servers` needs allow_dns = true",
            ));
        }
        let timeout = match &raw.timeout {
            None => None,
            Some(t) => match parse_duration(t.get_ref()) {
                Ok(d) if d >= Duration::from_secs(1) => Some(d),
                Ok(_) => {
                    errors.push(ConfigError::new(
                        t.span(),
                        "`timeout` must be at least 1s (leave it out for no expiry)",
                    ));
                    None
                }
                Err(why) => {
                    errors.push(ConfigError::new(t.span(), why));
                    None
                }
            },
        };
        let table = raw
            .table
            .as_ref()
            .map_or(DEFAULT_TABLE.to_owned(), |t| t.get_ref().clone());
        if let Some(t) = &raw.table
            && !nft::valid_table(t.get_ref())
        {
            errors.push(ConfigError::new(
                t.span(),
                "`table` must be letters, digits and `_`, not starting with a digit (at most 64)",
            ));
        }
        let nft = raw
            .nft
            .clone()
            .unwrap_or_else(|| Spanned::new(type_span.clone(), "nft".to_owned()));
        let registry = raw
            .registry
            .as_ref()
            .and_then(|r| parse_registry(r, &mut errors));
        let mut hook = Vec::new();
        if let Some(h) = &raw.hook {
            match h.get_ref().first() {
                None => errors.push(ConfigError::new(
                    h.span(),
                    "`hook` is [program, arguments…]; it is empty",
                )),
                Some(p) if p.get_ref().contains("{{") => errors.push(ConfigError::new(
                    p.span(),
                    "the hook's program cannot be a template (its arguments can)",
                )),
                Some(p)
                    if p.get_ref().is_empty()
                        || (!Path::new(p.get_ref()).is_absolute()
                            && p.get_ref().contains(['/', '\\'])) =>
                {
                    errors.push(ConfigError::new(
                        p.span(),
                        "the hook's program must be an absolute path or a bare name found on PATH",
                    ))
                }
                Some(_) => {}
            }
            hook = h
                .get_ref()
                .iter()
                .filter_map(|a| Tpl::parse(a, &mut errors))
                .collect();
        }
        let e = &mut errors;
        let hook_timeout = bounded(
            raw.hook_timeout_secs.as_ref(),
            60,
            1..=3600,
            "hook_timeout_secs",
            e,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(QuarantineSpec {
            mode,
            allow,
            allow_dns,
            dns_servers,
            allow_dhcp: raw.allow_dhcp.as_ref().is_some_and(|b| *b.get_ref()),
            timeout,
            firewall: raw.firewall.as_ref().is_none_or(|b| *b.get_ref()),
            firewall_span: raw.firewall.as_ref().map(Spanned::span),
            nft,
            table,
            registry,
            hook,
            hook_span: raw.hook.as_ref().map(Spanned::span),
            hook_timeout: Duration::from_secs(hook_timeout),
            state_dir: None,
            type_span: type_span.clone(),
        })
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        self.hook.iter().skip(1)
    }

    pub(crate) fn set_state_dir(&mut self, dir: &Path) {
        self.state_dir = Some(dir.to_owned());
    }

    /// Whether the nftables part runs on this system.
    fn firewall_here(&self) -> bool {
        self.firewall && cfg!(target_os = "linux")
    }

    /// Whether the registry part runs on this system.
    fn registry_here(&self) -> Option<&RegistryPart> {
        self.registry.as_ref().filter(|_| cfg!(windows))
    }

    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        if self.mode == Mode::Release {
            return out;
        }
        if self.firewall_here() {
            out.extend(crate::run::check_program(
                self.nft.get_ref(),
                self.nft.span(),
                " (the quarantine needs nftables' `nft`; install the `nftables` package or set `nft`)",
            ));
            if self.allow.is_empty() && !self.allow_dns {
                out.push(ConfigError::warning(
                    self.type_span.clone(),
                    "the allow-list is empty: while quarantined this computer reaches nothing, not the SIEM nor the management server",
                ));
            }
        } else if self.firewall
            && !cfg!(target_os = "linux")
            && let Some(span) = &self.firewall_span
        {
            out.push(ConfigError::warning(
                span.clone(),
                "the nftables firewall exists on Linux only; on this system it is skipped",
            ));
        }
        if let Some(r) = &self.registry
            && !cfg!(windows)
        {
            out.push(ConfigError::warning(
                r.span.clone(),
                "the registry value is written on Windows only; on this system it is skipped",
            ));
        }
        if cfg!(windows) && self.registry.is_none() && self.hook.is_empty() {
            out.push(ConfigError::warning(
                self.type_span.clone(),
                "on Windows the quarantine is the `registry` value for SEP's location awareness (or a `hook`); neither is set, so it does nothing",
            ));
        }
        if let (Some(p), Some(span)) = (self.hook.first(), &self.hook_span) {
            out.extend(crate::run::check_program(
                p.template.source(),
                span.clone(),
                " (the quarantine's `hook`)",
            ));
        }
        out
    }

    /// Whether traffic to `ip:port` passes while quarantined (for `check-config`'s warning
    /// about syslog targets left out of the allow-list).
    pub(crate) fn lets_through(&self, ip: IpAddr, port: u16) -> bool {
        ip.is_loopback()
            || self
                .allow
                .iter()
                .any(|a| a.net.contains(ip) && a.port.is_none_or(|p| p == port))
            || (self.allow_dns && port == 53 && self.dns_servers.iter().flatten().any(|&d| d == ip))
    }

    /// The firewall policy, resolvers read from /etc/resolv.conf when `dns_servers` is not
    /// configured.
    fn policy(&self) -> nft::Policy {
        let dns = match (&self.dns_servers, self.allow_dns) {
            (_, false) => Vec::new(),
            (Some(list), true) => list.clone(),
            (None, true) => {
                // systemd-resolved's stub (127.0.0.53) is loopback; its upstream servers
                // are in its own file.
                let servers = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]
                    .iter()
                    .filter_map(|p| std::fs::read_to_string(p).ok())
                    .map(|text| nft::resolv_conf_servers(&text))
                    .find(|s| !s.is_empty())
                    .unwrap_or_default();
                if servers.is_empty() {
                    tracing::warn!(
                        "quarantine: no DNS server in /etc/resolv.conf or /run/systemd/resolve/resolv.conf; DNS stays cut (set dns_servers)"
                    );
                }
                servers
            }
        };
        nft::Policy {
            allow: self.allow.clone(),
            dns,
            dhcp: self.allow_dhcp,
        }
    }

    /// The `nft` script applying this quarantine.
    pub(crate) fn script(&self) -> String {
        nft::apply_script(&self.table, &self.policy())
    }

    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        crate::control::serve(name, rx, counters, ctl, |job| self.on_job(name, job, ctl));
    }

    fn on_job(&self, name: &str, job: &Job, ctl: &Control) -> Result<(), QuarantineError> {
        let dir = self
            .state_dir
            .as_deref()
            .ok_or(QuarantineError::NoStateDir)?;
        match self.mode {
            Mode::Release => {
                let reason = format!("filter `{}` fired", job.filter);
                match release_in(dir, "daemon", &reason, ctl)? {
                    Some(_) => {
                        tracing::warn!(action = name, filter = %job.filter, "quarantine released")
                    }
                    None => {
                        tracing::info!(action = name, filter = %job.filter, "no quarantine in force to release")
                    }
                }
                Ok(())
            }
            Mode::Apply => {
                let e = &job.event;
                let mut raw = e.raw.clone();
                raw.truncate(raw.floor_char_boundary(500));
                let trigger = Trigger {
                    reason: format!("filter `{}` fired", job.filter),
                    by: "daemon".to_owned(),
                    filter: Some(job.filter.to_string()),
                    event: Some(EventInfo {
                        source: e.source.to_string(),
                        host: e.host.to_string(),
                        time: e.time.map(watchpost_event::format_time),
                        origin: e
                            .origin
                            .as_ref()
                            .map(|o| format!("{}:{}", o.place, o.offset)),
                        raw,
                    }),
                };
                let (new, state) = self.apply_in(name, dir, trigger, &job.scope(), ctl)?;
                let until = state.until.as_deref().unwrap_or("released");
                if new {
                    tracing::warn!(action = name, filter = %job.filter, until, "quarantine applied");
                } else {
                    tracing::info!(action = name, filter = %job.filter, since = %state.since, until, "quarantine already in force: renewed");
                }
                Ok(())
            }
        }
    }

    /// Applies (or renews) the quarantine; `true` when it was not in force before.
    fn apply_in(
        &self,
        name: &str,
        dir: &Path,
        trigger: Trigger,
        scope: &dyn Lookup,
        ctl: &Control,
    ) -> Result<(bool, QuarantineState), QuarantineError> {
        if self.mode == Mode::Release {
            return Err(QuarantineError::ReleaseOnly(name.to_owned()));
        }
        let lock = Locked::acquire(dir)?;
        let now = now();
        let until = self.timeout.and_then(|d| {
            let d = jiff::SignedDuration::try_from(d).ok()?;
            now.checked_add(d).ok()
        });
        let script = self.firewall_here().then(|| self.script());
        let previous = lock.read()?;
        if let Some(mut s) = previous.clone().filter(|s| s.active) {
            if let (Some(script), Some(n)) = (&script, &s.undo.nft) {
                let script = match n.table == self.table {
                    true => script.clone(),
                    false => nft::apply_script(&n.table, &self.policy()),
                };
                nft::run(&n.program, &script)
                    .map_err(|e| QuarantineError::Firewall(e.to_string()))?;
            }
            s.until = match (s.until_time(), until) {
                (Some(old), Some(new)) => Some(old.max(new).to_string()),
                _ => None,
            };
            lock.write(&s)?;
            return Ok((false, s));
        }
        let mut state = QuarantineState::new(name, now.to_string(), trigger.reason, trigger.by);
        state.until = until.map(|u| u.to_string());
        state.filter = trigger.filter;
        state.event = trigger.event;
        if script.is_some() {
            state.undo.nft = Some(NftUndo {
                program: self.nft.get_ref().clone(),
                table: self.table.clone(),
            });
        }
        let mut failure = None;
        // The registry value's earlier data is read before anything changes.
        let registry = match self.registry_here().map(|r| (r, read_registry(r))) {
            Some((r, Ok(undo))) => {
                state.undo.registry = Some(undo);
                Some(r)
            }
            Some((_, Err(e))) => {
                failure = Some(QuarantineError::Registry(e));
                None
            }
            None => None,
        };
        if !self.hook.is_empty() {
            state.undo.hook = Some(HookUndo {
                argv: self.hook.iter().map(|t| t.template.render(scope)).collect(),
                timeout_secs: self.hook_timeout.as_secs(),
            });
        }
        // Recorded before anything is applied: the computer is never isolated without a
        // record that undoes it (undoing what did not happen is harmless).
        lock.write(&state)?;
        if let Some(script) = &script
            && let Err(e) = nft::run(self.nft.get_ref(), script)
        {
            // One transaction: nothing was applied, so the record goes back as it was.
            if let Err(e) = lock.put_back(previous.as_ref()) {
                tracing::error!(error = %e, "quarantine: restoring the state file after a failed apply");
            }
            return Err(QuarantineError::Firewall(e.to_string()));
        }
        if let Some(r) = registry
            && let Err(e) = registry::set_value(r.hive, &r.path, &r.value, &r.data)
        {
            failure.get_or_insert(QuarantineError::Registry(e.to_string()));
        }
        if let Some(h) = &state.undo.hook
            && let Err(e) = run_hook(name, h, "apply", ctl)
        {
            failure.get_or_insert(QuarantineError::Hook(e));
        }
        match failure {
            Some(e) => Err(e),
            None => Ok((true, state)),
        }
    }
}

fn parse_registry(
    r: &Spanned<RawRegistryPart>,
    errors: &mut Vec<ConfigError>,
) -> Option<RegistryPart> {
    let raw = r.get_ref();
    let (hive, path) = registry::parse_fixed_key(&raw.key, errors)?;
    let kind = raw.kind.as_ref().map_or(ValueKind::Dword, |k| *k.get_ref());
    let text = raw
        .data
        .as_ref()
        .map_or("1".to_owned(), |d| d.get_ref().clone());
    let data = match registry::to_data(kind, text) {
        Ok(d) => d,
        Err(e) => {
            let span = raw.data.as_ref().map_or(r.span(), Spanned::span);
            errors.push(ConfigError::new(span, e.to_string()));
            return None;
        }
    };
    let value = raw
        .value
        .as_ref()
        .map_or("Active".to_owned(), |v| v.get_ref().clone());
    if value.contains('\0') {
        let span = raw.value.as_ref().map_or(r.span(), Spanned::span);
        errors.push(ConfigError::new(span, "`value` contains a NUL byte"));
        return None;
    }
    Some(RegistryPart {
        hive,
        path,
        value,
        data,
        span: r.span(),
    })
}

/// How to undo setting the location-awareness value: what it holds now.
fn read_registry(r: &RegistryPart) -> Result<RegistryUndo, String> {
    let (key_existed, previous) =
        registry::read_value(r.hive, &r.path, &r.value).map_err(|e| e.to_string())?;
    Ok(RegistryUndo {
        hive: r.hive.short().to_owned(),
        path: r.path.clone(),
        value: r.value.clone(),
        key_existed,
        previous: previous.map(|d| {
            let (kind, data) = d.to_text();
            PreviousValue { kind, data }
        }),
    })
}

/// Restores what the value held before, deleting a key the quarantine created.
fn restore_registry(u: &RegistryUndo) -> Result<(), String> {
    let hive = Hive::from_short(&u.hive).ok_or_else(|| format!("unknown hive `{}`", u.hive))?;
    let r = match &u.previous {
        Some(p) => registry::to_data(p.kind, p.data.clone())
            .and_then(|d| registry::set_value(hive, &u.path, &u.value, &d)),
        None if !u.key_existed => registry::delete_key(hive, &u.path),
        None => registry::delete_value(hive, &u.path, &u.value),
    };
    r.map_err(|e| e.to_string())
}

/// Runs the recorded hook with `WATCHPOST_QUARANTINE=what`.
fn run_hook(action: &str, h: &HookUndo, what: &str, ctl: &Control) -> Result<(), String> {
    let Some((program, args)) = h.argv.split_first() else {
        return Ok(());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("WATCHPOST_QUARANTINE", what)
        .env("WATCHPOST_ACTION", action);
    let timeout = Duration::from_secs(h.timeout_secs.max(1));
    crate::run::run_command(action, program.clone(), cmd, timeout, 4096, ctl)
        .map_err(|e| e.to_string())
}

/// Now, to the second (what the state file records).
fn now() -> jiff::Timestamp {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Who and what applies a quarantine.
struct Trigger {
    reason: String,
    by: String,
    filter: Option<String>,
    event: Option<EventInfo>,
}

/// A `quarantine` action, for the `watchpost quarantine` commands.
#[derive(Debug, Clone, Copy)]
pub struct Quarantine<'a> {
    pub(crate) name: &'a str,
    pub(crate) spec: &'a QuarantineSpec,
}

impl Quarantine<'_> {
    /// The action's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Whether this is a `mode = "release"` action.
    pub fn releases(&self) -> bool {
        self.spec.mode == Mode::Release
    }

    /// The `nft` script it applies (Linux), for `--dry-run`.
    pub fn script(&self) -> Option<String> {
        self.spec.firewall_here().then(|| self.spec.script())
    }

    /// Applies it by hand (`watchpost quarantine apply`): `host` is what `{{ host }}`
    /// renders as in the hook, `by` who asked. Returns whether it was not in force before,
    /// and the state now.
    pub fn apply(
        &self,
        state_dir: &Path,
        host: &str,
        reason: &str,
        by: &str,
    ) -> Result<(bool, QuarantineState), QuarantineError> {
        let event = Event::new(Arc::from("cli"), Arc::from(host), reason.to_owned());
        let scope = ActionScope {
            event: &event,
            filter: "",
            actions: self.name,
        };
        let trigger = Trigger {
            reason: reason.to_owned(),
            by: by.to_owned(),
            filter: None,
            event: None,
        };
        self.spec
            .apply_in(self.name, state_dir, trigger, &scope, &Control::default())
    }
}

/// The recorded quarantine, if any (active or last released).
pub fn status(state_dir: &Path) -> Result<Option<QuarantineState>, StateError> {
    state::read(state_dir)
}

/// Releases the quarantine in force (`None`: there was none). `by` and `reason` are
/// recorded. The firewall table is deleted and the registry restored first; if that fails
/// the quarantine stays recorded as in force (so a later release tries again).
pub fn release(
    state_dir: &Path,
    by: &str,
    reason: &str,
) -> Result<Option<QuarantineState>, QuarantineError> {
    release_in(state_dir, by, reason, &Control::default())
}

fn release_in(
    dir: &Path,
    by: &str,
    reason: &str,
    ctl: &Control,
) -> Result<Option<QuarantineState>, QuarantineError> {
    let lock = Locked::acquire(dir)?;
    match lock.read()?.filter(|s| s.active) {
        Some(s) => release_locked(&lock, s, by, reason, ctl).map(Some),
        None => Ok(None),
    }
}

fn release_locked(
    lock: &Locked,
    mut s: QuarantineState,
    by: &str,
    reason: &str,
    ctl: &Control,
) -> Result<QuarantineState, QuarantineError> {
    if let Some(n) = &s.undo.nft {
        nft::run(&n.program, &nft::release_script(&n.table))
            .map_err(|e| QuarantineError::Firewall(e.to_string()))?;
    }
    if let Some(r) = &s.undo.registry {
        restore_registry(r).map_err(QuarantineError::Registry)?;
    }
    s.active = false;
    s.released = Some(Released {
        at: now().to_string(),
        by: by.to_owned(),
        reason: reason.to_owned(),
    });
    lock.write(&s)?;
    if let Some(h) = &s.undo.hook {
        run_hook(&s.action, h, "release", ctl).map_err(QuarantineError::Hook)?;
    }
    Ok(s)
}

/// Releases the quarantine when its expiry has passed (the daemon calls this every
/// second). The file is read without the lock first (cheap), then again under it. While
/// another process holds the lock (the CLI running a hook) this round is skipped, so the
/// daemon's timer never waits on it (nor holds up the daemon's shutdown).
pub fn release_if_due(state_dir: &Path) -> Result<Option<QuarantineState>, QuarantineError> {
    let due = |s: &QuarantineState| {
        s.active && s.until_time().is_some_and(|u| u <= jiff::Timestamp::now())
    };
    if !state::read(state_dir)?.is_some_and(|s| due(&s)) {
        return Ok(None);
    }
    let Some(lock) = Locked::try_acquire(state_dir)? else {
        return Ok(None);
    };
    match lock.read()?.filter(due) {
        Some(s) => {
            let reason = format!("expired (until {})", s.until.as_deref().unwrap_or("?"));
            release_locked(&lock, s, "timeout", &reason, &Control::default()).map(Some)
        }
        None => Ok(None),
    }
}

impl QuarantineSpec {
    /// Warnings for the syslog targets (action name, host, port) this quarantine would cut
    /// off (see `check_allow_lists`).
    pub(crate) fn cut_off(&self, name: &str, targets: &[(&str, (&str, u16))]) -> Vec<ConfigError> {
        if self.mode == Mode::Release || !self.firewall_here() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (action, (host, port)) in targets {
            if let Ok(ip) = host.parse::<IpAddr>()
                && !self.lets_through(ip, *port)
            {
                out.push(ConfigError::warning(
                    self.type_span.clone(),
                    format!(
                        "quarantine `{name}` cuts off syslog action `{action}` ({ip} port {port}); add it to `allow` to keep reporting while quarantined"
                    ),
                ));
            }
        }
        out
    }
}

impl crate::kind::ActionKind for QuarantineSpec {
    fn kind(&self) -> &'static str {
        "quarantine"
    }

    fn queue_capacity(&self) -> (u64, std::ops::RangeInclusive<u64>) {
        (100, 1..=100_000)
    }

    fn templates(&self) -> Vec<&Tpl> {
        QuarantineSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        QuarantineSpec::check(self)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        QuarantineSpec::work(self, name, rx, counters, ctl);
    }

    fn set_state_dir(&mut self, dir: &Path) {
        QuarantineSpec::set_state_dir(self, dir);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests;
