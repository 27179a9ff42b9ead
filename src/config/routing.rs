//! Validation of the routes (`gateway.routes`, or the single `gateway.routing` block): hosts,
//! paths, and each route's routing block — cookie, signing keys, rules.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::parse::{check_token, header_name, parse_duration};
use super::spec::{FileOnFailure, FilePlan, FileRule, RouteSpec, RoutingSpec, SigningKeys};
use super::{
    key_error, Cidr, KeyError, OnFailure, PlanConfig, RouteConfig,
    DEFAULT_PLAN_MAX_ERROR_RATE_INCREASE, DEFAULT_PLAN_MAX_P99_RATIO, DEFAULT_PLAN_MIN_REQUESTS,
    DEFAULT_ROUTE, MIN_SIGNING_KEY_LEN,
};
use crate::routing::routes::{normalize_path, RouteMatch, RouteTable};
use crate::routing::{GroupId, Matcher, Mode, Percent, Router, Rule, UserSet};

/// What validating routing blocks needs from the rest of the file.
pub(super) struct Context<'a> {
    pub(super) base: &'a Path,
    pub(super) group_names: &'a [String],
    pub(super) group_id: &'a dyn Fn(String, &str) -> Result<GroupId, KeyError>,
    /// Whether `gateway.store` is configured (for `users_store`).
    pub(super) has_store: bool,
}

/// The routes: exactly one of `routing` (one route, `default`, for every host and path) and
/// `routes`.
pub(super) fn validate_routes(
    routing: Option<&RoutingSpec>,
    routes: Option<&[RouteSpec]>,
    cx: &Context<'_>,
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
        let parts = validate_routing(&route.routing, &format!("{key}.routing"), cx)?;
        out.push(RouteConfig {
            name: route.name.clone(),
            matching,
            strip_prefix: route.strip_prefix,
            router: Arc::new(parts.router),
            store_sets: parts.store_sets,
            plans: parts.plans,
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

/// A route path prefix, normalized as request paths are.
fn route_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') || path.contains(['?', '#']) {
        return Err(format!("{path:?} is not a path prefix starting with /"));
    }
    let mut out = Vec::new();
    normalize_path(path.as_bytes(), &mut out).map_err(|e| format!("{path:?}: {e}"))?;
    String::from_utf8(out).map_err(|_| format!("{path:?} is not UTF-8"))
}

/// What one routing block becomes.
struct RoutingParts {
    router: Router,
    /// Store-backed rules: rule name → set name.
    store_sets: BTreeMap<String, String>,
    /// Rollout plans: rule name → plan.
    plans: BTreeMap<String, PlanConfig>,
}

/// One routing block (`key` names it in errors): the router, its store-backed rules and its
/// rollout plans.
fn validate_routing(
    routing: &RoutingSpec,
    key: &str,
    cx: &Context<'_>,
) -> Result<RoutingParts, KeyError> {
    check_token(&routing.cookie, "cookie name")
        .map_err(|m| key_error(format!("{key}.cookie"), m))?;
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
        rules.push(validate_rule(rule, &rule_key, cx.base, cx.group_id)?);
        if let Some(set) = &rule.users_store {
            let set_key = format!("{rule_key}.users_store");
            if !cx.has_store {
                return Err(key_error(set_key, "needs a `gateway.store` section".into()));
            }
            check_token(set, "set name").map_err(|m| key_error(set_key.clone(), m))?;
            store_sets.insert(rule.name.clone(), set.clone());
        }
        if let Some(plan) = &rule.plan {
            let plan_key = format!("{rule_key}.plan");
            let Some(group) = rule.group.as_ref().filter(|_| rule.percent.is_some()) else {
                return Err(key_error(
                    plan_key,
                    "only a percent rule takes a plan".into(),
                ));
            };
            plans.insert(
                rule.name.clone(),
                validate_plan(plan, &plan_key, group, cx)?,
            );
        }
    }
    let router = Router {
        group_names: cx.group_names.to_vec(),
        cookie: routing.cookie.clone(),
        default_group,
        rules,
        mode: Mode::Rules,
        signing_keys: signing_keys(routing, key)?,
    };
    Ok(RoutingParts {
        router,
        store_sets,
        plans,
    })
}

