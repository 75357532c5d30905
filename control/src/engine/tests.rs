//! The writer side against a data plane double: real tables published
//! through the real publisher (no workers read them, so every commit is
//! seen at once), punted frames handed in, sent frames and commits
//! recorded in order together with what BGP's session tasks are told.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dataplane::publish::{self, Publisher};
use dataplane::tables::{RouteTable, TableOp, Tables};
use dhcproto::v4::{self, DhcpOption, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;
use crate::bgp::fsm::Negotiated;
use crate::bgp::session::{FromSession, ToSession};
use crate::bgp::speaker::Speaker;
use crate::bgp::{VpnPath, VpnRoute, Vpnv4Update};
use crate::relay::{Relay, ServerSocket, ServiceRelay};

const CONFIG: &str = r#"
[dataplane]
workers = [1]
forward_mode = "router"
[router]
role = "spoke"
label_base = 1000
label_count = 64
[[port]]
name = "access0"
device = "net_null0"
role = "access"
[[port]]
name = "core0"
device = "net_null1"
role = "core"
[[next_hop]]
name = "hub"
port = "core0"
mac = "02:00:5e:00:02:09"
labels = [100]
[[next_hop]]
name = "client-a"
port = "access0"
mac = "02:ca:00:00:00:0a"
vlan = 100
[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
access = [ { port = "access0", vlan = 100 } ]
route_distinguisher = "65000:100"
import_targets = ["65000:1"]
export_targets = ["65000:2"]
address_server = "198.51.100.7"
downstream = [ { prefix = "10.0.0.10/32", next_hop = "client-a" } ]
[bgp]
asn = 65000
router_id = "198.18.0.1"
[[bgp.neighbor]]
address = "198.18.0.2"
remote_asn = 65000
via = "hub"
"#;

const PORT_MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const CLIENT: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 1];
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 67);

/// What the data plane and BGP's session tasks saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// A batch committed or published.
    Commit(Vec<TableOp>),
    /// A frame sent out of a port.
    Inject(u16, Vec<u8>),
    /// Told to neighbour 0's session: '+' advertise, '-' withdraw.
    Bgp(char, String),
}

/// The data plane double.
struct Double {
    publisher: Publisher<Tables, TableOp>,
    /// Frames the workers punted, for the next `host_poll`.
    punted: VecDeque<(u16, Vec<u8>)>,
    seen: Vec<Seen>,
    /// Neighbour 0's session task's end of its command channel: what it
    /// was told is recorded at every data plane call, so that `seen`
    /// has it in order with the commits and frames.
    bgp: Option<UnboundedReceiver<ToSession>>,
}

impl Double {
    fn told_bgp(&mut self) {
        let Some(rx) = self.bgp.as_mut() else {
            return;
        };
        while let Ok(m) = rx.try_recv() {
            let (sign, routes) = match m {
                ToSession::Advertise(r, _) => ('+', r),
                ToSession::Withdraw(r) => ('-', r),
                ToSession::Table(_, t) | ToSession::Refresh(_, t) => {
                    ('+', t.into_iter().flat_map(|(_, r)| r).collect())
                }
                ToSession::Stop | ToSession::AskRefresh | ToSession::Cease { .. } => continue,
            };
            for r in routes {
                self.seen
                    .push(Seen::Bgp(sign, format!("{}/{}", r.prefix, r.len)));
            }
        }
    }
}

impl Dataplane for Double {
    fn commit_within(
        &mut self,
        ops: &[TableOp],
        timeout: Option<Duration>,
    ) -> Result<PublishStats, CommitError> {
        self.told_bgp();
        self.seen.push(Seen::Commit(ops.to_vec()));
        match timeout {
            Some(t) => self.publisher.commit_timeout(ops, t),
            None => self.publisher.commit(ops),
        }
    }

    fn publish(&mut self, ops: &[TableOp]) -> Result<u64, CommitError> {
        self.told_bgp();
        self.seen.push(Seen::Commit(ops.to_vec()));
        self.publisher.publish(ops)
    }

    fn settled(&mut self) -> bool {
        self.publisher.is_settled() || self.publisher.settle(Some(Duration::ZERO)).is_ok()
    }

    fn tables(&self) -> Option<&Tables> {
        Some(self.publisher.active())
    }

    fn host_poll(&mut self, mut inspect: impl FnMut(u16, &[u8]) -> bool) -> usize {
        let mut n = 0;
        while let Some((port, frame)) = self.punted.pop_front() {
            inspect(port, &frame);
            n += 1;
        }
        n
    }

