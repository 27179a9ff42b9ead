//! The rule model: one [`Rule`] is a name and a [`RuleKind`], the tagged enum of everything a
//! rule can test. A new kind is a new variant here, its arm in [`Rule::matches`], its
//! validation in `config` and its table test — nothing else matches on kinds.

use std::sync::Arc;

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
}

/// A rule kind's name, for the admin API (`"percent"`), errors and kind checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Header,
    Users,
    Percent,
}

impl Kind {
    /// Lower-case name used in JSON and messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::Users => "users",
            Kind::Percent => "percent",
        }
    }
}

/// One routing rule, already validated: a name (unique in its router) and what it tests.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    kind: RuleKind,
}

impl Rule {
    /// A rule named `name` (names are unique within a router; the config layer checks).
    pub fn new(name: impl Into<String>, kind: RuleKind) -> Rule {
        Rule {
            name: name.into(),
            kind,
        }
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
        match self.kind {
            RuleKind::Header { .. } => Kind::Header,
            RuleKind::Users { .. } => Kind::Users,
            RuleKind::Percent { .. } => Kind::Percent,
        }
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
