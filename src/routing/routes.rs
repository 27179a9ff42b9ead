//! Routes by host and path, as nginx picks a `server_name` and a `location`: the request's host
//! and normalized path select exactly one route, whose own rules then decide the group.
//!
//! Precedence among the routes whose host and path both match: a route naming the host exactly
//! beats a wildcard (`*.example.com`: any host ending in `.example.com`; the longest wildcard
//! wins), which beats a route with no hosts; within one host class the longest path prefix wins.
//!
//! Cost per request: one hash lookup for the exact host, one per label for wildcards, and one
//! per distinct prefix length of the chosen class for the path (a route table of 1,000 routes
//! usually has a few dozen lengths).

use std::collections::HashMap;

use super::RoutingError;

/// Index of a route in the route list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(pub(crate) usize);

/// One route's matching criteria, as validated from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Lower-case host names; `*.example.com` is a wildcard; empty: any host.
    pub hosts: Vec<String>,
    /// Path prefixes (normalized, starting with `/`); at least one (`/` by default).
    pub paths: Vec<String>,
}

/// The prefixes of one host class: prefix → route, and the distinct prefix lengths, longest
/// first, to look up.
#[derive(Debug, Clone, Default)]
struct Prefixes {
    routes: HashMap<Box<[u8]>, RouteId>,
    lengths: Vec<usize>,
}

impl Prefixes {
    fn insert(&mut self, prefix: &str, route: RouteId) -> Result<(), RouteId> {
        if let Some(&other) = self.routes.get(prefix.as_bytes()) {
            return Err(other);
        }
        self.routes.insert(prefix.as_bytes().into(), route);
        if !self.lengths.contains(&prefix.len()) {
            self.lengths.push(prefix.len());
            self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
        Ok(())
    }

    /// The route of the longest prefix of `path`, and that prefix's length.
    fn longest(&self, path: &[u8]) -> Option<(RouteId, usize)> {
        self.lengths
            .iter()
            .filter(|&&len| len <= path.len())
            .find_map(|&len| Some((*self.routes.get(&path[..len])?, len)))
    }
}

/// All routes' hosts and paths, built once per configuration.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    exact: HashMap<Box<[u8]>, Prefixes>,
    /// By the suffix after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<Box<[u8]>, Prefixes>,
    any: Prefixes,
}

/// Two routes claim the same host and path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub(crate) first: RouteId,
    pub(crate) second: RouteId,
    pub(crate) host: String,
    pub(crate) path: String,
}

impl RouteTable {
    /// Builds the table; two routes with the same host and the same path prefix conflict.
    pub fn new(routes: &[RouteMatch]) -> Result<RouteTable, Conflict> {
        let mut table = RouteTable::default();
        for (index, route) in routes.iter().enumerate() {
            let id = RouteId(index);
            let hosts: Vec<Option<&str>> = if route.hosts.is_empty() {
                vec![None]
            } else {
                route.hosts.iter().map(|h| Some(h.as_str())).collect()
            };
            for host in hosts {
                let class = match host {
                    None => &mut table.any,
                    Some(h) => match h.strip_prefix("*.") {
                        Some(suffix) => table.wildcard.entry(suffix.as_bytes().into()).or_default(),
                        None => table.exact.entry(h.as_bytes().into()).or_default(),
                    },
                };
                for path in &route.paths {
                    class.insert(path, id).map_err(|first| Conflict {
                        first,
                        second: id,
                        host: host.unwrap_or("(any host)").to_string(),
                        path: path.clone(),
                    })?;
                }
            }
        }
        Ok(table)
    }

    /// The route for `host` (lower-case, no port, no trailing dot: see [`normalize_host`]) and
    /// `path` (normalized: see [`normalize_path`]) with the length of the path prefix that
    /// matched; `None` when no route matches.
    pub fn find(&self, host: &[u8], path: &[u8]) -> Option<(RouteId, usize)> {
        if let Some(route) = self.exact.get(host).and_then(|p| p.longest(path)) {
            return Some(route);
        }
        if !self.wildcard.is_empty() {
            // Suffixes after each dot, longest first: `a.b.example.com` tries `b.example.com`,
            // then `example.com`, then `com`.
            for (at, _) in host.iter().enumerate().filter(|(_, &b)| b == b'.') {
                let suffix = &host[at + 1..];
                if let Some(route) = self.wildcard.get(suffix).and_then(|p| p.longest(path)) {
                    return Some(route);
                }
            }
        }
        self.any.longest(path)
    }
}

/// The host to match: the `Host` value (or the target's authority) without the port and a
/// trailing dot, lower-cased into `out`. `None` when it is empty.
pub fn normalize_host<'a>(host: &[u8], out: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    let host = match host.first() {
        // `[v6]:port`: the address in brackets is the host.
        Some(b'[') => {
            let end = host.iter().position(|&b| b == b']')?;
            &host[..=end]
        }
        _ => match host.iter().rposition(|&b| b == b':') {
            Some(colon) => &host[..colon],
            None => host,
        },
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    out.clear();
    out.extend(host.iter().map(u8::to_ascii_lowercase));
    Some(out)
}

