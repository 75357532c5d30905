//! `hdvrf`: the command line. `run` brings the data plane up from a
//! configuration file, `check` validates one, `bench` measures forwarding
//! testpmd-style.

mod bench;
mod bench_lookup;
mod churn;
mod ctl;
mod log;
mod metrics;
mod mgmt;
mod plane;
mod relay;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

fn long_version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (git ",
        env!("HDVRF_GIT_DESCRIBE"),
        ", built against DPDK ",
        env!("HDVRF_DPDK_BUILD_VERSION"),
        ")"
    )
}

#[derive(Parser)]
#[command(name = "hdvrf", version = long_version(), about = "DPDK provider-edge router for MPLS VPNs with half-duplex VRFs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring up ports and workers from a configuration file and forward
    /// until SIGINT or SIGTERM.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Stop by itself after this many seconds (tests, demos).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Validate a configuration file; print every error with its place.
    Check { config: PathBuf },
    /// Talk to a running hdvrf: show state, clear counters, change routes.
    Ctl(ctl::CtlArgs),
    /// testpmd-style throughput: a pcap replayed forever through the
    /// forwarding mode to net_null; `bench lookup` for the route table.
    Bench(Box<BenchCmd>),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCmd {
    #[command(subcommand)]
    sub: Option<BenchSub>,
    #[command(flatten)]
    forward: bench::BenchArgs,
}

#[derive(Subcommand)]
enum BenchSub {
    /// Our DIR-24-8 table against DPDK's rte_lpm: build, bytes, lookups/s.
    Lookup(bench_lookup::LookupArgs),
    /// Write the router bench topology's traffic for one path as a pcap.
    Pcap(bench::PcapArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run { config, duration } => run::run(&config, duration),
        Cmd::Check { config } => run::check(&config),
        Cmd::Ctl(args) => ctl::ctl(args),
        Cmd::Bench(b) => match *b {
            BenchCmd {
                sub: Some(BenchSub::Lookup(args)),
                ..
            } => bench_lookup::bench_lookup(&args),
            BenchCmd {
                sub: Some(BenchSub::Pcap(args)),
                ..
            } => bench::write_pcap(&args),
            BenchCmd { sub: None, forward } => bench::bench(&forward),
        },
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            // One line per error, no backtrace: operators read this.
            for line in format!("{e:#}").lines() {
                eprintln!("hdvrf: error: {line}");
            }
            ExitCode::from(2)
        }
    }
}
