//! The watchpost web console: review what watchpost saw — the overview with its charts,
//! event search with the `watchpost events` query language, each event's fields, reason,
//! baseline explanation, actions and acknowledgement, acknowledging one or many events,
//! the audit log, hosts and baselines — in the browser.
//!
//! One code base, two homes: the agent serves it over its own SQLite store (`local.rs`,
//! `serve.rs`, feature `local`), the fleet server over PostgreSQL (`watchpost-server`
//! implements [`Backend`] and calls [`Console::handle`] on a blocking thread).
//!
//! | module | what it owns |
//! |---|---|
//! | `http.rs` | [`Request`]/[`Response`] independent of any server, forms, security headers (CSP) |
//! | `auth.rs` | argon2id passwords, signed session cookies, CSRF tokens, the login limiter, the local user file |
//! | `backend.rs` | the [`Backend`] trait the stores implement and the values pages are built from |
//! | `pages.rs` | the maud templates (every value escaped), the style sheet |
//! | `chart.rs` | SVG charts drawn on the server |
//! | `local.rs` | the agent's backend: SQLite store, baselines, the running daemon's state |
//! | `serve.rs` | the agent's small blocking HTTP/1.1 server |
//! | `diff.rs` | the line difference between two configuration versions |
//! | `browser.rs` | for the tests of both homes: the review flow in headless Chromium (`tests/browser/console_flow.py`), and the fleet's groups, configuration and commands flow (`tests/browser/fleet_admin_flow.py`) |
//!
//! Routes (all under `/console/`): `login`, `logout`, the overview, `events`,
//! `events/{id}`, `ack` (POST), `audit`, `hosts`, `hosts/{id}`, `hosts/{id}/command`
//! (POST: any command on the fleet, the quarantine release on the agent), `groups`, `groups/{name}`, `groups/{name}/versions/{n}`,
//! `groups/{name}/versions/{n}/files/{path}` (one rule or placeholder file),
//! `groups/{name}/diff?from=&to=`, `groups/{name}/publish`, `…/files` (a file saved,
//! added or removed) and `…/rollback` (POST, fleet),
//! `baselines`, `baselines/export`, `static/console.css`.
//!
//! Roles: a viewer reads; an analyst also acknowledges events, releases a quarantine and
//! (on the fleet) sends commands to hosts; an admin also publishes and rolls back group
//! configuration. A refused attempt is answered 403 and audited (`console.denied`).

pub mod auth;
pub mod backend;
pub mod browser;
pub mod chart;
pub mod diff;
pub mod http;
pub mod pages;

#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "local")]
pub mod serve;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use watchpost_query::{Query, parse_since, parse_terms};

pub use backend::{Backend, BackendError, Home, Role};
pub use http::{Request, Response};

use auth::{Keys, LoginLimiter, Session};
use backend::{Draft, Page, PublishOutcome, UserRecord};
use pages::{Editor, FileEditor, SearchForm, Viewer};
use watchpost_fleet_protocol::{MAX_CONFIG_BYTES, MAX_FILES_BYTES};

/// Events per page.
pub const PAGE: usize = 50;
/// Hosts per page.
pub const HOSTS_PAGE: usize = 100;
/// Most events one acknowledgement takes.
pub const MAX_ACK: usize = 500;
/// Longest query text.
const MAX_QUERY: usize = 2000;
/// Longest comment.
const MAX_COMMENT: usize = 1000;

/// A console over one backend.
pub struct Console {
    backend: Arc<dyn Backend>,
    keys: Keys,
    limiter: LoginLimiter,
    secure: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("home", &self.backend.home())
            .field("secure", &self.secure)
            .finish()
    }
}

/// The user a request comes from.
struct Who {
    session: Session,
    user: UserRecord,
    csrf: String,
}

impl Console {
    /// A console over `backend`; `secure`: served over TLS (cookies get `Secure`).
    pub fn new(backend: Arc<dyn Backend>, keys: Keys, secure: bool) -> Console {
        Console {
            backend,
            keys,
            limiter: LoginLimiter::default(),
            secure,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn now() -> i64 {
        Timestamp::now().as_second()
    }

    fn session_cookie(&self, value: &str, max_age: i64) -> String {
        format!(
            "{}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            auth::COOKIE,
            if self.secure { "; Secure" } else { "" }
        )
    }

    fn who(&self, req: &Request) -> Result<Option<Who>, BackendError> {
        let Some(session) = req
            .cookie(auth::COOKIE)
            .and_then(|c| self.keys.verify(c, Self::now()))
        else {
            return Ok(None);
        };
        let Some(user) = self.backend.user(&session.user)? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        let csrf = self.keys.csrf(&session);
        Ok(Some(Who {
            session,
            user,
            csrf,
        }))
    }

    fn viewer<'a>(&self, w: &'a Who) -> Viewer<'a> {
        Viewer {
            user: &w.user.name,
            role: w.user.role,
            csrf: &w.csrf,
            home: self.backend.home(),
        }
    }

    /// Answers one request. Never panics on input; a store failure is a 503 page (the
    /// error is logged, not shown).
    pub fn handle(&self, req: &Request) -> Response {
        match self.route(req) {
            Ok(r) => r,
            Err(BackendError::Store(e)) => {
                tracing::warn!(error = %e, path = %req.path, "console: the store failed");
                Response::html(
                    503,
                    pages::error(
                        None,
                        "Store unavailable",
                        "The event store could not answer; try again in a moment.",
                    ),
                )
            }
            Err(e) => Response::html(400, pages::error(None, "Bad request", &e.to_string())),
        }
    }

