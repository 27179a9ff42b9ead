//! The controller owns the configuration file's settings plus the changes made through the
//! admin API (the overlay, kept in the state file), builds a new [`GatewayState`] from them and
//! swaps it in atomically. Requests never take its lock: they read the state through
//! `arc-swap`, and a request in flight keeps the snapshot it started with.

use http::HeaderValue;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use log::{error, info, warn};

use super::audit::{self, AuditEntry};
use super::figures::StepFigures;
use super::history::History;
use super::metrics::METRICS;
use super::notice::{Notice, NoticeSink};
use super::overlay::{
    apply_overlay, apply_server_modes, install_certificates, read_state_file,
    remove_leftover_temp_files, write_state_file, ControlMessage, Overlay,
};
use super::plan::{PlanState, PlanStatus};
use super::ratelimit::{GatewayWide, RouteLimits};
use super::store::Store;
use super::{GatewayState, StateError};
use crate::config::{self, GatewayConfig, GatewaySpec, PlanConfig, RouteConfig};
use crate::routing::{is_valid_user_id, Kind, Router, Rule};
use crate::upstreams::Pool;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// The built-in demo configuration.
    Demo,
    /// The built-in demo, its admin changes kept in this state file.
    DemoKept(PathBuf),
}

impl ConfigSource {
    /// The gateway section as written and as validated.
    fn load(&self) -> Result<(GatewaySpec, GatewayConfig), StateError> {
        let loaded = match self {
            ConfigSource::File(path) => config::load_file(path),
            ConfigSource::Demo => config::load_demo(),
            ConfigSource::DemoKept(state_file) => config::load_demo_keeping(state_file),
        };
        loaded
            .map(|l| (l.spec, l.gateway))
            .map_err(|e| StateError::invalid(e.to_string()))
    }

    /// The folder the file's relative paths resolve against (the demo's: the working folder).
    pub(crate) fn base_dir(&self) -> PathBuf {
        match self {
            ConfigSource::File(path) => path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
            ConfigSource::Demo | ConfigSource::DemoKept(_) => PathBuf::from("."),
        }
    }

    /// The file's path (or the demo's name), for logs and `/status`.
    pub(crate) fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Demo | ConfigSource::DemoKept(_) => config::DEMO_CONFIG_NAME.to_string(),
        }
    }
}

/// The outcome of the last reload.
#[derive(Debug, Clone)]
pub(crate) struct ReloadOutcome {
    pub(crate) at: SystemTime,
    pub(crate) error: Option<String>,
}

pub(super) struct Inner {
    /// The configuration in force: the file's section, as last loaded successfully, merged
    /// with the API's routes and groups (`overlay.config`) and validated.
    pub(super) base: GatewayConfig,
    /// The file's own gateway section, as last loaded (with the admin settings in force).
    pub(super) spec: Arc<GatewaySpec>,
    /// The section `base` was validated from: `spec` merged with the API's objects.
    pub(super) merged: Arc<GatewaySpec>,
    /// Why the control state's objects are not in force (they did not validate with the
    /// file here); `None` when they are.
    pub(super) objects_warning: Option<String>,
    /// The API's objects `merged` holds: the control state's, or with `objects_warning` the
    /// ones last served (none after a start that could not serve them).
    pub(super) served: config::ConfigObjects,
    /// The control state (with this node's audit trail).
    pub(super) overlay: Overlay,
    pub(super) generation: u64,
    last_reload: Option<ReloadOutcome>,
    /// Overlay entries that no longer fit the file (a rule removed or changed kind).
    overlay_warnings: Vec<String>,
    /// Where the control state came from: `local` (no store: this node's own), `file` (the
    /// state file, until the store answers), `store`.
    control_source: &'static str,
}

