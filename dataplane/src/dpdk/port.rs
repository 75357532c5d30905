use std::ffi::{CStr, CString};
use std::sync::Arc;

use super::burst::{Burst, BURST_SIZE};
use super::error::{strerror, DpdkError};
use super::mempool::Mempool;

/// `SOCKET_ID_ANY`: the port's NUMA socket is unknown (virtual devices).
pub const SOCKET_ID_ANY: i32 = -1;

/// RSS over IPv4/IPv6 addresses (`RTE_ETH_RSS_IP`; bindgen cannot expand
/// the macro): IPV4, FRAG_IPV4, NONFRAG_IPV4_OTHER, IPV6, FRAG_IPV6,
/// NONFRAG_IPV6_OTHER, IPV6_EX.
const RSS_IP: u64 = (1 << 2) | (1 << 3) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 13) | (1 << 15);

/// How a port is set up.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub mtu: Option<u16>,
    pub promiscuous: bool,
}

/// Link state as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Up {
        speed_mbps: u32,
    },
    Down,
    /// The driver could not answer (e.g. a tap moved to another namespace).
    Unknown,
}

/// Port counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
    /// Packets per rx queue (the first 16 queues, as ethdev counts them).
    pub q_ipackets: [u64; 16],
}

/// An ethdev port, stopped and closed on drop. Queue handles are handed out
/// once each, so a queue is only ever polled by the one worker owning it.
pub struct Port {
    id: u16,
    name: String,
    max_rx_queues: u16,
    max_tx_queues: u16,
    rss_offloads: u64,
    started: bool,
    closed: bool,
    rx_taken: Vec<bool>,
    tx_taken: Vec<bool>,
    pool: Option<Arc<Mempool>>,
}

/// The right to poll one rx queue of one port. Not `Clone`: one owner.
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// The right to transmit on one tx queue of one port. Not `Clone`.
pub struct TxQueue {
    port: u16,
    queue: u16,
}

fn port_err(name: &str, op: &'static str, rc: i32) -> DpdkError {
    DpdkError::Port {
        name: name.to_owned(),
        op,
        errno: rc,
        reason: strerror(rc),
    }
}

