//! The `vhost-user` transport: a host process attaches to `ptnet-backend`'s socket exactly as our
//! QEMU patch does (see `ptnet_protocol::device`), and plays the guest itself.
//!
//! * registers: GET_CONFIG / SET_CONFIG of the [`PtnetConfig`] image;
//! * netmap memory: the fd the daemon sends with SHMEM_MAP on the backend channel, mapped shared;
//! * "guest memory" (where the CSB lives): a small memfd of our own, registered with SET_MEM_TABLE
//!   at [`GUEST_MEM_GPA`];
//! * kicks and interrupts: one kick and one call eventfd per ring (SET_VRING_KICK/SET_VRING_CALL).
//!   Waits sleep in one `epoll_wait` on every call eventfd, edge-triggered, and never read them
//!   (see the `sys::epoll` module): a wake-up costs that one syscall.

use crate::error::ShmemMapProblem;
use crate::sys::{self, Mapping};
use crate::transport::{CsbArrays, PollWait, Transport};
use crate::Error;
use ptnet_protocol::csb;
use ptnet_protocol::device::{
    protocol_features, PtnetConfig, CONFIG_SIZE, MEMDEV_CONFIG_BASE, VHOST_USER_F_PROTOCOL_FEATURES,
};
use ptnet_protocol::regs::ptnet;
use ptnet_protocol::shmem::SharedMem;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserInflight, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, FrontendReqHandler, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

mod config;
mod shmem;
mod watchdog;

use shmem::ShmemHandler;
use watchdog::{ReplyWatchdog, REPLY_TIMEOUT};

/// The epoll token of the main socket in [`VhostUserTransport`]'s wait (ring numbers are the
/// others).
const SOCKET_TOKEN: u64 = u64::MAX;

/// Guest-physical address at which our "guest memory" (the CSB memfd) is registered.
pub const GUEST_MEM_GPA: u64 = 0x4000_0000;
/// Size of our "guest memory": two CSB arrays, one page each.
pub const GUEST_MEM_SIZE: usize = 64 * 1024;
/// Offset of the host-to-guest CSB array in the guest memory (the guest-to-host one is at 0).
const KTOA_OFFSET: usize = 4096;

/// Protocol features we need from the daemon (RESET_DEVICE is optional and not used).
const WANTED_PROTOCOL_FEATURES: u64 = protocol_features::MQ
    | protocol_features::REPLY_ACK
    | protocol_features::BACKEND_REQ
    | protocol_features::CONFIG
    | protocol_features::SHMEM;

/// A ptnet device reached through a vhost-user socket.
pub struct VhostUserTransport {
    name: String,
    frontend: Frontend,
    /// Bounds every wait for the daemon inside the `vhost` crate (see [`ReplyWatchdog`]).
    watchdog: ReplyWatchdog,
    /// The main socket again, for the requests made by hand ([`Self::read_config`]).
    ctl: UnixStream,
    /// Keeps the backend channel open (the daemon may treat its closing as a disconnect).
    _backend_channel: FrontendReqHandler<Mutex<ShmemHandler>>,
    config: PtnetConfig,
    config_valid: bool,
    netmap: Mapping,
    guest_mem: Mapping,
    _guest_memfd: OwnedFd,
    kicks: Vec<EventFd>,
    /// The call eventfds, kept open for `waits` (which watches them; nothing reads them).
    _calls: Vec<EventFd>,
    /// Every call eventfd (edge-triggered, token: the ring number) and the main socket
    /// ([`SOCKET_TOKEN`], level-triggered: readable only when the daemon hangs up, no request
    /// being outstanding during a wait).
    waits: Epoll,
    num_rings: u32,
    /// The main socket again, for [`Self::send_raw_vring_fd`] (tests of hostile frontends).
    raw: UnixStream,
}

