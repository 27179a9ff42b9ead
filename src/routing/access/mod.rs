//! A route's access control (`access:`): which client addresses may use it (`allow` / `deny`
//! networks) and, with `basic_auth`, which users (an htpasswd file). Pure: the proxy gives the
//! client address and the `Authorization` header's value and gets a verdict; the one slow
//! step, checking a password against its bcrypt or SHA-crypt hash, is a separate call the
//! proxy runs off its event loop, once per credential (see [`cache`]).

mod cache;
mod htpasswd;

use std::net::IpAddr;

use base64::Engine;

pub(crate) use cache::{CredentialDigest, VerifiedCache};
pub(crate) use htpasswd::Users;

use super::Cidr;

/// Longest `Authorization` value read (a user and password of a few hundred bytes each);
/// anything longer is treated as missing credentials.
const MAX_AUTHORIZATION_BYTES: usize = 1024;

/// A route's access policy, built once per configuration load. A route without `access` has
/// none (`Option::None` on the route), and pays nothing.
#[derive(Debug)]
pub(crate) struct Access {
    /// When set, only these networks may use the route (after `deny`).
    allow: Option<Box<[Cidr]>>,
    /// Networks refused, checked first.
    deny: Box<[Cidr]>,
    basic: Option<BasicAuth>,
}

/// Why a request was refused, for the status, the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client address is denied, or not allowed: `403`.
    Address,
    /// Credentials missing, malformed, of an unknown user or wrong: `401`.
    Credentials,
}

impl Refusal {
    /// The status the client gets.
    pub(crate) fn status(self) -> u16 {
        match self {
            Refusal::Address => 403,
            Refusal::Credentials => 401,
        }
    }

    /// The name in the access log's `reason`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Address => "access_denied",
            Refusal::Credentials => "auth_required",
        }
    }
}

impl Access {
    /// A policy from validated parts; `None` when it restricts nothing (an empty `access: {}`,
    /// which is how a route opts out of the `gateway.access` default).
    pub(crate) fn new(
        allow: Option<Vec<Cidr>>,
        deny: Vec<Cidr>,
        basic: Option<BasicAuth>,
    ) -> Option<Access> {
        if allow.is_none() && deny.is_empty() && basic.is_none() {
            return None;
        }
        Some(Access {
            allow: allow.map(Vec::into_boxed_slice),
            deny: deny.into_boxed_slice(),
            basic,
        })
    }

    pub(crate) fn allow(&self) -> Option<&[Cidr]> {
        self.allow.as_deref()
    }

    pub(crate) fn deny(&self) -> &[Cidr] {
        &self.deny
    }

    pub(crate) fn basic(&self) -> Option<&BasicAuth> {
        self.basic.as_ref()
    }

    /// Whether the client at `ip` may use the route: not in `deny`, and in `allow` when there
    /// is one. An unknown address (no TCP peer address) is refused as soon as either list is
    /// set: a list cannot be checked against it.
    pub(crate) fn admits(&self, ip: Option<IpAddr>) -> bool {
        if self.allow.is_none() && self.deny.is_empty() {
            return true;
        }
        let Some(ip) = ip else {
            return false;
        };
        if self.deny.iter().any(|net| net.contains(ip)) {
            return false;
        }
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|net| net.contains(ip)))
    }
}

/// `basic_auth`: the users of an htpasswd file, the realm the challenge names, and the
/// credentials verified so far.
#[derive(Debug)]
pub(crate) struct BasicAuth {
    users: Users,
    /// `Basic realm="<realm>"`, as the `WWW-Authenticate` value.
    challenge: String,
    realm: String,
    /// The file the users were read from, as `/status` shows it.
    users_file: String,
    cache: VerifiedCache,
}

/// What the `Authorization` header says, before any slow work.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// No `Basic` credentials, or malformed ones: `401` at once.
    Missing,
    /// This user and password were verified before: the request passes.
    Verified,
    /// Not verified yet: [`BasicAuth::verify`] decides (slow), then [`BasicAuth::remember`].
    Unverified {
        /// The decoded `user:password`.
        pair: Vec<u8>,
        digest: CredentialDigest,
    },
}

impl BasicAuth {
    /// `realm` must be fit for a quoted string (config validation checks it); `users_file`
    /// names where the users came from.
    pub(crate) fn new(users: Users, realm: &str, users_file: String) -> BasicAuth {
        BasicAuth {
            users,
            challenge: format!("Basic realm=\"{realm}\""),
            realm: realm.to_string(),
            users_file,
            cache: VerifiedCache::new(),
        }
    }

    pub(crate) fn users(&self) -> &Users {
        &self.users
    }

    pub(crate) fn realm(&self) -> &str {
        &self.realm
    }

    pub(crate) fn users_file(&self) -> &str {
        &self.users_file
    }

    /// The `WWW-Authenticate` value of a `401`.
    pub(crate) fn challenge(&self) -> &str {
        &self.challenge
    }

