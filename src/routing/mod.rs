//! The per-user canary decision: cookie parsing, rule evaluation and stable hashing.
//!
//! Pure and synchronous: no Pingora types, no I/O, no locks, no logging. The proxy collects the
//! request's facts (the Cookie header values and a way to read other headers), calls
//! [`Router::decide`] once per request and keeps the [`Decision`] in its per-request context.
//! The lowest layer: it imports nothing else from the crate.

pub mod cidr;
pub mod names;
pub mod routes;
pub mod signed;
pub mod userset;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub use cidr::Cidr;
use signed::{constant_time_eq, verify_signed};
pub use userset::UserSet;

/// Longest user id the gateway accepts from the cookie; a longer value makes the user anonymous.
pub const MAX_USER_ID_LEN: usize = 256;

/// Parts-per-million scale of percentage rules: `percent: 0.5` is 5_000 ppm.
pub const PERCENT_SCALE_PPM: u32 = 1_000_000;

/// A share of users, validated once (0–100, decimals allowed) and kept in parts per million.
/// The YAML, the admin API and the state file all go through [`Percent::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Deserialize)]
#[serde(try_from = "f64")]
pub struct Percent(u32);

/// The routing layer's one error: a value that is not what a rule needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoutingError {
    /// A percentage outside 0..=100 (or not a number).
    #[error("{0} is not in 0..=100")]
    PercentOutOfRange(f64),
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

impl Percent {
    /// Validates `percent` (0–100), rounding to the nearest part per million.
    pub fn new(percent: f64) -> Result<Percent, RoutingError> {
        if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
            return Err(RoutingError::PercentOutOfRange(percent));
        }
        Ok(Percent((percent * 10_000.0).round() as u32))
    }

    /// The share in parts per million (`0..=1_000_000`).
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The share as a percentage, as the file and the API write it.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) * 100.0 / f64::from(PERCENT_SCALE_PPM)
    }

    /// Whether a user in `bucket` (see [`percent_bucket`]) is inside this share.
    pub fn includes(self, bucket: u32) -> bool {
        bucket < self.0
    }
}

impl TryFrom<f64> for Percent {
    type Error = RoutingError;
    fn try_from(percent: f64) -> Result<Self, Self::Error> {
        Percent::new(percent)
    }
}

/// Index of an upstream group in the gateway's group list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub usize);

/// Index of a rule in the router's ordered rule list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

/// Why a request went where it went. Shown in logs, the decision header and the explain endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A header rule named the group.
    Header,
    /// The user id is on a rule's user list.
    UserList,
    /// The user id hashed into a percentage rule's share.
    Percent,
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
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Header => "header",
            Reason::UserList => "user_list",
            Reason::Percent => "percent",
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
    pub rule: Option<RuleId>,
    pub reason: Reason,
}

/// What a rule tests.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A request header whose value is a group name picks that group; other values are ignored.
    /// With `secret`, the value must be `group:secret`; with `from`, the client address must be
    /// in one of the networks.
    Header {
        name: String,
        secret: Option<Box<[u8]>>,
        from: Vec<Cidr>,
    },
    /// Users on the list go to the rule's group.
    Users { users: Arc<UserSet> },
    /// Users whose stable bucket is inside `share` go to the rule's group.
    Percent { share: Percent, seed: Box<[u8]> },
}

/// One routing rule, already validated.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: Matcher,
    /// Target group; unused by header rules, whose target comes from the header value.
    pub group: GroupId,
}

/// Read access to the request's headers and client address, so the router needs no HTTP
/// library types.
pub trait HeaderLookup {
    /// The first value of header `name` (lower-case), if present.
    fn header(&self, name: &str) -> Option<&[u8]>;

    /// The client's address as the gateway sees it (after trusted proxies).
    fn client_ip(&self) -> Option<IpAddr> {
        None
    }
}

/// A header list for tests and the explain endpoint.
impl HeaderLookup for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

/// Whether the rules run, or an operator override sends everyone to one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The rules decide (normal operation).
    #[default]
    Rules,
    /// Kill switch: every request to the default group, all rules off.
    Rollback,
    /// Every request to this group, all rules off.
    Promote(GroupId),
}

