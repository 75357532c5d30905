//! Bringing the data plane up and down: EAL, mempools per NUMA socket,
//! ports, the (port, rx queue) -> worker plan, worker launch, and a
//! shutdown that proves every mbuf came home.
//!
//! Teardown order matters and is fixed here: stop flag -> wait for every
//! worker -> stop and close ports (drivers return their rx rings' mbufs) ->
//! count the pools -> free pools -> `rte_eal_cleanup`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::host::{HostPath, HostTap, INJECT_QUEUE_LEN, PUNT_QUEUE_LEN};
use crate::spec::{DataplaneSpec, PortSpec};
use crate::trace::Trace;

use hdrhistogram::Histogram;

use crate::counters::{CoreCounters, CoreSnapshot, SubscriberSnapshot};
use crate::dpdk::{
    DpdkError, Eal, LinkState, Mempool, Port, PortConfig, PortStats, BURST_SIZE, SOCKET_ID_ANY,
};
use crate::forward::ForwardMode;
use crate::publish::{self, CommitError, PublishStats, Publisher};
use crate::tables::{TableOp, Tables};

/// The control side's handle on the workers' tables.
pub type TablePublisher = Publisher<Tables, TableOp>;
use crate::policy::RuleSnapshot;
use crate::worker::{Stream, Worker, WorkerReport};

/// Why the data plane could not start. `port` indexes `DataplaneSpec::ports`
/// so the caller can name the config field.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Eal(DpdkError),
    #[error("EAL gave worker lcores {got:?} but {want:?} were configured")]
    Lcores { want: Vec<u32>, got: Vec<u32> },
    #[error("{source}")]
    Port { port: usize, source: DpdkError },
    #[error(transparent)]
    Mempool(DpdkError),
    #[error(transparent)]
    Launch(#[from] crate::dpdk::LaunchError),
    #[error("forwarding tables: {0}")]
    Tables(String),
    #[error("host tap {iface}: {source}")]
    HostTap {
        port: usize,
        iface: String,
        source: DpdkError,
    },
}

/// A running data plane.
pub struct Running {
    ports: Vec<Port>,
    pools: BTreeMap<i32, Arc<Mempool>>,
    workers: Vec<(u32, Arc<CoreCounters>)>,
    stop: Arc<AtomicBool>,
    reports: mpsc::Receiver<WorkerReport>,
    /// Router mode: the writer side of the workers' tables.
    publisher: Option<TablePublisher>,
    publications: PublicationStats,
    trace: Arc<Trace>,
    /// Router mode: the control thread's side of the ports (punts, the
    /// frames it sends, the host taps of addressed ports).
    host: Option<HostPath>,
    /// `None` once torn down.
    eal: Option<Eal>,
}

/// Table publication so far: how many commits, of how many ops, and how
/// long they took to reach every worker.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PublicationStats {
    pub commits: u64,
    pub ops: u64,
    /// Commits that failed (stalled readers or a protocol error).
    pub failed: u64,
    /// Submit to visible on every worker: the last commit's and the worst.
    pub last_visible_after: Duration,
    pub max_visible_after: Duration,
    /// The last commit as a whole, both copies updated.
    pub last_elapsed: Duration,
}

/// What shutdown found.
#[derive(Debug)]
pub struct ShutdownReport {
    pub mbufs_total: u64,
    /// Mbufs not back in their pool after every port closed (0 = no leak).
    pub mbufs_missing: u64,
    pub cores: Vec<(u32, CoreSnapshot)>,
    /// Per-burst latency of all workers merged, in TSC ticks.
    pub latency: Option<Histogram<u64>>,
}

fn default_pool_size(spec: &DataplaneSpec, ports_on_socket: &[usize], cache: u32) -> u32 {
    let nw = spec.workers.len() as u32;
    let mut n: u32 = 0;
    for &i in ports_on_socket {
        let p = &spec.ports[i];
        n += u32::from(p.rx_queues) * u32::from(spec.rx_desc);
        n += nw * u32::from(spec.tx_desc);
    }
    // Host taps: their rings, the control queue on the port, and what
    // the punt queue can hold.
    let taps = ports_on_socket
        .iter()
        .filter(|&&i| spec.ports[i].host.is_some())
        .count() as u32;
    n += taps * (u32::from(spec.rx_desc) + u32::from(spec.tx_desc));
    if spec.mode == ForwardMode::Router {
        n += (PUNT_QUEUE_LEN + INJECT_QUEUE_LEN) as u32;
    }
    n += (nw + 1) * (cache + BURST_SIZE as u32) + 2048;
    // A power of two minus one is the optimum for the ring under the pool.
    (n + 1).next_power_of_two().max(8192) - 1
}

