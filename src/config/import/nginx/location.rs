//! One `location` with `proxy_pass`: a route — its path, `strip_prefix` from proxy_pass's URI
//! part, its routing block (the canary idioms, in [`super::routing`]) and the edge keys that
//! differ from the gateway-wide ones. An address no upstream names becomes a group.

use std::collections::HashMap;

use super::edge::{self, Context, Level};
use super::report::{Report, Verdict};
use super::routing::{self, Target, Variables};
use super::syntax::{Directive, Pos};
use super::table::{lua_entry, other, routing_lua};
use super::upstream;
use super::values::token;
use super::walk::Walk;
use crate::config::spec::{GroupSpec, RouteSpec, ServerSpec, UpstreamTlsSpec};

impl Walk<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn location(
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
        for d in loc.children() {
            match d.name.as_str() {
                "proxy_pass" => pass = Some(d),
                "if" => ifs.push(d),
                "location" => nested.push(d),
                n if routing_lua(d) && n != "content_by_lua_block" => {
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
        // The `if`s of a location that does not become a route are reported here (those of
        // a route, by its routing block).
        let ifs_not_read = |report: &mut Report| {
            for d in &ifs {
                report.add(
                    d,
                    Verdict::NotTranslated,
                    true,
                    "its location is not translated",
                );
            }
        };
        let Some(pass) = pass else {
            ifs_not_read(&mut self.report);
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
                ifs_not_read(&mut self.report);
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
            ifs_not_read(&mut self.report);
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
                ifs_not_read(&mut self.report);
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
                protocol: None,
                max_streams_per_connection: None,
            });
        Some((Target::Group(name), uri, tls))
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
