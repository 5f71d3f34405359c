//! The state machine against a mock port: every PTCTL path, and each malformed request as the
//! one error it is.

use super::*;
use crate::frontend::ptnet::memory::MemoryRegion;
use crate::sys::{eventfd_file, MappedFile};
use std::sync::Mutex;

/// What the mock was asked to do.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Call {
    /// `start(resume)`, with how many kicks and calls it was given.
    Start {
        resume: bool,
        kicks: usize,
        calls: usize,
    },
    Stop(u32),
    Gone,
}

#[derive(Default)]
struct Mock {
    geometry: PortGeometry,
    vnet: Option<AtomicU8>,
    calls: Mutex<Vec<Call>>,
    /// The next start fails with this.
    fail: Mutex<Option<StartError>>,
    started: Mutex<u32>,
}

impl Mock {
    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl DevicePort for Arc<Mock> {
    type Running = u32;
    fn name(&self) -> &str {
        "mock"
    }
    fn geometry(&self) -> &PortGeometry {
        &self.geometry
    }
    fn vnet_hdr_len(&self) -> Option<&AtomicU8> {
        self.vnet.as_ref()
    }
    fn start(&self, rings: FrontendRings, resume: bool) -> Result<u32, StartError> {
        assert!(rings.atok.len() >= csb::array_size(self.geometry.num_rings()));
        assert!(rings.ktoa.len() >= csb::array_size(self.geometry.num_rings()));
        self.calls.lock().unwrap().push(Call::Start {
            resume,
            kicks: rings.kicks.len(),
            calls: rings.calls.iter().flatten().count(),
        });
        if let Some(e) = self.fail.lock().unwrap().take() {
            return Err(e);
        }
        let mut s = self.started.lock().unwrap();
        *s += 1;
        Ok(*s)
    }
    fn stop(&self, running: u32) {
        self.calls.lock().unwrap().push(Call::Stop(running));
    }
    fn stats_line(&self) -> String {
        "mock counters".into()
    }
    fn frontend_gone(&self) {
        self.calls.lock().unwrap().push(Call::Gone);
    }
}

/// 1 TX and 2 RX rings; `vnet`: the port carries virtio-net headers.
fn mock(vnet: bool) -> Arc<Mock> {
    Arc::new(Mock {
        geometry: PortGeometry {
            features: if vnet { PTNETMAP_F_VNET_HDR } else { 0 },
            num_tx_rings: 1,
            num_rx_rings: 2,
            num_tx_slots: 256,
            num_rx_slots: 256,
            mem_id: 3,
            mac: [2, 0, 0, 0, 0, 9],
            ..Default::default()
        },
        vnet: vnet.then(|| AtomicU8::new(12)),
        ..Default::default()
    })
}

/// Guest memory of one 64 KiB region at 0x10000.
const GPA: u64 = 0x10000;
const MEM: u64 = 0x10000;

fn memory() -> GuestMemory {
    let file = MappedFile::memfd("test-guest", MEM as usize)
        .expect("memfd")
        .file()
        .try_clone()
        .expect("dup");
    let region = MemoryRegion {
        guest_phys_addr: GPA,
        memory_size: MEM,
        mmap_offset: 0,
    };
    GuestMemory::from_table(&[region], vec![file], 1 << 20).expect("a good table")
}

fn eventfd() -> File {
    eventfd_file(true).expect("eventfd")
}

fn set_csb(d: &mut PtnetState<Arc<Mock>>, gh: u64, hg: u64) {
    for (reg, v) in [
        (ptnet::CSB_GH_BAH, (gh >> 32) as u32),
        (ptnet::CSB_GH_BAL, gh as u32),
        (ptnet::CSB_HG_BAH, (hg >> 32) as u32),
        (ptnet::CSB_HG_BAL, hg as u32),
    ] {
        d.write_register(reg, v).expect("a CSB register");
    }
}

/// A device with everything CREATE needs: memory, CSB, a kick per ring, a call for ring 0.
fn ready() -> (Arc<Mock>, PtnetState<Arc<Mock>>) {
    let m = mock(false);
    let mut d = PtnetState::new(m.clone());
    d.set_memory(memory());
    set_csb(&mut d, GPA, GPA + 0x1000);
    for r in 0..3 {
        d.set_ring_fd(RingFd::Kick, r, Some(eventfd())).unwrap();
    }
    d.set_ring_fd(RingFd::Call, 0, Some(eventfd())).unwrap();
    (m, d)
}

fn ptctl_reg(d: &PtnetState<Arc<Mock>>) -> u32 {
    d.config().get(ptnet::PTCTL)
}

#[test]
fn a_fresh_device_shows_the_port_and_no_header() {
    let m = mock(true);
    let d = PtnetState::new(m.clone());
    assert_eq!(d.config().geometry(), m.geometry);
    assert_eq!(d.num_rings(), 3);
    assert!(!d.running());
    assert_eq!(m.vnet.as_ref().unwrap().load(Ordering::Relaxed), 0);
}

#[test]
fn create_runs_the_rings_once_and_delete_stops_them() {
    let (m, mut d) = ready();
    d.write_register(ptnet::PTCTL, PTCTL_CREATE).unwrap();
    assert_eq!(ptctl_reg(&d), 0);
    assert!(d.running());
    let start = Call::Start {
        resume: false,
        kicks: 3,
        calls: 1,
    };
    assert_eq!(m.calls(), [start]);
    // CREATE and RESUME while running: nothing more is started.
    d.ptctl(PTCTL_CREATE).unwrap();
    d.ptctl(PTCTL_RESUME).unwrap();
    assert_eq!(m.calls(), []);
    d.write_register(ptnet::PTCTL, PTCTL_DELETE).unwrap();
    assert_eq!((ptctl_reg(&d), d.running()), (0, false));
    assert_eq!(m.calls(), [Call::Stop(1)]);
    // DELETE when stopped: nothing to stop.
    d.ptctl(PTCTL_DELETE).unwrap();
    assert_eq!(m.calls(), []);
}

#[test]
fn resume_starts_with_the_guests_positions() {
    let (m, mut d) = ready();
    d.write_register(ptnet::PTCTL, PTCTL_RESUME).unwrap();
    assert!(d.running());
    let start = Call::Start {
        resume: true,
        kicks: 3,
        calls: 1,
    };
    assert_eq!(m.calls(), [start]);
}

#[test]
fn create_before_a_memory_table_is_enxio() {
    let m = mock(false);
    let mut d = PtnetState::new(m.clone());
    set_csb(&mut d, GPA, GPA + 0x1000);
    assert!(matches!(d.ptctl(PTCTL_CREATE), Err(PtctlError::NoMemory)));
    d.write_register(ptnet::PTCTL, PTCTL_CREATE).unwrap();
    assert_eq!(ptctl_reg(&d), ENXIO);
    assert_eq!(m.calls(), []);
}

#[test]
fn csb_arrays_must_lie_inside_guest_memory() {
    let (m, mut d) = ready();
    let size = csb::array_size(3) as u64;
    let end = GPA + MEM;
    for (gh, hg) in [
        (0, GPA),              // unset
        (GPA, 0),              // unset
        (GPA - 64, GPA),       // before the region
        (GPA, end),            // just past its end
        (GPA, end - size + 1), // straddles the end
        (u64::MAX - 63, GPA),  // wraps
        (GPA, 0xffff_ffff_0000_0000),
        (GPA + 4, GPA), // misaligned: the entries' words are atomics
        (GPA, GPA + 0xff),
    ] {
        set_csb(&mut d, gh, hg);
        match d.ptctl(PTCTL_CREATE) {
            Err(PtctlError::CsbOutside { gh: g, hg: h }) => assert_eq!((g, h), (gh, hg)),
            r => panic!("{gh:#x}/{hg:#x}: {r:?}"),
        }
        d.write_register(ptnet::PTCTL, PTCTL_RESUME).unwrap();
        assert_eq!(ptctl_reg(&d), ENXIO);
    }
    // The last entry that fits.
    set_csb(&mut d, end - size, end - size);
    d.ptctl(PTCTL_CREATE).unwrap();
    assert_eq!(m.calls().len(), 1);
}

#[test]
fn every_ring_needs_a_kick() {
    let m = mock(false);
    let mut d = PtnetState::new(m.clone());
    d.set_memory(memory());
    set_csb(&mut d, GPA, GPA + 0x1000);
    assert!(matches!(
        d.ptctl(PTCTL_CREATE),
        Err(PtctlError::NoKick { ring: 0 })
    ));
    d.set_ring_fd(RingFd::Kick, 0, Some(eventfd())).unwrap();
    d.set_ring_fd(RingFd::Kick, 2, Some(eventfd())).unwrap();
    assert!(matches!(
        d.ptctl(PTCTL_CREATE),
        Err(PtctlError::NoKick { ring: 1 })
    ));
    // A kick taken back (SET_VRING_KICK without a descriptor).
    d.set_ring_fd(RingFd::Kick, 1, Some(eventfd())).unwrap();
    d.set_ring_fd(RingFd::Kick, 2, None).unwrap();
    assert!(matches!(
        d.ptctl(PTCTL_CREATE),
        Err(PtctlError::NoKick { ring: 2 })
    ));
    assert_eq!(m.calls(), []);
}

#[test]
fn unknown_commands_are_einval() {
    let (m, mut d) = ready();
    for cmd in [0, 5, 7, u32::MAX] {
        assert!(matches!(d.ptctl(cmd), Err(PtctlError::UnknownCommand(c)) if c == cmd));
        d.write_register(ptnet::PTCTL, cmd).unwrap();
        assert_eq!(ptctl_reg(&d), EINVAL);
    }
    assert_eq!(m.calls(), []);
}

#[test]
fn a_port_that_cannot_start_gives_its_errno() {
    let (m, mut d) = ready();
    let cases = [
        (StartError::Busy, ENXIO),
        (
            StartError::Threads(io::Error::other("no threads")),
            libc::EAGAIN as u32,
        ),
        (
            StartError::Kernel(io::Error::from_raw_os_error(libc::EBUSY)),
            libc::EBUSY as u32,
        ),
        (StartError::Kernel(io::Error::other("no errno")), ENXIO),
    ];
    for (e, errno) in cases {
        *m.fail.lock().unwrap() = Some(e);
        d.write_register(ptnet::PTCTL, PTCTL_CREATE).unwrap();
        assert_eq!(ptctl_reg(&d), errno);
        assert!(!d.running());
    }
    assert_eq!(m.calls().len(), 4);
    d.write_register(ptnet::PTCTL, PTCTL_CREATE).unwrap();
    assert_eq!((ptctl_reg(&d), d.running()), (0, true));
}

#[test]
fn moving_a_csb_array_stops_the_rings() {
    let (m, mut d) = ready();
    d.ptctl(PTCTL_CREATE).unwrap();
    m.calls();
    // The high halves alone do not.
    d.write_register(ptnet::CSB_GH_BAH, 0).unwrap();
    d.write_register(ptnet::CSB_HG_BAH, 0).unwrap();
    assert!(d.running());
    d.write_register(ptnet::CSB_HG_BAL, (GPA + 0x2000) as u32)
        .unwrap();
    assert!(!d.running());
    assert_eq!(m.calls(), [Call::Stop(1)]);
    assert_eq!(d.config().csb_addresses(), (GPA, GPA + 0x2000));
    d.ptctl(PTCTL_CREATE).unwrap();
    d.write_register(ptnet::CSB_GH_BAL, GPA as u32).unwrap();
    assert!(!d.running());
}

#[test]
fn new_memory_or_descriptors_restart_running_rings() {
    let (m, mut d) = ready();
    d.ptctl(PTCTL_CREATE).unwrap();
    m.calls();
    let start = |calls| Call::Start {
        resume: false,
        kicks: 3,
        calls,
    };
    d.set_memory(memory());
    assert_eq!(m.calls(), [Call::Stop(1), start(1)]);
    d.set_ring_fd(RingFd::Call, 2, Some(eventfd())).unwrap();
    assert_eq!(m.calls(), [Call::Stop(2), start(2)]);
    d.set_ring_fd(RingFd::Kick, 1, Some(eventfd())).unwrap();
    assert_eq!(m.calls(), [Call::Stop(3), start(2)]);
    // A restart that fails leaves its errno in PTCTL and the rings stopped.
    d.set_ring_fd(RingFd::Kick, 1, None).unwrap();
    assert_eq!(m.calls(), [Call::Stop(4)]);
    assert_eq!((ptctl_reg(&d), d.running()), (ENXIO, false));
    // Stopped rings are not started by new descriptors.
    d.set_ring_fd(RingFd::Kick, 1, Some(eventfd())).unwrap();
    assert_eq!(m.calls(), []);
}

#[test]
fn ring_indexes_past_the_port_are_refused() {
    let (_, mut d) = ready();
    assert_eq!(d.ring_index(2).unwrap(), 2);
    for index in [3, 4, 255, u32::MAX] {
        assert!(matches!(
            d.ring_index(index),
            Err(DeviceError::RingIndex { index: i, rings: 3 }) if i == index
        ));
        for kind in [RingFd::Kick, RingFd::Call] {
            let e = d.set_ring_fd(kind, index, Some(eventfd())).unwrap_err();
            assert!(
                matches!(e, DeviceError::RingIndex { rings: 3, .. }),
                "{e:?}"
            );
        }
    }
    let e = d.ring_index(3).unwrap_err();
    assert_eq!(e.to_string(), "ring index 3 (port has 3)");
}

#[test]
fn kicks_and_calls_must_be_eventfds() {
    let (_, mut d) = ready();
    let (r, w) = std::io::pipe().expect("pipe");
    let cases: Vec<(RingFd, File, &str)> = vec![
        (
            RingFd::Kick,
            File::from(std::os::fd::OwnedFd::from(r)),
            "pipe:[",
        ),
        (
            RingFd::Call,
            File::from(std::os::fd::OwnedFd::from(w)),
            "pipe:[",
        ),
        (RingFd::Kick, File::open("/dev/zero").unwrap(), "/dev/zero"),
        (RingFd::Call, memory_file(), "memfd:"),
    ];
    for (kind, f, what) in cases {
        match d.set_ring_fd(kind, 1, Some(f)) {
            Err(DeviceError::NotEventfd {
                kind: k,
                ring: 1,
                why,
            }) => {
                assert_eq!(k, kind);
                assert!(
                    why.contains("not an eventfd") && why.contains(what),
                    "{why}"
                );
            }
            r => panic!("{kind:?} {what}: {r:?}"),
        }
    }
    let e = d
        .set_ring_fd(RingFd::Call, 0, Some(File::open("/dev/zero").unwrap()))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("an interrupt descriptor for ring 0 not an eventfd"),
        "{e}"
    );
    // The refused descriptor replaced nothing: CREATE still has ring 1's kick.
    d.ptctl(PTCTL_CREATE).unwrap();
}

