//! `hdvrf bench`: testpmd-style throughput. A pcap is replayed forever by
//! `net_pcap` (`infinite_rx=1`) through the forwarding mode to `net_null`;
//! both ports are polled by one worker, as testpmd's paired topology does,
//! so `scripts/bench-forward` compares like with like.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use control::config;
use control::eal_args::{self, Hugepages};
use dataplane::dpdk::tsc_hz;
use dataplane::topology::{self, Path as TopoPath};
use dataplane::ForwardMode;

use crate::churn::Churn;
use crate::log::say;
use dataplane::publish::PublishStats;
use dataplane::tables::{RouteTable, TableOp};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Packets to replay (pcap file).
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// What runs between rx and tx: io, macswap (testpmd's modes), or the
    /// router pipeline on a fixed topology: upstream, downstream, p-swap
    /// (pcaps from `hdvrf bench pcap`).
    #[arg(long, default_value = "io")]
    mode: String,
    /// Subscribers in the router topology (host routes, anti-spoofing).
    #[arg(long, default_value_t = 512)]
    clients: u32,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Main lcore and the one worker lcore.
    #[arg(long, default_value = "0,1")]
    lcores: String,
    /// auto, on or off (as dataplane.hugepages).
    #[arg(long, default_value = "auto")]
    hugepages: String,
    /// Memory in MB when running without hugepages.
    #[arg(long, default_value_t = 512)]
    memory_mb: u32,
    /// Mbufs in the pool (testpmd: --total-num-mbufs).
    #[arg(long, default_value_t = 8191)]
    mbufs: u32,
    /// Record the latency of one burst in this many (power of two).
    #[arg(long, default_value_t = 64)]
    latency_every: u32,
    /// Upstream mode: routes (`a.b.c.d/len nexthop` lines, as from
    /// scripts/gen-routes) loaded into the running router's upstream table
    /// in one commit; the time until every worker sees them is reported.
    /// Next hops map onto the topology's hub paths.
    #[arg(long)]
    routes: Option<PathBuf>,
    /// Upstream mode: route updates per second, applied in every other
    /// measured second (the others are the reference without updates).
    #[arg(long, default_value_t = 0)]
    churn: u32,
}

