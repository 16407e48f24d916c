//! The `run` action: start a program with templated arguments and environment.
//!
//! Every `args` element is rendered separately and handed to the operating system as one
//! argv element; no shell is ever involved, so event data cannot inject commands.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::{Tpl, bounded, deserialize};
use crate::syslog::event_json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    program: Spanned<String>,
    args: Option<Vec<Spanned<String>>>,
    env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    cwd: Option<Spanned<String>>,
    timeout_secs: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<u64>>,
    max_output_bytes: Option<Spanned<u64>>,
    pass_event_env: Option<bool>,
    max_event_json_bytes: Option<Spanned<u64>>,
    clear_env: Option<bool>,
    retry_exit_codes: Option<Vec<Spanned<i64>>>,
}

/// A validated `run` action.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    program: Spanned<String>,
    args: Vec<Tpl>,
    env: Vec<(String, Tpl)>,
    cwd: Option<Spanned<String>>,
    timeout: Duration,
    pub(crate) max_concurrent: usize,
    max_output: usize,
    pass_event_env: bool,
    max_event_json: usize,
    clear_env: bool,
    /// Exit codes that mean "try again later" (with the common `retry` table: any
    /// non-zero exit when this is empty).
    retry_exit_codes: Vec<i32>,
}

impl RunSpec {
    /// A `run` made by a preset (`scan`): defaults for everything not given.
    pub(crate) fn preset(
        program: Spanned<String>,
        args: Vec<Tpl>,
        timeout: Duration,
        max_concurrent: usize,
    ) -> RunSpec {
        RunSpec {
            program,
            args,
            env: Vec::new(),
            cwd: None,
            timeout,
            max_concurrent,
            max_output: 4096,
            pass_event_env: true,
            max_event_json: 32_768,
            clear_env: false,
            retry_exit_codes: Vec::new(),
        }
    }

    /// The program and the argument templates as written (tests).
    #[cfg(test)]
    pub(crate) fn argv_text(&self) -> Vec<String> {
        std::iter::once(self.program.get_ref().clone())
            .chain(self.args.iter().map(|a| a.template.source().to_owned()))
            .collect()
    }
}

/// Why a run failed.
#[derive(Debug, Error)]
pub(crate) enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{program} exited with {status}")]
    Exit { program: String, status: ExitStatus },
    #[error("{program} ran longer than {timeout:?} and was killed")]
    Timeout { program: String, timeout: Duration },
    #[error("{program} was killed at shutdown")]
    Shutdown { program: String },
    #[error("waiting for {program} failed: {source}")]
    Wait { program: String, source: io::Error },
}

/// How long to wait for the output readers after the child has exited (a grandchild
/// may keep the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

