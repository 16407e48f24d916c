//! The `email` action: one message per event over SMTP.
//!
//! The SMTP client is our own (`smtp.rs`, over [`crate::net::Conn`] and the shared
//! `tls.rs`), like the webhook's HTTP client: `lettre` with SMTP, the builder and rustls
//! on ring would add 50 crates (`cargo generate-lockfile`: 37 → 87 packages) and takes
//! trust as its own settings rather than our rustls `ClientConfig`; what an alert mail
//! needs (one plain-text UTF-8 message, STARTTLS or implicit TLS, AUTH PLAIN/LOGIN) is
//! about 450 lines here (`smtp.rs`; the message is composed in `message.rs`).
//!
//! One session per message (connect, `EHLO`, TLS, `AUTH`, `MAIL`, `RCPT` for every
//! recipient, `DATA`, `QUIT`), all within `timeout`. A 4xx reply or any connection
//! problem is transient; a 5xx reply (a refused recipient, a wrong password: 535) is
//! permanent. A recipient refused fails the whole message (nothing is sent to the
//! others either, so a retry cannot send twice).

mod message;
mod smtp;

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::{ConfigError, format_time};

use crate::Job;
use crate::control::Control;
use crate::delivery::{Deliver, Failure};
use crate::kit::{Tpl, deserialize};
use crate::net::{self, Timeout, timeout};
use crate::secret::SecretRef;
use crate::tls::{RawTls, TlsSpec};
use smtp::{Security, Session};

/// Default of `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default subject.
const DEFAULT_SUBJECT: &str = "watchpost: {{ filter }} on {{ host }}";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    server: Spanned<String>,
    tls: Option<Spanned<Security>>,
    tls_options: Option<RawTls>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    allow_plaintext_auth: Option<bool>,
    from: Spanned<String>,
    to: Spanned<Vec<Spanned<String>>>,
    subject: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    helo: Option<Spanned<String>>,
    timeout: Option<Spanned<Timeout>>,
}

/// A validated `email` action.
#[derive(Debug, Clone)]
pub(crate) struct EmailSpec {
    host: String,
    port: u16,
    server_span: std::ops::Range<usize>,
    security: Security,
    tls: TlsSpec,
    /// User name and where the password is.
    auth: Option<(String, SecretRef)>,
    allow_plaintext_auth: bool,
    from: String,
    to: Vec<String>,
    subject: Tpl,
    /// `None`: the built-in summary of the event.
    body: Option<Tpl>,
    helo: String,
    timeout: Duration,
}

impl EmailSpec {
    pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<EmailSpec, Vec<ConfigError>> {
        let raw: RawEmail = deserialize(table)?;
        let mut errors = Vec::new();
        let security = raw
            .tls
            .as_ref()
            .map_or(Security::Starttls, |t| *t.get_ref());
        let default_port = match security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        };
        let (host, port) = match net::split_host_port(raw.server.get_ref(), default_port) {
            Ok(hp) => hp,
            Err(m) => {
                errors.push(ConfigError::new(raw.server.span(), m));
                (String::new(), 0)
            }
        };
        let tls = match (&raw.tls_options, security) {
            (Some(_), Security::None) => {
                let at = raw.tls.as_ref().map_or(raw.server.span(), |t| t.span());
                errors.push(ConfigError::new(
                    at,
                    "`tls_options` is set but `tls = \"none\"`",
                ));
                TlsSpec::system()
            }
            (Some(t), _) => TlsSpec::parse(t, &mut errors),
            (None, _) => TlsSpec::system(),
        };
        let password = SecretRef::parse(
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
            "password",
            &mut errors,
        );
        let allow_plaintext_auth = raw.allow_plaintext_auth.unwrap_or(false);
        let auth = match (&raw.username, password) {
            (Some(u), Some(p)) => {
                if u.get_ref().is_empty() || u.get_ref().chars().any(char::is_control) {
                    errors.push(ConfigError::new(u.span(), "not a user name"));
                }
                if security == Security::None && !allow_plaintext_auth {
                    errors.push(ConfigError::new(
                        u.span(),
                        "with `tls = \"none\"` the password would travel in clear; use TLS, or \
                         set `allow_plaintext_auth = true`",
                    ));
                }
                Some((u.get_ref().clone(), p))
            }
            (Some(u), None) => {
                errors.push(ConfigError::new(
                    u.span(),
                    "`username` needs `password_env` or `password_file`",
                ));
                None
            }
            (None, Some(_)) => {
                let at = raw
                    .password_env
                    .as_ref()
                    .or(raw.password_file.as_ref())
                    .map_or(0..0, |s| s.span());
                errors.push(ConfigError::new(at, "a password needs `username`"));
                None
            }
            (None, None) => None,
        };
        let from = address(&raw.from, &mut errors);
        let mut to = Vec::new();
        for t in raw.to.get_ref() {
            to.push(address(t, &mut errors));
        }
        if to.is_empty() {
            errors.push(ConfigError::new(raw.to.span(), "`to` lists no address"));
        } else if to.len() > 100 {
            errors.push(ConfigError::new(
                raw.to.span(),
                "`to` lists more than 100 addresses",
            ));
        }
        let subject = Tpl::or_default(raw.subject.as_ref(), DEFAULT_SUBJECT, &mut errors);
        let body = raw.body.as_ref().and_then(|b| Tpl::parse(b, &mut errors));
        let helo = match &raw.helo {
            Some(h) => {
                if net::split_host_port(h.get_ref(), 1).is_err() || h.get_ref().contains(':') {
                    errors.push(ConfigError::new(h.span(), "`helo` must be a host name"));
                }
                h.get_ref().clone()
            }
            None => default_helo(),
        };
        let timeout = timeout(raw.timeout.as_ref(), DEFAULT_TIMEOUT, &mut errors);
        match subject {
            Some(subject) if errors.is_empty() => Ok(EmailSpec {
                host,
                port,
                server_span: raw.server.span(),
                security,
                tls,
                auth,
                allow_plaintext_auth,
                from,
                to,
                subject,
                body,
                helo,
                timeout,
            }),
            _ => Err(errors),
        }
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        std::iter::once(&self.subject).chain(self.body.iter())
    }

    /// TLS files and the password can be read; `tls = "none"` to another machine warns.
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        if self.security == Security::None {
            if !net::is_loopback(&self.host) {
                out.push(ConfigError::warning(
                    self.server_span.clone(),
                    "`tls = \"none\"`: mail to another machine travels unencrypted and \
                     unauthenticated; use `starttls` or `tls`",
                ));
            }
        } else {
            out.extend(self.tls.check());
        }
        if let Some((_, p)) = &self.auth {
            out.extend(p.check());
        }
        out
    }

    /// A deliverer for one worker.
    pub(crate) fn deliverer(&self) -> Email<'_> {
        Email {
            spec: self,
            tls: None,
        }
    }

    fn render(&self, job: &Job) -> (String, String) {
        let scope = job.scope();
        let subject = self.subject.template.render(&scope);
        let body = match &self.body {
            Some(t) => t.template.render(&scope),
            None => default_body(job),
        };
        (subject, body)
    }
}

