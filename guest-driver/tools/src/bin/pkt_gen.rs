//! `ptnet-pkt-gen`: a packet generator and sink over a ptnet port, modelled on netmap's pkt-gen.
//!
//! ```text
//! ptnet-pkt-gen -i vhost-user:/tmp/p/p}1.sock -f rx -n 1000000 --timeout 5
//! ptnet-pkt-gen -i vhost-user:/tmp/p/p{1.sock -f tx -n 1000000
//! ```
//!
//! Frames are Ethernet + IPv4 + UDP, then a magic, a stream number (the TX ring), a per-stream
//! sequence number and a payload pattern derived from the sequence number. `rx` verifies all of it.
//!
//! Exit codes: 0 success, 1 runtime failure (verification errors, fewer packets than asked, device
//! errors), 2 bad command line or bad port string.

use clap::{Parser, ValueEnum};
use ptnet_driver::{Error, Port, RingId};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM: stop, print the summary, detach cleanly.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

#[inline]
fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Offset of the magic number in a frame (after Ethernet, IPv4 and UDP headers).
const MAGIC_OFS: usize = 42;
/// Offset of the stream number (u32, little-endian).
const STREAM_OFS: usize = 46;
/// Offset of the sequence number (u64, little-endian).
const SEQ_OFS: usize = 50;
/// Where the payload pattern starts.
const PAYLOAD_OFS: usize = 58;
/// The magic, "PTNT".
const MAGIC: u32 = 0x544e_5450;
/// Smallest frame (Ethernet minimum without CRC).
const MIN_LEN: usize = 60;
/// Most streams the receiver tracks (the kick space limits a port to 32 rings).
const MAX_STREAMS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Function {
    /// Transmit.
    Tx,
    /// Receive and verify.
    Rx,
    /// Send one frame at a time, wait for it to come back, measure round-trip times.
    Ping,
    /// Reflect every received frame (swap MAC addresses).
    Pong,
}

/// Packet generator and sink over a ptnet port.
#[derive(Parser, Debug)]
#[command(name = "ptnet-pkt-gen", version, about)]
struct Args {
    /// Port: vhost-user:PATH, [pci:]ptnetN, ptnet:DDDD:BB:DD.F or pci:DDDD:BB:DD.F.
    #[arg(short = 'i', long = "interface", value_name = "PORT")]
    port: String,
    /// What to do.
    #[arg(short = 'f', long = "function", value_enum)]
    function: Function,
    /// Frame length in bytes (headers included, no CRC): 60 up to the buffer size.
    #[arg(short = 'l', long = "length", default_value_t = 60)]
    len: usize,
    /// Packets handled per ring per sync.
    #[arg(short = 'b', long = "burst", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
    /// Packets to send or receive (0: forever).
    #[arg(short = 'n', long = "count", default_value_t = 0)]
    count: u64,
    /// Rate in packets per second (0: as fast as possible). For ping: pings per second.
    #[arg(short = 'R', long = "rate", default_value_t = 0)]
    rate: u64,
    /// Report interval in milliseconds (0: no periodic reports).
    #[arg(short = 'T', long = "report-ms", default_value_t = 1000)]
    report_ms: u64,
    /// Stop when nothing arrives for this many seconds (rx, pong, ping: per ping); tx: the longest
    /// wait for the host to take the last packets.
    #[arg(long = "timeout", value_name = "SECS")]
    timeout: Option<f64>,
    /// Destination MAC (default broadcast).
    #[arg(short = 'D', long = "dst-mac", value_parser = parse_mac)]
    dst_mac: Option<[u8; 6]>,
    /// Source MAC (default: the port's).
    #[arg(short = 'S', long = "src-mac", value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Print one JSON line instead of the summary.
    #[arg(long)]
    json: bool,
    /// Spin instead of waiting for interrupts.
    #[arg(long = "busy-poll")]
    busy_poll: bool,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("'{s}' is not a MAC address (xx:xx:xx:xx:xx:xx)"));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(format!("'{s}' is not a MAC address (xx:xx:xx:xx:xx:xx)"));
        }
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| format!("'{s}' is not a MAC address (xx:xx:xx:xx:xx:xx)"))?;
    }
    Ok(mac)
}

fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

// ---------------------------------------------------------------------------------------------
// Frames

/// Builds frames of one length: the headers are fixed, the stream, sequence number and payload
/// change per frame.
struct FrameBuilder {
    buf: Vec<u8>,
}

/// Payload byte `k` of the frame with sequence number `seq`.
#[inline]
fn pattern_base(seq: u64) -> u8 {
    (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

impl FrameBuilder {
    fn new(len: usize, dst: [u8; 6], src: [u8; 6]) -> Self {
        assert!(len >= MIN_LEN);
        let mut b = vec![0u8; len];
        b[0..6].copy_from_slice(&dst);
        b[6..12].copy_from_slice(&src);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        // IPv4: 10.0.0.1 -> 10.0.0.2, UDP.
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let csum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        // UDP 1234 -> 4321, no checksum.
        let udp = &mut b[34..42];
        udp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        udp[2..4].copy_from_slice(&4321u16.to_be_bytes());
        udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        b[MAGIC_OFS..MAGIC_OFS + 4].copy_from_slice(&MAGIC.to_le_bytes());
        Self { buf: b }
    }

    /// The frame for (`stream`, `seq`).
    #[inline]
    fn frame(&mut self, stream: u32, seq: u64) -> &[u8] {
        let b = &mut self.buf;
        b[STREAM_OFS..STREAM_OFS + 4].copy_from_slice(&stream.to_le_bytes());
        b[SEQ_OFS..SEQ_OFS + 8].copy_from_slice(&seq.to_le_bytes());
        let base = pattern_base(seq);
        for (k, x) in b[PAYLOAD_OFS..].iter_mut().enumerate() {
            *x = base.wrapping_add(k as u8);
        }
        &self.buf
    }
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a received frame turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Well-formed: stream and sequence number.
    Good { stream: u32, seq: u64 },
    /// Not ours or corrupted.
    Bad,
}

/// Checks a received frame: length, magic and payload pattern.
fn verify(frame: &[u8]) -> Verdict {
    if frame.len() < MIN_LEN {
        return Verdict::Bad;
    }
    let magic = u32::from_le_bytes(frame[MAGIC_OFS..MAGIC_OFS + 4].try_into().expect("4"));
    if magic != MAGIC {
        return Verdict::Bad;
    }
    let stream = u32::from_le_bytes(frame[STREAM_OFS..STREAM_OFS + 4].try_into().expect("4"));
    let seq = u64::from_le_bytes(frame[SEQ_OFS..SEQ_OFS + 8].try_into().expect("8"));
    let base = pattern_base(seq);
    let ok = frame[PAYLOAD_OFS..]
        .iter()
        .enumerate()
        .all(|(k, &x)| x == base.wrapping_add(k as u8));
    if ok && (stream as usize) < MAX_STREAMS {
        Verdict::Good { stream, seq }
    } else {
        Verdict::Bad
    }
}

/// Per-stream sequence tracking.
#[derive(Default, Debug)]
struct SeqTracker {
    next: [u64; MAX_STREAMS],
    out_of_order: u64,
    lost: u64,
    /// Streams that started again from sequence 0: a new sender (e.g. after a restart).
    restarts: u64,
}

impl SeqTracker {
    #[inline]
    fn see(&mut self, stream: u32, seq: u64) {
        let next = &mut self.next[stream as usize];
        if seq == *next {
            *next += 1;
        } else if seq > *next {
            self.lost += seq - *next;
            *next = seq + 1;
        } else if seq == 0 {
            self.restarts += 1;
            *next = 1;
        } else {
            self.out_of_order += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and reports

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

/// The final result of a run.
#[derive(Default)]
struct Summary {
    mode: &'static str,
    packets: u64,
    bytes: u64,
    seconds: f64,
    errors: u64,
    out_of_order: u64,
    lost: u64,
    restarts: u64,
    /// ping: (p50, p99, p99.9) in microseconds and how many pings were answered.
    rtt_us: Option<(f64, f64, f64)>,
    sent: Option<u64>,
}

impl Summary {
    fn mpps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.packets as f64 / self.seconds / 1e6
        } else {
            0.0
        }
    }

    fn gbps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 * 8.0 / self.seconds / 1e9
        } else {
            0.0
        }
    }

    fn json(&self) -> String {
        let mut s = format!(
            "{{\"mode\":\"{}\",\"packets\":{},\"bytes\":{},\"seconds\":{:.6},\"mpps\":{:.6},\"gbps\":{:.6},\"errors\":{},\"out_of_order\":{},\"lost\":{}",
            self.mode,
            self.packets,
            self.bytes,
            self.seconds,
            self.mpps(),
            self.gbps(),
            self.errors,
            self.out_of_order,
            self.lost
        );
        if self.restarts > 0 {
            let _ = write!(s, ",\"sender_restarts\":{}", self.restarts);
        }
        if let Some(sent) = self.sent {
            let _ = write!(s, ",\"sent\":{sent}");
        }
        if let Some((p50, p99, p999)) = self.rtt_us {
            let _ = write!(
                s,
                ",\"rtt_us\":{{\"p50\":{p50:.3},\"p99\":{p99:.3},\"p999\":{p999:.3}}}"
            );
        }
        s.push('}');
        s
    }

    fn text(&self) -> String {
        let mut s = format!(
            "{}: {} packets, {} bytes in {:.3} s: {:.3} Mpps {:.3} Gbps",
            self.mode,
            self.packets,
            self.bytes,
            self.seconds,
            self.mpps(),
            self.gbps()
        );
        if self.mode != "tx" {
            let _ = write!(
                s,
                "; errors {} out_of_order {} lost {}",
                self.errors, self.out_of_order, self.lost
            );
        }
        if let Some(sent) = self.sent {
            let _ = write!(s, "; sent {sent}");
        }
        if let Some((p50, p99, p999)) = self.rtt_us {
            let _ = write!(
                s,
                "; rtt p50 {p50:.1} us p99 {p99:.1} us p99.9 {p999:.1} us"
            );
        }
        s
    }
}

/// The `p`-quantile (0..1) of sorted samples, nearest rank.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// The functions

struct Run<'a> {
    args: &'a Args,
    port: Port,
    timeout: Option<Duration>,
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

    fn tx(&mut self) -> Result<Summary, Error> {
        let a = self.args;
        let ntx = self.port.num_tx_rings();
        let mut fb = FrameBuilder::new(a.len, self.dst_mac(), self.src_mac());
        let mut seqs = [0u64; MAX_STREAMS];
        let tx_ids: Vec<RingId> = (0..ntx).map(RingId::Tx).collect();
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
            for _ in 0..n {
                let seq = seqs[ring as usize];
                if !tx.send(fb.frame(ring, seq)) {
                    break;
                }
                seqs[ring as usize] = seq + 1;
                c.packets += 1;
                c.bytes += a.len as u64;
            }
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
        Ok(Summary {
            mode: "tx",
            packets: c.packets,
            bytes: c.bytes,
            seconds,
            ..Default::default()
        })
    }

    fn rx(&mut self) -> Result<Summary, Error> {
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
                for _ in 0..burst {
                    let Some(len) = rx.recv(&mut buf) else { break };
                    got += 1;
                    c.packets += 1;
                    c.bytes += len as u64;
                    match verify(&buf[..len.min(buf.len())]) {
                        Verdict::Good { stream, seq: s } => seq.see(stream, s),
                        Verdict::Bad => errors += 1,
                    }
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
        Ok(Summary {
            mode: "rx",
            packets: c.packets,
            bytes: c.bytes,
            seconds,
            errors,
            out_of_order: seq.out_of_order,
            lost: seq.lost,
            restarts: seq.restarts,
            ..Default::default()
        })
    }

    fn pong(&mut self) -> Result<Summary, Error> {
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
        Ok(Summary {
            mode: "pong",
            packets: c.packets,
            bytes: c.bytes,
            seconds,
            errors,
            ..Default::default()
        })
    }

    fn ping(&mut self) -> Result<Summary, Error> {
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
        let us = |p: f64| percentile(&rtts, p) as f64 / 1e3;
        Ok(Summary {
            mode: "ping",
            packets: c.packets,
            bytes: c.bytes,
            seconds: start.elapsed().as_secs_f64(),
            errors,
            out_of_order,
            lost,
            rtt_us: Some((us(0.5), us(0.99), us(0.999))),
            sent: Some(sent),
            ..Default::default()
        })
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if args.len < MIN_LEN {
        eprintln!(
            "ptnet-pkt-gen: -l {}: frame length must be at least {MIN_LEN}",
            args.len
        );
        return ExitCode::from(2);
    }
    let timeout = match args.timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            eprintln!("ptnet-pkt-gen: --timeout {t}: must be a positive number of seconds");
            return ExitCode::from(2);
        }
    };
    let mut port = match Port::open(&args.port) {
        Ok(p) => p,
        Err(e @ Error::BadPort(..)) => {
            eprintln!("ptnet-pkt-gen: -i: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("ptnet-pkt-gen: cannot open {}: {e}", args.port);
            return ExitCode::from(1);
        }
    };
    if args.len > port.buf_size() as usize {
        eprintln!(
            "ptnet-pkt-gen: -l {}: larger than the port's buffers ({} bytes)",
            args.len,
            port.buf_size()
        );
        return ExitCode::from(2);
    }
    port.set_busy_poll(args.busy_poll);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_stop_signal) {
            eprintln!("ptnet-pkt-gen: cannot handle signal {sig}: {e}");
        }
    }
    eprintln!(
        "ptnet-pkt-gen: {} mac {} rings {}/{} slots {}/{} buffers {} bytes",
        port.name(),
        fmt_mac(port.mac()),
        port.num_tx_rings(),
        port.num_rx_rings(),
        port.num_tx_slots(),
        port.num_rx_slots(),
        port.buf_size()
    );
    let mut run = Run {
        args: &args,
        port,
        timeout,
    };
    let res = match args.function {
        Function::Tx => run.tx(),
        Function::Rx => run.rx(),
        Function::Ping => run.ping(),
        Function::Pong => run.pong(),
    };
    drop(run);
    let s = match res {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ptnet-pkt-gen: {e}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        println!("{}", s.json());
    } else {
        println!("{}", s.text());
    }
    let short = args.count > 0
        && match args.function {
            Function::Ping => s.sent.unwrap_or(0) < args.count || s.packets < args.count,
            _ => s.packets < args.count,
        };
    let bad = s.errors > 0 || s.out_of_order > 0 || s.lost > 0;
    if short {
        eprintln!("ptnet-pkt-gen: {} of {} packets", s.packets, args.count);
    }
    if short || (bad && args.function != Function::Pong) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_verify() {
        for len in [60, 61, 64, 128, 1514, 2048] {
            let mut fb = FrameBuilder::new(len, [0xff; 6], [2, 0, 0, 0, 0, 1]);
            for (stream, seq) in [(0, 0), (3, 1), (31, u64::MAX), (7, 123_456_789)] {
                let f = fb.frame(stream, seq).to_vec();
                assert_eq!(f.len(), len);
                assert_eq!(verify(&f), Verdict::Good { stream, seq });
                assert_eq!(&f[12..14], &[0x08, 0x00]);
                // IPv4 header checksum verifies to zero.
                assert_eq!(ipv4_checksum(&f[14..34]), 0);
                // Any flipped payload or header byte after the MACs is caught.
                for k in [MAGIC_OFS, SEQ_OFS, PAYLOAD_OFS, len - 1] {
                    let mut g = f.clone();
                    g[k] ^= 0x10;
                    assert_ne!(verify(&g), Verdict::Good { stream, seq }, "byte {k}");
                }
            }
        }
        assert_eq!(verify(&[0u8; 59]), Verdict::Bad);
        assert_eq!(verify(&[0u8; 60]), Verdict::Bad);
        // Stream numbers beyond what the receiver tracks are refused.
        let mut fb = FrameBuilder::new(60, [0xff; 6], [0; 6]);
        assert_eq!(verify(fb.frame(MAX_STREAMS as u32, 0)), Verdict::Bad);
    }

    #[test]
    fn payload_depends_on_seq() {
        let mut fb = FrameBuilder::new(128, [0xff; 6], [0; 6]);
        let a = fb.frame(0, 1).to_vec();
        let b = fb.frame(0, 2).to_vec();
        assert_ne!(a[PAYLOAD_OFS..], b[PAYLOAD_OFS..]);
        // A frame whose sequence number was rewritten no longer verifies.
        let mut c = a.clone();
        c[SEQ_OFS..SEQ_OFS + 8].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(verify(&c), Verdict::Bad);
    }

    #[test]
    fn sequence_tracking() {
        let mut t = SeqTracker::default();
        for s in 0..10 {
            t.see(0, s);
        }
        assert_eq!((t.lost, t.out_of_order), (0, 0));
        t.see(0, 15); // 10..14 lost
        assert_eq!(t.lost, 5);
        t.see(0, 12); // late
        assert_eq!(t.out_of_order, 1);
        t.see(1, 0);
        t.see(1, 1);
        assert_eq!((t.lost, t.out_of_order), (5, 1));
        // A sender that starts over at 0 is a new stream, not 16 packets out of order.
        t.see(0, 0);
        t.see(0, 1);
        assert_eq!((t.lost, t.out_of_order, t.restarts), (5, 1, 1));
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.999), 7);
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:0a:FF:0:1").unwrap(), [2, 0, 10, 255, 0, 1]);
        for bad in [
            "",
            "02:00:0a:ff:00",
            "02:00:0a:ff:00:01:02",
            "02:00:0a:ff:00:zz",
            "020:0:0:0:0:0",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_mac([2, 0, 10, 255, 0, 1]), "02:00:0a:ff:00:01");
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("ptnet-pkt-gen").chain(args.iter().copied()))
    }

    #[test]
    fn command_line() {
        let a = parse(&["-i", "vhost-user:/tmp/x.sock", "-f", "tx"]).unwrap();
        assert_eq!(a.function, Function::Tx);
        assert_eq!(
            (a.len, a.burst, a.count, a.rate, a.report_ms),
            (60, 512, 0, 0, 1000)
        );
        assert!(!a.json && !a.busy_poll && a.timeout.is_none());
        let a = parse(&[
            "-i",
            "ptnet0",
            "-f",
            "ping",
            "-l",
            "128",
            "-b",
            "32",
            "-n",
            "100",
            "-R",
            "1000",
            "-T",
            "500",
            "--timeout",
            "2.5",
            "-D",
            "02:00:00:00:00:02",
            "-S",
            "02:00:00:00:00:01",
            "--json",
            "--busy-poll",
        ])
        .unwrap();
        assert_eq!(a.function, Function::Ping);
        assert_eq!(
            (a.len, a.burst, a.count, a.rate, a.report_ms),
            (128, 32, 100, 1000, 500)
        );
        assert_eq!(a.timeout, Some(2.5));
        assert_eq!(a.dst_mac, Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(a.src_mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(a.json && a.busy_poll);
        for bad in [
            &["-f", "tx"][..],
            &["-i", "x"],
            &["-i", "x", "-f", "flood"],
            &["-i", "x", "-f", "tx", "-b", "0"],
            &["-i", "x", "-f", "tx", "-n", "-1"],
            &["-i", "x", "-f", "tx", "-D", "nope"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?}");
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn summary_json() {
        let s = Summary {
            mode: "ping",
            packets: 10,
            bytes: 600,
            seconds: 1.0,
            rtt_us: Some((1.0, 2.0, 3.0)),
            sent: Some(10),
            ..Default::default()
        };
        let j = s.json();
        assert!(
            j.starts_with("{\"mode\":\"ping\",\"packets\":10,\"bytes\":600,"),
            "{j}"
        );
        assert!(j.contains("\"errors\":0"));
        assert!(j.contains("\"rtt_us\":{\"p50\":1.000,\"p99\":2.000,\"p999\":3.000}"));
        assert!(j.ends_with('}'));
    }
}
