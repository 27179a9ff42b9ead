//! Live configuration: the controller owns the configuration file's settings plus the changes
//! made through the admin API (the overlay, kept in the state file), builds a new
//! [`GatewayState`] from them and swaps it in atomically. Requests never take its lock: they
//! read the state through `arc-swap`, and a request in flight keeps the snapshot it started with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use log::{error, info, warn};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{self, GatewayConfig};
use crate::proxy::GatewayState;
use crate::routing::{
    is_valid_user_id, percent_to_ppm, HeaderLookup, Matcher, Mode, Router, PERCENT_SCALE_PPM,
};
use crate::store::Store;
use crate::upstreams::Pool;
use crate::userset::UserSet;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// The built-in demo configuration.
    Demo,
}

impl ConfigSource {
    fn load(&self) -> Result<GatewayConfig, String> {
        let loaded = match self {
            ConfigSource::File(path) => config::load_file(path),
            ConfigSource::Demo => config::load_demo(),
        };
        loaded.map(|l| l.gateway).map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Demo => config::DEMO_CONFIG_NAME.to_string(),
        }
    }
}

/// Changes made through the admin API, laid over the configuration file. This is what the
/// state file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    #[serde(default)]
    pub mode: OverlayMode,
    /// Percentage per rule name.
    #[serde(default)]
    pub percent: BTreeMap<String, f64>,
    /// Users added to / removed from a list rule, per rule name.
    #[serde(default)]
    pub users: BTreeMap<String, UsersDelta>,
}

/// The operator override, by group name so it survives group reordering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlayMode {
    #[default]
    Rules,
    Rollback,
    Promote(String),
}

/// Users added to and removed from one list rule through the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersDelta {
    #[serde(default)]
    pub add: BTreeSet<String>,
    #[serde(default)]
    pub remove: BTreeSet<String>,
}

/// An admin API failure: the HTTP status, the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: 404,
            field: None,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            field: None,
            message: message.into(),
        }
    }
}

/// The outcome of the last reload.
#[derive(Debug, Clone)]
struct ReloadOutcome {
    at: SystemTime,
    error: Option<String>,
}

struct Inner {
    /// The configuration file's settings, as last loaded successfully.
    base: GatewayConfig,
    overlay: Overlay,
    generation: u64,
    last_reload: Option<ReloadOutcome>,
    /// Overlay entries that no longer fit the file (a rule removed or changed kind).
    overlay_warnings: Vec<String>,
}

/// Owns the live configuration and swaps new states in.
pub struct Controller {
    source: ConfigSource,
    state: Arc<ArcSwap<GatewayState>>,
    state_file: Option<PathBuf>,
    /// The Redis store, when configured (fixed at start, like the listeners).
    store: Option<Arc<Store>>,
    inner: Mutex<Inner>,
}

impl Controller {
    /// Builds the first state from `config` and the state file (if any).
    pub fn new(source: ConfigSource, config: GatewayConfig) -> Result<Controller, String> {
        let state_file = config.admin.as_ref().and_then(|a| a.state_file.clone());
        let overlay = match &state_file {
            Some(path) => read_state_file(path)?,
            None => Overlay::default(),
        };
        let store = match &config.store {
            Some(store_config) => {
                let sets: Vec<String> = config.store_sets.values().cloned().collect();
                Some(Arc::new(Store::new(store_config.clone(), &sets)?))
            }
            None => None,
        };
        if store.is_some() {
            warn!(
                "store: user sets {:?} serve from their users files (or empty) until Redis is loaded",
                config.store_sets.values().collect::<Vec<_>>()
            );
        }
        let (state, overlay_warnings) = build_state(&config, &overlay, None, store.as_deref())?;
        for w in &overlay_warnings {
            warn!("state file: {w}");
        }
        Ok(Controller {
            source,
            state: Arc::new(ArcSwap::from_pointee(state)),
            state_file,
            store,
            inner: Mutex::new(Inner {
                base: config,
                overlay,
                generation: 1,
                last_reload: None,
                overlay_warnings,
            }),
        })
    }

    /// The state handle the proxy and the health checker read.
    pub fn state(&self) -> Arc<ArcSwap<GatewayState>> {
        self.state.clone()
    }

