//! The `webhook` action: an HTTP(S) `POST` (or `PUT`) of the event as JSON, or of a
//! templated body, to a URL.
//!
//! The HTTP client is the small HTTP/1.1 one below, over [`crate::net::Conn`] (std
//! `TcpStream`, rustls through the shared `tls.rs`): one request per connection
//! (`Connection: close`), the body sent with `Content-Length`, the answer read as status
//! line and headers (each line at most 8 KiB, at most 100 headers); of the body only what
//! a failure's message shows is read (the first 200 bytes, `Content-Length`, chunked or
//! until close). It was chosen over `ureq` 3, which would add 32 crates to the build
//! (`cargo generate-lockfile` with rustls and ring: 37 → 69 packages) and cannot take our
//! rustls `ClientConfig` as it is, for about 150 lines of HTTP here (request, status line,
//! headers, the body's start) plus `net.rs` (about 300, shared with email).
//!
//! The URL is a template, but the scheme (`http`/`https`) and the host and port must be
//! written out before the first `{{`, and every value inserted must end in the `url`
//! filter (percent-encoded), so event data can change only the path and query. A
//! rendered URL with characters a URL cannot contain is refused (a permanent failure).
//! Messages name only `scheme://host:port`: webhook URLs often carry a token in the path.
//!
//! Answers: 2xx is success; 408, 429, 5xx, connection failures and timeouts are
//! transient (worth another attempt); every other status (redirects are not followed)
//! is permanent, with the status and the start of the body in the message.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::Job;
use crate::control::Control;
use crate::delivery::{Deliver, Failure};
use crate::http;
use crate::kit::{Tpl, deserialize};
use crate::net::{self, Conn, Timeout, timeout};
use crate::secret::SecretRef;
use crate::syslog::event_json;
use crate::tls::{RawTls, TlsSpec};

