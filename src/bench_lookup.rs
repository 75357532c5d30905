//! `hdvrf bench lookup`: our DIR-24-8 table against DPDK's `rte_lpm` on the
//! same routes and keys in the same run: build time, bytes, and bulk
//! lookups per second (32 keys a call, as a burst), interleaved rounds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use control::eal_args::Hugepages;
use dataplane::dpdk::{Eal, RteLpm};
use dataplane::lpm::{Dir24Lpm, NO_ROUTE};

use crate::bench::median;
use crate::log::say;

#[derive(Args, Debug)]
pub struct LookupArgs {
    /// Routes, one `a.b.c.d/len nexthop` a line (scripts/gen-routes).
    #[arg(long)]
    routes: PathBuf,
    /// Keys, one address a line.
    #[arg(long)]
    keys: PathBuf,
    /// Timed rounds, each timing both tables in alternating order; the
    /// ratio is the median of per-round ratios (the machine is shared and
    /// noisy: many short rounds beat a few long ones).
    #[arg(long, default_value_t = 11)]
    rounds: u32,
    /// Passes over the keys per timed round.
    #[arg(long, default_value_t = 1)]
    passes: u32,
    /// Keys per lookup call (a burst).
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// The lcore to run on.
    #[arg(long, default_value_t = 1)]
    lcore: u32,
    /// auto, on or off: huge pages for rte_lpm's DPDK memory (ours uses
    /// transparent huge pages either way).
    #[arg(long, default_value = "auto")]
    hugepages: String,
}

fn parse_addr(s: &str) -> Option<u32> {
    s.parse::<std::net::Ipv4Addr>().ok().map(u32::from)
}

pub(crate) fn read_routes(path: &Path) -> Result<Vec<(u32, u8, u32)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            anyhow!(
                "{}:{}: expected `a.b.c.d/len nexthop`, got {line:?}",
                path.display(),
                i + 1
            )
        };
        let (pfx, nh) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let (a, l) = pfx.split_once('/').ok_or_else(bad)?;
        let a = parse_addr(a).ok_or_else(bad)?;
        let l: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
        let nh: u32 = nh
            .trim()
            .parse()
            .ok()
            .filter(|n| *n < 1 << 24)
            .ok_or_else(bad)?;
        out.push((a, l, nh));
    }
    Ok(out)
}

fn read_keys(path: &Path) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_addr(l.trim())
                .ok_or_else(|| anyhow!("{}:{}: not an IPv4 address: {l:?}", path.display(), i + 1))
        })
        .collect()
}

fn time_lookups(
    keys: &[u32],
    out: &mut [u32],
    passes: u32,
    burst: usize,
    f: impl Fn(&[u32], &mut [u32]),
) -> f64 {
    let t0 = Instant::now();
    for _ in 0..passes {
        for (k, o) in keys.chunks(burst).zip(out.chunks_mut(burst)) {
            f(k, o);
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    std::hint::black_box(&out);
    (keys.len() as f64 * f64::from(passes)) / dt / 1e6
}

pub fn bench_lookup(a: &LookupArgs) -> Result<ExitCode> {
    let routes = read_routes(&a.routes)?;
    let keys = read_keys(&a.keys)?;
    if routes.is_empty() || keys.is_empty() {
        bail!("no routes or no keys");
    }
    let mut ext: Vec<u32> = routes
        .iter()
        .filter(|r| r.1 > 24)
        .map(|r| r.0 >> 8)
        .collect();
    ext.sort_unstable();
    ext.dedup();
    let groups = ext.len() as u32 + 64;

    let huge = match a.hugepages.as_str() {
        "on" => true,
        "off" => false,
        _ => Hugepages::probe().usable(),
    };
    let mut eal_args = vec![
        "-l".to_owned(),
        a.lcore.to_string(),
        "--no-pci".to_owned(),
        "--log-level=*:error".to_owned(),
    ];
    if huge {
        eal_args.push("--in-memory".to_owned());
    } else {
        eal_args.extend(["--no-huge", "--no-shconf", "-m", "1024"].map(str::to_owned));
    }
    let eal = Eal::init(&eal_args)?;

    let t0 = Instant::now();
    let mut ours = Dir24Lpm::new()?;
    for &(p, l, nh) in &routes {
        ours.add(p, l, nh)?;
    }
    let ours_build = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let mut theirs = RteLpm::create(&eal, "bench_lpm", routes.len() as u32 + 16, groups)?;
    for &(p, l, nh) in &routes {
        if !theirs.add(p, l, nh) {
            bail!("rte_lpm refused {}/{l}", std::net::Ipv4Addr::from(p));
        }
    }
    let theirs_build = t0.elapsed().as_secs_f64();

    // Both must give the same answer for every key before timing means
    // anything.
    let mut r1 = vec![0u32; keys.len()];
    let mut r2 = vec![0u32; keys.len()];
    ours.lookup_bulk(&keys, &mut r1);
    theirs.lookup_bulk(&keys, &mut r2);
    let wrong = r1.iter().zip(&r2).filter(|(x, y)| x != y).count();
    if wrong != 0 {
        bail!("{wrong} of {} keys differ between the tables", keys.len());
    }
    let misses = r1.iter().filter(|&&x| x == NO_ROUTE).count();

    say!(
        "lookup: {} routes ({} groups for > /24), {} keys ({} without route), {} rounds x {} passes, {}",
        routes.len(),
        ours.groups_in_use(),
        keys.len(),
        misses,
        a.rounds,
        a.passes,
        if huge { "hugepages" } else { "no-huge (ours: THP)" }
    );
    let mut ratios = Vec::new();
    let (mut m_ours, mut m_theirs) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        let run_ours = |out: &mut [u32]| {
            time_lookups(&keys, out, a.passes, a.burst.max(1), |k, o| {
                ours.lookup_bulk(k, o)
            })
        };
        let run_theirs = |out: &mut [u32]| {
            time_lookups(&keys, out, a.passes, a.burst.max(1), |k, o| {
                theirs.lookup_bulk(k, o)
            })
        };
        let (x, y) = if round % 2 == 0 {
            let x = run_ours(&mut r1);
            (x, run_theirs(&mut r2))
        } else {
            let y = run_theirs(&mut r2);
            (run_ours(&mut r1), y)
        };
        say!(
            "round {}: ours {x:8.2} Mlookups/s  rte_lpm {y:8.2} Mlookups/s  ratio {:.3}",
            round + 1,
            x / y
        );
        ratios.push(x / y);
        m_ours.push(x);
        m_theirs.push(y);
    }
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    say!(
        "ours:    build {:.3} s, {:.2} Mlookups/s (median), {:.1} MiB",
        ours_build,
        median(&mut m_ours),
        mib(ours.memory_bytes())
    );
    say!(
        "rte_lpm: build {:.3} s, {:.2} Mlookups/s (median), {:.1} MiB",
        theirs_build,
        median(&mut m_theirs),
        mib(theirs.memory_bytes())
    );
    drop(theirs);
    eal.cleanup();
    say!(
        "lookup_ratio={:.3} build_ratio={:.1}",
        median(&mut ratios),
        theirs_build / ours_build
    );
    Ok(ExitCode::SUCCESS)
}