/// Owns the live configuration and swaps new states in.
pub(crate) struct Controller {
    pub(super) source: ConfigSource,
    /// The folder the file's relative paths resolve against (for the merged section too).
    pub(super) base_dir: PathBuf,
    state: Arc<ArcSwap<GatewayState>>,
    state_file: Option<PathBuf>,
    /// The Redis store, when configured (fixed at start, like the listeners).
    pub(super) store: Option<Arc<Store>>,
    inner: Mutex<Inner>,
    /// Serializes this node's control changes (each is a round trip to Redis with a store).
    pub(super) change_lock: tokio::sync::Mutex<()>,
    /// What the current write's edit validated, for its apply (see `state::objects`).
    pub(super) validated: Mutex<Option<Validated>>,
    /// This node's id (the plan lease names it).
    node: String,
    /// Whether this node holds the plan lease (always, without a store, while a plan runs).
    leader: AtomicBool,
    /// The last judgement of each running plan on this node.
    reports: Mutex<BTreeMap<(String, String), PlanReport>>,
    /// The last hour of each route's and group's figures, for the web page.
    history: Arc<History>,
    /// Where this node's changes are announced (`gateway.notify`), once installed.
    notices: OnceLock<NoticeSink>,
}

/// A merged section a write's edit validated, kept for its apply (one validation per
/// write; see `state::objects`).
pub(super) struct Validated {
    /// The file's section it was merged over (the one in force then).
    pub(super) file: Arc<GatewaySpec>,
    pub(super) objects: config::ConfigObjects,
    pub(super) merged: Arc<GatewaySpec>,
    pub(super) config: GatewayConfig,
}

/// A plan's last judgement on this node, for `/status`.
#[derive(Debug, Clone)]
pub(crate) struct PlanReport {
    pub(crate) at_ms: u64,
    /// The step window judged: a report of an older window (before a hold) is not shown.
    pub(crate) step_started_ms: u64,
    pub(crate) figures: StepFigures,
    pub(crate) verdict: String,
}

impl Controller {
    /// Builds the first state from `config` (validated from `spec`) and the state file (if any).
    pub(crate) fn new(
        source: ConfigSource,
        spec: GatewaySpec,
        config: GatewayConfig,
    ) -> Result<Controller, StateError> {
        let state_file = config.admin.as_ref().and_then(|a| a.state_file.clone());
        if let Some(path) = &state_file {
            let (removed, failed) = remove_leftover_temp_files(path);
            for leftover in removed {
                warn!(
                    "state file: removed {}, left by a write cut short (its process is gone)",
                    leftover.display()
                );
            }
            for why in failed {
                warn!("state file: {why}");
            }
        }
        let overlay = match &state_file {
            Some(path) => read_state_file(path)?,
            None => Overlay::default(),
        };
        let store = match &config.store {
            Some(store_config) => Some(Arc::new(Store::new(
                store_config.clone(),
                &config.store_set_names(),
            )?)),
            None => None,
        };
        if store.is_some() {
            warn!(
                "store: user sets {:?} serve from their users files (or empty) until Redis is loaded",
                config.store_set_names()
            );
        }
        let base_dir = source.base_dir();
        // The API's objects from the state file; when they no longer fit the file, the file
        // alone is served (a start is no time to refuse) and the reason shown in `/status`.
        let (merged, config, objects_warning) = if overlay.config.is_empty() {
            (spec.clone(), config, None)
        } else {
            match config::objects::validate_merged(
                &spec,
                &overlay.config,
                &base_dir,
                &source.describe(),
            ) {
                Ok((merged, merged_config)) => (merged, merged_config, None),
                Err(e) => {
                    let why = format!(
                        "the API's routes and groups are not served: {e} (the file alone is)"
                    );
                    warn!("state file: {why}");
                    (spec.clone(), config, Some(why))
                }
            }
        };
        install_certificates(&overlay.certificates);
        super::acme::install_requests(&overlay.acme_requests);
        let (state, overlay_warnings) = build_state(&config, &overlay, None, store.as_deref());
        for w in &overlay_warnings {
            warn!("state file: {w}");
        }
        if overlay.version > 0 {
            info!(
                "state file: control state version {} ({})",
                overlay.version,
                if store.is_some() {
                    "served until the store answers"
                } else {
                    "this node's own"
                }
            );
        }
        let inner = Inner {
            base: config,
            spec: Arc::new(spec),
            merged: Arc::new(merged),
            served: if objects_warning.is_none() {
                overlay.config.clone()
            } else {
                config::ConfigObjects::default()
            },
            objects_warning,
            overlay,
            generation: 1,
            last_reload: None,
            overlay_warnings,
            control_source: if store.is_some() { "file" } else { "local" },
        };
        export_control_metrics(&inner);
        Ok(Controller {
            source,
            base_dir,
            state: Arc::new(ArcSwap::from_pointee(state)),
            state_file,
            store,
            inner: Mutex::new(inner),
            change_lock: tokio::sync::Mutex::new(()),
            validated: Mutex::new(None),
            node: node_id(),
            leader: AtomicBool::new(false),
            reports: Mutex::new(BTreeMap::new()),
            history: Arc::new(History::default()),
            notices: OnceLock::new(),
        })
    }

