//! The `device_state` target: the device's state machine ([`PtnetState`]) alone, over a port that
//! runs nothing ([`FuzzPort`]), so millions of request sequences a minute can be tried. Every
//! answer is checked against a model of what the request must do: the exact error a malformed
//! request gets, whether CREATE starts the rings (and with what), and the config space the guest
//! reads back.

use super::input::Input;
use crate::frontend::ptnet::memory::{GuestMemory, MemoryRegion, MemoryTableError, MAX_REGIONS};
use crate::frontend::ptnet::state::{
    DeviceError, DevicePort, PtctlError, PtnetState, RingFd, StartError,
};
use crate::frontend::ptnet::syncloop::{csb_entries, FrontendRings};
use ptnet_protocol::csb;
use ptnet_protocol::device::{
    is_writable_register, PortGeometry, PtnetConfig, CONFIG_SIZE, PROTOCOL_FEATURES,
    VHOST_USER_F_PROTOCOL_FEATURES, WRITABLE_REGISTERS,
};
use ptnet_protocol::regs::{
    ptnet, EINVAL, ENXIO, PTCTL_CREATE, PTCTL_DELETE, PTCTL_RESUME, PTNETMAP_F_VNET_HDR,
};
use std::cell::Cell;
use std::fs::File;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A port that runs nothing: it checks what CREATE hands it, and fails a start when told.
struct FuzzPort {
    geometry: PortGeometry,
    vnet: Option<AtomicU8>,
    running: Cell<bool>,
    /// How the next start ends (0: started; see [`FuzzPort::start`]).
    fail: Cell<u8>,
    gone: Cell<u32>,
}

impl DevicePort for FuzzPort {
    type Running = ();

    fn name(&self) -> &str {
        "fuzz"
    }
    fn geometry(&self) -> &PortGeometry {
        &self.geometry
    }
    fn vnet_hdr_len(&self) -> Option<&AtomicU8> {
        self.vnet.as_ref()
    }
    fn start(&self, rings: FrontendRings, _resume: bool) -> Result<(), StartError> {
        assert!(!self.running.get(), "started twice");
        let n = self.geometry.num_rings();
        assert_eq!(rings.kicks.len(), n as usize);
        assert_eq!(rings.calls.len(), n as usize);
        for i in 0..n {
            assert!(
                csb_entries(&rings.atok, &rings.ktoa, i).is_some(),
                "ring {i}'s CSB entries outside the arrays"
            );
        }
        match self.fail.replace(0) {
            0 => {
                self.running.set(true);
                Ok(())
            }
            1 => Err(StartError::Busy),
            2 => Err(StartError::Threads(std::io::Error::other("fuzz"))),
            _ => Err(StartError::Kernel(std::io::Error::from_raw_os_error(
                libc::EBUSY,
            ))),
        }
    }
    fn stop(&self, _: ()) {
        assert!(self.running.replace(false), "stopped twice");
    }
    fn stats_line(&self) -> String {
        String::new()
    }
    fn frontend_gone(&self) {
        self.gone.set(self.gone.get() + 1);
    }
}

/// What a descriptor is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FdKind {
    Eventfd,
    Other,
}

/// Descriptors made once and duplicated per input: eventfds and things that are not.
struct Pool {
    eventfd: File,
    others: Vec<File>,
    /// Memfds sealed against shrinking, of [`MEMFD_SIZES`] bytes; then an unsealed one.
    memfds: Vec<File>,
}

const MEMFD_SIZES: [u64; 3] = [0x1000, 0x4000, 0x10000];

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let memfd = |size, seal| {
            let f = crate::sys::sealable_memfd(c"fuzz-state", size).expect("memfd");
            if seal {
                crate::sys::add_seals(&f, libc::F_SEAL_SHRINK).expect("seal");
            }
            f
        };
        let (r, _) = std::io::pipe().expect("pipe");
        Pool {
            eventfd: crate::sys::eventfd_file(true).expect("eventfd"),
            others: vec![
                File::from(std::os::fd::OwnedFd::from(r)),
                File::open("/dev/zero").expect("/dev/zero"),
                memfd(8, false),
            ],
            memfds: MEMFD_SIZES
                .iter()
                .map(|&s| memfd(s, true))
                .chain([memfd(0x4000, false)])
                .collect(),
        }
    })
}

