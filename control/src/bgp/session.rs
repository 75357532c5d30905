//! One BGP neighbour as a task: TCP, the message framing, the state
//! machine's actions and timers, and what it learns, handed to the
//! caller as [`FromSession`] values.
//!
//! The task keeps no Adj-RIB-Out: the speaker owns it and sends it whole
//! for each establishment ([`ToSession::Table`], answering
//! [`FromSession::Established`], which numbers the establishment), then
//! its changes. The session sends changes on only once it has sent that
//! establishment's table: a change queued before the speaker heard of the
//! establishment is in the table already, and one queued after follows
//! it, so none is lost or sent twice. A table for an earlier
//! establishment (the session went down and up again meanwhile) is
//! dropped; the speaker sends the current one when it hears of it.
//!
//! Framing is done here rather than with the codec's tokio codec: every
//! UPDATE must pass [`check_update`] (RFC 7606) as raw bytes before it is
//! decoded.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use dataplane::sys::sock;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use crate::config::Password;

use super::fsm::{
    check_open, Action, Damping, Event, Expect, Fsm, Negotiated, Notify, State, Timer,
};
use super::{
    check_update, decode, encode, notification, open, vpnv4_end_of_rib, vpnv4_of, vpnv4_reach,
    vpnv4_unreach, withdrawal_of, BgpMessage, Verdict, VpnPath, VpnRoute, Vpnv4Update, MAX_MESSAGE,
};

/// How to reach one neighbour and what to expect of it.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The peer's address and port (179 in service).
    pub peer: SocketAddr,
    /// Passive: where to listen for the peer instead of connecting.
    pub listen: Option<SocketAddr>,
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    pub remote_asn: u32,
    pub hold_time: u16,
    /// How long a message may take to leave before the session is torn
    /// down (RFC 9687's SendHoldTime); `None`: its default, the larger of
    /// 8 minutes and twice the negotiated hold time.
    pub send_hold: Option<Duration>,
    /// TCP-MD5 (RFC 2385): the key every segment is signed with.
    pub md5_password: Option<Password>,
    /// GTSM (RFC 5082): the hops the peer may be away; we send with TTL
    /// 255 and take only what arrives with at least 255 less these.
    pub ttl_security: Option<u8>,
    /// Peer oscillation damping (RFC 4271 section 8.1.1).
    pub damping: Damping,
}

impl PeerConfig {
    /// The least TTL the peer's packets may arrive with (RFC 5082
    /// section 3), if GTSM is on: 255 less the hops, as Cisco's
    /// `ttl-security hops` counts them, so 254 for a directly connected
    /// peer (FRR's `ttl-security hops 1` asks for 255).
    fn min_ttl(&self) -> Option<u8> {
        self.ttl_security.map(|h| 255u8.saturating_sub(h).max(1))
    }
}

/// The TTL GTSM sends with (RFC 5082 section 3).
const GTSM_TTL: u8 = 255;

/// RFC 9687's least send hold time.
const SEND_HOLD_MIN: Duration = Duration::from_secs(8 * 60);

/// Routes grouped by the path they are advertised with.
pub type Table = Vec<(VpnPath, Vec<VpnRoute>)>;

/// What the owner of a session tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToSession {
    /// Advertise these routes with this path (replacing what was
    /// advertised for the same RD and prefix). Dropped unless the session
    /// is Established and has sent its establishment's table.
    Advertise(Vec<VpnRoute>, VpnPath),
    /// Withdraw these routes; dropped as advertisements are.
    Withdraw(Vec<VpnRoute>),
    /// The whole Adj-RIB-Out for the establishment numbered `.0` (as
    /// [`FromSession::Established`] numbered it): sent, then End-of-RIB
    /// (RFC 4724 section 2), once. Dropped if the session is not
    /// Established or is in another establishment.
    Table(u64, Table),
    /// The whole Adj-RIB-Out again, answering the peer's ROUTE-REFRESH
    /// (RFC 2918 section 4) in establishment `.0`, after its table.
    Refresh(u64, Table),
    /// Ask the peer for its routes again (ROUTE-REFRESH for VPNv4, RFC
    /// 2918): an import target was added and the routes carrying it were
    /// not kept. Dropped unless Established with the capability.
    AskRefresh,
    /// Stop the session ourselves (AutomaticStop) with Cease `subcode`
    /// and `data` (RFC 4486); `why` is the reason [`FromSession::Down`]
    /// gives. It starts again after `restart` (RFC 4486 section 4's
    /// optional restart timer); `None`: not until the task is started
    /// anew.
    Cease {
        subcode: u8,
        data: Vec<u8>,
        why: String,
        restart: Option<Duration>,
    },
    /// ManualStop, and the task ends.
    Stop,
}

/// What a session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromSession {
    /// Established: what was negotiated, and the establishment's number
    /// (1, 2, ... over the task's life), which the speaker's
    /// [`ToSession::Table`] answers with.
    Established(Negotiated, u64),
    /// Left Established (or never got there): every route learnt from the
    /// peer is gone. The reason, for the log.
    Down(String),
    /// Routes the peer advertised or withdrew.
    Learned(Vpnv4Update),
    /// An UPDATE RFC 7606 handled without a reset (treat-as-withdraw or
    /// attribute discard), for the log and the counters.
    Malformed(String),
    /// A NOTIFICATION we sent or received: (sent, code, subcode).
    Notification(bool, u8, u8),
    /// The state machine moved to this state (for `show`).
    State(State),
    /// The peer asked for our routes again (ROUTE-REFRESH, RFC 2918):
    /// the speaker answers with [`ToSession::Refresh`].
    RouteRefresh,
    /// A connection from the peer's address refused by GTSM (RFC 5082):
    /// its SYN arrived with this TTL, below the least allowed (0: the
    /// socket options could not be set).
    TtlRefused(u8),
    /// Peer oscillation damping, for `show`: the session waits this long
    /// in Idle after `failures` failures in a row (sent when it goes Idle,
    /// and when the count is cleared).
    Damping { idle_hold: Duration, failures: u32 },
}

struct Conn {
    wr: OwnedWriteHalf,
    frames: mpsc::Receiver<io::Result<Vec<u8>>>,
}

