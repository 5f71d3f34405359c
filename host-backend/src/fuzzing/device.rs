//! The `device` target: vhost-user requests to the ptnet device over real ports.

use super::input::Input;
use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::frontend::ptnet::PtnetDevice;
use crate::portspec::PortSpec;
use crate::served::{build_ports, NetmapImpl, Port};
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE, PTCTL_DELETE, PTCTL_RESUME};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserMemoryRegion};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;

/// A pipe and a VALE pair, built once: the device target's ports (their rings persist across
/// inputs as they do across a real daemon's connections).
fn device_ports() -> &'static Mutex<Vec<Arc<Port>>> {
    static PORTS: OnceLock<Mutex<Vec<Arc<Port>>>> = OnceLock::new();
    PORTS.get_or_init(|| {
        let specs: Vec<PortSpec> = [
            "netmap:fzd{0@conf:slots=64",
            "netmap:fzd}0",
            "valefzd:a@conf:slots=64",
            "valefzd:b@conf:slots=64",
        ]
        .iter()
        .map(|s| PortSpec::parse(s).expect("spec"))
        .collect();
        Mutex::new(
            build_ports(&specs, NetmapImpl::User, &Default::default()).expect("device ports"),
        )
    })
}

fn memfd(size: u64, seals: libc::c_int) -> Option<File> {
    let f = crate::sys::sealable_memfd(c"fuzz-guest", size).ok()?;
    if seals != 0 {
        crate::sys::add_seals(&f, seals).ok()?;
    }
    Some(f)
}

fn eventfd(nonblock: bool) -> Option<File> {
    crate::sys::eventfd_file(nonblock).ok()
}

/// The frontend writes `v` to an eventfd it shares with the daemon, never blocking itself (a
/// saturated counter refuses the write), and leaves the description blocking if `blocking`.
fn frontend_write(f: &File, v: u64, blocking: bool) {
    let Ok(was) = crate::sys::set_nonblocking_to(f, true) else {
        return;
    };
    let _ = (&*f).write(&v.to_ne_bytes());
    let _ = crate::sys::set_nonblocking_to(f, was && !blocking);
}

/// One frontend: a device and the descriptors it was given (kept to write through them).
struct Frontend {
    dev: PtnetDevice,
    rings: u32,
    mem: Vec<(u64, u64, File)>,
    kicks: Vec<File>,
    calls: Vec<File>,
}

impl Frontend {
    /// A descriptor for a kick or call: an eventfd (kept to be written), or something else.
    fn fd(&mut self, inp: &mut Input, call: bool) -> Option<File> {
        let f = match inp.below(6) {
            0 => return None,
            1 => memfd(8, 0)?,
            2 => {
                // A pipe's read end, its write end closed.
                let (r, _) = std::io::pipe().ok()?;
                File::from(std::os::fd::OwnedFd::from(r))
            }
            3 => eventfd(false)?,
            _ => eventfd(true)?,
        };
        if let Ok(c) = f.try_clone() {
            if call {
                &mut self.calls
            } else {
                &mut self.kicks
            }
            .push(c);
        }
        Some(f)
    }

    fn ring(&self, inp: &mut Input) -> u32 {
        if inp.below(8) == 0 {
            inp.u32()
        } else {
            inp.below(self.rings)
        }
    }

    fn mem_table(&mut self, inp: &mut Input, good: bool) {
        let n = if good { 1 } else { inp.below(4) as usize };
        let mut regions = Vec::new();
        let mut files = Vec::new();
        let mut keep = Vec::new();
        for r in 0..n {
            let size = if good {
                0x10000
            } else {
                match inp.below(4) {
                    0 => u64::from(inp.u32() % (1 << 20)),
                    1 => 1 << (30 + inp.below(8)),
                    _ => 0x1000 * u64::from(1 + inp.below(16)),
                }
            };
            let seals = match if good { 1 } else { inp.below(4) } {
                0 => 0,
                1 | 2 => libc::F_SEAL_SHRINK,
                _ => libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            };
            let Some(f) = memfd(size, seals) else {
                return;
            };
            let gpa = if good || inp.bool() {
                (r as u64 + u64::from(inp.below(16))) << 16
            } else {
                inp.u64()
            };
            let (len, off) = match if good { 0 } else { inp.below(4) } {
                0 => (size, 0),
                1 => {
                    let off = 0x1000 * u64::from(inp.below(4));
                    (size.saturating_sub(off), off)
                }
                2 => (size + u64::from(inp.below(3)) * 0x1000, 0),
                _ => (inp.u64(), inp.u64()),
            };
            regions.push(VhostUserMemoryRegion::new(gpa, len, 0, off));
            if let Ok(c) = f.try_clone() {
                keep.push((gpa, size.min(len), c));
            }
            files.push(f);
        }
        if !good && inp.below(8) == 0 {
            files.pop();
        }
        if self.dev.set_mem_table(&regions, files, None).is_ok() {
            self.mem = keep;
        }
    }

