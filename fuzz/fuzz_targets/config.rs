//! The configuration: any text gives a configuration or errors with a
//! place, never a panic; a valid router configuration builds its tables
//! (or says why not).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = control::config::parse(Path::new("fuzz.toml"), src) {
        if loaded.config.router.is_some() {
            let macs = vec![[2, 0, 0, 0, 0, 1]; loaded.config.ports.len()];
            let _ = control::router::build_tables(&loaded, &macs);
        }
    }
});
