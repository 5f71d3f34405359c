//! A host interface attached to a VALE switch (netmap's `vale-ctl -a`): `ptnet-ctl attach
//! vale0 eth1 [--kind packet|xdp|tap]`, or `vale0:eth1@conf:attach=packet` on the command line.
//!
//! The switch gets an ordinary port, `vale0:eth1` (its own memory, one TX and one RX ring, as any
//! guest's), and the interface its port of the chosen kind (`packet:eth1`, `xdp:eth1`,
//! `tap:eth1`, see [`crate::port::nic`]). No frontend runs either: one daemon thread is the
//! in-process "guest" of both, as the virtio-net frontend's pair threads are of theirs (a private
//! CSB, the protocol's guest side over it, the host passes run inline):
//!
//! * **wire to switch**: the NIC port's RX pass takes frames from the kernel into its RX ring;
//!   the thread copies them into the switch port's TX ring, whose pass (`ValeTx`) forwards them
//!   as any port's frames (learning the senders behind the interface: the port may claim up to
//!   `macs=` addresses, 4096 by default for an attached interface);
//! * **switch to wire**: the switch port's RX ring is filled by the other ports' TX rings with
//!   direct delivery (its pass state lent to the ring, their passes raise this thread's
//!   eventfd); the thread copies the frames into the NIC port's TX ring, whose pass hands them to
//!   the kernel. When the kernel's queue is full the thread waits for room and the switch drops
//!   what does not fit in the port's RX ring, as for any slow receiver.
//!
//! One copy each way between the two memories (the kernel's copy aside); batched, no allocation
//! or lock on the way, one system call per batch where the NIC kind has it so.

use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::port::idle::SpinThenSleep;
use crate::port::private_csb::{InlineRing, PrivateCsb};
use crate::port::ring::DirectRx;
use crate::port::{RingStats, RingWorker};
use crate::portspec::{AttachKind, PortSpec};
use crate::served::Port;
use crate::sys::{eventfd_file, eventfd_take_nowait, poll_revents};
use ptnet_protocol::csb::{Atok, Ktoa, NAF_FORCE_RECLAIM};
use ptnet_protocol::netmap::{ring_add, BufPool, RingView};
use ptnet_protocol::sync::{GuestKring, HostStop};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

