//! Validation of `gateway.groups`: servers, selection, health checks, timeouts and fallbacks.

use std::time::Duration;

use http::HeaderValue;

use super::parse::{parse_server, positive_duration, ServerAddr};
use super::spec::{GroupSpec, HealthCheckSpec, ProbeSpec, ProtocolSpec, SelectionSpec, ServerSpec};
use super::{
    key_error, KeyError, DEFAULT_HEALTH_FALL, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_RISE,
    DEFAULT_HEALTH_TIMEOUT,
};
use crate::routing::GroupId;
use crate::upstreams::{
    GroupConfig, HealthCheckConfig, HealthProbe, HostHeader, NamedServer, Protocol, ResolveConfig,
    Selection, ServerConfig, Timeouts, DEFAULT_MAX_STREAMS, DEFAULT_RESOLVE_INTERVAL,
};

pub(super) fn validate_group(
    name: &str,
    group: &GroupSpec,
    group_id: &dyn Fn(String, &str) -> Result<GroupId, KeyError>,
    base: &std::path::Path,
    now: i64,
) -> Result<GroupConfig, KeyError> {
    let key = format!("gateway.groups.{name}");
    if group.servers.is_empty() {
        return Err(key_error(
            format!("{key}.servers"),
            "needs at least one server".into(),
        ));
    }
    let mut servers = Vec::with_capacity(group.servers.len());
    let mut named = Vec::new();
    for (i, server) in group.servers.iter().enumerate() {
        let server_key = format!("{key}.servers[{i}]");
        let (addr, weight) = match server {
            ServerSpec::Addr(addr) => (addr, 1),
            ServerSpec::Weighted(s) => (&s.addr, s.weight.unwrap_or(1)),
        };
        if !(1..=1000).contains(&weight) {
            return Err(key_error(
                format!("{server_key}.weight"),
                format!("{weight} is not in 1..=1000"),
            ));
        }
        match parse_server(addr).map_err(|m| key_error(server_key.clone(), m))? {
            ServerAddr::Addr(addr) => {
                if servers.iter().any(|s: &ServerConfig| s.addr == addr) {
                    return Err(key_error(server_key, format!("{addr} is listed twice")));
                }
                servers.push(ServerConfig { addr, weight });
            }
            ServerAddr::Name(host, port) => {
                if named
                    .iter()
                    .any(|n: &NamedServer| n.host == host && n.port == port)
                {
                    return Err(key_error(
                        server_key,
                        format!("{host}:{port} is listed twice"),
                    ));
                }
                // Looked up in the background once the group is in service.
                log::info!("{server_key}: {host}:{port} is resolved while the gateway runs");
                named.push(NamedServer { host, port, weight });
            }
        }
    }
    let resolve = ResolveConfig {
        resolver: match &group.resolver {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                key_error(
                    format!("{key}.resolver"),
                    format!("{text:?} is not an ip:port address"),
                )
            })?),
        },
        interval: match &group.resolve_interval {
            None => DEFAULT_RESOLVE_INTERVAL,
            Some(text) => positive_duration(text)
                .map_err(|m| key_error(format!("{key}.resolve_interval"), m))?,
        },
    };

    let (protocol, max_streams) = validate_protocol(group, &key)?;
    let health_check = match &group.health_check {
        None => Some(HealthCheckConfig {
            probe: HealthProbe::Tcp,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            rise: DEFAULT_HEALTH_RISE,
            fall: DEFAULT_HEALTH_FALL,
        }),
        Some(hc) => validate_health_check(hc, &format!("{key}.health_check"))?,
    };
    if matches!(
        health_check.as_ref().map(|hc| &hc.probe),
        Some(HealthProbe::Grpc { .. })
    ) && !protocol.multiplexed()
    {
        return Err(key_error(
            format!("{key}.health_check.type"),
            "a grpc check needs an HTTP/2 group (protocol: h2, h2c or auto)".into(),
        ));
    }

    let t = group.timeouts.as_ref();
    let defaults = Timeouts::default();
    let timeout = |field: &str, value: Option<&String>, default: Duration| {
        value.map_or(Ok(default), |v| {
            positive_duration(v).map_err(|m| key_error(format!("{key}.timeouts.{field}"), m))
        })
    };
    let timeouts = Timeouts {
        connect: timeout(
            "connect",
            t.and_then(|t| t.connect.as_ref()),
            defaults.connect,
        )?,
        read: timeout("read", t.and_then(|t| t.read.as_ref()), defaults.read)?,
        write: timeout("write", t.and_then(|t| t.write.as_ref()), defaults.write)?,
        idle: timeout("idle", t.and_then(|t| t.idle.as_ref()), defaults.idle)?,
    };

    let fallback = match &group.fallback {
        None => None,
        Some(target) if target == name => {
            return Err(key_error(
                format!("{key}.fallback"),
                "a group cannot fall back to itself".into(),
            ))
        }
        Some(target) => Some(group_id(format!("{key}.fallback"), target)?),
    };

    Ok(GroupConfig {
        name: name.to_string(),
        servers,
        named,
        resolve,
        selection: match group.selection {
            None | Some(SelectionSpec::RoundRobin) => Selection::RoundRobin,
            Some(SelectionSpec::Consistent) => Selection::Consistent,
        },
        health_check,
        timeouts,
        fallback,
        host_header: match group.host_header.as_deref() {
            None | Some("client") => HostHeader::Client,
            Some("server") => HostHeader::Server,
            Some(name) => HostHeader::Name(
                host_header_value(name).map_err(|m| key_error(format!("{key}.host_header"), m))?,
            ),
        },
        tls: group
            .tls
            .as_ref()
            .map(|tls| super::tls::validate_upstream_tls(tls, &format!("{key}.tls"), base, now))
            .transpose()?,
        protocol,
        max_streams,
    })
}