    fn host_inject(&mut self, port: u16, frame: &[u8]) -> bool {
        self.told_bgp();
        self.seen.push(Seen::Inject(port, frame.to_vec()));
        true
    }

    fn port_macs(&self) -> Vec<(String, [u8; 6])> {
        PORT_MACS
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("net_null{i}"), *m))
            .collect()
    }

    fn subscriber(&self, _id: u32) -> Option<SubscriberSnapshot> {
        Some(SubscriberSnapshot::default())
    }

    fn rule(&self, _slot: u16) -> Option<RuleSnapshot> {
        Some(RuleSnapshot::default())
    }
}

/// A datagram and where it went.
type Sent = (Vec<u8>, SocketAddrV4);

/// The address server's side of the relay's socket: what was sent to
/// it, and the replies it has waiting.
#[derive(Clone, Default)]
struct Server {
    sent: Rc<RefCell<Vec<Sent>>>,
    replies: Rc<RefCell<VecDeque<Vec<u8>>>>,
}

impl ServerSocket for Server {
    fn send_to(&self, payload: &[u8], to: SocketAddrV4) -> io::Result<usize> {
        self.sent.borrow_mut().push((payload.to_vec(), to));
        Ok(payload.len())
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some(r) = self.replies.borrow_mut().pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        buf[..r.len()].copy_from_slice(&r);
        Ok((r.len(), SocketAddr::V4(SERVER)))
    }
}

/// The engine as `hdvrf run` sets it up from `text`: names, VPN
/// settings, neighbours, the relay with its socket on the gateway, the
/// BGP speaker.
fn engine(text: &str) -> (Engine<Double>, Server) {
    let loaded = crate::config::parse(Path::new("test.toml"), text).expect("config");
    let tables = crate::router::build_tables(&loaded, &PORT_MACS).expect("tables");
    let standby = tables.second_copy();
    let publisher = publish::channel(tables, standby, |t: &mut Tables, ops: &[TableOp]| {
        t.apply(ops)
    });
    let double = Double {
        publisher,
        punted: VecDeque::new(),
        seen: Vec::new(),
        bgp: None,
    };
    let mut e = Engine::new(
        double,
        Names::from_config(&loaded.config),
        PathBuf::from("test.toml"),
        Applied::Text(text.to_owned()),
    );
    e.set_from_config(&loaded.config);
    e.neighbors = Neighbors::from_config(&loaded, &PORT_MACS);
    let server = Server::default();
    let sockets: HashMap<Ipv4Addr, Box<dyn ServerSocket>> =
        HashMap::from([(GATEWAY, Box::new(server.clone()) as Box<dyn ServerSocket>)]);
    e.relay = Some(Relay::new(
        vec![Some(ServiceRelay {
            gateway: GATEWAY,
            server: SERVER,
        })],
        sockets,
        100,
    ));
    let (speaker, pending) = Speaker::from_config(&loaded.config).expect("[bgp]");
    e.set_bgp(speaker);
    e.running.bgp = pending.into_iter().next().map(|(_, rx)| rx);
    (e, server)
}

/// Neighbour 0 comes up.
fn establish(e: &mut Engine<Double>) {
    let n = Negotiated {
        hold_time: 90,
        peer_id: Ipv4Addr::new(198, 18, 0, 2),
        peer_asn: 65000,
        asn4: true,
        route_refresh: true,
    };
    e.bgp_event(0, FromSession::Established(n, 1), Instant::now());
}

/// What was seen since last asked (BGP's commands up to now included).
fn seen(e: &mut Engine<Double>) -> Vec<Seen> {
    e.running.told_bgp();
    std::mem::take(&mut e.running.seen)
}

/// A client's DHCP message of `kind`, as the client sends it.
fn client_message(kind: MessageType, ciaddr: Ipv4Addr) -> v4::Message {
    let mut m = v4::Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_chaddr(&CLIENT)
        .set_xid(0x1234_5678)
        .set_ciaddr(ciaddr);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

/// The frame a client on VLAN 100 sends it in, broadcast to port 67.
fn client_frame(m: &v4::Message) -> Vec<u8> {
    let payload = m.to_vec().unwrap();
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT, [0xff; 6])
        .single_vlan(etherparse::VlanId::try_new(100).unwrap())
        .ipv4([0; 4], [255; 4], 64)
        .udp(crate::dhcp::CLIENT_PORT, crate::dhcp::SERVER_PORT)
        .write(&mut out, &payload)
        .unwrap();
    out
}

