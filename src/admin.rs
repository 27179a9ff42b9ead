//! The admin API: a JSON HTTP service on its own listener. Every request needs
//! `Authorization: Bearer <token>`; the handlers call the live [`Controller`].

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use log::info;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::{json, Value};

use crate::live::{ApiError, Controller, OverlayMode};
use crate::secure::constant_time_eq;

/// Largest request body the admin API reads.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The admin API application.
pub struct AdminApp {
    controller: Arc<Controller>,
    token: String,
}

/// A listening service for the admin API on `listen`.
pub fn admin_service(
    controller: Arc<Controller>,
    listen: &str,
    token: String,
) -> Service<HttpServer<AdminApp>> {
    let mut service = Service::new(
        "canary-gateway admin".to_string(),
        HttpServer::new_app(AdminApp { controller, token }),
    );
    service.add_tcp(listen);
    service
}

fn json_response(status: u16, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    let length = bytes.len();
    let mut response = Response::new(bytes);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn error_response(e: &ApiError) -> Response<Vec<u8>> {
    json_response(e.status, &json!({ "error": e.message, "field": e.field }))
}

fn plain_error(status: u16, message: &str) -> Response<Vec<u8>> {
    error_response(&ApiError {
        status,
        field: None,
        message: message.to_string(),
    })
}

/// Decodes one `application/x-www-form-urlencoded` query value.
fn url_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The decoded value of query parameter `name`.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| url_decode(v))
}

/// Reads the request body, refusing more than [`MAX_ADMIN_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(ApiError {
                        status: 413,
                        field: None,
                        message: format!("request body over {MAX_ADMIN_BODY} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ApiError {
                    status: 400,
                    field: None,
                    message: format!("cannot read the request body: {e}"),
                })
            }
        }
    }
}

/// The body as a JSON object.
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("body", "expected a JSON object")),
        Err(e) => Err(ApiError::bad_request("body", format!("invalid JSON: {e}"))),
    }
}

/// Rejects keys other than `allowed`.
fn only_keys(map: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(
            k,
            format!("unknown field (expected: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A list of strings under `field` (missing = empty).
fn string_list(map: &serde_json::Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match map.get(field) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(field, "expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(field, "expected a list of strings")),
    }
}

impl AdminApp {
    /// A change to a store-backed rule goes to Redis (and from there to every node); this node
    /// applies it at once too.
    async fn store_write(
        &self,
        store: &crate::store::Store,
        set: String,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<u64, ApiError> {
        crate::live::check_user_ids(&add, &remove)?;
        let change = crate::store::Change { set, add, remove };
        store.write(&change).await.map_err(|e| ApiError {
            status: 503,
            field: None,
            message: format!("the store is unavailable, nothing changed: {e}"),
        })?;
        if store.apply(&change) {
            self.controller.refresh_store();
        }
        Ok(self.controller.generation())
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(value) = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
        else {
            return false;
        };
        let value = value.as_bytes();
        match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                constant_time_eq(&value[7..], self.token.as_bytes())
            }
            _ => false,
        }
    }

    async fn handle(&self, session: &mut ServerSession) -> Result<Value, ApiError> {
        let method = session.req_header().method.clone();
        let uri = session.req_header().uri.clone();
        let path = uri.path();
        let query = uri.query();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let not_allowed = || ApiError {
            status: 405,
            field: None,
            message: format!("{method} is not allowed on {path}"),
        };
        let ok = |generation: u64| json!({ "ok": true, "generation": generation });
        match segments.as_slice() {
            ["status"] => match method {
                Method::GET => Ok(self.controller.status()),
                _ => Err(not_allowed()),
            },
            ["explain"] => match method {
                Method::GET => {
                    let user = query_param(query, "user");
                    let header = query_param(query, "header");
                    Ok(self.controller.explain(user.as_deref(), header.as_deref()))
                }
                _ => Err(not_allowed()),
            },
            ["reload"] => match method {
                Method::POST => self.controller.reload().map(ok).map_err(|e| ApiError {
                    status: 400,
                    field: None,
                    message: format!("reload refused, the running configuration stays: {e}"),
                }),
                _ => Err(not_allowed()),
            },
            ["rollback"] | ["resume"] => match method {
                Method::POST => {
                    let mode = if segments[0] == "rollback" {
                        OverlayMode::Rollback
                    } else {
                        OverlayMode::Rules
                    };
                    self.controller.set_mode(mode).map(ok)
                }
                _ => Err(not_allowed()),
            },
            ["promote"] => match method {
                Method::POST => {
                    let body = json_object(&read_body(session).await?)?;
                    only_keys(&body, &["group"])?;
                    let group = body
                        .get("group")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::bad_request("group", "expected a group name"))?;
                    self.controller
                        .set_mode(OverlayMode::Promote(group.to_string()))
                        .map(ok)
                }
                _ => Err(not_allowed()),
            },
            ["rules", name, "percent"] => match method {
                Method::PUT => {
                    let body = json_object(&read_body(session).await?)?;
                    only_keys(&body, &["percent"])?;
                    let percent = body
                        .get("percent")
                        .and_then(Value::as_f64)
                        .ok_or_else(|| ApiError::bad_request("percent", "expected a number"))?;
                    self.controller.set_percent(name, percent).map(ok)
                }
                _ => Err(not_allowed()),
            },
            ["rules", name, "users"] => match method {
                Method::POST => {
                    let body = json_object(&read_body(session).await?)?;
                    only_keys(&body, &["add", "remove"])?;
                    let add = string_list(&body, "add")?;
                    let remove = string_list(&body, "remove")?;
                    if add.is_empty() && remove.is_empty() {
                        return Err(ApiError::bad_request("add", "nothing to add or remove"));
                    }
                    match self.controller.store_set(name) {
                        Some((store, set)) => {
                            self.store_write(&store, set, add, remove).await.map(ok)
                        }
                        None => self.controller.change_users(name, &add, &remove).map(ok),
                    }
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
        if !self.authorized(session) {
            let mut response = plain_error(401, "missing or wrong bearer token");
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let result = self.handle(session).await;
        match &result {
            Ok(_) if method == Method::GET => {}
            Ok(_) => info!("admin: {method} {path} applied"),
            Err(e) => info!("admin: {method} {path} -> {} {}", e.status, e.message),
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
        assert_eq!(query_param(Some("user=%zz"), "user"), None);
        assert_eq!(query_param(None, "user"), None);
    }
}
