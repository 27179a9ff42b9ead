//! The admin API: a JSON HTTP service on its own listener, and the web page under `/ui/`.
//! Every API request needs `Authorization: Bearer <token>`; the page needs none (it holds no
//! data). Requests are served from one route table, [`routes::ROUTES`]; bodies are read into
//! typed requests (unknown and repeated keys refused, in `json`), and answers are typed bodies
//! or the views in `views`.
//!
//! What a request goes through: the listener's head guard (the proxy's head limits: 408, 414,
//! 431) before Pingora parses it; then, in [`AdminApp::response`], a declared body over
//! [`request::MAX_ADMIN_BODY`] is refused (413) before any of it is read; the table finds its
//! row (a page row is answered there); a token in the query is refused (400); the bearer token is checked
//! (401); the role the row needs is checked (403) — here and nowhere else; then 404 (no row
//! has the path), 405 (no row has it with this method) or the row's handler.
//!
//! # Adding an endpoint
//!
//! 1. Write its handler: `async fn name(call: Call<'_>) -> Result<Value, ApiError>` in
//!    `reads.rs` or `changes.rs` (or a new file for a new area). It reads named segments with
//!    `call.params.get("rule")`, the query with `call.query("user")`, a typed body with
//!    `call.body::<T>().await?` (`T` in `bodies.rs`, `#[serde(deny_unknown_fields)]`), and
//!    returns `to_json(&answer)` of a `Serialize` answer (or, returning `Result<Reply, _>`,
//!    another kind: `GET /config` answers `Reply::Yaml`). A `StateError` converts with `?`
//!    (its kind picks the status, in `answer::status_of`).
//! 2. Add its row to [`routes::ROUTES`]:
//!    `Route::api(Get, "/things", Viewer, handler!(reads::things))` — or `Route::per_route`
//!    when it is also served under `/routes/{route}/…`.
//!
//! Nothing else: the role check, 404, 405, logging and the JSON answer follow from the row.

mod answer;
mod bodies;
mod certificates;
mod changes;
mod config;
mod json;
mod reads;
mod request;
mod routes;
mod servers;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use log::info;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::config::{AdminToken, HeadLimits, Role};
use crate::proxy::connections::{AcceptGate, Connections, Limited};
use crate::proxy::guard::GuardedApp;
use crate::proxy::InFlight;
use crate::routing::signed::constant_time_eq;
use crate::state::Controller;
use answer::ApiError;
use request::Call;
use routes::{Match, ROUTES};

/// The admin API application.
pub(crate) struct AdminApp {
    controller: Arc<Controller>,
    tokens: Vec<AdminToken>,
}

/// A listening service for the admin API (and the web page, under `/ui/`) on `listen`, behind
/// the proxy's request-head guard with `limits` (408 / 414 / 431 before anything is parsed).
/// Its connections are counted apart from the proxy's, so an operator's slow head never holds
/// up a graceful exit.
pub(crate) fn admin_service(
    controller: Arc<Controller>,
    listen: &str,
    tokens: Vec<AdminToken>,
    limits: HeadLimits,
    connections: Arc<Connections>,
) -> Service<Limited<GuardedApp<HttpServer<AdminApp>>>> {
    // Its own budget of connections: a flood on the proxy's listeners never keeps operators
    // out, nor a flood here the proxy's clients.
    let mut service = Service::new(
        "canary-gateway admin".to_string(),
        Limited::new(
            GuardedApp::new(
                HttpServer::new_app(AdminApp { controller, tokens }),
                limits,
                InFlight::default(),
            )
            .for_listener(connections.clone()),
            connections.clone(),
        ),
    );
    service.set_connection_filter(AcceptGate::new(connections));
    // Operators' traffic: one thread is plenty, whatever `threads` says.
    service.threads = Some(1);
    service.add_tcp(listen);
    service
}

