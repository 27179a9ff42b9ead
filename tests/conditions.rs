//! Conditions on rules (`when:`) and what the origin is told, end to end: a real gateway and
//! real origins. Each condition kind routes as written; the origin sees the group that served
//! the request in `x-canary-group` (after a fallback too), a value the client sent in that
//! header is replaced, the QA override and its secret never reach the origin; the lane rule
//! believes the group header only from the allowed network; explain shows each condition.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use serde_json::Value;

const ADMIN_TOKEN: &str = "conditions-admin-token-0123456789";
const QA_SECRET: &str = "qa-secret-value";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

/// A request from `source` (a loopback address) with `method`, `target` and `headers`.
fn send(
    gateway: SocketAddr,
    source: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: test.local\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    Client::connect_from(gateway, ip(source)).send_raw(request.as_bytes())
}

/// The example rules plus an absent-header rule, and a 100% rollout last: a
/// conditional opt-out beats it.
fn conditional_rules() -> &'static str {
    "    rules:\n\
     \x20     - { name: opt-out, when: { cookie: { name: beta, equals: never } }, group: stable }\n\
     \x20     - { name: opt-in, when: { cookie: { name: beta, equals: always } }, group: canary }\n\
     \x20     - { name: app-v5, when: { header: { name: x-app-version, matches: \"^5\\\\.\" } }, group: canary }\n\
     \x20     - { name: eu, when: { query: { name: region, equals: eu } }, group: canary }\n\
     \x20     - { name: office, when: { client: [127.0.0.2/32], method: [GET, HEAD] }, group: canary }\n\
     \x20     - { name: preview, when: { query: { name: preview, present: true }, header: { name: x-legacy, present: false } }, group: canary }\n\
     \x20     - { name: everyone, percent: 100, group: canary }\n"
}

/// (what, client address, method, target, headers, the group that must serve it)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    &'a str,
);

/// Each condition kind routes as written: cookie equals, header pattern, query value, client
/// network with methods, present and absent; an opt-out before a 100% rollout keeps a user
/// on stable. The body (which origin answered), the decision header and the group the origin
/// was told agree in every case.
#[test]
fn each_condition_kind_routes_as_written() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let section = format!(
        "{}  routing:\n    default: stable\n{}",
        groups_yaml(&[("stable", &stable), ("canary", &canary)]),
        conditional_rules()
    );
    let gateway = Gateway::start(&section);
    let out = "127.0.0.3";
    let cases: [Case; 14] = [
        ("nothing matches", out, "GET", "/", vec![], "stable"),
        (
            "opt-in cookie",
            out,
            "GET",
            "/",
            vec![("Cookie", "beta=always")],
            "canary",
        ),
        (
            "opt-out beats the 100% rollout",
            out,
            "GET",
            "/",
            vec![("Cookie", "canary_user=u1; beta=never")],
            "stable",
        ),
        (
            "the 100% rollout",
            out,
            "GET",
            "/",
            vec![("Cookie", "canary_user=u1")],
            "canary",
        ),
        (
            "other cookie value",
            out,
            "GET",
            "/",
            vec![("Cookie", "beta=maybe")],
            "stable",
        ),
        (
            "header matches",
            out,
            "GET",
            "/",
            vec![("X-App-Version", "5.2.0")],
            "canary",
        ),
        (
            "header does not match",
            out,
            "GET",
            "/",
            vec![("X-App-Version", "15.2")],
            "stable",
        ),
        (
            "query equals",
            out,
            "GET",
            "/shop?region=eu",
            vec![],
            "canary",
        ),
        (
            "query differs",
            out,
            "GET",
            "/shop?region=us",
            vec![],
            "stable",
        ),
        (
            "office client, GET",
            "127.0.0.2",
            "GET",
            "/",
            vec![],
            "canary",
        ),
        (
            "office client, POST",
            "127.0.0.2",
            "POST",
            "/",
            vec![],
            "stable",
        ),
        (
            "query present, header absent",
            out,
            "GET",
            "/?preview",
            vec![],
            "canary",
        ),
        (
            "query present, header present",
            out,
            "GET",
            "/?preview",
            vec![("X-Legacy", "1")],
            "stable",
        ),
        (
            "office GET from elsewhere",
            "127.0.0.4",
            "GET",
            "/",
            vec![],
            "stable",
        ),
    ];
    for (what, source, method, target, headers, group) in cases {
        let r = send(gateway.addr, source, method, target, &headers);
        assert_eq!((r.status, r.text().as_str()), (200, group), "{what}");
        assert_eq!(r.header("x-canary-group"), Some(group), "{what}");
        let origin = if group == "stable" { &stable } else { &canary };
        assert_eq!(origin.last().one("x-canary-group"), group, "{what}");
    }
}