/// Default of `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a failure's body shown in its message.
const BODY_SNIPPET: usize = 200;
/// Headers that the client writes itself.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
    "te",
    "upgrade",
    "trailer",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum Method {
    Post,
    Put,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Spanned<String>,
    method: Option<Method>,
    body: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
    headers: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    timeout: Option<Spanned<Timeout>>,
    tls: Option<RawTls>,
    bearer_token_env: Option<Spanned<String>>,
    bearer_token_file: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
enum Auth {
    Bearer(SecretRef),
    Basic { user: String, password: SecretRef },
}

/// A validated `webhook` action.
#[derive(Debug, Clone)]
pub(crate) struct WebhookSpec {
    url: Tpl,
    https: bool,
    host: String,
    port: u16,
    /// `host[:port]` as written: the `Host` header.
    authority: String,
    method: Method,
    /// `None`: the event as JSON.
    body: Option<Tpl>,
    content_type: String,
    headers: Vec<(String, Tpl)>,
    timeout: Duration,
    tls: TlsSpec,
    auth: Option<Auth>,
}

impl WebhookSpec {
    pub(crate) fn parse(table: Spanned<DeValue<'_>>) -> Result<WebhookSpec, Vec<ConfigError>> {
        let raw: RawWebhook = deserialize(table)?;
        let mut errors = Vec::new();
        let url = Tpl::parse(&raw.url, &mut errors);
        let target = url.as_ref().and_then(|u| match url_target(u) {
            Ok(t) => Some(t),
            Err(m) => {
                errors.push(ConfigError::new(raw.url.span(), m));
                None
            }
        });
        let body = raw.body.as_ref().and_then(|b| Tpl::parse(b, &mut errors));
        let content_type = match &raw.content_type {
            None => "application/json".to_owned(),
            Some(c) if header_value_ok(c.get_ref()) && !c.get_ref().trim().is_empty() => {
                c.get_ref().clone()
            }
            Some(c) => {
                errors.push(ConfigError::new(
                    c.span(),
                    "`content_type` must be a non-empty header value (no line breaks)",
                ));
                String::new()
            }
        };
        let auth_configured = raw.bearer_token_env.is_some()
            || raw.bearer_token_file.is_some()
            || raw.username.is_some();
        let mut headers = Vec::new();
        for (k, v) in raw.headers.iter().flatten() {
            let name = k.get_ref();
            let lower = name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(is_tchar) {
                errors.push(ConfigError::new(k.span(), "not an HTTP header name"));
            } else if RESERVED.contains(&lower.as_str()) {
                errors.push(ConfigError::new(
                    k.span(),
                    format!(
                        "`{name}` is written by watchpost{}",
                        if lower == "content-type" {
                            " (set `content_type`)"
                        } else {
                            ""
                        }
                    ),
                ));
            } else if lower == "authorization" && auth_configured {
                errors.push(ConfigError::new(
                    k.span(),
                    "`Authorization` comes from the bearer/basic settings of this action",
                ));
            } else if let Some(t) = Tpl::parse(v, &mut errors) {
                if t.template.is_constant() && !header_value_ok(v.get_ref()) {
                    errors.push(ConfigError::new(
                        v.span(),
                        "a header value cannot contain line breaks",
                    ));
                }
                headers.push((name.clone(), t));
            }
        }
        let timeout = timeout(raw.timeout.as_ref(), DEFAULT_TIMEOUT, &mut errors);
        let tls = match &raw.tls {
            Some(t) => {
                let spec = TlsSpec::parse(t, &mut errors);
                if target.as_ref().is_some_and(|t| !t.https) {
                    errors.push(ConfigError::new(
                        raw.url.span(),
                        "`tls` is set but the URL is `http:`; write `https:`",
                    ));
                }
                spec
            }
            None => TlsSpec::system(),
        };
        let bearer = SecretRef::parse(
            raw.bearer_token_env.as_ref(),
            raw.bearer_token_file.as_ref(),
            "bearer_token",
            &mut errors,
        );
        let password = SecretRef::parse(
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
            "password",
            &mut errors,
        );
        let auth = match (bearer, &raw.username, password) {
            (Some(_), Some(u), _) => {
                errors.push(ConfigError::new(
                    u.span(),
                    "use either a bearer token or `username` + password, not both",
                ));
                None
            }
            (Some(b), None, None) => Some(Auth::Bearer(b)),
            (None, Some(u), Some(p)) => {
                if u.get_ref().contains(':') || !header_value_ok(u.get_ref()) {
                    errors.push(ConfigError::new(
                        u.span(),
                        "a basic-auth user name cannot contain `:` or line breaks",
                    ));
                }
                Some(Auth::Basic {
                    user: u.get_ref().clone(),
                    password: p,
                })
            }
            (None, Some(u), None) => {
                errors.push(ConfigError::new(
                    u.span(),
                    "`username` needs `password_env` or `password_file`",
                ));
                None
            }
            (_, None, Some(_)) => {
                let at = raw
                    .password_env
                    .as_ref()
                    .or(raw.password_file.as_ref())
                    .map_or(0..0, |s| s.span());
                errors.push(ConfigError::new(at, "a password needs `username`"));
                None
            }
            (None, None, None) => None,
        };
        match (url, target) {
            (Some(url), Some(t)) if errors.is_empty() => Ok(WebhookSpec {
                url,
                https: t.https,
                host: t.host,
                port: t.port,
                authority: t.authority,
                method: raw.method.unwrap_or(Method::Post),
                body,
                content_type,
                headers,
                timeout,
                tls,
                auth,
            }),
            _ => Err(errors),
        }
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Tpl> {
        std::iter::once(&self.url)
            .chain(self.body.iter())
            .chain(self.headers.iter().map(|(_, t)| t))
    }

    /// TLS files and secrets can be read.
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let mut out = if self.https {
            self.tls.check()
        } else {
            Vec::new()
        };
        match &self.auth {
            Some(Auth::Bearer(s)) | Some(Auth::Basic { password: s, .. }) => {
                out.extend(s.check());
                if !self.https && !net::is_loopback(&self.host) {
                    let span = self.url.span.clone().unwrap_or_default();
                    out.push(ConfigError::warning(
                        span,
                        "credentials over `http:` travel unencrypted; use `https:`",
                    ));
                }
            }
            None => {}
        }
        out
    }

    /// A deliverer for one worker.
    pub(crate) fn deliverer(&self) -> Webhook<'_> {
        Webhook {
            spec: self,
            tls: None,
        }
    }

    /// `scheme://host:port`, for messages (the path may hold a token).
    fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority
        )
    }

    /// The request's bytes: head and body.
    fn request(&self, job: &Job) -> Result<Vec<u8>, Failure> {
        let scope = job.scope();
        let url = self.url.template.render(&scope);
        let path = request_target(&url, self.https, &self.authority).map_err(|why| {
            Failure::Permanent(format!("refusing URL of {}: {why}", self.origin()))
        })?;
        let body = match &self.body {
            Some(t) => t.template.render(&scope),
            None => event_json(&scope),
        };
        let method = match self.method {
            Method::Post => "POST",
            Method::Put => "PUT",
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: watchpost/{}\r\n\
             Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.authority,
            env!("CARGO_PKG_VERSION"),
            self.content_type,
            body.len()
        );
        match &self.auth {
            Some(Auth::Bearer(s)) => {
                let token = s.read().map_err(Failure::Transient)?;
                if !header_value_ok(&token) {
                    return Err(Failure::Permanent(
                        "the bearer token has a line break".into(),
                    ));
                }
                head.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
            Some(Auth::Basic { user, password }) => {
                let pw = password.read().map_err(Failure::Transient)?;
                let cred = net::base64(format!("{user}:{pw}").as_bytes());
                head.push_str(&format!("Authorization: Basic {cred}\r\n"));
            }
            None => {}
        }
        for (name, t) in &self.headers {
            let v = t.template.render(&scope);
            if !header_value_ok(&v) {
                return Err(Failure::Permanent(format!(
                    "header `{name}` rendered with a line break or control character; not sent"
                )));
            }
            head.push_str(name);
            head.push_str(": ");
            head.push_str(v.trim());
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        Ok(out)
    }
}

/// One worker's state: the TLS configuration, built once (again after a TLS failure, so
/// a renewed CA file is picked up).
pub(crate) struct Webhook<'a> {
    spec: &'a WebhookSpec,
    tls: Option<Arc<ClientConfig>>,
}

