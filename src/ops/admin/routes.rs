//! The admin API's route table — one row per endpoint: method, path with named segments, the
//! role it needs, its handler — and the matcher that finds a request's row.

use std::future::Future;
use std::pin::Pin;

use http::{Method, Response};

use super::answer::{ApiError, Reply};
use super::request::{Call, Params};
use super::{certificates, changes, config, reads, servers};
use crate::config::Role;
use crate::ops::ui;

/// What an API handler's future gives: the answer (200) or the error.
pub(crate) type Answer<'a> = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send + 'a>>;

/// An API endpoint's handler: an `async fn(Call) -> Result<Value, ApiError>` (JSON), or
/// `-> Result<Reply, ApiError>` for another kind of answer, boxed by [`handler!`] so every row
/// has the same type.
pub(crate) type ApiHandler = for<'a> fn(Call<'a>) -> Answer<'a>;

/// A page handler: the response for what the row's `{name*}` tail matched.
pub(crate) type PageHandler = fn(&str) -> Response<Vec<u8>>;

/// Makes an [`ApiHandler`] of an `async fn(Call<'_>) -> Result<Value or Reply, ApiError>`.
macro_rules! handler {
    ($f:path) => {{
        fn answer(call: Call<'_>) -> Answer<'_> {
            Box::pin(async move { $f(call).await.map(Reply::from) })
        }
        answer as ApiHandler
    }};
}

/// The method an API row answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn admits(self, method: &Method) -> bool {
        *method
            == match self {
                Verb::Get => Method::GET,
                Verb::Post => Method::POST,
                Verb::Put => Method::PUT,
                Verb::Delete => Method::DELETE,
            }
    }
}

/// How a row is served.
pub(crate) enum Serve {
    /// A file of the web page: any method, no token (the page holds no data: it asks for a
    /// token and calls the API with it). Its path is matched exactly as sent.
    Page(PageHandler),
    /// An API endpoint: one method, the role it needs, and whether it is also served for one
    /// route under `/routes/{route}/…`. Its path may carry extra slashes at either end.
    Api {
        verb: Verb,
        role: Role,
        per_route: bool,
        handler: ApiHandler,
    },
}

/// One row: a path pattern and how it is served. In a pattern, `{name}` matches one segment
/// (possibly empty) and `{name*}`, last, the rest of the path; handlers read them by name.
pub(crate) struct Route {
    pub(crate) path: &'static str,
    pub(crate) serve: Serve,
}

impl Route {
    /// An endpoint of the whole gateway.
    const fn api(verb: Verb, path: &'static str, role: Role, handler: ApiHandler) -> Route {
        Route {
            path,
            serve: Serve::Api {
                verb,
                role,
                per_route: false,
                handler,
            },
        }
    }

    /// An endpoint served at `path` (the one route, or every route, as its handler says) and
    /// at `/routes/{route}{path}` (that route).
    const fn per_route(verb: Verb, path: &'static str, role: Role, handler: ApiHandler) -> Route {
        Route {
            path,
            serve: Serve::Api {
                verb,
                role,
                per_route: true,
                handler,
            },
        }
    }

    const fn page(path: &'static str, handler: PageHandler) -> Route {
        Route {
            path,
            serve: Serve::Page(handler),
        }
    }
}

use Role::{Admin, Operator, Viewer};
use Verb::{Delete, Get, Post, Put};

