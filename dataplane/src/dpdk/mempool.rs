use std::ffi::CString;
use std::ptr::NonNull;

use super::error::{rte_errno, strerror, DpdkError};

/// A packet-buffer pool (`rte_pktmbuf_pool_create`), freed on drop. Every
/// mbuf must be back (in the pool or a per-lcore cache) before it drops.
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    size: u32,
}

// SAFETY: rte_mempool get/put are multi-producer/multi-consumer safe (the
// default ring ops), and the struct is only freed by `Drop`, which needs
// exclusive ownership.
unsafe impl Send for Mempool {}
// SAFETY: as above; shared references only read counts or allocate.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `size` mbufs with a per-lcore cache of `cache` and
    /// `data_room` bytes of buffer each, on NUMA socket `socket`.
    pub fn create(
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArgument(name.to_owned()))?;
        // SAFETY: `cname` is a valid C string for the call; EAL must be
        // initialised, which callers guarantee by holding `Eal`.
        let p = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket)
        };
        match NonNull::new(p) {
            Some(raw) => Ok(Mempool {
                raw,
                name: name.to_owned(),
                size,
            }),
            None => {
                let errno = rte_errno();
                Err(DpdkError::Mempool {
                    name: name.to_owned(),
                    errno,
                    reason: strerror(errno),
                })
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs free in the pool, per-lcore caches included.
    pub fn available(&self) -> u32 {
        // SAFETY: `raw` is a live pool; the call only reads counters.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs handed out and not yet returned.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for `available`.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: we own the pool; ports using it are closed before it drops
        // (the runtime orders teardown), so nothing references it any more.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