/// What the device must be: the fuzzer's own account of the requests.
struct Model {
    rings: u32,
    /// The regions of the table in force: (guest address, bytes).
    regions: Option<Vec<(u64, u64)>>,
    kicks: Vec<bool>,
    accepted: bool,
    running: bool,
}

/// What CREATE must answer.
#[derive(Debug, PartialEq, Eq)]
enum Create {
    Started,
    NoMemory,
    Csb,
    NoKick(u32),
    Start(u8),
}

impl Model {
    fn inside(&self, gpa: u64, len: u64) -> bool {
        gpa != 0
            && self.regions.as_ref().is_some_and(|rs| {
                rs.iter().any(|&(base, size)| {
                    // Inside, and 8-byte aligned in the region (whose mapping is page-aligned).
                    gpa.checked_sub(base).is_some_and(|off| {
                        off % 8 == 0 && off.checked_add(len).is_some_and(|e| e <= size)
                    })
                })
            })
    }

    /// What CREATE does now, with the port failing its start by `fail`.
    fn create(&mut self, config: &PtnetConfig, fail: u8) -> Create {
        if self.running {
            return Create::Started;
        }
        let (gh, hg) = config.csb_addresses();
        let len = csb::array_size(self.rings) as u64;
        let r = if self.regions.is_none() {
            Create::NoMemory
        } else if !self.inside(gh, len) || !self.inside(hg, len) {
            Create::Csb
        } else if let Some(i) = self.kicks.iter().position(|k| !k) {
            Create::NoKick(i as u32)
        } else if fail != 0 {
            Create::Start(fail)
        } else {
            Create::Started
        };
        self.running = r == Create::Started;
        r
    }
}

fn check_ptctl(r: &Result<(), PtctlError>, want: &Create) {
    let ok = match (r, want) {
        (Ok(()), Create::Started) => true,
        (Err(PtctlError::NoMemory), Create::NoMemory) => true,
        (Err(PtctlError::CsbOutside { .. }), Create::Csb) => true,
        (Err(PtctlError::NoKick { ring }), Create::NoKick(r)) => ring == r,
        (Err(PtctlError::Start(StartError::Busy)), Create::Start(1)) => true,
        (Err(PtctlError::Start(StartError::Threads(_))), Create::Start(2)) => true,
        (Err(PtctlError::Start(StartError::Kernel(_))), Create::Start(f)) => *f >= 3,
        _ => false,
    };
    assert!(ok, "CREATE answered {r:?}, the model says {want:?}");
}

fn create_errno(c: &Create) -> u32 {
    match c {
        Create::Started => 0,
        Create::Start(2) => libc::EAGAIN as u32,
        Create::Start(f) if *f >= 3 => libc::EBUSY as u32,
        _ => ENXIO,
    }
}

struct Rig {
    dev: PtnetState<FuzzPort>,
    model: Model,
    /// How the port fails the start a PTCTL write may make.
    last_fail: u8,
}

impl Rig {
    fn port(&self) -> &FuzzPort {
        self.dev.port()
    }

    /// A running device asked to restart (new memory or descriptors): the model's restart.
    fn restarted(&mut self) {
        if self.model.running {
            self.model.running = false;
            let fail = self.port().fail.get();
            let c = self.model.create(self.dev.config(), fail);
            assert_eq!(self.dev.config().get(ptnet::PTCTL), create_errno(&c));
        }
    }

