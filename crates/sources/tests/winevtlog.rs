//! The Windows Event Log loop (`winevtlog`) against a fake [`EventLogApi`]: an in-memory
//! log per channel with record ids, bookmarks as Windows renders them, signals through a
//! condition variable, and injectable failures. Runs on Linux and under Wine; the real API
//! (`win.rs`) is exercised by the Windows-only test at the end, which under Wine proves
//! only that a failing subscription is a clear error, not a panic.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use watchpost_event::{Event, Sym};
use watchpost_sources::ParseCtx;
use watchpost_sources::tail::StartAt;
use watchpost_sources::winevtlog::{
    ApiError, ApiErrorKind, ChannelSpec, EventLogApi, Start, StopHandle, Wake, WinEvtLog,
    WinEvtOptions,
};

// ---------------------------------------------------------------- the fake

/// A record the fake cannot render.
const UNRENDERABLE: &str = "\u{0}unrenderable";

#[derive(Default)]
struct Log {
    /// XML by channel; record id = index + 1.
    channels: HashMap<String, Vec<String>>,
    /// Subscribe failures by channel: kind and how many more times (u32::MAX: always).
    fail_subscribe: HashMap<String, (ApiErrorKind, u32)>,
    /// Read failures by channel: how many more `next` calls fail.
    fail_next: HashMap<String, u32>,
    /// Every subscribe call: channel, query, start.
    subscribes: Vec<(String, String, String)>,
    /// Providers with a message table.
    messages: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Log>,
    cv: Condvar,
}

#[derive(Clone, Default)]
struct Fake(Arc<Shared>);

impl Fake {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.0.log.lock().unwrap()
    }

    fn append(&self, channel: &str, xml: impl Into<String>) {
        self.lock()
            .channels
            .entry(channel.to_owned())
            .or_default()
            .push(xml.into());
        self.0.cv.notify_all();
    }

    /// Appends `n` generated events; returns the first record id.
    fn append_n(&self, channel: &str, n: u64) -> u64 {
        let mut log = self.lock();
        let v = log.channels.entry(channel.to_owned()).or_default();
        let first = v.len() as u64 + 1;
        for id in first..first + n {
            v.push(event_xml(channel, id));
        }
        drop(log);
        self.0.cv.notify_all();
        first
    }

    fn count(&self, channel: &str) -> u64 {
        self.lock()
            .channels
            .get(channel)
            .map_or(0, |v| v.len() as u64)
    }
}

struct FakeSub {
    channel: String,
    /// Index of the next record.
    pos: usize,
}

struct FakeEvent {
    channel: String,
    record_id: u64,
    xml: String,
}

struct FakeBookmark(Option<(String, u64)>);

fn bookmark_text(channel: &str, id: u64) -> String {
    format!(
        "<BookmarkList>\r\n  <Bookmark Channel='{channel}' RecordId='{id}' IsCurrent='true'/>\r\n</BookmarkList>"
    )
}

fn parse_bookmark(xml: &str) -> Option<(String, u64)> {
    let attr = |name: &str| {
        let at = xml.find(&format!("{name}='"))? + name.len() + 2;
        let end = xml[at..].find('\'')?;
        Some(xml[at..at + end].to_owned())
    };
    Some((attr("Channel")?, attr("RecordId")?.parse().ok()?))
}

impl EventLogApi for Fake {
    type Subscription = FakeSub;
    type Event = FakeEvent;
    type Bookmark = FakeBookmark;

    fn subscribe(
        &mut self,
        channel: &str,
        query: &str,
        start: Start<'_, FakeBookmark>,
    ) -> Result<FakeSub, ApiError> {
        let mut log = self.lock();
        log.subscribes
            .push((channel.into(), query.into(), format!("{start:?}")));
        if let Some((kind, left)) = log.fail_subscribe.get_mut(channel)
            && *left > 0
        {
            *left = left.saturating_sub(u32::from(*left != u32::MAX));
            let kind = *kind;
            return Err(ApiError::new(
                kind,
                15007,
                format!("EvtSubscribe failed: {kind:?}"),
            ));
        }
        let len = log.channels.get(channel).map_or(0, Vec::len);
        let pos = match start {
            Start::AfterBookmark(FakeBookmark(Some((c, id)))) if c == channel => *id as usize,
            Start::AfterBookmark(_) => 0,
            Start::Oldest => 0,
            Start::Future => len,
        };
        Ok(FakeSub {
            channel: channel.into(),
            pos,
        })
    }

