//! The access step of `request_filter`: the route's address check (`403`) and credential
//! check (`401`), and the slow password check, run off the event loop on a bounded number of
//! blocking threads, once per user and password (the route's table of verified credentials
//! spares every later request).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use http::header::AUTHORIZATION;
use http::HeaderMap;
use pingora_core::{Error, ErrorType, Result};
use tokio::sync::Semaphore;

use super::ctx::RequestCtx;
use crate::routing::access::{Access, CredentialDigest, Credentials, Refusal};

/// Credentials that are well formed but not verified yet: [`verify`] decides.
pub(super) struct Unverified {
    access: Arc<Access>,
    /// The decoded `user:password`.
    pair: Vec<u8>,
    digest: CredentialDigest,
}

/// Checks the client address, then (with `basic_auth`) the `Authorization` header; a
/// refusal is recorded in the context and returned as the error with its status. `Ok(None)`:
/// the request passes; `Ok(Some(_))`: the password must be checked first ([`verify`]).
pub(super) fn check(
    access: &Arc<Access>,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
    ctx: &mut RequestCtx,
) -> Result<Option<Unverified>> {
    if !access.admits(ip) {
        return Err(refuse(ctx, Refusal::Address));
    }
    let Some(basic) = access.basic() else {
        return Ok(None);
    };
    // The credentials are for the gateway: the origin never sees them.
    ctx.strip_authorization = true;
    let authorization = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    match basic.credentials(authorization) {
        Credentials::Verified => Ok(None),
        Credentials::Missing => Err(refuse(ctx, Refusal::Credentials)),
        Credentials::Unverified { pair, digest } => Ok(Some(Unverified {
            access: Arc::clone(access),
            pair,
            digest,
        })),
    }
}

/// Checks a password against its hash on a blocking thread (bcrypt takes milliseconds to
/// tens of them by design, which would stall every connection of this event loop), at most
/// one per CPU at a time so that a flood of wrong passwords cannot take every core; right
/// credentials are remembered. A `401` when they are wrong.
pub(super) async fn verify(unverified: Unverified, ctx: &mut RequestCtx) -> Result<()> {
    let slots = CHECKS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    });
    let _permit = slots
        .acquire()
        .await
        .map_err(|_| Error::explain(ErrorType::InternalError, "password checks closed"))?;
    let Unverified {
        access,
        pair,
        digest,
    } = unverified;
    let right = tokio::task::spawn_blocking(move || {
        let Some(basic) = access.basic() else {
            return false;
        };
        let right = basic.verify(&pair);
        if right {
            basic.remember(&digest);
        }
        right
    })
    .await
    .map_err(|_| Error::explain(ErrorType::InternalError, "the password check failed"))?;
    if right {
        Ok(())
    } else {
        Err(refuse(ctx, Refusal::Credentials))
    }
}

/// Password checks allowed at once (one per CPU).
static CHECKS: OnceLock<Semaphore> = OnceLock::new();

fn refuse(ctx: &mut RequestCtx, refusal: Refusal) -> Box<Error> {
    ctx.refused = Some(refusal);
    let why = match refusal {
        Refusal::Address => "the client address may not use this route",
        Refusal::Credentials => "missing or wrong credentials",
    };
    Error::explain(ErrorType::HTTPStatus(refusal.status()), why)
}
