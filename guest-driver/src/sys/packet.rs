//! An `AF_PACKET` socket bound to one interface, sending and receiving frames in batches
//! (`sendmmsg`/`recvmmsg`) straight from and into a shared memory's buffers. The `packet:`
//! transport's only system calls.

use ptnet_protocol::shmem::SharedMem;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most frames one system call moves.
pub(crate) const BATCH: usize = 64;

/// A raw packet socket on one interface: every frame the interface receives (not the ones it
/// sends), full Ethernet frames both ways. Non-blocking.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

/// `ETH_P_ALL` in network byte order, as `socket` and `sockaddr_ll` take it.
fn eth_p_all() -> u16 {
    (libc::ETH_P_ALL as u16).to_be()
}

impl PacketSocket {
    /// Opens a socket bound to `ifname`; returns it with the interface's MAC address.
    pub(crate) fn open(ifname: &str) -> io::Result<(Self, [u8; 6])> {
        let name = CString::new(ifname).map_err(|_| io::ErrorKind::InvalidInput)?;
        if name.as_bytes().len() >= libc::IFNAMSIZ {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain system call with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(eth_p_all()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just created and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = PacketSocket { fd };
        sock.setsockopt_int(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        // SAFETY: an all-zero sockaddr_ll is a valid value of the plain C struct.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = eth_p_all();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
        let r = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mac = sock.hwaddr(&name)?;
        Ok((sock, mac))
    }

    fn setsockopt_int(&self, level: i32, opt: i32, v: i32) -> io::Result<()> {
        // SAFETY: `v` is an int that outlives the call, its size passed with it.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                std::ptr::from_ref(&v).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The interface's hardware address (SIOCGIFHWADDR).
    fn hwaddr(&self, name: &CString) -> io::Result<[u8; 6]> {
        // SAFETY: an all-zero ifreq is a valid value of the plain C struct.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into `ifr`, a valid
        // ifreq that outlives the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut ifr) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the ioctl succeeded, so the union holds the hardware address.
        let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *d = *s as u8;
        }
        Ok(mac)
    }

    /// The descriptor, for `poll`.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends `frames` (`(offset, length)` in `mem`, at most [`BATCH`]), one frame each, in one
    /// `sendmmsg`. Returns how many the kernel took (`Ok(0)`: its buffer is full, try after
    /// POLLOUT). An error is the first frame's own: the caller drops that frame. Frames outside
    /// `mem` are refused before the call (`InvalidInput`).
    pub(crate) fn send_batch(
        &self,
        mem: &SharedMem,
        frames: &[(usize, usize)],
    ) -> io::Result<usize> {
        let n = frames.len().min(BATCH);
        if frames[..n].iter().any(|&(o, l)| !mem.contains(o, l)) {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: all-zero iovec and mmsghdr arrays are valid values of the plain C structs.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, &(off, len)) in frames[..n].iter().enumerate() {
            // The range was checked to lie in `mem`; the kernel only reads it.
            iov[i].iov_base = mem.as_ptr().wrapping_add(off).cast();
            iov[i].iov_len = len;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..n]` point at `iov[..n]`, which point into `mem`'s mapping (checked
        // above, alive for the call); no address is given (the socket is bound).
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT as _,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(0),
            _ => Err(e),
        }
    }

    /// Receives at most one frame into each of `bufs` (`(offset, capacity)` in `mem`, at most
    /// [`BATCH`]) in one `recvmmsg`, writing each frame's length into `lens` (a frame longer than
    /// its buffer: its full length, larger than the capacity, and the buffer holds its start).
    /// Returns how many frames arrived (`Ok(0)`: none waiting).
    pub(crate) fn recv_batch(
        &self,
        mem: &SharedMem,
        bufs: &[(usize, usize)],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let n = bufs.len().min(lens.len()).min(BATCH);
        if bufs[..n].iter().any(|&(o, l)| !mem.contains(o, l)) {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: all-zero iovec and mmsghdr arrays are valid values of the plain C structs.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, &(off, cap)) in bufs[..n].iter().enumerate() {
            iov[i].iov_base = mem.as_ptr().wrapping_add(off).cast();
            iov[i].iov_len = cap;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..n]` point at `iov[..n]`, writable ranges of `mem`'s mapping (checked
        // above, alive for the call, shared memory that is only ever accessed as bytes); no
        // address or control buffers are asked for; no timeout.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                (libc::MSG_DONTWAIT | libc::MSG_TRUNC) as _,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let got = r as usize;
        for (l, m) in lens.iter_mut().zip(&msgs[..got]) {
            // With MSG_TRUNC, msg_len is the frame's real length even when it did not fit.
            *l = m.msg_len as usize;
        }
        Ok(got)
    }
}
