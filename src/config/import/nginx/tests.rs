//! Translation table tests: nginx snippets, the spec they become and the report's verdicts.

use std::path::{Path, PathBuf};

use super::syntax::parse_text;
use super::translate::{translate, Translation};
use super::*;
use crate::config::spec::{
    GroupSpec, ListenSpec, ProbeSpec, RouteSpec, RuleKindSpec, Scalar, ServerSpec,
};

fn import(text: &str) -> Translation {
    let tree = parse_text(text, Path::new("t.conf")).unwrap_or_else(|e| panic!("{e}"));
    let t = translate(&tree, Path::new("/etc/nginx"));
    // Whatever the input, the written file reads back as the spec.
    write_yaml(&t, Path::new("t.conf")).unwrap_or_else(|e| panic!("{e}"));
    t
}

fn verdict(t: &Translation, directive_start: &str) -> Verdict {
    t.report
        .entries
        .iter()
        .find(|e| e.directive.starts_with(directive_start))
        .unwrap_or_else(|| panic!("no entry for {directive_start}:\n{}", t.report))
        .verdict
}

fn routes(t: &Translation) -> &[RouteSpec] {
    t.spec.routes.as_deref().unwrap_or(&[])
}

fn group<'a>(t: &'a Translation, name: &str) -> &'a GroupSpec {
    t.spec
        .groups
        .get(name)
        .unwrap_or_else(|| panic!("no group {name}: {:?}", t.spec.groups.keys()))
}

const SEED: &str = include_str!("../../../../tests/fixtures/nginx/seed/nginx.conf");

/// The configuration the project started from translates with nothing left over, and the
/// written file validates.
#[test]
fn the_seed_translates_completely() {
    let t = import(SEED);
    assert_eq!(t.report.count(Verdict::NotTranslated), 0, "{}", t.report);
    assert_eq!(t.report.count(Verdict::Approximated), 0, "{}", t.report);
    assert_eq!(t.spec.listen, [ListenSpec::Addr("0.0.0.0:80".into())]);
    assert_eq!(
        group(&t, "v1").servers,
        [ServerSpec::Addr("127.0.0.1:10001".into())]
    );
    assert_eq!(
        group(&t, "v2").servers,
        [ServerSpec::Addr("127.0.0.1:10002".into())]
    );
    let r = routes(&t);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].hosts.is_empty(),
        "the only server is the default: every host"
    );
    assert_eq!(r[0].routing.default, "v1");
    assert_eq!(verdict(&t, "proxy_set_header Host"), Verdict::DoneByGateway);
    let yaml = write_yaml(&t, Path::new("seed.conf")).expect("written");
    assert!(yaml.contains("# nginx: t.conf:1\n    v1:"), "{yaml}");
    crate::config::load_str(&yaml, "seed.yaml", Path::new("/")).expect("passes -t");
}

/// Weights, `backup` as the fallback group, `max_fails` as the check's `fall`, `down` left
/// out, `keepalive` done by the gateway, `keepalive_timeout` as `timeouts.idle`.
#[test]
fn upstream_blocks_become_groups() {
    let t = import(
        "upstream app {\n server 10.0.0.1:80 weight=5 max_fails=3 fail_timeout=10s;\n server 10.0.0.2;\n server 10.0.0.3:80 down;\n server 10.0.0.9:80 backup;\n keepalive 16;\n keepalive_timeout 30s;\n}\n\
         server { listen 80; location / { proxy_pass http://app; } }",
    );
    let app = group(&t, "app");
    assert_eq!(app.servers.len(), 2);
    assert!(matches!(&app.servers[0], ServerSpec::Weighted(w) if w.weight == Some(5)));
    assert_eq!(app.servers[1], ServerSpec::Addr("10.0.0.2:80".into()));
    assert_eq!(app.fallback.as_deref(), Some("app-backup"));
    let check = app.health_check.as_ref().expect("a check");
    assert_eq!((check.probe, check.fall), (ProbeSpec::Tcp, Some(3)));
    assert_eq!(
        app.timeouts.as_ref().and_then(|t| t.idle.as_deref()),
        Some("30s")
    );
    assert_eq!(
        group(&t, "app-backup").servers,
        [ServerSpec::Addr("10.0.0.9:80".into())]
    );
    assert_eq!(verdict(&t, "server 10.0.0.1:80"), Verdict::Approximated);
    assert_eq!(verdict(&t, "server 10.0.0.3:80 down"), Verdict::Translated);
    assert_eq!(verdict(&t, "keepalive 16"), Verdict::DoneByGateway);
}