    fn mem_table(&mut self, inp: &mut Input) {
        let p = pool();
        let n = inp.below(4) as usize + usize::from(inp.below(16) == 0) * MAX_REGIONS;
        let mut regions = Vec::new();
        let mut files = Vec::new();
        for r in 0..n {
            let f = inp.below(p.memfds.len() as u32 + 1) as usize;
            let (file, fsize) = match p.memfds.get(f) {
                Some(m) => (m, MEMFD_SIZES.get(f).copied().unwrap_or(0x4000)),
                None => (&p.others[inp.below(3) as usize], 8),
            };
            let gpa = if inp.bool() {
                (r as u64 + 1) << 20
            } else {
                inp.u64()
            };
            let (size, offset) = match inp.below(4) {
                0 => (fsize, 0),
                1 => (fsize / 2, fsize / 4),
                2 => (u64::from(inp.u32()), u64::from(inp.u16())),
                _ => (inp.u64(), inp.u64()),
            };
            regions.push(MemoryRegion {
                guest_phys_addr: gpa,
                memory_size: size,
                mmap_offset: offset,
            });
            files.push(file.try_clone().expect("dup"));
        }
        if inp.below(8) == 0 {
            files.pop();
        }
        let cap = if inp.bool() {
            1 << 20
        } else {
            u64::from(inp.u32())
        };
        let total = regions
            .iter()
            .try_fold(0u64, |t, r| t.checked_add(r.memory_size));
        let nfiles = files.len();
        match GuestMemory::from_table(&regions, files, cap) {
            Ok(m) => {
                assert!(n > 0 && nfiles == n && total.is_some_and(|t| t <= cap));
                self.dev.set_memory(m);
                self.model.regions = Some(
                    regions
                        .iter()
                        .map(|r| (r.guest_phys_addr, r.memory_size))
                        .collect(),
                );
                self.restarted();
            }
            Err(MemoryTableError::Malformed {
                regions: r,
                files: f,
            }) => {
                assert_eq!((r, f), (n, nfiles));
                assert!(n == 0 || n > MAX_REGIONS || f != n);
            }
            Err(MemoryTableError::OverCap { total: t, .. }) => {
                assert_eq!(t, total);
                assert!(total.is_none_or(|t| t > cap));
            }
            Err(_) => assert!(total.is_some_and(|t| t <= cap)),
        }
    }

    fn ring_fd(&mut self, inp: &mut Input) {
        let p = pool();
        let kind = if inp.bool() {
            RingFd::Kick
        } else {
            RingFd::Call
        };
        let index = if inp.below(8) == 0 {
            inp.u32()
        } else {
            inp.below(self.model.rings + 1)
        };
        let (fd, what) = match inp.below(4) {
            0 => (None, FdKind::Eventfd),
            1 => (Some(&p.others[inp.below(3) as usize]), FdKind::Other),
            _ => (Some(&p.eventfd), FdKind::Eventfd),
        };
        let r = self
            .dev
            .set_ring_fd(kind, index, fd.map(|f| f.try_clone().expect("dup")));
        match r {
            Err(DeviceError::RingIndex { index: i, rings }) => {
                assert_eq!((i, rings), (index, self.model.rings));
                assert!(index >= self.model.rings);
            }
            Err(DeviceError::NotEventfd { kind: k, ring, .. }) => {
                assert!(k == kind && ring == index && what == FdKind::Other);
            }
            Ok(()) => {
                assert!(index < self.model.rings && what == FdKind::Eventfd);
                if kind == RingFd::Kick {
                    self.model.kicks[index as usize] = fd.is_some();
                }
                self.restarted();
            }
            Err(e) => panic!("SET_VRING_FD answered {e:?}"),
        }
    }

