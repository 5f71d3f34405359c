//! The frontend's guest memory, as SET_MEM_TABLE describes it: where the CSB lives.
//!
//! Each region is a memfd sealed against shrinking and lies inside its file, so the daemon's
//! mappings of it never fault (see [`MappedFile::map_guest`]); the regions of one table add up to
//! at most [`GuestMemory::max_per_connection`] bytes, so a few frontends cannot fill the daemon's
//! address space (with sparse memfds of many TiB) and make other ports' CREATE fail.

use crate::sys::{GuestFileError, MappedFile};
use ptnet_protocol::shmem::SharedMem;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most memory regions accepted in one SET_MEM_TABLE.
pub const MAX_REGIONS: usize = 32;

/// The default of `--max-guest-memory`: 64 GiB, so 2000 connections at their cap still fit in the
/// 128 TiB of a process's address space.
pub const DEFAULT_MAX_GUEST_MEMORY: u64 = 64 << 30;

/// `--max-guest-memory`: most bytes of guest memory one connection's table may map.
static MAX_GUEST_MEMORY: AtomicU64 = AtomicU64::new(DEFAULT_MAX_GUEST_MEMORY);

/// One region of a memory table, as the frontend described it (the vhost-user message's fields
/// that matter here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Guest-physical address of the region's first byte.
    pub guest_phys_addr: u64,
    /// Size in bytes.
    pub memory_size: u64,
    /// Where the region starts in its file.
    pub mmap_offset: u64,
}

/// Why a memory table was refused: one variant per check, in the order they are made. The
/// messages are the daemon's log lines ("frontend sent {this}; refused").
#[derive(Debug, thiserror::Error)]
pub enum MemoryTableError {
    /// No region, more than [`MAX_REGIONS`], or not one file per region.
    #[error("a malformed memory table")]
    Malformed {
        /// Regions described.
        regions: usize,
        /// Files attached.
        files: usize,
    },
    /// The regions add up to more than the cap (`total`: `None` past 2^64).
    #[error(
        "a memory table of {regions} regions and {} bytes, over the {cap}-byte cap on guest \
         memory per connection (--max-guest-memory)",
        total.map_or("more than 2^64".into(), |t| t.to_string())
    )]
    OverCap {
        /// Regions described.
        regions: usize,
        /// Their total size.
        total: Option<u64>,
        /// The cap in force.
        cap: u64,
    },
    /// A region larger than the address space.
    #[error("a memory region of {size} bytes")]
    RegionSize {
        /// Its size.
        size: u64,
    },
    /// A region whose guest addresses wrap past 2^64.
    #[error("a memory region that wraps around")]
    Wraps {
        /// Its guest-physical address.
        gpa: u64,
        /// Its size.
        size: u64,
    },
    /// A region that cannot be mapped safely (not a sealed memfd, past its file's end, ...).
    #[error(
        "a memory table whose region {index} (guest address {gpa:#x}, {size} bytes at file \
         offset {offset}) cannot be mapped: {source}"
    )]
    Map {
        /// The region's place in the table.
        index: usize,
        /// Its guest-physical address.
        gpa: u64,
        /// Its size.
        size: u64,
        /// Its offset in the file.
        offset: u64,
        /// Why.
        source: GuestFileError,
    },
}

/// The frontend's guest memory: its mapped regions, by guest-physical address.
#[derive(Default, Debug)]
pub struct GuestMemory {
    regions: Vec<(u64, MappedFile)>,
}

impl GuestMemory {
    /// Sets the cap on the guest memory one connection maps (`--max-guest-memory`).
    pub fn set_max_per_connection(bytes: u64) {
        MAX_GUEST_MEMORY.store(bytes, Ordering::Relaxed);
    }

    /// The cap on the guest memory one connection maps.
    pub fn max_per_connection() -> u64 {
        MAX_GUEST_MEMORY.load(Ordering::Relaxed)
    }

