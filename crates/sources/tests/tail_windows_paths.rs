//! SEP client logs as a Windows client keeps them, followed by the tailer: a tree laid out like
//! `C:\ProgramData\Symantec\Symantec Endpoint Protection\CurrentVersion\Data\Logs\AV\` (in a
//! temporary directory), CRLF lines, a Windows-1252 daily log and a UTF-16LE log with BOM, each
//! written while followed, partial last lines completed later, a rotation by rename while the
//! writer still has the file open, and a clean restart from the checkpoint. Runs on Linux and
//! on Windows (under Wine through `scripts/windows-test.sh`), where the pattern is given with
//! backslashes.
//!
//! Every record is checked against an independent reading of the files as they end up: the
//! same lines at the same offsets, each once, in file order.

// Tests may unwrap: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use watchpost_event::Sym;
use watchpost_sources::tail::{Record, StartAt, TailOptions, Tailer};
use watchpost_sources::{Format, ParseCtx};

/// The SEP client's log folder below `C:\`, one component per entry.
const SEP_LOGS: [&str; 6] = [
    "ProgramData",
    "Symantec",
    "Symantec Endpoint Protection",
    "CurrentVersion",
    "Data",
    "Logs",
];

/// A delivered record: path, offset, bytes.
type Got = Vec<(PathBuf, u64, Vec<u8>)>;

/// `dir\glob` spelled with the platform's separator (backslashes on Windows).
fn pattern(dir: &Path, glob: &str) -> String {
    let dir = dir.to_string_lossy();
    if cfg!(windows) {
        format!("{}\\{}", dir.replace('/', "\\"), glob.replace('/', "\\"))
    } else {
        format!("{dir}/{glob}")
    }
}

fn tail_opts(av: &Path, state: &Path) -> TailOptions {
    let mut o = TailOptions::new(vec![pattern(av, "*.Log")], state.join("cp.json"));
    o.start_at = StartAt::Beginning;
    o.poll_interval = Duration::from_millis(50);
    o
}

fn read(t: &mut Tailer, got: &mut Got) {
    let mut sink = |r: Record<'_>| got.push((r.path.to_path_buf(), r.offset, r.bytes.to_vec()));
    t.read_available(&mut sink).unwrap();
}

/// Reads until `got` holds at least `n` records (fails after 10 s).
fn read_until(t: &mut Tailer, got: &mut Got, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        read(t, got);
        if got.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out with {} of {n} records: {:?}",
            got.len(),
            shown(got)
        );
        t.wait(Duration::from_millis(20));
    }
}

/// Reads for a while longer (to see that nothing more arrives).
fn settle(t: &mut Tailer, got: &mut Got) {
    for _ in 0..5 {
        t.wait(Duration::from_millis(30));
        read(t, got);
    }
}

fn shown(got: &Got) -> Vec<String> {
    got.iter()
        .map(|(p, o, b)| format!("{}@{o}: {}", p.display(), String::from_utf8_lossy(b)))
        .collect()
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// UTF-16LE code units of `s`.
fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A SEP client AV log line (53 fields, like SAV 9) without its CRLF; `user` and `file` are
/// bytes so they can be Windows-1252. 2026-11-21 12:30:`sec` in the client's zone.
fn av_line(sec: u8, user: &[u8], file: &[u8]) -> Vec<u8> {
    let mut line = format!("380A150C1E{sec:02X},5,1,0,WS-0042,").into_bytes();
    line.extend_from_slice(user);
    line.extend_from_slice(b",EICAR Test String,");
    line.extend_from_slice(file);
    line.extend_from_slice(
        b",2,4,2,64,33554436,\"Virus found\",0,,0,,0,0,0,0,0,0,0,0,20261120.003,0,0,0,0,0",
    );
    while line.iter().filter(|&&b| b == b',').count() < 52 {
        line.push(b',');
    }
    line
}

/// Complete lines of a file as the tailer must deliver them: `(offset, bytes)`. ANSI files
/// pass bytes unchanged; UTF-16LE files (after their BOM) come as UTF-8; CR before LF is cut.
fn lines_of(path: &Path, utf16: bool) -> Vec<(u64, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    if utf16 {
        assert_eq!(&bytes[..2], b"\xFF\xFE", "{}: BOM", path.display());
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let mut start = 0;
        for (i, &u) in units.iter().enumerate() {
            if u == 0x0A {
                let mut line = &units[start..i];
                if line.last() == Some(&0x0D) {
                    line = &line[..line.len() - 1];
                }
                let text = String::from_utf16(line).unwrap();
                out.push((2 + 2 * start as u64, text.into_bytes()));
                start = i + 1;
            }
        }
    } else {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                let mut line = &bytes[start..i];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                out.push((start as u64, line.to_vec()));
                start = i + 1;
            }
        }
    }
    out
}

fn parse_av(bytes: &[u8]) -> watchpost_event::Event {
    let mut ctx = ParseCtx::new("sep_av", "localbox");
    ctx.tz = TimeZone::UTC;
    Format::SepAvLog
        .parser()
        .parse(&ctx, bytes)
        .unwrap_or_else(|e| panic!("{}: {e:?}", String::from_utf8_lossy(bytes)))
}

