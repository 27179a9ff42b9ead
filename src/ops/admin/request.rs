//! What a handler gets: the caller, the path's named segments, the query, and the body read
//! (bounded) into a typed request that refuses unknown keys.

use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde::de::DeserializeOwned;

use super::answer::ApiError;
use crate::config::AdminToken;
use crate::state::Controller;

/// Largest request body the admin API reads.
pub(crate) const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The named segments a route's path matched (`{rule}` in `/rules/{rule}/percent`), as sent
/// (not decoded).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Params<'p>(Vec<(&'static str, &'p str)>);

impl<'p> Params<'p> {
    pub(super) fn push(&mut self, name: &'static str, value: &'p str) {
        self.0.push((name, value));
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// The last value matched: a page row's `{name*}` tail (`""` when there is none).
    pub(super) fn tail(&self) -> &'p str {
        self.0.last().map_or("", |(_, v)| v)
    }

    /// The segment named `name`; `""` when the route has none of that name (a mistake in the
    /// table, which the router's tests would catch).
    pub(crate) fn get(&self, name: &str) -> &'p str {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    }
}

/// One admin request, as a handler sees it.
pub(crate) struct Call<'a> {
    pub(crate) controller: &'a Controller,
    /// The token the request came with (its role was checked before the handler runs).
    pub(crate) who: &'a AdminToken,
    /// `Some(route)` under `/routes/{route}/…` (rows served per route only); `None` otherwise.
    pub(crate) route: Option<&'a str>,
    /// The path's named segments.
    pub(crate) params: Params<'a>,
    query: Option<&'a str>,
    session: &'a mut ServerSession,
}

impl<'a> Call<'a> {
    pub(super) fn new(
        controller: &'a Controller,
        who: &'a AdminToken,
        (route, params): (Option<&'a str>, Params<'a>),
        query: Option<&'a str>,
        session: &'a mut ServerSession,
    ) -> Self {
        Call {
            controller,
            who,
            route,
            params,
            query,
            session,
        }
    }

    /// The decoded value of query parameter `name`.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        query_param(self.query, name)
    }

    /// Every decoded query pair, in order (for parameters whose names vary: `header.NAME`).
    pub(crate) fn query_pairs(&self) -> form_urlencoded::Parse<'a> {
        form_urlencoded::parse(self.query.unwrap_or_default().as_bytes())
    }

    /// The body as the typed request `T` (at most [`MAX_ADMIN_BODY`] bytes; see [`parse_body`]).
    pub(crate) async fn body<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        parse_body(&read_body(self.session).await?)
    }

    /// The body as `T`, or `T::default()` when the request sends none (blank counts as none).
    pub(crate) async fn optional_body<T: DeserializeOwned + Default>(
        &mut self,
    ) -> Result<T, ApiError> {
        let body = read_body(self.session).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        parse_body(&body)
    }
}

/// The decoded value of query parameter `name` (`application/x-www-form-urlencoded`).
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Whether the query carries a token (`token`, `access_token` or `bearer`, any case): refused,
/// since a query ends up in logs and browser history.
pub(crate) fn token_in_query(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        ["token", "access_token", "bearer"]
            .iter()
            .any(|k| key.eq_ignore_ascii_case(k))
    })
}

/// 413 when the request declares (`Content-Length`) a body over [`MAX_ADMIN_BODY`] bytes:
/// answered before any of the body is read. (A chunked body is counted as it is read.)
pub(crate) fn declared_body_over_limit(session: &ServerSession) -> Option<ApiError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        // Pingora refuses a malformed length before the request gets here; a number too long
        // for u64 is over the limit all the same.
        .unwrap_or(u64::MAX);
    (declared > MAX_ADMIN_BODY as u64).then(|| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {declared} bytes is over the {MAX_ADMIN_BODY}-byte limit"),
        )
    })
}

/// Reads the request body, refusing more than [`MAX_ADMIN_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body over {MAX_ADMIN_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
    }
}

/// The body as a typed request, read strictly (a key given twice is refused, `-0` is 0: see
/// `json`). Errors name the field at fault: the key whose value is wrong, the unknown, missing
/// or duplicate key; `body` when it is no JSON object at all.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = super::json::read_strict(body)?;
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
    fn a_token_in_the_query_is_seen_in_any_case() {
        assert!(token_in_query("a=1&Token=x"));
        assert!(token_in_query("access_token=x"));
        assert!(token_in_query("BEARER"));
        assert!(!token_in_query("user=token&tokens=1"));
        assert!(!token_in_query(""));
    }
}
