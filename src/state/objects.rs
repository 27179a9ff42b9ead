//! Routes and groups written through the admin API (`/config/routes/{name}`,
//! `/config/groups/{name}`): each write is one versioned, audited change of the control state
//! (see [`Controller::change`]) whose objects are merged over the file's section and validated
//! by the one validation path before anything changes. Also what `-t` checks: the file merged
//! with the state file's objects.

use std::path::Path;
use std::sync::Arc;

use super::audit::AuditEntry;
use super::controller::{Controller, Inner, Validated};
use super::overlay::{read_state_file, Overlay, OverlayMode};
use super::{Changed, StateError};
use crate::config::objects::{file_key, merge, validate_merged, whole_site_route, ObjectKind};
use crate::config::spec::{GroupSpec, RouteSpec, RuleKindSpec, RuleSpec, ServerSpec};
use crate::config::{ConfigError, ConfigObjects, GatewayConfig, GatewaySpec};

/// What a reload serves of the API's objects: the merged section and its configuration,
/// the objects in it, and why the control state's are not (when they are not).
pub(super) struct ReloadedObjects {
    pub(super) merged: Arc<GatewaySpec>,
    pub(super) config: GatewayConfig,
    pub(super) served: ConfigObjects,
    pub(super) warning: Option<String>,
}

/// Where an object comes from: the file, or the admin API (the control state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    File,
    Api,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
        }
    }
}

/// The routes and groups in force, each with where it comes from: what `GET /config/routes`
/// and `/config/groups` show. Secrets written inline are redacted.
pub(crate) struct ObjectsView {
    /// The routes as the merged section has them, in the section's order, then the control
    /// state's routes not served here.
    pub(crate) routes: Vec<ViewedObject<RouteSpec>>,
    /// The groups by name, then the control state's groups not served here.
    pub(crate) groups: Vec<ViewedObject<GroupSpec>>,
}

/// One route or group as `GET /config/...` shows it.
pub(crate) struct ViewedObject<T> {
    pub(crate) name: String,
    pub(crate) source: Source,
    /// `false`: an object of the control state that does not fit this node's file, so the
    /// one served under its name (if any) is another.
    pub(crate) served: bool,
    pub(crate) object: T,
}

