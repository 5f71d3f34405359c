//! The vhost-user messages of a net device (virtio device type 1), as QEMU's `vhost-user`
//! netdev sends them: features, the memory table, and per virtqueue its size, addresses, base,
//! kick and call eventfds and enable. Every message that changes the set-up stops the queue
//! pairs and starts again those set up completely (`VirtioNetDevice::apply`); GET_VRING_BASE
//! stops its queue and answers the next avail index.
//!
//! What is offered is what is implemented: protocol features MQ and REPLY_ACK (GET_CONFIG is
//! answered for frontends that ask anyway); no
//! memory slots, inflight memory, dirty log, shared objects or migration state.

use super::config;
use super::mem::FrontendMemory;
use super::VirtioNetDevice;
use std::fs::File;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Backend, Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;

/// The protocol features offered.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    // (Not CONFIG: QEMU's virtio-net keeps its config space itself and warns about a backend
    // that offers it.)
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

impl VirtioNetDevice {
    fn vring(&mut self, index: u32) -> VuResult<usize> {
        if (index as usize) < self.vrings.len() {
            Ok(index as usize)
        } else {
            let n = self.vrings.len();
            self.refuse(&format!("virtqueue {index} (the device has {n})"))
        }
    }

    /// A kick or call descriptor: only an eventfd, made non-blocking (as the ptnet device).
    fn check_fd(&mut self, fd: &Option<File>, what: &str, i: usize) -> VuResult<()> {
        if let Some(f) = fd {
            if let Err(why) = crate::sys::check_eventfd(f) {
                return self.refuse(&format!("a {what} descriptor for queue {i} {why}"));
            }
            crate::sys::set_nonblocking(f).map_err(|_| VuError::InvalidParam)?;
        }
        Ok(())
    }
}

/// `VHOST_USER_SET_VRING_ENABLE`.
const SET_VRING_ENABLE: u32 = 18;
/// Header flags: version 1, reply, need-reply.
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;

impl VirtioNetDevice {
    /// QEMU's virtio-net sends SET_VRING_ENABLE (asking for a reply) at every device reset,
    /// before SET_FEATURES; `vhost` 0.18 refuses it until the features acked
    /// `VHOST_USER_F_PROTOCOL_FEATURES`, without the reply, and QEMU then waits for ever. So
    /// until then this device reads that one message itself (it is queued whole), records the
    /// enable and answers it. True when it did.
    pub fn early_vring_enable(
        &mut self,
        stream: &std::os::unix::net::UnixStream,
    ) -> std::io::Result<bool> {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        if self
            .acked
            .is_some_and(|f| f & config::F_PROTOCOL_FEATURES != 0)
        {
            return Ok(false);
        }
        let mut hdr = [0u8; 12];
        if crate::sys::peek(stream.as_fd(), &mut hdr)? < hdr.len() {
            return Ok(false);
        }
        let word = |i: usize| u32::from_le_bytes(hdr[i..i + 4].try_into().expect("4 bytes"));
        let (req, flags, size) = (word(0), word(4), word(8));
        if req != SET_VRING_ENABLE || size != 8 {
            return Ok(false);
        }
        let mut msg = [0u8; 20];
        (&*stream).read_exact(&mut msg)?;
        let index = u32::from_le_bytes(msg[12..16].try_into().expect("4 bytes"));
        let num = u32::from_le_bytes(msg[16..20].try_into().expect("4 bytes"));
        let ok = (index as usize) < self.vrings.len() && num <= 1;
        if ok {
            self.vrings[index as usize].enabled = num == 1;
        } else {
            let _ = self.refuse::<()>(&format!("SET_VRING_ENABLE {index} {num}"));
        }
        if flags & FLAG_NEED_REPLY != 0 {
            let mut reply = [0u8; 20];
            reply[0..4].copy_from_slice(&SET_VRING_ENABLE.to_le_bytes());
            reply[4..8].copy_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
            reply[8..12].copy_from_slice(&8u32.to_le_bytes());
            reply[12..20].copy_from_slice(&u64::from(!ok).to_le_bytes());
            (&*stream).write_all(&reply)?;
        }
        Ok(true)
    }
}