/// Most streams a group may allow on one HTTP/2 connection (`max_streams_per_connection`).
const MAX_STREAMS_LIMIT: usize = 10_000;

/// `protocol` and `max_streams_per_connection`, checked against the group's TLS: `h2` needs
/// TLS (ALPN), `h2c` is cleartext by definition, `auto` asks ALPN and so needs TLS too. A TLS
/// group's `tls.http2: true` is the older spelling of `protocol: auto`.
fn validate_protocol(group: &GroupSpec, key: &str) -> Result<(Protocol, usize), KeyError> {
    let tls = group.tls.as_ref();
    let tls_http2 = tls.and_then(|t| t.http2);
    let protocol_key = format!("{key}.protocol");
    let protocol = match (group.protocol, tls_http2) {
        (None, Some(true)) => Protocol::Auto,
        (None | Some(ProtocolSpec::H1), _) => Protocol::H1,
        (Some(ProtocolSpec::H2), _) => Protocol::H2,
        (Some(ProtocolSpec::H2c), _) => Protocol::H2c,
        (Some(ProtocolSpec::Auto), _) => Protocol::Auto,
    };
    if group.protocol.is_some() && tls_http2.is_some() {
        return Err(key_error(
            format!("{key}.tls.http2"),
            "give either protocol or tls.http2, not both".into(),
        ));
    }
    match (protocol, tls.is_some()) {
        (Protocol::H2, false) => {
            return Err(key_error(
                protocol_key,
                "h2 needs TLS towards the servers (tls:); cleartext HTTP/2 is h2c".into(),
            ))
        }
        (Protocol::Auto, false) => {
            return Err(key_error(
                protocol_key,
                "auto chooses by ALPN and needs TLS towards the servers (tls:)".into(),
            ))
        }
        (Protocol::H2c, true) => {
            return Err(key_error(
                protocol_key,
                "h2c is cleartext HTTP/2; over TLS use h2".into(),
            ))
        }
        _ => {}
    }
    let max_streams = match group.max_streams_per_connection {
        None => DEFAULT_MAX_STREAMS,
        Some(_) if !protocol.multiplexed() => {
            return Err(key_error(
                format!("{key}.max_streams_per_connection"),
                "only an HTTP/2 group (protocol: h2, h2c or auto) multiplexes requests".into(),
            ))
        }
        Some(n) if (1..=MAX_STREAMS_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(key_error(
                format!("{key}.max_streams_per_connection"),
                format!("{n} is not in 1..={MAX_STREAMS_LIMIT}"),
            ))
        }
    };
    Ok((protocol, max_streams))
}