    /// The Redis store, when configured.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.clone()
    }

    /// The store and set behind a store-backed users rule.
    pub fn store_set(&self, rule: &str) -> Option<(Arc<Store>, String)> {
        let set = self.lock().base.store_sets.get(rule).cloned()?;
        Some((self.store.clone()?, set))
    }

    /// Rebuilds the routing after the store's snapshots changed.
    pub fn refresh_store(&self) {
        let mut inner = self.lock();
        let previous = self.state.load_full();
        match build_state(
            &inner.base,
            &inner.overlay,
            Some(&previous),
            self.store.as_deref(),
        ) {
            Ok((state, _)) => {
                inner.generation += 1;
                self.state.store(Arc::new(state));
            }
            Err(e) => error!("store: cannot rebuild the routing: {e}"),
        }
    }

    /// The current configuration generation (1 at start, +1 per applied change).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is applied by a
        // single store at the end), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the configuration file (and users files), validates it and swaps it in. On
    /// error the running configuration stays and the error is kept for `/status`.
    pub fn reload(&self) -> Result<u64, String> {
        let mut inner = self.lock();
        let result = self.source.load().and_then(|config| {
            if config.listen != inner.base.listen {
                warn!(
                    "reload: gateway.listen changed ({} -> {}); listener addresses cannot change on reload, restart (or upgrade with -u) to apply",
                    inner.base.listen.join(", "),
                    config.listen.join(", ")
                );
            }
            let old_admin = inner.base.admin.as_ref().map(|a| (a.listen, &a.state_file));
            let new_admin = config.admin.as_ref().map(|a| (a.listen, &a.state_file));
            if old_admin != new_admin {
                warn!("reload: gateway.admin listen/state_file changed; these apply on restart only");
            }
            let previous = self.state.load_full();
            let (state, warnings) =
                build_state(&config, &inner.overlay, Some(&previous), self.store.as_deref())?;
            Ok((config, state, warnings))
        });
        let at = SystemTime::now();
        match result {
            Ok((config, state, warnings)) => {
                for w in &warnings {
                    warn!("reload: {w}");
                }
                // Keep the admin settings the process started with (listener, token, file).
                let admin = inner.base.admin.clone();
                inner.base = GatewayConfig { admin, ..config };
                inner.overlay_warnings = warnings;
                inner.generation += 1;
                inner.last_reload = Some(ReloadOutcome { at, error: None });
                self.state.store(Arc::new(state));
                crate::metrics::METRICS
                    .reloads
                    .with_label_values(&["ok"])
                    .inc();
                info!(
                    "reload: {} applied, generation {}",
                    self.source.describe(),
                    inner.generation
                );
                Ok(inner.generation)
            }
            Err(e) => {
                error!("reload refused, the running configuration stays: {e}");
                crate::metrics::METRICS
                    .reloads
                    .with_label_values(&["error"])
                    .inc();
                inner.last_reload = Some(ReloadOutcome {
                    at,
                    error: Some(e.clone()),
                });
                Err(e)
            }
        }
    }

    /// `PUT /rules/{name}/percent`.
    pub fn set_percent(&self, rule: &str, percent: f64) -> Result<u64, ApiError> {
        if percent_to_ppm(percent).is_none() {
            return Err(ApiError::bad_request(
                "percent",
                format!("{percent} is not in 0..=100"),
            ));
        }
        self.change(|inner, overlay| {
            match find_rule(&inner.base, rule)? {
                Matcher::Percent { .. } => {}
                _ => {
                    return Err(ApiError::bad_request(
                        "name",
                        format!("rule {rule:?} is not a percent rule"),
                    ))
                }
            }
            overlay.percent.insert(rule.to_string(), percent);
            Ok(())
        })
    }

    /// `POST /rules/{name}/users`.
    pub fn change_users(
        &self,
        rule: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<u64, ApiError> {
        check_user_ids(add, remove)?;
        self.change(|inner, overlay| {
            match find_rule(&inner.base, rule)? {
                Matcher::Users { .. } => {}
                _ => {
                    return Err(ApiError::bad_request(
                        "name",
                        format!("rule {rule:?} is not a users rule"),
                    ))
                }
            }
            let delta = overlay.users.entry(rule.to_string()).or_default();
            for id in add {
                delta.remove.remove(id);
                delta.add.insert(id.clone());
            }
            for id in remove {
                delta.add.remove(id);
                delta.remove.insert(id.clone());
            }
            Ok(())
        })
    }

    /// `POST /rollback`, `POST /promote`, `POST /resume`.
    pub fn set_mode(&self, mode: OverlayMode) -> Result<u64, ApiError> {
        self.change(|inner, overlay| {
            if let OverlayMode::Promote(group) = &mode {
                if inner.base.router.group_by_name(group.as_bytes()).is_none() {
                    return Err(ApiError::bad_request(
                        "group",
                        format!(
                            "{group:?} is not a group (groups: {})",
                            inner.base.router.group_names.join(", ")
                        ),
                    ));
                }
            }
            overlay.mode = mode.clone();
            Ok(())
        })
    }

    /// Applies an overlay edit: validate, persist, then swap in.
    fn change(
        &self,
        edit: impl FnOnce(&Inner, &mut Overlay) -> Result<(), ApiError>,
    ) -> Result<u64, ApiError> {
        let mut inner = self.lock();
        let mut overlay = inner.overlay.clone();
        edit(&inner, &mut overlay)?;
        let previous = self.state.load_full();
        let (state, warnings) = build_state(
            &inner.base,
            &overlay,
            Some(&previous),
            self.store.as_deref(),
        )
        .map_err(ApiError::internal)?;
        if let Some(path) = &self.state_file {
            write_state_file(path, &overlay).map_err(ApiError::internal)?;
        }
        inner.overlay = overlay;
        inner.overlay_warnings = warnings;
        inner.generation += 1;
        self.state.store(Arc::new(state));
        info!("admin change applied, generation {}", inner.generation);
        Ok(inner.generation)
    }

    /// `GET /status` as JSON. Secrets (the admin token) are never included.
    pub fn status(&self) -> Value {
        let inner = self.lock();
        let state = self.state.load_full();
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
                        "type": match hc.probe { crate::upstreams::HealthProbe::Tcp => "tcp", _ => "http" },
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
                        let delta = inner.overlay.users.get(&rule.name);
                        let store_set = inner.base.store_sets.get(&rule.name);
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
                    Matcher::Percent { ppm, seed } => json!({
                        "kind": "percent",
                        "group": router.group_name(rule.group),
                        "percent": f64::from(*ppm) * 100.0 / f64::from(PERCENT_SCALE_PPM),
                        "percent_source": if inner.overlay.percent.contains_key(&rule.name) { "api" } else { "file" },
                        "seed": String::from_utf8_lossy(seed),
                    }),
                };
                v["name"] = json!(rule.name);
                v
            })
            .collect();
        let mode = match router.mode {
            Mode::Rules => json!("rules"),
            Mode::Rollback => json!("rollback"),
            Mode::Promote(g) => json!({ "promote": router.group_name(g) }),
        };
        json!({
            "generation": inner.generation,
            "config_file": self.source.describe(),
            "state_file": self.state_file.as_ref().map(|p| p.display().to_string()),
            "mode": mode,
            "mode_source": if inner.overlay.mode == OverlayMode::Rules { "file" } else { "api" },
            "default_group": router.group_name(router.default_group),
            "cookie": router.cookie,
            "listen": inner.base.listen,
            "groups": groups,
            "rules": rules,
            "overlay_warnings": inner.overlay_warnings,
            "store": self.store.as_ref().map(|store| json!({
                "redis": store.config.redacted_url(),
                "connected": store.is_connected(),
                "sets": store.staleness().into_iter().map(|(name, stale, members)| json!({
                    "set": name,
                    "loaded": stale.is_some(),
                    "members": members,
                    "stale_seconds": stale,
                })).collect::<Vec<_>>(),
            })),
            "last_reload": inner.last_reload.as_ref().map(|r| json!({
                "at": humantime::format_rfc3339_seconds(r.at).to_string(),
                "ok": r.error.is_none(),
                "error": r.error,
            })),
        })
    }

    /// `GET /explain`: what `decide()` says for this user (and override header value).
    pub fn explain(&self, user: Option<&str>, header: Option<&str>) -> Value {
        let state = self.state.load_full();
        let router = &state.router;
        let valid_user = user.filter(|u| is_valid_user_id(u.as_bytes()));
        let headers = ExplainHeaders {
            router,
            value: header,
        };
        let decision = router.decide(valid_user.map(str::as_bytes), &headers);
        let pool = state.pools.get(decision.group.0);
        let healthy = pool.is_some_and(|p| p.any_healthy());
        let served = if healthy {
            Some(decision.group)
        } else {
            // Where the fallback chain leads right now.
            let mut group = decision.group;
            let mut found = None;
            for _ in 0..state.pools.len() {
                match state.pools.get(group.0).and_then(|p| p.config.fallback) {
                    Some(next) => {
                        group = next;
                        if state.pools.get(group.0).is_some_and(|p| p.any_healthy()) {
                            found = Some(group);
                            break;
                        }
                    }
                    None => break,
                }
            }
            found
        };
        json!({
            "user": user,
            "user_valid": valid_user.is_some(),
            "header": header,
            "group": router.group_name(decision.group),
            "rule": decision.rule.map(|_| router.rule_name(&decision)),
            "reason": decision.reason.as_str(),
            "group_healthy": healthy,
            "served_by": served.map(|g| router.group_name(g)),
        })
    }
}

