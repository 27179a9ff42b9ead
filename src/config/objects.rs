//! Configuration objects written through the admin API — routes and groups in the file's own
//! shape — and their merge over the file's gateway section. The file stays the base; an object
//! may only add a name the file does not define (a name both define is refused, naming both,
//! unless the file's definition is the API object's exactly: it was moved into the file, and
//! the file's serves).
//! The merged section is validated by the one validation path (`GatewaySpec::validate`, what
//! `-t` runs), and its errors name the API object (`routes.shop.routing.default`) rather than
//! the merged section's index (`gateway.routes[3].routing.default`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::parse::check_token;
use super::rules::RuleKindSpec;
use super::spec::{GatewaySpec, GroupSpec, RouteSpec};
use super::{ConfigError, GatewayConfig, DEFAULT_ROUTE};

/// The routes and groups made through the admin API, by name (the control state's `config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigObjects {
    /// Routes by name; each one's `name` is its key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, RouteSpec>,
    /// Groups by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupSpec>,
}

impl ConfigObjects {
    /// Whether there is no object at all (the merged section is then the file's own).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.groups.is_empty()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.routes.len() + self.groups.len()
    }
}

/// The two kinds of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Route,
    Group,
}

impl ObjectKind {
    /// `route` / `group`, for messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Route => "route",
            ObjectKind::Group => "group",
        }
    }

    /// `routes` / `groups`: the API path's segment and the first part of an object's keys.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            ObjectKind::Route => "routes",
            ObjectKind::Group => "groups",
        }
    }
}

/// The file's key that defines `name` of `kind`, if the file defines it: `gateway.routes[2]`,
/// `gateway.routing` (the one route `default` of a file without `routes`), `gateway.groups.web`.
pub(crate) fn file_key(file: &GatewaySpec, kind: ObjectKind, name: &str) -> Option<String> {
    match kind {
        ObjectKind::Group => file
            .groups
            .contains_key(name)
            .then(|| format!("gateway.groups.{name}")),
        ObjectKind::Route => match (&file.routes, &file.routing) {
            (Some(routes), _) => routes
                .iter()
                .position(|r| r.name == name)
                .map(|i| format!("gateway.routes[{i}]")),
            (None, Some(_)) => (name == DEFAULT_ROUTE).then(|| "gateway.routing".to_string()),
            (None, None) => None,
        },
    }
}

/// The names the file defines for `kind`, in file order.
pub(crate) fn file_names(file: &GatewaySpec, kind: ObjectKind) -> Vec<String> {
    match kind {
        ObjectKind::Group => file.groups.keys().cloned().collect(),
        ObjectKind::Route => match (&file.routes, &file.routing) {
            (Some(routes), _) => routes.iter().map(|r| r.name.clone()).collect(),
            (None, Some(_)) => vec![DEFAULT_ROUTE.to_string()],
            (None, None) => Vec::new(),
        },
    }
}

/// The error of an object the API was given a name for: `routes.shop` (with `rest` after it).
fn object_error(kind: ObjectKind, name: &str, rest: &str, message: String) -> ConfigError {
    ConfigError {
        file: String::new(),
        key: format!("{}.{name}{rest}", kind.plural()),
        message,
    }
}

/// What an object written through the API may not name: something of the gateway's host
/// rather than of the object itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostRef {
    /// A file on the gateway's disk (an error page, a users or keys file, a TLS file): an
    /// API object could otherwise serve any file the process can read, or block on one.
    File,
    /// An environment variable of the gateway's process (`*_env`): an API object could
    /// otherwise turn any of them (the admin token's) into a key, or probe which are set.
    Env,
}

impl HostRef {
    /// Why the key is refused, as the 422 says it.
    fn message(self) -> String {
        match self {
            HostRef::File => "an object written through the API cannot name a file on the \
                              gateway; set it in the configuration file"
                .into(),
            HostRef::Env => "an object written through the API cannot read the gateway's \
                             environment; set it in the configuration file"
                .into(),
        }
    }
}

