//! The router of one route: its groups, user cookie, ordered rules and operator mode, and
//! [`Router::decide`], the decision every request (and explain) goes through.

use std::sync::Arc;

use super::cookies::{find_cookie, is_valid_user_id};
use super::facts::{HeaderLookup, RequestFacts};
use super::identity::Identity;
use super::rules::Rule;
use super::signed::{verify_signed, SigningKey};
use super::{Decision, GroupId, Mode, Reason, RoutingError, RuleId};

/// The cookie that carries the user id when none is configured.
pub(crate) const DEFAULT_COOKIE: &str = "canary_user";

/// One rule's part in a decision, as explain shows it ([`Router::trace`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleTrace {
    /// Each condition of the rule's `when:` (described) and whether it holds.
    pub(crate) conditions: Vec<(String, bool)>,
    /// The group the rule would send the request to, when it takes it.
    pub(crate) takes: Option<GroupId>,
}

/// The ordered rule set of one route and everything `decide` needs. Built once (by the config
/// layer, or by [`Router::new`] and its `with_*` methods in benches and tests); the controller
/// changes its own copies and swaps them in whole.
#[derive(Debug, Clone)]
pub struct Router {
    /// Group names, indexed by [`GroupId`].
    group_names: Vec<String>,
    /// Name of the cookie that carries the user id.
    cookie: String,
    default_group: GroupId,
    rules: Vec<Rule>,
    mode: Mode,
    /// When not empty, the user cookie must be signed (`<id>.<tag>`) with one of these keys.
    signing_keys: Vec<SigningKey>,
    /// The identity sources beyond the one cookie (`routing.identity`); `None`: the user id
    /// is the cookie's alone (the path that pays nothing for the other sources).
    identity: Option<Arc<Identity>>,
}

impl Router {
    /// A router over `group_names` (indexed by [`GroupId`]) that sends everything to
    /// `default_group`: no rules, mode `Mode::Rules`, cookie `DEFAULT_COOKIE`, unsigned.
    pub fn new(group_names: Vec<String>, default_group: GroupId) -> Router {
        Router {
            group_names,
            cookie: DEFAULT_COOKIE.into(),
            default_group,
            rules: Vec::new(),
            mode: Mode::Rules,
            signing_keys: Vec::new(),
            identity: None,
        }
    }

    /// The identity sources in order (none: the cookie alone).
    pub(crate) fn with_identity(mut self, identity: Option<Arc<Identity>>) -> Router {
        self.identity = identity;
        self
    }

    /// The identity sources, when the route has more than its cookie.
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The keys the user cookie (and the visitor cookie) are signed with.
    pub(crate) fn signing_keys(&self) -> &[SigningKey] {
        &self.signing_keys
    }

    /// The cookie that carries the user id (a token; the config layer checks).
    pub(crate) fn with_cookie(mut self, cookie: impl Into<String>) -> Router {
        self.cookie = cookie.into();
        self
    }

    /// The rules, in the order they run.
    pub fn with_rules(mut self, rules: Vec<Rule>) -> Router {
        self.rules = rules;
        self
    }

    /// Requires the user cookie to be signed with one of `keys` (none: unsigned).
    pub fn with_signing_keys(mut self, keys: Vec<Box<[u8]>>) -> Router {
        self.signing_keys = keys.iter().map(|key| SigningKey::new(key)).collect();
        self
    }

    /// The operator override (see [`Mode`]).
    #[cfg(test)]
    pub(crate) fn with_mode(mut self, mode: Mode) -> Router {
        self.mode = mode;
        self
    }

    /// Group names, indexed by [`GroupId`].
    pub fn group_names(&self) -> &[String] {
        &self.group_names
    }

    pub(crate) fn cookie(&self) -> &str {
        &self.cookie
    }

    pub fn default_group(&self) -> GroupId {
        self.default_group
    }