/// Opens, configures and starts every port's host tap: one rx and one tx
/// queue for the control thread, the port's MAC (so the kernel answers
/// for the port), the port's MTU.
fn open_host_taps(
    eal: &Eal,
    spec: &DataplaneSpec,
    ports: &mut [Port],
    pools: &BTreeMap<i32, Arc<Mempool>>,
) -> Result<HostPath, StartError> {
    let mut taps = Vec::with_capacity(ports.len());
    let pool0 = pools.values().next().expect("one pool at least").clone();
    for (i, (p, port)) in spec.ports.iter().zip(ports.iter_mut()).enumerate() {
        let Some(h) = &p.host else {
            taps.push(None);
            continue;
        };
        let err = |source| StartError::HostTap {
            port: i,
            iface: h.iface.clone(),
            source,
        };
        let s = port.socket_id();
        let pool = pools[&(if s == SOCKET_ID_ANY { 0 } else { s })].clone();
        let mut tap = Port::open(eal, &h.dpdk_name).map_err(err)?;
        let cfg = PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: spec.rx_desc,
            tx_desc: spec.tx_desc,
            mtu: p.mtu,
            promiscuous: false,
        };
        tap.configure(&cfg, pool).map_err(err)?;
        tap.set_mac(port.mac()).map_err(err)?;
        tap.start().map_err(err)?;
        taps.push(Some(
            HostTap::new(h.iface.clone(), tap).expect("fresh tap queues"),
        ));
    }
    Ok(HostPath::new(taps, pool0))
}

/// Round-robin of every (port, rx queue) over the workers.
pub fn plan_queues(ports: &[PortSpec], workers: usize) -> Vec<Vec<(usize, u16)>> {
    let mut plan = vec![Vec::new(); workers];
    let mut k = 0;
    for (pi, p) in ports.iter().enumerate() {
        for q in 0..p.rx_queues {
            plan[k % workers].push((pi, q));
            k += 1;
        }
    }
    plan
}

impl Running {
    /// Brings everything up and launches the workers. Router mode needs
    /// `tables` (ports in `spec.ports` order; their MACs are filled in from
    /// the devices here).
    pub fn start(spec: &DataplaneSpec, tables: Option<Tables>) -> Result<Running, StartError> {
        let eal = Eal::init(&spec.eal_args).map_err(|e| match &e {
            // Blame the port whose device EAL choked on, if the log names it.
            DpdkError::EalInit { log, .. } => {
                match spec.ports.iter().position(|p| {
                    log.contains(&format!("\"{}\"", p.dpdk_name))
                        || log.contains(&format!("'{}'", p.dpdk_name))
                }) {
                    Some(port) => StartError::Port { port, source: e },
                    None => StartError::Eal(e),
                }
            }
            _ => StartError::Eal(e),
        })?;
        let got = eal.worker_lcores();
        if got != spec.workers {
            return Err(StartError::Lcores {
                want: spec.workers.clone(),
                got,
            });
        }
        let mut ports = Vec::with_capacity(spec.ports.len());
        for (i, p) in spec.ports.iter().enumerate() {
            ports.push(
                Port::open(&eal, &p.dpdk_name)
                    .map_err(|e| StartError::Port { port: i, source: e })?,
            );
        }

        // One pool per NUMA socket that has ports; virtual devices report
        // SOCKET_ID_ANY and share socket 0's pool.
        let mut by_socket: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, p) in ports.iter().enumerate() {
            let s = p.socket_id();
            by_socket
                .entry(if s == SOCKET_ID_ANY { 0 } else { s })
                .or_default()
                .push(i);
        }
        let mut pools = BTreeMap::new();
        for (socket, idx) in &by_socket {
            let size = spec
                .mbufs
                .unwrap_or_else(|| default_pool_size(spec, idx, spec.mbuf_cache));
            let pool = Mempool::create(
                &format!("hdvrf_mbuf_s{socket}"),
                size,
                spec.mbuf_cache,
                dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                *socket,
            )
            .map_err(StartError::Mempool)?;
            pools.insert(*socket, Arc::new(pool));
        }

