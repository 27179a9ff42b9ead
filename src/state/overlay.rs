//! The overlay: changes made through the admin API, laid over the configuration file's router,
//! and the state file that keeps them across restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::routing::{Matcher, Mode, Percent, Router};

/// Changes made through the admin API, laid over the configuration file. This is what the
/// state file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    #[serde(default)]
    pub mode: OverlayMode,
    /// Percentage per rule name (written as a number, as in the file and the API).
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

impl UsersDelta {
    /// Records a change: an id added is no longer removed and the other way round.
    pub fn record(&mut self, add: &[String], remove: &[String]) {
        for id in add {
            self.remove.remove(id);
            self.add.insert(id.clone());
        }
        for id in remove {
            self.add.remove(id);
            self.remove.insert(id.clone());
        }
    }
}

/// The file's router with the API's changes applied; entries that no longer fit are reported.
pub fn apply_overlay(base: &Router, overlay: &Overlay) -> (Router, Vec<String>) {
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
            Some(rule) => match (&mut rule.matcher, Percent::new(*percent)) {
                (Matcher::Percent { share, .. }, Ok(new)) => *share = new,
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
                    let add = delta.add.iter().map(String::as_bytes);
                    let remove = delta.remove.iter().map(String::as_bytes);
                    *users = Arc::new(users.with_changes(add, remove));
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

/// Reads the state file; a missing file is an empty overlay.
pub fn read_state_file(path: &Path) -> Result<Overlay, StateError> {
    let failed = |e: &dyn std::fmt::Display| {
        StateError::internal(format!("state file {}: {e}", path.display()))
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| failed(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overlay::default()),
        Err(e) => Err(failed(&e)),
    }
}

/// Writes the state file atomically: a temporary file in the same folder, synced, renamed.
pub fn write_state_file(path: &Path, overlay: &Overlay) -> Result<(), StateError> {
    use std::io::Write;
    let text =
        serde_json::to_vec_pretty(overlay).map_err(|e| StateError::internal(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
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
    fn user_changes_apply_on_the_file_list() {
        let base = crate::config::load_demo().expect("demo").gateway;
        let mut delta = UsersDelta::default();
        delta.record(&["zoe".into(), "alice".into()], &["alice".into()]);
        assert!(delta.add.contains("zoe") && !delta.add.contains("alice"));
        let overlay = Overlay {
            users: [("vip".to_string(), delta)].into(),
            ..Overlay::default()
        };
        let (router, warnings) = apply_overlay(&base.router, &overlay);
        assert!(warnings.is_empty(), "{warnings:?}");
        let vip = router.rules.iter().find(|r| r.name == "vip").expect("vip");
        let Matcher::Users { users } = &vip.matcher else {
            panic!("vip is a users rule")
        };
        assert!(users.contains(b"zoe") && !users.contains(b"alice"));
    }
}
