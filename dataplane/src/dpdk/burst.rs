use std::ptr::NonNull;

use super::mbuf::Mbuf;
use crate::frame::{Frame, FrameBurst};
use crate::outcome::PUNT_PORT;

/// Packets moved per rx/tx call, as in testpmd and l3fwd.
pub const BURST_SIZE: usize = 32;

/// A fixed array of up to [`BURST_SIZE`] owned mbufs: the unit of work on
/// the fast path. No allocation; whatever is still in it on drop is freed.
pub struct Burst {
    pub(crate) pkts: [*mut dpdk_sys::rte_mbuf; BURST_SIZE],
    pub(crate) len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub const fn new() -> Burst {
        Burst {
            pkts: [std::ptr::null_mut(); BURST_SIZE],
            len: 0,
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an mbuf; gives it back if the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST_SIZE {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let p = self.pkts[self.len];
        // SAFETY: entries below `len` are valid mbufs the burst owns; the
        // slot is now outside `len`, so ownership moves to the `Mbuf`.
        NonNull::new(p).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// The first-segment bytes of packet `i` for in-place rewriting.
    #[inline(always)]
    pub fn data_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.len, "burst index out of range");
        // SAFETY: entries below `len` are valid mbufs the burst owns; the
        // range buf_addr + data_off .. + data_len is inside the mbuf buffer
        // by mbuf invariants, and `&mut self` makes the borrow unique.
        unsafe {
            let m = &*self.pkts[i];
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Packet `i` as a [`Frame`] the pipeline can rewrite in place.
    #[inline(always)]
    pub fn frame(&mut self, i: usize) -> MbufFrame<'_> {
        assert!(i < self.len, "burst index out of range");
        // SAFETY: entries below `len` are valid mbufs the burst owns, and
        // `&mut self` makes the reference unique while the frame lives.
        MbufFrame {
            m: unsafe { &mut *self.pkts[i] },
        }
    }

    /// Moves every packet to `outs[targets[i]]`, to `punt` when the
    /// target is [`PUNT_PORT`], or frees it when the target is out of
    /// range (dropped). Returns how many packets did not fit their target
    /// burst (freed, to count as tx drops); the caller keeps room by
    /// flushing `outs` and `punt` after each call.
    #[inline]
    pub fn distribute(&mut self, targets: &[u16], outs: &mut [Burst], punt: &mut Burst) -> usize {
        let mut overflow = 0;
        for (i, &t) in targets.iter().enumerate().take(self.len) {
            let p = self.pkts[i];
            let out = if t == PUNT_PORT {
                Some(&mut *punt)
            } else {
                outs.get_mut(t as usize)
            };
            match out {
                Some(o) if o.len < BURST_SIZE => {
                    o.pkts[o.len] = p;
                    o.len += 1;
                }
                other => {
                    overflow += usize::from(other.is_some());
                    // SAFETY: `p` is a valid mbuf this burst owns; it leaves
                    // the burst here (`len` is reset below).
                    unsafe { dpdk_sys::hdvrf_rte_pktmbuf_free(p) };
                }
            }
        }
        self.len = 0;
        overflow
    }

    /// Runs `keep` over each packet's first-segment bytes (which it may
    /// rewrite); frees the packets it returns `false` for and closes the
    /// gaps, keeping order. Returns how many were freed.
    #[inline]
    pub fn retain_data(&mut self, mut keep: impl FnMut(&mut [u8]) -> bool) -> usize {
        let mut kept = 0;
        for i in 0..self.len {
            let p = self.pkts[i];
            if keep(self.data_mut(i)) {
                self.pkts[kept] = p;
                kept += 1;
            } else {
                // SAFETY: `p` is a valid mbuf the burst owns; it leaves the
                // burst here (its slot is overwritten or beyond `kept`).
                unsafe { dpdk_sys::hdvrf_rte_pktmbuf_free(p) };
            }
        }
        let freed = self.len - kept;
        self.len = kept;
        freed
    }

    /// Hands every packet, in order, to `f` as an owned [`Mbuf`]; the
    /// burst is empty afterwards.
    pub fn drain_each(&mut self, mut f: impl FnMut(Mbuf)) {
        let n = std::mem::replace(&mut self.len, 0);
        for &p in &self.pkts[..n] {
            if let Some(p) = NonNull::new(p) {
                // SAFETY: entries below the old `len` are valid mbufs the
                // burst owned; `len` is already 0, so each moves out once.
                f(unsafe { Mbuf::from_raw(p) });
            }
        }
    }

    /// Frees every packet in the burst.
    #[inline]
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: entries below `len` are valid mbufs the burst owns;
            // after the call none are owned, which `len = 0` records.
            unsafe { dpdk_sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Drops the first `n` entries (handed to DPDK) and moves the rest to
    /// the front.
    #[inline]
    pub(crate) fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        if n == self.len {
            self.len = 0;
        } else {
            self.pkts.copy_within(n..self.len, 0);
            self.len -= n;
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

impl FrameBurst for Burst {
    type Frame<'a> = MbufFrame<'a>;
    #[inline(always)]
    fn frame(&mut self, i: usize) -> MbufFrame<'_> {
        Burst::frame(self, i)
    }
}

/// One packet of a burst, seen by the pipeline.
pub struct MbufFrame<'a> {
    m: &'a mut dpdk_sys::rte_mbuf,
}

impl Frame for MbufFrame<'_> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off .. + data_len is inside the mbuf's
        // buffer by mbuf invariants (kept by `shift_front`); the burst owns
        // the mbuf and `&self` excludes writers.
        unsafe {
            std::slice::from_raw_parts(
                self.m
                    .buf_addr
                    .cast::<u8>()
                    .add(usize::from(self.m.data_off)),
                usize::from(self.m.data_len),
            )
        }
    }

    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes the borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.m
                    .buf_addr
                    .cast::<u8>()
                    .add(usize::from(self.m.data_off)),
                usize::from(self.m.data_len),
            )
        }
    }

    #[inline(always)]
    fn headroom(&self) -> usize {
        usize::from(self.m.data_off)
    }

    /// `rte_pktmbuf_prepend` / `rte_pktmbuf_adj` on the first segment:
    /// the checks keep data_off within the headroom and data_len
    /// non-negative, as the DPDK functions do.
    #[inline(always)]
    fn shift_front(&mut self, delta: isize) -> bool {
        let m = &mut *self.m;
        if delta < 0 {
            let n = delta.unsigned_abs();
            if n > usize::from(m.data_off) {
                return false;
            }
            m.data_off -= n as u16;
            m.data_len += n as u16;
            m.pkt_len += n as u32;
        } else {
            let n = delta as usize;
            if n > usize::from(m.data_len) {
                return false;
            }
            m.data_off += n as u16;
            m.data_len -= n as u16;
            m.pkt_len -= n as u32;
        }
        true
    }
}