impl RunSpec {
    pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<RunSpec, Vec<ConfigError>> {
        let raw: RawRun = deserialize(table)?;
        let mut errors = Vec::new();
        let p = raw.program.get_ref();
        if p.is_empty()
            || (!Path::new(p).is_absolute()
                && foreign_platform_path(p).is_none()
                && p.contains(['/', '\\']))
        {
            errors.push(ConfigError::new(
                raw.program.span(),
                "`program` must be an absolute path or a bare name found on PATH",
            ));
        }
        let args = raw
            .args
            .iter()
            .flatten()
            .filter_map(|a| Tpl::parse(a, &mut errors))
            .collect();
        let mut env = Vec::new();
        for (key, value) in raw.env.iter().flatten() {
            let k = key.get_ref();
            if k.is_empty() || k.contains(['=', '\0']) {
                errors.push(ConfigError::new(
                    key.span(),
                    "an environment variable name must be non-empty, without `=`",
                ));
            }
            env.extend(Tpl::parse(value, &mut errors).map(|t| (k.clone(), t)));
        }
        let e = &mut errors;
        let timeout = bounded(raw.timeout_secs.as_ref(), 60, 1..=86_400, "timeout_secs", e);
        let max_concurrent = bounded(raw.max_concurrent.as_ref(), 4, 1..=64, "max_concurrent", e);
        let max_output = bounded(
            raw.max_output_bytes.as_ref(),
            4096,
            0..=1 << 20,
            "max_output_bytes",
            e,
        );
        let max_event_json = bounded(
            raw.max_event_json_bytes.as_ref(),
            32_768,
            0..=100_000,
            "max_event_json_bytes",
            e,
        );
        let mut retry_exit_codes = Vec::new();
        for c in raw.retry_exit_codes.iter().flatten() {
            match i32::try_from(*c.get_ref()) {
                Ok(v) if v != 0 => retry_exit_codes.push(v),
                _ => errors.push(ConfigError::new(
                    c.span(),
                    "an exit code here is a non-zero 32-bit number",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RunSpec {
            retry_exit_codes,
            program: raw.program,
            args,
            env,
            cwd: raw.cwd,
            timeout: Duration::from_secs(timeout),
            max_concurrent: max_concurrent as usize,
            max_output: max_output as usize,
            pass_event_env: raw.pass_event_env.unwrap_or(true),
            max_event_json: max_event_json as usize,
            clear_env: raw.clear_env.unwrap_or(false),
        })
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        self.args.iter().chain(self.env.iter().map(|(_, t)| t))
    }

    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        errors.extend(check_program(
            self.program.get_ref(),
            self.program.span(),
            "",
        ));
        if let Some(cwd) = &self.cwd {
            let dir = cwd.get_ref();
            if let Some(platform) = foreign_platform_path(dir) {
                let message =
                    format!("`{dir}` is a {platform} path; it is checked on {platform} only");
                errors.push(ConfigError::warning(cwd.span(), message));
            } else if !Path::new(dir).exists() {
                let message = format!(
                    "`{dir}` does not exist: the action fails on this system until it does"
                );
                errors.push(ConfigError::warning(cwd.span(), message));
            } else if !Path::new(dir).is_dir() {
                let message = format!("`{dir}` is not a directory");
                errors.push(ConfigError::new(cwd.span(), message));
            }
        }
        errors
    }

    /// The deliverer when the action retries (`retry_exit_codes`, or a `retry` table):
    /// one program at a time, in order.
    pub(crate) fn deliverer(
        &self,
        name: &str,
        retry_configured: bool,
    ) -> Option<Box<dyn crate::delivery::Deliver>> {
        (retry_configured || !self.retry_exit_codes.is_empty()).then(|| {
            Box::new(RunDeliver {
                spec: self.clone(),
                name: name.to_owned(),
            }) as Box<dyn crate::delivery::Deliver>
        })
    }

    /// One worker of the pool: runs one program at a time.
    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        while let Ok(job) = rx.recv() {
            if ctl.past_deadline() {
                counters.dropped(1);
                break;
            }
            let outcome = self.execute(name, &job, ctl);
            if matches!(outcome, Err(RunError::Timeout { .. })) {
                counters.timed_out();
            }
            counters.finish(ctl, name, &job, outcome);
        }
    }

    fn command(&self, name: &str, job: &Job) -> Command {
        let scope = job.scope();
        let mut cmd = Command::new(self.program.get_ref());
        let mut buf = String::new();
        for arg in &self.args {
            buf.clear();
            arg.template.render_into(&scope, &mut buf);
            cmd.arg(&buf);
        }
        if self.clear_env {
            cmd.env_clear();
        }
        if self.pass_event_env {
            cmd.env("WATCHPOST_ACTION", name)
                .env("WATCHPOST_FILTER", &*job.filter)
                .env("WATCHPOST_SOURCE", &*job.event.source)
                .env("WATCHPOST_HOST", &*job.event.host);
            let json = event_json(&scope);
            if json.len() <= self.max_event_json {
                cmd.env("WATCHPOST_EVENT_JSON", json);
            }
        }
        for (key, value) in &self.env {
            cmd.env(key, value.template.render(&scope));
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd.get_ref());
        }
        cmd
    }

    fn execute(&self, name: &str, job: &Job, ctl: &Control) -> Result<(), RunError> {
        let program = self.program.get_ref().clone();
        let cmd = self.command(name, job);
        run_command(name, program, cmd, self.timeout, self.max_output, ctl)
    }
}

