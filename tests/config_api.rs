//! End-to-end tests of configuration through the admin API (issue 27 §1): routes and groups
//! created, edited and deleted with `PUT`/`DELETE /config/...` and served at once — real
//! gateway processes, real TCP origins, a real `redis-server` for the two-node case. The file
//! stays the base: a write that names one of its objects is 409, an invalid one 422 naming the
//! key, and a reload or `-t` whose file collides with an API object is refused naming both.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use serde_json::Value;

const ADMIN: &str = "config-admin-token-0123456789";
const OPERATOR: &str = "config-operator-token-0123456789";
const VIEWER: &str = "config-viewer-token-0123456789";

const SHOP_HOST: &str = "shop.example.com";

/// A gateway whose file has one routing block to `stable`, with admin, operator and viewer
/// tokens, its state file at `state_file` and, given a port, the Redis store.
struct Node {
    gateway: Gateway,
    admin: SocketAddr,
}

fn start(stable: &Origin, state_file: &Path, redis_port: Option<u16>) -> Node {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let store = redis_port
        .map(|port| store_line(port, "cfg:"))
        .unwrap_or_default();
    let section = format!(
        "{groups}  routing:\n    default: stable\n{store}\
         \x20 admin:\n    listen: \"{admin}\"\n    token: \"{ADMIN}\"\n    state_file: \"{state}\"\n\
         \x20   tokens:\n\
         \x20     - {{ name: ops, token: \"{OPERATOR}\", role: operator }}\n\
         \x20     - {{ name: look, token: \"{VIEWER}\", role: viewer }}\n",
        groups = groups_yaml(&[("stable", stable)]),
        state = state_file.display(),
    );
    Node {
        gateway: Gateway::start(&section),
        admin,
    }
}

impl Node {
    /// An admin call with `token`: the status and the JSON answer (`Null` when not JSON).
    fn call_as(&self, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let r = admin(self.admin, method, path, Some(token), body);
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call_as(ADMIN, method, path, body)
    }

    /// A write that must succeed.
    fn write(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let (status, answer) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    }

