//! The `unsafe` corner of the NIC ports: descriptors, ioctls, sockets and the kernel's mmap'ed
//! packet rings (mapped with [`Mapping`], from the crate's `sys`). Everything here is a thin,
//! bounds-checked wrapper over one system call; the port modules above are safe Rust.

pub use crate::sys::Mapping;
use ptnet_protocol::shmem::SharedMem;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Plain old data: a `Copy` type for which every bit pattern of its size is a valid value
/// (integers and arrays or `repr(C)` structs of them; no references, pointers to follow, `bool`,
/// `char`, enums or `NonZero`). [`zeroed`] makes one of zeros and [`getsockopt`] lets the kernel
/// write any bytes into one.
///
/// # Safety
/// Implement it only for such types: both functions rely on it to produce a valid value.
pub unsafe trait Pod: Copy {}

// SAFETY: integers: every bit pattern is a value.
unsafe impl Pod for libc::c_int {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: each of these libc structs holds only integers (and arrays of integers): every bit
// pattern, zeros included, is a valid value.
unsafe impl Pod for libc::sockaddr_ll {}
// SAFETY: as above.
unsafe impl Pod for libc::sockaddr_xdp {}
// SAFETY: as above (four `xdp_ring_offset`s of u64s).
unsafe impl Pod for libc::xdp_mmap_offsets {}
// SAFETY: as above.
unsafe impl Pod for libc::xdp_statistics {}
// SAFETY: two u32s.
unsafe impl Pod for TpacketStats {}

/// `struct tpacket_stats` (PACKET_STATISTICS): what the kernel counted since the last read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TpacketStats {
    /// Frames received.
    pub packets: u32,
    /// Frames dropped (the ring was full).
    pub drops: u32,
}

/// A zero-initialised `T`, as C's `struct foo x = {0};` (padding included). The caller then sets
/// the fields it needs.
pub fn zeroed<T: Pod>() -> T {
    // SAFETY: `T: Pod` promises that all-zero bytes are a valid `T`.
    unsafe { std::mem::zeroed() }
}

/// The index of interface `name` in the daemon's network namespace, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the union is 24 bytes).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` and attaches it to tap `name` (created when missing), non-blocking,
/// without packet information, as one queue of a multi-queue tap when `multi_queue`.
pub fn open_tap(name: &str, multi_queue: bool, vnet_hdr: bool) -> io::Result<OwnedFd> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    // SAFETY: plain open of a constant NUL-terminated path.
    let fd = cvt(unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { own(fd) };
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if multi_queue {
        req.flags |= libc::IFF_MULTI_QUEUE as libc::c_short;
    }
    if vnet_hdr {
        req.flags |= libc::IFF_VNET_HDR as libc::c_short;
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and writes back) one `struct ifreq`, which `req` is, laid out as
    // the kernel expects (40 bytes, name first).
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) })?;
    Ok(fd)
}

/// `struct ifreq` as SIOCSIFHWADDR reads it: the name, then a `struct sockaddr` (16 bytes) and
/// the rest of the 24-byte union.
#[repr(C)]
struct IfReqHwAddr {
    name: [u8; libc::IFNAMSIZ],
    family: u16,
    data: [u8; 14],
    _pad: [u8; 8],
}

/// Sets the Ethernet address of interface `name` (SIOCSIFHWADDR).
pub fn set_hw_addr(name: &str, mac: [u8; 6]) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    // Any socket takes interface ioctls; a packet socket of protocol 0 receives nothing.
    let sock = socket(libc::AF_PACKET, 0)?;
    let mut req = IfReqHwAddr {
        name: [0; libc::IFNAMSIZ],
        family: libc::ARPHRD_ETHER,
        data: [0; 14],
        _pad: [0; 8],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    req.data[..6].copy_from_slice(&mac);
    // SAFETY: SIOCSIFHWADDR reads one `struct ifreq` (40 bytes, name first, then the sockaddr),
    // which `req` is; the kernel does not keep the pointer.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFHWADDR as _, &req) })?;
    Ok(())
}

