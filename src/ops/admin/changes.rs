//! The admin API's change endpoints (operators only): reload, the modes (rollback, promote,
//! resume), a rule's percentage and user list, and rollout-plan commands.

use http::StatusCode;
use serde_json::Value;

use super::answer::{to_json, ApiError};
use super::bodies::{
    Applied, MaintenanceBody, PercentBody, PlanBody, PromoteBody, Reloaded, UsersApplied, UsersBody,
};
use super::request::Call;
use crate::config::parse_duration;
use crate::state::plan::PlanCommand;
use crate::state::{Changed, OverlayMode, StateError};

fn applied(changed: Changed) -> Result<Value, ApiError> {
    to_json(&Applied::from(changed))
}

/// `POST /reload`: the file again; a refused file leaves the running configuration (400).
pub(super) async fn reload(call: Call<'_>) -> Result<Value, ApiError> {
    let generation = call.controller.reload().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reload refused, the running configuration stays: {e}"),
        )
    })?;
    to_json(&Reloaded {
        ok: true,
        generation,
    })
}

/// `POST /rollback`: every user of the route (or of every route) to its default group.
pub(super) async fn rollback(call: Call<'_>) -> Result<Value, ApiError> {
    set_mode(call, OverlayMode::Rollback).await
}

/// `POST /resume`: the rules run again (on every route, clearing each route's own override,
/// when no route is named).
pub(super) async fn resume(call: Call<'_>) -> Result<Value, ApiError> {
    set_mode(call, OverlayMode::Rules).await
}

/// `POST /promote {"group"}`: every user of the route (or of every route) to `group`.
pub(super) async fn promote(mut call: Call<'_>) -> Result<Value, ApiError> {
    let route = named_route(&call)?;
    let body: PromoteBody = call.body().await?;
    let mode = OverlayMode::Promote(body.group);
    let changed = call
        .controller
        .set_mode(&call.who.name, route.as_deref(), mode)
        .await?;
    applied(changed)
}

/// The route a mode change names: `None` (every route) when the path names none.
fn named_route(call: &Call<'_>) -> Result<Option<String>, ApiError> {
    Ok(call
        .route
        .map(|r| call.controller.route_name(Some(r)))
        .transpose()?)
}

async fn set_mode(call: Call<'_>, mode: OverlayMode) -> Result<Value, ApiError> {
    let route = named_route(&call)?;
    let changed = call
        .controller
        .set_mode(&call.who.name, route.as_deref(), mode)
        .await?;
    applied(changed)
}

/// The `Retry-After` of a maintenance switch without `retry_after` (seconds).
const DEFAULT_MAINTENANCE_RETRY_AFTER: u64 = 300;

/// `POST /maintenance {"on": true, "retry_after": "10m"}` / `{"on": false}`: every request of
/// the route (but the QA override's) is answered 503 with `Retry-After`, or served again.
pub(super) async fn maintenance(mut call: Call<'_>) -> Result<Value, ApiError> {
    let route = call.controller.route_name(call.route)?;
    let body: MaintenanceBody = call.body().await?;
    let retry_after = match (body.on, body.retry_after.as_deref()) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(StateError::invalid_field(
                "retry_after",
                "only with \"on\": true".to_string(),
            )
            .into())
        }
        (true, None) => Some(DEFAULT_MAINTENANCE_RETRY_AFTER),
        (true, Some(text)) => {
            let secs = parse_duration(text)
                .map_err(|e| StateError::invalid_field("retry_after", e))?
                .as_secs();
            if secs == 0 {
                return Err(StateError::invalid_field(
                    "retry_after",
                    "must be at least 1s".to_string(),
                )
                .into());
            }
            Some(secs)
        }
    };
    let changed = call
        .controller
        .set_maintenance(&call.who.name, &route, retry_after)
        .await?;
    applied(changed)
}

/// `PUT /rules/{rule}/percent {"percent"}`.
pub(super) async fn set_percent(mut call: Call<'_>) -> Result<Value, ApiError> {
    let route = call.controller.route_name(call.route)?;
    let body: PercentBody = call.body().await?;
    let rule = call.params.get("rule");
    let changed = call
        .controller
        .set_percent(&call.who.name, &route, rule, body.percent)
        .await?;
    applied(changed)
}

/// `POST /rules/{rule}/users {"add", "remove"}`.
pub(super) async fn change_users(mut call: Call<'_>) -> Result<Value, ApiError> {
    let route = call.controller.route_name(call.route)?;
    let UsersBody { add, remove } = call.body().await?;
    if add.is_empty() && remove.is_empty() {
        return Err(ApiError::bad_request("add", "nothing to add or remove"));
    }
    let rule = call.params.get("rule");
    let changed = call
        .controller
        .change_users(&call.who.name, &route, rule, add, remove)
        .await?;
    to_json(&UsersApplied::from(changed))
}

/// `POST /rules/{rule}/plan/{start|pause|resume|abort}`, with an optional body
/// `{"allow_decrease": true}` that lets a start lower the rule's percentage.
pub(super) async fn plan_command(mut call: Call<'_>) -> Result<Value, ApiError> {
    let route = call.controller.route_name(call.route)?;
    let command = call.params.get("command");
    let command = PlanCommand::parse(command).ok_or_else(|| {
        ApiError::not_found(format!(
            "no plan command {command:?} (start, pause, resume, abort)"
        ))
    })?;
    let body: PlanBody = call.optional_body().await?;
    let rule = call.params.get("rule");
    let changed = call
        .controller
        .plan_command(&call.who.name, &route, rule, command, body.allow_decrease)
        .await?;
    applied(changed)
}
