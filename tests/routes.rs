//! Routes by host and path end to end: two sites and an API behind one gateway, each route with
//! its own rules and groups; `strip_prefix` and `host_header`; no route → 404; the admin API
//! and explain per route; a single-route state file; reloads that add and remove routes while
//! wrk runs; a WebSocket on a non-root route.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN: &str = "routes-admin-token-0123456789";
const API_SEED: &str = "api-seed";
const WEB_SEED: &str = "web-seed";

struct Site {
    web_v1: Origin,
    web_v2: Origin,
    api_v1: Origin,
    api_v2: Origin,
    gateway: Gateway,
    admin: SocketAddr,
    metrics: SocketAddr,
}

/// The routes: `api` (exact hosts, `/api/`, prefix stripped), `web` (the site and any
/// subdomain), `blog` (its own host, two prefixes); no catch-all.
fn routes_yaml(api_percent: u32, web_percent: u32, with_blog: bool) -> String {
    let blog = if with_blog {
        "    - name: blog\n      hosts: [\"blog.test\"]\n      paths: [\"/\", \"/admin/\"]\n\
         \x20     routing: { default: web-v1 }\n"
    } else {
        ""
    };
    format!(
        "  routes:\n\
         \x20   - name: api\n      hosts: [\"shop.test\", \"www.shop.test\"]\n      paths: [\"/api/\"]\n\
         \x20     strip_prefix: true\n      routing:\n        default: api-v1\n        rules:\n\
         \x20         - {{ name: rollout, percent: {api_percent}, seed: {API_SEED}, group: api-v2 }}\n\
         \x20   - name: web\n      hosts: [\"shop.test\", \"*.shop.test\"]\n      routing:\n\
         \x20       default: web-v1\n        rules:\n\
         \x20         - {{ name: vip, users: [\"alice\"], group: web-v1 }}\n\
         \x20         - {{ name: rollout, percent: {web_percent}, seed: {WEB_SEED}, group: web-v2 }}\n\
         {blog}"
    )
}

fn section(site: &[&Origin; 4], admin: SocketAddr, metrics: SocketAddr, routes: &str) -> String {
    format!(
        "  groups:\n\
         \x20   web-v1: {{ servers: [\"{}\"] }}\n\
         \x20   web-v2: {{ servers: [\"{}\"] }}\n\
         \x20   api-v1: {{ servers: [\"{}\"], host_header: server }}\n\
         \x20   api-v2: {{ servers: [\"{}\"], host_header: \"api.internal\" }}\n\
         {routes}\
         \x20 admin: {{ listen: \"{admin}\", token: \"{TOKEN}\", state_file: state.json }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n",
        site[0].addr, site[1].addr, site[2].addr, site[3].addr
    )
}

fn start(api_percent: u32, web_percent: u32) -> Site {
    let (web_v1, web_v2) = (Origin::start("web-v1"), Origin::start("web-v2"));
    let (api_v1, api_v2) = (Origin::start("api-v1"), Origin::start("api-v2"));
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let routes = routes_yaml(api_percent, web_percent, true);
    let gateway = Gateway::start(&section(
        &[&web_v1, &web_v2, &api_v1, &api_v2],
        admin,
        metrics,
        &routes,
    ));
    Site {
        web_v1,
        web_v2,
        api_v1,
        api_v2,
        gateway,
        admin,
        metrics,
    }
}

impl Site {
    /// The body (origin name) and decision header for a user on host and path.
    fn served(&self, host: &str, path: &str, user: &str) -> (u16, String, String) {
        let cookie = format!("canary_user={user}");
        let r = get_host(self.gateway.addr, host, path, &[("Cookie", &cookie)]);
        let decision = r.header("x-canary-group").unwrap_or("").to_string();
        (r.status, r.text(), decision)
    }

    fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let r = admin(self.admin, method, path, Some(TOKEN), body);
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }
}