    /// The largest body `req` may have, decided from its head before the body is read: a
    /// publication (`groups/NAME/publish`, `groups/NAME/files`) from a signed session may
    /// carry a whole group version ([`http::MAX_PUBLISH_BODY`]); anything else, and any
    /// request without a valid session cookie, at most [`http::MAX_BODY`].
    pub fn body_limit(&self, req: &Request) -> usize {
        let signed = || {
            req.cookie(auth::COOKIE)
                .and_then(|c| self.keys.verify(c, Self::now()))
                .is_some()
        };
        if req.method == "POST" && is_publication(&req.path) && signed() {
            http::MAX_PUBLISH_BODY
        } else {
            http::MAX_BODY
        }
    }

    /// The answer to a request whose body is over its [`Console::body_limit`]: 413 with
    /// the limit and, for a publication, what a version may hold.
    pub fn too_large(&self, req: &Request) -> Response {
        let limit = self.body_limit(req);
        let message = if limit == http::MAX_PUBLISH_BODY {
            format!(
                "The publication is larger than the console takes: at most {} as the browser sends it. \
                 A group version holds at most {} of group.toml and {} of files together, as `watchpost-server config publish` and the agents take.",
                bytes(limit),
                bytes(MAX_CONFIG_BYTES),
                bytes(MAX_FILES_BYTES)
            )
        } else if is_publication(&req.path) {
            format!(
                "The request is larger than {} and comes without a valid session: log in again to publish.",
                bytes(limit)
            )
        } else {
            format!(
                "The request is larger than the console takes ({}).",
                bytes(limit)
            )
        };
        Response::html(413, pages::error(None, "Too large", &message))
    }