impl Deliver for Webhook<'_> {
    fn deliver(&mut self, job: &Job, ctl: &Control) -> Result<(), Failure> {
        let spec = self.spec;
        let request = spec.request(job)?;
        let until = net::deadline(spec.timeout, ctl);
        let transient =
            |e: io::Error| Failure::Transient(format!("webhook {}: {e}", spec.origin()));
        let mut conn = Conn::connect(&spec.host, spec.port, until, ctl).map_err(transient)?;
        if spec.https {
            let config = match &self.tls {
                Some(c) => c.clone(),
                None => {
                    let c = spec.tls.client_config().map_err(Failure::Transient)?;
                    self.tls = Some(c.clone());
                    c
                }
            };
            let name = spec
                .tls
                .server_name(&spec.host)
                .map_err(Failure::Permanent)?;
            conn = conn.start_tls(config, name, ctl).map_err(|e| {
                self.tls = None;
                transient(e)
            })?;
        }
        // Of the body only what a failure's message shows is read; its reading may fail.
        let result = http::exchange(&mut conn, &request, ctl, |status| {
            if (200..300).contains(&status) {
                0
            } else {
                BODY_SNIPPET
            }
        })
        .map_err(transient);
        conn.close();
        let (status, reason, snippet) = result?;
        let snippet = snippet.unwrap_or_default();
        classify(status, &reason, &snippet, &spec.origin())
    }
}

/// 2xx: done; 408, 429, 5xx: transient; the rest: permanent.
fn classify(status: u16, reason: &str, body: &[u8], origin: &str) -> Result<(), Failure> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let shown: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut m = format!("webhook {origin}: HTTP {status}");
    if !reason.is_empty() {
        m.push(' ');
        m.push_str(reason);
    }
    if (300..400).contains(&status) {
        m.push_str(" (redirects are not followed)");
    }
    let shown = shown.trim();
    if !shown.is_empty() {
        m.push_str(": ");
        m.push_str(shown);
    }
    if status == 408 || status == 429 || status >= 500 {
        Err(Failure::Transient(m))
    } else {
        Err(Failure::Permanent(m))
    }
}

