//! The server's configuration file (TOML) and its diagnostics, printed like the agent's
//! `check-config`: `file:line:column: error: message`, the line, a caret.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8443"          # a bare port binds loopback; other addresses written out
//! tls_cert = "/etc/watchpost-server/server.pem"
//! tls_key = "/etc/watchpost-server/server.key"
//! # plain_http = true                # tests only: refused unless `listen` is loopback
//! heartbeat = "30s"                  # agents send one this often
//! offline_after = "90s"              # no heartbeat for this long: offline
//! metrics = "127.0.0.1:9465"         # Prometheus GET /metrics (plain HTTP); off by default
//!
//! [database]
//! url = "host=/var/run/postgresql dbname=watchpost user=watchpost"   # or postgresql://…
//! # password_env = "WATCHPOST_DB_PASSWORD" | password_file = "/etc/watchpost-server/db.pw"
//! pool_size = 16
//!
//! [retention]
//! events = "30d"                     # whole days; older day partitions are dropped
//!
//! [limits]
//! max_body = "8MiB"  max_decompressed = "64MiB"  max_records = 20000
//! agent_requests_per_second = 20  agent_burst = 100  enroll_per_minute = 600
//! max_connections = 20000  header_timeout = "10s"  idle_timeout = "120s"
//!
//! [console]
//! enabled = true                     # the web console at https://…/console/ (off by default)
//! # session_key_file = "/etc/watchpost-server/console.key"   # shared by several servers
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the server folds the per-hour counts of past hours (`db::fold_hours`).
pub const FOLD_EVERY: Duration = Duration::from_secs(300);

use serde::Deserialize;
use serde_spanned::Spanned;
use watchpost_event::ConfigError;
use watchpost_fleet_protocol::Limits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    database: Option<RawDatabase>,
    retention: Option<RawRetention>,
    limits: Option<RawLimits>,
    console: Option<RawConsole>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    enabled: Option<bool>,
    session_key_file: Option<Spanned<String>>,
}

/// `[console]`: the web console on the server's own listener, under `/console/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// A file with a secret (32 characters or more) that signs console sessions: give
    /// several servers behind one address the same file. `None`: a random key per start
    /// (sessions end when the server restarts).
    pub session_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    plain_http: Option<Spanned<bool>>,
    heartbeat: Option<Spanned<String>>,
    offline_after: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    pool_size: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    events: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body: Option<Spanned<Size>>,
    max_decompressed: Option<Spanned<Size>>,
    max_records: Option<Spanned<u64>>,
    agent_requests_per_second: Option<Spanned<f64>>,
    agent_burst: Option<Spanned<f64>>,
    enroll_per_minute: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    header_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// Where the database password comes from (never written into the file).
#[derive(Debug, Clone)]
pub enum Secret {
    /// An environment variable.
    Env(String),
    /// A file's first line.
    File(PathBuf),
}

impl Secret {
    /// The secret's value now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("environment variable {name} is not set")),
            },
            Secret::File(p) => {
                let text = crate::read_limited(p, 64 << 10)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                let v = text.lines().next().unwrap_or("").trim_end().to_owned();
                if v.is_empty() {
                    return Err(format!("{} is empty", p.display()));
                }
                Ok(v)
            }
        }
    }
}

/// TLS certificate chain and key (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The rustls server configuration from these PEM files (HTTP/1.1 by ALPN).
    pub fn server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| format!("cannot read {}: {e}", self.cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: bad PEM: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: no usable PEM private key: {e}", self.key.display()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Session tickets (keys rotated every 6 hours, kept in memory only): an agent that
        // connects again (after a restart of either side, a network change, a heartbeat
        // interval longer than a kept connection lives) resumes its TLS session without
        // the certificate exchange. The default in-memory session cache holds 256
        // sessions, far fewer than a fleet has agents; tickets hold no state here.
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("TLS session tickets: {e}"))?;
        Ok(std::sync::Arc::new(config))
    }
}