/// Messages read and not yet handled, per session (at most 1 MiB of
/// 4 KiB UPDATEs): while the session is busy, the reader stops reading,
/// and TCP's window makes a fast peer wait instead of our memory grow.
const FRAME_QUEUE: usize = 256;

/// Reads whole messages (header checked for length) until the
/// connection ends.
async fn read_frames(mut rd: OwnedReadHalf, tx: mpsc::Sender<io::Result<Vec<u8>>>) {
    loop {
        let mut m = vec![0u8; 19];
        if let Err(e) = rd.read_exact(&mut m).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        let len = usize::from(u16::from_be_bytes([m[16], m[17]]));
        if !(19..=MAX_MESSAGE).contains(&len) {
            // Handed over as is: the session answers with a header error.
            let _ = tx.send(Ok(m)).await;
            return;
        }
        m.resize(len, 0);
        if let Err(e) = rd.read_exact(&mut m[19..]).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        if tx.send(Ok(m)).await.is_err() {
            return;
        }
    }
}

fn attach(s: TcpStream) -> Conn {
    let _ = s.set_nodelay(true);
    let (rd, wr) = s.into_split();
    let (tx, frames) = mpsc::channel(FRAME_QUEUE);
    tokio::spawn(read_frames(rd, tx));
    Conn { wr, frames }
}

/// The connections a passive neighbour's listener accepted from its
/// address; `Err`: the listener could not be bound.
pub type Inbound = Result<Option<mpsc::Receiver<TcpStream>>, String>;

/// Connections accepted and not yet taken, per passive neighbour: a
/// peer that connects faster than its session takes them is refused.
const INBOUND_QUEUE: usize = 4;

/// Binds one listener per local address and port that passive
/// neighbours among `cfgs` listen on, however many share it (each
/// neighbour binding its own, only the first of several on port 179
/// came up), and returns each neighbour's share, by position in `cfgs`
/// (`Ok(None)` for active ones). An accepted connection goes to the
/// neighbour whose address it comes from; one from any other address is
/// closed at once. Runs in a tokio runtime's context, whose tasks accept.
pub fn listen(cfgs: &[PeerConfig]) -> Vec<Inbound> {
    let mut out: Vec<Inbound> = cfgs.iter().map(|_| Ok(None)).collect();
    let mut by_addr: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    for (i, c) in cfgs.iter().enumerate() {
        if let Some(a) = c.listen {
            by_addr.entry(a).or_default().push(i);
        }
    }
    for (addr, members) in by_addr {
        let bound = std::net::TcpListener::bind(addr)
            .and_then(|l| {
                secure_listener(&l, members.iter().map(|&i| &cfgs[i]))?;
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            })
            .map_err(|e| format!("listening on {addr}: {e}"));
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                for i in members {
                    out[i] = Err(e.clone());
                }
                continue;
            }
        };
        let mut peers: HashMap<IpAddr, mpsc::Sender<TcpStream>> = HashMap::new();
        for i in members {
            let ip = cfgs[i].peer.ip();
            if peers.contains_key(&ip) {
                out[i] = Err(format!(
                    "listening on {addr}: another neighbour with address {ip} listens there"
                ));
                continue;
            }
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            peers.insert(ip, tx);
            out[i] = Ok(Some(rx));
        }
        tokio::spawn(accept(listener, peers));
    }
    out
}

/// A shared listener's transport security, for the neighbours `members`
/// it serves: each one's TCP-MD5 key for its address (the kernel then
/// answers only SYNs from it signed with that key, and the accepted
/// connection keeps the key); if any uses GTSM, SYN-ACKs sent with TTL
/// 255 and every SYN kept, so that the session can check the TTL its
/// peer's SYN came with ([`gtsm_check`]). IP_MINTTL on the listener
/// would have the kernel drop low SYNs itself, but one value serves
/// every neighbour on the port, with GTSM or without, and the drops
/// would be counted only netns-wide (`TcpExtTCPMinTTLDrop`), not per
/// neighbour.
fn secure_listener<'a>(
    l: &std::net::TcpListener,
    members: impl Iterator<Item = &'a PeerConfig>,
) -> io::Result<()> {
    let mut gtsm = false;
    for c in members {
        if let Some(p) = &c.md5_password {
            sock::tcp_md5sig(l.as_fd(), c.peer.ip(), p.0.as_bytes())?;
        }
        gtsm |= c.ttl_security.is_some();
    }
    if gtsm {
        sock::ip_ttl(l.as_fd(), GTSM_TTL)?;
        sock::tcp_save_syn(l.as_fd())?;
    }
    Ok(())
}

/// GTSM on a connection a shared listener accepted for a neighbour with
/// `min_ttl`: `Err(ttl)` if its SYN came with a lower TTL (the peer is
/// further away than allowed, or spoofing it); otherwise the socket
/// sends with TTL 255 and the kernel drops whatever arrives below
/// `min_ttl` from now on (RFC 5082 section 3). Without a saved SYN (SYN
/// cookies) the kernel's check of every later segment still holds.
fn gtsm_check(stream: &TcpStream, min_ttl: u8) -> Result<(), u8> {
    if let Ok(Some(ttl)) = sock::saved_syn_ttl(stream.as_fd()) {
        if ttl < min_ttl {
            return Err(ttl);
        }
    }
    if sock::ip_minttl(stream.as_fd(), min_ttl).is_err()
        || sock::ip_ttl(stream.as_fd(), GTSM_TTL).is_err()
    {
        return Err(0);
    }
    Ok(())
}