/// One worker's state: the TLS configuration, built once (again after a failure, so a
/// renewed CA file is picked up).
pub(crate) struct Email<'a> {
    spec: &'a EmailSpec,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Deliver for Email<'_> {
    fn deliver(&mut self, job: &Job, ctl: &Control) -> Result<(), Failure> {
        let spec = self.spec;
        let (subject, body) = spec.render(job);
        let message = message::compose(&spec.from, &spec.to, &subject, &body);
        let auth = match &spec.auth {
            Some((user, p)) => Some((user.as_str(), p.read().map_err(Failure::Transient)?)),
            None => None,
        };
        let tls = if spec.security == Security::None {
            None
        } else {
            let config = match &self.tls {
                Some(c) => c.clone(),
                None => {
                    let c = spec.tls.client_config().map_err(Failure::Transient)?;
                    self.tls = Some(c.clone());
                    c
                }
            };
            Some((
                config,
                spec.tls
                    .server_name(&spec.host)
                    .map_err(Failure::Permanent)?,
            ))
        };
        let session = Session {
            host: &spec.host,
            port: spec.port,
            security: spec.security,
            tls,
            helo: &spec.helo,
            auth,
            allow_plaintext_auth: spec.allow_plaintext_auth,
            from: &spec.from,
            to: &spec.to,
            message: &message,
        };
        let result = session.send(net::deadline(spec.timeout, ctl), ctl);
        if result.is_err() {
            self.tls = None;
        }
        result
    }
}

/// A mail address as SMTP takes it: `local@domain`, printable ASCII, no spaces, angle
/// brackets, quotes, commas or semicolons.
fn address(s: &Spanned<String>, errors: &mut Vec<ConfigError>) -> String {
    let a = s.get_ref().trim();
    let ok = a.len() <= 254
        && a.chars()
            .all(|c| c.is_ascii_graphic() && !"<>()[],;:\"\\".contains(c))
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if !ok {
        errors.push(ConfigError::new(
            s.span(),
            "not a mail address (`name@domain`, ASCII, without a display name or `<>`)",
        ));
    }
    a.to_owned()
}

/// The EHLO name: this computer's name when it is a valid host name, else `localhost`.
fn default_helo() -> String {
    let name = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if !name.is_empty() && net::split_host_port(&name, 1).is_ok() && !name.contains(':') {
        name
    } else {
        "localhost".to_owned()
    }
}

