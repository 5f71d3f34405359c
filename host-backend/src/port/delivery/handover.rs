//! The hand-over of an RX ring's host pass between the threads that want one ([`PassLock`]):
//! the producers that just committed slots and the ring's own sync loop (see the parent module's
//! notes on direct delivery).
//!
//! Exactly one thread runs a pass at a time: the state sits behind a mutex that is only ever
//! *tried* on the data path. Whoever finds it taken leaves a request (`wanted`) that the holder
//! serves before it lets go, so nobody blocks or spins on it and no request is lost:
//!
//! - requester R: `wanted.swap(true)`; full fence; `try_lock`.
//! - holder H: `while wanted.swap(false) { pass }`; unlock; full fence; `wanted` still set? take
//!   the lock again (or leave it to whoever has it now).
//!
//! If R's `try_lock` fails, H's fence comes after R's in the fences' total order (otherwise R's
//! `try_lock`, after its fence, would see H's unlock, which precedes H's fence), so H's final load
//! sees R's request, or a later swap by a holder that then ran a pass for it. Every pass that
//! serves a request starts after the swap that consumed it, which reads the request (all these
//! accesses are SeqCst), so the pass sees everything R did before asking: its commits and, for the
//! ring's own thread, the kick it drained. When the state is not lent, a request is dropped: the
//! ring's own thread runs every pass, woken through its eventfd.
//!
//! Every write to `wanted` is a swap, so all of them are totally ordered, each reading the one
//! before. With a plain store for the request, C11's fence rules still order it after an earlier
//! holder's writes, but loom does not model that part of SeqCst fences and reports a request
//! swallowed by an older swap (a false alarm, found by the model below): the swap costs the same
//! `xchg` as a SeqCst store on x86, and the argument no longer leans on that rule.
//!
//! # The model
//!
//! Under `cfg(loom)` the type is built on loom's atomics, fence and mutex, and the tests in
//! `rxring_loom` below explore every interleaving (and every value the C11 model lets a load
//! return) of producers and a ring thread running this very code, checking that no pass is lost
//! (each commit is seen by a pass that starts after it, whoever runs it), that passes exclude each
//! other, that none runs after [`PassLock::take_back`], and that nothing deadlocks or spins. 10-45 s
//! in release mode on 2 busy cores:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p ptnet-backend --release --lib rxring_loom
//! ```
//!
//! Each of these changes makes it fail (tried; see the tests' notes): the holder clearing
//! `wanted` after its pass instead of swapping it before, no re-check after the unlock, and the
//! requester's store and fence weakened to a Relaxed store.

#[cfg(loom)]
use loom::sync::{
    atomic::{fence, AtomicBool, Ordering},
    Mutex, MutexGuard,
};
use std::sync::TryLockError;
#[cfg(not(loom))]
use std::sync::{
    atomic::{fence, AtomicBool, Ordering},
    Mutex, MutexGuard,
};

/// A state lent to whoever asks for a pass over it: passes never block, run one at a time, and
/// a request that finds the state busy is served by its holder (see the module notes).
pub struct PassLock<T> {
    state: Mutex<Option<T>>,
    /// Someone asked for a pass.
    wanted: AtomicBool,
}

impl<T> Default for PassLock<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PassLock<T> {
    /// Nothing lent.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(None),
            wanted: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lends the state: from now on [`Self::run`] runs passes. Not on the data path: may wait
    /// for a pass in progress.
    pub fn lend(&self, state: T) {
        *self.lock() = Some(state);
    }

    /// Takes the lent state back; later [`Self::run`] calls run nothing. Waits for a pass in
    /// progress.
    pub fn take_back(&self) -> Option<T> {
        self.lock().take()
    }

