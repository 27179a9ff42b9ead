//! The admin API's read endpoints (any role): status, a rollout plan, history, who am I, the
//! configuration, explain, the audit trail, and whether a user is on a list.

use serde_json::Value;

use super::answer::{to_json, ApiError, Reply};
use super::bodies::{Audit, History, Membership, WhoAmI};
use super::request::Call;
use crate::config::check_token;
use crate::ops::views;
use crate::state::audit::{unix_ms, AuditFilter, AUDIT_LIMIT};
use crate::state::{history, ExplainQuery};

/// `GET /status`.
pub(super) async fn status(call: Call<'_>) -> Result<Value, ApiError> {
    Ok(views::status(&call.controller.view()))
}

/// `GET /rules/{rule}/plan`: the rule's rollout plan as `/status` shows it (404 without one).
pub(super) async fn plan(call: Call<'_>) -> Result<Value, ApiError> {
    let route = call.controller.route_name(call.route)?;
    let rule = call.params.get("rule");
    views::plan(&call.controller.view(), &route, rule).ok_or_else(|| {
        ApiError::not_found(format!(
            "rule {rule:?} of route {route:?} has no rollout plan"
        ))
    })
}

/// `GET /stats/history`.
pub(super) async fn stats_history(call: Call<'_>) -> Result<Value, ApiError> {
    let series = call
        .controller
        .history()
        .view(unix_ms(), &history::readings());
    to_json(&History {
        bucket_seconds: history::BUCKET_SECONDS,
        series,
    })
}

/// `GET /whoami`: the token's name and role.
pub(super) async fn whoami(call: Call<'_>) -> Result<Value, ApiError> {
    to_json(&WhoAmI {
        name: &call.who.name,
        role: call.who.role.as_str(),
    })
}

/// `GET /config`: the gateway section in force as YAML, inline secrets redacted.
pub(super) async fn config(call: Call<'_>) -> Result<Reply, ApiError> {
    views::config(&call.controller.spec())
        .map(Reply::Yaml)
        .map_err(|e| {
            ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the configuration: {e}"),
            )
        })
}

/// `GET /explain?host=&path=&user=&header=&header.NAME=&cookie.NAME=&query.NAME=&client=&method=`:
/// which route, group and rule a request would get, and each rule's conditions.
pub(super) async fn explain(call: Call<'_>) -> Result<Value, ApiError> {
    let q = explain_query(&call)?;
    let explanation = call.controller.explain(&q)?;
    Ok(views::explain(&explanation, &q))
}

/// The request `GET /explain` describes: `host`, `path`, `user`, `header` (a value for every
/// header rule), `header.NAME=VALUE` (a named header, repeatable), `cookie.NAME=VALUE` and
/// `query.NAME=VALUE` (repeatable), `client` (an address) and `method` (default `GET`).
/// The first of a repeated parameter wins, as [`Call::query`] reads it.
fn explain_query(call: &Call<'_>) -> Result<ExplainQuery, ApiError> {
    let mut q = ExplainQuery {
        host: call.query("host"),
        path: call.query("path"),
        user: call.query("user"),
        header: call.query("header"),
        method: call.query("method").filter(|m| !m.is_empty()),
        ..ExplainQuery::default()
    };
    if let Some(method) = &q.method {
        check_token(method, "method").map_err(|m| ApiError::bad_request("method", m))?;
    }
    if let Some(client) = call.query("client") {
        let ip = client.parse().map_err(|_| {
            ApiError::bad_request("client", format!("{client:?} is not an IP address"))
        })?;
        q.client = Some(ip);
    }
    for (key, value) in call.query_pairs() {
        if let Some(name) = key.strip_prefix("header.") {
            check_token(name, "header name").map_err(|m| ApiError::bad_request("header", m))?;
            q.headers.push((name.to_string(), value.into_owned()));
        } else if let Some(name) = key.strip_prefix("cookie.") {
            check_token(name, "cookie name").map_err(|m| ApiError::bad_request("cookie", m))?;
            if value.bytes().any(|b| b == b';' || b.is_ascii_control()) {
                return Err(ApiError::bad_request(
                    "cookie",
                    format!("the value of cookie {name:?} cannot hold ';' or control bytes"),
                ));
            }
            q.cookies.push((name.to_string(), value.into_owned()));
        } else if let Some(name) = key.strip_prefix("query.") {
            if name.is_empty() || name.contains(['&', '=', '#', '?']) {
                return Err(ApiError::bad_request(
                    "query",
                    format!("{name:?} is not a query parameter name"),
                ));
            }
            q.query.push((name.to_string(), value.into_owned()));
        }
    }
    Ok(q)
}

/// `GET /audit?limit=N&route=&rule=&actor=&before=MS`: with a store, the trail every node
/// writes to (this node's own copy when Redis does not answer); without, this node's. Newest
/// first by time; `route`, `rule` and `actor` keep the entries that name exactly that,
/// `before` those made before that Unix millisecond; `more` says older entries match too, and
/// `next_before` is the `before` that pages to them.
pub(super) async fn audit(call: Call<'_>) -> Result<Value, ApiError> {
    let limit = match call.query("limit") {
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
    let named = |key: &str| call.query(key).filter(|v| !v.is_empty());
    let filter = AuditFilter {
        route: named("route"),
        rule: named("rule"),
        actor: named("actor"),
        before_ms: match named("before") {
            None => None,
            Some(ms) => Some(ms.parse::<u64>().map_err(|_| {
                ApiError::bad_request("before", format!("{ms:?} is not Unix milliseconds"))
            })?),
        },
    };
    // The whole trail (at most AUDIT_LIMIT small entries) is read and ordered by time, so
    // paging by time is exact even when nodes' clocks disagree about the order they wrote in.
    let read = AUDIT_LIMIT;
    let controller = call.controller;
    let shared = match controller.store() {
        Some(store) => Some(store.read_audit(read).await),
        None => None,
    };
    let (source, store_error, entries) = match shared {
        Some(Ok(entries)) => ("store", None, entries),
        Some(Err(e)) => ("node", Some(e.message), controller.local_audit(read)),
        None => ("node", None, controller.local_audit(read)),
    };
    let mut entries: Vec<_> = entries.into_iter().filter(|e| filter.keeps(e)).collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
    // A page ends between two milliseconds (it may run past `limit` to do so), so the next
    // page's `before` leaves nothing out.
    let mut cut = limit.min(entries.len());
    while cut > 0 && cut < entries.len() && entries[cut].at_ms == entries[cut - 1].at_ms {
        cut += 1;
    }
    let more = entries.len() > cut;
    entries.truncate(cut);
    let next_before = entries.last().filter(|_| more).map(|e| e.at_ms);
    to_json(&Audit {
        source,
        store_error,
        more,
        next_before,
        entries,
    })
}

/// `GET /rules/{rule}/users?user=ID`: whether the user is on the rule's list now.
pub(super) async fn is_member(call: Call<'_>) -> Result<Value, ApiError> {
    let route = call.controller.route_name(call.route)?;
    let rule = call.params.get("rule");
    let user = call
        .query("user")
        .ok_or_else(|| ApiError::bad_request("user", "give ?user=ID"))?;
    let member = call.controller.is_member(&route, rule, &user)?;
    to_json(&Membership {
        route: &route,
        rule,
        user: &user,
        member,
    })
}