fn memory_file() -> File {
    MappedFile::memfd("not-an-eventfd", 4096)
        .unwrap()
        .file()
        .try_clone()
        .unwrap()
}

#[test]
fn config_reads_stay_inside_the_space() {
    let (_, d) = ready();
    assert_eq!(
        d.read_config(0, CONFIG_SIZE as u32).unwrap().len(),
        CONFIG_SIZE
    );
    assert_eq!(d.read_config(CONFIG_SIZE as u32, 0).unwrap(), &[] as &[u8]);
    assert_eq!(
        d.read_config(ptnet::NUM_RX_RINGS, 4).unwrap(),
        2u32.to_le_bytes()
    );
    for (offset, size) in [(1, 256), (0, 257), (256, 1), (u32::MAX, 2), (2, u32::MAX)] {
        match d.read_config(offset, size) {
            Err(DeviceError::ConfigRead { offset: o, size: s }) => {
                assert_eq!((o, s), (offset, size))
            }
            r => panic!("{offset}+{size}: {r:?}"),
        }
    }
}

#[test]
fn config_writes_are_one_register_of_four_bytes() {
    let (m, mut d) = ready();
    for len in [0, 1, 3, 5, 8] {
        let e = d.set_config(ptnet::PTCTL, &vec![1; len]).unwrap_err();
        assert!(matches!(e, DeviceError::ConfigSize(l) if l == len), "{e:?}");
    }
    for offset in [1, 2, 3, 8, 12, 16, 24, 28, 48, 68, 128, 252, 256, u32::MAX] {
        let e = d.set_config(offset, &[1, 0, 0, 0]).unwrap_err();
        assert!(
            matches!(e, DeviceError::NotWritable(o) if o == offset),
            "{e:?}"
        );
    }
    assert_eq!(m.calls(), []);
    // A read-only register written directly (not through SET_CONFIG).
    let e = d.write_register(ptnet::NUM_TX_RINGS, 9).unwrap_err();
    assert!(matches!(e, DeviceError::ReadOnly(28)), "{e:?}");
    assert_eq!(e.to_string(), "a write to read-only register 28");
    assert_eq!(d.config().get(ptnet::NUM_TX_RINGS), 1);
    // Every writable register takes a write; PTCTL through SET_CONFIG runs the command.
    d.set_config(ptnet::PTCTL, &PTCTL_CREATE.to_le_bytes())
        .unwrap();
    assert!(d.running());
    for off in ptnet_protocol::device::WRITABLE_REGISTERS {
        d.set_config(off, &0u32.to_le_bytes()).unwrap();
    }
    assert!(!d.running(), "a CSB move stopped the rings");
}

