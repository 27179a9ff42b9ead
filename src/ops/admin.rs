//! The admin API: a JSON HTTP service on its own listener. Every request needs
//! `Authorization: Bearer <token>`; the handlers call the live [`Controller`]. Bodies are
//! read into typed requests (unknown keys refused); answers are the views in `views`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use log::info;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::views;
use crate::config::{AdminToken, Role};
use crate::routing::signed::constant_time_eq;
use crate::routing::Percent;
use crate::state::audit::{unix_ms, AUDIT_LIMIT};
use crate::state::history;
use crate::state::plan::PlanCommand;
use crate::state::{Changed, Controller, OverlayMode, StateError as ApiError};

/// Largest request body the admin API reads.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The admin API application.
pub struct AdminApp {
    controller: Arc<Controller>,
    tokens: Vec<AdminToken>,
}

/// A listening service for the admin API (and the web page, under `/ui/`) on `listen`.
pub fn admin_service(
    controller: Arc<Controller>,
    listen: &str,
    tokens: Vec<AdminToken>,
) -> Service<HttpServer<AdminApp>> {
    let mut service = Service::new(
        "canary-gateway admin".to_string(),
        HttpServer::new_app(AdminApp { controller, tokens }),
    );
    // Operators' traffic: one thread is plenty, whatever `threads` says.
    service.threads = Some(1);
    service.add_tcp(listen);
    service
}

fn json_response(status: u16, body: &Value) -> Response<Vec<u8>> {
    let mut response = super::http_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        "application/json",
        serde_json::to_vec_pretty(body).unwrap_or_default(),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn error_response(e: &ApiError) -> Response<Vec<u8>> {
    json_response(e.status, &json!({ "error": e.message, "field": e.field }))
}

fn plain_error(status: u16, message: &str) -> Response<Vec<u8>> {
    error_response(&ApiError::new(status, message))
}

/// The decoded value of query parameter `name` (`application/x-www-form-urlencoded`).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads the request body, refusing more than [`MAX_ADMIN_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(ApiError::new(
                        413,
                        format!("request body over {MAX_ADMIN_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ApiError::new(
                    400,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
    }
}

/// `PUT /rules/{name}/percent`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PercentBody {
    percent: Percent,
}

/// `POST /rules/{name}/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `POST /promote`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    group: String,
}

/// The body as a typed request. Errors name the field at fault: the key whose value is wrong,
/// the unknown key, or the missing one; `body` when it is no JSON object at all.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("body", format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("body", "expected a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = if path == "." {
            // Unknown and missing keys are reported on the object; serde names them in `..`.
            message.split('`').nth(1).unwrap_or("body").to_string()
        } else {
            path
        };
        ApiError::bad_request(&field, message)
    })
}

impl AdminApp {
    /// `GET /audit`: with a store, the trail every node writes to (this node's own copy when
    /// Redis does not answer); without, this node's.
    async fn audit(&self, limit: usize) -> Value {
        let shared = match self.controller.store() {
            Some(store) => Some(store.read_audit(limit).await),
            None => None,
        };
        let (source, entries, error) = match shared {
            Some(Ok(entries)) => ("store", entries, None),
            Some(Err(e)) => ("node", self.controller.local_audit(limit), Some(e.message)),
            None => ("node", self.controller.local_audit(limit), None),
        };
        json!({ "source": source, "store_error": error, "entries": entries })
    }

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

