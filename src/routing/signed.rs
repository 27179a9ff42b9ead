//! The signed user cookie (`<user id>.<tag>`, tag = unpadded base64url of
//! HMAC-SHA256(key, user id)) and constant-time comparison of secrets.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Compares two byte strings in time that depends only on their lengths (`subtle`'s comparison,
/// which keeps the compiler from turning it into an early-exit loop).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Length of an unpadded base64url HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 43;

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url of 32 bytes, into a fixed buffer (no allocation).
fn base64url_32(bytes: &[u8; 32], out: &mut [u8; TAG_LEN]) {
    let mut o = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out[o] = BASE64URL[((n >> (18 - 6 * i)) & 63) as usize];
            o += 1;
        }
    }
}

/// A signing key, keyed once: HMAC's inner and outer pads are hashed when the key is made
/// (at load), so a tag costs two SHA-256 blocks less than keying HMAC for every cookie.
#[derive(Clone)]
pub struct SigningKey {
    mac: Hmac<Sha256>,
}

impl SigningKey {
    /// The key `secret` (any length).
    pub fn new(secret: &[u8]) -> SigningKey {
        SigningKey {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
        }
    }

    /// The tag for `user_id` under this key.
    pub(crate) fn tag(&self, user_id: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(user_id);
        let digest: [u8; 32] = mac.finalize().into_bytes().into();
        let mut out = [0u8; TAG_LEN];
        base64url_32(&digest, &mut out);
        out
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The tag for `user_id` under `key`.
pub(crate) fn sign_tag(key: &[u8], user_id: &[u8]) -> [u8; TAG_LEN] {
    SigningKey::new(key).tag(user_id)
}

/// `<user id>.<tag>` for `key`: what a backend sets as the cookie value.
pub fn signed_cookie_value(key: &[u8], user_id: &str) -> String {
    let tag = sign_tag(key, user_id.as_bytes());
    format!("{user_id}.{}", String::from_utf8_lossy(&tag))
}

/// Checks a signed cookie value against any of `keys`; returns the user id (everything before
/// the last dot) when a key's tag matches.
pub(crate) fn verify_signed<'a>(value: &'a [u8], keys: &[SigningKey]) -> Option<&'a [u8]> {
    let dot = value.iter().rposition(|&b| b == b'.')?;
    let (user, tag) = (&value[..dot], &value[dot + 1..]);
    if user.is_empty() || tag.len() != TAG_LEN {
        return None;
    }
    let mut valid = false;
    for key in keys {
        // Every key is tried, so the time does not say which one matched.
        valid |= constant_time_eq(&key.tag(user), tag);
    }
    valid.then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokem"));
        assert!(!constant_time_eq(b"secret-token", b"secret-token-longer"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    /// RFC 4231 test case 2 (key "Jefe"), in base64url.
    #[test]
    fn tag_is_base64url_hmac_sha256() {
        let tag = sign_tag(b"Jefe", b"what do ya want for nothing?");
        // hex 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843
        assert_eq!(&tag[..], b"W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM");
    }

    #[test]
    fn verification_with_rotation() {
        let old = SigningKey::new(b"old-key");
        let new = SigningKey::new(b"new-key");
        let value = signed_cookie_value(b"old-key", "alice.smith");
        assert_eq!(
            verify_signed(value.as_bytes(), &[new.clone(), old.clone()]),
            Some(&b"alice.smith"[..])
        );
        assert_eq!(
            verify_signed(value.as_bytes(), std::slice::from_ref(&new)),
            None
        );
        assert_eq!(
            verify_signed(b"alice", std::slice::from_ref(&old)),
            None,
            "no tag"
        );
        assert_eq!(
            verify_signed(b".AAAA", std::slice::from_ref(&old)),
            None,
            "no user"
        );
        let mut tampered = value.into_bytes();
        tampered[0] = b'b';
        assert_eq!(verify_signed(&tampered, &[old]), None, "user changed");
    }
}
