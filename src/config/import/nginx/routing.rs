//! The canary idioms → a route's routing block: `proxy_pass http://NAME` (the default group),
//! `map $cookie_NAME $var { … }` (user lists), `split_clients "${cookie_NAME}" $var { … }`
//! (percent rules), and `if ($http_NAME) { proxy_pass http://$http_NAME; }` (the QA header
//! rule); `set $var` + `if` choosing the variable `proxy_pass` names.

use std::collections::{HashMap, HashSet};

use super::report::{Report, Verdict};
use super::syntax::Directive;
use crate::config::spec::{RoutingSpec, RuleKindSpec, RuleSpec};

/// The `map`s and `split_clients` of the `http` level, by the variable they set.
#[derive(Default)]
pub struct Variables<'a> {
    pub maps: HashMap<String, &'a Directive>,
    pub splits: HashMap<String, &'a Directive>,
    /// The variables whose block has been reported (a block is reported where first used).
    pub reported: HashSet<String>,
}

/// A routing block under construction.
struct Block {
    cookie: Option<String>,
    default: Option<String>,
    rules: Vec<RuleSpec>,
}

impl Block {
    fn use_cookie(&mut self, name: &str) -> Result<(), String> {
        match &self.cookie {
            Some(c) if c != name => Err(format!(
                "a second user cookie ({name}, beside {c}): a route has one"
            )),
            _ => {
                self.cookie = Some(name.to_string());
                Ok(())
            }
        }
    }

    fn push(&mut self, name: &str, kind: RuleKindSpec) {
        let mut unique = name.to_string();
        let mut n = 2;
        while self.rules.iter().any(|r| r.name == unique) {
            unique = format!("{name}-{n}");
            n += 1;
        }
        self.rules.push(RuleSpec {
            name: unique,
            when: None,
            kind,
        });
    }
}

/// What names a group: an upstream's name, or a variable.
pub enum Target {
    Group(String),
    Variable(String),
}

/// Resolves a group name (`proxy_pass http://NAME`'s NAME) to the gateway's group.
pub type GroupOf<'f> = dyn Fn(&str) -> Option<String> + 'f;

/// The variable `$name` / `${name}` alone, or `None`.
pub fn variable(text: &str) -> Option<&str> {
    let v = text.strip_prefix('$')?;
    let v = v
        .strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or(v);
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(v)
}

/// One `if` inside a location: its condition and the group it chooses (by `proxy_pass` or by
/// setting the variable `proxy_pass` names).
struct Choice<'d> {
    d: &'d Directive,
    cond: Vec<String>,
    target: Option<Target>,
}

/// The routing block of a location whose `proxy_pass` names `target`, with the location's
/// `if` blocks and `set`s (`sets`: the variable's literal value, if any).
pub fn routing_block(
    target: Target,
    ifs: &[&Directive],
    sets: &HashMap<String, String>,
    vars: &mut Variables,
    group_of: &GroupOf,
    proxy_url_of: &dyn Fn(&Directive) -> Option<Target>,
    report: &mut Report,
) -> Result<RoutingSpec, String> {
    let mut block = Block {
        cookie: None,
        default: None,
        rules: Vec::new(),
    };
    let pvar = match &target {
        Target::Variable(v) => Some(v.clone()),
        Target::Group(_) => None,
    };
    // The `if`s: nginx applies every one whose condition holds, the last one winning, so
    // they become rules in reverse order (the first rule that matches decides).
    let mut choices = Vec::new();
    for d in ifs {
        let text = d.args.join(" ");
        let inner = text
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        let cond: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
        let mut chosen = None;
        for inner in d.children() {
            match inner.name.as_str() {
                "proxy_pass" => chosen = proxy_url_of(inner),
                "set" if pvar.as_deref() == variable(inner.arg(0)) => {
                    chosen = Some(match variable(inner.arg(1)) {
                        Some(v) => Target::Variable(v.to_string()),
                        None => Target::Group(inner.arg(1).to_string()),
                    })
                }
                _ => {}
            }
        }
        choices.push(Choice {
            d,
            cond,
            target: chosen,
        });
    }
    for c in choices.iter().rev() {
        if_rule(c, &mut block, group_of, report);
    }
    // The default and the variable's own rules.
    match target {
        Target::Group(g) => block.default = Some(g),
        Target::Variable(v) => variable_rules(&v, sets, &mut block, vars, group_of, report)?,
    }
    let default = block
        .default
        .ok_or_else(|| "no group is chosen when no rule applies".to_string())?;
    Ok(RoutingSpec {
        cookie: Some(
            block
                .cookie
                .unwrap_or_else(|| crate::routing::DEFAULT_COOKIE.into()),
        ),
        identity: None,
        default,
        rules: block.rules,
        signing_key: None,
        signing_key_env: None,
        upstream_header: None,
    })
}