    /// Points the CSB arrays inside a region of the last table (or anywhere).
    fn csb(&mut self, inp: &mut Input) {
        let (gh, hg) = match self.mem.get(inp.below(self.mem.len() as u32) as usize) {
            Some(&(gpa, size, _)) if inp.below(4) != 0 => {
                let slots = u32::try_from(size / 64).unwrap_or(u32::MAX);
                (
                    gpa + 64 * u64::from(inp.below(slots)),
                    gpa + 64 * u64::from(inp.below(slots)),
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
            let _ = self.dev.write_register(reg, v);
        }
    }

    fn ptctl(&mut self, inp: &mut Input) {
        let v = [PTCTL_CREATE, PTCTL_RESUME, PTCTL_DELETE, inp.u32()][inp.below(4) as usize];
        let _ = self.dev.write_register(ptnet::PTCTL, v);
    }

    /// Everything a real frontend does before CREATE, then CREATE (or RESUME).
    fn setup(&mut self, inp: &mut Input) {
        let _ = self
            .dev
            .set_features(ptnet_protocol::device::VHOST_USER_F_PROTOCOL_FEATURES);
        let _ = self.dev.write_register(ptnet::PTFEAT, inp.u32());
        let _ = self
            .dev
            .write_register(ptnet::VNET_HDR_LEN, [0, 10, 12][inp.below(3) as usize]);
        self.mem_table(inp, true);
        for i in 0..self.rings {
            let (k, c) = (eventfd(true), eventfd(true));
            if let (Some(k), Some(c)) = (k, c) {
                self.kicks.extend(k.try_clone().ok());
                self.calls.extend(c.try_clone().ok());
                let _ = self.dev.set_vring_kick(i as u8, Some(k));
                let _ = self.dev.set_vring_call(i as u8, Some(c));
            }
        }
        self.csb(inp);
        let v = if inp.below(4) == 0 {
            PTCTL_RESUME
        } else {
            PTCTL_CREATE
        };
        let _ = self.dev.write_register(ptnet::PTCTL, v);
    }

    fn misc(&mut self, inp: &mut Input) {
        let d = &mut self.dev;
        let i = inp.u32();
        let _ = match inp.below(14) {
            0 => d.set_features(inp.u64()),
            1 => d.set_protocol_features(inp.u64()),
            2 => d.set_vring_num(i, inp.u32()),
            3 => d.set_vring_base(i, inp.u32()),
            4 => d.get_vring_base(i).map(|_| ()),
            5 => d.set_vring_enable(i, inp.bool()),
            6 => d.reset_owner(),
            7 => d.reset_device(),
            8 => d.get_queue_num().map(|_| ()),
            9 => d.get_shmem_config().map(|_| ()),
            10 => d.set_vring_err(i as u8, None),
            11 => d.set_owner(),
            12 => {
                d.flush_backend_requests();
                Ok(())
            }
            _ => {
                d.take_config_refusal();
                Ok(())
            }
        };
    }

    fn op(&mut self, inp: &mut Input) {
        match inp.below(16) {
            0 => self.mem_table(inp, false),
            1 => self.mem_table(inp, true),
            2 => {
                let (i, f) = (self.ring(inp), self.fd(inp, false));
                let _ = self.dev.set_vring_kick(i as u8, f);
            }
            3 => {
                let (i, f) = (self.ring(inp), self.fd(inp, true));
                let _ = self.dev.set_vring_call(i as u8, f);
            }
            4 => {
                // Every writable register, and one offset the input picks.
                let w = ptnet_protocol::device::WRITABLE_REGISTERS;
                let regs = [w[0], w[1], w[2], w[3], w[4], w[5], w[6], inp.u32()];
                let off = regs[inp.below(regs.len() as u32) as usize];
                let _ = self.dev.write_register(off, inp.u32());
            }
            5 => {
                let off = if inp.bool() { inp.below(72) } else { inp.u32() };
                let blen = inp.below(9) as usize;
                let buf = inp.bytes(blen).to_vec();
                let _ = self
                    .dev
                    .set_config(off, &buf, VhostUserConfigFlags::WRITABLE);
            }
            6 => {
                let (off, size) = if inp.bool() {
                    (inp.below(300), inp.below(300))
                } else {
                    (inp.u32(), inp.u32())
                };
                let _ = self
                    .dev
                    .get_config(off, size, VhostUserConfigFlags::empty());
            }
            7 => self.csb(inp),
            8 => self.ptctl(inp),
            9 => self.setup(inp),
            10 => {
                // The guest writes its memory (the CSB) while the rings may run.
                if let Some((_, size, f)) = self.mem.get(inp.below(self.mem.len() as u32) as usize)
                {
                    let off = u64::from(inp.below(u32::try_from(*size).unwrap_or(u32::MAX)));
                    let blen = 1 + inp.below(64) as usize;
                    let _ = f.write_at(inp.bytes(blen), off);
                }
            }
            11 => {
                // The guest writes the port memory (SHMEM_MAP): rings, slots, buffers.
                let (f, size) = self.dev.port().memory_file();
                let off = u64::from(inp.below(u32::try_from(size).unwrap_or(u32::MAX)));
                let blen = 1 + inp.below(16) as usize;
                let _ = f.write_at(inp.bytes(blen), off);
            }
            12 => {
                // Kicks, or a call counter saturated so the next interrupt cannot be written.
                let call = inp.bool();
                let list = if call { &self.calls } else { &self.kicks };
                if let Some(f) = list.get(inp.below(list.len() as u32) as usize) {
                    let v: u64 = if call && inp.bool() { u64::MAX - 1 } else { 1 };
                    // Or the frontend clears O_NONBLOCK on the description it shares with the
                    // daemon (issue 10, row 5), which must not block a daemon thread either.
                    frontend_write(f, v, inp.below(4) == 0);
                }
            }
            13 => self.misc(inp),
            14 => {
                // Truncation: refused on sealed memory, which is all the device maps.
                if let Some((_, size, f)) = self.mem.get(inp.below(self.mem.len() as u32) as usize)
                {
                    let _ = f.set_len(size / 2);
                }
                let (f, size) = self.dev.port().memory_file();
                assert!(f.set_len(size / 2).is_err(), "the port memfd can be shrunk");
            }
            _ => match inp.below(4) {
                0 => self.dev.disconnect(),
                1 => std::thread::sleep(std::time::Duration::from_micros(inp.below(20).into())),
                _ => std::thread::yield_now(),
            },
        }
    }
}

/// A sequence of vhost-user requests from one or two frontends, on the two ends of a pipe or
/// two ports of a VALE switch, built in-process; the rings really run between requests.
pub fn device(data: &[u8]) {
    let mut inp = Input::new(data);
    let ports = device_ports().lock().unwrap_or_else(|p| p.into_inner());
    let base = 2 * inp.below(2) as usize;
    let opts = LoopOptions {
        // Busy polling is the operator's choice, not a frontend's (and its spinning threads
        // take the CPU the requests need): the default loop, with or without a spin window.
        busy_poll: false,
        // Mostly no spinning: spinning ring threads take the CPU the requests need.
        spin: std::time::Duration::from_micros(match inp.below(4) {
            0 => inp.below(64).into(),
            _ => 0,
        }),
    };
    let mut fe: Vec<Frontend> = (0..1 + inp.below(2) as usize)
        .map(|k| {
            let port = ports[base + k].clone();
            Frontend {
                rings: port.num_rings(),
                dev: PtnetDevice::new(port, opts),
                mem: Vec::new(),
                kicks: Vec::new(),
                calls: Vec::new(),
            }
        })
        .collect();
    for _ in 0..48 {
        if inp.is_empty() {
            break;
        }
        let k = inp.below(fe.len() as u32) as usize;
        fe[k].op(&mut inp);
    }
    for f in &mut fe {
        f.dev.disconnect();
        assert!(!f.dev.running());
    }
}