/// The keys of `route` (under the route: `error_pages.404`, `routing.rules[1].users_file`)
/// that name a file on the gateway or an environment variable. Every `PathBuf` and `*_env`
/// field reachable from a [`RouteSpec`] is here (a test reads spec.rs and rules.rs to keep
/// it so).
pub(crate) fn route_host_keys(route: &RouteSpec) -> Vec<(String, HostRef)> {
    let mut keys = Vec::new();
    for code in route.error_pages.iter().flat_map(|pages| pages.keys()) {
        keys.push((format!("error_pages.{code}"), HostRef::File));
    }
    if route
        .access
        .as_ref()
        .is_some_and(|a| a.basic_auth.is_some())
    {
        keys.push(("access.basic_auth.users_file".into(), HostRef::File));
    }
    let routing = &route.routing;
    if routing.signing_key_env.is_some() {
        keys.push(("routing.signing_key_env".into(), HostRef::Env));
    }
    for (i, source) in routing.identity.iter().flatten().enumerate() {
        let Some(jwt) = &source.jwt else { continue };
        if jwt.keys_file.is_some() {
            keys.push((
                format!("routing.identity[{i}].jwt.keys_file"),
                HostRef::File,
            ));
        }
        if jwt.secret_env.is_some() {
            keys.push((
                format!("routing.identity[{i}].jwt.secret_env"),
                HostRef::Env,
            ));
        }
    }
    for (i, rule) in routing.rules.iter().enumerate() {
        if let RuleKindSpec::Users {
            users_file: Some(_),
            ..
        } = rule.kind
        {
            keys.push((format!("routing.rules[{i}].users_file"), HostRef::File));
        }
    }
    keys
}

/// The keys of `group` (under the group: `tls.ca`) that name a file on the gateway (see
/// [`route_host_keys`]).
pub(crate) fn group_host_keys(group: &GroupSpec) -> Vec<(String, HostRef)> {
    let mut keys = Vec::new();
    if let Some(tls) = &group.tls {
        for (key, set) in [
            ("tls.ca", tls.ca.is_some()),
            ("tls.client_cert", tls.client_cert.is_some()),
            ("tls.client_key", tls.client_key.is_some()),
        ] {
            if set {
                keys.push((key.to_string(), HostRef::File));
            }
        }
    }
    keys
}

/// Refuses (422 naming the key) an API object that names a file on the gateway or an
/// environment variable: the first such key of the first such object.
pub(crate) fn check_host_refs(objects: &ConfigObjects) -> Result<(), ConfigError> {
    let groups = objects
        .groups
        .iter()
        .map(|(name, g)| (ObjectKind::Group, name, group_host_keys(g)));
    let routes = objects
        .routes
        .iter()
        .map(|(name, r)| (ObjectKind::Route, name, route_host_keys(r)));
    for (kind, name, keys) in groups.chain(routes) {
        if let Some((key, what)) = keys.into_iter().next() {
            return Err(object_error(kind, name, &format!(".{key}"), what.message()));
        }
    }
    Ok(())
}