/// The virtio-net header length a tap opened with IFF_VNET_HDR reads and writes (TUNSETVNETHDRSZ).
pub fn tap_set_vnet_hdr_len(fd: RawFd, len: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &len) })?;
    Ok(())
}

/// The offloads a tap may hand us (TUNSETOFFLOAD, `TUN_F_*`): 0 makes the kernel complete
/// checksums and segment before a frame reaches the tap.
pub fn tap_set_offload(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, flags as libc::c_ulong) })?;
    Ok(())
}

/// The two iovecs of a frame split between a header on our side (`head`, `head_len` bytes) and
/// `len` bytes of `mem` at `off`; `EFAULT` if that range is outside the mapping.
fn head_and_slot(
    head: *mut u8,
    head_len: usize,
    mem: &SharedMem,
    off: usize,
    len: usize,
) -> io::Result<[libc::iovec; 2]> {
    if !mem.contains(off, len) {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok([
        libc::iovec {
            iov_base: head.cast(),
            iov_len: head_len,
        },
        libc::iovec {
            // SAFETY: inside the mapping (checked above), as in `read_into`.
            iov_base: unsafe { mem.as_ptr().add(off) }.cast(),
            iov_len: len,
        },
    ])
}

/// `readv(2)`: the first `head.len()` bytes into `head`, the rest into `len` bytes of `mem` at
/// `off`. Returns the bytes read in all.
pub fn readv_into(
    fd: RawFd,
    head: &mut [u8],
    mem: &SharedMem,
    off: usize,
    len: usize,
) -> io::Result<usize> {
    let iov = head_and_slot(head.as_mut_ptr(), head.len(), mem, off, len)?;
    // SAFETY: both iovecs describe memory valid for writes for the call: `head` borrowed
    // mutably, the shared range checked to lie inside the mapping.
    cvt_size(unsafe { libc::readv(fd, iov.as_ptr(), 2) })
}

/// `writev(2)` of `head`, then `len` bytes of `mem` at `off`.
pub fn writev_from(
    fd: RawFd,
    head: &[u8],
    mem: &SharedMem,
    off: usize,
    len: usize,
) -> io::Result<usize> {
    let iov = head_and_slot(head.as_ptr().cast_mut(), head.len(), mem, off, len)?;
    // SAFETY: both iovecs describe memory valid for reads for the call; the kernel only reads.
    cvt_size(unsafe { libc::writev(fd, iov.as_ptr(), 2) })
}

/// The most slots [`writev_chain`] gathers into one frame (a 64 KiB frame in 2 KiB buffers
/// takes 33).
pub const MAX_CHAIN: usize = 64;

/// `writev(2)` of `head`, then the ranges `(offset, length)` of `mem` in order: one frame from
/// a chain of slots. `EFAULT` if a range is outside the mapping, `EINVAL` for more than
/// [`MAX_CHAIN`] ranges.
pub fn writev_chain(
    fd: RawFd,
    head: &[u8],
    mem: &SharedMem,
    ranges: &[(usize, usize)],
) -> io::Result<usize> {
    if ranges.len() > MAX_CHAIN {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_CHAIN + 1];
    iov[0] = libc::iovec {
        iov_base: head.as_ptr().cast_mut().cast(),
        iov_len: head.len(),
    };
    for (v, &(off, len)) in iov[1..].iter_mut().zip(ranges) {
        if !mem.contains(off, len) {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        // SAFETY: inside the mapping (checked just above), as in `read_into`.
        v.iov_base = unsafe { mem.as_ptr().add(off) }.cast();
        v.iov_len = len;
    }
    // SAFETY: every iovec used describes memory valid for reads for the call (a live slice,
    // ranges checked inside the mapping); the kernel only reads them.
    cvt_size(unsafe { libc::writev(fd, iov.as_ptr(), ranges.len() as libc::c_int + 1) })
}

/// `read(2)` into `len` bytes of `mem` at `off`.
pub fn read_into(fd: RawFd, mem: &SharedMem, off: usize, len: usize) -> io::Result<usize> {
    if !mem.contains(off, len) {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    // SAFETY: the range was checked to lie inside the mapping, which outlives the call. Other
    // parties may read these bytes concurrently only if they break the ring protocol, and then
    // they see garbage, never memory outside the window.
    cvt_size(unsafe { libc::read(fd, mem.as_ptr().add(off).cast(), len) })
}

/// `write(2)` of `len` bytes of `mem` at `off`.
pub fn write_from(fd: RawFd, mem: &SharedMem, off: usize, len: usize) -> io::Result<usize> {
    if !mem.contains(off, len) {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    // SAFETY: as in `read_into`; the kernel only reads the range.
    cvt_size(unsafe { libc::write(fd, mem.as_ptr().add(off).cast(), len) })
}

/// One descriptor watched edge-triggered for writability through an epoll instance of its own:
/// the epoll descriptor turns readable when the watched one is woken for room (its socket's
/// write-space callback: a sent frame completed, send buffer freed) or for an error, and is then
/// writable (or in error). [`Self::clear`] forgets the wake-ups seen so far.
///
/// For sockets whose level-triggered POLLOUT does not mean what the caller waits for (AF_XDP:
/// room in the TX ring, not completed frames; AF_PACKET: the send buffer under half full, which
/// holds while a small TX ring has every frame in flight), so that polling them for POLLOUT would
/// spin: each wake-up here follows the kernel making progress on that socket.
///
/// With a backstop, a timer in the same epoll set also makes it readable that long after the
/// last [`Self::clear`]: for a caller that may wait for something the socket is never woken for.
#[derive(Debug)]
pub struct EdgeWait {
    // The timer first: closed before the epoll instance that watches it.
    timer: Option<(OwnedFd, std::time::Duration)>,
    ep: OwnedFd,
}

impl EdgeWait {
    /// Watches `fd` (which must outlive the watch: epoll drops it when it closes).
    pub fn writable(fd: RawFd, backstop: Option<std::time::Duration>) -> io::Result<Self> {
        // SAFETY: plain epoll_create1; the descriptor it returns is new and ours.
        let ep = unsafe { own(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let add = |fd: RawFd, events: libc::c_int| {
            let mut ev = libc::epoll_event {
                events: events as u32,
                u64: 0,
            };
            // SAFETY: `ev` is a valid epoll_event the call reads; both descriptors are open.
            cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
        };
        add(fd, libc::EPOLLOUT | libc::EPOLLET)?;
        let timer = match backstop {
            Some(d) => {
                // SAFETY: plain timerfd_create; the descriptor it returns is new and ours.
                let t = unsafe {
                    own(cvt(libc::timerfd_create(
                        libc::CLOCK_MONOTONIC,
                        libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                    ))?)
                };
                add(t.as_raw_fd(), libc::EPOLLIN)?;
                Some((t, d))
            }
            None => None,
        };
        Ok(Self { timer, ep })
    }

    /// The epoll descriptor, to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    /// Consumes the wake-ups reported so far and restarts the backstop: until the next wake-up
    /// the epoll descriptor is not readable. Call it before checking for room, then sleep: a
    /// wake-up in between is kept.
    pub fn clear(&self) {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: room for the two events asked for.
        let _ = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), ev.as_mut_ptr(), 2, 0) };
        if let Some((t, d)) = &self.timer {
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: libc::c_long::from(d.subsec_nanos().max(1)),
                },
            };
            // SAFETY: `spec` is a valid itimerspec the call reads; no old value asked for.
            // Setting the timer also resets its expiration count (not readable until it fires).
            let _ = unsafe { libc::timerfd_settime(t.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        }
    }
}

/// A raw socket of `family` (AF_PACKET, AF_XDP), non-blocking and close-on-exec.
pub fn socket(family: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { own(fd) })
}

/// `setsockopt(2)` with a plain-data value. The kernel only reads `size_of::<T>()` bytes of `v`,
/// so any `Copy` type is sound here (a wrong one is refused with EINVAL).
pub fn setsockopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points to `size_of::<T>()` readable bytes; T is plain data (Copy, repr(C) at
    // the call sites).
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `getsockopt(2)` into a plain-data value; returns the length the kernel wrote. `T: Pod`: the
/// kernel may write any bytes (or fewer than `size_of::<T>()`) into it.
pub fn getsockopt<T: Pod>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &mut T,
) -> io::Result<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` points to `len` writable bytes, and whatever the kernel writes there is a valid
    // `T` (`T: Pod`).
    cvt(unsafe { libc::getsockopt(fd, level, name, (v as *mut T).cast(), &mut len) })?;
    Ok(len as usize)
}

/// Reads and clears the socket's pending error (SO_ERROR), 0 when none.
pub fn take_socket_error(fd: RawFd) -> i32 {
    let mut e: libc::c_int = 0;
    match getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut e) {
        Ok(_) => e,
        Err(_) => 0,
    }
}

/// Binds an AF_PACKET socket to interface `ifindex` for ethertype `protocol` (host order; 0:
/// receive nothing).
pub fn bind_packet(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    let mut sa: libc::sockaddr_ll = zeroed();
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = protocol.to_be();
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `sa` is a complete sockaddr_ll of the length given.
    cvt(unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `bind(2)` with an arbitrary plain-data address (AF_XDP's sockaddr_xdp).
pub fn bind_raw<T: Copy>(fd: RawFd, addr: &T) -> io::Result<()> {
    // SAFETY: `addr` is a complete socket address of the length given.
    cvt(unsafe {
        libc::bind(
            fd,
            (addr as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `sendto(fd, NULL, 0, flags, NULL, 0)`: asks the kernel to transmit what a packet or XDP TX
/// ring holds.
pub fn kick_tx(fd: RawFd, dontwait: bool) -> io::Result<usize> {
    let flags = if dontwait { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: a zero-length send with null buffer and address is valid for these sockets.
    cvt_size(unsafe { libc::sendto(fd, std::ptr::null(), 0, flags, std::ptr::null(), 0) })
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL)`: wakes the kernel's AF_XDP RX processing
/// (needed with XDP_USE_NEED_WAKEUP).
pub fn kick_rx(fd: RawFd) -> io::Result<usize> {
    // SAFETY: a zero-length receive with null buffer and address.
    cvt_size(unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    })
}

/// `bpf(2)` with the attribute `attr` of command `cmd`; returns what the call returned (a new
/// descriptor for the commands that make one).
///
/// # Safety
/// `attr` must be the union member command `cmd` expects, with every pointer inside it valid for
/// the duration of the call (for reads, or writes where the kernel writes).
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: the caller's contract.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as libc::c_int)
    }
}

