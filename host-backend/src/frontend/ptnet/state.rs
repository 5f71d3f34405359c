//! The ptnet device's state machine: the config space (PTCTL and CSB registers), the PTCTL
//! commands and what they start and stop, over a [`DevicePort`].
//!
//! Nothing here knows vhost-user: the glue (`vhost.rs`) turns messages into calls of
//! [`PtnetState`], and each refusal into the [`DeviceError`] or [`PtctlError`] it names. Every
//! check of what a frontend sends (register offsets and sizes, ring indexes, CSB addresses
//! against its guest memory, descriptors) is made here, so it is tested here, with a mock port.

use super::memory::GuestMemory;
use crate::frontend::ptnet::syncloop::FrontendRings;
use ptnet_protocol::csb;
use ptnet_protocol::device::{
    is_writable_register, PortGeometry, PtnetConfig, CONFIG_SIZE, PROTOCOL_FEATURES,
    VHOST_USER_F_PROTOCOL_FEATURES,
};
use ptnet_protocol::regs::{
    ptnet, EINVAL, ENXIO, PTCTL_CREATE, PTCTL_DELETE, PTCTL_RESUME, PTNETMAP_F_VNET_HDR,
};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// What the device needs from the port it serves: its geometry, its virtio-net header length,
/// and a way to run its rings for a frontend and to stop them.
pub trait DevicePort {
    /// The rings running for a frontend (given back to [`DevicePort::stop`]).
    type Running;

    /// The port's name, for log lines.
    fn name(&self) -> &str;
    /// The port as the registers describe it.
    fn geometry(&self) -> &PortGeometry;
    /// The virtio-net header length the port's rings use, if it carries headers.
    fn vnet_hdr_len(&self) -> Option<&AtomicU8>;
    /// Runs the rings with the frontend's CSB arrays and eventfds; `resume`: PTCTL RESUME (the
    /// guest ran the rings before, maybe under a previous daemon).
    fn start(&self, rings: FrontendRings, resume: bool) -> Result<Self::Running, StartError>;
    /// Stops rings [`DevicePort::start`] started.
    fn stop(&self, running: Self::Running);
    /// The counters, as the "rings stopped" log line shows them.
    fn stats_line(&self) -> String;
    /// A frontend went: the port undoes what it set up for it (VALE: its source addresses).
    fn frontend_gone(&self);
}

/// Why a port could not start its rings.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The rings run for another connection.
    #[error("rings already running for another connection")]
    Busy,
    /// A ring thread could not be started.
    #[error("starting ring threads: {0}")]
    Threads(#[source] io::Error),
    /// The kernel refused its sync loop (kernel netmap ports).
    #[error("the kernel refused its sync loop: {0}")]
    Kernel(#[source] io::Error),
}

impl StartError {
    /// The PTCTL result: ENXIO, EAGAIN, or the kernel's errno (ENXIO without one).
    pub fn errno(&self) -> u32 {
        match self {
            Self::Busy => ENXIO,
            Self::Threads(_) => libc::EAGAIN as u32,
            Self::Kernel(e) => e
                .raw_os_error()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(ENXIO),
        }
    }
}

/// Why a PTCTL command failed: the guest reads [`PtctlError::errno`] back from PTCTL.
#[derive(Debug, thiserror::Error)]
pub enum PtctlError {
    /// CREATE or RESUME before any SET_MEM_TABLE: no memory to find the CSB in.
    #[error("CREATE before SET_MEM_TABLE")]
    NoMemory,
    /// The CSB arrays (`gh`, `hg`: guest-physical) are unset, not inside one memory region
    /// each with room for an entry per ring, or not 8-byte aligned (their words are atomics;
    /// netmap's drivers allocate them page-aligned).
    #[error("CREATE with CSB arrays {gh:#x}/{hg:#x} not inside guest memory (or misaligned)")]
    CsbOutside {
        /// Guest-to-host array.
        gh: u64,
        /// Host-to-guest array.
        hg: u64,
    },
    /// A ring has no kick eventfd.
    #[error("CREATE without a kick eventfd for the ring")]
    NoKick {
        /// The ring.
        ring: u32,
    },
    /// The port could not start its rings.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Not a command.
    #[error("PTCTL command {0}")]
    UnknownCommand(u32),
}

impl PtctlError {
    /// What the guest reads back from PTCTL.
    pub fn errno(&self) -> u32 {
        match self {
            Self::NoMemory | Self::CsbOutside { .. } | Self::NoKick { .. } => ENXIO,
            Self::Start(e) => e.errno(),
            Self::UnknownCommand(_) => EINVAL,
        }
    }
}

/// Which of a ring's descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFd {
    /// The kick (guest to host).
    Kick,
    /// The interrupt (host to guest).
    Call,
}

