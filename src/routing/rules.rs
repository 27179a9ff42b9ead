//! The rule model: one [`Rule`] is a name and a [`RuleKind`], the tagged enum of everything a
//! rule can test.
//!
//! A new kind touches two files, and the compiler points at every arm:
//! - here: a [`RuleKind`] variant, a [`Kind`] (its name), its arms in [`RuleKind::name`],
//!   [`RuleKind::settings`] (what `/status` shows) and [`Rule::matches`],
//!   and a case in this file's table tests;
//! - `config/rules.rs`: a `RuleKindSpec` variant, the keys that name it (`RuleKeys`, the
//!   reader's key list, `RuleKeys::into_spec`, the writer's arm), its validation into this
//!   [`RuleKind`] (`build_rule`), and cases in that file's table tests.
//!
//! Any rule may also carry conditions ([`When`], `when:` in the file): they are checked before
//! the kind's own test, and a rule whose conditions fail does not apply.
//!
//! Nothing else matches on every kind: views, the controller and explain ask for a kind's
//! name, settings, user list or share.

use std::sync::Arc;

use super::conditions::When;
use super::cookies::trim_ows;
use super::facts::{HeaderLookup, RequestFacts};
use super::percent::{percent_bucket, Percent};
use super::signed::constant_time_eq;
use super::{Cidr, GroupId, Reason, UserSet};

/// What a rule tests and where it sends a match. Built and validated once (from the file or
/// the API); `decide` only reads it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RuleKind {
    /// A request header whose value is a group name picks that group (QA override); other
    /// values are ignored. With `secret`, the value must be `group:secret`; with `from`, the
    /// client address must be in one of the networks.
    Header {
        /// The header's name, lower-case.
        header: String,
        secret: Option<Box<[u8]>>,
        from: Vec<Cidr>,
    },
    /// Users on the list go to `group`.
    Users { users: Arc<UserSet>, group: GroupId },
    /// Users whose stable bucket (of `seed` and the user id) is inside `share` go to `group`.
    Percent {
        share: Percent,
        seed: Box<[u8]>,
        group: GroupId,
    },
    /// Every request that passes the rule's conditions goes to `group` (a rule of only
    /// `when:` and `group:`).
    Match { group: GroupId },
}

/// One setting of a rule, as a description shows it ([`RuleKind::settings`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Setting {
    Text(String),
    Flag(bool),
    Texts(Vec<String>),
    /// A group, which the reader names (the rule holds only its index).
    Group(GroupId),
    Count(usize),
    Share(f64),
}

impl RuleKind {
    /// The kind's name.
    pub(crate) fn name(&self) -> Kind {
        match self {
            RuleKind::Header { .. } => Kind::Header,
            RuleKind::Users { .. } => Kind::Users,
            RuleKind::Percent { .. } => Kind::Percent,
            RuleKind::Match { .. } => Kind::Match,
        }
    }

    /// What this rule is set to, as key/values, for showing it (`/status`): secrets only as
    /// whether they are set, user lists only as their length. A new kind lists its settings
    /// here, and every view of rules shows them.
    pub(crate) fn settings(&self) -> Vec<(&'static str, Setting)> {
        match self {
            RuleKind::Header {
                header,
                secret,
                from,
            } => vec![
                ("header", Setting::Text(header.clone())),
                ("needs_secret", Setting::Flag(secret.is_some())),
                (
                    "from",
                    Setting::Texts(from.iter().map(|c| c.to_string()).collect()),
                ),
            ],
            RuleKind::Users { users, group } => vec![
                ("group", Setting::Group(*group)),
                ("users", Setting::Count(users.len())),
            ],
            RuleKind::Percent { share, seed, group } => vec![
                ("group", Setting::Group(*group)),
                ("percent", Setting::Share(share.as_f64())),
                (
                    "seed",
                    Setting::Text(String::from_utf8_lossy(seed).into_owned()),
                ),
            ],
            RuleKind::Match { group } => vec![("group", Setting::Group(*group))],
        }
    }
}

/// A rule kind's name, for the admin API (`"percent"`), errors and kind checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Header,
    Users,
    Percent,
    Match,
}

impl Kind {
    /// Lower-case name used in JSON and messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::Users => "users",
            Kind::Percent => "percent",
            Kind::Match => "match",
        }
    }
}

/// One routing rule, already validated: a name (unique in its router) and what it tests.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    kind: RuleKind,
    /// The rule's conditions; boxed so a rule without them stays small.
    when: Option<Box<When>>,
}

impl Rule {
    /// A rule named `name` (names are unique within a router; the config layer checks).
    pub fn new(name: impl Into<String>, kind: RuleKind) -> Rule {
        Rule {
            name: name.into(),
            kind,
            when: None,
        }
    }

    /// This rule, applying only when every condition of `when` holds.
    pub fn with_when(mut self, when: When) -> Rule {
        self.when = Some(Box::new(when));
        self
    }

    /// The rule's conditions, when it has any.
    pub(crate) fn when(&self) -> Option<&When> {
        self.when.as_deref()
    }

    /// A QA header rule on `header` (lower-case), without secret or network restriction.
    pub fn header(name: impl Into<String>, header: impl Into<String>) -> Rule {
        Rule::new(
            name,
            RuleKind::Header {
                header: header.into(),
                secret: None,
                from: Vec::new(),
            },
        )
    }

