//! The four functions (tx, rx, ping, pong) and the periodic reports.

use crate::args::Args;
use ptnet_driver::summary::{Mode, PktGenSummary, Rtt};
use ptnet_driver::testframe::{verify, FrameBuilder, SeqTracker, Verdict, MAX_STREAMS};
use ptnet_driver::{Error, Port, RingId, TxRing};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM: stop, print the summary, detach cleanly.
static STOP: AtomicBool = AtomicBool::new(false);

pub(crate) extern "C" fn on_stop_signal(
    _: libc::c_int,
    _: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

#[inline]
fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

#[derive(Default, Clone, Copy)]
struct Counters {
    packets: u64,
    bytes: u64,
}

struct Reporter {
    start: Instant,
    interval: Option<Duration>,
    next: Instant,
    last: Counters,
    last_t: Instant,
}

impl Reporter {
    fn new(report_ms: u64) -> Self {
        let now = Instant::now();
        let interval = (report_ms > 0).then(|| Duration::from_millis(report_ms));
        Self {
            start: now,
            interval,
            next: now + interval.unwrap_or(Duration::from_secs(3600 * 24 * 365)),
            last: Counters::default(),
            last_t: now,
        }
    }

    /// Restarts the clock (when the first packet shows up, for instance).
    fn restart(&mut self, now: Instant) {
        self.start = now;
        self.last_t = now;
        if let Some(i) = self.interval {
            self.next = now + i;
        }
    }

    /// Prints a periodic line if one is due.
    #[inline]
    fn tick(&mut self, now: Instant, c: Counters) {
        if now < self.next {
            return;
        }
        let dt = now.duration_since(self.last_t).as_secs_f64();
        let pps = (c.packets - self.last.packets) as f64 / dt;
        let bps = (c.bytes - self.last.bytes) as f64 * 8.0 / dt;
        eprintln!(
            "[{:6.3}s] {:.3} Mpps {:.3} Gbps",
            now.duration_since(self.start).as_secs_f64(),
            pps / 1e6,
            bps / 1e9
        );
        self.last = c;
        self.last_t = now;
        self.next = now + self.interval.unwrap_or(Duration::from_secs(3600));
    }

    fn time_to_next(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }
}

/// The sender of `--fast`: one fixed frame, written into each buffer of the port's memory the
/// first time the buffer turns up in a TX slot (one bit per buffer remembers which were).
struct Prepared {
    frame: Vec<u8>,
    done: Vec<u64>,
}

impl Prepared {
    fn new(frame: &[u8], num_bufs: u32) -> Self {
        Self {
            frame: frame.to_vec(),
            done: vec![0; (num_bufs as usize).div_ceil(64)],
        }
    }

    /// Queues up to `n` frames on `tx`; returns how many.
    #[inline]
    fn send(&mut self, tx: &mut TxRing<'_>, n: u64) -> u64 {
        let (frame, done) = (&self.frame, &mut self.done);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let sent = tx.send_batch(frame.len(), n, |w| {
            let i = w.buf_idx() as usize;
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            match done.get_mut(word) {
                Some(d) if *d & bit != 0 => true,
                Some(d) => {
                    *d |= bit;
                    w.write(0, frame)
                }
                None => w.write(0, frame),
            }
        });
        u64::from(sent)
    }
}

/// A run of one function over an attached port.
pub(crate) struct Run<'a> {
    pub(crate) args: &'a Args,
    pub(crate) port: Port,
    pub(crate) timeout: Option<Duration>,
}

/// What a waiting loop should do.
fn wait_time(rep: &Reporter, now: Instant, idle_deadline: Option<Instant>) -> Duration {
    let mut d = rep.time_to_next(now).min(Duration::from_millis(200));
    if let Some(dl) = idle_deadline {
        d = d.min(dl.saturating_duration_since(now));
    }
    d
}

/// The state a receiving mode (rx, pong) keeps across its rounds: the RX rings it waits on, its
/// reporter, and when packets came.
struct RxRounds {
    rx_ids: Vec<RingId>,
    rep: Reporter,
    first: Option<Instant>,
    last: Instant,
    last_rx: Instant,
}

impl RxRounds {
    fn new(nrx: u32, report_ms: u64) -> Self {
        Self {
            rx_ids: (0..nrx).map(RingId::Rx).collect(),
            rep: Reporter::new(report_ms),
            first: None,
            last: Instant::now(),
            last_rx: Instant::now(),
        }
    }

