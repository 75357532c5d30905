//! The DHCP relay agent's packet work (RFC 2131 section 4.1, RFC 1542
//! section 4; RFC 3046 relay agent information).
//!
//! Client to server: a BOOTREQUEST punted from an access port (port and
//! VLAN known) gets our giaddr (the service's gateway, which the relay
//! owns, so the server's replies come back to it), one more hop, and
//! option 82 with the circuit id `PORT:VLAN` and the remote id = the
//! client's MAC; it leaves by a kernel UDP socket.
//!
//! Server to client: a BOOTREPLY's option 82 names the port, VLAN and
//! client; the option is removed (RFC 3046 section 2.2) and the reply is
//! sent from the gateway to the client as an Ethernet frame on its port
//! and VLAN: to the client's MAC, and to the offered address or, when the
//! client asked for it (the broadcast flag), to 255.255.255.255.
//!
//! DHCP itself is decoded and encoded by `dhcproto`; the Ethernet, VLAN,
//! IPv4 and UDP around it by `etherparse` (slow path).

use std::net::Ipv4Addr;

use dhcproto::v4::{self, relay, DhcpOption, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

pub use dhcproto::v4::MessageType as Kind;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// RFC 1542 section 4.1.1: a request that has made this many hops is
/// dropped.
pub const MAX_HOPS: u8 = 16;

/// A client's DHCP message as punted: its VLAN (0 untagged), its source
/// MAC and the message.
#[derive(Debug)]
pub struct FromClient {
    pub vlan: u16,
    pub src_mac: [u8; 6],
    pub msg: v4::Message,
}

/// Parses a punted frame: Ethernet, optional 802.1Q tag, IPv4, UDP to
/// port 67, a BOOTREQUEST. `None` for anything else.
pub fn parse_client_frame(frame: &[u8]) -> Option<FromClient> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let vlan = match &p.vlan {
        Some(etherparse::VlanSlice::SingleVlan(v)) => v.vlan_identifier().value(),
        None => 0,
        Some(_) => return None,
    };
    let src_mac = match &p.link {
        Some(etherparse::LinkSlice::Ethernet2(e)) => e.source(),
        _ => return None,
    };
    let udp = match &p.transport {
        Some(etherparse::TransportSlice::Udp(u)) => u,
        _ => return None,
    };
    if udp.destination_port() != SERVER_PORT {
        return None;
    }
    let msg = decode(udp.payload())?;
    (msg.opcode() == Opcode::BootRequest).then_some(FromClient { vlan, src_mac, msg })
}

/// Decodes a DHCP message, refusing a hardware address length over the
/// 16 bytes chaddr holds (RFC 2131 section 2): dhcproto decodes it, and
/// then panics on reading or encoding chaddr. The fuzz target
/// `dhcp_relay` found it.
fn decode(payload: &[u8]) -> Option<v4::Message> {
    let msg = v4::Message::decode(&mut Decoder::new(payload)).ok()?;
    (msg.hlen() <= 16).then_some(msg)
}

/// The circuit id we put in option 82 for a port and VLAN.
pub fn circuit_id(port: &str, vlan: u16) -> Vec<u8> {
    format!("{port}:{vlan}").into_bytes()
}

/// Splits a circuit id back into port name and VLAN.
pub fn parse_circuit_id(id: &[u8]) -> Option<(&str, u16)> {
    let s = std::str::from_utf8(id).ok()?;
    let (port, vlan) = s.rsplit_once(':')?;
    Some((port, vlan.parse().ok()?))
}

/// Why a client's message is not relayed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("hop count {0} reached the limit of 16 (RFC 1542)")]
    Hops(u8),
    #[error("giaddr {0} is another relay's")]
    OtherRelay(Ipv4Addr),
    #[error("encoding: {0}")]
    Encode(String),
}

/// Prepares a client's message for the server: giaddr (if no relay set
/// one), hops + 1, option 82. Returns the UDP payload.
pub fn to_server(
    msg: &mut v4::Message,
    giaddr: Ipv4Addr,
    circuit: &[u8],
    remote: [u8; 6],
) -> Result<Vec<u8>, RelayError> {
    if msg.hops() >= MAX_HOPS {
        return Err(RelayError::Hops(msg.hops()));
    }
    // Our clients are directly attached: a giaddr already set means a
    // relay behind the access port, which the session model does not
    // cover.
    if !msg.giaddr().is_unspecified() && msg.giaddr() != giaddr {
        return Err(RelayError::OtherRelay(msg.giaddr()));
    }
    msg.set_giaddr(giaddr);
    msg.set_hops(msg.hops() + 1);
    let mut info = relay::RelayAgentInformation::default();
    info.insert(relay::RelayInfo::AgentCircuitId(circuit.to_vec()));
    info.insert(relay::RelayInfo::AgentRemoteId(remote.to_vec()));
    msg.opts_mut()
        .insert(DhcpOption::RelayAgentInformation(info));
    encode(msg)
}

