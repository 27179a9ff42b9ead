//! The admin API's JSON views: `GET /status` and `GET /explain`, built from what the
//! controller reports. Secrets (the admin token, signing keys, header secrets) never appear.

use serde_json::{json, Value};

use crate::routing::Matcher;
use crate::state::{Explanation, OverlayMode, View};
use crate::upstreams::HealthProbe;

/// `GET /status`.
pub fn status(view: &View) -> Value {
    let state = &view.state;
    let router = &state.router;
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
                "fallback": c.fallback.map(|g| router.group_name(g)),
                "servers": pool.health().iter().map(|(addr, healthy)| json!({
                    "addr": addr.to_string(),
                    "weight": c.servers.iter().find(|s| s.addr == *addr).map_or(1, |s| s.weight),
                    "healthy": healthy,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let rules: Vec<Value> = router
        .rules
        .iter()
        .map(|rule| {
            let mut v = match &rule.matcher {
                Matcher::Header { name, secret, from } => json!({
                    "kind": "header",
                    "header": name,
                    "needs_secret": secret.is_some(),
                    "from": from.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                }),
                Matcher::Users { users } => {
                    let delta = view.overlay.users.get(&rule.name);
                    let store_set = view.store_sets.get(&rule.name);
                    let source = match (store_set, delta) {
                        (Some(_), _) => "store",
                        (None, Some(_)) => "file+api",
                        (None, None) => "file",
                    };
                    json!({
                        "kind": "users",
                        "group": router.group_name(rule.group),
                        "users": users.len(),
                        "users_source": source,
                        "users_store": store_set,
                        "api_added": delta.map_or(0, |d| d.add.len()),
                        "api_removed": delta.map_or(0, |d| d.remove.len()),
                    })
                }
                Matcher::Percent { share, seed } => json!({
                    "kind": "percent",
                    "group": router.group_name(rule.group),
                    "percent": share.as_f64(),
                    "percent_source": if view.overlay.percent.contains_key(&rule.name) { "api" } else { "file" },
                    "seed": String::from_utf8_lossy(seed),
                }),
            };
            v["name"] = json!(rule.name);
            v
        })
        .collect();
    let mode = match router.mode {
        crate::routing::Mode::Rules => json!("rules"),
        crate::routing::Mode::Rollback => json!("rollback"),
        crate::routing::Mode::Promote(g) => json!({ "promote": router.group_name(g) }),
    };
    json!({
        "generation": view.generation,
        "config_file": view.config_file,
        "state_file": view.state_file.as_ref().map(|p| p.display().to_string()),
        "mode": mode,
        "mode_source": if view.overlay.mode == OverlayMode::Rules { "file" } else { "api" },
        "default_group": router.group_name(router.default_group),
        "cookie": router.cookie,
        "listen": view.listen,
        "groups": groups,
        "rules": rules,
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
        "last_reload": view.last_reload.as_ref().map(|r| json!({
            "at": humantime::format_rfc3339_seconds(r.at).to_string(),
            "ok": r.error.is_none(),
            "error": r.error,
        })),
    })
}

/// `GET /explain`.
pub fn explain(e: &Explanation, user: Option<&str>, header: Option<&str>) -> Value {
    let router = &e.state.router;
    json!({
        "user": user,
        "user_valid": e.user_valid,
        "header": header,
        "group": router.group_name(e.decision.group),
        "rule": e.decision.rule.map(|_| router.rule_name(&e.decision)),
        "reason": e.decision.reason.as_str(),
        "group_healthy": e.group_healthy,
        "served_by": e.served_by.map(|g| router.group_name(g)),
    })
}
