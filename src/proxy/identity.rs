//! The identity steps of a route with `routing.identity`: resolving the user id through its
//! sources (the pure part is `routing::identity`), a new visitor id when `assign` is reached,
//! the per-thread cache of verified tokens, and the `Set-Cookie` that hands a new visitor id
//! out (**set visitor cookie**, in `response_filter`).
//!
//! The token cache is per worker thread (a `thread_local`), as Pingora keeps per-thread
//! pools: no lock, no contention, and a cache miss on another thread only costs one more
//! verification. The cache is never borrowed across a verification.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use http::HeaderValue;
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use crate::routing::identity::{new_visitor, Resolved, TokenCheck};
use crate::routing::{HeaderLookup, IdSource, Identity, JwtVerifier, Router};

/// Verified tokens one worker thread keeps (all routes together). When full, expired entries
/// are dropped; if none had expired, the whole cache is (a bounded, simple eviction: a flood of
/// valid tokens costs re-verification, never memory).
pub(crate) const TOKEN_CACHE_ENTRIES: usize = 10_000;

/// A verified token: the user id and when it expires (Unix seconds).
struct Entry {
    user: Box<[u8]>,
    exp: u64,
}

/// Tokens by verifier (a reload makes new verifiers, so old entries are never hit again)
/// and a 128-bit keyed hash of the token text: SipHash-1-3 with 128-bit output under a random
/// key this thread drew (16 bytes a token, whatever its length, so the cache's memory is
/// bounded by its entry count). The hash never leaves the process, so without the key nobody
/// can make a token that collides with a cached one; it costs a few instructions a byte, where
/// the token's SHA-256 cost ~60.
struct TokenCache {
    key: [u8; 16],
    /// Whether `key` is random: without randomness nothing is cached.
    keyed: bool,
    by_verifier: HashMap<u64, HashMap<u128, Entry>>,
    entries: usize,
}

impl Default for TokenCache {
    /// An empty cache with a fresh key (none when the system gives no randomness: then every
    /// token is verified every time).
    fn default() -> Self {
        let mut key = [0u8; 16];
        let keyed = getrandom::fill(&mut key).is_ok();
        TokenCache {
            key,
            keyed,
            by_verifier: HashMap::new(),
            entries: 0,
        }
    }
}

impl TokenCache {
    fn digest(&self, token: &str) -> u128 {
        use siphasher::sip128::{Hasher128, SipHasher13};
        use std::hash::Hasher;
        let mut hasher = SipHasher13::new_with_key(&self.key);
        hasher.write(token.as_bytes());
        hasher.finish128().as_u128()
    }
}

thread_local! {
    static TOKENS: RefCell<TokenCache> = RefCell::new(TokenCache::default());
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The proxy's [`TokenCheck`]: a token verified on this thread before is not verified again
/// before its `exp`.
pub(crate) struct CachedTokens;

impl TokenCheck for CachedTokens {
    fn check(&self, verifier: &JwtVerifier, token: &str) -> Option<Box<[u8]>> {
        let now = now_secs();
        let (key, hit) = TOKENS.with(|cache| {
            let cache = cache.borrow();
            if !cache.keyed {
                return (None, None);
            }
            let key = cache.digest(token);
            let hit = cache
                .by_verifier
                .get(&verifier.id)
                .and_then(|tokens| tokens.get(&key))
                .filter(|entry| entry.exp > now)
                .map(|entry| entry.user.clone());
            (Some(key), hit)
        });
        if hit.is_some() {
            return hit;
        }
        let verified = verifier.verify(token)?;
        let user = verified.user.clone();
        let Some(key) = key else {
            return Some(user);
        };
        TOKENS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.entries >= TOKEN_CACHE_ENTRIES {
                let mut left = 0;
                cache.by_verifier.retain(|_, tokens| {
                    tokens.retain(|_, e| e.exp > now);
                    left += tokens.len();
                    !tokens.is_empty()
                });
                cache.entries = left;
                if left >= TOKEN_CACHE_ENTRIES {
                    cache.by_verifier.clear();
                    cache.entries = 0;
                }
            }
            let previous = cache.by_verifier.entry(verifier.id).or_default().insert(
                key,
                Entry {
                    user: verified.user,
                    exp: verified.exp,
                },
            );
            if previous.is_none() {
                cache.entries += 1;
            }
        });
        Some(user)
    }
}

