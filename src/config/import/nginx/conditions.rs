//! nginx value tests → rule conditions (`when:`): what `$http_X`, `$cookie_X`, `$arg_X` and
//! `$request_method` become, and whether an nginx (PCRE) pattern is one the gateway's regex
//! engine takes.

use regex::bytes::RegexBuilder;

use crate::config::rules::{ValueSpec, WhenSpec, REGEX_SIZE_LIMIT};

/// A test of one value, as a map entry or an `if` writes it.
pub enum Test {
    /// The value is exactly this text (case included).
    Equals(String),
    /// The pattern finds a match in the value.
    Matches(String),
    /// The value is there.
    Present,
}

impl Test {
    /// A map's exact entry: nginx compares map strings ignoring ASCII letter case, so text
    /// with letters becomes an anchored case-insensitive pattern.
    pub fn map_exact(key: &str) -> Test {
        if key.bytes().any(|b| b.is_ascii_alphabetic()) {
            Test::Matches(format!("(?i)^{}$", regex::escape(key)))
        } else {
            Test::Equals(key.to_string())
        }
    }

    /// A regex as nginx writes it after `~` (case-sensitive) or `~*` (case-insensitive).
    pub fn regex(pattern: &str, case_insensitive: bool) -> Test {
        if case_insensitive {
            Test::Matches(format!("(?i){pattern}"))
        } else {
            Test::Matches(pattern.to_string())
        }
    }
}

/// The condition testing nginx variable `var` (without `$`), and a name for its rule
/// (`header-x-canary`); an error saying why when the variable or the test has no counterpart.
pub fn when_on(var: &str, test: &Test) -> Result<(String, WhenSpec), String> {
    if var == "request_method" {
        return match test {
            Test::Equals(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Ok((
                format!("method-{}", m.to_ascii_lowercase()),
                WhenSpec {
                    method: Some(vec![m.clone()]),
                    ..WhenSpec::default()
                },
            )),
            _ => Err("only `$request_method = METHOD` (upper case) has a counterpart".into()),
        };
    }
    let (kind, name) = if let Some(h) = var.strip_prefix("http_") {
        ("header", h.replace('_', "-").to_ascii_lowercase())
    } else if let Some(c) = var.strip_prefix("cookie_") {
        ("cookie", c.to_string())
    } else if let Some(q) = var.strip_prefix("arg_") {
        ("query", q.to_string())
    } else {
        return Err(format!(
            "${var}: conditions test a header ($http_…), a cookie ($cookie_…), a query parameter ($arg_…) or the method"
        ));
    };
    let mut value = ValueSpec {
        name: name.clone(),
        equals: None,
        matches: None,
        present: None,
    };
    match test {
        // nginx's empty value is also an absent one: no single condition says both.
        Test::Equals(v) if v.is_empty() => {
            return Err("a test for the empty value (absent or empty): no single condition".into())
        }
        Test::Equals(v) => value.equals = Some(v.clone()),
        Test::Matches(p) => {
            check_pattern(p)?;
            value.matches = Some(p.clone());
        }
        Test::Present => value.present = Some(true),
    }
    let mut when = WhenSpec::default();
    match kind {
        "header" => when.header = Some(value),
        "cookie" => when.cookie = Some(value),
        _ => when.query = Some(value),
    }
    Ok((format!("{kind}-{name}"), when))
}

/// Whether the gateway's regex engine takes `pattern` as validation will (PCRE's lookarounds
/// and backreferences, say, it does not).
fn check_pattern(pattern: &str) -> Result<(), String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let first = e.to_string();
            let first = first.lines().last().unwrap_or_default().trim().to_string();
            format!("the pattern {pattern:?} is not one the gateway's regex engine takes ({first})")
        })
}

/// What a condition says, for the report: `header x-canary matches "^a"`.
pub fn describe(when: &WhenSpec) -> String {
    let value = |kind: &str, v: &ValueSpec| {
        let test = match (&v.equals, &v.matches, v.present) {
            (Some(e), ..) => format!("is {e:?}"),
            (_, Some(m), _) => format!("matches {m:?}"),
            _ => "is present".into(),
        };
        format!("{kind} `{}` {test}", v.name)
    };
    if let Some(v) = &when.header {
        value("header", v)
    } else if let Some(v) = &when.cookie {
        value("cookie", v)
    } else if let Some(v) = &when.query {
        value("query parameter", v)
    } else if let Some(m) = &when.method {
        format!("the method is {}", m.join(", "))
    } else {
        "always".into()
    }
}