    /// The last hour of figures per route and group.
    pub(crate) fn history(&self) -> Arc<History> {
        self.history.clone()
    }

    /// Installs where this node's changes are announced (once; a second sink is ignored).
    pub(crate) fn set_notice_sink(&self, sink: NoticeSink) {
        if self.notices.set(sink).is_err() {
            warn!("notify: a notice sink was already installed");
        }
    }

    /// Announces a change this node made (`entry` as applied, with its version).
    pub(super) fn announce(&self, entry: &AuditEntry, generation: u64) {
        if let Some(sink) = self.notices.get() {
            sink(Notice::of(entry, generation, &self.node));
        }
    }

    /// This node's id: host name, process id and a random part.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Keeps a plan's last judgement for `/status` (shown while the plan runs).
    pub(crate) fn report(&self, route: &str, rule: &str, report: PlanReport) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.insert((route.to_string(), rule.to_string()), report);
    }

    /// Applies a control state when it is newer than this node's: the one change path for
    /// states made here and states from other nodes. The state file is written first; when
    /// that fails and `strict` (no store holds the state), nothing is applied.
    pub(super) fn apply_control(
        &self,
        next: Overlay,
        changes: &[AuditEntry],
        strict: bool,
    ) -> Result<u64, StateError> {
        let mut inner = self.lock();
        if next.version <= inner.overlay.version {
            return Ok(inner.generation);
        }
        // New objects: the section is merged and validated again. A state that does not
        // validate here (another node's file differs) keeps the configuration in force.
        let mut remerged = None;
        let mut objects_warning = inner.objects_warning.clone();
        if next.config != inner.overlay.config {
            // What this node's write validated is taken as it is: one validation per write.
            let validated = match self.take_validated(&inner, &next.config) {
                Some(done) => Ok(done),
                None => self.merge_objects(&inner, &inner.spec, &next.config),
            };
            match validated {
                Ok(merged) => {
                    remerged = Some(merged);
                    objects_warning = None;
                }
                Err(e) if strict => return Err(StateError::invalid(e.to_string())),
                Err(e) => {
                    let why = format!(
                        "control state version {}: its routes and groups are not served, the previous ones are: {e}",
                        next.version
                    );
                    warn!("{why}");
                    objects_warning = Some(why);
                }
            }
        }
        let base = remerged.as_ref().map_or(&inner.base, |(_, config)| config);
        let previous = self.state.load_full();
        let (state, warnings) = build_state(base, &next, Some(&previous), self.store.as_deref());
        let mut overlay = next;
        overlay.audit = inner.overlay.audit.clone();
        audit::append(&mut overlay.audit, changes);
        if let Some(path) = &self.state_file {
            match write_state_file(path, &overlay) {
                Err(e) if strict => {
                    // Building the state set `next`'s server modes on the pools it kept,
                    // which the running state shares: put the running overlay's back.
                    apply_server_modes(&previous.pools, &inner.overlay);
                    return Err(e);
                }
                Err(e) => error!("{e}; the store holds the state, serving it"),
                Ok(()) => {}
            }
        }
        if overlay.certificates != inner.overlay.certificates {
            install_certificates(&overlay.certificates);
        }
        if overlay.acme_requests != inner.overlay.acme_requests {
            super::acme::install_requests(&overlay.acme_requests);
        }
        forget_gone_plans(&inner.overlay, &overlay);
        inner.overlay = overlay;
        inner.overlay_warnings = warnings;
        inner.objects_warning = objects_warning;
        if let Some((merged, config)) = remerged {
            inner.merged = merged;
            inner.base = config;
            inner.served = inner.overlay.config.clone();
        }
        inner.generation += 1;
        self.state.store(Arc::new(state));
        export_control_metrics(&inner);
        Ok(inner.generation)
    }

    /// `spec` (the file's section) merged with `objects` and validated: the section and the
    /// configuration to run, with the admin settings and webhooks the process started with
    /// (they apply on restart only). Errors name the key and the file.
    pub(super) fn merge_objects(
        &self,
        inner: &Inner,
        spec: &GatewaySpec,
        objects: &config::ConfigObjects,
    ) -> Result<(Arc<GatewaySpec>, GatewayConfig), config::ConfigError> {
        let (merged, config) = config::objects::validate_merged(
            spec,
            objects,
            &self.base_dir,
            &self.source.describe(),
        )?;
        let config = GatewayConfig {
            admin: inner.base.admin.clone(),
            notify: inner.base.notify.clone(),
            ..config
        };
        Ok((Arc::new(merged), config))
    }

    /// A control state read from the store or announced by another node.
    pub(crate) fn apply_remote(&self, message: ControlMessage) {
        let version = message.control.version;
        let mine = {
            let mut inner = self.lock();
            inner.control_source = "store";
            inner.overlay.version
        };
        if version < mine {
            warn!("store: its control state (version {version}) is older than this node's ({mine}); keeping this node's until the next change writes it");
            return;
        }
        match self.apply_control(message.control, &message.changes, false) {
            Ok(_) if version > mine => {
                info!("control state version {version} applied from the store")
            }
            Ok(_) => {}
            Err(e) => error!("store: cannot apply control state version {version}: {e}"),
        }
    }

    /// `GET /routes/{route}/rules/{rule}/users?user=ID`: whether `id` is on the list now
    /// (`NotFound` for an unknown route or rule, `Invalid` when the rule is no list).
    pub(crate) fn is_member(&self, route: &str, rule: &str, id: &str) -> Result<bool, StateError> {
        let state = self.state.load_full();
        let live = state.routes.iter().find(|r| r.name == route);
        let rule = rule_of_kind(live.map(|r| &*r.router), route, rule, Kind::Users)?;
        Ok(rule
            .user_set()
            .is_some_and(|users| users.contains(id.as_bytes())))
    }

    /// The plans that run now, with their settings.
    pub(crate) fn running_plans(&self) -> Vec<RunningPlan> {
        let inner = self.lock();
        let mut running = Vec::new();
        for (route, changes) in &inner.overlay.routes {
            for (rule, state) in &changes.plans {
                let config = inner.base.route(route).and_then(|r| r.plans.get(rule));
                if let (PlanStatus::Running, Some(config)) = (state.status, config) {
                    running.push(RunningPlan {
                        route: route.clone(),
                        rule: rule.clone(),
                        config: config.clone(),
                        state: state.clone(),
                    });
                }
            }
        }
        running
    }

    /// This node's audit trail, newest first.
    pub(crate) fn local_audit(&self, limit: usize) -> Vec<AuditEntry> {
        self.lock()
            .overlay
            .audit
            .iter()
            .take(limit)
            .cloned()
            .collect()
    }

    /// The state handle the proxy and the health checker read.
    pub(crate) fn state(&self) -> Arc<ArcSwap<GatewayState>> {
        self.state.clone()
    }

    /// The Redis store, when configured.
    pub(crate) fn store(&self) -> Option<Arc<Store>> {
        self.store.clone()
    }

    /// The store and set behind a store-backed users rule of `route` (see [`Self::route_name`]).
    pub(crate) fn store_set(&self, route: &str, rule: &str) -> Option<(Arc<Store>, String)> {
        let set = self
            .lock()
            .base
            .route(route)?
            .store_sets
            .get(rule)
            .cloned()?;
        Some((self.store.clone()?, set))
    }

    /// The route an admin request names: `Some(name)` must exist (`NotFound`); `None` (the paths
    /// without `/routes/{route}`) means the one route, and is refused when there are several.
    pub(crate) fn route_name(&self, route: Option<&str>) -> Result<String, StateError> {
        let inner = self.lock();
        let routes = &inner.base.routes;
        match route {
            Some(name) if routes.iter().any(|r| r.name == name) => Ok(name.to_string()),
            Some(name) => Err(StateError::not_found(format!("no route named {name:?}"))),
            None => match routes.as_slice() {
                [only] => Ok(only.name.clone()),
                _ => Err(StateError::not_found(format!(
                    "there are {} routes: use /routes/{{route}}/... (routes: {})",
                    routes.len(),
                    routes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            },
        }
    }

    /// Rebuilds the routing after the store's snapshots changed.
    pub(crate) fn refresh_store(&self) {
        let mut inner = self.lock();
        let previous = self.state.load_full();
        let (state, _) = build_state(
            &inner.base,
            &inner.overlay,
            Some(&previous),
            self.store.as_deref(),
        );
        inner.generation += 1;
        self.state.store(Arc::new(state));
    }

    /// The gateway section in force: the file's, merged with the routes and groups made
    /// through the admin API (the admin section as the process started with it). Live
    /// changes (percentages, lists, overrides, plans) are not in it.
    pub(crate) fn spec(&self) -> Arc<GatewaySpec> {
        self.lock().merged.clone()
    }

    /// The current configuration generation (1 at start, +1 per applied change).
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is applied by a
        // single store at the end), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the configuration file (and users files), validates it and swaps it in. On
    /// error the running configuration stays and the error is kept for `/status`.
    pub(crate) fn reload(&self) -> Result<u64, StateError> {
        let mut inner = self.lock();
        let result = self.source.load().and_then(|(mut spec, config)| {
            let shape = |c: &GatewayConfig| crate::config::describe_listeners(&c.listen);
            if shape(&config) != shape(&inner.base) {
                warn!(
                    "reload: gateway.listen changed ({} -> {}); listener addresses and kinds cannot change on reload, restart (or upgrade with -u) to apply (certificates of a TLS listener can)",
                    shape(&inner.base),
                    shape(&config)
                );
            }
            let old_admin = inner.base.admin.as_ref().map(|a| (a.listen, &a.state_file));
            let new_admin = config.admin.as_ref().map(|a| (a.listen, &a.state_file));
            if old_admin != new_admin {
                warn!("reload: gateway.admin listen/state_file changed; these apply on restart only");
            }
            if config.notify != inner.base.notify {
                warn!("reload: gateway.notify changed; webhooks apply on restart only");
            }
            // Keep the admin settings the process started with (listener, token, file).
            // The webhooks too: the notifier was built from them at start.
            spec.admin = inner.spec.admin.clone();
            spec.notify = inner.spec.notify.clone();
            // The API's objects merged over the new file (see `reload_objects`).
            let objects = self.reload_objects(&inner, &spec, config)?;
            let config = objects.config;
            let previous = self.state.load_full();
            let (state, warnings) =
                build_state(&config, &inner.overlay, Some(&previous), self.store.as_deref());
            Ok((spec, objects.merged, config, objects.served, objects.warning, state, warnings))
        });
        let at = SystemTime::now();
        match result {
            Ok((spec, merged, config, served, objects_warning, state, warnings)) => {
                for w in &warnings {
                    warn!("reload: {w}");
                }
                for w in
                    crate::config::certificate_warnings(&config.listen, crate::config::unix_now())
                {
                    warn!("reload: {w}");
                }
                // Keep the admin settings the process started with (listener, token, file).
                // The webhooks too: the notifier was built from them at start.
                let admin = inner.base.admin.clone();
                let notify = inner.base.notify.clone();
                inner.base = GatewayConfig {
                    admin,
                    notify,
                    ..config
                };
                inner.spec = Arc::new(spec);
                inner.merged = merged;
                inner.served = served;
                if let Some(why) = &objects_warning {
                    warn!("reload: {why}");
                }
                inner.objects_warning = objects_warning;
                inner.overlay_warnings = warnings;
                inner.generation += 1;
                inner.last_reload = Some(ReloadOutcome { at, error: None });
                self.state.store(Arc::new(state));
                METRICS.reloads.with_label_values(&["ok"]).inc();
                info!(
                    "reload: {} applied, generation {}",
                    self.source.describe(),
                    inner.generation
                );
                Ok(inner.generation)
            }
            Err(e) => {
                error!("reload refused, the running configuration stays: {e}");
                METRICS.reloads.with_label_values(&["error"]).inc();
                inner.last_reload = Some(ReloadOutcome {
                    at,
                    error: Some(e.to_string()),
                });
                Err(e)
            }
        }
    }

    /// What `/status` shows of the controller, read under one lock.
    pub(crate) fn view(&self) -> View {
        let inner = self.lock();
        View {
            state: self.state.load_full(),
            generation: inner.generation,
            control: ControlView {
                version: inner.overlay.version,
                source: inner.control_source,
                node: self.node.clone(),
                leader: self.leader.load(Ordering::Relaxed),
                reports: self
                    .reports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            },
            config_file: self.source.describe(),
            state_file: self.state_file.clone(),
            // Without the audit trail, which `/status` does not show (the page polls it), and
            // without the uploaded certificates, whose keys no read may see.
            overlay: {
                let mut shared = inner.overlay.shared();
                shared.certificates.clear();
                shared
            },
            routes: inner.base.routes.clone(),
            listen: inner.base.listen.iter().map(|l| l.describe()).collect(),
            overlay_warnings: inner
                .overlay_warnings
                .iter()
                .chain(&inner.objects_warning)
                .cloned()
                .chain(crate::config::uploaded::uploaded_warnings())
                .collect(),
            last_reload: inner.last_reload.clone(),
            store: self.store.clone(),
        }
    }
}

/// A plan that runs now.
pub(crate) struct RunningPlan {
    pub(crate) route: String,
    pub(crate) rule: String,
    pub(crate) config: PlanConfig,
    pub(crate) state: PlanState,
}

/// The control state's standing on this node.
pub(crate) struct ControlView {
    pub(crate) version: u64,
    /// `local` (no store: this node's own), `file` (the state file, until the store answers)
    /// or `store` (read from Redis since start).
    pub(crate) source: &'static str,
    pub(crate) node: String,
    /// Whether this node holds the plan lease.
    pub(crate) leader: bool,
    pub(crate) reports: BTreeMap<(String, String), PlanReport>,
}

/// A consistent read of the controller for `/status`.
pub(crate) struct View {
    pub(crate) state: Arc<GatewayState>,
    pub(crate) generation: u64,
    pub(crate) control: ControlView,
    pub(crate) config_file: String,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) overlay: Overlay,
    /// The file's routes (hosts, paths, store-backed rules).
    pub(crate) routes: Vec<RouteConfig>,
    pub(crate) listen: Vec<String>,
    pub(crate) overlay_warnings: Vec<String>,
    pub(crate) last_reload: Option<ReloadOutcome>,
    pub(crate) store: Option<Arc<Store>>,
}

/// Sets the control-state gauges: the version and each plan's step.
fn export_control_metrics(inner: &Inner) {
    METRICS.control_version.set(inner.overlay.version as i64);
    for (route, changes) in &inner.overlay.routes {
        for (rule, plan) in &changes.plans {
            let step = match plan.status {
                PlanStatus::RolledBack => 0,
                _ => plan.step as i64 + 1,
            };
            METRICS
                .rollout_step
                .with_label_values(&[route, rule])
                .set(step);
        }
    }
}

/// Removes the step gauges of the plans `before` had and `after` has not (a deleted API
/// route's, a rule its new body dropped), so `/metrics` does not show them forever.
fn forget_gone_plans(before: &Overlay, after: &Overlay) {
    for (route, changes) in &before.routes {
        for rule in changes.plans.keys() {
            if after.plan(route, rule).is_none() {
                // An error only says the label pair was never set here.
                let _ = METRICS.rollout_step.remove_label_values(&[route, rule]);
            }
        }
    }
}

/// A node id unique among the nodes sharing a store: host name, process id, a random part.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{host}:{}:{:08x}", std::process::id(), random as u32)
}