/// The database connection.
#[derive(Debug, Clone)]
pub struct Database {
    /// libpq key=value string or `postgresql://` URL (a password in it is used, but
    /// `check-config` warns).
    pub url: String,
    /// The password, from outside the file.
    pub password: Option<Secret>,
    /// Most connections at once of the main pool (the server also holds
    /// [`crate::db::URGENT_POOL`] for urgent work and one listening for notifications).
    pub pool_size: usize,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where agents connect.
    pub listen: SocketAddr,
    /// HTTPS; `None`: plain HTTP (loopback only).
    pub tls: Option<TlsFiles>,
    /// Heartbeat interval told to agents.
    pub heartbeat: Duration,
    /// An agent silent for longer counts as offline.
    pub offline_after: Duration,
    /// Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
    /// PostgreSQL.
    pub database: Database,
    /// Days of events kept.
    pub retention_days: u32,
    /// Body and batch limits.
    pub limits: Limits,
    /// Requests per second per agent (token bucket rate).
    pub agent_rate: f64,
    /// Requests an agent may make at once (bucket size).
    pub agent_burst: f64,
    /// Enrollment attempts per minute per client address.
    pub enroll_per_minute: u32,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time for a client to complete the TLS handshake.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed (and a request's
    /// headers must arrive within it).
    pub idle_timeout: Duration,
    /// The web console (`None`: off).
    pub console: Option<ConsoleSettings>,
    /// How often the maintenance task folds the per-hour counts of past hours into rows
    /// of all agents (`db::fold_hours`); not a file setting (`None`: never, for the
    /// console bench, which folds when it measures).
    pub fold_every: Option<Duration>,
}

impl Config {
    /// Settings for tests: plain HTTP on `listen`, the given database.
    pub fn for_tests(listen: SocketAddr, url: &str) -> Config {
        Config {
            listen,
            tls: None,
            heartbeat: Duration::from_secs(30),
            offline_after: Duration::from_secs(90),
            metrics: None,
            database: Database {
                url: url.to_owned(),
                password: None,
                pool_size: 8,
            },
            retention_days: 30,
            limits: Limits::default(),
            agent_rate: 1000.0,
            agent_burst: 1000.0,
            enroll_per_minute: 100_000,
            max_connections: 20_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            console: None,
            fold_every: Some(FOLD_EVERY),
        }
    }
}

fn duration(
    v: Option<&Spanned<String>>,
    default: Duration,
    range: Range<Duration>,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    let Some(v) = v else { return default };
    match watchpost_event::parse_duration(v.get_ref()) {
        Ok(d) if range.contains(&d) => d,
        Ok(_) => {
            errors.push(ConfigError::new(
                v.span(),
                format!(
                    "must be at least {}s and below {}s",
                    range.start.as_secs_f64(),
                    range.end.as_secs_f64()
                ),
            ));
            default
        }
        Err(e) => {
            errors.push(ConfigError::new(v.span(), e));
            default
        }
    }
}

fn size(v: Option<&Spanned<Size>>, default: usize, errors: &mut Vec<ConfigError>) -> usize {
    let Some(v) = v else { return default };
    let n = match v.get_ref() {
        Size::Bytes(n) => Ok(*n),
        Size::Text(t) => parse_size(t),
    };
    match n {
        Ok(n) if (1024..=(1 << 32)).contains(&n) => n as usize,
        Ok(_) => {
            errors.push(ConfigError::new(v.span(), "must be between 1KiB and 4GiB"));
            default
        }
        Err(e) => {
            errors.push(ConfigError::new(v.span(), e));
            default
        }
    }
}

/// `8MiB`, `512KiB`, `1GiB`, `1000` (bytes).
pub fn parse_size(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split]
        .parse()
        .map_err(|_| format!("`{t}` is not a size (e.g. 8MiB)"))?;
    let unit = match t[split..].trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return Err(format!("`{t}` is not a size (e.g. 8MiB)")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("`{t}` is too large"))
}

/// `127.0.0.1:8443`, `[::1]:8443`, `0.0.0.0:8443`, or a bare port (loopback).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.trim().parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = text.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("`{text}` is not an address: write `127.0.0.1:8443`, `[::1]:8443`, `0.0.0.0:8443` or a port")
    })
}

fn listen_at(
    v: Option<&Spanned<String>>,
    default: Option<SocketAddr>,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match v {
        None => default,
        Some(v) => match parse_listen(v.get_ref()) {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(ConfigError::new(v.span(), e));
                default
            }
        },
    }
}

