//! hdvrf's TOML configuration: parsing with positions, validation, and the
//! errors an operator reads (`FILE:LINE:COL: field.path: what is wrong`).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dataplane: Dataplane,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortCfg>,
}

fn default_main_lcore() -> Spanned<u32> {
    Spanned::new(0..0, 0)
}
fn default_mode() -> Spanned<String> {
    Spanned::new(0..0, "io".to_owned())
}
fn default_hugepages() -> Spanned<String> {
    Spanned::new(0..0, "auto".to_owned())
}
fn default_memory_mb() -> u32 {
    512
}
fn default_mbuf_cache() -> u32 {
    256
}
fn default_desc() -> u16 {
    1024
}
fn default_idle() -> u32 {
    100
}
fn default_stats_ms() -> u64 {
    1000
}
fn default_rxq() -> Spanned<u16> {
    Spanned::new(0..0, 1)
}

/// `[dataplane]`: cores, memory, forwarding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// The lcore of the main (control) thread.
    #[serde(default = "default_main_lcore")]
    pub main_lcore: Spanned<u32>,
    /// Worker lcores (CPU ids), one poll loop each.
    pub workers: Spanned<Vec<u32>>,
    /// `io` or `macswap` until the HD-VRF pipeline exists.
    #[serde(default = "default_mode")]
    pub forward_mode: Spanned<String>,
    /// `auto` (use hugepages when mounted and reserved, else `--no-huge`),
    /// `on` (require them) or `off`.
    #[serde(default = "default_hugepages")]
    pub hugepages: Spanned<String>,
    /// Memory for `--no-huge` (`-m`).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Mbufs per pool; 0 or absent sizes pools from queues and cores.
    #[serde(default)]
    pub mbufs: u32,
    #[serde(default = "default_mbuf_cache")]
    pub mbuf_cache: u32,
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Idle back-off cap in microseconds; 0 polls without sleeping.
    #[serde(default = "default_idle")]
    pub idle_sleep_max_us: u32,
    /// Interval of the per-core stats line; 0 turns it off.
    #[serde(default = "default_stats_ms")]
    pub stats_interval_ms: u64,
    /// Extra EAL arguments, appended last.
    #[serde(default)]
    pub eal_args: Vec<String>,
}

/// `[[port]]`: one DPDK port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortCfg {
    pub name: Spanned<String>,
    /// A PCI address (`0000:01:00.0`) or a virtual device with its
    /// arguments (`net_tap0,iface=hd0`, `net_pcap0,rx_pcap=x.pcap`).
    pub device: Spanned<String>,
    #[serde(default = "default_rxq")]
    pub rx_queues: Spanned<u16>,
    pub mtu: Option<Spanned<u16>>,
    /// The port that gets what this one receives (io/macswap). Default:
    /// testpmd's paired topology (0<->1, 2<->3, a lone last port to itself).
    pub peer: Option<Spanned<String>>,
}

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Errors from [`load`]: the file could not be read, or is wrong in one or
/// more places.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
}

/// 1-based line and column of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

/// A port as validated, ready for the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// DPDK's name for the port (the vdev name, or the PCI address).
    pub dpdk_name: String,
    pub kind: DeviceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    Pci,
    /// A virtual device; `driver` is its name without the instance number.
    Vdev {
        driver: String,
    },
}

/// Classifies a `device` string. PCI addresses are `DDDD:BB:DD.F` or
/// `BB:DD.F` (hex); anything else is a vdev `name[,args]`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty device".into());
    }
    let name = s.split(',').next().unwrap_or("");
    if is_pci(name) {
        if name != s {
            // devargs on PCI devices are allowed by EAL (`-a BDF,args`).
        }
        let full = if name.matches(':').count() == 1 {
            format!("0000:{name}")
        } else {
            name.to_owned()
        };
        return Ok(Device {
            dpdk_name: full.to_lowercase(),
            kind: DeviceKind::Pci,
        });
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{name:?} is neither a PCI address (0000:01:00.0) nor a virtual device name (net_tap0)"
        ));
    }
    let driver = name
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_owned();
    if driver.is_empty() || driver == name && !name.starts_with("net_") {
        return Err(format!(
            "virtual device {name:?} needs a driver name and an instance number, e.g. net_tap0"
        ));
    }
    Ok(Device {
        dpdk_name: name.to_owned(),
        kind: DeviceKind::Vdev { driver },
    })
}

