//! The BGP finite state machine of RFC 4271 section 8, with the RFC's
//! states and events (names as the RFC writes them, in Rust case; the
//! event numbers in the docs). Pure: an event in, the actions out, which
//! the session task carries out (TCP, messages, timers) and turns back
//! into events. Timer handling, the OPEN checks of section 6.2 and the
//! subcodes of RFC 6608 for unexpected messages are here; route processing
//! is the session's.
//!
//! Optional session attributes used: PassiveTcpEstablishment (per
//! neighbour) and DampPeerOscillations ([`Damping`]): after a failure the
//! session waits in Idle (the IdleHoldTimer, [`Fsm::restart_after`]) for
//! a time that doubles with each consecutive failure up to a cap, and the
//! count is cleared only once the session has stayed Established for a
//! while, not as soon as it comes up: a peer that comes up and then sends
//! what resets the session (an UPDATE we must refuse, say) every time
//! would otherwise bring it down about once a second for ever.
//! Not used: DelayOpen, collision detection (each peering is one
//! configured neighbour whose connection is either active or passive).

use std::net::Ipv4Addr;
use std::time::Duration;

use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::open::BgpOpenMessage;
use netgauze_iana::address_family::AddressType;

/// RFC 4271 section 8.2.2's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// An error NOTIFICATION: code, subcode, data (RFC 4271 section 4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notify {
    fn new(code: u8, subcode: u8) -> Notify {
        Notify {
            code,
            subcode,
            data: vec![],
        }
    }
}

/// What a valid OPEN settled (section 4.2, RFC 6793, RFC 4760).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The smaller of the two hold times; 0: no keepalives, no hold timer.
    pub hold_time: u16,
    pub peer_id: Ipv4Addr,
    pub peer_asn: u32,
    /// Both sides sent the 4-octet AS capability.
    pub asn4: bool,
    /// The peer sent the route refresh capability.
    pub route_refresh: bool,
}

impl Negotiated {
    /// A third of the hold time (section 10's suggestion).
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(u64::from(self.hold_time / 3))
    }
}

/// RFC 4271 section 8.1's events this FSM takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Event 1.
    ManualStart,
    /// Event 2.
    ManualStop,
    /// Event 3.
    AutomaticStart,
    /// Event 8: we stop the session ourselves, with this NOTIFICATION
    /// (a Cease: too many prefixes, a configuration change).
    AutomaticStop(Notify),
    /// Event 5.
    AutomaticStartWithPassiveTcpEstablishment,
    /// Event 9.
    ConnectRetryTimerExpires,
    /// Event 10.
    HoldTimerExpires,
    /// Event 11.
    KeepaliveTimerExpires,
    /// Event 16: our connection to the peer is up.
    TcpCrAcked,
    /// Event 17: the peer's connection to us is up.
    TcpConnectionConfirmed,
    /// Event 18.
    TcpConnectionFails,
    /// Event 19: an OPEN that passed [`check_open`].
    BgpOpen(Negotiated),
    /// Event 21: a message header that does not parse.
    BgpHeaderErr(Notify),
    /// Event 22: an OPEN that [`check_open`] refused.
    BgpOpenMsgErr(Notify),
    /// Event 24: a NOTIFICATION with a version error.
    NotifMsgVerErr,
    /// Event 25: any other NOTIFICATION.
    NotifMsg,
    /// Event 26.
    KeepAliveMsg,
    /// Event 27.
    UpdateMsg,
    /// Event 28: an UPDATE that RFC 7606 says resets the session.
    UpdateMsgErr(Notify),
    /// Event 29 (RFC 9687): what we had to send did not leave within the
    /// send hold time (the peer stopped reading).
    SendHoldTimerExpires,
    /// The session has been Established for [`Damping::stable`]: it is no
    /// longer oscillating (RFC 4271 section 8.1.1 leaves how damping
    /// ends to the implementation).
    StableTimerExpires,
}

