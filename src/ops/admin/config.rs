//! The configuration objects' endpoints: `GET /config/routes` and `/config/groups` (every
//! route and group in force, with where each comes from), `GET/PUT/DELETE
//! /config/routes/{name}` and `/config/groups/{name}`. A PUT's body is the object as JSON in
//! the file's shape; writes need the admin role (the route table says so). Answers: 409 when
//! the file defines the name, 422 naming the key when the merged configuration does not
//! validate (nothing changes), 404 for a DELETE of an object the API did not make.

use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::answer::{to_json, ApiError};
use super::bodies::Applied;
use super::request::Call;
use crate::config::objects::ObjectKind;
use crate::config::spec::{GroupSpec, RouteSpec};
use crate::state::objects::ViewedObject;
use crate::state::{ErrorKind, StateError};

/// `GET /config/routes`: every route in force, in the configuration's order.
pub(super) async fn routes(call: Call<'_>) -> Result<Value, ApiError> {
    let view = call.controller.config_objects();
    let routes: Vec<Value> = view
        .routes
        .iter()
        .map(route_json)
        .collect::<Result<_, _>>()?;
    Ok(json!({ "routes": routes }))
}

/// `GET /config/groups`: every group in force, by name.
pub(super) async fn groups(call: Call<'_>) -> Result<Value, ApiError> {
    let view = call.controller.config_objects();
    let groups: Vec<Value> = view
        .groups
        .iter()
        .map(group_json)
        .collect::<Result<_, _>>()?;
    Ok(json!({ "groups": groups }))
}

/// `GET /config/routes/{name}`.
pub(super) async fn route(call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    let view = call.controller.config_objects();
    match view.routes.iter().find(|r| r.name == name) {
        Some(route) => route_json(route),
        None => Err(ApiError::not_found(format!("no route named {name:?}"))),
    }
}

/// `GET /config/groups/{name}`.
pub(super) async fn group(call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    let view = call.controller.config_objects();
    match view.groups.iter().find(|g| g.name == name) {
        Some(group) => group_json(group),
        None => Err(ApiError::not_found(format!("no group named {name:?}"))),
    }
}

/// `PUT /config/routes/{name}`: the body is a route as the file writes it (`name` may be
/// left out; given, it must be the path's).
pub(super) async fn put_route(mut call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    let mut body: Value = call.body().await?;
    match body.get("name") {
        None => {
            if let Some(object) = body.as_object_mut() {
                object.insert("name".into(), Value::String(name.to_string()));
            }
        }
        Some(Value::String(given)) if given == name => {}
        Some(given) => {
            return Err(unprocessable(
                &format!("routes.{name}.name"),
                format!("{given} is not the path's route name {name:?}"),
            ))
        }
    }
    let route: RouteSpec = object_body(ObjectKind::Route, name, body)?;
    let changed = call
        .controller
        .put_route(&call.who.name, name, route)
        .await
        .map_err(write_error)?;
    to_json(&Applied::from(changed))
}

/// `PUT /config/groups/{name}`: the body is a group as the file writes it.
pub(super) async fn put_group(mut call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    let body: Value = call.body().await?;
    let group: GroupSpec = object_body(ObjectKind::Group, name, body)?;
    let changed = call
        .controller
        .put_group(&call.who.name, name, group)
        .await
        .map_err(write_error)?;
    to_json(&Applied::from(changed))
}

/// `DELETE /config/routes/{name}`.
pub(super) async fn delete_route(call: Call<'_>) -> Result<Value, ApiError> {
    delete(call, ObjectKind::Route).await
}

/// `DELETE /config/groups/{name}`.
pub(super) async fn delete_group(call: Call<'_>) -> Result<Value, ApiError> {
    delete(call, ObjectKind::Group).await
}

async fn delete(call: Call<'_>, kind: ObjectKind) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    let changed = call
        .controller
        .delete_object(&call.who.name, kind, name)
        .await
        .map_err(write_error)?;
    to_json(&Applied::from(changed))
}

/// The body as the object `T`, in the file's shape: a wrong type, an unknown or missing key
/// is 422 naming the key under the object (`routes.shop.routing.defualt`), as `-t` names a
/// file's.
fn object_body<T: DeserializeOwned>(
    kind: ObjectKind,
    name: &str,
    body: Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let key = if path == "." {
            format!("{}.{name}", kind.plural())
        } else {
            format!("{}.{name}.{path}", kind.plural())
        };
        unprocessable(&key, message)
    })
}

/// A write refused by the controller: an invalid configuration is 422 (the others keep the
/// status of their kind: 409, 404, 503).
fn write_error(e: StateError) -> ApiError {
    match e.kind {
        ErrorKind::Invalid => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: e.field,
            message: e.message,
        },
        _ => ApiError::from(e),
    }
}

/// 422 naming `key`.
fn unprocessable(key: &str, message: String) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        field: Some(key.to_string()),
        message: format!("{key}: {message}"),
    }
}

/// One object as `GET` shows it: its name, where it comes from (`file` or `api`), whether
/// this node serves it (`served: false`: a control-state object that does not fit this
/// node's file), and the object in the file's shape under its kind (`route` or `group`),
/// inline secrets redacted.
fn object_json<T: Serialize>(
    kind: ObjectKind,
    viewed: &ViewedObject<T>,
) -> Result<Value, ApiError> {
    let mut answer = json!({
        "name": viewed.name,
        "source": viewed.source.as_str(),
        "served": viewed.served,
    });
    answer[kind.as_str()] = to_json(&viewed.object)?;
    Ok(answer)
}

fn route_json(route: &ViewedObject<RouteSpec>) -> Result<Value, ApiError> {
    object_json(ObjectKind::Route, route)
}

fn group_json(group: &ViewedObject<GroupSpec>) -> Result<Value, ApiError> {
    object_json(ObjectKind::Group, group)
}