/// Runs a prepared command the way every `run` job runs: stdin `/dev/null`, stdout and
/// stderr captured (the first `max_output` bytes logged), the program (its process group
/// on Unix) killed after `timeout` or at shutdown's deadline; a non-zero exit is an error.
/// The quarantine action's hook runs through here too.
pub(crate) fn run_command(
    name: &str,
    program: String,
    mut cmd: Command,
    timeout: Duration,
    max_output: usize,
    ctl: &Control,
) -> Result<(), RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdout = capture(child.stdout.take(), max_output);
    let stderr = capture(child.stderr.take(), max_output);
    let ended = wait(&mut child, timeout, ctl);
    let status = match &ended {
        Ok(Ended::Exited(s)) => s.to_string(),
        Ok(Ended::TimedOut) => "killed (timeout)".to_owned(),
        Ok(Ended::Shutdown) => "killed (shutdown)".to_owned(),
        Err(e) => format!("unknown ({e})"),
    };
    let until = Instant::now() + OUTPUT_GRACE;
    if let Some(out) = stdout
        .and_then(|rx| rx.recv_deadline(until).ok())
        .filter(|o| !o.is_empty())
    {
        tracing::info!(action = name, program = %program, status = %status, stdout = %out, "program output");
    }
    if let Some(err) = stderr
        .and_then(|rx| rx.recv_deadline(until).ok())
        .filter(|o| !o.is_empty())
    {
        tracing::warn!(action = name, program = %program, status = %status, stderr = %err, "program error output");
    }
    match ended {
        Ok(Ended::Exited(s)) if s.success() => Ok(()),
        Ok(Ended::Exited(status)) => Err(RunError::Exit { program, status }),
        Ok(Ended::TimedOut) => Err(RunError::Timeout { program, timeout }),
        Ok(Ended::Shutdown) => Err(RunError::Shutdown { program }),
        Err(source) => Err(RunError::Wait { program, source }),
    }
}

/// A `run` action that retries: an exit code listed in `retry_exit_codes` (any non-zero
/// one when the list is empty), a timeout or a failure to start is transient; another
/// exit code, or being killed at shutdown... the latter is transient too (tried again
/// after the restart).
struct RunDeliver {
    spec: RunSpec,
    name: String,
}

impl crate::delivery::Deliver for RunDeliver {
    fn deliver(&mut self, job: &Job, ctl: &Control) -> Result<(), crate::delivery::Failure> {
        use crate::delivery::Failure;
        match self.spec.execute(&self.name, job, ctl) {
            Ok(()) => Ok(()),
            Err(e @ RunError::Exit { status, .. }) => {
                let code = status.code();
                let codes = &self.spec.retry_exit_codes;
                if codes.is_empty() || code.is_some_and(|c| codes.contains(&c)) {
                    Err(Failure::Transient(e.to_string()))
                } else {
                    Err(Failure::Permanent(e.to_string()))
                }
            }
            Err(e) => Err(Failure::Transient(e.to_string())),
        }
    }
}

enum Ended {
    Exited(ExitStatus),
    TimedOut,
    Shutdown,
}

/// Waits for the child, killing it (and its process group on Unix) after `timeout` or
/// at shutdown's deadline. Polls with a back-off from 1 ms to 20 ms.
fn wait(child: &mut Child, timeout: Duration, ctl: &Control) -> io::Result<Ended> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ended::Exited(status));
        }
        let ended = if start.elapsed() >= timeout {
            Ended::TimedOut
        } else if ctl.past_deadline() {
            Ended::Shutdown
        } else {
            std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(20));
            continue;
        };
        kill(child);
        child.wait()?;
        return Ok(ended);
    }
}

fn kill(child: &mut Child) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process_group};
        let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    }
    let _ = child.kill();
}

/// Reads a pipe on its own thread: keeps the first `limit` bytes, discards the rest (so
/// the child never blocks on a full pipe) and sends the text when the pipe closes.
fn capture<R: io::Read + Send + 'static>(
    pipe: Option<R>,
    limit: usize,
) -> Option<Receiver<String>> {
    let mut pipe = pipe?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("run-output".into())
        .spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            let mut total = 0usize;
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = limit.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                        total += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let mut text = String::from_utf8_lossy(&kept).trim_end().to_owned();
            if total > kept.len() {
                text.push_str(&format!(" … ({} more bytes)", total - kept.len()));
            }
            let _ = tx.send(text);
        });
    spawned.ok().map(|_| rx)
}