fn if_rule(c: &Choice, block: &mut Block, group_of: &GroupOf, report: &mut Report) {
    let d = c.d;
    let no = |why: &str, report: &mut Report| {
        report.add(d, Verdict::NotTranslated, true, why.to_string())
    };
    let cond: Vec<&str> = c.cond.iter().map(String::as_str).collect();
    match (cond.as_slice(), &c.target) {
        (_, None) => no("it chooses no group (only `proxy_pass` or `set` of proxy_pass's variable are read)", report),
        ([var], Some(Target::Variable(v))) if variable(var).is_some_and(|h| h == v && h.starts_with("http_")) => {
            let header = v["http_".len()..].replace('_', "-");
            block.push(&format!("header-{header}"), RuleKindSpec::Header { header: header.clone(), header_secret: None, from: None, spelled_from_header: false });
            report.add(d, Verdict::Translated, true, format!("a header rule: `{header}` names the group"));
        }
        ([var, "=", value], Some(Target::Group(g))) => {
            let Some(group) = group_of(g) else {
                return no("names no upstream", report);
            };
            match variable(var) {
                Some(h) if h.starts_with("http_") && g == value => {
                    let header = h["http_".len()..].replace('_', "-");
                    block.push(&format!("header-{header}"), RuleKindSpec::Header { header: header.clone(), header_secret: None, from: None, spelled_from_header: false });
                    report.add(d, Verdict::Approximated, true, format!("a header rule on `{header}`: it also honours the names of the other groups, not only {value}"));
                }
                Some(cookie) if cookie.starts_with("cookie_") => {
                    let name = &cookie["cookie_".len()..];
                    if let Err(e) = block.use_cookie(name) {
                        return no(&e, report);
                    }
                    block.push(&format!("users-{group}"), RuleKindSpec::Users { group, users: Some(vec![value.to_string()]), users_file: None, users_store: None });
                    report.add(d, Verdict::Translated, true, format!("a users rule: user {value} of cookie {name}"));
                }
                _ => no("tests a value: needs a rule condition (`when:`), which the gateway does not have yet", report),
            }
        }
        _ => no("this condition has no counterpart (a presence test or a regex would need a rule condition, `when:`)", report),
    }
}

fn variable_rules(
    v: &str,
    sets: &HashMap<String, String>,
    block: &mut Block,
    vars: &mut Variables,
    group_of: &GroupOf,
    report: &mut Report,
) -> Result<(), String> {
    if let Some(value) = sets.get(v) {
        return match variable(value) {
            Some(inner) => variable_rules(inner, sets, block, vars, group_of, report),
            None => {
                block.default =
                    Some(group_of(value).ok_or_else(|| format!("${v} is {value:?}, no upstream"))?);
                Ok(())
            }
        };
    }
    if let Some(map) = vars.maps.get(v).copied() {
        return map_rules(v, map, sets, block, vars, group_of, report);
    }
    if let Some(split) = vars.splits.get(v).copied() {
        return split_rules(v, split, block, vars, group_of, report);
    }
    Err(format!(
        "${v} is set by nothing the importer reads (a map, split_clients or set)"
    ))
}