    /// A register write as the model sees it; `r` is the device's answer.
    fn check_write(&mut self, off: u32, val: u32, r: Result<(), DeviceError>) {
        let offered = self.port().geometry.features;
        match off {
            ptnet::PTFEAT => {
                r.expect("PTFEAT");
                self.model.accepted = offered & val & PTNETMAP_F_VNET_HDR != 0;
                assert_eq!(self.dev.config().get(off), offered & val);
            }
            ptnet::PTCTL => {
                r.expect("PTCTL");
                let want = match val {
                    PTCTL_CREATE | PTCTL_RESUME => {
                        create_errno(&self.model.create(self.dev.config(), self.last_fail))
                    }
                    PTCTL_DELETE => {
                        self.model.running = false;
                        0
                    }
                    _ => EINVAL,
                };
                assert_eq!(self.dev.config().get(off), want);
            }
            ptnet::VNET_HDR_LEN => {
                let valid = matches!(val, 0 | 10 | 12);
                let takes = match &self.port().vnet {
                    None => val == 0,
                    Some(_) => val == 0 || (self.model.accepted && valid),
                };
                match r {
                    Ok(()) => assert!(takes, "VNET_HDR_LEN {val} taken"),
                    Err(DeviceError::VnetHdrLen { len, accepted }) => {
                        assert!(!takes && len == val && accepted == self.model.accepted)
                    }
                    Err(e) => panic!("VNET_HDR_LEN answered {e:?}"),
                }
            }
            ptnet::CSB_GH_BAH | ptnet::CSB_HG_BAH => {
                r.expect("CSB high half");
                assert_eq!(self.dev.config().get(off), val);
            }
            ptnet::CSB_GH_BAL | ptnet::CSB_HG_BAL => {
                r.expect("CSB low half");
                self.model.running = false;
                assert_eq!(self.dev.config().get(off), val);
            }
            _ => assert!(matches!(r, Err(DeviceError::ReadOnly(o)) if o == off)),
        }
    }

    fn write(&mut self, inp: &mut Input, off: u32, val: u32) {
        self.last_fail = inp.below(4) as u8 * u8::from(inp.below(4) == 0);
        self.port().fail.set(self.last_fail);
        let r = self.dev.write_register(off, val);
        self.check_write(off, val, r);
        self.port().fail.set(0);
    }

    /// What a well-behaved frontend does before CREATE, then CREATE (or RESUME), each step
    /// checked as any other.
    fn setup(&mut self, inp: &mut Input) {
        const BASE: u64 = 1 << 20;
        // A reconnecting frontend's sequence: its rings stopped first (restarts are reached by
        // the other requests), so that a setup costs one start, not one per descriptor.
        self.write(inp, ptnet::PTCTL, PTCTL_DELETE);
        let region = MemoryRegion {
            guest_phys_addr: BASE,
            memory_size: 0x10000,
            mmap_offset: 0,
        };
        let file = pool().memfds[2].try_clone().expect("dup");
        let m = GuestMemory::from_table(&[region], vec![file], 1 << 20).expect("a good table");
        self.dev.set_memory(m);
        self.model.regions = Some(vec![(BASE, 0x10000)]);
        self.restarted();
        for i in 0..self.model.rings {
            for kind in [RingFd::Kick, RingFd::Call] {
                let fd = pool().eventfd.try_clone().expect("dup");
                self.dev.set_ring_fd(kind, i, Some(fd)).expect("an eventfd");
                self.model.kicks[i as usize] = true;
                self.restarted();
            }
        }
        let (gh, hg) = (BASE + 64 * u64::from(inp.below(8)), BASE + 0x1000);
        for (reg, v) in [
            (ptnet::CSB_GH_BAH, (gh >> 32) as u32),
            (ptnet::CSB_GH_BAL, gh as u32),
            (ptnet::CSB_HG_BAH, (hg >> 32) as u32),
            (ptnet::CSB_HG_BAL, hg as u32),
            (ptnet::PTFEAT, inp.u32()),
            (ptnet::VNET_HDR_LEN, [0, 10, 12][inp.below(3) as usize]),
            (
                ptnet::PTCTL,
                [PTCTL_CREATE, PTCTL_RESUME][inp.below(2) as usize],
            ),
        ] {
            self.write(inp, reg, v);
        }
    }