/// RFC 9110 token characters (header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value: no CR, LF, NUL or other control characters but tab.
fn header_value_ok(v: &str) -> bool {
    !v.chars().any(|c| c.is_control() && c != '\t')
}

/// What a URL template fixes: scheme, host and port.
struct Target {
    https: bool,
    host: String,
    port: u16,
    authority: String,
}

/// Checks the URL template: `http(s)://authority` written out before any variable, every
/// variable ending in `| url`.
fn url_target(url: &Tpl) -> Result<Target, String> {
    let prefix = url.literal_prefix();
    let (https, rest) = if let Some(r) = strip_prefix_ci(prefix, "https://") {
        (true, r)
    } else if let Some(r) = strip_prefix_ci(prefix, "http://") {
        (false, r)
    } else {
        return Err("the URL must start with `https://` or `http://`".into());
    };
    let end = rest.find(['/', '?', '#']);
    if end.is_none() && !url.template.is_constant() {
        return Err(
            "write the host (and port) out before the first `{{`: event values may only go \
             into the path and query"
                .into(),
        );
    }
    let authority = &rest[..end.unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err("credentials in the URL are not supported: use `username` and `password_env`, or a bearer token".into());
    }
    let (host, port) = net::split_host_port(authority, if https { 443 } else { 80 })?;
    if !url_vars_encoded(url.template.source()) {
        return Err(
            "every value inserted into the URL must end in the `url` filter, e.g. \
             `{{ risk_name | url }}`"
                .into(),
        );
    }
    Ok(Target {
        https,
        host,
        port,
        authority: authority.to_owned(),
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Whether every `{{ name … }}` in the template text ends in `| url` (string literals
/// `{{ "…" }}` are text and need no filter).
fn url_vars_encoded(source: &str) -> bool {
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        // Find the closing `}}` outside string literals.
        let bytes = after.as_bytes();
        let (mut i, mut in_str, mut close) = (0, false, None);
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_str => i += 1,
                b'"' => in_str = !in_str,
                b'}' if !in_str && bytes.get(i + 1) == Some(&b'}') => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let Some(close) = close else { return false };
        let body = after[..close].trim();
        if !body.starts_with('"') {
            let last = body.rsplit('|').next().unwrap_or("").trim();
            if !body.contains('|') || last != "url" {
                return false;
            }
        }
        rest = &after[close + 2..];
    }
    true
}

/// The rendered URL's path and query, after checking that its characters are URL
/// characters and that it still names the configured origin.
fn request_target(url: &str, https: bool, authority: &str) -> Result<String, String> {
    if let Some(c) = url.chars().find(|c| !is_url_char(*c)) {
        return Err(format!("it contains {c:?}, which a URL cannot"));
    }
    let bytes = url.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err("a `%` without two hex digits".into());
        }
    }
    let scheme = if https { "https://" } else { "http://" };
    let rest = strip_prefix_ci(url, scheme).ok_or("the scheme changed")?;
    let rest = rest.strip_prefix(authority).ok_or("the host changed")?;
    let rest = rest.split('#').next().unwrap_or("");
    Ok(match rest.chars().next() {
        None => "/".to_owned(),
        Some('/') => rest.to_owned(),
        Some('?') => format!("/{rest}"),
        Some(_) => return Err("the host changed".into()),
    })
}

/// RFC 3986 characters (unreserved, reserved, `%`).
fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

impl crate::kind::ActionKind for WebhookSpec {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn templates(&self) -> Vec<&Tpl> {
        WebhookSpec::templates(self).collect()
    }

    fn check(&self) -> Vec<ConfigError> {
        WebhookSpec::check(self)
    }

    fn deliverer(
        &self,
        _: &str,
        _: &crate::common::Common,
    ) -> Option<Box<dyn crate::delivery::Deliver + '_>> {
        Some(Box::new(WebhookSpec::deliverer(self)))
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

    fn spec(text: &str) -> WebhookSpec {
        parse_ok(text)
            .kind_as::<WebhookSpec>()
            .expect("a webhook action")
            .clone()
    }

    const HEAD: &str = "[[action]]\nname = \"h\"\ntype = \"webhook\"\n";

    #[test]
    fn url_templates_keep_the_origin_and_encode_values() {
        let s = spec(&format!(
            "{HEAD}url = \"https://hooks.example:8443/a/{{{{ filter | url }}}}?h={{{{ host | lower | url }}}}\"\n"
        ));
        assert!(s.https && s.host == "hooks.example" && s.port == 8443);
        for (url, why) in [
            ("ftp://x/", "https://"),
            ("https://{{ host | url }}/", "host"),
            ("https://h.example/{{ host }}", "`url` filter"),
            ("https://h.example/{{ host | url | upper }}", "`url` filter"),
            ("https://user:pw@h.example/", "credentials"),
            ("http://h.example:99999/", "port"),
        ] {
            let text = format!("{HEAD}url = \"{}\"\n", url.replace('"', "\\\""));
            let e = parse_one(&text).unwrap_err();
            assert!(e[0].message.contains(why), "{url}: {e:?}");
            assert_eq!(at(&text, &e[0].span), format!("\"{url}\""));
        }
        assert!(url_vars_encoded(
            r#"http://a/{{ "{{" }}/{{ x | default("a|b") | url }}"#
        ));
        assert_eq!(request_target("http://a:1", false, "a:1").unwrap(), "/");
        assert_eq!(
            request_target("http://a:1?x=1#f", false, "a:1").unwrap(),
            "/?x=1"
        );
        assert!(request_target("http://a:1/a b", false, "a:1").is_err());
        assert!(request_target("http://a:1/%zz", false, "a:1").is_err());
        assert!(request_target("http://a:1.evil/", false, "a:1").is_err());
    }

    #[test]
    fn headers_auth_and_timeouts_are_checked() {
        for (extra, why) in [
            ("headers = { Host = \"x\" }", "written by watchpost"),
            ("headers = { \"Content-Type\" = \"x\" }", "content_type"),
            ("headers = { \"a b\" = \"x\" }", "header name"),
            ("headers = { X = \"a\\nb\" }", "line breaks"),
            ("timeout = \"2h\"", "between"),
            ("timeout = \"soon\"", "not a duration"),
            ("method = \"GET\"", "unknown variant"),
            ("username = \"u\"", "needs `password_env`"),
            ("password_env = \"P\"", "needs `username`"),
            (
                "bearer_token_env = \"T\"\nusername = \"u\"\npassword_env = \"P\"",
                "not both",
            ),
            (
                "bearer_token_env = \"T\"\nbearer_token_file = \"/t\"",
                "not both",
            ),
            ("tls = { verify = false }", "`http:`"),
        ] {
            let text = format!("{HEAD}url = \"http://h.example/\"\n{extra}\n");
            let e = parse_one(&text).unwrap_err();
            assert!(e.iter().any(|e| e.message.contains(why)), "{extra}: {e:?}");
        }
        let s = spec(&format!(
            "{HEAD}url = \"http://h.example/\"\ntimeout = 3\nmethod = \"PUT\"\nbearer_token_env = \"WATCHPOST_TEST_UNSET_TOKEN\"\n"
        ));
        assert_eq!(s.timeout, Duration::from_secs(3));
        let found = s.check();
        assert!(
            found.iter().any(|e| e.message.contains("is not set")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|e| e.warning && e.message.contains("unencrypted"))
        );
    }

    #[test]
    fn answers_are_classified() {
        let o = "http://h:1";
        assert!(classify(204, "No Content", b"", o).is_ok());
        for s in [408, 429, 500, 502, 503] {
            assert!(classify(s, "", b"", o).unwrap_err().is_transient(), "{s}");
        }
        let e = classify(400, "Bad Request", b"{\"error\":\n\"bad field\"}", o).unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(
            e.message(),
            "webhook http://h:1: HTTP 400 Bad Request: {\"error\": \"bad field\"}"
        );
        assert!(!classify(301, "", b"", o).unwrap_err().is_transient());
    }
}

// The peers are Python scripts and the CA is made by openssl: Unix tools (not under Wine).
#[cfg(all(test, unix))]
mod peer_tests;