/// Every endpoint of the admin listener. Rows are tried in order; the first whose path and
/// method fit serves the request.
pub(crate) static ROUTES: &[Route] = &[
    Route::page("/ui", ui::redirect),
    Route::page("/ui/{file*}", ui::file),
    Route::page("/favicon.ico", ui::favicon),
    Route::api(Get, "/status", Viewer, handler!(reads::status)),
    Route::api(
        Get,
        "/stats/history",
        Viewer,
        handler!(reads::stats_history),
    ),
    Route::api(Get, "/whoami", Viewer, handler!(reads::whoami)),
    Route::api(Get, "/config", Viewer, handler!(reads::config)),
    Route::api(Get, "/config/routes", Viewer, handler!(config::routes)),
    Route::api(
        Get,
        "/config/routes/{name}",
        Viewer,
        handler!(config::route),
    ),
    Route::api(
        Put,
        "/config/routes/{name}",
        Admin,
        handler!(config::put_route),
    ),
    Route::api(
        Delete,
        "/config/routes/{name}",
        Admin,
        handler!(config::delete_route),
    ),
    Route::api(Get, "/config/groups", Viewer, handler!(config::groups)),
    Route::api(
        Get,
        "/config/groups/{name}",
        Viewer,
        handler!(config::group),
    ),
    Route::api(
        Put,
        "/config/groups/{name}",
        Admin,
        handler!(config::put_group),
    ),
    Route::api(
        Delete,
        "/config/groups/{name}",
        Admin,
        handler!(config::delete_group),
    ),
    Route::api(
        Get,
        "/config/groups/{group}/servers",
        Viewer,
        handler!(servers::list),
    ),
    Route::api(
        Post,
        "/config/groups/{group}/servers/{addr}/drain",
        Admin,
        handler!(servers::drain),
    ),
    Route::api(
        Post,
        "/config/groups/{group}/servers/{addr}/enable",
        Admin,
        handler!(servers::enable),
    ),
    Route::api(
        Post,
        "/config/groups/{group}/servers/{addr}/disable",
        Admin,
        handler!(servers::disable),
    ),
    Route::api(Get, "/explain", Viewer, handler!(reads::explain)),
    Route::api(Get, "/audit", Viewer, handler!(reads::audit)),
    Route::api(
        Get,
        "/config/certificates",
        Viewer,
        handler!(certificates::list),
    ),
    Route::api(
        Get,
        "/config/certificates/{name}",
        Viewer,
        handler!(certificates::one),
    ),
    Route::api(
        Put,
        "/config/certificates/{name}",
        Admin,
        handler!(certificates::put),
    ),
    Route::api(
        Delete,
        "/config/certificates/{name}",
        Admin,
        handler!(certificates::delete),
    ),
    Route::api(Post, "/reload", Operator, handler!(changes::reload)),
    Route::per_route(Post, "/rollback", Operator, handler!(changes::rollback)),
    Route::per_route(Post, "/resume", Operator, handler!(changes::resume)),
    Route::per_route(Post, "/promote", Operator, handler!(changes::promote)),
    Route::per_route(
        Post,
        "/maintenance",
        Operator,
        handler!(changes::maintenance),
    ),
    Route::per_route(
        Put,
        "/rules/{rule}/percent",
        Operator,
        handler!(changes::set_percent),
    ),
    Route::per_route(
        Get,
        "/rules/{rule}/users",
        Viewer,
        handler!(reads::is_member),
    ),
    Route::per_route(
        Post,
        "/rules/{rule}/users",
        Operator,
        handler!(changes::change_users),
    ),
    Route::per_route(Get, "/rules/{rule}/plan", Viewer, handler!(reads::plan)),
    Route::per_route(
        Post,
        "/rules/{rule}/plan/{command}",
        Operator,
        handler!(changes::plan_command),
    ),
];

/// What the table holds for a request.
pub(crate) enum Match<'p> {
    /// A file of the web page, and what the row's tail matched.
    Page(PageHandler, &'p str),
    /// An API endpoint: its row, the route named by `/routes/{route}/…`, the named segments.
    Api {
        role: Role,
        handler: ApiHandler,
        route: Option<&'p str>,
        params: Params<'p>,
    },
    /// A path some row serves, but not with this method (405).
    WrongMethod,
    /// No row serves the path (404).
    NotFound,
}

impl Match<'_> {
    /// The role the request needs: its row's. A request that no row serves needs what its
    /// method would (a change needs an operator; a change under `/config`, the configuration,
    /// an admin), so a token is refused every change it could not make before learning
    /// whether the path exists — as the API always has.
    pub(crate) fn role(&self, method: &Method, path: &str) -> Role {
        match self {
            Match::Api { role, .. } => *role,
            _ if method == Method::GET || method == Method::HEAD => Viewer,
            _ if is_config_path(path) => Admin,
            _ => Operator,
        }
    }
}

/// Whether `path` is `/config` or under it (extra slashes at either end allowed, as the
/// rows allow them).
fn is_config_path(path: &str) -> bool {
    let trimmed = path.trim_matches('/');
    trimmed == "config" || trimmed.starts_with("config/")
}

/// Whether a token of role `have` may call a row that needs `need`.
pub(crate) fn grants(have: Role, need: Role) -> bool {
    match have {
        Role::Admin => true,
        Operator => need != Role::Admin,
        Viewer => need == Viewer,
    }
}

