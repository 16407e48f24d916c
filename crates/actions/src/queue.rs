//! The durable FIFO of one action: `<state_dir>/queue/<action>/`.
//!
//! Jobs are appended as records to segment files `<seq>.seg` (20-digit sequence numbers,
//! a new segment after [`SEGMENT_BYTES`]). A record is `len: u32 LE`, `crc32(payload): u32
//! LE`, `payload` (`len` bytes, at most [`MAX_RECORD`]). The file `cursor` (24 bytes,
//! rewritten in place) holds the head segment, the offset of the head record in it and
//! how many attempts that record has had, protected by its own CRC.
//!
//! Appending is one `write` (no fsync): what the kernel accepted survives `kill -9` of the
//! daemon; a power cut may lose the last moments (like the checkpoints). Acknowledging
//! the head rewrites the cursor; a segment is deleted once the cursor leaves it.
//!
//! A record whose length field is out of bounds or whose CRC does not match is reported
//! with its file and offset, counted, and skipped: the reader scans forward for the next
//! record whose header and CRC are valid, so one damaged record loses nothing else. A
//! record cut short at the end of the newest segment (a crash mid-write) is cut off when
//! the queue opens.
//!
//! When the directory cannot be used (or a write fails later, e.g. a full disk), jobs
//! are kept in memory behind the disk's ones, so the order stays, and the error is
//! reported once through [`Queue::error`].

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// Largest record payload accepted on append and when reading.
pub(crate) const MAX_RECORD: u32 = 16 << 20;
/// A segment is closed once it is this long.
const SEGMENT_BYTES: u64 = 4 << 20;
const HEADER: u64 = 8;

/// A damaged record that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corrupt {
    pub(crate) file: PathBuf,
    pub(crate) offset: u64,
    pub(crate) why: &'static str,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}: {}; record skipped",
            self.file.display(),
            self.offset,
            self.why
        )
    }
}

/// One action's queue: on disk when possible, in memory behind it otherwise.
#[derive(Debug)]
pub(crate) struct Queue {
    disk: Option<Disk>,
    memory: VecDeque<(Vec<u8>, u32)>,
    /// The first error that made the queue (partly) memory-only.
    error: Option<String>,
    /// Records on disk from the cursor on (valid ones counted when opened).
    disk_len: u64,
    /// Bytes queued (disk from the cursor on, plus memory), for the size limit.
    bytes: u64,
}

#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    cursor_file: File,
    /// Head segment, offset of the head record, attempts the head has had.
    head: (u64, u64, u32),
    /// The open head segment (for reading).
    reader: Option<(u64, File)>,
    /// Newest segment and its length; its file is open for appending.
    tail: (u64, u64, File),
}

impl Queue {
    /// Opens (or creates) the queue in `dir`; any failure gives a memory-only queue
    /// with [`Queue::error`] set.
    pub(crate) fn open(dir: &Path) -> Queue {
        match Disk::open(dir) {
            Ok((disk, len, bytes)) => Queue {
                disk: Some(disk),
                memory: VecDeque::new(),
                error: None,
                disk_len: len,
                bytes,
            },
            Err(e) => Queue::memory(format!("queue directory {}: {e}", dir.display())),
        }
    }

    /// A queue that lives in memory only by choice (`durable = false`, no state
    /// directory).
    pub(crate) fn volatile() -> Queue {
        Queue {
            disk: None,
            memory: VecDeque::new(),
            error: None,
            disk_len: 0,
            bytes: 0,
        }
    }

    /// A queue that lives in memory only, because of `why`.
    pub(crate) fn memory(why: String) -> Queue {
        Queue {
            disk: None,
            memory: VecDeque::new(),
            error: Some(why),
            disk_len: 0,
            bytes: 0,
        }
    }

    /// Why the queue is not (only) on disk, if it is not.
    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Whether what is queued now survives a restart.
    #[cfg(test)]
    pub(crate) fn is_durable(&self) -> bool {
        self.disk.is_some() && self.memory.is_empty()
    }

    /// Jobs queued.
    pub(crate) fn len(&self) -> u64 {
        self.disk_len + self.memory.len() as u64
    }

    /// Bytes queued (records with their headers).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Jobs that would be lost if the process ended now.
    pub(crate) fn in_memory(&self) -> usize {
        self.memory.len()
    }

