//! Validation of the request rate limits (`gateway.rate_limits`, the default for every route,
//! and `gateway.routes[i].rate_limits`): name, paths, key, rate, burst and `shared`.

use std::time::Duration;

use super::parse::{check_token, header_name, route_path};
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
    let (specs, key, gateway_wide) = match route_limits {
        Some(own) => (own, format!("{key}.rate_limits"), false),
        None => (default, "gateway.rate_limits".to_string(), true),
    };
    let mut out: Vec<RateLimitConfig> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let limit = RateLimitConfig {
            gateway_wide,
            ..validate_limit(spec, &key, has_store)?
        };
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
        .map(|(j, p)| route_path(p).map_err(|m| key_error(format!("{key}.paths[{j}]"), m)))
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
        gateway_wide: false,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    /// Two routes: `api` with its own limits, `web` with the gateway's default.
    fn file(default: &str, api: &str, store: bool) -> String {
        let store = if store {
            "  store: { redis: \"redis://127.0.0.1:6379/0\" }\n"
        } else {
            ""
        };
        format!(
            "gateway:\n  listen: [\"127.0.0.1:8080\"]\n  groups:\n    stable: {{ servers: [\"127.0.0.1:10001\"] }}\n{store}  rate_limits: [{default}]\n  routes:\n    - name: api\n      paths: [/api]\n      rate_limits: [{api}]\n      routing: {{ default: stable }}\n    - name: web\n      routing: {{ default: stable }}\n"
        )
    }

    fn error_of(text: &str) -> String {
        match load_str(text, "f.yaml", Path::new(".")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str =
        "{ name: login, paths: [/login, /api/auth/], key: client_ip, rate: 10/s, burst: 20 }";

    /// A route's own limits, the default for a route without any, and every key kind.
    #[test]
    fn limits_load_per_route_and_by_default() {
        let text = file(
            "{ name: all, key: \"header:X-Api-Key\", rate: 600r/m }",
            &format!(
                "{GOOD}, {{ name: api-user, key: user, rate: 100/s, burst: 200, shared: true }}"
            ),
            true,
        );
        let loaded = load_str(&text, "f.yaml", Path::new(".")).expect("valid");
        let api = &loaded.gateway.routes[0].rate_limits;
        assert_eq!(api.len(), 2);
        assert_eq!(api[0].name, "login");
        assert_eq!(api[0].paths, ["/login", "/api/auth/"]);
        assert_eq!(api[0].key, LimitKey::ClientIp);
        assert_eq!(api[0].interval, Duration::from_millis(100));
        assert_eq!(api[0].burst, 20);
        assert!(!api[0].shared);
        assert_eq!((api[1].key.clone(), api[1].shared), (LimitKey::User, true));
        let web = &loaded.gateway.routes[1].rate_limits;
        assert_eq!(web.len(), 1, "the gateway default");
        assert_eq!(
            web[0].key,
            LimitKey::Header(http::HeaderName::from_static("x-api-key"))
        );
        assert_eq!(web[0].interval, Duration::from_millis(100), "600/m");
        assert_eq!(web[0].burst, 0, "burst defaults to 0");
        assert!(web[0].gateway_wide && !api[0].gateway_wide);
        let none = load_str(&file(GOOD, "", false), "f.yaml", Path::new(".")).expect("valid");
        assert!(none.gateway.routes[0].rate_limits.is_empty(), "[]: none");
    }

    /// Each bad value is refused naming its key.
    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "{ name: a, key: client_ip, rate: 10/x }",
                "gateway.routes[0].rate_limits[0].rate: \"10/x\" is not a rate",
            ),
            (
                "{ name: a, key: client_ip, rate: 0/s }",
                "gateway.routes[0].rate_limits[0].rate: \"0/s\": the rate must be more than zero",
            ),
            (
                "{ name: a, key: client_ip, rate: 10/s, burst: -1 }",
                "gateway.routes[0].rate_limits[0].burst: -1 is not in 0..=1000000",
            ),
            (
                "{ name: a, key: cookie, rate: 10/s }",
                "gateway.routes[0].rate_limits[0].key: \"cookie\" is not a key: client_ip, user or header:NAME",
            ),
            (
                "{ name: a, key: \"header:bad name\", rate: 10/s }",
                "gateway.routes[0].rate_limits[0].key:",
            ),
            (
                "{ name: a, key: user, rate: 10/s, shared: true }",
                "gateway.routes[0].rate_limits[0].shared: a shared limit needs `gateway.store`",
            ),
            (
                "{ name: a, paths: [login], key: user, rate: 10/s }",
                "gateway.routes[0].rate_limits[0].paths[0]:",
            ),
            (
                "{ name: a, key: user, rate: 1/s }, { name: a, key: user, rate: 2/s }",
                "gateway.routes[0].rate_limits[1].name: \"a\" is used by an earlier limit",
            ),
            (
                "{ name: \"a b\", key: user, rate: 1/s }",
                "gateway.routes[0].rate_limits[0].name:",
            ),
        ];
        for (api, expected) in cases {
            let e = error_of(&file(GOOD, api, false));
            assert!(e.contains(expected), "{api}: {e}");
        }
        let e = error_of(&file("{ name: d, key: client_ip, rate: 5/z }", "", false));
        assert!(
            e.contains("gateway.rate_limits[0].rate: \"5/z\""),
            "the default is named as itself: {e}"
        );
        let e = error_of(&file(
            GOOD,
            "{ name: a, key: user, rate: 1/s, brust: 2 }",
            false,
        ));
        assert!(e.contains("unknown field `brust`"), "{e}");
    }

    #[test]
    fn rates_as_nginx_writes_them() {
        assert_eq!(parse_rate("10/s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_rate("10r/s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_rate("30r/m"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_rate("1/h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_rate("1000000/s"), Ok(Duration::from_micros(1)));
        for bad in ["10", "10/", "/s", "1.5/s", "-1/s", "2000000/s", "ten/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
