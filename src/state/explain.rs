//! `GET /explain`: what the gateway would do with a request described by its parts. The
//! inputs become a [`RequestFacts`] and go through the same [`Router::decide`] and fallback
//! walk as a real request.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::controller::Controller;
use super::{GatewayState, RouteScratch, StateError};
use crate::routing::identity::Uncached;
use crate::routing::routes::RouteId;
use crate::routing::{
    is_valid_user_id, Decision, GroupId, IdSource, RequestFacts, Router, RuleKind, RuleTrace,
};
use crate::upstreams;

/// The request that explain describes. Everything is optional: no host matches any host, the
/// path defaults to `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExplainQuery {
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    /// The user id, as the routing cookie would carry it (unsigned).
    pub(crate) user: Option<String>,
    /// A value for every header rule's header (the original `header=` input), unless
    /// `headers` names that header.
    pub(crate) header: Option<String>,
    /// Request headers by name (`header.NAME=VALUE`), in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The client's address, which header rules with `from` and `client` conditions read.
    pub(crate) client: Option<IpAddr>,
    /// Cookies by name (`cookie.NAME=VALUE`), in order, sent as one more `Cookie` header.
    pub(crate) cookies: Vec<(String, String)>,
    /// Query parameters (`query.NAME=VALUE`), in order, added to the path's query as given.
    pub(crate) query: Vec<(String, String)>,
    /// The method (`GET` when not given).
    pub(crate) method: Option<String>,
}

/// The method explain assumes when none is given.
pub(crate) const EXPLAIN_METHOD: &str = "GET";

/// The answer of `GET /explain`.
pub(crate) struct Explanation {
    /// The state the decision was made on (for group and rule names).
    pub(crate) state: Arc<GatewayState>,
    /// The route that serves the host and path (`None`: no route, the request gets 404).
    pub(crate) route: Option<RouteId>,
    pub(crate) user_valid: bool,
    /// Which identity source gave the id: `cookie` for the `user` input, else the route's
    /// sources over the given headers (`assigned_new`: a new visitor id would be made; the
    /// decision shown is then the anonymous one).
    pub(crate) id_source: IdSource,
    pub(crate) decision: Option<Decision>,
    /// Whether the decided group has a healthy server.
    pub(crate) group_healthy: bool,
    /// The group the fallback walk picks now (`None`: nothing can serve).
    pub(crate) served_by: Option<GroupId>,
    /// Each rule of the route, in order: its conditions' results and where it would send the
    /// request (empty without a route).
    pub(crate) rules: Vec<RuleTrace>,
}

impl Controller {
    /// `GET /explain`: the route for the query's host and path, what its rules decide for the
    /// request it describes, and where the fallback walk would serve it right now.
    pub(crate) fn explain(&self, query: &ExplainQuery) -> Result<Explanation, StateError> {
        let state = self.state().load_full();
        let path = query.path.as_deref().unwrap_or("/");
        let mut scratch = RouteScratch::default();
        let found = state
            .find_route(
                query.host.as_deref().unwrap_or("").as_bytes(),
                path.as_bytes(),
                &mut scratch,
            )
            .map_err(|e| StateError::invalid_field("path", e.to_string()))?;
        let Some((route, _)) = found else {
            return Ok(Explanation {
                state,
                route: None,
                user_valid: false,
                id_source: IdSource::None,
                decision: None,
                group_healthy: false,
                served_by: None,
                rules: Vec::new(),
            });
        };
        let router = &state.routes[route.0].router;
        let user = query
            .user
            .as_deref()
            .map(str::as_bytes)
            .filter(|u| is_valid_user_id(u));
        let mut headers = explain_headers(router, query);
        let cookie_line = cookie_line(&query.cookies);
        if let Some(line) = &cookie_line {
            headers.push(("cookie", line));
        }
        let target = explain_target(path, &query.query);
        let (user, id_source): (Option<Cow<'_, [u8]>>, IdSource) = match (user, router.identity()) {
            (Some(user), _) => (Some(Cow::Borrowed(user)), IdSource::Cookie),
            (None, Some(identity)) => {
                let r = identity.resolve(
                    headers.as_slice(),
                    query.client,
                    router.signing_keys(),
                    &Uncached,
                );
                (r.user, r.source)
            }
            (None, None) => {
                let cookies = headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
                    .map(|(_, v)| v.as_bytes());
                match router.user_from_cookies(cookies) {
                    Some(user) => (Some(Cow::Borrowed(user)), IdSource::Cookie),
                    None => (None, IdSource::None),
                }
            }
        };
        let user = user.as_deref();
        let facts = RequestFacts::new(headers.as_slice())
            .with_target(target.as_bytes())
            .with_method(query.method.as_deref().unwrap_or(EXPLAIN_METHOD))
            .with_client(query.client)
            .with_user(user);
        let decision = router.decide(&facts);
        let rules = router.trace(&facts);
        let group_healthy = state
            .pools
            .get(decision.group.0)
            .is_some_and(|p| p.any_healthy());
        let served_by = upstreams::pick(
            &state.pools,
            decision.group,
            user.unwrap_or_default(),
            &[],
            None,
        )
        .map(|pick| pick.group);
        Ok(Explanation {
            user_valid: user.is_some(),
            id_source,
            route: Some(route),
            decision: Some(decision),
            group_healthy,
            served_by,
            rules,
            state,
        })
    }
}