    async fn handle(
        &self,
        session: &mut ServerSession,
        who: &AdminToken,
    ) -> Result<Value, ApiError> {
        let actor = who.name.as_str();
        let method = session.req_header().method.clone();
        let uri = session.req_header().uri.clone();
        let path = uri.path();
        let query = uri.query();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // `/routes/{route}/...` names a route; the same paths without it mean every route
        // (rollback, promote, resume) or the one route there is (rules).
        let (route, rest) = match segments.as_slice() {
            ["routes", route, rest @ ..] if !rest.is_empty() => (Some(*route), rest),
            all => (None, all),
        };
        let not_allowed = || ApiError::new(405, format!("{method} is not allowed on {path}"));
        let ok =
            |c: Changed| json!({ "ok": true, "generation": c.generation, "version": c.version });
        match (route, rest) {
            (None, ["status"]) => match method {
                Method::GET => Ok(views::status(&self.controller.view())),
                _ => Err(not_allowed()),
            },
            (None, ["stats", "history"]) => match method {
                Method::GET => {
                    let series = self
                        .controller
                        .history()
                        .view(unix_ms(), &history::readings());
                    Ok(json!({ "bucket_seconds": history::BUCKET_SECONDS, "series": series }))
                }
                _ => Err(not_allowed()),
            },
            (None, ["whoami"]) => match method {
                Method::GET => Ok(json!({ "name": who.name, "role": who.role.as_str() })),
                _ => Err(not_allowed()),
            },
            (None, ["explain"]) => match method {
                Method::GET => {
                    let param = |name| query_param(query, name);
                    let (host, target, user, header) =
                        (param("host"), param("path"), param("user"), param("header"));
                    let explanation = self.controller.explain(
                        host.as_deref(),
                        target.as_deref(),
                        user.as_deref(),
                        header.as_deref(),
                    )?;
                    Ok(views::explain(
                        &explanation,
                        host.as_deref(),
                        target.as_deref(),
                        user.as_deref(),
                        header.as_deref(),
                    ))
                }
                _ => Err(not_allowed()),
            },
            (None, ["audit"]) => match method {
                Method::GET => {
                    let limit = match query_param(query, "limit") {
                        None => AUDIT_LIMIT,
                        Some(n) => n
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=AUDIT_LIMIT).contains(n))
                            .ok_or_else(|| {
                                ApiError::bad_request(
                                    "limit",
                                    format!("{n:?} is not a number in 1..={AUDIT_LIMIT}"),
                                )
                            })?,
                    };
                    Ok(self.audit(limit).await)
                }
                _ => Err(not_allowed()),
            },
            (None, ["reload"]) => match method {
                Method::POST => self
                    .controller
                    .reload()
                    .map(|generation| json!({ "ok": true, "generation": generation }))
                    .map_err(|e| {
                        ApiError::new(
                            400,
                            format!("reload refused, the running configuration stays: {e}"),
                        )
                    }),
                _ => Err(not_allowed()),
            },
            (_, ["rollback"] | ["resume"]) => match method {
                Method::POST => {
                    let mode = if rest[0] == "rollback" {
                        OverlayMode::Rollback
                    } else {
                        OverlayMode::Rules
                    };
                    let route = route
                        .map(|r| self.controller.route_name(Some(r)))
                        .transpose()?;
                    self.controller
                        .set_mode(actor, route.as_deref(), mode)
                        .await
                        .map(ok)
                }
                _ => Err(not_allowed()),
            },
            (_, ["promote"]) => match method {
                Method::POST => {
                    let route = route
                        .map(|r| self.controller.route_name(Some(r)))
                        .transpose()?;
                    let body: PromoteBody = parse_body(&read_body(session).await?)?;
                    self.controller
                        .set_mode(actor, route.as_deref(), OverlayMode::Promote(body.group))
                        .await
                        .map(ok)
                }
                _ => Err(not_allowed()),
            },
            (_, ["rules", name, "percent"]) => match method {
                Method::PUT => {
                    let route = self.controller.route_name(route)?;
                    let body: PercentBody = parse_body(&read_body(session).await?)?;
                    self.controller
                        .set_percent(actor, &route, name, body.percent)
                        .await
                        .map(ok)
                }
                _ => Err(not_allowed()),
            },
            (_, ["rules", name, "users"]) => match method {
                Method::GET => {
                    let route = self.controller.route_name(route)?;
                    let user = query_param(query, "user")
                        .ok_or_else(|| ApiError::bad_request("user", "give ?user=ID"))?;
                    let member = self.controller.is_member(&route, name, &user)?;
                    Ok(json!({ "route": route, "rule": name, "user": user, "member": member }))
                }
                Method::POST => {
                    let route = self.controller.route_name(route)?;
                    let UsersBody { add, remove } = parse_body(&read_body(session).await?)?;
                    if add.is_empty() && remove.is_empty() {
                        return Err(ApiError::bad_request("add", "nothing to add or remove"));
                    }
                    self.controller
                        .change_users(actor, &route, name, add, remove)
                        .await
                        .map(ok)
                }
                _ => Err(not_allowed()),
            },
            (_, ["rules", name, "plan", command]) => match method {
                Method::POST => {
                    let route = self.controller.route_name(route)?;
                    let command = PlanCommand::parse(command).ok_or_else(|| {
                        ApiError::not_found(format!(
                            "no plan command {command:?} (start, pause, resume, abort)"
                        ))
                    })?;
                    self.controller
                        .plan_command(actor, &route, name, command)
                        .await
                        .map(ok)
                }
                _ => Err(not_allowed()),
            },
            _ => Err(ApiError::not_found(format!("no endpoint {path}"))),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // The page itself holds no data: it is served without a token, and asks for one.
        if let Some(page) = super::ui::page(session.req_header().uri.path()) {
            return page;
        }
        let query = session.req_header().uri.query().unwrap_or("");
        let token_in_query = query.split('&').any(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            ["token", "access_token", "bearer"]
                .iter()
                .any(|k| key.eq_ignore_ascii_case(k))
        });
        if token_in_query {
            return plain_error(
                400,
                "a token in the query string is refused; send Authorization: Bearer <token>",
            );
        }
        let Some(who) = self.authorized(session) else {
            let mut response = plain_error(401, "missing or wrong bearer token");
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return response;
        };
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if who.role == Role::Viewer && method != Method::GET && method != Method::HEAD {
            info!("admin: {method} {path} by viewer {} refused", who.name);
            return plain_error(
                403,
                &format!(
                    "token {:?} is a viewer: it can read everything and change nothing",
                    who.name
                ),
            );
        }
        let result = self.handle(session, who).await;
        match &result {
            Ok(_) if method == Method::GET => {}
            Ok(_) => info!("admin: {method} {path} applied (by {})", who.name),
            Err(e) => info!(
                "admin: {method} {path} by {} -> {} {}",
                who.name, e.status, e.message
            ),
        }
        match result {
            Ok(body) => json_response(200, &body),
            Err(e) => error_response(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param(Some("user=a%2Bb&header=canary"), "user").as_deref(),
            Some("a+b")
        );
        assert_eq!(
            query_param(Some("user=a+b"), "user").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param(Some("header=canary"), "user"), None);
        assert_eq!(
            query_param(Some("user=%zz"), "user").as_deref(),
            Some("%zz"),
            "a bad escape stays as it is"
        );
        assert_eq!(query_param(None, "user"), None);
    }

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
}