/// A request of the frontend the device refuses. The messages are the daemon's log lines
/// ("frontend sent {this}; refused"). All are NACKed but [`DeviceError::VnetHdrLen`] (see
/// [`DeviceError::nacks`]).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Features beyond `VHOST_USER_F_PROTOCOL_FEATURES`.
    #[error("features {0:#x} beyond those offered")]
    Features(u64),
    /// Protocol features beyond [`PROTOCOL_FEATURES`].
    #[error("protocol features {0:#x} beyond those offered")]
    ProtocolFeatures(u64),
    /// A ring the port does not have.
    #[error("ring index {index} (port has {rings})")]
    RingIndex {
        /// The index sent.
        index: u32,
        /// The port's rings.
        rings: u32,
    },
    /// A kick or interrupt descriptor that is not an eventfd (`why`: what it is).
    #[error(
        "{} descriptor for ring {ring} {why}",
        if *kind == RingFd::Kick { "a kick" } else { "an interrupt" }
    )]
    NotEventfd {
        /// Kick or call.
        kind: RingFd,
        /// The ring.
        ring: u32,
        /// What it is instead.
        why: String,
    },
    /// The descriptor's O_NONBLOCK could not be set.
    #[error("a descriptor for ring {ring} whose flags cannot be set: {source}")]
    Nonblocking {
        /// The ring.
        ring: u32,
        /// Why.
        source: io::Error,
    },
    /// GET_CONFIG past the config space.
    #[error("GET_CONFIG of {size} bytes at {offset}")]
    ConfigRead {
        /// Offset asked.
        offset: u32,
        /// Size asked.
        size: u32,
    },
    /// SET_CONFIG of other than 4 bytes.
    #[error("SET_CONFIG of {0} bytes (registers are 4)")]
    ConfigSize(usize),
    /// SET_CONFIG at an offset that is not a writable register.
    #[error("SET_CONFIG at offset {0}, not a writable register")]
    NotWritable(u32),
    /// A register write to a register the guest cannot write.
    #[error("a write to read-only register {0}")]
    ReadOnly(u32),
    /// A VNET_HDR_LEN the device does not take: the old value stays (the guest reads it back).
    #[error(
        "VNET_HDR_LEN {len} ({})",
        if *accepted { "not 0, 10 or 12" } else { "PTFEAT VNET_HDR not accepted" }
    )]
    VnetHdrLen {
        /// The length written.
        len: u32,
        /// The guest had accepted PTFEAT VNET_HDR.
        accepted: bool,
    },
}

impl DeviceError {
    /// Is the request refused (NACK)? A bad VNET_HDR_LEN is only logged: the write succeeds and
    /// the guest reads back the length in force, as netmap's drivers do.
    pub fn nacks(&self) -> bool {
        !matches!(self, Self::VnetHdrLen { .. })
    }
}

/// One port's ptnet device, across the requests of one connection.
pub struct PtnetState<P: DevicePort> {
    port: P,
    config: PtnetConfig,
    offered_ptfeat: u32,
    protocol_features: u64,
    memory: Option<Arc<GuestMemory>>,
    kicks: Vec<Option<File>>,
    calls: Vec<Option<File>>,
    running: Option<P::Running>,
    /// The guest's last PTFEAT write accepted `PTNETMAP_F_VNET_HDR`.
    vnet_hdr_accepted: bool,
}

impl<P: DevicePort> PtnetState<P> {
    /// A device for `port`, in its state before any frontend talked to it.
    pub fn new(port: P) -> Self {
        let geo = *port.geometry();
        let n = geo.num_rings() as usize;
        // A fresh device is a fresh port: no header until a guest negotiates one.
        if let Some(len) = port.vnet_hdr_len() {
            len.store(0, Ordering::Relaxed);
        }
        Self {
            offered_ptfeat: geo.features,
            config: PtnetConfig::new(&geo),
            port,
            protocol_features: 0,
            memory: None,
            kicks: (0..n).map(|_| None).collect(),
            calls: (0..n).map(|_| None).collect(),
            running: None,
            vnet_hdr_accepted: false,
        }
    }

