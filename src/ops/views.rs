//! The admin API's views: `GET /status` and `GET /explain` (JSON) and `GET /config` (YAML),
//! built from what the controller reports. Secrets (the admin token, signing keys, header
//! secrets) never appear.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::{CompressConfig, GatewaySpec, OnFailure, PlanConfig, RouteConfig};
use crate::routing::access::Access;
use crate::routing::{Mode, Router, Setting};
use crate::state::audit::{unix_ms, ACTOR_PLAN};
use crate::state::plan::verdict::CONFIDENCE;
use crate::state::plan::PlanStatus;
use crate::state::ratelimit::KEYS_PER_LIMIT;
use crate::state::{
    server_views, ExplainQuery, Explanation, GatewayState, OverlayMode, View, EXPLAIN_METHOD,
};
use crate::upstreams::{HealthProbe, HostHeader, Pool};

/// `GET /config`: the gateway section in force as YAML, a file `-t` accepts, with every inline
/// secret redacted (see [`GatewaySpec::redacted`]).
pub(crate) fn config(spec: &GatewaySpec) -> Result<String, serde_yaml::Error> {
    spec.redacted().to_yaml()
}

/// Every route's rate limits: settings, where each counts (`local`, `redis`, or `local
/// fallback` while Redis does not answer) and the keys its local table holds.
fn rate_limits(state: &GatewayState) -> Vec<Value> {
    let shared = state.shared_limits.as_deref();
    state
        .routes
        .iter()
        .filter_map(|route| route.limits.as_ref())
        .flat_map(|limits| {
            limits.limits.iter().map(move |route_limit| {
                let limit = &route_limit.limit;
                let c = &limit.config;
                let counted = match (c.shared, shared) {
                    (true, Some(shared)) => shared.mode(),
                    _ => "local",
                };
                json!({
                    "route": limits.route,
                    "name": c.name,
                    "paths": c.paths,
                    "key": c.key.describe(),
                    "rate": c.rate,
                    "burst": c.burst,
                    "shared": c.shared,
                    "gateway_wide": c.gateway_wide,
                    "counted": counted,
                    "fallback": c.shared && counted != "redis",
                    "local_keys": limit.local_keys(),
                    "local_key_capacity": KEYS_PER_LIMIT,
                })
            })
        })
        .collect()
}

/// A group's servers as `/status` shows them: each address served, its health and weight,
/// and the mode and requests in flight of the configured server it is (or is an address of).
fn servers_status(pool: &Pool) -> Vec<Value> {
    let views = server_views(pool);
    pool.health()
        .iter()
        .map(|(served, healthy)| {
            let addr = served.to_string();
            let view = views
                .iter()
                .find(|v| v.server == addr || v.addrs.contains(&addr));
            json!({
                "addr": addr,
                "server": view.map(|v| v.server.as_str()),
                "weight": pool.weight(*served),
                "healthy": healthy,
                "mode": view.map_or("enabled", |v| v.mode),
                "in_flight": view.map_or(0, |v| v.in_flight),
            })
        })
        .collect()
}

