//! The management server on the control thread: `hdvrf run` serves the
//! JSON-lines protocol of `control::mgmt` on a unix socket (mode 0600).
//! Requests are handled one at a time on the control thread, which owns
//! the data plane and its table writer: a route change is a commit through
//! the publication mechanism, visible on every worker when the reply goes
//! out. Counters are read from the workers' per-core blocks and summed
//! here; nothing a request does touches a worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{anyhow, Context, Result};
use control::config::fmt_mac;
use control::config::{self, LoadError};
use control::mgmt::{self, Names, Reply, Request};
use control::neighbor::Neighbors;
use control::rib::{Rib, RouteKey, Source, Target};
use dataplane::pipeline::{Outcome, OutcomeKind};
use dataplane::policy::{Action, RuleSnapshot};
use dataplane::publish::{CommitError, PublishStats};
use dataplane::tables::{LabelAction, PortRole, RouteTable, TableOp};
use dataplane::trace::{TraceRecord, HEAD};
use dataplane::wire::{self, EtherType, EthernetFrame, Ipv4Packet, VlanTag};
use dataplane::{CoreSnapshot, Running, SubscriberSnapshot};

use crate::plane::Plane;
use control::engine::Dataplane as _;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// What the control thread owns: the running data plane and what the
/// management API needs to speak about it in the configuration's names.
pub struct Control {
    pub running: Plane,
    names: Names,
    devices: Vec<String>,
    /// Counters at the last `clear stats`, per core.
    base: Vec<(u32, CoreSnapshot)>,
    /// The configuration file and what it held when last applied:
    /// `reload` compares against it.
    config_path: PathBuf,
    applied: Applied,
    /// Traced packets collected from the workers, oldest first.
    traced: Vec<TraceRecord>,
    /// Next hops resolved by ARP.
    pub neighbors: Neighbors,
    /// The DHCP relay and the sessions (router mode).
    pub relay: Option<control::relay::Relay>,
    /// Per service (by name), what the configuration says of it beyond the
    /// tables: route distinguisher, targets, address server.
    vpn: HashMap<String, Value>,
    /// A session's next hop's counters when the session came up: its
    /// counts are what was added since (next hop ids are reused).
    session_base: HashMap<u32, SubscriberSnapshot>,
    /// Whether each port is an access port, and its address (0: none), by
    /// port id (ports change only with a restart).
    access_ports: Vec<(bool, u32)>,
    /// The BGP speaker (with `[bgp]`).
    pub bgp: Option<control::bgp::speaker::Speaker>,
    /// The RIB manager: every route and next hop the tables hold comes
    /// from it ([`Control::commit_rib`]). Session removals whose BGP
    /// withdrawal must be on its way first wait in it until the next tick
    /// (or the next commit).
    pub rib: Rib,
    /// A session's withdrawal was sent to an Established neighbour since
    /// the last commit: its route's removal waits for the next tick.
    withdrawal_pending: bool,
    /// Replies to clients whose sessions were published but not yet seen
    /// by every worker: sent once they are.
    awaiting: Vec<ToClient>,
    /// When refused table ops were last logged.
    rejects_logged: Option<std::time::Instant>,
    /// Each policy rule slot's counters when its rule was set or the
    /// stats cleared: what is shown is what was added since.
    rule_base: Vec<RuleSnapshot>,
}

/// Whether `frame` is ARP about `address` or IPv4 to it (never when
/// `address` is 0).
fn for_address(frame: &[u8], address: u32) -> bool {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (ethertype, l3) = match be16(12) {
        Some(0x8100) => (be16(16), 18),
        e => (e, 14),
    };
    let at = match ethertype {
        Some(0x0806) => l3 + 24,
        Some(0x0800) => l3 + 16,
        _ => return false,
    };
    address != 0 && frame.get(at..at + 4) == Some(&address.to_be_bytes()[..])
}

/// How long a request's commit waits for the workers before it answers
/// with the stall (workers pass a quiescent point every burst or idle
/// poll, so in practice microseconds).
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A server's reply on its way to the client, once the sessions of the
/// replies taken with it are published.
struct ToClient {
    reply: control::dhcp::FromServer,
    port: u16,
    vlan: u16,
    gateway: u32,
    mac: [u8; 6],
    /// An ACK's session: service, address and what the ACK did.
    up: Option<(u16, std::net::Ipv4Addr, control::sessions::Acked)>,
}

/// Refused table ops are logged at most this often (each is counted).
const REJECT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A request longer than this is refused (a route change is ~150 bytes).
const MAX_REQUEST: usize = 64 * 1024;

/// A successful reply serialized from its rows (`Reply` with its result
/// not built as a `Value`).
#[derive(serde::Serialize)]
struct DirectReply<T: serde::Serialize> {
    ok: bool,
    result: T,
}

/// One row of `show sessions`. Fields in the order of their names: the
/// order a `Value`'s map serializes them in, as this reply was before.
#[derive(serde::Serialize)]
struct SessionRow<'a> {
    address: std::net::Ipv4Addr,
    down_bytes: Option<u64>,
    down_packets: Option<u64>,
    lease_remaining_s: u64,
    mac: MacText,
    port: String,
    service: Option<&'a String>,
    spoofed_drops: Option<u64>,
    up_bytes: Option<u64>,
    up_packets: Option<u64>,
    up_s: u64,
    vlan: u16,
}

/// A MAC address serialized as `fmt_mac` writes it, without a `String`.
struct MacText([u8; 6]);

impl std::fmt::Display for MacText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl serde::Serialize for MacText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The configuration as last applied, for `reload` to compare against.
pub enum Applied {
    /// The text hdvrf started from, parsed only when a reload needs it:
    /// a file of 100k next hops takes as long to parse again as to load,
    /// and the start should not wait for that.
    Text(String),
    /// What the last reload applied, as plain TOML.
    Toml(toml::Value),
}

impl Control {
    pub fn new(
        running: Running,
        names: Names,
        devices: Vec<String>,
        config_path: PathBuf,
        applied: Applied,
    ) -> Control {
        let base = running
            .cores()
            .into_iter()
            .map(|(l, _)| (l, CoreSnapshot::default()))
            .collect();
        let access_ports = running
            .tables()
            .map(|t| {
                t.ports
                    .iter()
                    .map(|p| (p.role == PortRole::Access, p.address))
                    .collect()
            })
            .unwrap_or_default();
        let rib = running.tables().map(Rib::from_tables).unwrap_or_default();
        Control {
            rib,
            withdrawal_pending: false,
            awaiting: Vec::new(),
            rejects_logged: None,
            access_ports,
            running: Plane(running),
            names,
            devices,
            base,
            config_path,
            applied,
            traced: Vec::new(),
            neighbors: Neighbors::default(),
            relay: None,
            vpn: HashMap::new(),
            session_base: HashMap::new(),
            bgp: None,
            rule_base: vec![RuleSnapshot::default(); dataplane::policy::MAX_RULES],
        }
    }

    /// Takes the services' VPN settings and the file's downstream host
    /// routes from the configuration (at start and on reload; after the
    /// names).
    pub fn set_from_config(&mut self, c: &control::config::Config) {
        self.vpn = c
            .services
            .iter()
            .map(|s| {
                let list = |v: &[toml::Spanned<String>]| {
                    v.iter().map(|t| t.get_ref().clone()).collect::<Vec<_>>()
                };
                (
                    s.name.get_ref().clone(),
                    json!({
                        "route_distinguisher": s.route_distinguisher.as_ref().map(|r| r.get_ref()),
                        "import_targets": list(&s.import_targets),
                        "export_targets": list(&s.export_targets),
                        "address_server": s.address_server.as_ref().map(|a| a.get_ref()),
                    }),
                )
            })
            .collect();
    }