/// Connects to the neighbour with its TCP-MD5 key and GTSM set before
/// the SYN leaves (so the SYN is signed and sent with TTL 255, and a
/// SYN-ACK with a low TTL is dropped by the kernel).
async fn connect(cfg: &PeerConfig) -> io::Result<TcpStream> {
    let s = match cfg.peer {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(p) = &cfg.md5_password {
        sock::tcp_md5sig(s.as_fd(), cfg.peer.ip(), p.0.as_bytes())?;
    }
    if let Some(min) = cfg.min_ttl() {
        sock::ip_ttl(s.as_fd(), GTSM_TTL)?;
        sock::ip_minttl(s.as_fd(), min)?;
    }
    s.connect(cfg.peer).await
}

/// Hands each connection `listener` accepts to the neighbour it comes
/// from; closes the others (and those of a neighbour whose queue is full
/// or whose session has ended). Ends, closing the listener, once every
/// neighbour's session has.
async fn accept(listener: TcpListener, peers: HashMap<IpAddr, mpsc::Sender<TcpStream>>) {
    let all_ended = async {
        for tx in peers.values() {
            tx.closed().await;
        }
    };
    tokio::pin!(all_ended);
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((stream, from)) => {
                    if let Some(tx) = peers.get(&from.ip()) {
                        let _ = tx.try_send(stream);
                    }
                }
                // Out of descriptors, say: accepting resumes after a
                // pause rather than spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = &mut all_ended => return,
        }
    }
}

/// Runs one neighbour until [`ToSession::Stop`] or the owner goes away;
/// a passive one listens on a listener of its own ([`listen`] shares one
/// among neighbours).
pub async fn run(
    cfg: PeerConfig,
    cmds: UnboundedReceiver<ToSession>,
    out: UnboundedSender<FromSession>,
) {
    let inbound = listen(std::slice::from_ref(&cfg)).pop().unwrap_or(Ok(None));
    run_with(cfg, cmds, out, inbound).await
}

/// Runs one neighbour, passive ones on the connections `inbound` brings.
pub async fn run_with(
    cfg: PeerConfig,
    mut cmds: UnboundedReceiver<ToSession>,
    out: UnboundedSender<FromSession>,
    inbound: Inbound,
) {
    let mut fsm = Fsm::new(cfg.listen.is_some());
    fsm.damping = cfg.damping;
    let mut s = Session {
        fsm,
        expect: Expect {
            local_id: cfg.router_id,
            local_hold_time: cfg.hold_time,
            remote_asn: cfg.remote_asn,
            local_asn: cfg.local_asn,
        },
        cfg,
        out,
        conn: None,
        timers: [None; 4],
        gate: Gate::default(),
        send_stalled: false,
        down_reason: None,
    };
    let mut inbound = match inbound {
        Ok(i) => i,
        Err(e) => {
            let _ = s.out.send(FromSession::Down(e));
            return;
        }
    };
    let mut restart_at = Some(Instant::now());
    // Ceased without a restart timer: no automatic restart.
    let mut held = false;
    let mut connecting: Option<tokio::task::JoinHandle<io::Result<TcpStream>>> = None;
    loop {
        let timer = s.next_timer();
        tokio::select! {
            _ = sleep_until(restart_at), if restart_at.is_some() => {
                restart_at = None;
                let ev = s.fsm.start_event();
                s.handle(ev, &mut connecting).await;
            }
            _ = sleep_until(timer.map(|t| t.1)), if timer.is_some() => {
                let (which, _) = timer.expect("guarded");
                s.timers[which as usize] = None;
                let ev = match which {
                    Timer::ConnectRetry => Event::ConnectRetryTimerExpires,
                    Timer::Hold => Event::HoldTimerExpires,
                    Timer::Keepalive => Event::KeepaliveTimerExpires,
                    Timer::Stable => Event::StableTimerExpires,
                };
                let failures = s.fsm.connect_retry_counter;
                s.handle(ev, &mut connecting).await;
                if failures != 0 && s.fsm.connect_retry_counter == 0 {
                    s.report_damping();
                }
            }
            r = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                match r {
                    Ok(Ok(stream)) if s.fsm.state == State::Connect || s.fsm.state == State::Active => {
                        s.conn = Some(attach(stream));
                        s.handle(Event::TcpCrAcked, &mut connecting).await;
                    }
                    Ok(Ok(_)) => {}
                    _ => s.handle(Event::TcpConnectionFails, &mut connecting).await,
                }
            }
            a = async { inbound.as_mut().expect("guarded").recv().await }, if inbound.is_some() => {
                match a {
                    // From the peer's address (the listener sorted them).
                    // GTSM first, in any state, so that every refusal
                    // is counted.
                    Some(stream) => match s.cfg.min_ttl().map(|m| gtsm_check(&stream, m)) {
                        Some(Err(ttl)) => {
                            let _ = s.out.send(FromSession::TtlRefused(ttl));
                        }
                        _ if matches!(s.fsm.state, State::Active | State::Connect) => {
                            s.conn = Some(attach(stream));
                            s.handle(Event::TcpConnectionConfirmed, &mut connecting).await;
                        }
                        _ => {}
                    },
                    None => inbound = None,
                }
            }
            f = async { s.conn.as_mut().expect("guarded").frames.recv().await }, if s.conn.is_some() => {
                match f {
                    Some(Ok(m)) => s.message(&m, &mut connecting).await,
                    _ => s.handle(Event::TcpConnectionFails, &mut connecting).await,
                }
            }
            c = cmds.recv() => {
                match c {
                    Some(ToSession::Advertise(routes, path)) => s.advertise(routes, path).await,
                    Some(ToSession::Withdraw(routes)) => s.withdraw(routes).await,
                    Some(ToSession::Table(n, table)) => s.table(n, table, false).await,
                    Some(ToSession::Refresh(n, table)) => s.table(n, table, true).await,
                    Some(ToSession::AskRefresh) => s.ask_refresh().await,
                    Some(ToSession::Cease { subcode, data, why, restart }) => {
                        if s.fsm.state != State::Idle {
                            s.down_reason = Some(why);
                            s.handle(Event::AutomaticStop(Notify { code: 6, subcode, data }), &mut connecting).await;
                            s.down_reason = None;
                        }
                        restart_at = restart.and_then(|d| Instant::now().checked_add(d));
                        held = restart_at.is_none();
                    }
                    Some(ToSession::Stop) | None => {
                        s.handle(Event::ManualStop, &mut connecting).await;
                        return;
                    }
                }
            }
        }
        if s.send_stalled {
            s.down_reason = Some(format!(
                "what we sent did not leave for {} s: the peer stopped reading (send hold timer, RFC 9687)",
                s.send_hold().as_secs()
            ));
            s.handle(Event::SendHoldTimerExpires, &mut connecting).await;
            s.conn = None;
            s.send_stalled = false;
            s.down_reason = None;
        }
        if s.fsm.state == State::Idle && restart_at.is_none() && !held {
            restart_at = Some(Instant::now() + s.fsm.restart_after());
            s.report_damping();
        }
    }
}