fn field(ev: &watchpost_event::Event, name: &str) -> String {
    ev.get_str(Sym::new(name))
        .unwrap_or_else(|| panic!("no field {name}"))
        .into_owned()
}

#[test]
fn sep_client_logs_under_programdata_are_tailed_exactly() {
    let root = tempfile::tempdir().unwrap();
    let logs = SEP_LOGS
        .iter()
        .fold(root.path().to_path_buf(), |p, c| p.join(c));
    let av = logs.join("AV");
    fs::create_dir_all(&av).unwrap();
    let state = root.path().join("state");
    let pat = pattern(&av, "*.Log");
    assert!(pat.contains("Symantec Endpoint Protection"));
    if cfg!(windows) {
        assert!(
            pat.contains(r"\Symantec Endpoint Protection\CurrentVersion\Data\Logs\AV\*.Log"),
            "{pat}"
        );
        assert!(!pat.contains('/'), "{pat}");
    }

    // The daily log (Windows-1252, CRLF), kept open by its writer like SEP does, and a
    // UTF-16LE log with BOM whose last line is still being written.
    let ansi = av.join("11212026.Log");
    let wide = av.join("11202026.Log");
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ansi)
        .unwrap();
    writer
        .write_all(&[av_line(1, b"alice", br"C:\Temp\a.exe"), b"\r\n".to_vec()].concat())
        .unwrap();
    writer
        .write_all(&[av_line(2, b"bob", br"C:\Temp\b.exe"), b"\r\n".to_vec()].concat())
        .unwrap();
    let wide_first =
        String::from_utf8(av_line(3, "Jörg".as_bytes(), br"C:\Users\J\x.exe")).unwrap();
    let wide_second = String::from_utf8(av_line(
        4,
        "Zoë".as_bytes(),
        "C:\\Users\\Zoë\\Überweisung €.pdf.exe".as_bytes(),
    ))
    .unwrap();
    let (second_head, second_tail) = wide_second.split_at(28);
    append(
        &wide,
        &[
            b"\xFF\xFE".to_vec(),
            utf16le(&format!("{wide_first}\r\n{second_head}")),
        ]
        .concat(),
    );

    let mut got = Got::new();
    let mut t = Tailer::open(tail_opts(&av, &state)).unwrap();
    read_until(&mut t, &mut got, 3);
    settle(&mut t, &mut got);
    assert_eq!(
        got.len(),
        3,
        "the partial UTF-16 line waits: {:?}",
        shown(&got)
    );

    // Appended while followed: Windows-1252 bytes (Ä = C4, € = 80, ü = FC) and a line whose
    // second half comes later; the UTF-16 line is completed and another follows.
    let umlaut_user = b"\xC4rger";
    let euro_file = b"C:\\Users\\\xC4rger\\Downloads\\Rechnung \x80 100.exe";
    writer
        .write_all(&[av_line(5, umlaut_user, euro_file), b"\r\n".to_vec()].concat())
        .unwrap();
    let half = av_line(6, b"carol", br"C:\Temp\half.exe");
    writer.write_all(&half[..20]).unwrap();
    let wide_third = String::from_utf8(av_line(7, b"dave", br"C:\Temp\d.exe")).unwrap();
    append(
        &wide,
        &utf16le(&format!("{second_tail}\r\n{wide_third}\r\n")),
    );
    read_until(&mut t, &mut got, 6);
    settle(&mut t, &mut got);
    assert_eq!(
        got.len(),
        6,
        "the partial ANSI line waits: {:?}",
        shown(&got)
    );
    writer
        .write_all(&[&half[20..], b"\r\n".as_slice()].concat())
        .unwrap();
    read_until(&mut t, &mut got, 7);

    // Rotation: the daily log is renamed while the writer and the tailer have it open, the
    // writer adds two late lines to it, then starts a new file under the old name.
    let rotated = av.join("11212026.Log.old");
    fs::rename(&ansi, &rotated).unwrap();
    for sec in [8, 9] {
        writer
            .write_all(
                &[
                    av_line(sec, b"late", br"C:\Temp\late.exe"),
                    b"\r\n".to_vec(),
                ]
                .concat(),
            )
            .unwrap();
    }
    drop(writer);
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ansi)
        .unwrap();
    writer
        .write_all(&[av_line(10, b"erin", br"C:\Temp\new.exe"), b"\r\n".to_vec()].concat())
        .unwrap();
    read_until(&mut t, &mut got, 10);
    settle(&mut t, &mut got);
    assert!(t.stats().rotations >= 1, "{:?}", t.stats());

    // A clean restart: written while stopped is delivered after it, nothing twice.
    t.checkpoint().unwrap();
    drop(t);
    writer
        .write_all(&[av_line(11, b"frank", br"C:\Temp\f.exe"), b"\r\n".to_vec()].concat())
        .unwrap();
    let wide_last = String::from_utf8(av_line(12, "Ægir".as_bytes(), br"C:\Temp\g.exe")).unwrap();
    append(&wide, &utf16le(&format!("{wide_last}\r\n")));
    let before_restart = got.len();
    let mut t = Tailer::open(tail_opts(&av, &state)).unwrap();
    read_until(&mut t, &mut got, 12);
    settle(&mut t, &mut got);
    assert_eq!(got.len() - before_restart, 2, "{:?}", shown(&got));
    drop(writer);

    // Every complete line of every file, at its offset, once, in file order.
    let files = [
        (rotated.clone(), false),
        (ansi.clone(), false),
        (wide.clone(), true),
    ];
    let mut want: HashMap<Vec<u8>, (usize, u64)> = HashMap::new();
    let mut total = 0;
    for (i, (path, utf16)) in files.iter().enumerate() {
        for (offset, bytes) in lines_of(path, *utf16) {
            assert!(
                want.insert(bytes, (i, offset)).is_none(),
                "lines are unique"
            );
            total += 1;
        }
    }
    assert_eq!(total, 12);
    let mut seen = HashSet::new();
    let mut last: HashMap<usize, u64> = HashMap::new();
    for (path, offset, bytes) in &got {
        let Some(&(file, at)) = want.get(bytes) else {
            panic!("delivered a line never written: {path:?}@{offset}: {bytes:?}");
        };
        assert!(
            seen.insert(bytes.clone()),
            "delivered twice: {:?}",
            shown(&got)
        );
        assert_eq!(*offset, at, "offset of {}", String::from_utf8_lossy(bytes));
        if let Some(&prev) = last.get(&file) {
            assert!(prev < at, "out of file order: {:?}", shown(&got));
        }
        last.insert(file, at);
        // The rotated file's late lines may carry either name; the others their own.
        if file != 0 {
            assert_eq!(path, &files[file].0);
        }
    }
    assert_eq!(seen.len(), total, "lost: {:?}", shown(&got));

    // Bytes pass unchanged (the parser decodes Windows-1252); UTF-16 arrives as UTF-8.
    let record = |sec: u8| {
        let prefix = format!("380A150C1E{sec:02X},");
        got.iter()
            .find(|g| g.2.starts_with(prefix.as_bytes()))
            .unwrap()
            .2
            .clone()
    };
    let umlaut = record(5);
    assert_eq!(umlaut, av_line(5, umlaut_user, euro_file));
    let ev = parse_av(&umlaut);
    assert_eq!(field(&ev, "user"), "Ärger");
    assert_eq!(
        field(&ev, "file_path"),
        r"C:\Users\Ärger\Downloads\Rechnung € 100.exe"
    );
    assert_eq!(field(&ev, "computer"), "WS-0042");
    assert_eq!(field(&ev, "risk_name"), "EICAR Test String");
    assert_eq!(
        watchpost_event::format_time(ev.time.unwrap()),
        "2026-11-21T12:30:05.000Z"
    );
    assert_eq!(record(6), half, "the completed partial line is whole");
    let zoe = parse_av(&record(4));
    assert_eq!(field(&zoe, "user"), "Zoë");
    assert_eq!(
        field(&zoe, "file_path"),
        r"C:\Users\Zoë\Überweisung €.pdf.exe"
    );
    assert_eq!(field(&parse_av(&record(12)), "user"), "Ægir");
    assert_eq!(field(&parse_av(&record(9)), "user"), "late");
}