    /// Appends a record. Payloads longer than [`MAX_RECORD`] are refused.
    pub(crate) fn push(&mut self, payload: &[u8]) -> Result<(), String> {
        if payload.len() > MAX_RECORD as usize {
            return Err(format!(
                "job of {} bytes is larger than the queue's limit ({MAX_RECORD})",
                payload.len()
            ));
        }
        if self.memory.is_empty()
            && let Some(disk) = &mut self.disk
        {
            match disk.append(payload) {
                Ok(()) => {
                    self.disk_len += 1;
                    self.bytes += HEADER + payload.len() as u64;
                    return Ok(());
                }
                Err(e) => {
                    let why = format!("writing {}: {e}", disk.dir.display());
                    tracing::error!(error = %why, "durable queue: keeping new jobs in memory until the disk ones are done");
                    self.error.get_or_insert(why);
                }
            }
        }
        self.memory.push_back((payload.to_vec(), 0));
        self.bytes += payload.len() as u64;
        Ok(())
    }

    /// The head record and the attempts it has had; damaged records met on the way are
    /// skipped and returned in `corrupt`.
    pub(crate) fn peek(&mut self, corrupt: &mut Vec<Corrupt>) -> Option<(Vec<u8>, u32)> {
        if self.disk_len > 0
            && let Some(disk) = &mut self.disk
        {
            match disk.peek(corrupt) {
                Ok(Some(found)) => {
                    self.disk_len = self.disk_len.max(1);
                    return Some(found);
                }
                Ok(None) => {
                    self.disk_len = 0;
                    self.bytes = self.memory.iter().map(|(p, _)| p.len() as u64).sum();
                }
                Err(e) => {
                    tracing::error!(dir = %disk.dir.display(), error = %e, "durable queue: reading failed; the disk's jobs stay for the next start");
                    self.error
                        .get_or_insert_with(|| format!("reading {}: {e}", disk.dir.display()));
                    self.disk = None;
                    self.disk_len = 0;
                }
            }
        }
        self.memory.front().cloned()
    }

    /// Notes another failed attempt of the head record.
    pub(crate) fn retried(&mut self) {
        if self.disk_len > 0
            && let Some(disk) = &mut self.disk
        {
            disk.head.2 = disk.head.2.saturating_add(1);
            if let Err(e) = disk.save_cursor() {
                tracing::warn!(dir = %disk.dir.display(), error = %e, "durable queue: saving the cursor");
            }
        } else if let Some(front) = self.memory.front_mut() {
            front.1 = front.1.saturating_add(1);
        }
    }

