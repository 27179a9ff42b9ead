//! Validation of a route's identity sources (`routing.identity`, or the older
//! `routing.cookie`): each source's keys, the JWT key file or secret, the visitor cookie.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::parse::{check_token, header_name, parse_duration};
use super::spec::{AssignSpec, IdentitySpec, JwtSpec, RoutingSpec, SecureSpec};
use super::{key_error, KeyError};
use crate::routing::identity::{AssignCookie, SameSite, Secure, Source};
use crate::routing::jwt::{algorithm, JwtSettings, JwtVerifier, TokenFrom, ALGORITHMS};
use crate::routing::{Cidr, Identity, DEFAULT_COOKIE};

/// The visitor cookie's name when `assign.cookie` is not given.
const DEFAULT_VISITOR_COOKIE: &str = "canary_vid";
/// The visitor cookie's lifetime when `assign.max_age` is not given (365 days).
const DEFAULT_VISITOR_MAX_AGE: Duration = Duration::from_secs(365 * 86400);
/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's size).
const MIN_HS256_SECRET: usize = 32;

/// A route's identity: the cookie the router reads itself, and the sources beyond it (`None`
/// when the cookie alone gives the id, the path that pays nothing for the other sources).
pub(super) struct RouteIdentity {
    pub(super) cookie: String,
    pub(super) identity: Option<Arc<Identity>>,
}