impl VhostUserTransport {
    /// Connects to the daemon socket at `path` and sets the device up (everything QEMU does before
    /// the guest touches the registers).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let name = format!("vhost-user:{}", path.display());
        let sock = UnixStream::connect(path)
            .map_err(|e| Error::io(format!("connect to {}", path.display()), e))?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io("socket timeout", e))?;
        let raw = sock
            .try_clone()
            .map_err(|e| Error::io("clone the socket", e))?;
        sock.set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io("socket timeout", e))?;
        let ctl = sock
            .try_clone()
            .map_err(|e| Error::io("clone the socket", e))?;
        let wd = ReplyWatchdog::new(&name, &sock).map_err(|e| Error::io("reply watchdog", e))?;
        let mut fe = Frontend::from_stream(sock, 1);

        wd.call("SET_OWNER", || fe.set_owner())?;
        let features = wd.call("GET_FEATURES", || fe.get_features())?;
        if features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            return Err(Error::MissingFeatures {
                what: "features",
                offered: features,
                needed: VHOST_USER_F_PROTOCOL_FEATURES,
            });
        }
        wd.call("SET_FEATURES", || {
            fe.set_features(VHOST_USER_F_PROTOCOL_FEATURES)
        })?;
        let offered = wd
            .call("GET_PROTOCOL_FEATURES", || fe.get_protocol_features())?
            .bits();
        if offered & WANTED_PROTOCOL_FEATURES != WANTED_PROTOCOL_FEATURES {
            return Err(Error::MissingFeatures {
                what: "protocol features",
                offered,
                needed: WANTED_PROTOCOL_FEATURES,
            });
        }
        // INFLIGHT_SHMFD, when offered, lets a tool hand a restarted daemon its old port memory.
        let optional = protocol_features::INFLIGHT_SHMFD;
        wd.call("SET_PROTOCOL_FEATURES", || {
            fe.set_protocol_features(VhostUserProtocolFeatures::from_bits_retain(
                offered & (WANTED_PROTOCOL_FEATURES | optional),
            ))
        })?;
        // From now on every request that has no reply of its own is acknowledged (REPLY_ACK).
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);

        let num_rings = wd.call("GET_QUEUE_NUM", || fe.get_queue_num())?;
        if num_rings == 0 || num_rings > u64::from(ptnet::MAX_RINGS) {
            return Err(Error::QueueCount {
                queues: num_rings,
                max: ptnet::MAX_RINGS,
            });
        }
        let num_rings = num_rings as u32;

        let shmem = wd.call("GET_SHMEM_CONFIG", || fe.get_shmem_config())?;
        let (nregions, size0) = (shmem.nregions, shmem.memory_sizes[0]);
        if nregions < 1 || size0 == 0 {
            return Err(Error::ShmemConfig {
                regions: nregions,
                size: size0,
            });
        }

        // The backend channel, and the one SHMEM_MAP the daemon sends on it.
        let handler = Arc::new(Mutex::new(ShmemHandler {
            expected_len: size0,
            ..Default::default()
        }));
        let mut channel = FrontendReqHandler::new(handler.clone())
            .map_err(|e| Error::ShmemMap(ShmemMapProblem::Channel(e)))?;
        channel.set_reply_ack_flag(true);
        let tx_fd = channel.get_tx_raw_fd();
        wd.call("SET_BACKEND_REQ_FD", || fe.set_backend_request_fd(&tx_fd))?;
        if poll_fds(&[channel.as_raw_fd()], Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io("poll backend channel", e))?
            == 0
        {
            return Err(Error::ShmemMap(ShmemMapProblem::Timeout(REPLY_TIMEOUT)));
        }
        let res = channel.handle_request();
        let mut h = handler.lock().unwrap_or_else(|p| p.into_inner());
        let netmap = match (res, h.mapped.take()) {
            (Ok(_), Some(m)) => m,
            (res, _) => {
                let why = h.error.take().unwrap_or(match res {
                    Err(e) => ShmemMapProblem::Channel(e),
                    Ok(_) => ShmemMapProblem::Unexpected,
                });
                return Err(Error::ShmemMap(why));
            }
        };
        drop(h);

        // Our "guest memory", where the CSB lives.
        let (guest_memfd, guest_mem) = make_guest_memory()?;
        wd.call("SET_MEM_TABLE", || {
            fe.set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: GUEST_MEM_GPA,
                memory_size: GUEST_MEM_SIZE as u64,
                userspace_addr: guest_mem.addr() as u64,
                mmap_offset: 0,
                mmap_handle: guest_memfd.as_raw_fd(),
            }])
        })?;

        let mut kicks = Vec::with_capacity(num_rings as usize);
        let mut calls = Vec::with_capacity(num_rings as usize);
        for i in 0..num_rings as usize {
            let kick = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
            let call = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
            wd.call("SET_VRING_KICK", || fe.set_vring_kick(i, &kick))?;
            wd.call("SET_VRING_CALL", || fe.set_vring_call(i, &call))?;
            kicks.push(kick);
            calls.push(call);
        }
        for i in 0..num_rings as usize {
            wd.call("SET_VRING_ENABLE", || fe.set_vring_enable(i, true))?;
        }
        let waits = call_waits(&calls, fe.as_raw_fd())
            .map_err(|e| Error::io("set up the wait on the call eventfds", e))?;

        let mut t = Self {
            name,
            frontend: fe,
            watchdog: wd,
            ctl,
            _backend_channel: channel,
            config: PtnetConfig::default(),
            config_valid: false,
            netmap,
            guest_mem,
            _guest_memfd: guest_memfd,
            kicks,
            _calls: calls,
            waits,
            num_rings,
            raw,
        };
        t.refresh_config()?;
        let geo = t.config.geometry();
        if geo.num_rings() != num_rings {
            return Err(Error::QueueCountMismatch {
                queues: num_rings,
                tx: geo.num_tx_rings,
                rx: geo.num_rx_rings,
            });
        }
        if geo.mem_size != size0 {
            return Err(Error::MemorySize {
                size: geo.mem_size,
                available: size0,
            });
        }
        Ok(t)
    }

    /// Test hook for hostile-frontend tests: sends SET_VRING_KICK (`kick`) or SET_VRING_CALL for
    /// `ring` with `fd`, whatever it is, as a frontend that breaks the rules would (the transport
    /// itself goes on kicking and waiting on its own eventfds). `Ok(true)` when the daemon
    /// acknowledged it, `Ok(false)` when it refused (a NACK, or the connection closed).
    #[doc(hidden)]
    pub fn send_raw_vring_fd(
        &mut self,
        ring: u32,
        kick: bool,
        fd: BorrowedFd<'_>,
    ) -> Result<bool, Error> {
        use std::io::Read;
        use vmm_sys_util::sock_ctrl_msg::ScmSocket;
        // vhost-user: request SET_VRING_KICK 12 / SET_VRING_CALL 13, flags version 1 |
        // NEED_REPLY, an 8-byte body holding the ring index (the descriptor rides along).
        let request: u32 = if kick { 12 } else { 13 };
        let mut msg = Vec::with_capacity(20);
        for w in [request, 0x1 | VhostUserHeaderFlag::NEED_REPLY.bits(), 8] {
            msg.extend_from_slice(&w.to_le_bytes());
        }
        msg.extend_from_slice(&u64::from(ring).to_le_bytes());
        self.raw
            .send_with_fd(&msg[..], fd.as_raw_fd())
            .map_err(|e| Error::io(format!("vhost-user raw request {request}"), e.into()))?;
        let mut reply = [0u8; 20];
        if self.raw.read_exact(&mut reply).is_err() {
            return Ok(false);
        }
        let status = u64::from_le_bytes(reply[12..20].try_into().expect("8 bytes"));
        Ok(status == 0)
    }

    /// GET_INFLIGHT_FD: the port memory the daemon gave this connection, as a file that outlives
    /// the daemon (for ptnet the inflight region is the port memory; see
    /// `ptnet_protocol::device`), with its size.
    pub fn port_memory_file(&mut self) -> Result<(std::fs::File, u64), Error> {
        let ask = VhostUserInflight {
            mmap_size: 0,
            mmap_offset: 0,
            num_queues: 1,
            queue_size: 1,
        };
        let (info, file) = self
            .watchdog
            .call("GET_INFLIGHT_FD", || self.frontend.get_inflight_fd(&ask))?;
        Ok((file, info.mmap_size))
    }

    /// SET_INFLIGHT_FD: gives a restarted daemon the port memory a previous one handed out
    /// ([`Self::port_memory_file`]), as our QEMU does when it reconnects; a daemon whose own copy
    /// has not gone live takes the contents.
    pub fn give_back_port_memory(&mut self, file: &std::fs::File, size: u64) -> Result<(), Error> {
        let info = VhostUserInflight {
            mmap_size: size,
            mmap_offset: 0,
            num_queues: 1,
            queue_size: 1,
        };
        self.watchdog.call("SET_INFLIGHT_FD", || {
            self.frontend.set_inflight_fd(&info, file.as_raw_fd())
        })
    }

    /// The daemon hung up.
    fn disconnected(&self) -> Error {
        Error::Disconnected {
            port: self.name.clone(),
        }
    }

    /// [`wait_edges`] on this transport's rings, the daemon's hang-up as [`Error::Disconnected`].
    fn wait_edges(&self, rings: &[u32], timeout: Option<Duration>) -> Result<bool, Error> {
        match wait_edges(&self.waits, rings, timeout)
            .map_err(|e| Error::io("wait for the call eventfds", e))?
        {
            Woke::Rings => Ok(true),
            Woke::Timeout => Ok(false),
            Woke::HungUp => Err(self.disconnected()),
        }
    }

    fn refresh_config(&mut self) -> Result<(), Error> {
        let payload = self.read_config(0, CONFIG_SIZE as u32)?;
        self.config = PtnetConfig::from_bytes(&payload);
        self.config_valid = true;
        Ok(())
    }

    fn config(&mut self) -> Result<&PtnetConfig, Error> {
        if !self.config_valid {
            self.refresh_config()?;
        }
        Ok(&self.config)
    }
}

