//! Guest memory for the virtio-net device. (The one bridge between the port's netmap memory and
//! vm-memory's volatile slices is `sys::buffer`.)
//!
//! The frontend's regions are checked exactly as the ptnet device checks its own
//! ([`crate::sys::MappedFile::map_guest`]): a memfd sealed with `F_SEAL_SHRINK`, the region inside
//! the file as `fstat` sees it once the seal holds. Only then does vm-memory map the file: the
//! seal guarantees the mapping can never reach past the end of the file, so a frontend that
//! `ftruncate`s its memfd cannot SIGBUS the daemon (it gets EPERM).

use crate::sys::{check_guest_file, GuestFileError};
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use vhost::vhost_user::message::VhostUserMemoryRegion;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion, VolatileSlice,
};

/// `--allow-unsealed-memory`: set once at start-up.
static ALLOW_UNSEALED: AtomicBool = AtomicBool::new(false);

/// Lets virtio-net ports map memory files that cannot be sealed against shrinking (DPDK
/// virtio-user's hugetlbfs files), the region still checked against the file's size: for
/// trusted frontends only (one that shrinks the file while it is mapped kills the daemon).
pub fn allow_unsealed(yes: bool) {
    ALLOW_UNSEALED.store(yes, Ordering::Relaxed);
}

/// [`check_guest_file`], or with [`allow_unsealed`] only its size check for an unsealed file.
fn check_file(f: &File, offset: u64, len: usize) -> Result<(), GuestFileError> {
    match check_guest_file(f, offset, len) {
        Err(GuestFileError::NotSealed { .. } | GuestFileError::NotAMemfd(_))
            if ALLOW_UNSEALED.load(Ordering::Relaxed) =>
        {
            let size = f.metadata().map_err(GuestFileError::Map)?.len();
            if len == 0 || offset.checked_add(len as u64).is_none_or(|end| end > size) {
                return Err(GuestFileError::PastEnd { offset, len, size });
            }
            Ok(())
        }
        r => r,
    }
}

/// Most memory regions accepted in one SET_MEM_TABLE: the ptnet device's bound.
pub use crate::frontend::ptnet::memory::MAX_REGIONS;

/// The frontend's memory: vm-memory's view for the virtqueues, and the frontend's virtual
/// addresses of each region (vhost-user gives ring addresses in those).
pub struct FrontendMemory {
    /// The regions, by guest-physical address.
    pub mem: GuestMemoryMmap,
    /// (frontend virtual address, size, guest-physical address) of each region.
    va: Vec<(u64, u64, u64)>,
}

impl FrontendMemory {
    /// Translates a frontend virtual address (SET_VRING_ADDR) to a guest-physical one.
    pub fn va_to_gpa(&self, va: u64) -> Option<u64> {
        self.va.iter().find_map(|&(base, size, gpa)| {
            let off = va.checked_sub(base)?;
            (off < size).then(|| gpa + off)
        })
    }

    /// The memory of a table, every region checked before it is mapped. The total is capped
    /// like the ptnet device's (`--max-guest-memory`).
    pub fn from_table(ctx: &[VhostUserMemoryRegion], files: Vec<File>) -> Result<Self, String> {
        if ctx.len() != files.len() || ctx.is_empty() || ctx.len() > MAX_REGIONS {
            return Err(format!(
                "a malformed memory table ({} regions, {} descriptors)",
                ctx.len(),
                files.len()
            ));
        }
        let cap = crate::frontend::ptnet::GuestMemory::max_per_connection();
        let total = ctx
            .iter()
            .try_fold(0u64, |t, r| t.checked_add(r.memory_size));
        if total.is_none_or(|t| t > cap) {
            return Err(format!(
                "a memory table over the {cap}-byte cap on guest memory per connection \
                 (--max-guest-memory)"
            ));
        }
        let mut regions = Vec::with_capacity(ctx.len());
        let mut va = Vec::with_capacity(ctx.len());
        for (i, (r, f)) in ctx.iter().zip(files).enumerate() {
            let (gpa, size, offset) = (r.guest_phys_addr, r.memory_size, r.mmap_offset);
            let len = usize::try_from(size).map_err(|_| format!("region {i}: {size} bytes"))?;
            if gpa.checked_add(size).is_none() || r.user_addr.checked_add(size).is_none() {
                return Err(format!("region {i} wraps around"));
            }
            check_file(&f, offset, len).map_err(|e| {
                format!(
                    "region {i} (guest address {gpa:#x}, {size} bytes at file offset {offset}) \
                     cannot be mapped: {e}"
                )
            })?;
            let map = MmapRegion::<()>::from_file(FileOffset::new(f, offset), len)
                .map_err(|e| format!("region {i}: mmap: {e}"))?;
            let region = GuestRegionMmap::new(map, GuestAddress(gpa))
                .ok_or_else(|| format!("region {i} does not fit the address space"))?;
            regions.push(region);
            va.push((r.user_addr, size, gpa));
        }
        let mem = GuestMemoryMmap::from_regions(regions)
            .map_err(|e| format!("the regions overlap or are unordered: {e}"))?;
        Ok(Self { mem, va })
    }
}

/// Guest memory as one round of a pair thread reads it: [`GuestMemoryBackend::get_slice`] with
/// the last two regions hit remembered (a queue's ring and the buffers it points to are usually
/// in one or two regions), so most look-ups skip the search. Nothing is skipped in the checks: a
/// remembered region is used only when it contains the address (regions do not overlap, so it is
/// the one the search would find), and the region's own `get_slice` bounds the range as before.
#[derive(Clone, Copy)]
pub struct MemCache<'m> {
    /// The memory.
    pub mem: &'m GuestMemoryMmap,
    hit: [Option<&'m GuestRegionMmap>; 2],
    /// The last [`Self::ring`] asked for: its address, length and slice.
    ring: Option<(GuestAddress, usize, VolatileSlice<'m>)>,
}

impl<'m> MemCache<'m> {
    /// A cache over `mem`, empty.
    #[inline]
    pub fn new(mem: &'m GuestMemoryMmap) -> Self {
        Self {
            mem,
            hit: [None; 2],
            ring: None,
        }
    }

    /// The `len` bytes at `addr`, inside one region, as `mem.get_slice` gives them.
    #[inline]
    pub fn slice(&mut self, addr: GuestAddress, len: usize) -> Option<VolatileSlice<'m>> {
        for r in self.hit.iter().flatten() {
            if let Some(off) = r.to_region_addr(addr) {
                return r.get_slice(off, len).ok();
            }
        }
        let (r, off) = self.mem.to_region_addr(addr)?;
        self.hit = [Some(r), self.hit[0]];
        r.get_slice(off, len).ok()
    }

    /// [`Self::slice`] for a queue's ring, which a round asks for once a chain: the slice found
    /// for the same address and length last time is the same slice (the memory cannot change
    /// while this borrows it).
    #[inline]
    pub fn ring(&mut self, addr: GuestAddress, len: usize) -> Option<VolatileSlice<'m>> {
        if let Some((a, l, s)) = self.ring {
            if a == addr && l == len {
                return Some(s);
            }
        }
        let s = self.slice(addr, len)?;
        self.ring = Some((addr, len, s));
        Some(s)
    }
}
