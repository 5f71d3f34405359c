//! The tests' only uses of the daemon's library (a dev-dependency): its AF_PACKET wrappers, for
//! the kernel side of the ping (no safe API in `nix` for these two), and its tap MAC rule.

use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};
use ptnet_backend::port::nic::sys as nic_sys;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

pub use ptnet_backend::port::nic::tap::host_side_mac;

/// A raw AF_PACKET socket (the kernel side of the ping).
pub struct RawSock {
    fd: std::os::fd::OwnedFd,
}

impl RawSock {
    pub fn open(ifindex: u32) -> Self {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::EthAll,
        )
        .unwrap_or_else(|e| panic!("AF_PACKET socket: {}", std::io::Error::from(e)));
        // No safe API in `nix` for these two: the daemon's own wrappers (ptnet_backend::port::nic::sys).
        let one: libc::c_int = 1;
        let _ = nic_sys::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
        );
        if let Err(e) = nic_sys::bind_packet(fd.as_raw_fd(), ifindex, libc::ETH_P_ALL as u16) {
            panic!("bind: {e}");
        }
        Self { fd }
    }

    pub fn send(&self, f: &[u8]) {
        let r = send(self.fd.as_raw_fd(), f, MsgFlags::empty()).map_err(std::io::Error::from);
        assert!(matches!(r, Ok(n) if n == f.len()), "send: {r:?}");
    }

    pub fn recv(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let ms = left.as_millis().max(1) as i32;
            let mut p = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(
                &mut p,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            if let Ok(n) = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                if n > 0 {
                    return Some(buf[..n].to_vec());
                }
            }
        }
    }
}