/// The row of `routes` that serves `method` on `path`.
pub(crate) fn find<'p>(routes: &'static [Route], method: &Method, path: &'p str) -> Match<'p> {
    let mut params = Params::default();
    let exact = path.strip_prefix('/').unwrap_or(path);
    for row in routes {
        if let Serve::Page(page) = row.serve {
            params.clear();
            if match_path(row.path, exact, &mut params) {
                return Match::Page(page, params.tail());
            }
        }
    }
    // Clients have always been allowed extra slashes at either end of an API path.
    let trimmed = path.trim_matches('/');
    let (route, rest) = match trimmed
        .strip_prefix("routes/")
        .and_then(|r| r.split_once('/'))
    {
        Some((route, rest)) => (Some(route), rest),
        None => (None, trimmed),
    };
    let mut known = false;
    for row in routes {
        let Serve::Api {
            verb,
            role,
            per_route,
            handler,
        } = row.serve
        else {
            continue;
        };
        if route.is_some() && !per_route {
            continue;
        }
        params.clear();
        if !match_path(row.path, rest, &mut params) {
            continue;
        }
        if verb.admits(method) {
            return Match::Api {
                role,
                handler,
                route,
                params,
            };
        }
        known = true;
    }
    if known {
        Match::WrongMethod
    } else {
        Match::NotFound
    }
}

