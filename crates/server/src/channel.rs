//! The channel back to agents: `POST /api/v1/poll` (long-poll) and `POST /api/v1/report`.
//!
//! A poll carries what the agent has (the configuration version it last handled, the
//! last central acknowledgement it applied). The server answers at once when something
//! is new for it (its group's published version differs, commands without a result,
//! acknowledgements after its cursor); else it returns the database connection to the
//! pool and waits, up to the agent's `wait_secs`, for a wake-up from the [`Hub`].
//!
//! The hub is fed by one `LISTEN watchpost_fleet` connection per server instance
//! ([`listen`]): whatever server instance (or admin command) commits a change announces
//! it with `pg_notify` in the same transaction (`control.rs`), so agents long-polling on
//! any instance wake within milliseconds, and the server keeps no state of its own but
//! this cache of what PostgreSQL announced. After the listening connection is lost and
//! made again, every waiting poll is woken to look in the database (a notification may
//! have been missed meanwhile).
//!
//! A published version reaching thousands of waiting agents costs one database read per
//! server instance: the listening task reads the version's text when the publication's
//! notification arrives, before it wakes the group's polls, and the hub keeps it
//! (versions never change) with the group's published version, so each woken poll
//! answers from memory. Commands and acknowledgements are read per agent, on its next
//! poll (at once after a publication) or when announced for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_postgres::Client;
use watchpost_fleet_protocol::{
    CentralAck, Command, CommandKind, Delivery, GroupConfig, Poll, Report, ReportAck,
};

use crate::control::CHANNEL;
use crate::heartbeat::Refused;
use crate::ingest::AgentRef;

/// Most acknowledgements in one delivery (more follow on the next poll).
const MAX_ACKS: i64 = 1000;

/// The wake-up of the polls of one agent or group, and how many announcements it had:
/// a poll notes the count before it reads the database and compares it once its
/// wake-up is armed, so an announcement that came in between is not slept through.
#[derive(Debug, Default)]
struct Wake {
    notify: Notify,
    announced: AtomicU64,
}