/// The file's section with `objects` added: the file's groups and the API's, the file's routes
/// and then the API's in name order. A file with the single `routing` block becomes a
/// `routes` list whose first route is `default` (every host and path, as before), so routes
/// can be added beside it. With no objects the file's section is returned as it is.
///
/// Refused, naming the file's key and the API object: a name both define, unless the file
/// defines it exactly as the API object is (the file's serves, see [`same_as_file`]). Also refused: an
/// object name that is not a token, a route whose `name` differs from its key, an object
/// that names a file on the gateway or an environment variable ([`check_host_refs`]).
pub fn merge(file: &GatewaySpec, objects: &ConfigObjects) -> Result<GatewaySpec, ConfigError> {
    let mut merged = file.clone();
    if objects.is_empty() {
        return Ok(merged);
    }
    for (kind, names) in [
        (ObjectKind::Group, objects.groups.keys().collect::<Vec<_>>()),
        (ObjectKind::Route, objects.routes.keys().collect()),
    ] {
        for name in names {
            check_token(name, &format!("{} name", kind.as_str()))
                .map_err(|m| object_error(kind, name, "", m))?;
            if let Some(key) = file_key(file, kind, name) {
                if same_as_file(file, objects, kind, name) {
                    // The file took the object over (it was moved there): the file's serves.
                    continue;
                }
                return Err(ConfigError {
                    file: String::new(),
                    key,
                    message: format!(
                        "{} {name:?} is also defined through the admin API ({}.{name} in the \
                         control state); remove one of them (DELETE /config/{}/{name}, or take it \
                         out of the file)",
                        kind.as_str(),
                        kind.plural(),
                        kind.plural(),
                    ),
                });
            }
        }
    }
    check_host_refs(objects)?;
    for (name, group) in &objects.groups {
        if !file.groups.contains_key(name) {
            merged.groups.insert(name.clone(), group.clone());
        }
    }
    let file_routes = file_names(file, ObjectKind::Route);
    if objects
        .routes
        .keys()
        .any(|name| !file_routes.contains(name))
    {
        let mut routes = match (merged.routes.take(), merged.routing.take()) {
            (Some(routes), _) => routes,
            (None, Some(routing)) => vec![whole_site_route(routing)],
            (None, None) => Vec::new(),
        };
        for (name, route) in &objects.routes {
            if file_routes.contains(name) {
                continue;
            }
            if route.name != *name {
                return Err(object_error(
                    ObjectKind::Route,
                    name,
                    ".name",
                    format!("{:?} is not the route's name {name:?}", route.name),
                ));
            }
            routes.push(route.clone());
        }
        merged.routes = Some(routes);
    }
    Ok(merged)
}

/// Whether the file defines `name` of `kind` exactly as the API object of that name is: the
/// object was moved into the file, and a reload lets the file's take over (no collision).
fn same_as_file(file: &GatewaySpec, objects: &ConfigObjects, kind: ObjectKind, name: &str) -> bool {
    match kind {
        ObjectKind::Group => {
            file.groups.contains_key(name) && file.groups.get(name) == objects.groups.get(name)
        }
        ObjectKind::Route => {
            let Some(api) = objects.routes.get(name) else {
                return false;
            };
            match (&file.routes, &file.routing) {
                (Some(routes), _) => routes.iter().any(|r| r == api),
                (None, Some(routing)) => whole_site_route(routing.clone()) == *api,
                (None, None) => false,
            }
        }
    }
}

/// The route a file's single `routing` block stands for: `default`, every host and path.
pub(crate) fn whole_site_route(routing: super::spec::RoutingSpec) -> RouteSpec {
    RouteSpec {
        name: DEFAULT_ROUTE.to_string(),
        hosts: Vec::new(),
        paths: Vec::new(),
        strip_prefix: false,
        access: None,
        rate_limits: None,
        compress: None,
        error_pages: None,
        intercept_errors: None,
        routing,
    }
}

/// The file's section merged with `objects` (see [`merge`]) and validated by the one
/// validation path, relative paths resolved against `base` (the file's folder). Errors name
/// the key: an API object's as `routes.NAME…` / `groups.NAME…`, the file's as the file writes
/// it; their `file` is `file_name`.
pub fn validate_merged(
    file: &GatewaySpec,
    objects: &ConfigObjects,
    base: &Path,
    file_name: &str,
) -> Result<(GatewaySpec, GatewayConfig), ConfigError> {
    let named = |e: ConfigError| ConfigError {
        file: file_name.to_string(),
        ..e
    };
    #[cfg(test)]
    VALIDATIONS.with(|n| n.set(n.get() + 1));
    let merged = merge(file, objects).map_err(named)?;
    let config = merged
        .validate(base)
        .map_err(|e| named(object_key(file, objects, e)))?;
    Ok((merged, config))
}