/// Rejects user ids that could never come out of a cookie (`Invalid`, naming `add` or `remove`).
pub(crate) fn check_user_ids(add: &[String], remove: &[String]) -> Result<(), StateError> {
    for (field, ids) in [("add", add), ("remove", remove)] {
        if let Some(bad) = ids.iter().find(|id| !is_valid_user_id(id.as_bytes())) {
            return Err(StateError::invalid_field(
                field,
                format!("{bad:?} is not a valid user id (1-256 cookie-safe characters)"),
            ));
        }
    }
    Ok(())
}

/// The file's rule `name`, which must be of `kind` (`NotFound` when there is none, `Invalid`
/// naming `name` when it is another kind).
pub(super) fn find_rule_of_kind(
    config: &GatewayConfig,
    route: &str,
    name: &str,
    kind: Kind,
) -> Result<(), StateError> {
    let router = config.route(route).map(|r| &*r.router);
    rule_of_kind(router, route, name, kind).map(|_| ())
}

/// Rule `name` in `router` (the router of `route`, `None` when there is no such route:
/// `NotFound`), which must be of `kind` (`NotFound` when there is no such rule, `Invalid`
/// naming `name` when it is another kind).
pub(super) fn rule_of_kind<'a>(
    router: Option<&'a Router>,
    route: &str,
    name: &str,
    kind: Kind,
) -> Result<&'a Rule, StateError> {
    let router =
        router.ok_or_else(|| StateError::not_found(format!("no route named {route:?}")))?;
    let rule = router
        .rule(name)
        .ok_or_else(|| StateError::not_found(format!("no rule named {name:?}")))?;
    if rule.kind_name() == kind {
        Ok(rule)
    } else {
        Err(StateError::invalid_field(
            "name",
            format!("rule {name:?} is not a {} rule", kind.as_str()),
        ))
    }
}