/// Whether ROUTE-REFRESH message `m` (header included) asks for the one
/// address family this speaker advertises, VPNv4 (AFI 1, SAFI 128), as a
/// plain request (subtype 0: the Beginning and End of RIB-Refresh
/// markers of RFC 7313 belong to a capability we do not advertise). A
/// request for any other family is ignored (RFC 2918 section 4), and so
/// is one too short to name one.
fn refresh_asks_for_vpnv4(m: &[u8]) -> bool {
    matches!(m.get(19..23), Some([0, 1, 0, 128]))
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Session {
    cfg: PeerConfig,
    fsm: Fsm,
    expect: Expect,
    out: UnboundedSender<FromSession>,
    conn: Option<Conn>,
    timers: [Option<Instant>; 4],
    gate: Gate,
    /// A write did not finish within the send hold time.
    send_stalled: bool,
    /// Why the session leaves Established, when it is not the usual.
    down_reason: Option<String>,
}

/// Which of the owner's routes a session sends on (see the module
/// documentation): per establishment, its table once, then changes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gate {
    /// How many times the session reached Established.
    establishment: u64,
    /// This establishment's table is sent: changes go out from now on.
    table_sent: bool,
}

impl Gate {
    /// The session reached Established: the establishment's number.
    pub(crate) fn up(&mut self) -> u64 {
        self.establishment += 1;
        self.table_sent = false;
        self.establishment
    }

    /// Whether a table for establishment `n` is sent (`refresh`: a table
    /// again, after the first), the session being `established` or not.
    pub(crate) fn table(&mut self, established: bool, n: u64, refresh: bool) -> bool {
        if !established || n != self.establishment || self.table_sent != refresh {
            return false;
        }
        self.table_sent = true;
        true
    }

    /// Whether a change (advertisement, withdrawal) is sent.
    pub(crate) fn change(&self, established: bool) -> bool {
        established && self.table_sent
    }
}

impl Session {
    fn report_damping(&self) {
        let _ = self.out.send(FromSession::Damping {
            idle_hold: self.fsm.restart_after(),
            failures: self.fsm.connect_retry_counter,
        });
    }

    fn next_timer(&self) -> Option<(Timer, Instant)> {
        [
            Timer::ConnectRetry,
            Timer::Hold,
            Timer::Keepalive,
            Timer::Stable,
        ]
        .into_iter()
        .filter_map(|t| self.timers[t as usize].map(|at| (t, at)))
        .min_by_key(|(_, at)| *at)
    }

    /// Sends `bytes`, waiting at most the send hold time for them to
    /// leave (RFC 9687): a peer that stops reading would otherwise freeze
    /// the session, its routes in place, with nothing timing out (our hold
    /// timer runs on what the peer sends, and its keepalives may still
    /// come). Once that time has passed nothing more is written; the loop
    /// then takes the session down ([`Event::SendHoldTimerExpires`]).
    async fn send(&mut self, bytes: &[u8]) {
        if self.send_stalled {
            return;
        }
        let limit = self.send_hold();
        if let Some(c) = self.conn.as_mut() {
            // A failed write shows up as the reader's end.
            if tokio::time::timeout(limit, c.wr.write_all(bytes))
                .await
                .is_err()
            {
                self.send_stalled = true;
            }
        }
    }

    /// ROUTE-REFRESH for VPNv4 (RFC 2918 section 3), if the peer can take
    /// it.
    async fn ask_refresh(&mut self) {
        let able = self.fsm.negotiated.is_some_and(|n| n.route_refresh);
        if self.fsm.state == State::Established && able {
            let mut m = vec![0xff; 16];
            m.extend_from_slice(&23u16.to_be_bytes());
            m.extend_from_slice(&[5, 0, 1, 0, 128]);
            self.send(&m).await;
        }
    }

    fn send_hold(&self) -> Duration {
        self.cfg.send_hold.unwrap_or_else(|| {
            let hold = self.fsm.negotiated.map_or(0, |n| n.hold_time);
            (Duration::from_secs(u64::from(hold)) * 2).max(SEND_HOLD_MIN)
        })
    }

    /// Feeds an event to the FSM and carries out its actions.
    async fn handle(
        &mut self,
        ev: Event,
        connecting: &mut Option<tokio::task::JoinHandle<io::Result<TcpStream>>>,
    ) {
        let before = self.fsm.state;
        self.act(ev, connecting).await;
        if self.fsm.state != before {
            let _ = self.out.send(FromSession::State(self.fsm.state));
        }
    }