    fn op(&mut self, inp: &mut Input) {
        match inp.below(11) {
            10 => self.setup(inp),
            0 => self.mem_table(inp),
            1 | 2 => self.ring_fd(inp),
            3 => {
                let regs = WRITABLE_REGISTERS;
                let off = match inp.below(4) {
                    0 => inp.u32(),
                    1 => 4 * inp.below(64),
                    _ => regs[inp.below(regs.len() as u32) as usize],
                };
                let val = match inp.below(4) {
                    0 => [PTCTL_CREATE, PTCTL_RESUME, PTCTL_DELETE][inp.below(3) as usize],
                    1 => inp.below(16),
                    _ => inp.u32(),
                };
                self.write(inp, off, val);
            }
            4 => {
                // SET_CONFIG: any offset, any size.
                let off = if inp.bool() { inp.below(72) } else { inp.u32() };
                let blen = inp.below(9) as usize;
                let buf = inp.bytes(blen).to_vec();
                let r = self.dev.set_config(off, &buf);
                match r {
                    Err(DeviceError::ConfigSize(l)) => assert!(l == buf.len() && l != 4),
                    Err(DeviceError::NotWritable(o)) => {
                        assert!(o == off && buf.len() == 4 && !is_writable_register(off))
                    }
                    r => {
                        assert!(buf.len() == 4 && is_writable_register(off), "{r:?}");
                        let val = u32::from_le_bytes(buf.try_into().expect("4"));
                        self.last_fail = 0;
                        self.check_write(off, val, r);
                    }
                }
            }
            5 => {
                let (off, size) = if inp.bool() {
                    (inp.below(300), inp.below(300))
                } else {
                    (inp.u32(), inp.u32())
                };
                let fits = u64::from(off) + u64::from(size) <= CONFIG_SIZE as u64;
                match self.dev.read_config(off, size) {
                    Ok(b) => {
                        assert!(fits && b.len() == size as usize);
                        let all = self.dev.config().as_bytes();
                        assert_eq!(b, &all[off as usize..(off + size) as usize]);
                    }
                    Err(DeviceError::ConfigRead { offset, size: s }) => {
                        assert!(!fits && offset == off && s == size)
                    }
                    Err(e) => panic!("GET_CONFIG answered {e:?}"),
                }
            }
            6 => {
                // The CSB inside a region of the table (or anywhere).
                let (gh, hg) = match self.model.regions.as_ref() {
                    Some(rs) if !rs.is_empty() && inp.below(4) != 0 => {
                        let (base, size) = rs[inp.below(rs.len() as u32) as usize];
                        let slots = u32::try_from(size / 64).unwrap_or(u32::MAX);
                        (
                            base.wrapping_add(64 * u64::from(inp.below(slots))),
                            base.wrapping_add(64 * u64::from(inp.below(slots))),
                        )
                    }
                    _ => (inp.u64(), inp.u64()),
                };
                for (reg, v) in [
                    (ptnet::CSB_GH_BAH, (gh >> 32) as u32),
                    (ptnet::CSB_GH_BAL, gh as u32),
                    (ptnet::CSB_HG_BAH, (hg >> 32) as u32),
                    (ptnet::CSB_HG_BAL, hg as u32),
                ] {
                    self.write(inp, reg, v);
                }
                assert_eq!(self.dev.config().csb_addresses(), (gh, hg));
            }
            7 => {
                let f = if inp.bool() {
                    VHOST_USER_F_PROTOCOL_FEATURES
                } else {
                    inp.u64()
                };
                let r = self.dev.set_features(f);
                let good = f & !VHOST_USER_F_PROTOCOL_FEATURES == 0;
                assert!(
                    r.is_ok() == good
                        && (good || matches!(r, Err(DeviceError::Features(x)) if x == f))
                );
                let before = self.dev.protocol_features();
                let f = if inp.bool() {
                    PROTOCOL_FEATURES & inp.u64()
                } else {
                    inp.u64()
                };
                let r = self.dev.set_protocol_features(f);
                let good = f & !PROTOCOL_FEATURES == 0;
                assert!(r.is_ok() == good);
                let now = self.dev.protocol_features();
                assert_eq!(now, if good { f } else { before });
            }
            8 => {
                let gone = self.port().gone.get();
                self.dev.disconnect();
                assert_eq!(self.port().gone.get(), gone + 1);
                assert_eq!(*self.dev.config(), PtnetConfig::new(&self.port().geometry));
                self.model.regions = None;
                self.model.kicks.iter_mut().for_each(|k| *k = false);
                self.model.accepted = false;
                self.model.running = false;
            }
            _ => {
                let cmd =
                    [PTCTL_CREATE, PTCTL_RESUME, PTCTL_DELETE, inp.u32()][inp.below(4) as usize];
                let fail = inp.below(4) as u8;
                self.port().fail.set(fail);
                let r = self.dev.ptctl(cmd);
                self.port().fail.set(0);
                match cmd {
                    PTCTL_CREATE | PTCTL_RESUME => {
                        let want = self.model.create(self.dev.config(), fail);
                        check_ptctl(&r, &want);
                    }
                    PTCTL_DELETE => {
                        r.expect("DELETE");
                        self.model.running = false;
                    }
                    c => assert!(matches!(r, Err(PtctlError::UnknownCommand(x)) if x == c)),
                }
            }
        }
        self.check();
    }