    /// A user-list rule sending `users` to `group`.
    pub fn users(name: impl Into<String>, users: Arc<UserSet>, group: GroupId) -> Rule {
        Rule::new(name, RuleKind::Users { users, group })
    }

    /// A percentage rule sending `share` of users (bucketed with `seed`) to `group`.
    pub fn percent(name: impl Into<String>, share: Percent, seed: &[u8], group: GroupId) -> Rule {
        Rule::new(
            name,
            RuleKind::Percent {
                share,
                seed: seed.into(),
                group,
            },
        )
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn kind(&self) -> &RuleKind {
        &self.kind
    }

    /// The kind's name.
    pub(crate) fn kind_name(&self) -> Kind {
        self.kind.name()
    }

    /// The user list of a users rule.
    pub(crate) fn user_set(&self) -> Option<&Arc<UserSet>> {
        match &self.kind {
            RuleKind::Users { users, .. } => Some(users),
            _ => None,
        }
    }

    /// The share of a percent rule.
    pub(crate) fn share(&self) -> Option<Percent> {
        match self.kind {
            RuleKind::Percent { share, .. } => Some(share),
            _ => None,
        }
    }

    /// Gives a percent rule a new share (an operator's or a plan's change, on the controller's
    /// own copy); `false` when this is another kind.
    pub(crate) fn set_share(&mut self, new: Percent) -> bool {
        match &mut self.kind {
            RuleKind::Percent { share, .. } => {
                *share = new;
                true
            }
            _ => false,
        }
    }

    /// Gives a users rule a new list (changes made through the API, a store snapshot);
    /// `false` when this is another kind.
    pub(crate) fn set_user_set(&mut self, new: Arc<UserSet>) -> bool {
        match &mut self.kind {
            RuleKind::Users { users, .. } => {
                *users = new;
                true
            }
            _ => false,
        }
    }

    /// Whether this rule takes the request, and to which group for which reason. `group_by_name`
    /// resolves a header value to a group.
    #[inline]
    pub(super) fn matches<H: HeaderLookup + ?Sized>(
        &self,
        facts: &RequestFacts<'_, H>,
        group_by_name: impl Fn(&[u8]) -> Option<GroupId>,
    ) -> Option<(GroupId, Reason)> {
        // A rule without conditions pays one check here.
        if let Some(when) = &self.when {
            if !when.holds(facts) {
                return None;
            }
        }
        match &self.kind {
            RuleKind::Header {
                header,
                secret,
                from,
            } => facts
                .header(header)
                .filter(|_| {
                    from.is_empty()
                        || facts
                            .client_ip()
                            .is_some_and(|ip| from.iter().any(|net| net.contains(ip)))
                })
                .and_then(|value| header_group(trim_ows(value), secret.as_deref()))
                .and_then(group_by_name)
                .map(|group| (group, Reason::Header)),
            RuleKind::Users { users, group } => facts
                .user()
                .filter(|id| users.contains(id))
                .map(|_| (*group, Reason::UserList)),
            RuleKind::Percent { share, seed, group } => facts
                .user()
                .filter(|id| share.includes(percent_bucket(seed, id)))
                .map(|_| (*group, Reason::Percent)),
            RuleKind::Match { group } => Some((*group, Reason::Condition)),
        }
    }
}

/// The group a QA header value names: the whole value, or with a secret, the part before the
/// last `:` when the part after it is the secret.
fn header_group<'a>(value: &'a [u8], secret: Option<&[u8]>) -> Option<&'a [u8]> {
    match secret {
        None => Some(value),
        Some(secret) => {
            let colon = value.iter().rposition(|&b| b == b':')?;
            constant_time_eq(&value[colon + 1..], secret).then_some(&value[..colon])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind describes itself by name and settings; secrets and user lists are not shown.
    #[test]
    fn kinds_describe_their_settings() {
        let users = Arc::new(UserSet::from_lines(b"alice\nbob\n"));
        let share = Percent::new(12.5).expect("share");
        let cases = [
            (
                RuleKind::Header {
                    header: "x-qa".into(),
                    secret: Some(b"s3cret-value"[..].into()),
                    from: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
                },
                Kind::Header,
                vec![
                    ("header", Setting::Text("x-qa".into())),
                    ("needs_secret", Setting::Flag(true)),
                    ("from", Setting::Texts(vec!["10.0.0.0/8".into()])),
                ],
            ),
            (
                RuleKind::Users {
                    users,
                    group: GroupId(1),
                },
                Kind::Users,
                vec![
                    ("group", Setting::Group(GroupId(1))),
                    ("users", Setting::Count(2)),
                ],
            ),
            (
                RuleKind::Percent {
                    share,
                    seed: b"seed-7"[..].into(),
                    group: GroupId(0),
                },
                Kind::Percent,
                vec![
                    ("group", Setting::Group(GroupId(0))),
                    ("percent", Setting::Share(12.5)),
                    ("seed", Setting::Text("seed-7".into())),
                ],
            ),
            (
                RuleKind::Match { group: GroupId(2) },
                Kind::Match,
                vec![("group", Setting::Group(GroupId(2)))],
            ),
        ];
        for (kind, name, settings) in cases {
            assert_eq!(kind.name(), name);
            assert_eq!(kind.settings(), settings, "{}", name.as_str());
        }
    }
}