    /// One round of the host path (control thread): punted packets into
    /// the kernel and the kernel's frames out, neighbours learnt from the
    /// ARP packets among them and published, ARP requests that are due
    /// sent; the DHCP relay and sessions (`crate::relay`). Returns how many
    /// packets moved.
    pub fn host_tick(&mut self, now: std::time::Instant) -> usize {
        let mut learnt = Vec::new();
        let neighbors = &mut self.neighbors;
        // What the relay takes: DHCP and ARP from access ports (the
        // gateway answers ARP even where no address server is set).
        let relay_on = self.relay.is_some();
        let access = &self.access_ports;
        let mut taken: Vec<(u16, Vec<u8>)> = Vec::new();
        let mut moved = self.running.host_poll(|port, frame| {
            if let Some(TableOp::SetNeighbor { next_hop, mac }) = neighbors.learn(port, frame, now)
            {
                learnt.push((next_hop, mac));
            }
            let (is_access, address) = access.get(usize::from(port)).copied().unwrap_or_default();
            // The port's own address (a hub's uplink, say) is the
            // kernel's: its ARP and packets go to the tap.
            if relay_on && is_access && !for_address(frame, address) {
                taken.push((port, frame.to_vec()));
                return true;
            }
            false
        });
        if !learnt.is_empty() {
            // BGP's next hops made from these follow them.
            for &(next_hop, mac) in &learnt {
                self.rib.set_neighbor(next_hop, mac);
            }
            match self.commit_rib(Vec::new()) {
                Ok(_) => {
                    for (next_hop, mac) in &learnt {
                        crate::log::say!(
                            "hdvrf: next hop {} resolved: {}",
                            self.names.next_hop_name(*next_hop),
                            fmt_mac(mac)
                        );
                    }
                }
                Err(e) => eprintln!("hdvrf: error: publishing resolved neighbours: {e}"),
            }
        }
        for (port, frame) in self.neighbors.requests_due(now) {
            self.running.host_inject(port, &frame);
        }
        if self.rib.has_ops() {
            // Session removals: their withdrawals went out while the
            // thread yielded.
            if let Err(e) = self.commit_rib(Vec::new()) {
                if let Some(r) = self.relay.as_mut() {
                    r.log_error("publish", &format!("publishing a session: {e}"), now);
                }
            }
        }
        if relay_on {
            for (port, frame) in taken {
                self.relay_client_frame(port, &frame, now);
            }
            moved += self.relay_server_replies(now);
            self.answer_clients();
            self.expire_sessions(now);
            if let Some(r) = self.relay.as_mut() {
                r.watch_servers(now);
                r.journal_tick(now);
            }
        }
        moved
    }

