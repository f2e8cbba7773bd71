//! Policy TOML parsing + compilation: any input either compiles or yields diagnostics with a
//! line and column inside the input; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use ztgate::policy::{Policy, PolicyError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Policy::from_toml(Path::new("fuzz.toml"), text) {
        Ok(policy) => {
            for w in &policy.warnings {
                assert!(w.line >= 1 && w.col >= 1);
            }
        }
        Err(PolicyError::Invalid(d)) => {
            let lines = text.lines().count().max(1) + 1;
            for p in &d.problems {
                assert!(p.line >= 1 && p.line <= lines, "line {} of {lines}", p.line);
            }
        }
        Err(_) => {}
    }
});
