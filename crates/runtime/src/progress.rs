//! Which of a source's positions may be saved: those whose records' actions completed.
//!
//! A source task hands each `poll` batch of records to the pipeline under one [`Batch`];
//! every action job made from those records carries a [`Ticket`] of it (a clone of an
//! `Arc`). A job's ticket is dropped when its action is done with it: sent (UDP syslog,
//! on the source thread or the worker), run, appended to the action's on-disk retry queue,
//! or dropped by a full queue. When the source thread has sealed the batch with the
//! positions it reached ([`Mark`]) and the last ticket is gone, the batch is complete.
//! Batches complete in any order; the [`Ledger`] moves the saved progress only over a
//! prefix of complete batches, writes the newest such mark to the source's progress file
//! (one `pwrite`, kept by the kernel when the process dies) on the thread that completed
//! it, and offers it to the source thread for the durable checkpoint file.
//!
//! So after a `kill -9` a restarted source reads again at most the batches that were
//! still in flight: records handed out whose actions had not finished, plus the batch
//! being handed out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use watchpost_actions::Ticket;
use watchpost_sources::progress::{Mark, ProgressFile};
use watchpost_support::lock;

/// The progress of one source. See the [module documentation](self).
#[derive(Debug)]
pub struct Ledger {
    state: Mutex<State>,
    file: Mutex<ProgressFile>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Batches not yet part of the complete prefix, oldest first.
    pending: VecDeque<Slot>,
    /// The newest mark of the complete prefix.
    completed: Option<Mark>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    mark: Option<Mark>,
    done: bool,
}

/// One batch of records: its tickets go with the action jobs; it completes when the last
/// of them is dropped after the source sealed it.
#[derive(Debug)]
pub struct Batch {
    ledger: Arc<Ledger>,
    id: u64,
}

impl Ledger {
    /// A ledger writing to `file`.
    pub fn new(file: ProgressFile) -> Arc<Ledger> {
        Arc::new(Ledger {
            state: Mutex::new(State::default()),
            file: Mutex::new(file),
        })
    }

    /// Starts a batch.
    pub fn begin(self: &Arc<Self>) -> Arc<Batch> {
        let mut s = lock(&self.state);
        let id = s.next;
        s.next += 1;
        s.pending.push_back(Slot {
            id,
            mark: None,
            done: false,
        });
        Arc::new(Batch {
            ledger: self.clone(),
            id,
        })
    }

    /// Records the positions the source reached at the end of `batch`.
    pub fn seal(&self, batch: &Batch, mark: Mark) {
        let mut s = lock(&self.state);
        if let Some(slot) = s.pending.iter_mut().find(|x| x.id == batch.id) {
            slot.mark = Some(mark);
        }
    }

    /// The newest mark whose batch and every batch before it completed.
    pub fn completed(&self) -> Option<Mark> {
        lock(&self.state).completed.clone()
    }

    fn finish(&self, id: u64) {
        let newest = {
            let mut s = lock(&self.state);
            if let Some(slot) = s.pending.iter_mut().find(|x| x.id == id) {
                slot.done = true;
            }
            let mut newest = None;
            while s.pending.front().is_some_and(|x| x.done) {
                if let Some(Slot { mark: Some(m), .. }) = s.pending.pop_front() {
                    newest = Some(m);
                }
            }
            if let Some(m) = &newest {
                s.completed = Some(m.clone());
            }
            newest
        };
        // Outside the state lock: the source thread never waits for this write. Marks
        // completing out of order on two threads are sorted out by their numbers.
        if let Some(m) = newest {
            lock(&self.file).write(&m);
        }
    }
}

impl Batch {
    /// A ticket for an action job made from this batch's records.
    pub fn ticket(self: &Arc<Self>) -> Ticket {
        Ticket::new(self.clone())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.ledger.finish(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchpost_sources::progress::progress_path;

    fn mark(seq: u64) -> Mark {
        Mark {
            seq,
            bytes: format!("m{seq}").as_bytes().into(),
        }
    }

    #[test]
    fn progress_moves_over_complete_batches_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = progress_path(&dir.path().join("src.json"));
        let ledger = Ledger::new(ProgressFile::open(&path).unwrap());
        let (a, b, c) = (ledger.begin(), ledger.begin(), ledger.begin());
        let (ta, tb) = (a.ticket(), b.ticket());
        ledger.seal(&a, mark(1));
        ledger.seal(&b, mark(2));
        ledger.seal(&c, mark(3));
        drop((a, b, c));
        // Batch c had no jobs, but a and b still have theirs in flight.
        assert_eq!(ledger.completed(), None);
        drop(tb);
        assert_eq!(ledger.completed(), None);
        drop(ta);
        assert_eq!(ledger.completed(), Some(mark(3)));
        let text = std::fs::read(&path).unwrap();
        assert!(text.ends_with(b"m3"), "{text:?}");
    }

    #[test]
    fn an_unsealed_batch_holds_the_progress() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(ProgressFile::open(&dir.path().join("p")).unwrap());
        let a = ledger.begin();
        let t = a.ticket();
        ledger.seal(&a, mark(1));
        drop(a);
        let b = ledger.begin();
        drop(t);
        assert_eq!(ledger.completed(), Some(mark(1)));
        ledger.seal(&b, mark(2));
        drop(b);
        assert_eq!(ledger.completed(), Some(mark(2)));
    }
}
