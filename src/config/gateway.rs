//! Validation of the gateway section as a whole: listeners, the admin API, metrics, the access
//! log, the store, limits and trusted proxies; routing and groups have files of their own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::parse::{check_token, connection_count, header_name, positive_duration};
use super::spec::{AdminSpec, DecisionHeaderSpec, GatewaySpec, LimitsSpec, RoleSpec, StoreSpec};
use super::{
    access, compress, groups, key_error, pages, routing, rules, tls, AccessLogTarget, AdminConfig,
    AdminToken, Cidr, DemoOrigin, GatewayConfig, HeadLimits, KeyError, Limits, Role, StoreConfig,
    DEFAULT_ADMIN_MAX_CONNECTIONS, DEFAULT_ADMIN_TOKEN_NAME, DEFAULT_DECISION_HEADER,
    MIN_ADMIN_TOKEN_LEN,
};
use crate::routing::GroupId;

impl GatewaySpec {
    /// Checks every key and builds the typed configuration: the one validation path, used by
    /// `-t`, at start and on reload. Relative paths resolve against `base_dir` (the file's
    /// folder); errors name the key, their `file` is left empty for the caller to fill.
    pub(crate) fn validate(&self, base_dir: &Path) -> Result<GatewayConfig, KeyError> {
        validate(self, base_dir)
    }
}

