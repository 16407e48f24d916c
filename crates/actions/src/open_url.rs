//! The `open_url` action: open a templated URL (e.g. the vendor's page about
//! `{{ risk_name | url }}`) in the user's browser.
//!
//! The rendered URL is checked before anything starts: its scheme must be one of
//! `allowed_schemes` (default `https`, `http`; `file`, `javascript`, `vbscript` and `data`
//! can never be allowed), and it may contain only the characters RFC 3986 allows in a
//! URL (`%` followed by two hex digits; no spaces, quotes, control characters or non-ASCII).
//! Values from events go in through the template's `url` filter, which percent-encodes
//! everything but unreserved characters, so they cannot add a scheme, a path or a query.
//! A refused URL fails the job with a message saying why.
//!
//! Opening: the URL is always one argv element of its own, never seen by a shell.
//! * `browser = [program, args…]` configured: `program args… URL`.
//! * Linux (and other Unix): `xdg-open URL`.
//! * Windows, watchpost in a user's session: `ShellExecuteW("open", URL)`.
//! * Windows, watchpost as a service (session 0): the browser is started in the active
//!   console user's session, as that user (`WTSQueryUserToken`, `CreateEnvironmentBlock`,
//!   `CreateProcessAsUserW` on the `winsta0\default` desktop), running
//!   `%SystemRoot%\System32\rundll32.exe url.dll,FileProtocolHandler URL` or the configured
//!   browser. Nobody logged on: the job fails with that reason.
//!
//! A started browser (or `xdg-open`) is given 5 s: exiting with a non-zero status in that
//! time fails the job; still running after it counts as opened (a thread reaps it later).

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::Job;
use crate::control::{Control, Counters};
use crate::kit::{Tpl, deserialize};
use crate::run::find_program;

/// Schemes that open local files or run code; refused even when listed.
const NEVER: &[&str] = &["file", "javascript", "vbscript", "data"];

