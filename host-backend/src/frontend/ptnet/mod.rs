//! The vhost-user device: one per port, speaking the contract of `ptnet_protocol::device` with
//! whichever frontend is connected (QEMU with our patch, or the driver's vhost-user transport).
//!
//! Everything the frontend sends is checked here: config offsets and sizes, ring indexes, memory
//! regions, and the CSB addresses, which must lie inside the guest memory the frontend shared.

pub mod syncloop;

use crate::frontend::ptnet::syncloop::{
    csb_entries, FrontendRings, LoopOptions, RingIo, RingRunner,
};
use crate::kernel::KernelLoop;
use crate::served::{Datapath, Port};
use crate::sys::{set_nonblocking, MappedFile};
use ptnet_protocol::csb;
use ptnet_protocol::device::{
    is_writable_register, PtnetConfig, CONFIG_SIZE, NETMAP_SHMEM_ID, PROTOCOL_FEATURES,
    VHOST_USER_F_PROTOCOL_FEATURES,
};
use ptnet_protocol::regs::{ptnet, EINVAL, ENXIO, PTCTL_CREATE, PTCTL_DELETE, PTCTL_RESUME};
use ptnet_protocol::shmem::SharedMem;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMMap, VhostUserMMapFlags, VhostUserMemoryRegion,
    VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::VhostUserFrontendReqHandler as _;