impl AdminApp {
    /// The token the request carries (`Authorization: Bearer`), if it is one of ours. Every
    /// token is compared, in constant time, so the time taken does not tell which matched.
    fn authorized(&self, session: &ServerSession) -> Option<&AdminToken> {
        let value = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)?
            .as_bytes();
        let presented = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
            _ => return None,
        };
        self.tokens.iter().fold(None, |found, t| {
            let same = constant_time_eq(presented, t.token.as_bytes());
            found.or(same.then_some(t))
        })
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // A declared body over the limit is refused before any of it is read, whoever sends it.
        let response = match request::declared_body_over_limit(session) {
            Some(refused) => refused.response(),
            None => self.answer(session).await,
        };
        // A body left unread (refused, or sent where none was wanted) is not read through to
        // reach a next request: the connection closes after the answer.
        if !session.is_body_done() {
            session.set_keepalive(None);
        }
        response
    }
}

impl AdminApp {
    /// The answer to a request whose declared body (if any) is within the limit.
    async fn answer(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let uri = session.req_header().uri.clone();
        let path = uri.path();
        let found = routes::find(ROUTES, &method, path);
        if let Match::Page(page, file) = found {
            return page(file);
        }
        if request::token_in_query(uri.query().unwrap_or("")) {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "a token in the query string is refused; send Authorization: Bearer <token>",
            )
            .response();
        }
        let Some(who) = self.authorized(session) else {
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").response();
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return response;
        };
        if !routes::grants(who.role, found.role(&method, path)) {
            info!(
                "admin: {method} {path} by {} {} refused",
                who.role.as_str(),
                who.name
            );
            let why = match who.role {
                Role::Viewer => "is a viewer: it can read everything and change nothing",
                Role::Operator => {
                    "is an operator: it makes live changes; configuration writes need an admin token"
                }
                Role::Admin => "may not call this endpoint",
            };
            return ApiError::new(StatusCode::FORBIDDEN, format!("token {:?} {why}", who.name))
                .response();
        }
        let result = match found {
            Match::Api {
                handler,
                route,
                params,
                ..
            } => {
                let call = Call::new(&self.controller, who, (route, params), uri.query(), session);
                handler(call).await
            }
            Match::WrongMethod => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            )),
            Match::NotFound | Match::Page(..) => {
                Err(ApiError::not_found(format!("no endpoint {path}")))
            }
        };
        match &result {
            Ok(_) if method == Method::GET => {}
            Ok(_) => info!("admin: {method} {path} applied (by {})", who.name),
            Err(e) => info!(
                "admin: {method} {path} by {} -> {} {}",
                who.name,
                e.status.as_u16(),
                e.message
            ),
        }
        match result {
            Ok(reply) => reply.response(),
            Err(e) => e.response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bodies::{PercentBody, PromoteBody, UsersBody};
    use super::request::parse_body;

    #[test]
    fn bodies_name_the_field_at_fault() {
        let field = |body: &str| match parse_body::<UsersBody>(body.as_bytes()) {
            Ok(_) => None,
            Err(e) => e.field,
        };
        assert_eq!(field(r#"{"add": ["a"]}"#), None);
        assert_eq!(field(r#"{"add": "a"}"#).as_deref(), Some("add"));
        assert_eq!(field(r#"{"remove": [1]}"#).as_deref(), Some("remove[0]"));
        assert_eq!(field(r#"{"ad": []}"#).as_deref(), Some("ad"));
        assert_eq!(field("[]").as_deref(), Some("body"));
        assert_eq!(field("nope").as_deref(), Some("body"));
        let percent = |body: &str| parse_body::<PercentBody>(body.as_bytes()).err();
        let e = percent(r#"{"percent": 101}"#).expect("refused");
        assert_eq!(e.field.as_deref(), Some("percent"));
        assert_eq!(e.message, "101 is not in 0..=100");
        assert!(percent(r#"{"percent": 2.5}"#).is_none());
        let missing = parse_body::<PromoteBody>(b"{}").err().expect("refused");
        assert_eq!(missing.field.as_deref(), Some("group"));
    }

    /// A typed body refuses an unknown key with 400, naming it, in serde's words (the
    /// end-to-end tests and the page show them).
    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = parse_body::<PercentBody>(br#"{"percnt": 5}"#)
            .err()
            .expect("refused");
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.field.as_deref(), Some("percnt"));
        assert_eq!(e.message, "unknown field `percnt`, expected `percent`");
        let e = parse_body::<PromoteBody>(br#"{"group": "b", "why": "x"}"#)
            .err()
            .expect("refused");
        assert_eq!(
            (e.field.as_deref(), e.message.as_str()),
            (Some("why"), "unknown field `why`, expected `group`")
        );
    }
}
