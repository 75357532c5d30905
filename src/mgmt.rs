//! The management server on the control thread: `hdvrf run` serves the
//! JSON-lines protocol of `control::mgmt` on a unix socket (mode 0600).
//! Requests are handled one at a time on the control thread, which owns
//! the data plane and its table writer: a route change is a commit through
//! the publication mechanism, visible on every worker when the reply goes
//! out. Counters are read from the workers' per-core blocks and summed
//! here; nothing a request does touches a worker.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{anyhow, Context, Result};
use control::config::fmt_mac;
use control::engine::{Applied, Dataplane as _, Engine};
use control::mgmt::{self, Names, Reply, Request};
use dataplane::pipeline::{Outcome, OutcomeKind};
use dataplane::policy::Action;
use dataplane::tables::{LabelAction, PortRole, RouteTable};
use dataplane::trace::{TraceRecord, HEAD};
use dataplane::wire::{self, EtherType, EthernetFrame, Ipv4Packet, VlanTag};
use dataplane::{CoreSnapshot, Running};

use crate::plane::Plane;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// What the control thread owns: the writer side over the running data
/// plane (`control::engine`), and what the management API needs beyond
/// it to speak about the workers.
pub struct Control {
    /// The running data plane, the RIB manager and the route sources, the
    /// configuration's names.
    pub engine: Engine<Plane>,
    devices: Vec<String>,
    /// Counters at the last `clear stats`, per core.
    base: Vec<(u32, CoreSnapshot)>,
    /// Traced packets collected from the workers, oldest first.
    traced: Vec<TraceRecord>,
}

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
        Control {
            engine: Engine::new(Plane(running), names, config_path, applied),
            devices,
            base,
            traced: Vec::new(),
        }
    }

    /// One round of the host path ([`Engine::host_tick`]).
    pub fn host_tick(&mut self, now: std::time::Instant) -> usize {
        self.engine.host_tick(now)
    }

    /// `show sessions`: every session, by service and address. Built as
    /// rows serialized straight to JSON ([`Control::reply_line`]), not as
    /// a `Value` tree: at 100k sessions the tree's 1.3 million map
    /// entries, built, serialized and freed, took about a second of the
    /// control thread.
    fn session_rows(&self) -> Vec<SessionRow<'_>> {
        let now = std::time::Instant::now();
        let Some(r) = self.engine.relay.as_ref() else {
            return Vec::new();
        };
        let mut list: Vec<&control::sessions::Session> = r.sessions.iter().collect();
        list.sort_unstable_by_key(|s| (s.service, u32::from(s.address), s.mac));
        list.into_iter()
            .map(|s| {
                let c = self.engine.running.subscriber(s.next_hop).map(|c| {
                    c.since(
                        self.engine
                            .session_base
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
                    port: self.engine.names.port_name(s.port),
                    service: self.engine.names.services.get(usize::from(s.service)),
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
        &self.engine.names.services
    }

    /// A route's next hop: a next hop's name, or an ECMP group's members
    /// as `ecmp(a,b)`.
    fn route_next_hop_name(&self, id: u32) -> String {
        if !dataplane::tables::is_group(id) {
            return self.engine.names.next_hop_name(id);
        }
        let i = (id & !dataplane::tables::GROUP_BIT) as usize;
        match self
            .engine
            .running
            .tables()
            .and_then(|t| t.groups().get(i).copied())
        {
            Some(g) => format!(
                "ecmp({})",
                g.members()
                    .iter()
                    .map(|&m| self.engine.names.next_hop_name(m))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => format!("group #{i}"),
        }
    }

    /// A next hop's name in the configuration.
    pub fn next_hop_name(&self, id: u32) -> String {
        self.engine.names.next_hop_name(id)
    }

    /// Port names in port order, as the configuration has them.
    pub fn port_names(&self) -> Vec<String> {
        (0..self.devices.len())
            .map(|i| self.engine.names.port_name(i as u16))
            .collect()
    }

    /// Per-core counters since the last `clear stats`.
    pub fn cores(&self) -> Vec<(u32, CoreSnapshot)> {
        self.engine
            .running
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
            Request::ShowBgpNeighbors => match &self.engine.bgp {
                Some(b) => Ok(b.show_neighbors(std::time::Instant::now())),
                None => Err("no [bgp] in the configuration".into()),
            },
            Request::ShowBgpRib {
                which,
                neighbor,
                offset,
                limit,
            } => match &self.engine.bgp {
                Some(b) => b.show_rib(
                    which.as_deref(),
                    neighbor.as_deref(),
                    control::mgmt::rib_page(offset, limit)?,
                    &self.engine.names.services,
                    &self.engine.rib,
                ),
                None => Err("no [bgp] in the configuration".into()),
            },
            Request::ShowRoutes { service, table } => self.routes(service, table),
            Request::ShowPolicy { service } => self.policy(service),
            Request::ClearStats => {
                self.base = self.engine.running.cores();
                for (slot, b) in self.engine.rule_base.iter_mut().enumerate() {
                    *b = self.engine.running.rule(slot as u16).unwrap_or_default();
                }
                Ok(json!({ "cleared": true }))
            }
            Request::RouteAdd {
                service,
                table,
                prefix,
                next_hop,
            } => self.engine.route_add(service, table, prefix, next_hop),
            Request::Reload => self.engine.reload(),
            Request::TraceAdd { count, port } => self.trace_add(count, port),
            Request::TraceShow => self.trace_show(),
            Request::TraceClear => {
                let dropped = self.engine.running.trace().disarm();
                self.engine.running.trace().drain();
                self.traced.clear();
                Ok(json!({ "cleared": true, "not_traced": dropped }))
            }
            Request::RouteDel {
                service,
                table,
                prefix,
            } => self.engine.route_del(service, table, prefix),
        }
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
        let p = self.engine.running.publication_stats();
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
            "mbufs_in_use": self.engine.running.mbufs_in_use(),
            "relay": self.engine.relay.as_ref().map(|r| json!({
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
        let host = self.engine.running.host();
        let list: Vec<Value> = self
            .engine
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
                    "name": self.engine.names.port_name(i as u16),
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
        let t = self.engine.tables()?;
        let only = service.map(|s| self.engine.names.service(&s)).transpose()?;
        let mut rows = Vec::new();
        for (i, svc) in t.services.iter().enumerate() {
            if only.is_some_and(|o| usize::from(o) != i) {
                continue;
            }
            for (k, r) in svc.policy.iter().enumerate() {
                let base = self
                    .engine
                    .rule_base
                    .get(usize::from(r.slot))
                    .copied()
                    .unwrap_or_default();
                let c = self
                    .engine
                    .running
                    .rule(r.slot)
                    .unwrap_or_default()
                    .since(&base);
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

    fn services(&self) -> Result<Value, String> {
        let t = self.engine.tables()?;
        Ok(Value::Array(
            t.services
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let vpn = self.engine.vpn.get(&s.name).cloned().unwrap_or(Value::Null);
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
        let t = self.engine.tables()?;
        Ok(Value::Array(
            t.next_hops()
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let arp = self.engine.neighbors.get(i as u32);
                    let state = match (arp, n.is_resolved()) {
                        (None, _) => "static",
                        (Some(_), true) => "resolved",
                        (Some(_), false) => "unresolved",
                    };
                    json!({
                        "id": i,
                        "name": self.engine.names.next_hop_name(i as u32),
                        "port": self.engine.names.port_name(n.port),
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
        let t = self.engine.tables()?;
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
                        json!({ "out_label": label, "next_hop": self.engine.names.next_hop_name(next_hop) }),
                    ),
                    LabelAction::PopPhp { next_hop } => (
                        "php",
                        json!({ "next_hop": self.engine.names.next_hop_name(next_hop) }),
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
        let t = self.engine.tables()?;
        let services: Vec<usize> = match &service {
            Some(name) => vec![usize::from(self.engine.names.service(name)?)],
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
        self.engine.tables()?;
        let port = port.map(|p| self.engine.names.port(&p)).transpose()?;
        self.engine.running.trace().arm(count, port);
        Ok(json!({ "armed": count }))
    }

    fn trace_show(&mut self) -> Result<Value, String> {
        let fresh = self.engine.running.trace().drain();
        self.traced.extend(fresh);
        let excess = self.traced.len().saturating_sub(TRACE_KEEP);
        self.traced.drain(..excess);
        let list: Vec<Value> = self.traced.iter().map(|r| self.explain(r)).collect();
        Ok(json!({
            "remaining": self.engine.running.trace().remaining(),
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
            "in_port": self.engine.names.port_name(r.in_port),
            "outcome": r.outcome.name(),
            "out_port": (r.out_port < dataplane::pipeline::PUNT_PORT).then(|| self.engine.names.port_name(r.out_port)),
            "length": r.in_len,
            "vlan": hin.vlan,
            "labels_in": hin.labels,
            "labels_out": hout.labels,
            "src": hin.ip.map(|(s, _)| std::net::Ipv4Addr::from(s).to_string()),
            "dst": hin.ip.map(|(_, d)| std::net::Ipv4Addr::from(d).to_string()),
            "generation": r.generation,
        });
        let Some(t) = self.engine.running.tables() else {
            return v;
        };
        v["tables_changed"] = json!(self.engine.running.generation() != r.generation);
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
                            v["label_action"] = json!({"swap": label, "next_hop": self.engine.names.next_hop_name(next_hop)});
                        }
                        Some(LabelAction::PopPhp { next_hop }) => {
                            v["label_action"] = json!({"php": true, "next_hop": self.engine.names.next_hop_name(next_hop)});
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
                    "next_hop": self.engine.names.next_hop_name(nh),
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
