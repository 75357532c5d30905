//! hdvrf's TOML configuration: parsing with positions, validation, and the
//! errors an operator reads (`FILE:LINE:COL: field.path: what is wrong`).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use dataplane::policy::{Action, MAX_RULES, MAX_SERVICE_RULES};
use dataplane::tables::{PortRole, Role, TtlMode};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dataplane: Dataplane,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortCfg>,
    /// `[router]`: the HD-VRF pipeline (`forward_mode = "router"`).
    #[serde(default)]
    pub router: Option<Spanned<RouterCfg>>,
    /// `[[next_hop]]`: where routes and label actions send packets; a
    /// next hop's id in the tables is its index here.
    #[serde(default, rename = "next_hop")]
    pub next_hops: Vec<NextHopCfg>,
    /// `[[service]]`: the VPNs, each with its half-duplex tables.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceCfg>,
    /// `[[label]]`: static label actions (LSPs through a P router, or extra
    /// actions on a PE).
    #[serde(default, rename = "label")]
    pub labels: Vec<LabelCfg>,
    /// `[control]`: the management API.
    #[serde(default)]
    pub control: ControlCfg,
    /// `[bgp]`: the MP-BGP VPNv4 speaker (the BGP issue builds on it).
    #[serde(default)]
    pub bgp: Option<Spanned<BgpCfg>>,
}

/// `[bgp]`: our AS and router id, and the neighbours.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpCfg {
    /// Our AS number, 1 to 4294967295 (RFC 6793).
    pub asn: Spanned<i64>,
    /// A dotted quad, not 0.0.0.0 (RFC 6286).
    pub router_id: Spanned<String>,
    /// The next hop our routes are advertised with: our core address, the
    /// one the hub's labelled traffic comes back to. Default: the router
    /// id (a PE's loopback, as usual in RFC 4364 networks).
    pub next_hop: Option<Spanned<String>>,
    /// ECMP: up to this many equal best paths (same LOCAL_PREF, AS_PATH
    /// length and MED) share a route's traffic, 1 to 8. Default 1: one
    /// best path, the others standing by.
    pub multipath: Option<Spanned<i64>>,
    #[serde(default, rename = "neighbor")]
    pub neighbors: Vec<BgpNeighborCfg>,
}

/// `[[bgp.neighbor]]`: one peer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpNeighborCfg {
    pub address: Spanned<String>,
    /// The peer's AS: ours for iBGP, another for eBGP.
    pub remote_asn: Spanned<i64>,
    /// Wait for the peer to connect instead of connecting (RFC 4271
    /// section 8.1.1, PassiveTcpEstablishment).
    #[serde(default)]
    pub passive: bool,
    /// Seconds; 0 (no keepalives) or at least 3 (RFC 4271 section 4.2).
    /// Default 90.
    pub hold_time: Option<Spanned<i64>>,
    /// TCP port: the peer's when we connect, ours when passive. Default
    /// 179.
    pub port: Option<Spanned<i64>>,
    /// A `[[next_hop]]` name: routes learnt from this neighbour are sent
    /// out through it, with its first label as the transport label and
    /// the route's own label (the peer's VPN label) below. Without it the
    /// neighbour's routes are kept in its RIB but not installed.
    pub via: Option<Spanned<String>>,
    /// The most routes this neighbour may have stored (after import
    /// filtering: routes no service imports are not stored, so not
    /// counted). One more and the session is stopped with Cease 6/1
    /// (RFC 4486) and its routes leave the tables. Default: no limit.
    pub max_prefixes: Option<Spanned<i64>>,
    /// Percent of `max_prefixes` at which a warning is logged, once per
    /// session. Default 75.
    pub max_prefixes_warning: Option<Spanned<i64>>,
    /// Seconds after a Cease 6/1 before the session starts again.
    /// Default: it stays down until hdvrf restarts.
    pub max_prefixes_restart: Option<Spanned<i64>>,
    /// A route reflector client (RFC 4456): iBGP routes are reflected to
    /// it, and its routes to every iBGP neighbour; iBGP only. Our cluster
    /// id is `bgp.router_id`.
    #[serde(default)]
    pub route_reflector_client: Option<Spanned<bool>>,
    /// TCP-MD5 (RFC 2385): every segment of the session signed with this
    /// key, at most 80 bytes (Linux's limit). Given in the file, as FRR,
    /// BIRD and GoBGP take it: the file already holds what a peer must
    /// trust (addresses, AS numbers) and is the operator's to protect;
    /// it never appears in the log, `show` or debug output.
    pub md5_password: Option<Spanned<Password>>,
    /// GTSM (RFC 5082): `true` for a directly connected peer (1 hop), or
    /// the hops allowed (1 to 254). We send with TTL 255 and take only
    /// packets that arrive with at least 255 less the hops (254 for a
    /// directly connected peer).
    pub ttl_security: Option<Spanned<TtlSecurity>>,
    /// Peer oscillation damping (RFC 4271 section 8.1.1): after a failure
    /// the session waits this long in Idle, twice as long after each
    /// further failure in a row, up to `idle_hold_max_ms`; the count is
    /// cleared once it has stayed Established for `idle_hold_max_ms`.
    /// Milliseconds; defaults 1000 and 120000.
    pub idle_hold_start_ms: Option<Spanned<i64>>,
    pub idle_hold_max_ms: Option<Spanned<i64>>,
}

/// A TCP-MD5 key: its `Debug` hides it, so no log or dump shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// `ttl_security`: on for directly connected peers, or a number of hops.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum TtlSecurity {
    On(bool),
    Hops(i64),
}

impl TtlSecurity {
    /// The hops allowed, if on (validated: 1 to 254).
    pub fn hops(self) -> Option<u8> {
        match self {
            TtlSecurity::On(false) => None,
            TtlSecurity::On(true) => Some(1),
            TtlSecurity::Hops(h) => u8::try_from(h).ok(),
        }
    }
}

/// Where `hdvrf ctl` reaches a running hdvrf when no socket is configured.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/hdvrf/hdvrf.sock";

/// `[control]`: the management API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlCfg {
    /// The unix socket `hdvrf ctl` talks to (mode 0600); default
    /// [`DEFAULT_CONTROL_SOCKET`]; "" turns the API off.
    #[serde(default)]
    pub socket: Option<Spanned<String>>,
    /// Prometheus text metrics over HTTP at `ADDRESS:PORT/metrics`;
    /// default [`DEFAULT_METRICS`] (loopback only); "" turns them off.
    #[serde(default)]
    pub metrics: Option<Spanned<String>>,
    /// Where subscriber sessions are journalled, so that a restarted
    /// hdvrf rebuilds them (`control::journal`); unset: no journal.
    #[serde(default)]
    pub session_journal: Option<Spanned<String>>,
    /// Subscriber sessions the relay admits; a new client beyond them is
    /// not relayed. Each worker preallocates per-session counters for
    /// this many. Default [`DEFAULT_MAX_SESSIONS`].
    #[serde(default)]
    pub max_sessions: Option<Spanned<i64>>,
}

/// Sessions admitted when `control.max_sessions` is not set.
pub const DEFAULT_MAX_SESSIONS: u32 = 65_536;
/// The most `control.max_sessions` may be: a 64-byte counter line each per
/// worker, so 64 MiB per worker at this bound.
pub const MAX_SESSIONS_LIMIT: u32 = 1 << 20;

impl ControlCfg {
    /// `max_sessions`, validated.
    pub fn max_sessions(&self) -> u32 {
        self.max_sessions
            .as_ref()
            .map_or(DEFAULT_MAX_SESSIONS, |m| *m.get_ref() as u32)
    }
}

/// Where metrics are served when `control.metrics` is not set.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9469";

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
    /// The CPU each worker's thread runs on, by position in `workers`
    /// (default: the CPU with the lcore's number). A CPU may be shared,
    /// with the main lcore too: for small machines and benchmarks that
    /// keep the router off the CPUs of what it is measured against; a
    /// production worker wants a core of its own.
    pub worker_cpus: Option<Spanned<Vec<u32>>>,
    /// `io` or `macswap` (testpmd-style, between `peer` ports), or
    /// `router`: the HD-VRF pipeline, configured by `[router]`,
    /// `[[next_hop]]`, `[[service]]` and `[[label]]`.
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
    /// Memory each route table (a service's upstream, downstream or hub
    /// table) may take, in MiB: routes that would need more are refused
    /// and reported. Per table, not shared, so that both copies of the
    /// tables refuse the same routes. Default
    /// [`DEFAULT_ROUTE_TABLE_MEMORY_MB`].
    #[serde(default)]
    pub route_table_memory_mb: Option<Spanned<i64>>,
}

/// Route table memory when `dataplane.route_table_memory_mb` is not set
/// ([`dataplane::tables::DEFAULT_TABLE_MEMORY`]).
pub const DEFAULT_ROUTE_TABLE_MEMORY_MB: u32 =
    (dataplane::tables::DEFAULT_TABLE_MEMORY >> 20) as u32;
/// The most `dataplane.route_table_memory_mb` may be: beyond what a table
/// with a group in every /24 (2^24 of them) can use.
pub const MAX_ROUTE_TABLE_MEMORY_MB: u32 = 64 * 1024;

impl Dataplane {
    /// `route_table_memory_mb` in bytes, validated.
    pub fn route_table_memory_bytes(&self) -> usize {
        let mb = self
            .route_table_memory_mb
            .as_ref()
            .map_or(DEFAULT_ROUTE_TABLE_MEMORY_MB, |m| *m.get_ref() as u32);
        (mb as usize) << 20
    }
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
    /// `access` (subscribers, optionally on VLANs; on a hub, the uplink) or
    /// `core` (MPLS), the default.
    pub role: Option<Spanned<String>>,
    /// The router's own IPv4 address on this port with its subnet
    /// (`192.0.2.1/24`; a bare address is a /32). Router mode: packets to
    /// it go to the port's host tap, a kernel interface holding this
    /// address and the port's MAC, so ping and TCP (BGP) work; next hops
    /// on the subnet can be resolved by ARP.
    pub address: Option<Spanned<String>>,
    /// The host tap's interface name (at most 15 bytes). Default `hd-` and
    /// the port's name; `""`: no host path for this port.
    pub host_iface: Option<Spanned<String>>,
}

fn default_labels() -> Spanned<Vec<Spanned<i64>>> {
    Spanned::new(0..0, Vec::new())
}
fn default_true() -> bool {
    true
}

/// `[router]`: which job the router does and which labels are its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterCfg {
    /// `spoke` (HD-VRF PE), `hub` (return path and target processing) or
    /// `p` (label switch only).
    pub role: Spanned<String>,
    /// First local label; the range is `[label_base, label_base +
    /// label_count)`, above the reserved labels 0-15 (RFC 3032 section
    /// 2.1) and within 20 bits.
    pub label_base: Spanned<i64>,
    pub label_count: Spanned<i64>,
    /// Our own transport label: popped, then the label below is looked at.
    pub transport_label: Option<Spanned<i64>>,
}

/// `[[next_hop]]`: an out port, the neighbour (a static MAC, or an
/// address resolved by ARP), an optional VLAN tag and the labels to push.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHopCfg {
    pub name: Spanned<String>,
    /// A `[[port]]` name.
    pub port: Spanned<String>,
    /// The neighbour's MAC address (`02:40:00:00:00:09`): a static entry.
    pub mac: Option<Spanned<String>>,
    /// The neighbour's IPv4 address, on the port's subnet: its MAC is
    /// resolved by ARP (unless `mac` is given). Until then packets to it
    /// are counted as `drop_unresolved_next_hop`.
    pub address: Option<Spanned<String>>,
    /// 802.1Q VLAN id to tag with, 1-4094; 0 or absent: untagged.
    pub vlan: Option<Spanned<i64>>,
    /// Labels to push, outermost first (transport, then VPN); at most 2.
    #[serde(default = "default_labels")]
    pub labels: Spanned<Vec<Spanned<i64>>>,
}