/// The ordered rule set and everything `decide` needs.
#[derive(Debug, Clone)]
pub struct Router {
    /// Group names, indexed by [`GroupId`].
    pub group_names: Vec<String>,
    /// Name of the cookie that carries the user id.
    pub cookie: String,
    pub default_group: GroupId,
    pub rules: Vec<Rule>,
    pub mode: Mode,
    /// When not empty, the user cookie must be signed (`<id>.<tag>`) with one of these keys.
    pub signing_keys: Vec<Box<[u8]>>,
}

impl Router {
    /// Decide the group for a request with user id `user` (from [`Router::user_from_cookies`]).
    /// Rules run in order; the first that matches decides. An operator override (`mode`)
    /// comes before every rule.
    pub fn decide<H: HeaderLookup + ?Sized>(&self, user: Option<&[u8]>, headers: &H) -> Decision {
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
            let matched = match &rule.matcher {
                Matcher::Header { name, secret, from } => headers
                    .header(name)
                    .filter(|_| {
                        from.is_empty()
                            || headers
                                .client_ip()
                                .is_some_and(|ip| from.iter().any(|net| net.contains(ip)))
                    })
                    .and_then(|value| header_group(trim_ows(value), secret.as_deref()))
                    .and_then(|group| self.group_by_name(group))
                    .map(|group| (group, Reason::Header)),
                Matcher::Users { users } => user
                    .filter(|id| users.contains(id))
                    .map(|_| (rule.group, Reason::UserList)),
                Matcher::Percent { share, seed } => user
                    .filter(|id| share.includes(percent_bucket(seed, id)))
                    .map(|_| (rule.group, Reason::Percent)),
            };
            if let Some((group, reason)) = matched {
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
            reason: if user.is_some() {
                Reason::Default
            } else {
                Reason::Anonymous
            },
        }
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
    pub fn user_from_cookies_checked<'a, I>(
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
    pub fn group_by_name(&self, name: &[u8]) -> Option<GroupId> {
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
            .map(|rule| rule.name.as_str())
            .unwrap_or("default")
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

/// Finds cookie `name` in one or more `Cookie` header values (RFC 6265 §5.4 joins several header
/// lines with "; ", so they are read in order as one list). The first occurrence wins. Pairs
/// without `=` are skipped; surrounding spaces and one pair of double quotes are removed.
pub fn find_cookie<'a, I>(cookie_headers: I, name: &[u8]) -> Option<&'a [u8]>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    cookie_headers
        .into_iter()
        .find_map(|header| find_cookie_in(header, name))
}

/// Header values longer than this are searched for the name with `memmem` first.
const LONG_COOKIE_HEADER: usize = 256;

fn find_cookie_in<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if header.len() > LONG_COOKIE_HEADER && !name.is_empty() {
        // Jump between occurrences of the name; an occurrence counts when it starts a pair
        // (start of the header or after `;`, OWS allowed) and `=` follows (OWS allowed).
        for at in memchr::memmem::find_iter(header, name) {
            let before = &header[..at];
            let starts_pair = match before.iter().rposition(|&b| b != b' ' && b != b'\t') {
                None => true,
                Some(i) => before[i] == b';',
            };
            if starts_pair {
                if let Some(value) = pair_value(&header[at + name.len()..]) {
                    return Some(value);
                }
            }
        }
        return None;
    }
    let mut rest = header;
    loop {
        let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
        let pair = trim_start_ows(&rest[..end]);
        if let Some(value) = pair.strip_prefix(name).and_then(pair_value) {
            return Some(value);
        }
        if end == rest.len() {
            return None;
        }
        rest = &rest[end + 1..];
    }
}

/// Given the bytes right after a cookie name, the value when `=` follows (OWS allowed): up to
/// the next `;`, trimmed, without one pair of surrounding double quotes.
fn pair_value(after_name: &[u8]) -> Option<&[u8]> {
    let [b'=', value @ ..] = trim_start_ows(after_name) else {
        return None;
    };
    let end = memchr::memchr(b';', value).unwrap_or(value.len());
    Some(match trim_ows(&value[..end]) {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    })
}

fn trim_start_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// A usable user id: 1..=[`MAX_USER_ID_LEN`] bytes, all RFC 6265 `cookie-octet`s.
pub fn is_valid_user_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_ID_LEN && id.iter().all(|&b| is_cookie_octet(b))
}