    /// Removes the head record (after [`Queue::peek`] returned it).
    pub(crate) fn pop(&mut self) {
        if self.disk_len > 0
            && let Some(disk) = &mut self.disk
        {
            match disk.pop() {
                Ok(n) => {
                    self.disk_len -= 1;
                    self.bytes = self.bytes.saturating_sub(n);
                }
                Err(e) => {
                    tracing::error!(dir = %disk.dir.display(), error = %e, "durable queue: saving the cursor failed; going on in memory");
                    self.error
                        .get_or_insert_with(|| format!("cursor in {}: {e}", disk.dir.display()));
                    self.disk_len -= 1;
                }
            }
        } else if let Some((p, _)) = self.memory.pop_front() {
            self.bytes = self.bytes.saturating_sub(p.len() as u64);
        }
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn read_header(buf: &[u8]) -> (u32, u32) {
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    (len, crc)
}

impl Disk {
    fn open(dir: &Path) -> io::Result<(Disk, u64, u64)> {
        std::fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                segments.push(seq);
            }
        }
        segments.sort_unstable();
        let cursor_path = dir.join("cursor");
        let mut cursor_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&cursor_path)?;
        let mut raw = Vec::new();
        cursor_file.read_to_end(&mut raw)?;
        let mut head = match decode_cursor(&raw) {
            Some(c) => c,
            None => {
                if !raw.is_empty() {
                    tracing::warn!(file = %cursor_path.display(), "durable queue: damaged cursor; starting at the oldest segment (some jobs may be sent again)");
                }
                (segments.first().copied().unwrap_or(0), 0, 0)
            }
        };
        if !segments.contains(&head.0) {
            // The cursor's segment is gone (finished) or was never written.
            let s = segments
                .iter()
                .copied()
                .find(|&s| s >= head.0)
                .or(segments.first().copied())
                .unwrap_or(head.0);
            head = (s, 0, 0);
        }
        // Segments before the head are done.
        for &s in segments.iter().filter(|&&s| s < head.0) {
            let _ = std::fs::remove_file(segment_path(dir, s));
        }
        segments.retain(|&s| s >= head.0);
        let tail_seq = segments.last().copied().unwrap_or(head.0);
        // Count what is queued; cut a torn record off the newest segment.
        let mut count = 0u64;
        let mut bytes = 0u64;
        // Damaged records are reported when the reader reaches them.
        let mut corrupt = Vec::new();
        for &s in &segments {
            let path = segment_path(dir, s);
            let data = std::fs::read(&path)?;
            let from = if s == head.0 { head.1 } else { 0 };
            let (n, valid_end) = count_records(&data, from as usize, &path, &mut corrupt);
            count += n;
            bytes += valid_end.saturating_sub(from as usize) as u64;
            if s == tail_seq && (valid_end as u64) < data.len() as u64 {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid_end as u64)?;
                tracing::warn!(file = %path.display(), offset = valid_end, "durable queue: cut off a record torn by a crash");
            }
        }
        let tail_path = segment_path(dir, tail_seq);
        let tail_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&tail_path)?;
        let tail_len = tail_file.metadata()?.len();
        if head.0 == tail_seq && head.1 > tail_len {
            // The newest segment is shorter than the cursor says (cut by someone): new
            // records must not land behind the cursor.
            tracing::warn!(file = %tail_path.display(), cursor = head.1, "durable queue: cursor past the end of its segment; reset to the end");
            head.1 = tail_len;
        }
        let mut disk = Disk {
            dir: dir.to_owned(),
            cursor_file,
            head,
            reader: None,
            tail: (tail_seq, tail_len, tail_file),
        };
        disk.save_cursor()?;
        Ok((disk, count, bytes))
    }

    fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.tail.1 >= SEGMENT_BYTES {
            let seq = self.tail.0 + 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            self.tail = (seq, 0, file);
        }
        let mut rec = Vec::with_capacity(payload.len() + HEADER as usize);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        if let Err(e) = self.tail.2.write_all(&rec) {
            // Do not leave half a record behind for the reader.
            let _ = self.tail.2.set_len(self.tail.1);
            return Err(e);
        }
        self.tail.1 += rec.len() as u64;
        Ok(())
    }

    fn reader(&mut self) -> io::Result<&mut File> {
        if self.reader.as_ref().is_none_or(|(s, _)| *s != self.head.0) {
            let f = File::open(segment_path(&self.dir, self.head.0))?;
            self.reader = Some((self.head.0, f));
        }
        Ok(&mut self.reader.as_mut().expect("just set").1)
    }

    /// The head record, skipping damaged ones and finished segments.
    fn peek(&mut self, corrupt: &mut Vec<Corrupt>) -> io::Result<Option<(Vec<u8>, u32)>> {
        loop {
            let (seq, off, attempts) = self.head;
            let end = if seq == self.tail.0 {
                self.tail.1
            } else {
                self.reader()?.metadata()?.len()
            };
            if off + HEADER > end {
                if seq >= self.tail.0 {
                    return Ok(None);
                }
                self.next_segment()?;
                continue;
            }
            let path = segment_path(&self.dir, seq);
            let file = self.reader()?;
            file.seek(SeekFrom::Start(off))?;
            let mut header = [0u8; HEADER as usize];
            file.read_exact(&mut header)?;
            let (len, crc) = read_header(&header);
            if len > MAX_RECORD || off + HEADER + u64::from(len) > end {
                corrupt.push(Corrupt {
                    file: path,
                    offset: off,
                    why: "record length out of bounds",
                });
                self.resync(end)?;
                continue;
            }
            let mut payload = vec![0u8; len as usize];
            file.read_exact(&mut payload)?;
            if crc32fast::hash(&payload) != crc {
                corrupt.push(Corrupt {
                    file: path,
                    offset: off,
                    why: "checksum mismatch",
                });
                self.resync(end)?;
                continue;
            }
            return Ok(Some((payload, attempts)));
        }
    }

    /// Moves the head past a damaged record: to the next offset where a whole record
    /// with a valid checksum starts, else to the segment's end.
    fn resync(&mut self, end: u64) -> io::Result<()> {
        let (seq, off, _) = self.head;
        let file = self.reader()?;
        file.seek(SeekFrom::Start(off))?;
        let mut data = Vec::new();
        file.take(end - off).read_to_end(&mut data)?;
        let next = (1..data.len())
            .find(|&i| record_at(&data, i).is_some())
            .unwrap_or(data.len());
        self.head = (seq, off + next as u64, 0);
        self.save_cursor()
    }

    fn next_segment(&mut self) -> io::Result<()> {
        let old = self.head.0;
        let next = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".seg")
                    .and_then(|s| s.parse::<u64>().ok())
            })
            .filter(|&s| s > old)
            .min()
            .unwrap_or(self.tail.0);
        self.head = (next, 0, 0);
        self.save_cursor()?;
        self.reader = None;
        std::fs::remove_file(segment_path(&self.dir, old))
    }

    /// Moves past the head record; returns its size with the header.
    fn pop(&mut self) -> io::Result<u64> {
        let (seq, off, _) = self.head;
        let file = self.reader()?;
        file.seek(SeekFrom::Start(off))?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact(&mut header)?;
        let (len, _) = read_header(&header);
        let size = HEADER + u64::from(len.min(MAX_RECORD));
        self.head = (seq, off + size, 0);
        if seq == self.tail.0 && self.head.1 >= self.tail.1 && self.tail.1 >= SEGMENT_BYTES {
            // The full newest segment is done: start a fresh one.
            let next = seq + 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, next))?;
            self.tail = (next, 0, file);
            self.head = (next, 0, 0);
            self.save_cursor()?;
            self.reader = None;
            std::fs::remove_file(segment_path(&self.dir, seq))?;
            return Ok(size);
        }
        self.save_cursor()?;
        Ok(size)
    }

    fn save_cursor(&mut self) -> io::Result<()> {
        let buf = encode_cursor(self.head);
        self.cursor_file.seek(SeekFrom::Start(0))?;
        self.cursor_file.write_all(&buf)?;
        Ok(())
    }
}