/// The other platform's name when `path` is written for it and not for this one: a
/// Windows path (`C:\…`, `C:/…`, `\\server\…`) elsewhere, a Unix one (`/…`) on Windows.
/// Such a path cannot be checked here, and one configuration file may serve both
/// platforms, so `check-config` warns instead of failing.
pub fn foreign_platform_path(path: &str) -> Option<&'static str> {
    let b = path.as_bytes();
    if cfg!(windows) {
        return (b.first() == Some(&b'/') && !path.starts_with("//")).then_some("Unix");
    }
    let drive =
        b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'\\' | b'/');
    (drive || path.starts_with("\\\\")).then_some("Windows")
}

/// Why a program cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotRunnable {
    /// It is not there at all (not installed here), rather than there but unusable.
    pub(crate) missing: bool,
    /// What is wrong, naming the program.
    pub(crate) message: String,
}

impl std::fmt::Display for NotRunnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `check-config`'s verdict on a program an action runs (`hint` says what it is for).
/// A program that is not there — not installed on this machine, such as SEP's scanner
/// where SEP is not installed, or a path of the other platform — is a warning: one
/// configuration serves machines with and without the product, and the action fails
/// (logged and counted) only where the program is missing. One that is there but cannot
/// be run (not a file, not executable) is an error.
pub(crate) fn check_program(program: &str, span: Range<usize>, hint: &str) -> Option<ConfigError> {
    if let Some(platform) = foreign_platform_path(program) {
        return Some(ConfigError::warning(
            span,
            format!(
                "`{program}` is a {platform} path; it is checked on {platform} only, and the action fails on this system{hint}"
            ),
        ));
    }
    match find_program(program) {
        Ok(_) => None,
        Err(e) if e.missing => Some(ConfigError::warning(
            span,
            format!("{e}: the action fails on this system until it is installed{hint}"),
        )),
        Err(e) => Some(ConfigError::new(span, format!("{e}{hint}"))),
    }
}

/// Finds `program` (absolute, or a bare name on PATH) and checks it is executable.
pub(crate) fn find_program(program: &str) -> Result<PathBuf, NotRunnable> {
    let path = Path::new(program);
    if path.is_absolute() {
        return executable(path).map(|()| path.to_path_buf());
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let exts: Vec<String> = if cfg!(windows) {
        let pathext = std::env::var("PATHEXT").unwrap_or_else(|_| ".EXE;.BAT;.CMD;.COM".into());
        std::iter::once(String::new())
            .chain(pathext.split(';').map(str::to_owned))
            .collect()
    } else {
        vec![String::new()]
    };
    std::env::split_paths(&dirs)
        .flat_map(|dir| {
            exts.iter()
                .map(move |ext| dir.join(format!("{program}{ext}")))
        })
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| NotRunnable {
            missing: true,
            message: format!("`{program}` is not found on PATH"),
        })
}

