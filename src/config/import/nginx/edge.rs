//! The directives nginx inherits from `http` to `server` to `location` and the gateway keys
//! they become: `gzip*` → `compress`, `allow`/`deny`/`auth_basic*` → `access`, `limit_req` →
//! `rate_limits`, `error_page` → `error_pages`, `proxy_*_timeout` → group timeouts, `proxy_set_header
//! Host` → `host_header`. A [`Level`] holds what one block says; a child block's value replaces
//! its parent's, as in nginx.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::report::{Report, Verdict};
use super::syntax::Directive;
use super::values::{duration, size};
use crate::config::spec::{
    AccessSpec, BasicAuthSpec, CompressSpec, LimitsSpec, RateLimitSpec, Scalar,
};

/// A `limit_req_zone`: what it counts by and its rate.
#[derive(Debug, Clone)]
pub struct Zone {
    pub key: Option<String>,
    pub rate: Option<String>,
}

/// What one block (and, merged, its parents) says about the inherited directives.
#[derive(Debug, Clone, Default)]
pub struct Level {
    pub gzip: Option<bool>,
    pub gzip_types: Option<Vec<String>>,
    pub gzip_level: Option<i64>,
    pub gzip_min: Option<String>,
    pub access_rules: Option<Vec<(bool, String)>>,
    pub auth: Option<Option<String>>,
    pub auth_file: Option<PathBuf>,
    pub limit_req: Option<Vec<RateLimitSpec>>,
    pub error_pages: Option<BTreeMap<u16, PathBuf>>,
    pub intercept: Option<bool>,
    pub connect: Option<String>,
    pub read: Option<String>,
    pub send: Option<String>,
    pub host_header: Option<String>,
    pub root: Option<String>,
    pub ssl_certificate: Option<PathBuf>,
    pub ssl_certificate_key: Option<PathBuf>,
    pub ssl_protocols: Option<Vec<String>>,
    /// `set $name value` with a value free of variables, for `proxy_pass` to read.
    pub vars: HashMap<String, String>,
}

macro_rules! inherit {
    ($child:ident, $parent:ident, $($field:ident),*) => {
        $( if $child.$field.is_none() { $child.$field = $parent.$field.clone(); } )*
    };
}

impl Level {
    /// This block's own values over its parent's.
    pub fn under(&self, parent: &Level) -> Level {
        let mut l = self.clone();
        inherit!(
            l,
            parent,
            gzip,
            gzip_types,
            gzip_level,
            gzip_min,
            access_rules,
            auth,
            auth_file,
            limit_req,
            error_pages,
            intercept,
            connect,
            read,
            send,
            host_header,
            root,
            ssl_certificate,
            ssl_certificate_key,
            ssl_protocols
        );
        for (k, v) in &parent.vars {
            l.vars.entry(k.clone()).or_insert_with(|| v.clone());
        }
        l
    }

    /// `compress` for this level: nginx's gzip, so only `gzip` is offered.
    pub fn compress(&self) -> Option<CompressSpec> {
        if self.gzip != Some(true) {
            return None;
        }
        let mut types = vec!["text/html".to_string()];
        for t in self.gzip_types.iter().flatten() {
            if !types.contains(t) && t != "*" {
                types.push(t.clone());
            }
        }
        Some(CompressSpec {
            algorithms: Some(vec!["gzip".into()]),
            level: self.gzip_level.map(Scalar::Number),
            min_size: Some(match &self.gzip_min {
                Some(m) => match m.parse::<i64>() {
                    Ok(n) => Scalar::Number(n),
                    Err(_) => Scalar::Text(m.to_ascii_lowercase()),
                },
                None => Scalar::Number(20),
            }),
            types: Some(types),
        })
    }

    /// `access` for this level; `None` when nothing is restricted.
    pub fn access(&self) -> Option<AccessSpec> {
        let rules = self.access_rules.clone().unwrap_or_default();
        let deny_all = rules.iter().any(|(allow, a)| !allow && a == "all");
        let pick = |allow: bool| -> Vec<String> {
            rules
                .iter()
                .filter(|(a, addr)| *a == allow && addr != "all")
                .map(|(_, addr)| addr.clone())
                .collect()
        };
        let allow = pick(true);
        let basic_auth = match (&self.auth, &self.auth_file) {
            (Some(Some(realm)), Some(file)) => Some(BasicAuthSpec {
                users_file: file.clone(),
                realm: Some(realm.clone()),
            }),
            _ => None,
        };
        let spec = AccessSpec {
            allow: (deny_all && !allow.is_empty()).then_some(allow),
            deny: pick(false),
            basic_auth,
        };
        (spec != AccessSpec::default()).then_some(spec)
    }

