//! DIR-24-8 longest-prefix match for IPv4, over next-hop ids.
//!
//! The classic DIR-24-8 (Gupta, Lin, McKeown 1998; DPDK's `rte_lpm`) has a
//! flat first stage of 2^24 entries: 64 MiB per table even when it holds
//! only a default route. hdvrf keeps one table per service and direction,
//! double-buffered, so that cost would cap a box at a few dozen services.
//! Here the first stage is cut into 256 chunks of 2^16 entries, one per
//! /8, allocated only when a prefix longer than /8 falls inside that /8;
//! a 256-entry root (1 KiB, always in L1) says, per /8, either the answer
//! or which chunk to read. Prefixes longer than /24 extend an entry into a
//! group of 256 (the "8" of 24-8), as in the original.
//!
//! A lookup is the same two memory accesses that matter as DIR-24-8 (chunk
//! entry, then group entry for > /24), plus one L1 hit. `lookup_bulk`
//! resolves a burst in passes, prefetching every key's next entry before
//! reading any, so the cache misses of a burst overlap.
//!
//! Groups live in one region that grows on demand: it starts at
//! [`INITIAL_GROUPS`] groups (16 KiB of address space, nothing committed
//! until written) and doubles when full, the used part copied over. A table
//! is bounded only by its memory limit ([`Dir24Lpm::with_limit`]), counted
//! from its own contents ([`Dir24Lpm::limited_bytes`]) so that the two
//! copies of table publication, applying the same ops, refuse the same ones.
//!
//! Entry encoding: bit 31 set = pointer (root: chunk index, chunk entry:
//! group index); otherwise `next_hop + 1`, with 0 meaning "no route" so
//! that untouched (zeroed) memory reads as a miss.
//!
//! Chunks are *narrow* (16-bit entries: bit 15 = group pointer, 15 bits of
//! next hop + 1 or group index) while everything in them fits, and turn
//! *wide* (32-bit entries) when a next hop or group index needs more. A
//! narrow chunk is 128 KiB instead of 256: an Internet table's first stage
//! is half the size of `rte_lpm`'s and mostly fits in the last-level cache,
//! which is what decides lookups over a table larger than the cache. Writers keep
//! each entry's prefix length in shadow arrays that lookups never touch,
//! and the rules themselves per length, which is what makes deletes exact:
//! deleting a /24 uncovers whatever shorter prefix lies beneath it.

// The rules are only the control side's record, but an 800k-route load
// hashes every prefix several times: FxHash (rustc-hash) instead of std's
// SipHash, which guards against hash flooding that route prefixes cannot
// mount (the control plane validates them, and their count is bounded).
use rustc_hash::FxHashMap as HashMap;

use crate::sys::{prefetch, Zeroed, ZeroedU32};

/// What a lookup returns when no prefix matches.
pub const NO_ROUTE: u32 = u32::MAX;
/// Largest next-hop id a table can hold.
pub const MAX_NEXT_HOP: u32 = PTR - 2;

const PTR: u32 = 1 << 31;
const MASK: u32 = PTR - 1;
/// In a root entry: the chunk is wide.
const WIDE: u32 = 1 << 30;
const CMASK: u32 = WIDE - 1;
const NPTR: u16 = 1 << 15;
const NMASK: u16 = NPTR - 1;
const CHUNK: usize = 1 << 16;
const GROUP: usize = 256;

/// Groups a new table has room for before its group region first grows.
pub const INITIAL_GROUPS: usize = 16;
/// At most one group per /24, so a table never needs more.
const MAX_GROUPS: usize = 1 << 24;
/// A table with no memory limit.
pub const UNLIMITED: usize = usize::MAX;
/// What a chunk slot counts against the memory limit: its entries in both
/// forms (a chunk that turned wide keeps its narrow pages committed, and a
/// reused slot may turn wide without asking) and its shadow lengths.
const CHUNK_BYTES: usize = CHUNK * (2 + 4 + 1);
/// What a group slot counts: entries, shadow lengths, rule count.
const GROUP_BYTES: usize = GROUP * (4 + 1) + 4;
/// What a rule counts: a hash map entry (key, next hop, control byte) at
/// the map's load factor, rounded up.
const RULE_BYTES: usize = 16;

/// Errors from changing a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    #[error("prefix length {0} is over 32")]
    BadLength(u8),
    #[error("next hop {0} is over the table's limit of {MAX_NEXT_HOP}")]
    NextHopTooLarge(u32),
    /// The table would need more memory than its limit allows
    /// ([`Dir24Lpm::limited_bytes`]).
    #[error("the route table's memory limit of {} is reached", fmt_limit(*limit_bytes))]
    MemoryLimit { limit_bytes: usize },
    #[error("no route {0}/{1}")]
    NotFound(std::net::Ipv4Addr, u8),
    #[error("could not reserve table memory: {0}")]
    Memory(String),
}

/// A memory limit as an operator configures it: MiB when whole.
fn fmt_limit(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// The netmask of a /`len` (`len` at most 32).
#[inline(always)]
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        !0u32 << (32 - u32::from(len))
    }
}

/// An IPv4 DIR-24-8 table. See the module documentation.
pub struct Dir24Lpm {
    /// Per /8: the answer, or `PTR | chunk`.
    root: Box<[u32; 256]>,
    /// Per /8: the best rule of length <= 8 (value, length), kept even
    /// while a chunk covers the /8 so the chunk can be folded back.
    root_val: [u32; 256],
    root_len: [u8; 256],
    /// Rules longer than /8 inside each /8; the chunk goes when it is 0.
    root_rules: [u32; 256],
    narrow: Zeroed<u16>,
    wide: ZeroedU32,
    chunk_wide: Vec<bool>,
    chunk_owner: Vec<u8>,
    chunk_len: Vec<u8>,
    chunk_slots: u32,
    chunk_free: Vec<u32>,
    /// Groups `0..group_slots` in use or free; room for
    /// `groups.len() / GROUP`, grown by [`Dir24Lpm::grow_groups`].
    groups: ZeroedU32,
    group_len: Vec<u8>,
    /// Rules longer than /24 in each group; the group goes when it is 0.
    group_rules: Vec<u32>,
    group_slots: u32,
    group_free: Vec<u32>,
    /// Bytes [`Dir24Lpm::limited_bytes`] may reach.
    limit: usize,
    rules: Rules,
    n_rules: usize,
}

impl Dir24Lpm {
    /// An empty table without a memory limit. Chunk memory is reserved,
    /// not committed; groups get room as they are needed.
    pub fn new() -> Result<Dir24Lpm, LpmError> {
        Dir24Lpm::with_limit(UNLIMITED)
    }

    /// An empty table whose [`Dir24Lpm::limited_bytes`] may not pass
    /// `limit_bytes`: an add that would take it further is refused with
    /// [`LpmError::MemoryLimit`].
    pub fn with_limit(limit_bytes: usize) -> Result<Dir24Lpm, LpmError> {
        Dir24Lpm::with_room(limit_bytes, INITIAL_GROUPS)
    }