/// `[[service]]`: one VPN with its half-duplex tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCfg {
    pub name: Spanned<String>,
    /// The clients' gateway address: packets to it are for the router.
    /// Required on a spoke.
    pub gateway: Option<Spanned<String>>,
    /// The service's VPN label, from the local range: on a spoke it leads
    /// to the downstream table, on a hub to the hub table.
    pub vpn_label: Option<Spanned<i64>>,
    /// `uniform` (default) or `pipe` (RFC 3443).
    pub ttl_mode: Option<Spanned<String>>,
    /// Drop client packets whose source is not a session on the very port,
    /// VLAN and MAC they came from. Default on.
    #[serde(default = "default_true")]
    pub anti_spoofing: bool,
    /// (port, VLAN) pairs whose frames belong to this service.
    #[serde(default)]
    pub access: Vec<AccessCfg>,
    /// Spoke: routes for every packet a client sends (normally only the
    /// hub's default route).
    #[serde(default)]
    pub upstream: Vec<RouteCfg>,
    /// Spoke: routes toward clients for packets that arrive with the VPN
    /// label.
    #[serde(default)]
    pub downstream: Vec<RouteCfg>,
    /// Hub: the return path, back to spokes or to the uplink.
    #[serde(default)]
    pub hub: Vec<RouteCfg>,
    /// RFC 4364 route distinguisher, `ADMIN:NUMBER` (65000:1,
    /// 192.0.2.1:1, 4200000000:1); required with `[bgp]`, one per service.
    pub route_distinguisher: Option<Spanned<String>>,
    /// Route targets whose routes this service imports (into upstream on
    /// a spoke, into the hub table on a hub).
    #[serde(default)]
    pub import_targets: Vec<Spanned<String>>,
    /// Route targets this service's routes are advertised with.
    #[serde(default)]
    pub export_targets: Vec<Spanned<String>>,
    /// The DHCP server the relay forwards this service's clients to,
    /// `ADDRESS` or `ADDRESS:PORT` (default port 67). Spoke only.
    pub address_server: Option<Spanned<String>>,
    /// Hub: target-specific processing, rules tried in order on every
    /// packet routed in the hub table.
    #[serde(default)]
    pub policy: Vec<PolicyCfg>,
}

/// The next hop name of the null route: a route to it discards what it
/// covers, counted as `drop_no_route`.
pub const DISCARD_NAME: &str = "discard";

/// One hub policy rule: what it matches (`prefix`, and optionally
/// `protocol` and `port`) and its `action`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCfg {
    /// Destination prefix, `10.1.0.11/32`.
    pub prefix: Spanned<String>,
    /// `tcp`, `udp`, `icmp`, `sctp`, or a protocol number.
    pub protocol: Option<Spanned<NumberOrText>>,
    /// Destination port `53` or range `"5000-5999"` (TCP, UDP, SCTP).
    pub port: Option<Spanned<NumberOrText>>,
    /// `permit`, `deny`, `count` (count and go on) or `police`.
    pub action: Spanned<String>,
    /// Police: the rate in bits per second.
    pub rate_bps: Option<Spanned<i64>>,
    /// Police: the burst in bytes.
    pub burst_bytes: Option<Spanned<i64>>,
}

/// A field given as a number or as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(i64),
    Text(String),
}

/// The lowest police rate, in bits per second.
pub const MIN_POLICE_BPS: i64 = 1000;
/// The highest police burst, in bytes.
pub const MAX_POLICE_BURST: i64 = 1 << 30;

/// What a policy rule says, checked: (network, length, protocol, ports,
/// action); or the first thing wrong with it: (where, field within the
/// rule, what).
#[allow(clippy::type_complexity)]
pub fn policy_rule(
    r: &PolicyCfg,
) -> Result<(u32, u8, Option<u8>, Option<(u16, u16)>, Action), (Range<usize>, &'static str, String)>
{
    let (net, len) =
        parse_prefix(r.prefix.get_ref()).map_err(|m| (r.prefix.span(), "prefix", m))?;
    let protocol = match &r.protocol {
        None => None,
        Some(p) => Some(match p.get_ref() {
            NumberOrText::Number(n) => u8::try_from(*n).map_err(|_| {
                (
                    p.span(),
                    "protocol",
                    format!("{n} is not an IP protocol number (0 to 255)"),
                )
            })?,
            NumberOrText::Text(t) => match t.as_str() {
                "icmp" => 1,
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                _ => {
                    return Err((
                        p.span(),
                        "protocol",
                        format!(
                        "{t:?}: expected \"tcp\", \"udp\", \"icmp\", \"sctp\" or a protocol number"
                    ),
                    ))
                }
            },
        }),
    };
    let ports = match &r.port {
        None => None,
        Some(p) => {
            let bad = |m: String| (p.span(), "port", m);
            if !matches!(protocol, Some(6 | 17 | 132)) {
                return Err(bad(
                    "a port needs protocol \"tcp\", \"udp\" or \"sctp\"".into()
                ));
            }
            let port = |n: i64| {
                u16::try_from(n).map_err(|_| bad(format!("{n} is not a port (0 to 65535)")))
            };
            Some(match p.get_ref() {
                NumberOrText::Number(n) => (port(*n)?, port(*n)?),
                NumberOrText::Text(t) => {
                    let range = t.split_once('-').and_then(|(a, b)| {
                        Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?))
                    });
                    let Some((a, b)) = range else {
                        return Err(bad(format!(
                            "{t:?}: expected a port (53) or a range (\"5000-5999\")"
                        )));
                    };
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(bad(format!("{t:?}: the range ends before it starts")));
                    }
                    (a, b)
                }
            })
        }
    };
    let name = r.action.get_ref().as_str();
    let action = match name {
        "permit" => Action::Permit,
        "deny" => Action::Deny,
        "count" => Action::Count,
        "police" => {
            let missing = |f: &'static str| {
                (
                    r.action.span(),
                    f,
                    format!("missing: action \"police\" needs {f}"),
                )
            };
            let rate = r.rate_bps.as_ref().ok_or_else(|| missing("rate_bps"))?;
            let burst = r
                .burst_bytes
                .as_ref()
                .ok_or_else(|| missing("burst_bytes"))?;
            let rate_bps = u64::try_from(*rate.get_ref())
                .ok()
                .filter(|&v| v >= MIN_POLICE_BPS as u64)
                .ok_or_else(|| {
                    (
                        rate.span(),
                        "rate_bps",
                        format!(
                            "{} is below the lowest rate, {MIN_POLICE_BPS} bits/s",
                            rate.get_ref()
                        ),
                    )
                })?;
            let burst_bytes = u32::try_from(*burst.get_ref())
                .ok()
                .filter(|&v| v >= 1 && i64::from(v) <= MAX_POLICE_BURST)
                .ok_or_else(|| {
                    (
                        burst.span(),
                        "burst_bytes",
                        format!("{} is not 1 to {MAX_POLICE_BURST} bytes", burst.get_ref()),
                    )
                })?;
            Action::Police {
                rate_bps,
                burst_bytes,
            }
        }
        other => {
            return Err((
                r.action.span(),
                "action",
                format!("{other:?}: expected \"permit\", \"deny\", \"count\" or \"police\""),
            ))
        }
    };
    if !matches!(action, Action::Police { .. }) {
        for (f, v) in [("rate_bps", &r.rate_bps), ("burst_bytes", &r.burst_bytes)] {
            if let Some(v) = v {
                return Err((
                    v.span(),
                    f,
                    format!("not used by action {name:?} (only \"police\")"),
                ));
            }
        }
    }
    Ok((net, len, protocol, ports, action))
}

/// One access binding: frames on `port` with VLAN id `vlan` (0: untagged),
/// an 802.1Q sub-interface when tagged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessCfg {
    pub port: Spanned<String>,
    pub vlan: Option<Spanned<i64>>,
    /// The sub-interface's IPv4 MTU, 68 up to the port's MTU (default
    /// the port's).
    pub mtu: Option<Spanned<i64>>,
}

/// A static route: `prefix` (`10.0.0.0/24`) via a `[[next_hop]]` name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCfg {
    pub prefix: Spanned<String>,
    pub next_hop: Spanned<String>,
}

/// `[[label]]`: a static action for one local label.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCfg {
    pub label: Spanned<i64>,
    /// `swap` (to `out_label`, send to `next_hop`), `php` (pop, send the
    /// rest to `next_hop`: penultimate hop popping, RFC 3031 section 3.16)
    /// or `pop` (pop and look at the next label).
    pub action: Spanned<String>,
    pub out_label: Option<Spanned<i64>>,
    pub next_hop: Option<Spanned<String>>,
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
    /// The text the configuration was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

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

/// The TOML parser's message on one line. Some of its errors have no text
/// (a carriage return without a line feed gives ""); those name what is
/// at the place instead.
fn syntax_message(message: &str, src: &str, at: usize) -> String {
    let text = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if !text.is_empty() {
        return text;
    }
    match src.get(at..).and_then(|rest| rest.chars().next()) {
        Some('\r') => "a carriage return not followed by a line feed".to_owned(),
        Some(c) => format!("invalid TOML at {c:?}"),
        None => "invalid TOML: the file ends here".to_owned(),
    }
}

