//! The `jwt` identity source's verifier: the configured keys and algorithms, the issuer,
//! audience and leeway, and the claim that is the user id. Verification is the `jsonwebtoken`
//! crate's (no cryptography is written here); this file picks the key, checks the algorithm
//! against the configured list and reads the claim.
//!
//! Pure computation over the token: no I/O (the config layer reads the key file), no locks,
//! no cache (the proxy keeps one per worker thread, keyed by [`JwtVerifier::id`]).

use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::cookies::is_valid_user_id;

/// Where the token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenFrom {
    /// `Authorization: Bearer <token>` (the default).
    Bearer,
    /// The whole value of this header (lower-case name).
    Header(Box<str>),
    /// The value of this cookie.
    Cookie(Box<str>),
}

/// The key families, each verifying its own algorithms only (an HS256 token is never checked
/// against an RSA key, nor an RS256 token against a shared secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        _ => Family::Rsa,
    }
}

/// The algorithms the `jwt` source accepts in `algorithms:` (HS256 only with `secret_env`).
pub(crate) const ALGORITHMS: [(&str, Algorithm); 6] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
    ("HS256", Algorithm::HS256),
];

/// The algorithm named `name` (as in [`ALGORITHMS`]).
pub(crate) fn algorithm(name: &str) -> Option<Algorithm> {
    ALGORITHMS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// One verification key: its id (`kid`), its family and, when the JWKS names one, the only
/// algorithm it may verify.
struct Key {
    kid: Option<String>,
    family: Family,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// Why a key set was refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeysError {
    #[error("is not a JWKS document ({0})")]
    NotJwks(String),
    #[error("key {0} cannot be used ({1})")]
    BadKey(usize, String),
    #[error("holds no key for the configured algorithms")]
    NoUsableKey,
}

/// What `jwt:` is built from (the config layer fills it).
pub(crate) struct JwtSettings {
    /// The claim, as a dotted path (`sub`, `user.id`).
    pub(crate) claim: String,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) leeway_secs: u64,
    pub(crate) from: TokenFrom,
}

/// The verifier of one route's `jwt` source. Built once per load (a reload re-reads the key
/// file into a new verifier, with a new [`id`](Self::id)).
pub struct JwtVerifier {
    /// Unique per verifier in this process: caches key on it, so a reload (new keys) never
    /// reuses an entry verified with the old ones.
    pub(crate) id: u64,
    claim: Vec<Box<str>>,
    keys: Vec<Key>,
    /// One prepared validation per configured algorithm (built once, not per token).
    validations: Vec<(Algorithm, Validation)>,
    pub(crate) from: TokenFrom,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("id", &self.id)
            .field("claim", &self.claim)
            .field("keys", &self.keys.len())
            .field("from", &self.from)
            .finish()
    }
}

/// A token that passed every check: the user id from its claim and its expiry (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) user: Box<[u8]>,
    pub(crate) exp: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl JwtVerifier {
    /// A verifier over a JWKS document (the text of `keys_file`).
    pub(crate) fn from_jwks(settings: JwtSettings, jwks: &str) -> Result<Self, KeysError> {
        let set: JwkSet =
            serde_json::from_str(jwks).map_err(|e| KeysError::NotJwks(e.to_string()))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let key_family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                // A shared secret in a key file would be readable by whoever reads the file;
                // HS256 takes `secret_env` instead.
                AlgorithmParameters::OctetKey(_) => continue,
            };
            if !settings.algorithms.iter().any(|a| family(*a) == key_family) {
                continue;
            }
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| algorithm(&format!("{a:?}")));
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| KeysError::BadKey(i, e.to_string()))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                family: key_family,
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeysError::NoUsableKey);
        }
        Ok(Self::build(settings, keys))
    }

    /// A verifier of HS256 tokens signed with `secret`.
    pub(crate) fn from_secret(settings: JwtSettings, secret: &[u8]) -> Self {
        let keys = vec![Key {
            kid: None,
            family: Family::Hmac,
            alg: None,
            key: DecodingKey::from_secret(secret),
        }];
        Self::build(settings, keys)
    }

    fn build(settings: JwtSettings, keys: Vec<Key>) -> Self {
        let validations = settings
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = settings.leeway_secs;
                v.validate_nbf = true;
                // `exp` is required: a verified token is cached until it expires.
                let mut required = vec!["exp"];
                if let Some(iss) = &settings.issuer {
                    v.set_issuer(&[iss]);
                    required.push("iss");
                }
                match &settings.audience {
                    Some(aud) => {
                        v.set_audience(&[aud]);
                        required.push("aud");
                    }
                    None => v.validate_aud = false,
                }
                v.set_required_spec_claims(&required);
                (alg, v)
            })
            .collect();
        JwtVerifier {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            claim: settings.claim.split('.').map(Box::from).collect(),
            keys,
            validations,
            from: settings.from,
        }
    }

    /// Verifies `token`: its algorithm must be configured, its signature valid under a key of
    /// that algorithm's family (the `kid` picks the key when both name one), its time claims,
    /// issuer and audience right, and the claim a valid user id. `None` on any failure.
    pub(crate) fn verify(&self, token: &str) -> Option<Verified> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let (alg, validation) = self.validations.iter().find(|(a, _)| *a == header.alg)?;
        let wanted = family(*alg);
        let claims = self
            .keys
            .iter()
            .filter(|k| {
                k.family == wanted
                    && k.alg.is_none_or(|a| a == *alg)
                    && match (&k.kid, &header.kid) {
                        (Some(mine), Some(theirs)) => mine == theirs,
                        _ => true,
                    }
            })
            .find_map(|k| {
                jsonwebtoken::decode::<serde_json::Value>(token, &k.key, validation)
                    .ok()
                    .map(|data| data.claims)
            })?;
        let exp = claims.get("exp")?;
        // NumericDate may carry a fraction (RFC 7519 §2); the whole second is enough here.
        let exp = exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64))?;
        let mut value = &claims;
        for part in &self.claim {
            value = value.get(&**part)?;
        }
        let user: Box<[u8]> = match value {
            serde_json::Value::String(s) => s.as_bytes().into(),
            serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => {
                n.to_string().into_bytes().into()
            }
            _ => return None,
        };
        is_valid_user_id(&user).then_some(Verified { user, exp })
    }
}