    fn with_room(limit: usize, groups: usize) -> Result<Dir24Lpm, LpmError> {
        let narrow =
            Zeroed::<u16>::new(256 * CHUNK).map_err(|e| LpmError::Memory(e.to_string()))?;
        let wide = ZeroedU32::new(256 * CHUNK).map_err(|e| LpmError::Memory(e.to_string()))?;
        let groups = ZeroedU32::new(groups * GROUP).map_err(|e| LpmError::Memory(e.to_string()))?;
        Ok(Dir24Lpm {
            root: Box::new([0; 256]),
            root_val: [0; 256],
            root_len: [0; 256],
            root_rules: [0; 256],
            narrow,
            wide,
            chunk_wide: Vec::new(),
            chunk_owner: Vec::new(),
            chunk_len: Vec::new(),
            chunk_slots: 0,
            chunk_free: Vec::new(),
            groups,
            group_len: Vec::new(),
            group_rules: Vec::new(),
            group_slots: 0,
            group_free: Vec::new(),
            limit,
            rules: Rules::new(),
            n_rules: 0,
        })
    }

    /// A deep copy (the second buffer of table publication). Only the
    /// chunks and groups in use are copied, each in the form lookups read
    /// (narrow or wide), so the copy costs memory in proportion to its
    /// routes, as the original does. It has the original's memory limit
    /// and group room, so the two grow alike.
    pub fn try_clone(&self) -> Result<Dir24Lpm, LpmError> {
        let mut t = Dir24Lpm::with_room(self.limit, self.group_room())?;
        for (c, &wide) in self.chunk_wide.iter().enumerate() {
            let r = c * CHUNK..(c + 1) * CHUNK;
            if wide {
                t.wide.as_mut_slice()[r.clone()].copy_from_slice(&self.wide.as_slice()[r]);
            } else {
                t.narrow.as_mut_slice()[r.clone()].copy_from_slice(&self.narrow.as_slice()[r]);
            }
        }
        let g = self.group_slots as usize * GROUP;
        t.groups.as_mut_slice()[..g].copy_from_slice(&self.groups.as_slice()[..g]);
        t.root.copy_from_slice(&self.root[..]);
        t.root_val = self.root_val;
        t.root_len = self.root_len;
        t.root_rules = self.root_rules;
        t.chunk_wide.clone_from(&self.chunk_wide);
        t.chunk_owner.clone_from(&self.chunk_owner);
        t.chunk_len.clone_from(&self.chunk_len);
        t.chunk_slots = self.chunk_slots;
        t.chunk_free.clone_from(&self.chunk_free);
        t.group_len.clone_from(&self.group_len);
        t.group_rules.clone_from(&self.group_rules);
        t.group_slots = self.group_slots;
        t.group_free.clone_from(&self.group_free);
        t.rules.clone_from(&self.rules);
        t.n_rules = self.n_rules;
        t.advise_huge();
        Ok(t)
    }

    /// Number of prefixes in the table.
    pub fn len(&self) -> usize {
        self.n_rules
    }

    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    /// Bytes the table uses: lookup structures committed so far plus the
    /// writer's shadow lengths and rule maps.
    pub fn memory_bytes(&self) -> usize {
        let rules = self.rules.memory_bytes();
        std::mem::size_of::<Self>()
            + 256 * 4
            + self
                .chunk_wide
                .iter()
                .map(|&w| if w { CHUNK * 4 } else { CHUNK * 2 })
                .sum::<usize>()
            + self.chunk_len.capacity()
            + self.group_slots as usize * GROUP * 4
            + self.group_len.capacity()
            + self.group_rules.capacity() * 4
            + rules
    }

    /// What counts against the memory limit: every chunk and group slot
    /// taken so far (a freed one stays committed and is reused before a
    /// new one is taken) at its full cost, and every rule. A function of
    /// the table's own history of adds and deletes only, never of
    /// allocator state (capacities), so two copies that apply the same ops
    /// refuse the same ones.
    pub fn limited_bytes(&self) -> usize {
        self.chunk_slots as usize * CHUNK_BYTES
            + self.group_slots as usize * GROUP_BYTES
            + self.n_rules * RULE_BYTES
    }

    /// The memory limit ([`UNLIMITED`] if none).
    pub fn memory_limit(&self) -> usize {
        self.limit
    }

    /// Groups the group region has room for before it grows again.
    pub fn group_room(&self) -> usize {
        self.groups.len() / GROUP
    }

    /// Address space reserved for lookup structures (committed only where
    /// written): the chunk regions in both forms and the group region.
    pub fn reserved_bytes(&self) -> usize {
        self.narrow.len() * 2 + self.wide.len() * 4 + self.groups.len() * 4
    }

    /// Chunks (per-/8 second stages) in use.
    pub fn chunks_in_use(&self) -> usize {
        self.chunk_slots as usize - self.chunk_free.len()
    }

    /// Chunks with 32-bit entries.
    pub fn wide_chunks(&self) -> usize {
        (0..256)
            .filter(|&i| self.root[i] & PTR != 0 && self.root[i] & WIDE != 0)
            .count()
    }

    /// Groups (per-/24 extensions) in use.
    pub fn groups_in_use(&self) -> usize {
        self.group_slots as usize - self.group_free.len()
    }

    /// The next hop of the longest prefix containing `ip`, or [`NO_ROUTE`].
    #[inline(always)]
    pub fn lookup(&self, ip: u32) -> u32 {
        let e0 = self.root[(ip >> 24) as usize];
        if e0 & PTR == 0 {
            return e0.wrapping_sub(1);
        }
        let at = ((e0 & CMASK) as usize) << 16 | ((ip >> 8) & 0xffff) as usize;
        let e1 = if e0 & WIDE != 0 {
            self.wide.as_slice()[at]
        } else {
            widen(self.narrow.as_slice()[at])
        };
        if e1 & PTR == 0 {
            return e1.wrapping_sub(1);
        }
        self.groups.as_slice()[((e1 & MASK) as usize) << 8 | (ip & 0xff) as usize].wrapping_sub(1)
    }

