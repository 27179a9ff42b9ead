//! Conditions on a rule (`when:`): what a request must show for the rule to apply — a header,
//! cookie or query parameter that equals a value, matches a pattern or is present (or absent),
//! the client's network, the method. Built and compiled once at load; every check reads
//! borrowed facts, so a condition allocates nothing per request.

use regex::bytes::Regex;

use super::facts::{HeaderLookup, RequestFacts};
use super::Cidr;

/// What a named value (a header, cookie or query parameter) must be.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// Present with exactly this value (bytes, case included).
    Equals(Box<[u8]>),
    /// Present, and the pattern (compiled once, linear time) finds a match in the value.
    Matches(Regex),
    /// Present (`true`) or absent (`false`), whatever the value.
    Present(bool),
}

impl ValueTest {
    /// Whether a value (`None`: absent) passes.
    #[inline]
    fn holds(&self, value: Option<&[u8]>) -> bool {
        match self {
            ValueTest::Equals(want) => value.is_some_and(|v| v == &want[..]),
            ValueTest::Matches(pattern) => value.is_some_and(|v| pattern.is_match(v)),
            ValueTest::Present(want) => value.is_some() == *want,
        }
    }

    fn describe(&self) -> String {
        match self {
            ValueTest::Equals(want) => format!("equals {:?}", String::from_utf8_lossy(want)),
            ValueTest::Matches(pattern) => format!("matches {:?}", pattern.as_str()),
            ValueTest::Present(true) => "present".into(),
            ValueTest::Present(false) => "absent".into(),
        }
    }
}

/// One condition of a rule's `when:`.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Header `name` (lower-case), its first value.
    Header { name: String, test: ValueTest },
    /// Cookie `name`, across every `Cookie` header.
    Cookie { name: String, test: ValueTest },
    /// Query parameter `name`, its first raw (not percent-decoded) value.
    Query { name: String, test: ValueTest },
    /// The client's address (after trusted proxies) is in one of these networks; an unknown
    /// address is in none.
    Client(Vec<Cidr>),
    /// The method is one of these (exact, upper-case as sent).
    Method(Vec<String>),
}

impl Condition {
    /// Whether the request's facts satisfy this condition.
    #[inline]
    pub(crate) fn holds<H: HeaderLookup + ?Sized>(&self, facts: &RequestFacts<'_, H>) -> bool {
        match self {
            Condition::Header { name, test } => test.holds(facts.header(name)),
            Condition::Cookie { name, test } => test.holds(facts.cookie(name.as_bytes())),
            Condition::Query { name, test } => test.holds(facts.query(name.as_bytes())),
            Condition::Client(networks) => facts
                .client_ip()
                .is_some_and(|ip| networks.iter().any(|net| net.contains(ip))),
            Condition::Method(methods) => facts
                .method()
                .is_some_and(|m| methods.iter().any(|want| want == m)),
        }
    }

    /// The condition as one line, for explain and `/status`: `header x-app-version matches "^5\."`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Condition::Header { name, test } => format!("header {name} {}", test.describe()),
            Condition::Cookie { name, test } => format!("cookie {name} {}", test.describe()),
            Condition::Query { name, test } => format!("query {name} {}", test.describe()),
            Condition::Client(networks) => {
                let nets: Vec<String> = networks.iter().map(|n| n.to_string()).collect();
                format!("client in {}", nets.join(", "))
            }
            Condition::Method(methods) => format!("method in {}", methods.join(", ")),
        }
    }
}

/// A rule's `when:`: every condition must hold. Kept in the order they are checked (the
/// cheap ones — method, client — first).
#[derive(Debug, Clone)]
pub struct When {
    conditions: Box<[Condition]>,
}

impl When {
    /// Conditions checked in the order given (the config layer puts the cheap ones first).
    pub fn new(conditions: Vec<Condition>) -> When {
        When {
            conditions: conditions.into_boxed_slice(),
        }
    }

    /// Whether every condition holds (stops at the first that fails).
    #[inline]
    pub(crate) fn holds<H: HeaderLookup + ?Sized>(&self, facts: &RequestFacts<'_, H>) -> bool {
        self.conditions.iter().all(|c| c.holds(facts))
    }

    /// The conditions, in the order they are checked.
    pub(crate) fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn re(pattern: &str) -> ValueTest {
        ValueTest::Matches(Regex::new(pattern).expect("test pattern"))
    }

