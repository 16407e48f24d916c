//! The syslog listener over real loopback sockets (127.0.0.1 and ::1), with `logger` from
//! util-linux as a real sender.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use watchpost_sources::listen::{
    ListenError, ListenOptions, ListenStats, Listener, Proto, Received, TcpFraming,
};

const WAIT: Duration = Duration::from_secs(10);

fn start(address: &str, tweak: impl FnOnce(&mut ListenOptions)) -> (Listener, Receiver<Received>) {
    let mut opts = ListenOptions::new(address);
    tweak(&mut opts);
    Listener::start(opts).expect("listener starts")
}

fn recv(rx: &Receiver<Received>) -> Received {
    rx.recv_timeout(WAIT)
        .expect("a message arrives within the time limit")
}

fn recv_str(rx: &Receiver<Received>) -> String {
    String::from_utf8(recv(rx).bytes).expect("utf-8 message")
}

fn recv_n(rx: &Receiver<Received>, n: usize) -> Vec<String> {
    (0..n).map(|_| recv_str(rx)).collect()
}

/// Polls `cond` on the stats until it holds (bounded).
fn wait_stats(l: &Listener, what: &str, cond: impl Fn(&ListenStats) -> bool) -> ListenStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = l.stats();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn assert_quiet(rx: &Receiver<Received>) {
    assert!(rx.try_recv().is_err(), "no further message expected");
}

fn tcp(l: &Listener) -> TcpStream {
    let s = TcpStream::connect(l.local_addr()).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// The peer closes `s` (read returns end of stream or an error) within the time limit.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u8
        })
        .collect()
}

#[test]
fn parse_address_and_options() {
    let ok = |s: &str| ListenOptions::parse_address(s).expect(s);
    assert_eq!(
        ok("udp://127.0.0.1:5514"),
        (Proto::Udp, "127.0.0.1:5514".parse().unwrap())
    );
    assert_eq!(
        ok("TCP://[::1]:6514"),
        (Proto::Tcp, "[::1]:6514".parse().unwrap())
    );
    assert_eq!(ok("tcp://0.0.0.0:0").1.port(), 0);
    for bad in [
        "127.0.0.1:514",
        "http://127.0.0.1:514",
        "udp://127.0.0.1",
        "udp://localhost:514",
        "tcp://::1:514",
        "tcp://127.0.0.1:70000",
        "udp://",
    ] {
        let e = ListenOptions::parse_address(bad).expect_err(bad);
        assert!(matches!(e, ListenError::Address { .. }), "{bad}: {e}");
    }
    let mut o = ListenOptions::new("udp://127.0.0.1:0");
    o.queue = 0;
    assert!(matches!(Listener::start(o), Err(ListenError::Options(_))));

    // Binding an address in use is a typed error.
    let (l, _rx) = start("tcp://127.0.0.1:0", |_| {});
    let taken = format!("tcp://{}", l.local_addr());
    let e = Listener::start(ListenOptions::new(taken)).expect_err("port in use");
    assert!(matches!(e, ListenError::Bind { .. }), "{e}");
}

#[test]
fn udp_one_datagram_one_message() {
    let (l, rx) = start("udp://127.0.0.1:0", |_| {});
    assert_ne!(l.local_addr().port(), 0);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"<13>first\n", l.local_addr()).unwrap();
    s.send_to(b"<13>two\nlines\r\n\0", l.local_addr()).unwrap();
    s.send_to(b"\n", l.local_addr()).unwrap(); // empty: dropped
    s.send_to(b"<13>last", l.local_addr()).unwrap();
    let r = recv(&rx);
    assert_eq!(r.peer, s.local_addr().unwrap());
    assert_eq!(r.bytes, b"<13>first");
    assert_eq!(recv_str(&rx), "<13>two\nlines");
    assert_eq!(recv_str(&rx), "<13>last");
    let st = l.stats();
    assert_eq!((st.messages, st.bytes), (3, 9 + 13 + 8));
    l.shutdown();
    assert_quiet(&rx);
}