    pub fn rate_limits(&self) -> Vec<RateLimitSpec> {
        self.limit_req.clone().unwrap_or_default()
    }

    pub fn error_pages(&self) -> BTreeMap<u16, PathBuf> {
        self.error_pages.clone().unwrap_or_default()
    }
}

/// What reading an inherited directive needs.
pub struct Context<'a> {
    pub prefix: &'a Path,
    pub zones: &'a HashMap<String, Zone>,
    /// The locations of the server being read (for `error_page`'s file), if any.
    pub locations: &'a [&'a Directive],
    pub limits: &'a mut LimitsSpec,
    /// Whether this is the `http` level (gateway-wide limits are exact only there).
    pub top: bool,
}

/// A path nginx would read relative to its prefix, made absolute.
pub fn absolute(prefix: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        prefix.join(p)
    }
}

/// Reads `d` into `level` if it is one of the inherited directives (reporting it), and says
/// whether it was.
pub fn read(d: &Directive, level: &mut Level, ctx: &mut Context, report: &mut Report) -> bool {
    let arg = d.arg(0);
    let on = arg == "on";
    match d.name.as_str() {
        "gzip" => {
            level.gzip = Some(on);
            report.add(d, Verdict::Translated, false, if on { "compress: { algorithms: [gzip] }" } else { "no compress" });
        }
        "gzip_types" => {
            level.gzip_types = Some(d.args.clone());
            let v = if d.args.iter().any(|t| t == "*") { Verdict::Approximated } else { Verdict::Translated };
            report.add(d, v, false, "compress.types (with text/html, as nginx always compresses it; `*` is not a gateway type)");
        }
        "gzip_comp_level" => match arg.parse::<i64>() {
            Ok(n) if (1..=9).contains(&n) => {
                level.gzip_level = Some(n);
                report.add(d, Verdict::Translated, false, "compress.level");
            }
            _ => report.add(d, Verdict::NotTranslated, false, "not a level from 1 to 9"),
        },
        "gzip_min_length" => {
            level.gzip_min = Some(arg.to_string());
            report.add(d, Verdict::Translated, false, "compress.min_size");
        }
        "gzip_vary" => report.add(d, Verdict::DoneByGateway, false, "the gateway adds `Vary: Accept-Encoding` to what it compresses"),
        "gzip_proxied" => report.add(d, Verdict::Approximated, false, "the gateway compresses every proxied response of a listed type, whatever the request's `Via`"),
        "gzip_buffers" | "gzip_http_version" | "gzip_disable" => report.add(d, Verdict::DoneByGateway, false, "the gateway streams compression chunk by chunk"),
        "allow" | "deny" => {
            let rules = level.access_rules.get_or_insert_with(Vec::new);
            let allow = d.name == "allow";
            // nginx stops at the first rule that matches; the gateway checks every deny
            // before any allow. They agree unless a specific deny comes after an allow.
            let after_allow = !allow && arg != "all" && rules.iter().any(|(a, _)| *a);
            rules.push((allow, arg.to_string()));
            if after_allow {
                report.add(d, Verdict::Approximated, true, "access.deny, checked before every allow (nginx: in order)");
            } else if allow && arg == "all" {
                report.add(d, Verdict::Translated, true, "anyone: no access.allow");
            } else {
                report.add(d, Verdict::Translated, true, if allow { "access.allow" } else if arg == "all" { "with allows: access.allow denies every other client" } else { "access.deny" });
            }
        }
        "auth_basic" => {
            level.auth = Some((arg != "off").then(|| arg.to_string()));
            report.add(d, Verdict::Translated, true, if arg == "off" { "no basic_auth" } else { "access.basic_auth.realm" });
        }
        "auth_basic_user_file" => {
            level.auth_file = Some(absolute(ctx.prefix, arg));
            report.add(d, Verdict::Translated, true, "access.basic_auth.users_file (entries must be bcrypt or SHA-crypt: the gateway refuses $apr1$ and plaintext)");
        }
        "limit_req" => {
            let mut zone = None;
            let mut burst = None;
            let mut nodelay = false;
            for a in &d.args {
                if let Some(z) = a.strip_prefix("zone=") {
                    zone = Some(z.to_string());
                } else if let Some(b) = a.strip_prefix("burst=") {
                    burst = b.parse::<i64>().ok();
                } else if a == "nodelay" {
                    nodelay = true;
                }
            }
            let found = zone.as_ref().and_then(|z| ctx.zones.get(z).map(|spec| (z, spec)));
            match found {
                Some((name, Zone { key: Some(key), rate: Some(rate) })) => {
                    level.limit_req.get_or_insert_with(Vec::new).push(RateLimitSpec {
                        name: super::values::token(name),
                        paths: Vec::new(),
                        key: key.clone(),
                        rate: rate.clone(),
                        burst,
                        shared: false,
                    });
                    let why = if nodelay {
                        "rate_limits (refused with 429, nginx's limit_req_status defaults to 503)"
                    } else {
                        "rate_limits, as with nodelay: requests over the rate are refused with 429, not delayed"
                    };
                    report.add(d, Verdict::Approximated, true, why);
                }
                _ => report.add(d, Verdict::NotTranslated, true, "its zone is unknown or counts by a key the gateway has no counterpart for"),
            }
        }
        "limit_req_status" | "limit_req_log_level" | "limit_req_dry_run" => report.add(d, Verdict::NotTranslated, false, "the gateway refuses with 429 and logs refusals itself"),
        "error_page" => read_error_page(d, level, ctx, report),
        "proxy_intercept_errors" => {
            level.intercept = Some(on);
            report.add(d, Verdict::Translated, false, "intercept_errors");
        }
        "proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout" => match duration(arg) {
            Some(t) => {
                let (slot, key) = match d.name.as_str() {
                    "proxy_connect_timeout" => (&mut level.connect, "connect"),
                    "proxy_read_timeout" => (&mut level.read, "read"),
                    _ => (&mut level.send, "write"),
                };
                *slot = Some(t);
                report.add(d, Verdict::Translated, false, format!("timeouts.{key} of the groups this block proxies to"));
            }
            None => report.add(d, Verdict::NotTranslated, false, "not a duration"),
        },
        "root" => {
            level.root = Some(arg.to_string());
            report.add(d, Verdict::NotTranslated, false, "the gateway serves no files (only error pages named by error_page)");
        }
        "ssl_certificate" => {
            level.ssl_certificate = Some(absolute(ctx.prefix, arg));
            report.add(d, Verdict::Translated, false, "listen[].tls.certificates[].cert");
        }
        "ssl_certificate_key" => {
            level.ssl_certificate_key = Some(absolute(ctx.prefix, arg));
            report.add(d, Verdict::Translated, false, "listen[].tls.certificates[].key");
        }
        "ssl_protocols" => {
            level.ssl_protocols = Some(d.args.clone());
            let old = d.args.iter().any(|p| p == "TLSv1" || p == "TLSv1.1" || p == "SSLv3");
            if old {
                report.add(d, Verdict::Approximated, false, "tls.min_version: \"1.2\" (the gateway offers nothing older)");
            } else {
                report.add(d, Verdict::Translated, false, "tls.min_version");
            }
        }
        "proxy_set_header" => read_proxy_header(d, level, report),
        "client_max_body_size" => match size(arg) {
            Some(0) => report.add(d, Verdict::NotTranslated, false, "0 (no limit): leave limits.max_body_bytes at its default or set it high"),
            Some(n) => {
                ctx.limits.max_body_bytes = Some(n);
                gateway_wide(d, ctx.top, "limits.max_body_bytes", report);
            }
            None => report.add(d, Verdict::NotTranslated, false, "not a size"),
        },
        "client_header_timeout" | "client_body_timeout" | "send_timeout" | "keepalive_timeout" => match duration(arg) {
            Some(t) => {
                let key = match d.name.as_str() {
                    "client_header_timeout" => { ctx.limits.header_timeout = Some(t); "limits.header_timeout" }
                    "client_body_timeout" => { ctx.limits.body_timeout = Some(t); "limits.body_timeout (the whole body; nginx: between two reads)" }
                    "send_timeout" => { ctx.limits.send_timeout = Some(t); "limits.send_timeout" }
                    _ => { ctx.limits.keepalive_timeout = Some(t); "limits.keepalive_timeout" }
                };
                let approximate = d.name == "client_body_timeout";
                if approximate {
                    report.add(d, Verdict::Approximated, false, key);
                } else {
                    gateway_wide(d, ctx.top, key, report);
                }
            }
            None => report.add(d, Verdict::NotTranslated, false, "not a duration"),
        },
        "set" if d.args.len() == 2 && d.arg(0).starts_with('$') => {
            let name = d.arg(0).trim_start_matches('$').to_string();
            level.vars.insert(name, d.arg(1).to_string());
            report.add(d, Verdict::Translated, true, "read where proxy_pass names the variable");
        }
        _ => return false,
    }
    true
}