    /// What holds after every request.
    fn check(&self) {
        assert_eq!(self.dev.running(), self.model.running, "running");
        assert_eq!(
            self.port().running.get(),
            self.model.running,
            "the port's rings"
        );
        let fresh = PtnetConfig::new(&self.port().geometry);
        let (now, was) = (self.dev.config().as_bytes(), fresh.as_bytes());
        for off in (0..CONFIG_SIZE as u32).step_by(4) {
            if !is_writable_register(off) {
                let o = off as usize;
                assert_eq!(
                    now[o..o + 4],
                    was[o..o + 4],
                    "read-only register {off} changed"
                );
            }
        }
        let feat = self.dev.config().get(ptnet::PTFEAT);
        assert_eq!(
            feat & !self.port().geometry.features,
            0,
            "PTFEAT beyond the offer"
        );
        if let Some(l) = &self.port().vnet {
            let l = l.load(Ordering::Relaxed);
            assert!(matches!(l, 0 | 10 | 12), "header length {l}");
            assert_eq!(u32::from(l), self.dev.config().get(ptnet::VNET_HDR_LEN));
        }
    }
}

/// Request sequences to the device's state machine, each answer checked against the model.
pub fn device_state(data: &[u8]) {
    let mut inp = Input::new(data);
    let (ntx, nrx) = (1 + inp.below(4), 1 + inp.below(4));
    let vnet = inp.bool();
    let port = FuzzPort {
        geometry: PortGeometry {
            features: if vnet { PTNETMAP_F_VNET_HDR } else { 0 },
            num_tx_rings: ntx,
            num_rx_rings: nrx,
            num_tx_slots: 256,
            num_rx_slots: 256,
            mac: [2, 0, 0, 0, 0, 1],
            ..Default::default()
        },
        vnet: vnet.then(|| AtomicU8::new(12)),
        running: Cell::new(false),
        fail: Cell::new(0),
        gone: Cell::new(0),
    };
    let mut rig = Rig {
        dev: PtnetState::new(port),
        model: Model {
            rings: ntx + nrx,
            regions: None,
            kicks: vec![false; (ntx + nrx) as usize],
            accepted: false,
            running: false,
        },
        last_fail: 0,
    };
    rig.check();
    for _ in 0..64 {
        if inp.is_empty() {
            break;
        }
        rig.op(&mut inp);
    }
    rig.dev.disconnect();
    assert!(!rig.port().running.get());
}