#[test]
fn tcp_octet_counting() {
    let (l, rx) = start("tcp://127.0.0.1:0", |o| {
        o.framing = TcpFraming::OctetCounting;
    });
    let mut s = tcp(&l);
    s.write_all(b"9 <13>a\nb c11 <13>hello\r\n").unwrap();
    assert_eq!(recv_n(&rx, 2), ["<13>a\nb c", "<13>hello"]);
    // Strict mode: a line without a count loses the framing; the connection is closed.
    s.write_all(b"<13>no count\n").unwrap();
    assert!(closed_by_peer(&mut s));
    wait_stats(&l, "framing error", |s| {
        s.errors == 1 && s.connections_open == 0
    });
    assert_quiet(&rx);
}

#[test]
fn tcp_lf_framing() {
    let (l, rx) = start("tcp://127.0.0.1:0", |o| o.framing = TcpFraming::Lf);
    let mut s = tcp(&l);
    s.write_all(b"<13>one\n12 digits are text\r\n\n<13>last without LF")
        .unwrap();
    assert_eq!(recv_n(&rx, 2), ["<13>one", "12 digits are text"]);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        recv_str(&rx),
        "<13>last without LF",
        "delivered at end of stream"
    );
    wait_stats(&l, "close", |s| s.connections_open == 0);
    assert_eq!(l.stats().connections_accepted, 1);
}