/// Builds the runtime state from the file's configuration and the overlay. Pools whose group
/// settings did not change are kept, with their health state, health-check task and
/// connections.
fn build_state(
    config: &GatewayConfig,
    overlay: &Overlay,
    previous: Option<&GatewayState>,
    store: Option<&Store>,
) -> (GatewayState, Vec<String>) {
    let (mut routers, warnings) = apply_overlay(&config.routes, overlay);
    // Store-backed rules take the store's snapshot once one was loaded.
    if let Some(store) = store {
        for (route, router) in config.routes.iter().zip(&mut routers) {
            for rule in router.rules_mut() {
                let Some(set) = route.store_sets.get(rule.name()) else {
                    continue;
                };
                if let Some(snapshot) = store.snapshot(set) {
                    rule.set_user_set(snapshot);
                }
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
        .collect::<Vec<Arc<Pool>>>();
    // Kept pools take the new modes too: requests already holding the previous state see them.
    let mut warnings = warnings;
    warnings.extend(apply_server_modes(&pools, overlay));
    let routers = routers.into_iter().map(Arc::new).collect();
    // Limits whose route and settings did not change are kept, with their counts; the
    // gateway-wide ones are one count for every route that inherits them.
    let mut wide = GatewayWide::from_previous(
        previous
            .into_iter()
            .flat_map(|p| p.routes.iter().filter_map(|r| r.limits.as_deref())),
    );
    let limits = config
        .routes
        .iter()
        .map(|route| {
            previous
                .and_then(|p| p.routes.iter().find(|r| r.name == route.name))
                .and_then(|r| r.limits.clone())
                .filter(|l| l.same_as(&route.name, &route.rate_limits))
                .or_else(|| RouteLimits::build(&route.name, &route.rate_limits, &mut wide))
        })
        .collect();
    let shared_limits = store.map(|s| s.rate_limits.clone());
    if let Some(shared) = &shared_limits {
        let wanted = config
            .routes
            .iter()
            .any(|r| r.rate_limits.iter().any(|l| l.shared));
        shared.set_wanted(wanted);
    }
    let mut state = GatewayState::new(routers, pools, limits, shared_limits, config);
    for route in &mut state.routes {
        route.maintenance = overlay
            .route(&route.name)
            .and_then(|r| r.maintenance)
            .map(|m| HeaderValue::from(m.retry_after_secs));
    }
    (state, warnings)
}