    /// What a BGP session task reported.
    pub fn bgp_event(
        &mut self,
        i: usize,
        ev: control::bgp::session::FromSession,
        now: std::time::Instant,
    ) {
        use control::bgp::session::FromSession;
        let Some(b) = self.bgp.as_mut() else {
            return;
        };
        let peer = b
            .neighbors
            .get(i)
            .map_or_else(|| format!("#{i}"), |n| n.address.to_string());
        match ev {
            FromSession::Established(n, establishment) => {
                crate::log::say!(
                    "hdvrf: bgp: {peer} Established (AS {}, router id {}, hold {} s)",
                    n.peer_asn,
                    n.peer_id,
                    n.hold_time
                );
                b.established(i, n, establishment, now);
                return;
            }
            FromSession::Down(why) => {
                let was_up = b.neighbors.get(i).is_some_and(|n| n.up.is_some());
                if was_up {
                    eprintln!("hdvrf: bgp: {peer} down: {why}");
                }
                b.down(i, why, &mut self.rib);
            }
            FromSession::Learned(u) => b.learned(i, u, &mut self.rib),
            FromSession::State(st) => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    n.state = st;
                }
                return;
            }
            FromSession::RouteRefresh => {
                b.route_refresh(i);
                return;
            }
            FromSession::Malformed(m) => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    n.malformed += 1;
                }
                eprintln!("hdvrf: bgp: {peer}: malformed UPDATE (RFC 7606): {m}");
                return;
            }
            FromSession::Notification(sent, code, sub) => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    if sent {
                        n.notifications_sent += 1;
                    } else {
                        n.notifications_received += 1;
                    }
                }
                eprintln!(
                    "hdvrf: bgp: {peer}: NOTIFICATION {code}/{sub} {}",
                    if sent { "sent" } else { "received" }
                );
                return;
            }
        }
        if let Err(e) = self.commit_rib(Vec::new()) {
            eprintln!("hdvrf: error: bgp: publishing routes from {peer}: {e}");
        }
    }

    /// Commits what the RIB manager wants, after `first` (a reload's own
    /// ops): the one place route and next-hop ops are published. The ops
    /// the tables refuse go back to the manager (their routes are then
    /// not installed, and counted) and are logged once per interval; the
    /// next hops the batch made or freed are named. `Ok(None)`: nothing
    /// to commit.
    fn commit_rib(&mut self, first: Vec<TableOp>) -> Result<Option<PublishStats>, CommitError> {
        let from_rib = first.len();
        let mut ops = first;
        ops.extend(self.rib.take_ops());
        if ops.is_empty() {
            return Ok(None);
        }
        self.withdrawal_pending = false;
        let st = match self.running.commit_within(&ops, Some(COMMIT_WAIT)) {
            Ok(st) => st,
            Err(e) => {
                if !e.batch_published() {
                    // Nothing changed: the manager's ops wait for the
                    // next commit.
                    self.rib.requeue(ops.split_off(from_rib));
                    return Err(e);
                }
                self.after_commit(&ops[from_rib..]);
                return Err(e);
            }
        };
        self.after_commit(&ops[from_rib..]);
        Ok(Some(st))
    }

    /// The manager's ops are in the tables: it learns what they refused,
    /// and its next hops are named.
    fn after_commit(&mut self, ops: &[TableOp]) {
        let rejected = self
            .running
            .tables()
            .map(|t| t.rejected().to_vec())
            .unwrap_or_default();
        if !rejected.is_empty() {
            self.rib.rejected(&rejected);
            let (op, why) = &rejected[0];
            let msg = format!(
                "the tables refused {} op(s), e.g. {op:?}: {why}",
                rejected.len()
            );
            let now = std::time::Instant::now();
            if self
                .rejects_logged
                .map_or(true, |t| now.duration_since(t) >= REJECT_LOG_INTERVAL)
            {
                self.rejects_logged = Some(now);
                eprintln!("hdvrf: error: {msg} (logged at most every {REJECT_LOG_INTERVAL:?})");
            }
        }
        for op in ops {
            if let TableOp::SetNextHop { id, next_hop } = op {
                let name = if next_hop.port == u16::MAX {
                    String::new()
                } else if let Some((via, label)) = self.rib.derived_of(*id) {
                    format!("~bgp/{}/{label}", self.names.next_hop_name(via))
                } else {
                    // The manager makes no other next hops than BGP's and
                    // sessions'.
                    control::sessions::next_hop_name(&next_hop.dst_mac)
                };
                let at = *id as usize;
                if self.names.next_hops.len() <= at {
                    self.names.next_hops.resize(at + 1, String::new());
                }
                self.names.next_hops[at] = name;
            }
        }
    }

    fn relay_drop(&mut self, why: &'static str) {
        if let Some(r) = self.relay.as_mut() {
            r.stats.drop(why);
        }
    }

    /// The service bound to (port, VLAN), and its gateway.
    fn service_at(&self, port: u16, vlan: u16) -> Option<(u16, u32)> {
        let t = self.running.tables()?;
        let s = *t
            .ports
            .get(usize::from(port))?
            .vlan_service
            .get(usize::from(vlan))?;
        let svc = t.services.get(usize::from(s))?;
        Some((s, svc.gateway))
    }

    /// A frame a client sent to the router on an access port: ARP for the
    /// gateway is answered, DHCP is relayed; anything else is dropped.
    fn relay_client_frame(&mut self, port: u16, frame: &[u8], now: std::time::Instant) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if let Some(arp) = control::neighbor::arp_request_of(frame) {
            let (vlan, req) = arp;
            let Some((_, gw)) = self.service_at(port, vlan) else {
                self.relay_drop("arp_no_service");
                return;
            };
            if u32::from_be_bytes(req.target_protocol_addr.0) != gw {
                self.relay_drop("arp_not_gateway");
                return;
            }
            let mac = self.running.port_macs()[usize::from(port)].1;
            let reply = control::neighbor::arp_reply(&req, vlan, mac);
            if self.running.host_inject(port, &reply) {
                if let Some(r) = self.relay.as_mut() {
                    r.stats.gateway_arp_replies += 1;
                }
            }
            return;
        }
        let Some(mut c) = control::dhcp::parse_client_frame(frame) else {
            relay.stats.drop("not_dhcp");
            return;
        };
        let Some((service, gw)) = self.service_at(port, c.vlan) else {
            self.relay_drop("no_service");
            return;
        };
        let port_name = self.names.port_name(port);
        let circuit = control::dhcp::circuit_id(&port_name, c.vlan);
        let kind = control::dhcp::message_type(&c.msg);
        if control::relay::ends_session(kind) {
            self.end_session(service, c.src_mac, "released", now);
            if !self.withdrawal_pending {
                self.commit_sessions(now);
            }
        }
        if let Some(r) = self.relay.as_mut() {
            if !r.admits(service, c.src_mac, kind, now) {
                return;
            }
        }
        let payload = match control::dhcp::to_server(
            &mut c.msg,
            std::net::Ipv4Addr::from(gw),
            &circuit,
            c.src_mac,
        ) {
            Ok(p) => p,
            Err(e) => {
                if let Some(r) = self.relay.as_mut() {
                    r.stats.drop("not_relayable");
                    r.log_error("relay", &format!("DHCP relay: from {port_name}: {e}"), now);
                }
                return;
            }
        };
        if let Some(r) = self.relay.as_mut() {
            r.send_to_server(service, &payload, !control::relay::ends_session(kind), now);
        }
    }

    /// Replies from the address servers: sessions follow ACK and NAK, then
    /// the reply goes to its client. The replies waiting on the sockets
    /// are taken together: their sessions' routes are published in one
    /// commit, and each ACK goes to its client once its route is in every
    /// worker's tables. Returns how many replies there were.
    fn relay_server_replies(&mut self, now: std::time::Instant) -> usize {
        let Some(relay) = self.relay.as_mut() else {
            return 0;
        };
        let replies = relay.receive();
        let n = replies.len();
        let mut out: Vec<ToClient> = Vec::with_capacity(n);
        for payload in replies {
            let Some(r) = control::dhcp::from_server(&payload) else {
                self.relay_drop("not_our_reply");
                continue;
            };
            let Some((port, vlan)) = control::dhcp::parse_circuit_id(&r.circuit)
                .and_then(|(p, v)| Some((self.names.port(p).ok()?, v)))
            else {
                self.relay_drop("unknown_circuit");
                continue;
            };
            let Some((service, gw)) = self.service_at(port, vlan) else {
                self.relay_drop("no_service");
                continue;
            };
            let mac: [u8; 6] = match r.remote.as_slice().try_into() {
                Ok(m) => m,
                Err(_) => match control::dhcp::client_mac(&r.msg) {
                    Some(m) => m,
                    None => {
                        self.relay_drop("no_client_mac");
                        continue;
                    }
                },
            };
            let mut up = None;
            match control::dhcp::message_type(&r.msg) {
                Some(control::dhcp::Kind::Ack) if !r.msg.yiaddr().is_unspecified() => {
                    let lease = control::dhcp::lease_secs(&r.msg).unwrap_or(3600);
                    let address = r.msg.yiaddr();
                    match self.session_ack(service, port, vlan, mac, address, lease, now) {
                        Some(what) => up = Some((service, address, what)),
                        // Not taken: the client does not get an address
                        // the router cannot deliver to.
                        None => continue,
                    }
                }
                Some(control::dhcp::Kind::Nak) => {
                    self.end_session(service, mac, "refused (NAK)", now);
                }
                _ => {}
            }
            out.push(ToClient {
                reply: r,
                port,
                vlan,
                gateway: gw,
                mac,
                up,
            });
        }
        let published = self.publish_sessions(now);
        for to in out {
            if let Some((service, address, what)) = to.up {
                if !published || !self.session_published(service, to.mac, address, what, now) {
                    continue;
                }
            }
            self.awaiting.push(to);
        }
        self.answer_clients();
        n
    }

    /// Sends the replies held back until the tables with their sessions
    /// are in every worker's hands (`awaiting`), once they are.
    fn answer_clients(&mut self) {
        if self.awaiting.is_empty() || !self.running.settled() {
            return;
        }
        for ToClient {
            reply: r,
            port,
            vlan,
            gateway: gw,
            mac,
            up: _,
        } in std::mem::take(&mut self.awaiting)
        {
            let port_mac = self.running.port_macs()[usize::from(port)].1;
            match control::dhcp::client_frame(&r.msg, port_mac, vlan, gw.into(), mac) {
                Ok(f) => {
                    if self.running.host_inject(port, &f) {
                        if let Some(r) = self.relay.as_mut() {
                            r.stats.to_client += 1;
                        }
                    } else {
                        self.relay_drop("inject_full");
                    }
                }
                Err(_) => {
                    self.relay_drop("encode");
                }
            }
        }
    }

    /// A session's ACK: its next hop and host route go to the RIB manager,
    /// to be published by the next commit. `None`: not taken (the
    /// sessions are full).
    #[allow(clippy::too_many_arguments)]
    fn session_ack(
        &mut self,
        service: u16,
        port: u16,
        vlan: u16,
        mac: [u8; 6],
        address: std::net::Ipv4Addr,
        lease: u32,
        now: std::time::Instant,
    ) -> Option<control::sessions::Acked> {
        let relay = self.relay.as_mut()?;
        // Requests admitted while there was room can be answered after
        // it filled: the bound holds at the ACK too.
        if relay.sessions.len() >= relay.max_sessions && relay.sessions.get(service, mac).is_none()
        {
            relay.stats.drop("sessions_full");
            return None;
        }
        let what = relay.sessions.ack(
            &mut self.rib,
            service,
            port,
            vlan,
            mac,
            address,
            std::time::Duration::from_secs(u64::from(lease)),
            now,
        );
        if what == control::sessions::Acked::Up {
            if let Some(id) = relay.sessions.get(service, mac).map(|s| s.next_hop) {
                let base = self.running.subscriber(id).unwrap_or_default();
                self.session_base.insert(id, base);
            }
        }
        if let (Some(b), control::sessions::Acked::Moved { old }) = (self.bgp.as_mut(), what) {
            b.withdraw(service, old);
        }
        Some(what)
    }

    /// Publishes the sessions' changes of a tick without waiting for the
    /// workers (their clients' replies wait in `awaiting` until the workers
    /// have the tables, [`Control::answer_clients`]): a wait per tick would
    /// spin on the workers for every ACK. While the last publication's
    /// workers have not all moved on, the changes wait for the next tick.
    /// False (logged) if they could not be published.
    fn publish_sessions(&mut self, now: std::time::Instant) -> bool {
        if !self.rib.has_ops() {
            return true;
        }
        if !self.running.settled() {
            // The workers have not all moved on from the last one: this
            // one waits for them (and so is settled when it returns).
            return self.commit_sessions(now);
        }
        let ops = self.rib.take_ops();
        self.withdrawal_pending = false;
        match self.running.publish(&ops) {
            Ok(_) => {
                self.after_commit(&ops);
                true
            }
            Err(e) => {
                self.rib.requeue(ops);
                if let Some(r) = self.relay.as_mut() {
                    r.log_error("publish", &format!("publishing sessions: {e}"), now);
                }
                false
            }
        }
    }

    /// Commits the sessions' changes; false (logged) if the batch was not
    /// published.
    fn commit_sessions(&mut self, now: std::time::Instant) -> bool {
        match self.commit_rib(Vec::new()) {
            Ok(_) => true,
            Err(e) => {
                if let Some(r) = self.relay.as_mut() {
                    r.log_error("publish", &format!("publishing sessions: {e}"), now);
                }
                e.batch_published()
            }
        }
    }

    /// After the commit of an ACK's session: if the tables hold its route,
    /// it is advertised (new or moved), journalled and logged; true then.
    fn session_published(
        &mut self,
        service: u16,
        mac: [u8; 6],
        address: std::net::Ipv4Addr,
        what: control::sessions::Acked,
        now: std::time::Instant,
    ) -> bool {
        let key = control::sessions::host_key(service, address);
        if !matches!(self.rib.installed(&key), Some((Source::Session, _))) {
            let why = self.rib.refused(&key).unwrap_or("not installed").to_owned();
            if let Some(r) = self.relay.as_mut() {
                r.log_error(
                    "reject",
                    &format!("publishing a session: {address}: {why}"),
                    now,
                );
            }
            return false;
        }
        if what != control::sessions::Acked::Renewed {
            if let Some(b) = self.bgp.as_mut() {
                b.advertise(service, address);
            }
        }
        self.journal_up(service, mac, now);
        if what != control::sessions::Acked::Renewed {
            let port = self
                .relay
                .as_ref()
                .and_then(|r| r.sessions.get(service, mac))
                .map_or((0, 0), |s| (s.port, s.vlan));
            crate::log::note!(
                "hdvrf: session up: {} {} on {} vlan {} ({what:?})",
                self.names
                    .services
                    .get(usize::from(service))
                    .map_or("?", |s| s.as_str()),
                address,
                self.names.port_name(port.0),
                port.1
            );
        }
        true
    }

    /// Ends a session: its route leaves the RIB manager and its
    /// withdrawal goes to BGP. The caller commits, unless a neighbour is
    /// Established (`withdrawal_pending`): then the removal waits for the
    /// next tick (or commit), so that the withdrawal is on its way before
    /// the route goes.
    fn end_session(&mut self, service: u16, mac: [u8; 6], why: &str, now: std::time::Instant) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if let Some(s) = relay.sessions.end(&mut self.rib, service, mac) {
            self.session_gone(&s, why, now);
        }
    }

    fn session_gone(&mut self, s: &control::sessions::Session, why: &str, now: std::time::Instant) {
        self.session_base.remove(&s.next_hop);
        if self
            .bgp
            .as_mut()
            .is_some_and(|b| b.withdraw(s.service, s.address))
        {
            self.withdrawal_pending = true;
        }
        self.journal_down(s, now);
        crate::log::note!("hdvrf: session down: {} {why}", s.address);
    }

    fn expire_sessions(&mut self, now: std::time::Instant) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        let gone = relay.sessions.expire(&mut self.rib, now);
        for s in &gone {
            self.session_gone(s, "lease expired", now);
        }
        if !gone.is_empty() && !self.withdrawal_pending {
            self.commit_sessions(now);
        }
    }

    fn journal_up(&mut self, service: u16, mac: [u8; 6], now: std::time::Instant) {
        // No journal (or not open yet: sessions restored from it at start
        // are already in it): no entry to build.
        let Some(s) = self
            .relay
            .as_ref()
            .filter(|r| r.journal.is_some())
            .and_then(|r| r.sessions.get(service, mac))
            .cloned()
        else {
            return;
        };
        let left = s.lease_end.saturating_duration_since(now).as_secs();
        let e = control::journal::Entry::Up(control::journal::Saved {
            service: self
                .names
                .services
                .get(usize::from(service))
                .cloned()
                .unwrap_or_default(),
            mac: fmt_mac(&s.mac),
            port: self.names.port_name(s.port),
            vlan: s.vlan,
            address: s.address,
            lease_end: control::journal::unix_now() + left,
        });
        if let Some(r) = self.relay.as_mut() {
            r.journal(&e, now);
        }
    }

    fn journal_down(&mut self, s: &control::sessions::Session, now: std::time::Instant) {
        let e = control::journal::Entry::Down {
            service: self
                .names
                .services
                .get(usize::from(s.service))
                .cloned()
                .unwrap_or_default(),
            mac: fmt_mac(&s.mac),
        };
        if let Some(r) = self.relay.as_mut() {
            r.journal(&e, now);
        }
    }

    /// Rebuilds the sessions a journal kept (start after a crash or a
    /// restart): each is published again with what is left of its lease,
    /// all in one commit. Returns how many came back; what no longer fits
    /// the configuration (an unknown service or port) is skipped with a
    /// message.
    pub fn restore_sessions(&mut self, saved: &[control::journal::Saved]) -> usize {
        let now = std::time::Instant::now();
        let unix = control::journal::unix_now();
        let mut acked = Vec::with_capacity(saved.len());
        // Names to ids once, not a walk over the names per session (1,000
        // services and 100k sessions: 50 million string compares).
        let by_name = |list: &[String]| -> HashMap<String, usize> {
            list.iter()
                .enumerate()
                .rev()
                .map(|(i, n)| (n.clone(), i))
                .collect()
        };
        let services = by_name(&self.names.services);
        let ports = by_name(&self.names.ports);
        for s in saved {
            let found = (|| {
                let service = u16::try_from(*services.get(&s.service)?).ok()?;
                let port = u16::try_from(*ports.get(&s.port)?).ok()?;
                let mac = control::config::parse_mac(&s.mac).ok()?;
                Some((service, port, mac))
            })();
            let Some((service, port, mac)) = found else {
                eprintln!(
                    "hdvrf: warning: session journal: {} {} on {} no longer fits the configuration; not restored",
                    s.service, s.address, s.port
                );
                continue;
            };
            let lease = s.lease_end.saturating_sub(unix).min(u64::from(u32::MAX)) as u32;
            if let Some(what) = self.session_ack(service, port, s.vlan, mac, s.address, lease, now)
            {
                acked.push((service, mac, s.address, what));
            }
        }
        if !self.commit_sessions(now) {
            return 0;
        }
        acked
            .into_iter()
            .filter(|&(service, mac, address, what)| {
                self.session_published(service, mac, address, what, now)
            })
            .count()
    }

    /// `show sessions`: every session, by service and address. Built as
    /// rows serialized straight to JSON ([`Control::reply_line`]), not as
    /// a `Value` tree: at 100k sessions the tree's 1.3 million map
    /// entries, built, serialized and freed, took about a second of the
    /// control thread.
    fn session_rows(&self) -> Vec<SessionRow<'_>> {
        let now = std::time::Instant::now();
        let Some(r) = self.relay.as_ref() else {
            return Vec::new();
        };
        let mut list: Vec<&control::sessions::Session> = r.sessions.iter().collect();
        list.sort_unstable_by_key(|s| (s.service, u32::from(s.address), s.mac));
        list.into_iter()
            .map(|s| {
                let c = self.running.subscriber(s.next_hop).map(|c| {
                    c.since(
                        self.session_base
                            .get(&s.next_hop)
                            .unwrap_or(&Default::default()),
                    )
                });
                SessionRow {
                    address: s.address,
                    down_bytes: c.map(|c| c.down_bytes),
                    down_packets: c.map(|c| c.down_packets),
                    lease_remaining_s: s.lease_end.saturating_duration_since(now).as_secs(),
                    mac: MacText(s.mac),
                    port: self.names.port_name(s.port),
                    service: self.names.services.get(usize::from(s.service)),
                    spoofed_drops: c.map(|c| c.spoofed_drops),
                    up_bytes: c.map(|c| c.up_bytes),
                    up_packets: c.map(|c| c.up_packets),
                    up_s: now.duration_since(s.since).as_secs(),
                    vlan: s.vlan,
                }
            })
            .collect()
    }

    fn sessions(&self) -> Value {
        serde_json::to_value(self.session_rows()).unwrap_or(Value::Null)
    }

    /// The reply to `req` as the line the socket sends (without its
    /// newline). Large replies are serialized from their rows directly.
    pub fn reply_line(&mut self, req: Request) -> Vec<u8> {
        let direct = match req {
            Request::ShowSessions => serde_json::to_vec(&DirectReply {
                ok: true,
                result: self.session_rows(),
            }),
            req => serde_json::to_vec(&Reply::from_result(self.handle(req))),
        };
        direct.unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"reply: {e}\"}}").into_bytes())
    }

    /// Service names by id.
    pub fn service_names(&self) -> &[String] {
        &self.names.services
    }

    /// A route's next hop: a next hop's name, or an ECMP group's members
    /// as `ecmp(a,b)`.
    fn route_next_hop_name(&self, id: u32) -> String {
        if !dataplane::tables::is_group(id) {
            return self.names.next_hop_name(id);
        }
        let i = (id & !dataplane::tables::GROUP_BIT) as usize;
        match self
            .running
            .tables()
            .and_then(|t| t.groups().get(i).copied())
        {
            Some(g) => format!(
                "ecmp({})",
                g.members()
                    .iter()
                    .map(|&m| self.names.next_hop_name(m))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => format!("group #{i}"),
        }
    }

    /// A next hop's name in the configuration.
    pub fn next_hop_name(&self, id: u32) -> String {
        self.names.next_hop_name(id)
    }

    /// Port names in port order, as the configuration has them.
    pub fn port_names(&self) -> Vec<String> {
        (0..self.devices.len())
            .map(|i| self.names.port_name(i as u16))
            .collect()
    }

    /// Per-core counters since the last `clear stats`.
    pub fn cores(&self) -> Vec<(u32, CoreSnapshot)> {
        self.running
            .cores()
            .into_iter()
            .zip(&self.base)
            .map(|((l, c), (_, b))| (l, c.since(b)))
            .collect()
    }

    pub fn handle(&mut self, req: Request) -> Result<Value, String> {
        match req {
            Request::ShowStats => Ok(self.stats()),
            Request::ShowDrops => Ok(self.drops()),
            Request::ShowPorts => Ok(self.ports()),
            Request::ShowServices => self.services(),
            Request::ShowNextHops => self.next_hops(),
            Request::ShowLabels => self.labels(),
            Request::ShowSessions => Ok(self.sessions()),
            Request::ShowBgpNeighbors => match &self.bgp {
                Some(b) => Ok(b.show_neighbors(std::time::Instant::now())),
                None => Err("no [bgp] in the configuration".into()),
            },
            Request::ShowBgpRib {
                which,
                neighbor,
                offset,
                limit,
            } => match &self.bgp {
                Some(b) => b.show_rib(
                    which.as_deref(),
                    neighbor.as_deref(),
                    control::mgmt::rib_page(offset, limit)?,
                    &self.names.services,
                    &self.rib,
                ),
                None => Err("no [bgp] in the configuration".into()),
            },
            Request::ShowRoutes { service, table } => self.routes(service, table),
            Request::ShowPolicy { service } => self.policy(service),
            Request::ClearStats => {
                self.base = self.running.cores();
                for (slot, b) in self.rule_base.iter_mut().enumerate() {
                    *b = self.running.rule(slot as u16).unwrap_or_default();
                }
                Ok(json!({ "cleared": true }))
            }
            Request::RouteAdd {
                service,
                table,
                prefix,
                next_hop,
            } => {
                let (prefix, len) = mgmt::parse_route_prefix(&prefix)?;
                let key = RouteKey {
                    service: self.names.service(&service)?,
                    table: mgmt::parse_table(&table)?,
                    prefix,
                    len,
                };
                let next_hop = self.names.next_hop(&next_hop)?;
                let target = if next_hop == dataplane::tables::DISCARD {
                    Target::Discard
                } else {
                    Target::NextHop(next_hop)
                };
                if !self.rib.set(Source::Ctl, key, &target) {
                    return Err(format!(
                        "next hop {} is not in use",
                        self.names.next_hop_name(next_hop)
                    ));
                }
                self.commit_route(key)
            }
            Request::Reload => self.reload(),
            Request::TraceAdd { count, port } => self.trace_add(count, port),
            Request::TraceShow => self.trace_show(),
            Request::TraceClear => {
                let dropped = self.running.trace().disarm();
                self.running.trace().drain();
                self.traced.clear();
                Ok(json!({ "cleared": true, "not_traced": dropped }))
            }
            Request::RouteDel {
                service,
                table,
                prefix,
            } => {
                let (prefix, len) = mgmt::parse_route_prefix(&prefix)?;
                let key = RouteKey {
                    service: self.names.service(&service)?,
                    table: mgmt::parse_table(&table)?,
                    prefix,
                    len,
                };
                // The route the tables use goes, if it is the operator's
                // or the file's (until the next reload); a session's goes
                // with its session, BGP's with its withdrawal.
                match self.rib.winner(&key) {
                    Some(s @ (Source::Ctl | Source::File)) => {
                        self.rib.remove(s, key);
                    }
                    Some(s) => {
                        return Err(format!(
                            "route {}/{len} in {service}'s {table} table is {}'s: it cannot be deleted here",
                            std::net::Ipv4Addr::from(prefix),
                            s.name()
                        ))
                    }
                    // Refused here rather than published as a no-op.
                    None => {
                        return Err(format!(
                            "no route {}/{len} in {service}'s {table} table",
                            std::net::Ipv4Addr::from(prefix),
                        ))
                    }
                }
                self.commit_route(key)
            }
        }
    }

    /// Re-reads the configuration and publishes what changed as one batch
    /// (`control::reload`): routes (those added or removed at run time with
    /// `route add|del` go back to what the file says), next hops, labels,
    /// services' settings and access bindings; then BGP follows
    /// (`Speaker::reload`: the file's routes are advertised or withdrawn,
    /// changed RDs, labels and targets re-advertised or re-imported).
    /// Anything else that changed needs a restart and is refused, with
    /// nothing applied.
    fn reload(&mut self) -> Result<Value, String> {
        let path = self.config_path.clone();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let loaded = config::parse(&path, &text).map_err(|e| match e {
            LoadError::Invalid(list) => list
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        })?;
        let raw: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let old =
            match &self.applied {
                Applied::Text(t) => std::borrow::Cow::Owned(toml::from_str(t).map_err(|e| {
                    format!("{}: the configuration as started: {e}", path.display())
                })?),
                Applied::Toml(v) => std::borrow::Cow::Borrowed(v),
            };
        let changed = mgmt::restart_needed(&old, &raw);
        drop(old);
        if !changed.is_empty() {
            return Err(format!(
                "{}: changes to {} need a restart; nothing was applied",
                path.display(),
                changed.join(", ")
            ));
        }
        let mut plan =
            control::reload::plan(self.tables()?, &self.names, &self.neighbors, &loaded)?;
        // New rules' slots are used by no published rule: their buckets
        // and counts start afresh before the batch makes them live.
        for &slot in &plan.fresh_rule_slots {
            self.tables()?.policers.reset(slot);
            if let Some(b) = self.rule_base.get_mut(usize::from(slot)) {
                *b = self.running.rule(slot).unwrap_or_default();
            }
        }
        // The file's routes into the RIB manager (ctl's changes undone;
        // a live session's host route stays the session's), committed in
        // one batch after the plan's own ops.
        control::reload::apply(&mut plan, &mut self.rib);
        let first = std::mem::take(&mut plan.ops);
        // The names after the batch, which names the next hops it makes.
        let names = std::mem::replace(&mut self.names, std::mem::take(&mut plan.names));
        let generation = match self.commit_rib(first) {
            Ok(st) => st.map(|st| st.generation),
            Err(e) => {
                if !e.batch_published() {
                    self.names = names;
                }
                return Err(e.to_string());
            }
        };
        if let Some((op, why)) = self.running.tables().and_then(|t| t.rejected().first()) {
            return Err(format!("reload: {op:?}: {why}"));
        }
        let port_macs: Vec<[u8; 6]> = self
            .running
            .port_macs()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        self.neighbors
            .reload(&loaded, &port_macs, &plan.next_hop_ids);
        // What changed for BGP: RDs, labels and targets re-advertised or
        // re-imported, then the file's routes toward our side advertised
        // or withdrawn as the RIB manager now holds them.
        let mut bgp_ops = 0;
        if let Some(b) = self.bgp.as_mut() {
            let ids = loaded
                .config
                .services
                .iter()
                .map(|s| self.names.service(s.name.get_ref()))
                .collect::<Result<Vec<u16>, String>>()?;
            b.reload(&loaded.config, &ids, &mut self.rib);
            bgp_ops = self.rib.pending_ops();
            self.commit_rib(Vec::new())
                .map_err(|e| format!("reload: BGP's routes: {e}"))?;
        }
        self.sync_bgp();
        self.set_from_config(&loaded.config);
        self.applied = Applied::Toml(raw);
        Ok(json!({
            "added": plan.routes_added,
            "changed": plan.routes_changed,
            "removed": plan.routes_removed,
            "next_hops": {
                "added": plan.next_hops_added,
                "changed": plan.next_hops_changed,
                "removed": plan.next_hops_removed,
            },
            "labels_changed": plan.labels_changed,
            "services_changed": plan.services_changed,
            "access_changed": plan.access_changed,
            "rules": { "set": plan.rules_set, "removed": plan.rules_removed },
            "bgp_table_ops": bgp_ops,
            "kept_for_sessions": plan.kept_for_sessions,
            "generation": generation,
        }))
    }

    /// Commits a `ctl route` change, and what BGP advertises follows it.
    fn commit_route(&mut self, key: RouteKey) -> Result<Value, String> {
        let st = self.commit_rib(Vec::new()).map_err(|e| e.to_string())?;
        if let Some(why) = self.rib.refused(&key).map(str::to_owned) {
            // Refused: the operator's route is not kept to be tried again.
            self.rib.remove(Source::Ctl, key);
            let _ = self.commit_rib(Vec::new());
            return Err(why);
        }
        self.sync_bgp();
        let Some(st) = st else {
            return Ok(json!({ "generation": null }));
        };
        Ok(json!({
            "generation": st.generation,
            "visible_after_us": st.quiesced_after.as_micros() as u64,
            "elapsed_us": st.elapsed.as_micros() as u64,
        }))
    }

    /// BGP advertises the file's and `ctl`'s routes toward our side that
    /// the tables hold, and withdraws the others.
    fn sync_bgp(&mut self) {
        if let Some(b) = self.bgp.as_mut() {
            let relay = self.relay.as_ref();
            b.sync_local(&self.rib, |svc, a| {
                relay.is_some_and(|r| r.sessions.holds(svc, a))
            });
        }
    }

    /// Takes the BGP speaker: the file's routes toward our side are
    /// advertised as the neighbours come up.
    pub fn set_bgp(&mut self, speaker: control::bgp::speaker::Speaker) {
        self.bgp = Some(speaker);
        self.sync_bgp();
    }

    fn stats(&self) -> Value {
        let cores = self.cores();
        let mut total = CoreSnapshot::default();
        let per_core: Vec<Value> = cores
            .iter()
            .map(|(l, c)| {
                total.add(c);
                json!({
                    "lcore": l,
                    "rx": c.rx_packets,
                    "tx": c.tx_packets,
                    "drops": c.drops(),
                    "bursts": c.bursts,
                    "empty_polls": c.empty_polls,
                })
            })
            .collect();
        let outcomes: Map<String, Value> = Outcome::ALL
            .iter()
            .filter(|o| total.outcome(**o) != 0)
            .map(|o| (o.name().to_owned(), json!(total.outcome(*o))))
            .collect();
        let p = self.running.publication_stats();
        json!({
            "cores": per_core,
            "total": {
                "rx": total.rx_packets,
                "tx": total.tx_packets,
                "drops": total.drops(),
                "outcomes": outcomes,
            },
            "ports": self.ports(),
            // Mbufs out of their pools: in rx rings, queues and flight.
            // Idle, it returns to the same level: leak accounting.
            "mbufs_in_use": self.running.mbufs_in_use(),
            "relay": self.relay.as_ref().map(|r| json!({
                "sessions": r.sessions.len(),
                "to_server": r.stats.to_server,
                "to_client": r.stats.to_client,
                "gateway_arp_replies": r.stats.gateway_arp_replies,
                "drops": r.stats.drops,
                "servers": r.health.iter().map(|(a, h)| (a.to_string(), json!({
                    "requests": h.requests,
                    "replies": h.replies,
                    "answering": !h.silent,
                }))).collect::<Map<String, Value>>(),
            })),
            "publication": {
                "commits": p.commits,
                "ops": p.ops,
                "failed": p.failed,
                "last_visible_after_us": p.last_visible_after.as_micros() as u64,
                "max_visible_after_us": p.max_visible_after.as_micros() as u64,
            },
        })
    }

    fn drops(&self) -> Value {
        let mut total = CoreSnapshot::default();
        for (_, c) in self.cores() {
            total.add(&c);
        }
        let mut reasons = Map::new();
        for o in Outcome::ALL {
            if o.kind() != OutcomeKind::Forward {
                reasons.insert(o.name().to_owned(), json!(total.reason_count(*o)));
            }
        }
        // Punts the host path's queue could not take: a subset of the punt
        // reasons above, counted by the workers.
        reasons.insert("drop_punt_queue_full".to_owned(), json!(total.punt_drops));
        json!({ "total": total.drops(), "reasons": reasons })
    }

    fn ports(&self) -> Value {
        let host = self.running.host();
        let list: Vec<Value> = self
            .running
            .port_stats()
            .into_iter()
            .enumerate()
            .map(|(i, (dev, st, link))| {
                let host = host.and_then(|h| {
                    let s = h.stats().get(i)?;
                    Some(json!({
                        "iface": h.iface(i),
                        "consumed": s.consumed,
                        "to_kernel": s.to_kernel,
                        "from_kernel": s.from_kernel,
                        "injected": s.injected,
                        "no_tap_drops": s.no_tap_drops,
                        "tx_drops": s.tx_drops,
                    }))
                });
                json!({
                    "name": self.names.port_name(i as u16),
                    "device": self.devices.get(i).cloned().unwrap_or(dev),
                    "link": format!("{link:?}"),
                    "rx": st.ipackets,
                    "tx": st.opackets,
                    "rx_bytes": st.ibytes,
                    "tx_bytes": st.obytes,
                    "missed": st.imissed,
                    "rx_errors": st.ierrors,
                    "tx_errors": st.oerrors,
                    "rx_nombuf": st.rx_nombuf,
                    "host": host,
                })
            })
            .collect();
        Value::Array(list)
    }

    /// The hub's policy rules, service by service, in order.
    pub fn policy(&self, service: Option<String>) -> Result<Value, String> {
        let t = self.tables()?;
        let only = service.map(|s| self.names.service(&s)).transpose()?;
        let mut rows = Vec::new();
        for (i, svc) in t.services.iter().enumerate() {
            if only.is_some_and(|o| usize::from(o) != i) {
                continue;
            }
            for (k, r) in svc.policy.iter().enumerate() {
                let base = self
                    .rule_base
                    .get(usize::from(r.slot))
                    .copied()
                    .unwrap_or_default();
                let c = self.running.rule(r.slot).unwrap_or_default().since(&base);
                let (rate, burst) = match r.action {
                    Action::Police {
                        rate_bps,
                        burst_bytes,
                    } => (json!(rate_bps), json!(burst_bytes)),
                    _ => (Value::Null, Value::Null),
                };
                rows.push(json!({
                    "service": svc.name,
                    "index": k,
                    "prefix": format!("{}/{}", std::net::Ipv4Addr::from(r.net), r.len),
                    "protocol": r.protocol,
                    "port": r.ports.map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }),
                    "action": r.action.name(),
                    "rate_bps": rate,
                    "burst_bytes": burst,
                    "packets": c.packets,
                    "bytes": c.bytes,
                    "dropped": c.dropped,
                }));
            }
        }
        Ok(Value::Array(rows))
    }

    fn tables(&self) -> Result<&dataplane::tables::Tables, String> {
        self.running
            .tables()
            .ok_or_else(|| "no route tables (forward_mode is not \"router\")".to_owned())
    }

    fn services(&self) -> Result<Value, String> {
        let t = self.tables()?;
        Ok(Value::Array(
            t.services
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let vpn = self.vpn.get(&s.name).cloned().unwrap_or(Value::Null);
                    json!({
                        "id": i,
                        "name": s.name,
                        "route_distinguisher": vpn["route_distinguisher"],
                        "import_targets": vpn["import_targets"],
                        "export_targets": vpn["export_targets"],
                        "address_server": vpn["address_server"],
                        "gateway": std::net::Ipv4Addr::from(s.gateway).to_string(),
                        "ttl_mode": format!("{:?}", s.ttl_mode).to_lowercase(),
                        "anti_spoofing": s.anti_spoofing,
                        "routes": {
                            "upstream": s.upstream.len(),
                            "downstream": s.downstream.len(),
                            "hub": s.hub.len(),
                        },
                    })
                })
                .collect(),
        ))
    }

    fn next_hops(&self) -> Result<Value, String> {
        let t = self.tables()?;
        Ok(Value::Array(
            t.next_hops()
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let arp = self.neighbors.get(i as u32);
                    let state = match (arp, n.is_resolved()) {
                        (None, _) => "static",
                        (Some(_), true) => "resolved",
                        (Some(_), false) => "unresolved",
                    };
                    json!({
                        "id": i,
                        "name": self.names.next_hop_name(i as u32),
                        "port": self.names.port_name(n.port),
                        "vlan": n.vlan,
                        "address": arp.map(|a| a.address.to_string()),
                        "mac": n.is_resolved().then(|| fmt_mac(&n.dst_mac)),
                        "state": state,
                        "arp_requests": arp.map_or(0, |a| a.requests),
                        "labels": n.labels(),
                    })
                })
                .collect(),
        ))
    }

    fn labels(&self) -> Result<Value, String> {
        let t = self.tables()?;
        let service = |id: u16| {
            t.services
                .get(usize::from(id))
                .map_or_else(|| format!("#{id}"), |s| s.name.clone())
        };
        let bound: Vec<Value> = t
            .labels
            .bound()
            .map(|(label, a)| {
                let (action, detail) = match a {
                    LabelAction::PopContinue => ("pop", json!({})),
                    LabelAction::PopDownstream { service: s } => {
                        ("pop-downstream", json!({ "service": service(s) }))
                    }
                    LabelAction::PopHub { service: s } => {
                        ("pop-hub", json!({ "service": service(s) }))
                    }
                    LabelAction::Swap { label, next_hop } => (
                        "swap",
                        json!({ "out_label": label, "next_hop": self.names.next_hop_name(next_hop) }),
                    ),
                    LabelAction::PopPhp { next_hop } => (
                        "php",
                        json!({ "next_hop": self.names.next_hop_name(next_hop) }),
                    ),
                };
                json!({ "label": label, "action": action, "detail": detail })
            })
            .collect();
        Ok(json!({
            "base": t.labels.base(),
            "count": t.labels.len(),
            "bound": bound,
        }))
    }

    fn routes(&self, service: Option<String>, table: Option<String>) -> Result<Value, String> {
        let t = self.tables()?;
        let services: Vec<usize> = match &service {
            Some(name) => vec![usize::from(self.names.service(name)?)],
            None => (0..t.services.len()).collect(),
        };
        let tables: Vec<RouteTable> = match &table {
            Some(name) => vec![mgmt::parse_table(name)?],
            None => vec![
                RouteTable::Upstream,
                RouteTable::Downstream,
                RouteTable::Hub,
            ],
        };
        let mut out = Vec::new();
        for s in services {
            let Some(svc) = t.services.get(s) else {
                continue;
            };
            for &tb in &tables {
                let mut routes: Vec<(u32, u8, u32)> = svc.table(tb).routes().collect();
                routes.sort_unstable();
                for (net, len, nh) in routes {
                    out.push(json!({
                        "service": svc.name,
                        "table": mgmt::table_name(tb),
                        "prefix": format!("{}/{len}", std::net::Ipv4Addr::from(net)),
                        "next_hop": self.route_next_hop_name(nh),
                    }));
                }
            }
        }
        Ok(Value::Array(out))
    }
}