    /// `GET /config` (YAML).
    fn config(&self) -> String {
        let r = admin(self.admin, "GET", "/config", Some(VIEWER), None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    fn status(&self) -> Value {
        self.call_as(VIEWER, "GET", "/status", None).1
    }

    /// `GET /` with `Host: host`: status, body, decision header.
    fn get(&self, host: &str) -> (u16, String, String) {
        let r = get_host(self.gateway.addr, host, "/", &[]);
        let group = r.header("x-canary-group").unwrap_or_default().to_string();
        (r.status, r.text(), group)
    }
}

/// A group of one server, as JSON.
fn group_body(origin: &Origin) -> String {
    format!(
        r#"{{"servers": ["{}"], "health_check": {{"type": "none"}}}}"#,
        origin.addr
    )
}

/// The route `shop` for `shop.example.com` to `group`, as JSON.
fn route_body(group: &str) -> String {
    format!(r#"{{"hosts": ["{SHOP_HOST}"], "routing": {{"default": "{group}"}}}}"#)
}

/// Create a route and its group, send requests through it, point it at another group, delete
/// it: each change is served by the next request, and `/config` shows the merged file.
#[test]
fn a_route_and_group_made_through_the_api_are_served_edited_and_deleted() {
    let stable = Origin::start("stable");
    let (shop_a, shop_b) = (Origin::start("shop-a"), Origin::start("shop-b"));
    let dir = TempDir::new("cfg-crud");
    let node = start(&stable, &dir.path().join("state.json"), None);
    assert_eq!(
        node.get(SHOP_HOST).1,
        "stable",
        "the file's one route first"
    );

    node.write("PUT", "/config/groups/shop", Some(&group_body(&shop_a)));
    let created = node.write("PUT", "/config/routes/shop", Some(&route_body("shop")));
    assert_eq!(created["ok"], true);
    let (status, body, group) = node.get(SHOP_HOST);
    assert_eq!(
        (status, body.as_str(), group.as_str()),
        (200, "shop-a", "shop")
    );
    assert_eq!(shop_a.last().one("host"), SHOP_HOST);
    assert_eq!(
        node.get("other.example.com").1,
        "stable",
        "other hosts keep the file's route"
    );

    // Where each object comes from.
    let (_, route) = node.call_as(VIEWER, "GET", "/config/routes/shop", None);
    assert_eq!(route["source"], "api", "{route}");
    assert_eq!(route["route"]["hosts"][0], SHOP_HOST);
    let (_, default) = node.call_as(VIEWER, "GET", "/config/routes/default", None);
    assert_eq!(default["source"], "file", "{default}");
    let (_, groups) = node.call_as(VIEWER, "GET", "/config/groups", None);
    let sources: Vec<(String, String)> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap_or_default().into(),
                g["source"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("shop".into(), "api".into()),
            ("stable".into(), "file".into())
        ]
    );
    // The merged configuration, ready to paste: the routing block became the route `default`.
    let yaml = node.config();
    assert!(
        yaml.contains("name: shop") && yaml.contains(SHOP_HOST),
        "{yaml}"
    );
    assert!(yaml.contains("name: default"), "{yaml}");
    assert!(!yaml.contains(ADMIN), "the token is redacted:\n{yaml}");
    // Pasted into a file (the redacted tokens put back, in file order; no state file), `-t`
    // accepts it.
    let pasted_text: String = yaml
        .replacen("<redacted>", ADMIN, 1)
        .replacen("<redacted>", OPERATOR, 1)
        .replacen("<redacted>", VIEWER, 1)
        .lines()
        .filter(|l| !l.contains("state_file:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let pasted = dir.path().join("pasted.yaml");
    std::fs::write(&pasted, pasted_text).expect("write");
    let checked = run_binary(&["-t", "-c", pasted.to_str().expect("utf-8")]);
    assert!(
        checked.status.success(),
        "the pasted configuration: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // Edit: point the route at another group and origin.
    node.write("PUT", "/config/groups/shop-b", Some(&group_body(&shop_b)));
    node.write("PUT", "/config/routes/shop", Some(&route_body("shop-b")));
    let (_, body, group) = node.get(SHOP_HOST);
    assert_eq!((body.as_str(), group.as_str()), ("shop-b", "shop-b"));

    // Delete: the host falls back to the file's route; the groups can go once unused.
    node.write("DELETE", "/config/routes/shop", None);
    assert_eq!(node.get(SHOP_HOST).1, "stable");
    node.write("DELETE", "/config/groups/shop", None);
    node.write("DELETE", "/config/groups/shop-b", None);
    let (status, answer) = node.call("DELETE", "/config/groups/shop", None);
    assert_eq!(status, 404, "{answer}");
    let (status, _) = node.call("GET", "/config/routes/shop", None);
    assert_eq!(status, 404);

    // Every write was one audited change.
    let (_, audit) = node.call_as(VIEWER, "GET", "/audit", None);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "group_delete",
            "group_delete",
            "route_delete",
            "route_put",
            "group_put",
            "route_put",
            "group_put"
        ],
        "{audit}"
    );
    let edit = &audit["entries"][3];
    assert_eq!(
        edit["before"],
        "hosts shop.example.com, paths /, default group shop, 0 rule(s)"
    );
    assert_eq!(
        edit["after"],
        "hosts shop.example.com, paths /, default group shop-b, 0 rule(s)"
    );
    let first = &audit["entries"][6];
    assert_eq!(first["actor"], "admin");
    assert!(
        first["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("group shop created: servers 127.0.0.1:")),
        "{first}"
    );
}

/// A name the file defines is 409 naming the file; a write that does not validate is 422
/// naming the key, and changes nothing.
#[test]
fn file_objects_are_409_and_invalid_writes_422() {
    let stable = Origin::start("stable");
    let dir = TempDir::new("cfg-refused");
    let node = start(&stable, &dir.path().join("state.json"), None);
    let file = node.gateway.config_path.display().to_string();
    for (method, path, body) in [
        ("PUT", "/config/groups/stable", Some(group_body(&stable))),
        ("DELETE", "/config/groups/stable", None),
        ("PUT", "/config/routes/default", Some(route_body("stable"))),
        ("DELETE", "/config/routes/default", None),
    ] {
        let (status, answer) = node.call(method, path, body.as_deref());
        assert_eq!(status, 409, "{method} {path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(&file) && message.contains("change it there"),
            "{message}"
        );
    }

    let before = (node.config(), node.status()["control"]["version"].clone());
    let refused = |path: &str, body: &str, field: &str, says: &str| {
        let (status, answer) = node.call("PUT", path, Some(body));
        assert_eq!(status, 422, "{path} {body}: {answer}");
        assert_eq!(answer["field"], field, "{answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    };
    refused(
        "/config/routes/shop",
        &route_body("nope"),
        "routes.shop.routing.default",
        "\"nope\" is not a group",
    );
    refused(
        "/config/routes/shop",
        r#"{"hosts": ["shop.example.com"], "routing": {"defualt": "stable"}}"#,
        "routes.shop.routing.defualt",
        "unknown field `defualt`",
    );
    refused(
        "/config/routes/shop",
        r#"{"name": "other", "routing": {"default": "stable"}}"#,
        "routes.shop.name",
        "not the path's route name",
    );
    refused(
        "/config/groups/shop",
        r#"{"servers": ["not an address"]}"#,
        "groups.shop.servers[0]",
        "not an address",
    );
    refused(
        "/config/routes/shop",
        r#"{"paths": ["/"], "routing": {"default": "stable"}}"#,
        "routes.shop",
        "also claimed by route \"default\"",
    );
    // An API object may not name a file on the gateway nor read its environment.
    refused(
        "/config/routes/x",
        r#"{"hosts": ["x.example"], "error_pages": {"404": "/etc/canary/state.json"}, "intercept_errors": true, "routing": {"default": "stable"}}"#,
        "routes.x.error_pages.404",
        "routes.x.error_pages.404: an object written through the API cannot name a file on the gateway; set it in the configuration file",
    );
    refused(
        "/config/routes/x",
        r#"{"hosts": ["x.example"], "routing": {"default": "stable", "signing_key_env": "PATH"}}"#,
        "routes.x.routing.signing_key_env",
        "cannot read the gateway's environment",
    );
    refused(
        "/config/groups/x",
        r#"{"servers": ["127.0.0.1:1"], "tls": {"ca": "/etc/ssl/certs/ca-certificates.crt"}}"#,
        "groups.x.tls.ca",
        "cannot name a file on the gateway",
    );
    let (status, answer) = node.call("PUT", "/config/routes/shop", Some("{\"hosts\": "));
    assert_eq!(status, 400, "malformed JSON: {answer}");
    assert_eq!(
        (node.config(), node.status()["control"]["version"].clone()),
        before,
        "nothing changed"
    );

    // A group still used by a route cannot go: 422 naming the route.
    node.write("PUT", "/config/groups/shop", Some(&group_body(&stable)));
    node.write("PUT", "/config/routes/shop", Some(&route_body("shop")));
    let (status, answer) = node.call("DELETE", "/config/groups/shop", None);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "routes.shop.routing.default", "{answer}");
    assert!(node.config().contains("shop:"), "the group stays");
    let (status, _) = node.call("DELETE", "/config/routes/nothing", None);
    assert_eq!(status, 404);
}

/// Viewer and operator tokens cannot write the configuration (403), known path or not; an
/// admin can; everyone can read it.
#[test]
fn only_an_admin_writes_the_configuration() {
    let stable = Origin::start("stable");
    let dir = TempDir::new("cfg-roles");
    let node = start(&stable, &dir.path().join("state.json"), None);
    let body = group_body(&stable);
    for token in [VIEWER, OPERATOR] {
        for (method, path) in [
            ("PUT", "/config/groups/spare"),
            ("DELETE", "/config/groups/spare"),
            ("PUT", "/config/routes/spare"),
            ("DELETE", "/config/routes/spare"),
            ("POST", "/config/nothing/here"),
        ] {
            let (status, answer) = node.call_as(token, method, path, Some(&body));
            assert_eq!(status, 403, "{token} {method} {path}: {answer}");
        }
        let (status, _) = node.call_as(token, "GET", "/config/groups", None);
        assert_eq!(status, 200);
    }
    assert!(!node.config().contains("spare"), "nothing was written");
    node.write("PUT", "/config/groups/spare", Some(&body));
    assert!(node.config().contains("spare:"));
}

/// An open websocket through the gateway stays open while a route is created: the state swap
/// keeps requests in flight on their snapshot.
#[test]
fn an_open_websocket_survives_a_route_create() {
    let (ws_origin, origin_done) = websocket_echo_origin(4);
    let stable = Origin::start("stable");
    let shop = Origin::start("shop");
    let dir = TempDir::new("cfg-ws");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "  groups:\n    ws: {{ servers: [\"{ws_origin}\"], health_check: {{ type: none }} }}\n\
         \x20   stable: {{ servers: [\"{}\"] }}\n\
         \x20 routing:\n    default: ws\n\
         \x20 admin: {{ listen: \"{admin_addr}\", token: \"{ADMIN}\", state_file: \"{}\" }}\n",
        stable.addr,
        dir.path().join("state.json").display()
    );
    let gateway = Gateway::start(&section);
    let node = Node {
        gateway,
        admin: admin_addr,
    };
    let (mut ws, response) = websocket_client(node.gateway.addr, "canary_user=alice");
    assert_eq!(response.status(), 101);
    websocket_echo_rounds(&mut ws, 0..2);
    node.write("PUT", "/config/groups/shop", Some(&group_body(&shop)));
    node.write("PUT", "/config/routes/shop", Some(&route_body("shop")));
    assert_eq!(node.get(SHOP_HOST).1, "shop", "the new route serves");
    websocket_echo_rounds(&mut ws, 2..4);
    let push = ws.read().expect("the origin's push");
    assert_eq!(push.to_text().expect("text"), "server push");
    ws.close(None).ok();
    origin_done.join().expect("origin");
}

/// Without a store, the state file keeps every API object across a restart; a reload whose
/// file now defines an API object's name is refused naming both, and so is `-t`.
#[test]
fn api_objects_survive_a_restart_and_collisions_are_refused() {
    let stable = Origin::start("stable");
    let shop = Origin::start("shop");
    let dir = TempDir::new("cfg-restart");
    let state_file = dir.path().join("state.json");
    let node = start(&stable, &state_file, None);
    node.write("PUT", "/config/groups/shop", Some(&group_body(&shop)));
    node.write("PUT", "/config/routes/shop", Some(&route_body("shop")));
    let objects = |node: &Node| {
        let routes = node.call("GET", "/config/routes", None).1;
        let groups = node.call("GET", "/config/groups", None).1;
        (routes, groups)
    };
    let before = objects(&node);
    drop(node);

    let node = start(&stable, &state_file, None);
    assert_eq!(node.get(SHOP_HOST).1, "shop", "the route is back");
    assert_eq!(objects(&node), before, "the same routes and groups");
    let (_, group) = node.call("GET", "/config/groups/shop", None);
    assert_eq!(group["source"], "api");

    // The file now defines a group named as the API's: reload is refused, naming both.
    let path = node.gateway.config_path.clone();
    let text = std::fs::read_to_string(&path).expect("read");
    let colliding = text.replacen(
        "  groups:\n",
        &format!(
            "  groups:\n    shop: {{ servers: [\"{}\"] }}\n",
            stable.addr
        ),
        1,
    );
    std::fs::write(&path, &colliding).expect("write");
    node.gateway.signal("HUP");
    wait_until("the reload is refused", READY_TIMEOUT, || {
        node.status()["last_reload"]["ok"] == false
    });
    let error = node.status()["last_reload"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("gateway.groups.shop") && error.contains("groups.shop in the control state"),
        "{error}"
    );
    assert_eq!(
        node.get(SHOP_HOST).1,
        "shop",
        "the running configuration stays"
    );
    let (status, answer) = node.call("POST", "/reload", None);
    assert_eq!(status, 400, "{answer}");

    // `-t` reads the state file and refuses the same file, naming both.
    let checked = run_binary(&["-t", "-c", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success(), "-t accepted a colliding file");
    assert!(
        stderr.contains("gateway.groups.shop")
            && stderr.contains("groups.shop in the control state"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&state_file.display().to_string()),
        "{stderr}"
    );
    // Back to the original file: `-t` says the API's objects fit it.
    std::fs::write(&path, &text).expect("write");
    let checked = run_binary(&["-t", "-c", path.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{stdout}");
    assert!(
        stdout.contains("2 route(s) and group(s) made through the admin API"),
        "{stdout}"
    );
}

/// An API route and group move into the file without a request going elsewhere: the merged
/// configuration (`GET /config`) pasted as the file is taken over by a reload (the file now
/// defines both exactly as the API does), then the API's copies are deleted.
#[test]
fn an_api_object_moves_into_the_file_without_a_gap() {
    let stable = Origin::start("stable");
    let shop = Origin::start("shop");
    let dir = TempDir::new("cfg-move");
    let node = start(&stable, &dir.path().join("state.json"), None);
    node.write("PUT", "/config/groups/shop", Some(&group_body(&shop)));
    node.write("PUT", "/config/routes/shop", Some(&route_body("shop")));
    let pasted = node
        .config()
        .replacen("<redacted>", ADMIN, 1)
        .replacen("<redacted>", OPERATOR, 1)
        .replacen("<redacted>", VIEWER, 1);

    // Requests to the route all along: every one is served by `shop`.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let sender = {
        let (stop, sent, addr) = (stop.clone(), sent.clone(), node.gateway.addr);
        std::thread::spawn(move || {
            let mut served = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                served.push(get_host(addr, SHOP_HOST, "/", &[]).text());
                sent.fetch_add(1, Ordering::Relaxed);
            }
            served
        })
    };
    // Some requests before each step, so that each runs among them.
    let some_more = |what: &str| {
        let from = sent.load(Ordering::Relaxed);
        wait_until(what, READY_TIMEOUT, || {
            sent.load(Ordering::Relaxed) >= from + 20
        });
    };
    some_more("requests before the reload");
    std::fs::write(&node.gateway.config_path, &pasted).expect("write");
    node.gateway.signal("HUP");
    wait_until("the reload", READY_TIMEOUT, || {
        !node.status()["last_reload"].is_null()
    });
    assert_eq!(
        node.status()["last_reload"]["ok"],
        true,
        "{}",
        node.status()
    );
    for path in ["/config/routes/shop", "/config/groups/shop"] {
        let (_, object) = node.call("GET", path, None);
        assert_eq!(object["source"], "file", "{object}");
        assert_eq!(object["served"], true, "{object}");
    }
    some_more("requests after the reload");
    node.write("DELETE", "/config/routes/shop", None);
    node.write("DELETE", "/config/groups/shop", None);
    some_more("requests after the deletes");
    stop.store(true, Ordering::Relaxed);
    let served = sender.join().expect("sender");
    assert!(!served.is_empty());
    assert!(
        served.iter().all(|body| body == "shop"),
        "{} requests, not all to shop: {:?}",
        served.len(),
        served
            .iter()
            .filter(|b| *b != "shop")
            .take(3)
            .collect::<Vec<_>>()
    );
    println!(
        "moved into the file: {} requests during the move, all served by shop",
        served.len()
    );
    let (_, route) = node.call("GET", "/config/routes/shop", None);
    assert_eq!(route["source"], "file", "{route}");
}

/// Two nodes sharing Redis: a route created on one serves on the other; a node restarted
/// without its state file gets every API object back from Redis.
#[test]
fn a_route_created_on_one_node_serves_on_the_other() {
    let stable = Origin::start("stable");
    let shop = Origin::start("shop");
    let dir = TempDir::new("cfg-store");
    let redis = Redis::start(dir.path(), free_port());
    let a = start(&stable, &dir.path().join("a.json"), Some(redis.port));
    let b = start(&stable, &dir.path().join("b.json"), Some(redis.port));
    wait_store_connected(&[a.admin, b.admin], VIEWER);
    a.write("PUT", "/config/groups/shop", Some(&group_body(&shop)));
    a.write("PUT", "/config/routes/shop", Some(&route_body("shop")));
    let took = wait_until("node b serves the new route", READY_TIMEOUT, || {
        b.get(SHOP_HOST).1 == "shop"
    });
    println!("route created on node a: served by node b {took:?} after node a answered the PUT");
    let (_, route) = b.call("GET", "/config/routes/shop", None);
    assert_eq!(route["source"], "api");

    // Node b restarts without its state file: Redis gives it the objects back.
    drop(b);
    std::fs::remove_file(dir.path().join("b.json")).expect("b's state file");
    let b = start(&stable, &dir.path().join("b.json"), Some(redis.port));
    let took = wait_until("restarted node b serves the route", READY_TIMEOUT, || {
        b.get(SHOP_HOST).1 == "shop"
    });
    println!("restarted node b served the API's route after {took:?}");
    let routes = |node: &Node| node.call("GET", "/config/routes", None).1;
    assert_eq!(routes(&b), routes(&a), "the same routes on both nodes");
    // A delete on b reaches a.
    b.write("DELETE", "/config/routes/shop", None);
    wait_until("node a drops the route", READY_TIMEOUT, || {
        a.get(SHOP_HOST).1 == "stable"
    });
}