/// The token of a request as `from` says where to find it: for `Bearer`, the `Authorization`
/// value after the scheme (compared without case).
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(algorithms: Vec<Algorithm>) -> JwtSettings {
        JwtSettings {
            claim: "sub".into(),
            algorithms,
            issuer: Some("https://auth.example".into()),
            audience: Some("web".into()),
            leeway_secs: 0,
            from: TokenFrom::Bearer,
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "sub": "alice", "iss": "https://auth.example", "aud": "web", "exp": now() + 600,
            "user": { "id": 42 }
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    const SECRET: &[u8] = b"a-test-secret-of-enough-length!!";

    /// Each failing token is "no id"; the valid one gives its `sub` and `exp`.
    #[test]
    fn hs256_table() {
        let v = JwtVerifier::from_secret(settings(vec![Algorithm::HS256]), SECRET);
        let ok = hs256(SECRET, claims(serde_json::json!({})));
        assert_eq!(v.verify(&ok).map(|x| x.user), Some(b"alice"[..].into()));
        let cases = [
            (
                "expired",
                hs256(SECRET, claims(serde_json::json!({"exp": now() - 100}))),
            ),
            (
                "future nbf",
                hs256(SECRET, claims(serde_json::json!({"nbf": now() + 100}))),
            ),
            (
                "wrong iss",
                hs256(SECRET, claims(serde_json::json!({"iss": "evil"}))),
            ),
            (
                "wrong aud",
                hs256(SECRET, claims(serde_json::json!({"aud": "other"}))),
            ),
            (
                "bad key",
                hs256(
                    b"another-secret-of-enough-length!",
                    claims(serde_json::json!({})),
                ),
            ),
            (
                "no exp",
                hs256(
                    SECRET,
                    serde_json::json!({"sub": "a", "iss": "https://auth.example", "aud": "web"}),
                ),
            ),
            (
                "no iss",
                hs256(
                    SECRET,
                    serde_json::json!({"sub": "a", "aud": "web", "exp": now() + 60}),
                ),
            ),
            (
                "bad id",
                hs256(SECRET, claims(serde_json::json!({"sub": "has space"}))),
            ),
            ("garbage", "not.a.token".to_string()),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    b64(r#"{"alg":"none","typ":"JWT"}"#),
                    b64(&claims(serde_json::json!({})).to_string())
                ),
            ),
        ];
        for (what, token) in cases {
            assert_eq!(v.verify(&token), None, "{what}");
        }
    }

    fn b64(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// A dotted claim path reaches into objects; a number is its decimal text.
    #[test]
    fn dotted_claim() {
        let mut s = settings(vec![Algorithm::HS256]);
        s.claim = "user.id".into();
        let v = JwtVerifier::from_secret(s, SECRET);
        let token = hs256(SECRET, claims(serde_json::json!({})));
        assert_eq!(v.verify(&token).map(|x| x.user), Some(b"42"[..].into()));
    }

    /// An algorithm not in the list is refused even with the right key.
    #[test]
    fn unlisted_algorithm() {
        let v = JwtVerifier::from_secret(settings(vec![Algorithm::HS384]), SECRET);
        let token = hs256(SECRET, claims(serde_json::json!({})));
        assert_eq!(v.verify(&token), None);
    }

    /// A JWKS with only symmetric keys, or none for the algorithms, is refused at load.
    #[test]
    fn key_sets() {
        let s = || settings(vec![Algorithm::RS256]);
        assert!(matches!(
            JwtVerifier::from_jwks(s(), "{}"),
            Err(KeysError::NotJwks(_))
        ));
        assert!(matches!(
            JwtVerifier::from_jwks(s(), r#"{"keys":[]}"#),
            Err(KeysError::NoUsableKey)
        ));
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(matches!(
            JwtVerifier::from_jwks(s(), oct),
            Err(KeysError::NoUsableKey)
        ));
    }

    /// The bearer scheme compares without case; other schemes and empty tokens are none.
    #[test]
    fn bearer() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }
}

/// The asymmetric algorithms, with keys made at test time (no private key is committed).
#[cfg(test)]
mod asymmetric {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcKey, PointConversionForm};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn settings(algorithms: Vec<Algorithm>) -> JwtSettings {
        JwtSettings {
            claim: "sub".into(),
            algorithms,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            from: TokenFrom::Bearer,
        }
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let claims =
            serde_json::json!({"sub": "zoe", "exp": jsonwebtoken::get_current_timestamp() + 60});
        jsonwebtoken::encode(&header, &claims, key).expect("sign")
    }

    fn ec(nid: Nid, size: usize) -> (String, EncodingKey) {
        let group = EcGroup::from_curve_name(nid).expect("curve");
        let key = EcKey::generate(&group).expect("EC key");
        let mut ctx = BigNumContext::new().expect("ctx");
        let point = key
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .expect("point");
        let (x, y) = point[1..].split_at(size);
        let crv = if size == 32 { "P-256" } else { "P-384" };
        let jwk = format!(
            r#"{{"kty":"EC","kid":"ec","crv":"{crv}","x":"{}","y":"{}"}}"#,
            b64(x),
            b64(y)
        );
        let der = PKey::from_ec_key(key)
            .expect("pkey")
            .private_key_to_pkcs8()
            .expect("pkcs8");
        (jwk, EncodingKey::from_ec_der(&der))
    }

    /// RS384, ES384 and EdDSA tokens verify under their JWKS keys; a `kid` naming another key,
    /// and a token of an algorithm the list leaves out, do not.
    #[test]
    fn every_listed_algorithm_verifies() {
        let rsa = Rsa::generate(2048).expect("RSA key");
        let rsa_jwk = format!(
            r#"{{"kty":"RSA","kid":"rsa","n":"{}","e":"{}"}}"#,
            b64(&rsa.n().to_vec()),
            b64(&rsa.e().to_vec())
        );
        let rsa_key = EncodingKey::from_rsa_der(&rsa.private_key_to_der().expect("der"));
        let (p384_jwk, p384_key) = ec(Nid::SECP384R1, 48);
        let ed = PKey::generate_ed25519().expect("Ed25519 key");
        let ed_jwk = format!(
            r#"{{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"{}"}}"#,
            b64(&ed.raw_public_key().expect("raw"))
        );
        let ed_key = EncodingKey::from_ed_der(&ed.private_key_to_pkcs8().expect("pkcs8"));
        let jwks = format!(r#"{{"keys":[{rsa_jwk},{p384_jwk},{ed_jwk}]}}"#);
        let all = vec![Algorithm::RS384, Algorithm::ES384, Algorithm::EdDSA];
        let v = JwtVerifier::from_jwks(settings(all), &jwks).expect("keys");
        for (alg, kid, key) in [
            (Algorithm::RS384, "rsa", &rsa_key),
            (Algorithm::ES384, "ec", &p384_key),
            (Algorithm::EdDSA, "ed", &ed_key),
        ] {
            let user = v.verify(&sign(alg, kid, key)).map(|x| x.user);
            assert_eq!(user.as_deref(), Some(&b"zoe"[..]), "{alg:?}");
        }
        assert_eq!(
            v.verify(&sign(Algorithm::RS384, "ed", &rsa_key)),
            None,
            "the kid names a key of another family"
        );
        assert_eq!(
            v.verify(&sign(Algorithm::RS256, "rsa", &rsa_key)),
            None,
            "RS256 is not listed"
        );
        let only_rs = JwtVerifier::from_jwks(settings(vec![Algorithm::RS384]), &jwks).expect("rsa");
        assert_eq!(
            only_rs.verify(&sign(Algorithm::EdDSA, "ed", &ed_key)),
            None,
            "EdDSA is not listed (its key is not even loaded)"
        );
    }
}