fn is_pci(name: &str) -> bool {
    let hex = |t: &str, n: usize| t.len() == n && t.chars().all(|c| c.is_ascii_hexdigit());
    let (bus_part, func) = match name.rsplit_once('.') {
        Some(x) => x,
        None => return false,
    };
    if !(func.len() == 1 && func.chars().all(|c| ('0'..='7').contains(&c))) {
        return false;
    }
    let parts: Vec<&str> = bus_part.split(':').collect();
    match parts.as_slice() {
        [b, d] => hex(b, 2) && hex(d, 2),
        [dom, b, d] => hex(dom, 4) && hex(b, 2) && hex(d, 2),
        _ => false,
    }
}

/// A loaded, validated configuration with resolved references.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
    pub devices: Vec<Device>,
    /// `peers[i]`: index of the port that gets port i's traffic.
    pub peers: Vec<usize>,
    source: String,
}

impl Loaded {
    /// `file:line:col` of a span, for messages raised after validation
    /// (e.g. a port that did not probe).
    pub fn error_at(&self, span: Range<usize>, field: &str, message: String) -> ConfigError {
        let (line, column) = line_col(&self.source, span.start);
        ConfigError {
            file: self.path.clone(),
            line,
            column,
            field: field.to_owned(),
            message,
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let src = std::fs::read_to_string(path).map_err(|e| LoadError::Read {
        file: path.to_owned(),
        source: e,
    })?;
    parse(path, &src)
}

/// Parses and validates `src` (named `path` in messages).
pub fn parse(path: &Path, src: &str) -> Result<Loaded, LoadError> {
    let de = toml::Deserializer::new(src);
    let config: Config = match serde_path_to_error::deserialize(de) {
        Ok(c) => c,
        Err(e) => {
            // Spanned<T> shows up in the path as a private key; hide it.
            let field = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "")
                .replace(".$__serde_spanned_private_start", "")
                .replace(".$__serde_spanned_private_end", "");
            let inner = e.into_inner();
            let (line, column) = inner
                .span()
                .map(|s| line_col(src, s.start))
                .unwrap_or((1, 1));
            let field = if field == "." {
                "(top level)".to_owned()
            } else {
                field
            };
            return Err(LoadError::Invalid(vec![ConfigError {
                file: path.to_owned(),
                line,
                column,
                field,
                message: inner
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            }]));
        }
    };
    let mut errs = Vec::new();
    let mut err = |span: Range<usize>, field: String, message: String| {
        let (line, column) = line_col(src, span.start);
        errs.push(ConfigError {
            file: path.to_owned(),
            line,
            column,
            field,
            message,
        });
    };

    let dp = &config.dataplane;
    if dp
        .forward_mode
        .get_ref()
        .parse::<dataplane_mode::Mode>()
        .is_err()
    {
        err(
            dp.forward_mode.span(),
            "dataplane.forward_mode".into(),
            format!(
                "unknown mode {:?} (expected \"io\" or \"macswap\")",
                dp.forward_mode.get_ref()
            ),
        );
    }
    if !matches!(dp.hugepages.get_ref().as_str(), "auto" | "on" | "off") {
        err(
            dp.hugepages.span(),
            "dataplane.hugepages".into(),
            format!(
                "{:?}: expected \"auto\", \"on\" or \"off\"",
                dp.hugepages.get_ref()
            ),
        );
    }
    let workers = dp.workers.get_ref();
    let cpus = available_cpus();
    if workers.is_empty() {
        err(
            dp.workers.span(),
            "dataplane.workers".into(),
            "at least one worker lcore is needed".into(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for w in workers {
        if !seen.insert(*w) {
            err(
                dp.workers.span(),
                "dataplane.workers".into(),
                format!("lcore {w} listed twice"),
            );
        }
        if *w == *dp.main_lcore.get_ref() {
            err(
                dp.workers.span(),
                "dataplane.workers".into(),
                format!("lcore {w} is the main lcore (dataplane.main_lcore); workers need cores of their own"),
            );
        }
    }
    let needed = workers.len() + 1;
    if needed > cpus.len() {
        err(
            dp.workers.span(),
            "dataplane.workers".into(),
            format!(
                "{} workers plus the main lcore need {needed} cores; this machine has {} online (cpus {})",
                workers.len(),
                cpus.len(),
                fmt_cpus(&cpus)
            ),
        );
    } else {
        for l in workers
            .iter()
            .chain(std::iter::once(dp.main_lcore.get_ref()))
        {
            if !cpus.contains(l) {
                let (span, field) = if l == dp.main_lcore.get_ref() && !workers.contains(l) {
                    (dp.main_lcore.span(), "dataplane.main_lcore")
                } else {
                    (dp.workers.span(), "dataplane.workers")
                };
                err(
                    span,
                    field.into(),
                    format!(
                        "cpu {l} does not exist or is not ours (cpus {})",
                        fmt_cpus(&cpus)
                    ),
                );
            }
        }
    }
    if dp.mbuf_cache > 512 {
        err(
            0..0,
            "dataplane.mbuf_cache".into(),
            format!("{} exceeds DPDK's limit of 512", dp.mbuf_cache),
        );
    }

    if config.ports.is_empty() {
        err(0..0, "port".into(), "no [[port]] configured".into());
    }
    let mut devices = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut by_dpdk: HashMap<String, usize> = HashMap::new();
    for (i, p) in config.ports.iter().enumerate() {
        if p.name.get_ref().is_empty() {
            err(
                p.name.span(),
                format!("port[{i}].name"),
                "empty name".into(),
            );
        }
        if let Some(j) = by_name.insert(p.name.get_ref(), i) {
            err(
                p.name.span(),
                format!("port[{i}].name"),
                format!("{:?} is also port[{j}]'s name", p.name.get_ref()),
            );
        }
        match parse_device(p.device.get_ref()) {
            Ok(d) => {
                if let Some(j) = by_dpdk.insert(d.dpdk_name.clone(), i) {
                    err(
                        p.device.span(),
                        format!("port[{i}].device"),
                        format!("device {:?} is also port[{j}]'s", d.dpdk_name),
                    );
                }
                devices.push(d);
            }
            Err(m) => {
                err(p.device.span(), format!("port[{i}].device"), m);
                devices.push(Device {
                    dpdk_name: String::new(),
                    kind: DeviceKind::Pci,
                });
            }
        }
        let rxq = *p.rx_queues.get_ref();
        if rxq == 0 || rxq > 64 {
            err(
                p.rx_queues.span(),
                format!("port[{i}].rx_queues"),
                format!("{rxq}: expected 1 to 64"),
            );
        }
        if let Some(m) = &p.mtu {
            if !(68..=9600).contains(m.get_ref()) {
                err(
                    m.span(),
                    format!("port[{i}].mtu"),
                    format!("{}: expected 68 to 9600", m.get_ref()),
                );
            }
        }
    }
    let n = config.ports.len();
    let mut peers = Vec::with_capacity(n);
    for (i, p) in config.ports.iter().enumerate() {
        match &p.peer {
            Some(peer) => match by_name.get(peer.get_ref().as_str()) {
                Some(&j) => peers.push(j),
                None => {
                    err(
                        peer.span(),
                        format!("port[{i}].peer"),
                        format!("no port named {:?}", peer.get_ref()),
                    );
                    peers.push(i);
                }
            },
            None => peers.push(if i ^ 1 < n { i ^ 1 } else { i }),
        }
    }
    if !errs.is_empty() {
        return Err(LoadError::Invalid(errs));
    }
    Ok(Loaded {
        path: path.to_owned(),
        config,
        devices,
        peers,
        source: src.to_owned(),
    })
}

/// Mode names the data plane accepts; kept here so the control crate does
/// not depend on the data plane for a string check.
mod dataplane_mode {
    pub enum Mode {
        Io,
        MacSwap,
    }
    impl std::str::FromStr for Mode {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            match s {
                "io" => Ok(Mode::Io),
                "macswap" => Ok(Mode::MacSwap),
                _ => Err(()),
            }
        }
    }
}

/// Online CPU ids (`/sys/devices/system/cpu/online`), which is what EAL
/// checks lcores against. Cores isolated with `isolcpus` are online but
/// outside a process's default affinity; EAL pins its threads to them
/// explicitly, so they are valid workers. Falls back to our affinity.
pub fn available_cpus() -> Vec<u32> {
    if let Some(v) = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
    {
        return v;
    }
    let mut v: Vec<u32> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id as u32)
        .collect();
    v.sort_unstable();
    v
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65536 {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().ok()?),
        }
    }
    (!v.is_empty()).then_some(v)
}

