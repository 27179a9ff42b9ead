//! The walk over an nginx tree that builds the gateway spec: `http`/top level (upstreams, maps,
//! zones, inherited settings), each `server` (listeners, hosts, redirects) and each `location`
//! with `proxy_pass` (a route). Every directive read gets a report entry.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::edge::{self, Context, Level, Zone};
use super::report::{Report, Verdict};
use super::routing::{self, Target, Variables};
use super::syntax::{Directive, Pos};
use super::upstream;
use super::values::token;
use crate::config::spec::{
    CertificateSpec, GatewaySpec, GroupSpec, LimitsSpec, ListenSpec, ListenerSpec, RouteSpec,
    ServerSpec, TimeoutsSpec, TlsSpec, UpstreamTlsSpec,
};

/// Where each part of the written spec came from, for the comments in the file.
#[derive(Debug, Default)]
pub struct Origins {
    pub listen: Vec<Vec<Pos>>,
    pub groups: BTreeMap<String, Vec<Pos>>,
    /// Each route's location, and a note for the comment (nginx's default server).
    pub routes: Vec<(Pos, Option<String>)>,
    /// Gateway-wide keys (`limits`, `compress`, …) and the directives they came from.
    pub keys: BTreeMap<&'static str, Vec<Pos>>,
}

pub struct Translation {
    pub spec: GatewaySpec,
    pub origins: Origins,
    pub report: Report,
}

/// A listener being gathered from the servers that listen on its address.
struct Listener {
    addr: String,
    ssl: bool,
    http2: bool,
    certificates: Vec<CertificateSpec>,
    min_version: Option<String>,
    redirect_to: Option<u16>,
    proxies: bool,
    at: Vec<Pos>,
}

/// Directives with a fixed verdict wherever they appear.
fn fixed(name: &str) -> Option<(Verdict, bool, &'static str)> {
    use Verdict::*;
    Some(match name {
        "user" | "worker_processes" | "pid" | "daemon" | "master_process" | "pcre_jit" | "env"
        | "thread_pool" | "lock_file" | "worker_cpu_affinity" | "worker_priority" => {
            (NotTranslated, false, "a process setting: Pingora's top-level keys (threads, pid_file, …) say this")
        }
        "load_module" => (DoneByGateway, false, "modules: the gateway's features are built in"),
        "worker_rlimit_nofile" => (DoneByGateway, false, "the gateway raises its open-files limit itself"),
        "events" => (DoneByGateway, false, "connection handling is Pingora's own"),
        "error_log" => (NotTranslated, false, "the gateway logs to standard error (RUST_LOG sets the level)"),
        "access_log" | "log_format" => (NotTranslated, false, "the gateway writes JSON access-log lines: set gateway.access_log.path"),
        "include" => (Translated, false, "read in place"),
        "types" | "default_type" | "charset" | "index" | "autoindex" | "try_files" | "alias" | "expires"
        | "open_file_cache" | "open_file_cache_valid" | "etag" => (NotTranslated, false, "the gateway serves no files"),
        "sendfile" | "tcp_nopush" | "tcp_nodelay" | "reset_timedout_connection" | "server_tokens"
        | "server_names_hash_bucket_size" | "server_names_hash_max_size" | "types_hash_max_size"
        | "types_hash_bucket_size" | "variables_hash_max_size" | "variables_hash_bucket_size"
        | "map_hash_bucket_size" | "map_hash_max_size" | "proxy_headers_hash_max_size"
        | "proxy_headers_hash_bucket_size" => (DoneByGateway, false, "tuning the gateway does itself"),
        "proxy_http_version" => (DoneByGateway, false, "the gateway speaks HTTP/1.1 to upstreams (with keep-alive)"),
        "proxy_buffering" | "proxy_buffers" | "proxy_buffer_size" | "proxy_busy_buffers_size"
        | "proxy_request_buffering" | "proxy_max_temp_file_size" | "client_body_buffer_size" => {
            (DoneByGateway, false, "the gateway streams bodies without buffering them")
        }
        "proxy_redirect" => (NotTranslated, false, "the gateway does not rewrite Location headers"),
        "ssl_session_cache" | "ssl_session_timeout" | "ssl_session_tickets" | "ssl_ciphers"
        | "ssl_prefer_server_ciphers" | "ssl_ecdh_curve" | "ssl_dhparam" | "ssl_conf_command"
        | "ssl_stapling" | "ssl_stapling_verify" | "ssl_trusted_certificate" => {
            (DoneByGateway, false, "rustls' session resumption and safe cipher suites, not configurable")
        }
        "http2" => (Translated, false, "listen[].http2"),
        "keepalive_requests" | "large_client_header_buffers" | "client_header_buffer_size" => {
            (NotTranslated, false, "the gateway's limits.max_header_bytes / max_headers cover head sizes (see docs/security.md)")
        }
        "real_ip_header" | "real_ip_recursive" => (DoneByGateway, false, "the gateway reads X-Forwarded-For from gateway.trusted_proxies"),
        "add_header" | "proxy_hide_header" | "proxy_pass_header" | "more_set_headers" => {
            (NotTranslated, false, "the gateway adds no configured response headers (hsts on TLS listeners only)")
        }
        "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_next_upstream_timeout" => {
            (Approximated, false, "the gateway tries the next server when a connection fails, not on error statuses")
        }
        "proxy_ssl_server_name" | "proxy_ssl_name" | "proxy_ssl_verify" | "proxy_ssl_trusted_certificate" => {
            (NotTranslated, false, "set the group's tls (sni, verify, ca) by hand")
        }
        "proxy_ignore_client_abort" | "client_body_temp_path" | "proxy_temp_path" => (DoneByGateway, false, "the gateway streams bodies and ends the upstream request with the client's"),
        "proxy_cache" | "proxy_cache_path" | "proxy_cache_valid" | "proxy_cache_key" | "proxy_cache_bypass"
        | "proxy_no_cache" | "proxy_cache_use_stale" | "proxy_cache_lock" => (NotTranslated, false, "the gateway has no cache"),
        "lua_package_path" | "lua_package_cpath" | "lua_shared_dict" | "lua_code_cache" | "init_by_lua_block"
        | "init_by_lua" | "init_by_lua_file" | "init_worker_by_lua_block" | "init_worker_by_lua"
        | "init_worker_by_lua_file" | "header_filter_by_lua_block" | "header_filter_by_lua"
        | "header_filter_by_lua_file" | "body_filter_by_lua_block" | "body_filter_by_lua"
        | "body_filter_by_lua_file" | "log_by_lua_block" | "log_by_lua" | "log_by_lua_file" => {
            (NotTranslated, false, "OpenResty code: no counterpart (the gateway runs no scripts)")
        }
        _ => return None,
    })
}

