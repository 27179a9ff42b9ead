//! Rules, from the file to the router: [`RuleSpec`], the one tagged model of a rule as written
//! (kind explicit), decided once from the YAML's keys; and its validation into a
//! [`routing::Rule`](crate::routing::Rule), with errors naming the key.
//!
//! The YAML has no kind key: a rule's kind is the key it sets (`header` / `from_header`,
//! `users` / `users_file` / `users_store`, `percent`, or none of them: `when` + `group`, a
//! match rule). Any rule may carry `when:` ([`WhenSpec`], built by `build_when`). `RuleSpec`'s `Deserialize` reads a rule's map once
//! and decides its kind there (the only place that reads it from the keys); everything after
//! matches on [`RuleKindSpec`], and `Serialize` writes the same flat shape back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::parse::{check_token, decision_header_name, header_name, parse_duration};
use super::{
    key_error, Cidr, KeyError, OnFailure, PlanConfig, DEFAULT_PLAN_MAX_ERROR_RATE_INCREASE,
    DEFAULT_PLAN_MAX_P99_RATIO, DEFAULT_PLAN_MIN_REQUESTS,
};
use crate::routing::access::Access;
use crate::routing::{Condition, GroupId, Percent, Rule, RuleKind, UserSet, ValueTest, When};
use regex::bytes::RegexBuilder;

/// What validating routing blocks needs from the rest of the file.
pub(super) struct Context<'a> {
    pub(super) base: &'a Path,
    pub(super) group_names: &'a [String],
    pub(super) group_id: &'a dyn Fn(String, &str) -> Result<GroupId, KeyError>,
    /// Whether `gateway.store` is configured (for `users_store`).
    pub(super) has_store: bool,
    /// `gateway.access`, validated once: the policy of every route without its own.
    pub(super) default_access: Option<Arc<Access>>,
    /// `gateway.error_pages`, validated once, and `gateway.intercept_errors`.
    pub(super) default_pages: Option<Arc<super::ErrorPages>>,
    pub(super) default_intercept: bool,
    /// `gateway.trusted_proxies`: where an identity `header` is believed from by default.
    pub(super) trusted_proxies: &'a [crate::routing::Cidr],
}

/// One rule as the file (or the API) writes it: its name and its kind. Serialized back, it is
/// the same YAML shape the file uses (no kind key; only the keys that are set).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub name: String,
    /// The rule's conditions (`when:`), any kind.
    pub when: Option<WhenSpec>,
    pub kind: RuleKindSpec,
}

/// A rule's `when:` as written: every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<ValueSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<ValueSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<ValueSpec>,
    /// Client networks (CIDR), the address as resolved through `trusted_proxies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Vec<String>>,
    /// Methods, upper-case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Vec<String>>,
}

/// A named value's test: `name` and exactly one of `equals`, `matches`, `present`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// The most memory a `matches` pattern may compile to; a larger one is refused at load.
pub(crate) const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// What a rule tests, as written: one variant per kind, with only the keys that kind takes.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKindSpec {
    /// `header: NAME`: a request header whose value names the group (QA override), optionally
    /// with `header_secret` (value `group:secret`) and `from` (client networks).
    Header {
        header: String,
        header_secret: Option<String>,
        from: Option<Vec<String>>,
        /// Written as `from_header:` (the lane pattern's spelling) rather than `header:`.
        spelled_from_header: bool,
    },
    /// `when:` and `group:` only: every request that passes the conditions goes to `group`.
    Match { group: String },
    /// A user list to `group`: ids inline (`users`), from a file (`users_file`, read at load)
    /// and/or from a shared store set (`users_store`); at least one of them.
    Users {
        group: String,
        users: Option<Vec<String>>,
        users_file: Option<PathBuf>,
        users_store: Option<String>,
    },
    /// `percent` of users (bucketed with `seed`, default the rule's name) to `group`, with an
    /// optional rollout `plan`.
    Percent {
        group: String,
        percent: f64,
        seed: Option<String>,
        plan: Option<FilePlan>,
    },
}

/// A percentage as a person writes it: `5`, not `5.0`.
fn percent_number(percent: f64) -> serde_yaml::Value {
    if percent.fract() == 0.0 && (0.0..=1e15).contains(&percent) {
        serde_yaml::Value::from(percent as u64)
    } else {
        serde_yaml::Value::from(percent)
    }
}