    fn wait(&mut self, subs: &[&FakeSub], timeout: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        let mut log = self.lock();
        loop {
            if log.stop {
                return Wake::Stop;
            }
            if subs.iter().any(|s| {
                log.channels
                    .get(&s.channel)
                    .is_some_and(|v| v.len() > s.pos)
            }) {
                return Wake::Ready;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Timeout;
            }
            log = self.0.cv.wait_timeout(log, deadline - now).unwrap().0;
        }
    }

    fn stop_requested(&self) -> bool {
        self.lock().stop
    }

    fn stop_handle(&self) -> StopHandle {
        let me = self.clone();
        StopHandle::new(move || {
            me.lock().stop = true;
            me.0.cv.notify_all();
        })
    }

    fn next(&mut self, sub: &mut FakeSub, max: usize) -> Result<Vec<FakeEvent>, ApiError> {
        let mut log = self.lock();
        if let Some(left) = log.fail_next.get_mut(&sub.channel)
            && *left > 0
        {
            *left -= 1;
            return Err(ApiError::new(
                ApiErrorKind::Other,
                15011,
                "EvtNext failed: the result set is stale",
            ));
        }
        let Some(v) = log.channels.get(&sub.channel) else {
            return Ok(Vec::new());
        };
        let end = v.len().min(sub.pos + max);
        let out = (sub.pos..end)
            .map(|i| FakeEvent {
                channel: sub.channel.clone(),
                record_id: i as u64 + 1,
                xml: v[i].clone(),
            })
            .collect();
        sub.pos = end.max(sub.pos);
        Ok(out)
    }

    fn render_xml(&mut self, event: &FakeEvent) -> Result<String, ApiError> {
        if event.xml == UNRENDERABLE {
            return Err(ApiError::new(
                ApiErrorKind::Other,
                15005,
                "EvtRender failed",
            ));
        }
        Ok(event.xml.clone())
    }

    fn format_message(&mut self, event: &FakeEvent, provider: &str) -> Option<String> {
        self.lock()
            .messages
            .then(|| format!("Message from {provider} <#{}>", event.record_id))
    }

    fn create_bookmark(&mut self, xml: Option<&str>) -> Result<FakeBookmark, ApiError> {
        match xml {
            None => Ok(FakeBookmark(None)),
            Some(x) => parse_bookmark(x)
                .map(|b| FakeBookmark(Some(b)))
                .ok_or_else(|| {
                    ApiError::new(
                        ApiErrorKind::Other,
                        15010,
                        "EvtCreateBookmark failed: bad XML",
                    )
                }),
        }
    }

    fn update_bookmark(
        &mut self,
        bookmark: &mut FakeBookmark,
        event: &FakeEvent,
    ) -> Result<(), ApiError> {
        bookmark.0 = Some((event.channel.clone(), event.record_id));
        Ok(())
    }

    fn bookmark_xml(&mut self, bookmark: &FakeBookmark) -> Result<String, ApiError> {
        Ok(bookmark.0.as_ref().map_or_else(
            || "<BookmarkList/>".to_owned(),
            |(c, id)| bookmark_text(c, *id),
        ))
    }
}

// ---------------------------------------------------------------- helpers

fn event_xml(channel: &str, id: u64) -> String {
    format!(
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Test-Provider'/><EventID>{}</EventID><TimeCreated SystemTime='2026-03-02T08:00:00.0000000Z'/><EventRecordID>{id}</EventRecordID><Channel>{channel}</Channel><Computer>pc1</Computer></System><EventData><Data Name='Seq'>{id}</Data></EventData></Event>",
        4000 + id % 1000
    )
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/winevt")
        .join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim_end()
        .to_owned()
}

fn options(dir: &Path, channels: &[&str]) -> WinEvtOptions {
    let mut o = WinEvtOptions::new(
        "winlog",
        channels.iter().map(|c| ChannelSpec::new(*c)).collect(),
        dir.join("checkpoints").join("winlog.json"),
    );
    o.start_at = StartAt::Beginning;
    o.poll_interval = Duration::from_millis(20);
    o.retry_min = Duration::from_millis(10);
    o.retry_max = Duration::from_millis(40);
    o
}