impl Wake {
    fn announce(&self) {
        self.announced.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// What a poll noted before it read the database (see [`Hub::before_reading`]).
#[derive(Debug)]
pub struct Noted {
    agent: Arc<Wake>,
    agent_announced: u64,
    groups_announced: u64,
}

/// Wake-ups for the polls this instance holds, and what it learnt from notifications.
#[derive(Debug, Default)]
pub struct Hub {
    agents: Mutex<HashMap<i64, Arc<Wake>>>,
    groups: Mutex<HashMap<i64, Arc<Wake>>>,
    /// Announcements for any group (publications, group commands), and wake-alls.
    groups_announced: AtomicU64,
    /// Published version per group, as announced.
    published: Mutex<HashMap<i64, i32>>,
    /// Version texts read (immutable rows).
    versions: Mutex<HashMap<(i64, i32), Arc<GroupConfig>>>,
    /// Polls waiting now.
    pub waiting: AtomicI64,
    /// Notifications received.
    pub notifications: AtomicI64,
    closing: Notify,
    closed: std::sync::atomic::AtomicBool,
}

fn entry(map: &Mutex<HashMap<i64, Arc<Wake>>>, id: i64) -> Arc<Wake> {
    watchpost_support::lock(map).entry(id).or_default().clone()
}

impl Hub {
    /// Handles one notification payload.
    pub fn notified(&self, payload: &str) {
        self.notifications.fetch_add(1, Ordering::Relaxed);
        let mut parts = payload.split(':');
        let kind = parts.next();
        let id = parts.next().and_then(|p| p.parse::<i64>().ok());
        let Some(id) = id else { return };
        match kind {
            Some("c") => {
                if let Some(v) = parts.next().and_then(|p| p.parse::<i32>().ok()) {
                    watchpost_support::lock(&self.published).insert(id, v);
                }
                self.groups_announced.fetch_add(1, Ordering::SeqCst);
                entry(&self.groups, id).announce();
            }
            Some("g") => {
                self.groups_announced.fetch_add(1, Ordering::SeqCst);
                entry(&self.groups, id).announce();
            }
            Some("a") => entry(&self.agents, id).announce(),
            _ => {}
        }
    }

    /// Wakes every waiting poll (after notifications may have been missed), and those
    /// reading the database now.
    pub fn wake_all(&self) {
        watchpost_support::lock(&self.published).clear();
        self.groups_announced.fetch_add(1, Ordering::SeqCst);
        for n in watchpost_support::lock(&self.agents).values() {
            n.announce();
        }
        for n in watchpost_support::lock(&self.groups).values() {
            n.announce();
        }
    }

    /// Notes how many announcements there were for `agent` and for the groups: call it
    /// before reading what is new in the database, and hand it to [`wait`].
    pub fn before_reading(&self, agent: i64) -> Noted {
        let agent = entry(&self.agents, agent);
        Noted {
            agent_announced: agent.announced.load(Ordering::SeqCst),
            agent,
            groups_announced: self.groups_announced.load(Ordering::SeqCst),
        }
    }

    /// Ends every waiting poll (the server stops).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.closing.notify_waiters();
    }

    /// Forgets wake-ups nobody waits on.
    pub fn prune(&self) {
        for map in [&self.agents, &self.groups] {
            watchpost_support::lock(map).retain(|_, n| Arc::strong_count(n) > 1);
        }
    }

    fn published(&self, group: i64) -> Option<i32> {
        watchpost_support::lock(&self.published)
            .get(&group)
            .copied()
    }
}

/// Listens on the NOTIFY channel until `stop`, feeding `hub`; reconnects after a loss
/// (every 2 s), waking every poll when it is back.
pub async fn listen(pg: tokio_postgres::Config, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    loop {
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    tracing::debug!("listening for fleet notifications");
                    hub.wake_all();
                    loop {
                        tokio::select! {
                            m = rx.recv() => match m {
                                Some(p) => {
                                    // A publication: its text is read here, once, before
                                    // the group's polls wake to answer from memory.
                                    if let Some((group, v)) = publication(&p)
                                        && let Err(e) = version(&client, &hub, group, v).await
                                    {
                                        tracing::debug!(error = %e, group, version = v,
                                            "reading a published version ahead of the polls");
                                    }
                                    hub.notified(&p)
                                }
                                None => break,
                            },
                            _ = stop.changed() => {
                                driver.abort();
                                return;
                            }
                        }
                    }
                    tracing::warn!("the fleet notification connection was lost; reconnecting");
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for fleet notifications; trying again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What a poll reads and marks delivered (see [`fetch`]). `$4`: the SHA-256 of the
/// credential the poll carried when the agent was taken from the server's cache of
/// credentials (NULL: checked for this request): the statement checks it and the
/// revocation itself, so a poll costs one statement, and writes nothing for an agent it
/// refuses.
const FETCH: &str = "WITH cur AS (
     SELECT group_id FROM agents
     WHERE id = $1 AND revoked_at IS NULL AND ($4::bytea IS NULL OR credential_hash = $4)),
 -- Only when the cursor moved: a poll takes no row lock on the agent (ingest
 -- holds those while it commits a batch).
 moved AS (
     UPDATE agents SET acks_applied = $2
     WHERE id = $1 AND acks_applied < $2 AND EXISTS (SELECT 1 FROM cur)),
 cmd AS (
     UPDATE command_results r SET delivered_at = now()
     FROM commands c
     WHERE r.agent_id = $1 AND r.finished_at IS NULL AND c.id = r.command_id
       AND (c.expires_at IS NULL OR c.expires_at > now()) AND EXISTS (SELECT 1 FROM cur)
     RETURNING c.id, c.args, c.created_by)
 SELECT cur.group_id, g.published_version,
        (SELECT coalesce(json_agg(json_build_object('id', id, 'args', args, 'by', created_by) ORDER BY id), '[]') FROM cmd),
        (SELECT coalesce(json_agg(json_build_object('id', id, 'event', local_id,
                     'at_ms', (extract(epoch FROM at) * 1000)::bigint, 'by', by_user, 'comment', comment) ORDER BY id), '[]')
           FROM (SELECT * FROM central_acks WHERE agent_id = $1 AND id > $2 ORDER BY id LIMIT $3) x)
 FROM cur JOIN groups g ON g.id = cur.group_id";

/// What a poll found.
#[derive(Debug)]
pub enum Fetched {
    /// The agent's group and what is new for it.
    Found(i64, Delivery),
    /// The credential no longer names a valid agent.
    Refused(Refused),
}

/// What is new for an agent, read from the database. Marks handed-out commands as
/// delivered and records the agent's acknowledgement cursor when it moved (the agent's
/// row is not otherwise written: heartbeats keep `last_seen_at`).
pub async fn fetch(
    db: &deadpool_postgres::ClientWrapper,
    hub: &Hub,
    agent: &AgentRef,
    poll: &Poll,
) -> Result<Fetched, tokio_postgres::Error> {
    // Prepared once per pooled connection: every poll runs it (hundreds a second with
    // thousands of agents), and PostgreSQL's parser and planner showed at the top of its
    // profile under that load when it was sent as text each time.
    let statement = db.prepare_cached(FETCH).await?;
    let Some(row) = db
        .query_opt(
            &statement,
            &[&agent.id, &poll.ack_after, &MAX_ACKS, &agent.credential],
        )
        .await?
    else {
        let why = crate::heartbeat::refusals(&**db, &[agent.id]).await?;
        return Ok(Fetched::Refused(
            why.get(&agent.id).cloned().unwrap_or(Refused::Unauthorized),
        ));
    };
    let group: i64 = row.get(0);
    let published: Option<i32> = row.get(1);
    let mut d = Delivery::default();
    if let Some(v) = published
        && Some(v) != poll.config_version
    {
        d.config = version(db, hub, group, v).await?.map(|c| (*c).clone());
    }
    let commands: Vec<serde_json::Value> = serde_json::from_value(row.get(2)).unwrap_or_default();
    for c in commands {
        let kind: Option<CommandKind> = serde_json::from_value(c["args"].clone()).ok();
        if let Some(kind) = kind {
            d.commands.push(Command {
                id: c["id"].as_i64().unwrap_or(0),
                kind,
                by: c["by"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    d.acks = serde_json::from_value::<Vec<CentralAck>>(row.get(3)).unwrap_or_default();
    Ok(Fetched::Found(group, d))
}

/// The group and version a publication's notification payload (`c:GROUP:VERSION`) names.
fn publication(payload: &str) -> Option<(i64, i32)> {
    let mut parts = payload.split(':');
    if parts.next()? != "c" {
        return None;
    }
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The configuration a poll woken by its group's announcement can be answered with from
/// memory: the version the hub knows as published for `group`, when it is not the one
/// the agent has (`have`) and its text was read already (at the notification). Commands
/// and acknowledgements wait for the agent's next poll, which follows at once: a
/// publication reaching thousands of agents then costs the database nothing per agent.
pub fn cached_publication(hub: &Hub, group: i64, have: Option<i32>) -> Option<GroupConfig> {
    let v = hub.published(group).filter(|v| Some(*v) != have)?;
    watchpost_support::lock(&hub.versions)
        .get(&(group, v))
        .map(|c| (**c).clone())
}

/// A version's text and files (read once per instance).
async fn version(
    db: &Client,
    hub: &Hub,
    group: i64,
    v: i32,
) -> Result<Option<Arc<GroupConfig>>, tokio_postgres::Error> {
    if let Some(c) = watchpost_support::lock(&hub.versions).get(&(group, v)) {
        return Ok(Some(c.clone()));
    }
    let Some(row) = db
        .query_opt(
            "SELECT config, files, digest FROM config_versions WHERE group_id = $1 AND version = $2",
            &[&group, &v],
        )
        .await?
    else {
        return Ok(None);
    };
    let files: serde_json::Value = row.get(1);
    let c = Arc::new(GroupConfig {
        version: v,
        config: row.get(0),
        files: serde_json::from_value::<BTreeMap<String, String>>(files).unwrap_or_default(),
        digest: row.get(2),
    });
    watchpost_support::lock(&hub.versions).insert((group, v), c.clone());
    Ok(Some(c))
}

/// Why a waiting poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Something was announced for this agent itself (a command, an acknowledgement):
    /// somebody is waiting for it.
    Agent,
    /// For its group (a publication, a group command), or for everyone.
    Group,
    /// The time is up, or the server stops.
    No,
}

/// Waits until something may be new for the agent of `noted` (of `group`), `wait` at
/// most, or the server stops. Once the wake-ups are armed, what was announced since
/// `noted` was taken (an announcement that came while the poll read the database) and the
/// published version the hub knows are checked: neither is slept through.
pub async fn wait(
    hub: &Hub,
    noted: &Noted,
    group: i64,
    config_version: Option<i32>,
    wait: Duration,
) -> Woken {
    let g = entry(&hub.groups, group);
    let na = noted.agent.notify.notified();
    let ng = g.notify.notified();
    let nc = hub.closing.notified();
    tokio::pin!(na, ng, nc);
    na.as_mut().enable();
    ng.as_mut().enable();
    nc.as_mut().enable();
    if noted.agent.announced.load(Ordering::SeqCst) != noted.agent_announced {
        return Woken::Agent;
    }
    if hub.groups_announced.load(Ordering::SeqCst) != noted.groups_announced
        || hub
            .published(group)
            .is_some_and(|v| Some(v) != config_version)
    {
        return Woken::Group;
    }
    if hub.closed.load(Ordering::Relaxed) {
        return Woken::No;
    }
    hub.waiting.fetch_add(1, Ordering::Relaxed);
    let woken = tokio::select! {
        _ = na => Woken::Agent,
        _ = ng => Woken::Group,
        _ = nc => Woken::No,
        _ = tokio::time::sleep(wait) => Woken::No,
    };
    hub.waiting.fetch_sub(1, Ordering::Relaxed);
    woken
}

/// Records the reports of many agents in one transaction, set-wise (a statement each for
/// the configurations, the command results and the acknowledgement cursors, whatever the
/// number of agents): after a publication thousands of agents report within a second,
/// and one commit each would queue them (and the polls behind them) for seconds. The
/// commit waits for the disk: a command's result is not sent again. Each report gets its
/// own answer, refused when its credential is no longer valid; of an agent's reports in
/// one group the configuration of the last counts.
pub async fn record_reports(
    db: &mut Client,
    group: &[(AgentRef, &Report)],
) -> Result<Vec<Result<ReportAck, Refused>>, tokio_postgres::Error> {
    let tx = db.transaction().await?;
    let ids: Vec<i64> = group.iter().map(|(a, _)| a.id).collect();
    let hashes: Vec<Option<Vec<u8>>> = group.iter().map(|(a, _)| a.credential.clone()).collect();
    // The reports whose credential is valid (their places in `group`, from 1), the agents'
    // rows locked in id order as ingest and heartbeats lock them (no deadlock), `NO KEY`
    // so foreign keys to them do not wait.
    let valid_at: HashSet<i64> = tx
        .query(
            "SELECT u.n FROM agents a
             JOIN unnest($1::int8[], $2::bytea[]) WITH ORDINALITY AS u(id, hash, n) ON a.id = u.id
             WHERE a.revoked_at IS NULL AND (u.hash IS NULL OR a.credential_hash = u.hash)
             ORDER BY a.id FOR NO KEY UPDATE OF a",
            &[&ids, &hashes],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let valid = |at: usize| valid_at.contains(&(at as i64 + 1));
    let others: Vec<i64> = (0..group.len())
        .filter(|&at| !valid(at))
        .map(|at| ids[at])
        .collect();
    let refused = crate::heartbeat::refusals(&tx, &others).await?;
    // Configurations: the last report of each agent that has one.
    let mut config: BTreeMap<i64, &watchpost_fleet_protocol::ConfigReport> = BTreeMap::new();
    let mut acks: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut r_cmd, mut r_agent, mut r_ok, mut r_result, mut r_at) =
        (vec![], vec![], vec![], vec![], vec![]);
    // A command's result once (the first), whatever else arrived with it.
    let mut results_seen: HashSet<(i64, i64)> = HashSet::new();
    for (at, (a, r)) in group.iter().enumerate() {
        if !valid(at) {
            continue;
        }
        if let Some(c) = &r.config {
            config.insert(a.id, c);
        }
        if let Some(x) = r.acks_applied {
            let e = acks.entry(a.id).or_insert(x);
            *e = (*e).max(x);
        }
        for c in &r.results {
            if !results_seen.insert((c.id, a.id)) {
                continue;
            }
            r_cmd.push(c.id);
            r_agent.push(a.id);
            r_ok.push(c.ok);
            r_result.push(serde_json::json!({ "output": c.output }).to_string());
            r_at.push(at as i32);
        }
    }
    if !config.is_empty() {
        let (mut c_id, mut c_version, mut c_ok, mut c_error, mut c_gen) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (id, c) in &config {
            c_id.push(*id);
            c_version.push(c.version);
            c_ok.push(c.ok);
            c_error.push((!c.ok).then(|| c.diagnostics.clone()));
            c_gen.push(c.generation.min(i64::MAX as u64) as i64);
        }
        tx.execute(
            "UPDATE agents a SET config_version = u.v, config_ok = u.ok, config_error = u.err,
                    config_reload_generation = u.g, config_reported_at = now()
             FROM unnest($1::int8[], $2::int4[], $3::bool[], $4::text[], $5::int8[])
                  AS u(id, v, ok, err, g)
             WHERE a.id = u.id",
            &[&c_id, &c_version, &c_ok, &c_error, &c_gen],
        )
        .await?;
    }
    // Results recorded, per report (its place in `group`).
    let mut recorded: HashMap<i32, u32> = HashMap::new();
    if !r_cmd.is_empty() {
        for row in tx
            .query(
                "UPDATE command_results r SET finished_at = now(), ok = u.ok, result = u.res::jsonb
                 FROM unnest($1::int8[], $2::int8[], $3::bool[], $4::text[], $5::int4[])
                      AS u(c, a, ok, res, at)
                 WHERE r.command_id = u.c AND r.agent_id = u.a AND r.finished_at IS NULL
                 RETURNING u.at",
                &[&r_cmd, &r_agent, &r_ok, &r_result, &r_at],
            )
            .await?
        {
            *recorded.entry(row.get(0)).or_default() += 1;
        }
    }
    if !acks.is_empty() {
        let (a_id, a_after): (Vec<i64>, Vec<i64>) = acks.into_iter().unzip();
        tx.execute(
            "UPDATE agents a SET acks_applied = greatest(a.acks_applied, u.x)
             FROM unnest($1::int8[], $2::int8[]) AS u(id, x)
             WHERE a.id = u.id AND a.acks_applied < u.x",
            &[&a_id, &a_after],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(group
        .iter()
        .enumerate()
        .map(|(at, (a, _))| {
            if valid(at) {
                Ok(ReportAck {
                    recorded: recorded.get(&(at as i32)).copied().unwrap_or(0),
                })
            } else {
                Err(refused.get(&a.id).cloned().unwrap_or(Refused::Unauthorized))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("a runtime: {e}"))
    }

    #[test]
    fn an_announcement_while_the_poll_reads_the_database_is_not_slept_through() {
        let rt = runtime();
        let hub = Hub::default();
        // The poll notes, reads the database (nothing new yet), and meanwhile a command
        // for its agent is announced; only then does it arm its wake-up.
        let noted = hub.before_reading(7);
        hub.notified("a:7");
        let started = Instant::now();
        assert_eq!(
            rt.block_on(wait(&hub, &noted, 1, None, Duration::from_secs(20))),
            Woken::Agent
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "looked again at once"
        );
        // The same for a group's announcement (a group command).
        let noted = hub.before_reading(7);
        hub.notified("g:1");
        assert_eq!(
            rt.block_on(wait(&hub, &noted, 1, None, Duration::from_secs(20))),
            Woken::Group
        );
        // Another agent's announcement is not this poll's business.
        let noted = hub.before_reading(7);
        hub.notified("a:8");
        assert_eq!(
            rt.block_on(wait(&hub, &noted, 1, None, Duration::from_millis(50))),
            Woken::No
        );
    }

    #[test]
    fn a_waiting_poll_wakes_on_its_announcement() {
        let rt = runtime();
        let hub = Arc::new(Hub::default());
        let noted = hub.before_reading(7);
        let h = hub.clone();
        let woken = rt.block_on(async move {
            let waiter =
                tokio::spawn(
                    async move { wait(&h, &noted, 1, None, Duration::from_secs(20)).await },
                );
            while hub.waiting.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            hub.notified("a:7");
            waiter.await
        });
        assert!(matches!(woken, Ok(Woken::Agent)));
    }

    #[test]
    fn a_publication_read_ahead_answers_its_group_from_memory() {
        assert_eq!(publication("c:4:7"), Some((4, 7)));
        assert_eq!(publication("g:4"), None);
        assert_eq!(publication("c:4"), None);
        assert_eq!(publication("c:x:7"), None);
        let hub = Hub::default();
        // Announced, not read: the poll goes to the database.
        hub.notified("c:4:7");
        assert!(cached_publication(&hub, 4, Some(6)).is_none());
        watchpost_support::lock(&hub.versions).insert(
            (4, 7),
            Arc::new(GroupConfig {
                version: 7,
                config: "[agent]".into(),
                files: BTreeMap::new(),
                digest: "d".into(),
            }),
        );
        assert_eq!(
            cached_publication(&hub, 4, Some(6)).map(|c| c.version),
            Some(7)
        );
        assert_eq!(
            cached_publication(&hub, 4, None).map(|c| c.version),
            Some(7)
        );
        // The agent runs it already; another group has nothing published.
        assert!(cached_publication(&hub, 4, Some(7)).is_none());
        assert!(cached_publication(&hub, 5, None).is_none());
        // After a lost listening connection the hub forgets what was announced.
        hub.wake_all();
        assert!(cached_publication(&hub, 4, Some(6)).is_none());
    }

    #[test]
    fn a_publication_known_to_the_hub_answers_at_once() {
        let rt = runtime();
        let hub = Hub::default();
        hub.notified("c:1:3");
        let noted = hub.before_reading(7);
        // The poll runs version 2: version 3 is there to fetch.
        assert_eq!(
            rt.block_on(wait(&hub, &noted, 1, Some(2), Duration::from_secs(20))),
            Woken::Group
        );
        // It runs version 3: nothing new.
        assert_eq!(
            rt.block_on(wait(&hub, &noted, 1, Some(3), Duration::from_millis(50))),
            Woken::No
        );
    }
}