/// Route commits while measuring: how many, and how long each took to be
/// visible on every worker.
#[derive(Default)]
struct CommitLog {
    ops: u64,
    visible_after: Vec<f64>,
    busy: f64,
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn bench(a: &BenchArgs) -> Result<ExitCode> {
    let pcap = a
        .pcap
        .as_ref()
        .ok_or_else(|| anyhow!("--pcap FILE is required (or use `hdvrf bench lookup`)"))?;
    let pcap = pcap
        .canonicalize()
        .map_err(|e| anyhow!("--pcap {}: {e}", pcap.display()))?;
    let pcap_s = pcap
        .to_str()
        .ok_or_else(|| anyhow!("--pcap: path is not UTF-8"))?;
    if pcap_s.contains(',') {
        bail!("--pcap {pcap_s}: a comma in the path would split the device arguments");
    }
    let path: Option<TopoPath> = match a.mode.as_str() {
        "io" | "macswap" => None,
        m => Some(m.parse().map_err(|e: String| anyhow!("--mode: {e}"))?),
    };
    let (main, worker) = a
        .lcores
        .split_once(',')
        .and_then(|(m, w)| Some((m.trim().parse::<u32>().ok()?, w.trim().parse::<u32>().ok()?)))
        .ok_or_else(|| anyhow!("--lcores {:?}: expected MAIN,WORKER (e.g. 0,1)", a.lcores))?;
    let toml = format!(
        r#"[dataplane]
main_lcore = {main}
workers = [{worker}]
forward_mode = "{mode}"
hugepages = "{huge}"
memory_mb = {mem}
mbufs = {mbufs}
idle_sleep_max_us = 0
stats_interval_ms = 0

[[port]]
name = "pcap"
device = "net_pcap0,rx_pcap={pcap_s},infinite_rx=1"

[[port]]
name = "null"
device = "net_null0,no-rx=1"
"#,
        // Router modes take their tables from the bench topology, not
        // from this generated config.
        mode = if path.is_some() {
            "io"
        } else {
            a.mode.as_str()
        },
        huge = a.hugepages,
        mem = a.memory_mb,
        mbufs = a.mbufs,
    );
    let loaded = config::parse(Path::new("(bench)"), &toml).map_err(|e| anyhow!("{e}"))?;
    let args = eal_args::build(&loaded, Hugepages::probe())?;
    let mut spec = crate::run::spec_for(&loaded, args);
    spec.latency_every = (a.latency_every > 0).then_some(a.latency_every);
    let tables = match path {
        Some(p) => {
            spec.mode = ForwardMode::Router;
            Some(topology::tables(p, a.clients)?)
        }
        None => None,
    };
    if (a.routes.is_some() || a.churn > 0) && path != Some(TopoPath::Upstream) {
        bail!("--routes and --churn need --mode upstream");
    }
    let term = crate::run::term_flag()?;
    let mut running = crate::run::start(&loaded, &spec, tables)?;
    let memory = if spec.eal_args.iter().any(|x| x == "--no-huge") {
        "no-huge"
    } else {
        "hugepages"
    };
    say!(
        "bench: mode={} pcap={} lcores={main},{worker} memory={memory}",
        spec.mode,
        pcap_s
    );

    let mut routes = Vec::new();
    if let Some(file) = &a.routes {
        routes = crate::bench_lookup::read_routes(file)?;
        for r in &mut routes {
            r.2 = topology::hub_next_hop(r.2 % topology::HUB_PATHS, a.clients);
        }
        let ops = routes
            .iter()
            .map(|&(prefix, len, next_hop)| TableOp::AddRoute {
                service: 0,
                table: RouteTable::Upstream,
                prefix,
                len,
                next_hop,
            })
            .collect::<Vec<_>>();
        let st = commit(&mut running, &ops)?;
        say!(
            "bench: loaded {} routes into the running upstream table: visible on every worker after {:.3} s, both copies done after {:.3} s",
            ops.len(),
            st.quiesced_after.as_secs_f64(),
            st.elapsed.as_secs_f64()
        );
        say!("load_s={:.3}", st.quiesced_after.as_secs_f64());
    }
    let mut churn = (a.churn > 0).then(|| Churn::new(&routes, a.clients, 0x5eed));
    drop(routes);
    let mut log = CommitLog::default();
    let mut ops = Vec::new();

    let tx_of = |r: &dataplane::Running| crate::run::sum(&r.cores()).tx_packets;
    let mut samples = Vec::new();
    let mut churn_samples = Vec::new();
    let total = a.warmup + a.seconds;
    let mut prev = tx_of(&running);
    let mut t_prev = Instant::now();
    for s in 1..=total {
        let until = t_prev + Duration::from_secs(1);
        // With --churn, every other measured second changes routes.
        let churning = s > a.warmup && (s - a.warmup) % 2 == 0 && churn.is_some();
        let mut done = 0u64;
        while Instant::now() < until {
            if term.load(Ordering::Relaxed) {
                break;
            }
            if let (true, Some(c)) = (churning, churn.as_mut()) {
                // Paced to the rate: what is due by now, in one batch.
                let due = (t_prev.elapsed().as_secs_f64() * f64::from(a.churn)) as u64;
                if due > done {
                    ops.clear();
                    c.ops((due - done) as usize, &mut ops);
                    let st = commit(&mut running, &ops)?;
                    log.ops += ops.len() as u64;
                    log.visible_after.push(st.quiesced_after.as_secs_f64());
                    log.busy += st.elapsed.as_secs_f64();
                    done = due;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if term.load(Ordering::Relaxed) {
            break;
        }
        let now = tx_of(&running);
        let t_now = Instant::now();
        let rate = (now - prev) as f64 / (t_now - t_prev).as_secs_f64() / 1e6;
        prev = now;
        t_prev = t_now;
        let tag = if s <= a.warmup {
            " (warm-up)"
        } else if churning {
            " (route churn)"
        } else {
            ""
        };
        say!("bench: {s:>3}s {rate:8.3} Mpps{tag}");
        if churning {
            churn_samples.push(rate);
        } else if s > a.warmup {
            samples.push(rate);
        }
    }
    let hz = tsc_hz() as f64;
    let report = running.shutdown();
    let total = crate::run::sum(&report.cores);
    if path.is_some() {
        let outcomes = crate::run::outcome_summary(&total);
        say!("bench: outcomes {outcomes}");
    }
    if report.mbufs_missing != 0 {
        bail!(
            "mbufs: {} of {} not back in the pool after shutdown",
            report.mbufs_missing,
            report.mbufs_total
        );
    }
    if samples.is_empty() {
        bail!("interrupted before any measured second");
    }
    if churn.is_some() {
        if churn_samples.is_empty() {
            bail!("--churn: no second with route updates was measured (use --seconds 2 or more)");
        }
        // rx = tx + counted drops, and in this topology nothing may drop.
        let lost =
            i128::from(total.rx_packets) - i128::from(total.tx_packets) - i128::from(total.drops());
        let q = median(&mut samples.clone());
        let c = median(&mut churn_samples);
        let v = &mut log.visible_after;
        let vis = |q: f64, v: &[f64]| v[((v.len() - 1) as f64 * q) as usize] * 1e3;
        v.sort_by(|a, b| a.total_cmp(b));
        if !v.is_empty() {
            say!(
                "bench: {} route updates in {} commits ({:.1} % of the updating seconds spent committing); visible on every worker after ms p50={:.3} p99={:.3} max={:.3}",
                log.ops,
                v.len(),
                log.busy * 100.0 / churn_samples.len() as f64,
                vis(0.5, v),
                vis(0.99, v),
                vis(1.0, v)
            );
        }
        say!(
            "bench: Mpps median without updates {q:.3}, with {} updates/s {c:.3}",
            a.churn
        );
        say!(
            "churn_ratio={:.3} lost={lost} unexpected_drops={}",
            c / q,
            total.drops()
        );
    }
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(0.0, f64::max);
    let med = median(&mut samples);
    say!(
        "bench: mode={} Mpps min={min:.3} median={med:.3} max={max:.3}",
        a.mode
    );
    if let Some(h) = report.latency {
        let ns = |q: f64| h.value_at_quantile(q) as f64 * 1e9 / hz;
        say!(
            "bench: burst latency ns p50={:.0} p90={:.0} p99={:.0} p99.9={:.0} max={:.0} (bursts sampled {})",
            ns(0.5),
            ns(0.9),
            ns(0.99),
            ns(0.999),
            h.max() as f64 * 1e9 / hz,
            h.len()
        );
    }
    say!("mpps_median={med:.3}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PcapArgs {
    /// upstream, downstream or p-swap.
    #[arg(long)]
    path: String,
    /// Output pcap file.
    #[arg(long)]
    out: PathBuf,
    /// Frames to write.
    #[arg(long, default_value_t = 512)]
    count: u32,
    /// Subscribers (must match `hdvrf bench --clients`).
    #[arg(long, default_value_t = 512)]
    clients: u32,
}

/// Commits `ops` and insists that every one applied: the bench's changes
/// are all valid, so a rejection is a bug worth stopping for.
fn commit(running: &mut dataplane::Running, ops: &[TableOp]) -> Result<PublishStats> {
    let st = running
        .commit(ops)
        .map_err(|e| anyhow!("route commit: {e}"))?;
    if let Some((op, why)) = running.tables().and_then(|t| t.rejected().first()) {
        bail!("route commit: {op:?} rejected: {why}");
    }
    Ok(st)
}

/// Writes the bench topology's traffic for one path as a pcap.
pub fn write_pcap(a: &PcapArgs) -> Result<ExitCode> {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let path: TopoPath = a.path.parse().map_err(|e: String| anyhow!("--path: {e}"))?;
    let file = std::fs::File::create(&a.out).map_err(|e| anyhow!("{}: {e}", a.out.display()))?;
    let mut w = PcapWriter::new(file).map_err(|e| anyhow!("{}: {e}", a.out.display()))?;
    for i in 0..a.count {
        let f = topology::frame(path, i, a.clients);
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(u64::from(i)),
            f.len() as u32,
            &f,
        ))
        .map_err(|e| anyhow!("{}: {e}", a.out.display()))?;
    }
    say!(
        "bench: wrote {} {} frames to {}",
        a.count,
        a.path,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