/// Whether `path` (without its leading `/`) fits `pattern`; the named segments go to `params`.
fn match_path<'p>(pattern: &'static str, path: &'p str, params: &mut Params<'p>) -> bool {
    let mut rest = Some(path);
    for want in pattern.trim_start_matches('/').split('/') {
        let Some(here) = rest else {
            return false;
        };
        let name = want.strip_prefix('{').and_then(|w| w.strip_suffix('}'));
        if let Some(tail) = name.and_then(|n| n.strip_suffix('*')) {
            params.push(tail, here);
            return true;
        }
        let (segment, after) = match here.split_once('/') {
            Some((segment, after)) => (segment, Some(after)),
            None => (here, None),
        };
        rest = after;
        match name {
            Some(name) => params.push(name, segment),
            None if want == segment => {}
            None => return false,
        }
    }
    rest.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api<'p>(method: &Method, path: &'p str) -> Option<(Role, Option<&'p str>, Params<'p>)> {
        match find(ROUTES, method, path) {
            Match::Api {
                role,
                route,
                params,
                ..
            } => Some((role, route, params)),
            _ => None,
        }
    }

    /// Named segments are read by name, with and without `/routes/{route}`.
    #[test]
    fn named_segments_are_matched() {
        let (role, route, params) = api(&Method::PUT, "/rules/rollout/percent").expect("a row");
        assert_eq!((role, route), (Operator, None));
        assert_eq!(params.get("rule"), "rollout");
        let (_, route, params) =
            api(&Method::POST, "/routes/shop/rules/vip/plan/start").expect("a row");
        assert_eq!(route, Some("shop"));
        assert_eq!(
            (params.get("rule"), params.get("command")),
            ("vip", "start")
        );
        let (role, _, params) = api(&Method::GET, "/rules/vip/users").expect("the GET row");
        assert_eq!((role, params.get("rule")), (Viewer, "vip"));
        let (_, _, params) = api(&Method::GET, "/rules//users").expect("an empty segment");
        assert_eq!(params.get("rule"), "");
    }

    /// A server's address, colons and brackets included, is one segment; its writes need an
    /// admin, its read a viewer.
    #[test]
    fn server_addresses_are_one_segment() {
        for addr in ["127.0.0.1:8001", "[::1]:8001", "api.internal:80"] {
            let path = format!("/config/groups/web/servers/{addr}/drain");
            let (role, _, params) = api(&Method::POST, &path).expect("the drain row");
            assert_eq!(role, Admin);
            assert_eq!((params.get("group"), params.get("addr")), ("web", addr));
        }
        let (role, _, params) = api(&Method::GET, "/config/groups/web/servers").expect("a row");
        assert_eq!((role, params.get("group")), (Viewer, "web"));
        assert!(matches!(
            find(
                ROUTES,
                &Method::GET,
                "/config/groups/web/servers/127.0.0.1:1/drain"
            ),
            Match::WrongMethod
        ));
    }

    /// Extra slashes at either end of an API path are ignored; not in the middle.
    #[test]
    fn api_paths_ignore_outer_slashes() {
        assert!(api(&Method::GET, "//status//").is_some());
        assert!(api(&Method::GET, "/stats/history/").is_some());
        assert!(matches!(
            find(ROUTES, &Method::GET, "/stats//history"),
            Match::NotFound
        ));
    }

    /// Only per-route rows are served under `/routes/{route}`.
    #[test]
    fn only_per_route_rows_take_a_route() {
        assert!(api(&Method::POST, "/routes/shop/rollback").is_some());
        assert!(matches!(
            find(ROUTES, &Method::GET, "/routes/shop/status"),
            Match::NotFound
        ));
        assert!(matches!(
            find(ROUTES, &Method::GET, "/routes/shop"),
            Match::NotFound
        ));
    }

    /// 404 for a path no row has, 405 for a known path with another method.
    #[test]
    fn unknown_paths_and_wrong_methods() {
        for path in [
            "/",
            "/nope",
            "/rules/vip",
            "/rules/vip/percent/more",
            "/statusx",
        ] {
            assert!(
                matches!(find(ROUTES, &Method::GET, path), Match::NotFound),
                "{path}"
            );
        }
        for (method, path) in [
            (Method::DELETE, "/status"),
            (Method::HEAD, "/status"),
            (Method::GET, "/rules/vip/percent"),
            (Method::PUT, "/routes/shop/rules/vip/users"),
        ] {
            assert!(
                matches!(find(ROUTES, &method, path), Match::WrongMethod),
                "{method} {path}"
            );
        }
    }

    /// The page's paths are matched exactly, for any method; everything under `/ui/` is the
    /// page's (its own 404), `/uix` is not.
    #[test]
    fn page_paths_are_exact() {
        let page = |path| match find(ROUTES, &Method::POST, path) {
            Match::Page(_, tail) => Some(tail),
            _ => None,
        };
        assert_eq!(page("/ui"), Some(""));
        assert_eq!(page("/ui/"), Some(""));
        assert_eq!(page("/ui/app.js"), Some("app.js"));
        assert_eq!(page("/ui//x/y"), Some("/x/y"));
        assert_eq!(page("/uix"), None);
        assert_eq!(page("//ui/"), None);
        assert_eq!(page("/status"), None);
    }

    /// A viewer may call the read rows and no change: not a write row, not a write to a path
    /// that does not exist; an operator may call every row but the admin's (configuration
    /// writes); an admin every row.
    #[test]
    fn roles_come_from_the_row() {
        let need = |method: Method, path| find(ROUTES, &method, path).role(&method, path);
        assert!(!grants(Viewer, need(Method::PUT, "/rules/rollout/percent")));
        assert!(!grants(Viewer, need(Method::POST, "/rules/vip/users")));
        assert!(grants(Viewer, need(Method::GET, "/rules/vip/users")));
        assert!(grants(Viewer, need(Method::GET, "/status")));
        assert!(!grants(Viewer, need(Method::POST, "/nope")));
        assert!(!grants(Viewer, need(Method::DELETE, "/status")));
        assert!(grants(Viewer, need(Method::HEAD, "/status")));
        for row in ROUTES {
            if let Serve::Api { role, .. } = row.serve {
                assert!(grants(Role::Admin, role), "{}", row.path);
                assert_eq!(grants(Operator, role), role != Role::Admin, "{}", row.path);
            }
        }
        assert!(!grants(Operator, Role::Admin));
        // Configuration writes, known or not, need an admin; reads a viewer.
        for (method, path) in [
            (Method::PUT, "/config/routes/shop"),
            (Method::DELETE, "/config/groups/shop"),
            (Method::POST, "/config/routes/shop"),
            (Method::DELETE, "/config"),
            (Method::POST, "/config/nope/x"),
        ] {
            assert_eq!(need(method.clone(), path), Role::Admin, "{method} {path}");
        }
        assert_eq!(need(Method::GET, "/config/routes/shop"), Viewer);
        assert_eq!(need(Method::GET, "/config/nope"), Viewer);
        assert_eq!(need(Method::POST, "/configx"), Operator);
        assert!(!grants(Viewer, Role::Admin));
    }

    /// Every row's pattern is well formed: it starts with `/`, a tail is last, and no two
    /// rows serve the same method on the same path.
    #[test]
    fn the_table_is_well_formed() {
        let mut seen = Vec::new();
        for row in ROUTES {
            assert!(row.path.starts_with('/'), "{}", row.path);
            let segments: Vec<&str> = row.path[1..].split('/').collect();
            for (i, s) in segments.iter().enumerate() {
                assert!(
                    !s.ends_with("*}") || i + 1 == segments.len(),
                    "{}",
                    row.path
                );
                assert!(!s.is_empty(), "{}", row.path);
            }
            if let Serve::Api { verb, .. } = row.serve {
                assert!(!seen.contains(&(verb, row.path)), "{}", row.path);
                seen.push((verb, row.path));
            }
        }
    }
}