    /// Looks up every key of `keys` into `out` (same length), a block of
    /// up to 64 at a time: all chunk entries of a block are prefetched
    /// before the first is read, then all group entries, so the misses of
    /// a block overlap instead of following one another.
    #[inline]
    pub fn lookup_bulk(&self, keys: &[u32], out: &mut [u32]) {
        assert_eq!(keys.len(), out.len(), "keys and results differ in length");
        const B: usize = 64;
        const DONE: usize = usize::MAX;
        let narrow = self.narrow.as_slice();
        let wide = self.wide.as_slice();
        let groups = self.groups.as_slice();
        // Entry index, with bit 63 marking a wide chunk.
        const W: usize = 1 << 63;
        let mut at = [0usize; B];
        for (k, o) in keys.chunks(B).zip(out.chunks_mut(B)) {
            let n = k.len();
            // Pass 1: root, prefetch chunk entries.
            for i in 0..n {
                let ip = k[i];
                let e0 = self.root[(ip >> 24) as usize];
                if e0 & PTR == 0 {
                    o[i] = e0.wrapping_sub(1);
                    at[i] = DONE;
                } else {
                    let a = ((e0 & CMASK) as usize) << 16 | ((ip >> 8) & 0xffff) as usize;
                    if e0 & WIDE != 0 {
                        if let Some(e) = wide.get(a) {
                            prefetch(e);
                        }
                        at[i] = a | W;
                    } else {
                        if let Some(e) = narrow.get(a) {
                            prefetch(e);
                        }
                        at[i] = a;
                    }
                }
            }
            // Pass 2: chunk entries, prefetch group entries.
            for i in 0..n {
                let a = at[i];
                if a == DONE {
                    continue;
                }
                let e1 = if a & W != 0 {
                    wide[a & !W]
                } else {
                    widen(narrow[a])
                };
                if e1 & PTR == 0 {
                    o[i] = e1.wrapping_sub(1);
                    at[i] = DONE;
                } else {
                    let g = ((e1 & MASK) as usize) << 8 | (k[i] & 0xff) as usize;
                    if let Some(e) = groups.get(g) {
                        prefetch(e);
                    }
                    at[i] = g;
                }
            }
            // Pass 3: group entries.
            for i in 0..n {
                if at[i] != DONE {
                    o[i] = groups[at[i]].wrapping_sub(1);
                }
            }
        }
    }

