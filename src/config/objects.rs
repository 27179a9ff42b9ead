//! Configuration objects written through the admin API — routes and groups in the file's own
//! shape — and their merge over the file's gateway section. The file stays the base; an object
//! may only add a name the file does not define (a name both define is refused, naming both).
//! The merged section is validated by the one validation path (`GatewaySpec::validate`, what
//! `-t` runs), and its errors name the API object (`routes.shop.routing.default`) rather than
//! the merged section's index (`gateway.routes[3].routing.default`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::parse::check_token;
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

/// The file's section with `objects` added: the file's groups and the API's, the file's routes
/// and then the API's in name order. A file with the single `routing` block becomes a
/// `routes` list whose first route is `default` (every host and path, as before), so routes
/// can be added beside it. With no objects the file's section is returned as it is.
///
/// Refused, naming the file's key and the API object: a name both define. Also refused: an
/// object name that is not a token, a route whose `name` differs from its key.
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
    for (name, group) in &objects.groups {
        merged.groups.insert(name.clone(), group.clone());
    }
    if !objects.routes.is_empty() {
        let mut routes = match (merged.routes.take(), merged.routing.take()) {
            (Some(routes), _) => routes,
            (None, Some(routing)) => vec![whole_site_route(routing)],
            (None, None) => Vec::new(),
        };
        for (name, route) in &objects.routes {
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
    let merged = merge(file, objects).map_err(named)?;
    let config = merged
        .validate(base)
        .map_err(|e| named(object_key(file, objects, e)))?;
    Ok((merged, config))
}

/// `e` with its key (and a key it names at the start of its message) in the words of whoever
/// wrote the object: the merged section's `gateway.routes[i]` past the file's routes is the
/// API route's `routes.NAME`; an API group's `gateway.groups.NAME` is `groups.NAME`; the
/// route `default` made of the file's `routing` block is `gateway.routing`.
fn object_key(file: &GatewaySpec, objects: &ConfigObjects, mut e: ConfigError) -> ConfigError {
    if objects.is_empty() {
        return e;
    }
    let file_routes = file_names(file, ObjectKind::Route).len();
    let from_routing = file.routes.is_none() && file.routing.is_some();
    let api_routes: Vec<&String> = objects.routes.keys().collect();
    let rename = |key: &str| -> Option<String> {
        if let Some(rest) = key.strip_prefix("gateway.routes[") {
            let (index, after) = rest.split_once(']')?;
            let index: usize = index.parse().ok()?;
            if index < file_routes {
                if !from_routing {
                    return None;
                }
                return Some(format!(
                    "gateway.routing{}",
                    after.strip_prefix(".routing")?
                ));
            }
            let name = api_routes.get(index - file_routes)?;
            return Some(format!("routes.{name}{after}"));
        }
        let rest = key.strip_prefix("gateway.groups.")?;
        let name = objects
            .groups
            .keys()
            .find(|g| rest == g.as_str() || rest.starts_with(&format!("{g}.")))?;
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
