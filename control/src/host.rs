//! The kernel side of the host path: each addressed port's host tap gets
//! the port's address, IPv6 off (no kernel chatter on the wire) and link
//! up, so that ping, ARP and TCP (BGP) to the router work with ordinary
//! kernel sockets.
//!
//! This runs `ip` (iproute2, on every Linux an operator runs this on) once
//! per port at start: three one-shot settings do not justify an async
//! netlink stack in the control thread, and the commands it runs are the
//! ones an operator would type to check them.

use std::process::Command;

/// Gives `iface` the address `addr/len`, turns IPv6 off on it and sets it
/// up. The error names the command that failed and what it said.
pub fn configure_iface(iface: &str, addr: std::net::Ipv4Addr, len: u8) -> Result<(), String> {
    // IPv6 off first, before the link comes up and the kernel starts
    // router solicitations; a kernel without IPv6 has no such file.
    let v6 = format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6");
    if std::path::Path::new(&v6).exists() {
        std::fs::write(&v6, "1").map_err(|e| format!("{v6}: {e}"))?;
    }
    ip(&[
        "-4",
        "addr",
        "replace",
        &format!("{addr}/{len}"),
        "dev",
        iface,
    ])?;
    ip(&["link", "set", "dev", iface, "up"])
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Makes `addr` local to this kernel (a /32 on `lo`), so that sockets can
/// bind it: the DHCP relay owns each service's gateway address this way.
pub fn add_local_address(addr: std::net::Ipv4Addr) -> Result<(), String> {
    ip(&["-4", "addr", "replace", &format!("{addr}/32"), "dev", "lo"])?;
    ip(&["link", "set", "dev", "lo", "up"])
}