    /// Every route, (network, length, next hop), in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = (u32, u8, u32)> + '_ {
        let short = self
            .rules
            .short
            .iter()
            .map(|(&k, &nh)| ((k >> 8) << 24, (k & 0xff) as u8, nh));
        let long = self.rules.by8.iter().enumerate().flat_map(|(s8, m)| {
            m.iter()
                .map(move |(&k, &nh)| ((s8 as u32) << 24 | k >> 6, (k & 0x3f) as u8, nh))
        });
        short.chain(long)
    }

    /// The route `addr` matches, (network, length, next hop), from the
    /// rules rather than the lookup structure: for explaining a lookup on
    /// the control side, not for the fast path.
    pub fn matching_route(&self, addr: u32) -> Option<(u32, u8, u32)> {
        (0..=32u8).rev().find_map(|len| {
            let net = addr & mask(len);
            self.rules.get(net, len).map(|nh| (net, len, nh))
        })
    }

    /// The next hop of exactly `prefix/len`, if that rule exists.
    pub fn get(&self, prefix: u32, len: u8) -> Option<u32> {
        if len > 32 {
            return None;
        }
        self.rules.get(prefix & mask(len), len)
    }

    /// Adds or replaces `prefix/len -> next_hop`; returns the next hop it
    /// replaced. Host bits of `prefix` are ignored.
    pub fn add(&mut self, prefix: u32, len: u8, next_hop: u32) -> Result<Option<u32>, LpmError> {
        if len > 32 {
            return Err(LpmError::BadLength(len));
        }
        if next_hop > MAX_NEXT_HOP {
            return Err(LpmError::NextHopTooLarge(next_hop));
        }
        let p = prefix & mask(len);
        if let Some(old) = self.rules.get_mut(p, len) {
            let old = std::mem::replace(old, next_hop);
            if old != next_hop {
                self.write(p, len, next_hop + 1);
            }
            return Ok(Some(old));
        }
        // Make room first so a failure leaves the table unchanged.
        let s8 = (p >> 24) as usize;
        let e = ((p >> 8) & 0xffff) as usize;
        let need_chunk = len > 8 && self.root[s8] & PTR == 0;
        let need_group = len > 24 && (need_chunk || self.cget(self.chunk_slot(s8), e) & PTR == 0);
        let new_chunk = need_chunk && self.chunk_free.is_empty();
        let new_group = need_group && self.group_free.is_empty();
        let after = self.limited_bytes()
            + RULE_BYTES
            + if new_chunk { CHUNK_BYTES } else { 0 }
            + if new_group { GROUP_BYTES } else { 0 };
        if after > self.limit {
            return Err(LpmError::MemoryLimit {
                limit_bytes: self.limit,
            });
        }
        if new_group {
            self.grow_groups()?;
        }
        if len > 8 {
            self.ensure_chunk(s8);
        }
        if len > 24 {
            let c = self.chunk_slot(s8);
            self.ensure_group(c, e);
        }
        self.rules.insert(p, len, next_hop);
        self.n_rules += 1;
        if len > 8 {
            self.root_rules[s8] += 1;
        }
        if len > 24 {
            let g = self.group_of(p).expect("ensured above");
            self.group_rules[g] += 1;
        }
        self.write(p, len, next_hop + 1);
        Ok(None)
    }

    /// Removes `prefix/len`; returns its next hop. What it covered falls
    /// back to the longest shorter prefix containing it.
    pub fn delete(&mut self, prefix: u32, len: u8) -> Result<u32, LpmError> {
        if len > 32 {
            return Err(LpmError::BadLength(len));
        }
        let p = prefix & mask(len);
        let old = self
            .rules
            .remove(p, len)
            .ok_or(LpmError::NotFound(p.into(), len))?;
        self.n_rules -= 1;
        let (rval, rlen) = (0..len)
            .rev()
            .find_map(|l| self.rules.get(p & mask(l), l).map(|nh| (nh + 1, l)))
            .unwrap_or((0, 0));
        let s8 = (p >> 24) as usize;
        if len <= 8 {
            let first = s8;
            for i in first..first + (1usize << (8 - len)) {
                if self.root_len[i] == len {
                    self.root_val[i] = rval;
                    self.root_len[i] = rlen;
                }
                if self.root[i] & PTR != 0 {
                    let c = self.chunk_slot(i);
                    self.replace_chunk(c, 0..CHUNK, len, rval, rlen);
                } else {
                    self.root[i] = self.root_val[i];
                }
            }
        } else if len <= 24 {
            let c = self.chunk_slot(s8);
            let e = ((p >> 8) & 0xffff) as usize;
            self.replace_chunk(c, e..e + (1 << (24 - len)), len, rval, rlen);
        } else {
            let g = self
                .group_of(p)
                .expect("a rule longer than /24 has its group");
            let e = (p & 0xff) as usize;
            self.replace_group(g, e..e + (1 << (32 - len)), len, rval, rlen);
            self.group_rules[g] -= 1;
            if self.group_rules[g] == 0 {
                // Every entry now holds the same <= /24 answer: fold back.
                let c = self.chunk_slot(s8);
                let e = ((p >> 8) & 0xffff) as usize;
                let gi = g << 8;
                let v = self.groups.as_slice()[gi];
                self.cset(c, e, v);
                self.chunk_len[c << 16 | e] = self.group_len[gi];
                self.group_free.push(g as u32);
            }
        }
        if len > 8 {
            self.root_rules[s8] -= 1;
            if self.root_rules[s8] == 0 {
                self.free_chunk(s8);
            }
        }
        Ok(old)
    }

    /// Chunk slot `c`, entry `e`, in the 32-bit form.
    #[inline]
    fn cget(&self, c: usize, e: usize) -> u32 {
        let at = c << 16 | e;
        if self.chunk_wide[c] {
            self.wide.as_slice()[at]
        } else {
            widen(self.narrow.as_slice()[at])
        }
    }

    /// Sets chunk slot `c`, entry `e`; widens the chunk if `v` needs it.
    #[inline]
    fn cset(&mut self, c: usize, e: usize, v: u32) {
        let at = c << 16 | e;
        if !self.chunk_wide[c] {
            match narrow_of(v) {
                Some(n) => {
                    self.narrow.as_mut_slice()[at] = n;
                    return;
                }
                None => self.widen_chunk(c),
            }
        }
        self.wide.as_mut_slice()[at] = v;
    }

    /// Rewrites a narrow chunk with 32-bit entries and repoints its /8.
    fn widen_chunk(&mut self, c: usize) {
        for i in c * CHUNK..(c + 1) * CHUNK {
            self.wide.as_mut_slice()[i] = widen(self.narrow.as_slice()[i]);
        }
        self.chunk_wide[c] = true;
        let s8 = self.chunk_owner[c] as usize;
        if self.root[s8] & PTR != 0 && (self.root[s8] & CMASK) as usize == c {
            self.root[s8] = PTR | WIDE | c as u32;
        }
    }

    /// Sets every entry of chunk slot `c` to `v`.
    fn fill_chunk_all(&mut self, c: usize, v: u32) {
        let r = c * CHUNK..(c + 1) * CHUNK;
        match narrow_of(v) {
            Some(n) if !self.chunk_wide[c] => self.narrow.as_mut_slice()[r].fill(n),
            _ => {
                self.chunk_wide[c] = true;
                self.wide.as_mut_slice()[r].fill(v);
            }
        }
    }

    fn chunk_slot(&self, s8: usize) -> usize {
        (self.root[s8] & CMASK) as usize
    }

    fn group_of(&self, p: u32) -> Option<usize> {
        let e0 = self.root[(p >> 24) as usize];
        if e0 & PTR == 0 {
            return None;
        }
        let e1 = self.cget((e0 & CMASK) as usize, ((p >> 8) & 0xffff) as usize);
        (e1 & PTR != 0).then_some((e1 & MASK) as usize)
    }

    fn ensure_chunk(&mut self, s8: usize) {
        if self.root[s8] & PTR != 0 {
            return;
        }
        let (val, len) = (self.root_val[s8], self.root_len[s8]);
        let c = match self.chunk_free.pop() {
            Some(c) => {
                let cu = c as usize;
                self.chunk_wide[cu] = false;
                self.chunk_len[cu * CHUNK..(cu + 1) * CHUNK].fill(len);
                self.fill_chunk_all(cu, val);
                c
            }
            None => {
                let c = self.chunk_slots;
                self.chunk_slots += 1;
                self.chunk_len
                    .resize(self.chunk_slots as usize * CHUNK, len);
                self.chunk_wide.push(false);
                self.chunk_owner.push(0);
                self.advise_huge();
                if val != 0 {
                    // Fresh memory reads as zero: only a covering route
                    // needs writing (and committing).
                    self.fill_chunk_all(c as usize, val);
                }
                c
            }
        };
        self.chunk_owner[c as usize] = s8 as u8;
        let wide = if self.chunk_wide[c as usize] { WIDE } else { 0 };
        self.root[s8] = PTR | wide | c;
    }

    fn free_chunk(&mut self, s8: usize) {
        if self.root[s8] & PTR == 0 {
            return;
        }
        let c = self.root[s8] & CMASK;
        self.root[s8] = self.root_val[s8];
        self.chunk_free.push(c);
    }

    /// Makes room in the group region for one more group slot when it is
    /// full: a region of twice the room, the used part copied, replaces it.
    ///
    /// Replacing the region under a table is sound because a table being
    /// changed is never one a worker reads: the control thread changes
    /// only the standby copy of the tables (`publish.rs`: `Arc::get_mut` on
    /// the standby, which no reader holds, after every reader has moved
    /// off it), and within it a route table shared with the active copy is
    /// copied before it is changed (`tables.rs`, `SharedLpm::make_mut`).
    /// The borrow checker says the same: this takes `&mut self`, which no
    /// reader's `&Dir24Lpm` can coexist with. Lookups therefore keep
    /// reading `groups` directly, with no extra indirection.
    fn grow_groups(&mut self) -> Result<(), LpmError> {
        let room = self.group_room();
        let used = self.group_slots as usize;
        if used < room {
            return Ok(());
        }
        // `used` groups are all in use or free, each for a distinct /24
        // at some point, and a new slot is only taken when none is free.
        debug_assert!(used < MAX_GROUPS, "more groups than /24s");
        let room = (room * 2).clamp(1, MAX_GROUPS);
        let mut groups =
            ZeroedU32::new(room * GROUP).map_err(|e| LpmError::Memory(e.to_string()))?;
        let used = used * GROUP;
        groups.as_mut_slice()[..used].copy_from_slice(&self.groups.as_slice()[..used]);
        self.groups = groups;
        self.advise_huge();
        Ok(())
    }

    /// Transparent huge pages for the chunk and group regions as far as
    /// slots fill whole ones (`dpdk::mem`): a table of a few routes stays
    /// on small pages, an Internet table gets huge ones.
    fn advise_huge(&mut self) {
        let chunks = self.chunk_slots as usize * CHUNK;
        self.narrow.advise_huge(chunks);
        self.wide.advise_huge(chunks);
        self.groups.advise_huge(self.group_slots as usize * GROUP);
    }

    /// Points chunk slot `c`, entry `e` at a group, taking a free group or
    /// a new slot; the caller has made room ([`Dir24Lpm::grow_groups`]).
    fn ensure_group(&mut self, c: usize, e: usize) -> usize {
        let cur = self.cget(c, e);
        if cur & PTR != 0 {
            return (cur & MASK) as usize;
        }
        let len = self.chunk_len[c << 16 | e];
        let g = match self.group_free.pop() {
            Some(g) => g,
            None => {
                self.group_slots += 1;
                self.group_len.resize(self.group_slots as usize * GROUP, 0);
                self.group_rules.resize(self.group_slots as usize, 0);
                self.advise_huge();
                self.group_slots - 1
            }
        } as usize;
        let r = g * GROUP..(g + 1) * GROUP;
        self.groups.as_mut_slice()[r.clone()].fill(cur);
        self.group_len[r].fill(len);
        self.group_rules[g] = 0;
        self.cset(c, e, PTR | g as u32);
        g
    }

    /// Sets every entry covered by `p/len` whose own prefix is not longer
    /// than `len` to `val`.
    fn write(&mut self, p: u32, len: u8, val: u32) {
        let s8 = (p >> 24) as usize;
        if len <= 8 {
            for i in s8..s8 + (1usize << (8 - len)) {
                if self.root_len[i] <= len {
                    self.root_val[i] = val;
                    self.root_len[i] = len;
                }
                if self.root[i] & PTR != 0 {
                    let c = self.chunk_slot(i);
                    self.fill_chunk(c, 0..CHUNK, len, val);
                } else {
                    self.root[i] = self.root_val[i];
                }
            }
        } else if len <= 24 {
            let c = self.chunk_slot(s8);
            let e = ((p >> 8) & 0xffff) as usize;
            self.fill_chunk(c, e..e + (1 << (24 - len)), len, val);
        } else {
            let g = self.group_of(p).expect("group ensured before write");
            let e = (p & 0xff) as usize;
            self.fill_group(g, e..e + (1 << (32 - len)), len, val);
        }
    }

    /// Sets the entries `r` of chunk `c` whose prefix is not longer than
    /// `len` to `val`, and likewise inside the groups they point to. One
    /// tight pass over the slices: a /8 change rewrites 65536 entries.
    fn fill_chunk(&mut self, c: usize, r: std::ops::Range<usize>, len: u8, val: u32) {
        self.update_chunk(c, r, val, len, |l| l <= len);
    }

    /// Entries of `r` in chunk `c` (and its groups) with prefix length
    /// exactly `len` take `val` with length `to`.
    fn replace_chunk(&mut self, c: usize, r: std::ops::Range<usize>, len: u8, val: u32, to: u8) {
        self.update_chunk(c, r, val, to, |l| l == len);
    }

    fn update_chunk(
        &mut self,
        c: usize,
        r: std::ops::Range<usize>,
        val: u32,
        to: u8,
        hit: impl Fn(u8) -> bool,
    ) {
        let narrow_val = narrow_of(val);
        if !self.chunk_wide[c] && narrow_val.is_none() {
            self.widen_chunk(c);
        }
        let base = c << 16;
        let range = base + r.start..base + r.end;
        let lens = &mut self.chunk_len[range.clone()];
        // Most ranges hold no group pointer (none at all in a table
        // without prefixes longer than /24): then one branch-free pass that
        // the compiler vectorises does it, which matters because a short
        // prefix rewrites up to 65536 entries. Finding out is one more
        // vectorised pass, reading only.
        if self.chunk_wide[c] {
            let s = &mut self.wide.as_mut_slice()[range.clone()];
            if s.iter().fold(0, |a, e| a | e) & PTR == 0 {
                for (e, l) in s.iter_mut().zip(lens) {
                    let h = hit(*l);
                    *e = if h { val } else { *e };
                    *l = if h { to } else { *l };
                }
                return;
            }
        } else {
            let nv = narrow_val.expect("a narrow chunk takes a narrow value");
            let s = &mut self.narrow.as_mut_slice()[range.clone()];
            if s.iter().fold(0, |a, e| a | e) & NPTR == 0 {
                for (e, l) in s.iter_mut().zip(lens) {
                    let h = hit(*l);
                    *e = if h { nv } else { *e };
                    *l = if h { to } else { *l };
                }
                return;
            }
        }
        let lens = &mut self.chunk_len[range.clone()];
        let groups = self.groups.as_mut_slice();
        let group_len = &mut self.group_len;
        let mut in_group = |g: usize| update_group(groups, group_len, g, 0..GROUP, val, to, &hit);
        if self.chunk_wide[c] {
            for (e, l) in self.wide.as_mut_slice()[range].iter_mut().zip(lens) {
                if *e & PTR != 0 {
                    in_group((*e & MASK) as usize);
                } else if hit(*l) {
                    *e = val;
                    *l = to;
                }
            }
        } else {
            let nv = narrow_val.expect("checked above");
            for (e, l) in self.narrow.as_mut_slice()[range].iter_mut().zip(lens) {
                if *e & NPTR != 0 {
                    in_group((*e & NMASK) as usize);
                } else if hit(*l) {
                    *e = nv;
                    *l = to;
                }
            }
        }
    }

    fn fill_group(&mut self, g: usize, r: std::ops::Range<usize>, len: u8, val: u32) {
        let groups = self.groups.as_mut_slice();
        update_group(groups, &mut self.group_len, g, r, val, len, |l| l <= len);
    }

    fn replace_group(&mut self, g: usize, r: std::ops::Range<usize>, len: u8, val: u32, to: u8) {
        let groups = self.groups.as_mut_slice();
        update_group(groups, &mut self.group_len, g, r, val, to, |l| l == len);
    }
}

