//! `[fleet]` in the agent's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use watchpost_actions::http::Endpoint;
use watchpost_event::ConfigError;

/// `[fleet]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    server: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    enroll_secret: Option<Spanned<String>>,
    enroll_secret_file: Option<Spanned<String>>,
    max_queue: Option<Spanned<u64>>,
    batch: Option<Spanned<u64>>,
    timeout: Option<Spanned<String>>,
    host_id: Option<Spanned<String>>,
    enabled: Option<bool>,
}

/// Where the enrollment secret comes from (never shown in messages).
#[derive(Clone)]
pub enum SecretSource {
    /// Written in the file (after `${ENV}` expansion).
    Inline(String),
    /// A file's first line.
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<hidden>)"),
            SecretSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl SecretSource {
    /// The secret now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::Inline(s) => Ok(s.trim().to_owned()),
            SecretSource::File(p) => {
                use std::io::Read;
                let mut text = String::new();
                std::fs::File::open(p)
                    .and_then(|f| f.take(64 << 10).read_to_string(&mut text))
                    .map_err(|e| {
                        format!(
                            "cannot read the enrollment secret from {}: {e}",
                            p.display()
                        )
                    })?;
                let s = text.lines().next().unwrap_or("").trim().to_owned();
                if s.is_empty() {
                    return Err(format!("{} is empty", p.display()));
                }
                Ok(s)
            }
        }
    }
}

/// A checked `[fleet]` section.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The server's URL.
    pub server: String,
    /// CAs to trust (else the system's).
    pub ca_file: Option<PathBuf>,
    /// For enrollment.
    pub secret: Option<SecretSource>,
    /// Records that may wait; more are dropped and counted.
    pub max_queue: u64,
    /// Records per batch.
    pub batch: usize,
    /// One request's time.
    pub timeout: Duration,
    /// Where the credential is kept (the agent's state directory).
    pub state_dir: PathBuf,
    /// The host id to enroll with, instead of the machine's (cloned machines, several
    /// agents on one host).
    pub host_id: Option<String>,
}

impl FleetSpec {
    /// Checks the section; `None` when it is off (`enabled = false`) or has errors
    /// (reported in `errors`). `state_dir` is the agent's.
    pub fn parse(
        raw: &RawFleet,
        state_dir: PathBuf,
        errors: &mut Vec<ConfigError>,
    ) -> Option<FleetSpec> {
        if raw.enabled == Some(false) {
            return None;
        }
        let before = errors.len();
        let Some(server) = &raw.server else {
            errors.push(ConfigError::new(
                0..0,
                "[fleet] needs `server = \"https://…\"`",
            ));
            return None;
        };
        let ca_file = raw.ca_file.as_ref().map(|c| PathBuf::from(c.get_ref()));
        if let Err(e) = Endpoint::parse(server.get_ref(), None) {
            errors.push(ConfigError::new(server.span(), e));
        }
        let secret = match (&raw.enroll_secret, &raw.enroll_secret_file) {
            (Some(s), Some(_)) => {
                errors.push(ConfigError::new(
                    s.span(),
                    "write `enroll_secret` or `enroll_secret_file`, not both",
                ));
                None
            }
            (Some(s), None) if s.get_ref().trim().is_empty() => {
                errors.push(ConfigError::new(
                    s.span(),
                    "`enroll_secret` is empty (an unset ${VARIABLE}?)",
                ));
                None
            }
            (Some(s), None) => Some(SecretSource::Inline(s.get_ref().clone())),
            (None, Some(f)) => Some(SecretSource::File(PathBuf::from(f.get_ref()))),
            (None, None) => None,
        };
        let max_queue = match &raw.max_queue {
            Some(n) if *n.get_ref() >= 1 => *n.get_ref(),
            Some(n) => {
                errors.push(ConfigError::new(n.span(), "`max_queue` must be at least 1"));
                0
            }
            None => 1_000_000,
        };
        let batch = match &raw.batch {
            Some(n) if (1..=20_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                errors.push(ConfigError::new(
                    n.span(),
                    "`batch` must be between 1 and 20000",
                ));
                1000
            }
            None => 1000,
        };
        let timeout = match &raw.timeout {
            None => Duration::from_secs(30),
            Some(t) => match watchpost_event::parse_duration(t.get_ref()) {
                Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(600) => d,
                Ok(_) => {
                    errors.push(ConfigError::new(
                        t.span(),
                        "`timeout` must be between 100ms and 10m",
                    ));
                    Duration::from_secs(30)
                }
                Err(e) => {
                    errors.push(ConfigError::new(t.span(), e));
                    Duration::from_secs(30)
                }
            },
        };
        let host_id = match &raw.host_id {
            Some(h) if h.get_ref().trim().is_empty() || h.get_ref().len() > 256 => {
                errors.push(ConfigError::new(
                    h.span(),
                    "`host_id` must be 1-256 characters",
                ));
                None
            }
            Some(h) => Some(h.get_ref().trim().to_owned()),
            None => None,
        };
        (errors.len() == before).then(|| FleetSpec {
            host_id,
            server: server.get_ref().clone(),
            ca_file,
            secret,
            max_queue,
            batch,
            timeout,
            state_dir,
        })
    }

