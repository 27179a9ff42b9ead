//! The walk over an nginx tree that builds the gateway spec: `http`/top level (upstreams, maps,
//! zones, inherited settings), each `server` (listeners, hosts, redirects) and each `location`
//! with `proxy_pass` (a route). Every directive read gets a report entry.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::edge::{self, Context, Level, Zone};
use super::report::{Report, Verdict};
use super::routing::{self, Variables};
use super::server::{listen_addr, port_of, to_listen};
use super::syntax::Directive;
use super::table::other;
use super::upstream;
pub use super::walk::Origins;
use super::walk::Walk;
use crate::config::spec::{GatewaySpec, LimitsSpec, ServerSpec, TimeoutsSpec};

pub struct Translation {
    pub spec: GatewaySpec,
    pub origins: Origins,
    pub report: Report,
}

/// Translates a parsed nginx tree (includes expanded). `prefix` is nginx's prefix: relative
/// paths (certificates, pages, htpasswd files) are made absolute against it.
pub fn translate(tree: &[Directive], prefix: &Path) -> Translation {
    let mut w = Walk {
        prefix,
        report: Report::default(),
        groups: BTreeMap::new(),
        origins: Origins::default(),
        upstreams: HashMap::new(),
        zones: HashMap::new(),
        listeners: Vec::new(),
        routes: Vec::new(),
        limits: LimitsSpec::default(),
        group_settings: HashMap::new(),
        catch_all_taken: false,
        default_names: Vec::new(),
        https_port: None,
    };
    // The top level reads as `http` too, so a conf.d fragment translates as nginx includes it.
    let mut flat: Vec<&Directive> = Vec::new();
    for d in tree {
        if d.name == "http" {
            w.report.add(d, Verdict::Translated, false, "its contents");
            flat.extend(d.children());
        } else {
            flat.push(d);
        }
    }
    let mut vars = Variables::default();
    let mut http = Level::default();
    let mut resolver: Option<&Directive> = None;
    let mut servers = Vec::new();
    for d in &flat {
        match d.name.as_str() {
            "upstream" => {
                if let Some(up) = upstream::translate(d, &mut w.report) {
                    let name = up.name.clone();
                    w.upstreams.insert(d.arg(0).to_string(), name.clone());
                    w.origins
                        .groups
                        .entry(name.clone())
                        .or_default()
                        .push(d.at.clone());
                    w.groups.insert(name, up.group);
                    if let Some((b, group)) = up.backup {
                        w.origins
                            .groups
                            .entry(b.clone())
                            .or_default()
                            .push(d.at.clone());
                        w.groups.insert(b, group);
                    }
                }
            }
            "map" => {
                if let Some(v) = routing::variable(d.arg(1)) {
                    vars.maps.insert(v.to_string(), d);
                }
            }
            "split_clients" => {
                if let Some(v) = routing::variable(d.arg(1)) {
                    vars.splits.insert(v.to_string(), d);
                }
            }
            "limit_req_zone" => {
                let key = match d.arg(0) {
                    "$binary_remote_addr" | "$remote_addr" => Some("client_ip".to_string()),
                    k => k
                        .strip_prefix("$http_")
                        .map(|h| format!("header:{}", h.replace('_', "-")))
                        .or_else(|| k.strip_prefix("$cookie_").map(|_| "user".to_string())),
                };
                let mut zone = None;
                let mut rate = None;
                for a in &d.args[1..] {
                    if let Some(z) = a.strip_prefix("zone=") {
                        zone = z.split(':').next().map(str::to_string);
                    } else if let Some(r) = a.strip_prefix("rate=") {
                        rate = super::values::rate(r);
                    }
                }
                let ok = key.is_some() && rate.is_some();
                if let Some(z) = zone {
                    w.zones.insert(z, Zone { key, rate });
                }
                if ok {
                    w.report.add(d, Verdict::Translated, false, "the rate and key of the rate_limits that name it (a cookie key: the route's user)");
                } else {
                    w.report.add(d, Verdict::NotTranslated, false, "its key or rate has no counterpart (keys: the client address, a header, the user cookie)");
                }
            }
            "resolver" => resolver = Some(d),
            "resolver_timeout" => w.report.add(
                d,
                Verdict::DoneByGateway,
                false,
                "lookups are bounded by the gateway",
            ),
            "server" => servers.push(*d),
            "set_real_ip_from" => {
                w.report
                    .add(d, Verdict::Translated, false, "gateway.trusted_proxies")
            }
            _ => {}
        }
    }
    let trusted: Vec<String> = flat
        .iter()
        .filter(|d| d.name == "set_real_ip_from")
        .map(|d| d.arg(0).to_string())
        .collect();
    let mut ctx = Context {
        prefix,
        zones: &w.zones.clone(),
        locations: &[],
        limits: &mut w.limits,
        top: true,
    };
    for d in &flat {
        if matches!(
            d.name.as_str(),
            "upstream"
                | "map"
                | "split_clients"
                | "limit_req_zone"
                | "resolver"
                | "resolver_timeout"
                | "server"
                | "set_real_ip_from"
        ) {
            continue;
        }
        if edge::read(d, &mut http, &mut ctx, &mut w.report) {
            w.origins
                .keys
                .entry(key_of(&d.name))
                .or_default()
                .push(d.at.clone());
            continue;
        }
        other(d, &mut w.report);
    }
    // The servers in order: an `https` port for redirects first.
    for s in &servers {
        for l in s.children().iter().filter(|l| l.name == "listen") {
            if l.args.iter().any(|a| a == "ssl") {
                w.https_port = w.https_port.or_else(|| port_of(l.arg(0)));
            }
        }
    }
    // Each address's default server: the one marked default_server, else the first.
    let mut defaults: Vec<(String, usize, bool)> = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let listens: Vec<&Directive> = s.children().iter().filter(|l| l.name == "listen").collect();
        let items: Vec<(String, bool)> = if listens.is_empty() {
            vec![("0.0.0.0:80".into(), false)]
        } else {
            listens
                .iter()
                .filter_map(|l| {
                    Some((
                        listen_addr(l.arg(0))?,
                        l.args
                            .iter()
                            .any(|a| a == "default_server" || a == "default"),
                    ))
                })
                .collect()
        };
        for (addr, explicit) in items {
            match defaults.iter_mut().find(|(a, ..)| *a == addr) {
                Some(entry) if explicit && !entry.2 => *entry = (addr, i, true),
                Some(_) => {}
                None => defaults.push((addr, i, explicit)),
            }
        }
    }
    for (i, s) in servers.iter().enumerate() {
        let default_of: Vec<String> = defaults
            .iter()
            .filter(|(_, j, _)| *j == i)
            .map(|(a, ..)| a.clone())
            .collect();
        w.server(s, &http, &mut vars, &default_of);
    }
    for (v, d) in vars.maps.iter().chain(vars.splits.iter()) {
        if d.arg(0) == "$http_upgrade" {
            w.report.add(
                d,
                Verdict::DoneByGateway,
                false,
                "the gateway passes websocket upgrades through itself",
            );
        } else if !vars.reported.contains(v) {
            w.report.add(
                d,
                Verdict::NotTranslated,
                false,
                "not used by a proxy_pass the importer read",
            );
        }
    }
    w.apply_group_settings();
    if let Some(r) = resolver {
        w.resolver(r);
    }
    let listen = w.listeners.iter().map(to_listen).collect();
    w.origins.listen = w.listeners.iter().map(|l| l.at.clone()).collect();
    let mut spec = GatewaySpec {
        listen,
        groups: w.groups,
        routing: None,
        routes: Some(w.routes),
        decision_header: None,
        demo_origins: Vec::new(),
        admin: None,
        metrics: None,
        access_log: None,
        limits: (w.limits != LimitsSpec::default()).then_some(w.limits),
        trusted_proxies: trusted,
        store: None,
        notify: Vec::new(),
        access: http.access(),
        rate_limits: http.rate_limits(),
        compress: http.compress(),
        error_pages: http.error_pages(),
        intercept_errors: http.intercept,
        acme: None,
    };
    if spec.routes.as_ref().is_some_and(Vec::is_empty) {
        spec.routes = None;
    }
    Translation {
        spec,
        origins: w.origins,
        report: w.report,
    }
}

