//! Where a request's user id comes from: a route's ordered identity sources (`cookie`,
//! `header`, `jwt`, `assign`), the first that yields an id winning, and the visitor cookie
//! `assign` hands out. [`Identity::resolve`] is pure: the proxy and explain give it the
//! request's headers, the client address and a [`TokenCheck`] (the proxy's caches verified
//! tokens; explain's verifies every time).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::cidr::Cidr;
use super::cookies::is_valid_user_id;
use super::facts::HeaderLookup;
use super::jwt::{bearer_token, JwtVerifier, TokenFrom};
use super::signed::{verify_signed, SigningKey};

/// One identity source, as configured.
#[derive(Debug)]
pub(crate) enum Source {
    /// The id is this cookie's value (signed when the route has signing keys).
    Cookie(Box<str>),
    /// The id is this header's value, believed only when the peer that sent it (the TCP
    /// peer: the auth layer or proxy in front, not the client address behind it) is in `from`.
    Header { name: Box<str>, from: Vec<Cidr> },
    /// The id is a claim of a verified token.
    Jwt(Arc<JwtVerifier>),
    /// A visitor with no id gets one, kept in this cookie.
    Assign(AssignCookie),
}

/// `SameSite` of the visitor cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SameSite {
    Lax,
    Strict,
    None,
}

/// `Secure` on the visitor cookie: on TLS listeners only (`auto`), always, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secure {
    Auto,
    Always,
    Never,
}

/// The visitor cookie `assign` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssignCookie {
    pub(crate) name: Box<str>,
    pub(crate) max_age: Duration,
    pub(crate) same_site: SameSite,
    pub(crate) secure: Secure,
    pub(crate) http_only: bool,
    pub(crate) domain: Option<Box<str>>,
    pub(crate) path: Box<str>,
}

impl AssignCookie {
    /// The `Set-Cookie` value that hands `value` out; `tls`: the request came over TLS.
    pub(crate) fn set_cookie(&self, value: &str, tls: bool) -> String {
        let mut out = format!(
            "{}={value}; Max-Age={}; Path={}",
            self.name,
            self.max_age.as_secs(),
            self.path
        );
        if let Some(domain) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        out.push_str(match self.same_site {
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        let secure = match self.secure {
            Secure::Auto => tls,
            Secure::Always => true,
            Secure::Never => false,
        };
        if secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        out
    }
}

/// Which source gave the request's id: in explain, the access log and
/// `gateway_identity_total{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IdSource {
    Cookie,
    Header,
    Jwt,
    /// The visitor cookie `assign` set earlier.
    Assigned,
    /// A new visitor id, set by this response.
    AssignedNew,
    None,
}

impl IdSource {
    /// Every source, in the order of [`IdSource::index`].
    pub(crate) const ALL: [IdSource; 6] = [
        IdSource::Cookie,
        IdSource::Header,
        IdSource::Jwt,
        IdSource::Assigned,
        IdSource::AssignedNew,
        IdSource::None,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            IdSource::Cookie => "cookie",
            IdSource::Header => "header",
            IdSource::Jwt => "jwt",
            IdSource::Assigned => "assigned",
            IdSource::AssignedNew => "assigned_new",
            IdSource::None => "none",
        }
    }

    /// Position in [`IdSource::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Verifies a token for the `jwt` source: the user id, or `None` when the token fails any
/// check. The proxy's implementation caches; explain's does not.
pub(crate) trait TokenCheck {
    fn check(&self, verifier: &JwtVerifier, token: &str) -> Option<Box<[u8]>>;
}

/// Verifies every time (explain, tests).
pub(crate) struct Uncached;

impl TokenCheck for Uncached {
    fn check(&self, verifier: &JwtVerifier, token: &str) -> Option<Box<[u8]>> {
        verifier.verify(token).map(|v| v.user)
    }
}

/// The outcome of [`Identity::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved<'a> {
    pub(crate) source: IdSource,
    /// The user id (`None` for `none`, and for `assigned_new` until the proxy makes one).
    pub(crate) user: Option<Cow<'a, [u8]>>,
    /// Tokens that were present but failed verification.
    pub(crate) jwt_invalid: u32,
    /// Cookies (id or visitor) whose signature was missing or wrong.
    pub(crate) bad_signatures: u32,
}