fn executable(path: &Path) -> Result<(), NotRunnable> {
    let unusable = |message| NotRunnable {
        missing: false,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => NotRunnable {
            missing: true,
            message: format!("`{}` does not exist", path.display()),
        },
        _ => unusable(format!("`{}`: {e}", path.display())),
    })?;
    if !meta.is_file() {
        return Err(unusable(format!("`{}` is not a file", path.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(unusable(format!("`{}` is not executable", path.display())));
        }
    }
    Ok(())
}

impl crate::kind::ActionKind for RunSpec {
    fn kind(&self) -> &'static str {
        "run"
    }

    fn templates(&self) -> Vec<&Tpl> {
        RunSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        RunSpec::check(self)
    }

    fn concurrency(&self) -> usize {
        self.max_concurrent
    }

    fn deliverer(
        &self,
        name: &str,
        common: &crate::common::Common,
    ) -> Option<Box<dyn crate::delivery::Deliver + '_>> {
        RunSpec::deliverer(self, name, common.retry_configured)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        RunSpec::work(self, name, rx, counters, ctl);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::foreign_platform_path;
    use crate::config::test_util::*;

    #[test]
    fn program_must_be_absolute_or_bare() {
        let text = "[[action]]\nname = \"r\"\ntype = \"run\"\nprogram = \"bin/x\"\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(at(text, &errs[0].span), "\"bin/x\"");
    }

    #[test]
    #[cfg_attr(windows, ignore = "looks for `sh` on PATH and Unix paths")]
    fn check_finds_programs_and_directories() {
        let ok =
            parse_ok("[[action]]\nname = \"r\"\ntype = \"run\"\nprogram = \"sh\"\ncwd = \"/\"\n");
        assert!(ok.check().is_empty(), "{:?}", ok.check());
        let file = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "[[action]]\nname = \"r\"\ntype = \"run\"\nprogram = \"{}\"\ncwd = \"/nonexistent-dir\"\n",
            file.path().display()
        );
        let errs = parse_ok(&text).check();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            !errs[0].warning && errs[0].message.contains("not executable"),
            "{errs:?}"
        );
        assert_eq!(
            at(&text, &errs[0].span),
            format!("\"{}\"", file.path().display())
        );
        // Not there (yet): the product is not installed on this machine.
        assert!(
            errs[1].warning && errs[1].message.contains("does not exist"),
            "{errs:?}"
        );
        let text = format!(
            "[[action]]\nname = \"r\"\ntype = \"run\"\nprogram = \"/\"\ncwd = \"{}\"\n",
            file.path().display()
        );
        let errs = parse_ok(&text).check();
        assert!(errs.iter().all(|e| !e.warning), "{errs:?}");
        assert!(errs[0].message.contains("is not a file"), "{errs:?}");
        assert!(errs[1].message.contains("not a directory"), "{errs:?}");
        for program in ["no-such-program-xyz", "/opt/no-such-product/bin/scan"] {
            let missing = parse_ok(&format!(
                "[[action]]\nname = \"r\"\ntype = \"run\"\nprogram = \"{program}\"\n"
            ))
            .check();
            assert_eq!(missing.len(), 1, "{missing:?}");
            assert!(missing[0].warning, "{missing:?}");
            assert!(
                missing[0]
                    .message
                    .ends_with("the action fails on this system until it is installed"),
                "{missing:?}"
            );
        }
    }

    #[test]
    fn windows_paths_are_warnings_elsewhere() {
        let text = "[[action]]\nname = \"scan\"\ntype = \"run\"\n\
                    program = 'C:\\Program Files\\Symantec\\DoScan.exe'\ncwd = 'C:\\'\n";
        let errs = parse_ok(text).check();
        // Elsewhere Windows paths; under Wine checked for real: SEP is not installed
        // there, which is a warning too (the configuration is right for where it runs),
        // and C:\ is a directory.
        assert_eq!(errs.len(), if cfg!(windows) { 1 } else { 2 }, "{errs:?}");
        assert!(errs.iter().all(|e| e.warning), "{errs:?}");
        assert_eq!(
            at(text, &errs[0].span),
            "'C:\\Program Files\\Symantec\\DoScan.exe'"
        );
        if !cfg!(windows) {
            assert!(errs[0].message.contains("is a Windows path"), "{errs:?}");
        }
        let unix = "[[action]]\nname = \"scan\"\ntype = \"run\"\n\
                    program = '/opt/Symantec/symantec_antivirus/sav'\n";
        let errs = parse_ok(unix).check();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].warning, "{errs:?}");
        if cfg!(windows) {
            assert!(errs[0].message.contains("is a Unix path"), "{errs:?}");
        }
        let native = |p: &str| foreign_platform_path(p).is_none();
        assert_eq!(native("/usr/bin/clamdscan"), !cfg!(windows));
        assert!(native("clamdscan"));
        assert_eq!(native("\\\\srv\\share\\x.exe"), cfg!(windows));
        assert_eq!(native("C:\\x.exe"), cfg!(windows));
    }

    #[test]
    fn bad_env_names_and_templates_are_reported() {
        let text = "[[action]]\nname = \"r\"\ntype = \"run\"\nprogram = \"sh\"\n\
                    args = [\"ok\", \"{{ x | nope }}\"]\nenv = { \"A=B\" = \"v\" }\ntimeout_secs = 0\n";
        let errs = parse_one(text).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.message.contains("unknown filter")));
        assert!(errs.iter().any(|e| at(text, &e.span) == "\"A=B\""));
        assert!(errs.iter().any(|e| at(text, &e.span) == "0"));
    }
}