/// The FSM's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    /// Runs while Established, for [`Damping::stable`].
    Stable,
}

/// What the session does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    OpenTcp,
    /// Wait for the peer's connection.
    Listen,
    /// Close the TCP connection.
    Drop,
    SendOpen,
    SendKeepalive,
    SendNotification(Notify),
    Start(Timer, Duration),
    Stop(Timer),
    /// Established: send our routes and End-of-RIB.
    Up,
    /// Leaving Established: every route learnt from the peer goes.
    Down,
}

/// Section 10's suggested ConnectRetryTime is 120 s; a first retry after
/// 5 s suits a PE whose peers are on the next link.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);
/// The hold timer while waiting for the peer's OPEN (section 8.2.2: "a
/// large value", suggested 4 minutes).
pub const OPEN_HOLD: Duration = Duration::from_secs(240);
/// Peer oscillation damping (RFC 4271 section 8.1.1,
/// DampPeerOscillations): the IdleHoldTime after the `n`th consecutive
/// failure is `start * 2^(n-1)`, at most `cap`; the count is cleared once
/// the session has stayed Established for `stable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damping {
    pub start: Duration,
    pub cap: Duration,
    pub stable: Duration,
}

impl Damping {
    /// 1 s after a first failure, so that a single reset (a peer's
    /// restart) costs next to nothing; doubling to 120 s, section 10's
    /// suggested ConnectRetryTime, so that a peer that resets the session
    /// whenever it comes up gets it about once every two minutes (seven
    /// resets in the first two minutes, then one per 120 s) instead of
    /// once a second; cleared after as long as the cap Established: a
    /// session that outlived the longest wait is not oscillating.
    pub const DEFAULT: Damping = Damping::new(Duration::from_secs(1), Duration::from_secs(120));

    /// `start` doubling up to `cap`, cleared after `cap` Established.
    pub const fn new(start: Duration, cap: Duration) -> Damping {
        Damping {
            start,
            cap,
            stable: cap,
        }
    }

    /// The IdleHoldTime after `failures` consecutive failures.
    pub fn idle_hold(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.start.saturating_mul(1 << exp).min(self.cap)
    }
}

/// Cease, Administrative Shutdown (RFC 4486).
const CEASE_SHUTDOWN: (u8, u8) = (6, 2);
/// Hold Timer Expired.
const HOLD_EXPIRED: (u8, u8) = (4, 0);
/// Send Hold Timer Expired (RFC 9687 section 5).
const SEND_HOLD_EXPIRED: (u8, u8) = (8, 0);

/// One neighbour's state machine.
#[derive(Clone, Debug)]
pub struct Fsm {
    pub state: State,
    pub passive: bool,
    /// Consecutive failures (the RFC's ConnectRetryCounter).
    pub connect_retry_counter: u32,
    pub negotiated: Option<Negotiated>,
    /// Established transitions so far, for `show`.
    pub established: u64,
    pub damping: Damping,
}

impl Fsm {
    pub fn new(passive: bool) -> Fsm {
        Fsm {
            state: State::Idle,
            passive,
            connect_retry_counter: 0,
            negotiated: None,
            established: 0,
            damping: Damping::DEFAULT,
        }
    }

    /// The start event this neighbour uses (events 3 and 5).
    pub fn start_event(&self) -> Event {
        if self.passive {
            Event::AutomaticStartWithPassiveTcpEstablishment
        } else {
            Event::AutomaticStart
        }
    }

    /// How long to wait in Idle before [`Fsm::start_event`] again (the
    /// IdleHoldTime, see [`Damping`]).
    pub fn restart_after(&self) -> Duration {
        self.damping.idle_hold(self.connect_retry_counter)
    }