/// Why an interface could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The interface's port could not be opened.
    #[error(transparent)]
    Build(#[from] crate::port::BuildError),
    /// Not as asked.
    #[error("port '{port}': {reason}")]
    Unsupported {
        /// The switch port.
        port: String,
        /// Why.
        reason: String,
    },
    /// The thread or its descriptors could not be made.
    #[error("port '{0}': starting its thread: {1}")]
    Io(String, #[source] std::io::Error),
}

/// An attached interface: its port and the thread moving its frames.
pub struct Attached {
    nic: Arc<Port>,
    vale: Arc<Port>,
    stop_flag: Arc<AtomicBool>,
    stop_fd: Arc<EventFd>,
    thread: Option<JoinHandle<Vec<RingWorker>>>,
}

/// The rings, in the order the thread keeps them.
const VALE_TX: usize = 0;
const VALE_RX: usize = 1;
const NIC_TX: usize = 2;
const NIC_RX: usize = 3;

impl Attached {
    /// Opens the interface's port (`kind`, named by the port of switch port `vale`) and starts
    /// the thread over both ports' rings.
    pub fn start(
        vale: &Arc<Port>,
        spec: &PortSpec,
        kind: AttachKind,
        loops: LoopOptions,
    ) -> Result<Self, AttachError> {
        let unsupported = |reason: &str| AttachError::Unsupported {
            port: spec.name.clone(),
            reason: reason.into(),
        };
        let crate::portspec::PortKind::Vale { port: ifname, .. } = &spec.kind else {
            return Err(unsupported("only a VALE port attaches an interface"));
        };
        if vale.threads_memory().is_none() {
            return Err(unsupported(
                "attaching an interface needs the userspace netmap's switch (--netmap user)",
            ));
        }
        if spec.conf.tx_rings != 1 || spec.conf.rx_rings != 1 {
            return Err(unsupported(
                "an attached interface has one TX and one RX ring",
            ));
        }
        let c = &spec.conf;
        let nic_arg = format!(
            "{}@conf:tx-slots={},rx-slots={}",
            kind.nic_port(ifname),
            c.tx_slots,
            c.rx_slots
        );
        let nic_spec = PortSpec::parse(&nic_arg).map_err(|e| unsupported(&e.to_string()))?;
        let built =
            crate::port::nic::build_port(&nic_spec).map_err(crate::port::BuildError::from)?;
        let nic = Arc::new(Port::threads(built));
        let io = |e| AttachError::Io(spec.name.clone(), e);
        let (Some(vw), Some(nw)) = (vale.take_workers(), nic.take_workers()) else {
            return Err(unsupported("the port's rings are taken"));
        };
        let stop_fd = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io)?);
        let call = eventfd_file(true).map_err(io)?;
        let stop_flag = Arc::new(AtomicBool::new(false));
        let views = |p: &Port| -> Option<(RingView, RingView, BufPool)> {
            Some((
                p.ring_view(0)?,
                p.ring_view(1)?,
                p.threads_memory()?.bufs().clone(),
            ))
        };
        let (Some(vv), Some(nv)) = (views(vale), views(&nic)) else {
            vale.put_workers(vw);
            nic.put_workers(nw);
            return Err(unsupported("not a userspace netmap port"));
        };
        let (flag, fd, name) = (stop_flag.clone(), stop_fd.clone(), spec.name.clone());
        let mut workers: Vec<RingWorker> = vw.into_iter().chain(nw).collect();
        vale.mark_started();
        nic.mark_started();
        let thread = std::thread::Builder::new()
            .name(format!("at-{ifname}").chars().take(15).collect())
            .spawn(move || {
                let nw = workers.split_off(2);
                Bridge::new(&name, workers, nw, [vv, nv], call, loops).run(&flag, &fd)
            })
            .map_err(io)?;
        tracing::info!(port = spec.name, nic = nic.name(), "interface attached");
        Ok(Self {
            nic,
            vale: vale.clone(),
            stop_flag,
            stop_fd,
            thread: Some(thread),
        })
    }

    /// Stops the thread; the rings go back to their ports.
    pub fn stop(mut self) {
        self.stop_flag.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(mut w) => {
                    let nw = w.split_off(2);
                    self.vale.put_workers(w);
                    self.nic.put_workers(nw);
                }
                Err(_) => tracing::error!(port = self.vale.name(), "attach thread panicked"),
            }
        }
    }
}

/// One ring as the thread runs it: the worker taken apart (the host kring in its pass state),
/// and the guest side of its private CSB entries.
struct Ring {
    host: InlineRing,
    atok: Atok,
    ktoa: Ktoa,
    g: GuestKring,
    view: RingView,
    bufs: BufPool,
}

impl Ring {
    fn start(w: RingWorker, csb: &PrivateCsb, i: usize, view: RingView, bufs: BufPool) -> Self {
        let (host, guest) = csb.start(w, i as u32, None);
        Self {
            host,
            atok: guest.atok,
            ktoa: guest.ktoa,
            g: guest.kring,
            view,
            bufs,
        }
    }

    fn pass(&mut self, busy: bool) -> Option<HostStop> {
        self.host.pass(busy).map(|d| d.stop)
    }