/// Whether `d` is OpenResty code that may decide where a request goes.
fn routing_lua(d: &Directive) -> bool {
    [
        "access_by_lua",
        "rewrite_by_lua",
        "balancer_by_lua",
        "content_by_lua",
        "set_by_lua",
    ]
    .iter()
    .any(|p| d.name.starts_with(p))
}

fn lua_entry(d: &Directive, report: &mut Report) {
    let code = d.raw.clone().unwrap_or_else(|| d.args.join(" "));
    let redis = code.contains("redis");
    let why = if redis {
        "OpenResty code looking the user up in Redis to pick an upstream: the gateway does this with a `users_store` rule and gateway.store (docs/redis-store.md)"
    } else {
        "OpenResty code: no counterpart (the gateway runs no scripts); write the decision as rules"
    };
    report.add(d, Verdict::NotTranslated, true, why);
}

struct Walk<'t> {
    prefix: &'t Path,
    report: Report,
    groups: BTreeMap<String, GroupSpec>,
    origins: Origins,
    /// nginx upstream name → the gateway group.
    upstreams: HashMap<String, String>,
    zones: HashMap<String, Zone>,
    listeners: Vec<Listener>,
    routes: Vec<RouteSpec>,
    limits: LimitsSpec,
    /// The group timeouts and host headers the routes ask of each group.
    group_settings: HashMap<String, Vec<(Level, Pos)>>,
    /// Whether a route without `hosts` (nginx's default server) has been written.
    catch_all_taken: bool,
    /// The server names of the default server, whose routes take every host.
    default_names: Vec<String>,
    https_port: Option<u16>,
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

