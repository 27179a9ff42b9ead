//! Criterion benches of the pure routing core: cookie parsing plus `decide()` for each rule kind
//! (and a rule with a pattern condition), with a 1,000,000-user list, the worst case of a 4 KB Cookie header that matches nothing, and
//! route lookup plus decision among 1,000 routes.

use std::hint::black_box;
use std::sync::Arc;

use canary_gateway::routing::routes::{normalize_host, normalize_path, RouteMatch, RouteTable};
use canary_gateway::routing::UserSet;
use canary_gateway::routing::{
    Condition, GroupId, Percent, RequestFacts, Router, Rule, RuleKind, ValueTest, When,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn router(rules: Vec<Rule>) -> Router {
    Router::new(vec!["stable".into(), "canary".into()], GroupId(0)).with_rules(rules)
}

fn million_users() -> Arc<UserSet> {
    let text: String = (0..1_000_000).map(|i| format!("user{i}\n")).collect();
    Arc::new(UserSet::from_lines(text.as_bytes()))
}

fn bench(c: &mut Criterion) {
    let users = million_users();
    let list = router(vec![Rule::users("vip", users, GroupId(0))]);
    let share = Percent::new(10.0).unwrap_or_default();
    let percent = router(vec![Rule::percent(
        "rollout",
        share,
        b"2026-11-release",
        GroupId(1),
    )]);
    let header = router(vec![Rule::header("qa", "x-canary-group")]);
    let no_headers: &[(&str, &str)] = &[];
    let qa_headers: &[(&str, &str)] = &[("x-canary-group", "canary")];

    let mut g = c.benchmark_group("decide");
    let member = b"theme=dark; canary_user=user123456; lang=en".as_slice();
    let stranger = b"theme=dark; canary_user=someone-else; lang=en".as_slice();
    g.bench_function("user_list_1m_hit", |b| {
        b.iter(|| {
            let user = list.user_from_cookies([black_box(member)]);
            list.decide(&RequestFacts::new(no_headers).with_user(user))
        })
    });
    g.bench_function("user_list_1m_miss", |b| {
        b.iter(|| {
            let user = list.user_from_cookies([black_box(stranger)]);
            list.decide(&RequestFacts::new(no_headers).with_user(user))
        })
    });
    g.bench_function("percent", |b| {
        b.iter(|| {
            let user = percent.user_from_cookies([black_box(member)]);
            percent.decide(&RequestFacts::new(no_headers).with_user(user))
        })
    });
    g.bench_function("header", |b| {
        b.iter(|| {
            let user = header.user_from_cookies([black_box(member)]);
            header.decide(&RequestFacts::new(black_box(qa_headers)).with_user(user))
        })
    });
    // A match rule with a pattern on a header (compiled once, as at load), then a percent
    // rule: the request matches the pattern; and one that does not.
    let pattern = regex::bytes::Regex::new(r"^5\.").unwrap_or_else(|e| panic!("{e}"));
    let conditional = router(vec![
        Rule::new("app-v5", RuleKind::Match { group: GroupId(1) }).with_when(When::new(vec![
            Condition::Header {
                name: "x-app-version".into(),
                test: ValueTest::Matches(pattern),
            },
        ])),
        Rule::percent("rollout", share, b"2026-11-release", GroupId(1)),
    ]);
    for (name, version) in [
        ("regex_condition_hit", "5.2.1"),
        ("regex_condition_miss", "4.9.0"),
    ] {
        let headers: &[(&str, &str)] = &[("x-app-version", version)];
        g.bench_function(name, |b| {
            b.iter(|| {
                let user = conditional.user_from_cookies([black_box(member)]);
                conditional.decide(&RequestFacts::new(black_box(headers)).with_user(user))
            })
        });
    }
    // 50 cookies of ~80 bytes (4 KB), none of them the routing cookie.
    let worst: String = (0..50)
        .map(|i| format!("cookie_number_{i:02}={}", "v".repeat(62)))
        .collect::<Vec<_>>()
        .join("; ");
    assert!(worst.len() >= 4000, "{}", worst.len());
    g.bench_function("worst_4k_cookie_50_no_match", |b| {
        b.iter(|| {
            let user = list.user_from_cookies([black_box(worst.as_bytes())]);
            list.decide(&RequestFacts::new(no_headers).with_user(user))
        })
    });
    g.finish();

    // 1,000 routes: site<i>.test and *.site<i>.test with `/` and `/api/`, then a catch-all.
    let mut matches: Vec<RouteMatch> = (0..999)
        .map(|i| RouteMatch {
            hosts: vec![format!("site{i}.test"), format!("*.site{i}.test")],
            paths: vec!["/".into(), "/api/".into()],
        })
        .collect();
    matches.push(RouteMatch {
        hosts: Vec::new(),
        paths: vec!["/".into()],
    });
    let table = RouteTable::new(&matches).unwrap_or_default();
    let mut g = c.benchmark_group("route_1000");
    let mut scratch = (Vec::new(), Vec::new());
    for (name, host, target) in [
        ("exact_host", "site500.test", "/api/items?page=2"),
        ("wildcard_host", "m.site500.test", "/cart"),
        ("catch_all", "other.example", "/some/page"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (host_buf, path_buf) = &mut scratch;
                let host = normalize_host(black_box(host.as_bytes()), host_buf).unwrap_or_default();
                if normalize_path(black_box(target.as_bytes()), path_buf).is_err() {
                    return None;
                }
                let route = table.find(host, path_buf)?;
                let user = percent.user_from_cookies([black_box(member)]);
                Some((
                    route,
                    percent.decide(&RequestFacts::new(no_headers).with_user(user)),
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