fn start(fake: &Fake, o: WinEvtOptions) -> WinEvtLog<Fake> {
    WinEvtLog::new(fake.clone(), o, ParseCtx::new("winlog", "localhost")).unwrap()
}

fn s(e: &Event, name: &str) -> Option<String> {
    e.get_str(Sym::new(name)).map(|c| c.into_owned())
}

/// (channel, record id) of an event.
fn key(e: &Event) -> (String, u64) {
    let o = e.origin.as_ref().unwrap();
    (o.place.to_string(), o.offset)
}

/// Polls until `done` or the deadline.
fn poll_until(
    log: &mut WinEvtLog<Fake>,
    got: &mut Vec<Event>,
    secs: u64,
    done: impl Fn(&[Event]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(got) {
        assert!(
            Instant::now() < deadline,
            "timed out with {} events",
            got.len()
        );
        log.poll(Duration::from_millis(20), &mut |e| got.push(e));
    }
}

fn saved_record_id(path: &PathBuf, channel: &str) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["version"], 1);
    parse_bookmark(doc["channels"][channel].as_str()?).map(|(_, id)| id)
}

// ---------------------------------------------------------------- tests

#[test]
fn fixtures_become_events_with_the_evtx_fields_and_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.lock().messages = true;
    fake.append("Security", fixture("security-4624.xml"));
    fake.append("Security", fixture("security-4688.xml"));
    fake.append("System", fixture("system-7045.xml"));
    let mut log = start(&fake, options(dir.path(), &["Security", "System"]));
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 3);

    let logon = got
        .iter()
        .find(|e| s(e, "event_id").as_deref() == Some("4624"))
        .unwrap();
    assert_eq!(&*logon.source, "winlog");
    assert_eq!(&*logon.host, "WS-042.corp.example");
    assert_eq!(s(logon, "channel").as_deref(), Some("Security"));
    assert_eq!(
        s(logon, "provider").as_deref(),
        Some("Microsoft-Windows-Security-Auditing")
    );
    assert_eq!(s(logon, "record_id").as_deref(), Some("184467"));
    assert_eq!(s(logon, "TargetUserName").as_deref(), Some("alice"));
    assert_eq!(s(logon, "str6").as_deref(), Some("alice"));
    assert_eq!(s(logon, "LogonType").as_deref(), Some("10"));
    assert_eq!(s(logon, "str19").as_deref(), Some("198.51.100.23"));
    assert_eq!(s(logon, "ImpersonationLevel").as_deref(), Some("%%1833"));
    assert_eq!(
        s(logon, "activity_id").as_deref(),
        Some("{b1f8a2c4-3d5e-4f60-8a7b-9c0d1e2f3a4b}")
    );
    assert_eq!(
        logon.time.unwrap().to_string(),
        "2026-03-02T08:15:42.5371128Z"
    );
    // The message from EvtFormatMessage, escaped into the XML and read back.
    assert_eq!(
        s(logon, "message").as_deref(),
        Some("Message from Microsoft-Windows-Security-Auditing <#1>")
    );
    assert!(logon.raw.contains("<RenderingInfo><Message>Message from"));
    // Origin: channel and record id.
    assert_eq!(key(logon), ("Security".into(), 184_467));

    let proc = got
        .iter()
        .find(|e| s(e, "event_id").as_deref() == Some("4688"))
        .unwrap();
    assert_eq!(
        s(proc, "CommandLine").as_deref(),
        Some("powershell.exe -NoProfile -EncodedCommand SQBFAFgA & whoami")
    );
    assert_eq!(
        s(proc, "NewProcessName").as_deref(),
        Some(r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe")
    );
    assert_eq!(s(proc, "str10").as_deref(), Some("S-1-0-0"));

    let svc = got
        .iter()
        .find(|e| s(e, "event_id").as_deref() == Some("7045"))
        .unwrap();
    assert_eq!(s(svc, "channel").as_deref(), Some("System"));
    assert_eq!(s(svc, "qualifiers").as_deref(), Some("16384"));
    assert_eq!(
        s(svc, "provider").as_deref(),
        Some("Service Control Manager")
    );
    assert_eq!(
        s(svc, "user_sid").as_deref(),
        Some("S-1-5-21-1004336348-1177238915-682003330-1108")
    );
    assert_eq!(
        s(svc, "ImagePath").as_deref(),
        Some(r#"%COMSPEC% /c "C:\Users\Public\upd.exe" -k"#)
    );
    assert_eq!(s(svc, "str4").as_deref(), Some("demand start"));

    // The same record through the EVTX source's parser gives the same fields (minus message).
    let evtx_parse = watchpost_sources::winevent::parse_event_xml(
        &ParseCtx::new("winlog", "localhost"),
        &fixture("security-4624.xml"),
    )
    .unwrap();
    let names = |e: &Event| {
        e.fields()
            .map(|(k, _)| k.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let mut live = names(logon);
    live.retain(|n| n != "message");
    assert_eq!(live, names(&evtx_parse));
}

#[test]
fn without_render_message_or_message_table_there_is_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.append("Security", fixture("security-4624.xml"));
    // A message table exists but rendering is off.
    fake.lock().messages = true;
    let mut o = options(dir.path(), &["Security"]);
    o.render_message = false;
    let mut log = start(&fake, o);
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 1);
    assert_eq!(s(&got[0], "message"), None);
    assert!(!got[0].raw.contains("RenderingInfo"));
    // Rendering on, but the provider has no message table.
    let dir = tempfile::tempdir().unwrap();
    fake.lock().messages = false;
    let mut log = start(&fake, options(dir.path(), &["Security"]));
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 1);
    assert_eq!(s(&got[0], "message"), None);
}