impl VhostUserBackendReqHandlerMut for VirtioNetDevice {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }
    fn reset_owner(&mut self) -> VuResult<()> {
        self.stop_all();
        Ok(())
    }
    fn reset_device(&mut self) -> VuResult<()> {
        self.stop_all();
        Ok(())
    }
    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.offered)
    }
    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !self.offered != 0 {
            return self.refuse(&format!(
                "features {features:#x} beyond those offered ({:#x})",
                self.offered
            ));
        }
        self.acked = Some(features);
        let conf = self.hdr_conf();
        if let Some(len) = self.port.vnet_hdr_len() {
            len.store(conf.port_len as u8, std::sync::atomic::Ordering::Relaxed);
        }
        self.apply();
        Ok(())
    }
    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        match FrontendMemory::from_table(ctx, files) {
            Ok(m) => {
                self.memory = Some(std::sync::Arc::new(m));
                self.apply();
                Ok(None)
            }
            Err(why) => self.refuse(&why),
        }
    }
    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        let i = self.vring(index)?;
        let ok = num.is_power_of_two() && num <= u32::from(super::MAX_QUEUE_SIZE);
        if !ok {
            return self.refuse(&format!("a queue size of {num}"));
        }
        self.vrings[i].size = num as u16;
        self.vrings[i].broken = false;
        self.apply();
        Ok(())
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let i = self.vring(index)?;
        self.vrings[i].addrs = Some((descriptor, available, used));
        self.vrings[i].broken = false;
        self.apply();
        Ok(())
    }
    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let i = self.vring(index)?;
        // Split rings: the next avail index. Packed rings: the next avail position in the low
        // half (index, wrap counter in bit 15) and, from QEMU, the next used position in the
        // high half (DPDK's virtio-user sends the low half only: used = avail then, which is
        // where a queue stopped cleanly has its used position).
        let packed = self.acked.unwrap_or(0) & config::F_RING_PACKED != 0;
        let (avail, used) = ((base & 0xffff) as u16, (base >> 16) as u16);
        if used != 0 && !packed {
            return self.refuse(&format!("a vring base of {base}"));
        }
        self.stop_all();
        self.vrings[i].next_avail = avail;
        self.vrings[i].next_used = if used != 0 { used } else { avail };
        self.vrings[i].broken = false;
        self.apply();
        Ok(())
    }
    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        let i = self.vring(index)?;
        self.stop_all();
        let v = &self.vrings[i];
        // Packed rings: the used position too, in the high half (QEMU restores both from it).
        let base = if self.acked.unwrap_or(0) & config::F_RING_PACKED != 0 {
            u32::from(v.next_avail) | u32::from(v.next_used) << 16
        } else {
            u32::from(v.next_avail)
        };
        // The queue is stopped until the frontend starts it again (a new kick).
        self.vrings[i].kick = None;
        self.apply();
        Ok(VhostUserVringState::new(index, base))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = self.vring(u32::from(index))?;
        self.check_fd(&fd, "kick", i)?;
        if self.acked.unwrap_or(0) & config::F_PROTOCOL_FEATURES == 0 {
            // Without protocol features a ring starts enabled with its kick.
            self.vrings[i].enabled = true;
        }
        self.vrings[i].kick = fd;
        self.vrings[i].broken = false;
        self.apply();
        Ok(())
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = self.vring(u32::from(index))?;
        self.check_fd(&fd, "call", i)?;
        self.vrings[i].call = fd;
        self.apply();
        Ok(())
    }
    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> VuResult<()> {
        self.vring(u32::from(index)).map(|_| ())
    }
    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(protocol_features())
    }
    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        if features & !protocol_features().bits() != 0 {
            return self.refuse(&format!(
                "protocol features {features:#x} beyond those offered"
            ));
        }
        self.protocol_features = features;
        Ok(())
    }
    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(self.vrings.len() as u64)
    }
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        let i = self.vring(index)?;
        if self.vrings[i].enabled != enable {
            self.vrings[i].enabled = enable;
            self.apply();
        }
        Ok(())
    }
    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        let c = config::config_space(self.port.mac(), self.pairs);
        let (o, s) = (offset as usize, size as usize);
        // Past the fields we have, zeros (QEMU asks for whole structures).
        let mut out = vec![0u8; s.min(256)];
        if s > 256 {
            return self.refuse(&format!("GET_CONFIG of {size} bytes"));
        }
        for (k, b) in out.iter_mut().enumerate() {
            if let Some(v) = o.checked_add(k).and_then(|x| c.get(x)) {
                *b = *v;
            }
        }
        Ok(out)
    }
    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        // The net config space is read-only for a modern driver.
        self.refuse("SET_CONFIG (the config space is read-only)")
    }
    fn set_backend_req_fd(&mut self, _backend: Backend) {}
    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(VuError::InvalidOperation("not a GPU device"))
    }
    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(VuError::InvalidOperation("no shared objects"))
    }
    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        Err(VuError::InvalidOperation("no inflight memory"))
    }
    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(VuError::InvalidOperation("no inflight memory"))
    }
    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(super::mem::MAX_REGIONS as u64)
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
        Err(VuError::InvalidOperation("no shared memory regions"))
    }
    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(VuError::InvalidOperation("no dirty logging"))
    }
}
