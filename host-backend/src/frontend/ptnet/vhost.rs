//! The vhost-user glue: [`PtnetDevice`] answers the `vhost` crate's requests by calling the
//! state machine ([`PtnetState`]) and turning its refusals into NACKs and rate-limited log
//! lines. The SHMEM_MAP owed after SET_BACKEND_REQ_FD and the "inflight" region (the port
//! memory, see `ptnet_protocol::device`) are handled here.

use super::memory::{GuestMemory, MemoryRegion, MAX_REGIONS};
use super::served::ServedPort;
use super::state::{DeviceError, PtnetState, RingFd};
use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::served::Port;
use crate::sys::MappedFile;
use ptnet_protocol::device::{
    PtnetConfig, NETMAP_SHMEM_ID, PROTOCOL_FEATURES, VHOST_USER_F_PROTOCOL_FEATURES,
};
use std::fs::File;
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

/// The state of one port's vhost-user device across messages of one connection.
pub struct PtnetDevice {
    state: PtnetState<ServedPort>,
    backend: Option<Backend>,
    shmem_map_pending: bool,
    refusals: RefusalLog,
    config_refused: bool,
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
        Self {
            state: PtnetState::new(ServedPort { port, opts }),
            backend: None,
            shmem_map_pending: false,
            refusals: RefusalLog::default(),
            config_refused: false,
        }
    }

    /// Logs a refusal, unless one was logged less than a second ago.
    fn log_refusal(&mut self, what: &dyn std::fmt::Display) {
        let now = Instant::now();
        let log = &mut self.refusals;
        if log
            .last
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                port = self.state.port().port.name(),
                refused_unlogged = log.unlogged,
                "frontend sent {what}; refused"
            );
            log.last = Some(now);
            log.unlogged = 0;
        } else {
            log.unlogged += 1;
        }
    }

    /// Refuses a request: NACK, and a log line unless one was written less than a second ago.
    fn refuse<T>(&mut self, what: &dyn std::fmt::Display) -> VuResult<T> {
        self.log_refusal(what);
        Err(VuError::InvalidParam)
    }

    /// A state machine answer as a vhost-user one: refusals are logged, and NACKed if they nack.
    fn check<T: Default>(&mut self, r: Result<T, DeviceError>) -> VuResult<T> {
        match r {
            Ok(v) => Ok(v),
            Err(e) if e.nacks() => self.refuse(&e),
            Err(e) => {
                self.log_refusal(&e);
                Ok(T::default())
            }
        }
    }

    /// The port this device serves.
    pub fn port(&self) -> &Arc<Port> {
        &self.state.port().port
    }

    /// The state machine.
    pub fn state(&self) -> &PtnetState<ServedPort> {
        &self.state
    }

    /// The current config space (for tests and logs).
    pub fn config(&self) -> &PtnetConfig {
        self.state.config()
    }

    /// Is the sync loop running?
    pub fn running(&self) -> bool {
        self.state.running()
    }

    /// Sends the SHMEM_MAP owed since SET_BACKEND_REQ_FD. Called by the connection loop after
    /// the request that set up the channel has been acknowledged, so a frontend that waits for
    /// that acknowledgement before reading its backend channel does not deadlock.
    pub fn flush_backend_requests(&mut self) {
        if !std::mem::take(&mut self.shmem_map_pending) {
            return;
        }
        let Some(b) = &self.backend else { return };
        let port = &self.state.port().port;
        let (file, size) = port.memory_file();
        let req = VhostUserMMap {
            shmid: NETMAP_SHMEM_ID,
            padding: [0; 7],
            fd_offset: 0,
            shm_offset: 0,
            len: size,
            flags: VhostUserMMapFlags::WRITABLE.bits(),
        };
        match b.shmem_map(&req, file) {
            Ok(_) => tracing::debug!(port = port.name(), size, "sent SHMEM_MAP"),
            Err(e) => tracing::warn!(port = port.name(), "SHMEM_MAP failed: {e}"),
        }
    }

    /// Stops the rings (PTCTL DELETE; also on disconnect and CSB changes).
    pub fn stop(&mut self) {
        self.state.stop();
    }

    /// The frontend went away: stop, and forget everything it gave us. The rate limit on
    /// refusal lines outlives connections: reconnecting does not buy log lines.
    pub fn disconnect(&mut self) {
        self.state.disconnect();
        self.backend = None;
        self.shmem_map_pending = false;
        self.config_refused = false;
    }

    /// Was the last request a refused SET_CONFIG? The frontend had its NACK (REPLY_ACK) or asked
    /// for no answer, and the message was read whole, so the connection can go on: a register
    /// write is refused, not punished. (Other refusals close the connection: a frontend may be
    /// waiting for a reply that will not come.)
    pub fn take_config_refusal(&mut self) -> bool {
        std::mem::take(&mut self.config_refused)
    }

    /// Handles a register write (SET_CONFIG of 4 bytes).
    pub fn write_register(&mut self, off: u32, val: u32) -> VuResult<()> {
        let r = self.state.write_register(off, val);
        self.check(r)
    }

    fn ring_index(&mut self, index: u32) -> VuResult<u32> {
        let r = self.state.ring_index(index);
        self.check(r)
    }

    fn set_ring_fd(&mut self, kind: RingFd, index: u8, fd: Option<File>) -> VuResult<()> {
        let r = self.state.set_ring_fd(kind, u32::from(index), fd);
        self.check(r)
    }

    /// SET_INFLIGHT_FD: the port memory a previous daemon gave, copied in when nothing of ours
    /// has gone live and the layout is ours. Best effort: anything else is logged.
    fn restore_inflight(&mut self, inflight: &VhostUserInflight, file: File) -> VuResult<()> {
        let port = self.port().clone();
        let name = port.name();
        let Some(mem) = port.threads_memory() else {
            return self.refuse(&"SET_INFLIGHT_FD on a kernel netmap port");
        };
        if self.state.running() || !port.first_start() {
            tracing::info!(
                port = name,
                "SET_INFLIGHT_FD: the port's memory is live; kept"
            );
            return Ok(());
        }
        let size = mem.size();
        if inflight.mmap_offset != 0 || inflight.mmap_size < size as u64 {
            self.log_refusal(&format!(
                "SET_INFLIGHT_FD of {} bytes at {} (the port memory is {size} bytes at 0)",
                inflight.mmap_size, inflight.mmap_offset
            ));
            return Ok(());
        }
        let old = match MappedFile::map_guest(file, 0, size) {
            Ok(m) => m,
            Err(e) => {
                self.log_refusal(&format!("SET_INFLIGHT_FD: {e}"));
                return Ok(());
            }
        };
        match mem.restore_from(old.mem()) {
            Ok(true) => tracing::info!(
                port = name,
                bytes = size,
                "port memory restored from the previous daemon's"
            ),
            Ok(false) => {}
            Err(why) => self.log_refusal(&format!("SET_INFLIGHT_FD: the memory given back: {why}")),
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
        let r = self.state.set_features(features);
        self.check(r)
    }
    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        let regions: Vec<MemoryRegion> = ctx
            .iter()
            .map(|r| MemoryRegion {
                guest_phys_addr: r.guest_phys_addr,
                memory_size: r.memory_size,
                mmap_offset: r.mmap_offset,
            })
            .collect();
        match GuestMemory::from_table(&regions, files, GuestMemory::max_per_connection()) {
            Ok(mem) => {
                self.state.set_memory(mem);
                Ok(None)
            }
            Err(e) => self.refuse(&e),
        }
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
        Ok(VhostUserVringState::new(i, 0))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.set_ring_fd(RingFd::Kick, index, fd)
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.set_ring_fd(RingFd::Call, index, fd)
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
        let r = self.state.set_protocol_features(features);
        self.check(r)
    }
    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.state.num_rings()))
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
        let r = self.state.read_config(offset, size).map(<[u8]>::to_vec);
        self.check(r)
    }
    fn set_config(
        &mut self,
        offset: u32,
        buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        let r = self.state.set_config(offset, buf);
        let res = self.check(r);
        self.config_refused = res.is_err();
        res
    }
    fn set_backend_req_fd(&mut self, backend: Backend) {
        let shmem =
            self.state.protocol_features() & ptnet_protocol::device::protocol_features::SHMEM != 0;
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
        let Some(mem) = self.port().threads_memory() else {
            return self.refuse(&"GET_INFLIGHT_FD on a kernel netmap port");
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
    /// A reconnecting frontend gives back the port memory a previous daemon gave it
    /// ([`crate::port::mem::NetmapMemory::restore_from`]).
    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, file: File) -> VuResult<()> {
        self.restore_inflight(inflight, file)
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
        Ok(VhostUserShMemConfig::new(1, &[self.port().memory_file().1]))
    }
    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(VuError::InvalidOperation("no dirty logging"))
    }
}