fn write_steps<S: serde::Serializer>(steps: &[f64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(steps.iter().map(|&step| percent_number(step)))
}

/// A rollout plan on a percent rule (`gateway.routing.rules[i].plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePlan {
    #[serde(serialize_with = "write_steps")]
    pub steps: Vec<f64>,
    /// A duration: the least time at each step.
    pub hold: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// The group the canary is compared with.
    pub baseline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_increase: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_median_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FileOnFailure>,
}

/// What a plan does when a step's figures break a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOnFailure {
    Rollback,
    Pause,
}

/// `key.field`, or `field` alone when there is no key (a rule read on its own).
fn sub(key: &str, field: &str) -> String {
    if key.is_empty() {
        field.to_string()
    } else {
        format!("{key}.{field}")
    }
}

/// Every key a rule may set, in the order a rule is written back.
const RULE_KEYS: &[&str] = &[
    "name",
    "when",
    "header",
    "from_header",
    "users",
    "users_file",
    "percent",
    "seed",
    "group",
    "header_secret",
    "from",
    "users_store",
    "plan",
];

/// Where a [`RuleError`] that names one of the rule's keys puts it: the YAML reader prefixes
/// an error with the path of the map it read (`gateway.routing.rules[1]: `), and a kind is
/// only known once the whole map is read, so the key is written at the message's start and
/// [`join_rule_key`] joins it to the path (`gateway.routing.rules[1].plan: `).
const KEY_MARK: &str = ".";

/// Joins the rule key a [`RuleError`] names to the path the YAML reader wrote before it.
pub(super) fn join_rule_key(message: &str) -> String {
    message.replacen(&format!("]: {KEY_MARK}"), "].", 1)
}

/// Why the keys of a rule do not make one rule: about one key (`field`), or the whole rule.
#[derive(Debug)]
struct RuleError {
    field: Option<&'static str>,
    message: String,
}

impl RuleError {
    fn whole(message: String) -> RuleError {
        RuleError {
            field: None,
            message,
        }
    }

    fn key(field: &'static str, message: &str) -> RuleError {
        RuleError {
            field: Some(field),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{KEY_MARK}{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A rule's keys as read, before its kind is known.
#[derive(Default)]
struct RuleKeys {
    name: Option<String>,
    when: Option<WhenSpec>,
    header: Option<String>,
    from_header: Option<String>,
    users: Option<Vec<String>>,
    users_file: Option<PathBuf>,
    percent: Option<f64>,
    seed: Option<String>,
    group: Option<String>,
    header_secret: Option<String>,
    from: Option<Vec<String>>,
    users_store: Option<String>,
    plan: Option<FilePlan>,
}

impl RuleKeys {
    /// The rule these keys describe: exactly one kind, and only keys that kind takes. The one
    /// place a kind is read from the keys.
    fn into_spec(self, name: String) -> Result<RuleSpec, RuleError> {
        if self.header.is_some() && self.from_header.is_some() {
            return Err(RuleError::whole(format!(
                "rule {name:?} sets both `header` and `from_header`; they are one key (use one)"
            )));
        }
        let spelled_from_header = self.from_header.is_some();
        let header = self.header.or(self.from_header);
        let has_users =
            self.users.is_some() || self.users_file.is_some() || self.users_store.is_some();
        let set: Vec<&str> = [
            (header.is_some(), "header"),
            (has_users, "users"),
            (self.percent.is_some(), "percent"),
        ]
        .into_iter()
        .filter_map(|(is_set, kind)| is_set.then_some(kind))
        .collect();
        let needs = "needs exactly one of `header`, `users`/`users_file`/`users_store` or \
             `percent` (or only `when` and `group`)";
        match set.as_slice() {
            [_] => {}
            [] if self.when.is_some() => {}
            [] => return Err(RuleError::whole(format!("rule {name:?} {needs}"))),
            [first, rest @ ..] => {
                return Err(RuleError::whole(format!(
                    "rule {name:?} sets both `{first}` and `{}`; a rule {needs}",
                    rest.join("` and `")
                )))
            }
        }
        if self.seed.is_some() && self.percent.is_none() {
            return Err(RuleError::key("seed", "only percent rules take a seed"));
        }
        if self.plan.is_some() && self.percent.is_none() {
            return Err(RuleError::key("plan", "only a percent rule takes a plan"));
        }
        if header.is_none() && (self.header_secret.is_some() || self.from.is_some()) {
            return Err(RuleError::whole(
                "`header_secret` and `from` only go with a `header` rule".into(),
            ));
        }
        let group = self.group;
        let target = |what: &str| {
            group.clone().ok_or_else(|| {
                RuleError::key("group", &format!("a {what} rule needs a target group"))
            })
        };
        let kind = if let Some(header) = header {
            if group.is_some() {
                return Err(RuleError::key(
                    "group",
                    "a header rule takes its group from the header value; remove `group`",
                ));
            }
            RuleKindSpec::Header {
                header,
                header_secret: self.header_secret,
                from: self.from,
                spelled_from_header,
            }
        } else if let Some(percent) = self.percent {
            RuleKindSpec::Percent {
                group: target("percent")?,
                percent,
                seed: self.seed,
                plan: self.plan,
            }
        } else if has_users {
            RuleKindSpec::Users {
                group: target("users")?,
                users: self.users,
                users_file: self.users_file,
                users_store: self.users_store,
            }
        } else {
            RuleKindSpec::Match {
                group: target("match")?,
            }
        };
        Ok(RuleSpec {
            name,
            when: self.when,
            kind,
        })
    }
}

/// Reads a rule's map once, then decides its kind from the keys it set (`RuleKeys::into_spec`).
impl<'de> Deserialize<'de> for RuleSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RuleVisitor)
    }
}

struct RuleVisitor;

/// Reads the next value into `slot`, refusing a key written twice.
fn read<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    key: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = map.next_value::<Option<T>>()?;
    Ok(())
}

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = RuleSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rule: a map with `name` and the keys of one kind")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RuleSpec, A::Error> {
        let mut keys = RuleKeys::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => read(&mut keys.name, "name", &mut map)?,
                "when" => read(&mut keys.when, "when", &mut map)?,
                "header" => read(&mut keys.header, "header", &mut map)?,
                "from_header" => read(&mut keys.from_header, "from_header", &mut map)?,
                "users" => read(&mut keys.users, "users", &mut map)?,
                "users_file" => read(&mut keys.users_file, "users_file", &mut map)?,
                "percent" => read(&mut keys.percent, "percent", &mut map)?,
                "seed" => read(&mut keys.seed, "seed", &mut map)?,
                "group" => read(&mut keys.group, "group", &mut map)?,
                "header_secret" => read(&mut keys.header_secret, "header_secret", &mut map)?,
                "from" => read(&mut keys.from, "from", &mut map)?,
                "users_store" => read(&mut keys.users_store, "users_store", &mut map)?,
                "plan" => read(&mut keys.plan, "plan", &mut map)?,
                other => return Err(de::Error::unknown_field(other, RULE_KEYS)),
            }
        }
        let name = keys
            .name
            .take()
            .ok_or_else(|| de::Error::missing_field("name"))?;
        keys.into_spec(name).map_err(de::Error::custom)
    }
}

