//! The admin API's server endpoints: drain, enable or disable one server of a group
//! (admins), and read each server's mode, health, weight and requests in flight (viewers).

use serde_json::{json, Value};

use super::answer::{to_json, ApiError};
use super::request::Call;
use crate::upstreams::ServerMode;

/// The `{addr}` segment decoded (`%5B::1%5D:8001` is `[::1]:8001`): a lone form key decodes
/// exactly its percent escapes, and a server address has no `&`, `=` or `+` to mistake.
fn server_segment(call: &Call<'_>) -> String {
    let raw = call.params.get("addr");
    form_urlencoded::parse(raw.as_bytes())
        .next()
        .map_or_else(|| raw.to_string(), |(key, _)| key.into_owned())
}

async fn set_mode(call: Call<'_>, mode: Option<ServerMode>) -> Result<Value, ApiError> {
    let server = server_segment(&call);
    let changed = call
        .controller
        .set_server_mode(&call.who.name, call.params.get("group"), &server, mode)
        .await?;
    to_json(&changed)
}

/// `POST /config/groups/{group}/servers/{addr}/drain`: no new requests; those in flight
/// finish (`draining`, then `drained` once idle).
pub(super) async fn drain(call: Call<'_>) -> Result<Value, ApiError> {
    set_mode(call, Some(ServerMode::Draining)).await
}

/// `POST /config/groups/{group}/servers/{addr}/disable`: no requests at all.
pub(super) async fn disable(call: Call<'_>) -> Result<Value, ApiError> {
    set_mode(call, Some(ServerMode::Disabled)).await
}

/// `POST /config/groups/{group}/servers/{addr}/enable`: requests again.
pub(super) async fn enable(call: Call<'_>) -> Result<Value, ApiError> {
    set_mode(call, None).await
}

/// `GET /config/groups/{group}/servers`: each server of the group, in configuration order.
pub(super) async fn list(call: Call<'_>) -> Result<Value, ApiError> {
    let group = call.params.get("group");
    let servers = call.controller.group_servers(group)?;
    Ok(json!({ "group": group, "servers": to_json(&servers)? }))
}
