//! The packet buffers the pipeline rewrites: [`Frame`] (an mbuf on a
//! worker, [`VecFrame`] in tests and slow paths) and bursts of them. A leaf:
//! it knows nothing of tables or outcomes.

/// A packet buffer the pipeline can rewrite: its bytes, and the ability
/// to move its start into the headroom (push headers) or forward (pop).
pub trait Frame {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Moves the packet start by `delta` bytes: negative grows the packet
    /// at the front, positive trims it. False (and no change) if the
    /// headroom or the packet is too small.
    fn shift_front(&mut self, delta: isize) -> bool;
    /// Bytes free in front of the packet.
    fn headroom(&self) -> usize;
}

/// A burst of frames the pipeline walks by index.
pub trait FrameBurst {
    type Frame<'a>: Frame
    where
        Self: 'a;
    fn frame(&mut self, i: usize) -> Self::Frame<'_>;
}

impl<F: Frame> FrameBurst for [F] {
    type Frame<'a>
        = &'a mut F
    where
        F: 'a;
    #[inline(always)]
    fn frame(&mut self, i: usize) -> &mut F {
        &mut self[i]
    }
}

impl<F: Frame> Frame for &mut F {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        (**self).data()
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        (**self).data_mut()
    }
    #[inline(always)]
    fn shift_front(&mut self, delta: isize) -> bool {
        (**self).shift_front(delta)
    }
    #[inline(always)]
    fn headroom(&self) -> usize {
        (**self).headroom()
    }
}

/// A frame in a plain buffer with headroom, for tests and slow paths.
#[derive(Clone, Debug)]
pub struct VecFrame {
    buf: Vec<u8>,
    start: usize,
}

impl VecFrame {
    /// Headroom matches DPDK's default (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM: usize = 128;

    pub fn new(bytes: &[u8]) -> VecFrame {
        let mut buf = vec![0u8; Self::HEADROOM];
        buf.extend_from_slice(bytes);
        VecFrame {
            buf,
            start: Self::HEADROOM,
        }
    }
}

impl Frame for VecFrame {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }
    fn headroom(&self) -> usize {
        self.start
    }
    fn shift_front(&mut self, delta: isize) -> bool {
        let s = self.start as isize + delta;
        if s < 0 || s as usize > self.buf.len() {
            return false;
        }
        self.start = s as usize;
        true
    }
}