    /// The rules, in the order they run.
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The headers the header rules read a group from (QA overrides, lanes), lower-case: the
    /// proxy keeps them from the origin.
    pub(crate) fn override_headers(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|rule| match rule.kind() {
            super::RuleKind::Header { header, .. } => Some(header.as_str()),
            _ => None,
        })
    }

    /// The rule named `name`.
    pub(crate) fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name() == name)
    }

    /// The rule named `name`, for the controller's changes on its own copy.
    pub(crate) fn rule_mut(&mut self, name: &str) -> Option<&mut Rule> {
        self.rules.iter_mut().find(|r| r.name() == name)
    }

    /// The rules, for the controller's changes on its own copy.
    pub(crate) fn rules_mut(&mut self) -> &mut [Rule] {
        &mut self.rules
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Sets the operator override on the controller's own copy.
    pub(crate) fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Decides the group for a request from its facts. An operator override (`mode`) comes
    /// first; then the rules run in order and the first that matches decides; then the
    /// default group (reason `default` with a user id, `anonymous` without).
    pub fn decide<H: HeaderLookup + ?Sized>(&self, facts: &RequestFacts<'_, H>) -> Decision {
        match self.mode {
            Mode::Rules => {}
            Mode::Rollback => {
                return Decision {
                    group: self.default_group,
                    rule: None,
                    reason: Reason::Rollback,
                }
            }
            Mode::Promote(group) => {
                return Decision {
                    group,
                    rule: None,
                    reason: Reason::Promote,
                }
            }
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if let Some((group, reason)) = rule.matches(facts, |name| self.group_by_name(name)) {
                return Decision {
                    group,
                    rule: Some(RuleId(index)),
                    reason,
                };
            }
        }
        Decision {
            group: self.default_group,
            rule: None,
            reason: if facts.user().is_some() {
                Reason::Default
            } else {
                Reason::Anonymous
            },
        }
    }

    /// What each rule makes of the request, in order, for explain: its conditions' results
    /// and whether it would take the request (the first that would is the one `decide`
    /// uses, unless an operator override comes first). Allocates; never on the request path.
    pub(crate) fn trace<H: HeaderLookup + ?Sized>(
        &self,
        facts: &RequestFacts<'_, H>,
    ) -> Vec<RuleTrace> {
        self.rules
            .iter()
            .map(|rule| RuleTrace {
                conditions: rule
                    .when()
                    .map(|when| {
                        when.conditions()
                            .iter()
                            .map(|c| (c.describe(), c.holds(facts)))
                            .collect()
                    })
                    .unwrap_or_default(),
                takes: rule
                    .matches(facts, |name| self.group_by_name(name))
                    .map(|(group, _)| group),
            })
            .collect()
    }

    /// The user id from the routing cookie across all `Cookie` header values, in order.
    pub fn user_from_cookies<'a, I>(&self, cookie_headers: I) -> Option<&'a [u8]>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        self.user_from_cookies_checked(cookie_headers)
            .ok()
            .flatten()
    }

    /// As [`Router::user_from_cookies`], telling a bad signature apart from no cookie. With
    /// signing keys, the value must be `<user id>.<tag>`; the user id is returned.
    pub(crate) fn user_from_cookies_checked<'a, I>(
        &self,
        cookie_headers: I,
    ) -> Result<Option<&'a [u8]>, RoutingError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let Some(value) = find_cookie(cookie_headers, self.cookie.as_bytes()) else {
            return Ok(None);
        };
        let user = if self.signing_keys.is_empty() {
            value
        } else {
            verify_signed(value, &self.signing_keys).ok_or(RoutingError::BadSignature)?
        };
        Ok(Some(user).filter(|id| is_valid_user_id(id)))
    }

    /// The group with this exact name.
    pub(crate) fn group_by_name(&self, name: &[u8]) -> Option<GroupId> {
        self.group_names
            .iter()
            .position(|g| g.as_bytes() == name)
            .map(GroupId)
    }

    /// Name of a group id produced by this router.
    pub fn group_name(&self, group: GroupId) -> &str {
        self.group_names
            .get(group.0)
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Name of the rule that made a decision, or `"default"`.
    pub fn rule_name(&self, decision: &Decision) -> &str {
        decision
            .rule
            .and_then(|id| self.rules.get(id.0))
            .map(Rule::name)
            .unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;
    use crate::routing::cookies::MAX_USER_ID_LEN;
    use crate::routing::{Cidr, Condition, Percent, RuleKind, UserSet, ValueTest, When};

    const STABLE: GroupId = GroupId(0);
    const CANARY: GroupId = GroupId(1);
    const BETA: GroupId = GroupId(2);

    fn users(ids: &[&str]) -> Arc<UserSet> {
        Arc::new(UserSet::from_ids(ids.iter().map(|s| s.as_bytes())))
    }

    fn share(percent: f64) -> Percent {
        Percent::new(percent).expect("test percent in range")
    }

    /// QA header, then a VIP list to stable, then testers to beta, then a 10% rollout to
    /// canary; default stable.
    fn router() -> Router {
        Router::new(
            vec!["stable".into(), "canary".into(), "beta".into()],
            STABLE,
        )
        .with_rules(vec![
            Rule::header("qa-override", "x-canary-group"),
            Rule::users("vip", users(&["alice", "bob"]), STABLE),
            Rule::users("testers", users(&["tess"]), BETA),
            Rule::percent("rollout", share(10.0), b"2026-11-release", CANARY),
        ])
    }

    fn decide(router: &Router, cookie: Option<&str>, headers: &[(&str, &str)]) -> Decision {
        let user = router.user_from_cookies(cookie.map(str::as_bytes));
        router.decide(&RequestFacts::new(headers).with_user(user))
    }

    /// The decision's (group, rule index, reason).
    fn outcome(d: Decision) -> (GroupId, Option<usize>, Reason) {
        (d.group, d.rule.map(|r| r.0), d.reason)
    }

    /// A user id that falls inside (`inside = true`) or outside a percentage rule.
    fn find_user(seed: &str, percent: f64, inside: bool) -> String {
        let ppm = share(percent).ppm();
        (0..100_000)
            .map(|i| format!("user-{i}"))
            .find(|u| {
                (crate::routing::percent_bucket(seed.as_bytes(), u.as_bytes()) < ppm) == inside
            })
            .expect("some user in 100k lands on each side")
    }

    // Precedence, one rule per test.

    /// Rollback sends everyone to the default group, before every rule (the QA header too).
    #[test]
    fn rollback_beats_every_rule() {
        let r = router().with_mode(Mode::Rollback);
        let qa = [("x-canary-group", "canary")];
        for cookie in [None, Some("canary_user=tess"), Some("canary_user=alice")] {
            let d = decide(&r, cookie, &qa);
            assert_eq!(outcome(d), (STABLE, None, Reason::Rollback), "{cookie:?}");
        }
    }

    /// Promote sends everyone to its group, before every rule (the QA header too).
    #[test]
    fn promote_beats_every_rule() {
        let r = router().with_mode(Mode::Promote(CANARY));
        let qa = [("x-canary-group", "beta")];
        for cookie in [None, Some("canary_user=tess"), Some("canary_user=alice")] {
            let d = decide(&r, cookie, &qa);
            assert_eq!(outcome(d), (CANARY, None, Reason::Promote), "{cookie:?}");
        }
        let r = r.with_mode(Mode::Rules);
        assert_eq!(decide(&r, Some("canary_user=tess"), &[]).group, BETA);
    }

    /// An earlier header rule beats a later user list.
    #[test]
    fn header_rule_before_a_list_wins() {
        let d = decide(
            &router(),
            Some("canary_user=alice"),
            &[("x-canary-group", "canary")],
        );
        assert_eq!(outcome(d), (CANARY, Some(0), Reason::Header));
    }

    /// A header rule needs no user id.
    #[test]
    fn header_rule_needs_no_user() {
        let d = decide(&router(), None, &[("x-canary-group", "beta")]);
        assert_eq!(outcome(d), (BETA, Some(0), Reason::Header));
    }

    /// A header value that names no group (names are exact, case included) lets the next rule
    /// decide.
    #[test]
    fn header_naming_no_group_falls_through() {
        for value in ["nope", "Canary", ""] {
            let d = decide(
                &router(),
                Some("canary_user=alice"),
                &[("x-canary-group", value)],
            );
            assert_eq!(outcome(d), (STABLE, Some(1), Reason::UserList), "{value:?}");
        }
    }

    /// A header value is trimmed of spaces before it is compared.
    #[test]
    fn header_value_is_trimmed() {
        let d = decide(&router(), None, &[("x-canary-group", " canary ")]);
        assert_eq!(outcome(d), (CANARY, Some(0), Reason::Header));
    }

    /// An earlier user list beats a later percent rule, even for a user inside the share.
    #[test]
    fn list_before_percent_wins() {
        let inside = find_user("2026-11-release", 10.0, true);
        let r = Router::new(vec!["stable".into(), "canary".into()], STABLE).with_rules(vec![
            Rule::users("vip", users(&[&inside]), STABLE),
            Rule::percent("rollout", share(10.0), b"2026-11-release", CANARY),
        ]);
        let d = decide(&r, Some(&format!("canary_user={inside}")), &[]);
        assert_eq!(outcome(d), (STABLE, Some(0), Reason::UserList));
    }

    /// Of two lists holding a user, the first in file order decides.
    #[test]
    fn first_matching_rule_wins() {
        let r = Router::new(vec!["stable".into(), "canary".into()], STABLE).with_rules(vec![
            Rule::users("first", users(&["zed"]), CANARY),
            Rule::users("second", users(&["zed"]), STABLE),
        ]);
        let d = decide(&r, Some("canary_user=zed"), &[]);
        assert_eq!(outcome(d), (CANARY, Some(0), Reason::UserList));
    }

    /// A user inside a percent rule's share goes to its group.
    #[test]
    fn user_inside_the_share_takes_the_percent_rule() {
        let inside = find_user("2026-11-release", 10.0, true);
        let d = decide(&router(), Some(&format!("canary_user={inside}")), &[]);
        assert_eq!(outcome(d), (CANARY, Some(3), Reason::Percent));
    }

    /// A user that no rule takes goes to the default group, reason `default`.
    #[test]
    fn unmatched_user_gets_the_default() {
        let outside = find_user("2026-11-release", 10.0, false);
        let d = decide(&router(), Some(&format!("canary_user={outside}")), &[]);
        assert_eq!(outcome(d), (STABLE, None, Reason::Default));
    }

    /// Without a user id, no list or percent rule matches: default group, reason `anonymous`.
    #[test]
    fn no_user_is_anonymous() {
        let r = Router::new(vec!["stable".into(), "canary".into()], STABLE)
            .with_rules(vec![Rule::percent("all", share(100.0), b"s", CANARY)]);
        assert_eq!(
            outcome(decide(&r, None, &[])),
            (STABLE, None, Reason::Anonymous)
        );
    }

    /// A header rule with a secret needs `group:secret`; with `from`, a client in the networks;
    /// otherwise it falls through.
    #[test]
    fn restricted_header_rule_falls_through_unless_satisfied() {
        let r = Router::new(vec!["stable".into(), "canary".into()], STABLE).with_rules(vec![
            Rule::new(
                "qa",
                RuleKind::Header {
                    header: "x-canary-group".into(),
                    secret: Some(b"s3cret"[..].into()),
                    from: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
                },
            ),
        ]);
        let cases = [
            ("canary:s3cret", Some("10.1.2.3"), CANARY, Reason::Header),
            ("canary", Some("10.1.2.3"), STABLE, Reason::Anonymous),
            ("canary:wrong", Some("10.1.2.3"), STABLE, Reason::Anonymous),
            (
                "canary:s3cret",
                Some("192.0.2.1"),
                STABLE,
                Reason::Anonymous,
            ),
            (
                "canary:s3cretx",
                Some("10.1.2.3"),
                STABLE,
                Reason::Anonymous,
            ),
            ("canary:s3cret", None, STABLE, Reason::Anonymous),
        ];
        for (value, ip, group, reason) in cases {
            let headers = [("x-canary-group", value)];
            let client = ip.map(|ip| ip.parse::<IpAddr>().expect("ip"));
            let d = r.decide(&RequestFacts::new(&headers[..]).with_client(client));
            assert_eq!((d.group, d.reason), (group, reason), "{value} from {ip:?}");
        }
    }

    // The user cookie.

    /// (what, cookie header, expected group, expected rule index, reason)
    type CookieCase<'a> = (
        &'a str,
        Option<String>,
        Vec<(&'a str, &'a str)>,
        GroupId,
        Option<usize>,
        Reason,
    );

    /// How the routing cookie is read: each case a Cookie header and the decision it gets.
    #[test]
    fn cookie_values_table() {
        let r = router();
        let cases: Vec<CookieCase> = vec![
            (
                "no cookie goes to default as anonymous",
                None,
                vec![],
                STABLE,
                None,
                Reason::Anonymous,
            ),
            (
                "other cookies around the routing cookie",
                Some("a=1; canary_user=bob; z=2".into()),
                vec![],
                STABLE,
                Some(1),
                Reason::UserList,
            ),
            (
                "quoted cookie value",
                Some("canary_user=\"tess\"".into()),
                vec![],
                BETA,
                Some(2),
                Reason::UserList,
            ),
            (
                "no spaces between cookies",
                Some("a=1;canary_user=tess;b=2".into()),
                vec![],
                BETA,
                Some(2),
                Reason::UserList,
            ),
            (
                "first of duplicate cookies wins",
                Some("canary_user=tess; canary_user=alice".into()),
                vec![],
                BETA,
                Some(2),
                Reason::UserList,
            ),
            (
                "empty value is anonymous",
                Some("canary_user=".into()),
                vec![],
                STABLE,
                None,
                Reason::Anonymous,
            ),
            (
                "malformed pairs are skipped",
                Some("garbage;;=;canary_user=alice".into()),
                vec![],
                STABLE,
                Some(1),
                Reason::UserList,
            ),
            (
                "value with a space is anonymous",
                Some("canary_user=al ice".into()),
                vec![],
                STABLE,
                None,
                Reason::Anonymous,
            ),
            (
                "value with a backslash is anonymous",
                Some("canary_user=a\\b".into()),
                vec![],
                STABLE,
                None,
                Reason::Anonymous,
            ),
            (
                "cookie name must match exactly",
                Some("canary_user2=alice; Canary_user=bob".into()),
                vec![],
                STABLE,
                None,
                Reason::Anonymous,
            ),
            (
                "unterminated quote is taken literally and rejected",
                Some("canary_user=\"alice".into()),
                vec![],
                STABLE,
                None,
                Reason::Anonymous,
            ),
        ];
        for (what, cookie, headers, group, rule, reason) in cases {
            let d = decide(&r, cookie.as_deref(), &headers);
            assert_eq!(outcome(d), (group, rule, reason), "{what}");
        }
    }

    /// Several Cookie header lines are read in order, as RFC 6265 §5.4 joins them.
    #[test]
    fn several_cookie_headers_are_one_list() {
        let r = router();
        let lines: [&[u8]; 2] = [b"a=1", b"canary_user=alice"];
        assert_eq!(r.user_from_cookies(lines), Some(&b"alice"[..]));
        let lines: [&[u8]; 2] = [b"canary_user=tess", b"canary_user=alice"];
        assert_eq!(r.user_from_cookies(lines), Some(&b"tess"[..]));
    }

    /// Non-UTF-8, control bytes and over-long values never panic and make the user anonymous.
    #[test]
    fn hostile_cookie_values_are_anonymous() {
        let r = router();
        let long = format!("canary_user={}", "a".repeat(MAX_USER_ID_LEN + 1));
        let exact = format!("canary_user={}", "a".repeat(MAX_USER_ID_LEN));
        let bad: [&[u8]; 4] = [
            b"canary_user=\xff\xfe",
            b"canary_user=a\x00b",
            b"canary_user=a\rb",
            long.as_bytes(),
        ];
        for value in bad {
            assert_eq!(r.user_from_cookies([value]), None, "{value:?}");
        }
        assert!(r.user_from_cookies([exact.as_bytes()]).is_some());
    }

    /// With signing keys, only `<id>.<tag>` values with a valid tag identify a user.
    #[test]
    fn signed_cookies() {
        let r = router().with_signing_keys(vec![b"new"[..].into(), b"old"[..].into()]);
        let good = super::super::signed::signed_cookie_value(b"old", "alice");
        let cookie = format!("canary_user={good}");
        assert_eq!(
            r.user_from_cookies_checked([cookie.as_bytes()]),
            Ok(Some(&b"alice"[..]))
        );
        assert_eq!(
            r.user_from_cookies_checked([&b"canary_user=alice"[..]]),
            Err(RoutingError::BadSignature)
        );
        let forged = format!("canary_user=bob.{}", &good[6..]);
        assert_eq!(
            r.user_from_cookies_checked([forged.as_bytes()]),
            Err(RoutingError::BadSignature)
        );
        assert_eq!(r.user_from_cookies_checked([&b"other=1"[..]]), Ok(None));
        let d = decide(&r, Some("canary_user=alice"), &[]);
        assert_eq!(d.reason, Reason::Anonymous, "an unsigned VIP is anonymous");
    }

    // Conditions (`when:`).

    /// A request with these headers, target, method and client, decided by `r`.
    fn decide_facts(
        r: &Router,
        headers: &[(&str, &str)],
        target: &str,
        method: &str,
        client: &str,
        user: Option<&str>,
    ) -> (GroupId, Option<usize>, Reason) {
        let facts = RequestFacts::new(headers)
            .with_target(target.as_bytes())
            .with_method(method)
            .with_client(Some(client.parse().expect("ip")))
            .with_user(user.map(str::as_bytes));
        outcome(r.decide(&facts))
    }

    fn test(kind: &str, name: &str, value: ValueTest) -> Condition {
        let name = name.to_string();
        match kind {
            "header" => Condition::Header { name, test: value },
            "cookie" => Condition::Cookie { name, test: value },
            _ => Condition::Query { name, test: value },
        }
    }

    fn equals(v: &str) -> ValueTest {
        ValueTest::Equals(v.as_bytes().into())
    }

    /// The issue's example rules: opt-in and opt-out cookies, an app version pattern, an office
    /// network with methods, and a query-scoped percentage; default stable.
    fn conditional_router() -> Router {
        let when = |c: Vec<Condition>| When::new(c);
        Router::new(vec!["stable".into(), "canary".into()], STABLE).with_rules(vec![
            Rule::new("beta-opt-in", RuleKind::Match { group: CANARY })
                .with_when(when(vec![test("cookie", "beta", equals("always"))])),
            Rule::new("opt-out", RuleKind::Match { group: STABLE }).with_when(when(vec![test(
                "cookie",
                "beta",
                equals("never"),
            )])),
            Rule::new("app-v5", RuleKind::Match { group: CANARY }).with_when(when(vec![test(
                "header",
                "x-app-version",
                ValueTest::Matches(regex::bytes::Regex::new(r"^5\.").expect("re")),
            )])),
            Rule::new("office", RuleKind::Match { group: CANARY }).with_when(when(vec![
                Condition::Method(vec!["GET".into(), "HEAD".into()]),
                Condition::Client(vec![Cidr::parse("192.0.2.0/24").expect("cidr")]),
            ])),
            Rule::percent("rollout", share(10.0), b"eu", CANARY).with_when(when(vec![test(
                "query",
                "region",
                equals("eu"),
            )])),
        ])
    }

    /// Each conditional rule takes the requests its conditions describe, and only those; a
    /// condition in front of a percent rule narrows it, the share still applies.
    #[test]
    fn conditions_table() {
        let r = conditional_router();
        let inside = find_user("eu", 10.0, true);
        let outside = find_user("eu", 10.0, false);
        let out = "198.51.100.1";
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            (GroupId, Option<usize>, Reason),
        );
        let cases: Vec<Case> = vec![
            (
                "opt-in cookie",
                vec![("cookie", "beta=always")],
                "/",
                "GET",
                out,
                None,
                (CANARY, Some(0), Reason::Condition),
            ),
            (
                "opt-out cookie",
                vec![("cookie", "beta=never")],
                "/",
                "GET",
                out,
                None,
                (STABLE, Some(1), Reason::Condition),
            ),
            (
                "other cookie value",
                vec![("cookie", "beta=maybe")],
                "/",
                "GET",
                out,
                None,
                (STABLE, None, Reason::Anonymous),
            ),
            (
                "opt-out beats a later app rule",
                vec![("cookie", "beta=never"), ("x-app-version", "5.0")],
                "/",
                "GET",
                out,
                None,
                (STABLE, Some(1), Reason::Condition),
            ),
            (
                "app version matches",
                vec![("x-app-version", "5.1.0")],
                "/",
                "POST",
                out,
                None,
                (CANARY, Some(2), Reason::Condition),
            ),
            (
                "app version does not match",
                vec![("x-app-version", "15.1")],
                "/",
                "POST",
                out,
                None,
                (STABLE, None, Reason::Anonymous),
            ),
            (
                "office GET",
                vec![],
                "/",
                "GET",
                "192.0.2.44",
                None,
                (CANARY, Some(3), Reason::Condition),
            ),
            (
                "office POST is not listed",
                vec![],
                "/",
                "POST",
                "192.0.2.44",
                None,
                (STABLE, None, Reason::Anonymous),
            ),
            (
                "GET outside the office",
                vec![],
                "/",
                "GET",
                out,
                None,
                (STABLE, None, Reason::Anonymous),
            ),
            (
                "eu user inside the share",
                vec![],
                "/?region=eu",
                "POST",
                out,
                Some(&inside),
                (CANARY, Some(4), Reason::Percent),
            ),
            (
                "eu user outside the share",
                vec![],
                "/?region=eu",
                "POST",
                out,
                Some(&outside),
                (STABLE, None, Reason::Default),
            ),
            (
                "user inside the share, not eu",
                vec![],
                "/?region=us",
                "POST",
                out,
                Some(&inside),
                (STABLE, None, Reason::Default),
            ),
            (
                "eu without a user",
                vec![],
                "/?region=eu",
                "POST",
                out,
                None,
                (STABLE, None, Reason::Anonymous),
            ),
        ];
        for (what, headers, target, method, client, user, expected) in cases {
            let got = decide_facts(&r, &headers, target, method, client, user);
            assert_eq!(got, expected, "{what}");
        }
    }

    /// The lane rule: a group named by a header is believed only from internal callers that
    /// send it; an unknown group name falls through.
    #[test]
    fn lane_rule_from_internal_callers() {
        let r = Router::new(vec!["stable".into(), "canary".into()], STABLE).with_rules(vec![
            Rule::header("lane", "x-canary-group").with_when(When::new(vec![
                test("header", "x-canary-group", ValueTest::Present(true)),
                Condition::Client(vec![Cidr::parse("10.0.0.0/8").expect("cidr")]),
            ])),
        ]);
        let lane = [("x-canary-group", "canary")];
        let unknown = [("x-canary-group", "v9")];
        let cases = [
            (
                "internal caller",
                &lane[..],
                "10.2.3.4",
                (CANARY, Some(0), Reason::Header),
            ),
            (
                "outside caller",
                &lane[..],
                "192.0.2.1",
                (STABLE, None, Reason::Anonymous),
            ),
            (
                "unknown group",
                &unknown[..],
                "10.2.3.4",
                (STABLE, None, Reason::Anonymous),
            ),
            (
                "no header",
                &[][..],
                "10.2.3.4",
                (STABLE, None, Reason::Anonymous),
            ),
        ];
        for (what, headers, client, expected) in cases {
            assert_eq!(
                decide_facts(&r, headers, "/", "GET", client, None),
                expected,
                "{what}"
            );
        }
    }

    /// The trace shows each rule's conditions with their results and which rules would take
    /// the request.
    #[test]
    fn trace_shows_each_condition() {
        let r = conditional_router();
        let facts = RequestFacts::new(&[("x-app-version", "5.3")][..])
            .with_method("POST")
            .with_client(Some("192.0.2.1".parse().expect("ip")));
        let trace = r.trace(&facts);
        assert_eq!(trace.len(), 5);
        assert_eq!(
            trace[0].conditions,
            vec![(r#"cookie beta equals "always""#.to_string(), false)]
        );
        assert_eq!(trace[0].takes, None);
        assert_eq!(trace[2].takes, Some(CANARY));
        assert_eq!(
            trace[3].conditions,
            vec![
                ("method in GET, HEAD".to_string(), false),
                ("client in 192.0.2.0/24".to_string(), true),
            ]
        );
        assert_eq!(trace[3].takes, None);
        assert_eq!(r.decide(&facts).rule, Some(RuleId(2)));
    }

    #[test]
    fn names_for_logs() {
        let r = router();
        let d = decide(&r, Some("canary_user=alice"), &[]);
        assert_eq!(r.group_name(d.group), "stable");
        assert_eq!(r.rule_name(&d), "vip");
        let d = decide(&r, None, &[]);
        assert_eq!(r.rule_name(&d), "default");
        assert_eq!(d.reason.as_str(), "anonymous");
    }
}