/// Writes a rule back in the file's shape: no kind key, only the keys that are set.
impl Serialize for RuleSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        fn some<M: SerializeMap, T: Serialize + ?Sized>(
            map: &mut M,
            key: &str,
            value: Option<&T>,
        ) -> Result<(), M::Error> {
            match value {
                Some(value) => map.serialize_entry(key, value),
                None => Ok(()),
            }
        }
        some(&mut map, "when", self.when.as_ref())?;
        match &self.kind {
            RuleKindSpec::Header {
                header,
                header_secret,
                from,
                spelled_from_header,
            } => {
                let key = if *spelled_from_header {
                    "from_header"
                } else {
                    "header"
                };
                map.serialize_entry(key, header)?;
                some(&mut map, "header_secret", header_secret.as_ref())?;
                some(&mut map, "from", from.as_ref())?;
            }
            RuleKindSpec::Users {
                group,
                users,
                users_file,
                users_store,
            } => {
                some(&mut map, "users", users.as_ref())?;
                some(&mut map, "users_file", users_file.as_ref())?;
                map.serialize_entry("group", group)?;
                some(&mut map, "users_store", users_store.as_ref())?;
            }
            RuleKindSpec::Percent {
                group,
                percent,
                seed,
                plan,
            } => {
                map.serialize_entry("percent", &percent_number(*percent))?;
                some(&mut map, "seed", seed.as_ref())?;
                map.serialize_entry("group", group)?;
                some(&mut map, "plan", plan.as_ref())?;
            }
            RuleKindSpec::Match { group } => map.serialize_entry("group", group)?,
        }
        map.end()
    }
}

/// What one rule becomes: the router's rule, and what the controller keeps beside it.
pub(super) struct BuiltRule {
    pub(super) rule: Rule,
    /// The store set of a store-backed users rule.
    pub(super) store_set: Option<String>,
    /// The rollout plan of a percent rule.
    pub(super) plan: Option<PlanConfig>,
}

