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

/// `PUT /config/certificates/{name}`: a PEM chain (leaf first) and the leaf's PEM key, or
/// `acme`: the DNS names of a certificate to order from `gateway.acme`'s CA — one or the
/// other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateBody {
    chain: Option<String>,
    key: Option<String>,
    acme: Option<Vec<String>>,
}

/// What a certificate PUT asks for.
enum Wanted {
    Upload { chain: String, key: String },
    Acme(Vec<String>),
}

impl CertificateBody {
    /// Exactly one of `acme` or `chain` with `key`: otherwise the body is malformed, 400
    /// naming the field (as a body missing a field always was).
    fn wanted(self) -> Result<Wanted, ApiError> {
        let invalid = ApiError::bad_request;
        match (self.acme, self.chain, self.key) {
            (Some(names), None, None) => Ok(Wanted::Acme(names)),
            (Some(_), _, _) => Err(invalid(
                "acme",
                "either acme (names to order) or chain and key (an upload), not both",
            )),
            (None, Some(chain), Some(key)) => Ok(Wanted::Upload { chain, key }),
            (None, None, _) => Err(invalid(
                "chain",
                "missing: send chain and key (an upload) or acme (names to order)",
            )),
            (None, Some(_), None) => Err(invalid("key", "missing: an upload needs its key")),
        }
    }
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

/// One uploaded certificate or ACME request by name, as listed.
fn row_of(call: &Call<'_>, name: &str) -> Option<crate::state::CertificateRow> {
    let controller = &call.controller;
    controller
        .uploaded_rows(Some(name))
        .pop()
        .or_else(|| controller.acme_request_rows(Some(name)).pop())
}

/// `GET /config/certificates/{name}`: one uploaded certificate or ACME request (404 when
/// there is none).
pub(super) async fn one(call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    match row_of(&call, name) {
        Some(row) => to_json(&row),
        None => Err(ApiError::not_found(format!(
            "no uploaded certificate or ACME request named {name:?}"
        ))),
    }
}

/// `PUT /config/certificates/{name} {"chain", "key"}`: stores (or replaces) the upload; every
/// TLS listener of every node serves it by SNI once applied, without a reload.
/// `{"acme": [names]}`: records a request that the ACME task orders (with a store: one node,
/// under the certificate's lease) and renews; every TLS listener serves it once issued.
/// 409 when the name is taken by the other kind.
pub(super) async fn put(mut call: Call<'_>) -> Result<Value, ApiError> {
    let body: CertificateBody = call.body().await?;
    let name = call.params.get("name");
    let changed = match body.wanted()? {
        Wanted::Upload { chain, key } => {
            call.controller
                .put_certificate(&call.who.name, name, &chain, &key)
                .await
        }
        Wanted::Acme(names) => {
            call.controller
                .put_acme_request(&call.who.name, name, &names)
                .await
        }
    }
    .map_err(unprocessable)?;
    let mut answer = to_json(&Applied::from(changed))?;
    if let Some(row) = row_of(&call, name) {
        answer["certificate"] = to_json(&row)?;
    }
    Ok(answer)
}

/// `DELETE /config/certificates/{name}` (404 when there is no such upload or request): an
/// upload's names fall back to the files' (or ACME's) certificates; an ACME request is no
/// longer renewed, and its names fall back likewise (unless a listener's `tls.acme` names
/// them).
pub(super) async fn delete(call: Call<'_>) -> Result<Value, ApiError> {
    let name = call.params.get("name");
    let changed = call
        .controller
        .delete_certificate(&call.who.name, name)
        .await?;
    to_json(&Applied::from(changed))
}
