//! Validation of the request rate limits (`gateway.rate_limits`, the default for every route,
//! and `gateway.routes[i].rate_limits`): name, paths, key, rate, burst and `shared`.

use std::time::Duration;

use super::parse::{check_token, header_name};
use super::spec::RateLimitSpec;
use super::{key_error, KeyError, LimitKey, RateLimitConfig};

/// The largest rate, per second, a limit may name: one request per microsecond, the
/// resolution the shared (Redis) step counts in.
const MAX_RATE_PER_SECOND: u64 = 1_000_000;
/// The largest `burst`.
pub(crate) const MAX_BURST: i64 = 1_000_000;

/// The limits of one route: its own (`route_limits`, under `key`), else the gateway's default
/// (`default`, under `gateway.rate_limits`). `has_store`: whether `shared` can be honoured.
pub(super) fn validate_route_limits(
    route_limits: Option<&[RateLimitSpec]>,
    key: &str,
    default: &[RateLimitSpec],
    has_store: bool,
) -> Result<Vec<RateLimitConfig>, KeyError> {
    let (specs, key) = match route_limits {
        Some(own) => (own, format!("{key}.rate_limits")),
        None => (default, "gateway.rate_limits".to_string()),
    };
    let mut out: Vec<RateLimitConfig> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let limit = validate_limit(spec, &key, has_store)?;
        if out.iter().any(|l| l.name == limit.name) {
            return Err(key_error(
                format!("{key}.name"),
                format!(
                    "{:?} is used by an earlier limit of the route; names must be unique",
                    limit.name
                ),
            ));
        }
        out.push(limit);
    }
    Ok(out)
}

fn validate_limit(
    spec: &RateLimitSpec,
    key: &str,
    has_store: bool,
) -> Result<RateLimitConfig, KeyError> {
    check_token(&spec.name, "limit name").map_err(|m| key_error(format!("{key}.name"), m))?;
    let paths = spec
        .paths
        .iter()
        .enumerate()
        .map(|(j, p)| {
            super::routing::route_path(p).map_err(|m| key_error(format!("{key}.paths[{j}]"), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit_key = limit_key(&spec.key).map_err(|m| key_error(format!("{key}.key"), m))?;
    let interval = parse_rate(&spec.rate).map_err(|m| key_error(format!("{key}.rate"), m))?;
    let burst = match spec.burst {
        None => 0,
        Some(b) if (0..=MAX_BURST).contains(&b) => b as u32,
        Some(b) => {
            return Err(key_error(
                format!("{key}.burst"),
                format!("{b} is not in 0..={MAX_BURST}"),
            ))
        }
    };
    if spec.shared && !has_store {
        return Err(key_error(
            format!("{key}.shared"),
            "a shared limit needs `gateway.store` (Redis)".into(),
        ));
    }
    Ok(RateLimitConfig {
        name: spec.name.clone(),
        paths,
        key: limit_key,
        rate: spec.rate.trim().to_string(),
        interval,
        burst,
        shared: spec.shared,
    })
}

/// `client_ip`, `user` or `header:NAME`.
fn limit_key(text: &str) -> Result<LimitKey, String> {
    match text.trim() {
        "client_ip" => Ok(LimitKey::ClientIp),
        "user" => Ok(LimitKey::User),
        other => {
            let Some(name) = other.strip_prefix("header:") else {
                return Err(format!(
                    "{text:?} is not a key: client_ip, user or header:NAME"
                ));
            };
            let name = header_name(name.trim())?;
            http::HeaderName::from_bytes(name.as_bytes())
                .map(LimitKey::Header)
                .map_err(|e| format!("{name:?} is not a valid header name ({e})"))
        }
    }
}

/// A rate as nginx writes it, with or without its `r`: `10/s`, `10r/s`, `600/m`, `1000/h`;
/// the time between two requests at that rate (GCRA's emission interval).
pub(crate) fn parse_rate(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a rate like 10/s, 600/m or 1000/h");
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count = count.trim();
    let count = count.strip_suffix('r').unwrap_or(count);
    let count: u64 = count.parse().map_err(|_| bad())?;
    let unit = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!("{text:?}: the rate must be more than zero"));
    }
    if count > MAX_RATE_PER_SECOND * unit {
        return Err(format!(
            "{text:?} is over {MAX_RATE_PER_SECOND} requests a second"
        ));
    }
    Ok(Duration::from_nanos(unit * 1_000_000_000 / count))
}
