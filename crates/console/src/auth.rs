//! Who is asking: passwords (argon2id), sessions, CSRF tokens, login rate limits, and the
//! local console's user file.
//!
//! * **Sessions** are signed cookies (HMAC-SHA-256 over user, expiry and a random nonce
//!   with a key the console holds), so a server keeps no session table and several fleet
//!   servers sharing one key file accept each other's sessions. The user is looked up on
//!   every request: a disabled user's session ends at once, a changed role applies at
//!   once. The cookie is `HttpOnly`, `SameSite=Strict`, and `Secure` whenever the console
//!   is served over TLS (the agent's console may run plain HTTP on loopback only).
//! * **CSRF**: every form that changes something carries a token derived from the
//!   session's nonce (HMAC with the same key); a POST without the right one is refused
//!   (403) and logged. `SameSite=Strict` and the `Origin` check are a second fence.
//! * **Logins** are limited per address and per user name (5 failures in 5 minutes, then
//!   429 until the window passes), counted in memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::backend::{Role, UserRecord};

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "wp_session";

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Failed logins allowed per window.
const LOGIN_FAILURES: u32 = 5;
/// The login window.
const LOGIN_WINDOW: Duration = Duration::from_secs(300);

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Too short.
    #[error("a password needs at least 12 characters")]
    TooShort,
    /// No randomness or a hashing failure.
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// An argon2id PHC string for `password` (at least 12 characters).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    use argon2::PasswordHasher;
    if password.chars().count() < 12 {
        return Err(AuthError::TooShort);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches an argon2 PHC string.
pub fn password_matches(password: &str, phc: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::password_hash::PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A logged-in user, as read from a valid cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// User name.
    pub user: String,
    /// Expiry (Unix seconds).
    pub expires: i64,
    /// Random nonce (hex), the root of the CSRF token.
    pub nonce: String,
}

/// The key that signs sessions and CSRF tokens.
pub struct Keys {
    key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// A random key (sessions end when the process does).
    pub fn random() -> Result<Keys, AuthError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| AuthError::Hash(e.to_string()))?;
        Ok(Keys { key })
    }

    /// A key from a secret (at least 32 bytes; e.g. a file shared by several servers).
    pub fn from_secret(secret: &[u8]) -> Option<Keys> {
        if secret.len() < 32 {
            return None;
        }
        let mut mac = HmacSha256::new_from_slice(b"watchpost console session key").ok()?;
        mac.update(secret);
        Some(Keys {
            key: mac.finalize().into_bytes().into(),
        })
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// A new session cookie value for `user`, valid until `now + SESSION_TTL`.
    pub fn issue(&self, user: &str, now: i64) -> Result<(String, Session), AuthError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| AuthError::Hash(e.to_string()))?;
        let session = Session {
            user: user.to_owned(),
            expires: now + SESSION_TTL.as_secs() as i64,
            nonce: to_hex(&nonce),
        };
        let user_hex = to_hex(user.as_bytes());
        let expires = session.expires.to_string();
        let tag = self
            .mac(&["session", &user_hex, &expires, &session.nonce])
            .finalize()
            .into_bytes();
        Ok((
            format!("{user_hex}.{expires}.{}.{}", session.nonce, to_hex(&tag)),
            session,
        ))
    }

    /// The session a cookie value holds, if its signature is right and it has not expired.
    pub fn verify(&self, cookie: &str, now: i64) -> Option<Session> {
        let mut it = cookie.split('.');
        let (user_hex, expires, nonce, tag) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || user_hex.len() > 256 || nonce.len() != 32 {
            return None;
        }
        self.mac(&["session", user_hex, expires, nonce])
            .verify_slice(&from_hex(tag)?)
            .ok()?;
        let expires: i64 = expires.parse().ok()?;
        if expires <= now {
            return None;
        }
        Some(Session {
            user: String::from_utf8(from_hex(user_hex)?).ok()?,
            expires,
            nonce: nonce.to_owned(),
        })
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, session: &Session) -> String {
        to_hex(
            &self
                .mac(&["csrf", &session.nonce, &session.user])
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `token` is the session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, session: &Session, token: &str) -> bool {
        from_hex(token).is_some_and(|t| {
            self.mac(&["csrf", &session.nonce, &session.user])
                .verify_slice(&t)
                .is_ok()
        })
    }
}

/// Failed logins per address and per user name.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Whether `keys` (address, user) may try now; `Err(seconds to wait)` otherwise.
    pub fn allowed(&self, keys: &[&str]) -> Result<(), u64> {
        let now = Instant::now();
        let map = watchpost_lock(&self.failures);
        for k in keys {
            if let Some((n, since)) = map.get(*k)
                && *n >= LOGIN_FAILURES
                && now.duration_since(*since) < LOGIN_WINDOW
            {
                return Err((LOGIN_WINDOW - now.duration_since(*since)).as_secs() + 1);
            }
        }
        Ok(())
    }

    /// Counts a failure for each key.
    pub fn failed(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut map = watchpost_lock(&self.failures);
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| now.duration_since(*since) < LOGIN_WINDOW);
        }
        for k in keys {
            let e = map.entry((*k).to_owned()).or_insert((0, now));
            if now.duration_since(e.1) >= LOGIN_WINDOW {
                *e = (0, now);
            }
            e.0 += 1;
        }
    }

    /// Forgets the failures of a user who logged in.
    pub fn succeeded(&self, keys: &[&str]) {
        let mut map = watchpost_lock(&self.failures);
        for k in keys {
            map.remove(*k);
        }
    }
}