/// A route's identity sources, in order (the config layer checks there is at most one
/// `assign`, and that it is last).
#[derive(Debug)]
pub struct Identity {
    sources: Vec<Source>,
}

impl Identity {
    pub(crate) fn new(sources: Vec<Source>) -> Self {
        Identity { sources }
    }

    /// The sources in order, as `/status` shows them: `cookie:NAME`, `header:NAME`,
    /// `jwt`, `assign:NAME` (no keys, no secrets).
    pub(crate) fn describe(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| match s {
                Source::Cookie(name) => format!("cookie:{name}"),
                Source::Header { name, .. } => format!("header:{name}"),
                Source::Jwt(_) => "jwt".to_string(),
                Source::Assign(cookie) => format!("assign:{}", cookie.name),
            })
            .collect()
    }

    /// The visitor cookie, when the route assigns ids.
    pub(crate) fn assign(&self) -> Option<&AssignCookie> {
        self.sources.iter().find_map(|s| match s {
            Source::Assign(a) => Some(a),
            _ => None,
        })
    }

    /// The request's user id: each source in order, the first that yields a valid id wins.
    /// A cookie (and the visitor cookie) must be signed with one of `keys` when there are any;
    /// a header is believed only when `peer` (the address that sent the request: the TCP peer)
    /// is in its `from`; a token must pass `tokens`.
    /// Reaching `assign` without a valid visitor cookie gives `assigned_new` with no id yet.
    pub(crate) fn resolve<'a, H: HeaderLookup + ?Sized>(
        &self,
        headers: &'a H,
        peer: Option<IpAddr>,
        keys: &[SigningKey],
        tokens: &dyn TokenCheck,
    ) -> Resolved<'a> {
        let mut out = Resolved {
            source: IdSource::None,
            user: None,
            jwt_invalid: 0,
            bad_signatures: 0,
        };
        for source in &self.sources {
            let (found, kind) = match source {
                Source::Cookie(name) => (
                    signed_cookie(headers, name, keys, &mut out.bad_signatures),
                    IdSource::Cookie,
                ),
                Source::Header { name, from } => {
                    let believed = peer.is_some_and(|ip| from.iter().any(|c| c.contains(ip)));
                    // A repeated header is no id: a proxy in front that appends its value
                    // would leave the client's own first.
                    let value = believed
                        .then(|| headers.single_header(name))
                        .flatten()
                        .map(<[u8]>::trim_ascii)
                        .filter(|v| is_valid_user_id(v));
                    (value.map(Cow::Borrowed), IdSource::Header)
                }
                Source::Jwt(verifier) => {
                    let token = match &verifier.from {
                        TokenFrom::Bearer => headers.header("authorization").and_then(bearer_token),
                        TokenFrom::Header(name) => headers.header(name).map(<[u8]>::trim_ascii),
                        TokenFrom::Cookie(name) => headers.cookie(name.as_bytes()),
                    };
                    let user = token.and_then(|t| {
                        let user = std::str::from_utf8(t)
                            .ok()
                            .and_then(|t| tokens.check(verifier, t));
                        if user.is_none() {
                            out.jwt_invalid += 1;
                        }
                        user
                    });
                    (user.map(|u| Cow::Owned(u.into_vec())), IdSource::Jwt)
                }
                Source::Assign(cookie) => {
                    match signed_cookie(headers, &cookie.name, keys, &mut out.bad_signatures) {
                        Some(id) => (Some(id), IdSource::Assigned),
                        None => {
                            out.source = IdSource::AssignedNew;
                            return out;
                        }
                    }
                }
            };
            if let Some(user) = found {
                out.source = kind;
                out.user = Some(user);
                return out;
            }
        }
        out
    }
}