impl Controller {
    /// The routes and groups in force, redacted, with their sources; then the control
    /// state's objects that are not served here (`objects_warning`), marked so.
    pub(crate) fn config_objects(&self) -> ObjectsView {
        let inner = self.lock();
        let merged = inner.merged.redacted();
        let served = &inner.served;
        let source = |api: bool| if api { Source::Api } else { Source::File };
        let mut routes: Vec<ViewedObject<RouteSpec>> = merged
            .routes
            .iter()
            .flatten()
            .map(|r| ViewedObject {
                name: r.name.clone(),
                source: source(
                    served.routes.contains_key(&r.name)
                        && file_key(&inner.spec, ObjectKind::Route, &r.name).is_none(),
                ),
                served: true,
                object: r.clone(),
            })
            .collect();
        if let (None, Some(routing)) = (&merged.routes, &merged.routing) {
            // The file's single routing block is the route `default`, every host and path.
            let whole = whole_site_route(routing.clone());
            routes.push(ViewedObject {
                name: whole.name.clone(),
                source: Source::File,
                served: true,
                object: whole,
            });
        }
        let mut groups: Vec<ViewedObject<GroupSpec>> = merged
            .groups
            .iter()
            .map(|(name, g)| ViewedObject {
                name: name.clone(),
                source: source(
                    served.groups.contains_key(name) && !inner.spec.groups.contains_key(name),
                ),
                served: true,
                object: g.clone(),
            })
            .collect();
        // The control state's objects this node does not serve (absent or another version).
        let unserved = ConfigObjects {
            routes: (inner.overlay.config.routes.iter())
                .filter(|(name, r)| served.routes.get(*name) != Some(*r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect(),
            groups: (inner.overlay.config.groups.iter())
                .filter(|(name, g)| served.groups.get(*name) != Some(*g))
                .map(|(name, g)| (name.clone(), g.clone()))
                .collect(),
        };
        // Redacted as the merged section is: the same section with only these objects.
        let unserved = GatewaySpec {
            routes: Some(unserved.routes.into_values().collect()),
            routing: None,
            groups: unserved.groups,
            ..(*inner.merged).clone()
        }
        .redacted();
        routes.extend(unserved.routes.into_iter().flatten().map(|r| ViewedObject {
            name: r.name.clone(),
            source: Source::Api,
            served: false,
            object: r,
        }));
        groups.extend(unserved.groups.into_iter().map(|(name, g)| ViewedObject {
            name,
            source: Source::Api,
            served: false,
            object: g,
        }));
        ObjectsView { routes, groups }
    }

    /// `PUT /config/routes/{name}`: creates or replaces the API's route `name`.
    pub(crate) async fn put_route(
        &self,
        actor: &str,
        name: &str,
        mut route: RouteSpec,
    ) -> Result<Changed, StateError> {
        route.name = name.to_string();
        let words = route_words(&route);
        let rules = route.routing.rules.clone();
        self.write_object(actor, ObjectKind::Route, name, words, move |overlay| {
            // The live changes of rules the new body no longer has (or has as another kind)
            // go; an active plan on one refuses the write.
            let dropped = prune_route_overlay(overlay, name, &rules)?;
            let old = overlay
                .config
                .routes
                .insert(name.to_string(), route.clone())
                .map(|old| route_words(&old));
            Ok((old, dropped))
        })
        .await
    }

    /// `PUT /config/groups/{name}`: creates or replaces the API's group `name`.
    pub(crate) async fn put_group(
        &self,
        actor: &str,
        name: &str,
        group: GroupSpec,
    ) -> Result<Changed, StateError> {
        let words = group_words(&group);
        self.write_object(actor, ObjectKind::Group, name, words, move |overlay| {
            let old = overlay
                .config
                .groups
                .insert(name.to_string(), group.clone())
                .map(|old| group_words(&old));
            Ok((old, Vec::new()))
        })
        .await
    }

    /// `DELETE /config/routes/{name}` and `/config/groups/{name}`: removes the API's object
    /// (`Conflict` when only the file defines the name, `NotFound` when nothing does; a
    /// route's live changes go with it, but a route with an active rollout plan and a group
    /// an override promotes are `Conflict`: abort the plan, or resume, first).
    pub(crate) async fn delete_object(
        &self,
        actor: &str,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Changed, StateError> {
        let entry = AuditEntry::now(
            actor,
            (kind == ObjectKind::Route).then_some(name),
            None,
            &format!("{}_delete", kind.as_str()),
            format!("{} {name} deleted (made through the API)", kind.as_str()),
        );
        self.change(entry, |inner, overlay, _| {
            let had = match kind {
                ObjectKind::Route => overlay.config.routes.remove(name).is_some(),
                ObjectKind::Group => overlay.config.groups.remove(name).is_some(),
            };
            // An API object the file now defines too (another node's, or kept from before the
            // file changed) may still be deleted: that is how the collision is resolved.
            if !had {
                self.refuse_file_objects(inner, kind, name)?;
                return Err(StateError::not_found(format!(
                    "no {} named {name:?} was made through the API",
                    kind.as_str()
                )));
            }
            // An API copy the file took over goes alone: the live changes and overrides are
            // the file's object's now.
            let taken_over = file_key(&inner.spec, kind, name).is_some();
            match kind {
                _ if taken_over => {}
                ObjectKind::Route => {
                    refuse_active_plans(overlay, name, |_| true)?;
                    // Its percentages, lists, override and maintenance would only be warned
                    // about, and come back if a route of that name did.
                    overlay.routes.remove(name);
                }
                // Its servers' modes too; a group made again under the name starts enabled.
                ObjectKind::Group => {
                    refuse_promoted(overlay, name)?;
                    overlay.servers.remove(name);
                }
            }
            self.check_objects(inner, &overlay.config)
                .map_err(|e| match kind {
                    ObjectKind::Group => StateError {
                        message: format!("group {name:?} is still used: {}", e.message),
                        ..e
                    },
                    ObjectKind::Route => e,
                })
        })
        .await
    }

    /// One create-or-replace: refused (`Conflict`) when the file defines `name`; `insert`
    /// puts the object in and gives the words of the one it replaced, if any; the merged
    /// section must validate (`Invalid`, naming the key). The audit entry says what was
    /// created, or what was replaced by what.
    async fn write_object(
        &self,
        actor: &str,
        kind: ObjectKind,
        name: &str,
        words: String,
        insert: impl Fn(&mut Overlay) -> Result<(Option<String>, Vec<String>), StateError>,
    ) -> Result<Changed, StateError> {
        let entry = AuditEntry::now(
            actor,
            (kind == ObjectKind::Route).then_some(name),
            None,
            &format!("{}_put", kind.as_str()),
            String::new(),
        );
        self.change(entry, |inner, overlay, entry| {
            self.refuse_file_objects(inner, kind, name)?;
            let (old, dropped) = insert(overlay)?;
            match old {
                Some(old) => entry.moved(
                    &format!("{} {name} replaced:", kind.as_str()),
                    old,
                    words.clone(),
                ),
                None => entry.detail = format!("{} {name} created: {words}", kind.as_str()),
            }
            if !dropped.is_empty() {
                entry.detail = format!(
                    "{}; live changes of rules it no longer has dropped: {}",
                    entry.detail,
                    dropped.join(", ")
                );
            }
            self.check_objects(inner, &overlay.config)?;
            self.check_store_sets(&overlay.config)
        })
        .await
    }

    /// What a reload serves of the API's objects over the new file's section `spec`
    /// (validated alone as `config`). The control state's objects when they fit; when they
    /// do not, refused naming the key — unless they did not fit before either
    /// (`objects_warning`): then, as at start, the objects last served (or the file alone
    /// when those do not fit now) with the warning kept, refusing only a name the new file
    /// defines that the control state has and the old file did not (a new collision).
    pub(super) fn reload_objects(
        &self,
        inner: &Inner,
        spec: &GatewaySpec,
        config: GatewayConfig,
    ) -> Result<ReloadedObjects, StateError> {
        let objects = &inner.overlay.config;
        let file_alone = |config: GatewayConfig, warning: Option<String>| ReloadedObjects {
            merged: Arc::new(spec.clone()),
            config,
            served: ConfigObjects::default(),
            warning,
        };
        if objects.is_empty() {
            return Ok(file_alone(config, None));
        }
        let e = match self.merge_objects(inner, spec, objects) {
            Ok((merged, config)) => {
                return Ok(ReloadedObjects {
                    merged,
                    config,
                    served: objects.clone(),
                    warning: None,
                })
            }
            Err(e) => e,
        };
        if inner.objects_warning.is_none() {
            return Err(StateError::invalid(e.to_string()));
        }
        self.refuse_new_collisions(inner, spec)?;
        if !inner.served.is_empty() {
            if let Ok((merged, config)) = self.merge_objects(inner, spec, &inner.served) {
                return Ok(ReloadedObjects {
                    merged,
                    config,
                    served: inner.served.clone(),
                    warning: Some(format!(
                        "the control state's routes and groups are not served: {e} (the file \
                         and the ones last served are)"
                    )),
                });
            }
        }
        Ok(file_alone(
            config,
            Some(format!(
                "the API's routes and groups are not served: {e} (the file alone is)"
            )),
        ))
    }

    /// `Invalid` naming both when the new file's section `spec` defines a name that one of
    /// the control state's objects has and the file in force did not.
    fn refuse_new_collisions(&self, inner: &Inner, spec: &GatewaySpec) -> Result<(), StateError> {
        let objects = &inner.overlay.config;
        let routes = objects.routes.iter().map(|(name, route)| {
            let mut one = ConfigObjects::default();
            one.routes.insert(name.clone(), route.clone());
            (ObjectKind::Route, name, one)
        });
        let groups = objects.groups.iter().map(|(name, group)| {
            let mut one = ConfigObjects::default();
            one.groups.insert(name.clone(), group.clone());
            (ObjectKind::Group, name, one)
        });
        for (kind, name, one) in groups.chain(routes) {
            let new =
                file_key(spec, kind, name).is_some() && file_key(&inner.spec, kind, name).is_none();
            if new {
                if let Err(e) = merge(spec, &one) {
                    return Err(StateError::invalid(
                        ConfigError {
                            file: self.source.describe(),
                            ..e
                        }
                        .to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `Conflict` naming the file when the file defines `name` of `kind`.
    fn refuse_file_objects(
        &self,
        inner: &Inner,
        kind: ObjectKind,
        name: &str,
    ) -> Result<(), StateError> {
        match file_key(&inner.spec, kind, name) {
            Some(key) => Err(StateError::conflict(format!(
                "{} {name:?} is defined in {} ({key}); change it there",
                kind.as_str(),
                self.source.describe()
            ))),
            None => Ok(()),
        }
    }

    /// `Invalid` naming the key when an API route's `users_store` rule names a set the store
    /// does not keep: the store's sets are fixed at start from the file, so the rule would
    /// never have users.
    fn check_store_sets(&self, objects: &ConfigObjects) -> Result<(), StateError> {
        let Some(store) = &self.store else {
            // Without a store, validation refuses `users_store` already.
            return Ok(());
        };
        for (name, route) in &objects.routes {
            for (i, rule) in route.routing.rules.iter().enumerate() {
                if let RuleKindSpec::Users {
                    users_store: Some(set),
                    ..
                } = &rule.kind
                {
                    if !store.has_set(set) {
                        let key = format!("routes.{name}.routing.rules[{i}].users_store");
                        return Err(StateError::invalid_field(
                            &key,
                            format!(
                                "{key}: set {set:?} is not one of the store's sets ({}); the \
                                 sets are those the file's rules name, fixed at start",
                                store.set_names().join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the file's section merged with `objects` validates (`Invalid` naming the key).
    /// What validated is kept for the apply that follows (see [`Self::take_validated`]).
    fn check_objects(&self, inner: &Inner, objects: &ConfigObjects) -> Result<(), StateError> {
        let (merged, config) = self
            .merge_objects(inner, &inner.spec, objects)
            .map_err(|e| StateError::invalid_field(&e.key, key_message(&e)))?;
        *self.validated.lock().unwrap_or_else(|p| p.into_inner()) = Some(Validated {
            file: inner.spec.clone(),
            objects: objects.clone(),
            merged,
            config,
        });
        Ok(())
    }

    /// The section and configuration a write's edit validated for `objects` over the file in
    /// force, if that is what it validated: a write is validated once, so the apply cannot
    /// disagree with the answer (validation reads files, which may change in between).
    pub(super) fn take_validated(
        &self,
        inner: &Inner,
        objects: &ConfigObjects,
    ) -> Option<(Arc<GatewaySpec>, GatewayConfig)> {
        let kept = self
            .validated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        (Arc::ptr_eq(&kept.file, &inner.spec) && kept.objects == *objects)
            .then_some((kept.merged, kept.config))
    }
}

/// `Conflict` when a rollout plan of `route` on a rule that `goes` is active (running,
/// paused or held): the plan owns the rule, as `set_percent` says.
fn refuse_active_plans(
    overlay: &Overlay,
    route: &str,
    goes: impl Fn(&str) -> bool,
) -> Result<(), StateError> {
    let plans = overlay.routes.get(route).into_iter().flat_map(|r| &r.plans);
    for (rule, plan) in plans {
        if plan.status.is_active() && goes(rule) {
            return Err(StateError::conflict(format!(
                "route {route:?}: rule {rule:?} is driven by its rollout plan ({}); abort the \
                 plan first (POST /routes/{route}/rules/{rule}/plan/abort)",
                plan.status.as_str()
            )));
        }
    }
    Ok(())
}

/// Drops the live changes of `route`'s rules that `rules` (its new body's) no longer has as
/// the same kind: a percentage or plan of a rule that is no percent rule now (a plan also
/// when the rule has no plan now), a list change of a rule that is no users rule now.
/// `Conflict` when one of them is an active plan. Returns what went (`percent of rule a`).
fn prune_route_overlay(
    overlay: &mut Overlay,
    route: &str,
    rules: &[RuleSpec],
) -> Result<Vec<String>, StateError> {
    let kind = |name: &str| rules.iter().find(|r| r.name == name).map(|r| &r.kind);
    let is_percent = |name: &str| matches!(kind(name), Some(RuleKindSpec::Percent { .. }));
    let has_plan = |name: &str| {
        matches!(
            kind(name),
            Some(RuleKindSpec::Percent { plan: Some(_), .. })
        )
    };
    let is_users = |name: &str| matches!(kind(name), Some(RuleKindSpec::Users { .. }));
    refuse_active_plans(overlay, route, |rule| !has_plan(rule))?;
    let Some(changes) = overlay.routes.get_mut(route) else {
        return Ok(Vec::new());
    };
    let mut dropped = Vec::new();
    let mut drop_from = |what: &str, names: Vec<String>, keep: &dyn Fn(&str) -> bool| {
        for name in names.into_iter().filter(|n| !keep(n)) {
            dropped.push(format!("{what} of rule {name}"));
        }
    };
    drop_from(
        "percent",
        changes.percent.keys().cloned().collect(),
        &is_percent,
    );
    drop_from("users", changes.users.keys().cloned().collect(), &is_users);
    drop_from("plan", changes.plans.keys().cloned().collect(), &has_plan);
    changes.percent.retain(|name, _| is_percent(name));
    changes.percent_by.retain(|name, _| is_percent(name));
    changes.users.retain(|name, _| is_users(name));
    changes.plans.retain(|name, _| has_plan(name));
    Ok(dropped)
}

/// `Conflict` naming the override when the global or a route's override promotes `group`
/// (deleting it would silently send that traffic back to the rules).
fn refuse_promoted(overlay: &Overlay, group: &str) -> Result<(), StateError> {
    let promoted = OverlayMode::Promote(group.to_string());
    if overlay.mode == promoted {
        return Err(StateError::conflict(format!(
            "group {group:?} is promoted by the global override; resume first (POST /resume)"
        )));
    }
    if let Some((route, _)) = overlay.routes.iter().find(|(_, r)| r.mode == promoted) {
        return Err(StateError::conflict(format!(
            "group {group:?} is promoted by route {route:?}'s override; resume it first \
             (POST /routes/{route}/resume)"
        )));
    }
    Ok(())
}

/// An error's key and message as one line (`routes.shop.routing.default: "x" is not…`).
fn key_message(e: &ConfigError) -> String {
    if e.key.is_empty() {
        e.message.clone()
    } else {
        format!("{}: {}", e.key, e.message)
    }
}

/// A route in a few words, for the audit trail: hosts, paths and default group.
fn route_words(route: &RouteSpec) -> String {
    let list = |items: &[String], none: &str| {
        if items.is_empty() {
            none.to_string()
        } else {
            items.join(" ")
        }
    };
    format!(
        "hosts {}, paths {}, default group {}, {} rule(s)",
        list(&route.hosts, "any"),
        list(&route.paths, "/"),
        route.routing.default,
        route.routing.rules.len()
    )
}

/// A group in a few words, for the audit trail: its servers and weights.
fn group_words(group: &GroupSpec) -> String {
    let servers: Vec<String> = group
        .servers
        .iter()
        .map(|s| match s {
            ServerSpec::Addr(addr) => addr.clone(),
            ServerSpec::Weighted(w) => match w.weight {
                Some(weight) => format!("{} (weight {weight})", w.addr),
                None => w.addr.clone(),
            },
        })
        .collect();
    format!("servers {}", servers.join(", "))
}

/// What `-t` checks beside the file: the API's routes and groups kept in the state file at
/// `state_file` (when it exists), merged over `spec` (the file's section, read from
/// `file_name`, relative paths against `base`) and validated as the controller will. A name
/// both define is refused naming both. Returns how many objects were checked.
pub fn check_state_file_objects(
    spec: &GatewaySpec,
    state_file: &Path,
    base: &Path,
    file_name: &str,
) -> Result<usize, String> {
    if !state_file.exists() {
        return Ok(0);
    }
    let overlay = read_state_file(state_file).map_err(|e| e.to_string())?;
    if overlay.config.is_empty() {
        return Ok(0);
    }
    validate_merged(spec, &overlay.config, base, file_name)
        .map(|_| overlay.config.len())
        .map_err(|e| {
            format!(
                "{e} (the API's routes and groups are kept in {})",
                state_file.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::state::overlay::ControlMessage;
    use crate::state::plan::PlanCommand;
    use crate::state::{ConfigSource, ErrorKind};

    const FILE: &str = "gateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    stable: { servers: [\"127.0.0.1:2\"] }\n  routing: { default: stable }\n";

    fn controller() -> Controller {
        let loaded = config::load_str(FILE, "gw.yaml", Path::new(".")).expect("valid");
        Controller::new(ConfigSource::Demo, loaded.spec, loaded.gateway).expect("controller")
    }

    fn group(addr: &str) -> GroupSpec {
        serde_json::from_value(serde_json::json!({ "servers": [addr] })).expect("a group")
    }

    fn route(group: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": "ignored", "hosts": ["shop.example.com"], "routing": { "default": group }
        }))
        .expect("a route")
    }

    fn route_names(c: &Controller) -> Vec<String> {
        c.view()
            .state
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    /// A write is served at once, named by its key (the body's name is the path's); the file's
    /// names are refused as conflicts, and a delete of what the API did not make is NotFound.
    #[tokio::test]
    async fn writes_are_merged_and_served() {
        let c = controller();
        c.put_group("alice", "shop", group("127.0.0.1:3"))
            .await
            .expect("group");
        let changed = c
            .put_route("alice", "shop", route("shop"))
            .await
            .expect("route");
        assert_eq!(changed.version, 2);
        assert_eq!(route_names(&c), ["default", "shop"]);
        let view = c.config_objects();
        let sources: Vec<(&str, Source)> = view
            .routes
            .iter()
            .map(|r| (r.name.as_str(), r.source))
            .collect();
        assert_eq!(sources, [("default", Source::File), ("shop", Source::Api)]);
        assert_eq!(view.routes[1].object.name, "shop");
        assert!(view.routes.iter().all(|r| r.served));

        let e = c.put_group("alice", "stable", group("127.0.0.1:3")).await;
        assert_eq!(e.expect_err("the file's").kind, ErrorKind::Conflict);
        let e = c.delete_object("alice", ObjectKind::Route, "nope").await;
        assert_eq!(e.expect_err("unknown").kind, ErrorKind::NotFound);
        let e = c
            .delete_object("alice", ObjectKind::Group, "shop")
            .await
            .expect_err("used");
        assert_eq!(e.field.as_deref(), Some("routes.shop.routing.default"));
        assert!(
            e.message.starts_with("group \"shop\" is still used: "),
            "{}",
            e.message
        );

        c.delete_object("alice", ObjectKind::Route, "shop")
            .await
            .expect("deleted");
        assert_eq!(route_names(&c), ["default"]);
        assert_eq!(c.view().control.version, 3, "refusals changed nothing");
    }

    /// A control state from another node whose objects do not validate here keeps the
    /// objects in force and says why; the next one that fits is served.
    #[tokio::test]
    async fn a_remote_state_that_does_not_fit_keeps_the_old_objects() {
        let c = controller();
        let mut bad = Overlay::default();
        bad.version = 5;
        bad.config
            .groups
            .insert("stable".into(), group("127.0.0.1:3"));
        c.apply_remote(ControlMessage {
            control: bad,
            changes: Vec::new(),
        });
        let view = c.view();
        assert_eq!(view.control.version, 5, "the state itself is taken");
        assert_eq!(route_names(&c), ["default"]);
        assert!(
            view.overlay_warnings
                .iter()
                .any(|w| w.contains("control state version 5")
                    && w.contains("gateway.groups.stable")),
            "{:?}",
            view.overlay_warnings
        );
        // The API's copy of a name the file defines can be deleted: the collision is gone.
        c.delete_object("alice", ObjectKind::Group, "stable")
            .await
            .expect("the API's copy goes");
        assert!(c.view().overlay_warnings.is_empty());
        assert_eq!(c.view().control.version, 6);
        let e = c.delete_object("alice", ObjectKind::Group, "stable").await;
        assert_eq!(e.expect_err("the file's").kind, ErrorKind::Conflict);
        let mut good = Overlay::default();
        good.version = 7;
        good.config
            .groups
            .insert("shop".into(), group("127.0.0.1:3"));
        good.config.routes.insert("shop".into(), {
            let mut r = route("shop");
            r.name = "shop".into();
            r
        });
        c.apply_remote(ControlMessage {
            control: good,
            changes: Vec::new(),
        });
        assert_eq!(route_names(&c), ["default", "shop"]);
        assert!(c.view().overlay_warnings.is_empty());
    }

    fn shop_route(rules: serde_json::Value) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": "gshop", "hosts": ["gshop.example.com"],
            "routing": { "default": "stable", "rules": rules }
        }))
        .expect("a route")
    }

    /// Whether `/metrics` has a step gauge for `route` / `rule`.
    fn has_step_gauge(route: &str, rule: &str) -> bool {
        use prometheus::core::Collector;
        crate::state::metrics::METRICS
            .rollout_step
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .any(|m| {
                let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
                labels == [route, rule]
            })
    }

    /// A route whose rollout plan is active is neither deleted nor replaced by a body without
    /// the plan (409, "abort the plan first"); once aborted, a replacing body drops the live
    /// changes of the rules it no longer has (the audit entry says which), and a delete
    /// drops the route's entry and its step gauge.
    #[tokio::test]
    async fn live_changes_follow_the_route_body() {
        let c = controller();
        c.put_group("alice", "canary", group("127.0.0.1:3"))
            .await
            .expect("group");
        let with_plan = shop_route(serde_json::json!([
            { "name": "gp", "percent": 0, "group": "canary",
              "plan": { "steps": [5, 50], "hold": "1m", "baseline": "stable" } },
            { "name": "gu", "users": ["a"], "group": "canary" }
        ]));
        c.put_route("alice", "gshop", with_plan.clone())
            .await
            .expect("route");
        c.plan_command("alice", "gshop", "gp", PlanCommand::Start, false)
            .await
            .expect("started");
        c.change_users("alice", "gshop", "gu", vec!["b".into()], Vec::new())
            .await
            .expect("listed");
        assert!(has_step_gauge("gshop", "gp"));
        let version = c.view().control.version;

        let e = c
            .delete_object("alice", ObjectKind::Route, "gshop")
            .await
            .expect_err("the plan runs");
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("abort the plan first"), "{}", e.message);
        for rules in [
            serde_json::json!([{ "name": "gu", "users": ["a"], "group": "canary" }]),
            serde_json::json!([{ "name": "gp", "percent": 5, "group": "canary" }]),
        ] {
            let e = c
                .put_route("alice", "gshop", shop_route(rules))
                .await
                .expect_err("the plan runs");
            assert_eq!(e.kind, ErrorKind::Conflict);
            assert!(e.message.contains("rule \"gp\""), "{}", e.message);
        }
        // The same body again keeps the plan and the list.
        c.put_route("alice", "gshop", with_plan)
            .await
            .expect("same rules");
        let kept = c.view().overlay.routes["gshop"].clone();
        assert!(kept.plans.contains_key("gp") && kept.users.contains_key("gu"));
        assert_eq!(
            c.view().control.version,
            version + 1,
            "refusals changed nothing"
        );

        c.plan_command("alice", "gshop", "gp", PlanCommand::Abort, false)
            .await
            .expect("aborted");
        c.put_route(
            "alice",
            "gshop",
            shop_route(serde_json::json!([{ "name": "gu", "percent": 5, "group": "canary" }])),
        )
        .await
        .expect("replaced");
        let left = c
            .view()
            .overlay
            .routes
            .get("gshop")
            .cloned()
            .unwrap_or_default();
        assert!(
            left.plans.is_empty() && left.users.is_empty() && left.percent.is_empty(),
            "{left:?}"
        );
        let detail = &c.local_audit(1)[0].detail;
        assert!(
            detail.contains("dropped: percent of rule gp, users of rule gu, plan of rule gp"),
            "{detail}"
        );
        assert!(
            !has_step_gauge("gshop", "gp"),
            "the dropped plan's gauge goes"
        );

        c.set_maintenance("alice", "gshop", Some(30))
            .await
            .expect("maintenance");
        c.delete_object("alice", ObjectKind::Route, "gshop")
            .await
            .expect("deleted");
        assert!(!c.view().overlay.routes.contains_key("gshop"));
    }

    /// An API group that the global or a route's override promotes is not deleted (409
    /// naming the override); after a resume it is.
    #[tokio::test]
    async fn a_promoted_group_is_not_deleted() {
        let c = controller();
        c.put_group("alice", "spare", group("127.0.0.1:3"))
            .await
            .expect("group");
        c.set_mode("alice", None, OverlayMode::Promote("spare".into()))
            .await
            .expect("promoted");
        let e = c
            .delete_object("alice", ObjectKind::Group, "spare")
            .await
            .expect_err("promoted");
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("global override"), "{}", e.message);
        c.set_mode("alice", None, OverlayMode::Rules)
            .await
            .expect("resumed");
        c.set_mode(
            "alice",
            Some("default"),
            OverlayMode::Promote("spare".into()),
        )
        .await
        .expect("promoted on the route");
        let e = c
            .delete_object("alice", ObjectKind::Group, "spare")
            .await
            .expect_err("promoted");
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(
            e.message.contains("route \"default\"'s override"),
            "{}",
            e.message
        );
        c.set_mode("alice", Some("default"), OverlayMode::Rules)
            .await
            .expect("resumed");
        c.delete_object("alice", ObjectKind::Group, "spare")
            .await
            .expect("deleted");
    }

    /// A `users_store` rule of an API route must name one of the store's sets (fixed at
    /// start from the file): another set is refused naming the key.
    #[tokio::test]
    async fn a_store_set_must_be_one_the_store_keeps() {
        let file = "gateway:\n  listen: [\"127.0.0.1:1\"]\n  store: { redis: \"redis://127.0.0.1:1/0\" }\n  groups:\n    stable: { servers: [\"127.0.0.1:2\"] }\n  routing:\n    default: stable\n    rules: [{ name: vip, users_store: vips, group: stable }]\n";
        let loaded = config::load_str(file, "gw.yaml", Path::new(".")).expect("valid");
        let c = Controller::new(ConfigSource::Demo, loaded.spec, loaded.gateway).expect("c");
        let route = |set: &str| {
            shop_route(serde_json::json!([
                { "name": "beta", "users_store": set, "group": "stable" }
            ]))
        };
        let e = c
            .put_route("alice", "gshop", route("others"))
            .await
            .expect_err("not a set of the store");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(
            e.field.as_deref(),
            Some("routes.gshop.routing.rules[0].users_store")
        );
        assert!(e
            .message
            .contains("\"others\" is not one of the store's sets (vips)"));
        // The store's own set passes the checks (and then needs Redis, which is not here).
        let e = c
            .put_route("alice", "gshop", route("vips"))
            .await
            .expect_err("no Redis here");
        assert_eq!(e.kind, ErrorKind::Unavailable, "{}", e.message);
    }

    /// A node whose control-state objects do not fit its file (another node's group takes
    /// a name this file has) still reloads, as it starts: the file and the objects last
    /// served, the warning kept; `/config/routes|groups` label by what is served and list
    /// the unserved object as such; a file that newly defines a control-state name is
    /// refused naming both; once the state fits again, all of it is served.
    #[tokio::test]
    async fn a_node_whose_objects_do_not_fit_still_reloads() {
        let dir = std::env::temp_dir().join(format!("canary-objects-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("gw.yaml");
        std::fs::write(&path, FILE).expect("write");
        let loaded = config::load_file(&path).expect("valid");
        let c = Controller::new(
            ConfigSource::File(path.clone()),
            loaded.spec,
            loaded.gateway,
        )
        .expect("controller");
        c.put_group("alice", "shop", group("127.0.0.1:3"))
            .await
            .expect("group");
        let mut shop = route("shop");
        shop.name = "shop".into();
        c.put_route("alice", "shop", shop.clone())
            .await
            .expect("route");
        // Another node's state: our objects plus a group `stable` (this file's name).
        let mut theirs = c.view().overlay;
        theirs.version += 1;
        theirs
            .config
            .groups
            .insert("stable".into(), group("127.0.0.1:4"));
        c.apply_remote(ControlMessage {
            control: theirs.clone(),
            changes: Vec::new(),
        });
        assert_eq!(c.view().overlay_warnings.len(), 1);

        c.reload()
            .expect("a reload of the same file serves what it served");
        assert_eq!(route_names(&c), ["default", "shop"]);
        let warnings = c.view().overlay_warnings;
        assert!(
            warnings.len() == 1 && warnings[0].contains("gateway.groups.stable"),
            "{warnings:?}"
        );
        let view = c.config_objects();
        let groups: Vec<(&str, Source, bool)> = view
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.source, g.served))
            .collect();
        assert_eq!(
            groups,
            [
                ("shop", Source::Api, true),
                ("stable", Source::File, true),
                ("stable", Source::Api, false)
            ]
        );

        // A file that newly defines `shop` collides with the control state's group.
        std::fs::write(
            &path,
            FILE.replace(
                "  routing:",
                "    shop: { servers: [\"127.0.0.1:5\"] }\n  routing:",
            ),
        )
        .expect("write");
        let e = c.reload().expect_err("a new collision");
        assert!(
            e.message.contains("gateway.groups.shop") && e.message.contains("groups.shop"),
            "{}",
            e.message
        );

        // The other node's group goes: everything is served again, no warning.
        std::fs::write(&path, FILE).expect("write");
        theirs.config.groups.remove("stable");
        theirs.version += 1;
        c.apply_remote(ControlMessage {
            control: theirs,
            changes: Vec::new(),
        });
        c.reload().expect("fits");
        assert!(c.view().overlay_warnings.is_empty());
        assert!(c.config_objects().groups.iter().all(|g| g.served));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A write validates the merged configuration once: the apply takes what the write's
    /// check validated rather than validating again.
    #[tokio::test]
    async fn a_write_is_validated_once() {
        let c = controller();
        let before = config::objects::validations();
        c.put_group("alice", "shop", group("127.0.0.1:3"))
            .await
            .expect("group");
        assert_eq!(config::objects::validations() - before, 1);
        assert_eq!(route_names(&c), ["default"]);
        assert!(c.view().state.pools.len() == 2, "the new group is served");
    }
}
