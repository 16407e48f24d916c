//! One followed file: its open handle, positions, read buffer and framing state.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::checkpoint::Entry;
use super::frame::{TextEnc, after_last_lf, detect, find_lf, line_bytes};
use super::identity::{
    FP_BYTES, FileKey, Fingerprint, fnv1a, open_shared, read_at, read_full_at, read_head,
};
use super::{Record, TailStats};
use crate::framer::{Frame, FrameFn};

/// Bytes read per `read` call.
pub(crate) const CHUNK: usize = 64 * 1024;

/// How records are cut, resolved from the options.
#[derive(Clone, Copy)]
pub(crate) enum Cut {
    /// Lines; `Some` forces an encoding, `None` detects it from a BOM.
    Lines(Option<TextEnc>),
    /// Binary records cut by a framer.
    Binary(FrameFn),
}

impl Cut {
    fn binary(self) -> bool {
        matches!(self, Cut::Binary(_))
    }
}

/// What reading needs from the tailer.
pub(crate) struct Ctx<'a> {
    pub cut: Cut,
    pub max_record: usize,
    pub stats: &'a mut TailStats,
    pub scratch: &'a mut Vec<u8>,
    pub now: Instant,
}

/// Bytes being dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    No,
    /// The rest of an oversized line, up to and including its line feed.
    ToLf,
    /// The rest of an oversized binary record.
    Bytes(u64),
}

/// A file being followed.
pub(crate) struct Followed {
    pub key: FileKey,
    /// Where the file was last seen.
    pub path: PathBuf,
    file: File,
    pub fp: Fingerprint,
    /// Offset of the first byte not yet delivered: always a record boundary. Checkpointed.
    pub pos: u64,
    /// File offset of `buf[head]`.
    buf_off: u64,
    buf: Vec<u8>,
    head: usize,
    end: usize,
    skip: Skip,
    /// Encoding and BOM length, once known.
    enc: Option<(TextEnc, usize)>,
    /// Found at a path matching the patterns by the last scan (else rotated away or deleted).
    pub matched: bool,
    /// File size at the last read.
    size: u64,
    /// Modification time at the last read (a change without growth is checked too).
    mtime: Option<SystemTime>,
    /// When data last arrived (or the file was opened).
    pub last_data: Instant,
}

/// Why reading restarted at offset 0.
const TRUNCATED: &str = "file truncated; reading it again from the start";
const REWRITTEN: &str = "file content replaced in place; reading it again from the start";

impl Followed {
    /// A file opened at `path`, whose first bytes are `head`, to be read from `pos`.
    pub(crate) fn new(
        key: FileKey,
        path: PathBuf,
        file: File,
        head: &[u8],
        pos: u64,
        cut: Cut,
        now: Instant,
    ) -> Followed {
        let mut f = Followed {
            key,
            path,
            file,
            fp: Fingerprint::of_head(head, cut.binary()),
            pos,
            buf_off: pos,
            buf: Vec::new(),
            head: 0,
            end: 0,
            skip: Skip::No,
            enc: None,
            matched: true,
            size: pos,
            mtime: None,
            last_data: now,
        };
        f.enc = encoding_of(head, cut, false);
        f
    }

    /// Starts after an oversized line in progress (used when starting at the end of a file).
    pub(crate) fn skip_to_line_end(&mut self) {
        self.skip = Skip::ToLf;
    }

    /// The checkpoint entry for this file.
    pub(crate) fn entry(&self) -> Entry {
        Entry {
            key: self.key,
            fp: self.fp,
            pos: self.pos,
            path: self.path.to_string_lossy().into_owned(),
        }
    }

    fn read_end(&self) -> u64 {
        self.buf_off + (self.end - self.head) as u64
    }

    /// Read up to the size seen last (nothing new was there then).
    pub(crate) fn drained(&self) -> bool {
        self.read_end() >= self.size
    }

    fn consume(&mut self, n: usize) {
        self.head += n;
        self.buf_off += n as u64;
    }

    fn restart(&mut self, why: &'static str, cx: &mut Ctx<'_>) {
        tracing::info!(path = %self.path.display(), at = self.read_end(), "tail: {why}");
        cx.stats.truncations += 1;
        self.pos = 0;
        self.buf_off = 0;
        self.head = 0;
        self.end = 0;
        self.skip = Skip::No;
        self.enc = None;
        self.fp = Fingerprint::default();
    }

    /// Whether the file still holds the content it was opened with (copytruncate and in-place
    /// rewrites leave the inode but change the first bytes); extends an incomplete fingerprint.
    fn same_content(&mut self, size: u64, cx: &Ctx<'_>) -> io::Result<bool> {
        if self.fp.complete() && self.enc.is_some() {
            let mut b = [0u8; FP_BYTES];
            let n = read_full_at(&self.file, &mut b, self.fp.start)?;
            return Ok(n == FP_BYTES && fnv1a(&b) == self.fp.hash);
        }
        let head = read_head(&self.file, size)?;
        let newer = Fingerprint::of_head(&head, cx.cut.binary());
        if !self.fp.consistent_with(&newer, &head) {
            return Ok(false);
        }
        self.fp = newer;
        if self.enc.is_none() {
            self.enc = encoding_of(&head, cx.cut, false);
        }
        Ok(true)
    }

