//! Rules, from the file to the router: [`RuleSpec`], the one tagged model of a rule as written
//! (kind explicit), decided once from the YAML's keys; and its validation into a
//! [`routing::Rule`](crate::routing::Rule), with errors naming the key.
//!
//! The YAML has no kind key: a rule's kind is the key it sets (`header`, `users` /
//! `users_file` / `users_store`, `percent`). [`RuleSpec::from_file`] is the only place that
//! reads it from the keys; everything after matches on [`RuleKindSpec`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::parse::{check_token, header_name, parse_duration};
use super::spec::{FileOnFailure, FilePlan, FileRule};
use super::{
    key_error, Cidr, KeyError, OnFailure, PlanConfig, DEFAULT_PLAN_MAX_ERROR_RATE_INCREASE,
    DEFAULT_PLAN_MAX_P99_RATIO, DEFAULT_PLAN_MIN_REQUESTS,
};
use crate::routing::{GroupId, Percent, Rule, RuleKind, UserSet};

/// What validating routing blocks needs from the rest of the file.
pub(super) struct Context<'a> {
    pub(super) base: &'a Path,
    pub(super) group_names: &'a [String],
    pub(super) group_id: &'a dyn Fn(String, &str) -> Result<GroupId, KeyError>,
    /// Whether `gateway.store` is configured (for `users_store`).
    pub(super) has_store: bool,
}

/// One rule as the file (or the API) writes it: its name and its kind. Serialized back, it is
/// the same YAML shape the file uses (no kind key; only the keys that are set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FileRule", into = "FileRule")]
pub(crate) struct RuleSpec {
    pub(crate) name: String,
    pub(crate) kind: RuleKindSpec,
}

/// What a rule tests, as written: one variant per kind, with only the keys that kind takes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RuleKindSpec {
    /// `header: NAME`: a request header whose value names the group (QA override), optionally
    /// with `header_secret` (value `group:secret`) and `from` (client networks).
    Header {
        header: String,
        header_secret: Option<String>,
        from: Option<Vec<String>>,
    },
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

/// `key.field`, or `field` alone when there is no key (a rule read on its own).
fn sub(key: &str, field: &str) -> String {
    if key.is_empty() {
        field.to_string()
    } else {
        format!("{key}.{field}")
    }
}

impl RuleSpec {
    /// The rule the file's keys describe (`key` names it in errors): exactly one kind, and only
    /// keys that kind takes.
    pub(super) fn from_file(rule: &FileRule, key: &str) -> Result<RuleSpec, KeyError> {
        let whole = || {
            if key.is_empty() {
                format!("rule {:?}", rule.name)
            } else {
                key.to_string()
            }
        };
        let has_users =
            rule.users.is_some() || rule.users_file.is_some() || rule.users_store.is_some();
        let set: Vec<&str> = [
            (rule.header.is_some(), "header"),
            (has_users, "users"),
            (rule.percent.is_some(), "percent"),
        ]
        .into_iter()
        .filter_map(|(is_set, kind)| is_set.then_some(kind))
        .collect();
        let needs =
            "needs exactly one of `header`, `users`/`users_file`/`users_store` or `percent`";
        match set.as_slice() {
            [_] => {}
            [] => return Err(key_error(whole(), format!("rule {:?} {needs}", rule.name))),
            [first, rest @ ..] => {
                return Err(key_error(
                    whole(),
                    format!(
                        "rule {:?} sets both `{first}` and `{}`; a rule {needs}",
                        rule.name,
                        rest.join("` and `")
                    ),
                ))
            }
        }
        if rule.seed.is_some() && rule.percent.is_none() {
            return Err(key_error(
                sub(key, "seed"),
                "only percent rules take a seed".into(),
            ));
        }
        if rule.plan.is_some() && rule.percent.is_none() {
            return Err(key_error(
                sub(key, "plan"),
                "only a percent rule takes a plan".into(),
            ));
        }
        if rule.header.is_none() && (rule.header_secret.is_some() || rule.from.is_some()) {
            return Err(key_error(
                whole(),
                "`header_secret` and `from` only go with a `header` rule".into(),
            ));
        }
        let target = |what: &str| match &rule.group {
            Some(group) => Ok(group.clone()),
            None => Err(key_error(
                sub(key, "group"),
                format!("a {what} rule needs a target group"),
            )),
        };
        let kind = if let Some(header) = &rule.header {
            if rule.group.is_some() {
                return Err(key_error(
                    sub(key, "group"),
                    "a header rule takes its group from the header value; remove `group`".into(),
                ));
            }
            RuleKindSpec::Header {
                header: header.clone(),
                header_secret: rule.header_secret.clone(),
                from: rule.from.clone(),
            }
        } else if let Some(percent) = rule.percent {
            RuleKindSpec::Percent {
                group: target("percent")?,
                percent,
                seed: rule.seed.clone(),
                plan: rule.plan.clone(),
            }
        } else {
            RuleKindSpec::Users {
                group: target("users")?,
                users: rule.users.clone(),
                users_file: rule.users_file.clone(),
                users_store: rule.users_store.clone(),
            }
        };
        Ok(RuleSpec {
            name: rule.name.clone(),
            kind,
        })
    }
}

/// Reading a rule on its own (the API, a round trip): errors name the rule's keys.
impl TryFrom<FileRule> for RuleSpec {
    type Error = String;
    fn try_from(rule: FileRule) -> Result<Self, Self::Error> {
        RuleSpec::from_file(&rule, "").map_err(|e| e.to_string())
    }
}

/// Writing a rule back in the file's shape.
impl From<RuleSpec> for FileRule {
    fn from(spec: RuleSpec) -> FileRule {
        let mut rule = FileRule {
            name: spec.name,
            header: None,
            users: None,
            users_file: None,
            percent: None,
            seed: None,
            group: None,
            header_secret: None,
            from: None,
            users_store: None,
            plan: None,
        };
        match spec.kind {
            RuleKindSpec::Header {
                header,
                header_secret,
                from,
            } => {
                rule.header = Some(header);
                rule.header_secret = header_secret;
                rule.from = from;
            }
            RuleKindSpec::Users {
                group,
                users,
                users_file,
                users_store,
            } => {
                rule.group = Some(group);
                rule.users = users;
                rule.users_file = users_file;
                rule.users_store = users_store;
            }
            RuleKindSpec::Percent {
                group,
                percent,
                seed,
                plan,
            } => {
                rule.group = Some(group);
                rule.percent = Some(percent);
                rule.seed = seed;
                rule.plan = plan;
            }
        }
        rule
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
    let name = spec.name.clone();
    match &spec.kind {
        RuleKindSpec::Header {
            header,
            header_secret,
            from,
        } => {
            let header = header_name(header).map_err(|m| key_error(sub(key, "header"), m))?;
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
"#;

    /// Each rule's kind comes from the key it sets, with that kind's keys only.
    #[test]
    fn kind_comes_from_the_key() {
        let rules: Vec<RuleSpec> = serde_yaml::from_str(RULES).expect("rules");
        assert!(matches!(
            &rules[0].kind,
            RuleKindSpec::Header { header, header_secret: Some(_), from: Some(from) }
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
        for (yaml, needle) in cases {
            let error = serde_yaml::from_str::<Vec<RuleSpec>>(yaml)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(needle), "{yaml}: {error:?} lacks {needle:?}");
        }
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