/// Entries `r` of group `g` whose prefix length satisfies `hit` take
/// `val` with length `to`.
#[inline]
fn update_group(
    groups: &mut [u32],
    group_len: &mut [u8],
    g: usize,
    r: std::ops::Range<usize>,
    val: u32,
    to: u8,
    hit: impl Fn(u8) -> bool,
) {
    let range = g * GROUP + r.start..g * GROUP + r.end;
    for (e, l) in groups[range.clone()].iter_mut().zip(&mut group_len[range]) {
        if hit(*l) {
            *e = val;
            *l = to;
        }
    }
}

/// The rules (network, length -> next hop): the writer's record, which
/// deletes consult for what a prefix uncovers. Kept per /8 so that a batch
/// applied /8 by /8 (`Tables::apply`) works in one small map at a time; in
/// one map per length, a full table's maps outgrow the cache and nearly
/// every insert misses.
#[derive(Clone)]
struct Rules {
    /// /0 to /8, keyed by `top octet << 8 | len`.
    short: HashMap<u32, u32>,
    /// /9 to /32 in each /8, keyed by `low 24 bits << 6 | len`.
    by8: Vec<HashMap<u32, u32>>,
}

impl Rules {
    fn new() -> Rules {
        Rules {
            short: HashMap::default(),
            by8: vec![HashMap::default(); 256],
        }
    }

    /// Which map holds `net/len` (`None`: the short one) and its key there
    /// (host bits already clear).
    #[inline]
    fn key(net: u32, len: u8) -> (Option<usize>, u32) {
        if len <= 8 {
            (None, (net >> 24) << 8 | u32::from(len))
        } else {
            (
                Some((net >> 24) as usize),
                (net & 0x00ff_ffff) << 6 | u32::from(len),
            )
        }
    }

    #[inline]
    fn slot(&self, net: u32, len: u8) -> (&HashMap<u32, u32>, u32) {
        match Self::key(net, len) {
            (None, k) => (&self.short, k),
            (Some(s8), k) => (&self.by8[s8], k),
        }
    }

    #[inline]
    fn slot_mut(&mut self, net: u32, len: u8) -> (&mut HashMap<u32, u32>, u32) {
        match Self::key(net, len) {
            (None, k) => (&mut self.short, k),
            (Some(s8), k) => (&mut self.by8[s8], k),
        }
    }

    fn get(&self, net: u32, len: u8) -> Option<u32> {
        let (m, k) = self.slot(net, len);
        m.get(&k).copied()
    }

    fn get_mut(&mut self, net: u32, len: u8) -> Option<&mut u32> {
        let (m, k) = self.slot_mut(net, len);
        m.get_mut(&k)
    }

    fn insert(&mut self, net: u32, len: u8, next_hop: u32) {
        let (m, k) = self.slot_mut(net, len);
        m.insert(k, next_hop);
    }