/// `routing.cookie` or `routing.identity` (`key` names the routing block).
pub(super) fn route_identity(
    routing: &RoutingSpec,
    key: &str,
    base: &Path,
    trusted_proxies: &[Cidr],
) -> Result<RouteIdentity, KeyError> {
    let specs = match (&routing.cookie, &routing.identity) {
        (Some(_), Some(_)) => {
            return Err(key_error(
                format!("{key}.cookie"),
                "set either `cookie` or `identity` (with a `cookie` source), not both".into(),
            ))
        }
        (cookie, None) => {
            let cookie = cookie.clone().unwrap_or_else(|| DEFAULT_COOKIE.into());
            check_token(&cookie, "cookie name")
                .map_err(|m| key_error(format!("{key}.cookie"), m))?;
            return Ok(RouteIdentity {
                cookie,
                identity: None,
            });
        }
        (None, Some(specs)) => specs,
    };
    if specs.is_empty() {
        return Err(key_error(
            format!("{key}.identity"),
            "needs at least one source".into(),
        ));
    }
    let mut sources = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let key = format!("{key}.identity[{i}]");
        if matches!(sources.last(), Some(Source::Assign(_))) {
            return Err(key_error(
                key,
                "comes after `assign`, which always yields an id: `assign` must be last".into(),
            ));
        }
        sources.push(source(spec, &key, base, trusted_proxies)?);
    }
    // One cookie source alone is the router's own cookie: the fast path.
    if let [Source::Cookie(name)] = sources.as_slice() {
        return Ok(RouteIdentity {
            cookie: name.to_string(),
            identity: None,
        });
    }
    let cookie = sources
        .iter()
        .find_map(|s| match s {
            Source::Cookie(name) => Some(name.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| DEFAULT_COOKIE.into());
    Ok(RouteIdentity {
        cookie,
        identity: Some(Arc::new(Identity::new(sources))),
    })
}

fn source(
    spec: &IdentitySpec,
    key: &str,
    base: &Path,
    trusted_proxies: &[Cidr],
) -> Result<Source, KeyError> {
    let given = [
        spec.cookie.is_some(),
        spec.header.is_some(),
        spec.jwt.is_some(),
        spec.assign.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(key_error(
            key.into(),
            "give exactly one of `cookie`, `header`, `jwt` and `assign`".into(),
        ));
    }
    if spec.from.is_some() && spec.header.is_none() {
        return Err(key_error(
            format!("{key}.from"),
            "goes with a `header` source only".into(),
        ));
    }
    if let Some(name) = &spec.cookie {
        check_token(name, "cookie name").map_err(|m| key_error(format!("{key}.cookie"), m))?;
        return Ok(Source::Cookie(name.as_str().into()));
    }
    if let Some(name) = &spec.header {
        let name = header_name(name).map_err(|m| key_error(format!("{key}.header"), m))?;
        let from = match &spec.from {
            None => trusted_proxies.to_vec(),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    Cidr::parse(c).map_err(|e| key_error(format!("{key}.from[{j}]"), e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        if from.is_empty() {
            return Err(key_error(
                format!("{key}.from"),
                "is empty (and so is gateway.trusted_proxies): the header would never be believed"
                    .into(),
            ));
        }
        return Ok(Source::Header {
            name: name.into(),
            from,
        });
    }
    if let Some(jwt) = &spec.jwt {
        return Ok(Source::Jwt(Arc::new(verifier(
            jwt,
            &format!("{key}.jwt"),
            base,
        )?)));
    }
    match &spec.assign {
        Some(assign) => Ok(Source::Assign(visitor_cookie(
            assign,
            &format!("{key}.assign"),
        )?)),
        None => unreachable!("exactly one source kind was checked above"),
    }
}

/// `jwt`: the verifier, with its keys read now (a reload reads them again).
fn verifier(spec: &JwtSpec, key: &str, base: &Path) -> Result<JwtVerifier, KeyError> {
    if spec.algorithms.is_empty() {
        return Err(key_error(
            format!("{key}.algorithms"),
            "needs at least one algorithm".into(),
        ));
    }
    let mut algorithms = Vec::with_capacity(spec.algorithms.len());
    for (j, name) in spec.algorithms.iter().enumerate() {
        let alg = algorithm(name).ok_or_else(|| {
            let known: Vec<&str> = ALGORITHMS.iter().map(|(n, _)| *n).collect();
            key_error(
                format!("{key}.algorithms[{j}]"),
                format!("{name:?} is not one of {}", known.join(", ")),
            )
        })?;
        algorithms.push(alg);
    }
    let hs256 = algorithms.contains(&jsonwebtoken::Algorithm::HS256);
    let claim = spec.claim.clone().unwrap_or_else(|| "sub".into());
    if claim.is_empty() || claim.split('.').any(str::is_empty) {
        return Err(key_error(
            format!("{key}.claim"),
            format!("{claim:?} is not a claim name or a dotted path like user.id"),
        ));
    }
    let leeway = match &spec.leeway {
        Some(text) => parse_duration(text).map_err(|m| key_error(format!("{key}.leeway"), m))?,
        None => Duration::ZERO,
    };
    let from = match (&spec.header, &spec.cookie) {
        (Some(_), Some(_)) => {
            return Err(key_error(
                key.into(),
                "read the token from either `header` or `cookie`, not both".into(),
            ))
        }
        (Some(h), None) => TokenFrom::Header(
            header_name(h)
                .map_err(|m| key_error(format!("{key}.header"), m))?
                .into(),
        ),
        (None, Some(c)) => {
            check_token(c, "cookie name").map_err(|m| key_error(format!("{key}.cookie"), m))?;
            TokenFrom::Cookie(c.as_str().into())
        }
        (None, None) => TokenFrom::Bearer,
    };
    let settings = JwtSettings {
        claim,
        algorithms,
        issuer: spec.issuer.clone(),
        audience: spec.audience.clone(),
        leeway_secs: leeway.as_secs(),
        from,
    };
    match (&spec.keys_file, &spec.secret_env) {
        (Some(_), Some(_)) => Err(key_error(
            key.into(),
            "set either `keys_file` or `secret_env`, not both".into(),
        )),
        (None, None) => Err(key_error(
            key.into(),
            "needs `keys_file` (a JWKS) or `secret_env` (an HS256 secret)".into(),
        )),
        (Some(path), None) => {
            if hs256 {
                return Err(key_error(
                    format!("{key}.algorithms"),
                    "HS256 takes `secret_env`, not a key file".into(),
                ));
            }
            let full = base.join(path);
            let text = std::fs::read_to_string(&full).map_err(|e| {
                key_error(
                    format!("{key}.keys_file"),
                    format!("cannot read {}: {e}", full.display()),
                )
            })?;
            JwtVerifier::from_jwks(settings, &text).map_err(|e| {
                key_error(
                    format!("{key}.keys_file"),
                    format!("{}: {e}", full.display()),
                )
            })
        }
        (None, Some(var)) => {
            if settings
                .algorithms
                .iter()
                .any(|a| *a != jsonwebtoken::Algorithm::HS256)
            {
                return Err(key_error(
                    format!("{key}.algorithms"),
                    "`secret_env` verifies HS256 only; other algorithms take `keys_file`".into(),
                ));
            }
            let secret = std::env::var(var).map_err(|_| {
                key_error(
                    format!("{key}.secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            if secret.len() < MIN_HS256_SECRET {
                return Err(key_error(
                    format!("{key}.secret_env"),
                    format!(
                        "the secret must be at least {MIN_HS256_SECRET} bytes (value not shown)"
                    ),
                ));
            }
            Ok(JwtVerifier::from_secret(settings, secret.as_bytes()))
        }
    }
}

/// `assign`: the visitor cookie and its attributes.
fn visitor_cookie(spec: &AssignSpec, key: &str) -> Result<AssignCookie, KeyError> {
    let name = spec
        .cookie
        .clone()
        .unwrap_or_else(|| DEFAULT_VISITOR_COOKIE.into());
    check_token(&name, "cookie name").map_err(|m| key_error(format!("{key}.cookie"), m))?;
    let max_age = match &spec.max_age {
        Some(text) => match parse_duration(text) {
            Ok(d) if d.as_secs() > 0 => d,
            Ok(_) => {
                return Err(key_error(
                    format!("{key}.max_age"),
                    format!("{text:?} must be at least 1s"),
                ))
            }
            Err(m) => return Err(key_error(format!("{key}.max_age"), m)),
        },
        None => DEFAULT_VISITOR_MAX_AGE,
    };
    let same_site = match spec.same_site.as_deref() {
        None | Some("lax") => SameSite::Lax,
        Some("strict") => SameSite::Strict,
        Some("none") => SameSite::None,
        Some(other) => {
            return Err(key_error(
                format!("{key}.same_site"),
                format!("{other:?} is not lax, strict or none"),
            ))
        }
    };
    let secure = match &spec.secure {
        None => Secure::Auto,
        Some(SecureSpec::On(true)) => Secure::Always,
        Some(SecureSpec::On(false)) => Secure::Never,
        Some(SecureSpec::Mode(m)) if m == "auto" => Secure::Auto,
        Some(SecureSpec::Mode(m)) => {
            return Err(key_error(
                format!("{key}.secure"),
                format!("{m:?} is not auto, true or false"),
            ))
        }
    };
    if same_site == SameSite::None && secure == Secure::Never {
        return Err(key_error(
            format!("{key}.same_site"),
            "`none` needs a Secure cookie (browsers drop it otherwise); secure is false".into(),
        ));
    }
    let cookie_text_ok = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    };
    if let Some(domain) = &spec.domain {
        if !cookie_text_ok(domain) {
            return Err(key_error(
                format!("{key}.domain"),
                format!("{domain:?} is not a cookie domain"),
            ));
        }
    }
    let path = spec.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || !cookie_text_ok(&path) {
        return Err(key_error(
            format!("{key}.path"),
            format!("{path:?} is not a cookie path starting with /"),
        ));
    }
    Ok(AssignCookie {
        name: name.into(),
        max_age,
        same_site,
        secure,
        http_only: spec.http_only.unwrap_or(true),
        domain: spec.domain.as_deref().map(Box::from),
        path: path.into(),
    })
}