    fn route(&self, req: &Request) -> Result<Response, BackendError> {
        let path = req.path.as_str();
        if path == "/" || path == "/console" {
            return Ok(Response::redirect("/console/"));
        }
        let Some(rest) = path.strip_prefix("/console/") else {
            return Ok(not_found(None, "No such page."));
        };
        let method = req.method.as_str();
        match (method, rest) {
            ("GET", "static/console.css") => {
                return Ok(Response::new(
                    200,
                    "text/css; charset=utf-8",
                    pages::CSS.as_bytes().to_vec(),
                )
                .with("Cache-Control", "max-age=3600".into()));
            }
            ("GET", "login") => {
                let next = safe_next(req.params().get("next"));
                return Ok(Response::html(200, pages::login(None, &next)));
            }
            ("POST", "login") => return self.login(req),
            _ => {}
        }
        if !matches!(method, "GET" | "HEAD" | "POST") {
            return Ok(Response::html(
                405,
                pages::error(
                    None,
                    "Method not allowed",
                    "The console takes GET and POST.",
                ),
            )
            .with("Allow", "GET, POST".into()));
        }
        let Some(who) = self.who(req)? else {
            if method == "POST" {
                return Ok(Response::html(
                    403,
                    pages::error(
                        None,
                        "Not logged in",
                        "Your session has ended; log in again.",
                    ),
                ));
            }
            let next = if req.query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", req.query)
            };
            return Ok(Response::redirect(&format!(
                "/console/login?next={}",
                http::encode(&next)
            )));
        };
        if method == "POST"
            && let Some(r) = self.refuse_forgery(req, &who)?
        {
            return Ok(r);
        }
        let v = self.viewer(&who);
        match (method, rest) {
            ("GET" | "HEAD", "") => self.overview(req, &v),
            ("GET" | "HEAD", "events") => self.events(req, &v),
            ("GET" | "HEAD", r) if r.starts_with("events/") => {
                self.event(&v, &r["events/".len()..], req)
            }
            ("POST", "ack") => self.ack(req, &who, &v),
            ("POST", "logout") => {
                Ok(Response::redirect("/console/login")
                    .with("Set-Cookie", self.session_cookie("", 0)))
            }
            ("GET" | "HEAD", "audit") => {
                let before = req.params().get("before").and_then(|b| b.parse().ok());
                let mut rows = self.backend.audit_log(before, PAGE + 1)?;
                let more = rows.len() > PAGE;
                rows.truncate(PAGE);
                Ok(Response::html(200, pages::audit(&v, &rows, more)))
            }
            ("GET" | "HEAD", "hosts") => {
                if self.backend.home() == Home::Local {
                    return Ok(Response::redirect("/console/hosts/local"));
                }
                let p = req.params();
                let query = backend::HostQuery {
                    name: p.get("name").unwrap_or("").chars().take(200).collect(),
                    group: p.get("group").unwrap_or("").chars().take(200).collect(),
                    attention: p.get("attention") == Some("1"),
                    after: p.get("after").map(str::to_owned),
                    limit: HOSTS_PAGE,
                };
                let page = match self.backend.hosts(&query) {
                    Ok(page) => page,
                    Err(BackendError::Invalid(m)) => return Ok(bad_request(&v, &m)),
                    Err(e) => return Err(e),
                };
                let groups: Vec<String> =
                    self.backend.groups()?.into_iter().map(|g| g.name).collect();
                Ok(Response::html(
                    200,
                    pages::hosts(&v, &query, &page, &groups),
                ))
            }
            ("GET" | "HEAD", r) if r.starts_with("hosts/") => {
                let id = http::decode(&r["hosts/".len()..]);
                let p = req.params();
                let notice = match (
                    p.get("sent").and_then(|s| s.parse::<i64>().ok()),
                    p.get("released"),
                ) {
                    (Some(n), _) => Some(format!(
                        "Command {n} sent; the host receives it on its next poll."
                    )),
                    (None, Some("1")) => Some("The quarantine was released.".to_owned()),
                    (None, Some("0")) => {
                        Some("No quarantine was in force: nothing to release.".to_owned())
                    }
                    _ => None,
                };
                match self.backend.host(&id)? {
                    Some(h) => Ok(Response::html(200, pages::host(&v, &h, notice.as_deref()))),
                    None => Ok(not_found(Some(&v), &format!("There is no host `{id}`."))),
                }
            }
            ("POST", r)
                if let Some(id) = r
                    .strip_prefix("hosts/")
                    .and_then(|r| r.strip_suffix("/command")) =>
            {
                self.command(req, &who, &v, &http::decode(id))
            }
            ("GET" | "HEAD", "groups") => {
                if self.backend.home() == Home::Local {
                    return Ok(no_groups(&v));
                }
                let rows = self.backend.groups()?;
                Ok(Response::html(200, pages::groups(&v, &rows)))
            }
            ("GET" | "HEAD", r) if r.starts_with("groups/") => {
                self.group_get(req, &v, &r["groups/".len()..])
            }
            ("POST", r) if r.starts_with("groups/") => {
                self.group_post(req, &who, &v, &r["groups/".len()..])
            }
            ("GET" | "HEAD", "baselines") => self.baselines(req, &v),
            ("GET" | "HEAD", "baselines/export") => match self.backend.export_baselines()? {
                Some(body) => Ok(Response::new(200, "application/x-ndjson", body).with(
                    "Content-Disposition",
                    "attachment; filename=\"baselines.jsonl\"".into(),
                )),
                None => Ok(not_found(
                    Some(&v),
                    "The baselines live on each host: export them from its own console or with `watchpost baseline export`.",
                )),
            },
            _ => Ok(not_found(Some(&v), "No such page.")),
        }
    }

    /// A state change must carry the session's CSRF token (and, when the browser says
    /// where the form came from, come from this origin). Refusals are logged and audited.
    fn refuse_forgery(&self, req: &Request, who: &Who) -> Result<Option<Response>, BackendError> {
        let form = req.form();
        let token_ok = form
            .get("csrf")
            .is_some_and(|t| self.keys.csrf_ok(&who.session, t));
        if token_ok && same_origin(req) {
            return Ok(None);
        }
        tracing::warn!(user = %who.user.name, path = %req.path, peer = %req.peer, "console: a state change without a valid CSRF token was refused");
        self.backend.audit(
            &who.user.name,
            "console.csrf_refused",
            &req.path,
            serde_json::json!({ "peer": req.peer }),
        )?;
        Ok(Some(Response::html(
            403,
            pages::error(
                Some(&self.viewer(who)),
                "Refused",
                "This change did not come with this session's form token (CSRF). Reload the page and try again.",
            ),
        )))
    }

    fn login(&self, req: &Request) -> Result<Response, BackendError> {
        // Login CSRF: another site's form must not sign the browser in to an account of
        // the attacker's (the session has no token yet; browsers send `Origin` on a
        // cross-site POST).
        if !same_origin(req) {
            tracing::warn!(peer = %req.peer, origin = ?req.origin, "console: a login posted from another site was refused");
            self.backend.audit(
                "?",
                "console.login_cross_site",
                "",
                serde_json::json!({ "peer": req.peer, "origin": req.origin }),
            )?;
            return Ok(Response::html(
                403,
                pages::error(
                    None,
                    "Refused",
                    "This login came from a form on another site. Open the console's own login page and log in there.",
                ),
            ));
        }
        let form = req.form();
        let user = form.get("user").unwrap_or("").trim();
        let password = form.get("password").unwrap_or("");
        let next = safe_next(form.get("next"));
        let ip_key = format!("ip:{}", req.peer);
        let user_key = format!("user:{user}");
        let keys = [ip_key.as_str(), user_key.as_str()];
        if let Err(wait) = self.limiter.allowed(&keys) {
            tracing::warn!(peer = %req.peer, user = %user, "console: login rate-limited");
            return Ok(Response::html(
                429,
                pages::login(
                    Some(&format!(
                        "Too many failed logins; try again in {wait} seconds."
                    )),
                    &next,
                ),
            )
            .with("Retry-After", wait.to_string()));
        }
        let record = if auth::valid_name(user) && password.len() <= 1024 {
            self.backend.user(user)?
        } else {
            None
        };
        let ok = record.as_ref().is_some_and(|u| {
            !u.disabled
                && u.password_hash
                    .as_deref()
                    .is_some_and(|h| auth::password_matches(password, h))
        });
        if !ok {
            self.limiter.failed(&keys);
            tracing::warn!(peer = %req.peer, user = %user, "console: login failed");
            self.backend.audit(
                if auth::valid_name(user) { user } else { "?" },
                "console.login_failed",
                "",
                serde_json::json!({ "peer": req.peer }),
            )?;
            return Ok(Response::html(
                403,
                pages::login(Some("Wrong user name or password."), &next),
            ));
        }
        self.limiter.succeeded(&keys);
        let (cookie, _) = self
            .keys
            .issue(user, Self::now())
            .map_err(|e| BackendError::Store(e.to_string()))?;
        self.backend.audit(
            user,
            "console.login",
            "",
            serde_json::json!({ "peer": req.peer }),
        )?;
        Ok(Response::redirect(&next).with(
            "Set-Cookie",
            self.session_cookie(&cookie, auth::SESSION_TTL.as_secs() as i64),
        ))
    }

    fn overview(&self, req: &Request, v: &Viewer) -> Result<Response, BackendError> {
        let hours = req
            .params()
            .get("hours")
            .and_then(|h| h.parse::<u32>().ok())
            .unwrap_or(24)
            .clamp(1, 24 * 90);
        let o = self.backend.overview(Timestamp::now(), hours)?;
        Ok(Response::html(200, pages::overview(v, &o, hours)))
    }

    fn events(&self, req: &Request, v: &Viewer) -> Result<Response, BackendError> {
        let p = req.params();
        let q = p.get("q").unwrap_or("");
        let since = p.get("since").unwrap_or("").trim();
        let until = p.get("until").unwrap_or("").trim();
        let oldest_first = p.get("order") == Some("asc");
        let form = SearchForm {
            q,
            since,
            until,
            oldest_first,
        };
        let notice = p.get("done").map(|n| format!("{n} event(s) acknowledged."));
        let bad = |msg: String| {
            Ok(Response::html(
                400,
                pages::events(v, &form, &[], Some(&msg), false, true, None),
            ))
        };
        if q.len() > MAX_QUERY {
            return bad(format!("The query is longer than {MAX_QUERY} characters."));
        }
        let page_id = |name: &str| -> Result<Option<i64>, String> {
            match p.get(name) {
                None | Some("") => Ok(None),
                Some(s) => s
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| format!("`{name}` must be an event id, not `{s}`.")),
            }
        };
        let (before, after) = match (page_id("before"), page_id("after")) {
            (Ok(b), Ok(a)) => (b, a),
            (Err(e), _) | (_, Err(e)) => return bad(e),
        };
        let now = Timestamp::now();
        let time = |s: &str| -> Result<Option<Timestamp>, String> {
            if s.is_empty() {
                return Ok(None);
            }
            parse_since(s, now).map(Some).map_err(|e| e.message.clone())
        };
        let (since_t, until_t) = match (time(since), time(until)) {
            (Ok(s), Ok(u)) => (s, u),
            (Err(e), _) | (_, Err(e)) => return bad(e),
        };
        let terms = match parse_terms(q) {
            Ok(t) => t,
            Err(e) => return bad(e.to_string()),
        };
        let query = Query {
            terms,
            since: since_t,
            until: until_t,
            ..Query::default()
        };
        if let Err(e) = query.conditions() {
            return bad(e.to_string());
        }
        let page = Page {
            before,
            after,
            oldest_first,
            limit: PAGE + 1,
        };
        let mut found = match self.backend.search(&query, &page) {
            Ok(f) => f,
            Err(BackendError::Query(e)) => return bad(e.to_string()),
            Err(BackendError::Invalid(e)) => return bad(e),
            Err(e) => return Err(e),
        };
        let more = found.len() > PAGE;
        found.truncate(PAGE);
        let first = before.is_none() && after.is_none();
        Ok(Response::html(
            200,
            pages::events(v, &form, &found, None, more, first, notice.as_deref()),
        ))
    }

    fn event(&self, v: &Viewer, id: &str, req: &Request) -> Result<Response, BackendError> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(Response::html(
                400,
                pages::error(
                    Some(v),
                    "Bad request",
                    &format!("`{id}` is not an event id."),
                ),
            ));
        };
        match self.backend.event(id)? {
            Some(e) => {
                let notice = req.params().get("done").map(|_| "Acknowledged.".to_owned());
                Ok(Response::html(200, pages::event(v, &e, notice.as_deref())))
            }
            None => Ok(not_found(Some(v), &format!("There is no event {id}."))),
        }
    }

    fn ack(&self, req: &Request, who: &Who, v: &Viewer) -> Result<Response, BackendError> {
        let form = req.form();
        if who.user.role < Role::Analyst {
            tracing::warn!(user = %who.user.name, "console: a viewer tried to acknowledge");
            self.backend.audit(
                &who.user.name,
                "console.denied",
                "ack",
                serde_json::json!({ "role": who.user.role.as_str(), "ids": form.all("id").collect::<Vec<_>>() }),
            )?;
            return Ok(Response::html(
                403,
                pages::error(
                    Some(v),
                    "Not allowed",
                    &format!(
                        "Your role ({}) cannot acknowledge events; an analyst or admin can.",
                        who.user.role.as_str()
                    ),
                ),
            ));
        }
        let mut ids = Vec::new();
        for s in form.all("id") {
            match s.parse::<i64>() {
                Ok(id) => ids.push(id),
                Err(_) => {
                    return Ok(Response::html(
                        400,
                        pages::error(
                            Some(v),
                            "Bad request",
                            &format!("`{s}` is not an event id."),
                        ),
                    ));
                }
            }
        }
        let comment = form.get("comment").unwrap_or("").trim();
        let problem = if ids.is_empty() {
            Some("Select at least one event to acknowledge.".to_owned())
        } else if ids.len() > MAX_ACK {
            Some(format!(
                "At most {MAX_ACK} events can be acknowledged at once."
            ))
        } else if comment.is_empty() {
            Some("An acknowledgement needs a comment (why it is fine).".to_owned())
        } else if comment.chars().count() > MAX_COMMENT {
            Some(format!(
                "The comment is longer than {MAX_COMMENT} characters."
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Ok(Response::html(
                400,
                pages::error(Some(v), "Bad request", &p),
            ));
        }
        let done = self.backend.ack(&ids, &who.user.name, comment)?;
        for id in &done {
            self.backend.audit(
                &who.user.name,
                "event.ack",
                &format!("event {id}"),
                serde_json::json!({ "comment": comment }),
            )?;
        }
        let back = safe_next(form.get("back"));
        let sep = if back.contains('?') { '&' } else { '?' };
        Ok(Response::redirect(&format!(
            "{back}{sep}done={}",
            done.len()
        )))
    }

    /// Refuses a change the user's role does not allow: 403, logged and audited.
    fn deny(
        &self,
        who: &Who,
        v: &Viewer,
        what: &str,
        target: &str,
        who_can: &str,
    ) -> Result<Response, BackendError> {
        tracing::warn!(user = %who.user.name, %target, "console: a change the role does not allow was refused");
        self.backend.audit(
            &who.user.name,
            "console.denied",
            target,
            serde_json::json!({ "role": who.user.role.as_str(), "attempt": what }),
        )?;
        Ok(Response::html(
            403,
            pages::error(
                Some(v),
                "Not allowed",
                &format!(
                    "Your role ({}) cannot {what}; {who_can} can.",
                    who.user.role.as_str()
                ),
            ),
        ))
    }

    /// A command to one host from its page (analyst); on the agent, only the release of
    /// its own quarantine.
    fn command(
        &self,
        req: &Request,
        who: &Who,
        v: &Viewer,
        id: &str,
    ) -> Result<Response, BackendError> {
        if self.backend.home() == Home::Local
            && (id != "local" || req.form().get("kind") != Some("quarantine_release"))
        {
            return Ok(not_found(
                Some(v),
                "The agent's console releases its own quarantine; other commands are sent to hosts from the fleet server's console.",
            ));
        }
        self.send_to(req, who, v, backend::CommandTo::Host(id))
    }

    /// `groups/{name}/command`: a command to every host of the group (analyst).
    fn group_command(
        &self,
        req: &Request,
        who: &Who,
        v: &Viewer,
        name: &str,
    ) -> Result<Response, BackendError> {
        self.send_to(req, who, v, backend::CommandTo::Group(name))
    }

    /// A command form sent: the role checked, the command read from the form and sent
    /// (the agent's own quarantine released at once), then back to the page it came from.
    fn send_to(
        &self,
        req: &Request,
        who: &Who,
        v: &Viewer,
        to: backend::CommandTo<'_>,
    ) -> Result<Response, BackendError> {
        let (target, page, missing) = match to {
            backend::CommandTo::Host(id) => (
                format!("command to host {id}"),
                format!("/console/hosts/{}", http::encode(id)),
                format!("There is no host `{id}`."),
            ),
            backend::CommandTo::Group(g) => (
                format!("command to group {g}"),
                format!("/console/groups/{}", http::encode(g)),
                format!("There is no group `{g}`."),
            ),
        };
        if who.user.role < Role::Analyst {
            return self.deny(
                who,
                v,
                "send commands to hosts",
                &target,
                "an analyst or admin",
            );
        }
        let form = req.form();
        let kind = match backend::command_from_form(
            form.get("kind").unwrap_or(""),
            form.get("reason").unwrap_or(""),
            form.get("action").unwrap_or(""),
            form.get("fields").unwrap_or(""),
        ) {
            Ok(k) => k,
            Err(m) => return Ok(bad_request(v, &m)),
        };
        if self.backend.home() == Home::Local {
            let backend::CommandKind::QuarantineRelease { reason } = &kind else {
                return Ok(bad_request(v, "Only a quarantine release is done here."));
            };
            return match self
                .backend
                .release_local_quarantine(&who.user.name, reason)
            {
                Ok(released) => {
                    self.backend.audit(
                        &who.user.name,
                        "quarantine.release",
                        "local",
                        serde_json::json!({ "reason": reason, "released": released }),
                    )?;
                    Ok(Response::redirect(&format!(
                        "{page}?released={}",
                        u8::from(released)
                    )))
                }
                Err(BackendError::Invalid(m)) => Ok(bad_request(v, &m)),
                Err(e) => Err(e),
            };
        }
        match self
            .backend
            .send_command(&who.user.name, to, &kind, form.get("request"))
        {
            Ok(Some((id, hosts))) => Ok(Response::redirect(&match to {
                backend::CommandTo::Host(_) => format!("{page}?sent={id}"),
                backend::CommandTo::Group(_) => format!("{page}?sent={id}&hosts={hosts}"),
            })),
            Ok(None) => Ok(not_found(Some(v), &missing)),
            Err(BackendError::Invalid(m)) => Ok(bad_request(v, &m)),
            Err(e) => Err(e),
        }
    }

    /// `groups/{name}`, `groups/{name}/versions/{n}`, `groups/{name}/diff`.
    fn group_get(&self, req: &Request, v: &Viewer, rest: &str) -> Result<Response, BackendError> {
        if self.backend.home() == Home::Local {
            return Ok(no_groups(v));
        }
        let (name, sub) = match rest.split_once('/') {
            Some((n, s)) => (http::decode(n), s),
            None => (http::decode(rest), ""),
        };
        let Some(g) = self.backend.group(&name)? else {
            return Ok(not_found(Some(v), &format!("There is no group `{name}`.")));
        };
        let p = req.params();
        let version_arg = |s: &str| -> Result<i32, Response> {
            s.parse::<i32>()
                .map_err(|_| bad_request(v, &format!("`{s}` is not a version number.")))
        };
        if sub.is_empty() {
            // Only numbers are echoed: a crafted link cannot put words in the notice.
            let number = |k: &str| p.get(k).and_then(|n| n.parse::<i32>().ok());
            let sent = p.get("sent").and_then(|n| n.parse::<i64>().ok());
            let hosts = p.get("hosts").and_then(|n| n.parse::<i64>().ok());
            let notice = match (number("published"), number("rolledback")) {
                _ if sent.is_some() => sent.map(|n| {
                    format!(
                        "Command {n} sent to the group's {} host(s); each receives it on its next poll (their results are on their host pages).",
                        hosts.unwrap_or(0)
                    )
                }),
                (Some(n), _) => Some(format!(
                    "Version {n} published{}; the group's hosts receive it on their next poll.",
                    match p.get("warnings").and_then(|w| w.parse::<u32>().ok()) {
                        Some(w) if w > 0 => format!(" with {w} check-config warning(s)"),
                        _ => String::new(),
                    }
                )),
                (None, Some(n)) => Some(format!(
                    "Rolled back: version {n} is published again; the group's hosts receive it on their next poll."
                )),
                _ => None,
            };
            let edit = match p.get("edit") {
                Some(e) => match version_arg(e) {
                    Ok(n) => Some(n),
                    Err(r) => return Ok(r),
                },
                None => g.row.published.or(g.versions.first().map(|x| x.version)),
            };
            let current = match edit {
                Some(n) => match self.backend.config_text(&name, Some(n))? {
                    Some(c) => Some(c),
                    None => {
                        return Ok(not_found(
                            Some(v),
                            &format!("Group `{name}` has no version {n}."),
                        ));
                    }
                },
                None => None,
            };
            let none = BTreeMap::new();
            let editor = Editor {
                base: current.as_ref().map(|c| c.version),
                text: current.as_ref().map(|c| c.text.as_str()).unwrap_or(""),
                comment: "",
                files: current.as_ref().map(|c| &c.files).unwrap_or(&none),
                refused: None,
            };
            return Ok(Response::html(
                200,
                pages::group(v, &g, &editor, notice.as_deref()),
            ));
        }
        if let Some((n, file)) = sub
            .strip_prefix("versions/")
            .and_then(|r| r.split_once("/files/"))
        {
            let n = match version_arg(n) {
                Ok(n) => n,
                Err(r) => return Ok(r),
            };
            let file = http::decode(file);
            let Some(c) = self.backend.config_text(&name, Some(n))? else {
                return Ok(not_found(
                    Some(v),
                    &format!("Group `{name}` has no version {n}."),
                ));
            };
            let Some(text) = c.files.get(&file) else {
                return Ok(not_found(
                    Some(v),
                    &format!("Version {n} of group `{name}` has no file `{file}`."),
                ));
            };
            let editor = FileEditor {
                base: n,
                name: &file,
                text,
                comment: "",
                adding: false,
                refused: None,
            };
            let version = g.versions.iter().find(|x| x.version == n);
            return Ok(Response::html(200, pages::file(v, &name, version, &editor)));
        }
        if let Some(n) = sub.strip_prefix("versions/") {
            let n = match version_arg(n) {
                Ok(n) => n,
                Err(r) => return Ok(r),
            };
            let pos = g.versions.iter().position(|x| x.version == n);
            let (Some(pos), Some(text)) = (pos, self.backend.config_text(&name, Some(n))?) else {
                return Ok(not_found(
                    Some(v),
                    &format!("Group `{name}` has no version {n}."),
                ));
            };
            let previous = g.versions.get(pos + 1).map(|x| x.version);
            return Ok(Response::html(
                200,
                pages::version(v, &name, &g.versions[pos], &text, previous),
            ));
        }
        if sub == "diff" {
            let (from, to) = match (p.get("from").map(version_arg), p.get("to").map(version_arg)) {
                (Some(Ok(f)), Some(Ok(t))) => (f, t),
                (Some(Err(r)), _) | (_, Some(Err(r))) => return Ok(r),
                _ => {
                    return Ok(bad_request(
                        v,
                        "Name the two versions to compare (`from` and `to`).",
                    ));
                }
            };
            let texts = (
                self.backend.config_text(&name, Some(from))?,
                self.backend.config_text(&name, Some(to))?,
            );
            let (Some(a), Some(b)) = texts else {
                return Ok(not_found(
                    Some(v),
                    &format!("Group `{name}` has no version {from} or no version {to}."),
                ));
            };
            return Ok(Response::html(200, pages::difference(v, &name, &a, &b)));
        }
        Ok(not_found(Some(v), "No such page."))
    }

    /// `groups/{name}/publish`, `groups/{name}/rollback` (admin).
    fn group_post(
        &self,
        req: &Request,
        who: &Who,
        v: &Viewer,
        rest: &str,
    ) -> Result<Response, BackendError> {
        if self.backend.home() == Home::Local {
            return Ok(no_groups(v));
        }
        let Some((name, op)) = rest.split_once('/') else {
            return Ok(not_found(Some(v), "No such page."));
        };
        let name = http::decode(name);
        let what = match op {
            "publish" | "files" => "publish configuration",
            "rollback" => "roll back configuration",
            "command" => return self.group_command(req, who, v, &name),
            _ => return Ok(not_found(Some(v), "No such page.")),
        };
        if who.user.role < Role::Admin {
            return self.deny(who, v, what, &format!("{op} group {name}"), "an admin");
        }
        let form = req.form();
        let Some(g) = self.backend.group(&name)? else {
            return Ok(not_found(Some(v), &format!("There is no group `{name}`.")));
        };
        let back = format!("/console/groups/{}", http::encode(&name));
        if op == "files" {
            return self.group_files(&form, who, v, &g);
        }
        if op == "rollback" {
            let raw = form.get("version").unwrap_or("");
            let Ok(n) = raw.parse::<i32>() else {
                return Ok(bad_request(v, &format!("`{raw}` is not a version number.")));
            };
            if !g.versions.iter().any(|x| x.version == n) {
                return Ok(not_found(
                    Some(v),
                    &format!("Group `{name}` has no version {n}."),
                ));
            }
            return match self.backend.rollback(&who.user.name, &name, n) {
                Ok(()) => Ok(Response::redirect(&format!("{back}?rolledback={n}"))),
                Err(BackendError::Invalid(m)) => Ok(bad_request(v, &m)),
                Err(e) => Err(e),
            };
        }
        let text = &from_textarea(form.get("config").unwrap_or(""));
        let comment = form.get("comment").unwrap_or("").trim();
        let base = match form.get("base") {
            None | Some("") => None,
            Some(b) => match b.parse::<i32>() {
                Ok(b) => Some(b),
                Err(_) => return Ok(bad_request(v, &format!("`{b}` is not a version number."))),
            },
        };
        if comment.chars().count() > MAX_COMMENT {
            return Ok(bad_request(
                v,
                &format!("The comment is longer than {MAX_COMMENT} characters."),
            ));
        }
        if text.trim().is_empty() {
            return Ok(bad_request(v, "The configuration is empty."));
        }
        let files = match base {
            Some(b) => match self.backend.config_text(&name, Some(b))? {
                Some(c) => c.files,
                None => {
                    return Ok(not_found(
                        Some(v),
                        &format!("Group `{name}` has no version {b}."),
                    ));
                }
            },
            None => BTreeMap::new(),
        };
        if let Some(r) = version_too_large(v, text, &files) {
            return Ok(r);
        }
        let draft = Draft {
            text,
            files: &files,
            comment,
            strict: None,
        };
        match self.backend.publish(&who.user.name, &name, &draft) {
            Ok(PublishOutcome::Published { version, warnings }) => {
                let n = backend::parse_diagnostics(&warnings).len();
                Ok(Response::redirect(&format!(
                    "{back}?published={version}&warnings={n}"
                )))
            }
            Ok(PublishOutcome::Refused(rendered)) => {
                tracing::info!(user = %who.user.name, group = %name, "console: a configuration with errors was not published");
                let diags = backend::parse_diagnostics(&rendered);
                let editor = Editor {
                    base,
                    text,
                    comment,
                    files: &files,
                    refused: Some(&diags),
                };
                Ok(Response::html(422, pages::group(v, &g, &editor, None)))
            }
            Err(BackendError::Invalid(m)) => Ok(bad_request(v, &m)),
            Err(e) => Err(e),
        }
    }

    /// `groups/{name}/files` (admin): one file of version `base` saved (`op=save`), added
    /// (`add`) or removed (`remove`), checked with the rest of the version and, without
    /// errors and with the changed file loading, published as the group's next version.
    fn group_files(
        &self,
        form: &http::Params,
        who: &Who,
        v: &Viewer,
        g: &backend::GroupDetail,
    ) -> Result<Response, BackendError> {
        let group = g.row.name.as_str();
        let op = form.get("op").unwrap_or("");
        let name = form.get("name").unwrap_or("").trim();
        let content = from_textarea(form.get("content").unwrap_or(""));
        let raw_base = form.get("base").unwrap_or("");
        let Ok(base) = raw_base.parse::<i32>() else {
            return Ok(bad_request(
                v,
                &format!(
                    "`{raw_base}` is not a version number (the version the change starts from)."
                ),
            ));
        };
        if let Err(m) = watchpost_fleet_protocol::check_file_name(name) {
            return Ok(bad_request(v, &m));
        }
        let comment = form.get("comment").unwrap_or("").trim();
        if comment.chars().count() > MAX_COMMENT {
            return Ok(bad_request(
                v,
                &format!("The comment is longer than {MAX_COMMENT} characters."),
            ));
        }
        let Some(c) = self.backend.config_text(group, Some(base))? else {
            return Ok(not_found(
                Some(v),
                &format!("Group `{group}` has no version {base}."),
            ));
        };
        let mut files = c.files.clone();
        let exists = files.contains_key(name);
        let (problem, done) = match op {
            "save" if !exists => (Some(format!("Version {base} has no file `{name}`.")), ""),
            "add" if exists => (
                Some(format!(
                    "Version {base} already has a file `{name}`: open it to edit it."
                )),
                "",
            ),
            "save" | "add" if content.trim().is_empty() => (
                Some("The file is empty (remove it instead).".to_owned()),
                "",
            ),
            "save" => (None, "edited"),
            "add" => (None, "added"),
            "remove" if !exists => (Some(format!("Version {base} has no file `{name}`.")), ""),
            "remove" => (None, "removed"),
            other => (Some(format!("`{other}` is not a change to a file.")), ""),
        };
        if let Some(p) = problem {
            return Ok(bad_request(v, &p));
        }
        if op == "remove" {
            files.remove(name);
        } else {
            files.insert(name.to_owned(), content.clone());
        }
        if let Some(r) = version_too_large(v, &c.text, &files) {
            return Ok(r);
        }
        let default_comment = format!("{name} {done}");
        let draft = Draft {
            text: &c.text,
            files: &files,
            comment: if comment.is_empty() {
                &default_comment
            } else {
                comment
            },
            strict: (op != "remove").then_some(name),
        };
        let back = format!("/console/groups/{}", http::encode(group));
        match self.backend.publish(&who.user.name, group, &draft) {
            Ok(PublishOutcome::Published { version, warnings }) => {
                let n = backend::parse_diagnostics(&warnings).len();
                Ok(Response::redirect(&format!(
                    "{back}?published={version}&warnings={n}"
                )))
            }
            Ok(PublishOutcome::Refused(rendered)) => {
                tracing::info!(user = %who.user.name, %group, file = %name, op, "console: a change to a file was not published");
                let diags = backend::parse_diagnostics(&rendered);
                if op == "remove" {
                    // Why the version cannot do without it is in group.toml: shown there.
                    let editor = Editor {
                        base: Some(base),
                        text: &c.text,
                        comment,
                        files: &c.files,
                        refused: Some(&diags),
                    };
                    return Ok(Response::html(422, pages::group(v, g, &editor, None)));
                }
                let editor = FileEditor {
                    base,
                    name,
                    text: &content,
                    comment,
                    adding: op == "add",
                    refused: Some(&diags),
                };
                let version = g.versions.iter().find(|x| x.version == base);
                Ok(Response::html(422, pages::file(v, group, version, &editor)))
            }
            Err(BackendError::Invalid(m)) => Ok(bad_request(v, &m)),
            Err(e) => Err(e),
        }
    }

    fn baselines(&self, req: &Request, v: &Viewer) -> Result<Response, BackendError> {
        let p = req.params();
        let rows = self.backend.baselines()?;
        let filter = p.get("filter").unwrap_or("").trim();
        let host = p.get("host").unwrap_or("").trim();
        let key = p.get("key").unwrap_or("");
        let export = self.backend.home() == Home::Local;
        if filter.is_empty() || host.is_empty() {
            return Ok(Response::html(
                200,
                pages::baselines(v, &rows, (filter, host, key), None, export),
            ));
        }
        let parts: Vec<String> = if key.trim().is_empty() {
            Vec::new()
        } else {
            key.split(',').map(|k| k.trim().to_owned()).collect()
        };
        let (status, answer) = match self.backend.explain(filter, host, &parts) {
            Ok(Some(x)) => (200, Ok(x)),
            Ok(None) => (
                404,
                Err("The baselines live on each host: explain a key on the host's own console or with `watchpost baseline explain`.".to_owned()),
            ),
            Err(BackendError::Invalid(m)) => (400, Err(m)),
            Err(e) => return Err(e),
        };
        Ok(Response::html(
            status,
            pages::baselines(
                v,
                &rows,
                (filter, host, key),
                Some(answer.as_ref().map_err(|m| m.as_str())),
                export,
            ),
        ))
    }
}

/// The agent's console has no groups.
fn no_groups(v: &Viewer) -> Response {
    not_found(
        Some(v),
        "This is one agent's console: groups and their configuration are managed on the fleet server's console.",
    )
}

fn bad_request(v: &Viewer, message: &str) -> Response {
    Response::html(400, pages::error(Some(v), "Bad request", message))
}

/// Whether a POST comes from the console's own pages: its `Origin` (when the browser
/// sends one) names the host the request was sent to.
fn same_origin(req: &Request) -> bool {
    match (&req.origin, &req.host) {
        (Some(o), Some(h)) => o
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h)),
        _ => true,
    }
}

