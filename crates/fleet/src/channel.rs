//! The agent's end of the channel back from the server: long-polls `POST /api/v1/poll`
//! for its group's configuration, commands and central acknowledgements, hands each to
//! the daemon ([`Apply`]) and reports what happened on `POST /api/v1/report`.
//!
//! **Nothing is lost across a network failure.** What the agent has is kept in
//! `<state_dir>/fleet-channel.json` ([`ChannelState`]): the configuration version it last
//! handled, the last central acknowledgement applied, the results of the commands it ran
//! (the last 1,000) and a report not yet accepted by the server. The state is written
//! after each thing is done and before it is reported; the next poll sends the cursors
//! again, so the server repeats whatever was not taken. A command delivered again (its
//! result was lost) is not run again: its stored result is sent. A command runs at most
//! once: its id is saved before it starts, and one delivered again after the agent
//! stopped in the middle of it is reported as interrupted, not run a second time.
//!
//! **Stopping does not wait for a poll.** The poll (held by the server up to
//! [`POLL_WAIT`]) runs on a thread of its own; the daemon's task only waits for its
//! answers, so a stop or a reload that restarts the task is immediate. A poll still under
//! way when the task stops is dropped with its answer: the cursors did not move, the
//! server sends it again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use watchpost_actions::http::{self, Endpoint};
use watchpost_fleet_protocol::{
    self as proto, CentralAck, Command, CommandResult, ConfigReport, Delivery, GroupConfig, Poll,
    Report,
};

use crate::FleetSpec;

/// How long the server may hold a poll.
pub const POLL_WAIT: Duration = Duration::from_secs(25);
/// Largest answer to a poll (a configuration with its rule files): the protocol's, which
/// the server's largest version fits.
const MAX_DELIVERY: usize = proto::MAX_DELIVERY;
/// Command results remembered.
const REMEMBERED: usize = 1000;

/// The result of a command the agent stopped in the middle of.
pub const INTERRUPTED: &str =
    "the agent stopped while running this command; it was not run again (send it anew to retry)";

/// Keeps a command's result (the last [`REMEMBERED`]), so a delivery again is answered
/// with it instead of running the command twice.
fn remember(st: &mut ChannelState, r: &CommandResult) {
    st.done.push(r.clone());
    if st.done.len() > REMEMBERED {
        st.done.remove(0);
    }
}

/// What the daemon does with what arrives (implemented by the runtime).
pub trait Apply: Send {
    /// Applies a group configuration (its files already written under `files`); the
    /// outcome goes back to the server.
    fn config(&mut self, config: &GroupConfig, group_file: &Path, files: &Path) -> ConfigReport;
    /// Runs a command: `Ok(output)` or `Err(error)`.
    fn command(&mut self, command: &Command) -> Result<String, String>;
    /// Applies acknowledgements to the local store.
    fn acks(&mut self, acks: &[CentralAck]) -> Result<(), String>;
}

/// What the agent keeps of the channel (`fleet-channel.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelState {
    /// The group configuration version last handled.
    pub config_version: Option<i32>,
    /// The last central acknowledgement applied.
    pub ack_after: i64,
    /// Results of the commands run, newest last.
    pub done: Vec<CommandResult>,
    /// A report the server has not accepted yet.
    pub unsent: Option<Report>,
    /// The command being run: written before it starts, cleared with its result. Found
    /// set after a restart, the agent stopped while running it: it is reported as
    /// interrupted and not run again (a command runs at most once).
    pub running: Option<i64>,
}

impl ChannelState {
    /// The state file of a state directory.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("fleet-channel.json")
    }

    /// Reads it (a missing or unreadable file is a fresh start: the server then sends
    /// the group's configuration again, and unfinished commands).
    pub fn load(state_dir: &Path) -> ChannelState {
        std::fs::read(Self::path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, state_dir: &Path) {
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        if let Err(e) = watchpost_support::write_atomic(&Self::path(state_dir), &json) {
            tracing::error!(error = %e, "saving the fleet channel's state");
        }
    }
}

/// Where the agent keeps its group's configuration: `<state_dir>/fleet-group/`, each
/// version in a folder of its own (`v7/group.toml`, `v7/files/…`), and in `current` the
/// version that runs. A version the daemon refuses never becomes current, so a restart
/// comes back with the last one that ran.
pub fn group_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("fleet-group")
}

fn version_dir(state_dir: &Path, version: i32) -> PathBuf {
    group_dir(state_dir).join(format!("v{version}"))
}