fn validate(file: &GatewaySpec, base: &Path) -> Result<GatewayConfig, KeyError> {
    let now = super::unix_now();
    let listen = tls::validate_listeners(&file.listen, base, now, file.acme.is_some())?;

    if file.groups.is_empty() {
        return Err(key_error(
            "gateway.groups".into(),
            "needs at least one group".into(),
        ));
    }
    let group_names: Vec<String> = file.groups.keys().cloned().collect();
    let group_id = |key: String, name: &str| -> Result<GroupId, KeyError> {
        group_names
            .iter()
            .position(|g| g == name)
            .map(GroupId)
            .ok_or_else(|| {
                key_error(
                    key,
                    format!(
                        "{name:?} is not a group (groups: {})",
                        group_names.join(", ")
                    ),
                )
            })
    };
    let mut groups = Vec::with_capacity(file.groups.len());
    for (name, group) in &file.groups {
        groups.push(groups::validate_group(name, group, &group_id, base, now)?);
    }
    groups::check_fallback_cycles(&groups)?;
    let group_values = group_values(&group_names)?;

    let store = file.store.as_ref().map(validate_store).transpose()?;
    let default_access = file
        .access
        .as_ref()
        .map(|spec| access::validate_access(spec, "gateway.access", base))
        .transpose()?
        .flatten();
    let default_compress = match &file.compress {
        Some(spec) => compress::validate_compress(spec, "gateway.compress")?,
        None => None,
    };
    let default_intercept = file.intercept_errors.unwrap_or(false);
    let default_pages = pages::validate_pages(
        &file.error_pages,
        default_intercept,
        "gateway.error_pages",
        base,
    )?;
    if default_intercept && default_pages.is_none() {
        return Err(key_error(
            "gateway.intercept_errors".into(),
            "needs `gateway.error_pages`".into(),
        ));
    }
    let trusted_proxies = file
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Cidr::parse(c)
                .map_err(|e| key_error(format!("gateway.trusted_proxies[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let routes = routing::validate_routes(
        file.routing.as_ref(),
        file.routes.as_deref(),
        &file.rate_limits,
        &rules::Context {
            base,
            group_names: &group_names,
            group_id: &group_id,
            has_store: store.is_some(),
            default_access,
            default_pages: default_pages.clone(),
            default_intercept,
            trusted_proxies: &trusted_proxies,
        },
        &default_compress,
    )?;
    let route_table = routing::route_table(&routes)?;

    let decision_header = decision_header(file.decision_header.as_ref())?;

    let mut demo_origins = Vec::with_capacity(file.demo_origins.len());
    for (i, origin) in file.demo_origins.iter().enumerate() {
        origin.listen.parse::<SocketAddr>().map_err(|e| {
            key_error(
                format!("gateway.demo_origins[{i}].listen"),
                format!("{:?} is not an IP:port address ({e})", origin.listen),
            )
        })?;
        demo_origins.push(DemoOrigin {
            listen: origin.listen.clone(),
            body: origin.body.clone(),
        });
    }

    let admin = file
        .admin
        .as_ref()
        .map(|admin| validate_admin(admin, base))
        .transpose()?;

    let metrics_listen = file
        .metrics
        .as_ref()
        .map(|m| {
            m.listen.parse::<SocketAddr>().map_err(|e| {
                key_error(
                    "gateway.metrics.listen".to_string(),
                    format!("{:?} is not an IP:port address ({e})", m.listen),
                )
            })
        })
        .transpose()?;
    let access_log = file.access_log.as_ref().map(|log| {
        if log.path.as_os_str() == "-" {
            AccessLogTarget::Stdout
        } else {
            AccessLogTarget::File(base.join(&log.path))
        }
    });

    let limits = validate_limits(file.limits.as_ref().unwrap_or(&LimitsSpec::default()))?;
    let notify = super::notify::validate_notify(&file.notify)?;
    let acme = file
        .acme
        .as_ref()
        .map(|acme| {
            let state_file = admin.as_ref().and_then(|a| a.state_file.as_deref());
            let config = super::acme::validate_acme(acme, base, state_file)?;
            if let Some(path) = &config.ca_file {
                super::certificates::read_chain(path, "gateway.acme.ca_file")?;
            }
            Ok(config)
        })
        .transpose()?;
    // One certificate per distinct name set: two listeners may share a set, not part of one
    // (two orders would then fight over a name's certificate and its stored files).
    for (j, later) in listen.iter().enumerate() {
        for (i, earlier) in listen[..j].iter().enumerate() {
            let (a, b) = (earlier.acme_names(), later.acme_names());
            let mut sorted = (a.to_vec(), b.to_vec());
            sorted.0.sort();
            sorted.1.sort();
            if sorted.0 != sorted.1 {
                if let Some(name) = b.iter().find(|n| a.contains(n)) {
                    return Err(key_error(
                        format!("gateway.listen[{j}].tls.acme"),
                        format!(
                            "{name} is also in gateway.listen[{i}].tls.acme with other names; \
                             list the same names on both or share none"
                        ),
                    ));
                }
            }
        }
    }
    if acme.is_none() {
        if let Some(i) = listen.iter().position(|l| !l.acme_names().is_empty()) {
            return Err(key_error(
                format!("gateway.listen[{i}].tls.acme"),
                "ACME names need gateway.acme (the CA and account)".into(),
            ));
        }
    }

    Ok(GatewayConfig {
        acme,
        error_pages: default_pages,
        notify,
        store,
        routes,
        route_table,
        limits,
        trusted_proxies,
        metrics_listen,
        log_user_id: file.access_log.as_ref().is_some_and(|log| log.user_id),
        access_log,
        admin,
        listen,
        groups,
        group_values,
        decision_header,
        demo_origins,
    })
}

/// `gateway.decision_header`: the header's name, `None` when turned off.
fn decision_header(spec: Option<&DecisionHeaderSpec>) -> Result<Option<HeaderName>, KeyError> {
    let key = || "gateway.decision_header".to_string();
    let name = match spec {
        None | Some(DecisionHeaderSpec::Enabled(true)) => DEFAULT_DECISION_HEADER,
        Some(DecisionHeaderSpec::Enabled(false)) => return Ok(None),
        Some(DecisionHeaderSpec::Name(name)) => name,
    };
    let name = header_name(name).map_err(|m| key_error(key(), m))?;
    HeaderName::from_bytes(name.as_bytes())
        .map(Some)
        .map_err(|e| key_error(key(), format!("{name:?} is not a valid header name ({e})")))
}

/// Each group's name as the decision header's value, indexed by `GroupId`.
fn group_values(names: &[String]) -> Result<Vec<HeaderValue>, KeyError> {
    names
        .iter()
        .map(|name| {
            HeaderValue::from_str(name).map_err(|_| {
                key_error(
                    format!("gateway.groups.{name}"),
                    format!("{name:?} cannot be sent as a header value (the decision header)"),
                )
            })
        })
        .collect()
}

fn validate_store(file: &StoreSpec) -> Result<StoreConfig, KeyError> {
    if !(file.redis.starts_with("redis://") || file.redis.starts_with("rediss://")) {
        return Err(key_error(
            "gateway.store.redis".into(),
            "must be a redis:// URL (value not shown)".into(),
        ));
    }
    let duration = |k: &str, v: &Option<String>, d: Duration| {
        v.as_ref().map_or(Ok(d), |v| {
            positive_duration(v).map_err(|m| key_error(format!("gateway.store.{k}"), m))
        })
    };
    Ok(StoreConfig {
        url: file.redis.clone(),
        prefix: file.prefix.clone().unwrap_or_else(|| "canary:".into()),
        resync_interval: duration(
            "resync_interval",
            &file.resync_interval,
            Duration::from_secs(60),
        )?,
        timeout: duration("timeout", &file.timeout, Duration::from_secs(2))?,
    })
}

fn validate_limits(file: &LimitsSpec) -> Result<Limits, KeyError> {
    let defaults = Limits::default();
    let key = |k: &str| format!("gateway.limits.{k}");
    let duration = |k: &str, v: &Option<String>, d: Duration| {
        v.as_ref().map_or(Ok(d), |v| {
            positive_duration(v).map_err(|m| key_error(key(k), m))
        })
    };
    let size = |k: &str, v: Option<usize>, d: usize, min: usize| match v {
        Some(n) if n < min => Err(key_error(key(k), format!("{n} is below the minimum {min}"))),
        Some(n) => Ok(n),
        None => Ok(d),
    };
    let head = HeadLimits {
        header_timeout: duration(
            "header_timeout",
            &file.header_timeout,
            defaults.head.header_timeout,
        )?,
        keepalive_timeout: whole_seconds(duration(
            "keepalive_timeout",
            &file.keepalive_timeout,
            defaults.head.keepalive_timeout,
        )?)
        .map_err(|m| key_error(key("keepalive_timeout"), m))?,
        send_timeout: duration(
            "send_timeout",
            &file.send_timeout,
            defaults.head.send_timeout,
        )?,
        max_request_line: size(
            "max_request_line",
            file.max_request_line,
            defaults.head.max_request_line,
            64,
        )?,
        max_header_bytes: size(
            "max_header_bytes",
            file.max_header_bytes,
            defaults.head.max_header_bytes,
            1024,
        )?,
        max_headers: size(
            "max_headers",
            file.max_headers,
            defaults.head.max_headers,
            8,
        )?,
    };
    Ok(Limits {
        head,
        body_timeout: duration("body_timeout", &file.body_timeout, defaults.body_timeout)?,
        tunnel_idle_timeout: duration(
            "tunnel_idle_timeout",
            &file.tunnel_idle_timeout,
            defaults.tunnel_idle_timeout,
        )?,
        max_body_bytes: file.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        max_connections: connection_count(file.max_connections)
            .map_err(|m| key_error(key("max_connections"), m))?,
    })
}

/// A duration Pingora can only take in whole seconds (the HTTP/1.1 keep-alive timeout).
fn whole_seconds(d: Duration) -> Result<Duration, String> {
    if d.subsec_nanos() == 0 {
        Ok(d)
    } else {
        Err(format!(
            "{d:?} is not a whole number of seconds (at least 1s)"
        ))
    }
}

/// A secret given as `token` or `token_env` (`key` names the pair, `token_key` the value in
/// errors): `None` when neither is set; it must be at least `MIN_ADMIN_TOKEN_LEN` visible
/// characters.
fn secret(
    token: Option<&String>,
    token_env: Option<&String>,
    key: &str,
    token_key: &str,
) -> Result<Option<String>, KeyError> {
    let token = match (token, token_env) {
        (Some(token), None) => token.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            key_error(
                format!("{key}.token_env"),
                format!("environment variable {var} is not set"),
            )
        })?,
        (Some(_), Some(_)) => {
            return Err(key_error(
                key.into(),
                "set either `token` or `token_env`, not both".into(),
            ))
        }
        (None, None) => return Ok(None),
    };
    if token.len() < MIN_ADMIN_TOKEN_LEN || token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(key_error(
            token_key.into(),
            format!(
                "the token must be at least {MIN_ADMIN_TOKEN_LEN} visible ASCII characters (value not shown)"
            ),
        ));
    }
    Ok(Some(token))
}