#[test]
fn bookmark_is_written_after_the_batch_and_a_restart_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.append_n("Security", 250);
    let mut o = options(dir.path(), &["Security"]);
    o.batch_size = 100;
    let cp = o.checkpoint_path.clone();
    let mut log = start(&fake, o.clone());
    let mut got: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 250 {
        assert!(Instant::now() < deadline);
        log.poll(Duration::from_millis(20), &mut |e| {
            let id = key(&e).1;
            // While an event is handled, the checkpoint names only events of earlier batches.
            let saved = saved_record_id(&cp, "Security");
            let batch_start = (id - 1) / 100 * 100;
            assert_eq!(
                saved,
                (batch_start > 0).then_some(batch_start),
                "event {id}"
            );
            got.push(id);
        });
    }
    assert_eq!(got, (1..=250).collect::<Vec<_>>());
    assert_eq!(saved_record_id(&cp, "Security"), Some(250));
    let st = log.stats();
    assert_eq!(st.events, 250);
    assert_eq!(st.checkpoints, 3, "one write per batch");
    assert!(
        st.channels[0]
            .bookmark
            .as_deref()
            .unwrap()
            .contains("RecordId='250'")
    );
    drop(log);

    // Restart: events written while stopped come, nothing twice.
    fake.append_n("Security", 10);
    let mut log = start(&fake, o);
    let mut again = Vec::new();
    poll_until(&mut log, &mut again, 10, |g| g.len() >= 10);
    for _ in 0..3 {
        log.poll(Duration::from_millis(20), &mut |e| again.push(e));
    }
    let ids: Vec<u64> = again.iter().map(|e| key(e).1).collect();
    assert_eq!(ids, (251..=260).collect::<Vec<_>>());
    assert_eq!(fake.lock().subscribes.last().unwrap().2, "after bookmark");
}

#[test]
fn a_crash_in_the_middle_of_a_batch_repeats_only_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.append_n("System", 250);
    let mut o = options(dir.path(), &["System"]);
    o.batch_size = 100;
    let mut log = start(&fake, o.clone());
    let mut first: Vec<u64> = Vec::new();
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..100 {
            log.poll(Duration::from_millis(20), &mut |e| {
                let id = key(&e).1;
                assert!(id != 150, "simulated crash while handling record 150");
                first.push(id);
            });
        }
    }));
    assert!(crashed.is_err(), "the sink should have panicked");
    // The process "dies": no final checkpoint.
    std::mem::forget(log);
    assert_eq!(first, (1..150).collect::<Vec<_>>());
    assert_eq!(saved_record_id(&o.checkpoint_path, "System"), Some(100));

    let mut log = start(&fake, o);
    let mut second = Vec::new();
    poll_until(&mut log, &mut second, 10, |g| g.len() >= 150);
    let second: Vec<u64> = second.iter().map(|e| key(e).1).collect();
    assert_eq!(
        second,
        (101..=250).collect::<Vec<_>>(),
        "resumes at the uncommitted batch"
    );
    let repeated: Vec<u64> = first
        .iter()
        .copied()
        .filter(|id| second.contains(id))
        .collect();
    assert_eq!(
        repeated,
        (101..150).collect::<Vec<_>>(),
        "only the uncommitted batch repeats"
    );
}