/// How long a started opener is watched for a failing exit status.
const WATCH: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenUrl {
    url: Spanned<String>,
    allowed_schemes: Option<Vec<Spanned<String>>>,
    browser: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A validated `open_url` action.
#[derive(Debug, Clone)]
pub(crate) struct OpenUrlSpec {
    url: Tpl,
    /// Lower case.
    allowed_schemes: Vec<String>,
    /// Program (with its span, for `check`) and arguments.
    browser: Option<(Spanned<String>, Vec<String>)>,
}

/// Why a URL was not opened.
#[derive(Debug, Error)]
pub(crate) enum OpenError {
    #[error("refusing to open {url:?}: {why}")]
    Refused { url: String, why: String },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{program} exited with {status} opening {url}")]
    Exit {
        program: String,
        status: std::process::ExitStatus,
        url: String,
    },
    #[error("cannot open {url}: {why}")]
    #[cfg_attr(not(windows), allow(dead_code))]
    Os { url: String, why: String },
}

impl OpenUrlSpec {
    pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<OpenUrlSpec, Vec<ConfigError>> {
        let raw: RawOpenUrl = deserialize(table)?;
        let mut errors = Vec::new();
        let url = Tpl::parse(&raw.url, &mut errors);
        let allowed_schemes = match &raw.allowed_schemes {
            None => vec!["https".to_owned(), "http".to_owned()],
            Some(list) => {
                let mut out = Vec::new();
                for s in list {
                    let lower = s.get_ref().to_ascii_lowercase();
                    if !is_scheme(&lower) {
                        errors.push(ConfigError::new(
                            s.span(),
                            "not a URL scheme (a letter, then letters, digits, `+`, `-`, `.`; no `:`)",
                        ));
                    } else if NEVER.contains(&lower.as_str()) {
                        errors.push(ConfigError::new(
                            s.span(),
                            format!("the `{lower}` scheme opens local files or runs code and cannot be allowed"),
                        ));
                    } else {
                        out.push(lower);
                    }
                }
                out
            }
        };
        if let Some(list) = &raw.allowed_schemes
            && list.is_empty()
        {
            let span = raw.url.span();
            errors.push(ConfigError::new(
                span.start..span.start,
                "`allowed_schemes` is empty: no URL could ever be opened",
            ));
        }
        // A scheme written out in the template is checked now.
        if let Some(t) = &url
            && let Some((scheme, _)) = t.literal_prefix().split_once(':')
            && is_scheme(scheme)
            && !allowed_schemes.contains(&scheme.to_ascii_lowercase())
        {
            errors.push(ConfigError::new(
                raw.url.span(),
                format!(
                    "scheme `{scheme}` is not in `allowed_schemes` ({})",
                    allowed_schemes.join(", ")
                ),
            ));
        }
        let browser = match &raw.browser {
            None => None,
            Some(argv) => match argv.get_ref().split_first() {
                None => {
                    errors.push(ConfigError::new(
                        argv.span(),
                        "`browser` is [program, args…]; it is empty",
                    ));
                    None
                }
                Some((program, args)) => {
                    let p = program.get_ref();
                    if p.is_empty()
                        || (!std::path::Path::new(p).is_absolute() && p.contains(['/', '\\']))
                    {
                        errors.push(ConfigError::new(
                            program.span(),
                            "the browser program must be an absolute path or a bare name found on PATH",
                        ));
                    }
                    Some((
                        program.clone(),
                        args.iter().map(|a| a.get_ref().clone()).collect(),
                    ))
                }
            },
        };
        match url {
            Some(url) if errors.is_empty() => Ok(OpenUrlSpec {
                url,
                allowed_schemes,
                browser,
            }),
            _ => Err(errors),
        }
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        std::iter::once(&self.url)
    }

    /// The configured browser must exist; on Unix without one, `xdg-open` must be on PATH.
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        match &self.browser {
            Some((program, _)) => {
                crate::run::check_program(program.get_ref(), program.span(), " (`browser`)")
                    .into_iter()
                    .collect()
            }
            None if cfg!(windows) => Vec::new(),
            None => match find_program("xdg-open") {
                Ok(_) => Vec::new(),
                Err(m) => {
                    let span = self.url.span.clone().unwrap_or_default();
                    // A warning: the action only fails (counted, logged) where no desktop
                    // tools are installed, e.g. on a server that shares a config file.
                    vec![ConfigError::warning(
                        span,
                        format!(
                            "{m} (package xdg-utils): the action will fail on this system; install xdg-utils or set `browser`"
                        ),
                    )]
                }
            },
        }
    }

    pub(crate) fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        crate::control::serve(name, rx, counters, ctl, |job| self.apply(job, ctl));
    }

    fn apply(&self, job: &Job, ctl: &Control) -> Result<(), OpenError> {
        let url = self.url.template.render(&job.scope());
        checked_url(&url, &self.allowed_schemes).map_err(|why| OpenError::Refused {
            url: url.clone(),
            why,
        })?;
        #[cfg(windows)]
        if win::in_service_session() {
            let (program, args) = match &self.browser {
                Some((p, args)) => (
                    find_program(p.get_ref()).map_err(|why| OpenError::Os {
                        url: url.clone(),
                        why: why.to_string(),
                    })?,
                    args.clone(),
                ),
                None => (
                    win::rundll32(),
                    vec!["url.dll,FileProtocolHandler".to_owned()],
                ),
            };
            return win::start_in_console_session(&program, &args, &url)
                .map_err(|why| OpenError::Os { url, why });
        }
        match &self.browser {
            Some((program, args)) => {
                let mut cmd = Command::new(program.get_ref());
                cmd.args(args).arg(&url);
                spawn_and_watch(cmd, program.get_ref(), &url, ctl)
            }
            #[cfg(windows)]
            None => win::shell_open(&url).map_err(|why| OpenError::Os { url, why }),
            #[cfg(not(windows))]
            None => {
                let mut cmd = Command::new("xdg-open");
                cmd.arg(&url);
                spawn_and_watch(cmd, "xdg-open", &url, ctl)
            }
        }
    }
}

/// Starts the opener and watches it for [`WATCH`]: a non-zero exit in that time fails.
fn spawn_and_watch(
    mut cmd: Command,
    program: &str,
    url: &str,
    ctl: &Control,
) -> Result<(), OpenError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|source| OpenError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    let until = Instant::now() + WATCH;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(OpenError::Exit {
                    program: program.to_owned(),
                    status,
                    url: url.to_owned(),
                });
            }
            Ok(None) => {}
            Err(_) => break,
        }
        if Instant::now() >= until || !ctl.sleep_until(Instant::now() + Duration::from_millis(20)) {
            break;
        }
    }
    reap_later(child);
    Ok(())
}