fn gateway_wide(d: &Directive, top: bool, key: &str, report: &mut Report) {
    if top {
        report.add(d, Verdict::Translated, false, key.to_string());
    } else {
        report.add(
            d,
            Verdict::Approximated,
            false,
            format!("{key}, for the whole gateway (nginx: this block only)"),
        );
    }
}

fn read_proxy_header(d: &Directive, level: &mut Level, report: &mut Report) {
    let (name, value) = (d.arg(0).to_ascii_lowercase(), d.arg(1));
    let done = |why: &str, report: &mut Report| {
        report.add(d, Verdict::DoneByGateway, false, why.to_string())
    };
    match (name.as_str(), value) {
        ("host", "$host" | "$http_host") => {
            level.host_header = Some("client".into());
            done(
                "the gateway sends the client's Host (host_header: client, the default)",
                report,
            )
        }
        ("host", "$proxy_host") => {
            level.host_header = Some("server".into());
            report.add(
                d,
                Verdict::Translated,
                false,
                "host_header: server on the groups this block proxies to",
            );
        }
        ("host", v) if !v.contains('$') => {
            level.host_header = Some(v.to_string());
            report.add(
                d,
                Verdict::Translated,
                false,
                "host_header on the groups this block proxies to",
            );
        }
        ("x-real-ip", "$remote_addr") => done(
            "the gateway sets X-Real-IP (the client address through trusted_proxies)",
            report,
        ),
        ("x-forwarded-for", "$proxy_add_x_forwarded_for" | "$remote_addr") => {
            done("the gateway appends the client to X-Forwarded-For", report)
        }
        ("x-forwarded-proto" | "x-forwarded-scheme", "$scheme") => {
            done("the gateway sets X-Forwarded-Proto", report)
        }
        ("x-forwarded-host", "$host" | "$http_host") => {
            done("the gateway sets X-Forwarded-Host", report)
        }
        ("x-forwarded-port", _) => done("the gateway forwards what the client sent", report),
        ("upgrade", "$http_upgrade") | ("connection", _) => done(
            "the gateway passes websocket upgrades through itself",
            report,
        ),
        _ => report.add(
            d,
            Verdict::NotTranslated,
            false,
            "the gateway sets no extra upstream headers",
        ),
    }
}

