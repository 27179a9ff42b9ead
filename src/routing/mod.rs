//! The per-user canary decision: the rule model, the request's facts, cookie parsing and
//! stable hashing; and each route's access policy (addresses, htpasswd users).
//!
//! Pure and synchronous: no Pingora types, no I/O, no locks, no logging. The proxy fills a
//! [`RequestFacts`] once per request (headers, target, client address, verified user id),
//! calls [`Router::decide`] and keeps the [`Decision`] in its per-request context; explain
//! builds facts from its inputs and calls the same function.
//! The lowest layer: it imports nothing else from the crate.

pub(crate) mod access;
pub(crate) mod cidr;
mod conditions;
mod cookies;
mod decide;
mod facts;
pub(crate) mod identity;
pub(crate) mod jwt;
pub(crate) mod names;
mod percent;
pub mod routes;
mod rules;
pub mod signed;
pub(crate) mod userset;

use std::fmt;

pub(crate) use cidr::Cidr;
pub use conditions::{Condition, ValueTest, When};
pub use cookies::is_valid_user_id;
pub(crate) use cookies::{find_cookie, is_token_byte};
pub use decide::Router;
pub(crate) use decide::RuleTrace;
pub(crate) use decide::DEFAULT_COOKIE;
pub(crate) use facts::HeaderLookup;
pub use facts::RequestFacts;
pub(crate) use identity::IdSource;
pub use identity::Identity;
pub use jwt::JwtVerifier;
pub(crate) use percent::fnv1a64;
pub use percent::{percent_bucket, Percent};
pub(crate) use rules::{Kind, Setting};
pub use rules::{Rule, RuleKind};
pub use userset::UserSet;

/// The routing layer's one error: a value that is not what a rule needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoutingError {
    /// A percentage outside 0..=100 (or not a number).
    #[error("{0} is not in 0..=100")]
    PercentOutOfRange(f64),
    /// A percentage finer than the one part per million percentages are kept in.
    #[error(
        "{0} is finer than the resolution of 0.0001 (percentages are kept in parts per million)"
    )]
    PercentTooFine(f64),
    /// The user cookie carried a missing or wrong signature.
    #[error("the user cookie's signature is missing or wrong")]
    BadSignature,
    /// Not an IP network (the message says why).
    #[error("{0}")]
    BadNetwork(String),
    /// A request path whose dot segments climb above `/`.
    #[error("the path climbs above /")]
    PathAboveRoot,
}

/// Index of an upstream group in the gateway's group list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub usize);

/// Index of a rule in the router's ordered rule list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RuleId(pub(crate) usize);

/// Why a request went where it went. Shown in logs, the decision header and the explain endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// A header rule named the group.
    Header,
    /// The user id is on a rule's user list.
    UserList,
    /// The user id hashed into a percentage rule's share.
    Percent,
    /// A rule of only conditions (`when:` and `group:`) took the request.
    Condition,
    /// A user id was present but no rule matched.
    Default,
    /// No usable user id (no cookie, or a malformed one) and no header rule matched.
    Anonymous,
    /// The kill switch is on: every request goes to the default group.
    Rollback,
    /// Every request goes to the promoted group.
    Promote,
}

impl Reason {
    /// Lower-case name used in headers, logs and JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Header => "header",
            Reason::UserList => "user_list",
            Reason::Percent => "percent",
            Reason::Condition => "condition",
            Reason::Default => "default",
            Reason::Anonymous => "anonymous",
            Reason::Rollback => "rollback",
            Reason::Promote => "promote",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub group: GroupId,
    /// The rule that decided, or `None` when the default group was used.
    pub(crate) rule: Option<RuleId>,
    pub(crate) reason: Reason,
}

/// Whether the rules run, or an operator override sends everyone to one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// The rules decide (normal operation).
    #[default]
    Rules,
    /// Kill switch: every request to the default group, all rules off.
    Rollback,
    /// Every request to this group, all rules off.
    Promote(GroupId),
}