#[test]
fn a_burst_of_100k_events_on_two_channels_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut o = options(
        dir.path(),
        &["Security", "Microsoft-Windows-Sysmon/Operational"],
    );
    o.start_at = StartAt::End;
    o.batch_size = 1000;
    o.render_message = false;
    let cp = o.checkpoint_path.clone();
    let mut log = start(&fake, o);
    let stop = log.stop_handle();
    // Subscribe (at the end: nothing yet) before the burst starts.
    log.poll(Duration::from_millis(1), &mut |_| {});
    let started = Instant::now();
    let writer = {
        let fake = fake.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                fake.append_n("Security", 3500);
                fake.append_n("Microsoft-Windows-Sysmon/Operational", 1500);
            }
        })
    };
    let handled = Arc::new(AtomicU64::new(0));
    let reader = {
        let handled = handled.clone();
        std::thread::spawn(move || {
            let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
            log.run(&mut |e| {
                let (c, id) = key(&e);
                seen.entry(c).or_default().push(id);
                handled.fetch_add(1, Ordering::Relaxed);
            });
            (seen, log.stats())
        })
    };
    writer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while handled.load(Ordering::Relaxed) < 100_000 {
        assert!(
            Instant::now() < deadline,
            "burst not handled in time: {} events",
            handled.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.stop();
    let (seen, stats) = reader.join().unwrap();
    eprintln!(
        "burst: 100000 events in {:?}, {} checkpoint writes",
        started.elapsed(),
        stats.checkpoints
    );
    assert_eq!(seen["Security"], (1..=70_000).collect::<Vec<_>>());
    assert_eq!(
        seen["Microsoft-Windows-Sysmon/Operational"],
        (1..=30_000).collect::<Vec<_>>()
    );
    assert_eq!(stats.events, 100_000);
    assert_eq!(
        fake.count("Security") + fake.count("Microsoft-Windows-Sysmon/Operational"),
        100_000
    );
    assert_eq!(stats.malformed + stats.errors, 0);
    assert_eq!(saved_record_id(&cp, "Security"), Some(70_000));
    assert_eq!(
        saved_record_id(&cp, "Microsoft-Windows-Sysmon/Operational"),
        Some(30_000)
    );
}

#[test]
fn a_failing_channel_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let mut l = fake.lock();
        l.fail_subscribe.insert(
            "Microsoft-Windows-Sysmon/Operational".into(),
            (ApiErrorKind::ChannelNotFound, 3),
        );
        l.fail_subscribe
            .insert("Security".into(), (ApiErrorKind::AccessDenied, u32::MAX));
    }
    fake.append_n("System", 5);
    let mut o = options(
        dir.path(),
        &["Security", "Microsoft-Windows-Sysmon/Operational", "System"],
    );
    o.channels.push(ChannelSpec {
        name: "Application".into(),
        query: Some("*[System[(EventID=".into()),
    });
    fake.lock()
        .fail_subscribe
        .insert("Application".into(), (ApiErrorKind::InvalidQuery, u32::MAX));
    let mut log = start(&fake, o);
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 5);
    // Sysmon appears after three failed attempts (installed later) and is read from the start.
    fake.append_n("Microsoft-Windows-Sysmon/Operational", 2);
    poll_until(&mut log, &mut got, 10, |g| g.len() == 7);
    fake.append_n("System", 1);
    poll_until(&mut log, &mut got, 10, |g| g.len() == 8);
    let keys: Vec<(String, u64)> = got.iter().map(key).collect();
    assert_eq!(
        keys[5..7],
        [
            ("Microsoft-Windows-Sysmon/Operational".to_owned(), 1),
            ("Microsoft-Windows-Sysmon/Operational".to_owned(), 2)
        ]
    );
    assert_eq!(keys[7], ("System".to_owned(), 6));

    let st = log.stats();
    let ch = |n: &str| st.channels.iter().find(|c| c.name == n).unwrap();
    let sec = ch("Security");
    assert!(!sec.subscribed);
    assert!(sec.errors >= 2, "retried: {sec:?}");
    let msg = sec.last_error.as_deref().unwrap();
    assert!(
        msg.starts_with("source `winlog`: channel `Security`: access denied"),
        "{msg}"
    );
    assert!(msg.contains("Event Log Readers"), "{msg}");
    let sysmon = ch("Microsoft-Windows-Sysmon/Operational");
    assert!(
        sysmon.subscribed && sysmon.last_error.is_none() && sysmon.errors == 3,
        "{sysmon:?}"
    );
    let app = ch("Application");
    assert!(
        !app.subscribed && app.errors == 1,
        "given up after one try: {app:?}"
    );
    assert!(
        app.last_error
            .as_deref()
            .unwrap()
            .contains("not a valid XPath")
    );
    let subs = fake.lock().subscribes.clone();
    assert_eq!(subs.iter().filter(|s| s.0 == "Application").count(), 1);
    assert!(
        subs.iter()
            .any(|s| s.0 == "Application" && s.1 == "*[System[(EventID=")
    );
    assert!(subs.iter().any(|s| s.0 == "System" && s.1 == "*"));
    assert_eq!(ch("System").events, 6);
}