/// Gives the explain endpoint's header value to every header rule.
struct ExplainHeaders<'a> {
    router: &'a Router,
    value: Option<&'a str>,
}

impl HeaderLookup for ExplainHeaders<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        let is_rule_header = self
            .router
            .rules
            .iter()
            .any(|r| matches!(&r.matcher, Matcher::Header { name: n, .. } if n == name));
        self.value.filter(|_| is_rule_header).map(str::as_bytes)
    }
}

/// Rejects user ids that could never come out of a cookie (400 naming `add` or `remove`).
pub fn check_user_ids(add: &[String], remove: &[String]) -> Result<(), ApiError> {
    for (field, ids) in [("add", add), ("remove", remove)] {
        if let Some(bad) = ids.iter().find(|id| !is_valid_user_id(id.as_bytes())) {
            return Err(ApiError::bad_request(
                field,
                format!("{bad:?} is not a valid user id (1-256 cookie-safe characters)"),
            ));
        }
    }
    Ok(())
}

fn find_rule<'a>(config: &'a GatewayConfig, name: &str) -> Result<&'a Matcher, ApiError> {
    config
        .router
        .rules
        .iter()
        .find(|r| r.name == name)
        .map(|r| &r.matcher)
        .ok_or_else(|| ApiError::not_found(format!("no rule named {name:?}")))
}

