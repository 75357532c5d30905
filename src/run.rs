//! `hdvrf run` and `hdvrf check`.

use std::cell::RefCell;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log::say;
use anyhow::{anyhow, Context, Result};
use control::config::{self, LoadError, Loaded};
use control::eal_args::{self, Hugepages};
use dataplane::{CoreSnapshot, DataplaneSpec, IdlePolicy, PortSpec, Running, StartError};

use crate::mgmt::Control;

pub fn check(path: &Path) -> Result<ExitCode> {
    let loaded = load(path)?;
    eal_args::build(&loaded, Hugepages::probe())?;
    say!(
        "{}: ok ({} ports, {} workers)",
        path.display(),
        loaded.config.ports.len(),
        loaded.config.dataplane.workers.get_ref().len()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn load(path: &Path) -> Result<Loaded> {
    config::load(path).map_err(|e| match e {
        LoadError::Invalid(list) => anyhow!(
            "{}",
            list.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
        other => anyhow!(other),
    })
}

/// The data plane's spec for a validated configuration.
pub fn spec_for(loaded: &Loaded, eal_args: Vec<String>) -> DataplaneSpec {
    let dp = &loaded.config.dataplane;
    DataplaneSpec {
        eal_args,
        workers: dp.workers.get_ref().clone(),
        ports: loaded
            .config
            .ports
            .iter()
            .zip(&loaded.devices)
            .zip(&loaded.peers)
            .zip(eal_args::host_specs(loaded))
            .map(|(((p, d), peer), host)| PortSpec {
                dpdk_name: d.dpdk_name.clone(),
                rx_queues: *p.rx_queues.get_ref(),
                mtu: p.mtu.as_ref().map(|m| *m.get_ref()),
                peer: *peer,
                host,
            })
            .collect(),
        mode: dp.forward_mode.get_ref().parse().expect("validated"),
        mbufs: (dp.mbufs > 0).then_some(dp.mbufs),
        mbuf_cache: dp.mbuf_cache,
        rx_desc: dp.rx_desc,
        tx_desc: dp.tx_desc,
        idle: IdlePolicy {
            max_sleep_us: dp.idle_sleep_max_us,
        },
        latency_every: None,
        // Configured next hops, then one per session (ids of ended
        // sessions are reused).
        subscribers: loaded.config.next_hops.len() + loaded.config.control.max_sessions() as usize,
    }
}

/// Starts the data plane, turning start errors into messages that name the
/// configuration field they come from.
pub fn start(
    loaded: &Loaded,
    spec: &DataplaneSpec,
    tables: Option<dataplane::tables::Tables>,
) -> Result<Running> {
    Running::start(spec, tables).map_err(|e| match e {
        StartError::Port { port, source } => {
            let p = &loaded.config.ports[port];
            anyhow!(
                "{}",
                loaded.error_at(
                    p.device.span(),
                    &format!("port[{port}].device"),
                    format!("{:?}: {source}", p.device.get_ref())
                )
            )
        }
        StartError::Lcores { .. } => anyhow!(
            "{}",
            loaded.error_at(
                loaded.config.dataplane.workers.span(),
                "dataplane.workers",
                e.to_string()
            )
        ),
        other => anyhow!(other),
    })
}

/// Installs SIGINT/SIGTERM handlers that set the returned flag.
pub fn term_flag() -> Result<Arc<AtomicBool>> {
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone()).context("installing signal handler")?;
    }
    Ok(term)
}

/// A packet rate for people: Mpps, kpps or pps.
pub fn fmt_rate(pkts: u64, dt: Duration) -> String {
    let pps = pkts as f64 / dt.as_secs_f64().max(1e-9);
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{pps:.0} pps")
    }
}