    /// Reads an `Authorization` value (`None`: no header) and looks its credentials up among
    /// those already verified; a few hundred instructions, no allocation on a hit.
    pub(crate) fn credentials(&self, authorization: Option<&[u8]>) -> Credentials {
        let Some(pair) = authorization.and_then(decode_basic) else {
            return Credentials::Missing;
        };
        let digest = self.cache.digest(&pair);
        if self.cache.contains(&digest) {
            Credentials::Verified
        } else {
            Credentials::Unverified { pair, digest }
        }
    }

    /// Whether the decoded `user:password` is right: the password checked against the user's
    /// hash in constant time. Slow by design (bcrypt, SHA-crypt): run it off the event loop.
    /// An unknown user costs the same as a known one (checked against another entry's hash),
    /// so the time taken does not tell which users exist.
    pub(crate) fn verify(&self, pair: &[u8]) -> bool {
        let Some(colon) = pair.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&pair[..colon], &pair[colon + 1..]);
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                // `black_box`: the work must be done though its answer is not used.
                std::hint::black_box(self.users.stand_in().verify(password));
                false
            }
        }
    }

    /// Records verified credentials, so the next request with them passes without the hash.
    pub(crate) fn remember(&self, digest: &CredentialDigest) {
        self.cache.insert(digest);
    }
}

/// The `user:password` of a `Basic` `Authorization` value (RFC 7617): the scheme in any case,
/// then base64 of text holding a colon.
fn decode_basic(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return None;
    }
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    let pair = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    pair.contains(&b':').then_some(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .map(|c| Cidr::parse(c).expect("network"))
            .collect()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("ip"))
    }

    /// `deny` is checked first; with `allow`, everything else is denied; an unknown address
    /// is refused once a list is set.
    #[test]
    fn addresses_are_admitted_by_deny_then_allow() {
        let both = Access::new(
            Some(cidrs(&["10.0.0.0/8", "192.0.2.7"])),
            cidrs(&["10.9.0.0/16"]),
            None,
        )
        .expect("a policy");
        let cases = [
            ("10.1.2.3", true),
            ("192.0.2.7", true),
            ("10.9.1.1", false),
            ("192.0.2.8", false),
            ("::ffff:10.1.2.3", true),
        ];
        for (addr, admitted) in cases {
            assert_eq!(both.admits(ip(addr)), admitted, "{addr}");
        }
        assert!(!both.admits(None), "no address, lists set");
        let deny_only = Access::new(None, cidrs(&["127.0.0.2"]), None).expect("a policy");
        assert!(deny_only.admits(ip("127.0.0.1")));
        assert!(!deny_only.admits(ip("127.0.0.2")));
        assert!(!deny_only.admits(None));
    }

    /// An empty block restricts nothing and is no policy at all.
    #[test]
    fn an_empty_block_is_no_policy() {
        assert!(Access::new(None, Vec::new(), None).is_none());
    }

    /// Credentials are checked once: unverified at first, verified after `remember`; wrong
    /// passwords and unknown users never verify, and nothing unverified is remembered.
    #[test]
    fn credentials_are_verified_once_then_remembered() {
        // Written by `htpasswd -nbB -C 4 u pw`.
        let users =
            Users::parse("alice:$2y$04$1J/N4hbX5sHvesS.6kKdLuhpJGjetmpFE1.pqsDdcMPqEVwdAKEWi\n")
                .expect("valid");
        let basic = BasicAuth::new(users, "staging", "staging.htpasswd".into());
        assert_eq!(basic.challenge(), "Basic realm=\"staging\"");
        let header = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert_eq!(basic.credentials(None), Credentials::Missing);
        for wrong in ["alice:PW", "bob:pw", "alice:"] {
            let value = header(wrong);
            let Credentials::Unverified { pair, .. } = basic.credentials(Some(value.as_bytes()))
            else {
                panic!("{wrong}: not looked up as unverified");
            };
            assert!(!basic.verify(&pair), "{wrong}");
        }
        let right = header("alice:pw");
        let Credentials::Unverified { pair, digest } = basic.credentials(Some(right.as_bytes()))
        else {
            panic!("unverified at first");
        };
        assert!(basic.verify(&pair));
        basic.remember(&digest);
        assert_eq!(
            basic.credentials(Some(right.as_bytes())),
            Credentials::Verified
        );
        let wrong = header("alice:PW");
        assert!(matches!(
            basic.credentials(Some(wrong.as_bytes())),
            Credentials::Unverified { .. }
        ));
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let value = format!("Basic {}", b64("alice:s3cret:x"));
        assert_eq!(
            decode_basic(value.as_bytes()).as_deref(),
            Some(&b"alice:s3cret:x"[..])
        );
        let lower = format!("basic  {}", b64("a:"));
        assert_eq!(decode_basic(lower.as_bytes()).as_deref(), Some(&b"a:"[..]));
        for bad in [
            format!("Bearer {}", b64("a:b")),
            format!("Basic {}", b64("no-colon")),
            "Basic not*base64".to_string(),
            "Basic".to_string(),
            format!("Basic {}", b64(&"x:".repeat(600))),
        ] {
            assert_eq!(decode_basic(bad.as_bytes()), None, "{bad}");
        }
    }
}