#[test]
fn ptfeat_keeps_only_offered_features() {
    let m = mock(true);
    let mut d = PtnetState::new(m.clone());
    assert_eq!(d.config().get(ptnet::PTFEAT), PTNETMAP_F_VNET_HDR);
    d.write_register(ptnet::PTFEAT, u32::MAX).unwrap();
    assert_eq!(d.config().get(ptnet::PTFEAT), PTNETMAP_F_VNET_HDR);
    d.write_register(ptnet::PTFEAT, 0).unwrap();
    assert_eq!(d.config().get(ptnet::PTFEAT), 0);
    let mut plain = PtnetState::new(mock(false));
    plain.write_register(ptnet::PTFEAT, u32::MAX).unwrap();
    assert_eq!(plain.config().get(ptnet::PTFEAT), 0);
}

#[test]
fn vnet_header_lengths_follow_the_negotiation() {
    let m = mock(true);
    let len = || m.vnet.as_ref().unwrap().load(Ordering::Relaxed);
    let mut d = PtnetState::new(m.clone());
    // Not accepted yet: only 0.
    let e = d.write_register(ptnet::VNET_HDR_LEN, 10).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::VnetHdrLen {
                len: 10,
                accepted: false
            }
        ),
        "{e:?}"
    );
    assert!(!e.nacks());
    assert_eq!(
        e.to_string(),
        "VNET_HDR_LEN 10 (PTFEAT VNET_HDR not accepted)"
    );
    d.write_register(ptnet::PTFEAT, PTNETMAP_F_VNET_HDR)
        .unwrap();
    for l in [10, 12, 0, 12] {
        d.write_register(ptnet::VNET_HDR_LEN, l).unwrap();
        assert_eq!((len(), d.config().get(ptnet::VNET_HDR_LEN)), (l as u8, l));
    }
    for bad in [1, 11, 13, 256 + 12, u32::MAX] {
        let e = d.write_register(ptnet::VNET_HDR_LEN, bad).unwrap_err();
        assert!(
            matches!(e, DeviceError::VnetHdrLen { len, accepted: true } if len == bad),
            "{e:?}"
        );
        assert_eq!((len(), d.config().get(ptnet::VNET_HDR_LEN)), (12, 12));
    }
    // The feature withdrawn: the header goes.
    d.write_register(ptnet::PTFEAT, 0).unwrap();
    assert_eq!((len(), d.config().get(ptnet::VNET_HDR_LEN)), (0, 0));
    // A port without headers takes 0 and nothing else.
    let mut plain = PtnetState::new(mock(false));
    plain.write_register(ptnet::VNET_HDR_LEN, 0).unwrap();
    plain.write_register(ptnet::PTFEAT, u32::MAX).unwrap();
    let e = plain.write_register(ptnet::VNET_HDR_LEN, 12).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::VnetHdrLen {
                len: 12,
                accepted: false
            }
        ),
        "{e:?}"
    );
}