pub fn run(path: &Path, duration: Option<f64>) -> Result<ExitCode> {
    let loaded = load(path)?;
    let huge = Hugepages::probe();
    let args = eal_args::build(&loaded, huge)?;
    let spec = spec_for(&loaded, args);
    // Router mode: the forwarding state from the configuration. Port MACs
    // are not known before the devices start; the runtime fills them in.
    let tables = if spec.mode == dataplane::ForwardMode::Router {
        let macs = vec![[0u8; 6]; loaded.config.ports.len()];
        Some(control::router::build_tables(&loaded, &macs).map_err(|e| anyhow!("{e}"))?)
    } else {
        None
    };
    let term = term_flag()?;
    let running = start(&loaded, &spec, tables)?;
    let memory = if spec.eal_args.iter().any(|a| a == "--no-huge") {
        "no hugepages"
    } else {
        "hugepages"
    };
    say!(
        "hdvrf: forwarding ({} mode, {} ports, workers on lcores {:?}, {})",
        spec.mode,
        spec.ports.len(),
        spec.workers,
        memory
    );
    for ((name, mac), p) in running.port_macs().iter().zip(&loaded.config.ports) {
        say!(
            "hdvrf: port {} = {} mac {}",
            p.name.get_ref(),
            name,
            config::fmt_mac(mac)
        );
    }
    // The control thread is this one, on the main lcore (EAL pinned it
    // there; no worker uses it): a single-threaded tokio runtime serves
    // the management socket between the stats and stop checks.
    let socket = match &loaded.config.control.socket {
        Some(s) if s.get_ref().is_empty() => None,
        Some(s) => Some((std::path::PathBuf::from(s.get_ref()), true)),
        None => Some((config::DEFAULT_CONTROL_SOCKET.into(), false)),
    };
    // The host path's kernel side: each host tap gets its port's address.
    let ifaces: Vec<Option<String>> = (0..loaded.config.ports.len())
        .map(|i| running.host().and_then(|h| h.iface(i)).map(str::to_owned))
        .collect();
    {
        for (i, p) in loaded.config.ports.iter().enumerate() {
            let (Some(iface), Some(a)) = (&ifaces[i], &p.address) else {
                continue;
            };
            let (addr, len) =
                config::parse_interface_address(a.get_ref()).map_err(|m| anyhow!("{m}"))?;
            if let Err(m) = control::host::configure_iface(iface, addr.into(), len) {
                running.shutdown();
                return Err(anyhow!(
                    "{}",
                    loaded.error_at(
                        a.span(),
                        &format!("port[{i}].address"),
                        format!("host tap {iface}: {m}")
                    )
                ));
            }
            say!(
                "hdvrf: port {} host tap {iface} {}",
                p.name.get_ref(),
                a.get_ref()
            );
        }
    }
    let port_macs: Vec<[u8; 6]> = running.port_macs().into_iter().map(|(_, m)| m).collect();
    let neighbors = control::neighbor::Neighbors::from_config(&loaded, &port_macs);
    let has_host = running.host().is_some();
    let names = control::mgmt::Names::from_config(&loaded.config);
    let devices = spec.ports.iter().map(|p| p.dpdk_name.clone()).collect();
    // What the file held, for `reload` to compare: its text, parsed again
    // only if a reload comes.
    let applied = control::engine::Applied::Text(loaded.source().to_owned());
    let mut control = Control::new(running, names, devices, path.to_owned(), applied);
    control.engine.set_from_config(&loaded.config);
    control.engine.neighbors = neighbors;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("control thread runtime")?;
    let mut bgp_pending: control::bgp::speaker::Pending = Vec::new();
    if spec.mode == dataplane::ForwardMode::Router {
        // The relay's sockets register with the runtime.
        let started = {
            let _rt = rt.enter();
            crate::relay::start(&loaded.config)
        };
        match started {
            Ok(r) => control.engine.relay = Some(r),
            Err(e) => {
                control.engine.running.0.shutdown();
                return Err(e);
            }
        }
        if let Some((speaker, pending)) =
            control::bgp::speaker::Speaker::from_config(&loaded.config)
        {
            // Before the journal: restored sessions are advertised once
            // the neighbours come up.
            control.engine.set_bgp(speaker);
            bgp_pending = pending;
        }
        if let Some(j) = &loaded.config.control.session_journal {
            let path = std::path::Path::new(j.get_ref());
            match control::journal::Journal::open(path, control::journal::unix_now()) {
                Ok((journal, found)) => {
                    if found.torn > 0 {
                        eprintln!(
                            "hdvrf: warning: session journal {}: the last line was cut short (a crash or a full disk mid-write): dropped",
                            path.display()
                        );
                    }
                    for b in &found.bad_lines {
                        eprintln!("hdvrf: warning: session journal: {b}: skipped");
                    }
                    if let Some(m) = &found.rewrite_failed {
                        eprintln!(
                            "hdvrf: warning: session journal: {m}: not compacted; appending to it as it is until it can be"
                        );
                    }
                    let back = control.engine.restore_sessions(&found.sessions);
                    if let Some(r) = control.engine.relay.as_mut() {
                        r.journal = Some(journal);
                    }
                    // Written again: restoring publishes each one anew.
                    say!(
                        "hdvrf: session journal {}: {back} sessions restored, {} expired while down",
                        path.display(),
                        found.expired
                    );
                }
                Err(m) => {
                    control.engine.running.0.shutdown();
                    return Err(anyhow!(
                        "{}",
                        loaded.error_at(j.span(), "control.session_journal", m)
                    ));
                }
            }
        }
    }
    let state = Rc::new(RefCell::new(Some(control)));
    let local = tokio::task::LocalSet::new();
    // BGP's sessions run on a thread of their own: their keepalives and
    // hold timers go on while the control thread waits for a commit or
    // builds a large reply. What they learn reaches the control thread
    // as events.
    let bgp_rt = if bgp_pending.is_empty() {
        None
    } else {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("hdvrf-bgp")
                .enable_all()
                .build()
                .context("BGP thread runtime")?,
        )
    };
    let mut bgp_tasks = Vec::new();
    let bound = local.block_on(&rt, async {
        // Metrics first: a configured address that is taken fails the
        // start before the socket file exists.
        let metrics = match &loaded.config.control.metrics {
            Some(m) if m.get_ref().is_empty() => None,
            Some(m) => Some((m.get_ref().as_str(), true)),
            None => Some((config::DEFAULT_METRICS, false)),
        };
        if let Some((addr, configured)) = metrics {
            let addr = addr
                .parse()
                .map_err(|e| anyhow!("control.metrics: {addr:?}: {e}"))?;
            if let Some(l) = crate::metrics::bind(addr, configured).await? {
                say!("hdvrf: metrics on http://{}/metrics", l.local_addr()?);
                tokio::task::spawn_local(crate::metrics::serve(l, state.clone()));
            }
        }
        let bound = match &socket {
            Some((path, configured)) => crate::mgmt::bind(path, *configured)?,
            None => None,
        };
        // Passive neighbours on one port share its listener.
        let mut inbound = match &bgp_rt {
            Some(b) => {
                let _rt = b.enter();
                let cfgs: Vec<_> = bgp_pending.iter().map(|(c, _)| c.clone()).collect();
                control::bgp::session::listen(&cfgs)
            }
            None => Vec::new(),
        }
        .into_iter();
        for (i, (cfg, cmds)) in std::mem::take(&mut bgp_pending).into_iter().enumerate() {
            let (out, mut events) = tokio::sync::mpsc::unbounded_channel();
            say!(
                "hdvrf: bgp: neighbor {} AS {} ({})",
                cfg.peer,
                cfg.remote_asn,
                if cfg.listen.is_some() {
                    "passive"
                } else {
                    "active"
                }
            );
            if let Some(b) = &bgp_rt {
                let inbound = inbound.next().unwrap_or(Ok(None));
                bgp_tasks.push(b.spawn(control::bgp::session::run_with(cfg, cmds, out, inbound)));
            }
            let state = state.clone();
            tokio::task::spawn_local(async move {
                while let Some(ev) = events.recv().await {
                    if let Some(c) = state.borrow_mut().as_mut() {
                        c.engine.bgp_event(i, ev, Instant::now());
                    }
                }
            });
        }
        if has_host
            || state
                .borrow()
                .as_ref()
                .is_some_and(|c| c.engine.relay.is_some())
        {
            tokio::task::spawn_local(host_path(state.clone()));
        }
        if let Some((listener, path)) = bound {
            say!("hdvrf: management socket {}", path.display());
            tokio::task::spawn_local(crate::mgmt::serve(listener, state.clone()));
            Ok::<_, anyhow::Error>(Some(path))
        } else {
            Ok(None)
        }
    });
    let bound = match bound {
        Ok(b) => b,
        Err(e) => {
            if let Some(c) = state.borrow_mut().take() {
                c.engine.running.0.shutdown();
            }
            return Err(e);
        }
    };
    let interval = Duration::from_millis(loaded.config.dataplane.stats_interval_ms);
    let started = Instant::now();
    local.block_on(&rt, async {
        let mut last = Instant::now();
        let mut prev = state
            .borrow()
            .as_ref()
            .map(|c| c.cores())
            .unwrap_or_default();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if term.load(Ordering::Relaxed) {
                break;
            }
            if duration.is_some_and(|d| started.elapsed().as_secs_f64() >= d) {
                break;
            }
            if !interval.is_zero() && last.elapsed() >= interval {
                let now = state
                    .borrow()
                    .as_ref()
                    .map(|c| c.cores())
                    .unwrap_or_default();
                let dt = last.elapsed();
                last = Instant::now();
                print_stats(&prev, &now, dt);
                prev = now;
            }
        }
    });
    // BGP neighbours get a Cease (RFC 4486) before the data plane stops.
    if let Some(b) = state.borrow().as_ref().and_then(|c| c.engine.bgp.as_ref()) {
        b.stop();
    }
    if !bgp_tasks.is_empty() {
        local.block_on(&rt, async {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                for t in bgp_tasks {
                    let _ = t.await;
                }
            })
            .await;
        });
    }
    // Requests still in flight get "shutting down"; the socket goes first
    // so no new client finds a dying router.
    if let Some(path) = &bound {
        let _ = std::fs::remove_file(path);
    }
    let running = {
        let Some(mut c) = state.borrow_mut().take() else {
            return Err(anyhow!("control state lost"));
        };
        // Appends are synced in batches while running; what is pending
        // is synced once here.
        if let Some(j) = c.engine.relay.as_mut().and_then(|r| r.journal.as_mut()) {
            if let Err(m) = j.flush() {
                eprintln!("hdvrf: error: session journal: {m}");
            }
        }
        // The rest of the control state goes here, before the shutdown.
        c.engine.running.0
    };
    drop(local);
    crate::log::flush();
    if let Some(b) = bgp_rt {
        b.shutdown_timeout(Duration::from_secs(1));
    }
    let ports = running.port_stats();
    let t0 = Instant::now();
    let report = running.shutdown();
    for ((name, st, link), p) in ports.iter().zip(&loaded.config.ports) {
        say!(
            "hdvrf: port {} ({name}, link {link:?}): rx {} tx {} missed {} rx-errors {} tx-errors {} no-mbuf {}",
            p.name.get_ref(),
            st.ipackets,
            st.opackets,
            st.imissed,
            st.ierrors,
            st.oerrors,
            st.rx_nombuf
        );
    }
    let took = t0.elapsed();
    let total: CoreSnapshot = sum(&report.cores);
    say!(
        "hdvrf: stopped in {} ms: rx {} tx {} drops {} (tx full {}, runt {})",
        took.as_millis(),
        total.rx_packets,
        total.tx_packets,
        total.drops(),
        total.tx_full_drops,
        total.runt_drops
    );
    if total.punt_drops + total.host_tx + total.host_tx_drops > 0 {
        say!(
            "hdvrf: host path: punt queue full {}, sent for the kernel {} (tx full {})",
            total.punt_drops,
            total.host_tx,
            total.host_tx_drops
        );
    }
    let outcomes = outcome_summary(&total);
    if !outcomes.is_empty() {
        say!("hdvrf: outcomes: {outcomes}");
    }
    if report.mbufs_missing != 0 {
        eprintln!(
            "hdvrf: error: mbufs: {} of {} not back in the pool after shutdown",
            report.mbufs_missing, report.mbufs_total
        );
        return Ok(ExitCode::from(3));
    }
    say!(
        "hdvrf: mbufs: {}/{} back in the pool",
        report.mbufs_total,
        report.mbufs_total
    );
    Ok(ExitCode::SUCCESS)
}