/// Binds the management socket. `configured` says whether the path came
/// from the configuration: a busy default path only turns the API off for
/// this instance (several test instances share a machine), a busy
/// configured one is an error. A socket file nobody answers on is stale
/// and replaced.
pub fn bind(path: &Path, configured: bool) -> Result<Option<(UnixListener, PathBuf)>> {
    match try_bind(path, configured) {
        Err(e) if !configured => {
            crate::log::say!(
                "hdvrf: warning: no management socket ({e:#}); set control.socket to a writable path"
            );
            Ok(None)
        }
        other => other,
    }
}

fn try_bind(path: &Path, configured: bool) -> Result<Option<(UnixListener, PathBuf)>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("control.socket: creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("control.socket: {}", dir.display()))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            if configured {
                return Err(anyhow!(
                    "control.socket: {} is served by another running hdvrf",
                    path.display()
                ));
            }
            crate::log::say!(
                "hdvrf: warning: {} is served by another hdvrf; this one has no management socket (set control.socket)",
                path.display()
            );
            return Ok(None);
        }
        std::fs::remove_file(path)
            .with_context(|| format!("control.socket: removing stale {}", path.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("control.socket: binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("control.socket: {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(Some((UnixListener::from_std(l)?, path.to_owned())))
}

/// Accepts clients forever; each is served on the control thread.
pub async fn serve(listener: UnixListener, state: Rc<RefCell<Option<Control>>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(client(stream, state.clone()));
            }
            Err(e) => {
                crate::log::say!("hdvrf: control socket: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(stream: UnixStream, state: Rc<RefCell<Option<Control>>>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    loop {
        line.clear();
        // At most one byte past the limit is read, so a client that never
        // sends a newline cannot make the control thread buffer without end.
        match (&mut rd)
            .take(MAX_REQUEST as u64 + 1)
            .read_line(&mut line)
            .await
        {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let _ = wr
                    .write_all(b"{\"ok\":false,\"error\":\"request is not UTF-8\"}\n")
                    .await;
                return;
            }
            Err(_) => return,
        }
        if line.len() > MAX_REQUEST {
            let reply = Reply::from_result(Err(format!("request over {MAX_REQUEST} bytes")));
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            let _ = wr.write_all(&out).await;
            return;
        }
        let mut out = {
            let refused =
                |e: String| serde_json::to_vec(&Reply::from_result(Err(e))).unwrap_or_default();
            match serde_json::from_str::<Request>(line.trim()) {
                Err(e) => refused(format!("bad request: {e}")),
                // The borrow ends before the next await.
                Ok(req) => match state.borrow_mut().as_mut() {
                    Some(c) => c.reply_line(req),
                    None => refused("shutting down".into()),
                },
            }
        };
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The most records `trace show` keeps.
const TRACE_KEEP: usize = 10_000;

impl Control {
    fn trace_add(&mut self, count: u32, port: Option<String>) -> Result<Value, String> {
        self.tables()?;
        let port = port.map(|p| self.names.port(&p)).transpose()?;
        self.running.trace().arm(count, port);
        Ok(json!({ "armed": count }))
    }

    fn trace_show(&mut self) -> Result<Value, String> {
        let fresh = self.running.trace().drain();
        self.traced.extend(fresh);
        let excess = self.traced.len().saturating_sub(TRACE_KEEP);
        self.traced.drain(..excess);
        let list: Vec<Value> = self.traced.iter().map(|r| self.explain(r)).collect();
        Ok(json!({
            "remaining": self.running.trace().remaining(),
            "packets": list,
        }))
    }

    /// What the pipeline did with one traced packet, in the tables' terms:
    /// the headers it came with, the service and direction, the table and
    /// the route that matched, the labels it left with. The route is looked
    /// up again in the tables in use now; `tables_changed` says when they
    /// are newer than the ones the worker used.
    fn explain(&self, r: &TraceRecord) -> Value {
        let input = &r.input[..usize::from(r.in_len).min(HEAD)];
        let output = &r.output[..usize::from(r.out_len).min(HEAD)];
        let hin = Headers::parse(input);
        let hout = Headers::parse(output);
        let mut v = json!({
            "lcore": r.lcore,
            "in_port": self.names.port_name(r.in_port),
            "outcome": r.outcome.name(),
            "out_port": (r.out_port < dataplane::pipeline::PUNT_PORT).then(|| self.names.port_name(r.out_port)),
            "length": r.in_len,
            "vlan": hin.vlan,
            "labels_in": hin.labels,
            "labels_out": hout.labels,
            "src": hin.ip.map(|(s, _)| std::net::Ipv4Addr::from(s).to_string()),
            "dst": hin.ip.map(|(_, d)| std::net::Ipv4Addr::from(d).to_string()),
            "generation": r.generation,
        });
        let Some(t) = self.running.tables() else {
            return v;
        };
        v["tables_changed"] = json!(self.running.generation() != r.generation);
        let Some(port) = t.ports.get(usize::from(r.in_port)) else {
            return v;
        };
        // Which service and table the packet was routed in.
        let (service, table) = match port.role {
            PortRole::Access => {
                v["direction"] = json!("upstream");
                let svc = port.vlan_service.get(usize::from(hin.vlan)).copied();
                (svc, Some(RouteTable::Upstream))
            }
            PortRole::Core => {
                v["direction"] = json!("core");
                let mut found = (None, None);
                for l in &hin.labels {
                    match t.labels.get(*l) {
                        Some(LabelAction::PopContinue) => continue,
                        Some(LabelAction::PopDownstream { service }) => {
                            found = (Some(service), Some(RouteTable::Downstream))
                        }
                        Some(LabelAction::PopHub { service }) => {
                            found = (Some(service), Some(RouteTable::Hub))
                        }
                        Some(LabelAction::Swap { label, next_hop }) => {
                            v["label_action"] = json!({"swap": label, "next_hop": self.names.next_hop_name(next_hop)});
                        }
                        Some(LabelAction::PopPhp { next_hop }) => {
                            v["label_action"] = json!({"php": true, "next_hop": self.names.next_hop_name(next_hop)});
                        }
                        None => v["label_action"] = json!({"unknown_label": l}),
                    }
                    break;
                }
                found
            }
        };
        let Some(svc) = service.and_then(|s| t.services.get(usize::from(s))) else {
            return v;
        };
        v["service"] = json!(svc.name);
        if let (Some(table), Some((_, dst))) = (table, hin.ip) {
            v["table"] = json!(mgmt::table_name(table));
            if let Some((net, len, nh)) = svc.table(table).matching_route(dst) {
                v["route"] = json!({
                    "prefix": format!("{}/{len}", std::net::Ipv4Addr::from(net)),
                    "next_hop": self.names.next_hop_name(nh),
                });
            }
        }
        v
    }
}

/// The headers `explain` reads from a trace record's head, through the
/// data plane's header views (the head may be cut short: whatever is
/// complete is reported).
struct Headers {
    vlan: u16,
    labels: Vec<u32>,
    /// (source, destination), host order.
    ip: Option<(u32, u32)>,
}

impl Headers {
    fn parse(b: &[u8]) -> Headers {
        let mut h = Headers {
            vlan: 0,
            labels: Vec::new(),
            ip: None,
        };
        let Ok(eth) = EthernetFrame::new_checked(b) else {
            return h;
        };
        let (mut et, mut rest) = (eth.ethertype(), eth.payload());
        if et == EtherType::VLAN {
            let Ok(tag) = VlanTag::new_checked(rest) else {
                return h;
            };
            (h.vlan, et) = (tag.vid(), tag.ethertype());
            rest = &rest[wire::vlan::HEADER_LEN..];
        }
        if et == EtherType::MPLS_UNICAST {
            let mut stack = wire::mpls::label_stack(rest);
            h.labels = stack
                .by_ref()
                .map_while(|e| e.ok())
                .map(|e| e.label())
                .collect();
            rest = stack.rest();
        } else if et != EtherType::IPV4 {
            return h;
        }
        // `new_unchecked`: the head may end inside the packet, so only the
        // header's own bytes are required.
        if rest.len() >= wire::ipv4::HEADER_LEN && rest[0] >> 4 == 4 {
            let ip = Ipv4Packet::new_unchecked(rest);
            h.ip = Some((ip.src_addr_u32(), ip.dst_addr_u32()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_rows_serialize_as_the_value_tree_did() {
        let services = ["blue".to_owned()];
        let row = SessionRow {
            address: std::net::Ipv4Addr::new(10, 0, 0, 7),
            down_bytes: Some(3),
            down_packets: None,
            lease_remaining_s: 60,
            mac: MacText([0x02, 0xab, 0, 0x0c, 0xff, 1]),
            port: "access0".into(),
            service: services.first(),
            spoofed_drops: Some(0),
            up_bytes: Some(5),
            up_packets: Some(1),
            up_s: 9,
            vlan: 100,
        };
        let tree = json!({
            "service": "blue",
            "mac": fmt_mac(&[0x02, 0xab, 0, 0x0c, 0xff, 1]),
            "port": "access0",
            "vlan": 100,
            "address": "10.0.0.7",
            "lease_remaining_s": 60,
            "up_s": 9,
            "up_packets": 1,
            "up_bytes": 5,
            "down_packets": null,
            "down_bytes": 3,
            "spoofed_drops": 0,
        });
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            serde_json::to_string(&tree).unwrap()
        );
        let reply = DirectReply {
            ok: true,
            result: vec![row],
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            serde_json::to_string(&Reply::from_result(Ok(json!([tree])))).unwrap()
        );
    }
}