/// Builds the runtime state from the file's configuration and the overlay. Pools whose group
/// settings did not change are kept, with their health state and connections.
fn build_state(
    config: &GatewayConfig,
    overlay: &Overlay,
    previous: Option<&GatewayState>,
    store: Option<&Store>,
) -> Result<(GatewayState, Vec<String>), String> {
    let (mut router, warnings) = apply_overlay(&config.router, overlay);
    // Store-backed rules take the store's snapshot once one was loaded.
    if let Some(store) = store {
        for rule in &mut router.rules {
            let Some(set) = config.store_sets.get(&rule.name) else {
                continue;
            };
            if let (Matcher::Users { users }, Some(snapshot)) =
                (&mut rule.matcher, store.snapshot(set))
            {
                *users = snapshot;
            }
        }
    }
    let pools = config
        .groups
        .iter()
        .map(|group| {
            previous
                .and_then(|p| p.pools.iter().find(|pool| pool.config == *group))
                .cloned()
                .unwrap_or_else(|| Arc::new(Pool::new(group.clone())))
        })
        .collect();
    let state = GatewayState::new(Arc::new(router), pools, config).map_err(|e| e.to_string())?;
    Ok((state, warnings))
}

/// The file's router with the API's changes applied; entries that no longer fit are reported.
fn apply_overlay(base: &Router, overlay: &Overlay) -> (Router, Vec<String>) {
    let mut router = base.clone();
    let mut warnings = Vec::new();
    router.mode = match &overlay.mode {
        OverlayMode::Rules => Mode::Rules,
        OverlayMode::Rollback => Mode::Rollback,
        OverlayMode::Promote(name) => match base.group_by_name(name.as_bytes()) {
            Some(group) => Mode::Promote(group),
            None => {
                warnings.push(format!(
                    "promote: group {name:?} no longer exists; rules are running"
                ));
                Mode::Rules
            }
        },
    };
    for (name, percent) in &overlay.percent {
        match router.rules.iter_mut().find(|r| &r.name == name) {
            Some(rule) => match (&mut rule.matcher, percent_to_ppm(*percent)) {
                (Matcher::Percent { ppm, .. }, Some(new)) => *ppm = new,
                _ => warnings.push(format!(
                    "percent for rule {name:?} ignored: not a percent rule now"
                )),
            },
            None => warnings.push(format!("percent for rule {name:?} ignored: no such rule")),
        }
    }
    for (name, delta) in &overlay.users {
        match router.rules.iter_mut().find(|r| &r.name == name) {
            Some(rule) => match &mut rule.matcher {
                Matcher::Users { users } => {
                    let kept = users
                        .iter()
                        .filter(|id| !delta.remove.iter().any(|r| r.as_bytes() == *id));
                    let added = delta.add.iter().map(|id| id.as_bytes());
                    *users = Arc::new(UserSet::from_ids(kept.chain(added)));
                }
                _ => warnings.push(format!(
                    "users for rule {name:?} ignored: not a users rule now"
                )),
            },
            None => warnings.push(format!("users for rule {name:?} ignored: no such rule")),
        }
    }
    (router, warnings)
}

