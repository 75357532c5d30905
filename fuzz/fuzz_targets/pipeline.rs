//! The packet pipeline on spoke, hub and P tables (from the examples) and
//! on the malformed-packet corpus's spoke (VLANs, pipe mode, swap, PHP):
//! any bytes on any port give exactly one outcome, never a panic; a
//! forwarded packet leaves by a port that exists and grows by no more
//! than two labels and a VLAN tag; a punt or a drop names no port.
//!
//! Input: byte 0 picks the tables, byte 1 the port (one past the last
//! included), the rest is the frame.
#![no_main]
use std::path::Path;
use std::sync::OnceLock;

use dataplane::pipeline::{process, Frame, OutcomeKind, VecFrame, PUNT_PORT};
use dataplane::tables::{Role, Tables};
use libfuzzer_sys::fuzz_target;

fn build(src: &str) -> Tables {
    let loaded = control::config::parse(Path::new("fuzz.toml"), src).expect("the example is valid");
    let macs = vec![[2, 0, 0, 0, 0, 1]; loaded.config.ports.len()];
    control::router::build_tables(&loaded, &macs).expect("the example builds")
}

fn tables() -> &'static [Tables; 4] {
    static T: OnceLock<[Tables; 4]> = OnceLock::new();
    T.get_or_init(|| {
        let spoke = build(include_str!("../../examples/spoke.toml"));
        let hub = build(include_str!("../../examples/hub.toml"));
        let mut p = spoke.second_copy();
        p.role = Role::P;
        let corpus = build(include_str!("../../tests/corpus/spoke.toml"));
        [spoke, hub, p, corpus]
    })
}

fuzz_target!(|data: &[u8]| {
    let [pick, port, frame @ ..] = data else {
        return;
    };
    let t = &tables()[usize::from(*pick) % 4];
    let port = u16::from(*port) % (t.ports.len() as u16 + 1);
    let mut f = VecFrame::new(frame);
    let n = process(t, port, &mut f);
    match n.outcome.kind() {
        OutcomeKind::Forward => {
            assert!(usize::from(n.port) < t.ports.len(), "{n:?}");
            assert!(
                f.data().len() <= frame.len() + 12,
                "{n:?}: {} -> {}",
                frame.len(),
                f.data().len()
            );
        }
        OutcomeKind::Punt => assert_eq!(n.port, PUNT_PORT),
        OutcomeKind::Drop => assert_eq!(n.port, u16::MAX),
    }
});