        let nw = spec.workers.len() as u16;
        for (i, port) in ports.iter_mut().enumerate() {
            let s = port.socket_id();
            let pool = pools[&(if s == SOCKET_ID_ANY { 0 } else { s })].clone();
            let cfg = PortConfig {
                rx_queues: spec.ports[i].rx_queues,
                tx_queues: nw,
                rx_desc: spec.rx_desc,
                tx_desc: spec.tx_desc,
                mtu: spec.ports[i].mtu,
                promiscuous: true,
            };
            port.configure(&cfg, pool)
                .and_then(|_| port.start())
                .map_err(|e| StartError::Port { port: i, source: e })?;
        }

        let publisher: Option<TablePublisher> = match tables {
            Some(mut t) => {
                if t.ports.len() != ports.len() {
                    return Err(StartError::Tables(format!(
                        "{} ports in the tables, {} configured",
                        t.ports.len(),
                        ports.len()
                    )));
                }
                for (i, port) in ports.iter().enumerate() {
                    t.set_port_mac(i, port.mac());
                }
                let standby = t.second_copy();
                Some(publish::channel(
                    t,
                    standby,
                    |t: &mut Tables, ops: &[TableOp]| t.apply(ops),
                ))
            }
            None if spec.mode == ForwardMode::Router => {
                return Err(StartError::Tables("router mode without tables".into()))
            }
            None => None,
        };
        // Router mode always has the host path's queues (punts to the
        // control thread, its frames out); taps only for addressed ports.
        let host = if spec.mode == ForwardMode::Router {
            Some(open_host_taps(&eal, spec, &mut ports, &pools)?)
        } else {
            None
        };
        let punts = host.as_ref().map(|h| h.punt_queue());
        let inject = host.as_ref().map(|h| h.inject_queue());
        let stop = Arc::new(AtomicBool::new(false));
        let trace = Arc::new(Trace::default());
        let (tx_reports, reports) = mpsc::channel();
        let plan = plan_queues(&spec.ports, spec.workers.len());
        let mut workers = Vec::new();
        for (w, lcore) in spec.workers.iter().enumerate() {
            let mut streams = Vec::new();
            for &(pi, q) in &plan[w] {
                let rx = ports[pi]
                    .take_rx_queue(q)
                    .expect("each (port, queue) is planned once");
                streams.push(Stream {
                    rx,
                    in_port: pi as u16,
                    out: spec.ports[pi].peer,
                });
            }
            let tx = ports
                .iter_mut()
                .map(|p| {
                    p.take_tx_queue(w as u16)
                        .expect("one tx queue per worker per port")
                })
                .collect();
            let counters = Arc::new(CoreCounters::with_subscribers(
                spec.subscribers,
                crate::dpdk::tsc_hz(),
            ));
            let latency = spec.latency_every.map(|every| {
                let h = Histogram::new_with_bounds(1, 1 << 40, 3).expect("valid bounds");
                (h, every.next_power_of_two())
            });
            let worker = Worker {
                lcore: *lcore,
                streams,
                tx,
                mode: spec.mode,
                tables: publisher.as_ref().map(|p| p.reader()),
                idle: spec.idle,
                counters: counters.clone(),
                trace: trace.clone(),
                punts: punts.clone(),
                // The first worker sends what the host path injects.
                inject: if w == 0 { inject.clone() } else { None },
                stop: stop.clone(),
                latency,
            };
            let tx_reports = tx_reports.clone();
            eal.launch(*lcore, move || {
                let report = worker.run();
                let _ = tx_reports.send(report);
                0
            })?;
            workers.push((*lcore, counters));
        }
        Ok(Running {
            ports,
            pools,
            workers,
            stop,
            reports,
            publisher,
            publications: PublicationStats::default(),
            trace,
            host,
            eal: Some(eal),
        })
    }

    /// Runs the host path once (control thread): punted packets into the
    /// kernel, the kernel's frames out of their ports. `inspect` sees each
    /// punted frame with its port first. Returns how many packets moved.
    pub fn host_poll(&mut self, inspect: impl FnMut(u16, &[u8]) -> bool) -> usize {
        self.host.as_mut().map_or(0, |h| h.poll(inspect))
    }

    /// Sends a frame the control thread built out of `port`.
    pub fn host_inject(&mut self, port: u16, frame: &[u8]) -> bool {
        self.host.as_mut().is_some_and(|h| h.inject(port, frame))
    }

    /// The host path, if any port has one.
    pub fn host(&self) -> Option<&HostPath> {
        self.host.as_ref()
    }

    pub fn cores(&self) -> Vec<(u32, CoreSnapshot)> {
        self.workers
            .iter()
            .map(|(l, c)| (*l, c.snapshot()))
            .collect()
    }

    /// Subscriber (next hop) `id`'s counts summed over the workers;
    /// `None` if it is beyond the counted ones.
    pub fn subscriber(&self, id: u32) -> Option<SubscriberSnapshot> {
        let mut sum = SubscriberSnapshot::default();
        for (_, c) in &self.workers {
            sum.add(&c.subscribers.get(id)?);
        }
        Some(sum)
    }

    /// Policy rule slot `slot`'s counts summed over the workers.
    pub fn rule(&self, slot: u16) -> Option<RuleSnapshot> {
        let mut sum = RuleSnapshot::default();
        for (_, c) in &self.workers {
            sum.add(&c.rules.get(slot)?);
        }
        Some(sum)
    }

    pub fn port_stats(&self) -> Vec<(String, PortStats, LinkState)> {
        self.ports
            .iter()
            .map(|p| (p.name().to_owned(), p.stats(), p.link()))
            .collect()
    }

    /// Applies a batch of table changes on every worker without stopping
    /// any (router mode): published once, visible to all workers when it
    /// returns. Ops that could not be applied are in
    /// `tables().rejected()`.
    pub fn commit(&mut self, ops: &[TableOp]) -> Result<PublishStats, CommitError> {
        self.commit_within(ops, None)
    }

    /// [`Running::commit`] that gives up waiting for the workers after
    /// `timeout` (`None`: no limit) with [`CommitError::Stalled`], which
    /// says whether the batch was published. What the control thread uses
    /// for requests, so that a wedged worker cannot wedge it too.
    pub fn commit_within(
        &mut self,
        ops: &[TableOp],
        timeout: Option<Duration>,
    ) -> Result<PublishStats, CommitError> {
        if cfg!(feature = "static-tables") {
            return Err(CommitError::StaticBuild);
        }
        let res = match (self.publisher.as_mut(), timeout) {
            (Some(p), Some(t)) => p.commit_timeout(ops, t),
            (Some(p), None) => p.commit(ops),
            (None, _) => Err(CommitError::NoTables),
        };
        let s = &mut self.publications;
        match &res {
            Ok(st) => {
                s.commits += 1;
                s.ops += st.ops as u64;
                s.last_visible_after = st.quiesced_after;
                s.max_visible_after = s.max_visible_after.max(st.quiesced_after);
                s.last_elapsed = st.elapsed;
            }
            Err(_) => s.failed += 1,
        }
        res
    }

    /// Publishes `ops` without waiting for the workers to pass a quiescent
    /// point ([`Publisher::publish`]): the next commit, or
    /// [`Running::settled`], waits. Counted as a commit.
    pub fn publish(&mut self, ops: &[TableOp]) -> Result<u64, CommitError> {
        if cfg!(feature = "static-tables") {
            return Err(CommitError::StaticBuild);
        }
        let res = match self.publisher.as_mut() {
            Some(p) => p.publish(ops),
            None => Err(CommitError::NoTables),
        };
        let s = &mut self.publications;
        match &res {
            Ok(_) => {
                s.commits += 1;
                s.ops += ops.len() as u64;
            }
            Err(_) => s.failed += 1,
        }
        res
    }

    /// Whether every worker uses the tables last published, finishing the
    /// pending replay if they do; never waits.
    pub fn settled(&mut self) -> bool {
        match self.publisher.as_mut() {
            Some(p) => p.is_settled() || p.settle(Some(Duration::ZERO)).is_ok(),
            None => true,
        }
    }

    /// The generation of the tables the workers use now (0 at start, one
    /// more per commit).
    pub fn generation(&self) -> u64 {
        self.publisher.as_ref().map_or(0, |p| p.generation())
    }

    /// The packet trace the workers feed (router mode).
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Table publication counters since start.
    pub fn publication_stats(&self) -> PublicationStats {
        self.publications
    }

    /// The tables the workers use now (router mode).
    pub fn tables(&self) -> Option<&Tables> {
        self.publisher.as_ref().map(|p| p.active())
    }

    pub fn port_macs(&self) -> Vec<(String, [u8; 6])> {
        self.ports
            .iter()
            .map(|p| (p.name().to_owned(), p.mac()))
            .collect()
    }

    /// Mbufs currently handed out from all pools.
    pub fn mbufs_in_use(&self) -> u64 {
        self.pools.values().map(|p| u64::from(p.in_use())).sum()
    }

    /// Stops workers, closes ports, checks the pools, cleans up EAL.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.teardown()
    }

    fn teardown(&mut self) -> ShutdownReport {
        let Some(eal) = self.eal.take() else {
            return ShutdownReport {
                mbufs_total: 0,
                mbufs_missing: 0,
                cores: Vec::new(),
                latency: None,
            };
        };
        self.stop.store(true, Ordering::Relaxed);
        for (lcore, _) in &self.workers {
            eal.wait(*lcore);
        }
        let mut cores = Vec::new();
        let mut latency: Option<Histogram<u64>> = None;
        while let Ok(r) = self.reports.try_recv() {
            cores.push((r.lcore, r.counters));
            if let Some(h) = r.latency {
                match latency.as_mut() {
                    Some(acc) => {
                        let _ = acc.add(&h);
                    }
                    None => latency = Some(h),
                }
            }
        }
        cores.sort_by_key(|(l, _)| *l);
        // What the workers punted and the control thread did not take yet
        // goes back to the pool; then the taps close like the ports.
        if let Some(h) = self.host.take() {
            for t in h.close() {
                t.close();
            }
        }
        for p in self.ports.drain(..) {
            p.close();
        }
        let pools = std::mem::take(&mut self.pools);
        let mbufs_total = pools.values().map(|p| u64::from(p.size())).sum();
        let mbufs_missing = pools.values().map(|p| u64::from(p.in_use())).sum();
        drop(pools);
        eal.cleanup();
        ShutdownReport {
            mbufs_total,
            mbufs_missing,
            cores,
            latency,
        }
    }
}