/// Writes a version's text and files into its folder (made afresh); returns (the text's
/// path, the files folder).
pub fn write_group(state_dir: &Path, c: &GroupConfig) -> Result<(PathBuf, PathBuf), String> {
    let dir = version_dir(state_dir, c.version);
    let _ = std::fs::remove_dir_all(&dir);
    let files = dir.join("files");
    std::fs::create_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    for (name, content) in &c.files {
        let safe = !name.is_empty()
            && !name.starts_with('/')
            && name.split('/').all(|p| {
                !p.is_empty() && p != "." && p != ".." && !p.contains('\\') && !p.contains(':')
            });
        if !safe {
            return Err(format!("the server sent a file named `{name}`: refused"));
        }
        let path = files.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let text = dir.join("group.toml");
    watchpost_support::write_atomic(&text, c.config.as_bytes())
        .map_err(|e| format!("{}: {e}", text.display()))?;
    Ok((text, files))
}

/// Notes that `version` runs now, and removes the folders of other versions (but the
/// one that ran before, in case this one is refused after a restart).
fn set_current(state_dir: &Path, version: i32) {
    let dir = group_dir(state_dir);
    let before = std::fs::read_to_string(dir.join("current"))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    if let Err(e) =
        watchpost_support::write_atomic(&dir.join("current"), version.to_string().as_bytes())
    {
        tracing::error!(error = %e, "noting the group configuration that runs");
        return;
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = [Some(version), before]
                .iter()
                .flatten()
                .any(|v| name == format!("v{v}"));
            if name.starts_with('v') && !keep && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The group configuration that last ran here, if any: (its text's path, its files
/// folder).
pub fn kept_group(state_dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let v: i32 = std::fs::read_to_string(group_dir(state_dir).join("current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let dir = version_dir(state_dir, v);
    let text = dir.join("group.toml");
    text.is_file().then(|| (text, dir.join("files")))
}

/// One request to the server with the agent's credential.
fn post(
    spec: &FleetSpec,
    endpoint: &Endpoint,
    path: &str,
    body: &[u8],
    timeout: Duration,
    max: usize,
) -> Result<Vec<u8>, String> {
    let cred =
        crate::load_credential(&spec.state_dir).ok_or_else(|| "not enrolled yet".to_owned())?;
    let auth = format!("Bearer {cred}");
    let a = http::send(
        endpoint,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
        timeout,
        max,
    )
    .map_err(|e| format!("{}: {e}", endpoint.origin()))?;
    if a.status != 200 {
        let why = serde_json::from_slice::<proto::ApiError>(&a.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("HTTP {} {}", a.status, a.reason));
        return Err(format!(
            "{} answered {}: {why}",
            endpoint.origin(),
            a.status
        ));
    }
    Ok(a.body)
}

/// Runs the channel until `stopped()` (checked at least every 200 ms).
pub fn run(spec: FleetSpec, apply: &mut dyn Apply, stopped: &dyn Fn() -> bool) {
    let endpoint = match spec.endpoint() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "the fleet channel cannot start");
            return;
        }
    };
    let dir = spec.state_dir.clone();
    let mut st = ChannelState::load(&dir);
    // The poller: one request at a time, each with the cursors the task hands it.
    let (ask_tx, ask_rx) = crossbeam_channel::bounded::<Poll>(1);
    let (got_tx, got_rx) = crossbeam_channel::bounded::<Result<Delivery, String>>(1);
    let poll_spec = spec.clone();
    let poll_endpoint = endpoint.clone();
    let poller = std::thread::Builder::new()
        .name("fleet-poll".into())
        .spawn(move || {
            while let Ok(p) = ask_rx.recv() {
                let body = proto::encode_json(&p, false);
                let timeout = Duration::from_secs(u64::from(p.wait_secs)) + poll_spec.timeout;
                let r = post(
                    &poll_spec,
                    &poll_endpoint,
                    proto::POLL,
                    &body,
                    timeout,
                    MAX_DELIVERY,
                )
                .and_then(|b| serde_json::from_slice::<Delivery>(&b).map_err(|e| e.to_string()));
                if got_tx.send(r).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = poller {
        tracing::error!(error = %e, "cannot start the fleet poll thread");
        return;
    }
    let mut backoff = watchpost_fleet_protocol::retry::FIRST;
    let mut last_error = String::new();
    let wait = |d: Duration| {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            if stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100).min(d));
        }
        !stopped()
    };
    loop {
        // A report not accepted yet goes first.
        if let Some(r) = &st.unsent {
            match post(
                &spec,
                &endpoint,
                proto::REPORT,
                &proto::encode_json(r, false),
                spec.timeout,
                1 << 20,
            ) {
                Ok(_) => {
                    st.unsent = None;
                    st.save(&dir);
                }
                Err(e) => {
                    if e != last_error {
                        tracing::warn!(error = %e, "fleet report not delivered; trying again");
                        last_error = e;
                    }
                    if !wait(crate::jitter(backoff)) {
                        return;
                    }
                    backoff = watchpost_fleet_protocol::retry::next(backoff);
                    continue;
                }
            }
        }
        let poll = Poll {
            config_version: st.config_version,
            ack_after: st.ack_after,
            wait_secs: POLL_WAIT.as_secs() as u32,
        };
        if ask_tx.send(poll).is_err() {
            return;
        }
        let answer = loop {
            match got_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(a) => break a,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if !stopped() => {}
                Err(_) => return,
            }
        };
        let delivery = match answer {
            Ok(d) => {
                if !last_error.is_empty() {
                    tracing::info!(server = %endpoint.origin(), "fleet channel connected again");
                    last_error.clear();
                }
                backoff = watchpost_fleet_protocol::retry::FIRST;
                d
            }
            Err(e) => {
                if e != last_error {
                    tracing::warn!(error = %e, "fleet poll failed; trying again");
                    last_error = e;
                }
                if !wait(crate::jitter(backoff)) {
                    return;
                }
                backoff = watchpost_fleet_protocol::retry::next(backoff);
                continue;
            }
        };
        if delivery.is_empty() {
            continue;
        }
        handle(&dir, &mut st, apply, delivery);
    }
}

/// Applies a delivery; the report is kept in `st.unsent` (saved) until the server takes it.
pub fn handle(dir: &Path, st: &mut ChannelState, apply: &mut dyn Apply, d: Delivery) {
    let mut report = st.unsent.take().unwrap_or_default();
    if let Some(c) = &d.config {
        let r = match write_group(dir, c) {
            Ok((text, files)) => apply.config(c, &text, &files),
            Err(e) => ConfigReport {
                version: c.version,
                ok: false,
                generation: 0,
                diagnostics: e,
            },
        };
        if r.ok {
            set_current(dir, c.version);
            tracing::info!(
                version = c.version,
                generation = r.generation,
                "group configuration applied"
            );
        } else {
            tracing::error!(
                version = c.version,
                "group configuration refused; the running configuration stays"
            );
        }
        st.config_version = Some(c.version);
        report.config = Some(r);
        st.unsent = Some(report.clone());
        st.save(dir);
    }
    for c in &d.commands {
        let result = match st.done.iter().find(|r| r.id == c.id) {
            Some(r) => r.clone(),
            None if st.running == Some(c.id) => {
                tracing::warn!(
                    id = c.id,
                    kind = c.kind.name(),
                    "fleet command interrupted by a stop of the agent; not run again"
                );
                let r = CommandResult {
                    id: c.id,
                    ok: false,
                    output: INTERRUPTED.to_owned(),
                };
                st.running = None;
                remember(st, &r);
                r
            }
            None => {
                st.running = Some(c.id);
                st.save(dir);
                let (ok, output) = match apply.command(c) {
                    Ok(o) => (true, o),
                    Err(e) => (false, e),
                };
                tracing::info!(id = c.id, kind = c.kind.name(), by = %c.by, ok, output = %output, "fleet command run");
                let r = CommandResult {
                    id: c.id,
                    ok,
                    output,
                };
                st.running = None;
                remember(st, &r);
                r
            }
        };
        report.results.retain(|r| r.id != result.id);
        report.results.push(result);
        st.unsent = Some(report.clone());
        st.save(dir);
    }
    if let Some(last) = d.acks.last() {
        match apply.acks(&d.acks) {
            Ok(()) => {
                st.ack_after = last.id;
                report.acks_applied = Some(last.id);
            }
            Err(e) => {
                tracing::error!(error = %e, "central acknowledgements not applied; asking again")
            }
        }
    }
    st.unsent = Some(report);
    st.save(dir);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use watchpost_fleet_protocol::CommandKind;

    /// Counts what it is asked to do.
    #[derive(Default)]
    struct Counting {
        commands: Vec<i64>,
        acks: Vec<i64>,
    }

    impl Apply for Counting {
        fn config(&mut self, c: &GroupConfig, _: &Path, _: &Path) -> ConfigReport {
            ConfigReport {
                version: c.version,
                ok: true,
                generation: 2,
                diagnostics: String::new(),
            }
        }
        fn command(&mut self, c: &Command) -> Result<String, String> {
            self.commands.push(c.id);
            Ok(format!("ran {}", c.id))
        }
        fn acks(&mut self, acks: &[CentralAck]) -> Result<(), String> {
            self.acks.extend(acks.iter().map(|a| a.id));
            Ok(())
        }
    }

    fn command(id: i64) -> Command {
        Command {
            id,
            kind: CommandKind::RunChecks,
            by: "ann".into(),
        }
    }

    fn delivery(ids: &[i64]) -> Delivery {
        Delivery {
            commands: ids.iter().map(|&i| command(i)).collect(),
            ..Delivery::default()
        }
    }

    #[test]
    fn a_command_delivered_again_is_answered_from_its_stored_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = ChannelState::load(dir.path());
        let mut apply = Counting::default();
        handle(dir.path(), &mut st, &mut apply, delivery(&[7]));
        // The result was lost on the way: the server delivers the command again, and
        // the agent restarted in between (the state comes from its file).
        let mut st = ChannelState::load(dir.path());
        handle(dir.path(), &mut st, &mut apply, delivery(&[7, 8]));
        assert_eq!(apply.commands, [7, 8], "7 ran once");
        let results = &st.unsent.as_ref().unwrap().results;
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r.ok && r.output.starts_with("ran ")));
        assert_eq!(st.running, None);
    }

    #[test]
    fn a_command_interrupted_by_a_stop_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        // What the file holds when the agent was killed while running command 9.
        let killed = ChannelState {
            running: Some(9),
            ..ChannelState::default()
        };
        killed.save(dir.path());
        let mut st = ChannelState::load(dir.path());
        assert_eq!(st.running, Some(9));
        let mut apply = Counting::default();
        handle(dir.path(), &mut st, &mut apply, delivery(&[9, 10]));
        assert_eq!(apply.commands, [10], "9 is not run a second time");
        let results = &st.unsent.as_ref().unwrap().results;
        let r9 = results.iter().find(|r| r.id == 9).unwrap();
        assert!(!r9.ok);
        assert_eq!(r9.output, INTERRUPTED);
        // Kept: delivered once more, the same answer, still not run.
        let mut st = ChannelState::load(dir.path());
        assert_eq!(st.running, None);
        handle(dir.path(), &mut st, &mut apply, delivery(&[9]));
        assert_eq!(apply.commands, [10]);
        let results = &st.unsent.as_ref().unwrap().results;
        let r9 = results.iter().find(|r| r.id == 9).unwrap();
        assert_eq!(r9.output, INTERRUPTED);
    }

    #[test]
    fn the_id_is_saved_before_the_command_starts() {
        /// Reads the state file while "running" the command.
        struct Peek<'a>(&'a Path, Option<Option<i64>>);
        impl Apply for Peek<'_> {
            fn config(&mut self, c: &GroupConfig, _: &Path, _: &Path) -> ConfigReport {
                ConfigReport {
                    version: c.version,
                    ok: true,
                    generation: 1,
                    diagnostics: String::new(),
                }
            }
            fn command(&mut self, _: &Command) -> Result<String, String> {
                self.1 = Some(ChannelState::load(self.0).running);
                Err("no".into())
            }
            fn acks(&mut self, _: &[CentralAck]) -> Result<(), String> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut st = ChannelState::default();
        let mut peek = Peek(dir.path(), None);
        handle(dir.path(), &mut st, &mut peek, delivery(&[3]));
        assert_eq!(peek.1, Some(Some(3)));
        assert_eq!(ChannelState::load(dir.path()).running, None);
        let r = &st.unsent.as_ref().unwrap().results[0];
        assert_eq!((r.ok, r.output.as_str()), (false, "no"));
    }

    #[test]
    fn acknowledgements_move_the_cursor_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = ChannelState::default();
        let mut apply = Counting::default();
        let ack = |id| CentralAck {
            id,
            event: 40 + id as u64,
            at_ms: 0,
            by: "ann".into(),
            comment: "seen".into(),
        };
        let d = Delivery {
            acks: vec![ack(1), ack(2)],
            ..Delivery::default()
        };
        handle(dir.path(), &mut st, &mut apply, d);
        assert_eq!(apply.acks, [1, 2]);
        assert_eq!(ChannelState::load(dir.path()).ack_after, 2);
        assert_eq!(st.unsent.as_ref().unwrap().acks_applied, Some(2));
    }
}