/// Parses and validates `src` (named `path` in messages).
pub fn parse(path: &Path, src: &str) -> Result<Loaded, LoadError> {
    // Without the path first: tracking it costs about a tenth of the CPU
    // of loading a large file (100k next hops: 1.0 s to 0.9 s), and only
    // an error needs it, so a file that fails is deserialized again to
    // name where.
    let config = match Config::deserialize(toml::Deserializer::new(src)) {
        Ok(c) => Ok(c),
        Err(_) => serde_path_to_error::deserialize::<_, Config>(toml::Deserializer::new(src)),
    };
    let config: Config = match config {
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
            let start = inner.span().map_or(0, |s| s.start);
            let (line, column) = line_col(src, start);
            let field = match field.as_str() {
                "." => "(top level)".to_owned(),
                // An empty key (`'' = 1`) makes an empty path.
                "" => "\"\"".to_owned(),
                _ => field,
            };
            return Err(LoadError::Invalid(vec![ConfigError {
                file: path.to_owned(),
                line,
                column,
                field,
                message: syntax_message(inner.message(), src, start),
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
        .parse::<dataplane::ForwardMode>()
        .is_err()
    {
        err(
            dp.forward_mode.span(),
            "dataplane.forward_mode".into(),
            format!(
                "unknown mode {:?} (expected \"io\", \"macswap\" or \"router\")",
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
    if let Some(m) = &dp.route_table_memory_mb {
        if !(1..=i64::from(MAX_ROUTE_TABLE_MEMORY_MB)).contains(m.get_ref()) {
            err(
                m.span(),
                "dataplane.route_table_memory_mb".into(),
                format!(
                    "{} is out of range: 1 to {MAX_ROUTE_TABLE_MEMORY_MB} (MiB per route table)",
                    m.get_ref()
                ),
            );
        }
    }
    if let Some(sock) = &config.control.socket {
        // sockaddr_un's path holds 107 bytes and a NUL.
        if sock.get_ref().len() > 107 {
            err(
                sock.span(),
                "control.socket".into(),
                format!(
                    "{} bytes: a unix socket path holds at most 107",
                    sock.get_ref().len()
                ),
            );
        }
    }
    if let Some(m) = &config.control.metrics {
        if !m.get_ref().is_empty() && m.get_ref().parse::<std::net::SocketAddr>().is_err() {
            err(
                m.span(),
                "control.metrics".into(),
                format!(
                    "{:?} is not ADDRESS:PORT (e.g. \"127.0.0.1:9469\")",
                    m.get_ref()
                ),
            );
        }
    }
    if let Some(m) = &config.control.max_sessions {
        if !(1..=i64::from(MAX_SESSIONS_LIMIT)).contains(m.get_ref()) {
            err(
                m.span(),
                "control.max_sessions".into(),
                format!("{} is out of range: 1 to {MAX_SESSIONS_LIMIT}", m.get_ref()),
            );
        }
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
    if let Some(wc) = &dp.worker_cpus {
        if wc.get_ref().len() != workers.len() {
            err(
                wc.span(),
                "dataplane.worker_cpus".into(),
                format!(
                    "{} CPUs for {} workers: one CPU per worker, in the order of dataplane.workers",
                    wc.get_ref().len(),
                    workers.len()
                ),
            );
        }
        for c in wc.get_ref() {
            if !cpus.contains(c) {
                err(
                    wc.span(),
                    "dataplane.worker_cpus".into(),
                    format!(
                        "cpu {c} does not exist or is not ours (cpus {})",
                        fmt_cpus(&cpus)
                    ),
                );
            }
        }
        if !cpus.contains(dp.main_lcore.get_ref()) {
            err(
                dp.main_lcore.span(),
                "dataplane.main_lcore".into(),
                format!(
                    "cpu {} does not exist or is not ours (cpus {})",
                    dp.main_lcore.get_ref(),
                    fmt_cpus(&cpus)
                ),
            );
        }
    }
    let needed = workers.len() + 1;
    if dp.worker_cpus.is_some() {
        // Workers' lcores are names, not CPUs, when mapped.
    } else if needed > cpus.len() {
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
        if let Some(r) = &p.role {
            if parse_port_role(r.get_ref()).is_none() {
                err(
                    r.span(),
                    format!("port[{i}].role"),
                    format!("{:?}: expected \"access\" or \"core\"", r.get_ref()),
                );
            }
        }
        if let Some(a) = &p.address {
            if let Err(m) = parse_interface_address(a.get_ref()) {
                err(a.span(), format!("port[{i}].address"), m);
            }
        }
        if let Some(h) = &p.host_iface {
            if let Err(m) = check_iface_name(h.get_ref()) {
                err(h.span(), format!("port[{i}].host_iface"), m);
            }
        } else if p.address.is_some() && default_host_iface(p.name.get_ref()).is_none() {
            err(
                p.name.span(),
                format!("port[{i}].name"),
                format!(
                    "{:?} is too long to name the host tap \"hd-{}\" (15 bytes at most); set host_iface",
                    p.name.get_ref(),
                    p.name.get_ref()
                ),
            );
        }
    }
    let mut ifaces: HashMap<String, usize> = HashMap::new();
    for (i, p) in config.ports.iter().enumerate() {
        if let Some(name) = p.host_iface_name() {
            if let Some(j) = ifaces.insert(name.clone(), i) {
                let span = p.host_iface.as_ref().map_or(p.name.span(), |h| h.span());
                err(
                    span,
                    format!("port[{i}].host_iface"),
                    format!("{name:?} is also port[{j}]'s host tap"),
                );
            }
        }
    }
    validate_router(&config, &by_name, &mut err);
    validate_vpn(&config, &by_name, &mut err);
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

/// Reserved labels (RFC 3032 section 2.1) lie below this.
pub const FIRST_UNRESERVED_LABEL: i64 = 16;
/// Labels are 20 bits.
pub const MAX_LABEL: i64 = (1 << 20) - 1;
/// Largest 802.1Q VLAN id (4095 is reserved).
pub const MAX_VLAN: i64 = 4094;

/// Parses a dotted-quad IPv4 address into host order.
pub fn parse_ipv4(s: &str) -> Result<u32, String> {
    s.parse::<std::net::Ipv4Addr>().map(u32::from).map_err(|_| {
        format!("{s:?} is not an IPv4 address (expected a dotted quad, e.g. 192.0.2.1)")
    })
}

/// Parses an interface address, `ADDRESS/LENGTH` or a bare `ADDRESS`
/// (a /32), into (address in host order, length). Host bits are the point
/// here: `192.0.2.1/24` is address .1 on 192.0.2.0/24.
pub fn parse_interface_address(s: &str) -> Result<(u32, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let a = parse_ipv4(addr).map_err(|_| {
        format!(
            "{s:?} is not an IPv4 interface address (expected ADDRESS/LENGTH, e.g. 192.0.2.1/24)"
        )
    })?;
    let len = match len {
        None => 32,
        Some(l) if !l.is_empty() && l.len() <= 2 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().unwrap_or(u8::MAX)
        }
        Some(l) => return Err(format!("{s:?}: prefix length {l:?} is not a number")),
    };
    if len > 32 {
        return Err(format!("{s:?}: prefix length {len} is over 32"));
    }
    if len < 31
        && (a & !dataplane::lpm::mask(len) == 0 || a | dataplane::lpm::mask(len) == u32::MAX)
    {
        return Err(format!(
            "{s:?} is the subnet's network or broadcast address, not one an interface can hold"
        ));
    }
    Ok((a, len))
}

/// A kernel interface name: 1 to 15 bytes, no `/`, whitespace or `:`
/// (what the kernel's `dev_valid_name` accepts, less the alias colon).
pub fn check_iface_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(()); // no host tap
    }
    if s.len() > 15 {
        return Err(format!(
            "{s:?} is {} bytes; an interface name has 15 at most",
            s.len()
        ));
    }
    if s == "."
        || s == ".."
        || s.bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        return Err(format!("{s:?} is not a valid interface name"));
    }
    Ok(())
}

/// `hd-` and the port's name, if that fits an interface name.
pub fn default_host_iface(port: &str) -> Option<String> {
    let n = format!("hd-{port}");
    check_iface_name(&n).ok().map(|_| n)
}

impl PortCfg {
    /// The host tap's interface name if this port has a host path: an
    /// address, and `host_iface` not set to `""`.
    pub fn host_iface_name(&self) -> Option<String> {
        self.address.as_ref()?;
        match &self.host_iface {
            Some(h) if h.get_ref().is_empty() => None,
            Some(h) => Some(h.get_ref().clone()),
            None => default_host_iface(self.name.get_ref()),
        }
    }
}

/// Parses `ADDRESS/LENGTH` into (network in host order, length). Host
/// bits must be clear: `10.0.0.1/24` is refused rather than silently
/// read as `10.0.0.0/24`.
pub fn parse_prefix(s: &str) -> Result<(u32, u8), String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(format!(
            "{s:?} has no prefix length (expected ADDRESS/LENGTH, e.g. 10.0.0.0/24)"
        ));
    };
    let addr: u32 = addr
        .parse::<std::net::Ipv4Addr>()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?
        .into();
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?}: prefix length {len:?} is not a number"));
    }
    let len: u8 = len.parse().unwrap_or(u8::MAX);
    if len > 32 {
        return Err(format!("{s:?}: prefix length {len} is over 32"));
    }
    let mask = dataplane::lpm::mask(len);
    if addr & !mask != 0 {
        return Err(format!(
            "{s:?} has host bits set ({} lies beyond the /{len}; the network is {}/{len})",
            std::net::Ipv4Addr::from(addr & !mask),
            std::net::Ipv4Addr::from(addr & mask)
        ));
    }
    Ok((addr, len))
}

/// A MAC address as `02:00:00:00:00:01`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a unicast MAC address, six hex bytes separated by `:` or `-`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad =
        || format!("{s:?} is not a MAC address (expected six hex bytes, e.g. 02:00:00:00:00:01)");
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = s.split(sep);
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "{s:?} is a multicast or broadcast address; a next hop needs a unicast MAC"
        ));
    }
    Ok(mac)
}

/// `router.role`: `spoke`, `hub` or `p`.
pub fn parse_role(s: &str) -> Option<Role> {
    match s {
        "spoke" => Some(Role::Spoke),
        "hub" => Some(Role::Hub),
        "p" => Some(Role::P),
        _ => None,
    }
}

/// The configuration's name for a role.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Spoke => "spoke",
        Role::Hub => "hub",
        Role::P => "p",
    }
}

/// `service.ttl_mode`: `uniform` or `pipe` (RFC 3443 section 3).
pub fn parse_ttl_mode(s: &str) -> Option<TtlMode> {
    match s {
        "uniform" => Some(TtlMode::Uniform),
        "pipe" => Some(TtlMode::Pipe),
        _ => None,
    }
}

/// `port.role`: `access` or `core`.
pub fn parse_port_role(s: &str) -> Option<PortRole> {
    match s {
        "access" => Some(PortRole::Access),
        "core" => Some(PortRole::Core),
        _ => None,
    }
}

