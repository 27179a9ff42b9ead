//! The overlay — the control state: changes made through the admin API and by rollout plans,
//! laid over the configuration file's router, with a version that only grows — and the state
//! file that keeps it (and this node's audit trail) across restarts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::audit::AuditEntry;
use super::plan::PlanState;
use super::StateError;
use crate::config::{ConfigObjects, RouteConfig, DEFAULT_ROUTE};
use crate::routing::{Mode, Percent, Router};
use crate::upstreams::{Pool, ServerMode};

/// Changes made through the admin API and by plans, laid over the configuration file. This is
/// the control state every node shares through the store, and what the state file holds: a
/// global operator override and, per route, its own override, percentages, list changes and
/// plans. A state file of the single-route versions (top-level `percent` and `users`) loads
/// into the route `default`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Overlay {
    /// +1 per change; a node applies a control state only when its version is higher than the
    /// one it has (0: no change was ever made).
    #[serde(default)]
    pub(crate) version: u64,
    /// Applies to every route (`POST /rollback`, `/promote`, `/resume`).
    #[serde(default)]
    pub(crate) mode: OverlayMode,
    #[serde(default)]
    pub(crate) routes: BTreeMap<String, RouteOverlay>,
    /// Single-route state files only; moved into `routes["default"]` when read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    percent: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    users: BTreeMap<String, UsersDelta>,
    /// Routes and groups made through the admin API (`/config/routes`, `/config/groups`),
    /// merged over the file's (see `config::objects`).
    #[serde(default, skip_serializing_if = "ConfigObjects::is_empty")]
    pub(crate) config: ConfigObjects,
    /// Listener certificates uploaded through the admin API, by name (a private key each:
    /// the state file is written 0600).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) certificates: BTreeMap<String, UploadedCertificate>,
    /// Certificates requested from the ACME CA through the admin API
    /// (`PUT /config/certificates/{name}` `{"acme": [...]}`), by name: ordered and renewed by
    /// the ACME task, served by SNI on every TLS listener. Names are never an upload's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) acme_requests: BTreeMap<String, AcmeRequest>,
    /// Servers an operator drained or disabled (`POST /config/groups/{g}/servers/{addr}/…`),
    /// per group, by the server as written in the group; a server not listed is enabled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) servers: BTreeMap<String, BTreeMap<String, ServerMode>>,
    /// This node's audit trail, newest first (state file only: the store keeps the shared one
    /// apart from the control state).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub(crate) audit: VecDeque<AuditEntry>,
}

/// A control state as announced on the channel: the state and the entries of the change that
/// made it (none when it was re-read on a resync).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ControlMessage {
    pub(crate) control: Overlay,
    #[serde(default)]
    pub(crate) changes: Vec<AuditEntry>,
}

/// One route's changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteOverlay {
    /// This route's override (`POST /routes/{route}/rollback`, ...); the global one wins.
    #[serde(default)]
    pub(crate) mode: OverlayMode,
    /// Percentage per rule name (written as a number, as in the file and the API).
    #[serde(default)]
    pub(crate) percent: BTreeMap<String, f64>,
    /// Users added to / removed from a list rule, per rule name.
    #[serde(default)]
    pub(crate) users: BTreeMap<String, UsersDelta>,
    /// Who set each percentage: an admin token's name, or `plan`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) percent_by: BTreeMap<String, String>,
    /// Rollout plans that were started, per rule name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) plans: BTreeMap<String, PlanState>,
    /// The maintenance switch (`POST /routes/{route}/maintenance`): while set, every request
    /// of the route but the QA override's is answered 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) maintenance: Option<Maintenance>,
}

/// A listener certificate uploaded through the admin API (`PUT /config/certificates/{name}`),
/// as sent: served by SNI on every TLS listener. Its key is never answered by a read.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadedCertificate {
    /// The PEM chain, leaf first.
    pub(crate) chain_pem: String,
    /// The leaf's PEM private key.
    pub(crate) key_pem: String,
    /// The admin token's name that uploaded it.
    pub(crate) by: String,
    /// When, in Unix milliseconds.
    pub(crate) at_ms: u64,
}

