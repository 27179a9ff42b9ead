//! Reading the request's cookies and the byte classes of user ids and tokens: the `Cookie`
//! header parser (RFC 6265 §5.4, no allocation) and the checks every layer shares.

/// Longest user id the gateway accepts from the cookie; a longer value makes the user anonymous.
pub(crate) const MAX_USER_ID_LEN: usize = 256;

/// Finds cookie `name` in one or more `Cookie` header values (RFC 6265 §5.4 joins several header
/// lines with "; ", so they are read in order as one list). The first occurrence wins. Pairs
/// without `=` are skipped; surrounding spaces and one pair of double quotes are removed.
pub(crate) fn find_cookie<'a, I>(cookie_headers: I, name: &[u8]) -> Option<&'a [u8]>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    cookie_headers
        .into_iter()
        .find_map(|header| find_cookie_in(header, name))
}

/// Header values longer than this are searched for the name with `memmem` first.
const LONG_COOKIE_HEADER: usize = 256;

fn find_cookie_in<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if header.len() > LONG_COOKIE_HEADER && !name.is_empty() {
        // Jump between occurrences of the name; an occurrence counts when it starts a pair
        // (start of the header or after `;`, OWS allowed) and `=` follows (OWS allowed).
        for at in memchr::memmem::find_iter(header, name) {
            let before = &header[..at];
            let starts_pair = match before.iter().rposition(|&b| b != b' ' && b != b'\t') {
                None => true,
                Some(i) => before[i] == b';',
            };
            if starts_pair {
                if let Some(value) = pair_value(&header[at + name.len()..]) {
                    return Some(value);
                }
            }
        }
        return None;
    }
    let mut rest = header;
    loop {
        let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
        let pair = trim_start_ows(&rest[..end]);
        if let Some(value) = pair.strip_prefix(name).and_then(pair_value) {
            return Some(value);
        }
        if end == rest.len() {
            return None;
        }
        rest = &rest[end + 1..];
    }
}

/// Given the bytes right after a cookie name, the value when `=` follows (OWS allowed): up to
/// the next `;`, trimmed, without one pair of surrounding double quotes.
fn pair_value(after_name: &[u8]) -> Option<&[u8]> {
    let [b'=', value @ ..] = trim_start_ows(after_name) else {
        return None;
    };
    let end = memchr::memchr(b';', value).unwrap_or(value.len());
    Some(match trim_ows(&value[..end]) {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    })
}

fn trim_start_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// A usable user id: 1..=`MAX_USER_ID_LEN` (256) bytes, all RFC 6265 `cookie-octet`s.
pub fn is_valid_user_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_ID_LEN && id.iter().all(|&b| is_cookie_octet(b))
}

/// RFC 9110 `tchar`, the bytes of a token (header names, methods, cookie names, options).
/// `const`, so the head guard's byte table is built from it at compile time.
pub(crate) const fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// RFC 6265 §4.1.1 `cookie-octet`: visible ASCII except DQUOTE, comma, semicolon and backslash.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Strips optional white space (SP / HTAB) at both ends.
pub(super) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long headers take the memmem path; it must agree with the pair-by-pair path.
    #[test]
    fn long_and_short_paths_agree() {
        let filler: String = (0..40).map(|i| format!("c{i}=v{i}; ")).collect();
        let cases = [
            ("canary_user=alice", Some("alice")),
            ("x=canary_user=bob; canary_user=carol", Some("carol")),
            ("canary_user_x=1; canary_user =dave", Some("dave")),
            ("canary_user; canary_user=\"eve\"", Some("eve")),
            ("notcanary_user=1", None),
            ("canary_user=first; canary_user=second", Some("first")),
            ("", None),
        ];
        for (tail, expected) in cases {
            let short = find_cookie([tail.as_bytes()], b"canary_user");
            let long_header = format!("{filler}{tail}");
            assert!(long_header.len() > LONG_COOKIE_HEADER);
            let long = find_cookie([long_header.as_bytes()], b"canary_user");
            assert_eq!(short, expected.map(str::as_bytes), "short: {tail}");
            assert_eq!(long, expected.map(str::as_bytes), "long: {tail}");
        }
    }
}
