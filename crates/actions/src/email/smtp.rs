//! A small SMTP client (RFC 5321) for one message per session: greeting, `EHLO`,
//! `STARTTLS` (RFC 3207) or implicit TLS (RFC 8314), `AUTH PLAIN`/`LOGIN` (RFC 4954),
//! `MAIL FROM`, `RCPT TO`, `DATA`, `QUIT`.
//!
//! Replies are read with limits (a line at most 2 KiB, a reply at most 100 lines). A 4xx
//! reply and every connection problem are transient; a 5xx reply is permanent.

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::control::Control;
use crate::delivery::Failure;
use crate::net::{self, Conn};

/// Longest reply line read.
const MAX_LINE: usize = 2048;
/// Most lines of one reply.
const MAX_LINES: usize = 100;

/// How TLS is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Security {
    /// Plain connection, then `STARTTLS` (required).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption.
    None,
}

/// What a session needs.
pub(crate) struct Session<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) security: Security,
    /// Built by the caller for `starttls`/`tls`.
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub(crate) helo: &'a str,
    /// User name and password.
    pub(crate) auth: Option<(&'a str, String)>,
    pub(crate) allow_plaintext_auth: bool,
    pub(crate) from: &'a str,
    pub(crate) to: &'a [String],
    /// The message before dot-stuffing.
    pub(crate) message: &'a str,
}

/// One reply: code and text lines.
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        let mut t = format!("{}", self.code);
        for l in &self.lines {
            t.push(' ');
            t.push_str(l.trim());
        }
        t
    }
}

impl Session<'_> {
    /// Delivers the message in one session.
    pub(crate) fn send(&self, until: std::time::Instant, ctl: &Control) -> Result<(), Failure> {
        let io_fail =
            |e: io::Error| Failure::Transient(format!("email via {}: {e}", self.server()));
        let mut conn = Conn::connect(self.host, self.port, until, ctl).map_err(io_fail)?;
        if self.security == Security::Tls {
            conn = self.start_tls(conn, ctl)?;
        }
        match self.converse(conn, ctl) {
            Ok(mut conn) => {
                // The message is accepted; QUIT is politeness.
                if conn.write_all(b"QUIT\r\n", ctl).is_ok() {
                    let _ = read_reply(&mut conn, ctl);
                }
                conn.close();
                Ok(())
            }
            Err((conn, e)) => {
                if let Some(mut c) = conn {
                    let _ = c.write_all(b"QUIT\r\n", ctl);
                    c.close();
                }
                Err(e)
            }
        }
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn start_tls(&self, conn: Conn, ctl: &Control) -> Result<Conn, Failure> {
        let Some((config, name)) = &self.tls else {
            return Err(Failure::Permanent("TLS is not set up".into()));
        };
        conn.start_tls(config.clone(), name.clone(), ctl)
            .map_err(|e| Failure::Transient(format!("email via {}: {e}", self.server())))
    }

    /// The conversation up to the accepted message; on failure the connection, if it
    /// can still take a `QUIT`, comes back with the reason.
    fn converse(&self, mut c: Conn, ctl: &Control) -> Result<Conn, (Option<Conn>, Failure)> {
        macro_rules! step {
            ($what:expr, $expect:expr) => {
                match self.expect(&mut c, $what, $expect, ctl) {
                    Ok(r) => r,
                    Err(e) => return Err((Some(c), e)),
                }
            };
        }
        step!(None, 2);
        if let Err(e) = c.write_all(format!("EHLO {}\r\n", self.helo).as_bytes(), ctl) {
            return Err((None, self.io(e)));
        }
        let mut ehlo = step!(Some("EHLO"), 2);
        if self.security == Security::Starttls {
            if !has_extension(&ehlo, "STARTTLS") {
                return Err((
                    Some(c),
                    Failure::Transient(format!(
                        "email via {}: the server does not offer STARTTLS (not sending in clear; \
                         set `tls = \"none\"` only for a server on this machine)",
                        self.server()
                    )),
                ));
            }
            if let Err(e) = self.command(&mut c, "STARTTLS", ctl) {
                return Err((None, e));
            }
            step!(Some("STARTTLS"), 2);
            c = match self.start_tls(c, ctl) {
                Ok(c) => c,
                Err(e) => return Err((None, e)),
            };
            if let Err(e) = c.write_all(format!("EHLO {}\r\n", self.helo).as_bytes(), ctl) {
                return Err((None, self.io(e)));
            }
            ehlo = step!(Some("EHLO"), 2);
        }
        if let Some((user, password)) = &self.auth {
            if self.security == Security::None && !self.allow_plaintext_auth {
                return Err((
                    Some(c),
                    Failure::Permanent("refusing to send the password without TLS".into()),
                ));
            }
            let mechs = extension_args(&ehlo, "AUTH");
            if mechs.iter().any(|m| m == "PLAIN") {
                let token = net::base64(format!("\0{user}\0{password}").as_bytes());
                if let Err(e) = self.command(&mut c, &format!("AUTH PLAIN {token}"), ctl) {
                    return Err((None, e));
                }
                let r = step!(Some("AUTH PLAIN"), 0);
                match r.code {
                    235 => {}
                    // A server that wants the response after an empty challenge.
                    334 => {
                        if let Err(e) = self.command(&mut c, &token, ctl) {
                            return Err((None, e));
                        }
                        step!(Some("AUTH PLAIN"), 2);
                    }
                    _ => return Err((Some(c), self.classify("AUTH PLAIN", &r))),
                }
            } else if mechs.iter().any(|m| m == "LOGIN") {
                if let Err(e) = self.command(&mut c, "AUTH LOGIN", ctl) {
                    return Err((None, e));
                }
                step!(Some("AUTH LOGIN"), 3);
                if let Err(e) = self.command(&mut c, &net::base64(user.as_bytes()), ctl) {
                    return Err((None, e));
                }
                step!(Some("AUTH LOGIN (user name)"), 3);
                if let Err(e) = self.command(&mut c, &net::base64(password.as_bytes()), ctl) {
                    return Err((None, e));
                }
                step!(Some("AUTH LOGIN (password)"), 2);
            } else {
                return Err((
                    Some(c),
                    Failure::Permanent(format!(
                        "email via {}: the server offers no AUTH PLAIN or LOGIN (offers: {})",
                        self.server(),
                        if mechs.is_empty() {
                            "none".to_owned()
                        } else {
                            mechs.join(" ")
                        }
                    )),
                ));
            }
        }
        if let Err(e) = self.command(&mut c, &format!("MAIL FROM:<{}>", self.from), ctl) {
            return Err((None, e));
        }
        step!(Some("MAIL FROM"), 2);
        for to in self.to {
            if let Err(e) = self.command(&mut c, &format!("RCPT TO:<{to}>"), ctl) {
                return Err((None, e));
            }
            step!(Some(&format!("RCPT TO:<{to}>")), 2);
        }
        if let Err(e) = self.command(&mut c, "DATA", ctl) {
            return Err((None, e));
        }
        step!(Some("DATA"), 3);
        let data = super::message::dot_stuffed(self.message);
        if let Err(e) = c.write_all(&data, ctl) {
            return Err((None, self.io(e)));
        }
        step!(Some("the message"), 2);
        Ok(c)
    }

    fn io(&self, e: io::Error) -> Failure {
        Failure::Transient(format!("email via {}: {e}", self.server()))
    }

    /// Sends one command line (its errors never repeat the line: it may hold a secret).
    fn command(&self, c: &mut Conn, line: &str, ctl: &Control) -> Result<(), Failure> {
        c.write_all(format!("{line}\r\n").as_bytes(), ctl)
            .map_err(|e| self.io(e))
    }

    /// Reads a reply; `expect` is the wanted first digit (0: any, the caller decides).
    fn expect(
        &self,
        c: &mut Conn,
        what: Option<&str>,
        expect: u16,
        ctl: &Control,
    ) -> Result<Reply, Failure> {
        let r = read_reply(c, ctl).map_err(|e| self.io(e))?;
        if expect == 0 || r.code / 100 == expect {
            return Ok(r);
        }
        Err(self.classify(what.unwrap_or("the greeting"), &r))
    }

    /// 4xx: transient; 5xx (and anything else unexpected): permanent.
    fn classify(&self, what: &str, r: &Reply) -> Failure {
        let m = format!("email via {}: {what}: {}", self.server(), r.text());
        if r.code / 100 == 4 {
            Failure::Transient(m)
        } else {
            Failure::Permanent(m)
        }
    }
}