#[test]
fn tcp_auto_mixes_framings() {
    let (l, rx) = start("tcp://127.0.0.1:0", |_| {});
    let mut s = tcp(&l);
    s.write_all(b"8 <13>c\nnt<13>line\n6 <13>abc<13>crlf\r\n")
        .unwrap();
    assert_eq!(
        recv_n(&rx, 4),
        ["<13>c\nnt", "<13>line", "<13>ab", "c<13>crlf"]
    );
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Wine 8: shutdown(Both) does not wake a read blocked in another thread; stop waits 2 s"
)]
fn ipv6_loopback() {
    let (lu, rxu) = start("udp://[::1]:0", |_| {});
    let u = UdpSocket::bind("[::1]:0").unwrap();
    u.send_to(b"<13>over udp6", lu.local_addr()).unwrap();
    let r = recv(&rxu);
    assert!(r.peer.is_ipv6());
    assert_eq!(r.bytes, b"<13>over udp6");

    let (lt, rxt) = start("tcp://[::1]:0", |_| {});
    assert!(lt.local_addr().is_ipv6());
    let mut s = tcp(&lt);
    s.write_all(b"13 <13>over tcp6").unwrap();
    let r = recv(&rxt);
    assert_eq!(r.peer, s.local_addr().unwrap());
    assert_eq!(r.bytes, b"<13>over tcp6");
    let t0 = Instant::now();
    lu.shutdown();
    lt.shutdown();
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn tcp_message_split_across_writes() {
    let (l, rx) = start("tcp://127.0.0.1:0", |_| {});
    let mut s = tcp(&l);
    let data = b"17 <13>split counted<13>split line\r\n";
    for b in data {
        s.write_all(&[*b]).unwrap();
        s.flush().unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(recv_n(&rx, 2), ["<13>split counted", "<13>split line"]);
    // A count split after its digits, before the space.
    s.write_all(b"1").unwrap();
    thread::sleep(Duration::from_millis(20));
    s.write_all(b"1 <13>0123456").unwrap();
    assert_eq!(recv_str(&rx), "<13>0123456");
    assert_quiet(&rx);
}

#[test]
fn tcp_many_messages_in_one_write() {
    let (l, rx) = start("tcp://127.0.0.1:0", |_| {});
    let mut data = Vec::new();
    let mut want = Vec::new();
    for i in 0..5000 {
        let m = format!("<13>message number {i}");
        if i % 2 == 0 {
            data.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
        } else {
            data.extend_from_slice(format!("{m}\n").as_bytes());
        }
        want.push(m);
    }
    let mut s = tcp(&l);
    s.write_all(&data).unwrap();
    assert_eq!(recv_n(&rx, want.len()), want);
    assert_eq!(l.stats().messages, 5000);
}

#[test]
fn oversized_udp_datagram_is_counted_and_skipped() {
    let (l, rx) = start("udp://127.0.0.1:0", |o| o.max_message_bytes = 100);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(&[b'x'; 100], l.local_addr()).unwrap();
    s.send_to(&[b'y'; 101], l.local_addr()).unwrap();
    s.send_to(&[b'z'; 5000], l.local_addr()).unwrap();
    s.send_to(b"<13>after", l.local_addr()).unwrap();
    assert_eq!(recv(&rx).bytes, vec![b'x'; 100], "exactly the limit passes");
    assert_eq!(recv_str(&rx), "<13>after");
    assert_eq!(l.stats().oversized, 2);
}

#[test]
fn oversized_octet_count_is_skipped() {
    let (l, rx) = start("tcp://127.0.0.1:0", |o| o.max_message_bytes = 100);
    let mut s = tcp(&l);
    let mut data = b"1000 ".to_vec();
    data.extend(noise(1000, 7)); // whatever it contains is skipped by count
    data.extend_from_slice(b"9 <13>after");
    s.write_all(&data).unwrap();
    assert_eq!(recv_str(&rx), "<13>after");
    assert_eq!(l.stats().oversized, 1);
    // A huge count is skipped as it arrives, never allocated.
    s.write_all(b"999999999 ").unwrap();
    s.write_all(&vec![b'q'; 1 << 20]).unwrap();
    wait_stats(&l, "second oversized", |s| s.oversized == 2);
    assert_quiet(&rx);
}

#[test]
fn oversized_lf_line_is_skipped() {
    let (l, rx) = start("tcp://127.0.0.1:0", |o| o.max_message_bytes = 100);
    let mut s = tcp(&l);
    let mut data = vec![b'<'; 2 << 20];
    data.extend_from_slice(b"\n<13>after\n");
    data.extend_from_slice(&[b'w'; 101]);
    data.extend_from_slice(b"\r\n");
    data.extend_from_slice(&[b'v'; 100]);
    data.extend_from_slice(b"\r\n");
    s.write_all(&data).unwrap();
    assert_eq!(recv_str(&rx), "<13>after");
    assert_eq!(recv(&rx).bytes, vec![b'v'; 100]);
    assert_eq!(l.stats().oversized, 2);
}

#[test]
fn connection_limit_refuses_and_recovers() {
    let (l, rx) = start("tcp://127.0.0.1:0", |o| o.max_connections = 2);
    let mut a = tcp(&l);
    let mut b = tcp(&l);
    wait_stats(&l, "two open", |s| s.connections_open == 2);
    let mut c = tcp(&l);
    assert!(closed_by_peer(&mut c), "third connection is closed");
    let st = wait_stats(&l, "refused", |s| s.connections_refused == 1);
    assert_eq!(st.connections_accepted, 2);
    a.write_all(b"<13>from a\n").unwrap();
    assert_eq!(recv_str(&rx), "<13>from a");
    drop(a);
    wait_stats(&l, "one open", |s| s.connections_open == 1);
    let mut d = tcp(&l);
    d.write_all(b"<13>from d\n").unwrap();
    assert_eq!(recv_str(&rx), "<13>from d");
    b.write_all(b"<13>from b\n").unwrap();
    assert_eq!(recv_str(&rx), "<13>from b");
    assert_eq!(l.stats().connections_accepted, 3);
}

#[test]
fn idle_connection_is_closed() {
    let (l, rx) = start("tcp://127.0.0.1:0", |o| {
        o.idle_timeout = Duration::from_millis(200);
    });
    let mut s = tcp(&l);
    s.write_all(b"<13>partial line").unwrap();
    let t0 = Instant::now();
    assert!(closed_by_peer(&mut s));
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        recv_str(&rx),
        "<13>partial line",
        "kept line delivered on close"
    );
    wait_stats(&l, "idle close", |s| {
        s.idle_closed == 1 && s.connections_open == 0
    });
}

#[test]
fn garbage_does_not_hurt() {
    for (i, framing) in [TcpFraming::Auto, TcpFraming::Lf, TcpFraming::OctetCounting]
        .into_iter()
        .enumerate()
    {
        let (l, rx) = start("tcp://127.0.0.1:0", |o| {
            o.framing = framing;
            o.max_message_bytes = 1024;
            o.queue = 1 << 20;
        });
        for seed in 1..4u64 {
            let mut s = tcp(&l);
            // Errors are fine: the listener may close a connection that lost its framing.
            // The write is bounded: a listener that stopped reading without closing must
            // fail the connection count below, not hang the test.
            s.set_write_timeout(Some(WAIT)).expect("timeout");
            let _ = s.write_all(&noise(1 << 20, seed * 31 + i as u64));
            drop(s);
        }
        let (lu, rxu) = start("udp://127.0.0.1:0", |_| {});
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        for seed in 1..50u64 {
            let d = noise((seed as usize * 37) % 1000, seed);
            u.send_to(&d, lu.local_addr()).unwrap();
        }
        wait_stats(&l, "connections done", |s| {
            s.connections_accepted == 3 && s.connections_open == 0
        });
        // Still serving.
        let mut s = tcp(&l);
        let valid: &[u8] = match framing {
            TcpFraming::Lf => b"\n<13>x\n",
            _ => b"\n5 <13>x\n",
        };
        s.write_all(valid).unwrap();
        let want = b"<13>x".to_vec();
        let deadline = Instant::now() + WAIT;
        while recv(&rx).bytes != want {
            assert!(Instant::now() < deadline);
        }
        // UDP may lose a datagram on a busy machine: resend until it is seen (bounded).
        let deadline = Instant::now() + WAIT;
        'seen: loop {
            assert!(Instant::now() < deadline, "udp listener stopped answering");
            u.send_to(b"<13>y", lu.local_addr()).unwrap();
            while let Ok(r) = rxu.recv_timeout(Duration::from_millis(200)) {
                if r.bytes == b"<13>y" {
                    break 'seen;
                }
            }
        }
        l.shutdown();
        lu.shutdown();
    }
}

