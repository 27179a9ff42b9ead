//! Unit tests of loading and validation: good files load into typed values, each bad key is
//! named in its error.

use super::parse::parse_duration;
use super::*;
use crate::routing::{GroupId, Reason, RequestFacts, RuleKind};
use crate::upstreams::{HealthProbe, Protocol, Selection, Timeouts, DEFAULT_MAX_STREAMS};

const GOOD: &str = r#"
version: 1
threads: 2
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    stable: { servers: ["127.0.0.1:10001"] }
    canary: { servers: ["127.0.0.1:10002", "localhost:10003"] }
  routing:
    cookie: canary_user
    default: stable
    rules:
      - name: qa-override
        header: X-Canary-Group
      - name: vip
        users: ["alice", "bob"]
        group: stable
      - name: rollout
        percent: 0.5
        group: canary
"#;

/// A request without headers, for decisions that read only the user id.
const NO_HEADERS: [(&str, &str); 0] = [];

fn load(text: &str) -> Result<LoadedConfig, ConfigError> {
    load_str(text, "test.yaml", Path::new("."))
}

fn error_of(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_config_loads_into_typed_values() {
    let loaded = load(GOOD).expect("valid");
    assert_eq!(loaded.server.threads, 2);
    assert_eq!(
        loaded.server.grace_period_seconds,
        Some(DEFAULT_GRACE_PERIOD_SECONDS)
    );
    let gw = loaded.gateway;
    assert_eq!(gw.groups.len(), 2);
    assert_eq!(gw.groups[0].name, "canary"); // groups are kept in name order
                                             // `localhost:10003` is a name: looked up while the gateway runs, not at load.
    assert_eq!(gw.groups[0].servers.len(), 1);
    assert_eq!(gw.groups[0].named.len(), 1);
    assert_eq!(gw.groups[0].named[0].host, "localhost");
    assert_eq!(
        gw.decision_header.as_ref().map(|h| h.as_str()),
        Some("x-canary-group")
    );
    assert_eq!(gw.routes.len(), 1);
    assert_eq!(gw.routes[0].name, "default");
    let r = &gw.routes[0].router;
    assert_eq!(r.group_name(r.default_group()), "stable");
    assert!(
        matches!(r.rules()[0].kind(), RuleKind::Header { header, .. } if header == "x-canary-group")
    );
    match r.rules()[2].kind() {
        RuleKind::Percent { share, seed, .. } => {
            assert_eq!(share.ppm(), 5_000);
            assert_eq!(&**seed, b"rollout", "seed defaults to the rule name");
        }
        other => panic!("not a percent rule: {other:?}"),
    }
    let d = r.decide(&RequestFacts::new(&NO_HEADERS[..]).with_user(Some(b"alice")));
    assert_eq!(
        (r.group_name(d.group), d.reason),
        ("stable", Reason::UserList)
    );
}

#[test]
fn the_demo_config_is_valid() {
    let demo = load_demo().expect("demo config valid");
    assert_eq!(demo.gateway.demo_origins.len(), 2);
}

/// The demo keeps its changes in the state file it is given, shown in the spec too.
#[test]
fn the_demo_keeps_its_changes_in_the_given_state_file() {
    let file = Path::new("/var/tmp/demo-state.json");
    let demo = load_demo_keeping(file).expect("demo config valid");
    let admin = demo
        .gateway
        .admin
        .as_ref()
        .expect("the demo has an admin API");
    assert_eq!(admin.state_file.as_deref(), Some(file));
    let spec_admin = demo.spec.admin.as_ref().expect("admin");
    assert_eq!(spec_admin.state_file.as_deref(), Some(file));
    let plain = load_demo().expect("demo");
    assert_eq!(plain.gateway.admin.expect("admin").state_file, None);
}

/// XDG_STATE_HOME (absolute, non-empty) first, then HOME, then a per-user temporary folder.
#[test]
fn the_demo_state_file_follows_xdg_then_home_then_temp() {
    use std::ffi::OsStr;
    let temp = Path::new("/tmp");
    let path = |xdg: Option<&str>, home: Option<&str>| {
        demo_state_file(xdg.map(OsStr::new), home.map(OsStr::new), temp, "ann")
    };
    let table = [
        (Some("/s"), Some("/h"), "/s/canary-gateway/demo-state.json"),
        (
            Some(""),
            Some("/h"),
            "/h/.local/state/canary-gateway/demo-state.json",
        ),
        (
            Some("rel"),
            Some("/h"),
            "/h/.local/state/canary-gateway/demo-state.json",
        ),
        (
            None,
            Some("/h"),
            "/h/.local/state/canary-gateway/demo-state.json",
        ),
        (
            None,
            Some(""),
            "/tmp/canary-gateway-demo-ann/demo-state.json",
        ),
        (None, None, "/tmp/canary-gateway-demo-ann/demo-state.json"),
    ];
    for (xdg, home, want) in table {
        assert_eq!(path(xdg, home), Path::new(want), "{xdg:?} {home:?}");
    }
}

#[test]
fn grace_period_from_the_file_wins() {
    let text = GOOD.replace("threads: 2", "grace_period_seconds: 30");
    assert_eq!(
        load(&text).expect("valid").server.grace_period_seconds,
        Some(30)
    );
}

#[test]
fn decision_header_setting() {
    let off = GOOD.replace("  routing:", "  decision_header: false\n  routing:");
    assert_eq!(load(&off).expect("valid").gateway.decision_header, None);
    let named = GOOD.replace("  routing:", "  decision_header: X-Route\n  routing:");
    assert_eq!(
        load(&named)
            .expect("valid")
            .gateway
            .decision_header
            .as_ref()
            .map(|h| h.as_str()),
        Some("x-route")
    );
}

/// Each broken config is rejected with the key (and the value) named.
#[test]
fn errors_name_the_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "percent: 0.5",
            "percent: 140",
            &["gateway.routing.rules[2].percent", "140"],
        ),
        (
            "percent: 0.5",
            "percent: -1",
            &["gateway.routing.rules[2].percent"],
        ),
        (
            "percent: 0.5",
            "percent: 1e-9",
            &[
                "gateway.routing.rules[2].percent",
                "finer than the resolution of 0.0001",
            ],
        ),
        (
            "group: canary",
            "group: canarry",
            &["gateway.routing.rules[2].group", "canarry"],
        ),
        (
            "default: stable",
            "default: nope",
            &["gateway.routing.default", "nope"],
        ),
        (
            "\"127.0.0.1:10001\"",
            "\"127.0.0.1\"",
            &["gateway.groups.stable.servers[0]", "port"],
        ),
        (
            "[\"127.0.0.1:10001\"]",
            "[]",
            &["gateway.groups.stable.servers", "at least one"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[\"localhost:http\"]",
            &["gateway.listen[0]", "localhost:http"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[{ addr: \"127.0.0.1:8080\", http2: true }]",
            &["gateway.listen[0].http2", "needs a TLS listener"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[{ addr: \"127.0.0.1:8080\", hsts: \"max-age=1\" }]",
            &["gateway.listen[0].hsts", "needs a TLS listener"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[{ addr: \"127.0.0.1:8080\", https_port: 8443 }]",
            &["gateway.listen[0].https_port", "redirect_https"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[\"127.0.0.1:8080\", { addr: \"127.0.0.1:8080\", redirect_https: true }]",
            &["gateway.listen[1]", "listed twice"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[{ addr: \"127.0.0.1:8443\", tls: { certificates: [] } }]",
            &["gateway.listen[0].tls.certificates", "at least one"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[{ addr: \"127.0.0.1:8443\", tls: { certificates: [{ cert: missing.pem, key: missing.key }] } }]",
            &["gateway.listen[0].tls.certificates[0].cert", "cannot read"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[{ addr: \"127.0.0.1:8443\", tls: { certs: [] } }]",
            &["certs", "unknown field"],
        ),
        (
            "[\"127.0.0.1:8080\"]",
            "[{ addr: \"127.0.0.1:8443\", redirect_https: true, https_port: 0 }]",
            &["gateway.listen[0].https_port", "not a port"],
        ),
        (
            "stable: { servers: [\"127.0.0.1:10001\"] }",
            "stable: { servers: [\"127.0.0.1:10001\"], tls: { verify: true } }",
            &["gateway.groups.stable.tls.sni", "server name"],
        ),
        (
            "stable: { servers: [\"127.0.0.1:10001\"] }",
            "stable: { servers: [\"127.0.0.1:10001\"], tls: { verify: false, client_cert: a.pem } }",
            &["gateway.groups.stable.tls.client_key", "client_cert needs client_key"],
        ),
        (
            "name: rollout",
            "name: vip",
            &["gateway.routing.rules[2].name", "unique"],
        ),
        (
            "cookie: canary_user",
            "cookie: \"bad cookie\"",
            &["gateway.routing.cookie"],
        ),
        (
            "cookie: canary_user",
            "cookie: canary_user\n    identity: [{ cookie: uid }]",
            &["gateway.routing.cookie", "not both"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ assign: {} }, { cookie: uid }]",
            &["gateway.routing.identity[1]", "`assign` must be last"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ cookie: uid, header: x-user }]",
            &["gateway.routing.identity[0]", "exactly one"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ header: x-user-id }]",
            &["gateway.routing.identity[0].from", "trusted_proxies"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ header: x-user-id, from: [10.0.0.300/8] }]",
            &["gateway.routing.identity[0].from[0]"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ cookie: uid }, { cookie: vid }, { jwt: { keys_file: k.json, algorithms: [RS256, XS1] } }]",
            &["gateway.routing.identity[2].jwt.algorithms[1]", "XS1"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ jwt: { keys_file: does/not/exist.json, algorithms: [RS256] } }]",
            &["gateway.routing.identity[0].jwt.keys_file", "does/not/exist.json"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ jwt: { secret_env: CANARY_TEST_UNSET_VAR, algorithms: [RS256] } }]",
            &["gateway.routing.identity[0].jwt.algorithms", "HS256 only"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ jwt: { algorithms: [HS256] } }]",
            &["gateway.routing.identity[0].jwt", "keys_file"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ assign: { same_site: sometimes } }]",
            &["gateway.routing.identity[0].assign.same_site", "sometimes"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ assign: { max_age: 10 } }]",
            &["gateway.routing.identity[0].assign.max_age", "unit"],
        ),
        (
            "cookie: canary_user",
            "identity: [{ assign: { same_site: none, secure: false } }]",
            &["gateway.routing.identity[0].assign.same_site", "Secure"],
        ),
        (
            "header: X-Canary-Group",
            "header: \"x canary\"",
            &["gateway.routing.rules[0].header"],
        ),
        ("percent: 0.5", "percnt: 0.5", &["percnt"]),
        ("  listen:", "  lisen: x\n  listen:", &["lisen"]),
        (
            "users: [\"alice\", \"bob\"]",
            "users_file: does/not/exist.txt",
            &["gateway.routing.rules[1].users_file", "does/not/exist.txt"],
        ),
        (
            "        group: stable\n",
            "",
            &["gateway.routing.rules[1].group", "target group"],
        ),
        (
            "header: X-Canary-Group",
            "header: x-a\n        percent: 3",
            &["gateway.routing.rules[0]", "exactly one"],
        ),
        (
            "threads: 2",
            "threads: lots",
            &["invalid server configuration"],
        ),
    ];
    for (from, to, needles) in cases {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "test case did not change the config: {from}");
        let message = error_of(&text);
        assert!(message.starts_with("test.yaml: "), "{message}");
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{to}: {message:?} lacks {needle:?}"
            );
        }
    }
}

const POOLS: &str = r#"
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    a:
      servers: ["127.0.0.1:1", { addr: "127.0.0.1:2", weight: 3 }]
      selection: consistent
      health_check: { type: http, path: /healthz, expect_status: 204, interval: 250ms, timeout: 1s, rise: 2, fall: 3 }
      timeouts: { connect: 1s, read: 30s, write: 1m, idle: 90s }
      fallback: b
    b:
      servers: ["127.0.0.1:3"]
      health_check: { type: none }
      fallback: c
    c:
      servers: ["127.0.0.1:4"]
  routing:
    default: a
"#;

#[test]
fn pool_settings_are_typed() {
    let gw = load(POOLS).expect("valid").gateway;
    let a = &gw.groups[0];
    assert_eq!(a.servers[1].weight, 3);
    assert_eq!(a.selection, Selection::Consistent);
    let hc = a.health_check.as_ref().expect("checked");
    assert_eq!(hc.interval, Duration::from_millis(250));
    assert_eq!((hc.rise, hc.fall), (2, 3));
    assert!(
        matches!(&hc.probe, HealthProbe::Http { path, expect_status: 204, .. } if path == "/healthz")
    );
    assert_eq!(a.timeouts.write, Duration::from_secs(60));
    assert_eq!(a.timeouts.idle, Duration::from_secs(90));
    assert_eq!(a.fallback, Some(GroupId(1)));
    assert!(
        gw.groups[1].health_check.is_none(),
        "type: none turns checks off"
    );
    let default_check = gw.groups[2].health_check.as_ref().expect("default check");
    assert_eq!(default_check.probe, HealthProbe::Tcp);
    assert_eq!(default_check.interval, DEFAULT_HEALTH_INTERVAL);
    assert_eq!(gw.groups[2].timeouts, Timeouts::default());
}

/// `protocol` and `max_streams_per_connection` load typed: h1 by default, h2c with its stream
/// limit, and `tls.http2: true` as `auto`.
#[test]
fn group_protocols_are_typed() {
    let text = POOLS
        .replacen(
            "health_check: { type: none }",
            "health_check: { type: grpc, service: pkg.Svc }\n      protocol: h2c\n      max_streams_per_connection: 7",
            1,
        );
    let gw = load(&text).expect("valid").gateway;
    assert_eq!(gw.groups[0].protocol, Protocol::H1);
    assert_eq!(gw.groups[0].max_streams, DEFAULT_MAX_STREAMS);
    assert_eq!(gw.groups[1].protocol, Protocol::H2c);
    assert_eq!(gw.groups[1].max_streams, 7);
    assert_eq!(
        gw.groups[1]
            .health_check
            .as_ref()
            .map(|hc| hc.probe.clone()),
        Some(HealthProbe::Grpc {
            service: "pkg.Svc".into()
        })
    );
}

/// Each protocol that does not fit the group's TLS (or its other keys) is refused by key.
#[test]
fn group_protocol_errors_name_the_key() {
    let cases: &[(&str, &[&str])] = &[
        ("protocol: h2", &["gateway.groups.c.protocol", "needs TLS"]),
        (
            "protocol: auto",
            &["gateway.groups.c.protocol", "needs TLS"],
        ),
        ("protocol: h3", &["unknown variant `h3`"]),
        (
            "max_streams_per_connection: 5",
            &[
                "gateway.groups.c.max_streams_per_connection",
                "HTTP/2 group",
            ],
        ),
        (
            "protocol: h2c\n      max_streams_per_connection: 0",
            &[
                "gateway.groups.c.max_streams_per_connection",
                "not in 1..=10000",
            ],
        ),
        (
            "protocol: h2c\n      tls: { sni: a.internal }",
            &["gateway.groups.c.protocol", "over TLS use h2"],
        ),
        (
            "protocol: h2\n      tls: { sni: a.internal, http2: true }",
            &["gateway.groups.c.tls.http2", "not both"],
        ),
        (
            "health_check: { type: grpc }",
            &["gateway.groups.c.health_check.type", "HTTP/2 group"],
        ),
        (
            "protocol: h2c\n      health_check: { type: grpc, path: /x }",
            &["gateway.groups.c.health_check.path", "type: http"],
        ),
        (
            "health_check: { type: tcp, service: x }",
            &["gateway.groups.c.health_check.service", "type: grpc"],
        ),
    ];
    for (extra, needles) in cases {
        let text = POOLS.replacen(
            "servers: [\"127.0.0.1:4\"]",
            &format!("servers: [\"127.0.0.1:4\"]\n      {extra}"),
            1,
        );
        assert_ne!(text, POOLS);
        let message = error_of(&text);
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{extra}: {message:?} lacks {needle:?}"
            );
        }
    }
}

/// A `name:port` server loads even when the name does not resolve (it is looked up while the
/// gateway runs), with the group's resolver and interval.
#[test]
fn named_servers_load_without_resolving() {
    let text = POOLS.replacen(
        "servers: [\"127.0.0.1:3\"]",
        "servers: [\"127.0.0.1:3\", { addr: \"nowhere.invalid:8080\", weight: 2 }]\n      \
         resolver: \"127.0.0.1:5353\"\n      resolve_interval: 5s",
        1,
    );
    assert_ne!(text, POOLS);
    let gw = load(&text).expect("valid").gateway;
    let b = &gw.groups[1];
    assert_eq!(b.servers.len(), 1);
    assert_eq!(b.named.len(), 1);
    assert_eq!(
        (b.named[0].host.as_str(), b.named[0].port, b.named[0].weight),
        ("nowhere.invalid", 8080, 2)
    );
    assert_eq!(
        b.resolve.resolver,
        Some("127.0.0.1:5353".parse().expect("addr"))
    );
    assert_eq!(b.resolve.interval, Duration::from_secs(5));
    assert_eq!(
        gw.groups[0].resolve.interval,
        Duration::from_secs(30),
        "the default"
    );
}

#[test]
fn pool_errors_name_the_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "fallback: c\n",
            "fallback: a\n",
            &["fallback chain loops: a -> b -> a"],
        ),
        (
            "fallback: b\n",
            "fallback: a\n",
            &["gateway.groups.a.fallback", "itself"],
        ),
        (
            "fallback: b\n",
            "fallback: zz\n",
            &["gateway.groups.a.fallback", "zz"],
        ),
        (
            "weight: 3",
            "weight: 0",
            &["gateway.groups.a.servers[1].weight"],
        ),
        (
            "interval: 250ms",
            "interval: 250",
            &["gateway.groups.a.health_check.interval", "unit"],
        ),
        (
            "interval: 250ms",
            "interval: 0s",
            &["gateway.groups.a.health_check.interval", "more than zero"],
        ),
        (
            "read: 30s",
            "read: soon",
            &["gateway.groups.a.timeouts.read"],
        ),
        (
            "rise: 2",
            "rise: 0",
            &["gateway.groups.a.health_check.rise"],
        ),
        (
            "expect_status: 204",
            "expect_status: 999",
            &["gateway.groups.a.health_check.expect_status"],
        ),
        (
            "path: /healthz",
            "path: healthz",
            &["gateway.groups.a.health_check.path"],
        ),
        (
            "type: none",
            "type: none, path: /x",
            &["gateway.groups.b.health_check.path", "type: http"],
        ),
        ("type: none", "type: ping", &["unknown variant `ping`"]),
        (
            "selection: consistent",
            "selection: random",
            &["unknown variant `random`"],
        ),
        (
            "\"127.0.0.1:3\"",
            "\"127.0.0.1:1\", \"127.0.0.1:1\"",
            &["gateway.groups.b.servers[1]", "twice"],
        ),
        (
            "\"127.0.0.1:3\"",
            "\"bad_name!:80\"",
            &[
                "gateway.groups.b.servers[0]",
                "neither an IP address nor a DNS host name",
            ],
        ),
        (
            "\"127.0.0.1:3\"",
            "\"app.internal:0\"",
            &["gateway.groups.b.servers[0]", "not a port"],
        ),
        (
            "\"127.0.0.1:3\"",
            "\"app.internal:80\", \"APP.internal:80\"",
            &["gateway.groups.b.servers[1]", "twice"],
        ),
        (
            "fallback: c\n",
            "fallback: c\n      resolver: dns.internal\n",
            &["gateway.groups.b.resolver", "ip:port"],
        ),
        (
            "fallback: c\n",
            "fallback: c\n      resolve_interval: 0s\n",
            &["gateway.groups.b.resolve_interval", "more than zero"],
        ),
    ];
    for (from, to, needles) in cases {
        let text = POOLS.replacen(from, to, 1);
        assert_ne!(text, POOLS, "test case did not change the config: {from}");
        let message = error_of(&text);
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{to}: {message:?} lacks {needle:?}"
            );
        }
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("2").is_err());
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("2 days").is_err());
}

