//! The admin API's certificate endpoints: upload (`PUT`) and delete listener certificates
//! served by SNI (admin only), and the list of every certificate the gateway serves (any
//! role). No answer ever holds a private key.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::answer::{to_json, ApiError};
use super::bodies::Applied;
use super::request::Call;
use crate::state::{ErrorKind, StateError};

/// `PUT /config/certificates/{name}`: a PEM chain (leaf first) and the leaf's PEM key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateBody {
    chain: String,
    key: String,
}

/// A certificate the gateway cannot serve is a well-formed request it cannot process: 422,
/// naming the field (`chain`, `key`, `name`).
fn unprocessable(e: StateError) -> ApiError {
    let mut error = ApiError::from(e.clone());
    if e.kind == ErrorKind::Invalid {
        error.status = StatusCode::UNPROCESSABLE_ENTITY;
    }
    error
}

/// `GET /config/certificates`: every certificate served — the files' per TLS listener, the
/// ACME ones and the uploaded ones — with names, issuer, serial, expiry and days left.
pub(super) async fn list(call: Call<'_>) -> Result<Value, ApiError> {
    Ok(json!({ "certificates": to_json(&call.controller.certificate_rows())? }))
}

/// `GET /config/certificates/{name}`: one uploaded certificate (404 when there is none).
pub(super) async fn one(call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    match call.controller.uploaded_rows(Some(name)).pop() {
        Some(row) => to_json(&row),
        None => Err(ApiError::not_found(format!(
            "no uploaded certificate named {name:?}"
        ))),
    }
}

/// `PUT /config/certificates/{name} {"chain", "key"}`: stores (or replaces) the upload; every
/// TLS listener of every node serves it by SNI once applied, without a reload.
pub(super) async fn put(mut call: Call<'_>) -> Result<Value, ApiError> {
    let body: CertificateBody = call.body().await?;
    let name = call.params.get("name");
    let changed = call
        .controller
        .put_certificate(&call.who.name, name, &body.chain, &body.key)
        .await
        .map_err(unprocessable)?;
    let mut answer = to_json(&Applied::from(changed))?;
    if let Some(row) = call.controller.uploaded_rows(Some(name)).pop() {
        answer["certificate"] = to_json(&row)?;
    }
    Ok(answer)
}

/// `DELETE /config/certificates/{name}` (404 when there is no such upload): its names fall
/// back to the files' (or ACME's) certificates.
pub(super) async fn delete(call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    let changed = call
        .controller
        .delete_certificate(&call.who.name, name)
        .await?;
    to_json(&Applied::from(changed))
}