    /// Takes one event; returns what to do.
    pub fn event(&mut self, ev: Event) -> Vec<Action> {
        use Action::*;
        use State::*;
        let to_idle = |fsm: &mut Fsm, mut acts: Vec<Action>, counted: bool| {
            if fsm.state == Established {
                acts.push(Down);
            }
            acts.extend([
                Stop(Timer::ConnectRetry),
                Stop(Timer::Hold),
                Stop(Timer::Keepalive),
                Stop(Timer::Stable),
            ]);
            acts.push(Drop);
            if counted {
                fsm.connect_retry_counter += 1;
            }
            fsm.negotiated = None;
            fsm.state = Idle;
            acts
        };
        let notify = |(code, subcode): (u8, u8)| SendNotification(Notify::new(code, subcode));
        // RFC 6608: Receive Unexpected Message in OpenSent (1), OpenConfirm
        // (2), Established (3).
        let fsm_error = |s: State| {
            let sub = match s {
                OpenSent => 1,
                OpenConfirm => 2,
                Established => 3,
                _ => 0,
            };
            SendNotification(Notify::new(5, sub))
        };
        match (self.state, ev) {
            (Established, Event::StableTimerExpires) => {
                self.connect_retry_counter = 0;
                vec![]
            }
            // Stopped on leaving Established; one already due is late.
            (_, Event::StableTimerExpires) => vec![],
            (Idle, Event::ManualStart | Event::AutomaticStart) => {
                self.state = Connect;
                vec![Start(Timer::ConnectRetry, CONNECT_RETRY), OpenTcp]
            }
            (Idle, Event::AutomaticStartWithPassiveTcpEstablishment) => {
                self.state = Active;
                vec![Start(Timer::ConnectRetry, CONNECT_RETRY), Listen]
            }
            (Idle, _) => vec![],
            (_, Event::ManualStop) => {
                let acts = match self.state {
                    OpenSent | OpenConfirm | Established => vec![notify(CEASE_SHUTDOWN)],
                    _ => vec![],
                };
                let acts = to_idle(self, acts, false);
                self.connect_retry_counter = 0;
                acts
            }
            (OpenSent | OpenConfirm | Established, Event::AutomaticStop(n)) => {
                to_idle(self, vec![SendNotification(n)], true)
            }
            (Connect | Active, Event::ConnectRetryTimerExpires) => {
                let was_passive = self.state == Active && self.passive;
                self.state = if was_passive { Active } else { Connect };
                vec![
                    Drop,
                    Start(Timer::ConnectRetry, CONNECT_RETRY),
                    if was_passive { Listen } else { OpenTcp },
                ]
            }
            (Connect | Active, Event::TcpCrAcked | Event::TcpConnectionConfirmed) => {
                self.state = OpenSent;
                vec![
                    Stop(Timer::ConnectRetry),
                    SendOpen,
                    Start(Timer::Hold, OPEN_HOLD),
                ]
            }
            (Connect, Event::TcpConnectionFails) => {
                self.state = Active;
                vec![Drop, Start(Timer::ConnectRetry, CONNECT_RETRY), Listen]
            }
            // Idle; the session restarts after Fsm::restart_after.
            (Active, Event::TcpConnectionFails) => to_idle(self, vec![], true),
            (Connect | Active, _) => to_idle(self, vec![], true),
            (OpenSent, Event::TcpConnectionFails) => {
                self.state = Active;
                vec![
                    Drop,
                    Stop(Timer::Hold),
                    Start(Timer::ConnectRetry, CONNECT_RETRY),
                    Listen,
                ]
            }
            (OpenSent, Event::BgpOpen(n)) => {
                self.negotiated = Some(n);
                self.state = OpenConfirm;
                let mut acts = vec![Stop(Timer::ConnectRetry), SendKeepalive];
                acts.extend(hold_timers(&n));
                acts
            }
            (OpenSent | OpenConfirm | Established, Event::HoldTimerExpires) => {
                to_idle(self, vec![notify(HOLD_EXPIRED)], true)
            }
            (OpenSent | OpenConfirm | Established, Event::SendHoldTimerExpires) => {
                to_idle(self, vec![notify(SEND_HOLD_EXPIRED)], true)
            }
            (
                OpenSent | OpenConfirm | Established,
                Event::BgpHeaderErr(n) | Event::BgpOpenMsgErr(n),
            ) => to_idle(self, vec![SendNotification(n)], true),
            (OpenSent | OpenConfirm | Established, Event::NotifMsgVerErr) => {
                to_idle(self, vec![], false)
            }
            (OpenConfirm | Established, Event::TcpConnectionFails | Event::NotifMsg) => {
                to_idle(self, vec![], true)
            }
            (OpenConfirm | Established, Event::KeepaliveTimerExpires) => {
                let ka = self.negotiated.map(|n| n.keepalive()).unwrap_or_default();
                vec![SendKeepalive, Start(Timer::Keepalive, ka)]
            }
            (OpenConfirm, Event::KeepAliveMsg) => {
                self.state = Established;
                self.established += 1;
                // The failure count stays until the session proves stable.
                let mut acts = restart_hold(self.negotiated);
                acts.push(Start(Timer::Stable, self.damping.stable));
                acts.push(Up);
                acts
            }
            (Established, Event::KeepAliveMsg | Event::UpdateMsg) => restart_hold(self.negotiated),
            (Established, Event::UpdateMsgErr(n)) => to_idle(self, vec![SendNotification(n)], true),
            (s @ (OpenSent | OpenConfirm | Established), _) => {
                to_idle(self, vec![fsm_error(s)], true)
            }
        }
    }
}