/// The tailer's handles never stop a writer: while a followed file is open, it can be
/// renamed, deleted and re-created under its name (Windows: share mode read | write |
/// delete). Under Wine 8 the "re-created" file is the deleted one, still open and reopened
/// by its path (truncated by the create); the lines delivered are the same.
#[test]
fn followed_files_can_be_renamed_and_deleted_by_their_writer() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("Data Logs");
    fs::create_dir(&dir).unwrap();
    let log = dir.join("SecLog.Log");
    append(&log, b"one\r\n");
    let o = {
        let mut o = TailOptions::new(vec![pattern(&dir, "*.Log")], root.path().join("cp.json"));
        o.start_at = StartAt::Beginning;
        o.poll_interval = Duration::from_millis(50);
        o
    };
    let mut t = Tailer::open(o).unwrap();
    let mut got = Got::new();
    read_until(&mut t, &mut got, 1);
    assert_eq!(t.stats().files_followed, 1);
    let moved = dir.join("SecLog.Log.1");
    fs::rename(&log, &moved).unwrap();
    append(&log, b"two\r\n");
    read_until(&mut t, &mut got, 2);
    fs::remove_file(&moved).unwrap();
    fs::remove_file(&log).unwrap();
    File::create(&log).unwrap().write_all(b"three\r\n").unwrap();
    read_until(&mut t, &mut got, 3);
    settle(&mut t, &mut got);
    let texts: Vec<&[u8]> = got.iter().map(|g| g.2.as_slice()).collect();
    assert_eq!(texts, [b"one".as_slice(), b"two", b"three"]);
}
