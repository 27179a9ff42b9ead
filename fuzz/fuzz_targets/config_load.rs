//! Fuzzes configuration loading: arbitrary text must give a config or a `ConfigError` that
//! names the file, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Users files and env vars are not touched: relative paths resolve under a folder that
    // does not exist.
    match canary_gateway::config::load_str(text, "fuzz.yaml", Path::new("/nonexistent-fuzz-dir")) {
        Ok(loaded) => {
            assert!(!loaded.gateway.routes.is_empty());
            for route in &loaded.gateway.routes {
                let router = &route.router;
                assert!(router.default_group().0 < router.group_names().len());
                assert_eq!(loaded.gateway.groups.len(), router.group_names().len());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.yaml")),
    }
});