    /// Checks that the bytes already read are still the file's (else restarts at 0: truncation,
    /// copytruncate, in-place rewrite). Returns the current size.
    pub(crate) fn revalidate(&mut self, cx: &mut Ctx<'_>) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        let (size, mtime) = (meta.len(), meta.modified().ok());
        if size < self.read_end() {
            self.restart(TRUNCATED, cx);
        }
        // Written to without growing: truncated and refilled to the same size, or a header
        // updated in place.
        let touched = size == self.read_end() && size > 0 && mtime != self.mtime;
        if (size > self.read_end() || touched) && !self.same_content(size, cx)? {
            self.restart(REWRITTEN, cx);
            self.same_content(size, cx)?;
        }
        self.mtime = mtime;
        Ok(size)
    }

    /// Reads what the file holds now, at most about `budget` bytes, delivering complete records.
    /// Returns whether unread data remains because the budget ran out.
    pub(crate) fn read(
        &mut self,
        cx: &mut Ctx<'_>,
        sink: &mut dyn FnMut(Record<'_>),
        budget: u64,
    ) -> io::Result<bool> {
        self.size = self.revalidate(cx)?;
        let mut left = budget;
        while self.read_end() < self.size && left > 0 {
            let n = self.fill()?;
            if n == 0 {
                break;
            }
            self.last_data = cx.now;
            cx.stats.bytes_read += n as u64;
            left = left.saturating_sub(n as u64);
            self.size = self.size.max(self.read_end());
            let at_eof = self.read_end() >= self.size;
            self.frame(cx, sink, at_eof);
        }
        Ok(self.read_end() < self.size)
    }

    /// Reads one chunk after the buffered bytes. Returns the count (0 at end of file).
    fn fill(&mut self) -> io::Result<usize> {
        if self.head > 0 {
            self.buf.copy_within(self.head..self.end, 0);
            self.end -= self.head;
            self.head = 0;
        }
        if self.buf.len() < self.end + CHUNK {
            self.buf.resize(self.end + CHUNK, 0);
        }
        let at = self.read_end();
        loop {
            match read_at(&self.file, &mut self.buf[self.end..self.end + CHUNK], at) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Shrinks a buffer that grew for a long record once it is empty again.
    pub(crate) fn trim(&mut self) {
        if self.head == self.end && self.buf.len() > 2 * CHUNK {
            self.buf = Vec::new();
            self.head = 0;
            self.end = 0;
        }
    }

    fn frame(&mut self, cx: &mut Ctx<'_>, sink: &mut dyn FnMut(Record<'_>), at_eof: bool) {
        match cx.cut {
            Cut::Binary(frame) => self.frame_binary(cx, sink, frame, at_eof),
            Cut::Lines(_) => {
                let Some((enc, bom)) = self.enc else { return };
                if self.buf_off < bom as u64 {
                    let need = bom - self.buf_off as usize;
                    if self.end - self.head < need {
                        return;
                    }
                    self.consume(need);
                    self.pos = self.buf_off;
                }
                self.frame_lines(cx, sink, enc);
            }
        }
    }

    fn oversized(&self, cx: &mut Ctx<'_>, at: u64) {
        cx.stats.oversized_skipped += 1;
        tracing::warn!(path = %self.path.display(), offset = at, max = cx.max_record, "tail: record longer than max_record_bytes skipped");
    }

    fn frame_lines(&mut self, cx: &mut Ctx<'_>, sink: &mut dyn FnMut(Record<'_>), enc: TextEnc) {
        let unit = enc.unit();
        while self.head < self.end {
            let data = &self.buf[self.head..self.end];
            let lf = find_lf(data, enc);
            match (self.skip, lf) {
                (Skip::ToLf, Some(i)) => {
                    self.consume(i + unit);
                    self.skip = Skip::No;
                    self.pos = self.buf_off;
                }
                (_, None) => {
                    if self.skip == Skip::No && data.len() > cx.max_record {
                        self.oversized(cx, self.buf_off);
                        self.skip = Skip::ToLf;
                    }
                    if self.skip == Skip::ToLf {
                        let whole = data.len() - data.len() % unit;
                        self.consume(whole);
                    }
                    break;
                }
                (_, Some(i)) => {
                    if i > cx.max_record {
                        self.oversized(cx, self.buf_off);
                    } else {
                        let bytes = line_bytes(&data[..i], enc, cx.scratch);
                        sink(Record {
                            path: &self.path,
                            offset: self.buf_off,
                            bytes,
                            is_header: false,
                        });
                        cx.stats.records += 1;
                    }
                    self.consume(i + unit);
                    self.pos = self.buf_off;
                }
            }
        }
    }

    fn frame_binary(
        &mut self,
        cx: &mut Ctx<'_>,
        sink: &mut dyn FnMut(Record<'_>),
        frame: FrameFn,
        at_eof: bool,
    ) {
        while self.head < self.end {
            let data = &self.buf[self.head..self.end];
            if let Skip::Bytes(left) = self.skip {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                self.consume(n);
                self.skip = if left > n as u64 {
                    Skip::Bytes(left - n as u64)
                } else {
                    Skip::No
                };
                if self.skip == Skip::No {
                    self.pos = self.buf_off;
                }
                continue;
            }
            let (n, is_header) = match frame(data, self.buf_off == 0, at_eof) {
                Frame::Header(n) => (n, true),
                Frame::Record(n) => (n, false),
                Frame::Skip(n) => {
                    self.consume(n.clamp(1, data.len()));
                    self.pos = self.buf_off;
                    continue;
                }
                Frame::NeedMore => {
                    if data.len() > cx.max_record {
                        // No length within max_record_bytes: framing is lost; drop what is here.
                        self.oversized(cx, self.buf_off);
                        self.consume(data.len());
                        self.pos = self.buf_off;
                    }
                    break;
                }
            };
            if n == 0 {
                cx.stats.errors += 1;
                tracing::warn!(path = %self.path.display(), offset = self.buf_off, "tail: framer answered an empty record; byte dropped");
                self.consume(1);
                self.pos = self.buf_off;
            } else if n > cx.max_record {
                self.oversized(cx, self.buf_off);
                self.skip = Skip::Bytes(n as u64);
            } else if n > data.len() {
                break;
            } else {
                sink(Record {
                    path: &self.path,
                    offset: self.buf_off,
                    bytes: &data[..n],
                    is_header,
                });
                cx.stats.records += 1;
                self.consume(n);
                self.pos = self.buf_off;
            }
        }
    }

    /// Delivers what is left when the file is closed for good (rotated away or deleted, read to
    /// its end and idle): a last line without terminator, or the rest of a binary record.
    pub(crate) fn finish(&mut self, cx: &mut Ctx<'_>, sink: &mut dyn FnMut(Record<'_>)) {
        if self.head == self.end || self.skip != Skip::No {
            return;
        }
        let data = &self.buf[self.head..self.end];
        let bytes = match cx.cut {
            Cut::Binary(_) => data,
            Cut::Lines(_) => {
                let enc = match self.enc {
                    Some((enc, bom)) if self.buf_off >= bom as u64 => enc,
                    Some(_) => return,
                    None => match encoding_of(data, cx.cut, true) {
                        Some((enc, 0)) => enc,
                        _ => return,
                    },
                };
                line_bytes(data, enc, cx.scratch)
            }
        };
        sink(Record {
            path: &self.path,
            offset: self.buf_off,
            bytes,
            is_header: false,
        });
        cx.stats.records += 1;
        let n = self.end - self.head;
        self.consume(n);
        self.pos = self.buf_off;
    }

    /// Where reading starts when a file is first seen and configured to start at its end:
    /// after the last line feed near the end (so a line being written is delivered whole),
    /// or at the end while skipping the rest of a very long line in progress.
    pub(crate) fn seek_end(&mut self, cut: Cut) -> io::Result<()> {
        let size = self.file.metadata()?.len();
        let (enc, bom) = self.enc.unwrap_or((TextEnc::Bytes, 0));
        let to = |f: &mut Followed, at: u64| {
            f.pos = at;
            f.buf_off = at;
            f.size = at;
        };
        if cut.binary() || size <= bom as u64 {
            to(self, size);
            return Ok(());
        }
        let mut from = size.saturating_sub(CHUNK as u64).max(bom as u64);
        from += (from - bom as u64) % enc.unit() as u64;
        let mut tail = vec![0; usize::try_from(size - from).unwrap_or(0)];
        let n = read_full_at(&self.file, &mut tail, from)?;
        tail.truncate(n);
        match after_last_lf(&tail, enc) {
            Some(j) => to(self, from + j as u64),
            None if from == bom as u64 => to(self, 0),
            None => {
                to(self, size);
                self.skip_to_line_end();
            }
        }
        Ok(())
    }

    /// The current identity of the file at `path`, for platforms where keys can collide:
    /// whether the file there has this file's content.
    pub(crate) fn content_at(&self, path: &Path, binary: bool) -> bool {
        let Ok(file) = open_shared(path) else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        let Ok(head) = read_head(&file, meta.len()) else {
            return false;
        };
        self.fp
            .consistent_with(&Fingerprint::of_head(&head, binary), &head)
    }
}

/// The encoding of a file with first bytes `head` (`whole`: nothing more will come).
fn encoding_of(head: &[u8], cut: Cut, whole: bool) -> Option<(TextEnc, usize)> {
    match cut {
        Cut::Binary(_) => Some((TextEnc::Bytes, 0)),
        Cut::Lines(forced) => detect(head, forced, whole),
    }
}