/// The server's ACK of `address` for the relayed request `relayed`
/// (its option 82 echoed, as servers do).
fn server_ack(relayed: &[u8], address: Ipv4Addr) -> Vec<u8> {
    let mut r = v4::Message::decode(&mut Decoder::new(relayed)).unwrap();
    r.set_opcode(Opcode::BootReply).set_yiaddr(address);
    r.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Ack));
    r.opts_mut().insert(DhcpOption::AddressLeaseTime(3600));
    r.to_vec().unwrap()
}

/// The client's DISCOVER goes through the relay to the server, whose
/// ACK (for the REQUEST that follows) of `address` then comes back
/// through the sockets. Returns what was seen from the ACK's tick.
fn session_up(e: &mut Engine<Double>, server: &Server, address: Ipv4Addr) -> Vec<Seen> {
    let now = Instant::now();
    let discover = client_frame(&client_message(
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
    ));
    e.running.punted.push_back((0, discover));
    e.host_tick(now);
    let relayed = server.sent.borrow().last().expect("relayed").0.clone();
    server
        .replies
        .borrow_mut()
        .push_back(server_ack(&relayed, address));
    seen(e);
    e.host_tick(now);
    seen(e)
}

fn host_route(address: Ipv4Addr) -> RouteKey {
    crate::sessions::host_key(0, address)
}

fn downstream(e: &Engine<Double>, address: Ipv4Addr) -> Option<u32> {
    e.running.tables().unwrap().services[0]
        .table(RouteTable::Downstream)
        .get(u32::from(address), 32)
}

/// (a) A DHCP exchange through the relay: the client's DISCOVER goes to
/// the server with giaddr and option 82; the server's ACK makes the
/// session, whose host route is published before the ACK goes to the
/// client, and advertised to BGP once published.
#[test]
fn an_ack_is_published_before_the_client_gets_it_and_advertised_after() {
    let (mut e, server) = engine(CONFIG);
    establish(&mut e);
    assert_eq!(
        seen(&mut e),
        [Seen::Bgp('+', "10.0.0.10/32".into())],
        "the file's route toward our side, from the start"
    );
    let now = Instant::now();
    let discover = client_frame(&client_message(
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
    ));
    e.running.punted.push_back((0, discover));
    assert_eq!(e.host_tick(now), 1);
    {
        let sent = server.sent.borrow();
        assert_eq!(sent.len(), 1);
        let (payload, to) = &sent[0];
        assert_eq!(*to, SERVER);
        let m = v4::Message::decode(&mut Decoder::new(payload)).unwrap();
        assert_eq!(m.giaddr(), GATEWAY);
        assert_eq!(crate::dhcp::message_type(&m), Some(MessageType::Discover));
    }
    assert_eq!(seen(&mut e), [], "a DISCOVER changes nothing");

    let address = Ipv4Addr::new(10, 0, 0, 100);
    let relayed = server.sent.borrow()[0].0.clone();
    server
        .replies
        .borrow_mut()
        .push_back(server_ack(&relayed, address));
    e.host_tick(now);
    let got = seen(&mut e);
    let [Seen::Commit(ops), Seen::Bgp('+', advertised), Seen::Inject(0, frame)] = &got[..] else {
        panic!("commit, then the advertisement, then the ACK to the client: {got:?}");
    };
    assert_eq!(advertised, "10.0.0.100/32");
    let id = downstream(&e, address).expect("the session's host route is in the tables");
    assert!(
        ops.iter().any(|op| matches!(
            *op,
            TableOp::AddRoute { service: 0, table: RouteTable::Downstream, prefix, len: 32, next_hop }
                if prefix == u32::from(address) && next_hop == id
        )),
        "{ops:?}"
    );
    let nh = e.running.tables().unwrap().next_hops()[id as usize];
    assert_eq!((nh.port, nh.vlan, nh.dst_mac), (0, 100, CLIENT));
    assert_eq!(
        e.names.next_hop_name(id),
        crate::sessions::next_hop_name(&CLIENT)
    );
    // The ACK, to the client from the gateway, without option 82.
    let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    assert_eq!(&frame[0..6], &CLIENT);
    assert_eq!(&frame[6..12], &PORT_MACS[0]);
    let Some(etherparse::TransportSlice::Udp(udp)) = &p.transport else {
        panic!("not UDP");
    };
    let m = v4::Message::decode(&mut Decoder::new(udp.payload())).unwrap();
    assert_eq!(crate::dhcp::message_type(&m), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), address);
    let relay = e.relay.as_ref().unwrap();
    assert_eq!((relay.stats.to_server, relay.stats.to_client), (1, 1));
    assert!(relay.sessions.holds(0, address));
    assert!(matches!(
        e.rib.installed(&host_route(address)),
        Some((Source::Session, _))
    ));
}