/// The body when none is configured: filter, host, source, time, then every field and
/// the raw record.
fn default_body(job: &Job) -> String {
    let e = &job.event;
    let mut b = String::with_capacity(e.raw.len() + 512);
    b.push_str(&format!("watchpost: filter \"{}\" fired.\n\n", job.filter));
    b.push_str(&format!("Filter:  {}\n", job.filter));
    b.push_str(&format!("Host:    {}\n", e.host));
    b.push_str(&format!("Source:  {}\n", e.source));
    match e.time {
        Some(t) => b.push_str(&format!("Time:    {}\n", format_time(t))),
        None => b.push_str("Time:    (not in the record)\n"),
    }
    if e.anomaly {
        b.push_str("Anomaly: yes\n");
    }
    b.push_str(&format!("Actions: {}\n", job.actions));
    if !e.is_empty() {
        b.push_str("\nFields:\n");
        for (sym, v) in e.fields() {
            let mut text = String::new();
            v.write_to(&mut text);
            b.push_str(&format!(
                "  {}: {}\n",
                sym.as_str(),
                text.replace('\n', "\n    ")
            ));
        }
    }
    b.push_str(&format!("\nRecord:\n  {}\n", e.raw.replace('\n', "\n  ")));
    b
}

impl crate::kind::ActionKind for EmailSpec {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn templates(&self) -> Vec<&Tpl> {
        EmailSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        EmailSpec::check(self)
    }

    fn deliverer(
        &self,
        _: &str,
        _: &crate::common::Common,
    ) -> Option<Box<dyn crate::delivery::Deliver + '_>> {
        Some(Box::new(EmailSpec::deliverer(self)))
    }

    /// Always served by the durable loop: it has a deliverer.
    fn work(
        &self,
        _: &str,
        _: &crossbeam_channel::Receiver<Job>,
        _: &crate::control::Counters,
        _: &Control,
    ) {
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::*;

    const HEAD: &str = "[[action]]\nname = \"mail\"\ntype = \"email\"\n";

    pub(super) fn spec(extra: &str) -> EmailSpec {
        parse_ok(&format!("{HEAD}{extra}\n"))
            .kind_as::<EmailSpec>()
            .expect("an email action")
            .clone()
    }

    #[test]
    fn defaults_ports_and_mistakes() {
        let base = "from = \"w@example.org\"\nto = [\"soc@example.org\"]";
        let s = spec(&format!("server = \"mail.example\"\n{base}"));
        assert_eq!((s.port, s.security), (587, Security::Starttls));
        let s = spec(&format!("server = \"mail.example\"\ntls = \"tls\"\n{base}"));
        assert_eq!(s.port, 465);
        let s = spec(&format!(
            "server = \"mail.example:2525\"\ntls = \"none\"\n{base}"
        ));
        assert_eq!(s.port, 2525);
        let w = s.check();
        assert!(
            w.iter()
                .any(|e| e.warning && e.message.contains("unencrypted")),
            "{w:?}"
        );
        let s = spec(&format!(
            "server = \"127.0.0.1:2525\"\ntls = \"none\"\n{base}"
        ));
        assert!(s.check().is_empty());
        for (extra, why) in [
            (
                "server = \"a b\"\nfrom = \"x@y\"\nto = [\"a@b\"]",
                "host name",
            ),
            (
                "server = \"m.example\"\nfrom = \"x\"\nto = [\"a@b\"]",
                "mail address",
            ),
            (
                "server = \"m.example\"\nfrom = \"x@y\"\nto = []",
                "no address",
            ),
            (
                "server = \"m.example\"\nfrom = \"x@y\"\nto = [\"A <a@b>\"]",
                "mail address",
            ),
            (
                "server = \"m.example\"\ntls = \"ssl\"\nfrom = \"x@y\"\nto = [\"a@b\"]",
                "unknown variant",
            ),
            (
                "server = \"m.example\"\nfrom = \"x@y\"\nto = [\"a@b\"]\nusername = \"u\"",
                "needs `password_env`",
            ),
            (
                "server = \"m.example\"\ntls = \"none\"\nfrom = \"x@y\"\nto = [\"a@b\"]\nusername = \"u\"\npassword_env = \"P\"",
                "in clear",
            ),
            (
                "server = \"m.example\"\ntls = \"none\"\ntls_options = { verify = false }\nfrom = \"x@y\"\nto = [\"a@b\"]",
                "tls_options",
            ),
            (
                "server = \"m.example\"\nfrom = \"x@y\"\nto = [\"a@b\"]\nsubject = \"{{ x\"",
                "never closed",
            ),
        ] {
            let text = format!("{HEAD}{extra}\n");
            let e = parse_one(&text).unwrap_err();
            assert!(e.iter().any(|e| e.message.contains(why)), "{extra}: {e:?}");
        }
        let s = spec(&format!(
            "server = \"m.example\"\n{base}\nusername = \"u\"\npassword_env = \"WATCHPOST_TEST_UNSET_PW\""
        ));
        assert!(s.check().iter().any(|e| e.message.contains("is not set")));
    }
}

// The peers are Python scripts and the CA is made by openssl: Unix tools (not under Wine).
#[cfg(all(test, unix))]
mod peer_tests;
