//! Spin-then-sleep, the idle policy of every thread that moves a port's frames (the ptnet sync
//! loops, the virtio-net pair threads, an attached interface's thread): after progress the
//! thread keeps polling for a spin window rather than going to sleep at once, reading the clock
//! only once every [`CLOCK_EVERY`] empty rounds; with busy polling it never sleeps.
//!
//! The state is two words and a counter on the thread's stack, and every method is
//! `#[inline(always)]`: the loop using it compiles to the same code as the policy written out in
//! it (no allocation, no call, the same clock reads).

use std::time::{Duration, Instant};

/// Empty rounds between two reads of the clock while spinning.
pub const CLOCK_EVERY: u32 = 32;

/// Whether an idle frame-moving thread polls again at once or goes to sleep.
#[derive(Clone, Copy, Debug)]
pub struct SpinThenSleep {
    busy_poll: bool,
    spin: Duration,
    /// The end of the spin window, while in one.
    until: Option<Instant>,
    /// Empty rounds since the last progress.
    idle: u32,
}

impl SpinThenSleep {
    /// The policy: `busy_poll` never sleeps; otherwise the thread spins for `spin` after
    /// progress (zero: never).
    #[inline(always)]
    pub fn new(busy_poll: bool, spin: Duration) -> Self {
        Self {
            busy_poll,
            spin,
            until: None,
            idle: 0,
        }
    }

    /// A round that moved something: with `may_spin`, a spin window starts (or starts again).
    #[inline(always)]
    pub fn progress(&mut self, may_spin: bool) {
        if may_spin && !self.spin.is_zero() {
            self.until = Some(Instant::now() + self.spin);
        }
        self.idle = 0;
    }

    /// A round that moved nothing: true to poll again at once (busy polling, or still within the
    /// spin window), false to sleep (the window, if any, ends here). The caller gives the CPU
    /// its spin-loop hint.
    #[inline(always)]
    pub fn empty(&mut self) -> bool {
        if self.busy_poll {
            return true;
        }
        if let Some(t) = self.until {
            self.idle = self.idle.wrapping_add(1);
            if !self.idle.is_multiple_of(CLOCK_EVERY) || Instant::now() < t {
                return true;
            }
            self.until = None;
        }
        false
    }

    /// Polling rather than sleeping for now: busy polling, or within a spin window.
    #[inline(always)]
    pub fn spinning(&self) -> bool {
        self.busy_poll || self.until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_spins_after_progress_until_the_window_ends() {
        let mut p = SpinThenSleep::new(false, Duration::from_millis(20));
        assert!(!p.spinning() && !p.empty(), "no progress yet: sleep");
        p.progress(false);
        assert!(!p.spinning() && !p.empty(), "progress without a spin");
        p.progress(true);
        assert!(p.spinning());
        assert!(p.empty(), "within the window");
        // The clock is read every CLOCK_EVERY rounds only: a window past its end still holds
        // until then.
        std::thread::sleep(Duration::from_millis(30));
        for _ in 2..CLOCK_EVERY {
            assert!(p.empty(), "the clock is not read yet");
        }
        assert!(!p.empty(), "the window is over");
        assert!(!p.spinning() && !p.empty());
    }

    #[test]
    fn zero_spin_sleeps_and_busy_poll_never_does() {
        let mut p = SpinThenSleep::new(false, Duration::ZERO);
        p.progress(true);
        assert!(!p.spinning() && !p.empty());
        let mut p = SpinThenSleep::new(true, Duration::ZERO);
        assert!(p.spinning() && p.empty());
        p.progress(true);
        assert!(p.spinning() && p.empty());
    }
}