fn encode_cursor((seq, off, attempts): (u64, u64, u32)) -> [u8; 24] {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&off.to_le_bytes());
    buf[16..20].copy_from_slice(&attempts.to_le_bytes());
    let crc = crc32fast::hash(&buf[..20]);
    buf[20..].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode_cursor(raw: &[u8]) -> Option<(u64, u64, u32)> {
    let raw: &[u8; 24] = raw.get(..24)?.try_into().ok()?;
    let crc = u32::from_le_bytes(raw[20..].try_into().ok()?);
    if crc32fast::hash(&raw[..20]) != crc {
        return None;
    }
    Some((
        u64::from_le_bytes(raw[..8].try_into().ok()?),
        u64::from_le_bytes(raw[8..16].try_into().ok()?),
        u32::from_le_bytes(raw[16..20].try_into().ok()?),
    ))
}

/// The length of the valid record at `at`, if one starts there.
fn record_at(data: &[u8], at: usize) -> Option<usize> {
    let header = data.get(at..at + HEADER as usize)?;
    let (len, crc) = read_header(header);
    if len > MAX_RECORD {
        return None;
    }
    let body = data.get(at + HEADER as usize..at + HEADER as usize + len as usize)?;
    (crc32fast::hash(body) == crc).then_some(HEADER as usize + len as usize)
}