/// The keepalive and hold timers of a negotiated hold time (none for 0).
fn hold_timers(n: &Negotiated) -> Vec<Action> {
    if n.hold_time == 0 {
        return vec![Action::Stop(Timer::Hold), Action::Stop(Timer::Keepalive)];
    }
    vec![
        Action::Start(Timer::Keepalive, n.keepalive()),
        Action::Start(Timer::Hold, Duration::from_secs(u64::from(n.hold_time))),
    ]
}

fn restart_hold(n: Option<Negotiated>) -> Vec<Action> {
    match n {
        Some(n) if n.hold_time > 0 => vec![Action::Start(
            Timer::Hold,
            Duration::from_secs(u64::from(n.hold_time)),
        )],
        _ => vec![],
    }
}

/// What we expect of a neighbour's OPEN.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub local_id: Ipv4Addr,
    pub local_hold_time: u16,
    pub remote_asn: u32,
    pub local_asn: u32,
}

/// Section 6.2's checks of a received OPEN, RFC 6793's AS and RFC 5492's
/// capabilities: what was negotiated, or the NOTIFICATION to send. The
/// version is not among them: the codec decodes version 4 only, and the
/// session answers any other with 2/1 before decoding.
pub fn check_open(open: &BgpOpenMessage, e: &Expect) -> Result<Negotiated, Notify> {
    let caps: Vec<&BgpCapability> = open.capabilities();
    let asn4 = caps.iter().find_map(|c| match c {
        BgpCapability::FourOctetAs(a) => Some(a.asn4()),
        _ => None,
    });
    let peer_asn = asn4.unwrap_or(u32::from(open.my_as()));
    if peer_asn != e.remote_asn {
        return Err(Notify {
            code: 2,
            subcode: 2,
            data: open.my_as().to_be_bytes().to_vec(),
        });
    }
    let id = open.bgp_id();
    // RFC 6286: any non-zero id, but not ours within one AS.
    if id.is_unspecified() || (id == e.local_id && peer_asn == e.local_asn) {
        return Err(Notify::new(2, 3));
    }
    let hold = open.hold_time();
    if hold == 1 || hold == 2 {
        return Err(Notify::new(2, 6));
    }
    let vpnv4 = caps.iter().any(|c| {
        matches!(c, BgpCapability::MultiProtocolExtensions(m)
            if m.address_type() == AddressType::Ipv4MplsLabeledVpn)
    });
    if !vpnv4 {
        // Unsupported Capability (RFC 5492 section 3), with the one we
        // need: multiprotocol, length 4, AFI 1, SAFI 128.
        return Err(Notify {
            code: 2,
            subcode: 7,
            data: vec![1, 4, 0, 1, 0, 128],
        });
    }
    Ok(Negotiated {
        hold_time: hold.min(e.local_hold_time),
        peer_id: id,
        peer_asn,
        asn4: asn4.is_some(),
        route_refresh: caps
            .iter()
            .any(|c| matches!(c, BgpCapability::RouteRefresh)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::{decode, open as our_open, BgpMessage};
    use Action::*;

    fn n(hold: u16) -> Negotiated {
        Negotiated {
            hold_time: hold,
            peer_id: Ipv4Addr::new(192, 0, 2, 9),
            peer_asn: 65000,
            asn4: true,
            route_refresh: true,
        }
    }

    fn up(fsm: &mut Fsm, hold: u16) {
        fsm.event(fsm.start_event());
        fsm.event(Event::TcpCrAcked);
        fsm.event(Event::BgpOpen(n(hold)));
        fsm.event(Event::KeepAliveMsg);
        assert_eq!(fsm.state, State::Established);
    }

    #[test]
    fn active_session_comes_up_with_the_rfc_timers() {
        let mut f = Fsm::new(false);
        assert_eq!(
            f.event(Event::AutomaticStart),
            [Start(Timer::ConnectRetry, CONNECT_RETRY), OpenTcp]
        );
        assert_eq!(f.state, State::Connect);
        assert_eq!(
            f.event(Event::TcpCrAcked),
            [
                Stop(Timer::ConnectRetry),
                SendOpen,
                Start(Timer::Hold, OPEN_HOLD)
            ]
        );
        assert_eq!(f.state, State::OpenSent);
        assert_eq!(
            f.event(Event::BgpOpen(n(90))),
            [
                Stop(Timer::ConnectRetry),
                SendKeepalive,
                Start(Timer::Keepalive, Duration::from_secs(30)),
                Start(Timer::Hold, Duration::from_secs(90)),
            ]
        );
        assert_eq!(f.state, State::OpenConfirm);
        assert_eq!(
            f.event(Event::KeepAliveMsg),
            [
                Start(Timer::Hold, Duration::from_secs(90)),
                Start(Timer::Stable, Duration::from_secs(120)),
                Up
            ]
        );
        assert_eq!((f.state, f.established), (State::Established, 1));
        assert_eq!(
            f.event(Event::KeepaliveTimerExpires),
            [
                SendKeepalive,
                Start(Timer::Keepalive, Duration::from_secs(30))
            ]
        );
        assert_eq!(
            f.event(Event::UpdateMsg),
            [Start(Timer::Hold, Duration::from_secs(90))]
        );
    }

    #[test]
    fn passive_session_listens() {
        let mut f = Fsm::new(true);
        assert_eq!(
            f.event(f.start_event()),
            [Start(Timer::ConnectRetry, CONNECT_RETRY), Listen]
        );
        assert_eq!(f.state, State::Active);
        // The retry timer keeps a passive neighbour listening.
        assert_eq!(
            f.event(Event::ConnectRetryTimerExpires),
            [Drop, Start(Timer::ConnectRetry, CONNECT_RETRY), Listen]
        );
        f.event(Event::TcpConnectionConfirmed);
        assert_eq!(f.state, State::OpenSent);
    }

    #[test]
    fn errors_send_the_right_notification_and_go_idle() {
        let teardown = [
            Down,
            Stop(Timer::ConnectRetry),
            Stop(Timer::Hold),
            Stop(Timer::Keepalive),
            Stop(Timer::Stable),
            Drop,
        ];
        let mut f = Fsm::new(false);
        up(&mut f, 90);
        let acts = f.event(Event::HoldTimerExpires);
        assert_eq!(acts[0], SendNotification(Notify::new(4, 0)));
        assert_eq!(acts[1..], teardown);
        assert_eq!((f.state, f.connect_retry_counter), (State::Idle, 1));
        let mut f = Fsm::new(false);
        up(&mut f, 90);
        let acts = f.event(Event::SendHoldTimerExpires);
        assert_eq!(acts[0], SendNotification(Notify::new(8, 0)));
        assert_eq!(acts[1..], teardown);
        assert_eq!((f.state, f.connect_retry_counter), (State::Idle, 1));
        // An unexpected message in each state after OpenSent (RFC 6608).
        for (state, sub) in [
            (State::OpenSent, 1),
            (State::OpenConfirm, 2),
            (State::Established, 3),
        ] {
            let mut f = Fsm::new(false);
            f.event(Event::AutomaticStart);
            f.event(Event::TcpCrAcked);
            if state != State::OpenSent {
                f.event(Event::BgpOpen(n(90)));
            }
            if state == State::Established {
                f.event(Event::KeepAliveMsg);
            }
            assert_eq!(f.state, state);
            let unexpected = if state == State::OpenSent {
                Event::KeepAliveMsg
            } else {
                Event::BgpOpen(n(90))
            };
            let acts = f.event(unexpected);
            assert_eq!(acts[0], SendNotification(Notify::new(5, sub)), "{state:?}");
            assert_eq!(f.state, State::Idle);
        }
        // A reset verdict on an UPDATE.
        let mut f = Fsm::new(false);
        up(&mut f, 90);
        let bad = Notify {
            code: 3,
            subcode: 1,
            data: vec![],
        };
        let acts = f.event(Event::UpdateMsgErr(bad.clone()));
        assert_eq!(acts[0], SendNotification(bad));
        assert_eq!(acts[1..], teardown);
        // A manual stop sends Cease and clears the failure count.
        let mut f = Fsm::new(false);
        up(&mut f, 90);
        f.connect_retry_counter = 3;
        let acts = f.event(Event::ManualStop);
        assert_eq!(acts[0], SendNotification(Notify::new(6, 2)));
        assert_eq!((f.state, f.connect_retry_counter), (State::Idle, 0));
    }

    #[test]
    fn connection_failures_back_off() {
        let mut f = Fsm::new(false);
        f.event(Event::AutomaticStart);
        assert_eq!(
            f.event(Event::TcpConnectionFails),
            [Drop, Start(Timer::ConnectRetry, CONNECT_RETRY), Listen]
        );
        assert_eq!(f.state, State::Active);
        f.event(Event::TcpConnectionFails);
        assert_eq!((f.state, f.connect_retry_counter), (State::Idle, 1));
        let waits: Vec<u64> = (1..=9)
            .map(|c| {
                f.connect_retry_counter = c;
                f.restart_after().as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 120, 120]);
        // A session that comes up keeps the count (it may go down at
        // once); one that stays up for the stable time clears it.
        up(&mut f, 90);
        assert_eq!(f.connect_retry_counter, 9);
        assert_eq!(f.event(Event::StableTimerExpires), []);
        assert_eq!(f.connect_retry_counter, 0);
    }

    /// Peer oscillation damping (RFC 4271 section 8.1.1): a peer that
    /// resets the session each time it comes up (an UPDATE we must refuse)
    /// waits twice as long in Idle each time, up to the cap, and the count
    /// survives each establishment. Without it the session came back
    /// after 1 s every time (37 resets in 40 s).
    #[test]
    fn a_session_reset_whenever_it_comes_up_is_damped() {
        let mut f = Fsm::new(false);
        let bad = Notify::new(3, 9);
        let mut waits = Vec::new();
        for _ in 0..10 {
            up(&mut f, 90);
            let acts = f.event(Event::UpdateMsgErr(bad.clone()));
            assert!(acts.contains(&Stop(Timer::Stable)));
            waits.push(f.restart_after().as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
        // Resets the schedule allows in the first 10 minutes, whatever
        // the time to come up: the first, then one per wait elapsed.
        let mut elapsed = 0;
        let resets = 1 + waits
            .iter()
            .take_while(|w| {
                elapsed += **w;
                elapsed <= 600
            })
            .count();
        assert_eq!(resets, 11, "{waits:?}");
        // A shorter schedule (the configuration's knobs) has the same shape.
        f.damping = Damping::new(Duration::from_millis(200), Duration::from_millis(1600));
        let ms: Vec<u128> = (1..=6)
            .map(|c| f.damping.idle_hold(c).as_millis())
            .collect();
        assert_eq!(ms, [200, 400, 800, 1600, 1600, 1600]);
        // A stable timer that fires after the session left is ignored.
        assert_eq!(f.state, State::Idle);
        assert_eq!(f.event(Event::StableTimerExpires), []);
        assert_ne!(f.connect_retry_counter, 0);
    }

    #[test]
    fn zero_hold_time_runs_no_timers() {
        let mut f = Fsm::new(false);
        f.event(Event::AutomaticStart);
        f.event(Event::TcpCrAcked);
        let acts = f.event(Event::BgpOpen(n(0)));
        assert!(acts.contains(&Stop(Timer::Hold)) && acts.contains(&Stop(Timer::Keepalive)));
        assert_eq!(
            f.event(Event::KeepAliveMsg),
            [Start(Timer::Stable, Damping::DEFAULT.stable), Up]
        );
    }

    fn open_of(m: BgpMessage) -> BgpOpenMessage {
        match m {
            BgpMessage::Open(o) => o,
            _ => unreachable!(),
        }
    }

    const EXPECT: Expect = Expect {
        local_id: Ipv4Addr::new(192, 0, 2, 1),
        local_hold_time: 90,
        remote_asn: 65000,
        local_asn: 65001,
    };

    #[test]
    fn opens_are_checked_per_section_6_2() {
        let peer = |asn, hold, id| open_of(our_open(asn, hold, id));
        let id = Ipv4Addr::new(192, 0, 2, 9);
        let ok = check_open(&peer(65000, 180, id), &EXPECT).unwrap();
        assert_eq!(
            (ok.hold_time, ok.peer_asn, ok.asn4, ok.route_refresh),
            (90, 65000, true, true)
        );
        assert_eq!(ok.keepalive(), Duration::from_secs(30));
        let err = |o: &BgpOpenMessage| check_open(o, &EXPECT).unwrap_err();
        assert_eq!(
            err(&peer(65002, 90, id)),
            Notify {
                code: 2,
                subcode: 2,
                data: vec![0xfd, 0xea]
            }
        );
        assert_eq!(err(&peer(65000, 2, id)), Notify::new(2, 6));
        assert_eq!(
            err(&peer(65000, 90, Ipv4Addr::UNSPECIFIED)),
            Notify::new(2, 3)
        );
        // A 4-octet peer AS is read from the capability, not AS_TRANS.
        let e4 = Expect {
            remote_asn: 4_200_000_001,
            ..EXPECT
        };
        assert_eq!(
            check_open(&peer(4_200_000_001, 90, id), &e4)
                .unwrap()
                .peer_asn,
            4_200_000_001
        );
        // Version 3 never reaches check_open: the codec refuses it (the
        // session checks the version byte first and answers 2/1).
        let mut b = crate::bgp::encode(&our_open(65000, 90, id));
        b[19] = 3;
        let e = decode(&b, true).unwrap_err();
        assert!(e.contains("unsupported BGP version 3"), "{e}");
        // No VPNv4 capability.
        let plain = BgpOpenMessage::new(65000, 90, id, vec![]);
        assert_eq!(err(&plain).subcode, 7);
    }
}
