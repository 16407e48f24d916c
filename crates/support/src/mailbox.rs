//! A bounded queue to a background thread that the event path fills without waking it
//! before the event's action has run.
//!
//! The event store's writer and the thread of the per-firing log lines are fed from the
//! thread that judges events. With a channel (`crossbeam-channel`, `std::sync::mpsc`)
//! every send to a parked receiver wakes it at once: on a lone event the store writer was
//! woken *before* the UDP `send()` of the event's syslog packet (a wake-up costs the
//! sender tens of microseconds in a virtual machine), and both receivers then spun on
//! `sched_yield` waiting for more, taking the core that the SIEM's side of the packet
//! needed. Neither channel can hold a wake-up back, or let a receiver ask to be woken
//! only once `n` items wait; hence this small queue (a `Mutex` and a `Condvar`):
//!
//! * [`Mailbox::push`] never blocks: a full or closed mailbox gives the item back.
//! * Inside [`defer_wakes`]'s scope (a source thread's poll: read, judge, send), pushes do
//!   not wake the receiver; the wake happens once, when the outermost scope ends. A
//!   mailbox half full wakes its receiver at once anyway, so a burst never fills it
//!   while the wake is held.
//! * [`Mailbox::recv`] waits until at least `want` items wait (or the deadline, or the
//!   mailbox is closed and empty), so a writer collecting a batch is not woken per item.
//! * [`Mailbox::push_now`] wakes the receiver whatever it waits for (a flush request).
//!
//! ```
//! use std::time::{Duration, Instant};
//! let (tx, rx) = watchpost_support::mailbox::<u32>(8);
//! {
//!     let _held = watchpost_support::defer_wakes();
//!     tx.push(1).unwrap();
//!     tx.push(2).unwrap();
//! } // the receiver is woken here, once
//! let mut got = Vec::new();
//! let r = rx.recv(&mut got, 10, 1, Some(Instant::now() + Duration::from_secs(1)));
//! assert_eq!(r, watchpost_support::Recv::Items);
//! assert_eq!(got, [1, 2]);
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::lock;

/// Why [`Mailbox::push`] gave an item back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The mailbox holds its capacity.
    Full,
    /// The receiving side is gone.
    Closed,
}

/// What [`Receiver::recv`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// Items were moved into the buffer (fewer than `want` when the deadline passed or
    /// the mailbox was closed meanwhile).
    Items,
    /// The deadline passed with nothing waiting.
    Timeout,
    /// Every sender is gone (or [`Mailbox::close`] was called) and nothing waits.
    Closed,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    /// The receiver sleeps until this many items wait (0: it does not sleep).
    waiting_for: usize,
    /// A push inside a [`defer_wakes`] scope left the receiver asleep.
    wake_held: bool,
    /// [`Mailbox::push_now`]: the receiver takes what waits, however few.
    kicked: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
}

/// A wake-up held back by [`defer_wakes`].
trait Wake: Send + Sync {
    fn wake_held(&self);
}

impl<T: Send> Wake for Inner<T> {
    fn wake_held(&self) {
        let mut s = lock(&self.state);
        if std::mem::take(&mut s.wake_held) && s.waiting_for > 0 {
            drop(s);
            self.ready.notify_one();
        }
    }
}

thread_local! {
    /// Depth of nested [`defer_wakes`] scopes on this thread, and the mailboxes whose
    /// receivers wait for the end of the outermost one.
    static DEFERRED: RefCell<(usize, Vec<Arc<dyn Wake>>)> = const { RefCell::new((0, Vec::new())) };
}

/// Holds back the wake-ups of pushes on this thread until the returned guard (the
/// outermost, when nested) is dropped.
pub fn defer_wakes() -> DeferWakes {
    DEFERRED.with(|d| d.borrow_mut().0 += 1);
    DeferWakes {
        _not_send: std::marker::PhantomData,
    }
}

/// See [`defer_wakes`].
#[must_use = "wakes are held back only while the guard lives"]
pub struct DeferWakes {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for DeferWakes {
    fn drop(&mut self) {
        let held = DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            d.0 = d.0.saturating_sub(1);
            if d.0 == 0 {
                std::mem::take(&mut d.1)
            } else {
                Vec::new()
            }
        });
        for m in held {
            m.wake_held();
        }
    }
}