/// Counts the valid records from `from`; returns the count and where the last valid
/// record (or the data of a resynchronised run) ends.
fn count_records(
    data: &[u8],
    from: usize,
    path: &Path,
    corrupt: &mut Vec<Corrupt>,
) -> (u64, usize) {
    let mut at = from.min(data.len());
    let mut n = 0;
    let mut valid_end = at;
    while at < data.len() {
        match record_at(data, at) {
            Some(len) => {
                n += 1;
                at += len;
                valid_end = at;
            }
            None => {
                corrupt.push(Corrupt {
                    file: path.to_owned(),
                    offset: at as u64,
                    why: "damaged record",
                });
                match (at + 1..data.len()).find(|&i| record_at(data, i).is_some()) {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
    }
    (n, valid_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut Queue) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        while let Some((p, _)) = q.peek(&mut corrupt) {
            out.push(p);
            q.pop();
        }
        out
    }

    #[test]
    fn survives_reopen_and_keeps_order_and_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path());
        assert!(q.is_durable());
        for i in 0..10u32 {
            q.push(format!("job {i}").as_bytes()).unwrap();
        }
        let mut c = Vec::new();
        assert_eq!(q.peek(&mut c).unwrap().0, b"job 0");
        q.pop();
        q.retried();
        q.retried();
        drop(q);
        let mut q = Queue::open(dir.path());
        assert_eq!(q.len(), 9);
        assert_eq!(q.bytes(), 9 * (HEADER + 5));
        assert_eq!(q.peek(&mut c).unwrap(), (b"job 1".to_vec(), 2));
        let all = drain(&mut q);
        assert_eq!(all.len(), 9);
        assert_eq!(all[8], b"job 9");
        assert!(q.is_empty());
    }

    #[test]
    fn segments_roll_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path());
        let big = vec![b'x'; 1 << 20];
        for _ in 0..9 {
            q.push(&big).unwrap();
        }
        let segs = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".seg")
                })
                .count()
        };
        assert!(segs() >= 3, "{}", segs());
        assert_eq!(q.bytes(), 9 * (HEADER + (1 << 20)));
        assert_eq!(drain(&mut q).len(), 9);
        assert!(segs() <= 1);
        assert_eq!(q.bytes(), 0);
        q.push(b"after").unwrap();
        drop(q);
        let mut q = Queue::open(dir.path());
        assert_eq!(drain(&mut q), vec![b"after".to_vec()]);
    }

    #[test]
    fn a_damaged_record_is_skipped_and_reported_nothing_else_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path());
        for i in 0..5u32 {
            q.push(format!("record number {i}").as_bytes()).unwrap();
        }
        drop(q);
        let seg = segment_path(dir.path(), 0);
        let mut data = std::fs::read(&seg).unwrap();
        let rec = HEADER as usize + "record number 0".len();
        data[rec + 10] ^= 0xff; // inside record 1's payload
        data[2 * rec + 3] = 0x7f; // record 2's length field: huge
        std::fs::write(&seg, &data).unwrap();
        let mut q = Queue::open(dir.path());
        let mut corrupt = Vec::new();
        let mut got = Vec::new();
        while let Some((p, _)) = q.peek(&mut corrupt) {
            got.push(String::from_utf8(p).unwrap());
            q.pop();
        }
        assert_eq!(
            got,
            ["record number 0", "record number 3", "record number 4"]
        );
        // One resynchronisation passes both damaged records.
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert_eq!(corrupt[0].offset, rec as u64);
        assert!(corrupt[0].to_string().contains("00000000000000000000.seg"));
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path());
        q.push(b"whole").unwrap();
        drop(q);
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut q = Queue::open(dir.path());
        assert_eq!(q.len(), 1);
        q.push(b"next").unwrap();
        assert_eq!(drain(&mut q), vec![b"whole".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn unusable_directory_means_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let mut q = Queue::open(&file.join("q"));
        assert!(q.error().is_some());
        assert!(!q.is_durable());
        q.push(b"a").unwrap();
        q.retried();
        let mut c = Vec::new();
        assert_eq!(q.peek(&mut c), Some((b"a".to_vec(), 1)));
        q.pop();
        assert!(q.is_empty());
    }

    /// `cargo test -p watchpost-actions --release queue::tests::cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement"]
    fn cost() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path());
        let payload = vec![b'j'; 600];
        let n = 100_000;
        let start = std::time::Instant::now();
        let mut c = Vec::new();
        for _ in 0..n {
            q.push(&payload).unwrap();
            q.peek(&mut c).unwrap();
            q.pop();
        }
        let per = start.elapsed() / n;
        println!("enqueue+peek+pop of a 600-byte record: {per:?}");
        let job = crate::Job {
            event: std::sync::Arc::new({
                let mut e =
                    watchpost_event::Event::new("security".into(), "pc1".into(), "x".repeat(300));
                for (i, f) in ["event_id", "user", "ip", "logon_type", "process"]
                    .iter()
                    .enumerate()
                {
                    e.push(
                        watchpost_event::Sym::new(f),
                        watchpost_event::Value::Str(format!("value {i}").into()),
                    );
                }
                e.finish();
                e
            }),
            filter: "failed-logon".into(),
            actions: "siem".into(),
            stored: Some(1),
            ticket: Default::default(),
        };
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            let rec = crate::durable::encode(&job, 0);
            bytes = rec.len();
            q.push(&rec).unwrap();
            let (p, _) = q.peek(&mut c).unwrap();
            let _ = crate::durable::decode(&p).unwrap();
            q.pop();
        }
        let per = start.elapsed() / n;
        println!("encode+enqueue+peek+decode+pop of a {bytes}-byte job: {per:?}");
    }
}
