//! htpasswd files as `htpasswd -B` (bcrypt) and `-5` / `-2` (SHA-512 / SHA-256 crypt) write
//! them, and the check of a password against one of their hashes. Weak entries are refused
//! when the file is read, naming the line: plaintext, crypt(3) DES, `{SHA}` (unsalted SHA-1)
//! and MD5 (`$apr1$`, `$1$`), which ordinary hardware tries at billions of guesses a second.

use std::collections::HashMap;
use std::fmt;

/// Characters of the crypt base64 alphabet (`./0-9A-Za-z`).
fn is_crypt_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// SHA-crypt `rounds=` bounds, as glibc's crypt takes them.
const MIN_SHA_ROUNDS: u32 = 1_000;
const MAX_SHA_ROUNDS: u32 = 999_999_999;

/// One user's password hash, in a scheme slow enough to resist guessing.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PasswordHash {
    /// `$2y$`, `$2b$` or `$2a$` (`htpasswd -B`).
    Bcrypt(Box<str>),
    /// `$5$` (`htpasswd -2`).
    Sha256Crypt(Box<str>),
    /// `$6$` (`htpasswd -5`).
    Sha512Crypt(Box<str>),
}

// The hash is not shown: it is as sensitive as the password against offline guessing.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

impl PasswordHash {
    /// Reads an htpasswd entry's hash; the error says which weak or unknown scheme it is.
    pub(crate) fn parse(hash: &str) -> Result<PasswordHash, String> {
        let how = "re-create the entry with `htpasswd -B` (bcrypt) or `-5` (SHA-512 crypt)";
        if let Some(rest) = ["$2y$", "$2b$", "$2a$"]
            .iter()
            .find_map(|p| hash.strip_prefix(p))
        {
            return check_bcrypt(rest)
                .map(|()| PasswordHash::Bcrypt(hash.into()))
                .map_err(|m| format!("a malformed bcrypt hash: {m}"));
        }
        if let Some(rest) = hash.strip_prefix("$5$") {
            return check_sha_crypt(rest, 43)
                .map(|()| PasswordHash::Sha256Crypt(hash.into()))
                .map_err(|m| format!("a malformed SHA-256 crypt hash: {m}"));
        }
        if let Some(rest) = hash.strip_prefix("$6$") {
            return check_sha_crypt(rest, 86)
                .map(|()| PasswordHash::Sha512Crypt(hash.into()))
                .map_err(|m| format!("a malformed SHA-512 crypt hash: {m}"));
        }
        let weak = if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            "an MD5 entry (`htpasswd -m`, the old default) is refused: MD5 is too fast to resist guessing"
        } else if hash.starts_with("{SHA}") {
            "a {SHA} entry (`htpasswd -s`, unsalted SHA-1) is refused"
        } else if hash.len() == 13 && hash.bytes().all(is_crypt_b64) {
            "a crypt(3) DES entry (`htpasswd -d`) is refused: it keeps 8 characters and is quickly guessed"
        } else if hash.starts_with('$') {
            "an unknown hash scheme is refused"
        } else {
            "a plaintext password (`htpasswd -p`) is refused"
        };
        Err(format!("{weak}; {how}"))
    }

    /// The scheme's name, for messages and `/status`.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            PasswordHash::Bcrypt(_) => "bcrypt",
            PasswordHash::Sha256Crypt(_) => "sha256-crypt",
            PasswordHash::Sha512Crypt(_) => "sha512-crypt",
        }
    }

    /// Whether `password` has this hash; the hashes are compared in constant time (`subtle`,
    /// inside the `bcrypt` and `sha-crypt` crates). SHA-crypt takes UTF-8 passwords only, as
    /// `htpasswd` reads them from a terminal; other bytes never match.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Sha256Crypt(hash) => std::str::from_utf8(password)
                .is_ok_and(|p| sha_crypt::sha256_check(p, hash).is_ok()),
            PasswordHash::Sha512Crypt(hash) => std::str::from_utf8(password)
                .is_ok_and(|p| sha_crypt::sha512_check(p, hash).is_ok()),
        }
    }
}