/// `listen 443 ssl http2` with certificates → a TLS listener; a port-80 server that only
/// redirects → a redirect listener naming the https port.
#[test]
fn tls_servers_and_redirects_become_listeners() {
    let t = import(
        "upstream v1 { server 127.0.0.1:9000; }\n\
         server { listen 80; server_name a.example; return 301 https://$host$request_uri; }\n\
         server { listen 8443 ssl http2; server_name a.example; ssl_certificate a.pem; ssl_certificate_key /k/a.key;\n ssl_protocols TLSv1.3; location / { proxy_pass http://v1; } }",
    );
    let ListenSpec::Listener(redirect) = &t.spec.listen[0] else {
        panic!("{:?}", t.spec.listen)
    };
    assert_eq!(
        (redirect.redirect_https, redirect.https_port),
        (Some(true), Some(8443))
    );
    let ListenSpec::Listener(tls) = &t.spec.listen[1] else {
        panic!("{:?}", t.spec.listen)
    };
    let spec = tls.tls.as_ref().expect("tls");
    assert_eq!(
        spec.certificates[0].cert,
        PathBuf::from("/etc/nginx/a.pem"),
        "relative to the prefix"
    );
    assert_eq!(spec.certificates[0].key, PathBuf::from("/k/a.key"));
    assert_eq!(spec.min_version.as_deref(), Some("1.3"));
    assert_eq!(tls.http2, None, "HTTP/2 is the TLS listener's default");
    assert_eq!(
        verdict(&t, "return 301"),
        Verdict::Approximated,
        "308, not 301"
    );
    assert_eq!(t.report.routing_left_over(), 0, "{}", t.report);
}

/// Prefix locations → route paths; proxy_pass's `/` → strip_prefix; another URI part, a regex
/// location → not translated (routing); `location =` → approximated as a prefix.
#[test]
fn locations_become_routes() {
    let t = import(
        "upstream v1 { server 127.0.0.1:9000; }\n\
         server { listen 80; server_name s.example;\n\
         location /api/ { proxy_pass http://v1/; }\n\
         location /keep { proxy_pass http://v1; }\n\
         location /other/ { proxy_pass http://v1/v2/; }\n\
         location = /exact { proxy_pass http://v1; }\n\
         location ~ \\.php$ { proxy_pass http://v1; }\n\
         location /files/ { if ($http_x) { return 403; } root /srv; }\n}",
    );
    let r = routes(&t);
    let api = r.iter().find(|r| r.paths == ["/api/"]).expect("/api/");
    assert!(api.strip_prefix);
    let keep = r.iter().find(|r| r.paths == ["/keep"]).expect("/keep");
    assert!(!keep.strip_prefix);
    assert!(r.iter().any(|r| r.paths == ["/exact"]));
    assert!(!r.iter().any(|r| r.paths == ["/other/"]));
    assert_eq!(
        verdict(&t, "proxy_pass http://v1/v2/"),
        Verdict::NotTranslated
    );
    assert_eq!(verdict(&t, "location ~"), Verdict::NotTranslated);
    assert_eq!(verdict(&t, "location /files/"), Verdict::NotTranslated);
    let exact = t
        .report
        .entries
        .iter()
        .find(|e| e.at.line == 6 && e.directive.starts_with("proxy_pass"));
    assert_eq!(
        exact.map(|e| e.verdict),
        Some(Verdict::Approximated),
        "location ="
    );
    assert_eq!(
        verdict(&t, "if ($http_x)"),
        Verdict::NotTranslated,
        "reported with its location"
    );
    assert_eq!(t.report.routing_left_over(), 6, "{}", t.report);
}

