//! Host names against the names a certificate or a route claims: which certificate a TLS
//! client's server name (SNI) gets, and which hosts a redirect listener may send to https.
//!
//! A certificate's wildcard covers exactly one label (`*.example.com` covers `a.example.com`,
//! not `example.com` nor `a.b.example.com`, as browsers check it, RFC 6125); a route's wildcard
//! covers any host ending in `.example.com` (see `routes`). Names are compared in lower case.

/// Whether the certificate name `pattern` covers `host` (both lower case).
pub(crate) fn certificate_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// Whether the route host `pattern` covers `host` (both lower case).
pub(crate) fn route_host_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// The certificate for `host`, given each certificate's names: among those naming `host`
/// exactly, else among those whose wildcard covers it, the first that `usable` accepts (the
/// client can check its key type: RSA and ECDSA certificates for one name), or the first of
/// them when it accepts none; `None` when no certificate names `host`.
pub(crate) fn pick_certificate<'a, I, N>(
    certificates: I,
    host: &str,
    usable: impl Fn(usize) -> bool,
) -> Option<usize>
where
    I: IntoIterator<Item = &'a N> + Clone,
    N: AsRef<[String]> + 'a,
{
    let host = host.trim_end_matches('.');
    let exact = |names: &N| names.as_ref().iter().any(|n| n == host);
    let wildcard = |names: &N| {
        names
            .as_ref()
            .iter()
            .any(|n| n.starts_with("*.") && certificate_covers(n, host))
    };
    let pick = |class: &dyn Fn(&N) -> bool| {
        let mut first = None;
        for (i, names) in certificates.clone().into_iter().enumerate() {
            if class(names) {
                if usable(i) {
                    return Some(i);
                }
                first.get_or_insert(i);
            }
        }
        first
    };
    pick(&exact).or_else(|| pick(&wildcard))
}

/// The hosts a redirect listener sends on to https: those some route or some certificate
/// names. Any other `Host` gets a 400, so a hostile `Host` cannot steer the redirect off-site.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownHosts {
    /// Route hosts (`*.example.com`: any depth), lower case.
    pub(crate) route_hosts: Vec<String>,
    /// Certificate names (`*.example.com`: one label), lower case.
    pub(crate) certificate_names: Vec<String>,
}

impl KnownHosts {
    /// Whether `host` (lower case, without port) is named by a route or a certificate. Only
    /// DNS names qualify (letters, digits, `-` and `.`): a `Host` such as
    /// `evil.com/x.example.com` ends like a known domain but would send the client elsewhere.
    pub(crate) fn contains(&self, host: &str) -> bool {
        let dns_name = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        dns_name && self.route_hosts.iter().any(|p| route_host_covers(p, host))
            || self
                .certificate_names
                .iter()
                .any(|p| certificate_covers(p, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate wildcard covers one label, no more, no less.
    #[test]
    fn certificate_wildcards_cover_one_label() {
        assert!(certificate_covers("*.example.com", "a.example.com"));
        assert!(!certificate_covers("*.example.com", "example.com"));
        assert!(!certificate_covers("*.example.com", "a.b.example.com"));
        assert!(!certificate_covers("*.example.com", ".example.com"));
        assert!(certificate_covers("example.com", "example.com"));
        assert!(!certificate_covers("example.com", "www.example.com"));
    }

    /// A route wildcard covers any depth below its domain, not the domain itself.
    #[test]
    fn route_wildcards_cover_any_depth() {
        assert!(route_host_covers("*.example.com", "a.b.example.com"));
        assert!(!route_host_covers("*.example.com", "example.com"));
        assert!(!route_host_covers("*.example.com", "badexample.com"));
    }

    /// Only hosts some route or certificate names are known.
    #[test]
    fn known_hosts_come_from_routes_and_certificates() {
        let known = KnownHosts {
            route_hosts: vec!["shop.example.com".into(), "*.api.example.com".into()],
            certificate_names: vec!["*.example.org".into()],
        };
        assert!(known.contains("shop.example.com"));
        assert!(known.contains("v1.eu.api.example.com"));
        assert!(known.contains("www.example.org"));
        assert!(!known.contains("example.org"));
        assert!(!known.contains("evil.com"));
        assert!(!known.contains("evil.com/x.api.example.com"));
        assert!(!known.contains("evil.com?.api.example.com"));
        assert!(!known.contains("evil.com@www.example.org"));
        assert!(!KnownHosts::default().contains("shop.example.com"));
    }

    /// An exact name beats a wildcard listed before it; the first of equals wins; unknown
    /// names get none (the caller's default).
    #[test]
    fn exact_names_beat_wildcards() {
        let certs = [
            vec!["*.example.com".to_string()],
            vec!["api.example.com".to_string(), "example.com".to_string()],
            vec!["api.example.com".to_string()],
        ];
        let any = |_: usize| true;
        assert_eq!(pick_certificate(&certs, "api.example.com", any), Some(1));
        assert_eq!(pick_certificate(&certs, "api.example.com.", any), Some(1));
        assert_eq!(pick_certificate(&certs, "www.example.com", any), Some(0));
        assert_eq!(pick_certificate(&certs, "example.com", any), Some(1));
        assert_eq!(pick_certificate(&certs, "other.org", any), None);
    }

    /// Among certificates for the same name, the first the client can use wins (an RSA and
    /// an ECDSA certificate for one name); when it can use none, the first listed.
    #[test]
    fn the_client_picks_among_certificates_for_one_name() {
        let certs = [
            vec!["dual.example.com".to_string()],
            vec!["dual.example.com".to_string()],
        ];
        assert_eq!(
            pick_certificate(&certs, "dual.example.com", |i| i == 1),
            Some(1)
        );
        assert_eq!(
            pick_certificate(&certs, "dual.example.com", |i| i == 0),
            Some(0)
        );
        assert_eq!(
            pick_certificate(&certs, "dual.example.com", |_| false),
            Some(0)
        );
    }
}