/// Each (host, path) goes to its route, whose own rules pick the group; the prefix is stripped
/// for the API; each group's `host_header` is applied.
#[test]
fn requests_go_to_their_route() {
    let s = start(100, 0);
    let user = rollout_user(WEB_SEED, 50.0, true);
    // (what, host, path, served by)
    let cases = [
        (
            "exact host, API prefix",
            "shop.test",
            "/api/items",
            "api-v2",
        ),
        ("second exact host", "www.shop.test", "/api/items", "api-v2"),
        (
            "exact host, the rest of the site",
            "shop.test",
            "/cart",
            "web-v1",
        ),
        ("a subdomain by the wildcard", "m.shop.test", "/", "web-v1"),
        (
            "a deeper subdomain",
            "a.b.shop.test",
            "/api/items",
            "web-v1",
        ),
        (
            "port and case ignored",
            "SHOP.test:8080",
            "/api/x",
            "api-v2",
        ),
        ("the blog's own host", "blog.test", "/admin/users", "web-v1"),
        (
            "dot segments resolved before matching",
            "shop.test",
            "/cart/../api/x",
            "api-v2",
        ),
    ];
    for (what, host, path, group) in cases {
        let (status, body, decision) = s.served(host, path, &user);
        assert_eq!((status, body.as_str()), (200, group), "{what}");
        assert_eq!(decision, group, "{what}");
    }
    // strip_prefix: the API origin got the path without /api.
    s.served("shop.test", "/api/items?page=2", &user);
    assert_eq!(s.api_v2.last().path, "/items?page=2");
    // host_header: api-v2 has a fixed name; web keeps the client's host.
    assert_eq!(s.api_v2.last().one("host"), "api.internal");
    s.served("shop.test", "/cart", &user);
    assert_eq!(s.web_v1.last().one("host"), "shop.test");
    // host_header: server gives api-v1's own address.
    let r = s.admin(
        "PUT",
        "/routes/api/rules/rollout/percent",
        Some(r#"{"percent": 0}"#),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    s.served("shop.test", "/api/x", &user);
    assert_eq!(s.api_v1.last().one("host"), s.api_v1.addr.to_string());
    assert_eq!(s.api_v1.last().path, "/x");
}

/// A request no route claims gets 404, reaches no origin and is counted as route "none"; a
/// path climbing above / is 400.
#[test]
fn unrouted_requests_get_404() {
    let s = start(0, 0);
    let before = s.web_v1.count() + s.web_v2.count() + s.api_v1.count() + s.api_v2.count();
    let r = get_host(s.gateway.addr, "other.test", "/", &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().starts_with("404"), "{}", r.text());
    assert!(r.header("x-request-id").is_some());
    let r = get_host(s.gateway.addr, "shop.test", "/../etc/passwd", &[]);
    assert_eq!(r.status, 400);
    let after = s.web_v1.count() + s.web_v2.count() + s.api_v1.count() + s.api_v2.count();
    assert_eq!(after, before, "no origin reached");
    // Counted when the request is logged, just after its answer was sent: wait for it.
    let series = "gateway_requests_total{group=\"\",route=\"none\",rule=\"\",status=\"404\"}";
    let count = || metric_value(&get(s.metrics, "/metrics", &[]).text(), series);
    wait_until("the 404 is counted", READY_TIMEOUT, || count() >= 1.0);
    assert_eq!(count(), 1.0, "counted once");
}

/// Each route's rules are its own: a percentage, a rollback and a promote on one route leave
/// the others alone; the global switch covers every route; explain and status know the routes.
#[test]
fn admin_api_per_route() {
    let s = start(0, 0);
    let user = rollout_user(WEB_SEED, 30.0, true);
    let served = |host, path| s.served(host, path, &user).1;
    assert_eq!(served("shop.test", "/"), "web-v1");
    let (code, body) = s.admin(
        "PUT",
        "/routes/web/rules/rollout/percent",
        Some(r#"{"percent": 30}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(served("shop.test", "/"), "web-v2");
    assert_eq!(
        served("shop.test", "/api/x"),
        "api-v1",
        "the api route is untouched"
    );
    // With several routes the single-route path is ambiguous.
    let (code, body) = s.admin("PUT", "/rules/rollout/percent", Some(r#"{"percent": 5}"#));
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("routes"),
        "{body}"
    );
    let (code, _) = s.admin(
        "PUT",
        "/routes/nope/rules/rollout/percent",
        Some(r#"{"percent": 5}"#),
    );
    assert_eq!(code, 404);
    // A route's own rollback and promote.
    assert_eq!(s.admin("POST", "/routes/web/rollback", None).0, 200);
    assert_eq!(served("shop.test", "/"), "web-v1");
    assert_eq!(
        s.admin(
            "POST",
            "/routes/api/promote",
            Some(r#"{"group": "api-v2"}"#)
        )
        .0,
        200
    );
    assert_eq!(served("shop.test", "/api/x"), "api-v2");
    // The global switch wins, and resuming clears every route's own override.
    assert_eq!(s.admin("POST", "/rollback", None).0, 200);
    assert_eq!(served("shop.test", "/api/x"), "api-v1");
    assert_eq!(s.admin("POST", "/resume", None).0, 200);
    assert_eq!(
        served("shop.test", "/api/x"),
        "api-v1",
        "api's promote cleared"
    );
    assert_eq!(
        served("shop.test", "/"),
        "web-v2",
        "web's rollback cleared, 30% again"
    );
    // Users per route.
    let (code, body) = s.admin(
        "POST",
        "/routes/web/rules/vip/users",
        Some(&format!(r#"{{"add": ["{user}"]}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(served("shop.test", "/"), "web-v1", "on the VIP list now");
    // Explain answers the route too.
    let (code, e) = s.admin(
        "GET",
        &format!("/explain?host=shop.test&path=/api/x&user={user}"),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(
        (e["route"].as_str(), e["group"].as_str()),
        (Some("api"), Some("api-v1"))
    );
    let (_, e) = s.admin(
        "GET",
        &format!("/explain?host=m.shop.test&path=/&user={user}"),
        None,
    );
    assert_eq!(
        (e["route"].as_str(), e["rule"].as_str()),
        (Some("web"), Some("vip"))
    );
    let (_, e) = s.admin("GET", "/explain?host=nowhere.test&path=/", None);
    assert_eq!(
        (e["route"].clone(), e["reason"].as_str()),
        (Value::Null, Some("no_route"))
    );
    // Status lists the routes with their rules and sources.
    let (_, status) = s.admin("GET", "/status", None);
    let routes = status["routes"].as_array().expect("routes");
    let names: Vec<&str> = routes.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["api", "web", "blog"]);
    assert_eq!(routes[1]["rules"][1]["percent_source"], "api");
    assert_eq!(routes[1]["rules"][0]["api_added"], 1);
    assert_eq!(routes[0]["strip_prefix"], true);
    // The state file keys the changes by route.
    let state: Value = serde_json::from_slice(
        &std::fs::read(s.gateway.dir.path().join("state.json")).expect("state file"),
    )
    .expect("json");
    assert_eq!(state["routes"]["web"]["percent"]["rollout"], 30.0);
    // Metrics carry the route.
    let text = get(s.metrics, "/metrics", &[]).text();
    assert!(
        text.contains("route=\"api\"") && text.contains("route=\"web\""),
        "{text}"
    );
}

/// A single-route config keeps working with a state file written before routes existed.
#[test]
fn a_single_route_state_file_still_loads() {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let dir = TempDir::new("routes-compat");
    std::fs::write(
        dir.path().join("state.json"),
        r#"{"mode": "rules", "percent": {"rollout": 100.0}, "users": {}}"#,
    )
    .expect("old state file");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config = format!(
        "version: 1\nthreads: 1\npid_file: {d}/gw.pid\nupgrade_sock: {d}/up.sock\n\
         gateway:\n  listen: [\"{addr}\"]\n{groups}\
         \x20 routing:\n    default: stable\n    rules:\n\
         \x20     - {{ name: rollout, percent: 0, group: canary }}\n\
         \x20 admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\", state_file: state.json }}\n",
        d = dir.path().display(),
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)])
    );
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config).expect("config");
    let gateway = Gateway::start_with_file(dir, path, addr);
    let r = get(gateway.addr, "/", &[("Cookie", "canary_user=anyone")]);
    assert_eq!(
        r.text(),
        "canary",
        "the old file's 100% applies to route default"
    );
    let r = admin(
        admin_addr,
        "PUT",
        "/rules/rollout/percent",
        Some(TOKEN),
        Some(r#"{"percent": 0}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(gateway.addr, "/", &[("Cookie", "canary_user=anyone")]);
    assert_eq!(r.text(), "stable");
}

/// Reloads that add and remove a route while wrk keeps requesting two other routes: no
/// request fails, and each reload's routes apply to new requests.
#[test]
fn reloads_add_and_remove_routes_under_wrk() {
    let s = start(0, 0);
    let wrk = |path: &'static str| {
        let url = format!("http://{}{path}", s.gateway.addr);
        thread::spawn(move || run_wrk(&["-t1", "-c8", "-d3s", "-H", "Host: shop.test", &url]))
    };
    let (web, api) = (wrk("/"), wrk("/api/x"));
    // The reloads happen under load: wait until both runs' requests arrive.
    wait_until("both wrk runs reach their origins", READY_TIMEOUT, || {
        s.web_v1.count() > 0 && s.api_v1.count() > 0
    });
    let config = std::fs::read_to_string(&s.gateway.config_path).expect("config");
    for round in 0..6 {
        let with_blog = round % 2 == 1;
        let new = config.replace(&routes_yaml(0, 0, true), &routes_yaml(0, 0, with_blog));
        std::fs::write(&s.gateway.config_path, new).expect("write");
        let (code, body) = s.admin("POST", "/reload", None);
        assert_eq!(code, 200, "{body}");
        let blog = get_host(s.gateway.addr, "blog.test", "/", &[]).status;
        assert_eq!(blog, if with_blog { 200 } else { 404 }, "round {round}");
        // Spread the reloads over wrk's run.
        thread::sleep(Duration::from_millis(300));
    }
    for (what, out) in [("web", web), ("api", api)] {
        let (requests, text) = out.join().expect("wrk thread");
        // Traffic flowed; how much fits in the run depends on the machine's load, so the
        // checks are that none of it failed.
        assert!(requests > 0, "{what}: {text}");
        assert!(!text.contains("Non-2xx"), "{what}: {text}");
        assert!(!text.contains("Socket errors"), "{what}: {text}");
    }
    assert!(s.web_v1.count() > 0 && s.api_v1.count() > 0);
}

/// A WebSocket on a route of its own (not `/`), with the prefix stripped, beside other routes.
#[test]
fn websocket_on_a_non_root_route() {
    let (ws_addr, server) = websocket_echo_origin(2);
    let site = Origin::start("site");
    let section = format!(
        "  groups:\n    site: {{ servers: [\"{}\"] }}\n    ws: {{ servers: [\"{ws_addr}\"] }}\n\
         \x20 routes:\n\
         \x20   - name: sockets\n      paths: [\"/socket\"]\n      routing: {{ default: ws }}\n\
         \x20   - name: site\n      routing: {{ default: site }}\n",
        site.addr
    );
    let gateway = Gateway::start(&section);
    let (mut ws, response) = websocket_client(gateway.addr, "canary_user=u");
    assert_eq!(response.headers()["x-canary-group"], "ws");
    websocket_echo_rounds(&mut ws, 0..2);
    ws.close(None).ok();
    server.join().expect("ws origin");
    assert_eq!(get(gateway.addr, "/other", &[]).text(), "site");
}