#[test]
fn malformed_and_unrenderable_events_are_counted_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    for id in 1..=10u64 {
        match id {
            4 => fake.append("Security", fixture("malformed-4625.xml")),
            7 => fake.append("Security", UNRENDERABLE),
            _ => fake.append("Security", event_xml("Security", id)),
        }
    }
    let o = options(dir.path(), &["Security"]);
    let cp = o.checkpoint_path.clone();
    let mut log = start(&fake, o);
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 8);
    let ids: Vec<u64> = got.iter().map(|e| key(e).1).collect();
    assert_eq!(ids, [1, 2, 3, 5, 6, 8, 9, 10]);
    let st = log.stats();
    assert_eq!((st.events, st.malformed), (8, 2));
    assert_eq!(st.channels[0].malformed, 2);
    // The bookmark moved past them.
    assert_eq!(saved_record_id(&cp, "Security"), Some(10));
    // The broken record's id is still found for the report.
    let head = watchpost_sources::winevtlog::scan_head(&fixture("malformed-4625.xml"));
    assert_eq!(head.record_id, Some(184_468));
}

#[test]
fn start_at_end_skips_old_events_and_beginning_reads_them() {
    let fake = Fake::default();
    fake.append_n("System", 3);
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), &["System"]);
    o.start_at = StartAt::End;
    let mut log = start(&fake, o);
    let mut got = Vec::new();
    log.poll(Duration::from_millis(20), &mut |e| got.push(e));
    assert!(got.is_empty());
    fake.append_n("System", 1);
    poll_until(&mut log, &mut got, 10, |g| !g.is_empty());
    assert_eq!(key(&got[0]).1, 4);
    assert_eq!(fake.lock().subscribes[0].2, "future events");

    let dir = tempfile::tempdir().unwrap();
    let mut log = start(&fake, options(dir.path(), &["System"]));
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 4);
    assert_eq!(fake.lock().subscribes[1].2, "oldest record");
}

#[test]
fn a_read_failure_resubscribes_after_the_bookmark() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.append_n("System", 30);
    let mut o = options(dir.path(), &["System"]);
    o.batch_size = 10;
    let mut log = start(&fake, o);
    let mut got = Vec::new();
    // First batch, then the read fails twice (service restarted), then reading goes on.
    log.poll(Duration::from_millis(20), &mut |e| {
        if key(&e).1 == 10 {
            fake.lock().fail_next.insert("System".into(), 2);
        }
        got.push(e);
    });
    poll_until(&mut log, &mut got, 10, |g| g.len() == 30);
    let ids: Vec<u64> = got.iter().map(|e| key(e).1).collect();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
    let starts: Vec<String> = fake.lock().subscribes.iter().map(|s| s.2.clone()).collect();
    assert_eq!(
        starts,
        ["oldest record", "after bookmark", "after bookmark"]
    );
    assert_eq!(log.stats().errors, 2);
}