/// A browser that keeps running is waited for on a thread of its own (no zombie).
fn reap_later(mut child: Child) {
    let spawned = std::thread::Builder::new()
        .name("open_url-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    if spawned.is_err() {
        tracing::debug!("cannot start a thread to reap the browser process");
    }
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Checks a rendered URL: allowed scheme, only URL characters. `Err` says why not.
pub(crate) fn checked_url(url: &str, allowed: &[String]) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once(':').filter(|(s, _)| is_scheme(s)) else {
        return Err("it does not start with a URL scheme like `https:`".to_owned());
    };
    let scheme = scheme.to_ascii_lowercase();
    if NEVER.contains(&scheme.as_str()) || !allowed.contains(&scheme) {
        return Err(format!(
            "scheme `{scheme}` is not allowed (allowed_schemes: {})",
            allowed.join(", ")
        ));
    }
    if rest.is_empty() {
        return Err("nothing follows the scheme".to_owned());
    }
    let b = url.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(format!("`%` at byte {i} is not followed by two hex digits"));
            }
            i += 3;
            continue;
        }
        let ok = c.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&c);
        if !ok {
            let shown = url[i..].chars().next().unwrap_or('?');
            return Err(format!(
                "{shown:?} at byte {i} cannot appear in a URL (insert event values with `| url`)"
            ));
        }
        i += 1;
    }
    Ok(())
}