/// The gateway key an inherited directive sets at the top level.
fn key_of(name: &str) -> &'static str {
    match name {
        n if n.starts_with("gzip") => "compress",
        "allow" | "deny" | "auth_basic" | "auth_basic_user_file" => "access",
        "limit_req" => "rate_limits",
        "error_page" => "error_pages",
        "proxy_intercept_errors" => "intercept_errors",
        "client_max_body_size"
        | "client_header_timeout"
        | "client_body_timeout"
        | "send_timeout"
        | "keepalive_timeout" => "limits",
        _ => "groups",
    }
}

impl Walk<'_> {
    /// Group timeouts and `host_header` from the blocks that proxy to each group; blocks that
    /// disagree keep the first and say so.
    fn apply_group_settings(&mut self) {
        let mut names: Vec<&String> = self.group_settings.keys().collect();
        names.sort();
        for name in names {
            let Some(group) = self.groups.get_mut(name) else {
                continue;
            };
            let levels = &self.group_settings[name];
            let (first, at) = &levels[0];
            let t = |l: &Level| {
                (
                    l.connect.clone(),
                    l.read.clone(),
                    l.send.clone(),
                    l.host_header.clone().filter(|h| h != "client"),
                )
            };
            if levels.iter().any(|(l, _)| t(l) != t(first)) {
                self.report.entries.push(super::report::Entry {
                    at: at.clone(),
                    directive: format!("(group {name})"),
                    verdict: Verdict::Approximated,
                    why: "locations proxying to this group set different timeouts or Host headers: the first is kept".into(),
                    routing: false,
                });
            }
            if first.connect.is_some() || first.read.is_some() || first.send.is_some() {
                let timeouts = group.timeouts.get_or_insert(TimeoutsSpec {
                    connect: None,
                    read: None,
                    write: None,
                    idle: None,
                });
                timeouts.connect = first.connect.clone();
                timeouts.read = first.read.clone();
                timeouts.write = first.send.clone();
                self.origins
                    .groups
                    .entry(name.clone())
                    .or_default()
                    .push(at.clone());
            }
            if let Some(h) = &first.host_header {
                if h != "client" {
                    group.host_header = Some(h.clone());
                }
            }
        }
    }

    fn resolver(&mut self, d: &Directive) {
        let addr = d.arg(0);
        let addr = if addr.contains(':') && !addr.starts_with('[') {
            addr.to_string()
        } else {
            format!("{addr}:53")
        };
        let valid = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("valid="))
            .and_then(super::values::duration);
        let mut named = 0;
        for (name, group) in self.groups.iter_mut() {
            let by_name = group.servers.iter().any(|s| {
                let a = match s {
                    ServerSpec::Addr(a) => a,
                    ServerSpec::Weighted(w) => &w.addr,
                };
                a.rsplit_once(':').is_some_and(|(h, _)| {
                    h.parse::<std::net::IpAddr>().is_err() && !h.starts_with('[')
                })
            });
            if by_name {
                group.resolver = Some(addr.clone());
                group.resolve_interval = valid.clone();
                self.origins
                    .groups
                    .entry(name.clone())
                    .or_default()
                    .push(d.at.clone());
                named += 1;
            }
        }
        if named > 0 {
            self.report.add(d, Verdict::Translated, false, "the resolver (and resolve_interval from valid=) of the groups with servers by name");
        } else {
            self.report.add(
                d,
                Verdict::DoneByGateway,
                false,
                "no server is named by a host name: nothing to resolve",
            );
        }
    }
}
