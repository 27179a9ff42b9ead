//! Fuzzes route matching: an arbitrary host and request target are normalized and looked up in
//! a table with exact, wildcard and catch-all routes. Never a panic; a normalized path starts
//! with `/` and keeps no dot segment or empty segment.
#![no_main]

use std::sync::OnceLock;

use canary_gateway::routing::routes::{normalize_host, normalize_path, RouteMatch, RouteTable};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let route = |hosts: &[&str], paths: &[&str]| RouteMatch {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        RouteTable::new(&[
            route(&["a.example", "b.example"], &["/api/", "/"]),
            route(&["*.example"], &["/"]),
            route(&["*.b.example"], &["/x"]),
            route(&[], &["/", "/static/"]),
        ])
        .expect("no conflict")
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (host, target) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let (mut host_buf, mut path) = (Vec::new(), Vec::new());
    let host = normalize_host(host, &mut host_buf).unwrap_or_default();
    if normalize_path(target, &mut path).is_err() {
        return;
    }
    assert!(path.starts_with(b"/"), "{path:?}");
    for segment in path.split(|&b| b == b'/').skip(1) {
        assert!(segment != b"." && segment != b"..", "{path:?}");
    }
    assert!(!path.windows(2).any(|w| w == b"//"), "{path:?}");
    let found = table().find(host, &path);
    assert!(found.is_some(), "the catch-all takes every path");
});