/// A rule's rollout plan; `group` is the rule's (canary) group.
fn validate_plan(
    plan: &FilePlan,
    key: &str,
    group: &str,
    cx: &Context<'_>,
) -> Result<PlanConfig, KeyError> {
    if plan.steps.is_empty() {
        return Err(key_error(
            format!("{key}.steps"),
            "needs at least one percentage".into(),
        ));
    }
    let mut steps: Vec<Percent> = Vec::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let step_key = format!("{key}.steps[{i}]");
        let percent =
            Percent::new(*step).map_err(|e| key_error(step_key.clone(), e.to_string()))?;
        match steps.last() {
            None if percent.ppm() == 0 => {
                return Err(key_error(step_key, "the first step must be above 0".into()))
            }
            Some(before) if before.ppm() >= percent.ppm() => {
                return Err(key_error(
                    step_key,
                    format!(
                        "{step} is not above the step before ({}); steps only increase",
                        before.as_f64()
                    ),
                ))
            }
            _ => steps.push(percent),
        }
    }
    let hold = parse_duration(&plan.hold).map_err(|m| key_error(format!("{key}.hold"), m))?;
    (cx.group_id)(format!("{key}.baseline"), &plan.baseline)?;
    if plan.baseline == group {
        return Err(key_error(
            format!("{key}.baseline"),
            format!("{group:?} is the rule's own group; compare it with another"),
        ));
    }
    let max_error_rate_increase = plan
        .max_error_rate_increase
        .unwrap_or(DEFAULT_PLAN_MAX_ERROR_RATE_INCREASE);
    if !(0.0..=1.0).contains(&max_error_rate_increase) {
        return Err(key_error(
            format!("{key}.max_error_rate_increase"),
            format!("{max_error_rate_increase} is not a share in 0..=1 (0.01 is one point)"),
        ));
    }
    let max_p99_ratio = plan.max_p99_ratio.unwrap_or(DEFAULT_PLAN_MAX_P99_RATIO);
    if !(max_p99_ratio.is_finite() && max_p99_ratio >= 1.0) {
        return Err(key_error(
            format!("{key}.max_p99_ratio"),
            format!("{max_p99_ratio} is not a ratio of at least 1"),
        ));
    }
    let min_requests = plan.min_requests.unwrap_or(DEFAULT_PLAN_MIN_REQUESTS);
    if min_requests == 0 {
        return Err(key_error(
            format!("{key}.min_requests"),
            "must be at least 1".into(),
        ));
    }
    Ok(PlanConfig {
        steps,
        hold,
        min_requests,
        group: group.to_string(),
        baseline: plan.baseline.clone(),
        max_error_rate_increase,
        max_p99_ratio,
        on_failure: match plan.on_failure {
            None | Some(FileOnFailure::Rollback) => OnFailure::Rollback,
            Some(FileOnFailure::Pause) => OnFailure::Pause,
        },
    })
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

fn validate_rule(
    rule: &FileRule,
    key: &str,
    base: &Path,
    group_id: &dyn Fn(String, &str) -> Result<GroupId, KeyError>,
) -> Result<Rule, KeyError> {
    let has_users = rule.users.is_some() || rule.users_file.is_some() || rule.users_store.is_some();
    let kinds = [rule.header.is_some(), has_users, rule.percent.is_some()]
        .iter()
        .filter(|&&k| k)
        .count();
    if kinds != 1 {
        return Err(key_error(
            key.to_string(),
            format!(
                "rule {:?} needs exactly one of `header`, `users`/`users_file`/`users_store` or `percent`",
                rule.name
            ),
        ));
    }
    if rule.seed.is_some() && rule.percent.is_none() {
        return Err(key_error(
            format!("{key}.seed"),
            "only percent rules take a seed".into(),
        ));
    }
    let target = |what: &str| -> Result<GroupId, KeyError> {
        match &rule.group {
            Some(name) => group_id(format!("{key}.group"), name),
            None => Err(key_error(
                format!("{key}.group"),
                format!("a {what} rule needs a target group"),
            )),
        }
    };

    if rule.header.is_none() && (rule.header_secret.is_some() || rule.from.is_some()) {
        return Err(key_error(
            key.to_string(),
            "`header_secret` and `from` only go with a `header` rule".into(),
        ));
    }
    if let Some(header) = &rule.header {
        if rule.group.is_some() {
            return Err(key_error(
                format!("{key}.group"),
                "a header rule takes its group from the header value; remove `group`".into(),
            ));
        }
        let name = header_name(header).map_err(|m| key_error(format!("{key}.header"), m))?;
        let secret = match &rule.header_secret {
            Some(s) if s.len() < 8 || s.contains(':') => {
                return Err(key_error(
                    format!("{key}.header_secret"),
                    "must be at least 8 characters without ':' (value not shown)".into(),
                ))
            }
            other => other.as_ref().map(|s| s.as_bytes().into()),
        };
        let from = rule
            .from
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| {
                Cidr::parse(c).map_err(|e| key_error(format!("{key}.from[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if rule.from.as_ref().is_some_and(|f| f.is_empty()) {
            return Err(key_error(
                format!("{key}.from"),
                "needs at least one network".into(),
            ));
        }
        return Ok(Rule {
            name: rule.name.clone(),
            matcher: Matcher::Header { name, secret, from },
            group: GroupId(0),
        });
    }

    if has_users {
        let group = target("users")?;
        let mut ids: Vec<u8> = Vec::new();
        for id in rule.users.iter().flatten() {
            ids.extend_from_slice(id.trim().as_bytes());
            ids.push(b'\n');
        }
        if let Some(path) = &rule.users_file {
            let full = base.join(path);
            let text = std::fs::read(&full).map_err(|e| {
                key_error(
                    format!("{key}.users_file"),
                    format!("cannot read {}: {e}", full.display()),
                )
            })?;
            ids.extend_from_slice(&text);
        }
        return Ok(Rule {
            name: rule.name.clone(),
            matcher: Matcher::Users {
                users: Arc::new(UserSet::from_lines(&ids)),
            },
            group,
        });
    }

    let share = Percent::new(rule.percent.unwrap_or_default())
        .map_err(|e| key_error(format!("{key}.percent"), e.to_string()))?;
    let group = target("percent")?;
    let seed = rule.seed.as_deref().unwrap_or(&rule.name);
    Ok(Rule {
        name: rule.name.clone(),
        matcher: Matcher::Percent {
            share,
            seed: seed.as_bytes().into(),
        },
        group,
    })
}