    /// Checks that read files (for `check-config`): the CA file loads, the secret can be
    /// read, and without a secret a credential must be stored already. `raw` gives the
    /// places.
    pub fn check(&self, raw: &RawFleet) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let server_span = raw.server.as_ref().map_or(0..0, |s| s.span());
        if let Err(e) = Endpoint::parse(&self.server, self.ca_file.as_deref()) {
            let span = raw
                .ca_file
                .as_ref()
                .map_or(server_span.clone(), |c| c.span());
            out.push(ConfigError::new(span, e));
        }
        match &self.secret {
            Some(s) => {
                if let Err(e) = s.read() {
                    let span = raw
                        .enroll_secret_file
                        .as_ref()
                        .or(raw.enroll_secret.as_ref())
                        .map_or(0..0, |s| s.span());
                    out.push(ConfigError::new(span, e));
                }
            }
            None => {
                if crate::load_credential(&self.state_dir).is_none() {
                    out.push(ConfigError::warning(
                        server_span,
                        format!(
                            "not enrolled yet (no credential in {}) and no `enroll_secret`: run `watchpost enroll`",
                            self.state_dir.display()
                        ),
                    ));
                }
            }
        }
        out
    }

    /// The file the enrollment secret is read from, when it is one.
    pub fn secret_file(&self) -> Option<&PathBuf> {
        match &self.secret {
            Some(SecretSource::File(p)) => Some(p),
            _ => None,
        }
    }

    /// The server's endpoint (reads the CA file).
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        Endpoint::parse(&self.server, self.ca_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<FleetSpec>, Vec<ConfigError>) {
        let raw: RawFleet = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        let spec = FleetSpec::parse(&raw, PathBuf::from("/nonexistent-state"), &mut errors);
        (spec, errors)
    }

    #[test]
    fn the_section_is_checked_and_secrets_stay_hidden() {
        let (s, e) = parse(
            "server = \"https://fleet.example:8443\"\nenroll_secret = \"wpe_abc\"\nmax_queue = 10\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let s = s.unwrap();
        assert_eq!((s.max_queue, s.batch), (10, 1000));
        assert!(!format!("{s:?}").contains("wpe_abc"));
        for (text, why) in [
            ("server = \"ftp://x\"", "https://"),
            ("server = \"http://fleet.example\"", "loopback"),
            ("server = \"https://x\"\nenroll_secret = \"\"", "empty"),
            (
                "server = \"https://x\"\nenroll_secret = \"a\"\nenroll_secret_file = \"/f\"",
                "not both",
            ),
            ("server = \"https://x\"\nmax_queue = 0", "at least 1"),
            ("enroll_secret = \"a\"", "needs `server"),
        ] {
            let (_, e) = parse(text);
            assert!(e.iter().any(|e| e.message.contains(why)), "{text}: {e:?}");
            assert!(e.iter().all(|e| !e.message.contains("wpe_")));
        }
        let (s, e) = parse("server = \"https://x\"\nenabled = false\n");
        assert!(s.is_none() && e.is_empty());
    }
}
