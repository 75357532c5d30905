//! DPDK's `rte_lpm`, wrapped only as the reference our own table is
//! benchmarked against (same routes, same keys, same run).

use std::ffi::CString;
use std::ptr::NonNull;

use super::error::{rte_errno, strerror, DpdkError};

/// `RTE_LPM_LOOKUP_SUCCESS`: set in a bulk result that found a route.
const LOOKUP_SUCCESS: u32 = 0x0100_0000;

/// An `rte_lpm` table, freed on drop. Needs EAL (it lives in DPDK memory).
pub struct RteLpm {
    raw: NonNull<dpdk_sys::rte_lpm>,
    max_rules: u32,
    number_tbl8s: u32,
}

impl RteLpm {
    pub fn create(
        _eal: &super::Eal,
        name: &str,
        max_rules: u32,
        number_tbl8s: u32,
    ) -> Result<RteLpm, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArgument(name.to_owned()))?;
        let cfg = dpdk_sys::rte_lpm_config {
            max_rules,
            number_tbl8s,
            flags: 0,
        };
        // SAFETY: EAL is initialised (we borrow `Eal`); name and config are
        // valid for the call.
        let p = unsafe { dpdk_sys::rte_lpm_create(cname.as_ptr(), 0, &cfg) };
        match NonNull::new(p) {
            Some(raw) => Ok(RteLpm {
                raw,
                max_rules,
                number_tbl8s,
            }),
            None => {
                let errno = rte_errno();
                Err(DpdkError::Create {
                    name: name.to_owned(),
                    errno,
                    reason: strerror(errno),
                })
            }
        }
    }

    /// Adds `ip/depth -> next_hop` (next hop < 2^24); false if refused.
    pub fn add(&mut self, ip: u32, depth: u8, next_hop: u32) -> bool {
        // SAFETY: `raw` is a live table we own exclusively (`&mut self`).
        unsafe { dpdk_sys::rte_lpm_add(self.raw.as_ptr(), ip, depth, next_hop) == 0 }
    }

    /// Looks up `ips` into `out`: next hop, or `u32::MAX` for no route.
    pub fn lookup_bulk(&self, ips: &[u32], out: &mut [u32]) {
        assert_eq!(ips.len(), out.len());
        // SAFETY: both slices hold `len` u32; the table is live and only
        // read. The function writes exactly `len` results.
        unsafe {
            dpdk_sys::hdvrf_rte_lpm_lookup_bulk(
                self.raw.as_ptr(),
                ips.as_ptr(),
                out.as_mut_ptr(),
                ips.len() as u32,
            )
        };
        for o in out.iter_mut() {
            *o = if *o & LOOKUP_SUCCESS != 0 {
                *o & 0x00ff_ffff
            } else {
                u32::MAX
            };
        }
    }

    /// Bytes `rte_lpm_create` reserves: the 2^24-entry first stage, the
    /// tbl8 groups and the rule array (4-byte entries, 8-byte rules).
    pub fn memory_bytes(&self) -> usize {
        (1usize << 24) * 4 + self.number_tbl8s as usize * 256 * 4 + self.max_rules as usize * 8
    }
}

impl Drop for RteLpm {
    fn drop(&mut self) {
        // SAFETY: we own the table and nothing borrows it any more.
        unsafe { dpdk_sys::rte_lpm_free(self.raw.as_ptr()) }
    }
}