impl std::fmt::Debug for UploadedCertificate {
    // Without the key, so no debug log can print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadedCertificate")
            .field("chain_pem", &self.chain_pem)
            .field("by", &self.by)
            .field("at_ms", &self.at_ms)
            .finish_non_exhaustive()
    }
}

/// A certificate requested from the ACME CA through the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcmeRequest {
    /// Its DNS names (validated, lower case; the first names its files in the storage).
    pub(crate) names: Vec<String>,
    /// The admin token's name that requested it.
    pub(crate) by: String,
    /// When, in Unix milliseconds.
    pub(crate) at_ms: u64,
}

/// Makes `certificates` the uploads every TLS listener serves (see
/// `config::uploaded::install_uploaded`).
pub(crate) fn install_certificates(certificates: &BTreeMap<String, UploadedCertificate>) {
    crate::config::uploaded::install_uploaded(
        certificates
            .iter()
            .map(|(name, c)| (name.as_str(), c.chain_pem.as_str(), c.key_pem.as_str())),
    );
}

/// A route in maintenance: the `Retry-After` its 503s carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Maintenance {
    pub(crate) retry_after_secs: u64,
}

impl Overlay {
    /// Moves a single-route state file's entries into the route `default`.
    fn migrate(mut self) -> Overlay {
        if !self.percent.is_empty() || !self.users.is_empty() {
            let route = self.routes.entry(DEFAULT_ROUTE.to_string()).or_default();
            route.percent.extend(std::mem::take(&mut self.percent));
            route.users.extend(std::mem::take(&mut self.users));
        }
        self
    }

    /// The overlay of `route` (empty when it has none).
    pub(crate) fn route(&self, route: &str) -> Option<&RouteOverlay> {
        self.routes.get(route)
    }

    /// The state of the plan of `route`'s rule `rule`, once started.
    pub(crate) fn plan(&self, route: &str, rule: &str) -> Option<&PlanState> {
        self.routes.get(route)?.plans.get(rule)
    }

    /// The control state without the audit trail: what is shared through the store.
    pub(crate) fn shared(&self) -> Overlay {
        Overlay {
            version: self.version,
            mode: self.mode.clone(),
            routes: self.routes.clone(),
            config: self.config.clone(),
            certificates: self.certificates.clone(),
            acme_requests: self.acme_requests.clone(),
            servers: self.servers.clone(),
            ..Overlay::default()
        }
    }
}

/// The operator override, by group name so it survives group reordering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OverlayMode {
    #[default]
    Rules,
    Rollback,
    Promote(String),
}

/// Users added to and removed from one list rule through the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersDelta {
    #[serde(default)]
    pub(crate) add: BTreeSet<String>,
    #[serde(default)]
    pub(crate) remove: BTreeSet<String>,
}

impl UsersDelta {
    /// Records a change against the file's list (`in_file`): an id added is no longer removed
    /// and the other way round, and the delta keeps only what differs from the file, so its
    /// two sizes are the ids added to and removed from the file's list.
    pub(crate) fn record(
        &mut self,
        add: &[String],
        remove: &[String],
        in_file: impl Fn(&str) -> bool,
    ) {
        for id in add {
            self.remove.remove(id);
            if !in_file(id) {
                self.add.insert(id.clone());
            }
        }
        for id in remove {
            self.add.remove(id);
            if in_file(id) {
                self.remove.insert(id.clone());
            }
        }
    }
}