fn deferring() -> bool {
    DEFERRED.with(|d| d.borrow().0 > 0)
}

/// A bounded mailbox: the sending half ([`Mailbox`], cloneable) and the receiving half
/// ([`Receiver`]). See the [module documentation](self).
pub fn mailbox<T: Send + 'static>(capacity: usize) -> (Mailbox<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
            waiting_for: 0,
            wake_held: false,
            kicked: false,
        }),
        ready: Condvar::new(),
        capacity: capacity.max(1),
    });
    (
        Mailbox {
            inner: inner.clone(),
            senders: Arc::new(SenderCount(inner.clone())),
        },
        Receiver { inner },
    )
}

/// Closes the mailbox when the last sender is dropped.
struct SenderCount<T: Send + 'static>(Arc<Inner<T>>);

impl<T: Send + 'static> Drop for SenderCount<T> {
    fn drop(&mut self) {
        close(&self.0);
    }
}

fn close<T>(inner: &Inner<T>) {
    lock(&inner.state).closed = true;
    inner.ready.notify_all();
}

/// The sending half of a [`mailbox`].
pub struct Mailbox<T: Send + 'static> {
    inner: Arc<Inner<T>>,
    senders: Arc<SenderCount<T>>,
}

impl<T: Send + 'static> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            inner: self.inner.clone(),
            senders: self.senders.clone(),
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

impl<T: Send + 'static> Mailbox<T> {
    /// Queues `item` without blocking; the receiver is woken now, or at the end of the
    /// [`defer_wakes`] scope this thread is in.
    pub fn push(&self, item: T) -> Result<(), (PushError, T)> {
        self.push_with(item, false)
    }

    /// Queues `item` and wakes the receiver now, whatever it waits for.
    pub fn push_now(&self, item: T) -> Result<(), (PushError, T)> {
        self.push_with(item, true)
    }

    fn push_with(&self, item: T, now: bool) -> Result<(), (PushError, T)> {
        let mut s = lock(&self.inner.state);
        if s.closed {
            return Err((PushError::Closed, item));
        }
        if s.items.len() >= self.inner.capacity {
            return Err((PushError::Full, item));
        }
        s.items.push_back(item);
        let n = s.items.len();
        let asleep = s.waiting_for > 0;
        let wanted = n >= s.waiting_for || n * 2 >= self.inner.capacity;
        let wake = asleep && (now || (wanted && (!deferring() || n * 2 >= self.inner.capacity)));
        if asleep && !wake && wanted && !s.wake_held {
            s.wake_held = true;
            drop(s);
            let me: Arc<dyn Wake> = self.inner.clone();
            DEFERRED.with(|d| d.borrow_mut().1.push(me));
            return Ok(());
        }
        s.kicked |= now;
        if wake {
            s.waiting_for = 0;
            drop(s);
            self.inner.ready.notify_one();
        }
        Ok(())
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the mailbox for every sender: further pushes fail, the receiver takes what
    /// waits and then sees [`Recv::Closed`].
    pub fn close(&self) {
        close(&self.inner);
    }
}

/// The receiving half of a [`mailbox`].
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