fn read_error_page(d: &Directive, level: &mut Level, ctx: &mut Context, report: &mut Report) {
    let Some(uri) = d.args.last() else {
        return report.add(d, Verdict::NotTranslated, false, "no page");
    };
    let codes: Vec<u16> = d.args[..d.args.len() - 1]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    if codes.len() + 1 != d.args.len() || !uri.starts_with('/') {
        return report.add(d, Verdict::NotTranslated, false, "only `error_page CODE… /file` has a counterpart (no `=code`, named locations or redirects)");
    }
    // The file nginx would send: the `root` (or `alias`) of the location that serves the URI,
    // else this level's root.
    let mut file = None;
    for loc in ctx.locations {
        let exact = loc.arg(0) == "=" && loc.arg(1) == uri;
        let prefix = loc.args.len() == 1 && uri.starts_with(loc.arg(0));
        if !(exact || prefix) {
            continue;
        }
        for inner in loc.children() {
            match inner.name.as_str() {
                "root" => {
                    file =
                        Some(absolute(ctx.prefix, inner.arg(0)).join(uri.trim_start_matches('/')))
                }
                "alias" => file = Some(absolute(ctx.prefix, inner.arg(0))),
                _ => {}
            }
        }
        if file.is_some() && exact {
            break;
        }
    }
    let file = file.or_else(|| {
        level
            .root
            .as_ref()
            .map(|r| absolute(ctx.prefix, r).join(uri.trim_start_matches('/')))
    });
    let Some(file) = file else {
        return report.add(
            d,
            Verdict::NotTranslated,
            false,
            "no root or alias says which file the page is",
        );
    };
    let pages = level.error_pages.get_or_insert_with(BTreeMap::new);
    for c in codes.iter().filter(|c| (400..=599).contains(*c)) {
        pages.insert(*c, file.clone());
    }
    report.add(
        d,
        Verdict::Translated,
        false,
        format!("error_pages → {}", file.display()),
    );
}
