use std::ptr::NonNull;

use super::mempool::Mempool;

/// One owned packet buffer (single segment), returned to its pool on drop.
/// For slow paths and tests; the fast path moves mbufs in a [`super::Burst`].
pub struct Mbuf {
    raw: NonNull<dpdk_sys::rte_mbuf>,
}

// SAFETY: an mbuf is owned by exactly one `Mbuf` at a time and its pool is
// thread-safe, so moving the owner between threads is sound.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes one mbuf from `pool`, or `None` if the pool is empty.
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: `pool` is a live mempool for the duration of the call.
        let p = unsafe { dpdk_sys::hdvrf_rte_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(p).map(|raw| Mbuf { raw })
    }

    /// An mbuf holding a copy of `bytes`, or `None` if the pool is empty or
    /// the bytes do not fit in one segment.
    pub fn from_bytes(pool: &Mempool, bytes: &[u8]) -> Option<Mbuf> {
        let m = Mbuf::alloc(pool)?;
        let len = u16::try_from(bytes.len()).ok()?;
        // SAFETY: `m` is a fresh single-segment mbuf we own.
        let dst = unsafe { dpdk_sys::hdvrf_rte_pktmbuf_append(m.raw.as_ptr(), len) };
        if dst.is_null() {
            return None; // `m` drops back to the pool
        }
        // SAFETY: append returned room for `len` bytes at `dst`, inside the
        // mbuf's buffer, which does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.cast::<u8>(), bytes.len()) };
        Some(m)
    }

    /// The packet bytes of the first segment.
    pub fn data(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // buffer by mbuf invariants; we own the mbuf, so no one writes it.
        unsafe {
            let m = self.raw.as_ref();
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// The total packet length over all segments.
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: reading a field of an mbuf we own.
        unsafe { self.raw.as_ref().pkt_len }
    }

    /// Gives up ownership (for handing to DPDK).
    pub(crate) fn into_raw(self) -> *mut dpdk_sys::rte_mbuf {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid mbuf that nothing else owns.
    pub(crate) unsafe fn from_raw(p: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf { raw: p }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; freeing returns it (and any chained
        // segments) to its pool exactly once.
        unsafe { dpdk_sys::hdvrf_rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}
