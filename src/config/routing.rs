//! Validation of the routes (`gateway.routes`, or the single `gateway.routing` block): hosts,
//! paths, and each route's routing block — cookie, signing keys, rules (each rule in `rules`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::access::validate_access;
use super::compress::{route_compress, CompressConfig};
use super::identity::route_identity;
use super::pages::route_pages;
use super::parse::{check_token, decision_header_name, route_path};
use super::ratelimit::validate_route_limits;
use super::rules::{build_rule, Context};
use super::spec::{DecisionHeaderSpec, RateLimitSpec, RouteSpec, RoutingSpec, SigningKeys};
use super::{
    key_error, KeyError, PlanConfig, RouteConfig, DEFAULT_DECISION_HEADER, DEFAULT_ROUTE,
    MIN_SIGNING_KEY_LEN,
};
use crate::routing::routes::{RouteMatch, RouteTable};
use crate::routing::Router;

/// The routes: exactly one of `routing` (one route, `default`, for every host and path) and
/// `routes`.
pub(super) fn validate_routes(
    routing: Option<&RoutingSpec>,
    routes: Option<&[RouteSpec]>,
    default_limits: &[RateLimitSpec],
    cx: &Context<'_>,
    default_compress: &Option<Arc<CompressConfig>>,
) -> Result<Vec<RouteConfig>, KeyError> {
    let routes = match (routing, routes) {
        (Some(_), Some(_)) => {
            return Err(key_error(
                "gateway".into(),
                "set either `routing` (one route) or `routes`, not both".into(),
            ))
        }
        (None, None) => {
            return Err(key_error(
                "gateway.routes".into(),
                "the section is missing (or give a single `routing` block)".into(),
            ))
        }
        (Some(routing), None) => {
            let parts = validate_routing(routing, "gateway.routing", cx)?;
            return Ok(vec![RouteConfig {
                name: DEFAULT_ROUTE.into(),
                matching: RouteMatch {
                    hosts: Vec::new(),
                    paths: vec!["/".into()],
                },
                strip_prefix: false,
                router: Arc::new(parts.router),
                store_sets: parts.store_sets,
                plans: parts.plans,
                access: cx.default_access.clone(),
                rate_limits: validate_route_limits(
                    None,
                    "gateway.routing",
                    default_limits,
                    cx.has_store,
                )?,
                compress: default_compress.clone(),
                error_pages: cx.default_pages.clone(),
                upstream_header: parts.upstream_header,
            }]);
        }
        (None, Some(routes)) => routes,
    };
    if routes.is_empty() {
        return Err(key_error(
            "gateway.routes".into(),
            "needs at least one route".into(),
        ));
    }
    let mut out: Vec<RouteConfig> = Vec::with_capacity(routes.len());
    for (i, route) in routes.iter().enumerate() {
        let key = format!("gateway.routes[{i}]");
        check_token(&route.name, "route name").map_err(|m| key_error(format!("{key}.name"), m))?;
        if out.iter().any(|r| r.name == route.name) {
            return Err(key_error(
                format!("{key}.name"),
                format!(
                    "{:?} is used by an earlier route; names must be unique",
                    route.name
                ),
            ));
        }
        let matching = RouteMatch {
            hosts: route
                .hosts
                .iter()
                .enumerate()
                .map(|(j, h)| route_host(h).map_err(|m| key_error(format!("{key}.hosts[{j}]"), m)))
                .collect::<Result<_, _>>()?,
            paths: if route.paths.is_empty() {
                vec!["/".into()]
            } else {
                route
                    .paths
                    .iter()
                    .enumerate()
                    .map(|(j, p)| {
                        route_path(p).map_err(|m| key_error(format!("{key}.paths[{j}]"), m))
                    })
                    .collect::<Result<_, _>>()?
            },
        };
        for (field, values) in [("hosts", &matching.hosts), ("paths", &matching.paths)] {
            if let Some(j) = (1..values.len()).find(|&j| values[..j].contains(&values[j])) {
                return Err(key_error(
                    format!("{key}.{field}[{j}]"),
                    format!("{:?} is listed twice", values[j]),
                ));
            }
        }
        let access = match &route.access {
            Some(spec) => validate_access(spec, &format!("{key}.access"), cx.base)?,
            None => cx.default_access.clone(),
        };
        let parts = validate_routing(&route.routing, &format!("{key}.routing"), cx)?;
        let rate_limits = validate_route_limits(
            route.rate_limits.as_deref(),
            &key,
            default_limits,
            cx.has_store,
        )?;
        let compress = route_compress(route.compress.as_ref(), &key, default_compress)?;
        let error_pages = route_pages(
            route.error_pages.as_ref(),
            route.intercept_errors,
            &key,
            cx.base,
            &cx.default_pages,
            cx.default_intercept,
        )?;
        out.push(RouteConfig {
            name: route.name.clone(),
            matching,
            strip_prefix: route.strip_prefix,
            router: Arc::new(parts.router),
            store_sets: parts.store_sets,
            plans: parts.plans,
            access,
            rate_limits,
            compress,
            error_pages,
            upstream_header: parts.upstream_header,
        });
    }
    Ok(out)
}