/// Creates and maps the memfd that stands for guest RAM.
fn make_guest_memory() -> Result<(OwnedFd, Mapping), Error> {
    let fd = sys::memfd_create(c"ptnet-guest-mem", GUEST_MEM_SIZE as u64)
        .map_err(|e| Error::io("create the sealed guest memory memfd", e))?;
    let file = std::fs::File::from(fd);
    let map = Mapping::map_shared(file.as_raw_fd(), 0, GUEST_MEM_SIZE)
        .map_err(|e| Error::io("mmap the guest memory", e))?;
    Ok((OwnedFd::from(file), map))
}

/// The transport's wait: every call eventfd edge-triggered with its ring number as the token, and
/// the main socket `sock` level-triggered. An eventfd watched edge-triggered reports a new event
/// on every write to it, read or not, so the waits never read the call eventfds: the wait is the
/// whole cost of a wake-up (`poll` would need a drain `read` after it). The counters, never
/// read, grow by one an interrupt; a write that would take one past `u64::MAX - 1` fails and
/// wakes nobody, which only someone writing huge values on purpose reaches (the daemon writes 1).
fn call_waits(calls: &[EventFd], sock: RawFd) -> io::Result<Epoll> {
    let ep = Epoll::new()?;
    let edge = EventSet::IN | EventSet::EDGE_TRIGGERED;
    for (r, c) in calls.iter().enumerate() {
        let ev = EpollEvent::new(edge, r as u64);
        ep.ctl(ControlOperation::Add, c.as_raw_fd(), ev)?;
    }
    let ev = EpollEvent::new(EventSet::IN, SOCKET_TOKEN);
    ep.ctl(ControlOperation::Add, sock, ev)?;
    Ok(ep)
}

