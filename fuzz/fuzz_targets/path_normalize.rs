//! Path normalisation (run before routing and policy): a normalised path is absolute, has no
//! empty, `.` or `..` segments, and is a fixed point (normalising it again changes nothing), so
//! what the policy matched is what the upstream receives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztgate::policy::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(n) = normalize(path) {
        assert!(n.starts_with('/'), "{path:?} -> {n:?}");
        for seg in n[1..].split('/') {
            assert!(seg != "." && seg != "..", "{path:?} -> {n:?}");
        }
        assert!(!n.contains("//"), "{path:?} -> {n:?}");
        let again = normalize(&n).expect("a normalised path must normalise");
        assert_eq!(again, n, "not idempotent for {path:?}");
    }
});