#[test]
fn stop_handle_ends_run_and_writes_the_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.append_n("System", 5);
    let mut o = options(dir.path(), &["System"]);
    o.poll_interval = Duration::from_secs(30);
    let cp = o.checkpoint_path.clone();
    let mut log = start(&fake, o);
    let stop = log.stop_handle();
    let t = std::thread::spawn(move || {
        let mut n = 0;
        log.run(&mut |_| n += 1);
        n
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while saved_record_id(&cp, "System") != Some(5) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let asked = Instant::now();
    stop.stop();
    assert_eq!(t.join().unwrap(), 5);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stop noticed while waiting"
    );
}

#[test]
fn unreadable_checkpoints_and_refused_bookmarks_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.append_n("System", 3);
    fake.append_n("Security", 2);
    let o = options(dir.path(), &["System", "Security"]);
    std::fs::create_dir_all(o.checkpoint_path.parent().unwrap()).unwrap();
    std::fs::write(
        &o.checkpoint_path,
        b"{\"version\":1,\"channels\":{\"System\":\"garbage\",\"Kept\":\"<x/>\"}}",
    )
    .unwrap();
    let mut log = start(&fake, o.clone());
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 5);
    assert_eq!(log.stats().errors, 1, "the refused bookmark");
    // Bookmarks of channels no longer configured are kept.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&o.checkpoint_path).unwrap()).unwrap();
    assert_eq!(doc["channels"]["Kept"], "<x/>");

    std::fs::write(&o.checkpoint_path, b"not json").unwrap();
    let log = start(&fake, o);
    assert_eq!(log.stats().errors, 1, "the unreadable checkpoint");
}

/// The real API under Wine: wevtapi is a stub there, so subscribing fails; the failure
/// must be a clear error naming the call, the source and the channel, not a panic. On a
/// real Windows host the same test subscribes to System and stops cleanly.
#[cfg(windows)]
#[test]
fn real_api_fails_clearly_or_works() {
    use watchpost_sources::winevtlog::win::WinApi;
    let dir = tempfile::tempdir().unwrap();
    let api = WinApi::new().expect("creating the stop event");
    let mut o = options(dir.path(), &["System"]);
    o.start_at = StartAt::End;
    let mut log = WinEvtLog::new(api, o, ParseCtx::new("winlog", "localhost")).unwrap();
    let stop = log.stop_handle();
    let mut n = 0u64;
    let wake = log.poll(Duration::from_millis(100), &mut |_| n += 1);
    assert_ne!(wake, Wake::Stop);
    let st = log.stats();
    let ch = &st.channels[0];
    if ch.subscribed {
        eprintln!("System subscribed (a real Event Log): {n} events");
    } else {
        let msg = ch.last_error.as_deref().unwrap();
        eprintln!("as expected under Wine: {msg}");
        assert!(
            msg.starts_with("source `winlog`: channel `System`: "),
            "{msg}"
        );
        assert!(msg.contains("EvtSubscribe failed"), "{msg}");
        assert_eq!(st.errors, 1);
    }
    // The stop event works either way.
    stop.stop();
    assert_eq!(
        log.poll(Duration::from_secs(10), &mut |_| n += 1),
        Wake::Stop
    );
    log.checkpoint().unwrap();
}

#[test]
fn a_failed_checkpoint_write_is_retried_without_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.append_n("System", 3);
    let o = options(dir.path(), &["System"]);
    // The checkpoint directory cannot be created: a file is in its place.
    let cp_dir = o.checkpoint_path.parent().unwrap().to_owned();
    std::fs::write(&cp_dir, b"in the way").unwrap();
    let mut log = start(&fake, o.clone());
    let mut got = Vec::new();
    poll_until(&mut log, &mut got, 10, |g| g.len() == 3);
    assert!(log.stats().errors >= 1, "{:?}", log.stats());
    assert_eq!(log.stats().checkpoints, 0);
    std::fs::remove_file(&cp_dir).unwrap();
    // No new event: the next round writes it anyway.
    log.poll(Duration::from_millis(20), &mut |e| got.push(e));
    assert_eq!(saved_record_id(&o.checkpoint_path, "System"), Some(3));
    assert_eq!(got.len(), 3);
}