#[cfg(test)]
thread_local! {
    /// How many merged sections this thread validated (tests count validations per write).
    static VALIDATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many merged sections this thread validated.
#[cfg(test)]
pub(crate) fn validations() -> usize {
    VALIDATIONS.with(|n| n.get())
}

/// `e` with its key in the words of whoever wrote the object (the message is left as it
/// is): the merged section's `gateway.routes[i]` past the file's routes is the API route's
/// `routes.NAME`; an API group's `gateway.groups.NAME` is `groups.NAME` (group names may hold
/// dots: the longest name the key starts with owns it); the route `default` made of the
/// file's `routing` block is `gateway.routing`.
fn object_key(file: &GatewaySpec, objects: &ConfigObjects, mut e: ConfigError) -> ConfigError {
    if objects.is_empty() {
        return e;
    }
    let file_routes = file_names(file, ObjectKind::Route).len();
    let from_routing = file.routes.is_none() && file.routing.is_some();
    // The API routes the merge appended: those the file took over are the file's.
    let file_route_names = file_names(file, ObjectKind::Route);
    let api_routes: Vec<&String> = (objects.routes.keys())
        .filter(|name| !file_route_names.contains(name))
        .collect();
    let rename = |key: &str| -> Option<String> {
        if let Some(rest) = key.strip_prefix("gateway.routes[") {
            let (index, after) = rest.split_once(']')?;
            let index: usize = index.parse().ok()?;
            if index < file_routes {
                if !from_routing {
                    return None;
                }
                // `gateway.routes[0]` itself (the whole route) is the routing block too.
                return Some(format!(
                    "gateway.routing{}",
                    after.strip_prefix(".routing").unwrap_or(after)
                ));
            }
            let name = api_routes.get(index - file_routes)?;
            return Some(format!("routes.{name}{after}"));
        }
        let rest = key.strip_prefix("gateway.groups.")?;
        let name = objects
            .groups
            .keys()
            .chain(file.groups.keys())
            .filter(|g| rest == g.as_str() || rest.starts_with(&format!("{g}.")))
            .max_by_key(|g| g.len())?;
        if !objects.groups.contains_key(name) || file.groups.contains_key(name) {
            return None;
        }
        Some(format!("groups.{name}{}", &rest[name.len()..]))
    };
    if let Some(key) = rename(&e.key) {
        e.key = key;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_BLOCK: &str = r#"
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    stable: { servers: ["127.0.0.1:10001"] }
  routing: { default: stable }
"#;

    const ROUTES: &str = r#"
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    stable: { servers: ["127.0.0.1:10001"] }
  routes:
    - { name: web, hosts: [www.example.com], routing: { default: stable } }
"#;

    fn spec(text: &str) -> GatewaySpec {
        GatewaySpec::from_yaml(text).expect("parses")
    }

    fn route(name: &str, host: &str, group: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "hosts": [host], "routing": { "default": group }
        }))
        .expect("a route")
    }

    fn group(addr: &str) -> GroupSpec {
        serde_json::from_value(serde_json::json!({ "servers": [addr] })).expect("a group")
    }

    fn objects(routes: &[RouteSpec], groups: &[(&str, GroupSpec)]) -> ConfigObjects {
        ConfigObjects {
            routes: routes.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            groups: groups
                .iter()
                .map(|(n, g)| (n.to_string(), g.clone()))
                .collect(),
        }
    }

    fn check(file: &str, objects: &ConfigObjects) -> Result<GatewayConfig, String> {
        validate_merged(&spec(file), objects, Path::new("."), "gw.yaml")
            .map(|(_, config)| config)
            .map_err(|e| e.to_string())
    }

    /// No objects: the file's section as it is, `routing` block included.
    #[test]
    fn no_objects_is_the_file() {
        let file = spec(ONE_BLOCK);
        assert_eq!(merge(&file, &ConfigObjects::default()), Ok(file));
    }

    /// A file's single `routing` block becomes the route `default` (every host and path) and
    /// the API's routes are added after it; requests of other hosts still reach `default`.
    #[test]
    fn a_routing_block_becomes_the_route_default() {
        let with_shop = objects(
            &[route("shop", "shop.example.com", "shop")],
            &[("shop", group("127.0.0.1:10002"))],
        );
        let merged = merge(&spec(ONE_BLOCK), &with_shop).expect("merges");
        assert!(merged.routing.is_none());
        let routes = merged.routes.as_ref().expect("routes");
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["default", "shop"]);
        assert!(routes[0].hosts.is_empty() && routes[0].paths.is_empty());
        assert_eq!(merged.groups.len(), 2);
        let config = check(ONE_BLOCK, &with_shop).expect("validates");
        assert_eq!(config.routes.len(), 2);
        assert!(config.route_table.is_some(), "two routes need the lookup");
        // Groups alone leave the routing block as it is.
        let only_group = objects(&[], &[("spare", group("127.0.0.1:10003"))]);
        let merged = merge(&spec(ONE_BLOCK), &only_group).expect("merges");
        assert!(merged.routing.is_some() && merged.routes.is_none());
    }

    /// A name the file defines is refused, naming the file's key and the API object.
    #[test]
    fn collisions_name_both() {
        let e = check(
            ROUTES,
            &objects(&[route("web", "web.example.net", "stable")], &[]),
        )
        .expect_err("refused");
        assert!(
            e.starts_with("gw.yaml: gateway.routes[0]: route \"web\""),
            "{e}"
        );
        assert!(e.contains("routes.web"), "{e}");
        let e =
            check(ROUTES, &objects(&[], &[("stable", group("127.0.0.1:1"))])).expect_err("refused");
        assert!(
            e.starts_with("gw.yaml: gateway.groups.stable: group \"stable\""),
            "{e}"
        );
        let e = check(
            ONE_BLOCK,
            &objects(&[route("default", "a.example.com", "stable")], &[]),
        )
        .expect_err("refused");
        assert!(
            e.starts_with("gw.yaml: gateway.routing: route \"default\""),
            "{e}"
        );
    }

    /// An object the file defines exactly as the API does was moved into the file: the file's
    /// serves, once, and the API's copy is no collision.
    #[test]
    fn an_identical_file_definition_takes_over() {
        let moved = objects(
            &[route("web", "www.example.com", "stable")],
            &[("stable", group("127.0.0.1:10001"))],
        );
        let merged = merge(&spec(ROUTES), &moved).expect("taken over");
        assert_eq!(merged, spec(ROUTES));
        let whole = whole_site_route(spec(ONE_BLOCK).routing.expect("block"));
        let merged = merge(&spec(ONE_BLOCK), &objects(&[whole], &[])).expect("taken over");
        assert_eq!(merged, spec(ONE_BLOCK));
        // Beside a taken-over route, an API route's errors still name it.
        let e = check(
            ROUTES,
            &objects(
                &[
                    route("web", "www.example.com", "stable"),
                    route("a", "a.example.com", "nope"),
                ],
                &[],
            ),
        )
        .expect_err("refused");
        assert!(e.starts_with("gw.yaml: routes.a.routing.default"), "{e}");
    }

    /// Validation errors name the API object, not the merged section's index.
    #[test]
    fn errors_name_the_api_object() {
        let e = check(
            ROUTES,
            &objects(&[route("shop", "shop.example.com", "x")], &[]),
        )
        .expect_err("refused");
        assert!(
            e.starts_with("gw.yaml: routes.shop.routing.default: \"x\" is not a group"),
            "{e}"
        );
        let e =
            check(ROUTES, &objects(&[], &[("api", group("not an address"))])).expect_err("refused");
        assert!(e.starts_with("gw.yaml: groups.api.servers[0]"), "{e}");
        // The same host and path as a file route: the API route is named.
        let e = check(
            ROUTES,
            &objects(&[route("copy", "www.example.com", "stable")], &[]),
        )
        .expect_err("refused");
        assert!(e.starts_with("gw.yaml: routes.copy: host"), "{e}");
        assert!(e.contains("\"web\""), "{e}");
        // The file's own mistakes keep the file's keys.
        let bad_file = ONE_BLOCK.replace("default: stable", "default: nope");
        let e = check(
            &bad_file,
            &objects(&[route("a", "a.example.com", "stable")], &[]),
        )
        .expect_err("refused");
        assert!(e.starts_with("gw.yaml: gateway.routing.default"), "{e}");
    }

    /// A file group whose name starts with an API group's and a dot keeps the file's key;
    /// an error of the whole route `default` of a file without `routes` is the routing block's.
    #[test]
    fn keys_are_owned_by_the_longest_name_and_the_routing_block() {
        let file = ROUTES.replace(
            "    stable: { servers: [\"127.0.0.1:10001\"] }\n",
            "    stable: { servers: [\"127.0.0.1:10001\"] }\n    a.b: { servers: [\"bad\"] }\n",
        );
        let e = check(&file, &objects(&[], &[("a", group("127.0.0.1:1"))])).expect_err("bad");
        assert!(
            e.starts_with("gw.yaml: gateway.groups.a.b.servers[0]"),
            "{e}"
        );
        let with_api = objects(&[route("a", "a.example.com", "stable")], &[]);
        let whole = ConfigError {
            file: String::new(),
            key: "gateway.routes[0]".into(),
            message: "m".into(),
        };
        assert_eq!(
            object_key(&spec(ONE_BLOCK), &with_api, whole).key,
            "gateway.routing"
        );
    }

    /// Object names are tokens, and a route's `name` is its key.
    #[test]
    fn names_are_checked() {
        let e = check(ROUTES, &objects(&[], &[("a b", group("127.0.0.1:1"))])).expect_err("no");
        assert!(e.starts_with("gw.yaml: groups.a b: "), "{e}");
        let mut objects = objects(&[route("shop", "shop.example.com", "stable")], &[]);
        let mut renamed = route("other", "shop.example.com", "stable");
        renamed.name = "other".into();
        objects.routes.insert("shop".into(), renamed);
        let e = check(ROUTES, &objects).expect_err("no");
        assert!(e.starts_with("gw.yaml: routes.shop.name: "), "{e}");
    }

    /// A route and a group with every key that names a file on the gateway or an environment
    /// variable set: each is listed, and a write of either is refused naming its first key.
    #[test]
    fn host_files_and_environment_are_listed_and_refused() {
        let full_route: RouteSpec = serde_json::from_value(serde_json::json!({
            "name": "x",
            "hosts": ["x.example"],
            "error_pages": { "404": "/etc/canary/state.json", "502": "../502.html" },
            "intercept_errors": true,
            "access": { "basic_auth": { "users_file": "/etc/shadow" } },
            "compress": { "algorithms": ["gzip"] },
            "rate_limits": [{ "name": "a", "key": "client_ip", "rate": "1/s" }],
            "routing": {
                "default": "stable",
                "signing_key_env": "ADMIN_TOKEN",
                "identity": [
                    { "cookie": "c" },
                    { "jwt": { "keys_file": "/dev/zero", "algorithms": ["RS256"] } },
                    { "jwt": { "secret_env": "HOME", "algorithms": ["HS256"] } }
                ],
                "rules": [
                    { "name": "p", "percent": 5, "group": "stable" },
                    { "name": "u", "users_file": "/dev/zero", "group": "stable" },
                    { "name": "i", "users": ["a"], "group": "stable" }
                ]
            }
        }))
        .expect("a route with every key");
        let keys: Vec<(String, HostRef)> = route_host_keys(&full_route);
        let listed: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            listed,
            [
                "error_pages.404",
                "error_pages.502",
                "access.basic_auth.users_file",
                "routing.signing_key_env",
                "routing.identity[1].jwt.keys_file",
                "routing.identity[2].jwt.secret_env",
                "routing.rules[1].users_file",
            ]
        );
        assert_eq!(keys[3].1, HostRef::Env);
        assert_eq!(keys[5].1, HostRef::Env);
        let full_group: GroupSpec = serde_json::from_value(serde_json::json!({
            "servers": ["127.0.0.1:1"],
            "tls": { "sni": "a", "verify": true, "ca": "/a", "client_cert": "/b",
                     "client_key": "/c", "http2": false },
            "health_check": { "type": "http", "path": "/h" },
        }))
        .expect("a group with every file key");
        let listed: Vec<String> = group_host_keys(&full_group)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed, ["tls.ca", "tls.client_cert", "tls.client_key"]);

        // Each key on its own is refused by the merge, named under its object.
        let route_json = serde_json::to_value(&full_route).expect("writes");
        for (key, _) in route_host_keys(&full_route) {
            let only = only_key(&route_json, &key);
            let route: RouteSpec = serde_json::from_value(only).expect("still a route");
            assert_eq!(route_host_keys(&route).len(), 1, "{key}");
            let e = merge(&spec(ROUTES), &objects(&[route], &[])).expect_err(&key);
            assert_eq!(e.key, format!("routes.x.{key}"));
            assert!(e
                .message
                .starts_with("an object written through the API cannot "));
        }
        let e = merge(&spec(ROUTES), &objects(&[], &[("g", full_group)])).expect_err("tls");
        assert_eq!(e.key, "groups.g.tls.ca");
        assert!(
            e.message.contains("cannot name a file on the gateway"),
            "{e}"
        );
        // Inline values stay allowed.
        let inline: RouteSpec = serde_json::from_value(serde_json::json!({
            "name": "x", "hosts": ["x.example"],
            "routing": { "default": "stable", "signing_key": "0123456789abcdef0123456789abcdef",
                         "rules": [{ "name": "i", "users": ["a"], "group": "stable" }] }
        }))
        .expect("inline");
        assert!(route_host_keys(&inline).is_empty());
    }

    /// `route` (JSON) with every host key but `keep` taken out.
    fn only_key(route: &serde_json::Value, keep: &str) -> serde_json::Value {
        let mut out = route.clone();
        if keep != "error_pages.404" && keep != "error_pages.502" {
            out.as_object_mut().map(|o| o.remove("error_pages"));
        } else {
            let other = if keep.ends_with("404") { "502" } else { "404" };
            out["error_pages"].as_object_mut().map(|o| o.remove(other));
        }
        if keep != "access.basic_auth.users_file" {
            out.as_object_mut().map(|o| o.remove("access"));
        }
        let routing = &mut out["routing"];
        if keep != "routing.signing_key_env" {
            routing.as_object_mut().map(|o| o.remove("signing_key_env"));
        }
        for i in 1..=2 {
            if !keep.starts_with(&format!("routing.identity[{i}]")) {
                routing["identity"][i] = serde_json::json!({ "cookie": format!("c{i}") });
            }
        }
        if keep != "routing.rules[1].users_file" {
            routing["rules"][1] =
                serde_json::json!({ "name": "u", "users": ["b"], "group": "stable" });
        }
        out
    }

    /// Every `PathBuf` and `*_env` field of the spec types is either checked for API objects
    /// (reachable from a route or a group) or listed here as the file's alone: a new one
    /// fails this test until it is put in one of the two lists.
    #[test]
    fn every_path_and_env_field_is_accounted_for() {
        // Checked by route_host_keys / group_host_keys.
        let checked = [
            "error_pages",
            "users_file",
            "keys_file",
            "secret_env",
            "signing_key_env",
            "ca",
            "client_cert",
            "client_key",
        ];
        // Not reachable from a route or a group: gateway-wide, listener, admin, ACME keys.
        let file_only = [
            "ca_file",
            "storage",
            "path",
            "state_file",
            "token_env",
            "default_certificate",
            "cert",
            "key",
        ];
        let mut found = Vec::new();
        for text in [include_str!("spec.rs"), include_str!("rules.rs")] {
            for line in text.lines() {
                let line = line.trim().trim_start_matches("pub ");
                let Some((field, ty)) = line.split_once(':') else {
                    continue;
                };
                let is_field =
                    !field.is_empty() && field.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                if is_field && (ty.contains("PathBuf") || field.ends_with("_env")) {
                    found.push(field.to_string());
                }
            }
        }
        assert!(found.len() >= 15, "the scan finds the fields: {found:?}");
        for field in &found {
            assert!(
                checked.contains(&field.as_str()) || file_only.contains(&field.as_str()),
                "{field}: a new file or environment key — if an API route or group can reach \
                 it, refuse it in route_host_keys/group_host_keys; else list it as file-only"
            );
        }
    }

    /// The objects round-trip through JSON (the state file and the store).
    #[test]
    fn objects_round_trip_as_json() {
        let objects = objects(
            &[route("shop", "shop.example.com", "shop")],
            &[("shop", group("127.0.0.1:10002"))],
        );
        let text = serde_json::to_string(&objects).expect("writes");
        let back: ConfigObjects = serde_json::from_str(&text).expect("reads");
        assert_eq!(back, objects);
        assert_eq!(
            serde_json::to_string(&ConfigObjects::default()).expect("writes"),
            "{}"
        );
    }
}