/// Parses the configuration text; every problem is returned with its place (errors and
/// warnings; the configuration is usable when none is an error).
pub fn parse(text: &str) -> (Option<Config>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            errors.push(ConfigError::new(
                e.span().unwrap_or(0..0),
                e.message().trim().replace('\n', " "),
            ));
            return (None, errors);
        }
    };
    let server = raw.server.unwrap_or_default();
    let listen = listen_at(
        server.listen.as_ref(),
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443)),
        &mut errors,
    )
    .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443));
    let plain = server.plain_http.as_ref().is_some_and(|p| *p.get_ref());
    let tls = match (&server.tls_cert, &server.tls_key, plain) {
        (_, _, true) => {
            if !listen.ip().is_loopback() {
                errors.push(ConfigError::new(
                    server.plain_http.as_ref().map_or(0..0, |p| p.span()),
                    format!(
                        "plain HTTP is only for tests on loopback; `listen` is {listen}: set `tls_cert` and `tls_key`"
                    ),
                ));
            }
            if let Some(c) = &server.tls_cert {
                errors.push(ConfigError::new(
                    c.span(),
                    "`plain_http = true` and `tls_cert` exclude each other",
                ));
            }
            None
        }
        (Some(c), Some(k), false) => Some(TlsFiles {
            cert: PathBuf::from(c.get_ref()),
            key: PathBuf::from(k.get_ref()),
        }),
        (Some(c), None, false) => {
            errors.push(ConfigError::new(c.span(), "`tls_cert` needs `tls_key`"));
            None
        }
        (None, Some(k), false) => {
            errors.push(ConfigError::new(k.span(), "`tls_key` needs `tls_cert`"));
            None
        }
        (None, None, false) => {
            errors.push(ConfigError::new(
                0..0,
                "[server] needs `tls_cert` and `tls_key` (agents connect over HTTPS only)",
            ));
            None
        }
    };
    let heartbeat = duration(
        server.heartbeat.as_ref(),
        Duration::from_secs(30),
        Duration::from_secs(1)..Duration::from_secs(86_400),
        &mut errors,
    );
    let offline_after = duration(
        server.offline_after.as_ref(),
        heartbeat * 3,
        Duration::from_secs(2)..Duration::from_secs(30 * 86_400),
        &mut errors,
    );
    if offline_after <= heartbeat
        && let Some(o) = &server.offline_after
    {
        errors.push(ConfigError::warning(
            o.span(),
            "`offline_after` is not longer than `heartbeat`: agents will flap between online and offline",
        ));
    }
    let metrics = listen_at(server.metrics.as_ref(), None, &mut errors);

    let db = raw.database.unwrap_or_default();
    let url = match &db.url {
        Some(u) => {
            if url_has_password(u.get_ref()) {
                errors.push(ConfigError::warning(
                    u.span(),
                    "the URL holds a password: move it to `password_env` or `password_file`",
                ));
            }
            u.get_ref().clone()
        }
        None => {
            errors.push(ConfigError::new(
                0..0,
                "[database] needs `url` (e.g. \"host=/var/run/postgresql dbname=watchpost\")",
            ));
            String::new()
        }
    };
    if !url.is_empty()
        && let Err(e) = url.parse::<tokio_postgres::Config>()
    {
        errors.push(ConfigError::new(
            db.url.as_ref().map_or(0..0, |u| u.span()),
            format!("not a PostgreSQL connection string: {e}"),
        ));
    }
    let password = match (&db.password_env, &db.password_file) {
        (Some(e), Some(_)) => {
            errors.push(ConfigError::new(
                e.span(),
                "write `password_env` or `password_file`, not both",
            ));
            None
        }
        (Some(e), None) => Some((Secret::Env(e.get_ref().clone()), e.span())),
        (None, Some(f)) => Some((Secret::File(PathBuf::from(f.get_ref())), f.span())),
        (None, None) => None,
    };
    if let Some((s, span)) = &password
        && let Err(e) = s.read()
    {
        errors.push(ConfigError::new(span.clone(), e));
    }
    let pool_size = match &db.pool_size {
        Some(p) if (1..=1000).contains(p.get_ref()) => *p.get_ref() as usize,
        Some(p) => {
            errors.push(ConfigError::new(p.span(), "must be between 1 and 1000"));
            16
        }
        None => 16,
    };

    let retention = raw.retention.unwrap_or_default();
    let retention_days = match &retention.events {
        None => 30,
        Some(v) => match watchpost_event::parse_duration(v.get_ref()) {
            Ok(d)
                if d >= Duration::from_secs(86_400) && d <= Duration::from_secs(3650 * 86_400) =>
            {
                (d.as_secs() / 86_400) as u32
            }
            Ok(_) => {
                errors.push(ConfigError::new(
                    v.span(),
                    "keep events between 1d and 3650d",
                ));
                30
            }
            Err(e) => {
                errors.push(ConfigError::new(v.span(), e));
                30
            }
        },
    };

    let l = raw.limits.unwrap_or_default();
    let defaults = Limits::default();
    let limits = Limits {
        max_body: size(l.max_body.as_ref(), defaults.max_body, &mut errors),
        max_decompressed: size(
            l.max_decompressed.as_ref(),
            defaults.max_decompressed,
            &mut errors,
        ),
        max_records: match &l.max_records {
            Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                errors.push(ConfigError::new(n.span(), "must be between 1 and 1000000"));
                defaults.max_records
            }
            None => defaults.max_records,
        },
    };
    let positive = |v: &Option<Spanned<f64>>, default: f64, errors: &mut Vec<ConfigError>| match v {
        Some(x) if *x.get_ref() > 0.0 && x.get_ref().is_finite() => *x.get_ref(),
        Some(x) => {
            errors.push(ConfigError::new(x.span(), "must be a positive number"));
            default
        }
        None => default,
    };
    let agent_rate = positive(&l.agent_requests_per_second, 20.0, &mut errors);
    let agent_burst = positive(&l.agent_burst, 100.0, &mut errors);
    let enroll_per_minute = match &l.enroll_per_minute {
        Some(n) if *n.get_ref() >= 1 => (*n.get_ref()).min(u32::MAX as u64) as u32,
        Some(n) => {
            errors.push(ConfigError::new(n.span(), "must be at least 1"));
            600
        }
        None => 600,
    };
    let max_connections = match &l.max_connections {
        Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            errors.push(ConfigError::new(n.span(), "must be between 1 and 1000000"));
            20_000
        }
        None => 20_000,
    };
    let header_timeout = duration(
        l.header_timeout.as_ref(),
        Duration::from_secs(10),
        Duration::from_millis(100)..Duration::from_secs(600),
        &mut errors,
    );
    let idle_timeout = duration(
        l.idle_timeout.as_ref(),
        Duration::from_secs(120),
        Duration::from_secs(1)..Duration::from_secs(86_400),
        &mut errors,
    );
    let console = raw
        .console
        .filter(|c| c.enabled.unwrap_or(false))
        .map(|c| ConsoleSettings {
            session_key_file: c.session_key_file.map(|p| PathBuf::from(p.get_ref())),
        });

    if errors.iter().any(|e| !e.warning) {
        return (None, errors);
    }
    (
        Some(Config {
            listen,
            tls,
            heartbeat,
            offline_after,
            metrics,
            database: Database {
                url,
                password: password.map(|(s, _)| s),
                pool_size,
            },
            retention_days,
            limits,
            agent_rate,
            agent_burst,
            enroll_per_minute,
            max_connections,
            header_timeout,
            idle_timeout,
            console,
            fold_every: Some(FOLD_EVERY),
        }),
        errors,
    )
}