/// The user id of a request on a route with identity sources, and where it came from. A
/// visitor reaching `assign` without an id gets a new one now (this request's decision uses
/// it) and `ctx.set_cookie` carries it out.
pub(super) fn resolve<'a, H: HeaderLookup + ?Sized>(
    identity: &Identity,
    router: &Router,
    headers: &'a H,
    ctx: &mut RequestCtx,
    tls: bool,
) -> Resolved<'a> {
    let mut resolved = identity.resolve(
        headers,
        ctx.client.peer,
        router.signing_keys(),
        &CachedTokens,
    );
    if resolved.source == IdSource::AssignedNew {
        if let Some(cookie) = identity.assign() {
            let mut random = [0u8; 16];
            if getrandom::fill(&mut random).is_ok() {
                let (id, value) = new_visitor(&random, router.signing_keys());
                ctx.set_cookie = HeaderValue::from_str(&cookie.set_cookie(&value, tls)).ok();
                resolved.user = Some(Cow::Owned(id.into_bytes()));
            } else {
                // No randomness: the visitor stays anonymous rather than getting a guessable id.
                resolved.source = IdSource::None;
            }
        }
    }
    resolved
}

/// Set visitor cookie: the one `Set-Cookie` of a new visitor id, on the response (the
/// origin's own `Set-Cookie` headers are kept).
pub(super) fn set_visitor_cookie(
    response: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> pingora_core::Result<()> {
    if let Some(value) = ctx.set_cookie.take() {
        // `append`: the origin may set cookies of its own.
        response.append_header(http::header::SET_COOKIE, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::jwt::{JwtSettings, TokenFrom};

    const SECRET: &[u8] = b"a-test-secret-of-enough-length!!";

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_secret(
            JwtSettings {
                claim: "sub".into(),
                algorithms: vec![jsonwebtoken::Algorithm::HS256],
                issuer: None,
                audience: None,
                leeway_secs: 0,
                from: TokenFrom::Bearer,
            },
            SECRET,
        )
    }

    fn token(sub: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": sub, "exp": now_secs() + 600}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .expect("encode")
    }

    fn cached(verifier: &JwtVerifier, token: &str) -> bool {
        TOKENS.with(|c| {
            c.borrow()
                .by_verifier
                .get(&verifier.id)
                .is_some_and(|t| t.contains_key(&c.borrow().digest(token)))
        })
    }

    /// A verified token is cached under its verifier and answered from the cache; another
    /// verifier (a reload's) does not see it; an invalid token is never cached.
    #[test]
    fn verified_tokens_are_cached_per_verifier() {
        let (v, reloaded) = (verifier(), verifier());
        let t = token("alice");
        assert_eq!(CachedTokens.check(&v, &t).as_deref(), Some(&b"alice"[..]));
        assert!(cached(&v, &t));
        assert!(!cached(&reloaded, &t), "a new verifier starts empty");
        assert_eq!(CachedTokens.check(&v, &t).as_deref(), Some(&b"alice"[..]));
        assert_eq!(CachedTokens.check(&v, "x.y.z"), None);
        assert!(!cached(&v, "x.y.z"));
    }

    /// An expired entry is not answered from the cache, and the cache stays bounded.
    #[test]
    fn the_cache_is_bounded_and_expiry_is_kept() {
        let v = verifier();
        TOKENS.with(|c| {
            let mut c = c.borrow_mut();
            let key = c.digest("stale");
            c.by_verifier.entry(v.id).or_default().insert(
                key,
                Entry {
                    user: b"ghost"[..].into(),
                    exp: now_secs() - 1,
                },
            );
            c.entries += 1;
        });
        assert_eq!(
            CachedTokens.check(&v, "stale"),
            None,
            "expired: verified again"
        );
        TOKENS.with(|c| {
            let mut c = c.borrow_mut();
            let keys: Vec<u128> = (0..TOKEN_CACHE_ENTRIES)
                .map(|i| c.digest(&format!("t{i}")))
                .collect();
            let tokens = c.by_verifier.entry(v.id).or_default();
            for key in keys {
                tokens.insert(
                    key,
                    Entry {
                        user: b"u"[..].into(),
                        exp: now_secs() + 600,
                    },
                );
            }
            c.entries = TOKEN_CACHE_ENTRIES + 1;
        });
        let t = token("bob");
        assert_eq!(CachedTokens.check(&v, &t).as_deref(), Some(&b"bob"[..]));
        let entries = TOKENS.with(|c| c.borrow().entries);
        assert!(entries <= TOKEN_CACHE_ENTRIES, "{entries}");
        assert!(cached(&v, &t));
    }
}