impl Port {
    /// Finds the probed port called `name` (a vdev's name such as
    /// `net_pcap0`, or a PCI address).
    pub fn open(eal: &super::Eal, name: &str) -> Result<Port, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArgument(name.to_owned()))?;
        let mut id: u16 = 0;
        // SAFETY: `cname` is valid for the call and `id` is a valid out
        // pointer; EAL is initialised (callers hold `Eal`).
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(DpdkError::PortNotFound {
                name: name.to_owned(),
                cause: super::error::probe_failure(eal.init_log(), name),
            });
        }
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: `id` names a probed port and `info` is a valid out struct.
        let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(port_err(name, "rte_eth_dev_info_get", rc));
        }
        Ok(Port {
            id,
            name: name.to_owned(),
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            started: false,
            closed: false,
            rx_taken: Vec::new(),
            tx_taken: Vec::new(),
            pool: None,
        })
    }

    /// Number of ethdev ports that probed.
    pub fn count() -> u16 {
        // SAFETY: reads the ethdev table; EAL is initialised.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_rx_queues(&self) -> u16 {
        self.max_rx_queues
    }

    pub fn max_tx_queues(&self) -> u16 {
        self.max_tx_queues
    }

    /// The port's NUMA socket, or [`SOCKET_ID_ANY`].
    pub fn socket_id(&self) -> i32 {
        // SAFETY: `id` is a probed port.
        unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) }
    }

    /// Configures queues (RSS over IP when there are several rx queues),
    /// MTU, and rx buffers from `pool`. The port must be stopped.
    pub fn configure(&mut self, cfg: &PortConfig, pool: Arc<Mempool>) -> Result<(), DpdkError> {
        if cfg.rx_queues == 0 || cfg.rx_queues > self.max_rx_queues {
            return Err(DpdkError::PortLimit {
                name: self.name.clone(),
                what: format!(
                    "{} rx queues asked, the driver offers {}",
                    cfg.rx_queues, self.max_rx_queues
                ),
            });
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > self.max_tx_queues {
            return Err(DpdkError::PortLimit {
                name: self.name.clone(),
                what: format!(
                    "{} tx queues needed (one per worker), the driver offers {}",
                    cfg.tx_queues, self.max_tx_queues
                ),
            });
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        if cfg.rx_queues > 1 {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = std::ptr::null_mut();
            conf.rx_adv_conf.rss_conf.rss_hf = RSS_IP & self.rss_offloads;
        }
        // SAFETY: `conf` is a valid config that outlives the call; the port
        // is probed and stopped.
        let rc = unsafe {
            dpdk_sys::rte_eth_dev_configure(self.id, cfg.rx_queues, cfg.tx_queues, &conf)
        };
        if rc != 0 {
            return Err(port_err(&self.name, "rte_eth_dev_configure", rc));
        }
        if let Some(mtu) = cfg.mtu {
            // SAFETY: the port is configured; MTU is a plain value.
            let rc = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.id, mtu) };
            if rc != 0 {
                return Err(port_err(&self.name, "rte_eth_dev_set_mtu", rc));
            }
        }
        let socket = self.socket_id();
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..cfg.rx_queues {
            // SAFETY: the queue index is below the configured count; NULL
            // rx_conf means driver defaults; the pool outlives the port
            // because the port keeps an `Arc` to it until it is closed.
            let rc = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    cfg.rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(port_err(&self.name, "rte_eth_rx_queue_setup", rc));
            }
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: as above; NULL tx_conf means driver defaults.
            let rc = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(self.id, q, cfg.tx_desc, socket, std::ptr::null())
            };
            if rc != 0 {
                return Err(port_err(&self.name, "rte_eth_tx_queue_setup", rc));
            }
        }
        if cfg.promiscuous {
            // SAFETY: probed port. Not every driver supports it; ignore
            // -ENOTSUP (virtual devices see every frame anyway).
            let _ = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
        }
        self.rx_taken = vec![false; cfg.rx_queues as usize];
        self.tx_taken = vec![false; cfg.tx_queues as usize];
        self.pool = Some(pool);
        Ok(())
    }

    pub fn start(&mut self) -> Result<(), DpdkError> {
        // SAFETY: the port is configured.
        let rc = unsafe { dpdk_sys::rte_eth_dev_start(self.id) };
        if rc != 0 {
            return Err(port_err(&self.name, "rte_eth_dev_start", rc));
        }
        self.started = true;
        Ok(())
    }

    /// Stops the port. Workers polling it must have stopped first.
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: probed, started port; no worker polls it any more.
            unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
            self.started = false;
        }
    }

    /// Stops and closes the port, releasing its queues' mbufs to the pool.
    pub fn close(mut self) {
        self.do_close();
    }

    fn do_close(&mut self) {
        self.stop();
        if !self.closed {
            // SAFETY: the port is stopped; after this call the id is not
            // used again by us (the queue handles poll dummy functions).
            unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
            self.closed = true;
        }
        self.pool = None;
    }

    /// Hands out rx queue `q` once.
    pub fn take_rx_queue(&mut self, q: u16) -> Option<RxQueue> {
        let slot = self.rx_taken.get_mut(q as usize)?;
        if *slot {
            return None;
        }
        *slot = true;
        Some(RxQueue {
            port: self.id,
            queue: q,
        })
    }

    /// Hands out tx queue `q` once.
    pub fn take_tx_queue(&mut self, q: u16) -> Option<TxQueue> {
        let slot = self.tx_taken.get_mut(q as usize)?;
        if *slot {
            return None;
        }
        *slot = true;
        Some(TxQueue {
            port: self.id,
            queue: q,
        })
    }

    /// Sets the port's MAC address (for a host tap: the kernel
    /// interface's, so the kernel answers for the port it stands for).
    pub fn set_mac(&mut self, mac: [u8; 6]) -> Result<(), DpdkError> {
        let mut a = dpdk_sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: probed port; `a` is a valid address the call only reads.
        let rc = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(self.id, &mut a) };
        if rc != 0 {
            return Err(port_err(&self.name, "rte_eth_dev_default_mac_addr_set", rc));
        }
        Ok(())
    }

    pub fn mac(&self) -> [u8; 6] {
        let mut a = dpdk_sys::rte_ether_addr::default();
        // SAFETY: probed port and a valid out struct.
        let rc = unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut a) };
        if rc != 0 {
            return [0; 6];
        }
        a.addr_bytes
    }

    pub fn link(&self) -> LinkState {
        let mut l = dpdk_sys::rte_eth_link::default();
        // SAFETY: probed port and a valid out struct.
        let rc = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut l) };
        if rc != 0 {
            return LinkState::Unknown;
        }
        if l.link_status() != 0 {
            LinkState::Up {
                speed_mbps: l.link_speed,
            }
        } else {
            LinkState::Down
        }
    }

    pub fn stats(&self) -> PortStats {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: probed port and a valid out struct.
        let rc = unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        if rc != 0 {
            return PortStats::default();
        }
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            q_ipackets: s.q_ipackets,
        }
    }

    /// The name DPDK gives port `id`.
    pub fn name_of(id: u16) -> Option<String> {
        let mut buf = [0 as std::ffi::c_char; 64];
        // SAFETY: `buf` is larger than RTE_ETH_NAME_MAX_LEN (64 with NUL).
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: on success the buffer holds a NUL-terminated name.
        Some(
            unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.do_close();
    }
}

impl RxQueue {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives into the free slots of `burst`; returns how many arrived.
    #[inline(always)]
    pub fn rx(&self, burst: &mut Burst) -> usize {
        let room = BURST_SIZE - burst.len;
        // SAFETY: this handle is the only one for (port, queue), so no other
        // thread polls the queue; the pointer array has `room` free slots
        // from `len`, which the driver fills with mbufs we then own.
        let n = unsafe {
            dpdk_sys::hdvrf_rte_eth_rx_burst(
                self.port,
                self.queue,
                burst.pkts.as_mut_ptr().add(burst.len),
                room as u16,
            )
        } as usize;
        burst.len += n;
        n
    }
}

impl TxQueue {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Transmits what the driver takes; the rest stays at the front of
    /// `burst`. Returns the number sent.
    #[inline(always)]
    pub fn tx(&self, burst: &mut Burst) -> usize {
        if burst.len == 0 {
            return 0;
        }
        // SAFETY: this handle is the only one for (port, queue); the first
        // `len` entries are mbufs we own, and ownership of the first `n`
        // passes to the driver, which `consume_front` records.
        let n = unsafe {
            dpdk_sys::hdvrf_rte_eth_tx_burst(
                self.port,
                self.queue,
                burst.pkts.as_mut_ptr(),
                burst.len as u16,
            )
        } as usize;
        burst.consume_front(n);
        n
    }

    /// Transmits and frees what the driver would not take, as testpmd does
    /// without retry. Returns (sent, dropped).
    #[inline(always)]
    pub fn tx_or_drop(&self, burst: &mut Burst) -> (usize, usize) {
        let sent = self.tx(burst);
        let dropped = burst.len;
        burst.clear();
        (sent, dropped)
    }
}
