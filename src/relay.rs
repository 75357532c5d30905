//! The DHCP relay's sockets: one plain non-blocking UDP socket on each
//! service gateway that has an address server, the address added to `lo`
//! when the kernel does not have it, so that the server's replies to
//! giaddr:67 reach us. What the relay does with them, and the sessions,
//! is `control::relay`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::{anyhow, Context, Result};
use control::config::Config;
use control::dhcp;
use control::relay::{Relay, ServerSocket, ServiceRelay};

/// Binds a socket on each service gateway that has an address server
/// (adding the address to `lo` if the kernel does not have it).
pub fn start(c: &Config) -> Result<Relay> {
    let mut services = Vec::with_capacity(c.services.len());
    let mut sockets: HashMap<Ipv4Addr, Box<dyn ServerSocket>> = HashMap::new();
    for (i, s) in c.services.iter().enumerate() {
        let (Some(server), Some(gw)) = (&s.address_server, &s.gateway) else {
            services.push(None);
            continue;
        };
        let gateway: Ipv4Addr = gw
            .get_ref()
            .parse()
            .with_context(|| format!("service[{i}].gateway"))?;
        let server = parse_server(server.get_ref())
            .ok_or_else(|| anyhow!("service[{i}].address_server: {:?}", server.get_ref()))?;
        if let std::collections::hash_map::Entry::Vacant(e) = sockets.entry(gateway) {
            e.insert(Box::new(bind(gateway).with_context(|| {
                format!("service[{i}]: the DHCP relay's socket on {gateway}:67")
            })?));
        }
        services.push(Some(ServiceRelay { gateway, server }));
    }
    Ok(Relay::new(
        services,
        sockets,
        c.control.max_sessions() as usize,
    ))
}

/// `ADDRESS` or `ADDRESS:PORT` (validated by config).
fn parse_server(s: &str) -> Option<SocketAddrV4> {
    match s.split_once(':') {
        Some((a, p)) => Some(SocketAddrV4::new(a.parse().ok()?, p.parse().ok()?)),
        None => Some(SocketAddrV4::new(s.parse().ok()?, dhcp::SERVER_PORT)),
    }
}

fn bind(gateway: Ipv4Addr) -> Result<UdpSocket> {
    let addr = SocketAddrV4::new(gateway, dhcp::SERVER_PORT);
    let sock = match UdpSocket::bind(addr) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {
            control::host::add_local_address(gateway).map_err(|m| anyhow!("{m}"))?;
            UdpSocket::bind(addr)?
        }
        Err(e) => return Err(e.into()),
    };
    sock.set_nonblocking(true)?;
    Ok(sock)
}