/// Whether a connection string carries a password.
fn url_has_password(url: &str) -> bool {
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        return authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
            || rest.contains("password=");
    }
    url.split_whitespace().any(|kv| kv.starts_with("password="))
}

/// Checks that look at the file system: the certificate and key load.
pub fn check_files(config: &Config, text: &str) -> Vec<ConfigError> {
    let mut out = Vec::new();
    if let Some(tls) = &config.tls
        && let Err(e) = tls.server_config()
    {
        let span = find_span(text, "tls_cert");
        out.push(ConfigError::new(span, e));
    }
    out
}

/// The span of `key = …` in the text (for problems found after parsing).
fn find_span(text: &str, key: &str) -> Range<usize> {
    text.find(key).map_or(0..0, |i| i..i + key.len())
}

/// Prints diagnostics as `file:line:column: error: message`, the line, a caret.
pub fn render(path: &Path, text: &str, errors: &[ConfigError]) -> String {
    let mut out = String::new();
    for e in errors {
        let at = e.span.start.min(text.len());
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let line_no = text[..at].matches('\n').count() + 1;
        let col = text[line_start..at].chars().count() + 1;
        let kind = if e.warning { "warning" } else { "error" };
        out.push_str(&format!(
            "{}:{line_no}:{col}: {kind}: {}\n",
            path.display(),
            e.message
        ));
        let line = redact(&text[line_start..line_end]);
        let line = line.as_str();
        if !line.trim().is_empty() {
            let width = text[at..line_end.max(at)]
                .chars()
                .count()
                .min(e.span.end.saturating_sub(e.span.start))
                .max(1);
            out.push_str(&format!(
                "  {line}\n  {}{}\n",
                " ".repeat(col - 1),
                "^".repeat(width)
            ));
        }
    }
    out
}