/// `GET /status`. With one route, its rules and mode also stand at the top level, as they did
/// before routes existed.
pub(crate) fn status(view: &View) -> Value {
    let state = &view.state;
    let groups: Vec<Value> = state
        .pools
        .iter()
        .map(|pool| {
            let c = &pool.config;
            json!({
                "name": c.name,
                "selection": format!("{:?}", c.selection).to_lowercase(),
                "health_check": c.health_check.as_ref().map(|hc| json!({
                    "type": match hc.probe { HealthProbe::Tcp => "tcp", _ => "http" },
                    "interval_ms": hc.interval.as_millis() as u64,
                })),
                "fallback": c.fallback.map(|g| state.group_name(g)),
                "host_header": match &c.host_header {
                    HostHeader::Client => "client".to_string(),
                    HostHeader::Server => "server".to_string(),
                    HostHeader::Name(name) => String::from_utf8_lossy(name.as_bytes()).into_owned(),
                },
                "servers": servers_status(pool),
                "names": pool.names().iter().map(|n| json!({
                    "name": n.name,
                    "addrs": n.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "failures": n.failures,
                    "error": n.error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let routes: Vec<Value> = view
        .routes
        .iter()
        .zip(&state.routes)
        .map(|(config, live)| route_status(view, config, &live.router))
        .collect();
    let plans: Vec<Value> = view
        .routes
        .iter()
        .flat_map(|route| {
            route
                .plans
                .iter()
                .map(move |(rule, plan)| plan_status(view, &route.name, rule, plan))
        })
        .collect();
    let mut status = json!({
        "generation": view.generation,
        "control": {
            "version": view.control.version,
            "source": view.control.source,
            "node": view.control.node,
            "plan_leader": view.control.leader,
        },
        "plans": plans,
        "config_file": view.config_file,
        "state_file": view.state_file.as_ref().map(|p| p.display().to_string()),
        "global_mode": mode_json(&view.overlay.mode),
        "listen": view.listen,
        "open_files": super::descriptors::open_files().map(|files| json!({
            "limit": files.limit,
            "hard_limit": files.hard,
            "at_start": files.before,
        })),
        "connections": crate::proxy::connections::listener_loads().into_iter().map(|l| json!({
            "listener": l.addr,
            "kind": l.kind,
            "max_connections": l.max_connections,
            "open": l.open,
            "idle": l.idle,
            "refused": l.refused,
            "idle_closed": l.closed_idle,
        })).collect::<Vec<_>>(),
        "certificates": certificates(&view.state),
        "acme": acme_certificates(),
        "groups": groups,
        "routes": routes,
        "overlay_warnings": view.overlay_warnings,
        "store": view.store.as_ref().map(|store| json!({
            "redis": store.config.redacted_url(),
            "connected": store.is_connected(),
            "sets": store.staleness().into_iter().map(|(name, stale, members)| json!({
                "set": name,
                "loaded": stale.is_some(),
                "members": members,
                "stale_seconds": stale,
            })).collect::<Vec<_>>(),
        })),
        "rate_limits": rate_limits(state),
        "last_reload": view.last_reload.as_ref().map(|r| json!({
            "at": humantime::format_rfc3339_seconds(r.at).to_string(),
            "ok": r.error.is_none(),
            "error": r.error,
        })),
    });
    if let [only] = routes.as_slice() {
        for key in ["mode", "mode_source", "default_group", "cookie", "rules"] {
            status[key] = only[key].clone();
        }
    }
    status
}

/// The ACME certificates: names, state (`waiting`, `issued`, `failing`), expiry, serial,
/// failures in a row and the last error.
fn acme_certificates() -> Vec<Value> {
    crate::state::acme::statuses()
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect()
}

/// The TLS listeners' certificates: names, expiry and whether it is near.
fn certificates(state: &crate::state::GatewayState) -> Vec<Value> {
    let now = crate::config::unix_now();
    let mut out = Vec::new();
    for (addr, listener) in &state.tls {
        for (i, cert) in listener.certificates.iter().enumerate() {
            let expires = UNIX_EPOCH + Duration::from_secs(cert.not_after.max(0) as u64);
            out.push(json!({
                "listener": addr,
                "cert": cert.cert_file.display().to_string(),
                "names": cert.names,
                "default": i == listener.default_certificate,
                "key_type": cert.key_type,
                "issuer": cert.issuer,
                "serial": cert.serial,
                "not_after": humantime::format_rfc3339_seconds(expires).to_string(),
                "days_left": cert.days_left(now),
                "warning": cert.expires_soon(now).map(|days| format!(
                    "expires in {days} days (warning under {} days)",
                    crate::config::EXPIRY_WARNING_DAYS
                )),
            }));
        }
    }
    out
}

/// One route in `/status`: what it matches, its override and its rules with their sources.
fn route_status(view: &View, config: &RouteConfig, router: &Router) -> Value {
    let name = router.group_names();
    let group = |g: crate::routing::GroupId| name.get(g.0).map_or("?", String::as_str);
    let changes = view.overlay.route(&config.name);
    let rules: Vec<Value> = router
        .rules()
        .iter()
        .map(|rule| {
            let mut v = json!({ "kind": rule.kind_name().as_str() });
            for (key, setting) in rule.kind().settings() {
                v[key] = match setting {
                    Setting::Text(text) => json!(text),
                    Setting::Flag(flag) => json!(flag),
                    Setting::Texts(texts) => json!(texts),
                    Setting::Group(g) => json!(group(g)),
                    Setting::Count(n) => json!(n),
                    Setting::Share(share) => json!(share),
                };
            }
            if let Some(when) = rule.when() {
                let conditions: Vec<String> =
                    when.conditions().iter().map(|c| c.describe()).collect();
                v["when"] = json!(conditions);
            }
            // Where a list or a share came from is the controller's to say, not the rule's.
            if rule.user_set().is_some() {
                let delta = changes.and_then(|c| c.users.get(rule.name()));
                let store_set = config.store_sets.get(rule.name());
                v["users_source"] = json!(match (store_set, delta) {
                    (Some(_), _) => "store",
                    (None, Some(_)) => "file+api",
                    (None, None) => "file",
                });
                v["users_store"] = json!(store_set);
                v["api_added"] = json!(delta.map_or(0, |d| d.add.len()));
                v["api_removed"] = json!(delta.map_or(0, |d| d.remove.len()));
            }
            if rule.share().is_some() {
                v["percent_source"] = json!(changes
                    .filter(|c| c.percent.contains_key(rule.name()))
                    .map_or("file", |c| match c.percent_by.get(rule.name()) {
                        Some(by) if by == ACTOR_PLAN => "plan",
                        _ => "api",
                    }));
                v["percent_set_by"] = json!(changes.and_then(|c| c.percent_by.get(rule.name())));
                v["plan"] = json!(config.plans.get(rule.name()).map(|_| {
                    view.overlay
                        .plan(&config.name, rule.name())
                        .map_or("not_started", |p| p.status.as_str())
                }));
            }
            v["name"] = json!(rule.name());
            v
        })
        .collect();
    let mode = match router.mode() {
        Mode::Rules => json!("rules"),
        Mode::Rollback => json!("rollback"),
        Mode::Promote(g) => json!({ "promote": group(g) }),
    };
    let from_api = view.overlay.mode != OverlayMode::Rules
        || changes.is_some_and(|c| c.mode != OverlayMode::Rules);
    json!({
        "name": config.name,
        "hosts": config.matching.hosts,
        "paths": config.matching.paths,
        "strip_prefix": config.strip_prefix,
        "access": config.access.as_deref().map(access_status),
        "compress": config.compress.as_deref().map(compress_status),
        "error_pages": config.error_pages.as_deref().map(error_pages_status),
        "maintenance": view.overlay.route(&config.name).and_then(|r| r.maintenance).map(|m| json!({
            "on": true,
            "retry_after_secs": m.retry_after_secs,
        })),
        "mode": mode,
        "mode_source": if from_api { "api" } else { "file" },
        "default_group": group(router.default_group()),
        "cookie": router.cookie(),
        "identity": router.identity().map_or_else(
            || vec![format!("cookie:{}", router.cookie())],
            |i| i.describe(),
        ),
        "rules": rules,
    })
}

/// A route's compression in `/status`: the algorithms in order, the level, the smallest
/// body compressed and the media types.
fn compress_status(compress: &CompressConfig) -> Value {
    json!({
        "algorithms": compress.codings.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        "level": compress.level,
        "min_size": compress.min_size,
        "types": compress.types,
    })
}

/// A route's error pages in `/status`: status → file, and `intercept_errors`.
fn error_pages_status(pages: &crate::config::ErrorPages) -> Value {
    let files: serde_json::Map<String, Value> = pages
        .files()
        .map(|(code, file)| (code.to_string(), json!(file)))
        .collect();
    json!({ "pages": files, "intercept_errors": pages.intercept })
}

/// A route's access control in `/status`: its networks, and its htpasswd file's name and
/// number of users (never a hash).
fn access_status(access: &Access) -> Value {
    let networks = |list: &[crate::routing::Cidr]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    json!({
        "allow": access.allow().map(networks),
        "deny": networks(access.deny()),
        "basic_auth": access.basic().map(|basic| json!({
            "users_file": basic.users_file(),
            "realm": basic.realm(),
            "users": basic.users().len(),
        })),
    })
}

/// `GET /rules/{rule}/plan`: the plan of `route`'s rule `rule` as `/status` shows it (`None`
/// when the rule has no plan).
pub(crate) fn plan(view: &View, route: &str, rule: &str) -> Option<Value> {
    let config = view.routes.iter().find(|r| r.name == route)?;
    let plan = config.plans.get(rule)?;
    Some(plan_status(view, route, rule, plan))
}

/// One rollout plan in `/status`: its settings, where it stands (a held plan's time in step
/// stands still), the figures and tests of the step as last judged on this node, and its last
/// move with the reason.
fn plan_status(view: &View, route: &str, rule: &str, plan: &PlanConfig) -> Value {
    let state = view.overlay.plan(route, rule);
    // Only a report of the window that runs now: after a hold, the old window's is stale.
    let report = view
        .control
        .reports
        .get(&(route.to_string(), rule.to_string()))
        .filter(|r| {
            state.is_some_and(|s| {
                s.status == PlanStatus::Running && s.step_started_ms == r.step_started_ms
            })
        });
    let steps: Vec<f64> = plan.steps.iter().map(|p| p.as_f64()).collect();
    // A held plan's clock stands still at the moment it was held.
    let in_step = state.filter(|s| s.status.is_active()).map(|s| {
        let until = match s.status {
            PlanStatus::Held => s.last_action.at_ms,
            _ => unix_ms(),
        };
        until.saturating_sub(s.step_started_ms) as f64 / 1000.0
    });
    json!({
        "route": route,
        "rule": rule,
        "state": state.map_or("not_started", |s| s.status.as_str()),
        "step": state.map(|s| s.step + 1),
        "step_percent": state.and_then(|s| steps.get(s.step)),
        "steps": steps,
        "time_in_step_seconds": in_step,
        "step_started_ms": state.map(|s| s.step_started_ms),
        "hold_seconds": plan.hold.as_secs_f64(),
        "min_requests": plan.min_requests,
        "group": plan.group,
        "baseline": plan.baseline,
        "max_error_rate_increase": plan.max_error_rate_increase,
        "max_p99_ratio": plan.max_p99_ratio,
        "max_median_ratio": plan.max_median_ratio,
        "confidence": CONFIDENCE,
        "on_failure": match plan.on_failure { OnFailure::Rollback => "rollback", OnFailure::Pause => "pause" },
        "judging": report.map(|r| json!({
            "at_ms": r.at_ms,
            "canary": r.figures.canary,
            "baseline": r.figures.baseline,
            "tests": r.figures.tests,
            "verdict": r.verdict,
        })),
        "last_action": state.map(|s| &s.last_action),
    })
}

fn mode_json(mode: &OverlayMode) -> Value {
    match mode {
        OverlayMode::Rules => json!("rules"),
        OverlayMode::Rollback => json!("rollback"),
        OverlayMode::Promote(group) => json!({ "promote": group }),
    }
}

/// `GET /explain`.
pub(crate) fn explain(e: &Explanation, q: &ExplainQuery) -> Value {
    let route = e.route.and_then(|r| e.state.routes.get(r.0));
    let decision = e.decision.as_ref();
    let pairs = |pairs: &[(String, String)]| -> Value {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    // Each rule in order: whether its conditions all hold and where it would send the request.
    let rules: Vec<Value> = route
        .map(|r| {
            r.router
                .rules()
                .iter()
                .zip(&e.rules)
                .map(|(rule, trace)| {
                    json!({
                        "rule": rule.name(),
                        "kind": rule.kind_name().as_str(),
                        "conditions": trace.conditions.iter().map(|(text, holds)| json!({
                            "condition": text,
                            "holds": holds,
                        })).collect::<Vec<_>>(),
                        "conditions_hold": trace.conditions.iter().all(|(_, holds)| *holds),
                        "takes": trace.takes.map(|g| e.state.group_name(g)),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "host": q.host.as_deref(),
        "path": q.path.as_deref().unwrap_or("/"),
        "method": q.method.as_deref().unwrap_or(EXPLAIN_METHOD),
        "client": q.client.map(|ip| ip.to_string()),
        "headers": pairs(&q.headers),
        "cookies": pairs(&q.cookies),
        "query": pairs(&q.query),
        "rules": rules,
        "route": route.map(|r| r.name.as_str()),
        "user": q.user.as_deref(),
        "user_valid": e.user_valid,
        "identity": e.id_source.as_str(),
        "header": q.header.as_deref(),
        "group": decision.map(|d| e.state.group_name(d.group)),
        "rule": route.zip(decision).filter(|(_, d)| d.rule.is_some()).map(|(r, d)| r.rule_name(d)),
        "reason": decision.map_or("no_route", |d| d.reason.as_str()),
        "group_healthy": e.group_healthy,
        "served_by": e.served_by.map(|g| e.state.group_name(g)),
    })
}