fn read_state_file(path: &Path) -> Result<Overlay, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("state file {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overlay::default()),
        Err(e) => Err(format!("state file {}: {e}", path.display())),
    }
}

/// Writes the state file atomically: a temporary file in the same folder, synced, renamed.
fn write_state_file(path: &Path, overlay: &Overlay) -> Result<(), String> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(overlay).map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        format!("cannot write state file {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_wins_over_earlier_add_and_back() {
        let base = config::load_demo().expect("demo").gateway;
        let controller = Controller::new(ConfigSource::Demo, base).expect("controller");
        controller
            .change_users("vip", &["zoe".into()], &["alice".into()])
            .expect("change");
        let status = controller.status();
        let vip = &status["rules"][1];
        assert_eq!(vip["name"], "vip");
        assert_eq!(vip["users"], 2, "alice out, zoe in: {vip}");
        assert_eq!(controller.explain(Some("zoe"), None)["rule"], "vip");
        assert_eq!(controller.explain(Some("alice"), None)["rule"], Value::Null);
        controller
            .change_users("vip", &["alice".into()], &["zoe".into()])
            .expect("change back");
        assert_eq!(controller.explain(Some("alice"), None)["rule"], "vip");
        assert_eq!(controller.generation(), 3);
    }

    #[test]
    fn overlay_entries_that_no_longer_fit_are_reported() {
        let base = config::load_demo().expect("demo").gateway;
        let overlay = Overlay {
            mode: OverlayMode::Promote("gone".into()),
            percent: [("vip".to_string(), 5.0), ("nope".to_string(), 5.0)].into(),
            users: [("rollout".to_string(), UsersDelta::default())].into(),
        };
        let (router, warnings) = apply_overlay(&base.router, &overlay);
        assert_eq!(router.mode, Mode::Rules);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
    }

    #[test]
    fn api_errors_name_the_field() {
        let base = config::load_demo().expect("demo").gateway;
        let c = Controller::new(ConfigSource::Demo, base).expect("controller");
        assert_eq!(
            c.set_percent("rollout", 101.0)
                .unwrap_err()
                .field
                .as_deref(),
            Some("percent")
        );
        assert_eq!(
            c.set_percent("vip", 5.0).unwrap_err().field.as_deref(),
            Some("name")
        );
        assert_eq!(c.set_percent("nope", 5.0).unwrap_err().status, 404);
        let bad = c
            .change_users("vip", &["has space".into()], &[])
            .unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("add"));
        let bad = c.set_mode(OverlayMode::Promote("nope".into())).unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("group"));
        assert_eq!(c.generation(), 1, "failed changes apply nothing");
    }
}