/// The routes' routers with the API's changes applied (in `routes` order); entries that no
/// longer fit are reported.
pub(crate) fn apply_overlay(
    routes: &[RouteConfig],
    overlay: &Overlay,
) -> (Vec<Router>, Vec<String>) {
    let mut warnings = Vec::new();
    for name in overlay.routes.keys() {
        if !routes.iter().any(|r| &r.name == name) {
            warnings.push(format!("changes for route {name:?} ignored: no such route"));
        }
    }
    let routers = routes
        .iter()
        .map(|route| {
            let empty = RouteOverlay::default();
            let changes = overlay.routes.get(&route.name).unwrap_or(&empty);
            // The global override wins over the route's own.
            let mode = match &overlay.mode {
                OverlayMode::Rules => &changes.mode,
                global => global,
            };
            let mut prefix = String::new();
            if routes.len() > 1 {
                prefix = format!("route {:?}: ", route.name);
            }
            let (router, route_warnings) = apply_route(&route.router, mode, changes);
            warnings.extend(route_warnings.into_iter().map(|w| format!("{prefix}{w}")));
            router
        })
        .collect();
    (routers, warnings)
}

/// Sets every pool's server modes from the control state; what it names that no group has
/// comes back as warnings (a group or server removed from the file since).
pub(crate) fn apply_server_modes(pools: &[Arc<Pool>], overlay: &Overlay) -> Vec<String> {
    for pool in pools {
        let modes = overlay.servers.get(&pool.config.name);
        pool.set_modes(|written| modes.and_then(|m| m.get(written)).copied());
    }
    let mut warnings = Vec::new();
    for (group, servers) in &overlay.servers {
        match pools.iter().find(|p| &p.config.name == group) {
            None => warnings.push(format!(
                "server modes of group {group:?} ignored: no such group"
            )),
            Some(pool) => {
                for server in servers.keys().filter(|s| !pool.has_server(s)) {
                    warnings.push(format!(
                        "mode of server {server:?} of group {group:?} ignored: no such server"
                    ));
                }
            }
        }
    }
    warnings
}

/// One route's router with its changes applied.
fn apply_route(base: &Router, mode: &OverlayMode, changes: &RouteOverlay) -> (Router, Vec<String>) {
    let mut router = base.clone();
    let mut warnings = Vec::new();
    router.set_mode(match mode {
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
    });
    for (name, percent) in &changes.percent {
        match router.rule_mut(name) {
            Some(rule) => match Percent::new(*percent) {
                Err(e) => warnings.push(format!("percent for rule {name:?} ignored: {e}")),
                Ok(new) if !rule.set_share(new) => warnings.push(format!(
                    "percent for rule {name:?} ignored: not a percent rule now"
                )),
                Ok(_) => {}
            },
            None => warnings.push(format!("percent for rule {name:?} ignored: no such rule")),
        }
    }
    for (name, delta) in &changes.users {
        let Some(rule) = router.rule_mut(name) else {
            warnings.push(format!("users for rule {name:?} ignored: no such rule"));
            continue;
        };
        let add = delta.add.iter().map(String::as_bytes);
        let remove = delta.remove.iter().map(String::as_bytes);
        match rule.user_set().map(|users| users.with_changes(add, remove)) {
            Some(users) => {
                rule.set_user_set(Arc::new(users));
            }
            None => warnings.push(format!(
                "users for rule {name:?} ignored: not a users rule now"
            )),
        }
    }
    (router, warnings)
}

