//! A BGP message from a peer: the RFC 7606 verdict on the raw bytes and
//! the decoder, with and without 4-octet AS numbers, never panic; what
//! decodes re-encodes, and an UPDATE yields its VPNv4 routes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for asn4 in [true, false] {
        let _ = control::bgp::check_update(data, asn4, false);
        if let Ok(m) = control::bgp::decode(data, asn4) {
            let _ = control::bgp::encode(&m);
            if let netgauze_bgp_pkt::BgpMessage::Update(u) = &m {
                let _ = control::bgp::vpnv4_of(u);
            }
        }
    }
});