/// RFC 9110 `tchar`, the bytes of a token (header names, methods, cookie names, options).
/// `const`, so the head guard's byte table is built from it at compile time.
pub const fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// RFC 6265 §4.1.1 `cookie-octet`: visible ASCII except DQUOTE, comma, semicolon and backslash.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Strips optional white space (SP / HTAB) at both ends.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a over the concatenation of `parts`.
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for &b in *part {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

/// A user's bucket for a percentage rule, in `0..1_000_000`:
/// `FNV-1a-64(seed ++ ":" ++ user_id) mod 1_000_000`. A user is in a rule of `p` percent when
/// the bucket is below `p × 10_000`, so raising `p` only ever adds users. Fixed and documented
/// so that every node, every restart and the application's own code agree.
pub fn percent_bucket(seed: &[u8], user_id: &[u8]) -> u32 {
    // The modulus is below 2^32, so the remainder always fits.
    (fnv1a64(&[seed, b":", user_id]) % u64::from(PERCENT_SCALE_PPM)) as u32
}

/// Converts a percentage (0–100, decimals allowed) to parts per million, rounding to the nearest.
pub fn percent_to_ppm(percent: f64) -> Option<u32> {
    Percent::new(percent).ok().map(Percent::ppm)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STABLE: GroupId = GroupId(0);
    const CANARY: GroupId = GroupId(1);
    const BETA: GroupId = GroupId(2);

    fn users(ids: &[&str]) -> Arc<UserSet> {
        Arc::new(UserSet::from_ids(ids.iter().map(|s| s.as_bytes())))
    }

    fn percent_rule(name: &str, percent: f64, seed: &str, group: GroupId) -> Rule {
        Rule {
            name: name.into(),
            matcher: Matcher::Percent {
                share: Percent::new(percent).expect("test percent in range"),
                seed: seed.as_bytes().into(),
            },
            group,
        }
    }

    /// QA header, then a VIP list to stable, then a 10% rollout to canary; default stable.
    fn router() -> Router {
        Router {
            group_names: vec!["stable".into(), "canary".into(), "beta".into()],
            cookie: "canary_user".into(),
            default_group: STABLE,
            rules: vec![
                Rule {
                    name: "qa-override".into(),
                    matcher: Matcher::Header {
                        name: "x-canary-group".into(),
                        secret: None,
                        from: Vec::new(),
                    },
                    group: STABLE,
                },
                Rule {
                    name: "vip".into(),
                    matcher: Matcher::Users {
                        users: users(&["alice", "bob"]),
                    },
                    group: STABLE,
                },
                Rule {
                    name: "testers".into(),
                    matcher: Matcher::Users {
                        users: users(&["tess"]),
                    },
                    group: BETA,
                },
                percent_rule("rollout", 10.0, "2026-11-release", CANARY),
            ],
            mode: Mode::Rules,
            signing_keys: Vec::new(),
        }
    }

    fn decide(router: &Router, cookie: Option<&str>, headers: &[(&str, &str)]) -> Decision {
        let user = router.user_from_cookies(cookie.map(str::as_bytes));
        router.decide(user, headers)
    }

    /// A user id that falls inside (`inside = true`) or outside a percentage rule.
    fn find_user(seed: &str, percent: f64, inside: bool) -> String {
        let ppm = percent_to_ppm(percent).expect("test percent in range");
        (0..100_000)
            .map(|i| format!("user-{i}"))
            .find(|u| (percent_bucket(seed.as_bytes(), u.as_bytes()) < ppm) == inside)
            .expect("some user in 100k lands on each side")
    }

    /// (what, cookie header, other headers, expected group, expected rule index, reason)
    type DecisionCase<'a> = (
        &'a str,
        Option<String>,
        Vec<(&'a str, &'a str)>,
        GroupId,
        Option<usize>,
        Reason,
    );

    #[test]
    fn table_of_decisions() {
        let r = router();
        let in_rollout = find_user("2026-11-release", 10.0, true);
        let out_rollout = find_user("2026-11-release", 10.0, false);
        let cases: Vec<DecisionCase> = vec![
            (
                "no cookie goes to default as anonymous",
                None,
                vec![],
                STABLE,
                None,
                Reason::Anonymous,
            ),
            (
                "VIP user list",
                Some("canary_user=alice".into()),
                vec![],
                STABLE,
                Some(1),
                Reason::UserList,
            ),
            (
                "second list to its own group",
                Some("canary_user=tess".into()),
                vec![],
                BETA,
                Some(2),
                Reason::UserList,
            ),
            (
                "user inside the rollout",
                Some(format!("canary_user={in_rollout}")),
                vec![],
                CANARY,
                Some(3),
                Reason::Percent,
            ),
            (
                "user outside every rule",
                Some(format!("canary_user={out_rollout}")),
                vec![],
                STABLE,
                None,
                Reason::Default,
            ),
            (
                "QA header beats the VIP list",
                Some("canary_user=alice".into()),
                vec![("x-canary-group", "canary")],
                CANARY,
                Some(0),
                Reason::Header,
            ),
            (
                "QA header works without a cookie",
                None,
                vec![("x-canary-group", "beta")],
                BETA,
                Some(0),
                Reason::Header,
            ),
            (
                "QA header value naming no group is ignored",
                Some("canary_user=alice".into()),
                vec![("x-canary-group", "nope")],
                STABLE,
                Some(1),
                Reason::UserList,
            ),
            (
                "QA header value is trimmed",
                None,
                vec![("x-canary-group", " canary ")],
                CANARY,
                Some(0),
                Reason::Header,
            ),
            (
                "group names are case-sensitive",
                None,
                vec![("x-canary-group", "Canary")],
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
            assert_eq!(
                d,
                Decision {
                    group,
                    rule: rule.map(RuleId),
                    reason
                },
                "{what}"
            );
        }
    }

    /// Long headers take the memmem path; it must agree with the pair-by-pair path.
    #[test]
    fn long_and_short_paths_agree() {
        let filler: String = (0..40).map(|i| format!("c{i}=v{i}; ")).collect();
        let cases = [
            ("canary_user=alice", Some("alice")),
            ("x=canary_user=bob; canary_user=carol", Some("carol")),
            ("canary_user_x=1; canary_user =dave", Some("dave")),
            ("canary_user; canary_user=\"eve\"", Some("eve")),
            ("notcanary_user=1", None),
            ("canary_user=first; canary_user=second", Some("first")),
            ("", None),
        ];
        for (tail, expected) in cases {
            let short = find_cookie([tail.as_bytes()], b"canary_user");
            let long_header = format!("{filler}{tail}");
            assert!(long_header.len() > LONG_COOKIE_HEADER);
            let long = find_cookie([long_header.as_bytes()], b"canary_user");
            assert_eq!(short, expected.map(str::as_bytes), "short: {tail}");
            assert_eq!(long, expected.map(str::as_bytes), "long: {tail}");
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

    #[test]
    fn percent_edges_zero_hundred_and_half() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let share = |percent: f64| {
            let ppm = percent_to_ppm(percent).expect("in range");
            ids.iter()
                .filter(|u| percent_bucket(b"seed", u.as_bytes()) < ppm)
                .count()
        };
        assert_eq!(share(0.0), 0, "0% takes nobody");
        assert_eq!(share(100.0), ids.len(), "100% takes everybody");
        let half = share(0.5);
        assert!(
            (60..=140).contains(&half),
            "0.5% of 20k is ~100, got {half}"
        );
        let ten = share(10.0);
        assert!(
            (1_800..=2_200).contains(&ten),
            "10% of 20k within 9–11%, got {ten}"
        );
    }

    /// The same user gets the same bucket every time, and the hash is the documented one.
    #[test]
    fn percent_bucket_is_stable_and_documented() {
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(
            percent_bucket(b"seed", b"alice"),
            (fnv1a64(&[b"seed:alice"]) % 1_000_000) as u32
        );
        let first = percent_bucket(b"2026-11-release", b"user-42");
        for _ in 0..10 {
            assert_eq!(percent_bucket(b"2026-11-release", b"user-42"), first);
        }
    }

    /// Raising the percentage only adds users: everyone inside 10% is inside 20%.
    #[test]
    fn ramp_is_monotonic() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let inside = |percent: f64| -> Vec<&String> {
            let ppm = percent_to_ppm(percent).expect("in range");
            ids.iter()
                .filter(|u| percent_bucket(b"ramp", u.as_bytes()) < ppm)
                .collect()
        };
        let ten = inside(10.0);
        let twenty = inside(20.0);
        assert!(twenty.len() > ten.len());
        for u in ten {
            assert!(twenty.contains(&u), "{u} left the rollout when it grew");
        }
    }

    #[test]
    fn different_seeds_pick_different_users() {
        let ppm = percent_to_ppm(10.0).expect("in range");
        let pick = |seed: &[u8]| -> Vec<usize> {
            (0..20_000)
                .filter(|i| percent_bucket(seed, format!("u{i}").as_bytes()) < ppm)
                .collect()
        };
        let a = pick(b"release-a");
        let b = pick(b"release-b");
        let common = a.iter().filter(|i| b.binary_search(i).is_ok()).count();
        // Independent 10% samples share ~1% of users; the same seed would share all 10%.
        assert!(
            common < a.len() / 4,
            "seeds overlap too much: {common} of {}",
            a.len()
        );
    }

    #[test]
    fn percent_to_ppm_bounds() {
        assert_eq!(percent_to_ppm(0.0), Some(0));
        assert_eq!(percent_to_ppm(0.5), Some(5_000));
        assert_eq!(percent_to_ppm(100.0), Some(1_000_000));
        assert_eq!(percent_to_ppm(100.1), None);
        assert_eq!(percent_to_ppm(-1.0), None);
        assert_eq!(percent_to_ppm(f64::NAN), None);
    }

    struct FromIp<'a>(&'a [(&'a str, &'a str)], &'a str);

    impl HeaderLookup for FromIp<'_> {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.0.header(name)
        }
        fn client_ip(&self) -> Option<IpAddr> {
            self.1.parse().ok()
        }
    }

    /// A QA header with a secret needs `group:secret`; with `from`, a client in the networks.
    #[test]
    fn restricted_qa_header() {
        let mut r = router();
        r.rules[0].matcher = Matcher::Header {
            name: "x-canary-group".into(),
            secret: Some(b"s3cret"[..].into()),
            from: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
        };
        let cases = [
            ("canary:s3cret", "10.1.2.3", CANARY, Reason::Header),
            ("canary", "10.1.2.3", STABLE, Reason::Anonymous),
            ("canary:wrong", "10.1.2.3", STABLE, Reason::Anonymous),
            ("canary:s3cret", "192.0.2.1", STABLE, Reason::Anonymous),
            ("canary:s3cretx", "10.1.2.3", STABLE, Reason::Anonymous),
        ];
        for (value, ip, group, reason) in cases {
            let headers = [("x-canary-group", value)];
            let d = r.decide(None, &FromIp(&headers, ip));
            assert_eq!((d.group, d.reason), (group, reason), "{value} from {ip}");
        }
        // No client address known: a `from` rule does not match.
        let d = r.decide(None, &[("x-canary-group", "canary:s3cret")][..]);
        assert_eq!(d.reason, Reason::Anonymous);
    }

    /// With signing keys, only `<id>.<tag>` values with a valid tag identify a user.
    #[test]
    fn signed_cookies() {
        let mut r = router();
        r.signing_keys = vec![b"new"[..].into(), b"old"[..].into()];
        let good = signed::signed_cookie_value(b"old", "alice");
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
        let d = r.decide(r.user_from_cookies([&b"canary_user=alice"[..]]), &[][..]);
        assert_eq!(d.reason, Reason::Anonymous, "an unsigned VIP is anonymous");
    }

    /// Rollback and promote override every rule, the QA header included.
    #[test]
    fn operator_modes_override_all_rules() {
        let mut r = router();
        let qa = [("x-canary-group", "canary")];
        r.mode = Mode::Rollback;
        for cookie in [None, Some("canary_user=tess"), Some("canary_user=alice")] {
            let d = decide(&r, cookie, &qa);
            assert_eq!(
                (d.group, d.rule, d.reason),
                (STABLE, None, Reason::Rollback)
            );
        }
        r.mode = Mode::Promote(CANARY);
        for cookie in [None, Some("canary_user=tess"), Some("canary_user=alice")] {
            let d = decide(&r, cookie, &[]);
            assert_eq!((d.group, d.rule, d.reason), (CANARY, None, Reason::Promote));
        }
        r.mode = Mode::Rules;
        assert_eq!(decide(&r, Some("canary_user=tess"), &[]).group, BETA);
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