/// The `when:` of rule `i`'s header, cookie or query test: (name, equals, matches, present).
fn test_of(
    rule: &crate::config::spec::RuleSpec,
) -> (String, Option<String>, Option<String>, Option<bool>) {
    let when = rule
        .when
        .as_ref()
        .unwrap_or_else(|| panic!("{} has no when", rule.name));
    let v = when
        .header
        .as_ref()
        .or(when.cookie.as_ref())
        .or(when.query.as_ref())
        .unwrap_or_else(|| panic!("{when:?}"));
    (
        v.name.clone(),
        v.equals.clone(),
        v.matches.clone(),
        v.present,
    )
}

fn match_group(rule: &crate::config::spec::RuleSpec) -> &str {
    match &rule.kind {
        RuleKindSpec::Match { group } => group,
        other => panic!("{}: {other:?}", rule.name),
    }
}

/// A map on the user cookie → user lists first (an entry to the default group kept, since
/// regexes follow it), then its regex entries as match rules on the cookie in map order,
/// `~*` as `(?i)`: nginx's precedence, exact strings before regexes.
#[test]
fn cookie_maps_become_user_lists_and_match_rules() {
    let t = import(
        "upstream v1 { server 127.0.0.1:9001; } upstream v2 { server 127.0.0.1:9002; }\n\
         map $cookie_uid $pool { default v1; alice v2; ~^vip- v2; bob v2; vip-carol v1; ~*^qa- v2; }\n\
         server { listen 80; location / { proxy_pass http://$pool; } }",
    );
    let routing = &routes(&t)[0].routing;
    assert_eq!(
        (
            routing.cookie.as_deref().unwrap_or_default(),
            routing.default.as_str()
        ),
        ("uid", "v1")
    );
    let rules = &routing.rules;
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert!(
        matches!(&rules[0].kind, RuleKindSpec::Users { group, users: Some(u), .. } if group == "v2" && u == &["alice", "bob"])
    );
    assert!(
        matches!(&rules[1].kind, RuleKindSpec::Users { group, users: Some(u), .. } if group == "v1" && u == &["vip-carol"]),
        "an exact entry to the default goes before the regexes that also match it"
    );
    assert_eq!(match_group(&rules[2]), "v2");
    assert_eq!(
        test_of(&rules[2]),
        ("uid".into(), None, Some("^vip-".into()), None)
    );
    assert!(rules[2].when.as_ref().is_some_and(|w| w.cookie.is_some()));
    assert_eq!(
        test_of(&rules[3]),
        ("uid".into(), None, Some("(?i)^qa-".into()), None)
    );
    assert_eq!(verdict(&t, "~^vip- v2"), Verdict::Translated);
    assert_eq!(verdict(&t, "~*^qa- v2"), Verdict::Translated);
    assert_eq!(
        verdict(&t, "map $cookie_uid"),
        Verdict::Approximated,
        "nginx's exact entries ignore case, user lists do not"
    );
    assert_eq!(t.report.routing_left_over(), 0, "{}", t.report);
}