/// Wraps a descriptor a system call has just returned.
///
/// # Safety
/// `fd` must be an open descriptor that nothing else owns (what `socket`, `open`, `bpf`... just
/// returned).
unsafe fn own(fd: libc::c_int) -> OwnedFd {
    // SAFETY: the caller's contract.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;

/// `union bpf_attr` for BPF_MAP_CREATE (its prefix).
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
#[derive(Default)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD (its prefix).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE (its prefix).
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// BPF_MAP_CREATE of a map with 4-byte keys and values.
pub fn bpf_map_create_u32(map_type: u32, max_entries: u32) -> io::Result<OwnedFd> {
    let mut a = MapCreate {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: BPF_MAP_CREATE with its attribute prefix; no pointers inside.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &mut a) }?;
    // SAFETY: a descriptor the kernel has just returned to us.
    Ok(unsafe { own(fd) })
}

/// BPF_MAP_UPDATE_ELEM: `map[key] = value` (4-byte keys and values).
pub fn bpf_map_update_u32(map: BorrowedFd<'_>, key: u32, value: u32) -> io::Result<()> {
    let mut a = MapUpdate {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    // SAFETY: key and value point to live u32s for the duration of the call (the kernel reads
    // 4 bytes of each: the map was made with 4-byte keys and values, else it refuses).
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut a) }.map(drop)
}