    /// Asks for a pass and, if the state is lent and free, runs `pass` here: once for the
    /// request and once more for each one that came in meanwhile. When another thread holds the
    /// state, that thread runs the pass for us before it lets go. Never blocks. Returns whether
    /// any pass ran here.
    pub fn run(&self, mut pass: impl FnMut(&mut T)) -> bool {
        // A swap, not a store: every write to `wanted` is a read-modify-write, so they are totally
        // ordered and each reads the one before (the same `xchg` as a SeqCst store on x86).
        self.wanted.swap(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let mut ran = false;
        loop {
            let mut guard = match self.state.try_lock() {
                Ok(g) => g,
                // The holder serves our request before it lets go.
                Err(TryLockError::WouldBlock) => return ran,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            let Some(state) = guard.as_mut() else {
                // Not lent: the owner runs its passes itself.
                self.wanted.swap(false, Ordering::SeqCst);
                return ran;
            };
            while self.wanted.swap(false, Ordering::SeqCst) {
                pass(state);
                ran = true;
            }
            // Loom does not switch threads at a mutex's release: this gives it a point to run a
            // request between our last swap and the unlock (nothing outside loom).
            #[cfg(loom)]
            let _ = self.wanted.load(Ordering::Relaxed);
            drop(guard);
            // A request that found the lock taken after our last swap is ours to serve.
            fence(Ordering::SeqCst);
            if !self.wanted.load(Ordering::SeqCst) {
                return ran;
            }
        }
    }
}

/// The loom model (see the module notes). Each pass records the latest commit it saw; the state
/// is a plain counter behind the lock, the commits an atomic as `hwtail` is.
#[cfg(all(test, loom))]
mod rxring_loom {
    use crate::port::delivery::handover::PassLock;
    use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    #[derive(Default)]
    struct Host {
        /// The highest commit count a pass has seen.
        seen: u32,
        passes: u32,
    }

    struct Ring {
        lock: PassLock<Host>,
        /// Commits, published as `hwtail` is (Release; the pass reads it with Acquire).
        committed: AtomicU32,
        /// Set while a pass runs: two at once is a bug.
        in_pass: AtomicBool,
        /// Set once the ring thread has its state back: no pass may start after.
        taken: AtomicBool,
    }

    impl Ring {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                lock: PassLock::new(),
                committed: AtomicU32::new(0),
                in_pass: AtomicBool::new(false),
                taken: AtomicBool::new(false),
            })
        }

        fn pass(&self) -> bool {
            self.lock.run(|h| {
                assert!(
                    !self.in_pass.swap(true, Ordering::SeqCst),
                    "two passes at once"
                );
                assert!(!self.taken.load(Ordering::SeqCst), "a pass after take_back");
                h.seen = h.seen.max(self.committed.load(Ordering::Acquire));
                h.passes += 1;
                self.in_pass.store(false, Ordering::SeqCst);
            })
        }

        /// A producer: commits (the counter stands for hwtail) and asks for a pass.
        fn produce(&self) {
            self.committed.fetch_add(1, Ordering::Release);
            self.pass();
        }
    }

    /// Two producers commit and ask for a pass while the ring's thread runs one for a kick: the
    /// last commit is seen by some pass, whoever ran it. Three threads: explored with at most 3
    /// preemptions (every schedule of the other two tests is explored).
    #[test]
    fn no_lost_pass_two_producers_and_the_ring_thread() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let r = Ring::new();
            r.lock.lend(Host::default());
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let r = r.clone();
                    thread::spawn(move || r.produce())
                })
                .collect();
            r.pass();
            for t in ts {
                t.join().unwrap();
            }
            let h = r.lock.take_back().unwrap();
            assert_eq!(h.seen, 2, "a commit no pass saw: a lost pass");
            assert!(h.passes >= 1);
        });
    }

    /// One producer asks twice in a row, so requests come in while the other one's pass runs
    /// (the holder's swap loop and its re-check after the unlock).
    #[test]
    fn no_lost_pass_back_to_back_requests() {
        loom::model(|| {
            let r = Ring::new();
            r.lock.lend(Host::default());
            let t = {
                let r = r.clone();
                thread::spawn(move || {
                    r.produce();
                    r.produce();
                })
            };
            r.produce();
            t.join().unwrap();
            let h = r.lock.take_back().unwrap();
            assert_eq!(h.seen, 3, "a commit no pass saw: a lost pass");
        });
    }

    /// The ring's thread stops while a producer commits: it takes its state back (waiting for a
    /// pass in progress), no pass runs after that, nothing deadlocks, and its own last pass (on
    /// the state it holds, as the sync loop's is) sees every commit whose request a pass served
    /// or that came before the take-back.
    #[test]
    fn no_pass_after_take_back() {
        loom::model(|| {
            let r = Ring::new();
            r.lock.lend(Host::default());
            let t = {
                let r = r.clone();
                thread::spawn(move || {
                    r.produce();
                    r.produce();
                })
            };
            r.pass();
            let mut h = r.lock.take_back().unwrap();
            r.taken.store(true, Ordering::SeqCst);
            assert!(!r.in_pass.load(Ordering::SeqCst), "take_back during a pass");
            // Passes asked for now run nowhere, and return at once.
            assert!(!r.lock.run(|_| unreachable!("a pass over a state not lent")));
            h.seen = h.seen.max(r.committed.load(Ordering::Acquire));
            t.join().unwrap();
            // Lent again (the next frontend's loop): its first pass sees everything.
            r.taken.store(false, Ordering::SeqCst);
            r.lock.lend(h);
            r.pass();
            assert_eq!(r.lock.take_back().unwrap().seen, 2);
        });
    }
}