    /// From the first packet to the last, 0 when none came.
    fn seconds(&self) -> f64 {
        self.first
            .map_or(0.0, |f| self.last.duration_since(f).as_secs_f64())
    }
}

impl Run<'_> {
    fn src_mac(&self) -> [u8; 6] {
        self.args.src_mac.unwrap_or(self.port.mac())
    }

    fn dst_mac(&self) -> [u8; 6] {
        self.args.dst_mac.unwrap_or([0xff; 6])
    }

    /// Ends a round of a receiving mode that got `got` packets (`c` so far): notes when packets
    /// came (restarting the reporter at the first), prints a due report, and when nothing came
    /// waits on the RX rings (unless busy-polling). False when the mode should stop: idle for the
    /// timeout, or signalled.
    fn end_rx_round(&mut self, r: &mut RxRounds, got: u64, c: Counters) -> Result<bool, Error> {
        let now = Instant::now();
        if got > 0 {
            if r.first.is_none() {
                r.first = Some(now);
                r.rep.restart(now);
            }
            r.last = now;
            r.last_rx = now;
        }
        r.rep.tick(now, c);
        let idle_deadline = self.timeout.map(|t| r.last_rx + t);
        if idle_deadline.is_some_and(|d| now >= d) || stopped() {
            return Ok(false);
        }
        if got == 0 && !self.args.busy_poll {
            self.port
                .wait_any(&r.rx_ids, Some(wait_time(&r.rep, now, idle_deadline)))?;
        }
        Ok(true)
    }

    pub(crate) fn tx(&mut self) -> Result<PktGenSummary, Error> {
        let a = self.args;
        let ntx = self.port.num_tx_rings();
        let mut fb = FrameBuilder::new(a.len, self.dst_mac(), self.src_mac());
        let mut seqs = [0u64; MAX_STREAMS];
        let tx_ids: Vec<RingId> = (0..ntx).map(RingId::Tx).collect();
        let mut prepared = a
            .fast
            .then(|| Prepared::new(fb.frame(0, 0), self.port.num_bufs()));
        let mut rep = Reporter::new(a.report_ms);
        let start = Instant::now();
        let mut c = Counters::default();
        let mut ring = 0u32;
        let mut full_rings = 0u32;
        // Pacing: send in chunks of at most `chunk` packets, sleeping between chunks only.
        let chunk = if a.rate > 0 {
            u64::from(a.burst).min((a.rate / 1000).max(1))
        } else {
            u64::from(a.burst)
        };
        while (a.count == 0 || c.packets < a.count) && !stopped() {
            let now = Instant::now();
            rep.tick(now, c);
            let mut budget = chunk;
            if a.count > 0 {
                budget = budget.min(a.count - c.packets);
            }
            if a.rate > 0 {
                let allowed = (now.duration_since(start).as_secs_f64() * a.rate as f64) as u64 + 1;
                if allowed <= c.packets {
                    let due = start
                        + Duration::from_secs_f64((c.packets + budget) as f64 / a.rate as f64);
                    std::thread::sleep(
                        due.saturating_duration_since(now)
                            .min(rep.time_to_next(now).max(Duration::from_micros(50))),
                    );
                    continue;
                }
                budget = budget.min(allowed - c.packets);
            }
            let mut tx = self.port.tx_ring(ring);
            if tx.space() == 0 {
                tx.txsync()?;
            }
            let n = u64::from(tx.space()).min(budget);
            let sent = match prepared.as_mut() {
                Some(p) => p.send(&mut tx, n),
                None => {
                    let mut sent = 0;
                    while sent < n {
                        let seq = seqs[ring as usize];
                        if !tx.send(fb.frame(ring, seq)) {
                            break;
                        }
                        seqs[ring as usize] = seq + 1;
                        sent += 1;
                    }
                    sent
                }
            };
            c.packets += sent;
            c.bytes += sent * a.len as u64;
            if n > 0 {
                tx.txsync()?;
                full_rings = 0;
            } else {
                full_rings += 1;
            }
            ring = (ring + 1) % ntx;
            if full_rings >= ntx {
                full_rings = 0;
                if !a.busy_poll {
                    let d = rep.time_to_next(now).min(Duration::from_millis(200));
                    self.port.wait_any(&tx_ids, Some(d))?;
                }
            }
        }
        // Let the host take everything before detaching (DELETE stops its loops).
        let drain_limit = self.timeout.unwrap_or(Duration::from_secs(5));
        let mut last_progress = Instant::now();
        let mut last_pending = u32::MAX;
        loop {
            let mut pending = 0;
            for i in 0..ntx {
                let mut tx = self.port.tx_ring(i);
                tx.txsync_reclaim()?;
                pending += tx.pending();
            }
            if pending == 0 {
                break;
            }
            if pending < last_pending {
                last_pending = pending;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > drain_limit {
                eprintln!("tx: {pending} packets still queued after {drain_limit:?}");
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(PktGenSummary::new(Mode::Tx, c.packets, c.bytes, seconds))
    }

    pub(crate) fn rx(&mut self) -> Result<PktGenSummary, Error> {
        let a = self.args;
        let nrx = self.port.num_rx_rings();
        let mut r = RxRounds::new(nrx, a.report_ms);
        let mut buf = vec![0u8; self.port.buf_size() as usize];
        let mut c = Counters::default();
        let mut seq = SeqTracker::default();
        let mut errors = 0u64;
        'outer: loop {
            let mut got = 0u64;
            for i in 0..nrx {
                let mut rx = self.port.rx_ring(i);
                rx.rxsync()?;
                let burst = rx.avail().min(a.burst);
                if a.fast {
                    // Count only, as netmap's pkt-gen does: no copy, no check, one pass.
                    let left = if a.count > 0 {
                        a.count - c.packets
                    } else {
                        u64::MAX
                    };
                    let done = rx.consume(burst.min(u32::try_from(left).unwrap_or(u32::MAX)));
                    got += u64::from(done.packets);
                    c.packets += u64::from(done.packets);
                    c.bytes += done.bytes;
                    if a.count > 0 && c.packets >= a.count {
                        rx.rxsync()?;
                        r.last = Instant::now();
                        break 'outer;
                    }
                    continue;
                }
                for _ in 0..burst {
                    let Some(len) = rx.recv(&mut buf) else { break };
                    match verify(&buf[..len.min(buf.len())]) {
                        Verdict::Good { stream, seq: s } => seq.see(stream, s),
                        Verdict::Bad => errors += 1,
                    }
                    got += 1;
                    c.packets += 1;
                    c.bytes += len as u64;
                    if a.count > 0 && c.packets >= a.count {
                        rx.rxsync()?;
                        r.last = Instant::now();
                        break 'outer;
                    }
                }
            }
            if !self.end_rx_round(&mut r, got, c)? {
                break;
            }
        }
        let seconds = r.seconds();
        Ok(PktGenSummary {
            errors,
            out_of_order: seq.out_of_order,
            lost: seq.lost,
            restarts: seq.restarts,
            ..PktGenSummary::new(Mode::Rx, c.packets, c.bytes, seconds)
        })
    }

    pub(crate) fn pong(&mut self) -> Result<PktGenSummary, Error> {
        let a = self.args;
        let nrx = self.port.num_rx_rings();
        let ntx = self.port.num_tx_rings();
        let mut r = RxRounds::new(nrx, a.report_ms);
        let mymac = self.src_mac();
        let mut buf = vec![0u8; self.port.buf_size() as usize];
        let mut c = Counters::default();
        let mut errors = 0u64;
        'outer: loop {
            let mut got = 0u64;
            for i in 0..nrx {
                let t = i % ntx;
                self.port.rx_ring(i).rxsync()?;
                let mut queued = 0u32;
                loop {
                    // Room to reflect into?
                    let mut tx = self.port.tx_ring(t);
                    if tx.space() == 0 {
                        tx.txsync()?;
                        queued = 0;
                        if tx.space() == 0 {
                            // Leave the rest for the next round; wait a little for the peer.
                            if !a.busy_poll {
                                self.port
                                    .wait(RingId::Tx(t), Some(Duration::from_millis(10)))?;
                            }
                            break;
                        }
                    }
                    let Some(len) = self.port.rx_ring(i).recv(&mut buf) else {
                        break;
                    };
                    got += 1;
                    let len = len.min(buf.len());
                    if len < 14 {
                        errors += 1;
                        continue;
                    }
                    let (dst, src) = buf.split_at_mut(6);
                    dst.copy_from_slice(&src[..6]);
                    buf[6..12].copy_from_slice(&mymac);
                    let mut tx = self.port.tx_ring(t);
                    if tx.send(&buf[..len]) {
                        c.packets += 1;
                        c.bytes += len as u64;
                        queued += 1;
                    } else {
                        errors += 1;
                    }
                    if queued >= a.burst {
                        tx.txsync()?;
                        queued = 0;
                    }
                    if a.count > 0 && c.packets >= a.count {
                        tx.txsync()?;
                        self.port.rx_ring(i).rxsync()?;
                        r.last = Instant::now();
                        break 'outer;
                    }
                }
                if queued > 0 {
                    self.port.tx_ring(t).txsync()?;
                }
            }
            if !self.end_rx_round(&mut r, got, c)? {
                break;
            }
        }
        // Push the last reflections out before detaching.
        for t in 0..ntx {
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let mut tx = self.port.tx_ring(t);
                tx.txsync_reclaim()?;
                if tx.pending() == 0 || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let seconds = r.seconds();
        Ok(PktGenSummary {
            errors,
            ..PktGenSummary::new(Mode::Pong, c.packets, c.bytes, seconds)
        })
    }

    pub(crate) fn ping(&mut self) -> Result<PktGenSummary, Error> {
        let a = self.args;
        let nrx = self.port.num_rx_rings();
        let rx_ids: Vec<RingId> = (0..nrx).map(RingId::Rx).collect();
        let per_ping = self.timeout.unwrap_or(Duration::from_secs(1));
        let mut fb = FrameBuilder::new(a.len, self.dst_mac(), self.src_mac());
        let mut buf = vec![0u8; self.port.buf_size() as usize];
        let cap = if a.count > 0 {
            a.count.min(10_000_000)
        } else {
            1_000_000
        } as usize;
        let mut rtts: Vec<u64> = Vec::with_capacity(cap);
        let mut rep = Reporter::new(a.report_ms);
        let mut c = Counters::default();
        let mut errors = 0u64;
        let mut lost = 0u64;
        let mut out_of_order = 0u64;
        let mut sent = 0u64;
        let start = Instant::now();
        let interval = (a.rate > 0).then(|| Duration::from_secs_f64(1.0 / a.rate as f64));
        while (a.count == 0 || sent < a.count) && !stopped() {
            let seq = sent;
            // Send one frame.
            let t0 = loop {
                let mut tx = self.port.tx_ring(0);
                if tx.space() == 0 {
                    tx.txsync()?;
                }
                if tx.send(fb.frame(0, seq)) {
                    let t0 = Instant::now();
                    tx.txsync()?;
                    break t0;
                }
                if !a.busy_poll {
                    self.port
                        .wait(RingId::Tx(0), Some(Duration::from_millis(100)))?;
                }
            };
            sent += 1;
            // Wait for it to come back.
            let deadline = t0 + per_ping;
            let mut answered = false;
            while !answered {
                for i in 0..nrx {
                    let mut rx = self.port.rx_ring(i);
                    rx.rxsync()?;
                    while let Some(len) = rx.recv(&mut buf) {
                        let now = Instant::now();
                        match verify(&buf[..len.min(buf.len())]) {
                            Verdict::Good { seq: s, .. } if s == seq => {
                                let rtt = now.duration_since(t0).as_nanos() as u64;
                                if rtts.len() < rtts.capacity() {
                                    rtts.push(rtt);
                                }
                                c.packets += 1;
                                c.bytes += len as u64;
                                answered = true;
                            }
                            Verdict::Good { .. } => out_of_order += 1,
                            Verdict::Bad => errors += 1,
                        }
                    }
                }
                if answered {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    lost += 1;
                    break;
                }
                if !a.busy_poll {
                    self.port.wait_any(&rx_ids, Some(deadline - now))?;
                }
            }
            let now = Instant::now();
            rep.tick(now, c);
            if let Some(iv) = interval {
                let due = start + iv * (sent.min(u32::MAX as u64) as u32);
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
        rtts.sort_unstable();
        let seconds = start.elapsed().as_secs_f64();
        Ok(PktGenSummary {
            errors,
            out_of_order,
            lost,
            rtt_us: Some(Rtt::from_sorted_ns(&rtts)),
            sent: Some(sent),
            ..PktGenSummary::new(Mode::Ping, c.packets, c.bytes, seconds)
        })
    }
}