/// The origin is told the group that served the request: the decided one, or after a
/// fallback the one that took over. A client's own `x-canary-group` is replaced, and the QA
/// override headers (with their secret) never reach the origin.
#[test]
fn the_origin_is_told_the_serving_group() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let dead = free_port();
    let section = format!(
        "{}    broken:\n      servers: [\"127.0.0.1:{dead}\"]\n      health_check: {{ type: none }}\n      fallback: stable\n\
         \x20 routing:\n    default: stable\n    rules:\n\
         \x20     - {{ name: qa, header: x-canary-group, header_secret: {QA_SECRET} }}\n\
         \x20     - {{ name: qa2, header: x-qa, header_secret: {QA_SECRET} }}\n\
         \x20     - {{ name: broken, when: {{ header: {{ name: x-try-broken, present: true }} }}, group: broken }}\n",
        groups_yaml(&[("stable", &stable), ("canary", &canary)]),
    );
    let gateway = Gateway::start(&section);

    // A spoofed group header (no secret) decides nothing and is replaced.
    let r = get(gateway.addr, "/", &[("X-Canary-Group", "canary")]);
    assert_eq!(r.text(), "stable");
    assert_eq!(stable.last().one("x-canary-group"), "stable");

    // The QA override with its secret: canary, and the origin sees the group, not the secret.
    let with_secret = format!("canary:{QA_SECRET}");
    for header in ["X-Canary-Group", "X-QA"] {
        let r = get(
            gateway.addr,
            "/",
            &[(header, &with_secret), ("X-Other", "kept")],
        );
        assert_eq!(r.text(), "canary", "{header}");
        let seen = canary.last();
        assert_eq!(seen.one("x-canary-group"), "canary", "{header}");
        assert!(seen.all("x-qa").is_empty(), "{header}: {:?}", seen.headers);
        assert_eq!(seen.one("x-other"), "kept", "other headers pass");
        assert!(
            !seen.headers.iter().any(|(_, v)| v.contains(QA_SECRET)),
            "{header}: the secret reached the origin: {:?}",
            seen.headers
        );
    }

    // Decided `broken`, served by stable after the fallback: the origin is told stable.
    for _ in 0..3 {
        let r = get(
            gateway.addr,
            "/",
            &[("X-Try-Broken", "1"), ("X-Canary-Group", "broken")],
        );
        assert_eq!((r.status, r.text().as_str()), (200, "stable"));
        assert_eq!(
            r.header("x-canary-group"),
            Some("stable; reason=fallback; from=broken")
        );
        assert_eq!(stable.last().one("x-canary-group"), "stable");
    }
}

/// `upstream_header` names another header (a client's value in it replaced), or is off (the
/// origin gets no group header; the QA header is still kept from it).
#[test]
fn upstream_header_can_be_renamed_or_turned_off() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let section = format!(
        "{}  routes:\n\
         \x20   - name: named\n      paths: [/named]\n      routing:\n        default: canary\n        upstream_header: X-Served-Group\n\
         \x20   - name: quiet\n      paths: [/quiet]\n      routing:\n        default: stable\n        upstream_header: false\n\
         \x20       rules: [{{ name: qa, header: x-canary-group }}]\n",
        groups_yaml(&[("stable", &stable), ("canary", &canary)]),
    );
    let gateway = Gateway::start(&section);
    let r = get(gateway.addr, "/named", &[("X-Served-Group", "stable")]);
    assert_eq!(r.text(), "canary");
    let seen = canary.last();
    assert_eq!(seen.one("x-served-group"), "canary");
    assert!(seen.all("x-canary-group").is_empty(), "{:?}", seen.headers);

    let r = get(gateway.addr, "/quiet", &[("X-Canary-Group", "canary")]);
    assert_eq!(r.text(), "canary", "the QA header still decides");
    let seen = canary.last();
    assert!(seen.all("x-canary-group").is_empty(), "{:?}", seen.headers);
    let r = get(gateway.addr, "/quiet", &[]);
    assert_eq!(r.text(), "stable");
    assert!(stable.last().all("x-canary-group").is_empty());
}