/// How [`wait_edges`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    /// One of the rings waited on was interrupted.
    Rings,
    /// The timeout passed first.
    Timeout,
    /// The main socket became readable: the daemon hung up.
    HungUp,
}

/// Sleeps in `ep` (made by [`call_waits`]) until one of `rings` is interrupted or `timeout`
/// passes: one `epoll_wait` a wake-up, nothing read. Interrupts of other rings that come
/// meanwhile are taken and ignored: every wait syncs its rings before it sleeps, so an interrupt
/// announcing something from before that sync is never needed by a later wait.
fn wait_edges(ep: &Epoll, rings: &[u32], timeout: Option<Duration>) -> io::Result<Woke> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut out = [EpollEvent::default(); ptnet::MAX_RINGS as usize + 1];
    loop {
        let ms = sys::timeout_ms(deadline.map(|d| d.saturating_duration_since(Instant::now())));
        let n = match ep.wait(ms, &mut out) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let mut hit = false;
        for e in &out[..n] {
            if e.data() == SOCKET_TOKEN {
                return Ok(Woke::HungUp);
            }
            hit |= rings.iter().any(|&r| u64::from(r) == e.data());
        }
        if hit {
            return Ok(Woke::Rings);
        }
        // A timeout, EINTR or only other rings' interrupts: go on until the deadline.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Woke::Timeout);
        }
    }
}

