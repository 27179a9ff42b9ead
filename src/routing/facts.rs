//! What a rule may look at in one request: [`RequestFacts`], filled once by the proxy (or by
//! explain, from its inputs) and read by [`Router::decide`](super::Router::decide).
//!
//! Every fact borrows from the request: nothing is copied or allocated per request, and the
//! facts that take parsing (cookies, query parameters) are parsed only when a rule asks.

use std::net::IpAddr;

use super::cookies::find_cookie;

/// Read access to a request's head (its headers and, where the source has it, its target), so
/// the router needs no HTTP library types.
pub trait HeaderLookup {
    /// The first value of header `name` (lower-case), if present.
    fn header(&self, name: &str) -> Option<&[u8]>;

    /// The value of header `name` when it came exactly once; `None` when absent or repeated
    /// (an identity taken from a header is not believed when a client could have added a value
    /// of its own beside the one a proxy in front appended).
    fn single_header(&self, name: &str) -> Option<&[u8]> {
        self.header(name)
    }

    /// The value of cookie `name` across every `Cookie` header, read in order as one list
    /// (RFC 6265 §5.4). The default reads the first `Cookie` header; a source with several
    /// values of one header (the proxy's) reads them all.
    fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
        find_cookie(self.header("cookie"), name)
    }

    /// The request target as received (path and query), read only when a rule needs it;
    /// `None` when the source has none (then [`RequestFacts::with_target`] gives it).
    fn target(&self) -> Option<&[u8]> {
        None
    }
}

/// A header list, for tests and explain: names compare without regard to case.
impl HeaderLookup for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }

    fn single_header(&self, name: &str) -> Option<&[u8]> {
        let mut values = self.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let (_, first) = values.next()?;
        values.next().is_none().then_some(first.as_bytes())
    }

    fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
        let values = self
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .map(|(_, v)| v.as_bytes());
        find_cookie(values, name)
    }
}

/// The facts of one request that rules read: its headers (and through them its cookies), its
/// target (and through it the query), the method, the client's address and the verified user
/// id.
///
/// Built by the proxy once per request from the request head it already holds; every field
/// borrows, so building it costs a few stores. `H` is the header source (the proxy's header
/// map, or a list of pairs for explain and tests).
#[derive(Clone, Copy)]
pub struct RequestFacts<'a, H: HeaderLookup + ?Sized> {
    headers: &'a H,
    target: Option<&'a [u8]>,
    client: Option<IpAddr>,
    method: Option<&'a str>,
    user: Option<&'a [u8]>,
}

impl<'a, H: HeaderLookup + ?Sized> RequestFacts<'a, H> {
    /// Facts with these headers only: the source's target (or none), no client address, no
    /// user id.
    #[inline]
    pub fn new(headers: &'a H) -> Self {
        RequestFacts {
            headers,
            target: None,
            client: None,
            method: None,
            user: None,
        }
    }

    /// The request target as received (path and query), which [`Self::query`] reads, for a
    /// header source that has none.
    #[inline]
    pub fn with_target(mut self, target: &'a [u8]) -> Self {
        self.target = Some(target);
        self
    }

    /// The client's address as the gateway sees it (after trusted proxies).
    #[inline]
    pub fn with_client(mut self, client: Option<IpAddr>) -> Self {
        self.client = client;
        self
    }

    /// The request's method, as sent (`GET`).
    #[inline]
    pub fn with_method(mut self, method: &'a str) -> Self {
        self.method = Some(method);
        self
    }

    /// The verified user id (see [`Router::user_from_cookies`](super::Router::user_from_cookies)).
    #[inline]
    pub fn with_user(mut self, user: Option<&'a [u8]>) -> Self {
        self.user = user;
        self
    }

    /// The first value of header `name` (lower-case).
    #[inline]
    pub(crate) fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.header(name)
    }

    /// The value of cookie `name`, parsed now (only a rule that needs a cookie pays for it).
    pub fn cookie(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers.cookie(name)
    }

    /// The raw (not percent-decoded) value of query parameter `name`, found now: the first
    /// `name=value` pair of the target's query; a pair without `=` has an empty value.
    pub fn query(&self, name: &[u8]) -> Option<&'a [u8]> {
        let target = self.target.or_else(|| self.headers.target())?;
        let start = memchr::memchr(b'?', target)? + 1;
        let query = &target[start..];
        let query = &query[..memchr::memchr(b'#', query).unwrap_or(query.len())];
        query.split(|&b| b == b'&').find_map(|pair| {
            let (key, value) = match memchr::memchr(b'=', pair) {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            (key == name).then_some(value)
        })
    }

    /// The client's address, when known.
    #[inline]
    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.client
    }

    /// The request's method, when known.
    #[inline]
    pub(crate) fn method(&self) -> Option<&'a str> {
        self.method
    }

    /// The verified user id, when the request has one.
    #[inline]
    pub(crate) fn user(&self) -> Option<&'a [u8]> {
        self.user
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header names compare without case; a missing header is `None`.
    #[test]
    fn headers_by_name() {
        let headers = [("X-Canary-Group", "canary")];
        let facts = RequestFacts::new(&headers[..]);
        assert_eq!(facts.header("x-canary-group"), Some(&b"canary"[..]));
        assert_eq!(facts.header("x-other"), None);
    }

    /// Cookies are read across every `Cookie` header, in order, the first occurrence winning.
    #[test]
    fn cookies_across_headers() {
        let headers = [("cookie", "a=1"), ("x", "y"), ("Cookie", "b=2; a=3")];
        let facts = RequestFacts::new(&headers[..]);
        assert_eq!(facts.cookie(b"a"), Some(&b"1"[..]));
        assert_eq!(facts.cookie(b"b"), Some(&b"2"[..]));
        assert_eq!(facts.cookie(b"c"), None);
    }

    /// Query parameters are found in the target's query only, raw, the first one winning.
    #[test]
    fn query_parameters() {
        let none: [(&str, &str); 0] = [];
        let facts = RequestFacts::new(&none[..]).with_target(b"/a?x=1&flag&x=2&y=%20#z=9");
        assert_eq!(facts.query(b"x"), Some(&b"1"[..]));
        assert_eq!(facts.query(b"flag"), Some(&b""[..]));
        assert_eq!(facts.query(b"y"), Some(&b"%20"[..]));
        assert_eq!(facts.query(b"z"), None, "the fragment is no query");
        assert_eq!(RequestFacts::new(&none[..]).query(b"x"), None);
        let path_only = RequestFacts::new(&none[..]).with_target(b"/x=1");
        assert_eq!(path_only.query(b"x"), None);
    }

    /// The client address and the user id are what the builder was given.
    #[test]
    fn client_and_user() {
        let none: [(&str, &str); 0] = [];
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let facts = RequestFacts::new(&none[..])
            .with_client(Some(ip))
            .with_user(Some(b"alice"));
        assert_eq!(facts.client_ip(), Some(ip));
        assert_eq!(facts.user(), Some(&b"alice"[..]));
        assert_eq!(RequestFacts::new(&none[..]).user(), None);
    }
}
