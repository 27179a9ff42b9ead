//! Validation of `gateway.routing`: the cookie's signing keys and each rule.

use std::path::Path;
use std::sync::Arc;

use super::file::{FileKeys, FileRouting, FileRule};
use super::parse::header_name;
use super::{key_error, Cidr, KeyError, MIN_SIGNING_KEY_LEN};
use crate::routing::{GroupId, Matcher, Percent, Rule, UserSet};

pub(super) fn signing_keys(routing: &FileRouting) -> Result<Vec<Box<[u8]>>, KeyError> {
    let (key, keys): (&str, Vec<String>) = match (&routing.signing_key, &routing.signing_key_env) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some(_)) => {
            return Err(key_error(
                "gateway.routing".into(),
                "set either `signing_key` or `signing_key_env`, not both".into(),
            ))
        }
        (Some(FileKeys::One(k)), None) => ("gateway.routing.signing_key", vec![k.clone()]),
        (Some(FileKeys::Several(ks)), None) => ("gateway.routing.signing_key", ks.clone()),
        (None, Some(var)) => {
            let value = std::env::var(var).map_err(|_| {
                key_error(
                    "gateway.routing.signing_key_env".to_string(),
                    format!("environment variable {var} is not set"),
                )
            })?;
            (
                "gateway.routing.signing_key_env",
                value.split(',').map(|k| k.trim().to_string()).collect(),
            )
        }
    };
    if keys.is_empty() {
        return Err(key_error(key.into(), "needs at least one key".into()));
    }
    if keys.iter().any(|k| k.len() < MIN_SIGNING_KEY_LEN) {
        return Err(key_error(
            key.into(),
            format!("every key must be at least {MIN_SIGNING_KEY_LEN} bytes (value not shown)"),
        ));
    }
    Ok(keys.into_iter().map(|k| k.into_bytes().into()).collect())
}

pub(super) fn validate_rule(
    rule: &FileRule,
    key: &str,
    base: &Path,
    group_id: &dyn Fn(String, &str) -> Result<GroupId, KeyError>,
) -> Result<Rule, KeyError> {
    let has_users = rule.users.is_some() || rule.users_file.is_some() || rule.users_store.is_some();
    let kinds = [rule.header.is_some(), has_users, rule.percent.is_some()]
        .iter()
        .filter(|&&k| k)
        .count();
    if kinds != 1 {
        return Err(key_error(
            key.to_string(),
            format!(
                "rule {:?} needs exactly one of `header`, `users`/`users_file`/`users_store` or `percent`",
                rule.name
            ),
        ));
    }
    if rule.seed.is_some() && rule.percent.is_none() {
        return Err(key_error(
            format!("{key}.seed"),
            "only percent rules take a seed".into(),
        ));
    }
    let target = |what: &str| -> Result<GroupId, KeyError> {
        match &rule.group {
            Some(name) => group_id(format!("{key}.group"), name),
            None => Err(key_error(
                format!("{key}.group"),
                format!("a {what} rule needs a target group"),
            )),
        }
    };

    if rule.header.is_none() && (rule.header_secret.is_some() || rule.from.is_some()) {
        return Err(key_error(
            key.to_string(),
            "`header_secret` and `from` only go with a `header` rule".into(),
        ));
    }
    if let Some(header) = &rule.header {
        if rule.group.is_some() {
            return Err(key_error(
                format!("{key}.group"),
                "a header rule takes its group from the header value; remove `group`".into(),
            ));
        }
        let name = header_name(header).map_err(|m| key_error(format!("{key}.header"), m))?;
        let secret = match &rule.header_secret {
            Some(s) if s.len() < 8 || s.contains(':') => {
                return Err(key_error(
                    format!("{key}.header_secret"),
                    "must be at least 8 characters without ':' (value not shown)".into(),
                ))
            }
            other => other.as_ref().map(|s| s.as_bytes().into()),
        };
        let from = rule
            .from
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| {
                Cidr::parse(c).map_err(|e| key_error(format!("{key}.from[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if rule.from.as_ref().is_some_and(|f| f.is_empty()) {
            return Err(key_error(
                format!("{key}.from"),
                "needs at least one network".into(),
            ));
        }
        return Ok(Rule {
            name: rule.name.clone(),
            matcher: Matcher::Header { name, secret, from },
            group: GroupId(0),
        });
    }

    if has_users {
        let group = target("users")?;
        let mut ids: Vec<u8> = Vec::new();
        for id in rule.users.iter().flatten() {
            ids.extend_from_slice(id.trim().as_bytes());
            ids.push(b'\n');
        }
        if let Some(path) = &rule.users_file {
            let full = base.join(path);
            let text = std::fs::read(&full).map_err(|e| {
                key_error(
                    format!("{key}.users_file"),
                    format!("cannot read {}: {e}", full.display()),
                )
            })?;
            ids.extend_from_slice(&text);
        }
        return Ok(Rule {
            name: rule.name.clone(),
            matcher: Matcher::Users {
                users: Arc::new(UserSet::from_lines(&ids)),
            },
            group,
        });
    }

    let share = Percent::new(rule.percent.unwrap_or_default())
        .map_err(|e| key_error(format!("{key}.percent"), e.to_string()))?;
    let group = target("percent")?;
    let seed = rule.seed.as_deref().unwrap_or(&rule.name);
    Ok(Rule {
        name: rule.name.clone(),
        matcher: Matcher::Percent {
            share,
            seed: seed.as_bytes().into(),
        },
        group,
    })
}