/// Dropping a running data plane (an early return, a panic unwinding the
/// main thread) still stops the workers before EAL goes away; otherwise
/// `rte_eal_cleanup` would wait for lcores that never return.
impl Drop for Running {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::IdlePolicy;

    fn port(rxq: u16) -> PortSpec {
        PortSpec {
            dpdk_name: "x".into(),
            rx_queues: rxq,
            mtu: None,
            peer: 0,
            host: None,
        }
    }

    #[test]
    fn plan_spreads_every_queue_once() {
        let ports = vec![port(2), port(1), port(3)];
        let plan = plan_queues(&ports, 2);
        let mut all: Vec<_> = plan.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, vec![(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]);
        assert_eq!(plan[0].len(), 3);
        assert_eq!(plan[1].len(), 3);
    }

    #[test]
    fn pool_size_is_power_of_two_minus_one_and_covers_rings() {
        let spec = DataplaneSpec {
            eal_args: vec![],
            workers: vec![1, 2],
            ports: vec![port(4), port(4)],
            mode: ForwardMode::Io,
            mbufs: None,
            mbuf_cache: 256,
            rx_desc: 1024,
            tx_desc: 1024,
            idle: IdlePolicy { max_sleep_us: 0 },
            latency_every: None,
            subscribers: 0,
        };
        let n = default_pool_size(&spec, &[0, 1], 256);
        assert_eq!((n + 1).count_ones(), 1);
        assert!(n >= 2 * 4 * 1024 + 2 * 2 * 1024);
    }
}