/// The host and path lookup over `routes`, built once per load: `None` when one route serves
/// every host and path (requests then need no lookup). Two routes claiming the same host and
/// prefix is an error naming both.
pub(super) fn route_table(routes: &[RouteConfig]) -> Result<Option<Arc<RouteTable>>, KeyError> {
    if let [only] = routes {
        if only.matching.hosts.is_empty() && only.matching.paths == ["/"] {
            return Ok(None);
        }
    }
    let matches: Vec<RouteMatch> = routes.iter().map(|r| r.matching.clone()).collect();
    match RouteTable::new(&matches) {
        Ok(table) => Ok(Some(Arc::new(table))),
        Err(c) => Err(key_error(
            format!("gateway.routes[{}]", c.second.0),
            format!(
                "host {} and path {:?} are also claimed by route {:?}",
                c.host, c.path, routes[c.first.0].name
            ),
        )),
    }
}

/// A route host: a name (compared lower-case) or `*.` followed by one.
fn route_host(host: &str) -> Result<String, String> {
    let lower = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(lower)
    } else {
        Err(format!("{host:?} is not a host name or a `*.` wildcard"))
    }
}

/// What one routing block becomes.
struct RoutingParts {
    router: Router,
    /// Store-backed rules: rule name → set name.
    store_sets: BTreeMap<String, String>,
    /// Rollout plans: rule name → plan.
    plans: BTreeMap<String, PlanConfig>,
    /// `upstream_header`, validated.
    upstream_header: Option<http::HeaderName>,
}

/// One routing block (`key` names it in errors): the router, its store-backed rules and its
/// rollout plans.
fn validate_routing(
    routing: &RoutingSpec,
    key: &str,
    cx: &Context<'_>,
) -> Result<RoutingParts, KeyError> {
    let identity = route_identity(routing, key, cx.base, cx.trusted_proxies)?;
    let default_group = (cx.group_id)(format!("{key}.default"), &routing.default)?;
    let mut rules = Vec::with_capacity(routing.rules.len());
    let mut store_sets = BTreeMap::new();
    let mut plans = BTreeMap::new();
    for (i, rule) in routing.rules.iter().enumerate() {
        let rule_key = format!("{key}.rules[{i}]");
        if rule.name.is_empty() {
            return Err(key_error(
                format!("{rule_key}.name"),
                "must not be empty".into(),
            ));
        }
        if routing.rules[..i].iter().any(|r| r.name == rule.name) {
            return Err(key_error(
                format!("{rule_key}.name"),
                format!(
                    "{:?} is used by an earlier rule; names must be unique",
                    rule.name
                ),
            ));
        }
        let built = build_rule(rule, &rule_key, cx)?;
        if let Some(set) = built.store_set {
            store_sets.insert(rule.name.clone(), set);
        }
        if let Some(plan) = built.plan {
            plans.insert(rule.name.clone(), plan);
        }
        rules.push(built.rule);
    }
    let router = Router::new(cx.group_names.to_vec(), default_group)
        .with_cookie(identity.cookie)
        .with_identity(identity.identity)
        .with_rules(rules)
        .with_signing_keys(signing_keys(routing, key)?);
    Ok(RoutingParts {
        router,
        store_sets,
        plans,
        upstream_header: upstream_header(routing.upstream_header.as_ref(), key)?,
    })
}

/// `upstream_header`: its name (default `x-canary-group`), `None` when turned off.
fn upstream_header(
    spec: Option<&DecisionHeaderSpec>,
    key: &str,
) -> Result<Option<http::HeaderName>, KeyError> {
    let key = format!("{key}.upstream_header");
    let name = match spec {
        None | Some(DecisionHeaderSpec::Enabled(true)) => DEFAULT_DECISION_HEADER,
        Some(DecisionHeaderSpec::Enabled(false)) => return Ok(None),
        Some(DecisionHeaderSpec::Name(name)) => name,
    };
    let name = decision_header_name(name).map_err(|m| key_error(key.clone(), m))?;
    http::HeaderName::from_bytes(name.as_bytes())
        .map(Some)
        .map_err(|e| key_error(key, format!("{name:?} is not a valid header name ({e})")))
}

fn signing_keys(routing: &RoutingSpec, prefix: &str) -> Result<Vec<Box<[u8]>>, KeyError> {
    let (key, keys): (String, Vec<String>) = match (&routing.signing_key, &routing.signing_key_env)
    {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some(_)) => {
            return Err(key_error(
                prefix.into(),
                "set either `signing_key` or `signing_key_env`, not both".into(),
            ))
        }
        (Some(SigningKeys::One(k)), None) => (format!("{prefix}.signing_key"), vec![k.clone()]),
        (Some(SigningKeys::Several(ks)), None) => (format!("{prefix}.signing_key"), ks.clone()),
        (None, Some(var)) => {
            let value = std::env::var(var).map_err(|_| {
                key_error(
                    format!("{prefix}.signing_key_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            (
                format!("{prefix}.signing_key_env"),
                value.split(',').map(|k| k.trim().to_string()).collect(),
            )
        }
    };
    if keys.is_empty() {
        return Err(key_error(key, "needs at least one key".into()));
    }
    if keys.iter().any(|k| k.len() < MIN_SIGNING_KEY_LEN) {
        return Err(key_error(
            key,
            format!("every key must be at least {MIN_SIGNING_KEY_LEN} bytes (value not shown)"),
        ));
    }
    Ok(keys.into_iter().map(|k| k.into_bytes().into()).collect())
}