    /// Publishes TX slots up to `cur`, runs the pass, reads the completions back. True when
    /// the ring is full (wait for the port).
    fn tx_publish(&mut self, cur: u32) -> bool {
        if self.g.prologue(cur, cur).is_err() {
            self.g = GuestKring::attach(self.g.num_slots, &self.atok, &self.ktoa);
            return false;
        }
        self.g.txsync(&self.atok, &self.ktoa, 0);
        let stop = self.pass(false).unwrap_or(HostStop::Idle);
        let _ = self.g.prologue(self.g.rhead, self.g.rcur);
        self.g.txsync(&self.atok, &self.ktoa, NAF_FORCE_RECLAIM);
        self.g.rcur == self.g.hwtail
            || matches!(stop, HostStop::PortBlocked)
                && self.host.kring().is_some_and(|k| k.hwcur != k.rhead)
    }

    /// Learns the frames received (after a pass, run here or through `direct`).
    fn rx_take(&mut self, direct: Option<&Arc<dyn DirectRx>>) {
        match direct {
            Some(d) => {
                d.host_pass(false);
            }
            None => {
                self.pass(false);
            }
        }
        let h = self.g.rhead;
        let _ = self.g.prologue(h, h);
        self.g.rxsync(&self.atok, &self.ktoa, 0);
    }

    /// Gives the RX slots before `head` back.
    fn rx_release(&mut self, head: u32, direct: Option<&Arc<dyn DirectRx>>) {
        let _ = self.g.prologue(head, head);
        let kick = self.g.rxsync(&self.atok, &self.ktoa, 0);
        match direct {
            Some(d) if kick => {
                d.host_pass(false);
            }
            Some(_) => {}
            None => {
                self.pass(false);
            }
        }
    }
}

/// Copies the frames of RX ring `src` (from its head) into the free slots of TX ring `dst`
/// (from its cur). Returns (src's new head, dst's new cur).
fn forward(src: &Ring, dst: &Ring) -> (u32, u32) {
    let (mut head, mut cur) = (src.g.rhead, dst.g.rcur);
    while head != src.g.hwtail && cur != dst.g.hwtail {
        let len = src.view.len(head);
        let (si, di) = (src.view.buf_idx(head), dst.view.buf_idx(cur));
        if len > 0 && dst.bufs.copy_from(di, &src.bufs, si, usize::from(len)) {
            dst.view.set_len(cur, len);
            dst.view.set_flags(cur, 0);
            cur = ring_add(cur, 1, dst.g.num_slots);
        } else {
            // Longer than the other side's buffers (or empty): not forwarded.
            RingStats::add(&src.host.stats.drops, 1);
        }
        head = ring_add(head, 1, src.g.num_slots);
    }
    (head, cur)
}

/// The thread's state.
struct Bridge<'a> {
    port: &'a str,
    rings: Vec<Ring>,
    direct: Option<Arc<dyn DirectRx>>,
    call: File,
    nic_tx_full: bool,
    opts: LoopOptions,
    _csb: PrivateCsb,
}

impl<'a> Bridge<'a> {
    fn new(
        port: &'a str,
        vale: Vec<RingWorker>,
        nic: Vec<RingWorker>,
        views: [(RingView, RingView, BufPool); 2],
        call: File,
        opts: LoopOptions,
    ) -> Self {
        let csb = PrivateCsb::new(4);
        let [(vtx, vrx, vb), (ntx, nrx, nb)] = views;
        let mut vale = vale.into_iter();
        let mut nic = nic.into_iter();
        let next = |it: &mut std::vec::IntoIter<RingWorker>| it.next().expect("two rings");
        let mut rings = vec![
            Ring::start(next(&mut vale), &csb, VALE_TX, vtx, vb.clone()),
            Ring::start(next(&mut vale), &csb, VALE_RX, vrx, vb),
            Ring::start(next(&mut nic), &csb, NIC_TX, ntx, nb.clone()),
            Ring::start(next(&mut nic), &csb, NIC_RX, nrx, nb),
        ];
        // Direct delivery into the switch port's RX ring: producers' passes raise `call`.
        let direct = rings[VALE_RX].host.sync.direct_rx();
        if let Some(d) = &direct {
            let mut state = rings[VALE_RX].host.state.take().expect("not lent yet");
            state.call = call.try_clone().ok();
            d.lend(state);
        }
        Self {
            port,
            rings,
            direct,
            call,
            nic_tx_full: false,
            opts,
            _csb: csb,
        }
    }

