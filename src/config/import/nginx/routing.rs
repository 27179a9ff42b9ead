//! The canary idioms → a route's routing block: `proxy_pass http://NAME` (the default group),
//! `map $cookie_NAME $var { … }` (user lists; its regex entries, and maps on a header or query
//! parameter, match rules), `split_clients "${cookie_NAME}" $var { … }` (percent rules),
//! `if ($http_NAME) { proxy_pass http://$http_NAME; }` (the QA header rule) and `if` value
//! tests choosing a group (match rules); `set $var` + `if` choosing the variable `proxy_pass`
//! names.

use std::collections::{HashMap, HashSet};

use super::conditions::{describe, when_on, Test};
use super::report::{Report, Verdict};
use super::syntax::Directive;
use crate::config::rules::WhenSpec;
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
        self.push_when(name, None, kind);
    }

    fn push_when(&mut self, name: &str, when: Option<WhenSpec>, kind: RuleKindSpec) {
        let mut unique = name.to_string();
        let mut n = 2;
        while self.rules.iter().any(|r| r.name == unique) {
            unique = format!("{name}-{n}");
            n += 1;
        }
        self.rules.push(RuleSpec {
            name: unique,
            when,
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
        // The arguments (quotes already removed) without the parentheses, so a quoted value
        // or pattern keeps its spaces and its own parentheses.
        let mut cond = d.args.clone();
        if let Some(first) = cond.first_mut() {
            *first = first.strip_prefix('(').unwrap_or(first).to_string();
        }
        if let Some(last) = cond.last_mut() {
            *last = last.strip_suffix(')').unwrap_or(last).to_string();
        }
        cond.retain(|a| !a.is_empty());
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
    let mut target = target;
    if let ([c], Target::Group(fixed)) = (choices.as_slice(), &target) {
        if let Some(chosen) = negated_rule(c, fixed, &mut block, group_of, report) {
            target = Target::Group(chosen);
            choices.clear();
        }
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

/// A location's only `if`, a negated test (`!=`, `!~`, `!~*`) choosing a group beside a
/// `proxy_pass` to the group `fixed`: its opposite as a match rule to `fixed`, and the chosen
/// group (returned) as the default — the same answer for every request. `None` (nothing
/// pushed) when the test is not one of those or has no condition.
fn negated_rule(
    c: &Choice,
    fixed: &str,
    block: &mut Block,
    group_of: &GroupOf,
    report: &mut Report,
) -> Option<String> {
    let [var, op, value] = c.cond.as_slice() else {
        return None;
    };
    let test = match op.as_str() {
        "!=" => Test::Equals(value.clone()),
        "!~" => Test::regex(value, false),
        "!~*" => Test::regex(value, true),
        _ => return None,
    };
    let Some(Target::Group(g)) = &c.target else {
        return None;
    };
    let chosen = group_of(g)?;
    let (name, when) = when_on(variable(var)?, &test).ok()?;
    let says = describe(&when);
    block.push_when(
        &name,
        Some(when),
        RuleKindSpec::Match {
            group: fixed.to_string(),
        },
    );
    report.add(c.d, Verdict::Translated, true, format!("its opposite: a match rule when {says}, {fixed}; every other request {chosen} (routing.default)"));
    Some(chosen)
}

fn if_rule(c: &Choice, block: &mut Block, group_of: &GroupOf, report: &mut Report) {
    let d = c.d;
    let no = |why: &str, report: &mut Report| {
        report.add(d, Verdict::NotTranslated, true, why.to_string())
    };
    let cond: Vec<&str> = c.cond.iter().map(String::as_str).collect();
    let g = match &c.target {
        None => return no(
            "it chooses no group (only `proxy_pass` or `set` of proxy_pass's variable are read)",
            report,
        ),
        Some(Target::Variable(v)) => {
            return match cond.as_slice() {
                [var] if variable(var).is_some_and(|h| h == v && h.starts_with("http_")) => {
                    let header = v["http_".len()..].replace('_', "-");
                    block.push(&format!("header-{header}"), RuleKindSpec::Header { header: header.clone(), header_secret: None, from: None, spelled_from_header: false });
                    report.add(d, Verdict::Translated, true, format!("a header rule: `{header}` names the group"));
                }
                _ => no("a variable chosen under a condition: only `if ($http_X) { proxy_pass http://$http_X; }` is read", report),
            };
        }
        Some(Target::Group(g)) => g,
    };
    let Some(group) = group_of(g) else {
        return no("names no upstream", report);
    };
    let Some(var) = cond.first().and_then(|v| variable(v)) else {
        return no(
            "this condition has no counterpart (a variable's value test is read)",
            report,
        );
    };
    // The user cookie's exact value is a user: a users rule, as a map's entries.
    if let ([_, "=", value], Some(name)) = (cond.as_slice(), var.strip_prefix("cookie_")) {
        if block.use_cookie(name).is_ok() {
            block.push(
                &format!("users-{group}"),
                RuleKindSpec::Users {
                    group,
                    users: Some(vec![value.to_string()]),
                    users_file: None,
                    users_store: None,
                },
            );
            report.add(
                d,
                Verdict::Translated,
                true,
                format!("a users rule: user {value} of cookie {name}"),
            );
            return;
        }
    }
    let (test, verdict, note) = match cond.as_slice() {
        [_] => (Test::Present, Verdict::Approximated, ": nginx's test is also false for an empty value or \"0\""),
        [_, "=", value] => (Test::Equals(value.to_string()), Verdict::Translated, ""),
        [_, "~", pattern] => (Test::regex(pattern, false), Verdict::Translated, ""),
        [_, "~*", pattern] => (Test::regex(pattern, true), Verdict::Translated, ""),
        [_, "!=" | "!~" | "!~*", _] => return no("a negated test beside other `if`s or rules: conditions have no negation (a location's only `if` is translated as its opposite)", report),
        _ => return no("this condition has no counterpart (`=`, `~`, `~*` and a presence test are read)", report),
    };
    match when_on(var, &test) {
        Ok((name, when)) => {
            let says = describe(&when);
            block.push_when(
                &name,
                Some(when),
                RuleKindSpec::Match {
                    group: group.clone(),
                },
            );
            report.add(
                d,
                verdict,
                true,
                format!("a match rule: when {says}, {group}{note}"),
            );
        }
        Err(why) => no(&why, report),
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

/// A map's entries: exact strings first (user lists on the route's user cookie, else match
/// rules), then its regexes as match rules in the order written — nginx's own precedence —
/// then its default (a group, or the rules of another variable).
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
    // On the route's user cookie, exact entries are users; on anything else, conditions.
    let user_cookie = source
        .strip_prefix("cookie_")
        .filter(|c| block.use_cookie(c).is_ok());
    if user_cookie.is_none() {
        if let Err(why) = when_on(source, &Test::Present) {
            rep.add(map, Verdict::NotTranslated, true, why);
            if first {
                report.entries.extend(rep.entries);
            }
            return Err(format!("map on {} has no counterpart", map.arg(0)));
        }
    }
    let mut default: Option<String> = None;
    let mut default_variable = None;
    let mut exact: Vec<(&Directive, String, String)> = Vec::new();
    let mut regexes: Vec<(&Directive, Test, String)> = Vec::new();
    for e in map.children() {
        let value = e.arg(0);
        match e.name.as_str() {
            "default" => {
                if let Some(inner) = variable(value) {
                    default_variable = Some(inner.to_string());
                    rep.add(
                        e,
                        Verdict::Translated,
                        true,
                        format!("the rules of ${inner} after the map's"),
                    );
                } else if let Some(g) = group_of(value) {
                    default = Some(g);
                    rep.add(e, Verdict::Translated, true, "routing.default");
                } else {
                    rep.add(e, Verdict::NotTranslated, true, "names no upstream");
                }
            }
            "hostnames" | "volatile" => rep.add(e, Verdict::NotTranslated, false, "no counterpart"),
            key => match group_of(value) {
                Some(g) => match key.strip_prefix('~') {
                    Some(p) => match p.strip_prefix('*') {
                        Some(p) => regexes.push((e, Test::regex(p, true), g)),
                        None => regexes.push((e, Test::regex(p, false), g)),
                    },
                    None => exact.push((e, key.strip_prefix('\\').unwrap_or(key).to_string(), g)),
                },
                None => rep.add(e, Verdict::NotTranslated, true, "names no upstream"),
            },
        }
    }
    // An exact entry to the default group needs a rule only when rules follow it.
    let needs_rule = |g: &str| {
        default_variable.is_some() || !regexes.is_empty() || default.as_deref() != Some(g)
    };
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    for (e, key, g) in exact {
        if !needs_rule(&g) {
            rep.add(
                e,
                Verdict::Translated,
                true,
                "the default group: no rule needed",
            );
            continue;
        }
        if user_cookie.is_some() {
            match lists.iter_mut().find(|(group, _)| *group == g) {
                Some((_, users)) => users.push(key),
                None => lists.push((g.clone(), vec![key])),
            }
            rep.add(
                e,
                Verdict::Translated,
                true,
                format!("a user of the `users-{g}` rule"),
            );
            continue;
        }
        match when_on(source, &Test::map_exact(&key)) {
            Ok((_, when)) => {
                let says = describe(&when);
                block.push_when(
                    &format!("{v}-{g}"),
                    Some(when),
                    RuleKindSpec::Match { group: g.clone() },
                );
                rep.add(
                    e,
                    Verdict::Translated,
                    true,
                    format!(
                        "a match rule: when {says}, {g} (nginx's exact entries ignore letter case)"
                    ),
                );
            }
            Err(why) => rep.add(e, Verdict::NotTranslated, true, why),
        }
    }
    for (g, users) in lists {
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
    for (e, test, g) in regexes {
        match when_on(source, &test) {
            Ok((_, when)) => {
                let says = describe(&when);
                block.push_when(
                    &format!("{v}-{g}"),
                    Some(when),
                    RuleKindSpec::Match { group: g.clone() },
                );
                rep.add(
                    e,
                    Verdict::Translated,
                    true,
                    format!("a match rule after the exact entries: when {says}, {g}"),
                );
            }
            Err(why) => rep.add(e, Verdict::NotTranslated, true, why),
        }
    }
    match user_cookie {
        Some(cookie) => {
            let letters = map.children().iter().any(|e| {
                !e.name.starts_with('~')
                    && !matches!(e.name.as_str(), "default" | "hostnames" | "volatile")
                    && e.name.bytes().any(|b| b.is_ascii_alphabetic())
            });
            if letters {
                rep.add(map, Verdict::Approximated, true, format!("cookie `{cookie}` is the user id; each listed user a `users` rule, compared exactly, where nginx's exact entries ignore letter case (ALICE is alice)"));
            } else {
                rep.add(
                    map,
                    Verdict::Translated,
                    true,
                    format!("cookie `{cookie}` is the user id; each listed user a `users` rule"),
                );
            }
        }
        None => rep.add(
            map,
            Verdict::Translated,
            true,
            format!("match rules on {}", map.arg(0)),
        ),
    }
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