impl<T> Receiver<T> {
    /// Moves up to `max` waiting items into `out`, after waiting until `want` items wait
    /// (at least 1; or the mailbox is half full, or an item came with
    /// [`Mailbox::push_now`]), `deadline` passes (`None`: no deadline) or the mailbox is
    /// closed.
    pub fn recv(
        &self,
        out: &mut Vec<T>,
        max: usize,
        want: usize,
        deadline: Option<Instant>,
    ) -> Recv {
        let want = want.clamp(1, self.inner.capacity);
        let mut s = lock(&self.inner.state);
        loop {
            let n = s.items.len();
            if n >= want
                || n * 2 >= self.inner.capacity
                || (n > 0 && (s.closed || std::mem::take(&mut s.kicked)))
            {
                break;
            }
            if s.closed {
                return Recv::Closed;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => break,
                Some(d) => Some(d - now),
                None => None,
            };
            s.waiting_for = want;
            s = match left {
                Some(left) => {
                    self.inner
                        .ready
                        .wait_timeout(s, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                None => self
                    .inner
                    .ready
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
            s.waiting_for = 0;
        }
        s.waiting_for = 0;
        if s.items.is_empty() {
            return Recv::Timeout;
        }
        let n = s.items.len().min(max.max(1));
        out.extend(s.items.drain(..n));
        if s.items.is_empty() {
            s.kicked = false;
        }
        Recv::Items
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        lock(&self.inner.state).closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(5))
    }

    #[test]
    fn full_and_closed_give_the_item_back() {
        let (tx, rx) = mailbox::<u32>(2);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert_eq!(tx.push(3), Err((PushError::Full, 3)));
        let mut got = Vec::new();
        assert_eq!(rx.recv(&mut got, 1, 1, soon()), Recv::Items);
        assert_eq!(got, [1]);
        tx.push(3).unwrap();
        drop(rx);
        assert_eq!(tx.push(4), Err((PushError::Closed, 4)));
    }

    #[test]
    fn the_last_sender_closes() {
        let (tx, rx) = mailbox::<u32>(4);
        let tx2 = tx.clone();
        tx.push(7).unwrap();
        drop(tx);
        drop(tx2);
        let mut got = Vec::new();
        assert_eq!(rx.recv(&mut got, 10, 3, None), Recv::Items);
        assert_eq!(got, [7]);
        assert_eq!(rx.recv(&mut got, 10, 1, None), Recv::Closed);
    }

    #[test]
    fn timeout_with_nothing_and_partial_batch_at_the_deadline() {
        let (tx, rx) = mailbox::<u32>(8);
        let mut got = Vec::new();
        let d = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(rx.recv(&mut got, 10, 1, d), Recv::Timeout);
        tx.push(1).unwrap();
        let d = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(rx.recv(&mut got, 10, 5, d), Recv::Items);
        assert_eq!(got, [1]);
    }

    /// Waits until the receiver thread sleeps on the mailbox.
    fn asleep<T: Send>(tx: &Mailbox<T>) {
        while lock(&tx.inner.state).waiting_for == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_deferred_push_wakes_the_receiver_only_when_the_scope_ends() {
        let (tx, rx) = mailbox::<u32>(100);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.recv(&mut got, 10, 1, None);
            seen_tx.send(got).unwrap();
        });
        asleep(&tx);
        {
            let _held = defer_wakes();
            tx.push(1).unwrap();
            {
                let _inner = defer_wakes();
                tx.push(2).unwrap();
            }
            // The inner scope ended, the outer did not: the receiver still sleeps.
            assert!(lock(&tx.inner.state).waiting_for > 0);
            assert!(lock(&tx.inner.state).wake_held);
            assert!(seen_rx.recv_timeout(Duration::from_millis(50)).is_err());
        }
        assert_eq!(
            seen_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            [1, 2]
        );
        t.join().unwrap();
    }

    #[test]
    fn half_full_wakes_even_while_deferred() {
        let (tx, rx) = mailbox::<u32>(4);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.recv(&mut got, 10, 1, None);
            seen_tx.send(got.len()).unwrap();
        });
        asleep(&tx);
        let _held = defer_wakes();
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert!(seen_rx.recv_timeout(Duration::from_secs(5)).unwrap() >= 2);
        t.join().unwrap();
    }

    #[test]
    fn a_receiver_waiting_for_many_is_woken_at_that_many_or_by_push_now() {
        let (tx, rx) = mailbox::<u32>(100);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            for want in [3, 10] {
                let mut got = Vec::new();
                rx.recv(&mut got, 100, want, None);
                seen_tx.send(got).unwrap();
            }
        });
        asleep(&tx);
        tx.push(1).unwrap();
        tx.push(2).unwrap();
        assert!(seen_rx.recv_timeout(Duration::from_millis(50)).is_err());
        tx.push(3).unwrap();
        assert_eq!(
            seen_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            [1, 2, 3]
        );
        asleep(&tx);
        tx.push(4).unwrap();
        tx.push_now(5).unwrap();
        assert_eq!(
            seen_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            [4, 5]
        );
        t.join().unwrap();
    }
}