/// A configuration line with any password in it replaced by `***` (diagnostics show the
/// line they point at; secrets never reach the output).
fn redact(line: &str) -> String {
    let mut out = line.to_owned();
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(i) = out.find(scheme) {
            let rest = &out[i + scheme.len()..];
            let authority_end = rest.find(['/', '?', '"', '\'', ' ']).unwrap_or(rest.len());
            if let Some(at) = rest[..authority_end].rfind('@')
                && let Some(colon) = rest[..at].find(':')
            {
                let start = i + scheme.len() + colon + 1;
                let end = i + scheme.len() + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    let mut from = 0;
    while let Some(i) = out[from..].find("password=") {
        let start = from + i + "password=".len();
        let end = out[start..]
            .find([' ', '&', '"', '\''])
            .map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

/// Reads and parses the file; the diagnostics rendered, and the configuration when it
/// has no error.
pub fn load(path: &Path) -> Result<(Config, String), String> {
    let text = crate::read_limited(path, 1 << 20)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (config, errors) = parse(&text);
    let mut shown = render(path, &text, &errors);
    match config {
        Some(c) => {
            let more = check_files(&c, &text);
            if more.is_empty() {
                Ok((c, shown))
            } else {
                shown.push_str(&render(path, &text, &more));
                Err(shown)
            }
        }
        None => Err(shown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "[database]\nurl = \"host=/tmp dbname=w\"\n";

    #[test]
    fn a_good_file_and_its_defaults() {
        let text = format!("[server]\nlisten = \"9443\"\nplain_http = true\n{DB}");
        let (c, e) = parse(&text);
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9443");
        assert!(c.tls.is_none());
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.heartbeat, Duration::from_secs(30));
        assert_eq!(c.offline_after, Duration::from_secs(90));
    }

    #[test]
    fn mistakes_are_reported_at_their_place() {
        for (text, at, why) in [
            (
                format!("[server]\nlisten = \"0.0.0.0:8443\"\nplain_http = true\n{DB}"),
                "true",
                "only for tests on loopback",
            ),
            (format!("[server]\nlisten = \"nowhere\"\nplain_http = true\n{DB}"), "\"nowhere\"", "not an address"),
            (format!("[server]\nplain_http = true\nheartbeat = \"soon\"\n{DB}"), "\"soon\"", "duration"),
            (
                format!("[server]\nplain_http = true\n{DB}[limits]\nmax_body = \"lots\"\n"),
                "\"lots\"",
                "not a size",
            ),
            (format!("[server]\nplain_http = true\n{DB}[retention]\nevents = \"2h\"\n"), "\"2h\"", "between 1d"),
            ("[server]\nplain_http = true\nlisten = \"1\"\nbogus = 1\n".to_string(), "bogus", "unknown field"),
            ("[server]\nplain_http = true\n[database]\nurl = \"postgresql://u:pw@h/db\"\npassword_env = \"WATCHPOST_TEST_UNSET_PW\"\n".to_string(), "\"WATCHPOST_TEST_UNSET_PW\"", "not set"),
        ] {
            let (_, e) = parse(&text);
            let found = e.iter().find(|e| e.message.contains(why));
            let Some(found) = found else {
                panic!("{text}: {why} not in {e:?}")
            };
            assert_eq!(&text[found.span.clone()], at, "{text}");
        }
        let (_, e) = parse(&format!("[server]\nlisten = \"1\"\n{DB}"));
        assert!(e[0].message.contains("tls_cert"), "{e:?}");
    }

    #[test]
    fn passwords_in_urls_are_warned_about_and_never_shown() {
        let text =
            "[server]\nplain_http = true\n[database]\nurl = \"postgresql://u:hunter2@h/db\"\n";
        let (c, e) = parse(text);
        assert!(c.is_some());
        assert!(e[0].warning && e[0].message.contains("password_env"));
        let shown = render(Path::new("s.toml"), text, &e);
        assert!(shown.starts_with("s.toml:4:7: warning:"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgresql://u:***@h/db"), "{shown}");
        assert_eq!(
            redact("url = \"host=h password=pw2 user=u\""),
            "url = \"host=h password=*** user=u\""
        );
        assert!(url_has_password("host=x password=y"));
        assert!(!url_has_password("postgresql://u@h/db"));
    }
}