/// The host path on the control thread. While idle it is polled every
/// millisecond (tokio's timer granularity). For [`HOST_BUSY`] after a
/// frame moved, it is polled every few tens of microseconds instead, by a
/// short sleep of the thread: a DHCP exchange crosses it four times, and
/// waiting a timer tick at each crossing doubled a session's setup time.
/// The thread still sleeps between polls, so it leaves the CPU to the
/// address server and the clients on a shared core.
async fn host_path(state: Rc<RefCell<Option<Control>>>) {
    let mut active = Instant::now();
    loop {
        let now = Instant::now();
        let moved = match state.borrow_mut().as_mut() {
            Some(c) => c.host_tick(now),
            None => return,
        };
        crate::log::flush();
        if moved != 0 {
            active = now;
            tokio::task::yield_now().await;
        } else if now.duration_since(active) < HOST_BUSY {
            std::thread::sleep(HOST_BUSY_POLL);
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// How long the host path stays on fast polling after a frame moved.
const HOST_BUSY: Duration = Duration::from_millis(5);
/// The sleep between polls meanwhile (plus the kernel's timer slack,
/// 50 us by default).
const HOST_BUSY_POLL: Duration = Duration::from_micros(20);

pub fn sum(cores: &[(u32, CoreSnapshot)]) -> CoreSnapshot {
    let mut t = CoreSnapshot::default();
    for (_, c) in cores {
        t.add(c);
    }
    t
}

/// The non-zero per-outcome counters, `name=count` separated by spaces.
pub fn outcome_summary(c: &CoreSnapshot) -> String {
    dataplane::pipeline::Outcome::ALL
        .iter()
        .filter(|o| c.outcome(**o) != 0)
        .map(|o| format!("{}={}", o.name(), c.outcome(*o)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_stats(prev: &[(u32, CoreSnapshot)], now: &[(u32, CoreSnapshot)], dt: Duration) {
    let mut line = String::from("stats:");
    for ((l, a), (_, b)) in prev.iter().zip(now) {
        line.push_str(&format!(
            " core {l}: rx {} tx {} drop {} |",
            fmt_rate(b.rx_packets - a.rx_packets, dt),
            fmt_rate(b.tx_packets - a.tx_packets, dt),
            b.drops() - a.drops()
        ));
    }
    let t = sum(now);
    line.push_str(&format!(
        " total rx {} tx {} drop {}",
        t.rx_packets,
        t.tx_packets,
        t.drops()
    ));
    say!("{line}");
}