    /// The port.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The config space as the guest reads it.
    pub fn config(&self) -> &PtnetConfig {
        &self.config
    }

    /// Do the rings run?
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// The protocol features the frontend set.
    pub fn protocol_features(&self) -> u64 {
        self.protocol_features
    }

    /// The port's rings (GET_QUEUE_NUM).
    pub fn num_rings(&self) -> u32 {
        self.port.geometry().num_rings()
    }

    /// Checks a ring index a frontend sent.
    pub fn ring_index(&self, index: u32) -> Result<u32, DeviceError> {
        let rings = self.num_rings();
        if index < rings {
            Ok(index)
        } else {
            Err(DeviceError::RingIndex { index, rings })
        }
    }

    /// SET_FEATURES.
    pub fn set_features(&self, features: u64) -> Result<(), DeviceError> {
        if features & !VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            return Err(DeviceError::Features(features));
        }
        Ok(())
    }

    /// SET_PROTOCOL_FEATURES.
    pub fn set_protocol_features(&mut self, features: u64) -> Result<(), DeviceError> {
        if features & !PROTOCOL_FEATURES != 0 {
            return Err(DeviceError::ProtocolFeatures(features));
        }
        self.protocol_features = features;
        Ok(())
    }

    /// SET_MEM_TABLE (checked and mapped by [`GuestMemory::from_table`]): the rings keep the
    /// old table alive until they stop; new CSB lookups use the new one. Running rings restart.
    pub fn set_memory(&mut self, mem: GuestMemory) {
        self.memory = Some(Arc::new(mem));
        self.restart_if_running();
    }

    /// SET_VRING_KICK or SET_VRING_CALL. Only an eventfd: a pipe, /dev/zero or a socket could
    /// block the ring's reads or the interrupt's writes (made with RWF_NOWAIT, which a pipe or a
    /// file may not honour), or be ready for ever and spin its thread. Running rings restart.
    pub fn set_ring_fd(
        &mut self,
        kind: RingFd,
        index: u32,
        fd: Option<File>,
    ) -> Result<(), DeviceError> {
        let ring = self.ring_index(index)?;
        if let Some(f) = &fd {
            if let Err(why) = crate::sys::check_eventfd(f) {
                return Err(DeviceError::NotEventfd { kind, ring, why });
            }
            // Not relied on (the frontend shares the description and may clear it: the ring
            // reads with RWF_NOWAIT), but a plain read by anyone else then does not wait either.
            crate::sys::set_nonblocking(f)
                .map_err(|source| DeviceError::Nonblocking { ring, source })?;
        }
        let slot = match kind {
            RingFd::Kick => &mut self.kicks[ring as usize],
            RingFd::Call => &mut self.calls[ring as usize],
        };
        *slot = fd;
        self.restart_if_running();
        Ok(())
    }

    /// GET_CONFIG: `size` bytes of the config space from `offset`.
    pub fn read_config(&self, offset: u32, size: u32) -> Result<&[u8], DeviceError> {
        let (o, s) = (offset as usize, size as usize);
        if o.checked_add(s).is_none_or(|end| end > CONFIG_SIZE) {
            return Err(DeviceError::ConfigRead { offset, size });
        }
        Ok(&self.config.as_bytes()[o..o + s])
    }

    /// SET_CONFIG: one 4-byte write to a writable register.
    pub fn set_config(&mut self, offset: u32, buf: &[u8]) -> Result<(), DeviceError> {
        let Ok(bytes) = <[u8; 4]>::try_from(buf) else {
            return Err(DeviceError::ConfigSize(buf.len()));
        };
        if !is_writable_register(offset) {
            return Err(DeviceError::NotWritable(offset));
        }
        self.write_register(offset, u32::from_le_bytes(bytes))
    }

    /// A register write. A PTCTL write runs the command and stores its result in PTCTL.
    pub fn write_register(&mut self, off: u32, val: u32) -> Result<(), DeviceError> {
        match off {
            ptnet::PTFEAT => {
                self.config.set(off, self.offered_ptfeat & val);
                self.vnet_hdr_accepted = self.offered_ptfeat & val & PTNETMAP_F_VNET_HDR != 0;
                if !self.vnet_hdr_accepted {
                    // The feature withdrawn: no header any more (0 is always taken).
                    self.set_vnet_hdr_len(0)?;
                }
            }
            ptnet::PTCTL => {
                let r = self.ptctl(val).err().map_or(0, |e| e.errno());
                self.config.set(ptnet::PTCTL, r);
            }
            ptnet::VNET_HDR_LEN => self.set_vnet_hdr_len(val)?,
            ptnet::CSB_GH_BAH | ptnet::CSB_HG_BAH => self.config.set(off, val),
            ptnet::CSB_GH_BAL | ptnet::CSB_HG_BAL => {
                // Remapping a CSB array implies DELETE.
                self.stop();
                self.config.set(off, val);
            }
            _ => return Err(DeviceError::ReadOnly(off)),
        }
        Ok(())
    }

    /// Runs a PTCTL command (what a PTCTL write does, before storing the result).
    pub fn ptctl(&mut self, cmd: u32) -> Result<(), PtctlError> {
        match cmd {
            PTCTL_CREATE => self.create(false),
            PTCTL_RESUME => self.create(true),
            PTCTL_DELETE => {
                self.stop();
                Ok(())
            }
            _ => Err(PtctlError::UnknownCommand(cmd)),
        }
    }

    /// A VNET_HDR_LEN write: 0, 10 or 12 once the guest accepted PTFEAT VNET_HDR (the length
    /// then reaches the port's rings); anything else keeps the old value.
    fn set_vnet_hdr_len(&mut self, val: u32) -> Result<(), DeviceError> {
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
                return Err(DeviceError::VnetHdrLen {
                    len: val,
                    accepted: self.vnet_hdr_accepted,
                })
            }
        }
        Ok(())
    }

    /// PTCTL CREATE, or RESUME (`resume`: the frontend's guest ran before it reconnected). A
    /// no-op while the rings run.
    fn create(&mut self, resume: bool) -> Result<(), PtctlError> {
        if self.running.is_some() {
            return Ok(());
        }
        let r = self.start(resume);
        if let Err(e) = &r {
            let name = self.port.name();
            match e {
                PtctlError::NoKick { ring } => tracing::warn!(port = name, ring, "{e}"),
                PtctlError::Start(StartError::Busy) => tracing::warn!(port = name, "{e}"),
                PtctlError::Start(_) => tracing::error!(port = name, "{e}"),
                PtctlError::UnknownCommand(_) => {}
                _ => tracing::warn!(port = name, "{e}"),
            }
        }
        r
    }

    fn start(&mut self, resume: bool) -> Result<(), PtctlError> {
        let n = self.num_rings();
        let (gh, hg) = self.config.csb_addresses();
        let size = csb::array_size(n);
        let mem = self.memory.clone().ok_or(PtctlError::NoMemory)?;
        let (Some(atok), Some(ktoa)) = (
            (gh != 0).then(|| mem.translate(gh, size)).flatten(),
            (hg != 0).then(|| mem.translate(hg, size)).flatten(),
        ) else {
            return Err(PtctlError::CsbOutside { gh, hg });
        };
        let kicks = (0..n)
            .map(|ring| {
                self.kicks[ring as usize]
                    .as_ref()
                    .and_then(|f| f.try_clone().ok())
                    .ok_or(PtctlError::NoKick { ring })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let calls = self
            .calls
            .iter()
            .map(|c| c.as_ref().and_then(|f| f.try_clone().ok()))
            .collect();
        let rings = FrontendRings {
            atok,
            ktoa,
            kicks,
            calls,
            keep: mem,
        };
        self.running = Some(self.port.start(rings, resume)?);
        tracing::info!(port = self.port.name(), rings = n, "rings started");
        Ok(())
    }

    fn restart_if_running(&mut self) {
        if self.running.is_some() {
            self.stop();
            let r = self.create(false).err().map_or(0, |e| e.errno());
            self.config.set(ptnet::PTCTL, r);
        }
    }

    /// Stops the rings (PTCTL DELETE; also on disconnect and CSB changes).
    pub fn stop(&mut self) {
        let Some(r) = self.running.take() else {
            return;
        };
        self.port.stop(r);
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
        let geo = *self.port.geometry();
        if let Some(len) = self.port.vnet_hdr_len() {
            len.store(0, Ordering::Relaxed);
        }
        self.offered_ptfeat = geo.features;
        self.config = PtnetConfig::new(&geo);
        self.protocol_features = 0;
        self.memory = None;
        self.kicks.iter_mut().for_each(|k| *k = None);
        self.calls.iter_mut().for_each(|c| *c = None);
        self.vnet_hdr_accepted = false;
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