/// Checks what the VPN control plane needs: each service's route
/// distinguisher and targets, its address server, its sub-interfaces'
/// MTUs, and `[bgp]`.
fn validate_vpn(
    config: &Config,
    port_by_name: &HashMap<&str, usize>,
    err: &mut impl FnMut(Range<usize>, String, String),
) {
    use crate::vpn::VpnId;
    let role = config
        .router
        .as_ref()
        .and_then(|r| parse_role(r.get_ref().role.get_ref()));
    let mut rds: HashMap<VpnId, usize> = HashMap::new();
    for (i, s) in config.services.iter().enumerate() {
        match &s.route_distinguisher {
            Some(rd) => match rd.get_ref().parse::<VpnId>() {
                Err(m) => err(rd.span(), format!("service[{i}].route_distinguisher"), m),
                Ok(v) => {
                    if let Some(j) = rds.insert(v, i) {
                        err(
                            rd.span(),
                            format!("service[{i}].route_distinguisher"),
                            format!("{v} is also service[{j}]'s: each service needs its own"),
                        );
                    }
                }
            },
            None if config.bgp.is_some() => err(
                s.name.span(),
                format!("service[{i}].route_distinguisher"),
                "missing: with [bgp], every service's routes need a route distinguisher".into(),
            ),
            None => {}
        }
        for (what, list) in [
            ("import_targets", &s.import_targets),
            ("export_targets", &s.export_targets),
        ] {
            let mut seen: HashMap<VpnId, usize> = HashMap::new();
            for (k, rt) in list.iter().enumerate() {
                match rt.get_ref().parse::<VpnId>() {
                    Err(m) => err(rt.span(), format!("service[{i}].{what}[{k}]"), m),
                    Ok(v) => {
                        if let Some(j) = seen.insert(v, k) {
                            err(
                                rt.span(),
                                format!("service[{i}].{what}[{k}]"),
                                format!("{v} is already {what}[{j}]"),
                            );
                        }
                    }
                }
            }
        }
        if let Some(a) = &s.address_server {
            let text = a.get_ref();
            let (addr, port) = match text.split_once(':') {
                Some((a, p)) => (a, Some(p)),
                None => (text.as_str(), None),
            };
            let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
            match parse_ipv4(addr) {
                Err(_) => err(
                    a.span(),
                    format!("service[{i}].address_server"),
                    format!("{text:?} is not ADDRESS or ADDRESS:PORT (e.g. 192.0.2.50 or 192.0.2.50:67)"),
                ),
                Ok(_) if !port_ok => err(
                    a.span(),
                    format!("service[{i}].address_server"),
                    format!("{text:?}: the port must be 1 to 65535"),
                ),
                Ok(_) if role.is_some() && role != Some(Role::Spoke) => err(
                    a.span(),
                    format!("service[{i}].address_server"),
                    "only a spoke relays its clients' DHCP to an address server".into(),
                ),
                Ok(_) => {}
            }
        }
        for (k, a) in s.access.iter().enumerate() {
            let Some(m) = &a.mtu else { continue };
            let port_mtu = port_by_name
                .get(a.port.get_ref().as_str())
                .and_then(|&p| config.ports[p].mtu.as_ref())
                .map_or(1500, |m| i64::from(*m.get_ref()));
            if !(68..=port_mtu).contains(m.get_ref()) {
                err(
                    m.span(),
                    format!("service[{i}].access[{k}].mtu"),
                    format!(
                        "MTU {} is out of range: 68 (RFC 791) up to port {:?}'s {port_mtu}",
                        m.get_ref(),
                        a.port.get_ref()
                    ),
                );
            }
        }
    }
    let Some(bgp) = &config.bgp else { return };
    let b = bgp.get_ref();
    let asn_ok = |v: i64| (1..=i64::from(u32::MAX)).contains(&v);
    if !asn_ok(*b.asn.get_ref()) {
        err(
            b.asn.span(),
            "bgp.asn".into(),
            format!("AS {} is out of range: 1 to 4294967295", b.asn.get_ref()),
        );
    }
    match parse_ipv4(b.router_id.get_ref()) {
        Err(m) => err(b.router_id.span(), "bgp.router_id".into(), m),
        Ok(0) => err(
            b.router_id.span(),
            "bgp.router_id".into(),
            "0.0.0.0 is not a router id (RFC 6286)".into(),
        ),
        Ok(_) => {}
    }
    if let Some(nh) = &b.next_hop {
        match parse_ipv4(nh.get_ref()) {
            Err(m) => err(nh.span(), "bgp.next_hop".into(), m),
            Ok(0) => err(
                nh.span(),
                "bgp.next_hop".into(),
                "0.0.0.0 cannot be a next hop".into(),
            ),
            Ok(_) => {}
        }
    }
    if let Some(m) = &b.multipath {
        if !(1..=8).contains(m.get_ref()) {
            err(
                m.span(),
                "bgp.multipath".into(),
                format!("{}: 1 (no ECMP) to 8 paths", m.get_ref()),
            );
        }
    }
    let mut peers: HashMap<u32, usize> = HashMap::new();
    for (i, n) in b.neighbors.iter().enumerate() {
        if let Some(p) = &n.port {
            if !(1..=65535).contains(p.get_ref()) {
                err(
                    p.span(),
                    format!("bgp.neighbor[{i}].port"),
                    format!("{} is not a TCP port (1 to 65535)", p.get_ref()),
                );
            }
        }
        if let Some(v) = &n.via {
            if !config
                .next_hops
                .iter()
                .any(|h| h.name.get_ref() == v.get_ref())
            {
                err(
                    v.span(),
                    format!("bgp.neighbor[{i}].via"),
                    format!("no [[next_hop]] is named {:?}", v.get_ref()),
                );
            }
        }
        match parse_ipv4(n.address.get_ref()) {
            Err(m) => err(n.address.span(), format!("bgp.neighbor[{i}].address"), m),
            Ok(a) => {
                if let Some(j) = peers.insert(a, i) {
                    err(
                        n.address.span(),
                        format!("bgp.neighbor[{i}].address"),
                        format!("{} is also bgp.neighbor[{j}]", n.address.get_ref()),
                    );
                }
            }
        }
        if !asn_ok(*n.remote_asn.get_ref()) {
            err(
                n.remote_asn.span(),
                format!("bgp.neighbor[{i}].remote_asn"),
                format!(
                    "AS {} is out of range: 1 to 4294967295",
                    n.remote_asn.get_ref()
                ),
            );
        }
        if let Some(h) = &n.hold_time {
            let v = *h.get_ref();
            if !(v == 0 || (3..=65535).contains(&v)) {
                err(
                    h.span(),
                    format!("bgp.neighbor[{i}].hold_time"),
                    format!("{v} s: a hold time is 0 or 3 to 65535 seconds (RFC 4271 section 4.2)"),
                );
            }
        }
        if let Some(rr) = n.route_reflector_client.as_ref().filter(|r| *r.get_ref()) {
            if n.remote_asn.get_ref() != b.asn.get_ref() {
                err(
                    rr.span(),
                    format!("bgp.neighbor[{i}].route_reflector_client"),
                    format!(
                        "AS {} is not ours ({}): route reflection is between iBGP neighbours (RFC 4456)",
                        n.remote_asn.get_ref(),
                        b.asn.get_ref()
                    ),
                );
            }
        }
        if let Some(p) = &n.md5_password {
            // Not the key itself: errors are logged.
            let len = p.get_ref().0.len();
            if len == 0 || len > dataplane::sys::sock::MD5_MAX_KEY {
                err(
                    p.span(),
                    format!("bgp.neighbor[{i}].md5_password"),
                    format!(
                        "{len} bytes: a TCP-MD5 key is 1 to {} bytes (RFC 2385, Linux's TCP_MD5SIG_MAXKEYLEN)",
                        dataplane::sys::sock::MD5_MAX_KEY
                    ),
                );
            }
        }
        if let Some(t) = &n.ttl_security {
            if let TtlSecurity::Hops(h) = t.get_ref() {
                if !(1..=254).contains(h) {
                    err(
                        t.span(),
                        format!("bgp.neighbor[{i}].ttl_security"),
                        format!("{h} hops: true, or 1 to 254 hops (RFC 5082 section 3)"),
                    );
                }
            }
        }
        let start = n.idle_hold_start_ms.as_ref().map_or(1000, |v| *v.get_ref());
        let max = n
            .idle_hold_max_ms
            .as_ref()
            .map_or(120_000, |v| *v.get_ref());
        for (field, v) in [
            ("idle_hold_start_ms", &n.idle_hold_start_ms),
            ("idle_hold_max_ms", &n.idle_hold_max_ms),
        ] {
            if let Some(v) = v {
                if !(1..=3_600_000).contains(v.get_ref()) {
                    err(
                        v.span(),
                        format!("bgp.neighbor[{i}].{field}"),
                        format!("{} ms: 1 to 3600000 (an hour)", v.get_ref()),
                    );
                }
            }
        }
        if start > max {
            let v = n
                .idle_hold_start_ms
                .as_ref()
                .or(n.idle_hold_max_ms.as_ref());
            if let Some(v) = v {
                err(
                    v.span(),
                    format!("bgp.neighbor[{i}].idle_hold_start_ms"),
                    format!("{start} ms is more than idle_hold_max_ms ({max} ms)"),
                );
            }
        }
        let ranges = [
            (
                &n.max_prefixes,
                "max_prefixes",
                1,
                u32::MAX.into(),
                "routes",
            ),
            (
                &n.max_prefixes_warning,
                "max_prefixes_warning",
                1,
                100,
                "percent",
            ),
            (
                &n.max_prefixes_restart,
                "max_prefixes_restart",
                1,
                86_400,
                "seconds",
            ),
        ];
        for (v, field, lo, hi, unit) in ranges {
            if let Some(v) = v {
                if !(lo..=hi).contains(v.get_ref()) {
                    err(
                        v.span(),
                        format!("bgp.neighbor[{i}].{field}"),
                        format!("{}: {lo} to {hi} {unit}", v.get_ref()),
                    );
                }
            }
        }
        for (v, field) in [
            (&n.max_prefixes_warning, "max_prefixes_warning"),
            (&n.max_prefixes_restart, "max_prefixes_restart"),
        ] {
            if let (Some(v), None) = (v, &n.max_prefixes) {
                err(
                    v.span(),
                    format!("bgp.neighbor[{i}].{field}"),
                    "is set without max_prefixes".into(),
                );
            }
        }
    }
}

/// What validation knows of a next hop when routes and label actions
/// refer to it.
struct NextHopFacts<'a> {
    port: Option<(usize, &'a str)>,
    port_role: Option<PortRole>,
    /// The VLAN, if it is a valid one.
    vlan: Option<i64>,
    n_labels: usize,
}

