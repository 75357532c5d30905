//! The DHCP relay's sockets: one non-blocking UDP socket on each service
//! gateway that has an address server, the address added to `lo` when
//! the kernel does not have it, so that the server's replies to
//! giaddr:67 reach us. What the relay does with them, and the sessions,
//! is `control::relay`.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use anyhow::{anyhow, Context, Result};
use control::config::Config;
use control::dhcp;
use control::relay::{Relay, ServerSocket, ServiceRelay};

/// A relay socket registered with the control thread's tokio runtime.
/// The host path polls every socket on every tick; tokio keeps each
/// socket's readiness from the epoll events its driver takes between
/// ticks, so a socket nothing arrived on costs no `recvfrom` (with 1,000
/// services, a plain non-blocking socket each would cost 1,000 failed
/// calls a tick).
struct Socket(tokio::net::UdpSocket);

impl ServerSocket for Socket {
    fn send_to(&self, payload: &[u8], to: SocketAddrV4) -> io::Result<usize> {
        self.0.try_send_to(payload, SocketAddr::V4(to))
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.try_recv_from(buf)
    }
}

/// Binds a socket on each service gateway that has an address server
/// (adding the address to `lo` if the kernel does not have it). Runs
/// inside the control thread's runtime, which the sockets register with.
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
            let sock = bind(gateway)
                .and_then(|s| Ok(tokio::net::UdpSocket::from_std(s)?))
                .with_context(|| {
                    format!("service[{i}]: the DHCP relay's socket on {gateway}:67")
                })?;
            e.insert(Box::new(Socket(sock)));
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