fn read_reply(c: &mut Conn, ctl: &Control) -> io::Result<Reply> {
    let mut lines = Vec::new();
    let mut code = 0;
    loop {
        let raw = c.read_line(MAX_LINE, ctl)?;
        let line = String::from_utf8_lossy(&raw);
        let (num, rest) = (line.get(..3).unwrap_or(""), line.get(3..).unwrap_or(""));
        let n = num
            .parse::<u16>()
            .ok()
            .filter(|n| (200..600).contains(n))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "not an SMTP reply: {:?}",
                        line.chars().take(80).collect::<String>()
                    ),
                )
            })?;
        if lines.is_empty() {
            code = n;
        }
        let more = rest.starts_with('-');
        lines.push(rest.get(1..).unwrap_or("").to_owned());
        if !more {
            return Ok(Reply { code, lines });
        }
        if lines.len() >= MAX_LINES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a reply of more than {MAX_LINES} lines"),
            ));
        }
    }
}

/// Whether the EHLO reply lists `name`.
fn has_extension(ehlo: &Reply, name: &str) -> bool {
    ehlo.lines.iter().skip(1).any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
    })
}

/// The arguments of an EHLO keyword (`AUTH PLAIN LOGIN` → `PLAIN`, `LOGIN`), upper case.
fn extension_args(ehlo: &Reply, name: &str) -> Vec<String> {
    ehlo.lines
        .iter()
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.next()
                .filter(|k| k.eq_ignore_ascii_case(name))
                .map(|_| w.map(str::to_ascii_uppercase).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}