/// The path to match (RFC 3986 §6.2.2): the target's path without its query, percent-encoded
/// unreserved characters decoded (`%41` → `A`; `%2F` stays encoded, so it never splits a
/// segment), dot segments removed. A path that climbs above `/` is an error (400).
pub fn normalize_path(target: &[u8], out: &mut Vec<u8>) -> Result<(), RoutingError> {
    let path = match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => &target[..end],
        None => target,
    };
    // An absolute-form target (`http://host/path`): the path starts at the first `/` after
    // the authority.
    let path = match path.windows(3).position(|w| w == b"://") {
        Some(scheme_end) => {
            let rest = &path[scheme_end + 3..];
            rest.iter()
                .position(|&b| b == b'/')
                .map_or(&b"/"[..], |at| &rest[at..])
        }
        None => path,
    };
    out.clear();
    // Decode unreserved characters first, so `%2e%2e` is a dot segment like `..`.
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' {
            if let Some(byte) = path.get(i + 1..i + 3).and_then(hex_byte) {
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(byte);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(path[i]);
        i += 1;
    }
    out.push(b'/');
    for segment in decoded.split(|&b| b == b'/').skip(1) {
        match segment {
            // Empty segments (`//`) are merged, as nginx's `merge_slashes` does.
            b"" | b"." => {}
            b".." => {
                if out.len() == 1 {
                    return Err(RoutingError::PathAboveRoot);
                }
                // Drop the last segment and its slash, keeping the leading `/`.
                let last = out[..out.len() - 1]
                    .iter()
                    .rposition(|&b| b == b'/')
                    .unwrap_or(0);
                out.truncate(last + 1);
            }
            _ => {
                out.extend_from_slice(segment);
                out.push(b'/');
            }
        }
    }
    // A trailing `/` is kept only where the path had one (or ended in a dot segment).
    let ends_in_dir = decoded.ends_with(b"/")
        || decoded.ends_with(b"/.")
        || decoded.ends_with(b"/..")
        || decoded.is_empty();
    if !ends_in_dir && out.len() > 1 {
        out.pop();
    }
    Ok(())
}