#[test]
fn features_beyond_the_offer_are_refused() {
    let mut d = PtnetState::new(mock(false));
    d.set_features(VHOST_USER_F_PROTOCOL_FEATURES).unwrap();
    d.set_features(0).unwrap();
    let e = d
        .set_features(VHOST_USER_F_PROTOCOL_FEATURES | 1)
        .unwrap_err();
    assert!(matches!(e, DeviceError::Features(0x4000_0001)), "{e:?}");
    assert_eq!(e.to_string(), "features 0x40000001 beyond those offered");
    d.set_protocol_features(PROTOCOL_FEATURES).unwrap();
    assert_eq!(d.protocol_features(), PROTOCOL_FEATURES);
    let e = d
        .set_protocol_features(PROTOCOL_FEATURES | 1 << 40)
        .unwrap_err();
    assert!(matches!(e, DeviceError::ProtocolFeatures(f) if f == PROTOCOL_FEATURES | 1 << 40));
    assert_eq!(d.protocol_features(), PROTOCOL_FEATURES, "kept");
    assert!(e.nacks());
}

#[test]
fn a_disconnect_stops_and_forgets_the_frontend() {
    let m = mock(true);
    let mut d = PtnetState::new(m.clone());
    d.set_memory(memory());
    set_csb(&mut d, GPA, GPA + 0x1000);
    for r in 0..3 {
        d.set_ring_fd(RingFd::Kick, r, Some(eventfd())).unwrap();
    }
    d.write_register(ptnet::PTFEAT, PTNETMAP_F_VNET_HDR)
        .unwrap();
    d.write_register(ptnet::VNET_HDR_LEN, 12).unwrap();
    d.set_protocol_features(PROTOCOL_FEATURES).unwrap();
    d.ptctl(PTCTL_CREATE).unwrap();
    m.calls();
    d.disconnect();
    assert_eq!(m.calls(), [Call::Stop(1), Call::Gone]);
    assert!(!d.running());
    assert_eq!(*d.config(), PtnetConfig::new(&m.geometry));
    assert_eq!(d.protocol_features(), 0);
    assert_eq!(m.vnet.as_ref().unwrap().load(Ordering::Relaxed), 0);
    // Memory, CSB and kicks forgotten.
    assert!(matches!(d.ptctl(PTCTL_CREATE), Err(PtctlError::NoMemory)));
    d.set_memory(memory());
    assert!(matches!(
        d.ptctl(PTCTL_CREATE),
        Err(PtctlError::CsbOutside { gh: 0, hg: 0 })
    ));
    set_csb(&mut d, GPA, GPA + 0x1000);
    assert!(matches!(
        d.ptctl(PTCTL_CREATE),
        Err(PtctlError::NoKick { ring: 0 })
    ));
}