    /// Each condition kind and test against one request: (what, condition, holds).
    #[test]
    fn each_condition_kind() {
        let headers = [
            ("x-app-version", "5.2.1"),
            ("cookie", "beta=always; theme=dark"),
            ("x-empty", ""),
        ];
        let client: IpAddr = "192.0.2.9".parse().expect("ip");
        let facts = RequestFacts::new(&headers[..])
            .with_target(b"/shop?region=eu&flag")
            .with_client(Some(client))
            .with_method("GET");
        let net = |s: &str| Cidr::parse(s).expect("cidr");
        let header = |name: &str, test| Condition::Header {
            name: name.into(),
            test,
        };
        let cookie = |name: &str, test| Condition::Cookie {
            name: name.into(),
            test,
        };
        let query = |name: &str, test| Condition::Query {
            name: name.into(),
            test,
        };
        let eq = |v: &str| ValueTest::Equals(v.as_bytes().into());
        let cases = [
            ("header equals", header("x-app-version", eq("5.2.1")), true),
            (
                "header equals is exact",
                header("x-app-version", eq("5.2")),
                false,
            ),
            ("header matches", header("x-app-version", re(r"^5\.")), true),
            (
                "header does not match",
                header("x-app-version", re(r"^4\.")),
                false,
            ),
            (
                "absent header never matches",
                header("x-none", re(".*")),
                false,
            ),
            (
                "absent header never equals",
                header("x-none", eq("")),
                false,
            ),
            ("empty header equals empty", header("x-empty", eq("")), true),
            (
                "header present",
                header("x-empty", ValueTest::Present(true)),
                true,
            ),
            (
                "header absent",
                header("x-none", ValueTest::Present(false)),
                true,
            ),
            (
                "present header is not absent",
                header("x-app-version", ValueTest::Present(false)),
                false,
            ),
            ("cookie equals", cookie("beta", eq("always")), true),
            ("cookie differs", cookie("beta", eq("never")), false),
            ("cookie matches", cookie("theme", re("^d")), true),
            (
                "cookie absent",
                cookie("beta2", ValueTest::Present(false)),
                true,
            ),
            ("query equals", query("region", eq("eu")), true),
            ("query differs", query("region", eq("us")), false),
            (
                "query flag present",
                query("flag", ValueTest::Present(true)),
                true,
            ),
            (
                "query absent",
                query("nope", ValueTest::Present(true)),
                false,
            ),
            (
                "client inside",
                Condition::Client(vec![net("192.0.2.0/24")]),
                true,
            ),
            (
                "client in a later network",
                Condition::Client(vec![net("10.0.0.0/8"), net("192.0.2.9")]),
                true,
            ),
            (
                "client outside",
                Condition::Client(vec![net("10.0.0.0/8")]),
                false,
            ),
            (
                "method listed",
                Condition::Method(vec!["HEAD".into(), "GET".into()]),
                true,
            ),
            (
                "method not listed",
                Condition::Method(vec!["POST".into()]),
                false,
            ),
        ];
        for (what, condition, holds) in cases {
            assert_eq!(condition.holds(&facts), holds, "{what}");
        }
    }

    /// Without a known client address or method, client and method conditions fail.
    #[test]
    fn unknown_client_and_method_fail() {
        let none: [(&str, &str); 0] = [];
        let facts = RequestFacts::new(&none[..]);
        let all = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(!Condition::Client(vec![all]).holds(&facts));
        assert!(!Condition::Method(vec!["GET".into()]).holds(&facts));
    }

    /// Every condition of a `when` must hold; none (an empty `when`) always holds.
    #[test]
    fn all_conditions_must_hold() {
        let headers = [("x-lane", "canary")];
        let client: IpAddr = "10.1.2.3".parse().expect("ip");
        let inside = RequestFacts::new(&headers[..]).with_client(Some(client));
        let outside =
            RequestFacts::new(&headers[..]).with_client(Some("192.0.2.1".parse().expect("ip")));
        let when = When::new(vec![
            Condition::Header {
                name: "x-lane".into(),
                test: ValueTest::Present(true),
            },
            Condition::Client(vec![Cidr::parse("10.0.0.0/8").expect("cidr")]),
        ]);
        assert!(when.holds(&inside));
        assert!(!when.holds(&outside));
        assert!(When::new(Vec::new()).holds(&outside));
    }

    /// Conditions describe themselves in one line each.
    #[test]
    fn descriptions() {
        let cases = [
            (
                Condition::Header {
                    name: "x-v".into(),
                    test: re(r"^5\."),
                },
                r#"header x-v matches "^5\\.""#,
            ),
            (
                Condition::Cookie {
                    name: "beta".into(),
                    test: ValueTest::Equals(b"always"[..].into()),
                },
                r#"cookie beta equals "always""#,
            ),
            (
                Condition::Query {
                    name: "q".into(),
                    test: ValueTest::Present(false),
                },
                "query q absent",
            ),
            (
                Condition::Client(vec![Cidr::parse("10.0.0.0/8").expect("cidr")]),
                "client in 10.0.0.0/8",
            ),
            (
                Condition::Method(vec!["GET".into(), "HEAD".into()]),
                "method in GET, HEAD",
            ),
        ];
        for (condition, text) in cases {
            assert_eq!(condition.describe(), text);
        }
    }
}