fn encode(msg: &v4::Message) -> Result<Vec<u8>, RelayError> {
    let mut out = Vec::with_capacity(600);
    msg.encode(&mut Encoder::new(&mut out))
        .map_err(|e| RelayError::Encode(e.to_string()))?;
    Ok(out)
}

/// A server's reply with the option 82 it carried, which is removed.
#[derive(Debug)]
pub struct FromServer {
    pub msg: v4::Message,
    pub circuit: Vec<u8>,
    pub remote: Vec<u8>,
}

/// Decodes a BOOTREPLY from the server; `None` if it is not one or has
/// no option 82 of ours.
pub fn from_server(payload: &[u8]) -> Option<FromServer> {
    let mut msg = decode(payload)?;
    if msg.opcode() != Opcode::BootReply {
        return None;
    }
    let Some(DhcpOption::RelayAgentInformation(info)) =
        msg.opts_mut().remove(OptionCode::RelayAgentInformation)
    else {
        return None;
    };
    let circuit = match info.get(relay::RelayCode::AgentCircuitId) {
        Some(relay::RelayInfo::AgentCircuitId(c)) => c.clone(),
        _ => return None,
    };
    let remote = match info.get(relay::RelayCode::AgentRemoteId) {
        Some(relay::RelayInfo::AgentRemoteId(r)) => r.clone(),
        _ => Vec::new(),
    };
    Some(FromServer {
        msg,
        circuit,
        remote,
    })
}

/// The Ethernet frame that carries a server's reply to the client.
pub fn client_frame(
    msg: &v4::Message,
    port_mac: [u8; 6],
    vlan: u16,
    gateway: Ipv4Addr,
    client_mac: [u8; 6],
) -> Result<Vec<u8>, RelayError> {
    let payload = encode(msg)?;
    let dst_ip = if msg.flags().broadcast() || msg.yiaddr().is_unspecified() {
        Ipv4Addr::BROADCAST
    } else {
        msg.yiaddr()
    };
    let dst_mac = if msg.flags().broadcast() {
        [0xff; 6]
    } else {
        client_mac
    };
    let b = etherparse::PacketBuilder::ethernet2(port_mac, dst_mac);
    let mut out = Vec::with_capacity(payload.len() + 64);
    let write = |out: &mut Vec<u8>| -> Result<(), etherparse::err::packet::BuildWriteError> {
        if vlan != 0 {
            b.single_vlan(etherparse::VlanId::try_new(vlan).map_err(|_| {
                etherparse::err::packet::BuildWriteError::Io(std::io::Error::other("bad VLAN"))
            })?)
            .ipv4(gateway.octets(), dst_ip.octets(), 64)
            .udp(SERVER_PORT, CLIENT_PORT)
            .write(out, &payload)
        } else {
            b.ipv4(gateway.octets(), dst_ip.octets(), 64)
                .udp(SERVER_PORT, CLIENT_PORT)
                .write(out, &payload)
        }
    };
    write(&mut out).map_err(|e| RelayError::Encode(e.to_string()))?;
    Ok(out)
}

/// The message type, if the message has one.
pub fn message_type(msg: &v4::Message) -> Option<MessageType> {
    msg.opts().msg_type()
}

/// The lease time an ACK grants, in seconds.
pub fn lease_secs(msg: &v4::Message) -> Option<u32> {
    match msg.opts().get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
        _ => None,
    }
}