    /// One round both ways; true if anything moved.
    fn round(&mut self) -> bool {
        let mut moved = false;
        // Wire to switch (the switch port's TX ring never waits: it drops instead).
        self.rings[NIC_RX].rx_take(None);
        let (h, c) = forward(&self.rings[NIC_RX], &self.rings[VALE_TX]);
        if c != self.rings[VALE_TX].g.rcur {
            self.rings[VALE_TX].tx_publish(c);
        }
        if h != self.rings[NIC_RX].g.rhead {
            self.rings[NIC_RX].rx_release(h, None);
            moved = true;
        }
        // Switch to wire.
        if self.nic_tx_full {
            let cur = self.rings[NIC_TX].g.rcur;
            self.nic_tx_full = self.rings[NIC_TX].tx_publish(cur);
            if self.nic_tx_full {
                return moved;
            }
        }
        let direct = self.direct.clone();
        self.rings[VALE_RX].rx_take(direct.as_ref());
        let (h, c) = forward(&self.rings[VALE_RX], &self.rings[NIC_TX]);
        if c != self.rings[NIC_TX].g.rcur {
            self.nic_tx_full = self.rings[NIC_TX].tx_publish(c);
        }
        if h != self.rings[VALE_RX].g.rhead {
            self.rings[VALE_RX].rx_release(h, direct.as_ref());
            moved = true;
        }
        moved
    }

    fn run(mut self, stop: &AtomicBool, stop_fd: &EventFd) -> Vec<RingWorker> {
        let mut idle = SpinThenSleep::new(self.opts.busy_poll, self.opts.spin);
        while !stop.load(Ordering::Relaxed) {
            if self.round() {
                idle.progress(true);
                continue;
            }
            if idle.empty() {
                std::hint::spin_loop();
                continue;
            }
            // Before sleeping: the NIC's RX socket (and, when full, its TX room) armed.
            if self.rings[NIC_RX].host.arm() || (self.nic_tx_full && self.rings[NIC_TX].host.arm())
            {
                continue;
            }
            let rx_wake = self.rings[NIC_RX].host.sync.wake_fd();
            let tx_wake = self.rings[NIC_TX]
                .host
                .sync
                .wake_fd()
                .filter(|_| self.nic_tx_full);
            let r = &self.rings;
            let fds = [
                (stop_fd.as_raw_fd(), libc::POLLIN),
                (self.call.as_raw_fd(), libc::POLLIN),
                (r[VALE_TX].host.notify.as_raw_fd(), libc::POLLIN),
                (r[VALE_RX].host.notify.as_raw_fd(), libc::POLLIN),
                (r[NIC_TX].host.notify.as_raw_fd(), libc::POLLIN),
                (r[NIC_RX].host.notify.as_raw_fd(), libc::POLLIN),
                rx_wake.map_or((-1, 0), |w| (w.fd, w.events)),
                tx_wake.map_or((-1, 0), |w| (w.fd, w.events)),
            ];
            let mut rev = [0i16; 8];
            if let Err(e) = poll_revents(&fds, -1, &mut rev) {
                tracing::error!(port = self.port, "poll: {e}; attached interface stopped");
                break;
            }
            if rev[1] != 0 {
                let _ = eventfd_take_nowait(&self.call);
            }
            for (i, ring) in self.rings.iter().enumerate() {
                if rev[2 + i] != 0 {
                    let _ = ring.host.notify.read();
                }
            }
        }
        self.finish()
    }

    fn finish(mut self) -> Vec<RingWorker> {
        if let Some(d) = &self.direct {
            self.rings[VALE_RX].host.state = d.take_back();
        }
        for r in &mut self.rings {
            let _ = r.pass(true);
        }
        self.rings
            .into_iter()
            .map(|r| r.host.into_worker())
            .collect()
    }
}
