//! `upstream NAME { … }` → gateway groups: servers and weights, `backup` servers as a fallback
//! group, `max_fails` as the active check's `fall`, `keepalive_timeout` as `timeouts.idle`.

use super::report::{Report, Verdict};
use super::syntax::Directive;
use super::values::{duration, token};
use crate::config::spec::{
    GroupSpec, HealthCheckSpec, ProbeSpec, SelectionSpec, ServerSpec, TimeoutsSpec,
    WeightedServerSpec,
};

/// The groups one `upstream` block becomes: its own and, with `backup` servers, `NAME-backup`.
pub struct Upstream {
    pub name: String,
    pub group: GroupSpec,
    pub backup: Option<(String, GroupSpec)>,
}

/// `host:port` for a server address as nginx writes it (`host` alone is port 80); `None` for
/// a UNIX socket.
pub fn server_addr(text: &str, default_port: u16) -> Option<String> {
    if text.starts_with("unix:") {
        return None;
    }
    let has_port = match text.rfind(']') {
        Some(close) => text[close..].contains(':'),
        None => text.contains(':'),
    };
    Some(if has_port {
        text.to_string()
    } else {
        format!("{text}:{default_port}")
    })
}

pub fn translate(block: &Directive, report: &mut Report) -> Option<Upstream> {
    let name = token(block.arg(0));
    let mut servers = Vec::new();
    let mut backups = Vec::new();
    let mut fall: Option<usize> = None;
    let mut idle = None;
    let mut selection = None;
    for d in block.children() {
        match d.name.as_str() {
            "server" => {
                let Some(addr) = server_addr(d.arg(0), 80) else {
                    report.add(
                        d,
                        Verdict::NotTranslated,
                        true,
                        "UNIX sockets are not a gateway server address",
                    );
                    continue;
                };
                let mut weight = None;
                let mut backup = false;
                let mut notes = Vec::new();
                let mut verdict = Verdict::Translated;
                let mut down = false;
                for p in &d.args[1..] {
                    let (key, value) = p.split_once('=').unwrap_or((p.as_str(), ""));
                    match key {
                        "weight" => weight = value.parse::<usize>().ok(),
                        "max_fails" => {
                            let n = value.parse::<usize>().unwrap_or(1);
                            fall = Some(fall.unwrap_or(0).max(n));
                            verdict = Verdict::Approximated;
                            notes.push(format!("max_fails={n}: the gateway checks servers actively (TCP connect), `health_check.fall: {n}` stands in for nginx's passive count"));
                        }
                        "fail_timeout" => {
                            verdict = Verdict::Approximated;
                            notes.push("fail_timeout: no passive window; a down server is retried at each health check".into());
                        }
                        "backup" => backup = true,
                        "down" => down = true,
                        "resolve" => {
                            notes.push("resolve: names are looked up while the gateway runs".into())
                        }
                        _ => {
                            verdict = Verdict::Approximated;
                            notes.push(format!("{key}: no counterpart, left out"));
                        }
                    }
                }
                if down {
                    report.add(d, Verdict::Translated, true, "down: left out of the group");
                    continue;
                }
                let server = match weight {
                    Some(w) if w != 1 => ServerSpec::Weighted(WeightedServerSpec {
                        addr,
                        weight: Some(w),
                    }),
                    _ => ServerSpec::Addr(addr),
                };
                if backup {
                    verdict = Verdict::Approximated;
                    notes.push(format!("backup: in group {name}-backup, the fallback of {name}, served while no server of {name} passes its health check"));
                    backups.push(server);
                } else {
                    servers.push(server);
                }
                let why = if notes.is_empty() {
                    format!("a server of group {name}")
                } else {
                    notes.join("; ")
                };
                report.add(d, verdict, true, why);
            }
            "keepalive" => report.add(
                d,
                Verdict::DoneByGateway,
                false,
                "the gateway keeps a pool of idle upstream connections itself",
            ),
            "keepalive_timeout" => match duration(d.arg(0)) {
                Some(t) => {
                    idle = Some(t);
                    report.add(d, Verdict::Translated, false, "timeouts.idle");
                }
                None => report.add(d, Verdict::NotTranslated, false, "not a duration"),
            },
            "keepalive_requests" | "keepalive_time" | "zone" => report.add(
                d,
                Verdict::DoneByGateway,
                false,
                "pooled connections and shared state are the gateway's own",
            ),
            "ip_hash" | "hash" => {
                selection = Some(SelectionSpec::Consistent);
                report.add(d, Verdict::Approximated, true, "selection: consistent, hashed by the user id rather than the client address or key");
            }
            "least_conn" | "random" => report.add(
                d,
                Verdict::NotTranslated,
                false,
                "the gateway balances by weighted round robin or a consistent hash",
            ),
            _ => report.add(
                d,
                Verdict::NotTranslated,
                false,
                "no counterpart in a gateway group",
            ),
        }
    }
    if servers.is_empty() && backups.is_empty() {
        report.add(block, Verdict::NotTranslated, true, "no usable server");
        return None;
    }
    if servers.is_empty() {
        servers = std::mem::take(&mut backups);
    }
    let health_check = fall.map(|fall| HealthCheckSpec {
        probe: if fall == 0 {
            ProbeSpec::None
        } else {
            ProbeSpec::Tcp
        },
        path: None,
        host: None,
        expect_status: None,
        interval: None,
        timeout: None,
        rise: None,
        fall: (fall > 0).then_some(fall),
        service: None,
    });
    let group = |servers: Vec<ServerSpec>, fallback: Option<String>| GroupSpec {
        servers,
        selection,
        health_check: health_check.clone(),
        timeouts: idle.clone().map(|idle| TimeoutsSpec {
            connect: None,
            read: None,
            write: None,
            idle: Some(idle),
        }),
        fallback,
        host_header: None,
        tls: None,
        resolver: None,
        resolve_interval: None,
        protocol: None,
        max_streams_per_connection: None,
    };
    let backup_name = format!("{name}-backup");
    let backup = (!backups.is_empty()).then(|| (backup_name.clone(), group(backups, None)));
    report.add(block, Verdict::Translated, true, format!("group {name}"));
    Some(Upstream {
        group: group(servers, backup.as_ref().map(|_| backup_name)),
        name,
        backup,
    })
}