/// A map on a header → match rules on the header: exact entries first (`equals`, or an
/// anchored case-insensitive pattern when they hold letters), then the regexes; an entry to
/// the default with no regex after it needs no rule; a map on another variable is reported.
#[test]
fn header_maps_become_match_rules() {
    let t = import(
        "upstream v1 { server 127.0.0.1:9001; } upstream v2 { server 127.0.0.1:9002; }\n\
         map $http_x_app_version $pool { default v1; ~^6\\. v2; 5 v2; beta v2; 4 v1; }\n\
         map $remote_addr $other { default v1; 10.0.0.1 v2; }\n\
         server { listen 80; server_name a.example; location / { proxy_pass http://$pool; } }\n\
         server { listen 80; server_name b.example; location / { proxy_pass http://$other; } }",
    );
    let rules = &routes(&t)[0].routing.rules;
    let tests: Vec<_> = rules.iter().map(test_of).collect();
    assert_eq!(
        tests,
        [
            ("x-app-version".into(), Some("5".into()), None, None),
            (
                "x-app-version".into(),
                None,
                Some("(?i)^beta$".into()),
                None
            ),
            ("x-app-version".into(), Some("4".into()), None, None),
            ("x-app-version".into(), None, Some("^6\\.".into()), None),
        ]
    );
    assert_eq!(
        rules.iter().map(match_group).collect::<Vec<_>>(),
        ["v2", "v2", "v1", "v2"]
    );
    assert!(rules
        .iter()
        .all(|r| r.when.as_ref().is_some_and(|w| w.header.is_some())));
    assert_eq!(verdict(&t, "map $http_x_app_version"), Verdict::Translated);
    assert_eq!(verdict(&t, "map $remote_addr"), Verdict::NotTranslated);
    assert_eq!(
        t.report.routing_left_over(),
        3,
        "the map, and b.example's proxy_pass and location:\n{}",
        t.report
    );
}