/// The explain cookies as one `Cookie` header line (`a=1; b=2`); `None` when there are none.
fn cookie_line(cookies: &[(String, String)]) -> Option<String> {
    (!cookies.is_empty()).then(|| {
        cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The path with the explain query parameters added to its query (as given, not encoded).
fn explain_target(path: &str, query: &[(String, String)]) -> String {
    let mut target = path.to_string();
    for (i, (name, value)) in query.iter().enumerate() {
        let sep = if i == 0 && !path.contains('?') {
            '?'
        } else {
            '&'
        };
        target.push(sep);
        target.push_str(name);
        target.push('=');
        target.push_str(value);
    }
    target
}

/// The request headers explain decides on: the named ones, then the `header` value under the
/// name of each header rule that the named ones leave out.
fn explain_headers<'a>(router: &'a Router, query: &'a ExplainQuery) -> Vec<(&'a str, &'a str)> {
    let mut headers: Vec<(&str, &str)> = query
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    if let Some(value) = &query.header {
        for rule in router.rules() {
            if let RuleKind::Header { header, .. } = rule.kind() {
                if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(header)) {
                    headers.push((header, value));
                }
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::GroupId;

    fn router() -> Router {
        Router::new(vec!["stable".into(), "canary".into()], GroupId(0)).with_rules(vec![
            crate::routing::Rule::header("qa", "x-canary-group"),
            crate::routing::Rule::header("qa2", "x-qa"),
        ])
    }

    /// The `header` value goes to every header rule's header that no named header sets.
    #[test]
    fn header_value_fills_each_header_rule() {
        let query = ExplainQuery {
            header: Some("canary".into()),
            headers: vec![("X-QA".into(), "stable".into())],
            ..ExplainQuery::default()
        };
        let r = router();
        let headers = explain_headers(&r, &query);
        assert_eq!(
            headers,
            [("X-QA", "stable"), ("x-canary-group", "canary")],
            "named headers win over the shared value"
        );
    }

    /// Cookies become one `Cookie` line; query parameters join the path's own query.
    #[test]
    fn cookies_and_query_inputs() {
        assert_eq!(cookie_line(&[]), None);
        let cookies = [("beta".into(), "always".into()), ("t".into(), "1".into())];
        assert_eq!(cookie_line(&cookies).as_deref(), Some("beta=always; t=1"));
        let query = [("region".into(), "eu".into()), ("x".into(), "".into())];
        assert_eq!(explain_target("/shop", &query), "/shop?region=eu&x=");
        assert_eq!(
            explain_target("/shop?a=1", &query[..1]),
            "/shop?a=1&region=eu"
        );
        assert_eq!(explain_target("/", &[]), "/");
    }

    /// Named headers alone decide: a header no rule reads changes nothing.
    #[test]
    fn named_headers_reach_the_decision() {
        let r = router();
        let decide = |headers: Vec<(String, String)>| {
            let query = ExplainQuery {
                headers,
                ..ExplainQuery::default()
            };
            let headers = explain_headers(&r, &query);
            r.decide(&RequestFacts::new(headers.as_slice())).group
        };
        assert_eq!(decide(vec![("x-qa".into(), "canary".into())]), GroupId(1));
        assert_eq!(
            decide(vec![("x-other".into(), "canary".into())]),
            GroupId(0)
        );
    }

    fn demo() -> Controller {
        let loaded = crate::config::load_demo().expect("demo");
        Controller::new(
            super::super::ConfigSource::Demo,
            loaded.spec,
            loaded.gateway,
        )
        .expect("controller")
    }

    /// A named header reaches the demo's QA rule; `header` still goes to every header rule;
    /// a header of another name decides nothing.
    #[test]
    fn explain_decides_on_named_headers() {
        let controller = demo();
        let explain = |query: ExplainQuery| {
            let e = controller.explain(&query).expect("explained");
            let d = e.decision.expect("a route serves every request");
            (e.state.group_name(d.group).to_string(), d.reason.as_str())
        };
        let named = ExplainQuery {
            user: Some("alice".into()),
            headers: vec![("X-Canary-Group".into(), "canary".into())],
            ..ExplainQuery::default()
        };
        assert_eq!(explain(named), ("canary".to_string(), "header"));
        let shared = ExplainQuery {
            header: Some("canary".into()),
            ..ExplainQuery::default()
        };
        assert_eq!(explain(shared), ("canary".to_string(), "header"));
        let other = ExplainQuery {
            user: Some("alice".into()),
            headers: vec![("x-other".into(), "canary".into())],
            ..ExplainQuery::default()
        };
        assert_eq!(explain(other), ("stable".to_string(), "user_list"));
    }
}
