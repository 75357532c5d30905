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

use crate::run::say;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Packets to replay (pcap file).
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Forwarding mode: io or macswap.
    #[arg(long, default_value = "io")]
    mode: String,
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
}

fn median(v: &mut [f64]) -> f64 {
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
        mode = a.mode,
        huge = a.hugepages,
        mem = a.memory_mb,
        mbufs = a.mbufs,
    );
    let loaded = config::parse(Path::new("(bench)"), &toml).map_err(|e| anyhow!("{e}"))?;
    let args = eal_args::build(&loaded, Hugepages::probe())?;
    let mut spec = crate::run::spec_for(&loaded, args);
    spec.latency_every = (a.latency_every > 0).then_some(a.latency_every);
    let term = crate::run::term_flag()?;
    let running = crate::run::start(&loaded, &spec)?;
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

    let tx_of = |r: &dataplane::Running| crate::run::sum(&r.cores()).tx_packets;
    let mut samples = Vec::new();
    let total = a.warmup + a.seconds;
    let mut prev = tx_of(&running);
    let mut t_prev = Instant::now();
    for s in 1..=total {
        let until = t_prev + Duration::from_secs(1);
        while Instant::now() < until {
            if term.load(Ordering::Relaxed) {
                break;
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
        let tag = if s <= a.warmup { " (warm-up)" } else { "" };
        say!("bench: {s:>3}s {rate:8.3} Mpps{tag}");
        if s > a.warmup {
            samples.push(rate);
        }
    }
    let hz = tsc_hz() as f64;
    let report = running.shutdown();
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
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(0.0, f64::max);
    let med = median(&mut samples);
    say!(
        "bench: mode={} Mpps min={min:.3} median={med:.3} max={max:.3}",
        spec.mode
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