#[test]
fn tcp_back_pressure_loses_nothing_and_udp_drops_count() {
    let (l, rx) = start("tcp://127.0.0.1:0", |o| o.queue = 4);
    let mut s = tcp(&l);
    let mut data = Vec::new();
    for i in 0..2000 {
        data.extend_from_slice(format!("<13>m{i}\n").as_bytes());
    }
    let writer = thread::spawn(move || s.write_all(&data).map(|()| s));
    wait_stats(&l, "a reader waiting", |s| s.queue_full_waits > 0);
    for i in 0..2000 {
        assert_eq!(recv_str(&rx), format!("<13>m{i}"));
    }
    let _s = writer.join().unwrap().unwrap();

    let (lu, rxu) = start("udp://127.0.0.1:0", |o| o.queue = 2);
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..10 {
        u.send_to(format!("<13>u{i}").as_bytes(), lu.local_addr())
            .unwrap();
    }
    let st = wait_stats(&lu, "all datagrams seen", |s| {
        s.messages + s.queue_full_drops == 10
    });
    assert_eq!(st.messages, 2);
    assert_eq!(recv_n(&rxu, 2), ["<13>u0", "<13>u1"]);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Wine 8: shutdown(Both) does not wake a read blocked in another thread; stop waits 2 s"
)]
fn shutdown_is_prompt() {
    // UDP idle in recv, TCP idle in accept, a connection idle in read, a reader blocked on
    // a full queue.
    let (lu, _rxu) = start("udp://127.0.0.1:0", |_| {});
    let (lt, _rxt) = start("tcp://127.0.0.1:0", |o| o.queue = 1);
    let _idle = tcp(&lt);
    let mut busy = tcp(&lt);
    busy.write_all(b"<13>1\n<13>2\n<13>3\n").unwrap();
    wait_stats(&lt, "reader blocked", |s| {
        s.queue_full_waits > 0 && s.connections_open == 2
    });
    let (lw, rxw) = start("udp://0.0.0.0:0", |_| {}); // woken through loopback
    drop(rxw);
    let t0 = Instant::now();
    lu.shutdown();
    lt.shutdown();
    lw.shutdown();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The port is released and the connections are closed.
    assert!(closed_by_peer(&mut busy));
}