fn hex_byte(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(hex[0])? * 16 + digit(hex[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[&str], paths: &[&str]) -> RouteMatch {
        RouteMatch {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            paths: if paths.is_empty() {
                vec!["/".into()]
            } else {
                paths.iter().map(|p| p.to_string()).collect()
            },
        }
    }

    /// The example plus a deeper wildcard and a catch-all.
    fn table() -> RouteTable {
        RouteTable::new(&[
            route(&["tools2online.com", "www.tools2online.com"], &["/api/"]), // 0 api
            route(&["tools2online.com", "*.tools2online.com"], &[]),          // 1 web
            route(&["*.eu.tools2online.com"], &[]),                           // 2 eu
            route(&[], &["/", "/static/"]),                                   // 3 catch-all
            route(&["tools2online.com"], &["/api/v2"]),                       // 4 api v2
        ])
        .expect("no conflict")
    }

    fn find(table: &RouteTable, host: &str, target: &str) -> Option<usize> {
        let (mut h, mut p) = (Vec::new(), Vec::new());
        let host = normalize_host(host.as_bytes(), &mut h)?;
        normalize_path(target.as_bytes(), &mut p).ok()?;
        table.find(host, &p).map(|(r, _)| r.0)
    }

    /// (what, host, target, expected route)
    #[test]
    fn table_of_route_choices() {
        let t = table();
        let cases: &[(&str, &str, &str, Option<usize>)] = &[
            (
                "exact host, longest prefix",
                "tools2online.com",
                "/api/x",
                Some(0),
            ),
            (
                "exact host, longer prefix still",
                "tools2online.com",
                "/api/v2/x",
                Some(4),
            ),
            (
                "a prefix is plain text, as nginx's",
                "tools2online.com",
                "/api/v23",
                Some(4),
            ),
            ("exact host, root", "tools2online.com", "/", Some(1)),
            (
                "exact class first even for /",
                "www.tools2online.com",
                "/api/",
                Some(0),
            ),
            (
                "exact class without a match falls to the wildcard",
                "www.tools2online.com",
                "/",
                Some(1),
            ),
            ("wildcard", "shop.tools2online.com", "/cart", Some(1)),
            (
                "longest wildcard wins",
                "de.eu.tools2online.com",
                "/",
                Some(2),
            ),
            (
                "wildcard matches deeper names",
                "a.b.tools2online.com",
                "/",
                Some(1),
            ),
            (
                "wildcard does not match the bare name",
                "eu.tools2online.com",
                "/x",
                Some(1),
            ),
            ("no host route", "other.example", "/", Some(3)),
            (
                "no host route, longer prefix",
                "other.example",
                "/static/a.css",
                Some(3),
            ),
            ("port ignored", "tools2online.com:8080", "/api/x", Some(0)),
            ("case ignored", "TOOLS2Online.COM", "/api/x", Some(0)),
            (
                "trailing dot ignored",
                "tools2online.com.",
                "/api/x",
                Some(0),
            ),
            (
                "dot segments removed",
                "tools2online.com",
                "/static/../api/x",
                Some(0),
            ),
            (
                "encoded dots are dots",
                "tools2online.com",
                "/x/%2e%2e/api/x",
                Some(0),
            ),
            (
                "encoded unreserved decoded",
                "tools2online.com",
                "/%61pi/x",
                Some(0),
            ),
            ("%2F stays encoded", "tools2online.com", "/api%2Fx", Some(1)),
            ("query ignored", "tools2online.com", "/api/?a=/b", Some(0)),
            (
                "absolute-form target",
                "tools2online.com",
                "http://tools2online.com/api/x",
                Some(0),
            ),
            (
                "climbing above / is refused",
                "tools2online.com",
                "/../api/x",
                None,
            ),
            ("empty host", ":80", "/", None),
        ];
        for (what, host, target, expected) in cases {
            assert_eq!(find(&t, host, target), *expected, "{what}: {host} {target}");
        }
    }

    /// Without a catch-all, a request no route claims finds none.
    #[test]
    fn no_route_matches() {
        let t = RouteTable::new(&[route(&["a.example"], &["/app/"])]).expect("table");
        assert_eq!(find(&t, "a.example", "/app/x"), Some(0));
        assert_eq!(find(&t, "a.example", "/other"), None);
        assert_eq!(find(&t, "b.example", "/app/x"), None);
    }

    #[test]
    fn the_matched_prefix_length_is_returned() {
        let t = table();
        assert_eq!(
            t.find(b"tools2online.com", b"/api/v2/x"),
            Some((RouteId(4), 7))
        );
        assert_eq!(
            t.find(b"other.example", b"/static/a"),
            Some((RouteId(3), 8))
        );
    }

    #[test]
    fn same_host_and_prefix_conflict() {
        let conflict = RouteTable::new(&[
            route(&["a.example", "b.example"], &["/x/"]),
            route(&["b.example"], &["/y/", "/x/"]),
        ])
        .expect_err("conflict");
        assert_eq!((conflict.first, conflict.second), (RouteId(0), RouteId(1)));
        assert_eq!(
            (conflict.host.as_str(), conflict.path.as_str()),
            ("b.example", "/x/")
        );
        let any = RouteTable::new(&[route(&[], &[]), route(&[], &[])]).expect_err("conflict");
        assert_eq!(any.host, "(any host)");
        // The same prefix under different host classes is fine.
        RouteTable::new(&[
            route(&["a.example"], &[]),
            route(&["*.a.example"], &[]),
            route(&[], &[]),
        ])
        .expect("no conflict");
    }

    #[test]
    fn paths_are_normalized() {
        let norm = |p: &str| {
            let mut out = Vec::new();
            normalize_path(p.as_bytes(), &mut out).map(|_| String::from_utf8(out).expect("utf-8"))
        };
        assert_eq!(norm("/").as_deref(), Ok("/"));
        assert_eq!(norm("").as_deref(), Ok("/"));
        assert_eq!(norm("/a/b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/a/b/").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/a/./b/../c").as_deref(), Ok("/a/c"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/%7Eme/%2e/x").as_deref(), Ok("/a/~me/x"));
        assert_eq!(norm("/a%2Fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(norm("/a%zz").as_deref(), Ok("/a%zz"));
        assert_eq!(norm("/a?x=../..").as_deref(), Ok("/a"));
        assert_eq!(norm("/..").map_err(|_| ()), Err(()));
        assert_eq!(norm("/a/../../b").map_err(|_| ()), Err(()));
        assert_eq!(norm("/%2e%2e/b").map_err(|_| ()), Err(()));
    }

    /// Random targets built from the bytes that matter (`/`, `.`, `%`, hex digits, `?`):
    /// normalization never panics, and a normalized path starts with `/` and keeps no dot or
    /// empty segment. (The `route_match` fuzz target checks the same on any bytes.)
    #[test]
    fn normalization_holds_on_random_targets() {
        let alphabet = b"/./%2e2E2fFa?x";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        let t = table();
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let len = next() % 24;
            let target: Vec<u8> = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            if normalize_path(&target, &mut out).is_err() {
                continue;
            }
            assert!(out.starts_with(b"/"), "{target:?} -> {out:?}");
            for segment in out.split(|&b| b == b'/').skip(1) {
                assert!(segment != b"." && segment != b"..", "{target:?} -> {out:?}");
            }
            assert!(!out.windows(2).any(|w| w == b"//"), "{target:?} -> {out:?}");
            assert!(
                t.find(b"x.example", &out).is_some(),
                "the catch-all takes every path"
            );
        }
    }
}