/// After `$2y$`: a two-digit cost in 4..=31, `$`, 22 characters of salt and 31 of hash.
fn check_bcrypt(rest: &str) -> Result<(), String> {
    let b = rest.as_bytes();
    if b.len() != 56 || b[2] != b'$' {
        return Err("expected `$2y$NN$` and 53 characters".into());
    }
    let cost = rest[..2]
        .parse::<u32>()
        .ok()
        .filter(|c| (4..=31).contains(c))
        .ok_or("the cost is not in 04..=31")?;
    if !b[3..].iter().all(|&b| is_crypt_b64(b)) {
        return Err(format!(
            "cost {cost}: the salt and hash are not crypt base64"
        ));
    }
    Ok(())
}

/// After `$5$` / `$6$`: an optional `rounds=N$`, a salt of at most 16 characters, `$`, and a
/// hash of `hash_len` characters.
fn check_sha_crypt(rest: &str, hash_len: usize) -> Result<(), String> {
    let mut parts: Vec<&str> = rest.split('$').collect();
    if parts.first().is_some_and(|p| p.starts_with("rounds=")) {
        let rounds = parts.remove(0)["rounds=".len()..]
            .parse::<u32>()
            .ok()
            .filter(|r| (MIN_SHA_ROUNDS..=MAX_SHA_ROUNDS).contains(r));
        if rounds.is_none() {
            return Err(format!(
                "rounds must be in {MIN_SHA_ROUNDS}..={MAX_SHA_ROUNDS}"
            ));
        }
    }
    let [salt, hash] = parts[..] else {
        return Err("expected `[rounds=N$]salt$hash`".into());
    };
    if salt.len() > 16 || !salt.bytes().all(is_crypt_b64) {
        return Err("the salt is not 0..=16 crypt base64 characters".into());
    }
    if hash.len() != hash_len || !hash.bytes().all(is_crypt_b64) {
        return Err(format!(
            "the hash is not {hash_len} crypt base64 characters"
        ));
    }
    Ok(())
}

/// An htpasswd line that cannot be used: its number (from 1) and what is wrong. The hash and
/// any password are never in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HtpasswdError {
    /// 0 for the file as a whole.
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl fmt::Display for HtpasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// The users of an htpasswd file: name → hash.
#[derive(Debug)]
pub(crate) struct Users {
    by_name: HashMap<Box<[u8]>, PasswordHash>,
    /// The hash an unknown user's password is checked against, so that refusing an unknown
    /// user takes as long as refusing a wrong password.
    stand_in: PasswordHash,
}