fn fmt_cpus(c: &[u32]) -> String {
    c.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Loaded, LoadError> {
        parse(Path::new("t.toml"), src)
    }

    fn errors(src: &str) -> Vec<ConfigError> {
        match p(src) {
            Err(LoadError::Invalid(e)) => e,
            other => panic!("expected errors, got {other:?}"),
        }
    }

    const GOOD: &str = r#"
[dataplane]
workers = [1]

[[port]]
name = "a"
device = "net_ring0"

[[port]]
name = "b"
device = "0000:03:00.1"
peer = "a"
"#;

    #[test]
    fn good_config_resolves_devices_and_peers() {
        let l = p(GOOD).expect("valid");
        assert_eq!(l.devices[0].dpdk_name, "net_ring0");
        assert_eq!(
            l.devices[0].kind,
            DeviceKind::Vdev {
                driver: "net_ring".into()
            }
        );
        assert_eq!(l.devices[1].kind, DeviceKind::Pci);
        assert_eq!(l.peers, vec![1, 0]);
        assert_eq!(l.config.dataplane.forward_mode.get_ref(), "io");
    }

    #[test]
    fn unknown_field_names_line_column_and_path() {
        let e = errors("[dataplane]\nworkers = [1]\nwrokers = 2\n");
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].line, e[0].column), (3, 1));
        assert_eq!(e[0].field, "dataplane.wrokers");
        assert!(
            e[0].message.contains("unknown field `wrokers`"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = errors("[dataplane]\nworkers = [1]\n[[port]]\nname = \"a\"\ndevice = \"net_null0\"\nmtu = \"big\"\n");
        assert_eq!(e[0].field, "port[0].mtu");
        assert_eq!(e[0].line, 6);
    }

    #[test]
    fn unknown_peer_points_at_the_peer() {
        let src = GOOD.replace("peer = \"a\"", "peer = \"zz\"");
        let e = errors(&src);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "port[1].peer");
        assert_eq!(e[0].line, 12);
        assert!(e[0].message.contains("\"zz\""));
        assert_eq!(
            e[0].to_string(),
            format!("t.toml:12:8: port[1].peer: {}", e[0].message)
        );
    }

    #[test]
    fn too_many_workers_is_refused() {
        let n = available_cpus().len() as u32;
        let list: Vec<String> = (1..=n).map(|x| x.to_string()).collect();
        let src = GOOD.replace("workers = [1]", &format!("workers = [{}]", list.join(", ")));
        let e = errors(&src);
        assert!(
            e.iter()
                .any(|e| e.field == "dataplane.workers" && e.message.contains("need")),
            "{e:?}"
        );
    }

    #[test]
    fn worker_on_main_lcore_and_duplicates_are_refused() {
        let e = errors(&GOOD.replace("workers = [1]", "workers = [0]"));
        assert!(e.iter().any(|e| e.message.contains("main lcore")), "{e:?}");
    }

    #[test]
    fn duplicate_port_names_and_devices() {
        let src = GOOD
            .replace("name = \"b\"", "name = \"a\"")
            .replace("0000:03:00.1", "net_ring0");
        let e = errors(&src);
        assert!(e.iter().any(|e| e.field == "port[1].name"));
        assert!(e.iter().any(|e| e.field == "port[1].device"));
    }

    #[test]
    fn device_strings() {
        assert_eq!(parse_device("03:00.0").unwrap().dpdk_name, "0000:03:00.0");
        assert_eq!(
            parse_device("net_pcap1,rx_pcap=/x.pcap,infinite_rx=1")
                .unwrap()
                .dpdk_name,
            "net_pcap1"
        );
        assert!(parse_device("").is_err());
        assert!(parse_device("net tap").is_err());
        assert!(parse_device("0000:03:00.9").is_err()); // function > 7: not PCI, and '.' is no vdev
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list(""), None);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn bad_mode_and_hugepages() {
        let src = GOOD.replace(
            "workers = [1]",
            "workers = [1]\nforward_mode = \"fast\"\nhugepages = \"maybe\"",
        );
        let e = errors(&src);
        assert!(e
            .iter()
            .any(|e| e.field == "dataplane.forward_mode" && e.line == 4));
        assert!(e
            .iter()
            .any(|e| e.field == "dataplane.hugepages" && e.line == 5));
    }
}