/// The client's hardware address (chaddr), if Ethernet.
pub fn client_mac(msg: &v4::Message) -> Option<[u8; 6]> {
    msg.chaddr().get(..6)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 1];
    const PORT: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

    fn discover() -> v4::Message {
        let mut m = v4::Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_chaddr(&CLIENT)
            .set_xid(0x1234_5678)
            .set_flags(v4::Flags::default().set_broadcast());
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        m
    }

    fn frame(vlan: u16, msg: &v4::Message) -> Vec<u8> {
        let payload = encode(msg).unwrap();
        let b = etherparse::PacketBuilder::ethernet2(CLIENT, [0xff; 6]);
        let mut out = Vec::new();
        if vlan != 0 {
            b.single_vlan(etherparse::VlanId::try_new(vlan).unwrap())
                .ipv4([0; 4], [255; 4], 64)
                .udp(CLIENT_PORT, SERVER_PORT)
                .write(&mut out, &payload)
                .unwrap();
        } else {
            b.ipv4([0; 4], [255; 4], 64)
                .udp(CLIENT_PORT, SERVER_PORT)
                .write(&mut out, &payload)
                .unwrap();
        }
        out
    }

    #[test]
    fn a_discover_is_relayed_with_giaddr_hops_and_option_82() {
        let f = frame(100, &discover());
        let mut c = parse_client_frame(&f).expect("a client DHCP frame");
        assert_eq!((c.vlan, c.src_mac), (100, CLIENT));
        let gw = Ipv4Addr::new(10, 1, 0, 1);
        let out = to_server(&mut c.msg, gw, &circuit_id("access0", 100), CLIENT).unwrap();
        let m = v4::Message::decode(&mut Decoder::new(&out)).unwrap();
        assert_eq!(m.giaddr(), gw);
        assert_eq!(m.hops(), 1);
        assert_eq!(m.xid(), 0x1234_5678);
        let Some(DhcpOption::RelayAgentInformation(info)) =
            m.opts().get(OptionCode::RelayAgentInformation)
        else {
            panic!("no option 82")
        };
        assert_eq!(
            info.get(relay::RelayCode::AgentCircuitId),
            Some(&relay::RelayInfo::AgentCircuitId(b"access0:100".to_vec()))
        );
        assert_eq!(
            info.get(relay::RelayCode::AgentRemoteId),
            Some(&relay::RelayInfo::AgentRemoteId(CLIENT.to_vec()))
        );
        // The option 82 bytes on the wire (RFC 3046 section 2.0): code
        // 82, then sub-option 1 with the circuit id, in this payload.
        let circuit = [&[1u8, 11][..], b"access0:100"].concat();
        assert!(out.windows(circuit.len()).any(|w| w == circuit));
    }

    /// hlen over 16 (found by the `dhcp_relay` fuzz target): refused
    /// from a client and from a server, where dhcproto would panic on
    /// chaddr.
    #[test]
    fn a_hardware_address_longer_than_chaddr_is_refused_not_a_panic() {
        let mut f = frame(0, &discover());
        let hlen_at = 14 + 20 + 8 + 2;
        assert_eq!(f[hlen_at], 6);
        assert!(parse_client_frame(&f).is_some());
        f[hlen_at] = 93;
        assert!(parse_client_frame(&f).is_none());
        f[hlen_at] = 17;
        assert!(parse_client_frame(&f).is_none());
        f[hlen_at] = 16;
        let c = parse_client_frame(&f).expect("16 bytes fit chaddr");
        assert_eq!(client_mac(&c.msg), Some(CLIENT));

        let mut reply = discover();
        reply.set_opcode(Opcode::BootReply);
        let mut info = relay::RelayAgentInformation::default();
        info.insert(relay::RelayInfo::AgentCircuitId(b"access0:0".to_vec()));
        reply
            .opts_mut()
            .insert(DhcpOption::RelayAgentInformation(info));
        let mut payload = encode(&reply).unwrap();
        assert!(from_server(&payload).is_some());
        payload[2] = 93;
        assert!(from_server(&payload).is_none());
    }

    #[test]
    fn relaying_refuses_loops_and_foreign_relays() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut m = discover();
        m.set_hops(16);
        assert_eq!(
            to_server(&mut m, gw, b"a:0", CLIENT),
            Err(RelayError::Hops(16))
        );
        let mut m = discover();
        m.set_giaddr(Ipv4Addr::new(192, 0, 2, 7));
        assert!(matches!(
            to_server(&mut m, gw, b"a:0", CLIENT),
            Err(RelayError::OtherRelay(_))
        ));
    }

    #[test]
    fn a_reply_comes_back_to_the_client_without_option_82() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut m = discover();
        let wire = to_server(&mut m, gw, &circuit_id("access0", 0), CLIENT).unwrap();
        // The server answers: BOOTREPLY, an address, option 82 echoed.
        let mut reply = v4::Message::decode(&mut Decoder::new(&wire)).unwrap();
        reply
            .set_opcode(Opcode::BootReply)
            .set_yiaddr(Ipv4Addr::new(10, 0, 0, 100))
            .set_flags(v4::Flags::default());
        reply
            .opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        reply.opts_mut().insert(DhcpOption::AddressLeaseTime(3600));
        let r = from_server(&encode(&reply).unwrap()).expect("a reply of ours");
        assert_eq!(parse_circuit_id(&r.circuit), Some(("access0", 0)));
        assert_eq!(r.remote, CLIENT);
        assert!(r
            .msg
            .opts()
            .get(OptionCode::RelayAgentInformation)
            .is_none());
        assert_eq!(message_type(&r.msg), Some(MessageType::Ack));
        assert_eq!(lease_secs(&r.msg), Some(3600));
        let f = client_frame(&r.msg, PORT, 0, gw, CLIENT).unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source_addr(), gw);
        assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&f[0..6], &CLIENT);
        assert_eq!(&f[6..12], &PORT);
        // Our own request is not a reply; garbage is nothing.
        assert!(from_server(&wire).is_none());
        assert!(from_server(&[0u8; 10]).is_none());
        assert!(parse_client_frame(&f).is_none(), "to port 68, not 67");
    }
}
