//! The DHCP relay path: a client's frame parsed and prepared for the
//! server (option 82, giaddr), a server's reply parsed and its circuit id
//! read and framed for the client; never a panic, whatever the bytes.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use control::dhcp::*;
    if let Some(mut c) = parse_client_frame(data) {
        let _ = message_type(&c.msg);
        let _ = to_server(
            &mut c.msg,
            Ipv4Addr::new(10, 0, 0, 1),
            &circuit_id("access0", c.vlan),
            c.src_mac,
        );
    }
    if let Some(r) = from_server(data) {
        let _ = parse_circuit_id(&r.circuit);
        let _ = lease_secs(&r.msg);
        let mac = client_mac(&r.msg).unwrap_or([2, 0, 0, 0, 0, 9]);
        let _ = client_frame(
            &r.msg,
            [2, 0, 0, 0, 0, 1],
            100,
            Ipv4Addr::new(10, 0, 0, 1),
            mac,
        );
    }
});