use vhost::vhost_user::{
    Backend, Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;

/// The frontend's guest memory, as SET_MEM_TABLE described it.
///
/// Each region is a memfd sealed against shrinking and lies inside its file, so the daemon's
/// mappings of it never fault (see `crate::sys`); the regions of one table add up to at most
/// [`GuestMemory::max_per_connection`] bytes, so a few frontends cannot fill the daemon's address
/// space (with sparse memfds of many TiB) and make other ports' CREATE fail.
#[derive(Default)]
pub struct GuestMemory {
    regions: Vec<(u64, MappedFile)>,
}

/// `--max-guest-memory`: most bytes of guest memory one connection's table may map.
static MAX_GUEST_MEMORY: AtomicU64 = AtomicU64::new(DEFAULT_MAX_GUEST_MEMORY);

/// The default of `--max-guest-memory`: 64 GiB, so 2000 connections at their cap still fit in the
/// 128 TiB of a process's address space.
pub const DEFAULT_MAX_GUEST_MEMORY: u64 = 64 << 30;

impl GuestMemory {
    /// Sets the cap on the guest memory one connection maps (`--max-guest-memory`).
    pub fn set_max_per_connection(bytes: u64) {
        MAX_GUEST_MEMORY.store(bytes, Ordering::Relaxed);
    }

    /// The cap on the guest memory one connection maps.
    pub fn max_per_connection() -> u64 {
        MAX_GUEST_MEMORY.load(Ordering::Relaxed)
    }

    /// The window `[gpa, gpa + len)`, if it lies inside one region.
    pub fn translate(&self, gpa: u64, len: usize) -> Option<SharedMem> {
        self.regions.iter().find_map(|(base, map)| {
            let off = gpa.checked_sub(*base)?;
            let off = usize::try_from(off).ok()?;
            map.mem().sub(off, len)
        })
    }
}

/// Most memory regions accepted in one SET_MEM_TABLE.
const MAX_REGIONS: usize = 32;

/// The state of one port's vhost-user device across messages of one connection.
pub struct PtnetDevice {
    port: Arc<Port>,
    opts: LoopOptions,
    config: PtnetConfig,
    offered_ptfeat: u32,
    protocol_features: u64,
    memory: Option<Arc<GuestMemory>>,
    kicks: Vec<Option<File>>,
    calls: Vec<Option<File>>,
    backend: Option<Backend>,
    shmem_map_pending: bool,
    running: Option<Running>,
    refusals: RefusalLog,
    config_refused: bool,
    /// The guest's last PTFEAT write accepted `PTNETMAP_F_VNET_HDR`.
    vnet_hdr_accepted: bool,
}

/// The rings of a started device.
enum Running {
    /// Our threads, one per ring.
    Threads(RingRunner),
    /// The kernel's sync loop (kernel netmap ports).
    Kernel(KernelLoop),
}

/// Log lines about a frontend's refused requests: at most one a second per device, each telling
/// how many were refused without a line since the last, so a hostile frontend cannot flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

impl PtnetDevice {
    /// A device for `port`, in its state before any frontend talked to it.
    pub fn new(port: Arc<Port>, opts: LoopOptions) -> Self {
        let n = port.num_rings() as usize;
        let geo = *port.geometry();
        // A fresh device is a fresh port: no header until a guest negotiates one.
        if let Some(len) = port.vnet_hdr_len() {
            len.store(0, Ordering::Relaxed);
        }
        Self {
            offered_ptfeat: geo.features,
            config: PtnetConfig::new(&geo),
            port,
            opts,
            protocol_features: 0,
            memory: None,
            kicks: (0..n).map(|_| None).collect(),
            calls: (0..n).map(|_| None).collect(),
            backend: None,
            shmem_map_pending: false,
            running: None,
            refusals: RefusalLog::default(),
            config_refused: false,
            vnet_hdr_accepted: false,
        }
    }

    /// Refuses a request: NACK, and a log line unless one was written less than a second ago.
    fn refuse<T>(&mut self, what: &str) -> VuResult<T> {
        let now = Instant::now();
        let log = &mut self.refusals;
        if log
            .last
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                port = self.port.name(),
                refused_unlogged = log.unlogged,
                "frontend sent {what}; refused"
            );
            log.last = Some(now);
            log.unlogged = 0;
        } else {
            log.unlogged += 1;
        }
        Err(VuError::InvalidParam)
    }

    /// The port this device serves.
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// The current config space (for tests and logs).
    pub fn config(&self) -> &PtnetConfig {
        &self.config
    }

    /// Is the sync loop running?
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// Sends the SHMEM_MAP owed since SET_BACKEND_REQ_FD. Called by the connection loop after
    /// the request that set up the channel has been acknowledged, so a frontend that waits for
    /// that acknowledgement before reading its backend channel does not deadlock.
    pub fn flush_backend_requests(&mut self) {
        if !std::mem::take(&mut self.shmem_map_pending) {
            return;
        }
        let Some(b) = &self.backend else { return };
        let (file, size) = self.port.memory_file();
        let req = VhostUserMMap {
            shmid: NETMAP_SHMEM_ID,
            padding: [0; 7],
            fd_offset: 0,
            shm_offset: 0,
            len: size,
            flags: VhostUserMMapFlags::WRITABLE.bits(),
        };
        match b.shmem_map(&req, file) {
            Ok(_) => tracing::debug!(port = self.port.name(), size, "sent SHMEM_MAP"),
            Err(e) => tracing::warn!(port = self.port.name(), "SHMEM_MAP failed: {e}"),
        }
    }

    /// Stops the rings (PTCTL DELETE; also on disconnect and CSB changes).
    pub fn stop(&mut self) {
        match self.running.take() {
            Some(Running::Threads(r)) => self.port.put_workers(r.stop()),
            Some(Running::Kernel(k)) => k.stop(),
            None => return,
        }
        tracing::info!(
            port = self.port.name(),
            "rings stopped ({})",
            self.port.stats_line()
        );
    }

    /// The frontend went away: stop, and forget everything it gave us.
    pub fn disconnect(&mut self) {
        self.stop();
        self.port.frontend_gone();
        let mut fresh = Self::new(self.port.clone(), self.opts);
        // The rate limit outlives connections: reconnecting does not buy log lines.
        fresh.refusals = std::mem::take(&mut self.refusals);
        *self = fresh;
    }

    /// PTCTL CREATE, or RESUME (`resume`: the frontend's guest ran before it reconnected).
    fn create(&mut self, resume: bool) -> u32 {
        if self.running.is_some() {
            return 0;
        }
        let name = self.port.name().to_string();
        let n = self.port.num_rings();
        let (gh, hg) = self.config.csb_addresses();
        let size = csb::array_size(n);
        let Some(mem) = self.memory.clone() else {
            tracing::warn!(port = name, "CREATE before SET_MEM_TABLE");
            return ENXIO;
        };
        let (Some(atok), Some(ktoa)) = (
            (gh != 0).then(|| mem.translate(gh, size)).flatten(),
            (hg != 0).then(|| mem.translate(hg, size)).flatten(),
        ) else {
            tracing::warn!(
                port = name,
                "CREATE with CSB arrays {gh:#x}/{hg:#x} not inside guest memory"
            );
            return ENXIO;
        };
        let mut kicks = Vec::with_capacity(n as usize);
        for (i, k) in self.kicks.iter().enumerate() {
            let Some(kick) = k.as_ref().and_then(|f| f.try_clone().ok()) else {
                tracing::warn!(
                    port = name,
                    ring = i,
                    "CREATE without a kick eventfd for the ring"
                );
                return ENXIO;
            };
            kicks.push(kick);
        }
        let calls: Vec<Option<File>> = self
            .calls
            .iter()
            .map(|c| c.as_ref().and_then(|f| f.try_clone().ok()))
            .collect();
        let fe = FrontendRings {
            atok,
            ktoa,
            kicks,
            calls,
            keep: mem,
        };
        let started = match self.port.datapath() {
            Datapath::Threads { .. } => self.start_threads(&name, fe, resume),
            Datapath::Kernel(k) => KernelLoop::start(k.clone(), &name, fe)
                .map(Running::Kernel)
                .map_err(|e| {
                    tracing::error!(port = name, "the kernel refused its sync loop: {e}");
                    e.raw_os_error()
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(ENXIO)
                }),
        };
        match started {
            Ok(r) => {
                self.running = Some(r);
                tracing::info!(port = name, rings = n, "rings started");
                0
            }
            Err(code) => code,
        }
    }

    /// Starts one sync thread per ring (userspace netmap ports). Errors are PTCTL results.
    fn start_threads(&self, name: &str, fe: FrontendRings, resume: bool) -> Result<Running, u32> {
        let FrontendRings {
            atok,
            ktoa,
            kicks,
            calls,
            keep,
        } = fe;
        let io: Vec<RingIo> = kicks
            .into_iter()
            .zip(calls)
            .enumerate()
            .map(|(i, (kick, call))| {
                let (a, k) =
                    csb_entries(&atok, &ktoa, i as u32).expect("array sized for every ring");
                RingIo {
                    atok: a,
                    ktoa: k,
                    kick,
                    call,
                }
            })
            .collect();
        let Some(mut workers) = self.port.take_workers() else {
            tracing::warn!(port = name, "rings already running for another connection");
            return Err(ENXIO);
        };
        // A RESUME adopts the guest's positions only where this daemon never ran the rings: its
        // memory is then new to the guest. Otherwise the memory and our state are the ones the
        // guest has been using, and a plain start is right.
        let adopt = resume && self.port.first_start();
        let restored = self.port.threads_memory().is_some_and(|m| m.restored());
        for (w, io) in workers.iter_mut().zip(&io) {
            if !adopt {
                w.kring.start(&io.atok, &io.ktoa);
                continue;
            }
            let ring = self
                .port
                .ring_view(w.index)
                .expect("a threads port has ring views");
            // With the guest's own memory back (SET_INFLIGHT_FD), its buffers and ring headers
            // stand; without it, RESUME sets up the fresh memory to match the CSB.
            let resumed = if restored {
                w.kring.resume_in_place(w.is_tx, &io.atok, &io.ktoa)
            } else {
                w.kring.resume(w.is_tx, &io.atok, &io.ktoa, &ring)
            };
            match resumed {
                Ok((head, hwtail)) => {
                    if let Some(rx) = w.sync.direct_rx() {
                        rx.adopt(head, hwtail);
                    }
                    tracing::info!(
                        port = name,
                        ring = w.index,
                        head,
                        hwtail,
                        "resumed at the guest's positions"
                    );
                }
                Err(bad) => {
                    tracing::warn!(
                        port = name,
                        ring = w.index,
                        "RESUME: the guest's CSB holds {bad}; starting the ring afresh"
                    );
                    w.kring.start(&io.atok, &io.ktoa);
                }
            }
        }
        self.port.mark_started();
        RingRunner::start(name, workers, io, keep, self.opts)
            .map(Running::Threads)
            .map_err(|(e, workers)| {
                tracing::error!(port = name, "starting ring threads: {e}");
                self.port.put_workers(workers);
                libc::EAGAIN as u32
            })
    }

    fn restart_if_running(&mut self) {
        if self.running.is_some() {
            self.stop();
            let r = self.create(false);
            self.config.set(ptnet::PTCTL, r);
        }
    }

    fn ring_index(&mut self, index: u32) -> VuResult<usize> {
        if index < self.port.num_rings() {
            Ok(index as usize)
        } else {
            self.refuse(&format!(
                "ring index {index} (port has {})",
                self.port.num_rings()
            ))
        }
    }

    /// A SET_CONFIG: one 4-byte write to a writable register.
    fn set_config_register(&mut self, offset: u32, buf: &[u8]) -> VuResult<()> {
        let Ok(bytes) = <[u8; 4]>::try_from(buf) else {
            return self.refuse(&format!(
                "SET_CONFIG of {} bytes (registers are 4)",
                buf.len()
            ));
        };
        if !is_writable_register(offset) {
            return self.refuse(&format!(
                "SET_CONFIG at offset {offset}, not a writable register"
            ));
        }
        self.write_register(offset, u32::from_le_bytes(bytes))
    }

    /// Was the last request a refused SET_CONFIG? The frontend had its NACK (REPLY_ACK) or asked
    /// for no answer, and the message was read whole, so the connection can go on: a register
    /// write is refused, not punished. (Other refusals close the connection: a frontend may be
    /// waiting for a reply that will not come.)
    pub fn take_config_refusal(&mut self) -> bool {
        std::mem::take(&mut self.config_refused)
    }

    /// A VNET_HDR_LEN write: 0, 10 or 12 once the guest accepted PTFEAT VNET_HDR (the length
    /// then reaches the port's rings); anything else keeps the old value and is logged. Not an
    /// error to the frontend: the guest reads back the length in force, as netmap's drivers do.
    fn set_vnet_hdr_len(&mut self, val: u32) {
        let len = usize::try_from(val).unwrap_or(usize::MAX);
        match self.port.vnet_hdr_len() {
            Some(shared) if self.vnet_hdr_accepted && ptnet_protocol::vnet::is_valid_len(len) => {
                if shared.swap(len as u8, Ordering::Relaxed) != len as u8 {
                    tracing::info!(port = self.port.name(), len, "virtio-net header length");
                }
                self.config.set(ptnet::VNET_HDR_LEN, val);
            }
            Some(shared) if val == 0 => {
                shared.store(0, Ordering::Relaxed);
                self.config.set(ptnet::VNET_HDR_LEN, 0);
            }
            // A port without headers: "no header" is what it has.
            None if val == 0 => {}
            _ => {
                let why = if self.vnet_hdr_accepted {
                    "not 0, 10 or 12"
                } else {
                    "PTFEAT VNET_HDR not accepted"
                };
                // Logged, not NACKed: the write itself succeeds.
                let _ = self.refuse::<()>(&format!("VNET_HDR_LEN {val} ({why})"));
            }
        }
    }

    /// Handles a register write (SET_CONFIG of 4 bytes).
    pub fn write_register(&mut self, off: u32, val: u32) -> VuResult<()> {
        match off {
            ptnet::PTFEAT => {
                self.config.set(off, self.offered_ptfeat & val);
                self.vnet_hdr_accepted =
                    self.offered_ptfeat & val & ptnet_protocol::regs::PTNETMAP_F_VNET_HDR != 0;
                if !self.vnet_hdr_accepted {
                    // The feature withdrawn: no header any more.
                    self.set_vnet_hdr_len(0);
                }
            }
            ptnet::PTCTL => {
                let r = match val {
                    PTCTL_CREATE => self.create(false),
                    PTCTL_RESUME => self.create(true),
                    PTCTL_DELETE => {
                        self.stop();
                        0
                    }
                    _ => EINVAL,
                };
                self.config.set(ptnet::PTCTL, r);
            }
            ptnet::VNET_HDR_LEN => self.set_vnet_hdr_len(val),
            ptnet::CSB_GH_BAH | ptnet::CSB_HG_BAH => self.config.set(off, val),
            ptnet::CSB_GH_BAL | ptnet::CSB_HG_BAL => {
                // Remapping a CSB array implies DELETE.
                self.stop();
                self.config.set(off, val);
            }
            _ => return self.refuse(&format!("a write to read-only register {off}")),
        }
        Ok(())
    }
}