impl Users {
    /// Reads an htpasswd file's text: `user:hash` lines; empty lines and lines starting with
    /// `#` are skipped (as Apache does). Every user must have a strong hash, no user may be
    /// listed twice, and there must be at least one user.
    pub(crate) fn parse(text: &str) -> Result<Users, HtpasswdError> {
        let mut by_name: HashMap<Box<[u8]>, PasswordHash> = HashMap::new();
        let mut lines_of: HashMap<Box<[u8]>, usize> = HashMap::new();
        let mut stand_in = None;
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let error = |message: String| HtpasswdError {
                line: number,
                message,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| error("expected `user:hash`".into()))?;
            if user.is_empty() || user.chars().any(char::is_control) {
                return Err(error(
                    "the user name is empty or holds control characters".into(),
                ));
            }
            let hash = PasswordHash::parse(hash.trim_end())
                .map_err(|m| error(format!("user {user:?}: {m}")))?;
            let name: Box<[u8]> = user.as_bytes().into();
            if let Some(first) = lines_of.get(&name) {
                return Err(error(format!("user {user:?} is already on line {first}")));
            }
            lines_of.insert(name.clone(), number);
            stand_in.get_or_insert_with(|| hash.clone());
            by_name.insert(name, hash);
        }
        let stand_in = stand_in.ok_or(HtpasswdError {
            line: 0,
            message: "no users: every request would be refused".into(),
        })?;
        Ok(Users { by_name, stand_in })
    }

    pub(crate) fn get(&self, user: &[u8]) -> Option<&PasswordHash> {
        self.by_name.get(user)
    }

    /// How many users the file has.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    pub(crate) fn stand_in(&self) -> &PasswordHash {
        &self.stand_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `htpasswd -nbB -C 4`, `-nb2` and `-nb5` for the password `pw`.
    const BCRYPT: &str = "$2y$04$1J/N4hbX5sHvesS.6kKdLuhpJGjetmpFE1.pqsDdcMPqEVwdAKEWi";
    const SHA256: &str = "$5$nPZUpltWgfbk6FNs$V98NOe7K3n/QCw2AiLAI/FogHEk0gggkNd60Z175Gv9";
    const SHA512: &str = "$6$fhkxwddkb2pRaXnW$8G5meb5aDnEJ537NX3eBA3i5..PoIlRtyNJiZOhkR7h5x9zLBTtz91pQeuGWZlNeEA/MIGEayK.Z/xa8sV0KR1";

    #[test]
    fn strong_hashes_verify_the_right_password_only() {
        for (hash, scheme) in [
            (BCRYPT, "bcrypt"),
            (SHA256, "sha256-crypt"),
            (SHA512, "sha512-crypt"),
        ] {
            let parsed = PasswordHash::parse(hash).expect(scheme);
            assert_eq!(parsed.scheme(), scheme);
            assert!(parsed.verify(b"pw"), "{scheme}: right password");
            assert!(!parsed.verify(b"pW"), "{scheme}: wrong password");
            assert!(!parsed.verify(b""), "{scheme}: empty password");
            assert!(!parsed.verify(&[0xff, 0xfe]), "{scheme}: not UTF-8");
        }
        let rounds = format!("$5$rounds=5000${}", &SHA256[3..]);
        assert!(PasswordHash::parse(&rounds).is_ok(), "explicit rounds");
    }

    /// Each weak scheme is refused by name; malformed strong ones say what is wrong.
    #[test]
    fn weak_and_malformed_hashes_are_refused() {
        let cases = [
            ("pw", "plaintext"),
            ("rbirHIMA.Q9Ps", "crypt(3) DES"),
            ("$apr1$.0uyaTeH$pCMiFP2fGqBPUJbGfIynP.", "MD5"),
            ("$1$abc$defdefdefdefdefdefdefd", "MD5"),
            ("{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM=", "{SHA}"),
            (
                "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
                "unknown hash scheme",
            ),
            (
                "$2y$03$1J/N4hbX5sHvesS.6kKdLuhpJGjetmpFE1.pqsDdcMPqEVwdAKEWi",
                "cost",
            ),
            ("$2y$04$short", "53 characters"),
            ("$5$rounds=10$salt$hash", "rounds"),
            ("$6$salt$tooshort", "86 crypt base64"),
        ];
        for (hash, says) in cases {
            let e = PasswordHash::parse(hash).expect_err(hash);
            assert!(e.contains(says), "{hash}: {e}");
            assert!(!e.contains(hash), "the hash is not shown: {e}");
        }
    }

    #[test]
    fn files_name_the_line_of_a_problem() {
        let good = format!("# staff\nalice:{BCRYPT}\r\n\nbob:{SHA512}\n");
        let users = Users::parse(&good).expect("valid");
        assert_eq!(users.len(), 2);
        assert!(users.get(b"alice").is_some_and(|h| h.verify(b"pw")));
        assert!(users.get(b"carol").is_none());
        let cases = [
            (format!("alice:{BCRYPT}\nbob:pw\n"), 2, "plaintext"),
            (format!("alice:{BCRYPT}\n\ncarol:rbirHIMA.Q9Ps\n"), 3, "DES"),
            (
                format!("alice:{BCRYPT}\nalice:{SHA256}\n"),
                2,
                "already on line 1",
            ),
            ("just-a-name\n".to_string(), 1, "user:hash"),
            (format!(":{BCRYPT}\n"), 1, "empty"),
            ("# nobody\n\n".to_string(), 0, "no users"),
        ];
        for (text, line, says) in cases {
            let e = Users::parse(&text).expect_err(&text);
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
    }
}