/// A directive no other part reads.
fn other(d: &Directive, report: &mut Report) {
    if let Some((verdict, routing, why)) = fixed(&d.name) {
        report.add(d, verdict, routing, why);
    } else if routing_lua(d) {
        lua_entry(d, report);
    } else {
        let routing = matches!(
            d.name.as_str(),
            "return"
                | "rewrite"
                | "if"
                | "location"
                | "proxy_pass"
                | "grpc_pass"
                | "fastcgi_pass"
                | "uwsgi_pass"
        );
        report.add(
            d,
            Verdict::NotTranslated,
            routing,
            "no counterpart in the gateway",
        );
    }
}

fn port_of(listen: &str) -> Option<u16> {
    let port = match listen.rfind(':') {
        Some(i) if !listen[i..].contains(']') => &listen[i + 1..],
        _ => listen,
    };
    port.parse().ok()
}

/// `listen`'s address as the gateway's `IP:port` (`80` → `0.0.0.0:80`, `*:80` too).
fn listen_addr(text: &str) -> Option<String> {
    if text.starts_with("unix:") {
        return None;
    }
    if let Ok(port) = text.parse::<u16>() {
        return Some(format!("0.0.0.0:{port}"));
    }
    let (host, port) = match text.rfind(':') {
        Some(i) if !text[i..].contains(']') => (&text[..i], text[i + 1..].parse::<u16>().ok()?),
        _ => (text, 80),
    };
    let host = match host {
        "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    Some(format!("{host}:{port}"))
}

fn to_listen(l: &Listener) -> ListenSpec {
    if let Some(port) = l.redirect_to {
        return ListenSpec::Listener(ListenerSpec {
            addr: l.addr.clone(),
            redirect_https: Some(true),
            https_port: (port != 443).then_some(port),
            tls: None,
            http2: None,
            hsts: None,
            max_connections: None,
        });
    }
    if l.ssl && !l.certificates.is_empty() {
        return ListenSpec::Listener(ListenerSpec {
            addr: l.addr.clone(),
            redirect_https: None,
            https_port: None,
            tls: Some(TlsSpec {
                certificates: l.certificates.clone(),
                default_certificate: None,
                min_version: l.min_version.clone(),
            }),
            http2: (!l.http2).then_some(false),
            hsts: None,
            max_connections: None,
        });
    }
    ListenSpec::Addr(l.addr.clone())
}

/// Whether `d` is `return 301 https://$host$request_uri` (or another redirect to https of the
/// same target).
fn https_redirect(d: &Directive) -> bool {
    d.name == "return"
        && matches!(d.arg(0), "301" | "302" | "307" | "308")
        && matches!(
            d.arg(1),
            "https://$host$request_uri"
                | "https://$server_name$request_uri"
                | "https://$http_host$request_uri"
        )
}

impl Walk<'_> {
    fn listener(&mut self, addr: &str) -> &mut Listener {
        if let Some(i) = self.listeners.iter().position(|l| l.addr == addr) {
            return &mut self.listeners[i];
        }
        self.listeners.push(Listener {
            addr: addr.to_string(),
            ssl: false,
            http2: false,
            certificates: Vec::new(),
            min_version: None,
            redirect_to: None,
            proxies: false,
            at: Vec::new(),
        });
        self.listeners.last_mut().expect("just pushed")
    }

    fn server(&mut self, s: &Directive, http: &Level, vars: &mut Variables, default_of: &[String]) {
        self.report
            .add(s, Verdict::Translated, true, "its listeners and routes");
        let locations: Vec<&Directive> = s
            .children()
            .iter()
            .filter(|d| d.name == "location")
            .collect();
        let mut level = Level::default();
        let zones = self.zones.clone();
        let mut ctx = Context {
            prefix: self.prefix,
            zones: &zones,
            locations: &locations,
            limits: &mut self.limits,
            top: false,
        };
        let mut listens = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut redirect_all = false;
        let mut redirect_plain = false;
        let mut http2 = false;
        let mut server_ifs = Vec::new();
        for d in s.children() {
            match d.name.as_str() {
                "listen" => listens.push(d),
                "server_name" => names.extend(d.args.iter().cloned()),
                "location" => {}
                "return" if https_redirect(d) => redirect_all = true,
                "if" if d.args.join(" ").replace(['"', ' '], "") == "($scheme=http)"
                    && d.children().len() == 1
                    && https_redirect(&d.children()[0]) =>
                {
                    redirect_plain = true;
                    server_ifs.push(d);
                }
                "http2" => {
                    http2 = d.arg(0) == "on";
                    self.report
                        .add(d, Verdict::Translated, false, "listen[].http2");
                }
                _ => {
                    if !edge::read(d, &mut level, &mut ctx, &mut self.report) {
                        other(d, &mut self.report);
                    }
                }
            }
        }
        let level = level.under(http);
        if listens.is_empty() {
            self.report.add(
                s,
                Verdict::Translated,
                true,
                "no listen: nginx's default, port 80",
            );
        }
        // Hosts.
        let mut hosts = Vec::new();
        for n in &names {
            if n.is_empty() || n == "_" {
                continue;
            } else if let Some(rest) = n.strip_prefix('.') {
                hosts.push(rest.to_string());
                hosts.push(format!("*.{rest}"));
            } else if n.starts_with('~') || n.ends_with(".*") || n.contains('$') {
                self.report.add(s, Verdict::NotTranslated, true, format!("server_name {n}: regular expressions and trailing wildcards have no counterpart"));
            } else {
                hosts.push(n.to_ascii_lowercase());
            }
        }
        for d in s.children().iter().filter(|d| d.name == "server_name") {
            self.report
                .add(d, Verdict::Translated, true, "the routes' hosts");
        }
        // Listeners.
        let mut default_here = false;
        let mut plain_ports = Vec::new();
        let listen_items: Vec<(String, bool, bool, bool, Pos)> = if listens.is_empty() {
            vec![("0.0.0.0:80".into(), false, false, false, s.at.clone())]
        } else {
            listens
                .iter()
                .filter_map(|l| {
                    let Some(addr) = listen_addr(l.arg(0)) else {
                        self.report.add(
                            l,
                            Verdict::NotTranslated,
                            true,
                            "UNIX sockets: the gateway listens on TCP",
                        );
                        return None;
                    };
                    let ssl = l.args.iter().any(|a| a == "ssl");
                    let h2 = l.args.iter().any(|a| a == "http2");
                    let default = l
                        .args
                        .iter()
                        .any(|a| a == "default_server" || a == "default");
                    Some((addr, ssl, h2, default, l.at.clone()))
                })
                .collect()
        };
        for (i, (addr, ssl, h2, _, at)) in listen_items.iter().enumerate() {
            let d = listens.get(i).copied();
            let v6 = addr.starts_with("[::]:");
            if v6 {
                let v4 = format!("0.0.0.0:{}", &addr[5..]);
                if listen_items.iter().any(|(a, ..)| *a == v4) {
                    if let Some(d) = d {
                        self.report.add(d, Verdict::NotTranslated, false, format!("IPv6 beside {v4}: gateway listeners set no ipv6only, so list `[::]:{}` alone (it takes IPv4 too) if you want both", &addr[5..]));
                    }
                    continue;
                }
            }
            let redirect = redirect_all || (redirect_plain && !ssl);
            let cert = match (&level.ssl_certificate, &level.ssl_certificate_key) {
                (Some(c), Some(k)) if *ssl => Some(CertificateSpec {
                    cert: c.clone(),
                    key: k.clone(),
                }),
                _ => None,
            };
            let min_version = level.ssl_protocols.as_ref().map(|p| {
                if p.iter().any(|v| v != "TLSv1.3") {
                    "1.2".to_string()
                } else {
                    "1.3".to_string()
                }
            });
            let https_port = self.https_port.unwrap_or(443);
            let l = self.listener(addr);
            l.at.push(at.clone());
            l.ssl |= *ssl;
            l.http2 |= *h2 || http2;
            if let Some(c) = cert {
                if !l.certificates.contains(&c) {
                    l.certificates.push(c);
                }
            }
            if min_version.is_some()
                && (l.min_version.is_none() || min_version.as_deref() == Some("1.2"))
            {
                l.min_version = min_version;
            }
            let conflict = if redirect {
                if l.proxies {
                    true
                } else {
                    l.redirect_to = Some(https_port);
                    false
                }
            } else {
                l.proxies = true;
                let was = l.redirect_to.take().is_some();
                if was {
                    l.redirect_to = None;
                }
                was
            };
            if !redirect {
                plain_ports.push(addr.clone());
                default_here |= default_of.contains(addr);
            }
            if let Some(d) = d {
                if conflict {
                    self.report.add(d, Verdict::NotTranslated, true, "one server redirects to https here and another proxies: a gateway listener does one or the other");
                } else if *ssl && level.ssl_certificate.is_none() {
                    self.report.add(
                        d,
                        Verdict::NotTranslated,
                        true,
                        "ssl without an ssl_certificate",
                    );
                } else if redirect {
                    self.report.add(d, Verdict::Approximated, true, format!("a redirect_https listener to port {https_port} (308, keeping the method; nginx: the return's status)"));
                } else if !ssl && (*h2 || http2) {
                    self.report.add(
                        d,
                        Verdict::Approximated,
                        true,
                        "plaintext HTTP/1.1 (the gateway offers HTTP/2 over TLS only)",
                    );
                } else {
                    self.report.add(
                        d,
                        Verdict::Translated,
                        true,
                        if *ssl { "a TLS listener" } else { "a listener" },
                    );
                }
            }
        }
        for d in s
            .children()
            .iter()
            .filter(|d| d.name == "return" && https_redirect(d))
        {
            self.report.add(
                d,
                Verdict::Approximated,
                true,
                "the listener redirects every request to https (308)",
            );
        }
        for d in &server_ifs {
            self.report.add(
                d,
                Verdict::Approximated,
                true,
                "the plaintext listeners redirect every request to https (308)",
            );
            self.report.add(
                &d.children()[0],
                Verdict::Approximated,
                true,
                "the redirect_https listener",
            );
        }
        if plain_ports.is_empty() {
            for l in &locations {
                self.report.add(
                    l,
                    Verdict::DoneByGateway,
                    false,
                    "this server only redirects to https",
                );
            }
            return;
        }
        // nginx sends a request whose Host no server names to the port's default server: the
        // first default server becomes the routes without hosts.
        let route_hosts = if default_here && !self.catch_all_taken {
            self.catch_all_taken = true;
            self.default_names = hosts.clone();
            Vec::new()
        } else {
            hosts.clone()
        };
        let error_uris: Vec<String> = s
            .children()
            .iter()
            .filter(|d| d.name == "error_page")
            .filter_map(|d| d.args.last().cloned())
            .collect();
        let server_name = hosts.first().cloned().unwrap_or_else(|| "default".into());
        for loc in &locations {
            self.location(
                loc,
                &level,
                http,
                vars,
                &route_hosts,
                &server_name,
                &error_uris,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn location(
        &mut self,
        loc: &Directive,
        parent: &Level,
        http: &Level,
        vars: &mut Variables,
        hosts: &[String],
        server_name: &str,
        error_uris: &[String],
    ) {
        let (modifier, path) = match loc.args.as_slice() {
            [p] => ("", p.as_str()),
            [m, p] => (m.as_str(), p.as_str()),
            _ => ("?", ""),
        };
        let mut level = Level::default();
        let zones = self.zones.clone();
        let mut ctx = Context {
            prefix: self.prefix,
            zones: &zones,
            locations: &[],
            limits: &mut self.limits,
            top: false,
        };
        let mut pass = None;
        let mut ifs = Vec::new();
        let mut nested = Vec::new();
        let mut lua = false;
        for d in loc.children() {
            match d.name.as_str() {
                "proxy_pass" => pass = Some(d),
                "if" => ifs.push(d),
                "location" => nested.push(d),
                n if routing_lua(d) && n != "content_by_lua_block" => {
                    lua = true;
                    lua_entry(d, &mut self.report);
                }
                _ => {
                    if !edge::read(d, &mut level, &mut ctx, &mut self.report) {
                        other(d, &mut self.report);
                    }
                }
            }
        }
        let level = level.under(parent);
        for n in nested {
            self.location(n, &level, http, vars, hosts, server_name, error_uris);
        }
        let Some(pass) = pass else {
            if modifier == "=" && error_uris.iter().any(|u| u == path) {
                self.report
                    .add(loc, Verdict::Translated, false, "the page of error_pages");
            } else {
                self.report.add(
                    loc,
                    Verdict::NotTranslated,
                    true,
                    "proxies nothing (files, returns and scripts have no counterpart)",
                );
            }
            return;
        };
        let approx_path = match modifier {
            "" | "^~" => None,
            "=" => Some("an exact location, written as a prefix: it also matches longer paths"),
            _ => {
                self.report.add(loc, Verdict::NotTranslated, true, "regular-expression locations have no counterpart (a route matches path prefixes)");
                self.report.add(
                    pass,
                    Verdict::NotTranslated,
                    true,
                    "its location is not translated",
                );
                return;
            }
        };
        // proxy_pass's URL: variables set to plain text are read in.
        // (not those an `if` may change: they decide the routing).
        let mut fixed_vars = level.vars.clone();
        for d in ifs.iter().flat_map(|i| i.children()) {
            if d.name == "set" {
                if let Some(v) = routing::variable(d.arg(0)) {
                    fixed_vars.remove(v);
                }
            }
        }
        let url = expand_vars(pass.arg(0), &fixed_vars);
        let Some((target, uri, tls)) = self.proxy_url(&url, &pass.at) else {
            self.report.add(
                loc,
                Verdict::NotTranslated,
                true,
                "its proxy_pass is not translated",
            );
            self.report.add(
                pass,
                Verdict::NotTranslated,
                true,
                "only http:// and https:// to an upstream, an address or a variable are read",
            );
            return;
        };
        let (strip, strip_note) = match uri.as_deref() {
            None => (false, None),
            Some(u) if u == path => (false, None),
            Some("/") if path.ends_with('/') => (true, None),
            Some("/") => (true, Some("strip_prefix: nginx keeps the slash after the prefix (/api/x → //x), the gateway sends /x")),
            Some(u) => {
                self.report.add(pass, Verdict::NotTranslated, true, format!("replaces the prefix with {u}: a route only strips it"));
                self.report.add(loc, Verdict::NotTranslated, true, "its proxy_pass is not translated");
                return;
            }
        };
        let sets = level.vars.clone();
        let upstreams = self.upstreams.clone();
        let group_of = |name: &str| upstreams.get(name).cloned();
        let mut extra_groups = Vec::new();
        let proxy_url_of = |d: &Directive| -> Option<Target> {
            let url = expand_vars(d.arg(0), &sets);
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))?;
            let host = rest.split('/').next().unwrap_or(rest);
            match routing::variable(host) {
                Some(v) => Some(Target::Variable(v.to_string())),
                None => Some(Target::Group(host.to_string())),
            }
        };
        let target = match target {
            Target::Group(g) => Target::Group(g),
            Target::Variable(v) => Target::Variable(v),
        };
        let routing = routing::routing_block(
            target,
            &ifs,
            &sets,
            vars,
            &group_of,
            &proxy_url_of,
            &mut self.report,
        );
        let routing = match routing {
            Ok(r) => r,
            Err(why) => {
                self.report.add(pass, Verdict::NotTranslated, true, why);
                self.report.add(
                    loc,
                    Verdict::NotTranslated,
                    true,
                    "its proxy_pass is not translated",
                );
                return;
            }
        };
        extra_groups.push(routing.default.clone());
        for r in &routing.rules {
            match &r.kind {
                crate::config::spec::RuleKindSpec::Users { group, .. }
                | crate::config::spec::RuleKindSpec::Percent { group, .. } => {
                    extra_groups.push(group.clone())
                }
                _ => {}
            }
        }
        if tls {
            for g in &extra_groups {
                if let Some(group) = self.groups.get_mut(g) {
                    group.tls.get_or_insert(UpstreamTlsSpec {
                        sni: None,
                        verify: Some(false),
                        ca: None,
                        client_cert: None,
                        client_key: None,
                        http2: None,
                    });
                }
            }
        }
        for g in &extra_groups {
            self.group_settings
                .entry(g.clone())
                .or_default()
                .push((level.clone(), pass.at.clone()));
        }
        let note = match (approx_path, strip_note) {
            (Some(a), _) | (None, Some(a)) => Some(a),
            _ => None,
        };
        match note {
            Some(n) => self.report.add(pass, Verdict::Approximated, true, n),
            None => self.report.add(
                pass,
                Verdict::Translated,
                true,
                format!("the route's routing (default {})", routing.default),
            ),
        }
        let _ = lua;
        let mut route = RouteSpec {
            name: String::new(),
            hosts: hosts.to_vec(),
            paths: if path == "/" {
                Vec::new()
            } else {
                vec![path.to_string()]
            },
            strip_prefix: strip,
            access: None,
            rate_limits: None,
            compress: None,
            error_pages: None,
            intercept_errors: None,
            routing,
        };
        // Keys that differ from the gateway-wide ones are the route's own.
        if level.access() != http.access() {
            route.access = Some(level.access().unwrap_or_default());
        }
        if level.rate_limits() != http.rate_limits() {
            route.rate_limits = Some(level.rate_limits());
        }
        if level.compress() != http.compress() {
            route.compress = Some(
                level
                    .compress()
                    .unwrap_or(crate::config::spec::CompressSpec {
                        algorithms: Some(Vec::new()),
                        level: None,
                        min_size: None,
                        types: None,
                    }),
            );
        }
        if level.error_pages() != http.error_pages() {
            route.error_pages = Some(level.error_pages());
        }
        if level.intercept != http.intercept {
            route.intercept_errors = level.intercept;
        }
        // The same route from another server block (a host served on 80 and 443).
        if let Some(same) = self
            .routes
            .iter()
            .find(|r| r.hosts == route.hosts && r.paths == route.paths)
        {
            let same_route = RouteSpec {
                name: same.name.clone(),
                ..route.clone()
            } == *same;
            let why = if same_route {
                self.report.add(
                    loc,
                    Verdict::Translated,
                    true,
                    format!("the same as route {}", same.name),
                );
                return;
            } else {
                format!("another server serves the same host and path differently (route {}): the gateway's routes are not per listener", same.name)
            };
            self.report.add(loc, Verdict::NotTranslated, true, why);
            return;
        }
        let mut name = token(&format!("{server_name}-{}", path.trim_matches('/')));
        let base = name.clone();
        let mut n = 2;
        while self.routes.iter().any(|r| r.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        route.name = name.clone();
        self.report
            .add(loc, Verdict::Translated, true, format!("route {name}"));
        let note = (hosts.is_empty() && !self.default_names.is_empty()).then(|| {
            format!(
                "the default server ({}): every host no other route names",
                self.default_names.join(" ")
            )
        });
        self.origins.routes.push((loc.at.clone(), note));
        self.routes.push(route);
    }

    /// `proxy_pass`'s URL: the target, its URI part (`None`: the client's path as it is) and
    /// whether it is https. An address no upstream names becomes a group of its own.
    fn proxy_url(&mut self, url: &str, at: &Pos) -> Option<(Target, Option<String>, bool)> {
        let (rest, tls) = match url.strip_prefix("http://") {
            Some(r) => (r, false),
            None => (url.strip_prefix("https://")?, true),
        };
        let rest = rest.strip_suffix("$request_uri").unwrap_or(rest);
        let (host, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        if let Some(v) = routing::variable(host) {
            return Some((Target::Variable(v.to_string()), uri, tls));
        }
        if host.contains('$') {
            return None;
        }
        if let Some(g) = self.upstreams.get(host) {
            return Some((Target::Group(host.to_string()), uri, tls).map_group(g));
        }
        let addr = upstream::server_addr(host, if tls { 443 } else { 80 })?;
        let name = token(&addr);
        self.origins
            .groups
            .entry(name.clone())
            .or_default()
            .push(at.clone());
        self.upstreams.insert(host.to_string(), name.clone());
        self.groups
            .entry(name.clone())
            .or_insert_with(|| GroupSpec {
                servers: vec![ServerSpec::Addr(addr)],
                selection: None,
                health_check: None,
                timeouts: None,
                fallback: None,
                host_header: None,
                tls: None,
                resolver: None,
                resolve_interval: None,
            });
        Some((Target::Group(name), uri, tls))
    }

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

trait MapGroup {
    fn map_group(self, group: &str) -> Self;
}

impl MapGroup for (Target, Option<String>, bool) {
    fn map_group(self, group: &str) -> Self {
        (Target::Group(group.to_string()), self.1, self.2)
    }
}

/// `$name` / `${name}` replaced by the `set` values known (`$request_uri` and unknown ones
/// stay).
fn expand_vars(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            (&inner[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match vars.get(name).filter(|v| !v.contains('$')) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &rest[i + 1 + len..];
    }
    out.push_str(rest);
    out
}
