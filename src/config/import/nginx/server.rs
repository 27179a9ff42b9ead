//! One `server` block: its `listen`s into the gateway's listeners (plain, TLS with the
//! server's certificate, or a redirect to https), its `server_name`s into route hosts (none for
//! nginx's default server), and its locations handed to [`super::location`].

use super::edge::{self, Context, Level};
use super::report::Verdict;
use super::routing::Variables;
use super::syntax::{Directive, Pos};
use super::table::other;
use super::walk::{Listener, Walk};
use crate::config::spec::{CertificateSpec, ListenSpec, ListenerSpec, TlsSpec};

pub(super) fn port_of(listen: &str) -> Option<u16> {
    let port = match listen.rfind(':') {
        Some(i) if !listen[i..].contains(']') => &listen[i + 1..],
        _ => listen,
    };
    port.parse().ok()
}

/// `listen`'s address as the gateway's `IP:port` (`80` → `0.0.0.0:80`, `*:80` too).
pub(super) fn listen_addr(text: &str) -> Option<String> {
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

pub(super) fn to_listen(l: &Listener) -> ListenSpec {
    if let Some(port) = l.redirect_to {
        return ListenSpec::Listener(ListenerSpec {
            addr: l.addr.clone(),
            redirect_https: Some(true),
            https_port: (port != 443).then_some(port),
            tls: None,
            http2: None,
            hsts: None,
            max_connections: None,
            h2c: None,
        });
    }
    if l.ssl && !l.certificates.is_empty() {
        return ListenSpec::Listener(ListenerSpec {
            addr: l.addr.clone(),
            redirect_https: None,
            https_port: None,
            tls: Some(TlsSpec {
                certificates: l.certificates.clone(),
                acme: Vec::new(),
                default_certificate: None,
                min_version: l.min_version.clone(),
            }),
            http2: (!l.http2).then_some(false),
            hsts: None,
            max_connections: None,
            h2c: None,
        });
    }
    if l.http2 && !l.ssl {
        // nginx's plaintext `http2` is HTTP/2 with prior knowledge beside HTTP/1.1.
        return ListenSpec::Listener(ListenerSpec {
            addr: l.addr.clone(),
            redirect_https: None,
            https_port: None,
            tls: None,
            http2: None,
            hsts: None,
            max_connections: None,
            h2c: Some(true),
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

    pub(super) fn server(
        &mut self,
        s: &Directive,
        http: &Level,
        vars: &mut Variables,
        default_of: &[String],
    ) {
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
                        Verdict::Translated,
                        true,
                        "a listener with h2c: true (HTTP/2 with prior knowledge beside HTTP/1.1)",
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
}