impl VhostUserBackendReqHandlerMut for PtnetDevice {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }
    fn reset_owner(&mut self) -> VuResult<()> {
        self.stop();
        Ok(())
    }
    fn reset_device(&mut self) -> VuResult<()> {
        self.stop();
        Ok(())
    }
    fn get_features(&mut self) -> VuResult<u64> {
        Ok(VHOST_USER_F_PROTOCOL_FEATURES)
    }
    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            return self.refuse(&format!("features {features:#x} beyond those offered"));
        }
        Ok(())
    }
    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        if ctx.len() != files.len() || ctx.is_empty() || ctx.len() > MAX_REGIONS {
            return self.refuse("a malformed memory table");
        }
        // The cap first, before anything is mapped.
        let cap = GuestMemory::max_per_connection();
        let total = ctx
            .iter()
            .try_fold(0u64, |t, r| t.checked_add(r.memory_size));
        if total.is_none_or(|t| t > cap) {
            let total = total.map_or("more than 2^64".into(), |t| t.to_string());
            return self.refuse(&format!(
                "a memory table of {} regions and {total} bytes, over the {cap}-byte cap on \
                 guest memory per connection (--max-guest-memory)",
                ctx.len()
            ));
        }
        let mut mem = GuestMemory::default();
        for (i, (r, f)) in ctx.iter().zip(files).enumerate() {
            let (gpa, size, offset) = (r.guest_phys_addr, r.memory_size, r.mmap_offset);
            let Ok(len) = usize::try_from(size) else {
                return self.refuse(&format!("a memory region of {size} bytes"));
            };
            if gpa.checked_add(size).is_none() {
                return self.refuse("a memory region that wraps around");
            }
            let map = match MappedFile::map_guest(f, offset, len) {
                Ok(m) => m,
                Err(e) => {
                    return self.refuse(&format!(
                        "a memory table whose region {i} (guest address {gpa:#x}, {size} bytes \
                         at file offset {offset}) cannot be mapped: {e}"
                    ))
                }
            };
            mem.regions.push((gpa, map));
        }
        // The rings keep the old table alive until they stop; new CSB lookups use the new one.
        self.memory = Some(Arc::new(mem));
        self.restart_if_running();
        Ok(None)
    }
    fn set_vring_num(&mut self, index: u32, _num: u32) -> VuResult<()> {
        self.ring_index(index).map(|_| ())
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        _descriptor: u64,
        _used: u64,
        _available: u64,
        _log: u64,
    ) -> VuResult<()> {
        self.ring_index(index).map(|_| ())
    }
    fn set_vring_base(&mut self, index: u32, _base: u32) -> VuResult<()> {
        self.ring_index(index).map(|_| ())
    }
    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        let i = self.ring_index(index)?;
        Ok(VhostUserVringState::new(i as u32, 0))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = self.ring_index(u32::from(index))?;
        if let Some(f) = &fd {
            // Only an eventfd: a pipe, /dev/zero or a socket could block the ring's reads, or be
            // ready for ever and spin its thread.
            if let Err(why) = crate::sys::check_eventfd(f) {
                return self.refuse(&format!("a kick descriptor for ring {i} {why}"));
            }
            // Not relied on (the frontend shares the description and may clear it: the ring
            // reads with RWF_NOWAIT), but a plain read by anyone else then does not wait either.
            set_nonblocking(f).map_err(|_| VuError::InvalidParam)?;
        }
        self.kicks[i] = fd;
        self.restart_if_running();
        Ok(())
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = self.ring_index(u32::from(index))?;
        if let Some(f) = &fd {
            // Only an eventfd: the interrupt is written from the ring's thread, or from another
            // port's (direct delivery), with RWF_NOWAIT, which a pipe or a file may not honour.
            if let Err(why) = crate::sys::check_eventfd(f) {
                return self.refuse(&format!("an interrupt descriptor for ring {i} {why}"));
            }
            set_nonblocking(f).map_err(|_| VuError::InvalidParam)?;
        }
        self.calls[i] = fd;
        self.restart_if_running();
        Ok(())
    }
    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> VuResult<()> {
        self.ring_index(u32::from(index)).map(|_| ())
    }
    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::from_bits_truncate(
            PROTOCOL_FEATURES,
        ))
    }
    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        if features & !PROTOCOL_FEATURES != 0 {
            return self.refuse(&format!(
                "protocol features {features:#x} beyond those offered"
            ));
        }
        self.protocol_features = features;
        Ok(())
    }
    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.port.num_rings()))
    }
    fn set_vring_enable(&mut self, index: u32, _enable: bool) -> VuResult<()> {
        self.ring_index(index).map(|_| ())
    }
    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        let (o, s) = (offset as usize, size as usize);
        if o.checked_add(s).is_none_or(|end| end > CONFIG_SIZE) {
            return self.refuse(&format!("GET_CONFIG of {size} bytes at {offset}"));
        }
        Ok(self.config.as_bytes()[o..o + s].to_vec())
    }
    fn set_config(
        &mut self,
        offset: u32,
        buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        let res = self.set_config_register(offset, buf);
        self.config_refused = res.is_err();
        res
    }
    fn set_backend_req_fd(&mut self, backend: Backend) {
        let shmem = self.protocol_features & ptnet_protocol::device::protocol_features::SHMEM != 0;
        backend.set_shmem_flag(shmem);
        // No reply requested: the frontend may be busy waiting for our acknowledgement.
        backend.set_reply_ack_flag(false);
        self.backend = Some(backend);
        self.shmem_map_pending = shmem;
    }
    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(VuError::InvalidOperation("not a GPU device"))
    }
    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(VuError::InvalidOperation("no shared objects"))
    }
    /// The "inflight" region of a ptnet device is its port memory (see
    /// `ptnet_protocol::device`): a frontend keeps it to give it back after a restart.
    fn get_inflight_fd(
        &mut self,
        inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        let Some(mem) = self.port.threads_memory() else {
            return self.refuse("GET_INFLIGHT_FD on a kernel netmap port");
        };
        let file = mem.file().try_clone().map_err(VuError::ReqHandlerError)?;
        let answer = VhostUserInflight {
            mmap_size: mem.size() as u64,
            mmap_offset: 0,
            num_queues: inflight.num_queues,
            queue_size: inflight.queue_size,
        };
        Ok((answer, file))
    }
    /// A reconnecting frontend gives back the port memory a previous daemon gave it: copied in
    /// when nothing of ours has gone live and the layout is ours
    /// ([`crate::port::mem::NetmapMemory::restore_from`]). Best effort: anything else is
    /// logged and the connection goes on.
    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, file: File) -> VuResult<()> {
        let name = self.port.name().to_string();
        let Some(mem) = self.port.threads_memory().cloned() else {
            return self.refuse("SET_INFLIGHT_FD on a kernel netmap port");
        };
        if self.running.is_some() || !self.port.first_start() {
            tracing::info!(
                port = name,
                "SET_INFLIGHT_FD: the port's memory is live; kept"
            );
            return Ok(());
        }
        let size = mem.size();
        if inflight.mmap_offset != 0 || inflight.mmap_size < size as u64 {
            let _ = self.refuse::<()>(&format!(
                "SET_INFLIGHT_FD of {} bytes at {} (the port memory is {size} bytes at 0)",
                inflight.mmap_size, inflight.mmap_offset
            ));
            return Ok(());
        }
        let old = match MappedFile::map_guest(file, 0, size) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.refuse::<()>(&format!("SET_INFLIGHT_FD: {e}"));
                return Ok(());
            }
        };
        match mem.restore_from(&old.mem()) {
            Ok(true) => tracing::info!(
                port = name,
                bytes = size,
                "port memory restored from the previous daemon's"
            ),
            Ok(false) => {}
            Err(why) => {
                let _ =
                    self.refuse::<()>(&format!("SET_INFLIGHT_FD: the memory given back: {why}"));
            }
        }
        Ok(())
    }
    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(MAX_REGIONS as u64)
    }
    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        Err(VuError::InvalidOperation("memory slots not offered"))
    }
    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        Err(VuError::InvalidOperation("memory slots not offered"))
    }
    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(VuError::InvalidOperation("no migration"))
    }
    fn check_device_state(&mut self) -> VuResult<()> {
        Err(VuError::InvalidOperation("no migration"))
    }
    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Ok(VhostUserShMemConfig::new(1, &[self.port.memory_file().1]))
    }
    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(VuError::InvalidOperation("no dirty logging"))
    }
}