/// A fixed `Host` value: a host name with an optional port.
fn host_header_value(name: &str) -> Result<HeaderValue, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'));
    let invalid =
        || format!("{name:?} is not `client`, `server` or a host name (with an optional port)");
    if !valid {
        return Err(invalid());
    }
    HeaderValue::from_str(name).map_err(|_| invalid())
}

fn validate_health_check(
    hc: &HealthCheckSpec,
    key: &str,
) -> Result<Option<HealthCheckConfig>, KeyError> {
    let duration = |field: &str, value: &Option<String>, default: Duration| {
        value.as_ref().map_or(Ok(default), |v| {
            positive_duration(v).map_err(|m| key_error(format!("{key}.{field}"), m))
        })
    };
    let count = |field: &str, value: Option<usize>, default: usize| match value {
        Some(0) => Err(key_error(
            format!("{key}.{field}"),
            "must be at least 1".to_string(),
        )),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let http_only = [
        ("path", hc.path.is_some()),
        ("host", hc.host.is_some()),
        ("expect_status", hc.expect_status.is_some()),
    ];
    if hc.service.is_some() && hc.probe != ProbeSpec::Grpc {
        return Err(key_error(
            format!("{key}.service"),
            "only `type: grpc` checks take this key".into(),
        ));
    }
    let probe = match hc.probe {
        ProbeSpec::Grpc => {
            if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(key_error(
                    format!("{key}.{field}"),
                    "only `type: http` checks take this key".into(),
                ));
            }
            let service = hc.service.clone().unwrap_or_default();
            if service.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(key_error(
                    format!("{key}.service"),
                    format!("{service:?} is not a gRPC service name"),
                ));
            }
            HealthProbe::Grpc { service }
        }
        ProbeSpec::Http => {
            let path = hc.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(key_error(
                    format!("{key}.path"),
                    format!("{path:?} is not a request path"),
                ));
            }
            let expect_status = hc.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err(key_error(
                    format!("{key}.expect_status"),
                    format!("{expect_status} is not an HTTP status"),
                ));
            }
            HealthProbe::Http {
                path,
                host: hc.host.clone().unwrap_or_else(|| "localhost".into()),
                expect_status,
            }
        }
        ProbeSpec::Tcp | ProbeSpec::None => {
            if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(key_error(
                    format!("{key}.{field}"),
                    "only `type: http` checks take this key".into(),
                ));
            }
            if hc.probe == ProbeSpec::None {
                return Ok(None);
            }
            HealthProbe::Tcp
        }
    };
    Ok(Some(HealthCheckConfig {
        probe,
        interval: duration("interval", &hc.interval, DEFAULT_HEALTH_INTERVAL)?,
        timeout: duration("timeout", &hc.timeout, DEFAULT_HEALTH_TIMEOUT)?,
        rise: count("rise", hc.rise, DEFAULT_HEALTH_RISE)?,
        fall: count("fall", hc.fall, DEFAULT_HEALTH_FALL)?,
    }))
}

/// Rejects fallback chains that loop (`a → b → a`).
pub(super) fn check_fallback_cycles(groups: &[GroupConfig]) -> Result<(), KeyError> {
    for (start, group) in groups.iter().enumerate() {
        let mut chain = vec![start];
        let mut next = group.fallback;
        while let Some(GroupId(id)) = next {
            if chain.contains(&id) {
                let names: Vec<&str> = chain
                    .iter()
                    .chain(std::iter::once(&id))
                    .map(|&i| groups[i].name.as_str())
                    .collect();
                return Err(key_error(
                    format!("gateway.groups.{}.fallback", group.name),
                    format!("fallback chain loops: {}", names.join(" -> ")),
                ));
            }
            chain.push(id);
            next = groups[id].fallback;
        }
    }
    Ok(())
}