/// BPF_PROG_LOAD of `insns` (`struct bpf_insn`s) as a program of `prog_type` named `name` (at
/// most 15 bytes), the verifier's log (level 1) written into `log`.
pub fn bpf_prog_load(
    prog_type: u32,
    insns: &[u64],
    license: &CStr,
    name: &str,
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    let mut a = ProgLoad {
        prog_type,
        insn_cnt: u32::try_from(insns.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: u32::try_from(log.len()).unwrap_or(u32::MAX),
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    let n = name.len().min(a.prog_name.len() - 1);
    a.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: the instructions (insn_cnt of 8 bytes), the NUL-terminated license and the log
    // buffer (log_size bytes, written by the kernel) are borrowed for the call; the sizes given
    // are theirs.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut a) }?;
    // SAFETY: a descriptor the kernel has just returned to us.
    Ok(unsafe { own(fd) })
}

/// BPF_LINK_CREATE: attaches `prog` to interface `ifindex` as `attach_type` with `flags`.
pub fn bpf_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut a = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    // SAFETY: BPF_LINK_CREATE's attribute prefix; no pointers inside.
    let fd = unsafe { bpf(BPF_LINK_CREATE, &mut a) }?;
    // SAFETY: a descriptor the kernel has just returned to us.
    Ok(unsafe { own(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_wait_wakes_on_new_room_only() {
        let mut sv = [0; 2];
        // SAFETY: `sv` has room for the two descriptors socketpair returns, which we then own.
        let (a, b) = unsafe {
            assert_eq!(
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                    sv.as_mut_ptr()
                ),
                0
            );
            (own(sv[0]), own(sv[1]))
        };
        let readable = |fd: RawFd| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        let w = EdgeWait::writable(a.as_raw_fd(), None).unwrap();
        // Writable when watched: reported once, then forgotten though still writable.
        assert!(readable(w.fd()));
        w.clear();
        assert!(!readable(w.fd()));
        // Fill `a`, then let `b` read: the room that frees is a new wake-up.
        let buf = [0u8; 4096];
        // SAFETY: `buf` is readable for its length.
        while unsafe { libc::write(a.as_raw_fd(), buf.as_ptr().cast(), buf.len()) } > 0 {}
        w.clear();
        assert!(!readable(w.fd()));
        let mut rbuf = [0u8; 4096];
        // SAFETY: `rbuf` is writable for its length.
        while unsafe { libc::read(b.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len()) } > 0 {}
        assert!(readable(w.fd()));
        w.clear();
        assert!(!readable(w.fd()));
        // The backstop: readable that long after a clear, whatever the socket does.
        let w =
            EdgeWait::writable(a.as_raw_fd(), Some(std::time::Duration::from_millis(30))).unwrap();
        w.clear();
        assert!(!readable(w.fd()));
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(readable(w.fd()));
        w.clear();
        assert!(!readable(w.fd()));
    }

    #[test]
    fn bpf_attributes_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<MapCreate>(), 20);
        assert_eq!(std::mem::size_of::<MapUpdate>(), 32);
        assert_eq!(std::mem::size_of::<ProgLoad>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoad, prog_name), 48);
        assert_eq!(std::mem::size_of::<LinkCreate>(), 16);
        assert_eq!(std::mem::size_of::<TpacketStats>(), 8);
    }
}