#[test]
fn missing_gateway_section() {
    assert!(error_of("version: 1\n").contains("gateway: the section is missing"));
}

#[test]
fn users_file_resolves_against_the_config_folder() {
    let dir = std::env::temp_dir().join(format!("cg-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("vips.txt"), "# vips\ncarol\n\ndave\n").expect("write");
    let text = GOOD.replace(
        "users: [\"alice\", \"bob\"]",
        "users: [alice]\n        users_file: vips.txt",
    );
    let path = dir.join("gw.yaml");
    std::fs::write(&path, text).expect("write");
    let loaded = load_file(&path).expect("valid");
    let r = &loaded.gateway.routes[0].router;
    for user in ["alice", "carol", "dave"] {
        assert_eq!(
            r.decide(&RequestFacts::new(&NO_HEADERS[..]).with_user(Some(user.as_bytes())))
                .reason,
            Reason::UserList,
            "{user}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The same gateway with `routes` in place of `routing`.
const ROUTES: &str = r#"
version: 1
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    web-v1: { servers: ["127.0.0.1:10001"] }
    web-v2: { servers: ["127.0.0.1:10002"], host_header: server }
    api-v1: { servers: ["127.0.0.1:10003"], host_header: "api.internal" }
  routes:
    - name: api
      hosts: ["Tools2online.com", "www.tools2online.com."]
      paths: ["/api/"]
      strip_prefix: true
      routing:
        default: api-v1
        rules:
          - { name: rollout, percent: 5, group: api-v1 }
    - name: web
      hosts: ["tools2online.com", "*.tools2online.com"]
      routing:
        default: web-v1
        rules:
          - { name: rollout, percent: 20, group: web-v2 }
"#;

#[test]
fn routes_load_into_typed_values() {
    let gw = load(ROUTES).expect("valid").gateway;
    let names: Vec<&str> = gw.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    let api = &gw.routes[0];
    assert_eq!(
        api.matching.hosts,
        ["tools2online.com", "www.tools2online.com"],
        "hosts lower-cased, trailing dot dropped"
    );
    assert_eq!(api.matching.paths, ["/api/"]);
    assert!(api.strip_prefix);
    assert_eq!(gw.routes[1].matching.paths, ["/"], "paths default to /");
    assert_eq!(
        gw.groups[0].host_header,
        crate::upstreams::HostHeader::Name(http::HeaderValue::from_static("api.internal"))
    );
    assert_eq!(
        gw.groups[2].host_header,
        crate::upstreams::HostHeader::Server
    );
    assert_eq!(
        gw.groups[1].host_header,
        crate::upstreams::HostHeader::Client
    );
}

#[test]
fn route_errors_name_the_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "percent: 5,",
            "percent: 140,",
            &["gateway.routes[0].routing.rules[0].percent", "140"],
        ),
        (
            "default: web-v1",
            "default: nope",
            &["gateway.routes[1].routing.default", "nope"],
        ),
        (
            "name: web",
            "name: api",
            &["gateway.routes[1].name", "unique"],
        ),
        (
            "\"*.tools2online.com\"",
            "\"tools2online.com\"",
            &["gateway.routes[1].hosts[1]", "twice"],
        ),
        (
            "\"*.tools2online.com\"",
            "\"a b\"",
            &["gateway.routes[1].hosts[1]", "host name"],
        ),
        (
            "\"*.tools2online.com\"",
            "\"*.*.x\"",
            &["gateway.routes[1].hosts[1]"],
        ),
        (
            "paths: [\"/api/\"]",
            "paths: [\"api\"]",
            &["gateway.routes[0].paths[0]", "starting with /"],
        ),
        (
            "paths: [\"/api/\"]",
            "paths: [\"/../x\"]",
            &["gateway.routes[0].paths[0]"],
        ),
        (
            "host_header: server",
            "host_header: \"a b\"",
            &["gateway.groups.web-v2.host_header"],
        ),
        (
            "strip_prefix: true",
            "strip_prefix: true\n      strip: true",
            &["unknown field `strip`"],
        ),
    ];
    for (from, to, expected) in cases {
        assert!(ROUTES.contains(from), "case does not apply: {from}");
        let message = error_of(&ROUTES.replacen(from, to, 1));
        for part in *expected {
            assert!(message.contains(part), "{from} -> {to}: {message}");
        }
    }
}

#[test]
fn same_host_and_prefix_in_two_routes_is_refused() {
    let clash = ROUTES.replace(
        "hosts: [\"tools2online.com\", \"*.tools2online.com\"]",
        "hosts: [\"tools2online.com\"]\n      paths: [\"/api/\"]",
    );
    let message = error_of(&clash);
    assert!(
        message.contains("gateway.routes[1]") && message.contains("\"api\""),
        "names both routes: {message}"
    );
}

#[test]
fn routing_and_routes_together_or_neither_are_refused() {
    let both = ROUTES.replace("  routes:\n", "  routing: { default: web-v1 }\n  routes:\n");
    assert!(error_of(&both).contains("not both"), "{}", error_of(&both));
    let neither = ROUTES.split("  routes:").next().expect("head").to_string();
    assert!(
        error_of(&neither).contains("gateway.routes"),
        "{}",
        error_of(&neither)
    );
}

/// `GOOD` with `plan` (YAML flow mapping) on its rollout rule.
fn with_plan(plan: &str) -> String {
    GOOD.replace(
        "        percent: 0.5\n        group: canary\n",
        &format!("        percent: 0.5\n        group: canary\n        plan: {plan}\n"),
    )
}

#[test]
fn plans_load_into_typed_values() {
    let loaded = load(&with_plan(
        "{ steps: [1, 5, 25, 50, 100], hold: 10m, min_requests: 500, baseline: stable, max_error_rate_increase: 0.02, max_p99_ratio: 2, on_failure: pause }",
    ))
    .expect("valid");
    let plan = &loaded.gateway.routes[0].plans["rollout"];
    let steps: Vec<f64> = plan.steps.iter().map(|p| p.as_f64()).collect();
    assert_eq!(steps, [1.0, 5.0, 25.0, 50.0, 100.0]);
    assert_eq!(plan.hold, Duration::from_secs(600));
    assert_eq!(plan.min_requests, 500);
    assert_eq!(
        (plan.group.as_str(), plan.baseline.as_str()),
        ("canary", "stable")
    );
    assert_eq!(plan.max_error_rate_increase, 0.02);
    assert_eq!(plan.max_p99_ratio, 2.0);
    assert_eq!(plan.on_failure, OnFailure::Pause);
    let defaults = load(&with_plan("{ steps: [10], hold: 1s, baseline: stable }")).expect("valid");
    let plan = &defaults.gateway.routes[0].plans["rollout"];
    assert_eq!(plan.min_requests, DEFAULT_PLAN_MIN_REQUESTS);
    assert_eq!(
        plan.max_error_rate_increase,
        DEFAULT_PLAN_MAX_ERROR_RATE_INCREASE
    );
    assert_eq!(plan.max_p99_ratio, DEFAULT_PLAN_MAX_P99_RATIO);
    assert_eq!(plan.on_failure, OnFailure::Rollback);
}

#[test]
fn plan_errors_name_the_key() {
    let key = "gateway.routing.rules[2].plan";
    let cases = [
        (
            "{ steps: [], hold: 1s, baseline: stable }",
            format!("{key}.steps: needs at least one"),
        ),
        (
            "{ steps: [0, 5], hold: 1s, baseline: stable }",
            format!("{key}.steps[0]: the first step must be above 0"),
        ),
        (
            "{ steps: [5, 5], hold: 1s, baseline: stable }",
            format!("{key}.steps[1]: 5 is not above the step before"),
        ),
        (
            "{ steps: [5, 140], hold: 1s, baseline: stable }",
            format!("{key}.steps[1]: 140 is not in 0..=100"),
        ),
        (
            "{ steps: [5], hold: soon, baseline: stable }",
            format!("{key}.hold: "),
        ),
        (
            "{ steps: [5], hold: 1s, baseline: nope }",
            format!("{key}.baseline: \"nope\" is not a group"),
        ),
        (
            "{ steps: [5], hold: 1s, baseline: canary }",
            format!("{key}.baseline: \"canary\" is the rule's own group"),
        ),
        (
            "{ steps: [5], hold: 1s, baseline: stable, max_error_rate_increase: 2 }",
            format!("{key}.max_error_rate_increase: 2 is not a share"),
        ),
        (
            "{ steps: [5], hold: 1s, baseline: stable, max_p99_ratio: 0.5 }",
            format!("{key}.max_p99_ratio: 0.5 is not a ratio"),
        ),
        (
            "{ steps: [5], hold: 1s, baseline: stable, min_requests: 0 }",
            format!("{key}.min_requests: must be at least 1"),
        ),
        (
            "{ steps: [5], hold: 1s, baseline: stable, on_failure: panic }",
            "unknown variant `panic`".to_string(),
        ),
        (
            "{ steps: [5], hold: 1s, baseline: stable, stepz: 1 }",
            "unknown field `stepz`".to_string(),
        ),
    ];
    for (plan, expected) in cases {
        let error = error_of(&with_plan(plan));
        assert!(error.contains(&expected), "{plan}: {error}");
    }
    let on_users = GOOD.replace(
        "        users: [\"alice\", \"bob\"]\n        group: stable\n",
        "        users: [\"alice\", \"bob\"]\n        group: stable\n        plan: { steps: [5], hold: 1s, baseline: canary }\n",
    );
    let error = error_of(&on_users);
    assert!(
        error.contains("gateway.routing.rules[1].plan: only a percent rule takes a plan"),
        "{error}"
    );
}

/// `GOOD` with an admin section (YAML, indented under `gateway:`).
fn with_admin(admin: &str) -> String {
    format!("{GOOD}  admin:\n{admin}")
}

#[test]
fn admin_tokens_have_names_and_roles() {
    let loaded = load(&with_admin(
        "    listen: \"127.0.0.1:9901\"\n    token: \"operator-token-0123456789\"\n    tokens:\n      - { name: alice, token: \"alice-token-0123456789\", role: operator }\n      - { name: dash, token: \"dash-token-0123456789\", role: viewer }\n",
    ))
    .expect("valid");
    let admin = loaded.gateway.admin.expect("admin");
    let tokens: Vec<(&str, Role)> = admin
        .tokens
        .iter()
        .map(|t| (t.name.as_str(), t.role))
        .collect();
    assert_eq!(
        tokens,
        [
            (DEFAULT_ADMIN_TOKEN_NAME, Role::Admin),
            ("alice", Role::Operator),
            ("dash", Role::Viewer)
        ]
    );
    assert!(
        !format!("{:?}", admin.tokens).contains("0123456789"),
        "secrets are not printed"
    );
    let only_named = load(&with_admin(
        "    listen: \"127.0.0.1:9901\"\n    tokens: [{ name: dash, token: \"dash-token-0123456789\", role: viewer }]\n",
    ))
    .expect("named tokens alone are enough");
    assert_eq!(only_named.gateway.admin.expect("admin").tokens.len(), 1);
}

#[test]
fn admin_token_errors_name_the_key() {
    let listen = "    listen: \"127.0.0.1:9901\"\n";
    let cases = [
        ("", "gateway.admin: every admin request needs a bearer token"),
        (
            "    tokens: [{ name: dash, token: \"short\", role: viewer }]\n",
            "gateway.admin.tokens[0].token: the token must be at least",
        ),
        (
            "    tokens: [{ name: dash, role: viewer }]\n",
            "gateway.admin.tokens[0]: set `token_env`",
        ),
        (
            "    tokens: [{ name: \"da sh\", token: \"dash-token-0123456789\", role: viewer }]\n",
            "gateway.admin.tokens[0].name: \"da sh\" is not a valid token name",
        ),
        (
            "    token: \"operator-token-0123456789\"\n    tokens: [{ name: admin, token: \"dash-token-0123456789\", role: viewer }]\n",
            "gateway.admin.tokens[0].name: \"admin\" is used by another token",
        ),
        (
            "    token: \"operator-token-0123456789\"\n    tokens: [{ name: dash, token: \"operator-token-0123456789\", role: viewer }]\n",
            "gateway.admin.tokens[0].token: the same secret as another token",
        ),
        (
            "    tokens: [{ name: dash, token: \"dash-token-0123456789\", role: root }]\n",
            "unknown variant `root`",
        ),
        (
            "    tokens: [{ name: dash, token_env: CANARY_TEST_UNSET_VARIABLE, role: viewer }]\n",
            "gateway.admin.tokens[0].token_env: environment variable CANARY_TEST_UNSET_VARIABLE is not set",
        ),
    ];
    for (tokens, expected) in cases {
        let error = error_of(&with_admin(&format!("{listen}{tokens}")));
        assert!(error.contains(expected), "{tokens}: {error}");
    }
}

/// A group name the decision header cannot carry is refused at load, naming the group (it was
/// found only when the state was built, without a key).
#[test]
fn group_names_must_fit_the_decision_header() {
    let text = GOOD.replace(
        "    canary: { servers: [\"127.0.0.1:10002\", \"localhost:10003\"] }",
        "    canary: { servers: [\"127.0.0.1:10002\"] }\n    \"odd\\x7fname\": { servers: [\"127.0.0.1:10003\"] }",
    );
    let e = error_of(&text);
    assert!(
        e.contains("gateway.groups.odd\u{7f}name: ")
            && e.contains("cannot be sent as a header value"),
        "{e}"
    );
    let loaded = load(GOOD).expect("valid").gateway;
    let values: Vec<&str> = loaded
        .group_values
        .iter()
        .map(|v| v.to_str().expect("ASCII"))
        .collect();
    assert_eq!(values, ["canary", "stable"], "indexed by GroupId");
}

/// A listener's port is parsed once, with its address (HSTS is chosen by it per response).
#[test]
fn listener_ports_are_typed() {
    let text = GOOD.replace(
        "listen: [\"127.0.0.1:8080\"]",
        "listen: [\"127.0.0.1:8080\", \"[::1]:8081\"]",
    );
    let listen = load(&text).expect("valid").gateway.listen;
    let ports: Vec<(&str, u16)> = listen.iter().map(|l| (l.addr.as_str(), l.port)).collect();
    assert_eq!(ports, [("127.0.0.1:8080", 8080), ("[::1]:8081", 8081)]);
}

/// `limits.send_timeout` defaults to nginx's 60 s, takes any positive duration, and a bad
/// value is refused with the key named.
#[test]
fn send_timeout_defaults_to_nginx() {
    let limits =
        |section: &str| GOOD.replacen("  routing:\n", &format!("{section}  routing:\n"), 1);
    assert_eq!(
        load(GOOD).expect("valid").gateway.limits.head.send_timeout,
        Duration::from_secs(60)
    );
    let set = load(&limits("  limits: { send_timeout: 1500ms }\n")).expect("valid");
    assert_eq!(
        set.gateway.limits.head.send_timeout,
        Duration::from_millis(1500)
    );
    for (value, needle) in [("0s", "more than zero"), ("soon", "soon")] {
        let message = error_of(&limits(&format!("  limits: {{ send_timeout: {value} }}\n")));
        assert!(
            message.contains("gateway.limits.send_timeout") && message.contains(needle),
            "{value}: {message}"
        );
    }
}

/// `limits.keepalive_timeout` defaults to nginx's 75 s, takes whole seconds, and a value
/// Pingora cannot take is refused with the key named.
#[test]
fn keepalive_timeout_is_whole_seconds() {
    let limits =
        |section: &str| GOOD.replacen("  routing:\n", &format!("{section}  routing:\n"), 1);
    assert_eq!(
        load(GOOD)
            .expect("valid")
            .gateway
            .limits
            .head
            .keepalive_timeout,
        Duration::from_secs(75)
    );
    let set = load(&limits("  limits: { keepalive_timeout: 2m }\n")).expect("valid");
    assert_eq!(
        set.gateway.limits.head.keepalive_timeout,
        Duration::from_secs(120)
    );
    for (value, needle) in [
        ("500ms", "whole number of seconds"),
        ("0s", "more than zero"),
        ("soon", "soon"),
    ] {
        let message = error_of(&limits(&format!(
            "  limits: {{ keepalive_timeout: {value} }}\n"
        )));
        assert!(
            message.contains("gateway.limits.keepalive_timeout") && message.contains(needle),
            "{value}: {message}"
        );
    }
}

/// `max_connections`: unset by default (derived at start), set for every proxy listener under
/// `limits`, per listener on a listener written as a map, and for the admin API (default 32);
/// zero is refused with the key named.
#[test]
fn max_connections_keys() {
    let with = |section: &str| GOOD.replacen("  routing:\n", &format!("{section}  routing:\n"), 1);
    let loaded = load(GOOD).expect("valid").gateway;
    assert_eq!(loaded.limits.max_connections, None);
    assert_eq!(loaded.listen[0].max_connections, None);
    let set = load(&with("  limits: { max_connections: 500 }\n")).expect("valid");
    assert_eq!(set.gateway.limits.max_connections, Some(500));
    let listeners = GOOD.replace(
        "listen: [\"127.0.0.1:8080\"]",
        "listen: [\"127.0.0.1:8080\", { addr: \"127.0.0.1:8081\", max_connections: 40 }]",
    );
    let listen = load(&listeners).expect("valid").gateway.listen;
    assert_eq!(
        listen.iter().map(|l| l.max_connections).collect::<Vec<_>>(),
        [None, Some(40)]
    );
    let admin = |extra: &str| {
        with_admin(&format!(
            "    listen: 127.0.0.1:9000\n    token: 0123456789abcdef0123456789abcdef\n{extra}"
        ))
    };
    let admin_max = |text: &str| {
        load(text)
            .expect("valid")
            .gateway
            .admin
            .expect("admin")
            .max_connections
    };
    assert_eq!(admin_max(&admin("")), 32);
    assert_eq!(admin_max(&admin("    max_connections: 5\n")), 5);
    for (text, key) in [
        (
            with("  limits: { max_connections: 0 }\n"),
            "gateway.limits.max_connections",
        ),
        (
            listeners.replace("max_connections: 40", "max_connections: 0"),
            "gateway.listen[1].max_connections",
        ),
        (
            admin("    max_connections: 0\n"),
            "gateway.admin.max_connections",
        ),
    ] {
        let message = error_of(&text);
        assert!(
            message.contains(key) && message.contains("at least 1"),
            "{message}"
        );
    }
}

/// `routing.cookie` alone and `identity: [{cookie}]` alone are the same fast path (no identity
/// sources); more sources build them, with the header's `from` defaulting to
/// `gateway.trusted_proxies`.
#[test]
fn identity_sources_load() {
    let loaded = load(GOOD).expect("good");
    assert!(loaded.gateway.routes[0].router.identity().is_none());
    let one = GOOD.replace("cookie: canary_user", "identity: [{ cookie: uid }]");
    let loaded = load(&one).expect("one cookie source");
    let router = &loaded.gateway.routes[0].router;
    assert!(router.identity().is_none());
    assert_eq!(router.cookie(), "uid");
    let more = GOOD
        .replace(
            "cookie: canary_user",
            "identity: [{ cookie: uid }, { header: x-user-id }, { assign: { max_age: 2d } }]",
        )
        .replace("  routing:", "  trusted_proxies: [10.0.0.0/8]\n  routing:");
    let loaded = load(&more).expect("three sources");
    let identity = loaded.gateway.routes[0]
        .router
        .identity()
        .expect("sources beyond the cookie");
    let assign = identity.assign().expect("assign");
    assert_eq!(assign.max_age.as_secs(), 2 * 86400);
    let headers = [("x-user-id", "alice")];
    let trusted = identity.resolve(
        &headers[..],
        Some("10.1.1.1".parse().expect("ip")),
        &[],
        &crate::routing::identity::Uncached,
    );
    assert_eq!(trusted.user.as_deref(), Some(&b"alice"[..]));
}
