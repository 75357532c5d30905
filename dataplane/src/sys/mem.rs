//! Memory for lookup tables: zero-filled, reserved up front and committed
//! only where written. A table that never writes a region costs no
//! physical memory for it, and reads of untouched memory see zeros.
//!
//! Transparent huge pages only where the owner says its table fills them
//! ([`Zeroed::advise_huge`]); the rest is advised against them. A huge
//! page is committed whole at the first write into it: a small table (a
//! service's downstream table of a few host routes touches one chunk page
//! and one group page) would otherwise cost 2 MiB per region it touches,
//! times its regions, its two copies and the services (1,000 services
//! with a few subscribers each took 2 GB, and the kernel's compaction to
//! find the huge pages took seconds).
//!
//! This sits in `sys` because it must talk to the OS with raw pointers;
//! tables above it stay safe code, and need no DPDK.

use std::ptr::NonNull;

const HUGE: usize = 2 << 20;

mod sealed {
    pub trait Sealed {}
}

/// Integer types for which all-zero bytes are a valid value, so anonymous
/// zeroed memory can be viewed as a slice of them.
pub trait Zeroable: Copy + sealed::Sealed {}
impl sealed::Sealed for u8 {}
impl sealed::Sealed for u16 {}
impl sealed::Sealed for u32 {}
impl sealed::Sealed for u64 {}
impl Zeroable for u8 {}
impl Zeroable for u16 {}
impl Zeroable for u32 {}
impl Zeroable for u64 {}

/// A fixed-length, zero-initialised array of integers in anonymous memory,
/// 2 MiB aligned; transparent huge pages only for the prefix given to
/// [`Zeroed::advise_huge`].
pub struct Zeroed<T: Zeroable> {
    base: NonNull<u8>,
    map_len: usize,
    data: NonNull<T>,
    len: usize,
    /// Bytes from `data` advised for huge pages (a multiple of 2 MiB).
    huge: usize,
}

/// The `u32` flavour most tables use.
pub type ZeroedU32 = Zeroed<u32>;

// SAFETY: the mapping is owned exclusively by this value; shared access
// only reads, and mutation needs `&mut self`; `T` is a plain integer.
unsafe impl<T: Zeroable> Send for Zeroed<T> {}
// SAFETY: as above.
unsafe impl<T: Zeroable> Sync for Zeroed<T> {}

impl<T: Zeroable> Zeroed<T> {
    /// Reserves `len` zeroed entries. Physical memory is taken page by page
    /// as entries are written.
    pub fn new(len: usize) -> std::io::Result<Zeroed<T>> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        let map_len = bytes + HUGE;
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        let aligned = (base as usize).next_multiple_of(HUGE);
        // SAFETY: [aligned, aligned + bytes) lies inside the mapping because
        // we mapped HUGE extra bytes; madvise only sets a hint on it and its
        // failure (no THP support) is harmless. No huge pages until the
        // owner fills them, even where THP is "always".
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, bytes, libc::MADV_NOHUGEPAGE);
        }
        Ok(Zeroed {
            base: NonNull::new(base).expect("mmap never returns NULL on success"),
            map_len,
            data: NonNull::new(aligned as *mut T).expect("non-null"),
            len,
            huge: 0,
        })
    }

    /// Advises transparent huge pages for the whole 2 MiB pages among the
    /// first `used` entries: the owner writes them all (a table's chunks
    /// or groups in use), so a huge page costs nothing a small one would
    /// not and saves TLB misses. Only what is new since the last call is
    /// advised.
    pub fn advise_huge(&mut self, used: usize) {
        let bytes = (used.min(self.len) * std::mem::size_of::<T>()) / HUGE * HUGE;
        if bytes <= self.huge {
            return;
        }
        // SAFETY: [data + huge, data + bytes) lies inside the mapping
        // (`bytes` is at most the `len` entries mapped from `data`);
        // madvise only changes a hint, and its failure is harmless.
        unsafe {
            libc::madvise(
                self.data.as_ptr().cast::<u8>().add(self.huge).cast(),
                bytes - self.huge,
                libc::MADV_HUGEPAGE,
            );
        }
        self.huge = bytes;
    }

    /// Bytes advised for huge pages so far.
    pub fn huge_bytes(&self) -> usize {
        self.huge
    }

    #[inline(always)]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `data` points to `len` T inside our mapping, zero (a valid
        // T by `Zeroable`) or written by us, aligned to 2 MiB; `&self`
        // excludes writers.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }

    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Zeroable> Drop for Zeroed<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`; no slice into
        // it can outlive `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_reads_zero_and_keeps_writes() {
        let mut z = ZeroedU32::new(1 << 20).unwrap();
        assert_eq!(z.len(), 1 << 20);
        assert!(z.as_slice().iter().step_by(4099).all(|&v| v == 0));
        z.as_mut_slice()[12345] = 7;
        assert_eq!(z.as_slice()[12345], 7);
        assert_eq!(z.as_slice().as_ptr() as usize % HUGE, 0);
    }

    #[test]
    fn huge_pages_only_for_whole_pages_in_use() {
        let mut z = Zeroed::<u16>::new(4 * HUGE / 2).unwrap();
        assert_eq!(z.huge_bytes(), 0);
        // Less than one huge page in use: none advised.
        z.advise_huge(HUGE / 2 - 1);
        assert_eq!(z.huge_bytes(), 0);
        z.advise_huge(HUGE / 2 + 10);
        assert_eq!(z.huge_bytes(), HUGE);
        // Never shrinks, never past the array.
        z.advise_huge(1);
        assert_eq!(z.huge_bytes(), HUGE);
        z.advise_huge(usize::MAX / 4);
        assert_eq!(z.huge_bytes(), 4 * HUGE);
        z.as_mut_slice()[3 * HUGE / 2] = 9;
        assert_eq!(z.as_slice()[3 * HUGE / 2], 9);
    }
}