/// Whether a path is one that publishes a group version (its body may be a version).
fn is_publication(path: &str) -> bool {
    path.strip_prefix("/console/groups/")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(_, op)| op == "publish" || op == "files")
}

/// A size for a sentence: `64 KiB`, `17 MiB`, else bytes.
fn bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// A textarea's text as stored: browsers send its lines ending in CR LF, the versions
/// keep LF (an unchanged text then has the digest it had).
fn from_textarea(s: &str) -> String {
    s.replace("\r\n", "\n")
}

/// 413 for a version over what a version may hold.
fn version_too_large(v: &Viewer, text: &str, files: &BTreeMap<String, String>) -> Option<Response> {
    let total: usize = files.values().map(String::len).sum();
    let message = if text.len() > MAX_CONFIG_BYTES {
        format!(
            "group.toml is {} bytes; a version holds at most {} of it.",
            text.len(),
            bytes(MAX_CONFIG_BYTES)
        )
    } else if total > MAX_FILES_BYTES {
        format!(
            "The files are {total} bytes together; a version holds at most {} of files.",
            bytes(MAX_FILES_BYTES)
        )
    } else {
        return None;
    };
    Some(Response::html(
        413,
        pages::error(Some(v), "Too large", &message),
    ))
}

fn not_found(v: Option<&Viewer>, message: &str) -> Response {
    Response::html(404, pages::error(v, "Not found", message))
}

/// Where to go after a login or a form: only a path of this console (no other site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.starts_with("//")
                && !n.contains("\\")
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/console/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(
            safe_next(Some("/console/events?q=x")),
            "/console/events?q=x"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/console/");
        assert_eq!(safe_next(Some("//evil.example/console/")), "/console/");
        assert_eq!(safe_next(Some("/console/\\evil")), "/console/");
        assert_eq!(safe_next(None), "/console/");
    }
}