fn map_rules(
    v: &str,
    map: &Directive,
    sets: &HashMap<String, String>,
    block: &mut Block,
    vars: &mut Variables,
    group_of: &GroupOf,
    report: &mut Report,
) -> Result<(), String> {
    let first = vars.reported.insert(v.to_string());
    let mut rep = Report::default();
    let source = variable(map.arg(0)).unwrap_or("");
    let Some(cookie) = source.strip_prefix("cookie_") else {
        rep.add(
            map,
            Verdict::NotTranslated,
            true,
            "maps something other than a cookie: needs a rule condition (`when:`)",
        );
        if first {
            report.entries.extend(rep.entries);
        }
        return Err(format!("map on {} has no counterpart", map.arg(0)));
    };
    block.use_cookie(cookie)?;
    let mut default: Option<String> = None;
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    let mut default_variable = None;
    for e in map.children() {
        let value = e.arg(0);
        match e.name.as_str() {
            "default" => {
                if let Some(inner) = variable(value) {
                    default_variable = Some(inner.to_string());
                    rep.add(e, Verdict::Translated, true, format!("the rules of ${inner} after the user lists"));
                } else if let Some(g) = group_of(value) {
                    default = Some(g);
                    rep.add(e, Verdict::Translated, true, "routing.default");
                } else {
                    rep.add(e, Verdict::NotTranslated, true, "names no upstream");
                }
            }
            "hostnames" | "volatile" => rep.add(e, Verdict::NotTranslated, false, "no counterpart"),
            key if key.starts_with('~') => rep.add(e, Verdict::NotTranslated, true, "a regex match on the user id needs a rule condition (`when: { cookie: …, matches: … }`), which the gateway does not have yet"),
            key => match group_of(value) {
                Some(g) => {
                    let key = key.strip_prefix('\\').unwrap_or(key).to_string();
                    match lists.iter_mut().find(|(group, _)| *group == g) {
                        Some((_, users)) => users.push(key),
                        None => lists.push((g.clone(), vec![key])),
                    }
                    rep.add(e, Verdict::Translated, true, format!("a user of the `users-{g}` rule"));
                }
                None => rep.add(e, Verdict::NotTranslated, true, "names no upstream"),
            },
        }
    }
    for (g, users) in lists {
        // Users mapped to the default group need no rule, unless rules follow them.
        if default_variable.is_none() && default.as_deref() == Some(g.as_str()) {
            continue;
        }
        block.push(
            &format!("users-{g}"),
            RuleKindSpec::Users {
                group: g,
                users: Some(users),
                users_file: None,
                users_store: None,
            },
        );
    }
    rep.add(
        map,
        Verdict::Translated,
        true,
        format!("cookie `{cookie}` is the user id; each listed user a `users` rule"),
    );
    if first {
        report.entries.extend(rep.entries);
    }
    match default_variable {
        Some(inner) => variable_rules(&inner, sets, block, vars, group_of, report),
        None => {
            block.default = Some(default.ok_or("the map has no default group")?);
            Ok(())
        }
    }
}

fn split_rules(
    v: &str,
    split: &Directive,
    block: &mut Block,
    vars: &mut Variables,
    group_of: &GroupOf,
    report: &mut Report,
) -> Result<(), String> {
    let first = vars.reported.insert(v.to_string());
    let mut rep = Report::default();
    let source = variable(split.arg(0));
    let by_cookie = source.and_then(|s| s.strip_prefix("cookie_"));
    match by_cookie {
        Some(cookie) => {
            block.use_cookie(cookie)?;
            rep.add(split, Verdict::Approximated, true, format!("percent rules by cookie `{cookie}`: the same shares, but the gateway's sticky hash (FNV-1a) picks other users than nginx's MurmurHash2; and requests without the cookie go to the default, where nginx hashes the empty string into its first share"));
        }
        None => rep.add(
            split,
            Verdict::Approximated,
            true,
            format!(
                "percent rules, sticky by the user cookie rather than by {}: the point of a canary",
                split.arg(0)
            ),
        ),
    }
    let mut total = 0.0;
    let mut default = None;
    let seed = format!("split-{v}");
    for e in split.children() {
        let Some(group) = group_of(e.arg(0)) else {
            rep.add(e, Verdict::NotTranslated, true, "names no upstream");
            continue;
        };
        if e.name == "*" {
            default = Some(group);
            rep.add(e, Verdict::Translated, true, "routing.default");
            continue;
        }
        match e.name.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
            Some(p) => {
                // Consecutive shares of one hash: the same seed, cumulative percentages.
                total += p;
                block.push(
                    &format!("percent-{group}"),
                    RuleKindSpec::Percent {
                        group,
                        percent: (total * 10_000.0).round() / 10_000.0,
                        seed: Some(seed.clone()),
                        plan: None,
                    },
                );
                rep.add(
                    e,
                    Verdict::Translated,
                    true,
                    format!("a percent rule up to {total}% of the hash"),
                );
            }
            None => rep.add(e, Verdict::NotTranslated, true, "not a percentage"),
        }
    }
    if first {
        report.entries.extend(rep.entries);
    }
    block.default = Some(default.ok_or("split_clients has no `*` entry (the rest)")?);
    Ok(())
}