    /// The actions of one event.
    async fn act(
        &mut self,
        ev: Event,
        connecting: &mut Option<tokio::task::JoinHandle<io::Result<TcpStream>>>,
    ) {
        for a in self.fsm.event(ev) {
            match a {
                Action::OpenTcp => {
                    let cfg = self.cfg.clone();
                    *connecting = Some(tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(5), connect(&cfg)).await {
                            Ok(r) => r,
                            Err(_) => Err(io::ErrorKind::TimedOut.into()),
                        }
                    }));
                }
                Action::Listen => {}
                Action::Drop => {
                    if let Some(c) = connecting.take() {
                        c.abort();
                    }
                    if let Some(mut c) = self.conn.take() {
                        let _ = c.wr.shutdown().await;
                    }
                }
                Action::SendOpen => {
                    let m = encode(&open(
                        self.cfg.local_asn,
                        self.cfg.hold_time,
                        self.cfg.router_id,
                    ));
                    self.send(&m).await;
                }
                Action::SendKeepalive => self.send(&encode(&BgpMessage::KeepAlive)).await,
                // Not after a write stalled: it would not leave either.
                Action::SendNotification(n) if !self.send_stalled => {
                    let _ = self
                        .out
                        .send(FromSession::Notification(true, n.code, n.subcode));
                    self.send(&notification(n.code, n.subcode, &n.data)).await;
                }
                Action::SendNotification(_) => {}
                Action::Start(t, d) => self.timers[t as usize] = Some(Instant::now() + d),
                Action::Stop(t) => self.timers[t as usize] = None,
                Action::Up => {
                    // The speaker answers with the table, End-of-RIB after it.
                    let k = self.gate.up();
                    if let Some(n) = self.fsm.negotiated {
                        let _ = self.out.send(FromSession::Established(n, k));
                    }
                }
                Action::Down => {
                    let why = self
                        .down_reason
                        .take()
                        .unwrap_or_else(|| "session left Established".into());
                    let _ = self.out.send(FromSession::Down(why));
                }
            }
        }
    }

    async fn message(
        &mut self,
        m: &[u8],
        connecting: &mut Option<tokio::task::JoinHandle<io::Result<TcpStream>>>,
    ) {
        let len = u16::from_be_bytes([m[16], m[17]]);
        let header_err = |subcode: u8, data: Vec<u8>| {
            Event::BgpHeaderErr(Notify {
                code: 1,
                subcode,
                data,
            })
        };
        let ev = if m[..16] != [0xff; 16] {
            header_err(1, vec![])
        } else if !(19..=MAX_MESSAGE as u16).contains(&len) {
            header_err(2, len.to_be_bytes().to_vec())
        } else {
            match m[18] {
                // Unsupported Version Number; the data is the largest we
                // support.
                1 if m.get(19) != Some(&4) => Event::BgpOpenMsgErr(Notify {
                    code: 2,
                    subcode: 1,
                    data: vec![0, 4],
                }),
                1 => match decode(m, true) {
                    Ok(BgpMessage::Open(o)) => match check_open(&o, &self.expect) {
                        Ok(n) => Event::BgpOpen(n),
                        Err(n) => Event::BgpOpenMsgErr(n),
                    },
                    _ => Event::BgpOpenMsgErr(Notify {
                        code: 2,
                        subcode: 0,
                        data: vec![],
                    }),
                },
                2 if self.fsm.state == State::Established => {
                    let asn4 = self.fsm.negotiated.is_some_and(|n| n.asn4);
                    self.update(m, asn4)
                }
                2 => Event::UpdateMsg,
                3 => {
                    let (code, sub) = (m.get(19).copied(), m.get(20).copied());
                    let _ = self.out.send(FromSession::Notification(
                        false,
                        code.unwrap_or(0),
                        sub.unwrap_or(0),
                    ));
                    if code == Some(2) && sub == Some(1) {
                        Event::NotifMsgVerErr
                    } else {
                        Event::NotifMsg
                    }
                }
                4 => Event::KeepAliveMsg,
                5 => {
                    // Route refresh (RFC 2918): the speaker sends
                    // everything again, if it asks for what we advertise.
                    if refresh_asks_for_vpnv4(m) {
                        let _ = self.out.send(FromSession::RouteRefresh);
                    }
                    return;
                }
                t => header_err(3, vec![t]),
            }
        };
        self.handle(ev, connecting).await;
    }

    /// An UPDATE in Established: RFC 7606 first, then the routes. Each
    /// UPDATE RFC 7606 acts on is reported once, as one
    /// [`FromSession::Malformed`] naming the attribute and the action.
    fn update(&mut self, m: &[u8], asn4: bool) -> Event {
        let learnt = |bytes: &[u8]| match decode(bytes, asn4) {
            Ok(BgpMessage::Update(u)) => Ok(vpnv4_of(&u)),
            Ok(_) => Err("not an UPDATE".to_string()),
            Err(e) => Err(e),
        };
        let ebgp = self.cfg.local_asn != self.cfg.remote_asn;
        let (update, mut withdraw, mut note) = match check_update(m, asn4, ebgp) {
            // `transitive` is for re-advertisement, which VPN routes
            // learnt here do not get yet.
            Verdict::Fine { update, .. } => (update, false, None),
            Verdict::Discard { update, why, .. } => {
                (update, false, Some(format!("{why}: attribute discard")))
            }
            Verdict::TreatAsWithdraw { update, why } => {
                (update, true, Some(format!("{why}: treat-as-withdraw")))
            }
            Verdict::Reset {
                code,
                subcode,
                data,
                why,
            } => {
                let _ = self.out.send(FromSession::Malformed(format!(
                    "{why}: session reset (NOTIFICATION {code}/{subcode})"
                )));
                return Event::UpdateMsgErr(Notify {
                    code,
                    subcode,
                    data,
                });
            }
        };
        let got = learnt(&update).or_else(|e| {
            // check_update passed what the decoder refuses: a gap in its
            // checks. The routes can still be found, so RFC 7606's
            // treat-as-withdraw rather than a reset.
            let v = learnt(&withdrawal_of(&update)).map_err(|_| e.clone())?;
            withdraw = true;
            note = Some(format!("the decoder refused it ({e}): treat-as-withdraw"));
            Ok::<_, String>(v)
        });
        match got {
            Ok(v) => {
                if let Some(n) = note {
                    let _ = self.out.send(FromSession::Malformed(n));
                }
                let v = if withdraw {
                    Vpnv4Update {
                        withdrawn: v.reach.into_iter().chain(v.withdrawn).collect(),
                        ..Default::default()
                    }
                } else {
                    v
                };
                let _ = self.out.send(FromSession::Learned(v));
                Event::UpdateMsg
            }
            Err(e) => {
                let _ = self.out.send(FromSession::Malformed(format!(
                    "the decoder refused it ({e}): session reset (NOTIFICATION 3/1)"
                )));
                Event::UpdateMsgErr(Notify {
                    code: 3,
                    subcode: 1,
                    data: vec![],
                })
            }
        }
    }

    /// The speaker's whole Adj-RIB-Out for establishment `n`, routes
    /// grouped by path into full UPDATEs: the first time, then
    /// End-of-RIB; on `refresh`, again, once the first is sent.
    async fn table(&mut self, n: u64, table: Table, refresh: bool) {
        let established = self.fsm.state == State::Established;
        if !self.gate.table(established, n, refresh) {
            return;
        }
        let asn4 = self.fsm.negotiated.is_some_and(|n| n.asn4);
        for (p, rs) in &table {
            for m in vpnv4_reach(rs, p, asn4) {
                self.send(&encode(&m)).await;
            }
        }
        if !refresh {
            self.send(&encode(&vpnv4_end_of_rib())).await;
        }
    }

    async fn advertise(&mut self, routes: Vec<VpnRoute>, path: VpnPath) {
        if self.gate.change(self.fsm.state == State::Established) {
            let asn4 = self.fsm.negotiated.is_some_and(|n| n.asn4);
            for m in vpnv4_reach(&routes, &path, asn4) {
                self.send(&encode(&m)).await;
            }
        }
    }

    async fn withdraw(&mut self, routes: Vec<VpnRoute>) {
        if self.gate.change(self.fsm.state == State::Established) && !routes.is_empty() {
            for m in vpnv4_unreach(&routes) {
                self.send(&encode(&m)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    /// Our side of a loopback peering on `port`: passive (listening, id
    /// 192.0.2.2) or active (connecting, id 192.0.2.1).
    fn config(
        port: u16,
        passive: bool,
        local_asn: u32,
        remote_asn: u32,
        hold_time: u16,
    ) -> PeerConfig {
        let lo = Ipv4Addr::LOCALHOST;
        PeerConfig {
            peer: SocketAddr::from((lo, if passive { 0 } else { port })),
            listen: passive.then_some(SocketAddr::from((lo, port))),
            local_asn,
            router_id: Ipv4Addr::new(192, 0, 2, if passive { 2 } else { 1 }),
            remote_asn,
            hold_time,
            send_hold: None,
            md5_password: None,
            ttl_security: None,
            damping: Damping::DEFAULT,
        }
    }

    /// `n` /32s from 10.0.0.0 in RD 65001:1, label 2001.
    fn host_routes(n: u32) -> Vec<VpnRoute> {
        let rd: crate::vpn::VpnId = "65001:1".parse().unwrap();
        (0..n)
            .map(|i| VpnRoute {
                rd,
                prefix: Ipv4Addr::from(0x0a00_0000 + i),
                len: 32,
                label: 2001,
            })
            .collect()
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn next(
        rx: &mut UnboundedReceiver<FromSession>,
        what: &str,
        want: impl Fn(&FromSession) -> bool,
    ) -> FromSession {
        let deadline = Duration::from_secs(20);
        tokio::time::timeout(deadline, async {
            loop {
                let m = rx.recv().await.expect("session alive");
                if want(&m) {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {deadline:?}"))
    }

    /// A peer that keeps sending keepalives but stops reading: once a
    /// message has not left for the send hold time (RFC 9687), the
    /// session goes down, saying why, instead of hanging in a write with
    /// its routes in place.
    #[tokio::test]
    async fn a_peer_that_stops_reading_is_taken_down_by_the_send_hold_timer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut ours = config(port, false, 65001, 65000, 30);
        ours.send_hold = Some(Duration::from_secs(1));
        let (to_s, cmds) = unbounded_channel();
        let (out, mut from_s) = unbounded_channel();
        tokio::spawn(run(ours, cmds, out));

        // The peer: reads our OPEN, sends its own and a KEEPALIVE, then
        // only ever sends KEEPALIVEs.
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 19];
        peer.read_exact(&mut head).await.unwrap();
        let mut rest = vec![0u8; usize::from(u16::from_be_bytes([head[16], head[17]])) - 19];
        peer.read_exact(&mut rest).await.unwrap();
        assert_eq!(head[18], 1, "our OPEN");
        peer.write_all(&encode(&open(65000, 30, Ipv4Addr::new(192, 0, 2, 2))))
            .await
            .unwrap();
        let keepalive = encode(&BgpMessage::KeepAlive);
        peer.write_all(&keepalive).await.unwrap();
        let (_peer_rd, mut peer_wr) = peer.into_split();
        tokio::spawn(async move {
            while peer_wr.write_all(&keepalive).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let FromSession::Established(_, k) = next(&mut from_s, "Established", |m| {
            matches!(m, FromSession::Established(..))
        })
        .await
        else {
            unreachable!()
        };
        // More than the sockets' buffers hold (about 6.4 MB of UPDATEs).
        let routes = host_routes(400_000);
        let path = VpnPath {
            next_hop: Ipv4Addr::new(192, 0, 2, 1),
            route_targets: vec!["65001:2".parse().unwrap()],
            local_pref: None,
            med: None,
            as_path: vec![],
            reflection: None,
        };
        to_s.send(ToSession::Table(k, vec![(path, routes)]))
            .unwrap();
        let FromSession::Down(why) =
            next(&mut from_s, "down", |m| matches!(m, FromSession::Down(_))).await
        else {
            unreachable!()
        };
        assert!(why.contains("send hold"), "{why}");
        next(&mut from_s, "Idle", |m| {
            matches!(m, FromSession::State(State::Idle))
        })
        .await;
    }

    /// A peer that sends faster than the session handles what it sends
    /// waits on TCP: at most `FRAME_QUEUE` messages are held, and the
    /// rest stay in the sockets, instead of all of it in our memory.
    #[tokio::test]
    async fn a_fast_peer_waits_on_tcp_instead_of_filling_memory() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let conn = attach(ours.unwrap());
        let (mut peer, _) = accepted.unwrap();
        // 64 MiB of 4 KiB messages (type UPDATE; only the header is read).
        let mut frame = vec![0xffu8; 16];
        frame.extend_from_slice(&4096u16.to_be_bytes());
        frame.push(2);
        frame.resize(4096, 0);
        let all: Vec<u8> = frame.repeat(16 * 1024);
        let sent = tokio::time::timeout(Duration::from_secs(3), peer.write_all(&all)).await;
        assert!(
            sent.is_err(),
            "64 MiB left the peer with nobody handling them"
        );
        assert_eq!(
            conn.frames.len(),
            FRAME_QUEUE,
            "the reader holds a full queue"
        );
    }

    /// ROUTE-REFRESH is answered for VPNv4 only, as a plain request.
    #[test]
    fn route_refresh_is_for_vpnv4_only() {
        let msg = |body: &[u8]| {
            let mut m = vec![0xff; 16];
            m.extend_from_slice(&(19 + body.len() as u16).to_be_bytes());
            m.push(5);
            m.extend_from_slice(body);
            m
        };
        assert!(refresh_asks_for_vpnv4(&msg(&[0, 1, 0, 128])));
        assert!(!refresh_asks_for_vpnv4(&msg(&[0, 1, 0, 1])), "IPv4 unicast");
        assert!(!refresh_asks_for_vpnv4(&msg(&[0, 2, 0, 128])), "VPNv6");
        assert!(!refresh_asks_for_vpnv4(&msg(&[0, 1, 1, 128])), "BoRR");
        assert!(!refresh_asks_for_vpnv4(&msg(&[0, 1])), "cut short");
    }

    /// Two passive neighbours on one port, as two peers on 179: one
    /// listener serves both, each gets the connections from its own
    /// address (one comes up with a real speaker, the other answers a
    /// bare connection from its address with its OPEN), and a connection
    /// from an address no neighbour has is closed at once.
    #[tokio::test]
    async fn passive_neighbours_share_one_listener() {
        let port = free_port();
        let a = config(port, true, 65000, 65001, 9);
        let mut b = config(port, true, 65000, 65002, 9);
        b.peer = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0));
        let mut inbound = listen(&[a.clone(), b.clone()]).into_iter();
        let (a_inbound, b_inbound) = (inbound.next().unwrap(), inbound.next().unwrap());
        assert!(matches!(
            (&a_inbound, &b_inbound),
            (Ok(Some(_)), Ok(Some(_)))
        ));
        let (_to_a, a_cmds) = unbounded_channel();
        let (a_out, mut from_a) = unbounded_channel();
        let (_to_b, b_cmds) = unbounded_channel();
        let (b_out, _from_b) = unbounded_channel();
        tokio::spawn(run_with(a, a_cmds, a_out, a_inbound));
        tokio::spawn(run_with(b, b_cmds, b_out, b_inbound));

        let (_to_peer, peer_cmds) = unbounded_channel();
        let (peer_out, _from_peer) = unbounded_channel();
        tokio::spawn(run(
            config(port, false, 65001, 65000, 30),
            peer_cmds,
            peer_out,
        ));
        next(&mut from_a, "Established", |m| {
            matches!(m, FromSession::Established(..))
        })
        .await;

        let connect_from = |last: u8| async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
                .unwrap();
            sock.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .await
                .unwrap()
        };
        let mut from_b_peer = connect_from(2).await;
        let mut head = [0u8; 19];
        tokio::time::timeout(Duration::from_secs(20), from_b_peer.read_exact(&mut head))
            .await
            .expect("an OPEN within 20 s")
            .unwrap();
        assert_eq!((&head[..16], head[18]), (&[0xff; 16][..], 1), "{head:?}");

        let mut stranger = connect_from(3).await;
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), stranger.read(&mut byte))
            .await
            .expect("closed within 20 s");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    /// Two speakers over loopback: one active (AS 65001), one passive
    /// (AS 65000, eBGP). An advertisement before the session is up is not
    /// sent (the table covers it); the table the owner sends for the
    /// establishment goes out when it comes up; later routes and
    /// withdrawals follow; a speaker that stops takes the other down, and
    /// it comes back.
    #[tokio::test]
    async fn two_speakers_exchange_vpnv4_routes() {
        let port = free_port();
        let passive = config(port, true, 65000, 65001, 9);
        let active = config(port, false, 65001, 65000, 30);
        let routes = host_routes(1000);
        let path = VpnPath {
            next_hop: Ipv4Addr::new(192, 0, 2, 1),
            route_targets: vec!["65000:1".parse().unwrap()],
            local_pref: None,
            med: None,
            as_path: vec![65001],
            reflection: None,
        };
        let (to_p, p_cmds) = unbounded_channel();
        let (p_out, mut from_p) = unbounded_channel();
        let (to_a, a_cmds) = unbounded_channel();
        let (a_out, mut from_a) = unbounded_channel();
        to_a.send(ToSession::Advertise(routes[..1].to_vec(), path.clone()))
            .unwrap();
        tokio::spawn(run(passive, p_cmds, p_out));
        let a_task = tokio::spawn(run(active, a_cmds, a_out));
        let FromSession::Established(n, _) = next(&mut from_p, "Established", |m| {
            matches!(m, FromSession::Established(..))
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!((n.hold_time, n.peer_asn, n.asn4), (9, 65001, true));
        let FromSession::Established(_, k) = next(&mut from_a, "Established", |m| {
            matches!(m, FromSession::Established(..))
        })
        .await
        else {
            unreachable!()
        };
        // What the speaker does: the table for this establishment (a
        // table for an earlier one is dropped), then changes.
        to_a.send(ToSession::Table(
            k - 1,
            vec![(path.clone(), routes.clone())],
        ))
        .unwrap();
        to_a.send(ToSession::Table(
            k,
            vec![(path.clone(), routes[..600].to_vec())],
        ))
        .unwrap();
        to_a.send(ToSession::Advertise(routes[600..].to_vec(), path.clone()))
            .unwrap();
        // Everything arrives, with its label, RD, targets and next hop.
        let mut learnt = std::collections::BTreeSet::new();
        let mut eor = false;
        let mut received = 0;
        while learnt.len() < 1000 || !eor {
            let FromSession::Learned(u) = next(&mut from_p, "routes", |m| {
                matches!(m, FromSession::Learned(_))
            })
            .await
            else {
                unreachable!()
            };
            eor |= u.end_of_rib;
            if let Some(p) = &u.path {
                assert_eq!(p, &path);
            }
            received += u.reach.len();
            learnt.extend(u.reach);
        }
        assert_eq!(learnt.into_iter().collect::<Vec<_>>(), routes);
        assert_eq!(
            received, 1000,
            "each once: not the advertisement before Established, nor the stale table"
        );
        // Withdrawals.
        to_a.send(ToSession::Withdraw(routes[..10].to_vec()))
            .unwrap();
        let FromSession::Learned(u) = next(
            &mut from_p,
            "withdrawals",
            |m| matches!(m, FromSession::Learned(v) if !v.withdrawn.is_empty()),
        )
        .await
        else {
            unreachable!()
        };
        let want: Vec<VpnRoute> = routes[..10]
            .iter()
            .map(|r| VpnRoute { label: 0, ..*r })
            .collect();
        assert_eq!(u.withdrawn, want);
        // The active side stops (Cease): the passive one goes down, and
        // keeps listening; a new active speaker brings it back up.
        to_a.send(ToSession::Stop).unwrap();
        a_task.await.unwrap();
        assert!(matches!(
            next(&mut from_p, "the Cease", |m| matches!(
                m,
                FromSession::Notification(false, ..)
            ))
            .await,
            FromSession::Notification(false, 6, 2)
        ));
        next(&mut from_p, "Down", |m| matches!(m, FromSession::Down(_))).await;
        let (_to_a2, a2_cmds) = unbounded_channel();
        let (a2_out, _from_a2) = unbounded_channel();
        let active2 = config(port, false, 65001, 65000, 30);
        tokio::spawn(run(active2, a2_cmds, a2_out));
        next(&mut from_p, "Established again", |m| {
            matches!(m, FromSession::Established(..))
        })
        .await;
        to_p.send(ToSession::Stop).unwrap();
    }

    /// TCP-MD5 (RFC 2385): speakers with the same key come up; one with
    /// another key never gets a connection (the kernel drops its SYNs,
    /// and its connects fail), so the passive side stays down.
    #[tokio::test]
    async fn md5_keys_must_match() {
        let key = |k: &str| Some(Password(k.into()));
        let port = free_port();
        let mut passive = config(port, true, 65000, 65001, 9);
        passive.md5_password = key("right");
        let mut wrong = config(port, false, 65001, 65000, 9);
        wrong.md5_password = key("wrong");
        let (_to_p, p_cmds) = unbounded_channel();
        let (p_out, mut from_p) = unbounded_channel();
        let (to_w, w_cmds) = unbounded_channel();
        let (w_out, mut from_w) = unbounded_channel();
        tokio::spawn(run(passive, p_cmds, p_out));
        let w = tokio::spawn(run(wrong, w_cmds, w_out));
        // The kernel refuses its SYNs (TcpExtTCPMD5Failure counts them):
        // the passive side never hears of it.
        let failures = md5_failures();
        let deadline = Instant::now() + Duration::from_secs(20);
        while md5_failures() < failures + 2 {
            assert!(Instant::now() < deadline, "no badly signed SYN refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        to_w.send(ToSession::Stop).unwrap();
        w.await.unwrap();
        while let Ok(m) = from_w.try_recv() {
            assert!(!matches!(m, FromSession::Established(..)), "{m:?}");
        }
        while let Ok(m) = from_p.try_recv() {
            assert!(
                !matches!(m, FromSession::State(State::OpenSent | State::Established)),
                "{m:?}"
            );
        }

        let mut right = config(port, false, 65001, 65000, 9);
        right.md5_password = key("right");
        let (_to_r, r_cmds) = unbounded_channel();
        let (r_out, _from_r) = unbounded_channel();
        tokio::spawn(run(right, r_cmds, r_out));
        next(&mut from_p, "Established with the right key", |m| {
            matches!(m, FromSession::Established(..))
        })
        .await;
    }

    /// The kernel's count of segments refused for a bad TCP-MD5
    /// signature (this network namespace's).
    fn md5_failures() -> u64 {
        let t = std::fs::read_to_string("/proc/net/netstat").unwrap();
        let rows: Vec<Vec<&str>> = t
            .lines()
            .filter(|l| l.starts_with("TcpExt:"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let i = rows[0].iter().position(|k| *k == "TCPMD5Failure").unwrap();
        rows[1][i].parse().unwrap()
    }

    /// GTSM (RFC 5082): a passive neighbour one hop away refuses a
    /// connection whose SYN came with TTL 64 (and says so), and comes up
    /// with a speaker sending with TTL 255.
    #[tokio::test]
    async fn gtsm_refuses_a_connection_from_too_far() {
        let port = free_port();
        let mut passive = config(port, true, 65000, 65001, 9);
        passive.ttl_security = Some(1);
        let (_to_p, p_cmds) = unbounded_channel();
        let (p_out, mut from_p) = unbounded_channel();
        tokio::spawn(run(passive, p_cmds, p_out));

        let far = async {
            loop {
                let s = TcpSocket::new_v4().unwrap();
                sock::ip_ttl(s.as_fd(), 64).unwrap();
                // Until the listener is bound.
                if let Ok(c) = s
                    .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                    .await
                {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let mut far = tokio::time::timeout(Duration::from_secs(20), far)
            .await
            .unwrap();
        assert_eq!(
            next(&mut from_p, "a refusal", |m| matches!(
                m,
                FromSession::TtlRefused(_)
            ))
            .await,
            FromSession::TtlRefused(64)
        );
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), far.read(&mut byte))
            .await
            .expect("closed within 20 s");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

        let mut near = config(port, false, 65001, 65000, 9);
        near.ttl_security = Some(1);
        let (_to_n, n_cmds) = unbounded_channel();
        let (n_out, _from_n) = unbounded_channel();
        tokio::spawn(run(near, n_cmds, n_out));
        next(&mut from_p, "Established with TTL 255", |m| {
            matches!(m, FromSession::Established(..))
        })
        .await;
    }

    /// A peer with the wrong AS gets OPEN Message Error, Bad Peer AS.
    #[tokio::test]
    async fn a_wrong_peer_as_is_refused() {
        let port = free_port();
        let passive = config(port, true, 65000, 65009, 90);
        let active = config(port, false, 65001, 65000, 90);
        let (_to_p, p_cmds) = unbounded_channel();
        let (p_out, mut from_p) = unbounded_channel();
        let (_to_a, a_cmds) = unbounded_channel();
        let (a_out, mut from_a) = unbounded_channel();
        tokio::spawn(run(passive, p_cmds, p_out));
        tokio::spawn(run(active, a_cmds, a_out));
        assert_eq!(
            next(&mut from_p, "a sent NOTIFICATION", |m| matches!(
                m,
                FromSession::Notification(true, ..)
            ))
            .await,
            FromSession::Notification(true, 2, 2)
        );
        assert_eq!(
            next(&mut from_a, "a received NOTIFICATION", |m| matches!(
                m,
                FromSession::Notification(false, ..)
            ))
            .await,
            FromSession::Notification(false, 2, 2)
        );
    }
}