/// The lane rule: an internal caller (in the allowed network) that passes the group it was
/// served by keeps it — v2 of a front end reaches v2 of the API; the same header from outside
/// is ignored and replaced; a group name that is not a group falls through.
#[test]
fn the_lane_rule_believes_only_allowed_callers() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let section = format!(
        "{}  routing:\n    default: stable\n    rules:\n\
         \x20     - {{ name: lane, when: {{ header: {{ name: x-canary-group, present: true }}, client: [127.0.0.2/32] }}, from_header: x-canary-group }}\n",
        groups_yaml(&[("stable", &stable), ("canary", &canary)]),
    );
    let gateway = Gateway::start(&section);
    let lane = [("X-Canary-Group", "canary")];
    let cases = [
        (
            "internal caller in the canary lane",
            "127.0.0.2",
            &lane[..],
            "canary",
        ),
        (
            "the same header from outside",
            "127.0.0.3",
            &lane[..],
            "stable",
        ),
        (
            "an unknown group",
            "127.0.0.2",
            &[("X-Canary-Group", "v9")][..],
            "stable",
        ),
        (
            "an internal caller without a lane",
            "127.0.0.2",
            &[][..],
            "stable",
        ),
    ];
    for (what, source, headers, group) in cases {
        let r = send(gateway.addr, source, "GET", "/api", headers);
        assert_eq!((r.status, r.text().as_str()), (200, group), "{what}");
        let origin = if group == "stable" { &stable } else { &canary };
        assert_eq!(origin.last().one("x-canary-group"), group, "{what}");
    }
}

/// `GET /explain` takes headers, cookies, query, method and client address, and shows each
/// rule's conditions with their results.
#[test]
fn explain_shows_each_condition() {
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{}  routing:\n    default: stable\n{}  admin:\n    listen: \"{admin_addr}\"\n    token: \"{ADMIN_TOKEN}\"\n",
        groups_yaml(&[("stable", &stable), ("canary", &canary)]),
        conditional_rules()
    );
    let _gateway = Gateway::start(&section);
    wait_for_port(admin_addr);
    let explain = |query: &str| -> Value {
        let r = admin(
            admin_addr,
            "GET",
            &format!("/explain?{query}"),
            Some(ADMIN_TOKEN),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("json")
    };
    let e = explain(
        "header.x-app-version=4.0&cookie.beta=maybe&query.region=eu&client=127.0.0.2&method=POST",
    );
    assert_eq!(
        (
            e["group"].as_str(),
            e["rule"].as_str(),
            e["reason"].as_str()
        ),
        (Some("canary"), Some("eu"), Some("condition")),
        "{e}"
    );
    assert_eq!(e["method"], "POST");
    assert_eq!(e["client"], "127.0.0.2");
    assert_eq!(e["cookies"]["beta"], "maybe");
    assert_eq!(e["query"]["region"], "eu");
    let rule = |name: &str| -> Value {
        e["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r["rule"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("rule {name} in {e}"))
    };
    let app = rule("app-v5");
    assert_eq!(
        app["conditions"][0]["condition"],
        "header x-app-version matches \"^5\\\\.\""
    );
    assert_eq!(app["conditions"][0]["holds"], false);
    assert_eq!(app["takes"], Value::Null);
    let office = rule("office");
    assert_eq!(office["conditions"][0]["condition"], "method in GET, HEAD");
    assert_eq!(office["conditions"][0]["holds"], false, "the method failed");
    assert_eq!(office["conditions"][1]["holds"], true, "the client held");
    assert_eq!(office["conditions_hold"], false);
    let eu = rule("eu");
    assert_eq!(eu["conditions_hold"], true);
    assert_eq!(eu["takes"], "canary");
    assert_eq!(rule("everyone")["conditions"], serde_json::json!([]));

    // A GET from the office, outside the eu query, takes the office rule.
    let e = explain("client=127.0.0.2&method=GET");
    assert_eq!(e["rule"], "office", "{e}");
    // An absent header holds; the cookie opt-out comes first of all.
    let e = explain("query.preview=&cookie.beta=never");
    assert_eq!(
        (e["rule"].as_str(), e["group"].as_str()),
        (Some("opt-out"), Some("stable"))
    );
    let e = explain("query.preview=");
    assert_eq!(e["rule"], "preview", "{e}");
    // A bad cookie value is refused, naming the input.
    let r = admin(
        admin_addr,
        "GET",
        "/explain?cookie.a=x%3By",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}