#[test]
fn dropped_consumer_stops_readers() {
    let (l, rx) = start("tcp://127.0.0.1:0", |_| {});
    drop(rx);
    let mut s = tcp(&l);
    s.write_all(b"<13>nobody listens\n").unwrap();
    assert!(closed_by_peer(&mut s));
    let t0 = Instant::now();
    drop(l);
    assert!(t0.elapsed() < Duration::from_secs(1));
}

// ------------------------------------------------------------------------------------------
// A real sender: logger(1) from util-linux. With `-s` it also prints the exact message it
// sends on stderr, which is what must arrive. Unix only (logger is util-linux's).

#[cfg(unix)]
fn logger(l: &Listener, args: &[&str]) -> String {
    let port = l.local_addr().port().to_string();
    let out = std::process::Command::new("logger")
        .args(["-s", "--server", "127.0.0.1", "--port", &port])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `logger` ({e}); install util-linux's logger \
                 (Debian: apt-get install bsdutils)"
            )
        });
    assert!(out.status.success(), "logger {args:?}: {out:?}");
    String::from_utf8(out.stderr)
        .expect("utf-8")
        .trim_end_matches('\n')
        .to_owned()
}

#[cfg(unix)]
#[test]
fn logger_udp_rfc5424_and_rfc3164() {
    let (l, rx) = start("udp://127.0.0.1:0", |_| {});
    let sent = logger(
        &l,
        &[
            "--udp",
            "--rfc5424",
            "-t",
            "sepm",
            "--id=4242",
            "--msgid",
            "ID47",
            "-p",
            "local0.warning",
            "--",
            "Virus found,IP Address: 10.0.0.5,Computer name: PC-1",
        ],
    );
    assert!(
        sent.starts_with("<132>1 ") && sent.contains("sepm 4242 ID47"),
        "{sent}"
    );
    assert_eq!(recv_str(&rx), sent);
    let sent = logger(
        &l,
        &[
            "--udp",
            "--rfc3164",
            "-t",
            "SymantecServer",
            "--",
            "hello, 3164 é",
        ],
    );
    assert!(sent.starts_with("<13>") && sent.ends_with("SymantecServer: hello, 3164 é"));
    assert_eq!(recv_str(&rx), sent);
}

#[cfg(unix)]
/// `LEN SP MSG` as logger printed it: MSG, after checking LEN.
fn unframe(line: &str) -> &str {
    let (len, msg) = line.split_once(' ').expect("octet count");
    assert_eq!(len.parse::<usize>().ok(), Some(msg.len()), "{line}");
    msg
}

#[cfg(unix)]
#[test]
fn logger_tcp_octet_counting_and_lf() {
    let (l, rx) = start("tcp://127.0.0.1:0", |_| {});
    let sent = logger(
        &l,
        &[
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "-t",
            "wp",
            "--",
            "counted 5424",
        ],
    );
    let sent = unframe(&sent);
    assert!(sent.starts_with("<13>1 "), "{sent}");
    assert_eq!(recv_str(&rx), sent);
    let sent = logger(&l, &["--tcp", "--rfc3164", "-t", "wp", "--", "line 3164"]);
    assert_eq!(recv_str(&rx), sent);
    // Several lines from a file, each its own message over one connection.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lines");
    std::fs::write(&f, "first line\nsecond line\n").unwrap();
    let sent = logger(
        &l,
        &[
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "-t",
            "wp",
            "-f",
            f.to_str().unwrap(),
        ],
    );
    let want: Vec<&str> = sent.lines().map(unframe).collect();
    assert_eq!(want.len(), 2, "{sent}");
    assert_eq!(recv_n(&rx, 2), want);
    assert_quiet(&rx);
}
