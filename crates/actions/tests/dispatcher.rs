//! The dispatcher: `submit` never blocks, full queues drop and count, shutdown is bounded.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{event, job, specs};
use watchpost_actions::{ActionError, Dispatcher};

#[test]
fn the_dispatcher_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Dispatcher>();
    shared::<watchpost_actions::ActionSpec>();
}

#[cfg(unix)]
#[test]
fn submit_never_blocks_when_the_worker_is_stuck() {
    let config = r#"
[[action]]
name = "stuck"
type = "run"
program = "sleep"
args = ["30"]
max_concurrent = 1
queue_capacity = 1
"#;
    let d = Dispatcher::start(specs(config)).unwrap();
    let index = d.index_of("stuck").unwrap();
    let mut accepted = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let start = Instant::now();
        accepted += usize::from(d.submit(index, job(event("pc1"), "f")));
        slowest = slowest.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        slowest < Duration::from_millis(50),
        "submit took {slowest:?}"
    );
    assert!(accepted <= 2, "one running + one queued, got {accepted}");
    let stats = d.stats();
    assert_eq!(stats[0].dropped, 50 - accepted as u64, "{stats:?}");

    let start = Instant::now();
    let stats = d.shutdown(Duration::from_millis(300));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        start.elapsed()
    );
    let s = &stats[0];
    assert_eq!(
        s.ok + s.failed + s.dropped,
        50,
        "every job is accounted for: {s:?}"
    );
}

#[test]
fn unknown_names_indexes_and_duplicates() {
    let config = r#"
[[action]]
name = "a"
type = "syslog"
target = "udp://127.0.0.1:9"

[[action]]
name = "a"
type = "syslog"
target = "udp://127.0.0.1:9"
"#;
    let err = Dispatcher::start(specs(config)).unwrap_err();
    assert!(
        matches!(err, ActionError::DuplicateName(ref n) if n == "a"),
        "{err}"
    );
    let one = specs(config).into_iter().take(1).collect();
    let d = Dispatcher::start(one).unwrap();
    assert_eq!(d.index_of("a"), Some(0));
    assert_eq!(d.index_of("b"), None);
    assert!(!d.submit(7, job(event("pc1"), "f")));
    d.shutdown(Duration::from_secs(1));
}

/// The UDP path end to end: submit → rendered → datagram, each job once and in order
/// (the time each took is printed).
#[test]
fn udp_messages_leave_one_per_job_in_order() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let config = format!(
        "[[action]]\nname = \"siem\"\ntype = \"syslog\"\ntarget = \"udp://127.0.0.1:{port}\"\n\
         message = \"{{{{ filter }}}}: {{{{ risk_name }}}} on {{{{ host }}}}\"\n"
    );
    let d = Dispatcher::start(specs(&config)).unwrap();
    let mut buf = [0u8; 9000];
    let mut latencies = Vec::new();
    for i in 0..200 {
        let start = Instant::now();
        assert!(d.submit(0, job(event("pc1"), &format!("f{i}"))));
        let n = sock.recv(&mut buf).expect("datagram");
        latencies.push(start.elapsed());
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.ends_with(&format!("f{i}: EICAR Test String on pc1")),
            "{text}"
        );
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "submit→datagram p50 {:?} p99 {p99:?}",
        latencies[latencies.len() / 2]
    );
    // Timings never decide a test (a loaded machine or Wine stalls for milliseconds): the
    // figure is printed, and measured properly by `cargo bench -p watchpost --bench latency`.
    let stats = d.shutdown(Duration::from_secs(1));
    assert_eq!(
        (stats[0].ok, stats[0].failed, stats[0].dropped),
        (200, 0, 0)
    );
}

#[cfg(unix)]
#[test]
fn submit_wait_holds_jobs_back_until_there_is_room_and_gives_up_when_told() {
    // Each job runs `sleep 0.2`; one runs, one waits in the queue, the rest wait in submit_wait.
    let config = r#"
[[action]]
name = "slow"
type = "run"
program = "sleep"
args = ["0.2"]
max_concurrent = 1
queue_capacity = 1
"#;
    let d = Dispatcher::start(specs(config)).unwrap();
    let index = d.index_of("slow").unwrap();
    let start = Instant::now();
    for _ in 0..5 {
        assert!(d.submit_wait(index, job(event("pc1"), "f"), &|| false));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "the last submits had to wait"
    );
    assert_eq!(d.stats()[0].dropped, 0);
    // A full queue and a caller that gives up: the job is dropped and counted.
    let mut gave_up = 0;
    while d.submit_wait(index, job(event("pc1"), "f"), &|| true) {
        gave_up += 1;
        assert!(gave_up < 10, "the queue never filled");
    }
    assert_eq!(d.stats()[0].dropped, 1);
    let stats = d.shutdown(Duration::from_secs(5));
    assert_eq!(
        stats[0].dropped + stats[0].ok + stats[0].failed,
        5 + gave_up + 1
    );
}

/// Jobs handed to the worker (`Via::Worker`, a burst) and jobs sent on the submitting
/// thread (`Via::Here`) leave in the order they were submitted: a job that may run here
/// waits behind those queued for the worker.
#[test]
fn udp_jobs_for_the_worker_are_not_overtaken_by_jobs_sent_here() {
    use watchpost_actions::Via;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let config = format!(
        "[[action]]\nname = \"siem\"\ntype = \"syslog\"\ntarget = \"udp://127.0.0.1:{port}\"\n\
         message = \"{{{{ filter }}}}\"\n"
    );
    let d = Dispatcher::start(specs(&config)).unwrap();
    let lane = d.lanes().remove(0);
    let n = 300;
    let mut buf = [0u8; 9000];
    // Bursts of three for the worker, then one that may go here; each burst is read
    // before the next (the socket's buffer would drop datagrams of a larger backlog).
    for burst in (0..n).step_by(4) {
        for i in burst..burst + 4 {
            let via = if i % 4 == 3 { Via::Here } else { Via::Worker };
            assert!(lane.submit_via(job(event("pc1"), &format!("f{i}")), via));
        }
        for i in burst..burst + 4 {
            let len = sock.recv(&mut buf).expect("datagram");
            let text = std::str::from_utf8(&buf[..len]).unwrap();
            assert!(text.ends_with(&format!(" f{i}")), "datagram {i}: {text}");
        }
    }
    drop(lane);
    let stats = d.shutdown(Duration::from_secs(1));
    assert_eq!(stats[0].ok, n as u64, "{stats:?}");
}
