//! The DHCP relay and subscriber sessions on the control thread.
//!
//! ```text
//!  worker punts DHCP/ARP from access ports -> host path -> Engine::host_tick
//!     DHCP request  -> option 82, giaddr -> UDP socket (gateway:67) -> server
//!     ARP for a service gateway          -> reply injected on the port
//!  server reply -> socket -> option 82 names port/VLAN/client
//!     ACK          -> session up: next hop + downstream /32 published
//!                     -> then the ACK goes to the client
//!     NAK          -> session down, then the NAK goes out
//!     other        -> to the client
//!  client RELEASE / DECLINE -> session down (published), then relayed
//!  every tick: expired leases -> session down
//! ```
//!
//! Sockets are plain non-blocking UDP sockets polled with the host path
//! every millisecond: a relay's load (a few thousand messages a second at
//! most) does not need more. Each gateway address is local to the kernel
//! (added to `lo` when it is not), so the server's replies to giaddr:67
//! reach us. The binary binds them (`hdvrf run`); here they are
//! [`ServerSocket`]s, which the unit tests stand in for.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::dhcp::Kind as MessageType;
use crate::sessions::Sessions;

/// One service's relay settings.
#[derive(Clone, Debug)]
pub struct ServiceRelay {
    pub gateway: Ipv4Addr,
    pub server: SocketAddrV4,
}

/// A socket on a gateway address, toward the address servers: std's
/// non-blocking [`UdpSocket`] in service.
pub trait ServerSocket {
    fn send_to(&self, payload: &[u8], to: SocketAddrV4) -> io::Result<usize>;
    /// A datagram waiting; [`ErrorKind::WouldBlock`] when there is none.
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

impl ServerSocket for UdpSocket {
    fn send_to(&self, payload: &[u8], to: SocketAddrV4) -> io::Result<usize> {
        UdpSocket::send_to(self, payload, to)
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf)
    }
}

/// Relay counters, by what happened.
#[derive(Clone, Debug, Default)]
pub struct RelayStats {
    pub to_server: u64,
    pub to_client: u64,
    pub gateway_arp_replies: u64,
    /// Dropped, by reason.
    pub drops: HashMap<&'static str, u64>,
}

impl RelayStats {
    pub fn drop(&mut self, why: &'static str) {
        *self.drops.entry(why).or_default() += 1;
    }
}

/// Logs one line per kind of trouble per interval, not per packet.
#[derive(Debug, Default)]
struct Throttle {
    last: HashMap<String, Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Throttle {
    fn error(&mut self, key: &str, msg: &str, now: Instant) {
        match self.last.get(key) {
            Some(t) if now.duration_since(*t) < LOG_EVERY => {}
            _ => {
                eprintln!("hdvrf: error: {msg}");
                self.last.insert(key.to_owned(), now);
            }
        }
    }
}

/// Whether an address server answers: requests go out, replies come
/// back. A server that stopped shows no error on a UDP socket, only
/// silence, so silence is what is watched.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerHealth {
    pub requests: u64,
    pub replies: u64,
    /// The oldest request since the last reply.
    pub unanswered_since: Option<Instant>,
    /// Whether the server is reported as not answering now.
    pub silent: bool,
    pub last_report: Option<Instant>,
}

/// A server that leaves requests unanswered this long is reported.
pub const SILENCE: Duration = Duration::from_secs(3);

/// The relay's state: per service settings, one socket per gateway, the
/// sessions.
pub struct Relay {
    /// By service id; `None` for services without an address server.
    pub services: Vec<Option<ServiceRelay>>,
    sockets: HashMap<Ipv4Addr, Box<dyn ServerSocket>>,
    pub sessions: Sessions,
    pub stats: RelayStats,
    /// By server address.
    pub health: HashMap<SocketAddrV4, ServerHealth>,
    /// Where session changes are journalled (`control.session_journal`).
    pub journal: Option<crate::journal::Journal>,
    /// `control.max_sessions`: new clients beyond it are not relayed.
    pub max_sessions: usize,
    throttle: Throttle,
}

impl Relay {
    /// The relay of `services` (by service id; `None` for services
    /// without an address server) through a socket on each of their
    /// gateways, taking at most `max_sessions` sessions.
    pub fn new(
        services: Vec<Option<ServiceRelay>>,
        sockets: HashMap<Ipv4Addr, Box<dyn ServerSocket>>,
        max_sessions: usize,
    ) -> Relay {
        Relay {
            services,
            sockets,
            sessions: Sessions::default(),
            stats: RelayStats::default(),
            health: HashMap::new(),
            journal: None,
            max_sessions,
            throttle: Throttle::default(),
        }
    }