/// Validates a rule's values (`key` names it in errors) into the router's rule.
pub(super) fn build_rule(
    spec: &RuleSpec,
    key: &str,
    cx: &Context<'_>,
) -> Result<BuiltRule, KeyError> {
    let mut built = build_kind(spec, key, cx)?;
    if let Some(when) = &spec.when {
        let when = build_when(when, &sub(key, "when"))?;
        built.rule = built.rule.with_when(when);
    }
    Ok(built)
}

/// Validates a `when:` (`key` names it) into the router's conditions, the cheap ones (method,
/// client) first; each pattern is compiled here, once, within [`REGEX_SIZE_LIMIT`].
pub(super) fn build_when(spec: &WhenSpec, key: &str) -> Result<When, KeyError> {
    let mut conditions = Vec::new();
    if let Some(methods) = &spec.method {
        let method_key = sub(key, "method");
        if methods.is_empty() {
            return Err(key_error(method_key, "needs at least one method".into()));
        }
        for (i, method) in methods.iter().enumerate() {
            check_token(method, "method")
                .map_err(|m| key_error(format!("{method_key}[{i}]"), m))?;
            if method.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(key_error(
                    format!("{method_key}[{i}]"),
                    format!("{method:?}: methods are compared exactly; write them upper-case"),
                ));
            }
        }
        conditions.push(Condition::Method(methods.clone()));
    }
    if let Some(networks) = &spec.client {
        let client_key = sub(key, "client");
        if networks.is_empty() {
            return Err(key_error(client_key, "needs at least one network".into()));
        }
        let nets = networks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Cidr::parse(c).map_err(|e| key_error(format!("{client_key}[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        conditions.push(Condition::Client(nets));
    }
    if let Some(value) = &spec.header {
        let header_key = sub(key, "header");
        let name = header_name(&value.name).map_err(|m| key_error(sub(&header_key, "name"), m))?;
        let test = value_test(value, &header_key)?;
        conditions.push(Condition::Header { name, test });
    }
    if let Some(value) = &spec.cookie {
        let cookie_key = sub(key, "cookie");
        check_token(&value.name, "cookie name")
            .map_err(|m| key_error(sub(&cookie_key, "name"), m))?;
        let test = value_test(value, &cookie_key)?;
        conditions.push(Condition::Cookie {
            name: value.name.clone(),
            test,
        });
    }
    if let Some(value) = &spec.query {
        let query_key = sub(key, "query");
        if value.name.is_empty() || value.name.contains(['&', '=', '#', '?']) {
            return Err(key_error(
                sub(&query_key, "name"),
                format!("{:?} is not a query parameter name", value.name),
            ));
        }
        let test = value_test(value, &query_key)?;
        conditions.push(Condition::Query {
            name: value.name.clone(),
            test,
        });
    }
    if conditions.is_empty() {
        return Err(key_error(
            key.into(),
            "needs at least one condition (`header`, `cookie`, `query`, `client` or `method`)"
                .into(),
        ));
    }
    Ok(When::new(conditions))
}

/// The test of a header, cookie or query condition: exactly one of `equals`, `matches`,
/// `present`; a pattern compiled now, within the size limit.
fn value_test(value: &ValueSpec, key: &str) -> Result<ValueTest, KeyError> {
    match (&value.equals, &value.matches, value.present) {
        (Some(equals), None, None) => Ok(ValueTest::Equals(equals.as_bytes().into())),
        (None, Some(pattern), None) => RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(ValueTest::Matches)
            .map_err(|e| {
                let why = match e {
                    regex::Error::CompiledTooBig(limit) => {
                        format!("{pattern:?} compiles to more than {limit} bytes; simplify it")
                    }
                    // The parser's message draws the pattern with a caret over lines; its
                    // last line says what is wrong, which fits a one-line error.
                    other => {
                        let text = other.to_string();
                        let what = text.lines().last().unwrap_or_default();
                        let what = what.trim().trim_start_matches("error: ");
                        format!("{pattern:?} is not a valid pattern: {what}")
                    }
                };
                key_error(sub(key, "matches"), why)
            }),
        (None, None, Some(present)) => Ok(ValueTest::Present(present)),
        _ => Err(key_error(
            key.into(),
            "needs exactly one of `equals`, `matches` or `present`".into(),
        )),
    }
}

/// Validates a rule's kind into the router's rule (its conditions are added by
/// [`build_rule`]).
fn build_kind(spec: &RuleSpec, key: &str, cx: &Context<'_>) -> Result<BuiltRule, KeyError> {
    let name = spec.name.clone();
    match &spec.kind {
        RuleKindSpec::Match { group } => {
            let group = (cx.group_id)(sub(key, "group"), group)?;
            Ok(BuiltRule {
                rule: Rule::new(name, RuleKind::Match { group }),
                store_set: None,
                plan: None,
            })
        }
        RuleKindSpec::Header {
            header,
            header_secret,
            from,
            ..
        } => {
            let header_key = if matches!(
                spec.kind,
                RuleKindSpec::Header {
                    spelled_from_header: true,
                    ..
                }
            ) {
                "from_header"
            } else {
                "header"
            };
            let header =
                decision_header_name(header).map_err(|m| key_error(sub(key, header_key), m))?;
            let secret = match header_secret {
                Some(s) if s.len() < 8 || s.contains(':') => {
                    return Err(key_error(
                        sub(key, "header_secret"),
                        "must be at least 8 characters without ':' (value not shown)".into(),
                    ))
                }
                other => other.as_ref().map(|s| s.as_bytes().into()),
            };
            let from = match from {
                Some(networks) if networks.is_empty() => {
                    return Err(key_error(
                        sub(key, "from"),
                        "needs at least one network".into(),
                    ))
                }
                networks => networks
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, c)| {
                        Cidr::parse(c)
                            .map_err(|e| key_error(format!("{key}.from[{i}]"), e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let kind = RuleKind::Header {
                header,
                secret,
                from,
            };
            Ok(BuiltRule {
                rule: Rule::new(name, kind),
                store_set: None,
                plan: None,
            })
        }
        RuleKindSpec::Users {
            group,
            users,
            users_file,
            users_store,
        } => {
            let group = (cx.group_id)(sub(key, "group"), group)?;
            let mut ids: Vec<u8> = Vec::new();
            for id in users.iter().flatten() {
                ids.extend_from_slice(id.trim().as_bytes());
                ids.push(b'\n');
            }
            if let Some(path) = users_file {
                let full = cx.base.join(path);
                let text = std::fs::read(&full).map_err(|e| {
                    key_error(
                        sub(key, "users_file"),
                        format!("cannot read {}: {e}", full.display()),
                    )
                })?;
                ids.extend_from_slice(&text);
            }
            if let Some(set) = users_store {
                let set_key = sub(key, "users_store");
                if !cx.has_store {
                    return Err(key_error(set_key, "needs a `gateway.store` section".into()));
                }
                check_token(set, "set name").map_err(|m| key_error(set_key, m))?;
            }
            let users = Arc::new(UserSet::from_lines(&ids));
            Ok(BuiltRule {
                rule: Rule::users(name, users, group),
                store_set: users_store.clone(),
                plan: None,
            })
        }
        RuleKindSpec::Percent {
            group,
            percent,
            seed,
            plan,
        } => {
            let share = Percent::new(*percent)
                .map_err(|e| key_error(sub(key, "percent"), e.to_string()))?;
            let group_id = (cx.group_id)(sub(key, "group"), group)?;
            let seed = seed.as_deref().unwrap_or(&spec.name);
            let plan = match plan {
                Some(plan) => Some(build_plan(plan, &sub(key, "plan"), group, cx)?),
                None => None,
            };
            Ok(BuiltRule {
                rule: Rule::percent(name, share, seed.as_bytes(), group_id),
                store_set: None,
                plan,
            })
        }
    }
}

/// A percent rule's rollout plan; `group` is the rule's (canary) group.
fn build_plan(
    plan: &FilePlan,
    key: &str,
    group: &str,
    cx: &Context<'_>,
) -> Result<PlanConfig, KeyError> {
    if plan.steps.is_empty() {
        return Err(key_error(
            format!("{key}.steps"),
            "needs at least one percentage".into(),
        ));
    }
    let mut steps: Vec<Percent> = Vec::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let step_key = format!("{key}.steps[{i}]");
        let percent =
            Percent::new(*step).map_err(|e| key_error(step_key.clone(), e.to_string()))?;
        match steps.last() {
            None if percent.ppm() == 0 => {
                return Err(key_error(step_key, "the first step must be above 0".into()))
            }
            Some(before) if before.ppm() >= percent.ppm() => {
                return Err(key_error(
                    step_key,
                    format!(
                        "{step} is not above the step before ({}); steps only increase",
                        before.as_f64()
                    ),
                ))
            }
            _ => steps.push(percent),
        }
    }
    let hold = parse_duration(&plan.hold).map_err(|m| key_error(format!("{key}.hold"), m))?;
    (cx.group_id)(format!("{key}.baseline"), &plan.baseline)?;
    if plan.baseline == group {
        return Err(key_error(
            format!("{key}.baseline"),
            format!("{group:?} is the rule's own group; compare it with another"),
        ));
    }
    let max_error_rate_increase = plan
        .max_error_rate_increase
        .unwrap_or(DEFAULT_PLAN_MAX_ERROR_RATE_INCREASE);
    if !(0.0..=1.0).contains(&max_error_rate_increase) {
        return Err(key_error(
            format!("{key}.max_error_rate_increase"),
            format!("{max_error_rate_increase} is not a share in 0..=1 (0.01 is one point)"),
        ));
    }
    let max_p99_ratio = plan.max_p99_ratio.unwrap_or(DEFAULT_PLAN_MAX_P99_RATIO);
    if !(max_p99_ratio.is_finite() && max_p99_ratio >= 1.0) {
        return Err(key_error(
            format!("{key}.max_p99_ratio"),
            format!("{max_p99_ratio} is not a ratio of at least 1"),
        ));
    }
    if let Some(ratio) = plan.max_median_ratio {
        if !(ratio.is_finite() && ratio >= 1.0) {
            return Err(key_error(
                format!("{key}.max_median_ratio"),
                format!("{ratio} is not a ratio of at least 1"),
            ));
        }
    }
    let min_requests = plan.min_requests.unwrap_or(DEFAULT_PLAN_MIN_REQUESTS);
    if min_requests == 0 {
        return Err(key_error(
            format!("{key}.min_requests"),
            "must be at least 1".into(),
        ));
    }
    Ok(PlanConfig {
        steps,
        hold,
        min_requests,
        group: group.to_string(),
        baseline: plan.baseline.clone(),
        max_error_rate_increase,
        max_p99_ratio,
        max_median_ratio: plan.max_median_ratio,
        on_failure: match plan.on_failure {
            None | Some(FileOnFailure::Rollback) => OnFailure::Rollback,
            Some(FileOnFailure::Pause) => OnFailure::Pause,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
- name: qa
  header: X-Canary-Group
  header_secret: s3cret-value
  from: ["10.0.0.0/8", "192.0.2.1"]
- name: vip
  users: ["alice", "bob"]
  users_file: vip-users.txt
  users_store: vip
  group: stable
- name: rollout
  percent: 12.5
  seed: release-7
  group: canary
  plan:
    steps: [1, 10, 50]
    hold: 5m
    min_requests: 20
    baseline: stable
    max_error_rate_increase: 0.02
    max_p99_ratio: 2.0
    on_failure: pause
- name: plain
  percent: 0
  group: canary
- name: app-v5
  when:
    header: { name: x-app-version, matches: "^5\\." }
    cookie: { name: beta, equals: always }
    query: { name: region, present: true }
    client: ["10.0.0.0/8"]
    method: [GET]
  group: canary
- name: lane
  when: { header: { name: x-canary-group, present: true } }
  from_header: x-canary-group
  from: ["10.0.0.0/8"]
- name: eu
  when: { query: { name: region, equals: eu } }
  percent: 10
  group: canary
"#;

    /// Each rule's kind comes from the key it sets, with that kind's keys only.
    #[test]
    fn kind_comes_from_the_key() {
        let rules: Vec<RuleSpec> = serde_yaml::from_str(RULES).expect("rules");
        assert!(matches!(
            &rules[0].kind,
            RuleKindSpec::Header { header, header_secret: Some(_), from: Some(from), .. }
                if header == "X-Canary-Group" && from.len() == 2
        ));
        assert!(matches!(
            &rules[1].kind,
            RuleKindSpec::Users { group, users: Some(_), users_file: Some(_), users_store: Some(_) }
                if group == "stable"
        ));
        assert!(matches!(
            &rules[2].kind,
            RuleKindSpec::Percent { percent, seed: Some(_), plan: Some(_), .. } if *percent == 12.5
        ));
    }

    /// A rule of only `when` and `group` is a match rule; `from_header` is the header kind;
    /// `when` goes with any kind.
    #[test]
    fn when_and_match_rules() {
        let rules: Vec<RuleSpec> = serde_yaml::from_str(RULES).expect("rules");
        assert!(matches!(&rules[4].kind, RuleKindSpec::Match { group } if group == "canary"));
        let when = rules[4].when.as_ref().expect("when");
        assert_eq!(when.method.as_deref(), Some(&["GET".to_string()][..]));
        assert!(matches!(
            &rules[5].kind,
            RuleKindSpec::Header { header, spelled_from_header: true, from: Some(_), .. }
                if header == "x-canary-group"
        ));
        assert!(matches!(&rules[6].kind, RuleKindSpec::Percent { .. }));
        assert!(rules[6].when.is_some());
        assert!(rules[0].when.is_none());
    }

    /// YAML → rules → YAML gives the same YAML (only the keys that were set), and reading it
    /// again gives the same rules.
    #[test]
    fn rules_round_trip_in_the_file_shape() {
        let rules: Vec<RuleSpec> = serde_yaml::from_str(RULES).expect("rules");
        let written = serde_yaml::to_string(&rules).expect("written");
        let original: serde_yaml::Value = serde_yaml::from_str(RULES).expect("yaml");
        let rewritten: serde_yaml::Value = serde_yaml::from_str(&written).expect("yaml");
        assert_eq!(rewritten, original, "{written}");
        let again: Vec<RuleSpec> = serde_yaml::from_str(&written).expect("read back");
        assert_eq!(again, rules);
    }

    /// The rules of every shipped configuration read and write back unchanged.
    #[test]
    fn shipped_rules_round_trip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("conf/") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            let root: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
            let gateway = &root["gateway"];
            let mut blocks = vec![gateway["routing"]["rules"].clone()];
            if let Some(routes) = gateway["routes"].as_sequence() {
                blocks.extend(routes.iter().map(|r| r["routing"]["rules"].clone()));
            }
            for block in blocks.into_iter().filter(|b| !b.is_null()) {
                let rules: Vec<RuleSpec> =
                    serde_yaml::from_value(block.clone()).expect("rules read");
                let written = serde_yaml::to_value(&rules).expect("rules written");
                assert_eq!(written, block, "{}", path.display());
                seen += rules.len();
            }
        }
        assert!(seen > 0, "the shipped configurations have rules");
    }

    /// Each case's rules (YAML) are refused with an error that contains its text.
    fn assert_refused(cases: &[(&str, &str)]) {
        for (yaml, needle) in cases {
            let error = serde_yaml::from_str::<Vec<RuleSpec>>(yaml)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(needle), "{yaml}: {error:?} lacks {needle:?}");
        }
    }

    /// A rule with two kinds' keys is refused, naming the rule and both keys.
    #[test]
    fn ambiguous_rules_name_both_keys() {
        let cases = [
            (
                "- name: x\n  percent: 5\n  users: [a]\n  group: g",
                "sets both `users` and `percent`",
            ),
            (
                "- name: x\n  header: h\n  percent: 5",
                "sets both `header` and `percent`",
            ),
            ("- name: x\n  group: g", "needs exactly one of"),
            (
                "- name: x\n  users: [a]\n  group: g\n  seed: s",
                "seed: only percent rules take a seed",
            ),
            (
                "- name: x\n  header: h\n  group: g",
                "group: a header rule takes its group",
            ),
            (
                "- name: x\n  users: [a]",
                "group: a users rule needs a target group",
            ),
        ];
        assert_refused(&cases);
    }

    /// The hand-written reader refuses what the derived one refused: an unknown key, a key
    /// written twice, a rule without a name, `from` without `header`.
    #[test]
    fn stray_keys_are_refused() {
        let cases = [
            (
                "- name: x\n  percnt: 5\n  group: g",
                "unknown field `percnt`",
            ),
            (
                "- name: x\n  percent: 5\n  percent: 6\n  group: g",
                "duplicate field `percent`",
            ),
            ("- percent: 5\n  group: g", "missing field `name`"),
            (
                "- name: x\n  users: [a]\n  group: g\n  from: [10.0.0.0/8]",
                "only go with a `header` rule",
            ),
        ];
        assert_refused(&cases);
    }

    /// A file with `rules` (YAML, indented for `gateway.routes[0].routing.rules`), loaded: its
    /// error, or "" when it loads.
    fn load_rules(rules: &str) -> String {
        let text = format!(
            "gateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    stable: {{ servers: [\"127.0.0.1:2\"] }}\n    canary: {{ servers: [\"127.0.0.1:3\"] }}\n  routes:\n    - name: web\n      routing:\n        default: stable\n        rules:\n{rules}"
        );
        super::super::load_str(&text, "t.yaml", std::path::Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    /// Each bad `when` is refused at load with its key named; good ones load.
    #[test]
    fn when_errors_name_the_key() {
        let ok = "          - { name: ok, when: { method: [GET] }, group: canary }\n";
        let cases = [
            (
                "          - { name: bad, when: { header: { name: x-v, matches: \"(unclosed\" } }, group: canary }\n",
                "t.yaml: gateway.routes[0].routing.rules[1].when.header.matches: \"(unclosed\" is not a valid pattern",
            ),
            (
                "          - { name: big, when: { header: { name: x-v, matches: \"\\\\w{1000}\\\\w{1000}\" } }, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when.header.matches: \"\\\\w{1000}\\\\w{1000}\" compiles to more than",
            ),
            (
                "          - { name: two, when: { cookie: { name: beta, equals: a, present: true } }, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when.cookie: needs exactly one of `equals`, `matches` or `present`",
            ),
            (
                "          - { name: none, when: { query: { name: q } }, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when.query: needs exactly one of",
            ),
            (
                "          - { name: hname, when: { header: { name: \"x v\", present: true } }, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when.header.name: ",
            ),
            (
                "          - { name: cidr, when: { client: [10.0.0.0/8, nope] }, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when.client[1]: ",
            ),
            (
                "          - { name: noclient, when: { client: [] }, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when.client: needs at least one network",
            ),
            (
                "          - { name: lower, when: { method: [get] }, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when.method[0]: \"get\": methods are compared exactly",
            ),
            (
                "          - { name: empty, when: {}, group: canary }\n",
                "gateway.routes[0].routing.rules[1].when: needs at least one condition",
            ),
            (
                "          - { name: nogroup, when: { method: [GET] } }\n",
                "gateway.routes[0].routing.rules[1].group: a match rule needs a target group",
            ),
            (
                "          - { name: ghost, when: { method: [GET] }, group: nope }\n",
                "gateway.routes[0].routing.rules[1].group: ",
            ),
            (
                "          - { name: typo, when: { heder: { name: x, present: true } }, group: canary }\n",
                "unknown field `heder`",
            ),
            (
                "          - { name: both, header: x-a, from_header: x-b }\n",
                "sets both `header` and `from_header`",
            ),
            (
                "          - { name: badlane, from_header: \"x y\" }\n",
                "gateway.routes[0].routing.rules[1].from_header: ",
            ),
            (
                "          - { name: eats-cookies, header: Cookie }\n",
                "gateway.routes[0].routing.rules[1].header: \"cookie\" carries the request itself",
            ),
        ];
        assert_eq!(load_rules(ok), "", "a good when loads");
        for (rule, needle) in cases {
            let error = load_rules(&format!("{ok}{rule}"));
            assert!(error.contains(needle), "{rule}: {error:?} lacks {needle:?}");
        }
    }

    /// `upstream_header`: on by default, another name, or off; a bad name is a keyed error.
    #[test]
    fn upstream_header_setting() {
        let load = |extra: &str| {
            let text = format!(
                "gateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    stable: {{ servers: [\"127.0.0.1:2\"] }}\n  routing:\n    default: stable\n{extra}"
            );
            super::super::load_str(&text, "t.yaml", std::path::Path::new("."))
                .map(|c| {
                    c.gateway.routes[0]
                        .upstream_header
                        .as_ref()
                        .map(|h| h.to_string())
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(load(""), Ok(Some("x-canary-group".into())));
        assert_eq!(
            load("    upstream_header: true\n"),
            Ok(Some("x-canary-group".into()))
        );
        assert_eq!(
            load("    upstream_header: X-Served\n"),
            Ok(Some("x-served".into()))
        );
        assert_eq!(load("    upstream_header: false\n"), Ok(None));
        let bad = load("    upstream_header: \"x served\"\n").expect_err("refused");
        assert!(bad.contains("gateway.routing.upstream_header: "), "{bad}");
        let bad = load("    upstream_header: Host\n").expect_err("refused");
        assert!(
            bad.contains("gateway.routing.upstream_header: \"host\" carries the request"),
            "{bad}"
        );
    }

    /// In a file, the kind errors name the rule's key.
    #[test]
    fn kind_errors_name_the_key() {
        let text = "gateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    stable: { servers: [\"127.0.0.1:2\"] }\n    canary: { servers: [\"127.0.0.1:3\"] }\n  routing:\n    default: stable\n    rules:\n      - name: ok\n        percent: 1\n        group: canary\n      - name: both\n        percent: 5\n        users: [a]\n        group: canary\n";
        let error = super::super::load_str(text, "t.yaml", std::path::Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with(
                "t.yaml: gateway.routing.rules[1]: rule \"both\" sets both `users` and `percent`"
            ),
            "{error}"
        );
    }
}