    /// Checks and maps a table: `files[i]` backs `regions[i]`; the regions together may not
    /// exceed `cap` bytes, checked before anything is mapped.
    pub fn from_table(
        regions: &[MemoryRegion],
        files: Vec<File>,
        cap: u64,
    ) -> Result<Self, MemoryTableError> {
        if regions.len() != files.len() || regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(MemoryTableError::Malformed {
                regions: regions.len(),
                files: files.len(),
            });
        }
        let total = regions
            .iter()
            .try_fold(0u64, |t, r| t.checked_add(r.memory_size));
        if total.is_none_or(|t| t > cap) {
            return Err(MemoryTableError::OverCap {
                regions: regions.len(),
                total,
                cap,
            });
        }
        let mut mem = Self::default();
        for (index, (r, f)) in regions.iter().zip(files).enumerate() {
            let (gpa, size, offset) = (r.guest_phys_addr, r.memory_size, r.mmap_offset);
            let Ok(len) = usize::try_from(size) else {
                return Err(MemoryTableError::RegionSize { size });
            };
            if gpa.checked_add(size).is_none() {
                return Err(MemoryTableError::Wraps { gpa, size });
            }
            let map =
                MappedFile::map_guest(f, offset, len).map_err(|source| MemoryTableError::Map {
                    index,
                    gpa,
                    size,
                    offset,
                    source,
                })?;
            mem.regions.push((gpa, map));
        }
        Ok(mem)
    }

    /// Memory made of regions the caller mapped (tests, fuzzing): `(guest address, mapping)`.
    pub fn from_mappings(regions: Vec<(u64, MappedFile)>) -> Self {
        Self { regions }
    }

    /// The window `[gpa, gpa + len)`, if it lies inside one region.
    pub fn translate(&self, gpa: u64, len: usize) -> Option<SharedMem> {
        self.regions.iter().find_map(|(base, map)| {
            let off = gpa.checked_sub(*base)?;
            let off = usize::try_from(off).ok()?;
            map.mem().sub(off, len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(gpa: u64, size: u64, offset: u64) -> MemoryRegion {
        MemoryRegion {
            guest_phys_addr: gpa,
            memory_size: size,
            mmap_offset: offset,
        }
    }

    /// A sealed memfd of `size` bytes (what QEMU's memory-backend-memfd gives).
    fn memfd(size: usize) -> File {
        MappedFile::memfd("test-guest", size)
            .expect("memfd")
            .file()
            .try_clone()
            .expect("dup")
    }

    #[test]
    fn malformed_tables_are_refused_before_mapping() {
        let e = GuestMemory::from_table(&[], vec![], 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                MemoryTableError::Malformed {
                    regions: 0,
                    files: 0
                }
            ),
            "{e:?}"
        );
        let e = GuestMemory::from_table(&[region(0, 4096, 0)], vec![], 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                MemoryTableError::Malformed {
                    regions: 1,
                    files: 0
                }
            ),
            "{e:?}"
        );
        let many: Vec<_> = (0..=MAX_REGIONS as u64)
            .map(|i| region(i << 16, 4096, 0))
            .collect();
        let files = (0..many.len()).map(|_| memfd(4096)).collect();
        let e = GuestMemory::from_table(&many, files, 1 << 30).unwrap_err();
        assert!(
            matches!(
                e,
                MemoryTableError::Malformed {
                    regions: 33,
                    files: 33
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "a malformed memory table");
    }

    #[test]
    fn the_cap_counts_every_region_and_overflow() {
        let e = GuestMemory::from_table(
            &[region(0, 8192, 0), region(1 << 20, 8192, 0)],
            vec![memfd(8192), memfd(8192)],
            16383,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                MemoryTableError::OverCap {
                    regions: 2,
                    total: Some(16384),
                    cap: 16383
                }
            ),
            "{e:?}"
        );
        let e = GuestMemory::from_table(
            &[region(0, u64::MAX, 0), region(0, 2, 0)],
            vec![memfd(4096), memfd(4096)],
            u64::MAX,
        )
        .unwrap_err();
        assert!(
            matches!(e, MemoryTableError::OverCap { total: None, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("more than 2^64 bytes"), "{e}");
    }

    #[test]
    fn wrapping_and_unmappable_regions_name_the_region() {
        let e = GuestMemory::from_table(
            &[region(u64::MAX - 4095, 8192, 0)],
            vec![memfd(8192)],
            u64::MAX,
        )
        .unwrap_err();
        assert!(
            matches!(e, MemoryTableError::Wraps { size: 8192, .. }),
            "{e:?}"
        );
        let e = GuestMemory::from_table(&[region(0x1000, 8192, 4096)], vec![memfd(8192)], u64::MAX)
            .unwrap_err();
        match e {
            MemoryTableError::Map {
                index: 0,
                gpa: 0x1000,
                size: 8192,
                offset: 4096,
                source,
            } => {
                assert!(
                    matches!(source, GuestFileError::PastEnd { size: 8192, .. }),
                    "{source:?}"
                )
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn translate_finds_windows_inside_one_region_only() {
        let m = GuestMemory::from_table(
            &[region(0x10000, 4096, 0), region(0x20000, 4096, 0)],
            vec![memfd(4096), memfd(4096)],
            1 << 20,
        )
        .expect("a good table");
        assert!(m.translate(0x10000, 4096).is_some());
        assert!(m.translate(0x20f00, 256).is_some());
        assert!(
            m.translate(0x10f00, 512).is_none(),
            "crosses the region's end"
        );
        assert!(m.translate(0xffff, 1).is_none());
        assert!(m.translate(u64::MAX, 1).is_none());
    }
}
