//! The configuration: any text gives a configuration or errors that each
//! name the file, a line and column inside the text, a field and a
//! message, never a panic; a valid router configuration builds its tables
//! (or says why not).
#![no_main]
use std::path::Path;

use control::config::LoadError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match control::config::parse(Path::new("fuzz.toml"), src) {
        Ok(loaded) => {
            if loaded.config.router.is_some() {
                let macs = vec![[2, 0, 0, 0, 0, 1]; loaded.config.ports.len()];
                let _ = control::router::build_tables(&loaded, &macs);
            }
        }
        Err(LoadError::Invalid(errs)) => {
            assert!(!errs.is_empty(), "an invalid configuration with no error");
            let lines = src.split('\n').count();
            for e in &errs {
                assert_eq!(e.file, Path::new("fuzz.toml"), "{e}");
                assert!(
                    (1..=lines).contains(&e.line) && e.column >= 1,
                    "{e}: {lines} lines"
                );
                assert!(!e.field.is_empty() && !e.message.is_empty(), "{e}");
            }
        }
        Err(e @ LoadError::Read { .. }) => panic!("parse read a file: {e}"),
    }
});