/// (b) A RELEASE: the route is withdrawn from BGP before it leaves the
/// tables, the next hop is freed, and the RELEASE goes on to the server.
#[test]
fn a_release_is_withdrawn_from_bgp_before_the_route_goes() {
    let (mut e, server) = engine(CONFIG);
    establish(&mut e);
    let address = Ipv4Addr::new(10, 0, 0, 100);
    session_up(&mut e, &server, address);
    let id = downstream(&e, address).unwrap();
    let in_use = e.rib.next_hops_in_use();

    let release = client_frame(&client_message(MessageType::Release, address));
    e.running.punted.push_back((0, release));
    let now = Instant::now();
    e.host_tick(now);
    e.host_tick(now);
    let got = seen(&mut e);
    let [Seen::Bgp('-', withdrawn), Seen::Commit(ops)] = &got[..] else {
        panic!("the withdrawal, then the removal: {got:?}");
    };
    assert_eq!(withdrawn, "10.0.0.100/32");
    assert!(
        ops.iter().any(|op| matches!(
            *op,
            TableOp::DeleteRoute { service: 0, table: RouteTable::Downstream, prefix, len: 32 }
                if prefix == u32::from(address)
        )),
        "{ops:?}"
    );
    assert_eq!(downstream(&e, address), None);
    assert!(!e.rib.holds(id), "the session's next hop is freed");
    assert_eq!(e.rib.next_hops_in_use(), in_use - 1);
    assert!(!e.relay.as_ref().unwrap().sessions.holds(0, address));
    let sent = server.sent.borrow();
    let m = v4::Message::decode(&mut Decoder::new(&sent.last().unwrap().0)).unwrap();
    assert_eq!(crate::dhcp::message_type(&m), Some(MessageType::Release));
}

/// (c) An ACK whose host route the tables refuse (the downstream table
/// at its memory limit: two /8s' chunks fit in 1 MiB, not a third): the
/// route is not installed, not advertised, counted, and the client gets
/// no ACK for an address the router cannot deliver to.
#[test]
fn a_refused_session_route_is_counted_not_advertised_and_not_acked() {
    let text = CONFIG
        .replace(
            "forward_mode = \"router\"",
            "forward_mode = \"router\"\nroute_table_memory_mb = 1",
        )
        .replace(
            "downstream = [ { prefix = \"10.0.0.10/32\", next_hop = \"client-a\" } ]",
            "downstream = [ { prefix = \"10.0.0.10/32\", next_hop = \"client-a\" }, { prefix = \"11.0.0.10/32\", next_hop = \"client-a\" } ]",
        );
    let (mut e, server) = engine(&text);
    establish(&mut e);
    seen(&mut e);
    let address = Ipv4Addr::new(12, 0, 0, 5);
    let got = session_up(&mut e, &server, address);
    let [Seen::Commit(ops)] = &got[..] else {
        panic!("the commit only: no advertisement, no ACK: {got:?}");
    };
    assert!(ops
        .iter()
        .any(|op| matches!(*op, TableOp::AddRoute { prefix, len: 32, .. } if prefix == u32::from(address))));
    assert_eq!(downstream(&e, address), None);
    let key = host_route(address);
    assert_eq!(e.rib.installed(&key), None);
    assert!(
        e.rib.refused(&key).unwrap().contains("memory limit"),
        "{:?}",
        e.rib.refused(&key)
    );
    assert_eq!((e.rib.stats.rejected_ops, e.rib.refused_count()), (1, 1));
    assert_eq!(e.relay.as_ref().unwrap().stats.to_client, 0);
    assert!(!e
        .bgp
        .as_ref()
        .unwrap()
        .originated
        .keys()
        .any(|k| k.0 == address));

    // An address in a /8 the table holds is taken.
    let address = Ipv4Addr::new(10, 0, 0, 100);
    let got = session_up(&mut e, &server, address);
    assert!(
        matches!(&got[..], [Seen::Commit(_), Seen::Bgp('+', a), Seen::Inject(0, _)] if a == "10.0.0.100/32"),
        "{got:?}"
    );
}