    /// Whether a client's message may go to the server: a client without
    /// a session asking for one (DISCOVER, REQUEST) is refused once
    /// `max_sessions` are up, with one log line per interval.
    pub fn admits(
        &mut self,
        service: u16,
        mac: [u8; 6],
        kind: Option<crate::dhcp::Kind>,
        now: Instant,
    ) -> bool {
        use crate::dhcp::Kind;
        if !matches!(kind, Some(Kind::Discover | Kind::Request))
            || self.sessions.len() < self.max_sessions
            || self.sessions.get(service, mac).is_some()
        {
            return true;
        }
        self.stats.drop("sessions_full");
        self.log_error(
            "full",
            &format!(
                "DHCP relay: {} sessions, the most control.max_sessions allows: new clients are not relayed (last: {})",
                self.sessions.len(),
                crate::config::fmt_mac(&mac)
            ),
            now,
        );
        false
    }

    /// Relays a client's message of `service` to its server. Only
    /// messages that `expect_reply` (not RELEASE or DECLINE) count
    /// toward the server's silence.
    pub fn send_to_server(
        &mut self,
        service: u16,
        payload: &[u8],
        expect_reply: bool,
        now: Instant,
    ) {
        let Some(Some(r)) = self.services.get(usize::from(service)) else {
            self.stats.drop("no_address_server");
            return;
        };
        let Some(sock) = self.sockets.get(&r.gateway) else {
            self.stats.drop("no_socket");
            return;
        };
        match sock.send_to(payload, r.server) {
            Ok(_) => {
                self.stats.to_server += 1;
                let h = self.health.entry(r.server).or_default();
                if expect_reply {
                    h.requests += 1;
                    h.unanswered_since.get_or_insert(now);
                }
            }
            Err(e) => {
                self.stats.drop("server_unreachable");
                self.throttle.error(
                    &format!("send {}", r.server),
                    &format!(
                        "DHCP relay: sending to the address server {}: {e}",
                        r.server
                    ),
                    now,
                );
            }
        }
    }

    /// Every reply waiting on the sockets.
    pub fn receive(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        for sock in self.sockets.values() {
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, std::net::SocketAddr::V4(from))) => {
                        out.push(buf[..n].to_vec());
                        // Replies come from the server's port 67.
                        if let Some(h) = self.health.get_mut(&from) {
                            h.replies += 1;
                            h.unanswered_since = None;
                            if h.silent {
                                h.silent = false;
                                crate::log::say!(
                                    "hdvrf: DHCP relay: the address server {from} answers again"
                                );
                            }
                        }
                    }
                    Ok((n, _)) => out.push(buf[..n].to_vec()),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP port unreachable from a stopped server shows
                    // up here on Linux; the send side already counted it.
                    Err(_) => break,
                }
            }
        }
        out
    }

    /// Reports each server that has left requests unanswered for
    /// [`SILENCE`]: one line when it goes silent and one per
    /// [`LOG_EVERY`] while it stays so, never one per request.
    pub fn watch_servers(&mut self, now: Instant) {
        for (addr, h) in &mut self.health {
            let Some(since) = h.unanswered_since else {
                continue;
            };
            if now.duration_since(since) < SILENCE {
                continue;
            }
            if h.last_report
                .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
            {
                continue;
            }
            h.silent = true;
            h.last_report = Some(now);
            eprintln!(
                "hdvrf: error: DHCP relay: the address server {addr} has not answered for {} s ({} requests sent, {} replies so far); clients get no address until it does",
                now.duration_since(since).as_secs(),
                h.requests,
                h.replies
            );
        }
    }

    /// Journals a session change; a failing journal (a full disk) is
    /// counted (`hdvrf_session_journal_write_errors_total`), reported once
    /// per interval and does not stop the session.
    pub fn journal(&mut self, e: &crate::journal::Entry, now: Instant) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        if let Err(m) = j.write(e) {
            self.throttle
                .error("journal", &format!("session journal: {m}"), now);
        }
    }

    /// The journal's share of a tick: pending appends synced, the file
    /// rewritten when it has grown or missed a change. Failures are
    /// reported like a failed append.
    pub fn journal_tick(&mut self, now: Instant) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        if let Err(m) = j.tick(now) {
            self.throttle
                .error("journal", &format!("session journal: {m}"), now);
        }
    }

    pub fn log_error(&mut self, key: &str, msg: &str, now: Instant) {
        self.throttle.error(key, msg, now);
    }
}

/// What a message from a client means for its session.
pub fn ends_session(t: Option<MessageType>) -> bool {
    matches!(t, Some(MessageType::Release | MessageType::Decline))
}