fn validate_admin(admin: &AdminSpec, base: &Path) -> Result<AdminConfig, KeyError> {
    let listen = admin.listen.parse::<SocketAddr>().map_err(|e| {
        key_error(
            "gateway.admin.listen".to_string(),
            format!("{:?} is not an IP:port address ({e})", admin.listen),
        )
    })?;
    let mut tokens = Vec::new();
    if let Some(token) = secret(
        admin.token.as_ref(),
        admin.token_env.as_ref(),
        "gateway.admin",
        "gateway.admin.token",
    )? {
        tokens.push(AdminToken {
            name: DEFAULT_ADMIN_TOKEN_NAME.into(),
            token,
            // The one token of a single-operator setup may do everything.
            role: Role::Admin,
        });
    }
    for (i, named) in admin.tokens.iter().enumerate() {
        let key = format!("gateway.admin.tokens[{i}]");
        check_token(&named.name, "token name").map_err(|m| key_error(format!("{key}.name"), m))?;
        if tokens.iter().any(|t| t.name == named.name) {
            return Err(key_error(
                format!("{key}.name"),
                format!(
                    "{:?} is used by another token; names must be unique",
                    named.name
                ),
            ));
        }
        let token = secret(
            named.token.as_ref(),
            named.token_env.as_ref(),
            &key,
            &format!("{key}.token"),
        )?
        .ok_or_else(|| key_error(key.clone(), "set `token_env` (or `token`)".into()))?;
        if tokens.iter().any(|t| t.token == token) {
            return Err(key_error(
                format!("{key}.token"),
                "the same secret as another token (value not shown)".into(),
            ));
        }
        let role = match named.role {
            RoleSpec::Admin => Role::Admin,
            RoleSpec::Operator => Role::Operator,
            RoleSpec::Viewer => Role::Viewer,
        };
        tokens.push(AdminToken {
            name: named.name.clone(),
            token,
            role,
        });
    }
    if tokens.is_empty() {
        let exposure = if listen.ip().is_loopback() {
            "every admin request needs a bearer token"
        } else {
            "refusing to start an admin listener on a non-loopback address without a token"
        };
        return Err(key_error(
            "gateway.admin".into(),
            format!("{exposure}: set `token_env` (or `token`, or `tokens`)"),
        ));
    }
    Ok(AdminConfig {
        listen,
        tokens,
        state_file: admin.state_file.as_ref().map(|p| base.join(p)),
        max_connections: connection_count(admin.max_connections)
            .map_err(|m| key_error("gateway.admin.max_connections".into(), m))?
            .unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS),
    })
}