/// The valid user id in cookie `name`, its signature checked against `keys` when there are
/// any (a bad one is counted and gives no id).
fn signed_cookie<'a, H: HeaderLookup + ?Sized>(
    headers: &'a H,
    name: &str,
    keys: &[SigningKey],
    bad_signatures: &mut u32,
) -> Option<Cow<'a, [u8]>> {
    let value = headers.cookie(name.as_bytes())?;
    let user = if keys.is_empty() {
        value
    } else {
        match verify_signed(value, keys) {
            Some(user) => user,
            None => {
                *bad_signatures += 1;
                return None;
            }
        }
    };
    is_valid_user_id(user).then_some(Cow::Borrowed(user))
}

/// A new visitor id from 16 random bytes (128 bits): 32 lower-case hex digits, and the
/// cookie value that carries it (`<id>.<tag>`, signed with the first key, when there are keys).
pub(crate) fn new_visitor(random: &[u8; 16], keys: &[SigningKey]) -> (String, String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: String = random
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect();
    let value = match keys.first() {
        Some(key) => {
            let tag = key.tag(id.as_bytes());
            format!("{id}.{}", String::from_utf8_lossy(&tag))
        }
        None => id.clone(),
    };
    (id, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).expect("test network")
    }

    fn assign() -> AssignCookie {
        AssignCookie {
            name: "vid".into(),
            max_age: Duration::from_secs(86400),
            same_site: SameSite::Lax,
            secure: Secure::Auto,
            http_only: true,
            domain: None,
            path: "/".into(),
        }
    }

    /// cookie, then header from 10/8, then assign.
    fn identity() -> Identity {
        Identity::new(vec![
            Source::Cookie("uid".into()),
            Source::Header {
                name: "x-user-id".into(),
                from: vec![cidr("10.0.0.0/8")],
            },
            Source::Assign(assign()),
        ])
    }

    fn resolve(
        identity: &Identity,
        headers: &[(&str, &str)],
        client: &str,
        keys: &[SigningKey],
    ) -> (IdSource, Option<String>) {
        let ip: IpAddr = client.parse().expect("ip");
        let r = identity.resolve(headers, Some(ip), keys, &Uncached);
        (
            r.source,
            r.user.map(|u| String::from_utf8_lossy(&u).into_owned()),
        )
    }

    fn some(source: IdSource, id: &str) -> (IdSource, Option<String>) {
        (source, Some(id.to_string()))
    }

    /// The first source with an id wins: the cookie beats the header and the visitor cookie.
    #[test]
    fn first_source_wins() {
        let h = [("cookie", "vid=v1; uid=alice"), ("x-user-id", "bob")];
        assert_eq!(
            resolve(&identity(), &h, "10.1.2.3", &[]),
            some(IdSource::Cookie, "alice")
        );
    }

    /// The header is believed from a `from` network only.
    #[test]
    fn header_only_from_trusted_clients() {
        let h = [("x-user-id", " bob ")];
        assert_eq!(
            resolve(&identity(), &h, "10.1.2.3", &[]),
            some(IdSource::Header, "bob")
        );
        assert_eq!(
            resolve(&identity(), &h, "192.0.2.1", &[]),
            (IdSource::AssignedNew, None)
        );
        let none = identity().resolve(&h[..], None, &[], &Uncached);
        assert_eq!(none.source, IdSource::AssignedNew, "no peer address");
        // Repeated, it is no id: a proxy that appends would leave the client's value first.
        let twice = [("x-user-id", "mallory"), ("X-User-Id", "bob")];
        assert_eq!(
            resolve(&identity(), &twice, "10.1.2.3", &[]),
            (IdSource::AssignedNew, None)
        );
    }

    /// A user id wins over the visitor cookie (the one switch a visitor makes when logging in).
    #[test]
    fn user_id_beats_visitor_cookie() {
        let h = [("cookie", "vid=v1")];
        assert_eq!(
            resolve(&identity(), &h, "192.0.2.1", &[]),
            some(IdSource::Assigned, "v1")
        );
        let h = [("cookie", "vid=v1; uid=carol")];
        assert_eq!(
            resolve(&identity(), &h, "192.0.2.1", &[]),
            some(IdSource::Cookie, "carol")
        );
    }

    /// With signing keys, an unsigned or forged cookie gives no id and is counted; a signed
    /// visitor cookie gives its id.
    #[test]
    fn signed_cookies() {
        let keys = vec![SigningKey::new(b"a-signing-key-of-enough-length!!")];
        let (id, value) = new_visitor(&[7; 16], &keys);
        let h = [("cookie", format!("vid={value}"))];
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            resolve(&identity(), &h, "192.0.2.1", &keys),
            some(IdSource::Assigned, &id)
        );
        let forged = [("cookie", "vid=0123; uid=alice")];
        let r = identity().resolve(&forged[..], None, &keys, &Uncached);
        assert_eq!((r.source, r.bad_signatures), (IdSource::AssignedNew, 2));
    }

    /// Without `assign`, no id is `none`; an invalid id is no id.
    #[test]
    fn none_without_assign() {
        let id = Identity::new(vec![Source::Cookie("uid".into())]);
        let h = [("cookie", "uid=has space")];
        assert_eq!(resolve(&id, &h, "192.0.2.1", &[]), (IdSource::None, None));
    }

    /// A failing token counts as `jwt_invalid` and the next source is asked.
    #[test]
    fn invalid_token_goes_on() {
        use super::super::jwt::JwtSettings;
        let verifier = JwtVerifier::from_secret(
            JwtSettings {
                claim: "sub".into(),
                algorithms: vec![jsonwebtoken::Algorithm::HS256],
                issuer: None,
                audience: None,
                leeway_secs: 0,
                from: TokenFrom::Bearer,
            },
            b"a-test-secret-of-enough-length!!",
        );
        let id = Identity::new(vec![
            Source::Jwt(Arc::new(verifier)),
            Source::Assign(assign()),
        ]);
        let h = [("authorization", "Bearer x.y.z"), ("cookie", "vid=v9")];
        let r = id.resolve(&h[..], None, &[], &Uncached);
        assert_eq!((r.source, r.jwt_invalid), (IdSource::Assigned, 1));
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "dave", "exp": jsonwebtoken::get_current_timestamp() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(b"a-test-secret-of-enough-length!!"),
        )
        .expect("encode");
        let auth = format!("Bearer {token}");
        let h = [("authorization", auth.as_str())];
        let r = id.resolve(&h[..], None, &[], &Uncached);
        assert_eq!(r.source, IdSource::Jwt);
        assert_eq!(r.user.as_deref(), Some(&b"dave"[..]));
    }

    /// New ids are 32 hex digits; signed, the value verifies back to the id.
    #[test]
    fn new_visitor_ids() {
        let (id, value) = new_visitor(&[0xab; 16], &[]);
        assert_eq!(id, "ab".repeat(16));
        assert_eq!(value, id);
        let keys = vec![SigningKey::new(&b"k".repeat(32))];
        let (id, value) = new_visitor(&[1; 16], &keys);
        assert_eq!(verify_signed(value.as_bytes(), &keys), Some(id.as_bytes()));
    }

    /// The `Set-Cookie` attributes follow the settings; `Secure` with `auto` on TLS only.
    #[test]
    fn set_cookie_attributes() {
        let c = assign();
        assert_eq!(
            c.set_cookie("v", false),
            "vid=v; Max-Age=86400; Path=/; SameSite=Lax; HttpOnly"
        );
        assert!(c.set_cookie("v", true).contains("; Secure"));
        let c = AssignCookie {
            secure: Secure::Never,
            http_only: false,
            domain: Some("example.com".into()),
            same_site: SameSite::Strict,
            ..assign()
        };
        assert_eq!(
            c.set_cookie("v", true),
            "vid=v; Max-Age=86400; Path=/; Domain=example.com; SameSite=Strict"
        );
    }
}