#[cfg(windows)]
#[allow(unsafe_code)] // Win32 calls with UTF-16 buffers and handles we own and close.
mod win {
    use std::ffi::c_void;
    use std::io;
    use std::path::{Path, PathBuf};

    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::Environment::{
        CreateEnvironmentBlock, DestroyEnvironmentBlock,
    };
    use windows_sys::Win32::System::RemoteDesktop::{
        ProcessIdToSessionId, WTSGetActiveConsoleSessionId, WTSQueryUserToken,
    };
    use windows_sys::Win32::System::SystemInformation::GetSystemDirectoryW;
    use windows_sys::Win32::System::Threading::{
        CREATE_UNICODE_ENVIRONMENT, CreateProcessAsUserW, GetCurrentProcessId, PROCESS_INFORMATION,
        STARTUPINFOW,
    };
    use windows_sys::Win32::UI::Shell::ShellExecuteW;
    use windows_sys::Win32::UI::WindowsAndMessaging::SW_SHOWNORMAL;

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().chain([0]).collect()
    }

    /// Whether this process runs in session 0 (as a service).
    pub(super) fn in_service_session() -> bool {
        let mut own = 0u32;
        // SAFETY: `own` is a valid place for the session id.
        let ok = unsafe { ProcessIdToSessionId(GetCurrentProcessId(), &mut own) };
        ok != 0 && own == 0
    }

    /// `<system directory>\rundll32.exe`.
    pub(super) fn rundll32() -> PathBuf {
        let mut buf = [0u16; 520];
        // SAFETY: the buffer and its length in characters match.
        let n = unsafe { GetSystemDirectoryW(buf.as_mut_ptr(), buf.len() as u32) } as usize;
        let dir = if n > 0 && n < buf.len() {
            String::from_utf16_lossy(&buf[..n])
        } else {
            r"C:\Windows\System32".to_owned()
        };
        Path::new(&dir).join("rundll32.exe")
    }

    /// `ShellExecuteW(NULL, "open", url, …)`: the user's default browser.
    pub(super) fn shell_open(url: &str) -> Result<(), String> {
        let (verb, file) = (wide("open"), wide(url));
        // SAFETY: NUL-terminated buffers that outlive the call; null handles/strings are
        // allowed for the window, parameters and directory.
        let h = unsafe {
            ShellExecuteW(
                std::ptr::null_mut(),
                verb.as_ptr(),
                file.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                SW_SHOWNORMAL,
            )
        };
        // Values up to 32 are error codes.
        let code = h as usize;
        if code > 32 {
            Ok(())
        } else {
            Err(format!("ShellExecuteW failed with code {code}"))
        }
    }

    /// One argument quoted the way `CommandLineToArgvW` and the C runtime split them.
    pub(crate) fn quote(arg: &str, out: &mut String) {
        if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\u{b}', '"']) {
            out.push_str(arg);
            return;
        }
        out.push('"');
        let mut backslashes = 0;
        for c in arg.chars() {
            match c {
                '\\' => backslashes += 1,
                '"' => {
                    out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                    out.push('"');
                    backslashes = 0;
                }
                c => {
                    out.extend(std::iter::repeat_n('\\', backslashes));
                    out.push(c);
                    backslashes = 0;
                }
            }
        }
        out.extend(std::iter::repeat_n('\\', backslashes * 2));
        out.push('"');
    }

    struct Handle(HANDLE);
    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: a handle we opened and close once.
            unsafe { CloseHandle(self.0) };
        }
    }

    /// Starts `program args… url` as the user logged on at the console, in their
    /// session and on their desktop. Needs LocalSystem (`SE_TCB_NAME`).
    pub(super) fn start_in_console_session(
        program: &Path,
        args: &[String],
        url: &str,
    ) -> Result<(), String> {
        let os = |what: &str| format!("{what} failed: {}", io::Error::last_os_error());
        // SAFETY: no arguments.
        let session = unsafe { WTSGetActiveConsoleSessionId() };
        if session == u32::MAX {
            return Err("nobody is logged on at the console".to_owned());
        }
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: `token` is a valid place for the handle.
        if unsafe { WTSQueryUserToken(session, &mut token) } == 0 {
            return Err(format!(
                "no user token for console session {session} (nobody logged on?): {}",
                io::Error::last_os_error()
            ));
        }
        let token = Handle(token);
        let mut env: *mut c_void = std::ptr::null_mut();
        // SAFETY: `env` receives a block we destroy below; the token is valid.
        if unsafe { CreateEnvironmentBlock(&mut env, token.0, 0) } == 0 {
            return Err(os("CreateEnvironmentBlock"));
        }
        let program_text = program.to_string_lossy();
        let mut line = String::new();
        quote(&program_text, &mut line);
        for a in args.iter().map(String::as_str).chain([url]) {
            line.push(' ');
            quote(a, &mut line);
        }
        let app = wide(&program_text);
        let mut cmdline = wide(&line);
        let mut desktop = wide(r"winsta0\default");
        // SAFETY: zeroed STARTUPINFOW/PROCESS_INFORMATION are valid initial values.
        let mut si: STARTUPINFOW = unsafe { std::mem::zeroed() };
        si.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
        si.lpDesktop = desktop.as_mut_ptr();
        let mut pi: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: every buffer is NUL-terminated and outlives the call; the command line
        // is writable as CreateProcessAsUserW requires; `env` came from
        // CreateEnvironmentBlock (UTF-16, hence CREATE_UNICODE_ENVIRONMENT).
        let ok = unsafe {
            CreateProcessAsUserW(
                token.0,
                app.as_ptr(),
                cmdline.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
                CREATE_UNICODE_ENVIRONMENT,
                env,
                std::ptr::null(),
                &si,
                &mut pi,
            )
        };
        let result = if ok == 0 {
            Err(os("CreateProcessAsUserW"))
        } else {
            drop(Handle(pi.hThread));
            drop(Handle(pi.hProcess));
            Ok(())
        };
        // SAFETY: the block from CreateEnvironmentBlock above, destroyed once.
        unsafe { DestroyEnvironmentBlock(env) };
        result
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn arguments_are_quoted_for_the_c_runtime() {
            let q = |a: &str| {
                let mut s = String::new();
                super::quote(a, &mut s);
                s
            };
            assert_eq!(q("https://x/?a=1&b=%20"), "https://x/?a=1&b=%20");
            assert_eq!(
                q(r"C:\Program Files\B\b.exe"),
                r#""C:\Program Files\B\b.exe""#
            );
            assert_eq!(q(r#"a"b"#), r#""a\"b""#);
            assert_eq!(q(r"a b\"), r#""a b\\""#);
            assert_eq!(q(""), r#""""#);
        }

        /// The service path: the user's token, their environment, CreateProcessAsUserW.
        /// Wine hands out the caller's own token and ignores it, so this proves the calls
        /// and the command line (the probe, built for the integration tests next to this
        /// binary's directory, writes its argv), not the session switch.
        #[test]
        fn the_browser_starts_through_the_console_users_token() {
            let exe = std::env::current_exe().unwrap();
            let probe = exe
                .parent()
                .and_then(|deps| deps.parent())
                .unwrap()
                .join("watchpost-argv-probe.exe");
            assert!(
                probe.exists(),
                "{} is built by `cargo test` for the integration tests",
                probe.display()
            );
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("argv with space.txt");
            let url = "https://www.example.com/t?q=EICAR%20Test&h=pc1";
            let started =
                super::start_in_console_session(&probe, &[out.to_string_lossy().into_owned()], url);
            eprintln!("start_in_console_session: {started:?}");
            match started {
                Ok(()) => {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                    let text = loop {
                        if let Ok(t) = std::fs::read_to_string(&out) {
                            break t;
                        }
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the probe never wrote"
                        );
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    };
                    assert_eq!(text, format!("{url}\n"));
                }
                // Without SE_TCB (not LocalSystem) or with nobody logged on, Windows
                // refuses the token: a clear reason, no panic.
                Err(e) => assert!(
                    e.contains("no user token") || e.contains("nobody is logged on"),
                    "{e}"
                ),
            }
        }
    }
}

impl crate::kind::ActionKind for OpenUrlSpec {
    fn kind(&self) -> &'static str {
        "open_url"
    }

    fn templates(&self) -> Vec<&Tpl> {
        OpenUrlSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        OpenUrlSpec::check(self)
    }

    fn work(&self, name: &str, rx: &Receiver<Job>, counters: &Counters, ctl: &Control) {
        OpenUrlSpec::work(self, name, rx, counters, ctl);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;

    const HEAD: &str = "[[action]]\nname = \"threat-page\"\ntype = \"open_url\"\n";

    fn allowed() -> Vec<String> {
        vec!["https".into(), "http".into()]
    }

    #[test]
    fn parses_with_defaults() {
        let text = format!(
            "{HEAD}url = \"https://www.example.com/threats?name={{{{ risk_name | url }}}}\"\n"
        );
        let spec = parse_ok(&text);
        assert_eq!(spec.kind(), "open_url");
        let vars: Vec<&str> = spec.variables().iter().map(|(_, s)| at(&text, s)).collect();
        assert_eq!(vars, ["risk_name"]);
        let o = spec.kind_as::<OpenUrlSpec>().expect("an open_url action");
        assert_eq!(o.allowed_schemes, allowed());
        assert!(o.browser.is_none());
    }

    #[test]
    fn config_errors_have_places() {
        let text = format!("{HEAD}url = \"file:///etc/{{{{ x | url }}}}\"\n");
        let errs = parse_one(&text).unwrap_err();
        assert!(
            errs[0].message.contains("not in `allowed_schemes`"),
            "{errs:?}"
        );

        let text =
            format!("{HEAD}url = \"x\"\nallowed_schemes = [\"https\", \"File\", \"ht tp\"]\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(at(&text, &errs[0].span), "\"File\"");
        assert!(errs[0].message.contains("cannot be allowed"), "{errs:?}");
        assert_eq!(at(&text, &errs[1].span), "\"ht tp\"");

        let text = format!("{HEAD}url = \"https://x\"\nbrowser = []\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "[]");

        let text = format!("{HEAD}url = \"https://x\"\nbrowser = [\"bin/firefox\"]\n");
        let errs = parse_one(&text).unwrap_err();
        assert_eq!(at(&text, &errs[0].span), "\"bin/firefox\"");

        let text = format!("{HEAD}url = \"https://x\"\nbrowser = [\"no-such-browser-xyz\"]\n");
        let errs = parse_ok(&text).check();
        assert!(errs[0].message.contains("not found on PATH"), "{errs:?}");
        assert_eq!(at(&text, &errs[0].span), "\"no-such-browser-xyz\"");

        let errs = parse_one(HEAD).unwrap_err();
        assert!(errs[0].message.contains("url"), "{errs:?}");
    }

    #[test]
    fn rendered_urls_are_checked() {
        let a = allowed();
        assert!(checked_url("https://example.com/t?n=EICAR%20Test&x=1#f", &a).is_ok());
        assert!(checked_url("HTTP://example.com/", &a).is_ok());
        for (bad, why) in [
            ("file:///etc/passwd", "not allowed"),
            ("javascript:alert(1)", "not allowed"),
            ("FILE:///C:/x", "not allowed"),
            ("ftp://x/", "not allowed"),
            ("calc.exe", "scheme"),
            ("-x https://a", "scheme"),
            ("https:", "nothing follows"),
            ("https://x/a b", "cannot appear"),
            ("https://x/\"&calc", "cannot appear"),
            ("https://x/\n", "cannot appear"),
            ("https://x/ä", "cannot appear"),
            ("https://x/%zz", "two hex digits"),
            ("https://x/%2", "two hex digits"),
        ] {
            let e = checked_url(bad, &a).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let mut with_file = a.clone();
        with_file.push("file".into());
        assert!(checked_url("file:///etc/passwd", &with_file).is_err());
    }
}