fn watchpost_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The local console's user file (TOML): `[[user]]` tables with `name`, `role`
/// (`viewer`, `analyst`, `admin`), `password` (an argon2id PHC string, written by
/// `watchpost console-user add|passwd`) and `disabled`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// The users.
    #[serde(default)]
    pub user: Vec<FileUser>,
}

/// One user of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    /// Name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Role.
    pub role: String,
    /// argon2id PHC string.
    pub password: String,
    /// Disabled users cannot log in.
    #[serde(default)]
    pub disabled: bool,
}

/// Largest user file read.
const MAX_USER_FILE: u64 = 1 << 20;

/// Why the user file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UserFileError {
    /// Reading or writing it.
    #[error("console user file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Its content.
    #[error("console user file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl UserFile {
    /// Reads the file (missing: no users).
    pub fn read(path: &Path) -> Result<UserFile, UserFileError> {
        use std::io::Read;
        let io = |source| UserFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut text = String::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                f.take(MAX_USER_FILE + 1)
                    .read_to_string(&mut text)
                    .map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UserFile::default()),
            Err(e) => return Err(io(e)),
        }
        if text.len() as u64 > MAX_USER_FILE {
            return Err(UserFileError::Invalid {
                path: path.display().to_string(),
                message: format!("larger than {MAX_USER_FILE} bytes"),
            });
        }
        let file: UserFile = toml::from_str(&text).map_err(|e| UserFileError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        for u in &file.user {
            if Role::parse(&u.role).is_none() {
                return Err(UserFileError::Invalid {
                    path: path.display().to_string(),
                    message: format!(
                        "user `{}`: role `{}` (use viewer, analyst or admin)",
                        u.name, u.role
                    ),
                });
            }
        }
        Ok(file)
    }

    /// A user of the file.
    pub fn find(&self, name: &str) -> Option<UserRecord> {
        self.user
            .iter()
            .find(|u| u.name == name)
            .map(|u| UserRecord {
                name: u.name.clone(),
                role: Role::parse(&u.role).unwrap_or(Role::Viewer),
                password_hash: (!u.password.is_empty()).then(|| u.password.clone()),
                disabled: u.disabled,
            })
    }

    /// Adds a user or changes an existing one's role/password; `disabled` sets the flag.
    pub fn set(&mut self, user: FileUser) {
        match self.user.iter_mut().find(|u| u.name == user.name) {
            Some(u) => *u = user,
            None => self.user.push(user),
        }
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# watchpost console users (written by `watchpost console-user`). Passwords are\n\
             # argon2id hashes; roles: viewer, analyst, admin.\n\n",
        );
        out.push_str(&toml::to_string(self).unwrap_or_default());
        out
    }
}

/// Checks a user name: 1-64 letters, digits, `-`, `_` or `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A random token for a form that must act once (32 hex digits; empty when the system
/// has no randomness to give, and the form then acts as often as it is sent).
pub fn request_nonce() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        return String::new();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A password given on one line of standard input, without its line end (the CLIs that
/// set console passwords read them there, never from an argument: they stay out of the
/// process list and the shell's history); `None` when the line is empty.
pub fn password_from_stdin() -> std::io::Result<Option<String>> {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']);
    Ok((!p.is_empty()).then(|| p.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_expire() {
        let k = Keys::random().unwrap();
        let (cookie, s) = k.issue("alice", 1000).unwrap();
        assert_eq!(k.verify(&cookie, 1001), Some(s.clone()));
        assert_eq!(k.verify(&cookie, s.expires), None, "expired");
        let forged = cookie.replacen(&to_hex(b"alice"), &to_hex(b"admin"), 1);
        assert_eq!(k.verify(&forged, 1001), None);
        assert_eq!(Keys::random().unwrap().verify(&cookie, 1001), None);
        assert_eq!(k.verify("garbage", 1001), None);
        let t = k.csrf(&s);
        assert!(k.csrf_ok(&s, &t));
        assert!(!k.csrf_ok(&s, "00"));
        let (_, other) = k.issue("alice", 1000).unwrap();
        assert!(!k.csrf_ok(&other, &t), "a token belongs to one session");
        assert!(Keys::from_secret(b"short").is_none());
    }

    #[test]
    fn passwords_and_limits() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches("correct horse battery", &h));
        assert!(!password_matches("correct horse batterx", &h));
        assert!(matches!(hash_password("short"), Err(AuthError::TooShort)));
        let l = LoginLimiter::default();
        for _ in 0..5 {
            assert!(l.allowed(&["ip", "u"]).is_ok());
            l.failed(&["ip", "u"]);
        }
        assert!(l.allowed(&["ip2", "u"]).is_err(), "per user too");
        l.succeeded(&["ip", "u"]);
        assert!(l.allowed(&["ip", "u"]).is_ok());
    }

    #[test]
    fn user_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.toml");
        assert!(UserFile::read(&p).unwrap().user.is_empty());
        let mut f = UserFile::default();
        f.set(FileUser {
            name: "ann".into(),
            role: "analyst".into(),
            password: "$argon2id$x".into(),
            disabled: false,
        });
        std::fs::write(&p, f.to_text()).unwrap();
        let back = UserFile::read(&p).unwrap();
        assert_eq!(back.find("ann").unwrap().role, Role::Analyst);
        std::fs::write(&p, "[[user]]\nname='x'\nrole='root'\npassword=''\n").unwrap();
        assert!(UserFile::read(&p).unwrap_err().to_string().contains("root"));
    }
}
