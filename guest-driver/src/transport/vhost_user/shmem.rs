//! The backend channel's one expected request: the daemon's SHMEM_MAP of the netmap memory.

use crate::error::ShmemMapProblem;
use crate::sys::Mapping;
use ptnet_protocol::device::NETMAP_SHMEM_ID;
use std::io;
use std::os::fd::AsRawFd;
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
use vhost::vhost_user::VhostUserFrontendReqHandlerMut;

/// Receives the daemon's SHMEM_MAP on the backend channel.
#[derive(Default)]
pub(super) struct ShmemHandler {
    /// Size GET_SHMEM_CONFIG announced for region 0.
    pub(super) expected_len: u64,
    /// The mapping, once received.
    pub(super) mapped: Option<Mapping>,
    /// Why a SHMEM_MAP was refused.
    pub(super) error: Option<ShmemMapProblem>,
}

impl VhostUserFrontendReqHandlerMut for ShmemHandler {
    fn shmem_map(&mut self, req: &VhostUserMMap, fd: &dyn AsRawFd) -> io::Result<u64> {
        let (shmid, shm_offset, fd_offset, len, flags) =
            (req.shmid, req.shm_offset, req.fd_offset, req.len, req.flags);
        let refuse = |me: &mut Self, why: ShmemMapProblem| {
            me.error = Some(why);
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        };
        if shmid != NETMAP_SHMEM_ID || shm_offset != 0 {
            return refuse(
                self,
                ShmemMapProblem::Region {
                    shmid,
                    offset: shm_offset,
                },
            );
        }
        if len != self.expected_len {
            let expected = self.expected_len;
            return refuse(self, ShmemMapProblem::Length { len, expected });
        }
        if flags & VhostUserMMapFlags::WRITABLE.bits() == 0 {
            return refuse(self, ShmemMapProblem::ReadOnly);
        }
        if self.mapped.is_some() {
            return refuse(self, ShmemMapProblem::Second);
        }
        let Ok(len) = usize::try_from(len) else {
            let expected = self.expected_len;
            return refuse(self, ShmemMapProblem::Length { len, expected });
        };
        match Mapping::map_shared(fd.as_raw_fd(), fd_offset, len) {
            Ok(m) => {
                self.mapped = Some(m);
                Ok(0)
            }
            Err(e) => refuse(self, ShmemMapProblem::Mmap(e)),
        }
    }

    fn shmem_unmap(&mut self, _req: &VhostUserMMap) -> io::Result<u64> {
        // Unmapping under a running application is not supported: keep the mapping (the memory
        // stays valid for us) and report it.
        self.error = Some(ShmemMapProblem::Unmap);
        Err(io::Error::from_raw_os_error(libc::ENOTSUP))
    }
}