/// Checks `[router]`, `[[next_hop]]`, `[[service]]` and `[[label]]`, and
/// how they fit `forward_mode` and the ports.
fn validate_router(
    config: &Config,
    port_by_name: &HashMap<&str, usize>,
    err: &mut impl FnMut(Range<usize>, String, String),
) {
    let mode = config.dataplane.forward_mode.get_ref();
    let router = config.router.as_ref();
    match router {
        None => {
            if mode == "router" {
                err(
                    config.dataplane.forward_mode.span(),
                    "dataplane.forward_mode".into(),
                    "\"router\" needs a [router] section (role, label_base, label_count)".into(),
                );
            }
            let sections = [
                ("next_hop", config.next_hops.first().map(|n| n.name.span())),
                ("service", config.services.first().map(|s| s.name.span())),
                ("label", config.labels.first().map(|l| l.label.span())),
            ];
            for (name, span) in sections {
                if let Some(span) = span {
                    err(
                        span,
                        format!("{name}[0]"),
                        format!("[[{name}]] needs a [router] section and dataplane.forward_mode = \"router\""),
                    );
                }
            }
            return;
        }
        Some(r) if mode != "router" => err(
            r.span(),
            "router".into(),
            format!(
                "[router] is used only with dataplane.forward_mode = \"router\" (it is {mode:?})"
            ),
        ),
        Some(_) => {}
    }
    let Some(r) = router.map(|r| r.get_ref()) else {
        return;
    };

    let role = parse_role(r.role.get_ref());
    if role.is_none() {
        err(
            r.role.span(),
            "router.role".into(),
            format!(
                "{:?}: expected \"spoke\", \"hub\" or \"p\"",
                r.role.get_ref()
            ),
        );
    }

    // The local label range.
    let (base, count) = (*r.label_base.get_ref(), *r.label_count.get_ref());
    let mut range_ok = true;
    if base < FIRST_UNRESERVED_LABEL {
        err(
            r.label_base.span(),
            "router.label_base".into(),
            format!("{base}: labels 0-15 are reserved (RFC 3032); start at 16 or above"),
        );
        range_ok = false;
    } else if base > MAX_LABEL {
        err(
            r.label_base.span(),
            "router.label_base".into(),
            format!("{base} is over the largest label, {MAX_LABEL}"),
        );
        range_ok = false;
    }
    if count < 1 {
        err(
            r.label_count.span(),
            "router.label_count".into(),
            format!("{count}: at least one local label is needed"),
        );
        range_ok = false;
    } else if range_ok && count > MAX_LABEL + 1 - base {
        err(
            r.label_count.span(),
            "router.label_count".into(),
            format!(
                "{count} labels from {base} end past 2^20; at most {} fit above label_base {base}",
                MAX_LABEL + 1 - base
            ),
        );
        range_ok = false;
    }
    let range = range_ok.then(|| base..base + count);
    // Local label -> the field that took it.
    let mut local: HashMap<i64, String> = HashMap::new();
    let mut local_label =
        |l: &Spanned<i64>, field: String, err: &mut dyn FnMut(Range<usize>, String, String)| {
            let v = *l.get_ref();
            if let Some(range) = range.as_ref().filter(|r| !r.contains(&v)) {
                let (a, b) = (range.start, range.end);
                let m = format!("label {v} is outside the local range [{a}, {b}) (router.label_base, router.label_count)");
                err(l.span(), field, m);
                return;
            }
            match local.get(&v) {
                Some(other) => err(l.span(), field, format!("label {v} is also {other}")),
                None => {
                    local.insert(v, field);
                }
            }
        };
    if let Some(t) = &r.transport_label {
        local_label(t, "router.transport_label".into(), err);
    }

    // Ports as routes see them.
    let port_roles: Vec<Option<PortRole>> = config
        .ports
        .iter()
        .map(|p| match &p.role {
            None => Some(PortRole::Core),
            Some(r) => parse_port_role(r.get_ref()),
        })
        .collect();

    // Next hops.
    let mut nh_by_name: HashMap<&str, usize> = HashMap::new();
    let mut nhs = Vec::with_capacity(config.next_hops.len());
    for (i, nh) in config.next_hops.iter().enumerate() {
        let name = nh.name.get_ref();
        if name.is_empty() {
            err(
                nh.name.span(),
                format!("next_hop[{i}].name"),
                "empty name".into(),
            );
        } else if name == DISCARD_NAME || name.starts_with('~') {
            err(
                nh.name.span(),
                format!("next_hop[{i}].name"),
                format!("{name:?} is reserved (\"{DISCARD_NAME}\" is the null route; names starting with ~ are the router's own)"),
            );
        } else if let Some(j) = claim(&mut nh_by_name, name, i) {
            err(
                nh.name.span(),
                format!("next_hop[{i}].name"),
                format!("{name:?} is also next_hop[{j}]'s name"),
            );
        }
        let port = match port_by_name.get(nh.port.get_ref().as_str()) {
            Some(&p) => Some((p, config.ports[p].name.get_ref().as_str())),
            None => {
                err(
                    nh.port.span(),
                    format!("next_hop[{i}].port"),
                    format!("no port named {:?}", nh.port.get_ref()),
                );
                None
            }
        };
        if let Some(mac) = &nh.mac {
            if let Err(m) = parse_mac(mac.get_ref()) {
                err(mac.span(), format!("next_hop[{i}].mac"), m);
            } else if parse_mac(mac.get_ref()) == Ok([0; 6]) {
                err(
                    mac.span(),
                    format!("next_hop[{i}].mac"),
                    "00:00:00:00:00:00 is no station's address; give `address` to resolve the MAC by ARP".into(),
                );
            }
        }
        match (&nh.address, port) {
            (None, _) if nh.mac.is_none() => err(
                nh.name.span(),
                format!("next_hop[{i}]"),
                "needs `mac` (a static neighbour) or `address` (resolved by ARP)".into(),
            ),
            (Some(a), Some((p, pname))) => match parse_ipv4(a.get_ref()) {
                Err(m) => err(a.span(), format!("next_hop[{i}].address"), m),
                Ok(ip) => {
                    let own = config.ports[p]
                        .address
                        .as_ref()
                        .and_then(|o| parse_interface_address(o.get_ref()).ok());
                    match own {
                        None if nh.mac.is_none() => err(
                            a.span(),
                            format!("next_hop[{i}].address"),
                            format!("port {pname:?} has no address to send ARP from; give it one, or give the next hop a static `mac`"),
                        ),
                        Some((o, len)) if nh.mac.is_none() && (o ^ ip) & dataplane::lpm::mask(len) != 0 => err(
                            a.span(),
                            format!("next_hop[{i}].address"),
                            format!(
                                "{} is not on port {pname:?}'s subnet {}; a neighbour must be on-link",
                                a.get_ref(),
                                config.ports[p].address.as_ref().map_or("", |o| o.get_ref())
                            ),
                        ),
                        Some((o, _)) if o == ip => err(
                            a.span(),
                            format!("next_hop[{i}].address"),
                            format!("{} is port {pname:?}'s own address", a.get_ref()),
                        ),
                        _ => {}
                    }
                }
            },
            _ => {}
        }
        let vlan = match &nh.vlan {
            None => Some(0),
            Some(v) => check_vlan(v, format!("next_hop[{i}].vlan"), err).then_some(*v.get_ref()),
        };
        let labels = nh.labels.get_ref();
        if labels.len() > 2 {
            err(
                nh.labels.span(),
                format!("next_hop[{i}].labels"),
                format!(
                    "{} labels; a next hop pushes at most 2 (transport, then VPN)",
                    labels.len()
                ),
            );
        }
        for (k, l) in labels.iter().enumerate() {
            check_pushed_label(l, format!("next_hop[{i}].labels[{k}]"), err);
        }
        nhs.push(NextHopFacts {
            port,
            port_role: port.and_then(|(p, _)| port_roles[p]),
            vlan,
            n_labels: labels.len(),
        });
    }
    let find_nh =
        |n: &Spanned<String>, field: String, err: &mut dyn FnMut(Range<usize>, String, String)| {
            let found = nh_by_name.get(n.get_ref().as_str()).map(|&j| &nhs[j]);
            if found.is_none() {
                err(
                    n.span(),
                    field,
                    format!("no next hop named {:?}", n.get_ref()),
                );
            }
            found
        };

    // Services.
    let mut svc_by_name: HashMap<&str, usize> = HashMap::new();
    let mut bound: HashMap<(usize, i64), String> = HashMap::new();
    for (i, s) in config.services.iter().enumerate() {
        let name = s.name.get_ref();
        if name.is_empty() {
            err(
                s.name.span(),
                format!("service[{i}].name"),
                "empty name".into(),
            );
        } else if let Some(j) = claim(&mut svc_by_name, name, i) {
            err(
                s.name.span(),
                format!("service[{i}].name"),
                format!("{name:?} is also service[{j}]'s name"),
            );
        }
        if role == Some(Role::P) {
            err(
                s.name.span(),
                format!("service[{i}]"),
                "a P router (router.role = \"p\") has no services; it only switches labels".into(),
            );
        }
        match &s.gateway {
            Some(g) => {
                if let Err(m) = parse_ipv4(g.get_ref()) {
                    err(g.span(), format!("service[{i}].gateway"), m);
                }
            }
            None if role == Some(Role::Spoke) => err(
                s.name.span(),
                format!("service[{i}].gateway"),
                "missing: a spoke service needs its clients' gateway address".into(),
            ),
            None => {}
        }
        match &s.vpn_label {
            Some(l) => local_label(l, format!("service[{i}].vpn_label"), err),
            None if matches!(role, Some(Role::Spoke | Role::Hub)) => err(
                s.name.span(),
                format!("service[{i}].vpn_label"),
                "missing: packets reach a service from the core by its VPN label".into(),
            ),
            None => {}
        }
        if let Some(t) = &s.ttl_mode {
            if parse_ttl_mode(t.get_ref()).is_none() {
                err(
                    t.span(),
                    format!("service[{i}].ttl_mode"),
                    format!("{:?}: expected \"uniform\" or \"pipe\"", t.get_ref()),
                );
            }
        }
        // This service's (port, VLAN) bindings; incomplete if one of
        // them is wrong, and then not used to judge downstream routes.
        let mut mine: Vec<(usize, i64)> = Vec::new();
        let mut mine_complete = true;
        for (k, a) in s.access.iter().enumerate() {
            let vlan = a.vlan.as_ref().map_or(0, |v| *v.get_ref());
            let vlan_ok = match &a.vlan {
                None => true,
                Some(v) => check_vlan(v, format!("service[{i}].access[{k}].vlan"), err),
            };
            let Some(&p) = port_by_name.get(a.port.get_ref().as_str()) else {
                mine_complete = false;
                err(
                    a.port.span(),
                    format!("service[{i}].access[{k}].port"),
                    format!("no port named {:?}", a.port.get_ref()),
                );
                continue;
            };
            if port_roles[p] == Some(PortRole::Core) {
                err(
                    a.port.span(),
                    format!("service[{i}].access[{k}].port"),
                    format!(
                        "port {:?} is a core port; services bind to ports with role = \"access\"",
                        a.port.get_ref()
                    ),
                );
            }
            if !vlan_ok {
                mine_complete = false;
                continue;
            }
            let field = format!("service[{i}].access[{k}]");
            match bound.get(&(p, vlan)) {
                Some(other) => {
                    mine_complete = false;
                    err(
                        a.port.span(),
                        field,
                        format!(
                            "port {:?} VLAN {vlan} is already bound by {other}",
                            a.port.get_ref()
                        ),
                    )
                }
                None => {
                    bound.insert((p, vlan), format!("{field} ({name:?})"));
                    mine.push((p, vlan));
                }
            }
        }
        // Routes, table by table.
        let tables = [
            ("upstream", &s.upstream, Role::Spoke),
            ("downstream", &s.downstream, Role::Spoke),
            ("hub", &s.hub, Role::Hub),
        ];
        for (table, routes, used_by) in tables {
            if let (Some(role), Some(first)) = (role, routes.first()) {
                if role != used_by && role != Role::P {
                    err(
                        first.prefix.span(),
                        format!("service[{i}].{table}"),
                        format!(
                            "{table} routes are used only by router.role = \"{}\" (this router is a {})",
                            role_name(used_by),
                            role_name(role)
                        ),
                    );
                }
            }
            let mut seen: HashMap<(u32, u8), usize> = HashMap::new();
            for (k, rt) in routes.iter().enumerate() {
                let field = format!("service[{i}].{table}[{k}]");
                match parse_prefix(rt.prefix.get_ref()) {
                    Ok(p) => {
                        if let Some(j) = seen.insert(p, k) {
                            err(
                                rt.prefix.span(),
                                format!("{field}.prefix"),
                                format!(
                                    "{} is also service[{i}].{table}[{j}]'s prefix",
                                    rt.prefix.get_ref()
                                ),
                            );
                        }
                    }
                    Err(m) => err(rt.prefix.span(), format!("{field}.prefix"), m),
                }
                if rt.next_hop.get_ref() == DISCARD_NAME {
                    continue;
                }
                let Some(nh) = find_nh(&rt.next_hop, format!("{field}.next_hop"), err) else {
                    continue;
                };
                if role != Some(Role::Spoke) {
                    continue;
                }
                let nh_name = rt.next_hop.get_ref();
                let mut bad = |m: String| err(rt.next_hop.span(), format!("{field}.next_hop"), m);
                match table {
                    "upstream" => {
                        if nh.n_labels == 0 {
                            bad(format!(
                                "next hop {nh_name:?} pushes no labels: client traffic never leaves a spoke unlabelled"
                            ));
                        }
                        if let (Some(PortRole::Access), Some((_, port))) = (nh.port_role, nh.port) {
                            bad(format!(
                                "next hop {nh_name:?} is on access port {port:?}: upstream traffic goes to the core"
                            ));
                        }
                    }
                    "downstream" => {
                        if let (Some(PortRole::Core), Some((_, port))) = (nh.port_role, nh.port) {
                            bad(format!(
                                "next hop {nh_name:?} is on port {port:?}, which is not an access port: downstream routes lead to clients"
                            ));
                        } else if let (Some(PortRole::Access), Some((p, port)), Some(vlan)) =
                            (nh.port_role, nh.port, nh.vlan)
                        {
                            if mine_complete && !mine.contains(&(p, vlan)) {
                                bad(format!(
                                    "next hop {nh_name:?} is on port {port:?} VLAN {vlan}, which service {name:?} is not bound to (see its access list)"
                                ));
                            }
                        }
                        if nh.n_labels != 0 {
                            bad(format!(
                                "next hop {nh_name:?} pushes labels: traffic to clients leaves unlabelled"
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    // Hub policy rules.
    let mut rules = 0usize;
    for (i, s) in config.services.iter().enumerate() {
        let Some(first) = s.policy.first() else {
            continue;
        };
        if let Some(role) = role.filter(|&r| r != Role::Hub) {
            err(
                first.prefix.span(),
                format!("service[{i}].policy"),
                format!(
                    "policy rules are the hub's target processing (router.role = \"hub\"); this router is a {}",
                    role_name(role)
                ),
            );
        }
        if s.policy.len() > MAX_SERVICE_RULES {
            err(
                s.policy[MAX_SERVICE_RULES].prefix.span(),
                format!("service[{i}].policy[{MAX_SERVICE_RULES}]"),
                format!("a service has at most {MAX_SERVICE_RULES} rules"),
            );
        }
        for (k, r) in s.policy.iter().enumerate() {
            rules += 1;
            if rules == MAX_RULES + 1 {
                err(
                    r.prefix.span(),
                    format!("service[{i}].policy[{k}]"),
                    format!("at most {MAX_RULES} policy rules in all services"),
                );
            }
            if let Err((at, field, m)) = policy_rule(r) {
                err(at, format!("service[{i}].policy[{k}].{field}"), m);
            }
        }
    }

    // Static label actions.
    for (i, l) in config.labels.iter().enumerate() {
        local_label(&l.label, format!("label[{i}].label"), err);
        let action = l.action.get_ref().as_str();
        let (wants_out, wants_nh) = match action {
            "swap" => (true, true),
            "php" => (false, true),
            "pop" => (false, false),
            other => {
                err(
                    l.action.span(),
                    format!("label[{i}].action"),
                    format!("{other:?}: expected \"swap\", \"php\" or \"pop\""),
                );
                continue;
            }
        };
        match (&l.out_label, wants_out) {
            (Some(o), true) => check_pushed_label(o, format!("label[{i}].out_label"), err),
            (None, true) => err(
                l.action.span(),
                format!("label[{i}].out_label"),
                format!("missing: action {action:?} needs out_label"),
            ),
            (Some(o), false) => err(
                o.span(),
                format!("label[{i}].out_label"),
                format!("not used by action {action:?}"),
            ),
            (None, false) => {}
        }
        match (&l.next_hop, wants_nh) {
            (Some(n), true) => {
                if let Some(nh) = find_nh(n, format!("label[{i}].next_hop"), err) {
                    if nh.n_labels != 0 {
                        err(
                            n.span(),
                            format!("label[{i}].next_hop"),
                            format!(
                                "next hop {:?} pushes labels, which action {action:?} does not use (it sends the stack on as it is); name a next hop without labels",
                                n.get_ref()
                            ),
                        );
                    }
                }
            }
            (None, true) => err(
                l.action.span(),
                format!("label[{i}].next_hop"),
                format!("missing: action {action:?} needs next_hop"),
            ),
            (Some(n), false) => err(
                n.span(),
                format!("label[{i}].next_hop"),
                format!("not used by action {action:?}"),
            ),
            (None, false) => {}
        }
    }
}

/// Records `name` as item `i`'s unless an earlier item has it; returns
/// that item. References resolve to the first of duplicates.
fn claim<'a>(names: &mut HashMap<&'a str, usize>, name: &'a str, i: usize) -> Option<usize> {
    match names.entry(name) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(i);
            None
        }
    }
}

/// A VLAN id for a binding or a next hop: 0 (untagged) to 4094.
fn check_vlan(
    v: &Spanned<i64>,
    field: String,
    err: &mut dyn FnMut(Range<usize>, String, String),
) -> bool {
    let ok = (0..=MAX_VLAN).contains(v.get_ref());
    if !ok {
        err(
            v.span(),
            field,
            format!(
                "VLAN {} is out of range (0 for untagged, or 1 to {MAX_VLAN})",
                v.get_ref()
            ),
        );
    }
    ok
}

/// A label we put on the wire: 20 bits, and none of the reserved ones.
fn check_pushed_label(
    l: &Spanned<i64>,
    field: String,
    err: &mut dyn FnMut(Range<usize>, String, String),
) {
    let v = *l.get_ref();
    if !(0..=MAX_LABEL).contains(&v) {
        err(
            l.span(),
            field,
            format!("label {v} is out of range (labels are 20 bits: at most {MAX_LABEL})"),
        );
    } else if v < FIRST_UNRESERVED_LABEL {
        err(
            l.span(),
            field,
            format!("label {v} is reserved (0-15, RFC 3032) and cannot be pushed"),
        );
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

/// A complete spoke (the shape of the pipeline tests' fixture): clients A
/// (untagged) and B (VLAN 100) on `access0`, the hub behind `core0`, a
/// static swap and a penultimate-hop pop. Line numbers matter to the
/// tests that edit it.
#[cfg(test)]
pub(crate) const SPOKE_EXAMPLE: &str = include_str!("../../examples/spoke.toml");
#[cfg(test)]
pub(crate) const HUB_EXAMPLE: &str = include_str!("../../examples/hub.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Loaded, LoadError> {
        parse(Path::new("t.toml"), src)
    }

    /// A bare carriage return: the TOML parser's own message is empty,
    /// ours names it (found by the config fuzz target).
    #[test]
    fn a_bare_carriage_return_is_named() {
        for (src, line, col) in [("\r", 1, 1), ("a = 1\r\n\r", 2, 1)] {
            let e = errors(src);
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!((e[0].line, e[0].column), (line, col), "{e:?}");
            assert_eq!(
                e[0].message,
                "a carriage return not followed by a line feed"
            );
        }
    }

    /// An empty key names itself as `""`, not as nothing (found by the
    /// config fuzz target).
    #[test]
    fn an_empty_key_is_named() {
        let e = errors("'' = 2");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "\"\"");
        assert!(e[0].message.starts_with("unknown field ``"), "{e:?}");
    }

    /// The hub example's policy rules, each broken one way: one error
    /// each, naming the rule's field and line.
    #[test]
    fn broken_policy_rules_name_their_field_and_line() {
        let rule =
            |r: &str| HUB_EXAMPLE.replace("{ prefix = \"10.0.0.66/32\", action = \"deny\" }", r);
        #[rustfmt::skip]
        let cases: Vec<(&str, String, &str, usize, &str)> = vec![
            ("unknown action", rule("{ prefix = \"10.0.0.66/32\", action = \"drop\" }"), "service[0].policy[1].action", 50, "\"drop\": expected \"permit\", \"deny\", \"count\" or \"police\""),
            ("bad prefix", rule("{ prefix = \"10.0.0.66/24\", action = \"deny\" }"), "service[0].policy[1].prefix", 50, "has host bits set"),
            ("unknown protocol", rule("{ prefix = \"10.0.0.66/32\", protocol = \"gre\", action = \"deny\" }"), "service[0].policy[1].protocol", 50, "\"gre\": expected \"tcp\", \"udp\", \"icmp\", \"sctp\" or a protocol number"),
            ("protocol 256", rule("{ prefix = \"10.0.0.66/32\", protocol = 256, action = \"deny\" }"), "service[0].policy[1].protocol", 50, "256 is not an IP protocol number"),
            ("port without protocol", rule("{ prefix = \"10.0.0.66/32\", port = 53, action = \"deny\" }"), "service[0].policy[1].port", 50, "a port needs protocol \"tcp\", \"udp\" or \"sctp\""),
            ("port with icmp", rule("{ prefix = \"10.0.0.66/32\", protocol = \"icmp\", port = 53, action = \"deny\" }"), "service[0].policy[1].port", 50, "a port needs protocol"),
            ("backwards range", rule("{ prefix = \"10.0.0.66/32\", protocol = \"udp\", port = \"60-50\", action = \"deny\" }"), "service[0].policy[1].port", 50, "the range ends before it starts"),
            ("port 70000", rule("{ prefix = \"10.0.0.66/32\", protocol = \"tcp\", port = 70000, action = \"deny\" }"), "service[0].policy[1].port", 50, "70000 is not a port"),
            ("not a range", rule("{ prefix = \"10.0.0.66/32\", protocol = \"tcp\", port = \"http\", action = \"deny\" }"), "service[0].policy[1].port", 50, "expected a port (53) or a range"),
            ("police without rate", rule("{ prefix = \"10.0.0.66/32\", action = \"police\", burst_bytes = 1500 }"), "service[0].policy[1].rate_bps", 50, "missing: action \"police\" needs rate_bps"),
            ("police without burst", rule("{ prefix = \"10.0.0.66/32\", action = \"police\", rate_bps = 1000000 }"), "service[0].policy[1].burst_bytes", 50, "missing: action \"police\" needs burst_bytes"),
            ("rate too low", rule("{ prefix = \"10.0.0.66/32\", action = \"police\", rate_bps = 999, burst_bytes = 1500 }"), "service[0].policy[1].rate_bps", 50, "999 is below the lowest rate, 1000 bits/s"),
            ("burst 0", rule("{ prefix = \"10.0.0.66/32\", action = \"police\", rate_bps = 1000000, burst_bytes = 0 }"), "service[0].policy[1].burst_bytes", 50, "0 is not 1 to 1073741824 bytes"),
            ("rate on deny", rule("{ prefix = \"10.0.0.66/32\", action = \"deny\", rate_bps = 1000000 }"), "service[0].policy[1].rate_bps", 50, "not used by action \"deny\" (only \"police\")"),
            ("unknown rule field", rule("{ prefix = \"10.0.0.66/32\", action = \"deny\", dport = 53 }"), "service[0].policy[1].dport", 50, "unknown field `dport`"),
            ("policy on a spoke", SPOKE_EXAMPLE.replace("upstream = [", "policy = [ { prefix = \"10.0.0.20/32\", action = \"deny\" } ]\nupstream = ["), "service[0].policy", 51, "policy rules are the hub's target processing (router.role = \"hub\"); this router is a spoke"),
        ];
        p(HUB_EXAMPLE).expect("the hub example is valid");
        check_cases(HUB_EXAMPLE, &cases);
        // Too many rules for one service.
        let many: String = (0..=MAX_SERVICE_RULES)
            .map(|i| {
                format!(
                    "{{ prefix = \"10.9.{}.{}/32\", action = \"count\" }},\n",
                    i / 256,
                    i % 256
                )
            })
            .collect();
        let e = errors(&HUB_EXAMPLE.replace("policy = [\n", &format!("policy = [\n{many}")));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].field,
            format!("service[0].policy[{MAX_SERVICE_RULES}]")
        );
    }

    /// Each case (what, source, field, line, message fragment) is an
    /// edit of `base` with exactly one error, that one; all wrong ones
    /// are reported together.
    fn check_cases(base: &str, cases: &[(&str, String, &str, usize, &str)]) {
        let mut wrong = Vec::new();
        for (what, src, field, line, fragment) in cases {
            assert_ne!(src, base, "{what}: the edit did not apply");
            let e = errors(src);
            if e.len() != 1
                || (e[0].field.as_str(), e[0].line) != (*field, *line)
                || !e[0].message.contains(fragment)
            {
                wrong.push(format!(
                    "{what}: want {field} at line {line} with {fragment:?}, got {:#?}",
                    e.iter().map(|e| e.to_string()).collect::<Vec<_>>()
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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

    #[test]
    fn spoke_example_validates() {
        let l = p(SPOKE_EXAMPLE).expect("valid");
        let c = &l.config;
        let r = c.router.as_ref().unwrap().get_ref();
        assert_eq!(r.role.get_ref(), "spoke");
        assert_eq!(*r.transport_label.as_ref().unwrap().get_ref(), 1000);
        assert_eq!(c.ports[0].role.as_ref().unwrap().get_ref(), "access");
        assert_eq!(c.next_hops.len(), 4);
        assert_eq!(c.services[0].access.len(), 2);
        assert_eq!(c.services[0].downstream.len(), 2);
        assert!(c.services[0].anti_spoofing);
        assert_eq!(c.labels.len(), 2);
    }

    /// A service `red` appended to the example, bound to `access`.
    #[test]
    fn a_spoke_with_vpn_settings_and_bgp_validates() {
        let src = format!(
            "{}\n[bgp]\nasn = 4200000001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 4200000001\npassive = true\n",
            SPOKE_EXAMPLE
                .replace(
                    "vpn_label = 1001\n",
                    "vpn_label = 1001\nroute_distinguisher = \"192.0.2.1:1\"\nimport_targets = [\"65000:1\"]\nexport_targets = [\"65000:2\", \"4200000000:2\"]\naddress_server = \"192.0.2.50\"\n",
                )
                .replace("{ port = \"access0\", vlan = 100 }", "{ port = \"access0\", vlan = 100, mtu = 1496 }")
        );
        let l = p(&src).expect("valid");
        let b = l.config.bgp.as_ref().expect("[bgp]").get_ref();
        assert_eq!(*b.asn.get_ref(), 4_200_000_001);
        assert!(b.neighbors[0].passive);
        assert_eq!(l.config.services[0].export_targets.len(), 2);
    }

    /// TCP-MD5 and GTSM per neighbour: `ttl_security` as `true` (one
    /// hop) or a number of hops; the key never shows in debug output.
    #[test]
    fn md5_and_ttl_security_validate_and_the_key_stays_hidden() {
        let src = format!(
            "{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nmd5_password = \"hush-hush\"\nttl_security = true\n[[bgp.neighbor]]\naddress = \"192.0.2.10\"\nremote_asn = 65000\nttl_security = 3\n",
            SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")
        );
        let l = p(&src).expect("valid");
        let b = l.config.bgp.as_ref().expect("[bgp]").get_ref();
        let n = &b.neighbors;
        assert_eq!(
            n[0].md5_password.as_ref().map(|p| p.get_ref().0.as_str()),
            Some("hush-hush")
        );
        assert_eq!(
            n[0].ttl_security.as_ref().and_then(|t| t.get_ref().hops()),
            Some(1)
        );
        assert_eq!(
            n[1].ttl_security.as_ref().and_then(|t| t.get_ref().hops()),
            Some(3)
        );
        assert!(n[1].md5_password.is_none());
        assert!(!format!("{:?}", l.config).contains("hush"));
    }

    fn with_red(access: &str) -> String {
        format!(
            "{SPOKE_EXAMPLE}\n[[service]]\nname = \"red\"\ngateway = \"10.1.0.1\"\nvpn_label = 1003\naccess = [ {access} ]\n"
        )
    }

    /// Broken configurations, each with the one error it must produce:
    /// (what is broken, replace this, with this, field, line, message
    /// fragment). An empty `from` appends `to`.
    #[test]
    fn broken_router_configs_name_field_line_and_problem() {
        // Lines of SPOKE_EXAMPLE: 3 forward_mode, 5 [router], 7
        // label_base, 8 label_count, 14 access0's role, 20 core0's
        // address, 25-26 hub's mac and labels, 37 client-b's vlan, 41
        // core-next's port, 47 vpn_label, 50 access, 51 upstream, 53-54
        // downstream, 58-61 label[0], 64-66 label[1]; appended red's
        // access list is line 72.
        let red = |a: &str| with_red(a);
        #[rustfmt::skip]
        let cases: Vec<(&str, String, &str, &str, usize, &str)> = vec![
            ("unknown next hop", SPOKE_EXAMPLE.replace("next_hop = \"hub\"", "next_hop = \"hubb\""), "", "service[0].upstream[0].next_hop", 51, "no next hop named \"hubb\""),
            ("unknown port", SPOKE_EXAMPLE.replace("port = \"core0\"\nmac = \"02:40:00:00:00:09\"\n\n", "port = \"core9\"\nmac = \"02:40:00:00:00:09\"\n\n"), "", "next_hop[3].port", 41, "no port named \"core9\""),
            ("unknown access port", red("{ port = \"access1\" }"), "", "service[1].access[0].port", 72, "no port named \"access1\""),
            ("duplicate next hop", format!("{SPOKE_EXAMPLE}\n[[next_hop]]\nname = \"hub\"\nport = \"core0\"\nmac = \"02:00:00:00:00:01\"\n"), "", "next_hop[4].name", 69, "\"hub\" is also next_hop[0]'s name"),
            ("a CPU per worker", SPOKE_EXAMPLE.replace("workers = [1]\n", "workers = [1]\nworker_cpus = [0, 1]\n"), "", "dataplane.worker_cpus", 3, "2 CPUs for 1 workers: one CPU per worker"),
            ("no route table memory", SPOKE_EXAMPLE.replace("workers = [1]\n", "workers = [1]\nroute_table_memory_mb = 0\n"), "", "dataplane.route_table_memory_mb", 3, "0 is out of range: 1 to 65536 (MiB per route table)"),
            ("too much route table memory", SPOKE_EXAMPLE.replace("workers = [1]\n", "workers = [1]\nroute_table_memory_mb = 65537\n"), "", "dataplane.route_table_memory_mb", 3, "65537 is out of range: 1 to 65536"),
            ("reserved next hop name", format!("{SPOKE_EXAMPLE}\n[[next_hop]]\nname = \"discard\"\nport = \"core0\"\nmac = \"02:00:00:00:00:01\"\n"), "", "next_hop[4].name", 69, "\"discard\" is reserved"),
            ("duplicate service", red("{ port = \"access0\", vlan = 7 }").replace("name = \"red\"", "name = \"blue\""), "", "service[1].name", 69, "\"blue\" is also service[0]'s name"),
            ("host bits", SPOKE_EXAMPLE.replace("10.0.0.10/32", "10.0.0.10/24"), "", "service[0].downstream[0].prefix", 53, "\"10.0.0.10/24\" has host bits set (0.0.0.10 lies beyond the /24; the network is 10.0.0.0/24)"),
            ("prefix too long", SPOKE_EXAMPLE.replace("10.0.0.20/32", "10.0.0.20/33"), "", "service[0].downstream[1].prefix", 54, "prefix length 33 is over 32"),
            ("no prefix length", SPOKE_EXAMPLE.replace("\"0.0.0.0/0\"", "\"0.0.0.0\""), "", "service[0].upstream[0].prefix", 51, "has no prefix length"),
            ("not an address", SPOKE_EXAMPLE.replace("\"0.0.0.0/0\"", "\"0.0.0/8\""), "", "service[0].upstream[0].prefix", 51, "\"0.0.0\" is not an IPv4 address"),
            ("duplicate prefix", SPOKE_EXAMPLE.replace("10.0.0.20/32", "10.0.0.10/32"), "", "service[0].downstream[1].prefix", 54, "10.0.0.10/32 is also service[0].downstream[0]'s prefix"),
            ("bad mac", SPOKE_EXAMPLE.replace("02:40:00:00:00:09\"\nlabels", "02:40:00:00:0g:09\"\nlabels"), "", "next_hop[0].mac", 25, "\"02:40:00:00:0g:09\" is not a MAC address"),
            ("multicast mac", SPOKE_EXAMPLE.replace("02:40:00:00:00:09\"\nlabels", "ff:ff:ff:ff:ff:ff\"\nlabels"), "", "next_hop[0].mac", 25, "multicast or broadcast"),
            ("vlan out of range", SPOKE_EXAMPLE.replace("vlan = 100\n", "vlan = 4095\n"), "", "next_hop[2].vlan", 37, "VLAN 4095 is out of range"),
            ("access vlan out of range", red("{ port = \"access0\", vlan = -1 }"), "", "service[1].access[0].vlan", 72, "VLAN -1 is out of range"),
            ("three labels", SPOKE_EXAMPLE.replace("[100, 2001]", "[100, 2001, 3001]"), "", "next_hop[0].labels", 26, "3 labels; a next hop pushes at most 2"),
            ("label over 20 bits", SPOKE_EXAMPLE.replace("[100, 2001]", "[100, 1048576]"), "", "next_hop[0].labels[1]", 26, "label 1048576 is out of range"),
            ("reserved label pushed", SPOKE_EXAMPLE.replace("[100, 2001]", "[3, 2001]"), "", "next_hop[0].labels[0]", 26, "label 3 is reserved"),
            ("reserved swap label", SPOKE_EXAMPLE.replace("out_label = 555", "out_label = 0"), "", "label[0].out_label", 60, "label 0 is reserved"),
            ("vpn label outside range", SPOKE_EXAMPLE.replace("vpn_label = 1001", "vpn_label = 999"), "", "service[0].vpn_label", 47, "label 999 is outside the local range [1000, 5096)"),
            ("static label outside range", SPOKE_EXAMPLE.replace("label = 1004", "label = 5096"), "", "label[1].label", 64, "label 5096 is outside the local range"),
            ("local label twice", SPOKE_EXAMPLE.replace("label = 1002", "label = 1001"), "", "label[0].label", 58, "label 1001 is also service[0].vpn_label"),
            ("transport label reused", SPOKE_EXAMPLE.replace("vpn_label = 1001", "vpn_label = 1000"), "", "service[0].vpn_label", 47, "label 1000 is also router.transport_label"),
            ("reserved label base", SPOKE_EXAMPLE.replace("label_base = 1000", "label_base = 15"), "", "router.label_base", 7, "labels 0-15 are reserved"),
            ("huge label count", SPOKE_EXAMPLE.replace("label_count = 4096", "label_count = 9223372036854775807"), "", "router.label_count", 8, "end past 2^20"),
            ("range past 20 bits", SPOKE_EXAMPLE.replace("label_count = 4096", "label_count = 1048000"), "", "router.label_count", 8, "1048000 labels from 1000 end past 2^20; at most 1047576 fit"),
            ("binding on a core port", red("{ port = \"core0\" }"), "", "service[1].access[0].port", 72, "port \"core0\" is a core port"),
            ("binding twice", red("{ port = \"access0\", vlan = 100 }"), "", "service[1].access[0]", 72, "port \"access0\" VLAN 100 is already bound by service[0].access[1] (\"blue\")"),
            ("unlabelled upstream", SPOKE_EXAMPLE.replace("next_hop = \"hub\"", "next_hop = \"core-next\""), "", "service[0].upstream[0].next_hop", 51, "pushes no labels: client traffic never leaves a spoke unlabelled"),
            ("downstream to the core", SPOKE_EXAMPLE.replace("next_hop = \"client-a\"", "next_hop = \"core-next\""), "", "service[0].downstream[0].next_hop", 53, "not an access port"),
            ("downstream to an unbound vlan", SPOKE_EXAMPLE.replace("vlan = 100\n", "vlan = 200\n"), "", "service[0].downstream[1].next_hop", 54, "is on port \"access0\" VLAN 200, which service \"blue\" is not bound to"),
            ("swap without out_label", SPOKE_EXAMPLE.replace("out_label = 555\n", ""), "", "label[0].out_label", 59, "missing: action \"swap\" needs out_label"),
            ("php without next hop", SPOKE_EXAMPLE.replace("action = \"php\"\nnext_hop = \"core-next\"", "action = \"php\""), "", "label[1].next_hop", 65, "missing: action \"php\" needs next_hop"),
            ("swap to a labelled next hop", SPOKE_EXAMPLE.replace("out_label = 555\nnext_hop = \"core-next\"", "out_label = 555\nnext_hop = \"hub\""), "", "label[0].next_hop", 61, "pushes labels, which action \"swap\" does not use"),
            ("router without router mode", SPOKE_EXAMPLE.replace("forward_mode = \"router\"", "forward_mode = \"io\""), "", "router", 5, "[router] is used only with dataplane.forward_mode = \"router\" (it is \"io\")"),
            ("router mode without router", GOOD.replace("workers = [1]", "workers = [1]\nforward_mode = \"router\""), "", "dataplane.forward_mode", 4, "\"router\" needs a [router] section"),
            ("services without router", format!("{GOOD}\n[[service]]\nname = \"x\"\n"), "", "service[0]", 15, "[[service]] needs a [router] section"),
            ("hub routes on a spoke", SPOKE_EXAMPLE.replace("upstream = [", "hub = [ { prefix = \"10.0.0.20/32\", next_hop = \"hub\" } ]\nupstream = ["), "", "service[0].hub", 51, "hub routes are used only by router.role = \"hub\" (this router is a spoke)"),
            ("unknown role", SPOKE_EXAMPLE.replace("role = \"spoke\"", "role = \"edge\""), "", "router.role", 6, "\"edge\": expected \"spoke\", \"hub\" or \"p\""),
            ("unknown port role", SPOKE_EXAMPLE.replace("role = \"core\"", "role = \"uplink\""), "", "port[1].role", 19, "\"uplink\": expected \"access\" or \"core\""),
            ("bad port address", SPOKE_EXAMPLE.replace("192.0.2.1", "192.0.2.256"), "", "port[1].address", 20, "\"192.0.2.256/24\" is not an IPv4 interface address"),
            ("port address is the subnet", SPOKE_EXAMPLE.replace("192.0.2.1/24", "192.0.2.0/24"), "", "port[1].address", 20, "is the subnet's network or broadcast address"),
            ("host tap name too long", SPOKE_EXAMPLE.replace("192.0.2.1/24\"\n", "192.0.2.1/24\"\nhost_iface = \"hdvrf-core-port0\"\n"), "", "port[1].host_iface", 21, "is 16 bytes; an interface name has 15 at most"),
            ("next hop without a neighbour", SPOKE_EXAMPLE.replace("port = \"core0\"\nmac = \"02:40:00:00:00:09\"\n\n", "port = \"core0\"\n\n"), "", "next_hop[3]", 40, "needs `mac` (a static neighbour) or `address` (resolved by ARP)"),
            ("neighbour off the subnet", SPOKE_EXAMPLE.replace("port = \"core0\"\nmac = \"02:40:00:00:00:09\"\n\n", "port = \"core0\"\naddress = \"198.51.100.9\"\n\n"), "", "next_hop[3].address", 42, "198.51.100.9 is not on port \"core0\"'s subnet 192.0.2.1/24"),
            ("ARP from a port without an address", SPOKE_EXAMPLE.replace("mac = \"02:ca:00:00:00:0a\"", "address = \"10.0.0.10\""), "", "next_hop[1].address", 31, "port \"access0\" has no address to send ARP from"),
            ("all-zero mac", SPOKE_EXAMPLE.replace("02:40:00:00:00:09\"\nlabels", "00:00:00:00:00:00\"\nlabels"), "", "next_hop[0].mac", 25, "00:00:00:00:00:00 is no station's address"),
            ("bad gateway", SPOKE_EXAMPLE.replace("gateway = \"10.0.0.1\"", "gateway = \"10.0.0.1/24\""), "", "service[0].gateway", 46, "is not an IPv4 address"),
            ("bad ttl mode", SPOKE_EXAMPLE.replace("\"uniform\"", "\"short\""), "", "service[0].ttl_mode", 48, "\"short\": expected \"uniform\" or \"pipe\""),
            ("unknown service field", SPOKE_EXAMPLE.replace("anti_spoofing = true", "anti_spoof = true"), "", "service[0].anti_spoof", 49, "unknown field `anti_spoof`"),
            ("control socket path too long", format!("{SPOKE_EXAMPLE}\n[control]\nsocket = \"/run/{}.sock\"\n", "x".repeat(100)), "", "control.socket", 69, "110 bytes: a unix socket path holds at most 107"),
            ("bad metrics address", format!("{SPOKE_EXAMPLE}\n[control]\nmetrics = \"localhost\"\n"), "", "control.metrics", 69, "\"localhost\" is not ADDRESS:PORT"),
            ("max sessions 0", format!("{SPOKE_EXAMPLE}\n[control]\nmax_sessions = 0\n"), "", "control.max_sessions", 69, "0 is out of range: 1 to 1048576"),
            ("unknown control field", format!("{SPOKE_EXAMPLE}\n[control]\nsock = \"/run/x.sock\"\n"), "", "control.sock", 69, "unknown field `sock`"),
            ("bad route distinguisher", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000\"\n"), "", "service[0].route_distinguisher", 48, "\"65000\" is not ADMIN:NUMBER"),
            ("duplicate route distinguisher", format!("{}\n[[service]]\nname = \"red\"\ngateway = \"10.1.0.1\"\nvpn_label = 1003\nroute_distinguisher = \"65000:1\"\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "service[1].route_distinguisher", 73, "65000:1 is also service[0]'s: each service needs its own"),
            ("route target number too big", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nimport_targets = [\"65000:1\", \"192.0.2.1:70000\"]\n"), "", "service[0].import_targets[1]", 48, "the number 70000 is over 65535"),
            ("address server port 0", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\naddress_server = \"192.0.2.50:0\"\n"), "", "service[0].address_server", 48, "the port must be 1 to 65535"),
            ("sub-interface MTU over the port's", SPOKE_EXAMPLE.replace("{ port = \"access0\", vlan = 100 }", "{ port = \"access0\", vlan = 100, mtu = 1600 }"), "", "service[0].access[1].mtu", 50, "MTU 1600 is out of range: 68 (RFC 791) up to port \"access0\"'s 1500"),
            ("bgp without route distinguishers", format!("{SPOKE_EXAMPLE}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n"), "", "service[0].route_distinguisher", 45, "missing: with [bgp], every service's routes need a route distinguisher"),
            ("bgp hold time of 2 s", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nhold_time = 2\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.neighbor[0].hold_time", 75, "a hold time is 0 or 3 to 65535 seconds (RFC 4271 section 4.2)"),
            ("bgp md5 key too long", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nmd5_password = \"{}\"\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n"), "k".repeat(81)), "", "bgp.neighbor[0].md5_password", 75, "81 bytes: a TCP-MD5 key is 1 to 80 bytes"),
            ("bgp ttl security of 255 hops", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nttl_security = 255\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.neighbor[0].ttl_security", 75, "255 hops: true, or 1 to 254 hops (RFC 5082 section 3)"),
            ("bgp router id 0.0.0.0", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"0.0.0.0\"\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.router_id", 71, "0.0.0.0 is not a router id (RFC 6286)"),
            ("bgp neighbour via no next hop", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nvia = \"nowhere\"\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.neighbor[0].via", 75, "no [[next_hop]] is named \"nowhere\""),
            ("bgp max_prefixes 0", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nmax_prefixes = 0\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.neighbor[0].max_prefixes", 75, "0: 1 to 4294967295 routes"),
            ("bgp max_prefixes_warning without max_prefixes", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nmax_prefixes_warning = 90\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.neighbor[0].max_prefixes_warning", 75, "is set without max_prefixes"),
            ("bgp neighbour on port 0", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\nport = 0\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.neighbor[0].port", 75, "0 is not a TCP port (1 to 65535)"),
            ("bgp next hop 0.0.0.0", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\nnext_hop = \"0.0.0.0\"\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.next_hop", 72, "0.0.0.0 cannot be a next hop"),
            ("bgp multipath 9", format!("{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\nmultipath = 9\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.multipath", 72, "9: 1 (no ECMP) to 8 paths"),
            ("bgp AS 0", format!("{}\n[bgp]\nasn = 0\nrouter_id = \"192.0.2.1\"\n", SPOKE_EXAMPLE.replace("vpn_label = 1001\n", "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n")), "", "bgp.asn", 70, "AS 0 is out of range"),
            ("unknown route field", SPOKE_EXAMPLE.replace("{ prefix = \"0.0.0.0/0\", next_hop", "{ prefix = \"0.0.0.0/0\", nexthop"), "", "service[0].upstream[0].nexthop", 51, "unknown field `nexthop`"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (what, src, ..) in &cases {
            assert!(seen.insert(src.clone()), "{what}: the edit did not apply");
        }
        let cases: Vec<_> = cases
            .into_iter()
            .map(|(w, s, _, f, l, m)| (w, s, f, l, m))
            .collect();
        check_cases(SPOKE_EXAMPLE, &cases);
        assert!(cases.len() >= 12);
    }

    /// Peer oscillation damping's knobs: each within 1 ms to an hour, the
    /// start no more than the cap.
    #[test]
    fn idle_hold_knobs_are_checked() {
        let with = |knobs: &str| {
            format!(
                "{}\n[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.9\"\nremote_asn = 65000\n{knobs}",
                SPOKE_EXAMPLE.replace(
                    "vpn_label = 1001\n",
                    "vpn_label = 1001\nroute_distinguisher = \"65000:1\"\n"
                )
            )
        };
        assert!(p(&with("idle_hold_start_ms = 100\nidle_hold_max_ms = 3200\n")).is_ok());
        let cases = vec![
            (
                "idle hold start 0",
                with("idle_hold_start_ms = 0\n"),
                "bgp.neighbor[0].idle_hold_start_ms",
                75,
                "0 ms: 1 to 3600000",
            ),
            (
                "idle hold cap over an hour",
                with("idle_hold_max_ms = 3600001\n"),
                "bgp.neighbor[0].idle_hold_max_ms",
                75,
                "1 to 3600000",
            ),
            (
                "idle hold start over the cap",
                with("idle_hold_start_ms = 5000\nidle_hold_max_ms = 4000\n"),
                "bgp.neighbor[0].idle_hold_start_ms",
                75,
                "5000 ms is more than idle_hold_max_ms (4000 ms)",
            ),
            (
                "idle hold start over the default cap",
                with("idle_hold_start_ms = 200000\n"),
                "bgp.neighbor[0].idle_hold_start_ms",
                75,
                "200000 ms is more than idle_hold_max_ms (120000 ms)",
            ),
        ];
        check_cases(SPOKE_EXAMPLE, &cases);
    }

    #[test]
    fn every_router_error_is_reported_at_once_with_its_column() {
        let src = SPOKE_EXAMPLE
            .replace("next_hop = \"hub\"", "next_hop = \"hubb\"")
            .replace("10.0.0.10/32", "10.0.0.10/24")
            .replace("label = 1002", "label = 1001")
            .replace("vlan = 100\n", "vlan = 5000\n");
        let e = errors(&src);
        let got: Vec<(&str, usize, usize)> = e
            .iter()
            .map(|e| (e.field.as_str(), e.line, e.column))
            .collect();
        assert_eq!(
            got,
            [
                ("next_hop[2].vlan", 37, 8),
                ("service[0].upstream[0].next_hop", 51, 49),
                ("service[0].downstream[0].prefix", 53, 16),
                ("label[0].label", 58, 9),
            ],
            "{e:#?}"
        );
        assert_eq!(
            e[1].to_string(),
            "t.toml:51:49: service[0].upstream[0].next_hop: no next hop named \"hubb\""
        );
    }

    #[test]
    fn p_and_hub_roles() {
        // A P router: only static label actions; services are refused.
        let p_src = SPOKE_EXAMPLE.replace("role = \"spoke\"", "role = \"p\"");
        let e = errors(&p_src);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!((e[0].field.as_str(), e[0].line), ("service[0]", 45));
        let cut = p_src.find("[[service]]").unwrap();
        let tail = p_src.find("[[label]]").unwrap();
        let p_only = format!("{}{}", &p_src[..cut], &p_src[tail..]);
        p(&p_only).expect("a P router without services is valid");
        // A hub routes only in its hub table.
        let hub = SPOKE_EXAMPLE.replace("role = \"spoke\"", "role = \"hub\"");
        let e = errors(&hub);
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["service[0].upstream", "service[0].downstream"]);
        let hub = hub
            .replace("upstream = [", "hub = [")
            .replace("downstream = [", "#downstream = [")
            .replace("    { prefix = \"10.0.0.", "#    { prefix = \"10.0.0.")
            .replace("]\n\n[[label]]", "#]\n\n[[label]]");
        // Hub next hops may be labelled (back to a spoke) or not (uplink).
        p(&hub).expect("a hub with a hub table is valid");
    }

    #[test]
    fn names_and_roles_convert_both_ways() {
        for r in [Role::Spoke, Role::Hub, Role::P] {
            assert_eq!(parse_role(role_name(r)), Some(r));
        }
        assert_eq!(parse_role("Spoke"), None);
        assert_eq!(parse_ttl_mode("uniform"), Some(TtlMode::Uniform));
        assert_eq!(parse_ttl_mode("pipe"), Some(TtlMode::Pipe));
        assert_eq!(parse_ttl_mode("short"), None);
        assert_eq!(parse_port_role("access"), Some(PortRole::Access));
        assert_eq!(parse_port_role("core"), Some(PortRole::Core));
        assert_eq!(parse_port_role("uplink"), None);
    }
}
