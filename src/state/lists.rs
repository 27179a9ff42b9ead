//! Changes to user lists through the admin API: only ids whose membership changes count, a
//! request that changes nothing makes no version and no audit entry, and with a store a list
//! that looks unchanged on this node's copy is checked against Redis first.

use std::collections::{HashMap, HashSet};

use super::audit::AuditEntry;
use super::changes::{route_of, Changed};
use super::controller::{check_user_ids, find_rule_of_kind, rule_of_kind, Controller};
use super::store::{Change, Store};
use super::StateError;
use crate::routing::Kind;

impl Controller {
    /// `POST /routes/{route}/rules/{rule}/users`: a store-backed list changes in Redis (and
    /// from there on every node), any other list in the control state. Only ids whose
    /// membership changes count: adding an id already on the list or removing one that is not
    /// on it changes nothing, and a request that changes nothing makes no version and no audit
    /// entry (its answer says so).
    pub(crate) async fn change_users(
        &self,
        actor: &str,
        route: &str,
        rule: &str,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<UsersChanged, StateError> {
        check_user_ids(&add, &remove)?;
        let mut effect = self.list_effect(route, rule, &add, &remove)?;
        // With a store this node's copy may lag another node's change by a moment: before
        // answering that nothing changes, ask Redis.
        if effect.is_empty() {
            if let Some(fresh) = self.fresh_list_effect(route, rule, &add, &remove).await? {
                effect = fresh;
            }
        }
        if effect.is_empty() {
            let inner = self.lock();
            let now = Changed {
                generation: inner.generation,
                version: inner.overlay.version,
            };
            return Ok(effect.answer(now, false));
        }
        // The ids asked for are written, not only those this node sees change: adding and
        // removing are idempotent, so the list ends right even if this node's copy lagged.
        let asked_for = (add.as_slice(), remove.as_slice());
        let changed = match self.store_set(route, rule) {
            Some((store, set)) => {
                self.change_set_users(actor, route, rule, &store, set, asked_for, &effect)
                    .await?
            }
            None => {
                self.change_listed_users(actor, route, rule, asked_for, &effect)
                    .await?
            }
        };
        Ok(effect.answer(changed, true))
    }

    /// [`Self::list_effect`] from Redis, with a store: a store-backed set's members as Redis
    /// holds them, or the control state once this node has applied any newer version Redis
    /// holds. `None` without a store.
    async fn fresh_list_effect(
        &self,
        route: &str,
        rule: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<Option<ListEffect>, StateError> {
        let unavailable =
            |e: StateError| StateError::unavailable(format!("the store is unavailable: {e}"));
        if let Some((store, set)) = self.store_set(route, rule) {
            let ids: Vec<&str> = asked(add, remove).into_iter().map(|(id, _)| id).collect();
            let members = store.members(&set, &ids).await.map_err(unavailable)?;
            let on: HashSet<&str> = ids
                .iter()
                .zip(members)
                .filter_map(|(id, member)| member.then_some(*id))
                .collect();
            let size = self.list_effect(route, rule, &[], &[])?.size;
            return Ok(Some(effect_of(add, remove, |id| on.contains(id), size)));
        }
        let Some(store) = self.store() else {
            return Ok(None);
        };
        let shared = store.read_control().await.map_err(unavailable)?;
        if let Some(newer) = shared.filter(|c| c.version > self.lock().overlay.version) {
            self.apply_control(newer, &[], false)?;
        }
        self.list_effect(route, rule, add, remove).map(Some)
    }

    /// What a list change would do on the live list: the ids that change membership (the last
    /// word on an id wins, as in one request `remove` comes after `add`) and those that do not.
    fn list_effect(
        &self,
        route: &str,
        rule: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<ListEffect, StateError> {
        let state = self.state().load_full();
        let live = state.routes.iter().find(|r| r.name == route);
        let found = rule_of_kind(live.map(|r| &*r.router), route, rule, Kind::Users)?;
        let set = found.user_set();
        let was = |id: &str| set.is_some_and(|users| users.contains(id.as_bytes()));
        Ok(effect_of(
            add,
            remove,
            was,
            set.map_or(0, |users| users.len()),
        ))
    }

    /// A list kept in the control state.
    async fn change_listed_users(
        &self,
        actor: &str,
        route: &str,
        rule: &str,
        (add, remove): (&[String], &[String]),
        effect: &ListEffect,
    ) -> Result<Changed, StateError> {
        let mut entry = AuditEntry::now(
            actor,
            Some(route),
            Some(rule),
            "users",
            users_detail(&effect.add, &effect.remove),
        );
        effect.sizes(&mut entry);
        self.change(entry, |inner, overlay, _| {
            find_rule_of_kind(&inner.base, route, rule, Kind::Users)?;
            let file = inner
                .base
                .route(route)
                .and_then(|r| r.router.rule(rule))
                .and_then(|r| r.user_set());
            let in_file = |id: &str| file.is_some_and(|users| users.contains(id.as_bytes()));
            route_of(overlay, route)
                .users
                .entry(rule.to_string())
                .or_default()
                .record(add, remove, in_file);
            Ok(())
        })
        .await
    }

    /// A store-backed list: the set in Redis changes (and from there every node's); this node
    /// applies it at once too.
    #[allow(clippy::too_many_arguments)]
    async fn change_set_users(
        &self,
        actor: &str,
        route: &str,
        rule: &str,
        store: &Store,
        set: String,
        (add, remove): (&[String], &[String]),
        effect: &ListEffect,
    ) -> Result<Changed, StateError> {
        let mut entry = AuditEntry::now(
            actor,
            Some(route),
            Some(rule),
            "users",
            format!("set {set}: {}", users_detail(&effect.add, &effect.remove)),
        );
        effect.sizes(&mut entry);
        entry.version = self.lock().overlay.version;
        let change = Change {
            set,
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        store.write(&change, &entry).await.map_err(|e| {
            StateError::unavailable(format!("the store is unavailable, nothing changed: {e}"))
        })?;
        if store.apply(&change) {
            self.refresh_store();
        }
        let changed = {
            let mut inner = self.lock();
            super::audit::append(&mut inner.overlay.audit, std::slice::from_ref(&entry));
            Changed {
                generation: inner.generation,
                version: inner.overlay.version,
            }
        };
        self.announce(&entry, changed.generation);
        Ok(changed)
    }
}

/// What a list change does to the live list (see [`Controller::change_users`]).
#[derive(Debug, Default)]
struct ListEffect {
    /// Ids that join the list, in the order asked.
    add: Vec<String>,
    /// Ids that leave it.
    remove: Vec<String>,
    /// Ids asked to be added that were on it already.
    already_on: usize,
    /// Ids asked to be removed that were not on it.
    not_on: usize,
    /// The list's size before the change.
    size: usize,
}

/// Each id asked for once, with the last word on it (`true`: add), in the order first asked
/// (`remove` comes after `add` in one request).
fn asked<'a>(add: &'a [String], remove: &'a [String]) -> Vec<(&'a str, bool)> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut order: Vec<(&str, bool)> = Vec::new();
    for (ids, on) in [(add, true), (remove, false)] {
        for id in ids {
            match last.get(id.as_str()) {
                Some(&i) => order[i].1 = on,
                None => {
                    last.insert(id.as_str(), order.len());
                    order.push((id.as_str(), on));
                }
            }
        }
    }
    order
}

/// What adding `add` and then removing `remove` does to a list of `size` ids, of which `was`
/// says who is on it.
fn effect_of(
    add: &[String],
    remove: &[String],
    was: impl Fn(&str) -> bool,
    size: usize,
) -> ListEffect {
    let mut effect = ListEffect {
        size,
        ..ListEffect::default()
    };
    for (id, on) in asked(add, remove) {
        match (on, was(id)) {
            (true, false) => effect.add.push(id.to_string()),
            (false, true) => effect.remove.push(id.to_string()),
            (true, true) => effect.already_on += 1,
            (false, false) => effect.not_on += 1,
        }
    }
    effect
}

impl ListEffect {
    /// Whether no id changes membership.
    fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// The list's size before and after, in the audit entry.
    fn sizes(&self, entry: &mut AuditEntry) {
        let after = self.size + self.add.len() - self.remove.len().min(self.size);
        entry.before = Some(format!("{} users", self.size));
        entry.after = Some(format!("{after} users"));
    }

    fn answer(self, changed: Changed, made: bool) -> UsersChanged {
        UsersChanged {
            changed,
            made,
            added: self.add.len(),
            removed: self.remove.len(),
            already_on: self.already_on,
            not_on: self.not_on,
        }
    }
}

/// What a list change answers: the versions, whether a change was made at all, and how many
/// ids changed membership or were already where asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UsersChanged {
    pub(crate) changed: Changed,
    /// `false` when no id changed membership: no version, no audit entry.
    pub(crate) made: bool,
    pub(crate) added: usize,
    pub(crate) removed: usize,
    /// Ids asked to be added that were on the list already.
    pub(crate) already_on: usize,
    /// Ids asked to be removed that were not on the list.
    pub(crate) not_on: usize,
}

/// A list change in words, naming at most a few ids.
fn users_detail(add: &[String], remove: &[String]) -> String {
    let some = |ids: &[String]| {
        let mut text = ids.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if ids.len() > 5 {
            text.push_str(&format!(" and {} more", ids.len() - 5));
        }
        text
    };
    match (add.is_empty(), remove.is_empty()) {
        (false, true) => format!("added {}", some(add)),
        (true, false) => format!("removed {}", some(remove)),
        _ => format!("added {}; removed {}", some(add), some(remove)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::state::ConfigSource;

    const ACTOR: &str = "alice";

    fn controller() -> Controller {
        let loaded = config::load_demo().expect("demo");
        Controller::new(ConfigSource::Demo, loaded.spec, loaded.gateway).expect("controller")
    }

    #[tokio::test]
    async fn remove_wins_over_earlier_add_and_back() {
        let controller = controller();
        controller
            .change_users(
                ACTOR,
                "default",
                "vip",
                vec!["zoe".into()],
                vec!["alice".into()],
            )
            .await
            .expect("change");
        let status = controller.view();
        let vip = &status.state.routes[0].router.rules()[1];
        assert_eq!(vip.name(), "vip");
        let users = vip.user_set().expect("vip is a users rule");
        assert_eq!(users.len(), 2, "alice out, zoe in");
        let rule = |user: &str| {
            let e = controller
                .explain(&crate::state::ExplainQuery {
                    user: Some(user.into()),
                    ..Default::default()
                })
                .expect("explained");
            let decision = e.decision.expect("a route serves every request");
            e.state.routes[0].rule_name(&decision).to_string()
        };
        assert_eq!(rule("zoe"), "vip");
        assert_eq!(rule("alice"), "default");
        let changed = controller
            .change_users(
                ACTOR,
                "default",
                "vip",
                vec!["alice".into()],
                vec!["zoe".into()],
            )
            .await
            .expect("change back");
        assert_eq!(rule("alice"), "vip");
        assert_eq!(
            changed.changed,
            Changed {
                generation: 3,
                version: 2
            }
        );
        assert_eq!((changed.added, changed.removed), (1, 1));
        let trail = controller.local_audit(10);
        assert_eq!(trail.len(), 2);
        assert_eq!(trail[0].version, 2, "newest first");
        assert_eq!(trail[0].detail, "added alice; removed zoe");
        assert_eq!(trail[0].actor, ACTOR);
        assert_eq!(
            (trail[0].before.as_deref(), trail[0].after.as_deref()),
            (Some("2 users"), Some("2 users"))
        );
        let view = controller.view();
        let delta = &view.overlay.route("default").expect("changed").users["vip"];
        assert!(
            delta.add.is_empty() && delta.remove.is_empty(),
            "back to the file's list: nothing counted as added or removed"
        );
    }

    /// Removing an id that is not on the list, or adding one that is, changes nothing: no
    /// version, no audit entry, no count moved; the answer says how many were not there.
    #[tokio::test]
    async fn a_change_that_changes_nothing_is_not_made() {
        let c = controller();
        let answer = c
            .change_users(
                ACTOR,
                "default",
                "vip",
                vec!["alice".into()],
                vec!["nobody".into()],
            )
            .await
            .expect("answered");
        assert!(!answer.made);
        assert_eq!(
            (
                answer.added,
                answer.removed,
                answer.already_on,
                answer.not_on
            ),
            (0, 0, 1, 1)
        );
        assert_eq!(answer.changed.version, 0, "no new version");
        assert!(c.local_audit(10).is_empty(), "no audit entry");
        let view = c.view();
        assert!(
            view.overlay
                .route("default")
                .is_none_or(|r| r.users.is_empty()),
            "no count moved"
        );
        // Mixed: only the id that changes membership counts, in the entry too.
        let answer = c
            .change_users(
                ACTOR,
                "default",
                "vip",
                vec![],
                vec!["alice".into(), "nobody".into()],
            )
            .await
            .expect("answered");
        assert!(answer.made);
        assert_eq!((answer.removed, answer.not_on), (1, 1));
        let trail = c.local_audit(10);
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].detail, "removed alice");
        assert_eq!(trail[0].before.as_deref(), Some("2 users"));
        assert_eq!(trail[0].after.as_deref(), Some("1 users"));
    }
}