/// Reads the state file; a missing file is an empty overlay.
pub(crate) fn read_state_file(path: &Path) -> Result<Overlay, StateError> {
    let failed = |e: &dyn std::fmt::Display| {
        StateError::internal(format!("state file {}: {e}", path.display()))
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Overlay>(&bytes)
            .map(Overlay::migrate)
            .map_err(|e| failed(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overlay::default()),
        Err(e) => Err(failed(&e)),
    }
}

/// The temporary file a process writes the state file through: `state.tmp.<pid>` beside
/// `state.json`.
fn temp_path(path: &Path, pid: u32) -> PathBuf {
    path.with_extension(format!("tmp.{pid}"))
}

/// Removes the temporary files that writes of the state file at `path` left behind when their
/// process was killed mid-write (`kill -9`): `state.tmp.<pid>` beside `state.json`, for a
/// `<pid>` that is no running process. A running one's file is left alone — during a graceful
/// upgrade the old process may be writing it. Returns the files removed and, for each file
/// that could not be, why.
pub(crate) fn remove_leftover_temp_files(path: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let (Some(stem), Some(dir)) = (path.file_stem(), path.parent()) else {
        return (removed, failed);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (removed, failed);
    };
    let prefix = format!("{}.tmp.", stem.to_string_lossy());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // The name a write by `pid` would use (this also skips `0012`-style look-alikes).
        if temp_path(path, pid).file_name() != Some(name.as_os_str()) || process_is_running(pid) {
            continue;
        }
        let leftover = dir.join(&name);
        match std::fs::remove_file(&leftover) {
            Ok(()) => removed.push(leftover),
            Err(e) => failed.push(format!("cannot remove {}: {e}", leftover.display())),
        }
    }
    removed.sort();
    (removed, failed)
}