/// Waits until one of `fds` (at most 64) is readable or hung up. Returns a bit mask of the ready
/// ones, 0 on timeout.
fn poll_fds(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<u64> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 64];
    let n = fds.len().min(pfds.len());
    for (p, &fd) in pfds.iter_mut().zip(fds) {
        p.fd = fd;
        p.events = libc::POLLIN;
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = sys::timeout_ms(deadline.map(|d| d.saturating_duration_since(Instant::now())));
        match sys::poll(&mut pfds[..n], ms) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() < d) {
                    continue;
                }
                return Ok(0);
            }
            Ok(_) => {
                let ready = pfds[..n]
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.revents != 0)
                    .fold(0u64, |m, (i, _)| m | 1 << i);
                return Ok(ready);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Transport for VhostUserTransport {
    fn read_reg(&mut self, off: u32) -> Result<u32, Error> {
        if off >= ptnet::END {
            return Ok(0);
        }
        Ok(self.config()?.get(off))
    }

    fn write_reg(&mut self, off: u32, val: u32) -> Result<(), Error> {
        if off >= ptnet::KICK_BASE {
            let ring = (off - ptnet::KICK_BASE) / 4;
            if ring < self.num_rings {
                self.kick(ring);
            }
            return Ok(());
        }
        self.config_valid = false;
        let what = format!("SET_CONFIG of register {off}");
        self.watchdog.call(&what, || {
            self.frontend
                .set_config(off, VhostUserConfigFlags::empty(), &val.to_le_bytes())
        })
    }

    fn read_memdev(&mut self, off: u32) -> Result<u32, Error> {
        Ok(self.config()?.get(MEMDEV_CONFIG_BASE + off))
    }

    fn netmap_mem(&mut self) -> Result<SharedMem, Error> {
        Ok(self.netmap.shared())
    }

    fn alloc_csb(&mut self, rings: u32) -> Result<CsbArrays, Error> {
        let size = csb::array_size(rings);
        if rings == 0 || size > KTOA_OFFSET {
            return Err(Error::CsbRings {
                rings,
                max: (KTOA_OFFSET / csb::array_size(1)) as u32,
            });
        }
        let mem = self.guest_mem.shared();
        mem.zero(0, 2 * KTOA_OFFSET);
        let atok = mem.sub(0, size).expect("inside the guest memory");
        let ktoa = mem.sub(KTOA_OFFSET, size).expect("inside the guest memory");
        Ok(CsbArrays {
            atok,
            atok_gpa: GUEST_MEM_GPA,
            ktoa,
            ktoa_gpa: GUEST_MEM_GPA + KTOA_OFFSET as u64,
        })
    }

    fn kick(&self, ring: u32) {
        if let Some(k) = self.kicks.get(ring as usize) {
            // EAGAIN (counter saturated) still leaves the eventfd readable: nothing is lost.
            let _ = k.write(1);
        }
    }

    fn wait(&self, ring: u32, timeout: Option<Duration>) -> Result<bool, Error> {
        self.wait_many(&[ring], timeout)
    }

    fn wait_many(&self, rings: &[u32], timeout: Option<Duration>) -> Result<bool, Error> {
        if !rings.iter().any(|&r| r < self.num_rings) {
            return Err(Error::UnknownRings(rings.to_vec()));
        }
        self.wait_edges(rings, timeout)
    }

    fn wait_fds(&self, rings: &[u32], out: &mut [RawFd]) -> Option<PollWait> {
        // The epoll instance itself: it polls readable while an interrupt (or the daemon's
        // hang-up) waits in it, until `wait_done` takes it.
        if rings.iter().any(|&r| r >= self.num_rings) {
            return None;
        }
        *out.first_mut()? = self.waits.as_raw_fd();
        Some(PollWait { n: 1, cap: None })
    }

    fn wait_done(&self, rings: &[u32], ready: &[bool]) -> Result<(), Error> {
        if ready.first().copied().unwrap_or(false) {
            // Takes what fired (and reports a hang-up) without waiting.
            self.wait_edges(rings, Some(Duration::ZERO))?;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A "daemon" that accepts one connection and hangs up at once.
    fn hang_up_daemon(name: &str) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
        let path =
            std::env::temp_dir().join(format!("ptnet-vu-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            drop(s);
        });
        (path, t)
    }

    #[test]
    fn a_daemon_that_hangs_up_is_a_matchable_disconnect() {
        let (path, t) = hang_up_daemon("hangup");
        let res = VhostUserTransport::open(&path);
        t.join().unwrap();
        match res {
            Err(e @ Error::Disconnected { .. }) => {
                assert!(e.is_disconnected());
                let Error::Disconnected { port } = &e else {
                    unreachable!()
                };
                assert_eq!(*port, format!("vhost-user:{}", path.display()));
                assert!(
                    e.to_string().ends_with("the daemon closed the connection"),
                    "{e}"
                );
            }
            Err(e) => panic!("not a disconnect: {e:?}"),
            Ok(_) => panic!("attached to nothing"),
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_wait_costs_one_call_per_wake_up_and_ignores_other_rings() {
        let calls: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let (sock, peer) = UnixStream::pair().unwrap();
        let ep = call_waits(&calls, sock.as_raw_fd()).unwrap();
        let ms = |n| Some(Duration::from_millis(n));
        // Nothing written: a timeout, not before its time.
        let t = Instant::now();
        assert_eq!(wait_edges(&ep, &[0, 2], ms(30)).unwrap(), Woke::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(30));
        // Many interrupts, one wake-up, nothing read: the next wait sleeps again.
        for _ in 0..100 {
            calls[2].write(1).unwrap();
        }
        assert_eq!(wait_edges(&ep, &[0, 2], None).unwrap(), Woke::Rings);
        assert_eq!(wait_edges(&ep, &[0, 2], ms(10)).unwrap(), Woke::Timeout);
        // Another ring's interrupt does not end the wait; one from another thread does.
        calls[1].write(1).unwrap();
        let c0 = calls[0].try_clone().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c0.write(1).unwrap();
        });
        let start = Instant::now();
        assert_eq!(wait_edges(&ep, &[0], ms(5000)).unwrap(), Woke::Rings);
        assert!(start.elapsed() >= Duration::from_millis(15));
        t.join().unwrap();
        // A zero timeout takes what is pending without sleeping.
        calls[0].write(1).unwrap();
        assert_eq!(
            wait_edges(&ep, &[0], Some(Duration::ZERO)).unwrap(),
            Woke::Rings
        );
        assert_eq!(
            wait_edges(&ep, &[0], Some(Duration::ZERO)).unwrap(),
            Woke::Timeout
        );
        assert_eq!(calls[2].read().unwrap(), 100, "the counters are never read");
        // The daemon hanging up ends every wait, and keeps doing so.
        drop(peer);
        for _ in 0..2 {
            assert_eq!(wait_edges(&ep, &[0], None).unwrap(), Woke::HungUp);
        }
    }

    #[test]
    fn no_daemon_is_an_io_error_naming_the_socket() {
        let path = std::env::temp_dir().join(format!("ptnet-vu-none-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        match VhostUserTransport::open(&path) {
            Err(Error::Io { what, source }) => {
                assert!(what.contains(&path.display().to_string()), "{what}");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("attached to nothing"),
        }
    }
}