/// split_clients → percent rules with one seed and cumulative shares; by `$remote_addr` it
/// becomes sticky by user (approximated).
#[test]
fn split_clients_become_percent_rules() {
    let t = import(
        "upstream a { server 127.0.0.1:9001; } upstream b { server 127.0.0.1:9002; } upstream c { server 127.0.0.1:9003; }\n\
         split_clients \"${remote_addr}AAA\" $v { 5% b; 10% c; * a; }\n\
         server { listen 80; location / { proxy_pass http://$v; } }",
    );
    let routing = &routes(&t)[0].routing;
    assert_eq!(
        (
            routing.cookie.as_deref().unwrap_or_default(),
            routing.default.as_str()
        ),
        ("canary_user", "a")
    );
    let shares: Vec<(String, f64, Option<String>)> = routing
        .rules
        .iter()
        .map(|r| match &r.kind {
            RuleKindSpec::Percent {
                group,
                percent,
                seed,
                ..
            } => (group.clone(), *percent, seed.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(shares[0], ("b".into(), 5.0, Some("split-v".into())));
    assert_eq!(shares[1], ("c".into(), 15.0, Some("split-v".into())));
    assert_eq!(verdict(&t, "split_clients"), Verdict::Approximated);
    assert_eq!(t.report.routing_left_over(), 0);
}

/// `if` on a header: naming the group → the header rule; `=`, `~`, `~*` choosing a group →
/// match rules on the header, query parameter or method; a presence test → `present`
/// (approximated: nginx's is false for "0"); on the user cookie `=` → a user; a location's
/// only `if`, negated, → its opposite to the other group; other negations and patterns the
/// regex engine does not take are reported.
#[test]
fn if_blocks_become_rules_or_are_reported() {
    let t = import(
        "upstream v1 { server 127.0.0.1:9001; } upstream v2 { server 127.0.0.1:9002; }\n\
         server { listen 80; server_name a.example;\n\
         location / { if ($http_x_canary) { proxy_pass http://$http_x_canary; } proxy_pass http://v1; }\n\
         location /b/ { if ($http_x_beta = \"v2\") { proxy_pass http://v2; } proxy_pass http://v1; }\n\
         location /c/ { if ($http_x_beta) { proxy_pass http://v2; } proxy_pass http://v1; }\n\
         location /d/ { set $up v1; if ($cookie_uid = alice) { set $up v2; } proxy_pass http://$up; }\n\
         location /e/ { if ($arg_beta ~* \"^y (es)\") { proxy_pass http://v2; } if ($request_method = POST) { proxy_pass http://v2; } proxy_pass http://v1; }\n\
         location /f/ { if ($http_x_beta != \"1\") { proxy_pass http://v2; } proxy_pass http://v1; }\n\
         location /g/ { if ($http_x_beta ~ \"(?<=a)b\") { proxy_pass http://v2; } proxy_pass http://v1; }\n\
         location /h/ { if ($http_x_beta !~* ^no) { proxy_pass http://v2; } if ($arg_v) { proxy_pass http://v1; } proxy_pass http://v1; }\n}",
    );
    let r = routes(&t);
    assert!(
        matches!(&r[0].routing.rules[0].kind, RuleKindSpec::Header { header, .. } if header == "x-canary")
    );
    let b = &r[1].routing.rules[0];
    assert_eq!(
        (test_of(b), match_group(b)),
        (("x-beta".into(), Some("v2".into()), None, None), "v2")
    );
    let c = &r[2].routing.rules[0];
    assert_eq!(
        (test_of(c), match_group(c)),
        (("x-beta".into(), None, None, Some(true)), "v2")
    );
    let d = &r[3].routing;
    assert_eq!(
        (d.cookie.as_deref().unwrap_or_default(), d.default.as_str()),
        ("uid", "v1")
    );
    assert!(
        matches!(&d.rules[0].kind, RuleKindSpec::Users { group, users: Some(u), .. } if group == "v2" && u == &["alice"])
    );
    let e = &r[4].routing.rules;
    assert_eq!(
        e[0].when.as_ref().and_then(|w| w.method.clone()),
        Some(vec!["POST".to_string()]),
        "the last `if` first: nginx applies the last that holds"
    );
    assert_eq!(
        test_of(&e[1]),
        ("beta".into(), None, Some("(?i)^y (es)".into()), None)
    );
    assert!(e[1].when.as_ref().is_some_and(|w| w.query.is_some()));
    let f = &r[5].routing;
    assert_eq!(
        (
            f.default.as_str(),
            test_of(&f.rules[0]),
            match_group(&f.rules[0])
        ),
        ("v2", ("x-beta".into(), Some("1".into()), None, None), "v1"),
        "a lone `!=` as its opposite, the chosen group the default"
    );
    assert!(r[6].routing.rules.is_empty());
    assert_eq!(r[7].routing.rules.len(), 1, "only the presence test");
    assert_eq!(verdict(&t, "if ($http_x_canary)"), Verdict::Translated);
    assert_eq!(verdict(&t, "if ($http_x_beta = v2 )"), Verdict::Translated);
    assert_eq!(verdict(&t, "if ($http_x_beta)"), Verdict::Approximated);
    assert_eq!(verdict(&t, "if ($arg_beta"), Verdict::Translated);
    assert_eq!(verdict(&t, "if ($http_x_beta !="), Verdict::Translated);
    assert_eq!(verdict(&t, "if ($http_x_beta ~"), Verdict::NotTranslated);
    assert_eq!(verdict(&t, "if ($http_x_beta !~*"), Verdict::NotTranslated);
    assert_eq!(t.report.routing_left_over(), 2, "{}", t.report);
}

/// The edge directives at the `http` level → the gateway-wide keys; a location's own → the
/// route's.
#[test]
fn edge_directives_become_gateway_keys() {
    let t = import(
        "http {\n gzip on; gzip_types application/json; gzip_comp_level 4; gzip_min_length 1k;\n\
         limit_req_zone $binary_remote_addr zone=ip:10m rate=5r/s;\n deny 192.0.2.1;\n\
         client_max_body_size 10m; client_header_timeout 7s; send_timeout 30;\n\
         resolver 10.0.0.2 valid=15s;\n\
         upstream v1 { server app.internal:8080; }\n\
         server { listen 80; server_name a.example;\n\
           location / { proxy_pass http://v1; proxy_read_timeout 45s; proxy_set_header Host $proxy_host; }\n\
           location /admin/ { allow 10.0.0.0/8; deny all; auth_basic \"staff\"; auth_basic_user_file htpasswd; limit_req zone=ip burst=10 nodelay; gzip off; proxy_pass http://v1; }\n\
         }\n}",
    );
    let compress = t.spec.compress.as_ref().expect("compress");
    assert_eq!(
        compress.algorithms.as_deref(),
        Some(&["gzip".to_string()][..])
    );
    assert_eq!(compress.level, Some(Scalar::Number(4)));
    assert_eq!(compress.min_size, Some(Scalar::Text("1k".into())));
    assert_eq!(
        t.spec.access.as_ref().map(|a| a.deny.clone()),
        Some(vec!["192.0.2.1".to_string()])
    );
    let limits = t.spec.limits.as_ref().expect("limits");
    assert_eq!(limits.max_body_bytes, Some(10 * 1024 * 1024));
    assert_eq!(limits.header_timeout.as_deref(), Some("7s"));
    assert_eq!(limits.send_timeout.as_deref(), Some("30s"));
    let v1 = group(&t, "v1");
    assert_eq!(
        (v1.resolver.as_deref(), v1.resolve_interval.as_deref()),
        (Some("10.0.0.2:53"), Some("15s"))
    );
    assert_eq!(
        v1.timeouts.as_ref().and_then(|t| t.read.as_deref()),
        Some("45s")
    );
    assert_eq!(v1.host_header.as_deref(), Some("server"));
    let admin = routes(&t)
        .iter()
        .find(|r| r.paths == ["/admin/"])
        .expect("/admin/");
    let access = admin.access.as_ref().expect("the route's own access");
    assert_eq!(
        access.allow.as_deref(),
        Some(&["10.0.0.0/8".to_string()][..])
    );
    assert!(
        access.deny.is_empty(),
        "a block's own allow/deny replace its parent's, as in nginx"
    );
    let auth = access.basic_auth.as_ref().expect("basic_auth");
    assert_eq!(
        (auth.users_file.as_path(), auth.realm.as_deref()),
        (Path::new("/etc/nginx/htpasswd"), Some("staff"))
    );
    let limit = &admin.rate_limits.as_ref().expect("the route's own limits")[0];
    assert_eq!(
        (limit.key.as_str(), limit.rate.as_str(), limit.burst),
        ("client_ip", "5/s", Some(10))
    );
    assert_eq!(
        admin
            .compress
            .as_ref()
            .and_then(|c| c.algorithms.as_ref())
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(t.report.routing_left_over(), 0, "{}", t.report);
}

/// OpenResty blocks are reported with their line; the Redis lookup names `users_store`.
#[test]
fn lua_blocks_are_reported() {
    let t = import(
        "upstream v1 { server 127.0.0.1:9001; }\nserver { listen 80;\n location / {\n  rewrite_by_lua_block {\n   local red = require(\"resty.redis\"):new()\n  }\n  proxy_pass http://v1;\n }\n}",
    );
    let e = t
        .report
        .of("rewrite_by_lua_block")
        .next()
        .expect("reported");
    assert_eq!(
        (e.at.line, e.verdict, e.routing),
        (4, Verdict::NotTranslated, true)
    );
    assert!(e.why.contains("users_store"), "{}", e.why);
    assert_eq!(t.report.routing_left_over(), 1);
}

/// Nginx Proxy Manager's `set $server …; proxy_pass $forward_scheme://$server:$port$request_uri`.
#[test]
fn set_variables_feed_proxy_pass() {
    let t = import(
        "server { set $forward_scheme http; set $server \"10.1.1.1\"; set $port 8080; listen 80; server_name npm.example;\n location / { proxy_pass $forward_scheme://$server:$port$request_uri; } }",
    );
    assert_eq!(
        group(&t, "10.1.1.1-8080").servers,
        [ServerSpec::Addr("10.1.1.1:8080".into())]
    );
    assert_eq!(routes(&t)[0].routing.default, "10.1.1.1-8080");
    assert!(!routes(&t)[0].strip_prefix);
    assert_eq!(t.report.routing_left_over(), 0, "{}", t.report);
}

/// The report ends with the counts, and every line names file:line.
#[test]
fn the_report_counts() {
    let t = import(SEED);
    let text = t.report.to_string();
    assert!(
        text.contains("t.conf:7  proxy_pass http://v1  [translated, routing]"),
        "{text}"
    );
    assert!(
        text.contains(
            "14 directives: 9 translated, 0 approximated, 5 done by the gateway, 0 not translated"
        ),
        "{text}"
    );
    assert!(text.ends_with("everything that affects routing was translated\n"));
}