/// (c2) A worker still on the tables published before (it has not
/// polled since): the ACK's tick neither waits for it nor publishes over
/// the copy it reads; the ACK is held, and goes in the first tick after
/// the worker moved on, behind its commit.
#[test]
fn an_ack_waits_for_a_worker_behind_without_the_tick_waiting() {
    let (mut e, server) = engine(CONFIG);
    establish(&mut e);
    seen(&mut e);
    let mut worker = e.running.publisher.reader();
    e.running.publisher.publish(&[]).unwrap();
    assert!(
        !e.running.settled(),
        "the worker holds the copy the next publication writes"
    );
    let address = Ipv4Addr::new(10, 0, 0, 100);
    let got = session_up(&mut e, &server, address);
    assert_eq!(
        got,
        [],
        "nothing published or sent while the worker is behind"
    );
    assert_eq!(downstream(&e, address), None);
    assert!(e.relay.as_ref().unwrap().sessions.holds(0, address));
    assert_eq!(e.relay.as_ref().unwrap().stats.to_client, 0);

    worker.quiesce();
    e.host_tick(Instant::now());
    let got = seen(&mut e);
    assert!(
        matches!(&got[..], [Seen::Commit(_), Seen::Bgp('+', a), Seen::Inject(0, _)] if a == "10.0.0.100/32"),
        "{got:?}"
    );
    assert!(downstream(&e, address).is_some());
    assert_eq!(e.relay.as_ref().unwrap().stats.to_client, 1);
}

/// (d) A route BGP learns is installed through a next hop made for its
/// (via, label); withdrawn, the route goes and that next hop is freed.
#[test]
fn a_learnt_route_is_installed_and_its_next_hop_freed_when_withdrawn() {
    let (mut e, _server) = engine(CONFIG);
    establish(&mut e);
    seen(&mut e);
    let in_use = e.rib.next_hops_in_use();
    let route = VpnRoute {
        rd: "65000:1".parse().unwrap(),
        prefix: Ipv4Addr::new(192, 0, 2, 0),
        len: 24,
        label: 3001,
    };
    let path = VpnPath {
        next_hop: Ipv4Addr::new(198, 18, 0, 2),
        route_targets: vec!["65000:1".parse().unwrap()],
        local_pref: Some(100),
        med: None,
        as_path: Vec::new(),
        reflection: None,
    };
    let now = Instant::now();
    e.bgp_event(
        0,
        FromSession::Learned(Vpnv4Update {
            reach: vec![route],
            path: Some(path),
            withdrawn: Vec::new(),
            end_of_rib: false,
        }),
        now,
    );
    let upstream = |e: &Engine<Double>| {
        e.running.tables().unwrap().services[0]
            .table(RouteTable::Upstream)
            .get(0xc000_0200, 24)
    };
    let id = upstream(&e).expect("installed");
    let nh = e.running.tables().unwrap().next_hops()[id as usize];
    assert_eq!(nh.labels(), [100, 3001]);
    assert_eq!(e.names.next_hop_name(id), "~bgp/hub/3001");
    assert_eq!(e.rib.next_hops_in_use(), in_use + 1);
    assert!(matches!(&seen(&mut e)[..], [Seen::Commit(_)]));

    e.bgp_event(
        0,
        FromSession::Learned(Vpnv4Update {
            reach: Vec::new(),
            path: None,
            withdrawn: vec![route],
            end_of_rib: false,
        }),
        now,
    );
    assert_eq!(upstream(&e), None);
    assert!(!e.rib.holds(id), "BGP's next hop is freed");
    assert_eq!(e.rib.next_hops_in_use(), in_use);
    assert_eq!(e.rib.stats.next_hops_freed, 1);
    assert_eq!(
        e.names.next_hop_name(id),
        "",
        "a freed next hop has no name"
    );
    assert_eq!(
        e.running.tables().unwrap().next_hops()[id as usize],
        crate::rib::retired_next_hop(),
        "retired in the tables: it leads nowhere"
    );
}

/// `ctl route add` toward our side: committed, then advertised; `ctl
/// route del`: removed and withdrawn.
#[test]
fn a_ctl_route_is_advertised_once_committed() {
    let (mut e, _server) = engine(CONFIG);
    establish(&mut e);
    seen(&mut e);
    let r = e
        .route_add(
            "blue".into(),
            "downstream".into(),
            "10.0.0.50/32".into(),
            "client-a".into(),
        )
        .expect("added");
    assert!(r["generation"].is_u64(), "{r}");
    let got = seen(&mut e);
    assert!(
        matches!(&got[..], [Seen::Commit(_), Seen::Bgp('+', a)] if a == "10.0.0.50/32"),
        "{got:?}"
    );
    e.route_del("blue".into(), "downstream".into(), "10.0.0.50/32".into())
        .expect("deleted");
    let got = seen(&mut e);
    assert!(
        got.iter().any(|s| matches!(s, Seen::Commit(_)))
            && got.contains(&Seen::Bgp('-', "10.0.0.50/32".into())),
        "{got:?}"
    );
    assert_eq!(downstream(&e, Ipv4Addr::new(10, 0, 0, 50)), None);
}