    fn remove(&mut self, net: u32, len: u8) -> Option<u32> {
        let (m, k) = self.slot_mut(net, len);
        m.remove(&k)
    }

    fn memory_bytes(&self) -> usize {
        let map = |m: &HashMap<u32, u32>| m.capacity() * (std::mem::size_of::<(u32, u32)>() + 1);
        map(&self.short)
            + self.by8.capacity() * std::mem::size_of::<HashMap<u32, u32>>()
            + self.by8.iter().map(map).sum::<usize>()
    }
}

/// A narrow (16-bit) chunk entry in the 32-bit form.
#[inline(always)]
fn widen(n: u16) -> u32 {
    if n & NPTR != 0 {
        PTR | u32::from(n & NMASK)
    } else {
        u32::from(n)
    }
}

/// The 16-bit form of an entry, if it has one.
#[inline(always)]
fn narrow_of(v: u32) -> Option<u16> {
    if v & PTR != 0 {
        let g = v & MASK;
        (g <= u32::from(NMASK)).then_some(NPTR | g as u16)
    } else {
        (v <= u32::from(NMASK)).then_some(v as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    #[test]
    fn empty_and_default_only_tables_are_small() {
        let mut t = Dir24Lpm::new().unwrap();
        assert_eq!(t.lookup(ip("1.2.3.4")), NO_ROUTE);
        assert!(t.memory_bytes() <= 64 * 1024, "{}", t.memory_bytes());
        t.add(0, 0, 7).unwrap();
        assert_eq!(t.lookup(ip("200.1.2.3")), 7);
        assert!(t.memory_bytes() <= 64 * 1024, "{}", t.memory_bytes());
        assert_eq!(t.chunks_in_use(), 0);
    }

    #[test]
    fn huge_pages_only_once_chunks_or_groups_fill_them() {
        // A service's downstream table: a few host routes in one /24 touch
        // one chunk and one group, and must not commit 2 MiB pages.
        let mut t = Dir24Lpm::new().unwrap();
        for h in 2..12 {
            t.add(ip("10.1.2.0") + h, 32, h).unwrap();
        }
        assert_eq!(t.narrow.huge_bytes() + t.wide.huge_bytes(), 0);
        assert_eq!(t.groups.huge_bytes(), 0);
        // 2 MiB of narrow chunks (16 of 128 KiB) in use: huge pages.
        for s8 in 11..26u32 {
            t.add(s8 << 24 | 1 << 16, 16, 1).unwrap();
        }
        assert_eq!(t.chunks_in_use(), 16);
        assert_eq!(t.narrow.huge_bytes(), 2 << 20);
        assert_eq!(t.try_clone().unwrap().narrow.huge_bytes(), 2 << 20);
        // 2 MiB of groups (2048 of 1 KiB).
        for g in 0..2048u32 {
            t.add(ip("11.0.0.0") | g << 8 | 1, 32, 2).unwrap();
        }
        assert_eq!(t.groups.huge_bytes(), 2 << 20);
    }

    #[test]
    fn nested_add_and_delete_uncover_shorter_prefixes() {
        let mut t = Dir24Lpm::new().unwrap();
        t.add(ip("10.0.0.0"), 8, 1).unwrap();
        t.add(ip("10.1.0.0"), 16, 2).unwrap();
        t.add(ip("10.1.2.0"), 24, 3).unwrap();
        t.add(ip("10.1.2.128"), 25, 4).unwrap();
        t.add(ip("10.1.2.200"), 32, 5).unwrap();
        let probe = |t: &Dir24Lpm| {
            [
                "10.9.9.9",
                "10.1.9.9",
                "10.1.2.1",
                "10.1.2.129",
                "10.1.2.200",
                "11.0.0.1",
            ]
            .map(|s| t.lookup(ip(s)))
        };
        assert_eq!(probe(&t), [1, 2, 3, 4, 5, NO_ROUTE]);
        assert_eq!(t.delete(ip("10.1.2.0"), 24).unwrap(), 3);
        assert_eq!(probe(&t), [1, 2, 2, 4, 5, NO_ROUTE]);
        t.delete(ip("10.1.2.128"), 25).unwrap();
        assert_eq!(probe(&t), [1, 2, 2, 2, 5, NO_ROUTE]);
        t.delete(ip("10.1.2.200"), 32).unwrap();
        assert_eq!(t.groups_in_use(), 0);
        assert_eq!(probe(&t), [1, 2, 2, 2, 2, NO_ROUTE]);
        t.delete(ip("10.1.0.0"), 16).unwrap();
        assert_eq!(t.chunks_in_use(), 0);
        assert_eq!(probe(&t), [1, 1, 1, 1, 1, NO_ROUTE]);
        t.add(0, 0, 9).unwrap();
        assert_eq!(probe(&t), [1, 1, 1, 1, 1, 9]);
        t.delete(ip("10.0.0.0"), 8).unwrap();
        assert_eq!(probe(&t), [9; 6]);
        assert!(t.delete(ip("10.0.0.0"), 8).is_err());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn chunks_widen_for_large_next_hops_and_many_groups() {
        let mut t = Dir24Lpm::new().unwrap();
        t.add(ip("10.0.0.0"), 16, 5).unwrap();
        assert_eq!(t.wide_chunks(), 0);
        t.add(ip("10.1.0.0"), 16, 100_000).unwrap();
        assert_eq!(t.wide_chunks(), 1);
        assert_eq!(t.lookup(ip("10.0.3.3")), 5);
        assert_eq!(t.lookup(ip("10.1.3.3")), 100_000);
        // More groups in one /8 than 15 bits can name.
        for i in 0..33_000u32 {
            t.add(ip("11.0.0.0") | i << 8 | 7, 32, i).unwrap();
        }
        assert_eq!(t.wide_chunks(), 2);
        let keys: Vec<u32> = (0..33_000u32)
            .map(|i| ip("11.0.0.0") | i << 8 | 7)
            .collect();
        let mut out = vec![0; keys.len()];
        t.lookup_bulk(&keys, &mut out);
        assert!(out.iter().enumerate().all(|(i, &o)| o == i as u32));
        assert_eq!(t.lookup(ip("11.0.0.8")), NO_ROUTE);
        for i in 0..33_000u32 {
            t.delete(ip("11.0.0.0") | i << 8 | 7, 32).unwrap();
        }
        assert_eq!(t.groups_in_use(), 0);
        assert_eq!(t.chunks_in_use(), 1);
        assert_eq!(t.lookup(ip("10.1.3.3")), 100_000);
    }

    #[test]
    fn replace_changes_next_hop_in_place() {
        let mut t = Dir24Lpm::new().unwrap();
        assert_eq!(t.add(ip("192.168.1.0"), 24, 1).unwrap(), None);
        assert_eq!(t.add(ip("192.168.1.0"), 24, 2).unwrap(), Some(1));
        assert_eq!(t.lookup(ip("192.168.1.77")), 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn group_exhaustion_is_an_error_and_leaves_the_table_unchanged() {
        // Room for one chunk, one group and their rules, not a second group.
        let limit = CHUNK_BYTES + GROUP_BYTES + 2 * RULE_BYTES;
        let mut t = Dir24Lpm::with_limit(limit).unwrap();
        t.add(ip("1.1.1.1"), 32, 1).unwrap();
        assert_eq!(
            t.add(ip("2.2.2.2"), 32, 2),
            Err(LpmError::MemoryLimit { limit_bytes: limit })
        );
        assert_eq!(t.lookup(ip("2.2.2.2")), NO_ROUTE);
        assert_eq!(t.chunks_in_use(), 1);
        assert_eq!(t.len(), 1);
        assert!(t.add(0, 33, 1).is_err());
        assert!(t.add(0, 0, MAX_NEXT_HOP + 1).is_err());
    }

    /// A /24 apiece for `n` prefixes /25../32, spread over the /8s.
    fn long_prefixes(n: u32) -> impl Iterator<Item = (u32, u8, u32)> {
        (0..n).map(|i| {
            let len = 25 + (i % 8) as u8;
            // /8s 1..=223, then the /24 within it; host bits vary.
            let s8 = 1 + i % 223;
            let s24 = i / 223;
            (s8 << 24 | s24 << 8 | (i * 37) & 0xff, len, i)
        })
    }

    #[test]
    fn groups_grow_past_any_fixed_count() {
        let mut t = Dir24Lpm::new().unwrap();
        assert_eq!(t.group_room(), INITIAL_GROUPS);
        let routes: Vec<_> = long_prefixes(100_000).collect();
        for &(p, l, nh) in &routes {
            t.add(p, l, nh).unwrap();
        }
        assert_eq!(t.len(), 100_000);
        assert_eq!(t.groups_in_use(), 100_000);
        assert!(t.group_room() >= 100_000);
        let keys: Vec<u32> = routes.iter().map(|&(p, l, _)| p & mask(l)).collect();
        let mut out = vec![0; keys.len()];
        t.lookup_bulk(&keys, &mut out);
        for (i, (&k, &o)) in keys.iter().zip(&out).enumerate() {
            assert_eq!(o, i as u32);
            assert_eq!(t.lookup(k), i as u32);
            assert_eq!(t.lookup(k | !mask(routes[i].1)), i as u32);
        }
        // Outside each prefix but in its /24: no route.
        let (p, l, _) = routes[7];
        assert_eq!(t.lookup((p & mask(l)) ^ 0x80), NO_ROUTE);
        let c = t.try_clone().unwrap();
        assert_eq!(c.group_room(), t.group_room());
        assert!(keys
            .iter()
            .enumerate()
            .all(|(i, &k)| c.lookup(k) == i as u32));
    }

    #[test]
    fn memory_limit_refuses_exactly_the_group_that_would_pass_it() {
        // A /8 rule, one chunk (the /8 of every /25), then a group and a
        // rule per /25: the 40th /25 would pass the limit by one byte.
        let limit = RULE_BYTES + CHUNK_BYTES + 40 * (GROUP_BYTES + RULE_BYTES) - 1;
        let mut t = Dir24Lpm::with_limit(limit).unwrap();
        assert_eq!(t.memory_limit(), limit);
        let mut n = Naive::default();
        t.add(ip("10.0.0.0"), 8, 1000).unwrap();
        n.add(ip("10.0.0.0"), 8, 1000);
        let at = |i: u32| ip("10.0.0.0") | i << 8 | 0x80;
        let mut refused = None;
        for i in 0..100u32 {
            let next = t.limited_bytes()
                + GROUP_BYTES
                + RULE_BYTES
                + if t.chunks_in_use() == 0 {
                    CHUNK_BYTES
                } else {
                    0
                };
            match t.add(at(i), 25, i) {
                Ok(_) => {
                    assert!(next <= limit, "{i}: {next} > {limit} accepted");
                    n.add(at(i), 25, i);
                }
                Err(e) => {
                    assert!(next > limit, "{i}: {next} <= {limit} refused");
                    assert_eq!(e, LpmError::MemoryLimit { limit_bytes: limit });
                    refused = Some(i);
                    break;
                }
            }
        }
        let refused = refused.expect("the limit is reached");
        assert_eq!(refused, 39);
        assert!(t.limited_bytes() <= limit);
        let before = t.limited_bytes();
        // Refusing changed nothing, and the table still answers right.
        assert_eq!(t.len(), 40);
        assert_eq!(t.groups_in_use(), 39);
        assert_eq!(t.limited_bytes(), before);
        let check = |t: &Dir24Lpm, n: &Naive| {
            for i in 0..100u32 {
                for k in [at(i), at(i) ^ 0x80, at(i) | 0x7f, ip("11.0.0.1")] {
                    assert_eq!(t.lookup(k), n.lookup(k), "{}", std::net::Ipv4Addr::from(k));
                }
            }
        };
        check(&t, &n);
        // Routes that need no new group still fit.
        t.add(at(5) | 0x7f, 32, 4242).unwrap();
        n.add(at(5) | 0x7f, 32, 4242);
        t.delete(at(5) | 0x7f, 32).unwrap();
        n.del(at(5) | 0x7f, 32);
        // Deleting a group's last rule frees the group for another /24.
        assert!(t.add(at(refused), 25, 1).is_err());
        t.delete(at(3), 25).unwrap();
        n.del(at(3), 25);
        t.add(at(refused), 25, 7).unwrap();
        n.add(at(refused), 25, 7);
        assert_eq!(t.groups_in_use(), 39);
        check(&t, &n);
        assert_eq!(t.lookup(at(refused)), 7);
        assert_eq!(t.lookup(at(3)), 1000);
        // Chunks count too; the message names the limit.
        let mut t = Dir24Lpm::with_limit(1 << 20).unwrap();
        t.add(ip("10.0.0.0"), 16, 1).unwrap();
        t.add(ip("11.0.0.0"), 16, 1).unwrap();
        let e = t.add(ip("12.0.0.0"), 16, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the route table's memory limit of 1 MiB is reached"
        );
    }

    /// The obvious LPM: scan every rule.
    #[derive(Default)]
    struct Naive(Vec<(u32, u8, u32)>);

    impl Naive {
        fn add(&mut self, p: u32, l: u8, nh: u32) {
            let p = p & mask(l);
            self.0.retain(|r| !(r.0 == p && r.1 == l));
            self.0.push((p, l, nh));
        }
        fn del(&mut self, p: u32, l: u8) -> bool {
            let p = p & mask(l);
            let n = self.0.len();
            self.0.retain(|r| !(r.0 == p && r.1 == l));
            n != self.0.len()
        }
        fn lookup(&self, ip: u32) -> u32 {
            self.0
                .iter()
                .filter(|r| ip & mask(r.1) == r.0)
                .max_by_key(|r| r.1)
                .map(|r| r.2)
                .unwrap_or(NO_ROUTE)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u32, u8, u32),
        Del(u32, u8),
        /// Delete the n-th rule added so far (so deletes hit real rules).
        DelNth(usize),
    }

    /// Addresses from a few /8s and /16s so prefixes nest and collide.
    fn addr() -> impl Strategy<Value = u32> {
        (0u32..4, 0u32..4, any::<u16>()).prop_map(|(a, b, low)| {
            let top = [10u32, 11, 192, 0][a as usize];
            (top << 24) | ([0u32, 1, 255, 17][b as usize] << 16) | u32::from(low)
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        let len = prop_oneof![
            Just(0u8),
            1u8..=8,
            9u8..=24,
            25u8..=32,
            Just(24u8),
            Just(32u8)
        ];
        prop_oneof![
            // Next hops around the narrow limit (32766) force chunks wide.
            4 => (addr(), len.clone(), prop_oneof![4 => 0u32..1000, 1 => 32760u32..32800])
                .prop_map(|(a, l, n)| Op::Add(a, l, n)),
            1 => (addr(), len).prop_map(|(a, l)| Op::Del(a, l)),
            2 => any::<usize>().prop_map(Op::DelNth),
        ]
    }

    /// Runs `ops` on `t` and on the naive reference, comparing them after
    /// every step, then deletes all it added and checks `t` is empty.
    fn follow_naive(t: &mut Dir24Lpm, ops: Vec<Op>, probes: &[u32]) -> Result<(), TestCaseError> {
        let mut n = Naive::default();
        let mut added: Vec<(u32, u8)> = Vec::new();
        for o in ops {
            match o {
                Op::Add(a, l, nh) => {
                    t.add(a, l, nh).unwrap();
                    n.add(a, l, nh);
                    added.push((a, l));
                }
                Op::Del(a, l) => {
                    prop_assert_eq!(t.delete(a, l).is_ok(), n.del(a, l));
                }
                Op::DelNth(i) => {
                    if !added.is_empty() {
                        let (a, l) = added[i % added.len()];
                        prop_assert_eq!(t.delete(a, l).is_ok(), n.del(a, l));
                    }
                }
            }
            let mut keys = probes.to_vec();
            for r in &n.0 {
                let p = r.0 & mask(r.1);
                keys.push(p);
                keys.push(p | !mask(r.1));
                keys.push(p.wrapping_sub(1));
                keys.push((p | !mask(r.1)).wrapping_add(1));
            }
            let mut bulk = vec![0; keys.len()];
            t.lookup_bulk(&keys, &mut bulk);
            for (k, b) in keys.iter().zip(&bulk) {
                let want = n.lookup(*k);
                prop_assert_eq!(
                    t.lookup(*k),
                    want,
                    "single lookup {}",
                    std::net::Ipv4Addr::from(*k)
                );
                prop_assert_eq!(*b, want, "bulk lookup {}", std::net::Ipv4Addr::from(*k));
            }
            prop_assert_eq!(t.len(), n.0.len());
        }
        let mut listed: Vec<(u32, u8, u32)> = t.routes().collect();
        let mut want = n.0.clone();
        listed.sort_unstable();
        want.sort_unstable();
        prop_assert_eq!(listed, want, "routes()");
        // Everything deleted: no chunk or group may be left behind.
        for (a, l) in added {
            let _ = t.delete(a, l);
        }
        prop_assert_eq!(t.len(), 0);
        prop_assert_eq!(t.chunks_in_use(), 0);
        prop_assert_eq!(t.groups_in_use(), 0);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("HDVRF_LPM_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000),
            failure_persistence: None,
            .. ProptestConfig::default()
        })]

        /// The table agrees with the naive reference after every step of a
        /// random sequence of nested adds and deletes, for single and bulk
        /// lookups, at random addresses and at every rule's edges.
        #[test]
        fn agrees_with_naive_reference(ops in proptest::collection::vec(op(), 1..24),
                                       probes in proptest::collection::vec(addr(), 8)) {
            // One table per test thread, reused: every case ends by
            // deleting all it added and asserting the table is empty, so
            // each case starts from a clean table that exercises the free
            // lists (and skips re-faulting fresh memory every case).
            thread_local! {
                static TABLE: std::cell::RefCell<Dir24Lpm> =
                    std::cell::RefCell::new(Dir24Lpm::new().unwrap());
            }
            TABLE.with(|cell| -> Result<(), TestCaseError> {
            follow_naive(&mut cell.borrow_mut(), ops, &probes)
            })?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, .. ProptestConfig::default() })]

        /// The same from a table with room for one group, so the group
        /// region grows (1, 2, 4, ...) part way through the sequence, and
        /// every route must read the same after each move.
        #[test]
        fn agrees_with_naive_reference_while_groups_grow(ops in proptest::collection::vec(op(), 1..24),
                                                         probes in proptest::collection::vec(addr(), 8)) {
            let mut t = Dir24Lpm::with_room(UNLIMITED, 1).unwrap();
            follow_naive(&mut t, ops, &probes)?;
        }

        /// A copy made part way through a sequence of adds and deletes
        /// behaves as the original for the rest of it: the same answers,
        /// the same chunks and groups in use.
        #[test]
        fn a_copy_continues_like_the_original(ops in proptest::collection::vec(op(), 2..24),
                                             split in 0usize..24,
                                             probes in proptest::collection::vec(addr(), 16),
                                             limit in prop_oneof![Just(UNLIMITED), 0..3 * CHUNK_BYTES]) {
            let split = split % ops.len();
            // Little group room, so both copies grow, and sometimes a
            // limit, so both refuse: the same ops each time.
            let mut a = Dir24Lpm::with_room(limit, 1).unwrap();
            let mut added: Vec<(u32, u8)> = Vec::new();
            let mut b = None;
            for (k, o) in ops.iter().enumerate() {
                if k == split {
                    b = Some(a.try_clone().unwrap());
                }
                let run = |t: &mut Dir24Lpm, added: &[(u32, u8)]| match *o {
                    Op::Add(x, l, nh) => t.add(x, l, nh).is_ok(),
                    Op::Del(x, l) => t.delete(x, l).is_ok(),
                    Op::DelNth(i) => match added.get(i % added.len().max(1)) {
                        Some(&(x, l)) => t.delete(x, l).is_ok(),
                        None => false,
                    },
                };
                let ra = run(&mut a, &added);
                if let Some(b) = b.as_mut() {
                    prop_assert_eq!(run(b, &added), ra);
                }
                if let Op::Add(x, l, _) = *o {
                    added.push((x, l));
                }
            }
            let b = b.unwrap();
            for &k in &probes {
                prop_assert_eq!(a.lookup(k), b.lookup(k));
            }
            for &(x, l) in &added {
                prop_assert_eq!(a.lookup(x), b.lookup(x));
                prop_assert_eq!(a.lookup(x | !mask(l)), b.lookup(x | !mask(l)));
            }
            prop_assert_eq!(a.len(), b.len());
            prop_assert_eq!(a.chunks_in_use(), b.chunks_in_use());
            prop_assert_eq!(a.groups_in_use(), b.groups_in_use());
        }
    }
}