/// Whether process `pid` exists (signal 0 checks without sending anything; `EPERM` means it
/// exists under another user).
fn process_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only reports whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Writes the state file atomically: a temporary file in the same folder (mode 0600), synced,
/// renamed.
pub(crate) fn write_state_file(path: &Path, overlay: &Overlay) -> Result<(), StateError> {
    use std::io::Write;
    let text =
        serde_json::to_vec_pretty(overlay).map_err(|e| StateError::internal(e.to_string()))?;
    let tmp = temp_path(path, std::process::id());
    let write = || -> std::io::Result<()> {
        // It may hold private keys (uploaded certificates): readable by its owner only.
        let mut file = super::files::create_private(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        StateError::internal(format!("cannot write state file {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_entries_that_no_longer_fit_are_reported() {
        let base = crate::config::load_demo().expect("demo").gateway;
        let changes = RouteOverlay {
            mode: OverlayMode::Promote("gone".into()),
            percent: [("vip".to_string(), 5.0), ("nope".to_string(), 5.0)].into(),
            users: [("rollout".to_string(), UsersDelta::default())].into(),
            ..RouteOverlay::default()
        };
        let overlay = Overlay {
            routes: [
                ("default".to_string(), changes),
                ("missing".to_string(), RouteOverlay::default()),
            ]
            .into(),
            ..Overlay::default()
        };
        let (routers, warnings) = apply_overlay(&base.routes, &overlay);
        assert_eq!(routers[0].mode(), Mode::Rules);
        assert_eq!(warnings.len(), 5, "{warnings:?}");
    }

    /// A percentage the file holds for a percent rule but which is no valid share is warned
    /// about by what is wrong with the value.
    #[test]
    fn a_bad_percent_in_the_file_is_warned_by_its_value() {
        let base = crate::config::load_demo().expect("demo").gateway;
        let mut overlay = Overlay::default();
        let route = overlay.routes.entry("default".into()).or_default();
        route.percent.insert("rollout".into(), 150.0);
        route.percent.insert("vip".into(), 5.0);
        let (_, warnings) = apply_overlay(&base.routes, &overlay);
        assert_eq!(
            warnings,
            [
                r#"percent for rule "rollout" ignored: 150 is not in 0..=100"#,
                r#"percent for rule "vip" ignored: not a percent rule now"#,
            ]
        );
    }

    /// Temporary files of dead processes beside the state file go; a running process's file,
    /// other files and other state files' temporaries stay.
    #[test]
    fn leftover_temp_files_of_dead_processes_are_removed() {
        let dir = std::env::temp_dir().join(format!("overlay-tmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        // A process that has exited: its pid is free.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        child.wait().expect("wait");
        let dead = child.id();
        let names = [
            format!("state.tmp.{dead}"),
            format!("state.tmp.{}", std::process::id()),
            "state.tmp.".to_string(),
            "state.tmp.x1".to_string(),
            format!("other.tmp.{dead}"),
            "state.json".to_string(),
        ];
        for name in &names {
            std::fs::write(dir.join(name), b"{").expect("plant");
        }
        let (removed, failed) = remove_leftover_temp_files(&path);
        assert_eq!(removed, [dir.join(&names[0])]);
        assert!(failed.is_empty(), "{failed:?}");
        for name in &names[1..] {
            assert!(dir.join(name).exists(), "{name} was kept");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The state file is written 0600 (it holds uploaded certificates' keys), even over a
    /// readable file and a readable leftover temporary file of this process.
    #[test]
    fn the_state_file_is_written_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("overlay-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        let readable = std::fs::Permissions::from_mode(0o644);
        for file in [path.clone(), temp_path(&path, std::process::id())] {
            std::fs::write(&file, b"{}").expect("plant");
            std::fs::set_permissions(&file, readable.clone()).expect("chmod");
        }
        let mut overlay = Overlay::default();
        overlay.certificates.insert(
            "shop".into(),
            UploadedCertificate {
                chain_pem: "chain".into(),
                key_pem: "key".into(),
                by: "admin".into(),
                at_ms: 1,
            },
        );
        write_state_file(&path, &overlay).expect("written");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_state_file(&path).expect("read back"), overlay);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn user_changes_apply_on_the_file_list() {
        let base = crate::config::load_demo().expect("demo").gateway;
        let mut delta = UsersDelta::default();
        delta.record(&["zoe".into(), "alice".into()], &["alice".into()], |id| {
            id == "alice"
        });
        assert!(
            delta.remove.contains("alice"),
            "alice is on the file's list"
        );
        assert!(delta.add.contains("zoe") && !delta.add.contains("alice"));
        let mut overlay = Overlay::default();
        overlay
            .routes
            .entry("default".into())
            .or_default()
            .users
            .insert("vip".into(), delta);
        let (routers, warnings) = apply_overlay(&base.routes, &overlay);
        assert!(warnings.is_empty(), "{warnings:?}");
        let vip = routers[0].rule("vip").expect("vip");
        let users = vip.user_set().expect("vip is a users rule");
        assert!(users.contains(b"zoe") && !users.contains(b"alice"));
    }

    /// A single-route state file (top-level `percent` and `users`) loads into route `default`
    /// and is written back in the routes form.
    #[test]
    fn single_route_state_files_load_into_the_default_route() {
        let old = r#"{"mode": "rollback", "percent": {"rollout": 25.0},
                      "users": {"vip": {"add": ["zoe"], "remove": []}}}"#;
        let overlay = serde_json::from_str::<Overlay>(old)
            .expect("parses")
            .migrate();
        assert_eq!(overlay.mode, OverlayMode::Rollback);
        let route = overlay.route("default").expect("default route");
        assert_eq!(route.percent["rollout"], 25.0);
        assert!(route.users["vip"].add.contains("zoe"));
        let written = serde_json::to_value(&overlay).expect("serializes");
        assert!(written.get("percent").is_none() && written.get("users").is_none());
        assert_eq!(written["routes"]["default"]["percent"]["rollout"], 25.0);
    }

    /// The global override beats a route's own; a route's own applies to it alone.
    #[test]
    fn global_and_route_overrides() {
        let base = crate::config::load_demo().expect("demo").gateway;
        let mut overlay = Overlay::default();
        overlay.routes.entry("default".into()).or_default().mode = OverlayMode::Rollback;
        let (routers, _) = apply_overlay(&base.routes, &overlay);
        assert_eq!(routers[0].mode(), Mode::Rollback);
        overlay.mode = OverlayMode::Promote("canary".into());
        let (routers, _) = apply_overlay(&base.routes, &overlay);
        assert!(matches!(routers[0].mode(), Mode::Promote(_)));
    }
}
